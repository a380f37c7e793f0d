//! The SQLite high-volume tier and change log: the same semantics as the in-memory tiers
//! (checked differentially), group commit, leases and fencing, several handles on one file,
//! busy errors, durability, and damaged files.

#![cfg(feature = "sqlite")]

use bytes::Bytes;
use cairn_adapters::backend::{
    BackendError, ChangeLog, HvBackend, ListEntry, Row, SyncChangeLog, SyncHvBackend, Write,
};
use cairn_adapters::memory::{MemoryHv, MemoryLog};
use cairn_adapters::sqlite::{
    CasMode, OpenError, SqliteDb, SqliteError, SqliteErrorKind, SqliteOptions, Synchronous,
};
use cairn_adapters::{Labels, ManualClock, Metadata};
use cairn_core::{
    cas_verdict, Change, ChangeId, Duration, Guarded, HvRow, HvWrite, Instant, Key, KeyBuf,
    Revision, Rng, Tombstone,
};
use futures_lite::future::block_on;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const T0: u64 = 1_700_000_000_000;

/// A directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("cairn-sqlite-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TempDir(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("cairn.sqlite")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fast() -> SqliteOptions {
    // Tests that do not measure durability skip the fsync per commit.
    SqliteOptions::default().synchronous(Synchronous::Normal)
}

fn open(path: &Path, options: SqliteOptions) -> Arc<SqliteDb> {
    SqliteDb::open(path, options).expect("open")
}

fn key(k: &[u8]) -> &Key {
    Key::new(k).expect("valid key")
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(T0 + ms)
}

fn meta(size: u64, expires: Option<Instant>) -> Metadata {
    Metadata {
        size,
        created: at(0),
        expires,
        labels: Labels::shared(
            Some("application/x-test".into()),
            vec![("who".into(), "test".into())],
        ),
    }
}

fn tomb(revision: u128, expires: Option<Instant>) -> Tombstone {
    Tombstone {
        revision: Revision(revision),
        size: 3000 + revision as u64,
        expires,
    }
}

fn kind(e: &BackendError) -> Option<SqliteErrorKind> {
    e.source_ref()
        .downcast_ref::<SqliteError>()
        .map(SqliteError::kind)
}

/// The two high-volume tiers under differential test, driven identically.
struct Pair {
    sqlite: cairn_adapters::sqlite::SqliteHv,
    memory: MemoryHv,
}

impl Pair {
    fn put(&self, k: &Key, m: &Metadata, p: &Bytes, now: Instant) -> Guarded {
        let a = block_on(HvBackend::put_non_tombstone(&self.sqlite, k, m, p, now)).unwrap();
        let b = SyncHvBackend::put_non_tombstone(&self.memory, k, m, p, now).unwrap();
        assert_eq!(a, b, "put_non_tombstone {k} at {now}");
        a
    }

    fn delete(&self, k: &Key, now: Instant) -> Guarded {
        let a = block_on(HvBackend::delete_non_tombstone(&self.sqlite, k, now)).unwrap();
        let b = SyncHvBackend::delete_non_tombstone(&self.memory, k, now).unwrap();
        assert_eq!(a, b, "delete_non_tombstone {k} at {now}");
        a
    }

    fn cas(&self, k: &Key, expected: Option<Revision>, w: Write<'_>, now: Instant) -> bool {
        let a = block_on(HvBackend::compare_and_write(
            &self.sqlite,
            k,
            expected,
            w,
            now,
        ))
        .unwrap();
        let b = SyncHvBackend::compare_and_write(&self.memory, k, expected, w, now).unwrap();
        assert_eq!(a, b, "compare_and_write {k} expected={expected:?} at {now}");
        a
    }

    fn read(&self, k: &Key, payload: bool, now: Instant) -> Row {
        let a = block_on(HvBackend::read(&self.sqlite, k, payload, now)).unwrap();
        let b = SyncHvBackend::read(&self.memory, k, payload, now).unwrap();
        assert_eq!(a, b, "read {k} payload={payload} at {now}");
        a
    }

    fn list(
        &self,
        prefix: &[u8],
        after: Option<&Key>,
        limit: usize,
        now: Instant,
    ) -> Vec<ListEntry> {
        let a = block_on(HvBackend::list(&self.sqlite, prefix, after, limit, now)).unwrap();
        let b = SyncHvBackend::list(&self.memory, prefix, after, limit, now).unwrap();
        assert_eq!(
            a, b,
            "list {prefix:x?} after={after:?} limit={limit} at {now}"
        );
        a
    }

    /// Every stored row, expired ones included, must agree too.
    fn assert_same_storage(&self) {
        let mut memory = self.memory.snapshot();
        memory.sort_by(|a, b| a.0.cmp(&b.0));
        let sqlite = self.sqlite.0.rows(None, usize::MAX).unwrap();
        let strip =
            |rows: Vec<(KeyBuf, HvRow)>| -> Vec<(KeyBuf, Option<Tombstone>, Option<Instant>)> {
                // `rows` carries the full core view; compare what both tiers store.
                rows.into_iter()
                    .map(|(k, r)| match r {
                        HvRow::Inline(m) => (k, None, m.expires),
                        HvRow::Tombstone(t) => (k, Some(t), t.expires),
                        HvRow::Absent => unreachable!("stored rows are never absent"),
                    })
                    .collect()
            };
        assert_eq!(strip(sqlite), strip(memory));
    }
}

fn pair(dir: &TempDir, mode: CasMode) -> Pair {
    let db = open(&dir.db(), fast().cas_mode(mode));
    Pair {
        sqlite: db.hv(),
        memory: MemoryHv::new().with_cas_mode(mode),
    }
}

/// The row states a compare-and-write can meet, set up on a fresh key at `at(0)`; judged at
/// `at(100)`, where everything that expires at `at(50)` is gone.
#[derive(Clone, Copy, Debug)]
enum Start {
    Absent,
    Inline,
    ExpiredInline,
    TombstoneOld,
    TombstoneNew,
    TombstoneOther,
    ExpiredTombstoneOld,
    ExpiredTombstoneNew,
}

const OLD: u128 = 1;
const NEW: u128 = 2;
const OTHER: u128 = 3;

fn set_up(p: &Pair, k: &Key, start: Start) {
    let payload = Bytes::from_static(b"inline");
    let now = at(0);
    let soon = Some(at(50));
    let t = |rev, expires| Write::Tombstone(tomb(rev, expires));
    match start {
        Start::Absent => {}
        Start::Inline => assert_eq!(p.put(k, &meta(6, None), &payload, now), Guarded::Applied),
        Start::ExpiredInline => {
            assert_eq!(p.put(k, &meta(6, soon), &payload, now), Guarded::Applied)
        }
        Start::TombstoneOld => assert!(p.cas(k, None, t(OLD, None), now)),
        Start::TombstoneNew => assert!(p.cas(k, None, t(NEW, None), now)),
        Start::TombstoneOther => assert!(p.cas(k, None, t(OTHER, None), now)),
        Start::ExpiredTombstoneOld => assert!(p.cas(k, None, t(OLD, soon), now)),
        Start::ExpiredTombstoneNew => assert!(p.cas(k, None, t(NEW, soon), now)),
    }
}

#[test]
fn every_compare_and_write_case_matches_the_core_verdict_and_memory_under_both_modes() {
    let starts = [
        Start::Absent,
        Start::Inline,
        Start::ExpiredInline,
        Start::TombstoneOld,
        Start::TombstoneNew,
        Start::TombstoneOther,
        Start::ExpiredTombstoneOld,
        Start::ExpiredTombstoneNew,
    ];
    let payload = Bytes::from_static(b"written");
    let inline_meta = meta(7, None);
    for mode in [CasMode::Reapply, CasMode::Skip] {
        let dir = TempDir::new();
        let p = pair(&dir, mode);
        let mut n = 0;
        for start in starts {
            for expected in [None, Some(Revision(OLD))] {
                for write in ["tombstone", "inline", "delete"] {
                    n += 1;
                    let name = format!("case{n}");
                    let k = key(name.as_bytes());
                    set_up(&p, k, start);
                    let now = at(100);
                    let before = p.read(k, false, now).core();
                    let (w, core) = match write {
                        "tombstone" => {
                            let t = tomb(NEW, None);
                            (Write::Tombstone(t), HvWrite::Tombstone(t))
                        }
                        "inline" => (
                            Write::Inline {
                                meta: &inline_meta,
                                payload: &payload,
                            },
                            HvWrite::Inline(inline_meta.core()),
                        ),
                        _ => (Write::Delete, HvWrite::Delete),
                    };
                    let ok = p.cas(k, expected, w, now);
                    assert_eq!(
                        ok,
                        cas_verdict(before, expected, &core).succeeded(),
                        "{mode:?} {start:?} expected={expected:?} {write}"
                    );
                    p.read(k, true, now);
                }
            }
        }
        p.assert_same_storage();
    }
}

