//! Wire types of the Kademlia RPCs, compatible with the Go implementation.
//!
//! - `GET /kad/ping` → 200, empty body.
//! - `GET /kad/find_peer/{fingerprint}` → 200, JSON array of at most K
//!   `{"fingerprint":"<lowercase hex>","address":"host:port"}`.
//!
//! Everything here treats its input as hostile: sizes are checked before
//! parsing, parsing stops after K records, and each field is validated.

use std::fmt;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::fingerprint::{Fingerprint, FingerprintError};
use crate::routing_table::Contact;

/// Path of the ping RPC.
pub const PING_PATH: &str = "/kad/ping";
/// Prefix of the find_peer RPC path.
pub const FIND_PEER_PREFIX: &str = "/kad/find_peer/";
/// Longest `host:port` accepted (a DNS name is at most 253 bytes).
pub const MAX_ADDRESS_LEN: usize = 253 + 1 + 5 + 2;
/// Largest find_peer body accepted for `k` records: generous per-record room
/// (fingerprint, address, field names, unknown fields) but bounded.
pub fn max_find_peer_body(k: usize) -> usize {
    k.max(1) * 1024 + 64
}

/// A peer record on the wire. Unknown fields are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerRecord {
    /// Lowercase hex fingerprint.
    pub fingerprint: Fingerprint,
    /// `host:port` the peer listens on.
    pub address: PeerAddress,
}

impl From<PeerRecord> for Contact<PeerAddress> {
    fn from(r: PeerRecord) -> Self {
        Contact::new(r.fingerprint, r.address)
    }
}

impl From<Contact<PeerAddress>> for PeerRecord {
    fn from(c: Contact<PeerAddress>) -> Self {
        PeerRecord {
            fingerprint: c.fingerprint,
            address: c.address,
        }
    }
}

/// A validated `host:port`: a DNS name, an IPv4 address or a bracketed IPv6
/// address, and a port in 1..=65535. Printable ASCII only, bounded length.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PeerAddress(String);

/// Why an input is not valid on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The address is not `host:port`.
    #[error("invalid peer address {0:?}: {1}")]
    Address(String, &'static str),
    /// A bad fingerprint.
    #[error("invalid fingerprint: {0}")]
    Fingerprint(#[from] FingerprintError),
    /// The body is larger than any valid answer.
    #[error("response body of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Bytes received.
        size: usize,
        /// Bytes allowed.
        limit: usize,
    },
    /// More records than K.
    #[error("response holds more than {0} peer records")]
    TooManyRecords(usize),
    /// Not the JSON we expect.
    #[error("malformed JSON: {0}")]
    Json(String),
    /// No such route.
    #[error("unknown path")]
    UnknownPath,
}

impl PeerAddress {
    /// Validates `s` as `host:port`.
    pub fn parse(s: &str) -> Result<Self, WireError> {
        let bad = |why| Err(WireError::Address(truncate(s), why));
        if s.is_empty() || s.len() > MAX_ADDRESS_LEN {
            return bad("length");
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return bad("not printable ASCII");
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return bad("no port");
        };
        match port.parse::<u16>() {
            Ok(p) if p > 0 && !port.starts_with('+') => {}
            _ => return bad("port not in 1..=65535"),
        }
        if let Some(inner) = host.strip_prefix('[') {
            let Some(v6) = inner.strip_suffix(']') else {
                return bad("unclosed bracket");
            };
            if v6.parse::<core::net::Ipv6Addr>().is_err() {
                return bad("bad IPv6 address");
            }
        } else {
            if host.is_empty() || host.len() > 253 {
                return bad("host length");
            }
            let ok = host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
            if !ok {
                return bad("host has characters a DNS name or IPv4 address cannot");
            }
        }
        Ok(PeerAddress(s.to_owned()))
    }

