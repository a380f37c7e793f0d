//! The blob-directory long-term tier: one file per blob revision under a local directory,
//! written durably (temp file, `fdatasync`, rename, directory `fsync`) and read as a lazy stream.
//! It is the embedded default's long-term tier, beside SQLite's high-volume tier.
//!
//! # Layout
//!
//! Keys never become paths: a blob's path is built only from a 128-bit hash of its key and its
//! revision, both as fixed-width hex, and the key itself lives inside the file's header (so
//! `fsck` can map every file back to its key):
//!
//! ```text
//! {root}/LAYOUT                                          "cairn blobdir layout 1"
//! {root}/tmp/{revision}-{pid}-{seq}.partial              writes in progress, crash leftovers
//! {root}/blobs/{hh}/{keyhash}-{revision}.blob            finished blobs (256 fan-out dirs)
//! {root}/blobs/{hh}/{keyhash}-{revision}-{expires}.expires   empty markers of expiring blobs
//! ```
//!
//! # File format
//!
//! A versioned header (magic `CAIRNBLB`, version, header length, payload size, header checksum,
//! revision, created, expires, key, content type, user pairs), then the payload. Corrupt,
//! truncated or unknown-version headers are `InvalidData` errors naming the file.
//!
//! # Cost and guarantees
//!
//! - **put** streams the body into a temp file, 256 KiB of chunks per vectored write (memory:
//!   that batch plus the chunk that fills it), then one `fdatasync` of the file, one rename, one
//!   `fsync` of the fan-out directory. After `put` returns the blob survives a process kill and
//!   power loss.
//! - **get** opens the file, checks its header (key, revision, length, expiry) and returns a body
//!   that reads 64 KiB per pull, lazily. A range read seeks to `header length + start`.
//! - **delete** reads the header, unlinks the file and its marker, syncs the directory. Deleting
//!   a missing blob succeeds.
//! - **expiry**: a blob whose `expires` has passed (by the [`Clock`] in [`BlobDirOptions`]) is
//!   absent to `get` and `head`; [`BlobDir::sweep_expired`] deletes such files by listing
//!   directory names only, never opening a blob.
//!
//! # Blocking file I/O, and where it runs
//!
//! All I/O is blocking `std::fs`, in small steps: a put's temp file with its header, each
//! 256 KiB batch, the final header with the `fdatasync`, the publication (marker, rename,
//! directory `fsync`); a delete; a get's or head's open and header read, each 64 KiB chunk of a
//! body. Where the steps that write run is [`BlobDirOptions::offload`]'s choice:
//!
//! - **in place** (the default, and with [`InlineRuntime`](crate::InlineRuntime)): on the
//!   thread that polls the operation, which completes without ever suspending on the file
//!   system, with no hop and no allocation added — right for
//!   [`BlockingStore`](crate::BlockingStore) and threads of one's own;
//! - **on a runtime's blocking pool** ([`Runtime::unblock`]: tokio's `spawn_blocking`,
//!   `smol::unblock`), each step one job, so that a put's `fsync` — or a write the kernel
//!   holds back while it flushes dirty pages — never stalls the other tasks of an executor's
//!   worker. [`Embedded`](crate::embedded::Embedded) passes its runtime, and runs its sweeps
//!   and `fsck`'s listing there too. A step runs to its end even if the operation is dropped
//!   meanwhile: a write's temp file is then removed by the job itself, and
//!   [`LtBackend::settled`] waits for such jobs, so that the store's cleanup after a dropped
//!   put never races the publication of its blob.
//!
//! Reads run in place either way, as the SQLite tier's do: from the page cache a 64 KiB read
//! costs a few microseconds, far less than the hop to a pool and back (two thread wake-ups).
//! Measured for an 8 MiB get from a tokio task on the 2-core development VM, cache warm: in
//! place 0.6 ms; on the pool, 3.6 ms with a job per 256 KiB, 6.0 ms per 64 KiB. A read that
//! misses the cache holds its thread for one chunk's disk read.
//!
//! Every error is an `io::Error` naming the path, surfaced to the store as a
//! [`BackendError`]. Nothing here panics on bad data or failed I/O.
//!
//! ```
//! # futures_lite::future::block_on(async {
//! use cairn_adapters::backend::LtBackend;
//! use cairn_adapters::blobdir::{BlobDir, BlobDirOptions};
//! use cairn_adapters::{Body, Metadata};
//! use cairn_core::{BlobId, Key, Revision};
//!
//! let root = std::env::temp_dir().join(format!("cairn-doc-blobdir-{}", std::process::id()));
//! let dir = BlobDir::open(&root, BlobDirOptions::default())?;
//! let blob = BlobId { key: Key::new(b"../../etc/passwd").unwrap(), revision: Revision(7) };
//! dir.put(blob, &Metadata::default(), Body::from_bytes("stays inside the root")).await?;
//! let (meta, body) = dir.get(blob, None).await?.expect("stored");
//! assert_eq!(meta.size, 21);
//! assert_eq!(body.bytes().await?, "stays inside the root");
//! dir.delete(blob).await?;
//! assert!(dir.head(blob).await?.is_none());
//! # std::fs::remove_dir_all(&root)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod format;
mod layout;
mod list;
mod offload;
mod read;
mod sweep;
mod write;

