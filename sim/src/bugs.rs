//! The catalogue of planted bugs: deliberate deviations from the protocol that the simulator must
//! catch (`cairn-sim mutants`). Most live in the core (`core/src/planted.rs`, compiled only with
//! its `planted-bugs` feature, which this crate enables); three live in the simulated tiers, as a
//! backend that breaks its contract.
//!
//! Each entry says what the deviation is, which property it breaks, and which checker catches it
//! first in practice (another may catch it on other seeds).

use crate::world::WorldBug;
use cairn_core::PlantedBug;
use std::fmt;

/// A planted bug, in the core's machines or in the simulated tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bug {
    /// A deviation in a core machine (or the core's shared compare-and-write decision).
    Core(PlantedBug),
    /// A simulated backend that breaks its contract.
    World(WorldBug),
}

/// One catalogue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The bug.
    pub bug: Bug,
    /// Its command-line name.
    pub name: &'static str,
    /// Where the deviation lives.
    pub site: &'static str,
    /// What goes wrong.
    pub breaks: &'static str,
    /// The checker that catches it first in practice.
    pub caught_by: &'static str,
}

use PlantedBug as P;

/// Every planted bug, with what it breaks and what catches it.
pub const CATALOGUE: [Entry; 24] = [
    Entry {
        bug: Bug::Core(P::CasIgnoresExpected),
        name: "cas-ignores-expected",
        site: "core/src/planted.rs (cas_verdict)",
        breaks: "compare-and-write without its precondition: a racing writer's tombstone is \
                 overwritten and its blob orphaned",
        caught_by: "no orphan blob",
    },
    Entry {
        bug: Bug::Core(P::CasNotIdempotent),
        name: "cas-not-idempotent",
        site: "core/src/planted.rs (cas_verdict)",
        breaks: "a re-delivered compare-and-write reports a conflict, so the writer deletes the \
                 blob its own tombstone points at",
        caught_by: "no blob deleted while referenced",
    },
    Entry {
        bug: Bug::Core(P::OldBlobDeletedBeforeCommit),
        name: "old-blob-deleted-before-commit",
        site: "core/src/tiered/commit.rs",
        breaks: "the replaced blob is deleted while the row still points at it",
        caught_by: "no blob deleted while referenced",
    },
    Entry {
        bug: Bug::Core(P::SmallPutOverTombstoneUnlogged),
        name: "small-put-over-tombstone-unlogged",
        site: "core/src/tiered/mutation.rs, commit.rs",
        breaks: "a small put overwrites a tombstone with no change-log entry and no cleanup: the \
                 blob it replaced is orphaned",
        caught_by: "no orphan blob",
    },
    Entry {
        bug: Bug::Core(P::RecoveryDeletesWithoutReread),
        name: "recovery-deletes-without-reread",
        site: "core/src/tiered/recovery.rs",
        breaks: "recovery deletes a change's old blob although the change never committed and \
                 the row still points at it",
        caught_by: "no blob deleted while referenced",
    },
    Entry {
        bug: Bug::Core(P::UnknownOutcomeTreatedAsLost),
        name: "unknown-outcome-treated-as-lost",
        site: "core/src/tiered/mutation.rs",
        breaks: "after an unanswered compare-and-write the cleanup deletes the new blob, which \
                 the row may reference, and leaves the old one",
        caught_by: "no orphan blob / no blob deleted while referenced",
    },
    Entry {
        bug: Bug::Core(P::GetGivesUpOnVanishedBlob),
        name: "get-gives-up-on-vanished-blob",
        site: "core/src/tiered/get.rs",
        breaks: "a get racing an overwrite and its cleanup reports not-found for a key that \
                 always had a value",
        caught_by: "linearizability",
    },
    Entry {
        bug: Bug::Core(P::GetCallsVanishedBlobLost),
        name: "get-calls-vanished-blob-lost",
        site: "core/src/tiered/get.rs",
        breaks: "a get racing an overwrite and its cleanup reports the object lost, where it \
                 should follow the key to the new value",
        caught_by: "no read reports a loss that did not happen",
    },
    Entry {
        bug: Bug::Core(P::GetReportsVanishedBlobAsIoError),
        name: "get-reports-vanished-blob-as-io-error",
        site: "core/src/tiered/get.rs",
        breaks: "a get racing an overwrite and its cleanup fails with a long-term I/O error that \
                 no backend reported, where it should follow the key to the new value",
        caught_by: "no read reports an I/O error that did not happen",
    },
    Entry {
        bug: Bug::Core(P::GetRefusesSecondHop),
        name: "get-refuses-second-hop",
        site: "core/src/tiered/get.rs",
        breaks: "a get whose blob vanishes twice gives up as unstable after one redirect hop, \
                 not after MAX_REDIRECT_HOPS",
        caught_by: "no read gives up before its redirect limit",
    },
    Entry {
        bug: Bug::Core(P::LogEntryRemovedBeforeCleanup),
        name: "log-entry-removed-before-cleanup",
        site: "core/src/tiered/cleanup.rs",
        breaks: "between the log removal and the blob delete (forever, after a crash) the blob \
                 is covered by nothing",
        caught_by: "no orphan blob",
    },
    Entry {
        bug: Bug::Core(P::RevisionsReused),
        name: "revisions-reused",
        site: "core/src/id.rs",
        breaks: "two writers (or a writer and its restarted self) share a blob name: one \
                 overwrites or deletes the other's blob",
        caught_by: "a tombstone describes its blob / linearizability",
    },
    Entry {
        bug: Bug::Core(P::CasRetriedBlindly),
        name: "cas-retried-blindly",
        site: "core/src/tiered/commit.rs",
        breaks: "a compare-and-write that failed after applying is retried and lands again over \
                 a later write (or brings back a cleaned-up tombstone)",
        caught_by: "linearizability / no dangling tombstone",
    },
    Entry {
        bug: Bug::Core(P::ExpiryOneMsLate),
        name: "expiry-one-ms-late",
        site: "core/src/tiered/mutation.rs",
        breaks: "a large put's tombstone and blob expire 1 ms after the instant asked for: they \
                 agree with each other, but reads report (and the tiers apply) an expiry nobody \
                 set",
        caught_by: "reads return the metadata written",
    },
    Entry {
        bug: Bug::Core(P::CommitAfterFailedBlobWrite),
        name: "commit-after-failed-blob-write",
        site: "core/src/tiered/commit.rs",
        breaks: "a tombstone is committed for a blob that is missing or partial",
        caught_by: "no dangling tombstone",
    },
    Entry {
        bug: Bug::Core(P::TombstoneSizeNotRecorded),
        name: "tombstone-size-not-recorded",
        site: "core/src/tiered/commit.rs",
        breaks: "a large put commits its tombstone with size 0, not the size of the blob it \
                 wrote, so heads report 0 bytes and ranges resolve against nothing",
        caught_by: "a tombstone describes its blob",
    },
    Entry {
        bug: Bug::Core(P::BlobWrittenBeforeLogRecord),
        name: "blob-written-before-log-record",
        site: "core/src/tiered/commit.rs",
        breaks: "the blob exists before the change that covers it is durable",
        caught_by: "no orphan blob",
    },
    Entry {
        bug: Bug::Core(P::LoserCleansUpAsWinner),
        name: "loser-cleans-up-as-winner",
        site: "core/src/tiered/commit.rs",
        breaks: "a writer that lost the race keeps its own blob and deletes the one it expected",
        caught_by: "no orphan blob",
    },
    Entry {
        bug: Bug::Core(P::ResolveAssumesCommitted),
        name: "resolve-assumes-committed",
        site: "core/src/tiered/commit.rs",
        breaks: "after an unanswered compare-and-write, the re-read is not looked at: the put \
                 reports committed and deletes the blob the row still points at",
        caught_by: "no blob deleted while referenced / linearizability",
    },
    Entry {
        bug: Bug::Core(P::RecoveryStopsAfterOneEntry),
        name: "recovery-stops-after-one-entry",
        site: "core/src/tiered/recovery.rs",
        breaks: "recovery leaves all but the first change-log entry behind",
        caught_by: "quiescence (open log entry)",
    },
    Entry {
        bug: Bug::Core(P::FailedGuardedWriteReportedUnapplied),
        name: "failed-guarded-write-reported-unapplied",
        site: "core/src/tiered/mutation.rs",
        breaks: "a put_non_tombstone that failed after applying is reported as certainly not \
                 applied, yet readers see its value",
        caught_by: "linearizability",
    },
    Entry {
        bug: Bug::World(WorldBug::ConditionalOpsIgnoreExpiry),
        name: "conditional-ops-ignore-expiry",
        site: "sim/src/world.rs (a backend bug)",
        breaks: "an expired tombstone still blocks or satisfies conditional writes, so a put over \
                 an expired large object loses to a value nobody can read",
        caught_by: "linearizability",
    },
    Entry {
        bug: Bug::World(WorldBug::LogScanReturnsHeldEntries),
        name: "log-scan-returns-held-entries",
        site: "sim/src/world.rs (a backend bug)",
        breaks: "recovery reclaims the entry of a put still in flight and deletes its new blob \
                 before the put commits a tombstone to it",
        caught_by: "no dangling tombstone",
    },
    Entry {
        bug: Bug::World(WorldBug::RefusedAfterApplying),
        name: "refused-after-applying",
        site: "sim/src/sim.rs (a backend bug)",
        breaks: "a compare-and-write said to be refused had committed, so its put's cleanup \
                 deletes the blob the new tombstone points at",
        caught_by: "no blob deleted while referenced",
    },
];

