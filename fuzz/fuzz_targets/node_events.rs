//! A `Node<u32>` driven by an arbitrary event sequence: inbound requests
//! (from the claimed address or another IP, also from a known peer at a
//! new address), answers (also
//! naming known peers at other addresses), failures, duplicates and unknown
//! ids, time passing, lookups, joins, probes, additions and removals. Addresses
//! are IPv4 (`u32`): the old per-peer `0.0.0.i` (exempt from the Sybil
//! limits) or chosen from a few public /24s and a private one, under
//! arbitrary subnet limits. Asserted after every step: no panic,
//! `check_invariants()`, no bucket or table over its subnet limits (counted
//! here from the entries), every transmit to a non-local peer, find-peer
//! answers at most K peers and never the local node.
#![no_main]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mau_proto::{
    BucketIndex, Caller, Config, Contact, Fingerprint, LimitScope, Node, Output, Request, RequestId,
    Response, RpcFailure, SubnetLimits, Time, Transmit,
};

/// How one peer id is built.
#[derive(Arbitrary, Debug)]
enum Id {
    V4([u8; 20]),
    V6([u8; 32]),
    /// An id sharing `cpl` leading bits with the local id (deep buckets).
    Near {
        cpl: u8,
        noise: [u8; 4],
    },
    /// The zero-padded v6 twin of an earlier v4 id (one key, two fingerprints).
    Twin(u8),
}

/// Where a peer is (its IPv4 address as a `u32`).
#[derive(Arbitrary, Clone, Copy, Debug)]
enum Net {
    /// `0.0.0.i` for peer `i`: one address per peer, never limited ("this network").
    Index,
    /// `1.2.3.h`: one public /24 for everybody.
    Shared(u8),
    /// `1.2.(4 + s % 4).h`: a few public /24s.
    Public(u8, u8),
    /// `10.0.0.h`: private (limited only with `LimitScope::All`).
    Private(u8),
}

impl Net {
    fn address(self, i: usize) -> u32 {
        match self {
            Net::Index => i as u32,
            Net::Shared(h) => u32::from(Ipv4Addr::new(1, 2, 3, h)),
            Net::Public(s, h) => u32::from(Ipv4Addr::new(1, 2, 4 + s % 4, h)),
            Net::Private(h) => u32::from(Ipv4Addr::new(10, 0, 0, h)),
        }
    }
}

/// Sybil limits: `None` in the input keeps the default (public only, 2/10).
#[derive(Arbitrary, Debug)]
struct Limits {
    off: bool,
    per_bucket: u8,
    per_table: u8,
    all: bool,
}

#[derive(Arbitrary, Debug)]
enum Resp {
    Peers(Vec<u8>),
    /// Peers named at an address of the answerer's choosing (hearsay).
    PeersAt(Vec<(u8, Net)>),
    Pong,
    Timeout,
    Unreachable,
    Bad,
}

