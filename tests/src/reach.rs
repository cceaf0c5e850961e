//! Observed addresses, address votes and dial-backs over loopback (issue 19,
//! item 2).
//!
//! Every party has its own loopback address: the node under test listens on
//! 127.0.0.1 (the source address the kernel gives its outgoing loopback
//! connections, so its peers see it at 127.0.0.1), honest peers on
//! 127.0.0.4-6 (three networks: loopback voters count per address), liars
//! on 127.0.0.9 (five identities, one network) and 127.0.0.10.
//!
//! - [`observed_header_names_the_callers_address`]: a `/kad/*` answer
//!   carries `Mau-Observed-Address` with the caller's IP and port.
//! - [`liars_are_outvoted_and_dialbacks_decide`]: the liars report a wrong
//!   observed address and say they could not dial us back; the node learns
//!   127.0.0.1 and reachable at its advertised address all the same.
//! - [`an_address_nobody_can_reach_is_found_out`]: a node advertising a port
//!   nothing listens on is found unreachable there.
//! - [`dialback_goes_only_to_the_callers_own_ip`]: a caller claiming another
//!   IP gets 403 and the node dials nobody.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use mau_net::reach::{DialbackAnswer, ReachState, DIALBACK_PATH, OBSERVED_HEADER};
use mau_net::runtime::Runtime;
use mau_net::{Client, ClientError, NodeConfig, RunningNode};
use mau_proto::wire::PING_PATH;
use mau_proto::PeerAddress;

use crate::attacks::HostileAnswerer;

/// What the liars claim to see us at.
const LIE: &str = "203.0.113.7:4444";

fn on(ip: [u8; 4], seed: u64) -> NodeConfig {
    let mut c = crate::config(seed);
    c.listen = SocketAddr::from((ip, 0));
    // Checks are run by the test, not the background task.
    c.reach.first_check = Duration::from_secs(3600);
    c
}

/// The node under test (identity `id`, configured by `cfg`) and three honest
/// peers on 127.0.0.4-6 in its table.
async fn node_with_honest_peers<R: Runtime>(
    rt: &R,
    id: u32,
    cfg: NodeConfig,
) -> (RunningNode<R>, Vec<RunningNode<R>>) {
    let node = crate::start(rt, id, cfg, vec![]).await;
    let mut honest = Vec::new();
    for i in 0..3u8 {
        let n = id + 1 + u32::from(i);
        let peer = crate::start(rt, n, on([127, 0, 0, 4 + i], u64::from(n)), vec![]).await;
        node.probe(peer.contact());
        honest.push(peer);
    }
    crate::eventually(
        rt,
        "honest peers in the node's table",
        Duration::from_secs(20),
        || {
            let t = node.snapshot();
            honest
                .iter()
                .all(|h| t.peers.iter().any(|p| p.fingerprint == h.fingerprint()))
        },
    )
    .await;
    (node, honest)
}

/// A liar (identity `n`) on `ip`: answers pings with a wrong observed
/// address and every dial-back with "not reached" at `advertised`.
fn liar(ip: [u8; 4], n: u32, advertised: PeerAddress) -> HostileAnswerer {
    let respond = move |path: &str| {
        let mut headers = vec![
            ("content-type", "application/json".to_string()),
            (OBSERVED_HEADER, LIE.to_string()),
        ];
        if path == DIALBACK_PATH {
            let answer = DialbackAnswer {
                reached: false,
                address: advertised.clone(),
                error: Some("lying".into()),
            };
            let body = serde_json::to_vec(&answer).expect("json");
            (200, headers, body)
        } else if path == PING_PATH {
            (200, headers, Vec::new())
        } else {
            headers.truncate(1);
            (200, headers, b"[]".to_vec())
        }
    };
    HostileAnswerer::answering(
        IpAddr::V4(Ipv4Addr::from(ip)),
        n,
        Arc::new(AtomicUsize::new(0)),
        Box::new(respond),
    )
}

/// A `/kad/*` answer tells the caller where it came from.
pub async fn observed_header_names_the_callers_address<R: Runtime>(rt: R) {
    let a = crate::start(&rt, 300, on([127, 0, 0, 1], 300), vec![]).await;
    let b = crate::start(&rt, 301, on([127, 0, 0, 4], 301), vec![]).await;
    let answer = a
        .client()
        .get_answer(&b.contact(), PING_PATH, 1024)
        .await
        .expect("ping");
    let seen: SocketAddr = answer
        .observed
        .as_deref()
        .expect("an observed-address header")
        .parse()
        .expect("IP:PORT");
    assert_eq!(seen.ip(), IpAddr::from([127, 0, 0, 1]), "{seen}");
    assert_ne!(seen.port(), 0);
    assert_eq!(answer.remote, IpAddr::from([127, 0, 0, 4]));
    // One peer is no quorum.
    a.client()
        .get_answer(&b.contact(), PING_PATH, 1024)
        .await
        .expect("ping");
    assert_eq!(a.reachability().public_ip, None);
}

