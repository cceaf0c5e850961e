//! The decisions of a friend sync, without its I/O: which listing pages to
//! ask for and when the listing is whole, which files to fetch, resume or
//! restart a partial download, retry and pacing after a refusal (429/503
//! with `Retry-After`), the quota, size and time bounds, what to retire,
//! and when `last_sync` may advance.
//!
//! [`SyncPlan`] is a deterministic state machine in the style of
//! [`crate::Node`]: the caller (mau-net's sync, the I/O shell) feeds
//! [`Event`]s with the current time ([`SyncPlan::handle`]), drains
//! [`Command`]s ([`SyncPlan::poll_command`]), asks when it must be woken
//! ([`SyncPlan::poll_timeout`]) and calls [`SyncPlan::handle_timeout`]. No
//! sockets, files, clocks or global randomness: the jitter of retries
//! comes from a seed the caller gives.
//!
//! Where the parts live: [`listing`] walks a listing (pages with `next`
//! links, or a server without pages stepped by `If-Modified-Since`),
//! [`pacing`] holds the retry policy and the window of requests in flight,
//! [`files`] the per-file decisions and the quota, [`plan`] ties them
//! together; [`harness`] drives a plan with hostile events and checks
//! its promises (property tests, fuzzing). Wire details (paths, headers, JSON) stay with the caller:
//! listing requests are the opaque links it hands in, times are seconds
//! since the Unix epoch for wall-clock values (HTTP dates) and [`crate::Time`] for
//! the caller's monotonic clock.

use std::collections::BTreeSet;
use std::time::Duration;

pub mod files;
pub mod harness;
mod in_progress;
pub mod listing;
pub mod pacing;
pub mod plan;

pub use files::FileOutcome;
pub use pacing::RetryPolicy;
pub use plan::SyncPlan;

/// Most failed files, and skipped paths, a report names one by one (the
/// rest are only counted: a hostile listing cannot grow the report).
pub const MAX_NAMED: usize = 1000;

/// A file of the listing, numbered by the plan in the order it was listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u64);

/// One entry of a listing page, as the caller read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The listed path (compared between pages of a server without pages).
    pub path: String,
    /// The file name, if the path is a valid content file of this friend
    /// (the caller checks); `None` entries are skipped.
    pub name: Option<String>,
    /// The listed size (the friend's word).
    pub size: u64,
    /// The listed SHA-256, hex (checked here: 64 lowercase hex digits).
    pub sum: String,
}

/// One answer to a [`Command::List`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Its entries, in the friend's order.
    pub entries: Vec<Entry>,
    /// The target of its `rel="next"` link, if any.
    pub next: Option<String>,
    /// It says it is the last page (`Mau-Listing: end`).
    pub end: bool,
    /// The friend's clock (its `Date`), seconds since the Unix epoch.
    pub date: Option<u64>,
}

/// What a sync knows of the friend's directory when it starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalState {
    /// Names of the current files.
    pub names: BTreeSet<String>,
    /// Partial downloads, as (name, sum) pairs.
    pub partials: BTreeSet<(String, String)>,
    /// Bytes the directory holds (files, versions, partial downloads).
    pub bytes: u64,
}

/// Files worked on at once per request in flight ([`Limits::concurrency`]):
/// the others are inspected or installed (fsyncs, a rename) while the
/// requests go on. Small files are bound by these disk steps, not the
/// network; a few more files at once bounds the memory (a small file is
/// held until installed) and the disk work queued.
pub const FILES_PER_REQUEST: usize = 2;

/// Files up to this size fetched whole are installed in batches
/// ([`Command::Stage`], [`Command::Commit`]): their data made durable
/// together, then renamed, then one directory fsync for the batch. Per
/// small file the fsyncs cost more than the bytes.
pub const BATCH_FILE_MAX: u64 = 1 << 20;

/// Most files one [`Command::Commit`] holds.
pub const BATCH_MAX: usize = 64;

/// Most files staged or committing at once (two batches): they do not
/// count against [`Limits::files_at_once`] (they wait on the disk, not on
/// the network), but past this no new file starts.
pub const MAX_UNCOMMITTED: usize = 2 * BATCH_MAX;

