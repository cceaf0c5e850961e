//! Locking a mutex whose holder may have panicked: the data is still
//! taken. Every lock in mau-net guards state that stays consistent between
//! statements (counters, maps, caches), so a panic elsewhere must not turn
//! each later lock into a second panic.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data even if a holder panicked.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
