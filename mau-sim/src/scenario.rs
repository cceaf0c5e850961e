//! What to simulate: network size, workload, churn, loss, latency, protocol parameters.
//!
//! Plain data (serde `Serialize`) so a later sweep can build, vary and record
//! scenarios without touching the run loop.

use std::time::Duration;

use mau_proto::{CallerProbes, Config, Termination};
use serde::{Deserialize, Serialize};

/// Which protocol policies the nodes follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// mau-proto's defaults (replacement cache, 2 failures, STALL_PERIOD
    /// refreshes, K-closest lookup termination).
    #[default]
    Ours,
    /// The Go implementation's policies: a full bucket pings its head and drops
    /// the newcomer (no replacement cache), a failed peer is removed at once,
    /// the periodic refresh never runs, lookups stop only on an exact match or
    /// an empty queue.
    Go,
}

impl Policy {
    /// Both, ours first.
    pub const ALL: [Policy; 2] = [Policy::Ours, Policy::Go];

    /// The lowercase name (`ours`, `go`).
    pub fn name(self) -> &'static str {
        match self {
            Policy::Ours => "ours",
            Policy::Go => "go",
        }
    }

    /// Parses `ours` or `go`.
    pub fn parse(s: &str) -> Result<Policy, String> {
        match s {
            "ours" => Ok(Policy::Ours),
            "go" => Ok(Policy::Go),
            _ => Err(format!("unknown policy {s:?} (ours or go)")),
        }
    }
}

/// What adversarial nodes answer to find_peer (they join, stay in tables and
/// answer pings like anyone; measured lookups run between honest nodes only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attack {
    /// Colluding eclipse: the K adversaries closest to the target, so honest
    /// lookups are steered into the attackers' part of the keyspace.
    #[default]
    Eclipse,
    /// Poison: made-up fingerprints, and real peers' fingerprints at other
    /// nodes' addresses (mutual TLS refuses both; the requester times out).
    Garbage,
}

impl Attack {
    /// Parses `eclipse` or `garbage`.
    pub fn parse(s: &str) -> Result<Attack, String> {
        match s {
            "eclipse" => Ok(Attack::Eclipse),
            "garbage" => Ok(Attack::Garbage),
            _ => Err(format!("unknown attack {s:?} (eclipse or garbage)")),
        }
    }
}

/// "Never" for the Go policy's refresh period: 100 years of virtual time.
const NEVER_MS: u64 = 100 * 365 * 24 * 3_600_000;

/// Protocol parameters handed to every simulated [`mau_proto::Node`].
///
/// A serialisable mirror of [`mau_proto::Config`] (times in milliseconds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtocolParams {
    /// Max peers per bucket (K).
    pub k: usize,
    /// Lookup parallelism (α).
    pub alpha: usize,
    /// Bucket staleness period before a refresh lookup.
    pub stall_period_ms: u64,
    /// Minimum time between two pings of one peer.
    pub ping_min_backoff_ms: u64,
    /// How long a node waits for an answer before counting a request as failed.
    pub rpc_timeout_ms: u64,
    /// Replacement-cache size per bucket.
    pub replacement_cache: usize,
    /// Consecutive failures before eviction (with no replacement waiting).
    pub max_failures: u8,
    /// Candidates a lookup remembers.
    pub max_lookup_candidates: usize,
    /// Lookups a node runs at once.
    pub max_concurrent_lookups: usize,
    /// Go's lookup rule (exact match or empty queue) instead of K-closest termination.
    pub go_lookup_termination: bool,
    /// First delay before repeating a join that left fewer than K peers.
    pub rejoin_interval_ms: u64,
    /// Probe every caller not in the table ([`CallerProbes::Always`], the
    /// Go policy's baseline) instead of only those whose answer could
    /// change it.
    #[serde(default)]
    pub probe_every_caller: bool,
}

impl Default for ProtocolParams {
    fn default() -> Self {
        let c = Config::default();
        ProtocolParams {
            k: c.k,
            alpha: c.alpha,
            stall_period_ms: c.stall_period.as_millis() as u64,
            ping_min_backoff_ms: c.ping_min_backoff.as_millis() as u64,
            rpc_timeout_ms: c.rpc_timeout.as_millis() as u64,
            replacement_cache: c.replacement_cache,
            max_failures: c.max_failures,
            max_lookup_candidates: c.max_lookup_candidates,
            max_concurrent_lookups: c.max_concurrent_lookups,
            go_lookup_termination: c.lookup_termination == Termination::GoExhaustive,
            rejoin_interval_ms: c.rejoin_interval.as_millis() as u64,
            probe_every_caller: c.caller_probes == CallerProbes::Always,
        }
    }
}

impl ProtocolParams {
    /// The defaults with `policy` applied.
    pub fn for_policy(policy: Policy) -> Self {
        let mut p = ProtocolParams::default();
        p.apply(policy);
        p
    }

    /// Sets the fields `policy` decides (leaves K, α, timeouts alone).
    pub fn apply(&mut self, policy: Policy) {
        let d = ProtocolParams::default();
        let go = policy == Policy::Go;
        self.replacement_cache = if go { 0 } else { d.replacement_cache };
        self.max_failures = if go { 1 } else { d.max_failures };
        self.stall_period_ms = if go { NEVER_MS } else { d.stall_period_ms };
        self.go_lookup_termination = go;
        // Go joins once.
        self.rejoin_interval_ms = if go { NEVER_MS } else { d.rejoin_interval_ms };
        // The Go baseline keeps the probe rule the comparison started from;
        // ours keeps what the scenario chose (`--probe-every-caller`).
        self.probe_every_caller |= go;
    }

