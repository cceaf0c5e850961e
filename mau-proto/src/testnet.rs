//! A deterministic network of [`Node`]s in memory (feature `testnet`): the one
//! harness the simulator, the benchmarks, the fuzz targets and the property
//! tests step nodes with, in the spirit of quinn-proto's test `Pair` but for
//! N nodes.
//!
//! Nodes are addressed by index ([`Addr`], also their IPv4 address for the
//! core's per-IP limits). Every inbound request goes through the production
//! door, [`Node::on_request`] with a [`Caller`] whose fingerprint is proven and
//! whose address is only claimed, so callers are probed before they enter a
//! table, exactly as a runtime adapter drives the core. Requests and answers
//! travel with a random latency and may be lost ([`Links`]); a request pinned
//! to a fingerprint that no longer lives at its address is refused, as mutual
//! TLS would. One binary heap orders everything by (time, sequence), and one
//! seeded [`Rng`] makes every random choice, so a run is a pure function of
//! its inputs.
//!
//! Nodes keep their tables' fingerprints in one store shared by the network
//! ([`SharedFingerprints`]: 28-byte entries instead of 48); they behave as
//! nodes with the default store do.
//!
//! The embedder schedules its own events (`U`: joins, lookups, churn) with
//! [`Network::schedule`], calls [`Network::step`] until it returns `None`,
//! and drains what nodes reported with [`Network::poll_event`].

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use crate::config::Config;
use crate::fingerprint::Fingerprint;
use crate::fingerprint_store::SharedFingerprints;
use crate::node::{Caller, Event, Node, Output, Request, RequestId, Response};
use crate::rng::Rng;
use crate::routing_table::Contact;
use crate::time::Time;

/// A node's address: its index in the network.
pub type Addr = u32;

/// No timer scheduled.
const NEVER: u64 = u64::MAX;

/// How messages travel.
#[derive(Clone, Debug, PartialEq)]
pub struct Links {
    /// Smallest one-way latency, ms.
    pub latency_min_ms: u64,
    /// Largest one-way latency, ms (uniform in between).
    pub latency_max_ms: u64,
    /// Probability that one message (request or answer) is lost.
    pub loss: f64,
}

impl Links {
    /// Zero latency, no loss: every request is answered at the same instant.
    pub const INSTANT: Links = Links {
        latency_min_ms: 0,
        latency_max_ms: 0,
        loss: 0.0,
    };
}

/// Messages counted by the network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Requests sent (find_peer plus ping).
    pub requests: u64,
    /// find_peer requests.
    pub find_peer: u64,
    /// ping requests.
    pub pings: u64,
    /// Answers sent.
    pub responses: u64,
    /// Messages dropped by [`Links::loss`].
    pub lost: u64,
    /// Requests that reached an address whose node had left.
    pub to_departed: u64,
    /// Answers that arrived after their requester had left.
    pub responses_to_departed: u64,
    /// Contacts carried in find_peer answers.
    pub contacts_carried: u64,
    /// Requests pinned to a fingerprint other than the one at their address.
    pub pin_refused: u64,
    /// find_peer answers a hostile node replaced.
    pub hostile_answers: u64,
}

/// How hostile nodes answer find_peer: their honest answer is replaced.
pub trait Hostile {
    /// The answer node `at` gives for `target`; `ids` are every node's
    /// fingerprint by address.
    fn answer(
        &mut self,
        at: Addr,
        target: &Fingerprint,
        ids: &[Fingerprint],
        rng: &mut Rng,
    ) -> Vec<Contact<Addr>>;
}

/// No hostile behaviour: hostile nodes (if any are added) answer nobody.
#[derive(Clone, Copy, Debug, Default)]
pub struct Honest;

impl Hostile for Honest {
    fn answer(
        &mut self,
        _: Addr,
        _: &Fingerprint,
        _: &[Fingerprint],
        _: &mut Rng,
    ) -> Vec<Contact<Addr>> {
        Vec::new()
    }
}

