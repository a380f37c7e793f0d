//! The behavioural scenarios for the tiered store, written once over any backends and any
//! driver, and the macros that turn them into tests. Each scenario checks what the caller sees
//! *and* that storage converges (no orphan blob, no dangling tombstone, no change-log entry left
//! behind).

use super::api::Api;
use super::tiers::{ProbedHv, ProbedLog, ProbedLt, Tiers, THRESHOLD};
use bytes::Bytes;
use cairn_adapters::fault::{Fault, Op};
use cairn_adapters::{Body, Error, InlineRuntime, Location, Metadata, PutOptions};
use cairn_core::{Applied, ByteRange, Duration, Key, Span, WriteOutcome};
use futures_lite::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

pub fn bytes(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

pub fn opts() -> PutOptions {
    PutOptions::default()
}

pub async fn read(api: &impl Api, key: &str) -> Option<Bytes> {
    api.get(key, None)
        .await
        .expect("get succeeds")
        .map(|(_, _, b)| b)
}

pub async fn location(api: &impl Api, key: &str) -> Option<Location> {
    api.head(key)
        .await
        .expect("head succeeds")
        .map(|i| i.location)
}

pub async fn small_put_fresh_is_inline(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    assert_eq!(
        api.put("k", bytes(5, 1), &opts()).await.unwrap(),
        WriteOutcome::Committed
    );
    assert_eq!(read(api, "k").await, Some(bytes(5, 1)));
    assert_eq!(location(api, "k").await, Some(Location::Inline));
    api.join().await;
    assert_eq!(t.blob_count(), 0);
    assert_eq!(
        t.faults.calls(Op::LogRecord),
        0,
        "a fresh small put touches no log"
    );
    t.assert_converged();
}

pub async fn exactly_threshold_is_inline_one_more_is_long_term(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    api.put("at", bytes(THRESHOLD as usize, 2), &opts())
        .await
        .unwrap();
    api.put("over", bytes(THRESHOLD as usize + 1, 3), &opts())
        .await
        .unwrap();
    assert_eq!(location(api, "at").await, Some(Location::Inline));
    assert!(matches!(
        location(api, "over").await,
        Some(Location::LongTerm(_))
    ));
    assert_eq!(
        read(api, "over").await,
        Some(bytes(THRESHOLD as usize + 1, 3))
    );
    api.join().await;
    t.assert_converged();
}

pub async fn large_overwrite_deletes_only_the_old_blob(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    api.put("k", bytes(3000, 1), &opts()).await.unwrap();
    api.put("k", bytes(4000, 2), &opts()).await.unwrap();
    api.join().await;
    assert_eq!(read(api, "k").await, Some(bytes(4000, 2)));
    assert_eq!(t.blob_count(), 1);
    t.assert_converged();
}

pub async fn overwrite_small_large_small_converges(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    api.put("k", bytes(10, 1), &opts()).await.unwrap();
    api.put("k", bytes(5000, 2), &opts()).await.unwrap();
    api.join().await;
    assert_eq!(read(api, "k").await, Some(bytes(5000, 2)));
    assert_eq!(t.blob_count(), 1);
    api.put("k", bytes(20, 3), &opts()).await.unwrap();
    api.join().await;
    assert_eq!(read(api, "k").await, Some(bytes(20, 3)));
    assert_eq!(location(api, "k").await, Some(Location::Inline));
    assert_eq!(
        t.blob_count(),
        0,
        "the small put over a tombstone cleaned up its blob"
    );
    t.assert_converged();
}

pub async fn delete_of_missing_key_succeeds(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    api.delete("never-written").await.unwrap();
    assert_eq!(read(api, "never-written").await, None);
    t.assert_converged();
}

pub async fn delete_of_large_object_removes_its_blob(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    api.put("k", bytes(5000, 1), &opts()).await.unwrap();
    api.delete("k").await.unwrap();
    api.join().await;
    assert_eq!(read(api, "k").await, None);
    assert_eq!(api.head("k").await.unwrap(), None);
    assert_eq!(t.blob_count(), 0);
    t.assert_converged();
}

pub async fn large_put_losing_the_race_deletes_only_its_own_blob(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    api.put("k", bytes(2000, 1), &opts()).await.unwrap();
    api.join().await;
    // Between our blob write and our compare-and-write, a rival commits its own large put.
    let rival = t.rival();
    t.faults.inject(
        Op::HvCas,
        Fault::Run(Arc::new(move || {
            rival.put("k", bytes(3000, 9), &opts()).expect("rival put");
        })),
    );
    assert_eq!(
        api.put("k", bytes(2500, 2), &opts()).await.unwrap(),
        WriteOutcome::Superseded
    );
    api.join().await;
    assert_eq!(
        read(api, "k").await,
        Some(bytes(3000, 9)),
        "the rival's write stands"
    );
    assert_eq!(t.blob_count(), 1, "our blob and the original are both gone");
    t.assert_converged();
}

pub async fn cas_applied_but_response_lost_on_overwrite_is_committed(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    api.put("k", bytes(2000, 1), &opts()).await.unwrap();
    t.faults.inject(Op::HvCas, Fault::FailAfter);
    assert_eq!(
        api.put("k", bytes(2100, 2), &opts()).await.unwrap(),
        WriteOutcome::Committed
    );
    api.join().await;
    assert_eq!(read(api, "k").await, Some(bytes(2100, 2)));
    assert_eq!(t.blob_count(), 1);
    t.assert_converged();
}

pub async fn cas_applied_but_response_lost_on_fresh_large_put_is_resolved(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    t.faults.inject(Op::HvCas, Fault::FailAfter);
    assert_eq!(
        api.put("k", bytes(2000, 1), &opts()).await.unwrap(),
        WriteOutcome::Committed
    );
    assert_eq!(
        t.faults.calls(Op::HvCas),
        1,
        "expected=None is never retried, it is re-read"
    );
    api.join().await;
    assert_eq!(read(api, "k").await, Some(bytes(2000, 1)));
    t.assert_converged();
}

pub async fn cas_failing_before_apply_is_an_ambiguous_error_and_converges(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    t.faults.inject(Op::HvCas, Fault::FailBefore);
    let err = api.put("k", bytes(2000, 1), &opts()).await.unwrap_err();
    assert_eq!(err.applied(), Some(Applied::Unknown));
    api.join().await;
    assert_eq!(read(api, "k").await, None, "it did not apply");
    t.assert_converged();
}

pub async fn get_racing_an_overwrite_and_cleanup_follows_the_new_target(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    api.put("k", bytes(2000, 1), &opts()).await.unwrap();
    api.join().await;
    // After our HV read, before our blob read: a rival overwrites and cleans up our target.
    let rival = t.rival();
    t.faults.inject(
        Op::LtGet,
        Fault::Run(Arc::new(move || {
            rival.put("k", bytes(3000, 2), &opts()).expect("rival put");
        })),
    );
    let reads = t.faults.calls(Op::HvRead);
    assert_eq!(
        read(api, "k").await,
        Some(bytes(3000, 2)),
        "never a transient not-found"
    );
    assert_eq!(
        t.faults.calls(Op::HvRead) - reads,
        2,
        "the vanished blob caused one re-read"
    );
    t.assert_converged();
}

pub async fn tombstone_whose_blob_was_removed_behind_our_back_reads_as_lost(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    api.put("k", bytes(2000, 1), &opts()).await.unwrap();
    api.join().await;
    let Some(Location::LongTerm(rev)) = location(api, "k").await else {
        panic!("long-term")
    };
    assert!(t.lt.remove_behind_back(Key::new(b"k").unwrap(), rev));
    // Lost, not passed off as a key that never held anything.
    let lost = |e: Error| matches!(e, Error::Lost { revision } if revision == rev);
    assert!(lost(api.get("k", None).await.unwrap_err()));
    assert!(lost(api.head("k").await.unwrap_err()));
    // A new put over the dangling tombstone repairs the key.
    api.put("k", bytes(10, 2), &opts()).await.unwrap();
    api.join().await;
    assert_eq!(read(api, "k").await, Some(bytes(10, 2)));
    t.assert_converged();
}

pub async fn range_reads_inline_and_long_term(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    for (key, len) in [("small", 100usize), ("large", 5000)] {
        let data = bytes(len, 4);
        api.put(key, data.clone(), &opts()).await.unwrap();
        let cases = [
            (ByteRange::Inclusive { start: 10, end: 19 }, 10..20),
            (ByteRange::From(len as u64 - 7), len - 7..len),
            (ByteRange::Suffix(5), len - 5..len),
            (
                ByteRange::Inclusive {
                    start: 3,
                    end: 1_000_000,
                },
                3..len,
            ),
        ];
        for (range, want) in cases {
            let (info, span, got) = api.get(key, Some(range)).await.unwrap().unwrap();
            assert_eq!(got, data.slice(want.clone()), "{key} {range:?}");
            assert_eq!(
                span,
                Some(Span {
                    start: want.start as u64,
                    end: want.end as u64
                })
            );
            assert_eq!(info.meta.size, len as u64, "metadata keeps the whole size");
        }
        let err = api
            .get(key, Some(ByteRange::From(len as u64)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidRange { size } if size == len as u64),
            "{err}"
        );
    }
    api.join().await;
    t.assert_converged();
}

pub async fn expired_objects_are_absent_and_do_not_block_writes(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    let ttl = PutOptions::default().ttl(Duration::from_secs(10));
    api.put("small", bytes(10, 1), &ttl).await.unwrap();
    api.put("large", bytes(3000, 2), &ttl).await.unwrap();
    api.join().await;
    t.clock.advance(Duration::from_millis(9_999));
    assert!(read(api, "small").await.is_some() && read(api, "large").await.is_some());
    t.clock.advance(Duration::from_millis(1));
    assert_eq!(read(api, "small").await, None);
    assert_eq!(read(api, "large").await, None);
    assert_eq!(api.head("large").await.unwrap(), None);
    assert!(
        api.list("").await.unwrap().is_empty(),
        "listing hides expired rows"
    );
    // An expired tombstone neither blocks a small put nor satisfies a large put's expectation.
    assert_eq!(
        api.put("large", bytes(5, 3), &opts()).await.unwrap(),
        WriteOutcome::Committed
    );
    assert_eq!(
        api.put("small", bytes(4000, 4), &opts()).await.unwrap(),
        WriteOutcome::Committed
    );
    api.join().await;
    assert_eq!(read(api, "large").await, Some(bytes(5, 3)));
    assert_eq!(read(api, "small").await, Some(bytes(4000, 4)));
    let meta: Metadata = api.head("small").await.unwrap().unwrap().meta;
    assert_eq!(meta.expires, None);
    t.assert_converged();
}

pub async fn metadata_round_trips_through_both_tiers(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    let o = PutOptions::default()
        .content_type("text/plain")
        .user("owner", "ada")
        .ttl(Duration::from_secs(60));
    for (key, len) in [("s", 10), ("l", 5000)] {
        api.put(key, bytes(len, 1), &o).await.unwrap();
        let info = api.head(key).await.unwrap().unwrap();
        assert_eq!(info.meta.size, len as u64);
        assert_eq!(info.meta.content_type(), Some("text/plain"));
        assert_eq!(info.meta.user(), [("owner".to_string(), "ada".to_string())]);
        assert_eq!(info.meta.created, t.now());
        assert_eq!(info.meta.expires, Some(t.now() + Duration::from_secs(60)));
    }
    api.join().await;
    t.assert_converged();
}

pub async fn bad_input_is_rejected_and_nothing_is_written(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    let long = "x".repeat(cairn_core::limits::MAX_KEY_LEN + 1);
    for key in ["", "a\0b", long.as_str()] {
        let err = api.put(key, bytes(10, 1), &opts()).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidKey(_)) && err.is_caller_error(),
            "{err}"
        );
        assert!(matches!(
            api.get(key, None).await,
            Err(Error::InvalidKey(_))
        ));
        assert!(matches!(api.delete(key).await, Err(Error::InvalidKey(_))));
    }
    let huge = PutOptions::default().user("k", "v".repeat(4096));
    assert!(matches!(
        api.put("k", bytes(1, 1), &huge).await,
        Err(Error::InvalidMetadata(_))
    ));
    assert!(t.is_empty());
}