    /// The `host:port` text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part (brackets of an IPv6 address removed).
    pub fn host(&self) -> &str {
        let host = self.0.rsplit_once(':').map_or("", |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.0
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or(0)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PeerAddress {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PeerAddress::parse(s)
    }
}

impl From<core::net::SocketAddr> for PeerAddress {
    fn from(a: core::net::SocketAddr) -> Self {
        PeerAddress(a.to_string())
    }
}

impl<'de> Deserialize<'de> for PeerAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: std::borrow::Cow<'de, str> = Deserialize::deserialize(d)?;
        PeerAddress::parse(&s).map_err(de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for PeerRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PeerRecord;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a peer record {\"fingerprint\",\"address\"}")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<PeerRecord, M::Error> {
                let mut fingerprint = None;
                let mut address = None;
                while let Some(key) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "fingerprint" if fingerprint.is_none() => {
                            fingerprint = Some(m.next_value()?)
                        }
                        "address" if address.is_none() => address = Some(m.next_value()?),
                        "fingerprint" | "address" => {
                            return Err(de::Error::custom(format!("duplicate field {key}")))
                        }
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(PeerRecord {
                    fingerprint: fingerprint
                        .ok_or_else(|| de::Error::missing_field("fingerprint"))?,
                    address: address.ok_or_else(|| de::Error::missing_field("address"))?,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// A decoded find_peer answer: the usable records, and how many were not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FindPeerAnswer {
    /// Records with a valid fingerprint and `host:port` address, in order.
    pub records: Vec<PeerRecord>,
    /// Array elements skipped as unusable (not an object, a missing or
    /// duplicate field, a bad fingerprint, an address that is not
    /// `host:port`).
    pub skipped: usize,
    /// Why the first skipped element was unusable, for a log line.
    pub first_skip: Option<String>,
}

/// Decodes a find_peer answer: at most `k` records, the body at most
/// [`max_find_peer_body`]`(k)` bytes. Unusable records are skipped (see
/// [`decode_find_peer_answer`] for how many and why).
pub fn decode_find_peer(body: &[u8], k: usize) -> Result<Vec<PeerRecord>, WireError> {
    decode_find_peer_answer(body, k).map(|a| a.records)
}

/// Decodes a find_peer answer and counts the records it skipped.
///
/// The Go peer hands out whatever a caller put first in its certificate's
/// DNS names (a bare fingerprint, an empty string, a name without a port),
/// so one unusable record must not void the answer: it is skipped and the
/// rest are used. The answer as a whole must still be a JSON array (or
/// `null`) of at most `k` elements in a body of at most
/// [`max_find_peer_body`]`(k)` bytes; reading stops at element `k + 1`, so a
/// hostile answer cannot make us allocate more than K records.
pub fn decode_find_peer_answer(body: &[u8], k: usize) -> Result<FindPeerAnswer, WireError> {
    let limit = max_find_peer_body(k);
    if body.len() > limit {
        return Err(WireError::TooLarge {
            size: body.len(),
            limit,
        });
    }
    struct Bounded(usize);
    impl<'de> de::DeserializeSeed<'de> for Bounded {
        type Value = FindPeerAnswer;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Bounded {
        type Value = FindPeerAnswer;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of at most {} peer records", self.0)
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<Self::Value, S::Error> {
            let mut out = FindPeerAnswer {
                records: Vec::with_capacity(self.0.min(64)),
                ..FindPeerAnswer::default()
            };
            let mut seen = 0;
            while let Some(r) = s.next_element::<MaybeRecord>()? {
                if seen == self.0 {
                    return Err(de::Error::custom(TOO_MANY));
                }
                seen += 1;
                match r.0 {
                    Ok(r) => out.records.push(r),
                    Err(why) => {
                        out.skipped += 1;
                        out.first_skip.get_or_insert(why);
                    }
                }
            }
            Ok(out)
        }
        // Go encodes an empty slice as `null` when nil: accept it as empty.
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(FindPeerAnswer::default())
        }
    }
    const TOO_MANY: &str = "too many peer records";
    let mut de = serde_json::Deserializer::from_slice(body);
    de::DeserializeSeed::deserialize(Bounded(k), &mut de)
        .and_then(|v| de.end().map(|_| v))
        .map_err(|e| {
            if e.to_string().starts_with(TOO_MANY) {
                WireError::TooManyRecords(k)
            } else {
                WireError::Json(e.to_string())
            }
        })
}

/// One element of a find_peer array: a record, or why it is unusable. Any
/// JSON value deserializes into it; only a malformed document fails.
struct MaybeRecord(Result<PeerRecord, String>);

impl<'de> Deserialize<'de> for MaybeRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        fn skip<E>(why: impl Into<String>) -> Result<MaybeRecord, E> {
            Ok(MaybeRecord(Err(why.into())))
        }
        impl<'de> Visitor<'de> for V {
            type Value = MaybeRecord;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<MaybeRecord, M::Error> {
                let (mut fingerprint, mut address) = (None, None);
                let mut problem = None;
                while let Some(key) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "fingerprint" => &mut fingerprint,
                        "address" => &mut address,
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    let value = m.next_value::<MaybeText>()?.0;
                    if slot.is_some() {
                        problem.get_or_insert_with(|| format!("duplicate field {key}"));
                    }
                    *slot = Some(value);
                }
                if let Some(p) = problem {
                    return skip(p);
                }
                let (Some(fingerprint), Some(address)) = (fingerprint, address) else {
                    return skip("missing field");
                };
                let (Some(fingerprint), Some(address)) = (fingerprint, address) else {
                    return skip("a field is not a string");
                };
                let fingerprint = match Fingerprint::parse(&fingerprint) {
                    Ok(f) => f,
                    Err(e) => return skip(WireError::from(e).to_string()),
                };
                match PeerAddress::parse(&address) {
                    Ok(address) => Ok(MaybeRecord(Ok(PeerRecord {
                        fingerprint,
                        address,
                    }))),
                    Err(e) => skip(e.to_string()),
                }
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut s: S) -> Result<MaybeRecord, S::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                skip("an array, not a record")
            }
            fn visit_bool<E>(self, _: bool) -> Result<MaybeRecord, E> {
                skip("not a record")
            }
            fn visit_i64<E>(self, _: i64) -> Result<MaybeRecord, E> {
                skip("not a record")
            }
            fn visit_u64<E>(self, _: u64) -> Result<MaybeRecord, E> {
                skip("not a record")
            }
            fn visit_f64<E>(self, _: f64) -> Result<MaybeRecord, E> {
                skip("not a record")
            }
            fn visit_str<E>(self, _: &str) -> Result<MaybeRecord, E> {
                skip("not a record")
            }
            fn visit_unit<E>(self) -> Result<MaybeRecord, E> {
                skip("null, not a record")
            }
        }
        d.deserialize_any(V)
    }
}

/// A field value: its text if it is a JSON string, `None` for anything else.
struct MaybeText(Option<String>);

impl<'de> Deserialize<'de> for MaybeText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        Ok(MaybeText(match v {
            serde_json::Value::String(s) => Some(s),
            _ => None,
        }))
    }
}

