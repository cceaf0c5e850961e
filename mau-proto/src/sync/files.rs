//! The decisions about one listed file: skip it, resume or restart its
//! partial download, the quota, the throughput floor; and the quota
//! itself.

use std::time::Duration;

use super::{Entry, GiveUp, Limits};
use crate::time::Time;

/// How a file ended well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOutcome {
    /// The local copy already had this size and sum.
    Unchanged,
    /// Downloaded and installed.
    Downloaded {
        /// Bytes received in this sync.
        bytes: u64,
        /// An earlier partial download was continued.
        resumed: bool,
    },
}

/// What a friend's directory may hold: its bytes on disk at the start of
/// the sync plus what downloads reserved since.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    limit: u64,
    used: u64,
}

impl Quota {
    /// A quota of `limit` bytes of which `used` are on disk.
    pub fn new(limit: u64, used: u64) -> Self {
        Quota { limit, used }
    }

    /// Bytes in use or reserved.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Reserves `n` bytes, or says why not.
    pub fn reserve(&mut self, n: u64) -> Result<(), GiveUp> {
        match self.used.checked_add(n) {
            Some(after) if after <= self.limit => {
                self.used = after;
                Ok(())
            }
            _ => Err(GiveUp::OverQuota {
                needed: n,
                used: self.used,
                quota: self.limit,
            }),
        }
    }

    /// Gives back `n` reserved bytes that did not stay on disk.
    pub fn release(&mut self, n: u64) {
        self.used = self.used.saturating_sub(n);
    }
}

/// What to do with a file once its local state is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// The local copy is this file.
    Unchanged,
    /// Give up before asking (bad sum, over the quota).
    GiveUp(GiveUp),
    /// Install the partial download: it already holds the whole file.
    Install,
    /// Fetch from `from`; `drop_partial`: remove the partial download
    /// first (it is longer than the file).
    Fetch {
        /// Where the body starts.
        from: u64,
        /// Remove the partial download first.
        drop_partial: bool,
    },
}

/// Decides how a listed file starts, and reserves its bytes: the local
/// copy matches (skip), a partial download longer than the file (drop it,
/// restart), a complete one (install), otherwise fetch the rest. The
/// bytes already on disk are counted in the quota's usage.
pub fn start(entry: &Entry, same: bool, partial: u64, quota: &mut Quota) -> Start {
    if !super::is_sum(&entry.sum) {
        return Start::GiveUp(GiveUp::BadSum(entry.sum.clone()));
    }
    if same {
        return Start::Unchanged;
    }
    let (have, drop_partial) = match partial > entry.size {
        true => (0, true),
        false => (partial, false),
    };
    if let Err(why) = quota.reserve(entry.size - have) {
        return Start::GiveUp(why);
    }
    if have == entry.size && have > 0 {
        return Start::Install;
    }
    Start::Fetch {
        from: have,
        drop_partial,
    }
}

/// When a download that started at `started` and has `got` bytes must end
/// under the floor: after the grace, on average at least `min_rate` bytes
/// a second (so the listed size bounds the time too: grace + size / rate).
pub fn deadline(limits: &Limits, started: Time, got: u64) -> Time {
    let rate = limits.min_rate.max(1);
    let earned = Duration::from_millis(
        u64::try_from(u128::from(got) * 1000 / u128::from(rate)).unwrap_or(u64::MAX),
    );
    started + limits.slow_grace.saturating_add(earned)
}

/// Where a file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Its local state was asked for.
    Inspecting,
    /// Waiting for room in the request window, to fetch from `from`.
    Ready {
        /// Where the body starts.
        from: u64,
    },
    /// Being fetched from `from` since `started`, `got` bytes so far.
    Fetching {
        /// Where the body starts.
        from: u64,
        /// When it was asked for.
        started: Time,
        /// Bytes received.
        got: u64,
    },
    /// Refused: asked again from `from` at `until`.
    Waiting {
        /// Where the body starts.
        from: u64,
        /// When to ask again.
        until: Time,
    },
    /// Being installed.
    Installing {
        /// Bytes received in this sync.
        got: u64,
        /// An earlier partial download was continued.
        resumed: bool,
        /// Alone, or where in its batch.
        step: Install,
    },
}

/// How a file is being installed: alone (checked, made durable, renamed
/// and its directory fsynced by one [`super::Command::Install`]), or with
/// a batch of small files whose flushes are shared
/// ([`super::Command::Stage`], then [`super::Command::Commit`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// One [`super::Command::Install`] for this file.
    Alone,
    /// Being checked and written, not yet durable.
    Staging,
    /// Written and checked, waiting for its batch's commit.
    Staged,
    /// In a running [`super::Command::Commit`].
    Committing,
}

