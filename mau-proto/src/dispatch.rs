//! Which requests may go out now: a budget per kind of request, queues for
//! the ones that wait, and limits on calling addresses nobody vouched for.
//!
//! Three kinds of request share a node's outgoing capacity, and none may
//! starve another: a flood of callers claiming addresses that never answer
//! fills only the probe budget (further probes are dropped, never queued),
//! while pings of table entries and lookup requests keep their own slots. A
//! request's deadline starts when it leaves its queue, so time spent waiting
//! for a slot is never counted as the peer's silence.

use core::net::IpAddr;
use std::collections::{BTreeMap, VecDeque};

use crate::node::RequestId;
use crate::ratelimit::{KeyedLimiter, Rate};
use crate::rtt::RttEstimator;
use crate::subnet::LimitScope;
use crate::time::Time;

/// The budget a request is charged to (and the class an adapter may log).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RequestClass {
    /// A find_peer of a lookup (join, refresh or a user's lookup).
    Lookup,
    /// A ping of a peer at the address the table holds for it.
    Liveness,
    /// A ping of an address only claimed (a caller's certificate, LAN
    /// discovery): it decides whether the peer enters the table.
    Probe,
}

/// Outgoing capacity per [`RequestClass`], and the limits on probes and on
/// dials to unverified addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budgets {
    /// Lookup requests in flight; more wait in a queue.
    pub lookup: usize,
    /// Table pings in flight; more wait in a queue.
    pub liveness: usize,
    /// Probes in flight; a probe beyond this is dropped (the caller is not
    /// admitted this time and may be probed on a later request).
    pub probe: usize,
    /// Probes in flight triggered by callers from one source IP.
    pub probes_per_source: usize,
    /// Which source IPs `probes_per_source` counts (loopback is exempt by
    /// default: a devnet's nodes all call from 127.0.0.1).
    pub probe_source_scope: LimitScope,
    /// Requests to one IP at which no table entry lives (a claimed address,
    /// a peer named in someone's answer), whatever the identities or answers
    /// naming it: the bound on how hard others can make us call a third party.
    pub unverified_dials: Rate,
}

impl Default for Budgets {
    fn default() -> Self {
        Budgets {
            lookup: 64,
            liveness: 16,
            probe: 16,
            probes_per_source: 4,
            probe_source_scope: LimitScope::AllButLoopback,
            unverified_dials: Rate {
                per_second: 2,
                burst: 4,
            },
        }
    }
}

/// IPs whose unverified-dial buckets are tracked at once.
const MAX_TRACKED_IPS: usize = 1024;

/// The bookkeeping behind [`Budgets`].
#[derive(Clone, Debug)]
pub(crate) struct Dispatch {
    in_flight: [usize; 3],
    /// Requests waiting for a lookup / liveness slot (ids of requests
    /// answered or cancelled meanwhile are skipped when popped).
    queued: [VecDeque<RequestId>; 2],
    probes_by_source: BTreeMap<IpAddr, u16>,
    dials: KeyedLimiter<IpAddr>,
    /// Answer times, for how long a lookup waits.
    pub rtt: RttEstimator,
}

fn slot(class: RequestClass) -> usize {
    match class {
        RequestClass::Lookup => 0,
        RequestClass::Liveness => 1,
        RequestClass::Probe => 2,
    }
}

impl Dispatch {
    pub fn new(budgets: &Budgets) -> Self {
        Dispatch {
            in_flight: [0; 3],
            queued: [VecDeque::new(), VecDeque::new()],
            probes_by_source: BTreeMap::new(),
            dials: KeyedLimiter::new(budgets.unverified_dials, MAX_TRACKED_IPS),
            rtt: RttEstimator::default(),
        }
    }

    fn budget(budgets: &Budgets, class: RequestClass) -> usize {
        match class {
            RequestClass::Lookup => budgets.lookup,
            RequestClass::Liveness => budgets.liveness,
            RequestClass::Probe => budgets.probe,
        }
        .max(1)
    }

    /// True if a request of `class` may be sent now.
    pub fn has_slot(&self, budgets: &Budgets, class: RequestClass) -> bool {
        self.in_flight[slot(class)] < Self::budget(budgets, class)
    }

    /// True if a caller from `source` may trigger one more probe.
    pub fn source_may_probe(&self, budgets: &Budgets, source: Option<IpAddr>) -> bool {
        match source {
            Some(ip) if budgets.probe_source_scope.counts(ip) => {
                usize::from(self.probes_by_source.get(&ip).copied().unwrap_or(0))
                    < budgets.probes_per_source.max(1)
            }
            _ => true,
        }
    }

    /// Takes a token to call `ip`, which hosts no verified peer.
    pub fn take_dial(&mut self, ip: IpAddr, now: Time) -> bool {
        self.dials.try_take(&ip, now)
    }

    /// A request of `class` leaves (from `source`, for a probe).
    pub fn sent(&mut self, class: RequestClass, source: Option<IpAddr>) {
        self.in_flight[slot(class)] += 1;
        if let (RequestClass::Probe, Some(ip)) = (class, source) {
            *self.probes_by_source.entry(ip).or_insert(0) += 1;
        }
    }

    /// A request that was sent is over (answered, failed or timed out).
    pub fn finished(&mut self, class: RequestClass, source: Option<IpAddr>) {
        let n = &mut self.in_flight[slot(class)];
        *n = n.saturating_sub(1);
        if let (RequestClass::Probe, Some(ip)) = (class, source) {
            if let Some(c) = self.probes_by_source.get_mut(&ip) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.probes_by_source.remove(&ip);
                }
            }
        }
    }

    /// Queues a request that found no slot (probes are never queued).
    pub fn enqueue(&mut self, class: RequestClass, id: RequestId) {
        if class != RequestClass::Probe {
            self.queued[slot(class)].push_back(id);
        }
    }

    /// The next queued request of `class`, oldest first.
    pub fn pop_queued(&mut self, class: RequestClass) -> Option<RequestId> {
        if class == RequestClass::Probe {
            return None;
        }
        let q = &mut self.queued[slot(class)];
        let id = q.pop_front();
        if q.is_empty() && q.capacity() > 0 {
            q.shrink_to(0);
        }
        id
    }

    /// Requests in flight of `class`.
    pub fn in_flight(&self, class: RequestClass) -> usize {
        self.in_flight[slot(class)]
    }

    /// Drops state nothing depends on any more (refilled dial buckets).
    pub fn prune(&mut self, now: Time) {
        self.dials.prune(now);
    }

    pub fn heap_bytes(&self) -> usize {
        self.queued
            .iter()
            .map(|q| q.capacity() * std::mem::size_of::<RequestId>())
            .sum::<usize>()
            + self.probes_by_source.len() * 48
            + self.dials.heap_bytes()
    }
}
