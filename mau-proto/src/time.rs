//! Time as the core sees it: a number handed in by the caller.

use std::ops::{Add, Sub};
use std::time::Duration;

/// A point in time, in milliseconds since an epoch the caller chooses
/// (a real adapter: when the node started; the simulator: virtual zero).
///
/// The core never reads a clock: every call that needs "now" takes one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub struct Time(pub u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// From a duration since the epoch.
    pub fn from_duration(d: Duration) -> Time {
        Time(d.as_millis().min(u64::MAX as u128) as u64)
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(&self) -> u64 {
        self.0
    }

    /// Duration since the epoch.
    pub fn as_duration(&self) -> Duration {
        Duration::from_millis(self.0)
    }

    /// Time elapsed since `earlier` (zero if `earlier` is later).
    pub fn since(&self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(
            self.0
                .saturating_sub(d.as_millis().min(u64::MAX as u128) as u64),
        )
    }
}

/// A [`Time`] in whole seconds, packed in 4 bytes: what the routing table keeps
/// per entry and per bucket. Half the size of a `Time`, and `Option<Stamp>` is
/// still 4 bytes (the niche of `NonZeroU32`), so an entry for a `u32` address
/// shrinks from 72 to 52 bytes: the difference between a million simulated
/// nodes fitting in memory or not. Range: 136 years after the epoch (later
/// times saturate).
///
/// Second precision is enough for what the stamps decide (STALL_PERIOD 1 h,
/// PING_MIN_BACKOFF 30 s); each caller picks the rounding that keeps its rule
/// safe: [`Stamp::floor`] for "seen at" (an entry looks at most 1 s older),
/// [`Stamp::ceil`] for "pinged at" (a backoff never ends early).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Stamp(std::num::NonZeroU32);

impl Stamp {
    /// Seconds + 1, saturating: the `+ 1` keeps zero free for the niche.
    fn from_secs(secs: u64) -> Stamp {
        let v = secs.saturating_add(1).min(u64::from(u32::MAX)) as u32;
        Stamp(std::num::NonZeroU32::MIN.saturating_add(v - 1))
    }

    /// `t` rounded down to the second.
    pub fn floor(t: Time) -> Stamp {
        Stamp::from_secs(t.0 / 1000)
    }

    /// `t` rounded up to the second.
    pub fn ceil(t: Time) -> Stamp {
        Stamp::from_secs(t.0.div_ceil(1000))
    }

    /// Back to a [`Time`] (a whole second).
    pub fn time(self) -> Time {
        Time(u64::from(self.0.get() - 1) * 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_to_seconds_both_ways() {
        assert_eq!(Stamp::floor(Time(1999)).time(), Time(1000));
        assert_eq!(Stamp::ceil(Time(1001)).time(), Time(2000));
        assert_eq!(Stamp::ceil(Time(2000)).time(), Time(2000));
        assert_eq!(Stamp::floor(Time::ZERO).time(), Time::ZERO);
        assert_eq!(std::mem::size_of::<Option<Stamp>>(), 4);
    }

    #[test]
    fn stamps_saturate_instead_of_wrapping() {
        let far = Time(u64::MAX);
        assert_eq!(Stamp::floor(far), Stamp::ceil(far));
        assert!(Stamp::floor(far) > Stamp::floor(Time(1000 * u64::from(u32::MAX) / 2)));
    }
}
