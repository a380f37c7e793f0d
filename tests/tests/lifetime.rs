//! Lifetimes, as a server embedding cairn meets them: stores closed while operations are under
//! way on other tasks or threads (and runtimes shut down under them), bodies read after their
//! store closed and their object was overwritten, deleted, expired and swept, many large puts at
//! once, background maintenance outliving nothing, two instances on one data directory, and
//! futures and bodies handed between runtimes and threads.
//!
//! Every test watches what a leak would leave: change-log entries, orphan blobs or temporary
//! files (the embedded store's own `fsck`, with no recovery pass unless the case is a crash),
//! files of the data directory still open (`/proc/self/fd`: a writer thread or connection that
//! outlived its store), and background tasks or threads still alive.

#![cfg(target_os = "linux")]

use bytes::Bytes;
use cairn_adapters::blobdir::{BlobDir, BlobDirOptions};
use cairn_adapters::cairn_core::{ByteRange, Config, Duration};
use cairn_adapters::embedded::{Embedded, EmbeddedOptions, BLOB_DIR, DB_FILE};
use cairn_adapters::fault::{Fault, Faults, Faulty, Op};
use cairn_adapters::memory::{MemoryHv, MemoryLog, MemoryLt};
use cairn_adapters::sqlite::{SqliteDb, SqliteOptions};
use cairn_adapters::{
    BlockingStore, Body, InlineRuntime, ManualClock, PutOptions, Runtime, SmolRuntime, TieredStore,
    TokioRuntime,
};
use futures_lite::future::block_on;
use futures_lite::StreamExt;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The inline threshold of every store here: small, so that "large" objects are cheap.
const THRESHOLD: usize = 4096;
/// A large object: a blob behind a tombstone.
const LARGE: usize = 16 * 1024;

fn config() -> Config {
    Config {
        inline_threshold: THRESHOLD as u64,
        ..Config::DEFAULT
    }
}

fn options() -> EmbeddedOptions {
    EmbeddedOptions {
        config: config(),
        ..EmbeddedOptions::default()
    }
}

/// `len` bytes that no other seed produces (a xorshift stream): a read that mixed two values
/// equals neither.
fn value(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// `value` as a body of 1 KiB chunks, yielding before each: a put_stream that suspends often.
fn slow_body(value: Bytes) -> Body {
    let chunks: Vec<Bytes> = (0..value.len())
        .step_by(1024)
        .map(|at| value.slice(at..value.len().min(at + 1024)))
        .collect();
    Body::from_stream(futures_lite::stream::iter(chunks).then(|chunk| async move {
        futures_lite::future::yield_now().await;
        Ok(chunk)
    }))
}

/// The data directory at `dir`, opened on `rt`.
fn open_on(rt: &tokio::runtime::Runtime, dir: &Path) -> Embedded<TokioRuntime> {
    rt.block_on(Embedded::open(
        dir,
        options(),
        TokioRuntime::from_handle(rt.handle().clone()),
    ))
    .expect("open")
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn read<R: Runtime>(
    store: &TieredStore<
        impl cairn_adapters::backend::HvBackend,
        impl cairn_adapters::backend::LtBackend,
        impl cairn_adapters::backend::ChangeLog,
        R,
    >,
    key: &str,
) -> Option<Bytes> {
    match store.get(key).await.expect("get") {
        Some(object) => Some(object.bytes().await.expect("body")),
        None => None,
    }
}

/// Files under `dir` this process holds open (unlinked ones included, as `… (deleted)`).
fn open_files_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).expect("the directory");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .collect()
}

/// Threads of this process named `name` (as the kernel keeps it: 15 bytes at most).
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}

/// Waits for `done`, failing with `what` if it takes more than 20 s (each check a millisecond
/// apart: the wait is for other threads to finish, not for time to pass).
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Every blob file in the data directory.
fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.join(BLOB_DIR).join("blobs")];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("list").flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "blob") {
                found.push(path);
            }
        }
    }
    found
}

