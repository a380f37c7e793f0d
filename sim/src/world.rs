//! A deterministic, synchronous model of cairn's three tiers — the high-volume tier (HV), the
//! long-term blob tier (LT) and the change log — that answers core [`Request`]s.
//!
//! The world is the reference every backend is compared with and the ground the simulator
//! stands on. It is deliberately plain: `BTreeMap`s (so that iteration order, and therefore
//! every trace, is deterministic), no faults, no concurrency. A driver feeds it one request at a
//! time with [`World::apply`]; what goes wrong between the request and the machine (a lost
//! response, a failure before the request took effect) is the driver's business.
//!
//! Time: high-volume requests carry the machine's `now` and are judged at that instant (rows
//! expired then are absent for reads and for every conditional write). Long-term requests carry
//! no time, so blobs are judged at the world's own clock, which the driver moves forward with
//! [`World::advance_to`]. The invariant checkers use the world's clock too.
//!
//! Payloads are not stored. Instead every write carries an opaque *value tag* (see
//! [`OpContext`]), and every read reports the tag of what it saw ([`Answer::read`]), so that a
//! checker can tell which write a read observed.
//!
//! ```
//! use cairn_core::*;
//! use cairn_sim::world::{run, OpContext, World};
//!
//! let mut world = World::new();
//! let now = Instant::from_millis(1_000);
//! let key = Key::new(b"k").unwrap();
//! let meta = ObjectMeta { size: 5, created: now, expires: None };
//! let put = SmallPut::new(key, meta, ChangeId(1), Config::DEFAULT);
//! let done = run(&mut world, put, now, OpContext::put(7));
//! assert_eq!(done.result, Ok(WriteOutcome::Committed));
//! assert_eq!(world.row(key).and_then(|row| row.value()), Some(7));
//! ```

use cairn_core::{
    cas_verdict_planted, is_expired, CasVerdict, Change, ChangeId, Completion, Guarded, HvRow,
    HvWrite, Instant, Key, KeyBuf, LogEntry, Machine, ObjectMeta, PlantedBug, Poll, Request,
    Revision, Tombstone,
};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound;

/// Upper bound on poll/handle rounds in [`run`]. The longest legitimate operation (a recovery
/// pass over a handful of entries with retries) needs a few hundred; a machine that needs more
/// is looping.
pub const MAX_RUN_STEPS: usize = 10_000;

/// What the world stores in one high-volume row. Absent rows are not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// An object stored inline.
    Inline {
        /// Its metadata.
        meta: ObjectMeta,
        /// The value tag of the write that stored it.
        value: u64,
    },
    /// A redirect to the blob `{key}/{tombstone.revision}`.
    Tombstone(Tombstone),
}

impl Row {
    /// The row as the protocol sees it (without the value tag), ignoring expiry.
    pub fn hv(&self) -> HvRow {
        match *self {
            Row::Inline { meta, .. } => HvRow::Inline(meta),
            Row::Tombstone(t) => HvRow::Tombstone(t),
        }
    }

    /// When the row expires, if ever.
    pub fn expires(&self) -> Option<Instant> {
        match self {
            Row::Inline { meta, .. } => meta.expires,
            Row::Tombstone(t) => t.expires,
        }
    }

    /// Whether the row still counts at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        !is_expired(self.expires(), now)
    }

    /// The value tag of an inline row.
    pub fn value(&self) -> Option<u64> {
        match *self {
            Row::Inline { value, .. } => Some(value),
            Row::Tombstone(_) => None,
        }
    }

    /// The revision a tombstone row points at.
    pub fn target(&self) -> Option<Revision> {
        self.hv().target()
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.hv())?;
        match self.value() {
            Some(value) => write!(f, " value={value}"),
            None => Ok(()),
        }
    }
}

/// One blob in the long-term tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blob {
    /// Its length in bytes.
    pub size: u64,
    /// When it expires, if ever.
    pub expires: Option<Instant>,
    /// The value tag of the write that stored it.
    pub value: u64,
    /// False for a partly written blob (only a test or a fault layer makes one). Reads still find
    /// it; [`check_no_dangling_tombstone`] flags a tombstone that points at it.
    pub complete: bool,
}

impl Blob {
    /// Whether the blob still counts at `now`.
    pub fn is_live(&self, now: Instant) -> bool {
        !is_expired(self.expires, now)
    }
}

impl fmt::Display for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "size={} value={}", self.size, self.value)?;
        if let Some(at) = self.expires {
            write!(f, " expires={at}")?;
        }
        if !self.complete {
            f.write_str(" INCOMPLETE")?;
        }
        Ok(())
    }
}

/// A change-log entry as the world stores it: the core's [`Change`] with an owned key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedChange {
    /// The logical key.
    pub key: KeyBuf,
    /// The blob the mutation wrote, if any.
    pub new: Option<Revision>,
    /// The blob the mutation replaces, if any.
    pub old: Option<Revision>,
}

impl LoggedChange {
    /// Copies a change out of a request.
    pub fn from_change(change: &Change<'_>) -> LoggedChange {
        LoggedChange {
            key: change.key.to_key_buf(),
            new: change.new,
            old: change.old,
        }
    }

    /// The change as the core sees it, borrowing the key.
    pub fn as_change(&self) -> Change<'_> {
        Change {
            key: &self.key,
            new: self.new,
            old: self.old,
        }
    }

    /// Whether this entry names `revision` of `key` as its `new` or `old` blob.
    pub fn covers(&self, key: &Key, revision: Revision) -> bool {
        // Revisions first: comparing them is cheaper than comparing keys, and rarely equal.
        (self.new == Some(revision) || self.old == Some(revision)) && *self.key == *key
    }
}

/// How `compare_and_write` behaves on [`CasVerdict::AlreadyApplied`] (the row is already in the
/// target state). Both are legal backend implementations, and cairn must be correct under
/// either (DESIGN.md). The verdict itself is the core's [`cas_verdict`](cairn_core::cas_verdict), shared by every backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CasMode {
    /// Apply the write again and answer true.
    #[default]
    Reapply,
    /// Answer true without writing.
    Skip,
}

/// A deliberate bug in the simulated tiers, for the simulator's mutation testing: a backend that
/// breaks its contract in a way cairn cannot be expected to survive, which the checkers must
/// notice. `None` everywhere except in `cairn-sim mutants`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorldBug {
    /// Conditional writes (`put_non_tombstone`, `delete_non_tombstone`, `compare_and_write`)
    /// judge the stored row, so an expired tombstone still blocks or satisfies them.
    ConditionalOpsIgnoreExpiry,
    /// `LogScan` hands out entries that live operations still own.
    LogScanReturnsHeldEntries,
    /// A high-volume write answered [`Completion::Refused`] (certainly not applied) had been
    /// applied all the same — a backend that classifies a failure after its commit point as a
    /// refusal.
    RefusedAfterApplying,
}

/// What the driver knows about the operation a request belongs to, beyond the request itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpContext {
    /// The value tag of the operation's payload, stored by inline writes and blob writes.
    pub value: u64,
    /// The body length an `LtPut` stores (the driver streams the body; the core only learns the
    /// length from the answer).
    pub body_size: Option<u64>,
}

