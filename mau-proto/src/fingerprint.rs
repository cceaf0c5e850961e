//! OpenPGP fingerprints: a peer's identity and its position in the keyspace.
//!
//! v4 fingerprints are 20 bytes (SHA-1), v6 fingerprints 32 bytes (SHA-256).
//! Both live in one 256-bit keyspace ([`Key`]): a v4 fingerprint is
//! left-aligned and padded with zero bytes on the right. Two v4 ids therefore
//! always differ within their first 160 bits, so a v4-only network uses exactly
//! 160 buckets (B = 160) as the Go implementation does, while v4 and v6 peers
//! can still share one table in a mixed network.

use std::fmt;
use std::str::FromStr;

use crate::distance::Key;

/// Length in bytes of a v4 fingerprint.
pub const V4_LEN: usize = 20;
/// Length in bytes of a v6 fingerprint.
pub const V6_LEN: usize = 32;

/// An OpenPGP v4 or v6 fingerprint.
///
/// Displayed as lowercase hex, the form the Go implementation puts on the wire.
#[derive(Clone, Copy, Eq, PartialOrd, Ord)]
pub enum Fingerprint {
    /// A 160-bit v4 fingerprint.
    V4([u8; V4_LEN]),
    /// A 256-bit v6 fingerprint.
    V6([u8; V6_LEN]),
}

/// Why a string or byte slice is not a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FingerprintError {
    /// Nothing but white space was given.
    #[error("empty fingerprint")]
    Empty,
    /// A character that is neither a hex digit nor white space.
    #[error("invalid character {found:?} at position {position} in fingerprint")]
    InvalidChar {
        /// The offending character.
        found: char,
        /// Its character index in the input.
        position: usize,
    },
    /// An odd number of hex digits.
    #[error("fingerprint has an odd number of hex digits ({0})")]
    OddLength(usize),
    /// Decoded length is neither 20 (v4) nor 32 (v6) bytes.
    #[error("fingerprint is {0} bytes long; expected 20 (v4) or 32 (v6)")]
    BadLength(usize),
}

impl Fingerprint {
    /// Longest accepted textual input: 64 hex digits plus one space between
    /// every pair of digits is far below this; anything longer is hostile.
    pub const MAX_TEXT_LEN: usize = 200;

    /// Builds a fingerprint from its raw bytes (20 or 32 of them).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, FingerprintError> {
        match bytes.len() {
            V4_LEN => {
                let mut b = [0u8; V4_LEN];
                b.copy_from_slice(bytes);
                Ok(Fingerprint::V4(b))
            }
            V6_LEN => {
                let mut b = [0u8; V6_LEN];
                b.copy_from_slice(bytes);
                Ok(Fingerprint::V6(b))
            }
            n => Err(FingerprintError::BadLength(n)),
        }
    }

    /// Parses hex, case-insensitively. White space between digits is tolerated
    /// (`gpg` prints fingerprints in groups of four).
    pub fn parse(text: &str) -> Result<Self, FingerprintError> {
        if text.len() > Self::MAX_TEXT_LEN {
            // Counted in hex digits would be misleading; report decoded size.
            return Err(FingerprintError::BadLength(text.len() / 2));
        }
        let mut buf = [0u8; V6_LEN];
        let mut digits = 0usize;
        for (position, c) in text.chars().enumerate() {
            if c.is_whitespace() {
                continue;
            }
            let v = c
                .to_digit(16)
                .ok_or(FingerprintError::InvalidChar { found: c, position })?;
            if digits / 2 >= V6_LEN {
                // Keep counting so the error names the real length.
                digits += 1;
                continue;
            }
            let byte = &mut buf[digits / 2];
            *byte = (*byte << 4) | v as u8;
            digits += 1;
        }
        if digits == 0 {
            return Err(FingerprintError::Empty);
        }
        if digits % 2 == 1 {
            return Err(FingerprintError::OddLength(digits));
        }
        let len = digits / 2;
        if len > V6_LEN {
            return Err(FingerprintError::BadLength(len));
        }
        Self::from_bytes(&buf[..len])
    }

    /// The raw fingerprint bytes (20 or 32).
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Fingerprint::V4(b) => b,
            Fingerprint::V6(b) => b,
        }
    }

    /// The OpenPGP key version this fingerprint belongs to (4 or 6).
    pub fn version(&self) -> u8 {
        match self {
            Fingerprint::V4(_) => 4,
            Fingerprint::V6(_) => 6,
        }
    }

    /// This fingerprint's position in the shared 256-bit keyspace.
    #[inline]
    pub fn key(&self) -> Key {
        let mut k = [0u8; 32];
        k[..self.as_bytes().len()].copy_from_slice(self.as_bytes());
        Key::from_bytes(k)
    }

    /// The first 64 bits of [`Self::key`] (both versions are longer), without
    /// building the key.
    #[inline]
    pub fn key_prefix(&self) -> u64 {
        crate::distance::be_word(self.as_bytes())
    }

    /// `self == other` without the call to `memcmp` the derived `==` makes
    /// (lookups compare fingerprints in their hot loop).
    #[inline]
    pub(crate) fn same(&self, other: &Fingerprint) -> bool {
        #[inline(always)]
        fn w16(b: &[u8]) -> u128 {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[..16]);
            u128::from_ne_bytes(a)
        }
        #[inline(always)]
        fn w4(b: &[u8]) -> u32 {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[..4]);
            u32::from_ne_bytes(a)
        }
        match (self, other) {
            (Fingerprint::V4(a), Fingerprint::V4(b)) => {
                w16(a) == w16(b) && w4(&a[16..]) == w4(&b[16..])
            }
            (Fingerprint::V6(a), Fingerprint::V6(b)) => {
                w16(a) == w16(b) && w16(&a[16..]) == w16(&b[16..])
            }
            _ => false,
        }
    }

    /// Lowercase hex, as on the wire.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

