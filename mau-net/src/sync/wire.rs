//! The `/p2p/` wire format as both ends read it: the content server's
//! parsers of a request and this client's parsers of a friend's answers
//! (public for the fuzz targets in `fuzz/` and for other clients).

pub use crate::content::{
    list_query, listed_path, next_link_header, parse_range, parse_route, percent_decode,
    percent_encode, ListItem, RangeAsk, Route, DEFAULT_PAGE, LISTING_END, MAX_PAGE,
};
use mau_proto::Fingerprint;
use std::time::{Duration, SystemTime};

/// Most entries a Go server puts in a listing (its `serverResultLimit`):
/// it cuts the oldest 100 files (then drops those not shared with the
/// caller) and has no next-page link.
pub const GO_PAGE: usize = 100;

/// A listing page's body (the client reads at most 16 MiB of it).
pub fn parse_listing(body: &[u8]) -> Result<Vec<ListItem>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// The file name in a listed path `/p2p/<fpr>/<name>` (percent-decoded if
/// encoded), if it is a valid content name of that friend.
pub fn item_name(fpr: &Fingerprint, path: &str) -> Option<String> {
    let rest = path.strip_prefix("/p2p/")?;
    let (f, name) = rest.split_once('/')?;
    if Fingerprint::parse(f).ok()? != *fpr {
        return None;
    }
    let name = if name.contains('%') {
        percent_decode(name)?
    } else {
        name.to_string()
    };
    mau_store::validate_name(&name).ok()?;
    name.ends_with(mau_store::PGP_SUFFIX).then_some(name)
}

/// The target of a `rel="next"` link.
pub fn next_link(v: &str) -> Option<String> {
    v.split(',').find_map(|part| {
        let part = part.trim();
        let (target, params) = part.strip_prefix('<')?.split_once('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_string())
    })
}

/// The wait a `Retry-After` value asks for, read at `now`: delay-seconds
/// (digits only; more than fit in a `u64` is [`Duration::MAX`]) or an
/// HTTP-date (one already past: zero). `None` if it is neither (empty,
/// negative, fractional, garbage). The caller caps it.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(v.parse().map_or(Duration::MAX, Duration::from_secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `bytes START-END/SIZE` → START.
pub fn content_range_start(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn links_and_names() {
        assert_eq!(
            next_link("</p2p/ab?after=1-61&limit=5>; rel=\"next\"").as_deref(),
            Some("/p2p/ab?after=1-61&limit=5")
        );
        assert_eq!(next_link("</x>; rel=\"prev\""), None);
        assert_eq!(content_range_start("bytes 10-99/100"), Some(10));
        let f = Fingerprint::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
        let p = |s: &str| item_name(&f, &format!("/p2p/{f}/{s}"));
        assert_eq!(p("a.pgp").as_deref(), Some("a.pgp"));
        assert_eq!(p("a%20b.pgp").as_deref(), Some("a b.pgp"));
        assert_eq!(p("a b.pgp").as_deref(), Some("a b.pgp"));
        assert_eq!(p("..%2Fx.pgp"), None);
        assert_eq!(p("x/y.pgp"), None);
        assert_eq!(p("x.txt"), None);
        // Control characters, raw or encoded (issue 16).
        assert_eq!(p("x\ny.pgp"), None);
        assert_eq!(p("x%0Ay.pgp"), None);
        assert_eq!(p("x%1B[2Jy.pgp"), None);
        assert_eq!(p("x%7Fy.pgp"), None);
        assert_eq!(
            item_name(&f, "/p2p/0000000000000000000000000000000000000000/a.pgp"),
            None
        );
    }

    #[test]
    fn retry_after_values() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let p = |v: &str| parse_retry_after(v, now);
        assert_eq!(p("3"), Some(Duration::from_secs(3)));
        assert_eq!(p(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(p("0"), Some(Duration::ZERO));
        assert_eq!(p("86400"), Some(Duration::from_secs(86_400)));
        assert_eq!(p("99999999999999999999999999"), Some(Duration::MAX));
        let in_10s = httpdate::fmt_http_date(now + Duration::from_secs(10));
        assert_eq!(p(&in_10s), Some(Duration::from_secs(10)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(p(&past), Some(Duration::ZERO));
        for garbage in [
            "", " ", "soon", "-1", "1.5", "1e3", "+5", "3 s", "0x10", "\u{0}",
        ] {
            assert_eq!(p(garbage), None, "{garbage:?}");
        }
    }
}
