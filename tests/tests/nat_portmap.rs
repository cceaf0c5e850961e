//! Port mapping in the NAT lab (tests/netns/nat_lab.rs) against miniupnpd:
//! a mapping through each of PCP, NAT-PMP and UPnP IGD, renewed, re-made
//! after a gateway restart and removed on shutdown; an IPv6 pinhole through
//! PCP; and a router without any of them (no mapping, the node runs, no
//! endless retries).
//!
//! ```text
//!  [public host 11.19.0.10] ── 11.19.0.100 [router: nftables NAT, miniupnpd] 192.168.1.1 ── [node 192.168.1.10]
//! ```
//!
//! Every test skips (with a message) when not root or a tool is missing.

#[path = "../netns/mod.rs"]
mod netns;

use std::path::Path;
use std::time::{Duration, Instant};

use netns::nat_lab::{Host, NatKind, NatLab};
use netns::{init_account, start_mau};

const PORT: &str = "7000";

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
}

/// Seconds of the day at which the first log line containing `what` was
/// written (tracing's `2026-01-01T12:34:56.789012Z` prefix).
fn logged_at(log: &str, what: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(what))?;
    let time = line.split_whitespace().next()?.split('T').nth(1)?;
    let mut parts = time.trim_end_matches('Z').split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// How long the mapper took from its start to `what`, in ms, from the log.
fn took_ms(log: &str, what: &str) -> f64 {
    let start = logged_at(log, "port mapping: starting").expect("start logged");
    let end = logged_at(log, what).expect("outcome logged");
    (end - start) * 1000.0
}

/// True if `from` can open a TCP connection to `ip`:`port`.
fn connects(nat: &NatLab, from: &Host, ip: &str, port: &str) -> bool {
    let script =
        "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)";
    nat.run_on(from, &["/usr/bin/python3", "-c", script, ip, port])
        .status
        .success()
}

/// Waits up to `limit` for `f`; true if it held.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    f()
}

/// Starts a node listening on `listen` on home 0's host, with `extra`.
fn node(nat: &mut NatLab, dir: &Path, listen: &str, extra: &[&str]) -> usize {
    let ns = nat.homes[0].hosts[0].ns.clone();
    let args = [&["server", "start", "--no-mdns", "--listen", listen], extra].concat();
    start_mau(nat, &ns, dir, &args)
}

fn lab(tag: &str, miniupnpd: bool) -> Option<NatLab> {
    let b = NatLab::builder(tag).public_hosts(1);
    let b = if miniupnpd {
        b.home_with_miniupnpd(NatKind::EndpointIndependent, 1)
    } else {
        b.home(NatKind::EndpointIndependent, 1)
    };
    b.build()
}

/// One protocol end to end: mapped (the public side connects to the
/// router's address), renewed past a 4 s lease, removed on shutdown.
fn maps_renews_and_removes(nat: &mut NatLab, protocol: &str, label: &str) {
    let dir = nat.path(protocol);
    init_account(&dir, protocol);
    let started = Instant::now();
    let i = node(
        nat,
        &dir,
        "0.0.0.0:7000",
        &["--port-map", protocol, "--port-map-lease", "4"],
    );
    let settled = started.elapsed();
    let wan = nat.wan_ip(0).to_string();
    let log = log_of(&dir);
    assert!(
        log.contains(&format!("{label}: port mapped")),
        "{protocol}: no mapping; log: {log}\nminiupnpd: {}",
        nat.miniupnpd_log(0)
    );
    let rules = nat.miniupnpd_rules(0);
    let host = nat.homes[0].hosts[0].ip.to_string();
    assert!(
        rules.contains(&format!("dport {PORT}")) && rules.contains(&host),
        "{protocol}: miniupnpd holds no rule: {rules}"
    );
    let public = nat.public[0].clone();
    assert!(
        connects(nat, &public, &wan, PORT),
        "{protocol}: the public side cannot connect through the mapping"
    );
    // `mau status` shows it (RunningNode::port_mapping at start).
    let ns = nat.homes[0].hosts[0].ns.clone();
    let status = netns::ok(
        netns::mau(nat, &ns, &dir, &["status", "--json"]),
        "mau status",
    );
    assert!(
        status.contains(&format!("{wan}:{PORT} ({label})")),
        "{protocol}: status: {status}"
    );
    // The gateway grants 4 s; renewals at half keep it past 2 leases.
    std::thread::sleep(Duration::from_secs(9).saturating_sub(started.elapsed() - settled));
    assert!(
        connects(nat, &public, &wan, PORT),
        "{protocol}: the mapping expired (not renewed): {}",
        nat.miniupnpd_rules(0)
    );
    let log = log_of(&dir);
    assert!(
        log.matches(&format!("{label}: lease renewed")).count() >= 2,
        "{protocol}: fewer than 2 renewals: {log}"
    );
    if protocol == "pcp" {
        // A rebooted gateway (rules and epoch gone) is noticed at the next
        // renewal, which makes the mapping again.
        nat.restart_miniupnpd(0);
        assert!(
            !connects(nat, &public, &wan, PORT),
            "the restart left the rule"
        );
        assert!(
            eventually(Duration::from_secs(6), || connects(
                nat, &public, &wan, PORT
            )),
            "not mapped again after the gateway restarted: {}",
            log_of(&dir)
        );
        assert!(log_of(&dir).contains("the gateway lost its mappings"));
    }
    assert!(
        nat.interrupt(i, Duration::from_secs(20)),
        "{protocol}: node did not stop cleanly: {}",
        log_of(&dir)
    );
    let log = log_of(&dir);
    assert!(
        log.contains(&format!("{label}: mapping removed")),
        "{protocol}: {log}"
    );
    assert!(
        !nat.miniupnpd_rules(0).contains(&format!("dport {PORT}")),
        "{protocol}: rule left behind: {}",
        nat.miniupnpd_rules(0)
    );
    assert!(!connects(nat, &public, &wan, PORT));
    eprintln!(
        "{protocol}: mapped in {:.1} ms",
        took_ms(&log, &format!("{label}: port mapped"))
    );
}

