//! Where the `mau` command keeps its files for an account directory: the
//! account key where Go keeps it, everything else through
//! [`mau_identity::StateDir`] (`DIR/.mau-rs`, outside Go's keyring), which
//! is the one place that names those files.

use std::path::{Path, PathBuf};

use mau_identity::{StateDir, ACCOUNT_FILE, MAU_DIR};

/// The account's key file (where Go keeps it too; not part of the state).
pub fn account_file(dir: &Path) -> PathBuf {
    dir.join(MAU_DIR).join(ACCOUNT_FILE)
}

/// The running server's control socket.
pub fn control_socket(dir: &Path) -> PathBuf {
    StateDir::new(dir).control_socket()
}

/// The lock file a running server holds: one server per directory.
pub fn server_lock(dir: &Path) -> PathBuf {
    StateDir::new(dir).server_lock()
}

/// The saved routing table.
pub fn routing_table(dir: &Path) -> PathBuf {
    StateDir::new(dir).routing_table()
}

/// Bootstrap peers, one `FINGERPRINT@HOST:PORT` per line.
pub fn bootstrap_file(dir: &Path) -> PathBuf {
    StateDir::new(dir).bootstrap()
}

/// The account's public information, readable without the passphrase.
pub fn public_cache(dir: &Path) -> PathBuf {
    StateDir::new(dir).public_cache()
}
