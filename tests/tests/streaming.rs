//! Streaming is real: a 256 MiB object goes through the long-term path, in and out, while the
//! process never holds more than the inline threshold plus one chunk of it.
//!
//! Two independent meters watch every test:
//!
//! * **Tracked payload.** Every payload chunk the test creates is a [`Bytes`] owning a
//!   [`Tracked`] buffer, which adds its length to a shared live count when made and subtracts it
//!   when dropped, keeping the high-water mark. It sees exactly the caller's chunks, wherever in
//!   the process they are held (driver, adapters, backend), but it is blind to *copies*: a layer
//!   that copies chunks into its own buffer and drops the originals keeps the count low.
//! * **Process heap.** This test binary installs a counting global allocator, so the high-water
//!   mark of all live heap bytes during an operation is known. It sees copies too. Because it is
//!   process-wide, the tests in this file run one at a time (see [`serial`]).
//!
//! The negative controls at the bottom show that each meter fails when it should: one buffered
//! 256 MiB `Bytes` trips both, and a backend that collects the body (what the `SyncLtBackend`
//! adapter does) slips past the payload meter but trips the heap meter.
//!
//! The long-term backend here stores no bytes at all, only `(metadata, length, digest)` per blob.
//! It can still serve blobs back because the content is a known function of the offset
//! ([`pattern`]): the test checks that the digest it stored matches that function before it
//! reads anything, and the reader then checks every byte it receives.

#[path = "common/heap.rs"]
mod heap;

use bytes::Bytes;
use cairn_adapters::backend::{BackendResult, LtBackend, SyncLtBackend};
use cairn_adapters::memory::{MemoryHv, MemoryLog};
use cairn_adapters::{
    BlockingStore, Body, Error, Location, Metadata, Object, ObjectInfo, PutOptions, Runtime,
    TieredStore,
};
use cairn_core::{BlobId, ByteRange, Config, Revision, Span, WriteOutcome};
use futures_lite::StreamExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const MIB: u64 = 1 << 20;
/// The object: 256 MiB.
const SIZE: u64 = 256 * MIB;
/// Bytes per generated chunk, and the grid the content pattern changes on.
const CHUNK: u64 = 64 * 1024;
/// The long-term backend's digest samples one byte every this many bytes (debug builds are too
/// slow to hash 256 MiB byte by byte several times per run; the reader checks every byte).
const SAMPLE: u64 = 4096;
/// The tail read back with a suffix range: not chunk-aligned, so it starts mid-chunk and spans
/// two chunks of the grid.
const SUFFIX: u64 = 100_000;
/// Heap the driver may use besides payload: futures, boxed streams, metadata, the change-log
/// entry, tokio or smol bookkeeping. Measured at about 14 KiB during a put and under 100 B
/// during a get; the point is that it is three orders of magnitude below the object.
const HEAP_SLACK: u64 = 64 * 1024;
const KEY: &str = "streaming/big";

// ---------------------------------------------------------------------------------------------
// Meter 1: tracked payload chunks.

/// Live and peak bytes of [`Tracked`] buffers made by one test.
#[derive(Debug, Default)]
struct Tracker {
    live: AtomicU64,
    max: AtomicU64,
}

impl Tracker {
    /// A chunk of `len` copies of `byte`, counted while it is alive.
    fn chunk(self: &Arc<Self>, byte: u8, len: usize) -> Bytes {
        Bytes::from_owner(Tracked::new(self.clone(), vec![byte; len]))
    }

    fn live(&self) -> u64 {
        self.live.load(Ordering::SeqCst)
    }

    fn max(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }

    /// Starts a measurement window: the peak restarts from what is alive now.
    fn reset_max(&self) {
        self.max.store(self.live(), Ordering::SeqCst);
    }
}

/// A payload buffer that reports its lifetime to a [`Tracker`].
struct Tracked {
    buf: Vec<u8>,
    tracker: Arc<Tracker>,
}

