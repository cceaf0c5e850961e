//! The XOR metric over the 256-bit keyspace.

use std::cmp::Ordering;
use std::fmt;

/// Number of bits in the keyspace (v6 fingerprints fill it; v4 use the top 160).
pub const KEY_BITS: usize = 256;

/// A position in the 256-bit keyspace (see [`crate::Fingerprint::key`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

/// The XOR distance between two keys, ordered as a 256-bit big-endian integer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Distance([u8; 32]);

impl Distance {
    /// The `i`th 64-bit word (`i < 4`), most significant first.
    #[inline(always)]
    fn word(&self, i: usize) -> u64 {
        be_word(&self.0[i * 8..])
    }
}

/// The first 8 bytes of `bytes` (at least 8) as a big-endian word.
#[inline(always)]
pub(crate) fn be_word(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(b)
}

// Same order as the derived byte-wise one (big-endian bytes compare like the
// integer), but word-wise and inlined: the derived one calls memcmp, which
// took a third of the simulator's time (lookup candidate binary searches and
// closest() sorts).
impl Ord for Distance {
    #[inline]
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Distances between random ids nearly always differ in the first word.
        for i in 0..4 {
            let (a, b) = (self.word(i), other.word(i));
            if a != b {
                return a.cmp(&b);
            }
        }
        std::cmp::Ordering::Equal
    }
}

impl PartialOrd for Distance {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Key {
    /// Wraps 32 raw bytes (most significant first).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// The raw bytes, most significant first.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 64 bits, most significant first (see [`sort_by_distance_prefix`]).
    #[inline]
    pub fn prefix(&self) -> u64 {
        be_word(&self.0)
    }

    /// XOR distance to `other`.
    #[inline]
    pub fn distance(&self, other: &Key) -> Distance {
        // Word by word: the byte loop was not vectorised and showed in profiles.
        let mut d = [0u8; 32];
        for ((out, a), b) in d
            .chunks_exact_mut(8)
            .zip(self.0.chunks_exact(8))
            .zip(other.0.chunks_exact(8))
        {
            let mut x = [0u8; 8];
            let mut y = [0u8; 8];
            x.copy_from_slice(a);
            y.copy_from_slice(b);
            out.copy_from_slice(&(u64::from_ne_bytes(x) ^ u64::from_ne_bytes(y)).to_ne_bytes());
        }
        Distance(d)
    }

    /// The key whose distance from `self` is `d` (XOR is its own inverse).
    pub fn offset(&self, d: &Distance) -> Key {
        Key(self.distance(&Key(d.0)).0)
    }
}

impl Distance {
    /// The raw bytes, most significant first.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Number of leading zero bits (256 for distance zero).
    #[inline]
    pub fn leading_zeros(&self) -> u32 {
        let mut n = 0;
        for chunk in self.0.chunks_exact(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(chunk);
            let v = u64::from_be_bytes(w);
            if v != 0 {
                return n + v.leading_zeros();
            }
            n += 64;
        }
        n
    }

