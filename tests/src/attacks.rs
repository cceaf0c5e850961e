//! Attacks on the node driver (issue 15), made from outside the node the way
//! anyone on the network can: throwaway identities (keys are free) whose
//! certificates claim someone else's listening address, and peers that
//! answer find_peer with made-up peers.
//!
//! - [`probe_flood`]: ~70 pings a second, each from a fresh identity
//!   claiming a tarpit (a listener that accepts and never answers) as its
//!   address. The node's honest peers must stay in its table and its
//!   lookups must keep succeeding.
//! - [`reflection_through_claimed_addresses`]: the same flood, the claims
//!   naming third parties (one that closes at once, one that holds, one
//!   with 10 ports). Connections the node opens to each third-party IP are
//!   bounded per second.
//! - [`reflection_through_find_peer_answers`]: a peer in the table answers
//!   every find_peer with 20 fakes at one victim address. Connections to
//!   the victim are bounded per second, however many lookups run.
//! - [`hostile_find_peer_answerer`]: the same peer, its fakes at tarpits
//!   (each costs a full timeout). A lookup for an absent fingerprint still
//!   ends in bounded time, and honest lookups succeed.
//!
//! Every party has its own loopback address, bound explicitly: the
//! attacker and its own listeners [`ATTACKER`] (127.0.0.2), the attacked
//! node [`NODE_HOST`] (127.0.0.3), third parties 127.0.0.5 and up, honest
//! nodes 127.0.0.1. The attackers and the listeners they point the node at
//! are OS threads with blocking sockets, outside the node's executor. The
//! attacked node runs with the default limits and timeouts: its driver's
//! own budgets are what is under test. Each scenario is bounded in count and
//! time, asserts counts with generous limits and prints its figures
//! (`--nocapture`), which `docs/hardening.md` records.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mau_identity::{KeyVersion, TlsIdentity};
use mau_net::runtime::{timeout, Runtime};
use mau_net::{NodeConfig, RunningNode};
use mau_proto::wire::{
    decode_find_peer, encode_find_peer, find_peer_path, max_find_peer_body, PeerRecord,
    FIND_PEER_PREFIX, PING_PATH,
};
use mau_proto::{Contact, Fingerprint, PeerAddress};

use crate::hardening::{
    connect_from, http_answer, median, my_turn, read_statuses, tls_over, ATTACKER,
};

/// The attacked node's host.
pub const NODE_HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Pings a second in a flood of fresh identities (the figure).
const FLOOD_RATE: f64 = 70.0;
/// Connections a node may open to one IP nobody there has proven to be a
/// peer: the README's bound (2 a second) and a burst.
const PER_IP_RATE: f64 = 2.0;
const PER_IP_BURST: f64 = 10.0;
/// Share of honest lookups (and find_peer answers) that must succeed under
/// attack.
const HONEST_SUCCESS: f64 = 0.9;
/// A lookup for an absent fingerprint with a hostile answerer in the table
/// must end within this (the issue expects 5 s on loopback; generous here).
const HOSTILE_LOOKUP_BOUND: Duration = Duration::from_secs(10);
/// The longest an honest lookup is waited for before it counts as failed.
const LOOKUP_PATIENCE: Duration = Duration::from_secs(12);
/// The most connections a listener here holds at once.
const MAX_HELD: usize = 4096;
/// A listener thread stops by itself after this even if never told to.
const LISTENER_LIFETIME: Duration = Duration::from_secs(180);

/// The attacked node: on [`NODE_HOST`], default limits and timeouts.
pub fn target_config(seed: u64) -> NodeConfig {
    let mut c = NodeConfig::new(SocketAddr::from((NODE_HOST, 0)));
    c.seed = Some(seed);
    c
}

