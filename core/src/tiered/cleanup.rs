//! The background half of a mutation: delete whichever blob the mutation left unreferenced, then
//! remove its change-log entry. Emitted as its own machine so a driver can run it inline, spawn
//! it, or schedule it in a simulation.

use crate::machine::unexpected;
#[cfg(feature = "planted-bugs")]
use crate::planted::{planted, PlantedBug};
use crate::{
    BlobId, ChangeId, Completion, Config, Instant, Key, KeyBuf, Machine, Poll, Request, Revision,
    Tier,
};
use core::borrow::Borrow;

/// How far a mutation got, which decides what its cleanup deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// The change was (perhaps) recorded, but no compare-and-write was attempted: `new`, if any,
    /// was never referenced.
    Recorded,
    /// The compare-and-write lost: `new` was never referenced, and `old` belongs to the winner.
    Lost,
    /// The compare-and-write won: `old` is no longer referenced.
    Committed,
    /// The outcome is unknown (a failure hid it, or the entry came from the log during
    /// recovery): re-read the high-volume tier and delete whatever it does not reference.
    Unknown,
}

/// The blobs a cleanup deletes, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Delete this first.
    pub first: Option<Revision>,
    /// Then this.
    pub second: Option<Revision>,
}

impl Phase {
    /// Whether this phase needs to read the high-volume tier before it can plan.
    pub fn needs_read(self) -> bool {
        self == Phase::Unknown
    }

    /// What to delete, given the change's blobs and (for [`Phase::Unknown`]) the revision the
    /// high-volume tier references now. Never plans to delete `current`.
    ///
    /// ```
    /// use cairn_core::{Phase, Plan, Revision};
    /// let (old, new) = (Some(Revision(1)), Some(Revision(2)));
    /// assert_eq!(Phase::Lost.plan(old, new, None), Plan { first: new, second: None });
    /// assert_eq!(Phase::Unknown.plan(old, new, new), Plan { first: old, second: None });
    /// ```
    pub fn plan(
        self,
        old: Option<Revision>,
        new: Option<Revision>,
        current: Option<Revision>,
    ) -> Plan {
        let (first, second) = match self {
            Phase::Recorded | Phase::Lost => (new, None),
            Phase::Committed => (old, None),
            Phase::Unknown => {
                let unreferenced = |r: Option<Revision>| r.filter(|r| Some(*r) != current);
                match (unreferenced(old), unreferenced(new)) {
                    (None, second) => (second, None),
                    pair => pair,
                }
            }
        };
        let plan = Plan { first, second };
        if self.needs_read() {
            assert!(
                current.is_none() || (plan.first != current && plan.second != current),
                "cleanup must never delete the blob the high-volume tier references"
            );
        }
        plan
    }
}

/// The cleanup a finished mutation leaves to the driver: small and `Copy`, so a mutation's output
/// stays small. Turn it into a machine with [`Cleanup::new`], giving it the key in whatever
/// storage suits the driver (a borrowed [`Key`] if it runs inline, a [`KeyBuf`] if it is spawned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingCleanup {
    /// The change-log entry.
    pub id: ChangeId,
    /// The blob the mutation wrote, if any.
    pub new: Option<Revision>,
    /// The blob it replaces, if any.
    pub old: Option<Revision>,
    /// How far the mutation got.
    pub phase: Phase,
}

/// How a cleanup ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupOutcome {
    /// Every planned blob is gone and the change-log entry is removed.
    Finished,
    /// A tier kept failing; the change-log entry stays and recovery will finish the job.
    Deferred(Tier),
}

/// What a cleanup did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanupReport {
    /// The change-log entry it worked on.
    pub id: ChangeId,
    /// How many blob deletes succeeded (deleting an absent blob counts).
    pub blobs_deleted: u8,
    /// How it ended.
    pub outcome: CleanupOutcome,
}

/// What a cleanup awaits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    HvRead,
    BlobDelete {
        blob: Revision,
        then: Option<Revision>,
    },
    LogRemove,
}

impl Step {
    fn tier(self) -> Tier {
        match self {
            Step::HvRead => Tier::Hv,
            Step::BlobDelete { .. } => Tier::Lt,
            Step::LogRemove => Tier::Log,
        }
    }

