//! The discrete-event run loop.
//!
//! One `Node<u32>` per simulated node (the address is the node's index in a
//! `Vec`), one binary heap of events ordered by (virtual time, sequence number),
//! one seeded [`Rng`] for every random choice of the simulator (each node's own
//! generator is seeded from it). Nothing iterates a hash map, so a run is a
//! pure function of its [`Scenario`].

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

use mau_proto::{
    Config, Contact, Event, Fingerprint, Key, LookupKind, LookupOutcome, Node, Output, Request,
    RequestId, Response, Rng, Time,
};

use crate::metrics::{
    cpu_times_ms, peak_rss_kib, round3, BackgroundMetrics, Deterministic, JoinMetrics,
    LookupMetrics, Report, Resources, Stats, TableMetrics, TrafficMetrics,
};
use crate::scenario::{Attack, Scenario};
use crate::warm;

/// Index of a simulated node (its address).
type Addr = u32;

/// No timer scheduled.
const NEVER: u64 = u64::MAX;

enum Ev {
    /// A request arrives at `to`.
    Request {
        from: Addr,
        to: Addr,
        /// The fingerprint the requester pinned (mutual TLS checks it).
        pinned: Fingerprint,
        id: RequestId,
        request: Request,
    },
    /// The answer to request `id` arrives back at `to`.
    Response {
        to: Addr,
        id: RequestId,
        response: Response<Addr>,
    },
    /// A node's `poll_timeout` deadline; stale unless `seq` is the node's current timer.
    Timer { node: Addr },
    /// The next initial node starts joining.
    InitialJoin { node: Addr },
    /// The next measured lookup starts.
    Lookup { remaining: u32 },
    /// A random node leaves and a newcomer arrives.
    Churn { remaining: u32 },
}

/// A heap entry: 24 bytes, the payload waits in [`EventQueue::slab`], so the
/// heap's sift moves stay small however big an event is.
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

/// Events ordered by (virtual time, sequence number): a binary heap of small
/// keys plus a slab of payloads with a free list.
#[derive(Default)]
struct EventQueue {
    heap: BinaryHeap<Queued>,
    slab: Vec<Option<Ev>>,
    free: Vec<u32>,
    seq: u64,
}

impl EventQueue {
    fn push(&mut self, at: u64, ev: Ev) -> u64 {
        let seq = self.seq;
        self.seq += 1;
        let idx = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = Some(ev);
                i
            }
            None => {
                self.slab.push(Some(ev));
                (self.slab.len() - 1) as u32
            }
        };
        self.heap.push(Queued { at, seq, idx });
        seq
    }

    fn pop(&mut self) -> Option<(u64, u64, Ev)> {
        let q = self.heap.pop()?;
        let ev = self.slab[q.idx as usize].take().expect("queued event");
        self.free.push(q.idx);
        Some((q.at, q.seq, ev))
    }

    fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|q| q.at)
    }
}

struct Slot {
    /// `None` once the node left.
    node: Option<Node<Addr>>,
    fp: Fingerprint,
    /// Position in `Sim::joined` while alive and joined.
    joined_pos: Option<u32>,
    /// Deadline of the wakeup in the queue, `NEVER` if none.
    timer_at: u64,
    /// Sequence number of that wakeup (older ones are stale).
    timer_seq: u64,
    join_started: u64,
    join_requests: u32,
    join_lookups: u32,
    joining: bool,
    stale_refreshes: u32,
    /// Answers find_peer with [`Scenario::attack`].
    adversary: bool,
}

struct MeasuredLookup {
    target: Addr,
}

