//! The embedded data directory as a whole: `fsck` and its repair, run while writes go on and
//! over a blob directory holding files that are not blobs.

#![cfg(all(feature = "sqlite", feature = "blobdir"))]

use bytes::Bytes;
use cairn_adapters::backend::LtBackend;
use cairn_adapters::blobdir::BlobDir;
use cairn_adapters::embedded::{Embedded, EmbeddedOptions, OpenError, BLOB_DIR};
use cairn_adapters::{Body, InlineRuntime, Metadata, PutOptions, Runtime, Task};
use cairn_core::{BlobId, Duration, Instant, Key, Revision};
use futures_lite::future::block_on;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Larger than the inline threshold (1 MiB): stored as a blob behind a tombstone.
fn large(fill: u8) -> Bytes {
    Bytes::from(vec![fill; (1 << 20) + 4096])
}

fn open(dir: &Path) -> Embedded<InlineRuntime> {
    block_on(Embedded::open(
        dir,
        EmbeddedOptions::default(),
        InlineRuntime,
    ))
    .expect("open")
}

/// `key` reads back as `expected`, byte for byte.
fn assert_reads(data: &Embedded<InlineRuntime>, key: &str, expected: Bytes) {
    let object = block_on(data.store().get(key)).expect("get");
    let object = object.unwrap_or_else(|| panic!("{key} was lost"));
    assert_eq!(block_on(object.bytes()).expect("body"), expected, "{key}");
}

/// A data directory whose every tier reads time from the clock returned, which only the test
/// moves.
fn open_on_a_manual_clock(
    dir: &Path,
) -> (Embedded<InlineRuntime>, Arc<cairn_adapters::ManualClock>) {
    let clock = Arc::new(cairn_adapters::ManualClock::new(1_700_000_000_000));
    let options = EmbeddedOptions {
        clock: clock.clone(),
        ..EmbeddedOptions::default()
    };
    let data = block_on(Embedded::open(dir, options, InlineRuntime)).expect("open");
    (data, clock)
}

/// Every blob file under the data directory's blob tier.
fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.join(BLOB_DIR)];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "blob") {
                found.push(path);
            }
        }
    }
    found
}

/// The key-hash half of a blob file's name (`HASH-REVISION.blob`).
fn hash_of(blob: &Path) -> String {
    let name = blob
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a blob name");
    name.split('-').next().expect("a hash").to_string()
}

/// `fsck` reads the rows, the change log and the blob directory one after another, while a
/// large put moves its blob's cover from its change-log entry to its tombstone. A blob that
/// looked uncovered in those separate reads must be looked at again before repair deletes it:
/// every put acknowledged here must still be readable, byte for byte, afterwards.
#[test]
fn repair_running_beside_large_puts_never_deletes_a_blob_they_commit() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = open(dir.path());
    let opts = PutOptions::default();
    let writing = AtomicBool::new(true);
    let mut passes = 0;
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..60u8 {
                // New keys and overwrites: an overwrite moves the cover twice (new and old).
                let key = format!("k{}", i % 20);
                block_on(data.store().put(&key, large(i), &opts)).expect("put");
            }
            writing.store(false, Ordering::Release);
        });
        while writing.load(Ordering::Acquire) {
            let report = block_on(data.fsck(true)).expect("fsck");
            assert!(report.dangling.is_empty(), "{report:?}");
            passes += 1;
        }
        writer.join().expect("writer");
    });
    assert!(passes > 1, "fsck ran only {passes} time(s) beside the puts");
    for i in 40..60u8 {
        assert_reads(&data, &format!("k{}", i % 20), large(i));
    }
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(blob_files(dir.path()).len(), 20);
}

/// A plain `fsck` beside another instance (another process, to the database and the blob
/// directory) that keeps writing and overwriting large objects: a blob can be published,
/// committed, replaced, deleted and its change-log entry dropped, all between fsck's reads of
/// the log and its second look at the blob. A blob deleted by then is no orphan: nothing here
/// crashes or fails, so every pass must come out clean — an fsck that cried "orphan" at such
/// a blob would make `cairn fsck` (exit 1) useless beside a running application.
#[test]
fn fsck_beside_another_instance_overwriting_large_objects_reports_nothing() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Objects of 1 KiB and up are large here, so that blobs come and go quickly, and many
    // still ones make every listing long.
    let open_small = || {
        let mut options = EmbeddedOptions::default();
        options.config.inline_threshold = 1024;
        block_on(Embedded::open(dir.path(), options, InlineRuntime)).expect("open")
    };
    let checker = open_small();
    let writer = open_small();
    let opts = PutOptions::default();
    let blob = |i: u32| Bytes::from(vec![i as u8; 2048]);
    for i in 0..300 {
        block_on(writer.store().put(&format!("still{i}"), blob(i), &opts)).expect("put");
    }
    let writing = AtomicBool::new(true);
    let mut passes = 0;
    let mut findings = Vec::new();
    std::thread::scope(|s| {
        let overwrites = s.spawn(|| {
            for i in 0..1000u32 {
                let key = format!("hot{}", i % 2);
                block_on(writer.store().put(&key, blob(i), &opts)).expect("put");
            }
            writing.store(false, Ordering::Release);
        });
        while writing.load(Ordering::Acquire) {
            let report = block_on(checker.fsck(false)).expect("fsck");
            if !report.is_clean() {
                findings.push(report);
            }
            passes += 1;
        }
        overwrites.join().expect("writer");
    });
    assert!(
        passes > 1,
        "fsck ran only {passes} time(s) beside the overwrites"
    );
    assert!(
        findings.is_empty(),
        "problems in {} of {passes} passes, the first: {:#?}",
        findings.len(),
        findings.first()
    );
    let report = block_on(checker.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
}