pub(crate) use layout::sync_dir;
pub use list::{BlobInfo, Surroundings};
pub use sweep::{SweepReport, STALE_MARKER_AGE};

use crate::backend::{BackendError, BackendResult, LtBackend, Staging};
use crate::{Body, Clock, CoarseClock, Metadata, Runtime};
use cairn_core::{BlobId, Span};
use layout::{context, Layout, FANOUT_DIRS, LAYOUT_TAG};
use offload::Offload;
use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

/// How to open a [`BlobDir`].
///
/// ```
/// use cairn_adapters::blobdir::BlobDirOptions;
/// use cairn_adapters::{InlineRuntime, ManualClock};
/// use std::sync::Arc;
/// let clock = Arc::new(ManualClock::new(1_000));
/// // Under tokio, pass `TokioRuntime::current()` (feature `tokio`) instead.
/// let options = BlobDirOptions::default().clock(clock.clone()).offload(InlineRuntime);
/// ```
#[derive(Clone)]
pub struct BlobDirOptions {
    clock: Arc<dyn Clock>,
    offload: Option<Arc<dyn Runtime>>,
}

impl Default for BlobDirOptions {
    /// Expiry against [`CoarseClock`], the same default clock a store reads its `now` from, so
    /// that a blob never expires before the tombstone pointing at it does; file I/O in place.
    fn default() -> Self {
        BlobDirOptions {
            clock: Arc::new(CoarseClock),
            offload: None,
        }
    }
}

impl BlobDirOptions {
    /// The clock that decides whether a blob has expired (the long-term requests carry no
    /// `now`). Use the store's clock, so both tiers agree.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Runs the directory's blocking file work that waits for the disk — a put's writes, its
    /// `fdatasync`, its rename and directory `fsync`; a delete;
    /// [`Embedded`](crate::embedded::Embedded)'s sweeps and listings — on `runtime`'s blocking
    /// pool ([`Runtime::unblock`]), so that an `fsync` never stalls the tasks of an executor's
    /// worker. Reads (a get's or head's open and header, a body's chunks) run in place either
    /// way (see the [module documentation](crate::blobdir)). Pass the store's runtime. Without this (the
    /// default), or with a
    /// runtime that [runs inline](Runtime::runs_inline) such as
    /// [`InlineRuntime`](crate::InlineRuntime), every step runs in place on the thread that
    /// polls the operation, with no hop and no allocation added: right for
    /// [`BlockingStore`](crate::BlockingStore) and threads of one's own.
    pub fn offload(mut self, runtime: impl Runtime) -> Self {
        self.offload = (!runtime.runs_inline()).then(|| Arc::new(runtime) as Arc<dyn Runtime>);
        self
    }
}

impl fmt::Debug for BlobDirOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobDirOptions").finish_non_exhaustive()
    }
}

/// The long-term tier as a directory of blob files. Cheap to clone: clones share the directory.
///
/// Several `BlobDir`s, in one process or several, may open the same root: every write goes to
/// its own temp file and revision-named file, and renames are atomic.
#[derive(Clone)]
pub struct BlobDir {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    layout: Layout,
    clock: Arc<dyn Clock>,
    /// `None`: file I/O in place.
    offload: Option<Arc<Offload>>,
}

impl fmt::Debug for BlobDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobDir")
            .field("root", &self.root())
            .finish_non_exhaustive()
    }
}

impl BlobDir {
    /// Whether `root` holds a blob directory of any layout version (its `LAYOUT` file says so):
    /// for tools that must not make a store inside one.
    pub fn is_blob_dir(root: &Path) -> bool {
        let tag = Layout::new(root.to_path_buf()).tag_path();
        let family = LAYOUT_TAG.split(' ').next().unwrap_or(LAYOUT_TAG);
        std::fs::read(tag).is_ok_and(|t| t.starts_with(family.as_bytes()))
    }

