//! What a run measured, split into a deterministic part (a pure function of the
//! [`crate::Scenario`], byte-identical across runs with the same seed) and a
//! resources part (wall-clock time, memory), which varies with the machine.

use std::fmt::Write as _;

use mau_proto::percentile::nearest_rank;
use serde::Serialize;

use crate::scenario::Scenario;

/// Distribution summary of a list of integer samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Number of samples.
    pub count: u64,
    /// Arithmetic mean (0 with no sample).
    pub mean: f64,
    /// Smallest sample.
    pub min: u64,
    /// Median (nearest rank).
    pub median: u64,
    /// 90th percentile (nearest rank).
    pub p90: u64,
    /// 99th percentile (nearest rank).
    pub p99: u64,
    /// Largest sample.
    pub max: u64,
}

impl Stats {
    /// Summarises `samples` (sorted in place).
    pub fn from_samples(samples: &mut [u64]) -> Stats {
        if samples.is_empty() {
            return Stats::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |p: u32| nearest_rank(samples, p).unwrap_or_default();
        let sum: u128 = samples.iter().map(|&s| s as u128).sum();
        Stats {
            count: n as u64,
            mean: round3(sum as f64 / n as f64),
            min: samples[0],
            median: rank(50),
            p90: rank(90),
            p99: rank(99),
            max: samples[n - 1],
        }
    }
}

/// Rounds to 3 decimals so the JSON stays readable (and still deterministic).
pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The measured find-peer lookups.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LookupMetrics {
    /// Lookups requested by the scenario.
    pub scheduled: u64,
    /// Lookups the source node refused to start (too many running).
    pub start_errors: u64,
    /// Lookups that finished.
    pub finished: u64,
    /// Finished lookups whose target answered (`found == target`).
    pub found: u64,
    /// Finished lookups that count for `success_rate`: the target was still
    /// alive when the lookup finished, or it was found.
    pub counted: u64,
    /// Lookups that did not find a target that left the network while the
    /// lookup ran (not counted as failures; reported for transparency).
    pub target_departed: u64,
    /// Lookups abandoned because their source node left while they ran.
    pub source_departed: u64,
    /// `found / counted` (1.0 with no lookup): the headline figure.
    pub success_rate: f64,
    /// `found / scheduled`, counting departed targets and refused starts as failures.
    pub success_rate_all: f64,
    /// Hops (`LookupOutcome::hops`) of successful lookups.
    pub hops: Stats,
    /// Requests sent per finished lookup (`LookupOutcome::requests`).
    pub messages: Stats,
    /// Failed or timed-out requests per finished lookup.
    pub failures: Stats,
    /// Virtual time from start to finish, in ms.
    pub latency_ms: Stats,
}

/// Joining nodes (initial and churn arrivals).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct JoinMetrics {
    /// Nodes that started joining.
    pub started: u64,
    /// Nodes whose join sequence completed (`Event::Joined`).
    pub completed: u64,
    /// Requests a node sent from its join start to `Joined`.
    pub messages_per_node: Stats,
    /// Lookups (self lookup plus refreshes) per join.
    pub lookups_per_node: Stats,
    /// Virtual time from join start to `Joined`, in ms.
    pub duration_ms: Stats,
    /// Peers in the table at `Joined`.
    pub peers_at_join: Stats,
}

/// Every message the simulated network carried.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TrafficMetrics {
    /// Requests sent (find_peer plus ping).
    pub requests: u64,
    /// find_peer requests.
    pub find_peer: u64,
    /// ping requests.
    pub pings: u64,
    /// Responses sent.
    pub responses: u64,
    /// Messages (requests or responses) dropped by `loss`.
    pub lost: u64,
    /// Requests sent to a node that had left (the requester times out).
    pub to_departed: u64,
    /// Responses that arrived after their requester had left.
    pub responses_to_departed: u64,
    /// Contacts carried in find_peer answers.
    pub contacts_carried: u64,
    /// Requests that reached a node other than the fingerprint they were
    /// pinned to (mutual TLS refuses them; the requester times out).
    pub pin_refused: u64,
    /// find_peer answers an adversary replaced by its attack.
    pub hostile_answers: u64,
}

impl From<&mau_proto::testnet::Traffic> for TrafficMetrics {
    fn from(t: &mau_proto::testnet::Traffic) -> Self {
        TrafficMetrics {
            requests: t.requests,
            find_peer: t.find_peer,
            pings: t.pings,
            responses: t.responses,
            lost: t.lost,
            to_departed: t.to_departed,
            responses_to_departed: t.responses_to_departed,
            contacts_carried: t.contacts_carried,
            pin_refused: t.pin_refused,
            hostile_answers: t.hostile_answers,
        }
    }
}

/// Lookups the nodes ran on their own.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackgroundMetrics {
    /// Self lookups at join.
    pub join_lookups: u64,
    /// Bucket refreshes run as part of a join.
    pub join_refreshes: u64,
    /// Refreshes of buckets that went stale (STALL_PERIOD) after a node joined.
    pub stale_refreshes: u64,
    /// Nodes that ran at least one stale-bucket refresh.
    pub nodes_with_stale_refresh: u64,
}

