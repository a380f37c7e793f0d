//! A fault-injecting wrapper around any backend, for tests: make a chosen call fail before it
//! applies, apply and then report an error (a lost acknowledgement), answer a compare-and-write
//! with a conflict, or pause until the test releases it; or make every call suspend, so that a
//! caller can give up at each.

use crate::backend::{
    BackendError, BackendResult, ChangeLog, HvBackend, ListEntry, LogRecord, LtBackend, Row,
    Staged, Staging, Write,
};
use crate::{Body, Metadata};
use bytes::Bytes;
use cairn_core::{BlobId, Change, ChangeId, Guarded, Instant, Key, Revision, Span};
use event_listener::Event;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A backend call, for aiming faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Op {
    HvRead,
    HvPut,
    HvDelete,
    HvCas,
    HvList,
    /// A blob write: [`LtBackend::put`], or the publication of a staged blob (so a fault aimed
    /// here strikes at the same step of the protocol either way).
    LtPut,
    /// [`LtBackend::stage`]: writing a large put's blob while its record commits. A failure
    /// here fails the blob write when the core asks for it.
    LtStage,
    LtGet,
    LtHead,
    LtDelete,
    LogRecord,
    LogRemove,
    LogScan,
}

/// What happens to a targeted call.
#[derive(Clone)]
pub enum Fault {
    /// Fail without applying.
    FailBefore,
    /// Apply, then report a failure (the acknowledgement is lost).
    FailAfter,
    /// Compare-and-write only: answer `false` without writing.
    Conflict,
    /// Wait at the gate until it is released, then proceed normally.
    Pause(Arc<Gate>),
    /// Run the hook, then proceed normally: a rival writer landing between two steps, or (if the
    /// hook panics) a crash at this step boundary.
    Run(Hook),
}

/// A closure run at a targeted call.
pub type Hook = Arc<dyn Fn() + Send + Sync>;

impl std::fmt::Debug for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fault::FailBefore => "FailBefore",
            Fault::FailAfter => "FailAfter",
            Fault::Conflict => "Conflict",
            Fault::Pause(_) => "Pause",
            Fault::Run(_) => "Run",
        })
    }
}

#[derive(Debug)]
struct Rule {
    op: Op,
    fault: Fault,
    skip: u32,
    times: u32,
}

/// The faults planned for a set of wrapped backends; share one between the tiers with `Arc`.
///
/// ```
/// use cairn_adapters::fault::{Fault, Faults, Op};
/// let faults = Faults::new();
/// faults.inject(Op::HvCas, Fault::FailAfter); // the next compare-and-write applies, then errs
/// faults.inject_nth(Op::LtDelete, 1, Fault::FailBefore, 3); // the 2nd, 3rd and 4th deletes fail
/// assert_eq!(faults.calls(Op::HvCas), 0);
/// ```
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<hashbrown::HashMap<Op, u64>>,
    suspending: AtomicBool,
}

impl Faults {
    /// No faults planned.
    pub fn new() -> Arc<Faults> {
        Arc::default()
    }

    /// The next call of `op` suffers `fault`.
    pub fn inject(&self, op: Op, fault: Fault) {
        self.inject_nth(op, 0, fault, 1);
    }

    /// After `skip` more calls of `op` pass untouched, the following `times` calls suffer `fault`.
    pub fn inject_nth(&self, op: Op, skip: u32, fault: Fault, times: u32) {
        crate::memory_lock(&self.rules).push(Rule {
            op,
            fault,
            skip,
            times,
        });
    }

    /// From now on every call suspends once before it acts and once after (and a blob's body
    /// between its chunks): each request becomes a point where the caller's future may be
    /// dropped, before the request took effect or after it did (its acknowledgement lost).
    pub fn suspend_every_call(&self) {
        self.suspending.store(true, Ordering::Relaxed);
    }

    fn suspends(&self) -> bool {
        self.suspending.load(Ordering::Relaxed)
    }

    /// Drops every planned fault.
    pub fn clear(&self) {
        crate::memory_lock(&self.rules).clear();
    }

    /// How many calls of `op` reached the wrapper.
    pub fn calls(&self, op: Op) -> u64 {
        crate::memory_lock(&self.calls)
            .get(&op)
            .copied()
            .unwrap_or(0)
    }

