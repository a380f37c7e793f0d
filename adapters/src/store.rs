//! [`TieredStore`]: the user-facing handle over the tiered machines and three backends.

use crate::backend::{BackendError, ChangeLog, HvBackend, ListEntry, LtBackend, Row};
use crate::driver::{Driver, Held, OpIo};
use crate::runtime::Runtime;
use crate::{Body, Clock, CoarseClock, Error, Metadata, PutOptions};
use bytes::{Bytes, BytesMut};
use cairn_core::{
    ByteRange, ChangeId, Cleanup, CleanupOutcome, Config, Delete, Found, Get, IdGen, Instant, Key,
    KeyBuf, LargePut, MutationDone, PendingCleanup, Phase, ReadError, Recovery, RecoveryReport,
    Revision, SmallPut, Span, Tier, WriteOutcome,
};
use event_listener::{Event, Listener};
use futures_lite::StreamExt;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Most entries one [`TieredStore::list`] call returns.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Where an object's bytes live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// Inline in the high-volume tier.
    Inline,
    /// In the long-term tier, as this revision.
    LongTerm(Revision),
}

/// An object's metadata and where it lives (what `head` returns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The metadata.
    pub meta: Metadata,
    /// Where the bytes are.
    pub location: Location,
}

/// An object being read: metadata plus a body that streams from its tier.
#[derive(Debug)]
pub struct Object {
    /// The metadata (`size` is the whole object's size, even for a range read).
    pub meta: Metadata,
    /// Where the bytes are.
    pub location: Location,
    /// The bytes returned, for a range read; `None` when the body is the whole object.
    pub span: Option<Span>,
    /// The bytes.
    pub body: Body,
}

impl Object {
    /// Reads the whole body into memory.
    pub async fn bytes(self) -> io::Result<Bytes> {
        self.body.bytes().await
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// Live keys in order, with their rows.
    pub entries: Vec<ListEntry>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next: Option<KeyBuf>,
}

/// Mints change-log ids like [`IdGen::change_id`] (creation time in the top 48 bits, 80 random
/// bits below) without a lock: every small put and delete needs one up front, though only one
/// that meets a tombstone uses it, and a mutex around an [`IdGen`] cost each of them two atomic
/// read-modify-writes where this costs one.
///
/// The random bits are a bijective mix of a per-store random base plus a counter, so no two ids
/// of one store are equal (for 2^64 ids, whatever the clock does), and ids of stores with other
/// seeds (a rival process sharing the log) look independent, as `IdGen`'s do.
struct ChangeIds {
    base: u64,
    low: u16,
    next: AtomicU64,
}

impl ChangeIds {
    fn new(seed: u64) -> ChangeIds {
        // Not the revisions' stream: a separate draw from the same seed.
        let mut rng = cairn_core::Rng::new(seed ^ 0x6368_616e_6765_5f69); // "change_i"
        ChangeIds {
            base: rng.next_u64(),
            low: rng.next_u64() as u16,
            next: AtomicU64::new(0),
        }
    }

    fn mint(&self, now: cairn_core::Instant) -> ChangeId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        // SplitMix64's finalizer: a bijection of u64, so distinct counters give distinct bits.
        let mut z = self
            .base
            .wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let time = (now.as_millis() as u128 & ((1 << 48) - 1)) << 80;
        ChangeId(time | (z as u128) << 16 | self.low as u128)
    }
}

/// Counts background tasks so that `join` can wait for them.
#[derive(Default)]
struct Tasks {
    running: AtomicUsize,
    idle: Event,
}

struct Inner<D> {
    /// Notified when the store closes (its last handle dropped): the repeating background
    /// passes wait on it beside their interval, so they end then, not an interval later.
    closed: Event,
    config: Config,
    /// Revisions, for large puts.
    revisions: Mutex<IdGen>,
    /// Change ids, for every put and delete: minted without a lock (see [`ChangeIds`]).
    change_ids: ChangeIds,
    tasks: Tasks,
    driver: D,
}

