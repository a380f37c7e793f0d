//! The embedded default for the high-volume tier and the change log: one SQLite database (bundled
//! SQLite, WAL mode) holding both (feature `sqlite`, on by default).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cairn_adapters::sqlite::{SqliteDb, SqliteOptions};
//! use cairn_adapters::{memory::MemoryLt, BlockingStore, PutOptions};
//! let dir = std::env::temp_dir().join(format!("cairn-doc-sqlite-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let db = SqliteDb::open(&dir.join("cairn.sqlite"), SqliteOptions::default())?;
//! let store = BlockingStore::new(db.hv(), MemoryLt::new(), db.log());
//! store.put("k", "v", &PutOptions::default())?; // committed and fsynced when this returns
//! assert_eq!(store.get_bytes("k")?.unwrap(), "v");
//! # drop(store); drop(db); std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! Three tables: `rows` (one high-volume row per key: an inline object or a tombstone, never both,
//! enforced by a `CHECK`), `changes` (the change log) and `instances` (leases); the full schema is
//! in `schema.rs`. Keys are BLOBs compared bytewise; listings and prefix scans are byte ranges
//! (`key >= prefix AND key < successor(prefix)`), never `LIKE`. Metadata is a small versioned
//! binary blob; a metadata read selects every column but the payload, which is stored last so
//! that its overflow pages are never touched. Statements are prepared once per connection and
//! cached.
//!
//! # Durability
//!
//! Every write — high-volume rows and change-log entries alike — goes to one writer thread that
//! owns the write connection and answers only after `COMMIT` returned.
//!
//! - [`Synchronous::Full`] (the default): SQLite fsyncs the WAL at every commit. **A write that
//!   has been acknowledged survives a process kill and a power loss** (given a disk that honours
//!   fsync).
//! - [`Synchronous::Normal`]: no fsync at commit, only at checkpoints. An acknowledged write
//!   survives a process kill (it is in the operating system's cache), but a power loss or kernel
//!   crash may lose the last commits. The database itself stays consistent either way.
//!
//! # Group commit
//!
//! The writer thread takes the first queued request, opens a `BEGIN IMMEDIATE` transaction and
//! runs it, then runs every other request already queued (up to 256; if one of the last three
//! batches was larger, it waits a moment — at most half the previous commit's time — for the
//! rest of those callers, running each as it arrives), commits, and then answers every caller. Each
//! request is isolated: one that writes with a single statement is undone by SQLite if that
//! statement fails, any other runs in its own `SAVEPOINT`, so one failing request fails alone.
//! N concurrent writers thus share one fsync; [`SqliteDb::writer_stats`] counts commits and
//! writes. One kind of write needs to be durable only eventually: removing a change-log entry
//! whose cleanup is over (lost in a crash, the entry is simply cleaned up again). A batch of
//! nothing but such removals commits without an fsync even under [`Synchronous::Full`]; the
//! next durable commit makes it durable too (see `writer.rs` for the argument).
//!
//! Reads do not queue: they run synchronously on the calling thread, on a small pool of read
//! connections (WAL lets readers run beside the writer), and see every write acknowledged before
//! they started.
//!
//! # Change-log ownership, leases and fencing
//!
//! Each [`SqliteDb::open`] registers a fresh *instance* with a lease (30 s by default,
//! [`SqliteOptions::lease`]), which the writer thread renews inside a batch whenever less than
//! half of it remains (also while idle). `record` stores the entry as owned by this instance.
//! `scan` returns entries this instance owns, skips those of other live instances (another
//! process may be in the middle of that operation), and takes over the entries of instances
//! whose lease has run out: in one write transaction it marks them `claimed` and re-owns their
//! entries, so recovery in one process never deletes blobs that a live process is still writing,
//! and a crashed process's entries are recovered once its lease has expired. A clean close ends
//! the lease at once.
//!
//! The other half is the **fence**: every `compare_and_write` and every `record` checks, inside
//! the transaction that writes it, that no other instance has claimed its own. A process that
//! stalled past its lease and whose entries another process took over — and whose blobs that
//! process may already be cleaning up — therefore can never commit a tombstone afterwards: its
//! writes fail with [`SqliteErrorKind::Fenced`], and the handle stays fenced; open the database
//! again for a fresh instance. A process that stalled (or whose [`Clock`] jumped) past its lease
//! while nobody claimed it simply renews in that transaction and carries on: a lapsed lease only
//! permits a takeover, it does not fence by itself.
//!
//! # A full disk
//!
//! A write that needs new space fails with [`SqliteErrorKind::Full`]; one that needs none
//! (deleting objects, which frees space) goes on working. Three things make that so:
//!
//! - The WAL and its index are kept when the last connection closes, and an open copies a
//!   kept WAL back into the database first: SQLite could not create them again, and every
//!   open (a write: it registers an instance) would fail.
//! - Every commit first makes room in the database file for the pages it leaves it with
//!   (`SQLITE_FCNTL_SIZE_HINT`), and fails, having written nothing, if there is none. The WAL
//!   can therefore always be copied back into the database, and start over from its beginning
//!   instead of growing: without that room, pages only the WAL held could not be copied on a
//!   full disk, and every later write — in every process, opening included — needed the WAL
//!   to grow.
//! - A batch that fails for want of space is copied back and tried again, job by job, so the
//!   writes that fit the WAL as it is commit, and one that needs space fails alone.
//!
//! # Expiry
//!
//! SQLite has no native expiry. Expired rows are absent to every read and conditional operation
//! (judged at the request's `now`, exactly like the in-memory tier);
//! [`SqliteDb::sweep_expired_rows`] deletes them in bounded batches.
//!
//! # Several handles, several processes
//!
//! Any number of handles (in one process or in several) may open the same file. A writer that
//! finds another connection holding the write lock waits up to [`SqliteOptions::busy_timeout`]
//! (5 s by default), then fails with [`SqliteErrorKind::Busy`], naming the database; nothing is
//! ever half written.