#[test]
fn random_operations_agree_with_the_memory_tier_step_by_step() {
    for (seed, mode) in [(1, CasMode::Reapply), (2, CasMode::Skip)] {
        let dir = TempDir::new();
        let p = pair(&dir, mode);
        let mut rng = Rng::new(seed);
        let keys: Vec<KeyBuf> = [&b"a"[..], b"a\xff", b"b", b"\xc3\xa9"]
            .iter()
            .map(|k| KeyBuf::new(k).unwrap())
            .collect();
        let mut now = at(0);
        for step in 0..400u64 {
            now = now + Duration::from_millis(rng.below(20));
            let k: &Key = &keys[rng.below(keys.len() as u64) as usize];
            let expires = match rng.below(3) {
                0 => None,
                _ => Some(now + Duration::from_millis(rng.below(100))),
            };
            let rev = |rng: &mut Rng| Revision(1 + rng.below(3) as u128);
            match rng.below(6) {
                0 => {
                    let payload = Bytes::from(vec![step as u8; rng.below(40) as usize]);
                    p.put(k, &meta(payload.len() as u64, expires), &payload, now);
                }
                1 => {
                    p.delete(k, now);
                }
                2 | 3 => {
                    let expected = rng.chance(500_000).then(|| rev(&mut rng));
                    let t = Tombstone {
                        revision: rev(&mut rng),
                        size: 10,
                        expires,
                    };
                    p.cas(k, expected, Write::Tombstone(t), now);
                }
                4 => {
                    let expected = rng.chance(500_000).then(|| rev(&mut rng));
                    let payload = Bytes::from_static(b"cas");
                    let m = meta(3, expires);
                    let w = match rng.below(2) {
                        0 => Write::Delete,
                        _ => Write::Inline {
                            meta: &m,
                            payload: &payload,
                        },
                    };
                    p.cas(k, expected, w, now);
                }
                _ => {
                    p.list(b"", None, 10, now);
                }
            }
            p.read(k, rng.chance(500_000), now);
        }
        p.assert_same_storage();
    }
}

#[test]
fn expired_rows_are_absent_to_reads_listing_and_every_conditional_operation() {
    let dir = TempDir::new();
    let db = open(&dir.db(), fast());
    let hv = db.hv();
    let (k, payload) = (key(b"k"), Bytes::from_static(b"x"));
    let expiring = tomb(OLD, Some(at(10)));
    assert!(block_on(hv.compare_and_write(k, None, Write::Tombstone(expiring), at(0))).unwrap());
    // One millisecond before its expiry the tombstone is live and blocks.
    let live = at(9);
    assert_eq!(
        block_on(hv.read(k, false, live)).unwrap(),
        Row::Tombstone(expiring)
    );
    assert_eq!(
        block_on(hv.put_non_tombstone(k, &meta(1, None), &payload, live)).unwrap(),
        Guarded::Blocked(expiring)
    );
    assert_eq!(
        block_on(hv.delete_non_tombstone(k, live)).unwrap(),
        Guarded::Blocked(expiring)
    );
    // From its expiry instant on, it is absent to everything.
    let gone = at(10);
    assert_eq!(block_on(hv.read(k, true, gone)).unwrap(), Row::Absent);
    assert!(block_on(hv.list(b"", None, 10, gone)).unwrap().is_empty());
    // An expired tombstone is no tombstone: a compare-and-write expecting it applies (its
    // writer is the last one), so does one expecting none, and neither reports "already
    // applied" without writing.
    let swap = Write::Tombstone(tomb(NEW, None));
    assert!(block_on(hv.compare_and_write(k, Some(Revision(OLD)), swap, gone)).unwrap());
    assert_eq!(
        block_on(hv.read(k, false, gone)).unwrap(),
        Row::Tombstone(tomb(NEW, None))
    );
    let k1 = key(b"k1");
    let expired_new = tomb(NEW, Some(at(10)));
    assert!(
        block_on(hv.compare_and_write(k1, None, Write::Tombstone(expired_new), at(0))).unwrap()
    );
    assert!(block_on(hv.compare_and_write(k1, Some(Revision(OLD)), swap, gone)).unwrap());
    assert_eq!(
        block_on(hv.read(k1, false, gone)).unwrap(),
        Row::Tombstone(tomb(NEW, None))
    );
    // An expired tombstone neither blocks a put nor a delete.
    let k2 = key(b"k2");
    assert!(block_on(hv.compare_and_write(k2, None, Write::Tombstone(expiring), at(0))).unwrap());
    assert_eq!(
        block_on(hv.put_non_tombstone(k2, &meta(1, None), &payload, gone)).unwrap(),
        Guarded::Applied
    );
    let k3 = key(b"k3");
    assert!(block_on(hv.compare_and_write(k3, None, Write::Tombstone(expiring), at(0))).unwrap());
    assert_eq!(
        block_on(hv.delete_non_tombstone(k3, gone)).unwrap(),
        Guarded::Applied
    );
    let stored: Vec<KeyBuf> = db
        .rows(None, 10)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        stored,
        [k.to_key_buf(), k1.to_key_buf(), k2.to_key_buf()],
        "the expired tombstone was deleted"
    );
}

#[test]
fn a_metadata_read_of_a_large_row_leaves_the_payload_out() {
    let dir = TempDir::new();
    let db = open(&dir.db(), fast());
    let hv = db.hv();
    let payload = Bytes::from((0..8 << 20).map(|i| i as u8).collect::<Vec<u8>>());
    let m = meta(payload.len() as u64, None);
    let now = at(0);
    block_on(hv.put_non_tombstone(key(b"big"), &m, &payload, now)).unwrap();
    let Row::Inline {
        meta: got,
        payload: None,
    } = block_on(hv.read(key(b"big"), false, now)).unwrap()
    else {
        panic!("a metadata read returns the metadata and no payload")
    };
    assert_eq!(got, m);
    let Row::Inline {
        payload: Some(full),
        ..
    } = block_on(hv.read(key(b"big"), true, now)).unwrap()
    else {
        panic!("a full read returns the payload")
    };
    assert_eq!(full, payload);
    // Which columns each statement reads is pinned by the EXPLAIN test inside the module
    // (`a_metadata_read_never_reads_the_payload_column`).
}

#[test]
fn empty_payloads_and_every_metadata_field_round_trip() {
    let dir = TempDir::new();
    let db = open(&dir.db(), fast());
    let hv = db.hv();
    let m = Metadata {
        size: 0,
        created: at(3),
        expires: Some(Instant::from_millis(u64::MAX >> 1)),
        labels: Labels::shared(
            None,
            vec![("a".into(), "".into()), ("ü".into(), "√".into())],
        ),
    };
    block_on(hv.put_non_tombstone(key(b"e"), &m, &Bytes::new(), at(0))).unwrap();
    assert_eq!(
        block_on(hv.read(key(b"e"), true, at(0))).unwrap(),
        Row::Inline {
            meta: m,
            payload: Some(Bytes::new())
        }
    );
}

