//! Network-namespace plumbing for the LAN tests (mDNS, UPnP), written once.
//!
//! Every namespace, veth pair and bridge is created here, inside namespaces
//! named `mau-<tag>-<pid>-<n>`, and removed when the [`Lab`] is dropped (also
//! when a test fails): processes started in them are killed first. Nothing is
//! ever configured in the machine's own namespace, so multicast (mDNS, SSDP)
//! never reaches a real interface.
//!
//! A test calls [`Lab::new`]; it returns `None` (and prints why) only when we
//! are not root or `ip netns` does not work, and the test then skips; under
//! `CI=true` a skip fails the test instead ([`skip`]). Hosts files a lab
//! gives its namespaces (`/etc/netns/NS/hosts`) go with it too.
//!
//! [`go`] runs the original Go peer in these namespaces; [`nat_lab`] builds
//! a public segment and home networks behind NAT routers.
#![allow(dead_code)]

pub mod go;
pub mod nat_lab;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The passphrase of every test account.
pub const PASSPHRASE: &str = "lan-test-passphrase";

/// stdout of `out`, asserting success (else fails with `what` and stderr).
pub fn ok(out: Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Says why a test skips; under `CI=true` (CI must run everything) it fails
/// the test instead.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: cannot run under CI=true: {why}");
    }
    eprintln!("SKIP {test}: {why}");
}

/// A set of namespaces and the processes running in them.
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
    /// `/etc/netns/NS` directories made for hosts files.
    etc_dirs: Vec<PathBuf>,
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
            skip(tag, "needs root (network namespaces)");
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
            skip(&tag, "`ip netns add` is unavailable here");
            return None;
        }
        let _ = Command::new("ip").args(["netns", "del", &probe]).status();
        Some(Lab {
            tag,
            namespaces: Vec::new(),
            etc_dirs: Vec::new(),
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

    /// Runs `args` in `ns` with `env` (from directory `cwd` if given),
    /// returning its output whatever the exit status.
    pub fn try_sh_in(
        &self,
        ns: &str,
        cwd: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .args(args)
            .envs(env.iter().copied());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        run(&mut cmd)
    }

    /// Gives `ns` a hosts file (`/etc/netns/NS/hosts`, which `ip netns exec`
    /// mounts over `/etc/hosts`) mapping this machine's host name to `ip`, so
    /// that programs resolving their own name (the Go peer's mDNS) can.
    /// Removed with the lab.
    pub fn hosts_file(&mut self, ns: &str, ip: &str) {
        let host = run(&mut Command::new("hostname"));
        let host = String::from_utf8_lossy(&host.stdout).trim().to_string();
        let dir = PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).expect("/etc/netns/NS");
        self.etc_dirs.push(dir.clone());
        let text = format!("127.0.0.1 localhost\n{ip} {host} {host}.\n");
        std::fs::write(dir.join("hosts"), text).expect("hosts file");
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
        for dir in &self.etc_dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Calls `f` with the command line `mau --dir <dir> <args>`.
pub fn mau_argv<T>(dir: &Path, args: &[&str], f: impl FnOnce(&[&str]) -> T) -> T {
    let bin = mau_bin();
    let head = [
        bin.to_str().expect("utf-8"),
        "--dir",
        dir.to_str().expect("utf-8"),
    ];
    f(&[&head[..], args].concat())
}

/// Starts `mau --dir <dir> <args>` (a `server start`) in `ns` with debug
/// logs to `dir/server.log`; returns its process index once its banner
/// ("... listening on ...") appeared.
pub fn start_mau(lab: &mut Lab, ns: &str, dir: &Path, args: &[&str]) -> usize {
    let log = dir.join("server.log");
    let env = [("MAU_PASSPHRASE", PASSPHRASE), ("MAU_LOG_LEVEL", "debug")];
    let i = mau_argv(dir, args, |a| lab.spawn(ns, a, &env, &log));
    let banner = lab.read_line(i, Duration::from_secs(30));
    assert!(
        banner.as_deref().is_some_and(|l| l.contains("listening")),
        "no banner from the server in {ns}: {banner:?}; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    i
}

/// Runs `mau --dir <dir> <args>` inside `ns` (so nothing multicasts outside).
pub fn mau(lab: &Lab, ns: &str, dir: &Path, args: &[&str]) -> Output {
    let env = [("MAU_PASSPHRASE", PASSPHRASE)];
    mau_argv(dir, args, |a| lab.try_sh_in(ns, None, a, &env))
}

/// `mau <args> --json` in `ns`, parsed (fails with the output otherwise).
pub fn mau_json(lab: &Lab, ns: &str, dir: &Path, args: &[&str]) -> serde_json::Value {
    let args = [args, &["--json"]].concat();
    let out = ok(mau(lab, ns, dir, &args), "mau --json");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// The address `mau discover` in `ns` finds for `target`, if it finds it.
pub fn discover(lab: &Lab, ns: &str, dir: &Path, target: &str) -> Option<String> {
    let out = mau(
        lab,
        ns,
        dir,
        &["discover", "--fingerprint", target, "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let found = &v["found"];
    (out.status.success() && found["fingerprint"] == target)
        .then(|| found["address"].as_str().unwrap_or_default().to_string())
}

/// Polls `what` every 200 ms for at most `limit`: its first `Some`.
pub fn poll<T>(limit: Duration, mut what: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = what() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Polls `what` every 200 ms for at most `limit`: whether it came true.
pub fn until(limit: Duration, mut what: impl FnMut() -> bool) -> bool {
    poll(limit, || what().then_some(())).is_some()
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

/// True if `tool` is installed; else the test skips ([`skip`], a failure
/// under `CI=true`) saying which package `scripts/test.sh` would install.
pub fn require(test: &str, tool: &str, package: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        skip(
            test,
            &format!("{tool} is missing: apt-get install {package} (scripts/test.sh does as root)"),
        );
    }
    ok
}

/// This directory (scripts beside this module).
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("netns")
}