pub async fn list_pages_through_a_prefix_in_order(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    for key in ["a/3", "a/1", "b/1", "a/2", "a/4"] {
        api.put(key, bytes(if key == "a/2" { 5000 } else { 5 }, 1), &opts())
            .await
            .unwrap();
    }
    api.delete("a/4").await.unwrap();
    let keys: Vec<String> = api
        .list("a/")
        .await
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, ["a/1", "a/2", "a/3"]);
    // Two full pages of two: the second is the last, with no empty one after it.
    api.put("a/5", bytes(5, 1), &opts()).await.unwrap();
    assert_eq!(api.list("a/").await.unwrap().len(), 4);
    api.join().await;
    t.assert_converged();
}

pub async fn streamed_puts_route_by_size_and_reject_broken_bodies(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    let chunks =
        |n: usize, size: usize| Body::from_chunks((0..n).map(|i| bytes(size, i as u8)).collect());
    api.put_stream("exact", chunks(4, THRESHOLD as usize / 4), &opts())
        .await
        .unwrap();
    api.put_stream("over", chunks(5, THRESHOLD as usize / 4), &opts())
        .await
        .unwrap();
    assert_eq!(location(api, "exact").await, Some(Location::Inline));
    assert!(matches!(
        location(api, "over").await,
        Some(Location::LongTerm(_))
    ));
    let want: Vec<u8> = (0..5)
        .flat_map(|i| bytes(THRESHOLD as usize / 4, i as u8))
        .collect();
    assert_eq!(read(api, "over").await.unwrap(), want);
    assert_eq!(
        api.head("over").await.unwrap().unwrap().meta.size,
        want.len() as u64
    );
    // A body that fails after the threshold: the caller's fault, nothing committed.
    let broken = Body::from_stream(futures_lite::stream::iter(vec![
        Ok(bytes(THRESHOLD as usize, 1)),
        Ok(bytes(10, 2)),
        Err(std::io::Error::other("client went away")),
    ]));
    let err = api.put_stream("broken", broken, &opts()).await.unwrap_err();
    assert!(
        matches!(err, Error::Body(_)) && err.is_caller_error(),
        "{err}"
    );
    api.join().await;
    assert_eq!(read(api, "broken").await, None);
    t.assert_converged();
}

