//! The backend contracts. Each method answers one core [`Request`](cairn_core::Request) kind,
//! one to one, so a backend author can read the protocol straight off `DESIGN.md`.
//!
//! The traits are async and runtime-agnostic. A backend whose calls are naturally synchronous
//! (in-memory, an embedded database) implements the `Sync*` twin of a trait instead and gets the
//! async one for free: its calls then run on the caller's task without suspending.
//!
//! **Failure contract.** When a method returns `Err`, the request has either already taken effect
//! or never will. A backend that may still apply a request after reporting it failed (a timed-out
//! RPC that lands later) must cancel or fence it first; otherwise cleanup can delete a blob that a
//! late compare-and-write then points at. A backend that knows a failed request took no effect
//! (it could not get a lock in time, its statement was undone before the commit point) says so
//! with [`BackendError::refused`]: a high-volume write refused that way is reported to the caller
//! as certainly not applied ([`Applied::No`](cairn_core::Applied::No)) instead of unknown.

use crate::{Body, Metadata};
use bytes::Bytes;
use cairn_core::{
    BlobId, Change, ChangeId, Guarded, HvRow, Instant, Key, KeyBuf, Revision, Span, Tombstone,
};
use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A failure reported by a backend. Opaque to cairn, kept for the caller.
pub struct BackendError {
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
    refused: bool,
}

impl BackendError {
    /// Wraps any error: the request may or may not have taken effect.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        BackendError {
            source: source.into(),
            refused: false,
        }
    }

    /// Wraps the error of a request that certainly took no effect and never will. Only for a
    /// failure before the request's commit point: a refusal that had in fact applied lets
    /// cleanup delete the blob a committed tombstone points at. When in doubt, use
    /// [`new`](Self::new).
    pub fn refused(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        BackendError {
            source: source.into(),
            refused: true,
        }
    }

    /// Whether the request certainly took no effect (see [`refused`](Self::refused)).
    pub fn is_refused(&self) -> bool {
        self.refused
    }

    /// The underlying error (to downcast it, say).
    pub fn source_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.source, f)
    }
}

/// Transparent: a backend error prints as the error it wraps, so its source is that error's own
/// source (naming the wrapped error again would show its message twice in every error report).
/// [`source_ref`](BackendError::source_ref) reaches the wrapped error itself.
impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

impl From<std::io::Error> for BackendError {
    fn from(e: std::io::Error) -> Self {
        BackendError::new(e)
    }
}

/// Shorthand for a backend call's result.
pub type BackendResult<T> = Result<T, BackendError>;

/// A high-volume row as a backend returns it: the core's view plus what the driver needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Row {
    /// No live row (expired rows are absent).
    Absent,
    /// An inline object. `payload` is `None` for a metadata read.
    Inline {
        /// The object's metadata.
        meta: Metadata,
        /// Its bytes, if they were asked for.
        payload: Option<Bytes>,
    },
    /// A redirect to a blob.
    Tombstone(Tombstone),
}

impl Row {
    /// The core's view of this row.
    #[inline]
    pub fn core(&self) -> HvRow {
        match self {
            Row::Absent => HvRow::Absent,
            Row::Inline { meta, .. } => HvRow::Inline(meta.core()),
            Row::Tombstone(t) => HvRow::Tombstone(*t),
        }
    }
}

/// What a conditional write stores.
#[derive(Clone, Copy, Debug)]
pub enum Write<'a> {
    /// A redirect to a blob.
    Tombstone(Tombstone),
    /// An inline object.
    Inline {
        /// Its metadata.
        meta: &'a Metadata,
        /// Its bytes.
        payload: &'a Bytes,
    },
    /// Removal of the row.
    Delete,
}

/// One live row in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListEntry {
    /// The key.
    pub key: KeyBuf,
    /// The row's core view: inline metadata or the tombstone.
    pub row: HvRow,
}

/// A change-log entry owned by the caller, as a scan returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The entry's id.
    pub id: ChangeId,
    /// The logical key.
    pub key: KeyBuf,
    /// The blob the mutation wrote.
    pub new: Option<Revision>,
    /// The blob it replaces.
    pub old: Option<Revision>,
}

