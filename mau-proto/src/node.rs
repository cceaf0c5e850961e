//! The node state machine: events in, commands out, deadlines on request.
//!
//! Modelled on quinn-proto and str0m. The adapter (or the simulator) does
//! four things in a loop:
//! 1. feeds inputs: [`Node::on_request`] for an authenticated inbound RPC
//!    (answered synchronously), [`Node::on_response`] for the answer to one of
//!    our requests, user commands ([`Node::join`], [`Node::start_lookup`], ...);
//! 2. drains [`Node::poll_output`]: requests to send and events to report;
//! 3. asks [`Node::poll_timeout`] when to call [`Node::handle_timeout`] next;
//! 4. calls [`Node::handle_timeout`] when that time comes.
//!
//! Every call takes `now`; the node never reads a clock. Requests have a
//! deadline of `rpc_timeout`: the core fails them itself when it passes, so an
//! adapter need not time out RPCs (it may report a failure sooner).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use crate::config::Config;
use crate::fingerprint::Fingerprint;
use crate::lookup::{Lookup, LookupId, LookupKind, LookupOutcome};
use crate::rng::Rng;
use crate::routing_table::{Contact, FailedOutcome, Liveness, Removed, RoutingTable, SeenOutcome};
use crate::subnet::HostIp;
use crate::time::Time;

/// Identifies one outgoing request of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A Kademlia RPC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `GET /kad/ping`.
    Ping,
    /// `GET /kad/find_peer/{fingerprint}`.
    FindPeer(Fingerprint),
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response<A> {
    /// Answer to a ping.
    Pong,
    /// Answer to find_peer: up to K peers closest to the target.
    Peers(Vec<Contact<A>>),
}

/// Why a request produced no answer. The core treats them alike; the
/// distinction is for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RpcFailure {
    /// No answer before the deadline.
    Timeout,
    /// Could not connect, or the TLS handshake failed.
    Unreachable,
    /// An answer that is not a valid answer to the request.
    BadResponse,
}

/// A request the adapter must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit<A> {
    /// Report the answer with this id.
    pub id: RequestId,
    /// Who to ask (connect with this fingerprint pinned).
    pub to: Contact<A>,
    /// What to ask.
    pub request: Request,
}

/// Something the application may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<A> {
    /// A lookup ended.
    LookupFinished(LookupOutcome<A>),
    /// A peer entered the routing table.
    PeerAdded(Contact<A>),
    /// A peer left the routing table (failed, or removed by the user).
    PeerRemoved(Contact<A>),
    /// The join sequence (self lookup and bucket refreshes) is complete.
    Joined {
        /// Peers in the table at that moment.
        peers: usize,
    },
}

/// What [`Node::poll_output`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output<A> {
    /// Send this request.
    Transmit(Transmit<A>),
    /// Report this event.
    Event(Event<A>),
}

/// A user command the node cannot take now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    /// `max_concurrent_lookups` are running already.
    #[error("too many lookups in progress ({0})")]
    TooManyLookups(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Lookup(LookupId),
    /// A ping of a table entry (full bucket) or of a candidate peer.
    Liveness,
}