/// Opens `dir` again *without* recovery and checks that whatever used it before left it
/// converged: fsck finds nothing (an entry of the closed instance would be stale), the change
/// log is empty and no temporary file is left.
fn assert_left_clean(dir: &Path, case: &str) -> Embedded<InlineRuntime> {
    let data = block_on(Embedded::open_unrecovered(dir, options(), InlineRuntime))
        .unwrap_or_else(|e| panic!("{case}: reopen: {e}"));
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{case}: {report:#?}");
    assert!(report.in_flight.is_empty(), "{case}: {report:#?}");
    assert_eq!(report.temp_files, 0, "{case}: temporary files left");
    assert_eq!(data.db().log_entries().expect("log"), Vec::new(), "{case}");
    data
}

/// Serializes the tests that count threads by name.
fn threads_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

// --- 1. A store closed, or its runtime shut down, with operations in flight ---------------

/// What one writer task last had acknowledged, and what it had under way: after any
/// interruption its key holds one or the other (`Some(None)`: a delete).
#[derive(Clone, Debug, Default)]
struct Writer {
    acked: Option<Option<Bytes>>,
    pending: Option<Option<Bytes>>,
    done: usize,
}

type Writers = Arc<Mutex<Vec<Writer>>>;

/// Writer `w`'s loop on key `k{w}`: small puts, large puts, streamed large puts and deletes in
/// turn, for ever.
async fn write_forever<R: Runtime>(
    store: cairn_adapters::embedded::EmbeddedStore<R>,
    writers: Writers,
    w: usize,
) {
    let key = format!("k{w}");
    let options = PutOptions::default();
    for n in 0u64.. {
        let seed = (w as u64) << 32 | n;
        let next = match n % 4 {
            0 => Some(value(100, seed)),
            1 | 2 => Some(value(LARGE + n as usize % 7, seed)),
            _ => None,
        };
        writers.lock().unwrap()[w].pending = Some(next.clone());
        match (n % 4, next.clone()) {
            (2, Some(v)) => store.put_stream(&key, slow_body(v), &options).await,
            (_, Some(v)) => store.put(&key, v, &options).await,
            (_, None) => store.delete(&key).await,
        }
        .unwrap_or_else(|e| panic!("writer {w}, op {n}: {e}"));
        let mut all = writers.lock().unwrap();
        all[w].acked = Some(next);
        all[w].pending = None;
        all[w].done += 1;
    }
}

fn spawned_writers(n: usize) -> Writers {
    Arc::new(Mutex::new(vec![Writer::default(); n]))
}

fn wait_for_writes(writers: &Writers, each: usize) {
    wait_until("the writers never got going", || {
        writers.lock().unwrap().iter().all(|w| w.done >= each)
    });
}

/// Every key holds what its writer last had acknowledged, or what it had under way.
fn assert_no_acknowledged_write_lost(
    data: &Embedded<InlineRuntime>,
    writers: &Writers,
    case: &str,
) {
    for (w, writer) in writers.lock().unwrap().iter().enumerate() {
        let now = block_on(read(data.store(), &format!("k{w}")));
        let acked = writer
            .acked
            .clone()
            .expect("every writer had a write acknowledged");
        assert!(
            now == acked || Some(&now) == writer.pending.as_ref(),
            "{case}: writer {w} holds {:?} bytes, acknowledged {:?}, under way {:?}",
            now.as_ref().map(Bytes::len),
            acked.as_ref().map(Bytes::len),
            writer.pending.as_ref().map(|p| p.as_ref().map(Bytes::len)),
        );
    }
}

const WRITERS: usize = 12;

/// Tokio, the runtime staying up: the store's last handle is dropped while its operations are
/// aborted half way. The aborted operations' background cleanup runs, then the store closes by
/// itself — its writer thread and files go — and the directory needs no recovery.
#[test]
fn a_store_closed_under_aborted_tokio_tasks_converges_and_closes_by_itself() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = tokio_runtime();
    let runtime = TokioRuntime::from_handle(rt.handle().clone());
    let data = rt
        .block_on(Embedded::open(dir.path(), options(), runtime))
        .expect("open");
    let writers = spawned_writers(WRITERS);
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| rt.spawn(write_forever(data.store().clone(), writers.clone(), w)))
        .collect();
    wait_for_writes(&writers, 3);
    let db = Arc::downgrade(data.db());
    drop(data);
    for task in &tasks {
        task.abort();
    }
    wait_until("the store never closed", || db.upgrade().is_none());
    wait_until("files of the store stayed open", || {
        open_files_under(dir.path()).is_empty()
    });
    let case = "aborted on tokio";
    let data = assert_left_clean(dir.path(), case);
    assert_no_acknowledged_write_lost(&data, &writers, case);
    for task in tasks {
        assert!(rt.block_on(task).expect_err("aborted").is_cancelled());
    }
}

/// Tokio, the runtime shut down with operations (and their background cleanup) half way: tokio
/// drops them all. Nothing panics or hangs, the store closes with the runtime, nothing
/// acknowledged is lost, and the next open's recovery leaves the directory clean.
#[test]
fn a_tokio_runtime_shut_down_under_a_store_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = tokio_runtime();
    let runtime = TokioRuntime::from_handle(rt.handle().clone());
    let data = rt
        .block_on(Embedded::open(dir.path(), options(), runtime))
        .expect("open");
    let writers = spawned_writers(WRITERS);
    for w in 0..WRITERS {
        drop(rt.spawn(write_forever(data.store().clone(), writers.clone(), w)));
    }
    wait_for_writes(&writers, 3);
    let db = Arc::downgrade(data.db());
    drop(data);
    drop(rt);
    assert!(db.upgrade().is_none(), "the store closed with its runtime");
    assert!(open_files_under(dir.path()).is_empty());
    let data = block_on(Embedded::open(dir.path(), options(), InlineRuntime)).expect("reopen");
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.temp_files, 0);
    assert_eq!(data.db().log_entries().expect("log"), Vec::new());
    assert_no_acknowledged_write_lost(&data, &writers, "runtime shut down");
}

/// Smol: the same as on tokio, tasks cancelled while the store's last handle goes.
#[test]
fn a_store_closed_under_cancelled_smol_tasks_converges_and_closes_by_itself() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = block_on(Embedded::open(dir.path(), options(), SmolRuntime)).expect("open");
    let writers = spawned_writers(WRITERS);
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| smol::spawn(write_forever(data.store().clone(), writers.clone(), w)))
        .collect();
    wait_for_writes(&writers, 3);
    let db = Arc::downgrade(data.db());
    drop(data);
    for task in tasks {
        assert!(block_on(task.cancel()).is_none(), "writers never finish");
    }
    wait_until("the store never closed", || db.upgrade().is_none());
    wait_until("files of the store stayed open", || {
        open_files_under(dir.path()).is_empty()
    });
    let case = "cancelled on smol";
    let data = assert_left_clean(dir.path(), case);
    assert_no_acknowledged_write_lost(&data, &writers, case);
}

