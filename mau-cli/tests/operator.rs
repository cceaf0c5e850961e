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

/// `mau` without MAU_PASSPHRASE (and no terminal to prompt on).
fn no_passphrase(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = mau(dir)
        .env_remove("MAU_PASSPHRASE")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run mau");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn public_information_needs_no_passphrase() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, _b, af, bf) = common::alice_and_bob(tmp.path());
    let (good, out, err) = no_passphrase(&a, &["show"]);
    assert!(
        good && out.contains(&af) && out.contains("Alice"),
        "{out}{err}"
    );
    let (good, out, err) = no_passphrase(&a, &["export"]);
    assert!(
        good && out.contains("BEGIN PGP PUBLIC KEY BLOCK"),
        "{out}{err}"
    );
    let (good, out, err) = no_passphrase(&a, &["friend", "list"]);
    assert!(
        good && out.contains(&bf) && out.contains("Bob"),
        "{out}{err}"
    );
    // What is secret still needs it.
    let (good, _, err) = no_passphrase(&a, &["files"]);
    assert!(!good && err.contains("passphrase"), "{err}");
    // A replaced account is not described by what was remembered.
    std::fs::remove_dir_all(&a).expect("rm");
    let (good, _, err) = no_passphrase(&a, &["show"]);
    assert!(!good && err.contains("no account"), "{err}");
}

#[test]
fn destructive_commands_ask_or_want_yes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, af, bf) = common::alice_and_bob(tmp.path());
    let note = tmp.path().join("note.txt");
    std::fs::write(&note, "x").expect("write");
    ok(&a, &["share", note.to_str().expect("utf8")]);
    ok(&b, &["follow", &af]);
    for (dir, args) in [
        (&a, vec!["delete", "note.txt"]),
        (&b, vec!["unfollow", af.as_str()]),
        (&a, vec!["friend", "remove", bf.as_str()]),
    ] {
        let out = mau(dir)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--yes"), "{args:?}: {err}");
    }
    // Nothing changed...
    assert!(ok(&a, &["files"]).contains("note.txt"));
    assert!(ok(&b, &["follows"]).contains(&af));
    assert!(ok(&a, &["friend", "list"]).contains(&bf));
    // ... until --yes.
    ok(&a, &["delete", "note.txt", "--yes"]);
    ok(&b, &["unfollow", &af, "-y"]);
    ok(&a, &["friend", "remove", &bf, "--yes"]);
    assert!(!ok(&a, &["files"]).contains("note.txt"));
    assert!(!ok(&b, &["follows"]).contains(&af));
    assert!(!ok(&a, &["friend", "list"]).contains(&bf));
}

#[test]
fn destructive_commands_ask_on_a_terminal() {
    // util-linux `script` gives mau a terminal; "n" keeps the file, "y" deletes it.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("`script` (util-linux) is needed: apt-get install util-linux");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("acct");
    ok(&dir, &["init", "--name", "Alice"]);
    let note = tmp.path().join("note.txt");
    std::fs::write(&note, "x").expect("write");
    ok(&dir, &["share", note.to_str().expect("utf8")]);
    let on_terminal = |answer: &str| {
        let cmd = format!(
            "{} --dir {} delete note.txt",
            env!("CARGO_BIN_EXE_mau"),
            dir.display()
        );
        let mut child = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("MAU_PASSPHRASE", common::PASS)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("script");
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(answer.as_bytes()).expect("answer");
        let out = child.wait_with_output().expect("wait");
        drop(stdin);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let out = on_terminal("n\n");
    assert!(out.contains("[y/N]"), "{out}");
    assert!(ok(&dir, &["files"]).contains("note.txt"), "{out}");
    on_terminal("y\n");
    assert!(!ok(&dir, &["files"]).contains("note.txt"));
}

#[test]
fn help_has_examples_the_global_options_once_and_init_first() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = ok(tmp.path(), &["--help"]);
    assert!(
        top.contains("Examples:") && top.contains("Exit status"),
        "{top}"
    );
    let commands: Vec<&str> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(commands.first(), Some(&"init"), "{top}");
    for sub in [
        &["init", "--help"][..],
        &["server", "start", "--help"],
        &["sync", "--help"],
    ] {
        let help = ok(tmp.path(), sub);
        // One line for the option, one for its description at most.
        let runtime = help.lines().filter(|l| l.contains("--runtime")).count();
        assert_eq!(runtime, 1, "{sub:?}: {help}");
        assert!(
            !help.contains("possible values") && !help.contains("smol:"),
            "{sub:?}: {help}"
        );
    }
    assert!(ok(tmp.path(), &["server", "start", "--help"]).contains("Examples:"));
}

