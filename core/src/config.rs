//! Tunables shared by the tiered machines.

use crate::limits::{
    DEFAULT_INLINE_THRESHOLD, MAX_BACKOFF_MILLIS, MAX_CLEANUP_ATTEMPTS, MAX_INLINE_THRESHOLD,
    MAX_IO_ATTEMPTS,
};
use crate::{Duration, Instant};
use core::fmt;

/// Settings for the tiered protocol. [`Config::DEFAULT`] suits most uses.
///
/// ```
/// use cairn_core::Config;
/// let config = Config { inline_threshold: 64 * 1024, ..Config::DEFAULT };
/// config.validate().unwrap();
/// assert!(config.fits_inline(64 * 1024), "exactly the threshold is inline");
/// assert!(!config.fits_inline(64 * 1024 + 1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Objects of at most this many bytes are stored inline in the high-volume tier.
    pub inline_threshold: u64,
    /// Attempts for each idempotent request of a foreground operation (1 = no retry).
    pub io_attempts: u8,
    /// Attempts for each step of a cleanup before it is left to recovery.
    pub cleanup_attempts: u8,
    /// First backoff between cleanup attempts; doubles each time up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest backoff between cleanup attempts.
    pub backoff_max: Duration,
    /// A deliberate protocol bug for the simulator's mutation testing; `None` in every real use.
    /// Exists only with the `planted-bugs` feature.
    #[cfg(feature = "planted-bugs")]
    pub bug: Option<crate::PlantedBug>,
}

impl Config {
    /// The defaults: 1 MiB threshold, 3 attempts per request, 8 per cleanup step, backoff from
    /// 100 ms doubling to 30 s.
    pub const DEFAULT: Config = Config {
        inline_threshold: DEFAULT_INLINE_THRESHOLD,
        io_attempts: 3,
        cleanup_attempts: 8,
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(MAX_BACKOFF_MILLIS),
        #[cfg(feature = "planted-bugs")]
        bug: None,
    };

    /// Whether an object of `size` bytes is stored inline.
    pub fn fits_inline(&self, size: u64) -> bool {
        size <= self.inline_threshold
    }

    /// Checks every setting against its bound.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.inline_threshold > MAX_INLINE_THRESHOLD {
            return Err(ConfigError::InlineThresholdTooLarge);
        }
        if self.io_attempts == 0 || self.io_attempts > MAX_IO_ATTEMPTS {
            return Err(ConfigError::IoAttempts);
        }
        if self.cleanup_attempts == 0 || self.cleanup_attempts > MAX_CLEANUP_ATTEMPTS {
            return Err(ConfigError::CleanupAttempts);
        }
        if self.backoff_max.as_millis() > MAX_BACKOFF_MILLIS
            || self.backoff_initial > self.backoff_max
        {
            return Err(ConfigError::Backoff);
        }
        Ok(())
    }

    /// When the retry after failed attempt number `attempt` (0-based) of a cleanup step is due.
    pub(crate) fn backoff_until(&self, now: Instant, attempt: u8) -> Instant {
        let factor = 1u64 << attempt.min(32);
        let millis = self.backoff_initial.as_millis().saturating_mul(factor);
        now + Duration::from_millis(millis.min(self.backoff_max.as_millis()))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

/// A [`Config`] setting out of bounds. The caller's fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `inline_threshold` exceeds [`MAX_INLINE_THRESHOLD`].
    InlineThresholdTooLarge,
    /// `io_attempts` is 0 or exceeds [`MAX_IO_ATTEMPTS`].
    IoAttempts,
    /// `cleanup_attempts` is 0 or exceeds [`MAX_CLEANUP_ATTEMPTS`].
    CleanupAttempts,
    /// `backoff_initial` exceeds `backoff_max`, or `backoff_max` exceeds
    /// [`MAX_BACKOFF_MILLIS`].
    Backoff,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InlineThresholdTooLarge => {
                write!(f, "inline threshold exceeds {MAX_INLINE_THRESHOLD} bytes")
            }
            ConfigError::IoAttempts => write!(f, "io_attempts must be 1..={MAX_IO_ATTEMPTS}"),
            ConfigError::CleanupAttempts => {
                write!(f, "cleanup_attempts must be 1..={MAX_CLEANUP_ATTEMPTS}")
            }
            ConfigError::Backoff => write!(
                f,
                "backoff_initial must not exceed backoff_max, which must not exceed {MAX_BACKOFF_MILLIS} ms"
            ),
        }
    }
}