pub async fn cleanup_that_keeps_failing_is_left_to_recovery(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    api.put("k", bytes(2000, 1), &opts()).await.unwrap();
    api.join().await;
    t.faults.inject_nth(
        Op::LtDelete,
        0,
        Fault::FailBefore,
        t.config.cleanup_attempts as u32,
    );
    api.put("k", bytes(2000, 2), &opts()).await.unwrap();
    api.join().await;
    assert_eq!(
        t.blob_count(),
        2,
        "the old blob survives the failed cleanup"
    );
    assert_eq!(
        t.log_len(),
        1,
        "and its change-log entry stays for recovery"
    );
    let report = api.recover().await.unwrap();
    assert_eq!((report.entries, report.cleaned, report.deferred), (1, 1, 0));
    assert_eq!(read(api, "k").await, Some(bytes(2000, 2)));
    t.assert_converged();
}

pub async fn recovery_after_a_crash_between_blob_write_and_commit(
    t: &Tiers<impl ProbedHv, impl ProbedLt, impl ProbedLog>,
    api: &impl Api,
) {
    api.put("k", bytes(2000, 1), &opts()).await.unwrap();
    api.join().await;
    let crash = || {
        t.faults.inject(
            Op::HvCas,
            Fault::Run(Arc::new(|| panic!("injected crash before commit"))),
        )
    };
    // One operation crashes (panics) in a store that lives on: the store cleans up after it in
    // the background once both tiers have settled (at once in memory; after a writer round
    // trip over SQLite), as recovery would.
    crash();
    let crashed = AssertUnwindSafe(api.put("k", bytes(2500, 2), &opts()))
        .catch_unwind()
        .await;
    assert!(crashed.is_err(), "the put crashed");
    api.join().await;
    assert_eq!(t.blob_count(), 1, "the crashed put's blob is cleaned up");
    assert_eq!(t.log_len(), 0, "and its entry removed");
    // The whole process crashes: nothing it would have run in the background ever runs.
    let dying = t.builder().seed(0xdead).build(Dead).unwrap(); // ids of its own
    crash();
    let crashed = AssertUnwindSafe(dying.put("k", bytes(2500, 3), &opts()))
        .catch_unwind()
        .await;
    assert!(crashed.is_err(), "the put crashed");
    drop(dying);
    assert_eq!(t.blob_count(), 2, "the crash left its new blob behind");
    assert_eq!(t.log_len(), 1);
    // The process restarts: a new store over the same tiers runs recovery.
    let restarted = t.builder().build(InlineRuntime).unwrap();
    let report = restarted.recover().await.unwrap();
    assert_eq!(
        (report.entries, report.cleaned, report.blobs_deleted),
        (1, 1, 1)
    );
    assert_eq!(
        read(api, "k").await,
        Some(bytes(2000, 1)),
        "the committed value stands"
    );
    t.assert_converged();
}

