//! The blob-directory long-term tier through its public API: round trips, ranges, hostile keys,
//! failed and interrupted writes, corrupt files, expiry and sweeping.
//!
//! Power loss cannot be simulated here; what is checked is the half a test can see: a final
//! path never holds an incomplete file, and a failed or interrupted write leaves only a temp
//! file. The fsync sequence itself is documented in `adapters/src/blobdir/write.rs`.

#![cfg(feature = "blobdir")]

use bytes::Bytes;
use cairn_adapters::backend::{BackendResult, LtBackend};
use cairn_adapters::blobdir::{BlobDir, BlobDirOptions, BlobInfo, SweepReport, STALE_MARKER_AGE};
use cairn_adapters::fault::{Fault, Faults, Faulty, Gate, Op};
use cairn_adapters::memory::{MemoryHv, MemoryLog};
use cairn_adapters::{
    BlockingJob, BlockingStore, Body, Error, InlineRuntime, Labels, ManualClock, Metadata,
    PutOptions, Runtime, Task, TieredStore,
};
use cairn_core::{BlobId, ByteRange, Duration, Instant, Key, Revision, Span, Tier, WriteOutcome};
use futures_lite::future::block_on;
use futures_lite::{FutureExt, Stream, StreamExt};
use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

const MIB: usize = 1 << 20;
const T0: u64 = 1_700_000_000_000;

struct Fixture {
    /// Holds `root` and anything a test plants beside it.
    parent: tempfile::TempDir,
    clock: Arc<ManualClock>,
    dir: BlobDir,
}

impl Fixture {
    fn new() -> Fixture {
        let parent = scratch_dir();
        let clock = Arc::new(ManualClock::new(T0));
        let dir = open(&parent.path().join("root"), &clock);
        Fixture { parent, clock, dir }
    }

    fn root(&self) -> PathBuf {
        self.parent.path().join("root")
    }

    /// A second handle on the same root, as a restarted process would open it.
    fn reopen(&self) -> BlobDir {
        open(&self.root(), &self.clock)
    }

    fn now(&self) -> Instant {
        cairn_adapters::Clock::now(&*self.clock)
    }

    fn put(&self, key: &[u8], rev: u128, meta: &Metadata, body: Body) -> io::Result<u64> {
        block_on(self.dir.put(blob(key, rev), meta, body)).map_err(into_io)
    }

    fn get(
        &self,
        key: &[u8],
        rev: u128,
        span: Option<Span>,
    ) -> io::Result<Option<(Metadata, Bytes)>> {
        block_on(async {
            match self.dir.get(blob(key, rev), span).await.map_err(into_io)? {
                None => Ok(None),
                Some((meta, body)) => Ok(Some((meta, body.bytes().await?))),
            }
        })
    }

    fn head(&self, key: &[u8], rev: u128) -> io::Result<Option<Metadata>> {
        block_on(self.dir.head(blob(key, rev))).map_err(into_io)
    }

    fn delete(&self, key: &[u8], rev: u128) -> io::Result<()> {
        block_on(self.dir.delete(blob(key, rev))).map_err(into_io)
    }

    fn blobs(&self) -> Vec<BlobInfo> {
        self.dir.blobs().collect::<io::Result<_>>().unwrap()
    }

    /// The one stored blob's file.
    fn only_path(&self) -> PathBuf {
        let blobs = self.blobs();
        assert_eq!(blobs.len(), 1);
        blobs[0].path.clone()
    }

    fn temp_files(&self) -> Vec<PathBuf> {
        files_under(&self.root().join("tmp"))
    }
}

/// A fresh directory, in `/dev/shm` (tmpfs) when it exists: every fsync still runs, at a cost of
/// microseconds rather than milliseconds, which keeps this file's hundreds of durable writes fast.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    dir.expect("a temporary directory")
}

fn open(root: &Path, clock: &Arc<ManualClock>) -> BlobDir {
    BlobDir::open(root, BlobDirOptions::default().clock(clock.clone())).unwrap()
}

fn blob(key: &[u8], rev: u128) -> BlobId<'_> {
    BlobId {
        key: Key::new(key).unwrap(),
        revision: Revision(rev),
    }
}

/// The backend's error, back as the `io::Error` it wraps (kind and message).
fn into_io(e: cairn_adapters::backend::BackendError) -> io::Error {
    let kind = e
        .source_ref()
        .downcast_ref::<io::Error>()
        .map_or(io::ErrorKind::Other, io::Error::kind);
    io::Error::new(kind, e.to_string())
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 16) as u8)
        .collect()
}

/// `bytes` as a body of chunks with the given sizes, cycling through them.
fn chunked(bytes: &[u8], sizes: &[usize]) -> Body {
    let mut chunks = Vec::new();
    let mut at = 0;
    for size in sizes.iter().cycle() {
        if at == bytes.len() {
            break;
        }
        let end = (at + size).min(bytes.len());
        chunks.push(Bytes::copy_from_slice(&bytes[at..end]));
        at = end;
    }
    Body::from_chunks(chunks)
}

/// Every file (not directory) under `dir`, recursively, without following symlinks.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    out.sort();
    out
}

fn meta() -> Metadata {
    Metadata {
        size: 0,
        created: Instant::from_millis(T0),
        expires: None,
        labels: Labels::shared(
            Some("application/octet-stream".into()),
            vec![("owner".into(), "ada".into())],
        ),
    }
}

#[test]
fn small_and_multi_mib_blobs_round_trip_with_their_metadata() {
    let f = Fixture::new();
    let cases: [(usize, &[usize]); 5] = [
        (1, &[1]),
        (1000, &[7, 300]),
        (3 * MIB + 17, &[64 * 1024]),
        // Chunks far smaller and far larger than the write buffer.
        (5 * MIB + 1, &[1, 13, 4096, 2 * MIB]),
        (0, &[1]),
    ];
    for (i, (len, sizes)) in cases.into_iter().enumerate() {
        let bytes = data(len, i as u8);
        let m = Metadata {
            expires: Some(Instant::from_millis(T0 + 60_000)),
            ..meta()
        };
        let written = f.put(b"k", i as u128, &m, chunked(&bytes, sizes)).unwrap();
        assert_eq!(written, len as u64);
        let want = Metadata {
            size: len as u64,
            ..m
        };
        let (got_meta, got) = f.get(b"k", i as u128, None).unwrap().unwrap();
        assert_eq!(got_meta, want);
        assert!(got == bytes, "{len} bytes read back");
        assert_eq!(f.head(b"k", i as u128).unwrap(), Some(want));
    }
    assert_eq!(f.blobs().len(), 5);
    assert!(f.temp_files().is_empty(), "no temp file outlives a put");
}

