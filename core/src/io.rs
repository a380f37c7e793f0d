//! The I/O vocabulary between machines and drivers: every [`Request`] a machine can emit and every
//! [`Completion`] a driver can feed back. Each request matches one backend method one to one.
//!
//! Both implement `Display` in a stable, one-line form: the transcript tests and the simulator's
//! traces are made of these lines.

use crate::meta::Expiry;
use crate::{ChangeId, HvRow, Instant, Key, ObjectMeta, Revision, Span, Tombstone};
use core::fmt;

/// Which tier an I/O request went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    /// The high-volume key-value tier.
    Hv,
    /// The long-term blob tier.
    Lt,
    /// The write-ahead change log.
    Log,
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tier::Hv => "high-volume tier",
            Tier::Lt => "long-term tier",
            Tier::Log => "change log",
        })
    }
}

/// A blob in the long-term tier: the logical key plus a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobId<'a> {
    /// The logical key the blob belongs to.
    pub key: &'a Key,
    /// The revision that makes the blob unique.
    pub revision: Revision,
}

impl fmt::Display for BlobId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.key, self.revision)
    }
}

/// What a conditional write puts into a high-volume row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvWrite {
    /// Point the row at a blob.
    Tombstone(Tombstone),
    /// Store the operation's payload inline (the driver supplies the bytes).
    Inline(ObjectMeta),
    /// Remove the row.
    Delete,
}

impl HvWrite {
    /// The revision the row points at after this write, if it is a tombstone.
    pub fn target(&self) -> Option<Revision> {
        match self {
            HvWrite::Tombstone(t) => Some(t.revision),
            HvWrite::Inline(_) | HvWrite::Delete => None,
        }
    }
}

/// One entry of the change log: a mutation that may have left a blob behind.
///
/// `new` is the blob the mutation wrote (it must go if the mutation did not commit); `old` is the
/// blob it replaces (it must go if the mutation did commit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change<'a> {
    /// The logical key.
    pub key: &'a Key,
    /// The blob this mutation wrote, if any.
    pub new: Option<Revision>,
    /// The blob this mutation replaces, if any.
    pub old: Option<Revision>,
}

/// An I/O request emitted by a machine. The driver performs it and answers with the matching
/// [`Completion`]. Payload bytes are never here: the driver holds them for the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Read a row. `payload: false` is a metadata read that must not touch the payload column.
    /// Answer: [`Completion::Row`].
    HvRead {
        /// The key.
        key: &'a Key,
        /// Whether the driver wants the inline payload too.
        payload: bool,
        /// Rows expired at this instant are absent.
        now: Instant,
    },
    /// Write the operation's payload inline unless a live tombstone is there.
    /// Answer: [`Completion::Guarded`].
    HvPutNonTombstone {
        /// The key.
        key: &'a Key,
        /// Metadata of the inline object.
        meta: ObjectMeta,
        /// Rows expired at this instant are absent.
        now: Instant,
    },
    /// Delete the row unless a live tombstone is there. Answer: [`Completion::Guarded`].
    HvDeleteNonTombstone {
        /// The key.
        key: &'a Key,
        /// Rows expired at this instant are absent.
        now: Instant,
    },
    /// Apply `write` if the row matches `expected` (`None`: no live tombstone; `Some(r)`: a live
    /// tombstone pointing at `r`). Idempotent: a row already in the target state answers true.
    /// Answer: [`Completion::Cas`].
    HvCompareAndWrite {
        /// The key.
        key: &'a Key,
        /// The tombstone target the row must have.
        expected: Option<Revision>,
        /// What to write.
        write: HvWrite,
        /// Rows expired at this instant are absent.
        now: Instant,
    },
    /// Store the operation's body as a new blob. Answer: [`Completion::BlobWritten`].
    LtPut {
        /// The blob to create.
        blob: BlobId<'a>,
        /// The blob's expiry (the same as its tombstone's).
        expires: Option<Instant>,
    },
    /// Read a blob, whole or a span of it. Answer: [`Completion::Blob`].
    LtGet {
        /// The blob.
        blob: BlobId<'a>,
        /// The bytes wanted, already resolved against the blob's size; `None` for all.
        span: Option<Span>,
    },
    /// Read a blob's metadata only. Answer: [`Completion::Blob`].
    LtHead {
        /// The blob.
        blob: BlobId<'a>,
    },
    /// Delete a blob; deleting an absent blob succeeds. Answer: [`Completion::Done`].
    LtDelete {
        /// The blob.
        blob: BlobId<'a>,
    },
    /// Durably record a change before any of its long-term side effects. Idempotent per id.
    /// Answer: [`Completion::Done`].
    LogRecord {
        /// The entry's id.
        id: ChangeId,
        /// What the entry says.
        change: Change<'a>,
    },
    /// Remove a change after its cleanup; removing an absent entry succeeds.
    /// Answer: [`Completion::Done`].
    LogRemove {
        /// The entry's id.
        id: ChangeId,
    },
    /// The first reclaimable entry with an id greater than `after` (in id order), or none.
    /// Entries that a live operation still owns are not reclaimable and must be skipped.
    /// Answer: [`Completion::Entry`].
    LogScan {
        /// Exclusive lower bound.
        after: Option<ChangeId>,
    },
}