/// The runtime of a process about to die: nothing spawned on it ever runs.
struct Dead;

impl cairn_adapters::Runtime for Dead {
    fn spawn(&self, _: cairn_adapters::Task) {}
    fn sleep(&self, _: std::time::Duration) -> cairn_adapters::Task {
        Box::pin(std::future::pending())
    }
}

/// Turns scenarios into tests under tokio, smol and the blocking driver: one module per driver,
/// one test per scenario, named after it. `$tiers` makes the tiers a scenario runs on: any
/// iterable of [`Tiers`] (one run per item, e.g. per compare-and-write mode), evaluated afresh
/// in each test, in the scope of the module that invokes the macro.
macro_rules! suite {
    ($tiers:expr; $($name:ident),* $(,)?) => {
        mod tokio_driver {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    for t in $tiers {
                        let store = t
                            .builder()
                            .build(cairn_adapters::TokioRuntime::current())
                            .unwrap();
                        $crate::common::scenarios::$name(&t, &store).await;
                    }
                }
            )*
        }
        mod smol_driver {
            use super::*;
            $(
                #[test]
                fn $name() {
                    for t in $tiers {
                        smol::block_on(async {
                            let store = t.builder().build(cairn_adapters::SmolRuntime).unwrap();
                            $crate::common::scenarios::$name(&t, &store).await;
                        });
                    }
                }
            )*
        }
        mod blocking_driver {
            use super::*;
            $(
                #[test]
                fn $name() {
                    for t in $tiers {
                        let store = cairn_adapters::BlockingStore::from_builder(t.builder()).unwrap();
                        futures_lite::future::block_on($crate::common::scenarios::$name(&t, &store));
                    }
                }
            )*
        }
    };
}

