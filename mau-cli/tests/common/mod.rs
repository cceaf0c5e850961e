//! What the CLI tests share: run the real `mau` binary in an account directory.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Polls `f` every 100 ms until it holds; fails after 30 s naming `what`.
pub fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The passphrase every test account uses.
pub const PASS: &str = "correct horse battery staple";

pub fn mau(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mau"));
    c.arg("--dir")
        .arg(dir)
        .env("MAU_PASSPHRASE", PASS)
        .env_remove("MAU_LOG_LEVEL");
    c
}

/// Runs `mau args`, asserting success; returns stdout.
pub fn ok(dir: &Path, args: &[&str]) -> String {
    let (good, out, err) = run(dir, args);
    assert!(good, "mau {args:?} failed: {out}{err}");
    out
}

/// The account's fingerprint, from `mau show`.
pub fn fingerprint(dir: &Path) -> String {
    ok(dir, &["show"])
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint:"))
        .expect("fingerprint line")
        .trim()
        .to_string()
}

/// Alice and Bob: two accounts under `root` that are each other's friends;
/// returns their directories and fingerprints.
pub fn alice_and_bob(root: &Path) -> (PathBuf, PathBuf, String, String) {
    let (a, b) = (root.join("alice"), root.join("bob"));
    ok(&a, &["init", "--name", "Alice"]);
    ok(&b, &["init", "--name", "Bob"]);
    let (ka, kb) = (root.join("a.pgp"), root.join("b.pgp"));
    ok(&a, &["export", "--output", ka.to_str().expect("utf8")]);
    ok(&b, &["export", "--output", kb.to_str().expect("utf8")]);
    ok(&a, &["friend", "add", kb.to_str().expect("utf8")]);
    ok(&b, &["friend", "add", ka.to_str().expect("utf8")]);
    let (af, bf) = (fingerprint(&a), fingerprint(&b));
    (a, b, af, bf)
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `mau server start` and what its banner said.
pub struct Served {
    /// The server process (killed when dropped).
    pub proc: Proc,
    /// Its fingerprint.
    pub fingerprint: String,
    /// Its listening address.
    pub address: String,
}

impl Served {
    /// "FPR@ADDR", what `--bootstrap` takes.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.fingerprint, self.address)
    }
}

/// Starts a server on an ephemeral loopback port (mDNS off) with `extra` flags.
pub fn serve(dir: &Path, extra: &[&str]) -> Served {
    let mut child = mau(dir)
        .args(["server", "start", "--listen", "127.0.0.1:0", "--no-mdns"])
        .args(extra)
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
    // "mau server FPR listening on ADDR (advertised as ADDR)"
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(
        words.len() >= 6 && words[3] == "listening",
        "unexpected banner {line:?}"
    );
    Served {
        fingerprint: words[2].to_string(),
        address: words[5].to_string(),
        proc: Proc(child),
    }
}

/// Runs `mau args`; returns (success, stdout, stderr).
pub fn run(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = mau(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run mau");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