#[test]
fn listing_is_bytewise_across_high_bytes_and_prefixes_of_ff() {
    let dir = TempDir::new();
    let p = pair(&dir, CasMode::Reapply);
    let keys: [&[u8]; 12] = [
        b"a",
        b"a\x7f",
        b"a\x80",
        b"a\xff",
        b"a\xff\x01",
        b"a\xff\xff",
        b"b",
        b"\x80",
        b"\xc3\xa9",
        b"\xff",
        b"\xff\xff",
        b"\xff\xff\x01",
    ];
    let now = at(0);
    for (i, k) in keys.iter().enumerate() {
        let payload = Bytes::from(vec![i as u8]);
        p.put(key(k), &meta(1, None), &payload, now);
    }
    // One expired row inside every range, to be skipped.
    p.put(key(b"a\xff\x02"), &meta(1, Some(at(1))), &Bytes::new(), now);
    let later = at(5);
    let prefixes: [&[u8]; 8] = [
        b"",
        b"a",
        b"a\xff",
        b"a\xff\xff",
        b"\x80",
        b"\xff",
        b"\xff\xff",
        b"c",
    ];
    for prefix in prefixes {
        for limit in [1, 2, 100] {
            // Page through with `after`, exactly like a caller would.
            let mut after: Option<KeyBuf> = None;
            let mut seen = Vec::new();
            loop {
                let page = p.list(prefix, after.as_deref(), limit, later);
                seen.extend(page.iter().map(|e| e.key.clone()));
                match page.last() {
                    Some(last) if page.len() == limit => after = Some(last.key.clone()),
                    _ => break,
                }
            }
            let mut want: Vec<KeyBuf> = keys
                .iter()
                .filter(|k| k.starts_with(prefix))
                .map(|k| KeyBuf::new(k).unwrap())
                .collect();
            want.sort();
            assert_eq!(seen, want, "prefix {prefix:x?} limit {limit}");
        }
    }
    // `after` before the prefix, inside it, and past it.
    p.list(b"a\xff", Some(key(b"a")), 10, later);
    p.list(b"a\xff", Some(key(b"a\xff\x01")), 10, later);
    p.list(b"a", Some(key(b"zz")), 10, later);
}

#[test]
fn sixteen_concurrent_writers_share_commits() {
    const WRITERS: usize = 16;
    const EACH: usize = 40;
    let dir = TempDir::new();
    // Durable commits: what group commit exists for.
    let db = open(&dir.db(), SqliteOptions::default());
    let before = db.writer_stats();
    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let hv = db.hv();
            s.spawn(move || {
                for i in 0..EACH {
                    let k = format!("w{w}/{i}");
                    let payload = Bytes::from(k.clone().into_bytes());
                    let m = meta(payload.len() as u64, None);
                    let put = hv.put_non_tombstone(key(k.as_bytes()), &m, &payload, at(0));
                    assert_eq!(block_on(put).unwrap(), Guarded::Applied);
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let stats = db.writer_stats();
    let (writes, commits) = (stats.writes - before.writes, stats.commits - before.commits);
    eprintln!(
        "group commit: {writes} writes in {commits} commits ({:.1} writes per commit, largest \
         batch {}) in {elapsed:?}",
        writes as f64 / commits as f64,
        stats.largest_batch
    );
    assert_eq!(writes, (WRITERS * EACH) as u64);
    assert!(
        commits * 2 <= writes,
        "{writes} writes took {commits} commits: concurrent writers did not share commits"
    );
    let listed = block_on(db.hv().list(b"w", None, 10_000, at(0))).unwrap();
    assert_eq!(listed.len(), WRITERS * EACH);
}

/// Two clocks for two processes whose views of time differ.
fn clock(ms: u64) -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0 + ms))
}

fn change(k: &Key) -> Change<'_> {
    Change {
        key: k,
        new: Some(Revision(NEW)),
        old: Some(Revision(OLD)),
    }
}

#[test]
fn a_scan_skips_a_live_instance_s_entries_and_takes_them_over_once_its_lease_ran_out() {
    let dir = TempDir::new();
    let (clock_a, clock_b) = (clock(0), clock(500));
    let a = open(
        &dir.db(),
        fast().lease(Duration::from_secs(1)).clock(clock_a.clone()),
    );
    let b = open(
        &dir.db(),
        fast().lease(Duration::from_secs(10)).clock(clock_b.clone()),
    );
    assert_ne!(a.instance_id(), b.instance_id());
    block_on(a.log().record(ChangeId(1), change(key(b"a")))).unwrap();
    block_on(b.log().record(ChangeId(2), change(key(b"b")))).unwrap();

    // A is live (its lease runs until T0+1000): B sees only its own entry, and A only its own.
    let scan = |db: &Arc<SqliteDb>, after| block_on(db.log().scan(after)).unwrap().map(|r| r.id);
    assert_eq!(scan(&b, None), Some(ChangeId(2)));
    assert_eq!(scan(&b, Some(ChangeId(2))), None);
    assert_eq!(scan(&a, None), Some(ChangeId(1)));
    assert_eq!(scan(&a, Some(ChangeId(1))), None);

    // A stalls; by B's clock its lease has run out. B takes A's entry over.
    clock_b.set(at(1_000));
    let taken = block_on(b.log().scan(None)).unwrap().expect("A's entry");
    assert_eq!((taken.id, taken.key.as_bytes()), (ChangeId(1), &b"a"[..]));
    let owners: Vec<(ChangeId, i64, bool)> = b
        .log_entries()
        .unwrap()
        .into_iter()
        .map(|c| (c.record.id, c.owner, c.owner_live))
        .collect();
    assert_eq!(
        owners,
        [
            (ChangeId(1), b.instance_id(), true),
            (ChangeId(2), b.instance_id(), true)
        ]
    );

    // A wakes up believing (by its own clock) that its lease still runs: it is fenced anyway,
    // because it was claimed. Neither a compare-and-write nor a record may commit.
    let a_hv = a.hv();
    let cas = a_hv.compare_and_write(key(b"a"), None, Write::Tombstone(tomb(NEW, None)), at(0));
    let err = block_on(cas).unwrap_err();
    assert_eq!(kind(&err), Some(SqliteErrorKind::Fenced), "{err}");
    let err = block_on(a.log().record(ChangeId(3), change(key(b"a")))).unwrap_err();
    assert_eq!(kind(&err), Some(SqliteErrorKind::Fenced), "{err}");
    assert!(a.is_fenced());
    assert!(
        block_on(a.renew_lease(at(0))).is_err(),
        "a claimed lease never comes back"
    );
    assert_eq!(
        block_on(b.hv().read(key(b"a"), false, at(0))).unwrap(),
        Row::Absent
    );
    assert_eq!(
        b.log_entries().unwrap().len(),
        2,
        "the refused record left nothing"
    );
    // Reads and the unconditional operations of the fenced handle still work.
    assert_eq!(scan(&a, None), None, "A owns nothing any more");
    let (m, p) = (meta(1, None), Bytes::from_static(b"p"));
    let put = a_hv.put_non_tombstone(key(b"p"), &m, &p, at(0));
    assert_eq!(block_on(put).unwrap(), Guarded::Applied);
}

/// A lapsed lease only permits a takeover. An instance whose lease ran out while nobody took
/// it over (the process was suspended, the clock stepped forward an hour) renews inside its next
/// write and carries on — and from then on it is live to everyone else again.
#[test]
fn an_instance_past_its_lease_that_nobody_claimed_renews_with_its_next_write() {
    let dir = TempDir::new();
    let c = clock(0);
    let a = open(
        &dir.db(),
        fast().lease(Duration::from_secs(1)).clock(c.clone()),
    );
    let w = Write::Tombstone(tomb(OLD, None));
    assert!(block_on(a.hv().compare_and_write(key(b"k"), None, w, at(0))).unwrap());
    let hour = 3_600_000;
    c.set(at(hour));
    let hv = a.hv();
    let delete = hv.compare_and_write(key(b"k"), Some(Revision(OLD)), Write::Delete, at(hour));
    assert!(block_on(delete).expect("an unclaimed instance carries on"));
    block_on(a.log().record(ChangeId(1), change(key(b"k")))).expect("and records");
    assert!(!a.is_fenced());
    // Live again to another process at the same time: its entry is not taken over.
    let b = open(&dir.db(), fast().clock(clock(hour)));
    assert_eq!(block_on(b.log().scan(None)).unwrap(), None);
    let owners: Vec<(i64, bool)> = b
        .log_entries()
        .unwrap()
        .into_iter()
        .map(|c| (c.owner, c.owner_live))
        .collect();
    assert_eq!(owners, [(a.instance_id(), true)]);
    assert_eq!(block_on(a.renew_lease(at(hour))).unwrap(), at(hour + 1_000));
}

