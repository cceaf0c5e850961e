//! Pacing of one sync's requests: how many may be in flight, how a request
//! the friend refused (429, 503) is retried, and the sync's waiting budget.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use async_lock::{Semaphore, SemaphoreGuard};

use super::wire::parse_retry_after;

/// How a request the friend refused with `429 Too Many Requests` or `503
/// Service Unavailable` is retried: after the wait its `Retry-After` asks
/// for (at most [`RetryPolicy::max_wait`]; [`RetryPolicy::default_wait`]
/// if it has none or one that does not parse), plus up to half of it again
/// at random so that requests refused together do not return together, at
/// most [`RetryPolicy::max_retries`] times. Both forms of `Retry-After` are
/// read: delay-seconds and an HTTP-date (a date already past: no wait).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries of one request before it fails with
    /// [`super::SyncError::Throttled`] (0: none).
    pub max_retries: u32,
    /// Longest wait honoured; a longer `Retry-After` is cut to it (the
    /// retry may then be refused again, which costs one more retry).
    pub max_wait: Duration,
    /// The wait when `Retry-After` is missing or unreadable.
    pub default_wait: Duration,
    /// Waiting a whole sync may spend, over all its requests: past it a
    /// refused request fails at once. Without it a friend answering
    /// "wait 60 s" to every request would hold a sync of n files for about
    /// n × retries minutes.
    pub max_total_wait: Duration,
}

impl Default for RetryPolicy {
    /// 5 retries, waits of at most 60 s, 1 s when the friend names none,
    /// 10 minutes of waiting per sync in all.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            max_wait: Duration::from_secs(60),
            default_wait: Duration::from_secs(1),
            max_total_wait: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The wait for an answer whose `Retry-After` header is `retry_after`,
    /// read at `now` (for the HTTP-date form), before the random extra.
    pub fn wait(&self, retry_after: Option<&str>, now: SystemTime) -> Duration {
        retry_after
            .and_then(|v| parse_retry_after(v, now))
            .unwrap_or(self.default_wait)
            .min(self.max_wait)
    }
}

/// The requests of one sync (its listing and every download): how many may
/// be in flight at once, and how many the friend refused.
pub(super) struct Pacing {
    /// One permit per request allowed in flight.
    pub(super) slots: Semaphore,
    /// How many permits exist (they are retired, not added).
    window: AtomicUsize,
    /// 429 and 503 answers received.
    refused: AtomicUsize,
    /// Milliseconds of `Retry-After` waiting granted so far.
    waited_ms: AtomicU64,
}

impl Pacing {
    pub(super) fn new(concurrency: usize) -> Self {
        let n = concurrency.max(1);
        Pacing {
            slots: Semaphore::new(n),
            window: AtomicUsize::new(n),
            refused: AtomicUsize::new(0),
            waited_ms: AtomicU64::new(0),
        }
    }

    /// Grants `wait` from the sync's waiting budget `total`, or refuses if
    /// it would overrun it (then nothing is taken).
    pub(super) fn take_wait(&self, wait: Duration, total: Duration) -> bool {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (wait, total) = (ms(wait), ms(total));
        self.waited_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |spent| {
                spent.checked_add(wait).filter(|after| *after <= total)
            })
            .is_ok()
    }

    /// A 503 said too many of our requests are in flight: `permit` is
    /// retired (one request fewer at once from now on), down to one.
    pub(super) fn shrink(&self, permit: SemaphoreGuard<'_>) {
        let shrunk = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w > 1).then(|| w - 1)
            })
            .is_ok();
        if shrunk {
            permit.forget();
        }
    }

    /// Counts one refusal (429 or 503).
    pub(super) fn note_refusal(&self) {
        self.refused.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn refused(&self) -> usize {
        self.refused.load(Ordering::Acquire)
    }
}

/// A random part of `max` (from the standard library's per-instance random
/// hasher keys: no RNG dependency for a jitter).
pub(super) fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let cap = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(r.checked_rem(cap).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn retry_policy_defaults_and_caps() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let policy = RetryPolicy::default();
        let w = |v: Option<&str>| policy.wait(v, now);
        let secs = Duration::from_secs;
        assert_eq!(w(Some("2")), secs(2));
        assert_eq!(w(None), secs(1), "missing: the default");
        assert_eq!(w(Some("garbage")), secs(1), "unparsable: the default");
        assert_eq!(w(Some("-3")), secs(1));
        assert_eq!(w(Some("3600")), secs(60), "huge: capped");
        assert_eq!(
            w(Some("184467440737095516160")),
            secs(60),
            "overflow: capped"
        );
        let tomorrow = httpdate::fmt_http_date(now + secs(86_400));
        assert_eq!(w(Some(&tomorrow)), secs(60), "a far date: capped");
        let soon = httpdate::fmt_http_date(now + secs(5));
        assert_eq!(w(Some(&soon)), secs(5));
        // A default above the cap is capped too.
        let odd = RetryPolicy {
            default_wait: secs(120),
            ..RetryPolicy::default()
        };
        assert_eq!(odd.wait(None, now), secs(60));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        for max in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(500),
            Duration::MAX,
        ] {
            for _ in 0..100 {
                assert!(jitter(max) <= max);
            }
        }
        let d = Duration::from_secs(1);
        let distinct: std::collections::BTreeSet<Duration> = (0..20).map(|_| jitter(d)).collect();
        assert!(distinct.len() > 1, "no randomness");
    }

    #[test]
    fn a_sync_waits_at_most_its_budget() {
        let p = Pacing::new(2);
        let (s, budget) = (Duration::from_secs, Duration::from_secs(10));
        assert!(p.take_wait(s(6), budget));
        assert!(!p.take_wait(s(5), budget), "6 + 5 > 10: refused");
        assert!(p.take_wait(s(4), budget), "a refusal took nothing");
        assert!(!p.take_wait(Duration::from_millis(1), budget), "spent");
        let q = Pacing::new(1);
        assert!(q.take_wait(Duration::MAX, Duration::MAX), "no overflow");
        assert!(!q.take_wait(s(1), Duration::MAX));
    }

    #[test]
    fn a_503_retires_permits_down_to_one() {
        let p = Pacing::new(3);
        let a = p.slots.try_acquire().unwrap();
        let b = p.slots.try_acquire().unwrap();
        let c = p.slots.try_acquire().unwrap();
        p.shrink(a);
        p.shrink(b);
        // The last one is never retired.
        p.shrink(c);
        assert_eq!(p.window.load(Ordering::Acquire), 1);
        let only = p.slots.try_acquire().expect("one permit left");
        assert!(p.slots.try_acquire().is_none());
        drop(only);
        assert!(Pacing::new(0).slots.try_acquire().is_some());
    }
}
