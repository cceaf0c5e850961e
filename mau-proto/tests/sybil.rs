//! Sybil and poisoning resistance of the core: per-subnet limits in the
//! routing table, and hostile find_peer answers (far, duplicate, unreachable,
//! or naming good peers at dead addresses) that must not evict live peers.

use std::net::Ipv4Addr;
use std::time::Duration;

use mau_proto::internals::{RoutingTable, SeenOutcome};
use mau_proto::{
    Config, Contact, Event, Fingerprint, HostIp, LimitScope, Node, Output, Request, Response,
    RpcFailure, SubnetLimits, Time, Transmit,
};

const BACKOFF: Duration = Duration::from_secs(30);

/// A v4 fingerprint in bucket `cpl 0` of a local id starting with 0x00.
fn far(n: u16) -> Fingerprint {
    let mut b = [0u8; 20];
    b[0] = 0x80;
    b[1..3].copy_from_slice(&n.to_be_bytes());
    Fingerprint::V4(b)
}

/// A v4 fingerprint whose first byte is `first` and that is distinct by `n`.
fn id(first: u8, n: u16) -> Fingerprint {
    let mut b = [0u8; 20];
    b[0] = first;
    b[1..3].copy_from_slice(&n.to_be_bytes());
    Fingerprint::V4(b)
}

fn ip(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from(Ipv4Addr::new(a, b, c, d))
}

fn local() -> Fingerprint {
    Fingerprint::V4([0u8; 20])
}

/// A table of `local()` (K = `k`, 8 replacements) limited by `limits`.
fn table<A: Clone + Eq + HostIp>(
    k: usize,
    max_failures: u8,
    limits: SubnetLimits,
) -> RoutingTable<A> {
    RoutingTable::new(local(), k, 8, max_failures).with_subnet_limits(Some(limits))
}

fn limited_table() -> RoutingTable<u32> {
    table(20, 2, SubnetLimits::default())
}

#[test]
fn at_most_two_peers_of_a_slash_24_per_bucket() {
    let mut t = limited_table();
    let now = Time(1_000);
    for (n, host) in [1u8, 2].into_iter().enumerate() {
        let c = Contact::new(far(n as u16), ip(1, 2, 3, host));
        assert_eq!(t.seen(c, now, BACKOFF), SeenOutcome::Inserted);
    }
    let third = Contact::new(far(9), ip(1, 2, 3, 99));
    assert_eq!(t.seen(third, now, BACKOFF), SeenOutcome::SubnetFull);
    // Another /24 is welcome in the same bucket.
    let other = Contact::new(far(10), ip(1, 2, 4, 1));
    assert_eq!(t.seen(other, now, BACKOFF), SeenOutcome::Inserted);
    assert_eq!(t.len(), 3);
    t.check_invariants().expect("invariants");
}

#[test]
fn at_most_ten_peers_of_a_slash_24_in_the_table() {
    let mut t = limited_table();
    let now = Time(1_000);
    let mut inserted = 0;
    // Two per bucket in eight buckets would be 16: the table cap stops at 10.
    for bucket in 0..8u8 {
        for host in 0..2u8 {
            let fp = id(0x80 >> bucket, u16::from(host));
            let c = Contact::new(fp, ip(5, 6, 7, bucket * 2 + host + 1));
            match t.seen(c, now, BACKOFF) {
                SeenOutcome::Inserted => inserted += 1,
                SeenOutcome::SubnetFull => {}
                o => panic!("{o:?}"),
            }
        }
    }
    assert_eq!(inserted, 10);
    t.check_invariants().expect("invariants");
    // A departure frees a slot.
    let first = t.entries().next().map(|e| e.fingerprint);
    t.remove(&first.expect("an entry"));
    let c = Contact::new(id(0x01, 77), ip(5, 6, 7, 200));
    assert_eq!(t.seen(c, now, BACKOFF), SeenOutcome::Inserted);
    t.check_invariants().expect("invariants");
}

