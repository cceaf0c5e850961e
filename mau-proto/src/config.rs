//! Run-time protocol parameters. Defaults are the Mau constants.

use std::time::Duration;

use crate::dispatch::Budgets;
use crate::subnet::SubnetLimits;

/// Max peers per bucket (the Kademlia replication parameter K).
pub const K: usize = 20;
/// Parallel requests per lookup (α).
pub const ALPHA: usize = 3;
/// A bucket with no lookup for this long is refreshed.
pub const STALL_PERIOD: Duration = Duration::from_secs(60 * 60);
/// A peer heard from within this is alive without a ping; no peer is pinged more often.
pub const PING_MIN_BACKOFF: Duration = Duration::from_secs(30);

/// When an iterative lookup stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Termination {
    /// Bucket refreshes stop when the K closest live candidates have all
    /// answered; joins and find-peer lookups go on until nobody is left to
    /// ask (find-peer: or the target answered). Stalls widen to K requests.
    #[default]
    KClosest,
    /// The Go implementation's rule: α requests at a time to the closest
    /// unasked candidates, stopping only on an exact match or an empty queue
    /// (no K-closest rule). For baseline comparisons.
    GoExhaustive,
}

/// Which callers a node probes (pings at their claimed address) before
/// they may enter its table. Either way only a caller that answers the
/// probe is ever added.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CallerProbes {
    /// Only those whose answer could change the table (the routing table's
    /// `seen_matters`, from the same plan as its `seen`): not a caller that
    /// would only wait in a full bucket whose head needs no check and whose
    /// replacement cache is full (or off). A joining node meets hundreds of
    /// peers, and most of them hold it in such a bucket.
    #[default]
    WhenUseful,
    /// Every caller not in the table at its claimed address (the behaviour
    /// before; the Go policy's baseline in the simulator).
    Always,
}

/// Tunable parameters of a [`crate::Node`]. Change them at run time; no rebuild.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Max peers per bucket, and the number of closest peers a lookup converges on.
    pub k: usize,
    /// Requests in flight per lookup while it makes progress.
    pub alpha: usize,
    /// Bucket staleness period: after this without a lookup in its range a bucket is refreshed.
    pub stall_period: Duration,
    /// Minimum time between two pings of one peer; a peer heard within it counts as alive.
    pub ping_min_backoff: Duration,
    /// How long the core waits for an answer from a peer in its table before
    /// it counts the request as failed (the hard deadline).
    pub rpc_timeout: Duration,
    /// The least a lookup waits for one answer before it moves on (the soft
    /// deadline adapts to recent answer times between this and `rpc_timeout`;
    /// addresses not in the table get twice the soft deadline in all).
    pub min_rpc_timeout: Duration,
    /// The soft deadline before any answer was timed.
    pub initial_rpc_timeout: Duration,
    /// Outgoing requests in flight per kind, and probe and dial limits.
    pub budgets: Budgets,
    /// Newcomers kept per full bucket, waiting for a slot.
    pub replacement_cache: usize,
    /// Consecutive failures after which a peer with no replacement waiting is evicted.
    pub max_failures: u8,
    /// Candidates a lookup remembers (the farthest are forgotten beyond this).
    pub max_lookup_candidates: usize,
    /// Lookups running at once; further requests fail fast rather than queue without bound.
    pub max_concurrent_lookups: usize,
    /// When a lookup stops ([`Termination::KClosest`] unless comparing with Go).
    pub lookup_termination: Termination,
    /// After a join that left fewer than K peers in the table (an early node
    /// in a flash crowd, a tiny network), the join is repeated after this,
    /// then after twice as long, up to `stall_period`, until K peers are known.
    pub rejoin_interval: Duration,
    /// Sybil limits: peers per IPv4 /24 or IPv6 /64 in a bucket and in the
    /// table (2 and 10, public addresses only, by default). `None`: unlimited.
    pub subnet_limits: Option<SubnetLimits>,
    /// Which unverified callers are probed.
    pub caller_probes: CallerProbes,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            k: K,
            alpha: ALPHA,
            stall_period: STALL_PERIOD,
            ping_min_backoff: PING_MIN_BACKOFF,
            rpc_timeout: Duration::from_secs(10),
            min_rpc_timeout: Duration::from_millis(500),
            initial_rpc_timeout: Duration::from_secs(3),
            budgets: Budgets::default(),
            replacement_cache: 8,
            max_failures: 2,
            // Find-peer and join lookups go on past the K closest (see
            // lookup.rs); 10 K keeps honest peers on the list when colluders
            // crowd its head (10k nodes, 10% eclipsing: 98.0% found with 4 K,
            // 99.85% with 10 K; docs/adversarial.md has the honest cost).
            max_lookup_candidates: 10 * K,
            max_concurrent_lookups: 256,
            lookup_termination: Termination::KClosest,
            rejoin_interval: Duration::from_secs(5),
            subnet_limits: Some(SubnetLimits::default()),
            caller_probes: CallerProbes::WhenUseful,
        }
    }
}

impl Config {
    /// Clamps values that would make the protocol meaningless (zero K or α).
    pub fn sanitized(mut self) -> Self {
        self.k = self.k.max(1);
        self.alpha = self.alpha.max(1);
        self.max_failures = self.max_failures.max(1);
        self.max_lookup_candidates = self.max_lookup_candidates.max(self.k);
        self.max_concurrent_lookups = self.max_concurrent_lookups.max(1);
        self.min_rpc_timeout = self.min_rpc_timeout.min(self.rpc_timeout);
        if let Some(l) = &mut self.subnet_limits {
            l.per_bucket = l.per_bucket.max(1);
            l.per_table = l.per_table.max(l.per_bucket);
        }
        self
    }
}
