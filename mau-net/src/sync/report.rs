//! What a sync tells its caller: errors, per-file outcomes, the report and
//! progress callbacks.

use std::time::{Duration, SystemTime};

use mau_proto::Fingerprint;
use mau_store::StoreError;

use crate::client::ClientError;
use crate::content::ListItem;
use crate::resolver::ResolveError;

pub use mau_proto::sync::{Report, MAX_NAMED};

/// Why a sync (or a listing) failed as a whole. Failures of single files
/// are in [`Report::failed`].
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
    /// of [`super::SyncOptions::retry`].
    #[error("{peer} still answered {status} after {retries} retries")]
    Throttled {
        /// The friend.
        peer: Fingerprint,
        /// Its last answer: 429 or 503.
        status: u16,
        /// Retries made (each after the wait the friend asked for).
        retries: u32,
    },
    /// The friend refused one request (429 or 503) and asked to be asked
    /// again after `retry_after`. A sync waits and retries (see
    /// [`super::RetryPolicy`]); what is left after the retries is
    /// [`SyncError::Throttled`].
    #[error("{peer} answered {status}: busy")]
    Refused {
        /// The friend.
        peer: Fingerprint,
        /// 429 or 503.
        status: u16,
        /// Its `Retry-After`, read (`None`: missing or unreadable).
        retry_after: Option<Duration>,
    },
    /// The friend answered `416` to a resumed download: the partial file
    /// does not fit the file any more (a sync starts it over, once).
    #[error("{peer} answered 416 to a resumed download")]
    RangeRefused {
        /// The friend.
        peer: Fingerprint,
    },
    /// The friend's listing went on past [`super::SyncOptions::max_listed`]
    /// entries (or too many pages): the sync stops; what arrived so far
    /// stays, the sync state does not move.
    #[error("{peer} lists more than {limit} {what}: stopped (raise the limit if this friend really shares that much)")]
    ListingTooLong {
        /// The friend.
        peer: Fingerprint,
        /// The limit that was hit.
        limit: usize,
        /// "entries" or "pages".
        what: &'static str,
    },
    /// The file does not fit the friend's disk quota
    /// ([`super::SyncOptions::quota`]); nothing of it was asked for.
    #[error(
        "over the quota for this friend: {needed} more bytes needed, {used} of {quota} in use"
    )]
    OverQuota {
        /// Bytes the file still needs.
        needed: u64,
        /// Bytes the friend's directory holds (or has reserved).
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// The body arrived slower than [`super::SyncOptions::min_rate`] allows
    /// (after [`super::SyncOptions::slow_grace`]); the partial file is
    /// kept for a resume.
    #[error("too slow: {got} bytes in {elapsed:?}, under the floor of {min_rate} bytes/s")]
    TooSlow {
        /// Bytes received in this attempt.
        got: u64,
        /// Time spent on the body.
        elapsed: Duration,
        /// The floor.
        min_rate: u64,
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

/// The result of syncing one friend: the plan's
/// [`mau_proto::sync::Report`] (its fields are reached through this one),
/// each failure's reason as text.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// The friend.
    pub friend: Option<Fingerprint>,
    /// What the sync did.
    pub report: Report<String>,
}

impl std::ops::Deref for SyncReport {
    type Target = Report<String>;

    fn deref(&self) -> &Report<String> {
        &self.report
    }
}

/// Receives progress of a sync (for progress bars). All methods default to
/// nothing; `()` is the silent observer.
pub trait Progress: Send + Sync {
    /// A listing page is in: `files` more to check, `bytes` more in all
    /// (called once per page: a listing is processed as it arrives).
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
    /// The listing may have been cut short (see
    /// [`Report::listing_truncated`]).
    pub truncated: bool,
}
