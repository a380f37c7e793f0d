//! The embedded default in one data directory: SQLite for the high-volume tier and the change
//! log (`cairn.sqlite`), a blob directory for the long-term tier (`blobs/`). Opening recovers and
//! sweeps; [`Embedded::maintain_every`] keeps doing both in the background; [`Embedded::fsck`]
//! checks the cross-tier invariants and can repair orphans.
//!
//! ```
//! use cairn_adapters::embedded::{Embedded, EmbeddedOptions};
//! use cairn_adapters::{InlineRuntime, PutOptions};
//! # futures_lite::future::block_on(async {
//! let dir = std::env::temp_dir().join(format!("cairn-doc-embedded-{}", std::process::id()));
//! let data = Embedded::open(&dir, EmbeddedOptions::default(), InlineRuntime).await?;
//! data.store().put("hello", "world", &PutOptions::default()).await?;
//! assert!(data.fsck(false).await?.is_clean());
//! # drop(data); std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

use crate::backend::{BackendError, LtBackend};
use crate::blobdir::{BlobDir, BlobDirOptions, BlobInfo};
use crate::runtime::Runtime;
use crate::sqlite::{
    LoggedChange, OpenError as SqliteOpenError, SqliteDb, SqliteHv, SqliteLog, SqliteOptions,
};
use crate::{Clock, CoarseClock, Error, TieredStore};
use cairn_core::{
    is_expired, BlobId, ChangeId, Config, Duration, HvRow, KeyBuf, RecoveryReport, Revision,
};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// The database file inside a data directory.
pub const DB_FILE: &str = "cairn.sqlite";
/// The blob directory inside a data directory.
pub const BLOB_DIR: &str = "blobs";
/// Rows examined per page when `fsck` walks the high-volume tier.
const FSCK_PAGE: usize = 1000;
/// Blob files whose headers one blocking job of `fsck` reads: a few hundred microseconds of
/// opens and reads per hop to the blocking pool, and a bounded page of what they found (each
/// entry holds its key inline, about a kilobyte).
const FSCK_BLOBS_PER_JOB: usize = 64;
/// Expired rows deleted per sweep statement; a sweep repeats until none is left.
const SWEEP_BATCH: usize = 1000;
/// Temporary blob files older than this are crash leftovers (a live write touches its file far
/// more often than this).
const STALE_TEMP_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// The store type of the embedded default.
pub type EmbeddedStore<R> = TieredStore<SqliteHv, BlobDir, SqliteLog, R>;

/// How to open a data directory.
pub struct EmbeddedOptions {
    /// Protocol settings.
    pub config: Config,
    /// SQLite settings (durability, busy timeout, lease).
    pub sqlite: SqliteOptions,
    /// Where `now` comes from, for the store, the lease and expiry of both tiers (default:
    /// [`CoarseClock`], like a store's; one clock for all, so the tiers agree on expiry).
    pub clock: Arc<dyn Clock>,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            config: Config::DEFAULT,
            sqlite: SqliteOptions::default(),
            clock: Arc::new(CoarseClock),
        }
    }
}

/// Why a data directory could not be opened. Like [`Error`], every message names its cause, and
/// the chain goes on from the cause's own cause.
#[derive(Debug)]
pub enum OpenError {
    /// The directory could not be created or read.
    Dir {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The database could not be opened.
    Sqlite(SqliteOpenError),
    /// The configuration is invalid, or the database could not be read while opening.
    Store(Error),
    /// The maintenance pass of [`Embedded::open`] failed: the database or the blob directory
    /// could not be read or written. (What recovery cannot clean up, single blobs the sweep
    /// cannot remove, and a disk too full for the pass to write, do not fail it: they wait for
    /// the next pass.)
    Maintenance(Error),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Dir { path, source } => {
                write!(f, "cannot use data directory {}: {source}", path.display())
            }
            OpenError::Sqlite(e) => e.fmt(f),
            OpenError::Store(e) => e.fmt(f),
            OpenError::Maintenance(e) => write!(f, "the maintenance pass on open failed: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Dir { source, .. } => source.source(),
            OpenError::Sqlite(e) => e.source(),
            OpenError::Store(e) | OpenError::Maintenance(e) => e.source(),
        }
    }
}

