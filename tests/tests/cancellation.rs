//! Cancellation: a caller drops a put, put_stream, delete, get, list or a body read at any point
//! it can suspend (a `tokio::time::timeout`, a `select!` whose other branch won, a closed
//! connection). Nothing may panic; a later get sees the dropped write whole or not at all; and,
//! with no recovery pass asked for, the store converges by itself while it stays open: no
//! change-log entry, no orphan blob, no dangling tombstone once its background work is joined.

use bytes::Bytes;
use cairn_adapters::backend::{ChangeLog, HvBackend, LtBackend};
use cairn_adapters::cairn_core::{HvRow, Revision};
use cairn_adapters::embedded::{Embedded, EmbeddedOptions};
use cairn_adapters::fault::{Faults, Faulty};
use cairn_adapters::memory::{MemoryHv, MemoryLog, MemoryLt};
use cairn_adapters::{
    Body, InlineRuntime, PutOptions, Runtime, SmolRuntime, TieredStore, TokioRuntime,
};
use futures_lite::future::{block_on, yield_now};
use futures_lite::StreamExt;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};

const MIB: usize = 1 << 20;

/// In-memory tiers whose every call suspends once before it acts and once after (and a blob's
/// body between its chunks): every request is a point where the caller may give up, before the
/// request took effect or after it did (the acknowledgement lost with the future).
#[derive(Clone, Default)]
struct Tiers {
    hv: Arc<MemoryHv>,
    lt: Arc<MemoryLt>,
    log: Arc<MemoryLog>,
}

type Store<R> =
    TieredStore<Faulty<Arc<MemoryHv>>, Faulty<Arc<MemoryLt>>, Faulty<Arc<MemoryLog>>, R>;

impl Tiers {
    fn store<R: Runtime>(&self, runtime: R) -> Store<R> {
        let faults = Faults::new();
        faults.suspend_every_call();
        TieredStore::new(
            Faulty::new(self.hv.clone(), faults.clone()),
            Faulty::new(self.lt.clone(), faults.clone()),
            Faulty::new(self.log.clone(), faults),
            runtime,
        )
    }

    /// The cross-tier invariants, with no recovery run: no change-log entry left, every live
    /// tombstone's blob there, no blob that no tombstone references.
    fn converged(&self, case: &str) {
        assert_eq!(
            self.log.snapshot(),
            Vec::new(),
            "{case}: change-log entries left"
        );
        let referenced: HashSet<(Vec<u8>, Revision)> = self
            .hv
            .snapshot()
            .into_iter()
            .filter_map(|(key, row)| match row {
                HvRow::Tombstone(t) => Some((key.as_bytes().to_vec(), t.revision)),
                _ => None,
            })
            .collect();
        let blobs: HashSet<(Vec<u8>, Revision)> = self
            .lt
            .snapshot()
            .into_iter()
            .map(|(key, revision, _)| (key.as_bytes().to_vec(), revision))
            .collect();
        assert_eq!(
            referenced, blobs,
            "{case}: dangling tombstones or orphan blobs"
        );
    }
}

fn bytes(len: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect::<Vec<u8>>(),
    )
}

/// A body of `len` bytes in 64 KiB chunks, suspending before each.
fn slow_body(value: Bytes) -> Body {
    let chunks: Vec<Bytes> = (0..value.len())
        .step_by(64 << 10)
        .map(|at| value.slice(at..value.len().min(at + (64 << 10))))
        .collect();
    Body::from_stream(futures_lite::stream::iter(chunks).then(|chunk| async move {
        yield_now().await;
        Ok(chunk)
    }))
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Put,
    PutStream,
    Delete,
    Get,
    List,
}