    /// The bucket this distance falls in: `i` with `2^i <= d < 2^(i+1)`,
    /// or `None` for distance zero (the node itself).
    ///
    /// Between two v4 ids the index is in `96..=255`: 160 buckets, B = 160.
    #[inline]
    pub fn bucket(&self) -> Option<BucketIndex> {
        let lz = self.leading_zeros();
        (lz < KEY_BITS as u32).then(|| BucketIndex((KEY_BITS as u32 - 1 - lz) as u8))
    }
}

/// Sorts `items` nearest first by XOR distance to one target, each given
/// with the first 64 bits of its distance (its key's [`Key::prefix`] XOR the
/// target's); `full` orders items whose 64 bits tie by their whole distances.
///
/// Exact: the first bit where two distances to one target differ is the
/// first bit where the two keys differ, so keys whose prefixes differ are
/// ordered by the prefixes alone; keys alike in all 64 bits (a collision,
/// or keys crafted that way) are left to `full`, never guessed. Distinct
/// keys have distinct distances, so the order is the same whatever path the
/// sort takes.
pub fn sort_by_distance_prefix<E>(items: &mut [(u64, E)], full: impl Fn(&E, &E) -> Ordering) {
    // One word per comparison in the main sort: a comparator that may look
    // into a fingerprint store was 7% of a simulation's instructions.
    items.sort_unstable_by_key(|i| i.0);
    for run in items.chunk_by_mut(|a, b| a.0 == b.0) {
        if run.len() > 1 {
            run.sort_unstable_by(|a, b| full(&a.1, &b.1));
        }
    }
}

/// Index of a k-bucket: bucket `i` holds peers at XOR distance `[2^i, 2^(i+1))`.
///
/// 255 is the farthest bucket (half the keyspace); lower is closer. The Go
/// implementation numbers buckets the other way round, by common prefix length:
/// [`BucketIndex::common_prefix_len`] gives that number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct BucketIndex(pub u8);

impl BucketIndex {
    /// Bits shared with the local id before the first difference (the Go index:
    /// 0 is farthest).
    pub fn common_prefix_len(&self) -> usize {
        KEY_BITS - 1 - self.0 as usize
    }

    /// From a common prefix length (`0..256`).
    pub fn from_common_prefix_len(cpl: usize) -> Option<Self> {
        (cpl < KEY_BITS).then(|| BucketIndex((KEY_BITS - 1 - cpl) as u8))
    }

    /// A distance inside this bucket's range, uniformly drawn from `random` bytes.
    pub fn random_distance(&self, mut random: [u8; 32]) -> Distance {
        let i = self.0 as usize;
        // Big-endian: bit i counted from the least significant end.
        let byte = 31 - i / 8;
        let bit = i % 8;
        for b in random.iter_mut().take(byte) {
            *b = 0;
        }
        let keep = ((1u16 << bit) - 1) as u8;
        random[byte] = (random[byte] & keep) | (1 << bit);
        Distance(random)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

impl fmt::Debug for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Distance(lz={})", self.leading_zeros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_with(byte: usize, v: u8) -> Key {
        let mut k = [0u8; 32];
        k[byte] = v;
        Key(k)
    }

    #[test]
    fn order_is_byte_wise_big_endian() {
        let mut rng = crate::Rng::new(3);
        let mut ds: Vec<Distance> = (0..200)
            .map(|i| {
                let mut b = rng.bytes32();
                // Many equal prefixes, so later words decide too.
                for x in b.iter_mut().take(i % 32) {
                    *x = 0;
                }
                Distance(b)
            })
            .collect();
        ds.push(Distance([0; 32]));
        ds.push(Distance([0xff; 32]));
        for a in &ds {
            for b in &ds {
                assert_eq!(a.cmp(b), a.0.cmp(&b.0));
                assert_eq!(a.partial_cmp(b), Some(a.0.cmp(&b.0)));
            }
        }
    }

    #[test]
    fn bucket_ranges() {
        let zero = Key([0; 32]);
        assert_eq!(zero.distance(&zero).bucket(), None);
        assert_eq!(
            zero.distance(&key_with(31, 1)).bucket(),
            Some(BucketIndex(0))
        );
        assert_eq!(
            zero.distance(&key_with(31, 3)).bucket(),
            Some(BucketIndex(1))
        );
        assert_eq!(
            zero.distance(&key_with(0, 0x80)).bucket(),
            Some(BucketIndex(255))
        );
        // v4 ids differ within the first 20 bytes: lowest bucket is 96.
        assert_eq!(
            zero.distance(&key_with(19, 1)).bucket(),
            Some(BucketIndex(96))
        );
        assert_eq!(BucketIndex(255).common_prefix_len(), 0);
        assert_eq!(BucketIndex(96).common_prefix_len(), 159);
    }

