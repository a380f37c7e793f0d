//! What the core knows about a row: enough to route, decide and expire, nothing more. Content
//! type, user metadata and the payload itself belong to the adapter.

use crate::{is_expired, Instant, Revision};
use core::fmt;

/// The part of an object's metadata the protocol needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Payload length in bytes.
    pub size: u64,
    /// When the write that created this version started.
    pub created: Instant,
    /// When the object expires, if ever.
    pub expires: Option<Instant>,
}

/// A redirect in the high-volume tier to the blob `{key}/{revision}` in the long-term tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The blob this tombstone points at.
    pub revision: Revision,
    /// The blob's length, so that ranges resolve and listings show sizes without a blob read.
    pub size: u64,
    /// When the tombstone (and the blob, which carries the same expiry) expires.
    pub expires: Option<Instant>,
}

/// The state of one key in the high-volume tier, as a backend reports it at a given `now`.
/// Expired rows are reported as [`HvRow::Absent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvRow {
    /// No live row.
    Absent,
    /// An object stored inline (its payload stays with the adapter).
    Inline(ObjectMeta),
    /// A redirect to a blob.
    Tombstone(Tombstone),
}

impl HvRow {
    /// The revision this row points at, if it is a tombstone.
    pub fn target(&self) -> Option<Revision> {
        match self {
            HvRow::Tombstone(t) => Some(t.revision),
            HvRow::Absent | HvRow::Inline(_) => None,
        }
    }

    /// This row as seen at `now`: an expired row is absent.
    #[inline]
    pub fn at(self, now: Instant) -> HvRow {
        let expires = match &self {
            HvRow::Absent => None,
            HvRow::Inline(m) => m.expires,
            HvRow::Tombstone(t) => t.expires,
        };
        if is_expired(expires, now) {
            HvRow::Absent
        } else {
            self
        }
    }
}

impl fmt::Display for HvRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HvRow::Absent => f.write_str("absent"),
            HvRow::Inline(m) => write!(f, "inline size={}{}", m.size, Expiry(m.expires)),
            HvRow::Tombstone(t) => {
                write!(
                    f,
                    "tombstone rev={} size={}{}",
                    t.revision,
                    t.size,
                    Expiry(t.expires)
                )
            }
        }
    }
}

/// Formats an optional expiry as ` expires=t=…` or nothing.
pub(crate) struct Expiry(pub Option<Instant>);

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(at) => write!(f, " expires={at}"),
            None => Ok(()),
        }
    }
}
