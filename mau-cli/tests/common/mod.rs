//! What the CLI tests share: run the real `mau` binary in an account directory.
#![allow(dead_code)] // each test file uses its own subset

use std::path::Path;
use std::process::{Command, Stdio};

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
