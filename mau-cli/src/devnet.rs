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

/// A devnet node's configuration; every other limit stays as deployed.
///
/// Every node connects from 127.0.0.1, which the server's per-source-IP
/// connection cap exempts by default (`Limits::per_ip_scope`), so the
/// devnet is not throttled as one host and needs no change there. All
/// nodes live in this process, which holds both ends of every connection:
/// two descriptors where a real node holds one. One idle pooled connection
/// per peer instead of two, and idle keep-alive connections closed after
/// 10 s instead of 60 s, keep 100 nodes within a 20,000-descriptor limit:
/// during the join every node talks to most others, and with 60 s the whole
/// mesh (~9,900 connections, ~19,800 descriptors) stayed open at once, so
/// some table saves failed with EMFILE.
fn node_config(port: u16) -> NodeConfig {
    let mut config = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
    config.limits.pool_per_peer = 1;
    config.limits.idle_timeout = Duration::from_secs(10);
    config
}

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
        let mut config = node_config(0);
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
        crate::output::outln!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        );
    } else {
        crate::output::outln!(
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
        crate::output::outln!();
        crate::output::outln!(
            "lookups: {found}/{lookups} found their target; hops median {} max {}; requests median {}; latency p50 {p50:.1} ms, p99 {p99:.1} ms",
            median(&hops),
            hops.last().copied().unwrap_or(0),
            median(&requests),
        );
        crate::output::outln!();
        let t = nodes[0].snapshot();
        crate::output::outln!("routing table of node 0 ({}):", t.fingerprint);
        table::print_peers(&t.peers);
    }
    for node in &mut nodes {
        node.shutdown().await;
    }
    if found < lookups {
        return Err(format!("{} of {lookups} lookups failed", lookups - found));
    }
    Ok(())
}

/// What `--soak-seconds` asks for: keep the devnet running, churn nodes and
/// look up continuously, watch for leaks and panics.
#[derive(Clone, Debug)]
pub struct SoakArgs {
    /// How long the soak runs (after the initial join).
    pub seconds: u64,
    /// Fraction of the nodes stopped and restarted once each during the run.
    pub churn: f64,
    /// Lookups started per second.
    pub lookup_rate: f64,
    /// Seconds between resource samples.
    pub sample_seconds: u64,
}

/// Runs the soak (see [`SoakArgs`]); an error when it failed its checks.
pub fn soak<E: Exec>(nodes: u32, seed: u64, json: bool, args: SoakArgs) -> Result<(), String> {
    if !(2..=500).contains(&nodes) {
        return Err("--nodes must be between 2 and 500".into());
    }
    if !(0.0..=1.0).contains(&args.churn) {
        return Err("--churn must be between 0 and 1".into());
    }
    if !(args.lookup_rate > 0.0 && args.lookup_rate <= 1000.0) {
        return Err("--lookup-rate must be in (0, 1000]".into());
    }
    if args.sample_seconds == 0 {
        return Err("--sample-seconds must be at least 1".into());
    }
    install_panic_counter();
    E::run(|rt| soak::run(rt, nodes, seed, json, args))
}

/// Panics seen anywhere in the process since [`install_panic_counter`].
static PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts every panic, then reports it as before. A panic hook runs at the
/// panic site, before any unwinding, so it also sees panics inside spawned
/// tasks that the executor catches (smol and tokio both catch them and keep
/// running, so without this they would go unnoticed).
fn install_panic_counter() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            previous(info);
        }));
    });
}

fn panics() -> u64 {
    PANICS.load(std::sync::atomic::Ordering::SeqCst)
}

mod soak {
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use mau_proto::{Fingerprint, PeerAddress};

    use super::*;

    /// One node's place in the soak: what it needs to restart as itself.
    struct Slot<R: Runtime> {
        key: [u8; 32],
        seed: u64,
        table_file: PathBuf,
        port: u16,
        /// `None` while stopped. Lookups hold a clone while they run.
        node: Option<Arc<RunningNode<R>>>,
        /// Taken out of service, shut down once no lookup holds it.
        stopping: Option<Arc<RunningNode<R>>>,
        /// Bumped when the node is taken out of service and when it comes
        /// back: a lookup whose target's epoch moved while it ran is not judged.
        epoch: Arc<AtomicU64>,
        restart_at: Option<Instant>,
    }

    /// A stop (and the restart after `down`) planned at `at`.
    struct Churn {
        at: Duration,
        slot: usize,
    }

    struct Done {
        target_stayed_up: bool,
        found: bool,
        hops: u32,
        micros: u64,
        error: bool,
    }

