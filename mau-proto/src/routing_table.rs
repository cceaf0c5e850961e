//! The routing table: one k-bucket per bit of XOR distance.
//!
//! Buckets are stored by common prefix length with the local id (index 0 holds
//! the farthest half of the keyspace) and created lazily, so a node in a network
//! of `n` peers keeps about `log2(n)` buckets, not 256: that keeps a
//! million-node simulation in memory.
//!
//! The table is pure bookkeeping. It decides *who* must be pinged when a bucket
//! is full; the [`crate::Node`] sends the ping and reports the answer.
//!
//! Entries hold their peers' fingerprints as a [`FingerprintStore`] keeps
//! them: inline by default, or as a compact id in a store the embedder shares
//! between its nodes (see [`crate::fingerprint_store`]). Entries are ordered
//! by the first 64 bits of their keys, the whole keys deciding only between
//! entries alike in those ([`sort_by_distance_prefix`]), so both give the
//! same order.

use crate::distance::{sort_by_distance_prefix, BucketIndex, Key};
use crate::fingerprint::Fingerprint;
use crate::fingerprint_store::{FingerprintStore, InlineFingerprints};
use crate::subnet::{HostIp, Subnet, SubnetLimits};
use crate::time::{Stamp, Time};
use std::collections::BTreeMap;
use std::time::Duration;

/// A peer and where to reach it. `A` is the adapter's address type
/// (a `host:port` string on the wire, a node index in the simulator).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Contact<A> {
    /// The peer's identity.
    pub fingerprint: Fingerprint,
    /// Where it listens.
    pub address: A,
}

impl<A> Contact<A> {
    /// A contact from its parts.
    pub fn new(fingerprint: Fingerprint, address: A) -> Self {
        Contact {
            fingerprint,
            address,
        }
    }
}

/// One peer in a bucket: 48 bytes for a `u32` address (72 with a `Contact`
/// inside and 8-byte times), 28 with a [`crate::fingerprint_store::CompactId`]
/// as `I`. The contact's fields are inline so the compiler can pack the
/// failure count into the fingerprint's padding, and times are kept to the
/// second ([`Stamp`]).
#[derive(Clone, Debug)]
pub struct Entry<A, I = Fingerprint> {
    /// The peer's identity, as the table's [`FingerprintStore`] keeps it
    /// (the fingerprint itself by default; [`TableView::contact`] resolves
    /// any other).
    pub fingerprint: I,
    /// Where it listens (its verified address).
    pub address: A,
    /// Last time the peer answered us or sent us an authenticated request
    /// (rounded down).
    last_seen: Stamp,
    /// Last time we pinged it, if ever (rounded up).
    last_ping: Option<Stamp>,
    /// Consecutive failed requests since it was last seen.
    pub failures: u8,
}

impl<A: Clone> Entry<A> {
    /// The peer as a [`Contact`].
    pub fn contact(&self) -> Contact<A> {
        Contact::new(self.fingerprint, self.address.clone())
    }
}

impl<A, I> Entry<A, I> {
    /// Last time the peer answered us or sent us an authenticated request,
    /// rounded down to the second.
    pub fn last_seen(&self) -> Time {
        self.last_seen.time()
    }

    /// Last time we pinged it, if ever, rounded up to the second.
    pub fn last_ping(&self) -> Option<Time> {
        self.last_ping.map(Stamp::time)
    }

    /// Seen within `backoff` of `now`, counting from the end of the stored
    /// second so the rounding never shortens a backoff.
    fn seen_within(&self, now: Time, backoff: Duration) -> bool {
        now.since(self.last_seen() + Duration::from_millis(999)) < backoff
    }

    pub(crate) fn pinged_within(&self, now: Time, backoff: Duration) -> bool {
        self.last_ping
            .is_some_and(|t| now.since(t.time()) < backoff)
    }
}

/// A k-bucket: entries least-recently-seen first, plus waiting newcomers.
/// `I`: how entries hold their fingerprints (see [`Entry`]).
#[derive(Clone, Debug)]
pub struct Bucket<A, I = Fingerprint> {
    entries: Vec<Entry<A, I>>,
    /// Newcomers for a full bucket, most recent last.
    replacements: Vec<Contact<A>>,
    /// Last lookup whose target fell in this bucket's range (or its creation),
    /// rounded down: a bucket turns stale at most 1 s early.
    last_lookup: Stamp,
    /// Last time a newcomer made us check this bucket's head. At most one
    /// such check per PING_MIN_BACKOFF per bucket: without it, every
    /// newcomer to a full bucket pinged the (rotating) head, and pings were
    /// over half of all traffic in a 100k-node simulation.
    last_check: Option<Stamp>,
}

impl<A, I> Bucket<A, I> {
    fn new(now: Time) -> Self {
        Bucket {
            entries: Vec::new(),
            replacements: Vec::new(),
            last_lookup: Stamp::floor(now),
            last_check: None,
        }
    }

    /// Entries, least-recently-seen first.
    pub fn entries(&self) -> &[Entry<A, I>] {
        &self.entries
    }

    /// Newcomers waiting for a slot, most recent last.
    pub fn replacements(&self) -> &[Contact<A>] {
        &self.replacements
    }

    /// Last lookup in this bucket's range.
    pub fn last_lookup(&self) -> Time {
        self.last_lookup.time()
    }
}

