//! One behavioural suite for the tiered store, run three times: under tokio, under smol, and
//! under the blocking driver. Each scenario checks what the caller sees *and* that storage
//! converges (no orphan blob, no dangling tombstone, no change-log entry left behind).

use bytes::Bytes;
use cairn_adapters::fault::{Fault, Faults, Faulty, Op};
use cairn_adapters::memory::{CasMode, MemoryHv, MemoryLog, MemoryLt};
use cairn_adapters::{
    BlockingStore, Body, Error, InlineRuntime, Location, ManualClock, Metadata, ObjectInfo,
    PutOptions, Runtime, TieredStore,
};
use cairn_core::{
    Applied, ByteRange, Config, Duration, HvRow, Instant, Key, KeyBuf, RecoveryReport, Span,
    WriteOutcome,
};
use futures_lite::FutureExt;
use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

/// Small threshold so long-term objects stay cheap to build.
const THRESHOLD: u64 = 1024;

type Hv = Faulty<Arc<MemoryHv>>;
type Lt = Faulty<Arc<MemoryLt>>;
type Log = Faulty<Arc<MemoryLog>>;

/// The calls a scenario makes, over any driver.
#[allow(async_fn_in_trait)]
trait Api {
    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> Result<WriteOutcome, Error>;
    async fn put_stream(
        &self,
        key: &str,
        body: Body,
        opts: &PutOptions,
    ) -> Result<WriteOutcome, Error>;
    async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Option<(ObjectInfo, Option<Span>, Bytes)>, Error>;
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error>;
    async fn delete(&self, key: &str) -> Result<WriteOutcome, Error>;
    async fn list(&self, prefix: &str) -> Result<Vec<KeyBuf>, Error>;
    async fn recover(&self) -> Result<RecoveryReport, Error>;
    async fn join(&self);
}