    #[test]
    fn random_distance_lands_in_bucket() {
        for i in 0..=255u8 {
            for fill in [0x00u8, 0xff, 0x5a] {
                let d = BucketIndex(i).random_distance([fill; 32]);
                assert_eq!(d.bucket(), Some(BucketIndex(i)), "bucket {i} fill {fill}");
            }
        }
    }

    /// Random keys, three in four alike in their first 7 to 9 bytes, so
    /// that prefixes tie often.
    fn keys_sharing(rng: &mut crate::Rng, n: usize) -> Vec<Key> {
        (0..n)
            .map(|i| {
                let mut b = rng.bytes32();
                for x in b.iter_mut().take([0, 7, 8, 9][i % 4]) {
                    *x = 0x5a;
                }
                Key(b)
            })
            .collect()
    }

    /// True if sorting `keys` by [`sort_by_distance_prefix`] with `tie`
    /// gives the brute-force order by distance, for every target.
    fn sorts_like_distance(
        keys: &[Key],
        targets: &[Key],
        tie: impl Fn(&Key, &Key, &Key) -> Ordering,
    ) -> bool {
        targets.iter().all(|t| {
            let mut want = keys.to_vec();
            want.sort_by_key(|k| k.distance(t));
            // Given in reverse, so an unsorted tie cannot pass by chance.
            let mut got: Vec<(u64, Key)> = want
                .iter()
                .rev()
                .map(|k| (k.prefix() ^ t.prefix(), *k))
                .collect();
            sort_by_distance_prefix(&mut got, |a, b| tie(t, a, b));
            got.iter().map(|(_, k)| *k).eq(want)
        })
    }

    #[test]
    fn prefix_order_is_distance_order() {
        let mut rng = crate::Rng::new(11);
        let keys = keys_sharing(&mut rng, 64);
        let mut targets = keys_sharing(&mut rng, 8);
        targets.push(keys[3]);
        let exact = |t: &Key, a: &Key, b: &Key| a.distance(t).cmp(&b.distance(t));
        assert!(sorts_like_distance(&keys, &targets, exact));
        // Prefixes alone are not enough: the data has ties they get wrong.
        assert!(!sorts_like_distance(&keys, &targets, |_, _, _| {
            Ordering::Equal
        }));
        // Nor is a tie broken by anything but the distance (here: the keys).
        assert!(!sorts_like_distance(&keys, &targets, |_, a, b| a.cmp(b)));
    }

    /// Three keys alike in their first 64 bits, and the target with them:
    /// only the whole keys order them.
    #[test]
    fn ties_of_prefixes_are_ordered_by_whole_keys() {
        let key = |last: u8| {
            let mut b = [0x42u8; 32];
            b[31] = last;
            Key(b)
        };
        let target = key(0b000);
        let sorted = |tie: &dyn Fn(&Key, &Key) -> Ordering| {
            let mut g: Vec<(u64, Key)> = [key(0b100), key(0b001), key(0b010)]
                .iter()
                .map(|k| (k.prefix() ^ target.prefix(), *k))
                .collect();
            sort_by_distance_prefix(&mut g, tie);
            g.into_iter().map(|(_, k)| k).collect::<Vec<_>>()
        };
        let want = [key(0b001), key(0b010), key(0b100)];
        let by_distance = |a: &Key, b: &Key| a.distance(&target).cmp(&b.distance(&target));
        assert_eq!(sorted(&by_distance), want);
        assert_ne!(sorted(&|_: &Key, _: &Key| Ordering::Equal), want);
        assert_ne!(sorted(&|a: &Key, b: &Key| b.cmp(a)), want);
    }

    #[test]
    fn prefix_is_first_word() {
        let mut b = [0u8; 32];
        b[0] = 0x12;
        b[7] = 0x34;
        b[8] = 0xff;
        assert_eq!(Key(b).prefix(), 0x1200_0000_0000_0034);
    }

    #[test]
    fn ordering_is_big_endian() {
        let zero = Key([0; 32]);
        let near = zero.distance(&key_with(31, 0xff));
        let far = zero.distance(&key_with(0, 1));
        assert!(near < far);
    }
}
