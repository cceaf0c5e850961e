//! Whole-network scenarios: N real nodes ([`mau_net::RunningNode`] with
//! real TLS identities) join through bootstrap peers and run lookups while
//! faults strike, then invariants are checked.
//!
//! A run is a function of its [`Scenario`] alone (seed included): a failed
//! one is replayed by [`Scenario::replay_command`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mau_identity::{KeyVersion, TlsIdentity};
use mau_net::{NodeConfig, RunningNode, Runtime};
use mau_proto::{Contact, Fingerprint, PeerAddress};

use crate::disk::Disk;
use crate::friends::{Fixture, Friends, Placement};
use crate::hostile;
use crate::net::mix;
use crate::sim::lock;
use crate::{LinkConfig, Sim, SimError, SimRuntime, Trace};

/// Which faults strike during the lookups.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// A third of the nodes is cut off from the rest for 30 s, then healed.
    pub partition: bool,
    /// One node's process crashes, and restarts 15 s later from its saved table.
    pub crash: bool,
    /// With `crash`: once the crashed node restarted, its disk is full for
    /// 30 s: a disk of its own (a tmpfs, with root) that runs out of space
    /// while a save writes its temporary file, or else (without root) a directory that
    /// cannot be created. Its saved table must stay intact and readable,
    /// and it must keep running and save again once there is room. With
    /// `syncs`, the friend B's disk fills up too, in the middle of a
    /// download ([`crate::friends`]).
    pub disk: bool,
    /// One node in 20 gets slow links (400 ms, 50 kB/s).
    pub slow: bool,
    /// Probability that a SYN is lost or a connection reset, on every link.
    pub loss: f64,
    /// Churn: a tenth of the nodes leave (their processes stop, for good)
    /// 25 s into the window, and as many new ones join through the
    /// bootstrap peers 45 s in.
    pub churn: bool,
    /// A garbage node joins as the window opens: a real identity whose
    /// server answers every find_peer with garbage ([`crate::hostile`]).
    pub garbage: bool,
    /// Once the other faults ended, a request storm on one node
    /// ([`crate::hostile`]) while lookups for it run.
    pub storm: bool,
}

impl Faults {
    /// The faults that can be switched off, by the name of their
    /// `--no-NAME` flag (the command's parser and the replay command both
    /// read this one list).
    pub fn switches(&mut self) -> [(&'static str, &mut bool); 7] {
        [
            ("partition", &mut self.partition),
            ("crash", &mut self.crash),
            ("disk", &mut self.disk),
            ("slow", &mut self.slow),
            ("churn", &mut self.churn),
            ("garbage", &mut self.garbage),
            ("storm", &mut self.storm),
        ]
    }

    /// Every fault on, no loss.
    pub fn all() -> Faults {
        Faults {
            partition: true,
            crash: true,
            disk: true,
            slow: true,
            loss: 0.0,
            churn: true,
            garbage: true,
            storm: true,
        }
    }

    /// No fault.
    pub fn none() -> Faults {
        Faults {
            partition: false,
            crash: false,
            disk: false,
            slow: false,
            loss: 0.0,
            churn: false,
            garbage: false,
            storm: false,
        }
    }
}

/// A scenario: the network, its workload and its faults.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The seed of every choice (and of the nodes' identities).
    pub seed: u64,
    /// Nodes in the network.
    pub nodes: usize,
    /// Each node joins through up to this many of the first nodes.
    pub bootstraps: usize,
    /// Lookups run during the fault window (random source, random target).
    pub lookups: usize,
    /// Lookups run at the end, after healing: each must find its target.
    pub final_lookups: usize,
    /// The faults.
    pub faults: Faults,
    /// Idle pooled connections each node's client keeps
    /// (`Limits::pool_max_idle`).
    pub pool_max_idle: usize,
    /// Friend syncs run during the fault window, a hostile round among
    /// them ([`crate::friends`]).
    pub syncs: bool,
}

impl Scenario {
    /// `nodes` nodes, `lookups` lookups, every fault, 3 bootstrap peers.
    pub fn new(seed: u64, nodes: usize, lookups: usize) -> Scenario {
        Scenario {
            seed,
            nodes,
            bootstraps: 3,
            lookups,
            final_lookups: lookups.min(50),
            faults: Faults::all(),
            pool_max_idle: mau_net::Limits::default().pool_max_idle,
            syncs: true,
        }
    }

