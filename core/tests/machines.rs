//! Unit tests of the tiered machines, laid out state × input: for each machine, each state it can
//! await, each answer it can get there. Every test is named for the behaviour it pins.
//!
//! Most tests feed completions by hand, so that the state and the input are explicit; the ones
//! about effects on storage drive the machines against the simulator's world.

use cairn_core::limits::{MAX_KEY_LEN, MAX_REDIRECT_HOPS};
use cairn_core::{
    Applied, ByteRange, ChangeId, Cleanup, CleanupOutcome, Completion, Config, ConfigError, Delete,
    Found, Get, Guarded, HvRow, HvWrite, Instant, Key, KeyBuf, KeyError, LargePut, LogEntry,
    Machine, MutationDone, ObjectMeta, PendingCleanup, Phase, Plan, Poll, RangeNotSatisfiable,
    ReadError, Recovery, Request, Revision, SmallPut, Span, Tier, Tombstone, WriteError,
    WriteOutcome,
};
use cairn_sim::world::{run, CasMode, LoggedChange, OpContext, World};
use std::fmt::Debug;

const NOW: Instant = Instant::from_millis(1_000);
/// The blob the key held before the operation.
const A: Revision = Revision(0xA);
/// The blob this operation writes.
const B: Revision = Revision(0xB);
/// A concurrent writer's blob.
const C: Revision = Revision(0xC);
/// This operation's change-log entry.
const ID: ChangeId = ChangeId(2);
const CONFIG: Config = Config::DEFAULT;
const SIZE: u64 = 100;

fn key() -> &'static Key {
    Key::new(b"k").expect("a valid key")
}

fn tomb(revision: Revision) -> Tombstone {
    Tombstone {
        revision,
        size: SIZE,
        expires: None,
    }
}

fn meta(size: u64) -> ObjectMeta {
    ObjectMeta {
        size,
        created: NOW,
        expires: None,
    }
}

// --- Reading what a machine wants ------------------------------------------------------------

/// A request, owned and comparable (a [`Request`] borrows the machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Io {
    HvRead {
        payload: bool,
    },
    PutNonTombstone(ObjectMeta),
    DeleteNonTombstone,
    Cas {
        expected: Option<Revision>,
        write: HvWrite,
    },
    LtPut(Revision),
    LtGet(Revision, Option<Span>),
    LtHead(Revision),
    LtDelete(Revision),
    Record {
        id: ChangeId,
        new: Option<Revision>,
        old: Option<Revision>,
    },
    Remove(ChangeId),
    Scan(Option<ChangeId>),
}

impl Io {
    fn of(request: &Request<'_>) -> Io {
        match *request {
            Request::HvRead { payload, .. } => Io::HvRead { payload },
            Request::HvPutNonTombstone { meta, .. } => Io::PutNonTombstone(meta),
            Request::HvDeleteNonTombstone { .. } => Io::DeleteNonTombstone,
            Request::HvCompareAndWrite {
                expected, write, ..
            } => Io::Cas { expected, write },
            Request::LtPut { blob, .. } => Io::LtPut(blob.revision),
            Request::LtGet { blob, span } => Io::LtGet(blob.revision, span),
            Request::LtHead { blob } => Io::LtHead(blob.revision),
            Request::LtDelete { blob } => Io::LtDelete(blob.revision),
            Request::LogRecord { id, change } => Io::Record {
                id,
                new: change.new,
                old: change.old,
            },
            Request::LogRemove { id } => Io::Remove(id),
            Request::LogScan { after } => Io::Scan(after),
        }
    }
}

/// The request `machine` wants at `NOW`; fails the test on anything else.
fn io<M: Machine>(machine: &mut M) -> Io
where
    M::Output: Debug,
{
    io_at(machine, NOW)
}

fn io_at<M: Machine>(machine: &mut M, now: Instant) -> Io
where
    M::Output: Debug,
{
    match machine.poll(now) {
        Poll::Io(request) => Io::of(&request),
        other => panic!("expected a request, got {other:?}"),
    }
}

/// The machine's output; fails the test if it is not done.
fn done<M: Machine>(machine: &mut M) -> M::Output
where
    M::Output: Debug,
{
    match machine.poll(NOW) {
        Poll::Done(output) => output,
        Poll::Io(request) => panic!("expected done, it wants {request}"),
        Poll::Wait(until) => panic!("expected done, it waits until {until}"),
    }
}

/// Polls, checks the request, answers it.
fn expect<M: Machine>(machine: &mut M, want: Io, answer: Completion<'_>)
where
    M::Output: Debug,
{
    assert_eq!(io(machine), want);
    machine.handle(answer);
}

fn blocked(revision: Revision) -> Completion<'static> {
    Completion::Guarded(Guarded::Blocked(tomb(revision)))
}

fn row(revision: Revision) -> Completion<'static> {
    Completion::Row(HvRow::Tombstone(tomb(revision)))
}

fn tombstone_write(revision: Revision, size: u64) -> HvWrite {
    HvWrite::Tombstone(Tombstone {
        revision,
        size,
        expires: None,
    })
}

fn unknown(tier: Tier) -> Result<WriteOutcome, WriteError> {
    Err(WriteError {
        tier,
        applied: Applied::Unknown,
    })
}

fn not_applied(tier: Tier) -> Result<WriteOutcome, WriteError> {
    Err(WriteError {
        tier,
        applied: Applied::No,
    })
}

fn phase(done: &MutationDone) -> Option<Phase> {
    done.cleanup.map(|pending| pending.phase)
}

/// The cleanup machine a finished mutation asks for, borrowing the test's key.
fn cleanup_of(done: &MutationDone) -> Cleanup<&'static Key> {
    let pending = done.cleanup.expect("the mutation left a cleanup");
    Cleanup::new(key(), pending, CONFIG)
}

fn pending(phase: Phase, new: Option<Revision>, old: Option<Revision>) -> PendingCleanup {
    PendingCleanup {
        id: ID,
        new,
        old,
        phase,
    }
}

// --- Keys, config, ranges --------------------------------------------------------------------

#[test]
fn key_validation() {
    assert_eq!(Key::new(b"").unwrap_err(), KeyError::Empty);
    let long = [b'a'; MAX_KEY_LEN + 1];
    assert_eq!(
        Key::new(&long).unwrap_err(),
        KeyError::TooLong {
            len: MAX_KEY_LEN + 1
        }
    );
    assert!(Key::new(&long[..MAX_KEY_LEN]).is_ok(), "exactly the limit");
    assert_eq!(
        Key::new(b"ab\0c\0").unwrap_err(),
        KeyError::ContainsNul { at: 2 },
        "the first NUL"
    );
    assert!(Key::new(b"a/b c\x7f\xff").is_ok(), "any other byte");
    assert_eq!(Key::new(b"x").unwrap().as_bytes(), b"x");
    assert_eq!(Key::new(b"\xff").unwrap().as_str(), None);
}

