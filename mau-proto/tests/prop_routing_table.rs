//! Property tests of the routing table: arbitrary sequences of
//! `seen`/`failed`/`remove`/`mark_pinged` at arbitrary (even decreasing) times
//! keep the structural invariants (the subnet limits among them, when set),
//! and `closest` always equals a brute-force XOR sort of the entries; a table
//! keeping compact ids in a shared store behaves exactly as one keeping
//! fingerprints inline.

mod common;

use std::time::Duration;

use mau_proto::internals::{FailedOutcome, RoutingTable, SeenOutcome};
use mau_proto::{
    Contact, Fingerprint, Key, LimitScope, Liveness, SharedFingerprints, SubnetLimits, Time,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// `seen(pool[i])` at time `t`, with address `addr` (an IPv4 address in
    /// subnet 0.0.`addr`, so the few subnets fill up).
    Seen(usize, u32, u64),
    /// `failed(pool[i])`.
    Failed(usize),
    /// `remove(pool[i])`.
    Remove(usize),
    /// `mark_pinged(pool[i])` at time `t`.
    MarkPinged(usize, u64),
    /// `seen` of the local node itself (must be refused).
    SeenSelf(u64),
}

fn op() -> impl Strategy<Value = Op> {
    // Times in 0..10^7 ms (about 3 h): well across the 30 s backoff, any order.
    let t = 0u64..10_000_000;
    prop_oneof![
        8 => (any::<usize>(), 0u32..4, t.clone()).prop_map(|(i, a, t)| Op::Seen(i, a, t)),
        3 => any::<usize>().prop_map(Op::Failed),
        1 => any::<usize>().prop_map(Op::Remove),
        2 => (any::<usize>(), t.clone()).prop_map(|(i, t)| Op::MarkPinged(i, t)),
        1 => t.prop_map(Op::SeenSelf),
    ]
}

/// What `closest` must return: every entry (filtered by liveness) sorted by
/// XOR distance to `target`, cut to `n`.
fn brute_closest(
    t: &RoutingTable<u32>,
    target: &Key,
    n: usize,
    liveness: Liveness,
) -> Vec<Contact<u32>> {
    let mut all: Vec<_> = t
        .entries()
        .filter(|e| liveness == Liveness::Any || e.failures == 0)
        .map(|e| e.contact())
        .collect();
    all.sort_by_key(|c| c.fingerprint.key().distance(target));
    all.truncate(n);
    all
}

fn check_closest(t: &RoutingTable<u32>, targets: &[Key], n: usize) -> Result<(), TestCaseError> {
    for target in targets {
        for liveness in [Liveness::Any, Liveness::Responsive] {
            let got = t.closest(target, n, liveness);
            let want = brute_closest(t, target, n, liveness);
            prop_assert_eq!(got, want, "closest({:?}, {}, {:?})", target, n, liveness);
        }
    }
    Ok(())
}

/// Every entry with all it records, bucket by bucket.
fn entries_of(t: &RoutingTable<u32>) -> Vec<(Fingerprint, u32, Time, Option<Time>, u8)> {
    t.entries()
        .map(|e| {
            (
                e.fingerprint,
                e.address,
                e.last_seen(),
                e.last_ping(),
                e.failures,
            )
        })
        .collect()
}

/// Each bucket's replacement cache, by common prefix length.
fn caches_of(t: &RoutingTable<u32>) -> Vec<(usize, Vec<Contact<u32>>)> {
    t.buckets()
        .map(|(i, b)| (i.common_prefix_len(), b.replacements().to_vec()))
        .collect()
}

/// Every entry of a compact table as `entries_of` shows an inline one.
fn compact_entries_of(
    t: &RoutingTable<u32, SharedFingerprints>,
) -> Vec<(Fingerprint, u32, Time, Option<Time>, u8)> {
    t.entries()
        .map(|e| {
            (
                t.contact_of(e).fingerprint,
                e.address,
                e.last_seen(),
                e.last_ping(),
                e.failures,
            )
        })
        .collect()
}