    #[derive(Clone, Copy)]
    struct Sample {
        secs: u64,
        fds: u64,
        rss_kb: u64,
        table_entries: u64,
        live: u64,
    }

    fn identity(
        key: [u8; 32],
    ) -> impl FnOnce(Option<&str>) -> Result<mau_identity::TlsIdentity, mau_identity::IdentityError>
    {
        move |addr| TlsIdentity::from_ed25519_seed(&key, 1_700_000_000, KeyVersion::V4, addr)
    }

    async fn start<R: Runtime>(
        rt: &R,
        slot: &Slot<R>,
        port: u16,
        bootstrap: Vec<mau_proto::Contact<PeerAddress>>,
    ) -> Result<RunningNode<R>, mau_net::NetError> {
        let mut config = node_config(port);
        config.seed = Some(slot.seed);
        config.bootstrap = bootstrap;
        config.table_file = Some(slot.table_file.clone());
        RunningNode::start(rt.clone(), config, identity(slot.key)).await
    }

    /// Restarts a stopped node on its old port (as a restarted server would),
    /// retrying while the old listener is still closing; on a new port if the
    /// old one stays taken (e.g. reused by an outgoing connection meanwhile).
    async fn restart<R: Runtime>(
        rt: &R,
        slot: &Slot<R>,
    ) -> Result<(RunningNode<R>, bool), mau_net::NetError> {
        for _ in 0..20 {
            match start(rt, slot, slot.port, Vec::new()).await {
                Ok(n) => return Ok((n, false)),
                Err(mau_net::NetError::Io(..)) => rt.sleep(Duration::from_millis(250)).await,
                Err(e) => return Err(e),
            }
        }
        Ok((start(rt, slot, 0, Vec::new()).await?, true))
    }