/// Another process's store over `dir`: its own database handle (so its own instance, with a
/// lease of [`OTHER_LEASE`]) and blob directory, on `clock`, whose compare-and-write waits at
/// `gate` — a large put held there has its blob published and its change logged, its
/// tombstone not committed.
/// An hour: the writer thread checks its lease every quarter of it in real time, so it never
/// renews on its own while a test moves the manual clock past the lease.
const OTHER_LEASE: Duration = Duration::from_secs(3600);

fn another_process_held_at_its_commit(
    dir: &Path,
    clock: &Arc<cairn_adapters::ManualClock>,
    gate: &Arc<cairn_adapters::fault::Gate>,
) -> cairn_adapters::TieredStore<
    cairn_adapters::fault::Faulty<cairn_adapters::sqlite::SqliteHv>,
    BlobDir,
    cairn_adapters::sqlite::SqliteLog,
    InlineRuntime,
> {
    use cairn_adapters::blobdir::BlobDirOptions;
    use cairn_adapters::fault::{Fault, Faults, Faulty, Op};
    use cairn_adapters::sqlite::{SqliteDb, SqliteOptions};
    let db = SqliteDb::open(
        &dir.join("cairn.sqlite"),
        SqliteOptions::default()
            .clock(clock.clone())
            .lease(OTHER_LEASE),
    )
    .expect("the other process's database handle");
    let blobs = BlobDir::open(
        &dir.join(BLOB_DIR),
        BlobDirOptions::default().clock(clock.clone()),
    )
    .expect("the other process's blob directory");
    let faults = Faults::new();
    faults.inject(Op::HvCas, Fault::Pause(gate.clone()));
    cairn_adapters::TieredStore::builder(Faulty::new(db.hv(), faults), blobs, db.log())
        .clock(clock.clone())
        .build(InlineRuntime)
        .expect("the other process's store")
}

/// `fsck --repair`, `recover` and a maintenance pass in one process while another process's
/// large put sits between publishing its blob and committing its tombstone: the blob is
/// covered by a live instance's change-log entry, so nothing deletes it or calls it a problem,
/// and the put then commits a tombstone whose blob is there.
#[test]
fn repair_in_one_process_leaves_another_process_s_uncommitted_blob_alone() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (data, clock) = open_on_a_manual_clock(dir.path());
    let opts = PutOptions::default();
    block_on(data.store().put("k", large(1), &opts)).expect("put");
    let gate = cairn_adapters::fault::Gate::new();
    let other = another_process_held_at_its_commit(dir.path(), &clock, &gate);
    let report = std::thread::scope(|s| {
        let put = s.spawn(|| block_on(other.put("k", large(2), &opts)));
        block_on(gate.reached());
        let report = block_on(data.fsck(true));
        let recovered = block_on(data.store().recover());
        let maintained = block_on(data.maintain());
        gate.release(); // before any assertion, or a failure would leave the put waiting
        put.join().expect("the put thread").expect("put");
        assert_eq!(recovered.expect("recover").entries, 0);
        assert_eq!(maintained.expect("maintain").entries, 0);
        report.expect("fsck")
    });
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.orphans_deleted, 0, "{report:#?}");
    assert_eq!(
        report.in_flight.len(),
        1,
        "the put's entry is held: {report:#?}"
    );
    assert_reads(&data, "k", large(2));
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(blob_files(dir.path()).len(), 1, "the replaced blob went");
}

/// The same put held at its commit, its process stalled: recovery elsewhere leaves its entry
/// alone for as long as its lease runs, takes it over after — deleting the blob nobody
/// references — and the stalled put, resumed, is fenced instead of committing a tombstone to
/// that deleted blob. The key keeps its old value, byte for byte, and nothing is left over.
#[test]
fn a_put_stalled_past_its_lease_is_taken_over_then_and_not_before() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (data, clock) = open_on_a_manual_clock(dir.path());
    let opts = PutOptions::default();
    block_on(data.store().put("k", large(1), &opts)).expect("put");
    let gate = cairn_adapters::fault::Gate::new();
    let other = another_process_held_at_its_commit(dir.path(), &clock, &gate);
    let (early, late, result) = std::thread::scope(|s| {
        let put = s.spawn(|| block_on(other.put("k", large(2), &opts)));
        block_on(gate.reached());
        clock.advance(Duration::from_millis(OTHER_LEASE.as_millis() - 1));
        let early = block_on(data.store().recover());
        clock.advance(Duration::from_millis(2));
        let late = block_on(data.store().recover());
        gate.release();
        (early, late, put.join().expect("the put thread"))
    });
    let early = early.expect("recover within the lease");
    assert_eq!(
        early.entries, 0,
        "taken over before the lease ran out: {early:?}"
    );
    let late = late.expect("recover after the lease");
    assert_eq!((late.entries, late.blobs_deleted), (1, 1), "{late:?}");
    let err = result.expect_err("a put fenced at its commit");
    assert_eq!(err.applied(), Some(cairn_core::Applied::No), "{err}");
    assert_reads(&data, "k", large(1));
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(blob_files(dir.path()).len(), 1);
}