/// The high-volume tier: every conditional method is atomic.
pub trait HvBackend: Send + Sync + 'static {
    /// Reads a row; with `payload: false` the payload must not be read at all.
    fn read(
        &self,
        key: &Key,
        payload: bool,
        now: Instant,
    ) -> impl Future<Output = BackendResult<Row>> + Send;
    /// Writes an inline object unless a live tombstone is there (then returns it, row untouched).
    fn put_non_tombstone(
        &self,
        key: &Key,
        meta: &Metadata,
        payload: &Bytes,
        now: Instant,
    ) -> impl Future<Output = BackendResult<Guarded>> + Send;
    /// Deletes the row unless a live tombstone is there (then returns it, row untouched).
    fn delete_non_tombstone(
        &self,
        key: &Key,
        now: Instant,
    ) -> impl Future<Output = BackendResult<Guarded>> + Send;
    /// Rewrites the row unless a live tombstone points at a blob other than `expected` (and
    /// other than the write's own target): decide exactly as [`cairn_core::cas_verdict`] on the
    /// row as live at `now`. Answers `true` if the row now holds the write (re-applying a write
    /// that is already there is optional), `false` on a conflict, having written nothing. Never
    /// retry this call internally after an ambiguous failure: report the failure instead.
    fn compare_and_write(
        &self,
        key: &Key,
        expected: Option<Revision>,
        write: Write<'_>,
        now: Instant,
    ) -> impl Future<Output = BackendResult<bool>> + Send;
    /// Up to `limit` live rows whose keys start with `prefix` and sort after `after`, in key order.
    fn list(
        &self,
        prefix: &[u8],
        after: Option<&Key>,
        limit: usize,
        now: Instant,
    ) -> impl Future<Output = BackendResult<Vec<ListEntry>>> + Send;
    /// This backend as a [`SyncHvBackend`], when it is one. The driver then serves high-volume
    /// requests with plain calls, on the spot, instead of building and polling a future for
    /// each: most of the cost of a small put or get over an in-memory tier. The blanket
    /// implementation for every `SyncHvBackend` answers `Some`; an async backend keeps the
    /// default, `None`.
    #[inline]
    fn as_sync(&self) -> Option<&dyn SyncHvBackend> {
        None
    }
    /// Resolves once every write this backend accepted before the call has taken effect or
    /// failed for good — those whose callers stopped waiting included. A store calls it when
    /// a put or delete is dropped (cancelled) half way: only then may recovery in the same
    /// process take over the operation's change-log entry, since a write of it still landing
    /// after recovery decided would undo the decision. A backend whose writes end when their
    /// futures are dropped keeps the default, which resolves at once; one that hands writes to
    /// a queue or a server that carries on without the caller must override it.
    fn settled(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
    /// [`read`](HvBackend::read) on the spot, for a backend whose *reads* never wait even if
    /// its writes do (an embedded database with a writer thread): `None` means "await `read`
    /// instead". The driver then serves a get's read with a plain call. The default answers
    /// `None`; every `SyncHvBackend` answers through [`as_sync`](HvBackend::as_sync) instead.
    #[inline]
    fn read_now(&self, key: &Key, payload: bool, now: Instant) -> Option<BackendResult<Row>> {
        let _ = (key, payload, now);
        None
    }
}

