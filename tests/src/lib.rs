//! One conformance suite for every runtime adapter.
//!
//! Each scenario is an async function generic over [`Harness`]; the
//! [`conformance_suite!`] macro turns them into `#[test]`s for one adapter.
//! Everything runs on 127.0.0.1 with discovery off.

#![warn(missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use mau_identity::{IdentityError, KeyVersion, TlsIdentity};
use mau_net::runtime::Runtime;
use mau_net::{ClientError, NodeConfig, RunningNode};
use mau_proto::{Contact, Fingerprint, PeerAddress};

/// How a scenario gets a runtime and runs on it.
pub trait Harness: 'static {
    /// The adapter's runtime.
    type R: Runtime;
    /// A runtime handle.
    fn rt() -> Self::R;
    /// Runs a future to completion.
    fn block_on<F: Future>(f: F) -> F::Output;
}

/// A deterministic identity for test node `n` (no OpenPGP key generation:
/// fast, and the same `n` gives the same fingerprint across restarts).
pub fn identity(n: u32) -> impl FnOnce(Option<&str>) -> Result<TlsIdentity, IdentityError> {
    move |address| {
        let mut seed = [0x5au8; 32];
        seed[..4].copy_from_slice(&n.to_be_bytes());
        TlsIdentity::from_ed25519_seed(&seed, 1_700_000_000, KeyVersion::V4, address)
    }
}

/// The fingerprint test node `n` will have.
pub fn fingerprint(n: u32) -> Fingerprint {
    identity(n)(None)
        .map(|i| i.fingerprint())
        .unwrap_or_else(|e| panic!("identity {n}: {e}"))
}

/// A loopback node configuration with short timeouts, so dead peers are
/// noticed within a test's patience.
pub fn config(seed: u64) -> NodeConfig {
    let mut c = NodeConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    c.protocol.rpc_timeout = Duration::from_secs(3);
    c.limits.rpc_timeout = Duration::from_secs(2);
    c.limits.connect_timeout = Duration::from_secs(1);
    c.limits.handshake_timeout = Duration::from_secs(2);
    c.seed = Some(seed);
    c
}

/// Starts node `n`.
pub async fn start<R: Runtime>(
    rt: &R,
    n: u32,
    mut cfg: NodeConfig,
    bootstrap: Vec<Contact<PeerAddress>>,
) -> RunningNode<R> {
    cfg.bootstrap = bootstrap;
    RunningNode::start(rt.clone(), cfg, identity(n))
        .await
        .unwrap_or_else(|e| panic!("node {n} failed to start: {e}"))
}

/// Waits (bounded) until `cond` holds.
pub async fn eventually<R: Runtime>(
    rt: &R,
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for: {what}");
        rt.sleep(Duration::from_millis(20)).await;
    }
}

/// `n` nodes: node 0 first, every other node joins through it.
pub async fn network<R: Runtime>(rt: &R, n: u32) -> Vec<RunningNode<R>> {
    let first = start(rt, 0, config(0), vec![]).await;
    let boot = first.contact();
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(start(rt, i, config(u64::from(i)), vec![boot.clone()]).await);
    }
    eventually(rt, "all nodes joined", Duration::from_secs(60), || {
        nodes.iter().all(|n| !n.is_joining())
    })
    .await;
    nodes
}

/// `n` nodes on two runtimes, one network: node 0 on `a` first, then odd
/// nodes on `b` and even ones on `a`, alternately, each joining through node 0.
pub async fn mixed_network<A: Runtime, B: Runtime>(
    a: &A,
    b: &B,
    n: u32,
) -> (Vec<RunningNode<A>>, Vec<RunningNode<B>>) {
    let first = start(a, 0, config(0), vec![]).await;
    let boot = vec![first.contact()];
    let (mut on_a, mut on_b) = (vec![first], Vec::new());
    for i in 1..n {
        let cfg = config(u64::from(i));
        match i % 2 {
            0 => on_a.push(start(a, i, cfg, boot.clone()).await),
            _ => on_b.push(start(b, i, cfg, boot.clone()).await),
        }
    }
    eventually(a, "all nodes joined", Duration::from_secs(60), || {
        on_a.iter().all(|n| !n.is_joining()) && on_b.iter().all(|n| !n.is_joining())
    })
    .await;
    (on_a, on_b)
}

