//! What an operator meets around a running server, through the real binary:
//! one server per directory, file outputs, confirmations, JSON, logs.

mod common;
use common::{mau, ok, run, serve};

#[test]
fn a_second_server_in_one_directory_is_refused_and_leaves_the_first_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(dir, &["init", "--name", "Alice"]);
    let first = serve(dir, &[]);
    let (good, _, err) = run(
        dir,
        &["server", "start", "--listen", "127.0.0.1:0", "--no-mdns"],
    );
    assert!(!good, "the second server started: {err}");
    let pid = first.proc.0.id();
    assert!(
        err.contains(&format!("pid {pid}")) && err.contains(&first.address),
        "the error names neither the running server's pid nor its address: {err}"
    );
    // The first server's control socket survived the second's exit.
    let out = ok(dir, &["peers", "list"]);
    assert!(out.contains(&first.fingerprint), "{out}");
    // Once the first is gone (even killed), a new one starts.
    drop(first);
    let again = serve(dir, &[]);
    assert!(ok(dir, &["peers", "list"]).contains(&again.fingerprint));
}

#[test]
fn bare_output_file_names_are_written_in_the_current_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("acct");
    ok(&dir, &["init", "--name", "Alice"]);
    let note = tmp.path().join("note.txt");
    std::fs::write(&note, "hello").expect("write");
    ok(&dir, &["share", note.to_str().expect("utf8")]);
    let run_in_tmp = |args: &[&str]| {
        let out = mau(&dir)
            .args(args)
            .current_dir(tmp.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run mau");
        assert!(
            out.status.success(),
            "mau {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run_in_tmp(&["open", "note.txt", "--output", "h1.txt"]);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("h1.txt")).expect("h1.txt"),
        "hello"
    );
    run_in_tmp(&[
        "export",
        "--output",
        "key.asc",
        "--tls-cert",
        "cert.pem",
        "--tls-key",
        "key.pem",
    ]);
    for f in ["key.asc", "cert.pem", "key.pem"] {
        assert!(tmp.path().join(f).is_file(), "{f} missing");
    }
}

#[test]
fn sync_names_the_lookup_that_failed_and_what_it_waits_for() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_a, b, af, _bf) = common::alice_and_bob(tmp.path());
    ok(&b, &["follow", &af]);
    // No server anywhere: the error says no server runs to ask the DHT.
    let (good, _, err) = run(&b, &["sync"]);
    assert!(
        !good && err.contains("no server runs") && err.contains("--address"),
        "{err}"
    );
    // Bob's server runs alone: it has nobody to ask, and says so.
    let bob = serve(&b, &[]);
    let (good, _, err) = run(&b, &["sync"]);
    assert!(!good && err.contains("knows no peers"), "{err}");
    drop(bob);
    // Bob's server joined through Carol's; Alice's is down: the failed
    // lookup is named, with what it asked.
    let c = tmp.path().join("carol");
    ok(&c, &["init", "--name", "Carol"]);
    let carol = serve(&c, &[]);
    let bob = serve(&b, &["--bootstrap", &carol.spec()]);
    common::until("bob's server knows carol", || {
        ok(&b, &["peers", "list"]).contains(&carol.fingerprint)
    });
    let (good, _, err) = run(&b, &["sync"]);
    assert!(
        !good && err.contains(&format!("DHT lookup for {af} did not find it")),
        "{err}"
    );
    drop(bob);
    // A friend that accepts connections and never answers: sync says what
    // it waits for, at once, and gives up after the idle timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let started = std::time::Instant::now();
    let (good, _, err) = run(&b, &["sync", "--address", &addr, "--idle-timeout", "2"]);
    assert!(!good, "{err}");
    assert!(
        err.contains(&format!("syncing {af} at {addr}")) && err.contains("waiting up to 2s"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}