#[test]
fn a_body_is_read_lazily_in_bounded_chunks() {
    let f = Fixture::new();
    let bytes = data(MIB + 5, 1);
    f.put(b"k", 1, &meta(), Body::from_bytes(bytes.clone()))
        .unwrap();
    let (_, mut body) = block_on(f.dir.get(blob(b"k", 1), None)).unwrap().unwrap();
    let mut got = Vec::new();
    let mut largest = 0;
    while let Some(chunk) = block_on(futures_lite::StreamExt::next(&mut body)) {
        let chunk = chunk.unwrap();
        largest = largest.max(chunk.len());
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, bytes);
    assert_eq!(largest, 64 * 1024, "one 64 KiB read per pull");
}

#[test]
fn ranges_read_exactly_their_bytes() {
    let f = Fixture::new();
    let len = 300_000u64; // several read chunks
    let bytes = data(len as usize, 9);
    f.put(b"k", 1, &meta(), Body::from_bytes(bytes.clone()))
        .unwrap();
    let resolved = |r: ByteRange| r.resolve(len).unwrap();
    let spans = [
        Span { start: 0, end: 1 },
        Span {
            start: 0,
            end: 65_536,
        },
        Span {
            start: 65_535,
            end: 65_537,
        },
        Span {
            start: 100_000,
            end: 250_001,
        },
        Span {
            start: len - 1,
            end: len,
        },
        resolved(ByteRange::Suffix(70_000)),
        resolved(ByteRange::Suffix(len * 2)),
        resolved(ByteRange::From(123_456)),
        resolved(ByteRange::Inclusive {
            start: 5,
            end: u64::MAX - 1,
        }),
    ];
    for span in spans {
        let (m, got) = f.get(b"k", 1, Some(span)).unwrap().unwrap();
        assert_eq!(m.size, len, "a range read reports the whole size");
        assert!(
            got[..] == bytes[span.start as usize..span.end as usize],
            "{span}"
        );
    }
}

#[test]
fn hostile_keys_stay_inside_the_root() {
    let f = Fixture::new();
    // Something a path-joining bug would overwrite or read.
    let outside = f.parent.path().join("etc");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("passwd"), "sentinel").unwrap();
    let long = vec![b'.'; 1024];
    let slashes = b"/".repeat(1024);
    let hostile: Vec<&[u8]> = vec![
        b"../../etc/passwd",
        b"../etc/passwd",
        b"/absolute",
        b"/",
        b"..",
        b".",
        b"tmp/../../x",
        b"blobs/00/x.blob",
        b"\x01",
        b"line\nbreak",
        b"\r\t\x7f",
        b"\xff\xfe\x80 not utf-8",
        b"C:\\Windows\\System32",
        b"~/.ssh/id_rsa",
        &long,
        &slashes,
    ];
    for (i, key) in hostile.iter().enumerate() {
        let bytes = data(100 + i, i as u8);
        f.put(key, i as u128, &meta(), Body::from_bytes(bytes.clone()))
            .unwrap();
        let (_, got) = f.get(key, i as u128, None).unwrap().unwrap();
        assert_eq!(got, bytes, "{:?}", String::from_utf8_lossy(key));
    }
    // Every key reads back from its file's header, not from any name.
    let mut keys: Vec<Vec<u8>> = f
        .blobs()
        .iter()
        .map(|b| b.key.as_bytes().to_vec())
        .collect();
    keys.sort();
    let mut want: Vec<Vec<u8>> = hostile.iter().map(|k| k.to_vec()).collect();
    want.sort();
    assert_eq!(keys, want);

    let root = std::fs::canonicalize(f.root()).unwrap();
    for file in files_under(f.parent.path()) {
        let file = std::fs::canonicalize(&file).unwrap();
        assert!(
            file.starts_with(&root)
                || file == std::fs::canonicalize(outside.join("passwd")).unwrap(),
            "{} is outside the root",
            file.display()
        );
    }
    assert_eq!(
        std::fs::read_to_string(outside.join("passwd")).unwrap(),
        "sentinel"
    );
    for (i, key) in hostile.iter().enumerate() {
        f.delete(key, i as u128).unwrap();
    }
    assert!(f.blobs().is_empty());
    assert_eq!(
        std::fs::read_to_string(outside.join("passwd")).unwrap(),
        "sentinel"
    );
    assert_eq!(
        files_under(f.parent.path()).len(),
        2,
        "LAYOUT and the sentinel"
    );
}

/// A body that yields some chunks, then an error.
fn failing_body(good: usize) -> Body {
    let mut chunks: Vec<io::Result<Bytes>> = (0..good)
        .map(|i| Ok(Bytes::from(data(100_000, i as u8))))
        .collect();
    chunks.push(Err(io::Error::new(
        io::ErrorKind::ConnectionReset,
        "client went away",
    )));
    Body::from_stream(futures_lite::stream::iter(chunks))
}

#[test]
fn a_body_failing_midway_fails_the_put_and_leaves_no_file() {
    let f = Fixture::new();
    let err = f.put(b"k", 1, &meta(), failing_body(5)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    assert!(err.to_string().contains("client went away"), "{err}");
    assert_eq!(f.head(b"k", 1).unwrap(), None);
    assert!(f.blobs().is_empty(), "no file at a final path");
    assert!(
        f.temp_files().is_empty(),
        "the failed put removed its temp file"
    );
    assert_eq!(
        f.dir.remove_temp_files(std::time::Duration::ZERO).unwrap(),
        0
    );
    f.delete(b"k", 1).unwrap();
}

/// A body that yields `chunks` chunks, then never another: a client that stalls forever.
struct Stalling(usize);

impl Stream for Stalling {
    type Item = io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.0 == 0 {
            return Poll::Pending;
        }
        self.0 -= 1;
        Poll::Ready(Some(Ok(Bytes::from(data(300_000, 1)))))
    }
}

#[test]
fn a_put_killed_midway_leaves_only_a_temp_file_which_is_removed_later() {
    let f = Fixture::new();
    let m = meta();
    let mut put = Box::pin(f.dir.put(blob(b"k", 1), &m, Body::from_stream(Stalling(4))));
    let waker = std::task::Waker::noop();
    assert!(put.poll(&mut Context::from_waker(waker)).is_pending());
    // The process dies here: no destructor runs.
    std::mem::forget(put);
    let temps = f.temp_files();
    assert_eq!(temps.len(), 1, "{temps:?}");
    assert!(
        std::fs::metadata(&temps[0]).unwrap().len() >= 1_200_000,
        "the body was being written"
    );

    let restarted = f.reopen();
    assert!(block_on(restarted.head(blob(b"k", 1))).unwrap().is_none());
    assert_eq!(restarted.blobs().count(), 0);
    block_on(restarted.delete(blob(b"k", 1))).expect("deleting the unfinished blob succeeds");
    // A temp file as fresh as this may belong to another live writer: left alone.
    let hour = std::time::Duration::from_secs(3600);
    assert_eq!(restarted.remove_temp_files(hour).unwrap(), 0);
    assert_eq!(
        restarted
            .remove_temp_files(std::time::Duration::ZERO)
            .unwrap(),
        1
    );
    assert!(f.temp_files().is_empty());
}