#[test]
fn keys_display_quoted_with_escapes() {
    let shown = |bytes: &[u8]| Key::new(bytes).unwrap().to_string();
    assert_eq!(shown(b"photos/cat.jpg"), r#""photos/cat.jpg""#);
    assert_eq!(shown(b"a\"b\\c"), r#""a\"b\\c""#);
    assert_eq!(shown(b"tab\there\n"), r#""tab\there\n""#);
    assert_eq!(shown(b"bad\xffbyte"), r#""bad\xffbyte""#);
}

#[test]
fn key_buf_round_trips_and_validates() {
    let owned = KeyBuf::new(b"k").unwrap();
    assert_eq!(&*owned, key());
    assert_eq!(key().to_key_buf(), owned);
    assert_eq!(KeyBuf::new(b"").unwrap_err(), KeyError::Empty);
}

#[test]
fn exactly_threshold_is_inline() {
    let config = Config {
        inline_threshold: 1024,
        ..CONFIG
    };
    assert!(config.fits_inline(0));
    assert!(config.fits_inline(1024));
    assert!(!config.fits_inline(1025));
    assert!(
        CONFIG.fits_inline(1024 * 1024),
        "the default is 1 MiB inclusive"
    );
    assert!(!CONFIG.fits_inline(1024 * 1024 + 1));
}

#[test]
fn config_validation_rejects_every_out_of_bounds_setting() {
    assert_eq!(CONFIG.validate(), Ok(()));
    let bad = [
        (
            Config {
                inline_threshold: 64 * 1024 * 1024 + 1,
                ..CONFIG
            },
            ConfigError::InlineThresholdTooLarge,
        ),
        (
            Config {
                io_attempts: 0,
                ..CONFIG
            },
            ConfigError::IoAttempts,
        ),
        (
            Config {
                io_attempts: 9,
                ..CONFIG
            },
            ConfigError::IoAttempts,
        ),
        (
            Config {
                cleanup_attempts: 0,
                ..CONFIG
            },
            ConfigError::CleanupAttempts,
        ),
        (
            Config {
                cleanup_attempts: 17,
                ..CONFIG
            },
            ConfigError::CleanupAttempts,
        ),
        (
            Config {
                backoff_initial: cairn_core::Duration::from_secs(31),
                backoff_max: cairn_core::Duration::from_secs(31),
                ..CONFIG
            },
            ConfigError::Backoff,
        ),
        (
            Config {
                backoff_initial: cairn_core::Duration::from_secs(2),
                backoff_max: cairn_core::Duration::from_secs(1),
                ..CONFIG
            },
            ConfigError::Backoff,
        ),
    ];
    for (config, error) in bad {
        assert_eq!(config.validate(), Err(error), "{config:?}");
    }
}

#[test]
fn range_resolution() {
    let span = |start, end| Ok(Span { start, end });
    let unsatisfiable = Err(RangeNotSatisfiable { size: 10 });
    let cases = [
        (ByteRange::From(0), span(0, 10)),
        (ByteRange::From(9), span(9, 10)),
        (ByteRange::From(10), unsatisfiable),
        (ByteRange::Inclusive { start: 0, end: 0 }, span(0, 1)),
        (ByteRange::Inclusive { start: 2, end: 5 }, span(2, 6)),
        (ByteRange::Inclusive { start: 2, end: 99 }, span(2, 10)),
        (
            ByteRange::Inclusive {
                start: 0,
                end: u64::MAX,
            },
            span(0, 10),
        ),
        (ByteRange::Inclusive { start: 5, end: 4 }, unsatisfiable),
        (ByteRange::Inclusive { start: 10, end: 12 }, unsatisfiable),
        (ByteRange::Suffix(3), span(7, 10)),
        (ByteRange::Suffix(99), span(0, 10)),
        (ByteRange::Suffix(0), unsatisfiable),
    ];
    for (range, want) in cases {
        assert_eq!(range.resolve(10), want, "{range:?}");
    }
    assert_eq!(
        ByteRange::From(0).resolve(0),
        Err(RangeNotSatisfiable { size: 0 }),
        "an empty object has no byte to select"
    );
}

// --- The driver contract ---------------------------------------------------------------------

#[test]
fn poll_twice_returns_same_request() {
    fn twice<M: Machine>(mut machine: M, steps: &[Completion<'_>])
    where
        M::Output: Debug,
    {
        for step in steps {
            let first = io(&mut machine);
            assert_eq!(io(&mut machine), first, "polled again before answering");
            machine.handle(*step);
        }
        let first = io(&mut machine);
        assert_eq!(io(&mut machine), first);
    }
    let put = || LargePut::new(key(), B, None, ID, CONFIG);
    twice(put(), &[]);
    twice(put(), &[row(A)]);
    twice(put(), &[row(A), Completion::Done]);
    twice(
        put(),
        &[
            row(A),
            Completion::Done,
            Completion::BlobWritten { size: 1 },
        ],
    );
    let small = SmallPut::new(key(), meta(5), ID, CONFIG);
    twice(small, &[blocked(A), Completion::Done]);
    twice(Delete::new(key(), ID, CONFIG), &[blocked(A)]);
    twice(Get::new(key(), None, CONFIG), &[row(A)]);
    let cleanup = Cleanup::new(key(), pending(Phase::Unknown, Some(B), Some(A)), CONFIG);
    twice(cleanup, &[Completion::Row(HvRow::Absent)]);
    twice(Recovery::new(CONFIG), &[]);
}

#[test]
fn polling_a_backoff_again_keeps_its_deadline() {
    let mut cleanup = Cleanup::new(key(), pending(Phase::Lost, Some(B), None), CONFIG);
    expect(&mut cleanup, Io::LtDelete(B), Completion::Failed);
    let due = NOW + CONFIG.backoff_initial;
    assert_eq!(cleanup.poll(NOW), Poll::Wait(due));
    let later = Instant::from_millis(NOW.as_millis() + 50);
    assert_eq!(
        cleanup.poll(later),
        Poll::Wait(due),
        "not moved by a later poll"
    );
    assert_eq!(io_at(&mut cleanup, due), Io::LtDelete(B));
}

#[test]
#[should_panic(expected = "driver bug")]
fn handle_wrong_completion_panics() {
    let mut put = SmallPut::new(key(), meta(5), ID, CONFIG);
    let _ = io(&mut put);
    put.handle(Completion::Cas(true));
}

#[test]
#[should_panic(expected = "driver bug")]
fn handle_wrong_completion_panics_in_get() {
    let mut get = Get::new(key(), None, CONFIG);
    let _ = io(&mut get);
    get.handle(Completion::Done);
}

#[test]
#[should_panic(expected = "driver bug")]
fn handle_wrong_completion_panics_in_commit() {
    let mut put = LargePut::new(key(), B, None, ID, CONFIG);
    expect(&mut put, Io::HvRead { payload: false }, row(A));
    let _ = io(&mut put);
    put.handle(Completion::Cas(true));
}

#[test]
#[should_panic(expected = "driver bug")]
fn handle_wrong_completion_panics_in_recovery() {
    let mut recovery = Recovery::new(CONFIG);
    let _ = io(&mut recovery);
    recovery.handle(Completion::Blob { found: true });
}

#[test]
#[should_panic(expected = "without a request outstanding")]
fn handle_during_backoff_panics() {
    let mut cleanup = Cleanup::new(key(), pending(Phase::Lost, Some(B), None), CONFIG);
    expect(&mut cleanup, Io::LtDelete(B), Completion::Failed);
    let _ = cleanup.poll(NOW);
    cleanup.handle(Completion::Done);
}

#[test]
#[should_panic(expected = "polled after it was done")]
fn poll_after_done_panics() {
    let mut put = SmallPut::new(key(), meta(5), ID, CONFIG);
    expect(
        &mut put,
        Io::PutNonTombstone(meta(5)),
        Completion::Guarded(Guarded::Applied),
    );
    let _ = done(&mut put);
    let _ = put.poll(NOW);
}

// --- Small put -------------------------------------------------------------------------------

mod small_put {
    use super::*;

    fn put() -> SmallPut<'static> {
        SmallPut::new(key(), meta(5), ID, CONFIG)
    }

    /// A small put that met tombstone A and recorded its change: awaiting its CAS.
    /// The record of a small put blocked by tombstone A.
    const RECORD: Io = Io::Record {
        id: ID,
        new: None,
        old: Some(A),
    };

    /// A small put blocked by tombstone A, recording its change.
    fn at_record() -> SmallPut<'static> {
        let mut put = put();
        expect(&mut put, Io::PutNonTombstone(meta(5)), blocked(A));
        put
    }

    fn at_cas() -> SmallPut<'static> {
        let mut put = at_record();
        expect(&mut put, RECORD, Completion::Done);
        put
    }

    fn cas() -> Io {
        Io::Cas {
            expected: Some(A),
            write: HvWrite::Inline(meta(5)),
        }
    }

    // AwaitOpening

    #[test]
    fn applied_commits_without_log_or_cleanup() {
        let mut put = put();
        expect(
            &mut put,
            Io::PutNonTombstone(meta(5)),
            Completion::Guarded(Guarded::Applied),
        );
        let done = done(&mut put);
        assert_eq!(done.result, Ok(WriteOutcome::Committed));
        assert!(done.cleanup.is_none());
    }

    #[test]
    fn blocked_records_the_tombstone_as_old_before_any_cas() {
        let _ = at_cas();
    }

    #[test]
    fn failed_opening_is_not_retried_and_is_unknown_without_cleanup() {
        let mut put = put();
        expect(&mut put, Io::PutNonTombstone(meta(5)), Completion::Failed);
        let done = done(&mut put);
        assert_eq!(
            done.result,
            unknown(Tier::Hv),
            "a guarded write may have applied"
        );
        assert!(done.cleanup.is_none(), "nothing was recorded");
    }

    // AwaitRecord

    #[test]
    fn record_failure_is_retried_then_not_applied_with_recorded_cleanup() {
        let mut put = at_record();
        for _ in 0..CONFIG.io_attempts {
            expect(&mut put, RECORD, Completion::Failed);
        }
        let done = done(&mut put);
        assert_eq!(done.result, not_applied(Tier::Log));
        assert_eq!(phase(&done), Some(Phase::Recorded));
        let mut cleanup = cleanup_of(&done);
        expect(&mut cleanup, Io::Remove(ID), Completion::Done);
        let report = super::done(&mut cleanup);
        assert_eq!(
            (report.outcome, report.blobs_deleted),
            (CleanupOutcome::Finished, 0)
        );
    }

    // AwaitCas

    #[test]
    fn cas_ok_commits_and_cleanup_deletes_the_old_blob() {
        let mut put = at_cas();
        expect(&mut put, cas(), Completion::Cas(true));
        let done = done(&mut put);
        assert_eq!(done.result, Ok(WriteOutcome::Committed));
        let mut cleanup = cleanup_of(&done);
        assert_eq!(cleanup.phase(), Phase::Committed);
        expect(&mut cleanup, Io::LtDelete(A), Completion::Done);
        expect(&mut cleanup, Io::Remove(ID), Completion::Done);
    }

    #[test]
    fn cas_conflict_is_superseded_and_deletes_nothing() {
        let mut put = at_cas();
        expect(&mut put, cas(), Completion::Cas(false));
        let done = done(&mut put);
        assert_eq!(done.result, Ok(WriteOutcome::Superseded));
        let mut cleanup = cleanup_of(&done);
        assert_eq!(cleanup.phase(), Phase::Lost);
        expect(&mut cleanup, Io::Remove(ID), Completion::Done);
    }

    #[test]
    fn inline_cas_failure_is_not_retried_and_is_unknown_with_a_rereading_cleanup() {
        let mut put = at_cas();
        expect(&mut put, cas(), Completion::Failed);
        let done = done(&mut put);
        assert_eq!(done.result, unknown(Tier::Hv));
        assert_eq!(phase(&done), Some(Phase::Unknown));
    }

    #[test]
    fn refused_opening_is_not_applied_without_cleanup() {
        let mut put = put();
        expect(&mut put, Io::PutNonTombstone(meta(5)), Completion::Refused);
        let done = done(&mut put);
        assert_eq!(done.result, not_applied(Tier::Hv));
        assert!(done.cleanup.is_none(), "nothing was recorded");
    }

    #[test]
    fn refused_cas_is_not_applied_and_cleanup_only_removes_the_entry() {
        let mut put = at_cas();
        expect(&mut put, cas(), Completion::Refused);
        let done = done(&mut put);
        assert_eq!(done.result, not_applied(Tier::Hv));
        assert_eq!(phase(&done), Some(Phase::Recorded), "no re-read needed");
        let mut cleanup = cleanup_of(&done);
        expect(&mut cleanup, Io::Remove(ID), Completion::Done);
        assert_eq!(super::done(&mut cleanup).blobs_deleted, 0, "old is kept");
    }

    #[test]
    fn a_refused_record_is_retried_like_a_failed_one() {
        let mut put = at_record();
        expect(&mut put, RECORD, Completion::Refused);
        expect(&mut put, RECORD, Completion::Done);
        assert_eq!(io(&mut put), cas(), "on to the commit point");
    }
}

// --- Large put -------------------------------------------------------------------------------

mod large_put {
    use super::*;

    fn put() -> LargePut<'static> {
        LargePut::new(key(), B, None, ID, CONFIG)
    }

    /// A large put that read `current` and recorded its change: awaiting its blob write.
    fn at_blob_write(current: Completion<'_>, old: Option<Revision>) -> LargePut<'static> {
        let mut put = put();
        expect(&mut put, Io::HvRead { payload: false }, current);
        expect(
            &mut put,
            Io::Record {
                id: ID,
                new: Some(B),
                old,
            },
            Completion::Done,
        );
        put
    }

    /// ... and wrote a blob of `SIZE` bytes: awaiting its CAS.
    fn at_cas(current: Completion<'_>, old: Option<Revision>) -> LargePut<'static> {
        let mut put = at_blob_write(current, old);
        expect(
            &mut put,
            Io::LtPut(B),
            Completion::BlobWritten { size: SIZE },
        );
        put
    }

    fn cas(expected: Option<Revision>) -> Io {
        Io::Cas {
            expected,
            write: tombstone_write(B, SIZE),
        }
    }

    // AwaitOpening (a metadata read)

    #[test]
    fn reads_metadata_only_then_records_before_writing_the_blob() {
        let mut put = at_blob_write(row(A), Some(A));
        assert_eq!(io(&mut put), Io::LtPut(B));
    }

    #[test]
    fn over_inline_or_absent_expects_no_tombstone() {
        for current in [HvRow::Absent, HvRow::Inline(meta(5))] {
            let mut put = at_cas(Completion::Row(current), None);
            assert_eq!(io(&mut put), cas(None), "{current}");
        }
    }

    #[test]
    fn read_failures_exhausted_are_not_applied_without_cleanup() {
        let mut put = put();
        for _ in 0..CONFIG.io_attempts {
            expect(&mut put, Io::HvRead { payload: false }, Completion::Failed);
        }
        let done = done(&mut put);
        assert_eq!(done.result, not_applied(Tier::Hv));
        assert!(done.cleanup.is_none());
    }

    // AwaitBlobWrite

    #[test]
    fn blob_write_failure_is_not_retried_and_cleanup_deletes_the_new_blob() {
        let mut put = at_blob_write(row(A), Some(A));
        expect(&mut put, Io::LtPut(B), Completion::Failed);
        let done = done(&mut put);
        assert_eq!(done.result, not_applied(Tier::Lt));
        let mut cleanup = cleanup_of(&done);
        assert_eq!(cleanup.phase(), Phase::Recorded);
        expect(&mut cleanup, Io::LtDelete(B), Completion::Done);
        expect(&mut cleanup, Io::Remove(ID), Completion::Done);
    }

    #[test]
    fn the_tombstone_carries_the_size_the_blob_write_reported() {
        let mut put = at_blob_write(row(A), Some(A));
        expect(
            &mut put,
            Io::LtPut(B),
            Completion::BlobWritten { size: 12_345 },
        );
        assert_eq!(
            io(&mut put),
            Io::Cas {
                expected: Some(A),
                write: tombstone_write(B, 12_345)
            }
        );
    }

    // AwaitCas

    #[test]
    fn cas_ok_commits_and_cleanup_deletes_only_the_old_blob() {
        let mut put = at_cas(row(A), Some(A));
        expect(&mut put, cas(Some(A)), Completion::Cas(true));
        let mut cleanup = cleanup_of(&done(&mut put));
        assert_eq!(cleanup.phase(), Phase::Committed);
        expect(&mut cleanup, Io::LtDelete(A), Completion::Done);
        expect(&mut cleanup, Io::Remove(ID), Completion::Done);
    }

    #[test]
    fn large_put_losing_cas_deletes_only_its_own_blob() {
        let mut world = World::new();
        world.insert_large(key(), A, SIZE, None, 1);
        let mut put = put();
        // Read A, record, write B ...
        for _ in 0..3 {
            let answer = match put.poll(NOW) {
                Poll::Io(request) => world.apply(&request, OpContext::put_large(2, SIZE)),
                other => panic!("{other:?}"),
            };
            put.handle(answer.completion());
        }
        // ... then a concurrent put commits C and deletes A.
        world.remove_blob(key(), A);
        world.insert_large(key(), C, SIZE, None, 3);
        let done = run(&mut world, put, NOW, OpContext::put_large(2, SIZE));
        assert_eq!(done.result, Ok(WriteOutcome::Superseded));
        let report = run(&mut world, cleanup_of(&done), NOW, OpContext::read());
        assert_eq!(report.blobs_deleted, 1);
        assert_eq!(world.row(key()).and_then(|r| r.target()), Some(C));
        assert!(world.blob(key(), C).is_some(), "the winner's blob survives");
        assert!(world.blob(key(), B).is_none(), "ours is gone");
    }

    #[test]
    fn cas_failure_with_expected_none_is_resolved_by_a_read_not_retried() {
        let mut put = at_cas(Completion::Row(HvRow::Absent), None);
        expect(&mut put, cas(None), Completion::Failed);
        assert_eq!(io(&mut put), Io::HvRead { payload: false }, "no second CAS");
    }

    #[test]
    fn cas_failure_with_expected_revision_is_resolved_by_a_read_not_retried() {
        let mut put = at_cas(row(A), Some(A));
        expect(&mut put, cas(Some(A)), Completion::Failed);
        assert_eq!(io(&mut put), Io::HvRead { payload: false }, "no second CAS");
        expect(&mut put, Io::HvRead { payload: false }, row(B));
        assert_eq!(done(&mut put).result, Ok(WriteOutcome::Committed));
    }

    #[test]
    fn refused_cas_is_not_applied_and_cleanup_deletes_the_new_blob_only() {
        let mut put = at_cas(row(A), Some(A));
        expect(&mut put, cas(Some(A)), Completion::Refused);
        let done = done(&mut put);
        assert_eq!(done.result, not_applied(Tier::Hv));
        let mut cleanup = cleanup_of(&done);
        assert_eq!(cleanup.phase(), Phase::Recorded);
        expect(&mut cleanup, Io::LtDelete(B), Completion::Done);
        expect(&mut cleanup, Io::Remove(ID), Completion::Done);
    }

    #[test]
    fn cas_conflict_is_superseded_and_cleanup_deletes_the_new_blob() {
        let mut put = at_cas(row(A), Some(A));
        expect(&mut put, cas(Some(A)), Completion::Cas(false));
        let done = done(&mut put);
        assert_eq!(done.result, Ok(WriteOutcome::Superseded));
        let mut cleanup = cleanup_of(&done);
        assert_eq!(cleanup.phase(), Phase::Lost);
        expect(&mut cleanup, Io::LtDelete(B), Completion::Done);
        expect(&mut cleanup, Io::Remove(ID), Completion::Done);
    }

    // AwaitResolve

    fn at_resolve() -> LargePut<'static> {
        let mut put = at_cas(Completion::Row(HvRow::Absent), None);
        expect(&mut put, cas(None), Completion::Failed);
        put
    }

    #[test]
    fn resolve_finding_its_own_tombstone_is_committed() {
        let mut put = at_resolve();
        expect(&mut put, Io::HvRead { payload: false }, row(B));
        let done = done(&mut put);
        assert_eq!(done.result, Ok(WriteOutcome::Committed));
        assert_eq!(phase(&done), Some(Phase::Committed));
    }

    #[test]
    fn resolve_finding_anything_else_is_unknown_with_an_unknown_cleanup() {
        for current in [
            HvRow::Absent,
            HvRow::Inline(meta(5)),
            HvRow::Tombstone(tomb(C)),
        ] {
            let mut put = at_resolve();
            expect(
                &mut put,
                Io::HvRead { payload: false },
                Completion::Row(current),
            );
            let done = done(&mut put);
            assert_eq!(done.result, unknown(Tier::Hv), "{current}");
            assert_eq!(phase(&done), Some(Phase::Unknown));
        }
    }

    #[test]
    fn resolve_failures_are_retried_then_unknown() {
        let mut put = at_resolve();
        for _ in 0..CONFIG.io_attempts {
            expect(&mut put, Io::HvRead { payload: false }, Completion::Failed);
        }
        let done = done(&mut put);
        assert_eq!(done.result, unknown(Tier::Hv));
        assert_eq!(phase(&done), Some(Phase::Unknown));
    }

    #[test]
    fn lost_cas_response_resolves_to_committed_against_the_world() {
        for mode in [CasMode::Reapply, CasMode::Skip] {
            let mut world = World::with_mode(mode);
            let mut put = put();
            let op = OpContext::put_large(2, SIZE);
            for _ in 0..4 {
                let (request, answer) = match put.poll(NOW) {
                    Poll::Io(request) => (Io::of(&request), world.apply(&request, op)),
                    other => panic!("{other:?}"),
                };
                match request {
                    Io::Cas { .. } => put.handle(Completion::Failed),
                    _ => put.handle(answer.completion()),
                }
            }
            let done = run(&mut world, put, NOW, op);
            assert_eq!(done.result, Ok(WriteOutcome::Committed), "{mode:?}");
        }
    }
}

// --- Delete ----------------------------------------------------------------------------------

mod delete {
    use super::*;

    fn delete() -> Delete<'static> {
        Delete::new(key(), ID, CONFIG)
    }

    fn at_cas() -> Delete<'static> {
        let mut delete = delete();
        expect(&mut delete, Io::DeleteNonTombstone, blocked(A));
        expect(
            &mut delete,
            Io::Record {
                id: ID,
                new: None,
                old: Some(A),
            },
            Completion::Done,
        );
        delete
    }

    const CAS: Io = Io::Cas {
        expected: Some(A),
        write: HvWrite::Delete,
    };

    #[test]
    fn applied_commits_without_log_or_cleanup() {
        let mut delete = delete();
        expect(
            &mut delete,
            Io::DeleteNonTombstone,
            Completion::Guarded(Guarded::Applied),
        );
        let done = done(&mut delete);
        assert_eq!(done.result, Ok(WriteOutcome::Committed));
        assert!(done.cleanup.is_none());
    }

    #[test]
    fn over_a_tombstone_commits_at_the_cas_and_cleanup_deletes_the_blob() {
        let mut delete = at_cas();
        expect(&mut delete, CAS, Completion::Cas(true));
        let mut cleanup = cleanup_of(&done(&mut delete));
        expect(&mut cleanup, Io::LtDelete(A), Completion::Done);
        expect(&mut cleanup, Io::Remove(ID), Completion::Done);
    }

    #[test]
    fn conflict_is_superseded_and_keeps_the_winners_blob() {
        let mut delete = at_cas();
        expect(&mut delete, CAS, Completion::Cas(false));
        let done = done(&mut delete);
        assert_eq!(done.result, Ok(WriteOutcome::Superseded));
        let mut cleanup = cleanup_of(&done);
        expect(&mut cleanup, Io::Remove(ID), Completion::Done);
    }

    #[test]
    fn failed_opening_is_not_retried_and_is_unknown_without_cleanup() {
        let mut delete = delete();
        expect(&mut delete, Io::DeleteNonTombstone, Completion::Failed);
        let done = done(&mut delete);
        assert_eq!(done.result, unknown(Tier::Hv));
        assert!(done.cleanup.is_none());
    }

    #[test]
    fn cas_failure_is_not_retried_and_is_unknown() {
        let mut delete = at_cas();
        expect(&mut delete, CAS, Completion::Failed);
        let done = done(&mut delete);
        assert_eq!(done.result, unknown(Tier::Hv));
        assert_eq!(phase(&done), Some(Phase::Unknown));
    }

    #[test]
    fn refused_opening_and_refused_cas_are_not_applied() {
        let mut delete = delete();
        expect(&mut delete, Io::DeleteNonTombstone, Completion::Refused);
        let done = done(&mut delete);
        assert_eq!(done.result, not_applied(Tier::Hv));
        assert!(done.cleanup.is_none());
        let mut delete = at_cas();
        expect(&mut delete, CAS, Completion::Refused);
        let done = super::done(&mut delete);
        assert_eq!(done.result, not_applied(Tier::Hv));
        assert_eq!(phase(&done), Some(Phase::Recorded));
    }
}

// --- Get and head ----------------------------------------------------------------------------

mod get {
    use super::*;

    fn get(range: Option<ByteRange>) -> Get<'static> {
        Get::new(key(), range, CONFIG)
    }

    const READ: Io = Io::HvRead { payload: true };

    // AwaitHvRead

    #[test]
    fn absent_is_not_found() {
        let mut get = get(None);
        expect(&mut get, READ, Completion::Row(HvRow::Absent));
        assert_eq!(done(&mut get), Ok(None));
    }

    #[test]
    fn inline_resolves_the_range_against_the_inline_size() {
        let mut get = get(Some(ByteRange::Suffix(2)));
        expect(&mut get, READ, Completion::Row(HvRow::Inline(meta(5))));
        let span = Some(Span { start: 3, end: 5 });
        assert_eq!(
            done(&mut get),
            Ok(Some(Found::Inline {
                meta: meta(5),
                span
            }))
        );
    }

    #[test]
    fn tombstone_is_followed_with_the_span_resolved_against_its_size() {
        let mut get = get(Some(ByteRange::From(90)));
        let span = Some(Span {
            start: 90,
            end: SIZE,
        });
        expect(&mut get, READ, row(A));
        expect(
            &mut get,
            Io::LtGet(A, span),
            Completion::Blob { found: true },
        );
        let found = Found::LongTerm {
            tombstone: tomb(A),
            span,
        };
        assert_eq!(done(&mut get), Ok(Some(found)));
    }

    #[test]
    fn range_not_satisfiable_reads_nothing_more() {
        for current in [HvRow::Inline(meta(5)), HvRow::Tombstone(tomb(A))] {
            let mut get = get(Some(ByteRange::From(SIZE)));
            expect(&mut get, READ, Completion::Row(current));
            let result = done(&mut get);
            assert!(
                matches!(result, Err(ReadError::Range(_))),
                "{current}: {result:?}"
            );
        }
    }

    #[test]
    fn failed_row_reads_are_retried_then_an_io_error() {
        let mut get = get(None);
        for _ in 0..CONFIG.io_attempts {
            expect(&mut get, READ, Completion::Failed);
        }
        assert_eq!(done(&mut get), Err(ReadError::Io(Tier::Hv)));
    }

    // AwaitBlob

    #[test]
    fn failed_blob_reads_are_retried_then_an_io_error() {
        let mut get = get(None);
        expect(&mut get, READ, row(A));
        for _ in 0..CONFIG.io_attempts {
            expect(&mut get, Io::LtGet(A, None), Completion::Failed);
        }
        assert_eq!(done(&mut get), Err(ReadError::Io(Tier::Lt)));
    }

    #[test]
    fn a_new_tombstone_after_a_vanished_blob_is_followed() {
        let mut get = get(None);
        expect(&mut get, READ, row(A));
        expect(
            &mut get,
            Io::LtGet(A, None),
            Completion::Blob { found: false },
        );
        expect(&mut get, READ, row(B));
        expect(
            &mut get,
            Io::LtGet(B, None),
            Completion::Blob { found: true },
        );
        let found = done(&mut get).unwrap().unwrap();
        assert!(matches!(found, Found::LongTerm { tombstone, .. } if tombstone.revision == B));
    }

    #[test]
    fn get_same_tombstone_after_vanished_blob_is_lost() {
        let mut get = get(None);
        expect(&mut get, READ, row(A));
        expect(
            &mut get,
            Io::LtGet(A, None),
            Completion::Blob { found: false },
        );
        expect(&mut get, READ, row(A));
        assert_eq!(
            done(&mut get),
            Err(ReadError::Lost(A)),
            "removed behind cairn's back"
        );
    }

    #[test]
    fn an_absent_or_inline_row_after_a_vanished_blob_is_returned() {
        let mut get = get(None);
        expect(&mut get, READ, row(A));
        expect(
            &mut get,
            Io::LtGet(A, None),
            Completion::Blob { found: false },
        );
        expect(&mut get, READ, Completion::Row(HvRow::Inline(meta(5))));
        assert!(matches!(done(&mut get), Ok(Some(Found::Inline { .. }))));
    }

    /// Counts the blob reads a get makes while every blob it follows has vanished and the row
    /// points at a fresh one each time.
    pub(super) fn blob_reads_until_unstable() -> usize {
        let mut get = get(None);
        let mut reads = 0;
        for hop in 0u128.. {
            match get.poll(NOW) {
                Poll::Io(Request::HvRead { .. }) => get.handle(row(Revision(0x100 + hop))),
                Poll::Io(Request::LtGet { .. }) => {
                    reads += 1;
                    get.handle(Completion::Blob { found: false });
                }
                Poll::Done(result) => {
                    assert_eq!(result, Err(ReadError::Unstable));
                    return reads;
                }
                other => panic!("{other:?}"),
            }
            assert!(hop < 100, "the get must give up");
        }
        unreachable!()
    }

    #[test]
    fn get_gives_up_after_max_redirect_hops_with_unstable() {
        let reads = blob_reads_until_unstable();
        assert!(
            (usize::from(MAX_REDIRECT_HOPS)..=usize::from(MAX_REDIRECT_HOPS) + 1).contains(&reads),
            "{reads} blob reads"
        );
    }

    // Head

    #[test]
    fn head_reads_metadata_only_and_heads_the_blob() {
        let mut head = Get::head(key(), CONFIG);
        expect(&mut head, Io::HvRead { payload: false }, row(A));
        expect(&mut head, Io::LtHead(A), Completion::Blob { found: true });
        assert!(matches!(
            done(&mut head),
            Ok(Some(Found::LongTerm { span: None, .. }))
        ));

        let mut head = Get::head(key(), CONFIG);
        expect(
            &mut head,
            Io::HvRead { payload: false },
            Completion::Row(HvRow::Inline(meta(5))),
        );
        assert!(matches!(
            done(&mut head),
            Ok(Some(Found::Inline { span: None, .. }))
        ));
    }

    #[test]
    fn an_expired_row_is_not_found() {
        let mut world = World::new();
        world.insert_large(key(), A, SIZE, Some(NOW), 1);
        world.advance_to(NOW);
        assert_eq!(run(&mut world, get(None), NOW, OpContext::read()), Ok(None));
    }
}