impl Tracked {
    fn new(tracker: Arc<Tracker>, buf: Vec<u8>) -> Tracked {
        let len = buf.len() as u64;
        let live = tracker.live.fetch_add(len, Ordering::SeqCst) + len;
        tracker.max.fetch_max(live, Ordering::SeqCst);
        Tracked { buf, tracker }
    }
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.tracker
            .live
            .fetch_sub(self.buf.len() as u64, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// Meter 2: the process heap.

use heap::HeapWindow;

/// The heap meter is process-wide, so the tests in this file take turns.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Content: a deterministic function of the offset, cheap to make and to check in debug builds.

/// The byte at offset `pos`: constant within each 64 KiB cell of the grid, different in
/// neighbouring cells (consecutive cells differ by 37 mod 256, and across each 256-cell
/// boundary the high byte breaks the cycle), so a dropped, repeated or reordered chunk shows.
fn pattern(pos: u64) -> u8 {
    let cell = pos / CHUNK;
    (cell as u8)
        .wrapping_mul(37)
        .wrapping_add((cell >> 8) as u8)
}

/// Bytes `start..end` of the content, made lazily one chunk at a time as the reader pulls,
/// split on the grid (so a range starting mid-cell begins with a short chunk).
fn generate(tracker: &Arc<Tracker>, start: u64, end: u64) -> Body {
    let tracker = tracker.clone();
    let mut pos = start;
    Body::from_stream(futures_lite::stream::iter(std::iter::from_fn(move || {
        (pos < end).then(|| {
            let piece_end = ((pos / CHUNK + 1) * CHUNK).min(end);
            let chunk = tracker.chunk(pattern(pos), (piece_end - pos) as usize);
            pos = piece_end;
            Ok(chunk)
        })
    })))
}

/// Checks every byte of `chunk`, which sits at offset `at` of the object, against [`pattern`].
/// Each grid cell inside it must start with the cell's byte and equal itself shifted by one (a
/// memcmp, fast even unoptimized), which makes every byte of the cell that byte.
fn verify(chunk: &[u8], at: u64) {
    let mut off = 0usize;
    while off < chunk.len() {
        let pos = at + off as u64;
        let cell_end = ((pos / CHUNK + 1) * CHUNK - at) as usize;
        let seg = &chunk[off..cell_end.min(chunk.len())];
        assert_eq!(seg[0], pattern(pos), "wrong byte at offset {pos}");
        assert!(
            seg[1..] == seg[..seg.len() - 1],
            "bytes {pos}..{} are not all {:#04x}",
            pos + seg.len() as u64,
            pattern(pos)
        );
        off += seg.len();
    }
}

/// A digest of a byte stream that does not depend on how it is chunked: the length, the last
/// byte, and the byte at every multiple of [`SAMPLE`], folded FNV-style with its position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Digest {
    len: u64,
    hash: u64,
    last: Option<u8>,
}

impl Digest {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Digest {
        Digest {
            len: 0,
            hash: Self::OFFSET,
            last: None,
        }
    }

    fn fold(&mut self, pos: u64, byte: u8) {
        self.hash = (self.hash ^ (pos << 8 | u64::from(byte))).wrapping_mul(Self::PRIME);
    }

    fn update(&mut self, chunk: &[u8]) {
        let Some(&last) = chunk.last() else { return };
        let first_sample = self.len.div_ceil(SAMPLE) * SAMPLE;
        for pos in (first_sample..self.len + chunk.len() as u64).step_by(SAMPLE as usize) {
            self.fold(pos, chunk[(pos - self.len) as usize]);
        }
        self.len += chunk.len() as u64;
        self.last = Some(last);
    }

    /// The digest [`generate`]`(start, end)` must produce, computed without making the bytes.
    fn of_pattern(start: u64, end: u64) -> Digest {
        let mut d = Digest::new();
        for pos in (0..end - start).step_by(SAMPLE as usize) {
            d.fold(pos, pattern(start + pos));
        }
        d.len = end - start;
        d.last = (end > start).then(|| pattern(end - 1));
        d
    }
}

/// Reads `body` (bytes from offset `at` of the object) chunk by chunk, checking every byte and
/// dropping each chunk before pulling the next.
async fn drain(mut body: Body, at: u64) -> Digest {
    let mut digest = Digest::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("the body streams without error");
        verify(&chunk, at + digest.len);
        digest.update(&chunk);
    }
    digest
}