enum Ev<U> {
    Request {
        from: Addr,
        to: Addr,
        /// The fingerprint the requester pinned (mutual TLS checks it).
        pinned: Fingerprint,
        id: RequestId,
        request: Request,
    },
    Response {
        to: Addr,
        id: RequestId,
        response: Response<Addr>,
    },
    /// A node's `poll_timeout`; stale unless `seq` is the node's current timer.
    Timer {
        node: Addr,
    },
    User(U),
}

/// An event waiting beyond the calendar's horizon.
#[derive(PartialEq, Eq)]
struct Queued {
    at: u64,
    seq: u64,
    idx: u32,
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Queued {
    /// Reversed: the heap pops the earliest (time, sequence) first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

/// Milliseconds the calendar covers ahead of now (a power of two): every
/// message latency and most timers fall within it.
const HORIZON: u64 = 1 << 13;

/// Capacity a drained calendar slot keeps.
const SLOT_KEPT: usize = 32;

/// Capacity the drained queue of nodes' reports keeps.
const EVENTS_KEPT: usize = 64;

/// Marks a queued node wakeup, whose index is its node's address: a wakeup
/// carries nothing else, so it takes no slab entry. Most of a long run's
/// queue is wakeups superseded by an earlier one (they stay queued until
/// due): 171k of 182k events at the end of a 10k warm run.
const TIMER: u32 = 1 << 31;

/// Events by (time, sequence): a calendar of one slot per millisecond for
/// the next [`HORIZON`] ms, a heap for later ones, and a slab of payloads.
///
/// Why a calendar: sequence numbers grow with every push, so the events of
/// one millisecond, appended in push order, are already in (time,
/// sequence) order; a push and a pop cost O(1) where the binary heap's pop
/// (a sift through a heap of every message in flight) was a tenth of a
/// simulation. Events beyond the horizon wait in the heap and move into
/// their slot when the horizon reaches them, before anything due at that
/// time can be pushed, so they keep their place ahead of later pushes.
struct EventQueue<U> {
    /// Slot `t % HORIZON` holds the events due at `t`, for `t` in
    /// `[now, now + HORIZON)`; `(seq, idx)` in push order, read from `head`.
    slots: Vec<(Vec<(u64, u32)>, usize)>,
    /// Events in the slots.
    in_slots: usize,
    /// The time the slots start at (the last popped event's).
    now: u64,
    later: BinaryHeap<Queued>,
    slab: Vec<Option<Ev<U>>>,
    free: Vec<u32>,
    seq: u64,
}

impl<U> EventQueue<U> {
    fn new() -> Self {
        EventQueue {
            slots: (0..HORIZON).map(|_| (Vec::new(), 0)).collect(),
            in_slots: 0,
            now: 0,
            later: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }

    /// Queues `ev` at `at` (not before the last popped event); returns its
    /// sequence number.
    fn push(&mut self, at: u64, ev: Ev<U>) -> u64 {
        debug_assert!(at >= self.now);
        let at = at.max(self.now);
        let seq = self.seq;
        self.seq += 1;
        let idx = match ev {
            Ev::Timer { node } => {
                debug_assert!(node < TIMER);
                TIMER | node
            }
            ev => match self.free.pop() {
                Some(i) => {
                    self.slab[i as usize] = Some(ev);
                    i
                }
                None => {
                    self.slab.push(Some(ev));
                    debug_assert!(self.slab.len() <= TIMER as usize);
                    (self.slab.len() - 1) as u32
                }
            },
        };
        if at - self.now < HORIZON {
            self.slots[(at % HORIZON) as usize].0.push((seq, idx));
            self.in_slots += 1;
        } else {
            self.later.push(Queued { at, seq, idx });
        }
        seq
    }

    /// The earliest slot time holding an event, if any.
    fn next_in_slots(&self) -> Option<u64> {
        if self.in_slots == 0 {
            return None;
        }
        (self.now..self.now + HORIZON).find(|t| {
            let (events, head) = &self.slots[(t % HORIZON) as usize];
            *head < events.len()
        })
    }

    /// Moves the slots' start to `to` and the heap's events now within the
    /// horizon into their slots.
    fn advance(&mut self, to: u64) {
        self.now = to;
        while let Some(q) = self.later.peek() {
            if q.at - self.now >= HORIZON {
                break;
            }
            let slot = &mut self.slots[(q.at % HORIZON) as usize].0;
            slot.push((q.seq, q.idx));
            self.in_slots += 1;
            self.later.pop();
        }
    }

    fn pop(&mut self) -> Option<(u64, u64, Ev<U>)> {
        let at = match self.next_in_slots() {
            Some(t) => t,
            None => self.later.peek()?.at,
        };
        if at != self.now {
            self.advance(at);
        }
        let (events, head) = &mut self.slots[(at % HORIZON) as usize];
        let (seq, idx) = events[*head];
        *head += 1;
        if *head == events.len() {
            // A drained slot keeps a small buffer only: 8,192 slots each
            // holding its busiest millisecond's capacity cost ~100 MB at 10k nodes.
            if events.capacity() > SLOT_KEPT {
                *events = Vec::new();
            } else {
                events.clear();
            }
            *head = 0;
        }
        self.in_slots -= 1;
        if idx & TIMER != 0 {
            return Some((at, seq, Ev::Timer { node: idx & !TIMER }));
        }
        let ev = self.slab[idx as usize].take()?;
        self.free.push(idx);
        Some((at, seq, ev))
    }

    fn peek_time(&self) -> Option<u64> {
        self.next_in_slots()
            .or_else(|| self.later.peek().map(|q| q.at))
    }

    /// Heap bytes held: calendar slots, the heap of later events, the
    /// payload slab (one entry per event queued, its capacity that of the
    /// busiest moment) and its free list.
    fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.slots.capacity() * size_of::<(Vec<(u64, u32)>, usize)>()
            + self
                .slots
                .iter()
                .map(|(v, _)| v.capacity() * size_of::<(u64, u32)>())
                .sum::<usize>()
            + self.later.capacity() * size_of::<Queued>()
            + self.slab.capacity() * size_of::<Option<Ev<U>>>()
            + self.free.capacity() * size_of::<u32>()
    }

    /// Node wakeups queued (in the calendar and the heap).
    fn timers(&self) -> usize {
        let is_timer = |idx: u32| idx & TIMER != 0;
        self.slots
            .iter()
            .map(|(v, head)| v[*head..].iter().filter(|(_, i)| is_timer(*i)).count())
            .sum::<usize>()
            + self.later.iter().filter(|q| is_timer(q.idx)).count()
    }
}

/// A node of the test network (its table's fingerprints in the network's store).
pub type NetNode = Node<Addr, SharedFingerprints>;

struct Slot {
    /// `None` once the node left.
    node: Option<NetNode>,
    /// Answers find_peer through [`Hostile`].
    hostile: bool,
    /// Deadline of the wakeup in the queue, `NEVER` if none.
    timer_at: u64,
    /// Sequence number of that wakeup (older ones are stale).
    timer_seq: u64,
    /// Requests this node sent.
    sent: u64,
}

/// What a [`Network`] holds beside its nodes' own state (which is
/// `size_of::<Node>()` inline in each slot plus [`Node::heap_bytes`]): heap
/// bytes by holder, and the events queued.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkMemory {
    /// Messages and timers in flight: the calendar, the heap of later
    /// events and the payload slab (sized by the busiest moment so far).
    pub queue: usize,
    /// Nodes' reports not yet taken by [`Network::poll_event`].
    pub reports: usize,
    /// Per-node bookkeeping (slots less the nodes in them, fingerprints).
    pub slots: usize,
    /// Events queued now.
    pub queued_events: usize,
    /// Of those, node wakeups superseded by an earlier one: they stay
    /// queued (and counted as events when their time comes) but do nothing.
    pub stale_timers: usize,
}

/// What one [`Network::step`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<U> {
    /// Delivered a message or fired a node's timer (its reports are in
    /// [`Network::poll_event`]).
    Network,
    /// An event the embedder scheduled is due: handle it.
    User(U),
}

