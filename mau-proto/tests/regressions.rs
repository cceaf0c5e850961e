//! Regression tests for bugs the property tests and the fuzzer found in mau-proto.

use std::time::Duration;

use mau_proto::internals::RoutingTable;
use mau_proto::{Config, Contact, Event, Fingerprint, Node, Output, Time};

const BACKOFF: Duration = Duration::from_secs(30);

fn v4(first: u8, last: u8) -> Fingerprint {
    let mut b = [0u8; 20];
    b[0] = first;
    b[19] = last;
    Fingerprint::V4(b)
}

/// The v6 fingerprint on the same key as a v4 one (the v4 padded with zeros).
fn v6_twin(f: &Fingerprint) -> Fingerprint {
    let mut b = [0u8; 32];
    b[..20].copy_from_slice(f.as_bytes());
    Fingerprint::V6(b)
}

/// Bug 1: two fingerprints on one key (a v4 and its zero-padded v6 twin) can
/// both wait in a full bucket's replacement cache; two evictions then promote
/// both, and the table holds one key twice.
#[test]
fn replacement_cache_admits_two_fingerprints_on_one_key() {
    // K = 2: a, c in the bucket; b and its twin b6 wait as replacements.
    let a = v4(0x80, 1);
    let b = v4(0x81, 1);
    let b6 = v6_twin(&b);
    let mut t: RoutingTable<u32> = RoutingTable::new(v4(0, 0), 2, 2, 1);
    t.seen(Contact::new(a, 1), Time(0), BACKOFF);
    t.seen(Contact::new(v4(0x82, 1), 4), Time(0), BACKOFF);
    t.seen(Contact::new(b, 2), Time(0), BACKOFF);
    t.seen(Contact::new(b6, 3), Time(0), BACKOFF);
    t.failed(&a); // promotes b6
    t.failed(&v4(0x82, 1)); // promotes b, on the same key as b6
    t.check_invariants().unwrap();
}

/// Bug 2: `Node::remove_peer` reports `PeerRemoved` but not the `PeerAdded`
/// of the replacement the table promotes into the freed slot, so an
/// application mirroring the table from events diverges from it.
#[test]
fn remove_peer_reports_the_promoted_replacement() {
    let config = Config {
        k: 1,
        ..Config::default()
    };
    let mut n: Node<u32> = Node::new(v4(0, 0), config, 1);
    n.add_peer(Time(0), Contact::new(v4(0x80, 1), 1));
    n.add_peer(Time(0), Contact::new(v4(0x81, 1), 2)); // cached
    while n.poll_output().is_some() {}
    assert!(n.remove_peer(&v4(0x80, 1)));
    let out: Vec<_> = std::iter::from_fn(|| n.poll_output()).collect();
    assert!(n.table().contains(&v4(0x81, 1)), "promoted");
    assert!(
        out.contains(&Output::Event(Event::PeerAdded(Contact::new(
            v4(0x81, 1),
            2
        )))),
        "promotion not reported: {out:?}"
    );
}

/// Bug 3: a v4 node whose table holds a v6 peer sharing all 160 bits of the
/// node's id has a bucket at common prefix length >= 160. Its refresh target
/// is truncated to 20 bytes, i.e. the local id itself, so `touch_bucket_of`
/// does nothing: the bucket stays stale, `poll_timeout` stays in the past and
/// every `handle_timeout` starts another refresh lookup (a busy loop for an
/// adapter that sleeps until `poll_timeout`).
#[test]
fn stale_deep_bucket_of_v4_node_never_clears() {
    let local = v4(0x11, 0x22);
    let mut twin = [0u8; 32];
    twin[..20].copy_from_slice(local.as_bytes());
    twin[31] = 1; // not the same key: a v6 peer in bucket cpl 255
    let mut n: Node<u32> = Node::new(local, Config::default(), 1);
    n.add_peer(Time(0), Contact::new(Fingerprint::V6(twin), 1));
    while n.poll_output().is_some() {}
    let stall = n.config().stall_period;
    let now = Time(0) + stall;
    n.handle_timeout(now);
    let next = n.poll_timeout();
    assert!(
        next.is_none_or(|t| t > now),
        "poll_timeout {next:?} is not after handle_timeout({now:?})"
    );
}

/// Bug 3, continued: further `handle_timeout(now)` calls at the same time
/// start nothing more (the stale buckets were touched by the first).
#[test]
fn stale_deep_bucket_refreshes_once() {
    let local = v4(0x11, 0x22);
    let mut twin = [0u8; 32];
    twin[..20].copy_from_slice(local.as_bytes());
    twin[31] = 1;
    let mut n: Node<u32> = Node::new(local, Config::default(), 1);
    n.add_peer(Time(0), Contact::new(Fingerprint::V6(twin), 1));
    while n.poll_output().is_some() {}
    let now = Time(0) + n.config().stall_period;
    n.handle_timeout(now);
    while n.poll_output().is_some() {}
    let lookups = n.lookups_in_progress();
    for _ in 0..5 {
        n.handle_timeout(now);
    }
    let sent = std::iter::from_fn(|| n.poll_output()).count();
    assert_eq!(sent, 0, "{sent} outputs after repeated handle_timeout(now)");
    assert_eq!(n.lookups_in_progress(), lookups);
}
