//! Crash-safe, owner-only file writes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::IdentityError;

/// Name of the directory holding keys, below the account root.
pub const MAU_DIR: &str = ".mau";
/// Name of the account key file inside [`MAU_DIR`].
pub const ACCOUNT_FILE: &str = "account.pgp";

/// Creates `<root>/.mau` (mode 0700) if needed and returns its path.
pub fn ensure_mau_dir(root: &Path) -> Result<PathBuf, IdentityError> {
    let dir = root.join(MAU_DIR);
    ensure_private_dir(&dir)?;
    Ok(dir)
}

/// Creates `dir` and its parents if needed and makes it owner-only (0700).
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), IdentityError> {
    create_private_dir(dir).map_err(|e| IdentityError::io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| IdentityError::io(dir, e))?;
    }
    Ok(())
}

fn open_owner_only(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// Creates `dir` and its missing parents, each new one readable by its
/// owner only (mode 0700 on Unix); an existing one is left as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes a directory's entries durable (fsync of the directory: what a
/// rename or a new file in it needs before it survives a crash). A no-op
/// where directories cannot be opened (not Unix).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically: a temporary file (mode 0600, a
/// hidden `.<name>.tmp.<pid>.<n>`, which listings skip) in the same
/// directory, fsync, rename over `path`, fsync of the directory. A crash at
/// any point leaves either the old file or the new one, never a mix; the
/// temporary file a crash leaves is removed by a later write of `path`
/// once it is a minute old.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IdentityError> {
    write_atomic_hooked(path, bytes, true, |_| Ok(()))
}

/// [`write_atomic`] with a hook run after the temporary file is synced and
/// before the rename (tests use it to simulate an interruption there).
/// With `replace == false` an existing `path` is never overwritten: the
/// temporary file is hard-linked into place (atomic, fails if `path`
/// exists) and the error is `AlreadyExists`.
pub(crate) fn write_atomic_hooked(
    path: &Path,
    bytes: &[u8],
    replace: bool,
    before_rename: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<(), IdentityError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // A bare file name's parent is "", which cannot be opened to fsync.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> io::Result<()> {
        let mut f = open_owner_only(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        before_rename(&tmp)?;
        if replace {
            fs::rename(&tmp, path)?;
        } else {
            fs::hard_link(&tmp, path)?;
            fs::remove_file(&tmp)?;
        }
        sync_dir(dir)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(IdentityError::io(path, e));
    }
    remove_stale_temps(dir, &name, STALE_TEMP);
    Ok(())
}

/// A temporary file of [`write_atomic`] older than this was left by a writer
/// that died (`kill -9`, power loss): a write takes milliseconds. Younger
/// ones may belong to a live writer in another process (two `mau sync` can
/// save the sync state at once) and are left alone.
const STALE_TEMP: Duration = Duration::from_secs(60);

/// Removes the `.<name>.tmp.*` files in `dir` older than `age`, which a killed
/// writer left behind, so they cannot pile up over many crashes: every
/// successful write of `name` sweeps them. Best effort (a failure only leaves
/// a file that nothing reads); returns how many were removed.
pub(crate) fn remove_stale_temps(dir: &Path, name: &str, age: Duration) -> usize {
    let prefix = format!(".{name}.tmp.");
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|e| e >= age);
        if old && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Removes a file and syncs its directory.
pub(crate) fn remove_synced(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_sweeps_stale_temporaries_of_the_same_file_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        let plant = |name: &str, old: bool| {
            let p = dir.path().join(name);
            let mut f = File::create(&p).expect("create");
            f.write_all(b"half").expect("write");
            if old {
                f.set_modified(hour_ago).expect("set mtime");
            }
            p
        };
        let stale = plant(".state.json.tmp.4242.0", true);
        let fresh = plant(".state.json.tmp.4243.0", false);
        let other = plant(".other.json.tmp.4242.0", true);
        write_atomic(&path, b"{}").expect("write");
        assert!(!stale.exists(), "a stale temporary is removed");
        assert!(fresh.exists(), "a young one may be a live writer's");
        assert!(other.exists(), "another file's temporaries are not ours");
        assert_eq!(fs::read(&path).expect("read"), b"{}");
    }
}
