//! Friend file sync: list what a followed friend shares with us (every
//! page), download what is new or changed with bounded concurrency, resume
//! interrupted downloads with `Range`, and let a file replace nothing before
//! its size, SHA-256, the friend's signature and decryption to us are
//! checked (in [`mau_store::Store::accept_download`]).
//!
//! [`FriendClient`] is also the library API for embedders (the Go guide's
//! `account.Client(fpr, fallbacks).List(...)`):
//!
//! ```no_run
//! # async fn demo<R: mau_net::Runtime>(node: &mau_net::RunningNode<R>,
//! #     store: std::sync::Arc<mau_store::Store>, friend: mau_proto::Fingerprint,
//! #     fallback: mau_proto::PeerAddress) -> Result<(), mau_net::sync::SyncError> {
//! use mau_net::sync::{FriendClient, SyncOptions};
//! let client = FriendClient::connect(node, store, friend, &[fallback], SyncOptions::default()).await?;
//! let posts = client.list_prefix("posts").await?;   // what the friend shares with us
//! let report = client.sync(&()).await?;             // fetch it
//! # let _ = (posts, report); Ok(()) }
//! ```
//!
//! Sync state: `last_sync[friend]` moves to the friend's clock (`Date` of the
//! first listing answer, minus a second) only when every listed file
//! arrived; otherwise the next sync lists from the old time again and skips
//! what is already here by size and sum.
//!
//! A friend that is busy says so: `429 Too Many Requests` (its rate limit)
//! or `503 Service Unavailable` (too many of our requests in flight), with
//! `Retry-After`. The request is then repeated after that wait (see
//! [`RetryPolicy`]: capped, a default when the header is missing or
//! unreadable, a bounded number of times), and after a 503 the sync keeps
//! one request fewer in flight. Nothing is written before a request is
//! answered with a success, so a refusal loses nothing.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_lock::{Semaphore, SemaphoreGuard};
use hyper::header::{self, HeaderName};
use mau_identity::TlsIdentity;
use mau_proto::{Contact, Fingerprint, PeerAddress};
use mau_store::{Store, StoreError};
use tracing::{debug, info, warn};

use crate::client::{Client, ClientError, Streaming};
use crate::config::Limits;
use crate::content::{percent_encode, ListItem, MAX_PAGE};
use crate::node::RunningNode;
use crate::resolver::{self, ResolveError};
use crate::runtime::Runtime;
use wire::{content_range_start, item_name, next_link, parse_listing, parse_retry_after};

/// Largest listing page body accepted.
const MAX_PAGE_BODY: usize = 16 * 1024 * 1024;
/// Most pages followed in one listing (a loop guard).
const MAX_PAGES: usize = 100_000;
/// Most of a 429 or 503 answer's body read (so that its connection can be
/// reused); the rest is not.
const MAX_REFUSAL_BODY: usize = 64 * 1024;

/// How a sync runs.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Downloads in flight at once.
    pub concurrency: usize,
    /// Longest wait for any progress (connect, headers, each body chunk).
    pub idle_timeout: Duration,
    /// Entries asked for per listing page.
    pub page_limit: usize,
    /// Ignore the sync state: list everything (and retire local copies the
    /// friend no longer lists).
    pub full: bool,
    /// What to do when the friend answers 429 or 503.
    pub retry: RetryPolicy,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            concurrency: 4,
            idle_timeout: Duration::from_secs(30),
            page_limit: MAX_PAGE,
            full: false,
            retry: RetryPolicy::default(),
        }
    }
}

/// How a request the friend refused with `429 Too Many Requests` or `503
/// Service Unavailable` is retried: after the wait its `Retry-After` asks
/// for (at most [`RetryPolicy::max_wait`]; [`RetryPolicy::default_wait`]
/// if it has none or one that does not parse), plus up to half of it again
/// at random so that requests refused together do not return together, at
/// most [`RetryPolicy::max_retries`] times. Both forms of `Retry-After` are
/// read: delay-seconds and an HTTP-date (a date already past: no wait).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries of one request before it fails with
    /// [`SyncError::Throttled`] (0: none).
    pub max_retries: u32,
    /// Longest wait honoured; a longer `Retry-After` is cut to it (the
    /// retry may then be refused again, which costs one more retry).
    pub max_wait: Duration,
    /// The wait when `Retry-After` is missing or unreadable.
    pub default_wait: Duration,
    /// Waiting a whole sync may spend, over all its requests: past it a
    /// refused request fails at once. Without it a friend answering
    /// "wait 60 s" to every request would hold a sync of n files for about
    /// n × retries minutes.
    pub max_total_wait: Duration,
}