    /// The one command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut f = self.faults.clone();
        let mut cmd = format!(
            "cargo run -p mau-simrt --release -- --seed {} --nodes {} --bootstraps {} --lookups {} --final-lookups {} --loss {}",
            self.seed, self.nodes, self.bootstraps, self.lookups, self.final_lookups, f.loss
        );
        for (name, on) in f.switches() {
            if !*on {
                cmd.push_str(&format!(" --no-{name}"));
            }
        }
        if !self.syncs {
            cmd.push_str(" --no-syncs");
        }
        if self.pool_max_idle != mau_net::Limits::default().pool_max_idle {
            cmd.push_str(&format!(" --pool {}", self.pool_max_idle));
        }
        cmd
    }

    /// Runs the scenario to its end (the friend syncs with the committed
    /// [`Fixture`]).
    pub fn run(&self) -> Result<Report, ScenarioError> {
        let fixture = match self.syncs {
            true => Some(Fixture::committed().map_err(ScenarioError::Fixture)?),
            false => None,
        };
        self.run_with(fixture)
    }

    /// Runs the scenario with the friend syncs' accounts and files of
    /// `fixture` (`None`: no syncs, whatever [`Scenario::syncs`] says).
    pub fn run_with(&self, fixture: Option<&'static Fixture>) -> Result<Report, ScenarioError> {
        let wall = Instant::now();
        // The tables are really written (and fsynced): on tmpfs when there
        // is one, so that a disk's fsync latency does not set the pace.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .map_err(ScenarioError::TempDir)?;
        let sim = Sim::new(self.seed);
        if self.faults.loss > 0.0 {
            sim.set_default_links(
                (Duration::from_millis(5), Duration::from_millis(60)),
                12_500_000,
                self.faults.loss,
            );
        }
        let net = Network {
            sim: sim.clone(),
            scenario: self.clone(),
            dir: dir.path().to_path_buf(),
            nodes: Mutex::new(Vec::new()),
            disk_freed: Mutex::new(None),
            table_disk: Mutex::new(None),
            checks: Mutex::new(Vec::new()),
            real: Mutex::new(BTreeMap::new()),
            peaks: Mutex::new(BTreeMap::new()),
            storm: Mutex::new(None),
            garbage: Mutex::new(None),
            lies: Mutex::new(BTreeSet::new()),
            fixture,
        };
        let net = Arc::new(net);
        let run = net.clone();
        let outcome = sim.block_on(LIMIT, async move { run.main().await });
        let mut report = match outcome {
            Ok(r) => r,
            Err(e) => {
                sim.clear();
                return Err(ScenarioError::Sim(e));
            }
        };
        report.trace = sim.trace();
        report.peak_open = sim.peak_open_connections();
        report.virtual_time = sim.elapsed();
        report.wall = wall.elapsed();
        lock(&net.nodes).clear();
        // Unmounted before the directory goes.
        lock(&net.table_disk).take();
        sim.clear();
        Ok(report)
    }
}

/// Virtual time a scenario may take.
const LIMIT: Duration = Duration::from_secs(3 * 3600);
/// A lookup that takes longer than this has not ended (an invariant).
const LOOKUP_BOUND: Duration = Duration::from_secs(300);
/// When the lookups start, from the moment every node joined.
const WINDOW: Duration = Duration::from_secs(60);

/// Why a scenario could not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The simulation stopped (deadlock or time limit).
    #[error("simulation: {0}")]
    Sim(SimError),
    /// No directory for the nodes' tables.
    #[error("temporary directory: {0}")]
    TempDir(std::io::Error),
    /// The friend syncs' accounts and files could not be loaded.
    #[error("{0}")]
    Fixture(String),
}

/// What one lookup came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupResult {
    /// The target answered, after `hops`.
    Found {
        /// Answers on the path.
        hops: u32,
        /// Virtual time it took.
        took: Duration,
    },
    /// It ended without finding the target.
    NotFound,
    /// The node refused or stopped (e.g. an empty table).
    Failed,
    /// Its node crashed meanwhile.
    Aborted,
    /// It did not end within the lookup bound (300 s of virtual time).
    Hung,
}

/// The figures and verdict of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// The scenario's seed.
    pub seed: u64,
    /// Lookups of the fault window, by outcome.
    pub window: Vec<LookupResult>,
    /// Lookups after healing (each must find its target).
    pub finals: Vec<LookupResult>,
    /// Virtual time from the first start until every node joined.
    pub join_time: Duration,
    /// Every invariant broken (empty: the run passed).
    pub violations: Vec<String>,
    /// Mean routing-table size of the live nodes at the end.
    pub table_mean: f64,
    /// The most connections open at once.
    pub peak_open: usize,
    /// Files downloaded and failed in each friend sync round (`None`: the
    /// sync failed as a whole, e.g. under loss).
    pub syncs: Vec<Option<(usize, usize)>>,
    /// Faults that could not be injected, and why (a disk of its own
    /// needs root).
    pub skipped: Vec<String>,
    /// find_peer requests the garbage node answered with garbage.
    pub garbage_answers: usize,
    /// The request storm's figures (`None`: no storm).
    pub storm: Option<StormFigures>,
    /// The most connections one node held at once (sampled each 2 s).
    pub peak_node_open: usize,
    /// The largest routing table a node held (sampled each 2 s).
    pub peak_table: usize,
    /// The event trace.
    pub trace: Trace,
    /// Virtual time the run took.
    pub virtual_time: Duration,
    /// Real time the run took.
    pub wall: Duration,
}

impl Report {
    /// Found lookups among `results`.
    pub fn found(results: &[LookupResult]) -> usize {
        results
            .iter()
            .filter(|r| matches!(r, LookupResult::Found { .. }))
            .count()
    }

