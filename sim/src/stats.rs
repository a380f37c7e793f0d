//! What runs did: operations, events, and how often each fault kind and each rare branch of the
//! protocol was hit. A counter that stays at zero over a long run means the simulator is not
//! testing what it claims to, so the CI run fails on it ([`Stats::unexercised`]).

use std::fmt;

/// One coverage counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Counter {
    /// A request or answer held up by a latency spike.
    LatencySpike,
    /// An answer delivered after the answer to a later-issued request.
    Reordered,
    /// A rival writer committed right before a compare-and-write landed.
    RivalBeforeCas,
    /// A rival writer overwrote the key and cleaned up right before a get's blob read landed.
    RivalBeforeBlobRead,
    /// A compare-and-write applied, then answered with an error.
    CasResponseLost,
    /// A compare-and-write applied, then answered with an error after a long delay (a timeout).
    CasTimeout,
    /// A compare-and-write delivered twice by the transport.
    CasDuplicated,
    /// A request failed without taking effect.
    FailBefore,
    /// A high-volume write was refused: it failed, certainly without taking effect, and said so.
    Refused,
    /// A request took effect, then reported failure.
    FailAfter,
    /// A blob write left a partial blob and failed.
    PartialBlob,
    /// A blob delete failed.
    BlobDeleteFailed,
    /// A client crashed.
    Crash,
    /// A crashed client's unapplied request landed anyway.
    CrashInFlightApplied,
    /// A request met a row or blob that had expired.
    Expired,
    /// A seed ran with the compare-and-write mode that re-applies.
    ReapplySeed,
    /// A seed ran with the compare-and-write mode that skips.
    SkipSeed,
    /// A put or delete lost its compare-and-write race (reported superseded).
    LostRace,
    /// A compare-and-write failed and the re-read found it had committed.
    CasResolvedByRead,
    /// A cleanup of unknown outcome re-read the row and finished.
    UnknownOutcomeResolved,
    /// A get found its blob gone and re-read the high-volume tier.
    VanishedBlobRetried,
    /// Recovery cleaned up a change-log entry.
    RecoveryCleanup,
    /// An acknowledged write was checked for, and found, after a crash, a recovery or at the end.
    AcknowledgedWriteSurvived,
    /// A cleanup gave up and left its entry to recovery.
    CleanupDeferred,
    /// A get gave up because the key kept changing.
    GetUnstable,
    /// A linearizability search ran out of budget.
    LinearizabilityInconclusive,
}

impl Counter {
    /// Every counter, in display order.
    pub const ALL: [Counter; 26] = [
        Counter::LatencySpike,
        Counter::Reordered,
        Counter::RivalBeforeCas,
        Counter::RivalBeforeBlobRead,
        Counter::CasResponseLost,
        Counter::CasTimeout,
        Counter::CasDuplicated,
        Counter::FailBefore,
        Counter::Refused,
        Counter::FailAfter,
        Counter::PartialBlob,
        Counter::BlobDeleteFailed,
        Counter::Crash,
        Counter::CrashInFlightApplied,
        Counter::Expired,
        Counter::ReapplySeed,
        Counter::SkipSeed,
        Counter::LostRace,
        Counter::CasResolvedByRead,
        Counter::UnknownOutcomeResolved,
        Counter::VanishedBlobRetried,
        Counter::RecoveryCleanup,
        Counter::AcknowledgedWriteSurvived,
        Counter::CleanupDeferred,
        Counter::GetUnstable,
        Counter::LinearizabilityInconclusive,
    ];

    /// Whether the counter is a fault kind (as opposed to a branch of the protocol).
    pub fn is_fault(self) -> bool {
        self <= Counter::SkipSeed
    }

    /// Whether a healthy long run must hit it at least once.
    pub fn must_be_hit(self) -> bool {
        self != Counter::LinearizabilityInconclusive
    }

