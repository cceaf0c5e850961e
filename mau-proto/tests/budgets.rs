//! Outgoing budgets under hostile load: probes of claimed addresses, dials to
//! addresses nobody vouched for, queued requests and slow answers. The core
//! must keep honest peers in its table whatever strangers make it send.

use std::net::Ipv4Addr;

use mau_proto::{
    Caller, Config, Contact, Event, Fingerprint, LimitScope, Node, Output, Request, RequestClass,
    Response, RpcFailure, Time, Transmit,
};

fn id(first: u8, n: u32) -> Fingerprint {
    let mut b = [0u8; 20];
    b[0] = first;
    b[1..5].copy_from_slice(&n.to_be_bytes());
    b[19] = 1;
    Fingerprint::V4(b)
}

fn ip(d: u8) -> u32 {
    u32::from(Ipv4Addr::new(10, 0, 0, d))
}

fn transmits(n: &mut Node<u32>) -> Vec<Transmit<u32>> {
    std::iter::from_fn(|| n.poll_output())
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(t),
            Output::Event(_) => None,
        })
        .collect()
}

/// A node with three honest peers (10.0.0.1-3) in its table.
fn node_with_honest_peers(config: Config) -> (Node<u32>, Vec<Contact<u32>>) {
    let mut n = Node::new(id(0, 0), config, 1);
    let honest: Vec<_> = (1..=3u8)
        .map(|i| Contact::new(id(0x80 | i, 0), ip(i)))
        .collect();
    for c in &honest {
        n.add_peer(Time(0), c.clone());
    }
    transmits(&mut n);
    (n, honest)
}

/// 70 fresh identities a second, for 30 s, each claiming to listen at a
/// tarpit (10.0.0.66, one of ten ports), calling from 10.0.0.99; no probe
/// is ever answered. Meanwhile lookups through the honest peers go on.
#[test]
fn a_probe_flood_neither_reflects_nor_costs_honest_peers_their_place() {
    let config = Config {
        budgets: mau_proto::Budgets {
            probe_source_scope: LimitScope::All,
            ..Default::default()
        },
        ..Config::default()
    };
    let (mut n, honest) = node_with_honest_peers(config);
    let tarpit = ip(66);
    let attacker = Some(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 99)));
    let mut probes_sent = 0usize;
    let mut max_probes_in_flight = 0usize;
    let mut lookups_found = 0usize;
    let mut stranger = 0u32;
    for ms in (0..30_000u64).step_by(100) {
        let now = Time(ms);
        for _ in 0..7 {
            stranger += 1;
            let from = Caller {
                fingerprint: id(0x40, stranger),
                address: Some(tarpit),
                source: attacker,
            };
            let _ = n.on_request(now, from, &Request::Ping);
        }
        // Once a second an honest lookup, answered at once by every peer.
        if ms % 1_000 == 0 {
            let target = honest[(ms / 1_000) as usize % 3].fingerprint;
            n.start_lookup(now, target).expect("a lookup slot");
        }
        n.handle_timeout(now);
        for t in transmits(&mut n) {
            match t.class {
                RequestClass::Probe => {
                    assert_eq!(t.to.address, tarpit);
                    probes_sent += 1;
                }
                // Honest work is sent at once, never behind the probes.
                _ => {
                    assert!(honest.contains(&t.to), "{t:?}");
                    let answer = match t.request {
                        Request::Ping => Response::Pong,
                        Request::FindPeer(_) => Response::Peers(honest.clone()),
                    };
                    n.on_response(now, t.id, Ok(answer));
                }
            }
        }
        max_probes_in_flight = max_probes_in_flight.max(n.in_flight(RequestClass::Probe));
        while let Some(o) = n.poll_output() {
            if let Output::Event(Event::LookupFinished(o)) = o {
                lookups_found += usize::from(o.found.is_some());
            }
        }
    }
    for o in std::iter::from_fn(|| n.poll_output()) {
        if let Output::Event(Event::LookupFinished(o)) = o {
            lookups_found += usize::from(o.found.is_some());
        }
    }
    // The tarpit IP is dialled at most 2/s after a burst of 4, however many
    // identities name it; at most 4 probes at once for one source.
    assert!(probes_sent <= 4 + 2 * 30, "{probes_sent} probes");
    assert!(probes_sent >= 30, "probes still happen: {probes_sent}");
    assert!(max_probes_in_flight <= 4, "{max_probes_in_flight}");
    for c in &honest {
        assert!(n.table().contains(&c.fingerprint), "{c:?} evicted");
    }
    assert_eq!(lookups_found, 30);
    n.check_invariants().expect("invariants");
}

