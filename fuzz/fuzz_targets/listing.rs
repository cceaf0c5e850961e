//! The sync client's parsers of a friend's answers on arbitrary input never
//! panic: the listing page body (`parse_listing`), the names in it
//! (`item_name`), the `Link` header (`next_link`) and `Content-Range`
//! (`content_range_start`). An accepted page survives serialize → parse; a
//! name the client accepts is a single safe `.pgp` path component of that
//! friend, and the path the client then requests gives the server the same
//! name.
//!
//! Input: lines `Link` value, `Content-Range` value, then the body.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use mau_net::sync::wire::{
    content_range_start, item_name, next_link, parse_listing, parse_route, percent_encode,
    ListItem, Route,
};
use mau_proto::Fingerprint;

const FRIEND: &str = "0123456789abcdef0123456789abcdef01234567";

fn check_path(path: &str) {
    let friend = Fingerprint::parse(FRIEND).expect("fpr");
    // The friend as the path names it (so random paths reach the name checks).
    let named = path
        .strip_prefix("/p2p/")
        .and_then(|r| r.split('/').next())
        .and_then(|f| Fingerprint::parse(f).ok());
    for f in [Some(friend), named].into_iter().flatten() {
        let Some(n) = item_name(&f, path) else {
            continue;
        };
        assert_eq!(named, Some(f), "{path:?} is not a path of {f}");
        assert!(mau_store::validate_name(&n).is_ok(), "{n:?}");
        assert!(n.ends_with(mau_store::PGP_SUFFIX));
        let comps: Vec<_> = Path::new(&n).components().collect();
        assert_eq!(comps, [Component::Normal(n.as_ref())], "{n:?}");
        // What the client requests, and what the server makes of it.
        let asked = format!("/p2p/{f}/{}", percent_encode(&n));
        assert_eq!(parse_route(&asked), Ok(Route::File(f, n.clone())));
        assert_eq!(item_name(&f, &asked), Some(n));
    }
}

fuzz_target!(|data: &[u8]| {
    let (head, body) = split_line(data);
    let (cr, body) = split_line(body);
    if let Ok(link) = std::str::from_utf8(head) {
        if let Some(t) = next_link(link) {
            assert!(link.contains(&format!("<{t}>")), "{link:?} → {t:?}");
        }
    }
    if let Ok(cr) = std::str::from_utf8(cr) {
        if content_range_start(cr).is_some() {
            assert!(cr.trim().starts_with("bytes "));
        }
    }
    // The client reads at most 16 MiB of a page; libFuzzer's inputs are smaller.
    if let Ok(items) = parse_listing(body) {
        let json = serde_json::to_vec(&items).expect("serialize");
        assert_eq!(parse_listing(&json).expect("re-parse"), items);
        for ListItem { path, .. } in &items {
            check_path(path);
        }
    }
    if let Ok(text) = std::str::from_utf8(body) {
        check_path(text);
    }
});

fn split_line(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == b'\n') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}
