//! What `show`, `export` and `friend list` print without the passphrase.
//!
//! The account file is encrypted whole with the passphrase and friends' key
//! files are encrypted to the account (both as Go writes them), so nothing
//! public can be read from them without it. Whenever the passphrase unlocks
//! them, the public part is remembered in the state directory; a replaced
//! account file invalidates it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::UNIX_EPOCH;

use mau_identity::{Account, Friend};
use serde::{Deserialize, Serialize};

use crate::paths;

/// The public part of an account and its friends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PublicInfo {
    /// The account file's size and modification time when remembered.
    stamp: String,
    /// The account's fingerprint.
    pub fingerprint: String,
    /// Its OpenPGP key version (4 or 6).
    pub version: u8,
    /// Its user ids.
    pub user_ids: Vec<String>,
    /// The armored public key.
    pub public_key: String,
    /// Friends' user ids by fingerprint.
    pub friends: BTreeMap<String, Vec<String>>,
}

/// What identifies this version of the account file.
fn stamp(dir: &Path) -> Option<String> {
    let m = std::fs::metadata(paths::account_file(dir)).ok()?;
    let t = m.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(format!("{}:{}", m.len(), t.as_nanos()))
}

fn read(dir: &Path) -> Option<PublicInfo> {
    let bytes = std::fs::read(paths::public_cache(dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The remembered public information, if it belongs to the current account file.
pub fn cached(dir: &Path) -> Option<PublicInfo> {
    read(dir).filter(|i| Some(&i.stamp) == stamp(dir).as_ref())
}

/// Remembers `account`'s public part (and, when given, its friends'); best
/// effort: a failure only means the next command asks for the passphrase.
pub fn remember(dir: &Path, account: &Account, friends: Option<&[Friend]>) -> PublicInfo {
    let old = cached(dir);
    let mut info = PublicInfo {
        stamp: stamp(dir).unwrap_or_default(),
        fingerprint: account.fingerprint().to_string(),
        version: account.fingerprint().version(),
        user_ids: account.user_ids(),
        public_key: account.export_public().unwrap_or_default(),
        friends: old.as_ref().map(|o| o.friends.clone()).unwrap_or_default(),
    };
    if let Some(friends) = friends {
        info.friends = friends
            .iter()
            .map(|f| (f.fingerprint().to_string(), f.user_ids()))
            .collect();
    }
    if old.as_ref() != Some(&info) && !info.stamp.is_empty() && !info.public_key.is_empty() {
        let written = serde_json::to_vec_pretty(&info)
            .map_err(|e| e.to_string())
            .and_then(|b| {
                mau_identity::StateDir::new(dir)
                    .ensure()
                    .map_err(|e| e.to_string())?;
                mau_identity::write_atomic(&paths::public_cache(dir), &b).map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            tracing::debug!(error = %e, "cannot remember the public key");
        }
    }
    info
}