/// What happened when a peer was seen alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeenOutcome<A> {
    /// Already in the table: marked alive and moved to the tail.
    Updated,
    /// Added to a bucket with room.
    Inserted,
    /// The bucket is full; the newcomer waits in the replacement cache and the
    /// least-recently-seen entry must be pinged to decide between them.
    PingRequired(Contact<A>),
    /// The bucket is full of peers known to be alive (or one is being pinged
    /// already); the newcomer waits in the replacement cache.
    Cached,
    /// Never stored: the local node itself, or another fingerprint on the same key.
    Refused,
    /// Never stored: its subnet already has as many peers as the
    /// [`SubnetLimits`] allow, in its bucket or in the table.
    SubnetFull,
}

/// What [`RoutingTable::seen`] will do, decided before anything changes.
enum Plan {
    Refused,
    SubnetFull,
    /// Known: refresh the entry at this position (and follow a move).
    Update(usize),
    /// A bucket with room.
    Insert,
    /// A full bucket: wait in its replacement cache; `check_head`: its
    /// least-recently-seen entry is due for a ping.
    Wait {
        check_head: bool,
    },
}

/// What happened when a request to a peer failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailedOutcome<A> {
    /// Not in the table (nothing to do).
    Unknown,
    /// Counted; the peer stays until it fails `max_failures` times in a row.
    Counted,
    /// Evicted; `promoted` took its slot from the replacement cache.
    Evicted {
        /// The newcomer that replaced it, if any was waiting.
        promoted: Option<Contact<A>>,
    },
}

/// What [`RoutingTable::remove`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removed<A> {
    /// Not known.
    Nothing,
    /// It was only waiting in a replacement cache.
    Waiting,
    /// It left its bucket; `promoted` took the slot.
    Entry {
        /// The contact that left.
        removed: Contact<A>,
        /// The newcomer that replaced it, if any was waiting.
        promoted: Option<Contact<A>>,
    },
}

/// Whether [`TableView::closest`] may return peers that failed their last request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Every entry.
    Any,
    /// Only entries whose last request did not fail (what we tell other peers).
    Responsive,
}

/// True if `a` and `b` sit on the same [`Key`] (equal, or a v4 and a v6
/// fingerprint padded to one key), without building the two keys: this runs
/// for every entry of a bucket each time a peer is seen.
#[inline]
fn same_key(a: &Fingerprint, b: &Fingerprint) -> bool {
    match (a, b) {
        (Fingerprint::V4(x), Fingerprint::V4(y)) => x == y,
        (Fingerprint::V6(x), Fingerprint::V6(y)) => x == y,
        (Fingerprint::V4(v4), Fingerprint::V6(v6)) | (Fingerprint::V6(v6), Fingerprint::V4(v4)) => {
            v6[..v4.len()] == v4[..] && v6[v4.len()..].iter().all(|b| *b == 0)
        }
    }
}

/// A read-only view of a node's routing table ([`crate::Node::table`]): the
/// table changes only through the node's inputs.
#[derive(Debug)]
pub struct TableView<'a, A, S: FingerprintStore = InlineFingerprints>(
    pub(crate) &'a RoutingTable<A, S>,
);

impl<A, S: FingerprintStore> Clone for TableView<'_, A, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<A, S: FingerprintStore> Copy for TableView<'_, A, S> {}

impl<'a, A: Clone + Eq + HostIp, S: FingerprintStore> TableView<'a, A, S> {
    /// The local node's fingerprint.
    pub fn local(&self) -> Fingerprint {
        self.0.local()
    }

    /// Number of peers in the table (replacement caches not counted).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if no peer is known.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Max peers per bucket.
    pub fn k(&self) -> usize {
        self.0.k()
    }

    /// Buckets created so far, by common prefix length (0 = farthest half).
    pub fn buckets(&self) -> impl Iterator<Item = (BucketIndex, &'a Bucket<A, S::Id>)> {
        self.0.buckets()
    }

    /// Every entry, farthest bucket first.
    pub fn entries(&self) -> impl Iterator<Item = &'a Entry<A, S::Id>> {
        self.0.entries()
    }

    /// The entry for `fp`, if present.
    pub fn get(&self, fp: &Fingerprint) -> Option<&'a Entry<A, S::Id>> {
        self.0.get(fp)
    }

    /// The peer of entry `e` (one of this table's) as a [`Contact`].
    pub fn contact(&self, e: &Entry<A, S::Id>) -> Contact<A> {
        self.0.contact_of(e)
    }

    /// True if `fp` is in the table.
    pub fn contains(&self, fp: &Fingerprint) -> bool {
        self.0.contains(fp)
    }

    /// Up to `n` contacts closest to `target`, nearest first.
    pub fn closest(&self, target: &Key, n: usize, liveness: Liveness) -> Vec<Contact<A>> {
        self.0.closest(target, n, liveness)
    }

    /// Heap bytes the table holds (see [`crate::Node::heap_bytes`]).
    pub fn heap_bytes(&self) -> usize {
        self.0.heap_bytes()
    }
}

/// The Kademlia routing table of one node; `S` keeps its entries'
/// fingerprints (see [`crate::fingerprint_store`]).
#[derive(Clone, Debug)]
pub struct RoutingTable<A, S: FingerprintStore = InlineFingerprints> {
    local: Fingerprint,
    local_key: Key,
    /// The oldest bucket's `last_lookup` (asked after every input, so kept
    /// rather than searched).
    oldest_lookup: Option<Stamp>,
    /// Index = common prefix length with `local_key`; created up to the deepest peer.
    buckets: Vec<Bucket<A, S::Id>>,
    store: S,
    k: usize,
    replacement_cap: usize,
    max_failures: u8,
    len: usize,
    /// Sybil limits; `None` admits any number of peers per subnet.
    limits: Option<SubnetLimits>,
    /// Entries per limited subnet in the whole table (empty without limits).
    per_subnet: BTreeMap<Subnet, u32>,
}

