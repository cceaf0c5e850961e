//! `mau share`, `follow`, `sync`, `files`, `open`, `delete` end to end on
//! loopback: Alice serves, Bob follows her and syncs (first with the server
//! running in Bob's directory, so its DHT is asked too, then with --address
//! only), and what Alice changes arrives.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};

mod common;
use common::{mau, run};

fn ok(dir: &Path, args: &[&str]) -> String {
    let (good, out, err) = run(dir, args);
    assert!(good, "mau {args:?} failed: {out}{err}");
    out
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server on an ephemeral port; returns it and its address.
fn serve(dir: &Path) -> (Server, String) {
    let mut child = mau(dir)
        .args(["server", "start", "--listen", "127.0.0.1:0", "--no-mdns"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read banner");
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(
        words.len() >= 6 && words[3] == "listening",
        "banner: {line}"
    );
    let server = Server(child);
    (server, words[5].to_string())
}

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

    let (_alice, addr) = serve(&a);
    // Not followed yet: refused.
    let (good, _, err) = run(&b, &["sync", &af, "--address", &addr]);
    assert!(!good && err.contains("not followed"), "{err}");
    ok(&b, &["follow", &af]);
    // Bob's own server runs too: sync asks its DHT as well as --address.
    let (_bob, _) = serve(&b);
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
