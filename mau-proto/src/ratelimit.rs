//! Token buckets with the time passed in: how often something keyed (an IP
//! address, a fingerprint) may happen.
//!
//! Integer milli-tokens, so the same inputs give the same answers on every
//! machine. One implementation for every limit: the core's dials to
//! unverified addresses ([`KeyedLimiter::try_take`], new keys refused when
//! full) and the server's per-peer request rate ([`KeyedLimiter::reserve`],
//! which lends tokens ahead so an eager peer is slowed before it is refused).

use std::collections::BTreeMap;

use crate::time::Time;

/// One token bucket: `rate` tokens per second, at most `burst` saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// Milli-tokens held at `updated`; below zero while tokens are lent
    /// ahead ([`TokenBucket::reserve`]).
    milli: i64,
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
    fn cap(&self) -> i64 {
        i64::from(self.burst.max(1)) * 1000
    }

    /// Milliseconds until a bucket holding `milli` has a whole token.
    fn wait_for_token(&self, milli: i64) -> u64 {
        if milli >= 1000 || self.per_second == 0 {
            return 0;
        }
        (1000 - milli)
            .unsigned_abs()
            .div_ceil(u64::from(self.per_second))
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
        let added = i64::try_from(added).unwrap_or(i64::MAX);
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

    /// Takes one token, lending it ahead if the bucket will have it within
    /// `max_wait_ms`: `Ok(wait)` is how long the caller must wait before
    /// using it (0 when one was there). `Err(wait)`, with the time until the
    /// next free token, when that is further off; nothing is taken.
    ///
    /// The debt is bounded by `rate * max_wait_ms` tokens, so at most
    /// `max_wait_ms` of waiting is ever booked on one bucket.
    pub fn reserve(&mut self, rate: Rate, now: Time, max_wait_ms: u64) -> Result<u64, u64> {
        self.refill(rate, now);
        let wait = rate.wait_for_token(self.milli);
        if wait > max_wait_ms {
            return Err(wait);
        }
        self.milli -= 1000;
        Ok(wait)
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
        rate.wait_for_token(b.milli)
    }
}

/// What a [`KeyedLimiter`] does with a new key when it tracks `max_keys`
/// keys that all still owe tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse the new key: an attacker with many keys cannot make us forget
    /// the ones it is limited on. For what we initiate (dials).
    RefuseNew,
    /// Forget the key idle the longest and track the new one: its owner
    /// gets a fresh bucket, which is what a new identity would get anyway.
    /// For what others ask of us (requests), so a crowd of throwaway keys
    /// cannot lock an honest newcomer out.
    ForgetIdlest,
}

/// Token buckets per key, at most `max_keys` of them. Full buckets are
/// forgotten when room is needed; past that, [`WhenFull`] decides.
#[derive(Clone, Debug)]
pub struct KeyedLimiter<K> {
    rate: Rate,
    max_keys: usize,
    when_full: WhenFull,
    buckets: BTreeMap<K, TokenBucket>,
    /// No sweep for full buckets before this: a sweep visits every key, and
    /// a bucket drained at the last sweep cannot be full again sooner than
    /// one refill period later.
    next_sweep: Time,
}

