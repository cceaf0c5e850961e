//! The friend-sync planner (`mau_proto::sync::SyncPlan`) driven by an
//! arbitrary mode, bounds and event sequence read from the input
//! (`Harness::run_bytes`): listing pages of any shape (duplicate names, bad
//! sums, invalid paths, looping or escaping links, no end mark, any clock),
//! local states, progress, successes, failures and refusals for any file
//! (also unknown or finished ones), and time. The harness
//! (`mau_proto::sync::harness`) checks the plan's promises after every
//! step; then the friend answers everything well and the plan must be done
//! within a bounded number of steps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mau_proto::sync::harness::Harness;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = Harness::run_bytes(data) {
        panic!("{e}");
    }
});
