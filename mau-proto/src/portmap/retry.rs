//! Retransmission timing: a first interval that doubles up to a ceiling,
//! optionally jittered by ±10% (PCP, RFC 6887 §8.1.1).

use std::time::Duration;

use crate::{Rng, Time};

/// How one protocol retransmits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    pub initial: Duration,
    pub max: Duration,
    pub jitter: bool,
}

/// The requests sent so far in one exchange and when to send the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retry {
    /// Requests sent.
    pub sent: u32,
    /// When the next one is due (or the exchange gives up).
    pub next_at: Time,
    rt: Duration,
    schedule: Schedule,
}

fn jittered(d: Duration, schedule: Schedule, rng: &mut Rng) -> Duration {
    if !schedule.jitter {
        return d;
    }
    // (1 + RAND) * RT, RAND uniform in [-0.1, +0.1].
    let permille = 900 + rng.below(201);
    d * permille as u32 / 1000
}

impl Retry {
    /// The first request, sent at `now`.
    pub fn first(schedule: Schedule, now: Time, rng: &mut Rng) -> Retry {
        let rt = jittered(schedule.initial, schedule, rng);
        Retry {
            sent: 1,
            next_at: now + rt,
            rt,
            schedule,
        }
    }

    /// One more request sent at `now`; the wait doubles, up to the ceiling.
    pub fn again(&mut self, now: Time, rng: &mut Rng) {
        let doubled = (self.rt * 2).min(self.schedule.max);
        self.rt = jittered(doubled, self.schedule, rng);
        self.sent = self.sent.saturating_add(1);
        self.next_at = now + self.rt;
    }

    /// Brings the next send forward so that it happens before `deadline`
    /// (at most half the time left, at least 100 ms from `now`).
    pub fn before(&mut self, now: Time, deadline: Time) {
        let half = deadline.since(now) / 2;
        let latest = now + half.max(Duration::from_millis(100));
        self.next_at = self.next_at.min(latest).min(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_ceiling_with_bounded_jitter() {
        let s = Schedule {
            initial: Duration::from_secs(3),
            max: Duration::from_secs(20),
            jitter: true,
        };
        let mut rng = Rng::new(1);
        let mut r = Retry::first(s, Time::ZERO, &mut rng);
        let mut now = Time::ZERO;
        let mut waits = vec![r.next_at.since(now)];
        for _ in 0..6 {
            now = r.next_at;
            r.again(now, &mut rng);
            waits.push(r.next_at.since(now));
        }
        assert!(waits[0] >= Duration::from_millis(2700) && waits[0] <= Duration::from_millis(3300));
        assert!(waits[1] >= Duration::from_millis(5400) && waits[1] <= Duration::from_millis(6600));
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(22)),
            "{waits:?}"
        );
        assert_eq!(r.sent, 7);
    }
}