#[test]
fn a_temp_file_left_by_hand_is_invisible_after_reopening() {
    let f = Fixture::new();
    f.put(b"k", 1, &meta(), Body::from_bytes("kept")).unwrap();
    // A crash after writing a temp file that looks like a real blob of revision 2.
    let stale = f.root().join("tmp").join(format!("{:032x}-1-0.partial", 2));
    std::fs::copy(f.only_path(), &stale).unwrap();
    std::fs::write(f.root().join("tmp/not-ours.txt"), "left alone").unwrap();
    let restarted = f.reopen();
    assert!(block_on(restarted.get(blob(b"k", 2), None))
        .unwrap()
        .is_none());
    assert_eq!(restarted.blobs().count(), 1);
    assert_eq!(
        restarted
            .remove_temp_files(std::time::Duration::ZERO)
            .unwrap(),
        1
    );
    assert!(!stale.exists());
    assert!(
        f.root().join("tmp/not-ours.txt").exists(),
        "only .partial files are removed"
    );
    assert_eq!(f.get(b"k", 1, None).unwrap().unwrap().1, "kept");
}

#[test]
fn a_corrupt_or_truncated_file_is_an_error_never_data() {
    let f = Fixture::new();
    f.put(b"k", 1, &meta(), Body::from_bytes(data(5000, 1)))
        .unwrap();
    let path = f.only_path();
    let good = std::fs::read(&path).unwrap();
    let header_len = u32::from_le_bytes(good[12..16].try_into().unwrap()) as usize;
    let mut flipped = good.clone();
    flipped[50] ^= 0x10; // inside the header: the checksum catches it
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("cut in the fixed header", good[..20].to_vec()),
        ("cut in the key", good[..header_len - 1].to_vec()),
        ("cut in the payload", good[..good.len() - 1].to_vec()),
        ("grown", [&good[..], b"x"].concat()),
        ("flipped header byte", flipped),
        (
            "another format",
            b"PK\x03\x04 a zip file, not a blob".repeat(10),
        ),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        for err in [
            f.head(b"k", 1).unwrap_err(),
            f.get(b"k", 1, None).unwrap_err(),
            f.dir.blobs().next().unwrap().unwrap_err(),
        ] {
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{what}: {err}");
            assert!(
                err.to_string().contains(&*path.to_string_lossy()),
                "{what}: {err}"
            );
        }
    }
    // The name says it is this revision's: deleting it still works.
    f.delete(b"k", 1).unwrap();
    assert!(!path.exists());
}

/// Something that is not a regular file under a blob's name — a named pipe, which opening for
/// reading would wait on until a writer came, forever — is an error for every read, the
/// listing `fsck` walks and a delete, never a hang.
#[cfg(unix)]
#[test]
fn a_pipe_under_a_blob_s_name_is_an_error_not_a_hang() {
    let f = Fixture::new();
    f.put(b"k", 1, &meta(), Body::from_bytes("x")).unwrap();
    let path = f.only_path();
    std::fs::remove_file(&path).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&path).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("skipped: no mkfifo");
        return;
    }
    let (done, finished) = std::sync::mpsc::channel();
    let dir = f.dir.clone();
    std::thread::spawn(move || {
        let one = || blob(b"k", 1);
        let head = block_on(dir.head(one())).map(|_| ()).map_err(into_io);
        let get = block_on(dir.get(one(), None)).map(|_| ()).map_err(into_io);
        let listed = dir.blobs().next().unwrap().map(|_| ());
        let _ = done.send([head, get, listed]);
    });
    let outcome = finished.recv_timeout(std::time::Duration::from_secs(10));
    if outcome.is_err() {
        // Let the stuck open go (a writer arrives), then fail.
        let _ = std::fs::OpenOptions::new().write(true).open(&path);
        panic!("reading a pipe under a blob's name hung");
    }
    for result in outcome.unwrap() {
        let err = result.expect_err("not a blob");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }
    // Its name says it is this revision's: deleting removes it.
    f.delete(b"k", 1).unwrap();
    assert!(std::fs::symlink_metadata(&path).is_err());
}

#[test]
fn a_file_holding_another_key_is_never_served() {
    let f = Fixture::new();
    f.put(b"a", 1, &meta(), Body::from_bytes("a's bytes"))
        .unwrap();
    // Plant a's file where b's revision 1 would live, as a misplaced copy or a hash collision.
    f.put(b"b", 1, &meta(), Body::from_bytes("b's bytes"))
        .unwrap();
    let paths: Vec<_> = f
        .blobs()
        .into_iter()
        .map(|b| (b.key.as_bytes().to_vec(), b.path))
        .collect();
    let a_path = &paths.iter().find(|(k, _)| k == b"a").unwrap().1;
    let b_path = &paths.iter().find(|(k, _)| k == b"b").unwrap().1;
    std::fs::copy(a_path, b_path).unwrap();
    let err = f.get(b"b", 1, None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("not the requested"), "{err}");
    assert!(f.head(b"b", 1).is_err());
    assert!(
        f.dir.blobs().any(|b| b.is_err()),
        "fsck sees the misplaced file"
    );
    // b's blob does not exist, so deleting it succeeds, without touching a's bytes.
    f.delete(b"b", 1).unwrap();
    assert!(b_path.exists(), "a stray file is left for fsck");
    assert_eq!(f.get(b"a", 1, None).unwrap().unwrap().1, "a's bytes");
}

