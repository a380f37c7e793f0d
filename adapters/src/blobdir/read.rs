//! Reading a blob: open its file, check the header against what was asked for, and stream the
//! payload lazily, one chunk per pull.

use super::format::Header;
use super::layout::{context, corrupt, key_hash};
use super::offload::Offload;
use super::BlobDir;
use crate::Body;
use bytes::{Bytes, BytesMut};
use cairn_core::{is_expired, BlobId, Span};
use futures_lite::Stream;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Bytes read from the file per chunk of a get's body: one chunk is all a get holds at a time.
/// 64 KiB is the chunk size of the streaming tests and large enough that a read's system call
/// costs little next to copying its bytes.
pub(crate) const READ_CHUNK_LEN: usize = 64 * 1024;

/// Bytes one job reads for a body on a runtime's blocking pool, handed out as chunks of
/// [`READ_CHUNK_LEN`]: each job costs a hop to the pool and back (two thread wake-ups), which
/// for a file in the page cache costs more than reading 64 KiB. Measured for an 8 MiB get from
/// a tokio task on the 2-core development VM, page cache warm (medians of 7 runs): in place
/// 0.59 ms; a job per 64 KiB 6.0 ms, per 256 KiB 3.5 ms, per 1 MiB 1.7 ms. 256 KiB is the bound
/// of a put's batch ([`WRITE_BATCH_LEN`]) too: what one operation holds in memory.
///
/// [`WRITE_BATCH_LEN`]: super::write::WRITE_BATCH_LEN
pub(crate) const READ_BATCH_LEN: usize = 256 * 1024;

const _: () = assert!(READ_BATCH_LEN % READ_CHUNK_LEN == 0 && READ_BATCH_LEN >= READ_CHUNK_LEN);

/// Opens the blob file at `path` and reads its header, leaving the position at the payload:
/// `None` if there is no such file. A file whose length disagrees with its header (truncated,
/// or grown) is an error.
pub(crate) fn open_file(path: &Path) -> io::Result<Option<(File, Header)>> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(context("opening", path)(e)),
    };
    let header = Header::read(&mut file, path)?;
    let len = file
        .metadata()
        .map_err(context("reading length of", path))?
        .len();
    if header.len.checked_add(header.meta.size) != Some(len) {
        return Err(corrupt(
            path,
            format_args!(
                "file is {len} bytes, its header says {} + {}",
                header.len, header.meta.size
            ),
        ));
    }
    Ok(Some((file, header)))
}

/// An open blob file whose header matched the request.
pub(crate) struct Opened {
    pub header: Header,
    pub file: File,
    pub path: PathBuf,
}

impl BlobDir {
    /// Opens `blob`'s file and checks it: `None` if there is none. A file that holds another key
    /// or revision is an error: it is never served.
    pub(crate) fn open_blob(&self, blob: BlobId<'_>) -> io::Result<Option<Opened>> {
        let path = self
            .inner
            .layout
            .blob_path(key_hash(blob.key), blob.revision);
        let Some((file, header)) = open_file(&path)? else {
            return Ok(None);
        };
        if *header.key != *blob.key || header.revision != blob.revision {
            return Err(corrupt(
                &path,
                format_args!(
                    "holds blob {}@{}, not the requested {blob}",
                    header.key, header.revision
                ),
            ));
        }
        Ok(Some(Opened { header, file, path }))
    }

    /// Like [`open_blob`](Self::open_blob), but an expired blob is `None` too.
    pub(crate) fn open_live(&self, blob: BlobId<'_>) -> io::Result<Option<Opened>> {
        let now = self.inner.clock.now();
        Ok(self
            .open_blob(blob)?
            .filter(|o| !is_expired(o.header.meta.expires, now)))
    }

    /// Opens `blob` and positions a lazy body on `span` (all of it for `None`).
    pub(crate) fn read(
        &self,
        blob: BlobId<'_>,
        span: Option<Span>,
    ) -> io::Result<Option<(crate::Metadata, Body)>> {
        let Some(Opened {
            header,
            mut file,
            path,
        }) = self.open_live(blob)?
        else {
            return Ok(None);
        };
        let size = header.meta.size;
        // The core resolves spans against the size; clamp anyway so a bad span reads less, not
        // past the payload.
        let (start, end) = span.map_or((0, size), |s| (s.start.min(size), s.end.min(size)));
        let remaining = end.saturating_sub(start);
        file.seek(SeekFrom::Start(header.len + start))
            .map_err(context("seeking in", &path))?;
        let chunks = Chunks {
            file: Some(file),
            remaining,
            path,
        };
        let body = match &self.inner.offload {
            None => Body::from_stream(chunks),
            Some(offload) => Body::from_stream(chunks.unblocked(offload.clone())),
        };
        Ok(Some((header.meta, body)))
    }
}

/// A payload read lazily: each pull reads at most [`READ_CHUNK_LEN`] bytes with one blocking
/// read, so a consumer that stops pulling stops the reading. In place; or, on a runtime's
/// blocking pool, a batch of chunks per read ([`Chunks::unblocked`]).
///
/// Deleting the blob while it streams is safe: the open file stays readable until dropped.
struct Chunks {
    /// Closed as soon as the last byte or an error has been handed out.
    file: Option<File>,
    remaining: u64,
    path: PathBuf,
}

impl Chunks {
    /// The same chunks, read by jobs on `offload`'s blocking pool, [`READ_BATCH_LEN`] bytes per
    /// job; the reader travels to the job and back. A body dropped while a read is under way is
    /// closed by the job.
    fn unblocked(self, offload: Arc<Offload>) -> impl Stream<Item = io::Result<Bytes>> + Send {
        let start = (offload, self, Bytes::new());
        futures_lite::stream::unfold(Some(start), |state| async move {
            let (offload, mut chunks, mut batch) = state?;
            if batch.is_empty() {
                if chunks.file.is_none() || chunks.remaining == 0 {
                    return None;
                }
                let read = offload.run(move || {
                    let batch = chunks.read_next(READ_BATCH_LEN);
                    Ok((chunks, batch))
                });
                (chunks, batch) = match read.await {
                    Ok((chunks, Some(Ok(batch)))) => (chunks, batch),
                    Ok((_, None)) => return None,
                    Ok((_, Some(Err(e)))) => return Some((Err(e), None)),
                    // The job never ran: the body ends with why.
                    Err(e) => return Some((Err(e), None)),
                };
            }
            let chunk = batch.split_to(batch.len().min(READ_CHUNK_LEN));
            Some((Ok(chunk), Some((offload, chunks, batch))))
        })
    }

    fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        self.read_next(READ_CHUNK_LEN)
    }

    /// The next `max` bytes of the payload, or fewer at its end, with one blocking read.
    fn read_next(&mut self, max: usize) -> Option<io::Result<Bytes>> {
        let file = self.file.as_mut()?;
        if self.remaining == 0 {
            self.file = None;
            return None;
        }
        let len = self.remaining.min(max as u64) as usize;
        let mut buf = BytesMut::zeroed(len);
        match file.read_exact(&mut buf) {
            Ok(()) => {
                self.remaining -= len as u64;
                if self.remaining == 0 {
                    self.file = None;
                }
                Some(Ok(buf.freeze()))
            }
            Err(e) => {
                self.file = None;
                Some(Err(match e.kind() {
                    io::ErrorKind::UnexpectedEof => corrupt(&self.path, "payload truncated"),
                    _ => context("reading", &self.path)(e),
                }))
            }
        }
    }
}

impl Stream for Chunks {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.next_chunk())
    }
}
