//! Starting the write-back of a large download while it arrives, so the
//! fsync that makes it durable before its rename has little left to do.
//! Without it, a 200 MiB file's fsync wrote all of it after the last byte
//! arrived (~40 ms on a virtio disk, a tenth of the sync), with the CPU
//! otherwise idle.

use std::fs::File;

/// Dirty bytes a [`WriteBack`] lets accumulate before it starts their
/// write-back.
const STEP: u64 = 8 << 20;

/// Tracks how much of a file being appended has had its write-back
/// started.
#[derive(Debug, Default)]
pub struct WriteBack {
    /// Bytes up to here have had their write-back started.
    started: u64,
    /// Bytes in the file so far.
    end: u64,
}

impl WriteBack {
    /// A tracker for a file whose first `at` bytes need no kick (already
    /// on disk, or too few to matter).
    pub fn new(at: u64) -> WriteBack {
        WriteBack {
            started: at,
            end: at,
        }
    }

    /// Called after appending `n` bytes: starts the write-back of what was
    /// written since the last start once it reaches 8 MiB. Never waits
    /// for the disk; only a hint (errors are left for the fsync, which
    /// reports them).
    pub fn wrote(&mut self, file: &File, n: u64) {
        self.end = self.end.saturating_add(n);
        if self.end < self.started.saturating_add(STEP) {
            return;
        }
        start(file, self.started, self.end - self.started);
        self.started = self.end;
    }
}

/// Starts writing `len` bytes at `offset` back to disk without waiting.
/// Linux: `posix_fadvise(POSIX_FADV_DONTNEED)` starts the write-back of
/// the range's dirty pages (`WB_SYNC_NONE`) and drops only its clean,
/// idle pages: the just-written pages are dirty or under write-back, so
/// they stay cached. (`sync_file_range(2)` says the same more directly
/// but has no safe wrapper in our dependencies.)
#[cfg(target_os = "linux")]
fn start(file: &File, offset: u64, len: u64) {
    let len = std::num::NonZeroU64::new(len);
    if let Err(e) = rustix::fs::fadvise(file, offset, len, rustix::fs::Advice::DontNeed) {
        tracing::debug!(error = %e, "write-back hint refused");
    }
}

/// Elsewhere the fsync does all the work.
#[cfg(not(target_os = "linux"))]
fn start(_file: &File, _offset: u64, _len: u64) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn write_back_starts_every_step_and_keeps_the_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        let mut file = File::create(&path).expect("create");
        let chunk = vec![7u8; 1 << 20];
        let mut wb = WriteBack::new(0);
        let mut starts = Vec::new();
        for _ in 0..20 {
            file.write_all(&chunk).expect("write");
            let before = wb.started;
            wb.wrote(&file, chunk.len() as u64);
            if wb.started != before {
                starts.push(wb.started >> 20);
            }
        }
        assert_eq!(starts, vec![8, 16], "one start per 8 MiB written");
        file.sync_all().expect("fsync");
        // The hint drops no data: every byte reads back.
        let back = std::fs::read(&path).expect("read");
        assert_eq!(back.len(), 20 << 20);
        assert!(back.iter().all(|b| *b == 7));
    }

    #[test]
    fn a_resumed_file_counts_from_its_first_new_byte() {
        let dir = tempfile::tempdir().expect("dir");
        let file = File::create(dir.path().join("f")).expect("create");
        let mut wb = WriteBack::new(5 << 20);
        wb.wrote(&file, 7 << 20);
        assert_eq!(wb.started, 5 << 20, "7 MiB new: not yet");
        wb.wrote(&file, 1 << 20);
        assert_eq!(wb.started, 13 << 20);
    }
}
