//! The one driver loop, written once for every machine: poll, perform the request against the
//! backends, feed the completion back, until the machine is done.

use crate::backend::{
    BackendError, ChangeLog, HvBackend, InFlightEntries, LogRecord, LtBackend, Row, Staged,
    Staging, SyncHvBackend, Write,
};
use crate::runtime::Runtime;
use crate::{Body, Clock, Metadata};
use bytes::Bytes;
use cairn_core::{
    BlobId, Change, ChangeId, Completion, Guarded, HvWrite, Instant, LogEntry, Machine, ObjectMeta,
    Poll, Request, Tier,
};
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Mutex;

/// What one operation hands the backends and gets back from them, beside the core's view.
#[derive(Default)]
pub(crate) struct OpIo {
    /// The last high-volume row read (get and head return it).
    pub row: Option<Row>,
    /// The last backend failure, reported to the caller if the operation fails.
    pub error: Option<BackendError>,
    /// Everything else, by kind of operation. One field, so that an operation needing none of
    /// it (a get served inline, a delete) sets and drops one tag, not five.
    pub carry: Carry,
}

/// What a put hands the backends, or what a long-term read got back.
#[derive(Default)]
pub(crate) enum Carry {
    #[default]
    Nothing,
    /// A small put's metadata and payload.
    Small { meta: Metadata, payload: Bytes },
    /// A large put's metadata; its body, until the blob write (or the staging) takes it; and
    /// its blob, staged while the change-log record committed (or the staging's failure),
    /// until the core asks for the blob. Dropped unpublished, a staged blob is discarded.
    Large {
        meta: Metadata,
        body: Option<Body>,
        staged: Option<Result<Box<dyn Staged>, BackendError>>,
    },
    /// The last blob a read opened: its metadata, and its body unless it was a head. Boxed:
    /// long-term reads are the rarer ones.
    Blob(Box<(Metadata, Option<Body>)>),
}

impl OpIo {
    /// A small put's: its metadata and payload.
    pub fn small_put(meta: Metadata, payload: Bytes) -> OpIo {
        OpIo::carrying(Carry::Small { meta, payload })
    }

    /// A large put's: its metadata and body.
    pub fn large_put(meta: Metadata, body: Body) -> OpIo {
        OpIo::carrying(Carry::Large {
            meta,
            body: Some(body),
            staged: None,
        })
    }

    fn carrying(carry: Carry) -> OpIo {
        OpIo {
            row: None,
            error: None,
            carry,
        }
    }

    /// Whether this is a put's: its input must outlive every request of the put.
    fn carries_a_put(&self) -> bool {
        matches!(self.carry, Carry::Small { .. } | Carry::Large { .. })
    }

    /// The blob the last long-term read opened, taken.
    pub fn take_blob(&mut self) -> Option<(Metadata, Option<Body>)> {
        match std::mem::take(&mut self.carry) {
            Carry::Blob(blob) => Some(*blob),
            _ => None,
        }
    }
}

/// An answer owned by the driver; [`Answer::completion`] lends it to the machine.
enum Answer {
    Plain(Completion<'static>),
    Entry(Option<Box<LogRecord>>),
}

impl Answer {
    fn completion(&self) -> Completion<'_> {
        match self {
            Answer::Plain(c) => *c,
            Answer::Entry(e) => Completion::Entry(e.as_ref().map(|r| LogEntry {
                id: r.id,
                change: Change {
                    key: &r.key,
                    new: r.new,
                    old: r.old,
                },
            })),
        }
    }
}

/// Where [`Driver::serve_now`] stopped.
enum Step<O> {
    Done(O),
    Wait(Instant),
    /// The machine's request needs an async backend call.
    Await,
}

/// The loop's reading of the clock; see [`Driver::drive`] for when it is read again.
struct Clocked {
    now: Instant,
    /// After waiting until `t`, `now` is at least `t`.
    floor: Instant,
}

impl Clocked {
    fn new(now: Instant) -> Clocked {
        Clocked {
            now,
            floor: Instant::ZERO,
        }
    }

    /// After a request; `slow` if it suspended or went to a slow tier.
    #[inline]
    fn performed(&mut self, slow: bool, clock: &dyn Clock) {
        if slow {
            self.now = clock.now().max(self.floor);
        }
    }

