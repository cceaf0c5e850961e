//! Walking a friend's listing page by page, as the pages arrive (never the
//! whole listing in memory): what to ask for next, and whether the listing
//! is whole.
//!
//! A mau-rs friend pages with `next` links and marks its last page. A page
//! with neither comes from a server without pages (the Go peer): it answers
//! the oldest 100 files modified at or after `If-Modified-Since`, without
//! modification times. Such a listing is walked by stepping
//! `If-Modified-Since` forward (whole seconds, as HTTP dates go):
//!
//! * the page at `t` holds the files of the first 100 at or after `t`;
//! * the page at a later `t2` shares a file with it exactly when `t2` is at
//!   most the second of its newest file, and then every file in `[t, t2)`
//!   was already on the page at `t`: no gap. So the largest such `t2` is
//!   found by bisection over `(t, now]`, and the walk goes on from there
//!   (files seen twice are dropped against the previous page);
//! * if no later second shares a file, the page's files all lie in the
//!   second `t`: the walk goes on at `t + 1`. If that page was full (100
//!   files), more files of that second may exist that Go never lists: the
//!   listing may be cut ([`Walk::truncated`]).
//!
//! Cost: about log2(seconds from `t` to now), ~30 listing requests per
//! step of up to 100 files, against such a server only.

use std::collections::BTreeSet;

use super::{Abort, Entry, Page};

/// Most entries a Go server puts in a listing (its `serverResultLimit`).
pub const GO_PAGE: usize = 100;
/// Latest second an HTTP date can name (9999-12-31T23:59:59Z).
pub const MAX_HTTP_SECS: u64 = 253_402_300_799;

/// One listing request: a link and its `If-Modified-Since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ask {
    /// The page's link.
    pub link: String,
    /// `If-Modified-Since`, seconds since the Unix epoch.
    pub since: Option<u64>,
}

/// Where the walk is.
#[derive(Debug)]
enum State {
    /// The first page.
    First,
    /// A page named by a `next` link.
    Link(String),
    /// Stepping a server without pages: from the page at second `t` (its
    /// paths `prev`), bisecting `(lo, hi]` for the last second whose page
    /// still shares a file with it; `best` is that page so far, `after_t`
    /// the page at `t + 1` if it was seen; the page at `probe` is asked.
    Bisect {
        t: u64,
        prev: BTreeSet<String>,
        lo: u64,
        hi: u64,
        best: Option<Vec<Entry>>,
        after_t: Option<Vec<Entry>>,
        probe: u64,
    },
    /// No later second shares a file: the page at `t + 1` is asked.
    Next { t: u64 },
    /// The end.
    Done,
}

/// A listing being walked: [`Walk::ask`] says what to request,
/// [`Walk::answer`] takes the answer and hands out new entries.
#[derive(Debug)]
pub struct Walk {
    state: State,
    since: Option<u64>,
    first_page: String,
    link_prefix: String,
    max_listed: usize,
    max_requests: usize,
    /// The link of the request outstanding (for loop detection).
    asked: Option<String>,
    /// Whether a page carried a next link (a server with pages).
    paged: bool,
    requests: usize,
    entries: usize,
    wall_clock: u64,
    /// The friend's clock at the first answer, seconds.
    pub server_time: Option<u64>,
    /// The listing was walked by stepping (a server without pages).
    pub stepped: bool,
    /// The listing may have been cut short.
    pub truncated: bool,
    /// When stepping: the second the walk has reached; every file
    /// modified before it was listed.
    pub reached: u64,
}

fn paths(items: &[Entry]) -> BTreeSet<String> {
    items.iter().map(|i| i.path.clone()).collect()
}

impl Walk {
    /// A walk from `first_page`, listing since `since` (seconds; beyond
    /// what an HTTP date can name means everything), whose `next` links
    /// must start with `link_prefix`, handing out at most `max_listed`
    /// entries in at most `max_requests` requests. `wall_clock`: the
    /// caller's clock, if the friend sends no `Date`.
    pub fn new(
        first_page: String,
        link_prefix: String,
        since: Option<u64>,
        max_listed: usize,
        max_requests: usize,
        wall_clock: u64,
    ) -> Self {
        Walk {
            state: State::First,
            since: since.filter(|s| *s <= MAX_HTTP_SECS),
            first_page,
            link_prefix,
            max_listed,
            max_requests,
            asked: None,
            paged: false,
            requests: 0,
            entries: 0,
            wall_clock,
            server_time: None,
            stepped: false,
            truncated: false,
            reached: 0,
        }
    }

    /// Listing requests made so far.
    pub fn requests(&self) -> usize {
        self.requests
    }

