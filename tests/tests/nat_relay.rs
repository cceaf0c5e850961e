//! Relays and hole punching in the NAT lab (tests/netns/nat_lab.rs): `mau`
//! servers on home hosts behind nftables NAT routers without any port
//! mapping, a relay and bootstrap node on the public segment.
//!
//! - Two symmetric NATs: each try, a fresh pair of servers finds each other
//!   through the DHT at their relayed addresses and one syncs the other's
//!   new file through the relay; the hole punch fails cleanly (they stay
//!   relayed). 20 tries, five pairs at a time.
//! - Two endpoint-independent NATs: each try, the punch succeeds and the
//!   relay is released. 20 tries, five pairs at a time.
//!
//! Every test skips (with a message) when not root or without `ip netns`,
//! nftables or python3.

#[path = "../netns/mod.rs"]
mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use netns::nat_lab::{Host, NatKind, NatLab};
use netns::{init_account, mau, mau_argv, require, until, PASSPHRASE};

const PORT: u16 = 7000;
/// Pairs run at once (each node behind a router of its own).
const PAIRS: usize = 5;
/// Tries per scenario.
const TRIES: usize = 20;
const METRICS: &str = "127.0.0.1:9464";

/// A `mau server start` in a namespace, killed when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server for `dir` in `ns`; its log goes to `dir/server-N.log`.
fn server(ns: &str, dir: &Path, args: &[&str], log: &str) -> Server {
    let all = [
        &["server", "start", "--no-mdns", "--metrics", METRICS][..],
        args,
    ]
    .concat();
    let err = std::fs::File::create(dir.join(log)).expect("log");
    let child = mau_argv(dir, &all, |a| {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(a)
            .env("MAU_PASSPHRASE", PASSPHRASE)
            .env("MAU_LOG_LEVEL", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn mau")
    });
    Server(child)
}

/// The value of `name` (a sample line prefix) in the metrics of the
/// server in `ns`, 0 when absent.
fn metric(lab: &NatLab, ns: &str, name: &str) -> f64 {
    let url = format!("http://{METRICS}/metrics");
    let out = lab.try_sh(ns, &["curl", "-s", "--max-time", "2", &url]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

fn log_has(path: &Path, text: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|l| l.contains(text))
}

/// One account per role, friends both ways, B following A.
struct Pair {
    a: PathBuf,
    b: PathBuf,
    a_fp: String,
    b_fp: String,
}

fn pair(root: &Path, i: usize) -> Pair {
    let (a, b) = (root.join(format!("a{i}")), root.join(format!("b{i}")));
    let a_fp = init_account(&a, &format!("A{i}"));
    let b_fp = init_account(&b, &format!("B{i}"));
    let run = |dir: &Path, args: &[&str]| {
        let out = mau_argv(dir, args, |a| {
            Command::new(a[0])
                .args(&a[1..])
                .env("MAU_PASSPHRASE", PASSPHRASE)
                .output()
                .expect("mau")
        });
        assert!(out.status.success(), "mau {args:?}: {out:?}");
    };
    let (ka, kb) = (
        root.join(format!("a{i}.pgp")),
        root.join(format!("b{i}.pgp")),
    );
    run(&a, &["export", "--output", ka.to_str().expect("utf-8")]);
    run(&b, &["export", "--output", kb.to_str().expect("utf-8")]);
    run(&a, &["friend", "add", kb.to_str().expect("utf-8")]);
    run(&b, &["friend", "add", ka.to_str().expect("utf-8")]);
    run(&b, &["follow", &a_fp]);
    Pair { a, b, a_fp, b_fp }
}

/// Shares a new file from A to B.
fn share(p: &Pair, round: usize) {
    let f = p.a.join(format!("note-{round}.txt"));
    std::fs::write(&f, format!("round {round} from A")).expect("note");
    let out = mau_argv(
        &p.a,
        &["share", f.to_str().expect("utf-8"), "--to", &p.b_fp],
        |a| {
            Command::new(a[0])
                .args(&a[1..])
                .env("MAU_PASSPHRASE", PASSPHRASE)
                .output()
                .expect("mau share")
        },
    );
    assert!(out.status.success(), "share: {out:?}");
}

/// What one try showed.
#[derive(Debug, Default)]
struct Try {
    found_relayed: bool,
    synced: bool,
    punch_direct: bool,
    punch_relayed: bool,
    why: String,
}

/// One try for pair `p` on hosts `ha` / `hb`: fresh servers (no saved
/// table), B finds A through the DHT, then waits for B's hole punch to end,
/// then (if `sync`) syncs A's new file.
fn one_try(
    lab: &NatLab,
    p: &Pair,
    ha: &Host,
    hb: &Host,
    relay: &str,
    round: usize,
    sync: bool,
) -> (Try, Vec<Server>) {
    let mut t = Try::default();
    for d in [&p.a, &p.b] {
        let _ = std::fs::remove_file(d.join(".mau-rs").join("routing_table.json"));
    }
    let via = [
        "--listen",
        "0.0.0.0:7000",
        "--relay-via",
        relay,
        "--bootstrap",
        relay,
    ];
    let (la, lb) = (format!("server-{round}.log"), format!("server-{round}.log"));
    let servers = vec![
        server(&ha.ns, &p.a, &via, &la),
        server(&hb.ns, &p.b, &via, &lb),
    ];
    let held = |d: &Path, l: &str| log_has(&d.join(l), "relay reservation held");
    if !until(Duration::from_secs(30), || {
        held(&p.a, &la) && held(&p.b, &lb)
    }) {
        t.why = "no reservation".into();
        return (t, servers);
    }
    // B finds A through the DHT (A must have joined first).
    let found = until(Duration::from_secs(30), || {
        let out = mau(
            lab,
            &hb.ns,
            &p.b,
            &["discover", "--fingerprint", &p.a_fp, "--json"],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        out.status.success() && text.contains(".mau-relay.invalid")
    });
    if !found {
        t.why = "B did not find A".into();
        return (t, servers);
    }
    t.found_relayed = true;
    // B's punch towards A ends one way or the other.
    until(Duration::from_secs(30), || {
        let log = std::fs::read_to_string(p.b.join(&lb)).unwrap_or_default();
        let end = log
            .lines()
            .find(|l| l.contains("hole punch finished") && l.contains(&p.a_fp));
        t.punch_direct = end.is_some_and(|l| l.contains("Direct"));
        t.punch_relayed = end.is_some_and(|l| l.contains("Relayed"));
        end.is_some()
    });
    if sync {
        let out = mau(lab, &hb.ns, &p.b, &["sync", &p.a_fp]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        t.synced = out.status.success() && text.contains("1 downloaded");
        if !t.synced {
            t.why = format!("sync: {text} {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    (t, servers)
}

/// Streams the relay (its log at `log`) opened between the two nodes of a
/// pair and has not ended yet (opened and ended are logged in pairs).
fn pair_streams_open(log: &Path, pairs: &[Pair]) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let between = |l: &str, p: &Pair| {
        let (a, b) = (&p.a_fp, &p.b_fp);
        (l.contains(&format!("peer={a}")) && l.contains(&format!("target={b}")))
            || (l.contains(&format!("peer={b}")) && l.contains(&format!("target={a}")))
    };
    let count = |what: &str| {
        text.lines()
            .filter(|l| l.contains(what) && pairs.iter().any(|p| between(l, p)))
            .count()
    };
    count("relay: stream opened").saturating_sub(count("relay: stream ended"))
}

/// True once the server in `ns` answers on its metrics address.
fn metrics_up(lab: &NatLab, ns: &str) -> bool {
    let url = format!("http://{METRICS}/metrics");
    lab.try_sh(ns, &["curl", "-sf", "--max-time", "2", &url])
        .status
        .success()
}

/// Runs [`TRIES`] tries, [`PAIRS`] at a time, in a lab with two homes of
/// `kind`; returns the tries and, per round, the streams between a pair's
/// two nodes the relay still carried 15 s after every pair's punch ended
/// (servers still running).
fn run_tries(tag: &str, kind: NatKind, sync: bool) -> Option<(Vec<Try>, Vec<f64>)> {
    for (tool, pkg) in [("nft", "nftables"), ("curl", "curl")] {
        if !require(tag, tool, pkg) {
            return None;
        }
    }
    // One home per node: no two nodes share a router (hairpinning is not
    // what is tested), so every relayed stream has a reason to end.
    let mut builder = NatLab::builder(tag).public_hosts(1);
    for _ in 0..2 * PAIRS {
        builder = builder.home(kind, 1);
    }
    let lab = builder.build()?;
    // The lab's routers answer an unsolicited SYN to their WAN address with
    // a reset (their own stack: nothing listens). Most home routers drop it
    // instead ("stealth"); that is what lets a SYN that arrives before the
    // other side's own SYN wait for its retransmission (docs/nat.md: with
    // resets, only tries that cross within a round trip get through).
    // NAT_RELAY_RESET_ROUTERS=1 keeps the lab's resets (for the figure).
    let stealth = std::env::var_os("NAT_RELAY_RESET_ROUTERS").is_none();
    for home in lab.homes.iter().filter(|_| stealth) {
        lab.sh(
            &home.router,
            &[
                "nft",
                "add chain inet filter input { type filter hook input priority 0; policy accept; }",
            ],
        );
        lab.sh(
            &home.router,
            &[
                "nft",
                "add rule inet filter input iifname wan0 meta l4proto tcp ct state new drop",
            ],
        );
    }
    let root = lab.path("accounts");
    let relay_dir = root.join("relay");
    let relay_fp = init_account(&relay_dir, "Relay");
    let pub0 = lab.public[0].clone();
    let relay = format!("{relay_fp}@{}", pub0.addr(PORT));
    let advertise = pub0.addr(PORT).to_string();
    let _relay = server(
        &pub0.ns,
        &relay_dir,
        &[
            "--listen",
            "0.0.0.0:7000",
            "--advertise",
            &advertise,
            "--relay",
        ],
        "server.log",
    );
    assert!(
        until(Duration::from_secs(30), || metrics_up(&lab, &pub0.ns)),
        "the relay did not start: {}",
        std::fs::read_to_string(relay_dir.join("server.log")).unwrap_or_default()
    );
    let pairs: Vec<Pair> = (0..PAIRS).map(|i| pair(&root, i)).collect();
    let tries = Mutex::new(Vec::new());
    let mut gauges = Vec::new();
    assert_eq!(TRIES % PAIRS, 0, "full rounds only");
    for round in 0..TRIES / PAIRS {
        // Every pair's try ends at the first barrier with its servers still
        // running; the relay's load is read; the second barrier stops them.
        let barrier = std::sync::Barrier::new(PAIRS + 1);
        std::thread::scope(|s| {
            for (i, p) in pairs.iter().enumerate() {
                let (lab, relay, tries, barrier) = (&lab, &relay, &tries, &barrier);
                s.spawn(move || {
                    share(p, round);
                    let (ha, hb) = (&lab.homes[2 * i].hosts[0], &lab.homes[2 * i + 1].hosts[0]);
                    let (t, servers) = one_try(lab, p, ha, hb, relay, round, sync);
                    tries.lock().expect("tries").push(t);
                    barrier.wait();
                    barrier.wait();
                    drop(servers);
                });
            }
            barrier.wait();
            // (Once, one relayed stream per pair stayed open: the
            // reachability check asked relayed peers for dial-backs through
            // the relay and pooled that connection. It asks only directly
            // reachable peers now.)
            // The pairs' own streams, that is: nodes of different pairs
            // may still talk through the relay (they never punched to
            // each other), and their pooled connections live on.
            let log = relay_dir.join("server.log");
            let open = || pair_streams_open(&log, &pairs) as f64;
            until(Duration::from_secs(15), || open() == 0.0);
            gauges.push(open());
            let all = metric(&lab, &pub0.ns, "mau_relay_streams");
            eprintln!("round {round}: relay streams in all (pairs' and others') {all}");
            barrier.wait();
        });
    }
    // NAT_RELAY_LOGS=DIR keeps every server's log for a post-mortem.
    if let Some(keep) = std::env::var_os("NAT_RELAY_LOGS") {
        let _ = Command::new("cp").arg("-r").arg(&root).arg(keep).status();
    }
    Some((tries.into_inner().expect("tries"), gauges))
}

/// Behind two symmetric NATs: found and synced through the relay in every
/// try; every hole punch fails cleanly and the peers stay relayed.
#[test]
fn symmetric_nats_sync_through_the_relay_and_punches_fail_cleanly() {
    let Some((tries, _)) = run_tries("nrsym", NatKind::Symmetric, true) else {
        return;
    };
    let found = tries.iter().filter(|t| t.found_relayed).count();
    let synced = tries.iter().filter(|t| t.synced).count();
    let direct = tries.iter().filter(|t| t.punch_direct).count();
    let relayed = tries.iter().filter(|t| t.punch_relayed).count();
    eprintln!("symmetric: found {found}/{TRIES}, synced {synced}/{TRIES}, punches direct {direct}, relayed {relayed}");
    let failed: Vec<_> = tries.iter().filter(|t| !t.synced).map(|t| &t.why).collect();
    assert_eq!(synced, TRIES, "failed tries: {failed:?}");
    assert_eq!(found, TRIES);
    assert_eq!(direct, 0, "a punch through a symmetric NAT cannot succeed");
    assert_eq!(relayed, TRIES, "every punch ended, relayed");
}

/// Behind two endpoint-independent NATs: the hole punch succeeds in at
/// least 19 of 20 tries, and the relay is released.
#[test]
fn endpoint_independent_nats_punch_through_and_release_the_relay() {
    let Some((tries, gauges)) = run_tries("nreim", NatKind::EndpointIndependent, false) else {
        return;
    };
    let found = tries.iter().filter(|t| t.found_relayed).count();
    let direct = tries.iter().filter(|t| t.punch_direct).count();
    eprintln!("endpoint-independent: found {found}/{TRIES}, punches direct {direct}/{TRIES}; pair streams through the relay after each round {gauges:?}");
    let failed: Vec<_> = tries.iter().filter(|t| !t.punch_direct).collect();
    assert!(direct >= 19, "direct in {direct}/{TRIES}: {failed:?}");
    assert!(
        gauges.iter().all(|g| *g == 0.0),
        "pair streams left on the relay: {gauges:?}"
    );
}