/// Blocking callers on threads sharing a `BlockingStore`: the last handle goes while they still
/// write, and one of them dies half way through a large put (its body's producer panics). The
/// put's entry and staged blob are cleaned up in the background; the store closes once the last
/// thread is done, leaving nothing for recovery.
#[test]
fn a_blocking_store_dropped_while_threads_write_and_one_dies_mid_put_converges() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = SqliteDb::open(&dir.path().join(DB_FILE), SqliteOptions::default()).expect("db");
    let blobs =
        BlobDir::open(&dir.path().join(BLOB_DIR), BlobDirOptions::default()).expect("blobs");
    let builder = TieredStore::builder(db.hv(), blobs, db.log()).config(config());
    let store = Arc::new(BlockingStore::from_builder(builder).expect("store"));
    let weak_db = Arc::downgrade(&db);
    drop(db);
    let writers = spawned_writers(4);
    let threads: Vec<_> = (0..4)
        .map(|w| {
            let (store, writers) = (store.clone(), writers.clone());
            std::thread::spawn(move || {
                let key = format!("k{w}");
                for n in 0..12u64 {
                    let next = (n % 3 != 2).then(|| value(LARGE * (n as usize % 2) + 10, n));
                    writers.lock().unwrap()[w].pending = Some(next.clone());
                    match next.clone() {
                        Some(v) => store.put(&key, v, &PutOptions::default()),
                        None => store.delete(&key),
                    }
                    .expect("write");
                    let mut all = writers.lock().unwrap();
                    all[w].acked = Some(next);
                    all[w].pending = None;
                    all[w].done += 1;
                }
            })
        })
        .collect();
    let dying = {
        let store = store.clone();
        std::thread::spawn(move || {
            let chunks = (0..).map(|i| {
                assert!(i < 3, "the body's producer crashed");
                Ok(value(THRESHOLD, i))
            });
            let body = Body::from_stream(futures_lite::stream::iter(chunks));
            let _ = store.put_stream("dying", body, &PutOptions::default());
        })
    };
    drop(store);
    assert!(dying.join().is_err(), "the thread died");
    for thread in threads {
        thread.join().expect("a writer");
    }
    wait_until("the store never closed", || weak_db.upgrade().is_none());
    wait_until("files of the store stayed open", || {
        open_files_under(dir.path()).is_empty()
    });
    let case = "blocking store";
    let data = assert_left_clean(dir.path(), case);
    assert_no_acknowledged_write_lost(&data, &writers, case);
    assert!(block_on(data.store().get("dying")).expect("get").is_none());
}

// --- 2 and 4. Bodies outliving their store, their object and its blob --------------------

/// Reads the rest of `body` from `at` on, checking every byte against `expected` as it comes.
fn read_rest(body: &mut Body, expected: &Bytes, at: &mut usize, what: &str) {
    while let Some(chunk) = block_on(body.next()) {
        let chunk = chunk.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            &chunk[..],
            &expected[*at..*at + chunk.len()],
            "{what}: bytes at {at}"
        );
        *at += chunk.len();
    }
}