/// The bounds of one sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests in flight at once, at least 1. Up to
    /// [`FILES_PER_REQUEST`] times as many files are worked on (inspected,
    /// fetched, installed): a file being checked or installed on the disk
    /// does not hold a request back.
    pub concurrency: usize,
    /// Most listing entries one walk hands out.
    pub max_listed: usize,
    /// Most listing requests in one walk (pages and probes).
    pub max_requests: usize,
    /// Most bytes the friend's directory may hold.
    pub quota: u64,
    /// The slowest download accepted, bytes a second on average, once
    /// `slow_grace` has passed since its request.
    pub min_rate: u64,
    /// Time a download may take before `min_rate` applies.
    pub slow_grace: Duration,
    /// Retries after refusals.
    pub retry: RetryPolicy,
}

impl Limits {
    /// Files worked on at once: [`FILES_PER_REQUEST`] per request in
    /// flight.
    pub fn files_at_once(&self) -> usize {
        self.concurrency.max(1).saturating_mul(FILES_PER_REQUEST)
    }
}

impl Default for Limits {
    /// mau-net's defaults: 4 at once, 1,000,000 entries, 100,000 listing
    /// requests, 16 GiB, 1 KiB/s after 60 s.
    fn default() -> Self {
        Limits {
            concurrency: 4,
            max_listed: 1_000_000,
            max_requests: 100_000,
            quota: 16 << 30,
            min_rate: 1024,
            slow_grace: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// What the plan is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A whole sync: list, fetch, retire, record.
    Sync {
        /// List what changed since this second (`None`: everything).
        since: Option<u64>,
    },
    /// Only walk the listing (every page comes out as [`Command::Listed`]).
    List {
        /// As for [`Mode::Sync`].
        since: Option<u64>,
    },
    /// Fetch this one file, no listing.
    Fetch(Entry),
}

/// How a plan starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// What the plan is for.
    pub mode: Mode,
    /// The bounds.
    pub limits: Limits,
    /// The first listing page's link (the caller's, e.g. with its limit).
    pub first_page: String,
    /// What every `next` link must start with (it may not leave the
    /// listing).
    pub link_prefix: String,
    /// The caller's wall clock when the sync started, seconds since the
    /// Unix epoch (used when the friend sends no `Date`).
    pub wall_clock: u64,
    /// Seed of the retry jitter.
    pub seed: u64,
}

/// What a refused request was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The outstanding listing request.
    Listing,
    /// A file's fetch.
    File(FileId),
}

/// Why a fetch or install failed, as the caller saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The friend answered `416` to a resume: the partial download does
    /// not fit the file any more (the plan restarts it once).
    RangeNotSatisfiable,
    /// Anything else (network, size, sum, signature, disk), described.
    Other(String),
}

/// What happened, fed to [`SyncPlan::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The answer to the outstanding [`Command::List`].
    Page(Page),
    /// The answer to [`Command::Inspect`]: whether the local copy has the
    /// listed size and sum, and how many bytes a partial download holds.
    Local {
        /// The file.
        file: FileId,
        /// The local copy is this very file.
        same: bool,
        /// Bytes of its partial download (0: none).
        partial: u64,
    },
    /// A fetch has received `got` bytes of its body so far.
    Progress {
        /// The file.
        file: FileId,
        /// Bytes received in this attempt.
        got: u64,
    },
    /// A fetch ended with the whole body received (and, where the caller
    /// does so, checked as it streamed in).
    Fetched {
        /// The file.
        file: FileId,
        /// Bytes received in this attempt.
        got: u64,
        /// Earlier bytes were kept (a `Range` resume).
        resumed: bool,
    },
    /// The answer to [`Command::Stage`]: the file is checked and written
    /// beside its place, not yet durable.
    Staged {
        /// The file.
        file: FileId,
    },
    /// The answer to [`Command::Install`], or for one file of a
    /// [`Command::Commit`]: the file is in place, durably.
    Installed {
        /// The file.
        file: FileId,
    },
    /// A fetch or install failed.
    Failed {
        /// The file.
        file: FileId,
        /// Why.
        error: FetchError,
        /// Bytes of the file's partial download left on disk.
        kept: u64,
    },
    /// The friend refused a request (429 or 503); nothing was written.
    Refused {
        /// Which request.
        target: Target,
        /// 429 or 503.
        status: u16,
        /// Its `Retry-After`, read (`None`: missing or unreadable).
        retry_after: Option<Duration>,
    },
}

