//! mau-store's `sync_state.json` reader (`SyncState::from_json`, what
//! `SyncState::load` runs on the file) and `parse_rfc3339` on arbitrary
//! input never panic; an accepted state survives `to_json` → `from_json`
//! unchanged, and an accepted time survives `format_rfc3339` → `parse_rfc3339`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mau_store::{format_rfc3339, parse_rfc3339, SyncState};

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = SyncState::from_json(data) {
        let bytes = state.to_json().expect("encode");
        assert_eq!(
            SyncState::from_json(&bytes).expect("re-parse of our own file"),
            state
        );
    }
    // The values of the file, one by one (Go's and our forms).
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(t) = parse_rfc3339(text) {
            let printed = format_rfc3339(t);
            assert_eq!(parse_rfc3339(&printed), Some(t), "{text:?} → {printed:?}");
        }
    }
});
