//! The friend-sync planner (`mau_proto::sync::SyncPlan`) driven by an
//! arbitrary mode, bounds and event sequence: listing pages of any shape
//! (duplicate names, bad sums, invalid paths, looping or escaping links, no
//! end mark, any clock), local states, progress, successes, failures and
//! refusals for any file (also unknown or finished ones), and time. The
//! harness (`mau_proto::sync::harness`) checks the plan's promises after
//! every step; then the friend answers everything well and the plan must be
//! done within a bounded number of steps.
#![no_main]

use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mau_proto::sync::harness::{Harness, Op};
use mau_proto::sync::{Entry, Limits, Mode, RetryPolicy};

#[derive(Arbitrary, Debug)]
enum FuzzMode {
    Sync(Option<u32>),
    List(Option<u32>),
    Fetch(u16),
}

#[derive(Arbitrary, Debug)]
enum FuzzOp {
    Page {
        entries: Vec<(u8, u16, bool, bool)>,
        next: u8,
        end: bool,
        date: Option<u32>,
    },
    Local {
        pick: u8,
        same: bool,
        partial: u16,
    },
    Progress {
        pick: u8,
        got: u16,
    },
    Fetched {
        pick: u8,
        got: u16,
        resumed: bool,
    },
    Installed {
        pick: u8,
    },
    Failed {
        pick: u8,
        range: bool,
        kept: u16,
    },
    Refused {
        pick: Option<u8>,
        unavailable: bool,
        retry_after: Option<u32>,
    },
    Advance {
        ms: u32,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    mode: FuzzMode,
    concurrency: u8,
    max_listed: u8,
    max_requests: u8,
    quota: u16,
    min_rate: u16,
    grace_ms: u16,
    retries: u8,
    budget_s: u16,
    local_bytes: u16,
    seed: u64,
    ops: Vec<FuzzOp>,
}

impl From<FuzzOp> for Op {
    fn from(op: FuzzOp) -> Op {
        match op {
            FuzzOp::Page {
                entries,
                next,
                end,
                date,
            } => Op::Page {
                // At most 16 entries a page: bounds a run's time, not its reach.
                entries: entries
                    .into_iter()
                    .take(16)
                    .map(|(n, size, good, named)| (n, u64::from(size), good, named))
                    .collect(),
                next,
                end,
                date: date.map(u64::from),
            },
            FuzzOp::Local {
                pick,
                same,
                partial,
            } => Op::Local {
                pick,
                same,
                partial: u64::from(partial),
            },
            FuzzOp::Progress { pick, got } => Op::Progress {
                pick,
                got: u64::from(got),
            },
            FuzzOp::Fetched { pick, got, resumed } => Op::Fetched {
                pick,
                got: u64::from(got),
                resumed,
            },
            FuzzOp::Installed { pick } => Op::Installed { pick },
            FuzzOp::Failed { pick, range, kept } => Op::Failed {
                pick,
                range,
                kept: u64::from(kept),
            },
            FuzzOp::Refused {
                pick,
                unavailable,
                retry_after,
            } => Op::Refused {
                pick,
                unavailable,
                retry_after,
            },
            FuzzOp::Advance { ms } => Op::Advance { ms },
        }
    }
}

fuzz_target!(|input: Input| {
    let mode = match input.mode {
        FuzzMode::Sync(since) => Mode::Sync {
            since: since.map(u64::from),
        },
        FuzzMode::List(since) => Mode::List {
            since: since.map(u64::from),
        },
        FuzzMode::Fetch(size) => Mode::Fetch(Entry {
            path: "/p2p/f/one.pgp".into(),
            name: Some("one.pgp".into()),
            size: u64::from(size),
            sum: "ab".repeat(32),
        }),
    };
    let limits = Limits {
        concurrency: usize::from(input.concurrency % 8),
        max_listed: usize::from(input.max_listed),
        max_requests: usize::from(input.max_requests),
        quota: u64::from(input.quota),
        min_rate: u64::from(input.min_rate),
        slow_grace: Duration::from_millis(u64::from(input.grace_ms)),
        retry: RetryPolicy {
            max_retries: u32::from(input.retries % 8),
            max_total_wait: Duration::from_secs(u64::from(input.budget_s)),
            ..RetryPolicy::default()
        },
    };
    let mut h = match Harness::new(mode, limits, u64::from(input.local_bytes), input.seed) {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    };
    for op in input.ops.into_iter().take(512) {
        if let Err(e) = h.apply(op.into()) {
            panic!("{e}");
        }
    }
    if let Err(e) = h.finish(20_000) {
        panic!("{e}");
    }
});