impl<D> Drop for Inner<D> {
    fn drop(&mut self) {
        self.closed.notify(usize::MAX);
    }
}

/// A tiered object store over a high-volume tier `H`, a long-term tier `L` and a change log `C`,
/// driven on runtime `R`. Cheap to clone; clones share everything.
///
/// Objects of at most [`Config::inline_threshold`] bytes live inline in `H`; larger ones are
/// streamed to `L` behind a tombstone. Background cleanup after each mutation is spawned on `R`;
/// [`join`](TieredStore::join) waits for it.
///
/// ```
/// use cairn_adapters::memory::{MemoryHv, MemoryLog, MemoryLt};
/// use cairn_adapters::{PutOptions, TieredStore, InlineRuntime};
/// # futures_lite::future::block_on(async {
/// let store = TieredStore::new(MemoryHv::new(), MemoryLt::new(), MemoryLog::new(), InlineRuntime);
/// store.put("hello", "world", &PutOptions::default()).await?;
/// let object = store.get("hello").await?.expect("just written");
/// assert_eq!(object.bytes().await?, "world");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct TieredStore<H, L, C, R> {
    inner: Arc<Inner<Driver<H, L, C, R>>>,
}

impl<H, L, C, R> Clone for TieredStore<H, L, C, R> {
    fn clone(&self) -> Self {
        TieredStore {
            inner: self.inner.clone(),
        }
    }
}

/// Builds a [`TieredStore`] with non-default settings.
pub struct StoreBuilder<H, L, C> {
    hv: H,
    lt: L,
    log: C,
    config: Config,
    clock: Box<dyn Clock>,
    seed: Option<u64>,
}

impl<H: HvBackend, L: LtBackend, C: ChangeLog> StoreBuilder<H, L, C> {
    /// Protocol settings (threshold, retries, backoff).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Where `now` comes from (default: [`CoarseClock`], the wall clock as of its last tick;
    /// [`SystemClock`](crate::SystemClock) for stamps exact to the millisecond).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Box::new(clock);
        self
    }

    /// Seeds revision and change ids (default: from the operating system).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The store, on runtime `runtime`.
    pub fn build<R: Runtime>(self, runtime: R) -> Result<TieredStore<H, L, C, R>, Error> {
        self.config.validate()?;
        let seed = self
            .seed
            .unwrap_or_else(|| std::hash::RandomState::new().build_hasher().finish());
        let driver = Driver {
            hv: self.hv,
            lt: self.lt,
            held: Held::new(&self.log),
            log: self.log,
            runtime,
            clock: self.clock,
        };
        Ok(TieredStore {
            inner: Arc::new(Inner {
                closed: Event::new(),
                config: self.config,
                revisions: Mutex::new(IdGen::new(seed)),
                change_ids: ChangeIds::new(seed),
                tasks: Tasks::default(),
                driver,
            }),
        })
    }
}

impl<H: HvBackend, L: LtBackend, C: ChangeLog> TieredStore<H, L, C, ()> {
    /// Starts building a store over these backends.
    pub fn builder(hv: H, lt: L, log: C) -> StoreBuilder<H, L, C> {
        StoreBuilder {
            hv,
            lt,
            log,
            config: Config::DEFAULT,
            clock: Box::new(CoarseClock),
            seed: None,
        }
    }
}

impl<H: HvBackend, L: LtBackend, C: ChangeLog, R: Runtime> TieredStore<H, L, C, R> {
    /// A store with default settings, the [`CoarseClock`] and OS-seeded ids.
    pub fn new(hv: H, lt: L, log: C, runtime: R) -> Self {
        TieredStore::builder(hv, lt, log)
            .build(runtime)
            .expect("the default config is valid")
    }

    /// The protocol settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The high-volume backend.
    pub fn hv(&self) -> &H {
        &self.inner.driver.hv
    }

    /// The long-term backend.
    pub fn lt(&self) -> &L {
        &self.inner.driver.lt
    }