/// Every scenario above, as tests under every driver, on the tiers `$tiers` makes (see
/// [`suite!`]). The one list of scenarios: a test file per set of backends invokes this.
macro_rules! behaviour_suite {
    ($tiers:expr) => {
        $crate::common::scenarios::suite!(
            $tiers;
            small_put_fresh_is_inline,
            exactly_threshold_is_inline_one_more_is_long_term,
            large_overwrite_deletes_only_the_old_blob,
            overwrite_small_large_small_converges,
            delete_of_missing_key_succeeds,
            delete_of_large_object_removes_its_blob,
            large_put_losing_the_race_deletes_only_its_own_blob,
            cas_applied_but_response_lost_on_overwrite_is_committed,
            cas_applied_but_response_lost_on_fresh_large_put_is_resolved,
            cas_failing_before_apply_is_an_ambiguous_error_and_converges,
            get_racing_an_overwrite_and_cleanup_follows_the_new_target,
            tombstone_whose_blob_was_removed_behind_our_back_reads_as_lost,
            range_reads_inline_and_long_term,
            expired_objects_are_absent_and_do_not_block_writes,
            metadata_round_trips_through_both_tiers,
            bad_input_is_rejected_and_nothing_is_written,
            list_pages_through_a_prefix_in_order,
            streamed_puts_route_by_size_and_reject_broken_bodies,
            cleanup_that_keeps_failing_is_left_to_recovery,
            recovery_after_a_crash_between_blob_write_and_commit,
        );
    };
}

#[allow(unused_imports)] // Used by the test files that run the suite, not by every one.
pub(crate) use {behaviour_suite, suite};
