//! The node state machine: events in, commands out, deadlines on request.
//!
//! Modelled on quinn-proto and str0m. The adapter (or the simulator) does
//! four things in a loop:
//! 1. feeds inputs: [`Node::on_request`] for an inbound RPC (answered
//!    synchronously; the [`Caller`] is probed before it enters the table),
//!    [`Node::on_response`] for the answer to one of our requests, user
//!    commands ([`Node::join`], [`Node::start_lookup`], ...);
//! 2. drains [`Node::poll_output`]: requests to send and events to report
//!    (every lookup's end, even one that ends at once, is reported here);
//! 3. asks [`Node::poll_timeout`] when to call [`Node::handle_timeout`] next;
//! 4. calls [`Node::handle_timeout`] when that time comes.
//!
//! Every call takes `now`; the node never reads a clock. A request is sent
//! when [`Node::poll_output`] yields it, and its one deadline starts then:
//! [`Transmit::timeout`] says how long the adapter may spend on it, and the
//! core fails the request itself when that passes. Requests wait inside the
//! core for a slot of their budget ([`crate::dispatch::Budgets`]), never in
//! the adapter, so waiting is never mistaken for a peer's silence.

use core::net::IpAddr;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use crate::config::{CallerProbes, Config};
use crate::dispatch::{Dispatch, RequestClass};
use crate::fingerprint::Fingerprint;
use crate::fingerprint_store::{FingerprintStore, InlineFingerprints};
use crate::lookup::{Lookup, LookupId, LookupKind, LookupOutcome};
use crate::rng::Rng;
use crate::routing_table::{
    Contact, FailedOutcome, Liveness, Removed, RoutingTable, SeenOutcome, TableView,
};
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
    /// The request never reached the peer or was cut off on our side (no
    /// slot, shutting down, a connection we closed): not the peer's failure,
    /// never counted against it.
    NotSent,
}

/// Who sent an inbound request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller<A> {
    /// The fingerprint the caller proved (mutual TLS).
    pub fingerprint: Fingerprint,
    /// The address it says it listens on (e.g. the one in its certificate);
    /// `None`: it cannot be called back, so it never enters the table.
    pub address: Option<A>,
    /// The IP it connects from, if known: bounds the probes one source can
    /// make us send.
    pub source: Option<IpAddr>,
}

impl<A: HostIp> Caller<A> {
    /// A caller listening where it connects from (a simulated or test peer).
    pub fn at(fingerprint: Fingerprint, address: A) -> Self {
        let source = address.host_ip();
        Caller {
            fingerprint,
            address: Some(address),
            source,
        }
    }
}

/// A request the adapter must send: dropping it unsent leaves the request to
/// time out in the core.
#[must_use = "a transmit must be sent (or reported failed with RpcFailure::NotSent)"]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit<A> {
    /// Report the answer with this id.
    pub id: RequestId,
    /// Who to ask (connect with this fingerprint pinned).
    pub to: Contact<A>,
    /// What to ask.
    pub request: Request,
    /// The budget it is charged to.
    pub class: RequestClass,
    /// How long the adapter may spend on it, from now: the core fails it
    /// when this passes (an adapter may give up at the same moment).
    pub timeout: Duration,
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
#[must_use = "a transmit must be sent and an event may end a lookup someone waits for"]
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
    request: Request,
    purpose: Purpose,
    class: RequestClass,
    /// For a probe: the IP of the caller that made us send it.
    source: Option<IpAddr>,
    /// When it left its queue (`None`: still waiting for a slot).
    sent: Option<Time>,
}

/// Which deadline of a request a timer entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// The request waited for a slot this long: cancelled, not failed.
    Queue,
    /// The lookup stops holding a slot for this answer and asks someone
    /// else too (the answer is still used if it comes while the lookup runs).
    Soft,
    /// The request failed.
    Hard,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum JoinPhase {
    /// Not joining; a repeat may be scheduled ([`JoinState::rejoin`]).
    Idle,
    SelfLookup(LookupId),
    /// Bucket refreshes still running.
    Refreshing(Vec<LookupId>),
    /// No peer has shown it holds us yet (none of its answers named us):
    /// our id is looked up again at this time. A joined node is one others
    /// can find, not one that merely asked around.
    Confirming(Time),
}

/// Everything about the join sequence, in one place.
#[derive(Clone, Debug)]
struct JoinState<A> {
    phase: JoinPhase,
    /// The running join is a repeat (it reports no second `Joined`).
    repeat: bool,
    /// A peer's answer named us since the join began: it admitted us.
    admitted: bool,
    /// Confirmations of the running join so far.
    confirmations: u8,
    /// When to repeat the join because it left fewer than K peers, and the
    /// current backoff (kept while the repeat runs, to double it).
    rejoin: Option<(Time, Duration)>,
    /// The contacts the last [`Node::join`] was given (at most
    /// [`MAX_REMEMBERED_BOOTSTRAP`]): a join that leaves the table empty
    /// (they were all unreachable just then), or a table emptied later,
    /// starts again from them.
    bootstrap: Vec<Contact<A>>,
}

/// Bootstrap contacts remembered for a later rejoin.
const MAX_REMEMBERED_BOOTSTRAP: usize = 16;

/// Times a join looks up our id again to see that peers admitted us.
const MAX_CONFIRMATIONS: u8 = 4;
/// Wait before the first confirmation; doubled each time.
const FIRST_CONFIRMATION: std::time::Duration = std::time::Duration::from_millis(500);

