//! Friend file sync: list what a followed friend shares with us, page by
//! page as the pages arrive, download what is new or changed with bounded
//! concurrency, resume interrupted downloads with `Range`, and let a file
//! replace nothing before its size, SHA-256, the friend's signature and
//! decryption to us are checked (in [`mau_store::Store::accept_download`]).
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
//! arrived and the listing is known to be whole; otherwise the next sync
//! lists from the old time again and skips what is already here by size
//! and sum. A friend without listing pages (the Go peer) is walked by
//! stepping `If-Modified-Since` (the private `listing` module).
//!
//! A friend that is busy says so: `429 Too Many Requests` (its rate limit)
//! or `503 Service Unavailable` (too many of our requests in flight), with
//! `Retry-After`. The request is then repeated after that wait (see
//! [`RetryPolicy`]: capped, a default when the header is missing or
//! unreadable, a bounded number of times), and after a 503 the sync keeps
//! one request fewer in flight. Nothing is written before a request is
//! answered with a success, so a refusal loses nothing.
//!
//! A friend can serve anything; what it costs us is bounded: listing
//! entries ([`SyncOptions::max_listed`], one page in memory at a time),
//! bytes on disk ([`SyncOptions::quota`], checked against the listed size
//! before a download and against the bytes received while it runs), time
//! per file ([`SyncOptions::min_rate`] after [`SyncOptions::slow_grace`]),
//! and names (one check, [`mau_store::validate_name`]).

mod download;
mod listing;
mod pacing;
mod report;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_lock::SemaphoreGuard;
use hyper::header::{self, HeaderName};
use mau_identity::TlsIdentity;
use mau_proto::{Contact, Fingerprint, PeerAddress};
use mau_store::{Store, StoreError};
use tracing::{debug, info, warn};

