//! The blob directory streams: a 64 MiB blob goes in and out while the process heap never grows
//! by more than one body chunk plus the write batch (put) or one read chunk (get), measured by
//! a counting global allocator as in `streaming.rs`. Then the same through the whole store,
//! where the bound is the inline threshold plus one chunk plus the write batch.
//!
//! The heap meter is process-wide, so this file holds a single test.

mod common;
#[path = "common/heap.rs"]
mod heap;

use bytes::Bytes;
use cairn_adapters::backend::LtBackend;
use cairn_adapters::blobdir::{BlobDir, BlobDirOptions};
use cairn_adapters::memory::{MemoryHv, MemoryLog};
use cairn_adapters::{BlockingStore, Body, Location, Metadata, PutOptions};
use cairn_core::{BlobId, ByteRange, Key, Revision, Span};
use futures_lite::future::block_on;
use futures_lite::StreamExt;

const MIB: u64 = 1 << 20;
/// The blob: 64 MiB.
const SIZE: u64 = 64 * MIB;
/// Bytes per body chunk the test makes, and the grid the content pattern changes on.
const CHUNK: u64 = 64 * 1024;
/// The blob directory's write batch (`WRITE_BATCH_LEN` in `blobdir/write.rs`).
const WRITE_BATCH: u64 = 256 * 1024;
/// The blob directory's read chunk (`READ_CHUNK_LEN` in `blobdir/read.rs`).
const READ_CHUNK: u64 = 64 * 1024;
/// Heap besides payload: the header, paths, boxed streams, metadata, store bookkeeping.
const HEAP_SLACK: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// The heap meter.

use heap::HeapWindow;

// ---------------------------------------------------------------------------------------------
// Content: a function of the offset, made and checked one chunk at a time.

/// The byte at `pos`: constant within each 64 KiB cell, different in neighbouring cells.
fn pattern(pos: u64) -> u8 {
    let cell = pos / CHUNK;
    (cell as u8)
        .wrapping_mul(37)
        .wrapping_add((cell >> 8) as u8)
}

/// Bytes `0..SIZE`, made lazily, one chunk per pull.
fn generate() -> Body {
    let mut pos = 0;
    Body::from_stream(futures_lite::stream::iter(std::iter::from_fn(move || {
        (pos < SIZE).then(|| {
            let chunk = Bytes::from(vec![pattern(pos); CHUNK as usize]);
            pos += CHUNK;
            Ok(chunk)
        })
    })))
}

/// Reads `body` (bytes from offset `at`) chunk by chunk, checking every byte and dropping each
/// chunk before pulling the next; returns the length read.
async fn drain(mut body: Body, at: u64) -> u64 {
    let mut read = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("the body streams without error");
        let mut off = 0usize;
        while off < chunk.len() {
            let pos = at + read + off as u64;
            let cell_end = ((pos / CHUNK + 1) * CHUNK - (at + read)) as usize;
            let seg = &chunk[off..cell_end.min(chunk.len())];
            assert_eq!(seg[0], pattern(pos), "wrong byte at offset {pos}");
            assert!(seg[1..] == seg[..seg.len() - 1], "bytes at {pos} differ");
            off += seg.len();
        }
        read += chunk.len() as u64;
    }
    read
}

fn bound(what: &str, peak: u64, bound: u64) {
    println!("{what}: heap grew by at most {peak} B (bound {bound} B)");
    assert!(
        peak <= bound,
        "{what}: the heap grew by {peak} B; the bound is {bound} B"
    );
}

#[test]
fn a_64_mib_blob_streams_through_the_blob_directory_in_bounded_memory() {
    let files = common::tiers::scratch_dir();
    let dir = BlobDir::open(&files.path().join("lt"), BlobDirOptions::default()).unwrap();
    let blob = BlobId {
        key: Key::new(b"streaming/big").unwrap(),
        revision: Revision(1),
    };

    // The backend alone: put holds a batch of body chunks and the one that fills it; get one read chunk.
    let heap = HeapWindow::start();
    let written = block_on(dir.put(blob, &Metadata::default(), generate())).unwrap();
    bound("put", heap.peak(), CHUNK + WRITE_BATCH + HEAP_SLACK);
    assert_eq!(written, SIZE);

    let heap = HeapWindow::start();
    let (meta, body) = block_on(dir.get(blob, None)).unwrap().unwrap();
    assert_eq!(meta.size, SIZE);
    assert_eq!(block_on(drain(body, 0)), SIZE);
    bound("get", heap.peak(), READ_CHUNK + HEAP_SLACK);

    let span = ByteRange::Suffix(100_000).resolve(SIZE).unwrap();
    let heap = HeapWindow::start();
    let (_, tail) = block_on(dir.get(blob, Some(span))).unwrap().unwrap();
    assert_eq!(block_on(drain(tail, span.start)), 100_000);
    bound("tail get", heap.peak(), READ_CHUNK + HEAP_SLACK);
    block_on(dir.delete(blob)).unwrap();

    // The whole store over it: put_stream buffers up to the inline threshold plus the chunk that
    // crosses it before it knows the object is large, then streams.
    let store = BlockingStore::new(MemoryHv::new(), dir.clone(), MemoryLog::new());
    let threshold = store.inner().config().inline_threshold;
    let heap = HeapWindow::start();
    store
        .put_stream("big", generate(), &PutOptions::default())
        .unwrap();
    bound(
        "store put",
        heap.peak(),
        threshold + CHUNK + WRITE_BATCH + HEAP_SLACK,
    );
    let heap = HeapWindow::start();
    let object = store.get("big").unwrap().unwrap();
    assert!(matches!(object.location, Location::LongTerm(_)));
    assert_eq!(block_on(drain(object.body, 0)), SIZE);
    bound("store get", heap.peak(), READ_CHUNK + HEAP_SLACK);
    let part = store
        .get_range(
            "big",
            ByteRange::Inclusive {
                start: 1_000_000,
                end: 1_999_999,
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        part.span,
        Some(Span {
            start: 1_000_000,
            end: 2_000_000
        })
    );
    assert_eq!(block_on(drain(part.body, 1_000_000)), 1_000_000);
}