#[test]
fn ipv6_peers_are_limited_per_slash_64() {
    use mau_proto::PeerAddress;
    let mut t: RoutingTable<PeerAddress> = table(20, 2, SubnetLimits::default());
    let addr = |s: &str| PeerAddress::parse(s).expect("valid address");
    let now = Time(0);
    let c = |n, a: &str| Contact::new(far(n), addr(a));
    for (n, a, outcome) in [
        (1, "[2a00:1:2:3::1]:80", SeenOutcome::Inserted),
        (2, "[2a00:1:2:3::2]:80", SeenOutcome::Inserted),
        (3, "[2a00:1:2:3:ffff::3]:80", SeenOutcome::SubnetFull),
        (4, "[2a00:1:2:4::1]:80", SeenOutcome::Inserted),
    ] {
        assert_eq!(t.seen(c(n, a), now, BACKOFF), outcome, "{a}");
    }
    // DNS names cannot be placed in a subnet by the core: not limited.
    for n in 5..9 {
        let a = format!("host{n}.example.org:80");
        assert_eq!(t.seen(c(n, &a), now, BACKOFF), SeenOutcome::Inserted);
    }
}

#[test]
fn private_addresses_are_exempt_by_default_and_limited_on_request() {
    let mut open = limited_table();
    for n in 0..20u16 {
        let c = Contact::new(far(n), ip(127, 0, 0, 1));
        assert_eq!(open.seen(c, Time(0), BACKOFF), SeenOutcome::Inserted);
    }
    let all = SubnetLimits {
        scope: LimitScope::All,
        ..SubnetLimits::default()
    };
    let mut strict: RoutingTable<u32> = table(20, 2, all);
    let inserted = (0..20u16)
        .filter(|n| {
            let c = Contact::new(far(*n), ip(127, 0, 0, 1));
            strict.seen(c, Time(0), BACKOFF) == SeenOutcome::Inserted
        })
        .count();
    assert_eq!(inserted, 2);
}

#[test]
fn a_peer_cannot_move_into_a_full_subnet() {
    let mut t = limited_table();
    let now = Time(0);
    t.seen(Contact::new(far(1), ip(1, 2, 3, 1)), now, BACKOFF);
    t.seen(Contact::new(far(2), ip(1, 2, 3, 2)), now, BACKOFF);
    t.seen(Contact::new(far(3), ip(9, 9, 9, 9)), now, BACKOFF);
    let moved = Contact::new(far(3), ip(1, 2, 3, 3));
    assert_eq!(t.seen(moved, now, BACKOFF), SeenOutcome::SubnetFull);
    let kept = t.get(&far(3)).map(|e| e.address);
    assert_eq!(kept, Some(ip(9, 9, 9, 9)));
    // Moving within its own subnet, or to a free one, is fine.
    let moved = Contact::new(far(1), ip(1, 2, 3, 50));
    assert_eq!(t.seen(moved, now, BACKOFF), SeenOutcome::Updated);
    t.check_invariants().expect("invariants");
}

#[test]
fn a_subnet_cannot_fill_the_replacement_cache_nor_be_promoted_past_the_limit() {
    // K = 2 so the bucket fills with two peers of different subnets.
    let mut t: RoutingTable<u32> = table(2, 1, SubnetLimits::default());
    let now = Time(0);
    t.seen(Contact::new(far(1), ip(1, 1, 1, 1)), now, BACKOFF);
    t.seen(Contact::new(far(2), ip(2, 2, 2, 2)), now, BACKOFF);
    let waiting: Vec<SeenOutcome<u32>> = (10..20u16)
        .map(|n| t.seen(Contact::new(far(n), ip(3, 3, 3, n as u8)), now, BACKOFF))
        .collect();
    let refused = waiting
        .iter()
        .filter(|o| **o == SeenOutcome::SubnetFull)
        .count();
    assert_eq!(refused, 8, "{waiting:?}");
    // Both entries fail: at most two of subnet 3.3.3 take their places.
    t.failed(&far(1));
    t.failed(&far(2));
    let of_attacker = t
        .entries()
        .filter(|e| e.address >> 8 == ip(3, 3, 3, 0) >> 8)
        .count();
    assert!(of_attacker <= 2);
    t.check_invariants().expect("invariants");
}

// ----- hostile answers at the node level -----------------------------------

fn drain(n: &mut Node<u32>) -> Vec<Output<u32>> {
    std::iter::from_fn(|| n.poll_output()).collect()
}