#[test]
fn expired_blobs_are_absent_and_swept_without_touching_live_ones() {
    let f = Fixture::new();
    let ttl = |ms| Metadata {
        expires: Some(Instant::from_millis(T0 + ms)),
        ..meta()
    };
    f.put(b"short", 1, &ttl(1_000), Body::from_bytes("s"))
        .unwrap();
    f.put(b"long", 2, &ttl(60_000), Body::from_bytes("l"))
        .unwrap();
    f.put(b"forever", 3, &meta(), Body::from_bytes("f"))
        .unwrap();
    f.put(b"deleted", 4, &ttl(1_000), Body::from_bytes("d"))
        .unwrap();
    f.delete(b"deleted", 4).unwrap();

    assert_eq!(
        f.dir.sweep_expired(f.now()).unwrap(),
        SweepReport::default()
    );
    f.clock.advance(Duration::from_millis(999));
    assert!(f.get(b"short", 1, None).unwrap().is_some());
    f.clock.advance(Duration::from_millis(1));
    assert_eq!(
        f.get(b"short", 1, None).unwrap(),
        None,
        "expired at its expiry instant"
    );
    assert_eq!(f.head(b"short", 1).unwrap(), None);
    assert_eq!(f.blobs().len(), 3, "expired but not yet swept");

    let report = f.dir.sweep_expired(f.now()).unwrap();
    assert_eq!(
        report,
        SweepReport {
            blobs_deleted: 1,
            ..SweepReport::default()
        },
        "delete removed its marker"
    );
    assert_eq!(f.blobs().len(), 2);
    assert_eq!(
        f.dir.sweep_expired(f.now()).unwrap(),
        SweepReport::default()
    );

    f.clock.advance(Duration::from_secs(3600));
    assert_eq!(f.dir.sweep_expired(f.now()).unwrap().blobs_deleted, 1);
    let left: Vec<_> = f
        .blobs()
        .into_iter()
        .map(|b| b.key.as_bytes().to_vec())
        .collect();
    assert_eq!(left, [b"forever".to_vec()]);
    assert_eq!(
        files_under(&f.root().join("blobs")).len(),
        1,
        "no marker left behind"
    );
}

#[test]
fn a_marker_left_by_a_crashed_write_is_swept() {
    let f = Fixture::new();
    let m = Metadata {
        expires: Some(Instant::from_millis(T0 + 10)),
        ..meta()
    };
    f.put(b"k", 1, &m, Body::from_bytes("x")).unwrap();
    // A crash between marker and rename: the marker stays, the blob never appears.
    std::fs::remove_file(f.only_path()).unwrap();
    f.clock.advance(Duration::from_secs(1));
    let [marker] = files_under(&f.root().join("blobs")).try_into().unwrap();
    // Alone for less than the grace period, its blob may still be on its way.
    let young = SystemTime::now() - (STALE_MARKER_AGE - std::time::Duration::from_secs(60));
    set_modified(&marker, young);
    assert_eq!(
        f.dir.sweep_expired(f.now()).unwrap(),
        SweepReport::default()
    );
    assert!(marker.exists());
    set_modified(&marker, SystemTime::now() - STALE_MARKER_AGE);
    let report = f.dir.sweep_expired(f.now()).unwrap();
    assert_eq!(
        report,
        SweepReport {
            stale_markers: 1,
            ..SweepReport::default()
        }
    );
    assert!(files_under(&f.root().join("blobs")).is_empty());
}

/// Recovery deletes the blob of a write that crashed between making its marker and renaming its
/// blob: the marker goes with that delete, though no header names it, rather than wait for the
/// sweep an hour past an expiry that may be years away.
#[test]
fn deleting_a_blob_that_never_appeared_removes_its_lone_marker() {
    let f = Fixture::new();
    let far = Metadata {
        expires: Some(Instant::from_millis(T0 + 10 * 365 * 86_400_000)),
        ..meta()
    };
    f.put(b"k", 1, &far, Body::from_bytes("x")).unwrap();
    f.put(b"k", 2, &far, Body::from_bytes("y")).unwrap();
    let blobs = f.blobs();
    let one = blobs.iter().find(|b| b.revision == Revision(1)).unwrap();
    std::fs::remove_file(&one.path).unwrap();
    assert_eq!(files_under(&f.root().join("blobs")).len(), 3);
    block_on(f.dir.delete(blob(b"k", 1))).unwrap();
    // Revision 2's blob and marker stay; revision 1's marker is gone.
    let left = files_under(&f.root().join("blobs"));
    assert_eq!(left.len(), 2, "{left:?}");
    let one = Revision(1).to_string();
    assert!(
        left.iter().all(|p| !p.to_string_lossy().contains(&one)),
        "{left:?}"
    );
}

/// A blob whose file is damaged (cut short, or its header unreadable) is deleted whole: its
/// marker goes too, though the damaged header cannot name it — left behind, a marker of a blob
/// that expires in years would stay for years, as a crashed write's would.
#[test]
fn deleting_a_damaged_blob_removes_its_marker() {
    let f = Fixture::new();
    let far = Metadata {
        expires: Some(Instant::from_millis(T0 + 10 * 365 * 86_400_000)),
        ..meta()
    };
    f.put(b"k", 1, &far, Body::from_bytes("a payload")).unwrap();
    f.put(b"k", 2, &far, Body::from_bytes("another payload"))
        .unwrap();
    let blobs = f.blobs();
    let path = |rev: u128| {
        blobs
            .iter()
            .find(|b| b.revision == Revision(rev))
            .unwrap()
            .path
            .clone()
    };
    // One cut short (its header intact), one whose header is junk.
    let cut = std::fs::File::options().write(true).open(path(1)).unwrap();
    cut.set_len(cut.metadata().unwrap().len() - 3).unwrap();
    std::fs::write(path(2), b"junk").unwrap();
    assert_eq!(files_under(&f.root().join("blobs")).len(), 4);
    block_on(f.dir.delete(blob(b"k", 1))).expect("delete the cut blob");
    block_on(f.dir.delete(blob(b"k", 2))).expect("delete the junk blob");
    let left = files_under(&f.root().join("blobs"));
    assert!(left.is_empty(), "{left:?}");
}

/// A blob that is not there is deleted, whatever stands in the way of tidying its lone marker:
/// the marker is only a hint for the sweep, and a delete that failed on it would keep its
/// change-log entry in recovery forever, where before it succeeded at once.
#[test]
fn deleting_a_missing_blob_succeeds_though_its_marker_cannot_be_removed() {
    let f = Fixture::new();
    let far = Metadata {
        expires: Some(Instant::from_millis(T0 + 10 * 365 * 86_400_000)),
        ..meta()
    };
    f.put(b"k", 1, &far, Body::from_bytes("x")).unwrap();
    std::fs::remove_file(f.only_path()).unwrap();
    // Something that is not a file under the marker's name: it cannot be unlinked.
    let [marker] = files_under(&f.root().join("blobs")).try_into().unwrap();
    std::fs::remove_file(&marker).unwrap();
    std::fs::create_dir(&marker).unwrap();
    std::fs::write(marker.join("inside"), b"").unwrap();
    block_on(f.dir.delete(blob(b"k", 1))).expect("the blob is not there: deleted");
}

/// A write creates its blob's marker, then renames the blob into place. A sweep (here or in
/// another process) that finds the marker alone in between must leave it: without its marker
/// the blob, expired already, would never be swept.
#[test]
fn a_sweep_between_a_write_s_marker_and_its_rename_leaves_the_marker() {
    let f = Fixture::new();
    let m = Metadata {
        expires: Some(Instant::from_millis(T0 + 10)),
        ..meta()
    };
    f.put(b"k", 1, &m, Body::from_bytes("x")).unwrap();
    let blob = f.only_path();
    let aside = f.root().join("aside");
    std::fs::rename(&blob, &aside).unwrap(); // the moment before the rename
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(
        f.dir.sweep_expired(f.now()).unwrap(),
        SweepReport::default()
    );
    std::fs::rename(&aside, &blob).unwrap(); // the rename
    let report = f.dir.sweep_expired(f.now()).unwrap();
    assert_eq!(report.blobs_deleted, 1);
    assert!(files_under(&f.root().join("blobs")).is_empty());
}