/// A takeover claims only the instances whose entries it takes: a lapsed instance that owns
/// nothing is left free to revive, while the lapsed owner whose entry was taken is fenced.
#[test]
fn a_takeover_fences_the_owner_it_took_from_and_no_other_lapsed_instance() {
    let dir = TempDir::new();
    let (clock_idle, clock_owner) = (clock(0), clock(0));
    let idle = open(
        &dir.db(),
        fast()
            .lease(Duration::from_secs(1))
            .clock(clock_idle.clone()),
    );
    let owner = open(
        &dir.db(),
        fast()
            .lease(Duration::from_secs(1))
            .clock(clock_owner.clone()),
    );
    block_on(owner.log().record(ChangeId(1), change(key(b"a")))).unwrap();
    // Both lapsed by the clock of a third process, which takes the owner's entry.
    let b = open(&dir.db(), fast().clock(clock(5_000)));
    let taken = block_on(b.log().scan(None))
        .unwrap()
        .expect("the owner's entry");
    assert_eq!(taken.id, ChangeId(1));
    clock_idle.set(at(5_000));
    clock_owner.set(at(5_000));
    let w = Write::Tombstone(tomb(OLD, None));
    assert!(
        block_on(idle.hv().compare_and_write(key(b"i"), None, w, at(5_000))).unwrap(),
        "the idle instance owned nothing and was not claimed"
    );
    assert!(!idle.is_fenced());
    let w = Write::Tombstone(tomb(OLD, None));
    let err = block_on(owner.hv().compare_and_write(key(b"o"), None, w, at(5_000))).unwrap_err();
    assert_eq!(kind(&err), Some(SqliteErrorKind::Fenced), "{err}");
    assert!(err.to_string().contains("reopen"), "{err}");
    assert!(owner.is_fenced());
    assert_eq!(
        block_on(b.hv().read(key(b"o"), false, at(5_000))).unwrap(),
        Row::Absent,
        "the refused write changed nothing"
    );
    // Reopening gives a fresh, live instance.
    let again = open(&dir.db(), fast().clock(clock_owner.clone()));
    let w = Write::Tombstone(tomb(OLD, None));
    assert!(block_on(again.hv().compare_and_write(key(b"o"), None, w, at(5_000))).unwrap());
}

