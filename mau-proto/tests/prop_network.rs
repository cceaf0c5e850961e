//! Property tests of whole networks on the shared test network
//! (`mau_proto::testnet`): arbitrary sizes, latencies, loss and join orders.
//! Every node keeps its invariants after each input; without loss every
//! node joins and every lookup between live nodes finds its target; the same
//! seed replays the same run.

mod common;

use mau_proto::testnet::{Links, Network};
use mau_proto::{Config, Event, Fingerprint};
use proptest::prelude::*;

/// What one generated run saw.
#[derive(Debug, PartialEq)]
struct Outcome {
    joined: usize,
    lookups: usize,
    found: usize,
    traffic: mau_proto::testnet::Traffic,
}

/// `n` nodes join one after another (`gap` ms apart) through a random
/// earlier node, then every `stride`-th node looks up another.
fn run(n: usize, gap: u64, links: Links, seed: u64, stride: usize) -> (Outcome, u64) {
    let mut net: Network<()> = Network::new(Config::default(), links, seed);
    net.set_check_invariants(true);
    let mut joined = 0;
    let mut drain = |net: &mut Network<()>, found: &mut usize| {
        while let Some((_, e)) = net.poll_event() {
            match e {
                Event::Joined { .. } => joined += 1,
                Event::LookupFinished(o) => {
                    *found += usize::from(o.found.is_some_and(|c| c.fingerprint == o.target))
                }
                _ => {}
            }
        }
    };
    let mut found = 0;
    for i in 0..n {
        let mut b = [0u8; 20];
        b[..8].copy_from_slice(&net.rng().next_u64().to_le_bytes());
        b[8..16].copy_from_slice(&net.rng().next_u64().to_le_bytes());
        let node_seed = net.rng().next_u64();
        let pick = net.rng().below(i.max(1) as u64) as u32;
        let boot = (i > 0).then(|| net.contact(pick));
        let a = net.add_node(Fingerprint::V4(b), node_seed, false);
        let _ = net.with_node(a, |node, now| node.join(now, boot));
        let until = net.now().0 + gap;
        net.run_until(until, |_, ()| {});
    }
    // Long enough for every join, its confirmations and repeats.
    let until = net.now().0 + 120_000;
    net.run_until(until, |_, ()| {});
    drain(&mut net, &mut found);
    let mut lookups = 0;
    for from in (0..n).step_by(stride) {
        let target = net.ids()[(from * 7 + 1) % n];
        if target == net.ids()[from] {
            continue;
        }
        lookups += 1;
        let _ = net.with_node(from as u32, |node, now| node.start_lookup(now, target));
    }
    let until = net.now().0 + 120_000;
    net.run_until(until, |_, ()| {});
    drain(&mut net, &mut found);
    let (violations, first) = net.invariant_violations();
    assert_eq!(violations, 0, "{first:?}");
    let outcome = Outcome {
        joined,
        lookups,
        found,
        traffic: net.traffic().clone(),
    };
    (outcome, net.events_processed())
}

proptest! {
    #![proptest_config(common::config(8))]

    #[test]
    fn lossless_networks_join_and_find_everyone(
        n in 2usize..32,
        gap in 0u64..200,
        latency in (0u64..50, 0u64..200),
        seed in any::<u64>(),
        stride in 1usize..5,
    ) {
        let links = Links {
            latency_min_ms: latency.0,
            latency_max_ms: latency.0 + latency.1,
            loss: 0.0,
        };
        let (o, _) = run(n, gap, links, seed, stride);
        prop_assert_eq!(o.joined, n);
        prop_assert_eq!(o.found, o.lookups, "{:?}", o);
        // Callers entered tables only by answering probes.
        prop_assert!(n < 3 || o.traffic.pings > 0, "{:?}", o);
    }

    #[test]
    fn lossy_networks_keep_invariants_and_replay(
        n in 2usize..20,
        loss in 0.0f64..0.4,
        seed in any::<u64>(),
    ) {
        let links = Links { latency_min_ms: 5, latency_max_ms: 120, loss };
        let a = run(n, 50, links.clone(), seed, 2);
        let b = run(n, 50, links, seed, 2);
        prop_assert_eq!(a, b);
    }
}
