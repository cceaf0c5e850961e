//! `MAU_LOG_LEVEL` (error, warn, info, debug, trace) picks what is logged to
//! stderr; colours only on a terminal, and never with `NO_COLOR` set.

use std::io::IsTerminal;

use tracing_subscriber::filter::LevelFilter;

/// Installs the subscriber; `default` applies when `MAU_LOG_LEVEL` is unset.
pub fn init(default: LevelFilter) {
    let level = match std::env::var("MAU_LOG_LEVEL") {
        Ok(v) => match v.trim().parse::<LevelFilter>() {
            Ok(l) => l,
            Err(_) => {
                eprintln!("MAU_LOG_LEVEL={v:?} is not one of off, error, warn, info, debug, trace; using {default}");
                default
            }
        },
        Err(_) => default,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(colour(std::io::stderr().is_terminal()))
        .try_init();
}

/// Colours on a terminal unless `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>).
fn colour(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
