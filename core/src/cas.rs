//! The compare-and-write decision every high-volume backend must make, as one pure function so
//! that every backend (in-memory, SQLite, the simulator's) makes it identically.

use crate::{HvRow, HvWrite, Revision};

/// What a compare-and-write does to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CasVerdict {
    /// The row matches `expected`: apply the write, answer true.
    Apply,
    /// The row is already in the state the write produces (a retry after a lost response, or an
    /// inline/delete write on a row some other writer already freed of its tombstone). Answer
    /// true; re-applying the write and skipping it are both legal.
    AlreadyApplied,
    /// A real conflict: write nothing, answer false.
    Conflict,
}

impl CasVerdict {
    /// The answer the backend returns.
    pub fn succeeded(self) -> bool {
        self != CasVerdict::Conflict
    }
}

/// Decides a compare-and-write on a row as it is *live* at the request's `now` (pass
/// `row.at(now)`: an expired tombstone is absent and neither blocks nor satisfies anything).
///
/// | expected → write        | no live tombstone | tombstone→expected | tombstone→write's target | other tombstone |
/// |-------------------------|-------------------|--------------------|--------------------------|-----------------|
/// | none → tombstone(new)   | apply             | —                  | already applied          | conflict        |
/// | old → tombstone(new)    | conflict          | apply              | already applied          | conflict        |
/// | old → inline / delete   | already applied   | apply              | —                        | conflict        |
/// | none → inline / delete  | apply             | —                  | —                        | conflict        |
///
/// ```
/// use cairn_core::{cas_verdict, CasVerdict, HvRow, HvWrite, Revision, Tombstone};
/// let t = |r| Tombstone { revision: Revision(r), size: 1, expires: None };
/// let row = HvRow::Tombstone(t(2));
/// // A retry of an applied swap 1→2 succeeds without looking like a lost race:
/// assert_eq!(cas_verdict(row, Some(Revision(1)), &HvWrite::Tombstone(t(2))), CasVerdict::AlreadyApplied);
/// assert_eq!(cas_verdict(row, Some(Revision(1)), &HvWrite::Delete), CasVerdict::Conflict);
/// ```
pub fn cas_verdict(live: HvRow, expected: Option<Revision>, write: &HvWrite) -> CasVerdict {
    let current = live.target();
    let target = write.target();
    match (expected, current) {
        (None, None) => CasVerdict::Apply,
        (Some(e), Some(c)) if e == c => CasVerdict::Apply,
        (_, Some(c)) if target == Some(c) => CasVerdict::AlreadyApplied,
        (Some(_), None) if target.is_none() => CasVerdict::AlreadyApplied,
        _ => CasVerdict::Conflict,
    }
}
