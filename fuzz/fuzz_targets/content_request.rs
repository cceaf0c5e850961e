//! The content server's request parsers (`/p2p/...` path, `?limit=&after=`
//! query, `Range` header) on arbitrary text never panic, and agree with the
//! sync client:
//!
//! - an accepted file or version name is a single safe path component
//!   (`validate_name`), the route the client builds for it (percent-encoded)
//!   parses back to the same route, and the listing entry the server writes
//!   for it gives the client back the same name;
//! - `percent_decode` accepts only `%XX` escapes and inverts `percent_encode`;
//! - an accepted query has 1 ≤ limit ≤ `MAX_PAGE`; its cursor is
//!   `<digits>-<hex>` and survives the server's `Link` header → the client's
//!   `next_link` → the server's query parser;
//! - an accepted range lies inside the file and its `Content-Range` gives the
//!   client the same start.
//!
//! Input: lines `path`, `query`, `Range` value, file size.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use mau_net::sync::wire::{
    content_range_start, item_name, list_query, listed_path, next_link, next_link_header,
    parse_range, parse_route, percent_decode, percent_encode, RangeAsk, Route, MAX_PAGE,
};
use mau_proto::Fingerprint;

/// What the store relies on for a name it joins to a directory.
fn check_name(n: &str) {
    assert!(mau_store::validate_name(n).is_ok(), "{n:?}");
    assert!(n.len() <= mau_store::MAX_NAME_LEN);
    assert!(
        !n.starts_with('.') && !n.contains(['/', '\\', '\0']),
        "{n:?}"
    );
    let comps: Vec<_> = Path::new(n).components().collect();
    assert_eq!(comps, [Component::Normal(n.as_ref())], "{n:?}");
}

fn check_route(path: &str) {
    match parse_route(path) {
        Err(_) => {}
        Ok(Route::List(f)) => {
            assert_eq!(parse_route(&format!("/p2p/{f}")), Ok(Route::List(f)));
        }
        Ok(Route::File(f, n)) => {
            check_name(&n);
            // The path the sync client requests for this name.
            let asked = format!("/p2p/{f}/{}", percent_encode(&n));
            assert_eq!(parse_route(&asked), Ok(Route::File(f, n.clone())));
            if n.ends_with(mau_store::PGP_SUFFIX) {
                assert_eq!(item_name(&f, &asked).as_deref(), Some(n.as_str()));
                // The listing entry the server writes for it.
                let listed = listed_path(&f, &n);
                assert_eq!(
                    item_name(&f, &listed).as_deref(),
                    Some(n.as_str()),
                    "listed as {listed:?}"
                );
            }
        }
        Ok(Route::Version(f, n, sum)) => {
            check_name(&n);
            assert!(mau_store::is_sum(&sum));
            let asked = format!("/p2p/{f}/{}.version/{sum}", percent_encode(&n));
            assert_eq!(parse_route(&asked), Ok(Route::Version(f, n, sum)));
        }
    }
}

fn check_percent(s: &str) {
    let Some(d) = percent_decode(s) else {
        return;
    };
    let b = s.as_bytes();
    for (i, _) in s.match_indices('%') {
        assert!(
            i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit(),
            "accepted a malformed escape in {s:?}"
        );
    }
    let e = percent_encode(&d);
    assert!(e
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"-._~%".contains(&c)));
    assert_eq!(percent_decode(&e).as_deref(), Some(d.as_str()));
}

fn check_query(q: &str, fpr: &Fingerprint) {
    let Ok((limit, cursor)) = list_query(Some(q)) else {
        return;
    };
    assert!((1..=MAX_PAGE).contains(&limit));
    let Some(c) = cursor else {
        return;
    };
    // The raw value (the first `after`, as the server reads it) is <digits>-<hex>.
    let raw = q
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .expect("a cursor came from an after= value");
    let (t, h) = raw.split_once('-').expect("cursor has a dash");
    assert!(
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()),
        "cursor time {t:?}"
    );
    assert!(
        h.bytes().all(|b| b.is_ascii_hexdigit()),
        "cursor name {h:?}"
    );
    assert!(c.name.len() <= mau_store::MAX_NAME_LEN);
    assert_eq!(mau_store::Cursor::decode(&c.encode()).as_ref(), Some(&c));
    // Server's Link header → client's next_link → server's query parser.
    let header = next_link_header(fpr, &c, limit);
    let target = next_link(&header).expect("our own Link header");
    let rest = target
        .strip_prefix(&format!("/p2p/{fpr}?"))
        .expect("the client follows only links of this listing");
    assert_eq!(list_query(Some(rest)), Ok((limit, Some(c))));
}

fn check_range(v: &str, size: u64) {
    match parse_range(v, size) {
        RangeAsk::All | RangeAsk::Unsatisfiable => {}
        RangeAsk::Part(s, e) => {
            assert!(s <= e && e < size, "{v:?} on {size} bytes → {s}-{e}");
            let header = format!("bytes {s}-{e}/{size}");
            assert_eq!(content_range_start(&header), Some(s));
            // A resumed download asks `bytes=<have>-`.
            assert_eq!(
                parse_range(&format!("bytes={s}-"), size),
                RangeAsk::Part(s, size - 1)
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or("");
    let query = lines.next().unwrap_or("");
    let range = lines.next().unwrap_or("");
    let size = lines.next().and_then(|s| s.parse().ok()).unwrap_or(1000u64);

    check_route(path);
    check_percent(path);
    if mau_store::validate_name(path).is_ok() {
        check_name(path);
    }
    let fpr = match parse_route(path) {
        Ok(Route::List(f) | Route::File(f, _) | Route::Version(f, ..)) => f,
        Err(_) => Fingerprint::parse("0123456789abcdef0123456789abcdef01234567").expect("fpr"),
    };
    check_query(query, &fpr);
    check_range(range, size);
});