#[derive(Clone, Debug)]
struct Pending<A> {
    to: Contact<A>,
    purpose: Purpose,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum JoinPhase {
    Idle,
    SelfLookup(LookupId),
    /// Bucket refreshes still running.
    Refreshing(Vec<LookupId>),
}

/// A Kademlia node: the routing table, its lookups and their requests.
#[derive(Clone, Debug)]
pub struct Node<A> {
    config: Config,
    table: RoutingTable<A>,
    rng: Rng,
    lookups: BTreeMap<LookupId, Lookup<A>>,
    pending: BTreeMap<RequestId, Pending<A>>,
    deadlines: BinaryHeap<Reverse<(Time, RequestId)>>,
    out: VecDeque<Output<A>>,
    next_request: u64,
    next_lookup: u64,
    join: JoinPhase,
    /// Peers outside the table pinged within PING_MIN_BACKOFF (bounded).
    probed: BTreeMap<Fingerprint, Time>,
    /// When to repeat the join because it left fewer than K peers, and the
    /// current backoff.
    rejoin: Option<(Time, std::time::Duration)>,
    /// The running join is such a repeat: it reports no second `Joined`.
    rejoining: bool,
}

/// Capacity an emptied output or deadline queue keeps; bigger ones are shrunk.
/// Zero: an idle node (most of them, most of the time) holds no queue memory;
/// the price is one allocation per burst of outputs.
const RETAINED_QUEUE: usize = 0;

/// Probes of unknown peers remembered at once; beyond it new probes wait.
const MAX_RECENT_PROBES: usize = 1024;

impl<A: Clone + Eq + HostIp> Node<A> {
    /// A node for `local` with an empty table. `seed` determines every random
    /// choice it will make (refresh targets); give each node its own.
    pub fn new(local: Fingerprint, config: Config, now: Time, seed: u64) -> Self {
        let config = config.sanitized();
        // Buckets are created on first use, stamped with the time they appear.
        let _ = now;
        let table = RoutingTable::new(
            local,
            config.k,
            config.replacement_cache,
            config.max_failures,
        )
        .with_subnet_limits(config.subnet_limits);
        Node {
            config,
            table,
            rng: Rng::new(seed),
            lookups: BTreeMap::new(),
            pending: BTreeMap::new(),
            deadlines: BinaryHeap::new(),
            out: VecDeque::new(),
            next_request: 0,
            next_lookup: 0,
            join: JoinPhase::Idle,
            probed: BTreeMap::new(),
            rejoin: None,
            rejoining: false,
        }
    }

    /// Our own fingerprint.
    pub fn local(&self) -> Fingerprint {
        self.table.local()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Heap bytes this node holds beyond `size_of::<Node<A>>()`: its table,
    /// lookups, in-flight requests, timers, queued outputs and probe memory.
    /// Vectors count by capacity; maps are estimated at 1.5x their payload.
    /// With the allocator's own overhead this is the node's memory; the
    /// simulator reports it per node next to the measured peak RSS.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let map = |len: usize, item: usize| len * item * 3 / 2;
        self.table.heap_bytes()
            + self.lookups.values().map(Lookup::heap_bytes).sum::<usize>()
            + map(self.lookups.len(), size_of::<(LookupId, Lookup<A>)>())
            + map(self.pending.len(), size_of::<(RequestId, Pending<A>)>())
            + self.deadlines.capacity() * size_of::<Reverse<(Time, RequestId)>>()
            + self.out.capacity() * size_of::<Output<A>>()
            + map(self.probed.len(), size_of::<(Fingerprint, Time)>())
    }

    /// The routing table (read only: change it through events).
    pub fn table(&self) -> &RoutingTable<A> {
        &self.table
    }

    /// Lookups running now.
    pub fn lookups_in_progress(&self) -> usize {
        self.lookups.len()
    }

    /// Requests sent and not yet answered.
    pub fn requests_in_flight(&self) -> usize {
        self.pending.len()
    }

    /// True while the join sequence runs.
    pub fn is_joining(&self) -> bool {
        self.join != JoinPhase::Idle
    }

    // ----- inputs -------------------------------------------------------

    /// An authenticated peer sent us `request`; returns the answer to send.
    ///
    /// `from` must carry the fingerprint proven by mutual TLS and the address
    /// the peer listens on. The caller is recorded first, so, as in the Go
    /// implementation, it may appear in its own find_peer answer.
    pub fn on_request(&mut self, now: Time, from: Contact<A>, request: &Request) -> Response<A> {
        self.record_seen(now, from);
        match request {
            Request::Ping => Response::Pong,
            Request::FindPeer(target) => Response::Peers(self.closest(target)),
        }
    }

    /// Like [`Self::on_request`], for a caller whose fingerprint is proven but
    /// whose listening address is only claimed (e.g. the address in its TLS
    /// certificate). A peer already in the table at that address is refreshed;
    /// any other is probed at the claimed address and enters the table only if
    /// it answers there, so no address that nobody listens on is ever added.
    pub fn on_request_unverified(
        &mut self,
        now: Time,
        from: Contact<A>,
        request: &Request,
    ) -> Response<A> {
        let known = self
            .table
            .get(&from.fingerprint)
            .is_some_and(|e| e.address == from.address);
        if known {
            self.record_seen(now, from);
        } else {
            self.probe(now, from);
        }
        match request {
            Request::Ping => Response::Pong,
            Request::FindPeer(target) => Response::Peers(self.closest(target)),
        }
    }

