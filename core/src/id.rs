//! Identifiers the core mints: long-term revisions and change-log entries.

use crate::{Instant, Rng};
use core::fmt;

/// Names one blob in the long-term tier, together with the logical key: `{key}/{revision}`.
///
/// Every large write gets a fresh revision, so each writer owns its blob and losing a race only
/// ever means deleting your own. The top 48 bits are the creation time in milliseconds and the
/// low 80 bits random, so revisions sort by creation time and never collide in practice.
///
/// Aligned to 8 bytes, not the 16 of a bare `u128`: every tombstone, request and completion
/// carries one, and 16-byte alignment padded all of them (a completion from 64 to 96 bytes),
/// which the hot path then copied around. The price: the field cannot be borrowed, so read it
/// by value — [`Revision::get`], or `{ rev.0 }` where a macro would take a reference:
///
/// ```
/// use cairn_core::Revision;
/// let rev = Revision(0xabc);
/// assert_eq!(rev.get(), 0xabc);
/// assert_eq!(format!("{:x}", { rev.0 }), "abc");
/// assert_eq!(u128::from(rev), 0xabc);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C, packed(8))]
pub struct Revision(pub u128);

/// Names one entry in the change log (one mutation that touched the long-term tier or met a
/// tombstone). Same layout as [`Revision`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(C, packed(8))]
pub struct ChangeId(pub u128);

macro_rules! hex_id {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:032x}", { self.0 })
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
        impl $t {
            /// The id's value.
            #[inline]
            pub const fn get(self) -> u128 {
                self.0
            }
        }
        impl From<$t> for u128 {
            #[inline]
            fn from(id: $t) -> u128 {
                id.0
            }
        }
    };
}
hex_id!(Revision);
hex_id!(ChangeId);

/// Mints revisions and change ids from a seed and the current time.
///
/// A driver seeds it once (the adapters from the OS, the simulator from its seed); the core never
/// invents randomness on its own. Callers who want to choose ids themselves can skip this and pass
/// their own values to the machines — never the same revision twice for a key (a
/// [`LargePut`](crate::LargePut) that meets its own revision panics rather than let cleanup delete
/// a referenced blob).
///
/// ```
/// use cairn_core::{IdGen, Instant};
/// let mut ids = IdGen::new(42);
/// let a = ids.revision(Instant::from_millis(5));
/// let b = ids.revision(Instant::from_millis(5));
/// assert_ne!(a, b);
/// assert!(ids.revision(Instant::from_millis(6)) > a, "later revisions sort later");
/// ```
#[derive(Clone, Debug)]
pub struct IdGen {
    rng: Rng,
    /// PLANTED BUG (`RevisionsReused`): revisions from a counter instead of the generator.
    #[cfg(feature = "planted-bugs")]
    reused: Option<u64>,
}

impl IdGen {
    /// A generator whose ids are determined by `seed` and the times passed in.
    pub fn new(seed: u64) -> IdGen {
        IdGen {
            rng: Rng::new(seed),
            #[cfg(feature = "planted-bugs")]
            reused: None,
        }
    }

    /// A generator with a planted bug (feature `planted-bugs`); only
    /// [`PlantedBug::RevisionsReused`](crate::PlantedBug::RevisionsReused) affects it.
    #[cfg(feature = "planted-bugs")]
    pub fn planted(seed: u64, bug: Option<crate::PlantedBug>) -> IdGen {
        let reused = (bug == Some(crate::PlantedBug::RevisionsReused)).then_some(0);
        IdGen {
            reused,
            ..IdGen::new(seed)
        }
    }

    fn mint(&mut self, now: Instant) -> u128 {
        let time = (now.as_millis() as u128 & ((1 << 48) - 1)) << 80;
        let random = ((self.rng.next_u64() as u128) << 16) ^ (self.rng.next_u64() as u128 & 0xffff);
        time | (random & ((1 << 80) - 1))
    }

    /// A fresh long-term revision.
    pub fn revision(&mut self, now: Instant) -> Revision {
        // PLANTED BUG: a counter that every generator (every client, every restart) starts at 1.
        #[cfg(feature = "planted-bugs")]
        if let Some(counter) = &mut self.reused {
            *counter += 1;
            return Revision(u128::from(*counter));
        }
        Revision(self.mint(now))
    }

    /// A fresh change-log entry id.
    pub fn change_id(&mut self, now: Instant) -> ChangeId {
        ChangeId(self.mint(now))
    }
}