/// One chunk of `body`, checked against `expected` at `at`.
fn read_one(body: &mut Body, expected: &Bytes, at: &mut usize, what: &str) {
    let chunk = block_on(body.next())
        .unwrap_or_else(|| panic!("{what}: ended early"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(&chunk[..], &expected[*at..*at + chunk.len()], "{what}");
    *at += chunk.len();
}

/// A body a get returned reads the object as it was when the get returned — whole, inline or
/// long-term, or a range of it — after the key was overwritten and deleted, its blob file
/// removed, a maintenance pass and a repair run, and the store closed.
#[test]
fn bodies_outlive_their_object_its_blob_and_the_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = block_on(Embedded::open(dir.path(), options(), InlineRuntime)).expect("open");
    let store = data.store();
    let opts = PutOptions::default();
    let (big, small) = (value(1 << 20, 1), value(100, 2));
    block_on(store.put("big", big.clone(), &opts)).expect("put");
    block_on(store.put("small", small.clone(), &opts)).expect("put");
    let blobs = blob_files(dir.path());
    let [old_blob] = &blobs[..] else {
        panic!("one blob: {blobs:?}")
    };
    let get = |key| block_on(store.get(key)).expect("get").expect("there");
    let mut whole = get("big").body;
    let range = ByteRange::Inclusive {
        start: 1000,
        end: 300_000,
    };
    let mut part = block_on(store.get_range("big", range))
        .expect("get")
        .expect("there")
        .body;
    let mut inline = get("small").body;
    let (mut at_whole, mut at_part) = (0, 0);
    read_one(&mut whole, &big, &mut at_whole, "whole");

    block_on(store.put("big", value(1 << 20, 3), &opts)).expect("overwrite");
    block_on(store.join());
    assert!(!old_blob.exists(), "the overwrite removed the old blob");
    read_one(
        &mut whole,
        &big,
        &mut at_whole,
        "whole, after the overwrite",
    );
    block_on(store.delete("big")).expect("delete");
    block_on(store.delete("small")).expect("delete");
    block_on(store.join());
    block_on(data.maintain()).expect("maintain");
    let report = block_on(data.fsck(true)).expect("repair");
    assert!(report.is_clean(), "{report:#?}");
    assert!(blob_files(dir.path()).is_empty());
    drop(data);
    let held = open_files_under(dir.path());
    assert!(
        held.len() == 2
            && held
                .iter()
                .all(|f| f.to_string_lossy().ends_with(".blob (deleted)")),
        "the two long-term bodies hold the removed blob open, nothing else is: {held:?}"
    );

    read_rest(&mut whole, &big, &mut at_whole, "whole");
    assert_eq!(at_whole, big.len());
    let wanted = big.slice(1000..=300_000);
    read_rest(&mut part, &wanted, &mut at_part, "range");
    assert_eq!(at_part, wanted.len());
    assert_eq!(
        block_on(inline.next()).expect("a chunk").expect("bytes"),
        small
    );
    assert_eq!(
        open_files_under(dir.path()),
        Vec::<PathBuf>::new(),
        "a body read to its end closes its file"
    );
    drop((whole, part, inline));
    assert_left_clean(dir.path(), "after the bodies");
}

/// A slow reader holds a large body while, on a manual clock, the key is overwritten, deleted,
/// its successor expires, time runs two hours on and every kind of maintenance runs — in this
/// instance and in a second one on the same directory. Between each step it reads one more
/// chunk: every byte it gets is the old value's, in order, to the end.
#[test]
fn a_slow_reader_reads_the_old_bytes_through_overwrite_delete_expiry_and_maintenance() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let on_clock = || EmbeddedOptions {
        clock: clock.clone(),
        ..options()
    };
    let data = block_on(Embedded::open(dir.path(), on_clock(), InlineRuntime)).expect("open");
    let store = data.store();
    let hour = PutOptions::default().ttl(Duration::from_secs(3600));
    let (old, expiring) = (value(2 << 20, 10), value(1 << 20, 11));
    block_on(store.put("k", old.clone(), &hour)).expect("put");
    block_on(store.put("e", expiring.clone(), &hour)).expect("put");
    let mut body = block_on(store.get("k")).expect("get").expect("k").body;
    let mut other = block_on(store.get("e")).expect("get").expect("e").body;
    let (mut at, mut at_other) = (0, 0);
    let step = |what: &str, body: &mut Body, at: &mut usize| {
        read_one(body, &old, at, what);
    };
    step("before anything", &mut body, &mut at);
    block_on(store.put("k", value(2 << 20, 12), &hour)).expect("overwrite");
    block_on(store.join());
    step("after the overwrite", &mut body, &mut at);
    block_on(store.put("k", value(3 << 20, 13), &PutOptions::default())).expect("overwrite");
    block_on(store.delete("k")).expect("delete");
    block_on(store.join());
    step("after the delete", &mut body, &mut at);
    read_one(&mut other, &expiring, &mut at_other, "expiring");
    clock.advance(Duration::from_secs(2 * 3600));
    assert!(block_on(store.get("e")).expect("get").is_none(), "expired");
    block_on(data.maintain()).expect("maintain");
    step("after the sweep", &mut body, &mut at);
    let second = block_on(Embedded::open(dir.path(), on_clock(), InlineRuntime)).expect("second");
    block_on(second.maintain()).expect("maintain");
    let report = block_on(second.fsck(true)).expect("repair");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.blobs, 0, "every blob went: {report:#?}");
    step("after another instance's maintenance", &mut body, &mut at);
    drop((second, data));
    read_rest(&mut body, &old, &mut at, "old value");
    assert_eq!(at, old.len());
    read_rest(&mut other, &expiring, &mut at_other, "expired value");
    assert_eq!(at_other, expiring.len());
}

// --- 3. Many large puts at once --------------------------------------------------------

/// A logical clock for histories: a put started after another ended has the larger tick.
static TICK: AtomicU64 = AtomicU64::new(0);

fn tick() -> u64 {
    TICK.fetch_add(1, Ordering::SeqCst)
}

/// One finished write on a key: when it started and ended, what it wrote (`None`: a delete).
#[derive(Clone, Debug)]
struct Done {
    start: u64,
    end: u64,
    value: Option<Bytes>,
}

/// The key ends holding `last` as a register would: written by an operation that no other
/// operation started after the end of (last writer wins; concurrent ones may land in either
/// order).
fn assert_linearizable(key: &str, history: &[Done], last: &Option<Bytes>) {
    let possible = history
        .iter()
        .filter(|w| &w.value == last)
        .any(|w| history.iter().all(|o| o.start < w.end));
    assert!(
        possible,
        "{key}: holds {:?} bytes, which no write could have left last",
        last.as_ref().map(Bytes::len)
    );
}