/// Runs `futs` concurrently on the current task; their outputs, in order.
pub async fn join_all<F: Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    futures_lite::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futs.iter_mut().zip(outs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}

/// `Runtime::run_blocking` starts its work at once, on another thread: a
/// caller may start a blocking consumer, feed it, and only then await it
/// (the sync's streaming verifier does). A lazy adapter deadlocks here.
pub async fn blocking_work_starts_before_it_is_awaited<R: Runtime>(rt: R) {
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let (back_tx, back_rx) = std::sync::mpsc::channel::<u32>();
    let consumer = rt.run_blocking(move || {
        let n = rx.recv_timeout(Duration::from_secs(10)).unwrap_or(0);
        let _ = back_tx.send(n + 1);
        n
    });
    tx.send(41).expect("consumer alive");
    // Not awaited yet: the answer must come all the same.
    let answer = back_rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        answer,
        Ok(42),
        "run_blocking did not start before being awaited"
    );
    assert_eq!(consumer.await, Some(41));
    let panicked = rt.run_blocking(|| -> u32 { panic!("a blocking task panics") });
    assert_eq!(panicked.await, None);
}

/// Every node finds every other node by a DHT lookup.
pub async fn every_node_finds_every_other<R: Runtime>(rt: R, n: u32) {
    let nodes = network(&rt, n).await;
    let mut failures = Vec::new();
    for (i, a) in nodes.iter().enumerate() {
        for (j, b) in nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            let o = a.lookup(b.fingerprint()).await.expect("lookup runs");
            match o.found {
                Some(c) if c.address == *b.advertised() => {}
                other => failures.push(format!("{i} -> {j}: {other:?} ({} requests)", o.requests)),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} lookups failed: {failures:?}",
        failures.len()
    );
    for node in &nodes {
        assert!(!node.snapshot().peers.is_empty());
    }
}

/// A stopped node is noticed and evicted from the tables of those who need it.
pub async fn stopped_node_is_evicted<R: Runtime>(rt: R) {
    let mut nodes = network(&rt, 5).await;
    let victim = nodes[4].fingerprint();
    assert!(nodes[0]
        .snapshot()
        .peers
        .iter()
        .any(|p| p.fingerprint == victim));
    let victim_addr = nodes[4].local_addr();
    nodes[4].shutdown().await;
    // Its tasks stop asynchronously: wait (bounded) until nothing listens
    // there any more, so no late answer of the stopped node resets its count.
    for _ in 0..100 {
        if rt.connect_tcp(victim_addr).await.is_err() {
            break;
        }
        rt.sleep(Duration::from_millis(50)).await;
    }
    // Each lookup for it asks it directly and fails; max_failures (2) evicts.
    for _ in 0..3 {
        let o = nodes[0].lookup(victim).await.expect("lookup runs");
        assert!(o.found.is_none(), "a stopped node answered");
    }
    let left = nodes[0].snapshot();
    assert!(
        left.peers.iter().all(|p| p.fingerprint != victim),
        "stopped node still in the table: {left:?}"
    );
}