    fn waited(&mut self, until: Instant, clock: &dyn Clock) {
        self.floor = until;
        self.now = clock.now().max(until);
    }
}

/// The backends and services one store drives machines against.
pub(crate) struct Driver<H, L, C, R> {
    pub hv: H,
    pub lt: L,
    pub log: C,
    pub runtime: R,
    pub clock: Box<dyn Clock>,
    /// Change-log entries owned by operations in flight in this process; recovery skips them.
    pub held: Held,
}

/// The change-log entries this store's operations are using. They are marked in the registry
/// that recovery consults, which every store on the same log shares (see
/// [`ChangeLog::in_flight`]), and remembered here too, with the change each records (what an
/// operation dropped half way is cleaned up by): a store that closes while it still holds
/// some leaves them to recovery, as a process that died would. (Only entries whose release never
/// ran get there — a cleanup task that panicked, a release that found no thread, a runtime shut
/// down under it — and without the wait for the tier to settle that a release makes.)
pub(crate) struct Held {
    registry: InFlightEntries,
    mine: Mutex<HashMap<ChangeId, LogRecord>>,
}

impl Held {
    /// Marks in `log`'s shared registry if it has one, else in a registry of this store's own.
    pub fn new(log: &impl ChangeLog) -> Held {
        Held {
            registry: log.in_flight().cloned().unwrap_or_default(),
            mine: Mutex::default(),
        }
    }

    fn hold(&self, id: ChangeId, change: Change<'_>) {
        let record = LogRecord {
            id,
            key: change.key.to_key_buf(),
            new: change.new,
            old: change.old,
        };
        crate::memory_lock(&self.mine).insert(id, record);
        self.registry.hold(id);
    }

    /// The change `id` records, if an operation of this store holds it.
    pub fn change(&self, id: ChangeId) -> Option<LogRecord> {
        crate::memory_lock(&self.mine).get(&id).cloned()
    }

    /// Whether an operation under way, of this store or another on the same log, uses `id`.
    pub fn holds(&self, id: ChangeId) -> bool {
        self.registry.holds(id)
    }

    fn release(&self, id: ChangeId) {
        self.registry.release(id);
        crate::memory_lock(&self.mine).remove(&id);
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mine = self.mine.get_mut().unwrap_or_else(|e| e.into_inner());
        for (id, _) in mine.drain() {
            self.registry.release(id);
        }
    }
}

impl<H: HvBackend, L: LtBackend, C: ChangeLog, R: Runtime> Driver<H, L, C, R> {
    /// Runs `machine` to completion. `now` is the clock reading the operation started with (a
    /// put stamps its metadata with the same instant).
    ///
    /// # When the clock is read
    ///
    /// Reading the clock costs more than an in-memory request, so the loop does not read it
    /// before every poll. It reads it again only when time may have moved on noticeably since
    /// the last reading:
    /// - after a [`Poll::Wait`]; and then `now` is never earlier than the instant waited for,
    ///   even under a clock that only moves when a test moves it;
    /// - after a request that suspended: its backend waited for I/O, a lock or a timer;
    /// - after every long-term or change-log request, suspended or not: those move payloads or
    ///   persist durably, which takes time even in a backend that never suspends.
    ///
    /// So the only requests that leave `now` as it was are high-volume requests served on the
    /// spot (an in-memory or embedded tier): the machine's next step sees the instant its
    /// previous step saw, older by the time those calls took and no more.
    pub async fn drive<M: Machine>(
        &self,
        machine: &mut M,
        io: &mut OpIo,
        now: Instant,
    ) -> M::Output {
        let mut clocked = Clocked::new(now);
        let first = self.serve_now(machine, io, &mut clocked);
        self.drive_from(machine, io, clocked, first).await
    }

    /// [`drive`](Driver::drive) on the calling thread. As long as every request is served on
    /// the spot (see [`HvBackend::as_sync`]) no future is built at all; from the first request
    /// that must be awaited, or the first wait, the same loop goes on under
    /// [`block_on`](crate::runtime::block_on).
    pub fn drive_blocking<M: Machine>(
        &self,
        machine: &mut M,
        io: &mut OpIo,
        now: Instant,
    ) -> M::Output {
        let mut clocked = Clocked::new(now);
        match self.serve_now(machine, io, &mut clocked) {
            Step::Done(output) => output,
            step => crate::runtime::block_on(pin!(self.drive_from(machine, io, clocked, step))),
        }
    }

