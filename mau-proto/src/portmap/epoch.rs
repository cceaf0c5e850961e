//! Has the gateway lost its mappings? Both protocols stamp each answer with
//! the seconds since the gateway's mapping state began (its "epoch"); a
//! client compares how far that advanced with how far its own clock did.

use crate::Time;

/// Which RFC's rule to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// RFC 6887 §8.5: the epoch went back more than 1 s, or the two clocks
    /// disagree by more than 2 s plus 1/16 of the interval.
    Pcp,
    /// RFC 6886 §3.6: the epoch is more than 2 s below the previous one
    /// plus 7/8 of the time elapsed on our clock.
    NatPmp,
}

/// The last epoch a gateway reported and when we got it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Epoch {
    last: Option<(u32, Time)>,
}

impl Epoch {
    /// Records the gateway's `epoch` seen at `now`; true when the gateway
    /// lost its state since the previous answer (never on the first one).
    pub fn lost_state(&mut self, rule: Rule, epoch: u32, now: Time) -> bool {
        let lost = self.last.is_some_and(|(prev, at)| {
            let client = i128::from(now.since(at).as_millis() as u64);
            let server = (i128::from(epoch) - i128::from(prev)) * 1000;
            match rule {
                Rule::Pcp => {
                    server < -1000
                        || client + 2000 < server - server / 16
                        || server + 2000 < client - client / 16
                }
                Rule::NatPmp => server + 2000 < client * 7 / 8,
            }
        });
        self.last = Some((epoch, now));
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: u64) -> Time {
        Time::ZERO + Duration::from_secs(s)
    }

    #[test]
    fn a_steady_gateway_keeps_its_state() {
        for rule in [Rule::Pcp, Rule::NatPmp] {
            let mut e = Epoch::default();
            assert!(!e.lost_state(rule, 1000, at(5)));
            assert!(!e.lost_state(rule, 1060, at(65)));
            // Second granularity and a little drift are tolerated.
            assert!(!e.lost_state(rule, 1121, at(125)));
            assert!(!e.lost_state(rule, 1180, at(186)));
        }
    }

    #[test]
    fn a_rebooted_gateway_lost_its_state() {
        for rule in [Rule::Pcp, Rule::NatPmp] {
            let mut e = Epoch::default();
            e.lost_state(rule, 5000, at(0));
            assert!(e.lost_state(rule, 3, at(60)), "{rule:?}: epoch went back");
            // It rebooted 10 s after our last answer: 50 s of ours, 40 of its.
            let mut e = Epoch::default();
            e.lost_state(rule, 5000, at(0));
            assert!(e.lost_state(rule, 4000, at(50)));
            let mut e = Epoch::default();
            e.lost_state(rule, 100, at(0));
            assert!(e.lost_state(rule, 140, at(100)), "{rule:?}: 40 s in 100 s");
        }
        // PCP also notices an epoch running ahead of our clock.
        let mut e = Epoch::default();
        e.lost_state(Rule::Pcp, 100, at(0));
        assert!(e.lost_state(Rule::Pcp, 400, at(100)));
    }
}