/// A dead process's change-log entry that another process's recovery reclaims while a plain
/// fsck runs is no finding: fsck looks at the entries that seem stale again after its long
/// walk of the blob directory, and reports only those still there and still dead.
#[test]
fn an_entry_reclaimed_while_fsck_runs_is_not_reported_stale() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (data, clock) = open_on_a_manual_clock(dir.path());
    let opts = PutOptions::default();
    block_on(data.store().put("k", large(1), &opts)).expect("put");
    let gate = cairn_adapters::fault::Gate::new();
    let other = another_process_held_at_its_commit(dir.path(), &clock, &gate);
    let (report, calls, reclaimed) = std::thread::scope(|s| {
        let put = s.spawn(|| block_on(other.put("k", large(2), &opts)));
        block_on(gate.reached());
        // The other process is now dead as far as anyone can tell: its lease ran out.
        clock.advance(Duration::from_millis(OTHER_LEASE.as_millis() + 1));
        let mut calls = 0;
        let mut reclaimed = None;
        let report = block_on(data.fsck_with_progress(false, |_| {
            calls += 1;
            // The second call comes once the change log is read (the first after the one page
            // of rows): the recovery of some other process reclaims the entry just then.
            if calls == 2 {
                reclaimed = Some(block_on(data.store().recover()));
            }
        }));
        gate.release();
        let _ = put.join().expect("the put thread");
        (report, calls, reclaimed)
    });
    assert_eq!(calls, 2, "one page of rows and the change log");
    let reclaimed = reclaimed.expect("recovery ran").expect("recover");
    assert_eq!(reclaimed.entries, 1, "{reclaimed:?}");
    let report = report.expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    assert_reads(&data, "k", large(1));
}

/// A stray file, a stray directory, a file of junk named like a blob and a blob under another
/// blob's name are each reported, the walk goes on past them (a real orphan behind them is
/// still found), and repair deletes the orphan but none of them.
#[test]
fn files_that_are_not_blobs_are_reported_and_never_repaired_away() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = open(dir.path());
    let opts = PutOptions::default();
    block_on(data.store().put("kept", large(1), &opts)).expect("put");
    let kept = blob_files(dir.path()).pop().expect("the blob of 'kept'");
    let meta = Metadata {
        size: 0,
        created: Instant::from_millis(1),
        expires: None,
        labels: None,
    };
    let orphan = BlobId {
        key: Key::new(b"orphan").expect("key"),
        revision: Revision(7),
    };
    block_on(data.blobs().put(orphan, &meta, Body::from_bytes(large(2)))).expect("an orphan blob");
    let fanout = kept.parent().expect("its fan-out directory");
    let strays = [
        fanout.join(".DS_Store"),
        fanout.join("0123456789abcdef0123456789abcdef-00000000000000000000000000000001.blob"),
        kept.with_file_name(format!("{}-{:032x}.blob", hash_of(&kept), 1)),
    ];
    std::fs::write(&strays[0], b"finder").unwrap();
    std::fs::write(&strays[1], b"junk").unwrap();
    std::fs::copy(&kept, &strays[2]).unwrap();
    std::fs::create_dir(fanout.join("sub")).unwrap();

    let report = block_on(data.fsck(false)).expect("fsck goes on past bad files");
    assert_eq!(report.unreadable.len(), 4, "{report:#?}");
    assert_eq!(report.orphans.len(), 1, "{report:#?}");
    assert!(!report.is_clean());
    let report = block_on(data.fsck(true)).expect("repair");
    assert_eq!(report.orphans_deleted, 1);
    assert_eq!(report.unreadable.len(), 4);
    for stray in &strays {
        assert!(stray.exists(), "{} was deleted", stray.display());
    }
    let object = block_on(data.store().get("kept"))
        .expect("get")
        .expect("kept");
    assert_eq!(block_on(object.bytes()).expect("body"), large(1));
    // A live object's own blob damaged: one more unreadable file, reported once, and not a
    // dangling tombstone (the file is there).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&kept)
        .and_then(|f| f.set_len(10))
        .unwrap();
    let report = block_on(data.fsck(false)).expect("fsck goes on past a damaged blob");
    assert_eq!(report.unreadable.len(), 5, "{report:#?}");
    assert!(report.dangling.is_empty(), "{report:#?}");
}

/// A runtime of threads whose first sleeps are over at once and whose later ones never end:
/// maintenance passes run back to back a few times, then the loop waits for good — as a real
/// one waits through a long interval.
static SLEEPS: AtomicUsize = AtomicUsize::new(0);
/// The shortest sleep asked of it, in nanoseconds.
static SHORTEST_SLEEP: AtomicUsize = AtomicUsize::new(usize::MAX);

#[derive(Clone, Copy)]
struct Threads;

impl Runtime for Threads {
    fn spawn(&self, task: Task) {
        std::thread::spawn(move || block_on(task));
    }
    fn sleep(&self, duration: std::time::Duration) -> Task {
        SHORTEST_SLEEP.fetch_min(duration.as_nanos() as usize, Ordering::Relaxed);
        if SLEEPS.fetch_add(1, Ordering::Relaxed) < 3 {
            Box::pin(std::future::ready(()))
        } else {
            Box::pin(std::future::pending())
        }
    }
}

#[test]
fn background_maintenance_ends_with_the_last_handle_and_keeps_nothing_open() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = Arc::new(
        block_on(Embedded::open(
            dir.path(),
            EmbeddedOptions::default(),
            Threads,
        ))
        .expect("open"),
    );
    let opened = data.maintenance_passes();
    // Zero is taken as the shortest interval there is, not as passes back to back.
    data.maintain_every(Duration::ZERO);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while data.maintenance_passes() < opened + 3 {
        assert!(std::time::Instant::now() < deadline, "no maintenance ran");
        std::thread::yield_now();
    }
    let db = Arc::downgrade(data.db());
    drop(data);
    // The third pass may still be under way (it holds the store until it ends); then the
    // loop sleeps for good, holding nothing.
    while db.upgrade().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store was kept open"
        );
        std::thread::yield_now();
    }
    assert_eq!(SHORTEST_SLEEP.load(Ordering::Relaxed), 1_000_000, "1 ms");
}