/// A Kademlia node: the routing table, its lookups and their requests.
///
/// `S` keeps the fingerprints of the table's entries: inline by default
/// ([`Node::new`]); see [`Node::with_store`].
#[derive(Clone, Debug)]
pub struct Node<A, S: FingerprintStore = InlineFingerprints> {
    config: Config,
    table: RoutingTable<A, S>,
    rng: Rng,
    lookups: BTreeMap<LookupId, Lookup<A>>,
    /// Hashed, not ordered: never iterated, and a B-tree search per answer
    /// was a tenth of the simulator's time.
    pending: HashMap<RequestId, Pending<A>, BuildHasherDefault<SequenceHasher>>,
    deadlines: BinaryHeap<Reverse<(Time, RequestId, Stage)>>,
    dispatch: Dispatch,
    out: VecDeque<Output<A>>,
    next_request: u64,
    next_lookup: u64,
    join: JoinState<A>,
    /// Peers outside the table pinged within PING_MIN_BACKOFF (bounded),
    /// and the same in the order they were probed (to expire them in O(1)).
    /// (Hashed with std's keyed hasher: callers choose their fingerprints.)
    probed: HashMap<Fingerprint, (Time, A)>,
    probe_order: VecDeque<(Time, Fingerprint)>,
    /// Lookups that may have ended: settled (finished, widened or reported)
    /// before an input returns, so an end is only ever seen in `poll_output`.
    settle: Vec<LookupId>,
}

/// Hashes a [`RequestId`] (a counter the node itself increments, so no
/// caller can pick colliding ones) with one multiplication.
#[derive(Default)]
struct SequenceHasher(u64);

impl Hasher for SequenceHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Halves a hash map that is less than a quarter full: a map keeps the
/// capacity of its busiest moment (a join's burst of probes) otherwise.
fn shrink_sparse<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut HashMap<K, V, S>,
) {
    if map.capacity() > 64 && map.len() < map.capacity() / 4 {
        map.shrink_to(map.len() * 2);
    }
}

/// Capacity an emptied output or deadline queue keeps; bigger ones are shrunk.
/// Zero: an idle node (most of them, most of the time) holds no queue memory;
/// the price is one allocation per burst of outputs.
const RETAINED_QUEUE: usize = 0;

/// An address not in the table (claimed or heard of) gets this many soft
/// deadlines before its request fails: room for a new connection's TCP and
/// TLS handshakes on a busy machine, while a tarpit holds a slot for seconds.
const UNVERIFIED_SOFT_MULTIPLE: u32 = 4;

/// Probes of unknown peers remembered at once; beyond it new probes wait.
const MAX_RECENT_PROBES: usize = 1024;

impl<A: Clone + Eq + HostIp> Node<A> {
    /// A node for `local` with an empty table. `seed` determines every random
    /// choice it will make (refresh targets); give each node its own.
    pub fn new(local: Fingerprint, config: Config, seed: u64) -> Self {
        Self::with_store(local, config, seed, InlineFingerprints)
    }
}

impl<A: Clone + Eq + HostIp, S: FingerprintStore> Node<A, S> {
    /// [`Node::new`] whose table keeps its peers' fingerprints in `store`
    /// (e.g. a [`crate::SharedFingerprints`] shared by the many nodes of a
    /// simulation). Same behaviour whatever the store.
    pub fn with_store(local: Fingerprint, config: Config, seed: u64, store: S) -> Self {
        let config = config.sanitized();
        let dispatch = Dispatch::new(&config.budgets);
        // Buckets are created on first use, stamped with the time they appear.
        let table = RoutingTable::with_store(
            local,
            config.k,
            config.replacement_cache,
            config.max_failures,
            store,
        )
        .with_subnet_limits(config.subnet_limits);
        Node {
            config,
            table,
            rng: Rng::new(seed),
            lookups: BTreeMap::new(),
            pending: HashMap::default(),
            deadlines: BinaryHeap::new(),
            dispatch,
            out: VecDeque::new(),
            next_request: 0,
            next_lookup: 0,
            join: JoinState {
                phase: JoinPhase::Idle,
                repeat: false,
                admitted: false,
                confirmations: 0,
                rejoin: None,
                bootstrap: Vec::new(),
            },
            probed: HashMap::new(),
            probe_order: VecDeque::new(),
            settle: Vec::new(),
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
    /// Vectors and hash maps count by capacity (a hash map's slots: payload,
    /// one control byte, 8/7 load), but the map of recent probes counts
    /// twice its length (its capacity depends on a random hash key); B-trees
    /// are estimated at 1.5x their payload.
    /// With the allocator's own overhead this is the node's memory; the
    /// simulator reports it per node next to the measured peak RSS.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let map = |len: usize, item: usize| len * item * 3 / 2;
        let hashed = |capacity: usize, item: usize| capacity * (item + 1) * 8 / 7;
        self.table.heap_bytes()
            + self.lookups.values().map(Lookup::heap_bytes).sum::<usize>()
            + map(self.lookups.len(), size_of::<(LookupId, Lookup<A>)>())
            + hashed(
                self.pending.capacity(),
                size_of::<(RequestId, Pending<A>)>(),
            )
            + self.deadlines.capacity() * size_of::<Reverse<(Time, RequestId, Stage)>>()
            + self.dispatch.heap_bytes()
            + self.out.capacity() * size_of::<Output<A>>()
            // By length, not capacity: the map's capacity after removals
            // depends on its keyed (random) hash, and this count must be a
            // function of the inputs (the simulator's deterministic metrics).
            + hashed(
                self.probed.len() * 2,
                size_of::<(Fingerprint, (Time, A))>(),
            )
            + self.probe_order.capacity() * size_of::<(Time, Fingerprint)>()
    }

    /// The routing table (read only: change it through events).
    pub fn table(&self) -> TableView<'_, A, S> {
        TableView(&self.table)
    }

