//! A small disk that fills up: a tmpfs mounted on a directory, whose room
//! the scenario sets, so that a write runs out of space partway (the
//! kernel's own `ENOSPC` after the bytes that fit, on the real code path).
//!
//! Mounting needs root: without it [`Disk::mount`] says why and the
//! scenario runs without this fault (its report says so).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file that takes the room.
const FILLER: &str = ".filler";

/// A tmpfs on a directory, unmounted when dropped.
pub(crate) struct Disk {
    dir: PathBuf,
}

impl Disk {
    /// Mounts a tmpfs of `size` bytes on `dir` (created if needed; what it
    /// held is hidden until the unmount).
    pub(crate) fn mount(dir: &Path, size: u64) -> Result<Disk, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Ok(s) if s.success() => Ok(Disk {
                dir: dir.to_path_buf(),
            }),
            Ok(s) => Err(format!(
                "mount tmpfs on {}: {s} (needs root)",
                dir.display()
            )),
            Err(e) => Err(format!("mount tmpfs on {}: {e}", dir.display())),
        }
    }

    /// Fills the disk, then leaves `room` bytes free (the file system
    /// counts in pages: rounded to them).
    pub(crate) fn fill(&self, room: u64) -> std::io::Result<()> {
        let path = self.dir.join(FILLER);
        let mut f = std::fs::File::create(&path)?;
        let block = vec![0u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => return Err(e),
            }
        }
        let len = f.metadata()?.len();
        f.set_len(len.saturating_sub(room))
    }

    /// The room is back.
    pub(crate) fn free(&self) -> std::io::Result<()> {
        std::fs::remove_file(self.dir.join(FILLER))
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