/// Starts `op` on `key`; its output is thrown away (only completion matters here).
fn start<R: Runtime>(
    store: &Store<R>,
    op: Op,
    value: Bytes,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>> {
    let options = PutOptions::default();
    match op {
        Op::Put => Box::pin(async move {
            store.put("k", value, &options).await.expect("put");
        }),
        Op::PutStream => Box::pin(async move {
            store
                .put_stream("k", slow_body(value), &options)
                .await
                .expect("put_stream");
        }),
        Op::Delete => Box::pin(async move {
            store.delete("k").await.expect("delete");
        }),
        Op::Get => Box::pin(async move {
            if let Some(object) = store.get("k").await.expect("get") {
                object.bytes().await.expect("body");
            }
        }),
        Op::List => Box::pin(async move {
            store.list("", None, 10).await.expect("list");
        }),
    }
}

/// Polls `future` `polls` times with `waker`, then drops it; whether it finished first.
fn poll_then_drop(
    mut future: std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>,
    polls: usize,
    waker: &Waker,
) -> bool {
    let mut cx = Context::from_waker(waker);
    (0..polls).any(|_| future.as_mut().poll(&mut cx).is_ready())
}

/// The values a key may hold before the operation: nothing, inline, long-term.
fn olds() -> [(&'static str, Option<Bytes>); 3] {
    [
        ("absent", None),
        ("inline", Some(bytes(100, 1))),
        ("long-term", Some(bytes(2 * MIB, 2))),
    ]
}

/// The values a put may write: inline, long-term.
fn news() -> [(&'static str, Bytes); 2] {
    [("inline", bytes(200, 3)), ("long-term", bytes(3 * MIB, 4))]
}

/// Every operation, over every prior value, dropped after every number of polls up to the one
/// that finishes it, on `runtime`; `settle` waits for the store's background work.
fn every_cancellation_point<R: Runtime + Clone>(runtime: R, settle: impl Fn(&Store<R>)) {
    let waker = Waker::noop();
    let ops = [Op::Put, Op::PutStream, Op::Delete, Op::Get, Op::List];
    for op in ops {
        let values: Vec<(&str, Bytes)> = match op {
            Op::Put | Op::PutStream => news().to_vec(),
            _ => vec![("-", Bytes::new())],
        };
        for (old_name, old) in olds() {
            for (new_name, new) in &values {
                for polls in 0.. {
                    let case = format!(
                        "{op:?} of {new_name} over {old_name}, dropped after {polls} polls"
                    );
                    let tiers = Tiers::default();
                    let store = tiers.store(runtime.clone());
                    if let Some(old) = &old {
                        block_on(store.put("k", old.clone(), &PutOptions::default())).expect("put");
                        settle(&store);
                    }
                    let finished = poll_then_drop(start(&store, op, new.clone()), polls, waker);
                    settle(&store);
                    tiers.converged(&case);
                    // A later get sees the dropped write whole or not at all.
                    let now = block_on(async {
                        match store.get("k").await.expect("get") {
                            Some(object) => Some(object.bytes().await.expect("body")),
                            None => None,
                        }
                    });
                    let expected_after = match op {
                        Op::Put | Op::PutStream => Some(new.clone()),
                        Op::Delete => None,
                        Op::Get | Op::List => old.clone(),
                    };
                    assert!(
                        now == old || now == expected_after,
                        "{case}: the key holds {:?} bytes",
                        now.map(|b| b.len())
                    );
                    if finished {
                        assert_eq!(now, expected_after, "{case}: finished");
                        break;
                    }
                    assert!(polls < 10_000, "{case}: never finished");
                }
            }
        }
    }
}

#[test]
fn dropped_at_every_point_inline_runtime() {
    every_cancellation_point(InlineRuntime, |store| block_on(store.join()));
}

#[test]
fn dropped_at_every_point_tokio_multi_thread() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    every_cancellation_point(TokioRuntime::from_handle(rt.handle().clone()), |store| {
        block_on(store.join())
    });
}

#[test]
fn dropped_at_every_point_smol() {
    every_cancellation_point(SmolRuntime, |store| block_on(store.join()));
}

/// The same under a real runtime's own cancellation: `tokio::time::timeout` and `select!` on a
/// current-thread runtime, the operation given up after a pseudo-random number of yields.
#[test]
fn dropped_by_tokio_select_on_a_current_thread_runtime() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut seed = 0x9e37_79b9_u64;
        for round in 0..300 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let yields = (seed >> 33) % 40;
            let op =
                [Op::Put, Op::PutStream, Op::Delete, Op::Get, Op::List][(seed >> 20) as usize % 5];
            let (_, old) = olds()[(seed >> 10) as usize % 3].clone();
            let (_, new) = news()[(seed >> 5) as usize % 2].clone();
            let case = format!("round {round}: {op:?} given up after {yields} yields");
            let tiers = Tiers::default();
            let store = tiers.store(TokioRuntime::current());
            if let Some(old) = &old {
                store
                    .put("k", old.clone(), &PutOptions::default())
                    .await
                    .expect("put");
            }
            tokio::select! {
                biased;
                _ = async { for _ in 0..yields { tokio::task::yield_now().await } } => {}
                _ = start(&store, op, new.clone()) => {}
            }
            store.join().await;
            tiers.converged(&case);
            let now = match store.get("k").await.expect("get") {
                Some(object) => Some(object.bytes().await.expect("body")),
                None => None,
            };
            let after = match op {
                Op::Put | Op::PutStream => Some(new),
                Op::Delete => None,
                _ => old.clone(),
            };
            assert!(now == old || now == after, "{case}");
        }
    });
}