    /// The loop, from where [`serve_now`](Driver::serve_now) stopped with `step`: sleep or
    /// await one request, then serve what can be served on the spot, and so on.
    async fn drive_from<M: Machine>(
        &self,
        machine: &mut M,
        io: &mut OpIo,
        mut clocked: Clocked,
        mut step: Step<M::Output>,
    ) -> M::Output {
        loop {
            match step {
                Step::Done(output) => return output,
                Step::Wait(until) => {
                    let millis = until.as_millis().saturating_sub(clocked.now.as_millis());
                    self.runtime
                        .sleep(std::time::Duration::from_millis(millis))
                        .await;
                    clocked.waited(until, &*self.clock);
                }
                Step::Await => {
                    // Polling again before answering returns the same request (the machine
                    // contract), the one `serve_now` could not serve.
                    let Poll::Io(request) = machine.poll(clocked.now) else {
                        unreachable!("a machine polled again asks for the same request")
                    };
                    let mut slow = request.tier() != Tier::Hv;
                    let answer = {
                        let mut perform = pin!(self.perform(request, io));
                        poll_fn(|cx| {
                            let poll = perform.as_mut().poll(cx);
                            slow |= poll.is_pending();
                            poll
                        })
                        .await
                    };
                    clocked.performed(slow, &*self.clock);
                    machine.handle(answer.completion());
                }
            }
            step = self.serve_now(machine, io, &mut clocked);
        }
    }

    /// Polls `machine` and feeds it every answer a synchronous backend gives on the spot, until
    /// it is done, waits, or asks for a request that must be awaited.
    #[inline]
    fn serve_now<M: Machine>(
        &self,
        machine: &mut M,
        io: &mut OpIo,
        clocked: &mut Clocked,
    ) -> Step<M::Output> {
        loop {
            let request = match machine.poll(clocked.now) {
                Poll::Done(output) => return Step::Done(output),
                Poll::Wait(until) => return Step::Wait(until),
                Poll::Io(request) => request,
            };
            // Served on the spot by a high-volume tier: `now` stays as it was.
            let completion = match (self.hv.as_sync(), request) {
                (Some(hv), request) if request.tier() == Tier::Hv => serve_hv(hv, request, io),
                (None, Request::HvRead { key, payload, now }) => {
                    match self.hv.read_now(key, payload, now) {
                        Some(read) => row(read, io),
                        None => return Step::Await,
                    }
                }
                _ => return Step::Await,
            };
            machine.handle(completion);
        }
    }