impl<K: Ord + Clone> KeyedLimiter<K> {
    /// A limiter allowing `rate` per key, tracking at most `max_keys` keys;
    /// a new key is refused when all of them owe tokens.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self::with_policy(rate, max_keys, WhenFull::RefuseNew)
    }

    /// A limiter with an explicit [`WhenFull`] policy.
    pub fn with_policy(rate: Rate, max_keys: usize, when_full: WhenFull) -> Self {
        KeyedLimiter {
            rate,
            max_keys: max_keys.max(1),
            when_full,
            buckets: BTreeMap::new(),
            next_sweep: Time::ZERO,
        }
    }

    /// Takes a token for `key`; false if it has none (or no room to track it).
    pub fn try_take(&mut self, key: &K, now: Time) -> bool {
        self.reserve(key, now, 0).is_ok()
    }

    /// Takes a token for `key`, lent ahead up to `max_wait_ms` (see
    /// [`TokenBucket::reserve`]): `Ok(wait)` or `Err(wait)` as there. A new
    /// key that finds no room under [`WhenFull::RefuseNew`] is refused with
    /// `Err(u64::MAX)`.
    pub fn reserve(&mut self, key: &K, now: Time, max_wait_ms: u64) -> Result<u64, u64> {
        let rate = self.rate;
        if let Some(b) = self.buckets.get_mut(key) {
            return b.reserve(rate, now, max_wait_ms);
        }
        if !self.make_room(now) {
            return Err(u64::MAX);
        }
        let mut b = TokenBucket::full(rate, now);
        let taken = b.reserve(rate, now, max_wait_ms);
        self.buckets.insert(key.clone(), b);
        taken
    }

    /// Room for one more key: false if the policy refuses it.
    fn make_room(&mut self, now: Time) -> bool {
        // Forget refilled buckets now and then, so the map holds about the
        // keys of the last few seconds (a simulated node dials thousands).
        let len = self.buckets.len();
        if len < self.max_keys && !len.is_power_of_two() {
            return true;
        }
        self.sweep(now);
        if self.buckets.len() < self.max_keys {
            return true;
        }
        match self.when_full {
            WhenFull::RefuseNew => false,
            WhenFull::ForgetIdlest => {
                let idlest = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, b)| b.updated)
                    .map(|(k, _)| k.clone());
                if let Some(k) = idlest {
                    self.buckets.remove(&k);
                }
                true
            }
        }
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
        let refill_ms = rate.cap().unsigned_abs() / u64::from(rate.per_second.max(1));
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

    #[test]
    fn tokens_are_lent_up_to_the_longest_wait() {
        // 10 a second, burst 2: two at once, then one booked every 100 ms.
        let rate = Rate {
            per_second: 10,
            burst: 2,
        };
        let max = 1000;
        let mut l = KeyedLimiter::with_policy(rate, 100, WhenFull::ForgetIdlest);
        assert_eq!(l.reserve(&1u64, Time(0), max), Ok(0));
        assert_eq!(l.reserve(&1u64, Time(0), max), Ok(0));
        for i in 1..=10 {
            assert_eq!(l.reserve(&1u64, Time(0), max), Ok(100 * i));
        }
        // The debt is full (1 s booked): refused with the time until the next
        // free token, and nothing more is booked.
        assert_eq!(l.reserve(&1u64, Time(0), max), Err(1100));
        assert_eq!(l.reserve(&1u64, Time(0), max), Err(1100));
        // Paying back: 100 ms later there is room for exactly one more.
        assert!(l.reserve(&1u64, Time(100), max).is_ok());
        assert!(l.reserve(&1u64, Time(100), max).is_err());
        // The debt never outlives its refill: 1.3 s later the burst is back.
        assert_eq!(l.reserve(&1u64, Time(1400), 0), Ok(0));
        assert_eq!(l.reserve(&1u64, Time(1400), 0), Ok(0));
        assert!(l.reserve(&1u64, Time(1400), 0).is_err());
    }

    #[test]
    fn forget_idlest_keeps_the_map_bounded_and_admits_newcomers() {
        let rate = Rate {
            per_second: 1,
            burst: 2,
        };
        let mut l = KeyedLimiter::with_policy(rate, 8, WhenFull::ForgetIdlest);
        // Many distinct busy keys (each spends its burst): never more than 8
        // tracked, and every newcomer still gets its first token.
        for k in 0..1000u64 {
            assert!(l.try_take(&k, Time(k)));
            assert!(l.try_take(&k, Time(k)));
            assert!(l.len() <= 8);
        }
        // The most recent keys are the ones kept: 999 is still limited.
        assert!(!l.try_take(&999, Time(999)));
        // Under RefuseNew the same crowd locks newcomers out instead.
        let mut strict = KeyedLimiter::new(rate, 8);
        for k in 0..8u64 {
            assert!(strict.try_take(&k, Time(0)));
            assert!(strict.try_take(&k, Time(0)));
        }
        assert_eq!(strict.reserve(&100, Time(0), 0), Err(u64::MAX));
    }
}
