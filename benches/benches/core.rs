//! Routing-table and wire benchmarks of mau-proto.
//!
//! - `table_seen`: `RoutingTable::seen` on a table of realistic size (a node
//!   that has seen 10k peers): refreshing a known peer, a newcomer for a full
//!   bucket, and filling a fresh table from 1000 ids;
//! - `closest_k`: the 16/20 closest peers to a random target in a table filled
//!   from 100k random ids; with `--features compare-discv5` the same query on
//!   discv5's `KBucketsTable` holding the same ids (checked to return the same
//!   peers), in the same group;
//! - `wire`: JSON encode/decode of a K-record find_peer answer.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mau_benches::{filled_table, find_peer_records, random_ids, random_keys, BACKOFF};
use mau_proto::internals::RoutingTable;
use mau_proto::wire::{decode_find_peer, encode_find_peer};
use mau_proto::{Contact, Fingerprint, Liveness, Time};

fn table_seen(c: &mut Criterion) {
    let ids = random_ids(20_001, 1);
    let local = ids[0];
    let table = filled_table(local, &ids[1..10_001], 20);
    let known: Vec<Contact<u32>> = table.entries().map(|e| e.contact()).collect();
    let newcomers: Vec<Contact<u32>> = ids[10_001..]
        .iter()
        .enumerate()
        .map(|(i, f)| Contact::new(*f, i as u32))
        .collect();
    let mut g = c.benchmark_group("table_seen");
    g.throughput(Throughput::Elements(1));

    let mut t = table.clone();
    let mut i = 0usize;
    let mut now = 1_000_000u64;
    g.bench_function(format!("update_known/{}_entries", table.len()), |b| {
        b.iter(|| {
            i = (i + 1) % known.len();
            now += 1;
            black_box(t.seen(known[i].clone(), Time(now), BACKOFF))
        })
    });

    let mut t = table.clone();
    let mut i = 0usize;
    g.bench_function(format!("newcomer/{}_entries", table.len()), |b| {
        b.iter(|| {
            i = (i + 1) % newcomers.len();
            now += 1;
            black_box(t.seen(newcomers[i].clone(), Time(now), BACKOFF))
        })
    });

    g.throughput(Throughput::Elements(1000));
    g.bench_function("fill_from_1000_ids", |b| {
        b.iter_batched(
            || RoutingTable::<u32>::new(local, 20, 8, 2),
            |mut t| {
                for (i, fp) in ids[1..1001].iter().enumerate() {
                    t.seen(Contact::new(*fp, i as u32), Time(i as u64), BACKOFF);
                }
                t
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// discv5's table filled with the same ids, as 32-byte keys (our v4 keys are
/// the fingerprint padded with zeros: the same XOR distances).
#[cfg(feature = "compare-discv5")]
mod discv5_table {
    use discv5::kbucket::{ConnectionDirection, ConnectionState, KBucketsTable, Key, NodeStatus};
    use mau_proto::Fingerprint;
    use std::time::Duration;

    pub type Table = KBucketsTable<Fingerprint, u32>;

    pub fn key(fp: &Fingerprint) -> Key<Fingerprint> {
        Key::new_raw(*fp, *fp.key().as_bytes())
    }

    pub fn filled(local: Fingerprint, ids: &[Fingerprint]) -> Table {
        let mut t: Table = KBucketsTable::new(
            key(&local),
            Duration::from_secs(60),
            discv5::kbucket::MAX_NODES_PER_BUCKET,
            None,
            None,
        );
        let status = NodeStatus {
            direction: ConnectionDirection::Outgoing,
            state: ConnectionState::Connected,
        };
        for (i, fp) in ids.iter().enumerate() {
            let _ = t.insert_or_update(&key(fp), i as u32, status);
        }
        t
    }

    pub fn closest(t: &mut Table, target: &Key<Fingerprint>, n: usize) -> Vec<Fingerprint> {
        t.closest_values(target)
            .take(n)
            .map(|v| *v.key.preimage())
            .collect()
    }
}

fn closest_k(c: &mut Criterion) {
    let ids = random_ids(100_001, 2);
    let local = ids[0];
    let ours20 = filled_table(local, &ids[1..], 20);
    // discv5's buckets hold 16: compare on equal tables.
    let ours16 = filled_table(local, &ids[1..], 16);
    let mut targets = random_keys(1024, 3);
    // Also targets near us, where the deep buckets matter.
    targets.extend(ids[1..65].iter().map(Fingerprint::key));
    eprintln!(
        "closest_k: tables filled from 100k ids hold {} (K=20) and {} (K=16) peers",
        ours20.len(),
        ours16.len()
    );

    let mut g = c.benchmark_group("closest_k");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("mau_proto/k20", |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            black_box(ours20.closest(&targets[i], 20, Liveness::Any))
        })
    });
    let mut i = 0usize;
    g.bench_function("mau_proto/k16", |b| {
        b.iter(|| {
            i = (i + 1) % targets.len();
            black_box(ours16.closest(&targets[i], 16, Liveness::Any))
        })
    });

    #[cfg(feature = "compare-discv5")]
    {
        let mut theirs = discv5_table::filled(local, &ids[1..]);
        let target_keys: Vec<discv5::kbucket::Key<Fingerprint>> = targets
            .iter()
            .map(|k| discv5::kbucket::Key::new_raw(local, *k.as_bytes()))
            .collect();
        // Same ids in the same order, first-come buckets on both sides: the
        // answers must be identical, or the comparison is meaningless.
        for (k, dk) in targets.iter().zip(&target_keys) {
            let ours: Vec<Fingerprint> = ours16
                .closest(k, 16, Liveness::Any)
                .into_iter()
                .map(|c| c.fingerprint)
                .collect();
            assert_eq!(ours, discv5_table::closest(&mut theirs, dk, 16));
        }
        let mut i = 0usize;
        g.bench_function("discv5/k16", |b| {
            b.iter(|| {
                i = (i + 1) % target_keys.len();
                black_box(discv5_table::closest(&mut theirs, &target_keys[i], 16))
            })
        });
    }
    g.finish();
}

fn wire(c: &mut Criterion) {
    let records = find_peer_records(20, 4);
    let body = encode_find_peer(&records);
    assert_eq!(decode_find_peer(&body, 20).expect("decodes"), records);
    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("encode_find_peer/20_records", |b| {
        b.iter(|| black_box(encode_find_peer(black_box(&records))))
    });
    g.bench_function("decode_find_peer/20_records", |b| {
        b.iter(|| black_box(decode_find_peer(black_box(&body), 20)))
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = table_seen, closest_k, wire
}
criterion_main!(benches);
