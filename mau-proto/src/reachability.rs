//! Whether peers can reach us, decided from several peers' dial-backs.
//!
//! A node asks peers to dial it back (`/kad/dialback`: the peer opens a fresh
//! connection to the address in our certificate and says whether the
//! mutual-TLS ping got through, and at which address). One answer proves
//! little (the peer may lie, or sit on our LAN), so results are grouped as
//! address votes are ([`VoterGroup`]: a public /24 or /48 is one voice) and
//! the verdict needs [`ReachConfig::quorum`] groups that agree and outnumber
//! those that disagree. A verdict stays until a new quorum overturns it;
//! results expire after [`ReachConfig::ttl`], and with none left the state
//! is unknown again.
//!
//! Sans-IO: events carry the time, nothing here reads a clock.

use core::net::IpAddr;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use crate::address_votes::VoterGroup;
use crate::expiring::Expiring;
use crate::fingerprint::Fingerprint;
use crate::subnet::LimitScope;
use crate::time::Time;

/// What the node knows about being reachable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach<A> {
    /// Not enough results yet.
    Unknown,
    /// Peers of a quorum of groups reached us at this address.
    Reachable(A),
    /// Peers of a quorum of groups failed to reach us at this address.
    Unreachable(A),
}

/// How results are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReachConfig {
    /// Distinct groups whose results must agree (at least 1).
    pub quorum: usize,
    /// How long a result counts.
    pub ttl: Duration,
    /// Results held at once (one per fingerprint); when full, the oldest
    /// result of the group holding the most goes first.
    pub max_results: usize,
    /// Which peer addresses are grouped by /24 or /48 ([`VoterGroup::of`]).
    pub scope: LimitScope,
}

impl Default for ReachConfig {
    fn default() -> Self {
        ReachConfig {
            quorum: 3,
            ttl: Duration::from_secs(3600),
            max_results: 64,
            scope: LimitScope::PublicOnly,
        }
    }
}

#[derive(Clone, Debug)]
/// One peer's latest dial-back.
struct Outcome<A> {
    group: VoterGroup,
    address: A,
    reached: bool,
}

/// The reachability state machine. Feed it [`Reachability::on_result`] for
/// every dial-back answer and [`Reachability::handle_timeout`] at
/// [`Reachability::poll_timeout`].
#[derive(Clone, Debug)]
pub struct Reachability<A> {
    config: ReachConfig,
    results: Expiring<Fingerprint, Outcome<A>>,
    state: Reach<A>,
}

/// Results per address: (groups that reached it, groups that did not).
/// A group counts once per address, with its latest result.
type Counts<A> = BTreeMap<A, (usize, usize)>;

impl<A: Clone + Ord + Debug> Reachability<A> {
    /// Nothing known yet.
    pub fn new(config: ReachConfig) -> Self {
        Reachability {
            results: Expiring::new(config.ttl, config.max_results),
            config,
            state: Reach::Unknown,
        }
    }

    /// The verdict now.
    pub fn state(&self) -> &Reach<A> {
        &self.state
    }

    /// Per address tested: groups that reached it and groups that did not.
    pub fn counts(&self) -> Vec<(A, usize, usize)> {
        self.count()
            .into_iter()
            .map(|(a, (yes, no))| (a, yes, no))
            .collect()
    }

    /// Results held.
    pub fn len(&self) -> usize {
        self.results.len()
    }

    /// True if no result is held.
    pub fn is_empty(&self) -> bool {
        self.results.is_empty()
    }

    /// `peer`, at `peer_ip`, dialed us at `address`: `reached` or not.
    /// Returns the new state if it changed.
    pub fn on_result(
        &mut self,
        now: Time,
        peer: Fingerprint,
        peer_ip: IpAddr,
        address: A,
        reached: bool,
    ) -> Option<Reach<A>> {
        let r = Outcome {
            group: VoterGroup::of(peer_ip, self.config.scope),
            address,
            reached,
        };
        // A crowd of keys on one network only displaces its own results.
        self.results.insert(now, peer, r, |r| r.group);
        self.decide()
    }

    /// Drops expired results; returns the new state if it changed.
    pub fn handle_timeout(&mut self, now: Time) -> Option<Reach<A>> {
        if self.results.expire(now) {
            self.decide()
        } else {
            None
        }
    }