    /// The K peers closest to `target` that answered their last request.
    pub fn closest(&self, target: &Fingerprint) -> Vec<Contact<A>> {
        self.table
            .closest(&target.key(), self.config.k, Liveness::Responsive)
    }

    /// The answer (or failure) of request `id`. Unknown or late ids are ignored.
    pub fn on_response(
        &mut self,
        now: Time,
        id: RequestId,
        result: Result<Response<A>, RpcFailure>,
    ) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        match (p.purpose, result) {
            (Purpose::Lookup(lid), Ok(Response::Peers(mut peers))) => {
                self.record_seen(now, p.to.clone());
                // Hearsay never overrides what we verified: a peer we know is
                // asked at the address it answered us from, not a claimed one.
                for c in &mut peers {
                    if let Some(e) = self.table.get(&c.fingerprint) {
                        c.address = e.address.clone();
                    }
                }
                if let Some(l) = self.lookups.get_mut(&lid) {
                    let local = self.table.local();
                    l.on_success(&p.to.fingerprint, peers, &local);
                }
                self.drive_lookup(now, lid);
            }
            (Purpose::Liveness, Ok(_)) => self.record_seen(now, p.to),
            (purpose, _) => {
                // A failure, or a pong where peers were expected.
                self.record_failure(&p.to);
                if let Purpose::Lookup(lid) = purpose {
                    if let Some(l) = self.lookups.get_mut(&lid) {
                        l.on_failure(&p.to.fingerprint);
                    }
                    self.drive_lookup(now, lid);
                }
            }
        }
    }

    /// Fails requests whose deadline passed and starts refreshes of stale buckets.
    pub fn handle_timeout(&mut self, now: Time) {
        while let Some(Reverse((deadline, id))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            if self.pending.contains_key(&id) {
                self.on_response(now, id, Err(RpcFailure::Timeout));
            }
        }
        if self
            .table
            .next_stale_at(self.config.stall_period)
            .is_some_and(|t| t <= now)
        {
            for bucket in self.table.stale_buckets(now, self.config.stall_period) {
                // Touched even if no lookup can start, so a stale bucket never spins.
                self.table.touch_bucket(bucket, now);
                let target = self.random_target_in(bucket);
                // A v4 node cannot name an id in a bucket deeper than 160 bits
                // (only a v6 twin of itself lives there): nothing to look up.
                if !self.table.is_empty() && target != self.local() {
                    let _ = self.start(now, target, LookupKind::Refresh);
                }
            }
        }
        if let Some((at, backoff)) = self.rejoin {
            if at <= now && self.join == JoinPhase::Idle {
                match self.start(now, self.local(), LookupKind::Join) {
                    Ok(id) => {
                        self.rejoining = true;
                        self.join = JoinPhase::SelfLookup(id);
                        if !self.lookups.contains_key(&id) {
                            self.advance_join(now, id);
                        }
                    }
                    Err(_) => self.rejoin = Some((now + backoff, backoff)),
                }
            }
        }
    }

    /// When [`Self::handle_timeout`] must be called next, if ever.
    pub fn poll_timeout(&mut self) -> Option<Time> {
        // Drop deadlines of requests already answered.
        while let Some(Reverse((_, id))) = self.deadlines.peek() {
            if self.pending.contains_key(id) {
                break;
            }
            self.deadlines.pop();
        }
        if self.deadlines.is_empty() && self.deadlines.capacity() > RETAINED_QUEUE {
            self.deadlines.shrink_to(RETAINED_QUEUE);
        }
        let request = self.deadlines.peek().map(|Reverse((t, _))| *t);
        let refresh = if self.table.is_empty() {
            None
        } else {
            self.table.next_stale_at(self.config.stall_period)
        };
        let rejoin = match self.join {
            JoinPhase::Idle => self.rejoin.map(|(t, _)| t),
            _ => None,
        };
        [request, refresh, rejoin].into_iter().flatten().min()
    }

    /// The next request to send or event to report.
    pub fn poll_output(&mut self) -> Option<Output<A>> {
        let next = self.out.pop_front();
        if next.is_none() && self.out.capacity() > RETAINED_QUEUE {
            // A join's burst of requests would otherwise stay allocated for
            // the node's life (measured: 15% of a simulated node's memory).
            self.out.shrink_to(RETAINED_QUEUE);
        }
        next
    }

