//! Friend syncs in a scenario: friend A serves its files from a real node,
//! B follows A, finds it through the DHT (both join it through the
//! scenario's bootstrap peers; [`mau_net::sync::FriendClient::connect`],
//! mau-net's resolvers) and syncs it in rounds
//! while the faults strike:
//!
//! 1. A serves version 1 of `note` and `album` (over 1 MiB: streamed to a
//!    partial file); B installs both.
//! 2. A is hostile: `note` signed by someone else (M), `album` whose bytes
//!    are not the ones its listing's sum names. Both fail.
//! 3. A serves version 2. With the disk fault, B's disk (a tmpfs,
//!    `disk` module) has 512 KiB left, so the album's partial file runs
//!    out of space partway: the note arrives, the album fails; then
//! 4. the room is back, and the album arrives.
//!
//! The invariant, checked after every round: no file of B is ever
//! replaced by a bad one (each copy is one of A's good versions; the note
//! and the album read back); and the good versions arrive when they
//! should.
//!
//! A and B are hosts of their own, outside the DHT: their keys are not from
//! the seed (below), so the nodes' routing must not depend on them.
//!
//! Determinism: OpenPGP key generation and encryption take their
//! randomness from the operating system (sequoia), not from the seed, so
//! the accounts and every file served are fixtures committed under
//! `mau-simrt/fixtures/friends` ([`Fixture::committed`]), loaded by every
//! run and copied into its directory; file times are virtual. A replay in
//! a new process therefore gives the same trace, byte for byte.
//! `mau-simrt fixtures --out DIR` makes new ones ([`Fixture::generate`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mau_identity::{Account, KeyVersion, TlsIdentity};
use mau_net::sync::{FriendClient, SyncOptions, SyncReport};
use mau_net::{NodeConfig, RunningNode, Runtime};
use mau_proto::{Contact, Fingerprint, PeerAddress};
use mau_store::Store;

use crate::disk::Disk;
use crate::net::mix;
use crate::sim::lock;
use crate::{Sim, SimRuntime};

/// The fixture accounts' passphrase (test-only keys).
const PASSPHRASE: &str = "simulated friends";
/// The album's plain size: its `.pgp` is past the 1 MiB a sync receives in
/// memory, so it is streamed to a partial file batch by batch (two
/// batches); version 2 is 1000 bytes shorter, still past it. No larger:
/// both are committed.
const ALBUM_SIZE: usize = (1 << 20) + (8 << 10);
/// A sync round that takes longer than this has not ended (an invariant).
const ROUND_BOUND: Duration = Duration::from_secs(300);
/// B's disk, with the disk fault: room for both versions of every file.
const DISK_SIZE: u64 = 16 << 20;
/// Room left on B's full disk: the note fits, the album does not.
const DISK_ROOM: u64 = 512 << 10;
/// The committed fixture (see its `README.md`).
pub const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/friends");
/// In a fixture: the account directories of A and B (`a`, `b`), their
/// secret keys encrypted with [`PASSPHRASE`]: for tests only.
const ACCOUNTS: &str = "test-only-secret-keys";
/// In a fixture: the files A serves, each `<name>.pgp` (signed by A or M,
/// encrypted to B).
const FILES: &str = "files";
/// The files of a fixture: (file, its name in A's directory).
const NOTE: [&str; 2] = ["note-1", "note-2"];
const ALBUM: [&str; 2] = ["album-1", "album-2"];
const FORGED_NOTE: &str = "note-forged-by-m";
/// The plain text of `note`, version 1 (B's copy must read back as it).
const NOTE_PLAIN: &[u8] = b"note, version 1";

/// Why the fixture could not be made or loaded.
fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("sync fixture: {what}: {e}")
}