    fn take(&self, op: Op) -> Option<Fault> {
        *crate::memory_lock(&self.calls).entry(op).or_default() += 1;
        let mut rules = crate::memory_lock(&self.rules);
        let i = rules.iter().position(|r| r.op == op)?;
        let rule = &mut rules[i];
        if rule.skip > 0 {
            rule.skip -= 1;
            return None;
        }
        rule.times -= 1;
        let fault = rule.fault.clone();
        if rule.times == 0 {
            rules.remove(i);
        }
        Some(fault)
    }
}

/// A point where a paused call waits until the test releases it.
#[derive(Debug, Default)]
pub struct Gate {
    reached: AtomicBool,
    released: AtomicBool,
    event: Event,
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Arc<Gate> {
        Arc::default()
    }

    /// Waits until a call is paused here.
    pub async fn reached(&self) {
        wait_for(&self.event, || self.reached.load(Ordering::Acquire)).await;
    }

    /// Whether a call is paused here (or passed through).
    pub fn is_reached(&self) -> bool {
        self.reached.load(Ordering::Acquire)
    }

    /// Lets the paused call (and any later one) through.
    pub fn release(&self) {
        self.released.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
    }

    async fn pass(&self) {
        self.reached.store(true, Ordering::Release);
        self.event.notify(usize::MAX);
        wait_for(&self.event, || self.released.load(Ordering::Acquire)).await;
    }
}

async fn wait_for(event: &Event, done: impl Fn() -> bool) {
    loop {
        if done() {
            return;
        }
        let listener = event.listen();
        if done() {
            return;
        }
        listener.await;
    }
}

fn injected(what: &str) -> BackendError {
    BackendError::new(format!("injected fault: {what}"))
}

/// A backend whose calls suffer the faults planned in a shared [`Faults`].
#[derive(Debug)]
pub struct Faulty<B> {
    inner: B,
    faults: Arc<Faults>,
}

impl<B> Faulty<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, faults: Arc<Faults>) -> Self {
        Faulty { inner, faults }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    async fn around<T>(
        &self,
        op: Op,
        call: impl Future<Output = BackendResult<T>>,
    ) -> BackendResult<T> {
        apply(op, self.faults.take(op), self.faults.suspends(), call).await
    }
}

/// Runs `call` under `fault`, suspending before and after it if `suspend`.
async fn apply<T>(
    op: Op,
    fault: Option<Fault>,
    suspend: bool,
    call: impl Future<Output = BackendResult<T>>,
) -> BackendResult<T> {
    if suspend {
        futures_lite::future::yield_now().await;
    }
    match &fault {
        Some(Fault::FailBefore) => return Err(injected("failed before applying")),
        Some(Fault::Pause(gate)) => gate.pass().await,
        Some(Fault::Run(hook)) => hook(),
        Some(Fault::Conflict) => panic!("test bug: Fault::Conflict aimed at {op:?}, not HvCas"),
        Some(Fault::FailAfter) | None => {}
    }
    let result = call.await;
    if suspend {
        futures_lite::future::yield_now().await;
    }
    match fault {
        Some(Fault::FailAfter) => Err(injected("applied, then the response was lost")),
        _ => result,
    }
}

impl<B: HvBackend> HvBackend for Faulty<B> {
    async fn read(&self, key: &Key, payload: bool, now: Instant) -> BackendResult<Row> {
        self.around(Op::HvRead, self.inner.read(key, payload, now))
            .await
    }
    async fn put_non_tombstone(
        &self,
        key: &Key,
        meta: &Metadata,
        payload: &Bytes,
        now: Instant,
    ) -> BackendResult<Guarded> {
        self.around(
            Op::HvPut,
            self.inner.put_non_tombstone(key, meta, payload, now),
        )
        .await
    }
    async fn delete_non_tombstone(&self, key: &Key, now: Instant) -> BackendResult<Guarded> {
        self.around(Op::HvDelete, self.inner.delete_non_tombstone(key, now))
            .await
    }
    async fn compare_and_write(
        &self,
        key: &Key,
        expected: Option<Revision>,
        write: Write<'_>,
        now: Instant,
    ) -> BackendResult<bool> {
        let fault = self.faults.take(Op::HvCas);
        if let Some(Fault::Conflict) = fault {
            return Ok(false);
        }
        let call = self.inner.compare_and_write(key, expected, write, now);
        apply(Op::HvCas, fault, self.faults.suspends(), call).await
    }
    fn settled(&self) -> impl std::future::Future<Output = ()> + Send {
        self.inner.settled()
    }
    async fn list(
        &self,
        prefix: &[u8],
        after: Option<&Key>,
        limit: usize,
        now: Instant,
    ) -> BackendResult<Vec<ListEntry>> {
        self.around(Op::HvList, self.inner.list(prefix, after, limit, now))
            .await
    }
}