    /// Open file descriptors of this process (0 where /proc is missing).
    fn open_fds() -> u64 {
        std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0)
    }

    /// Resident set size in KiB (0 where /proc is missing).
    fn rss_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// The soft limit on open file descriptors (0 where /proc is missing).
    fn fd_limit() -> u64 {
        std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn median(v: &[u64]) -> u64 {
        let mut v = v.to_vec();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    }

    fn pct(sorted: &[u64], p: usize) -> u64 {
        sorted
            .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    }

    /// The growth rule for one resource.
    ///
    /// Samples are split in thirds. The first third is warm-up (tables fill,
    /// connection pools and the allocator reach their working size) and is
    /// ignored; the median of the last third is compared with the median of
    /// the second. Medians, so one burst (say, reconnections right after a
    /// restart) does not decide. A leak grows with time, so it shows as the
    /// last third sitting above the second by more than the tolerance:
    /// `last > second * (1 + rel) + abs`. Fewer than 6 samples: no verdict.
    pub(super) fn growth(values: &[u64], rel: f64, abs: u64) -> Option<(u64, u64, u64, bool)> {
        if values.len() < 6 {
            return None;
        }
        let n = values.len();
        let second = median(&values[n / 3..2 * n / 3]);
        let last = median(&values[2 * n / 3..]);
        let limit = (second as f64 * (1.0 + rel)) as u64 + abs;
        Some((second, last, limit, last > limit))
    }

    fn sample<R: Runtime>(slots: &[Slot<R>], since: Instant) -> Sample {
        let live: Vec<_> = slots.iter().filter_map(|s| s.node.as_ref()).collect();
        Sample {
            secs: since.elapsed().as_secs(),
            fds: open_fds(),
            rss_kb: rss_kb(),
            table_entries: live.iter().map(|n| n.snapshot().peers.len() as u64).sum(),
            live: live.len() as u64,
        }
    }

    pub(super) async fn run<R: Runtime>(
        rt: R,
        n: u32,
        seed: u64,
        json: bool,
        args: SoakArgs,
    ) -> Result<(), String> {
        let mut rng = Rng::new(seed);
        let dir = std::env::temp_dir().join(format!("mau-soak-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let result = soak(&rt, &mut rng, n, json, &args, &dir).await;
        let _ = std::fs::remove_dir_all(&dir);
        result
    }

    async fn soak<R: Runtime>(
        rt: &R,
        rng: &mut Rng,
        n: u32,
        json: bool,
        args: &SoakArgs,
        dir: &std::path::Path,
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut slots: Vec<Slot<R>> = Vec::new();
        for i in 0..n as usize {
            let mut slot = Slot {
                key: rng.bytes32(),
                seed: rng.next_u64(),
                table_file: dir.join(format!("node{i}.json")),
                port: 0,
                node: None,
                stopping: None,
                epoch: Arc::new(AtomicU64::new(0)),
                restart_at: None,
            };
            let bootstrap = slots
                .first()
                .and_then(|s| s.node.as_ref())
                .map(|b| vec![b.contact()])
                .unwrap_or_default();
            let node = start(rt, &slot, 0, bootstrap)
                .await
                .map_err(|e| format!("node {i}: {e}"))?;
            slot.port = node.local_addr().port();
            slot.node = Some(Arc::new(node));
            slots.push(slot);
        }
        let join_deadline = Instant::now() + Duration::from_secs(120);
        while slots.iter().flat_map(|s| &s.node).any(|n| n.is_joining()) {
            if Instant::now() > join_deadline {
                return Err("nodes did not finish joining within 120 s".into());
            }
            rt.sleep(Duration::from_millis(20)).await;
        }
        let joined = started.elapsed();

        // The churn plan: distinct nodes, stops spread evenly so that every
        // restart happens before the end (bounded: one stop per chosen node).
        let total = Duration::from_secs(args.seconds);
        let events = ((f64::from(n) * args.churn).round() as usize).min(n as usize);
        let down = if events == 0 {
            Duration::ZERO
        } else {
            (total / events as u32).clamp(Duration::from_secs(2), Duration::from_secs(10))
        };
        let mut order: Vec<usize> = (0..n as usize).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let span = total.mul_f64(0.9).saturating_sub(down);
        let mut plan: std::collections::VecDeque<Churn> = order[..events]
            .iter()
            .enumerate()
            .map(|(j, &slot)| Churn {
                at: total.mul_f64(0.05) + span.mul_f64((j as f64 + 0.5) / events as f64),
                slot,
            })
            .collect();

        let (done_tx, done_rx) = async_channel::unbounded::<Done>();
        let soak_start = Instant::now();
        let deadline = soak_start + total;
        let interval = Duration::from_secs_f64(1.0 / args.lookup_rate);
        let sample_every = Duration::from_secs(args.sample_seconds);
        let mut next_lookup = soak_start;
        let mut next_sample = soak_start;
        let mut samples = vec![];
        let (mut stops, mut restarts, mut moved) = (0u32, 0u32, 0u32);
        let mut issued = 0u64;
        let mut results: Vec<Done> = Vec::new();
        let panics_before = panics();

        loop {
            let now = Instant::now();
            while let Ok(d) = done_rx.try_recv() {
                results.push(d);
            }
            if now >= next_sample {
                samples.push(sample(&slots, soak_start));
                next_sample += sample_every;
            }
            // Stops due now: out of service at once, shut down when no
            // lookup holds the node any more (below).
            while plan.front().is_some_and(|c| soak_start + c.at <= now) {
                let Some(c) = plan.pop_front() else { break };
                let slot = &mut slots[c.slot];
                if let Some(node) = slot.node.take() {
                    slot.epoch.fetch_add(1, Ordering::SeqCst);
                    slot.stopping = Some(node);
                    slot.restart_at = Some(now + down);
                    stops += 1;
                }
            }
            for slot in slots.iter_mut() {
                if let Some(node) = slot.stopping.take() {
                    match Arc::try_unwrap(node) {
                        Ok(mut node) => node.shutdown().await,
                        Err(node) => slot.stopping = Some(node),
                    }
                }
                if slot.stopping.is_none() && slot.restart_at.is_some_and(|t| t <= now) {
                    let (node, new_port) = restart(rt, slot)
                        .await
                        .map_err(|e| format!("restart: {e}"))?;
                    moved += u32::from(new_port);
                    slot.port = node.local_addr().port();
                    slot.node = Some(Arc::new(node));
                    slot.restart_at = None;
                    slot.epoch.fetch_add(1, Ordering::SeqCst);
                    restarts += 1;
                }
            }
            if now >= deadline {
                break;
            }
            // After a stall (a slow restart), resume the rate rather than
            // firing every missed lookup at once.
            if next_lookup + Duration::from_secs(1) < now {
                next_lookup = now;
            }
            while next_lookup <= now {
                next_lookup += interval;
                let live: Vec<usize> = (0..slots.len())
                    .filter(|&i| slots[i].node.is_some())
                    .collect();
                if live.len() < 2 {
                    continue;
                }
                let a = live[rng.below(live.len() as u64) as usize];
                let mut b = live[rng.below(live.len() as u64 - 1) as usize];
                if b == a {
                    b = live[live.len() - 1];
                }
                let (Some(source), Some(target)) = (&slots[a].node, &slots[b].node) else {
                    continue;
                };
                let source = source.clone();
                let want: (Fingerprint, PeerAddress) =
                    (target.fingerprint(), target.advertised().clone());
                let epoch = slots[b].epoch.clone();
                let epoch0 = epoch.load(Ordering::SeqCst);
                let tx = done_tx.clone();
                let rt2 = rt.clone();
                issued += 1;
                rt.spawn(async move {
                    let t = Instant::now();
                    // The core bounds every RPC; this only guards the soak itself.
                    let r = mau_net::runtime::timeout(
                        &rt2,
                        Duration::from_secs(60),
                        source.lookup(want.0),
                    )
                    .await;
                    let micros = t.elapsed().as_micros() as u64;
                    drop(source);
                    let (found, hops, error) = match r {
                        Ok(Ok(o)) => (
                            o.found.as_ref().is_some_and(|c| c.address == want.1),
                            o.hops,
                            false,
                        ),
                        _ => (false, 0, true),
                    };
                    let _ = tx.try_send(Done {
                        target_stayed_up: epoch.load(Ordering::SeqCst) == epoch0,
                        found,
                        hops,
                        micros,
                        error,
                    });
                });
            }
            let wake = [next_lookup, next_sample, deadline]
                .into_iter()
                .chain(plan.front().map(|c| soak_start + c.at))
                .min()
                .unwrap_or(deadline);
            let nap = wake
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            rt.sleep(nap).await;
        }
        // Let the lookups in flight finish (bounded), then a last sample.
        let drain_until = Instant::now() + Duration::from_secs(70);
        while (results.len() as u64) < issued && Instant::now() < drain_until {
            let next = mau_net::runtime::timeout(rt, Duration::from_millis(200), done_rx.recv());
            if let Ok(Ok(d)) = next.await {
                results.push(d);
            }
        }
        if samples
            .last()
            .is_none_or(|s| s.secs + 1 < soak_start.elapsed().as_secs())
        {
            samples.push(sample(&slots, soak_start));
        }
        let soak_time = soak_start.elapsed();
        let lost = issued - results.len() as u64;
        for slot in &mut slots {
            slot.stopping = None;
            slot.node = None; // the last clone: shuts the node down
        }

        let judged: Vec<&Done> = results.iter().filter(|d| d.target_stayed_up).collect();
        let excluded = results.len() - judged.len();
        let succeeded = judged.iter().filter(|d| d.found).count() as u64;
        // A lookup that never reported (lost) counts as a failure.
        let counted = judged.len() as u64 + lost;
        let success = if counted == 0 {
            0.0
        } else {
            succeeded as f64 / counted as f64
        };
        let errors = results.iter().filter(|d| d.error).count();
        let mut hops: Vec<u64> = judged
            .iter()
            .filter(|d| d.found)
            .map(|d| u64::from(d.hops))
            .collect();
        hops.sort_unstable();
        let mut lat: Vec<u64> = judged.iter().map(|d| d.micros).collect();
        lat.sort_unstable();
        let ms = |us: u64| us as f64 / 1000.0;
        let (p50, p99) = (ms(pct(&lat, 50)), ms(pct(&lat, 99)));
        let panicked = panics() - panics_before;
        // 0 is a reading that failed (no /proc, or no descriptor left to
        // read it with): not a level.
        let fds: Vec<u64> = samples.iter().map(|s| s.fds).filter(|&v| v > 0).collect();
        let rss: Vec<u64> = samples
            .iter()
            .map(|s| s.rss_kb)
            .filter(|&v| v > 0)
            .collect();
        let fd_growth = growth(&fds, 0.10, 20);
        let rss_growth = growth(&rss, 0.20, 0);

        let mut failures = Vec::new();
        if success < 0.99 {
            failures.push(format!(
                "success {:.2}% < 99% ({succeeded} of {counted})",
                success * 100.0
            ));
        }
        if panicked > 0 {
            failures.push(format!("{panicked} panics"));
        }
        if let Some((second, last, limit, true)) = fd_growth {
            failures.push(format!(
                "open fds grew: median {second} -> {last} (limit {limit})"
            ));
        }
        if let Some((second, last, limit, true)) = rss_growth {
            failures.push(format!(
                "RSS grew: median {second} -> {last} KiB (limit {limit})"
            ));
        }
        let verdict = |g: Option<(u64, u64, u64, bool)>| match g {
            Some((second, last, limit, grew)) => {
                json!({"second_third_median": second, "last_third_median": last, "limit": limit, "grew": grew})
            }
            None => json!(null),
        };

        if json {
            let report = json!({
                "nodes": n,
                "join_ms": joined.as_millis() as u64,
                "soak_seconds": soak_time.as_secs_f64(),
                "churn": {"fraction": args.churn, "stops": stops, "restarts": restarts,
                          "restarted_on_new_port": moved, "down_seconds": down.as_secs_f64()},
                "lookups": {"issued": issued, "judged": counted, "excluded_target_down": excluded,
                            "succeeded": succeeded, "lost": lost, "errors": errors,
                            "success_rate": success},
                "hops": {"median": pct(&hops, 50), "p99": pct(&hops, 99),
                         "max": hops.last().copied().unwrap_or(0)},
                "latency_ms": {"p50": p50, "p99": p99},
                "panics": panicked,
                "fd_limit": fd_limit(),
                "samples": samples.iter().map(|s| json!({
                    "t": s.secs, "fds": s.fds, "rss_kb": s.rss_kb,
                    "table_entries": s.table_entries, "live_nodes": s.live,
                })).collect::<Vec<_>>(),
                "growth": {"fds": verdict(fd_growth), "rss_kb": verdict(rss_growth)},
                "ok": failures.is_empty(),
                "failures": failures,
            });
            crate::output::outln!(
                "{}",
                serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
            );
        } else {
            crate::output::outln!(
                "soak: {n} nodes on 127.0.0.1 joined in {:.1} s; ran {:.0} s",
                joined.as_secs_f64(),
                soak_time.as_secs_f64()
            );
            crate::output::outln!(
                "churn: {stops} stops, {restarts} restarts ({moved} on a new port), {:.0} s down each",
                down.as_secs_f64()
            );
            crate::output::outln!(
                "lookups: {issued} issued, {counted} judged ({excluded} excluded: target went down), {succeeded} succeeded = {:.2}%, {lost} lost, {errors} errors",
                success * 100.0
            );
            crate::output::outln!(
                "hops: median {} p99 {} max {}; latency p50 {p50:.1} ms, p99 {p99:.1} ms; panics {panicked}",
                pct(&hops, 50),
                pct(&hops, 99),
                hops.last().copied().unwrap_or(0)
            );
            crate::output::outln!("samples (open fd limit {}):", fd_limit());
            let rows: Vec<Vec<String>> = samples
                .iter()
                .map(|s| {
                    vec![
                        s.secs.to_string(),
                        s.live.to_string(),
                        s.fds.to_string(),
                        format!("{:.1}", s.rss_kb as f64 / 1024.0),
                        s.table_entries.to_string(),
                    ]
                })
                .collect();
            table::print(&["T(S)", "LIVE", "FDS", "RSS(MIB)", "TABLE ENTRIES"], &rows);
            for (name, g) in [("fds", fd_growth), ("rss KiB", rss_growth)] {
                match g {
                    Some((second, last, limit, grew)) => crate::output::outln!(
                        "growth {name}: median second third {second}, last third {last}, limit {limit}: {}",
                        if grew { "GREW" } else { "ok" }
                    ),
                    None => crate::output::outln!("growth {name}: too few samples to judge"),
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(format!("soak failed: {}", failures.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_rule() {
        let flat = [100, 140, 101, 99, 102, 100, 98, 103, 101];
        assert_eq!(soak::growth(&flat, 0.10, 20).map(|g| g.3), Some(false));
        let leak: Vec<u64> = (0..12).map(|i| 100 + 30 * i).collect();
        assert_eq!(soak::growth(&leak, 0.10, 20).map(|g| g.3), Some(true));
        assert_eq!(soak::growth(&[1, 2, 3], 0.1, 0), None);
    }

    /// A panic inside a spawned task neither kills the process nor goes
    /// unnoticed: the runtime catches it, the hook counts it.
    #[test]
    fn task_panics_are_caught_and_counted() {
        install_panic_counter();
        fn check<E: Exec>() {
            let before = panics();
            let alive = E::run(|rt| async move {
                rt.spawn(async { panic!("deliberate test panic in a task") });
                rt.sleep(Duration::from_millis(200)).await;
                let (tx, rx) = async_channel::bounded(1);
                rt.spawn(async move {
                    let _ = tx.send(()).await;
                });
                rx.recv().await.is_ok()
            });
            assert!(alive, "the runtime still runs tasks after a panic");
            assert!(panics() > before, "the panic was counted");
        }
        check::<crate::runtime::SmolExec>();
        check::<crate::runtime::TokioExec>();
    }
}