// ---------------------------------------------------------------------------------------------
// The long-term backend: stores (metadata, length, digest), never the bytes.

#[derive(Clone, Debug)]
struct Stored {
    meta: Metadata,
    digest: Digest,
}

/// A long-term tier that consumes each put chunk by chunk, digesting and dropping every chunk
/// at once, and serves gets by regenerating [`pattern`] lazily.
struct DigestLt {
    tracker: Arc<Tracker>,
    /// Keyed by the key's bytes, so this file does not depend on how `Key` is owned.
    blobs: Mutex<HashMap<(Vec<u8>, Revision), Stored>>,
}

impl DigestLt {
    fn new(tracker: &Arc<Tracker>) -> DigestLt {
        DigestLt {
            tracker: tracker.clone(),
            blobs: Mutex::default(),
        }
    }

    fn blobs(&self) -> MutexGuard<'_, HashMap<(Vec<u8>, Revision), Stored>> {
        self.blobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn id(blob: BlobId<'_>) -> (Vec<u8>, Revision) {
        (blob.key.as_bytes().to_vec(), blob.revision)
    }

    /// What was stored for `key`'s current blob (the only one, in these tests).
    fn stored(&self, key: &str) -> Stored {
        let blobs = self.blobs();
        let mut hits = blobs.iter().filter(|((k, _), _)| k == key.as_bytes());
        let (_, stored) = hits.next().expect("a blob for the key");
        assert!(hits.next().is_none(), "one blob per key");
        stored.clone()
    }

    fn record(&self, blob: BlobId<'_>, meta: &Metadata, digest: Digest) -> u64 {
        let meta = Metadata {
            size: digest.len,
            ..meta.clone()
        };
        self.blobs().insert(Self::id(blob), Stored { meta, digest });
        digest.len
    }

    fn open(&self, blob: BlobId<'_>, span: Option<Span>) -> Option<(Metadata, Body)> {
        let stored = self.blobs().get(&Self::id(blob)).cloned()?;
        let size = stored.meta.size;
        let (start, end) = span.map_or((0, size), |s| (s.start, s.end.min(size)));
        Some((stored.meta, generate(&self.tracker, start, end)))
    }

    fn head(&self, blob: BlobId<'_>) -> Option<Metadata> {
        self.blobs().get(&Self::id(blob)).map(|s| s.meta.clone())
    }

    fn delete(&self, blob: BlobId<'_>) {
        self.blobs().remove(&Self::id(blob));
    }
}

impl LtBackend for DigestLt {
    async fn put(&self, blob: BlobId<'_>, meta: &Metadata, mut body: Body) -> BackendResult<u64> {
        let mut digest = Digest::new();
        while let Some(chunk) = body.next().await {
            digest.update(&chunk?);
            // The chunk is dropped here, before the next one is pulled.
        }
        Ok(self.record(blob, meta, digest))
    }

    async fn get(
        &self,
        blob: BlobId<'_>,
        span: Option<Span>,
    ) -> BackendResult<Option<(Metadata, Body)>> {
        Ok(self.open(blob, span))
    }

    async fn head(&self, blob: BlobId<'_>) -> BackendResult<Option<Metadata>> {
        Ok(DigestLt::head(self, blob))
    }

    async fn delete(&self, blob: BlobId<'_>) -> BackendResult<()> {
        DigestLt::delete(self, blob);
        Ok(())
    }
}

/// The same tier behind the synchronous contract, whose async adapter collects the whole body
/// into one buffer before `put` sees it (as `SyncLtBackend` documents). Only for the control.
struct CollectingLt(DigestLt);

