//! The content routes, wire-compatible with the Go implementation:
//!
//! * `GET /p2p/{fpr}`: JSON `[{"path":"/p2p/<fpr>/<name>","size":N,"sum":"<sha256>"}]`
//!   of the files the caller may read (it is a friend among their
//!   recipients), oldest first, modified at or after `If-Modified-Since`.
//!   Paginated: `?limit=N` (at most [`MAX_PAGE`]) and `?after=<cursor>`;
//!   when more is left the answer carries
//!   `Link: </p2p/<fpr>?after=<cursor>&limit=N>; rel="next"`, and the last
//!   page says so with [`LISTING_END`] (`Mau-Listing: end`): a page with
//!   neither (a Go server's) may have been cut. A plain request (what Go
//!   sends) gets the first [`DEFAULT_PAGE`] entries: a valid array.
//! * `GET /p2p/{fpr}/{name}`: the stored bytes, `Accept-Ranges: bytes`,
//!   `Range` (one range) → 206 or 416, `ETag: "<sha256>"` and `If-Range`;
//!   401 when the caller is not a recipient, 404 when missing, 400 for a
//!   name that could escape the directory.
//! * `GET /p2p/{fpr}/{name}.version/{sha256}`: an older version, same rules.
//!
//! File system work runs on [`Runtime::run_blocking`]; a file body is read
//! in 256 KiB chunks as the client consumes it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::StatusCode;
use mau_proto::Fingerprint;
use mau_store::{Cursor, Store, StoreError};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::router::{error, reply, Caller, Reply};
use crate::runtime::Runtime;
use crate::serve_context::ServeContext;

/// Entries in a listing page when the request names no `limit` (also what
/// a Go client, which knows no pages, receives).
pub const DEFAULT_PAGE: usize = 1000;
/// Largest `limit` honoured.
pub const MAX_PAGE: usize = 1000;
/// The header (and its value) on the last page of a listing: nothing
/// follows. Go servers cut a listing at 100 files without a word; a client
/// that sees neither this nor a next link cannot know the listing is whole.
pub const LISTING_END: (&str, &str) = ("mau-listing", "end");
/// Files examined per page at most (friends' files not shared with the
/// caller are skipped): a page may come back short, or empty, with a next link.
const SCAN_PER_PAGE: usize = 10 * MAX_PAGE;
/// Chunk size of file bodies.
const CHUNK: usize = 256 * 1024;

/// One entry of a listing (the Go implementation's `FileListItem`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    /// `/p2p/<fpr>/<name>`.
    pub path: String,
    /// Size of the stored (encrypted) bytes.
    pub size: u64,
    /// Lowercase hex SHA-256 of the stored bytes.
    pub sum: String,
}