/// An unclaimed instance that owns nothing stays on the books for a week after its lease
/// lapsed (it may still revive), then the next open prunes it — and pruned, it is fenced.
#[test]
fn a_lapsed_instance_that_owns_nothing_is_pruned_after_a_week_and_then_fenced() {
    let dir = TempDir::new();
    let c = clock(0);
    let a = open(
        &dir.db(),
        fast().lease(Duration::from_secs(1)).clock(c.clone()),
    );
    let raw = rusqlite::Connection::open(dir.db()).unwrap();
    let exists = |id: i64| -> bool {
        raw.query_row("SELECT count(*) FROM instances WHERE id = ?1", [id], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
            == 1
    };
    let week: u64 = 7 * 24 * 3_600_000;
    // The lease lapsed at T0+1000; it is kept until a week after that.
    drop(open(&dir.db(), fast().clock(clock(999 + week))));
    assert!(exists(a.instance_id()), "kept for a week");
    drop(open(&dir.db(), fast().clock(clock(1_000 + week))));
    assert!(!exists(a.instance_id()), "pruned after a week");
    c.set(at(2_000 + week));
    let w = Write::Tombstone(tomb(OLD, None));
    let err = block_on(a.hv().compare_and_write(key(b"k"), None, w, at(0))).unwrap_err();
    assert_eq!(kind(&err), Some(SqliteErrorKind::Fenced), "{err}");
    // Each clean close above claimed its own row, so the next open pruned it at once.
    let rows: i64 = raw
        .query_row("SELECT count(*) FROM instances", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1, "only the last opener's row is left");
}

#[test]
fn renewing_keeps_an_instance_live_and_the_writer_renews_on_its_own() {
    let dir = TempDir::new();
    let c = clock(0);
    let a = open(
        &dir.db(),
        fast().lease(Duration::from_secs(1)).clock(c.clone()),
    );
    assert_eq!(a.lease_until(), at(1_000));
    c.set(at(600));
    assert_eq!(block_on(a.renew_lease(at(600))).unwrap(), at(1_600));
    c.set(at(1_200));
    block_on(a.log().record(ChangeId(1), change(key(b"k")))).expect("still live after renewal");

    // Less than half the lease left: the idle writer thread renews by itself within a tick.
    let before = a.lease_until();
    c.set(Instant::from_millis(before.as_millis() - 400));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while a.lease_until() <= before {
        assert!(std::time::Instant::now() < deadline, "no automatic renewal");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(!a.is_fenced());
}

#[test]
fn a_clean_close_hands_the_remaining_entries_over_at_once() {
    let dir = TempDir::new();
    let c = clock(0);
    let a = open(&dir.db(), fast().clock(c.clone()));
    block_on(a.log().record(ChangeId(9), change(key(b"k")))).unwrap();
    let a_id = a.instance_id();
    drop(a);
    let b = open(&dir.db(), fast().clock(c.clone()));
    assert_eq!(
        block_on(b.log().scan(None)).unwrap().map(|r| r.id),
        Some(ChangeId(9))
    );
    let entries = b.log_entries().unwrap();
    assert_eq!(
        (entries[0].owner, entries[0].owner_live),
        (b.instance_id(), true)
    );
    assert_ne!(a_id, b.instance_id(), "instance ids are never reused");
}

#[test]
fn the_change_log_keeps_id_order_is_idempotent_and_survives_reopening() {
    let dir = TempDir::new();
    let ids = [
        ChangeId(1 << 100),
        ChangeId(256),
        ChangeId(1),
        ChangeId(u128::MAX),
    ];
    {
        let db = open(&dir.db(), SqliteOptions::default());
        let log = db.log();
        for id in ids {
            block_on(log.record(id, change(key(b"k")))).unwrap();
        }
        block_on(log.record(ChangeId(256), change(key(b"k")))).unwrap();
        block_on(log.remove(ChangeId(12345))).unwrap();
    }
    let db = open(&dir.db(), SqliteOptions::default());
    // The first handle closed cleanly, so its entries are this one's to scan.
    let mut seen = Vec::new();
    let mut after = None;
    while let Some(r) = block_on(db.log().scan(after)).unwrap() {
        assert_eq!(
            (r.key.as_bytes(), r.new, r.old),
            (&b"k"[..], Some(Revision(NEW)), Some(Revision(OLD)))
        );
        seen.push(r.id);
        after = Some(r.id);
    }
    assert_eq!(
        seen,
        [
            ChangeId(1),
            ChangeId(256),
            ChangeId(1 << 100),
            ChangeId(u128::MAX)
        ]
    );
    // The same contract as the in-memory log.
    let memory = MemoryLog::new();
    for id in ids {
        SyncChangeLog::record(&memory, id, change(key(b"k"))).unwrap();
    }
    let first = SyncChangeLog::scan(&memory, None).unwrap().map(|r| r.id);
    assert_eq!(first, Some(seen[0]));
}

#[test]
fn acknowledged_writes_are_in_the_files_on_disk_when_the_call_returns() {
    let dir = TempDir::new();
    let db = open(&dir.db(), SqliteOptions::default());
    let payload = Bytes::from_static(b"durable");
    block_on(
        db.hv()
            .put_non_tombstone(key(b"k"), &meta(7, None), &payload, at(0)),
    )
    .unwrap();
    block_on(db.log().record(ChangeId(5), change(key(b"k")))).unwrap();
    // What a process kill leaves behind: the database and its WAL as they are now, while the
    // handle is still open (no checkpoint, no clean close).
    let copy = TempDir::new();
    for suffix in ["", "-wal"] {
        let from = PathBuf::from(format!("{}{suffix}", dir.db().display()));
        let to = PathBuf::from(format!("{}{suffix}", copy.db().display()));
        std::fs::copy(from, to).unwrap();
    }
    let recovered = open(&copy.db(), SqliteOptions::default());
    assert_eq!(
        block_on(recovered.hv().read(key(b"k"), true, at(0))).unwrap(),
        Row::Inline {
            meta: meta(7, None),
            payload: Some(payload)
        }
    );
    let entries = recovered.log_entries().unwrap();
    assert_eq!(entries.len(), 1);
    // The killed instance's lease still runs in the image: its entry waits for the lease to end
    // before anyone may take it over.
    assert_eq!(
        (entries[0].owner, entries[0].owner_live),
        (db.instance_id(), true)
    );
    assert_eq!(block_on(recovered.log().scan(None)).unwrap(), None);
    assert_eq!(recovered.integrity_check().unwrap(), ["ok"]);
}

#[test]
fn two_handles_with_concurrent_writers_agree_and_leave_the_file_sound() {
    let dir = TempDir::new();
    let handles = [open(&dir.db(), fast()), open(&dir.db(), fast())];
    std::thread::scope(|s| {
        for (h, db) in handles.iter().enumerate() {
            for w in 0..4 {
                let hv = db.hv();
                s.spawn(move || {
                    let mut rng = Rng::new((h * 10 + w) as u64);
                    for i in 0..50 {
                        let own = format!("own/{h}/{w}/{i}");
                        let payload = Bytes::from(own.clone().into_bytes());
                        let m = meta(payload.len() as u64, None);
                        block_on(hv.put_non_tombstone(key(own.as_bytes()), &m, &payload, at(0)))
                            .unwrap();
                        // Contended keys: racing tombstone swaps that must stay atomic.
                        let shared = format!("shared/{}", rng.below(3));
                        let k = key(shared.as_bytes());
                        let current = match block_on(hv.read(k, false, at(0))).unwrap() {
                            Row::Tombstone(t) => Some(t.revision),
                            _ => None,
                        };
                        let next = Tombstone {
                            revision: Revision(rng.next_u64() as u128),
                            size: 10,
                            expires: None,
                        };
                        block_on(hv.compare_and_write(k, current, Write::Tombstone(next), at(0)))
                            .unwrap();
                    }
                });
            }
        }
    });
    let [a, b] = &handles;
    let list = |db: &Arc<SqliteDb>| block_on(db.hv().list(b"", None, 10_000, at(0))).unwrap();
    assert_eq!(list(a), list(b));
    assert_eq!(list(a).len(), 2 * 4 * 50 + 3);
    assert_eq!(a.integrity_check().unwrap(), ["ok"]);
}

#[test]
fn a_writer_locked_out_past_the_busy_timeout_fails_with_a_busy_error_naming_the_database() {
    let dir = TempDir::new();
    let db = open(
        &dir.db(),
        fast().busy_timeout(std::time::Duration::from_millis(100)),
    );
    // Another process holds the write lock.
    let other = rusqlite::Connection::open(dir.db()).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (hv, m, payload) = (db.hv(), meta(1, None), Bytes::from_static(b"x"));
    let err = block_on(hv.put_non_tombstone(key(b"k"), &m, &payload, at(0))).unwrap_err();
    assert_eq!(kind(&err), Some(SqliteErrorKind::Busy), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("busy") && message.contains(&dir.db().display().to_string()),
        "{message}"
    );
    other.execute_batch("COMMIT").unwrap();
    let put = hv.put_non_tombstone(key(b"k"), &m, &payload, at(0));
    assert_eq!(
        block_on(put).unwrap(),
        Guarded::Applied,
        "it works once the lock is free"
    );
    assert_eq!(db.writer_stats().failed_batches, 1);
}

#[test]
fn damaged_rows_are_errors_not_panics_and_can_still_be_overwritten() {
    let dir = TempDir::new();
    let db = open(&dir.db(), fast());
    let hv = db.hv();
    let payload = Bytes::from_static(b"ok");
    for k in [&b"meta"[..], b"kind", b"rev", b"size"] {
        block_on(hv.put_non_tombstone(key(k), &meta(2, None), &payload, at(0))).unwrap();
    }
    block_on(hv.compare_and_write(key(b"rev"), None, Write::Tombstone(tomb(OLD, None)), at(0)))
        .unwrap();
    let raw = rusqlite::Connection::open(dir.db()).unwrap();
    raw.execute_batch(
        "UPDATE rows SET meta = X'01FFFF' WHERE key = CAST('meta' AS BLOB);
         UPDATE rows SET revision = X'0102' WHERE key = CAST('rev' AS BLOB);
         UPDATE rows SET size = 100 WHERE key = CAST('size' AS BLOB);
         PRAGMA ignore_check_constraints = ON;
         UPDATE rows SET kind = 7 WHERE key = CAST('kind' AS BLOB);",
    )
    .unwrap();
    drop(raw);
    for k in [&b"meta"[..], b"kind", b"rev"] {
        let err = block_on(hv.read(key(k), false, at(0))).unwrap_err();
        assert_eq!(kind(&err), Some(SqliteErrorKind::Corrupt), "{err}");
    }
    // A payload whose length disagrees with the row's size: a range worked out from the size
    // must never be cut from it.
    let err = block_on(hv.read(key(b"size"), true, at(0))).unwrap_err();
    assert_eq!(kind(&err), Some(SqliteErrorKind::Corrupt), "{err}");
    assert!(err.to_string().contains("payload of 2 bytes"), "{err}");
    assert!(block_on(hv.list(b"", None, 10, at(0))).is_err());
    assert!(db.rows(None, 10).is_err());
    // A guarded put or delete meeting a row of an unknown kind, expired or not, or a damaged
    // live tombstone, reports it instead of writing over it.
    let raw = rusqlite::Connection::open(dir.db()).unwrap();
    raw.execute_batch(
        "PRAGMA ignore_check_constraints = ON;
         UPDATE rows SET expires = 5 WHERE key = CAST('kind' AS BLOB);",
    )
    .unwrap();
    drop(raw);
    let m = meta(2, None);
    for now in [at(0), at(10)] {
        for k in [&b"kind"[..], b"rev"] {
            let put = hv.put_non_tombstone(key(k), &m, &payload, now);
            let err = block_on(put).unwrap_err();
            assert_eq!(kind(&err), Some(SqliteErrorKind::Corrupt), "{err}");
            let err = block_on(hv.delete_non_tombstone(key(k), now)).unwrap_err();
            assert_eq!(kind(&err), Some(SqliteErrorKind::Corrupt), "{err}");
        }
    }
    // A row whose metadata is damaged can still be replaced: the verdict never decodes it.
    block_on(hv.put_non_tombstone(key(b"meta"), &meta(2, None), &payload, at(0))).unwrap();
    assert!(block_on(hv.read(key(b"meta"), true, at(0))).is_ok());
}

#[test]
fn sweeping_deletes_only_expired_rows_a_bounded_batch_at_a_time() {
    let dir = TempDir::new();
    let db = open(&dir.db(), fast());
    let hv = db.hv();
    for i in 0..10u64 {
        let k = format!("k{i}");
        let expires = (i < 7).then(|| at(10 + i));
        let w = Write::Tombstone(tomb(i as u128, expires));
        block_on(hv.compare_and_write(key(k.as_bytes()), None, w, at(0))).unwrap();
    }
    // At at(15): k0..k5 have expired (a row expires at its expiry instant).
    assert_eq!(block_on(db.sweep_expired_rows(at(15), 4)).unwrap(), 4);
    assert_eq!(block_on(db.sweep_expired_rows(at(15), 4)).unwrap(), 2);
    assert_eq!(block_on(db.sweep_expired_rows(at(15), 4)).unwrap(), 0);
    let left: Vec<String> = db
        .rows(None, 100)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["k6", "k7", "k8", "k9"]);
}

#[test]
fn a_foreign_sqlite_file_and_a_zero_lease_are_refused() {
    let dir = TempDir::new();
    let raw = rusqlite::Connection::open(dir.db()).unwrap();
    raw.execute_batch("CREATE TABLE theirs (x)").unwrap();
    drop(raw);
    let before = std::fs::read(dir.db()).unwrap();
    assert!(matches!(
        SqliteDb::open(&dir.db(), fast()),
        Err(OpenError::NotCairn { .. })
    ));
    // Refused before anything was changed: not switched to WAL, not a byte written.
    assert_eq!(std::fs::read(dir.db()).unwrap(), before);
    let raw = rusqlite::Connection::open(dir.db()).unwrap();
    let mode: String = raw
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
    let other = TempDir::new();
    assert!(matches!(
        SqliteDb::open(&other.db(), fast().lease(Duration::ZERO)),
        Err(OpenError::ZeroLease)
    ));
    let missing_dir = other.0.join("no/such/dir/db.sqlite");
    let err = SqliteDb::open(&missing_dir, fast()).unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

#[test]
fn a_failing_request_fails_alone_in_a_shared_batch() {
    let dir = TempDir::new();
    let c = clock(0);
    let db = open(
        &dir.db(),
        SqliteOptions::default()
            .lease(Duration::from_secs(1))
            .clock(c.clone()),
    );
    // Fenced: taken over by another process, so every compare-and-write fails; puts do not
    // depend on the lease.
    block_on(db.log().record(ChangeId(1), change(key(b"x")))).unwrap();
    let other = open(&dir.db(), fast().clock(clock(5_000)));
    assert!(block_on(other.log().scan(None)).unwrap().is_some());
    c.set(at(5_000));
    std::thread::scope(|s| {
        for w in 0..16 {
            let hv = db.hv();
            s.spawn(move || {
                for i in 0..20 {
                    let k = format!("{w}/{i}");
                    let k = key(k.as_bytes());
                    if w % 2 == 0 {
                        let (m, p) = (meta(1, None), Bytes::from_static(b"p"));
                        let put = hv.put_non_tombstone(k, &m, &p, at(0));
                        assert_eq!(block_on(put).unwrap(), Guarded::Applied);
                    } else {
                        let w = Write::Tombstone(tomb(OLD, None));
                        let err = block_on(hv.compare_and_write(k, None, w, at(0))).unwrap_err();
                        assert_eq!(kind(&err), Some(SqliteErrorKind::Fenced), "{err}");
                    }
                }
            });
        }
    });
    let rows = db.rows(None, 1000).unwrap();
    assert_eq!(
        rows.len(),
        8 * 20,
        "every put and no compare-and-write landed"
    );
    assert!(rows.iter().all(|(_, r)| matches!(r, HvRow::Inline(_))));
    assert!(
        db.writer_stats().largest_batch > 1,
        "requests shared batches"
    );
    assert_eq!(db.integrity_check().unwrap(), ["ok"]);
}

/// Several handles creating one new file at the same moment: one creates the schema and turns
/// WAL on, the others wait for it and open what it made — none takes it for a foreign file or
/// gives up busy.
#[test]
fn handles_racing_to_create_one_new_file_all_open_it() {
    for _ in 0..20 {
        let dir = TempDir::new();
        let path = dir.db();
        let opened: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| SqliteDb::open(&path, fast())))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for db in &opened {
            assert!(db.is_ok(), "{:?}", db.as_ref().err());
        }
    }
}

