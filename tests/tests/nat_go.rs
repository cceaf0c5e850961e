//! A Go peer in the NAT lab (issue 19, last expectation): it keeps working
//! with every mau-rs peer that is directly reachable, and is never handed an
//! address it cannot use.
//!
//! On the public segment: a mau-rs bootstrap node that relays (`--relay`),
//! a Go node (`mau-go-interop serve`), a second mau-rs node, and a third
//! one that is reachable but told to use the relay (`--relay-via`: the
//! operator's override). Behind a home router without any port mapping: a
//! mau-rs node that holds a reservation on the relay (`--relay-via`) and so
//! advertises a relayed address (`….mau-relay.invalid`, docs/nat.md
//! "Addresses: what Go sees") to mau-rs peers.
//!
//! - the Go node and each public mau-rs node find each other, lookups
//!   started on both sides;
//! - every `find_peer` answer the Go node gets from a mau-rs node (Go's own
//!   client, which announces no `Mau-Features: relay`) holds only usable
//!   `host:port` records: the relayed node is left out;
//! - the Go node's routing table (what its own `find_peer` answers) never
//!   holds a relayed address: the relayed nodes call the Go node too, but
//!   show a peer not known to understand relays (no `Mau-Features` in its
//!   answers) the certificate naming their direct address; the public one
//!   is held at that address, and Go's ping of it gets through;
//! - the mau-rs nodes still find the relayed node at its relayed address and
//!   sync a friend's file from it through the relay (behind a symmetric
//!   NAT, so no hole punch takes the stream off the relay).
//!
//! Skips (with a message) without root, `ip netns`, nftables or the Go peer
//! (`scripts/test.sh` builds it); under `CI=true` a skip fails.

#[path = "../netns/mod.rs"]
mod netns;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use netns::go::Go;
use netns::nat_lab::{Host, NatKind, NatLab};
use netns::{discover, init_account, mau, ok, poll, start_mau};

const PORT: u16 = 7000;
const RELAYED: &str = ".mau-relay.invalid";

/// A started node.
struct Node {
    dir: PathBuf,
    ns: String,
    fpr: String,
    addr: String,
}

impl Node {
    /// A new mau-rs account `name` in the lab directory `dir`, run in
    /// `host`'s namespace at `addr` (empty: it listens on every address).
    fn mau(nat: &NatLab, dir: &str, name: &str, host: &Host, addr: String) -> Node {
        let dir = nat.path(dir);
        Node {
            fpr: init_account(&dir, name),
            dir,
            ns: host.ns.clone(),
            addr,
        }
    }

    fn spec(&self) -> String {
        format!("{}@{}", self.fpr, self.addr)
    }
}

/// `mau <args>` in `n`'s namespace, asserting success.
fn mau_ok(nat: &NatLab, n: &Node, args: &[&str]) -> String {
    ok(mau(nat, &n.ns, &n.dir, args), &format!("mau {args:?}"))
}

/// Go's own iterative lookup of `target` by the Go node `g`, seeded with
/// `seed`: the record found, if any.
fn go_lookup(nat: &NatLab, go: &Go, g: &Node, seed: &Node, target: &str) -> Option<String> {
    let args = ["-peer", &seed.spec(), "-target", target, "-self", &g.addr];
    let out = go.interop(nat, &g.ns, "lookup", &g.dir, &args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    (out.status.success() && v["fingerprint"] == target)
        .then(|| v["address"].as_str().unwrap_or_default().to_string())
}

/// True if Go can dial `addr`: a `host:port` whose host resolves; here
/// every node has an IP address, so an IP socket address (not `0.0.0.0`).
fn usable(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .is_ok_and(|a| !a.ip().is_unspecified())
}

/// One `find_peer` RPC by Go's client (the Go node's identity) at `at` for
/// `target`: Go's output and its records (fingerprint, address).
fn records(
    nat: &NatLab,
    go: &Go,
    g: &Node,
    at: &Node,
    target: &str,
) -> (String, Vec<(String, String)>) {
    let args = ["-peer", &at.spec(), "-target", target, "-self", &g.addr];
    let out = ok(
        go.interop(nat, &g.ns, "find", &g.dir, &args),
        "Go's find_peer",
    );
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("Go's find_peer: {e}: {out}"));
    let list = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {out}"))
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("fingerprint"), s("address"))
        })
        .collect();
    (out, list)
}

/// [`records`] from a mau-rs node, asserting that each is usable by Go.
fn go_find(nat: &NatLab, go: &Go, g: &Node, at: &Node, target: &str) -> Vec<(String, String)> {
    let (out, list) = records(nat, go, g, at, target);
    for (fpr, addr) in &list {
        assert!(
            !addr.contains(RELAYED) && usable(addr),
            "{} handed Go an unusable record for {fpr}: {out}",
            at.addr
        );
    }
    list
}

