//! Warm start: routing tables as a long-running network converges to them,
//! built directly instead of by `n` simulated joins.
//!
//! A cold start joins every node through the protocol: ~450 requests per node
//! at 10k, hours of CPU at a million. A converged Kademlia table holds, for
//! each bucket, K peers (all of them if fewer) from that bucket's slice of the
//! keyspace. With all keys sorted, a bucket's slice is one contiguous range,
//! so a node's table costs two binary searches and K random picks per bucket.
//!
//! The simulator then measures what a warm network is for: sample newcomers
//! join it through the real protocol (the join cost column) and lookups run
//! on it. `docs/scaling.md` compares warm and cold runs where both fit.

use std::ops::Range;

use mau_proto::{Key, Rng};

/// The key range sharing exactly the first `bits` bits with `local`: all of it
/// when `flip` is false (local's own side), or the sibling half where bit
/// `bits` differs when `flip` is true (bucket `bits` by common prefix length).
fn prefix_bounds(local: &Key, bits: usize, flip: bool) -> (Key, Key) {
    let mut lo = *local.as_bytes();
    let mut hi = lo;
    let fixed = if flip { bits + 1 } else { bits };
    for bit in fixed..256 {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        lo[byte] &= !mask;
        hi[byte] |= mask;
    }
    if flip {
        let (byte, mask) = (bits / 8, 0x80u8 >> (bits % 8));
        lo[byte] ^= mask;
        hi[byte] ^= mask;
    }
    (Key::from_bytes(lo), Key::from_bytes(hi))
}

fn range_of(sorted: &[Key], (lo, hi): (Key, Key)) -> Range<usize> {
    sorted.partition_point(|k| *k < lo)..sorted.partition_point(|k| *k <= hi)
}

/// Positions in `sorted` (all keys of the network, ascending, distinct) of the
/// peers a converged table of `local` holds: up to `k` random ones per
/// bucket, every bucket down to the deepest non-empty one. `local` itself is
/// never picked. Appends to `out`.
pub fn converged_peers(sorted: &[Key], local: &Key, k: usize, rng: &mut Rng, out: &mut Vec<usize>) {
    for cpl in 0..256 {
        // Nobody else shares this prefix: every deeper bucket is empty.
        if range_of(sorted, prefix_bounds(local, cpl, false)).len() <= 1 {
            break;
        }
        let bucket = range_of(sorted, prefix_bounds(local, cpl, true));
        let start = out.len();
        if bucket.len() <= k {
            out.extend(bucket);
            continue;
        }
        while out.len() - start < k {
            let pick = bucket.start + rng.below(bucket.len() as u64) as usize;
            if !out[start..].contains(&pick) {
                out.push(pick);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize, seed: u64) -> Vec<Key> {
        let mut rng = Rng::new(seed);
        let mut v: Vec<Key> = (0..n)
            .map(|_| {
                let mut b = [0u8; 32];
                for c in b.chunks_mut(8) {
                    c.copy_from_slice(&rng.next_u64().to_le_bytes());
                }
                Key::from_bytes(b)
            })
            .collect();
        v.sort();
        v
    }

    /// Every pick lands in the bucket it was drawn for, no bucket exceeds K,
    /// a bucket with at most K peers is taken whole, and nothing is missed:
    /// each (cpl) bucket gets min(K, peers in its range) entries.
    #[test]
    fn picks_are_k_per_bucket_from_the_right_range() {
        let sorted = keys(5000, 3);
        let k = 20;
        let mut rng = Rng::new(9);
        for &local in sorted.iter().step_by(397) {
            let mut out = Vec::new();
            converged_peers(&sorted, &local, k, &mut rng, &mut out);
            let mut per_bucket = std::collections::BTreeMap::<usize, usize>::new();
            for &i in &out {
                let cpl = local
                    .distance(&sorted[i])
                    .bucket()
                    .expect("never local itself")
                    .common_prefix_len();
                *per_bucket.entry(cpl).or_default() += 1;
            }
            let mut dedup = out.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), out.len(), "a peer picked twice");
            for cpl in 0..256 {
                let have = sorted
                    .iter()
                    .filter(|key| {
                        local
                            .distance(key)
                            .bucket()
                            .is_some_and(|b| b.common_prefix_len() == cpl)
                    })
                    .count();
                let got = per_bucket.get(&cpl).copied().unwrap_or(0);
                assert_eq!(got, have.min(k), "bucket {cpl}");
            }
        }
    }
}