/// A simulation in progress. Use [`run`] unless you need to step it yourself.
pub struct Sim {
    sc: Scenario,
    config: Config,
    rng: Rng,
    now: u64,
    queue: EventQueue,
    slots: Vec<Slot>,
    /// Alive nodes that finished joining (random picks: bootstrap, lookups, churn).
    joined: Vec<Addr>,
    /// Alive adversaries by key, sorted (the eclipse attack answers from it).
    adversary_keys: Vec<(Key, Addr)>,
    measured: BTreeMap<(Addr, u64), MeasuredLookup>,
    initial_joined: u32,
    lookup_phase_start: Option<u64>,
    lookups_settled: u64,
    events: u64,
    wall_join_done: Option<Instant>,
    /// Print progress to stderr (the run's start time).
    progress: Option<Instant>,
    /// Process CPU time (and runqueue wait) when the simulation was created, ms.
    cpu_at_start: u64,
    cpu_wait_at_start: u64,
    // Samples.
    hops: Vec<u64>,
    lookup_msgs: Vec<u64>,
    lookup_failures: Vec<u64>,
    lookup_latency: Vec<u64>,
    join_msgs: Vec<u64>,
    join_lookups: Vec<u64>,
    join_duration: Vec<u64>,
    join_peers: Vec<u64>,
    lookups: LookupMetrics,
    traffic: TrafficMetrics,
    background: BackgroundMetrics,
    join: JoinMetrics,
    invariant_violations: u64,
}

/// Runs `scenario` to the end and returns its metrics.
pub fn run(scenario: &Scenario) -> Result<Report, String> {
    run_with_progress(scenario, false)
}

/// Like [`run`]; with `progress`, prints a line to stderr every few million
/// events (does not change the results).
pub fn run_with_progress(scenario: &Scenario, progress: bool) -> Result<Report, String> {
    scenario.validate()?;
    let started = Instant::now();
    let mut sim = Sim::new(scenario.clone(), progress.then_some(started));
    sim.run_to_end();
    Ok(sim.report(started))
}

impl Sim {
    /// A network with no node yet and the first initial join scheduled at
    /// time 0, or (warm start) the initial nodes already joined. With
    /// `progress` (the run's start), progress lines go to stderr.
    pub fn new(sc: Scenario, progress: Option<Instant>) -> Sim {
        let config = sc.protocol.to_config();
        let rng = Rng::new(sc.seed);
        let mut sim = Sim {
            config,
            rng,
            now: 0,
            queue: EventQueue::default(),
            slots: Vec::with_capacity((sc.nodes + sc.churn_events()) as usize),
            joined: Vec::with_capacity(sc.nodes as usize),
            adversary_keys: Vec::new(),
            measured: BTreeMap::new(),
            initial_joined: 0,
            lookup_phase_start: None,
            lookups_settled: 0,
            events: 0,
            wall_join_done: None,
            progress,
            cpu_at_start: cpu_times_ms().0,
            cpu_wait_at_start: cpu_times_ms().1,
            hops: Vec::new(),
            lookup_msgs: Vec::new(),
            lookup_failures: Vec::new(),
            lookup_latency: Vec::new(),
            join_msgs: Vec::new(),
            join_lookups: Vec::new(),
            join_duration: Vec::new(),
            join_peers: Vec::new(),
            lookups: LookupMetrics {
                scheduled: sc.lookups as u64,
                ..Default::default()
            },
            traffic: TrafficMetrics::default(),
            background: BackgroundMetrics::default(),
            join: JoinMetrics::default(),
            invariant_violations: 0,
            sc,
        };
        match sim.sc.warm_start {
            None => {
                sim.push(0, Ev::InitialJoin { node: 0 });
            }
            Some(joins) => {
                sim.warm_start();
                let first = sim.sc.nodes;
                if joins > 0 {
                    sim.push(0, Ev::InitialJoin { node: first });
                } else {
                    sim.begin_lookup_phase();
                }
            }
        }
        sim
    }

    /// `a` finished joining: lookups, churn and bootstraps may pick it.
    fn mark_joined(&mut self, a: Addr) {
        let slot = &mut self.slots[a as usize];
        slot.joining = false;
        slot.joined_pos = Some(self.joined.len() as u32);
        self.joined.push(a);
    }

    /// Nodes started before the lookup phase: the initial network plus a warm
    /// start's sample joiners.
    fn initial_nodes(&self) -> u32 {
        self.sc.nodes + self.sc.warm_start.unwrap_or(0)
    }