    /// Opens the blob directory at `root`, creating it (and its fan-out directories, durably) if
    /// needed. A directory with another layout version is refused.
    pub fn open(root: &Path, options: BlobDirOptions) -> io::Result<BlobDir> {
        let new_root = !root.is_dir();
        std::fs::create_dir_all(root).map_err(context("creating", root))?;
        let root = std::fs::canonicalize(root).map_err(context("resolving", root))?;
        if let Some(parent) = root.parent().filter(|_| new_root) {
            // The root's own entry must be durable too, or a power loss could drop it whole.
            sync_dir(parent)?;
        }
        let layout = Layout::new(root);
        let tag = layout.tag_path();
        match std::fs::read(&tag) {
            Ok(found) if found == LAYOUT_TAG.as_bytes() => {}
            Ok(found) => {
                return Err(layout::corrupt(
                    &tag,
                    format_args!(
                        "unknown blob directory layout {:?} (this build reads {LAYOUT_TAG:?})",
                        String::from_utf8_lossy(&found)
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(context("reading", &tag)(e)),
        }
        // Every directory a put needs exists, durably, before the first put: puts never create
        // directories. Cheap when they exist already.
        let mut created = create_dir(layout.tmp())?;
        let blobs_created = create_dir(layout.blobs())?;
        let mut fanout_created = false;
        for index in 0..FANOUT_DIRS {
            fanout_created |= create_dir(&layout.fanout_dir(index))?;
        }
        if fanout_created {
            sync_dir(layout.blobs())?;
        }
        created |= blobs_created;
        if !tag.exists() {
            write_tag(&layout)?;
            created = true;
        }
        if created {
            sync_dir(layout.root())?;
        }
        Ok(BlobDir {
            inner: Arc::new(Inner {
                layout,
                clock: options.clock,
                offload: options
                    .offload
                    .map(|runtime| Arc::new(Offload::new(runtime))),
            }),
        })
    }

    /// The root directory (absolute, symlinks resolved).
    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    /// Every stored blob with its key and metadata read back from its file, expired ones
    /// included, in no particular order; for `fsck`. A file that cannot be read or sits at the
    /// wrong name is an `Err` item naming it, and the walk goes on.
    pub fn blobs(&self) -> impl Iterator<Item = io::Result<BlobInfo>> + Send + 'static {
        list::Blobs::new(self.inner.clone())
    }

    /// What lies around the blobs, for `fsck`: the temporary files, and whatever cairn did not
    /// put there (each reported, never removed).
    pub fn surroundings(&self) -> Surroundings {
        list::surroundings(&self.inner.layout)
    }

    /// Runs `job`, which blocks on the file system, on this directory: in place without an
    /// offloader (see [`BlobDirOptions::offload`]), else on a clone of it on the runtime's
    /// blocking pool, where it runs to its end even if this future is dropped.
    pub(crate) async fn blocking_in<T: Send + 'static>(
        &self,
        job: impl FnOnce(&BlobDir) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        match &self.inner.offload {
            None => job(self),
            Some(offload) => {
                let dir = self.clone();
                offload.run(move || job(&dir)).await
            }
        }
    }
}

/// Creates `dir` unless it exists, returning whether it did.
fn create_dir(dir: &Path) -> io::Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(context("creating", dir)(e)),
    }
}

/// Writes `LAYOUT` as every file here is written: temp file, sync, rename.
fn write_tag(layout: &Layout) -> io::Result<()> {
    let tag = layout.tag_path();
    let temp = layout.tag_temp_path();
    std::fs::File::create(&temp)
        .and_then(|mut f| {
            f.write_all(LAYOUT_TAG.as_bytes())?;
            f.sync_all()
        })
        .map_err(context("writing", &temp))?;
    std::fs::rename(&temp, &tag).map_err(context("renaming into place", &tag))
}

impl LtBackend for BlobDir {
    async fn put(&self, blob: BlobId<'_>, meta: &Metadata, body: Body) -> BackendResult<u64> {
        self.write(blob, meta, body)
            .await
            .map_err(BackendError::from)
    }

    async fn get(
        &self,
        blob: BlobId<'_>,
        span: Option<Span>,
    ) -> BackendResult<Option<(Metadata, Body)>> {
        // Reads run in place even with an offloader: see "Blocking file I/O" above.
        Ok(self.read(blob, span)?)
    }

    async fn head(&self, blob: BlobId<'_>) -> BackendResult<Option<Metadata>> {
        Ok(self.open_live(blob)?.map(|o| o.header.meta))
    }

    async fn delete(&self, blob: BlobId<'_>) -> BackendResult<()> {
        // The key travels to the job by value: at most `MAX_KEY_LEN` bytes, inline.
        let (key, revision) = (blob.key.to_key_buf(), blob.revision);
        let remove = move |dir: &BlobDir| {
            dir.remove(BlobId {
                key: &key,
                revision,
            })
        };
        Ok(self.blocking_in(remove).await?)
    }

    async fn stage(&self, blob: BlobId<'_>, meta: &Metadata, body: Body) -> Staging {
        match self.stage_blob(blob, meta, body).await {
            Ok(staged) => Staging::Staged(Box::new(staged)),
            Err(e) => Staging::Failed(e.into()),
        }
    }

    async fn settled(&self) {
        if let Some(offload) = &self.inner.offload {
            offload.settled().await;
        }
    }
}
