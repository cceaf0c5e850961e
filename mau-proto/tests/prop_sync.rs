//! The sync planner driven by arbitrary, hostile event sequences: listing
//! pages of any shape (duplicate names, bad sums, invalid paths, looping
//! or escaping links, no end mark), local states, progress, successes,
//! failures and refusals for any file (also unknown or finished ones), and
//! time. `mau_proto::sync::harness` checks the plan's promises after every
//! step (bounds, one start and one end per file, Retry-After, nothing
//! retired or recorded from a listing that may be cut or a sync that
//! failed); then the friend answers everything well and the plan must be
//! done within a bounded number of steps.

use std::time::Duration;

use mau_proto::sync::harness::{Harness, Op};
use mau_proto::sync::{Entry, Limits, Mode, RetryPolicy};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    let entry = (
        any::<u8>(),
        0u64..5000,
        prop::bool::weighted(0.9),
        prop::bool::weighted(0.9),
    );
    prop_oneof![
        3 => (prop::collection::vec(entry, 0..8), 0u8..4, any::<bool>(), prop::option::of(0u64..2_000_000))
            .prop_map(|(entries, next, end, date)| Op::Page { entries, next, end, date }),
        3 => (any::<u8>(), any::<bool>(), 0u64..6000)
            .prop_map(|(pick, same, partial)| Op::Local { pick, same, partial }),
        2 => (any::<u8>(), 0u64..6000).prop_map(|(pick, got)| Op::Progress { pick, got }),
        3 => (any::<u8>(), 0u64..6000, any::<bool>())
            .prop_map(|(pick, got, resumed)| Op::Fetched { pick, got, resumed }),
        2 => any::<u8>().prop_map(|pick| Op::Installed { pick }),
        2 => (any::<u8>(), any::<bool>(), 0u64..6000)
            .prop_map(|(pick, range, kept)| Op::Failed { pick, range, kept }),
        2 => (prop::option::of(any::<u8>()), any::<bool>(), prop::option::of(0u32..120_000))
            .prop_map(|(pick, unavailable, retry_after)| Op::Refused { pick, unavailable, retry_after }),
        2 => (0u32..90_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        1usize..5,
        1usize..40,
        1usize..200,
        0u64..20_000,
        1u64..2000,
        0u64..5000,
        0u32..4,
        0u64..300,
    )
        .prop_map(
            |(concurrency, max_listed, max_requests, quota, min_rate, grace, retries, budget)| {
                Limits {
                    concurrency,
                    max_listed,
                    max_requests,
                    quota,
                    min_rate,
                    slow_grace: Duration::from_millis(grace),
                    retry: RetryPolicy {
                        max_retries: retries,
                        max_total_wait: Duration::from_secs(budget),
                        ..RetryPolicy::default()
                    },
                }
            },
        )
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        3 => prop::option::of(0u64..2_000_000).prop_map(|since| Mode::Sync { since }),
        1 => prop::option::of(0u64..2_000_000).prop_map(|since| Mode::List { since }),
        1 => (0u64..5000).prop_map(|size| Mode::Fetch(Entry {
            path: "/p2p/f/one.pgp".into(),
            name: Some("one.pgp".into()),
            size,
            sum: "ab".repeat(32),
        })),
    ]
}

/// Answered steps a plan may take to end once the friend cooperates: a
/// few per file and per listing request (a stepped walk bisects ~40
/// times), and the retries.
const FINISH_STEPS: usize = 5_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn hostile_sequences_keep_every_promise(
        mode in mode(),
        limits in limits(),
        local_bytes in 0u64..10_000,
        seed in any::<u64>(),
        ops in prop::collection::vec(op(), 0..120),
    ) {
        let h = Harness::run(mode, limits, local_bytes, seed, ops, FINISH_STEPS)
            .map_err(TestCaseError::fail)?;
        prop_assert!(h.result().is_some());
    }

    /// An honest friend (pages with links, an end mark, files that
    /// arrive) gets a complete, recorded sync.
    #[test]
    fn an_honest_friend_is_synced_completely(
        pages in prop::collection::vec(prop::collection::vec((any::<u8>(), 0u64..3000), 0..6), 1..5),
        concurrency in 1usize..5,
    ) {
        let limits = Limits { concurrency, ..Limits::default() };
        let mut h = Harness::new(Mode::Sync { since: None }, limits, 0, 1).map_err(TestCaseError::fail)?;
        let last = pages.len() - 1;
        for (i, page) in pages.into_iter().enumerate() {
            let entries = page.into_iter().map(|(n, size)| (n, size, true, true)).collect();
            h.apply(Op::Page { entries, next: u8::from(i < last), end: i == last, date: Some(900) })
                .map_err(TestCaseError::fail)?;
            // Every file of the page arrives before the next page.
            h.finish_page().map_err(TestCaseError::fail)?;
        }
        h.finish(FINISH_STEPS).map_err(TestCaseError::fail)?;
        let r = h.result().expect("done").as_ref().expect("ok");
        prop_assert!(r.complete && r.failures == 0, "{r:?}");
        prop_assert_eq!(r.recorded, Some(899));
    }
}