/// On the inline runtime (the CLI's, `BlockingStore`'s) spawning runs a task to its end on the
/// caller's thread: the maintenance loop gets a thread of its own instead, so the call returns,
/// and between passes that thread holds nothing open.
#[test]
fn background_maintenance_on_the_inline_runtime_returns_and_keeps_nothing_open() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = Arc::new(open(dir.path()));
    let db = Arc::downgrade(data.db());
    // Watched from here, so that a call that never returns fails the test instead of hanging it.
    let (returned, has_returned) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        data.maintain_every(Duration::from_secs(3600));
        drop(data);
        let _ = returned.send(());
    });
    let waited = has_returned.recv_timeout(std::time::Duration::from_secs(30));
    assert!(waited.is_ok(), "maintain_every never returned");
    assert!(db.upgrade().is_none(), "the store was kept open");
}

/// Settings out of bounds are refused before anything exists on disk.
#[test]
fn an_invalid_configuration_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path().join("data");
    let mut options = EmbeddedOptions::default();
    options.config.io_attempts = 0;
    let opened = block_on(Embedded::open(&root, options, InlineRuntime));
    assert!(
        matches!(
            opened,
            Err(OpenError::Store(cairn_adapters::Error::InvalidConfig(_)))
        ),
        "{:?}",
        opened.err()
    );
    assert!(!root.exists(), "nothing is created");
}

/// A lease of zero, like any other setting out of bounds, is refused before the data directory
/// (or a parent of it) is made.
#[test]
fn a_zero_lease_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = dir.path().join("parent").join("data");
    let options = EmbeddedOptions {
        sqlite: cairn_adapters::sqlite::SqliteOptions::default().lease(Duration::ZERO),
        ..EmbeddedOptions::default()
    };
    let opened = block_on(Embedded::open(&root, options, InlineRuntime));
    assert!(
        matches!(
            opened,
            Err(OpenError::Sqlite(
                cairn_adapters::sqlite::OpenError::ZeroLease
            ))
        ),
        "{:?}",
        opened.err()
    );
    assert!(!dir.path().join("parent").exists(), "nothing is created");
}

/// A large put whose caller gives up while its body is still arriving (a timeout, a closed
/// connection), over the real tiers: nothing of it may stay behind — no staged file, no blob,
/// no change-log entry once its background cleanup is over, with no recovery pass — and the
/// value it was replacing stays readable.
#[test]
fn a_large_put_dropped_while_its_body_streams_leaves_nothing_behind() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = open(dir.path());
    let opts = PutOptions::default();
    block_on(data.store().put("big", large(1), &opts)).expect("put");
    let reached = Arc::new(AtomicBool::new(false));
    let stalls = reached.clone();
    // Past the inline threshold, then nothing more, ever.
    let head = futures_lite::stream::iter([Ok(large(2)), Ok(large(3))]);
    let stall = futures_lite::stream::poll_fn(move |_| {
        stalls.store(true, Ordering::Release);
        std::task::Poll::<Option<std::io::Result<Bytes>>>::Pending
    });
    let body = Body::from_stream(futures_lite::StreamExt::chain(head, stall));
    {
        let mut put = Box::pin(data.store().put_stream("big", body, &opts));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        // The blob is staged while the change is recorded (a round trip to the writer thread):
        // poll until the body has stalled and the record has committed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let recorded = || data.db().log_entries().expect("log").len() == 1;
        while !(reached.load(Ordering::Acquire) && recorded()) {
            assert!(put.as_mut().poll(&mut cx).is_pending());
            assert!(
                std::time::Instant::now() < deadline,
                "the body was never read, or the change never recorded"
            );
            std::thread::yield_now();
        }
        // The caller gives up here.
    }
    block_on(data.store().join());
    assert_eq!(data.db().log_entries().expect("log").len(), 0);
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    let report = block_on(data.store().recover()).expect("recover");
    assert_eq!(report.entries, 0, "nothing left to recovery: {report:?}");
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(blob_files(dir.path()).len(), 1, "only the old value's blob");
    let object = block_on(data.store().get("big"))
        .expect("get")
        .expect("big");
    assert_eq!(block_on(object.bytes()).expect("body"), large(1));
}

/// Time injected for a test of expiry may jump far past the instance lease (30 s): the store
/// keeps working — large puts, deletes, puts over tombstones — and its objects expire on time.
/// (A laptop suspended for an hour, or a clock stepped forward, is the same case.)
#[test]
fn a_clock_jumping_past_the_lease_leaves_the_store_working() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (data, clock) = open_on_a_manual_clock(dir.path());
    let store = data.store();
    let hour = PutOptions::default().ttl(Duration::from_secs(3600));
    block_on(store.put("big", large(1), &hour)).expect("put");
    clock.advance(Duration::from_secs(3599));
    block_on(store.put("big2", large(2), &PutOptions::default())).expect("a large put");
    block_on(store.put("big", Bytes::from_static(b"small"), &hour)).expect("over a tombstone");
    block_on(store.delete("big2")).expect("a large delete");
    assert!(!data.db().is_fenced());
    clock.advance(Duration::from_secs(3600));
    assert!(
        block_on(store.get("big")).expect("get").is_none(),
        "expired"
    );
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
}

