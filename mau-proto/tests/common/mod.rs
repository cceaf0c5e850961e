//! Shared generators for the property tests: fingerprints spread over every
//! bucket of a local id, not only the few a uniform draw would reach.

#![allow(dead_code)]

use mau_proto::{BucketIndex, Fingerprint};
use proptest::prelude::*;

/// A v4 fingerprint sharing exactly `cpl` leading bits with `local` (a v4 id).
pub fn v4_at_cpl(local: &Fingerprint, cpl: usize, random: [u8; 32]) -> Fingerprint {
    assert!(cpl < 160);
    let bucket = BucketIndex::from_common_prefix_len(cpl).expect("cpl < 256");
    let key = local.key().offset(&bucket.random_distance(random));
    // The first difference is within the first 160 bits: truncating keeps it.
    Fingerprint::from_bytes(&key.as_bytes()[..20]).expect("20 bytes")
}

/// A v6 fingerprint whose key never equals a v4 key (its last byte is odd),
/// so the table's "one fingerprint per key" rule never comes into play.
pub fn v6_no_collision(mut random: [u8; 32]) -> Fingerprint {
    random[31] |= 1;
    Fingerprint::V6(random)
}

/// How one generated id is built from the local id.
#[derive(Clone, Debug)]
pub enum IdSpec {
    /// A v4 id in the bucket at this common prefix length.
    V4(usize, [u8; 32]),
    /// A random v6 id.
    V6([u8; 32]),
}

/// A spec favouring the shallow buckets (as in a real network) but reaching all 160.
pub fn id_spec() -> impl Strategy<Value = IdSpec> {
    prop_oneof![
        6 => (0usize..6, any::<[u8; 32]>()).prop_map(|(c, r)| IdSpec::V4(c, r)),
        3 => (0usize..160, any::<[u8; 32]>()).prop_map(|(c, r)| IdSpec::V4(c, r)),
        1 => any::<[u8; 32]>().prop_map(IdSpec::V6),
    ]
}

/// Builds a pool of distinct ids (none equal to `local`, no two on one key).
pub fn build_pool(local: &Fingerprint, specs: &[IdSpec]) -> Vec<Fingerprint> {
    let mut pool: Vec<Fingerprint> = Vec::with_capacity(specs.len());
    for s in specs {
        let fp = match s {
            IdSpec::V4(c, r) => v4_at_cpl(local, *c, *r),
            IdSpec::V6(r) => v6_no_collision(*r),
        };
        if fp != *local && !pool.iter().any(|p| p.key() == fp.key()) {
            pool.push(fp);
        }
    }
    pool
}

/// A v4 local id and a pool of `n` ids around it.
pub fn local_and_pool(
    n: impl Into<proptest::collection::SizeRange>,
) -> impl Strategy<Value = (Fingerprint, Vec<Fingerprint>)> {
    (any::<[u8; 20]>(), proptest::collection::vec(id_spec(), n)).prop_map(|(l, specs)| {
        let local = Fingerprint::V4(l);
        let pool = build_pool(&local, &specs);
        (local, pool)
    })
}

/// `default` cases, unless `PROPTEST_CASES` is set (for a soak:
/// `PROPTEST_CASES=10000 cargo test -p mau-proto --release`).
pub fn config(default: u32) -> ProptestConfig {
    let env = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_some() {
        env
    } else {
        ProptestConfig {
            cases: default,
            ..env
        }
    }
}