    /// Whether the walk is over.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The next request (`Ok(None)` at the end), counted against the
    /// request bound. Ask once per answer.
    pub fn ask(&mut self) -> Result<Option<Ask>, Abort> {
        let ask = match &self.state {
            State::Done => return Ok(None),
            State::First => Ask {
                link: self.first_page.clone(),
                since: self.since,
            },
            State::Link(l) => Ask {
                link: l.clone(),
                since: self.since,
            },
            State::Bisect { probe, .. } => self.probe(*probe),
            State::Next { t } => self.probe(t.saturating_add(1)),
        };
        if self.requests >= self.max_requests {
            return Err(Abort::ListingTooLong {
                limit: self.max_requests,
                what: "pages",
            });
        }
        self.requests += 1;
        self.asked = Some(ask.link.clone());
        Ok(Some(ask))
    }

    fn probe(&self, t: u64) -> Ask {
        Ask {
            link: self.first_page.clone(),
            since: Some(t.min(MAX_HTTP_SECS)),
        }
    }

    /// Takes the answer to the last [`Walk::ask`]: `Ok(Some(entries))` is
    /// a page handed out (new entries only, possibly none), `Ok(None)` an
    /// answer that only moved the walk (a probe).
    pub fn answer(&mut self, page: Page) -> Result<Option<Vec<Entry>>, Abort> {
        let asked = self.asked.take().unwrap_or_default();
        match std::mem::replace(&mut self.state, State::Done) {
            State::Done => Ok(None),
            State::First => {
                self.server_time = page.date;
                self.page(asked, page)
            }
            State::Link(_) => self.page(asked, page),
            State::Bisect {
                t,
                prev,
                mut lo,
                mut hi,
                mut best,
                mut after_t,
                probe,
            } => {
                if page.entries.iter().any(|e| prev.contains(&e.path)) {
                    (lo, best) = (probe, Some(page.entries));
                } else {
                    if probe == t.saturating_add(1) {
                        after_t = Some(page.entries);
                    }
                    hi = probe.min(hi);
                }
                if hi.saturating_sub(lo) > 1 {
                    self.state = State::Bisect {
                        t,
                        prev,
                        lo,
                        hi,
                        best,
                        after_t,
                        probe: lo + (hi - lo) / 2,
                    };
                    return Ok(None);
                }
                self.finish_step(t, prev, lo, best, after_t)
            }
            State::Next { t } => {
                if page.entries.is_empty() {
                    // (`reached` stays at `t`: a file written later in
                    // that second is listed next time.)
                    return Ok(None);
                }
                self.reached = t + 1;
                self.hand_out(page.entries.len())?;
                self.step(t + 1, paths(&page.entries))?;
                Ok(Some(page.entries))
            }
        }
    }

    /// A first or linked page.
    fn page(&mut self, asked: String, page: Page) -> Result<Option<Vec<Entry>>, Abort> {
        match page.next {
            Some(n) if n == asked => return Err(Abort::LinkLoops),
            Some(n) if n.starts_with(&self.link_prefix) => {
                self.paged = true;
                self.state = State::Link(n);
            }
            Some(n) => return Err(Abort::LinkLeaves(n)),
            // The last page of a server with pages.
            None if page.end || self.paged => {}
            None => {
                // No pages: possibly cut (a Go server). Step from here.
                self.stepped = true;
                let t = self.since.unwrap_or(0);
                self.hand_out(page.entries.len())?;
                self.step(t, paths(&page.entries))?;
                return Ok(Some(page.entries));
            }
        }
        self.hand_out(page.entries.len())?;
        Ok(Some(page.entries))
    }

    /// Counts `n` entries handed out against the bound.
    fn hand_out(&mut self, n: usize) -> Result<(), Abort> {
        self.entries = self.entries.saturating_add(n);
        if self.entries > self.max_listed {
            self.state = State::Done;
            return Err(Abort::ListingTooLong {
                limit: self.max_listed,
                what: "entries",
            });
        }
        Ok(())
    }

    /// Starts the step after the page at `t` whose paths are `prev`.
    fn step(&mut self, t: u64, prev: BTreeSet<String>) -> Result<(), Abort> {
        self.reached = t;
        if prev.is_empty() {
            // Nothing at or after `t`.
            self.state = State::Done;
            return Ok(());
        }
        let now = self.server_time.unwrap_or(self.wall_clock);
        let hi = now.max(t).saturating_add(1).min(MAX_HTTP_SECS);
        if hi > t {
            self.state = State::Bisect {
                t,
                prev,
                lo: t,
                hi,
                best: None,
                after_t: None,
                probe: hi,
            };
            return Ok(());
        }
        self.finish_step(t, prev, t, None, None).map(|_| ())
    }

    /// The bisection is over: go on from the last second sharing a file,
    /// or from `t + 1`.
    fn finish_step(
        &mut self,
        t: u64,
        prev: BTreeSet<String>,
        lo: u64,
        best: Option<Vec<Entry>>,
        after_t: Option<Vec<Entry>>,
    ) -> Result<Option<Vec<Entry>>, Abort> {
        if let Some(page) = best {
            let new: Vec<Entry> = page
                .iter()
                .filter(|i| !prev.contains(&i.path))
                .cloned()
                .collect();
            self.hand_out(new.len())?;
            self.step(lo, paths(&page))?;
            self.reached = lo;
            return Ok(Some(new));
        }
        // Every file of the page lies in the second `t`.
        if prev.len() >= GO_PAGE {
            self.truncated = true;
        }
        if t >= MAX_HTTP_SECS {
            self.state = State::Done;
            return Ok(None);
        }
        match after_t {
            Some(page) => self.answer_next(t, page),
            None => {
                self.state = State::Next { t };
                Ok(None)
            }
        }
    }