/// The embedded store: SQLite behind a writer thread, a directory of blob files. Operations
/// given up after a pseudo-random time under `tokio::time::timeout`; with no maintenance pass
/// asked for, the store's own check finds nothing wrong once its background work is joined.
#[test]
fn embedded_operations_given_up_by_timeout_leave_fsck_clean() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let data = Embedded::open(
            dir.path(),
            EmbeddedOptions::default(),
            TokioRuntime::current(),
        )
        .await
        .expect("open");
        let store = data.store();
        let mut seed = 0x1234_5678_u64;
        let (mut given_up, mut finished) = (0, 0);
        // Rounds go on until both outcomes were seen often enough: how many operations a
        // random timeout cuts short depends on the machine's speed, which a fixed count of
        // rounds would make this test depend on.
        let mut round = 0u32;
        while given_up < 10 || finished < 10 {
            assert!(
                round < 400,
                "{given_up} operations given up, {finished} finished in {round} rounds"
            );
            round += 1;
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let micros = (seed >> 33) % 4000;
            let big = (seed >> 7) % 2 == 0;
            let value = bytes(if big { 2 * MIB } else { 1000 }, round as u8);
            let before = read(store, "k").await;
            let options = PutOptions::default();
            let (op, after): (std::pin::Pin<Box<dyn Future<Output = ()> + Send>>, _) =
                match (seed >> 3) % 4 {
                    0 => (
                        Box::pin(async {
                            store.put("k", value.clone(), &options).await.expect("put");
                        }),
                        Some(value.clone()),
                    ),
                    1 => (
                        Box::pin(async {
                            let body = slow_body(value.clone());
                            store.put_stream("k", body, &options).await.expect("put");
                        }),
                        Some(value.clone()),
                    ),
                    2 => (
                        Box::pin(async {
                            store.delete("k").await.expect("delete");
                        }),
                        None,
                    ),
                    _ => (
                        Box::pin(async {
                            read(store, "k").await;
                        }),
                        before.clone(),
                    ),
                };
            let done = tokio::time::timeout(std::time::Duration::from_micros(micros), op).await;
            store.join().await;
            let now = read(store, "k").await;
            given_up += usize::from(done.is_err());
            finished += usize::from(done.is_ok());
            let case = format!("round {round}, finished: {}", done.is_ok());
            assert!(now == before || now == after, "{case}");
            if done.is_ok() {
                assert!(now == after, "{case}");
            }
            let report = data.fsck(false).await.expect("fsck");
            assert!(report.is_clean(), "{case}: {report:#?}");
            assert_eq!(data.db().log_entries().expect("log"), Vec::new(), "{case}");
        }
    });
}

async fn read<R: Runtime>(
    store: &TieredStore<impl HvBackend, impl LtBackend, impl ChangeLog, R>,
    key: &str,
) -> Option<Bytes> {
    match store.get(key).await.expect("get") {
        Some(object) => Some(object.bytes().await.expect("body")),
        None => None,
    }
}