    /// A short snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Counter::LatencySpike => "latency_spike",
            Counter::Reordered => "reordered",
            Counter::RivalBeforeCas => "rival_before_cas",
            Counter::RivalBeforeBlobRead => "rival_before_blob_read",
            Counter::CasResponseLost => "cas_response_lost",
            Counter::CasTimeout => "cas_timeout",
            Counter::CasDuplicated => "cas_duplicated",
            Counter::FailBefore => "fail_before",
            Counter::Refused => "refused",
            Counter::FailAfter => "fail_after",
            Counter::PartialBlob => "partial_blob",
            Counter::BlobDeleteFailed => "blob_delete_failed",
            Counter::Crash => "crash",
            Counter::CrashInFlightApplied => "crash_in_flight_applied",
            Counter::Expired => "expired",
            Counter::ReapplySeed => "cas_mode_reapply_seeds",
            Counter::SkipSeed => "cas_mode_skip_seeds",
            Counter::LostRace => "lost_race",
            Counter::CasResolvedByRead => "cas_resolved_by_read",
            Counter::UnknownOutcomeResolved => "unknown_outcome_resolved",
            Counter::VanishedBlobRetried => "vanished_blob_retried",
            Counter::RecoveryCleanup => "recovery_cleanup",
            Counter::AcknowledgedWriteSurvived => "acknowledged_write_survived",
            Counter::CleanupDeferred => "cleanup_deferred",
            Counter::GetUnstable => "get_unstable",
            Counter::LinearizabilityInconclusive => "linearizability_inconclusive",
        }
    }
}

/// Totals over one or more seeds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Seeds run.
    pub seeds: u64,
    /// Seeds that failed.
    pub failed: u64,
    /// Client operations completed (or cut off by a crash).
    pub ops: u64,
    /// I/O requests issued.
    pub requests: u64,
    /// Events processed.
    pub events: u64,
    counters: [u64; Counter::ALL.len()],
}

impl Stats {
    /// Adds one to `counter`.
    pub fn hit(&mut self, counter: Counter) {
        self.add(counter, 1);
    }

    /// Adds `n` to `counter`.
    pub fn add(&mut self, counter: Counter, n: u64) {
        self.counters[counter as usize] += n;
    }

    /// The value of `counter`.
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter as usize]
    }

    /// Adds another run's totals to these.
    pub fn merge(&mut self, other: &Stats) {
        self.seeds += other.seeds;
        self.failed += other.failed;
        self.ops += other.ops;
        self.requests += other.requests;
        self.events += other.events;
        for (a, b) in self.counters.iter_mut().zip(other.counters) {
            *a += b;
        }
    }

    /// The counters that a healthy run must hit but that stayed at zero.
    pub fn unexercised(&self) -> Vec<Counter> {
        Counter::ALL
            .into_iter()
            .filter(|c| c.must_be_hit() && self.get(*c) == 0)
            .collect()
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seeds {}  failed {}  operations {}  requests {}  events {}",
            self.seeds, self.failed, self.ops, self.requests, self.events
        )?;
        for (title, faults) in [("faults injected", true), ("rare branches hit", false)] {
            writeln!(f, "{title}:")?;
            for counter in Counter::ALL.into_iter().filter(|c| c.is_fault() == faults) {
                let mark = if counter.must_be_hit() && self.get(counter) == 0 {
                    "  <- never hit"
                } else {
                    ""
                };
                writeln!(f, "  {:<30}{:>10}{mark}", counter.name(), self.get(counter))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_listed_in_declaration_order() {
        for (i, counter) in Counter::ALL.into_iter().enumerate() {
            assert_eq!(counter as usize, i);
        }
    }

    #[test]
    fn unexercised_lists_only_required_counters_at_zero() {
        let mut stats = Stats::default();
        for counter in Counter::ALL {
            stats.hit(counter);
        }
        assert!(stats.unexercised().is_empty());
        let mut other = Stats::default();
        other.hit(Counter::LinearizabilityInconclusive);
        assert!(other.unexercised().contains(&Counter::Crash));
        assert!(!other
            .unexercised()
            .contains(&Counter::LinearizabilityInconclusive));
        stats.merge(&other);
        assert_eq!(stats.get(Counter::LinearizabilityInconclusive), 2);
    }
}
