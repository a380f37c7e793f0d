//! The tiers a behavioural scenario runs on: any high-volume, long-term and change-log backends,
//! each wrapped in the shared fault injector, with a manual clock, plus what the scenarios need
//! to look inside them (the probes) to check that storage converged.

use cairn_adapters::backend::{ChangeLog, HvBackend, LogRecord, LtBackend};
use cairn_adapters::blobdir::BlobDir;
use cairn_adapters::fault::{Faults, Faulty};
use cairn_adapters::memory::{CasMode, MemoryHv, MemoryLog, MemoryLt};
use cairn_adapters::sqlite::{SqliteHv, SqliteLog};
use cairn_adapters::{BlockingStore, ManualClock, Metadata, StoreBuilder, TieredStore};
use cairn_core::{Config, Duration, HvRow, Instant, Key, KeyBuf, Revision};
use std::collections::HashSet;
use std::sync::Arc;

/// Small threshold so long-term objects stay cheap to build.
pub const THRESHOLD: u64 = 1024;

/// Where the scenarios' clock starts: a real date, so durable backends store sane instants.
pub const T0: u64 = 1_700_000_000_000;

/// Every row of a high-volume tier, expired ones included, as the core sees it.
pub trait HvProbe {
    fn rows(&self) -> Vec<(KeyBuf, HvRow)>;
}

/// Every blob of a long-term tier, expired ones included; and a way to damage it.
pub trait LtProbe {
    fn blobs(&self) -> Vec<(KeyBuf, Revision, Metadata)>;
    /// Removes a blob without cairn knowing (a damaged state); whether it was there.
    fn remove_behind_back(&self, key: &Key, revision: Revision) -> bool;
}

/// Every entry of a change log.
pub trait LogProbe {
    fn entries(&self) -> Vec<LogRecord>;
}

/// A high-volume backend the scenarios can run on and look into.
pub trait ProbedHv: HvBackend + HvProbe + Clone {}
impl<T: HvBackend + HvProbe + Clone> ProbedHv for T {}
/// A long-term backend the scenarios can run on and look into.
pub trait ProbedLt: LtBackend + LtProbe + Clone {}
impl<T: LtBackend + LtProbe + Clone> ProbedLt for T {}
/// A change log the scenarios can run on and look into.
pub trait ProbedLog: ChangeLog + LogProbe + Clone {}
impl<T: ChangeLog + LogProbe + Clone> ProbedLog for T {}

impl HvProbe for Arc<MemoryHv> {
    fn rows(&self) -> Vec<(KeyBuf, HvRow)> {
        self.snapshot()
    }
}

impl LtProbe for Arc<MemoryLt> {
    fn blobs(&self) -> Vec<(KeyBuf, Revision, Metadata)> {
        self.snapshot()
    }
    fn remove_behind_back(&self, key: &Key, revision: Revision) -> bool {
        MemoryLt::remove_behind_back(self, key, revision)
    }
}

impl LogProbe for Arc<MemoryLog> {
    fn entries(&self) -> Vec<LogRecord> {
        self.snapshot()
    }
}

/// Shared tiers, faults and clock, plus a way to open stores over them.
pub struct Tiers<H, L, G> {
    pub hv: H,
    pub lt: L,
    pub log: G,
    pub faults: Arc<Faults>,
    pub clock: Arc<ManualClock>,
    pub config: Config,
    /// Where durable backends keep their files; removed with the tiers.
    _files: Option<tempfile::TempDir>,
}

/// The in-memory tiers, whose long-term tier expires blobs by `clock`.
pub type MemoryTiers = Tiers<Arc<MemoryHv>, Arc<MemoryLt>, Arc<MemoryLog>>;

/// A fresh temporary directory for a durable backend, removed when dropped. On Linux it lives in
/// `/dev/shm` (tmpfs) when that exists: every `fsync` the backend issues still runs, but costs
/// microseconds instead of milliseconds, which keeps suites of hundreds of durable writes fast.
/// What `fsync` guarantees cannot be observed in a test either way.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    };
    dir.expect("a temporary directory")
}

/// A clock at [`T0`] for a new set of tiers.
pub fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