/// Friends both ways (keys exported and added), `follower` following
/// `owner`.
fn befriend(nat: &NatLab, owner: &Node, follower: &Node) {
    let key = |n: &Node| n.dir.join("key.pgp");
    for (n, other) in [(owner, follower), (follower, owner)] {
        mau_ok(
            nat,
            n,
            &["export", "--output", key(n).to_str().expect("utf-8")],
        );
        mau_ok(
            nat,
            other,
            &["friend", "add", key(n).to_str().expect("utf-8")],
        );
    }
    mau_ok(nat, follower, &["follow", &owner.fpr]);
}

/// Waits for `text` in the server log of `n`.
fn log_shows(n: &Node, text: &str, limit: Duration) -> bool {
    let log = |n: &Node| std::fs::read_to_string(n.dir.join("server.log")).unwrap_or_default();
    poll(limit, || log(n).contains(text).then_some(())).is_some()
}

#[test]
fn a_go_peer_works_with_reachable_mau_rs_peers_and_never_gets_a_relayed_address() {
    let Some(go) = Go::find("natgo") else {
        return;
    };
    let Some(mut nat) = NatLab::builder("natgo")
        .public_hosts(4)
        .home(NatKind::Symmetric, 1)
        .build()
    else {
        return;
    };
    let started = Instant::now();
    let (p0, p1, p2, p3) = (
        nat.public[0].clone(),
        nat.public[1].clone(),
        nat.public[2].clone(),
        nat.public[3].clone(),
    );
    let home = nat.homes[0].hosts[0].clone();

    // The relay and bootstrap node.
    let relay = Node::mau(&nat, "relay", "Relay", &p0, p0.addr(PORT).to_string());
    let boot = relay.spec();
    start_mau(
        &mut nat,
        &relay.ns,
        &relay.dir,
        &[
            "server",
            "start",
            "--no-mdns",
            "--listen",
            &relay.addr,
            "--advertise",
            &relay.addr,
            "--relay",
        ],
    );

    // The Go node (its mDNS needs its host name to resolve).
    let g_dir = nat.path("go");
    let g = Node {
        fpr: go.init(&nat, &p1.ns, &g_dir, "Gopher"),
        dir: g_dir,
        ns: p1.ns.clone(),
        addr: p1.addr(PORT).to_string(),
    };
    nat.hosts_file(&g.ns, &p1.ip.to_string());
    go.serve(
        &mut nat,
        &g.ns,
        &g.dir,
        &g.addr,
        std::slice::from_ref(&boot),
    );

    // The second public mau-rs node, and the one behind the router.
    let m = Node::mau(&nat, "public", "Public", &p2, p2.addr(PORT).to_string());
    let args = ["--listen", &m.addr, "--bootstrap", &boot];
    start_mau(
        &mut nat,
        &m.ns,
        &m.dir,
        &[&["server", "start", "--no-mdns"][..], &args].concat(),
    );
    // Reachable, but relayed by the operator's choice.
    let v = Node::mau(&nat, "viarelay", "Via", &p3, p3.addr(PORT).to_string());
    let args = [
        "--listen",
        &v.addr,
        "--relay-via",
        &boot,
        "--bootstrap",
        &boot,
    ];
    start_mau(
        &mut nat,
        &v.ns,
        &v.dir,
        &[&["server", "start", "--no-mdns"][..], &args].concat(),
    );
    let h = Node::mau(&nat, "home", "Home", &home, String::new());
    let listen = format!("0.0.0.0:{PORT}");
    // The public segment is one /24, one voice: with a quorum of 1 the home
    // node certifies its public IP (the router's) instead of 0.0.0.0.
    let args = [
        "--listen",
        &listen,
        "--relay-via",
        &boot,
        "--bootstrap",
        &boot,
        "--reach-quorum",
        "1",
    ];
    start_mau(
        &mut nat,
        &h.ns,
        &h.dir,
        &[&["server", "start", "--no-mdns"][..], &args].concat(),
    );
    for n in [&h, &v] {
        assert!(
            log_shows(n, "relay reservation held", Duration::from_secs(30)),
            "no reservation: {}",
            std::fs::read_to_string(n.dir.join("server.log")).unwrap_or_default()
        );
    }

    // (3) The mau-rs nodes find both relayed nodes at their relayed
    // addresses (the certificate they are shown was reissued when the
    // reservation was obtained).
    let wait = Duration::from_secs(30);
    // (The public one may be held at its direct address too: it is
    // reachable there, and a mau-rs peer that called it first keeps it.)
    for from in [&m, &relay] {
        for to in [&h, &v] {
            let found = poll(wait, || {
                discover(&nat, &from.ns, &from.dir, &to.fpr)
                    .filter(|a| a.contains(RELAYED) || (to.fpr == v.fpr && *a == v.addr))
            });
            assert!(
                found.is_some(),
                "{} did not find {} (home: {}) at a relayed (or its direct) address: {:?}",
                from.addr,
                to.fpr,
                to.fpr == h.fpr,
                discover(&nat, &from.ns, &from.dir, &to.fpr)
            );
        }
    }

    // (1) The Go node and each public mau-rs node find each other.
    for r in [&relay, &m] {
        let found = poll(wait, || discover(&nat, &r.ns, &r.dir, &g.fpr));
        assert_eq!(found.as_deref(), Some(g.addr.as_str()), "{} -> Go", r.addr);
        let seed = if r.fpr == relay.fpr { &m } else { &relay };
        let found = poll(wait, || go_lookup(&nat, &go, &g, seed, &r.fpr));
        assert_eq!(found.as_deref(), Some(r.addr.as_str()), "Go -> {}", r.addr);
    }
    // (2) Every find_peer answer to Go, from each mau-rs node, about each
    // node: only usable records (go_find asserts it), never the home node.
    let targets = [&relay.fpr, &m.fpr, &g.fpr, &h.fpr, &v.fpr];
    let mut answers = 0;
    let mut given = 0;
    for at in [&relay, &m] {
        for t in targets {
            let got = go_find(&nat, &go, &g, at, t);
            assert!(!got.is_empty(), "{} answered Go nothing for {t}", at.addr);
            // Never the home node; the public relayed one only at its
            // direct address (a mau-rs peer may hold it there).
            assert!(
                got.iter()
                    .all(|(f, a)| *f != h.fpr && (*f != v.fpr || *a == v.addr)),
                "{} handed Go a relayed node: {got:?}",
                at.addr
            );
            answers += 1;
            given += got.len();
        }
    }
    // The home node holds the relayed records, but it answers only through
    // the relay, which Go cannot dial; nothing else to ask there.

    // (3) A mau-rs node still syncs a friend's file from the home node,
    // through the relay.
    befriend(&nat, &h, &m);
    let note = h.dir.join("note.txt");
    std::fs::write(&note, "from behind the NAT").expect("note");
    mau_ok(
        &nat,
        &h,
        &["share", note.to_str().expect("utf-8"), "--to", &m.fpr],
    );
    let synced = poll(wait, || {
        let out = mau(&nat, &m.ns, &m.dir, &["sync", &h.fpr]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && text.contains("1 downloaded")).then_some(text)
    });
    assert!(
        synced.is_some(),
        "no sync from the home node through the relay"
    );

    // The Go node's routing table, as its own find_peer answers show it
    // (asked with its own identity: Go adds no record for itself). Both
    // relayed nodes called the Go node (it is public; the log says so), and
    // Go stores a caller's address as the first name of its certificate:
    // they showed it the one naming their direct address.
    for n in [&h, &v] {
        assert!(
            log_shows(n, &g.fpr, Duration::from_secs(1)),
            "{} never dealt with the Go node",
            n.fpr
        );
    }
    let go_table = poll(wait, || {
        let mut t = Vec::new();
        for tg in targets {
            t.extend(records(&nat, &go, &g, &g, tg).1);
        }
        t.sort();
        t.dedup();
        t.iter().any(|(f, _)| *f == v.fpr).then_some(t)
    })
    .unwrap_or_else(|| panic!("the Go node never stored {}", v.fpr));
    for r in [&relay, &m, &v] {
        assert!(
            go_table.contains(&(r.fpr.clone(), r.addr.clone())),
            "the Go node does not hold {} at its direct address: {go_table:?}",
            r.addr
        );
    }
    for (fpr, addr) in &go_table {
        assert!(
            !addr.contains(RELAYED) && usable(addr),
            "an unusable record for {fpr} in the Go node's table: {go_table:?}"
        );
    }
    let go_held = go_table
        .iter()
        .find(|(f, _)| *f == h.fpr)
        .map(|(_, a)| a.clone());
    // Go's own lookups: never a relayed address.
    for t in [&h, &v] {
        let found = go_lookup(&nat, &go, &g, &relay, &t.fpr);
        assert!(
            found.as_deref().is_none_or(|a| !a.contains(RELAYED)),
            "Go's lookup of {} found {found:?}",
            t.fpr
        );
    }
    // Go reaches the relayed node that is reachable, at its direct address.
    let t = Instant::now();
    let out = go.interop(
        &nat,
        &g.ns,
        "ping",
        &g.dir,
        &["-peer", &v.spec(), "-self", &g.addr],
    );
    let ping_ms = t.elapsed().as_millis();
    assert!(out.status.success(), "Go's ping of {}: {out:?}", v.addr);
    for r in [&relay, &m] {
        let seed = if r.fpr == relay.fpr { &m } else { &relay };
        let found = go_lookup(&nat, &go, &g, seed, &r.fpr);
        assert_eq!(found.as_deref(), Some(r.addr.as_str()), "Go -> {}", r.addr);
    }
    println!(
        "nat_go: {answers} find_peer answers to Go from mau-rs ({given} records), none \
         relayed or unusable; the Go node's table {go_table:?} holds no relayed address \
         (the home node at {go_held:?}, the relayed public node at its direct address, \
         pinged by Go in {ping_ms} ms); found both ways, synced through the relay, in {:?}",
        started.elapsed()
    );
}