impl Bug {
    /// The catalogue entry.
    pub fn entry(self) -> &'static Entry {
        CATALOGUE
            .iter()
            .find(|e| e.bug == self)
            .expect("every bug has a catalogue entry")
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        self.entry().name
    }

    /// Looks a bug up by its command-line name.
    pub fn from_name(name: &str) -> Option<Bug> {
        CATALOGUE.iter().find(|e| e.name == name).map(|e| e.bug)
    }

    /// The core's part of the bug, if it lives in the core.
    pub fn core(self) -> Option<PlantedBug> {
        match self {
            Bug::Core(bug) => Some(bug),
            Bug::World(_) => None,
        }
    }

    /// The simulated tiers' part of the bug, if it lives there.
    pub fn world(self) -> Option<WorldBug> {
        match self {
            Bug::Core(_) => None,
            Bug::World(bug) => Some(bug),
        }
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_covers_every_core_bug_once_and_names_are_unique() {
        for bug in PlantedBug::ALL {
            let n = CATALOGUE.iter().filter(|e| e.bug == Bug::Core(bug)).count();
            assert_eq!(n, 1, "{bug:?}");
        }
        for entry in &CATALOGUE {
            assert_eq!(Bug::from_name(entry.name), Some(entry.bug));
        }
        let core = CATALOGUE.iter().filter(|e| e.bug.core().is_some()).count();
        assert!(
            core >= 12,
            "the issue asks for at least 12 bugs in the core"
        );
    }
}
