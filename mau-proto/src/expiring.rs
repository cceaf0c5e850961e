//! A bounded map whose entries expire: one entry per key (its latest), gone
//! `ttl` after it was set, at most `max` of them, and when full the oldest
//! entry of the most crowded group goes.
//!
//! What [`crate::address_votes`] (one vote per peer) and
//! [`crate::reachability`] (one dial-back result per peer) both keep: the
//! groups are voter groups there, so a crowd of keys on one network can
//! only displace its own entries, never an honest peer's.
//!
//! Sans-IO: every call that depends on the time is given it.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::time::Time;

/// Entries by key, each with the time it was set (see the module
/// documentation).
#[derive(Clone, Debug)]
pub struct Expiring<K, V> {
    ttl: Duration,
    max: usize,
    entries: BTreeMap<K, (Time, V)>,
}

impl<K: Ord + Clone, V> Expiring<K, V> {
    /// Empty; entries last `ttl`, at most `max` (at least 1) are kept.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Expiring {
            ttl,
            max: max.max(1),
            entries: BTreeMap::new(),
        }
    }

    /// Sets `key`'s entry (replacing its previous one) at `now`; if that
    /// makes one too many, the oldest entry of the group (`group`) holding
    /// the most entries goes (ties: the greatest group, then the smallest
    /// key). Entries already expired are dropped first.
    pub fn insert<G: Ord>(&mut self, now: Time, key: K, value: V, group: impl Fn(&V) -> G) {
        self.expire(now);
        self.entries.insert(key, (now, value));
        while self.entries.len() > self.max {
            let mut per_group: BTreeMap<G, usize> = BTreeMap::new();
            for (_, v) in self.entries.values() {
                *per_group.entry(group(v)).or_insert(0) += 1;
            }
            let Some((crowded, _)) = per_group
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
            else {
                return;
            };
            let oldest = self
                .entries
                .iter()
                .filter(|(_, (_, v))| group(v) == crowded)
                .min_by(|a, b| a.1 .0.cmp(&b.1 .0).then_with(|| a.0.cmp(b.0)))
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => return,
            };
        }
    }

    /// Drops the entries set `ttl` or longer before `now`; true if any went.
    pub fn expire(&mut self, now: Time) -> bool {
        let ttl = self.ttl;
        let before = self.entries.len();
        self.entries.retain(|_, (at, _)| *at + ttl > now);
        self.entries.len() != before
    }

    /// When the next entry expires.
    pub fn next_expiry(&self) -> Option<Time> {
        self.entries.values().map(|(at, _)| *at + self.ttl).min()
    }

    /// The entries, each with the time it was set.
    pub fn values(&self) -> impl Iterator<Item = (Time, &V)> {
        self.entries.values().map(|(at, v)| (*at, v))
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when none are held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TTL: Duration = Duration::from_secs(10);

    fn at(s: u64) -> Time {
        Time::ZERO + Duration::from_secs(s)
    }

    #[test]
    fn one_entry_per_key_that_expires() {
        let mut m: Expiring<u32, &str> = Expiring::new(TTL, 8);
        m.insert(at(0), 1, "a", |_| 0);
        m.insert(at(5), 1, "b", |_| 0);
        assert_eq!(m.len(), 1);
        assert_eq!(m.values().collect::<Vec<_>>(), vec![(at(5), &"b")]);
        assert_eq!(m.next_expiry(), Some(at(15)));
        assert!(!m.expire(at(14)));
        assert!(m.expire(at(15)), "gone ttl after it was set");
        assert!(m.is_empty());
        assert_eq!(m.next_expiry(), None);
    }

    #[test]
    fn the_crowded_group_loses_its_oldest() {
        // Group = value / 100: a crowd (group 1) and two honest entries.
        let mut m: Expiring<u32, u32> = Expiring::new(TTL, 4);
        let g = |v: &u32| *v / 100;
        m.insert(at(0), 1, 1, g);
        m.insert(at(0), 2, 201, g);
        for k in 10..20 {
            m.insert(at(1), k, 100 + k, g);
        }
        let mut kept: Vec<u32> = m.values().map(|(_, v)| *v).collect();
        kept.sort();
        assert_eq!(
            kept,
            vec![1, 118, 119, 201],
            "the crowd displaced only itself"
        );
    }

    proptest! {
        /// Whatever the inserts, the map stays within `max`, every entry is
        /// younger than `ttl` after an expiry, and a group holding no more
        /// than its share (max / groups) is never evicted by others.
        #[test]
        fn bounded_fresh_and_fair(
            max in 1usize..12,
            ops in proptest::collection::vec((0u32..40, 0u32..4, 0u64..30), 0..200),
        ) {
            let mut m: Expiring<u32, u32> = Expiring::new(TTL, max);
            let mut now = at(0);
            for (key, group, dt) in ops {
                now = now + Duration::from_millis(dt * 100);
                // Group 0 holds a single key: it is never the largest
                // group unless every group has one entry.
                let key = if group == 0 { 1000 } else { key };
                m.insert(now, key, group, |g| *g);
                prop_assert!(m.len() <= max);
                m.expire(now);
                for (t, _) in m.values() {
                    prop_assert!(t + TTL > now);
                }
                let honest_here = m.values().any(|(_, g)| *g == 0);
                let crowded = m.values().filter(|(_, g)| **g != 0).count() > 0;
                // The honest entry set at `now` is kept unless the map
                // holds one entry only.
                if group == 0 && max > 1 && crowded {
                    prop_assert!(honest_here);
                }
            }
        }
    }
}