// --- Cleanup ---------------------------------------------------------------------------------

mod cleanup {
    use super::*;

    fn cleanup(phase: Phase) -> Cleanup<KeyBuf> {
        Cleanup::new(key().to_key_buf(), pending(phase, Some(B), Some(A)), CONFIG)
    }

    #[test]
    fn plan_per_phase() {
        let (old, new) = (Some(A), Some(B));
        let plan = |first, second| Plan { first, second };
        assert_eq!(Phase::Recorded.plan(old, new, None), plan(new, None));
        assert_eq!(Phase::Lost.plan(old, new, None), plan(new, None));
        assert_eq!(Phase::Committed.plan(old, new, None), plan(old, None));
        assert_eq!(Phase::Committed.plan(None, new, None), plan(None, None));
        assert_eq!(Phase::Unknown.plan(old, new, None), plan(old, new));
        assert_eq!(Phase::Unknown.plan(old, new, Some(C)), plan(old, new));
        assert_eq!(Phase::Unknown.plan(old, new, old), plan(new, None));
        assert_eq!(Phase::Unknown.plan(old, new, new), plan(old, None));
        assert_eq!(Phase::Unknown.plan(None, new, new), plan(None, None));
        assert!(Phase::Unknown.needs_read() && !Phase::Committed.needs_read());
    }

