//! The second half that small put (over a tombstone), large put and delete share: record the
//! change, write the blob (large put only), then compare-and-write, which is the commit point.

use crate::machine::unexpected;
#[cfg(feature = "planted-bugs")]
use crate::planted::{planted, PlantedBug};
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
    /// PLANTED BUG (`OldBlobDeletedBeforeCommit`): deleting `old` before the commit point.
    #[cfg(feature = "planted-bugs")]
    PlantedDeleteOld,
    /// PLANTED BUG (`BlobWrittenBeforeLogRecord`): recording the change after the blob write.
    #[cfg(feature = "planted-bugs")]
    PlantedRecordAfterBlob,
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
    /// PLANTED BUG (`CasRetriedBlindly`): retries of the compare-and-write so far.
    #[cfg(feature = "planted-bugs")]
    blind_retries: u8,
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
            #[cfg(feature = "planted-bugs")]
            blind_retries: 0,
        }
    }

    /// Applies the planted bugs that change where a commit starts.
    #[cfg(feature = "planted-bugs")]
    pub fn plant(&mut self, config: &Config, small_put: bool) {
        // PLANTED BUG: a small put over a tombstone skips the change log (and, in the mutation,
        // its cleanup).
        if small_put && planted(config, PlantedBug::SmallPutOverTombstoneUnlogged) {
            self.state = State::AwaitCas;
        }
        // PLANTED BUG: the blob is written before the change that covers it is durable.
        if self.new.is_some() && planted(config, PlantedBug::BlobWrittenBeforeLogRecord) {
            self.state = State::AwaitBlobWrite;
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
            #[cfg(feature = "planted-bugs")]
            State::PlantedRecordAfterBlob => Request::LogRecord {
                id: self.id,
                change: Change {
                    key,
                    new: self.new,
                    old: self.old,
                },
            },
            #[cfg(feature = "planted-bugs")]
            State::PlantedDeleteOld => Request::LtDelete {
                blob: BlobId {
                    key,
                    revision: self.old.expect("planted only when there is an old blob"),
                },
            },
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
        // Refused at the commit point: the row is as it was, and only `new` (if any) is ours to
        // clean up, as if the record had been all that happened.
        if let (State::AwaitCas, Completion::Refused) = (self.state, completion) {
            self.state = finish(failed(Tier::Hv, Applied::No), Phase::Recorded);
            return;
        }
        let completion = completion.or_failed();
        self.state = match (self.state, completion) {
            // PLANTED BUG: the blob the row still references is deleted before the commit.
            #[cfg(feature = "planted-bugs")]
            (State::AwaitRecord { .. }, Completion::Done)
                if self.old.is_some()
                    && planted(config, PlantedBug::OldBlobDeletedBeforeCommit) =>
            {
                State::PlantedDeleteOld
            }
            #[cfg(feature = "planted-bugs")]
            (State::PlantedDeleteOld, Completion::Done | Completion::Failed) => match self.write {
                HvWrite::Tombstone(_) => State::AwaitBlobWrite,
                HvWrite::Inline(_) | HvWrite::Delete => State::AwaitCas,
            },
            // PLANTED BUG: the change is recorded only now, after the blob exists.
            #[cfg(feature = "planted-bugs")]
            (State::AwaitBlobWrite, Completion::BlobWritten { size })
                if planted(config, PlantedBug::BlobWrittenBeforeLogRecord) =>
            {
                let HvWrite::Tombstone(ref mut t) = self.write else {
                    unreachable!("only a tombstone write awaits a blob write")
                };
                t.size = size;
                State::PlantedRecordAfterBlob
            }
            #[cfg(feature = "planted-bugs")]
            (State::PlantedRecordAfterBlob, Completion::Done) => State::AwaitCas,
            #[cfg(feature = "planted-bugs")]
            (State::PlantedRecordAfterBlob, Completion::Failed) => {
                finish(failed(Tier::Log, Applied::No), Phase::Recorded)
            }
            // PLANTED BUG: the tombstone keeps its opening size (0), not the blob's.
            #[cfg(feature = "planted-bugs")]
            (State::AwaitBlobWrite, Completion::BlobWritten { .. })
                if planted(config, PlantedBug::TombstoneSizeNotRecorded) =>
            {
                State::AwaitCas
            }
            // PLANTED BUG: a failed (perhaps partial) blob write is committed anyway.
            #[cfg(feature = "planted-bugs")]
            (State::AwaitBlobWrite, Completion::Failed)
                if planted(config, PlantedBug::CommitAfterFailedBlobWrite) =>
            {
                State::AwaitCas
            }
            // PLANTED BUG: the loser deletes `old` (the winner's business) and keeps `new`.
            #[cfg(feature = "planted-bugs")]
            (State::AwaitCas, Completion::Cas(false))
                if planted(config, PlantedBug::LoserCleansUpAsWinner) =>
            {
                finish(Ok(WriteOutcome::Superseded), Phase::Committed)
            }
            // PLANTED BUG: a compare-and-write that may have applied is sent again.
            #[cfg(feature = "planted-bugs")]
            (State::AwaitCas, Completion::Failed)
                if planted(config, PlantedBug::CasRetriedBlindly) && retry(self.blind_retries) =>
            {
                self.blind_retries += 1;
                State::AwaitCas
            }
            // PLANTED BUG: whatever the re-read shows is taken as our commit.
            #[cfg(feature = "planted-bugs")]
            (State::AwaitResolve { .. }, Completion::Row(_))
                if planted(config, PlantedBug::ResolveAssumesCommitted) =>
            {
                finish(Ok(WriteOutcome::Committed), Phase::Committed)
            }
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
            #[cfg(feature = "planted-bugs")]
            State::PlantedDeleteOld => "PlantedDeleteOld",
            #[cfg(feature = "planted-bugs")]
            State::PlantedRecordAfterBlob => "PlantedRecordAfterBlob",
        }
    }
}