impl OpContext {
    /// An operation that writes no payload (get, head, delete, cleanup, recovery).
    pub const fn read() -> OpContext {
        OpContext {
            value: 0,
            body_size: None,
        }
    }

    /// A small put whose payload is tagged `value`.
    pub const fn put(value: u64) -> OpContext {
        OpContext {
            value,
            body_size: None,
        }
    }

    /// A large put whose body of `body_size` bytes is tagged `value`.
    pub const fn put_large(value: u64, body_size: u64) -> OpContext {
        OpContext {
            value,
            body_size: Some(body_size),
        }
    }
}

/// The world's answer to a request, owning everything (unlike [`Completion`], which borrows a
/// key for log entries). There is no failed reply: the world never fails; a driver that injects
/// failures feeds [`Completion::Failed`] itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// See [`Completion::Row`].
    Row(HvRow),
    /// See [`Completion::Guarded`].
    Guarded(Guarded),
    /// See [`Completion::Cas`].
    Cas(bool),
    /// See [`Completion::BlobWritten`].
    BlobWritten {
        /// Bytes written.
        size: u64,
    },
    /// See [`Completion::Blob`].
    Blob {
        /// Whether the blob exists.
        found: bool,
    },
    /// See [`Completion::Done`].
    Done,
    /// See [`Completion::Entry`]. Boxed: a key is a kilobyte, every other reply a few words.
    Entry(Option<(ChangeId, Box<LoggedChange>)>),
}

/// A [`Reply`] plus what the request read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// What to feed back to the machine (through [`Answer::completion`]).
    pub reply: Reply,
    /// The value tag of the inline row or blob the request found, if it found one.
    pub read: Option<u64>,
}

impl Answer {
    fn new(reply: Reply) -> Answer {
        Answer { reply, read: None }
    }

    /// The completion to hand to [`Machine::handle`], borrowing from this answer.
    pub fn completion(&self) -> Completion<'_> {
        match &self.reply {
            Reply::Row(row) => Completion::Row(*row),
            Reply::Guarded(g) => Completion::Guarded(*g),
            Reply::Cas(ok) => Completion::Cas(*ok),
            Reply::BlobWritten { size } => Completion::BlobWritten { size: *size },
            Reply::Blob { found } => Completion::Blob { found: *found },
            Reply::Done => Completion::Done,
            Reply::Entry(entry) => Completion::Entry(entry.as_ref().map(|(id, change)| LogEntry {
                id: *id,
                change: change.as_change(),
            })),
        }
    }
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.completion())
    }
}

/// The three tiers, in memory. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct World {
    mode: CasMode,
    now: Instant,
    // Keyed by the key's bytes, not by `KeyBuf`: a `KeyBuf` is a kilobyte inline, and the
    // simulator moves these maps' entries millions of times a second.
    hv: BTreeMap<Box<[u8]>, Row>,
    lt: BTreeMap<Box<[u8]>, BTreeMap<Revision, Blob>>,
    log: BTreeMap<ChangeId, Box<LoggedChange>>,
    held: BTreeSet<ChangeId>,
    /// A bug planted in the shared compare-and-write decision (`cas_verdict`).
    cas_bug: Option<PlantedBug>,
    /// A bug planted in these tiers themselves.
    bug: Option<WorldBug>,
    /// How many times a request met a stored row or blob that had expired.
    expired_seen: u64,
}

impl World {
    /// An empty world in [`CasMode::Reapply`] at time zero.
    pub fn new() -> World {
        World::default()
    }

    /// An empty world whose `compare_and_write` behaves as `mode` on an idempotent match.
    pub fn with_mode(mode: CasMode) -> World {
        World {
            mode,
            ..World::default()
        }
    }

    /// The `compare_and_write` mode.
    pub fn mode(&self) -> CasMode {
        self.mode
    }

    /// The backend bug planted, if any.
    pub fn bug(&self) -> Option<WorldBug> {
        self.bug
    }

    /// Plants bugs: `cas_bug` in the shared compare-and-write decision, `bug` in the tiers.
    pub fn plant(&mut self, cas_bug: Option<PlantedBug>, bug: Option<WorldBug>) {
        self.cas_bug = cas_bug;
        self.bug = bug;
    }

    /// How many times a request met a stored row or blob that had expired (a coverage count).
    pub fn expired_seen(&self) -> u64 {
        self.expired_seen
    }