/// Why the plan gave up on one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GiveUp {
    /// The listed sum (here) is not 64 lowercase hex digits; nothing of
    /// the file was looked at or asked for.
    BadSum(String),
    /// The file does not fit the quota; nothing of it was asked for.
    OverQuota {
        /// Bytes it still needs.
        needed: u64,
        /// Bytes in use or reserved.
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// The body came slower than the floor allows.
    TooSlow {
        /// Bytes received in this attempt.
        got: u64,
        /// Time since its request.
        elapsed: Duration,
        /// The floor.
        min_rate: u64,
    },
    /// Still refused after every retry (or past the waiting budget).
    Throttled {
        /// The last answer, 429 or 503.
        status: u16,
        /// Retries made.
        retries: u32,
    },
    /// The caller's failure.
    Failed(String),
}

/// Why the plan stopped the whole sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Abort {
    /// The listing went on past a bound.
    ListingTooLong {
        /// The bound.
        limit: usize,
        /// "entries" or "pages".
        what: &'static str,
    },
    /// A listing request was still refused after every retry.
    Throttled {
        /// The last answer, 429 or 503.
        status: u16,
        /// Retries made.
        retries: u32,
    },
    /// A `next` link named the page it came from.
    LinkLoops,
    /// A `next` link left the listing (it is the link).
    LinkLeaves(String),
}

/// What the caller must do, drained with [`SyncPlan::poll_command`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Ask for a listing page (`since`: its `If-Modified-Since`, seconds);
    /// answer with [`Event::Page`] or [`Event::Refused`].
    List {
        /// The page's link.
        link: String,
        /// `If-Modified-Since`, seconds since the Unix epoch.
        since: Option<u64>,
    },
    /// A page was handed out (for progress, or to collect in
    /// [`Mode::List`]): its entries, and the files and bytes it adds.
    Listed {
        /// The page's new entries (empty outside [`Mode::List`]).
        entries: Vec<Entry>,
        /// Distinct valid files on it.
        files: usize,
        /// Their listed bytes (saturating).
        bytes: u64,
    },
    /// Check a file's local copy and partial download; answer with
    /// [`Event::Local`] (or [`Event::Failed`]).
    Inspect {
        /// The file.
        file: FileId,
        /// Its name.
        name: String,
        /// Its listing entry.
        entry: Entry,
    },
    /// Remove the partial download for (name, sum), if there is one.
    RemovePartial {
        /// The file name.
        name: String,
        /// The sum it was for.
        sum: String,
    },
    /// Fetch the file from byte `from` (0: from the start, dropping what a
    /// partial download holds); answer with [`Event::Progress`] (any
    /// number), then [`Event::Fetched`], [`Event::Failed`] or
    /// [`Event::Refused`].
    Fetch {
        /// The file.
        file: FileId,
        /// Where its body starts (`Range: bytes=from-` if above 0).
        from: u64,
    },
    /// Install the fetched (or completely resumed) file; answer with
    /// [`Event::Installed`] or [`Event::Failed`].
    Install {
        /// The file.
        file: FileId,
    },
    /// Check the fetched file (size, sum, signature, decryption) and write
    /// it beside its place (its partial file), without making it durable
    /// yet; answer with [`Event::Staged`] or [`Event::Failed`]. Nothing
    /// is installed: until its [`Command::Commit`] the old copy stays.
    Stage {
        /// The file.
        file: FileId,
    },
    /// Install the staged files together: make their data durable (one
    /// flush for all), then rename each into place, then make the renames
    /// durable (one fsync per directory); answer each file with
    /// [`Event::Installed`] or [`Event::Failed`]. A file counts as
    /// installed, and `last_sync` may advance past it, only after that.
    Commit {
        /// The staged files (at most [`BATCH_MAX`]).
        files: Vec<FileId>,
    },
    /// The file is done: unchanged or installed.
    Settled {
        /// The file.
        file: FileId,
        /// Its name.
        name: String,
        /// How.
        outcome: FileOutcome,
    },
    /// The file failed; drop any work still running for it (its partial
    /// download stays for a resume).
    GiveUp {
        /// The file.
        file: FileId,
        /// Its name.
        name: String,
        /// Why.
        reason: GiveUp,
    },
    /// Move the local copy of a file the whole listing no longer names to
    /// its versions.
    Retire {
        /// The file name.
        name: String,
    },
    /// Record the sync: `last_sync` moves to this second.
    Record {
        /// Seconds since the Unix epoch.
        mark: u64,
    },
    /// The plan is over (the last command).
    Done(Result<Report, Abort>),
}