/// 64 tasks on tokio's multi-threaded runtime put large values at once — half of them, twice
/// each, on one key (by `put` and by `put_stream`), the others on keys of their own — while
/// readers read the shared key. Every read is one whole value, the shared key ends as a
/// register would, and once background work is joined nothing is left: no change-log entry, no
/// orphan, no temporary file, exactly one blob per key.
#[test]
fn sixty_four_concurrent_large_puts_are_linearizable_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = tokio_runtime();
    rt.block_on(async {
        let data = Arc::new(
            Embedded::open(dir.path(), options(), TokioRuntime::current())
                .await
                .expect("open"),
        );
        let written = |t: u64, round: u64| value(LARGE + (t * 2 + round) as usize, t * 2 + round);
        let writers: Vec<_> = (0..64u64)
            .map(|t| {
                let data = data.clone();
                tokio::spawn(async move {
                    let key = if t < 32 {
                        "same".into()
                    } else {
                        format!("k{t}")
                    };
                    let mut history = Vec::new();
                    for round in 0..2 {
                        let v = written(t, round);
                        let start = tick();
                        let store = data.store();
                        let opts = PutOptions::default();
                        match (t + round) % 2 {
                            0 => store.put(&key, v.clone(), &opts).await,
                            _ => store.put_stream(&key, slow_body(v.clone()), &opts).await,
                        }
                        .unwrap_or_else(|e| panic!("put {t}/{round}: {e}"));
                        history.push(Done {
                            start,
                            end: tick(),
                            value: Some(v),
                        });
                    }
                    (key, history)
                })
            })
            .collect();
        let every: Vec<Bytes> = (0..32)
            .flat_map(|t| [written(t, 0), written(t, 1)])
            .collect();
        let every = Arc::new(every);
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (data, every) = (data.clone(), every.clone());
                tokio::spawn(async move {
                    for _ in 0..20 {
                        if let Some(v) = read(data.store(), "same").await {
                            assert!(every.contains(&v), "a read of {} mixed bytes", v.len());
                        }
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        let mut histories: HashMap<String, Vec<Done>> = HashMap::new();
        for writer in writers {
            let (key, history) = writer.await.expect("a writer");
            histories.entry(key).or_default().extend(history);
        }
        for reader in readers {
            reader.await.expect("a reader");
        }
        data.store().join().await;
        for (key, history) in &histories {
            assert_linearizable(key, history, &read(data.store(), key).await);
        }
        let report = data.fsck(false).await.expect("fsck");
        assert!(report.is_clean(), "{report:#?}");
        assert_eq!(report.temp_files, 0, "temporary files left");
        assert_eq!(report.blobs, 33, "one blob per key: {report:#?}");
        assert_eq!(data.db().log_entries().expect("log"), Vec::new());
    });
}

// --- 5. Background maintenance and the end of the store -----------------------------------

/// Maintenance every millisecond on tokio, the store dropped while passes run: the pass under
/// way finishes, the loop ends, and the store closes — no task left on the runtime, no file of
/// the directory open (the writer thread has closed its connection), and the directory opens
/// again at once in this process with no busy wait.
#[test]
fn a_store_dropped_mid_maintenance_on_tokio_closes_and_reopens_at_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = tokio_runtime();
    let data = Arc::new(open_on(&rt, dir.path()));
    let hour = PutOptions::default().ttl(Duration::from_secs(3600));
    rt.block_on(data.store().put("big", value(LARGE, 1), &hour))
        .expect("put");
    let passes = data.maintenance_passes();
    data.maintain_every(Duration::from_millis(1));
    wait_until("no maintenance ran", || {
        data.maintenance_passes() >= passes + 5
    });
    drop(data);
    wait_until("tasks stayed on the runtime", || {
        rt.metrics().num_alive_tasks() == 0
    });
    wait_until("files of the store stayed open", || {
        open_files_under(dir.path()).is_empty()
    });
    assert_reopens_at_once(dir.path());
}

/// The directory opens again and takes writes without waiting for anyone's lock (a busy
/// timeout of 1 ms would turn any wait into an error).
fn assert_reopens_at_once(dir: &Path) {
    let mut options = options();
    options.sqlite = options
        .sqlite
        .busy_timeout(std::time::Duration::from_millis(1));
    let data = block_on(Embedded::open(dir, options, InlineRuntime)).expect("reopen");
    let store = data.store();
    block_on(store.put("big", value(LARGE, 2), &PutOptions::default())).expect("put");
    block_on(store.put("small", value(10, 3), &PutOptions::default())).expect("put");
    block_on(store.delete("small")).expect("delete");
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    assert!(report.in_flight.is_empty(), "{report:#?}");
}

/// Maintenance every hour: dropping the store ends the background loop at once, not an hour
/// later — on tokio a task, on the inline runtime a thread, neither of which may outlive the
/// store by a whole interval.
#[test]
fn the_maintenance_loop_on_tokio_ends_with_the_store_not_an_interval_later() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // One thread, so that the loops surely reached their first sleep before the drop: they run
    // only while this test drives the runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let data = Arc::new(open_on(&rt, dir.path()));
    data.maintain_every(Duration::from_secs(3600));
    data.store().recover_every(Duration::from_secs(3600));
    rt.block_on(async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    assert!(rt.metrics().num_alive_tasks() >= 2, "the two loops, asleep");
    drop(data);
    wait_until("a background loop outlived its store", || {
        rt.block_on(tokio::task::yield_now());
        rt.metrics().num_alive_tasks() == 0
    });
    assert!(open_files_under(dir.path()).is_empty());
}

/// The same on the inline runtime, where the loop is a thread of its own.
#[test]
fn the_maintenance_thread_of_the_inline_runtime_ends_with_the_store_not_an_interval_later() {
    let _serial = threads_lock();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let before = threads_named("cairn-every");
    let data =
        Arc::new(block_on(Embedded::open(dir.path(), options(), InlineRuntime)).expect("open"));
    data.maintain_every(Duration::from_secs(3600));
    wait_until("no maintenance thread started", || {
        threads_named("cairn-every") == before + 1
    });
    drop(data);
    wait_until("the maintenance thread outlived its store", || {
        threads_named("cairn-every") == before
    });
    assert!(open_files_under(dir.path()).is_empty());
}

/// The inline runtime's maintenance thread, the store dropped while passes run back to back.
#[test]
fn a_store_dropped_mid_maintenance_on_the_inline_runtime_closes_and_reopens_at_once() {
    let _serial = threads_lock();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let before = threads_named("cairn-every");
    let data =
        Arc::new(block_on(Embedded::open(dir.path(), options(), InlineRuntime)).expect("open"));
    let passes = data.maintenance_passes();
    data.maintain_every(Duration::from_millis(1));
    wait_until("no maintenance ran", || {
        data.maintenance_passes() >= passes + 5
    });
    drop(data);
    wait_until("the maintenance thread outlived its store", || {
        threads_named("cairn-every") == before
    });
    wait_until("files of the store stayed open", || {
        open_files_under(dir.path()).is_empty()
    });
    assert_reopens_at_once(dir.path());
}

/// Smol, likewise: the store dropped mid-maintenance closes and the directory reopens at once.
#[test]
fn a_store_dropped_mid_maintenance_on_smol_closes_and_reopens_at_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data =
        Arc::new(block_on(Embedded::open(dir.path(), options(), SmolRuntime)).expect("open"));
    let passes = data.maintenance_passes();
    data.maintain_every(Duration::from_millis(1));
    wait_until("no maintenance ran", || {
        data.maintenance_passes() >= passes + 5
    });
    drop(data);
    wait_until("files of the store stayed open", || {
        open_files_under(dir.path()).is_empty()
    });
    assert_reopens_at_once(dir.path());
}