/// Encodes a find_peer answer.
pub fn encode_find_peer(records: &[PeerRecord]) -> Vec<u8> {
    // Serializing owned, validated strings into a Vec cannot fail.
    serde_json::to_vec(records).unwrap_or_else(|_| b"[]".to_vec())
}

/// A Kademlia route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KadRoute {
    /// `/kad/ping`
    Ping,
    /// `/kad/find_peer/{fingerprint}`
    FindPeer(Fingerprint),
}

/// Parses a request path (query string ignored). Fingerprints in either case.
/// `Err(UnknownPath)` for paths that are not Kademlia routes;
/// `Err(Fingerprint(_))` for a find_peer path with a bad fingerprint.
pub fn parse_kad_path(path: &str) -> Result<KadRoute, WireError> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    if path == PING_PATH {
        return Ok(KadRoute::Ping);
    }
    if let Some(fp) = path.strip_prefix(FIND_PEER_PREFIX) {
        // Spaces are fine in `Fingerprint::parse`, but not in a URL path.
        if fp.bytes().any(|b| !b.is_ascii_hexdigit()) {
            return Err(WireError::Fingerprint(
                match fp.chars().position(|c| !c.is_ascii_hexdigit()) {
                    Some(position) if fp.len() <= Fingerprint::MAX_TEXT_LEN => {
                        FingerprintError::InvalidChar {
                            found: fp.chars().nth(position).unwrap_or('?'),
                            position,
                        }
                    }
                    _ => FingerprintError::BadLength(fp.len() / 2),
                },
            ));
        }
        return Ok(KadRoute::FindPeer(Fingerprint::parse(fp)?));
    }
    Err(WireError::UnknownPath)
}