/// The common prefix length of `fp` with `local` (its bucket).
fn bucket_of(local: &Fingerprint, fp: &Fingerprint) -> usize {
    local.key().distance(&fp.key()).leading_zeros() as usize
}

const BACKOFF: Duration = Duration::from_secs(30);

proptest! {
    // Kept small so `cargo test -p mau-proto` stays fast in debug; for a soak:
    // PROPTEST_CASES=10000 cargo test -p mau-proto --release.
    #![proptest_config(common::config(64))]

    #[test]
    fn table_invariants_and_closest(
        (local, pool) in common::local_and_pool(1..48),
        k in 1usize..6,
        cap in 0usize..4,
        max_failures in 1u8..4,
        ops in proptest::collection::vec(op(), 0..120),
        n in 0usize..12,
        random_targets in proptest::collection::vec(any::<[u8; 32]>(), 1),
        limits in proptest::option::of((1usize..3, 1usize..6)),
    ) {
        prop_assume!(!pool.is_empty());
        let limits = limits.map(|(per_bucket, per_table)| SubnetLimits {
            per_bucket,
            per_table: per_table.max(per_bucket),
            scope: LimitScope::All,
        });
        let mut t: RoutingTable<u32> =
            RoutingTable::new(local, k, cap, max_failures).with_subnet_limits(limits);
        // Targets: the local id, a pool id, random keys.
        let mut targets = vec![local.key(), pool[pool.len() / 2].key()];
        targets.extend(random_targets.iter().map(|b| Key::from_bytes(*b)));

        for op in ops {
            match op {
                Op::Seen(i, addr, now) => {
                    let addr = addr << 8;
                    let fp = pool[i % pool.len()];
                    let before = t.len();
                    let old = t.get(&fp).map(|e| e.address);
                    let matters = t.seen_matters(&Contact::new(fp, addr), Time(now), BACKOFF);
                    let entries_before = entries_of(&t);
                    let caches_before = caches_of(&t);
                    let waiting = caches_before.iter().find(|(c, _)| *c == bucket_of(&local, &fp));
                    let (waiting_len, was_waiting) = waiting.map_or((0, false), |(_, w)| {
                        // Waiting at this very address: a new address matters.
                        (w.len(), w.iter().any(|c| *c == Contact::new(fp, addr)))
                    });
                    let outcome = t.seen(Contact::new(fp, addr), Time(now), BACKOFF);
                    // `seen_matters` is false exactly when `seen` changes no
                    // entry and at most the order of a cache that is full.
                    match &outcome {
                        SeenOutcome::Inserted | SeenOutcome::Updated | SeenOutcome::PingRequired(_) => {
                            prop_assert!(matters, "{:?} but seen_matters said no", outcome)
                        }
                        SeenOutcome::Cached => prop_assert_eq!(
                            matters,
                            waiting_len < cap && !was_waiting,
                            "cached with {} waiting (cap {})", waiting_len, cap
                        ),
                        SeenOutcome::Refused | SeenOutcome::SubnetFull => prop_assert!(!matters),
                    }
                    if !matters {
                        prop_assert_eq!(entries_of(&t), entries_before);
                        for ((c, after), (_, before)) in caches_of(&t).iter().zip(&caches_before) {
                            let mut a: Vec<_> = after.iter().map(|c| c.fingerprint).collect();
                            let mut b: Vec<_> = before.iter().map(|c| c.fingerprint).collect();
                            a.sort();
                            b.sort();
                            prop_assert!(a == b || before.len() == cap, "cache {} changed", c);
                        }
                    }
                    match &outcome {
                        SeenOutcome::Inserted => {
                            prop_assert_eq!(t.len(), before + 1);
                            prop_assert!(t.contains(&fp));
                        }
                        SeenOutcome::Updated => {
                            let e = t.get(&fp).expect("updated entry present");
                            prop_assert_eq!(e.address, addr);
                            prop_assert_eq!(e.last_seen(), Time(now / 1000 * 1000));
                            prop_assert_eq!(e.failures, 0);
                        }
                        SeenOutcome::PingRequired(head) => {
                            prop_assert!(!t.contains(&fp));
                            prop_assert!(t.contains(&head.fingerprint));
                            prop_assert_ne!(head.fingerprint, fp);
                        }
                        SeenOutcome::Cached => prop_assert!(!t.contains(&fp)),
                        SeenOutcome::Refused => {
                            prop_assert!(false, "refused a distinct non-local id {}", fp)
                        }
                        SeenOutcome::SubnetFull => {
                            prop_assert!(limits.is_some(), "subnet full without limits");
                            prop_assert_eq!(t.len(), before);
                            prop_assert_eq!(t.get(&fp).map(|e| e.address), old);
                        }
                    }
                }
                Op::Failed(i) => {
                    let fp = pool[i % pool.len()];
                    let was = t.contains(&fp);
                    let before = t.len();
                    match t.failed(&fp) {
                        FailedOutcome::Unknown => prop_assert!(!was),
                        FailedOutcome::Counted => {
                            prop_assert!(t.get(&fp).is_some_and(|e| e.failures > 0));
                        }
                        FailedOutcome::Evicted { promoted } => {
                            prop_assert!(was);
                            prop_assert!(!t.contains(&fp));
                            match promoted {
                                Some(c) => {
                                    prop_assert!(t.contains(&c.fingerprint));
                                    prop_assert_eq!(t.len(), before);
                                }
                                None => prop_assert_eq!(t.len(), before - 1),
                            }
                        }
                    }
                }
                Op::Remove(i) => {
                    let fp = pool[i % pool.len()];
                    t.remove(&fp);
                    prop_assert!(!t.contains(&fp));
                }
                Op::MarkPinged(i, now) => {
                    let fp = pool[i % pool.len()];
                    let was = t.contains(&fp);
                    let ok = t.mark_pinged(&fp, Time(now), BACKOFF);
                    if was && ok {
                        prop_assert_eq!(t.get(&fp).and_then(|e| e.last_ping()), Some(Time(now.div_ceil(1000) * 1000)));
                    }
                    if !was {
                        prop_assert!(ok, "an unknown peer may always be pinged");
                    }
                }
                Op::SeenSelf(now) => {
                    prop_assert_eq!(
                        t.seen(Contact::new(local, 0), Time(now), BACKOFF),
                        SeenOutcome::Refused
                    );
                }
            }
            if let Err(e) = t.check_invariants() {
                prop_assert!(false, "invariant broken: {}", e);
            }
            prop_assert!(!t.contains(&local));
            check_closest(&t, &targets, n)?;
        }
        // A final wide query: closest(all) is every entry, sorted.
        check_closest(&t, &targets, t.len() + 3)?;
        prop_assert_eq!(t.closest(&local.key(), usize::MAX, Liveness::Any).len(), t.len());
    }

    /// Filling a table from many ids never exceeds K per bucket and `closest`
    /// stays exact on a big, deep table (K = 20, the Mau default).
    #[test]
    fn closest_exact_on_large_table(
        (local, pool) in common::local_and_pool(200..400),
        targets in proptest::collection::vec(any::<[u8; 32]>(), 4),
        n in 1usize..40,
    ) {
        let mut t: RoutingTable<u32> = RoutingTable::new(local, 20, 8, 2);
        for (i, fp) in pool.iter().enumerate() {
            t.seen(Contact::new(*fp, i as u32), Time(i as u64), BACKOFF);
        }
        if let Err(e) = t.check_invariants() {
            prop_assert!(false, "invariant broken: {}", e);
        }
        let mut keys: Vec<Key> = targets.iter().map(|b| Key::from_bytes(*b)).collect();
        keys.push(local.key());
        keys.extend(pool.iter().take(3).map(Fingerprint::key));
        check_closest(&t, &keys, n)?;
    }

    /// The same inputs to a table with inline fingerprints and to one with
    /// compact ids in a shared store give the same outcomes, entries, caches
    /// and `closest` answers. The pool reaches deep buckets, so many ids
    /// share their first 64 bits with the local id and with each other (the
    /// prefixes tie and the store decides), and v6 twins of v4 ids (one key,
    /// two fingerprints) are refused alike.
    #[test]
    fn compact_table_is_the_inline_table(
        (local, mut pool) in common::local_and_pool(1..64),
        k in 1usize..6,
        cap in 0usize..4,
        ops in proptest::collection::vec(op(), 0..150),
        n in 1usize..12,
        random_targets in proptest::collection::vec(any::<[u8; 32]>(), 2),
    ) {
        prop_assume!(!pool.is_empty());
        // A v6 twin of every fourth v4 id.
        let twins: Vec<Fingerprint> = pool
            .iter()
            .step_by(4)
            .filter(|f| f.version() == 4)
            .map(|f| Fingerprint::V6(*f.key().as_bytes()))
            .collect();
        pool.extend(twins);
        let store = SharedFingerprints::new();
        let mut inline: RoutingTable<u32> = RoutingTable::new(local, k, cap, 2);
        let mut compact = RoutingTable::with_store(local, k, cap, 2, store.clone());
        // Another table on the same store, so ids are not the table's own.
        let mut other = RoutingTable::with_store(pool[0], k, cap, 2, store.clone());
        let mut targets = vec![local.key(), pool[pool.len() / 2].key()];
        targets.extend(random_targets.iter().map(|b| Key::from_bytes(*b)));
        for op in ops {
            match op {
                Op::Seen(i, addr, now) => {
                    let c = Contact::new(pool[i % pool.len()], addr);
                    other.seen(Contact::new(pool[(i / 2) % pool.len()], addr), Time(now), BACKOFF);
                    prop_assert_eq!(
                        inline.seen_matters(&c, Time(now), BACKOFF),
                        compact.seen_matters(&c, Time(now), BACKOFF)
                    );
                    prop_assert_eq!(
                        inline.seen(c.clone(), Time(now), BACKOFF),
                        compact.seen(c, Time(now), BACKOFF)
                    );
                }
                Op::Failed(i) => {
                    let fp = pool[i % pool.len()];
                    prop_assert_eq!(inline.failed(&fp), compact.failed(&fp));
                }
                Op::Remove(i) => {
                    let fp = pool[i % pool.len()];
                    prop_assert_eq!(inline.remove(&fp), compact.remove(&fp));
                }
                Op::MarkPinged(i, now) => {
                    let fp = pool[i % pool.len()];
                    prop_assert_eq!(
                        inline.mark_pinged(&fp, Time(now), BACKOFF),
                        compact.mark_pinged(&fp, Time(now), BACKOFF)
                    );
                }
                Op::SeenSelf(now) => {
                    let c = Contact::new(local, 0);
                    prop_assert_eq!(
                        inline.seen(c.clone(), Time(now), BACKOFF),
                        compact.seen(c, Time(now), BACKOFF)
                    );
                }
            }
            if let Err(e) = compact.check_invariants() {
                prop_assert!(false, "invariant broken: {}", e);
            }
            prop_assert_eq!(entries_of(&inline), compact_entries_of(&compact));
            let caches: Vec<_> = compact
                .buckets()
                .map(|(i, b)| (i.common_prefix_len(), b.replacements().to_vec()))
                .collect();
            prop_assert_eq!(caches_of(&inline), caches);
            for fp in &pool {
                prop_assert_eq!(inline.contains(fp), compact.contains(fp));
            }
            for target in &targets {
                for liveness in [Liveness::Any, Liveness::Responsive] {
                    let want = brute_closest(&inline, target, n, liveness);
                    prop_assert_eq!(&inline.closest(target, n, liveness), &want);
                    prop_assert_eq!(compact.closest(target, n, liveness), want);
                }
            }
        }
    }
}
