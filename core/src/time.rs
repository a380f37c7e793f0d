//! The core's own notion of time. There is no clock in the core: the driver passes `now` in.

use core::fmt;
use core::num::NonZeroU64;

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
///
/// The last representable instant is `u64::MAX - 1` milliseconds, some 584 million years after
/// the epoch; later ones saturate to it. That one value buys `Option<Instant>` its `None` for
/// free: an expiry is 8 bytes, not 16, in every row, tombstone and request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    /// Milliseconds since the epoch, plus one.
    millis_plus_one: NonZeroU64,
}

impl Instant {
    /// The epoch itself.
    pub const ZERO: Instant = Instant::from_millis(0);

    /// The instant `millis` milliseconds after the epoch (at most `u64::MAX - 1`).
    #[inline]
    pub const fn from_millis(millis: u64) -> Self {
        match NonZeroU64::new(millis.saturating_add(1)) {
            Some(millis_plus_one) => Instant { millis_plus_one },
            None => unreachable!(),
        }
    }

    /// Milliseconds since the epoch.
    #[inline]
    pub const fn as_millis(self) -> u64 {
        self.millis_plus_one.get() - 1
    }

    /// `self + d`, saturating at the end of time instead of overflowing.
    #[inline]
    pub const fn saturating_add(self, d: Duration) -> Self {
        Instant::from_millis(self.as_millis().saturating_add(d.millis))
    }
}

impl Default for Instant {
    fn default() -> Self {
        Instant::ZERO
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
        write!(f, "t={}ms", self.as_millis())
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
        Some(at) => now.as_millis() >= at.as_millis(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_round_trip_order_and_saturate_at_the_end_of_time() {
        for millis in [0, 1, 1_700_000_000_000, u64::MAX - 1] {
            assert_eq!(Instant::from_millis(millis).as_millis(), millis);
        }
        assert_eq!(Instant::from_millis(u64::MAX).as_millis(), u64::MAX - 1);
        assert_eq!(
            Instant::from_millis(u64::MAX - 5) + Duration::from_millis(10),
            Instant::from_millis(u64::MAX - 1)
        );
        assert!(Instant::ZERO < Instant::from_millis(1));
        assert_eq!(Instant::default(), Instant::ZERO);
        assert!(is_expired(
            Some(Instant::from_millis(5)),
            Instant::from_millis(5)
        ));
        assert!(!is_expired(
            Some(Instant::from_millis(6)),
            Instant::from_millis(5)
        ));
        assert!(!is_expired(None, Instant::from_millis(u64::MAX)));
        assert_eq!(
            core::mem::size_of::<Option<Instant>>(),
            8,
            "an expiry costs no tag"
        );
    }
}
