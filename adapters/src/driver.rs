//! The one driver loop, written once for every machine: poll, perform the request against the
//! backends, feed the completion back, until the machine is done.

use crate::backend::{BackendError, ChangeLog, HvBackend, LogRecord, LtBackend, Row, Write};
use crate::runtime::Runtime;
use crate::{Body, Clock, Metadata};
use bytes::Bytes;
use cairn_core::{
    Change, ChangeId, Completion, Duration, HvWrite, Instant, LogEntry, Machine, Poll, Request,
};
use std::collections::HashSet;
use std::sync::Mutex;

/// What one operation hands the backends and gets back from them, beside the core's view.
#[derive(Default)]
pub(crate) struct OpIo {
    /// A put's metadata (for inline rows and blobs).
    pub meta: Option<Metadata>,
    /// A small put's payload.
    pub payload: Option<Bytes>,
    /// A large put's body, taken by the blob write.
    pub body: Option<Body>,
    /// The last high-volume row read (get and head return it).
    pub row: Option<Row>,
    /// The last blob opened: its metadata, and its body unless it was a head.
    pub blob: Option<(Metadata, Option<Body>)>,
    /// The last backend failure, reported to the caller if the operation fails.
    pub error: Option<BackendError>,
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

/// The backends and services one store drives machines against.
pub(crate) struct Driver<H, L, C, R> {
    pub hv: H,
    pub lt: L,
    pub log: C,
    pub runtime: R,
    pub clock: Box<dyn Clock>,
    /// Change-log entries owned by operations in flight in this process; recovery skips them.
    pub held: Mutex<HashSet<ChangeId>>,
}

impl<H: HvBackend, L: LtBackend, C: ChangeLog, R: Runtime> Driver<H, L, C, R> {
    /// Runs `machine` to completion.
    pub async fn drive<M: Machine + Send>(&self, machine: &mut M, io: &mut OpIo) -> M::Output {
        // After waiting until `t`, it is at least `t`, even under a clock that only moves when a
        // test moves it.
        let mut floor = Instant::ZERO;
        loop {
            let now = self.clock.now().max(floor);
            let answer = match machine.poll(now) {
                Poll::Done(output) => return output,
                Poll::Wait(until) => {
                    let millis = until.as_millis().saturating_sub(now.as_millis());
                    self.runtime
                        .sleep(std::time::Duration::from_millis(millis))
                        .await;
                    floor = until;
                    continue;
                }
                Poll::Io(request) => self.perform(request, io).await,
            };
            machine.handle(answer.completion());
        }
    }

    async fn perform(&self, request: Request<'_>, io: &mut OpIo) -> Answer {
        let plain = |c| Ok(Answer::Plain(c));
        let result: Result<Answer, BackendError> = match request {
            Request::HvRead { key, payload, now } => match self.hv.read(key, payload, now).await {
                Ok(row) => {
                    let core = row.core();
                    io.row = Some(row);
                    plain(Completion::Row(core))
                }
                Err(e) => Err(e),
            },
            Request::HvPutNonTombstone { key, meta, now } => {
                let (m, payload) = inline(io);
                debug_assert_eq!(
                    m.core(),
                    meta,
                    "the core writes the metadata the driver holds"
                );
                self.hv
                    .put_non_tombstone(key, m, payload, now)
                    .await
                    .map(|g| Answer::Plain(Completion::Guarded(g)))
            }
            Request::HvDeleteNonTombstone { key, now } => self
                .hv
                .delete_non_tombstone(key, now)
                .await
                .map(|g| Answer::Plain(Completion::Guarded(g))),
            Request::HvCompareAndWrite {
                key,
                expected,
                write,
                now,
            } => {
                let write = match write {
                    HvWrite::Tombstone(t) => Write::Tombstone(t),
                    HvWrite::Inline(_) => {
                        let (meta, payload) = inline(io);
                        Write::Inline { meta, payload }
                    }
                    HvWrite::Delete => Write::Delete,
                };
                self.hv
                    .compare_and_write(key, expected, write, now)
                    .await
                    .map(|ok| Answer::Plain(Completion::Cas(ok)))
            }
            Request::LtPut { blob, .. } => {
                let body = io
                    .body
                    .take()
                    .expect("the core writes a large put's blob once");
                let meta = io.meta.as_ref().expect("a put carries its metadata");
                self.lt
                    .put(blob, meta, body)
                    .await
                    .map(|size| Answer::Plain(Completion::BlobWritten { size }))
            }
            Request::LtGet { blob, span } => self.lt.get(blob, span).await.map(|found| {
                let hit = found.is_some();
                io.blob = found.map(|(meta, body)| (meta, Some(body)));
                Answer::Plain(Completion::Blob { found: hit })
            }),
            Request::LtHead { blob } => self.lt.head(blob).await.map(|found| {
                let hit = found.is_some();
                io.blob = found.map(|meta| (meta, None));
                Answer::Plain(Completion::Blob { found: hit })
            }),
            Request::LtDelete { blob } => self
                .lt
                .delete(blob)
                .await
                .map(|()| Answer::Plain(Completion::Done)),
            Request::LogRecord { id, change } => {
                // Held before it can be scanned, so recovery never reclaims a live operation's entry.
                crate::memory_lock(&self.held).insert(id);
                self.log
                    .record(id, change)
                    .await
                    .map(|()| Answer::Plain(Completion::Done))
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
        result.unwrap_or_else(|e| {
            io.error = Some(e);
            Answer::Plain(Completion::Failed)
        })
    }

    /// The next entry after `after` that no operation in this process holds.
    async fn scan_reclaimable(
        &self,
        mut after: Option<cairn_core::ChangeId>,
    ) -> Result<Option<LogRecord>, BackendError> {
        loop {
            match self.log.scan(after).await? {
                Some(record) if crate::memory_lock(&self.held).contains(&record.id) => {
                    after = Some(record.id)
                }
                other => return Ok(other),
            }
        }
    }

    /// Releases an entry once its cleanup is over (finished, or deferred to recovery).
    pub fn release(&self, id: ChangeId) {
        crate::memory_lock(&self.held).remove(&id);
    }

    /// `now` as the driver's clock reads it.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Sleeps on the runtime.
    pub async fn sleep(&self, d: Duration) {
        self.runtime
            .sleep(std::time::Duration::from_millis(d.as_millis()))
            .await;
    }
}

fn inline(io: &OpIo) -> (&Metadata, &Bytes) {
    let meta = io.meta.as_ref().expect("a small put carries its metadata");
    let payload = io
        .payload
        .as_ref()
        .expect("a small put carries its payload");
    (meta, payload)
}
