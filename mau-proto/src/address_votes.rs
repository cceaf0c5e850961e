//! Our public IP address, learned from what several peers saw.
//!
//! A mau-rs peer tells its caller the address the connection came from
//! (`Mau-Observed-Address` on its `/kad/*` answers). One peer can lie, and one
//! attacker can run many peers, so a node believes an address only when peers
//! in at least [`VoteConfig::quorum`] distinct **voter groups** saw it: one
//! group per IPv4 /24 or IPv6 /48 for public voters (many keys on one
//! network are one voice), one per exact IP for the others (loopback and LAN
//! peers, whose addresses say nothing of who runs them). Each fingerprint
//! holds one vote (its latest), votes expire after [`VoteConfig::ttl`], and
//! a changed address needs a new quorum larger than the current one's.
//!
//! Only the IP is voted on: an outgoing TCP connection leaves from an
//! ephemeral port, so the port a peer saw says nothing about where we listen.
//! Where we are reached is the learned IP with our own listening (or mapped)
//! port, which [`crate::reachability`] checks.
//!
//! Sans-IO: events carry the time, nothing here reads a clock.

use core::net::IpAddr;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::expiring::Expiring;
use crate::fingerprint::Fingerprint;
use crate::subnet::{is_public, LimitScope};
use crate::time::Time;

/// Which voters count as one voice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum VoterGroup {
    /// An IPv4 /24 (the first three octets).
    V4([u8; 3]),
    /// An IPv6 /48 (the first six bytes).
    V6([u8; 6]),
    /// One exact address (voters outside the grouping scope).
    Host(IpAddr),
}

impl VoterGroup {
    /// The group of a voter at `ip`: its /24 or /48 if `scope` counts `ip`,
    /// else the address itself. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn of(ip: IpAddr, scope: LimitScope) -> VoterGroup {
        let ip = ip.to_canonical();
        if !scope.counts(ip) {
            return VoterGroup::Host(ip);
        }
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                VoterGroup::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                VoterGroup::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
            }
        }
    }
}

/// How votes are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteConfig {
    /// Distinct voter groups that must agree before an address is believed
    /// (at least 1; values below are raised to it).
    pub quorum: usize,
    /// How long a vote counts.
    pub ttl: Duration,
    /// Votes held at once (one per fingerprint); when full, the oldest vote
    /// of the group holding the most votes goes first, so a crowd of keys on
    /// one network only displaces its own votes.
    pub max_votes: usize,
    /// Which voter addresses are grouped by /24 or /48 (the others count per
    /// exact IP). Default: public addresses only.
    pub scope: LimitScope,
}

impl Default for VoteConfig {
    fn default() -> Self {
        VoteConfig {
            quorum: 3,
            ttl: Duration::from_secs(3600),
            max_votes: 128,
            scope: LimitScope::PublicOnly,
        }
    }
}

/// One peer's latest report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Vote {
    group: VoterGroup,
    observed: IpAddr,
}

/// The believed address changed (`None`: no address has a quorum any more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressChange {
    /// What was believed before.
    pub from: Option<IpAddr>,
    /// What is believed now.
    pub to: Option<IpAddr>,
}

/// The vote counter. Feed it [`AddressVotes::on_observed`] for every answer
/// that carried an observed address, and [`AddressVotes::handle_timeout`]
/// at [`AddressVotes::poll_timeout`].
#[derive(Clone, Debug)]
pub struct AddressVotes {
    config: VoteConfig,
    votes: Expiring<Fingerprint, Vote>,
    current: Option<IpAddr>,
}