    /// Lookups running now.
    pub fn lookups_in_progress(&self) -> usize {
        self.lookups.len()
    }

    /// Requests sent and not yet answered.
    pub fn requests_in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Requests of `class` sent and not yet answered.
    pub fn in_flight(&self, class: RequestClass) -> usize {
        self.dispatch.in_flight(class)
    }

    /// True while the join sequence runs.
    pub fn is_joining(&self) -> bool {
        self.join.phase != JoinPhase::Idle
    }

    // ----- inputs -------------------------------------------------------

    /// `caller` sent us `request`; returns the answer to send.
    ///
    /// The caller's fingerprint is proven (mutual TLS); its address is only
    /// claimed. A peer already in the table at that address is refreshed
    /// (so, as in the Go implementation, it may appear in its own find_peer
    /// answer); any other is probed at the claimed address and enters the
    /// table only if it answers there, so no address that nobody listens on
    /// is ever added. A caller whose answer could not change the table (it
    /// would only wait behind a full bucket of live peers whose replacement
    /// cache is full) is not probed ([`CallerProbes`]). Probes are bounded: by the probe budget, per source IP
    /// and per claimed IP ([`crate::Budgets`]); a caller over them is
    /// answered but not probed this time.
    #[must_use = "the answer must be sent to the caller"]
    pub fn on_request(&mut self, now: Time, caller: Caller<A>, request: &Request) -> Response<A> {
        if let Some(address) = caller.address {
            let from = Contact::new(caller.fingerprint, address);
            if self.is_verified(&from) {
                self.record_seen(now, from);
            } else if self.probe_matters(now, &from) {
                self.probe_from(now, from, caller.source);
            }
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
        if let Some(sent) = p.sent {
            self.dispatch.finished(p.class, p.source);
            if result.is_ok() {
                self.dispatch.rtt.sample(now.since(sent));
            }
        }
        self.answer(now, p, result);
        self.pump(now);
        self.settle_lookups(now);
    }

    fn answer(&mut self, now: Time, p: Pending<A>, result: Result<Response<A>, RpcFailure>) {
        match (p.purpose, result) {
            (Purpose::Lookup(lid), Ok(Response::Peers(peers))) => {
                self.record_seen(now, p.to.clone());
                let local = self.local();
                self.join.admitted |= peers.iter().any(|c| c.fingerprint == local);
                // Hearsay never overrides what we verified: a peer we know is
                // asked at the address it answered us from, not a claimed one
                // (looked up only for the peers the lookup keeps).
                if let Some(l) = self.lookups.get_mut(&lid) {
                    let table = &self.table;
                    let verified = |fp: &Fingerprint| table.get(fp).map(|e| e.address.clone());
                    l.on_success_verified(&p.to.fingerprint, peers, &local, verified);
                }
                self.drive_lookup(now, lid);
            }
            (Purpose::Liveness, Ok(_)) => self.record_seen(now, p.to),
            (purpose, result) => {
                // A failure, or a pong where peers were expected. A request
                // that never reached the peer is not its failure.
                if result != Err(RpcFailure::NotSent) {
                    self.record_failure(now, &p.to);
                }
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
        while let Some(Reverse((deadline, id, stage))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            match stage {
                Stage::Queue if p.sent.is_none() => {
                    self.on_response(now, id, Err(RpcFailure::NotSent))
                }
                Stage::Soft => {
                    if let Purpose::Lookup(lid) = p.purpose {
                        let fp = p.to.fingerprint;
                        if let Some(l) = self.lookups.get_mut(&lid) {
                            l.on_slow(&fp);
                        }
                        self.drive_lookup(now, lid);
                    }
                }
                Stage::Hard if p.sent.is_some() => {
                    self.on_response(now, id, Err(RpcFailure::Timeout))
                }
                _ => {}
            }
        }
        self.dispatch.prune(now);
        // Forgotten here too, not only on the next probe: an idle node keeps
        // no memory of the strangers that probed it during a join.
        self.expire_probes(now);
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
        if let JoinPhase::Confirming(at) = self.join.phase {
            if at <= now {
                self.join.phase = match self.start(now, self.local(), LookupKind::Join) {
                    Ok(id) => JoinPhase::SelfLookup(id),
                    Err(_) => JoinPhase::Confirming(now + FIRST_CONFIRMATION),
                };
            }
        }
        if let Some((at, backoff)) = self.join.rejoin {
            if at <= now && self.join.phase == JoinPhase::Idle {
                if self.table.is_empty() {
                    for c in self.join.bootstrap.clone() {
                        self.add_peer(now, c);
                    }
                }
                match self.start(now, self.local(), LookupKind::Join) {
                    Ok(id) => {
                        self.join.repeat = true;
                        self.join.confirmations = 0;
                        self.join.phase = JoinPhase::SelfLookup(id);
                    }
                    Err(_) => self.join.rejoin = Some((now + backoff, backoff)),
                }
            }
        }
        self.settle_lookups(now);
    }

    /// When [`Self::handle_timeout`] must be called next, if ever.
    #[must_use = "handle_timeout must be called at this time"]
    pub fn poll_timeout(&mut self) -> Option<Time> {
        // Drop deadlines of requests already answered.
        while let Some(Reverse((_, id, _))) = self.deadlines.peek() {
            if self.pending.contains_key(id) {
                break;
            }
            self.deadlines.pop();
        }
        if self.deadlines.is_empty() && self.deadlines.capacity() > RETAINED_QUEUE {
            self.deadlines.shrink_to(RETAINED_QUEUE);
        }
        if self.pending.is_empty() && self.pending.capacity() > RETAINED_QUEUE {
            self.pending.shrink_to(RETAINED_QUEUE);
        }
        shrink_sparse(&mut self.pending);
        let request = self.deadlines.peek().map(|Reverse((t, _, _))| *t);
        let refresh = if self.table.is_empty() {
            None
        } else {
            self.table.next_stale_at(self.config.stall_period)
        };
        let rejoin = match self.join.phase {
            JoinPhase::Idle => self.join.rejoin.map(|(t, _)| t),
            JoinPhase::Confirming(at) => Some(at),
            _ => None,
        };
        [request, refresh, rejoin].into_iter().flatten().min()
    }

    /// The next request to send or event to report.
    #[must_use = "outputs must be sent or reported"]
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
        self.join.bootstrap.clear();
        for c in bootstrap {
            if self.join.bootstrap.len() < MAX_REMEMBERED_BOOTSTRAP {
                self.join.bootstrap.push(c.clone());
            }
            self.add_peer(now, c);
        }
        let id = self.start(now, self.local(), LookupKind::Join)?;
        self.join.phase = JoinPhase::SelfLookup(id);
        self.join.repeat = false;
        self.join.admitted = false;
        self.join.confirmations = 0;
        self.settle_lookups(now);
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
        self.probe_from(now, contact, None);
    }

    /// True if a caller at an address not verified is worth a probe: always
    /// with [`CallerProbes::Always`], otherwise only if its answer could
    /// change the table (see [`CallerProbes::WhenUseful`]).
    fn probe_matters(&self, now: Time, caller: &Contact<A>) -> bool {
        self.config.caller_probes == CallerProbes::Always
            || self
                .table
                .seen_matters(caller, now, self.config.ping_min_backoff)
    }

    /// [`Self::probe`] on behalf of a caller from `source`.
    fn probe_from(&mut self, now: Time, contact: Contact<A>, source: Option<IpAddr>) {
        let backoff = self.config.ping_min_backoff;
        if contact.fingerprint == self.local() {
            return;
        }
        let entry = self.table.get(&contact.fingerprint);
        if entry.is_some_and(|e| e.pinged_within(now, backoff)) {
            return;
        }
        let in_table = entry.is_some();
        let verified = entry.is_some_and(|e| e.address == contact.address);
        if !in_table {
            // Not in the table: remember recent probes (bounded) for the backoff.
            self.expire_probes(now);
            // Once per backoff per claimed address: a peer that claims a
            // new one (its certificate was reissued: a relay reservation,
            // a new mapping) is probed there, within the probe budgets.
            let same = |p: &(Time, A)| p.1 == contact.address;
            if self.probed.get(&contact.fingerprint).is_some_and(same)
                || self.probed.len() >= MAX_RECENT_PROBES
            {
                return;
            }
        }
        let class = if verified {
            RequestClass::Liveness
        } else {
            RequestClass::Probe
        };
        // Checked before anything is marked: a refused probe leaves no trace,
        // so the peer can be probed on a later request.
        if class == RequestClass::Probe && !self.may_probe(now, &contact, source) {
            return;
        }
        if in_table {
            self.table.mark_pinged(&contact.fingerprint, now, backoff);
        } else {
            self.probed
                .insert(contact.fingerprint, (now, contact.address.clone()));
            self.probe_order.push_back((now, contact.fingerprint));
        }
        self.send(
            now,
            contact,
            Request::Ping,
            Purpose::Liveness,
            class,
            source,
        );
    }

    /// Forgets probes older than PING_MIN_BACKOFF, oldest first.
    fn expire_probes(&mut self, now: Time) {
        let backoff = self.config.ping_min_backoff;
        while let Some(&(at, fp)) = self.probe_order.front() {
            if now.since(at) < backoff {
                break;
            }
            self.probe_order.pop_front();
            if self.probed.get(&fp).map(|p| p.0) == Some(at) {
                self.probed.remove(&fp);
            }
        }
        if self.probe_order.is_empty() && self.probe_order.capacity() > RETAINED_QUEUE {
            self.probe_order.shrink_to(RETAINED_QUEUE);
            // A hash map keeps its capacity when emptied; an idle node keeps none.
            self.probed.shrink_to(RETAINED_QUEUE);
        }
        shrink_sparse(&mut self.probed);
    }

    /// True if a probe of `to` for a caller from `source` fits the probe
    /// budget, the caller's share of it and the dial limit of `to`'s IP. A
    /// caller claiming the IP it calls from can only make us call it back:
    /// no third party is involved, so no dial token is needed.
    fn may_probe(&mut self, now: Time, to: &Contact<A>, source: Option<IpAddr>) -> bool {
        let budgets = &self.config.budgets;
        let calls_back = source.is_some() && source == to.address.host_ip();
        self.dispatch.has_slot(budgets, RequestClass::Probe)
            && self.dispatch.source_may_probe(budgets, source)
            && (calls_back || self.may_dial(now, to))
    }

    /// True if `to` is in the table at this very address (it answered us there).
    fn is_verified(&self, to: &Contact<A>) -> bool {
        self.table
            .get(&to.fingerprint)
            .is_some_and(|e| e.address == to.address)
    }

    /// True if we may call `to`, which is not verified: its IP has a dial
    /// token left, or a verified peer lives at that IP (a host running Mau
    /// nodes, such as a devnet's 127.0.0.1, is not a third party).
    fn may_dial(&mut self, now: Time, to: &Contact<A>) -> bool {
        let Some(ip) = to.address.host_ip() else {
            // A host name: the core cannot tell which machine it is.
            return true;
        };
        self.dispatch.take_dial(ip, now)
            || self
                .table
                .entries()
                .any(|e| e.address.host_ip() == Some(ip))
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
        self.settle_lookups(now);
        Ok(id)
    }

    // ----- internals ----------------------------------------------------

    /// Registers a lookup and sends its first requests. Its end (even at
    /// once, with no seeds) is handled by [`Self::settle_lookups`], after the
    /// caller has recorded what the lookup is for.
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

    /// Sends what the lookup wants sent; queues it for settling if it finished.
    fn drive_lookup(&mut self, now: Time, id: LookupId) {
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        let target = l.target();
        loop {
            let Some(l) = self.lookups.get_mut(&id) else {
                return;
            };
            let sends: Vec<_> = std::iter::from_fn(|| l.next_request()).collect();
            if sends.is_empty() {
                break;
            }
            let mut refused = false;
            for c in sends {
                // Hearsay at an IP over its dial limit: skipped, not counted
                // against anyone; the lookup asks the next candidate.
                if !self.is_verified(&c) && !self.may_dial(now, &c) {
                    if let Some(l) = self.lookups.get_mut(&id) {
                        l.on_failure(&c.fingerprint);
                    }
                    refused = true;
                    continue;
                }
                let request = Request::FindPeer(target);
                self.send(
                    now,
                    c,
                    request,
                    Purpose::Lookup(id),
                    RequestClass::Lookup,
                    None,
                );
            }
            if !refused {
                break;
            }
        }
        if self.lookups.get(&id).is_some_and(|l| l.is_finished()) && !self.settle.contains(&id) {
            self.settle.push(id);
        }
    }

    /// Ends (or widens) every lookup that finished: the one place a lookup's
    /// end is reported and the join sequence advances. Each input calls it
    /// last.
    fn settle_lookups(&mut self, now: Time) {
        while let Some(id) = self.settle.pop() {
            if !self.lookups.get(&id).is_some_and(|l| l.is_finished()) || self.widen(now, id) {
                continue;
            }
            let Some(l) = self.lookups.remove(&id) else {
                continue;
            };
            self.out
                .push_back(Output::Event(Event::LookupFinished(l.outcome())));
            self.advance_join(now, id);
        }
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
        match &mut self.join.phase {
            JoinPhase::SelfLookup(id) if *id == finished => {
                let mut ids = Vec::new();
                // A confirmation only looks up our id again.
                let buckets = if self.join.confirmations == 0 {
                    self.table.buckets_beyond_closest()
                } else {
                    Vec::new()
                };
                for bucket in buckets {
                    let target = self.random_target_in(bucket);
                    if let Ok(id) = self.start(now, target, LookupKind::Refresh) {
                        ids.push(id);
                    }
                }
                // Those that end at once are settled next, and leave this list then.
                self.join.phase = JoinPhase::Refreshing(ids);
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
        let join = &mut self.join;
        if !matches!(&join.phase, JoinPhase::Refreshing(ids) if ids.is_empty()) {
            return;
        }
        if !join.admitted && !self.table.is_empty() && join.confirmations < MAX_CONFIRMATIONS {
            let wait = FIRST_CONFIRMATION * (1u32 << join.confirmations);
            join.confirmations += 1;
            join.phase = JoinPhase::Confirming(now + wait);
            return;
        }
        join.confirmations = 0;
        join.phase = JoinPhase::Idle;
        if !join.repeat {
            self.out.push_back(Output::Event(Event::Joined {
                peers: self.table.len(),
            }));
        }
        join.repeat = false;
        // Fewer than K peers (we joined before the network had formed
        // around us): nobody near us knows us yet, so join again later.
        // None at all (every bootstrap peer was unreachable just then):
        // start again from the bootstrap peers, with the same backoff.
        let someone = !self.table.is_empty() || !join.bootstrap.is_empty();
        join.rejoin = if someone && self.table.len() < self.config.k {
            let backoff = match join.rejoin {
                Some((_, b)) => (b * 2).min(self.config.stall_period),
                None => self.config.rejoin_interval,
            };
            Some((now + backoff, backoff))
        } else {
            None
        };
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

    /// Sends a request now if its budget has a slot, else queues it.
    fn send(
        &mut self,
        now: Time,
        to: Contact<A>,
        request: Request,
        purpose: Purpose,
        class: RequestClass,
        source: Option<IpAddr>,
    ) {
        let id = RequestId(self.next_request);
        self.next_request += 1;
        self.pending.insert(
            id,
            Pending {
                to,
                request,
                purpose,
                class,
                source,
                sent: None,
            },
        );
        if self.dispatch.has_slot(&self.config.budgets, class) {
            self.emit(now, id);
        } else {
            self.dispatch.enqueue(class, id);
            self.deadlines
                .push(Reverse((now + self.config.rpc_timeout, id, Stage::Queue)));
        }
    }

    /// Hands request `id` to the adapter and starts its deadlines.
    fn emit(&mut self, now: Time, id: RequestId) {
        let soft = self.dispatch.rtt.timeout(
            self.config.min_rpc_timeout,
            self.config.rpc_timeout,
            self.config.initial_rpc_timeout,
        );
        let verified = self
            .pending
            .get(&id)
            .is_some_and(|p| self.is_verified(&p.to));
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.sent = Some(now);
        self.dispatch.sent(p.class, p.source);
        // A peer in our table gets the full timeout before it counts as
        // failed (a slow friend is not evicted); an address only claimed or
        // heard of gets what the network's answers suggest, so a tarpit holds
        // a slot for seconds, not for the full timeout.
        let timeout = if verified {
            self.config.rpc_timeout
        } else {
            (soft * UNVERIFIED_SOFT_MULTIPLE).min(self.config.rpc_timeout)
        };
        // A new connection (an address not in the table) costs handshakes
        // the recent answers, mostly on kept-alive connections, did not.
        let soft = if verified { soft } else { soft * 2 };
        if matches!(p.purpose, Purpose::Lookup(_)) && soft < timeout {
            self.deadlines.push(Reverse((now + soft, id, Stage::Soft)));
        }
        self.deadlines
            .push(Reverse((now + timeout, id, Stage::Hard)));
        self.out.push_back(Output::Transmit(Transmit {
            id,
            to: p.to.clone(),
            request: p.request.clone(),
            class: p.class,
            timeout,
        }));
    }

    /// Sends queued requests while their budgets have slots.
    fn pump(&mut self, now: Time) {
        for class in [RequestClass::Liveness, RequestClass::Lookup] {
            while self.dispatch.has_slot(&self.config.budgets, class) {
                let Some(id) = self.dispatch.pop_queued(class) else {
                    break;
                };
                if self.pending.get(&id).is_some_and(|p| p.sent.is_none()) {
                    self.emit(now, id);
                }
            }
        }
    }

    fn record_seen(&mut self, now: Time, contact: Contact<A>) {
        match self
            .table
            .seen(contact.clone(), now, self.config.ping_min_backoff)
        {
            SeenOutcome::Inserted => self.out.push_back(Output::Event(Event::PeerAdded(contact))),
            SeenOutcome::PingRequired(head) => self.send(
                now,
                head,
                Request::Ping,
                Purpose::Liveness,
                RequestClass::Liveness,
                None,
            ),
            SeenOutcome::Updated
            | SeenOutcome::Cached
            | SeenOutcome::Refused
            | SeenOutcome::SubnetFull => {}
        }
    }

    fn record_failure(&mut self, now: Time, to: &Contact<A>) {
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
            // The last peer is gone (an outage, a network change): start
            // again from the bootstrap peers rather than stay alone forever.
            let join = &mut self.join;
            if self.table.is_empty() && join.rejoin.is_none() && !join.bootstrap.is_empty() {
                let backoff = self.config.rejoin_interval;
                join.rejoin = Some((now + backoff, backoff));
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

impl<S: FingerprintStore> Node<crate::wire::PeerAddress, S> {
    /// A peer holding a reservation on this node (a relay) was granted it
    /// or renewed it over its own connection: it is alive at the address
    /// relayed through us.
    /// If the table holds it at such an address, the entry counts as
    /// answering again, as a request from it would. Without this, one
    /// failed request through its reservation (a relay's own lookups ask
    /// its holders that way) hid it from find_peer answers until it called
    /// us or our rejoin lookups (up to `stall_period` apart) asked it
    /// again. Nobody enters the table this way.
    pub fn on_reservation_held(&mut self, now: Time, holder: Fingerprint) {
        let local = self.local();
        let Some(address) = self.table.get(&holder).map(|e| e.address.clone()) else {
            return;
        };
        if crate::relay::relay_of(&address).is_some_and(|relay| relay.fingerprint == local) {
            self.record_seen(now, Contact::new(holder, address));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewed_reservation_makes_its_holder_answer_again() {
        use crate::relay::relayed_address;
        use crate::wire::PeerAddress;
        let via = |relay: Fingerprint| {
            relayed_address(&Contact::new(
                relay,
                PeerAddress::parse("10.0.0.1:7000").unwrap(),
            ))
            .unwrap()
        };
        let offered = |n: &Node<PeerAddress>, who: Fingerprint| {
            n.closest(&who).iter().any(|c| c.fingerprint == who)
        };
        let me = fp(1);
        let mut n: Node<PeerAddress> = Node::new(me, Config::default(), 3);
        // A holder through us, and one through another relay, each in the
        // table; then a request to each failed: neither is offered.
        let ours = Contact::new(fp(2), via(me));
        let theirs = Contact::new(fp(3), via(fp(9)));
        for c in [&ours, &theirs] {
            n.record_seen(Time(0), c.clone());
            n.record_failure(Time(1), c);
            assert!(!offered(&n, c.fingerprint), "{c:?}");
        }
        n.on_reservation_held(Time(2), fp(2));
        assert!(offered(&n, fp(2)), "our holder answers again");
        n.on_reservation_held(Time(2), fp(3));
        assert!(!offered(&n, fp(3)), "not relayed through us");
        n.on_reservation_held(Time(2), fp(4));
        assert!(n.table.get(&fp(4)).is_none(), "nobody enters the table");
    }

    /// The memory claims of docs/scaling.md: a 48-byte entry for a u32
    /// address (28 with a shared fingerprint store), `heap_bytes` counting
    /// the table, and an idle node keeping no queue memory once its outputs
    /// are drained.
    #[test]
    fn heap_bytes_counts_the_table_and_an_idle_node_keeps_no_queue() {
        use crate::fingerprint_store::SharedFingerprints;
        use crate::routing_table::Entry;
        assert_eq!(std::mem::size_of::<Entry<u32>>(), 48);
        type SharedEntry = Entry<u32, <SharedFingerprints as FingerprintStore>::Id>;
        assert!(std::mem::size_of::<SharedEntry>() <= 32);
        let mut n: Node<u32> = Node::new(fp(1), Config::default(), 1);
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

    /// Answers every find_peer with nobody but ourselves (the peer admitted
    /// us and knows no one else); returns the find_peer targets sent.
    fn answer_all_empty(n: &mut Node<u32>, now: Time) -> Vec<Fingerprint> {
        let mut targets = Vec::new();
        let me = vec![Contact::new(n.local(), 0)];
        while let Some(o) = n.poll_output() {
            if let Output::Transmit(t) = o {
                if let Request::FindPeer(f) = t.request {
                    targets.push(f);
                }
                n.on_response(now, t.id, Ok(Response::Peers(me.clone())));
            }
        }
        targets
    }

    // ----- join --------------------------------------------------------------

    #[test]
    fn join_with_empty_table_reports_joined() {
        let mut n: Node<u32> = Node::new(fp(1), Config::default(), 7);
        n.join(Time(0), []).unwrap();
        let outs = drain(&mut n);
        assert!(outs.contains(&Output::Event(Event::Joined { peers: 0 })));
        assert!(!n.is_joining());
    }

    // ----- probes ------------------------------------------------------------

    #[test]
    fn claimed_address_is_probed_before_it_enters_the_table() {
        let mut n = Node::new(fp(0), Config::default(), 1);
        let caller = Contact::new(fp(0x80), 7);
        assert_eq!(
            n.on_request(
                Time(0),
                Caller::at(caller.fingerprint, caller.address),
                &Request::Ping
            ),
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
        let _ = n.on_request(
            Time(10),
            Caller::at(caller.fingerprint, caller.address),
            &Request::Ping,
        );
        assert!(drain(&mut n).is_empty());
        n.on_response(Time(20), t.id, Ok(Response::Pong));
        assert_eq!(
            drain(&mut n),
            vec![Output::Event(Event::PeerAdded(caller.clone()))]
        );
        // Known at that address: refreshed without a probe.
        let _ = n.on_request(
            Time(30),
            Caller::at(caller.fingerprint, caller.address),
            &Request::Ping,
        );
        assert!(drain(&mut n).is_empty());
    }

    /// A node whose bucket 0 holds K peers seen at time 0, then takes
    /// callers `0xa0..` (bucket 0 too) until its replacement cache is full,
    /// answering their probes; returns it with the next caller's number.
    fn node_with_full_bucket_and_cache(probes: CallerProbes) -> (Node<u32>, u8) {
        let config = Config {
            caller_probes: probes,
            ..Config::default()
        };
        let (k, cap) = (config.k as u8, config.replacement_cache as u8);
        let mut n = Node::new(fp(0), config, 1);
        for i in 0..k {
            n.add_peer(Time(0), Contact::new(fp(0x80 + i), u32::from(i) + 1));
        }
        drain(&mut n);
        for i in 0..cap {
            let caller = Contact::new(fp(0xa0 + i), 100 + u32::from(i));
            let _ = n.on_request(
                Time(10),
                Caller::at(caller.fingerprint, caller.address),
                &Request::Ping,
            );
            let out = drain(&mut n);
            let [Output::Transmit(t)] = out.as_slice() else {
                panic!("cache slot free: probed ({out:?})")
            };
            assert_eq!(t.to, caller);
            n.on_response(Time(20), t.id, Ok(Response::Pong));
            assert!(drain(&mut n).is_empty(), "cached, head fresh: no ping");
        }
        (n, 0xa0 + cap)
    }

    #[test]
    fn a_caller_that_could_only_wait_is_not_probed() {
        let (mut n, next) = node_with_full_bucket_and_cache(CallerProbes::WhenUseful);
        let before = n
            .table()
            .buckets()
            .next()
            .unwrap()
            .1
            .replacements()
            .to_vec();
        let caller = Caller::at(fp(next), 200);
        // Full bucket of live peers, full cache: answered, not probed.
        assert_eq!(
            n.on_request(Time(30), caller.clone(), &Request::FindPeer(fp(next))),
            Response::Peers(n.closest(&fp(next)))
        );
        assert!(drain(&mut n).is_empty());
        assert_eq!(
            n.table().buckets().next().unwrap().1.replacements(),
            &before[..]
        );
        assert!(!n.table().contains(&fp(next)));
        // Once the head is due for a check, the caller is probed again: its
        // answer makes the node ping the head, which may have left.
        let later = Time(10) + n.config().ping_min_backoff + Duration::from_secs(1);
        let _ = n.on_request(later, caller, &Request::Ping);
        let out = drain(&mut n);
        let [Output::Transmit(t)] = out.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!(t.to, Contact::new(fp(next), 200));
        n.on_response(later, t.id, Ok(Response::Pong));
        let out = drain(&mut n);
        let [Output::Transmit(head)] = out.as_slice() else {
            panic!("the head is checked: {out:?}")
        };
        assert_eq!(head.to.fingerprint, fp(0x80));
    }

    #[test]
    fn with_caller_probes_always_every_caller_is_probed() {
        let (mut n, next) = node_with_full_bucket_and_cache(CallerProbes::Always);
        let _ = n.on_request(Time(30), Caller::at(fp(next), 200), &Request::Ping);
        let out = drain(&mut n);
        assert!(
            matches!(out.as_slice(), [Output::Transmit(t)] if t.class == RequestClass::Probe),
            "{out:?}"
        );
    }

    #[test]
    fn silent_probe_never_enters_and_times_out() {
        let mut n = Node::new(fp(0), Config::default(), 1);
        n.probe(Time(0), Contact::new(fp(0x40), 3));
        let out = drain(&mut n);
        let [Output::Transmit(t)] = out.as_slice() else {
            panic!("{out:?}")
        };
        // An address nobody vouched for: twice the soft deadline, not the full one.
        assert_eq!(t.class, RequestClass::Probe);
        assert_eq!(
            t.timeout,
            (n.config().initial_rpc_timeout * 4).min(n.config().rpc_timeout)
        );
        let deadline = n.poll_timeout().unwrap();
        assert_eq!(deadline, Time(0) + t.timeout);
        n.handle_timeout(deadline);
        assert!(n.table().is_empty());
        assert_eq!(n.requests_in_flight(), 0);
        assert_eq!(n.poll_timeout(), None);
    }

    #[test]
    fn join_with_dead_bootstrap_finishes() {
        let mut n = Node::new(fp(0), Config::default(), 1);
        n.join(Time(0), [Contact::new(fp(0x80), 1)]).unwrap();
        let out = drain(&mut n);
        assert!(out
            .iter()
            .any(|o| matches!(o, Output::Transmit(t) if t.request == Request::FindPeer(fp(0)))));
        let mut now = Time(0);
        let mut out = Vec::new();
        while let Some(t) = n.poll_timeout() {
            now = t;
            n.handle_timeout(now);
            out.extend(drain(&mut n));
            if !n.is_joining() {
                break;
            }
        }
        // Nobody ever admitted us: the join looked our id up again a few
        // times, then ended. The dead bootstrap failed each time and is no
        // longer handed to other peers (evicted or marked failed).
        assert!(
            out.iter()
                .any(|o| matches!(o, Output::Event(Event::Joined { peers: 0 | 1 }))),
            "{out:?}"
        );
        let confirmations = out
            .iter()
            .filter(|o| matches!(o, Output::Transmit(t) if t.request == Request::FindPeer(fp(0))))
            .count();
        assert!(confirmations >= 1, "{out:?}");
        assert!(n.closest(&fp(0x80)).is_empty());
        assert!(now > Time(0));
    }

    // ----- rejoin ------------------------------------------------------------

    #[test]
    fn a_join_that_finds_few_peers_is_repeated_with_backoff() {
        let local = fp(0x10);
        let mut n = Node::new(local, Config::default(), 3);
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

    /// Lets every request the node sends time out; returns whom it asked.
    fn time_out_all(
        n: &mut Node<u32>,
        mut now: Time,
        until: impl Fn(&Node<u32>) -> bool,
    ) -> (Vec<Fingerprint>, Time) {
        let mut asked = Vec::new();
        for _ in 0..1000 {
            for o in drain(n) {
                if let Output::Transmit(t) = o {
                    asked.push(t.to.fingerprint);
                }
            }
            if until(n) {
                break;
            }
            let Some(next) = n.poll_timeout() else { break };
            now = next;
            n.handle_timeout(now);
        }
        (asked, now)
    }

    #[test]
    fn a_join_whose_bootstrap_was_unreachable_tries_it_again() {
        let boot = Contact::new(fp(0x90), 1);
        let mut n = Node::new(fp(0x10), Config::default(), 3);
        n.join(Time(0), [boot.clone()]).unwrap();
        // The bootstrap peer is down: the join ends alone, with an empty table.
        let (_, now) = time_out_all(&mut n, Time(0), |n| !n.is_joining());
        assert!(!n.is_joining());
        assert!(n.table().is_empty());
        // It is tried again later, not forgotten.
        let at = n.poll_timeout().expect("a rejoin from the bootstrap peers");
        assert!(at > now);
        n.handle_timeout(at);
        assert!(n.is_joining());
        let (asked, _) = time_out_all(&mut n, at, |n| n.is_joining());
        assert!(asked.contains(&boot.fingerprint), "{asked:?}");
    }

    #[test]
    fn a_table_emptied_later_rejoins_from_the_bootstrap_peers() {
        let config = Config {
            k: 1,
            ..Config::default()
        };
        let boot = Contact::new(fp(0x90), 1);
        let mut n = Node::new(fp(0x10), config, 3);
        n.join(Time(0), [boot.clone()]).unwrap();
        answer_all_empty(&mut n, Time(0));
        assert!(!n.is_joining());
        assert_eq!(n.table().len(), 1);
        // Later the only peer stops answering and is evicted.
        let t = Time(60_000);
        let _ = n.start_lookup(t, fp(0x91));
        let (_, now) = time_out_all(&mut n, t, |n| n.table().is_empty());
        assert!(n.table().is_empty());
        let at = n.poll_timeout().expect("a rejoin is scheduled");
        assert!(at > now);
        n.handle_timeout(at);
        assert!(n.is_joining(), "the emptied node joins again");
    }

    #[test]
    fn a_full_table_is_not_rejoined() {
        let config = Config {
            k: 2,
            ..Config::default()
        };
        let mut n = Node::new(fp(0x10), config, 3);
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