    /// Spawns the initial nodes with converged tables (see [`warm`]), all
    /// joined at time 0.
    fn warm_start(&mut self) {
        for _ in 0..self.sc.nodes {
            self.spawn();
        }
        let mut order: Vec<(Key, Addr)> = (0..self.sc.nodes)
            .map(|a| (self.slots[a as usize].fp.key(), a))
            .collect();
        order.sort_unstable();
        let keys: Vec<Key> = order.iter().map(|(k, _)| *k).collect();
        let now = Time(self.now);
        let mut picks = Vec::new();
        for a in 0..self.sc.nodes {
            picks.clear();
            let local = self.slots[a as usize].fp.key();
            warm::converged_peers(&keys, &local, self.config.k, &mut self.rng, &mut picks);
            for &i in &picks {
                let b = order[i].1;
                let contact = Contact::new(self.slots[b as usize].fp, b);
                if let Some(node) = self.slots[a as usize].node.as_mut() {
                    node.add_peer(now, contact);
                }
            }
            self.mark_joined(a);
            self.pump(a);
            if let Some(t0) = self.progress.filter(|_| (a + 1) % 100_000 == 0) {
                eprintln!(
                    "[{:7.1} s wall] warm start: {} of {} tables built, peak RSS {} MiB",
                    t0.elapsed().as_secs_f64(),
                    a + 1,
                    self.sc.nodes,
                    peak_rss_kib() / 1024
                );
            }
        }
        self.initial_joined = self.sc.nodes;
    }

    fn push(&mut self, at: u64, ev: Ev) -> u64 {
        self.queue.push(at, ev)
    }

    fn latency(&mut self) -> u64 {
        let span = self.sc.latency_max_ms - self.sc.latency_min_ms + 1;
        self.sc.latency_min_ms + self.rng.below(span)
    }

    fn lost(&mut self) -> bool {
        if self.sc.loss <= 0.0 {
            return false;
        }
        let lost = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - self.sc.loss;
        if lost {
            self.traffic.lost += 1;
        }
        lost
    }

    fn lookups_done(&self) -> bool {
        self.lookup_phase_start.is_some() && self.lookups_settled == self.sc.lookups as u64
    }

    /// Processes events until every lookup has finished and `duration_ms` passed.
    pub fn run_to_end(&mut self) {
        while let Some(at) = self.queue.peek_time() {
            if self.lookups_done() && at > self.sc.duration_ms {
                break;
            }
            let (at, seq, ev) = self.queue.pop().expect("peeked");
            debug_assert!(at >= self.now);
            self.now = at;
            if self.lookup_phase_start.is_none() && at > self.join_deadline() {
                // Some initial join never completed (it cannot without a
                // bug): measure anyway rather than run forever.
                self.begin_lookup_phase();
            }
            self.events += 1;
            self.dispatch(seq, ev);
            if self.events % (1 << 22) == 0 {
                if let Some(t0) = self.progress {
                    eprintln!(
                        "[{:7.1} s wall] virtual {:8.1} s, {} events, {} nodes joined, {}/{} lookups settled, peak RSS {} MiB",
                        t0.elapsed().as_secs_f64(),
                        self.now as f64 / 1000.0,
                        self.events,
                        self.joined.len(),
                        self.lookups_settled,
                        self.sc.lookups,
                        peak_rss_kib() / 1024
                    );
                }
            }
        }
    }