/// Routing tables of the nodes alive at the end.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TableMetrics {
    /// Nodes alive at the end.
    pub alive_nodes: u64,
    /// Nodes that left.
    pub departed_nodes: u64,
    /// Peers per routing table.
    pub size: Stats,
    /// Buckets created per routing table.
    pub buckets: Stats,
    /// Table entries pointing at departed nodes, per table.
    pub dead_entries: Stats,
    /// Tables that hold each alive node (its in-degree). Entries per table
    /// are the same warm or cold; how evenly nodes are known is not: LRS
    /// buckets keep early joiners, so a cold network knows late joiners
    /// mostly from their neighbourhood, a warm start knows everyone evenly.
    pub in_degree: Stats,
    /// Bytes of protocol state per node at the end: `size_of` of a
    /// [`mau_proto::testnet::NetNode`], its [`mau_proto::Node::heap_bytes`]
    /// (tables, lookups, queues) and its share of the network's fingerprint store.
    pub node_bytes: Stats,
    /// Invariant violations found by `--check` (0 unless checking).
    pub invariant_violations: u64,
}

/// Everything a run measured that depends only on the scenario.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Deterministic {
    /// The scenario that ran.
    pub scenario: Option<Scenario>,
    /// Virtual time when the run ended, in ms.
    pub virtual_time_ms: u64,
    /// Virtual time when the lookup phase started, in ms.
    pub lookup_phase_start_ms: u64,
    /// Events the simulator processed.
    pub events: u64,
    /// Find-peer lookups.
    pub lookups: LookupMetrics,
    /// Joins.
    pub join: JoinMetrics,
    /// Network traffic.
    pub traffic: TrafficMetrics,
    /// Background lookups (self lookups, refreshes).
    pub background: BackgroundMetrics,
    /// Routing tables at the end.
    pub tables: TableMetrics,
}

/// Machine-dependent measurements.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Resources {
    /// Wall-clock time of the whole run, in ms.
    pub wall_ms: u64,
    /// Wall-clock time until every initial node had joined, in ms.
    pub wall_join_ms: u64,
    /// Wall-clock time of the lookup phase (and any extra duration), in ms.
    pub wall_lookup_ms: u64,
    /// CPU time the run got (from `/proc/thread-self/schedstat`), in ms; 0 if
    /// unknown. On a shared machine this, not `wall_ms`, is the cost of the run.
    pub cpu_ms: u64,
    /// Time the process waited for a CPU (runqueue), in ms; 0 if unknown.
    pub cpu_wait_ms: u64,
    /// Simulator events per second of CPU time (of wall time if CPU is unknown).
    pub events_per_sec: u64,
    /// Peak resident memory of the process (VmHWM), in KiB; 0 if unknown.
    pub peak_rss_kib: u64,
}

/// The full result of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Reproducible metrics.
    pub deterministic: Deterministic,
    /// Wall time and memory.
    pub resources: Resources,
}

/// Where a simulation's memory is, by holder, in bytes (heap capacities as
/// the holders count them, not the allocator's view): what `--progress`
/// prints at each phase, to set against the peak RSS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Nodes alive.
    pub nodes: u64,
    /// `size_of::<Node>()` per node alive (config, counters, map headers).
    pub node_inline: u64,
    /// Routing tables (entries, buckets, replacement caches) and the
    /// fingerprint store their entries share.
    pub tables: u64,
    /// The rest of the nodes' heap: lookups, requests in flight, timers,
    /// queued outputs, recently probed peers, dial buckets.
    pub node_other: u64,
    /// The test network's event queue (messages and timers in flight).
    pub net_queue: u64,
    /// Nodes' reports not yet polled.
    pub net_reports: u64,
    /// The network's per-node slots (nodes aside) and fingerprints.
    pub net_slots: u64,
    /// The simulator's own per-node slots, lookups and samples.
    pub simulator: u64,
    /// Events in the network's queue, and how many of them are node
    /// wakeups superseded by an earlier one (they do nothing when due).
    pub queued_events: u64,
    /// See `queued_events`.
    pub stale_timers: u64,
}

impl Memory {
    /// Every holder added up.
    pub fn total(&self) -> u64 {
        self.node_inline
            + self.tables
            + self.node_other
            + self.net_queue
            + self.net_reports
            + self.net_slots
            + self.simulator
    }
}

impl std::fmt::Display for Memory {
    /// MiB per holder and bytes per node.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let per = |b: u64| b / self.nodes.max(1);
        write!(
            f,
            "{:.1} MiB ({} B/node): node structs {:.1} ({}), tables {:.1} ({}), \
             other node state {:.1} ({}), network queue {:.1} ({}), unpolled reports {:.1} ({}), \
             network slots {:.1} ({}), simulator {:.1} ({}); {} events queued, {} of them stale wakeups",
            mib(self.total()),
            per(self.total()),
            mib(self.node_inline),
            per(self.node_inline),
            mib(self.tables),
            per(self.tables),
            mib(self.node_other),
            per(self.node_other),
            mib(self.net_queue),
            per(self.net_queue),
            mib(self.net_reports),
            per(self.net_reports),
            mib(self.net_slots),
            per(self.net_slots),
            mib(self.simulator),
            per(self.simulator),
            self.queued_events,
            self.stale_timers,
        )
    }
}

