//! The `mau` binary end to end, on loopback: accounts, two servers, the
//! control channel (`peers list`, `peers buckets`, `discover`), graceful stop.

use std::process::{Command, Stdio};

mod common;
use common::{mau, run, serve, until};

#[test]
fn two_servers_over_the_control_channel() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (dir, name) in [(a.path(), "alice"), (b.path(), "bob")] {
        let (ok, out, err) = run(
            dir,
            &[
                "init",
                "--name",
                name,
                "--email",
                &format!("{name}@example.org"),
            ],
        );
        assert!(ok, "init failed: {err}");
        assert!(out.contains("created account"), "{out}");
    }
    let (ok, show, _) = run(a.path(), &["show"]);
    assert!(ok && show.contains("alice@example.org"), "{show}");
    // Without a server, the control commands say so clearly.
    let (ok, _, err) = run(b.path(), &["peers", "list"]);
    assert!(!ok && err.contains("no running server"), "{err}");

    let sa = serve(a.path(), &[]);
    let spec_a = sa.spec();
    let fpr_a = sa.fingerprint.clone();
    let mut sb = serve(b.path(), &["--bootstrap", &spec_a]);

    until("bob's table holds alice", || {
        let (ok, out, _) = run(b.path(), &["peers", "list", "--json"]);
        ok && out.contains(&fpr_a)
    });
    let (ok, out, err) = run(b.path(), &["peers", "buckets"]);
    assert!(ok, "{err}");
    assert!(out.contains("BUCKET") && out.contains("1 peers"), "{out}");
    let (ok, out, err) = run(b.path(), &["discover", "--fingerprint", &fpr_a]);
    assert!(ok, "discover failed: {err}");
    assert!(
        out.contains(&spec_a.split('@').nth(1).unwrap().to_string()),
        "{out}"
    );
    // A malformed fingerprint is refused before anything is sent.
    let (ok, _, err) = run(b.path(), &["discover", "--fingerprint", "xyz"]);
    assert!(!ok && err.contains("invalid"), "{err}");

    // curl, a client nobody here wrote, with the exported certificate and key.
    let cert = b.path().join("bob.crt");
    let key = b.path().join("bob.key");
    let (ok, _, err) = run(
        b.path(),
        &[
            "export",
            "--output",
            b.path().join("bob.pgp").to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(ok, "export failed: {err}");
    let url = format!("https://{}/kad/ping", spec_a.split('@').nth(1).unwrap());
    let curl = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--tlsv1.3",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg(&url)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        "200",
        "curl: {}",
        String::from_utf8_lossy(&curl.stderr)
    );
    // Without a client certificate, the server refuses curl.
    let curl = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg(&url)
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&curl.stdout), "200");

    // Graceful stop (SIGTERM) saves the routing table.
    let pid = sb.proc.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = sb.proc.0.wait().unwrap();
    assert!(status.success(), "server exited with {status:?}");
    let table = std::fs::read_to_string(b.path().join(".mau-rs/routing_table.json")).unwrap();
    assert!(table.contains(&fpr_a), "{table}");
}

#[test]
fn wrong_passphrase_is_a_clear_error() {
    let a = tempfile::tempdir().unwrap();
    assert!(run(a.path(), &["init", "--name", "carol"]).0);
    let out = mau(a.path())
        .env("MAU_PASSPHRASE", "wrong")
        .arg("show")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(err.contains("passphrase"), "{err}");
}
