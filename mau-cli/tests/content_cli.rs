//! `mau share`, `follow`, `sync`, `files`, `open`, `delete` end to end on
//! loopback: Alice serves, Bob follows her and syncs (first with the server
//! running in Bob's directory, so its DHT is asked too, then with --address
//! only), and what Alice changes arrives.

mod common;
use common::{alice_and_bob, ok, run, serve};

#[test]
fn share_follow_sync_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, af, bf) = alice_and_bob(tmp.path());

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

    ok(&a, &["delete", "diary", "--yes"]);
    assert!(!ok(&a, &["files"]).contains("diary"));
    ok(&b, &["unfollow", &af, "--yes"]);
    assert!(b.join(format!(".{af}")).join("note.txt.pgp").is_file());
}
