//! Errors of the tiered operations, typed by whose fault they are.
//!
//! Caller mistakes (bad key, bad range, bad config) are rejected before any I/O. Domain outcomes
//! that are not failures (not found, a lost race) are values, not errors. What remains here is an
//! I/O failure reported by a backend, with what is known about whether the mutation took effect,
//! and a get that could not settle on a version.

use crate::{RangeNotSatisfiable, Revision, Tier};
use core::fmt;

/// Whether a failed mutation may have taken effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// It certainly did not: the failure came before the commit point.
    No,
    /// It may have: the failure hid the outcome of the commit point. Storage stays consistent
    /// either way; a later read tells which.
    Unknown,
}

/// A put or delete failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteError {
    /// The tier whose failure ended the operation.
    pub tier: Tier,
    /// Whether the mutation may have taken effect.
    pub applied: Applied,
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.applied {
            Applied::No => write!(f, "{} failed; nothing was changed", self.tier),
            Applied::Unknown => {
                write!(
                    f,
                    "{} failed; the write may or may not have taken effect",
                    self.tier
                )
            }
        }
    }
}

/// A get or head failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// A backend failed on every attempt.
    Io(Tier),
    /// The requested range selects no byte of the object (the caller's fault).
    Range(RangeNotSatisfiable),
    /// The key was overwritten and cleaned up under the read more than
    /// [`MAX_REDIRECT_HOPS`](crate::limits::MAX_REDIRECT_HOPS) times in a row.
    Unstable,
    /// The key's tombstone points at this revision's blob, and the long-term tier does not have
    /// it — twice, with nothing changed in between: it was removed outside cairn (cairn never
    /// deletes a blob a live tombstone references), and the object is lost. Overwriting or
    /// deleting the key clears the tombstone.
    Lost(Revision),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io(tier) => write!(f, "{tier} failed"),
            ReadError::Range(r) => {
                write!(f, "range not satisfiable for an object of {} bytes", r.size)
            }
            ReadError::Unstable => f.write_str("key kept changing under the read; try again"),
            ReadError::Lost(revision) => write!(
                f,
                "the object's blob (revision {revision}) is missing from the long-term tier: it \
                 was removed outside cairn, and the object is lost"
            ),
        }
    }
}

impl core::error::Error for WriteError {}
impl core::error::Error for ReadError {}
impl core::error::Error for crate::KeyError {}
impl core::error::Error for crate::ConfigError {}
impl core::error::Error for RangeNotSatisfiable {}

impl fmt::Display for RangeNotSatisfiable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "range not satisfiable for an object of {} bytes",
            self.size
        )
    }
}
