//! The behavioural suite with the high-volume tier and the change log on SQLite (a fresh database
//! per test, both compare-and-write modes), under tokio, smol and the blocking driver. The
//! long-term tier stays in memory, so any difference from `behaviour.rs` is SQLite's. Below the
//! suite: what only a durable, shared database can show (restarts, and one process recovering
//! another's crashed operation once its lease has run out).

mod common;

use cairn_adapters::backend::{ChangeLog, LtBackend};
use cairn_adapters::memory::{CasMode, MemoryLt};
use cairn_adapters::sqlite::{SqliteDb, SqliteHv, SqliteLog, SqliteOptions};
use cairn_adapters::{BlockingStore, ManualClock, Metadata, PutOptions, TieredStore};
use cairn_core::{BlobId, Change, ChangeId, Duration, Instant, Key, Revision};
use common::scenarios::bytes;
use common::tiers::{clock, scratch_dir, Tiers, T0};
use std::sync::Arc;

type SqliteTiers = Tiers<SqliteHv, Arc<MemoryLt>, SqliteLog>;

/// Fresh tiers. Leases run on the system clock (the default), so the scenarios' manual clock,
/// which only moves row expiry, never fences the instance.
fn sqlite_tiers(mode: CasMode) -> SqliteTiers {
    let files = scratch_dir();
    let clock = clock();
    let lt_clock = clock.clone();
    let db = SqliteDb::open(
        &files.path().join("cairn.sqlite"),
        SqliteOptions::default().cas_mode(mode),
    )
    .expect("open the database");
    let lt = MemoryLt::new().with_clock(move || cairn_adapters::Clock::now(&*lt_clock));
    Tiers::new(db.hv(), Arc::new(lt), db.log(), clock, Some(files))
}

common::scenarios::behaviour_suite!([CasMode::Reapply, CasMode::Skip].map(sqlite_tiers));

#[test]
fn a_restarted_process_reads_what_was_acknowledged() {
    let t = sqlite_tiers(CasMode::Reapply);
    let store = BlockingStore::from_builder(t.builder()).unwrap();
    let ttl = PutOptions::default()
        .content_type("text/plain")
        .ttl(Duration::from_secs(60));
    store.put("small", bytes(10, 1), &ttl).unwrap();
    store
        .put("large", bytes(5000, 2), &PutOptions::default())
        .unwrap();
    let path = t.hv.0.path().to_path_buf();
    let before = store.head("small").unwrap().unwrap();
    drop(store);
    // A new process: a new handle on the same file, the same blobs.
    let db = SqliteDb::open(&path, SqliteOptions::default()).unwrap();
    let builder = TieredStore::builder(db.hv(), t.lt.clone(), db.log()).clock(t.clock.clone());
    let restarted = BlockingStore::from_builder(builder).unwrap();
    assert_eq!(restarted.get_bytes("small").unwrap(), Some(bytes(10, 1)));
    assert_eq!(restarted.head("small").unwrap().unwrap(), before);
    assert_eq!(restarted.get_bytes("large").unwrap(), Some(bytes(5000, 2)));
    assert_eq!(db.integrity_check().unwrap(), ["ok"]);
}

#[test]
fn a_crashed_process_s_operation_is_recovered_by_another_once_its_lease_ran_out() {
    let files = scratch_dir();
    let path = files.path().join("cairn.sqlite");
    let lt = Arc::new(MemoryLt::new());
    let at = |ms: u64| Instant::from_millis(T0 + ms);
    // Process A's clock stops with it: it never renews its one-second lease again.
    let a = SqliteDb::open(
        &path,
        SqliteOptions::default()
            .lease(Duration::from_secs(1))
            .clock(Arc::new(ManualClock::new(T0))),
    )
    .unwrap();
    // A's large put got as far as recording its change and writing its blob, then A died.
    let key = Key::new(b"k").unwrap();
    let blob = BlobId {
        key,
        revision: Revision(77),
    };
    let change = Change {
        key,
        new: Some(blob.revision),
        old: None,
    };
    futures_lite::future::block_on(async {
        a.log().record(ChangeId(1), change).await.unwrap();
        let body = cairn_adapters::Body::from_bytes(bytes(2000, 1));
        lt.put(blob, &Metadata::default(), body).await.unwrap();
    });

    // Process B starts while A's lease still runs: recovery must leave A's entry alone (A might
    // be alive and about to commit).
    let b_clock = Arc::new(ManualClock::new(T0 + 500));
    let b = SqliteDb::open(
        &path,
        SqliteOptions::default()
            .lease(Duration::from_secs(10))
            .clock(b_clock.clone()),
    )
    .unwrap();
    let store = BlockingStore::new(b.hv(), lt.clone(), b.log());
    let report = store.recover().unwrap();
    assert_eq!(report.entries, 0, "a live owner's entry is not reclaimable");
    assert_eq!(lt.len(), 1);

    // A's lease has run out: B takes the entry over and deletes the blob nothing references.
    b_clock.set(at(2_000));
    let report = store.recover().unwrap();
    assert_eq!(
        (report.entries, report.cleaned, report.blobs_deleted),
        (1, 1, 1)
    );
    assert!(lt.is_empty() && b.log_entries().unwrap().is_empty());
    // And A, should it wake up, can no longer commit a tombstone to the blob B deleted.
    let tombstone = cairn_core::Tombstone {
        revision: blob.revision,
        size: 2000,
        expires: None,
    };
    let a_hv = a.hv();
    let late = cairn_adapters::backend::HvBackend::compare_and_write(
        &a_hv,
        key,
        None,
        cairn_adapters::backend::Write::Tombstone(tombstone),
        at(0),
    );
    assert!(futures_lite::future::block_on(late).is_err());
    assert_eq!(store.get("k").unwrap().map(|o| o.meta), None);
}