impl Default for RetryPolicy {
    /// 5 retries, waits of at most 60 s, 1 s when the friend names none,
    /// 10 minutes of waiting per sync in all.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            max_wait: Duration::from_secs(60),
            default_wait: Duration::from_secs(1),
            max_total_wait: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The wait for an answer whose `Retry-After` header is `retry_after`,
    /// read at `now` (for the HTTP-date form), before the random extra.
    pub fn wait(&self, retry_after: Option<&str>, now: SystemTime) -> Duration {
        retry_after
            .and_then(|v| parse_retry_after(v, now))
            .unwrap_or(self.default_wait)
            .min(self.max_wait)
    }
}

/// The requests of one sync (its listing and every download): how many may
/// be in flight at once, and how many the friend refused.
struct Pacing {
    /// One permit per request allowed in flight.
    slots: Semaphore,
    /// How many permits exist (they are retired, not added).
    window: AtomicUsize,
    /// 429 and 503 answers received.
    refused: AtomicUsize,
    /// Milliseconds of `Retry-After` waiting granted so far.
    waited_ms: AtomicU64,
}

impl Pacing {
    fn new(concurrency: usize) -> Self {
        let n = concurrency.max(1);
        Pacing {
            slots: Semaphore::new(n),
            window: AtomicUsize::new(n),
            refused: AtomicUsize::new(0),
            waited_ms: AtomicU64::new(0),
        }
    }

    /// Grants `wait` from the sync's waiting budget `total`, or refuses if
    /// it would overrun it (then nothing is taken).
    fn take_wait(&self, wait: Duration, total: Duration) -> bool {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let (wait, total) = (ms(wait), ms(total));
        self.waited_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |spent| {
                spent.checked_add(wait).filter(|after| *after <= total)
            })
            .is_ok()
    }

    /// A 503 said too many of our requests are in flight: `permit` is
    /// retired (one request fewer at once from now on), down to one.
    fn shrink(&self, permit: SemaphoreGuard<'_>) {
        let shrunk = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w > 1).then(|| w - 1)
            })
            .is_ok();
        if shrunk {
            permit.forget();
        }
    }

    fn refused(&self) -> usize {
        self.refused.load(Ordering::Acquire)
    }
}

/// A random part of `max` (from the standard library's per-instance random
/// hasher keys: no RNG dependency for a jitter).
fn jitter(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let cap = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(r.checked_rem(cap).unwrap_or(0))
}

/// Why a sync (or a listing) failed as a whole. Failures of single files
/// are in [`SyncReport::failed`].
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The friend is not followed (`<root>/<fpr>` does not exist).
    #[error("{0} is not followed (mau follow {0})")]
    NotFollowed(Fingerprint),
    /// No address reached the friend.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A request to the friend failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// The friend answered something that is not a valid listing.
    #[error("bad answer from {peer}: {reason}")]
    Protocol {
        /// The friend.
        peer: Fingerprint,
        /// What was wrong.
        reason: String,
    },
    /// A local storage operation failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task died.
    #[error("a blocking task failed")]
    Blocking,
    /// The friend still refused a request (429 or 503) after every retry
    /// of [`SyncOptions::retry`].
    #[error("{peer} still answered {status} after {retries} retries")]
    Throttled {
        /// The friend.
        peer: Fingerprint,
        /// Its last answer: 429 or 503.
        status: u16,
        /// Retries made (each after the wait the friend asked for).
        retries: u32,
    },
}

/// What became of one listed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The local copy already had this size and sum.
    Unchanged,
    /// Downloaded (bytes transferred now; `resumed` if a partial download
    /// was continued).
    Downloaded {
        /// Bytes received in this run.
        bytes: u64,
        /// Whether an earlier partial download was continued.
        resumed: bool,
    },
}

