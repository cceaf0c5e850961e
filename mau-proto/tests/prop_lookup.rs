//! Property tests of one iterative lookup driven by a scripted network:
//! arbitrary answers (any peers, the local node and the target included),
//! failures, bogus answers from peers never asked, in any order.
//!
//! Asserted: the lookup terminates within a bounded number of steps, never asks
//! the same peer twice, never asks the local node, never has more requests in
//! flight than its parallelism (α, or K once stalled), and its outcome is
//! consistent with what the network answered (the K closest live peers all
//! answered; `found` is the target exactly when it answered a find-peer lookup).

mod common;

use std::collections::BTreeSet;

use mau_proto::internals::{Lookup, TARGET_ATTEMPTS};
use mau_proto::{Contact, Fingerprint, LookupId, LookupKind, Time};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Step {
    /// The in-flight request `pick % len` is answered with these universe indices.
    Answer(usize, Vec<usize>),
    /// The in-flight request `pick % len` fails.
    Fail(usize),
    /// A peer that may not have been asked sends an answer (must be ignored
    /// unless it is in flight, in which case it is a normal answer).
    Unsolicited(usize, Vec<usize>),
}

fn step() -> impl Strategy<Value = Step> {
    let peers = proptest::collection::vec(any::<usize>(), 0..24);
    prop_oneof![
        6 => (any::<usize>(), peers.clone()).prop_map(|(p, v)| Step::Answer(p, v)),
        2 => any::<usize>().prop_map(Step::Fail),
        1 => (any::<usize>(), peers).prop_map(|(p, v)| Step::Unsolicited(p, v)),
    ]
}

fn kind() -> impl Strategy<Value = LookupKind> {
    prop_oneof![
        Just(LookupKind::FindPeer),
        Just(LookupKind::Join),
        Just(LookupKind::Refresh)
    ]
}

/// The lookup's own bookkeeping, recomputed independently.
struct Model {
    local: Fingerprint,
    target: Fingerprint,
    k: usize,
    alpha: usize,
    /// Exact "stalled" tracking is possible only when no candidate is ever
    /// forgotten (max_candidates at least the universe).
    exact: bool,
    learned: BTreeSet<Fingerprint>,
    asked: BTreeSet<Fingerprint>,
    in_flight: Vec<Fingerprint>,
    succeeded: BTreeSet<Fingerprint>,
    failed: BTreeSet<Fingerprint>,
    /// Requests sent and failures seen (the target may be asked again).
    requests: usize,
    failures: usize,
    /// Times a find-peer lookup asked its target.
    target_asked: u8,
    find_peer: bool,
    no_progress: usize,
}

impl Model {
    fn dist(&self, fp: &Fingerprint) -> mau_proto::Distance {
        fp.key().distance(&self.target.key())
    }

    fn best(&self) -> Option<mau_proto::Distance> {
        self.learned.iter().map(|f| self.dist(f)).min()
    }

