//! `mau share`, `follow`, `sync`, `files`, `open`, `delete` end to end on
//! loopback: Alice serves, Bob follows her and syncs (first with the server
//! running in Bob's directory, so its DHT is asked too, then with --address
//! only), and what Alice changes arrives.

use std::path::Path;

mod common;
use common::{ok, run, serve};

fn fingerprint(dir: &Path) -> String {
    ok(dir, &["show"])
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint:"))
        .expect("fingerprint line")
        .trim()
        .to_string()
}

#[test]
fn share_follow_sync_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b) = (tmp.path().join("alice"), tmp.path().join("bob"));
    ok(&a, &["init", "--name", "Alice"]);
    ok(&b, &["init", "--name", "Bob"]);
    let (ka, kb) = (tmp.path().join("a.pgp"), tmp.path().join("b.pgp"));
    ok(&a, &["export", "--output", ka.to_str().expect("utf8")]);
    ok(&b, &["export", "--output", kb.to_str().expect("utf8")]);
    ok(&a, &["friend", "add", kb.to_str().expect("utf8")]);
    ok(&b, &["friend", "add", ka.to_str().expect("utf8")]);
    let (af, bf) = (fingerprint(&a), fingerprint(&b));

    let note = tmp.path().join("note.txt");
    std::fs::write(&note, "hello Bob").expect("write");
    ok(&a, &["share", note.to_str().expect("utf8"), "--to", &bf]);
    ok(
        &a,
        &["share", note.to_str().expect("utf8"), "--name", "diary"],
    );
    let files = ok(&a, &["files"]);
    assert!(
        files.contains("note.txt.pgp") && files.contains("Bob"),
        "{files}"
    );
    assert!(files.contains("diary.pgp"), "{files}");

    let alice = serve(&a, &[]);
    let addr = alice.address.clone();
    // Not followed yet: refused.
    let (good, _, err) = run(&b, &["sync", &af, "--address", &addr]);
    assert!(!good && err.contains("not followed"), "{err}");
    ok(&b, &["follow", &af]);
    // Bob's own server runs too: sync asks its DHT as well as --address.
    let _bob = serve(&b, &[]);
    let out = ok(&b, &["sync", "--address", &addr]);
    assert!(out.contains("1 listed, 1 downloaded"), "{out}");
    assert_eq!(
        ok(&b, &["open", "note.txt", "--fingerprint", &af]),
        "hello Bob"
    );
    let (good, _, _) = run(&b, &["open", "diary", "--fingerprint", &af]);
    assert!(!good, "the private file must not have arrived");

    // Alice edits: the next sync fetches the new version; the old is kept.
    std::fs::write(&note, "hello again").expect("write");
    ok(&a, &["share", note.to_str().expect("utf8"), "--to", &bf]);
    let out = ok(&b, &["sync", &af, "--address", &addr]);
    assert!(out.contains("1 downloaded"), "{out}");
    assert_eq!(
        ok(&b, &["open", "note.txt", "--fingerprint", &af]),
        "hello again"
    );
    let files = ok(&b, &["files", "--fingerprint", &af]);
    assert!(files.contains("note.txt.pgp"), "{files}");
    let follows = ok(&b, &["follows"]);
    assert!(
        follows.contains(&af) && !follows.contains("never"),
        "{follows}"
    );

    ok(&a, &["delete", "diary"]);
    assert!(!ok(&a, &["files"]).contains("diary"));
    ok(&b, &["unfollow", &af]);
    assert!(b.join(format!(".{af}")).join("note.txt.pgp").is_file());
}