/// The accounts and the files of the friend syncs.
pub struct Fixture {
    /// Holds the account directories (`a`, `b`), copied into each run.
    accounts: PathBuf,
    a: Fingerprint,
    /// What A serves: `note` and `album`, versions 1 and 2 (signed by A,
    /// encrypted to B).
    note: [Vec<u8>; 2],
    album: [Vec<u8>; 2],
    /// `note` signed by M (who has B's key, B not M's), encrypted to B.
    forged_note: Vec<u8>,
}

impl Fixture {
    /// The committed fixture, loaded once per process.
    pub fn committed() -> Result<&'static Fixture, String> {
        static FIXTURE: OnceLock<Result<Fixture, String>> = OnceLock::new();
        FIXTURE
            .get_or_init(|| Fixture::load(Path::new(COMMITTED)))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Loads the fixture in `dir` (made by [`Fixture::generate`]).
    pub fn load(dir: &Path) -> Result<Fixture, String> {
        let accounts = dir.join(ACCOUNTS);
        let a = Account::load(accounts.join("a"), PASSPHRASE)
            .map_err(|e| failed("account a", e))?
            .fingerprint();
        let read = |name: &str| {
            let path = dir.join(FILES).join(format!("{name}.pgp"));
            std::fs::read(&path).map_err(|e| failed(&path.display().to_string(), e))
        };
        Ok(Fixture {
            accounts,
            a,
            note: [read(NOTE[0])?, read(NOTE[1])?],
            album: [read(ALBUM[0])?, read(ALBUM[1])?],
            forged_note: read(FORGED_NOTE)?,
        })
    }

    /// Makes a new fixture in `out` (a directory that does not exist yet):
    /// new accounts (A, B; M to forge a note, not kept) and files, other
    /// keys and bytes each time. `mau-simrt fixtures --out DIR` runs it.
    pub fn generate(out: &Path) -> Result<(), String> {
        if out.exists() {
            return Err(failed(&out.display().to_string(), "exists already"));
        }
        let accounts = out.join(ACCOUNTS);
        let scratch = tempfile::tempdir().map_err(|e| failed("directory", e))?;
        let account = |dir: &Path, name: &str| {
            Account::create(dir.join(name), name, "", PASSPHRASE, KeyVersion::V4)
                .map_err(|e| failed("account", e))
        };
        let (a, b, m) = (
            account(&accounts, "a")?,
            account(&accounts, "b")?,
            account(scratch.path(), "m")?,
        );
        let export = |x: &Account| x.export_public().map_err(|e| failed("export", e));
        a.add_friend(export(&b)?.as_bytes())
            .map_err(|e| failed("friend", e))?;
        b.add_friend(export(&a)?.as_bytes())
            .map_err(|e| failed("friend", e))?;
        m.add_friend(export(&b)?.as_bytes())
            .map_err(|e| failed("friend", e))?;
        let (af, bf) = (a.fingerprint(), b.fingerprint());
        let sa = Store::new(a).map_err(|e| failed("store", e))?;
        let sm = Store::new(m).map_err(|e| failed("store", e))?;
        let files = out.join(FILES);
        std::fs::create_dir_all(&files).map_err(|e| failed("directory", e))?;
        let seal = |store: &Store, name: &str, plain: &[u8], file: &str| {
            let entry = store
                .share(name, plain, &[bf])
                .map_err(|e| failed("share", e))?;
            std::fs::rename(&entry.path, files.join(format!("{file}.pgp")))
                .map_err(|e| failed("move", e))
        };
        let mut rng = fastrand::Rng::with_seed(0x0061_6c62_756d);
        let album: Vec<u8> = std::iter::repeat_with(|| rng.u8(..))
            .take(ALBUM_SIZE)
            .collect();
        seal(&sa, "note", NOTE_PLAIN, NOTE[0])?;
        seal(&sa, "note", b"note, version 2", NOTE[1])?;
        seal(&sa, "album", &album, ALBUM[0])?;
        seal(&sa, "album", &album[..ALBUM_SIZE - 1000], ALBUM[1])?;
        seal(&sm, "note", b"note, forged by M", FORGED_NOTE)?;
        // Each run places A's files itself: only the accounts are kept.
        std::fs::remove_dir_all(sa.dir_of(&af)).map_err(|e| failed("clean", e))?;
        Ok(())
    }
}

