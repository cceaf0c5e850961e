//! Pacing of one sync's requests: how many may be in flight, how a request
//! the friend refused (429, 503) is retried, and the sync's waiting budget.

use std::time::Duration;

use crate::rng::Rng;

/// How a request the friend refused with `429 Too Many Requests` or `503
/// Service Unavailable` is retried: after the wait its `Retry-After` asks
/// for (at most [`RetryPolicy::max_wait`]; [`RetryPolicy::default_wait`]
/// if it has none or one that does not parse), plus up to half of it again
/// at random so that requests refused together do not return together, at
/// most [`RetryPolicy::max_retries`] times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries of one request before it fails (0: none).
    pub max_retries: u32,
    /// Longest wait honoured; a longer `Retry-After` is cut to it (the
    /// retry may then be refused again, which costs one more retry).
    pub max_wait: Duration,
    /// The wait when `Retry-After` is missing or unreadable.
    pub default_wait: Duration,
    /// Waiting a whole sync may spend, over all its requests: past it a
    /// refused request fails at once. Without it a friend answering
    /// "wait 60 s" to every request would hold a sync of n files for about
    /// n × retries minutes.
    pub max_total_wait: Duration,
}

impl Default for RetryPolicy {
    /// 5 retries, waits of at most 60 s, 1 s when the friend names none,
    /// 10 minutes of waiting per sync in all.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            max_wait: Duration::from_secs(60),
            default_wait: Duration::from_secs(1),
            max_total_wait: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// The wait for a refusal whose `Retry-After` asked for `asked`
    /// (`None`: missing or unreadable), before the random extra.
    pub fn wait(&self, asked: Option<Duration>) -> Duration {
        asked.unwrap_or(self.default_wait).min(self.max_wait)
    }
}

/// The requests of one sync (its listing and every download): how many may
/// be in flight, how many the friend refused, the waiting spent.
#[derive(Debug)]
pub struct Pacing {
    policy: RetryPolicy,
    /// Requests allowed in flight; a 503 lowers it, down to one.
    window: usize,
    in_flight: usize,
    refused: usize,
    waited: Duration,
    rng: Rng,
}

/// What to do after a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Ask again after this wait.
    After(Duration),
    /// Give up: retries or the waiting budget are spent.
    GiveUp,
}

impl Pacing {
    /// A window of `concurrency` requests (at least one); `seed` drives the
    /// jitter.
    pub fn new(policy: RetryPolicy, concurrency: usize, seed: u64) -> Self {
        Pacing {
            policy,
            window: concurrency.max(1),
            in_flight: 0,
            refused: 0,
            waited: Duration::ZERO,
            rng: Rng::new(seed),
        }
    }

    /// Whether one more request may go out.
    pub fn has_room(&self) -> bool {
        self.in_flight < self.window
    }

    /// A request goes out.
    pub fn start(&mut self) {
        self.in_flight += 1;
    }

    /// A request is over (answered, failed or dropped).
    pub fn end(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// Requests allowed in flight now.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Refusals so far.
    pub fn refused(&self) -> usize {
        self.refused
    }

    /// A request in flight was refused with `status` after `retries`
    /// retries, asking for `asked`: it is over; a 503 lowers the window
    /// (the friend said too many of our requests are in flight); the wait
    /// with its jitter is taken from the budget, or the request gives up.
    pub fn refusal(&mut self, status: u16, asked: Option<Duration>, retries: u32) -> Retry {
        self.end();
        self.refused += 1;
        if status == 503 {
            self.window = (self.window - 1).max(1);
        }
        let wait = self.policy.wait(asked);
        let wait = wait.saturating_add(self.jitter(wait / 2));
        if retries >= self.policy.max_retries {
            return Retry::GiveUp;
        }
        match self.waited.checked_add(wait) {
            Some(after) if after <= self.policy.max_total_wait => {
                self.waited = after;
                Retry::After(wait)
            }
            _ => Retry::GiveUp,
        }
    }

    /// A random part of `max`.
    fn jitter(&mut self, max: Duration) -> Duration {
        let cap = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        match cap {
            0 => Duration::ZERO,
            _ => Duration::from_nanos(self.rng.below(cap)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_capped_and_defaulted() {
        let p = RetryPolicy::default();
        let s = Duration::from_secs;
        assert_eq!(p.wait(Some(s(2))), s(2));
        assert_eq!(p.wait(None), s(1));
        assert_eq!(p.wait(Some(s(3600))), s(60));
        assert_eq!(p.wait(Some(Duration::MAX)), s(60));
        let odd = RetryPolicy {
            default_wait: s(120),
            ..RetryPolicy::default()
        };
        assert_eq!(odd.wait(None), s(60));
    }

    #[test]
    fn a_refusal_waits_at_least_what_was_asked_and_at_most_half_more() {
        let mut p = Pacing::new(RetryPolicy::default(), 2, 7);
        for _ in 0..5 {
            p.start();
            match p.refusal(429, Some(Duration::from_secs(2)), 0) {
                Retry::After(w) => {
                    assert!(w >= Duration::from_secs(2) && w <= Duration::from_secs(3))
                }
                Retry::GiveUp => panic!("budget left"),
            }
        }
        assert_eq!((p.refused(), p.in_flight()), (5, 0));
        p.start();
        assert_eq!(p.refusal(429, None, 5), Retry::GiveUp, "retries spent");
    }

    #[test]
    fn the_budget_bounds_all_waiting() {
        let policy = RetryPolicy {
            max_total_wait: Duration::from_secs(10),
            ..RetryPolicy::default()
        };
        let mut p = Pacing::new(policy, 1, 1);
        let mut granted = Duration::ZERO;
        for _ in 0..20 {
            if let Retry::After(w) = p.refusal(429, Some(Duration::from_secs(3)), 0) {
                granted += w;
            }
        }
        assert!(granted <= Duration::from_secs(10), "{granted:?}");
        assert!(granted >= Duration::from_secs(6), "{granted:?}");
    }

    #[test]
    fn a_503_lowers_the_window_down_to_one() {
        let mut p = Pacing::new(RetryPolicy::default(), 3, 0);
        for _ in 0..5 {
            p.start();
            p.refusal(503, Some(Duration::ZERO), 0);
        }
        assert_eq!(p.window(), 1);
        assert!(p.has_room());
        p.start();
        assert!(!p.has_room());
        assert!(Pacing::new(RetryPolicy::default(), 0, 0).has_room());
    }
}
