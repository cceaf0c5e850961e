//! Whole nodes under simulation: determinism and invariants.

use mau_simrt::scenario::{Faults, LookupResult, Report, Scenario};

fn run(s: &Scenario) -> Report {
    s.run()
        .unwrap_or_else(|e| panic!("seed {}: {e}; replay: {}", s.seed, s.replay_command()))
}

/// A run broke no invariant; else the seed and the command that replays it.
fn assert_no_violations(s: &Scenario, r: &Report) {
    assert!(
        r.violations.is_empty(),
        "seed {}: {:?}; replay: {}",
        s.seed,
        r.violations,
        s.replay_command()
    );
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    let s = Scenario::new(11, 10, 10);
    let (a, b) = (run(&s), run(&s));
    assert!(a.trace.events > 10_000, "a real run: {:?}", a.trace);
    assert_eq!(a.trace, b.trace, "same seed, same trace");
    // Every byte on the simulated wire replays, TLS records included (the
    // handshakes' randoms and X25519 keys come from the seed).
    assert!(a.trace.bytes > 100_000, "{:?}", a.trace);
    assert_eq!(a.trace.wire, b.trace.wire, "same seed, same bytes");
    assert_eq!(a.window, b.window);
    assert_eq!(a.finals, b.finals);
    assert_eq!(a.virtual_time, b.virtual_time);
    // The friend syncs ran, a file over 1 MiB among them, and replayed:
    // version 1; A hostile, both refused; version 2, the album out of
    // space on B's full disk (needs root), then in once there is room.
    let rounds = match a.skipped.is_empty() {
        true => vec![Some((2, 0)), Some((0, 2)), Some((1, 1)), Some((1, 0))],
        false => vec![Some((2, 0)), Some((0, 2)), Some((2, 0))],
    };
    assert_eq!(a.syncs, rounds, "{:?} {:?}", a.violations, a.skipped);
    assert!(a.violations.is_empty(), "{:?}", a.violations);
    assert_eq!(a.syncs, b.syncs);
    let other = run(&Scenario { seed: 12, ..s });
    assert_ne!(other.trace.hash, a.trace.hash, "another seed, another run");
    assert_ne!(other.trace.wire, a.trace.wire, "another seed, other bytes");
}

#[test]
fn twenty_nodes_and_fifty_lookups_under_faults_keep_the_invariants() {
    let s = Scenario::new(1, 20, 50);
    let r = run(&s);
    assert_no_violations(&s, &r);
    assert_eq!(r.window.len(), 50);
    assert!(!r.window.contains(&LookupResult::Hung));
    assert_eq!(Report::found(&r.finals), r.finals.len());
    // The faults cost some window lookups but not most of them.
    assert!(Report::found(&r.window) >= 25, "{:?}", r.window);
    // The hostile peers struck: the garbage node was asked and answered
    // garbage, the storm ran and its victim was found all along.
    assert!(r.garbage_answers > 0, "the garbage node was never asked");
    let storm = r.storm.expect("the storm ran");
    assert!(storm.sent >= 100, "{storm:?}");
    assert_eq!(storm.found, storm.lookups, "{storm:?}");
    // Well within the memory bound the run checks (1,088 connections).
    assert!(
        r.peak_node_open > 0 && r.peak_node_open < 256,
        "{}",
        r.peak_node_open
    );
    // The other real identities: 19 nodes, 2 that join under churn, the
    // garbage node and friends A and B (both join the DHT).
    assert!(r.peak_table > 0 && r.peak_table <= 24, "{}", r.peak_table);
}

#[test]
fn churn_and_hostile_peers_alone_keep_the_invariants() {
    // Churn, the garbage node and the storm without the other faults: every
    // lookup ends (a source that left reports `Aborted`, not `Hung`), every
    // target is found once the churn is over, no lie enters a table.
    let s = Scenario {
        faults: Faults {
            churn: true,
            garbage: true,
            storm: true,
            ..Faults::none()
        },
        syncs: false,
        ..Scenario::new(4, 20, 40)
    };
    let r = run(&s);
    assert_no_violations(&s, &r);
    assert!(!r.window.contains(&LookupResult::Hung), "{:?}", r.window);
    assert_eq!(Report::found(&r.finals), r.finals.len(), "{:?}", r.finals);
    assert!(r.garbage_answers > 0);
    assert!(
        r.storm.is_some_and(|s| s.found == s.lookups),
        "{:?}",
        r.storm
    );
}

#[test]
fn a_quiet_network_finds_every_target() {
    let s = Scenario {
        faults: Faults::none(),
        ..Scenario::new(3, 20, 30)
    };
    let r = run(&s);
    assert!(r.violations.is_empty(), "{:?}", r.violations);
    assert_eq!(Report::found(&r.window), 30, "{:?}", r.window);
}

#[test]
fn the_replay_command_names_every_parameter() {
    let mut s = Scenario::new(42, 7, 9);
    s.faults.crash = false;
    s.faults.disk = false;
    s.faults.churn = false;
    s.faults.garbage = false;
    s.faults.storm = false;
    s.syncs = false;
    let cmd = s.replay_command();
    for part in [
        "--seed 42",
        "--nodes 7",
        "--lookups 9",
        "--no-crash",
        "--no-disk",
        "--no-churn",
        "--no-garbage",
        "--no-storm",
        "--no-syncs",
    ] {
        assert!(cmd.contains(part), "{cmd}");
    }
    assert!(!cmd.contains("--no-partition"), "{cmd}");
    let every = Scenario::new(42, 7, 9).replay_command();
    assert!(!every.contains("--no-"), "{every}");
}

#[test]
fn the_replay_command_replays_the_same_trace_in_a_new_process() {
    // A replay is a new process: the friend syncs' keys and files are the
    // committed fixtures, so its trace is this one's, byte for byte.
    let s = Scenario::new(11, 10, 10);
    let here = run(&s);
    assert_eq!(here.syncs.first(), Some(&Some((2, 0))), "{:?}", here.syncs);
    let command = s.replay_command();
    let (_, args) = command.split_once(" -- ").expect("arguments");
    // Seed 11 and then 12, in one new process.
    let args = args.replace("--seed 11", "--seeds 11..13");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mau-simrt"))
        .args(args.split_whitespace())
        .output()
        .expect("mau-simrt runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{args}: {stdout}");
    // "trace <hash>, wire <hash>" of each run, in seed order.
    let traces: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once("; trace ").map(|(_, t)| t))
        .filter_map(|t| t.split(" (").next())
        .collect();
    let ours = format!("{:016x}, wire {:016x}", here.trace.hash, here.trace.wire);
    assert_eq!(traces.len(), 2, "{stdout}");
    assert_eq!(traces[0], ours, "same seed, same trace in a new process");
    assert_ne!(traces[1], ours, "another seed, another trace");
}

#[test]
fn friend_syncs_under_loss_never_install_a_bad_file() {
    // With loss a round may fail; no file may be replaced by a bad one.
    let mut s = Scenario::new(5, 10, 10);
    s.faults.loss = 0.02;
    let r = run(&s);
    assert_no_violations(&s, &r);
    assert!(r.syncs.len() >= 3, "{:?}", r.syncs);
    // The hostile round refused what it got, whatever the loss let through.
    if let Some((got, _)) = r.syncs[1] {
        assert_eq!(got, 0, "{:?}", r.syncs);
    }
}
