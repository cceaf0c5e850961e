//! `MAU_LOG_LEVEL` (error, warn, info, debug, trace) picks what is logged to stderr.

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
        .try_init();
}
