//! One iterative Kademlia lookup: which peer to ask next, and when it is done.
//!
//! The lookup keeps its candidates sorted by XOR distance to the target. It
//! asks up to α of the closest unqueried ones at a time; when an answer brings
//! no closer peer, α answers in a row, it stalls and asks every unqueried peer
//! among the K closest at once. When it ends depends on its kind:
//! - a bucket refresh ends when the K closest candidates that have not failed
//!   have all answered (the K-closest rule), or nobody is left to ask;
//! - a join (our own id) and a find-peer lookup do not apply the K-closest
//!   rule: they end when nobody is left to ask (candidates are bounded by
//!   `max_lookup_candidates`), a find-peer lookup also as soon as the target
//!   itself answers. Colluding peers that all claim to be the closest would
//!   otherwise end them early (see `k_closest_rule`).
//!
//! Pure data: the [`crate::Node`] sends the requests and feeds back answers.

use crate::config::Termination;
use crate::distance::{Distance, Key};
use crate::fingerprint::Fingerprint;
use crate::routing_table::Contact;
use crate::time::Time;

/// Identifies a lookup within one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LookupId(pub u64);

/// Why a lookup runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupKind {
    /// Find one peer: ends early when the target answers.
    FindPeer,
    /// Look up our own id while joining.
    Join,
    /// Refresh a bucket with a random id in its range.
    Refresh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    NotContacted,
    Waiting,
    /// Asked, no answer within the soft deadline: no longer holds one of the
    /// α slots nor the lookup's end, but its answer is used if it comes.
    Slow,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug)]
struct Candidate<A> {
    distance: Distance,
    contact: Contact<A>,
    state: State,
    /// Answers between us and this peer: 0 for peers from our own table.
    depth: u32,
    /// Another address someone gave for this peer, tried if the current one
    /// fails: otherwise one hostile answer naming the target at a dead address
    /// would hide the target from the whole lookup.
    alternate: Option<A>,
    /// Addresses tried so far (at most [`MAX_ADDRESSES_PER_PEER`]).
    attempts: u8,
}

/// Times a find-peer lookup that missed is given farther seeds ([`Lookup::widen`]).
pub const MAX_WIDENINGS: u8 = 2;

/// Addresses a lookup tries for one peer, so hostile answers cannot make it
/// chase one fingerprint forever.
pub const MAX_ADDRESSES_PER_PEER: u8 = 3;

/// Times a find-peer lookup asks the target itself at one address. Only
/// the target's own answer finds it, so one lost request or answer would
/// otherwise lose the whole lookup (measured in the simulator at 5% loss:
/// 89% found with one attempt, see docs/hardening.md).
pub const TARGET_ATTEMPTS: u8 = 3;

/// The result of a finished lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LookupOutcome<A> {
    /// Which lookup.
    pub id: LookupId,
    /// Why it ran.
    pub kind: LookupKind,
    /// What was looked up.
    pub target: Fingerprint,
    /// The target, if it answered us itself.
    pub found: Option<Contact<A>>,
    /// Up to K closest peers that answered, nearest first.
    pub closest: Vec<Contact<A>>,
    /// Answers on the path to the target (found) or to the closest peer (else).
    pub hops: u32,
    /// Requests sent.
    pub requests: u32,
    /// Requests that failed or timed out.
    pub failures: u32,
    /// When it started.
    pub started: Time,
}

/// An iterative lookup in progress.
#[derive(Clone, Debug)]
pub struct Lookup<A> {
    id: LookupId,
    kind: LookupKind,
    target: Fingerprint,
    target_key: Key,
    candidates: Vec<Candidate<A>>,
    k: usize,
    alpha: usize,
    max_candidates: usize,
    waiting: usize,
    /// Answers in a row that brought no closer peer.
    no_progress: usize,
    requests: u32,
    failures: u32,
    started: Time,
    found: Option<usize>,
    termination: Termination,
    /// Times [`Self::widen`] added seeds.
    widened: u8,
}

impl<A> Candidate<A> {
    /// Asks this peer again, at `address`.
    fn rearm(&mut self, address: A) {
        self.contact.address = address;
        self.state = State::NotContacted;
    }
}

impl<A: Clone + Eq> Lookup<A> {
    /// Heap bytes this lookup holds (its candidate list, by capacity).
    pub fn heap_bytes(&self) -> usize {
        self.candidates.capacity() * std::mem::size_of::<Candidate<A>>()
    }

