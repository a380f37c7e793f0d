//! Recovery: garbage-collect after mutations whose cleanup never ran (a crash, a shutdown, a
//! cleanup that gave up). It never replays or finishes a compare-and-write.

use crate::machine::unexpected;
#[cfg(feature = "planted-bugs")]
use crate::planted::{planted, PlantedBug};
use crate::tiered::cleanup::{Cleanup, CleanupOutcome, PendingCleanup, Phase};
use crate::{ChangeId, Completion, Config, Instant, Machine, Poll, Request};

/// What a recovery pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Change-log entries examined.
    pub entries: u64,
    /// Entries fully cleaned up and removed.
    pub cleaned: u64,
    /// Entries left in the log because a tier kept failing.
    pub deferred: u64,
    /// Blob deletes issued (deleting an absent blob counts).
    pub blobs_deleted: u64,
    /// False if the scan itself failed, so later entries were not examined.
    pub complete: bool,
}

// The cleanup lives inline: boxing it would need an allocator, which the core does not have.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum State {
    AwaitScan { attempt: u8 },
    Cleaning(Cleanup),
    Finished,
    Taken,
}

/// Scans the change log in id order and runs the unknown-outcome cleanup for every reclaimable
/// entry: re-read the high-volume tier, delete whichever blob it no longer references, remove the
/// entry.
///
/// ```
/// use cairn_core::*;
/// let mut rec = Recovery::new(Config::DEFAULT);
/// assert_eq!(rec.poll(Instant::ZERO), Poll::Io(Request::LogScan { after: None }));
/// rec.handle(Completion::Entry(None));
/// let Poll::Done(report) = rec.poll(Instant::ZERO) else { panic!() };
/// assert!(report.complete && report.entries == 0);
/// ```
#[derive(Clone, Debug)]
pub struct Recovery {
    config: Config,
    after: Option<ChangeId>,
    report: RecoveryReport,
    state: State,
}

impl Recovery {
    /// A recovery pass over the whole log.
    pub fn new(config: Config) -> Recovery {
        Recovery {
            config,
            after: None,
            report: RecoveryReport::default(),
            state: State::AwaitScan { attempt: 0 },
        }
    }
}

impl Machine for Recovery {
    type Output = RecoveryReport;

    fn poll(&mut self, now: Instant) -> Poll<'_, RecoveryReport> {
        if let State::Cleaning(cleanup) = &mut self.state {
            if cleanup.is_finished() {
                let Poll::Done(done) = cleanup.poll(now) else {
                    unreachable!("a finished cleanup is done")
                };
                self.report.blobs_deleted += u64::from(done.blobs_deleted);
                match done.outcome {
                    CleanupOutcome::Finished => self.report.cleaned += 1,
                    CleanupOutcome::Deferred(_) => self.report.deferred += 1,
                }
                self.after = Some(done.id);
                self.state = State::AwaitScan { attempt: 0 };
                // PLANTED BUG: recovery ends after its first entry.
                #[cfg(feature = "planted-bugs")]
                if planted(&self.config, PlantedBug::RecoveryStopsAfterOneEntry) {
                    self.state = State::Finished;
                }
            }
        }
        if let State::Finished = self.state {
            self.state = State::Taken;
            return Poll::Done(self.report);
        }
        match &mut self.state {
            State::AwaitScan { .. } => Poll::Io(Request::LogScan { after: self.after }),
            State::Cleaning(cleanup) => match cleanup.poll(now) {
                Poll::Io(request) => Poll::Io(request),
                Poll::Wait(until) => Poll::Wait(until),
                Poll::Done(_) => unreachable!("finished cleanups were handled above"),
            },
            State::Finished | State::Taken => {
                panic!("driver bug: recovery polled after it was done")
            }
        }
    }

    fn handle(&mut self, completion: Completion<'_>) {
        let completion = completion.or_failed();
        self.state = match (&mut self.state, completion) {
            (State::Cleaning(cleanup), completion) => {
                cleanup.handle(completion);
                return;
            }
            (State::AwaitScan { .. }, Completion::Entry(Some(entry))) => {
                assert!(
                    self.after.is_none_or(|after| entry.id > after),
                    "log scan went backwards: {} after {:?}",
                    entry.id,
                    self.after
                );
                self.report.entries += 1;
                let change = entry.change;
                #[allow(unused_mut)] // only the planted bugs change it
                let mut phase = Phase::Unknown;
                // PLANTED BUG: the old blob is deleted as if the change had committed, unread.
                #[cfg(feature = "planted-bugs")]
                if planted(&self.config, PlantedBug::RecoveryDeletesWithoutReread) {
                    phase = Phase::Committed;
                }
                let pending = PendingCleanup {
                    id: entry.id,
                    new: change.new,
                    old: change.old,
                    phase,
                };
                // Once one entry's cleanup has given up in this pass, a tier keeps failing: the
                // entries after it get one attempt each rather than a whole backoff each (which
                // would make a pass over n entries last n times as long), and the next pass
                // tries them all again.
                let mut config = self.config;
                if self.report.deferred > 0 {
                    config.cleanup_attempts = 1;
                }
                State::Cleaning(Cleanup::new(change.key.to_key_buf(), pending, config))
            }
            (State::AwaitScan { .. }, Completion::Entry(None)) => {
                self.report.complete = true;
                State::Finished
            }
            (State::AwaitScan { attempt }, Completion::Failed) => {
                if *attempt + 1 < self.config.io_attempts {
                    State::AwaitScan {
                        attempt: *attempt + 1,
                    }
                } else {
                    State::Finished
                }
            }
            (state, completion) => unexpected("recovery", state.name(), &completion),
        };
    }
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitScan { .. } => "AwaitScan",
            State::Cleaning(_) => "Cleaning",
            State::Finished => "Finished",
            State::Taken => "Taken",
        }
    }
}
