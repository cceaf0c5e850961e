//! Installing a batch of checked downloads with shared flushes: their
//! data made durable together ([`Flush`]), then each renamed into place,
//! then one directory fsync for all. A sync of many small files would
//! otherwise pay a file fsync and a directory fsync per file.
//!
//! A crash at any point leaves each file its old copy or the new checked
//! one: the new bytes are durable before any rename, and a rename is
//! atomic. A file is reported installed only after the directory fsync
//! that follows its rename, so a caller that records progress (the sync's
//! `last_sync`) only after that never records a file that could be lost.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use mau_proto::Fingerprint;

use crate::{place, validate_name, Store, StoreError, TempGuard};

/// How the staged files of a batch are made durable together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// One `syncfs(2)` of the file system holding them (Linux 5.8 and
    /// later, where it reports write-back errors). It also writes back
    /// whatever else is dirty on that file system.
    FileSystem,
    /// One `fdatasync` per file as it is staged ([`Store::staged`], on
    /// the staging thread: several run at once and share the journal's
    /// commits), the commit only checking that each is there (portable;
    /// measured: one thread fdatasyncing a whole batch in a row took twice
    /// as long as the per-file fsyncs it replaced).
    EachFile,
}

impl Flush {
    /// The flush used where nothing is asked: [`Flush::FileSystem`] where
    /// `syncfs(2)` reports errors, else [`Flush::EachFile`].
    pub fn best() -> Flush {
        match syncfs_reports_errors() {
            true => Flush::FileSystem,
            false => Flush::EachFile,
        }
    }
}

/// A download checked ([`Store::check_download`], or in memory), written
/// to its partial file and passed to [`Store::staged`], not yet installed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    /// The file name in the friend's directory.
    pub name: String,
    /// Its partial file ([`Store::partial_path`]).
    pub partial: PathBuf,
}

/// Whether `syncfs(2)` reports write-back errors here: Linux 5.8 or later
/// (before, it returned 0 whatever happened).
fn syncfs_reports_errors() -> bool {
    #[cfg(target_os = "linux")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
            let mut parts = release
                .trim()
                .split(|c: char| !c.is_ascii_digit())
                .map(|p| p.parse::<u32>().unwrap_or(0));
            let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            (major, minor) >= (5, 8)
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// `syncfs(2)` of the file system holding `dir`.
#[cfg(target_os = "linux")]
fn syncfs(dir: &Path) -> io::Result<()> {
    let d = File::open(dir)?;
    rustix::fs::syncfs(&d).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_dir: &Path) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// The same error again, for each file a shared step failed for.
fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io { path, source } => {
            StoreError::io(path, io::Error::new(source.kind(), source.to_string()))
        }
        other => StoreError::io(Path::new(""), io::Error::other(other.to_string())),
    }
}

impl Store {
    /// Readies a checked and written partial file for its batch's commit
    /// under `flush`: with [`Flush::EachFile`] its data is made durable
    /// here; with [`Flush::FileSystem`] the commit's flush covers it.
    pub fn staged(&self, partial: &Path, flush: Flush) -> Result<(), StoreError> {
        match flush {
            Flush::FileSystem => Ok(()),
            Flush::EachFile => File::open(partial)
                .and_then(|f| f.sync_data())
                .map_err(|e| StoreError::io(partial, e)),
        }
    }

    /// Installs `staged` downloads of `fpr` together (see the module
    /// docs), [`Store::staged`] with [`Flush::best`]: one flush, a rename each (an existing
    /// copy kept as a version, as [`Store::install`] does), one directory
    /// fsync. Returns each file's installed path or error, in order; a
    /// file that failed before its rename is removed, its old copy left.
    pub fn commit_downloads(
        &self,
        fpr: &Fingerprint,
        staged: &[Staged],
    ) -> Vec<Result<PathBuf, StoreError>> {
        self.commit_downloads_with(fpr, staged, Flush::best())
    }

    /// [`Store::commit_downloads`] with a chosen flush (the one its files
    /// were [`Store::staged`] with).
    pub fn commit_downloads_with(
        &self,
        fpr: &Fingerprint,
        staged: &[Staged],
        flush: Flush,
    ) -> Vec<Result<PathBuf, StoreError>> {
        let dir = self.dir_of(fpr);
        // Each file's guard removes its partial file unless it is renamed.
        let mut guards: Vec<TempGuard> = staged
            .iter()
            .map(|s| TempGuard(Some(s.partial.clone())))
            .collect();
        let mut results: Vec<Result<PathBuf, StoreError>> = staged
            .iter()
            .map(|s| validate_name(&s.name).map(|()| dir.join(&s.name)))
            .collect();
        let flushed = match flush {
            Flush::FileSystem => syncfs(&dir).map_err(|e| StoreError::io(&dir, e)),
            Flush::EachFile => Ok(()),
        };
        if let Err(e) = &flushed {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(again(e));
            }
        }
        // Durable: now each may replace its old copy (a partial file that
        // is gone since the flush fails its rename, before anything of
        // its old copy is touched).
        let mut renamed = 0;
        for ((s, r), g) in staged.iter().zip(results.iter_mut()).zip(&mut guards) {
            if let Ok(dest) = r {
                match place(&s.partial, dest) {
                    Ok(()) => {
                        g.0 = None;
                        renamed += 1;
                    }
                    Err(e) => *r = Err(e),
                }
            }
        }
        if renamed > 0 {
            // One fsync for the batch, shared with other installs into it.
            if let Err(e) = self.dir_sync.renamed_into(&dir) {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(again(&e));
                }
            }
        }
        results
    }
}