/// The attacked node (test node `first`) and `n` honest nodes on 127.0.0.1
/// that joined through it, once all of them are in its table. The honest
/// nodes are quiet once joined (no repeated join for want of K peers): a
/// peer that keeps calling the node would stay in its table by being heard,
/// whatever became of the node's own requests to it.
async fn target_with_honest_peers<R: Runtime>(
    rt: &R,
    first: u32,
    n: u32,
) -> (RunningNode<R>, Vec<RunningNode<R>>) {
    let node = crate::start(rt, first, target_config(u64::from(first)), vec![]).await;
    let mut honest = Vec::new();
    for i in 1..=n {
        let id = first + i;
        let mut cfg = crate::config(u64::from(id));
        cfg.protocol.rejoin_interval = Duration::from_secs(3600);
        honest.push(crate::start(rt, id, cfg, vec![node.contact()]).await);
    }
    let fps: Vec<Fingerprint> = honest.iter().map(|h| h.fingerprint()).collect();
    crate::eventually(
        rt,
        "honest peers joined and in the node's table",
        Duration::from_secs(30),
        || {
            let table = node.snapshot();
            honest.iter().all(|h| !h.is_joining())
                && fps
                    .iter()
                    .all(|f| table.peers.iter().any(|p| p.fingerprint == *f))
        },
    )
    .await;
    (node, honest)
}

/// Waits (bounded) until `peer` is in `node`'s table.
async fn in_table<R: Runtime>(rt: &R, node: &RunningNode<R>, peer: Fingerprint, what: &str) {
    crate::eventually(rt, what, Duration::from_secs(20), || {
        node.snapshot().peers.iter().any(|p| p.fingerprint == peer)
    })
    .await;
}

/// `n` throwaway identities, the `i`-th claiming `claims[i % len]` as its
/// listening address: an Ed25519 seed each, no OpenPGP key. `tag` keeps
/// each scenario's identities apart from the others and from
/// [`crate::identity`].
fn throwaway_identities(tag: u8, n: usize, claims: &[SocketAddr]) -> Vec<TlsIdentity> {
    (0..n)
        .map(|i| {
            let mut seed = [tag; 32];
            seed[..4].copy_from_slice(&(i as u32).to_be_bytes());
            let claim = claims[i % claims.len()].to_string();
            TlsIdentity::from_ed25519_seed(&seed, 1_700_000_000, KeyVersion::V4, Some(&claim))
                .unwrap_or_else(|e| panic!("throwaway identity {i}: {e}"))
        })
        .collect()
}

/// What a flood of pings did.
#[derive(Debug)]
struct Flood {
    sent: usize,
    answered: usize,
    took: Duration,
}

/// Threads a flood of pings is sent from.
const FLOOD_THREADS: usize = 8;

/// Each identity pings the node at `to` once, over its own mutual-TLS
/// connection from [`ATTACKER`], `rate` a second (8 threads); then closes.
fn ping_flood(
    to: SocketAddr,
    server: Fingerprint,
    identities: Vec<TlsIdentity>,
    rate: f64,
) -> JoinHandle<Flood> {
    std::thread::spawn(move || {
        let identities = Arc::new(identities);
        let started = Instant::now();
        let workers: Vec<JoinHandle<(usize, usize)>> = (0..FLOOD_THREADS)
            .map(|w| {
                let identities = identities.clone();
                std::thread::spawn(move || {
                    let (mut sent, mut answered) = (0, 0);
                    for i in (w..identities.len()).step_by(FLOOD_THREADS) {
                        let due = started + Duration::from_secs_f64(i as f64 / rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                        sent += 1;
                        let pinged = connect_from(ATTACKER, to, None)
                            .and_then(|tcp| tls_over(tcp, &identities[i], server))
                            .and_then(|mut t| {
                                t.write_all(
                                    format!("GET {PING_PATH} HTTP/1.1\r\nhost: x\r\n\r\n")
                                        .as_bytes(),
                                )?;
                                Ok(read_statuses(&mut t, 1))
                            });
                        if matches!(pinged.as_deref(), Ok([200])) {
                            answered += 1;
                        }
                    }
                    (sent, answered)
                })
            })
            .collect();
        let (sent, answered) = workers
            .into_iter()
            .map(|w| w.join().unwrap_or((0, 0)))
            .fold((0, 0), |t, x| (t.0 + x.0, t.1 + x.1));
        Flood {
            sent,
            answered,
            took: started.elapsed(),
        }
    })
}

/// The flood sent at its rate: otherwise the attack did not happen as
/// planned and the scenario proves nothing.
fn assert_kept_pace(flood: &Flood, planned: Duration) {
    assert!(
        flood.took <= planned.mul_f64(1.25) + Duration::from_secs(1),
        "the attacker could not keep its pace: {flood:?} (planned {planned:?})"
    );
}

/// What a listener does with a connection it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conduct {
    /// Closes it at once.
    Close,
    /// Holds it open without a byte: a tarpit (bounded by [`MAX_HELD`]).
    Hold,
}

