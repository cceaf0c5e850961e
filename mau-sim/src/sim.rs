//! The discrete-event run loop, on mau-proto's test network.
//!
//! One [`NetNode`] per simulated node in a [`Network`] (the address is the
//! node's index), which delivers every message through the production door
//! (`Node::on_request` with a claimed address: callers are probed before they
//! enter a table). The simulator adds the workload (joins, measured lookups,
//! churn, adversaries) and the measurements. One seeded [`Rng`] for the
//! simulator's choices and one for the network's (latency, loss, hostile
//! answers), both from the scenario's seed; nothing iterates a hash map, so a
//! run is a pure function of its [`Scenario`].

use std::collections::BTreeMap;
use std::time::Instant;

use mau_proto::testnet::{Addr, Hostile, Links, NetNode, Network, Step};
use mau_proto::{Config, Contact, Event, Fingerprint, Key, LookupKind, LookupOutcome, Rng};

use crate::metrics::{
    cpu_times_ms, peak_rss_kib, round3, BackgroundMetrics, Deterministic, JoinMetrics,
    LookupMetrics, Memory, Report, Resources, Stats, TableMetrics, TrafficMetrics,
};
use crate::scenario::{Attack, Scenario};
use crate::warm;

/// The simulator's own events (the network has its messages and timers).
enum Ev {
    /// The next initial node starts joining.
    InitialJoin { node: Addr },
    /// The next measured lookup starts.
    Lookup { remaining: u32 },
    /// A random node leaves and a newcomer arrives.
    Churn { remaining: u32 },
}

/// How adversaries answer find_peer ([`Scenario::attack`]).
struct Adversaries {
    attack: Attack,
    k: usize,
    /// Alive adversaries by key, sorted (the eclipse attack answers from it).
    keys: Vec<(Key, Addr)>,
}

impl Hostile for Adversaries {
    fn answer(
        &mut self,
        _at: Addr,
        target: &Fingerprint,
        ids: &[Fingerprint],
        rng: &mut Rng,
    ) -> Vec<Contact<Addr>> {
        let k = self.k;
        match self.attack {
            Attack::Eclipse => {
                // The adversaries around the target's key; sorting a window
                // by XOR is close enough to the exact K closest for an attacker.
                let key = target.key();
                let keys = &self.keys;
                let at = keys.partition_point(|(kk, _)| *kk < key);
                let lo = at.saturating_sub(2 * k);
                let hi = (at + 2 * k).min(keys.len());
                let mut near: Vec<(Key, Addr)> = keys[lo..hi].to_vec();
                near.sort_by_key(|(kk, _)| kk.distance(&key));
                near.iter()
                    .take(k)
                    .map(|(_, a)| Contact::new(ids[*a as usize], *a))
                    .collect()
            }
            Attack::Garbage => {
                let n = ids.len() as u64;
                (0..k)
                    .map(|i| {
                        let address = rng.below(n) as Addr;
                        let fp = if i % 2 == 0 {
                            // A real peer, at somebody else's address.
                            ids[rng.below(n) as usize]
                        } else {
                            let mut b = [0u8; 20];
                            b[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
                            b[8..16].copy_from_slice(&rng.next_u64().to_le_bytes());
                            Fingerprint::V4(b)
                        };
                        Contact::new(fp, address)
                    })
                    .collect()
            }
        }
    }
}

/// What the simulator tracks per node, next to the network's slot.
struct Slot {
    /// Position in `Sim::joined` while alive and joined.
    joined_pos: Option<u32>,
    join_started: u64,
    /// Requests the node had sent when its join began.
    sent_at_join: u64,
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

/// Seeds the network's generator apart from the simulator's.
const NETWORK_SEED: u64 = 0x6e65_7477_6f72_6b00;

/// A simulation in progress. Use [`run`] unless you need to step it yourself.
pub struct Sim {
    sc: Scenario,
    config: Config,
    rng: Rng,
    net: Network<Ev, Adversaries>,
    slots: Vec<Slot>,
    /// Alive nodes that finished joining (random picks: bootstrap, lookups, churn).
    joined: Vec<Addr>,
    measured: BTreeMap<(Addr, u64), MeasuredLookup>,
    initial_joined: u32,
    lookup_phase_start: Option<u64>,
    lookups_settled: u64,
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
    background: BackgroundMetrics,
    join: JoinMetrics,
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
        let links = Links {
            latency_min_ms: sc.latency_min_ms,
            latency_max_ms: sc.latency_max_ms,
            loss: sc.loss,
        };
        let adversaries = Adversaries {
            attack: sc.attack,
            k: config.k,
            keys: Vec::new(),
        };
        let mut net =
            Network::with_hostile(config.clone(), links, sc.seed ^ NETWORK_SEED, adversaries);
        net.reserve_nodes((sc.nodes + sc.warm_start.unwrap_or(0) + sc.churn_events()) as usize);
        net.set_check_invariants(sc.check_invariants);
        let mut sim = Sim {
            config,
            rng,
            net,
            slots: Vec::with_capacity(
                (sc.nodes + sc.warm_start.unwrap_or(0) + sc.churn_events()) as usize,
            ),
            joined: Vec::with_capacity((sc.nodes + sc.warm_start.unwrap_or(0)) as usize),
            measured: BTreeMap::new(),
            initial_joined: 0,
            lookup_phase_start: None,
            lookups_settled: 0,
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
            background: BackgroundMetrics::default(),
            join: JoinMetrics::default(),
            sc,
        };
        match sim.sc.warm_start {
            None => {
                sim.net.schedule(0, Ev::InitialJoin { node: 0 });
            }
            Some(joins) => {
                sim.warm_start();
                let first = sim.sc.nodes;
                if joins > 0 {
                    sim.net.schedule(0, Ev::InitialJoin { node: first });
                } else {
                    sim.begin_lookup_phase();
                }
            }
        }
        sim
    }