/// Parses stdout as JSON.
fn json(dir: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = ok(dir, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

#[test]
fn json_listings_and_json_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, af, bf) = common::alice_and_bob(tmp.path());
    let note = tmp.path().join("note.txt");
    std::fs::write(&note, vec![b'x'; 3000]).expect("write");
    ok(&a, &["share", note.to_str().expect("utf8"), "--to", &bf]);
    ok(&b, &["follow", &af]);

    let show = json(&a, &["show", "--json"]);
    assert_eq!(show["fingerprint"], af.as_str());
    let files = json(&a, &["--json", "files"]);
    assert_eq!(files[0]["name"], "note.txt.pgp");
    assert_eq!(files[0]["shared_with"][0], bf.as_str());
    assert!(files[0]["size"].as_u64().is_some_and(|s| s > 0), "{files}");
    let friends = json(&a, &["friend", "list", "--json"]);
    assert_eq!(friends[0]["fingerprint"], bf.as_str());
    assert_eq!(friends[0]["user_ids"][0], "Bob");
    let follows = json(&b, &["follows", "--json"]);
    assert_eq!(follows[0]["fingerprint"], af.as_str());
    assert!(follows[0]["last_sync"].is_null(), "{follows}");

    // An error under --json: a JSON object on stdout, the exit status kept.
    let out = mau(&a)
        .args(["open", "nothing-here", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON error");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing-here")),
        "{v}"
    );
    assert_eq!(v["error"]["exit_code"], 1);
    // Plain text without --json: sizes for people, times in whole seconds.
    let files = ok(&a, &["files"]);
    assert!(files.contains("KiB"), "{files}");
    let modified = files
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3));
    assert!(
        modified.is_some_and(|t| t.ends_with('Z') && !t.contains('.')),
        "{files}"
    );
}

/// A server whose stderr goes to `log`, with `extra` flags and environment.
fn serve_logged(
    dir: &std::path::Path,
    log: &std::path::Path,
    listen: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (common::Proc, String) {
    use std::io::BufRead;
    let mut cmd = mau(dir);
    cmd.args(["server", "start", "--listen", listen, "--no-mdns"])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let mut banner = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut banner)
        .expect("banner");
    (common::Proc(child), banner)
}

#[test]
fn logs_have_no_colour_off_a_terminal_and_no_rust_options() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, _, _) = common::alice_and_bob(tmp.path());
    let (la, lb) = (tmp.path().join("a.log"), tmp.path().join("b.log"));
    let debug = [("MAU_LOG_LEVEL", "debug")];
    let (alice, banner) = serve_logged(&a, &la, "127.0.0.1:0", &[], &debug);
    let words: Vec<&str> = banner.split_whitespace().collect();
    let spec = format!("{}@{}", words[2], words[5]);
    let (bob, _) = serve_logged(&b, &lb, "127.0.0.1:0", &["--bootstrap", &spec], &debug);
    common::until("bob joined alice", || {
        ok(&b, &["peers", "list"]).contains(words[2])
    });
    drop((alice, bob));
    for log in [&la, &lb] {
        let text = std::fs::read_to_string(log).expect("log");
        assert!(text.contains("DEBUG"), "{text}");
        assert!(!text.contains('\u{1b}'), "colour codes in a file: {text}");
        assert!(!text.contains("Some("), "Rust's Some(..) in a log: {text}");
    }
}