/// Another process holding the database's write lock past the busy timeout: every write fails
/// before its commit point, so each says it certainly did not apply — a caller may retry
/// without wondering — and nothing of any of them is left behind.
#[test]
fn writes_locked_out_by_another_process_fail_as_certainly_not_applied() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut options = EmbeddedOptions::default();
    options.sqlite = options
        .sqlite
        .busy_timeout(std::time::Duration::from_millis(100));
    // The refused large put's cleanup runs inline and meets the lock too: give up on it soon
    // (recovery below finishes it).
    options.config.cleanup_attempts = 2;
    options.config.backoff_initial = Duration::from_millis(1);
    let data = block_on(Embedded::open(dir.path(), options, InlineRuntime)).expect("open");
    let store = data.store();
    let opts = PutOptions::default();
    block_on(store.put("small", Bytes::from_static(b"old"), &opts)).expect("put");
    block_on(store.put("big", large(1), &opts)).expect("put");

    let other = rusqlite::Connection::open(dir.path().join("cairn.sqlite")).expect("connect");
    other
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let refused = |result: Result<cairn_core::WriteOutcome, cairn_adapters::Error>| {
        let err = result.expect_err("locked out");
        assert_eq!(err.applied(), Some(cairn_core::Applied::No), "{err}");
        let cairn_adapters::Error::Write { source, .. } = &err else {
            panic!("a write error: {err}")
        };
        assert!(source.is_refused(), "{err}");
        assert!(err.to_string().contains("busy"), "{err}");
    };
    refused(block_on(store.put(
        "small",
        Bytes::from_static(b"new"),
        &opts,
    )));
    refused(block_on(store.put(
        "big",
        Bytes::from_static(b"small now"),
        &opts,
    )));
    refused(block_on(store.put("big", large(2), &opts)));
    refused(block_on(store.delete("small")));
    refused(block_on(store.delete("big")));
    other.execute_batch("ROLLBACK").expect("let go");

    block_on(store.join());
    let report = block_on(data.fsck(true)).expect("fsck");
    assert!(
        report.dangling.is_empty() && report.orphans.is_empty(),
        "{report:#?}"
    );
    let small = block_on(store.get("small")).expect("get").expect("small");
    assert_eq!(block_on(small.bytes()).expect("body"), &b"old"[..]);
    let big = block_on(store.get("big")).expect("get").expect("big");
    assert_eq!(block_on(big.bytes()).expect("body"), large(1));
    assert_eq!(
        blob_files(dir.path()).len(),
        1,
        "the refused large put left no blob"
    );
}

/// Two stores built over one change log (here: one `SqliteDb`, or one shared in-memory log)
/// are one instance to the log: recovery in either must leave the other's puts alone. Store
/// `a`'s large put is held just before its compare-and-write — blob published, change logged —
/// while store `b` recovers: were `a`'s entry reclaimed, its blob would be deleted and the
/// tombstone `a` then commits would dangle.
fn recovery_in_one_store_leaves_another_store_s_put_alone<H, L, C>(hv: H, lt: L, log: C)
where
    H: cairn_adapters::backend::HvBackend + Clone,
    L: LtBackend + Clone,
    C: cairn_adapters::backend::ChangeLog + Clone,
{
    use cairn_adapters::fault::{Fault, Faults, Faulty, Gate, Op};
    use cairn_adapters::TieredStore;
    let faults = Faults::new();
    let gate = Gate::new();
    faults.inject(Op::HvCas, Fault::Pause(gate.clone()));
    let a = TieredStore::new(
        Faulty::new(hv.clone(), faults),
        lt.clone(),
        log.clone(),
        InlineRuntime,
    );
    let b = TieredStore::new(hv, lt, log, InlineRuntime);
    let report = std::thread::scope(|s| {
        let put = s.spawn(|| block_on(a.put("k", large(7), &PutOptions::default())));
        block_on(gate.reached());
        let report = block_on(b.recover());
        gate.release(); // before any assertion, or a failure would leave the put waiting
        put.join().expect("the put thread").expect("put");
        report.expect("recover")
    });
    assert_eq!(report.entries, 0, "a's entry is in use: {report:?}");
    let object = block_on(b.get("k")).expect("get").expect("found");
    assert_eq!(block_on(object.bytes()).expect("body"), large(7));
    // Once a is done, its entry is gone and nothing is left to recover.
    block_on(a.join());
    assert_eq!(block_on(b.recover()).expect("recover").entries, 0);
}

#[test]
fn recovery_in_one_store_leaves_another_store_s_put_alone_over_one_sqlite_db() {
    use cairn_adapters::blobdir::{BlobDir, BlobDirOptions};
    use cairn_adapters::sqlite::{SqliteDb, SqliteOptions};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = SqliteDb::open(&dir.path().join("db.sqlite"), SqliteOptions::default()).expect("db");
    let blobs = BlobDir::open(&dir.path().join("blobs"), BlobDirOptions::default()).expect("dir");
    recovery_in_one_store_leaves_another_store_s_put_alone(db.hv(), blobs, db.log());
}

#[test]
fn recovery_in_one_store_leaves_another_store_s_put_alone_over_shared_memory_tiers() {
    use cairn_adapters::memory::{MemoryHv, MemoryLog, MemoryLt};
    recovery_in_one_store_leaves_another_store_s_put_alone(
        Arc::new(MemoryHv::new()),
        Arc::new(MemoryLt::new()),
        Arc::new(MemoryLog::new()),
    );
}

