//! Walking a friend's listing page by page, as it arrives (never the whole
//! listing in memory).
//!
//! A mau-rs friend pages with `Link: <...>; rel="next"` and marks the last
//! page ([`LISTING_END`]). A page with neither comes from a server without
//! pages (the Go peer): it answers the oldest 100 files modified at or after
//! `If-Modified-Since`, without modification times. Such a listing is
//! walked by stepping `If-Modified-Since` forward (whole seconds, as HTTP
//! dates go):
//!
//! * the page at `t` holds the files of the first 100 at or after `t`;
//! * the page at a later `t2` shares a file with it exactly when `t2` is at
//!   most the (whole) second of its newest file, and then every file in
//!   `[t, t2)` was already on the page at `t`: no gap. So the largest such
//!   `t2` is found by bisection over `(t, now]`, and the walk goes on from
//!   there (files seen twice are dropped against the previous page);
//! * if no later second shares a file, the page's files all lie in the
//!   second `t`: the walk goes on at `t + 1`. If that page was full (100
//!   files), more files of the same second may exist that Go never lists:
//!   the listing is marked as possibly cut (`truncated`), so nothing is
//!   retired and the sync state stays.
//!
//! Cost: about log2(seconds from `t` to now), ~30 listing requests per
//! step of up to 100 files, against such a server only.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::header::{self, HeaderName};
use tracing::{debug, warn};

use super::pacing::Pacing;
use super::wire::{next_link, parse_listing, GO_PAGE, LISTING_END, MAX_PAGE};
use super::{FriendClient, SyncError};
use crate::content::ListItem;
use crate::runtime::Runtime;

/// Largest listing page body accepted.
const MAX_PAGE_BODY: usize = 16 * 1024 * 1024;
/// Most listing requests in one walk (pages and probes; a loop guard).
const MAX_REQUESTS: usize = 100_000;
/// Latest second an HTTP date can name (9999-12-31T23:59:59Z).
const MAX_HTTP_SECS: u64 = 253_402_300_799;

/// One answer to a listing request.
struct Answer {
    items: Vec<ListItem>,
    next: Option<String>,
    end: bool,
    date: Option<SystemTime>,
}

enum Next {
    First,
    Link(String),
    /// Stepping a server without pages: the page at second `t`, its paths.
    Step {
        t: u64,
        prev: BTreeSet<String>,
    },
    Done,
}

/// A listing being walked; [`Walk::next_page`] yields its pages in order.
pub(super) struct Walk<'c, R: Runtime> {
    client: &'c FriendClient<R>,
    pacing: &'c Pacing,
    since: Option<SystemTime>,
    next: Next,
    /// Whether a page carried a next link (a server with pages).
    paged: bool,
    requests: usize,
    entries: usize,
    /// The friend's clock at the first answer.
    pub(super) server_time: Option<SystemTime>,
    /// The listing was walked by stepping (a server without pages).
    pub(super) stepped: bool,
    /// The listing may have been cut short (see the module docs).
    pub(super) truncated: bool,
    /// When stepping: the second the walk has reached; every file
    /// modified before it was listed.
    pub(super) reached: u64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// HTTP dates cover 1970..=9999; anything else (e.g. Go's zero time) means
/// "everything".
fn representable(t: &SystemTime) -> bool {
    t.duration_since(UNIX_EPOCH)
        .is_ok_and(|d| d.as_secs() <= MAX_HTTP_SECS)
}

fn paths(items: &[ListItem]) -> BTreeSet<String> {
    items.iter().map(|i| i.path.clone()).collect()
}

impl<'c, R: Runtime> Walk<'c, R> {
    pub(super) fn new(
        client: &'c FriendClient<R>,
        pacing: &'c Pacing,
        since: Option<SystemTime>,
    ) -> Self {
        Walk {
            client,
            pacing,
            since: since.filter(representable),
            next: Next::First,
            paged: false,
            requests: 0,
            entries: 0,
            server_time: None,
            stepped: false,
            truncated: false,
            reached: 0,
        }
    }

    /// Listing requests made so far.
    pub(super) fn requests(&self) -> usize {
        self.requests
    }

    fn first_path(&self) -> String {
        format!(
            "/p2p/{}?limit={}",
            self.client.peer.fingerprint,
            self.client.opts.page_limit.clamp(1, MAX_PAGE)
        )
    }

    /// Asks for one page.
    async fn ask(&mut self, path: &str, since: Option<SystemTime>) -> Result<Answer, SyncError> {
        let peer = self.client.peer.fingerprint;
        if self.requests >= MAX_REQUESTS {
            return Err(SyncError::ListingTooLong {
                peer,
                limit: MAX_REQUESTS,
                what: "pages",
            });
        }
        self.requests += 1;
        let mut headers: Vec<(HeaderName, String)> = Vec::new();
        if let Some(t) = since {
            headers.push((header::IF_MODIFIED_SINCE, httpdate::fmt_http_date(t)));
        }
        let (resp, _permit) = self.client.request(path, &headers, self.pacing).await?;
        let mut resp = resp.error_for_status().await?;
        let h = resp.headers();
        let date = h
            .get(header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| httpdate::parse_http_date(s).ok());
        let next = h
            .get(header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(next_link);
        let end = h
            .get(LISTING_END.0)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(LISTING_END.1.as_bytes()));
        let body = resp.collect(MAX_PAGE_BODY).await?;
        let items = parse_listing(&body).map_err(|e| {
            self.client
                .protocol(format!("listing is not valid JSON: {e}"))
        })?;
        Ok(Answer {
            items,
            next,
            end,
            date,
        })
    }

