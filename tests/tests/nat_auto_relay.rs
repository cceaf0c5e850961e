//! Relays chosen by the reachability verdict, and certificates that follow
//! the address (issue 19), in the NAT lab.
//!
//! On the public segment: a mau-rs bootstrap node that relays (`--relay`)
//! and a second public node. Behind a home router without any port
//! mapping: a mau-rs node started *without* `--relay-via`. It must
//!
//! 1. learn its public IP from its peers and reissue its certificate with
//!    it (the direct address `WAN:7000` instead of `0.0.0.0:7000`);
//! 2. find that address unreachable (dial-backs), pick the relay among the
//!    peers that said they relay (`Mau-Features: relays`), hold a
//!    reservation, and reissue its certificate with the relayed address,
//!    at which the public node finds it through the DHT;
//! 3. once the operator forwards the port on the router, find itself
//!    reachable at the next check, release the reservation and advertise
//!    its direct address again.
//!
//! Skips (with a message) without root, `ip netns` or nftables; under
//! `CI=true` a skip fails.

#[path = "../netns/mod.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use netns::nat_lab::{NatKind, NatLab};
use netns::{discover, init_account, mau_json, poll, start_mau};

const PORT: u16 = 7000;
const RELAYED: &str = ".mau-relay.invalid";

fn log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// Waits for `text` in the server log in `dir`; fails with the log.
fn wait_log(dir: &Path, text: &str, limit: Duration) {
    let found = poll(limit, || log(dir).contains(text).then_some(()));
    assert!(
        found.is_some(),
        "no {text:?} within {limit:?}: {}",
        log(dir)
    );
}

#[test]
fn an_unreachable_node_picks_a_relay_and_drops_it_once_reachable() {
    let Some(mut nat) = NatLab::builder("natauto")
        .public_hosts(2)
        .home(NatKind::EndpointIndependent, 1)
        .build()
    else {
        return;
    };
    let started = Instant::now();
    let (p0, p1) = (nat.public[0].clone(), nat.public[1].clone());
    let home = nat.homes[0].hosts[0].clone();
    let router = nat.homes[0].router.clone();
    let wan = nat.wan_ip(0);
    let direct = format!("{wan}:{PORT}");

    let relay_dir: PathBuf = nat.path("relay");
    let relay_fp = init_account(&relay_dir, "Relay");
    let relay_addr = p0.addr(PORT).to_string();
    let boot = format!("{relay_fp}@{relay_addr}");
    start_mau(
        &mut nat,
        &p0.ns,
        &relay_dir,
        &[
            "server",
            "start",
            "--no-mdns",
            "--listen",
            &relay_addr,
            "--relay",
        ],
    );
    let pub_dir = nat.path("public");
    init_account(&pub_dir, "Public");
    let pub_addr = p1.addr(PORT).to_string();
    start_mau(
        &mut nat,
        &p1.ns,
        &pub_dir,
        &[
            "server",
            "start",
            "--no-mdns",
            "--listen",
            &pub_addr,
            "--bootstrap",
            &boot,
        ],
    );
    let home_dir = nat.path("home");
    let home_fp = init_account(&home_dir, "Home");
    let listen = format!("0.0.0.0:{PORT}");
    // The public segment is one /24, one voice: a quorum of 1 here.
    start_mau(
        &mut nat,
        &home.ns,
        &home_dir,
        &[
            "server",
            "start",
            "--no-mdns",
            "--listen",
            &listen,
            "--bootstrap",
            &boot,
            "--reach-quorum",
            "1",
        ],
    );

    // (1) The public IP, learned from the peers, goes into the certificate.
    let limit = Duration::from_secs(60);
    wait_log(&home_dir, &format!("direct=Some(\"{direct}\")"), limit);
    // (2) Unreachable there: the relay is picked and the certificate names it.
    wait_log(&home_dir, "unreachable: holding reservations", limit);
    wait_log(&home_dir, "relay reservation held", limit);
    let t_relayed = started.elapsed();
    let status = mau_json(&nat, &home.ns, &home_dir, &["status"]);
    let r = &status["reachability"];
    assert_eq!(r["state"], "unreachable", "{status}");
    assert_eq!(r["address"], direct.as_str(), "{status}");
    let advertised = r["advertised"].as_str().unwrap_or_default().to_string();
    assert!(
        advertised.contains(&relay_fp) && advertised.ends_with(&format!("{RELAYED}:{PORT}")),
        "advertised {advertised}: {status}"
    );
    let found = poll(limit, || {
        discover(&nat, &p1.ns, &pub_dir, &home_fp).filter(|a| a.contains(RELAYED))
    });
    assert_eq!(
        found.as_deref(),
        Some(advertised.as_str()),
        "public -> home"
    );

    // (3) The operator forwards the port: the next check finds the node
    // reachable at its direct address, and the relay is let go.
    let lan = format!("{}:{PORT}", home.ip);
    for rule in [
        format!("add rule inet filter prerouting_miniupnpd iifname wan0 tcp dport {PORT} dnat ip to {lan}"),
        format!("add rule inet filter miniupnpd ip daddr {} tcp dport {PORT} accept", home.ip),
    ] {
        nat.sh(&router, &["nft", &rule]);
    }
    let status = poll(limit, || {
        let s = mau_json(&nat, &home.ns, &home_dir, &["status", "--check"]);
        (s["reachability"]["state"] == "reachable").then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "never reachable after the port was forwarded: {}",
            log(&home_dir)
        )
    });
    assert_eq!(
        status["reachability"]["address"],
        direct.as_str(),
        "{status}"
    );
    wait_log(
        &home_dir,
        "reachable again: relay reservations released",
        limit,
    );
    let back = poll(limit, || {
        let s = mau_json(&nat, &home.ns, &home_dir, &["status"]);
        (s["reachability"]["advertised"] == direct.as_str()).then_some(())
    });
    assert!(
        back.is_some(),
        "still advertising a relayed address: {}",
        log(&home_dir)
    );
    let released = poll(limit, || {
        log(&home_dir)
            .contains("relay reservation released")
            .then_some(())
    });
    assert!(released.is_some(), "{}", log(&home_dir));
    println!(
        "nat_auto_relay: public IP learned and certified as {direct}, unreachable there, relay \
         picked and its address certified after {t_relayed:?}, found at it by a public peer; \
         port forwarded -> reachable, relay released, direct address again; {:?} in all",
        started.elapsed()
    );
}