    #[test]
    fn cleanup_unknown_never_deletes_the_referenced_blob() {
        for current in [None, Some(A), Some(B), Some(C)] {
            let mut cleanup = cleanup(Phase::Unknown);
            let answer = match current {
                Some(r) => row(r),
                None => Completion::Row(HvRow::Absent),
            };
            expect(&mut cleanup, Io::HvRead { payload: false }, answer);
            let mut deleted = Vec::new();
            loop {
                match io(&mut cleanup) {
                    Io::LtDelete(r) => deleted.push(r),
                    Io::Remove(_) => break,
                    other => panic!("{other:?}"),
                }
                cleanup.handle(Completion::Done);
            }
            assert!(
                !deleted.contains(&current.unwrap_or(Revision(0))),
                "{current:?}"
            );
            let unreferenced: Vec<_> = [A, B].into_iter().filter(|r| Some(*r) != current).collect();
            assert_eq!(deleted, unreferenced, "deletes whatever is not referenced");
        }
    }

    #[test]
    fn failures_back_off_exponentially_up_to_the_cap() {
        let config = Config {
            cleanup_attempts: 16,
            ..CONFIG
        };
        let mut cleanup = Cleanup::new(key(), pending(Phase::Lost, Some(B), None), config);
        let mut now = NOW;
        let mut waits = Vec::new();
        for _ in 0..12 {
            expect(&mut cleanup, Io::LtDelete(B), Completion::Failed);
            let Poll::Wait(until) = cleanup.poll(now) else {
                panic!("a failed cleanup step backs off")
            };
            waits.push(until.as_millis() - now.as_millis());
            now = until;
            assert_eq!(io_at(&mut cleanup, now), Io::LtDelete(B));
        }
        let max = config.backoff_max.as_millis();
        let want: Vec<u64> = (0..12).map(|i| (100u64 << i).min(max)).collect();
        assert_eq!(waits, want);
    }