/// N nodes, their links and every message in flight. See the module docs.
pub struct Network<U, H = Honest> {
    config: Config,
    links: Links,
    rng: Rng,
    now: u64,
    queue: EventQueue<U>,
    slots: Vec<Slot>,
    ids: Vec<Fingerprint>,
    /// The fingerprints every node's table holds, once each.
    fingerprints: SharedFingerprints,
    events: VecDeque<(Addr, Event<Addr>)>,
    hostile: H,
    traffic: Traffic,
    events_processed: u64,
    check_invariants: bool,
    invariant_violations: u64,
    first_violation: Option<String>,
}

impl<U> Network<U, Honest> {
    /// An empty honest network: nodes get `config`, messages travel over
    /// `links`, every random choice comes from `seed`.
    pub fn new(config: Config, links: Links, seed: u64) -> Self {
        Self::with_hostile(config, links, seed, Honest)
    }
}

impl<U, H: Hostile> Network<U, H> {
    /// An empty network whose hostile nodes answer with `hostile`.
    pub fn with_hostile(config: Config, links: Links, seed: u64, hostile: H) -> Self {
        Network {
            config,
            links,
            rng: Rng::new(seed),
            now: 0,
            queue: EventQueue::new(),
            slots: Vec::new(),
            ids: Vec::new(),
            fingerprints: SharedFingerprints::new(),
            events: VecDeque::new(),
            hostile,
            traffic: Traffic::default(),
            events_processed: 0,
            check_invariants: false,
            invariant_violations: 0,
            first_violation: None,
        }
    }