/// A node restarted with its saved table rejoins without bootstrap peers.
pub async fn restarted_node_rejoins_from_saved_table<R: Runtime>(rt: R) {
    let dir = tempfile::tempdir().expect("tempdir");
    let table = mau_identity::StateDir::new(dir.path()).routing_table();
    let nodes = network(&rt, 4).await;
    let mut cfg = config(99);
    cfg.table_file = Some(table.clone());
    let mut node = start(&rt, 99, cfg.clone(), vec![nodes[1].contact()]).await;
    eventually(&rt, "node 99 joined", Duration::from_secs(30), || {
        !node.is_joining()
    })
    .await;
    assert!(node
        .lookup(nodes[3].fingerprint())
        .await
        .expect("lookup")
        .found
        .is_some());
    node.shutdown().await;
    drop(node);
    let saved = mau_net::persist::load_table(&table).expect("table saved");
    assert!(saved.len() >= 3, "saved only {} peers", saved.len());
    // Restart: no bootstrap peers, a new port, the saved table.
    let node = start(&rt, 99, cfg, vec![]).await;
    eventually(&rt, "node 99 rejoined", Duration::from_secs(30), || {
        !node.is_joining()
    })
    .await;
    let o = node.lookup(nodes[2].fingerprint()).await.expect("lookup");
    assert_eq!(o.found.map(|c| c.fingerprint), Some(nodes[2].fingerprint()));
    // And the others learn its new address through the DHT.
    let seen = nodes[0].lookup(fingerprint(99)).await.expect("lookup");
    assert_eq!(
        seen.found.map(|c| c.address),
        Some(node.advertised().clone())
    );
}

/// Malformed and unknown paths, a wrong pinned fingerprint, a client without
/// a certificate: each gets a clear refusal.
pub async fn rejections<R: Runtime>(rt: R) {
    let nodes = network(&rt, 2).await;
    let target = nodes[1].contact();
    let client = nodes[0].client();
    let status = |r: Result<_, ClientError>| match r {
        Err(ClientError::Status { status, body }) => (status, body),
        other => panic!("expected an HTTP error status, got {other:?}"),
    };
    let (s, body) = status(client.get(&target, "/kad/find_peer/not-hex", 4096).await);
    assert_eq!(s, 400);
    assert!(body.contains("error"), "{body}");
    assert_eq!(
        status(client.get(&target, "/kad/find_peer/abcd", 4096).await).0,
        400
    );
    assert_eq!(status(client.get(&target, "/nope", 4096).await).0, 404);
    assert!(client.get(&target, "/kad/ping", 16).await.is_ok());
    // The right address but another fingerprint pinned: TLS refuses.
    let wrong = Contact::new(fingerprint(12345), target.address.clone());
    match client.get(&wrong, "/kad/ping", 16).await {
        Err(ClientError::Tls(..)) => {}
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
    // No client certificate: the server refuses the handshake.
    let config = rustls::ClientConfig::builder_with_provider(mau_identity::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(mau_identity::MauVerifier::pinned(
            target.fingerprint,
        )))
        .with_no_client_auth();
    let tcp = rt
        .connect_tcp(nodes[1].local_addr())
        .await
        .expect("connect");
    let answered = async {
        let mut tls = futures_rustls::TlsConnector::from(Arc::new(config))
            .connect(mau_identity::server_name(), tcp)
            .await?;
        tls.write_all(b"GET /kad/ping HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        tls.flush().await?;
        let mut buf = vec![0u8; 64];
        let n = tls.read(&mut buf).await?;
        Ok::<_, std::io::Error>(buf[..n].to_vec())
    }
    .await;
    // Refused (an error) is what we want; an answer must not be a success.
    if let Ok(bytes) = answered {
        assert!(
            !bytes.starts_with(b"HTTP/1.1 200"),
            "served without a client certificate"
        );
    }
}

/// A client asking more peers than its pool holds: every request succeeds
/// and the pool never holds more than `pool_max_idle` idle connections (the
/// least recently used are closed); with 0 it pools none.
pub async fn client_pool_stays_within_its_cap<R: Runtime>(rt: R) {
    const PEERS: u32 = 6;
    let nodes = network(&rt, PEERS).await;
    for cap in [3, 0] {
        let limits = mau_net::Limits {
            pool_max_idle: cap,
            ..config(0).limits
        };
        let me = identity(100)(None).expect("identity");
        let client = mau_net::Client::new(rt.clone(), me, limits);
        for round in 0..3 {
            for node in &nodes {
                let answer = client.get(&node.contact(), "/kad/ping", 64).await;
                assert!(answer.is_ok(), "round {round}: {answer:?}");
                assert!(
                    client.pooled() <= cap,
                    "{} pooled, cap {cap}",
                    client.pooled()
                );
            }
        }
        assert_eq!(client.pooled(), cap, "the pool is used up to its cap");
    }
}

/// A peer that accepts connections and never answers, and a peer that answers
/// with an endless body: lookups still complete, without them.
pub async fn hostile_peers_do_not_stall_lookups<R: Runtime>(rt: R) {
    let nodes = network(&rt, 3).await;
    // Silent: accepts TCP, says nothing.
    let silent = rt
        .bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let silent_addr = R::tcp_local_addr(&silent).expect("addr");
    let hold = rt.clone();
    rt.spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = R::accept_tcp(&silent).await {
            held.push(s);
            if held.len() > 100 {
                break;
            }
        }
        hold.sleep(Duration::from_secs(60)).await;
    });
    // Endless: a valid identity that streams a never-ending JSON body.
    let hostile = identity(777)(None).expect("identity");
    let hostile_fp = hostile.fingerprint();
    let server_tls = mau_identity::server_config(&hostile).expect("config");
    let endless = rt
        .bind_tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let endless_addr = R::tcp_local_addr(&endless).expect("addr");
    let rt2 = rt.clone();
    rt.spawn(async move {
        while let Ok((s, _)) = R::accept_tcp(&endless).await {
            let server_tls = server_tls.clone();
            let rt3 = rt2.clone();
            rt2.spawn(async move {
                let Ok(mut tls) = futures_rustls::TlsAcceptor::from(server_tls).accept(s).await else {
                    return;
                };
                let mut req = [0u8; 1024];
                let _ = tls.read(&mut req).await;
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").await;
                let chunk = format!("{:x}\r\n[{}\r\n", 8193, " ".repeat(8192));
                for _ in 0..2000 {
                    if tls.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    rt3.sleep(Duration::from_millis(1)).await;
                }
            });
        }
    });
    let silent_fp = fingerprint(778);
    let mut cfg = config(50);
    cfg.bootstrap = vec![
        Contact::new(silent_fp, PeerAddress::from(silent_addr)),
        Contact::new(hostile_fp, PeerAddress::from(endless_addr)),
        nodes[0].contact(),
    ];
    let node = RunningNode::start(rt.clone(), cfg, identity(50))
        .await
        .expect("start");
    eventually(
        &rt,
        "joined despite hostile peers",
        Duration::from_secs(60),
        || !node.is_joining(),
    )
    .await;
    let o = node.lookup(nodes[2].fingerprint()).await.expect("lookup");
    assert_eq!(o.found.map(|c| c.fingerprint), Some(nodes[2].fingerprint()));
    let table = node.snapshot();
    for bad in [silent_fp, hostile_fp] {
        let entry = table.peers.iter().find(|p| p.fingerprint == bad);
        assert!(
            entry.is_none_or(|p| p.failures > 0),
            "hostile peer {bad} looks healthy: {entry:?}"
        );
    }
}