fn set_modified(path: &Path, at: SystemTime) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(at).unwrap();
}

#[test]
fn deleting_a_missing_blob_succeeds() {
    let f = Fixture::new();
    f.delete(b"never", 1).unwrap();
    f.put(b"k", 1, &meta(), Body::from_bytes("x")).unwrap();
    f.delete(b"k", 1).unwrap();
    f.delete(b"k", 1).unwrap();
    assert_eq!(f.get(b"k", 1, None).unwrap(), None);
}

#[test]
fn io_failures_are_errors_naming_the_path() {
    let f = Fixture::new();
    f.put(b"k", 1, &meta(), Body::from_bytes("x")).unwrap();
    let path = f.only_path();
    let fanout = path.parent().unwrap().to_path_buf();
    // Replace the key's fan-out directory with a plain file: every call on it fails.
    std::fs::remove_dir_all(&fanout).unwrap();
    std::fs::write(&fanout, "not a directory").unwrap();
    let errors = [
        f.put(b"k", 2, &meta(), Body::from_bytes("y")).unwrap_err(),
        f.get(b"k", 1, None).unwrap_err(),
        f.delete(b"k", 1).unwrap_err(),
    ];
    for err in errors {
        assert!(
            err.to_string().contains(&*fanout.to_string_lossy()),
            "{err}"
        );
    }
    assert!(
        f.temp_files().is_empty(),
        "the failed put cleaned its temp file"
    );
    // The sweep goes on past what it cannot list, and counts it.
    assert_eq!(f.dir.sweep_expired(f.now()).unwrap().skipped, 1);
}

#[test]
fn another_layout_version_is_refused() {
    let f = Fixture::new();
    std::fs::write(f.root().join("LAYOUT"), "cairn blobdir layout 2\n").unwrap();
    let err = BlobDir::open(&f.root(), BlobDirOptions::default()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("layout"), "{err}");
}

/// Threads of one process making the same new blob directory at once (two stores opened on one
/// fresh data directory) all succeed, and leave its `LAYOUT` whole: each writes the tag through
/// a temporary file of its own, never one another thread is renaming or truncating.
#[test]
fn threads_creating_one_blob_directory_at_once_all_succeed() {
    const THREADS: usize = 8;
    for round in 0..40 {
        let parent = scratch_dir();
        let root = parent.path().join("root");
        let start = std::sync::Barrier::new(THREADS);
        let opened: Vec<io::Result<BlobDir>> = std::thread::scope(|s| {
            let spawned: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        BlobDir::open(&root, BlobDirOptions::default())
                    })
                })
                .collect();
            spawned.into_iter().map(|t| t.join().unwrap()).collect()
        });
        for result in opened {
            if let Err(e) = result {
                panic!("round {round}: an open failed: {e}");
            }
        }
        let tag = std::fs::read_to_string(root.join("LAYOUT")).unwrap();
        assert_eq!(tag, "cairn blobdir layout 1\n", "round {round}");
        BlobDir::open(&root, BlobDirOptions::default()).expect("reopened");
    }
}

#[test]
fn concurrent_writers_on_two_handles_all_land() {
    let f = Fixture::new();
    let handles = [f.dir.clone(), f.reopen()];
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let dir = handles[t as usize % 2].clone();
            s.spawn(move || {
                for i in 0..25u128 {
                    let rev = u128::from(t) << 64 | i;
                    let body = Body::from_bytes(data(10_000, t));
                    block_on(dir.put(blob(b"shared key", rev), &meta(), body)).unwrap();
                }
            });
        }
    });
    let blobs = f.blobs();
    assert_eq!(blobs.len(), 100);
    for b in blobs {
        let t = (b.revision.0 >> 64) as u8;
        assert_eq!(
            f.get(b"shared key", b.revision.0, None).unwrap().unwrap().1,
            data(10_000, t)
        );
    }
}

type StagingStore = BlockingStore<MemoryHv, Faulty<BlobDir>, Faulty<MemoryLog>>;

/// A store whose long-term tier is the fixture's directory and whose long-term tier and change
/// log answer through `faults` (the fault wrapper forwards staging).
fn staging_store(f: &Fixture, faults: &Arc<Faults>) -> StagingStore {
    BlockingStore::new(
        MemoryHv::new(),
        Faulty::new(f.dir.clone(), faults.clone()),
        Faulty::new(MemoryLog::new(), faults.clone()),
    )
}

/// A staging store whose change-log records wait at the returned gate.
fn record_held_at_a_gate(f: &Fixture) -> (Arc<Gate>, StagingStore) {
    let faults = Faults::new();
    let gate = Gate::new();
    faults.inject(Op::LogRecord, Fault::Pause(gate.clone()));
    (gate, staging_store(f, &faults))
}

/// Nothing of a put is left: no temp file, no blob, no row, no change-log entry.
fn nothing_left(f: &Fixture, store: &StagingStore) {
    assert!(f.temp_files().is_empty(), "{:?}", f.temp_files());
    assert!(f.blobs().is_empty());
    assert!(store.get("big").unwrap().is_none());
    assert!(store.inner().log().inner().is_empty(), "cleanup finished");
}

#[test]
fn a_large_puts_blob_is_written_while_its_record_commits_and_appears_only_after_it() {
    let f = Fixture::new();
    let (gate, store) = record_held_at_a_gate(&f);
    let payload = data(3 * MIB, 7);
    /// Opens the gate however the test ends, so a failure never leaves the put stuck.
    struct Open(Arc<Gate>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.release();
        }
    }
    std::thread::scope(|s| {
        let put = s.spawn(|| store.put("big", payload.clone(), &PutOptions::default()));
        let _open = Open(gate.clone());
        // The record is held at the gate; the blob's bytes go out meanwhile.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let staged = loop {
            let temps = f.temp_files();
            let full = temps
                .iter()
                .find(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > payload.len() as u64));
            if let (true, Some(p)) = (gate.is_reached(), full) {
                break p.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the blob was never staged"
            );
            std::thread::yield_now();
        };
        assert!(f.blobs().is_empty(), "staged, not yet visible: {staged:?}");
        assert!(store.get("big").unwrap().is_none(), "nothing refers to it");
        gate.release();
        assert_eq!(put.join().unwrap().unwrap(), WriteOutcome::Committed);
    });
    assert!(
        f.temp_files().is_empty(),
        "published: the temp file became the blob"
    );
    assert_eq!(f.blobs().len(), 1);
    assert_eq!(store.get_bytes("big").unwrap().unwrap(), payload);
}