impl From<SqliteOpenError> for OpenError {
    fn from(e: SqliteOpenError) -> Self {
        OpenError::Sqlite(e)
    }
}

impl From<Error> for OpenError {
    fn from(e: Error) -> Self {
        OpenError::Store(e)
    }
}

/// What `fsck` found (and, with repair, fixed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// High-volume rows examined (expired ones included).
    pub rows: u64,
    /// Blob files examined (expired ones included).
    pub blobs: u64,
    /// Live tombstones whose blob is missing or expired: the object is lost (reads say not found).
    pub dangling: Vec<(KeyBuf, Revision)>,
    /// Live blobs that no tombstone (live or expired) references and no change-log entry covers;
    /// and expired blobs without the expiry marker that the sweep removes them by. Nothing
    /// would ever delete either.
    pub orphans: Vec<(KeyBuf, Revision, PathBuf)>,
    /// Change-log entries whose owner is no longer live (recovery has not reclaimed them yet),
    /// and this instance's own that no operation is using: cleanups that failed, waiting for
    /// the next recovery pass (with repair: ones its recovery could not finish either).
    pub stale_entries: Vec<LoggedChange>,
    /// Not a problem: change-log entries of another live instance — a write under way in
    /// another process, or one of a process killed less than its lease ago, which recovery
    /// takes over once the lease has run out.
    pub in_flight: Vec<LoggedChange>,
    /// Not a problem: temporary files in the blob directory, of writes under way or interrupted
    /// (those untouched for an hour go with the next maintenance pass).
    pub temp_files: u64,
    /// Their bytes.
    pub temp_bytes: u64,
    /// What in the blob directory is not a readable blob or cairn's own — a foreign file
    /// anywhere in it, a damaged header, a blob under another blob's name, a directory that
    /// cannot be listed — each as an error naming the path. Repair never deletes them: they may be someone's data, or the
    /// only copy of a damaged object.
    pub unreadable: Vec<String>,
    /// With repair: orphan blobs deleted.
    pub orphans_deleted: u64,
    /// With repair: what the recovery pass did.
    pub recovered: Option<RecoveryReport>,
    /// With repair, if its recovery deferred an entry: the last failure that recovery met.
    pub recovery_failure: Option<String>,
}

impl FsckReport {
    /// Whether nothing is wrong (after repair, whether nothing was left to fix is not implied).
    pub fn is_clean(&self) -> bool {
        self.dangling.is_empty()
            && self.orphans.is_empty()
            && self.stale_entries.is_empty()
            && self.unreadable.is_empty()
    }
}

/// A data directory opened as a tiered store on runtime `R`.
pub struct Embedded<R> {
    store: EmbeddedStore<R>,
    root: PathBuf,
    clock: Arc<dyn Clock>,
    passes: AtomicU64,
}

impl<R: Runtime> Embedded<R> {
    /// Opens (creating if needed) the data directory at `root`, runs recovery, and sweeps expired
    /// rows, expired blobs and stale temporary files.
    ///
    /// On a full disk the open succeeds even if that pass cannot write (claiming a dead
    /// process's change-log entries, removing finished ones, deleting expired rows): what it
    /// left waits for the next pass ([`maintain`](Embedded::maintain)), and the store opened
    /// can delete objects to free space, which refusing the open would leave no way to do.
    ///
    /// The blob directory runs its blocking writes, syncs, deletes and sweeps on `runtime`'s
    /// blocking pool ([`Runtime::unblock`], see [`BlobDirOptions::offload`]), its reads in
    /// place; with [`InlineRuntime`](crate::InlineRuntime), everything in place.
    pub async fn open(root: &Path, options: EmbeddedOptions, runtime: R) -> Result<Self, OpenError>
    where
        R: Clone,
    {
        let embedded = Self::open_unrecovered(root, options, runtime).await?;
        match embedded.maintain().await {
            Err(e) if !e.is_disk_full() => return Err(OpenError::Maintenance(e)),
            _ => {}
        }
        Ok(embedded)
    }