#[test]
fn smaller_rough_edges() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, af, _) = common::alice_and_bob(tmp.path());
    // localhost:PORT is a listen address; a node with no peers warns.
    let log = tmp.path().join("a.log");
    let (server, banner) = serve_logged(&a, &log, "localhost:0", &[], &[]);
    assert!(banner.contains("listening on 127.0.0.1:"), "{banner}");
    drop(server);
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(text.contains("no peers known"), "{text}");

    // `friend add -` reads the key from stdin.
    let c = tmp.path().join("carol");
    ok(&c, &["init", "--name", "Carol"]);
    let key = ok(&c, &["export"]);
    let mut child = mau(&a)
        .args(["friend", "add", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(key.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Carol"),
        "{out:?}"
    );
    // A secret-key file (an account.pgp) is named as such.
    let secret = b.join(".mau/account.pgp");
    let (good, _, err) = run(&a, &["friend", "add", secret.to_str().expect("utf8")]);
    assert!(
        !good && err.contains("not a public key") && !err.contains("keyring"),
        "{err}"
    );
    // A directory to share is refused in plain words.
    let (good, _, err) = run(&a, &["share", tmp.path().to_str().expect("utf8")]);
    assert!(!good && err.contains("is a directory"), "{err}");
    // A bad bootstrap.txt line is named by file and line.
    std::fs::write(
        a.join(".mau-rs/bootstrap.txt"),
        format!("# peers\n{af}@127.0.0.1:9\nnot-a-peer\n"),
    )
    .expect("write");
    let (good, _, err) = run(
        &a,
        &["server", "start", "--listen", "127.0.0.1:0", "--no-mdns"],
    );
    assert!(!good && err.contains("bootstrap.txt:3"), "{err}");
    std::fs::remove_file(a.join(".mau-rs/bootstrap.txt")).expect("rm");

    // Old versions are listed and opened.
    let note = tmp.path().join("note.txt");
    std::fs::write(&note, "first").expect("write");
    ok(&a, &["share", note.to_str().expect("utf8")]);
    std::fs::write(&note, "second").expect("write");
    ok(&a, &["share", note.to_str().expect("utf8")]);
    let versions = json(&a, &["versions", "note.txt", "--json"]);
    let id = versions[0]["version"]
        .as_str()
        .expect("a version")
        .to_string();
    assert_eq!(ok(&a, &["open", "note.txt"]), "second");
    assert_eq!(
        ok(&a, &["open", "note.txt", "--version", &id[..8]]),
        "first"
    );
    let (good, _, err) = run(&a, &["open", "note.txt", "--version", "ffff"]);
    assert!(!good && err.contains("no old version"), "{err}");
}

#[test]
fn completions_man_page_status_stop_exit_codes_and_closed_pipes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(dir, &["init", "--name", "Alice"]);
    assert!(ok(dir, &["completions", "bash"]).contains("_mau"));
    assert!(ok(dir, &["completions", "zsh"]).contains("#compdef mau"));
    assert!(ok(dir, &["man"]).contains(".TH mau"));

    // No server: status and the control commands exit 3.
    for args in [&["status"][..], &["server", "status"], &["peers", "list"]] {
        let out = mau(dir).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(3), "{args:?}: {out:?}");
    }
    // A bad command line exits 2.
    let out = mau(dir).args(["frobnicate"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));

    let mut server = serve(dir, &[]);
    let status = json(dir, &["status", "--json"]);
    assert_eq!(status["fingerprint"], server.fingerprint.as_str());
    assert_eq!(status["listen"], server.address.as_str());
    assert_eq!(status["pid"], server.proc.0.id());
    let text = ok(dir, &["server", "status"]);
    assert!(
        text.contains("uptime:") && text.contains(&server.address),
        "{text}"
    );
    let out = ok(dir, &["server", "stop"]);
    assert!(out.contains("stopped"), "{out}");
    let exit = server.proc.0.wait().expect("wait");
    assert!(exit.success(), "{exit:?}");
    assert!(dir.join(".mau-rs/routing_table.json").is_file());
    let out = mau(dir).args(["server", "status"]).output().expect("run");
    assert_eq!(out.status.code(), Some(3));

    // A reader that goes away (`mau show | head -1`) ends every command quietly.
    for args in [&["show"][..], &["man"], &["export"], &["files"]] {
        let mut child = mau(dir)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {:?} {err}",
            out.status
        );
    }
}

/// `promtool check metrics` passes `body` without a word.
fn promtool_check(body: &str) {
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut promtool) = promtool else {
        panic!("promtool is missing: install it with `apt-get install -y prometheus` (Debian)");
    };
    use std::io::Write;
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `GET /metrics` over plain HTTP; returns (head, body).
fn scrape(addr: &str, accept: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_string(), body.to_string())
}

