//! Writing a blob: stream the body into a temporary file, then publish it atomically.
//!
//! The sequence, and what a crash at each point leaves behind:
//!
//! 1. create `tmp/{revision}-{pid}-{seq}.partial` (exclusively) and write the header with size
//!    zero — a crash leaves a temp file, invisible to reads, removed by
//!    [`BlobDir::remove_temp_files`](super::BlobDir::remove_temp_files);
//! 2. write the body as it arrives, [`WRITE_BATCH_LEN`] bytes of chunks per vectored write —
//!    same;
//! 3. rewrite the header with the size and checksum, `fdatasync` the file — same;
//! 4. if the blob expires, create its empty expiry marker in the fan-out directory — a crash
//!    leaves a marker whose blob does not exist, which sweeping removes once it has expired;
//! 5. `rename` the temp file to its final name in the fan-out directory — atomic: the final
//!    path holds either nothing or the whole, synced file;
//! 6. `fsync` the fan-out directory, which makes the rename and the marker durable together.
//!
//! [`BlobDir::stage_blob`] does steps 1 to 3 and [`StagedBlob::publish`] steps 4 to 6, so that a
//! put's blob can be written while its change-log record commits (see
//! [`LtBackend::stage`](crate::backend::LtBackend::stage)); a plain put does both in a row.
//!
//! Only after step 6 does `put` return `Ok`; from then on the blob survives a process kill and
//! a power loss (given a file system and disk that honour `fsync`). Power loss cannot be
//! simulated in a unit test; the tests check the observable half: no file ever appears at a
//! final path before it is complete, and a failed or interrupted write leaves only a temp file.
//!
//! The fan-out directories are made (and synced) when the directory is opened, never here, so
//! a put never creates a directory and never has to sync a grandparent.

use super::format::Draft;
use super::layout::{context, key_hash, sync_dir, Layout};
use super::offload::Offload;
use super::BlobDir;
use crate::backend::{BackendError, BackendResult};
use crate::{Body, Metadata};
use bytes::Bytes;
use cairn_core::{BlobId, Revision};
use futures_lite::StreamExt;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of body chunks gathered before each write to the temp file. The chunks are held, not
/// copied, and go out in one vectored write. Measured on ext4 for an 8 MiB blob: 256 KiB per
/// system call writes as fast as one call for the whole blob, one call per 64 KiB chunk costs
/// about 15 % more, and copying chunks into a buffer costs more than that. This bounds a put's
/// memory: the batch plus the chunk that fills it.
pub(crate) const WRITE_BATCH_LEN: usize = 256 * 1024;

/// Most chunks in one vectored write: far below every platform's `IOV_MAX` (1024 on Linux), and
/// enough that a body of tiny chunks still shares each system call among many of them.
const MAX_BATCH_CHUNKS: usize = 64;

/// How many temp names a put tries before giving up: a name is only taken if a crashed process
/// with a recycled pid left it behind, so a second try all but never happens.
const MAX_TEMP_ATTEMPTS: usize = 4;

/// A temp file that is removed when dropped, unless it was published: a put that fails, or whose
/// future is dropped mid-stream (a cancelled task), cleans up too. The removal runs on the
/// directory's blocking pool if it has one, since a future may be dropped on an executor thread,
/// and is counted there for [`settled`](super::offload::Offload::settled).
struct TempFile {
    path: PathBuf,
    published: bool,
    offload: Option<Arc<Offload>>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.published {
            return;
        }
        // Best effort: a leftover is harmless and `remove_temp_files` takes it later.
        let path = std::mem::take(&mut self.path);
        let remove = move || drop(std::fs::remove_file(path));
        match &self.offload {
            Some(offload) if !crate::runtime::in_blocking_job() => offload.detach(remove),
            _ => remove(),
        }
    }
}

/// A blob written and synced to its temp file (steps 1 to 3), waiting for steps 4 to 6.
/// Dropped unpublished, its temp file goes.
pub(crate) struct StagedBlob {
    temp: TempFile,
    final_path: PathBuf,
    marker: Option<PathBuf>,
    revision: Revision,
    size: u64,
    /// Where steps 4 to 6 run: `None`, in place.
    offload: Option<Arc<Offload>>,
}

impl StagedBlob {
    /// Steps 4 to 6: the expiry marker, the rename, the directory sync; on the blocking pool of
    /// the directory's runtime, if it has one. Once started there, they run to their end even if
    /// this future is dropped (see [`LtBackend::settled`](crate::backend::LtBackend::settled)).
    pub(crate) async fn publish(mut self) -> io::Result<u64> {
        match self.offload.take() {
            None => self.publish_here(),
            Some(offload) => offload.run(move || self.publish_here()).await,
        }
    }

    fn publish_here(mut self) -> io::Result<u64> {
        if let Some(marker) = &self.marker {
            File::create(marker).map_err(context("creating expiry marker", marker))?;
        }
        if let Err(e) = std::fs::rename(&self.temp.path, &self.final_path) {
            if let Some(marker) = &self.marker {
                let _ = std::fs::remove_file(marker);
            }
            return Err(context("renaming into place", &self.final_path)(e));
        }
        self.temp.published = true;
        sync_dir(parent(&self.final_path))?;
        Ok(self.size)
    }
}