#[derive(Arbitrary, Debug)]
enum Ev {
    /// A request from a peer at its address, calling from there (or, if
    /// `unverified`, from an IP we cannot tell).
    Request {
        from: u8,
        find: Option<u8>,
        unverified: bool,
    },
    /// A request from a peer claiming another address (a move).
    RequestAt {
        from: u8,
        net: Net,
        find: Option<u8>,
    },
    Respond {
        pick: u8,
        resp: Resp,
        duplicate: bool,
    },
    Unknown {
        id: u64,
        resp: Resp,
    },
    Advance(u32),
    ToDeadline,
    StartLookup(u8),
    Join(Vec<u8>),
    Probe(u8),
    AddPeer(u8),
    RemovePeer(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    local: Id,
    k: u8,
    alpha: u8,
    cache: u8,
    max_failures: u8,
    lookups: u8,
    rpc_ms: u16,
    stall_s: u16,
    backoff_s: u8,
    seed: u64,
    limits: Option<Limits>,
    nets: Vec<Net>,
    ids: Vec<Id>,
    events: Vec<Ev>,
}

fn build(id: &Id, local: Option<&Fingerprint>, earlier: &[Fingerprint]) -> Fingerprint {
    match id {
        Id::V4(b) => Fingerprint::V4(*b),
        Id::V6(b) => Fingerprint::V6(*b),
        Id::Near { cpl, noise } => {
            let Some(local) = local else {
                return Fingerprint::V4([cpl.wrapping_add(1); 20]);
            };
            let bits = local.as_bytes().len() * 8;
            let cpl = *cpl as usize % bits;
            let mut random = [0u8; 32];
            random[28..].copy_from_slice(noise);
            let d = BucketIndex::from_common_prefix_len(cpl)
                .expect("cpl < 256")
                .random_distance(random);
            let key = local.key().offset(&d);
            Fingerprint::from_bytes(&key.as_bytes()[..local.as_bytes().len()])
                .expect("20 or 32 bytes")
        }
        Id::Twin(i) => {
            let v4: Vec<&Fingerprint> = earlier.iter().filter(|f| f.version() == 4).collect();
            match v4.get(*i as usize % v4.len().max(1)) {
                Some(f) => {
                    let mut b = [0u8; 32];
                    b[..20].copy_from_slice(f.as_bytes());
                    Fingerprint::V6(b)
                }
                None => Fingerprint::V6([*i; 32]),
            }
        }
    }
}

fn response(universe: &[Contact<u32>], r: &Resp) -> Result<Response<u32>, RpcFailure> {
    match r {
        Resp::Peers(v) => Ok(Response::Peers(
            v.iter()
                .take(64)
                .map(|i| universe[*i as usize % universe.len()].clone())
                .collect(),
        )),
        Resp::PeersAt(v) => Ok(Response::Peers(
            v.iter()
                .take(64)
                .map(|(i, net)| {
                    let i = *i as usize % universe.len();
                    Contact::new(universe[i].fingerprint, net.address(i))
                })
                .collect(),
        )),
        Resp::Pong => Ok(Response::Pong),
        Resp::Timeout => Err(RpcFailure::Timeout),
        Resp::Unreachable => Err(RpcFailure::Unreachable),
        Resp::Bad => Err(RpcFailure::BadResponse),
    }
}

fuzz_target!(|input: Input| {
    let local = build(&input.local, None, &[]);
    let config = Config {
        k: 1 + input.k as usize % 20,
        alpha: 1 + input.alpha as usize % 4,
        stall_period: Duration::from_secs(1 + input.stall_s as u64),
        ping_min_backoff: Duration::from_secs(input.backoff_s as u64 % 61),
        rpc_timeout: Duration::from_millis(1 + input.rpc_ms as u64),
        replacement_cache: input.cache as usize % 9,
        max_failures: 1 + input.max_failures % 3,
        max_lookup_candidates: 80,
        max_concurrent_lookups: 1 + input.lookups as usize % 16,
        rejoin_interval: Duration::from_millis(1 + input.rpc_ms as u64 * 3),
        subnet_limits: match &input.limits {
            None => Config::default().subnet_limits,
            Some(l) if l.off => None,
            Some(l) => Some(SubnetLimits {
                per_bucket: 1 + l.per_bucket as usize % 3,
                per_table: 1 + l.per_table as usize % 12,
                scope: if l.all {
                    LimitScope::All
                } else {
                    LimitScope::PublicOnly
                },
            }),
        },
        ..Config::default()
    };
    let k = config.k;
    let mut fps: Vec<Fingerprint> = Vec::new();
    for id in input.ids.iter().take(64) {
        let fp = build(id, Some(&local), &fps);
        fps.push(fp);
    }
    fps.push(local);
    let universe: Vec<Contact<u32>> = fps
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let net = input.nets.get(i).copied().unwrap_or(Net::Index);
            Contact::new(*f, net.address(i))
        })
        .collect();
    let n = universe.len();