/// Readers connect on demand, long after the open: a relative path is resolved once, at the
/// open, so a later change of the current directory cannot point them at another file. And a
/// busy timeout beyond what SQLite takes is its longest, not a panic.
#[cfg(unix)]
#[test]
fn a_relative_path_is_fixed_at_the_open_and_any_busy_timeout_is_taken() {
    let dir = TempDir::new();
    let cwd = std::env::current_dir().unwrap();
    // The same file, spelled relative to the current directory.
    let up = "../".repeat(cwd.components().count() - 1);
    let relative = PathBuf::from(up).join(dir.db().strip_prefix("/").unwrap());
    assert!(relative.is_relative());
    let options = fast().busy_timeout(std::time::Duration::from_secs(30 * 86_400));
    let db = open(&relative, options);
    assert!(db.path().is_absolute(), "{}", db.path().display());
    let same = |p: &Path| std::fs::canonicalize(p).unwrap();
    assert_eq!(same(db.path()), same(&dir.db()));
}

/// A tmpfs mounted for one test, unmounted when dropped.
#[cfg(target_os = "linux")]
struct Mount(TempDir);

#[cfg(target_os = "linux")]
impl Mount {
    /// `None` where this user may not mount (not root): the test has nothing to run on, and
    /// says it skipped.
    fn tmpfs() -> Option<Mount> {
        let dir = TempDir::new();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
            .arg(&dir.0)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: this user may not mount a tmpfs");
        }
        mounted.then_some(Mount(dir))
    }

    /// Fills the file system to its last byte with a file, whose path is returned: removing it
    /// frees the space.
    fn fill(&self) -> PathBuf {
        let path = self.0 .0.join("filler");
        let mut filler = std::fs::File::create(&path).unwrap();
        for block in [4096, 1] {
            let block = vec![0u8; block];
            while std::io::Write::write(&mut filler, &block).is_ok_and(|n| n > 0) {}
        }
        path
    }

    fn remount_read_only(&self) {
        let status = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0 .0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

#[cfg(target_os = "linux")]
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.0 .0)
            .status();
    }
}

/// On a file system mounted read-only SQLite opens the file read-only without a word and then
/// fails to "open" the WAL index: that is reported as what it is, a store cairn cannot write.
#[cfg(target_os = "linux")]
#[test]
fn a_database_on_a_read_only_file_system_is_reported_as_read_only() {
    let Some(mount) = Mount::tmpfs() else {
        return;
    };
    let path = mount.0.db();
    drop(open(&path, fast()));
    mount.remount_read_only();
    let err = SqliteDb::open(&path, fast()).expect_err("refused");
    let OpenError::Sqlite(err) = err else {
        panic!("{err:?}")
    };
    assert_eq!(err.kind(), SqliteErrorKind::ReadOnly, "{err}");
    assert!(err.to_string().contains("write access"), "{err}");
}

/// The WAL and its index outlive the last connection, and a reopened database starts the WAL
/// over instead of growing it: what lets a store open, and delete, on a full disk (below).
#[test]
fn a_reopened_database_reuses_its_wal_instead_of_growing_it() {
    let dir = TempDir::new();
    let wal = PathBuf::from(format!("{}-wal", dir.db().display()));
    let shm = PathBuf::from(format!("{}-shm", dir.db().display()));
    let db = open(&dir.db(), fast());
    for i in 0..40u32 {
        let payload = Bytes::from(vec![7; 8000]);
        let k = format!("k{i}");
        block_on(
            db.hv()
                .put_non_tombstone(key(k.as_bytes()), &meta(8000, None), &payload, at(0)),
        )
        .unwrap();
    }
    drop(db);
    assert!(shm.exists(), "the WAL index is kept");
    let grown = std::fs::metadata(&wal).expect("the WAL is kept").len();
    assert!(grown > 40 * 8000, "{grown}");
    for round in 0..3 {
        let db = open(&dir.db(), fast());
        block_on(db.hv().put_non_tombstone(
            key(b"small"),
            &meta(1, None),
            &Bytes::from("x"),
            at(0),
        ))
        .unwrap();
        block_on(db.hv().delete_non_tombstone(key(b"k1"), at(0))).unwrap();
        drop(db);
        assert_eq!(
            std::fs::metadata(&wal).unwrap().len(),
            grown,
            "round {round}"
        );
    }
    let db = open(&dir.db(), fast());
    assert_eq!(db.integrity_check().unwrap(), ["ok"]);
    assert!(block_on(db.hv().read(key(b"k1"), false, at(0))).unwrap() == Row::Absent);
}

/// On a full disk a data directory still opens, reads, and deletes — which frees the space —
/// instead of failing every command, `rm` included, with a disk I/O error.
#[cfg(target_os = "linux")]
#[test]
fn on_a_full_disk_a_store_still_opens_reads_and_deletes_to_free_space() {
    use cairn_adapters::embedded::{Embedded, EmbeddedOptions};
    use cairn_adapters::{InlineRuntime, PutOptions};
    let Some(mount) = Mount::tmpfs() else {
        return;
    };
    let root = mount.0 .0.join("data");
    let options = || EmbeddedOptions {
        sqlite: fast(),
        ..EmbeddedOptions::default()
    };
    let open = || block_on(Embedded::open(&root, options(), InlineRuntime));
    let large = Bytes::from(vec![0xab; 3 << 20]);
    {
        let data = open().expect("open");
        let store = data.store();
        for i in 0..20 {
            block_on(store.put(
                format!("small{i}"),
                vec![i as u8; 20_000],
                &PutOptions::default(),
            ))
            .unwrap();
        }
        block_on(store.put("large", large.clone(), &PutOptions::default())).unwrap();
    }
    mount.fill();
    let data = open().expect("a full disk still opens");
    let store = data.store();
    let small = block_on(store.get("small3")).unwrap().expect("stored");
    assert_eq!(block_on(small.body.bytes()).unwrap(), vec![3u8; 20_000]);
    assert!(block_on(store.put("another", large.clone(), &PutOptions::default())).is_err());
    block_on(store.delete("large")).expect("deleting needs no new space");
    block_on(store.put("another", large.clone(), &PutOptions::default()))
        .expect("the freed space is there to use");
    assert!(block_on(data.fsck(false)).unwrap().is_clean());
    assert_eq!(data.db().integrity_check().unwrap(), ["ok"]);
}

