//! The engine behind [`SmallPut`](super::SmallPut), [`LargePut`](super::LargePut) and
//! [`Delete`](super::Delete): an opening request that decides whether the long-term tier is
//! involved at all, then the shared [`Commit`] step.

use crate::machine::unexpected;
#[cfg(feature = "planted-bugs")]
use crate::planted::{planted, PlantedBug};
use crate::tiered::cleanup::{PendingCleanup, Phase};
use crate::tiered::commit::{Commit, CommitEnd};
use crate::{
    Applied, ChangeId, Completion, Config, Guarded, HvWrite, Instant, Key, ObjectMeta, Poll,
    Request, Revision, Tier, Tombstone, WriteError,
};
use core::fmt;

/// A put or delete succeeded. Both are success for the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write is what the key holds (until the next write).
    Committed,
    /// A concurrent write won the race; last writer wins, so this write is ordered just before
    /// it and is already overwritten.
    Superseded,
}

/// What a finished put or delete produces: the caller's result, and the background cleanup the
/// driver must run (build it with [`Cleanup::new`](crate::Cleanup::new)) (inline, spawned, or scheduled) for storage to converge.
#[derive(Debug)]
#[must_use = "dropping the cleanup leaves its change-log entry for recovery"]
pub struct MutationDone {
    /// What to tell the caller.
    pub result: Result<WriteOutcome, WriteError>,
    /// Background work, if the mutation touched the change log.
    pub cleanup: Option<PendingCleanup>,
}

impl fmt::Display for MutationDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.result {
            Ok(WriteOutcome::Committed) => f.write_str("committed")?,
            Ok(WriteOutcome::Superseded) => f.write_str("superseded (lost the race)")?,
            Err(e) => write!(f, "error: {e}")?,
        }
        match &self.cleanup {
            Some(c) => write!(f, "; cleanup {:?}", c.phase),
            None => f.write_str("; no cleanup"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    PutNonTombstone(ObjectMeta),
    DeleteNonTombstone,
    /// Large put: learn the current target, then write blob `revision`.
    ReadCurrent {
        revision: Revision,
        expires: Option<Instant>,
    },
}

#[derive(Clone, Copy, Debug)]
enum State {
    AwaitOpening {
        attempt: u8,
    },
    Committing(Commit),
    Finished {
        result: Result<WriteOutcome, WriteError>,
        cleanup: Option<(Phase, Commit)>,
    },
    Taken,
}

#[derive(Clone, Debug)]
pub(crate) struct Mutation<'k> {
    key: &'k Key,
    id: ChangeId,
    config: Config,
    opening: Opening,
    state: State,
}

impl<'k> Mutation<'k> {
    pub fn new(key: &'k Key, id: ChangeId, config: Config, opening: Opening) -> Mutation<'k> {
        Mutation {
            key,
            id,
            config,
            opening,
            state: State::AwaitOpening { attempt: 0 },
        }
    }

    pub fn key(&self) -> &'k Key {
        self.key
    }

