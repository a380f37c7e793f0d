//! Deliberate protocol bugs, compiled only with the `planted-bugs` feature, so that the simulator
//! can prove it catches them (`cairn-sim mutants`).
//!
//! A bug is switched on per machine through [`Config::bug`](crate::Config::bug) (and, for
//! revision ids, [`IdGen::planted`](crate::IdGen::planted)); there is no global state. Each
//! deviation in the machines is a few lines under `#[cfg(feature = "planted-bugs")]`, marked with
//! a `PLANTED BUG` comment, so that `grep -rn "PLANTED BUG" core/src` lists them all. A build
//! without the feature contains none of them.

use crate::{cas_verdict, CasVerdict, HvRow, HvWrite, Revision};

/// One deliberate deviation from the tiered protocol. The simulator's catalogue
/// (`sim/src/bugs.rs`) says what each one breaks and which checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlantedBug {
    /// `cas_verdict` applies every compare-and-write, whatever the row holds.
    CasIgnoresExpected,
    /// `cas_verdict` calls a retry of an applied compare-and-write a conflict.
    CasNotIdempotent,
    /// A mutation deletes the blob it replaces right after recording its change, before the
    /// compare-and-write that unreferences it.
    OldBlobDeletedBeforeCommit,
    /// A small put that meets a tombstone overwrites it with no change-log entry and no cleanup.
    SmallPutOverTombstoneUnlogged,
    /// Recovery deletes a change's `old` blob without re-reading the high-volume tier.
    RecoveryDeletesWithoutReread,
    /// A compare-and-write whose outcome is unknown is cleaned up as if it lost the race.
    UnknownOutcomeTreatedAsLost,
    /// A get whose blob vanished under it reports not-found instead of re-reading.
    GetGivesUpOnVanishedBlob,
    /// A get whose blob vanished under it reports the object lost instead of re-reading.
    GetCallsVanishedBlobLost,
    /// A get whose blob vanished under it reports a long-term I/O error instead of re-reading.
    GetReportsVanishedBlobAsIoError,
    /// A get whose blob vanished a second time gives up as unstable instead of following the key
    /// again (it stops after one redirect hop, not [`MAX_REDIRECT_HOPS`](crate::limits::MAX_REDIRECT_HOPS)).
    GetRefusesSecondHop,
    /// A cleanup removes its change-log entry before deleting the blobs it covers.
    LogEntryRemovedBeforeCleanup,
    /// Revisions come from a counter that every client (and every restart) begins at 1.
    RevisionsReused,
    /// A compare-and-write that failed (and may have applied) is retried blindly.
    CasRetriedBlindly,
    /// A large put's tombstone and blob both expire 1 ms after the instant the caller gave.
    ExpiryOneMsLate,
    /// A failed blob write is ignored and the tombstone committed anyway.
    CommitAfterFailedBlobWrite,
    /// The tombstone is committed with the size it was opened with (0), not the size of the blob
    /// written.
    TombstoneSizeNotRecorded,
    /// The blob is written before the change that covers it is recorded.
    BlobWrittenBeforeLogRecord,
    /// A mutation that lost its compare-and-write cleans up as if it had won.
    LoserCleansUpAsWinner,
    /// After an unanswered compare-and-write, the re-read is taken as proof that it committed.
    ResolveAssumesCommitted,
    /// Recovery stops after the first change-log entry it cleans.
    RecoveryStopsAfterOneEntry,
    /// A failed `put_non_tombstone` / `delete_non_tombstone` is reported as not applied.
    FailedGuardedWriteReportedUnapplied,
}

impl PlantedBug {
    /// Every planted bug, in declaration order.
    pub const ALL: [PlantedBug; 21] = [
        PlantedBug::CasIgnoresExpected,
        PlantedBug::CasNotIdempotent,
        PlantedBug::OldBlobDeletedBeforeCommit,
        PlantedBug::SmallPutOverTombstoneUnlogged,
        PlantedBug::RecoveryDeletesWithoutReread,
        PlantedBug::UnknownOutcomeTreatedAsLost,
        PlantedBug::GetGivesUpOnVanishedBlob,
        PlantedBug::GetCallsVanishedBlobLost,
        PlantedBug::GetReportsVanishedBlobAsIoError,
        PlantedBug::GetRefusesSecondHop,
        PlantedBug::LogEntryRemovedBeforeCleanup,
        PlantedBug::RevisionsReused,
        PlantedBug::CasRetriedBlindly,
        PlantedBug::ExpiryOneMsLate,
        PlantedBug::CommitAfterFailedBlobWrite,
        PlantedBug::TombstoneSizeNotRecorded,
        PlantedBug::BlobWrittenBeforeLogRecord,
        PlantedBug::LoserCleansUpAsWinner,
        PlantedBug::ResolveAssumesCommitted,
        PlantedBug::RecoveryStopsAfterOneEntry,
        PlantedBug::FailedGuardedWriteReportedUnapplied,
    ];
}

/// Whether `config` plants `bug`.
pub(crate) fn planted(config: &crate::Config, bug: PlantedBug) -> bool {
    config.bug == Some(bug)
}

/// [`cas_verdict`] as a backend with a planted bug decides it: the simulator's world calls this
/// so that a bug in the one shared compare-and-write decision reaches its tier.
///
/// ```
/// use cairn_core::*;
/// let t = |r| Tombstone { revision: Revision(r), size: 1, expires: None };
/// let row = HvRow::Tombstone(t(3));
/// let swap = HvWrite::Tombstone(t(2));
/// assert_eq!(cas_verdict_planted(row, Some(Revision(1)), &swap, None), CasVerdict::Conflict);
/// let bug = Some(PlantedBug::CasIgnoresExpected);
/// assert_eq!(cas_verdict_planted(row, Some(Revision(1)), &swap, bug), CasVerdict::Apply);
/// ```
pub fn cas_verdict_planted(
    live: HvRow,
    expected: Option<Revision>,
    write: &HvWrite,
    bug: Option<PlantedBug>,
) -> CasVerdict {
    let verdict = cas_verdict(live, expected, write);
    match (bug, verdict) {
        // PLANTED BUG: the precondition is never checked.
        (Some(PlantedBug::CasIgnoresExpected), _) => CasVerdict::Apply,
        // PLANTED BUG: a retry of an applied write looks like a lost race.
        (Some(PlantedBug::CasNotIdempotent), CasVerdict::AlreadyApplied) => CasVerdict::Conflict,
        _ => verdict,
    }
}