#[test]
fn a_blob_staged_for_a_record_that_never_commits_is_discarded() {
    let f = Fixture::new();
    let faults = Faults::new();
    // Every attempt at the record fails.
    faults.inject_nth(Op::LogRecord, 0, Fault::FailBefore, 8);
    let store = staging_store(&f, &faults);
    let err = store
        .put("big", data(3 * MIB, 9), &PutOptions::default())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Write { error, .. } if error.tier == Tier::Log),
        "{err}"
    );
    assert!(faults.calls(Op::LogRecord) >= 1);
    assert_eq!(
        faults.calls(Op::LtStage),
        1,
        "staged once, beside the first attempt"
    );
    assert_eq!(faults.calls(Op::LtPut), 0, "never published");
    assert!(f.temp_files().is_empty(), "the staged blob was discarded");
    assert!(f.blobs().is_empty());
    assert!(store.get("big").unwrap().is_none());
}

#[test]
fn a_record_that_commits_on_its_second_attempt_publishes_the_blob_staged_beside_the_first() {
    let f = Fixture::new();
    let faults = Faults::new();
    faults.inject(Op::LogRecord, Fault::FailBefore);
    let store = staging_store(&f, &faults);
    let payload = data(3 * MIB, 11);
    let done = store.put("big", payload.clone(), &PutOptions::default());
    assert_eq!(done.unwrap(), WriteOutcome::Committed);
    assert_eq!(faults.calls(Op::LogRecord), 2);
    assert_eq!(
        faults.calls(Op::LtStage),
        1,
        "the retry reused the staged blob"
    );
    assert_eq!(faults.calls(Op::LtPut), 1, "published once");
    assert!(f.temp_files().is_empty());
    assert_eq!(f.blobs().len(), 1);
    assert_eq!(store.get_bytes("big").unwrap().unwrap(), payload);
}

#[test]
fn a_failed_staging_or_publication_is_a_failed_blob_write_and_leaves_nothing() {
    let f = Fixture::new();
    // (aimed at, fault, stagings, publications): a staging that fails before or after writing
    // the temp file; a publication that fails before the rename (nothing published) or after it
    // (published, answer lost: cleanup deletes the blob).
    let cases = [
        (Op::LtStage, Fault::FailBefore, 1, 0),
        (Op::LtStage, Fault::FailAfter, 1, 0),
        (Op::LtPut, Fault::FailBefore, 1, 1),
        (Op::LtPut, Fault::FailAfter, 1, 1),
    ];
    for (op, fault, stagings, publications) in cases {
        let faults = Faults::new();
        faults.inject(op, fault.clone());
        let store = staging_store(&f, &faults);
        let err = store
            .put("big", data(3 * MIB, 12), &PutOptions::default())
            .unwrap_err();
        let case = format!("{fault:?} at {op:?}");
        assert!(
            matches!(&err, Error::Write { error, .. } if error.tier == Tier::Lt),
            "{case}: {err}"
        );
        assert_eq!(faults.calls(Op::LtStage), stagings, "{case}");
        assert_eq!(faults.calls(Op::LtPut), publications, "{case}");
        nothing_left(&f, &store);
    }
}

#[test]
fn a_put_dropped_while_its_record_waits_leaves_no_staged_file() {
    let f = Fixture::new();
    let (gate, store) = record_held_at_a_gate(&f);
    let payload = Bytes::from(data(3 * MIB, 14));
    {
        let options = PutOptions::default();
        let mut put = Box::pin(store.inner().put("big", payload.clone(), &options));
        let waker = std::task::Waker::noop();
        assert!(put.poll(&mut Context::from_waker(waker)).is_pending());
        assert!(gate.is_reached(), "the record waits at the gate");
        assert_eq!(f.temp_files().len(), 1, "the blob was staged meanwhile");
        // The caller gives up: the put's future is dropped.
    }
    assert!(f.temp_files().is_empty(), "the staged file went with it");
    assert!(f.blobs().is_empty());
    assert!(store.get("big").unwrap().is_none());
}

/// Cancelled half way, a put's change-log entry must not stay held by an operation that no
/// longer exists, nor wait for a recovery pass that a store without one scheduled never runs:
/// once the tier has settled, the store cleans up after it in the background.
#[test]
fn a_put_dropped_while_its_compare_and_write_waits_is_cleaned_up_in_the_background() {
    let f = Fixture::new();
    let faults = Faults::new();
    let store = BlockingStore::new(
        Faulty::new(MemoryHv::new(), faults.clone()),
        f.dir.clone(),
        MemoryLog::new(),
    );
    let old = Bytes::from(data(2 * MIB, 15));
    let options = PutOptions::default();
    store.put("big", old.clone(), &options).unwrap();
    let gate = Gate::new();
    faults.inject(Op::HvCas, Fault::Pause(gate.clone()));
    {
        let mut put = Box::pin(store.inner().put("big", data(3 * MIB, 16), &options));
        let waker = std::task::Waker::noop();
        while !gate.is_reached() {
            assert!(put.poll(&mut Context::from_waker(waker)).is_pending());
        }
        assert_eq!(
            f.blobs().len(),
            2,
            "the new blob is published, the old one kept"
        );
        // The caller gives up: the put's future is dropped before its tombstone is written.
    }
    gate.release();
    // Cleaned up in the background once the tier has settled.
    block_on(store.inner().join());
    assert!(store.inner().log().is_empty(), "its entry is removed");
    let report = store.recover().unwrap();
    assert_eq!(report.entries, 0, "nothing left to recovery: {report:?}");
    assert_eq!(f.blobs().len(), 1, "the dropped put's blob is deleted");
    assert_eq!(store.get_bytes("big").unwrap().unwrap(), old);
}

/// A long-term tier whose stored bodies fail after their first chunk, as a disk failing under
/// a read does.
struct FailingReads(BlobDir);

impl LtBackend for FailingReads {
    async fn put(&self, blob: BlobId<'_>, meta: &Metadata, body: Body) -> BackendResult<u64> {
        self.0.put(blob, meta, body).await
    }
    async fn get(
        &self,
        blob: BlobId<'_>,
        span: Option<Span>,
    ) -> BackendResult<Option<(Metadata, Body)>> {
        let found = self.0.get(blob, span).await?;
        Ok(found.map(|(meta, body)| {
            let failing = body
                .take(1)
                .chain(futures_lite::stream::once(Err(io::Error::other(
                    "EIO reading blob",
                ))));
            (meta, Body::from_stream(failing))
        }))
    }
    async fn head(&self, blob: BlobId<'_>) -> BackendResult<Option<Metadata>> {
        self.0.head(blob).await
    }
    async fn delete(&self, blob: BlobId<'_>) -> BackendResult<()> {
        self.0.delete(blob).await
    }
}