/// The result of syncing one friend.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// The friend.
    pub friend: Option<Fingerprint>,
    /// Entries listed.
    pub listed: usize,
    /// Files downloaded and installed.
    pub downloaded: usize,
    /// Of those, resumed from a partial download.
    pub resumed: usize,
    /// Files already up to date.
    pub unchanged: usize,
    /// Bytes received.
    pub bytes: u64,
    /// Files that failed, with the reason (nothing local was replaced).
    pub failed: Vec<(String, String)>,
    /// Listed paths ignored: not `/p2p/<fpr>/<name>.pgp` with a safe name.
    pub skipped: Vec<String>,
    /// Local copies the friend no longer lists (full listings only), moved
    /// to their `.versions` directory.
    pub retired: Vec<String>,
    /// Whether everything arrived and the sync state moved forward.
    pub complete: bool,
    /// Answers `429 Too Many Requests` or `503 Service Unavailable` the
    /// friend gave during this sync; each was waited out and retried (see
    /// [`RetryPolicy`]).
    pub throttled: usize,
}

/// Receives progress of a sync (for progress bars). All methods default to
/// nothing; `()` is the silent observer.
pub trait Progress: Send + Sync {
    /// The listing is in: `files` to check, `bytes` in total.
    fn listed(&self, _files: usize, _bytes: u64) {}
    /// `n` more bytes arrived.
    fn bytes(&self, _n: u64) {}
    /// A file is done (downloaded, unchanged or failed).
    fn file_done(&self, _name: &str, _result: &Result<Outcome, String>) {}
}

impl Progress for () {}

/// A friend's listing.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    /// Every entry, in the friend's order (oldest first).
    pub items: Vec<ListItem>,
    /// The friend's clock when the listing started (its `Date` header).
    pub server_time: Option<SystemTime>,
}

/// A client for one friend's content. Cheap to clone.
#[derive(Clone)]
pub struct FriendClient<R: Runtime> {
    rt: R,
    client: Arc<Client<R>>,
    store: Arc<Store>,
    peer: Contact<PeerAddress>,
    opts: SyncOptions,
}

impl<R: Runtime> FriendClient<R> {
    /// A client for `peer` through `client` (e.g. a running node's
    /// [`RunningNode::client`]).
    pub fn new(
        rt: R,
        client: Arc<Client<R>>,
        store: Arc<Store>,
        peer: Contact<PeerAddress>,
        opts: SyncOptions,
    ) -> Self {
        FriendClient {
            rt,
            client,
            store,
            peer,
            opts,
        }
    }

    /// A client with its own connection pool, presenting the store's
    /// account (no running node needed; the friend is reached at `address`).
    pub fn direct(
        rt: R,
        store: Arc<Store>,
        peer: Contact<PeerAddress>,
        opts: SyncOptions,
    ) -> Result<Self, SyncError> {
        let identity = TlsIdentity::from_account(store.account(), None)
            .map_err(|e| SyncError::Store(StoreError::Identity(e)))?;
        let limits = Limits {
            pool_per_peer: opts.concurrency.max(1),
            ..Limits::default()
        };
        let client = Client::new(rt.clone(), identity, limits);
        Ok(Self::new(rt, client, store, peer, opts))
    }

    /// Finds `fpr` through the node's resolvers (the DHT) and the `fallbacks`
    /// addresses, verified by a pinned ping, and returns a client for it.
    pub async fn connect(
        node: &RunningNode<R>,
        store: Arc<Store>,
        fpr: Fingerprint,
        fallbacks: &[PeerAddress],
        opts: SyncOptions,
    ) -> Result<Self, SyncError> {
        let dht: Arc<dyn resolver::Resolve> = Arc::new(resolver::DhtResolver::new(node));
        let contact = resolver::connect(node, fpr, vec![dht], fallbacks).await?;
        Ok(Self::new(
            node.runtime().clone(),
            node.client().clone(),
            store,
            contact,
            opts,
        ))
    }

    /// The friend and the address in use.
    pub fn peer(&self) -> &Contact<PeerAddress> {
        &self.peer
    }

    fn protocol(&self, reason: impl Into<String>) -> SyncError {
        SyncError::Protocol {
            peer: self.peer.fingerprint,
            reason: reason.into(),
        }
    }

    /// Everything the friend shares with us modified at or after `since`
    /// (every page).
    pub async fn list(&self, since: Option<SystemTime>) -> Result<Listing, SyncError> {
        self.list_paced(since, &Pacing::new(self.opts.concurrency))
            .await
    }