    /// Performs any request by awaiting its backend.
    async fn perform(&self, request: Request<'_>, io: &mut OpIo) -> Answer {
        let result: Result<Answer, BackendError> = match request {
            Request::HvRead { key, payload, now } => {
                return Answer::Plain(row(self.hv.read(key, payload, now).await, io));
            }
            Request::HvPutNonTombstone { key, meta, now } => {
                let (m, payload) = inline(io, meta);
                let done = self.hv.put_non_tombstone(key, m, payload, now).await;
                return Answer::Plain(guarded(done, io));
            }
            Request::HvDeleteNonTombstone { key, now } => {
                let done = self.hv.delete_non_tombstone(key, now).await;
                return Answer::Plain(guarded(done, io));
            }
            Request::HvCompareAndWrite {
                key,
                expected,
                write,
                now,
            } => {
                let write = to_write(write, io);
                let done = self.hv.compare_and_write(key, expected, write, now).await;
                return Answer::Plain(cas(done, io));
            }
            Request::LtPut { blob, .. } => {
                let Carry::Large { meta, body, staged } = &mut io.carry else {
                    unreachable!("only a large put writes a blob")
                };
                let written = match staged.take() {
                    // Written while the record committed: only its publication is left.
                    Some(Ok(staged)) if staged.revision() == blob.revision => {
                        staged.publish().await
                    }
                    // A backend's staged blob that claims another revision: never published
                    // (dropped here, discarded), and the blob write fails.
                    Some(Ok(staged)) => Err(BackendError::new(format!(
                        "the long-term tier staged revision {} for blob {blob}",
                        staged.revision()
                    ))),
                    Some(Err(e)) => Err(e),
                    None => {
                        let body = body
                            .take()
                            .expect("the core writes a large put's blob once");
                        self.lt.put(blob, meta, body).await
                    }
                };
                written.map(|size| Answer::Plain(Completion::BlobWritten { size }))
            }
            Request::LtGet { blob, span } => self.lt.get(blob, span).await.map(|found| {
                let hit = found.is_some();
                debug_assert!(!io.carries_a_put(), "only a read opens a blob");
                io.carry = found.map_or(Carry::Nothing, |(meta, body)| {
                    Carry::Blob(Box::new((meta, Some(body))))
                });
                Answer::Plain(Completion::Blob { found: hit })
            }),
            Request::LtHead { blob } => self.lt.head(blob).await.map(|found| {
                let hit = found.is_some();
                debug_assert!(!io.carries_a_put(), "only a read opens a blob");
                io.carry = found.map_or(Carry::Nothing, |meta| Carry::Blob(Box::new((meta, None))));
                Answer::Plain(Completion::Blob { found: hit })
            }),
            Request::LtDelete { blob } => self
                .lt
                .delete(blob)
                .await
                .map(|()| Answer::Plain(Completion::Done)),
            Request::LogRecord { id, change } => {
                // Held before it can be scanned, so recovery never reclaims a live operation's entry.
                self.held.hold(id, change);
                let record = self.log.record(id, change);
                let large = match (change.new, &mut io.carry) {
                    (Some(revision), Carry::Large { meta, body, staged }) => {
                        body.take().map(|b| (revision, &*meta, b, body, staged))
                    }
                    _ => None,
                };
                let recorded = match large {
                    // A large put: its blob is staged (written where nothing sees it) while the
                    // record commits, and published only when the core asks for it, after the
                    // record is durable. The record is polled first, so its commit is under
                    // way before the blob's bytes go out. The body is consumed even if the
                    // record fails (a retried record reuses the staged blob; a record that
                    // fails for good drops it).
                    Some((revision, meta, taken, body, staged)) => {
                        let blob = BlobId {
                            key: change.key,
                            revision,
                        };
                        let stage = self.lt.stage(blob, meta, taken);
                        let (recorded, staging) = futures_lite::future::zip(record, stage).await;
                        match staging {
                            Staging::Staged(s) => *staged = Some(Ok(s)),
                            Staging::Failed(e) => *staged = Some(Err(e)),
                            Staging::Unsupported(taken) => *body = Some(taken),
                        }
                        recorded
                    }
                    None => record.await,
                };
                recorded.map(|()| Answer::Plain(Completion::Done))
            }
            Request::LogRemove { id } => self
                .log
                .remove(id)
                .await
                .map(|()| Answer::Plain(Completion::Done)),
            Request::LogScan { after } => self
                .scan_reclaimable(after)
                .await
                .map(|entry| Answer::Entry(entry.map(Box::new))),
        };
        result.unwrap_or_else(|e| Answer::Plain(failed(e, io)))
    }

    /// The next entry after `after` that no operation in this process holds.
    async fn scan_reclaimable(
        &self,
        mut after: Option<cairn_core::ChangeId>,
    ) -> Result<Option<LogRecord>, BackendError> {
        loop {
            match self.log.scan(after).await? {
                Some(record) if self.held.holds(record.id) => after = Some(record.id),
                other => return Ok(other),
            }
        }
    }

    /// Releases an entry once its cleanup is over (finished, or deferred to recovery).
    pub fn release(&self, id: ChangeId) {
        self.held.release(id);
    }

    /// `now` as the driver's clock reads it.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }
}

/// A small put's metadata and payload, as the driver holds them.
fn inline(io: &OpIo, core: ObjectMeta) -> (&Metadata, &Bytes) {
    let Carry::Small { meta, payload } = &io.carry else {
        unreachable!("only a small put writes an inline row")
    };
    debug_assert_eq!(
        meta.core(),
        core,
        "the core writes the metadata the driver holds"
    );
    (meta, payload)
}

