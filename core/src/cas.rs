//! The compare-and-write decision every high-volume backend must make, as one pure function so
//! that every backend (in-memory, SQLite, the simulator's) makes it identically.

use crate::{HvRow, HvWrite, Revision};

/// What a compare-and-write does to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasVerdict {
    /// Apply the write, answer true.
    Apply,
    /// The row already holds a live tombstone pointing at the write's own target (the write was
    /// applied before). Answer true; re-applying the write and skipping it are both legal, since
    /// both leave the row as it is.
    AlreadyApplied,
    /// A live tombstone points at a blob that is neither the expected one nor the write's own:
    /// another writer committed in between. Write nothing, answer false.
    Conflict,
}

impl CasVerdict {
    /// The answer the backend returns.
    pub fn succeeded(self) -> bool {
        self != CasVerdict::Conflict
    }
}

/// Decides a compare-and-write on a row as it is *live* at the request's `now` (pass
/// `row.at(now)`: an expired tombstone is absent, so it neither blocks nor satisfies anything).
///
/// A compare-and-write exists to protect blob references: a row may be rewritten unless it holds
/// a live tombstone to a blob the writer did not expect, whose owner is entitled to it.
///
/// | live row →                  | no tombstone | tombstone → expected | tombstone → write's target | other tombstone |
/// |-----------------------------|--------------|----------------------|----------------------------|-----------------|
/// | expected none               | apply        | —                    | already applied            | conflict        |
/// | expected tombstone(old)     | apply        | apply                | already applied            | conflict        |
///
/// Where the expected tombstone is gone (deleted, replaced by an inline object, or expired) the
/// write applies: the writer is the last one, and answering "conflict" or "already applied"
/// without writing would report a write that never happened. This departs from the reference
/// system's table, which answered those cases inconsistently and so lost writes under expiry.
///
/// Because "no tombstone" admits a write, a compare-and-write must never be retried blindly
/// after an ambiguous failure (by the core or inside a backend): a retry could bring back a
/// value, or a tombstone whose blob was cleaned up in between. The core resolves such failures by
/// reading instead.
///
/// ```
/// use cairn_core::{cas_verdict, CasVerdict, HvRow, HvWrite, Revision, Tombstone};
/// let t = |r| Tombstone { revision: Revision(r), size: 1, expires: None };
/// let swap = HvWrite::Tombstone(t(2));
/// assert_eq!(cas_verdict(HvRow::Tombstone(t(1)), Some(Revision(1)), &swap), CasVerdict::Apply);
/// assert_eq!(cas_verdict(HvRow::Tombstone(t(2)), Some(Revision(1)), &swap), CasVerdict::AlreadyApplied);
/// assert_eq!(cas_verdict(HvRow::Tombstone(t(3)), Some(Revision(1)), &swap), CasVerdict::Conflict);
/// assert_eq!(cas_verdict(HvRow::Absent, Some(Revision(1)), &HvWrite::Delete), CasVerdict::Apply);
/// ```
pub fn cas_verdict(live: HvRow, expected: Option<Revision>, write: &HvWrite) -> CasVerdict {
    match live.target() {
        None => CasVerdict::Apply,
        Some(current) if Some(current) == expected => CasVerdict::Apply,
        Some(current) if Some(current) == write.target() => CasVerdict::AlreadyApplied,
        Some(_) => CasVerdict::Conflict,
    }
}