    /// Checks every node's invariants after each of its inputs (slow).
    pub fn set_check_invariants(&mut self, on: bool) {
        self.check_invariants = on;
    }

    /// Invariant violations found so far, and the first one.
    pub fn invariant_violations(&self) -> (u64, Option<&str>) {
        (self.invariant_violations, self.first_violation.as_deref())
    }

    /// The network's random generator (for the embedder's own choices, so
    /// that one seed decides the whole run).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// The hostile behaviour (to update its state).
    pub fn hostile_mut(&mut self) -> &mut H {
        &mut self.hostile
    }

    /// The current time.
    pub fn now(&self) -> Time {
        Time(self.now)
    }

    /// Messages counted so far.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Events processed so far (messages delivered, timers, user events).
    pub fn events_processed(&self) -> u64 {
        self.events_processed
    }

    /// Nodes added so far (alive or not).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True before the first node is added.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every node's fingerprint, by address.
    pub fn ids(&self) -> &[Fingerprint] {
        &self.ids
    }

    /// The store of the fingerprints in the nodes' tables (shared: no
    /// node's [`Node::heap_bytes`] counts it).
    pub fn fingerprints(&self) -> &SharedFingerprints {
        &self.fingerprints
    }

    /// The contact of node `a`.
    pub fn contact(&self, a: Addr) -> Contact<Addr> {
        Contact::new(self.ids[a as usize], a)
    }

    /// Node `a`, unless it left.
    pub fn node(&self, a: Addr) -> Option<&NetNode> {
        self.slots.get(a as usize)?.node.as_ref()
    }