    /// The change-log backend.
    pub fn log(&self) -> &C {
        &self.inner.driver.log
    }

    /// Stores `bytes` under `key`, inline if they fit, else as a blob. Last writer wins: a put that
    /// lost a race to a concurrent one still succeeds, as [`WriteOutcome::Superseded`].
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        bytes: impl Into<Bytes>,
        options: &PutOptions,
    ) -> Result<WriteOutcome, Error> {
        self.put_bytes(key.as_ref(), bytes.into(), options, None)
            .await
    }

    /// [`put`](TieredStore::put) without the generic parameters. A small put is written out
    /// here rather than awaited as a function of its own: awaiting a future moves all of it
    /// (machine, payload, driver state) into this one's.
    /// `started`: when the put began, if not now (a streamed put that read its body first).
    pub(crate) async fn put_bytes(
        &self,
        key: &[u8],
        bytes: Bytes,
        options: &PutOptions,
        started: Option<Instant>,
    ) -> Result<WriteOutcome, Error> {
        let key = Key::new(key)?;
        match self.plan_put(bytes, options, started)? {
            PutPlan::Small {
                meta,
                bytes,
                id,
                now,
            } => {
                let mut machine = SmallPut::new(key, meta.core(), id, self.inner.config);
                let mut io = OpIo::small_put(meta, bytes);
                let in_flight = self.in_flight(id);
                let done = self.inner.driver.drive(&mut machine, &mut io, now).await;
                in_flight.finished();
                self.finish(key, done, io.error, None)
            }
            PutPlan::Large { meta, body } => self.large_put(key, meta, body).await,
        }
    }

    /// [`put_bytes`](TieredStore::put_bytes) on the calling thread.
    pub(crate) fn put_bytes_blocking(
        &self,
        key: &[u8],
        bytes: Bytes,
        options: &PutOptions,
    ) -> Result<WriteOutcome, Error> {
        let key = Key::new(key)?;
        match self.plan_put(bytes, options, None)? {
            PutPlan::Small {
                meta,
                bytes,
                id,
                now,
            } => {
                let mut machine = SmallPut::new(key, meta.core(), id, self.inner.config);
                let mut io = OpIo::small_put(meta, bytes);
                let done = self.inner.driver.drive_blocking(&mut machine, &mut io, now);
                self.finish(key, done, io.error, None)
            }
            PutPlan::Large { meta, body } => {
                crate::runtime::block_on(std::pin::pin!(self.large_put(key, meta, body)))
            }
        }
    }

    /// Validates a put of `bytes` and picks its tier; nothing is written yet. (Small: the
    /// machine and its I/O state are built where they are driven, not moved there.)
    fn plan_put(
        &self,
        bytes: Bytes,
        options: &PutOptions,
        started: Option<Instant>,
    ) -> Result<PutPlan, Error> {
        options.validate()?;
        let now = self.inner.driver.now();
        // Only the metadata dates from `started`: the protocol judges rows as of now.
        let meta = options.metadata(bytes.len() as u64, started.unwrap_or(now));
        if !self.inner.config.fits_inline(meta.size) {
            let body = Body::from_bytes(bytes);
            return Ok(PutPlan::Large { meta, body });
        }
        let id = self.inner.change_ids.mint(now);
        Ok(PutPlan::Small {
            meta,
            bytes,
            id,
            now,
        })
    }

    /// Stores a body of unknown length. At most the inline threshold plus one chunk is buffered
    /// to decide the tier; a larger body streams straight to the long-term tier.
    pub async fn put_stream(
        &self,
        key: impl AsRef<[u8]>,
        mut body: Body,
        options: &PutOptions,
    ) -> Result<WriteOutcome, Error> {
        let key = Key::new(key.as_ref())?;
        options.validate()?;
        // The object's time to live runs from here, however long its body takes to arrive.
        let started = self.inner.driver.now();
        let threshold = self.inner.config.inline_threshold;
        let mut buffered: Vec<Bytes> = Vec::new();
        let mut total = 0u64;
        loop {
            match body.next().await {
                Some(Err(e)) => return Err(Error::Body(e)),
                Some(Ok(chunk)) if chunk.is_empty() => {}
                Some(Ok(chunk)) if total + chunk.len() as u64 <= threshold => {
                    total += chunk.len() as u64;
                    buffered.push(chunk);
                }
                Some(Ok(chunk)) => {
                    buffered.push(chunk);
                    let head = futures_lite::stream::iter(buffered.into_iter().map(Ok));
                    let meta = options.metadata(0, started);
                    return self
                        .large_put(key, meta, Body::from_stream(head.chain(body)))
                        .await;
                }
                None => {
                    let bytes = concat(buffered, total);
                    return self
                        .put_bytes(key.as_bytes(), bytes, options, Some(started))
                        .await;
                }
            }
        }
    }

    async fn large_put(
        &self,
        key: &Key,
        meta: Metadata,
        body: Body,
    ) -> Result<WriteOutcome, Error> {
        // Not `meta.created`: a streamed put's metadata dates from its start, long ago perhaps.
        let now = self.inner.driver.now();
        let revision = crate::memory_lock(&self.inner.revisions).revision(now);
        let id = self.inner.change_ids.mint(now);
        let mut machine = LargePut::new(key, revision, meta.expires, id, self.inner.config);
        // The caller's stream failing is the caller's fault, not the blob tier's: remember it.
        let body_error: Arc<Mutex<Option<io::Error>>> = Arc::default();
        let seen = body_error.clone();
        let body = Body::from_stream(body.map(move |chunk| {
            chunk.inspect_err(|e| {
                *crate::memory_lock(&seen) = Some(io::Error::new(e.kind(), e.to_string()));
            })
        }));
        let mut io = OpIo::large_put(meta, body);
        let in_flight = self.in_flight(id);
        let done = self.inner.driver.drive(&mut machine, &mut io, now).await;
        in_flight.finished();
        let body_error = crate::memory_lock(&body_error).take();
        self.finish(key, done, io.error, body_error)
    }

    /// Deletes `key`; deleting a missing key succeeds.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<WriteOutcome, Error> {
        let (mut machine, now, id) = self.plan_delete(key.as_ref())?;
        let mut io = OpIo::default();
        let in_flight = self.in_flight(id);
        let done = self.inner.driver.drive(&mut machine, &mut io, now).await;
        in_flight.finished();
        self.finish(machine.key(), done, io.error, None)
    }

    /// [`delete`](TieredStore::delete) on the calling thread.
    pub(crate) fn delete_blocking(&self, key: &[u8]) -> Result<WriteOutcome, Error> {
        let (mut machine, now, _) = self.plan_delete(key)?;
        let mut io = OpIo::default();
        let done = self.inner.driver.drive_blocking(&mut machine, &mut io, now);
        self.finish(machine.key(), done, io.error, None)
    }

    fn plan_delete<'k>(&self, key: &'k [u8]) -> Result<(Delete<'k>, Instant, ChangeId), Error> {
        let key = Key::new(key)?;
        let now = self.inner.driver.now();
        let id = self.inner.change_ids.mint(now);
        Ok((Delete::new(key, id, self.inner.config), now, id))
    }

    /// Marks the put or delete logging as `id` as running, until [`InFlight::finished`].
    fn in_flight(&self, id: ChangeId) -> InFlight<'_, H, L, C, R> {
        InFlight { store: self, id }
    }

    fn finish(
        &self,
        key: &Key,
        done: MutationDone,
        backend_error: Option<BackendError>,
        body_error: Option<io::Error>,
    ) -> Result<WriteOutcome, Error> {
        if let Some(cleanup) = done.cleanup {
            self.spawn_cleanup(key, cleanup);
        }
        done.result.map_err(|error| match body_error {
            Some(e) if error.tier == Tier::Lt => Error::Body(e),
            _ => Error::Write {
                error,
                source: backend_error
                    .expect("a write fails only after a backend reported a failure"),
            },
        })
    }

    fn spawn_cleanup(&self, key: &Key, pending: PendingCleanup) {
        let mut cleanup = Cleanup::new(key.to_key_buf(), pending, self.inner.config);
        self.spawn_task(|inner| async move {
            let now = inner.driver.now();
            let report = inner
                .driver
                .drive(&mut cleanup, &mut OpIo::default(), now)
                .await;
            debug_assert!(matches!(
                report.outcome,
                CleanupOutcome::Finished | CleanupOutcome::Deferred(_)
            ));
            inner.driver.release(report.id);
        });
    }

    /// Runs `task` in the background on the store's runtime, counted for [`join`](Self::join).
    fn spawn_task<F, Fut>(&self, task: F)
    where
        F: FnOnce(Arc<Inner<Driver<H, L, C, R>>>) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.inner.tasks.running.fetch_add(1, Ordering::AcqRel);
        let count = TaskCount {
            store: self.inner.clone(),
        };
        let run = task(self.inner.clone());
        self.inner.driver.runtime.spawn(Box::pin(async move {
            run.await;
            drop(count);
        }));
    }

    /// Reads a whole object; `None` if there is none.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Object>, Error> {
        self.read(key.as_ref(), None).await
    }

    /// Reads a byte range of an object.
    pub async fn get_range(
        &self,
        key: impl AsRef<[u8]>,
        range: ByteRange,
    ) -> Result<Option<Object>, Error> {
        self.read(key.as_ref(), Some(range)).await
    }

    pub(crate) async fn read(
        &self,
        key: &[u8],
        range: Option<ByteRange>,
    ) -> Result<Option<Object>, Error> {
        let mut machine = Get::new(Key::new(key)?, range, self.inner.config);
        let mut io = OpIo::default();
        let now = self.inner.driver.now();
        let found = self.inner.driver.drive(&mut machine, &mut io, now).await;
        object(found, &mut io)
    }

    /// [`read`](TieredStore::read) on the calling thread.
    pub(crate) fn read_blocking(
        &self,
        key: &[u8],
        range: Option<ByteRange>,
    ) -> Result<Option<Object>, Error> {
        let mut machine = Get::new(Key::new(key)?, range, self.inner.config);
        let mut io = OpIo::default();
        let now = self.inner.driver.now();
        let found = self.inner.driver.drive_blocking(&mut machine, &mut io, now);
        object(found, &mut io)
    }

    /// An object's metadata and location, without reading its bytes.
    pub async fn head(&self, key: impl AsRef<[u8]>) -> Result<Option<ObjectInfo>, Error> {
        let mut machine = Get::head(Key::new(key.as_ref())?, self.inner.config);
        let mut io = OpIo::default();
        let now = self.inner.driver.now();
        let found = self.inner.driver.drive(&mut machine, &mut io, now).await;
        info(found, &mut io)
    }

    /// [`head`](TieredStore::head) on the calling thread.
    pub(crate) fn head_blocking(&self, key: &[u8]) -> Result<Option<ObjectInfo>, Error> {
        let mut machine = Get::head(Key::new(key)?, self.inner.config);
        let mut io = OpIo::default();
        let now = self.inner.driver.now();
        let found = self.inner.driver.drive_blocking(&mut machine, &mut io, now);
        info(found, &mut io)
    }

    /// Up to `limit` live keys starting with `prefix`, after `after`. `limit` is taken between
    /// 1 and [`MAX_LIST_LIMIT`]: a page of 0 would never get a listing anywhere.
    pub async fn list(
        &self,
        prefix: impl AsRef<[u8]>,
        after: Option<&Key>,
        limit: usize,
    ) -> Result<ListPage, Error> {
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let now = self.inner.driver.now();
        // One row more than the page, to tell whether another page follows: a full last page
        // then says it is the last instead of sending its caller for an empty one.
        let mut entries = self
            .inner
            .driver
            .hv
            .list(prefix.as_ref(), after, limit + 1, now)
            .await
            .map_err(|source| Error::Read {
                tier: Tier::Hv,
                source,
            })?;
        let more = entries.len() > limit;
        entries.truncate(limit);
        let next = more.then(|| entries[limit - 1].key.clone());
        Ok(ListPage { entries, next })
    }

    /// Cleans up after every mutation whose cleanup never ran (after a crash) or gave up. Entries
    /// of operations still in flight — in this store, or another over the same change log — are
    /// left alone.
    pub async fn recover(&self) -> Result<RecoveryReport, Error> {
        self.recover_explained().await.map(|(report, _)| report)
    }

    /// [`recover`](TieredStore::recover), with the last backend failure the pass met if it
    /// deferred any entry (`None` otherwise): what a person should be told when cleanups keep
    /// failing — a blob directory gone read-only, say. (The last failure, not necessarily the
    /// one that deferred an entry: a later entry's retried failure comes after it.)
    pub async fn recover_explained(&self) -> Result<(RecoveryReport, Option<BackendError>), Error> {
        let mut machine = Recovery::new(self.inner.config);
        let mut io = OpIo::default();
        let now = self.inner.driver.now();
        let report = self.inner.driver.drive(&mut machine, &mut io, now).await;
        match (report.complete, io.error) {
            (false, Some(source)) => Err(Error::Read {
                tier: Tier::Log,
                source,
            }),
            (true, cause) if report.deferred > 0 => Ok((report, cause)),
            _ => Ok((report, None)),
        }
    }

    /// Runs [`recover`](TieredStore::recover) every `interval` (at least 1 ms) in the
    /// background, until the last handle to the store is dropped. Failures are retried at the
    /// next interval.
    pub fn recover_every(&self, interval: cairn_core::Duration) {
        self.every(interval, |store| async move {
            let _ = store.recover().await;
            true
        });
    }

    /// Runs `pass` every `interval` on the store's runtime, until it answers `false` or the last
    /// handle to the store is dropped.
    pub(crate) fn every<F, Fut>(&self, interval: cairn_core::Duration, pass: F)
    where
        F: Fn(TieredStore<H, L, C, R>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = bool> + Send,
    {
        let weak: Weak<Inner<Driver<H, L, C, R>>> = Arc::downgrade(&self.inner);
        // Only the weak handle is kept between passes, so the store closes (and its files,
        // threads and lease go) as soon as its last handle is dropped; and the wait between
        // passes ends then too, so the loop (a task, or a thread) does not outlive the store by
        // up to an interval — an hour of a thread, say, for every store a server opened and
        // closed. A zero interval would spin a processor through passes back to back.
        let period = std::time::Duration::from_millis(interval.as_millis().max(1));
        let runtime = &self.inner.driver.runtime;
        if runtime.runs_inline() {
            // Spawned inline, the loop would keep the caller's thread for the store's lifetime:
            // it gets a thread of its own. If none can be had there is no background work, as
            // when a runtime fails to spawn.
            let _ = std::thread::Builder::new()
                .name("cairn-every".into())
                .spawn(move || loop {
                    let closed = match weak.upgrade() {
                        Some(inner) => inner.closed.listen(),
                        None => return,
                    };
                    if closed.wait_timeout(period).is_some() {
                        return;
                    }
                    let Some(inner) = weak.upgrade() else { return };
                    if !crate::runtime::block_on(std::pin::pin!(pass(TieredStore { inner }))) {
                        return;
                    }
                });
            return;
        }
        runtime.spawn(Box::pin(async move {
            loop {
                let (sleep, closed) = match weak.upgrade() {
                    Some(inner) => (inner.driver.runtime.sleep(period), inner.closed.listen()),
                    None => return,
                };
                // The store closing wakes the loop, which then finds it gone.
                futures_lite::future::or(sleep, closed).await;
                let Some(inner) = weak.upgrade() else { return };
                if !pass(TieredStore { inner }).await {
                    return;
                }
            }
        }));
    }

    /// Waits until every background cleanup started so far has finished.
    pub async fn join(&self) {
        let tasks = &self.inner.tasks;
        loop {
            if tasks.running.load(Ordering::Acquire) == 0 {
                return;
            }
            let listener = tasks.idle.listen();
            if tasks.running.load(Ordering::Acquire) == 0 {
                return;
            }
            listener.await;
        }
    }

    /// Number of background cleanups running now.
    pub fn background_tasks(&self) -> usize {
        self.inner.tasks.running.load(Ordering::Acquire)
    }
}