    /// The world's clock, which judges blob expiry and the invariants.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Moves the world's clock to `now` (never backwards).
    pub fn advance_to(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// Performs `request` atomically and answers it. `op` supplies what the request itself does
    /// not carry: the payload's value tag and, for `LtPut`, the body length.
    ///
    /// # Panics
    /// On an `LtPut` without `op.body_size`, or a `LogRecord` that reuses an id for a different
    /// change: both are driver bugs.
    pub fn apply(&mut self, request: &Request<'_>, op: OpContext) -> Answer {
        match *request {
            Request::HvRead { key, now, .. } => {
                let row = self.counted_live_row(key, now);
                Answer {
                    reply: Reply::Row(row.map_or(HvRow::Absent, |r| r.hv())),
                    // A metadata read does not fetch the payload, but the metadata belongs to
                    // the same version, so the tag still says which write it saw.
                    read: row.and_then(|r| r.value()),
                }
            }
            Request::HvPutNonTombstone { key, meta, now } => {
                Answer::new(Reply::Guarded(match self.conditional_row(key, now) {
                    Some(Row::Tombstone(t)) => Guarded::Blocked(t),
                    _ => {
                        let value = op.value;
                        self.set_row(key, Row::Inline { meta, value });
                        Guarded::Applied
                    }
                }))
            }
            Request::HvDeleteNonTombstone { key, now } => {
                Answer::new(Reply::Guarded(match self.conditional_row(key, now) {
                    Some(Row::Tombstone(t)) => Guarded::Blocked(t),
                    _ => {
                        // An expired tombstone is removed too: it counts as absent.
                        self.hv.remove(key.as_bytes());
                        Guarded::Applied
                    }
                }))
            }
            Request::HvCompareAndWrite {
                key,
                expected,
                write,
                now,
            } => {
                let live = self
                    .conditional_row(key, now)
                    .map_or(HvRow::Absent, |r| r.hv());
                let verdict = cas_verdict_planted(live, expected, &write, self.cas_bug);
                let ok = match (verdict, self.mode) {
                    (CasVerdict::Conflict, _) => false,
                    (CasVerdict::AlreadyApplied, CasMode::Skip) => true,
                    (CasVerdict::Apply, _) | (CasVerdict::AlreadyApplied, CasMode::Reapply) => {
                        self.write_row(key, write, op.value);
                        true
                    }
                };
                Answer::new(Reply::Cas(ok))
            }
            // Revisions are fresh, so a second put of the same blob is a retry: it overwrites.
            Request::LtPut { blob, expires } => {
                let size = op
                    .body_size
                    .unwrap_or_else(|| panic!("driver bug: lt.put {blob} without a body size"));
                let stored = Blob {
                    size,
                    expires,
                    value: op.value,
                    complete: true,
                };
                self.set_blob(blob.key, blob.revision, stored);
                Answer::new(Reply::BlobWritten { size })
            }
            Request::LtGet { blob, .. } | Request::LtHead { blob } => {
                let found = self.live_blob(blob.key, blob.revision);
                if found.is_none() && self.blob(blob.key, blob.revision).is_some() {
                    self.expired_seen += 1;
                }
                Answer {
                    reply: Reply::Blob {
                        found: found.is_some(),
                    },
                    read: found.map(|b| b.value),
                }
            }
            Request::LtDelete { blob } => {
                self.remove_blob(blob.key, blob.revision);
                Answer::new(Reply::Done)
            }
            Request::LogRecord { id, change } => {
                let change = LoggedChange::from_change(&change);
                let existing = self
                    .log
                    .entry(id)
                    .or_insert_with(|| Box::new(change.clone()));
                assert_eq!(
                    **existing, change,
                    "driver bug: change id {id} recorded twice with different changes"
                );
                Answer::new(Reply::Done)
            }
            Request::LogRemove { id } => {
                self.log.remove(&id);
                Answer::new(Reply::Done)
            }
            Request::LogScan { after } => {
                let from = after.map_or(Bound::Unbounded, Bound::Excluded);
                let entry = self
                    .log
                    .range((from, Bound::Unbounded))
                    .find(|(id, _)| {
                        !self.held.contains(id)
                            || self.bug == Some(WorldBug::LogScanReturnsHeldEntries)
                    })
                    .map(|(id, change)| (*id, change.clone()));
                Answer::new(Reply::Entry(entry))
            }
        }
    }

    fn live_row(&self, key: &Key, now: Instant) -> Option<Row> {
        self.hv
            .get(key.as_bytes())
            .copied()
            .filter(|row| row.is_live(now))
    }

    /// [`World::live_row`], counting a row that expired.
    fn counted_live_row(&mut self, key: &Key, now: Instant) -> Option<Row> {
        let stored = self.hv.get(key.as_bytes()).copied();
        let live = stored.filter(|row| row.is_live(now));
        if stored.is_some() && live.is_none() {
            self.expired_seen += 1;
        }
        live
    }

    /// The row a conditional write is judged against: the live row, unless a planted bug makes
    /// the tiers ignore expiry there.
    fn conditional_row(&mut self, key: &Key, now: Instant) -> Option<Row> {
        if self.bug == Some(WorldBug::ConditionalOpsIgnoreExpiry) {
            return self.hv.get(key.as_bytes()).copied();
        }
        self.counted_live_row(key, now)
    }

    /// Performs an `LtPut` that fails part-way: it leaves an incomplete blob behind (which
    /// [`check_no_dangling_tombstone`] rejects if a tombstone ever points at it) and has no
    /// answer, since the driver reports the failure.
    ///
    /// # Panics
    /// If `request` is not an `LtPut` or `op` has no body size.
    pub fn apply_partial(&mut self, request: &Request<'_>, op: OpContext) {
        let Request::LtPut { blob, expires } = *request else {
            panic!("driver bug: only a blob write can be partial, not {request}")
        };
        let size = op
            .body_size
            .unwrap_or_else(|| panic!("driver bug: lt.put {blob} without a body size"));
        let partial = Blob {
            size: size / 2,
            expires,
            value: op.value,
            complete: false,
        };
        self.set_blob(blob.key, blob.revision, partial);
    }

    fn live_blob(&self, key: &Key, revision: Revision) -> Option<Blob> {
        self.blob(key, revision)
            .filter(|blob| blob.is_live(self.now))
            .copied()
    }

    fn write_row(&mut self, key: &Key, write: HvWrite, value: u64) {
        match write {
            HvWrite::Tombstone(t) => self.set_row(key, Row::Tombstone(t)),
            HvWrite::Inline(meta) => self.set_row(key, Row::Inline { meta, value }),
            HvWrite::Delete => {
                self.hv.remove(key.as_bytes());
            }
        }
    }

    // --- Inspection --------------------------------------------------------------------------

    /// The stored row for `key`, expired or not.
    pub fn row(&self, key: &Key) -> Option<&Row> {
        self.hv.get(key.as_bytes())
    }

    /// Every stored row, in key order.
    pub fn rows(&self) -> impl Iterator<Item = (&Key, &Row)> {
        self.hv.iter().map(|(key, row)| (stored_key(key), row))
    }

    /// The stored blob `{key}/{revision}`, expired or not.
    pub fn blob(&self, key: &Key, revision: Revision) -> Option<&Blob> {
        self.lt.get(key.as_bytes())?.get(&revision)
    }

    /// The stored blobs under `key`, expired or not, in revision order.
    pub fn blobs_of(&self, key: &Key) -> impl Iterator<Item = (Revision, &Blob)> {
        self.lt
            .get(key.as_bytes())
            .into_iter()
            .flat_map(|blobs| blobs.iter().map(|(rev, blob)| (*rev, blob)))
    }

    /// Every stored blob, in (key, revision) order.
    pub fn blobs(&self) -> impl Iterator<Item = (&Key, Revision, &Blob)> {
        self.lt.iter().flat_map(|(key, blobs)| {
            let key = stored_key(key);
            blobs.iter().map(move |(rev, blob)| (key, *rev, blob))
        })
    }

    /// Every change-log entry, in id order (held or not).
    pub fn log(&self) -> impl Iterator<Item = (ChangeId, &LoggedChange)> {
        self.log.iter().map(|(id, change)| (*id, &**change))
    }

    /// The change-log entry `id`, if it is open.
    pub fn entry(&self, id: ChangeId) -> Option<&LoggedChange> {
        self.log.get(&id).map(|change| &**change)
    }

    /// The value tag a read of `key` would return now: the inline row's, or the blob's behind a
    /// live tombstone (`None` if absent, expired, or the blob cannot be read).
    pub fn visible(&self, key: &Key) -> Option<u64> {
        match self.live_row(key, self.now)? {
            Row::Inline { value, .. } => Some(value),
            Row::Tombstone(t) => self.live_blob(key, t.revision).map(|blob| blob.value),
        }
    }

    /// Whether `id` is held by a live operation.
    pub fn is_held(&self, id: ChangeId) -> bool {
        self.held.contains(&id)
    }

    // --- Ownership of log entries by live operations -----------------------------------------

    /// Marks `id` as owned by a live operation: `LogScan` skips it until it is released.
    pub fn hold(&mut self, id: ChangeId) {
        self.held.insert(id);
    }

    /// The operation owning `id` finished or crashed: recovery may reclaim its entry.
    pub fn release(&mut self, id: ChangeId) {
        self.held.remove(&id);
    }

    // --- Tampering: changes behind cairn's back ----------------------------------------------

    /// Stores `row` under `key` directly.
    pub fn set_row(&mut self, key: &Key, row: Row) {
        match self.hv.get_mut(key.as_bytes()) {
            Some(stored) => *stored = row,
            None => {
                self.hv.insert(key.as_bytes().into(), row);
            }
        }
    }

    /// Removes the row under `key` directly.
    pub fn remove_row(&mut self, key: &Key) -> Option<Row> {
        self.hv.remove(key.as_bytes())
    }

    /// Stores `blob` as `{key}/{revision}` directly.
    pub fn set_blob(&mut self, key: &Key, revision: Revision, blob: Blob) {
        match self.lt.get_mut(key.as_bytes()) {
            Some(blobs) => {
                blobs.insert(revision, blob);
            }
            None => {
                self.lt
                    .insert(key.as_bytes().into(), BTreeMap::from([(revision, blob)]));
            }
        }
    }

    /// Removes the blob `{key}/{revision}` directly.
    pub fn remove_blob(&mut self, key: &Key, revision: Revision) -> Option<Blob> {
        // An emptied key keeps its (empty) map: keys come back, and reallocating costs more.
        self.lt.get_mut(key.as_bytes())?.remove(&revision)
    }

    /// Adds a change-log entry directly (as a crashed operation would have left it).
    pub fn set_entry(&mut self, id: ChangeId, change: LoggedChange) {
        self.log.insert(id, Box::new(change));
    }

    /// Stores an inline object directly.
    pub fn insert_inline(&mut self, key: &Key, meta: ObjectMeta, value: u64) {
        self.set_row(key, Row::Inline { meta, value });
    }

    /// Stores a committed large object directly: a complete blob and the tombstone pointing at
    /// it. Returns the tombstone.
    pub fn insert_large(
        &mut self,
        key: &Key,
        revision: Revision,
        size: u64,
        expires: Option<Instant>,
        value: u64,
    ) -> Tombstone {
        let tombstone = Tombstone {
            revision,
            size,
            expires,
        };
        let blob = Blob {
            size,
            expires,
            value,
            complete: true,
        };
        self.set_blob(key, revision, blob);
        self.set_row(key, Row::Tombstone(tombstone));
        tombstone
    }

    /// Makes the row under `key`, and the blob it points at if it is a tombstone, expire at
    /// `at`. Combine with [`World::advance_to`] (for blobs and checkers) and a later request
    /// `now` (for rows) to expire them.
    pub fn expire(&mut self, key: &Key, at: Instant) {
        let Some(row) = self.hv.get_mut(key.as_bytes()) else {
            return;
        };
        match row {
            Row::Inline { meta, .. } => meta.expires = Some(at),
            Row::Tombstone(t) => {
                t.expires = Some(at);
                let blob = self
                    .lt
                    .get_mut(key.as_bytes())
                    .and_then(|blobs| blobs.get_mut(&t.revision));
                if let Some(blob) = blob {
                    blob.expires = Some(at);
                }
            }
        }
    }
}

/// A stored key's bytes as a key: they were one when they were stored.
fn stored_key(bytes: &[u8]) -> &Key {
    Key::new(bytes).expect("only valid keys are stored")
}

/// One line per row, blob, log entry and held id, in that order: the world's state in a form
/// that diffs well.
impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (key, row) in self.rows() {
            writeln!(f, "hv {key} {row}")?;
        }
        for (key, revision, blob) in self.blobs() {
            writeln!(f, "lt {key}@{revision} {blob}")?;
        }
        for (id, change) in &self.log {
            writeln!(f, "log {id} {}", LogLine(change))?;
        }
        for id in &self.held {
            writeln!(f, "held {id}")?;
        }
        Ok(())
    }
}