/// A stored object that cannot be read back is the long-term tier's failure, not the caller's.
#[test]
fn a_stored_body_failing_midway_is_a_read_error_of_the_long_term_tier() {
    let f = Fixture::new();
    let store = BlockingStore::new(
        MemoryHv::new(),
        FailingReads(f.dir.clone()),
        MemoryLog::new(),
    );
    store
        .put("big", data(3 * MIB, 17), &PutOptions::default())
        .unwrap();
    let err = store.get_bytes("big").unwrap_err();
    assert!(matches!(err, Error::Read { tier: Tier::Lt, .. }), "{err:?}");
    assert!(!err.is_caller_error());
}

/// A streamed put's time to live runs from the start of the put, however long its body takes,
/// small or large: the clock moves 10 s per chunk here, and a one-hour TTL still ends an hour
/// after the put began.
#[test]
fn a_streamed_puts_time_to_live_runs_from_its_start() {
    let f = Fixture::new();
    let store = TieredStore::builder(MemoryHv::new(), f.dir.clone(), MemoryLog::new())
        .clock(f.clock.clone())
        .build(InlineRuntime)
        .unwrap();
    let hour = Duration::from_secs(3600);
    let options = PutOptions::default().ttl(hour);
    for (key, chunks) in [("small", 4), ("large", 40)] {
        let started = f.now();
        let clock = f.clock.clone();
        let body = futures_lite::stream::iter(0..chunks).map(move |i| {
            clock.advance(Duration::from_secs(10));
            Ok(Bytes::from(data(64 * 1024, i as u8)))
        });
        block_on(store.put_stream(key, Body::from_stream(body), &options)).unwrap();
        let info = block_on(store.head(key)).unwrap();
        let info = info.unwrap_or_else(|| panic!("{key} expired while it was written"));
        assert_eq!(info.meta.created, started, "{key}");
        assert_eq!(info.meta.expires, Some(started + hour), "{key}");
    }
}

/// A runtime that does nothing by itself: its spawned tasks and blocking jobs wait in queues
/// until the test runs them, so that a test can stop an operation at any of its file steps.
#[derive(Clone, Default)]
struct ByHand {
    tasks: Arc<Mutex<Vec<Task>>>,
    jobs: Arc<Mutex<VecDeque<BlockingJob>>>,
}

impl Runtime for ByHand {
    fn spawn(&self, task: Task) {
        self.tasks.lock().unwrap().push(task);
    }
    fn sleep(&self, _: std::time::Duration) -> Task {
        Box::pin(std::future::ready(()))
    }
    fn unblock(&self, job: BlockingJob) {
        self.jobs.lock().unwrap().push_back(job);
    }
}

impl ByHand {
    fn queued_jobs(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }

    /// Runs the oldest queued job (or, `newest`, the newest) on a thread of its own, as a
    /// blocking pool would, and waits for it.
    fn run_job(&self, newest: bool) {
        let job = {
            let mut jobs = self.jobs.lock().unwrap();
            if newest {
                jobs.pop_back()
            } else {
                jobs.pop_front()
            }
        };
        let job = job.expect("a queued job");
        std::thread::scope(|s| s.spawn(job).join().unwrap());
    }

    /// Polls every spawned task once; returns how many are still pending.
    fn poll_tasks(&self) -> usize {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut tasks = self.tasks.lock().unwrap();
        tasks.retain_mut(|task| task.as_mut().poll(&mut cx).is_pending());
        tasks.len()
    }

    /// Polls `op` until it is done, running the job it waits for whenever it suspends: it must
    /// wait for nothing else. Returns its output and the number of jobs it took.
    fn drive<T>(&self, op: impl std::future::Future<Output = T>) -> (T, usize) {
        let mut op = std::pin::pin!(op);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut jobs = 0;
        loop {
            if let Poll::Ready(out) = op.as_mut().poll(&mut cx) {
                assert_eq!(self.queued_jobs(), 0, "no job is left behind");
                return (out, jobs);
            }
            assert_eq!(
                self.queued_jobs(),
                1,
                "a suspended operation waits for its job"
            );
            self.run_job(false);
            jobs += 1;
        }
    }
}

fn offloaded(f: &Fixture, pool: &ByHand) -> BlobDir {
    let options = BlobDirOptions::default()
        .clock(f.clock.clone())
        .offload(pool.clone());
    BlobDir::open(&f.root(), options).unwrap()
}

/// With a runtime to offload to, no file step of a put or a delete runs on the thread that
/// polls it: each poll stops at a job handed to the runtime's blocking pool, and goes on only
/// once that job has run there; reads (get, head, a body) run in place. Without one (or with
/// the inline runtime), each operation ends in its first poll, and hands nothing to anyone.
#[test]
fn offloaded_operations_do_their_file_work_only_on_the_blocking_pool() {
    let f = Fixture::new();
    let pool = ByHand::default();
    let dir = offloaded(&f, &pool);
    let payload = Bytes::from(data(MIB, 40));
    let meta = Metadata::default();

    let body = Body::from_bytes(payload.clone());
    let (written, jobs) = pool.drive(dir.put(blob(b"k", 1), &meta, body));
    assert_eq!(written.unwrap(), MIB as u64);
    // The temp file and its header; the one 1 MiB batch; the sync; the publication.
    assert_eq!(jobs, 4, "the put's jobs");
    assert_eq!(f.blobs().len(), 1);

    // Reads stay in place: the open, the header and every chunk, with nothing queued.
    let (found, jobs) = pool.drive(dir.get(blob(b"k", 1), None));
    assert_eq!(jobs, 0, "a get reads in place");
    let (_, body) = found.unwrap().expect("stored");
    let (read, jobs) = pool.drive(body.bytes());
    assert_eq!((read.unwrap(), jobs), (payload.clone(), 0));
    let (head, jobs) = pool.drive(dir.head(blob(b"k", 1)));
    assert_eq!((head.unwrap().unwrap().size, jobs), (MIB as u64, 0));
    let (deleted, jobs) = pool.drive(dir.delete(blob(b"k", 1)));
    deleted.unwrap();
    assert_eq!(jobs, 1);
    assert!(f.blobs().is_empty());

    // In place: the same operations, never suspended.
    let options = BlobDirOptions::default()
        .clock(f.clock.clone())
        .offload(InlineRuntime);
    let here = BlobDir::open(&f.root(), options).unwrap();
    let body = Body::from_bytes(payload.clone());
    let ((), jobs) = pool.drive(async {
        here.put(blob(b"k", 2), &meta, body).await.unwrap();
        let (_, body) = here.get(blob(b"k", 2), None).await.unwrap().unwrap();
        assert_eq!(body.bytes().await.unwrap(), payload);
        here.delete(blob(b"k", 2)).await.unwrap();
    });
    assert_eq!(jobs, 0, "in place, nothing is handed to the pool");
    assert!(f.temp_files().is_empty() && f.blobs().is_empty());
}