impl<B: LtBackend> LtBackend for Faulty<B> {
    async fn put(&self, blob: BlobId<'_>, meta: &Metadata, body: Body) -> BackendResult<u64> {
        self.around(Op::LtPut, self.inner.put(blob, meta, body))
            .await
    }
    async fn get(
        &self,
        blob: BlobId<'_>,
        span: Option<Span>,
    ) -> BackendResult<Option<(Metadata, Body)>> {
        let found = self.around(Op::LtGet, self.inner.get(blob, span)).await?;
        if !self.faults.suspends() {
            return Ok(found);
        }
        // A body that suspends between its chunks, as a file or a socket does.
        Ok(found.map(|(meta, body)| {
            let slow = futures_lite::StreamExt::then(body, |chunk| async move {
                futures_lite::future::yield_now().await;
                chunk
            });
            (meta, Body::from_stream(slow))
        }))
    }
    async fn head(&self, blob: BlobId<'_>) -> BackendResult<Option<Metadata>> {
        self.around(Op::LtHead, self.inner.head(blob)).await
    }
    async fn delete(&self, blob: BlobId<'_>) -> BackendResult<()> {
        self.around(Op::LtDelete, self.inner.delete(blob)).await
    }
    async fn stage(&self, blob: BlobId<'_>, meta: &Metadata, body: Body) -> Staging {
        let fault = self.faults.take(Op::LtStage);
        let mut staging = None;
        let call = async {
            staging = Some(self.inner.stage(blob, meta, body).await);
            Ok(())
        };
        let outcome = apply(Op::LtStage, fault, self.faults.suspends(), call).await;
        match (outcome, staging) {
            (Err(e), _) => Staging::Failed(e),
            (Ok(()), Some(Staging::Staged(staged))) => Staging::Staged(Box::new(FaultyStaged {
                inner: staged,
                faults: self.faults.clone(),
            })),
            (Ok(()), Some(other)) => other,
            (Ok(()), None) => unreachable!("a successful call ran"),
        }
    }
    fn settled(&self) -> impl std::future::Future<Output = ()> + Send {
        self.inner.settled()
    }
}

/// A staged blob whose publication suffers the faults aimed at [`Op::LtPut`].
struct FaultyStaged {
    inner: Box<dyn Staged>,
    faults: Arc<Faults>,
}

impl Staged for FaultyStaged {
    fn revision(&self) -> Revision {
        self.inner.revision()
    }

    fn publish(self: Box<Self>) -> Pin<Box<dyn Future<Output = BackendResult<u64>> + Send>> {
        let fault = self.faults.take(Op::LtPut);
        let suspend = self.faults.suspends();
        let publish = self.inner.publish();
        Box::pin(apply(Op::LtPut, fault, suspend, publish))
    }
}

impl<B: ChangeLog> ChangeLog for Faulty<B> {
    async fn record(&self, id: ChangeId, change: Change<'_>) -> BackendResult<()> {
        self.around(Op::LogRecord, self.inner.record(id, change))
            .await
    }
    async fn remove(&self, id: ChangeId) -> BackendResult<()> {
        self.around(Op::LogRemove, self.inner.remove(id)).await
    }
    async fn scan(&self, after: Option<ChangeId>) -> BackendResult<Option<LogRecord>> {
        self.around(Op::LogScan, self.inner.scan(after)).await
    }
    fn in_flight(&self) -> Option<&crate::backend::InFlightEntries> {
        self.inner.in_flight()
    }
}