struct LogLine<'a>(&'a LoggedChange);

impl fmt::Display for LogLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |r: Option<Revision>| r.map_or_else(|| "-".to_owned(), |r| r.to_string());
        write!(
            f,
            "key={} new={} old={}",
            self.0.key,
            opt(self.0.new),
            opt(self.0.old)
        )
    }
}

// --- Invariants -------------------------------------------------------------------------------
//
// The checkers return `Result<(), Violation>` so that they compose with `?`. A violation carries
// a kilobyte-sized key, which clippy flags (`result_large_err`); it is returned at most once per
// failing run, so its size does not matter and boxing it would only add noise.

/// Why a tombstone dangles, or misdescribes the blob it points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlobProblem {
    /// There is no such blob.
    Missing,
    /// The blob expired while its tombstone is still live.
    Expired,
    /// The blob was only partly written.
    Incomplete,
    /// The tombstone's size (which ranges resolve against) is not the blob's.
    WrongSize {
        /// The size the tombstone says.
        tombstone: u64,
        /// The blob's size.
        blob: u64,
    },
    /// The tombstone expires at another instant than its blob (they are written with one).
    WrongExpiry {
        /// When the tombstone expires.
        tombstone: Option<Instant>,
        /// When the blob expires.
        blob: Option<Instant>,
    },
}

impl BlobProblem {
    /// Whether the blob is there and readable, only not what the tombstone says it is.
    pub fn is_mismatch(self) -> bool {
        matches!(
            self,
            BlobProblem::WrongSize { .. } | BlobProblem::WrongExpiry { .. }
        )
    }
}

/// A broken invariant, with what it was found on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A live tombstone points at a blob that cannot be read (invariant 1), or that it
    /// misdescribes ([`BlobProblem::is_mismatch`]).
    DanglingTombstone {
        /// The key of the row.
        key: KeyBuf,
        /// The revision it points at.
        revision: Revision,
        /// What is wrong with the blob.
        problem: BlobProblem,
    },
    /// A live blob is neither referenced by a live tombstone nor covered by a change-log entry
    /// (invariant 2).
    OrphanBlob {
        /// The blob's key.
        key: KeyBuf,
        /// The blob's revision.
        revision: Revision,
    },
    /// At quiescence, a change-log entry is still open.
    OpenLogEntry {
        /// The entry's id.
        id: ChangeId,
        /// What it says.
        change: LoggedChange,
    },
    /// At quiescence, a live blob is not referenced by a live tombstone.
    UnreferencedBlob {
        /// The blob's key.
        key: KeyBuf,
        /// The blob's revision.
        revision: Revision,
    },
    /// A blob was deleted while a live tombstone pointed at it.
    DeletedWhileReferenced {
        /// The blob's key.
        key: KeyBuf,
        /// The blob's revision.
        revision: Revision,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::DanglingTombstone {
                key,
                revision,
                problem,
            } => match *problem {
                BlobProblem::WrongSize { tombstone, blob } => write!(
                    f,
                    "tombstone {key}@{revision} says size {tombstone}, its blob has {blob}"
                ),
                BlobProblem::WrongExpiry { tombstone, blob } => write!(
                    f,
                    "tombstone {key}@{revision} says expires {}, its blob {}",
                    expiry(tombstone),
                    expiry(blob)
                ),
                _ => write!(f, "dangling tombstone {key}@{revision}: blob {problem:?}"),
            },
            Violation::OrphanBlob { key, revision } => write!(
                f,
                "orphan blob {key}@{revision}: no tombstone and no log entry covers it"
            ),
            Violation::OpenLogEntry { id, change } => {
                write!(
                    f,
                    "log entry {id} still open at quiescence: {}",
                    LogLine(change)
                )
            }
            Violation::UnreferencedBlob { key, revision } => {
                write!(f, "blob {key}@{revision} unreferenced at quiescence")
            }
            Violation::DeletedWhileReferenced { key, revision } => {
                write!(
                    f,
                    "blob {key}@{revision} deleted while a live tombstone points at it"
                )
            }
        }
    }
}

impl std::error::Error for Violation {}

fn expiry(at: Option<Instant>) -> String {
    at.map_or_else(|| "never".to_owned(), |at| at.to_string())
}