// Nodes build their tables with `with_store`; this is for tests and benchmarks.
#[cfg(any(test, feature = "internals"))]
impl<A: Clone + Eq + HostIp> RoutingTable<A> {
    /// An empty table for `local`, with no subnet limits (see [`Self::with_subnet_limits`]).
    pub fn new(local: Fingerprint, k: usize, replacement_cap: usize, max_failures: u8) -> Self {
        Self::with_store(local, k, replacement_cap, max_failures, InlineFingerprints)
    }
}

impl<A: Clone + Eq + HostIp, S: FingerprintStore> RoutingTable<A, S> {
    /// [`RoutingTable::new`] keeping its entries' fingerprints in `store`.
    pub fn with_store(
        local: Fingerprint,
        k: usize,
        replacement_cap: usize,
        max_failures: u8,
        store: S,
    ) -> Self {
        RoutingTable {
            local,
            local_key: local.key(),
            oldest_lookup: None,
            buckets: Vec::new(),
            store,
            k: k.max(1),
            replacement_cap,
            max_failures: max_failures.max(1),
            len: 0,
            limits: None,
            per_subnet: BTreeMap::new(),
        }
    }

    /// The same empty table admitting at most `limits` peers per subnet.
    pub fn with_subnet_limits(mut self, limits: Option<SubnetLimits>) -> Self {
        debug_assert!(self.is_empty(), "limits are set on an empty table");
        self.limits = limits;
        self
    }

    /// The subnet `address` counts against, if limits apply to it.
    fn subnet(&self, address: &A) -> Option<Subnet> {
        self.limits.as_ref()?.subnet_of(address)
    }

    /// True if one more peer of `subnet` fits in bucket `cpl` and the table,
    /// not counting the entry `except` (a peer that changes address).
    fn admits(&self, cpl: usize, subnet: Option<Subnet>, except: Option<&Fingerprint>) -> bool {
        let (Some(limits), Some(subnet)) = (self.limits.as_ref(), subnet) else {
            return true;
        };
        let others =
            |e: &&Entry<A, S::Id>| except.is_none_or(|fp| !self.store.is(&e.fingerprint, fp));
        let in_subnet = |e: &&Entry<A, S::Id>| self.subnet(&e.address) == Some(subnet);
        let in_bucket = self.buckets.get(cpl).map_or(0, |b| {
            b.entries.iter().filter(others).filter(in_subnet).count()
        });
        let mut in_table = self.per_subnet.get(&subnet).copied().unwrap_or(0) as usize;
        if let Some((c, p)) = except.and_then(|fp| self.locate(fp)) {
            if self.subnet(&self.buckets[c].entries[p].address) == Some(subnet) {
                in_table -= 1;
            }
        }
        in_bucket < limits.per_bucket && in_table < limits.per_table
    }