    fn dispatch(&mut self, seq: u64, ev: Ev) {
        let now = Time(self.now);
        match ev {
            Ev::Request {
                from,
                to,
                pinned,
                id,
                request,
            } => {
                let from_contact = Contact::new(self.slots[from as usize].fp, from);
                if self.slots[to as usize].fp != pinned {
                    self.traffic.pin_refused += 1;
                    return;
                }
                let Some(node) = self.slots[to as usize].node.as_mut() else {
                    self.traffic.to_departed += 1;
                    return;
                };
                let mut response = node.on_request(now, from_contact, &request);
                self.pump(to);
                if let (true, Request::FindPeer(target)) =
                    (self.slots[to as usize].adversary, &request)
                {
                    response = Response::Peers(self.hostile_answer(target));
                    self.traffic.hostile_answers += 1;
                }
                self.traffic.responses += 1;
                if let Response::Peers(p) = &response {
                    self.traffic.contacts_carried += p.len() as u64;
                }
                if !self.lost() {
                    let at = self.now + self.latency();
                    self.push(
                        at,
                        Ev::Response {
                            to: from,
                            id,
                            response,
                        },
                    );
                }
            }
            Ev::Response { to, id, response } => {
                let Some(node) = self.slots[to as usize].node.as_mut() else {
                    self.traffic.responses_to_departed += 1;
                    return;
                };
                node.on_response(now, id, Ok(response));
                self.pump(to);
            }
            Ev::Timer { node: a } => {
                let slot = &mut self.slots[a as usize];
                if slot.timer_seq != seq || slot.timer_at == NEVER {
                    return;
                }
                slot.timer_at = NEVER;
                let Some(node) = slot.node.as_mut() else {
                    return;
                };
                node.handle_timeout(now);
                self.pump(a);
            }
            Ev::InitialJoin { node } => {
                let a = self.spawn();
                debug_assert_eq!(a, node);
                self.start_join(a);
                if node + 1 < self.initial_nodes() {
                    let at = self.now + self.sc.join_interval_ms;
                    self.push(at, Ev::InitialJoin { node: node + 1 });
                }
            }
            Ev::Lookup { remaining } => {
                self.start_measured_lookup();
                if remaining > 1 {
                    let at = self.now + self.sc.lookup_interval_ms;
                    self.push(
                        at,
                        Ev::Lookup {
                            remaining: remaining - 1,
                        },
                    );
                }
            }
            Ev::Churn { remaining } => {
                self.churn_one();
                if remaining > 1 {
                    let at = self.now + self.churn_interval();
                    self.push(
                        at,
                        Ev::Churn {
                            remaining: remaining - 1,
                        },
                    );
                }
            }
        }
    }

    /// Latest time the lookup phase waits for: the last initial join plus 10 min.
    fn join_deadline(&self) -> u64 {
        (self.initial_nodes() as u64 - 1) * self.sc.join_interval_ms + 600_000
    }

    fn churn_interval(&self) -> u64 {
        let window = self.sc.lookups.max(1) as u64 * self.sc.lookup_interval_ms;
        (window / self.sc.churn_events().max(1) as u64).max(1)
    }