/// Whether a live tombstone at `key` points at `revision`.
fn is_referenced(world: &World, key: &Key, revision: Revision) -> bool {
    world
        .live_row(key, world.now)
        .is_some_and(|row| row.target() == Some(revision))
}

fn live_blobs(world: &World) -> impl Iterator<Item = (&Key, Revision)> {
    world
        .blobs()
        .filter(|(_, _, blob)| blob.is_live(world.now))
        .map(|(key, revision, _)| (key, revision))
}

/// What keeps the blob a live tombstone `t` under `key` points at from being read, or from
/// being what `t` says it is, if anything.
fn blob_problem(world: &World, key: &Key, t: &Tombstone) -> Option<BlobProblem> {
    match world.blob(key, t.revision) {
        None => Some(BlobProblem::Missing),
        Some(blob) if !blob.is_live(world.now) => Some(BlobProblem::Expired),
        Some(blob) if !blob.complete => Some(BlobProblem::Incomplete),
        Some(blob) if blob.size != t.size => Some(BlobProblem::WrongSize {
            tombstone: t.size,
            blob: blob.size,
        }),
        Some(blob) if blob.expires != t.expires => Some(BlobProblem::WrongExpiry {
            tombstone: t.expires,
            blob: blob.expires,
        }),
        Some(_) => None,
    }
}

/// Invariant 1: every live tombstone points at an existing, complete, live blob, whose size and
/// expiry it carries.
#[allow(clippy::result_large_err)] // see the section comment
pub fn check_no_dangling_tombstone(world: &World) -> Result<(), Violation> {
    for (key, row) in world.rows() {
        let Row::Tombstone(t) = row else { continue };
        if !row.is_live(world.now) {
            continue;
        }
        let Some(problem) = blob_problem(world, key, t) else {
            continue;
        };
        return Err(Violation::DanglingTombstone {
            key: key.to_key_buf(),
            revision: t.revision,
            problem,
        });
    }
    Ok(())
}

/// Invariant 2: every live blob is referenced by a live tombstone or covered by an open
/// change-log entry (as its `new` or `old`; entries held by live operations count).
#[allow(clippy::result_large_err)] // see the section comment
pub fn check_no_orphan_blob(world: &World) -> Result<(), Violation> {
    for (key, revision) in live_blobs(world) {
        let covered = || world.log.values().any(|c| c.covers(key, revision));
        if !is_referenced(world, key, revision) && !covered() {
            return Err(Violation::OrphanBlob {
                key: key.to_key_buf(),
                revision,
            });
        }
    }
    Ok(())
}

/// Quiescence: the change log is empty and every live blob is referenced by a live tombstone.
/// Holds once every cleanup (or a recovery) has run against healthy tiers.
#[allow(clippy::result_large_err)] // see the section comment
pub fn check_quiescent(world: &World) -> Result<(), Violation> {
    if let Some((id, change)) = world.log().next() {
        return Err(Violation::OpenLogEntry {
            id,
            change: change.clone(),
        });
    }
    for (key, revision) in live_blobs(world) {
        if !is_referenced(world, key, revision) {
            return Err(Violation::UnreferencedBlob {
                key: key.to_key_buf(),
                revision,
            });
        }
    }
    Ok(())
}

/// No blob deleted while referenced: call it just before the world performs a request. An
/// `LtDelete` of the blob a live tombstone points at is a violation, whatever happens next.
#[allow(clippy::result_large_err)] // see the section comment
pub fn check_request(world: &World, request: &Request<'_>) -> Result<(), Violation> {
    match *request {
        Request::LtDelete { blob } if is_referenced(world, blob.key, blob.revision) => {
            Err(Violation::DeletedWhileReferenced {
                key: blob.key.to_key_buf(),
                revision: blob.revision,
            })
        }
        _ => Ok(()),
    }
}

/// [`check_safety`] restricted to one key: its row, and the blobs stored under it. After a step
/// that touched only `key`, this is all that can have changed (expiry aside, which takes a
/// tombstone and its blob together).
#[allow(clippy::result_large_err)] // see the section comment
pub fn check_safety_of(world: &World, key: &Key) -> Result<(), Violation> {
    let live = world.row(key).filter(|row| row.is_live(world.now));
    let referenced = live.and_then(|row| row.target());
    if let Some(Row::Tombstone(t)) = live {
        if let Some(problem) = blob_problem(world, key, t) {
            return Err(Violation::DanglingTombstone {
                key: key.to_key_buf(),
                revision: t.revision,
                problem,
            });
        }
    }
    for (revision, blob) in world.blobs_of(key) {
        if !blob.is_live(world.now) {
            continue;
        }
        let covered = || world.log.values().any(|c| c.covers(key, revision));
        if referenced != Some(revision) && !covered() {
            return Err(Violation::OrphanBlob {
                key: key.to_key_buf(),
                revision,
            });
        }
    }
    Ok(())
}

/// The safety invariants that hold after every step: no dangling tombstone, no orphan blob.
#[allow(clippy::result_large_err)] // see the section comment
pub fn check_safety(world: &World) -> Result<(), Violation> {
    check_no_dangling_tombstone(world)?;
    check_no_orphan_blob(world)
}

// --- A tiny driver ----------------------------------------------------------------------------

