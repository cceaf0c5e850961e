//! The original Go peer (`../shared/go-mau`, built by `scripts/test.sh`) in
//! the lab's namespaces: its CLI (`mau-go`, which reads the passphrase from a
//! terminal, so it runs through `gopty.py`) and its driver `mau-go-interop`
//! (a node with bootstrap peers; Go's own ping, find_peer, lookup and GET).
//!
//! Every Go program runs inside a namespace: Go's `serve` listens on every
//! interface and always starts mDNS, and its `sync` browses mDNS.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use super::{scripts_dir, skip, Lab, PASSPHRASE};

/// Where the Go binaries are.
#[derive(Clone, Debug)]
pub struct Go {
    /// `mau-go`, Go's CLI.
    pub cli: PathBuf,
    /// `mau-go-interop`, the driver over Go's package.
    pub interop: PathBuf,
}

impl Go {
    /// The Go binaries: `$MAU_GO_BIN_DIR`, else `<target>/go` (where
    /// `scripts/test.sh` builds them). `None`, with a skip, when absent.
    pub fn find(test: &str) -> Option<Go> {
        let dir = match std::env::var_os("MAU_GO_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let exe = std::env::current_exe().expect("current_exe");
                // <target>/debug/deps/<test> -> <target>/go
                let target = exe.ancestors().nth(3).expect("target dir");
                target.join("go")
            }
        };
        let go = Go {
            cli: dir.join("mau-go"),
            interop: dir.join("mau-go-interop"),
        };
        if go.cli.is_file() && go.interop.is_file() {
            Some(go)
        } else {
            skip(
                test,
                &format!(
                    "the Go peer is not built in {} (run scripts/test.sh: it builds it from \
                     ../shared/go-mau with a Go toolchain, or set MAU_GO_BIN_DIR)",
                    dir.display()
                ),
            );
            None
        }
    }

    /// A lab and the Go binaries, or `None` (the test skips, saying why).
    pub fn lab(tag: &str) -> Option<(Lab, Go)> {
        let go = Go::find(tag)?;
        Some((Lab::new(tag)?, go))
    }

    /// Runs Go's CLI `mau-go <args>` in account directory `dir` (Go works in
    /// the current directory) inside `ns`, answering its passphrase prompt.
    pub fn cli(&self, lab: &Lab, ns: &str, dir: &Path, args: &[&str]) -> Output {
        let script = scripts_dir().join("gopty.py");
        let head = [
            "/usr/bin/python3",
            script.to_str().expect("utf-8"),
            self.cli.to_str().expect("utf-8"),
        ];
        lab.try_sh_in(
            ns,
            Some(dir),
            &[&head[..], args].concat(),
            &[("MAU_GO_PASS", PASSPHRASE), ("MAU_GO_TIMEOUT", "60")],
        )
    }

    /// [`Go::cli`], asserting success; returns stdout.
    pub fn cli_ok(&self, lab: &Lab, ns: &str, dir: &Path, args: &[&str]) -> String {
        let out = self.cli(lab, ns, dir, args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "mau-go {args:?} in {}: {text}{}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Creates a Go account in `dir`; returns its fingerprint.
    pub fn init(&self, lab: &Lab, ns: &str, dir: &Path, name: &str) -> String {
        std::fs::create_dir_all(dir).expect("account dir");
        let email = format!("{}@example.org", name.to_lowercase());
        let init = [
            "init",
            "-name",
            name,
            "-email",
            &email,
            "-passphrase",
            PASSPHRASE,
        ];
        self.cli_ok(lab, ns, dir, &init);
        self.fingerprint(lab, ns, dir)
    }

    /// The fingerprint of the account in `dir` as Go's `show` reads it.
    pub fn fingerprint(&self, lab: &Lab, ns: &str, dir: &Path) -> String {
        let out = self.cli_ok(lab, ns, dir, &["show", "-passphrase", PASSPHRASE]);
        out.lines()
            .find_map(|l| l.strip_prefix("Fingerprint:"))
            .unwrap_or_else(|| panic!("no fingerprint in Go's show: {out}"))
            .trim()
            .to_string()
    }

    /// Runs `mau-go-interop <cmd> -dir <dir> -pass P <args>` inside `ns`.
    pub fn interop(&self, lab: &Lab, ns: &str, cmd: &str, dir: &Path, args: &[&str]) -> Output {
        let head = [
            self.interop.to_str().expect("utf-8"),
            cmd,
            "-dir",
            dir.to_str().expect("utf-8"),
            "-pass",
            PASSPHRASE,
        ];
        lab.try_sh(ns, &[&head[..], args].concat())
    }

    /// Starts a Go node (`mau-go-interop serve`) for the account in `dir`,
    /// listening on `listen`, joining through `bootstrap` (`FPR@HOST:PORT`);
    /// returns its process index once it listens. Its log is `dir/go.log`.
    pub fn serve(
        &self,
        lab: &mut Lab,
        ns: &str,
        dir: &Path,
        listen: &str,
        bootstrap: &[String],
    ) -> usize {
        let mut args = vec![
            self.interop.to_str().expect("utf-8").to_string(),
            "serve".into(),
            "-dir".into(),
            dir.to_str().expect("utf-8").into(),
            "-pass".into(),
            PASSPHRASE.into(),
            "-listen".into(),
            listen.into(),
        ];
        for b in bootstrap {
            args.extend(["-bootstrap".to_string(), b.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = dir.join("go.log");
        let i = lab.spawn(ns, &args, &[], &log);
        self.await_listening(lab, i, &log);
        i
    }

    /// Starts Go's own `mau-go serve -port PORT` (every interface, mDNS) in
    /// `dir`; returns its process index once it listens.
    pub fn serve_cli(&self, lab: &mut Lab, ns: &str, dir: &Path, port: u16) -> usize {
        let port = port.to_string();
        let cli = self.cli.to_str().expect("utf-8");
        let dir_s = dir.to_str().expect("utf-8");
        // `ip netns exec` keeps the working directory: start from `dir`.
        let script =
            format!("cd '{dir_s}' && exec '{cli}' serve -passphrase '{PASSPHRASE}' -port {port}");
        let log = dir.join("go.log");
        let i = lab.spawn(ns, &["sh", "-c", &script], &[], &log);
        self.await_listening(lab, i, &log);
        i
    }

    /// Waits for the node's first line, `Account: NAME FPR`, which both
    /// `serve`s print once their listener is bound.
    fn await_listening(&self, lab: &mut Lab, i: usize, log: &Path) {
        let line = lab.read_line(i, Duration::from_secs(20));
        if line.is_some_and(|l| l.starts_with("Account:")) {
            return;
        }
        panic!(
            "the Go node did not start; log: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}