#[test]
fn metrics_are_served_on_their_own_listener_and_pass_promtool() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, c) = (tmp.path().join("alice"), tmp.path().join("carol"));
    ok(&a, &["init", "--name", "Alice"]);
    ok(&c, &["init", "--name", "Carol"]);
    let carol = serve(&c, &[]);
    // Never on the peer port.
    let (good, _, err) = run(
        &a,
        &[
            "server",
            "start",
            "--listen",
            "127.0.0.1:7",
            "--metrics",
            "127.0.0.1:7",
        ],
    );
    assert!(!good && err.contains("peer port"), "{err}");
    let alice = serve(
        &a,
        &["--bootstrap", &carol.spec(), "--metrics", "127.0.0.1:0"],
    );
    common::until("alice joined carol", || {
        ok(&a, &["peers", "list"]).contains(&carol.fingerprint)
    });
    let status = json(&a, &["status", "--json"]);
    let addr = status["metrics"]
        .as_str()
        .expect("metrics address")
        .to_string();
    assert_ne!(addr, alice.address);

    // Carol pings Alice's claimed address before her table takes Alice:
    // an RPC Alice answered.
    common::until("alice counted an RPC she answered", || {
        scrape(&addr, "text/plain")
            .1
            .contains("mau_rpcs_received_total{kind=\"ping\",outcome=\"ok\"}")
    });
    let (head, body) = scrape(&addr, "text/plain");
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("version=0.0.4"),
        "{head}"
    );
    assert!(body.contains("mau_routing_table_peers 1"), "{body}");
    assert!(
        body.contains("# TYPE mau_lookup_duration_seconds histogram"),
        "{body}"
    );
    promtool_check(&body);

    let (head, body) = scrape(&addr, "application/openmetrics-text; version=1.0.0");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(
        body.ends_with("# EOF\n") && body.contains("# UNIT mau_uptime_seconds seconds"),
        "{body}"
    );
    // The peer port does not answer plain-HTTP scrapes.
    let mut s = std::net::TcpStream::connect(&alice.address).expect("peer port");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    use std::io::{Read, Write};
    write!(s, "GET /metrics HTTP/1.1\r\n\r\n").expect("write");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("mau_"),
        "the peer port served metrics"
    );
}

#[test]
fn status_says_whether_peers_reach_the_server_where_and_through_which_mapping() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("alice");
    ok(&a, &["init", "--name", "Alice"]);
    let alice_log = tmp.path().join("alice.log");
    let (_alice, banner) = serve_logged(&a, &alice_log, "127.0.0.1:0", &[], &[]);
    let words: Vec<&str> = banner.split_whitespace().collect();
    let (alice_fp, alice_addr) = (words[2].to_string(), words[5].to_string());
    // Three peers on three loopback addresses (three voices) join through her.
    let mut peers = Vec::new();
    for i in 0..3u8 {
        let d = tmp.path().join(format!("peer{i}"));
        ok(&d, &["init", "--name", &format!("Peer {i}")]);
        let listen = format!("127.0.0.{}:0", 4 + i);
        let boot = format!("{alice_fp}@{alice_addr}");
        let log = tmp.path().join(format!("peer{i}.log"));
        let (p, _) = serve_logged(&d, &log, &listen, &["--bootstrap", &boot], &[]);
        peers.push((p, common::fingerprint(&d)));
    }
    common::until("alice has the three peers", || {
        let list = ok(&a, &["peers", "list"]);
        peers.iter().all(|(_, f)| list.contains(f.as_str()))
    });

    let status = json(&a, &["status", "--check", "--json"]);
    let reach = &status["reachability"];
    assert_eq!(reach["state"], "reachable", "{status}");
    assert_eq!(reach["address"], alice_addr.as_str(), "{status}");
    assert_eq!(reach["reached_by"], 3, "{status}");
    assert_eq!(reach["public_ip"], "127.0.0.1", "{status}");
    assert!(reach["mapping"].is_null(), "{status}");
    let text = ok(&a, &["status"]);
    assert!(
        text.contains(&format!("reachable:  yes, at {alice_addr}"))
            && text.contains("public IP:  127.0.0.1 (seen by peers of 3 networks)")
            && text.contains("mapping:    none"),
        "{text}"
    );
    let log = std::fs::read_to_string(&alice_log).expect("log");
    assert!(
        log.contains("no port mapping") && log.contains("reachable: peers of several networks"),
        "{log}"
    );
}