    /// Creates a node (not yet joining) and returns its address.
    fn spawn(&mut self) -> Addr {
        let a = self.slots.len() as Addr;
        let mut bytes = [0u8; 20];
        for chunk in bytes.chunks_mut(8) {
            let r = self.rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        let fp = Fingerprint::V4(bytes);
        let seed = self.rng.next_u64();
        // Drawn only when there are adversaries: honest runs keep their streams.
        let adversary = self.sc.adversaries > 0.0
            && (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= self.sc.adversaries;
        if adversary {
            let key = fp.key();
            let at = self.adversary_keys.partition_point(|(k, _)| *k < key);
            self.adversary_keys.insert(at, (key, a));
        }
        let node = Node::new(fp, self.config.clone(), Time(self.now), seed);
        self.slots.push(Slot {
            node: Some(node),
            fp,
            joined_pos: None,
            timer_at: NEVER,
            timer_seq: 0,
            join_started: self.now,
            join_requests: 0,
            join_lookups: 0,
            joining: true,
            stale_refreshes: 0,
            adversary,
        });
        a
    }

    fn start_join(&mut self, a: Addr) {
        let n = self.joined.len();
        let want = (self.sc.bootstrap_peers as usize).min(n);
        let mut boot: Vec<Contact<Addr>> = Vec::with_capacity(want);
        while boot.len() < want {
            let b = self.joined[self.rng.below(n as u64) as usize];
            if boot.iter().all(|c| c.address != b) {
                boot.push(Contact::new(self.slots[b as usize].fp, b));
            }
        }
        self.join.started += 1;
        let node = self.slots[a as usize].node.as_mut().expect("new node");
        // A fresh node runs no lookup, so join cannot be refused.
        let _ = node.join(Time(self.now), boot);
        self.pump(a);
    }

    fn start_measured_lookup(&mut self) {
        let n = self.joined.len();
        if n < 2 {
            self.lookups.start_errors += 1;
            self.lookups_settled += 1;
            return;
        }
        // Between honest nodes only (adversaries are at most half the network).
        let src = loop {
            let s = self.joined[self.rng.below(n as u64) as usize];
            if !self.slots[s as usize].adversary {
                break s;
            }
        };
        let target = loop {
            let t = self.joined[self.rng.below(n as u64) as usize];
            if t != src && !self.slots[t as usize].adversary {
                break t;
            }
        };
        let tfp = self.slots[target as usize].fp;
        let node = self.slots[src as usize]
            .node
            .as_mut()
            .expect("joined is alive");
        match node.start_lookup(Time(self.now), tfp) {
            Ok(id) => {
                self.measured.insert((src, id.0), MeasuredLookup { target });
            }
            Err(_) => {
                self.lookups.start_errors += 1;
                self.lookups_settled += 1;
            }
        }
        self.pump(src);
    }

    fn churn_one(&mut self) {
        let n = self.joined.len();
        if n > 1 {
            let a = self.joined[self.rng.below(n as u64) as usize];
            self.leave(a);
        }
        let a = self.spawn();
        self.start_join(a);
    }

    fn leave(&mut self, a: Addr) {
        // Measured lookups of a departing source never finish: settle them now.
        let orphaned: Vec<(Addr, u64)> = self
            .measured
            .range((a, 0)..=(a, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in orphaned {
            self.measured.remove(&k);
            self.lookups.source_departed += 1;
            self.lookups_settled += 1;
        }
        if self.slots[a as usize].adversary {
            let key = self.slots[a as usize].fp.key();
            let at = self.adversary_keys.partition_point(|(k, _)| *k < key);
            if self.adversary_keys.get(at).is_some_and(|(_, x)| *x == a) {
                self.adversary_keys.remove(at);
            }
        }
        let slot = &mut self.slots[a as usize];
        slot.node = None;
        slot.timer_at = NEVER;
        if let Some(pos) = slot.joined_pos.take() {
            self.joined.swap_remove(pos as usize);
            if let Some(&moved) = self.joined.get(pos as usize) {
                self.slots[moved as usize].joined_pos = Some(pos);
            }
        }
    }

    /// Drains a node's outputs into the network and (re)schedules its wakeup.
    fn pump(&mut self, a: Addr) {
        loop {
            let Some(node) = self.slots[a as usize].node.as_mut() else {
                return;
            };
            let Some(out) = node.poll_output() else {
                break;
            };
            match out {
                Output::Transmit(t) => self.transmit(a, t.to, t.id, t.request),
                Output::Event(e) => self.on_event(a, e),
            }
        }
        let slot = &mut self.slots[a as usize];
        let Some(node) = slot.node.as_mut() else {
            return;
        };
        if self.sc.check_invariants {
            if let Err(e) = node.check_invariants() {
                self.invariant_violations += 1;
                if self.invariant_violations == 1 {
                    eprintln!("invariant violated at node {a}, t={} ms: {e}", self.now);
                }
            }
        }
        if let Some(t) = node.poll_timeout() {
            let t = t.0.max(self.now);
            if t < slot.timer_at {
                slot.timer_at = t;
                let seq = self.push(t, Ev::Timer { node: a });
                self.slots[a as usize].timer_seq = seq;
            }
        }
    }

    fn transmit(&mut self, from: Addr, to: Contact<Addr>, id: RequestId, request: Request) {
        self.traffic.requests += 1;
        match request {
            Request::Ping => self.traffic.pings += 1,
            Request::FindPeer(_) => self.traffic.find_peer += 1,
        }
        let slot = &mut self.slots[from as usize];
        if slot.joining {
            slot.join_requests += 1;
        }
        if self.lost() {
            return;
        }
        let at = self.now + self.latency();
        self.push(
            at,
            Ev::Request {
                from,
                to: to.address,
                pinned: to.fingerprint,
                id,
                request,
            },
        );
    }

    /// What an adversary answers to find_peer(`target`).
    fn hostile_answer(&mut self, target: &Fingerprint) -> Vec<Contact<Addr>> {
        let k = self.config.k;
        match self.sc.attack {
            Attack::Eclipse => {
                // The adversaries around the target's key; sorting a window
                // by XOR is close enough to the exact K closest for an attacker.
                let key = target.key();
                let keys = &self.adversary_keys;
                let at = keys.partition_point(|(kk, _)| *kk < key);
                let lo = at.saturating_sub(2 * k);
                let hi = (at + 2 * k).min(keys.len());
                let mut near: Vec<(Key, Addr)> = keys[lo..hi].to_vec();
                near.sort_by_key(|(kk, _)| kk.distance(&key));
                near.iter()
                    .take(k)
                    .map(|(_, a)| Contact::new(self.slots[*a as usize].fp, *a))
                    .collect()
            }
            Attack::Garbage => {
                let n = self.slots.len() as u64;
                (0..k)
                    .map(|i| {
                        let address = self.rng.below(n) as Addr;
                        let fp = if i % 2 == 0 {
                            // A real peer, at somebody else's address.
                            self.slots[self.rng.below(n) as usize].fp
                        } else {
                            let mut b = [0u8; 20];
                            b[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
                            b[8..16].copy_from_slice(&self.rng.next_u64().to_le_bytes());
                            Fingerprint::V4(b)
                        };
                        Contact::new(fp, address)
                    })
                    .collect()
            }
        }
    }

    fn on_event(&mut self, a: Addr, e: Event<Addr>) {
        match e {
            Event::LookupFinished(o) => self.on_lookup_finished(a, o),
            Event::Joined { peers } => {
                let now = self.now;
                let slot = &self.slots[a as usize];
                self.join.completed += 1;
                self.join_msgs.push(slot.join_requests as u64);
                self.join_lookups.push(slot.join_lookups as u64);
                self.join_duration.push(now - slot.join_started);
                self.join_peers.push(peers as u64);
                self.mark_joined(a);
                if a < self.initial_nodes() {
                    self.initial_joined += 1;
                    if self.initial_joined == self.initial_nodes() {
                        self.begin_lookup_phase();
                    }
                }
            }
            Event::PeerAdded(_) | Event::PeerRemoved(_) => {}
        }
    }

    fn begin_lookup_phase(&mut self) {
        self.wall_join_done = Some(Instant::now());
        let start = self.now + self.sc.settle_ms;
        self.lookup_phase_start = Some(start);
        if self.sc.lookups > 0 {
            self.push(
                start,
                Ev::Lookup {
                    remaining: self.sc.lookups,
                },
            );
        }
        let churn = self.sc.churn_events();
        if churn > 0 {
            let at = start + self.churn_interval() / 2;
            self.push(at, Ev::Churn { remaining: churn });
        }
    }

    fn on_lookup_finished(&mut self, a: Addr, o: LookupOutcome<Addr>) {
        let slot = &mut self.slots[a as usize];
        match o.kind {
            LookupKind::Join => {
                self.background.join_lookups += 1;
                slot.join_lookups += 1;
            }
            LookupKind::Refresh if slot.joining => {
                self.background.join_refreshes += 1;
                slot.join_lookups += 1;
            }
            LookupKind::Refresh => {
                self.background.stale_refreshes += 1;
                if slot.stale_refreshes == 0 {
                    self.background.nodes_with_stale_refresh += 1;
                }
                slot.stale_refreshes += 1;
            }
            LookupKind::FindPeer => {
                let Some(m) = self.measured.remove(&(a, o.id.0)) else {
                    return;
                };
                self.lookups_settled += 1;
                self.lookups.finished += 1;
                let target_alive = self.slots[m.target as usize].node.is_some();
                let found = o
                    .found
                    .as_ref()
                    .is_some_and(|c| c.address == m.target && c.fingerprint == o.target);
                if found {
                    self.lookups.found += 1;
                    self.hops.push(o.hops as u64);
                }
                if target_alive || found {
                    self.lookups.counted += 1;
                } else {
                    self.lookups.target_departed += 1;
                }
                self.lookup_msgs.push(o.requests as u64);
                self.lookup_failures.push(o.failures as u64);
                self.lookup_latency.push(self.now - o.started.0);
            }
        }
    }

    fn tables(&mut self) -> TableMetrics {
        let mut size = Vec::new();
        let mut buckets = Vec::new();
        let mut dead = Vec::new();
        let mut bytes = Vec::new();
        let mut known = vec![0u64; self.slots.len()];
        let mut departed = 0;
        for slot in &self.slots {
            let Some(node) = slot.node.as_ref() else {
                departed += 1;
                continue;
            };
            let t = node.table();
            bytes.push((std::mem::size_of::<Node<Addr>>() + node.heap_bytes()) as u64);
            size.push(t.len() as u64);
            buckets.push(t.buckets().count() as u64);
            for e in t.entries() {
                known[e.address as usize] += 1;
            }
            dead.push(
                t.entries()
                    .filter(|e| self.slots[e.address as usize].node.is_none())
                    .count() as u64,
            );
        }
        let mut in_degree: Vec<u64> = self
            .slots
            .iter()
            .zip(&known)
            .filter(|(slot, _)| slot.node.is_some())
            .map(|(_, &k)| k)
            .collect();
        TableMetrics {
            alive_nodes: size.len() as u64,
            departed_nodes: departed,
            size: Stats::from_samples(&mut size),
            buckets: Stats::from_samples(&mut buckets),
            dead_entries: Stats::from_samples(&mut dead),
            node_bytes: Stats::from_samples(&mut bytes),
            in_degree: Stats::from_samples(&mut in_degree),
            invariant_violations: self.invariant_violations,
        }
    }

    /// The metrics so far; `started` is when the run began (for wall time).
    pub fn report(&mut self, started: Instant) -> Report {
        let end = Instant::now();
        let (cpu_ms, cpu_wait_ms) = cpu_times_ms();
        let mut lookups = self.lookups.clone();
        lookups.success_rate = if lookups.counted == 0 {
            1.0
        } else {
            round3_6(lookups.found as f64 / lookups.counted as f64)
        };
        lookups.success_rate_all = if lookups.scheduled == 0 {
            1.0
        } else {
            round3_6(lookups.found as f64 / lookups.scheduled as f64)
        };
        lookups.hops = Stats::from_samples(&mut self.hops);
        lookups.messages = Stats::from_samples(&mut self.lookup_msgs);
        lookups.failures = Stats::from_samples(&mut self.lookup_failures);
        lookups.latency_ms = Stats::from_samples(&mut self.lookup_latency);
        let mut join = self.join.clone();
        join.messages_per_node = Stats::from_samples(&mut self.join_msgs);
        join.lookups_per_node = Stats::from_samples(&mut self.join_lookups);
        join.duration_ms = Stats::from_samples(&mut self.join_duration);
        join.peers_at_join = Stats::from_samples(&mut self.join_peers);
        let tables = self.tables();
        let deterministic = Deterministic {
            scenario: Some(self.sc.clone()),
            virtual_time_ms: self.now,
            lookup_phase_start_ms: self.lookup_phase_start.unwrap_or(0),
            events: self.events,
            lookups,
            join,
            traffic: self.traffic.clone(),
            background: self.background.clone(),
            tables,
        };
        let wall = end.duration_since(started);
        let join_done = self.wall_join_done.unwrap_or(end);
        let wall_ms = wall.as_millis() as u64;
        Report {
            deterministic,
            resources: Resources {
                wall_ms,
                wall_join_ms: join_done.duration_since(started).as_millis() as u64,
                wall_lookup_ms: end.duration_since(join_done).as_millis() as u64,
                cpu_ms: cpu_ms.saturating_sub(self.cpu_at_start),
                cpu_wait_ms: cpu_wait_ms.saturating_sub(self.cpu_wait_at_start),
                events_per_sec: if cpu_ms > self.cpu_at_start {
                    self.events * 1000 / (cpu_ms - self.cpu_at_start)
                } else {
                    (self.events as f64 / wall.as_secs_f64().max(1e-9)) as u64
                },
                peak_rss_kib: peak_rss_kib(),
            },
        }
    }
}

/// Rates keep 6 decimals (enough to tell 99.99% from 100%).
fn round3_6(x: f64) -> f64 {
    round3(x * 1000.0) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_pops_by_time_then_insertion_order() {
        let mut q = EventQueue::default();
        let times = [50u64, 10, 50, 0, 10, 99, 0];
        for (i, &t) in times.iter().enumerate() {
            q.push(t, Ev::Timer { node: i as Addr });
        }
        let mut got = Vec::new();
        while let Some((at, _, Ev::Timer { node })) = q.pop() {
            got.push((at, node));
            // Slots are reused: push one more while draining.
            if node == 1 {
                q.push(60, Ev::Timer { node: 7 });
            }
        }
        assert_eq!(
            got,
            vec![
                (0, 3),
                (0, 6),
                (10, 1),
                (10, 4),
                (50, 0),
                (50, 2),
                (60, 7),
                (99, 5)
            ]
        );
        assert!(q.slab.len() <= times.len());
    }
}
