//! Token buckets with the time passed in: how often something keyed (an IP
//! address, a fingerprint) may happen.
//!
//! Integer milli-tokens, so the same inputs give the same answers on every
//! machine. Used by the core for dials to unverified addresses. (The server's
//! per-peer request rate in `mau-net/src/limits.rs` still has a bucket of its
//! own, which lends tokens ahead; folding it onto this one is left open.)

use std::collections::BTreeMap;

use crate::time::Time;

/// One token bucket: `rate` tokens per second, at most `burst` saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// Milli-tokens held at `updated`.
    milli: u64,
    updated: Time,
}

/// How fast a [`TokenBucket`] refills and how much it saves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: u32,
    /// Tokens a bucket holds at most (a full bucket allows this many at once).
    pub burst: u32,
}

impl Rate {
    fn cap(&self) -> u64 {
        u64::from(self.burst.max(1)) * 1000
    }
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Time) -> Self {
        TokenBucket {
            milli: rate.cap(),
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Time) {
        let elapsed = now.as_millis().saturating_sub(self.updated.as_millis());
        let added = elapsed.saturating_mul(u64::from(rate.per_second));
        self.milli = self.milli.saturating_add(added).min(rate.cap());
        self.updated = self.updated.max(now);
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, rate: Rate, now: Time) -> bool {
        self.refill(rate, now);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }

    /// True if the bucket is full at `now` (forgetting it loses nothing).
    pub fn is_full(&self, rate: Rate, now: Time) -> bool {
        let mut b = *self;
        b.refill(rate, now);
        b.milli >= rate.cap()
    }

    /// Milliseconds until the next token (0 if one is there).
    pub fn wait_millis(&self, rate: Rate, now: Time) -> u64 {
        let mut b = *self;
        b.refill(rate, now);
        if b.milli >= 1000 || rate.per_second == 0 {
            return 0;
        }
        (1000 - b.milli).div_ceil(u64::from(rate.per_second))
    }
}

/// Token buckets per key, at most `max_keys` of them. Full buckets are
/// forgotten when room is needed; when every tracked key is still paying off
/// its burst, a new key is refused: an attacker with many keys cannot make us
/// forget the ones it is limited on.
#[derive(Clone, Debug)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: BTreeMap<K, TokenBucket>,
    /// No sweep for full buckets before this: a sweep visits every key, and
    /// a bucket drained at the last sweep cannot be full again sooner than
    /// one refill period later.
    next_sweep: Time,
}

impl<K: Ord + Clone> KeyedLimiter<K> {
    /// A limiter allowing `rate` per key, tracking at most `max_keys` keys.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        KeyedLimiter {
            rate,
            max_keys: max_keys.max(1),
            buckets: BTreeMap::new(),
            next_sweep: Time::ZERO,
        }
    }

    /// Takes a token for `key`; false if it has none (or no room to track it).
    pub fn try_take(&mut self, key: &K, now: Time) -> bool {
        if let Some(b) = self.buckets.get_mut(key) {
            return b.try_take(self.rate, now);
        }
        // Forget refilled buckets now and then, so the map holds about the
        // keys of the last few seconds (a simulated node dials thousands).
        if self.buckets.len() >= self.max_keys || self.buckets.len().is_power_of_two() {
            self.sweep(now);
            if self.buckets.len() >= self.max_keys {
                return false;
            }
        }
        let mut b = TokenBucket::full(self.rate, now);
        let ok = b.try_take(self.rate, now);
        self.buckets.insert(key.clone(), b);
        ok
    }

    /// Forgets the buckets that are full again (nothing is owed on them).
    /// At most once per refill period (the time an empty bucket takes to
    /// fill): a simulated node calls this on every timer, and a sweep of a
    /// thousand keys each time was half of a simulation's CPU.
    pub fn prune(&mut self, now: Time) {
        if now < self.next_sweep || self.buckets.is_empty() {
            return;
        }
        self.sweep(now);
    }

    fn sweep(&mut self, now: Time) {
        let rate = self.rate;
        self.buckets.retain(|_, b| !b.is_full(rate, now));
        let refill_ms = rate.cap() / u64::from(rate.per_second.max(1));
        self.next_sweep = now + std::time::Duration::from_millis(refill_ms);
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True if no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Heap bytes held (entries only, an estimate).
    pub fn heap_bytes(&self) -> usize {
        self.buckets.len() * (std::mem::size_of::<(K, TokenBucket)>() + 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_PER_S: Rate = Rate {
        per_second: 2,
        burst: 4,
    };

    #[test]
    fn burst_then_rate() {
        let mut b = TokenBucket::full(TWO_PER_S, Time(0));
        let taken = (0..10).filter(|_| b.try_take(TWO_PER_S, Time(0))).count();
        assert_eq!(taken, 4);
        assert_eq!(b.wait_millis(TWO_PER_S, Time(0)), 500);
        assert!(!b.try_take(TWO_PER_S, Time(499)));
        assert!(b.try_take(TWO_PER_S, Time(500)));
        // Ten seconds later: only the burst is saved.
        let later = (0..10)
            .filter(|_| b.try_take(TWO_PER_S, Time(10_500)))
            .count();
        assert_eq!(later, 4);
    }

    #[test]
    fn keys_are_limited_separately_and_the_map_is_bounded() {
        let mut l = KeyedLimiter::new(TWO_PER_S, 2);
        for _ in 0..4 {
            assert!(l.try_take(&1u8, Time(0)));
        }
        assert!(!l.try_take(&1u8, Time(0)));
        assert!(l.try_take(&2u8, Time(0)));
        // Both tracked keys owe tokens: a third key is refused, not tracked.
        assert!(!l.try_take(&3u8, Time(0)));
        assert_eq!(l.len(), 2);
        // Once they refilled they are forgotten to make room.
        assert!(l.try_take(&3u8, Time(5_000)));
        l.prune(Time(60_000));
        assert!(l.is_empty());
    }
}