mod codec;
mod error;
mod hv;
mod lease;
mod log;
mod reader;
mod schema;
mod writer;

pub use crate::memory::CasMode;
pub use error::{SqliteError, SqliteErrorKind};
pub use hv::SqliteHv;
pub use log::{LoggedChange, SqliteLog};
pub use writer::WriterStats;

use crate::backend::{BackendResult, InFlightEntries};
use crate::{Clock, SystemClock};
use cairn_core::{Duration, Instant};
use lease::Lease;
use reader::Readers;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use writer::{Shape, Stats, Writer};

/// How hard SQLite works to make a commit durable. See [the module docs](self#durability).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync at every commit: acknowledged writes survive a process kill and a power loss.
    #[default]
    Full,
    /// fsync only at checkpoints: acknowledged writes survive a process kill, but a power loss
    /// may lose the last commits.
    Normal,
}

/// How to open a [`SqliteDb`].
///
/// ```
/// use cairn_adapters::sqlite::{CasMode, SqliteOptions, Synchronous};
/// use cairn_core::Duration;
/// let options = SqliteOptions::default()
///     .synchronous(Synchronous::Normal)
///     .busy_timeout(std::time::Duration::from_secs(1))
///     .lease(Duration::from_secs(10))
///     .cas_mode(CasMode::Skip);
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct SqliteOptions {
    synchronous: Synchronous,
    busy_timeout: std::time::Duration,
    lease: Duration,
    cas_mode: CasMode,
    clock: Arc<dyn Clock>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            synchronous: Synchronous::Full,
            busy_timeout: std::time::Duration::from_secs(5),
            lease: Duration::from_secs(30),
            cas_mode: CasMode::Reapply,
            clock: Arc::new(SystemClock),
        }
    }
}

impl fmt::Debug for SqliteOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteOptions")
            .field("synchronous", &self.synchronous)
            .field("busy_timeout", &self.busy_timeout)
            .field("lease", &self.lease)
            .field("cas_mode", &self.cas_mode)
            .finish_non_exhaustive()
    }
}

/// The longest busy timeout SQLite takes: `i32::MAX` milliseconds.
const MAX_BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(i32::MAX as u64);

impl SqliteOptions {
    /// Durability of each commit (default [`Synchronous::Full`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How long a write waits for another connection's lock before failing as busy (default
    /// 5 s). SQLite counts it in milliseconds in 31 bits: anything beyond about 24.8 days is
    /// that long.
    pub fn busy_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.busy_timeout = timeout.min(MAX_BUSY_TIMEOUT);
        self
    }

    /// How long an instance's lease lasts without renewal (default 30 s). A process that stalls
    /// longer than this may have its change-log entries taken over by another (and is fenced if
    /// they are); a crashed process's entries are recovered this long after its last renewal.
    /// The writer thread renews it, with a durable commit of its own, once half of it is gone:
    /// a lease of a few milliseconds costs a commit every few milliseconds, idle or not.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// What a compare-and-write does when the row is already in its target state (default
    /// [`CasMode::Reapply`]).
    pub fn cas_mode(mut self, mode: CasMode) -> Self {
        self.cas_mode = mode;
        self
    }

    /// Refuses settings no database can be opened with, before anything is touched.
    pub(crate) fn validate(&self) -> Result<(), OpenError> {
        if self.lease == Duration::ZERO {
            return Err(OpenError::ZeroLease);
        }
        Ok(())
    }

    /// The wall clock leases are judged by (default [`SystemClock`]). Row expiry is never judged
    /// by it: every request carries its own `now`.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
}