/// A compare-and-write's row, from the core's request and what the driver holds.
fn to_write(write: HvWrite, io: &OpIo) -> Write<'_> {
    match write {
        HvWrite::Tombstone(t) => Write::Tombstone(t),
        HvWrite::Inline(core) => {
            let (meta, payload) = inline(io, core);
            Write::Inline { meta, payload }
        }
        HvWrite::Delete => Write::Delete,
    }
}

/// Serves a high-volume request with a plain call to a synchronous tier. Always inlined into
/// the step loop, where the tier's concrete type is known, so the call is direct.
#[inline(always)]
fn serve_hv(hv: &dyn SyncHvBackend, request: Request<'_>, io: &mut OpIo) -> Completion<'static> {
    match request {
        Request::HvRead { key, payload, now } => {
            match hv.read_into(key, payload, now, &mut io.row) {
                Ok(view) => Completion::Row(view),
                Err(e) => failed(e, io),
            }
        }
        Request::HvPutNonTombstone { key, meta, now } => {
            let (m, payload) = inline(io, meta);
            guarded(hv.put_non_tombstone(key, m, payload, now), io)
        }
        Request::HvDeleteNonTombstone { key, now } => {
            guarded(hv.delete_non_tombstone(key, now), io)
        }
        Request::HvCompareAndWrite {
            key,
            expected,
            write,
            now,
        } => cas(
            hv.compare_and_write(key, expected, to_write(write, io), now),
            io,
        ),
        other => unreachable!("not a high-volume request: {other}"),
    }
}

/// A failed call: the error is kept for the caller, the machine sees `Failed` (or `Refused`).
#[cold]
fn failed(e: BackendError, io: &mut OpIo) -> Completion<'static> {
    let completion = if e.is_refused() {
        Completion::Refused
    } else {
        Completion::Failed
    };
    io.error = Some(e);
    completion
}

/// A row read: the driver keeps the row, the machine sees its core view.
#[inline(always)]
fn row(result: Result<Row, BackendError>, io: &mut OpIo) -> Completion<'static> {
    match result {
        Ok(row) => {
            let core = row.core();
            io.row = Some(row);
            Completion::Row(core)
        }
        Err(e) => failed(e, io),
    }
}

#[inline]
fn guarded(result: Result<Guarded, BackendError>, io: &mut OpIo) -> Completion<'static> {
    match result {
        Ok(g) => Completion::Guarded(g),
        Err(e) => failed(e, io),
    }
}