/// Peak resident set size of this process in KiB (`VmHWM`), 0 if unavailable.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of the calling thread on a CPU and waiting for one, in ms, from
/// `/proc/thread-self/schedstat` (the simulator is single-threaded).
pub fn cpu_times_ms() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = s.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
    let run = f.next().unwrap_or(0);
    let wait = f.next().unwrap_or(0);
    (run / 1_000_000, wait / 1_000_000)
}

impl Report {
    /// The deterministic part as compact JSON (byte-identical for one seed).
    pub fn deterministic_json(&self) -> String {
        serde_json::to_string(&self.deterministic).expect("metrics serialise")
    }

    /// The whole report as pretty JSON.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("metrics serialise")
    }

    /// A short human-readable summary.
    pub fn summary(&self) -> String {
        let d = &self.deterministic;
        let r = &self.resources;
        let l = &d.lookups;
        let mut s = String::new();
        if let Some(sc) = &d.scenario {
            let _ = writeln!(
                s,
                "scenario: {} nodes, {} lookups, churn {}, loss {}, seed {}, latency {}-{} ms",
                sc.nodes,
                sc.lookups,
                sc.churn,
                sc.loss,
                sc.seed,
                sc.latency_min_ms,
                sc.latency_max_ms
            );
        }
        let _ = writeln!(
            s,
            "lookups:  {}/{} found ({:.2}%; {:.2}% of all scheduled), {} target departed, {} source departed, {} refused",
            l.found,
            l.counted,
            100.0 * l.success_rate,
            100.0 * l.success_rate_all,
            l.target_departed,
            l.source_departed,
            l.start_errors
        );
        let _ = writeln!(
            s,
            "          hops median {} p99 {} max {}; messages mean {:.1} median {} p99 {}; failures mean {:.2}; latency median {} ms p99 {} ms",
            l.hops.median,
            l.hops.p99,
            l.hops.max,
            l.messages.mean,
            l.messages.median,
            l.messages.p99,
            l.failures.mean,
            l.latency_ms.median,
            l.latency_ms.p99
        );
        let j = &d.join;
        let _ = writeln!(
            s,
            "joins:    {}/{} completed; messages/node mean {:.1} p99 {}; lookups/node mean {:.1}; duration median {} ms p99 {} ms",
            j.completed,
            j.started,
            j.messages_per_node.mean,
            j.messages_per_node.p99,
            j.lookups_per_node.mean,
            j.duration_ms.median,
            j.duration_ms.p99
        );
        let t = &d.traffic;
        let _ = writeln!(
            s,
            "traffic:  {} requests ({} find_peer, {} ping), {} responses, {} lost, {} to departed nodes",
            t.requests, t.find_peer, t.pings, t.responses, t.lost, t.to_departed
        );
        let b = &d.background;
        let _ = writeln!(
            s,
            "background: {} join lookups, {} join refreshes, {} stale-bucket refreshes on {} nodes",
            b.join_lookups, b.join_refreshes, b.stale_refreshes, b.nodes_with_stale_refresh
        );
        let tb = &d.tables;
        let _ = writeln!(
            s,
            "tables:   {} alive, {} departed; size median {} (min {} max {}); buckets median {}; dead entries mean {:.2}; invariant violations {}",
            tb.alive_nodes,
            tb.departed_nodes,
            tb.size.median,
            tb.size.min,
            tb.size.max,
            tb.buckets.median,
            tb.dead_entries.mean,
            tb.invariant_violations
        );
        let _ = writeln!(
            s,
            "virtual:  {:.1} s ({} events; lookup phase from {:.1} s)",
            d.virtual_time_ms as f64 / 1000.0,
            d.events,
            d.lookup_phase_start_ms as f64 / 1000.0
        );
        let _ = writeln!(
            s,
            "wall:     {:.2} s (join {:.2} s, lookups {:.2} s); CPU {:.2} s (waited {:.2} s for a CPU), {} events/CPU-s, peak RSS {:.1} MiB",
            r.wall_ms as f64 / 1000.0,
            r.wall_join_ms as f64 / 1000.0,
            r.wall_lookup_ms as f64 / 1000.0,
            r.cpu_ms as f64 / 1000.0,
            r.cpu_wait_ms as f64 / 1000.0,
            r.events_per_sec,
            r.peak_rss_kib as f64 / 1024.0
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let s = Stats::from_samples(&mut v);
        assert_eq!((s.min, s.median, s.p90, s.p99, s.max), (1, 50, 90, 99, 100));
        assert_eq!(s.mean, 50.5);
        assert_eq!(Stats::from_samples(&mut []), Stats::default());
        let s = Stats::from_samples(&mut [7]);
        assert_eq!((s.median, s.p99), (7, 7));
    }
}