/// What a sync did. `F` is why a file failed: the plan's [`GiveUp`]; a
/// caller may turn it into its own text ([`Report::map_failed`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report<F = GiveUp> {
    /// Entries listed.
    pub listed: usize,
    /// Files downloaded and installed.
    pub downloaded: usize,
    /// Of those, resumed from a partial download.
    pub resumed: usize,
    /// Files already up to date (same size and sum here).
    pub unchanged: usize,
    /// Bytes received.
    pub bytes: u64,
    /// Files that failed, with the reason (nothing local was replaced); the
    /// first [`MAX_NAMED`], all of them counted in `failures`.
    pub failed: Vec<(String, F)>,
    /// Files that failed, in all.
    pub failures: usize,
    /// Listed paths ignored: not `/p2p/<fpr>/<name>.pgp` with a safe name
    /// (the first [`MAX_NAMED`], all counted in `skipped_count`).
    pub skipped: Vec<String>,
    /// Listed paths ignored, in all.
    pub skipped_count: usize,
    /// Local copies the friend no longer lists, moved to their `.versions`
    /// directory (only after a listing known to be whole).
    pub retired: Vec<String>,
    /// The friend's listing may have been cut short and could not be
    /// completed (a server without pages, e.g. Go, with more files in one
    /// second than its page holds): nothing was retired, the sync state
    /// did not move.
    pub listing_truncated: bool,
    /// The friend serves listings without pages (e.g. the Go peer): its
    /// listing was walked by stepping `If-Modified-Since`.
    pub stepped: bool,
    /// Listing requests made.
    pub listing_requests: usize,
    /// Partial downloads of files no longer listed that were removed.
    pub stale_partials: usize,
    /// Whether everything arrived from a listing known to be whole and the
    /// sync state moved forward.
    pub complete: bool,
    /// Answers `429 Too Many Requests` or `503 Service Unavailable` the
    /// friend gave; each was waited out and retried (see [`RetryPolicy`]).
    pub throttled: usize,
    /// The friend's clock at the first listing answer, seconds.
    pub server_time: Option<u64>,
    /// The second `last_sync` moved to, if it did.
    pub recorded: Option<u64>,
}

impl<F> Default for Report<F> {
    fn default() -> Self {
        Report {
            listed: 0,
            downloaded: 0,
            resumed: 0,
            unchanged: 0,
            bytes: 0,
            failed: Vec::new(),
            failures: 0,
            skipped: Vec::new(),
            skipped_count: 0,
            retired: Vec::new(),
            listing_truncated: false,
            stepped: false,
            listing_requests: 0,
            stale_partials: 0,
            complete: false,
            throttled: 0,
            server_time: None,
            recorded: None,
        }
    }
}

impl<F> Report<F> {
    fn fail(&mut self, name: String, why: F) {
        self.failures += 1;
        if self.failed.len() < MAX_NAMED {
            self.failed.push((name, why));
        }
    }

    fn skip(&mut self, path: String) {
        self.skipped_count += 1;
        if self.skipped.len() < MAX_NAMED {
            self.skipped.push(path);
        }
    }

    /// The same report with each failure's reason turned by `f`.
    pub fn map_failed<G>(self, mut f: impl FnMut(F) -> G) -> Report<G> {
        Report {
            failed: self
                .failed
                .into_iter()
                .map(|(name, why)| (name, f(why)))
                .collect(),
            listed: self.listed,
            downloaded: self.downloaded,
            resumed: self.resumed,
            unchanged: self.unchanged,
            bytes: self.bytes,
            failures: self.failures,
            skipped: self.skipped,
            skipped_count: self.skipped_count,
            retired: self.retired,
            listing_truncated: self.listing_truncated,
            stepped: self.stepped,
            listing_requests: self.listing_requests,
            stale_partials: self.stale_partials,
            complete: self.complete,
            throttled: self.throttled,
            server_time: self.server_time,
            recorded: self.recorded,
        }
    }
}

/// Whether `s` is a sum as the store writes it: 64 lowercase hex digits.
pub fn is_sum(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests;
