//! A full find-peer lookup in a 10k-node network held in memory: every node a
//! real `mau_proto::Node` with complete routing tables, zero latency, every
//! request answered at once (see `mau_benches::Network`). Measures the CPU
//! cost of one lookup end to end: the searching node's state machine plus the
//! answering nodes' `on_request`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mau_benches::Network;
use mau_proto::Rng;

const NODES: usize = 10_000;

fn lookup(c: &mut Criterion) {
    let built = Instant::now();
    let mut net = Network::new(NODES, 20, 5);
    eprintln!(
        "lookup: built a {NODES}-node network in {:.2?}",
        built.elapsed()
    );
    let mut rng = Rng::new(6);
    let mut pairs: Vec<(u32, u32)> = (0..4096)
        .map(|_| {
            let from = rng.below(NODES as u64) as u32;
            let mut to = rng.below(NODES as u64) as u32;
            if to == from {
                to = (to + 1) % NODES as u32;
            }
            (from, to)
        })
        .collect();
    // A sample of outcomes, for the record (and a sanity check).
    let (mut hops, mut requests, mut found) = (0u64, 0u64, 0u64);
    let mut times = Vec::with_capacity(256);
    for (from, to) in pairs.iter().take(256) {
        let target = net.ids()[*to as usize];
        let t = Instant::now();
        let o = net.lookup(*from, target);
        times.push(t.elapsed());
        hops += o.hops as u64;
        requests += o.requests as u64;
        found += o.found.is_some() as u64;
    }
    eprintln!(
        "lookup: over 256 lookups: found {found}, mean hops {:.2}, mean requests {:.1}",
        hops as f64 / 256.0,
        requests as f64 / 256.0
    );
    times.sort();
    eprintln!(
        "lookup: one lookup takes min {:.1?}, median {:.1?}, p90 {:.1?}, max {:.1?}",
        times[0], times[128], times[230], times[255]
    );
    assert_eq!(found, 256, "every target exists and must be found");
    pairs.rotate_left(256);

    let mut g = c.benchmark_group("lookup");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function(format!("find_peer/{NODES}_nodes"), |b| {
        b.iter(|| {
            i = (i + 1) % pairs.len();
            let (from, to) = pairs[i];
            let target = net.ids()[to as usize];
            black_box(net.lookup(from, target))
        })
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
    targets = lookup
}
criterion_main!(benches);
