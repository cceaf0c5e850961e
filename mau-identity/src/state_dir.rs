//! `<root>/.mau-rs/`: mau-rs's own state, kept where the Go peer does not look.
//!
//! Go's keyring reads **every** file in `<root>/.mau/` except `account.pgp`
//! as a friend's key (and every directory there as a sub-keyring), and fails
//! on anything else; it follows only directories of `<root>` whose name does
//! not start with a dot. So `.mau/` holds only what Go holds there (the
//! account and friends' keys) and everything that is ours alone lives in
//! `<root>/.mau-rs/`, which both implementations can share a directory with.
//! This module is the one place that names those files.
//!
//! Older mau-rs versions kept the routing table, control socket, bootstrap
//! list and sync state in `.mau/`: [`StateDir::migrate`] moves them. Go's own
//! `.mau/sync_state.json` breaks Go's keyring the same way; it is moved to
//! `.mau-rs/go-sync-state.json` and not read (see docs/interop.md).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::IdentityError;
use crate::fsutil::{ensure_private_dir, MAU_DIR};

/// Name of mau-rs's state directory below the account root.
pub const STATE_DIR: &str = ".mau-rs";
/// The saved routing table.
pub const ROUTING_TABLE_FILE: &str = "routing_table.json";
/// The running server's control socket.
pub const CONTROL_SOCKET_FILE: &str = "control.sock";
/// Bootstrap peers, one `FINGERPRINT@HOST:PORT` a line.
pub const BOOTSTRAP_FILE: &str = "bootstrap.txt";
/// When each friend was last synced (the Go format).
pub const SYNC_STATE_FILE: &str = "sync_state.json";
/// The lock a running server holds (its pid and address inside).
pub const SERVER_LOCK_FILE: &str = "server.pid";
/// The account's public information, readable without the passphrase.
pub const PUBLIC_CACHE_FILE: &str = "public.json";
/// Where a `sync_state.json` found in `.mau/` is put aside.
pub const SET_ASIDE_SYNC_STATE_FILE: &str = "go-sync-state.json";

/// The paths of mau-rs's own state under an account root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

/// What [`StateDir::migrate`] moved: `(from, to)` pairs.
pub type Moved = Vec<(PathBuf, PathBuf)>;

impl StateDir {
    /// The state of the account rooted at `root`.
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    /// `<root>/.mau-rs`.
    pub fn dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// Creates `<root>/.mau-rs` (mode 0700) if needed and returns its path.
    pub fn ensure(&self) -> Result<PathBuf, IdentityError> {
        let dir = self.dir();
        ensure_private_dir(&dir)?;
        Ok(dir)
    }

    /// The saved routing table.
    pub fn routing_table(&self) -> PathBuf {
        self.dir().join(ROUTING_TABLE_FILE)
    }

    /// The control socket of a running server.
    pub fn control_socket(&self) -> PathBuf {
        self.dir().join(CONTROL_SOCKET_FILE)
    }

    /// The bootstrap list.
    pub fn bootstrap(&self) -> PathBuf {
        self.dir().join(BOOTSTRAP_FILE)
    }

    /// The sync state.
    pub fn sync_state(&self) -> PathBuf {
        self.dir().join(SYNC_STATE_FILE)
    }

    /// The lock file of the running server: one server per directory.
    pub fn server_lock(&self) -> PathBuf {
        self.dir().join(SERVER_LOCK_FILE)
    }

    /// The account's public information, readable without the passphrase.
    pub fn public_cache(&self) -> PathBuf {
        self.dir().join(PUBLIC_CACHE_FILE)
    }

    /// Moves state an older mau-rs (or Go, for `sync_state.json`) left in
    /// `<root>/.mau/` into `<root>/.mau-rs/`, so that Go can read `.mau/`.
    /// A file already at the new place wins: the old one is then removed.
    /// `sync_state.json` found in `.mau/` goes to
    /// [`SET_ASIDE_SYNC_STATE_FILE`] (replacing an older one) and is never
    /// read: its marks may come from Go's one-page sync and would hide files
    /// from ours (the next sync of each friend is a full one; files already
    /// here are not downloaded again). Nothing is created when there is
    /// nothing to move. Returns what was moved or removed.
    pub fn migrate(&self) -> Result<Moved, IdentityError> {
        let old = self.root.join(MAU_DIR);
        let mut moved = Vec::new();
        let plan = [
            (ROUTING_TABLE_FILE, ROUTING_TABLE_FILE, false),
            (CONTROL_SOCKET_FILE, CONTROL_SOCKET_FILE, false),
            (BOOTSTRAP_FILE, BOOTSTRAP_FILE, false),
            (SYNC_STATE_FILE, SET_ASIDE_SYNC_STATE_FILE, true),
        ];
        for (name, new_name, replace) in plan {
            let from = old.join(name);
            if fs::symlink_metadata(&from).is_err() {
                continue;
            }
            let to = self.ensure()?.join(new_name);
            if !replace && fs::symlink_metadata(&to).is_ok() {
                fs::remove_file(&from).map_err(|e| IdentityError::io(&from, e))?;
            } else {
                fs::rename(&from, &to).map_err(|e| IdentityError::io(&from, e))?;
            }
            moved.push((from, to));
        }
        if !moved.is_empty() {
            sync(&old).map_err(|e| IdentityError::io(&old, e))?;
            sync(&self.dir()).map_err(|e| IdentityError::io(self.dir(), e))?;
        }
        Ok(moved)
    }
}

fn sync(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_outside_the_go_keyring() {
        let s = StateDir::new(Path::new("/r"));
        for p in [
            s.routing_table(),
            s.control_socket(),
            s.bootstrap(),
            s.sync_state(),
        ] {
            assert!(p.starts_with("/r/.mau-rs"), "{}", p.display());
        }
    }

    #[test]
    fn migrate_moves_old_state_and_keeps_newer() {
        let root = tempfile::tempdir().unwrap();
        let old = root.path().join(MAU_DIR);
        fs::create_dir_all(&old).unwrap();
        let s = StateDir::new(root.path());
        assert!(s.migrate().unwrap().is_empty());
        assert!(!s.dir().exists(), "nothing to move creates nothing");
        for name in [ROUTING_TABLE_FILE, BOOTSTRAP_FILE, SYNC_STATE_FILE] {
            fs::write(old.join(name), format!("old {name}")).unwrap();
        }
        fs::write(old.join("account.pgp"), "key").unwrap();
        s.ensure().unwrap();
        fs::write(s.bootstrap(), "new").unwrap();
        assert_eq!(s.migrate().unwrap().len(), 3);
        let left: Vec<_> = fs::read_dir(&old)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["account.pgp"]);
        assert_eq!(
            fs::read_to_string(s.routing_table()).unwrap(),
            "old routing_table.json"
        );
        assert_eq!(fs::read_to_string(s.bootstrap()).unwrap(), "new");
        assert!(!s.sync_state().exists(), "Go's marks are not ours");
        assert_eq!(
            fs::read_to_string(s.dir().join(SET_ASIDE_SYNC_STATE_FILE)).unwrap(),
            "old sync_state.json"
        );
        assert!(s.migrate().unwrap().is_empty());
    }
}
