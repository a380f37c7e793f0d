//! The core's own notion of time. There is no clock in the core: the driver passes `now` in.

use core::fmt;

/// A point in time, in milliseconds since an epoch the driver chooses.
///
/// The adapters use the UNIX epoch, so expiry times persist meaningfully; the simulator starts its
/// virtual clock at zero. The core only compares instants, it never reads a clock.
///
/// ```
/// use cairn_core::{Duration, Instant};
/// let t = Instant::from_millis(1_000);
/// assert_eq!(t + Duration::from_secs(2), Instant::from_millis(3_000));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant {
    millis: u64,
}

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant { millis: 0 };

    /// The instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Instant { millis }
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }

    /// `self + d`, saturating at the end of time instead of overflowing.
    pub const fn saturating_add(self, d: Duration) -> Self {
        Instant {
            millis: self.millis.saturating_add(d.millis),
        }
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}ms", self.millis)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A span of time, in milliseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Duration {
    millis: u64,
}

impl Duration {
    /// No time at all.
    pub const ZERO: Duration = Duration { millis: 0 };

    /// `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Duration { millis }
    }

    /// `secs` seconds, saturating.
    pub const fn from_secs(secs: u64) -> Self {
        Duration {
            millis: secs.saturating_mul(1000),
        }
    }

    /// The length in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.millis
    }
}

/// Whether a row with this expiry is expired at `now`. A row expires *at* its expiry instant:
/// from that millisecond on it counts as absent for reads and for every conditional operation.
///
/// Every backend uses this one function so that the tiers agree on what "expired" means.
pub const fn is_expired(expires: Option<Instant>, now: Instant) -> bool {
    match expires {
        Some(at) => now.millis >= at.millis,
        None => false,
    }
}