    /// Every node still alive, by address.
    pub fn nodes(&self) -> impl Iterator<Item = (Addr, &NetNode)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(a, s)| Some((a as Addr, s.node.as_ref()?)))
    }

    /// The memory the network itself holds, nodes aside (see
    /// [`NetworkMemory`]). Walks the event queue and the slots.
    pub fn memory(&self) -> NetworkMemory {
        use std::mem::size_of;
        let timers = self.queue.timers();
        let live = self.slots.iter().filter(|s| s.timer_at != NEVER).count();
        NetworkMemory {
            queue: self.queue.heap_bytes(),
            reports: self.events.capacity() * size_of::<(Addr, Event<Addr>)>(),
            slots: self.slots.capacity() * size_of::<Slot>()
                - self.slots.len() * size_of::<NetNode>()
                + self.ids.capacity() * size_of::<Fingerprint>(),
            queued_events: self.queue.slab.len() - self.queue.free.len() + timers,
            stale_timers: timers.saturating_sub(live),
        }
    }

    /// Requests node `a` has sent so far.
    pub fn requests_sent(&self, a: Addr) -> u64 {
        self.slots.get(a as usize).map_or(0, |s| s.sent)
    }

    /// Makes room for `additional` more nodes at once (a million slots
    /// grown by doubling leave up to half of them allocated and unused).
    pub fn reserve_nodes(&mut self, additional: usize) {
        self.slots.reserve_exact(additional);
        self.ids.reserve_exact(additional);
    }

    /// Adds a node with identity `fp` (its core seeded with `seed`); it does
    /// nothing until told (e.g. [`Node::join`] through [`Self::with_node`]).
    pub fn add_node(&mut self, fp: Fingerprint, seed: u64, hostile: bool) -> Addr {
        let a = self.slots.len() as Addr;
        self.slots.push(Slot {
            node: Some(Node::with_store(
                fp,
                self.config.clone(),
                seed,
                self.fingerprints.clone(),
            )),
            hostile,
            timer_at: NEVER,
            timer_seq: 0,
            sent: 0,
        });
        self.ids.push(fp);
        a
    }

    /// Node `a` leaves: messages to it are lost from now on.
    pub fn remove_node(&mut self, a: Addr) {
        if let Some(s) = self.slots.get_mut(a as usize) {
            s.node = None;
            s.timer_at = NEVER;
        }
    }

    /// Runs `f` on node `a` now, then sends what it emitted. `None` if it left.
    pub fn with_node<T>(&mut self, a: Addr, f: impl FnOnce(&mut NetNode, Time) -> T) -> Option<T> {
        let now = Time(self.now);
        let out = f(self.slots.get_mut(a as usize)?.node.as_mut()?, now);
        self.pump(a);
        Some(out)
    }

    /// Schedules `event` for the embedder at `at` (ms; not before now).
    pub fn schedule(&mut self, at: u64, event: U) {
        self.queue.push(at.max(self.now), Ev::User(event));
    }

    /// When the next event is due.
    pub fn next_time(&self) -> Option<u64> {
        self.queue.peek_time()
    }

    /// What a node reported (lookups ended, joins done, peers added...).
    pub fn poll_event(&mut self) -> Option<(Addr, Event<Addr>)> {
        let next = self.events.pop_front();
        if next.is_none() && self.events.capacity() > EVENTS_KEPT {
            // A burst (a warm start's tables: one `PeerAdded` per entry,
            // 3.6 GB at 100k nodes) would otherwise stay allocated all run.
            self.events = VecDeque::new();
        }
        next
    }

    /// Processes the next event; `None` when nothing is left.
    pub fn step(&mut self) -> Option<Step<U>> {
        let (at, seq, ev) = self.queue.pop()?;
        debug_assert!(at >= self.now);
        self.now = at;
        self.events_processed += 1;
        match ev {
            Ev::User(u) => return Some(Step::User(u)),
            Ev::Request {
                from,
                to,
                pinned,
                id,
                request,
            } => self.deliver_request(from, to, pinned, id, request),
            Ev::Response { to, id, response } => {
                let now = Time(self.now);
                match self.slots[to as usize].node.as_mut() {
                    Some(node) => {
                        node.on_response(now, id, Ok(response));
                        self.pump(to);
                    }
                    None => self.traffic.responses_to_departed += 1,
                }
            }
            Ev::Timer { node: a } => {
                let now = Time(self.now);
                let slot = &mut self.slots[a as usize];
                if slot.timer_seq == seq && slot.timer_at != NEVER {
                    slot.timer_at = NEVER;
                    if let Some(node) = slot.node.as_mut() {
                        node.handle_timeout(now);
                        self.pump(a);
                    }
                }
            }
        }
        Some(Step::Network)
    }

    /// Steps until nothing is left or the next event is after `until`.
    /// User events are handed to `on_user`.
    pub fn run_until(&mut self, until: u64, mut on_user: impl FnMut(&mut Self, U)) {
        while self.next_time().is_some_and(|t| t <= until) {
            if let Some(Step::User(u)) = self.step() {
                on_user(self, u);
            }
        }
    }

    fn deliver_request(
        &mut self,
        from: Addr,
        to: Addr,
        pinned: Fingerprint,
        id: RequestId,
        request: Request,
    ) {
        let now = Time(self.now);
        if self.ids[to as usize] != pinned {
            self.traffic.pin_refused += 1;
            return;
        }
        let slot = &mut self.slots[to as usize];
        let Some(node) = slot.node.as_mut() else {
            self.traffic.to_departed += 1;
            return;
        };
        // The production door: a proven fingerprint, a claimed address.
        let caller = Caller::at(self.ids[from as usize], from);
        let mut response = node.on_request(now, caller, &request);
        let hostile = slot.hostile;
        self.pump(to);
        if let (true, Request::FindPeer(target)) = (hostile, &request) {
            response = Response::Peers(self.hostile.answer(to, target, &self.ids, &mut self.rng));
            self.traffic.hostile_answers += 1;
        }
        self.traffic.responses += 1;
        if let Response::Peers(p) = &response {
            self.traffic.contacts_carried += p.len() as u64;
        }
        if !self.lost() {
            let at = self.now + self.latency();
            self.queue.push(
                at,
                Ev::Response {
                    to: from,
                    id,
                    response,
                },
            );
        }
    }

    fn latency(&mut self) -> u64 {
        let (lo, hi) = (self.links.latency_min_ms, self.links.latency_max_ms);
        if hi <= lo {
            return lo;
        }
        lo + self.rng.below(hi - lo + 1)
    }

    fn lost(&mut self) -> bool {
        if self.links.loss <= 0.0 {
            return false;
        }
        let lost = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - self.links.loss;
        if lost {
            self.traffic.lost += 1;
        }
        lost
    }

    /// Sends node `a`'s outputs into the network and (re)schedules its wakeup.
    fn pump(&mut self, a: Addr) {
        loop {
            let Some(node) = self.slots[a as usize].node.as_mut() else {
                return;
            };
            match node.poll_output() {
                Some(Output::Transmit(t)) => self.transmit(a, t.to, t.id, t.request),
                Some(Output::Event(e)) => self.events.push_back((a, e)),
                None => break,
            }
        }
        let slot = &mut self.slots[a as usize];
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        if self.check_invariants {
            if let Err(e) = node.check_invariants() {
                self.invariant_violations += 1;
                self.first_violation
                    .get_or_insert_with(|| format!("node {a}, t={} ms: {e}", self.now));
            }
        }
        if let Some(t) = node.poll_timeout() {
            let t = t.0.max(self.now);
            if t < slot.timer_at {
                slot.timer_at = t;
                slot.timer_seq = self.queue.push(t, Ev::Timer { node: a });
            }
        }
    }

    fn transmit(&mut self, from: Addr, to: Contact<Addr>, id: RequestId, request: Request) {
        self.traffic.requests += 1;
        match request {
            Request::Ping => self.traffic.pings += 1,
            Request::FindPeer(_) => self.traffic.find_peer += 1,
        }
        self.slots[from as usize].sent += 1;
        if self.lost() {
            return;
        }
        let at = self.now + self.latency();
        // An address outside the network (hearsay) reaches nobody.
        if (to.address as usize) < self.slots.len() {
            self.queue.push(
                at,
                Ev::Request {
                    from,
                    to: to.address,
                    pinned: to.fingerprint,
                    id,
                    request,
                },
            );
        } else {
            self.traffic.to_departed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` nodes with random v4 ids, the first one the bootstrap of all.
    fn joined(n: usize, seed: u64, links: Links) -> Network<()> {
        let mut net = Network::new(Config::default(), links, seed);
        for i in 0..n {
            let mut b = [0u8; 20];
            b[..8].copy_from_slice(&net.rng().next_u64().to_le_bytes());
            b[19] = 1;
            let fp = Fingerprint::V4(b);
            let seed = net.rng().next_u64();
            let a = net.add_node(fp, seed, false);
            let boot: Vec<_> = (i > 0).then(|| net.contact(0)).into_iter().collect();
            net.with_node(a, |n, now| n.join(now, boot)).map(Result::ok);
        }
        net.run_until(120_000, |_, ()| {});
        net
    }

    #[test]
    fn nodes_join_through_probes_and_find_each_other() {
        let links = Links {
            latency_min_ms: 5,
            latency_max_ms: 50,
            loss: 0.0,
        };
        let mut net = joined(40, 3, links);
        let mut joins = 0;
        while let Some((_, e)) = net.poll_event() {
            joins += usize::from(matches!(e, Event::Joined { .. }));
        }
        assert_eq!(joins, 40);
        // Probes were sent: callers entered tables only by answering pings.
        assert!(net.traffic().pings > 0);
        let target = net.ids()[39];
        let id = net
            .with_node(1, |n, now| n.start_lookup(now, target))
            .and_then(Result::ok);
        let until = net.now().0 + 60_000;
        net.run_until(until, |_, ()| {});
        let mut found = false;
        while let Some((a, e)) = net.poll_event() {
            if let (1, Event::LookupFinished(o)) = (a, e) {
                found |= Some(o.id) == id && o.found.is_some_and(|c| c.address == 39);
            }
        }
        assert!(found);
    }

    /// A burst of reports (a warm start: one `PeerAdded` per table entry
    /// of every node) is given back once polled, not kept for the run.
    #[test]
    fn polled_reports_give_their_memory_back() {
        let mut net: Network<()> = Network::new(Config::default(), Links::INSTANT, 1);
        let fp = |i: u32| {
            let mut b = [0u8; 20];
            b[..4].copy_from_slice(&i.to_be_bytes());
            Fingerprint::V4(b)
        };
        let n = 300;
        for i in 0..n {
            net.add_node(fp(i), u64::from(i), false);
        }
        for a in 0..n {
            let peers: Vec<_> = (0..n).filter(|&b| b != a).map(|b| net.contact(b)).collect();
            net.with_node(a, |node, now| {
                for c in peers {
                    node.add_peer(now, c);
                }
            });
        }
        let queued = net.memory().reports;
        let one = std::mem::size_of::<(Addr, Event<Addr>)>();
        assert!(queued >= 1_000 * one, "reports queued: {queued} bytes");
        let mut reports = 0;
        while net.poll_event().is_some() {
            reports += 1;
        }
        assert!(reports >= 1_000);
        assert!(net.memory().reports <= EVENTS_KEPT * one);
    }

    #[test]
    fn the_calendar_pops_in_time_then_push_order() {
        let mut q: EventQueue<u64> = EventQueue::new();
        let mut rng = Rng::new(5);
        let mut want = Vec::new();
        let mut got = Vec::new();
        let mut now = 0;
        let (mut users, mut peak) = (0usize, 0usize);
        // What each event carries: a user payload, or a node wakeup (kept
        // outside the slab), by sequence number.
        let what = |ev: &Ev<u64>| match ev {
            Ev::User(r) => *r,
            Ev::Timer { node } => u64::from(*node) + 1_000_000,
            _ => u64::MAX,
        };
        // Pushes near and far (beyond the horizon), interleaved with pops,
        // with many events on the same millisecond.
        for round in 0..2_000u64 {
            for i in 0..3 {
                let ahead = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(100),
                    2 => HORIZON - 1 + rng.below(3),
                    _ => rng.below(4 * HORIZON),
                };
                let ev = match i {
                    0 => Ev::Timer { node: round as u32 },
                    _ => Ev::User(round),
                };
                let carried = what(&ev);
                if let Ev::User(_) = ev {
                    users += 1;
                    peak = peak.max(users);
                }
                let seq = q.push(now + ahead, ev);
                want.push((now + ahead, seq, carried));
            }
            if let Some((at, seq, ev)) = q.pop() {
                assert!(at >= now);
                now = at;
                users -= usize::from(matches!(ev, Ev::User(_)));
                got.push((at, seq, what(&ev)));
            }
        }
        while let Some((at, seq, ev)) = q.pop() {
            got.push((at, seq, what(&ev)));
        }
        want.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(q.peek_time(), None);
        assert_eq!(q.timers(), 0);
        // Wakeups took no slab entry: the slab grew to the user events in
        // flight at the busiest moment, no further.
        assert_eq!(q.slab.len(), peak);
    }

    #[test]
    fn same_seed_same_run() {
        let links = Links {
            latency_min_ms: 1,
            latency_max_ms: 80,
            loss: 0.05,
        };
        let a = joined(30, 9, links.clone());
        let b = joined(30, 9, links);
        assert_eq!(a.traffic(), b.traffic());
        assert_eq!(a.events_processed(), b.events_processed());
        let c = joined(30, 10, Links::INSTANT);
        assert_ne!(a.traffic(), c.traffic());
    }
}