#[inline]
fn cas(result: Result<bool, BackendError>, io: &mut OpIo) -> Completion<'static> {
    match result {
        Ok(ok) => Completion::Cas(ok),
        Err(e) => failed(e, io),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{Fault, Faults, Faulty, Gate, Op};
    use crate::memory::{MemoryHv, MemoryLog, MemoryLt};
    use crate::runtime::block_on;
    use crate::ManualClock;
    use cairn_core::{BlobId, Duration, Key, Revision};
    use std::sync::Arc;

    enum Step {
        Hv,
        Lt,
        Log,
        /// Wait this many milliseconds past `now`.
        Wait(u64),
    }

    /// Asks for `steps` in turn and notes the `now` each step is first polled with (a driver may
    /// poll again before answering; the machine contract makes that the same request).
    struct Script {
        steps: Vec<Step>,
        next: usize,
        polled: Option<usize>,
        seen: Vec<u64>,
    }

    impl Machine for Script {
        type Output = Vec<u64>;
        fn poll(&mut self, now: Instant) -> Poll<'_, Vec<u64>> {
            if self.polled != Some(self.next) {
                self.polled = Some(self.next);
                self.seen.push(now.as_millis());
            }
            let key = Key::new(b"k").expect("valid");
            let blob = BlobId {
                key,
                revision: Revision(1),
            };
            match self.steps.get(self.next) {
                None => Poll::Done(std::mem::take(&mut self.seen)),
                Some(Step::Hv) => Poll::Io(Request::HvDeleteNonTombstone { key, now }),
                Some(Step::Lt) => Poll::Io(Request::LtDelete { blob }),
                Some(Step::Log) => Poll::Io(Request::LogRemove { id: ChangeId(1) }),
                Some(Step::Wait(ms)) => {
                    self.next += 1;
                    Poll::Wait(now + Duration::from_millis(*ms))
                }
            }
        }
        fn handle(&mut self, _: Completion<'_>) {
            self.next += 1;
        }
    }

    #[test]
    fn the_clock_is_read_again_only_after_waits_suspensions_and_slow_tiers() {
        let clock = Arc::new(ManualClock::new(0));
        let faults = Faults::new();
        let tick = |c: &Arc<ManualClock>| {
            let c = c.clone();
            Fault::Run(Arc::new(move || c.advance(Duration::from_secs(1))))
        };
        // The first high-volume call is served on the spot; the second suspends.
        faults.inject(Op::HvDelete, tick(&clock));
        let gate = Gate::new();
        faults.inject(Op::HvDelete, Fault::Pause(gate.clone()));
        faults.inject(Op::LtDelete, tick(&clock));
        faults.inject(Op::LogRemove, tick(&clock));
        let log = Faulty::new(MemoryLog::new(), faults.clone());
        let driver = Driver {
            hv: Faulty::new(MemoryHv::new(), faults.clone()),
            lt: Faulty::new(MemoryLt::new(), faults.clone()),
            held: Held::new(&log),
            log,
            runtime: NoSleep,
            clock: Box::new(clock.clone()),
        };
        let mut script = Script {
            steps: vec![Step::Hv, Step::Hv, Step::Lt, Step::Log, Step::Wait(10)],
            next: 0,
            polled: None,
            seen: Vec::new(),
        };
        let mut io = OpIo::default();
        let mut drive = pin!(driver.drive(&mut script, &mut io, Instant::ZERO));
        // Polled by hand, so that the second high-volume call surely suspends: it waits at the
        // gate while time moves on, and only then is let through.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(drive.as_mut().poll(&mut cx).is_pending());
        assert!(gate.is_reached());
        clock.advance(Duration::from_secs(1));
        gate.release();
        let seen = block_on(drive);
        assert_eq!(
            seen,
            [
                0,     // the start
                0,     // after a high-volume call served on the spot: not read again
                2_000, // after one that suspended
                3_000, // after a long-term call
                4_000, // after a change-log call
                4_010, // after a wait: at least the instant waited for
            ]
        );
    }

    /// A runtime whose sleeps end at once: the clock, not the thread, says when a wait is over.
    struct NoSleep;

    impl Runtime for NoSleep {
        fn spawn(&self, mut task: crate::Task) {
            block_on(task.as_mut());
        }
        fn sleep(&self, _: std::time::Duration) -> crate::Task {
            Box::pin(std::future::ready(()))
        }
    }

    #[test]
    fn the_blocking_loop_hands_over_to_the_async_one_and_back_with_the_same_clock_rules() {
        let clock = Arc::new(ManualClock::new(0));
        let faults = Faults::new();
        let c = clock.clone();
        faults.inject(
            Op::LtDelete,
            Fault::Run(Arc::new(move || c.advance(Duration::from_secs(1)))),
        );
        let log = Faulty::new(MemoryLog::new(), faults.clone());
        let driver = Driver {
            // Synchronous: served on the spot, no future.
            hv: MemoryHv::new(),
            // Wrapped: every call is awaited.
            lt: Faulty::new(MemoryLt::new(), faults.clone()),
            held: Held::new(&log),
            log,
            runtime: NoSleep,
            clock: Box::new(clock.clone()),
        };
        assert!(driver.hv.as_sync().is_some());
        let mut script = Script {
            steps: vec![Step::Hv, Step::Hv, Step::Wait(10), Step::Lt, Step::Hv],
            next: 0,
            polled: None,
            seen: Vec::new(),
        };
        let seen = driver.drive_blocking(&mut script, &mut OpIo::default(), Instant::ZERO);
        assert_eq!(
            seen,
            [
                0,     // the start
                0,     // after a request served on the spot
                0,     // after another: then the machine waits
                10,    // after the wait, in the async loop
                1_000, // after an awaited long-term call
                1_000, // after a high-volume call served on the spot again
            ]
        );
    }
}