impl MemoryTiers {
    /// In-memory tiers whose high-volume tier resolves idempotent compare-and-writes by `mode`.
    pub fn memory(mode: CasMode) -> MemoryTiers {
        let clock = clock();
        let lt_clock = clock.clone();
        Tiers::new(
            Arc::new(MemoryHv::new().with_cas_mode(mode)),
            Arc::new(MemoryLt::new().with_clock(move || cairn_adapters::Clock::now(&*lt_clock))),
            Arc::new(MemoryLog::new()),
            clock,
            None,
        )
    }
}

impl<H: ProbedHv, L: ProbedLt, G: ProbedLog> Tiers<H, L, G> {
    /// Tiers over these backends. Backends that expire on their own must use `clock`; `files`
    /// is the temporary directory durable backends live in, kept until the tiers drop.
    pub fn new(
        hv: H,
        lt: L,
        log: G,
        clock: Arc<ManualClock>,
        files: Option<tempfile::TempDir>,
    ) -> Self {
        Tiers {
            hv,
            lt,
            log,
            faults: Faults::new(),
            clock,
            config: Config {
                inline_threshold: THRESHOLD,
                backoff_initial: Duration::from_millis(1),
                backoff_max: Duration::from_millis(4),
                ..Config::DEFAULT
            },
            _files: files,
        }
    }

    pub fn builder(&self) -> StoreBuilder<Faulty<H>, Faulty<L>, Faulty<G>> {
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
    pub fn rival(&self) -> BlockingStore<H, L, G> {
        let builder = TieredStore::builder(self.hv.clone(), self.lt.clone(), self.log.clone())
            .config(self.config)
            .clock(self.clock.clone())
            .seed(99);
        BlockingStore::from_builder(builder).expect("valid config")
    }

    pub fn now(&self) -> Instant {
        cairn_adapters::Clock::now(&*self.clock)
    }

    /// Live tombstone targets, checking none dangles.
    pub fn live_targets(&self) -> HashSet<(KeyBuf, Revision)> {
        let now = self.now();
        let blobs: HashSet<_> = self
            .lt
            .blobs()
            .into_iter()
            .map(|(k, r, _)| (k, r))
            .collect();
        let mut targets = HashSet::new();
        for (key, row) in self.hv.rows() {
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
    pub fn assert_converged(&self) {
        let targets = self.live_targets();
        let now = self.now();
        for (key, revision, meta) in self.lt.blobs() {
            let expired = cairn_core::is_expired(meta.expires, now);
            assert!(
                expired || targets.contains(&(key.clone(), revision)),
                "orphan blob {key}@{revision}"
            );
        }
        let entries = self.log.entries();
        assert!(entries.is_empty(), "change-log entries left: {entries:?}");
    }

    pub fn blob_count(&self) -> usize {
        self.lt.blobs().len()
    }

    pub fn log_len(&self) -> usize {
        self.log.entries().len()
    }

    /// Nothing stored in any tier.
    pub fn is_empty(&self) -> bool {
        self.hv.rows().is_empty() && self.lt.blobs().is_empty() && self.log.entries().is_empty()
    }
}

/// The database's stored rows, expired ones included: what `fsck` walks.
impl HvProbe for SqliteHv {
    fn rows(&self) -> Vec<(KeyBuf, HvRow)> {
        self.0.rows(None, usize::MAX).expect("every row decodes")
    }
}

/// Every change-log entry, of every instance.
impl LogProbe for SqliteLog {
    fn entries(&self) -> Vec<LogRecord> {
        let entries = self.0.log_entries().expect("every entry decodes");
        entries.into_iter().map(|c| c.record).collect()
    }
}

/// The blob directory's view for the scenarios' checks: what `fsck` would list.
impl LtProbe for BlobDir {
    fn blobs(&self) -> Vec<(KeyBuf, Revision, Metadata)> {
        BlobDir::blobs(self)
            .map(|b| b.expect("every blob file reads back"))
            .map(|b| (b.key, b.revision, b.meta))
            .collect()
    }

    fn remove_behind_back(&self, key: &Key, revision: Revision) -> bool {
        let found = BlobDir::blobs(self)
            .map(|b| b.expect("every blob file reads back"))
            .find(|b| *b.key == *key && b.revision == revision);
        found.is_some_and(|b| std::fs::remove_file(b.path).is_ok())
    }
}