/// A peer answers every find_peer with 20 made-up peers at one victim
/// address: the victim is called a bounded number of times, and the lookup
/// for an absent target ends in seconds, not 20 × the timeout.
#[test]
fn a_hostile_answer_cannot_aim_a_lookup_at_a_victim() {
    let (mut n, honest) = node_with_honest_peers(Config::default());
    let hostile = honest[0].clone();
    let victim = ip(77);
    let absent = id(0x81, 7);
    let fakes: Vec<_> = (0..20)
        .map(|i| Contact::new(id(0x81, 100 + i), victim))
        .collect();
    n.start_lookup(Time(0), absent).expect("a lookup slot");
    let mut now = Time(0);
    let mut victim_calls = 0;
    let mut finished = None;
    for _ in 0..10_000 {
        let outputs: Vec<_> = std::iter::from_fn(|| n.poll_output()).collect();
        for o in outputs {
            let t = match o {
                Output::Transmit(t) => t,
                Output::Event(Event::LookupFinished(o)) => {
                    finished = Some((o, now));
                    continue;
                }
                Output::Event(_) => continue,
            };
            if t.to.address == victim {
                victim_calls += 1; // never answers
            } else if t.to == hostile {
                n.on_response(now, t.id, Ok(Response::Peers(fakes.clone())));
            } else {
                n.on_response(now, t.id, Ok(Response::Peers(vec![])));
            }
        }
        if finished.is_some() {
            break;
        }
        let Some(t) = n.poll_timeout() else { break };
        now = t;
        n.handle_timeout(now);
    }
    let (outcome, at) = finished.expect("the lookup ends");
    assert!(outcome.found.is_none());
    assert!(
        victim_calls <= 4 + 2 * (at.as_millis() / 1000 + 1),
        "{victim_calls} calls"
    );
    // Before any answer was timed, a soft deadline is 3 s; nothing waits 10 s.
    assert!(at < Time(10_000), "lookup took {at:?}");
    for c in &honest {
        assert!(n.table().contains(&c.fingerprint));
    }
}

/// Requests beyond a budget wait in the core; their deadline starts when
/// they are sent, and one that waited too long is cancelled, not failed.
#[test]
fn queued_requests_are_not_failures_of_the_peer() {
    let config = Config {
        budgets: mau_proto::Budgets {
            lookup: 1,
            ..Default::default()
        },
        ..Config::default()
    };
    let (mut n, honest) = node_with_honest_peers(config.clone());
    n.start_lookup(Time(0), id(0x90, 1)).expect("lookup");
    let first = transmits(&mut n);
    assert_eq!(first.len(), 1, "one slot: {first:?}");
    assert_eq!(n.in_flight(RequestClass::Lookup), 1);
    // The first request is answered after 9 s: the next one is sent then,
    // with its own full deadline.
    n.handle_timeout(Time(2_000));
    let sent_later = transmits(&mut n);
    n.on_response(Time(9_000), first[0].id, Ok(Response::Peers(vec![])));
    let second = transmits(&mut n);
    assert!(
        !second.is_empty(),
        "queued request sent when the slot freed"
    );
    assert!(sent_later.iter().all(|t| t.class == RequestClass::Lookup));
    // Nothing answers any more, nothing is counted before it was sent.
    let mut now = Time(9_000);
    while let Some(t) = n.poll_timeout() {
        if t > Time(60_000) {
            break;
        }
        now = t;
        n.handle_timeout(now);
        transmits(&mut n);
    }
    // Three honest peers, each asked at most once and failed at most once:
    // with max_failures = 2 none is evicted, and any request that never got
    // a slot was cancelled without a mark.
    for c in &honest {
        assert!(n.table().contains(&c.fingerprint), "{c:?}");
    }
    // NotSent from the adapter never counts either.
    for _ in 0..5 {
        let before = n.table().len();
        n.start_lookup(now, id(0x90, 2)).expect("lookup");
        for t in transmits(&mut n) {
            n.on_response(now, t.id, Err(RpcFailure::NotSent));
        }
        transmits(&mut n);
        assert_eq!(n.table().len(), before);
        now = now + std::time::Duration::from_secs(1);
    }
}

/// A slow answer: the lookup moves on at the soft deadline, the late answer
/// still counts as the peer being alive, and only the hard deadline counts
/// against a peer of the table.
#[test]
fn a_slow_peer_is_passed_by_lookups_but_not_evicted() {
    let (mut n, honest) = node_with_honest_peers(Config::default());
    // Teach the node that answers take 10 ms.
    for i in 0..16 {
        n.start_lookup(Time(i), honest[0].fingerprint)
            .expect("lookup");
        for t in transmits(&mut n) {
            n.on_response(Time(i + 10), t.id, Ok(Response::Peers(honest.clone())));
        }
        transmits(&mut n);
    }
    let start = Time(1_000);
    n.start_lookup(start, id(0x83, 9)).expect("lookup");
    let sent = transmits(&mut n);
    assert_eq!(sent.len(), 3);
    // Table peers keep the full timeout...
    assert!(sent.iter().all(|t| t.timeout == n.config().rpc_timeout));
    // ...but the lookup stops waiting after the soft deadline (500 ms here).
    let soft = n.poll_timeout().expect("soft deadline");
    assert_eq!(soft, start + n.config().min_rpc_timeout);
    n.handle_timeout(soft);
    let ended = std::iter::from_fn(|| n.poll_output())
        .any(|o| matches!(o, Output::Event(Event::LookupFinished(ref l)) if l.found.is_none()));
    assert!(ended, "all three passed by: the lookup ends");
    // The late answers arrive: everyone is alive and stays.
    for t in &sent {
        let late = soft + std::time::Duration::from_secs(2);
        n.on_response(late, t.id, Ok(Response::Peers(vec![])));
    }
    for c in &honest {
        assert_eq!(n.table().get(&c.fingerprint).map(|e| e.failures), Some(0));
    }
}
