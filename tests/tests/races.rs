//! Real concurrency on async runtimes: operations paused at a chosen backend call with a
//! [`Gate`] while others run to completion, background cleanup observed through `join`, and
//! periodic recovery on tokio's paused (virtual) clock.

use bytes::Bytes;
use cairn_adapters::fault::{Fault, Faults, Faulty, Gate, Op};
use cairn_adapters::memory::{MemoryHv, MemoryLog, MemoryLt};
use cairn_adapters::{Error, PutOptions, Runtime, TieredStore, TokioRuntime};
use cairn_core::{Config, Duration, WriteOutcome};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

type Store<R> =
    TieredStore<Faulty<Arc<MemoryHv>>, Faulty<Arc<MemoryLt>>, Faulty<Arc<MemoryLog>>, R>;

struct Tiers {
    hv: Arc<MemoryHv>,
    lt: Arc<MemoryLt>,
    log: Arc<MemoryLog>,
    faults: Arc<Faults>,
}

impl Tiers {
    fn new() -> Self {
        Tiers {
            hv: Arc::new(MemoryHv::new()),
            lt: Arc::new(MemoryLt::new()),
            log: Arc::new(MemoryLog::new()),
            faults: Faults::new(),
        }
    }

    fn store<R: Runtime>(&self, runtime: R) -> Store<R> {
        let f = &self.faults;
        TieredStore::builder(
            Faulty::new(self.hv.clone(), f.clone()),
            Faulty::new(self.lt.clone(), f.clone()),
            Faulty::new(self.log.clone(), f.clone()),
        )
        .config(Config {
            inline_threshold: 1024,
            ..Config::DEFAULT
        })
        .build(runtime)
        .expect("valid config")
    }
}

fn large(seed: u8) -> Bytes {
    Bytes::from(vec![seed; 4096])
}

async fn read<R: Runtime>(store: &Store<R>, key: &str) -> Option<Bytes> {
    match store.get(key).await.expect("get") {
        Some(object) => Some(object.bytes().await.expect("body")),
        None => None,
    }
}

/// A task of some runtime running a put, already started.
type Running = Pin<Box<dyn Future<Output = Result<WriteOutcome, Error>> + Send>>;

/// A put paused at its commit loses to a put that finishes first, on any runtime: `spawn` starts
/// the slow put as a task of that runtime.
async fn a_paused_put_loses<R: Runtime>(
    t: Tiers,
    store: Store<R>,
    spawn: impl FnOnce(Running) -> Running,
) {
    let gate = Gate::new();
    t.faults.inject(Op::HvCas, Fault::Pause(gate.clone()));
    let slow_store = store.clone();
    let slow = spawn(Box::pin(async move {
        slow_store.put("k", large(1), &PutOptions::default()).await
    }));
    gate.reached().await;
    // The slow put has written its blob and waits at its commit; a fast put overtakes it.
    let fast = store.put("k", large(2), &PutOptions::default()).await;
    assert_eq!(fast.unwrap(), WriteOutcome::Committed);
    gate.release();
    assert_eq!(slow.await.unwrap(), WriteOutcome::Superseded);
    store.join().await;
    assert_eq!(read(&store, "k").await, Some(large(2)));
    assert_eq!(
        (t.lt.len(), t.log.len()),
        (1, 0),
        "the loser deleted only its own blob"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_paused_before_its_commit_loses_to_a_put_that_finishes_first() {
    let t = Tiers::new();
    let store = t.store(TokioRuntime::current());
    a_paused_put_loses(t, store, |put| {
        let task = tokio::spawn(put);
        Box::pin(async move { task.await.expect("the put task ran") })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_paused_before_its_blob_read_follows_a_concurrent_overwrite() {
    let t = Tiers::new();
    let store = t.store(TokioRuntime::current());
    store
        .put("k", large(1), &PutOptions::default())
        .await
        .unwrap();
    store.join().await;
    let gate = Gate::new();
    t.faults.inject(Op::LtGet, Fault::Pause(gate.clone()));
    let reader = tokio::spawn({
        let store = store.clone();
        async move { read(&store, "k").await }
    });
    gate.reached().await;
    // While the reader holds the old tombstone, an overwrite commits and cleans up its target.
    store
        .put("k", large(2), &PutOptions::default())
        .await
        .unwrap();
    store.join().await;
    gate.release();
    assert_eq!(
        reader.await.unwrap(),
        Some(large(2)),
        "never a transient not-found"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_waits_for_background_cleanup() {
    let t = Tiers::new();
    let store = t.store(TokioRuntime::current());
    store
        .put("k", large(1), &PutOptions::default())
        .await
        .unwrap();
    store.join().await;
    let gate = Gate::new();
    t.faults.inject(Op::LtDelete, Fault::Pause(gate.clone()));
    store
        .put("k", large(2), &PutOptions::default())
        .await
        .unwrap();
    gate.reached().await;
    assert_eq!(
        store.background_tasks(),
        1,
        "the overwrite's cleanup is still running"
    );
    assert_eq!(t.log.len(), 1);
    let joined = tokio::spawn({
        let store = store.clone();
        async move { store.join().await }
    });
    tokio::task::yield_now().await;
    assert!(
        !joined.is_finished(),
        "join returned while a cleanup was paused"
    );
    gate.release();
    joined.await.unwrap();
    assert_eq!(
        (store.background_tasks(), t.lt.len(), t.log.len()),
        (0, 1, 0)
    );
}

#[test]
fn a_put_paused_under_smol_loses_to_a_put_that_finishes_first() {
    smol::block_on(async {
        let t = Tiers::new();
        let store = t.store(cairn_adapters::SmolRuntime);
        a_paused_put_loses(t, store, |put| Box::pin(smol::spawn(put))).await;
    });
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn periodic_recovery_reclaims_what_a_crashed_store_left_behind() {
    let t = Tiers::new();
    // A first store crashes between its blob write and its commit.
    // Nothing it would have run in the background (the cleanup after its crashed put) runs.
    let crashed = t.store(Dead);
    t.faults
        .inject(Op::HvCas, Fault::Run(Arc::new(|| panic!("injected crash"))));
    let options = PutOptions::default();
    let put = std::panic::AssertUnwindSafe(crashed.put("k", large(1), &options));
    assert!(futures_lite::FutureExt::catch_unwind(put).await.is_err());
    drop(crashed);
    assert_eq!((t.lt.len(), t.log.len()), (1, 1));
    // A second store recovers every minute of (virtual, auto-advancing) time.
    let store = t.store(TokioRuntime::current());
    store.recover_every(Duration::from_secs(60));
    tokio::time::sleep(std::time::Duration::from_secs(59)).await;
    assert_eq!(
        t.log.len(),
        1,
        "not yet: the first pass is due after one interval"
    );
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        (t.lt.len(), t.log.len()),
        (0, 0),
        "the periodic pass reclaimed the orphan"
    );
    assert_eq!(
        read(&store, "k").await,
        None,
        "the crashed put never committed"
    );
}

/// The runtime of a process about to die: nothing spawned on it ever runs.
struct Dead;

impl cairn_adapters::Runtime for Dead {
    fn spawn(&self, _: cairn_adapters::Task) {}
    fn sleep(&self, _: std::time::Duration) -> cairn_adapters::Task {
        Box::pin(std::future::pending())
    }
}