    /// Starts a lookup from `seeds` (closest peers from our own table).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: LookupId,
        kind: LookupKind,
        target: Fingerprint,
        seeds: Vec<Contact<A>>,
        k: usize,
        alpha: usize,
        max_candidates: usize,
        now: Time,
    ) -> Self {
        let mut l = Lookup {
            id,
            kind,
            target,
            target_key: target.key(),
            candidates: Vec::with_capacity(seeds.len()),
            k: k.max(1),
            alpha: alpha.max(1),
            max_candidates: max_candidates.max(k),
            waiting: 0,
            no_progress: 0,
            requests: 0,
            failures: 0,
            started: now,
            found: None,
            termination: Termination::KClosest,
            widened: 0,
        };
        for c in seeds {
            l.offer(c, 0, None, &|_| None);
        }
        l
    }

    /// Uses `termination` as the stopping rule (default [`Termination::KClosest`]).
    pub fn with_termination(mut self, termination: Termination) -> Self {
        self.termination = termination;
        self
    }

    /// A finished find-peer lookup that missed its target, given more
    /// starting points (farther peers of our own table): returns true if it
    /// has someone new to ask and goes on. At most `MAX_WIDENINGS` times.
    ///
    /// Why: peers that answer with each other only (an eclipse) get into our
    /// table through our own lookups, and can then be all K seeds of a later
    /// lookup, which never meets an honest peer. Seeds beyond the K closest
    /// are an independent second path (measured in docs/adversarial.md).
    pub fn widen(&mut self, more: Vec<Contact<A>>) -> bool {
        if self.kind != LookupKind::FindPeer
            || self.found.is_some()
            || self.widened >= MAX_WIDENINGS
            || self.termination == Termination::GoExhaustive
        {
            return false;
        }
        self.widened += 1;
        for c in more {
            self.offer(c, 0, None, &|_| None);
        }
        self.no_progress = 0;
        !self.is_finished()
    }

    /// True once the target answered (find-peer).
    pub fn has_found(&self) -> bool {
        self.found.is_some()
    }

    /// Times it was widened so far.
    pub fn widenings(&self) -> u8 {
        self.widened
    }

    /// Why it runs.
    pub fn kind(&self) -> LookupKind {
        self.kind
    }

    /// The target.
    pub fn target(&self) -> Fingerprint {
        self.target
    }

    /// Adds a candidate unless known; returns whether it is now the closest.
    /// `verified` gives the address we verified for a peer, which replaces
    /// the one offered (asked only for a peer the lookup keeps).
    fn offer(
        &mut self,
        mut contact: Contact<A>,
        depth: u32,
        local: Option<&Fingerprint>,
        verified: &impl Fn(&Fingerprint) -> Option<A>,
    ) -> bool {
        let distance = contact.fingerprint.key().distance(&self.target_key);
        // Full and farther than every candidate: it would not be kept (the
        // common case late in a lookup), so skip the search.
        if self.candidates.len() >= self.max_candidates
            && self
                .candidates
                .last()
                .is_some_and(|c| c.distance < distance)
        {
            return false;
        }
        if local.is_some_and(|l| l.same(&contact.fingerprint)) {
            return false;
        }
        let search = self
            .candidates
            .binary_search_by(|c| c.distance.cmp(&distance));
        if search.is_ok() || search.is_err_and(|i| i < self.max_candidates) {
            if let Some(address) = verified(&contact.fingerprint) {
                contact.address = address;
            }
        }
        let pos = match search {
            Ok(i) => {
                // Known (or another fingerprint on the same key): keep the
                // shorter path, and remember a second address for it.
                let c = &mut self.candidates[i];
                if c.contact.fingerprint != contact.fingerprint {
                    return false;
                }
                if depth < c.depth {
                    c.depth = depth;
                }
                // (The Go baseline policy keeps the first address only.)
                let another = self.termination != Termination::GoExhaustive
                    && c.contact.address != contact.address
                    && c.state != State::Succeeded
                    && c.attempts < MAX_ADDRESSES_PER_PEER;
                if !another {
                    return false;
                }
                if c.state == State::Failed {
                    c.rearm(contact.address);
                    return true;
                }
                c.alternate = Some(contact.address);
                return false;
            }
            Err(i) => i,
        };
        if pos >= self.max_candidates {
            return false;
        }
        self.candidates.insert(
            pos,
            Candidate {
                distance,
                contact,
                state: State::NotContacted,
                depth,
                alternate: None,
                attempts: 0,
            },
        );
        if let Some(f) = self.found.as_mut() {
            if *f >= pos {
                *f += 1;
            }
        }
        // Forget the farthest never-asked candidate; never one we wait for.
        if self.candidates.len() > self.max_candidates {
            if let Some(i) = self
                .candidates
                .iter()
                .rposition(|c| c.state == State::NotContacted)
            {
                self.candidates.remove(i);
            }
        }
        pos == 0
    }

    /// The next peer to ask, if the lookup may send one now. Call until `None`.
    pub fn next_request(&mut self) -> Option<Contact<A>> {
        if self.is_finished() {
            return None;
        }
        if self.termination == Termination::GoExhaustive {
            if self.waiting >= self.alpha {
                return None;
            }
            let c = self
                .candidates
                .iter_mut()
                .find(|c| c.state == State::NotContacted)?;
            c.state = State::Waiting;
            c.attempts = c.attempts.saturating_add(1);
            self.waiting += 1;
            self.requests += 1;
            return Some(c.contact.clone());
        }
        let parallelism = if self.no_progress >= self.alpha {
            self.k
        } else {
            self.alpha
        };
        if self.waiting >= parallelism {
            return None;
        }
        let mut live = 0;
        let k_closest = self.k_closest_rule();
        for c in self.candidates.iter_mut() {
            if k_closest && live >= self.k {
                break;
            }
            match c.state {
                State::Failed | State::Slow => continue,
                State::Succeeded | State::Waiting => live += 1,
                State::NotContacted => {
                    c.state = State::Waiting;
                    c.attempts = c.attempts.saturating_add(1);
                    self.waiting += 1;
                    self.requests += 1;
                    return Some(c.contact.clone());
                }
            }
        }
        None
    }

    fn index_of(&self, fp: &Fingerprint) -> Option<usize> {
        let d = fp.key().distance(&self.target_key);
        let i = self
            .candidates
            .binary_search_by(|c| c.distance.cmp(&d))
            .ok()?;
        self.candidates[i].contact.fingerprint.same(fp).then_some(i)
    }

    /// `from` answered with `peers`. `local` is our own id (never a candidate).
    #[cfg(any(test, feature = "internals"))]
    pub fn on_success(&mut self, from: &Fingerprint, peers: Vec<Contact<A>>, local: &Fingerprint) {
        self.on_success_verified(from, peers, local, |_| None);
    }

    /// [`Self::on_success`], asking at the peers' addresses we `verified`
    /// rather than those the answer gave: hearsay never overrides what we
    /// verified.
    pub fn on_success_verified(
        &mut self,
        from: &Fingerprint,
        peers: Vec<Contact<A>>,
        local: &Fingerprint,
        verified: impl Fn(&Fingerprint) -> Option<A>,
    ) {
        let Some(i) = self.index_of(from) else {
            return;
        };
        match self.candidates[i].state {
            State::Waiting => self.waiting -= 1,
            State::Slow => {}
            _ => return,
        }
        self.candidates[i].state = State::Succeeded;
        let depth = self.candidates[i].depth + 1;
        if *from == self.target && self.kind == LookupKind::FindPeer {
            self.found = Some(i);
        }
        let mut progress = false;
        for p in peers.into_iter().take(self.k) {
            progress |= self.offer(p, depth, Some(local), &verified);
        }
        self.no_progress = if progress { 0 } else { self.no_progress + 1 };
    }

    /// The request to `from` passed its soft deadline: the lookup stops
    /// waiting for it (another peer may be asked) but still takes its answer.
    pub fn on_slow(&mut self, from: &Fingerprint) {
        if let Some(i) = self.index_of(from) {
            if self.candidates[i].state == State::Waiting {
                self.candidates[i].state = State::Slow;
                self.waiting -= 1;
                // Silence brings nothing closer either: α of them in a row
                // and the lookup asks all of the K closest at once, so a
                // list of tarpits costs a soft deadline or two, not one each.
                self.no_progress += 1;
            }
        }
    }

    /// The request to `from` failed or timed out: it is dropped from the lookup.
    pub fn on_failure(&mut self, from: &Fingerprint) {
        if let Some(i) = self.index_of(from) {
            let c = &mut self.candidates[i];
            if matches!(c.state, State::Waiting | State::Slow) {
                if c.state == State::Waiting {
                    self.waiting -= 1;
                }
                c.state = State::Failed;
                self.failures += 1;
                if let Some(address) = c.alternate.take() {
                    if c.attempts < MAX_ADDRESSES_PER_PEER {
                        c.rearm(address);
                    }
                }
                let retry_target = self.kind == LookupKind::FindPeer
                    && self.termination != Termination::GoExhaustive
                    && c.state == State::Failed
                    && c.contact.fingerprint.same(&self.target)
                    && c.attempts < TARGET_ATTEMPTS;
                if retry_target {
                    let address = c.contact.address.clone();
                    c.rearm(address);
                }
            }
        }
    }

    /// True if the K-closest rule may end this lookup: refreshes only. A
    /// find-peer or join lookup goes on past it until (find-peer) the
    /// target answers or no candidate is left
    /// (bounded by `max_candidates`): in an honest network that only costs
    /// more requests when the target is gone, but colluding peers that all
    /// claim to be the closest would otherwise end every lookup for a target
    /// they surround (measured: 98.2% success against 10% eclipsing nodes).
    fn k_closest_rule(&self) -> bool {
        self.termination == Termination::KClosest && self.kind == LookupKind::Refresh
    }

    /// True if the lookup must wait for this slow answer before it ends. A
    /// user's find-peer lookup does not (the user waits, and one tarpit
    /// would hold it for the full timeout) unless it is the target itself;
    /// joins and refreshes run in the background and wait, so a busy
    /// network's slow answers still fill the table.
    fn awaits(&self, c: &Candidate<A>) -> bool {
        c.state == State::Slow
            && (self.kind != LookupKind::FindPeer || c.contact.fingerprint.same(&self.target))
    }

    /// True once nothing more can be learned: the target answered (find-peer),
    /// or the K closest live candidates all answered (refresh), or nobody is
    /// left to ask.
    pub fn is_finished(&self) -> bool {
        if self.found.is_some() {
            return true;
        }
        if !self.k_closest_rule() {
            return self.waiting == 0
                && self
                    .candidates
                    .iter()
                    .all(|c| c.state != State::NotContacted && !self.awaits(c));
        }
        let mut live = 0;
        for c in &self.candidates {
            match c.state {
                State::Failed => continue,
                State::Succeeded => live += 1,
                State::Waiting | State::NotContacted | State::Slow => return false,
            }
            if live >= self.k {
                return true;
            }
        }
        self.waiting == 0
    }

    /// Requests still waiting for an answer.
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn in_flight(&self) -> usize {
        self.waiting
    }

    /// The outcome, meaningful once [`Self::is_finished`].
    pub fn outcome(&self) -> LookupOutcome<A> {
        let answered = self
            .candidates
            .iter()
            .filter(|c| c.state == State::Succeeded);
        let closest: Vec<Contact<A>> = answered
            .clone()
            .take(self.k)
            .map(|c| c.contact.clone())
            .collect();
        let found = self.found.map(|i| &self.candidates[i]);
        let hops = match found {
            Some(c) => c.depth,
            None => answered.map(|c| c.depth).next().unwrap_or(0),
        };
        LookupOutcome {
            id: self.id,
            kind: self.kind,
            target: self.target,
            found: found.map(|c| c.contact.clone()),
            closest,
            hops,
            requests: self.requests,
            failures: self.failures,
            started: self.started,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        let mut b = [0u8; 20];
        b[0] = n;
        Fingerprint::V4(b)
    }

    fn c(n: u8) -> Contact<u8> {
        Contact::new(fp(n), n)
    }

    /// A lookup (id 1, 80 candidates at most, started at 0) for `fp(1)`.
    fn lookup(kind: LookupKind, seeds: Vec<Contact<u8>>, k: usize, alpha: usize) -> Lookup<u8> {
        Lookup::new(LookupId(1), kind, fp(1), seeds, k, alpha, 80, Time(0))
    }

    /// Asks whoever `l` wants asked, each peer answering at once with
    /// `known(its address)`, until nobody is left; returns who was asked.
    fn drive(l: &mut Lookup<u8>, known: impl Fn(u8) -> Vec<Contact<u8>>) -> Vec<Fingerprint> {
        let mut asked = Vec::new();
        while let Some(p) = l.next_request() {
            asked.push(p.fingerprint);
            l.on_success(&p.fingerprint, known(p.address), &fp(0xff));
        }
        asked
    }

    #[test]
    fn finds_target_through_hops() {
        let local = fp(0xff);
        let mut l = lookup(LookupKind::FindPeer, vec![c(0x40)], 20, 3);
        assert_eq!(l.next_request(), Some(c(0x40)));
        assert_eq!(l.next_request(), None);
        l.on_success(&fp(0x40), vec![c(0x10), c(0xff)], &local);
        assert_eq!(l.next_request(), Some(c(0x10)));
        l.on_success(&fp(0x10), vec![c(1)], &local);
        assert_eq!(l.next_request(), Some(c(1)));
        assert!(!l.is_finished());
        l.on_success(&fp(1), vec![], &local);
        assert!(l.is_finished());
        let o = l.outcome();
        assert_eq!(o.found, Some(c(1)));
        assert_eq!(o.hops, 2);
        assert_eq!(o.requests, 3);
    }

    #[test]
    fn failures_end_the_lookup() {
        let local = fp(0xff);
        let mut l = lookup(LookupKind::FindPeer, vec![c(2), c(3)], 20, 3);
        let a = l.next_request().unwrap();
        let b = l.next_request().unwrap();
        l.on_failure(&a.fingerprint);
        assert!(!l.is_finished());
        l.on_failure(&b.fingerprint);
        assert!(l.is_finished());
        let o = l.outcome();
        assert_eq!(o.found, None);
        assert_eq!(o.failures, 2);
        // A late answer changes nothing.
        l.on_success(&a.fingerprint, vec![c(1)], &local);
        assert!(l.is_finished());
    }

    #[test]
    fn the_target_is_asked_again_after_a_lost_answer_but_not_forever() {
        let mut l = lookup(LookupKind::FindPeer, vec![c(1)], 20, 3);
        // Only the target's own answer finds it: a lost one is retried.
        for _ in 0..TARGET_ATTEMPTS - 1 {
            assert_eq!(l.next_request(), Some(c(1)));
            l.on_failure(&fp(1));
            assert!(!l.is_finished());
        }
        assert_eq!(l.next_request(), Some(c(1)));
        l.on_failure(&fp(1));
        assert!(l.is_finished(), "bounded: {TARGET_ATTEMPTS} attempts");
        assert_eq!(l.outcome().failures, u32::from(TARGET_ATTEMPTS));
        // Another peer is asked once only.
        let mut other = lookup(LookupKind::FindPeer, vec![c(2)], 20, 3);
        assert_eq!(other.next_request(), Some(c(2)));
        other.on_failure(&fp(2));
        assert!(other.is_finished());
    }

    #[test]
    fn never_asks_twice() {
        let mut l = lookup(LookupKind::Refresh, vec![c(2)], 2, 1);
        let asked = drive(&mut l, |_| vec![c(2), c(3), c(4), c(5)]);
        let mut dedup = asked.clone();
        dedup.dedup();
        assert_eq!(asked, dedup);
        assert!(l.is_finished());
        // K = 2: the two closest (2 and 3) answered, so 4 and 5 are never asked.
        assert_eq!(asked, vec![fp(2), fp(3)]);
    }

    #[test]
    fn go_exhaustive_asks_past_the_k_closest() {
        let run = |t: Termination| {
            let mut l = lookup(LookupKind::Refresh, vec![c(2)], 2, 1).with_termination(t);
            // Peer n knows n + 1 and n + 2, up to 5.
            let asked = drive(&mut l, |n| (n + 1..=(n + 2).min(5)).map(c).collect());
            assert!(l.is_finished());
            asked
        };
        assert_eq!(run(Termination::KClosest), vec![fp(2), fp(3)]);
        // Go: no K-closest rule, the queue is drained (5 ^ 1 < 4 ^ 1).
        assert_eq!(
            run(Termination::GoExhaustive),
            vec![fp(2), fp(3), fp(5), fp(4)]
        );
        // Go still stops on an exact match.
        let mut l = lookup(LookupKind::FindPeer, vec![c(1), c(2), c(3)], 20, 1)
            .with_termination(Termination::GoExhaustive);
        assert_eq!(l.next_request(), Some(c(1)));
        assert_eq!(l.next_request(), None, "α = 1");
        l.on_success(&fp(1), vec![c(4)], &fp(0xff));
        assert!(l.is_finished());
        assert_eq!(l.outcome().requests, 1);
    }
}