/// The path for a request to find `target`.
pub fn find_peer_path(target: &Fingerprint) -> String {
    format!("{FIND_PEER_PREFIX}{target}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn decodes_go_answer_and_ignores_unknown_fields() {
        let body = format!(
            r#"[{{"fingerprint":"{}","address":"10.0.0.1:8080","extra":[1,{{}}]}}]"#,
            FP.to_uppercase()
        );
        let r = decode_find_peer(body.as_bytes(), 20).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].fingerprint.to_string(), FP);
        assert_eq!(r[0].address.as_str(), "10.0.0.1:8080");
        assert_eq!(decode_find_peer(b"null", 20).unwrap(), vec![]);
        assert_eq!(decode_find_peer(b" [] ", 20).unwrap(), vec![]);
    }

    #[test]
    fn round_trip() {
        let recs = vec![PeerRecord {
            fingerprint: FP.parse().unwrap(),
            address: PeerAddress::parse("[::1]:443").unwrap(),
        }];
        let body = encode_find_peer(&recs);
        assert_eq!(
            String::from_utf8_lossy(&body),
            format!(r#"[{{"fingerprint":"{FP}","address":"[::1]:443"}}]"#)
        );
        assert_eq!(decode_find_peer(&body, 20).unwrap(), recs);
    }

    #[test]
    fn rejects_hostile_answers() {
        let rec = format!(r#"{{"fingerprint":"{FP}","address":"a:1"}}"#);
        let three = format!("[{rec},{rec},{rec}]");
        assert_eq!(
            decode_find_peer(three.as_bytes(), 2),
            Err(WireError::TooManyRecords(2))
        );
        let huge = vec![b' '; max_find_peer_body(20) + 1];
        assert!(matches!(
            decode_find_peer(&huge, 20),
            Err(WireError::TooLarge { .. })
        ));
        // Not a find_peer answer at all: the whole answer is bad.
        for bad in [
            "{}".to_string(),
            "\"x\"".into(),
            "7".into(),
            "not json".into(),
            "".into(),
            format!("[{rec}] trailing"),
            format!("[{rec},"),
            "[".repeat(500),
        ] {
            assert!(decode_find_peer(bad.as_bytes(), 20).is_err(), "{bad}");
        }
        // Elements that are not usable records are skipped, not fatal.
        for bad in [
            "1".to_string(),
            "null".into(),
            "[]".into(),
            r#"{"fingerprint":"zz","address":"a:1"}"#.into(),
            format!(r#"{{"fingerprint":"{FP}"}}"#),
            format!(r#"{{"fingerprint":"{FP}","address":7}}"#),
            format!(r#"{{"fingerprint":"{FP}","address":"a b:1"}}"#),
            format!(r#"{{"fingerprint":"{FP}","address":"a:99999"}}"#),
            format!(r#"{{"fingerprint":"{FP}","fingerprint":"{FP}","address":"a:1"}}"#),
        ] {
            let body = format!("[{bad},{rec}]");
            let a = decode_find_peer_answer(body.as_bytes(), 20).expect(&body);
            assert_eq!((a.records.len(), a.skipped), (1, 1), "{body}");
            assert!(a.first_skip.is_some(), "{body}");
        }
        // Skipped elements still count against K.
        let bad = r#"{"fingerprint":"zz","address":"a:1"}"#;
        assert_eq!(
            decode_find_peer(format!("[{bad},{bad},{rec}]").as_bytes(), 2),
            Err(WireError::TooManyRecords(2))
        );
    }

    /// Regression (issue 14): the Go peer stores a caller's address as the
    /// first DNS name of its certificate, whatever it is, and hands it out.
    /// One such record used to void the whole answer (and count as a failed
    /// RPC, so the Go node was evicted after two).
    #[test]
    fn go_answer_with_unusable_addresses_keeps_the_usable_records() {
        let other = "89abcdef0123456789abcdef0123456789abcdef";
        let body = format!(
            r#"[{{"fingerprint":"{FP}","address":"{FP}"}},
                {{"fingerprint":"{FP}","address":""}},
                {{"fingerprint":"{FP}","address":"peer.example.org"}},
                {{"fingerprint":"not-hex","address":"10.0.0.2:8080"}},
                {{"fingerprint":"{other}","address":"10.0.0.3:8080"}}]"#
        );
        let records = decode_find_peer(body.as_bytes(), 20).expect("usable answer");
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].fingerprint.to_string(), other);
        assert_eq!(records[0].address.as_str(), "10.0.0.3:8080");
        let a = decode_find_peer_answer(body.as_bytes(), 20).expect("usable answer");
        assert_eq!((a.records, a.skipped), (records, 4));
        assert!(
            a.first_skip
                .as_deref()
                .is_some_and(|w| w.contains("no port")),
            "{:?}",
            a.first_skip
        );
    }

    #[test]
    fn addresses() {
        for ok in [
            "127.0.0.1:1",
            "example.org:8080",
            "[::1]:65535",
            "my_host-1:22",
        ] {
            assert!(PeerAddress::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:65536",
            ":80",
            "[::1:80",
            "[zz]:1",
            "a/b:1",
            "a:+1",
            &format!("{}:1", "a".repeat(300)),
        ] {
            assert!(PeerAddress::parse(bad).is_err(), "{bad}");
        }
        let a = PeerAddress::parse("[::1]:443").unwrap();
        assert_eq!((a.host(), a.port()), ("::1", 443));
    }

    #[test]
    fn paths() {
        assert_eq!(parse_kad_path("/kad/ping"), Ok(KadRoute::Ping));
        assert_eq!(parse_kad_path("/kad/ping?x=1"), Ok(KadRoute::Ping));
        let up = format!("/kad/find_peer/{}", FP.to_uppercase());
        assert_eq!(
            parse_kad_path(&up),
            Ok(KadRoute::FindPeer(FP.parse().unwrap()))
        );
        assert_eq!(parse_kad_path("/kad/nope"), Err(WireError::UnknownPath));
        assert!(matches!(
            parse_kad_path("/kad/find_peer/xyz"),
            Err(WireError::Fingerprint(_))
        ));
        assert!(matches!(
            parse_kad_path("/kad/find_peer/ab%20cd"),
            Err(WireError::Fingerprint(_))
        ));
        assert!(matches!(
            parse_kad_path("/kad/find_peer/"),
            Err(WireError::Fingerprint(_))
        ));
        let fp: Fingerprint = FP.parse().unwrap();
        assert_eq!(
            parse_kad_path(&find_peer_path(&fp)),
            Ok(KadRoute::FindPeer(fp))
        );
    }
}
