//! `mau-simrt`: runs whole-node scenarios under deterministic simulation.
//!
//! ```text
//! mau-simrt [--seed N | --seeds A..B] [--nodes N] [--lookups N] [--final-lookups N]
//!           [--bootstraps N] [--loss P] [--no-partition] [--no-crash] [--no-disk] [--no-slow] [--no-churn] [--no-garbage] [--no-storm] [--no-syncs] [--pool N]
//! mau-simrt fixtures --out DIR
//! ```
//!
//! Prints each run's figures; a failed run prints its seed and the command
//! that replays it, and the exit status is 1. `fixtures` makes new
//! accounts and files for the friend syncs in `DIR` (to replace
//! `mau-simrt/fixtures/friends`, whose `README.md` says how).

use std::process::ExitCode;

use mau_simrt::friends::Fixture;
use mau_simrt::scenario::{Report, Scenario};

fn usage() -> ExitCode {
    eprintln!("usage: mau-simrt [--seed N | --seeds A..B] [--nodes N] [--lookups N] [--final-lookups N] [--bootstraps N] [--loss P] [--no-partition] [--no-crash] [--no-disk] [--no-slow] [--no-churn] [--no-garbage] [--no-storm] [--no-syncs] [--pool N]");
    eprintln!("       mau-simrt fixtures --out DIR");
    ExitCode::from(2)
}

/// `mau-simrt fixtures --out DIR`: new friend-sync fixtures in `DIR`.
fn fixtures(args: &[String]) -> ExitCode {
    let [flag, out] = args else {
        return usage();
    };
    if flag != "--out" {
        return usage();
    }
    match Fixture::generate(std::path::Path::new(out)) {
        Ok(()) => {
            println!("new fixtures in {out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    // Logs of every node, when asked for (`RUST_LOG=debug`): off by default.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let all: Vec<String> = std::env::args().skip(1).collect();
    if all.first().map(String::as_str) == Some("fixtures") {
        return fixtures(&all[1..]);
    }
    let mut s = Scenario::new(1, 20, 50);
    let mut seeds = 1..2u64;
    let mut final_set = false;
    let mut args = all.into_iter();
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        let ok = match a.as_str() {
            "--seed" => value().parse().map(|v: u64| seeds = v..v + 1).is_ok(),
            "--seeds" => {
                let v = value();
                match v.split_once("..").map(|(a, b)| (a.parse(), b.parse())) {
                    Some((Ok(a), Ok(b))) => {
                        seeds = a..b;
                        true
                    }
                    _ => false,
                }
            }
            "--nodes" => value().parse().map(|v| s.nodes = v).is_ok(),
            "--lookups" => value().parse().map(|v| s.lookups = v).is_ok(),
            "--final-lookups" => value()
                .parse()
                .map(|v| {
                    s.final_lookups = v;
                    final_set = true;
                })
                .is_ok(),
            "--bootstraps" => value().parse().map(|v| s.bootstraps = v).is_ok(),
            "--pool" => value().parse().map(|v| s.pool_max_idle = v).is_ok(),
            "--loss" => value().parse().map(|v| s.faults.loss = v).is_ok(),
            "--no-syncs" => {
                s.syncs = false;
                true
            }
            flag => {
                let name = flag.strip_prefix("--no-");
                let switch = s
                    .faults
                    .switches()
                    .into_iter()
                    .find(|(n, _)| Some(*n) == name);
                switch.map(|(_, on)| *on = false).is_some()
            }
        };
        if !ok {
            return usage();
        }
    }
    if !final_set {
        s.final_lookups = s.lookups.min(50);
    }
    let mut failed = false;
    for seed in seeds {
        let run = Scenario { seed, ..s.clone() };
        match run.run() {
            Ok(r) => {
                print(&run, &r);
                for s in &r.skipped {
                    println!("  {s}");
                }
                if !r.violations.is_empty() {
                    failed = true;
                    for v in &r.violations {
                        println!("  violation: {v}");
                    }
                    println!(
                        "FAILED seed {seed}; replay with:\n  {}",
                        run.replay_command()
                    );
                }
            }
            Err(e) => {
                failed = true;
                println!(
                    "FAILED seed {seed}: {e}; replay with:\n  {}",
                    run.replay_command()
                );
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print(s: &Scenario, r: &Report) {
    println!(
        "seed {} nodes {}: joined in {:.1?} (virtual); window lookups {}/{} found (mean {:.2} hops, {:.0?}; p50 {:.0?}, p90 {:.0?}, p99 {:.0?}); final {}/{} found; friend sync rounds (downloaded, failed) {:?}; tables {:.1} peers (mean, largest {}); {} garbage answers; storm {:?}; at most {} connections on one node; virtual {:.0?}, wall {:.1?}; trace {:016x}, wire {:016x} ({} events, {} polls, {} connections, at most {} open at once, {} bytes)",
        r.seed,
        s.nodes,
        r.join_time,
        Report::found(&r.window),
        r.window.len(),
        Report::mean_hops(&r.window),
        Report::mean_took(&r.window),
        Report::took_quantile(&r.window, 0.5),
        Report::took_quantile(&r.window, 0.9),
        Report::took_quantile(&r.window, 0.99),
        Report::found(&r.finals),
        r.finals.len(),
        r.syncs,
        r.table_mean,
        r.peak_table,
        r.garbage_answers,
        r.storm,
        r.peak_node_open,
        r.virtual_time,
        r.wall,
        r.trace.hash,
        r.trace.wire,
        r.trace.events,
        r.trace.polls,
        r.trace.connects,
        r.peak_open,
        r.trace.bytes,
    );
}