/// Percent-decodes a path segment; `None` if malformed or not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            // Two hex digits (from_str_radix alone would take "+1").
            let h = s.get(i + 1..i + 3)?;
            if !h.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn percent_encode(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What a content request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/p2p/{fpr}`: the listing.
    List(Fingerprint),
    /// `/p2p/{fpr}/{name}`: a file (the name decoded and validated).
    File(Fingerprint, String),
    /// `/p2p/{fpr}/{name}.version/{sum}`: an older version of a file.
    Version(Fingerprint, String, String),
}

/// Parses a request path (no query); every error is a 400 with a reason.
pub fn parse_route(path: &str) -> Result<Route, (StatusCode, String)> {
    let bad = |m: &str| (StatusCode::BAD_REQUEST, m.to_string());
    let rest = path
        .strip_prefix("/p2p/")
        .ok_or_else(|| bad("not a /p2p/ path"))?;
    let segs: Vec<&str> = rest.split('/').collect();
    let fpr = Fingerprint::parse(segs[0]).map_err(|e| bad(&e.to_string()))?;
    let decode = |s: &str| percent_decode(s).ok_or_else(|| bad("malformed percent-encoding"));
    match segs.as_slice() {
        [_] => Ok(Route::List(fpr)),
        [_, name] => {
            let name = decode(name)?;
            mau_store::validate_name(&name).map_err(|e| bad(&e.to_string()))?;
            Ok(Route::File(fpr, name))
        }
        [_, name, sum] => {
            let name = decode(name)?;
            let name = name
                .strip_suffix(".version")
                .ok_or_else(|| bad("expected /p2p/{fpr}/{name}.version/{sum}"))?
                .to_string();
            mau_store::validate_name(&name).map_err(|e| bad(&e.to_string()))?;
            let sum = decode(sum)?;
            if !mau_store::is_sum(&sum) {
                return Err(bad("a version is a lowercase hex SHA-256"));
            }
            Ok(Route::Version(fpr, name, sum))
        }
        _ => Err(bad("too many path segments")),
    }
}

/// The request fields the content routes use, owned (they move to a
/// blocking thread).
struct Ask {
    caller: Fingerprint,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
}

/// Answers a `/p2p/` request.
pub(crate) async fn handle<R: Runtime, B>(
    shared: &ServeContext<R>,
    caller: &Caller,
    req: &hyper::Request<B>,
) -> Reply {
    let Some(store) = shared.config.content.clone() else {
        return error(StatusCode::NOT_FOUND, "this node serves no content");
    };
    let ask = Ask {
        caller: caller.fingerprint,
        path: req.uri().path().to_string(),
        query: req.uri().query().map(str::to_string),
        headers: req.headers().clone(),
    };
    let reply = shared
        .rt
        .run_blocking(move || answer(&store, ask))
        .await
        .unwrap_or_else(|| error(StatusCode::INTERNAL_SERVER_ERROR, "handler failed"));
    // A file (not a listing) on its way out: counted as it streams.
    let is_file = reply.headers().get(header::CONTENT_TYPE)
        == Some(&HeaderValue::from_static("application/octet-stream"));
    match &shared.config.metrics {
        Some(m) if reply.status().is_success() && is_file => {
            crate::metrics::count_served(reply, m.clone())
        }
        _ => reply,
    }
}

fn answer(store: &Arc<Store>, ask: Ask) -> Reply {
    let route = match parse_route(&ask.path) {
        Ok(r) => r,
        Err((status, m)) => return error(status, &m),
    };
    debug!(caller = %ask.caller, route = ?route, "content request");
    match route {
        Route::List(fpr) => list(store, &ask, fpr),
        Route::File(fpr, name) => {
            if !name.ends_with(mau_store::PGP_SUFFIX) {
                return error(StatusCode::NOT_FOUND, "no such file");
            }
            match store.served_dir(&fpr) {
                Some(dir) => serve_file(store, &ask, &dir.join(&name)),
                None => error(StatusCode::NOT_FOUND, "no such file"),
            }
        }
        Route::Version(fpr, name, sum) => match store.version_path(&fpr, &name, &sum) {
            Ok(p) => serve_file(store, &ask, &p),
            Err(StoreError::NotFound(_)) => error(StatusCode::NOT_FOUND, "no such file"),
            Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        },
    }
}

/// The value of `key` in a query string (`a=1&b=2`), not decoded.
fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

fn list(store: &Arc<Store>, ask: &Ask, fpr: Fingerprint) -> Reply {
    let since = match ask.headers.get(header::IF_MODIFIED_SINCE) {
        None => None,
        Some(v) => match v.to_str().map(parse_if_modified_since) {
            Ok(Ok(t)) => t,
            _ => return error(StatusCode::BAD_REQUEST, "malformed If-Modified-Since"),
        },
    };
    let (limit, cursor) = match list_query(ask.query.as_deref()) {
        Ok(q) => q,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let json = |items: &[ListItem]| serde_json::to_vec(items).unwrap_or_else(|_| b"[]".to_vec());
    // Non-friends see nothing (and cost nothing).
    if store.friend_cert(&ask.caller).is_err() {
        return reply(StatusCode::OK, "application/json", json(&[]));
    }
    let mut items = Vec::new();
    let page = store.page(
        &fpr,
        since,
        cursor.as_ref(),
        limit,
        SCAN_PER_PAGE,
        |e| match store.meta(&e.path) {
            Ok((entry, meta)) if store.may_read(&ask.caller, &meta) => {
                items.push(ListItem {
                    path: listed_path(&fpr, &entry.name),
                    size: entry.size,
                    sum: meta.sum.clone(),
                });
                true
            }
            Ok(_) => false,
            Err(e) => {
                debug!(file = %e, "skipping an unreadable file");
                false
            }
        },
    );
    let page = match page {
        Ok(p) => p,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let mut r = reply(StatusCode::OK, "application/json", json(&items));
    match page.next {
        Some(next) => {
            if let Ok(v) = HeaderValue::from_str(&next_link_header(&fpr, &next, limit)) {
                r.headers_mut().insert(header::LINK, v);
            }
        }
        None => {
            r.headers_mut().insert(
                header::HeaderName::from_static(LISTING_END.0),
                HeaderValue::from_static(LISTING_END.1),
            );
        }
    }
    r
}

/// A listing's query: `limit` (default [`DEFAULT_PAGE`], at most
/// [`MAX_PAGE`]) and the `after` cursor; the error is the 400's reason.
pub fn list_query(query: Option<&str>) -> Result<(usize, Option<Cursor>), &'static str> {
    let limit = match query_param(query, "limit") {
        None => DEFAULT_PAGE,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n.min(MAX_PAGE),
            _ => return Err("limit must be a positive integer"),
        },
    };
    let cursor = match query_param(query, "after") {
        None => None,
        Some(v) => Some(Cursor::decode(v).ok_or("malformed after cursor")?),
    };
    Ok((limit, cursor))
}

/// The `path` of a listing entry for the file `name` of `fpr`: the name as
/// is (what Go writes), percent-encoded if it holds a `%` (clients decode a
/// path with a `%`, so `a%41.pgp` as is would come back as `aA.pgp`).
pub fn listed_path(fpr: &Fingerprint, name: &str) -> String {
    if name.contains('%') {
        format!("/p2p/{fpr}/{}", percent_encode(name))
    } else {
        format!("/p2p/{fpr}/{name}")
    }
}

/// The `Link` header of a listing page that continues after `next`.
pub fn next_link_header(fpr: &Fingerprint, next: &Cursor, limit: usize) -> String {
    format!(
        "</p2p/{fpr}?after={}&limit={limit}>; rel=\"next\"",
        next.encode()
    )
}

/// Parses `If-Modified-Since`. A date before 1970 — Go clients send its
/// zero time, `Mon, 01 Jan 0001 00:00:00 GMT`, for a full sync — means no
/// filter.
fn parse_if_modified_since(v: &str) -> Result<Option<std::time::SystemTime>, ()> {
    if let Ok(t) = httpdate::parse_http_date(v) {
        return Ok(Some(t));
    }
    let year = v
        .split_whitespace()
        .find(|w| w.len() == 4 && w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse::<u32>().ok());
    match year {
        Some(y) if y < 1970 && v.ends_with("GMT") => Ok(None),
        _ => Err(()),
    }
}

/// A `Range: bytes=...` request against a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeAsk {
    /// No (usable) range: the whole file.
    All,
    /// Bytes `start..=end`.
    Part(u64, u64),
    /// Cannot be satisfied (416).
    Unsatisfiable,
}

/// Reads a `Range` header against a file of `size` bytes (one range; more
/// than one, or anything unusable, means the whole file).
pub fn parse_range(v: &str, size: u64) -> RangeAsk {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return RangeAsk::All;
    };
    if spec.contains(',') {
        // Several ranges: allowed to answer with the whole file.
        return RangeAsk::All;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAsk::All;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return RangeAsk::All;
        };
        if n == 0 || size == 0 {
            return RangeAsk::Unsatisfiable;
        }
        return RangeAsk::Part(size.saturating_sub(n), size - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeAsk::All;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeAsk::All,
        }
    };
    if start >= size {
        return RangeAsk::Unsatisfiable;
    }
    RangeAsk::Part(start, end.min(size - 1))
}

fn serve_file(store: &Arc<Store>, ask: &Ask, path: &std::path::Path) -> Reply {
    let (entry, meta) = match store.meta(path) {
        Ok(m) => m,
        Err(StoreError::NotFound(_)) => return error(StatusCode::NOT_FOUND, "no such file"),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    if !store.may_read(&ask.caller, &meta) {
        return error(StatusCode::UNAUTHORIZED, "this file is not shared with you");
    }
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return error(StatusCode::NOT_FOUND, "no such file")
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let size = entry.size;
    let etag = format!("\"{}\"", meta.sum);
    let if_range_ok = match ask.headers.get(header::IF_RANGE) {
        None => true,
        Some(v) => v.as_bytes() == etag.as_bytes(),
    };
    let range = match ask.headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if if_range_ok => parse_range(v, size),
        _ => RangeAsk::All,
    };
    let mut r = hyper::Response::new(crate::router::full(Bytes::new()));
    let h = r.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    let (start, len) = match range {
        RangeAsk::Unsatisfiable => {
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
        RangeAsk::All => (0, size),
        RangeAsk::Part(s, e) => {
            *r.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{e}/{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            (s, e - s + 1)
        }
    };
    if start > 0 {
        if let Err(e) = file.seek(SeekFrom::Start(start)) {
            return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string());
        }
    }
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    *r.body_mut() = FileBody {
        file,
        remaining: len,
    }
    .boxed();
    r
}

/// A file streamed as a body, `remaining` bytes from its current position.
struct FileBody {
    file: File,
    remaining: u64,
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = CHUNK.min(usize::try_from(self.remaining).unwrap_or(CHUNK));
        // A page-cache read of one chunk: short enough to do inline. Read
        // into the new buffer's spare capacity: zeroing it first was ~5%
        // of the serving's CPU.
        let mut buf = Vec::with_capacity(n);
        match (&mut self.file).take(n as u64).read_to_end(&mut buf) {
            Ok(0) => Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shrank while being served",
            )))),
            Ok(k) => {
                self.remaining -= k as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeAsk::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeAsk::Part(90, 99));
        assert_eq!(parse_range("bytes=90-500", 100), RangeAsk::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeAsk::Part(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), RangeAsk::Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeAsk::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeAsk::All);
        assert_eq!(parse_range("bytes=9-1", 100), RangeAsk::All);
        assert_eq!(parse_range("items=0-1", 100), RangeAsk::All);
        assert_eq!(parse_range("bytes=0-", 0), RangeAsk::Unsatisfiable);
    }

    #[test]
    fn go_zero_time_means_everything() {
        assert_eq!(
            parse_if_modified_since("Mon, 01 Jan 0001 00:00:00 GMT"),
            Ok(None)
        );
        assert!(parse_if_modified_since("Sun, 06 Nov 1994 08:49:37 GMT").is_ok_and(|t| t.is_some()));
        assert_eq!(parse_if_modified_since("garbage"), Err(()));
    }

    #[test]
    fn routes() {
        let f = "0123456789abcdef0123456789abcdef01234567";
        let fp = Fingerprint::parse(f).unwrap();
        assert_eq!(parse_route(&format!("/p2p/{f}")), Ok(Route::List(fp)));
        assert_eq!(
            parse_route(&format!("/p2p/{f}/hello%20world.pgp")),
            Ok(Route::File(fp, "hello world.pgp".into()))
        );
        let sum = "ab".repeat(32);
        assert_eq!(
            parse_route(&format!("/p2p/{f}/a.pgp.version/{sum}")),
            Ok(Route::Version(fp, "a.pgp".into(), sum.clone()))
        );
        for bad in [
            format!("/p2p/{f}/.."),
            format!("/p2p/{f}/..%2F..%2Fetc%2Fpasswd"),
            format!("/p2p/{f}/a%5Cb.pgp"),
            format!("/p2p/{f}/a%00.pgp"),
            format!("/p2p/{f}/{}", "x".repeat(300)),
            format!("/p2p/{f}/.hidden.pgp"),
            format!("/p2p/{f}/a.pgp.version/..%2F..%2Fx"),
            format!("/p2p/{f}/a/b/c/d"),
            format!("/p2p/{f}/%zz"),
            "/p2p/xyz".to_string(),
        ] {
            assert_eq!(
                parse_route(&bad).map_err(|e| e.0),
                Err(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
        assert_eq!(percent_decode(&percent_encode("ä b/c%")).unwrap(), "ä b/c%");
    }

    /// Fuzz finding (content_request): `%+1` decoded as `%01`.
    #[test]
    fn percent_escapes_are_two_hex_digits() {
        assert_eq!(percent_decode("a%2Fb%2f").as_deref(), Some("a/b/"));
        for bad in ["%+1", "%-1", "% 1", "%1", "%", "%g0"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }

    /// Fuzz finding (content_request): a name with a `%` was listed as is,
    /// and the sync client decoded it into another name (or none).
    #[test]
    fn listed_names_come_back_to_the_client_unchanged() {
        let fp = Fingerprint::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
        for name in [
            "a.pgp",
            "hello world.pgp",
            "a%41.pgp",
            "100%.pgp",
            "%zz.pgp",
        ] {
            let path = listed_path(&fp, name);
            assert_eq!(
                crate::sync::wire::item_name(&fp, &path).as_deref(),
                Some(name),
                "{path}"
            );
        }
        assert_eq!(
            listed_path(&fp, "hello world.pgp"),
            format!("/p2p/{fp}/hello world.pgp")
        );
    }
}
