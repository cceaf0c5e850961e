//! Where the `mau` command keeps its own state for an account directory.
//!
//! Every state path is computed here, from [`state_dir`], so that moving the
//! state (for instance out of the directory the Go implementation reads as a
//! keyring) is a change to one function.

use std::path::{Path, PathBuf};

use mau_identity::{ACCOUNT_FILE, MAU_DIR};

/// The account's key file (where Go keeps it too; not part of the state).
pub fn account_file(dir: &Path) -> PathBuf {
    dir.join(MAU_DIR).join(ACCOUNT_FILE)
}

/// The folder holding the server's state for the account in `dir`.
pub fn state_dir(dir: &Path) -> PathBuf {
    dir.join(MAU_DIR)
}

/// The running server's control socket.
pub fn control_socket(dir: &Path) -> PathBuf {
    state_dir(dir).join("control.sock")
}

/// The lock file a running server holds: one server per directory.
pub fn server_lock(dir: &Path) -> PathBuf {
    state_dir(dir).join("server.pid")
}

/// The saved routing table.
pub fn routing_table(dir: &Path) -> PathBuf {
    state_dir(dir).join("routing_table.json")
}

/// Bootstrap peers, one `FINGERPRINT@HOST:PORT` per line.
pub fn bootstrap_file(dir: &Path) -> PathBuf {
    state_dir(dir).join("bootstrap.txt")
}

/// The account's public information, readable without the passphrase.
pub fn public_cache(dir: &Path) -> PathBuf {
    state_dir(dir).join("public.json")
}