impl crate::backend::Staged for StagedBlob {
    fn revision(&self) -> Revision {
        self.revision
    }

    fn publish(
        self: Box<Self>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = BackendResult<u64>> + Send>> {
        Box::pin(async move { StagedBlob::publish(*self).await.map_err(BackendError::from) })
    }
}

impl BlobDir {
    pub(crate) async fn write(
        &self,
        blob: BlobId<'_>,
        meta: &Metadata,
        body: Body,
    ) -> io::Result<u64> {
        self.stage_blob(blob, meta, body).await?.publish().await
    }

    /// Steps 1 to 3: the whole blob in a synced temp file, invisible to everything but
    /// [`remove_temp_files`](super::BlobDir::remove_temp_files). Each step that touches the file
    /// is one blocking job ([`BlobDir::blocking_in`]): the creation with the header, each
    /// batch, the final header with the sync.
    pub(crate) async fn stage_blob(
        &self,
        blob: BlobId<'_>,
        meta: &Metadata,
        mut body: Body,
    ) -> io::Result<StagedBlob> {
        let layout = &self.inner.layout;
        let hash = key_hash(blob.key);
        let revision = blob.revision;
        let header = Draft::new(blob.key, revision, meta)?;
        let mut writing = self
            .blocking_in(move |dir| {
                let offload = dir.inner.offload.clone();
                Writing::create(&dir.inner.layout, revision, header, offload)
            })
            .await?;
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            // The caller's stream failing is not a disk error; keep its kind and say so.
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    // The temp file goes before the put fails, and not on this thread.
                    self.blocking_in(move |_| {
                        drop(writing);
                        Ok(())
                    })
                    .await?;
                    let why = format!("body of blob {blob} failed mid-stream: {e}");
                    return Err(io::Error::new(e.kind(), why));
                }
            };
            size += chunk.len() as u64;
            if writing.batch.push(chunk) {
                writing = self.blocking_in(move |_| writing.write_batch()).await?;
            }
        }
        let temp = self.blocking_in(move |_| writing.finish(size)).await?;
        Ok(StagedBlob {
            temp,
            final_path: layout.blob_path(hash, revision),
            marker: meta
                .expires
                .map(|at| layout.marker_path(hash, revision, at)),
            revision,
            size,
            offload: self.inner.offload.clone(),
        })
    }
}

/// A temp file being written, and what its next step needs. Each blocking step takes it and
/// gives it back, so that it can travel to a runtime's blocking pool and back; a step that
/// fails, or whose caller is gone, drops it there, and the temp file with it.
struct Writing {
    temp: TempFile,
    file: File,
    header: Draft,
    batch: Batch,
}

impl Writing {
    /// Step 1: creates a fresh temp file for blob `revision`, exclusively (never another
    /// writer's file), and writes `header` (of size zero) to it. The temp file is removed on
    /// `offload`'s pool, if given, when it is dropped unpublished.
    fn create(
        layout: &Layout,
        revision: Revision,
        header: Draft,
        offload: Option<Arc<Offload>>,
    ) -> io::Result<Writing> {
        let mut attempt = 0;
        let (temp, mut file) = loop {
            let path = layout.temp_path(revision);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => {
                    let temp = TempFile {
                        path,
                        published: false,
                        offload,
                    };
                    break (temp, file);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    attempt += 1;
                    if attempt == MAX_TEMP_ATTEMPTS {
                        return Err(context("creating temp file", &path)(e));
                    }
                }
                Err(e) => return Err(context("creating temp file", &path)(e)),
            }
        };
        file.write_all(header.bytes())
            .map_err(context("writing", &temp.path))?;
        Ok(Writing {
            temp,
            file,
            header,
            batch: Batch::default(),
        })
    }

    /// Step 2: writes the batch of chunks gathered so far.
    fn write_batch(mut self) -> io::Result<Writing> {
        self.batch
            .write_to(&mut self.file)
            .map_err(context("writing", &self.temp.path))?;
        Ok(self)
    }

    /// Step 3: the last batch, the header again with the body's `size`, `fdatasync`. The file
    /// is closed; the temp file stays.
    fn finish(mut self, size: u64) -> io::Result<TempFile> {
        let path = &self.temp.path;
        self.batch
            .write_to(&mut self.file)
            .map_err(context("writing", path))?;
        self.header.set_size(size);
        self.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.write_all(self.header.bytes()))
            .map_err(context("writing header of", path))?;
        self.file.sync_data().map_err(context("syncing", path))?;
        Ok(self.temp)
    }
}

/// Body chunks waiting for one vectored write.
#[derive(Default)]
struct Batch {
    chunks: Vec<Bytes>,
    len: usize,
}

impl Batch {
    /// Adds a chunk; true when the batch is full and should be written.
    fn push(&mut self, chunk: Bytes) -> bool {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
        self.len >= WRITE_BATCH_LEN || self.chunks.len() >= MAX_BATCH_CHUNKS
    }

    /// Writes every chunk, in order, at the file's position, then drops them.
    fn write_to(&mut self, file: &mut File) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self.chunks.iter().map(|c| IoSlice::new(c)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match file.write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        drop(slices);
        self.chunks.clear();
        self.len = 0;
        Ok(())
    }
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .unwrap_or_else(|| unreachable!("blob paths are built under a fan-out directory"))
}
