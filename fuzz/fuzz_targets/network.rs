//! A small network of real nodes (mau-proto's test network: latency, loss,
//! probes of every caller) driven by arbitrary joins, lookups, departures and
//! time. Asserted: no panic, every node's `check_invariants()` after each of
//! its inputs, every lookup's outcome well formed (a found target is the
//! target at its own address), and the run bounded.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mau_proto::testnet::{Links, Network, Step};
use mau_proto::{Config, Event, Fingerprint};

#[derive(Arbitrary, Debug)]
enum Op {
    /// A new node joins through the node at `boot` (none if the network is empty).
    Join { id: [u8; 20], boot: u8 },
    /// Node `from` looks node `to` up.
    Lookup { from: u8, to: u8 },
    /// Node `who` leaves.
    Leave(u8),
    /// Time passes (ms).
    Run(u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    seed: u64,
    /// Loss in percent (capped at 50).
    loss: u8,
    latency_max_ms: u8,
    ops: Vec<Op>,
}

/// Nodes at most, and events processed at most, per input.
const MAX_NODES: usize = 48;
const MAX_EVENTS: u64 = 300_000;

fuzz_target!(|input: Input| {
    let links = Links {
        latency_min_ms: 1,
        latency_max_ms: 1 + u64::from(input.latency_max_ms),
        loss: f64::from(input.loss.min(50)) / 100.0,
    };
    let mut net: Network<()> = Network::new(Config::default(), links, input.seed);
    net.set_check_invariants(true);
    for op in input.ops.iter().take(128) {
        match op {
            Op::Join { id, boot } => {
                if net.len() >= MAX_NODES || id.iter().all(|b| *b == 0) {
                    continue;
                }
                let fp = Fingerprint::V4(*id);
                if net.ids().contains(&fp) {
                    continue;
                }
                let seed = net.rng().next_u64();
                let boot = (!net.is_empty())
                    .then(|| net.contact(u32::from(*boot) % net.len() as u32));
                let a = net.add_node(fp, seed, false);
                let _ = net.with_node(a, |n, now| n.join(now, boot));
            }
            Op::Lookup { from, to } => {
                if net.is_empty() {
                    continue;
                }
                let n = net.len() as u32;
                let target = net.ids()[(u32::from(*to) % n) as usize];
                let _ = net.with_node(u32::from(*from) % n, |node, now| {
                    node.start_lookup(now, target)
                });
            }
            Op::Leave(who) => {
                if !net.is_empty() {
                    net.remove_node(u32::from(*who) % net.len() as u32);
                }
            }
            Op::Run(ms) => {
                let until = net.now().0 + u64::from(*ms);
                while net.next_time().is_some_and(|t| t <= until)
                    && net.events_processed() < MAX_EVENTS
                {
                    let _: Option<Step<()>> = net.step();
                }
            }
        }
        while let Some((a, e)) = net.poll_event() {
            if let Event::LookupFinished(o) = e {
                assert!(o.closest.len() <= Config::default().k);
                assert!(o.closest.iter().all(|c| c.fingerprint != net.ids()[a as usize]));
                if let Some(c) = o.found {
                    assert_eq!(c.fingerprint, o.target);
                    assert_eq!(net.ids()[c.address as usize], o.target);
                }
            }
        }
        let (violations, first) = net.invariant_violations();
        assert_eq!(violations, 0, "{first:?}");
    }
});
