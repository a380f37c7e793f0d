//! Reading a blob: open its file, check the header against what was asked for, and stream the
//! payload lazily, one chunk per pull.

use super::format::Header;
use super::layout::{context, corrupt, key_hash};
use super::BlobDir;
use crate::Body;
use bytes::{Bytes, BytesMut};
use cairn_core::{is_expired, BlobId, Span};
use futures_lite::Stream;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

/// Bytes read from the file per chunk of a get's body: one chunk is all a get holds at a time.
/// 64 KiB is the chunk size of the streaming tests and large enough that a read's system call
/// costs little next to copying its bytes.
pub(crate) const READ_CHUNK_LEN: usize = 64 * 1024;

/// Opens the blob file at `path` and reads its header, leaving the position at the payload:
/// `None` if there is no such file. A file whose length disagrees with its header (truncated,
/// or grown), or anything but a regular file under the name, is an error.
pub(crate) fn open_file(path: &Path) -> io::Result<Option<(File, Header)>> {
    // Only a regular file is opened: opening a named pipe for reading would wait for a writer,
    // forever (a device could do worse). Looked at first, since the open itself is what waits.
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(corrupt(path, "not a regular file")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(context("reading metadata of", path)(e)),
    }
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
        let body = Body::from_stream(Chunks {
            file: Some(file),
            remaining,
            path,
        });
        Ok(Some((header.meta, body)))
    }
}

/// A payload read lazily: each pull reads at most [`READ_CHUNK_LEN`] bytes with one blocking
/// read, so a consumer that stops pulling stops the reading.
///
/// Deleting the blob while it streams is safe: the open file stays readable until dropped.
struct Chunks {
    /// Closed as soon as the last byte or an error has been handed out.
    file: Option<File>,
    remaining: u64,
    path: PathBuf,
}

impl Chunks {
    fn next_chunk(&mut self) -> Option<io::Result<Bytes>> {
        let file = self.file.as_mut()?;
        if self.remaining == 0 {
            self.file = None;
            return None;
        }
        let len = self.remaining.min(READ_CHUNK_LEN as u64) as usize;
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