#[test]
fn pcp_maps_renews_survives_a_gateway_restart_and_removes() {
    let Some(mut nat) = lab("pmpcp", true) else {
        return;
    };
    maps_renews_and_removes(&mut nat, "pcp", "PCP");
}

#[test]
fn nat_pmp_maps_renews_and_removes() {
    let Some(mut nat) = lab("pmnat", true) else {
        return;
    };
    maps_renews_and_removes(&mut nat, "natpmp", "NAT-PMP");
}

#[test]
fn upnp_maps_renews_and_removes() {
    let Some(mut nat) = lab("pmupnp", true) else {
        return;
    };
    maps_renews_and_removes(&mut nat, "upnp", "UPnP");
}

#[test]
fn the_default_order_maps_with_pcp_first() {
    let Some(mut nat) = lab("pmauto", true) else {
        return;
    };
    let dir = nat.path("node");
    init_account(&dir, "node");
    let i = node(&mut nat, &dir, "0.0.0.0:7000", &["--port-map"]);
    let log = log_of(&dir);
    assert!(log.contains("PCP: port mapped"), "{log}");
    eprintln!(
        "default order: mapped in {:.1} ms",
        took_ms(&log, "PCP: port mapped")
    );
    assert!(
        !log.contains("UPnP"),
        "UPnP was tried although PCP worked: {log}"
    );
    assert!(nat.interrupt(i, Duration::from_secs(20)));
}

#[test]
fn ipv6_listening_opens_a_pinhole_with_pcp() {
    let Some(mut nat) = lab("pm6", true) else {
        return;
    };
    let dir = nat.path("node");
    init_account(&dir, "node");
    let home6 = nat.homes[0].hosts[0].ip6.to_string();
    let public = nat.public[0].clone();
    let i = node(&mut nat, &dir, "[::]:7000", &["--port-map", "pcp"]);
    assert!(
        eventually(Duration::from_secs(10), || log_of(&dir)
            .contains("PCP: IPv6 pinhole opened")),
        "no pinhole: {}\nminiupnpd: {}",
        log_of(&dir),
        nat.miniupnpd_log(0)
    );
    // nft lists the pinhole's address as one 128-bit number.
    let hex6 = format!("0x{:032x}", u128::from(nat.homes[0].hosts[0].ip6));
    let rules = nat.miniupnpd_rules(0);
    assert!(rules.contains(&hex6), "no pinhole rule: {rules}");
    // The router drops unsolicited IPv6 (the lab's self-test shows it);
    // the pinhole lets the public side in.
    assert!(
        connects(&nat, &public, &home6, PORT),
        "the public side cannot connect through the pinhole: {rules}"
    );
    let wan = nat.wan_ip(0).to_string();
    assert!(connects(&nat, &public, &wan, PORT), "IPv4 mapping missing");
    assert!(nat.interrupt(i, Duration::from_secs(20)));
    let rules = nat.miniupnpd_rules(0);
    assert!(!rules.contains(&hex6), "pinhole left open: {rules}");
    assert_eq!(log_of(&dir).matches("PCP: mapping removed").count(), 2);
}

#[test]
fn a_router_without_mapping_gives_no_mapping_and_stops_asking() {
    let Some(mut nat) = lab("pmnone", false) else {
        return;
    };
    let dir = nat.path("node");
    init_account(&dir, "node");
    let started = Instant::now();
    let i = node(&mut nat, &dir, "0.0.0.0:7000", &["--port-map"]);
    let settled = started.elapsed();
    // PCP and NAT-PMP: the router answers port unreachable at once; UPnP:
    // its SSDP search (6 s) finds nothing.
    assert!(
        settled < Duration::from_secs(20),
        "giving up took {settled:?}"
    );
    let log = log_of(&dir);
    assert!(log.contains("no port mapping from the gateway"), "{log}");
    assert!(log.contains("retry_in_secs=600"), "{log}");
    assert_eq!(log.matches("PCP: no port mapping").count(), 1, "{log}");
    // Nothing more is tried in the next seconds.
    std::thread::sleep(Duration::from_secs(3));
    assert!(nat.running(i), "node died: {log}");
    let later = log_of(&dir);
    // (The server's one-time "no port mapping: reachable only if ..." line
    // may come later; only the mapper's rounds count.)
    let rounds = |log: &str| log.matches("no port mapping from the gateway").count();
    assert_eq!(rounds(&later), rounds(&log), "{later}");
    let ns = nat.homes[0].hosts[0].ns.clone();
    let status = netns::ok(
        netns::mau(&nat, &ns, &dir, &["status", "--json"]),
        "mau status",
    );
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert!(
        status["port_mapping"].is_null(),
        "a mapping is claimed: {status}"
    );
    assert_eq!(status["advertised"], "0.0.0.0:7000", "{status}");
    assert!(nat.interrupt(i, Duration::from_secs(20)));
    eprintln!(
        "no gateway service: gave up after {:.1} ms",
        took_ms(&log, "no port mapping from the gateway")
    );
}