impl Request<'_> {
    /// The tier this request goes to.
    #[inline]
    pub fn tier(&self) -> Tier {
        match self {
            Request::HvRead { .. }
            | Request::HvPutNonTombstone { .. }
            | Request::HvDeleteNonTombstone { .. }
            | Request::HvCompareAndWrite { .. } => Tier::Hv,
            Request::LtPut { .. }
            | Request::LtGet { .. }
            | Request::LtHead { .. }
            | Request::LtDelete { .. } => Tier::Lt,
            Request::LogRecord { .. } | Request::LogRemove { .. } | Request::LogScan { .. } => {
                Tier::Log
            }
        }
    }
}

/// The outcome of `put_non_tombstone` / `delete_non_tombstone`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarded {
    /// The write (or delete) was applied; deleting an absent row counts as applied.
    Applied,
    /// A live tombstone is there; the row was left untouched.
    Blocked(Tombstone),
}

/// A change-log entry as returned by a scan. The key is borrowed from the driver only for the
/// duration of [`Machine::handle`](crate::Machine::handle); the machine copies what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// The entry's id.
    pub id: ChangeId,
    /// What the entry says.
    pub change: Change<'a>,
}

/// The answer to a [`Request`], fed back through [`Machine::handle`](crate::Machine::handle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completion<'a> {
    /// Answer to [`Request::HvRead`].
    Row(HvRow),
    /// Answer to [`Request::HvPutNonTombstone`] and [`Request::HvDeleteNonTombstone`].
    Guarded(Guarded),
    /// Answer to [`Request::HvCompareAndWrite`]: true if the row is now in the target state.
    Cas(bool),
    /// Answer to [`Request::LtPut`]: the blob is stored and durable; its length.
    BlobWritten {
        /// Bytes written.
        size: u64,
    },
    /// Answer to [`Request::LtGet`] / [`Request::LtHead`]: whether the blob exists.
    Blob {
        /// False if there is no such blob (deleted, expired, or never written).
        found: bool,
    },
    /// Answer to [`Request::LtDelete`], [`Request::LogRecord`] and [`Request::LogRemove`].
    Done,
    /// Answer to [`Request::LogScan`].
    Entry(Option<LogEntry<'a>>),
    /// The request failed. It either took effect before the failure was reported or never will;
    /// the machine cannot tell which. (A backend that may still apply a request after reporting
    /// its failure breaks this contract.)
    Failed,
    /// The request failed and certainly took no effect, nor ever will: the backend refused it
    /// before its commit point (a lock it could not get in time, a lease that no longer covers
    /// it). Machines take it as [`Failed`](Completion::Failed), except that a write refused at
    /// its commit point is reported as [`Applied::No`](crate::Applied::No). Answering `Refused`
    /// for a request that may have taken effect breaks the machines' guarantees; when in doubt,
    /// answer `Failed`.
    Refused,
}