/// Copies directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}

/// Marks of the sync rounds in the trace: `SYNC_MARK + round`, the value
/// `downloaded << 32 | failures` (all ones: the sync failed as a whole).
const SYNC_MARK: u64 = 1 << 40;

/// Where friends A and B run: their hosts and the DHT peers they join
/// through (none: B reaches A at its address, found by no lookup).
pub(crate) struct Placement {
    /// A's host.
    pub(crate) a: std::net::IpAddr,
    /// B's host.
    pub(crate) b: std::net::IpAddr,
    /// The peers both join through.
    pub(crate) bootstrap: Vec<Contact<PeerAddress>>,
}

/// How long A and B may take to join before B looks A up.
const JOIN_BOUND: Duration = Duration::from_secs(60);

/// Friend A (a node serving its store) and B (its follower) of one run.
pub(crate) struct Friends {
    fixture: &'static Fixture,
    sim: Sim,
    a: Arc<Store>,
    b: Arc<Store>,
    a_rt: SimRuntime,
    /// A's node, serving its store.
    a_node: RunningNode<SimRuntime>,
    /// B's node: its client and resolvers reach A.
    b_node: RunningNode<SimRuntime>,
    client: FriendClient<SimRuntime>,
    /// Without loss every round must do what it should (with loss a
    /// round may fail; the invariant holds all the same).
    strict: bool,
    /// B's disk, with the disk fault (`None`: without it, or without root).
    disk: Option<Disk>,
    /// Why the disk fault did not run, if it was asked for.
    pub(crate) skipped: Option<String>,
    /// Downloaded and failed files of each round (`None`: the sync
    /// failed as a whole).
    pub(crate) rounds: Mutex<Vec<Option<(usize, usize)>>>,
    /// Every invariant broken.
    pub(crate) violations: Mutex<Vec<String>>,
}

impl Friends {
    /// A's and B's nodes: their identities and where they listen (real
    /// identities of the run, as the scenario's nodes are).
    pub(crate) fn identities(&self) -> [(Fingerprint, String); 2] {
        [&self.a_node, &self.b_node].map(|n| (n.fingerprint(), n.address().as_str().to_owned()))
    }