/// The long-term tier: blobs addressed by key and revision, each written once.
pub trait LtBackend: Send + Sync + 'static {
    /// Stores `body` as blob `blob` with `meta` (whose `size` the backend fills in), durably,
    /// returning the number of bytes written. A failed put may leave a partial blob behind;
    /// cleanup deletes it.
    fn put(
        &self,
        blob: BlobId<'_>,
        meta: &Metadata,
        body: Body,
    ) -> impl Future<Output = BackendResult<u64>> + Send;
    /// Opens a blob, whole or a span of it (already resolved against its size). Expired or
    /// absent blobs are `None`.
    fn get(
        &self,
        blob: BlobId<'_>,
        span: Option<Span>,
    ) -> impl Future<Output = BackendResult<Option<(Metadata, Body)>>> + Send;
    /// A blob's metadata, without its body.
    fn head(
        &self,
        blob: BlobId<'_>,
    ) -> impl Future<Output = BackendResult<Option<Metadata>>> + Send;
    /// Deletes a blob; deleting an absent blob succeeds.
    fn delete(&self, blob: BlobId<'_>) -> impl Future<Output = BackendResult<()>> + Send;
    /// Optional: writes blob `blob` in full, durably, but where nothing can see it — no read,
    /// listing or scan — and where a crash leaves only what the backend's own maintenance
    /// removes (the blob directory: a temp file). The driver calls it *while* the change-log
    /// record of the put commits, and [publishes](Staged::publish) the result when the core
    /// asks for the blob, so the record still precedes the blob's existence and the two syncs
    /// overlap instead of queueing.
    ///
    /// The default stages nothing and hands the body back ([`Staging::Unsupported`]); the
    /// driver then writes the blob with [`put`](LtBackend::put) in its turn. A backend that
    /// wraps another should forward this (as [`fault::Faulty`](crate::fault::Faulty) does), or
    /// the wrapped backend's staging is silently lost.
    fn stage(
        &self,
        blob: BlobId<'_>,
        meta: &Metadata,
        body: Body,
    ) -> impl Future<Output = Staging> + Send {
        let _ = (blob, meta);
        std::future::ready(Staging::Unsupported(body))
    }
    /// Resolves once every write this backend started before the call (a put, a publication,
    /// a delete) has taken effect or failed for good, those whose callers stopped waiting
    /// included: [`HvBackend::settled`] for this tier. A store awaits both before it cleans up
    /// after a put or delete dropped half way, so that no blob of the operation can appear after
    /// the cleanup decided to delete it. The default resolves at once, right for a backend whose
    /// writes end when their futures are dropped; one that hands its work to threads that carry
    /// on without the caller must override it,
    /// and a backend that wraps another forwards it (as [`fault::Faulty`](crate::fault::Faulty)
    /// does).
    fn settled(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// What [`LtBackend::stage`] did with a body.
pub enum Staging {
    /// Written and synced, invisible until published; dropping it discards it.
    Staged(Box<dyn Staged>),
    /// The write failed; the body is spent, so the blob write fails with this error.
    Failed(BackendError),
    /// This backend does not stage: here is the body back.
    Unsupported(Body),
}

/// A blob written by [`LtBackend::stage`], not yet visible. Dropping it unpublished discards it.
pub trait Staged: Send {
    /// The blob's revision, to check it against the write the core asks for.
    fn revision(&self) -> Revision;
    /// Makes the blob visible under its name, durably, and returns its size in bytes. Like a
    /// failed [`put`](LtBackend::put), a failed publish may leave a partial blob behind, which
    /// cleanup deletes.
    fn publish(self: Box<Self>) -> Pin<Box<dyn Future<Output = BackendResult<u64>> + Send>>;
}

/// The change-log entries of operations under way in this process, which recovery must leave to
/// them. A log that several stores in one process may share (through clones or an `Arc`) hands
/// them all one registry ([`ChangeLog::in_flight`]), so that one store's recovery never reclaims
/// an entry another store's put is still using: it would delete the blob that put is about to
/// point a tombstone at. Cheap to clone; clones share the set.
#[derive(Clone, Debug, Default)]
pub struct InFlightEntries(Arc<Mutex<HashSet<ChangeId>>>);

impl InFlightEntries {
    /// Marks `id` as in use by an operation under way.
    pub(crate) fn hold(&self, id: ChangeId) {
        crate::memory_lock(&self.0).insert(id);
    }

    /// Whether an operation under way uses `id`.
    pub(crate) fn holds(&self, id: ChangeId) -> bool {
        crate::memory_lock(&self.0).contains(&id)
    }

    /// Leaves `id` to recovery.
    pub(crate) fn release(&self, id: ChangeId) {
        crate::memory_lock(&self.0).remove(&id);
    }
}

/// The write-ahead change log.
pub trait ChangeLog: Send + Sync + 'static {
    /// Records a change durably before returning. Recording the same id twice is harmless.
    fn record(
        &self,
        id: ChangeId,
        change: Change<'_>,
    ) -> impl Future<Output = BackendResult<()>> + Send;
    /// Removes an entry; removing an absent one succeeds.
    fn remove(&self, id: ChangeId) -> impl Future<Output = BackendResult<()>> + Send;
    /// The first entry with an id greater than `after`, in id order, that this process may
    /// reclaim (a backend shared between processes skips entries of other live owners).
    fn scan(
        &self,
        after: Option<ChangeId>,
    ) -> impl Future<Output = BackendResult<Option<LogRecord>>> + Send;
    /// The registry of entries in use that every store built on this log shares (see
    /// [`InFlightEntries`]). `None` (the default) gives each store a registry of its own: right
    /// only for a log that one store uses at a time, or whose [`scan`](ChangeLog::scan) already
    /// skips the entries of every store but the caller.
    fn in_flight(&self) -> Option<&InFlightEntries> {
        None
    }
}

/// [`HvBackend`] for backends whose calls are synchronous.
#[allow(missing_docs)] // Each method is documented on its async twin.
pub trait SyncHvBackend: Send + Sync + 'static {
    fn read(&self, key: &Key, payload: bool, now: Instant) -> BackendResult<Row>;
    /// [`read`](SyncHvBackend::read), building the row in `into` (where the driver keeps it)
    /// and answering the core's view of it; on failure `into` is left as it was. The driver
    /// reads through this. Returned by value and then moved into place, a row cost the
    /// in-memory get 3 to 4 ns (measured when a get took 95 ns; the copy reads memory the
    /// callee has only just written), so a backend on a hot path builds it in place. The
    /// default calls `read` and moves; a wrapper forwards it.
    #[inline]
    fn read_into(
        &self,
        key: &Key,
        payload: bool,
        now: Instant,
        into: &mut Option<Row>,
    ) -> BackendResult<HvRow> {
        let row = self.read(key, payload, now)?;
        Ok(into.insert(row).core())
    }
    fn put_non_tombstone(
        &self,
        key: &Key,
        meta: &Metadata,
        payload: &Bytes,
        now: Instant,
    ) -> BackendResult<Guarded>;
    fn delete_non_tombstone(&self, key: &Key, now: Instant) -> BackendResult<Guarded>;
    fn compare_and_write(
        &self,
        key: &Key,
        expected: Option<Revision>,
        write: Write<'_>,
        now: Instant,
    ) -> BackendResult<bool>;
    fn list(
        &self,
        prefix: &[u8],
        after: Option<&Key>,
        limit: usize,
        now: Instant,
    ) -> BackendResult<Vec<ListEntry>>;
}