/// Why [`SqliteDb::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// SQLite failed (the file cannot be created or read, is locked past the busy timeout, …).
    #[error(transparent)]
    Sqlite(#[from] SqliteError),
    /// The file is an SQLite database, but not cairn's.
    #[error("{} is an SQLite database that cairn did not create", .path.display())]
    NotCairn {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by a cairn with a different schema.
    #[error(
        "{} has cairn schema version {found}; this build reads version {}",
        .path.display(),
        schema::SCHEMA_VERSION
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i32,
    },
    /// The lease option is zero: an instance would be dead on arrival.
    #[error("the instance lease must be at least 1 ms")]
    ZeroLease,
    /// The writer thread could not be started. (The message names the I/O error, which is
    /// therefore not also its source.)
    #[error("cannot start the SQLite writer thread: {0}")]
    Thread(std::io::Error),
}

/// What the handle, its writer thread and its readers share.
pub(crate) struct Shared {
    pub path: Arc<Path>,
    pub clock: Arc<dyn Clock>,
    pub cas_mode: CasMode,
    /// The configured durability of commits (lazy batches relax it for themselves).
    pub synchronous: Synchronous,
    pub lease: Lease,
    pub stats: Stats,
    /// The change-log entries in use by stores over this database (see
    /// [`ChangeLog::in_flight`](crate::backend::ChangeLog::in_flight)).
    pub in_flight: InFlightEntries,
}

impl Shared {
    /// Maps a SQLite failure while doing `what`.
    pub fn sqlite_err(&self, what: &'static str) -> impl Fn(rusqlite::Error) -> SqliteError + '_ {
        move |e| SqliteError::sqlite(&self.path, what, e)
    }
}

/// One open cairn SQLite database: the high-volume tier ([`SqliteHv`]) and the change log
/// ([`SqliteLog`]) over it, one registered instance, one writer thread and a few read
/// connections. Dropping the last handle (including those inside [`SqliteHv`] / [`SqliteLog`])
/// finishes queued writes, ends the lease and closes the file.
///
/// See [the module docs](self) for durability, group commit, leases and fencing.
pub struct SqliteDb {
    // Field order is drop order: the writer thread finishes (and releases the lease) first.
    writer: Writer,
    readers: Readers,
    shared: Arc<Shared>,
}

impl fmt::Debug for SqliteDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDb")
            .field("path", &self.shared.path)
            .field("instance", &self.shared.lease.instance)
            .finish_non_exhaustive()
    }
}

