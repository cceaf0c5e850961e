//! One server per account directory: an exclusive `flock` on a pid file.
//!
//! The lock is the kernel's, so it is released when the holder dies however
//! it dies (kill -9 included) and a stale file never blocks a new server.
//! The file holds a small JSON record (pid, addresses, start time) that only serves the
//! error message and `mau server status`; the file is never unlinked, since
//! unlinking a locked file lets a second server lock a fresh one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the lock file says about the server holding it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Its process id.
    pub pid: u32,
    /// Where it listens, once it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The address it advertises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertised: Option<String>,
    /// When it started (seconds since the Unix epoch).
    #[serde(default)]
    pub started: u64,
    /// The external address mapped on the gateway at start, and through
    /// which protocol (PCP, NAT-PMP, UPnP), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upnp: Option<String>,
    /// Where its metrics are served, if they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

impl Holder {
    /// "pid N, listening on ADDR" (or "pid N, starting").
    pub fn describe(&self) -> String {
        match &self.listen {
            Some(a) => format!("pid {}, listening on {a}", self.pid),
            None => format!("pid {}, starting", self.pid),
        }
    }
}

/// The held lock; released when dropped (or when the process ends).
pub struct ServerLock {
    file: File,
    path: PathBuf,
}

/// `flock(fd, op)`; `Ok(false)` when another process holds it.
fn flock(file: &File, op: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: flock takes a descriptor we own for the duration of the call.
    let r = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

impl ServerLock {
    /// Takes the lock at `path`, or says who holds it.
    pub fn acquire(path: &Path) -> Result<ServerLock, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // A `mau status` probing with a shared lock holds it for
        // microseconds: retry briefly before blaming a running server.
        let mut locked = false;
        for _ in 0..5 {
            locked = flock(&file, libc::LOCK_EX).map_err(|e| format!("{}: {e}", path.display()))?;
            if locked || read_holder(&mut file).is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !locked {
            let who = read_holder(&mut file)
                .map(|h| h.describe())
                .unwrap_or_else(|| "pid unknown".into());
            return Err(format!(
                "a server already runs in this directory ({who}; lock {}): stop it with `mau server stop` first",
                path.display()
            ));
        }
        let mut lock = ServerLock {
            file,
            path: path.to_path_buf(),
        };
        lock.write(&Holder {
            pid: std::process::id(),
            ..Holder::default()
        })?;
        Ok(lock)
    }

    /// Records what the server is (where it listens, ...) for `mau server
    /// status` and the next server's error message.
    pub fn write(&mut self, holder: &Holder) -> Result<(), String> {
        let text = serde_json::to_string(holder).map_err(|e| e.to_string())?;
        let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
        self.file.set_len(0).map_err(err)?;
        self.file.seek(SeekFrom::Start(0)).map_err(err)?;
        self.file.write_all(text.as_bytes()).map_err(err)
    }
}

impl Drop for ServerLock {
    fn drop(&mut self) {
        // Empty, so that nobody reads a dead server's pid as a live one.
        let _ = self.file.set_len(0);
    }
}

/// Who holds the lock at `path`, if anyone (for `mau server status`).
pub fn holder(path: &Path) -> Option<Holder> {
    let mut file = File::open(path).ok()?;
    match flock(&file, libc::LOCK_SH) {
        Ok(false) => read_holder(&mut file),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s/server.pid");
        let mut first = ServerLock::acquire(&path).expect("first");
        let me = Holder {
            pid: std::process::id(),
            listen: Some("127.0.0.1:9".into()),
            ..Holder::default()
        };
        first.write(&me).expect("write");
        // flock is per open file description: a second open in this
        // process conflicts like another process would.
        let err = ServerLock::acquire(&path).err().expect("refused");
        assert!(
            err.contains(&format!("pid {}", me.pid)) && err.contains("127.0.0.1:9"),
            "{err}"
        );
        assert_eq!(holder(&path), Some(me));
        drop(first);
        assert_eq!(holder(&path), None);
        ServerLock::acquire(&path).expect("free again");
    }
}