    fn count_subnet(&mut self, address: &A, up: bool) {
        let Some(subnet) = self.subnet(address) else {
            return;
        };
        let n = self.per_subnet.entry(subnet).or_insert(0);
        if up {
            *n += 1;
        } else {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_subnet.remove(&subnet);
            }
        }
    }

    /// The local node's fingerprint.
    pub fn local(&self) -> Fingerprint {
        self.local
    }

    /// Heap bytes the table holds beyond `size_of::<RoutingTable<A>>()`:
    /// bucket, entry and replacement vectors by capacity (exact) plus the
    /// subnet counts (estimated at 1.5x their payload for the map's nodes).
    /// Addresses that own heap memory themselves (strings) are not followed.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let buckets = self.buckets.capacity() * size_of::<Bucket<A>>();
        let inner: usize = self
            .buckets
            .iter()
            .map(|b| {
                b.entries.capacity() * size_of::<Entry<A, S::Id>>()
                    + b.replacements.capacity() * size_of::<Contact<A>>()
            })
            .sum();
        let subnets = self.per_subnet.len() * (size_of::<Subnet>() + size_of::<u32>()) * 3 / 2;
        buckets + inner + subnets
    }

    /// Number of peers in the table (replacement caches not counted).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no peer is known.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Max peers per bucket.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Buckets created so far, by common prefix length (0 = farthest half).
    pub fn buckets(&self) -> impl Iterator<Item = (BucketIndex, &Bucket<A, S::Id>)> {
        self.buckets
            .iter()
            .enumerate()
            .filter_map(|(cpl, b)| BucketIndex::from_common_prefix_len(cpl).map(|i| (i, b)))
    }

    /// Every entry, farthest bucket first.
    pub fn entries(&self) -> impl Iterator<Item = &Entry<A, S::Id>> {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// The fingerprint of entry `e` (one of this table's).
    #[inline]
    fn fingerprint_of(&self, e: &Entry<A, S::Id>) -> Fingerprint {
        self.store.fingerprint(&e.fingerprint)
    }

    /// The peer of entry `e` (one of this table's) as a [`Contact`].
    pub fn contact_of(&self, e: &Entry<A, S::Id>) -> Contact<A> {
        Contact::new(self.fingerprint_of(e), e.address.clone())
    }

    /// True if entry `e` sits on the key of `fp` ([`same_key`]); the
    /// prefixes rule most entries out without a look into the store.
    #[inline]
    fn on_key_of(&self, e: &Entry<A, S::Id>, fp: &Fingerprint) -> bool {
        S::prefix(&e.fingerprint) == fp.key_prefix() && same_key(&self.fingerprint_of(e), fp)
    }

    /// Common prefix length of `key` with the local id, `None` for the local key.
    fn cpl(&self, key: &Key) -> Option<usize> {
        let lz = self.local_key.distance(key).leading_zeros() as usize;
        (lz < crate::distance::KEY_BITS).then_some(lz)
    }

    fn locate(&self, fp: &Fingerprint) -> Option<(usize, usize)> {
        let cpl = self.cpl(&fp.key())?;
        let bucket = self.buckets.get(cpl)?;
        // The prefixes rule out all entries but (nearly always) the one.
        let prefix = fp.key_prefix();
        let pos = bucket.entries.iter().position(|e| {
            S::prefix(&e.fingerprint) == prefix && self.store.is(&e.fingerprint, fp)
        })?;
        Some((cpl, pos))
    }

    /// The entry for `fp`, if present.
    pub fn get(&self, fp: &Fingerprint) -> Option<&Entry<A, S::Id>> {
        self.locate(fp)
            .map(|(cpl, pos)| &self.buckets[cpl].entries[pos])
    }

    /// True if `fp` is in the table.
    pub fn contains(&self, fp: &Fingerprint) -> bool {
        self.locate(fp).is_some()
    }

    fn ensure_bucket(&mut self, cpl: usize, now: Time) {
        // Exactly the buckets needed: doubling would leave ~1 KB of unused
        // bucket slots per node (18 buckets in a capacity of 32 at 100k).
        self.buckets
            .reserve_exact((cpl + 1).saturating_sub(self.buckets.len()));
        while self.buckets.len() <= cpl {
            self.buckets.push(Bucket::new(now));
            let new = Stamp::floor(now);
            self.oldest_lookup = Some(self.oldest_lookup.map_or(new, |t| t.min(new)));
        }
    }

    /// Records that `contact` is alive now: it answered us, or sent us an
    /// authenticated request. This is the only way a peer enters the table, so
    /// hearsay (peers named in someone's answer) never displaces live entries.
    ///
    /// `backoff` is PING_MIN_BACKOFF: a head seen or pinged within it is not
    /// pinged again.
    pub fn seen(&mut self, contact: Contact<A>, now: Time, backoff: Duration) -> SeenOutcome<A> {
        let Some(cpl) = self.cpl(&contact.fingerprint.key()) else {
            return SeenOutcome::Refused;
        };
        self.ensure_bucket(cpl, now);
        match self.plan(cpl, &contact, now, backoff) {
            Plan::Refused => SeenOutcome::Refused,
            Plan::SubnetFull => SeenOutcome::SubnetFull,
            Plan::Update(pos) => {
                let old = self.buckets[cpl].entries[pos].address.clone();
                if old != contact.address {
                    self.count_subnet(&old, false);
                    self.count_subnet(&contact.address, true);
                }
                let bucket = &mut self.buckets[cpl];
                let mut entry = bucket.entries.remove(pos);
                entry.address = contact.address;
                entry.last_seen = Stamp::floor(now);
                entry.failures = 0;
                bucket.entries.push(entry);
                SeenOutcome::Updated
            }
            Plan::Insert => {
                let k = self.k;
                let bucket = &mut self.buckets[cpl];
                if bucket.entries.len() == bucket.entries.capacity() {
                    // Grow by doubling but never past K: a full bucket then holds
                    // exactly K slots, not the next power of two (32 for K = 20),
                    // a third of a simulated node's memory.
                    let want = (2 * bucket.entries.len()).max(4).min(k);
                    bucket.entries.reserve_exact(want - bucket.entries.len());
                }
                self.count_subnet(&contact.address, true);
                let id = self.store.id(&contact.fingerprint);
                self.buckets[cpl].entries.push(Entry {
                    fingerprint: id,
                    address: contact.address,
                    last_seen: Stamp::floor(now),
                    last_ping: None,
                    failures: 0,
                });
                self.len += 1;
                SeenOutcome::Inserted
            }
            Plan::Wait { check_head } => {
                // Full: the newcomer waits; the least-recently-seen entry decides.
                let cap = self.replacement_cap;
                let bucket = &mut self.buckets[cpl];
                bucket
                    .replacements
                    .retain(|c| c.fingerprint != contact.fingerprint);
                if cap > 0 {
                    if bucket.replacements.len() >= cap {
                        bucket.replacements.remove(0);
                    }
                    bucket.replacements.push(contact);
                }
                if !check_head {
                    return SeenOutcome::Cached;
                }
                let head = &mut bucket.entries[0];
                head.last_ping = Some(Stamp::ceil(now));
                bucket.last_check = Some(Stamp::ceil(now));
                SeenOutcome::PingRequired(self.contact_of(&self.buckets[cpl].entries[0]))
            }
        }
    }

    /// False when [`Self::seen`] of `contact` now could change nothing but
    /// the order of a replacement cache: it would be refused, or would only
    /// wait in a full bucket whose head needs no check while that bucket's
    /// replacement cache is disabled, full, or holds it already. (A full
    /// cache would take it in place of its oldest verified newcomer: the
    /// one change given up.) A node asks this before probing a caller, so a
    /// newcomer is not pinged back by every peer it meets whose bucket for
    /// it is full of live peers. Changes nothing.
    pub fn seen_matters(&self, contact: &Contact<A>, now: Time, backoff: Duration) -> bool {
        let Some(cpl) = self.cpl(&contact.fingerprint.key()) else {
            return false;
        };
        match self.plan(cpl, contact, now, backoff) {
            Plan::Refused | Plan::SubnetFull => false,
            Plan::Update(_) | Plan::Insert | Plan::Wait { check_head: true } => true,
            Plan::Wait { check_head: false } => self.buckets.get(cpl).is_some_and(|b| {
                b.replacements.len() < self.replacement_cap
                    && !b.replacements.iter().any(|c| c == contact)
            }),
        }
    }

    /// What [`Self::seen`] does with `contact` in bucket `cpl` (which may not
    /// exist yet: it counts as empty), decided without changing anything.
    fn plan(&self, cpl: usize, contact: &Contact<A>, now: Time, backoff: Duration) -> Plan {
        let fp = contact.fingerprint;
        let subnet = self.subnet(&contact.address);
        let Some(bucket) = self.buckets.get(cpl) else {
            return if self.admits(cpl, subnet, None) {
                Plan::Insert
            } else {
                Plan::SubnetFull
            };
        };
        if let Some(pos) = bucket.entries.iter().position(|e| self.on_key_of(e, &fp)) {
            let old = &bucket.entries[pos];
            if !self.store.is(&old.fingerprint, &fp) {
                // A v4 and a v6 fingerprint padded to one key: first one wins.
                return Plan::Refused;
            }
            // A move into a subnet that is full is not followed: the old
            // address keeps being tried and fails if it is gone.
            if old.address != contact.address && !self.admits(cpl, subnet, Some(&fp)) {
                return Plan::SubnetFull;
            }
            return Plan::Update(pos);
        }
        if !self.admits(cpl, subnet, None) {
            return Plan::SubnetFull;
        }
        let full = bucket.entries.len() >= self.k;
        if full && subnet.is_some() {
            // Waiting newcomers of a subnet are capped like entries, so one
            // subnet cannot fill the cache and crowd out everyone else.
            let per_bucket = self.limits.map_or(usize::MAX, |l| l.per_bucket);
            let waiting = bucket
                .replacements
                .iter()
                .filter(|c| c.fingerprint != fp && self.subnet(&c.address) == subnet)
                .count();
            if waiting >= per_bucket {
                return Plan::SubnetFull;
            }
        }
        if !full {
            return Plan::Insert;
        }
        // A fingerprint whose key another waiting fingerprint already holds
        // (a v4 id and its zero-padded v6 twin) is refused: first one wins.
        let key = fp.key();
        if bucket
            .replacements
            .iter()
            .any(|c| c.fingerprint != fp && c.fingerprint.key() == key)
        {
            return Plan::Refused;
        }
        let recently_checked = bucket
            .last_check
            .is_some_and(|t| now.since(t.time()) < backoff);
        let head = &bucket.entries[0];
        let recently_seen = head.seen_within(now, backoff) && head.failures == 0;
        let recently_pinged = head.pinged_within(now, backoff);
        Plan::Wait {
            check_head: !(recently_seen || recently_pinged || recently_checked),
        }
    }

    /// Records that we are about to ping `fp` (for the backoff). Returns false
    /// if it was pinged within `backoff` and must not be pinged again yet.
    pub fn mark_pinged(&mut self, fp: &Fingerprint, now: Time, backoff: Duration) -> bool {
        match self.locate(fp) {
            Some((cpl, pos)) => {
                let e = &mut self.buckets[cpl].entries[pos];
                if e.pinged_within(now, backoff) {
                    return false;
                }
                e.last_ping = Some(Stamp::ceil(now));
                true
            }
            None => true,
        }
    }

    /// Records a failed request to `fp`. With a newcomer waiting, the peer is
    /// replaced at once; otherwise it is evicted after `max_failures` in a row.
    pub fn failed(&mut self, fp: &Fingerprint) -> FailedOutcome<A> {
        let Some((cpl, pos)) = self.locate(fp) else {
            return FailedOutcome::Unknown;
        };
        let max = self.max_failures;
        let bucket = &mut self.buckets[cpl];
        let entry = &mut bucket.entries[pos];
        entry.failures = entry.failures.saturating_add(1);
        if bucket.replacements.is_empty() && entry.failures < max {
            return FailedOutcome::Counted;
        }
        let gone = bucket.entries.remove(pos);
        self.len -= 1;
        self.count_subnet(&gone.address, false);
        let promoted = self.promote(cpl);
        FailedOutcome::Evicted { promoted }
    }

    /// Moves the most recent newcomer into a bucket with room. It was alive when
    /// cached; it is put at the head (least recently seen) so it is checked first.
    fn promote(&mut self, cpl: usize) -> Option<Contact<A>> {
        // Never promote a key already in the bucket (see the twin rule in
        // `seen`), nor a peer whose subnet filled up while it waited.
        let contact = loop {
            let c = self.buckets[cpl].replacements.pop()?;
            let twin = self.buckets[cpl]
                .entries
                .iter()
                .any(|e| self.on_key_of(e, &c.fingerprint));
            if !twin && self.admits(cpl, self.subnet(&c.address), None) {
                break c;
            }
        };
        self.count_subnet(&contact.address, true);
        let id = self.store.id(&contact.fingerprint);
        let bucket = &mut self.buckets[cpl];
        bucket.entries.insert(
            0,
            Entry {
                fingerprint: id,
                address: contact.address.clone(),
                last_seen: Stamp::floor(Time::ZERO),
                last_ping: None,
                failures: 0,
            },
        );
        self.len += 1;
        Some(contact)
    }

    /// Removes `fp` from its bucket (a waiting newcomer takes the slot) or
    /// from a replacement cache.
    pub fn remove(&mut self, fp: &Fingerprint) -> Removed<A> {
        if let Some((cpl, pos)) = self.locate(fp) {
            let entry = self.buckets[cpl].entries.remove(pos);
            self.len -= 1;
            self.count_subnet(&entry.address, false);
            let removed = self.contact_of(&entry);
            let promoted = self.promote(cpl);
            return Removed::Entry { removed, promoted };
        }
        let Some(cpl) = self.cpl(&fp.key()) else {
            return Removed::Nothing;
        };
        match self.buckets.get_mut(cpl) {
            Some(b) => {
                let before = b.replacements.len();
                b.replacements.retain(|c| c.fingerprint != *fp);
                if before != b.replacements.len() {
                    Removed::Waiting
                } else {
                    Removed::Nothing
                }
            }
            None => Removed::Nothing,
        }
    }

    /// Marks bucket `index` as just looked up (not stale).
    pub fn touch_bucket(&mut self, index: BucketIndex, now: Time) {
        self.touch(index.common_prefix_len(), now);
    }

    /// Records a lookup for `target` now (its bucket is not stale any more).
    pub fn touch_bucket_of(&mut self, target: &Key, now: Time) {
        if let Some(cpl) = self.cpl(target) {
            self.touch(cpl, now);
        }
    }

    fn touch(&mut self, cpl: usize, now: Time) {
        let Some(b) = self.buckets.get_mut(cpl) else {
            return;
        };
        let was = std::mem::replace(&mut b.last_lookup, Stamp::floor(now));
        if Some(was) == self.oldest_lookup {
            self.oldest_lookup = self.buckets.iter().map(|b| b.last_lookup).min();
        }
    }

    /// Buckets with no lookup for `stall` (all those created: every bucket up to
    /// the one of the closest neighbour), by common prefix length.
    pub fn stale_buckets(&self, now: Time, stall: Duration) -> Vec<BucketIndex> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| now.since(b.last_lookup.time()) >= stall)
            .filter_map(|(cpl, _)| BucketIndex::from_common_prefix_len(cpl))
            .collect()
    }

    /// When the next bucket becomes stale, if any bucket exists.
    pub fn next_stale_at(&self, stall: Duration) -> Option<Time> {
        self.oldest_lookup.map(|t| t.time() + stall)
    }

    /// Buckets farther than the closest neighbour's (the join refresh set).
    pub fn buckets_beyond_closest(&self) -> Vec<BucketIndex> {
        let deepest = self.buckets.iter().rposition(|b| !b.entries.is_empty());
        match deepest {
            Some(d) => (0..d)
                .filter_map(BucketIndex::from_common_prefix_len)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Up to `n` contacts closest to `target`, nearest first (the local node excluded).
    ///
    /// Visits buckets in distance order (the target's own bucket, then all
    /// deeper ones, then shallower ones one by one) and sorts only what it needs.
    pub fn closest(&self, target: &Key, n: usize, liveness: Liveness) -> Vec<Contact<A>> {
        let mut out: Vec<Contact<A>> = Vec::with_capacity(n.min(self.len));
        if n == 0 {
            return out;
        }
        let ct = self
            .cpl(target)
            .unwrap_or(usize::MAX)
            .min(self.buckets.len());
        // Entries with the first 64 bits of their distance to the target.
        // Room for two full buckets: the usual need, so no regrowth.
        type Group<'e, A, I> = Vec<(u64, &'e Entry<A, I>)>;
        let mut group: Group<A, S::Id> = Vec::with_capacity(2 * self.k);
        let flush = |group: &mut Group<A, S::Id>, out: &mut Vec<Contact<A>>| {
            sort_by_distance_prefix(group, |a, b| {
                let key = |e: &Entry<A, S::Id>| self.fingerprint_of(e).key();
                key(a).distance(target).cmp(&key(b).distance(target))
            });
            for (_, e) in group.drain(..) {
                if out.len() == n {
                    break;
                }
                out.push(self.contact_of(e));
            }
        };
        let usable = |e: &Entry<A, S::Id>| liveness == Liveness::Any || e.failures == 0;
        let tp = target.prefix();
        // 1. the target's own bucket (closest of all).
        if let Some(bucket) = self.buckets.get(ct) {
            group.extend(
                bucket
                    .entries
                    .iter()
                    .filter(|e| usable(e))
                    .map(|e| (S::prefix(&e.fingerprint) ^ tp, e)),
            );
            flush(&mut group, &mut out);
        }
        // 2. every deeper bucket, merged: all at the same leading-bit distance.
        for bucket in self.buckets.iter().skip(ct + 1) {
            if out.len() == n {
                return out;
            }
            group.extend(
                bucket
                    .entries
                    .iter()
                    .filter(|e| usable(e))
                    .map(|e| (S::prefix(&e.fingerprint) ^ tp, e)),
            );
        }
        flush(&mut group, &mut out);
        // 3. shallower buckets, each farther than the one before.
        for bucket in self.buckets[..ct].iter().rev() {
            if out.len() == n {
                break;
            }
            group.extend(
                bucket
                    .entries
                    .iter()
                    .filter(|e| usable(e))
                    .map(|e| (S::prefix(&e.fingerprint) ^ tp, e)),
            );
            flush(&mut group, &mut out);
        }
        out
    }

    /// Checks the structural invariants; returns a description of the first broken one.
    /// Used by tests, the fuzzer and the simulator's self-checks.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut count = 0;
        let mut seen = std::collections::BTreeSet::new();
        for (cpl, b) in self.buckets.iter().enumerate() {
            if b.entries.len() > self.k {
                return Err(format!("bucket {cpl} holds {} > k", b.entries.len()));
            }
            if b.replacements.len() > self.replacement_cap {
                return Err(format!("bucket {cpl} caches too many replacements"));
            }
            for e in &b.entries {
                let fp = self.fingerprint_of(e);
                if S::prefix(&e.fingerprint) != fp.key_prefix() {
                    return Err(format!("{fp}: its id holds another key prefix"));
                }
                if fp == self.local {
                    return Err("table holds the local node".into());
                }
                if self.cpl(&fp.key()) != Some(cpl) {
                    return Err(format!("{fp} is in the wrong bucket {cpl}"));
                }
                if !seen.insert(fp.key()) {
                    return Err(format!("{fp} is in the table twice"));
                }
                count += 1;
            }
        }
        if count != self.len {
            return Err(format!("len {} but {count} entries", self.len));
        }
        if self.oldest_lookup != self.buckets.iter().map(|b| b.last_lookup).min() {
            return Err("the oldest bucket stamp is out of date".into());
        }
        self.check_subnet_limits()
    }

    fn check_subnet_limits(&self) -> Result<(), String> {
        let Some(limits) = self.limits else {
            return if self.per_subnet.is_empty() {
                Ok(())
            } else {
                Err("subnet counts without limits".into())
            };
        };
        let mut table: BTreeMap<Subnet, u32> = BTreeMap::new();
        for (cpl, b) in self.buckets.iter().enumerate() {
            let mut bucket: BTreeMap<Subnet, usize> = BTreeMap::new();
            for s in b.entries.iter().filter_map(|e| self.subnet(&e.address)) {
                *bucket.entry(s).or_default() += 1;
                *table.entry(s).or_default() += 1;
            }
            if let Some((s, n)) = bucket.iter().find(|(_, n)| **n > limits.per_bucket) {
                return Err(format!("bucket {cpl} holds {n} peers of {s:?}"));
            }
        }
        if let Some((s, n)) = table.iter().find(|(_, n)| **n as usize > limits.per_table) {
            return Err(format!("the table holds {n} peers of {s:?}"));
        }
        if table != self.per_subnet {
            return Err("subnet counts out of step with the entries".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(first: u8, last: u8) -> Fingerprint {
        let mut b = [0u8; 20];
        b[0] = first;
        b[19] = last;
        Fingerprint::V4(b)
    }

    const BACKOFF: Duration = Duration::from_secs(30);

    #[test]
    fn full_bucket_pings_head_then_replaces_on_failure() {
        let mut t = RoutingTable::new(fp(0, 0), 2, 2, 2);
        let now = Time(1_000_000);
        // All in bucket cpl 0 (first bit set).
        assert_eq!(
            t.seen(Contact::new(fp(0x80, 1), 1), now, BACKOFF),
            SeenOutcome::Inserted
        );
        assert_eq!(
            t.seen(Contact::new(fp(0x81, 1), 2), now, BACKOFF),
            SeenOutcome::Inserted
        );
        // Head seen just now: alive, newcomer cached.
        assert_eq!(
            t.seen(Contact::new(fp(0x82, 1), 3), now, BACKOFF),
            SeenOutcome::Cached
        );
        let later = now + Duration::from_secs(60);
        match t.seen(Contact::new(fp(0x83, 1), 4), later, BACKOFF) {
            SeenOutcome::PingRequired(c) => assert_eq!(c.fingerprint, fp(0x80, 1)),
            o => panic!("{o:?}"),
        }
        // Second newcomer within backoff: no second ping.
        assert_eq!(
            t.seen(Contact::new(fp(0x84, 1), 5), later, BACKOFF),
            SeenOutcome::Cached
        );
        // The head fails: the most recent newcomer takes its place.
        assert_eq!(
            t.failed(&fp(0x80, 1)),
            FailedOutcome::Evicted {
                promoted: Some(Contact::new(fp(0x84, 1), 5))
            }
        );
        assert!(t.contains(&fp(0x84, 1)));
        assert!(!t.contains(&fp(0x80, 1)));
        assert_eq!(t.len(), 2);
        t.check_invariants().unwrap();
    }

    #[test]
    fn one_head_check_per_bucket_per_backoff() {
        let mut t = RoutingTable::new(fp(0, 0), 2, 4, 2);
        t.seen(Contact::new(fp(0x80, 1), 1), Time(0), BACKOFF);
        t.seen(Contact::new(fp(0x81, 1), 2), Time(0), BACKOFF);
        let later = Time(0) + Duration::from_secs(60);
        assert!(matches!(
            t.seen(Contact::new(fp(0x82, 1), 3), later, BACKOFF),
            SeenOutcome::PingRequired(_)
        ));
        // The head answers and rotates to the tail; the new head is old too,
        // but the bucket was checked within the backoff: no second ping.
        t.seen(Contact::new(fp(0x80, 1), 1), later, BACKOFF);
        assert_eq!(
            t.seen(Contact::new(fp(0x83, 1), 4), later, BACKOFF),
            SeenOutcome::Cached
        );
        // After the backoff the bucket may be checked again.
        let much_later = later + BACKOFF;
        assert!(matches!(
            t.seen(Contact::new(fp(0x84, 1), 5), much_later, BACKOFF),
            SeenOutcome::PingRequired(_)
        ));
    }

    #[test]
    fn alive_head_moves_to_tail() {
        let mut t = RoutingTable::new(fp(0, 0), 2, 2, 2);
        let now = Time(0);
        t.seen(Contact::new(fp(0x80, 1), 1), now, BACKOFF);
        t.seen(Contact::new(fp(0x81, 1), 2), now, BACKOFF);
        let later = now + Duration::from_secs(60);
        assert!(matches!(
            t.seen(Contact::new(fp(0x82, 1), 3), later, BACKOFF),
            SeenOutcome::PingRequired(_)
        ));
        assert_eq!(
            t.seen(Contact::new(fp(0x80, 1), 1), later, BACKOFF),
            SeenOutcome::Updated
        );
        let b = t.buckets().next().unwrap().1;
        assert_eq!(b.entries()[1].fingerprint, fp(0x80, 1));
        assert_eq!(b.replacements().len(), 1);
    }

    #[test]
    fn refuses_self_and_counts_failures() {
        let mut t = RoutingTable::new(fp(0, 0), 20, 2, 2);
        assert_eq!(
            t.seen(Contact::new(fp(0, 0), 0), Time(0), BACKOFF),
            SeenOutcome::Refused
        );
        t.seen(Contact::new(fp(1, 0), 1), Time(0), BACKOFF);
        assert_eq!(t.failed(&fp(1, 0)), FailedOutcome::Counted);
        assert!(t
            .closest(&fp(1, 0).key(), 5, Liveness::Responsive)
            .is_empty());
        assert_eq!(t.closest(&fp(1, 0).key(), 5, Liveness::Any).len(), 1);
        assert_eq!(
            t.failed(&fp(1, 0)),
            FailedOutcome::Evicted { promoted: None }
        );
        assert!(t.is_empty());
        assert_eq!(t.failed(&fp(1, 0)), FailedOutcome::Unknown);
    }

    #[test]
    fn same_key_matches_key_equality() {
        let v4 = fp(0x12, 0x34);
        let mut b = [0u8; 32];
        b[..20].copy_from_slice(v4.as_bytes());
        let v6 = Fingerprint::V6(b);
        b[31] = 1;
        let v6_other = Fingerprint::V6(b);
        for (x, y) in [
            (v4, v4),
            (v4, v6),
            (v6, v4),
            (v4, v6_other),
            (v6_other, v6),
            (v4, fp(0x12, 0x35)),
        ] {
            assert_eq!(same_key(&x, &y), x.key() == y.key(), "{x:?} {y:?}");
        }
    }

    /// The simulator's entry: a 4-byte address and a compact id.
    #[test]
    fn compact_entry_is_at_most_32_bytes() {
        use crate::fingerprint_store::CompactId;
        assert!(std::mem::size_of::<Entry<u32, CompactId>>() <= 32);
        assert_eq!(std::mem::size_of::<Entry<u32, CompactId>>(), 28);
        assert_eq!(std::mem::size_of::<Entry<u32>>(), 48);
    }

    /// A table on a shared store orders entries alike in their first 64
    /// bits (a store lookup decides) as one holding fingerprints does.
    #[test]
    fn compact_closest_with_tied_prefixes() {
        use crate::fingerprint_store::SharedFingerprints;
        let with_tail = |tail: u8| {
            let mut b = [0x77u8; 20];
            b[19] = tail;
            Fingerprint::V4(b)
        };
        let local = with_tail(0);
        let store = SharedFingerprints::new();
        let mut inline = RoutingTable::new(local, 20, 0, 2);
        let mut compact = RoutingTable::with_store(local, 20, 0, 2, store.clone());
        for tail in (1..=255u8).rev() {
            let c = Contact::new(with_tail(tail), u32::from(tail));
            assert_eq!(
                inline.seen(c.clone(), Time(0), BACKOFF),
                compact.seen(c, Time(0), BACKOFF)
            );
        }
        compact.check_invariants().unwrap();
        for target in [0u8, 1, 0x80, 0xff, 0x3c] {
            let tk = with_tail(target).key();
            let want = inline.closest(&tk, 30, Liveness::Any);
            assert_eq!(want.len(), 30);
            assert!(want.windows(2).all(|w| {
                w[0].fingerprint.key().distance(&tk) < w[1].fingerprint.key().distance(&tk)
            }));
            assert_eq!(compact.closest(&tk, 30, Liveness::Any), want);
        }
    }

    #[test]
    fn closest_matches_brute_force() {
        let mut t = RoutingTable::new(fp(0x55, 0x55), 4, 0, 2);
        let mut all = Vec::new();
        for i in 0..=255u8 {
            let f = fp(i, i.wrapping_mul(37));
            if t.seen(Contact::new(f, i as u32), Time(0), BACKOFF) == SeenOutcome::Inserted {
                all.push(f);
            }
        }
        for target in [fp(0, 0), fp(0x55, 0x55), fp(0xff, 1), fp(0x54, 9)] {
            let tk = target.key();
            let mut want = all.clone();
            want.sort_by_key(|f| f.key().distance(&tk));
            want.truncate(7);
            let got: Vec<_> = t
                .closest(&tk, 7, Liveness::Any)
                .into_iter()
                .map(|c| c.fingerprint)
                .collect();
            assert_eq!(got, want);
        }
    }
}