    #[test]
    fn gives_up_after_cleanup_attempts_as_deferred_keeping_the_entry() {
        for (phase, step, tier) in [
            (Phase::Unknown, Io::HvRead { payload: false }, Tier::Hv),
            (Phase::Lost, Io::LtDelete(B), Tier::Lt),
        ] {
            let mut cleanup = cleanup(phase);
            let mut now = NOW;
            let mut report = None;
            for attempt in 0..CONFIG.cleanup_attempts {
                assert!(report.is_none(), "gave up after only {attempt} attempts");
                assert_eq!(io_at(&mut cleanup, now), step, "attempt {attempt}");
                cleanup.handle(Completion::Failed);
                match cleanup.poll(now) {
                    Poll::Wait(until) => now = until,
                    Poll::Done(done) => report = Some(done),
                    Poll::Io(request) => panic!("retried without backing off: {request}"),
                }
            }
            let report = report.expect("gives up after the last attempt");
            assert_eq!(report.outcome, CleanupOutcome::Deferred(tier), "{phase:?}");
        }
    }

    #[test]
    fn log_remove_failures_exhausted_are_deferred_to_the_log() {
        let mut cleanup = Cleanup::new(key(), pending(Phase::Lost, None, None), CONFIG);
        let mut now = NOW;
        let report = loop {
            match cleanup.poll(now) {
                Poll::Io(Request::LogRemove { .. }) => cleanup.handle(Completion::Failed),
                Poll::Wait(until) => now = until,
                Poll::Done(report) => break report,
                Poll::Io(other) => panic!("{other}"),
            }
        };
        assert_eq!(report.outcome, CleanupOutcome::Deferred(Tier::Log));
    }
}