    /// Mean hops of the found lookups among `results`.
    pub fn mean_hops(results: &[LookupResult]) -> f64 {
        let hops: Vec<u32> = results
            .iter()
            .filter_map(|r| match r {
                LookupResult::Found { hops, .. } => Some(*hops),
                _ => None,
            })
            .collect();
        f64::from(hops.iter().sum::<u32>()) / hops.len().max(1) as f64
    }

    /// The `q` quantile (0..=1) of the virtual time found lookups among
    /// `results` took (zero when none was found).
    pub fn took_quantile(results: &[LookupResult], q: f64) -> Duration {
        let mut took: Vec<Duration> = results
            .iter()
            .filter_map(|r| match r {
                LookupResult::Found { took, .. } => Some(*took),
                _ => None,
            })
            .collect();
        took.sort();
        let i = ((took.len() as f64 - 1.0) * q.clamp(0.0, 1.0)).round() as usize;
        took.get(i).copied().unwrap_or_default()
    }

    /// Mean virtual time of the found lookups among `results`.
    pub fn mean_took(results: &[LookupResult]) -> Duration {
        let took: Vec<Duration> = results
            .iter()
            .filter_map(|r| match r {
                LookupResult::Found { took, .. } => Some(*took),
                _ => None,
            })
            .collect();
        took.iter().sum::<Duration>() / (took.len().max(1) as u32)
    }
}

/// The simulated network of one run.
struct Network {
    sim: Sim,
    scenario: Scenario,
    dir: std::path::PathBuf,
    nodes: Mutex<Vec<Option<Arc<RunningNode<SimRuntime>>>>>,
    /// The node whose disk was full, and when (real time) it was freed.
    disk_freed: Mutex<Option<(usize, std::time::SystemTime)>>,
    /// The friend syncs' accounts and files (`None`: no syncs).
    fixture: Option<&'static Fixture>,
    /// The full node's disk of its own (with root), and its table when the
    /// disk filled.
    table_disk: Mutex<Option<(Disk, Vec<u8>)>>,
    /// Invariants broken (or faults skipped) while the faults ran.
    checks: Mutex<Vec<String>>,
    /// Every real identity that ever listened, and where.
    real: Mutex<BTreeMap<Fingerprint, String>>,
    /// Each node's most open connections and largest table seen.
    peaks: Mutex<BTreeMap<usize, (usize, usize)>>,
    /// The storm's requests sent and answered, and lookups for its victim
    /// found of those run.
    storm: Mutex<Option<StormFigures>>,
    /// Unverified addresses seen in honest tables while sampling.
    lies: Mutex<BTreeSet<String>>,
    /// Garbage answers the garbage node sent.
    garbage: Mutex<Option<Arc<std::sync::atomic::AtomicUsize>>>,
}

/// Node `i`'s IP: 10.x.y.z from `i + 1`.
fn ip(i: usize) -> IpAddr {
    let n = (i + 1) as u32;
    IpAddr::V4(Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8))
}

pub(crate) const PORT: u16 = 7000;

/// Host of node `i` of a run of `nodes`: nodes joining by churn come after
/// the two friends' hosts.
fn host_ip(nodes: usize, i: usize) -> IpAddr {
    ip(if i < nodes { i } else { i + 2 })
}

/// Nodes that leave, and join, under churn.
fn churned(nodes: usize) -> usize {
    (nodes / 10).max(1)
}

/// Lookups for the storm's victim run during the storm.
const STORM_LOOKUPS: usize = 6;

/// The storm's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StormFigures {
    /// Requests the storm sent.
    pub sent: usize,
    /// Requests the victim answered 200 (the rest: 429, 503 or closed).
    pub answered: usize,
    /// Lookups for the victim, run during the storm, that found it.
    pub found: usize,
    /// Lookups for the victim run during the storm.
    pub lookups: usize,
}

/// Node `i`'s TLS identity, from the seed (same seed, same fingerprints).
fn identity(
    seed: u64,
    i: usize,
    address: Option<&str>,
) -> Result<TlsIdentity, mau_identity::IdentityError> {
    let mut key = [0u8; 32];
    for (j, chunk) in key.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(seed ^ mix(i as u64 ^ mix(j as u64))).to_le_bytes());
    }
    TlsIdentity::from_ed25519_seed(&key, 1_700_000_000, KeyVersion::V4, address)
}

impl Network {
    fn node(&self, i: usize) -> Option<Arc<RunningNode<SimRuntime>>> {
        lock(&self.nodes)[i].clone()
    }

    fn host(&self, i: usize) -> IpAddr {
        host_ip(self.scenario.nodes, i)
    }

    fn alive(&self) -> Vec<usize> {
        let nodes = lock(&self.nodes);
        (0..nodes.len()).filter(|&i| nodes[i].is_some()).collect()
    }

