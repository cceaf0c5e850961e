//! `<root>/.mau-rs/sync_state.json`: `{"last_sync":{"<fpr>":"<RFC3339>"}}`, the
//! Go implementation's format (Go keeps its own in `.mau/`, where it breaks
//! Go's keyring; ours is apart, see `mau_identity::state_dir`) (Go writes `time.Time` as RFC 3339 with
//! nanoseconds and the local offset; both forms are read).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};
use mau_proto::Fingerprint;
use serde::{Deserialize, Serialize};

use crate::StoreError;

pub use mau_identity::state_dir::SYNC_STATE_FILE;

#[derive(Default, Serialize, Deserialize)]
struct Raw {
    #[serde(default)]
    last_sync: BTreeMap<String, String>,
}

/// When each friend was last synced completely.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    last: BTreeMap<Fingerprint, SystemTime>,
}

/// Formats a time as RFC 3339 in UTC with nanoseconds (what Go writes).
pub fn format_rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parses an RFC 3339 time with any offset.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| SystemTime::from(d.with_timezone(&Utc)))
}

impl SyncState {
    /// The file's path under `root`.
    pub fn path(root: &Path) -> PathBuf {
        mau_identity::StateDir::new(root).sync_state()
    }

    /// Reads the state (empty if there is no file). Entries that are not a
    /// fingerprint and an RFC 3339 time are skipped with a warning.
    pub fn load(root: &Path) -> Result<SyncState, StoreError> {
        let path = Self::path(root);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SyncState::default()),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        Self::parse(&bytes, &path).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })
    }

    /// Parses the file's bytes (what [`SyncState::load`] does after reading
    /// it): entries that are not a fingerprint and an RFC 3339 time are
    /// skipped with a warning.
    pub fn from_json(bytes: &[u8]) -> Result<SyncState, serde_json::Error> {
        Self::parse(bytes, Path::new(SYNC_STATE_FILE))
    }

    fn parse(bytes: &[u8], path: &Path) -> Result<SyncState, serde_json::Error> {
        let raw: Raw = serde_json::from_slice(bytes)?;
        let mut last = BTreeMap::new();
        for (k, v) in raw.last_sync {
            match (Fingerprint::parse(&k), parse_rfc3339(&v)) {
                (Ok(f), Some(t)) => {
                    last.insert(f, t);
                }
                _ => {
                    tracing::warn!(path = %path.display(), key = %k, value = %v, "ignoring a bad sync state entry")
                }
            }
        }
        Ok(SyncState { last })
    }

    /// The file's bytes (what [`SyncState::save`] writes).
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        let raw = Raw {
            last_sync: self
                .last
                .iter()
                .map(|(f, t)| (f.to_string(), format_rfc3339(*t)))
                .collect(),
        };
        serde_json::to_vec_pretty(&raw)
    }

    /// Writes the state atomically.
    pub fn save(&self, root: &Path) -> Result<(), StoreError> {
        let bytes = self.to_json().map_err(|e| StoreError::Corrupt {
            path: Self::path(root),
            reason: e.to_string(),
        })?;
        mau_identity::StateDir::new(root).ensure()?;
        mau_identity::write_atomic(&Self::path(root), &bytes)?;
        Ok(())
    }

    /// When `fpr` was last synced completely.
    pub fn last_sync(&self, fpr: &Fingerprint) -> Option<SystemTime> {
        self.last.get(fpr).copied()
    }

    /// Records a complete sync of `fpr` up to `t`.
    pub fn set_last_sync(&mut self, fpr: Fingerprint, t: SystemTime) {
        self.last.insert(fpr, t);
    }

    /// Forgets `fpr` (the next sync is a full one).
    pub fn clear(&mut self, fpr: &Fingerprint) {
        self.last.remove(fpr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn reads_go_times_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let fpr = "0123456789abcdef0123456789abcdef01234567";
        mau_identity::StateDir::new(dir.path()).ensure().unwrap();
        std::fs::write(
            SyncState::path(dir.path()),
            format!(r#"{{"last_sync":{{"{fpr}":"2024-03-01T10:00:00.5+01:00","nope":"x"}}}}"#),
        )
        .unwrap();
        let s = SyncState::load(dir.path()).unwrap();
        let f = Fingerprint::parse(fpr).unwrap();
        let t = UNIX_EPOCH + Duration::from_millis(1_709_283_600_500);
        assert_eq!(s.last_sync(&f), Some(t));
        s.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(SyncState::path(dir.path())).unwrap();
        assert!(text.contains("2024-03-01T09:00:00.500Z"), "{text}");
        assert_eq!(SyncState::load(dir.path()).unwrap(), s);
    }

    #[test]
    fn bytes_without_a_file() {
        let s = SyncState::from_json(br#"{"last_sync":{"bad":"x"}}"#).unwrap();
        assert_eq!(s, SyncState::default());
        assert!(SyncState::from_json(b"{").is_err());
        let mut s = SyncState::default();
        let f = Fingerprint::parse("0123456789abcdef0123456789abcdef01234567").unwrap();
        s.set_last_sync(
            f,
            UNIX_EPOCH + Duration::from_nanos(1_709_283_600_000_000_001),
        );
        assert_eq!(SyncState::from_json(&s.to_json().unwrap()).unwrap(), s);
    }
}
