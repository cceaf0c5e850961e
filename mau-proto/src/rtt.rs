//! How long to wait for a peer before a lookup moves on: a round-trip
//! estimate from recent answers.
//!
//! The estimate is the 75th percentile of the last [`SAMPLES`] answer times,
//! doubled, clamped to `[min, max]`. A percentile rather than an average: a
//! hostile peer that answers slowly on purpose is a minority of the samples
//! and cannot stretch every lookup's patience to the hard deadline.

use std::time::Duration;

/// Answer times remembered.
pub const SAMPLES: usize = 16;

/// Recent answer times of one node's requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RttEstimator {
    /// Milliseconds, a ring buffer (0: empty slot).
    samples: [u32; SAMPLES],
    next: u8,
    count: u8,
    /// The 75th percentile of `samples`, kept: every request sent asks for
    /// it, far more often than an answer changes it.
    p75: u32,
}

impl RttEstimator {
    /// Records how long one request took to be answered.
    pub fn sample(&mut self, rtt: Duration) {
        let ms = rtt.as_millis().clamp(1, u128::from(u32::MAX)) as u32;
        self.samples[usize::from(self.next)] = ms;
        self.next = ((usize::from(self.next) + 1) % SAMPLES) as u8;
        self.count = (usize::from(self.count) + 1).min(SAMPLES) as u8;
        let mut s = self.samples;
        let s = &mut s[..usize::from(self.count)];
        s.sort_unstable();
        self.p75 = crate::percentile::nearest_rank(s, 75).unwrap_or(0);
    }

    /// How long a lookup waits for one answer: twice the 75th percentile of
    /// recent answers within `[min, max]`, or `initial` before any answer.
    pub fn timeout(&self, min: Duration, max: Duration, initial: Duration) -> Duration {
        if self.count == 0 {
            return initial.clamp(min, max.max(min));
        }
        Duration::from_millis(u64::from(self.p75) * 2).clamp(min, max.max(min))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(10);
    const INIT: Duration = Duration::from_secs(3);

    #[test]
    fn initial_then_adapts_and_stays_in_bounds() {
        let mut r = RttEstimator::default();
        assert_eq!(r.timeout(MIN, MAX, INIT), INIT);
        for _ in 0..SAMPLES {
            r.sample(Duration::from_millis(2));
        }
        assert_eq!(r.timeout(MIN, MAX, INIT), MIN);
        for _ in 0..SAMPLES {
            r.sample(Duration::from_millis(800));
        }
        assert_eq!(r.timeout(MIN, MAX, INIT), Duration::from_millis(1600));
        for _ in 0..SAMPLES {
            r.sample(Duration::from_secs(60));
        }
        assert_eq!(r.timeout(MIN, MAX, INIT), MAX);
    }

    #[test]
    fn a_slow_minority_does_not_stretch_the_timeout() {
        let mut r = RttEstimator::default();
        for i in 0..SAMPLES {
            let slow = i % 4 == 0; // a quarter of the answers are a tarpit's
            r.sample(Duration::from_millis(if slow { 9_000 } else { 300 }));
        }
        assert_eq!(r.timeout(MIN, MAX, INIT), Duration::from_millis(600));
    }
}