/// A damaged inline row whose payload is shorter than its recorded size: reads fail as read
/// errors naming the damage, a range read included (its span comes from the size).
#[test]
fn an_inline_row_shorter_than_its_size_is_a_read_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = open(dir.path());
    block_on(
        data.store()
            .put("k", Bytes::from_static(b"hello"), &PutOptions::default()),
    )
    .expect("put");
    let raw = rusqlite::Connection::open(data.db().path()).expect("raw connection");
    raw.execute("UPDATE rows SET size = 100", [])
        .expect("damage");
    drop(raw);
    let range = cairn_core::ByteRange::Inclusive { start: 50, end: 60 };
    for result in [
        block_on(data.store().get_range("k", range)),
        block_on(data.store().get("k")),
    ] {
        let err = result.map(|o| o.map(|o| o.meta)).expect_err("damaged");
        assert!(
            matches!(
                err,
                cairn_adapters::Error::Read {
                    tier: cairn_core::Tier::Hv,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

/// The file of the one blob stored for `key`.
fn blob_of(data: &Embedded<InlineRuntime>, key: &str) -> PathBuf {
    let info = data.blobs().blobs().map(|b| b.expect("a readable blob"));
    let mut found = info
        .filter(|b| b.key.as_bytes() == key.as_bytes())
        .map(|b| b.path);
    found.next().expect("its blob")
}

/// An expired blob is swept by its expiry marker. One whose marker is gone would stay forever:
/// `fsck` reports it as an orphan and repair deletes it.
#[test]
fn an_expired_blob_without_its_marker_is_an_orphan_that_repair_deletes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (data, clock) = open_on_a_manual_clock(dir.path());
    let ttl = PutOptions::default().ttl(Duration::from_secs(10));
    block_on(data.store().put("gone", large(1), &ttl)).expect("put");
    block_on(data.store().put("kept", large(2), &ttl)).expect("put");
    let (gone, kept) = (blob_of(&data, "gone"), blob_of(&data, "kept"));
    // Next to `HASH-REVISION.blob`, its marker is `HASH-REVISION-EXPIRY.expires`.
    let marker = |blob: &Path| {
        let stem = blob.file_stem().and_then(|s| s.to_str()).expect("a name");
        let prefix = format!("{stem}-");
        let dir = std::fs::read_dir(blob.parent().expect("a directory")).expect("list");
        dir.map(|e| e.expect("entry").path()).find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.starts_with(&prefix) && name.ends_with(".expires")
        })
    };
    std::fs::remove_file(marker(&gone).expect("gone's marker")).expect("remove the marker");
    assert!(marker(&kept).is_some());
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "not expired yet: {report:#?}");
    clock.advance(Duration::from_secs(11));
    let report = block_on(data.fsck(false)).expect("fsck");
    let orphans: Vec<&Path> = report.orphans.iter().map(|o| o.2.as_path()).collect();
    assert_eq!(orphans, [gone.as_path()], "{report:#?}");
    let report = block_on(data.fsck(true)).expect("fsck --repair");
    assert_eq!(report.orphans_deleted, 1);
    assert!(!gone.exists());
    assert!(kept.exists(), "the sweep's to remove, by its marker");
    block_on(data.maintain()).expect("maintain");
    assert!(blob_files(dir.path()).is_empty());
    assert!(block_on(data.fsck(false)).expect("fsck").is_clean());
}

/// One expired blob the sweep cannot remove (a directory in its place) is left for `fsck` to
/// report; the sweep removes the rest, and the store still opens.
#[test]
fn an_expired_blob_that_cannot_be_removed_stops_neither_the_sweep_nor_an_open() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (data, clock) = open_on_a_manual_clock(dir.path());
    let ttl = PutOptions::default().ttl(Duration::from_secs(10));
    block_on(data.store().put("stuck", large(1), &ttl)).expect("put");
    block_on(data.store().put("goes", large(2), &ttl)).expect("put");
    assert_eq!(blob_files(dir.path()).len(), 2);
    let stuck = blob_of(&data, "stuck");
    std::fs::remove_file(&stuck).expect("remove");
    std::fs::create_dir_all(stuck.join("inside")).expect("a directory in its place");
    clock.advance(Duration::from_secs(11));
    block_on(data.maintain()).expect("maintenance goes on past it");
    assert!(blob_files(dir.path()).is_empty(), "the other one is swept");
    assert!(stuck.is_dir(), "never removed");
    drop(data);
    let options = EmbeddedOptions {
        clock: clock.clone(),
        ..EmbeddedOptions::default()
    };
    let data = block_on(Embedded::open(dir.path(), options, InlineRuntime)).expect("it opens");
    let report = block_on(data.fsck(false)).expect("fsck");
    assert_eq!(report.unreadable.len(), 1, "{report:#?}");
}

/// A blob directory gone from under a database that refers to blobs (a disk not mounted) makes
/// the open fail, and nothing is made in its place; one under a database of inline objects only
/// is made afresh.
#[test]
fn a_missing_blob_directory_is_not_started_over_under_tombstones() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let blobs = dir.path().join(BLOB_DIR);
    let data = open(dir.path());
    block_on(
        data.store()
            .put("small", Bytes::from_static(b"s"), &PutOptions::default()),
    )
    .expect("put");
    drop(data);
    std::fs::remove_dir_all(&blobs).expect("remove");
    drop(open(dir.path()));
    assert!(
        BlobDir::is_blob_dir(&blobs),
        "inline objects only: made afresh"
    );

    let data = open(dir.path());
    block_on(data.store().put("big", large(1), &PutOptions::default())).expect("put");
    drop(data);
    let away = dir.path().join("elsewhere");
    std::fs::rename(&blobs, &away).expect("move it away");
    std::fs::create_dir(&blobs).expect("an empty mount point");
    let err = block_on(Embedded::open(
        dir.path(),
        EmbeddedOptions::default(),
        InlineRuntime,
    ))
    .err()
    .expect("refused");
    assert!(err.to_string().contains("not mounted"), "{err}");
    assert_eq!(
        std::fs::read_dir(&blobs).unwrap().count(),
        0,
        "nothing made"
    );
    std::fs::remove_dir(&blobs).expect("unmount");
    std::fs::rename(&away, &blobs).expect("mount again");
    let data = open(dir.path());
    assert!(block_on(data.store().get("big")).expect("get").is_some());
    assert!(block_on(data.fsck(false)).expect("fsck").is_clean());
}

