//! Where a routing table keeps its peers' fingerprints.
//!
//! A table entry needs its peer's fingerprint (33 bytes) only to hand the
//! peer out as a [`Contact`](crate::Contact) and to tell two peers apart; its
//! place in the table needs no more than the first 64 bits of the key, which
//! order entries by XOR distance unless two of them share all 64 (then the
//! whole keys decide: see [`crate::distance::sort_by_distance_prefix`]).
//!
//! A node keeps the fingerprint in the entry ([`InlineFingerprints`], the
//! default: nothing to share in a process running one node). A process
//! running many nodes in one thread, like the simulator, can keep each
//! fingerprint once for all of them ([`SharedFingerprints`]): the entry then
//! holds a [`CompactId`], the key's first 64 bits and a 4-byte handle, and is
//! 28 bytes instead of 48 for a 4-byte address. The embedder creates the
//! store and hands it to each node ([`crate::Node::with_store`]); the core has
//! no store of its own, global or otherwise.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use crate::fingerprint::Fingerprint;

/// Keeps the fingerprints of a routing table's entries; see the module docs.
///
/// An id, once given, must stand for its fingerprint for as long as any
/// table holds it (ids are never handed back).
pub trait FingerprintStore: Clone + fmt::Debug {
    /// What an entry holds in place of the fingerprint.
    type Id: Copy + fmt::Debug;

    /// The id of `fp`, which is entering the table.
    fn id(&mut self, fp: &Fingerprint) -> Self::Id;

    /// The fingerprint `id` stands for.
    fn fingerprint(&self, id: &Self::Id) -> Fingerprint;

    /// The first 64 bits of the key of `id`'s fingerprint
    /// ([`Fingerprint::key_prefix`]), read from the id alone.
    fn prefix(id: &Self::Id) -> u64;

    /// True if `id` stands for `fp`.
    #[inline]
    fn is(&self, id: &Self::Id, fp: &Fingerprint) -> bool {
        Self::prefix(id) == fp.key_prefix() && self.fingerprint(id).same(fp)
    }
}

/// The default store: each entry holds its fingerprint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InlineFingerprints;

impl FingerprintStore for InlineFingerprints {
    type Id = Fingerprint;

    #[inline]
    fn id(&mut self, fp: &Fingerprint) -> Fingerprint {
        *fp
    }

    #[inline]
    fn fingerprint(&self, id: &Fingerprint) -> Fingerprint {
        *id
    }

    #[inline]
    fn prefix(id: &Fingerprint) -> u64 {
        id.key_prefix()
    }

    #[inline]
    fn is(&self, id: &Fingerprint, fp: &Fingerprint) -> bool {
        id.same(fp)
    }
}

/// An entry's peer in a [`SharedFingerprints`]: the key's first 64 bits and
/// the fingerprint's handle in the store. 12 bytes, aligned to 4 (so an
/// entry with a 4-byte address is 28 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CompactId {
    /// The prefix in two halves, most significant first: a `u64` would
    /// align the entry to 8 bytes and pad it to 32.
    prefix: [u32; 2],
    handle: u32,
}

impl CompactId {
    /// The first 64 bits of the key.
    #[inline]
    pub fn prefix(&self) -> u64 {
        (u64::from(self.prefix[0]) << 32) | u64::from(self.prefix[1])
    }
}

impl fmt::Debug for CompactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CompactId({:016x}…#{})", self.prefix(), self.handle)
    }
}

/// One copy of each fingerprint, shared by every node of one thread that
/// holds a clone of this handle (the simulator's nodes): entries hold
/// [`CompactId`]s. Append-only: a fingerprint stays until the last handle
/// is dropped, so a run keeps each identity it ever tabled once (~80 bytes
/// with its index), however many tables hold it.
///
/// Not `Send`: the nodes sharing it run on one thread, and no lock is taken.
#[derive(Clone, Default)]
pub struct SharedFingerprints(Rc<RefCell<Interned>>);

#[derive(Default)]
struct Interned {
    fingerprints: Vec<Fingerprint>,
    handles: HashMap<Fingerprint, u32>,
}

impl SharedFingerprints {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fingerprints stored so far.
    pub fn len(&self) -> usize {
        self.0.borrow().fingerprints.len()
    }

    /// True before the first fingerprint is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Heap bytes of the store (shared: not part of any node's
    /// [`crate::Node::heap_bytes`]); the index is estimated at its payload
    /// plus one control byte per slot.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let s = self.0.borrow();
        s.fingerprints.capacity() * size_of::<Fingerprint>()
            + s.handles.capacity() * (size_of::<(Fingerprint, u32)>() + 1)
    }
}

impl fmt::Debug for SharedFingerprints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedFingerprints({} stored)", self.len())
    }
}

impl FingerprintStore for SharedFingerprints {
    type Id = CompactId;

    fn id(&mut self, fp: &Fingerprint) -> CompactId {
        let mut s = self.0.borrow_mut();
        let next = s.fingerprints.len();
        let handle = *s.handles.entry(*fp).or_insert_with(|| {
            u32::try_from(next).expect("fewer than 2^32 fingerprints in one store")
        });
        if handle as usize == next {
            s.fingerprints.push(*fp);
        }
        let p = fp.key_prefix();
        CompactId {
            prefix: [(p >> 32) as u32, p as u32],
            handle,
        }
    }

    #[inline]
    fn fingerprint(&self, id: &CompactId) -> Fingerprint {
        self.0.borrow().fingerprints[id.handle as usize]
    }

    #[inline]
    fn prefix(id: &CompactId) -> u64 {
        id.prefix()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(first: u64, rest: u8) -> Fingerprint {
        let mut b = [rest; 20];
        b[..8].copy_from_slice(&first.to_be_bytes());
        Fingerprint::V4(b)
    }

    #[test]
    fn shared_ids_round_trip_and_are_shared() {
        let mut a = SharedFingerprints::new();
        let mut b = a.clone();
        let (x, y) = (v4(1, 1), v4(1, 2));
        let ix = a.id(&x);
        let iy = b.id(&y);
        // Same prefix, different fingerprints: different handles.
        assert_eq!(ix.prefix(), iy.prefix());
        assert_ne!(ix, iy);
        // One copy per fingerprint, whoever stores it.
        assert_eq!(b.id(&x), ix);
        assert_eq!(a.len(), 2);
        for s in [&a, &b] {
            assert_eq!(s.fingerprint(&ix), x);
            assert_eq!(s.fingerprint(&iy), y);
            assert!(s.is(&ix, &x) && !s.is(&ix, &y) && !s.is(&iy, &x));
        }
        assert_eq!(SharedFingerprints::prefix(&ix), x.key_prefix());
    }

    #[test]
    fn compact_id_is_twelve_bytes() {
        assert_eq!(std::mem::size_of::<CompactId>(), 12);
        assert_eq!(std::mem::align_of::<CompactId>(), 4);
    }
}