/// Listeners the attacks point the node at, served by one thread that counts
/// every connection accepted (which listener, when). Stops when dropped.
pub(crate) struct Bystanders {
    addrs: Vec<SocketAddr>,
    seen: Arc<Mutex<Vec<(SocketAddr, Instant)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Bystanders {
    /// One listener per entry, on that IP and a free port.
    pub(crate) fn start(spec: &[(IpAddr, Conduct)]) -> Self {
        let listeners: Vec<(TcpListener, SocketAddr, Conduct)> = spec
            .iter()
            .map(|(ip, conduct)| {
                let l = TcpListener::bind((*ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
                l.set_nonblocking(true).expect("non-blocking");
                let addr = l.local_addr().expect("address");
                (l, addr, *conduct)
            })
            .collect();
        let addrs = listeners.iter().map(|l| l.1).collect();
        let seen: Arc<Mutex<Vec<(SocketAddr, Instant)>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let born = Instant::now();
            let mut held: VecDeque<TcpStream> = VecDeque::new();
            while !stop2.load(Ordering::Acquire) && born.elapsed() < LISTENER_LIFETIME {
                for (l, addr, conduct) in &listeners {
                    while let Ok((s, _)) = l.accept() {
                        seen2
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((*addr, Instant::now()));
                        if *conduct == Conduct::Hold {
                            held.push_back(s);
                            if held.len() > MAX_HELD {
                                held.pop_front();
                            }
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Bystanders {
            addrs,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// The `i`-th listener's address.
    pub(crate) fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// Connections accepted on `ip` (any of its listeners) between `from`
    /// and `to`.
    pub(crate) fn accepted_on(&self, ip: IpAddr, from: Instant, to: Instant) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(a, at)| a.ip() == ip && *at >= from && *at <= to)
            .count()
    }

    /// Connections accepted in all.
    pub(crate) fn accepted(&self) -> usize {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Bystanders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The `i`-th (1..=255) made-up fingerprint next to `target` (its last byte
/// changed): closer to it than any real peer, so a lookup asks it first.
fn near(target: &Fingerprint, i: u8) -> Fingerprint {
    let mut bytes = target.as_bytes().to_vec();
    if let Some(last) = bytes.last_mut() {
        *last ^= i;
    }
    Fingerprint::from_bytes(&bytes).expect("a fingerprint of the same length")
}

/// What a hostile peer answers a find_peer for a target with.
type Fakes = dyn Fn(&Fingerprint) -> Vec<Contact<PeerAddress>> + Send + Sync;

/// A hostile peer's answer to a request path: status, headers, body.
pub(crate) type Responder =
    dyn Fn(&str) -> (u16, Vec<(&'static str, String)>, Vec<u8>) + Send + Sync;

/// A peer with a real identity, on [`ATTACKER`], that answers pings
/// (so it enters tables) and answers every find_peer with `fakes(target)`.
/// A TLS server in OS threads, one request per connection, at most 64
/// connections served at once. Stops when dropped.
pub(crate) struct HostileAnswerer {
    contact: Contact<PeerAddress>,
    asked: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Starts a hostile peer (identity `n`) answering every find_peer with 20
/// made-up peers next to the target, the `i`-th (1..=20) at `address(i)`,
/// and waits until `node` has it in its table.
async fn hostile_in_table<R: Runtime>(
    rt: &R,
    node: &RunningNode<R>,
    n: u32,
    address: impl Fn(u8) -> PeerAddress + Send + Sync + 'static,
) -> HostileAnswerer {
    let hostile = HostileAnswerer::start(
        n,
        Box::new(move |target| {
            (1..=20u8)
                .map(|i| Contact::new(near(target, i), address(i)))
                .collect()
        }),
    );
    node.probe(hostile.contact());
    in_table(
        rt,
        node,
        hostile.contact().fingerprint,
        "hostile peer in the table",
    )
    .await;
    hostile
}

impl HostileAnswerer {
    pub(crate) fn start(n: u32, fakes: Box<Fakes>) -> Self {
        let asked = Arc::new(AtomicUsize::new(0));
        let counted = asked.clone();
        let respond = move |path: &str| {
            let json = vec![("content-type", "application/json".to_string())];
            if path == PING_PATH {
                (200, json, Vec::new())
            } else if let Some(target) = path
                .strip_prefix(FIND_PEER_PREFIX)
                .and_then(|f| Fingerprint::parse(f).ok())
            {
                counted.fetch_add(1, Ordering::AcqRel);
                let records: Vec<PeerRecord> =
                    fakes(&target).into_iter().map(PeerRecord::from).collect();
                (200, json, encode_find_peer(&records))
            } else {
                (404, json, Vec::new())
            }
        };
        Self::answering(ATTACKER, n, asked, Box::new(respond))
    }

    /// A peer with identity `n` on `ip` answering every request with
    /// `respond(path)`; `asked` is what [`Self::asked`] reports.
    pub(crate) fn answering(
        ip: IpAddr,
        n: u32,
        asked: Arc<AtomicUsize>,
        respond: Box<Responder>,
    ) -> Self {
        let me = crate::identity(n)(None).expect("identity");
        let server_tls = mau_identity::server_config(&me).expect("server config");
        let listener = TcpListener::bind((ip, 0)).expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        let contact = Contact::new(me.fingerprint(), PeerAddress::from(addr));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let respond: Arc<Responder> = Arc::from(respond);
        let thread = std::thread::spawn(move || {
            let born = Instant::now();
            let live = Arc::new(AtomicUsize::new(0));
            while !stop2.load(Ordering::Acquire) && born.elapsed() < LISTENER_LIFETIME {
                let Ok((s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                if live.load(Ordering::Acquire) >= 64 {
                    continue;
                }
                live.fetch_add(1, Ordering::AcqRel);
                let (tls, respond, live) = (server_tls.clone(), respond.clone(), live.clone());
                std::thread::spawn(move || {
                    let _ = answer_once(s, tls, &*respond);
                    live.fetch_sub(1, Ordering::AcqRel);
                });
            }
        });
        HostileAnswerer {
            contact,
            asked,
            stop,
            thread: Some(thread),
        }
    }

    /// Its contact (fingerprint and address).
    pub(crate) fn contact(&self) -> Contact<PeerAddress> {
        self.contact.clone()
    }

    /// find_peer requests it answered.
    pub(crate) fn asked(&self) -> usize {
        self.asked.load(Ordering::Acquire)
    }
}

impl Drop for HostileAnswerer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Mutual TLS as the server, one request, one answer, closed.
fn answer_once(
    s: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    respond: &Responder,
) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let conn = rustls::ServerConnection::new(tls).map_err(std::io::Error::other)?;
    let mut t = rustls::StreamOwned::new(conn, s);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = t.read(&mut buf)?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split_whitespace().nth(1).unwrap_or("");
    let (status, headers, body) = respond(path);
    t.write_all(&http_answer(status, &headers, &body))?;
    t.flush()?;
    t.conn.send_close_notify();
    let _ = t.conn.complete_io(&mut t.sock);
    Ok(())
}

/// What the honest side saw while the attack ran.
#[derive(Debug, Default)]
struct Honesty {
    /// The node's lookups for its honest peers: found, run.
    lookups: (usize, usize),
    /// find_peer answers of the node to an honest peer naming another
    /// honest peer: right, asked.
    answers: (usize, usize),
    /// Honest peers seen missing from the node's table, and when (since the
    /// watch began).
    evicted: BTreeMap<Fingerprint, Duration>,
}

impl Honesty {
    fn share(pair: (usize, usize)) -> f64 {
        pair.0 as f64 / pair.1.max(1) as f64
    }
}

/// Until `done()`, round after round (at least one): `node` looks up each
/// of its `honest` peers (at once), and `asker`, another honest node, asks
/// `node` find_peer for one of them and expects it named; meanwhile the
/// node's table is watched every 100 ms for a missing honest peer.
async fn honest_work<R: Runtime>(
    rt: &R,
    node: &RunningNode<R>,
    honest: &[RunningNode<R>],
    asker: &RunningNode<R>,
    done: impl Fn() -> bool,
) -> Honesty {
    let fps: Vec<Fingerprint> = honest.iter().map(|h| h.fingerprint()).collect();
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    let rounds = async {
        let mut tally = Honesty::default();
        let mut i = 0;
        loop {
            let lookups = fps.iter().map(|target| async move {
                let o = timeout(rt, LOOKUP_PATIENCE, node.lookup(*target)).await;
                matches!(&o, Ok(Ok(o)) if o.found.as_ref().map(|c| c.fingerprint) == Some(*target))
            });
            for found in crate::join_all(lookups.collect()).await {
                tally.lookups.1 += 1;
                tally.lookups.0 += usize::from(found);
            }
            let target = fps[i % fps.len()];
            let answer = asker
                .client()
                .get(
                    &node.contact(),
                    &find_peer_path(&target),
                    max_find_peer_body(20),
                )
                .await;
            tally.answers.1 += 1;
            if answer
                .ok()
                .and_then(|body| decode_find_peer(&body, 20).ok())
                .is_some_and(|records| records.iter().any(|r| r.fingerprint == target))
            {
                tally.answers.0 += 1;
            }
            i += 1;
            if done() {
                break;
            }
            rt.sleep(Duration::from_millis(250)).await;
        }
        stop.store(true, Ordering::Release);
        tally
    };
    let watch = async {
        let mut evicted = BTreeMap::new();
        while !stop.load(Ordering::Acquire) {
            let table = node.snapshot();
            for f in &fps {
                if !table.peers.iter().any(|p| p.fingerprint == *f) {
                    evicted.entry(*f).or_insert_with(|| started.elapsed());
                }
            }
            rt.sleep(Duration::from_millis(100)).await;
        }
        evicted
    };
    let (mut tally, evicted) = futures_lite::future::zip(rounds, watch).await;
    tally.evicted = evicted;
    tally
}

/// How long the probe flood lasts.
const PROBE_FLOOD: Duration = Duration::from_secs(20);
/// How long the honest side is watched after it.
const AFTER_FLOOD: Duration = Duration::from_secs(10);

/// A: for 20 s an attacker pings the node ~70 times a second, each time as
/// a fresh identity claiming its own tarpit (127.0.0.2, accepts and holds)
/// as listening address: the node probes every claim and each probe costs a
/// full timeout. Three quiet honest peers are in the node's table; all along
/// the node looks each of them up, and a fourth honest node asks it
/// find_peer for them. Asserts:
/// no honest peer leaves the table during the flood or the 10 s after it,
/// and ≥ 90% of honest lookups and find_peer answers succeed, during and
/// after.
pub async fn probe_flood<R: Runtime>(rt: R) {
    let _turn = my_turn(&rt).await;
    let (node, honest) = target_with_honest_peers(&rt, 1000, 3).await;
    let asker = crate::start(&rt, 1004, crate::config(1004), vec![node.contact()]).await;
    let tarpit = Bystanders::start(&[(ATTACKER, Conduct::Hold)]);
    let made = Instant::now();
    let identities = throwaway_identities(
        0xa1,
        (FLOOD_RATE * PROBE_FLOOD.as_secs_f64()) as usize,
        &[tarpit.addr(0)],
    );
    let made = made.elapsed();
    let flood = ping_flood(
        node.local_addr(),
        node.fingerprint(),
        identities,
        FLOOD_RATE,
    );
    let during = honest_work(&rt, &node, &honest, &asker, || flood.is_finished()).await;
    let flood = flood.join().expect("flood thread");
    let ended = Instant::now();
    let after = honest_work(&rt, &node, &honest, &asker, || {
        ended.elapsed() >= AFTER_FLOOD
    })
    .await;
    let probes = tarpit.accepted();
    println!(
        "attack probe flood: {} pings sent in {:.1?} ({:.0}/s; {} identities made in {made:.1?}), {} answered; \
         {probes} probes reached the tarpit; honest peers missing from the table during: {:?}, after: {:?}; \
         lookups found during {}/{}, after {}/{}; find_peer naming the peer during {}/{}, after {}/{}",
        flood.sent,
        flood.took,
        flood.sent as f64 / flood.took.as_secs_f64().max(1e-3),
        flood.sent,
        flood.answered,
        during.evicted,
        after.evicted,
        during.lookups.0,
        during.lookups.1,
        after.lookups.0,
        after.lookups.1,
        during.answers.0,
        during.answers.1,
        after.answers.0,
        after.answers.1,
    );
    assert_kept_pace(&flood, PROBE_FLOOD);
    assert!(
        during.evicted.is_empty() && after.evicted.is_empty(),
        "honest peers left the node's table: during {:?}, after {:?}",
        during.evicted,
        after.evicted
    );
    for (what, pair) in [
        ("lookups during the flood", during.lookups),
        ("lookups after the flood", after.lookups),
        ("find_peer answers during the flood", during.answers),
        ("find_peer answers after the flood", after.answers),
    ] {
        assert!(
            Honesty::share(pair) >= HONEST_SUCCESS,
            "honest {what}: only {}/{} succeeded",
            pair.0,
            pair.1
        );
    }
}

/// How long the reflection flood lasts.
const REFLECTION_FLOOD: Duration = Duration::from_secs(15);
/// Connections still arriving after an attack are counted this long.
const TAIL: Duration = Duration::from_secs(3);

/// The most connections to one IP allowed over `period`.
fn per_ip_allowance(period: Duration) -> f64 {
    PER_IP_RATE * period.as_secs_f64() + PER_IP_BURST
}

/// B: for 15 s an attacker pings the node ~70 times a second as fresh
/// identities claiming third parties' addresses, a third each: 127.0.0.5
/// (closes at once), 127.0.0.6 (holds), 127.0.0.7 (closes, 10 ports in
/// turn). Asserts: the connections each third-party IP receives from then
/// until 3 s after the flood are at most 2 a second, plus a burst of 10.
pub async fn reflection_through_claimed_addresses<R: Runtime>(rt: R) {
    let _turn = my_turn(&rt).await;
    let node = crate::start(&rt, 1100, target_config(1100), vec![]).await;
    let closes = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
    let holds = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
    let ports = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 7));
    let mut spec = vec![(closes, Conduct::Close), (holds, Conduct::Hold)];
    spec.extend((0..10).map(|_| (ports, Conduct::Close)));
    let third = Bystanders::start(&spec);
    // Claims in turn: the closing one, the holding one, the next of 10 ports.
    let claims: Vec<SocketAddr> = (0..30)
        .map(|i| match i % 3 {
            0 => third.addr(0),
            1 => third.addr(1),
            _ => third.addr(2 + (i / 3) % 10),
        })
        .collect();
    let identities = throwaway_identities(
        0xb1,
        (FLOOD_RATE * REFLECTION_FLOOD.as_secs_f64()) as usize,
        &claims,
    );
    let started = Instant::now();
    let flood = ping_flood(
        node.local_addr(),
        node.fingerprint(),
        identities,
        FLOOD_RATE,
    );
    while !flood.is_finished() {
        rt.sleep(Duration::from_millis(100)).await;
    }
    let flood = flood.join().expect("flood thread");
    rt.sleep(TAIL).await;
    let period = started.elapsed();
    let allowed = per_ip_allowance(period);
    let counts: Vec<(IpAddr, usize)> = [closes, holds, ports]
        .into_iter()
        .map(|ip| (ip, third.accepted_on(ip, started, Instant::now())))
        .collect();
    println!(
        "attack reflection (claimed addresses): {} pings in {:.1?}, {} answered; connections over {period:.1?} \
         (allowed {allowed:.0} per IP): {}",
        flood.sent,
        flood.took,
        flood.answered,
        counts
            .iter()
            .map(|(ip, n)| format!("{ip} {n} ({:.1}/s)", *n as f64 / period.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert_kept_pace(&flood, REFLECTION_FLOOD);
    for (ip, n) in counts {
        assert!(
            n as f64 <= allowed,
            "the node opened {n} connections to {ip} in {period:?}: more than {PER_IP_RATE}/s"
        );
    }
}

/// How long lookups run against the reflecting answerer.
const REFLECTION_LOOKUPS: Duration = Duration::from_secs(12);

/// B: a peer in the node's table answers every find_peer with 20 fakes at
/// one victim address (127.0.0.8, closes at once). The node looks up absent
/// fingerprints for 12 s, one every 250 ms at most. Asserts: the victim
/// receives at most 2 connections a second (plus a burst of 10) over the
/// lookups and 3 s after, however many lookups ran.
pub async fn reflection_through_find_peer_answers<R: Runtime>(rt: R) {
    let _turn = my_turn(&rt).await;
    let (node, _honest) = target_with_honest_peers(&rt, 1200, 3).await;
    let victim_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 8));
    let victim = Bystanders::start(&[(victim_ip, Conduct::Close)]);
    let at = PeerAddress::from(victim.addr(0));
    let hostile = hostile_in_table(&rt, &node, 1210, move |_| at.clone()).await;
    let started = Instant::now();
    let mut lookups = 0u32;
    while started.elapsed() < REFLECTION_LOOKUPS {
        let absent = crate::fingerprint(12_000 + lookups);
        let _ = timeout(&rt, LOOKUP_PATIENCE, node.lookup(absent)).await;
        lookups += 1;
        rt.sleep(Duration::from_millis(250)).await;
    }
    let looked = started.elapsed();
    rt.sleep(TAIL).await;
    let period = started.elapsed();
    let allowed = per_ip_allowance(period);
    let hits = victim.accepted_on(victim_ip, started, Instant::now());
    println!(
        "attack reflection (find_peer answers): {lookups} lookups in {looked:.1?}, the hostile peer asked {} times; \
         {hits} victim connections over {period:.1?} ({:.1} per lookup, {:.1}/s; allowed {allowed:.0})",
        hostile.asked(),
        hits as f64 / f64::from(lookups.max(1)),
        hits as f64 / period.as_secs_f64(),
    );
    assert!(hostile.asked() > 0, "the hostile peer was never asked");
    assert!(
        hits as f64 <= allowed,
        "{hits} connections to the victim in {period:?} ({lookups} lookups): more than {PER_IP_RATE}/s"
    );
}

/// Lookups for absent fingerprints run at once against the hostile answerer.
const ABSENT_LOOKUPS: u32 = 5;
/// How long such a lookup is waited for (beyond the bound, to measure it).
const ABSENT_PATIENCE: Duration = Duration::from_secs(20);
/// Honest lookups run meanwhile.
const HONEST_LOOKUPS: usize = 10;

/// C: a peer in the node's table answers every find_peer with 20 fakes next
/// to the target, each at its own tarpit (127.0.0.40 to .59: accepts, never
/// answers, so each costs a full timeout). The node runs 5 lookups for
/// absent fingerprints at once, and 10 lookups for its honest peers one
/// after another meanwhile. Asserts: every absent lookup ends (not found)
/// within 10 s; ≥ 90% of the honest lookups find their peer.
pub async fn hostile_find_peer_answerer<R: Runtime>(rt: R) {
    let _turn = my_turn(&rt).await;
    let (node, honest) = target_with_honest_peers(&rt, 1300, 3).await;
    let spec: Vec<(IpAddr, Conduct)> = (0..20)
        .map(|i| (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 40 + i)), Conduct::Hold))
        .collect();
    let tarpits = Bystanders::start(&spec);
    let at: Vec<PeerAddress> = (0..20)
        .map(|i| PeerAddress::from(tarpits.addr(i)))
        .collect();
    let hostile = hostile_in_table(&rt, &node, 1310, move |i| at[usize::from(i - 1)].clone()).await;
    let absent = (0..ABSENT_LOOKUPS).map(|k| {
        let (rt, node) = (&rt, &node);
        async move {
            let start = Instant::now();
            let outcome = timeout(
                rt,
                ABSENT_PATIENCE,
                node.lookup(crate::fingerprint(13_000 + k)),
            )
            .await;
            let found = matches!(&outcome, Ok(Ok(o)) if o.found.is_some());
            (start.elapsed(), outcome.is_ok(), found)
        }
    });
    let fps: Vec<Fingerprint> = honest.iter().map(|h| h.fingerprint()).collect();
    let honest_lookups = async {
        let mut found = 0;
        for i in 0..HONEST_LOOKUPS {
            let target = fps[i % fps.len()];
            let o = timeout(&rt, LOOKUP_PATIENCE, node.lookup(target)).await;
            if matches!(&o, Ok(Ok(o)) if o.found.as_ref().map(|c| c.fingerprint) == Some(target)) {
                found += 1;
            }
            rt.sleep(Duration::from_millis(200)).await;
        }
        found
    };
    let (absent, found) =
        futures_lite::future::zip(crate::join_all(absent.collect()), honest_lookups).await;
    let mut times: Vec<Duration> = absent.iter().map(|a| a.0).collect();
    let ended = absent.iter().filter(|a| a.1).count();
    let slowest = times.iter().max().copied().unwrap_or_default();
    println!(
        "attack hostile answerer: {ABSENT_LOOKUPS} absent lookups at once: median {:.1?}, slowest {slowest:.1?}, \
         {ended} ended within {ABSENT_PATIENCE:?}; the hostile peer asked {} times, {} tarpit connections; \
         honest lookups found {found}/{HONEST_LOOKUPS}",
        median(&mut times),
        hostile.asked(),
        tarpits.accepted(),
    );
    assert!(hostile.asked() > 0, "the hostile peer was never asked");
    assert!(
        absent.iter().all(|a| !a.2),
        "an absent fingerprint was found: {absent:?}"
    );
    assert!(
        slowest <= HOSTILE_LOOKUP_BOUND,
        "a lookup for an absent fingerprint took {slowest:?} (bound {HOSTILE_LOOKUP_BOUND:?}): {absent:?}"
    );
    assert!(
        found as f64 >= HONEST_SUCCESS * HONEST_LOOKUPS as f64,
        "honest lookups found only {found}/{HONEST_LOOKUPS}"
    );
}