/// Whether a fetched file joins a batch: a small file fetched whole in
/// this sync. A resumed one (its partial file from an earlier sync) is
/// installed alone, as is a large one (its own fsync costs little next
/// to its bytes, and a batch would hold its bytes unflushed longer).
pub fn batched(entry: &Entry, resumed: bool) -> bool {
    !resumed && entry.size <= super::BATCH_FILE_MAX
}

/// Whether the staged files are committed now: when the batch is full,
/// or when no file is on its way to join it (nothing is being inspected,
/// fetched or staged: waiting longer would only delay them, and the sync
/// cannot end before they are in place).
pub fn commit_now(staged: usize, on_the_way: usize) -> bool {
    staged >= super::BATCH_MAX || (staged > 0 && on_the_way == 0)
}

/// One listed file being worked on.
#[derive(Clone, Debug)]
pub struct File {
    /// Its name.
    pub name: String,
    /// Its listing entry.
    pub entry: Entry,
    /// Where it is.
    pub stage: Stage,
    /// Retries after refusals of the current request.
    pub retries: u32,
    /// A refused range was restarted from the start once.
    pub restarted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64) -> Entry {
        Entry {
            path: "/p2p/f/a.pgp".into(),
            name: Some("a.pgp".into()),
            size,
            sum: "ab".repeat(32),
        }
    }

    #[test]
    fn a_matching_copy_is_left_alone() {
        let mut q = Quota::new(0, 0);
        assert_eq!(start(&entry(10), true, 0, &mut q), Start::Unchanged);
        assert_eq!(q.used(), 0);
    }

    #[test]
    fn a_bad_sum_is_refused_before_anything() {
        let mut e = entry(10);
        e.sum = "AB".repeat(32);
        let mut q = Quota::new(100, 0);
        assert_eq!(
            start(&e, true, 0, &mut q),
            Start::GiveUp(GiveUp::BadSum("AB".repeat(32)))
        );
    }

    #[test]
    fn a_partial_download_is_resumed_or_restarted() {
        let mut q = Quota::new(1000, 0);
        assert_eq!(
            start(&entry(100), false, 40, &mut q),
            Start::Fetch {
                from: 40,
                drop_partial: false
            }
        );
        assert_eq!(q.used(), 60, "the 40 bytes here are already counted");
        assert_eq!(
            start(&entry(100), false, 400, &mut q),
            Start::Fetch {
                from: 0,
                drop_partial: true
            }
        );
        assert_eq!(start(&entry(100), false, 100, &mut q), Start::Install);
        assert_eq!(
            start(&entry(0), false, 0, &mut q),
            Start::Fetch {
                from: 0,
                drop_partial: false
            }
        );
    }

    #[test]
    fn the_quota_is_checked_against_the_listed_size() {
        let mut q = Quota::new(100, 30);
        assert!(matches!(
            start(&entry(71), false, 0, &mut q),
            Start::GiveUp(GiveUp::OverQuota {
                needed: 71,
                used: 30,
                quota: 100
            })
        ));
        assert!(matches!(
            start(&entry(70), false, 0, &mut q),
            Start::Fetch { .. }
        ));
        assert!(q.reserve(1).is_err());
        q.release(50);
        assert!(q.reserve(50).is_ok());
        assert!(q.reserve(u64::MAX).is_err(), "no overflow");
        q.release(u64::MAX);
        assert_eq!(q.used(), 0);
    }

    #[test]
    fn small_whole_downloads_are_batched() {
        assert!(batched(&entry(0), false));
        assert!(batched(&entry(crate::sync::BATCH_FILE_MAX), false));
        assert!(!batched(&entry(crate::sync::BATCH_FILE_MAX + 1), false));
        assert!(!batched(&entry(10), true), "a resumed file goes alone");
    }

    #[test]
    fn a_batch_commits_when_full_or_when_nothing_else_can_join() {
        let max = crate::sync::BATCH_MAX;
        assert!(!commit_now(0, 0), "nothing to commit");
        assert!(!commit_now(1, 1), "a file on its way may join");
        assert!(!commit_now(max - 1, 8));
        assert!(commit_now(max, 8), "full");
        assert!(commit_now(1, 0), "nothing else on its way");
    }

    #[test]
    fn the_floor_grants_grace_plus_bytes_over_rate() {
        let limits = Limits {
            min_rate: 100,
            slow_grace: Duration::from_secs(2),
            ..Limits::default()
        };
        assert_eq!(deadline(&limits, Time(1000), 0), Time(3000));
        assert_eq!(deadline(&limits, Time(1000), 50), Time(3500));
        assert_eq!(deadline(&limits, Time(0), u64::MAX), Time(u64::MAX));
        let zero = Limits {
            min_rate: 0,
            ..limits
        };
        assert_eq!(deadline(&zero, Time(0), 1), Time(3000), "a rate of 0 is 1");
    }
}