    // ----- user commands ------------------------------------------------

    /// Joins the network: adds the bootstrap peers, looks up our own id, then
    /// refreshes every bucket farther than the closest neighbour found.
    /// [`Event::Joined`] reports the end; stale buckets keep being refreshed.
    pub fn join(
        &mut self,
        now: Time,
        bootstrap: impl IntoIterator<Item = Contact<A>>,
    ) -> Result<LookupId, NodeError> {
        for c in bootstrap {
            self.add_peer(now, c);
        }
        let id = self.start(now, self.local(), LookupKind::Join)?;
        self.join = JoinPhase::SelfLookup(id);
        self.rejoining = false;
        // An empty table finishes the self lookup inside `start`, before the
        // phase above was set, so advance the join by hand.
        if !self.lookups.contains_key(&id) {
            self.advance_join(now, id);
        }
        Ok(id)
    }

    /// Adds a peer the user vouches for (a bootstrap or configured peer) as if
    /// it had just answered. A dead one is evicted by the first failed request.
    pub fn add_peer(&mut self, now: Time, contact: Contact<A>) {
        self.record_seen(now, contact);
    }

    /// Pings a peer found by other means (LAN discovery, a resolver); it enters
    /// the table only if it answers. Does nothing if it was pinged recently.
    pub fn probe(&mut self, now: Time, contact: Contact<A>) {
        let backoff = self.config.ping_min_backoff;
        if contact.fingerprint == self.local()
            || !self.table.mark_pinged(&contact.fingerprint, now, backoff)
        {
            return;
        }
        if !self.table.contains(&contact.fingerprint) {
            // Not in the table: remember recent probes (bounded) for the backoff.
            self.probed.retain(|_, t| now.since(*t) < backoff);
            if self.probed.contains_key(&contact.fingerprint)
                || self.probed.len() >= MAX_RECENT_PROBES
            {
                return;
            }
            self.probed.insert(contact.fingerprint, now);
        }
        self.send(now, contact, Request::Ping, Purpose::Liveness);
    }

    /// Removes a peer from the table (e.g. the user unfriended or blocked it).
    /// Returns whether it was known.
    pub fn remove_peer(&mut self, fp: &Fingerprint) -> bool {
        match self.table.remove(fp) {
            Removed::Nothing => false,
            Removed::Waiting => true,
            Removed::Entry { removed, promoted } => {
                self.out
                    .push_back(Output::Event(Event::PeerRemoved(removed)));
                if let Some(c) = promoted {
                    self.out.push_back(Output::Event(Event::PeerAdded(c)));
                }
                true
            }
        }
    }

    /// Starts a lookup for `target`; [`Event::LookupFinished`] reports its end.
    pub fn start_lookup(&mut self, now: Time, target: Fingerprint) -> Result<LookupId, NodeError> {
        let id = self.start(now, target, LookupKind::FindPeer)?;
        self.finish_if_done(now, id);
        Ok(id)
    }

    // ----- internals ----------------------------------------------------

    fn start(
        &mut self,
        now: Time,
        target: Fingerprint,
        kind: LookupKind,
    ) -> Result<LookupId, NodeError> {
        if self.lookups.len() >= self.config.max_concurrent_lookups {
            return Err(NodeError::TooManyLookups(self.lookups.len()));
        }
        self.table.touch_bucket_of(&target.key(), now);
        let id = LookupId(self.next_lookup);
        self.next_lookup += 1;
        let seeds = self
            .table
            .closest(&target.key(), self.config.k, Liveness::Any);
        let lookup = Lookup::new(
            id,
            kind,
            target,
            seeds,
            self.config.k,
            self.config.alpha,
            self.config.max_lookup_candidates,
            now,
        )
        .with_termination(self.config.lookup_termination);
        self.lookups.insert(id, lookup);
        self.drive_lookup(now, id);
        Ok(id)
    }

    /// Sends what the lookup wants sent; reports it if it finished.
    fn drive_lookup(&mut self, now: Time, id: LookupId) {
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        let target = l.target();
        let mut sends = Vec::new();
        while let Some(c) = l.next_request() {
            sends.push(c);
        }
        for c in sends {
            self.send(now, c, Request::FindPeer(target), Purpose::Lookup(id));
        }
        self.finish_if_done(now, id);
    }

