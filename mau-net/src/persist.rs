//! The routing table on disk, so a restarted node rejoins without bootstrap peers.
//!
//! `{"version":1,"peers":[{"fingerprint","address"}]}`, written atomically
//! (temporary file, fsync, rename): a crash leaves the old or the new file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mau_proto::PeerRecord;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::core::Core;
use crate::runtime::Runtime;

/// Largest table file read (a full table is far smaller).
const MAX_FILE: u64 = 16 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct TableFile {
    version: u32,
    peers: Vec<PeerRecord>,
}

/// Why the table file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading failed.
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    /// Writing failed.
    #[error("writing: {0}")]
    Write(String),
    /// The file is not a table file.
    #[error("{0}: not a routing table file: {1}")]
    Format(String, String),
}

/// The table file's bytes for `peers` (what [`save_table`] writes).
pub fn encode_table(peers: &[PeerRecord]) -> Result<Vec<u8>, PersistError> {
    serde_json::to_vec_pretty(&serde_json::json!({ "version": 1, "peers": peers }))
        .map_err(|e| PersistError::Write(e.to_string()))
}

/// Parses a table file's bytes (what [`load_table`] does after reading the
/// file); the error is the reason. Callers bound the size (`load_table`
/// reads at most 16 MiB).
pub fn parse_table(bytes: &[u8]) -> Result<Vec<PeerRecord>, String> {
    let file: TableFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.version != 1 {
        return Err(format!("unknown version {}", file.version));
    }
    Ok(file.peers)
}

/// Writes `peers` to `path` atomically.
pub fn save_table(path: &Path, peers: &[PeerRecord]) -> Result<(), PersistError> {
    let body = encode_table(peers)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| PersistError::Write(format!("{}: {e}", dir.display())))?;
    }
    mau_identity::write_atomic(path, &body).map_err(|e| PersistError::Write(e.to_string()))
}

/// Reads a saved table; a missing file is an empty table.
pub fn load_table(path: &Path) -> Result<Vec<PeerRecord>, PersistError> {
    let name = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(PersistError::Read(name, e)),
    };
    if meta.len() > MAX_FILE {
        return Err(PersistError::Format(
            name,
            format!("{} bytes is too large", meta.len()),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| PersistError::Read(name.clone(), e))?;
    parse_table(&bytes).map_err(|reason| PersistError::Format(name, reason))
}

/// How often a changed table is saved.
const SAVE_EVERY: Duration = Duration::from_secs(10);

/// The persistence service: saves the table when it changed, every
/// [`SAVE_EVERY`], at once when asked (after a join) and one last time at
/// shutdown, on the runtime's blocking pool, never on the executor.
pub(crate) struct TableSaver {
    path: Option<PathBuf>,
    dirty: AtomicBool,
    soon: async_channel::Sender<()>,
    soon_rx: async_channel::Receiver<()>,
}

impl TableSaver {
    /// A saver writing to `path` (`None`: the table is not persisted).
    pub fn new(path: Option<PathBuf>) -> Self {
        let (soon, soon_rx) = async_channel::bounded(1);
        TableSaver {
            path,
            dirty: AtomicBool::new(false),
            soon,
            soon_rx,
        }
    }

    /// The table changed.
    pub fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Saves without waiting for the next period.
    pub fn save_soon(&self) {
        self.mark_dirty();
        let _ = self.soon.try_send(());
    }

    /// Runs until shutdown, then saves once more.
    pub async fn run<R: Runtime>(self: Arc<Self>, core: Arc<Core<R>>) {
        if self.path.is_none() {
            return;
        }
        loop {
            let tick = core.rt.sleep(SAVE_EVERY);
            let stop = futures_lite::future::or(
                futures_lite::future::or(
                    async {
                        tick.await;
                        false
                    },
                    async {
                        let _ = self.soon_rx.recv().await;
                        false
                    },
                ),
                async {
                    core.shutdown.wait().await;
                    true
                },
            )
            .await;
            if stop {
                self.mark_dirty();
            }
            self.save_if_dirty(&core).await;
            if stop {
                break;
            }
        }
    }

    async fn save_if_dirty<R: Runtime>(&self, core: &Core<R>) {
        let Some(path) = self.path.clone() else {
            return;
        };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return;
        }
        let records: Vec<PeerRecord> =
            core.read(|node, _| node.table().entries().map(|e| e.contact().into()).collect());
        let shown = path.display().to_string();
        let saved = core
            .rt
            .run_blocking(move || save_table(&path, &records))
            .await;
        let error = match saved {
            Some(Ok(())) => return,
            Some(Err(e)) => e.to_string(),
            None => "the writer panicked".to_string(),
        };
        warn!(path = %shown, %error, "could not save the routing table");
        self.mark_dirty();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".mau/table.json");
        assert!(load_table(&path).unwrap().is_empty());
        let peers = vec![PeerRecord {
            fingerprint: "0123456789abcdef0123456789abcdef01234567".parse().unwrap(),
            address: "127.0.0.1:9".parse().unwrap(),
        }];
        save_table(&path, &peers).unwrap();
        assert_eq!(load_table(&path).unwrap(), peers);
        std::fs::write(
            &path,
            b"{\"version\":1,\"peers\":[{\"fingerprint\":\"zz\",\"address\":\"a:1\"}]}",
        )
        .unwrap();
        assert!(matches!(load_table(&path), Err(PersistError::Format(..))));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(load_table(&path), Err(PersistError::Format(..))));
    }

    #[test]
    fn parse_and_encode_without_a_file() {
        assert_eq!(parse_table(b"{\"version\":1,\"peers\":[]}"), Ok(vec![]));
        let e = parse_table(b"{\"version\":2,\"peers\":[]}").unwrap_err();
        assert!(e.contains("unknown version 2"), "{e}");
        let peers = vec![PeerRecord {
            fingerprint: "0123456789abcdef0123456789abcdef01234567".parse().unwrap(),
            address: "[::1]:4000".parse().unwrap(),
        }];
        assert_eq!(parse_table(&encode_table(&peers).unwrap()), Ok(peers));
    }
}