// --- Recovery --------------------------------------------------------------------------------

mod recovery {
    use super::*;

    fn entry(id: u128, new: Option<Revision>, old: Option<Revision>) -> (ChangeId, LoggedChange) {
        let change = LoggedChange {
            key: key().to_key_buf(),
            new,
            old,
        };
        (ChangeId(id), change)
    }

    #[test]
    fn recovery_skips_nothing_and_processes_in_id_order() {
        let mut world = World::new();
        world.insert_large(key(), A, SIZE, None, 1);
        for (id, change) in [
            entry(30, Some(C), Some(A)),
            entry(10, Some(B), Some(A)),
            entry(20, None, Some(A)),
        ] {
            world.set_entry(id, change);
        }
        let mut recovery = Recovery::new(CONFIG);
        let mut removed = Vec::new();
        let report = loop {
            let answer = match recovery.poll(NOW) {
                Poll::Io(request) => {
                    if let Request::LogRemove { id } = request {
                        removed.push(id.0);
                    }
                    world.apply(&request, OpContext::read())
                }
                Poll::Done(report) => break report,
                Poll::Wait(_) => unreachable!("healthy tiers never back off"),
            };
            recovery.handle(answer.completion());
        };
        assert_eq!(removed, [10, 20, 30]);
        assert_eq!(
            (report.entries, report.cleaned, report.complete),
            (3, 3, true)
        );
        assert_eq!(report.blobs_deleted, 2, "B and C; A is referenced");
        assert!(world.blob(key(), A).is_some());
    }