    /// Starts node `i` (joining through `bootstrap`) and records it.
    async fn start(&self, i: usize, bootstrap: Vec<Contact<PeerAddress>>) {
        let mut config = NodeConfig::new(SocketAddr::new(self.host(i), PORT));
        config.bootstrap = bootstrap;
        config.limits.pool_max_idle = self.scenario.pool_max_idle;
        config.seed = Some(mix(self.scenario.seed ^ mix(i as u64)));
        // Each node's table in a directory of its own, which a full disk
        // takes away (`fill_disk`).
        if let Err(e) = std::fs::create_dir_all(self.node_dir(i)) {
            tracing::warn!(node = i, error = %e, "no directory for the table");
        }
        config.table_file = Some(self.table_path(i));
        let seed = self.scenario.seed;
        let node = RunningNode::start(self.sim.host(self.host(i)), config, |a| {
            identity(seed, i, a)
        })
        .await;
        let node = match node {
            Ok(n) => {
                lock(&self.real).insert(n.fingerprint(), n.address().as_str().to_owned());
                Some(Arc::new(n))
            }
            Err(e) => {
                tracing::warn!(node = i, error = %e, "node did not start");
                None
            }
        };
        lock(&self.nodes)[i] = node;
    }

    fn node_dir(&self, i: usize) -> std::path::PathBuf {
        self.dir.join(format!("node-{i}"))
    }

    fn table_path(&self, i: usize) -> std::path::PathBuf {
        self.node_dir(i).join("table.json")
    }

    /// Node `i`'s disk is full. With root, its directory becomes a disk of
    /// its own holding its saved table and room for half of it, rounded
    /// down to pages: the next save runs out of space while writing its
    /// temporary file (at its first page for a table under two pages).
    /// Without root, the directory moves aside and a file takes its place,
    /// so every save fails on creating it (the table already read stays in
    /// memory; the last one saved waits aside).
    fn fill_disk(&self, i: usize) -> std::io::Result<()> {
        let dir = self.node_dir(i);
        let saved = std::fs::read(self.table_path(i))?;
        match Disk::mount(&dir, TABLE_DISK) {
            Ok(disk) => {
                std::fs::write(self.table_path(i), &saved)?;
                disk.fill(saved.len() as u64 / 2)?;
                *lock(&self.table_disk) = Some((disk, saved));
                Ok(())
            }
            Err(e) => {
                self.check(format!("skipped: node {i}'s disk of its own: {e}"));
                std::fs::rename(&dir, dir.with_extension("full"))?;
                std::fs::write(&dir, b"")
            }
        }
    }

