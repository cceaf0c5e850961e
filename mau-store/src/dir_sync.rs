//! Directory fsyncs shared by renames done together: a rename is durable
//! once its directory is fsynced, and one fsync that starts after several
//! renames into the same directory covers them all (a group commit). A
//! sync installing many small files would otherwise pay one directory
//! fsync per file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::StoreError;

/// Directories forgotten past this many (a store has one per friend, and
/// one per file with versions): forgetting only costs an extra fsync.
const MAX_DIRS: usize = 1024;

/// Renames counted, and how far each directory's last fsync reaches.
#[derive(Default)]
pub(crate) struct DirSync {
    /// Renames done so far (each counted after it is done).
    renamed: AtomicU64,
    /// Per directory: every rename into it numbered up to this value is
    /// durable. Held while fsyncing, so that waiters see the result.
    synced: Mutex<HashMap<PathBuf, u64>>,
}

impl DirSync {
    /// Makes a rename into `dir` just done durable: fsyncs `dir`, unless
    /// an fsync of it that started after the rename has completed.
    pub(crate) fn renamed_into(&self, dir: &Path) -> Result<(), StoreError> {
        let ticket = self.renamed.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if synced.get(dir).is_some_and(|&s| s >= ticket) {
            return Ok(());
        }
        // Every rename numbered up to here is done: this fsync covers
        // those into `dir`.
        let upto = self.renamed.load(Ordering::SeqCst);
        crate::sync_dir(dir)?;
        if synced.len() >= MAX_DIRS {
            synced.clear();
        }
        synced.insert(dir.to_path_buf(), upto);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_rename_is_not_covered_by_an_earlier_sync() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = DirSync::default();
        s.renamed_into(d.path()).expect("sync");
        assert_eq!(s.synced.lock().unwrap().get(d.path()), Some(&1));
        // A second rename needs a second fsync.
        s.renamed_into(d.path()).expect("sync");
        assert_eq!(s.synced.lock().unwrap().get(d.path()), Some(&2));
        // A missing directory is an error, and records nothing.
        let gone = d.path().join("gone");
        assert!(s.renamed_into(&gone).is_err());
        assert_eq!(s.synced.lock().unwrap().get(&gone), None);
    }

    #[test]
    fn a_rename_covered_by_a_later_fsync_needs_none() {
        let d = tempfile::tempdir().expect("tempdir");
        let gone = d.path().join("gone");
        let s = DirSync::default();
        // Renames 1 and 2 done, then another thread's fsync covered up to
        // 5 while this one waited: rename 3 is durable already (an fsync
        // now would fail, the directory is gone).
        s.renamed.store(2, Ordering::SeqCst);
        s.synced.lock().unwrap().insert(gone.clone(), 5);
        s.renamed_into(&gone).expect("covered");
        // Past what the fsync covered, it is needed again.
        s.renamed.store(5, Ordering::SeqCst);
        assert!(s.renamed_into(&gone).is_err());
    }
}