use crate::client::{Client, Streaming};
use crate::config::Limits;
use crate::content::{ListItem, MAX_PAGE};
use crate::node::RunningNode;
use crate::resolver;
use crate::runtime::Runtime;
use download::{scan_local, Quota};
use listing::Walk;
pub use pacing::RetryPolicy;
use pacing::{jitter, Pacing};
pub use report::{Listing, Outcome, Progress, SyncError, SyncReport, MAX_NAMED};
use wire::item_name;

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
    /// Ignore the sync state: list everything and check every file (a
    /// plain sync lists what changed since the last one, then the names
    /// of the whole listing to retire what the friend no longer lists).
    pub full: bool,
    /// What to do when the friend answers 429 or 503.
    pub retry: RetryPolicy,
    /// Most listing entries one sync reads, all pages together (1,000,000):
    /// past it the sync stops with [`SyncError::ListingTooLong`]. Pages are
    /// processed one at a time, so memory does not grow with it.
    pub max_listed: usize,
    /// The slowest download accepted, in bytes a second on average, once
    /// `slow_grace` has passed (1 KiB/s): a file listed at `n` bytes gets
    /// at most `slow_grace + n / min_rate`, and a body trickling a byte a
    /// second fails after about `slow_grace`. Its partial file is kept for
    /// a resume; the other files go on.
    pub min_rate: u64,
    /// Time a download may take before `min_rate` applies (60 s).
    pub slow_grace: Duration,
    /// Most bytes a friend's directory may hold: its files, their old
    /// versions and partial downloads (16 GiB). A file that would not fit
    /// fails with [`SyncError::OverQuota`] before it is asked for, and a
    /// body is cut at its listed size, so it never grows past its share.
    pub quota: u64,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            concurrency: 4,
            idle_timeout: Duration::from_secs(30),
            page_limit: MAX_PAGE,
            full: false,
            retry: RetryPolicy::default(),
            max_listed: 1_000_000,
            min_rate: 1024,
            slow_grace: Duration::from_secs(60),
            quota: 16 << 30,
        }
    }
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
    /// (every page, held in memory: at most [`SyncOptions::max_listed`]
    /// entries; [`FriendClient::sync`] processes pages one at a time).
    pub async fn list(&self, since: Option<SystemTime>) -> Result<Listing, SyncError> {
        let pacing = Pacing::new(self.opts.concurrency);
        let mut walk = Walk::new(self, &pacing, since);
        let mut listing = Listing::default();
        while let Some(items) = walk.next_page().await? {
            listing.items.extend(items);
        }
        listing.server_time = walk.server_time;
        listing.truncated = walk.truncated;
        Ok(listing)
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
            pacing.note_refusal();
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
                warn!(peer = %self.peer.fingerprint, path = ?path, status, retries, "friend still refuses: giving up on this request");
                return Err(SyncError::Throttled {
                    peer: self.peer.fingerprint,
                    status,
                    retries,
                });
            }
            retries += 1;
            debug!(peer = %self.peer.fingerprint, path = ?path, status, retry_after = %retry_after.map_or_else(|| "none".into(), |d| format!("{d:?}")), ?wait, retry = retries, "friend is busy: retrying after its Retry-After");
            self.rt.sleep(wait).await;
        }
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

    /// What the friend's directory holds now (names, partial downloads,
    /// bytes), read on the blocking pool.
    async fn scan(&self) -> Result<download::LocalScan, SyncError> {
        let dir = self.store.dir_of(&self.peer.fingerprint);
        let d = dir.clone();
        self.blocking(move || scan_local(&d))
            .await?
            .map_err(|e| SyncError::Store(StoreError::io(&dir, e)))
    }

    /// Downloads one listed file into the store (resuming a partial
    /// download), verifies and installs it. A local copy with the same size
    /// and sum is left alone.
    pub async fn fetch(
        &self,
        item: &ListItem,
        progress: &dyn Progress,
    ) -> Result<Outcome, SyncError> {
        let quota = Quota::new(self.opts.quota, self.scan().await?.bytes);
        self.fetch_paced(item, progress, &Pacing::new(1), &quota)
            .await
    }

    async fn fetch_paced(
        &self,
        item: &ListItem,
        progress: &dyn Progress,
        pacing: &Pacing,
        quota: &Quota,
    ) -> Result<Outcome, SyncError> {
        let fpr = self.peer.fingerprint;
        let name = item_name(&fpr, &item.path)
            .ok_or_else(|| self.protocol(format!("bad path {:?}", item.path)))?;
        if !mau_store::is_sum(&item.sum) {
            return Err(self.protocol(format!("bad sum {:?}", item.sum)));
        }
        let local = self.store.dir_of(&fpr).join(&name);
        let partial = self.store.partial_path(&fpr, &name, &item.sum);
        let (store, p) = (self.store.clone(), partial.clone());
        // One blocking task: the local copy's size and sum, and what a
        // partial download holds.
        let (meta, have) = self
            .blocking(move || {
                let meta = local.is_file().then(|| store.meta(&local));
                (meta, std::fs::metadata(&p).map_or(0, |m| m.len()))
            })
            .await?;
        if let Some(Ok((e, m))) = meta {
            if e.size == item.size && m.sum == item.sum {
                return Ok(Outcome::Unchanged);
            }
        }
        let mut have = have;
        if have > item.size {
            self.remove(&partial).await?;
            have = 0;
        }
        // The bytes already here are counted in the quota's usage.
        quota.reserve(item.size - have)?;
        let result = self
            .download_and_install(item, &name, &partial, have, progress, pacing)
            .await;
        if result.is_err() {
            // What did not stay on disk goes back to the quota.
            let kept = self.len_on_disk(&partial).await.unwrap_or(0);
            quota.release(item.size.saturating_sub(kept));
        }
        result
    }

    async fn download_and_install(
        &self,
        item: &ListItem,
        name: &str,
        partial: &std::path::Path,
        have: u64,
        progress: &dyn Progress,
        pacing: &Pacing,
    ) -> Result<Outcome, SyncError> {
        let fpr = self.peer.fingerprint;
        let fetched = if have == item.size && have > 0 {
            download::Fetched {
                got: 0,
                resumed: true,
                sum: None,
                verified: false,
                memory: None,
            }
        } else {
            self.download_to(item, name, partial, have, progress, pacing)
                .await?
        };
        let (bytes, resumed) = (fetched.got, fetched.resumed);
        let store = self.store.clone();
        let (n, p, size, sum) = (
            name.to_string(),
            partial.to_path_buf(),
            item.size,
            item.sum.clone(),
        );
        let item = item.clone();
        // One blocking task: check (a small file, from memory), then install.
        self.blocking(
            move || match (fetched.memory, fetched.sum, fetched.verified) {
                (Some(bytes), _, _) => {
                    let hashed = download::check_and_write(&store, &fpr, &item, &bytes, &p)?;
                    store.accept_download_verified(&fpr, &n, &p, size, &sum, hashed)
                }
                (None, Some(hashed), true) => {
                    store.accept_download_verified(&fpr, &n, &p, size, &sum, hashed)
                }
                (None, hashed, _) => store.accept_download_hashed(&fpr, &n, &p, size, &sum, hashed),
            },
        )
        .await??;
        debug!(peer = %fpr, file = ?name, bytes, resumed, "file installed");
        Ok(Outcome::Downloaded { bytes, resumed })
    }

    /// Syncs the friend: lists (since the last complete sync, unless
    /// [`SyncOptions::full`]) page by page, fetches what is new or changed
    /// on each page before asking for the next, and records the sync when
    /// everything arrived from a listing known to be whole.
    pub async fn sync(&self, progress: &dyn Progress) -> Result<SyncReport, SyncError> {
        let fpr = self.peer.fingerprint;
        let (store, full) = (self.store.clone(), self.opts.full);
        // Every file operation of a sync runs on the blocking pool.
        let since = self
            .blocking(move || {
                if !store.dir_of(&fpr).is_dir() {
                    return Err(SyncError::NotFollowed(fpr));
                }
                match full {
                    true => Ok(None),
                    false => Ok(store.sync_state()?.last_sync(&fpr)),
                }
            })
            .await??;
        let started = SystemTime::now();
        let local = self.scan().await?;
        let quota = Quota::new(self.opts.quota, local.bytes);
        // Local names not (yet) listed: what a whole listing retires.
        let mut unlisted = local.names;
        // Partial downloads that a listed entry continues.
        let partials: BTreeMap<(String, String), std::path::PathBuf> = local
            .partials
            .into_iter()
            .map(|(p, n, s)| ((n, s), p))
            .collect();
        let mut resumable: BTreeSet<(String, String)> = BTreeSet::new();
        // One window for the whole sync: a 503 shrinks it for what follows.
        let pacing = Pacing::new(self.opts.concurrency);
        let mut walk = Walk::new(self, &pacing, since);
        let mut report = SyncReport {
            friend: Some(fpr),
            ..SyncReport::default()
        };
        info!(peer = %fpr, since = %since.map_or_else(|| "the beginning".into(), mau_store::format_rfc3339), "syncing");
        while let Some(items) = walk.next_page().await? {
            report.listed += items.len();
            // One entry per name on a page (the last one wins).
            let mut by_name: BTreeMap<String, ListItem> = BTreeMap::new();
            for item in items {
                match item_name(&fpr, &item.path) {
                    Some(n) => {
                        by_name.insert(n, item);
                    }
                    // Not a content file we may store (Go lists every regular
                    // file, e.g. its `.tmp` leftovers): skipped, not an error.
                    None => {
                        debug!(peer = %fpr, path = ?item.path, "skipping a listed path that is not a valid content file");
                        report.skip(item.path);
                    }
                }
            }
            for (name, item) in &by_name {
                unlisted.remove(name);
                let key = (name.clone(), item.sum.clone());
                if partials.contains_key(&key) {
                    resumable.insert(key);
                }
            }
            // Sizes are the friend's word: no overflow on absurd ones.
            let total = by_name.values().fold(0u64, |t, i| t.saturating_add(i.size));
            progress.listed(by_name.len(), total);
            let results = self
                .fetch_all(by_name.into_values().collect(), progress, &pacing, &quota)
                .await;
            for (name, r) in results {
                match r {
                    Ok(Outcome::Unchanged) => report.unchanged += 1,
                    Ok(Outcome::Downloaded { bytes, resumed }) => {
                        report.downloaded += 1;
                        report.bytes += bytes;
                        report.resumed += usize::from(resumed);
                    }
                    Err(e) => {
                        // A hostile listing can fail a million files: the
                        // first ones are logged as warnings.
                        if report.failures < MAX_NAMED {
                            warn!(peer = %fpr, file = ?name, error = %e, "file not synced");
                        } else {
                            debug!(peer = %fpr, file = ?name, error = %e, "file not synced");
                        }
                        report.fail(name, e);
                    }
                }
            }
        }
        report.throttled = pacing.refused();
        report.listing_requests = walk.requests();
        report.stepped = walk.stepped;
        report.listing_truncated = walk.truncated;
        // The listing was read to its end: partial downloads of files it
        // does not name (changed or withdrawn since) will never resume.
        for (key, path) in &partials {
            if !resumable.contains(key) && !walk.truncated {
                self.remove(path).await?;
                report.stale_partials += 1;
            }
        }
        report.complete = report.failures == 0 && !walk.truncated;
        if report.complete {
            // Only a listing known to be whole (all of it, from a server
            // with pages) may retire anything: a cut one would retire
            // files the friend still shares.
            if !walk.stepped {
                if since.is_some() {
                    // An incremental listing cannot tell a withdrawn file
                    // from an unchanged one: read the names of the whole
                    // listing (downloading nothing).
                    self.still_listed(&pacing, &mut unlisted, &mut report)
                        .await?;
                }
                report.retired = self.retire_unlisted(unlisted).await?;
            }
            let mark = if walk.stepped {
                // Every file before the second the walk reached was listed.
                UNIX_EPOCH + Duration::from_secs(walk.reached)
            } else {
                walk.server_time
                    .unwrap_or(started)
                    .checked_sub(Duration::from_secs(1))
                    .unwrap_or(UNIX_EPOCH)
            };
            let store = self.store.clone();
            self.blocking(move || store.record_sync(fpr, mark))
                .await??;
        }
        info!(peer = %fpr, listed = report.listed, downloaded = report.downloaded, unchanged = report.unchanged, failed = report.failures, bytes = report.bytes, throttled = report.throttled, listing_requests = report.listing_requests, "sync finished");
        Ok(report)
    }

    /// Walks the whole listing for its names only, taking each from
    /// `unlisted`. One listing request per 1,000 files, about 150 bytes a
    /// file; nothing is downloaded.
    async fn still_listed(
        &self,
        pacing: &Pacing,
        unlisted: &mut BTreeSet<String>,
        report: &mut SyncReport,
    ) -> Result<(), SyncError> {
        let fpr = self.peer.fingerprint;
        let mut names = Walk::new(self, pacing, None);
        while let Some(items) = names.next_page().await? {
            if names.stepped {
                // Not a server with pages after all: proves nothing.
                unlisted.clear();
                break;
            }
            for item in items {
                if let Some(n) = item_name(&fpr, &item.path) {
                    unlisted.remove(&n);
                }
            }
        }
        report.listing_requests += names.requests();
        Ok(())
    }

    /// Local copies of the friend's files that a whole listing no longer
    /// names move to their versions directory.
    async fn retire_unlisted(&self, unlisted: BTreeSet<String>) -> Result<Vec<String>, SyncError> {
        let fpr = self.peer.fingerprint;
        let store = self.store.clone();
        let retired = self
            .blocking(move || {
                let mut retired = Vec::new();
                for name in unlisted {
                    store.retire(&fpr, &name)?;
                    info!(peer = %fpr, file = ?name, "no longer shared: moved to its versions");
                    retired.push(name);
                }
                Ok::<_, StoreError>(retired)
            })
            .await??;
        Ok(retired)
    }

    async fn fetch_all(
        &self,
        items: Vec<ListItem>,
        progress: &dyn Progress,
        pacing: &Pacing,
        quota: &Quota,
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
                    .fetch_paced(&item, progress, pacing, quota)
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