    /// Opens the data directory without the recovery and sweep passes of [`Embedded::open`]:
    /// for tools that want to look at what a crash left behind.
    pub async fn open_unrecovered(
        root: &Path,
        options: EmbeddedOptions,
        runtime: R,
    ) -> Result<Self, OpenError>
    where
        R: Clone,
    {
        let dir_err = |source| OpenError::Dir {
            path: root.to_path_buf(),
            source,
        };
        // Bad settings are refused before anything is created.
        options.config.validate().map_err(Error::from)?;
        options.sqlite.validate()?;
        // Every directory this open creates gets its own entry synced into its parent, or a
        // power loss could drop it with everything acknowledged inside. (Their contents' entries
        // are synced as they come: the blob directory's by its creation, the database's by
        // SQLite.) A parent this user may not read is left as it is.
        let absolute = std::path::absolute(root).map_err(dir_err)?;
        let created: Vec<&Path> = absolute.ancestors().take_while(|d| !d.is_dir()).collect();
        std::fs::create_dir_all(root).map_err(dir_err)?;
        for made in created {
            match made.parent().map(crate::blobdir::sync_dir) {
                Some(Err(e)) if e.kind() != std::io::ErrorKind::PermissionDenied => {
                    return Err(dir_err(e));
                }
                _ => {}
            }
        }
        let clock = options.clock;
        let db = SqliteDb::open(&root.join(DB_FILE), options.sqlite.clock(clock.clone()))?;
        // A blob directory gone (a disk not mounted, a link to an empty one) is not started over
        // empty under a database whose tombstones point into it: every large object would read
        // as lost, and every write's cleanup would miss. Only a database referring to no blob
        // may have it made afresh (a first open, or one a crash interrupted before it). Every
        // open makes the blob directory before it writes, so one referred to was there before
        // the reference: it is looked for again after the database was read, or a process
        // opening beside the first one to make the store (its directory made and a large put
        // logged between the two looks) would be refused.
        let blob_dir = root.join(BLOB_DIR);
        if !BlobDir::is_blob_dir(&blob_dir) {
            let refers = db.refers_to_blobs().map_err(|source| {
                OpenError::Store(Error::Read {
                    tier: cairn_core::Tier::Hv,
                    source,
                })
            })?;
            if refers && !BlobDir::is_blob_dir(&blob_dir) {
                return Err(OpenError::Dir {
                    path: blob_dir,
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the blob directory is missing or not cairn's, yet the database refers \
                         to blobs in it (is a disk not mounted?); cairn will not start it over \
                         empty",
                    ),
                });
            }
        }
        let blob_options = BlobDirOptions::default()
            .clock(clock.clone())
            .offload(runtime.clone());
        let blobs = BlobDir::open(&blob_dir, blob_options).map_err(dir_err)?;
        let store = TieredStore::builder(db.hv(), blobs, db.log())
            .config(options.config)
            .clock(clock.clone())
            .build(runtime)?;
        Ok(Embedded {
            store,
            root: absolute,
            clock,
            passes: AtomicU64::new(0),
        })
    }

    /// The store.
    pub fn store(&self) -> &EmbeddedStore<R> {
        &self.store
    }

    /// The data directory, as an absolute path.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The database.
    pub fn db(&self) -> &Arc<SqliteDb> {
        &self.store.hv().0
    }

    /// The blob directory.
    pub fn blobs(&self) -> &BlobDir {
        self.store.lt()
    }

    /// One maintenance pass: recovery, then expired rows, expired blobs and stale temporary files.
    /// Each step runs whatever became of the one before, and the first failure is returned:
    /// on a full disk, deleting expired blobs and stale temporary files frees space even when
    /// recovery or the sweep of expired rows found no room to write.
    pub async fn maintain(&self) -> Result<RecoveryReport, Error> {
        self.maintain_explained().await.map(|(report, _)| report)
    }

    /// [`maintain`](Embedded::maintain), with the last failure of its recovery pass if that
    /// deferred any change-log entry (see [`TieredStore::recover_explained`]).
    pub async fn maintain_explained(
        &self,
    ) -> Result<(RecoveryReport, Option<BackendError>), Error> {
        let recovered = self.store.recover_explained().await;
        let now = self.clock.now();
        let rows = self.sweep_expired_rows(now).await;
        let lt = |e: std::io::Error| Error::Read {
            tier: cairn_core::Tier::Lt,
            source: e.into(),
        };
        let sweep = move |dir: &BlobDir| {
            dir.sweep_expired(now)?;
            dir.remove_temp_files(STALE_TEMP_AGE)
        };
        let blobs = self.blobs().blocking_in(sweep).await.map_err(lt);
        let (report, cause) = recovered?;
        rows?;
        blobs?;
        self.passes.fetch_add(1, Ordering::AcqRel);
        Ok((report, cause))
    }

    /// Deletes every row expired at `now`, [`SWEEP_BATCH`] at a time. On a full disk a batch
    /// may need more of the WAL than there is (its pages are written to the WAL before they
    /// are copied into the database): smaller batches are tried then, down to a single row,
    /// each of which the writer fits into the WAL it has by copying the WAL back first.
    async fn sweep_expired_rows(&self, now: cairn_core::Instant) -> Result<(), Error> {
        let mut batch = SWEEP_BATCH;
        loop {
            match self.db().sweep_expired_rows(now, batch).await {
                Ok(swept) if swept < batch => return Ok(()),
                Ok(_) => {}
                Err(source) => {
                    let e = Error::Read {
                        tier: cairn_core::Tier::Hv,
                        source,
                    };
                    if batch == 1 || !e.is_disk_full() {
                        return Err(e);
                    }
                    batch = (batch / 8).max(1);
                }
            }
        }
    }

    /// How many maintenance passes have completed (the one on open included).
    pub fn maintenance_passes(&self) -> u64 {
        self.passes.load(Ordering::Acquire)
    }

    /// Runs [`maintain`](Embedded::maintain) every `interval` (at least 1 ms) in the background
    /// until the last handle to the store is dropped; a failed pass is retried at the next
    /// interval.
    pub fn maintain_every(self: &Arc<Self>, interval: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        self.store.every(interval, move |_| {
            let embedded = weak.upgrade();
            async move {
                let Some(embedded) = embedded else {
                    return false;
                };
                let _ = embedded.maintain().await;
                true
            }
        });
    }

    /// Checks the cross-tier invariants: no live tombstone without its blob, no live blob that
    /// nothing references or covers, no change-log entry whose owner is gone. With `repair`,
    /// runs recovery and deletes orphan blobs. Safe beside writes in this process or another:
    /// every finding is looked at again, in one snapshot, before it is reported or repaired.
    pub async fn fsck(&self, repair: bool) -> Result<FsckReport, Error> {
        self.fsck_with_progress(repair, |_| {}).await
    }

    /// [`fsck`](Embedded::fsck), calling `progress` with the report so far (its `rows` and
    /// `blobs` counts grow) after every page of rows, once the change log is read, and after
    /// every thousand blob files: a check of a large store reads every row and every blob
    /// file's header, which can take a while.
    pub async fn fsck_with_progress(
        &self,
        repair: bool,
        mut progress: impl FnMut(&FsckReport),
    ) -> Result<FsckReport, Error> {
        let mut report = FsckReport::default();
        if repair {
            let (recovered, cause) = self.store.recover_explained().await?;
            report.recovered = Some(recovered);
            report.recovery_failure = cause.map(|e| e.to_string());
        }
        let now = self.clock.now();
        let hv = |source| Error::Read {
            tier: cairn_core::Tier::Hv,
            source,
        };
        let lt_read = |source| Error::Read {
            tier: cairn_core::Tier::Lt,
            source,
        };
        let log = |source| Error::Read {
            tier: cairn_core::Tier::Log,
            source,
        };

        let mut tombstones: HashSet<(KeyBuf, Revision)> = HashSet::new();
        let mut after: Option<KeyBuf> = None;
        loop {
            let page = self.db().rows(after.as_deref(), FSCK_PAGE).map_err(hv)?;
            report.rows += page.len() as u64;
            progress(&report);
            for (key, row) in &page {
                if let HvRow::Tombstone(t) = row.at(now) {
                    tombstones.insert((key.clone(), t.revision));
                }
            }
            match page.last() {
                Some((key, _)) if page.len() == FSCK_PAGE => after = Some(key.clone()),
                _ => break,
            }
        }
        let entries = self.db().log_entries().map_err(log)?;
        let covered: HashSet<(KeyBuf, Revision)> = entries
            .iter()
            .flat_map(|e| {
                [e.record.new, e.record.old]
                    .into_iter()
                    .flatten()
                    .map(|r| (e.record.key.clone(), r))
            })
            .collect();
        let me = self.db().instance_id();
        // Entries that look stale: a dead owner's, and this instance's own that no operation
        // holds (a cleanup that failed, or a repair's recovery that could not finish one,
        // waiting for the next recovery pass). Each is looked at again once the blobs are
        // listed, below.
        let mut suspects = Vec::new();
        for entry in entries {
            if !entry.owner_live
                || (entry.owner == me && !self.db().in_flight().holds(entry.record.id))
            {
                suspects.push(entry.record.id);
            } else if entry.owner != me {
                report.in_flight.push(entry);
            }
        }
        progress(&report);
        let around = self
            .blobs()
            .blocking_in(|dir| Ok(dir.surroundings()))
            .await
            .map_err(|e| lt_read(e.into()))?;
        report.temp_files = around.temp_files;
        report.temp_bytes = around.temp_bytes;
        report
            .unreadable
            .extend(around.strays.iter().map(ToString::to_string));

        let mut live_blobs: HashSet<(KeyBuf, Revision)> = HashSet::new();
        let mut unswept = Vec::new();
        // Blobs that nothing seemed to refer to, with their expiry: looked at again below.
        let mut uncovered = Vec::new();
        // The headers are read on the blocking pool, a few dozen files per job, and the
        // markers of expired blobs looked for there too.
        let mut walk = Some(self.blobs().blobs());
        let mut listed = Vec::with_capacity(FSCK_BLOBS_PER_JOB);
        while let Some(mut blobs) = walk.take() {
            (walk, listed) = self
                .blobs()
                .blocking_in(move |dir| {
                    for blob in blobs.by_ref().take(FSCK_BLOBS_PER_JOB) {
                        let unswept = blob.as_ref().is_ok_and(|b| {
                            let blob = (&*b.key, b.revision, &*b.path);
                            is_expired(b.meta.expires, now)
                                && stays_forever(dir, blob, b.meta.expires, now)
                        });
                        listed.push((blob, unswept));
                    }
                    let more = listed.len() == FSCK_BLOBS_PER_JOB;
                    Ok((more.then_some(blobs), listed))
                })
                .await
                .map_err(|e| lt_read(e.into()))?;
            for (blob, expired_unswept) in listed.drain(..) {
                let BlobInfo {
                    key,
                    revision,
                    meta,
                    path,
                } = match blob {
                    Ok(blob) => blob,
                    Err(e) => {
                        // A listing that failed may have been reported with the surroundings.
                        let e = e.to_string();
                        if !report.unreadable[..around.strays.len()].contains(&e) {
                            report.unreadable.push(e);
                        }
                        continue;
                    }
                };
                report.blobs += 1;
                if report.blobs % FSCK_PAGE as u64 == 0 {
                    progress(&report);
                }
                if is_expired(meta.expires, now) {
                    if expired_unswept {
                        unswept.push((key, revision, path));
                    }
                    continue;
                }
                let id = (key, revision);
                if !tombstones.contains(&id) && !covered.contains(&id) {
                    uncovered.push((id.0.clone(), id.1, path, meta.expires));
                }
                live_blobs.insert(id);
            }
        }
        if !suspects.is_empty() {
            // Stale only if still so after the long listing: another process's recovery may
            // have reclaimed a dead owner's entry meanwhile (gone, or taken over by a live
            // instance: then it is in flight), and an operation of this instance finished (it
            // holds its entry until it removed it).
            let mut now_logged: HashMap<ChangeId, LoggedChange> = self
                .db()
                .log_entries()
                .map_err(log)?
                .into_iter()
                .map(|e| (e.record.id, e))
                .collect();
            for id in suspects {
                match now_logged.remove(&id) {
                    None => {}
                    Some(fresh)
                        if fresh.owner == me && self.db().in_flight().holds(fresh.record.id) => {}
                    Some(fresh) if fresh.owner_live && fresh.owner != me => {
                        report.in_flight.push(fresh);
                    }
                    Some(fresh) => report.stale_entries.push(fresh),
                }
            }
        }
        // The three reads above were made one after another while writes went on, so each
        // finding is looked at again. A put logs its entry before its blob exists and drops the
        // entry only after its tombstone committed or its blob was deleted; an overwrite or a
        // delete drops the old blob only after the tombstone stopped pointing at it; and
        // revisions are never reused. Hence a blob listed above that neither a tombstone nor an
        // entry refers to now is an orphan — if it is still there: a blob can be published,
        // committed, replaced, deleted and its entry dropped, all between the log's read and
        // this look, and such a blob, gone already, is no finding (beside a busy writer, most
        // passes would otherwise report one). Its file is looked at after the references:
        // nothing can refer to it again, so one still there now stays an orphan. And a
        // tombstone found above that still points at its revision now pointed at it
        // throughout, so its blob, missing in between, is really missing.
        //
        // A blob live when fsck began may have expired since, and its key been written again:
        // a write replaces an expired tombstone without a change-log entry (to every operation
        // it is absent), so nothing refers to the blob any more, rightly — the sweep removes it
        // by its marker. Such a blob is judged as the expired ones above are (`stays_forever`).
        let mut orphans = Vec::with_capacity(uncovered.len());
        for (key, revision, path, expires) in uncovered {
            if !self.db().blob_referenced(&key, revision).map_err(hv)? {
                orphans.push((key, revision, path, expires));
            }
        }
        let mut orphans = if orphans.is_empty() {
            Vec::new()
        } else {
            let now = self.clock.now();
            self.blobs()
                .blocking_in(move |dir| {
                    let found = orphans
                        .into_iter()
                        .filter(|(key, revision, path, expires)| {
                            stays_forever(dir, (key, *revision, path), *expires, now)
                        });
                    Ok(found.map(|(k, r, p, _)| (k, r, p)).collect::<Vec<_>>())
                })
                .await
                .map_err(|e| lt_read(e.into()))?
        };
        orphans.append(&mut unswept);
        report.orphans = orphans;
        for (key, revision) in tombstones {
            if live_blobs.contains(&(key.clone(), revision)) {
                continue;
            }
            let id = BlobId {
                key: &key,
                revision,
            };
            let missing = match self.blobs().head(id).await {
                Ok(found) => found.is_none(),
                // There, but damaged: an unreadable file (most likely listed as such already),
                // not a dangling tombstone.
                Err(e) => {
                    let e = e.to_string();
                    if !report.unreadable.contains(&e) {
                        report.unreadable.push(e);
                    }
                    false
                }
            };
            if missing && self.db().tombstone_is(&key, revision, now).map_err(hv)? {
                report.dangling.push((key, revision));
            }
        }
        report.dangling.sort();
        report.orphans.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));

        if repair {
            for (key, revision, _) in &report.orphans {
                self.blobs()
                    .delete(BlobId {
                        key,
                        revision: *revision,
                    })
                    .await
                    .map_err(lt_read)?;
                report.orphans_deleted += 1;
            }
        }
        Ok(report)
    }
}

/// Whether the blob of `key` at `revision`, in file `path`, stays forever unless fsck reports
/// it: it is still there, and no sweep will take it — it has not expired at `now`, or its
/// expiry marker is gone (removed by hand, or by a sweep older than the marker's grace period).
/// The marker is looked for first: a sweep unlinks a blob before its marker, so a blob still
/// there after its marker was found missing was not being swept meanwhile. Looks at files: for
/// the blocking pool.
fn stays_forever(
    dir: &BlobDir,
    (key, revision, path): (&cairn_core::Key, Revision, &Path),
    expires: Option<cairn_core::Instant>,
    now: cairn_core::Instant,
) -> bool {
    let swept = expires
        .filter(|_| is_expired(expires, now))
        .is_some_and(|at| dir.has_marker(key, revision, at));
    !swept
        && !matches!(std::fs::symlink_metadata(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}