/// [`LtBackend`] for backends whose calls are synchronous. The body is still a stream: a
/// synchronous backend drains it with [`futures_lite::future::block_on`] or receives it whole.
#[allow(missing_docs)]
pub trait SyncLtBackend: Send + Sync + 'static {
    fn put(&self, blob: BlobId<'_>, meta: &Metadata, body: Bytes) -> BackendResult<u64>;
    fn get(&self, blob: BlobId<'_>, span: Option<Span>) -> BackendResult<Option<(Metadata, Body)>>;
    fn head(&self, blob: BlobId<'_>) -> BackendResult<Option<Metadata>>;
    fn delete(&self, blob: BlobId<'_>) -> BackendResult<()>;
}

/// [`ChangeLog`] for backends whose calls are synchronous.
#[allow(missing_docs)]
pub trait SyncChangeLog: Send + Sync + 'static {
    fn record(&self, id: ChangeId, change: Change<'_>) -> BackendResult<()>;
    fn remove(&self, id: ChangeId) -> BackendResult<()>;
    fn scan(&self, after: Option<ChangeId>) -> BackendResult<Option<LogRecord>>;
    fn in_flight(&self) -> Option<&InFlightEntries> {
        None
    }
}

impl<T: SyncHvBackend> HvBackend for T {
    async fn read(&self, key: &Key, payload: bool, now: Instant) -> BackendResult<Row> {
        SyncHvBackend::read(self, key, payload, now)
    }
    async fn put_non_tombstone(
        &self,
        key: &Key,
        meta: &Metadata,
        payload: &Bytes,
        now: Instant,
    ) -> BackendResult<Guarded> {
        SyncHvBackend::put_non_tombstone(self, key, meta, payload, now)
    }
    async fn delete_non_tombstone(&self, key: &Key, now: Instant) -> BackendResult<Guarded> {
        SyncHvBackend::delete_non_tombstone(self, key, now)
    }
    async fn compare_and_write(
        &self,
        key: &Key,
        expected: Option<Revision>,
        write: Write<'_>,
        now: Instant,
    ) -> BackendResult<bool> {
        SyncHvBackend::compare_and_write(self, key, expected, write, now)
    }
    async fn list(
        &self,
        prefix: &[u8],
        after: Option<&Key>,
        limit: usize,
        now: Instant,
    ) -> BackendResult<Vec<ListEntry>> {
        SyncHvBackend::list(self, prefix, after, limit, now)
    }
    #[inline]
    fn as_sync(&self) -> Option<&dyn SyncHvBackend> {
        Some(self)
    }
}

impl<T: SyncLtBackend> LtBackend for T {
    async fn put(&self, blob: BlobId<'_>, meta: &Metadata, body: Body) -> BackendResult<u64> {
        let bytes = body.bytes().await?;
        SyncLtBackend::put(self, blob, meta, bytes)
    }
    async fn get(
        &self,
        blob: BlobId<'_>,
        span: Option<Span>,
    ) -> BackendResult<Option<(Metadata, Body)>> {
        SyncLtBackend::get(self, blob, span)
    }
    async fn head(&self, blob: BlobId<'_>) -> BackendResult<Option<Metadata>> {
        SyncLtBackend::head(self, blob)
    }
    async fn delete(&self, blob: BlobId<'_>) -> BackendResult<()> {
        SyncLtBackend::delete(self, blob)
    }
}

impl<T: SyncChangeLog> ChangeLog for T {
    async fn record(&self, id: ChangeId, change: Change<'_>) -> BackendResult<()> {
        SyncChangeLog::record(self, id, change)
    }
    async fn remove(&self, id: ChangeId) -> BackendResult<()> {
        SyncChangeLog::remove(self, id)
    }
    async fn scan(&self, after: Option<ChangeId>) -> BackendResult<Option<LogRecord>> {
        SyncChangeLog::scan(self, after)
    }
    fn in_flight(&self) -> Option<&InFlightEntries> {
        SyncChangeLog::in_flight(self)
    }
}

// Shared backends: a restarted store, or a second writer, can open the same tiers.
impl<T: SyncHvBackend> SyncHvBackend for std::sync::Arc<T> {
    fn read(&self, key: &Key, payload: bool, now: Instant) -> BackendResult<Row> {
        (**self).read(key, payload, now)
    }
    #[inline]
    fn read_into(
        &self,
        key: &Key,
        payload: bool,
        now: Instant,
        into: &mut Option<Row>,
    ) -> BackendResult<HvRow> {
        (**self).read_into(key, payload, now, into)
    }
    fn put_non_tombstone(
        &self,
        key: &Key,
        meta: &Metadata,
        payload: &Bytes,
        now: Instant,
    ) -> BackendResult<Guarded> {
        (**self).put_non_tombstone(key, meta, payload, now)
    }
    fn delete_non_tombstone(&self, key: &Key, now: Instant) -> BackendResult<Guarded> {
        (**self).delete_non_tombstone(key, now)
    }
    fn compare_and_write(
        &self,
        key: &Key,
        expected: Option<Revision>,
        write: Write<'_>,
        now: Instant,
    ) -> BackendResult<bool> {
        (**self).compare_and_write(key, expected, write, now)
    }
    fn list(
        &self,
        prefix: &[u8],
        after: Option<&Key>,
        limit: usize,
        now: Instant,
    ) -> BackendResult<Vec<ListEntry>> {
        (**self).list(prefix, after, limit, now)
    }
}

impl<T: SyncLtBackend> SyncLtBackend for std::sync::Arc<T> {
    fn put(&self, blob: BlobId<'_>, meta: &Metadata, body: Bytes) -> BackendResult<u64> {
        (**self).put(blob, meta, body)
    }
    fn get(&self, blob: BlobId<'_>, span: Option<Span>) -> BackendResult<Option<(Metadata, Body)>> {
        (**self).get(blob, span)
    }
    fn head(&self, blob: BlobId<'_>) -> BackendResult<Option<Metadata>> {
        (**self).head(blob)
    }
    fn delete(&self, blob: BlobId<'_>) -> BackendResult<()> {
        (**self).delete(blob)
    }
}

impl<T: SyncChangeLog> SyncChangeLog for std::sync::Arc<T> {
    fn record(&self, id: ChangeId, change: Change<'_>) -> BackendResult<()> {
        (**self).record(id, change)
    }
    fn remove(&self, id: ChangeId) -> BackendResult<()> {
        (**self).remove(id)
    }
    fn scan(&self, after: Option<ChangeId>) -> BackendResult<Option<LogRecord>> {
        (**self).scan(after)
    }
    fn in_flight(&self) -> Option<&InFlightEntries> {
        (**self).in_flight()
    }
}