    fn now(&self) -> u64 {
        self.net.now().0
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
            .map(|a| (self.net.ids()[a as usize].key(), a))
            .collect();
        order.sort_unstable();
        let keys: Vec<Key> = order.iter().map(|(k, _)| *k).collect();
        let mut picks = Vec::new();
        for a in 0..self.sc.nodes {
            picks.clear();
            let local = self.net.ids()[a as usize].key();
            warm::converged_peers(&keys, &local, self.config.k, &mut self.rng, &mut picks);
            let contacts: Vec<Contact<Addr>> = picks
                .iter()
                .map(|&i| self.net.contact(order[i].1))
                .collect();
            self.net.with_node(a, |node, now| {
                for c in contacts {
                    node.add_peer(now, c);
                }
            });
            // Nothing to report (the peers just added), and left queued they
            // would add up to one report per table entry of the network.
            while self.net.poll_event().is_some() {}
            self.mark_joined(a);
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
        self.print_memory("warm start built");
    }

    /// Where the memory is now, by holder (walks every node: for phase
    /// changes, not for every event).
    pub fn memory(&self) -> Memory {
        use std::mem::size_of;
        let mut m = Memory::default();
        for (_, node) in self.net.nodes() {
            let table = node.table().heap_bytes() as u64;
            m.nodes += 1;
            m.tables += table;
            m.node_other += node.heap_bytes() as u64 - table;
        }
        // The fingerprints the tables' entries stand for, kept once for all.
        m.tables += self.net.fingerprints().heap_bytes() as u64;
        m.node_inline = m.nodes * size_of::<NetNode>() as u64;
        let net = self.net.memory();
        m.net_queue = net.queue as u64;
        m.net_reports = net.reports as u64;
        m.net_slots = net.slots as u64;
        m.queued_events = net.queued_events as u64;
        m.stale_timers = net.stale_timers as u64;
        let samples = [
            &self.hops,
            &self.lookup_msgs,
            &self.lookup_failures,
            &self.lookup_latency,
            &self.join_msgs,
            &self.join_lookups,
            &self.join_duration,
            &self.join_peers,
        ];
        m.simulator = (self.slots.capacity() * size_of::<Slot>()
            + self.joined.capacity() * size_of::<Addr>()
            + self.measured.len() * size_of::<((Addr, u64), MeasuredLookup)>() * 3 / 2
            + samples.iter().map(|v| v.capacity() * 8).sum::<usize>()) as u64;
        m
    }

    /// With `--progress`: the memory by holder and the peak RSS so far.
    fn print_memory(&self, phase: &str) {
        if let Some(t0) = self.progress {
            eprintln!(
                "[{:7.1} s wall] {phase}: peak RSS {} MiB; held now {}",
                t0.elapsed().as_secs_f64(),
                peak_rss_kib() / 1024,
                self.memory()
            );
        }
    }

    fn lookups_done(&self) -> bool {
        self.lookup_phase_start.is_some() && self.lookups_settled == self.sc.lookups as u64
    }

    /// Processes events until every lookup has finished and `duration_ms` passed.
    pub fn run_to_end(&mut self) {
        while let Some(at) = self.net.next_time() {
            if self.lookups_done() && at > self.sc.duration_ms {
                break;
            }
            if self.lookup_phase_start.is_none() && at > self.join_deadline() {
                // Some initial join never completed (it cannot without a
                // bug): measure anyway rather than run forever.
                self.begin_lookup_phase();
            }
            match self.net.step() {
                Some(Step::User(ev)) => self.on_sim_event(ev),
                Some(Step::Network) => {}
                None => break,
            }
            while let Some((a, e)) = self.net.poll_event() {
                self.on_event(a, e);
            }
            let events = self.net.events_processed();
            if events % (1 << 22) == 0 {
                if let Some(t0) = self.progress {
                    eprintln!(
                        "[{:7.1} s wall] virtual {:8.1} s, {} events, {} nodes joined, {}/{} lookups settled, peak RSS {} MiB",
                        t0.elapsed().as_secs_f64(),
                        self.now() as f64 / 1000.0,
                        events,
                        self.joined.len(),
                        self.lookups_settled,
                        self.sc.lookups,
                        peak_rss_kib() / 1024
                    );
                }
            }
        }
    }

    fn on_sim_event(&mut self, ev: Ev) {
        match ev {
            Ev::InitialJoin { node } => {
                let a = self.spawn();
                debug_assert_eq!(a, node);
                self.start_join(a);
                if node + 1 < self.initial_nodes() {
                    let at = self.now() + self.sc.join_interval_ms;
                    self.net.schedule(at, Ev::InitialJoin { node: node + 1 });
                }
            }
            Ev::Lookup { remaining } => {
                self.start_measured_lookup();
                if remaining > 1 {
                    let at = self.now() + self.sc.lookup_interval_ms;
                    self.net.schedule(
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
                    let at = self.now() + self.churn_interval();
                    self.net.schedule(
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
        let a = self.net.add_node(fp, seed, adversary);
        if adversary {
            let key = fp.key();
            let keys = &mut self.net.hostile_mut().keys;
            let at = keys.partition_point(|(k, _)| *k < key);
            keys.insert(at, (key, a));
        }
        self.slots.push(Slot {
            joined_pos: None,
            join_started: self.now(),
            sent_at_join: 0,
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
                boot.push(self.net.contact(b));
            }
        }
        self.join.started += 1;
        self.slots[a as usize].sent_at_join = self.net.requests_sent(a);
        // A fresh node runs no lookup, so join cannot be refused.
        let _ = self.net.with_node(a, |node, now| node.join(now, boot));
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
        let tfp = self.net.ids()[target as usize];
        match self
            .net
            .with_node(src, |node, now| node.start_lookup(now, tfp))
        {
            Some(Ok(id)) => {
                self.measured.insert((src, id.0), MeasuredLookup { target });
            }
            _ => {
                self.lookups.start_errors += 1;
                self.lookups_settled += 1;
            }
        }
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
            let key = self.net.ids()[a as usize].key();
            let keys = &mut self.net.hostile_mut().keys;
            let at = keys.partition_point(|(k, _)| *k < key);
            if keys.get(at).is_some_and(|(_, x)| *x == a) {
                keys.remove(at);
            }
        }
        self.net.remove_node(a);
        let slot = &mut self.slots[a as usize];
        if let Some(pos) = slot.joined_pos.take() {
            self.joined.swap_remove(pos as usize);
            if let Some(&moved) = self.joined.get(pos as usize) {
                self.slots[moved as usize].joined_pos = Some(pos);
            }
        }
    }

    fn on_event(&mut self, a: Addr, e: Event<Addr>) {
        match e {
            Event::LookupFinished(o) => self.on_lookup_finished(a, o),
            Event::Joined { peers } => {
                let now = self.now();
                let sent = self.net.requests_sent(a);
                let slot = &mut self.slots[a as usize];
                slot.join_requests = (sent - slot.sent_at_join) as u32;
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
        self.print_memory("joins done");
        self.wall_join_done = Some(Instant::now());
        let start = self.now() + self.sc.settle_ms;
        self.lookup_phase_start = Some(start);
        if self.sc.lookups > 0 {
            self.net.schedule(
                start,
                Ev::Lookup {
                    remaining: self.sc.lookups,
                },
            );
        }
        let churn = self.sc.churn_events();
        if churn > 0 {
            let at = start + self.churn_interval() / 2;
            self.net.schedule(at, Ev::Churn { remaining: churn });
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
                let target_alive = self.net.node(m.target).is_some();
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
                self.lookup_latency.push(self.now() - o.started.0);
            }
        }
    }

    fn tables(&mut self) -> TableMetrics {
        let mut size = Vec::new();
        let mut buckets = Vec::new();
        let mut dead = Vec::new();
        let mut bytes = Vec::new();
        let mut known = vec![0u64; self.net.len()];
        let net = &self.net;
        // Each node's share of the fingerprint store its table's entries point into.
        let shared = net.fingerprints().heap_bytes() / net.nodes().count().max(1);
        for (_, node) in net.nodes() {
            let t = node.table();
            bytes.push((std::mem::size_of::<NetNode>() + node.heap_bytes() + shared) as u64);
            size.push(t.len() as u64);
            buckets.push(t.buckets().count() as u64);
            for e in t.entries() {
                known[e.address as usize] += 1;
            }
            dead.push(
                t.entries()
                    .filter(|e| net.node(e.address).is_none())
                    .count() as u64,
            );
        }
        let mut in_degree: Vec<u64> = net.nodes().map(|(a, _)| known[a as usize]).collect();
        let (violations, first) = net.invariant_violations();
        if let Some(e) = first {
            eprintln!("invariant violated at {e}");
        }
        TableMetrics {
            alive_nodes: size.len() as u64,
            departed_nodes: net.len() as u64 - size.len() as u64,
            size: Stats::from_samples(&mut size),
            buckets: Stats::from_samples(&mut buckets),
            dead_entries: Stats::from_samples(&mut dead),
            node_bytes: Stats::from_samples(&mut bytes),
            in_degree: Stats::from_samples(&mut in_degree),
            invariant_violations: violations,
        }
    }

    /// The metrics so far; `started` is when the run began (for wall time).
    pub fn report(&mut self, started: Instant) -> Report {
        self.print_memory("lookups done");
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
        let events = self.net.events_processed();
        let deterministic = Deterministic {
            scenario: Some(self.sc.clone()),
            virtual_time_ms: self.now(),
            lookup_phase_start_ms: self.lookup_phase_start.unwrap_or(0),
            events,
            lookups,
            join,
            traffic: TrafficMetrics::from(self.net.traffic()),
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
                    events * 1000 / (cpu_ms - self.cpu_at_start)
                } else {
                    (events as f64 / wall.as_secs_f64().max(1e-9)) as u64
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