    /// The page at second `t` of a server without pages.
    async fn probe(&mut self, t: u64) -> Result<Vec<ListItem>, SyncError> {
        let path = self.first_path();
        let at = UNIX_EPOCH + Duration::from_secs(t.min(MAX_HTTP_SECS));
        Ok(self.ask(&path, Some(at)).await?.items)
    }

    /// Counts entries handed out against [`super::SyncOptions::max_listed`].
    fn hand_out(&mut self, items: Vec<ListItem>) -> Result<Option<Vec<ListItem>>, SyncError> {
        self.entries = self.entries.saturating_add(items.len());
        let limit = self.client.opts.max_listed;
        if self.entries > limit {
            return Err(SyncError::ListingTooLong {
                peer: self.client.peer.fingerprint,
                limit,
                what: "entries",
            });
        }
        Ok(Some(items))
    }

    /// The next page of the listing (`None` at its end). Entries of a
    /// server without pages are new ones only (a step repeats some).
    pub(super) async fn next_page(&mut self) -> Result<Option<Vec<ListItem>>, SyncError> {
        let fpr = self.client.peer.fingerprint;
        let (path, answer) = match std::mem::replace(&mut self.next, Next::Done) {
            Next::Done => return Ok(None),
            Next::Step { t, prev } => return self.step(t, prev).await,
            Next::First => {
                let path = self.first_path();
                let a = self.ask(&path, self.since).await?;
                self.server_time = a.date;
                (path, a)
            }
            Next::Link(path) => {
                let a = self.ask(&path, self.since).await?;
                (path, a)
            }
        };
        debug!(peer = %fpr, entries = answer.items.len(), "listing page");
        match answer.next {
            Some(n) if n == path => return Err(self.client.protocol("next page link loops")),
            Some(n) if n.starts_with(&format!("/p2p/{fpr}?")) => {
                self.paged = true;
                self.next = Next::Link(n);
            }
            Some(n) => {
                return Err(self
                    .client
                    .protocol(format!("next page link {n:?} leaves the listing")))
            }
            // The last page of a server with pages.
            None if answer.end || self.paged => {}
            None => {
                // No pages: possibly cut (a Go server). Step from here.
                self.stepped = true;
                let t = self.since.map_or(0, secs);
                self.reached = t;
                debug!(peer = %fpr, entries = answer.items.len(), "listing without pages: stepping If-Modified-Since");
                self.next = Next::Step {
                    t,
                    prev: paths(&answer.items),
                };
            }
        }
        self.hand_out(answer.items)
    }

    /// One step of a listing without pages (module docs): the page after
    /// the one at `t` whose paths are `prev`.
    async fn step(
        &mut self,
        t: u64,
        prev: BTreeSet<String>,
    ) -> Result<Option<Vec<ListItem>>, SyncError> {
        self.reached = t;
        if prev.is_empty() {
            // Nothing at or after `t`.
            return Ok(None);
        }
        let overlaps = |page: &[ListItem]| page.iter().any(|i| prev.contains(&i.path));
        let now = self
            .server_time
            .map_or_else(|| secs(SystemTime::now()), secs);
        let (mut lo, mut hi) = (t, now.max(t).saturating_add(1).min(MAX_HTTP_SECS));
        let mut best = None;
        // The page right after `t`, if seen while bisecting.
        let mut after_t = None;
        if hi > t {
            let page = self.probe(hi).await?;
            if overlaps(&page) {
                // Files dated after the friend's clock: step over them.
                (lo, best) = (hi, Some(page));
            } else {
                if hi == t + 1 {
                    after_t = Some(page);
                }
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    let page = self.probe(mid).await?;
                    if overlaps(&page) {
                        (lo, best) = (mid, Some(page));
                    } else {
                        if mid == t + 1 {
                            after_t = Some(page);
                        }
                        hi = mid;
                    }
                }
            }
        }
        if let Some(page) = best {
            let new: Vec<ListItem> = page
                .iter()
                .filter(|i| !prev.contains(&i.path))
                .cloned()
                .collect();
            self.reached = lo;
            self.next = Next::Step {
                t: lo,
                prev: paths(&page),
            };
            return self.hand_out(new);
        }
        // Every file of the page lies in the second `t`.
        if prev.len() >= GO_PAGE {
            warn!(peer = %self.client.peer.fingerprint, second = t, "a full listing page within one second: files beyond it cannot be listed by this friend's server");
            self.truncated = true;
        }
        if t >= MAX_HTTP_SECS {
            return Ok(None);
        }
        let page = match after_t {
            Some(p) => p,
            None => self.probe(t + 1).await?,
        };
        if page.is_empty() {
            // (`reached` stays at `t`: a file written later in that second
            // is listed next time.)
            return Ok(None);
        }
        self.reached = t + 1;
        self.next = Next::Step {
            t: t + 1,
            prev: paths(&page),
        };
        self.hand_out(page)
    }
}
