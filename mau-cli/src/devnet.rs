//! `mau devnet`: a network of real nodes on 127.0.0.1, in one process.
//!
//! Every node is a full peer (mutual TLS, HTTP, the Kademlia core); only the
//! identities are made on the fly from seeded Ed25519 keys (no OpenPGP
//! account needed). Discovery is off: nothing leaves loopback.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mau_identity::{KeyVersion, TlsIdentity};
use mau_net::runtime::Runtime;
use mau_net::{NodeConfig, RunningNode};
use mau_proto::Rng;
use serde_json::json;

use crate::runtime::Exec;
use crate::table;

pub fn run<E: Exec>(nodes: u32, lookups: u32, seed: u64, json: bool) -> Result<(), String> {
    if !(2..=500).contains(&nodes) {
        return Err("--nodes must be between 2 and 500".into());
    }
    E::run(|rt| devnet(rt, nodes, lookups, seed, json))
}

async fn devnet<R: Runtime>(
    rt: R,
    n: u32,
    lookups: u32,
    seed: u64,
    json: bool,
) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let mut nodes: Vec<RunningNode<R>> = Vec::new();
    for i in 0..n {
        let key = rng.bytes32();
        let mut config = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.seed = Some(rng.next_u64());
        config.bootstrap = nodes.first().map(|b| vec![b.contact()]).unwrap_or_default();
        let identity = move |addr: Option<&str>| {
            TlsIdentity::from_ed25519_seed(&key, 1_700_000_000, KeyVersion::V4, addr)
        };
        let node = RunningNode::start(rt.clone(), config, identity)
            .await
            .map_err(|e| format!("node {i}: {e}"))?;
        nodes.push(node);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while nodes.iter().any(|n| n.is_joining()) {
        if Instant::now() > deadline {
            return Err("nodes did not finish joining within 120 s".into());
        }
        rt.sleep(Duration::from_millis(20)).await;
    }
    let joined = started.elapsed();

    let mut found = 0u32;
    let mut hops = Vec::new();
    let mut requests = Vec::new();
    let mut latencies = Vec::new();
    let lookup_start = Instant::now();
    for _ in 0..lookups {
        let a = rng.below(u64::from(n)) as usize;
        let mut b = rng.below(u64::from(n - 1)) as usize;
        if b >= a {
            b += 1;
        }
        let t = Instant::now();
        let o = nodes[a]
            .lookup(nodes[b].fingerprint())
            .await
            .map_err(|e| e.to_string())?;
        latencies.push(t.elapsed().as_micros() as u64);
        if o.found
            .as_ref()
            .is_some_and(|c| c.address == *nodes[b].advertised())
        {
            found += 1;
            hops.push(o.hops);
        }
        requests.push(o.requests);
    }
    let lookup_time = lookup_start.elapsed();
    hops.sort_unstable();
    requests.sort_unstable();
    latencies.sort_unstable();
    let pct = |v: &[u64], p: usize| {
        v.get((v.len() * p / 100).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let (p50, p99) = (pct(&latencies, 50), pct(&latencies, 99));
    let median = |v: &[u32]| v.get(v.len() / 2).copied().unwrap_or(0);
    let sizes: Vec<usize> = nodes.iter().map(|n| n.snapshot().peers.len()).collect();

    if json {
        let report = json!({
            "nodes": n,
            "join_ms": joined.as_millis() as u64,
            "lookups": lookups,
            "found": found,
            "hops_median": median(&hops),
            "hops_max": hops.last().copied().unwrap_or(0),
            "requests_median": median(&requests),
            "lookup_ms_total": lookup_time.as_millis() as u64,
            "lookup_ms_p50": p50,
            "lookup_ms_p99": p99,
            "table_sizes": sizes,
            "node0": nodes[0].snapshot(),
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        println!(
            "devnet: {n} nodes on 127.0.0.1 joined in {:.1} s (mutual TLS, discovery off)",
            joined.as_secs_f64()
        );
        let rows: Vec<Vec<String>> = nodes
            .iter()
            .zip(&sizes)
            .enumerate()
            .map(|(i, (node, size))| {
                vec![
                    i.to_string(),
                    node.fingerprint().to_string(),
                    node.advertised().to_string(),
                    size.to_string(),
                ]
            })
            .collect();
        table::print(&["NODE", "FINGERPRINT", "ADDRESS", "PEERS"], &rows);
        println!();
        println!(
            "lookups: {found}/{lookups} found their target; hops median {} max {}; requests median {}; latency p50 {p50:.1} ms, p99 {p99:.1} ms",
            median(&hops),
            hops.last().copied().unwrap_or(0),
            median(&requests),
        );
        println!();
        let t = nodes[0].snapshot();
        println!("routing table of node 0 ({}):", t.fingerprint);
        table::print_peers(&t.peers);
    }
    for node in &mut nodes {
        node.shutdown();
    }
    if found < lookups {
        return Err(format!("{} of {lookups} lookups failed", lookups - found));
    }
    Ok(())
}
