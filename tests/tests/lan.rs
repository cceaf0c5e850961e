//! LAN discovery (mDNS-SD) end to end, in network namespaces on one bridge:
//! our nodes find each other and enter each other's routing tables over
//! mutual TLS; python-zeroconf (an independent implementation) sees and
//! resolves our advertisement and we find what it publishes, on IPv4 and
//! IPv6; hostile packets do not bring a node down or grow it.
//!
//! Every test skips (with a message) when not root or without `ip netns`.

#![allow(clippy::needless_range_loop)]

#[path = "../netns/mod.rs"]
mod netns;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netns::{init_account, mau, Lab};

const PORT: &str = "7000";

/// Starts `mau server start` in `ns` for the account in `dir`; returns the
/// child index and the moment its banner appeared.
fn start_server(lab: &mut Lab, ns: &str, dir: &Path, extra: &[&str]) -> (usize, Instant) {
    let listen = format!("[::]:{PORT}");
    let args = [&["server", "start", "--listen", &listen][..], extra].concat();
    (netns::start_mau(lab, ns, dir, &args), Instant::now())
}

/// Fingerprints a server lists, via `mau discover --local --json` or
/// `mau peers list --json`.
fn listed(lab: &Lab, ns: &str, dir: &Path, what: &[&str]) -> BTreeSet<String> {
    let out = mau(lab, ns, dir, what);
    let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
        Ok(v) => v,
        Err(_) => return BTreeSet::new(),
    };
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["fingerprint"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn lan_list(lab: &Lab, ns: &str, dir: &Path) -> BTreeSet<String> {
    listed(lab, ns, dir, &["discover", "--local", "--json"])
}

fn table(lab: &Lab, ns: &str, dir: &Path) -> BTreeSet<String> {
    listed(lab, ns, dir, &["peers", "list", "--json"])
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn three_nodes_find_each_other_and_ping_over_mutual_tls() {
    three_nodes("mdns3", &[]);
}

#[test]
fn three_nodes_on_tokio_find_each_other_and_ping_over_mutual_tls() {
    three_nodes("mdns3t", &["--runtime", "tokio"]);
}

fn three_nodes(tag: &str, extra: &[&str]) {
    let Some(mut lab) = Lab::new(tag) else {
        return;
    };
    let nss = lab.bridged_lan(3);
    let dirs: Vec<_> = (0..3).map(|i| lab.path(&format!("n{i}"))).collect();
    let fps: Vec<String> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| init_account(d, &format!("node{i}")))
        .collect();
    let mut started = Vec::new();
    let mut procs = Vec::new();
    for i in 0..3 {
        let (p, t) = start_server(&mut lab, &nss[i], &dirs[i], extra);
        procs.push(p);
        started.push(t);
    }
    // Discovery: every node lists the two others as LAN peers.
    let mut found: BTreeMap<(usize, usize), Duration> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while found.len() < 6 && Instant::now() < deadline {
        for i in 0..3 {
            let seen = lan_list(&lab, &nss[i], &dirs[i]);
            for j in 0..3 {
                if i != j && seen.contains(&fps[j]) && !found.contains_key(&(i, j)) {
                    let later = started[i].max(started[j]);
                    found.insert((i, j), later.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(found.len(), 6, "LAN discovery incomplete: {found:?}");
    let m = median(found.values().copied().collect());
    println!("mDNS discovery on the bridge ({extra:?}): median {m:?} from the later start to being listed (6 pairs: {found:?})");
    // Mutual TLS: each one is in the others' routing tables.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tables = Vec::new();
    while Instant::now() < deadline {
        tables = (0..3).map(|i| table(&lab, &nss[i], &dirs[i])).collect();
        let complete = (0..3).all(|i| (0..3).all(|j| i == j || tables[i].contains(&fps[j])));
        if complete {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for i in 0..3 {
        for j in 0..3 {
            assert!(
                i == j || tables[i].contains(&fps[j]),
                "node {i} has not verified node {j}: {:?}; log: {}",
                tables[i],
                std::fs::read_to_string(dirs[i].join("server.log")).unwrap_or_default()
            );
        }
    }
    // Goodbye: node 2 stops and the others forget it as a LAN peer.
    assert!(
        lab.interrupt(procs[2], Duration::from_secs(15)),
        "node 2 did not stop cleanly"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut gone = false;
    while !gone && Instant::now() < deadline {
        gone = (0..2).all(|i| !lan_list(&lab, &nss[i], &dirs[i]).contains(&fps[2]));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(gone, "node 2's goodbye was not seen");
    for &p in &procs[..2] {
        assert!(lab.running(p), "a node died");
    }
}

/// Calls `f` with the command line of the python-zeroconf helper
/// (tests/netns/zc.py) and `args`.
fn zc_argv<T>(args: &[&str], f: impl FnOnce(&[&str]) -> T) -> T {
    let script = netns::scripts_dir().join("zc.py");
    let head = ["/usr/bin/python3", script.to_str().expect("utf-8")];
    f(&[&head[..], args].concat())
}

/// Runs the python-zeroconf helper in `ns` to its end and asserts that it
/// succeeded (else fails with `what`, its stdout and stderr); returns its stdout.
fn zc(lab: &Lab, ns: &str, args: &[&str], what: &str) -> String {
    netns::ok(zc_argv(args, |a| lab.try_sh(ns, a)), what)
}

/// Starts the python-zeroconf helper in `ns` (stderr to `log`).
fn zc_spawn(lab: &mut Lab, ns: &str, args: &[&str], log: &Path) -> usize {
    zc_argv(args, |a| lab.spawn(ns, a, &[], log))
}

/// The netns fixture of the one-node tests: two namespaces on one bridge (in
/// a namespace of its own: multicast never reaches a real interface), a new
/// account serving in the first, and python-zeroconf (required) to run in the
/// second. Returns the lab, the two namespaces, the account's directory and
/// fingerprint, and the server's process; `None`, and the test skips, when
/// not root, without `ip netns` or without python-zeroconf.
fn zeroconf_lan(tag: &str) -> Option<(Lab, Vec<String>, PathBuf, String, usize)> {
    let mut lab = Lab::new(tag)?;
    if !netns::have_python_zeroconf() {
        netns::skip(
            tag,
            "python3-zeroconf is missing: apt-get install python3-zeroconf (scripts/test.sh does as root)",
        );
        return None;
    }
    let nss = lab.bridged_lan(2);
    let dir = lab.path("n0");
    let fp = init_account(&dir, "node0");
    let (server, _) = start_server(&mut lab, &nss[0], &dir, &[]);
    Some((lab, nss, dir, fp, server))
}

#[test]
fn python_zeroconf_sees_us_and_we_see_it_on_ipv4_and_ipv6() {
    let Some((mut lab, nss, dir, fp, p)) = zeroconf_lan("mdnszc") else {
        return;
    };

    // zeroconf resolves our advertisement: SRV port, TXT, A and AAAA.
    let text = zc(
        &lab,
        &nss[1],
        &["resolve", &fp, "10"],
        "zeroconf did not resolve us",
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("zc.py output");
    assert_eq!(v["port"], 7000, "{v}");
    assert_eq!(v["txt"]["fpr"], fp.as_str(), "{v}");
    let addrs: Vec<&str> = v["addresses"]
        .as_array()
        .expect("addresses")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(addrs.contains(&"10.77.0.1"), "no IPv4 address: {v}");
    assert!(addrs.contains(&"fd77::1"), "no IPv6 address: {v}");

    // The same over IPv6 only (zeroconf bound to IPv6).
    let resolve6 = ["resolve6", &fp, "10"];
    let text = zc(
        &lab,
        &nss[1],
        &resolve6,
        "zeroconf (IPv6 only) did not resolve us",
    );
    assert!(text.contains("fd77::1"), "{text}");

    // We find what zeroconf publishes: dual-stack, then IPv6 only.
    let fake4 = "ab".repeat(20);
    let fake6 = "cd".repeat(20);
    let pubdir = lab.path("zc");
    std::fs::create_dir_all(&pubdir).expect("dir");
    let publish4 = ["publish", &fake4, "7100", "10.77.0.2,fd77::2", "30"];
    let z1 = zc_spawn(&mut lab, &nss[1], &publish4, &pubdir.join("zc1.log"));
    let publish6 = ["publish", &fake6, "7200", "fd77::2", "30"];
    let z2 = zc_spawn(&mut lab, &nss[1], &publish6, &pubdir.join("zc2.log"));
    assert!(
        lab.read_line(z1, Duration::from_secs(20)).is_some(),
        "zeroconf publisher 1 did not start"
    );
    assert!(
        lab.read_line(z2, Duration::from_secs(20)).is_some(),
        "zeroconf publisher 2 did not start"
    );
    // A standalone browse (no server in this namespace's account dir).
    let empty = lab.path("nobody");
    std::fs::create_dir_all(&empty).expect("dir");
    let mut last = String::new();
    let mut ok = false;
    for _ in 0..3 {
        let browse = ["discover", "--local", "--seconds", "4", "--json"];
        let out = mau(&lab, &nss[0], &empty, &browse);
        last = String::from_utf8_lossy(&out.stdout).to_string();
        let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
        let addrs_of = |fp: &str| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["fingerprint"] == fp)
                .flat_map(|p| p["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect()
        };
        let a4 = addrs_of(&fake4);
        let a6 = addrs_of(&fake6);
        if a4.contains(&"10.77.0.2:7100".to_string())
            && a4.contains(&"[fd77::2]:7100".to_string())
            && a6 == vec!["[fd77::2]:7200".to_string()]
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "our browser did not find zeroconf's services: {last}");
    // The running node saw them too, as candidates (they do not speak TLS, so
    // they never enter its table).
    let seen = lan_list(&lab, &nss[0], &dir);
    assert!(seen.contains(&fake4) && seen.contains(&fake6), "{seen:?}");
    assert!(!table(&lab, &nss[0], &dir).contains(&fake4));

    // Goodbye: zeroconf sees our instance removed when we stop.
    let wait = ["wait-removed", &fp, "20"];
    let watcher = zc_spawn(&mut lab, &nss[1], &wait, &pubdir.join("watch.log"));
    let line = lab.read_line(watcher, Duration::from_secs(20));
    assert!(
        line.as_deref().is_some_and(|l| l.contains("added")),
        "watcher did not see us: {line:?} {}",
        std::fs::read_to_string(pubdir.join("watch.log")).unwrap_or_default()
    );
    assert!(
        lab.interrupt(p, Duration::from_secs(15)),
        "server did not stop cleanly"
    );
    let line = lab.read_line(watcher, Duration::from_secs(20));
    assert!(
        line.as_deref().is_some_and(|l| l.contains("removed")),
        "no goodbye seen by zeroconf: {line:?}"
    );
    let _ = Command::new("true").status();
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn hostile_mdns_packets_neither_crash_nor_grow_the_node() {
    let Some((mut lab, nss, dir, fp, p)) = zeroconf_lan("mdnsbad") else {
        return;
    };
    let pid = lab.child(p).id();
    std::thread::sleep(Duration::from_secs(1));
    let before = rss_kib(pid);
    // Two floods of random, truncated, oversized, looping and fake-service packets.
    for _ in 0..2 {
        zc(&lab, &nss[1], &["flood", "10.77.0.2", "5"], "flood");
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(lab.running(p), "node died under hostile mDNS input");
    let after = rss_kib(pid);
    println!("RSS before {before} KiB, after two floods {after} KiB");
    assert!(
        after < before + 32 * 1024,
        "memory grew from {before} KiB to {after} KiB"
    );
    // Still advertising and answering: zeroconf resolves it, its LAN list is bounded.
    let resolve = ["resolve", &fp, "10"];
    zc(&lab, &nss[1], &resolve, "not resolvable after the flood");
    let out = mau(&lab, &nss[0], &dir, &["discover", "--local", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("discover --local --json");
    assert!(v.as_array().map(|a| a.len()).unwrap_or(0) <= mau_net::mdns::MAX_LAN_PEERS);
    assert!(
        lab.interrupt(p, Duration::from_secs(15)),
        "did not stop cleanly"
    );
}

/// The LAN resolver answers from the peers seen, waits for a late one, and
/// gives up at its deadline (no network: the map is filled by hand).
#[test]
fn lan_resolver_waits_until_its_deadline() {
    use std::sync::Arc;

    use mau_net::mdns::{LanPeers, LanResolver};
    use mau_net::resolver::Resolve;
    use mau_proto::{Fingerprint, PeerAddress};

    let peers = Arc::new(LanPeers::default());
    let known = Fingerprint::parse(&"ab".repeat(20)).expect("fp");
    let late = Fingerprint::parse(&"cd".repeat(20)).expect("fp");
    let never = Fingerprint::parse(&"ef".repeat(20)).expect("fp");
    let addr = PeerAddress::parse("10.77.0.9:7000").expect("addr");
    peers.insert(known, vec![addr.clone()]);
    let resolver = LanResolver::new(
        mau_smol::SmolRuntime,
        peers.clone(),
        Duration::from_millis(500),
    );
    smol::block_on(async {
        assert_eq!(resolver.resolve(known).await, Ok(vec![addr.clone()]));
        let p = peers.clone();
        let a = addr.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            p.insert(late, vec![a]);
        });
        assert_eq!(resolver.resolve(late).await, Ok(vec![addr.clone()]));
        let t = Instant::now();
        assert!(resolver.resolve(never).await.is_err());
        assert!(t.elapsed() >= Duration::from_millis(450));
    });
}

/// A new interface address is announced without a restart.
#[test]
fn a_new_address_is_announced() {
    let Some((mut lab, nss, _, fp, p)) = zeroconf_lan("mdnsaddr") else {
        return;
    };
    zc(&lab, &nss[1], &["resolve", &fp, "10"], "not resolvable");
    lab.addr(&nss[0], "eth0", "10.77.0.50/24");
    let resolve_new = ["resolve", &fp, "30", "10.77.0.50"];
    zc(
        &lab,
        &nss[1],
        &resolve_new,
        "the new address was not announced",
    );
    assert!(lab.interrupt(p, Duration::from_secs(15)));
}