impl SqliteDb {
    /// Opens (creating if needed) the database at `path`, registers a fresh instance and starts
    /// the writer thread.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Arc<SqliteDb>, OpenError> {
        options.validate()?;
        // Absolute, since readers connect later, on demand: a relative path would be taken
        // from whatever the process's current directory is by then, perhaps another store.
        let path: Arc<Path> = match std::path::absolute(path) {
            Ok(absolute) => Arc::from(absolute),
            Err(e) => {
                let what = format!("resolving the path against the current directory: {e}");
                let path = Arc::from(path);
                return Err(SqliteError::new(&path, SqliteErrorKind::Sqlite, what).into());
            }
        };
        let conn = schema::connect(&path, &options, true)?;
        let refused = |e| match e {
            schema::SetupError::Sqlite(e) => OpenError::Sqlite(e),
            schema::SetupError::NotCairn => OpenError::NotCairn {
                path: path.to_path_buf(),
            },
            schema::SetupError::Version(found) => OpenError::UnsupportedVersion {
                path: path.to_path_buf(),
                found,
            },
        };
        // Whose file it is, before anything changes it (turning on WAL rewrites its header).
        // Processes opening a new file together race to turn WAL on, and SQLite answers the
        // switch with "busy" at once rather than wait: whoever loses tries again (and finds WAL
        // on), for as long as the busy timeout allows.
        let deadline = std::time::Instant::now() + options.busy_timeout;
        loop {
            let ready = schema::check(&conn, &path)
                .map_err(refused)
                .and_then(|_| Ok(schema::writer_mode(&conn, &path, &options)?));
            match ready {
                Err(OpenError::Sqlite(e))
                    if e.kind() == SqliteErrorKind::Busy
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                ready => break ready?,
            }
        }
        // The WAL kept from the last close (see `schema::persist_wal`) was checkpointed then, but
        // whoever opens it first rebuilds its index and counts none of it as copied back. Copying
        // it back now (pages the file already holds) lets the first write start the WAL over
        // instead of growing it, so on a full disk a store still opens, and deleting objects
        // frees space. Best effort: if it cannot finish, writes append as they would have.
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        let now = options.clock.now();
        let until = now + options.lease;
        let err = |what: &'static str| {
            let path = &path;
            move |e| OpenError::Sqlite(SqliteError::sqlite(path, what, e))
        };
        let instance = (|| {
            conn.execute_batch("BEGIN IMMEDIATE")
                .map_err(err("opening"))?;
            schema::setup(&conn, &path).map_err(refused)?;
            let instance = lease::register(&conn, until).map_err(err("registering"))?;
            lease::prune(&conn, instance, now).map_err(err("pruning instances"))?;
            schema::reserve(&conn, &path)?;
            conn.execute_batch("COMMIT").map_err(err("opening"))?;
            Ok(instance)
        })();
        let instance = match instance {
            Ok(id) => id,
            Err(e) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
                return Err(e);
            }
        };
        let shared = Arc::new(Shared {
            path: path.clone(),
            clock: options.clock.clone(),
            cas_mode: options.cas_mode,
            synchronous: options.synchronous,
            lease: Lease::new(instance, options.lease, until),
            stats: Stats::default(),
            in_flight: InFlightEntries::default(),
        });
        let writer = Writer::start(conn, shared.clone()).map_err(OpenError::Thread)?;
        Ok(Arc::new(SqliteDb {
            writer,
            readers: Readers::new(path, options),
            shared,
        }))
    }

    /// The high-volume tier over this database.
    pub fn hv(self: &Arc<Self>) -> SqliteHv {
        SqliteHv(self.clone())
    }

    /// The change log over this database.
    pub fn log(self: &Arc<Self>) -> SqliteLog {
        SqliteLog(self.clone())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// This handle's instance id: the owner of the change-log entries it records.
    pub fn instance_id(&self) -> i64 {
        self.shared.lease.instance
    }

    /// When this instance's lease runs out unless renewed (as last committed).
    pub fn lease_until(&self) -> Instant {
        self.shared.lease.until()
    }

    /// Whether this handle is known to be fenced: another instance claimed it after its lease ran
    /// out, so it may no longer record changes or compare-and-write. Open the database again.
    pub fn is_fenced(&self) -> bool {
        self.shared.lease.is_fenced()
    }

    /// Extends this instance's lease to `now + lease`, as the writer thread does on its own (a
    /// lapsed lease nobody claimed revives); returns the new end. Fails with
    /// [`SqliteErrorKind::Fenced`] if another instance claimed this one.
    pub async fn renew_lease(&self, now: Instant) -> BackendResult<Instant> {
        let until = self
            .writer
            .submit_shaped("renewing the instance lease", Shape::Atomic, move |cx| {
                let lease = &cx.shared.lease;
                match lease::renew(cx.conn, lease.instance, now, lease.duration) {
                    Ok(Some(until)) => Ok(until),
                    Ok(None) => {
                        lease.fence();
                        Err(lease::fenced(cx, "renewing the lease"))
                    }
                    Err(e) => Err(cx.shared.sqlite_err("renewing the instance lease")(e)),
                }
            })
            .await?;
        self.shared.lease.renewed(until);
        Ok(until)
    }

    /// The change-log entries in use by stores over this database (for `fsck`).
    #[cfg(feature = "blobdir")]
    pub(crate) fn in_flight(&self) -> &InFlightEntries {
        &self.shared.in_flight
    }

    /// Counters of the writer thread: commits, the writes they carried, the largest batch.
    pub fn writer_stats(&self) -> WriterStats {
        self.shared.stats.snapshot()
    }

    /// Runs `PRAGMA integrity_check`; returns SQLite's findings, `["ok"]` for a sound file.
    pub fn integrity_check(&self) -> BackendResult<Vec<String>> {
        let shared = &self.shared;
        let findings = self.readers.with(|conn| {
            let err = shared.sqlite_err("checking integrity");
            let mut stmt = conn.prepare("PRAGMA integrity_check").map_err(&err)?;
            let rows = stmt.query_map([], |r| r.get(0)).map_err(&err)?;
            rows.collect::<Result<Vec<String>, _>>().map_err(&err)
        })?;
        Ok(findings)
    }
}
