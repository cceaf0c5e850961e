//! The client's idle connections, bounded per peer, in total and in age.
//!
//! Without a total bound a node kept an idle connection to every peer it
//! ever asked (its whole routing table and every lookup's path): about
//! 94 kB each, both ends, so memory grew with the network. The least
//! recently used one is evicted (dropped, which closes it) when the pool is
//! full, and one idle longer than the idle timeout is dropped when the pool
//! is next touched.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Idle connections `C` by peer `K`, each with the time it became idle.
pub(crate) struct IdlePool<K, C> {
    by_peer: BTreeMap<K, Vec<(Instant, C)>>,
    total: usize,
    max_total: usize,
    max_idle: Duration,
    /// No connection expires before this (none held: `None`). A sweep of
    /// every peer on each `put` was 1.5% of a simulated run's CPU; with
    /// this bound it runs only when something may have expired.
    next_expiry: Option<Instant>,
}

impl<K: Ord + Clone, C> IdlePool<K, C> {
    /// At most `max_total` connections, none idle longer than `max_idle`.
    pub(crate) fn new(max_total: usize, max_idle: Duration) -> Self {
        IdlePool {
            by_peer: BTreeMap::new(),
            total: 0,
            max_total,
            max_idle,
            next_expiry: None,
        }
    }

    /// Connections held.
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    /// The most recently idle connection to `key` that is `usable` and not
    /// expired; the ones passed over are dropped.
    pub(crate) fn take(&mut self, key: &K, now: Instant, usable: impl Fn(&C) -> bool) -> Option<C> {
        let conns = self.by_peer.get_mut(key)?;
        let mut found = None;
        while let Some((since, c)) = conns.pop() {
            self.total -= 1;
            if now.saturating_duration_since(since) <= self.max_idle && usable(&c) {
                found = Some(c);
                break;
            }
        }
        if conns.is_empty() {
            self.by_peer.remove(key);
        }
        found
    }

    /// Keeps `conn` for `key` if the peer has fewer than `per_peer`;
    /// expired connections go first, then, if still full, the least
    /// recently used one. With `replace`, the peer's others are dropped.
    pub(crate) fn put(&mut self, key: K, conn: C, now: Instant, per_peer: usize, replace: bool) {
        if self.max_total == 0 {
            return;
        }
        self.expire(now);
        if replace {
            self.remove_where(|k| *k == key);
        }
        if self.by_peer.get(&key).is_some_and(|c| c.len() >= per_peer) {
            return;
        }
        if self.total >= self.max_total {
            self.evict_oldest();
        }
        self.by_peer.entry(key).or_default().push((now, conn));
        self.total += 1;
        // An idle timeout past what `Instant` holds never expires.
        if let Some(expiry) = now.checked_add(self.max_idle) {
            self.next_expiry = Some(self.next_expiry.map_or(expiry, |e| e.min(expiry)));
        }
    }

    /// Drops the connections of every peer matching `pred`.
    pub(crate) fn remove_where(&mut self, pred: impl Fn(&K) -> bool) {
        let total = &mut self.total;
        self.by_peer.retain(|k, conns| {
            let keep = !pred(k);
            if !keep {
                *total -= conns.len();
            }
            keep
        });
    }

    fn expire(&mut self, now: Instant) {
        // Removing connections only delays the true earliest expiry, so
        // the bound stays safe until the sweep below recomputes it.
        if self.next_expiry.is_none_or(|e| now <= e) {
            return;
        }
        let (max_idle, total) = (self.max_idle, &mut self.total);
        let mut oldest: Option<Instant> = None;
        self.by_peer.retain(|_, conns| {
            let before = conns.len();
            conns.retain(|(since, _)| now.saturating_duration_since(*since) <= max_idle);
            *total -= before - conns.len();
            // Each peer's list is in the order its connections became idle.
            if let Some((since, _)) = conns.first() {
                oldest = Some(oldest.map_or(*since, |o| o.min(*since)));
            }
            !conns.is_empty()
        });
        self.next_expiry = oldest.and_then(|o| o.checked_add(max_idle));
    }

