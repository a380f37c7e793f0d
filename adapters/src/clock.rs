//! Where the driver gets `now`. The core never reads a clock; the driver asks one of these.

use cairn_core::{Duration, Instant};
use std::sync::atomic::{AtomicU64, Ordering};

/// A source of the current time, in milliseconds since the UNIX epoch.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Instant;
}

/// The operating system's wall clock, exact to the millisecond.
///
/// A read costs 25 to 40 ns on a typical Linux machine (more under a hypervisor), about half of a
/// whole in-memory get; a store reads the clock once per operation, so its default is the cheaper
/// [`CoarseClock`].
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Instant::from_millis(since_epoch.as_millis() as u64)
    }
}

/// The operating system's wall clock as of its last timer tick: the default clock of a store.
///
/// On Linux and Android this is `CLOCK_REALTIME_COARSE`, a value the kernel keeps current at
/// every tick and the vDSO hands out without reading the hardware counter: about 5 ns a read
/// instead of the 25 to 40 ns of [`SystemClock`]. The price is a lag of up to one tick behind the
/// exact clock: 1 to 10 ms depending on the kernel's `CONFIG_HZ` (4 ms on most distributions).
/// Objects are created and expire on that tick, so an object may outlive its TTL by up to a tick
/// and its `created` stamp may be up to a tick early; both stay ordered like the wall clock. On
/// other systems it is exactly [`SystemClock`].
///
/// Use [`SystemClock`] (see [`StoreBuilder::clock`](crate::StoreBuilder::clock)) where stamps
/// must be exact to the millisecond.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoarseClock;

impl Clock for CoarseClock {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn now(&self) -> Instant {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        let millis = u64::try_from(t.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1000)
            .saturating_add(t.tv_nsec as u64 / 1_000_000);
        Instant::from_millis(millis)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn now(&self) -> Instant {
        SystemClock.now()
    }
}

/// A clock that moves only when told to, for tests of time-based behaviour.
///
/// ```
/// use cairn_adapters::{Clock, ManualClock};
/// use cairn_core::Duration;
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now().as_millis(), 3_000);
/// ```
#[derive(Debug, Default)]
pub struct ManualClock {
    millis: AtomicU64,
}

impl ManualClock {
    /// A clock reading `millis`.
    pub fn new(millis: u64) -> Self {
        ManualClock {
            millis: AtomicU64::new(millis),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.millis.fetch_add(by.as_millis(), Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set(&self, to: Instant) {
        self.millis.store(to.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        Instant::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> Instant {
        (**self).now()
    }
}