/// A job on the pool runs to its end though its caller is gone, and the directory counts it as
/// under way until then: [`LtBackend::settled`] waits for it (and only for jobs started before
/// it was called). What the job leaves is cleaned up on the pool: a write's temp file goes; a
/// publication, once started, goes through.
#[test]
fn settled_waits_for_the_jobs_of_operations_dropped_half_way() {
    let f = Fixture::new();
    let pool = ByHand::default();
    let dir = offloaded(&f, &pool);
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let meta = Metadata::default();
    // A put of one 1 MiB chunk takes four jobs: the temp file, the batch, the sync, the
    // publication. Dropped with its batch on the pool, then with its publication there.
    for (run_before_drop, published) in [(1, false), (3, true)] {
        let revision = 1 + run_before_drop as u128;
        {
            let body = Body::from_bytes(data(MIB, 41));
            let mut put = Box::pin(dir.put(blob(b"k", revision), &meta, body));
            for _ in 0..run_before_drop {
                assert!(put.as_mut().poll(&mut cx).is_pending());
                pool.run_job(false);
            }
            assert!(put.as_mut().poll(&mut cx).is_pending());
            assert_eq!(pool.queued_jobs(), 1);
            // The caller gives up with a job on the pool.
        }
        let mut settled = Box::pin(dir.settled());
        assert!(
            settled.as_mut().poll(&mut cx).is_pending(),
            "the job is under way"
        );
        // A job started later is not waited for.
        let mut later = Box::pin(dir.delete(blob(b"k", 99)));
        assert!(later.as_mut().poll(&mut cx).is_pending());
        assert_eq!(f.temp_files().len(), 1, "the job owns the temp file");
        pool.run_job(false);
        assert!(settled.as_mut().poll(&mut cx).is_ready(), "the job is over");
        assert!(f.temp_files().is_empty(), "the temp file went with the job");
        assert_eq!(f.blobs().len(), usize::from(published));
        pool.run_job(false);
        assert!(later.as_mut().poll(&mut cx).is_ready());
    }
}

/// A put that ends without publishing while its temp file is in the caller's hands — its body
/// failed, or its future was dropped between two jobs — removes the temp file on the pool too,
/// never on the thread that polls it (an executor's, which must not block on the disk). A failed
/// put returns once the file is gone; a dropped one's removal is waited for by `settled`.
#[test]
fn a_put_that_fails_or_is_dropped_between_jobs_removes_its_temp_file_on_the_pool() {
    let f = Fixture::new();
    let pool = ByHand::default();
    let dir = offloaded(&f, &pool);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let meta = Metadata::default();

    // Two chunks of 100 kB do not fill a batch: after the temp file's job, the put reads its
    // whole body, and meets the failure, without another job.
    let mut put = Box::pin(dir.put(blob(b"k", 1), &meta, failing_body(2)));
    assert!(put.as_mut().poll(&mut cx).is_pending());
    pool.run_job(false);
    assert!(
        put.as_mut().poll(&mut cx).is_pending(),
        "the removal is on the pool"
    );
    assert_eq!((pool.queued_jobs(), f.temp_files().len()), (1, 1));
    pool.run_job(false);
    assert!(f.temp_files().is_empty(), "removed on the pool");
    let Poll::Ready(Err(e)) = put.as_mut().poll(&mut cx) else {
        panic!("the body's failure ends the put")
    };
    assert!(e.to_string().contains("client went away"), "{e}");

    let mut put = Box::pin(dir.put(blob(b"k", 2), &meta, Body::from_stream(Stalling(0))));
    assert!(put.as_mut().poll(&mut cx).is_pending());
    pool.run_job(false);
    assert!(put.as_mut().poll(&mut cx).is_pending(), "the body stalls");
    assert_eq!(
        pool.queued_jobs(),
        0,
        "the temp file is in the caller's hands"
    );
    drop(put);
    assert_eq!(
        f.temp_files().len(),
        1,
        "not removed on the caller's thread"
    );
    assert_eq!(pool.queued_jobs(), 1, "its removal is handed to the pool");
    let mut settled = Box::pin(dir.settled());
    assert!(
        settled.as_mut().poll(&mut cx).is_pending(),
        "the removal is under way"
    );
    pool.run_job(false);
    assert!(settled.as_mut().poll(&mut cx).is_ready());
    assert!(f.temp_files().is_empty() && f.blobs().is_empty());
}

/// A store cleaning up after a put dropped with its publication on the pool waits for the
/// publication to end: were the cleanup to delete the (not yet published) blob first, the
/// publication would then put an orphan in place that nothing ever deletes.
#[test]
fn a_put_dropped_while_its_publication_is_on_the_pool_leaves_no_orphan() {
    let f = Fixture::new();
    let pool = ByHand::default();
    let store = TieredStore::new(
        MemoryHv::new(),
        offloaded(&f, &pool),
        MemoryLog::new(),
        pool.clone(),
    );
    let options = PutOptions::default();
    let value = || Bytes::from(data(3 * MIB, 42));
    // How many jobs a fresh large put takes: its last one is its publication.
    let (done, jobs) = pool.drive(store.put("first", value(), &options));
    done.unwrap();
    assert!(jobs > 0, "the put's file work goes to the pool");
    {
        let mut put = Box::pin(store.put("big", value(), &options));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        for _ in 0..jobs - 1 {
            assert!(put.as_mut().poll(&mut cx).is_pending());
            pool.run_job(false);
        }
        assert!(put.as_mut().poll(&mut cx).is_pending());
        assert_eq!(pool.queued_jobs(), 1, "the publication waits for the pool");
        // The caller gives up.
    }
    assert_eq!(pool.poll_tasks(), 1, "the cleanup waits");
    // Whatever the cleanup asked of the pool meanwhile runs first, as a pool of many threads
    // may run it; the publication last.
    while pool.queued_jobs() > 1 {
        pool.run_job(true);
        pool.poll_tasks();
    }
    pool.run_job(false);
    while pool.poll_tasks() > 0 {
        pool.run_job(false);
    }
    block_on(store.join());
    assert!(store.log().is_empty(), "the entry is removed");
    assert_eq!(f.blobs().len(), 1, "only the first put's blob: no orphan");
    assert!(f.temp_files().is_empty());
    let (found, _) = pool.drive(store.get("big"));
    assert!(found.unwrap().is_none());
}