// --- 6. Two instances on one directory in one process -----------------------------------

/// Two `Embedded` on one data directory in one process, as two processes would be: writers of
/// both hammer the same keys with small and large puts, streamed puts and deletes, readers
/// check every value whole, and both run maintenance and `fsck` meanwhile. Nothing fails as
/// busy, no check finds a problem while the writes go on, both instances read the same final
/// values, each key ends as a register would, and nothing is left behind.
#[test]
fn two_instances_on_one_directory_write_the_same_keys_and_stay_consistent() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = tokio_runtime();
    rt.block_on(async {
        let open = || Embedded::open(dir.path(), options(), TokioRuntime::current());
        let both = [
            Arc::new(open().await.expect("first")),
            Arc::new(open().await.expect("second")),
        ];
        assert_ne!(both[0].db().instance_id(), both[1].db().instance_id());
        const KEYS: u64 = 3;
        let written = |i: u64, t: u64, n: u64| match n % 4 {
            3 => None,
            0 => Some(value(50 + n as usize, i << 40 | t << 20 | n)),
            _ => Some(value(LARGE + n as usize, i << 40 | t << 20 | n)),
        };
        let every: Arc<Vec<Bytes>> = Arc::new(
            (0..2)
                .flat_map(|i| (0..8).flat_map(move |t| (0..12).map(move |n| (i, t, n))))
                .filter_map(|(i, t, n)| written(i, t, n))
                .collect(),
        );
        let mut tasks = Vec::new();
        for (i, data) in both.iter().enumerate() {
            for t in 0..8u64 {
                let (data, every) = (data.clone(), every.clone());
                tasks.push(tokio::spawn(async move {
                    let key = format!("k{}", t % KEYS);
                    let mut history = Vec::new();
                    for n in 0..12 {
                        let next = written(i as u64, t, n);
                        let store = data.store();
                        let opts = PutOptions::default();
                        let start = tick();
                        match (n % 4, next.clone()) {
                            (2, Some(v)) => store.put_stream(&key, slow_body(v), &opts).await,
                            (_, Some(v)) => store.put(&key, v, &opts).await,
                            (_, None) => store.delete(&key).await,
                        }
                        .unwrap_or_else(|e| panic!("instance {i}, writer {t}, op {n}: {e}"));
                        history.push(Done {
                            start,
                            end: tick(),
                            value: next,
                        });
                        if let Some(v) = read(store, &key).await {
                            assert!(every.contains(&v), "a read of {} mixed bytes", v.len());
                        }
                    }
                    (key, history)
                }));
            }
        }
        let checkers: Vec<_> = both
            .iter()
            .map(|data| {
                let data = data.clone();
                tokio::spawn(async move {
                    for _ in 0..5 {
                        data.maintain().await.expect("maintain");
                        let report = data.fsck(false).await.expect("fsck");
                        assert!(report.is_clean(), "{report:#?}");
                    }
                })
            })
            .collect();
        let mut histories: HashMap<String, Vec<Done>> = HashMap::new();
        for task in tasks {
            let (key, history) = task.await.expect("a writer");
            histories.entry(key).or_default().extend(history);
        }
        for checker in checkers {
            checker.await.expect("a checker");
        }
        for data in &both {
            data.store().join().await;
        }
        for (key, history) in &histories {
            let last = read(both[0].store(), key).await;
            assert_eq!(last, read(both[1].store(), key).await, "{key}");
            assert_linearizable(key, history, &last);
        }
        for data in &both {
            let report = data.fsck(false).await.expect("fsck");
            assert!(report.is_clean(), "{report:#?}");
            assert_eq!(report.temp_files, 0);
            assert!(report.in_flight.is_empty(), "{report:#?}");
        }
        assert_eq!(both[0].db().log_entries().expect("log"), Vec::new());
    });
    drop(rt);
    assert!(open_files_under(dir.path()).is_empty());
    assert_left_clean(dir.path(), "two instances");
}

