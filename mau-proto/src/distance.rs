//! The XOR metric over the 256-bit keyspace.

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
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[i * 8..i * 8 + 8]);
        u64::from_be_bytes(b)
    }
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

    #[test]
    fn ordering_is_big_endian() {
        let zero = Key([0; 32]);
        let near = zero.distance(&key_with(31, 0xff));
        let far = zero.distance(&key_with(0, 1));
        assert!(near < far);
    }
}