/// Three honest networks outvote two lying ones, on the address and on
/// reachability.
pub async fn liars_are_outvoted_and_dialbacks_decide<R: Runtime>(rt: R) {
    let (node, honest) = node_with_honest_peers(&rt, 310, on([127, 0, 0, 1], 310)).await;
    let advertised = node.advertised().clone();
    // Five liars on one address (one network) and one on another.
    let mut liars: Vec<HostileAnswerer> = (0..5)
        .map(|i| liar([127, 0, 0, 9], 320 + i, advertised.clone()))
        .collect();
    liars.push(liar([127, 0, 0, 10], 330, advertised.clone()));
    // Probes of one IP are rate-limited (2 a second): probed again until in.
    let in_table = |node: &RunningNode<R>, l: &HostileAnswerer| {
        let fp = l.contact().fingerprint;
        node.snapshot().peers.iter().any(|p| p.fingerprint == fp)
    };
    for _ in 0..40 {
        let missing: Vec<_> = liars.iter().filter(|l| !in_table(&node, l)).collect();
        if missing.is_empty() {
            break;
        }
        for l in missing {
            node.probe(l.contact());
        }
        rt.sleep(Duration::from_millis(500)).await;
    }
    assert!(
        liars.iter().all(|l| in_table(&node, l)),
        "liars not in the table"
    );
    // Every peer answered at least a ping: each voted once.
    let status = node.reachability();
    let lie: SocketAddr = LIE.parse().expect("lie");
    let votes_for = |ip: IpAddr| {
        status
            .observed
            .iter()
            .find(|o| o.ip == ip)
            .map_or(0, |o| o.networks)
    };
    println!("observed-address votes: {:?}", status.observed);
    assert_eq!(
        votes_for(lie.ip()),
        2,
        "six liars on two networks: two voices"
    );
    assert_eq!(votes_for(IpAddr::from([127, 0, 0, 1])), 3);
    assert_eq!(status.public_ip, Some(IpAddr::from([127, 0, 0, 1])));

    let status = node.check_reachability().await;
    println!("after a dial-back check: {status:?}");
    assert_eq!(status.state, ReachState::Reachable, "{status:?}");
    assert_eq!(status.address.as_ref(), Some(&advertised));
    assert_eq!((status.reached_by, status.unreached_by), (3, 2));
    drop((honest, liars));
}

/// A node advertising a port nothing listens on learns it is unreachable.
pub async fn an_address_nobody_can_reach_is_found_out<R: Runtime>(rt: R) {
    let dead = {
        let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        l.local_addr().expect("address")
    };
    let mut cfg = on([127, 0, 0, 1], 340);
    cfg.advertise = Some(PeerAddress::from(dead));
    let node = crate::start(&rt, 340, cfg, vec![]).await;
    let mut peers = Vec::new();
    for i in 0..3u8 {
        let n = 341 + u32::from(i);
        let p = crate::start(&rt, n, on([127, 0, 0, 4 + i], u64::from(n)), vec![]).await;
        node.probe(p.contact());
        peers.push(p);
    }
    crate::eventually(
        &rt,
        "peers in the node's table",
        Duration::from_secs(20),
        || node.snapshot().peers.len() == 3,
    )
    .await;
    let status = node.check_reachability().await;
    println!("advertising a dead port: {status:?}");
    assert_eq!(status.state, ReachState::Unreachable, "{status:?}");
    assert_eq!(status.address, Some(PeerAddress::from(dead)));
    assert_eq!((status.reached_by, status.unreached_by), (0, 3));
    // Nobody stored the address: each peer's probe of it failed.
    for p in &peers {
        assert!(p
            .snapshot()
            .peers
            .iter()
            .all(|e| e.fingerprint != node.fingerprint()));
    }
}

/// A caller whose certificate names an IP other than the one it connects
/// from is refused: the route cannot aim the node at a third party.
pub async fn dialback_goes_only_to_the_callers_own_ip<R: Runtime>(rt: R) {
    let node = crate::start(&rt, 350, on([127, 0, 0, 4], 350), vec![]).await;
    let victim = TcpListener::bind(("127.0.0.77", 0)).expect("bind the victim");
    victim.set_nonblocking(true).expect("non-blocking");
    let claimed = victim.local_addr().expect("address").to_string();
    let identity = crate::identity(351)(Some(&claimed)).expect("identity");
    let client = Client::new(rt.clone(), identity, mau_net::Limits::default());
    for _ in 0..5 {
        match client
            .get_answer(&node.contact(), DIALBACK_PATH, 4096)
            .await
        {
            Err(ClientError::Status { status: 403, body }) => {
                assert!(body.contains("the IP you connect from"), "{body}")
            }
            other => panic!("expected 403, got {other:?}"),
        }
    }
    rt.sleep(Duration::from_millis(200)).await;
    assert!(victim.accept().is_err(), "the victim was dialed");
}