/// A data directory on `clock` (every tier's time), with commits that skip the fsync.
#[cfg(target_os = "linux")]
fn embedded_at(
    root: &Path,
    clock: &Arc<ManualClock>,
) -> Result<
    cairn_adapters::embedded::Embedded<cairn_adapters::InlineRuntime>,
    cairn_adapters::embedded::OpenError,
> {
    let options = cairn_adapters::embedded::EmbeddedOptions {
        sqlite: fast(),
        clock: clock.clone(),
        ..Default::default()
    };
    block_on(cairn_adapters::embedded::Embedded::open(
        root,
        options,
        cairn_adapters::InlineRuntime,
    ))
}

/// `key` reads back as `expected` from `store`.
#[cfg(target_os = "linux")]
fn assert_holds<R: cairn_adapters::Runtime>(
    store: &cairn_adapters::embedded::EmbeddedStore<R>,
    key: &str,
    expected: &[u8],
) {
    let object = block_on(store.get(key)).expect("get");
    let object = object.unwrap_or_else(|| panic!("{key} is gone"));
    assert!(block_on(object.bytes()).expect("body") == expected, "{key}");
}

/// A large put whose blob runs out of space half way fails as the long-term tier's failure
/// that changed nothing, and leaves nothing behind: no temporary file, no change-log entry,
/// the old value under the key, a clean fsck — on this open and the next.
#[cfg(target_os = "linux")]
#[test]
fn a_large_put_that_fills_the_disk_half_way_fails_and_leaves_nothing_behind() {
    let Some(mount) = Mount::tmpfs() else {
        return;
    };
    let root = mount.0 .0.join("data");
    let clock = Arc::new(ManualClock::new(T0));
    let old = vec![1u8; 1_500_000];
    let check = |data: &cairn_adapters::embedded::Embedded<_>| {
        assert_holds(data.store(), "k", &old);
        let temps = std::fs::read_dir(root.join("blobs").join("tmp")).unwrap();
        assert_eq!(temps.count(), 0, "no temporary file left");
        assert!(data.db().log_entries().unwrap().is_empty(), "no entry left");
        let report = block_on(data.fsck(false)).unwrap();
        assert!(report.is_clean(), "{report:#?}");
        assert_eq!(report.blobs, 1, "the old blob only");
        assert_eq!(data.db().integrity_check().unwrap(), ["ok"]);
    };
    let data = embedded_at(&root, &clock).expect("open");
    let opts = cairn_adapters::PutOptions::default();
    block_on(data.store().put("k", old.clone(), &opts)).unwrap();
    // Room for a third of the new blob.
    let filler = mount.fill();
    let len = std::fs::metadata(&filler).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&filler)
        .unwrap()
        .set_len(len - (1 << 20))
        .unwrap();
    let err = block_on(data.store().put("k", vec![2u8; 3 << 20], &opts)).expect_err("no room");
    assert!(err.is_disk_full(), "{err}");
    assert!(
        matches!(&err, cairn_adapters::Error::Write { error, .. }
            if error.tier == cairn_core::Tier::Lt && error.applied == cairn_core::Applied::No),
        "{err:?}"
    );
    assert!(err.to_string().contains("No space left on device"), "{err}");
    check(&data);
    drop(data);
    check(&embedded_at(&root, &clock).expect("reopened"));
}

/// An inline put on a full disk fails and harms nothing — the database is sound, the old
/// value there, no change-log entry left — and once space is freed, the same put on the same
/// handle succeeds. Two ways: one that needs the database file to grow is refused before
/// anything is written (nothing changed); one that fits in the file's free pages but needs
/// the WAL to grow fails at its commit, as a full disk.
#[cfg(target_os = "linux")]
#[test]
fn an_inline_put_on_a_full_disk_fails_and_succeeds_once_there_is_room() {
    let Some(mount) = Mount::tmpfs() else {
        return;
    };
    let root = mount.0 .0.join("data");
    let clock = Arc::new(ManualClock::new(T0));
    let opts = cairn_adapters::PutOptions::default();
    // 150 free pages in the database file, and a WAL cut back to nothing.
    {
        let data = embedded_at(&root, &clock).expect("open");
        block_on(data.store().put("gone", vec![0u8; 600_000], &opts)).unwrap();
        block_on(data.store().delete("gone")).unwrap();
    }
    let raw = rusqlite::Connection::open(root.join("cairn.sqlite")).unwrap();
    raw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(raw);
    let data = embedded_at(&root, &clock).expect("open");
    block_on(data.store().put("k", "old", &opts)).unwrap();
    let filler = mount.fill();
    let harmless = |err: &cairn_adapters::Error| {
        assert!(err.is_disk_full(), "{err}");
        let cairn_adapters::Error::Write { error, source } = err else {
            panic!("{err:?}")
        };
        assert_eq!(error.tier, cairn_core::Tier::Hv, "{err}");
        let sqlite = source.source_ref().downcast_ref::<SqliteError>().unwrap();
        assert_eq!(sqlite.kind(), SqliteErrorKind::Full, "{sqlite}");
        assert_eq!(data.db().integrity_check().unwrap(), ["ok"]);
        assert_holds(data.store(), "k", b"old");
        assert!(data.db().log_entries().unwrap().is_empty());
    };
    let larger = vec![3u8; 900_000];
    let err = block_on(data.store().put("k", larger.clone(), &opts)).expect_err("no room");
    harmless(&err);
    assert_eq!(err.applied(), Some(cairn_core::Applied::No), "{err}");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    let fits = vec![4u8; 500_000];
    let err = block_on(data.store().put("k", fits.clone(), &opts)).expect_err("no WAL");
    harmless(&err);
    assert!(
        err.to_string().contains("database or disk is full"),
        "{err}"
    );
    std::fs::remove_file(filler).unwrap();
    block_on(data.store().put("k", fits.clone(), &opts)).expect("room now");
    assert_holds(data.store(), "k", &fits);
    block_on(data.store().put("k", larger.clone(), &opts)).expect("room now");
    assert_holds(data.store(), "k", &larger);
    assert_eq!(data.db().integrity_check().unwrap(), ["ok"]);
}

/// A store whose inline puts filled the disk, closed, opens again and deletes. Each commit
/// made room in the database file for its new pages, so the WAL can be copied back into it
/// on the full disk and start over. (Without that room, the pages only the WAL held could
/// not be copied, the WAL could never start over, and the next open failed as a full disk:
/// no command could delete anything.)
#[cfg(target_os = "linux")]
#[test]
fn a_store_that_filled_the_disk_with_inline_puts_opens_again_and_deletes() {
    let Some(mount) = Mount::tmpfs() else {
        return;
    };
    let root = mount.0 .0.join("data");
    let clock = Arc::new(ManualClock::new(T0));
    let opts = cairn_adapters::PutOptions::default();
    let mut stored = 0;
    {
        let data = embedded_at(&root, &clock).expect("open");
        while block_on(
            data.store()
                .put(format!("k{stored}"), vec![7u8; 50_000], &opts),
        )
        .is_ok()
        {
            stored += 1;
        }
    }
    assert!(stored > 20, "{stored}");
    let data = embedded_at(&root, &clock).expect("a full disk still opens");
    assert_holds(data.store(), &format!("k{}", stored - 1), &[7u8; 50_000]);
    for i in 0..stored {
        block_on(data.store().delete(format!("k{i}"))).expect("deleting needs no new space");
    }
    block_on(data.store().put("again", vec![8u8; 50_000], &opts)).expect("room in the file");
    assert_eq!(data.db().integrity_check().unwrap(), ["ok"]);
}