/// A put or delete under way. Its change-log entry is *held* from the moment it is recorded:
/// recovery (in this store, or another over the same log) leaves it to the operation, whose
/// cleanup releases it. If the operation's future is dropped half way — cancelled (a timeout, a
/// dropped request), or unwound by a panic, the crash of this one operation — its entry is
/// cleaned up in the background instead, as recovery would: once both tiers have settled, so
/// that no write of the operation (a row, a blob) can land after the cleanup read the row, the
/// row is read again, whichever of the change's blobs it no longer references is deleted, and the
/// entry removed (or, if a tier keeps failing, left to the next recovery pass) and released.
/// Without that, the entry — and a blob the put had written — stayed until a recovery pass ran,
/// which a store with none scheduled never does while it is open.
struct InFlight<'s, H: HvBackend, L: LtBackend, C: ChangeLog, R: Runtime> {
    store: &'s TieredStore<H, L, C, R>,
    id: ChangeId,
}

impl<H: HvBackend, L: LtBackend, C: ChangeLog, R: Runtime> InFlight<'_, H, L, C, R> {
    /// The operation ran to its end: its cleanup (if any) owns the entry now.
    fn finished(self) {
        std::mem::forget(self);
    }
}

impl<H: HvBackend, L: LtBackend, C: ChangeLog, R: Runtime> Drop for InFlight<'_, H, L, C, R> {
    fn drop(&mut self) {
        let id = self.id;
        let Some(change) = self.store.inner.driver.held.change(id) else {
            return; // dropped before it logged anything
        };
        let cleanup = move |inner: Arc<Inner<Driver<H, L, C, R>>>| async move {
            inner.driver.hv.settled().await;
            inner.driver.lt.settled().await;
            let pending = PendingCleanup {
                id,
                new: change.new,
                old: change.old,
                phase: Phase::Unknown,
            };
            let mut cleanup = Cleanup::new(change.key, pending, inner.config);
            let now = inner.driver.now();
            inner
                .driver
                .drive(&mut cleanup, &mut OpIo::default(), now)
                .await;
            inner.driver.release(id);
        };
        if !self.store.inner.driver.runtime.runs_inline() {
            self.store.spawn_task(cleanup);
            return;
        }
        // Spawned inline, the drop would wait for the tier to settle (a writer round trip, an
        // fsync) and for the cleanup (with its backoff, if a tier fails) on the thread that
        // dropped the operation, maybe an executor's worker. If no thread can be had, the entry
        // stays held until the store closes, then is left to recovery.
        let inner = self.store.inner.clone();
        inner.tasks.running.fetch_add(1, Ordering::AcqRel);
        let count = TaskCount {
            store: inner.clone(),
        };
        let _ = std::thread::Builder::new()
            .name("cairn-release".into())
            .spawn(move || {
                crate::runtime::block_on(std::pin::pin!(cleanup(inner)));
                drop(count);
            });
    }
}