    /// The page at `t + 1`, already seen while bisecting.
    fn answer_next(&mut self, t: u64, entries: Vec<Entry>) -> Result<Option<Vec<Entry>>, Abort> {
        self.state = State::Next { t };
        self.answer(Page {
            entries,
            ..Page::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(p: &str) -> Entry {
        Entry {
            path: p.into(),
            name: Some(p.into()),
            size: 1,
            sum: "ab".repeat(32),
        }
    }

    fn walk(since: Option<u64>) -> Walk {
        Walk::new("/first".into(), "/p?".into(), since, 10, 1000, 100)
    }

    #[test]
    fn links_are_followed_to_the_end() {
        let mut w = walk(Some(5));
        let a = w.ask().unwrap().unwrap();
        assert_eq!((a.link.as_str(), a.since), ("/first", Some(5)));
        let got = w
            .answer(Page {
                entries: vec![e("a")],
                next: Some("/p?after=1".into()),
                date: Some(77),
                ..Page::default()
            })
            .unwrap();
        assert_eq!(got, Some(vec![e("a")]));
        assert_eq!(w.server_time, Some(77));
        let a = w.ask().unwrap().unwrap();
        assert_eq!(a.link, "/p?after=1");
        // The last page of a paged server needs no end mark.
        assert_eq!(w.answer(Page::default()).unwrap(), Some(vec![]));
        assert!(w.is_done() && !w.stepped && !w.truncated);
        assert_eq!(w.ask().unwrap(), None);
        assert_eq!(w.requests(), 2);
    }

    #[test]
    fn bad_links_and_bounds_abort() {
        let mut w = walk(None);
        w.ask().unwrap();
        let loops = Page {
            next: Some("/first".into()),
            ..Page::default()
        };
        assert_eq!(w.answer(loops), Err(Abort::LinkLoops));
        let mut w = walk(None);
        w.ask().unwrap();
        let leaves = Page {
            next: Some("/elsewhere".into()),
            ..Page::default()
        };
        assert!(matches!(w.answer(leaves), Err(Abort::LinkLeaves(_))));
        let mut w = walk(None);
        w.ask().unwrap();
        let many = Page {
            entries: (0..11).map(|i| e(&i.to_string())).collect(),
            end: true,
            ..Page::default()
        };
        assert_eq!(
            w.answer(many),
            Err(Abort::ListingTooLong {
                limit: 10,
                what: "entries"
            })
        );
        let mut w = Walk::new("/f".into(), "/p?".into(), None, 10, 1, 0);
        w.ask().unwrap();
        w.answer(Page {
            next: Some("/p?2".into()),
            ..Page::default()
        })
        .unwrap();
        assert_eq!(
            w.ask(),
            Err(Abort::ListingTooLong {
                limit: 1,
                what: "pages"
            })
        );
    }

    #[test]
    fn a_page_without_links_is_stepped_by_bisection() {
        // Files a (second 10), b (second 20); a Go-like server: page at
        // `t` is every file at or after `t`.
        let files = [("a", 10u64), ("b", 20)];
        let serve = |t: u64| Page {
            entries: files
                .iter()
                .filter(|(_, s)| *s >= t)
                .map(|(p, _)| e(p))
                .collect(),
            date: Some(100),
            ..Page::default()
        };
        let mut w = walk(None);
        let mut listed = Vec::new();
        while let Some(a) = w.ask().unwrap() {
            if let Some(items) = w.answer(serve(a.since.unwrap_or(0))).unwrap() {
                listed.extend(items.into_iter().map(|i| i.path));
            }
        }
        assert_eq!(listed, ["a", "b"]);
        assert!(w.stepped && !w.truncated);
        assert_eq!(w.reached, 20, "every file before second 20 was listed");
        assert!(w.requests() < 40, "{}", w.requests());
    }

    #[test]
    fn a_full_page_in_one_second_may_be_cut() {
        let full: Vec<Entry> = (0..GO_PAGE).map(|i| e(&i.to_string())).collect();
        let mut w = Walk::new("/f".into(), "/p?".into(), Some(50), 1000, 1000, 60);
        while let Some(a) = w.ask().unwrap() {
            let t = a.since.unwrap_or(0);
            let entries = if t <= 50 { full.clone() } else { vec![] };
            w.answer(Page {
                entries,
                ..Page::default()
            })
            .unwrap();
        }
        assert!(w.stepped && w.truncated);
        assert_eq!(w.reached, 50);
    }
}
