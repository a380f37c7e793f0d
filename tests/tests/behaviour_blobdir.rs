//! The behavioural suite with the long-term tier on a blob directory (a fresh temporary
//! directory per test), its file work in place and on a blocking pool, under tokio, smol and
//! the blocking driver. The high-volume tier and the
//! change log stay in memory, so any difference from `behaviour.rs` is the blob directory's.

mod common;

use cairn_adapters::blobdir::{BlobDir, BlobDirOptions};
use cairn_adapters::memory::{CasMode, MemoryHv, MemoryLog};
use cairn_adapters::{BlockingStore, Location, PutOptions, SmolRuntime};
use cairn_core::Duration;
use common::scenarios::bytes;
use common::tiers::{clock, scratch_dir, Tiers};
use std::sync::Arc;

type DirTiers = Tiers<Arc<MemoryHv>, BlobDir, Arc<MemoryLog>>;

fn blobdir_tiers(mode: CasMode) -> DirTiers {
    blobdir_tiers_offloaded(mode, false)
}

/// With `offload`, the blob directory's file work runs on smol's blocking pool, whichever
/// driver runs the store: every operation then suspends at each file step.
fn blobdir_tiers_offloaded(mode: CasMode, offload: bool) -> DirTiers {
    let files = scratch_dir();
    let clock = clock();
    let mut options = BlobDirOptions::default().clock(clock.clone());
    if offload {
        options = options.offload(SmolRuntime);
    }
    let lt = BlobDir::open(&files.path().join("lt"), options).expect("open the blob directory");
    let hv = Arc::new(MemoryHv::new().with_cas_mode(mode));
    Tiers::new(hv, lt, Arc::new(MemoryLog::new()), clock, Some(files))
}

common::scenarios::behaviour_suite!([
    (CasMode::Reapply, false),
    (CasMode::Skip, false),
    (CasMode::Reapply, true),
    (CasMode::Skip, true),
]
.map(|(mode, offload)| blobdir_tiers_offloaded(mode, offload)));

#[test]
fn a_restarted_process_reads_what_was_acknowledged() {
    let t = blobdir_tiers(CasMode::Reapply);
    let store = BlockingStore::from_builder(t.builder()).unwrap();
    store
        .put("k", bytes(5000, 1), &PutOptions::default())
        .unwrap();
    let root = t.lt.root().to_path_buf();
    drop(store);
    // A new process: a new handle on the same directory, the same high-volume rows.
    let options = BlobDirOptions::default().clock(t.clock.clone());
    let reopened = BlobDir::open(&root, options).unwrap();
    let restarted = BlockingStore::new(t.hv.clone(), reopened, t.log.clone());
    assert_eq!(restarted.get_bytes("k").unwrap(), Some(bytes(5000, 1)));
    t.assert_converged();
}

#[test]
fn sweeping_expired_blobs_under_a_running_store_keeps_it_converged() {
    let t = blobdir_tiers(CasMode::Reapply);
    let store = BlockingStore::from_builder(t.builder()).unwrap();
    let ttl = PutOptions::default().ttl(Duration::from_secs(10));
    store.put("short", bytes(3000, 1), &ttl).unwrap();
    store
        .put("kept", bytes(3000, 2), &PutOptions::default())
        .unwrap();
    assert_eq!(t.lt.sweep_expired(t.now()).unwrap().blobs_deleted, 0);
    t.clock.advance(Duration::from_secs(10));
    assert_eq!(store.get_bytes("short").unwrap(), None);
    assert_eq!(t.lt.sweep_expired(t.now()).unwrap().blobs_deleted, 1);
    assert_eq!(store.get_bytes("short").unwrap(), None);
    assert_eq!(store.get_bytes("kept").unwrap(), Some(bytes(3000, 2)));
    assert_eq!(t.blob_count(), 1);
    t.assert_converged();
}

#[test]
fn hostile_keys_through_the_store_stay_inside_the_directory() {
    let t = blobdir_tiers(CasMode::Reapply);
    let store = BlockingStore::from_builder(t.builder()).unwrap();
    let keys: [&[u8]; 5] = [b"../../etc/passwd", b"/abs", b"..", b"\x01\n", b"\xff/.."];
    for (i, key) in keys.iter().enumerate() {
        store
            .put(key, bytes(2000, i as u8), &PutOptions::default())
            .unwrap();
        let info = store.head(key).unwrap().unwrap();
        assert!(matches!(info.location, Location::LongTerm(_)));
        assert_eq!(store.get_bytes(key).unwrap(), Some(bytes(2000, i as u8)));
    }
    let root = t.lt.root();
    for blob in BlobDir::blobs(&t.lt) {
        let path = blob.unwrap().path;
        assert!(path.starts_with(root), "{}", path.display());
    }
    assert_eq!(t.blob_count(), keys.len());
    t.assert_converged();
}