/// Decrements the running-task count when dropped, even if the task panicked.
struct TaskCount<D> {
    store: Arc<Inner<D>>,
}

impl<D> Drop for TaskCount<D> {
    fn drop(&mut self) {
        if self.store.tasks.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.store.tasks.idle.notify(usize::MAX);
        }
    }
}

/// What a get found, as the caller receives it.
#[inline]
fn object(found: cairn_core::GetResult, io: &mut OpIo) -> Result<Option<Object>, Error> {
    Ok(match read_result(found, io)? {
        None => None,
        Some(Found::Inline { span, .. }) => {
            let Some(Row::Inline {
                meta,
                payload: Some(payload),
            }) = io.row.take()
            else {
                unreachable!("an inline find follows an inline read with payload")
            };
            let bytes = match span {
                Some(s) if s.end > payload.len() as u64 => {
                    // The span came from the row's size; a backend must store exactly that many
                    // bytes. One that did not is damaged, which is no reason to panic.
                    return Err(Error::Read {
                        tier: Tier::Hv,
                        source: BackendError::new(format!(
                            "inline payload of {} bytes, shorter than its recorded size {}",
                            payload.len(),
                            meta.size
                        )),
                    });
                }
                Some(s) => payload.slice(s.start as usize..s.end as usize),
                None => payload,
            };
            Some(Object {
                meta,
                location: Location::Inline,
                span,
                body: Body::from_bytes(bytes),
            })
        }
        Some(Found::LongTerm { tombstone, span }) => {
            let Some((meta, Some(body))) = io.take_blob() else {
                unreachable!("a long-term find follows an opened blob")
            };
            Some(Object {
                meta,
                location: Location::LongTerm(tombstone.revision),
                span,
                body,
            })
        }
    })
}

