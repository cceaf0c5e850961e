//! `kill -9` at random moments never leaves a state file the next start
//! cannot load: a server saving its routing table and a `mau sync` saving
//! the sync state are SIGKILLed after a seeded random delay, again and
//! again, in one account directory; after every kill both files must be
//! absent or load with the project's own loaders, and the temporary files
//! kills leave must not pile up.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use mau_proto::Rng;

mod common;
use common::{alice_and_bob, mau, ok, serve, Proc};

/// The temporary files `write_atomic` leaves when killed mid-write.
fn temporaries(mau_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(mau_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .map(|n| n.to_string_lossy())
                        .is_some_and(|n| n.starts_with('.') && n.contains(".tmp."))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kill_9_never_leaves_an_unloadable_state_file() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, af, bf) = alice_and_bob(tmp.path());
    ok(&b, &["follow", &af]);

    // Alice shares many files with Bob: one signed and encrypted file,
    // copied under other names (the name is not part of what is signed), so
    // a sync has work to do for a while.
    let note = tmp.path().join("note.bin");
    let mut rng = Rng::new(0x5eed);
    let body: Vec<u8> = (0..64 * 1024).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(&note, &body).expect("write");
    ok(&a, &["share", note.to_str().expect("utf8"), "--to", &bf]);
    let shared = a.join(&af).join("note.bin.pgp");
    for i in 0..40 {
        std::fs::copy(&shared, a.join(&af).join(format!("note{i}.bin.pgp"))).expect("copy");
    }
    let alice = serve(&a, &[]);
    let alice_spec = alice.spec();
    let alice_addr = alice_spec.split('@').nth(1).expect("address").to_string();

    // mau-rs's own state (out of the Go peer's keyring directory `.mau`).
    let mau_dir = mau_identity::StateDir::new(&b).ensure().expect("state dir");
    let table = mau_dir.join("routing_table.json");
    // What a kill during an earlier run left: a half-written temporary of
    // each file, an hour old. The next successful save must sweep them.
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    let planted: Vec<PathBuf> = ["routing_table.json", "sync_state.json"]
        .iter()
        .map(|name| {
            let p = mau_dir.join(format!(".{name}.tmp.999999.0"));
            std::fs::write(&p, b"{\"version\":1,\"pe").expect("plant");
            std::fs::File::options()
                .write(true)
                .open(&p)
                .and_then(|f| f.set_modified(hour_ago))
                .expect("age");
            p
        })
        .collect();

    let (mut tables, mut states, mut completed) = (0, 0, 0);
    let mut iterations = 0;
    for i in 0..20 {
        if started.elapsed() > Duration::from_secs(45) {
            break;
        }
        iterations += 1;
        // Every other round Bob loses his copies, so the sync downloads again.
        if i % 2 == 0 {
            if let Ok(d) = std::fs::read_dir(b.join(&af)) {
                for e in d.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let server = mau(&b)
            .args(["server", "start", "--listen", "127.0.0.1:0", "--no-mdns"])
            .args(["--bootstrap", &alice_spec])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn server");
        let mut server = Proc(server);
        let sync = mau(&b)
            .args(["sync", &af, "--full", "--address", &alice_addr])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sync");
        let mut sync = Proc(sync);
        // Seeded: the same delays every run. Up to 2.5 s covers a server
        // starting, joining and saving, and a sync listing, downloading and
        // saving its state (or already done).
        let delay = Duration::from_millis(rng.below(2500));
        std::thread::sleep(delay);
        for p in [&mut server, &mut sync] {
            p.0.kill().expect("SIGKILL");
            let status = p.0.wait().expect("reap");
            completed += usize::from(status.success());
        }

        let peers = mau_net::persist::load_table(&table)
            .unwrap_or_else(|e| panic!("round {i} ({delay:?}): routing table unloadable: {e}"));
        tables += usize::from(!peers.is_empty());
        let state = mau_store::SyncState::load(&b)
            .unwrap_or_else(|e| panic!("round {i} ({delay:?}): sync state unloadable: {e}"));
        states += usize::from(state.last_sync(&af.parse().expect("fpr")).is_some());
        // A kill mid-write leaves at most one temporary per file and run, and
        // the planted stale ones go at the next save: never more than the
        // two planted plus one per round.
        let litter = temporaries(&mau_dir);
        assert!(
            litter.len() <= 2 + i + 1,
            "round {i}: temporaries pile up: {litter:?}"
        );
    }
    eprintln!(
        "{iterations} kills in {:.1} s: table present after {tables}, sync state after {states}, \
         {completed} processes had already exited",
        started.elapsed().as_secs_f64()
    );
    assert!(iterations >= 5, "too slow to test anything");
    // The delays reach past a server's join and a sync's end, so both files
    // were written (and so the stale temporaries swept) at least once.
    assert!(
        tables > 0 && states > 0,
        "never saw a saved file ({tables} tables, {states} states)"
    );
    for p in &planted {
        assert!(!p.exists(), "stale temporary not swept: {}", p.display());
    }
    // A node started after all this loads what the kills left.
    let _bob = serve(&b, &[]);
}