    /// Copies the fixture's accounts to `dir`, starts A's and B's nodes
    /// where `place` says and B's client, which finds A through the DHT;
    /// with `disk`, B's directory is a disk of its own, which fills up in
    /// round 3.
    pub(crate) async fn start(
        sim: &Sim,
        fixture: &'static Fixture,
        dir: &Path,
        place: Placement,
        seed: u64,
        strict: bool,
        disk: bool,
    ) -> Result<Friends, String> {
        let (disk, skipped) = match disk {
            true => match Disk::mount(&dir.join("friend-b"), DISK_SIZE) {
                Ok(d) => (Some(d), None),
                Err(e) => (None, Some(format!("skipped: B's full disk: {e}"))),
            },
            false => (None, None),
        };
        let load = |name: &str| {
            let root = dir.join(format!("friend-{name}"));
            copy_dir(&fixture.accounts.join(name), &root).map_err(|e| failed("copy", e))?;
            let account = Account::load(&root, PASSPHRASE).map_err(|e| failed("load", e))?;
            Store::new(account)
                .map(Arc::new)
                .map_err(|e| failed("store", e))
        };
        let (store_a, store_b) = (load("a")?, load("b")?);
        // B follows A (a directory, which git does not keep).
        store_b
            .follow(&fixture.a)
            .map_err(|e| failed("follow", e))?;
        let Placement { a, b, bootstrap } = place;
        let a_rt = sim.host(a);
        let mut config = NodeConfig::new(std::net::SocketAddr::new(a, crate::scenario::PORT));
        config.bootstrap = bootstrap.clone();
        config.seed = Some(seed);
        config.content = Some(store_a.clone());
        let s = store_a.clone();
        let node = RunningNode::start(a_rt.clone(), config, move |addr| {
            TlsIdentity::from_account(s.account(), addr)
        })
        .await
        .map_err(|e| failed("friend A's node", e))?;
        let opts = SyncOptions {
            // Every file checked each round (file times are virtual, the
            // sync state's clock is the friend's).
            full: true,
            ..SyncOptions::default()
        };
        // B finds A through mau-net's resolvers, as an embedder does: its
        // node's DHT resolver, and A's address as a fallback only when
        // there is no DHT, or loss may hide A (not strict); an address is
        // kept only once A proves its fingerprint over mutual TLS.
        let mut b_config = NodeConfig::new(std::net::SocketAddr::new(b, crate::scenario::PORT));
        b_config.bootstrap = bootstrap.clone();
        b_config.seed = Some(mix(seed));
        let s = store_b.clone();
        let b_node = RunningNode::start(sim.host(b), b_config, move |addr| {
            TlsIdentity::from_account(s.account(), addr)
        })
        .await
        .map_err(|e| failed("friend B's node", e))?;
        let t0 = sim.elapsed();
        while node.is_joining() || b_node.is_joining() {
            if sim.elapsed() - t0 > JOIN_BOUND {
                return Err(format!(
                    "friends A and B did not join within {JOIN_BOUND:?}"
                ));
            }
            sim.sleep(Duration::from_millis(250)).await;
        }
        let a_contact = node.contact();
        let fallback = match bootstrap.is_empty() || !strict {
            true => vec![a_contact.address],
            false => Vec::new(),
        };
        let client = FriendClient::connect(
            &b_node,
            store_b.clone(),
            a_contact.fingerprint,
            &fallback,
            opts,
        )
        .await
        .map_err(|e| failed("friend B finds A", e))?;
        Ok(Friends {
            fixture,
            sim: sim.clone(),
            a: store_a,
            b: store_b,
            a_rt,
            a_node: node,
            b_node,
            client,
            strict,
            disk,
            skipped,
            rounds: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
        })
    }

    fn violation(&self, v: String) {
        lock(&self.violations).push(v);
    }

    /// Where A serves `name` from.
    fn served(&self, name: &str) -> PathBuf {
        self.a.dir_of(&self.fixture.a).join(format!("{name}.pgp"))
    }