    fn evict_oldest(&mut self) {
        // Each peer's list is in the order its connections became idle.
        let oldest = self
            .by_peer
            .iter()
            .filter_map(|(k, conns)| conns.first().map(|(since, _)| (*since, k)))
            .min_by_key(|(since, _)| *since)
            .map(|(_, k)| k.clone());
        if let Some(k) = oldest {
            if let Some(conns) = self.by_peer.get_mut(&k) {
                conns.remove(0);
                self.total -= 1;
                if conns.is_empty() {
                    self.by_peer.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn never_holds_more_than_the_cap_and_evicts_the_least_recently_used() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(3, MIN);
        for peer in 0..10u32 {
            pool.put(
                peer,
                peer,
                t0 + Duration::from_millis(peer.into()),
                2,
                false,
            );
            assert!(pool.len() <= 3, "pool holds {}", pool.len());
        }
        assert_eq!(pool.len(), 3);
        // The three most recent stay; the older ones were evicted.
        let now = t0 + Duration::from_secs(1);
        assert_eq!(pool.take(&6, now, |_| true), None);
        for peer in 7..10 {
            assert_eq!(pool.take(&peer, now, |_| true), Some(peer));
        }
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn per_peer_bound_and_replace() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(10, MIN);
        for c in 0..5 {
            pool.put("a", c, t0, 2, false);
        }
        assert_eq!(pool.len(), 2);
        pool.put("a", 9, t0, 2, true);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.take(&"a", t0, |_| true), Some(9));
    }

    #[test]
    fn expired_and_unusable_connections_are_dropped() {
        let t0 = Instant::now();
        let mut pool = IdlePool::new(10, MIN);
        pool.put(1, "old", t0, 2, false);
        pool.put(2, "usable", t0 + MIN, 2, false);
        pool.put(2, "closed", t0 + MIN, 2, false);
        let later = t0 + MIN + Duration::from_secs(1);
        assert_eq!(pool.take(&1, later, |_| true), None);
        assert_eq!(pool.take(&2, later, |c| *c != "closed"), Some("usable"));
        assert_eq!(pool.len(), 0);
        // Expired ones also go when another is put.
        pool.put(3, "x", t0, 2, false);
        pool.put(4, "y", later + MIN, 2, false);
        assert_eq!(pool.len(), 1);
        pool.remove_where(|k| *k == 4);
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn expiry_is_found_after_the_oldest_was_taken_and_after_a_sweep() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut pool = IdlePool::new(10, MIN);
        pool.put(1, "a", t0, 2, false);
        pool.put(2, "b", t0 + 10 * s, 2, false);
        assert_eq!(pool.take(&1, t0 + s, |_| true), Some("a"));
        // "b" expires at 10 s + MIN; a put just before keeps it.
        pool.put(3, "c", t0 + 10 * s + MIN, 2, false);
        assert_eq!(pool.len(), 2);
        // Just after, it goes; then "c" in its turn.
        pool.put(4, "d", t0 + 11 * s + MIN, 2, false);
        assert_eq!(pool.len(), 2);
        assert_eq!(pool.take(&2, t0 + 11 * s + MIN, |_| true), None);
        pool.put(5, "e", t0 + 11 * s + 2 * MIN, 2, false);
        assert_eq!(pool.len(), 2, "c expired, d and e held");
        assert_eq!(pool.take(&3, t0 + 11 * s + 2 * MIN, |_| true), None);
        // An idle timeout too long for `Instant` never expires anything.
        let mut forever = IdlePool::new(10, Duration::MAX);
        forever.put(1, "x", t0, 2, false);
        forever.put(2, "y", t0 + MIN, 2, false);
        assert_eq!(forever.len(), 2);
    }
}
