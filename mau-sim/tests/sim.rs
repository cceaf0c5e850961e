//! End-to-end properties of the simulator (kept small so they run fast in debug).

use mau_sim::{run, Scenario, Sim};

fn small(nodes: u32, lookups: u32, seed: u64) -> Scenario {
    Scenario {
        nodes,
        lookups,
        seed,
        ..Scenario::default()
    }
}

#[test]
fn same_seed_gives_byte_identical_metrics() {
    let mut sc = small(100, 60, 7);
    sc.churn = 0.1;
    sc.loss = 0.01;
    let a = run(&sc).unwrap().deterministic_json();
    let b = run(&sc).unwrap().deterministic_json();
    assert_eq!(a, b);
    sc.seed = 8;
    let c = run(&sc).unwrap().deterministic_json();
    assert_ne!(a, c);
}

#[test]
fn static_network_finds_every_target() {
    let sc = small(300, 100, 1);
    let r = run(&sc).unwrap();
    let d = &r.deterministic;
    assert_eq!(d.join.completed, 300, "{}", r.summary());
    assert_eq!(d.lookups.finished, 100, "{}", r.summary());
    assert_eq!(d.lookups.found, 100, "{}", r.summary());
    assert_eq!(d.lookups.success_rate, 1.0);
    assert_eq!(d.tables.invariant_violations, 0);
    assert!(d.lookups.hops.p99 <= 4, "{}", r.summary());
    assert!(r.resources.peak_rss_kib > 0);
}

#[test]
fn churn_still_finds_targets() {
    let sc = Scenario {
        churn: 0.2,
        ..small(200, 200, 3)
    };
    let r = run(&sc).unwrap();
    let d = &r.deterministic;
    assert_eq!(d.tables.departed_nodes, 40, "{}", r.summary());
    assert!(d.traffic.to_departed > 0, "{}", r.summary());
    assert!(d.lookups.success_rate >= 0.95, "{}", r.summary());
}

#[test]
fn invariants_hold_under_churn_and_loss() {
    let sc = Scenario {
        churn: 0.2,
        loss: 0.02,
        check_invariants: true,
        ..small(60, 60, 11)
    };
    let r = run(&sc).unwrap();
    assert_eq!(r.deterministic.tables.invariant_violations, 0);
    assert!(r.deterministic.traffic.lost > 0);
}

#[test]
fn hours_of_virtual_time_refresh_stale_buckets() {
    let sc = Scenario {
        duration_ms: 2 * 3600 * 1000 + 60_000,
        ..small(40, 20, 5)
    };
    let r = run(&sc).unwrap();
    let d = &r.deterministic;
    assert!(d.virtual_time_ms > 2 * 3600 * 1000, "{}", r.summary());
    // Every node refreshes its buckets once per STALL_PERIOD.
    assert!(
        d.background.nodes_with_stale_refresh == 40,
        "{}",
        r.summary()
    );
    assert!(d.background.stale_refreshes >= 2 * 40, "{}", r.summary());
    assert_eq!(d.lookups.success_rate, 1.0);
}

/// 10% colluding adversaries (eclipse) or poisoners (garbage): honest
/// lookups still find their targets (the 10k-node figures are in
/// docs/adversarial.md).
#[test]
fn honest_lookups_survive_ten_percent_adversaries() {
    for attack in [mau_sim::Attack::Eclipse, mau_sim::Attack::Garbage] {
        let sc = Scenario {
            adversaries: 0.1,
            attack,
            ..small(300, 200, 11)
        };
        let r = run(&sc).unwrap();
        let d = &r.deterministic;
        assert!(
            d.traffic.hostile_answers > 0,
            "{attack:?}: no attack happened"
        );
        assert!(
            d.lookups.success_rate >= 0.99,
            "{attack:?}: {}",
            r.summary()
        );
        assert_eq!(d.tables.invariant_violations, 0);
    }
}

/// A warm start spawns the network with converged tables: every lookup
/// succeeds, exactly the sample joiners go through the protocol, tables hold
/// what a converged table holds (about K per bucket), and it stays a pure
/// function of the scenario.
#[test]
fn warm_start_builds_converged_tables_and_measures_sample_joins() {
    let mut sc = small(1000, 200, 5);
    sc.warm_start = Some(40);
    let r = run(&sc).unwrap();
    let d = &r.deterministic;
    assert_eq!(d.join.started, 40, "{}", r.summary());
    assert_eq!(d.join.completed, 40, "{}", r.summary());
    assert!(d.join.messages_per_node.mean > 0.0);
    assert_eq!(d.lookups.found, 200, "{}", r.summary());
    // 1000 nodes, K = 20: buckets 0..=4 full (1000 / 2^5 > 20), the rest
    // take whoever is there (~16 + 8 + 4 + 2 + 1): ~131 peers.
    let size = d.tables.size.median;
    assert!((115..=150).contains(&size), "median table {size}");
    assert!(d.tables.node_bytes.mean > 0.0);
    assert_eq!(d.tables.invariant_violations, 0);
    assert_eq!(
        r.deterministic_json(),
        run(&sc).unwrap().deterministic_json()
    );

    // The cold run of the same network agrees on what matters.
    sc.warm_start = None;
    let cold = run(&sc).unwrap();
    assert_eq!(cold.deterministic.lookups.found, 200, "{}", cold.summary());
    let cold_size = cold.deterministic.tables.size.median as f64;
    assert!(
        (size as f64 / cold_size - 1.0).abs() < 0.1,
        "warm {size} cold {cold_size}"
    );
    // What differs is how evenly nodes are known: a warm start spreads
    // everyone over random tables, a cold network's LRS buckets keep the
    // early joiners (docs/scaling.md, "warm vs cold").
    let skew = |d: &mau_sim::Deterministic| {
        d.tables.in_degree.p99 as f64 / d.tables.in_degree.median.max(1) as f64
    };
    let (warm_skew, cold_skew) = (skew(d), skew(&cold.deterministic));
    assert!(warm_skew < 1.5, "warm in-degree p99/median {warm_skew}");
    assert!(
        cold_skew > 2.0 * warm_skew,
        "cold {cold_skew} vs warm {warm_skew}"
    );
}

/// What a warm start keeps beside the nodes' own state is a small share of
/// it: the builder's scratch is freed, and the reports its `add_peer` calls
/// raise (one per table entry) are dropped as each table is built, not
/// queued for the whole network (they were 4/5 of a 100k warm run's peak).
#[test]
fn warm_start_keeps_little_beside_the_tables() {
    let mut sc = small(2000, 0, 3);
    sc.warm_start = Some(0);
    let m = Sim::new(sc, None).memory();
    assert_eq!(m.nodes, 2000);
    assert!(m.tables >= 2000 * 100 * 40, "{m}");
    let beside = m.net_queue + m.net_reports + m.net_slots + m.simulator;
    assert!(beside * 4 < m.tables, "{m}");
    assert!(m.net_reports * 100 < m.tables, "{m}");
}