    /// A serves `bytes` as `name` from now on (modified now, in virtual
    /// time).
    fn place(&self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.served(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::File::options()
            .write(true)
            .open(&tmp)?
            .set_modified(self.a_rt.system_time())?;
        std::fs::rename(tmp, path)
    }

    /// Flips one byte in the middle of A's `name`, keeping its size and
    /// time: A's listing keeps the sum it computed before, its answers
    /// carry other bytes.
    fn corrupt_in_place(&self, name: &str) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom, Write};
        let path = self.served(name);
        let mut f = std::fs::File::options().read(true).write(true).open(path)?;
        let md = f.metadata()?;
        let at = SeekFrom::Start(md.len() / 2);
        let mut byte = [0u8];
        f.seek(at)?;
        f.read_exact(&mut byte)?;
        f.seek(at)?;
        f.write_all(&[byte[0] ^ 0xff])?;
        f.set_modified(md.modified()?)
    }

    /// The SHA-256 of B's copy of `name` (`None`: no copy).
    fn held(&self, name: &str) -> Option<String> {
        let path = self.b.dir_of(&self.fixture.a).join(format!("{name}.pgp"));
        path.is_file()
            .then(|| mau_store::sha256_file(&path).ok())
            .flatten()
    }

    /// Checks that B holds version `v` (0 or 1) of both files, or (`None`)
    /// that each copy B holds is one of A's good versions: "no file
    /// replaced by a bad one".
    fn check(&self, round: usize, v: Option<usize>) {
        let f = self.fixture;
        for (name, versions) in [("note", &f.note), ("album", &f.album)] {
            let good: Vec<String> = versions.iter().map(|b| mau_store::sha256_hex(b)).collect();
            let held = self.held(name);
            match (v, &held) {
                (Some(v), Some(h)) if *h == good[v] => {}
                (Some(v), _) if self.strict => self.violation(format!(
                    "sync round {round}: B's {name} is not version {} ({held:?})",
                    v + 1
                )),
                (_, Some(h)) if !good.contains(h) => self.violation(format!(
                    "sync round {round}: B's {name} was replaced by a bad file ({h})"
                )),
                _ => {}
            }
        }
        // Version 1 of the note, where B holds it, still reads (signature
        // and decryption), and so does the album.
        if self.held("note") == Some(mau_store::sha256_hex(&f.note[0])) {
            let mut plain = Vec::new();
            match self.b.open(&f.a, "note", &mut plain) {
                Ok(()) if plain == NOTE_PLAIN => {}
                r => self.violation(format!(
                    "sync round {round}: B's note does not read back: {r:?}"
                )),
            }
        }
        if self.held("album").is_some() {
            if let Err(e) = self.b.open(&f.a, "album", std::io::sink()) {
                self.violation(format!("sync round {round}: B's album does not read: {e}"));
            }
        }
    }

    /// One sync of B from A, bounded in time.
    async fn sync(&self, round: usize) -> Option<SyncReport> {
        let r = self.sync_once(round).await;
        let counts = r.as_ref().map(|r| (r.downloaded, r.failures));
        let value = counts.map_or(u64::MAX, |(got, failed)| {
            ((got as u64) << 32) | failed as u64
        });
        self.sim.mark(SYNC_MARK + round as u64, value);
        lock(&self.rounds).push(counts);
        r
    }

    /// [`Friends::sync`], before it is recorded.
    async fn sync_once(&self, round: usize) -> Option<SyncReport> {
        let ran = mau_net::runtime::timeout(&self.a_rt, ROUND_BOUND, self.client.sync(&())).await;
        match ran {
            Err(_) => {
                self.violation(format!(
                    "sync round {round} did not end within {ROUND_BOUND:?}"
                ));
                None
            }
            Ok(Err(e)) => {
                if self.strict {
                    self.violation(format!("sync round {round}: {e}"));
                }
                None
            }
            Ok(Ok(r)) => Some(r),
        }
    }

    /// Whether a strict round did what it should: `want` downloaded and
    /// failed files.
    fn expect(&self, round: usize, got: &Option<SyncReport>, want: (usize, usize)) {
        let got = got.as_ref().map(|r| (r.downloaded, r.failures));
        if self.strict && got.is_some_and(|g| g != want) {
            self.violation(format!(
                "sync round {round}: (downloaded, failed) {got:?}, not {want:?}"
            ));
        }
    }

    /// Runs `place` (putting A's files in place for a round); false, with
    /// a violation naming `what`, if it failed.
    fn placed(&self, what: &str, place: impl FnOnce() -> std::io::Result<()>) -> bool {
        match place() {
            Ok(()) => true,
            Err(e) => {
                self.violation(failed(what, e));
                false
            }
        }
    }

    /// Sync round `round`, which must download and fail `want` files and
    /// leave B holding `version` of each (`None`: nothing bad).
    async fn round(&self, round: usize, want: (usize, usize), version: Option<usize>) {
        let got = self.sync(round).await;
        self.expect(round, &got, want);
        self.check(round, version);
    }

    /// The four rounds, `gap` apart (see the module's documentation).
    pub(crate) async fn rounds(&self, gap: Duration) {
        let f = self.fixture;
        if !self.placed("placing version 1", || {
            self.place("note", &f.note[0])?;
            self.place("album", &f.album[0])
        }) {
            return;
        }
        self.round(1, (2, 0), Some(0)).await;

        self.sim.sleep(gap).await;
        if !self.placed("placing the bad files", || {
            self.place("note", &f.forged_note)?;
            self.place("album", &f.album[1])?;
            // A lists the good version's sum ...
            self.a
                .meta(&self.served("album"))
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            // ... and serves other bytes.
            self.corrupt_in_place("album")
        }) {
            return;
        }
        self.round(2, (0, 2), None).await;

        self.sim.sleep(gap).await;
        if !self.placed("placing version 2", || {
            self.place("note", &f.note[1])?;
            self.place("album", &f.album[1])
        }) {
            return;
        }
        let Some(disk) = &self.disk else {
            return self.round(3, (2, 0), Some(1)).await;
        };
        if !self.placed("filling B's disk", || disk.fill(DISK_ROOM)) {
            return;
        }
        let got = self.sync(3).await;
        self.expect(3, &got, (1, 1));
        let why = got.as_ref().and_then(|r| {
            r.failed
                .iter()
                .find(|(n, _)| n == "album.pgp")
                .map(|(_, why)| why.clone())
        });
        if self.strict && !why.as_ref().is_some_and(|w| w.contains("No space left")) {
            self.violation(format!(
                "sync round 3: the album did not run out of space: {why:?}"
            ));
        }
        self.check(3, None);
        if !self.placed("freeing B's disk", || disk.free()) {
            return;
        }
        self.sim.sleep(gap).await;
        self.round(4, (1, 0), Some(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    /// `mau-simrt fixtures` makes fixtures that load and fit the rounds, as
    /// the committed ones do; it does not overwrite a directory.
    #[test]
    fn generated_fixtures_load_and_fit_the_rounds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("friends");
        Fixture::generate(&out).expect("generate");
        let again = Fixture::generate(&out);
        assert!(again.is_err_and(|e| e.contains("exists already")));
        let new = Fixture::load(&out).expect("load");
        let committed = Fixture::committed().expect("committed");
        for f in [&new, committed] {
            // Both albums streamed to a partial file, neither fits in the
            // room B's full disk has left; the notes do.
            for album in &f.album {
                assert!(album.len() as u64 > (1 << 20) && album.len() as u64 > DISK_ROOM);
            }
            for note in f.note.iter().chain([&f.forged_note]) {
                assert!((note.len() as u64) < DISK_ROOM / 4, "{}", note.len());
            }
            assert_ne!(f.note[0], f.note[1]);
            assert_ne!(f.album[0], f.album[1]);
        }
        assert_ne!(new.a, committed.a, "new keys");
    }

    /// The invariant can fail: a bad copy in B's directory is reported.
    #[test]
    fn a_bad_copy_breaks_the_invariant() {
        let fixture = Fixture::committed().expect("fixture");
        let dir = tempfile::tempdir().expect("tempdir");
        let sim = Sim::new(1);
        let (s, d) = (sim.clone(), dir.path().to_path_buf());
        let ip = |n| IpAddr::V4(Ipv4Addr::new(10, 9, 0, n));
        let found = sim.block_on(Duration::from_secs(60), async move {
            let place = Placement {
                a: ip(1),
                b: ip(2),
                bootstrap: Vec::new(),
            };
            let f = Friends::start(&s, fixture, &d, place, 1, true, false)
                .await
                .expect("friends");
            let taken = |f: &Friends| std::mem::take(&mut *f.violations.lock().expect("lock"));
            f.check(0, None);
            let before = taken(&f);
            let copy = f.b.dir_of(&fixture.a).join("note.pgp");
            std::fs::write(&copy, &fixture.forged_note).expect("write");
            f.check(0, None);
            let bad = taken(&f);
            std::fs::write(&copy, &fixture.note[0]).expect("write");
            f.check(0, None);
            (before, bad, taken(&f))
        });
        sim.clear();
        let (before, bad, good) = found.expect("simulation");
        assert!(before.is_empty(), "{before:?}");
        assert!(
            bad.len() == 1 && bad[0].contains("replaced by a bad file"),
            "{bad:?}"
        );
        assert!(good.is_empty(), "{good:?}");
    }
}