    fn parallelism(&self) -> usize {
        if self.no_progress >= self.alpha {
            self.k
        } else {
            self.alpha
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run(
    local: Fingerprint,
    target: Fingerprint,
    pool: Vec<Fingerprint>,
    seeds: Vec<usize>,
    kind: LookupKind,
    k: usize,
    alpha: usize,
    max_candidates: usize,
    script: Vec<Step>,
) -> Result<(), TestCaseError> {
    // The universe answers may name: the pool, the target, the local node.
    let mut universe = pool.clone();
    if !universe.contains(&target) && target != local {
        universe.push(target);
    }
    universe.push(local);
    let contact = |fp: Fingerprint| {
        let addr = universe.iter().position(|f| *f == fp).unwrap() as u32;
        Contact::new(fp, addr)
    };
    let seed_contacts: Vec<Contact<u32>> = seeds
        .iter()
        .map(|i| contact(pool[i % pool.len()]))
        .collect();
    let mut l: Lookup<u32> = Lookup::new(
        LookupId(7),
        kind,
        target,
        seed_contacts.clone(),
        k,
        alpha,
        max_candidates,
        Time(5),
    );
    let mut m = Model {
        local,
        target,
        k,
        alpha,
        exact: max_candidates >= universe.len(),
        learned: seed_contacts.iter().map(|c| c.fingerprint).collect(),
        asked: BTreeSet::new(),
        in_flight: Vec::new(),
        succeeded: BTreeSet::new(),
        failed: BTreeSet::new(),
        requests: 0,
        failures: 0,
        target_asked: 0,
        find_peer: kind == LookupKind::FindPeer,
        no_progress: 0,
    };

    // Every iteration resolves a request or consumes a script step, and each
    // peer is asked at most once (a find-peer target at most TARGET_ATTEMPTS
    // times, only after failures): this bounds the whole run.
    let bound = universe.len() + script.len() + 1 + usize::from(TARGET_ATTEMPTS);
    let mut script = script.into_iter();
    let mut iterations = 0;
    loop {
        iterations += 1;
        prop_assert!(
            iterations <= bound,
            "lookup did not terminate in {} steps",
            bound
        );
        while let Some(c) = l.next_request() {
            let fp = c.fingerprint;
            prop_assert_ne!(fp, m.local, "asked the local node");
            let retry = m.find_peer && fp == target && m.failed.contains(&fp);
            if retry {
                // Only the target's own answer finds it: asked again after a
                // failure, a bounded number of times.
                prop_assert!(m.target_asked < TARGET_ATTEMPTS, "target asked too often");
                m.failed.remove(&fp);
            } else {
                prop_assert!(m.asked.insert(fp), "asked {} twice", fp);
            }
            if fp == target {
                m.target_asked += 1;
            }
            m.requests += 1;
            prop_assert!(m.learned.contains(&fp), "asked {} it never heard of", fp);
            prop_assert_eq!(c, contact(fp), "wrong address");
            m.in_flight.push(fp);
            let limit = if m.exact {
                m.parallelism()
            } else {
                k.max(alpha)
            };
            prop_assert!(
                m.in_flight.len() <= limit,
                "{} in flight > parallelism {}",
                m.in_flight.len(),
                limit
            );
        }
        prop_assert_eq!(l.in_flight(), m.in_flight.len());
        if l.is_finished() {
            break;
        }
        prop_assert!(!m.in_flight.is_empty(), "idle but not finished");

        let (from, answer) = match script.next() {
            Some(Step::Answer(pick, peers)) => (m.in_flight[pick % m.in_flight.len()], Some(peers)),
            Some(Step::Fail(pick)) => (m.in_flight[pick % m.in_flight.len()], None),
            Some(Step::Unsolicited(who, peers)) => (universe[who % universe.len()], Some(peers)),
            // Script exhausted: everyone answers with nothing new.
            None => (m.in_flight[0], Some(Vec::new())),
        };
        let waiting = m.in_flight.contains(&from);
        match answer {
            Some(peers) => {
                let peers: Vec<Contact<u32>> = peers
                    .iter()
                    .map(|i| contact(universe[i % universe.len()]))
                    .collect();
                if waiting {
                    let offered: Vec<Fingerprint> = peers
                        .iter()
                        .take(k)
                        .map(|c| c.fingerprint)
                        .filter(|f| *f != m.local)
                        .collect();
                    let best = m.best();
                    let progress = offered.iter().any(|f| best.is_none_or(|b| m.dist(f) < b));
                    m.no_progress = if progress { 0 } else { m.no_progress + 1 };
                    m.learned.extend(offered);
                    m.in_flight.retain(|f| *f != from);
                    m.succeeded.insert(from);
                }
                l.on_success(&from, peers, &local);
            }
            None => {
                if m.in_flight.contains(&from) {
                    m.failures += 1;
                }
                m.in_flight.retain(|f| *f != from);
                m.failed.insert(from);
                l.on_failure(&from);
            }
        }
    }
    prop_assert!(
        l.next_request().is_none(),
        "a finished lookup sends nothing"
    );

    let o = l.outcome();
    prop_assert_eq!(o.id, LookupId(7));
    prop_assert_eq!(o.kind, kind);
    prop_assert_eq!(o.target, target);
    prop_assert_eq!(o.started, Time(5));
    prop_assert_eq!(o.requests as usize, m.requests);
    prop_assert_eq!(o.failures as usize, m.failures);
    prop_assert!(o.closest.len() <= k);
    // `closest`: the nearest peers that answered, nearest first.
    let mut answered: Vec<Fingerprint> = m.succeeded.iter().copied().collect();
    answered.sort_by_key(|f| m.dist(f));
    answered.truncate(k);
    let got: Vec<Fingerprint> = o.closest.iter().map(|c| c.fingerprint).collect();
    prop_assert_eq!(got, answered);
    let target_answered = m.succeeded.contains(&target);
    match &o.found {
        Some(c) => {
            prop_assert_eq!(kind, LookupKind::FindPeer);
            prop_assert_eq!(c.fingerprint, target);
            prop_assert!(target_answered);
        }
        None => {
            prop_assert!(!(kind == LookupKind::FindPeer && target_answered));
            if m.exact {
                // Kademlia termination: the K closest peers heard of that did
                // not fail have all answered.
                let mut live: Vec<Fingerprint> = m
                    .learned
                    .iter()
                    .copied()
                    .filter(|f| !m.failed.contains(f))
                    .collect();
                live.sort_by_key(|f| m.dist(f));
                for f in live.iter().take(k) {
                    prop_assert!(
                        m.succeeded.contains(f),
                        "{} among the K closest never answered",
                        f
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(common::config(512))]

    #[test]
    fn lookup_is_bounded_and_never_repeats(
        (local, pool) in common::local_and_pool(1..60),
        target_pick in prop_oneof![
            3 => any::<usize>().prop_map(Some),
            1 => Just(None),
        ],
        other_target in any::<[u8; 20]>(),
        seeds in proptest::collection::vec(any::<usize>(), 0..24),
        kind in kind(),
        k in 1usize..12,
        alpha in 1usize..5,
        max_candidates in prop_oneof![1usize..16, Just(1000)],
        script in proptest::collection::vec(step(), 0..120),
    ) {
        prop_assume!(!pool.is_empty());
        // A target in the pool (reachable), the local id (a join), or elsewhere.
        let target = match (kind, target_pick) {
            (LookupKind::Join, _) => local,
            (_, Some(i)) => pool[i % pool.len()],
            (_, None) => Fingerprint::V4(other_target),
        };
        run(local, target, pool, seeds, kind, k, alpha, max_candidates, script)?;
    }
}
