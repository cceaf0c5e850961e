//! Friend file sync: list what a followed friend shares with us, page by
//! page as the pages arrive, download what is new or changed with bounded
//! concurrency, resume interrupted downloads with `Range`, and let a file
//! replace nothing before its size, SHA-256, the friend's signature and
//! decryption to us are checked (in [`mau_store::Store::accept_download`]).
//! Small files are checked, written, then made durable and installed in
//! batches ([`mau_store::Store::commit_downloads`]: one flush, the renames,
//! one directory fsync), when the plan says so.
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
//! stepping `If-Modified-Since` ([`mau_proto::sync::listing`]).
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
//!
//! Shape: every decision above is made by the sans-IO planner
//! [`mau_proto::sync::SyncPlan`]; this module is its I/O shell (`run`
//! carries out its commands and feeds the results back as events), shared
//! by both runtimes.

mod download;
mod listing;
mod pacing;
mod report;
mod run;
pub mod wire;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mau_identity::TlsIdentity;
use mau_proto::sync::{Abort, LocalState, Mode, Setup, SyncPlan};
use mau_proto::{Contact, Fingerprint, PeerAddress, Time};
use mau_store::{Store, StoreError};
use tracing::{info, warn};

use crate::client::Client;
use crate::config::Limits;
use crate::content::{ListItem, MAX_PAGE};
use crate::node::RunningNode;
use crate::resolver;
use crate::runtime::Runtime;
use download::scan_local;
use listing::secs;
pub use pacing::{retry_wait, RetryPolicy};
pub use report::{Listing, Outcome, Progress, Report, SyncError, SyncReport, MAX_NAMED};
use wire::item_name;

/// Most listing requests in one walk (pages and probes; a loop guard).
const MAX_REQUESTS: usize = 100_000;

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

    /// The plan's set-up for `mode`.
    fn setup(&self, mode: Mode, concurrency: usize) -> Setup {
        let fpr = self.peer.fingerprint;
        let o = &self.opts;
        Setup {
            mode,
            limits: mau_proto::sync::Limits {
                concurrency: concurrency.max(1),
                max_listed: o.max_listed,
                max_requests: MAX_REQUESTS,
                quota: o.quota,
                min_rate: o.min_rate.max(1),
                slow_grace: o.slow_grace,
                retry: o.retry.clone(),
            },
            first_page: format!("/p2p/{fpr}?limit={}", o.page_limit.clamp(1, MAX_PAGE)),
            link_prefix: format!("/p2p/{fpr}?"),
            wall_clock: secs(self.rt.system_time()),
            seed: self.rt.seed(),
        }
    }

    /// The error a plan stopped the whole sync with.
    fn abort_error(&self, abort: Abort) -> SyncError {
        let peer = self.peer.fingerprint;
        match abort {
            Abort::ListingTooLong { limit, what } => {
                SyncError::ListingTooLong { peer, limit, what }
            }
            Abort::Throttled { status, retries } => {
                warn!(peer = %peer, status, retries, "friend still refuses the listing: giving up");
                SyncError::Throttled {
                    peer,
                    status,
                    retries,
                }
            }
            Abort::LinkLoops => self.protocol("next page link loops"),
            Abort::LinkLeaves(n) => {
                self.protocol(format!("next page link {n:?} leaves the listing"))
            }
        }
    }

    /// Everything the friend shares with us modified at or after `since`
    /// (every page, held in memory: at most [`SyncOptions::max_listed`]
    /// entries; [`FriendClient::sync`] processes pages one at a time).
    pub async fn list(&self, since: Option<SystemTime>) -> Result<Listing, SyncError> {
        let mode = Mode::List {
            since: since_secs(since),
        };
        let plan = SyncPlan::new(
            self.setup(mode, self.opts.concurrency),
            LocalState::default(),
            Time::ZERO,
        );
        let ran = self.run(plan, &(), true, None).await?;
        Ok(Listing {
            items: ran.listed,
            server_time: ran
                .report
                .server_time
                .map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            truncated: ran.report.listing_truncated,
        })
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
        let fpr = self.peer.fingerprint;
        let entry = listing::entry(&fpr, item.clone());
        if entry.name.is_none() {
            return Err(self.protocol(format!("bad path {:?}", item.path)));
        }
        let local = LocalState {
            bytes: self.scan().await?.bytes,
            ..LocalState::default()
        };
        let plan = SyncPlan::new(self.setup(Mode::Fetch(entry), 1), local, Time::ZERO);
        let ran = self.run(plan, progress, false, None).await?;
        let r = &ran.report;
        match (ran.error, r.downloaded, r.unchanged) {
            (Some(e), _, _) => Err(e),
            (None, 1, _) => Ok(Outcome::Downloaded {
                bytes: r.bytes,
                resumed: r.resumed == 1,
            }),
            (None, _, 1) => Ok(Outcome::Unchanged),
            _ => Err(self.protocol("the file was not fetched")),
        }
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
        let scan = self.scan().await?;
        let local = LocalState {
            names: scan.names,
            partials: scan.partials.into_iter().map(|(_, n, s)| (n, s)).collect(),
            bytes: scan.bytes,
        };
        info!(peer = %fpr, since = %since.map_or_else(|| "the beginning".into(), mau_store::format_rfc3339), "syncing");
        let mode = Mode::Sync {
            since: since_secs(since),
        };
        let setup = self.setup(mode, self.opts.concurrency);
        let plan = SyncPlan::new(setup, local.clone(), Time::ZERO);
        let r = self.run(plan, progress, false, Some(&local)).await?.report;
        if r.listing_truncated {
            warn!(peer = %fpr, "a full listing page within one second: files beyond it cannot be listed by this friend's server");
        }
        let report = SyncReport {
            friend: Some(fpr),
            report: r.map_failed(|why| match why {
                mau_proto::sync::GiveUp::Failed(why) => why,
                why => self.give_up_error(why, None).to_string(),
            }),
        };
        info!(peer = %fpr, listed = report.listed, downloaded = report.downloaded, unchanged = report.unchanged, failed = report.failures, bytes = report.bytes, throttled = report.throttled, listing_requests = report.listing_requests, "sync finished");
        Ok(report)
    }
}

/// `since` in whole seconds (a time before the epoch lists everything).
fn since_secs(since: Option<SystemTime>) -> Option<u64> {
    since
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}