    /// Node `i`'s disk has room again. A disk of its own: the table saved
    /// before it filled must be there, intact and readable, and no
    /// temporary file left behind; then the room comes back. Otherwise its
    /// directory (and the table last saved in it) is back.
    fn free_disk(&self, i: usize) -> std::io::Result<()> {
        let dir = self.node_dir(i);
        if let Some((disk, saved)) = &*lock(&self.table_disk) {
            let now = std::fs::read(self.table_path(i));
            match &now {
                Ok(b) if b == saved && mau_net::persist::parse_table(b).is_ok() => {}
                _ => self.check(format!(
                    "node {i}'s table saved before its disk filled is not intact: {:?}",
                    now.as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                )),
            }
            let left: Vec<String> = std::fs::read_dir(&dir)?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".table.json.tmp"))
                .collect();
            if !left.is_empty() {
                self.check(format!("node {i}'s full disk: left behind {left:?}"));
            }
            disk.free()?;
        } else {
            std::fs::remove_file(&dir)?;
            std::fs::rename(dir.with_extension("full"), &dir)?;
        }
        *lock(&self.disk_freed) = Some((i, std::time::SystemTime::now()));
        Ok(())
    }

    /// Records a broken invariant (or a skipped fault, `skipped: ...`).
    fn check(&self, what: String) {
        lock(&self.checks).push(what);
    }

    /// "Saves resume after a full disk": the node whose disk was full wrote
    /// its table again after it was freed, and the table reads back.
    fn disk_recovered(&self) -> Vec<String> {
        let Some((i, freed)) = *lock(&self.disk_freed) else {
            return Vec::new();
        };
        let path = self.table_path(i);
        let written = std::fs::metadata(&path).and_then(|m| m.modified());
        let mut out = Vec::new();
        if !matches!(written, Ok(t) if t > freed) {
            out.push(format!(
                "node {i} did not save its table after its disk was freed ({written:?})"
            ));
        }
        match mau_net::persist::load_table(&path) {
            Ok(peers) if !peers.is_empty() => {}
            r => out.push(format!("node {i}'s saved table after the full disk: {r:?}")),
        }
        out
    }

    /// Crashes node `i`'s process: no shutdown, its tasks just stop.
    fn crash(&self, i: usize) {
        self.sim.crash(self.host(i));
        let node = lock(&self.nodes)[i].take();
        drop(node);
    }

    /// Runs one lookup on node `src`'s host; the result lands in `slot`.
    fn lookup(
        &self,
        src: usize,
        target: Fingerprint,
        results: &Arc<Mutex<Vec<Option<LookupResult>>>>,
        slot: usize,
    ) {
        let Some(node) = self.node(src) else {
            lock(results)[slot] = Some(LookupResult::Aborted);
            return;
        };
        // Dropped with the task if the node crashes: then it reports `Aborted`.
        struct Slot(
            Arc<Mutex<Vec<Option<LookupResult>>>>,
            usize,
            Option<LookupResult>,
        );
        impl Drop for Slot {
            fn drop(&mut self) {
                let r = self.2.unwrap_or(LookupResult::Aborted);
                lock(&self.0)[self.1] = Some(r);
            }
        }
        let out = Slot(results.clone(), slot, None);
        let rt = node.runtime().clone();
        let sim = self.sim.clone();
        rt.clone().spawn(async move {
            let mut out = out;
            let started = sim.elapsed();
            let r = mau_net::runtime::timeout(&rt, LOOKUP_BOUND, node.lookup(target)).await;
            let r = match r {
                Err(_) => LookupResult::Hung,
                Ok(Err(_)) => LookupResult::Failed,
                Ok(Ok(o)) if o.found.is_some() => LookupResult::Found {
                    hops: o.hops,
                    took: sim.elapsed() - started,
                },
                Ok(Ok(_)) => LookupResult::NotFound,
            };
            sim.mark(slot as u64, code(&r));
            out.2 = Some(r);
        });
    }

    /// Runs `n` lookups spread over `over`, from random live nodes for
    /// random other nodes; waits for all of them.
    async fn lookups(&self, n: usize, over: Duration) -> Vec<LookupResult> {
        let results = Arc::new(Mutex::new(vec![None; n]));
        let all = lock(&self.nodes).len();
        let fps: Vec<Fingerprint> = (0..all)
            .map(|i| identity(self.scenario.seed, i, None).map(|id| id.fingerprint()))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        let gap = over / (n.max(1) as u32);
        for slot in 0..n {
            let alive = self.alive();
            if alive.len() < 2 || fps.is_empty() {
                lock(&results)[slot] = Some(LookupResult::Failed);
                continue;
            }
            let src = alive[self.sim.rand_u64(alive.len() as u64) as usize];
            let mut dst = alive[self.sim.rand_u64(alive.len() as u64) as usize];
            if dst == src {
                dst = alive[(alive.iter().position(|&a| a == src).unwrap_or(0) + 1) % alive.len()];
            }
            self.lookup(src, fps[dst], &results, slot);
            self.sim.sleep(gap).await;
        }
        self.ended(&results).await
    }

    /// Waits until every lookup of `results` ended; returns their results.
    async fn ended(&self, results: &Mutex<Vec<Option<LookupResult>>>) -> Vec<LookupResult> {
        loop {
            let done: Option<Vec<LookupResult>> = lock(results).iter().copied().collect();
            if let Some(done) = done {
                return done;
            }
            self.sim.sleep(Duration::from_millis(500)).await;
        }
    }

    /// Waits until no live node is joining (at most `bound`); returns the time taken.
    async fn joined(&self, bound: Duration) -> Duration {
        let t0 = self.sim.elapsed();
        while self.sim.elapsed() - t0 < bound {
            let joining = self
                .alive()
                .into_iter()
                .filter_map(|i| self.node(i))
                .any(|n| n.is_joining());
            if !joining {
                break;
            }
            self.sim.sleep(Duration::from_millis(250)).await;
        }
        self.sim.elapsed() - t0
    }

    async fn main(self: Arc<Self>) -> Report {
        let s = self.scenario.clone();
        let joiners = if s.faults.churn { churned(s.nodes) } else { 0 };
        *lock(&self.nodes) = vec![None; s.nodes + joiners];
        let t0 = self.sim.elapsed();
        for i in 0..s.nodes {
            let bootstrap: Vec<_> = (0..i.min(s.bootstraps))
                .filter_map(|b| self.node(b).map(|n| n.contact()))
                .collect();
            self.start(i, bootstrap).await;
            self.sim
                .sleep(Duration::from_millis(self.sim.rand_u64(50)))
                .await;
        }
        self.joined(Duration::from_secs(600)).await;
        let join_time = self.sim.elapsed() - t0;
        let mut violations = Vec::new();
        let started = self.alive().len();
        if started != s.nodes {
            violations.push(format!("{} of {} nodes started", started, s.nodes));
        }

        // Friends A and B, on hosts of their own after the nodes'.
        let friends = match self.fixture {
            Some(fixture) => {
                let place = Placement {
                    a: ip(s.nodes),
                    b: ip(s.nodes + 1),
                    bootstrap: (0..s.bootstraps)
                        .filter_map(|b| self.node(b).map(|n| n.contact()))
                        .collect(),
                };
                let seed = mix(s.seed ^ mix(s.nodes as u64));
                let strict = s.faults.loss == 0.0;
                let disk = s.faults.disk;
                match Friends::start(&self.sim, fixture, &self.dir, place, seed, strict, disk).await
                {
                    Ok(f) => {
                        lock(&self.real).extend(f.identities());
                        Some(Arc::new(f))
                    }
                    Err(e) => {
                        violations.push(e);
                        None
                    }
                }
            }
            None => None,
        };

        // The fault window: lookups and syncs run while faults come and go.
        let running = Arc::new(Mutex::new(0usize));
        let faults = self.clone().faults();
        self.sim.spawn(counted(&running, faults));
        let sampler = self
            .clone()
            .sample(Duration::from_secs(100), running.clone());
        self.sim.spawn(counted(&running, sampler));
        if let Some(f) = friends.clone() {
            self.sim
                .spawn(counted(&running, async move { f.rounds(SYNC_GAP).await }));
        }
        let window = self.lookups(s.lookups, WINDOW).await;
        while *lock(&running) > 0 {
            self.sim.sleep(Duration::from_secs(1)).await;
        }
        for (i, r) in window.iter().enumerate() {
            if *r == LookupResult::Hung {
                violations.push(format!(
                    "window lookup {i} did not end within {LOOKUP_BOUND:?}"
                ));
            }
        }

        // Healed: let the tables mend, then every lookup must find its target.
        self.sim.sleep(Duration::from_secs(60)).await;
        let finals = self.lookups(s.final_lookups, Duration::from_secs(10)).await;
        for (i, r) in finals.iter().enumerate() {
            if !matches!(r, LookupResult::Found { .. }) && s.faults.loss == 0.0 {
                violations.push(format!("final lookup {i} after healing: {r:?}"));
            }
        }
        violations.extend(self.lost_peers());
        let lies = std::mem::take(&mut *lock(&self.lies));
        violations.extend(
            lies.into_iter()
                .chain(self.observe())
                .collect::<BTreeSet<_>>(),
        );
        violations.extend(self.over_bound());
        violations.extend(self.disk_recovered());
        let mut checks = std::mem::take(&mut *lock(&self.checks));
        let syncs = match &friends {
            Some(f) => {
                checks.extend(std::mem::take(&mut *lock(&f.violations)));
                checks.extend(f.skipped.clone());
                lock(&f.rounds).clone()
            }
            None => Vec::new(),
        };
        let (skipped, broken): (Vec<String>, Vec<String>) =
            checks.into_iter().partition(|c| c.starts_with("skipped: "));
        violations.extend(broken);
        let table_mean = self.mean_table();
        let storm = *lock(&self.storm);
        let peaks = lock(&self.peaks).clone();
        Report {
            seed: s.seed,
            window,
            finals,
            join_time,
            violations,
            table_mean,
            peak_open: 0,
            syncs,
            skipped,
            storm,
            garbage_answers: lock(&self.garbage)
                .as_ref()
                .map_or(0, |a| a.load(std::sync::atomic::Ordering::Relaxed)),
            peak_node_open: peaks.values().map(|p| p.0).max().unwrap_or(0),
            peak_table: peaks.values().map(|p| p.1).max().unwrap_or(0),
            trace: Trace::default(),
            virtual_time: Duration::ZERO,
            wall: Duration::ZERO,
        }
    }

    /// Mean routing-table size of the live nodes.
    fn mean_table(&self) -> f64 {
        let sizes: Vec<usize> = self
            .alive()
            .into_iter()
            .filter_map(|i| self.node(i).map(|n| n.snapshot().peers.len()))
            .collect();
        sizes.iter().sum::<usize>() as f64 / sizes.len().max(1) as f64
    }

    /// "No honest peer lost": every live node has a non-empty table and is
    /// in the table of at least one other live node.
    fn lost_peers(&self) -> Vec<String> {
        let alive: Vec<_> = self
            .alive()
            .into_iter()
            .filter_map(|i| self.node(i).map(|n| (i, n)))
            .collect();
        let mut known = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for (i, n) in &alive {
            let snap = n.snapshot();
            if snap.peers.is_empty() {
                out.push(format!("node {i} has an empty routing table"));
            }
            known.extend(snap.peers.iter().map(|p| p.fingerprint));
        }
        for (i, n) in &alive {
            if alive.len() > 1 && !known.contains(&n.fingerprint()) {
                out.push(format!("node {i} is in no other node's routing table"));
            }
        }
        out
    }

    /// The faults of the window, in virtual time from its start.
    async fn faults(self: Arc<Self>) {
        let f = self.scenario.faults.clone();
        let n = self.scenario.nodes;
        if f.slow {
            for i in (0..n).filter(|i| i % 20 == 7) {
                self.sim.set_host_link(
                    ip(i),
                    Some(LinkConfig {
                        latency: Duration::from_millis(400),
                        bandwidth: 50_000,
                        loss: f.loss,
                    }),
                );
            }
        }
        if f.garbage {
            self.garbage().await;
        }
        self.sim.sleep(Duration::from_secs(10)).await;
        let cut: Vec<IpAddr> = (0..n)
            .filter(|_| self.sim.rand_u64(3) == 0)
            .map(ip)
            .collect();
        if f.partition && !cut.is_empty() {
            self.sim.partition(&[cut]);
        }
        self.sim.sleep(Duration::from_secs(10)).await;
        let victim = 1 + self.sim.rand_u64(n.saturating_sub(1) as u64) as usize;
        let crashed = f.crash && victim < n;
        if crashed {
            self.crash(victim);
        }
        self.sim.sleep(Duration::from_secs(5)).await;
        if f.churn {
            self.leave(if crashed { victim } else { usize::MAX });
        }
        self.sim.sleep(Duration::from_secs(10)).await;
        if crashed {
            // Restarts from its saved table alone (no bootstrap peers).
            self.start(victim, Vec::new()).await;
        }
        let full = crashed && f.disk;
        if full {
            if let Err(e) = self.fill_disk(victim) {
                tracing::warn!(node = victim, error = %e, "could not fill the disk");
            }
        }
        self.sim.sleep(Duration::from_secs(5)).await;
        if f.partition {
            self.sim.heal();
        }
        self.sim.sleep(Duration::from_secs(5)).await;
        if f.churn {
            self.join_new().await;
        }
        self.sim.sleep(Duration::from_secs(15)).await;
        if f.slow {
            for i in (0..n).filter(|i| i % 20 == 7) {
                self.sim.set_host_link(ip(i), None);
            }
        }
        if full {
            if let Err(e) = self.free_disk(victim) {
                tracing::warn!(node = victim, error = %e, "could not free the disk");
            }
        }
        if f.storm {
            self.sim.sleep(Duration::from_secs(2)).await;
            self.storm().await;
        }
    }

    /// Churn, leaving: a tenth of the nodes (not the bootstrap peers, not
    /// `spared`) stop for good, abruptly, as peers going offline do.
    fn leave(&self, spared: usize) {
        let n = self.scenario.nodes;
        let candidates: Vec<usize> = (self.scenario.bootstraps.min(n)..n)
            .filter(|&i| i != spared && self.node(i).is_some())
            .collect();
        let mut left = BTreeSet::new();
        while left.len() < churned(n).min(candidates.len()) {
            left.insert(candidates[self.sim.rand_u64(candidates.len() as u64) as usize]);
        }
        for i in left {
            tracing::debug!(node = i, "leaves");
            self.crash(i);
        }
    }

    /// Churn, joining: new nodes join through the bootstrap peers still
    /// there.
    async fn join_new(&self) {
        let n = self.scenario.nodes;
        let bootstrap: Vec<_> = (0..self.scenario.bootstraps.min(n))
            .filter_map(|b| self.node(b).map(|n| n.contact()))
            .collect();
        for i in n..n + churned(n) {
            self.start(i, bootstrap.clone()).await;
            self.sim
                .sleep(Duration::from_millis(self.sim.rand_u64(500)))
                .await;
        }
    }

    /// The garbage node joins: its server starts, then it pings every live
    /// node (an attacker makes itself known as widely as it can) with a
    /// certificate claiming its address, and they probe it back (it answers
    /// pings as it should).
    async fn garbage(&self) {
        let s = &self.scenario;
        let address = SocketAddr::new(hostile::GARBAGE_HOST, PORT).to_string();
        let id = match identity(mix(s.seed ^ GARBAGE_STREAM), 0, Some(&address)) {
            Ok(id) => id,
            Err(e) => return self.check(format!("the garbage node's identity: {e}")),
        };
        let honest: Vec<Fingerprint> = (0..s.nodes)
            .filter_map(|i| identity(s.seed, i, None).ok().map(|id| id.fingerprint()))
            .collect();
        let lies = hostile::lies(mix(s.seed ^ GARBAGE_STREAM), &honest);
        match hostile::serve_garbage(&self.sim, &id, lies).await {
            Ok((at, answers)) => {
                *lock(&self.garbage) = Some(answers);
                lock(&self.real).insert(id.fingerprint(), at.to_string());
            }
            Err(e) => return self.check(format!("the garbage node's server: {e}")),
        }
        let rt = self.sim.host(hostile::GARBAGE_HOST);
        for b in self.alive() {
            if let Some(node) = self.node(b) {
                let (to, fp) = (node.local_addr(), node.fingerprint());
                let (rt2, id) = (rt.clone(), id.clone());
                rt.spawn(async move {
                    hostile::request(&rt2, to, fp, &id, mau_proto::wire::PING_PATH).await;
                });
            }
        }
    }

    /// The storm on a random live node, while other nodes look it up; then
    /// "no honest peer lost to an attacker's load".
    async fn storm(&self) {
        let alive = self.alive();
        if alive.len() < 2 {
            return;
        }
        let victim = alive[self.sim.rand_u64(alive.len() as u64) as usize];
        let Some(node) = self.node(victim) else {
            return;
        };
        let table = |node: &RunningNode<SimRuntime>| -> BTreeSet<Fingerprint> {
            node.snapshot()
                .peers
                .iter()
                .map(|p| p.fingerprint)
                .collect()
        };
        let honest: BTreeSet<Fingerprint> = alive
            .iter()
            .filter_map(|&i| self.node(i).map(|n| n.fingerprint()))
            .collect();
        let before: BTreeSet<Fingerprint> = table(&node).intersection(&honest).copied().collect();
        let id = match identity(mix(self.scenario.seed ^ STORM_STREAM), 0, None) {
            Ok(id) => id,
            Err(e) => return self.check(format!("the storm's identity: {e}")),
        };
        let targets: Vec<Fingerprint> = honest.iter().copied().collect();
        let results = Arc::new(Mutex::new(vec![None; STORM_LOOKUPS]));
        let sim = self.sim.clone();
        let (done_tx, done_rx) = async_channel::bounded::<(usize, usize)>(1);
        let target = (node.local_addr(), node.fingerprint());
        sim.clone().spawn(async move {
            let figures = hostile::storm(&sim, id, target, targets).await;
            let _ = done_tx.send(figures).await;
        });
        let others: Vec<usize> = alive.iter().copied().filter(|&i| i != victim).collect();
        for slot in 0..STORM_LOOKUPS {
            self.sim.sleep(Duration::from_secs(2)).await;
            let src = others[self.sim.rand_u64(others.len() as u64) as usize];
            self.lookup(src, node.fingerprint(), &results, slot);
        }
        let (sent, answered) = done_rx.recv().await.unwrap_or_default();
        let done = self.ended(&results).await;
        let found = Report::found(&done);
        *lock(&self.storm) = Some(StormFigures {
            sent,
            answered,
            found,
            lookups: done.len(),
        });
        if found < done.len() && self.scenario.faults.loss == 0.0 {
            self.check(format!(
                "node {victim} under the storm: lookups for it {done:?}"
            ));
        }
        let still: BTreeSet<Fingerprint> = self
            .alive()
            .into_iter()
            .filter_map(|i| self.node(i).map(|n| n.fingerprint()))
            .collect();
        let name = format!("node {victim}");
        for v in hostile::lost_to_load(&name, &before, &table(&node), &still) {
            self.check(v);
        }
    }

    /// Every 2 s for at least `over`, and on while the faults and syncs run:
    /// samples each live node's open connections and
    /// table size, and checks its table holds no unverified address (a lie
    /// that got in and out again between two samples is missed).
    async fn sample(self: Arc<Self>, over: Duration, running: Arc<Mutex<usize>>) {
        let t0 = self.sim.elapsed();
        // The faults and syncs (counted in `running`, the sampler too) may
        // outlast `over` in a large network: sample until they end.
        while self.sim.elapsed() - t0 < over || *lock(&running) > 1 {
            let lies = self.observe();
            lock(&self.lies).extend(lies);
            self.sim.sleep(Duration::from_secs(2)).await;
        }
    }

    /// Samples every live node: its open connections and table size go to
    /// the peaks, and what breaks "no unverified address in an honest
    /// table" is returned.
    fn observe(&self) -> Vec<String> {
        let mut tables: Vec<(String, Vec<(Fingerprint, PeerAddress)>)> = Vec::new();
        let open_by_host = self.sim.open_connections();
        for i in self.alive() {
            let Some(node) = self.node(i) else { continue };
            let peers = node.snapshot().peers;
            let open = open_by_host.get(&self.host(i)).copied().unwrap_or(0);
            let mut peaks = lock(&self.peaks);
            let p = peaks.entry(i).or_default();
            *p = (p.0.max(open), p.1.max(peers.len()));
            let peers = peers.into_iter().map(|p| (p.fingerprint, p.address));
            tables.push((format!("node {i}"), peers.collect()));
        }
        let real = lock(&self.real).clone();
        hostile::unverified(&tables, &real)
    }

    /// The memory bound: no node holds more connections than it serves at
    /// most (`Limits::max_connections`) plus its idle pool
    /// (`pool_max_idle`). (No table is larger than the run's real
    /// identities: [`Self::observe`] would have found a lie.)
    fn over_bound(&self) -> Vec<String> {
        let peaks: Vec<(String, usize)> = lock(&self.peaks)
            .iter()
            .map(|(i, (open, _))| (format!("node {i}"), *open))
            .collect();
        let connections = mau_net::Limits::default().max_connections + self.scenario.pool_max_idle;
        hostile::over_bound(&peaks, connections)
    }
}

/// Mixed into the seed for the garbage node's identity and lies.
const GARBAGE_STREAM: u64 = 0x6761_7262_6167_6521;
/// Mixed into the seed for the storm's identity.
const STORM_STREAM: u64 = 0x7374_6f72_6d21_2121;

/// The full node's disk of its own: a few times its table.
const TABLE_DISK: u64 = 1 << 20;

/// Virtual time between the friend sync rounds: the first runs as the
/// window opens, the second during the crash and the full disk, the third
/// once the partition healed.
const SYNC_GAP: Duration = Duration::from_secs(25);

/// `fut`, counted in `running` until it ends.
fn counted(
    running: &Arc<Mutex<usize>>,
    fut: impl std::future::Future<Output = ()> + Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    *lock(running) += 1;
    let running = running.clone();
    async move {
        fut.await;
        *lock(&running) -= 1;
    }
}

/// A lookup result as a number, for the trace.
fn code(r: &LookupResult) -> u64 {
    match r {
        LookupResult::Found { hops, took } => (u64::from(*hops) << 40) | took.as_millis() as u64,
        LookupResult::NotFound => 1,
        LookupResult::Failed => 2,
        LookupResult::Aborted => 3,
        LookupResult::Hung => 4,
    }
}