/// A node (seed 7) that knows `peers`, its first outputs drained.
fn node_knowing<'a>(
    config: Config,
    now: Time,
    peers: impl IntoIterator<Item = &'a Contact<u32>>,
) -> Node<u32> {
    let mut n: Node<u32> = Node::new(local(), config, 7);
    for p in peers {
        n.add_peer(now, p.clone());
    }
    drain(&mut n);
    n
}

/// A node with 20 live peers in its farthest bucket, each answering at its address.
fn node_with_live_peers(now: Time) -> (Node<u32>, Vec<Contact<u32>>) {
    let peers: Vec<Contact<u32>> = (0..20u16)
        .map(|i| Contact::new(far(i), ip(10, 0, 0, 1) + u32::from(i)))
        .collect();
    (node_knowing(Config::default(), now, &peers), peers)
}

/// Drives `n` for at most `rounds` rounds: every request it sends is answered
/// at once with `answer(request)`. When it falls quiet it stops, unless
/// `timers` is set: then the clock moves to its next timer if that is within
/// `timers` of now, and it goes on. Returns what the last lookup to finish
/// found (`None` if none finished).
fn drive(
    n: &mut Node<u32>,
    now: &mut Time,
    rounds: usize,
    timers: Option<Duration>,
    mut answer: impl FnMut(&Transmit<u32>) -> Result<Response<u32>, RpcFailure>,
) -> Option<Option<Contact<u32>>> {
    let mut found = None;
    for _ in 0..rounds {
        let outs = drain(n);
        if outs.is_empty() {
            match (timers, n.poll_timeout()) {
                (Some(horizon), Some(t)) if t < *now + horizon => {
                    *now = t;
                    n.handle_timeout(t);
                    continue;
                }
                _ => break,
            }
        }
        for o in outs {
            match o {
                Output::Transmit(t) => {
                    let r = answer(&t);
                    n.on_response(*now, t.id, r);
                }
                Output::Event(Event::LookupFinished(o)) => found = Some(o.found),
                Output::Event(_) => {}
            }
        }
    }
    found
}

#[test]
fn hostile_answers_never_evict_live_peers() {
    // K = 2 keeps the scene small. Good far peers A, B (bucket 0x80); near
    // the target, C answers with lies and D is dead, so the lookup reaches
    // A and B only through C's lies: at dead addresses. Five lookups later A
    // and B must still be in the table, at their own addresses.
    let config = Config {
        k: 2,
        ..Config::default()
    };
    let mut now = Time(1_000_000);
    let a = Contact::new(far(1), ip(10, 0, 0, 1));
    let b = Contact::new(far(2), ip(10, 0, 0, 2));
    let c = Contact::new(id(0x40, 1), ip(10, 0, 0, 3));
    let d = Contact::new(id(0x40, 2), ip(10, 0, 0, 4));
    let mut n = node_knowing(config, now, [&a, &b, &c, &d]);
    let mut asked_at_dead_addresses = 0;
    for round in 0..5u16 {
        let target = id(0x41, round);
        n.start_lookup(now, target).expect("lookup starts");
        let horizon = Some(Duration::from_secs(60));
        drive(&mut n, &mut now, 100, horizon, |t| {
            if t.to == c {
                // Good peers at dead addresses, one record many times,
                // and strangers that never answer.
                let mut records = vec![
                    Contact::new(a.fingerprint, ip(203, 0, 113, 1)),
                    Contact::new(b.fingerprint, ip(203, 0, 113, 2)),
                ];
                records.extend((0..5).map(|_| Contact::new(far(999), ip(198, 51, 100, 1))));
                records.push(Contact::new(id(0x41, 500 + round), 42));
                Ok(Response::Peers(records))
            } else if t.to == a || t.to == b {
                match t.request {
                    Request::FindPeer(_) => Ok(Response::Peers(vec![])),
                    Request::Ping => Ok(Response::Pong),
                }
            } else {
                if t.to.fingerprint == a.fingerprint || t.to.fingerprint == b.fingerprint {
                    asked_at_dead_addresses += 1;
                }
                Err(RpcFailure::Timeout)
            }
        });
        // C must stay in the table to keep lying: re-add it if a ping
        // decided against it (it is "alive").
        n.add_peer(now, c.clone());
        drain(&mut n);
    }
    for p in [&a, &b] {
        let e = n
            .table()
            .get(&p.fingerprint)
            .expect("a good peer was evicted");
        assert_eq!(e.address, p.address, "hearsay changed an address");
        assert_eq!(e.failures, 0, "a lie counted as a failure");
    }
    assert_eq!(
        asked_at_dead_addresses, 0,
        "asked a known peer at a claimed address"
    );
    n.check_invariants().expect("invariants");
}

