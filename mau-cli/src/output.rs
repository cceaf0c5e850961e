//! What the commands print on stdout, and how a command fails.
//!
//! Output goes through [`out!`]/[`outln!`], which end the process quietly
//! (exit 0) when stdout is a closed pipe (`mau show | head -1`) instead of
//! panicking with "Broken pipe" as `println!` does.

use std::fmt;
use std::io::Write;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the command failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit status: the command line was wrong (clap's own code).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the command needs a running server and none runs.
pub const EXIT_NO_SERVER: u8 = 3;
/// Exit status: a lookup ran and found nothing.
pub const EXIT_NOT_FOUND: u8 = 4;

/// What `mau --help` says about exit statuses.
pub const EXIT_CODES_HELP: &str = "\
Exit status: 0 success; 1 failure; 2 bad command line; 3 no server runs in
the directory (the commands that ask it, `server status`); 4 `discover`
found nothing.";

/// A failed command: its message and exit status.
#[derive(Debug)]
pub struct Failure {
    /// The exit status (one of the `EXIT_` constants).
    pub code: u8,
    /// What went wrong, for the user.
    pub message: String,
    /// What the command did before it failed, for `--json` consumers
    /// (printed in the error object as `details`).
    pub details: Option<serde_json::Value>,
}

impl Failure {
    /// A failure with a particular exit status.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
            details: None,
        }
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::new(EXIT_FAILED, message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::new(EXIT_FAILED, message)
    }
}

/// Writes to stdout; a closed pipe ends the process quietly.
pub fn write(args: fmt::Arguments, newline: bool) {
    let mut out = std::io::stdout().lock();
    let result = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")?;
        }
        out.flush()
    });
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(EXIT_OK));
        }
        eprintln!("mau: cannot write the output: {e}");
        std::process::exit(i32::from(EXIT_FAILED));
    }
}

/// `print!` that ends quietly on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => { $crate::output::write(format_args!($($t)*), false) };
}
/// `println!` that ends quietly on a closed pipe.
macro_rules! outln {
    () => { $crate::output::write(format_args!(""), true) };
    ($($t:tt)*) => { $crate::output::write(format_args!($($t)*), true) };
}
pub(crate) use {out, outln};

/// Prints `value` as pretty JSON.
pub fn json(value: &impl serde::Serialize) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    outln!("{text}");
    Ok(())
}

/// Sizes as people read them: 512 B, 1.5 KiB, 20.0 MiB.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A time as RFC 3339 in whole seconds, UTC (`2026-11-30T13:45:02Z`).
pub fn time(t: std::time::SystemTime) -> String {
    let whole = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| std::time::UNIX_EPOCH + std::time::Duration::from_secs(d.as_secs()))
        .unwrap_or(t);
    mau_store::format_rfc3339(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_readable() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(20 * 1024 * 1024), "20.0 MiB");
    }

    #[test]
    fn times_have_no_fraction() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 123_456_789);
        let s = time(t);
        assert!(!s.contains('.'), "{s}");
        assert!(s.starts_with("2023-11-14T22:13:20"), "{s}");
    }
}