/// With the directory of fan-out directories gone from under an open store, `fsck` says so once
/// (not once per fan-out directory) and lists the tombstones left dangling.
#[test]
fn fsck_reports_a_removed_fan_out_parent_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = open(dir.path());
    block_on(data.store().put("big", large(1), &PutOptions::default())).expect("put");
    let fanout_parent = blob_files(dir.path())[0]
        .parent()
        .and_then(Path::parent)
        .expect("a blob sits two levels down")
        .to_path_buf();
    std::fs::remove_dir_all(&fanout_parent).expect("remove");
    let report = block_on(data.fsck(false)).expect("fsck");
    assert_eq!(report.unreadable.len(), 1, "{:#?}", report.unreadable);
    assert!(
        report.unreadable[0].contains(&*fanout_parent.to_string_lossy()),
        "{:#?}",
        report.unreadable
    );
    assert_eq!(report.dangling.len(), 1, "{report:#?}");
}

/// A check of a large store reports its progress: after every page of rows, with counts that
/// only grow, the last of them the report's own.
#[test]
fn fsck_reports_progress_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let data = open(dir.path());
    let store = data.store();
    let small = 2_500;
    for i in 0..small {
        block_on(store.put(
            &format!("s/{i:05}"),
            Bytes::from_static(b"x"),
            &PutOptions::default(),
        ))
        .expect("small put");
    }
    block_on(store.put("big", large(1), &PutOptions::default())).expect("large put");

    let mut seen = Vec::new();
    let report = block_on(data.fsck_with_progress(false, |so_far| {
        seen.push((so_far.rows, so_far.blobs));
    }))
    .expect("fsck");
    assert!(report.is_clean(), "{report:?}");
    assert_eq!((report.rows, report.blobs), (small + 1, 1));
    // One call per page of a thousand rows (three pages here), one after the change log.
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    assert_eq!(seen.last().unwrap().0, report.rows);
}

/// The smallest executor there is: a task is its future behind a mutex, and its waker is the
/// task, which waking queues again. Shut down (its queue dropped), it leaves a task that waits
/// on something to its waker alone.
struct Spawned {
    future: std::sync::Mutex<Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>>,
    queue: std::sync::mpsc::Sender<Arc<Spawned>>,
}

impl std::task::Wake for Spawned {
    fn wake(self: Arc<Self>) {
        // Shut down: the task, and what its future owns, is dropped here, on the waking thread.
        let _ = self.queue.send(self.clone());
    }
}

/// A server's executor shut down while a put of its waits for the SQLite writer: the task that
/// owns the data directory's last handle is left to the waker, which the writer thread drops
/// when it answers, so the store closes on the writer thread itself. The put commits, the
/// store closes cleanly (lease released at once, as by any clean close), nothing panics, and
/// the directory opens again clean. (The writer thread used to wait for itself there and
/// panic, leaving the lease to run out.)
#[test]
fn a_store_whose_last_handle_the_writer_thread_drops_closes_cleanly() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = Arc::new(open(dir.path()));
    let instance = data.db().instance_id();
    let db = Arc::downgrade(data.db());
    // Another process holds the write lock, so the put waits at the writer.
    let other = rusqlite::Connection::open(dir.path().join("cairn.sqlite")).expect("connect");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let (queue, shut_down) = std::sync::mpsc::channel();
    let task = Arc::new(Spawned {
        future: std::sync::Mutex::new(Some(Box::pin(async move {
            let put = data.store().put("k", "v", &PutOptions::default()).await;
            put.expect("put");
        }))),
        queue,
    });
    let waker = std::task::Waker::from(task.clone());
    let polled = task.future.lock().unwrap().as_mut().map(|future| {
        future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
    });
    assert!(
        polled.is_some_and(|p| p.is_pending()),
        "waiting for the lock"
    );
    drop((shut_down, task, waker));
    assert!(db.upgrade().is_some(), "the waiting task holds the store");
    other.execute_batch("ROLLBACK").expect("let go");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let claimed: i64 = other
            .query_row(
                "SELECT claimed FROM instances WHERE id = ?1",
                [instance],
                |r| r.get(0),
            )
            .expect("the instance");
        if claimed == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the store never closed cleanly"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(db.upgrade().is_none(), "closed");
    drop(other);
    let data = open(dir.path());
    assert_reads(&data, "k", Bytes::from_static(b"v"));
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
}