    /// When the oldest result expires.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.results.next_expiry()
    }

    fn count(&self) -> Counts<A> {
        // Latest result per (group, address).
        let mut latest: BTreeMap<(VoterGroup, A), (Time, bool)> = BTreeMap::new();
        for (at, r) in self.results.values() {
            let e = latest
                .entry((r.group, r.address.clone()))
                .or_insert((at, r.reached));
            if at >= e.0 {
                *e = (at, r.reached);
            }
        }
        let mut counts: Counts<A> = BTreeMap::new();
        for ((_, a), (_, reached)) in latest {
            let c = counts.entry(a).or_insert((0, 0));
            if reached {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
        counts
    }

    /// A quorum that outnumbers the other side decides; the address tested
    /// by the most groups is the one decided on. Without such a quorum the
    /// verdict stays, unless no result is left at all.
    fn decide(&mut self) -> Option<Reach<A>> {
        let counts = self.count();
        let quorum = self.config.quorum.max(1);
        let verdict = counts
            .iter()
            .filter_map(|(a, &(yes, no))| {
                let v = if yes >= quorum && yes > no {
                    Reach::Reachable(a.clone())
                } else if no >= quorum && no > yes {
                    Reach::Unreachable(a.clone())
                } else {
                    return None;
                };
                Some((yes + no, v))
            })
            // Most groups; a reachable verdict before an unreachable one.
            .max_by(|x, y| {
                x.0.cmp(&y.0).then(
                    matches!(x.1, Reach::Reachable(_)).cmp(&matches!(y.1, Reach::Reachable(_))),
                )
            })
            .map(|(_, v)| v);
        let next = match verdict {
            Some(v) => v,
            None if counts.is_empty() => Reach::Unknown,
            None => self.state.clone(),
        };
        if next == self.state {
            return None;
        }
        self.state = next.clone();
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(i: u32) -> Fingerprint {
        let mut b = [0u8; 20];
        b[..4].copy_from_slice(&i.to_be_bytes());
        Fingerprint::from_bytes(&b).expect("20 bytes")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    const ADDR: &str = "81.2.69.142:8080";

    fn peer(i: u32) -> IpAddr {
        ip(&format!("{i}.0.0.1"))
    }

    #[test]
    fn a_quorum_decides_and_a_new_quorum_overturns() {
        let mut r = Reachability::new(ReachConfig::default());
        assert_eq!(r.on_result(Time(0), fp(1), peer(1), ADDR, true), None);
        assert_eq!(r.on_result(Time(0), fp(2), peer(2), ADDR, true), None);
        assert_eq!(
            r.on_result(Time(0), fp(3), peer(3), ADDR, true),
            Some(Reach::Reachable(ADDR))
        );
        // The port mapping went away: the same peers now fail.
        assert_eq!(r.on_result(Time(5), fp(1), peer(1), ADDR, false), None);
        assert_eq!(r.on_result(Time(5), fp(2), peer(2), ADDR, false), None);
        assert_eq!(r.state(), &Reach::Reachable(ADDR), "2 against 1: no quorum");
        assert_eq!(
            r.on_result(Time(5), fp(4), peer(4), ADDR, false),
            Some(Reach::Unreachable(ADDR))
        );
        assert_eq!(r.counts(), vec![(ADDR, 1, 3)]);
    }

    #[test]
    fn one_network_of_liars_is_one_voice() {
        let mut r = Reachability::new(ReachConfig::default());
        for i in 1..=3 {
            r.on_result(Time(0), fp(i), peer(i), ADDR, false);
        }
        assert_eq!(r.state(), &Reach::Unreachable(ADDR));
        // 200 keys on one /24 and on one /48 claim they reached us.
        for i in 0..200u32 {
            r.on_result(
                Time(1),
                fp(100 + i),
                ip(&format!("7.7.7.{}", i % 250)),
                ADDR,
                true,
            );
            let v6 = ip(&format!("2a00:7:7:{:x}::1", i));
            r.on_result(Time(1), fp(1000 + i), v6, ADDR, true);
        }
        assert_eq!(r.state(), &Reach::Unreachable(ADDR));
        assert!(r.len() <= ReachConfig::default().max_results);
        // The honest results were not the ones dropped to make room.
        assert_eq!(r.counts(), vec![(ADDR, 2, 3)]);
    }

    #[test]
    fn results_expire_to_unknown() {
        let config = ReachConfig {
            quorum: 2,
            ttl: Duration::from_secs(10),
            ..ReachConfig::default()
        };
        let mut r = Reachability::new(config);
        r.on_result(Time(0), fp(1), peer(1), ADDR, true);
        r.on_result(Time(100), fp(2), peer(2), ADDR, true);
        assert_eq!(r.state(), &Reach::Reachable(ADDR));
        assert_eq!(r.poll_timeout(), Some(Time(10_000)));
        assert_eq!(r.handle_timeout(Time(10_000)), None, "one result keeps it");
        assert_eq!(r.handle_timeout(Time(10_100)), Some(Reach::Unknown));
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn loopback_peers_count_per_address() {
        let mut r = Reachability::new(ReachConfig::default());
        for i in 2..=4u32 {
            r.on_result(Time(0), fp(i), ip(&format!("127.0.0.{i}")), ADDR, true);
        }
        assert_eq!(r.state(), &Reach::Reachable(ADDR));
    }
}