impl SyncLtBackend for CollectingLt {
    fn put(&self, blob: BlobId<'_>, meta: &Metadata, body: Bytes) -> BackendResult<u64> {
        let mut digest = Digest::new();
        digest.update(&body);
        Ok(self.0.record(blob, meta, digest))
    }
    fn get(&self, blob: BlobId<'_>, span: Option<Span>) -> BackendResult<Option<(Metadata, Body)>> {
        Ok(self.0.open(blob, span))
    }
    fn head(&self, blob: BlobId<'_>) -> BackendResult<Option<Metadata>> {
        Ok(self.0.head(blob))
    }
    fn delete(&self, blob: BlobId<'_>) -> BackendResult<()> {
        self.0.delete(blob);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// One scenario over every driver.

/// The calls the scenario makes, over the async store or the blocking one.
#[allow(async_fn_in_trait)]
trait Api {
    fn config(&self) -> &Config;
    fn lt(&self) -> &DigestLt;
    async fn put_stream(&self, key: &str, body: Body) -> Result<WriteOutcome, Error>;
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<Object>, Error>;
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error>;
    async fn join(&self);
}

impl<R: Runtime> Api for TieredStore<MemoryHv, DigestLt, MemoryLog, R> {
    fn config(&self) -> &Config {
        TieredStore::config(self)
    }
    fn lt(&self) -> &DigestLt {
        TieredStore::lt(self)
    }
    async fn put_stream(&self, key: &str, body: Body) -> Result<WriteOutcome, Error> {
        TieredStore::put_stream(self, key, body, &PutOptions::default()).await
    }
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<Object>, Error> {
        match range {
            Some(r) => self.get_range(key, r).await,
            None => TieredStore::get(self, key).await,
        }
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error> {
        TieredStore::head(self, key).await
    }
    async fn join(&self) {
        TieredStore::join(self).await
    }
}

/// Every call is synchronous; the body is still drained as a stream, chunk by chunk.
impl Api for BlockingStore<MemoryHv, DigestLt, MemoryLog> {
    fn config(&self) -> &Config {
        self.inner().config()
    }
    fn lt(&self) -> &DigestLt {
        self.inner().lt()
    }
    async fn put_stream(&self, key: &str, body: Body) -> Result<WriteOutcome, Error> {
        BlockingStore::put_stream(self, key, body, &PutOptions::default())
    }
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<Object>, Error> {
        match range {
            Some(r) => self.get_range(key, r),
            None => BlockingStore::get(self, key),
        }
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error> {
        BlockingStore::head(self, key)
    }
    async fn join(&self) {}
}

/// Peaks seen by one run, for the report printed with `--nocapture`.
struct Peaks {
    put_tracked: u64,
    put_heap: u64,
    get_tracked: u64,
    get_heap: u64,
    range_tracked: u64,
}

/// Puts 256 MiB as a stream, gets it whole and its tail, checking content and both meters.
async fn put_and_get_256_mib(api: &impl Api, tracker: &Arc<Tracker>) -> Peaks {
    let threshold = api.config().inline_threshold;
    assert_eq!(threshold, MIB, "the default inline threshold");

    // Put. `put_stream` buffers chunks while they fit under the threshold (16 of 64 KiB), then
    // the chunk that crosses it (the 17th), and from then on passes chunks straight through; the
    // backend drops each before pulling the next. So the peak is threshold + one chunk.
    let put_bound = threshold + CHUNK;
    tracker.reset_max();
    let heap = HeapWindow::start();
    let outcome = api.put_stream(KEY, generate(tracker, 0, SIZE)).await;
    api.join().await;
    let put_heap = heap.peak();
    let put_tracked = tracker.max();
    assert_eq!(outcome.expect("the put succeeds"), WriteOutcome::Committed);
    assert_eq!(tracker.live(), 0, "no chunk outlives the put");
    assert!(
        put_tracked >= CHUNK,
        "the payload meter saw chunks ({put_tracked} B)"
    );
    assert!(
        put_tracked <= put_bound,
        "put held {put_tracked} B of payload at once; the bound is inline threshold \
         {threshold} B + one {CHUNK} B chunk = {put_bound} B"
    );
    assert!(
        put_heap <= put_bound + HEAP_SLACK,
        "the heap grew by {put_heap} B during the put; the bound is {put_bound} B of payload \
         + {HEAP_SLACK} B of slack = {} B",
        put_bound + HEAP_SLACK
    );

    let info = api.head(KEY).await.unwrap().expect("the object exists");
    let Location::LongTerm(revision) = info.location else {
        panic!("a 256 MiB object lives long-term, not {:?}", info.location)
    };
    assert_eq!(info.meta.size, SIZE);
    let stored = api.lt().stored(KEY);
    assert_eq!(stored.meta.size, SIZE);
    assert_eq!(
        stored.digest,
        Digest::of_pattern(0, SIZE),
        "the long-term tier received exactly the streamed bytes"
    );

    // Whole get. The backend makes a chunk only when the reader pulls, and `drain` drops each
    // before pulling the next; the store hands the backend's body to the caller untouched. So
    // exactly one chunk is alive at a time.
    tracker.reset_max();
    let heap = HeapWindow::start();
    let object = api
        .get(KEY, None)
        .await
        .unwrap()
        .expect("the object exists");
    assert_eq!(object.location, Location::LongTerm(revision));
    assert_eq!(object.meta.size, SIZE);
    assert_eq!(object.span, None);
    let read = drain(object.body, 0).await;
    let get_heap = heap.peak();
    let get_tracked = tracker.max();
    assert_eq!(
        read,
        Digest::of_pattern(0, SIZE),
        "the whole object reads back"
    );
    assert_eq!(tracker.live(), 0, "no chunk outlives the get");
    assert!(
        get_tracked <= CHUNK,
        "get held {get_tracked} B of payload at once; the bound is one {CHUNK} B chunk"
    );
    assert!(
        get_heap <= CHUNK + HEAP_SLACK,
        "the heap grew by {get_heap} B during the get; the bound is one {CHUNK} B chunk + \
         {HEAP_SLACK} B of slack = {} B",
        CHUNK + HEAP_SLACK
    );

    // Tail: the last 100 000 bytes, which start mid-chunk.
    tracker.reset_max();
    let tail = api
        .get(KEY, Some(ByteRange::Suffix(SUFFIX)))
        .await
        .unwrap()
        .expect("the object exists");
    let start = SIZE - SUFFIX;
    assert_eq!(tail.span, Some(Span { start, end: SIZE }));
    assert_eq!(tail.meta.size, SIZE, "a range read reports the whole size");
    assert_eq!(tail.location, Location::LongTerm(revision));
    let read = drain(tail.body, start).await;
    let range_tracked = tracker.max();
    assert_eq!(read.len, SUFFIX);
    assert_eq!(read, Digest::of_pattern(start, SIZE), "the tail reads back");
    assert!(
        range_tracked <= CHUNK,
        "the range get held {range_tracked} B of payload at once; the bound is one {CHUNK} B chunk"
    );

    Peaks {
        put_tracked,
        put_heap,
        get_tracked,
        get_heap,
        range_tracked,
    }
}

fn report(driver: &str, p: &Peaks, started: std::time::Instant) {
    println!(
        "{driver}: peak payload / heap growth: put {} / {} B (threshold + chunk = {} B), \
         get {} / {} B, tail {} B of payload; {:.2?}",
        p.put_tracked,
        p.put_heap,
        MIB + CHUNK,
        p.get_tracked,
        p.get_heap,
        p.range_tracked,
        started.elapsed()
    );
}

#[test]
fn tokio_streams_256_mib_within_threshold_plus_one_chunk() {
    let _turn = serial();
    let started = std::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let peaks = runtime.block_on(async {
        let tracker = Arc::new(Tracker::default());
        let store = TieredStore::new(
            MemoryHv::new(),
            DigestLt::new(&tracker),
            MemoryLog::new(),
            cairn_adapters::TokioRuntime::current(),
        );
        let peaks = put_and_get_256_mib(&store, &tracker).await;
        assert!(store.log().is_empty(), "the put's cleanup finished");
        peaks
    });
    report("tokio", &peaks, started);
}

#[test]
fn smol_streams_256_mib_within_threshold_plus_one_chunk() {
    let _turn = serial();
    let started = std::time::Instant::now();
    let peaks = smol::block_on(async {
        let tracker = Arc::new(Tracker::default());
        let store = TieredStore::new(
            MemoryHv::new(),
            DigestLt::new(&tracker),
            MemoryLog::new(),
            cairn_adapters::SmolRuntime,
        );
        let peaks = put_and_get_256_mib(&store, &tracker).await;
        assert!(store.log().is_empty(), "the put's cleanup finished");
        peaks
    });
    report("smol", &peaks, started);
}

#[test]
fn blocking_streams_256_mib_within_threshold_plus_one_chunk() {
    let _turn = serial();
    let started = std::time::Instant::now();
    let tracker = Arc::new(Tracker::default());
    let store = BlockingStore::new(MemoryHv::new(), DigestLt::new(&tracker), MemoryLog::new());
    let peaks = futures_lite::future::block_on(put_and_get_256_mib(&store, &tracker));
    assert!(store.inner().log().is_empty(), "the put's cleanup finished");
    report("blocking", &peaks, started);
}

// ---------------------------------------------------------------------------------------------
// Negative controls: the meters do catch buffering.

/// One 256 MiB buffer put through `put`: both meters must see the whole object.
#[test]
fn control_a_whole_buffer_trips_both_meters() {
    let _turn = serial();
    let tracker = Arc::new(Tracker::default());
    let store = BlockingStore::new(MemoryHv::new(), DigestLt::new(&tracker), MemoryLog::new());
    tracker.reset_max();
    let heap = HeapWindow::start();
    let whole = tracker.chunk(pattern(0), SIZE as usize);
    let outcome = store.put(KEY, whole, &PutOptions::default()).unwrap();
    assert_eq!(outcome, WriteOutcome::Committed);
    assert_eq!(tracker.live(), 0);
    let (tracked, heap) = (tracker.max(), heap.peak());
    println!("control, whole buffer: tracked peak {tracked} B, heap peak {heap} B");
    assert!(
        tracked >= SIZE,
        "the payload meter saw the buffer ({tracked} B)"
    );
    assert!(heap >= SIZE, "the heap meter saw the buffer ({heap} B)");
    assert_eq!(store.inner().lt().stored(KEY).meta.size, SIZE);
}

/// A backend behind `SyncLtBackend`, whose adapter collects the body into one buffer: the
/// payload meter is blind to the copy (each tracked chunk is dropped once copied), which is why
/// the heap meter is there, and the heap meter sees it.
#[test]
fn control_a_collecting_backend_slips_past_the_payload_meter_but_not_the_heap_meter() {
    let _turn = serial();
    let tracker = Arc::new(Tracker::default());
    let store = BlockingStore::new(
        MemoryHv::new(),
        CollectingLt(DigestLt::new(&tracker)),
        MemoryLog::new(),
    );
    tracker.reset_max();
    let heap = HeapWindow::start();
    let body = generate(&tracker, 0, SIZE);
    let outcome = store.put_stream(KEY, body, &PutOptions::default()).unwrap();
    assert_eq!(outcome, WriteOutcome::Committed);
    let (tracked, heap) = (tracker.max(), heap.peak());
    println!("control, collecting backend: tracked peak {tracked} B, heap peak {heap} B");
    assert!(
        tracked <= MIB + CHUNK,
        "the payload meter cannot see the copy ({tracked} B)"
    );
    assert!(
        heap >= SIZE,
        "the heap meter saw the collected body ({heap} B)"
    );
    assert_eq!(
        store.inner().lt().0.stored(KEY).digest,
        Digest::of_pattern(0, SIZE)
    );
}
