//! Fixtures for the mau-proto benchmarks: deterministic random ids, filled
//! routing tables, K-record find_peer answers and a network of [`mau_proto::Node`]s on
//! mau-proto's test network with zero latency (every request is answered at
//! the same instant, through the production door: callers are probed).
//!
//! The benchmarks themselves are in `benches/`; run them with
//! `cargo bench -p mau-benches` (add `--features compare-discv5` for the
//! comparison with discv5's k-bucket table).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::time::Duration;

use mau_proto::internals::RoutingTable;
use mau_proto::testnet::{Links, NetNode, Network as TestNet};
use mau_proto::wire::{PeerAddress, PeerRecord};
use mau_proto::{Config, Contact, Event, Fingerprint, Key, LookupOutcome, Rng, Time};

/// PING_MIN_BACKOFF, as the node passes it to the table.
pub const BACKOFF: Duration = mau_proto::config::PING_MIN_BACKOFF;

/// `n` distinct random v4 fingerprints, the same for the same `seed`.
pub fn random_ids(n: usize, seed: u64) -> Vec<Fingerprint> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::with_capacity(n);
    while out.len() < n {
        let bytes = rng.bytes32();
        let fp = Fingerprint::from_bytes(&bytes[..20]).expect("20 bytes");
        if seen.insert(fp) {
            out.push(fp);
        }
    }
    out
}

/// A table for `local` with bucket size `k` that has seen every id of `ids`
/// once (address = index), at increasing times: full shallow buckets with
/// waiting replacements, sparse deep ones, as in a real node.
pub fn filled_table(local: Fingerprint, ids: &[Fingerprint], k: usize) -> RoutingTable<u32> {
    let mut t = RoutingTable::new(local, k, 8, 2);
    for (i, fp) in ids.iter().enumerate() {
        t.seen(Contact::new(*fp, i as u32), Time(i as u64), BACKOFF);
    }
    t
}

/// `n` random 32-byte lookup targets.
pub fn random_keys(n: usize, seed: u64) -> Vec<Key> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| Key::from_bytes(rng.bytes32())).collect()
}

/// A find_peer answer of `k` records with realistic addresses.
pub fn find_peer_records(k: usize, seed: u64) -> Vec<PeerRecord> {
    random_ids(k, seed)
        .into_iter()
        .enumerate()
        .map(|(i, fp)| PeerRecord {
            fingerprint: fp,
            address: PeerAddress::parse(&format!("peer-{i}.example.org:{}", 1024 + i))
                .expect("valid address"),
        })
        .collect()
}

/// The run of `sorted` whose keys share the first `bits` bits with `key`.
fn in_prefix<'a>(sorted: &'a [(Key, u32)], key: &Key, bits: usize) -> &'a [(Key, u32)] {
    let mut lo = *key.as_bytes();
    let mut hi = *key.as_bytes();
    for bit in bits..256 {
        lo[bit / 8] &= !(0x80 >> (bit % 8));
        hi[bit / 8] |= 0x80 >> (bit % 8);
    }
    let (lo, hi) = (Key::from_bytes(lo), Key::from_bytes(hi));
    let start = sorted.partition_point(|(k, _)| *k < lo);
    let end = sorted.partition_point(|(k, _)| *k <= hi);
    &sorted[start..end]
}

/// A network of nodes in memory, addressed by index, with zero latency.
///
/// Built with complete routing tables: every node knows up to K peers in each
/// of its non-empty buckets (for the deep buckets, all of them), as after a
/// long stable period. Requests are delivered in order and answered at once.
pub struct Network {
    net: TestNet<()>,
}

impl Network {
    /// `n` nodes with bucket size `k` and otherwise default parameters.
    pub fn new(n: usize, k: usize, seed: u64) -> Network {
        let ids = random_ids(n, seed);
        let config = Config {
            k,
            ..Config::default()
        };
        let mut net = TestNet::new(config, Links::INSTANT, seed);
        // Sorted keys: peers sharing a prefix with a node form a contiguous run.
        let mut sorted: Vec<(Key, u32)> = ids
            .iter()
            .enumerate()
            .map(|(i, f)| (f.key(), i as u32))
            .collect();
        sorted.sort_unstable();
        let mut rng = Rng::new(seed ^ 0x5eed);
        for fp in &ids {
            net.add_node(*fp, rng.next_u64(), false);
        }
        for (a, fp) in ids.iter().enumerate() {
            let key = fp.key();
            let mut peers = Vec::new();
            for cpl in 0..160 {
                // Peers sharing exactly `cpl` leading bits with us: our first
                // `cpl` bits, bit `cpl` flipped, anything after.
                let mut bucket = *key.as_bytes();
                bucket[cpl / 8] ^= 0x80 >> (cpl % 8);
                let run = in_prefix(&sorted, &Key::from_bytes(bucket), cpl + 1);
                // Up to k of them, from a random place in the run.
                let take = run.len().min(k);
                let offset = rng.below((run.len() - take) as u64 + 1) as usize;
                peers.extend(
                    run[offset..offset + take]
                        .iter()
                        .map(|(_, j)| Contact::new(ids[*j as usize], *j)),
                );
                // Nobody else shares `cpl + 1` bits with us: no deeper bucket.
                if in_prefix(&sorted, &key, cpl + 1).len() == 1 {
                    break;
                }
            }
            net.with_node(a as u32, |node, now| {
                for c in peers {
                    node.add_peer(now, c);
                }
            });
        }
        while net.poll_event().is_some() {}
        Network { net }
    }

    /// The fingerprints of the nodes, by address.
    pub fn ids(&self) -> &[Fingerprint] {
        self.net.ids()
    }

    /// The node at `addr`.
    pub fn node(&self, addr: u32) -> &NetNode {
        self.net.node(addr).expect("no node leaves")
    }

    /// Runs a find-peer lookup from node `from` for `target` to its end and
    /// returns its outcome. Every request any node sends meanwhile (also the
    /// probes of callers and the pings of full buckets) is delivered and
    /// answered.
    ///
    /// Time stands still (zero latency, and the lookup ends before any
    /// deadline), so repeated lookups measure a steady state.
    pub fn lookup(&mut self, from: u32, target: Fingerprint) -> LookupOutcome<u32> {
        let id = self
            .net
            .with_node(from, |node, now| node.start_lookup(now, target))
            .and_then(Result::ok)
            .expect("one lookup at a time");
        loop {
            while let Some((a, e)) = self.net.poll_event() {
                if let (true, Event::LookupFinished(o)) = (a == from, e) {
                    if o.id == id {
                        return o;
                    }
                }
            }
            self.net
                .step()
                .expect("a lookup with nothing in flight has finished");
        }
    }

    /// The current (frozen) time.
    pub fn now(&self) -> Time {
        self.net.now()
    }
}