    /// `GET path` with `headers`, repeated after the friend's `Retry-After`
    /// while it answers 429 or 503 (at most [`RetryPolicy::max_retries`]
    /// times). The answer comes with the permit it was sent under: hold it
    /// until the body is read.
    async fn request<'p>(
        &self,
        path: &str,
        headers: &[(HeaderName, String)],
        pacing: &'p Pacing,
    ) -> Result<(Streaming<'_, R>, SemaphoreGuard<'p>), SyncError> {
        let policy = &self.opts.retry;
        let mut retries = 0u32;
        loop {
            let permit = pacing.slots.acquire().await;
            let mut resp = self
                .client
                .get_streaming(&self.peer, path, headers, self.opts.idle_timeout)
                .await?;
            let status = resp.status();
            if status != 429 && status != 503 {
                return Ok((resp, permit));
            }
            pacing.refused.fetch_add(1, Ordering::AcqRel);
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let wait = policy.wait(retry_after.as_deref(), SystemTime::now());
            // The refusal's short body, so that its connection is reused.
            let _ = resp.collect(MAX_REFUSAL_BODY).await;
            drop(resp);
            if status == 503 {
                pacing.shrink(permit);
            } else {
                drop(permit);
            }
            let wait = wait.saturating_add(jitter(wait / 2));
            if retries >= policy.max_retries || !pacing.take_wait(wait, policy.max_total_wait) {
                warn!(peer = %self.peer.fingerprint, path, status, retries, "friend still refuses: giving up on this request");
                return Err(SyncError::Throttled {
                    peer: self.peer.fingerprint,
                    status,
                    retries,
                });
            }
            retries += 1;
            debug!(peer = %self.peer.fingerprint, path, status, retry_after = %retry_after.map_or_else(|| "none".into(), |d| format!("{d:?}")), ?wait, retry = retries, "friend is busy: retrying after its Retry-After");
            self.rt.sleep(wait).await;
        }
    }

    async fn list_paced(
        &self,
        since: Option<SystemTime>,
        pacing: &Pacing,
    ) -> Result<Listing, SyncError> {
        let fpr = self.peer.fingerprint;
        let mut headers: Vec<(HeaderName, String)> = Vec::new();
        // HTTP dates cover 1970..=9999; anything else (e.g. Go's zero time)
        // means "everything".
        let representable = |t: &SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .is_ok_and(|d| d.as_secs() < 253_402_300_799)
        };
        if let Some(t) = since.filter(representable) {
            headers.push((header::IF_MODIFIED_SINCE, httpdate::fmt_http_date(t)));
        }
        let mut path = format!(
            "/p2p/{fpr}?limit={}",
            self.opts.page_limit.clamp(1, MAX_PAGE)
        );
        let mut listing = Listing::default();
        for page in 0..MAX_PAGES {
            let (resp, _permit) = self.request(&path, &headers, pacing).await?;
            let mut resp = resp.error_for_status().await?;
            if page == 0 {
                listing.server_time = resp
                    .headers()
                    .get(header::DATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| httpdate::parse_http_date(s).ok());
            }
            let next = resp
                .headers()
                .get(header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            let body = resp.collect(MAX_PAGE_BODY).await?;
            let items = parse_listing(&body)
                .map_err(|e| self.protocol(format!("listing is not valid JSON: {e}")))?;
            debug!(peer = %fpr, page, entries = items.len(), "listing page");
            listing.items.extend(items);
            match next {
                Some(n) if n.starts_with(&format!("/p2p/{fpr}?")) && n != path => path = n,
                Some(n) if n == path => return Err(self.protocol("next page link loops")),
                Some(n) => {
                    return Err(self.protocol(format!("next page link {n:?} leaves the listing")))
                }
                None => return Ok(listing),
            }
        }
        Err(self.protocol("too many listing pages"))
    }

    /// Entries whose name starts with `prefix` (a leading `/` is ignored),
    /// like the Go guide's `client.List("/posts")`.
    pub async fn list_prefix(&self, prefix: &str) -> Result<Vec<ListItem>, SyncError> {
        let prefix = prefix.trim_start_matches('/');
        let fpr = self.peer.fingerprint;
        Ok(self
            .list(None)
            .await?
            .items
            .into_iter()
            .filter(|i| item_name(&fpr, &i.path).is_some_and(|n| n.starts_with(prefix)))
            .collect())
    }

    /// Downloads one listed file into the store (resuming a partial
    /// download), verifies and installs it. A local copy with the same size
    /// and sum is left alone.
    pub async fn fetch(
        &self,
        item: &ListItem,
        progress: &dyn Progress,
    ) -> Result<Outcome, SyncError> {
        self.fetch_paced(item, progress, &Pacing::new(1)).await
    }

    async fn fetch_paced(
        &self,
        item: &ListItem,
        progress: &dyn Progress,
        pacing: &Pacing,
    ) -> Result<Outcome, SyncError> {
        let fpr = self.peer.fingerprint;
        let name = item_name(&fpr, &item.path)
            .ok_or_else(|| self.protocol(format!("bad path {:?}", item.path)))?;
        if !mau_store::is_sum(&item.sum) {
            return Err(self.protocol(format!("bad sum {:?}", item.sum)));
        }
        let local = self.store.dir_of(&fpr).join(&name);
        if local.is_file() {
            let store = self.store.clone();
            let l = local.clone();
            let meta = self
                .rt
                .run_blocking(move || store.meta(&l))
                .await
                .ok_or(SyncError::Blocking)?;
            if let Ok((e, m)) = meta {
                if e.size == item.size && m.sum == item.sum {
                    return Ok(Outcome::Unchanged);
                }
            }
        }
        let partial = self.store.partial_path(&fpr, &name, &item.sum);
        let (bytes, resumed, hashed) = self
            .download_to(item, &name, &partial, progress, pacing)
            .await?;
        let store = self.store.clone();
        let (n, size, sum) = (name.clone(), item.size, item.sum.clone());
        let accepted = self
            .rt
            .run_blocking(move || {
                store.accept_download_hashed(&fpr, &n, &partial, size, &sum, hashed)
            })
            .await
            .ok_or(SyncError::Blocking)?;
        accepted?;
        debug!(peer = %fpr, file = %name, bytes, resumed, "file installed");
        Ok(Outcome::Downloaded { bytes, resumed })
    }

    /// Fills `partial` with the file's bytes; returns bytes received now,
    /// whether an earlier partial file was continued, and the SHA-256 of the
    /// whole file when it was computed on the way. Nothing is written before
    /// the friend answers 200 or 206 (refusals are retried by
    /// [`Self::request`]).
    async fn download_to(
        &self,
        item: &ListItem,
        name: &str,
        partial: &std::path::Path,
        progress: &dyn Progress,
        pacing: &Pacing,
    ) -> Result<(u64, bool, Option<String>), SyncError> {
        let fpr = self.peer.fingerprint;
        let io = |e: std::io::Error| SyncError::Store(StoreError::io(partial, e));
        let mut have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        if have > item.size {
            std::fs::remove_file(partial).map_err(io)?;
            have = 0;
        }
        if have == item.size && have > 0 {
            return Ok((0, true, None));
        }
        let path = format!("/p2p/{fpr}/{}", percent_encode(name));
        let mut headers = Vec::new();
        if have > 0 {
            headers.push((header::RANGE, format!("bytes={have}-")));
        }
        // The permit is held until the whole body is here.
        let (mut resp, permit) = self.request(&path, &headers, pacing).await?;
        let resumed = match resp.status() {
            206 if have > 0 => {
                let start = resp
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(content_range_start);
                if start != Some(have) {
                    return Err(self.protocol("206 answer for another range"));
                }
                true
            }
            200 => {
                have = 0;
                false
            }
            416 if have > 0 => {
                // Our partial copy does not fit the file any more: start over
                // (under a new permit: with a window of one, holding this
                // one would wait for itself).
                drop((resp, permit));
                std::fs::remove_file(partial).map_err(io)?;
                return Box::pin(self.download_to(item, name, partial, progress, pacing)).await;
            }
            _ => {
                resp.error_for_status().await?;
                return Err(self.protocol("unexpected status"));
            }
        };
        let mut opts = OpenOptions::new();
        opts.create(true).read(true).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let file = opts.open(partial).map_err(io)?;
        file.set_len(have).map_err(io)?;
        let mut hasher = mau_store::Sha256::default();
        if have > 0 {
            // The bytes already here count too.
            let mut r = std::io::Read::take(&file, have);
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let n = std::io::Read::read(&mut r, &mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
        }
        let mut file = std::io::BufWriter::with_capacity(256 * 1024, file);
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(have)).map_err(io)?;
        let mut got = 0u64;
        // A full disk: drop the partial file (it cannot complete and holds
        // space the rest of the store needs).
        let full = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::StorageFull {
                let _ = std::fs::remove_file(partial);
            }
            io(e)
        };
        while let Some(chunk) = resp.chunk().await? {
            got += chunk.len() as u64;
            if have + got > item.size {
                drop(file);
                let _ = std::fs::remove_file(partial);
                return Err(SyncError::Store(StoreError::SizeMismatch {
                    expected: item.size,
                    actual: have + got,
                }));
            }
            file.write_all(&chunk).map_err(full)?;
            hasher.update(&chunk);
            progress.bytes(chunk.len() as u64);
        }
        drop(permit);
        file.flush().map_err(full)?;
        Ok((got, resumed, Some(hasher.finish())))
    }

    /// Syncs the friend: lists (since the last complete sync, unless
    /// [`SyncOptions::full`]), fetches what is new or changed, records the
    /// sync when everything arrived.
    pub async fn sync(&self, progress: &dyn Progress) -> Result<SyncReport, SyncError> {
        let fpr = self.peer.fingerprint;
        if !self.store.dir_of(&fpr).is_dir() {
            return Err(SyncError::NotFollowed(fpr));
        }
        let since = if self.opts.full {
            None
        } else {
            self.store.sync_state()?.last_sync(&fpr)
        };
        let started = SystemTime::now();
        // One window for the whole sync: a 503 shrinks it for what follows.
        let pacing = Pacing::new(self.opts.concurrency);
        let listing = self.list_paced(since, &pacing).await?;
        let mut report = SyncReport {
            friend: Some(fpr),
            listed: listing.items.len(),
            ..SyncReport::default()
        };
        // One entry per name (the last one wins).
        let mut by_name: BTreeMap<String, ListItem> = BTreeMap::new();
        for item in listing.items {
            match item_name(&fpr, &item.path) {
                Some(n) => {
                    by_name.insert(n, item);
                }
                // Not a content file we may store (Go lists every regular
                // file, e.g. its `.tmp` leftovers): skipped, not an error.
                None => {
                    warn!(peer = %fpr, path = %item.path, "skipping a listed path that is not a valid content file");
                    report.skipped.push(item.path.clone());
                }
            }
        }
        let total: u64 = by_name.values().map(|i| i.size).sum();
        progress.listed(by_name.len(), total);
        info!(peer = %fpr, files = by_name.len(), bytes = total, since = %since.map_or_else(|| "the beginning".into(), mau_store::format_rfc3339), "syncing");
        let names: Vec<String> = by_name.keys().cloned().collect();
        let results = self
            .fetch_all(by_name.values().cloned().collect(), progress, &pacing)
            .await;
        report.throttled = pacing.refused();
        for (name, r) in results {
            match r {
                Ok(Outcome::Unchanged) => report.unchanged += 1,
                Ok(Outcome::Downloaded { bytes, resumed }) => {
                    report.downloaded += 1;
                    report.bytes += bytes;
                    report.resumed += usize::from(resumed);
                }
                Err(e) => {
                    warn!(peer = %fpr, file = %name, error = %e, "file not synced");
                    report.failed.push((name, e));
                }
            }
        }
        report.complete = report.failed.is_empty();
        if report.complete {
            if since.is_none() {
                report.retired = self.retire_unlisted(&names)?;
            }
            let mark = listing
                .server_time
                .unwrap_or(started)
                .checked_sub(Duration::from_secs(1))
                .unwrap_or(UNIX_EPOCH);
            self.store.record_sync(fpr, mark)?;
        }
        info!(peer = %fpr, downloaded = report.downloaded, unchanged = report.unchanged, failed = report.failed.len(), bytes = report.bytes, throttled = report.throttled, "sync finished");
        Ok(report)
    }

    /// Local copies of the friend's files that a full listing no longer
    /// names move to their versions directory.
    fn retire_unlisted(&self, listed: &[String]) -> Result<Vec<String>, SyncError> {
        let fpr = self.peer.fingerprint;
        let mut retired = Vec::new();
        for e in self.store.files_in(&self.store.dir_of(&fpr))? {
            if listed.binary_search(&e.name).is_err() {
                self.store.retire(&fpr, &e.name)?;
                info!(peer = %fpr, file = %e.name, "no longer shared: moved to its versions");
                retired.push(e.name);
            }
        }
        Ok(retired)
    }

    async fn fetch_all(
        &self,
        items: Vec<ListItem>,
        progress: &dyn Progress,
        pacing: &Pacing,
    ) -> Vec<(String, Result<Outcome, String>)> {
        let fpr = self.peer.fingerprint;
        let queue = async_lock::Mutex::new(items.into_iter());
        let results = async_lock::Mutex::new(Vec::new());
        let worker = || async {
            loop {
                let Some(item) = queue.lock().await.next() else {
                    break;
                };
                let name = item_name(&fpr, &item.path).unwrap_or_default();
                let r = self
                    .fetch_paced(&item, progress, pacing)
                    .await
                    .map_err(|e| e.to_string());
                progress.file_done(&name, &r);
                results.lock().await.push((name, r));
            }
        };
        let n = self.opts.concurrency.max(1);
        let mut all: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> =
            Vec::new();
        for _ in 0..n {
            all.push(Box::pin(worker()));
        }
        join_all(all).await;
        results.into_inner()
    }
}

