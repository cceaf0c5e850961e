//! Network-namespace plumbing for the LAN tests (mDNS, UPnP), written once.
//!
//! Every namespace, veth pair and bridge is created here, inside namespaces
//! named `mau-<tag>-<pid>-<n>`, and removed when the [`Lab`] is dropped (also
//! when a test fails): processes started in them are killed first. Nothing is
//! ever configured in the machine's own namespace, so multicast (mDNS, SSDP)
//! never reaches a real interface.
//!
//! A test calls [`Lab::new`]; it returns `None` (and prints why) only when we
//! are not root or `ip netns` does not work, and the test then skips.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The passphrase of every test account.
pub const PASSPHRASE: &str = "lan-test-passphrase";

/// A set of namespaces and the processes running in them.
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
    children: Vec<Child>,
    /// Scratch directory (accounts, logs, configs), removed with the lab.
    pub dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Lab {
    /// A new, empty lab; `None` (with a printed SKIP) when not root or
    /// `ip netns` is unavailable.
    pub fn new(tag: &str) -> Option<Lab> {
        if !is_root() {
            eprintln!("SKIP {tag}: needs root (network namespaces)");
            return None;
        }
        let tag = format!("mau-{tag}-{}", std::process::id());
        let probe = format!("{tag}-probe");
        let ok = Command::new("ip")
            .args(["netns", "add", &probe])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIP {tag}: `ip netns add` is unavailable here");
            return None;
        }
        let _ = Command::new("ip").args(["netns", "del", &probe]).status();
        Some(Lab {
            tag,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    /// Runs `args` in namespace `ns`; panics if it fails.
    pub fn sh(&self, ns: &str, args: &[&str]) -> Output {
        let out = run(Command::new("ip").args(["netns", "exec", ns]).args(args));
        assert!(
            out.status.success(),
            "{ns}: {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs `args` in `ns`, returning its output whatever the exit status.
    pub fn try_sh(&self, ns: &str, args: &[&str]) -> Output {
        run(Command::new("ip").args(["netns", "exec", ns]).args(args))
    }

    /// A new namespace with loopback up and IPv6 duplicate detection off.
    pub fn add_ns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.tag);
        let out = run(Command::new("ip").args(["netns", "add", &ns]));
        assert!(out.status.success(), "ip netns add {ns}: {out:?}");
        self.namespaces.push(ns.clone());
        self.sh(&ns, &["ip", "link", "set", "lo", "up"]);
        for key in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
        ] {
            self.try_sh(&ns, &["sysctl", "-q", "-w", key]);
        }
        ns
    }

    /// A veth pair between `a` (interface `a_if`) and `b` (`b_if`), both up.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        let out = run(Command::new("ip").args([
            "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
        ]));
        assert!(
            out.status.success(),
            "veth {a}/{a_if} - {b}/{b_if}: {out:?}"
        );
        self.sh(a, &["ip", "link", "set", a_if, "up"]);
        self.sh(b, &["ip", "link", "set", b_if, "up"]);
    }

    /// Adds `addr` (CIDR) to `iface` in `ns`.
    pub fn addr(&self, ns: &str, iface: &str, addr: &str) {
        if addr.contains(':') {
            self.sh(
                ns,
                &["ip", "-6", "addr", "add", addr, "dev", iface, "nodad"],
            );
        } else {
            self.sh(ns, &["ip", "addr", "add", addr, "dev", iface]);
        }
    }

    /// `n` namespaces on one bridge (in its own namespace): node `i` has
    /// `eth0` with 10.77.0.(i+1)/24 and fd77::(i+1)/64, routes for multicast.
    pub fn bridged_lan(&mut self, n: usize) -> Vec<String> {
        let hub = self.add_ns("hub");
        self.sh(
            &hub,
            &[
                "ip",
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        );
        self.sh(&hub, &["ip", "link", "set", "br0", "up"]);
        let mut nodes = Vec::new();
        for i in 0..n {
            let ns = self.add_ns(&format!("n{i}"));
            let port = format!("p{i}");
            self.veth(&ns, "eth0", &hub, &port);
            self.sh(&hub, &["ip", "link", "set", &port, "master", "br0"]);
            self.addr(&ns, "eth0", &format!("10.77.0.{}/24", i + 1));
            self.addr(&ns, "eth0", &format!("fd77::{}/64", i + 1));
            self.sh(&ns, &["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"]);
            nodes.push(ns);
        }
        // Let link-local IPv6 addresses settle (DAD is off, this is quick).
        std::thread::sleep(Duration::from_millis(300));
        nodes
    }

    /// Starts `args` in `ns` with `env`; stdout is piped, stderr goes to
    /// `log`. Returns its index for [`Self::child`], [`Self::interrupt`].
    pub fn spawn(&mut self, ns: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> usize {
        let err = std::fs::File::create(log).expect("log file");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {ns}: {e}"));
        self.children.push(child);
        self.children.len() - 1
    }

    /// The process started as `i`.
    pub fn child(&mut self, i: usize) -> &mut Child {
        &mut self.children[i]
    }

    /// Reads one stdout line of process `i`, waiting at most `wait`.
    pub fn read_line(&mut self, i: usize, wait: Duration) -> Option<String> {
        let out = self.children[i].stdout.take()?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(out);
            let mut line = String::new();
            let n = r.read_line(&mut line).unwrap_or(0);
            let _ = tx.send((n, line, r.into_inner()));
        });
        match rx.recv_timeout(wait) {
            Ok((n, line, out)) => {
                self.children[i].stdout = Some(out);
                (n > 0).then_some(line)
            }
            Err(_) => None,
        }
    }

    /// Sends SIGINT to process `i` and waits (at most `wait`) for it to exit.
    /// Returns true if it exited successfully.
    pub fn interrupt(&mut self, i: usize, wait: Duration) -> bool {
        let pid = self.children[i].id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let start = Instant::now();
        while start.elapsed() < wait {
            if let Ok(Some(s)) = self.children[i].try_wait() {
                return s.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.children[i].kill();
        let _ = self.children[i].wait();
        false
    }

    /// True if process `i` still runs.
    pub fn running(&mut self, i: usize) -> bool {
        matches!(self.children[i].try_wait(), Ok(None))
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in self.namespaces.iter().rev() {
            // Whatever we started in it and that is still alive (e.g. daemons).
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The `mau` binary: `$MAU_BIN`, else the one cargo built next to this test.
pub fn mau_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MAU_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("mau");
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build -p mau-cli`; `cargo test --workspace` does)",
        bin.display()
    );
    bin
}

/// Creates an account in `dir`; returns its fingerprint.
pub fn init_account(dir: &Path, name: &str) -> String {
    std::fs::create_dir_all(dir).expect("account dir");
    let out = run(Command::new(mau_bin())
        .arg("--dir")
        .arg(dir)
        .args(["init", "--name", name])
        .env("MAU_PASSPHRASE", PASSPHRASE));
    assert!(out.status.success(), "mau init: {out:?}");
    let out = run(Command::new(mau_bin())
        .arg("--dir")
        .arg(dir)
        .arg("show")
        .env("MAU_PASSPHRASE", PASSPHRASE));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .find(|w| w.len() >= 40 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no fingerprint in `mau show`: {text}"))
        .to_ascii_lowercase()
}

/// True if `/usr/bin/python3` can import zeroconf.
pub fn have_python_zeroconf() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import zeroconf"])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Fails the test with a clear message if `tool` is missing.
pub fn require(tool: &str, package: &str) {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{tool} is missing: apt-get install {package} (see .ci/run)"
    );
}

/// This directory (scripts beside this module).
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("netns")
}
