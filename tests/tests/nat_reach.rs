//! The public address and reachability a node learns behind each kind of
//! NAT router (issue 19, item 2), in the NAT lab (`tests/netns/nat_lab.rs`):
//! three `mau server start` on the public segment, and one behind each of an
//! endpoint-independent router and a symmetric one, neither mapping a port.
//! Both learn their router's public address from the `Mau-Observed-Address`
//! of the public nodes' answers, and that nobody can dial them back there.
//! (A mapped port, reachable, is the port mapper's test: the lab's
//! miniupnpd answers UPnP discovery only from branch h/natmap's later lab.)
//!
//! The public segment is one IPv4 /24, which counts as one voice, so the
//! home nodes run with `--reach-quorum 1` (the quorum's own tests are on
//! loopback, `tests/src/reach.rs`).

#[path = "../netns/mod.rs"]
mod netns;

use std::path::Path;
use std::time::{Duration, Instant};

use netns::nat_lab::{NatKind, NatLab};
use netns::{init_account, mau, mau_json, ok, start_mau};

/// Waits (at most 60 s) until the server in `dir` has at least `at_least`
/// of `fps` in its routing table; fails with its table and log otherwise.
fn wait_for_peers(nat: &NatLab, ns: &str, dir: &Path, fps: &[String], at_least: usize) {
    let started = Instant::now();
    loop {
        let peers = mau_json(nat, ns, dir, &["peers", "list"]);
        let known: Vec<&str> = peers
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["fingerprint"].as_str()).collect())
            .unwrap_or_default();
        if fps.iter().filter(|f| known.contains(&f.as_str())).count() >= at_least {
            return;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{ns}: not {at_least} of {fps:?} in the table: {peers}\nlog (last lines first): {tail:#?}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn public_address_learned_correctly_behind_each_router() {
    let Some(mut nat) = NatLab::builder("natreach")
        .public_hosts(3)
        .home(NatKind::EndpointIndependent, 1)
        .home(NatKind::Symmetric, 1)
        .build()
    else {
        return;
    };
    let mut boot = String::new();
    let mut public = Vec::new();
    for (i, host) in nat.public.clone().iter().enumerate() {
        let dir = nat.path(&format!("public{i}"));
        let fp = init_account(&dir, &format!("Public {i}"));
        let listen = host.addr(7000).to_string();
        let mut args = vec!["server", "start", "--no-mdns", "--listen", &listen];
        if i > 0 {
            args.extend(["--bootstrap", &boot]);
        }
        start_mau(&mut nat, &host.ns, &dir, &args);
        if i == 0 {
            boot = format!("{fp}@{listen}");
        }
        public.push(fp);
    }
    // The public nodes know each other before anyone joins through them
    // (else a home's join could end knowing only the first). They share one
    // public /24, and the Sybil limits admit two of a /24 per bucket: a
    // third falling in the same bucket is refused (a quarter of the runs),
    // so "know each other" is: two of them, which the limits always admit.
    let admitted = 2;
    let first = (nat.public[0].ns.clone(), nat.path("public0"));
    wait_for_peers(&nat, &first.0, &first.1, &public[1..], admitted);
    let mut homes = Vec::new();
    for j in 0..nat.homes.len() {
        let host = nat.homes[j].hosts[0].clone();
        let dir = nat.path(&format!("home{j}"));
        init_account(&dir, &format!("Home {j}"));
        let args = [
            "server",
            "start",
            "--no-mdns",
            "--listen",
            "0.0.0.0:7000",
            "--bootstrap",
            &boot,
            "--reach-quorum",
            "1",
        ];
        start_mau(&mut nat, &host.ns, &dir, &args);
        homes.push((host.ns.clone(), dir));
    }
    // Each home node learns the public nodes (they answered it; none can
    // call it back unless its port is mapped).
    for (ns, dir) in &homes {
        wait_for_peers(&nat, ns, dir, &public, admitted);
    }
    for (j, (ns, dir)) in homes.iter().enumerate() {
        let status = mau_json(&nat, ns, dir, &["status", "--check"]);
        let r = &status["reachability"];
        let wan = nat.wan_ip(j).to_string();
        let at = format!("{wan}:7000");
        let kind = nat.homes[j].kind;
        println!("behind the {kind:?} router: {r}");
        // Learned: the router's public address, and nothing else was seen
        // (the symmetric router picks a new port per peer: same IP).
        assert_eq!(r["public_ip"], wan.as_str(), "home {j}: {status}");
        assert_eq!(r["observed"].as_array().map(Vec::len), Some(1), "{status}");
        assert_eq!(r["observed"][0]["ip"], wan.as_str(), "home {j}: {status}");
        // Peers dialed the router's address on our port, and got nowhere.
        assert_eq!(r["state"], "unreachable", "home {j}: {status}");
        assert_eq!(r["address"], at.as_str(), "home {j}: {status}");
        assert!(r["mapping"].is_null(), "home {j}: {status}");
        let text = ok(mau(&nat, ns, dir, &["status"]), "mau status");
        assert!(
            text.contains(&format!("reachable:  no, not at {at}"))
                && text.contains(&format!("public IP:  {wan}")),
            "{text}"
        );
    }
}
