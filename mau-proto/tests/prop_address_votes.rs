//! Properties of the address votes and the reachability verdict: whatever
//! order votes come in, an address is believed only with a quorum of
//! distinct networks behind it, the state stays bounded, and an attacker on
//! fewer networks than the quorum (with any number of keys) never moves it.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use mau_proto::{
    AddressVotes, Fingerprint, Reach, ReachConfig, Reachability, Time, VoteConfig, VoterGroup,
};
use proptest::prelude::*;

fn fp(i: u32) -> Fingerprint {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&i.to_be_bytes());
    Fingerprint::from_bytes(&b).expect("20 bytes")
}

/// Host `host` of public network `net` (distinct /24s and /48s per `net`).
fn voter(net: u8, host: u8, v6: bool) -> IpAddr {
    if v6 {
        format!("2a00:{:x}:1:{:x}::1", u16::from(net) + 1, host)
            .parse()
            .expect("v6")
    } else {
        IpAddr::from([31 + net, 7, 0, host])
    }
}

/// Host `h` of an attacker's network `net`: an IPv6 /48 for odd `net`, an
/// IPv4 /24 for even ones (one group each, whatever `h`).
fn attacker(net: u8, h: u8) -> IpAddr {
    voter(net, h, net % 2 == 1)
}

/// One of a few public addresses peers may claim to see.
fn seen(i: u8) -> IpAddr {
    IpAddr::from([81, 2, 69, 140 + i])
}

#[derive(Clone, Debug)]
enum Op {
    /// Voter key `k` on network `net` (host `h`, v6 or not) says it saw `seen(a)`, `dt` ms later.
    Vote {
        k: u32,
        net: u8,
        h: u8,
        v6: bool,
        a: u8,
        dt: u64,
    },
    /// Time passes.
    Tick(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u32..40, 0u8..8, any::<u8>(), any::<bool>(), 0u8..4, 0u64..5_000)
            .prop_map(|(k, net, h, v6, a, dt)| Op::Vote { k, net, h, v6, a, dt }),
        1 => (0u64..120_000).prop_map(Op::Tick),
    ]
}

const TTL: Duration = Duration::from_secs(60);

proptest! {
    #![proptest_config(common::config(128))]

    #[test]
    fn believed_addresses_have_a_quorum_and_state_is_bounded(
        quorum in 1usize..5,
        max_votes in 1usize..24,
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let config = VoteConfig { quorum, ttl: TTL, max_votes, ..VoteConfig::default() };
        let mut v = AddressVotes::new(config);
        let mut now = Time::ZERO;
        for o in ops {
            let change = match o {
                Op::Vote { k, net, h, v6, a, dt } => {
                    now = now + Duration::from_millis(dt);
                    v.on_observed(now, fp(k), voter(net, h, v6), seen(a))
                }
                Op::Tick(dt) => {
                    now = now + Duration::from_millis(dt);
                    v.handle_timeout(now)
                }
            };
            prop_assert!(v.len() <= max_votes);
            let tally = v.tally();
            let groups = |ip: IpAddr| tally.iter().find(|(a, _)| *a == ip).map_or(0, |t| t.1);
            if let Some(c) = change {
                prop_assert_eq!(c.to, v.current());
                prop_assert_ne!(c.from, c.to);
                // Any newly believed address has a quorum behind it.
                if let Some(to) = c.to {
                    prop_assert!(groups(to) >= quorum, "{:?} with {:?}", c, tally);
                }
            }
            // A believed address still has a live vote.
            if let Some(cur) = v.current() {
                prop_assert!(groups(cur) >= 1, "{:?} without votes: {:?}", cur, tally);
            }
            if let Some(t) = v.poll_timeout() {
                prop_assert!(t > now);
            }
        }
    }

    #[test]
    fn fewer_networks_than_the_quorum_never_move_the_address(
        quorum in 2usize..5,
        max_votes in 1usize..32,
        attackers in 1u8..5,
        attack in proptest::collection::vec((0u32..500, 0u8..5, any::<u8>(), 1u8..4), 1..300),
    ) {
        let networks = attackers.min(quorum as u8 - 1);
        // Fewer slots than the quorum could never believe anything.
        let max_votes = max_votes.max(quorum);
        let config = VoteConfig { quorum, ttl: TTL, max_votes, ..VoteConfig::default() };
        let mut v = AddressVotes::new(config);
        // Honest peers on `quorum` networks (100..) see seen(0).
        for i in 0..quorum as u8 {
            v.on_observed(Time(0), fp(10_000 + u32::from(i)), voter(100 + i, 1, false), seen(0));
        }
        prop_assert_eq!(v.current(), Some(seen(0)));
        for (n, (k, net, h, a)) in attack.into_iter().enumerate() {
            let at = Time(1 + n as u64);
            v.on_observed(at, fp(k), attacker(net % networks, h), seen(a));
            prop_assert_ne!(v.current(), Some(seen(a)));
            prop_assert!(v.current() == Some(seen(0)) || v.current().is_none());
        }
        // With room for the honest votes, they are never the ones displaced.
        if max_votes >= 2 * quorum {
            prop_assert_eq!(v.current(), Some(seen(0)));
        }
    }

    #[test]
    fn fewer_networks_than_the_quorum_never_overturn_a_verdict(
        quorum in 2usize..5,
        max_results in 8usize..32,
        attackers in 1u8..5,
        attack in proptest::collection::vec((0u32..500, 0u8..5, any::<u8>()), 1..300),
    ) {
        let networks = attackers.min(quorum as u8 - 1);
        let config = ReachConfig { quorum, ttl: TTL, max_results, ..ReachConfig::default() };
        let mut r = Reachability::new(config);
        for i in 0..quorum as u8 {
            r.on_result(Time(0), fp(10_000 + u32::from(i)), voter(100 + i, 1, false), "a", false);
        }
        prop_assert_eq!(r.state(), &Reach::Unreachable("a"));
        for (n, (k, net, h)) in attack.into_iter().enumerate() {
            r.on_result(Time(1 + n as u64), fp(k), attacker(net % networks, h), "a", true);
            prop_assert_eq!(r.state(), &Reach::Unreachable("a"));
            prop_assert!(r.len() <= max_results);
        }
    }
}

#[test]
fn voter_networks_in_the_generators_are_distinct_groups() {
    let s = mau_proto::LimitScope::PublicOnly;
    assert_ne!(
        VoterGroup::of(voter(0, 1, false), s),
        VoterGroup::of(voter(1, 1, false), s)
    );
    assert_eq!(
        VoterGroup::of(voter(3, 1, true), s),
        VoterGroup::of(voter(3, 200, true), s)
    );
}