/// The client path of the guide: resolve a fingerprint (DHT, static, fallback
/// addresses at once), connect with the fingerprint pinned, add the peer to
/// the table; and when nothing works, say why for every candidate.
pub async fn resolvers_connect_and_explain_failures<R: Runtime>(rt: R) {
    use mau_net::resolver::{connect, DhtResolver, Resolve, StaticAddress};
    let nodes = network(&rt, 6).await;
    let target = nodes[5].contact();
    // A wrong static address and a dead fallback, but the DHT knows the truth.
    let wrong = nodes[3].advertised().clone();
    let dead = PeerAddress::parse("127.0.0.1:9").expect("address");
    let resolvers: Vec<Arc<dyn Resolve>> = vec![
        Arc::new(StaticAddress(wrong.clone())),
        Arc::new(DhtResolver::new(&nodes[0])),
    ];
    let reached = connect(
        &nodes[0],
        target.fingerprint,
        resolvers,
        std::slice::from_ref(&dead),
    )
    .await
    .expect("reached through the DHT");
    assert_eq!(reached, target);
    assert!(nodes[0]
        .snapshot()
        .peers
        .iter()
        .any(|p| p.fingerprint == target.fingerprint));
    // Nobody answers as this fingerprint anywhere: every attempt is explained.
    let ghost = fingerprint(4242);
    let resolvers: Vec<Arc<dyn Resolve>> = vec![
        Arc::new(StaticAddress(wrong.clone())),
        Arc::new(DhtResolver::new(&nodes[0])),
    ];
    let err = connect(&nodes[0], ghost, resolvers, std::slice::from_ref(&dead))
        .await
        .expect_err("no such peer");
    assert_eq!(err.fingerprint, ghost);
    let sources: Vec<&str> = err.attempts.iter().map(|a| a.source.as_str()).collect();
    assert!(sources.contains(&"dht"), "{err}");
    assert_eq!(
        sources.iter().filter(|s| **s == "static").count(),
        2,
        "{err}"
    );
    let wrong_attempt = err
        .attempts
        .iter()
        .find(|a| a.address.as_ref() == Some(&wrong))
        .expect("wrong address tried");
    assert!(
        wrong_attempt.reason.contains("TLS"),
        "a wrong peer at the address must fail the pinned handshake: {err}"
    );
    assert!(
        err.attempts
            .iter()
            .any(|a| a.address.as_ref() == Some(&dead)),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1:9") && text.contains(wrong.as_str()),
        "{text}"
    );
}

