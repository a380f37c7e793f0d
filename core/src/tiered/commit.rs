//! The second half that small put (over a tombstone), large put and delete share: record the
//! change, write the blob (large put only), then compare-and-write, which is the commit point.

use crate::machine::unexpected;
use crate::tiered::cleanup::Phase;
use crate::{
    Applied, BlobId, Change, ChangeId, Completion, Config, HvWrite, Instant, Key, Request,
    Revision, Tier, WriteError, WriteOutcome,
};

/// How the commit step ended: what the caller is told, and which cleanup phase follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CommitEnd {
    pub result: Result<WriteOutcome, WriteError>,
    pub phase: Phase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitRecord {
        attempt: u8,
    },
    AwaitBlobWrite,
    AwaitCas,
    /// A tombstone compare-and-write failed ambiguously; read to learn whether it took effect.
    AwaitResolve {
        attempt: u8,
    },
    Finished(CommitEnd),
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Commit {
    pub id: ChangeId,
    /// The blob this mutation writes (large put only).
    pub new: Option<Revision>,
    /// The tombstone target the row must still have; also the blob this mutation replaces.
    pub old: Option<Revision>,
    write: HvWrite,
    state: State,
}

impl Commit {
    /// Starts by recording the change. `write` must be a tombstone exactly when `new` is set.
    pub fn new(id: ChangeId, new: Option<Revision>, old: Option<Revision>, write: HvWrite) -> Self {
        assert_eq!(
            new,
            write.target(),
            "only a tombstone write owns a new blob, and it is that one"
        );
        assert!(
            new.is_none() || new != old,
            "a revision is minted once; it cannot replace itself"
        );
        Commit {
            id,
            new,
            old,
            write,
            state: State::AwaitRecord { attempt: 0 },
        }
    }

    pub fn end(&self) -> Option<CommitEnd> {
        match self.state {
            State::Finished(end) => Some(end),
            _ => None,
        }
    }

    /// The outstanding request, or `None` once finished.
    pub fn request<'a>(&self, key: &'a Key, now: Instant) -> Option<Request<'a>> {
        Some(match self.state {
            State::AwaitRecord { .. } => Request::LogRecord {
                id: self.id,
                change: Change {
                    key,
                    new: self.new,
                    old: self.old,
                },
            },
            State::AwaitBlobWrite => {
                let HvWrite::Tombstone(t) = self.write else {
                    unreachable!("only a tombstone write awaits a blob write")
                };
                Request::LtPut {
                    blob: BlobId {
                        key,
                        revision: t.revision,
                    },
                    expires: t.expires,
                }
            }
            State::AwaitCas => Request::HvCompareAndWrite {
                key,
                expected: self.old,
                write: self.write,
                now,
            },
            State::AwaitResolve { .. } => Request::HvRead {
                key,
                payload: false,
                now,
            },
            State::Finished(_) => return None,
        })
    }

    pub fn handle(&mut self, completion: Completion<'_>, config: &Config) {
        let retry = |attempt: u8| attempt + 1 < config.io_attempts;
        let finish = |result, phase| State::Finished(CommitEnd { result, phase });
        let failed = |tier, applied| Err(WriteError { tier, applied });
        self.state = match (self.state, completion) {
            (State::AwaitRecord { .. }, Completion::Done) => match self.write {
                HvWrite::Tombstone(_) => State::AwaitBlobWrite,
                HvWrite::Inline(_) | HvWrite::Delete => State::AwaitCas,
            },
            (State::AwaitRecord { attempt }, Completion::Failed) if retry(attempt) => {
                State::AwaitRecord {
                    attempt: attempt + 1,
                }
            }
            // The entry may or may not exist; a cleanup in phase Recorded removes it either way.
            (State::AwaitRecord { .. }, Completion::Failed) => {
                finish(failed(Tier::Log, Applied::No), Phase::Recorded)
            }
            (State::AwaitBlobWrite, Completion::BlobWritten { size }) => {
                let HvWrite::Tombstone(ref mut t) = self.write else {
                    unreachable!("only a tombstone write awaits a blob write")
                };
                t.size = size;
                State::AwaitCas
            }
            // A body stream cannot be replayed, so a blob write is never retried here. The blob
            // may be partly written; cleanup in phase Recorded deletes it.
            (State::AwaitBlobWrite, Completion::Failed) => {
                finish(failed(Tier::Lt, Applied::No), Phase::Recorded)
            }
            (State::AwaitCas, Completion::Cas(true)) => {
                finish(Ok(WriteOutcome::Committed), Phase::Committed)
            }
            // Last writer wins: losing is success for the caller, and we own only `new`.
            (State::AwaitCas, Completion::Cas(false)) => {
                finish(Ok(WriteOutcome::Superseded), Phase::Lost)
            }
            // Never retried: with "no live tombstone" admitting the write, a retry could bring
            // back our value after another writer replaced it, or our tombstone after its blob
            // was cleaned up. A tombstone write is resolved by reading; an inline write or a
            // delete cannot be told apart from a later identical one, so it stays unknown.
            (State::AwaitCas, Completion::Failed) if self.new.is_some() => {
                State::AwaitResolve { attempt: 0 }
            }
            (State::AwaitCas, Completion::Failed) => {
                finish(failed(Tier::Hv, Applied::Unknown), Phase::Unknown)
            }
            (State::AwaitResolve { .. }, Completion::Row(row)) if row.target() == self.new => {
                finish(Ok(WriteOutcome::Committed), Phase::Committed)
            }
            (State::AwaitResolve { .. }, Completion::Row(_)) => {
                finish(failed(Tier::Hv, Applied::Unknown), Phase::Unknown)
            }
            (State::AwaitResolve { attempt }, Completion::Failed) if retry(attempt) => {
                State::AwaitResolve {
                    attempt: attempt + 1,
                }
            }
            (State::AwaitResolve { .. }, Completion::Failed) => {
                finish(failed(Tier::Hv, Applied::Unknown), Phase::Unknown)
            }
            (state, completion) => unexpected("commit", state.name(), &completion),
        };
    }
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitRecord { .. } => "AwaitRecord",
            State::AwaitBlobWrite => "AwaitBlobWrite",
            State::AwaitCas => "AwaitCas",
            State::AwaitResolve { .. } => "AwaitResolve",
            State::Finished(_) => "Finished",
        }
    }
}
