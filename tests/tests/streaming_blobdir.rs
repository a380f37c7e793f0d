//! The blob directory streams: a 64 MiB blob goes in and out while the process heap never grows
//! by more than one body chunk plus the write batch (put) or one read chunk (get), measured by
//! a counting global allocator as in `streaming.rs`. Then the same through the whole store,
//! where the bound is the inline threshold plus one chunk plus the write batch.
//!
//! The heap meter is process-wide, so this file holds a single test.

mod common;

use bytes::Bytes;
use cairn_adapters::backend::LtBackend;
use cairn_adapters::blobdir::{BlobDir, BlobDirOptions};
use cairn_adapters::memory::{MemoryHv, MemoryLog};
use cairn_adapters::{BlockingStore, Body, Location, Metadata, PutOptions};
use cairn_core::{BlobId, ByteRange, Key, Revision, Span};
use futures_lite::future::block_on;
use futures_lite::StreamExt;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

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

struct CountingAlloc;

static HEAP_LIVE: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

fn heap_grew(by: usize) {
    let live = HEAP_LIVE.fetch_add(by, Ordering::Relaxed) + by;
    HEAP_PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters only observe sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            heap_grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            heap_grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        HEAP_LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` is valid as the caller guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                heap_grew(new_size - layout.size());
            } else {
                HEAP_LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// A measurement window: the peak restarts from what is live now.
struct HeapWindow {
    base: usize,
}

impl HeapWindow {
    fn start() -> HeapWindow {
        let base = HEAP_LIVE.load(Ordering::SeqCst);
        HEAP_PEAK.store(base, Ordering::SeqCst);
        HeapWindow { base }
    }

    /// Most heap bytes live at once above the start of the window.
    fn peak(&self) -> u64 {
        HEAP_PEAK.load(Ordering::SeqCst).saturating_sub(self.base) as u64
    }
}

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