/// What a head found, as the caller receives it.
#[inline]
fn info(found: cairn_core::GetResult, io: &mut OpIo) -> Result<Option<ObjectInfo>, Error> {
    Ok(match read_result(found, io)? {
        None => None,
        Some(Found::Inline { .. }) => {
            let Some(Row::Inline { meta, .. }) = io.row.take() else {
                unreachable!("an inline find follows an inline read")
            };
            Some(ObjectInfo {
                meta,
                location: Location::Inline,
            })
        }
        Some(Found::LongTerm { tombstone, .. }) => {
            let Some((meta, _)) = io.take_blob() else {
                unreachable!("a long-term find follows a head")
            };
            Some(ObjectInfo {
                meta,
                location: Location::LongTerm(tombstone.revision),
            })
        }
    })
}

/// A validated put, before anything is written.
enum PutPlan {
    Small {
        meta: Metadata,
        bytes: Bytes,
        id: ChangeId,
        /// When the put was planned: the machine's first `now` (the metadata may be older).
        now: Instant,
    },
    Large {
        meta: Metadata,
        body: Body,
    },
}

#[inline]
fn read_result(found: cairn_core::GetResult, io: &mut OpIo) -> Result<Option<Found>, Error> {
    found.map_err(|e| match e {
        ReadError::Range(r) => Error::InvalidRange { size: r.size },
        ReadError::Unstable => Error::Unstable,
        ReadError::Lost(revision) => Error::Lost { revision },
        ReadError::Io(tier) => Error::Read {
            tier,
            source: io
                .error
                .take()
                .expect("a read fails only after a backend reported a failure"),
        },
    })
}

fn concat(chunks: Vec<Bytes>, total: u64) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().expect("one chunk"),
        _ => {
            let mut buf = BytesMut::with_capacity(total as usize);
            chunks.iter().for_each(|c| buf.extend_from_slice(c));
            buf.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::Instant;

    #[test]
    fn change_ids_are_unique_per_store_time_ordered_and_seeded() {
        let t = Instant::from_millis(1_700_000_000_000);
        let ids = ChangeIds::new(7);
        let minted: std::collections::HashSet<ChangeId> =
            (0..10_000).map(|_| ids.mint(t)).collect();
        assert_eq!(minted.len(), 10_000, "one millisecond, no repeats");
        assert!(ids.mint(Instant::from_millis(t.as_millis() + 1)) > *minted.iter().max().unwrap());
        let (a, b) = (ChangeIds::new(7), ChangeIds::new(7));
        assert_eq!(a.mint(t), b.mint(t), "the same seed, the same ids");
        assert_ne!(ChangeIds::new(8).mint(t), ChangeIds::new(7).mint(t));
    }
}