// Word-wise, not the derived byte-wise `memcmp` (~4% of a simulation):
// the same equality as the derived one, so `Ord` stays consistent with it.
impl PartialEq for Fingerprint {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}

// By hand since `PartialEq` is: the version and the bytes, as equality sees them.
impl std::hash::Hash for Fingerprint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.version().hash(state);
        self.as_bytes().hash(state);
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fingerprint::parse(s)
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Fingerprint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hex OpenPGP v4 or v6 fingerprint")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Fingerprint, E> {
                Fingerprint::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn parses_v4_any_case_and_spaces() {
        let a = Fingerprint::parse(V4).unwrap();
        let b = Fingerprint::parse(&V4.to_uppercase()).unwrap();
        let c = Fingerprint::parse("0123 4567 89AB CDEF 0123  4567 89ab cdef 0123 4567").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.version(), 4);
        assert_eq!(a.to_string(), V4);
    }

    #[test]
    fn parses_v6() {
        let s = "ab".repeat(32);
        let f = Fingerprint::parse(&s).unwrap();
        assert_eq!(f.version(), 6);
        assert_eq!(f.to_string(), s);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Fingerprint::parse(""), Err(FingerprintError::Empty));
        assert_eq!(Fingerprint::parse("   "), Err(FingerprintError::Empty));
        assert_eq!(
            Fingerprint::parse("abc"),
            Err(FingerprintError::OddLength(3))
        );
        assert_eq!(
            Fingerprint::parse("abcd"),
            Err(FingerprintError::BadLength(2))
        );
        assert_eq!(
            Fingerprint::parse(&"ab".repeat(33)),
            Err(FingerprintError::BadLength(33))
        );
        assert!(matches!(
            Fingerprint::parse("zz"),
            Err(FingerprintError::InvalidChar {
                found: 'z',
                position: 0
            })
        ));
        assert!(matches!(
            Fingerprint::parse(&"a".repeat(10_000)),
            Err(FingerprintError::BadLength(_))
        ));
        assert!(Fingerprint::parse("0x0123").is_err());
    }

    #[test]
    fn same_is_equality() {
        let a = Fingerprint::parse(V4).unwrap();
        let mut bytes = [0u8; 20];
        bytes.copy_from_slice(a.as_bytes());
        let six = Fingerprint::parse(&"ab".repeat(32)).unwrap();
        let mut fps = vec![a, six];
        for i in [0, 15, 16, 19] {
            let mut b = bytes;
            b[i] ^= 1;
            fps.push(Fingerprint::V4(b));
            let mut c = [0xab; 32];
            c[i + 12] ^= 0x80;
            fps.push(Fingerprint::V6(c));
        }
        for x in &fps {
            for y in &fps {
                let bytes_equal = x.version() == y.version() && x.as_bytes() == y.as_bytes();
                assert_eq!(x == y, bytes_equal, "{x:?} {y:?}");
                assert_eq!(x.same(y), bytes_equal, "{x:?} {y:?}");
            }
        }
    }

    #[test]
    fn v4_key_is_left_aligned() {
        let f = Fingerprint::parse(V4).unwrap();
        let k = f.key();
        assert_eq!(f.key_prefix(), k.prefix());
        assert_eq!(f.key_prefix(), 0x0123_4567_89ab_cdef);
        assert_eq!(&k.as_bytes()[..20], f.as_bytes());
        assert!(k.as_bytes()[20..].iter().all(|b| *b == 0));
    }

    #[test]
    fn serde_round_trip() {
        let f = Fingerprint::parse(V4).unwrap();
        let j = serde_json::to_string(&f).unwrap();
        assert_eq!(j, format!("\"{V4}\""));
        let g: Fingerprint = serde_json::from_str(&j.to_uppercase()).unwrap();
        assert_eq!(f, g);
        assert!(serde_json::from_str::<Fingerprint>("\"nothex\"").is_err());
    }
}