    #[inline]
    pub fn poll(&mut self, now: Instant) -> Poll<'_, MutationDone> {
        // Looked at in place; the commit is copied out only on the step that ends it.
        let ended = match &self.state {
            State::Committing(commit) => commit.end().map(|end| (end, *commit)),
            _ => None,
        };
        if let Some((CommitEnd { result, phase }, commit)) = ended {
            #[allow(unused_mut)] // only the planted bugs change them
            let (mut phase, mut cleanup) = (phase, true);
            // PLANTED BUG: an unknown outcome is cleaned up as a lost race (deletes `new`).
            #[cfg(feature = "planted-bugs")]
            if phase == Phase::Unknown
                && planted(&self.config, PlantedBug::UnknownOutcomeTreatedAsLost)
            {
                phase = Phase::Lost;
            }
            // PLANTED BUG: the unlogged small put over a tombstone leaves no cleanup.
            #[cfg(feature = "planted-bugs")]
            if matches!(self.opening, Opening::PutNonTombstone(_))
                && planted(&self.config, PlantedBug::SmallPutOverTombstoneUnlogged)
            {
                cleanup = false;
            }
            self.state = State::Finished {
                result,
                cleanup: cleanup.then_some((phase, commit)),
            };
        }
        let key = self.key;
        match &self.state {
            State::AwaitOpening { .. } => Poll::Io(match self.opening {
                Opening::PutNonTombstone(meta) => Request::HvPutNonTombstone { key, meta, now },
                Opening::DeleteNonTombstone => Request::HvDeleteNonTombstone { key, now },
                Opening::ReadCurrent { .. } => Request::HvRead {
                    key,
                    payload: false,
                    now,
                },
            }),
            State::Committing(commit) => Poll::Io(
                commit
                    .request(key, now)
                    .unwrap_or_else(|| unreachable!("a finished commit was moved to Finished")),
            ),
            &State::Finished { result, cleanup } => {
                self.state = State::Taken;
                let cleanup = cleanup.map(|(phase, commit)| PendingCleanup {
                    id: commit.id,
                    new: commit.new,
                    old: commit.old,
                    phase,
                });
                Poll::Done(MutationDone { result, cleanup })
            }
            State::Taken => panic!("driver bug: mutation polled after it was done"),
        }
    }

    #[inline]
    pub fn handle(&mut self, completion: Completion<'_>) {
        // A guarded write refused by its tier certainly did not take effect.
        if matches!(completion, Completion::Refused)
            && matches!(self.state, State::AwaitOpening { .. })
            && matches!(
                self.opening,
                Opening::PutNonTombstone(_) | Opening::DeleteNonTombstone
            )
        {
            self.state = State::Finished {
                result: Err(WriteError {
                    tier: Tier::Hv,
                    applied: Applied::No,
                }),
                cleanup: None,
            };
            return;
        }
        let completion = match self.state {
            State::Committing(_) => completion,
            _ => completion.or_failed(),
        };
        match &mut self.state {
            // In place: a commit is most of the machine, and this is its hot path.
            State::Committing(commit) => commit.handle(completion, &self.config),
            // Only the large put's read is retried. A guarded write that failed may have been
            // applied, seen, and overwritten since; applying it again would make one operation
            // take effect twice.
            &mut State::AwaitOpening { attempt }
                if matches!(completion, Completion::Failed)
                    && matches!(self.opening, Opening::ReadCurrent { .. })
                    && attempt + 1 < self.config.io_attempts =>
            {
                self.state = State::AwaitOpening {
                    attempt: attempt + 1,
                };
            }
            State::AwaitOpening { .. } => self.state = self.opened(completion),
            state => unexpected("mutation", state.name(), &completion),
        }
    }

    #[inline]
    fn opened(&self, completion: Completion<'_>) -> State {
        let commit = |new, old, write| {
            #[allow(unused_mut)] // only the planted bugs change it
            let mut commit = Commit::new(self.id, new, old, write);
            #[cfg(feature = "planted-bugs")]
            commit.plant(
                &self.config,
                matches!(self.opening, Opening::PutNonTombstone(_)),
            );
            State::Committing(commit)
        };
        let done = |result| State::Finished {
            result,
            cleanup: None,
        };
        match (self.opening, completion) {
            (Opening::PutNonTombstone(_) | Opening::DeleteNonTombstone, Completion::Guarded(g)) => {
                match (g, self.opening) {
                    (Guarded::Applied, _) => done(Ok(WriteOutcome::Committed)),
                    (Guarded::Blocked(t), Opening::PutNonTombstone(meta)) => {
                        commit(None, Some(t.revision), HvWrite::Inline(meta))
                    }
                    (Guarded::Blocked(t), _) => commit(None, Some(t.revision), HvWrite::Delete),
                }
            }
            // PLANTED BUG: a guarded write that failed is said not to have taken effect.
            #[cfg(feature = "planted-bugs")]
            (Opening::PutNonTombstone(_) | Opening::DeleteNonTombstone, Completion::Failed)
                if planted(
                    &self.config,
                    PlantedBug::FailedGuardedWriteReportedUnapplied,
                ) =>
            {
                done(Err(WriteError {
                    tier: Tier::Hv,
                    applied: Applied::No,
                }))
            }
            // A guarded write that failed may have been applied.
            (Opening::PutNonTombstone(_) | Opening::DeleteNonTombstone, Completion::Failed) => {
                done(Err(WriteError {
                    tier: Tier::Hv,
                    applied: Applied::Unknown,
                }))
            }
            (Opening::ReadCurrent { revision, expires }, Completion::Row(row)) => {
                // PLANTED BUG: the expiry is rounded up by a millisecond (tombstone and blob).
                #[cfg(feature = "planted-bugs")]
                let expires = match expires {
                    Some(at) if planted(&self.config, PlantedBug::ExpiryOneMsLate) => {
                        Some(at + crate::Duration::from_millis(1))
                    }
                    _ => expires,
                };
                let tombstone = Tombstone {
                    revision,
                    size: 0,
                    expires,
                };
                commit(Some(revision), row.target(), HvWrite::Tombstone(tombstone))
            }
            (Opening::ReadCurrent { .. }, Completion::Failed) => done(Err(WriteError {
                tier: Tier::Hv,
                applied: Applied::No,
            })),
            (_, completion) => unexpected("mutation", "AwaitOpening", &completion),
        }
    }
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitOpening { .. } => "AwaitOpening",
            State::Committing(_) => "Committing",
            State::Finished { .. } => "Finished",
            State::Taken => "Taken",
        }
    }
}

/// Implements [`Machine`](crate::Machine) for a public wrapper around [`Mutation`].
macro_rules! mutation_machine {
    ($t:ident) => {
        impl $crate::Machine for $t<'_> {
            type Output = $crate::MutationDone;
            #[inline]
            fn poll(&mut self, now: $crate::Instant) -> $crate::Poll<'_, $crate::MutationDone> {
                self.0.poll(now)
            }
            #[inline]
            fn handle(&mut self, completion: $crate::Completion<'_>) {
                self.0.handle(completion)
            }
        }
    };
}
pub(crate) use mutation_machine;