/// Drives `machine` to completion against `world`, starting at `now`: the crate-level loop of
/// `cairn_core`, with no faults. A [`Poll::Wait`] moves the local clock (and the world's) to the
/// deadline.
///
/// # Panics
/// If the machine is still not done after [`MAX_RUN_STEPS`] rounds.
pub fn run<M: Machine>(
    world: &mut World,
    mut machine: M,
    now: Instant,
    op: OpContext,
) -> M::Output {
    let mut now = now;
    for _ in 0..MAX_RUN_STEPS {
        world.advance_to(now);
        let answer = match machine.poll(now) {
            Poll::Io(request) => world.apply(&request, op),
            Poll::Wait(until) => {
                now = now.max(until);
                continue;
            }
            Poll::Done(output) => return output,
        };
        machine.handle(answer.completion());
    }
    panic!("machine not done after {MAX_RUN_STEPS} steps: it is looping")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::{BlobId, Span};

    const NOW: Instant = Instant::from_millis(1_000);
    const LATER: Instant = Instant::from_millis(2_000);
    const A: Revision = Revision(0xA);
    const B: Revision = Revision(0xB);
    const C: Revision = Revision(0xC);

    fn key() -> &'static Key {
        Key::new(b"k").expect("valid key")
    }

    fn meta(size: u64) -> ObjectMeta {
        ObjectMeta {
            size,
            created: NOW,
            expires: None,
        }
    }

    fn tomb(revision: Revision) -> Tombstone {
        Tombstone {
            revision,
            size: 10,
            expires: None,
        }
    }

    /// A row state a `compare_and_write` can meet.
    #[derive(Clone, Copy, Debug)]
    enum Start {
        Absent,
        Inline,
        Tomb(Revision),
        ExpiredTomb(Revision),
    }

    fn world_with(mode: CasMode, start: Start) -> World {
        let mut w = World::with_mode(mode);
        match start {
            Start::Absent => {}
            Start::Inline => w.insert_inline(key(), meta(3), 1),
            Start::Tomb(r) => w.set_row(key(), Row::Tombstone(tomb(r))),
            Start::ExpiredTomb(r) => w.set_row(
                key(),
                Row::Tombstone(Tombstone {
                    expires: Some(NOW),
                    ..tomb(r)
                }),
            ),
        }
        w
    }

    fn cas(w: &mut World, expected: Option<Revision>, write: HvWrite, value: u64) -> bool {
        let key = key();
        let request = Request::HvCompareAndWrite {
            key,
            expected,
            write,
            now: NOW,
        };
        match w.apply(&request, OpContext::put(value)).reply {
            Reply::Cas(ok) => ok,
            other => panic!("cas answered {other:?}"),
        }
    }

    /// What the row holds after a CAS: unchanged, or written by this op (value tag 9).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum After {
        Unchanged,
        Written,
    }

    /// The whole reference table of DESIGN.md, row by row, in both modes. Written out here
    /// independently of the core's `cas_verdict`, so that it also pins that function.
    #[test]
    fn compare_and_write_follows_the_shared_table_in_both_modes() {
        use After::*;
        use Start::*;
        let inline = HvWrite::Inline(meta(5));
        let tomb_b = HvWrite::Tombstone(tomb(B));
        let delete = HvWrite::Delete;
        // (start, expected, write, ok, after in Reapply, after in Skip)
        type Case = (Start, Option<Revision>, HvWrite, bool, After, After);
        let table: &[Case] = &[
            // expected = None: proceed only without a live tombstone.
            (Absent, None, tomb_b, true, Written, Written),
            (Inline, None, tomb_b, true, Written, Written),
            (ExpiredTomb(A), None, tomb_b, true, Written, Written),
            (Tomb(A), None, tomb_b, false, Unchanged, Unchanged),
            (Tomb(B), None, tomb_b, true, Written, Unchanged),
            // expected = Some(A), tombstone swap.
            (Tomb(A), Some(A), tomb_b, true, Written, Written),
            (Tomb(B), Some(A), tomb_b, true, Written, Unchanged),
            (
                Tomb(Revision(0xC)),
                Some(A),
                tomb_b,
                false,
                Unchanged,
                Unchanged,
            ),
            // The expected tombstone is gone: no blob reference to protect, so the write
            // applies (answering "conflict" would report a put lost to nobody).
            (Absent, Some(A), tomb_b, true, Written, Written),
            (Inline, Some(A), tomb_b, true, Written, Written),
            (ExpiredTomb(A), Some(A), tomb_b, true, Written, Written),
            // expected = Some(A), inline write.
            (Tomb(A), Some(A), inline, true, Written, Written),
            (Tomb(B), Some(A), inline, false, Unchanged, Unchanged),
            (Absent, Some(A), inline, true, Written, Written),
            (Inline, Some(A), inline, true, Written, Written),
            (ExpiredTomb(A), Some(A), inline, true, Written, Written),
            // expected = Some(A), delete.
            (Tomb(A), Some(A), delete, true, Written, Written),
            (Tomb(B), Some(A), delete, false, Unchanged, Unchanged),
            (Absent, Some(A), delete, true, Written, Written),
            (Inline, Some(A), delete, true, Written, Written),
            (ExpiredTomb(A), Some(A), delete, true, Written, Written),
        ];
        for &(start, expected, write, ok, reapply, skip) in table {
            for (mode, after) in [(CasMode::Reapply, reapply), (CasMode::Skip, skip)] {
                let mut w = world_with(mode, start);
                let before = w.row(key()).copied();
                let got = cas(&mut w, expected, write, 9);
                let case = format!("{mode:?}: {start:?} expected={expected:?} write={write:?}");
                assert_eq!(got, ok, "{case}: answer");
                let want = match after {
                    Unchanged => before,
                    Written => match write {
                        HvWrite::Tombstone(t) => Some(Row::Tombstone(t)),
                        HvWrite::Inline(meta) => Some(Row::Inline { meta, value: 9 }),
                        HvWrite::Delete => None,
                    },
                };
                assert_eq!(w.row(key()).copied(), want, "{case}: row after");
            }
        }
    }

    #[test]
    fn reapply_rewrites_an_idempotent_match_and_skip_leaves_it() {
        // The row already points at the write's target; only a field the write carries differs.
        let again = Tombstone {
            size: 20,
            ..tomb(B)
        };
        for (mode, size) in [(CasMode::Reapply, 20), (CasMode::Skip, 10)] {
            let mut w = world_with(mode, Start::Tomb(B));
            assert!(cas(&mut w, Some(A), HvWrite::Tombstone(again), 2));
            assert_eq!(
                w.row(key()).copied(),
                Some(Row::Tombstone(Tombstone { size, ..tomb(B) })),
                "{mode:?}"
            );
        }
    }

    fn guarded(w: &mut World, request: Request<'_>, value: u64) -> Guarded {
        match w.apply(&request, OpContext::put(value)).reply {
            Reply::Guarded(g) => g,
            other => panic!("guarded op answered {other:?}"),
        }
    }

    #[test]
    fn put_non_tombstone_is_blocked_only_by_a_live_tombstone() {
        let key = key();
        let put = Request::HvPutNonTombstone {
            key,
            meta: meta(5),
            now: NOW,
        };
        let mut w = world_with(CasMode::Reapply, Start::Tomb(A));
        assert_eq!(guarded(&mut w, put, 2), Guarded::Blocked(tomb(A)));
        assert_eq!(w.row(key), Some(&Row::Tombstone(tomb(A))), "untouched");

        for start in [Start::Absent, Start::Inline, Start::ExpiredTomb(A)] {
            let mut w = world_with(CasMode::Reapply, start);
            assert_eq!(guarded(&mut w, put, 2), Guarded::Applied, "{start:?}");
            let want = Row::Inline {
                meta: meta(5),
                value: 2,
            };
            assert_eq!(w.row(key), Some(&want), "{start:?}");
        }
    }

    #[test]
    fn delete_non_tombstone_is_blocked_only_by_a_live_tombstone() {
        let key = key();
        let delete = Request::HvDeleteNonTombstone { key, now: NOW };
        let mut w = world_with(CasMode::Reapply, Start::Tomb(A));
        assert_eq!(guarded(&mut w, delete, 0), Guarded::Blocked(tomb(A)));
        assert!(w.row(key).is_some());

        for start in [Start::Absent, Start::Inline, Start::ExpiredTomb(A)] {
            let mut w = world_with(CasMode::Reapply, start);
            assert_eq!(guarded(&mut w, delete, 0), Guarded::Applied, "{start:?}");
            assert_eq!(w.row(key), None, "{start:?}: expired rows are removed too");
        }
    }

    #[test]
    fn reads_treat_expired_rows_as_absent() {
        let key = key();
        let mut w = World::new();
        w.insert_inline(
            key,
            ObjectMeta {
                expires: Some(LATER),
                ..meta(3)
            },
            4,
        );
        let read = |now| Request::HvRead {
            key,
            payload: true,
            now,
        };
        let before = w.apply(&read(NOW), OpContext::read());
        assert!(matches!(before.reply, Reply::Row(HvRow::Inline(_))));
        assert_eq!(before.read, Some(4));
        let after = w.apply(&read(LATER), OpContext::read());
        assert_eq!(
            after.reply,
            Reply::Row(HvRow::Absent),
            "expires at its instant"
        );
        assert_eq!(after.read, None);
    }

    #[test]
    fn blobs_are_stored_read_and_deleted_by_revision() {
        let key = key();
        let blob = BlobId { key, revision: A };
        let mut w = World::new();
        let get = Request::LtGet {
            blob,
            span: Some(Span { start: 1, end: 2 }),
        };
        assert_eq!(
            w.apply(&get, OpContext::read()).reply,
            Reply::Blob { found: false }
        );
        let put = Request::LtPut {
            blob,
            expires: Some(LATER),
        };
        let written = w.apply(&put, OpContext::put_large(6, 70));
        assert_eq!(written.reply, Reply::BlobWritten { size: 70 });
        let got = w.apply(&get, OpContext::read());
        assert_eq!(
            (got.reply, got.read),
            (Reply::Blob { found: true }, Some(6))
        );
        let head = w.apply(&Request::LtHead { blob }, OpContext::read());
        assert_eq!(head.reply, Reply::Blob { found: true });

        w.advance_to(LATER);
        assert_eq!(
            w.apply(&get, OpContext::read()).reply,
            Reply::Blob { found: false },
            "an expired blob is missing"
        );
        let delete = Request::LtDelete { blob };
        assert_eq!(w.apply(&delete, OpContext::read()).reply, Reply::Done);
        assert_eq!(w.blob(key, A), None);
        assert_eq!(
            w.apply(&delete, OpContext::read()).reply,
            Reply::Done,
            "deleting a missing blob succeeds"
        );
    }

    #[test]
    #[should_panic(expected = "without a body size")]
    fn lt_put_needs_a_body_size() {
        let key = key();
        let put = Request::LtPut {
            blob: BlobId { key, revision: A },
            expires: None,
        };
        World::new().apply(&put, OpContext::put(1));
    }

    fn record(w: &mut World, id: u128, key: &Key, new: Option<Revision>) {
        let request = Request::LogRecord {
            id: ChangeId(id),
            change: Change {
                key,
                new,
                old: None,
            },
        };
        assert_eq!(w.apply(&request, OpContext::read()).reply, Reply::Done);
    }

    fn scan(w: &mut World, after: Option<u128>) -> Option<u128> {
        let request = Request::LogScan {
            after: after.map(ChangeId),
        };
        match w.apply(&request, OpContext::read()).reply {
            Reply::Entry(entry) => entry.map(|(id, _)| id.0),
            other => panic!("scan answered {other:?}"),
        }
    }

    #[test]
    fn log_record_is_idempotent_remove_tolerates_missing_and_scan_skips_held() {
        let key = key();
        let mut w = World::new();
        record(&mut w, 3, key, Some(A));
        record(&mut w, 3, key, Some(A));
        record(&mut w, 1, key, Some(B));
        record(&mut w, 2, key, None);
        assert_eq!(w.log().count(), 3);

        assert_eq!(scan(&mut w, None), Some(1));
        assert_eq!(scan(&mut w, Some(1)), Some(2));
        w.hold(ChangeId(2));
        assert_eq!(scan(&mut w, Some(1)), Some(3), "held entries are skipped");
        assert_eq!(scan(&mut w, Some(3)), None);
        w.release(ChangeId(2));
        assert_eq!(scan(&mut w, Some(1)), Some(2));

        let remove = Request::LogRemove { id: ChangeId(2) };
        assert_eq!(w.apply(&remove, OpContext::read()).reply, Reply::Done);
        assert_eq!(w.apply(&remove, OpContext::read()).reply, Reply::Done);
        assert_eq!(scan(&mut w, Some(1)), Some(3));
    }

    #[test]
    #[should_panic(expected = "recorded twice with different changes")]
    fn log_record_rejects_a_reused_id() {
        let key = key();
        let mut w = World::new();
        record(&mut w, 1, key, Some(A));
        record(&mut w, 1, key, Some(B));
    }

    #[test]
    fn log_scan_answer_borrows_an_owned_key() {
        let key = key();
        let mut w = World::new();
        record(&mut w, 1, key, Some(A));
        let answer = w.apply(&Request::LogScan { after: None }, OpContext::read());
        let Completion::Entry(Some(entry)) = answer.completion() else {
            panic!("expected an entry, got {answer}")
        };
        assert_eq!(
            (entry.id, entry.change.key, entry.change.new),
            (ChangeId(1), key, Some(A))
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // the closure builds expected checker results
    fn dangling_tombstone_is_reported_for_missing_expired_or_incomplete_blobs() {
        let key = key();
        let mut w = World::new();
        w.insert_large(key, A, 10, None, 1);
        assert_eq!(check_no_dangling_tombstone(&w), Ok(()));

        let dangling = |problem| {
            Err(Violation::DanglingTombstone {
                key: key.to_key_buf(),
                revision: A,
                problem,
            })
        };
        let blob = *w.blob(key, A).unwrap();
        w.set_blob(
            key,
            A,
            Blob {
                complete: false,
                ..blob
            },
        );
        assert_eq!(
            check_no_dangling_tombstone(&w),
            dangling(BlobProblem::Incomplete)
        );
        w.set_blob(
            key,
            A,
            Blob {
                expires: Some(NOW),
                ..blob
            },
        );
        w.advance_to(NOW);
        assert_eq!(
            check_no_dangling_tombstone(&w),
            dangling(BlobProblem::Expired)
        );
        w.set_blob(key, A, Blob { size: 11, ..blob });
        assert_eq!(
            check_no_dangling_tombstone(&w),
            dangling(BlobProblem::WrongSize {
                tombstone: 10,
                blob: 11
            })
        );
        let later = Some(LATER);
        w.set_blob(
            key,
            A,
            Blob {
                expires: later,
                ..blob
            },
        );
        assert_eq!(
            check_no_dangling_tombstone(&w),
            dangling(BlobProblem::WrongExpiry {
                tombstone: None,
                blob: later
            })
        );
        w.remove_blob(key, A);
        assert_eq!(
            check_no_dangling_tombstone(&w),
            dangling(BlobProblem::Missing)
        );

        w.expire(key, NOW);
        assert_eq!(
            check_no_dangling_tombstone(&w),
            Ok(()),
            "an expired tombstone is absent"
        );
    }

    #[test]
    fn orphan_blob_is_one_without_tombstone_or_log_entry() {
        let key = key();
        let mut w = World::new();
        w.insert_large(key, A, 10, None, 1);
        let blob = *w.blob(key, A).unwrap();
        w.set_blob(key, B, blob);
        let orphan = Err(Violation::OrphanBlob {
            key: key.to_key_buf(),
            revision: B,
        });
        assert_eq!(check_no_orphan_blob(&w), orphan);

        let change = LoggedChange {
            key: key.to_key_buf(),
            new: Some(B),
            old: Some(A),
        };
        w.set_entry(ChangeId(1), change.clone());
        assert_eq!(check_safety(&w), Ok(()), "covered by a log entry");
        assert_eq!(
            check_quiescent(&w),
            Err(Violation::OpenLogEntry {
                id: ChangeId(1),
                change
            })
        );
        w.remove_blob(key, B);
        let remove = Request::LogRemove { id: ChangeId(1) };
        w.apply(&remove, OpContext::read());
        assert_eq!(check_quiescent(&w), Ok(()));

        w.set_blob(
            key,
            B,
            Blob {
                expires: Some(NOW),
                ..blob
            },
        );
        w.advance_to(NOW);
        assert_eq!(check_quiescent(&w), Ok(()), "expired blobs are not orphans");
        w.expire(key, NOW);
        assert_eq!(
            check_quiescent(&w),
            Ok(()),
            "expiry takes the tombstone's blob too"
        );
    }

    #[test]
    fn deleting_a_referenced_blob_is_caught_before_it_happens() {
        let key = key();
        let mut w = World::new();
        w.insert_large(key, A, 10, None, 1);
        let delete = |revision| Request::LtDelete {
            blob: BlobId { key, revision },
        };
        assert_eq!(
            check_request(&w, &delete(A)),
            Err(Violation::DeletedWhileReferenced {
                key: key.to_key_buf(),
                revision: A
            })
        );
        assert_eq!(check_request(&w, &delete(B)), Ok(()), "not referenced");
        w.expire(key, NOW);
        w.advance_to(NOW);
        assert_eq!(
            check_request(&w, &delete(A)),
            Ok(()),
            "an expired tombstone"
        );
    }

    #[test]
    fn the_per_key_check_sees_what_the_whole_check_sees_on_that_key() {
        let (k, other) = (key(), Key::new(b"other").unwrap());
        let mut w = World::new();
        w.insert_large(k, A, 10, None, 1);
        w.insert_large(other, A, 10, None, 1);
        assert_eq!(check_safety_of(&w, k), Ok(()));
        w.remove_blob(k, A);
        let dangling = Err(Violation::DanglingTombstone {
            key: k.to_key_buf(),
            revision: A,
            problem: BlobProblem::Missing,
        });
        assert_eq!(check_safety_of(&w, k), dangling);
        assert_eq!(check_safety(&w), dangling);
        assert_eq!(check_safety_of(&w, other), Ok(()), "another key is fine");

        let mut w = World::new();
        w.set_blob(
            k,
            B,
            Blob {
                size: 1,
                expires: None,
                value: 1,
                complete: true,
            },
        );
        let orphan = Err(Violation::OrphanBlob {
            key: k.to_key_buf(),
            revision: B,
        });
        assert_eq!(check_safety_of(&w, k), orphan);
        w.set_entry(
            ChangeId(1),
            LoggedChange {
                key: k.to_key_buf(),
                new: Some(B),
                old: None,
            },
        );
        assert_eq!(check_safety_of(&w, k), Ok(()), "covered by the log");
        w.set_blob(
            k,
            A,
            Blob {
                size: 1,
                expires: None,
                value: 1,
                complete: false,
            },
        );
        w.set_row(k, Row::Tombstone(tomb(A)));
        assert_eq!(
            check_safety_of(&w, k),
            Err(Violation::DanglingTombstone {
                key: k.to_key_buf(),
                revision: A,
                problem: BlobProblem::Incomplete,
            }),
            "a partial blob behind a tombstone"
        );
    }

    #[test]
    fn a_partial_blob_write_leaves_an_incomplete_blob() {
        let key = key();
        let mut w = World::new();
        let put = Request::LtPut {
            blob: BlobId { key, revision: A },
            expires: None,
        };
        w.apply_partial(&put, OpContext::put_large(3, 40));
        let blob = w.blob(key, A).copied().unwrap();
        assert!(!blob.complete);
        assert_eq!((blob.size, blob.value), (20, 3));
    }

    #[test]
    fn planted_backend_bugs_break_their_contract() {
        let key = key();
        let expired = Tombstone {
            expires: Some(NOW),
            ..tomb(A)
        };
        let put = Request::HvPutNonTombstone {
            key,
            meta: meta(3),
            now: NOW,
        };
        let mut healthy = World::new();
        healthy.set_row(key, Row::Tombstone(expired));
        assert_eq!(guarded(&mut healthy, put, 1), Guarded::Applied);
        let mut buggy = World::new();
        buggy.plant(None, Some(WorldBug::ConditionalOpsIgnoreExpiry));
        buggy.set_row(key, Row::Tombstone(expired));
        assert_eq!(guarded(&mut buggy, put, 1), Guarded::Blocked(expired));

        let mut w = World::new();
        record(&mut w, 1, key, Some(A));
        w.hold(ChangeId(1));
        assert_eq!(scan(&mut w, None), None);
        w.plant(None, Some(WorldBug::LogScanReturnsHeldEntries));
        assert_eq!(scan(&mut w, None), Some(1));

        let mut w = world_with(CasMode::Reapply, Start::Tomb(B));
        assert!(!cas(&mut w, Some(A), HvWrite::Tombstone(tomb(C)), 1));
        w.plant(Some(PlantedBug::CasIgnoresExpected), None);
        assert!(cas(&mut w, Some(A), HvWrite::Tombstone(tomb(C)), 1));
    }

    #[test]
    fn quiescent_rejects_an_unreferenced_blob() {
        let key = key();
        let mut w = World::new();
        w.set_blob(
            key,
            A,
            Blob {
                size: 1,
                expires: None,
                value: 1,
                complete: true,
            },
        );
        assert_eq!(
            check_quiescent(&w),
            Err(Violation::UnreferencedBlob {
                key: key.to_key_buf(),
                revision: A
            })
        );
    }

    #[test]
    fn display_lists_every_tier_in_order() {
        let key = key();
        let mut w = World::new();
        w.insert_large(key, A, 10, None, 1);
        w.set_entry(
            ChangeId(2),
            LoggedChange {
                key: key.to_key_buf(),
                new: None,
                old: Some(A),
            },
        );
        w.hold(ChangeId(2));
        let a = "0000000000000000000000000000000a";
        let two = "00000000000000000000000000000002";
        assert_eq!(
            w.to_string(),
            format!(
                "hv \"k\" tombstone rev={a} size=10\n\
                 lt \"k\"@{a} size=10 value=1\n\
                 log {two} key=\"k\" new=- old={a}\n\
                 held {two}\n"
            )
        );
    }

    /// Waits once, then reads the row, then reports the instant it was polled at.
    struct WaitThenRead {
        key: KeyBuf,
        waited: bool,
        read: bool,
    }

    impl Machine for WaitThenRead {
        type Output = Instant;
        fn poll(&mut self, now: Instant) -> Poll<'_, Instant> {
            match (self.waited, self.read) {
                (false, _) => {
                    self.waited = true;
                    Poll::Wait(LATER)
                }
                (true, false) => Poll::Io(Request::HvRead {
                    key: &self.key,
                    payload: true,
                    now,
                }),
                (true, true) => Poll::Done(now),
            }
        }
        fn handle(&mut self, completion: Completion<'_>) {
            assert!(matches!(completion, Completion::Row(_)));
            self.read = true;
        }
    }

    #[test]
    fn run_follows_waits_to_their_deadline() {
        let mut w = World::new();
        let machine = WaitThenRead {
            key: key().to_key_buf(),
            waited: false,
            read: false,
        };
        assert_eq!(run(&mut w, machine, NOW, OpContext::read()), LATER);
        assert_eq!(w.now(), LATER, "the world's clock follows");
    }
}