impl Completion<'_> {
    /// [`Refused`](Completion::Refused) as the [`Failed`](Completion::Failed) it also is; any
    /// other answer as it is. For machines (and steps) to which the difference does not matter.
    #[inline]
    pub fn or_failed(self) -> Self {
        match self {
            Completion::Refused => Completion::Failed,
            other => other,
        }
    }
}

impl fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Request::HvRead { key, payload, now } => {
                let what = if payload { "hv.read" } else { "hv.read_meta" };
                write!(f, "{what} {key} now={now}")
            }
            Request::HvPutNonTombstone { key, meta, now } => write!(
                f,
                "hv.put_non_tombstone {key} size={}{} now={now}",
                meta.size,
                Expiry(meta.expires)
            ),
            Request::HvDeleteNonTombstone { key, now } => {
                write!(f, "hv.delete_non_tombstone {key} now={now}")
            }
            Request::HvCompareAndWrite {
                key,
                expected,
                write,
                now,
            } => {
                write!(f, "hv.compare_and_write {key} expected=")?;
                match expected {
                    Some(r) => write!(f, "tombstone({r})")?,
                    None => f.write_str("no-tombstone")?,
                }
                match write {
                    HvWrite::Tombstone(t) => write!(
                        f,
                        " write=tombstone({}) size={}{}",
                        t.revision,
                        t.size,
                        Expiry(t.expires)
                    )?,
                    HvWrite::Inline(m) => {
                        write!(f, " write=inline size={}{}", m.size, Expiry(m.expires))?
                    }
                    HvWrite::Delete => f.write_str(" write=delete")?,
                }
                write!(f, " now={now}")
            }
            Request::LtPut { blob, expires } => write!(f, "lt.put {blob}{}", Expiry(expires)),
            Request::LtGet {
                blob,
                span: Some(span),
            } => write!(f, "lt.get {blob} span={span}"),
            Request::LtGet { blob, span: None } => write!(f, "lt.get {blob}"),
            Request::LtHead { blob } => write!(f, "lt.head {blob}"),
            Request::LtDelete { blob } => write!(f, "lt.delete {blob}"),
            Request::LogRecord { id, change } => {
                write!(f, "log.record {id} key={} new=", change.key)?;
                fmt_opt(f, change.new)?;
                f.write_str(" old=")?;
                fmt_opt(f, change.old)
            }
            Request::LogRemove { id } => write!(f, "log.remove {id}"),
            Request::LogScan { after } => {
                f.write_str("log.scan after=")?;
                fmt_opt(f, after)
            }
        }
    }
}

fn fmt_opt<T: fmt::Display>(f: &mut fmt::Formatter<'_>, v: Option<T>) -> fmt::Result {
    match v {
        Some(v) => write!(f, "{v}"),
        None => f.write_str("-"),
    }
}

impl fmt::Display for Completion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Completion::Row(row) => write!(f, "{row}"),
            Completion::Guarded(Guarded::Applied) => f.write_str("applied"),
            Completion::Guarded(Guarded::Blocked(t)) => {
                write!(f, "blocked by {}", HvRow::Tombstone(*t))
            }
            Completion::Cas(true) => f.write_str("cas ok"),
            Completion::Cas(false) => f.write_str("cas conflict"),
            Completion::BlobWritten { size } => write!(f, "written size={size}"),
            Completion::Blob { found: true } => f.write_str("found"),
            Completion::Blob { found: false } => f.write_str("not found"),
            Completion::Done => f.write_str("ok"),
            Completion::Entry(None) => f.write_str("end of log"),
            Completion::Entry(Some(e)) => {
                write!(f, "entry {} key={} new=", e.id, e.change.key)?;
                fmt_opt(f, e.change.new)?;
                f.write_str(" old=")?;
                fmt_opt(f, e.change.old)
            }
            Completion::Failed => f.write_str("FAILED"),
            Completion::Refused => f.write_str("REFUSED"),
        }
    }
}