    fn finish_if_done(&mut self, now: Time, id: LookupId) {
        let done = self.lookups.get(&id).is_some_and(|l| l.is_finished());
        if !done {
            return;
        }
        if self.widen(now, id) {
            return;
        }
        let Some(l) = self.lookups.remove(&id) else {
            return;
        };
        let outcome = l.outcome();
        self.out
            .push_back(Output::Event(Event::LookupFinished(outcome)));
        self.advance_join(now, id);
    }

    /// Gives a find-peer lookup that missed its target the next K closest
    /// peers of our table as seeds; true if it goes on.
    fn widen(&mut self, now: Time, id: LookupId) -> bool {
        let Some(l) = self.lookups.get(&id) else {
            return false;
        };
        if l.kind() != LookupKind::FindPeer || l.has_found() {
            return false;
        }
        let k = self.config.k;
        let n = k * (2 + l.widenings() as usize);
        let more = self
            .table
            .closest(&l.target().key(), n, Liveness::Any)
            .into_iter()
            .skip(n - k)
            .collect();
        let Some(l) = self.lookups.get_mut(&id) else {
            return false;
        };
        if !l.widen(more) {
            return false;
        }
        self.drive_lookup(now, id);
        true
    }

    fn advance_join(&mut self, now: Time, finished: LookupId) {
        match &mut self.join {
            JoinPhase::SelfLookup(id) if *id == finished => {
                let mut ids = Vec::new();
                for bucket in self.table.buckets_beyond_closest() {
                    let target = self.random_target_in(bucket);
                    if let Ok(id) = self.start(now, target, LookupKind::Refresh) {
                        ids.push(id);
                    }
                }
                // Refreshes that finished at once are already gone.
                ids.retain(|id| self.lookups.contains_key(id));
                self.join = JoinPhase::Refreshing(ids);
                self.maybe_joined(now);
            }
            JoinPhase::Refreshing(ids) => {
                ids.retain(|id| *id != finished);
                self.maybe_joined(now);
            }
            _ => {}
        }
    }

    fn maybe_joined(&mut self, now: Time) {
        if matches!(&self.join, JoinPhase::Refreshing(ids) if ids.is_empty()) {
            self.join = JoinPhase::Idle;
            if !self.rejoining {
                self.out.push_back(Output::Event(Event::Joined {
                    peers: self.table.len(),
                }));
            }
            self.rejoining = false;
            // Fewer than K peers (we joined before the network had formed
            // around us): nobody near us knows us yet, so join again later.
            self.rejoin = if !self.table.is_empty() && self.table.len() < self.config.k {
                let backoff = match self.rejoin {
                    Some((_, b)) => (b * 2).min(self.config.stall_period),
                    None => self.config.rejoin_interval,
                };
                Some((now + backoff, backoff))
            } else {
                None
            };
        }
    }

    fn random_target_in(&mut self, bucket: crate::distance::BucketIndex) -> Fingerprint {
        let local = self.local();
        let key = local
            .key()
            .offset(&bucket.random_distance(self.rng.bytes32()));
        let bytes = &key.as_bytes()[..local.as_bytes().len()];
        // A v4 node's buckets are all within the first 160 bits, so truncating
        // the key back to 20 bytes keeps it in the bucket.
        Fingerprint::from_bytes(bytes).unwrap_or(local)
    }

