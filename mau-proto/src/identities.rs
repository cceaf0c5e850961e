//! Fingerprints interned process-wide, so a routing-table entry holds a
//! 4-byte handle ([`PeerId`]) instead of the 33-byte fingerprint.
//!
//! Why: a table entry is what a node stores most of (K per bucket, ~20
//! buckets), and one peer sits in many tables: in a simulated network of a
//! million nodes each fingerprint is held by hundreds of tables. Interned,
//! every fingerprint is stored once per process however many tables hold
//! it, and an entry shrinks from 48 to 32 bytes. A process running one node
//! (the usual adapter) pays one map of its own table's peers.
//!
//! Handles are reference-counted by the tables that hold them
//! ([`intern`]/[`release`]) and reused once free, so a long-running node does
//! not accumulate the fingerprints it forgot. A handle is only ever seen
//! inside the table that holds a count on it.

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::{LazyLock, PoisonError, RwLock, RwLockReadGuard};

use crate::fingerprint::Fingerprint;

/// A fingerprint's handle in this process (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PeerId(u32);

#[derive(Default)]
struct Interner {
    /// Fingerprints by handle (a free slot keeps its last fingerprint).
    fingerprints: Vec<Fingerprint>,
    /// Tables holding each handle (0: free).
    counts: Vec<u32>,
    /// Handles by fingerprint (keyed hasher: peers choose their fingerprints).
    index: HashMap<Fingerprint, u32>,
    /// Free handles, reused first.
    free: Vec<u32>,
}

static IDS: LazyLock<RwLock<Interner>> = LazyLock::new(Default::default);

/// A read view of every interned fingerprint (one lock for many reads).
pub(crate) struct Ids(RwLockReadGuard<'static, Interner>);

impl Ids {
    /// The fingerprint of `id`.
    #[inline]
    pub(crate) fn get(&self, id: PeerId) -> Fingerprint {
        self.0.fingerprints[id.0 as usize]
    }
}

/// Reads interned fingerprints. Do not call [`intern`] or [`release`] while
/// the view is held (the same thread would wait for itself).
pub(crate) fn read() -> Ids {
    Ids(IDS.read().unwrap_or_else(PoisonError::into_inner))
}

/// The handle of `fp`, counted once more.
pub(crate) fn intern(fp: Fingerprint) -> PeerId {
    let mut ids = IDS.write().unwrap_or_else(PoisonError::into_inner);
    let ids = &mut *ids;
    if let Some(&i) = ids.index.get(&fp) {
        ids.counts[i as usize] += 1;
        return PeerId(i);
    }
    let i = match ids.free.pop() {
        Some(i) => {
            ids.fingerprints[i as usize] = fp;
            ids.counts[i as usize] = 1;
            i
        }
        None => {
            // Four billion distinct live fingerprints in one process cannot
            // happen before memory runs out (33 bytes each).
            let i = u32::try_from(ids.fingerprints.len()).expect("fewer than 2^32 live peers");
            ids.fingerprints.push(fp);
            ids.counts.push(1);
            i
        }
    };
    ids.index.insert(fp, i);
    PeerId(i)
}

/// Counts `id` once more (a cloned table).
pub(crate) fn retain(ids: impl IntoIterator<Item = PeerId>) {
    let mut g = IDS.write().unwrap_or_else(PoisonError::into_inner);
    for id in ids {
        g.counts[id.0 as usize] += 1;
    }
}

/// Drops one count of each of `ids`; a handle nobody holds is freed.
pub(crate) fn release(ids: impl IntoIterator<Item = PeerId>) {
    let mut g = IDS.write().unwrap_or_else(PoisonError::into_inner);
    let g = &mut *g;
    for PeerId(i) in ids {
        let n = &mut g.counts[i as usize];
        *n -= 1;
        if *n == 0 {
            g.index.remove(&g.fingerprints[i as usize]);
            g.free.push(i);
        }
    }
}

/// Bytes one interned fingerprint costs: its slot, its count and its index
/// entry (a hash map slot with its control byte, at 7/8 load).
pub const BYTES_PER_PEER: usize =
    size_of::<Fingerprint>() + size_of::<u32>() + (size_of::<(Fingerprint, u32)>() + 1) * 8 / 7;

/// Fingerprints interned now (tests and memory reports).
pub fn live() -> usize {
    let g = IDS.read().unwrap_or_else(PoisonError::into_inner);
    g.fingerprints.len() - g.free.len()
}

/// Heap bytes the interner holds, shared by every table of the process
/// (not part of any one node's [`crate::Node::heap_bytes`]).
pub fn heap_bytes() -> usize {
    let g = IDS.read().unwrap_or_else(PoisonError::into_inner);
    g.fingerprints.capacity() * size_of::<Fingerprint>()
        + g.counts.capacity() * size_of::<u32>()
        + g.free.capacity() * size_of::<u32>()
        + g.index.capacity() * (size_of::<(Fingerprint, u32)>() + 1) * 8 / 7
}

/// True if some table holds `fp` (tests).
#[cfg(test)]
pub(crate) fn holds(fp: &Fingerprint) -> bool {
    IDS.read()
        .unwrap_or_else(PoisonError::into_inner)
        .index
        .contains_key(fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        let mut b = [0u8; 20];
        b[0] = 0xee;
        b[1] = n;
        b[19] = 0x5a;
        Fingerprint::V4(b)
    }

    #[test]
    fn one_handle_per_fingerprint_freed_when_unheld() {
        let a = intern(fp(1));
        let b = intern(fp(1));
        let c = intern(fp(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(read().get(a), fp(1));
        assert_eq!(read().get(c), fp(2));
        release([a]);
        // Still held once: same handle, same fingerprint.
        assert_eq!(intern(fp(1)), a);
        release([a, a, c]);
        assert!(!holds(&fp(1)));
        assert!(!holds(&fp(2)));
    }
}