/// A store outlives the tokio runtime it was built on: the runtime is shut down, and the store
/// goes on being used from a plain thread (as `TokioRuntime::from_handle` allows). Work that
/// waits — here a recovery pass whose cleanup step fails once and backs off — neither panics
/// (tokio's "A Tokio 1.x context was found, but it is being shutdown") nor hangs: the wait is
/// served without the runtime, and the pass finishes the cleanup.
#[test]
fn a_store_outliving_its_tokio_runtime_still_backs_off_without_panicking() {
    let rt = tokio_runtime();
    let faults = Faults::new();
    let (lt, log) = (Arc::new(MemoryLt::new()), Arc::new(MemoryLog::new()));
    let config = Config {
        cleanup_attempts: 2,
        backoff_initial: Duration::from_millis(1),
        ..config()
    };
    let store = TieredStore::builder(
        MemoryHv::new(),
        Faulty::new(lt.clone(), faults.clone()),
        log.clone(),
    )
    .config(config)
    .build(TokioRuntime::from_handle(rt.handle().clone()))
    .expect("a store");
    let opts = PutOptions::default();
    block_on(store.put("k", value(LARGE, 1), &opts)).expect("put");
    // The overwrite's cleanup fails both its attempts: its entry is left to recovery.
    faults.inject(Op::LtDelete, Fault::FailBefore);
    faults.inject(Op::LtDelete, Fault::FailBefore);
    block_on(store.put("k", value(LARGE, 2), &opts)).expect("overwrite");
    block_on(store.join());
    assert_eq!(log.snapshot().len(), 1, "left to recovery");
    drop(rt);
    faults.inject(Op::LtDelete, Fault::FailBefore);
    let report = block_on(store.recover()).expect("recover");
    assert_eq!((report.cleaned, report.deferred), (1, 0), "{report:?}");
    assert!(log.snapshot().is_empty());
    assert_eq!(lt.snapshot().len(), 1, "only the live blob");
    assert_eq!(block_on(read(&store, "k")), Some(value(LARGE, 2)));
}

/// The embedded store outliving its tokio runtime, whose blocking pool its blob directory used:
/// after the shutdown, a large put, a delete of a large object and a maintenance pass still
/// write their blob files — in place, on the caller's thread, as with the inline runtime —
/// instead of failing because the pool dropped their file work unrun.
#[test]
fn an_embedded_store_outliving_its_tokio_runtime_still_writes_blobs() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = tokio_runtime();
    let data = open_on(&rt, dir.path());
    let opts = PutOptions::default();
    rt.block_on(data.store().put("old", value(LARGE, 1), &opts))
        .expect("put");
    drop(rt);
    block_on(data.store().put("new", value(LARGE, 2), &opts)).expect("a large put");
    block_on(data.store().delete("old")).expect("a delete");
    block_on(data.maintain()).expect("a maintenance pass");
    assert_eq!(block_on(read(data.store(), "new")), Some(value(LARGE, 2)));
    drop(data);
    // The delete's cleanup could not be spawned on the runtime: the next open's recovery
    // deletes the old blob.
    let data = block_on(Embedded::open(dir.path(), options(), InlineRuntime)).expect("reopen");
    assert_eq!(block_on(read(data.store(), "new")), Some(value(LARGE, 2)));
    assert_eq!(blob_files(dir.path()).len(), 1, "the deleted blob went");
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.temp_files, 0);
    assert_eq!(data.db().log_entries().expect("log"), Vec::new());
}

// --- 7. Futures and bodies handed between runtimes and threads ---------------------------

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A body whose chunks arrive through a channel, so the test says when each comes.
fn channel_body() -> (smol::channel::Sender<Bytes>, Body) {
    let (send, receive) = smol::channel::unbounded::<Bytes>();
    (send, Body::from_stream(receive.map(Ok)))
}

/// Polls `future` on `rt` until `ready` holds (it must stay pending meanwhile).
fn poll_on_until<T>(
    rt: &tokio::runtime::Runtime,
    future: &mut Boxed<T>,
    mut ready: impl FnMut() -> bool,
) {
    wait_until("the operation never got there", || {
        let polled = rt.block_on(futures_lite::future::poll_once(future.as_mut()));
        assert!(polled.is_none(), "finished too early");
        ready()
    });
}