/// Fills `root` with `sessions` times `per` objects of 3000 bytes, each session a store
/// opened and closed (as separate `cairn put` commands do), so the WAL stays as small as one
/// session's writes: `expiring` says which expire in a minute.
#[cfg(target_os = "linux")]
fn fill_in_sessions(
    root: &Path,
    clock: &Arc<ManualClock>,
    sessions: usize,
    per: usize,
    expiring: impl Fn(usize) -> bool,
) {
    for session in 0..sessions {
        let data = embedded_at(root, clock).expect("open");
        for i in 0..per {
            let mut opts = cairn_adapters::PutOptions::default();
            if expiring(i) {
                opts.ttl = Some(Duration::from_secs(60));
            }
            let key = format!("k{i}-{session}");
            block_on(data.store().put(key, vec![i as u8; 3000], &opts)).unwrap();
        }
    }
}

/// One store, open while the disk is full, deletes object after object: the deletes need no
/// new space, only room in the WAL it has, which the writer makes by copying the WAL back
/// into the database when it finds none. (Without that, after a few deletes the WAL was at
/// the end of its file, and every write after failed as a full disk.)
#[cfg(target_os = "linux")]
#[test]
fn deleting_on_a_full_disk_goes_on_past_the_end_of_the_wal() {
    let Some(mount) = Mount::tmpfs() else {
        return;
    };
    let root = mount.0 .0.join("data");
    let clock = Arc::new(ManualClock::new(T0));
    fill_in_sessions(&root, &clock, 20, 10, |_| false);
    mount.fill();
    let data = embedded_at(&root, &clock).expect("a full disk still opens");
    for session in 0..20 {
        for i in 0..10 {
            block_on(data.store().delete(format!("k{i}-{session}")))
                .unwrap_or_else(|e| panic!("delete k{i}-{session}: {e}"));
        }
    }
    let left = block_on(data.store().list("", None, 10)).unwrap();
    assert!(left.entries.is_empty(), "{left:?}");
    assert_eq!(data.db().integrity_check().unwrap(), ["ok"]);
}

/// Expired rows on a full disk: the sweep on open deletes them in batches small enough for
/// the WAL there is, instead of failing the open (and with it every command, `cairn rm`
/// included); the pages they held then take a new small object without new space.
#[cfg(target_os = "linux")]
#[test]
fn expired_rows_are_swept_on_a_full_disk_and_their_room_reused() {
    let Some(mount) = Mount::tmpfs() else {
        return;
    };
    let root = mount.0 .0.join("data");
    let clock = Arc::new(ManualClock::new(T0));
    fill_in_sessions(&root, &clock, 40, 10, |i| i % 2 == 0);
    mount.fill();
    clock.advance(Duration::from_secs(61));
    let data = embedded_at(&root, &clock).expect("a full disk still opens");
    assert_eq!(data.db().rows(None, 1000).unwrap().len(), 200, "swept");
    let opts = cairn_adapters::PutOptions::default();
    block_on(data.store().put("new", vec![9u8; 3000], &opts)).expect("room in the file");
    assert_holds(data.store(), "new", &[9u8; 3000]);
    assert_eq!(data.db().integrity_check().unwrap(), ["ok"]);
}

/// Another process reading — here a plain SQLite connection in the middle of a read — keeps
/// the WAL from starting over, so writes meanwhile have only what is left at the end of the
/// WAL's file. A store still opens while its registration fits there: its maintenance pass,
/// finding no room to sweep all the expired rows, leaves the rest for a later pass instead
/// of failing the open — and goes on to delete an expired blob, which frees space, so the
/// next pass finishes.
#[cfg(target_os = "linux")]
#[test]
fn maintenance_that_finds_no_room_on_a_full_disk_waits_for_a_later_pass() {
    let Some(mount) = Mount::tmpfs() else {
        return;
    };
    let root = mount.0 .0.join("data");
    let clock = Arc::new(ManualClock::new(T0));
    let opts = cairn_adapters::PutOptions::default();
    // A WAL of some hundred pages, an expiring blob, and expiring rows put in sessions that
    // never grow the WAL.
    {
        let data = embedded_at(&root, &clock).unwrap();
        block_on(data.store().put("pad", vec![1u8; 400_000], &opts)).unwrap();
        let mut expiring = opts.clone();
        expiring.ttl = Some(Duration::from_secs(60));
        block_on(data.store().put("blob", vec![5u8; 1_500_000], &expiring)).unwrap();
    }
    fill_in_sessions(&root, &clock, 30, 10, |i| i % 2 == 0);
    let first = embedded_at(&root, &clock).expect("open");
    let reader = rusqlite::Connection::open(root.join("cairn.sqlite")).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let rows: i64 = reader
        .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 302);
    mount.fill();
    clock.advance(Duration::from_secs(61));
    let data = embedded_at(&root, &clock).expect("opens, its maintenance left for later");
    let left = data.db().rows(None, 1000).unwrap().len();
    assert!(left > 151, "the sweep of rows stopped short: {left} rows");
    let report = block_on(data.fsck(false)).unwrap();
    assert_eq!(report.blobs, 0, "the expired blob went all the same");
    assert_holds(data.store(), "pad", &[1u8; 400_000]);
    assert_holds(data.store(), "k1-7", &[1u8; 3000]);
    assert!(
        block_on(data.store().get("k0-7")).unwrap().is_none(),
        "expired"
    );
    block_on(data.maintain()).expect("room again");
    assert_eq!(data.db().rows(None, 1000).unwrap().len(), 151, "swept");
    drop(reader);
    assert_eq!(data.db().integrity_check().unwrap(), ["ok"]);
    drop(first);
}

/// The disk fills up while many threads put small objects, their puts sharing commits:
/// each put succeeds or fails, and every one that succeeded reads back, on this handle and
/// after a reopen, from a sound database.
#[cfg(target_os = "linux")]
#[test]
fn the_disk_filling_up_under_group_commit_loses_no_acknowledged_put() {
    let Some(mount) = Mount::tmpfs() else {
        return;
    };
    let root = mount.0 .0.join("data");
    let clock = Arc::new(ManualClock::new(T0));
    let data = embedded_at(&root, &clock).expect("open");
    std::fs::write(mount.0 .0.join("filler"), vec![0u8; 6 << 20]).unwrap();
    let acked = std::sync::Mutex::new(Vec::new());
    let failed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8u8 {
            let (data, acked, failed) = (&data, &acked, &failed);
            s.spawn(move || {
                let opts = cairn_adapters::PutOptions::default();
                for i in 0..40u8 {
                    let key = format!("t{t}-{i}");
                    let value = vec![t ^ i; 20_000 + 1000 * usize::from(t)];
                    match block_on(data.store().put(&key, value.clone(), &opts)) {
                        Ok(_) => acked.lock().unwrap().push((key, value)),
                        Err(e) => {
                            assert!(e.is_disk_full(), "{e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let acked = acked.into_inner().unwrap();
    assert!(
        !acked.is_empty() && failed.into_inner() > 0,
        "the disk filled up"
    );
    assert!(data.db().writer_stats().largest_batch > 1, "commits shared");
    let check = |data: &cairn_adapters::embedded::Embedded<_>| {
        for (key, value) in &acked {
            assert_holds(data.store(), key, value);
        }
        assert_eq!(data.db().integrity_check().unwrap(), ["ok"]);
        assert!(block_on(data.fsck(false)).unwrap().is_clean());
    };
    check(&data);
    drop(data);
    check(&embedded_at(&root, &clock).expect("reopened on the full disk"));
}

/// Every message names its cause, so a report that walks the chain (`anyhow`'s `{:#}`, a
/// `Caused by:` list) never shows a message that the one before it already said: here a file
/// that is not a database, opened directly and through the embedded store.
#[test]
fn error_chains_never_repeat_a_message() {
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        std::iter::successors(Some(e), |&e| e.source())
            .map(ToString::to_string)
            .collect()
    }
    fn assert_no_repeats(e: &(dyn std::error::Error + 'static)) {
        let messages = chain(e);
        for pair in messages.windows(2) {
            assert!(!pair[0].contains(&pair[1]), "{messages:#?}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cairn.sqlite");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = SqliteDb::open(&path, fast()).expect_err("not a database");
    assert!(err.to_string().contains("not a database"), "{err}");
    assert_no_repeats(&err);
    let err = block_on(cairn_adapters::embedded::Embedded::open(
        dir.path(),
        cairn_adapters::embedded::EmbeddedOptions::default(),
        cairn_adapters::InlineRuntime,
    ))
    .map(drop)
    .expect_err("not a database");
    assert!(err.to_string().contains("not a database"), "{err}");
    assert_no_repeats(&err);
}
