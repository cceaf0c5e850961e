//! mau-rs keeps its own state in `DIR/.mau-rs/`, never in `DIR/.mau/`, where
//! the Go peer reads every file but `account.pgp` as a friend's key (issue
//! 14): a directory a mau-rs server and sync ran in stays usable by Go, and
//! state an older mau-rs left in `.mau/` is moved out on start.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
use common::{alice_and_bob, ok, run, serve};

/// The names in `DIR/.mau/` that Go's keyring would not read as a key:
/// anything but `account.pgp` and `<fingerprint>.pgp` files.
fn not_go_keys(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join(".mau"))
        .expect("read .mau")
        .map(|e| e.expect("entry"))
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let key = name == "account.pgp"
                || name
                    .strip_suffix(".pgp")
                    .is_some_and(|f| f.len() == 40 && f.bytes().all(|b| b.is_ascii_hexdigit()));
            !(key && e.path().is_file())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn server_and_sync_leave_only_keys_in_dot_mau_and_old_state_moves_out() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, af, bf) = alice_and_bob(root.path());
    let note = root.path().join("note.txt");
    std::fs::write(&note, "for bob").unwrap();
    ok(&a, &["share", note.to_str().unwrap(), "--to", &bf]);
    let alice = serve(&a, &[]);
    let alice_addr = alice.address.clone();

    // What an older mau-rs left in Bob's `.mau/`: the bootstrap list (naming
    // Alice), a routing table, a sync state; Go's own sync state looks the same.
    let old = b.join(".mau");
    std::fs::write(old.join("bootstrap.txt"), format!("{}\n", alice.spec())).unwrap();
    std::fs::write(
        old.join("routing_table.json"),
        r#"{"version":1,"peers":[]}"#,
    )
    .unwrap();
    std::fs::write(old.join("sync_state.json"), r#"{"last_sync":{}}"#).unwrap();
    assert_eq!(not_go_keys(&b).len(), 3);

    let mut bob = serve(&b, &[]);
    // The bootstrap list was read at its new place: Bob joins through Alice.
    let start = Instant::now();
    loop {
        let (good, out, _) = run(&b, &["peers", "list", "--json"]);
        if good && out.contains(&af) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "bob never joined through the moved bootstrap.txt"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(&b, &["follow", &af]);
    let out = ok(&b, &["sync", "--address", &alice_addr]);
    assert!(out.contains("1 downloaded"), "{out}");
    // While the server runs (control socket, table) and after a sync.
    assert_eq!(
        not_go_keys(&b),
        Vec::<String>::new(),
        "non-key files in .mau while serving"
    );
    let pid = bob.proc.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(bob.proc.0.wait().unwrap().success());

    assert_eq!(
        not_go_keys(&b),
        Vec::<String>::new(),
        "non-key files in .mau after a stop"
    );
    let state = b.join(".mau-rs");
    for name in [
        "bootstrap.txt",
        "routing_table.json",
        "sync_state.json",
        "go-sync-state.json",
    ] {
        assert!(state.join(name).is_file(), "{name} missing in .mau-rs");
    }
    let table = std::fs::read_to_string(state.join("routing_table.json")).unwrap();
    assert!(table.contains(&af), "the saved table lacks alice: {table}");
    let synced = std::fs::read_to_string(state.join("sync_state.json")).unwrap();
    assert!(synced.contains(&af), "{synced}");
}