/// The value of the sample `name` (with its labels) in a Prometheus text.
fn sample(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn sync_counts_in_its_output_and_both_servers_metrics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (a, b, af, bf) = common::alice_and_bob(tmp.path());
    let note = tmp.path().join("note.txt");
    std::fs::write(&note, vec![b'x'; 5000]).expect("note");
    ok(&a, &["share", note.to_str().expect("utf8"), "--to", &bf]);
    ok(
        &a,
        &[
            "share",
            note.to_str().expect("utf8"),
            "--to",
            &bf,
            "--name",
            "two",
        ],
    );
    let alice = serve(&a, &["--metrics", "127.0.0.1:0"]);
    let _bob = serve(&b, &["--metrics", "127.0.0.1:0"]);
    let metrics_of = |dir: &std::path::Path| {
        json(dir, &["status", "--json"])["metrics"]
            .as_str()
            .expect("metrics address")
            .to_string()
    };
    let (at_alice, at_bob) = (metrics_of(&a), metrics_of(&b));
    ok(&b, &["follow", &af]);

    // The counters in sync's own output, as JSON.
    let reports = json(&b, &["sync", &af, "--address", &alice.address, "--json"]);
    let r = &reports[0];
    assert_eq!(r["friend"], af.as_str(), "{reports}");
    assert_eq!(r["downloaded"], 2, "{reports}");
    assert_eq!(r["failed"], 0, "{reports}");
    assert_eq!(r["complete"], true, "{reports}");
    let fetched = r["bytes"].as_u64().expect("bytes");
    assert!(fetched > 10_000, "{reports}");
    // And in text (--full: lists both again, whenever the last sync was).
    let text = ok(&b, &["sync", &af, "--address", &alice.address, "--full"]);
    assert!(text.contains("2 up to date, 0 failed"), "{text}");

    // Bob's server counted what his sync fetched; Alice's what she served.
    let (_, bob_metrics) = scrape(&at_bob, "text/plain");
    let files = |body: &str, dir: &str, outcome: &str| {
        sample(
            body,
            &format!("mau_content_files_total{{direction=\"{dir}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(
        files(&bob_metrics, "fetched", "ok"),
        Some(2.0),
        "{bob_metrics}"
    );
    assert_eq!(files(&bob_metrics, "fetched", "unchanged"), Some(2.0));
    assert_eq!(
        sample(
            &bob_metrics,
            "mau_content_bytes_total{direction=\"fetched\"}"
        ),
        Some(fetched as f64)
    );
    assert_eq!(
        sample(&bob_metrics, "mau_syncs_total{result=\"complete\"}"),
        Some(2.0)
    );
    common::until("alice counted the files she served", || {
        files(&scrape(&at_alice, "text/plain").1, "served", "ok") == Some(2.0)
    });
    let (_, alice_metrics) = scrape(&at_alice, "text/plain");
    assert_eq!(
        sample(
            &alice_metrics,
            "mau_content_bytes_total{direction=\"served\"}"
        ),
        Some(fetched as f64),
        "{alice_metrics}"
    );
    promtool_check(&alice_metrics);
    promtool_check(&bob_metrics);
}

#[test]
fn reach_quorum_is_the_operators_choice() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (e, f) = (tmp.path().join("erin"), tmp.path().join("frank"));
    ok(&e, &["init", "--name", "Erin"]);
    ok(&f, &["init", "--name", "Frank"]);
    let log = |n: &str| tmp.path().join(format!("{n}.log"));
    let (_erin, banner) = serve_logged(&e, &log("e"), "127.0.0.1:0", &["--reach-quorum", "1"], &[]);
    let words: Vec<&str> = banner.split_whitespace().collect();
    let boot = format!("{}@{}", words[2], words[5]);
    let (_frank, _) = serve_logged(&f, &log("f"), "127.0.0.4:0", &["--bootstrap", &boot], &[]);
    let frank_fp = common::fingerprint(&f);
    common::until("erin has frank", || {
        ok(&e, &["peers", "list"]).contains(&frank_fp)
    });
    common::until("frank has erin", || {
        ok(&f, &["peers", "list"]).contains(words[2])
    });
    // One peer is enough for Erin, who asked for it...
    let erin = json(&e, &["status", "--check", "--json"]);
    assert_eq!(erin["reachability"]["state"], "reachable", "{erin}");
    assert_eq!(erin["reachability"]["reached_by"], 1, "{erin}");
    assert_eq!(erin["reachability"]["public_ip"], "127.0.0.1", "{erin}");
    // ...and not for Frank, on the default quorum of 3.
    let frank = json(&f, &["status", "--check", "--json"]);
    assert_eq!(frank["reachability"]["state"], "unknown", "{frank}");
    assert!(frank["reachability"]["public_ip"].is_null(), "{frank}");
    let (good, _, err) = run(&f, &["server", "start", "--reach-quorum", "0"]);
    assert!(!good && err.contains("--reach-quorum"), "{err}");
}