/// Store futures, begun on one tokio runtime, are finished on a smol thread or dropped on a
/// plain thread; a body begun there is read on in smol and dropped on yet another thread; and a
/// put is dropped after the runtime its store spawns on was shut down. Nothing panics or hangs,
/// each write is whole or not at all, and nothing is left behind (the last case needs the next
/// open's recovery: the cleanup could not be spawned on a runtime that is gone).
#[test]
fn futures_and_bodies_move_between_runtimes_and_threads() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let rt = tokio_runtime();
    let data = Arc::new(open_on(&rt, dir.path()));
    let old = value(LARGE, 1);
    rt.block_on(
        data.store()
            .put("dropped", old.clone(), &PutOptions::default()),
    )
    .expect("put");
    let logged = || data.db().log_entries().expect("log").len() == 1;
    let put = |key: &'static str, body: Body| -> Boxed<_> {
        let store = data.store().clone();
        Box::pin(async move { store.put_stream(key, body, &PutOptions::default()).await })
    };

    // Begun on tokio, finished on smol in another thread.
    let (send, body) = channel_body();
    let mut moved = put("moved", body);
    let chunks = [value(THRESHOLD, 2), value(THRESHOLD, 3), value(100, 4)];
    send.try_send(chunks[0].clone()).expect("send");
    send.try_send(chunks[1].clone()).expect("send");
    poll_on_until(&rt, &mut moved, || logged() && send.is_empty());
    let finished = std::thread::spawn(move || {
        smol::block_on(async move {
            send.send(chunks[2].clone()).await.expect("send");
            drop(send);
            moved.await
        })
    });
    finished.join().expect("the smol thread").expect("the put");
    let whole: Bytes = [value(THRESHOLD, 2), value(THRESHOLD, 3), value(100, 4)]
        .concat()
        .into();
    assert_eq!(
        rt.block_on(read(data.store(), "moved")),
        Some(whole.clone())
    );

    // Begun on tokio, dropped on a plain thread: cleaned up on tokio, in the background.
    let (send, body) = channel_body();
    let mut dropped = put("dropped", body);
    send.try_send(value(2 * THRESHOLD, 5)).expect("send");
    poll_on_until(&rt, &mut dropped, || logged() && send.is_empty());
    std::thread::spawn(move || drop(dropped))
        .join()
        .expect("dropped");
    rt.block_on(data.store().join());
    assert_eq!(
        rt.block_on(read(data.store(), "dropped")),
        Some(old.clone())
    );
    let report = rt.block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.temp_files, 0);
    assert_eq!(data.db().log_entries().expect("log"), Vec::new());

    // A body begun on tokio, read on in smol on another thread, dropped on a third.
    let long = value(200 << 10, 7);
    rt.block_on(
        data.store()
            .put("long", long.clone(), &PutOptions::default()),
    )
    .expect("put");
    let object = rt
        .block_on(data.store().get("long"))
        .expect("get")
        .expect("long");
    let mut body = object.body;
    let mut at = 0;
    let first = rt.block_on(body.next()).expect("a chunk").expect("bytes");
    assert_eq!(first, long[..first.len()]);
    at += first.len();
    let (body, at) = std::thread::spawn(move || {
        smol::block_on(async move {
            let next = body.next().await.expect("a chunk").expect("bytes");
            assert_eq!(next, long[at..at + next.len()]);
            (body, at + next.len())
        })
    })
    .join()
    .expect("the smol thread");
    assert!(at < 200 << 10, "a body left half read");
    assert!(!open_files_under(dir.path()).is_empty());
    std::thread::spawn(move || drop(body))
        .join()
        .expect("dropped");
    assert!(open_files_under(dir.path())
        .iter()
        .all(|f| !f.to_string_lossy().ends_with(".blob")));

    // Begun on a runtime that is then shut down, dropped afterwards on a plain thread.
    let doomed = tokio_runtime();
    let data2 = Arc::new(
        doomed
            .block_on(Embedded::open_unrecovered(
                dir.path(),
                options(),
                TokioRuntime::from_handle(doomed.handle().clone()),
            ))
            .expect("a second instance"),
    );
    let (send, body) = channel_body();
    let mut orphaned: Boxed<_> = {
        let store = data2.store().clone();
        Box::pin(async move {
            store
                .put_stream("dropped", body, &PutOptions::default())
                .await
        })
    };
    send.try_send(value(2 * THRESHOLD, 6)).expect("send");
    let logged2 = || data2.db().log_entries().expect("log").len() == 1;
    poll_on_until(&doomed, &mut orphaned, || logged2() && send.is_empty());
    drop(doomed);
    std::thread::spawn(move || drop(orphaned))
        .join()
        .expect("dropped");
    drop(data2);
    drop(data);
    drop(rt);
    assert_eq!(open_files_under(dir.path()), Vec::<PathBuf>::new());
    let data = block_on(Embedded::open(dir.path(), options(), InlineRuntime)).expect("reopen");
    assert_eq!(block_on(read(data.store(), "dropped")), Some(old));
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.temp_files, 0);
    assert_eq!(data.db().log_entries().expect("log"), Vec::new());
}

/// Store futures and bodies can be handed to another thread at all.
#[allow(dead_code)]
fn futures_and_bodies_are_send(data: &Embedded<TokioRuntime>) {
    fn send<T: Send>(_: T) {}
    let store = data.store();
    send(store.put("k", Bytes::new(), &PutOptions::default()));
    send(store.put_stream("k", Body::empty(), &PutOptions::default()));
    send(store.get("k"));
    send(store.delete("k"));
    send(store.list("", None, 1));
    send(data.maintain());
    send(data.fsck(false));
    send(Body::empty());
}
