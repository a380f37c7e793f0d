//! The embedded data directory on an async runtime: periodic maintenance reclaims what a crashed
//! writer left, on tokio's paused clock (no sleeping).

use cairn_adapters::blobdir::{BlobDir, BlobDirOptions};
use cairn_adapters::embedded::{Embedded, EmbeddedOptions, BLOB_DIR, DB_FILE};
use cairn_adapters::fault::{Fault, Faults, Faulty, Op};
use cairn_adapters::sqlite::{SqliteDb, SqliteOptions};
use cairn_adapters::{PutOptions, TieredStore, TokioRuntime};
use cairn_core::Duration;
use futures_lite::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// Another writer on the same directory crashes between its blob write and its commit, then its
/// database handle closes (as the process's would when it dies). It runs on its own thread: on
/// this test's runtime, its waits for the database would let tokio's paused clock jump ahead.
fn crash_a_writer(dir: &std::path::Path) {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || futures_lite::future::block_on(crash(&dir)))
        .join()
        .unwrap();
}

async fn crash(dir: &std::path::Path) {
    let db = SqliteDb::open(&dir.join(DB_FILE), SqliteOptions::default()).unwrap();
    let blobs = BlobDir::open(&dir.join(BLOB_DIR), BlobDirOptions::default()).unwrap();
    let faults = Faults::new();
    faults.inject(
        Op::HvCas,
        Fault::Run(Arc::new(|| panic!("injected crash before commit"))),
    );
    let store = TieredStore::new(
        Faulty::new(db.hv(), faults.clone()),
        Faulty::new(blobs, faults.clone()),
        Faulty::new(db.log(), faults),
        Dead,
    );
    let options = PutOptions::default();
    let put = AssertUnwindSafe(store.put("lost", vec![3u8; 2 << 20], &options));
    assert!(put.catch_unwind().await.is_err(), "the writer crashed");
    // Nothing the dying process would have run in the background (the cleanup after its
    // crashed put) runs; its handles close.
}

/// The runtime of a process about to die: nothing spawned on it ever runs.
struct Dead;

impl cairn_adapters::Runtime for Dead {
    fn spawn(&self, _: cairn_adapters::Task) {}
    fn sleep(&self, _: std::time::Duration) -> cairn_adapters::Task {
        Box::pin(std::future::pending())
    }
}

async fn open(dir: &std::path::Path) -> Arc<Embedded<TokioRuntime>> {
    let options = EmbeddedOptions::default();
    Arc::new(
        Embedded::open(dir, options, TokioRuntime::current())
            .await
            .unwrap(),
    )
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn periodic_maintenance_reclaims_a_crashed_writers_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = open(dir.path()).await;
    data.maintain_every(Duration::from_secs(60));
    crash_a_writer(dir.path());
    assert_eq!(
        data.db().log_entries().unwrap().len(),
        1,
        "the crash left its change-log entry"
    );
    assert!(
        !data.fsck(false).await.unwrap().stale_entries.is_empty(),
        "owned by a dead writer"
    );

    let passes = data.maintenance_passes();
    tokio::time::sleep(std::time::Duration::from_secs(59)).await;
    assert_eq!(
        data.maintenance_passes(),
        passes,
        "no pass before the interval"
    );
    assert_eq!(data.db().log_entries().unwrap().len(), 1);
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    // The pass is due; it waits on the database's writer thread, so let it finish (yielding
    // keeps tokio's paused clock from jumping ahead meanwhile).
    for _ in 0..1_000_000 {
        if data.maintenance_passes() > passes {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        data.maintenance_passes(),
        passes + 1,
        "one pass ran at the interval"
    );
    assert!(
        data.db().log_entries().unwrap().is_empty(),
        "the periodic pass reclaimed it"
    );
    let report = data.fsck(false).await.unwrap();
    assert!(report.is_clean(), "{report:#?}");
    assert_eq!(report.blobs, 0, "the crashed writer's blob is gone");
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn maintenance_stops_when_the_data_directory_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let data = open(dir.path()).await;
    data.maintain_every(Duration::from_secs(1));
    let weak = Arc::downgrade(&data);
    drop(data);
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert!(
        weak.upgrade().is_none(),
        "the background task does not keep the store alive"
    );
}