/// A second instance opening a data directory (another process, or this one) while the
/// database's write lock is held: it waits, and opens once the lock is let go within its busy
/// timeout; held longer, the open fails with a busy error naming the database, and leaves
/// nothing behind — the directory opens clean afterwards.
#[test]
fn opening_beside_a_held_lock_waits_or_fails_as_busy() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = open(dir.path());
    block_on(data.store().put("big", large(1), &PutOptions::default())).expect("put");
    drop(data);
    let other = rusqlite::Connection::open(dir.path().join("cairn.sqlite")).expect("connect");
    other.execute_batch("BEGIN IMMEDIATE").expect("lock");
    let mut options = EmbeddedOptions::default();
    options.sqlite = options
        .sqlite
        .busy_timeout(std::time::Duration::from_millis(50));
    let refused = block_on(Embedded::open(dir.path(), options, InlineRuntime));
    let Err(OpenError::Sqlite(cairn_adapters::sqlite::OpenError::Sqlite(e))) = &refused else {
        panic!("a busy error: {:?}", refused.err())
    };
    assert_eq!(
        e.kind(),
        cairn_adapters::sqlite::SqliteErrorKind::Busy,
        "{e}"
    );
    let message = refused.as_ref().err().expect("refused").to_string();
    assert!(
        message.contains("busy") && message.contains("cairn.sqlite"),
        "{message}"
    );
    // Let go while the next open waits (its busy timeout is the default 5 s).
    let waiting = std::thread::spawn({
        let dir = dir.path().to_path_buf();
        move || open(&dir)
    });
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Neither opened without the lock nor gave up before its busy timeout.
    assert!(!waiting.is_finished(), "the open waits for the lock");
    other.execute_batch("ROLLBACK").expect("let go");
    let data = waiting.join().expect("opened once the lock was let go");
    assert_reads(&data, "big", large(1));
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    assert!(report.in_flight.is_empty(), "{report:#?}");
}

/// A tokio runtime (the crate's `TokioRuntime` is behind a feature this test does not enable)
/// that notes the thread each blocking job runs on.
#[derive(Clone)]
struct NotedTokio {
    handle: tokio::runtime::Handle,
    jobs_ran_on: Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>,
}

impl Runtime for NotedTokio {
    fn spawn(&self, task: Task) {
        drop(self.handle.spawn(task));
    }
    fn sleep(&self, duration: std::time::Duration) -> Task {
        Box::pin(tokio::time::sleep(duration))
    }
    fn unblock(&self, job: cairn_adapters::BlockingJob) {
        let noted = self.jobs_ran_on.clone();
        drop(self.handle.spawn_blocking(move || {
            noted.lock().unwrap().push(std::thread::current().id());
            job();
        }));
    }
}

/// Opened on a runtime, the data directory hands the blob directory's file work to the
/// runtime's blocking pool: on a current-thread runtime, whose one thread polls every task,
/// a large put, a maintenance pass and a delete never write a blob file on that thread, so an
/// fsync never stalls the other tasks; a get reads in place.
#[test]
fn on_a_runtime_the_blob_files_are_written_off_the_executor_thread() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let runtime = NotedTokio {
        handle: rt.handle().clone(),
        jobs_ran_on: Arc::default(),
    };
    let executor = std::thread::current().id();
    let jobs = || runtime.jobs_ran_on.lock().unwrap().clone();
    rt.block_on(async {
        let data = Embedded::open(dir.path(), EmbeddedOptions::default(), runtime.clone())
            .await
            .expect("open");
        let on_open = jobs().len();
        assert!(
            on_open > 0,
            "the maintenance pass of the open sweeps on the pool"
        );
        data.store()
            .put("big", large(7), &PutOptions::default())
            .await
            .expect("put");
        let put = jobs().len() - on_open;
        // The temp file, the body's one chunk (a batch of its own), the sync, the publication.
        assert_eq!(put, 4, "the put's jobs");
        let object = data.store().get("big").await.expect("get").expect("there");
        assert_eq!(object.bytes().await.expect("body"), large(7));
        let get = jobs().len() - on_open - put;
        assert_eq!(
            get, 0,
            "reads run in place, cheaper than a hop from the page cache"
        );
        data.maintain().await.expect("maintain");
        assert!(data.fsck(false).await.expect("fsck").is_clean());
        data.store().delete("big").await.expect("delete");
    });
    assert!(
        jobs().iter().all(|&thread| thread != executor),
        "every job ran off the executor's thread"
    );
}

/// An object written, expired and written over again while a plain `fsck` runs: the second put
/// replaces the expired tombstone without a change-log entry (an expired row is absent), so
/// nothing refers to the first put's blob any more — as it should be: that blob has expired,
/// keeps its marker, and the next sweep removes it. fsck, which read the rows before the object
/// existed and judges expiry at the instant it started, must not report that blob as an orphan
/// when it looks again (beside an application writing objects with a time to live, `cairn
/// fsck` would otherwise keep finding problems that are none).
#[test]
fn a_blob_that_expires_while_fsck_runs_is_no_orphan() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (data, clock) = open_on_a_manual_clock(dir.path());
    let store = data.store();
    let ttl = PutOptions::default().ttl(Duration::from_secs(10));
    let mut calls = 0;
    let report = block_on(data.fsck_with_progress(false, |_| {
        calls += 1;
        // Once the rows are read: an object is written, expires, and its key is written again.
        if calls == 1 {
            block_on(store.put("k", large(1), &ttl)).expect("large put");
            clock.advance(Duration::from_secs(11));
            block_on(store.put("k", Bytes::from_static(b"small"), &PutOptions::default()))
                .expect("small put over the expired tombstone");
        }
    }))
    .expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
    // The expired blob is still there, with its marker: the sweep's to remove, and it does.
    assert_eq!(blob_files(dir.path()).len(), 1);
    block_on(data.maintain()).expect("maintain");
    assert!(blob_files(dir.path()).is_empty());
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "{report:#?}");
}
