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
