//! One behavioural suite for the tiered store on the in-memory backends, run three times:
//! under tokio, under smol, and under the blocking driver. The scenarios live in
//! `common/scenarios.rs`, shared with the suites on durable backends; each checks what the
//! caller sees *and* that storage converges (no orphan blob, no dangling tombstone, no
//! change-log entry left behind).

mod common;

use cairn_adapters::fault::{Fault, Op};
use cairn_adapters::memory::CasMode;
use cairn_adapters::{BlockingStore, InlineRuntime, Location, Metadata};
use cairn_core::Key;
use common::scenarios::{bytes, opts};
use common::tiers::{MemoryTiers, Tiers};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

fn tiers() -> MemoryTiers {
    Tiers::memory(CasMode::Reapply)
}

common::scenarios::behaviour_suite!([CasMode::Reapply, CasMode::Skip].map(Tiers::memory));

#[test]
fn recovery_leaves_entries_of_operations_in_flight_alone() {
    let t = tiers();
    let store = t.builder().build(InlineRuntime).unwrap();
    // A periodic recovery pass runs while our large put sits between blob write and commit.
    let during = store.clone();
    let report = Arc::new(std::sync::Mutex::new(None));
    let seen = report.clone();
    t.faults.inject(
        Op::HvCas,
        Fault::Run(Arc::new(move || {
            let r = futures_lite::future::block_on(during.recover()).expect("recovery");
            *seen.lock().unwrap() = Some(r);
        })),
    );
    futures_lite::future::block_on(store.put("k", bytes(2000, 1), &opts())).unwrap();
    let report = report.lock().unwrap().take().expect("recovery ran mid-put");
    assert_eq!(
        report.entries, 0,
        "the in-flight entry was skipped, not reclaimed"
    );
    let got = futures_lite::future::block_on(async {
        store.get("k").await.unwrap().unwrap().bytes().await
    });
    assert_eq!(got.unwrap(), bytes(2000, 1));
    t.assert_converged();
}

#[test]
fn convergence_checker_catches_orphans_and_dangling_tombstones() {
    use cairn_adapters::backend::SyncLtBackend;
    let t = tiers();
    let store = BlockingStore::from_builder(t.builder()).unwrap();
    store.put("k", bytes(2000, 1), &opts()).unwrap();
    t.assert_converged();

    let key = Key::new(b"k").unwrap();
    let orphan = cairn_core::BlobId {
        key,
        revision: cairn_core::Revision(1),
    };
    t.lt.put(orphan, &Metadata::default(), bytes(3, 0)).unwrap();
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| t.assert_converged()));
    assert!(caught.is_err(), "an orphan blob must fail the check");
    t.lt.delete(orphan).unwrap();

    let Some(Location::LongTerm(rev)) = store.head("k").unwrap().map(|i| i.location) else {
        panic!()
    };
    t.lt.remove_behind_back(key, rev);
    let caught = std::panic::catch_unwind(AssertUnwindSafe(|| t.assert_converged()));
    assert!(caught.is_err(), "a dangling tombstone must fail the check");
}