/// Instantiates every scenario as a `#[test]` for one adapter's [`Harness`].
#[macro_export]
macro_rules! conformance_suite {
    ($harness:ty) => {
        fn run<F: std::future::Future>(
            f: impl FnOnce(<$harness as $crate::Harness>::R) -> F,
        ) -> F::Output {
            <$harness as $crate::Harness>::block_on(f(<$harness as $crate::Harness>::rt()))
        }
        #[test]
        fn thirty_nodes_find_each_other() {
            run(|rt| $crate::every_node_finds_every_other(rt, 30));
        }
        #[test]
        fn stopped_node_is_evicted() {
            run($crate::stopped_node_is_evicted);
        }
        #[test]
        fn blocking_work_starts_before_it_is_awaited() {
            run($crate::blocking_work_starts_before_it_is_awaited);
        }
        #[test]
        fn restarted_node_rejoins_from_saved_table() {
            run($crate::restarted_node_rejoins_from_saved_table);
        }
        #[test]
        fn rejections() {
            run($crate::rejections);
        }
        #[test]
        fn client_pool_stays_within_its_cap() {
            run($crate::client_pool_stays_within_its_cap);
        }
        #[test]
        fn hostile_peers_do_not_stall_lookups() {
            run($crate::hostile_peers_do_not_stall_lookups);
        }
        #[test]
        fn resolvers_connect_and_explain_failures() {
            run($crate::resolvers_connect_and_explain_failures);
        }
        #[test]
        fn content_sync_250_files_then_15() {
            run($crate::content_sync::sync_250_files_then_15);
        }
        #[test]
        fn content_go_acceptance() {
            run($crate::content_sync::content_acceptance);
        }
        #[test]
        fn content_interrupted_download_resumes() {
            run($crate::content_sync::interrupted_download_resumes);
        }
        #[test]
        fn content_bad_files_are_rejected() {
            run($crate::content_sync::bad_files_are_rejected);
        }
        #[test]
        fn content_full_disk_loses_nothing() {
            run($crate::content_sync::full_disk_loses_nothing);
        }
        #[test]
        fn content_go_friend_without_pages_loses_nothing() {
            run($crate::content_sync::go_friend_without_pages_loses_nothing);
        }
        #[test]
        fn content_go_friend_random_dates_all_arrive() {
            run($crate::content_sync::go_friend_random_dates_all_arrive);
        }
        #[test]
        fn content_plain_sync_retires_withdrawn_files() {
            run($crate::content_sync::plain_sync_retires_withdrawn_files);
        }
        #[test]
        fn hostile_friend_endless_listing_stays_small() {
            run($crate::content_sync::hostile::endless_listing_stays_small);
        }
        #[test]
        fn hostile_friend_slow_body_is_cut_and_others_go_on() {
            run($crate::content_sync::hostile::slow_body_is_cut_and_others_go_on);
        }
        #[test]
        fn hostile_friend_disk_is_bounded() {
            run($crate::content_sync::hostile::disk_is_bounded);
        }
        #[test]
        fn hostile_friend_fast_large_downloads_are_not_held_in_memory() {
            run($crate::content_sync::hostile::fast_large_downloads_are_not_held_in_memory);
        }
        #[test]
        fn hostile_friend_fast_downloads_to_a_slow_disk_stay_within_their_memory_bound() {
            run($crate::content_sync::hostile::fast_downloads_to_a_slow_disk_stay_within_their_memory_bound);
        }
        #[test]
        fn hostile_friend_control_characters_in_names_are_refused() {
            run($crate::content_sync::hostile::control_characters_in_names_are_refused);
        }
        #[test]
        fn hardening_slowloris() {
            run($crate::hardening::slowloris);
        }
        #[test]
        fn hardening_slow_readers() {
            run($crate::hardening::slow_readers);
        }
        #[test]
        fn hardening_handshake_flood() {
            run($crate::hardening::handshake_flood);
        }
        #[test]
        fn hardening_ten_thousand_requests_from_one_peer() {
            run($crate::hardening::ten_thousand_requests_from_one_peer);
        }
        #[test]
        fn hardening_rate_limit_slows_then_refuses() {
            run($crate::hardening::rate_limit_slows_then_refuses);
        }
        #[test]
        fn hardening_oversized_requests() {
            run($crate::hardening::oversized_requests);
        }
        #[test]
        fn hardening_per_ip_cap_scope() {
            run($crate::hardening::per_ip_cap_scope);
        }
        #[test]
        fn hardening_sync_waits_out_a_busy_friend() {
            run($crate::hardening::sync_waits_out_a_busy_friend);
        }
        #[test]
        fn hardening_sync_honours_retry_after_and_loses_nothing() {
            run($crate::hardening::sync_honours_retry_after_and_loses_nothing);
        }
        #[test]
        fn reach_observed_header_names_the_callers_address() {
            run($crate::reach::observed_header_names_the_callers_address);
        }
        #[test]
        fn reach_liars_are_outvoted_and_dialbacks_decide() {
            run($crate::reach::liars_are_outvoted_and_dialbacks_decide);
        }
        #[test]
        fn reach_an_address_nobody_can_reach_is_found_out() {
            run($crate::reach::an_address_nobody_can_reach_is_found_out);
        }
        #[test]
        fn reach_dialback_goes_only_to_the_callers_own_ip() {
            run($crate::reach::dialback_goes_only_to_the_callers_own_ip);
        }
        #[test]
        fn attack_probe_flood() {
            run($crate::attacks::probe_flood);
        }
        #[test]
        fn attack_reflection_through_claimed_addresses() {
            run($crate::attacks::reflection_through_claimed_addresses);
        }
        #[test]
        fn attack_reflection_through_find_peer_answers() {
            run($crate::attacks::reflection_through_find_peer_answers);
        }
        #[test]
        fn attack_hostile_find_peer_answerer() {
            run($crate::attacks::hostile_find_peer_answerer);
        }
        #[test]
        fn relay_friends_find_each_other_and_sync() {
            run($crate::relay::relayed_friends_find_each_other_and_sync);
        }
        #[test]
        fn relay_counts_renewals_as_hearing_from_holders() {
            run($crate::relay::relay_counts_renewals_as_hearing_from_holders);
        }
        #[test]
        fn relay_hole_punch_moves_to_direct() {
            run($crate::relay::hole_punch_moves_to_direct_and_releases_the_relay);
        }
        #[test]
        fn relay_limits_hold_against_an_outsider() {
            run($crate::relay::relay_limits_hold_against_an_outsider);
        }
    };
}

pub mod attacks;
pub mod content_sync;
pub mod hardening;
pub mod reach;
pub mod relay;