    /// The core's configuration for these parameters.
    /// (Fields not mirrored here keep the core's defaults.)
    #[allow(clippy::needless_update)]
    pub fn to_config(&self) -> Config {
        Config {
            k: self.k,
            alpha: self.alpha,
            stall_period: Duration::from_millis(self.stall_period_ms),
            ping_min_backoff: Duration::from_millis(self.ping_min_backoff_ms),
            rpc_timeout: Duration::from_millis(self.rpc_timeout_ms),
            replacement_cache: self.replacement_cache,
            max_failures: self.max_failures,
            max_lookup_candidates: self.max_lookup_candidates,
            max_concurrent_lookups: self.max_concurrent_lookups,
            lookup_termination: if self.go_lookup_termination {
                Termination::GoExhaustive
            } else {
                Termination::KClosest
            },
            rejoin_interval: Duration::from_millis(self.rejoin_interval_ms),
            caller_probes: if self.probe_every_caller {
                CallerProbes::Always
            } else {
                CallerProbes::WhenUseful
            },
            ..Config::default()
        }
    }
}

/// One simulation run.
///
/// The run has two phases on one virtual clock:
/// 1. **join**: `nodes` nodes start one every `join_interval_ms`; each joins
///    through up to `bootstrap_peers` random nodes that already finished joining;
/// 2. **lookups** (starts `settle_ms` after the last initial node joined):
///    `lookups` find-peer lookups, one every `lookup_interval_ms`. Over the same
///    window `churn * nodes` random nodes leave (silently: they drop every
///    message) and as many newcomers arrive and join.
///
/// The run ends when every lookup finished and `duration_ms` of virtual time
/// has passed, whichever is later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Nodes in the initial network.
    pub nodes: u32,
    /// Find-peer lookups measured in the lookup phase.
    pub lookups: u32,
    /// Fraction of `nodes` that leave (and as many that arrive) during the lookup phase.
    pub churn: f64,
    /// Probability that any one message (request or response) is lost.
    pub loss: f64,
    /// The one seed every random choice derives from.
    pub seed: u64,
    /// Smallest one-way message latency.
    pub latency_min_ms: u64,
    /// Largest one-way message latency (uniform in `[min, max]`).
    pub latency_max_ms: u64,
    /// Bootstrap peers each newcomer is given (fewer if fewer have joined).
    pub bootstrap_peers: u32,
    /// Virtual time between two initial nodes starting to join.
    pub join_interval_ms: u64,
    /// Pause between the last initial join and the first lookup.
    pub settle_ms: u64,
    /// Virtual time between two lookups.
    pub lookup_interval_ms: u64,
    /// Minimum virtual time the run covers (so stale-bucket refreshes happen).
    pub duration_ms: u64,
    /// Check every node's invariants after each step it takes (slow).
    pub check_invariants: bool,
    /// Protocol parameters of every node.
    pub protocol: ProtocolParams,
    /// Fraction of nodes (initial and newcomers) that are adversarial.
    pub adversaries: f64,
    /// What the adversaries answer.
    pub attack: Attack,
    /// Warm start with this many sample joins: the `nodes` initial nodes
    /// start with converged tables (K random peers per bucket range, see
    /// `warm.rs`) instead of joining one by one; then this many newcomers
    /// join through the protocol (their cost is the join column) before the
    /// lookups. `None`: cold start, every node joins.
    #[serde(default)]
    pub warm_start: Option<u32>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            nodes: 1000,
            lookups: 1000,
            churn: 0.0,
            loss: 0.0,
            seed: 1,
            latency_min_ms: 10,
            latency_max_ms: 100,
            bootstrap_peers: 3,
            join_interval_ms: 10,
            settle_ms: 1000,
            lookup_interval_ms: 10,
            duration_ms: 0,
            check_invariants: false,
            protocol: ProtocolParams::default(),
            adversaries: 0.0,
            attack: Attack::Eclipse,
            warm_start: None,
        }
    }
}

impl Scenario {
    /// Nodes that leave (and arrive) during the lookup phase.
    pub fn churn_events(&self) -> u32 {
        (self.churn.clamp(0.0, 1.0) * self.nodes as f64).round() as u32
    }

    /// Checks the values make sense; returns a message for the first that does not.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes < 2 {
            return Err("need at least 2 nodes".into());
        }
        if !(0.0..=0.9).contains(&self.churn) {
            return Err("churn must be in [0, 0.9]".into());
        }
        if !(0.0..1.0).contains(&self.loss) {
            return Err("loss must be in [0, 1)".into());
        }
        if self.latency_min_ms > self.latency_max_ms {
            return Err("latency min > max".into());
        }
        if !(0.0..=0.5).contains(&self.adversaries) {
            return Err("adversaries must be in [0, 0.5]".into());
        }
        if self.bootstrap_peers == 0 {
            return Err("need at least one bootstrap peer".into());
        }
        Ok(())
    }
}