impl<R: Runtime> Api for TieredStore<Hv, Lt, Log, R> {
    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> Result<WriteOutcome, Error> {
        TieredStore::put(self, key, bytes, opts).await
    }
    async fn put_stream(
        &self,
        key: &str,
        body: Body,
        opts: &PutOptions,
    ) -> Result<WriteOutcome, Error> {
        TieredStore::put_stream(self, key, body, opts).await
    }
    async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Option<(ObjectInfo, Option<Span>, Bytes)>, Error> {
        let object = match range {
            Some(r) => self.get_range(key, r).await?,
            None => TieredStore::get(self, key).await?,
        };
        match object {
            None => Ok(None),
            Some(o) => {
                let info = ObjectInfo {
                    meta: o.meta.clone(),
                    location: o.location,
                };
                Ok(Some((
                    info,
                    o.span,
                    o.body.bytes().await.map_err(Error::Body)?,
                )))
            }
        }
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error> {
        TieredStore::head(self, key).await
    }
    async fn delete(&self, key: &str) -> Result<WriteOutcome, Error> {
        TieredStore::delete(self, key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<KeyBuf>, Error> {
        let mut keys = Vec::new();
        let mut after: Option<KeyBuf> = None;
        loop {
            let page = TieredStore::list(self, prefix, after.as_deref(), 2).await?;
            keys.extend(page.entries.into_iter().map(|e| e.key));
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(keys),
            }
        }
    }
    async fn recover(&self) -> Result<RecoveryReport, Error> {
        TieredStore::recover(self).await
    }
    async fn join(&self) {
        TieredStore::join(self).await
    }
}

/// The blocking driver: every call is synchronous; the async wrapper only lets scenarios be
/// written once.
impl Api for BlockingStore<Hv, Lt, Log> {
    async fn put(&self, key: &str, bytes: Bytes, opts: &PutOptions) -> Result<WriteOutcome, Error> {
        BlockingStore::put(self, key, bytes, opts)
    }
    async fn put_stream(
        &self,
        key: &str,
        body: Body,
        opts: &PutOptions,
    ) -> Result<WriteOutcome, Error> {
        BlockingStore::put_stream(self, key, body, opts)
    }
    async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
    ) -> Result<Option<(ObjectInfo, Option<Span>, Bytes)>, Error> {
        let object = match range {
            Some(r) => self.get_range(key, r)?,
            None => BlockingStore::get(self, key)?,
        };
        match object {
            None => Ok(None),
            Some(o) => {
                let info = ObjectInfo {
                    meta: o.meta.clone(),
                    location: o.location,
                };
                let bytes = BlockingStore::<Hv, Lt, Log>::read_body(o.body).map_err(Error::Body)?;
                Ok(Some((info, o.span, bytes)))
            }
        }
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, Error> {
        BlockingStore::head(self, key)
    }
    async fn delete(&self, key: &str) -> Result<WriteOutcome, Error> {
        BlockingStore::delete(self, key)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<KeyBuf>, Error> {
        let mut keys = Vec::new();
        let mut after: Option<KeyBuf> = None;
        loop {
            let page = BlockingStore::list(self, prefix, after.as_deref(), 2)?;
            keys.extend(page.entries.into_iter().map(|e| e.key));
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(keys),
            }
        }
    }
    async fn recover(&self) -> Result<RecoveryReport, Error> {
        BlockingStore::recover(self)
    }
    async fn join(&self) {}
}

/// Shared tiers, faults and clock, plus a way to open stores over them.
struct Tiers {
    hv: Arc<MemoryHv>,
    lt: Arc<MemoryLt>,
    log: Arc<MemoryLog>,
    faults: Arc<Faults>,
    clock: Arc<ManualClock>,
    config: Config,
}

impl Tiers {
    fn new(mode: CasMode) -> Tiers {
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let lt_clock = clock.clone();
        Tiers {
            hv: Arc::new(MemoryHv::new().with_cas_mode(mode)),
            lt: Arc::new(
                MemoryLt::new().with_clock(move || cairn_adapters::Clock::now(&*lt_clock)),
            ),
            log: Arc::new(MemoryLog::new()),
            faults: Faults::new(),
            clock,
            config: Config {
                inline_threshold: THRESHOLD,
                backoff_initial: Duration::from_millis(1),
                backoff_max: Duration::from_millis(4),
                ..Config::DEFAULT
            },
        }
    }

    fn builder(&self) -> cairn_adapters::StoreBuilder<Hv, Lt, Log> {
        let f = &self.faults;
        TieredStore::builder(
            Faulty::new(self.hv.clone(), f.clone()),
            Faulty::new(self.lt.clone(), f.clone()),
            Faulty::new(self.log.clone(), f.clone()),
        )
        .config(self.config)
        .clock(self.clock.clone())
        .seed(7)
    }

    /// Another process writing to the same tiers, without faults: the rival in races.
    fn rival(&self) -> BlockingStore<Arc<MemoryHv>, Arc<MemoryLt>, Arc<MemoryLog>> {
        let builder = TieredStore::builder(self.hv.clone(), self.lt.clone(), self.log.clone())
            .config(self.config)
            .clock(self.clock.clone())
            .seed(99);
        BlockingStore::from_builder(builder).expect("valid config")
    }

    fn now(&self) -> Instant {
        cairn_adapters::Clock::now(&*self.clock)
    }

    /// Live tombstone targets, checking none dangles.
    fn live_targets(&self) -> HashSet<(KeyBuf, cairn_core::Revision)> {
        let now = self.now();
        let blobs: HashSet<_> = self
            .lt
            .snapshot()
            .into_iter()
            .map(|(k, r, _)| (k, r))
            .collect();
        let mut targets = HashSet::new();
        for (key, row) in self.hv.snapshot() {
            if let HvRow::Tombstone(t) = row.at(now) {
                assert!(
                    blobs.contains(&(key.clone(), t.revision)),
                    "dangling tombstone at {key}"
                );
                targets.insert((key, t.revision));
            }
        }
        targets
    }

    /// Storage has converged: every blob referenced (or expired), no log entry left.
    fn assert_converged(&self) {
        let targets = self.live_targets();
        let now = self.now();
        for (key, revision, meta) in self.lt.snapshot() {
            let expired = cairn_core::is_expired(meta.expires, now);
            assert!(
                expired || targets.contains(&(key.clone(), revision)),
                "orphan blob {key}@{revision}"
            );
        }
        assert!(
            self.log.is_empty(),
            "change-log entries left: {:?}",
            self.log.snapshot()
        );
    }

    fn blob_count(&self) -> usize {
        self.lt.len()
    }
}

fn bytes(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

fn opts() -> PutOptions {
    PutOptions::default()
}

async fn read(api: &impl Api, key: &str) -> Option<Bytes> {
    api.get(key, None)
        .await
        .expect("get succeeds")
        .map(|(_, _, b)| b)
}

async fn location(api: &impl Api, key: &str) -> Option<Location> {
    api.head(key)
        .await
        .expect("head succeeds")
        .map(|i| i.location)
}

mod scenarios {
    use super::*;

    pub async fn small_put_fresh_is_inline(t: &Tiers, api: &impl Api) {
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

    pub async fn exactly_threshold_is_inline_one_more_is_long_term(t: &Tiers, api: &impl Api) {
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

    pub async fn large_overwrite_deletes_only_the_old_blob(t: &Tiers, api: &impl Api) {
        api.put("k", bytes(3000, 1), &opts()).await.unwrap();
        api.put("k", bytes(4000, 2), &opts()).await.unwrap();
        api.join().await;
        assert_eq!(read(api, "k").await, Some(bytes(4000, 2)));
        assert_eq!(t.blob_count(), 1);
        t.assert_converged();
    }

    pub async fn overwrite_small_large_small_converges(t: &Tiers, api: &impl Api) {
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

    pub async fn delete_of_missing_key_succeeds(t: &Tiers, api: &impl Api) {
        api.delete("never-written").await.unwrap();
        assert_eq!(read(api, "never-written").await, None);
        t.assert_converged();
    }

    pub async fn delete_of_large_object_removes_its_blob(t: &Tiers, api: &impl Api) {
        api.put("k", bytes(5000, 1), &opts()).await.unwrap();
        api.delete("k").await.unwrap();
        api.join().await;
        assert_eq!(read(api, "k").await, None);
        assert_eq!(api.head("k").await.unwrap(), None);
        assert_eq!(t.blob_count(), 0);
        t.assert_converged();
    }

    pub async fn large_put_losing_the_race_deletes_only_its_own_blob(t: &Tiers, api: &impl Api) {
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
        t: &Tiers,
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
        t: &Tiers,
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
        t: &Tiers,
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
        t: &Tiers,
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

    pub async fn tombstone_whose_blob_was_removed_behind_our_back_is_not_found(
        t: &Tiers,
        api: &impl Api,
    ) {
        api.put("k", bytes(2000, 1), &opts()).await.unwrap();
        api.join().await;
        let Some(Location::LongTerm(rev)) = location(api, "k").await else {
            panic!("long-term")
        };
        assert!(t.lt.remove_behind_back(Key::new(b"k").unwrap(), rev));
        assert_eq!(read(api, "k").await, None);
        assert_eq!(api.head("k").await.unwrap(), None);
        // A new put over the dangling tombstone repairs the key.
        api.put("k", bytes(10, 2), &opts()).await.unwrap();
        api.join().await;
        assert_eq!(read(api, "k").await, Some(bytes(10, 2)));
        t.assert_converged();
    }

    pub async fn range_reads_inline_and_long_term(t: &Tiers, api: &impl Api) {
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

    pub async fn expired_objects_are_absent_and_do_not_block_writes(t: &Tiers, api: &impl Api) {
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

    pub async fn metadata_round_trips_through_both_tiers(t: &Tiers, api: &impl Api) {
        let o = PutOptions::default()
            .content_type("text/plain")
            .user("owner", "ada")
            .ttl(Duration::from_secs(60));
        for (key, len) in [("s", 10), ("l", 5000)] {
            api.put(key, bytes(len, 1), &o).await.unwrap();
            let info = api.head(key).await.unwrap().unwrap();
            assert_eq!(info.meta.size, len as u64);
            assert_eq!(info.meta.content_type.as_deref(), Some("text/plain"));
            assert_eq!(
                info.meta.user,
                vec![("owner".to_string(), "ada".to_string())]
            );
            assert_eq!(info.meta.created, t.now());
            assert_eq!(info.meta.expires, Some(t.now() + Duration::from_secs(60)));
        }
        api.join().await;
        t.assert_converged();
    }

    pub async fn bad_input_is_rejected_and_nothing_is_written(t: &Tiers, api: &impl Api) {
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
        assert!(t.hv.is_empty() && t.lt.is_empty() && t.log.is_empty());
    }

    pub async fn list_pages_through_a_prefix_in_order(t: &Tiers, api: &impl Api) {
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
        api.join().await;
        t.assert_converged();
    }

    pub async fn streamed_puts_route_by_size_and_reject_broken_bodies(t: &Tiers, api: &impl Api) {
        let chunks = |n: usize, size: usize| {
            Body::from_chunks((0..n).map(|i| bytes(size, i as u8)).collect())
        };
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

    pub async fn cleanup_that_keeps_failing_is_left_to_recovery(t: &Tiers, api: &impl Api) {
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
            t.log.len(),
            1,
            "and its change-log entry stays for recovery"
        );
        let report = api.recover().await.unwrap();
        assert_eq!((report.entries, report.cleaned, report.deferred), (1, 1, 0));
        assert_eq!(read(api, "k").await, Some(bytes(2000, 2)));
        t.assert_converged();
    }

    pub async fn recovery_after_a_crash_between_blob_write_and_commit(t: &Tiers, api: &impl Api) {
        api.put("k", bytes(2000, 1), &opts()).await.unwrap();
        api.join().await;
        t.faults.inject(
            Op::HvCas,
            Fault::Run(Arc::new(|| panic!("injected crash before commit"))),
        );
        let crashed = AssertUnwindSafe(api.put("k", bytes(2500, 2), &opts()))
            .catch_unwind()
            .await;
        assert!(crashed.is_err(), "the put crashed");
        assert_eq!(t.blob_count(), 2, "the crash left its new blob behind");
        assert_eq!(t.log.len(), 1);
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
}

fn tiers() -> Tiers {
    Tiers::new(CasMode::Reapply)
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod tokio_driver {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    for mode in [CasMode::Reapply, CasMode::Skip] {
                        let t = Tiers::new(mode);
                        let store = t.builder().build(cairn_adapters::TokioRuntime::current()).unwrap();
                        scenarios::$name(&t, &store).await;
                    }
                }
            )*
        }
        mod smol_driver {
            use super::*;
            $(
                #[test]
                fn $name() {
                    for mode in [CasMode::Reapply, CasMode::Skip] {
                        smol::block_on(async {
                            let t = Tiers::new(mode);
                            let store = t.builder().build(cairn_adapters::SmolRuntime).unwrap();
                            scenarios::$name(&t, &store).await;
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
                    for mode in [CasMode::Reapply, CasMode::Skip] {
                        let t = Tiers::new(mode);
                        let store = BlockingStore::from_builder(t.builder()).unwrap();
                        futures_lite::future::block_on(scenarios::$name(&t, &store));
                    }
                }
            )*
        }
    };
}

suite!(
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
    tombstone_whose_blob_was_removed_behind_our_back_is_not_found,
    range_reads_inline_and_long_term,
    expired_objects_are_absent_and_do_not_block_writes,
    metadata_round_trips_through_both_tiers,
    bad_input_is_rejected_and_nothing_is_written,
    list_pages_through_a_prefix_in_order,
    streamed_puts_route_by_size_and_reject_broken_bodies,
    cleanup_that_keeps_failing_is_left_to_recovery,
    recovery_after_a_crash_between_blob_write_and_commit,
);

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