    #[test]
    fn held_entries_are_skipped() {
        let mut world = World::new();
        world.insert_large(key(), A, SIZE, None, 1);
        let (id, change) = entry(10, Some(B), Some(A));
        world.set_entry(id, change);
        world.hold(id);
        let report = run(&mut world, Recovery::new(CONFIG), NOW, OpContext::read());
        assert_eq!((report.entries, report.complete), (0, true));
        assert_eq!(world.log().count(), 1);
    }

    #[test]
    fn recovery_never_replays_a_cas() {
        let mut world = World::new();
        world.insert_large(key(), A, SIZE, None, 1);
        let (id, change) = entry(10, Some(B), Some(A));
        world.set_entry(id, change);
        let mut recovery = Recovery::new(CONFIG);
        loop {
            let answer = match recovery.poll(NOW) {
                Poll::Io(request) => {
                    assert!(
                        !matches!(
                            request,
                            Request::HvCompareAndWrite { .. }
                                | Request::HvPutNonTombstone { .. }
                                | Request::HvDeleteNonTombstone { .. }
                                | Request::LtPut { .. }
                        ),
                        "recovery only collects garbage: {request}"
                    );
                    world.apply(&request, OpContext::read())
                }
                Poll::Done(_) => break,
                Poll::Wait(_) => unreachable!(),
            };
            recovery.handle(answer.completion());
        }
        assert_eq!(world.row(key()).and_then(|r| r.target()), Some(A));
    }

    #[test]
    fn a_deferred_entry_is_counted_and_the_scan_moves_past_it() {
        let mut recovery = Recovery::new(CONFIG);
        let k = key();
        let first = LogEntry {
            id: ChangeId(10),
            change: cairn_core::Change {
                key: k,
                new: Some(B),
                old: None,
            },
        };
        expect(
            &mut recovery,
            Io::Scan(None),
            Completion::Entry(Some(first)),
        );
        let mut now = NOW;
        for _ in 0..CONFIG.cleanup_attempts {
            assert_eq!(io_at(&mut recovery, now), Io::HvRead { payload: false });
            recovery.handle(Completion::Failed);
            if let Poll::Wait(until) = recovery.poll(now) {
                now = until;
            }
        }
        assert_eq!(io_at(&mut recovery, now), Io::Scan(Some(ChangeId(10))));
        // The tier still failing, the next entry gets one attempt, not a backoff of its own.
        let second = LogEntry {
            id: ChangeId(20),
            ..first
        };
        recovery.handle(Completion::Entry(Some(second)));
        assert_eq!(io_at(&mut recovery, now), Io::HvRead { payload: false });
        recovery.handle(Completion::Failed);
        assert_eq!(io_at(&mut recovery, now), Io::Scan(Some(ChangeId(20))));
        recovery.handle(Completion::Entry(None));
        let Poll::Done(report) = recovery.poll(now) else {
            panic!("done")
        };
        assert_eq!((report.entries, report.deferred, report.cleaned), (2, 2, 0));
        assert!(report.complete);
    }

    #[test]
    fn scan_failures_are_retried_then_reported_incomplete() {
        let mut recovery = Recovery::new(CONFIG);
        for _ in 0..CONFIG.io_attempts {
            expect(&mut recovery, Io::Scan(None), Completion::Failed);
        }
        let report = done(&mut recovery);
        assert!(!report.complete);
    }

    #[test]
    #[should_panic(expected = "log scan went backwards")]
    fn a_scan_that_goes_backwards_is_a_driver_bug() {
        let mut recovery = Recovery::new(CONFIG);
        let k = key();
        let entry = |id| {
            Completion::Entry(Some(LogEntry {
                id: ChangeId(id),
                change: cairn_core::Change {
                    key: k,
                    new: None,
                    old: None,
                },
            }))
        };
        expect(&mut recovery, Io::Scan(None), entry(10));
        expect(
            &mut recovery,
            Io::HvRead { payload: false },
            Completion::Row(HvRow::Absent),
        );
        expect(&mut recovery, Io::Remove(ChangeId(10)), Completion::Done);
        expect(&mut recovery, Io::Scan(Some(ChangeId(10))), entry(5));
    }
}