    fn after_plan(plan: Plan) -> Step {
        match plan {
            Plan {
                first: Some(blob),
                second,
            } => Step::BlobDelete { blob, then: second },
            Plan {
                first: None,
                second: Some(blob),
            } => Step::BlobDelete { blob, then: None },
            Plan {
                first: None,
                second: None,
            } => Step::LogRemove,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Await {
        step: Step,
        attempt: u8,
    },
    /// Attempt `attempt` of `step` is due at `until` (set on the first poll after the failure).
    Backoff {
        step: Step,
        attempt: u8,
        until: Option<Instant>,
    },
    Finished(CleanupOutcome),
    Taken,
}

/// Cleans up after one mutation (or one recovered change-log entry). See [`Phase`].
///
/// ```
/// use cairn_core::*;
/// let key = KeyBuf::new(b"k").unwrap();
/// let pending = PendingCleanup { id: ChangeId(9), new: Some(Revision(2)), old: None, phase: Phase::Lost };
/// let mut c = Cleanup::new(key, pending, Config::DEFAULT);
/// let now = Instant::ZERO;
/// assert!(matches!(c.poll(now), Poll::Io(r) if r.to_string().starts_with("lt.delete")));
/// c.handle(Completion::Done);
/// assert!(matches!(c.poll(now), Poll::Io(r) if r.to_string().starts_with("log.remove")));
/// c.handle(Completion::Done);
/// assert!(matches!(c.poll(now), Poll::Done(report) if report.blobs_deleted == 1));
/// ```
#[derive(Clone, Debug)]
pub struct Cleanup<K = KeyBuf> {
    key: K,
    id: ChangeId,
    new: Option<Revision>,
    old: Option<Revision>,
    phase: Phase,
    config: Config,
    blobs_deleted: u8,
    state: State,
    /// PLANTED BUG (`LogEntryRemovedBeforeCleanup`): the blob deletes put off until the
    /// change-log entry is gone.
    #[cfg(feature = "planted-bugs")]
    postponed: Option<Step>,
}

impl<K: Borrow<Key>> Cleanup<K> {
    /// The cleanup described by `pending`, for the change on `key`.
    pub fn new(key: K, pending: PendingCleanup, config: Config) -> Cleanup<K> {
        let PendingCleanup {
            id,
            new,
            old,
            phase,
        } = pending;
        let step = if phase.needs_read() {
            Step::HvRead
        } else {
            Step::after_plan(phase.plan(old, new, None))
        };
        #[allow(unused_mut)] // only the planted bugs change it
        let mut cleanup = Cleanup {
            key,
            id,
            new,
            old,
            phase,
            config,
            blobs_deleted: 0,
            state: State::Await { step, attempt: 0 },
            #[cfg(feature = "planted-bugs")]
            postponed: None,
        };
        #[cfg(feature = "planted-bugs")]
        cleanup.postpone_deletes();
        cleanup
    }

    /// PLANTED BUG (`LogEntryRemovedBeforeCleanup`): remove the change-log entry first, and
    /// only then delete the blobs it covered.
    #[cfg(feature = "planted-bugs")]
    fn postpone_deletes(&mut self) {
        if let State::Await {
            step: step @ Step::BlobDelete { .. },
            attempt: 0,
        } = self.state
        {
            if planted(&self.config, PlantedBug::LogEntryRemovedBeforeCleanup) {
                self.postponed = Some(step);
                self.state = State::Await {
                    step: Step::LogRemove,
                    attempt: 0,
                };
            }
        }
    }

    /// The change-log entry this cleanup works on.
    pub fn id(&self) -> ChangeId {
        self.id
    }

    /// The phase it started from.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The key it cleans up after.
    pub fn key(&self) -> &Key {
        self.key.borrow()
    }

    /// The blob the mutation wrote and the blob it replaces.
    pub fn blobs(&self) -> (Option<Revision>, Option<Revision>) {
        (self.new, self.old)
    }

    pub(crate) fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished(_))
    }

    fn request(&self, step: Step, now: Instant) -> Request<'_> {
        match step {
            Step::HvRead => Request::HvRead {
                key: self.key(),
                payload: false,
                now,
            },
            Step::BlobDelete { blob, .. } => Request::LtDelete {
                blob: BlobId {
                    key: self.key(),
                    revision: blob,
                },
            },
            Step::LogRemove => Request::LogRemove { id: self.id },
        }
    }

    fn failed(&self, step: Step, attempt: u8) -> State {
        if attempt + 1 < self.config.cleanup_attempts {
            State::Backoff {
                step,
                attempt: attempt + 1,
                until: None,
            }
        } else {
            State::Finished(CleanupOutcome::Deferred(step.tier()))
        }
    }
}

impl<K: Borrow<Key>> Machine for Cleanup<K> {
    type Output = CleanupReport;

    fn poll(&mut self, now: Instant) -> Poll<'_, CleanupReport> {
        match self.state {
            State::Await { step, .. } => Poll::Io(self.request(step, now)),
            State::Backoff {
                step,
                attempt,
                until,
            } => match until {
                Some(due) if now >= due => {
                    self.state = State::Await { step, attempt };
                    Poll::Io(self.request(step, now))
                }
                Some(due) => Poll::Wait(due),
                None => {
                    let due = self.config.backoff_until(now, attempt - 1);
                    self.state = State::Backoff {
                        step,
                        attempt,
                        until: Some(due),
                    };
                    Poll::Wait(due)
                }
            },
            State::Finished(outcome) => {
                self.state = State::Taken;
                Poll::Done(CleanupReport {
                    id: self.id,
                    blobs_deleted: self.blobs_deleted,
                    outcome,
                })
            }
            State::Taken => panic!("driver bug: cleanup polled after it was done"),
        }
    }

    fn handle(&mut self, completion: Completion<'_>) {
        let completion = completion.or_failed();
        let State::Await { step, attempt } = self.state else {
            unexpected("cleanup", "without a request outstanding", &completion)
        };
        self.state = match (step, completion) {
            (Step::HvRead, Completion::Row(row)) => {
                let plan = self.phase.plan(self.old, self.new, row.target());
                self.state = State::Await {
                    step: Step::after_plan(plan),
                    attempt: 0,
                };
                #[cfg(feature = "planted-bugs")]
                self.postpone_deletes();
                return;
            }
            #[cfg(feature = "planted-bugs")]
            (Step::LogRemove, Completion::Done) if self.postponed.is_some() => State::Await {
                step: self.postponed.take().expect("checked by the guard"),
                attempt: 0,
            },
            (Step::BlobDelete { then, .. }, Completion::Done) => {
                self.blobs_deleted += 1;
                let step = match then {
                    Some(blob) => Step::BlobDelete { blob, then: None },
                    None => Step::LogRemove,
                };
                State::Await { step, attempt: 0 }
            }
            (Step::LogRemove, Completion::Done) => State::Finished(CleanupOutcome::Finished),
            (step, Completion::Failed) => self.failed(step, attempt),
            (_, completion) => unexpected("cleanup", "Await", &completion),
        };
    }
}