/// Polls every future to completion on the current task.
async fn join_all<F: std::future::Future<Output = ()> + Unpin>(mut futs: Vec<F>) {
    use std::task::Poll;
    futures_lite::future::poll_fn(move |cx| {
        futs.retain_mut(|f| std::pin::Pin::new(f).poll(cx).is_pending());
        if futs.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// The `/p2p/` wire format as both ends read it: the content server's
/// parsers of a request and this client's parsers of a friend's answers
/// (public for the fuzz targets in `fuzz/` and for other clients).
pub mod wire {
    pub use crate::content::{
        list_query, listed_path, next_link_header, parse_range, parse_route, percent_decode,
        percent_encode, ListItem, RangeAsk, Route, DEFAULT_PAGE, MAX_PAGE,
    };
    use mau_proto::Fingerprint;
    use std::time::{Duration, SystemTime};

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
}

#[cfg(test)]
mod tests {
    use super::wire::*;
    use super::*;

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

    #[test]
    fn retry_policy_defaults_and_caps() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let policy = RetryPolicy::default();
        let w = |v: Option<&str>| policy.wait(v, now);
        let secs = Duration::from_secs;
        assert_eq!(w(Some("2")), secs(2));
        assert_eq!(w(None), secs(1), "missing: the default");
        assert_eq!(w(Some("garbage")), secs(1), "unparsable: the default");
        assert_eq!(w(Some("-3")), secs(1));
        assert_eq!(w(Some("3600")), secs(60), "huge: capped");
        assert_eq!(
            w(Some("184467440737095516160")),
            secs(60),
            "overflow: capped"
        );
        let tomorrow = httpdate::fmt_http_date(now + secs(86_400));
        assert_eq!(w(Some(&tomorrow)), secs(60), "a far date: capped");
        let soon = httpdate::fmt_http_date(now + secs(5));
        assert_eq!(w(Some(&soon)), secs(5));
        // A default above the cap is capped too.
        let odd = RetryPolicy {
            default_wait: secs(120),
            ..RetryPolicy::default()
        };
        assert_eq!(odd.wait(None, now), secs(60));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        for max in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(500),
            Duration::MAX,
        ] {
            for _ in 0..100 {
                assert!(jitter(max) <= max);
            }
        }
        let d = Duration::from_secs(1);
        let distinct: std::collections::BTreeSet<Duration> = (0..20).map(|_| jitter(d)).collect();
        assert!(distinct.len() > 1, "no randomness");
    }

    #[test]
    fn a_sync_waits_at_most_its_budget() {
        let p = Pacing::new(2);
        let (s, budget) = (Duration::from_secs, Duration::from_secs(10));
        assert!(p.take_wait(s(6), budget));
        assert!(!p.take_wait(s(5), budget), "6 + 5 > 10: refused");
        assert!(p.take_wait(s(4), budget), "a refusal took nothing");
        assert!(!p.take_wait(Duration::from_millis(1), budget), "spent");
        let q = Pacing::new(1);
        assert!(q.take_wait(Duration::MAX, Duration::MAX), "no overflow");
        assert!(!q.take_wait(s(1), Duration::MAX));
    }

    #[test]
    fn a_503_retires_permits_down_to_one() {
        let p = Pacing::new(3);
        let a = p.slots.try_acquire().unwrap();
        let b = p.slots.try_acquire().unwrap();
        let c = p.slots.try_acquire().unwrap();
        p.shrink(a);
        p.shrink(b);
        // The last one is never retired.
        p.shrink(c);
        assert_eq!(p.window.load(Ordering::Acquire), 1);
        let only = p.slots.try_acquire().expect("one permit left");
        assert!(p.slots.try_acquire().is_none());
        drop(only);
        assert!(Pacing::new(0).slots.try_acquire().is_some());
    }
}