impl AddressVotes {
    /// An empty counter.
    pub fn new(config: VoteConfig) -> Self {
        AddressVotes {
            votes: Expiring::new(config.ttl, config.max_votes),
            config,
            current: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VoteConfig {
        &self.config
    }

    /// The address believed now.
    pub fn current(&self) -> Option<IpAddr> {
        self.current
    }

    /// Votes held (one per fingerprint, expired ones may linger until the
    /// next event).
    pub fn len(&self) -> usize {
        self.votes.len()
    }

    /// True if no vote is held.
    pub fn is_empty(&self) -> bool {
        self.votes.is_empty()
    }

    /// Distinct voter groups behind each observed address, most first.
    pub fn tally(&self) -> Vec<(IpAddr, usize)> {
        let mut t: Vec<(IpAddr, usize)> = self
            .groups_per_address()
            .into_iter()
            .map(|(ip, g)| (ip, g.len()))
            .collect();
        t.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        t
    }

    /// `voter`, reached at `voter_ip`, saw us at `observed`. Returns the
    /// change this vote caused, if any. Addresses no peer can have seen
    /// (unspecified, multicast, broadcast) are ignored.
    pub fn on_observed(
        &mut self,
        now: Time,
        voter: Fingerprint,
        voter_ip: IpAddr,
        observed: IpAddr,
    ) -> Option<AddressChange> {
        let observed = observed.to_canonical();
        if !plausible(observed) {
            return None;
        }
        let vote = Vote {
            group: VoterGroup::of(voter_ip, self.config.scope),
            observed,
        };
        // A crowd of keys on one network only displaces its own votes.
        self.votes.insert(now, voter, vote, |v| v.group);
        self.decide()
    }

    /// Drops expired votes; the believed address may change.
    pub fn handle_timeout(&mut self, now: Time) -> Option<AddressChange> {
        if self.votes.expire(now) {
            self.decide()
        } else {
            None
        }
    }

    /// When the oldest vote expires.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.votes.next_expiry()
    }

    /// Removes expired votes; true if any was.
    fn groups_per_address(&self) -> BTreeMap<IpAddr, BTreeSet<VoterGroup>> {
        let mut m: BTreeMap<IpAddr, BTreeSet<VoterGroup>> = BTreeMap::new();
        for (_, v) in self.votes.values() {
            m.entry(v.observed).or_default().insert(v.group);
        }
        m
    }

    /// Applies the rule: an address with a quorum is believed; the believed
    /// one stays unless another has a quorum and more groups (a public
    /// address beats a private one, e.g. a LAN peer's view); with no quorum
    /// anywhere, the believed one stays while any vote for it lives.
    fn decide(&mut self) -> Option<AddressChange> {
        let groups = self.groups_per_address();
        let quorum = self.config.quorum.max(1);
        let rank = |ip: &IpAddr, n: usize| (is_public(*ip), n);
        let best = groups
            .iter()
            .filter(|(_, g)| g.len() >= quorum)
            .map(|(ip, g)| (*ip, g.len()))
            // Ties: the lowest address, so the outcome does not depend on order.
            .max_by(|a, b| rank(&a.0, a.1).cmp(&rank(&b.0, b.1)).then(b.0.cmp(&a.0)));
        let current = self
            .current
            .map(|ip| (ip, groups.get(&ip).map_or(0, |g| g.len())));
        let next = match (current, best) {
            (Some((c, n)), Some((b, m))) if c != b && rank(&b, m) > rank(&c, n) => Some(b),
            (Some((c, n)), _) if n > 0 => Some(c),
            (_, Some((b, _))) => Some(b),
            _ => None,
        };
        if next == self.current {
            return None;
        }
        let change = AddressChange {
            from: self.current,
            to: next,
        };
        self.current = next;
        Some(change)
    }
}

/// An address a peer could have seen a connection come from.
fn plausible(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
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

    const MINE: &str = "81.2.69.142";
    const LIE: &str = "91.198.174.192";

    #[test]
    fn groups_are_slash_24_slash_48_or_the_host() {
        let s = LimitScope::PublicOnly;
        assert_eq!(
            VoterGroup::of(ip("1.2.3.4"), s),
            VoterGroup::of(ip("1.2.3.250"), s)
        );
        assert_ne!(
            VoterGroup::of(ip("1.2.3.4"), s),
            VoterGroup::of(ip("1.2.4.4"), s)
        );
        assert_eq!(
            VoterGroup::of(ip("2a00:1:2:ffff::1"), s),
            VoterGroup::of(ip("2a00:1:2:1::9"), s)
        );
        assert_ne!(
            VoterGroup::of(ip("2a00:1:2::1"), s),
            VoterGroup::of(ip("2a00:1:3::1"), s)
        );
        assert_eq!(
            VoterGroup::of(ip("::ffff:1.2.3.4"), s),
            VoterGroup::of(ip("1.2.3.9"), s)
        );
        // Loopback and LAN voters count per address.
        assert_ne!(
            VoterGroup::of(ip("127.0.0.2"), s),
            VoterGroup::of(ip("127.0.0.3"), s)
        );
        assert_eq!(
            VoterGroup::of(ip("127.0.0.2"), LimitScope::All),
            VoterGroup::of(ip("127.0.0.3"), LimitScope::All)
        );
    }

    #[test]
    fn a_quorum_of_distinct_networks_is_needed() {
        let mut v = AddressVotes::new(VoteConfig::default());
        assert_eq!(v.on_observed(Time(0), fp(1), ip("1.1.1.1"), ip(MINE)), None);
        assert_eq!(v.on_observed(Time(1), fp(2), ip("2.2.2.2"), ip(MINE)), None);
        assert_eq!(v.current(), None);
        assert_eq!(
            v.on_observed(Time(2), fp(3), ip("3.3.3.3"), ip(MINE)),
            Some(AddressChange {
                from: None,
                to: Some(ip(MINE))
            })
        );
        assert_eq!(v.tally(), vec![(ip(MINE), 3)]);
    }

    #[test]
    fn many_keys_on_one_slash_24_are_one_voice() {
        let mut v = AddressVotes::new(VoteConfig::default());
        for i in 0..100 {
            v.on_observed(Time(i), fp(i as u32), ip(&format!("5.6.7.{i}")), ip(LIE));
        }
        assert_eq!(v.current(), None);
        assert_eq!(v.tally(), vec![(ip(LIE), 1)]);
        // Nor do many keys on one /48.
        let mut v = AddressVotes::new(VoteConfig::default());
        for i in 0..100u32 {
            let voter = ip(&format!("2a00:aa:bb:{:x}::{:x}", i, i + 1));
            v.on_observed(Time(0), fp(i), voter, ip(LIE));
        }
        assert_eq!(v.current(), None);
    }

    #[test]
    fn sybils_cannot_move_an_established_address_or_evict_honest_votes() {
        let mut v = AddressVotes::new(VoteConfig {
            max_votes: 16,
            ..VoteConfig::default()
        });
        for i in 1..=3u32 {
            v.on_observed(Time(0), fp(i), ip(&format!("{i}.0.0.1")), ip(MINE));
        }
        assert_eq!(v.current(), Some(ip(MINE)));
        // 500 sybil keys on one /24 and 500 on one /48, all lying.
        for i in 0..500u32 {
            v.on_observed(Time(10), fp(1000 + i), ip("9.9.9.9"), ip(LIE));
            let v6 = ip(&format!("2a00:99:99:{:x}::1", i));
            v.on_observed(Time(10), fp(5000 + i), v6, ip(LIE));
        }
        assert_eq!(v.current(), Some(ip(MINE)));
        assert!(v.len() <= 16);
        // The honest votes were not the ones dropped to make room.
        assert_eq!(v.tally()[0], (ip(MINE), 3));
    }

    #[test]
    fn a_change_needs_a_larger_new_quorum() {
        let mut v = AddressVotes::new(VoteConfig::default());
        for i in 1..=3u32 {
            v.on_observed(Time(0), fp(i), ip(&format!("{i}.0.0.1")), ip(MINE));
        }
        let new = ip("81.2.69.200");
        // Three other networks see a new address: a tie, nothing moves.
        for i in 4..=6u32 {
            v.on_observed(Time(5), fp(i), ip(&format!("{i}.0.0.1")), new);
        }
        assert_eq!(v.current(), Some(ip(MINE)));
        // One of the old voters now sees the new one too: it wins.
        let change = v.on_observed(Time(6), fp(1), ip("1.0.0.1"), new);
        assert_eq!(
            change,
            Some(AddressChange {
                from: Some(ip(MINE)),
                to: Some(new)
            })
        );
    }

    #[test]
    fn votes_expire_and_the_address_is_forgotten() {
        let config = VoteConfig {
            ttl: Duration::from_secs(60),
            ..VoteConfig::default()
        };
        let mut v = AddressVotes::new(config);
        for i in 1..=3u32 {
            v.on_observed(
                Time(u64::from(i)),
                fp(i),
                ip(&format!("{i}.0.0.1")),
                ip(MINE),
            );
        }
        assert_eq!(v.poll_timeout(), Some(Time(60_001)));
        assert_eq!(v.handle_timeout(Time(60_000)), None);
        assert_eq!(
            v.handle_timeout(Time(60_002)),
            None,
            "one vote left keeps it"
        );
        assert_eq!(
            v.handle_timeout(Time(60_003)),
            Some(AddressChange {
                from: Some(ip(MINE)),
                to: None
            })
        );
        assert!(v.is_empty());
        assert_eq!(v.poll_timeout(), None);
    }

    #[test]
    fn a_public_address_beats_a_lan_view_and_nonsense_is_ignored() {
        let mut v = AddressVotes::new(VoteConfig::default());
        for i in 2..=6u32 {
            v.on_observed(
                Time(0),
                fp(i),
                ip(&format!("192.168.1.{i}")),
                ip("192.168.1.10"),
            );
        }
        assert_eq!(v.current(), Some(ip("192.168.1.10")));
        for i in 1..=3u32 {
            v.on_observed(Time(1), fp(100 + i), ip(&format!("{i}.0.0.1")), ip(MINE));
        }
        assert_eq!(v.current(), Some(ip(MINE)));
        for nonsense in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1"] {
            assert_eq!(
                v.on_observed(Time(2), fp(900), ip("8.8.8.8"), ip(nonsense)),
                None
            );
        }
        assert!(!v.tally().iter().any(|(a, _)| a.is_unspecified()));
    }
}