// --- Known bugs in the core ------------------------------------------------------------------
//
// Each test below pins a property DESIGN.md promises that an earlier version of the core broke
// (a retried guarded write or inline compare-and-write taking effect twice, a put lost over an
// expired tombstone, a get giving up one hop early).

mod known_core_bugs {
    use super::*;

    /// One round against the world; `lose`: the world applies the request but the machine is
    /// told it failed.
    fn step<M: Machine>(world: &mut World, machine: &mut M, op: OpContext, now: Instant, lose: bool)
    where
        M::Output: Debug,
    {
        let answer = match machine.poll(now) {
            Poll::Io(request) => world.apply(&request, op),
            other => panic!("expected a request, got {other:?}"),
        };
        match lose {
            false => machine.handle(answer.completion()),
            true => machine.handle(Completion::Failed),
        }
    }

    /// The value tag a reader sees at `NOW`, if the row is inline.
    fn visible(world: &World) -> Option<u64> {
        world
            .row(key())
            .filter(|row| row.is_live(NOW))
            .and_then(|row| row.value())
    }

    fn small_put(value: u64, id: u128) -> (SmallPut<'static>, OpContext) {
        let meta = ObjectMeta {
            size: value,
            ..meta(5)
        };
        (
            SmallPut::new(key(), meta, ChangeId(id), CONFIG),
            OpContext::put(value),
        )
    }

    /// Register linearizability (invariant 3) forbids a state from coming back after a
    /// completed write replaced it, once a reader has seen it: the retried operation's single
    /// linearization point would have to lie both before the first read and after the second.
    fn assert_not_resurrected(world: &World, seen_first: &str) {
        assert_eq!(
            visible(world),
            Some(2),
            "readers saw {seen_first}, then the completed put of 2; \
             the retry brought the first state back"
        );
    }

    /// `put_non_tombstone` is retried after `Completion::Failed`, although a failed request may
    /// have been applied and the row may have changed since.
    #[test]
    fn a_retried_put_non_tombstone_does_not_resurrect_a_replaced_value() {
        let mut world = World::new();
        let (mut first, op1) = small_put(1, 1);
        step(&mut world, &mut first, op1, NOW, true);
        assert_eq!(visible(&world), Some(1), "a reader sees 1");
        let (second, op2) = small_put(2, 2);
        assert_eq!(
            run(&mut world, second, NOW, op2).result,
            Ok(WriteOutcome::Committed)
        );
        assert_eq!(visible(&world), Some(2), "a reader sees 2");
        let done = run(&mut world, first, NOW, op1);
        assert_eq!(done.result.map_err(|e| e.applied), Err(Applied::Unknown));
        assert_not_resurrected(&world, "value 1");
    }

    /// The same for `delete_non_tombstone`: the retry deletes a later, completed write.
    #[test]
    fn a_retried_delete_non_tombstone_does_not_erase_a_later_write() {
        let mut world = World::new();
        world.insert_inline(key(), meta(5), 0);
        let mut delete = Delete::new(key(), ChangeId(1), CONFIG);
        step(&mut world, &mut delete, OpContext::read(), NOW, true);
        assert_eq!(visible(&world), None, "a reader sees the key deleted");
        let (put, op2) = small_put(2, 2);
        assert_eq!(
            run(&mut world, put, NOW, op2).result,
            Ok(WriteOutcome::Committed)
        );
        let done = run(&mut world, delete, NOW, OpContext::read());
        assert_eq!(done.result.map_err(|e| e.applied), Err(Applied::Unknown));
        assert_not_resurrected(&world, "the key deleted");
    }

    /// `compare_and_write(Some(t), inline)` is retried after a failure. On a row without a live
    /// tombstone every backend must answer true (`cas_verdict`: already applied), and a backend
    /// that re-applies (legal, DESIGN.md) writes the old value over a later completed write.
    /// The comment in commit.rs ("retrying is safe only when `expected` names a revision") holds
    /// for tombstone writes only.
    #[test]
    fn a_retried_inline_cas_does_not_resurrect_a_replaced_value_under_reapply() {
        let mut world = World::with_mode(CasMode::Reapply);
        world.insert_large(key(), A, SIZE, None, 0);
        let (mut first, op1) = small_put(1, 1);
        step(&mut world, &mut first, op1, NOW, false); // blocked by A
        step(&mut world, &mut first, op1, NOW, false); // recorded
        step(&mut world, &mut first, op1, NOW, true); // CAS applied, response lost
        assert_eq!(visible(&world), Some(1), "a reader sees 1");
        let (second, op2) = small_put(2, 2);
        assert_eq!(
            run(&mut world, second, NOW, op2).result,
            Ok(WriteOutcome::Committed)
        );
        assert_eq!(visible(&world), Some(2), "a reader sees 2");
        let done = run(&mut world, first, NOW, op1);
        assert_eq!(done.result.map_err(|e| e.applied), Err(Applied::Unknown));
        assert_not_resurrected(&world, "value 1");
    }

    /// A small put meets a tombstone that expires before its compare-and-write. The CAS answers
    /// true ("already applied": no live tombstone), and a backend that skips on an idempotent
    /// match (legal, DESIGN.md) writes nothing: the put reports committed, the key reads absent.
    #[test]
    fn a_small_put_over_a_tombstone_expiring_before_its_cas_is_not_lost_under_skip() {
        let later = Instant::from_millis(NOW.as_millis() + 10);
        let mut world = World::with_mode(CasMode::Skip);
        world.insert_large(key(), A, SIZE, Some(later), 0);
        let (mut put, op) = small_put(1, 1);
        step(&mut world, &mut put, op, NOW, false); // blocked by the live tombstone
        step(&mut world, &mut put, op, NOW, false); // recorded
        world.advance_to(later);
        step(&mut world, &mut put, op, later, false); // CAS after the tombstone expired
        let done = match put.poll(later) {
            Poll::Done(done) => done,
            other => panic!("{other:?}"),
        };
        assert_eq!(done.result, Ok(WriteOutcome::Committed));
        let read = world.row(key()).filter(|row| row.is_live(later));
        assert_eq!(
            read.and_then(|row| row.value()),
            Some(1),
            "the committed put is readable"
        );
    }

    /// `limits::MAX_REDIRECT_HOPS` says a get *follows* a fresh tombstone after a vanished blob up
    /// to that many times, and `ReadError::Unstable` says the key changed *more than* that many
    /// times: the first read and 8 hops, and the ninth blob to vanish ends the get
    /// (`hops >= MAX_REDIRECT_HOPS` in get.rs).
    #[test]
    fn get_follows_max_redirect_hops_fresh_tombstones_as_documented() {
        let reads = super::get::blob_reads_until_unstable();
        assert_eq!(
            reads,
            usize::from(MAX_REDIRECT_HOPS) + 1,
            "the first read plus 8 hops"
        );
    }
}