#[test]
fn a_dead_address_for_the_target_does_not_hide_it() {
    let mut now = Time(1_000_000);
    let (mut n, peers) = node_with_live_peers(now);
    let target = id(0x40, 1);
    let real = ip(10, 9, 9, 9);
    n.start_lookup(now, target).expect("lookup starts");
    let mut answered = false;
    let mut asked_target = Vec::new();
    let found = drive(&mut n, &mut now, 100, None, |t| {
        if t.to.fingerprint == target {
            asked_target.push(t.to.address);
            if t.to.address == real {
                Ok(Response::Peers(vec![]))
            } else {
                Err(RpcFailure::Unreachable)
            }
        } else if peers.contains(&t.to) {
            // The first answer is a liar (target at a dead address),
            // every later one tells the truth.
            let address = if answered { real } else { ip(203, 0, 113, 7) };
            answered = true;
            Ok(Response::Peers(vec![Contact::new(target, address)]))
        } else {
            Err(RpcFailure::Timeout)
        }
    });
    assert_eq!(asked_target.first(), Some(&ip(203, 0, 113, 7)));
    assert!(asked_target.contains(&real), "asked only {asked_target:?}");
    assert_eq!(found, Some(Some(Contact::new(target, real))));
}

#[test]
fn a_lookup_tries_at_most_three_addresses_per_peer() {
    let mut now = Time(1_000_000);
    let (mut n, peers) = node_with_live_peers(now);
    let target = id(0x40, 2);
    n.start_lookup(now, target).expect("lookup starts");
    let mut liar = 0u32;
    let mut tries = 0;
    drive(&mut n, &mut now, 200, None, |t| {
        if t.to.fingerprint == target {
            tries += 1;
            Err(RpcFailure::Unreachable)
        } else if peers.contains(&t.to) {
            // Every answer names the target at yet another dead address.
            liar += 1;
            let records = vec![Contact::new(target, ip(203, 0, 113, 0) + liar)];
            Ok(Response::Peers(records))
        } else {
            Err(RpcFailure::Timeout)
        }
    });
    assert_eq!(tries, 3, "target tried {tries} times");
}

#[test]
fn a_lookup_surrounded_by_colluders_widens_to_farther_seeds() {
    // The 20 table peers closest to the target collude: they answer with each
    // other only. Twenty honest but farther peers know the target.
    let mut now = Time(1_000_000);
    let target = Contact::new(id(0x40, 1), ip(10, 1, 1, 1));
    let colluders: Vec<Contact<u32>> = (0..20u16)
        .map(|i| Contact::new(id(0x40, 100 + i), ip(10, 2, 0, 1) + u32::from(i)))
        .collect();
    let honest: Vec<Contact<u32>> = (0..20u16)
        .map(|i| Contact::new(far(i), ip(10, 3, 0, 1) + u32::from(i)))
        .collect();
    let mut n = node_knowing(Config::default(), now, colluders.iter().chain(&honest));
    n.start_lookup(now, target.fingerprint)
        .expect("lookup starts");
    let mut honest_asked = 0;
    let found = drive(&mut n, &mut now, 100, None, |t| {
        if t.to == target {
            Ok(Response::Peers(vec![]))
        } else if colluders.contains(&t.to) {
            Ok(Response::Peers(colluders.clone()))
        } else if honest.contains(&t.to) {
            honest_asked += 1;
            Ok(Response::Peers(vec![target.clone()]))
        } else {
            Err(RpcFailure::Timeout)
        }
    });
    assert!(honest_asked > 0, "never left the colluders");
    assert_eq!(found, Some(Some(target)));
}