    let mut now = Time(0);
    let mut node: Node<u32> = Node::new(local, config, input.seed);
    let mut outstanding: Vec<Transmit<u32>> = Vec::new();
    for ev in input.events.iter().take(2_000) {
        now = now + Duration::from_millis(10);
        match ev {
            Ev::Request {
                from,
                find,
                unverified,
            } => {
                let from = universe[*from as usize % n].clone();
                let request = match find {
                    Some(t) => Request::FindPeer(fps[*t as usize % n]),
                    None => Request::Ping,
                };
                // Calling from the claimed address (a probe calls it back)
                // or from an unknown IP.
                let mut caller = Caller::at(from.fingerprint, from.address);
                if *unverified {
                    caller.source = None;
                }
                let answer = node.on_request(now, caller, &request);
                if let Response::Peers(p) = answer {
                    assert!(p.len() <= k);
                    assert!(p.iter().all(|c| c.fingerprint != local));
                }
            }
            Ev::RequestAt { from, net, find } => {
                let i = *from as usize % n;
                let from = Caller::at(fps[i], net.address(i));
                let request = match find {
                    Some(t) => Request::FindPeer(fps[*t as usize % n]),
                    None => Request::Ping,
                };
                if let Response::Peers(p) = node.on_request(now, from, &request) {
                    assert!(p.len() <= k);
                    assert!(p.iter().all(|c| c.fingerprint != local));
                }
            }
            Ev::Respond {
                pick,
                resp,
                duplicate,
            } => {
                if !outstanding.is_empty() {
                    let i = *pick as usize % outstanding.len();
                    let t = if *duplicate {
                        outstanding[i].clone()
                    } else {
                        outstanding.swap_remove(i)
                    };
                    node.on_response(now, t.id, response(&universe, resp));
                }
            }
            Ev::Unknown { id, resp } => {
                node.on_response(now, RequestId(*id), response(&universe, resp));
            }
            Ev::Advance(ms) => {
                now = now + Duration::from_millis(*ms as u64);
                node.handle_timeout(now);
            }
            Ev::ToDeadline => {
                if let Some(t) = node.poll_timeout() {
                    now = now.max(t);
                }
                node.handle_timeout(now);
            }
            Ev::StartLookup(t) => {
                let _ = node.start_lookup(now, fps[*t as usize % n]);
            }
            Ev::Join(boot) => {
                let boot: Vec<Contact<u32>> = boot
                    .iter()
                    .take(32)
                    .map(|i| universe[*i as usize % n].clone())
                    .collect();
                let _ = node.join(now, boot);
            }
            Ev::Probe(i) => node.probe(now, universe[*i as usize % n].clone()),
            Ev::AddPeer(i) => node.add_peer(now, universe[*i as usize % n].clone()),
            Ev::RemovePeer(i) => {
                let fp = fps[*i as usize % n];
                node.remove_peer(&fp);
                assert!(!node.table().contains(&fp));
            }
        }
        while let Some(o) = node.poll_output() {
            if let Output::Transmit(t) = o {
                assert_ne!(t.to.fingerprint, local, "transmit to ourselves");
                outstanding.push(t);
            }
        }
        if let Err(e) = node.check_invariants() {
            panic!("invariant broken after {ev:?}: {e}");
        }
        check_subnet_limits(&node, ev);
        assert!(node.lookups_in_progress() <= node.config().max_concurrent_lookups);
    }
});

/// The Sybil limits, counted from the entries (not from the table's own counts).
fn check_subnet_limits(node: &Node<u32>, ev: &Ev) {
    let Some(l) = node.config().subnet_limits else {
        return;
    };
    let mut table = BTreeMap::new();
    for (i, b) in node.table().buckets() {
        let mut bucket = BTreeMap::new();
        for e in b.entries() {
            if let Some(s) = l.subnet_of(&e.address) {
                *bucket.entry(s).or_insert(0usize) += 1;
                *table.entry(s).or_insert(0usize) += 1;
            }
        }
        if let Some((s, n)) = bucket.iter().find(|(_, n)| **n > l.per_bucket) {
            panic!("bucket {i:?} holds {n} peers of {s:?} after {ev:?}");
        }
    }
    if let Some((s, n)) = table.iter().find(|(_, n)| **n > l.per_table) {
        panic!("the table holds {n} peers of {s:?} after {ev:?}");
    }
}