    fn send(&mut self, now: Time, to: Contact<A>, request: Request, purpose: Purpose) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        let deadline = now + self.config.rpc_timeout;
        self.pending.insert(
            id,
            Pending {
                to: to.clone(),
                purpose,
            },
        );
        self.deadlines.push(Reverse((deadline, id)));
        self.out
            .push_back(Output::Transmit(Transmit { id, to, request }));
    }

    fn record_seen(&mut self, now: Time, contact: Contact<A>) {
        match self
            .table
            .seen(contact.clone(), now, self.config.ping_min_backoff)
        {
            SeenOutcome::Inserted => self.out.push_back(Output::Event(Event::PeerAdded(contact))),
            SeenOutcome::PingRequired(head) => {
                self.send(now, head, Request::Ping, Purpose::Liveness)
            }
            SeenOutcome::Updated
            | SeenOutcome::Cached
            | SeenOutcome::Refused
            | SeenOutcome::SubnetFull => {}
        }
    }

    fn record_failure(&mut self, to: &Contact<A>) {
        // Only a failure at the address we know counts against a table entry:
        // a hostile answer naming a good peer at a dead address must not evict it.
        let at_known_address = self
            .table
            .get(&to.fingerprint)
            .is_some_and(|e| e.address == to.address);
        if !at_known_address {
            return;
        }
        if let FailedOutcome::Evicted { promoted } = self.table.failed(&to.fingerprint) {
            self.out
                .push_back(Output::Event(Event::PeerRemoved(to.clone())));
            if let Some(c) = promoted {
                self.out.push_back(Output::Event(Event::PeerAdded(c)));
            }
        }
    }

    /// Checks the table's invariants and the node's bookkeeping.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.table.check_invariants()?;
        for (id, p) in &self.pending {
            if let Purpose::Lookup(l) = p.purpose {
                // A request may outlive its lookup (late answers are ignored) but
                // never be younger than the lookup ids handed out.
                if l.0 >= self.next_lookup {
                    return Err(format!("request {id:?} names a future lookup"));
                }
            }
            if p.to.fingerprint == self.local() {
                return Err("a request to ourselves".into());
            }
        }
        if self.lookups.len() > self.config.max_concurrent_lookups {
            return Err("too many lookups".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory claims of docs/scaling.md: a 48-byte entry for a u32
    /// address, `heap_bytes` counting the table, and an idle node keeping
    /// no queue memory once its outputs are drained.
    #[test]
    fn heap_bytes_counts_the_table_and_an_idle_node_keeps_no_queue() {
        use crate::routing_table::Entry;
        assert_eq!(std::mem::size_of::<Entry<u32>>(), 48);
        let mut n: Node<u32> = Node::new(fp(1), Config::default(), Time::ZERO, 1);
        assert_eq!(n.heap_bytes(), 0);
        for i in 2..=60u8 {
            n.add_peer(Time::ZERO, Contact::new(fp(i), u32::from(i)));
        }
        let entries = n.table().len() * std::mem::size_of::<Entry<u32>>();
        assert!(n.table().len() > 20, "{}", n.table().len());
        assert!(n.heap_bytes() > n.table().heap_bytes(), "outputs queued");
        assert!(n.table().heap_bytes() >= entries);
        while n.poll_output().is_some() {}
        assert!(n.poll_timeout().is_some(), "a refresh is due some day");
        assert_eq!(n.heap_bytes(), n.table().heap_bytes(), "idle: no queues");
    }

    /// A v4 fingerprint starting with `n` (and ending with 1: never all zeros).
    fn fp(n: u8) -> Fingerprint {
        let mut b = [0u8; 20];
        b[0] = n;
        b[19] = 1;
        Fingerprint::V4(b)
    }

    /// Everything `node` has to say now.
    fn drain(node: &mut Node<u32>) -> Vec<Output<u32>> {
        std::iter::from_fn(|| node.poll_output()).collect()
    }

    /// Answers every find_peer with nobody; returns the find_peer targets sent.
    fn answer_all_empty(n: &mut Node<u32>, now: Time) -> Vec<Fingerprint> {
        let mut targets = Vec::new();
        while let Some(o) = n.poll_output() {
            if let Output::Transmit(t) = o {
                if let Request::FindPeer(f) = t.request {
                    targets.push(f);
                }
                n.on_response(now, t.id, Ok(Response::Peers(vec![])));
            }
        }
        targets
    }

    // ----- join --------------------------------------------------------------

    #[test]
    fn join_with_empty_table_reports_joined() {
        let mut n: Node<u32> = Node::new(fp(1), Config::default(), Time(0), 7);
        n.join(Time(0), []).unwrap();
        let outs = drain(&mut n);
        assert!(outs.contains(&Output::Event(Event::Joined { peers: 0 })));
        assert!(!n.is_joining());
    }

    // ----- probes ------------------------------------------------------------

    #[test]
    fn claimed_address_is_probed_before_it_enters_the_table() {
        let mut n = Node::new(fp(0), Config::default(), Time(0), 1);
        let caller = Contact::new(fp(0x80), 7);
        assert_eq!(
            n.on_request_unverified(Time(0), caller.clone(), &Request::Ping),
            Response::Pong
        );
        assert!(!n.table().contains(&caller.fingerprint));
        let out = drain(&mut n);
        let [Output::Transmit(t)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(
            (t.to.clone(), t.request.clone()),
            (caller.clone(), Request::Ping)
        );
        // A second request within the backoff does not probe again.
        n.on_request_unverified(Time(10), caller.clone(), &Request::Ping);
        assert!(drain(&mut n).is_empty());
        n.on_response(Time(20), t.id, Ok(Response::Pong));
        assert_eq!(
            drain(&mut n),
            vec![Output::Event(Event::PeerAdded(caller.clone()))]
        );
        // Known at that address: refreshed without a probe.
        n.on_request_unverified(Time(30), caller, &Request::Ping);
        assert!(drain(&mut n).is_empty());
    }

    #[test]
    fn silent_probe_never_enters_and_times_out() {
        let mut n = Node::new(fp(0), Config::default(), Time(0), 1);
        n.probe(Time(0), Contact::new(fp(0x40), 3));
        assert_eq!(drain(&mut n).len(), 1);
        let deadline = n.poll_timeout().unwrap();
        assert_eq!(deadline, Time(0) + n.config().rpc_timeout);
        n.handle_timeout(deadline);
        assert!(n.table().is_empty());
        assert_eq!(n.requests_in_flight(), 0);
        assert_eq!(n.poll_timeout(), None);
    }

    #[test]
    fn join_with_dead_bootstrap_finishes() {
        let mut n = Node::new(fp(0), Config::default(), Time(0), 1);
        n.join(Time(0), [Contact::new(fp(0x80), 1)]).unwrap();
        let out = drain(&mut n);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Transmit(t) if t.request == Request::FindPeer(fp(0)))));
        let mut now = Time(0);
        while let Some(t) = n.poll_timeout() {
            now = t;
            n.handle_timeout(now);
            if !n.is_joining() {
                break;
            }
        }
        let out = drain(&mut n);
        // One failure is counted (max_failures = 2, nobody waits for its slot):
        // it stays, but is no longer handed to other peers.
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Event(Event::Joined { peers: 1 }))),
            "{out:?}"
        );
        assert!(n.closest(&fp(0x80)).is_empty());
        assert!(now > Time(0));
    }

    // ----- rejoin ------------------------------------------------------------

    #[test]
    fn a_join_that_finds_few_peers_is_repeated_with_backoff() {
        let local = fp(0x10);
        let mut n = Node::new(local, Config::default(), Time(0), 3);
        n.join(Time(0), [Contact::new(fp(0x90), 1)]).unwrap();
        // The bootstrap peer knows nobody yet (the first node of a network).
        assert!(answer_all_empty(&mut n, Time(0)).contains(&local));
        assert!(!n.is_joining());
        let first = n.poll_timeout().expect("a rejoin is scheduled");
        assert_eq!(first, Time(0) + n.config().rejoin_interval);
        n.handle_timeout(first);
        assert!(n.is_joining());
        let targets = answer_all_empty(&mut n, first);
        assert!(
            targets.contains(&local),
            "the rejoin looks up our own id again"
        );
        // Still alone: the next try waits twice as long, and no second Joined.
        let second = n.poll_timeout().expect("another rejoin");
        assert_eq!(second, first + n.config().rejoin_interval * 2);
        n.handle_timeout(second);
        let out = drain(&mut n);
        assert!(!out
            .iter()
            .any(|o| matches!(o, Output::Event(Event::Joined { .. }))));
    }

    #[test]
    fn a_full_table_is_not_rejoined() {
        let config = Config {
            k: 2,
            ..Config::default()
        };
        let mut n = Node::new(fp(0x10), config, Time(0), 3);
        n.join(
            Time(0),
            [Contact::new(fp(0x90), 1), Contact::new(fp(0x50), 2)],
        )
        .unwrap();
        answer_all_empty(&mut n, Time(0));
        assert!(!n.is_joining());
        // K = 2 peers known: only the stale-bucket refresh remains.
        assert_eq!(n.poll_timeout(), Some(Time(0) + n.config().stall_period));
    }
}
