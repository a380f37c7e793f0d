//! The embedded data directory (SQLite high-volume tier and change log, blob-directory long-term
//! tier; default settings: WAL, `synchronous=FULL`) side by side with raw baselines measured in
//! the same run, on the same file system. Prints medians and ratios; the legend at the end says
//! what each baseline does.
//!
//! ```text
//! cargo bench -p cairn-adapters --bench embedded
//! cargo bench -p cairn-adapters --bench embedded -- --only small|get|large|memory|concurrent
//! ```
//!
//! (`--only` runs one section, for profiling under `strace -f` or `perf record`.)
//!
//! Every cairn round and its baseline round run alternately (the one that goes first alternating
//! from round to round), so drift in the disk's speed falls on both sides alike. The data
//! lives in a fresh directory under the target directory (`CARGO_TARGET_TMPDIR`, or `BENCH_DIR`
//! if set), removed at the end.

use bytes::Bytes;
use cairn_adapters::backend::LtBackend;
use cairn_adapters::embedded::{Embedded, EmbeddedOptions, EmbeddedStore};
use cairn_adapters::sqlite::{SqliteDb, SqliteOptions, Synchronous, WriterStats};
use cairn_adapters::{BlockingJob, Body, InlineRuntime, Metadata, PutOptions, Runtime, Task};
use cairn_core::{BlobId, Key, Revision};
use rusqlite::{params, Connection, OpenFlags};
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Small object size.
const SMALL: usize = 1024;
/// Durable puts per small-put round (each one fsync on either side, a few ms on a real disk).
const PUTS_PER_ROUND: usize = 200;
/// Rounds per side for small puts.
const PUT_ROUNDS: usize = 7;
/// Passes over the keys per get round, and get rounds per side.
const GET_PASSES: usize = 25;
const GET_ROUNDS: usize = 31;
/// Large object size, and rounds per side.
const LARGE: usize = 8 << 20;
const LARGE_ROUNDS: usize = 15;
/// The streamed body of the memory check, and its chunk size.
const HUGE: u64 = 1 << 30;
const CHUNK: usize = 256 << 10;
/// Concurrent writers, their puts per round, the lone writer's puts per round, and rounds.
const WRITERS: usize = 16;
const PUTS_PER_WRITER: usize = 30;
const LONE_PUTS: usize = 60;
const CONCURRENT_ROUNDS: usize = 11;

/// cairn's `rows` table (see `sqlite/schema.rs`), so the raw baseline stores the same row shape.
const RAW_SCHEMA: &str = "
CREATE TABLE rows (
    key      BLOB PRIMARY KEY NOT NULL,
    kind     INTEGER NOT NULL,
    meta     BLOB NOT NULL,
    revision BLOB,
    size     INTEGER NOT NULL,
    expires  INTEGER,
    payload  BLOB,
    CHECK ((kind = 1 AND revision IS NULL AND payload IS NOT NULL)
        OR (kind = 2 AND revision IS NOT NULL AND payload IS NULL AND length(meta) = 0))
);
CREATE INDEX rows_expires ON rows(expires) WHERE expires IS NOT NULL;
";
/// The raw put: one upsert that rewrites the row in place, as cairn's does. (`INSERT OR REPLACE`
/// would delete the row and insert it again under a new rowid, writing about five pages to the
/// WAL per commit instead of one: a slower baseline than cairn deserves.)
const RAW_PUT: &str = "
    INSERT INTO rows (key, kind, meta, revision, size, expires, payload)
    VALUES (?1, 1, ?2, NULL, ?3, NULL, ?4)
    ON CONFLICT (key) DO UPDATE SET kind = excluded.kind, meta = excluded.meta,
        revision = excluded.revision, size = excluded.size, expires = excluded.expires,
        payload = excluded.payload";
const RAW_GET: &str =
    "SELECT kind, meta, revision, size, expires, payload FROM rows WHERE key = ?1";

type Store = EmbeddedStore<InlineRuntime>;

/// Runs `future` on this thread as [`BlockingStore`](cairn_adapters::BlockingStore) does: one
/// poll with a no-op waker (a read served on the spot ends there, with no thread-local parker),
/// then `futures_lite`'s `block_on`, which parks the thread until a reply wakes it.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => futures_lite::future::block_on(future),
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// The median of the ratios `a[i] / b[i]`: samples taken side by side see the same disk, so
/// their ratio stays meaningful even when the disk's speed drifts between rounds.
fn ratio_median(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(a, b)| a / b).collect())
}

/// `rounds` samples of `a` and of `b`, taken alternately after one warm-up of each: the median
/// of each, and the median of their per-round ratios `a / b`.
fn paired(
    rounds: usize,
    mut a: impl FnMut() -> f64,
    mut b: impl FnMut() -> f64,
) -> (f64, f64, f64) {
    let s = rotated(rounds, &mut [&mut a, &mut b]);
    (
        median(s[0].clone()),
        median(s[1].clone()),
        ratio_median(&s[0], &s[1]),
    )
}

/// `rounds` samples of each contender, after one warm-up of each. Each round runs every
/// contender once, the starting one rotating from round to round.
fn rotated(rounds: usize, contenders: &mut [&mut dyn FnMut() -> f64]) -> Vec<Vec<f64>> {
    let n = contenders.len();
    for c in contenders.iter_mut() {
        c();
    }
    let mut samples = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for i in 0..n {
            let c = (round + i) % n;
            samples[c].push(contenders[c]());
        }
    }
    samples
}

/// Microseconds per operation of `n` runs of `op`.
fn per_op_us(n: usize, mut op: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    (0..n).for_each(&mut op);
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn open(root: &Path, synchronous: Synchronous) -> Embedded<InlineRuntime> {
    let options = EmbeddedOptions {
        sqlite: SqliteOptions::default().synchronous(synchronous),
        ..EmbeddedOptions::default()
    };
    block_on(Embedded::open(root, options, InlineRuntime)).expect("open the data directory")
}

/// A raw rusqlite connection with cairn's pragmas: WAL, `synchronous` (cairn's default is FULL),
/// the same busy timeout.
fn raw_db(path: &Path, synchronous: Synchronous) -> Connection {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).expect("open raw db");
    conn.busy_timeout(Duration::from_secs(5)).expect("pragma");
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .expect("pragma");
    assert!(mode.eq_ignore_ascii_case("wal"));
    let sync = match synchronous {
        Synchronous::Full => "FULL",
        _ => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .expect("pragma");
    conn.execute_batch(RAW_SCHEMA).expect("schema");
    conn
}

/// The median time of a 4 KiB overwrite + `fdatasync` in `dir`: what one durable commit costs
/// on this disk at the moment, since every target here depends on it.
fn fsync_probe(dir: &Path) -> String {
    let path = dir.join("fsync-probe");
    let mut file = File::create(&path).expect("probe file");
    let block = [5u8; 4096];
    let samples: Vec<f64> = (0..40)
        .map(|_| {
            let start = Instant::now();
            file.write_all(&block).expect("probe write");
            file.sync_data().expect("probe fdatasync");
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    drop(file);
    let _ = std::fs::remove_file(&path);
    format!("4 KiB write + fdatasync: median {:.0} µs", median(samples))
}

/// The load averages, to tell a quiet machine from a busy one.
fn load() -> String {
    let avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let avg: Vec<&str> = avg.split_whitespace().take(3).collect();
    format!("load average {}", avg.join(" "))
}

fn stats_delta(after: WriterStats, before: WriterStats) -> (u64, u64) {
    (after.commits - before.commits, after.writes - before.writes)
}

struct Row {
    name: &'static str,
    unit: &'static str,
    cairn: f64,
    baseline: f64,
    ratio: f64,
    target: &'static str,
    met: bool,
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:<34}{:>12}{:>12}{:>10}{:>10}{:>8}",
        "operation", "cairn", "baseline", "ratio", "target", ""
    );
    for r in rows {
        println!(
            "{:<34}{:>12.1}{:>12.1}{:>10.2}{:>10}{:>8}",
            format!("{} ({})", r.name, r.unit),
            r.cairn,
            r.baseline,
            r.ratio,
            r.target,
            match (r.target, r.met) {
                ("", _) => "",
                (_, true) => "met",
                (_, false) => "MISSED",
            }
        );
    }
}

fn main() {
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    let root = base.join(format!("bench-embedded-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("bench directory");
    let started = Instant::now();
    println!(
        "embedded data directory (SQLite WAL, synchronous=FULL + blob directory) vs raw baselines"
    );
    println!("data under {}; {}", root.display(), load());

    let data = open(&root.join("cairn"), Synchronous::Full);
    let args: Vec<String> = std::env::args().collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1).map_or("", String::as_str));
    let run = |section: &str| only.is_none() || only == Some(section);
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    // The disk's speed drifts (by 10x on a shared virtual disk): say what it was per section.
    let disk = |notes: &mut Vec<String>, section: &str| {
        notes.push(format!("{section}: disk before: {}", fsync_probe(&root)));
    };
    if run("small") {
        disk(&mut notes, "small");
        small(&data, &root, &mut rows, &mut notes, PUT_ROUNDS, GET_ROUNDS);
    }
    if only == Some("get") {
        // Gets alone, many rounds (the puts only fill the table), for profiling.
        small(&data, &root, &mut rows, &mut notes, 1, 200);
    }
    if run("large") {
        disk(&mut notes, "large");
        large(&data, &root, &mut rows, &mut notes);
    }
    if run("memory") {
        memory(&data, &mut notes);
    }
    if run("concurrent") {
        disk(&mut notes, "concurrent");
        concurrent(&data, &root, &mut rows, &mut notes);
    }
    if rows.is_empty() && notes.is_empty() {
        panic!("--only small|get|large|memory|concurrent");
    }

    println!();
    print_rows(&rows);
    println!();
    for note in notes {
        println!("{note}");
    }
    println!();
    println!("legend (every ratio is cairn / baseline: of times per op for small puts and gets,");
    println!("lower is better; of throughputs for the others, higher is better; the median of");
    println!("the ratios of rounds taken side by side, as the disk's speed drifts; the cairn and");
    println!("baseline columns are each side's own median):");
    for line in LEGEND {
        println!("  {line}");
    }
    drop(data);
    println!("disk at the end: {}", fsync_probe(&root));
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "total bench time {:.0} s; {}",
        started.elapsed().as_secs_f64(),
        load()
    );
}

const LEGEND: &[&str] = &[
    "small put: cairn `put` of 1 KiB through the embedded store: one guarded write job on the",
    "  writer thread (BEGIN IMMEDIATE, the guarded upsert, COMMIT; a probe SELECT only when the",
    "  guard let nothing change) and a round trip to it;",
    "  vs raw rusqlite on one connection: one prepared upsert of the same row",
    "  (cairn's `rows` table, 14 B meta with a fresh stamp, 1 KiB payload) in its own autocommit",
    "  transaction. Both WAL, synchronous=FULL: one WAL fsync per put on either side.",
    "  `INSERT ... ON CONFLICT (key) DO UPDATE` rewrites the row in place as cairn's does;",
    "  `INSERT OR REPLACE` would delete and re-insert it under a new rowid (~5 WAL pages per",
    "  commit instead of ~1), a slower baseline than cairn deserves.",
    "same, synchronous=NORMAL: both sides without the fsync, on their own files: what cairn adds",
    "  to a put in absolute terms, whatever the disk (diagnostic, no target).",
    "small get: cairn `get` and its body (a pooled read connection, the cached SELECT, metadata",
    "  decoded) vs raw: the prepared SELECT of the row's columns, payload and meta copied out.",
    "large put: cairn `put` of 8 MiB to a fresh key (row read; change-log record, commit 1,",
    "  while the blob is staged beside it: temp file, fdatasync; then the rename, fan-out dir",
    "  fsync; tombstone, commit 2; change-log entry removed, commit 3, lazy: no fsync of its",
    "  own, see sqlite/writer.rs) vs raw: the same bytes written to a new temp file, fdatasync,",
    "  rename into a fan-out directory, fsync of that directory, on the same file system.",
    "its blob write alone: the blob directory's own put (`LtBackend::put`, no SQLite) vs the",
    "  same raw write: splits the gap between the blob write and the commits (diagnostic).",
    "large put / get 8 MiB, tokio: the same put, and a get of the whole body, from a task on a",
    "  2-worker tokio runtime, on a store of its own (diagnostic) vs the raw write, and a raw",
    "  read of such a file in 64 KiB reads, each copied out, as a get's body chunks are.",
    "16 writers vs 1, threads: durable 1 KiB puts from 16 threads sharing one store (blocking",
    "  callers: the writer thread commits whatever has queued in one transaction) vs the same",
    "  puts from one thread; cairn = puts/s of 16 writers, baseline = puts/s of one.",
    "16 writers vs 1, tokio tasks: the same from 16 tasks (vs 1) on a 2-worker tokio runtime,",
    "  on a store of its own: a reply wakes a task, not a parked thread.",
    "1 GiB put_stream: a body of 256 KiB chunks made on demand, streamed to the blob directory;",
    "  resident memory is sampled every millisecond from /proc/self/status (VmRSS), VmHWM reset",
    "  through /proc/self/clear_refs before the put.",
];

/// Durable 1 KiB puts of cairn and of the raw upsert, overwriting `keys`, one of each in turn
/// (which goes first alternating), so both sides see the disk in the same state: the median
/// microseconds per put of each over `rounds` rounds of [`PUTS_PER_ROUND`] pairs, and the median
/// of the rounds' ratios cairn / raw.
fn small_puts(store: &Store, raw: &Connection, keys: &[String], rounds: usize) -> (f64, f64, f64) {
    let payload = Bytes::from(vec![7u8; SMALL]);
    let opts = PutOptions::default();
    // cairn's metadata is 14 bytes and carries the put's creation time, so every put rewrites
    // the row. So does the raw one: SQLite skips writing a cell (and the commit then writes and
    // syncs nothing) when an overwrite leaves its bytes unchanged.
    let mut meta = [1u8; 14];
    let mut stamp = 0u64;
    let mut raw_stmt = raw.prepare(RAW_PUT).expect("prepare");
    let mut round = || {
        let (mut cairn, mut base) = (Duration::ZERO, Duration::ZERO);
        for (i, key) in keys.iter().enumerate() {
            let mut cairn_put = || {
                let start = Instant::now();
                block_on(store.put(key, payload.clone(), &opts)).expect("put");
                cairn += start.elapsed();
            };
            let mut raw_put = || {
                stamp += 1;
                meta[1..9].copy_from_slice(&stamp.to_le_bytes());
                let start = Instant::now();
                raw_stmt
                    .execute(params![
                        key.as_bytes(),
                        &meta[..],
                        SMALL as i64,
                        &payload[..]
                    ])
                    .expect("raw put");
                base += start.elapsed();
            };
            if i % 2 == 0 {
                cairn_put();
                raw_put();
            } else {
                raw_put();
                cairn_put();
            }
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6 / keys.len() as f64;
        (us(cairn), us(base))
    };
    round(); // warm up
    let (cairn, base): (Vec<f64>, Vec<f64>) = (0..rounds).map(|_| round()).unzip();
    (
        median(cairn.clone()),
        median(base.clone()),
        ratio_median(&cairn, &base),
    )
}

/// Small puts (`put_rounds` per side) and gets (`get_rounds` per side).
fn small(
    data: &Embedded<InlineRuntime>,
    root: &Path,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
    put_rounds: usize,
    get_rounds: usize,
) {
    let store = data.store();
    let keys: Vec<String> = (0..PUTS_PER_ROUND)
        .map(|i| format!("bench/object-{i:06}"))
        .collect();
    let raw = raw_db(&root.join("raw.sqlite"), Synchronous::Full);
    let stats = data.db().writer_stats();
    let (put, raw_put, ratio) = small_puts(store, &raw, &keys, put_rounds);
    let (commits, writes) = stats_delta(data.db().writer_stats(), stats);
    notes.push(format!(
        "small puts: {writes} cairn puts took {commits} commits ({:.2} per put)",
        commits as f64 / writes as f64
    ));
    rows.push(Row {
        name: "small put 1 KiB",
        unit: "µs/op",
        cairn: put,
        baseline: raw_put,
        ratio,
        target: "≤ 1.30",
        met: ratio <= 1.3,
    });
    // The same without the fsync: what cairn adds to a put whatever the disk (the writer-thread
    // round trip, the savepoint and the probe), in absolute terms.
    let lazy = open(&root.join("cairn-normal"), Synchronous::Normal);
    let lazy_raw = raw_db(&root.join("raw-normal.sqlite"), Synchronous::Normal);
    let (put, raw_put, ratio) = small_puts(lazy.store(), &lazy_raw, &keys, 4 * put_rounds);
    drop((lazy, lazy_raw));
    rows.push(Row {
        name: "  same, synchronous=NORMAL",
        unit: "µs/op",
        cairn: put,
        baseline: raw_put,
        ratio,
        target: "",
        met: true,
    });

    let (get, raw_get, ratio) = {
        let mut raw_stmt = raw.prepare(RAW_GET).expect("prepare");
        paired(
            get_rounds,
            || {
                per_op_us(GET_PASSES * PUTS_PER_ROUND, |i| {
                    let object = block_on(store.get(&keys[i % PUTS_PER_ROUND]))
                        .expect("get")
                        .expect("present");
                    black_box(block_on(object.bytes()).expect("body"));
                })
            },
            || {
                per_op_us(GET_PASSES * PUTS_PER_ROUND, |i| {
                    let row = raw_stmt
                        .query_row([keys[i % PUTS_PER_ROUND].as_bytes()], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, Vec<u8>>(1)?,
                                r.get::<_, Option<Vec<u8>>>(2)?,
                                r.get::<_, i64>(3)?,
                                r.get::<_, Option<i64>>(4)?,
                                r.get::<_, Vec<u8>>(5)?,
                            ))
                        })
                        .expect("raw get");
                    black_box(row);
                })
            },
        )
    };
    rows.push(Row {
        name: "small get 1 KiB",
        unit: "µs/op",
        cairn: get,
        baseline: raw_get,
        ratio,
        target: "≤ 1.30",
        met: ratio <= 1.3,
    });
}

/// The raw large put: temp file, write, fdatasync, rename into place, fsync the directory.
fn raw_blob(dir: &Path, name: &str, bytes: &[u8]) {
    let temp = dir.join("tmp").join(format!("{name}.partial"));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .expect("raw temp file");
    file.write_all(bytes).expect("raw write");
    file.sync_data().expect("raw fdatasync");
    drop(file);
    let fanout = dir.join("blobs").join("00");
    std::fs::rename(&temp, fanout.join(name)).expect("raw rename");
    File::open(&fanout)
        .and_then(|d| d.sync_all())
        .expect("raw dir fsync");
}

fn large(
    data: &Embedded<InlineRuntime>,
    root: &Path,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let store = data.store();
    let opts = PutOptions::default();
    let raw_dir = root.join("raw-blobs");
    for sub in ["tmp", "blobs/00"] {
        std::fs::create_dir_all(raw_dir.join(sub)).expect("raw blob dir");
    }
    let large = Bytes::from((0..LARGE).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let meta = Metadata {
        size: LARGE as u64,
        ..Metadata::default()
    };
    let (mut puts, mut blobs, mut raws) = (0u128, 0u128, 0);
    let stats = data.db().writer_stats();
    let timed = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    let samples = rotated(
        LARGE_ROUNDS,
        &mut [
            &mut || {
                puts += 1;
                let key = format!("large/{puts}");
                timed(&mut || {
                    block_on(store.put(&key, large.clone(), &opts)).expect("large put");
                })
            },
            &mut || {
                blobs += 1;
                let key = Key::new(b"blob-dir-alone").expect("key");
                let blob = BlobId {
                    key,
                    revision: Revision(blobs),
                };
                timed(&mut || {
                    block_on(
                        data.blobs()
                            .put(blob, &meta, Body::from_bytes(large.clone())),
                    )
                    .expect("blob put");
                })
            },
            &mut || {
                raws += 1;
                timed(&mut || raw_blob(&raw_dir, &format!("large-{raws}"), &large))
            },
        ],
    );
    let after = data.db().writer_stats();
    let (commits, _) = stats_delta(after, stats);
    let lazy = after.lazy_commits - stats.lazy_commits;
    let [cairn_s, blob_s, raw_s] = [&samples[0], &samples[1], &samples[2]];
    let gap = median(cairn_s.iter().zip(raw_s).map(|(c, r)| c - r).collect());
    let ms = |secs: f64| secs * 1e3;
    notes.push(format!(
        "large puts: {puts} cairn puts took {commits} commits ({:.1} per put, {lazy} of them \
         lazy); median ms per put: \
         cairn {:.1}, its blob write alone {:.1}, raw {:.1}; cairn - raw (median per round) = \
         {:.1} ms",
        commits as f64 / puts as f64,
        ms(median(cairn_s.clone())),
        ms(median(blob_s.clone())),
        ms(median(raw_s.clone())),
        ms(gap),
    ));
    for i in 1..=puts {
        block_on(store.delete(format!("large/{i}"))).expect("delete");
    }
    for revision in 1..=blobs {
        let key = Key::new(b"blob-dir-alone").expect("key");
        block_on(data.blobs().delete(BlobId {
            key,
            revision: Revision(revision),
        }))
        .expect("delete blob");
    }
    let _ = std::fs::remove_dir_all(&raw_dir);
    let mib = LARGE as f64 / (1 << 20) as f64;
    let [cairn, blob, raw] = [cairn_s, blob_s, raw_s].map(|secs| mib / median(secs.clone()));
    // Throughput ratios per round: raw time over the contender's.
    let (ratio, blob_ratio) = (ratio_median(raw_s, cairn_s), ratio_median(raw_s, blob_s));
    rows.push(Row {
        name: "large put 8 MiB",
        unit: "MiB/s",
        cairn,
        baseline: raw,
        ratio,
        target: "≥ 0.90",
        met: ratio >= 0.9,
    });
    rows.push(Row {
        name: "  its blob write alone",
        unit: "MiB/s",
        cairn: blob,
        baseline: raw,
        ratio: blob_ratio,
        target: "",
        met: true,
    });
    large_tokio(root, &large, rows, notes);
}

/// Large puts and gets from tokio tasks on a 2-worker runtime, on a store of its own, against
/// the same raw write and a raw read (64 KiB per `read`, as cairn's body reads): what a put or a
/// get costs where the blob directory's file work has to leave the executor's workers.
fn large_tokio(root: &Path, large: &Bytes, rows: &mut Vec<Row>, notes: &mut Vec<String>) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let data = rt
        .block_on(Embedded::open(
            &root.join("cairn-tokio-large"),
            EmbeddedOptions::default(),
            Tokio(rt.handle().clone()),
        ))
        .expect("open the data directory");
    let store = data.store();
    let raw_dir = root.join("raw-blobs-tokio");
    for sub in ["tmp", "blobs/00"] {
        std::fs::create_dir_all(raw_dir.join(sub)).expect("raw blob dir");
    }
    let timed = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    // On a worker, as a server's request handler would run it.
    let on_worker = |store: &EmbeddedStore<Tokio>, key: String, put: bool| {
        let (store, large) = (store.clone(), large.clone());
        rt.block_on(async move {
            tokio::spawn(async move {
                if put {
                    store
                        .put(&key, large, &PutOptions::default())
                        .await
                        .expect("large put");
                } else {
                    let object = store.get(&key).await.expect("get").expect("present");
                    let mut body = object.body;
                    let mut len = 0;
                    while let Some(chunk) = futures_lite::StreamExt::next(&mut body).await {
                        len += chunk.expect("chunk").len();
                    }
                    assert_eq!(len, LARGE);
                }
            })
            .await
            .expect("task");
        });
    };
    let (mut puts, mut raws) = (0, 0);
    let put_samples = rotated(
        LARGE_ROUNDS,
        &mut [
            &mut || {
                puts += 1;
                let key = format!("large/{puts}");
                timed(&mut || on_worker(store, key.clone(), true))
            },
            &mut || {
                raws += 1;
                timed(&mut || raw_blob(&raw_dir, &format!("large-{raws}"), large))
            },
        ],
    );
    let raw_path = raw_dir.join("blobs").join("00").join("large-1");
    let mut buf = vec![0u8; 64 << 10];
    let get_samples = rotated(
        LARGE_ROUNDS * 4,
        &mut [
            &mut || timed(&mut || on_worker(store, "large/1".into(), false)),
            &mut || {
                timed(&mut || {
                    let mut file = File::open(&raw_path).expect("raw open");
                    let mut len = 0;
                    loop {
                        let n = std::io::Read::read(&mut file, &mut buf).expect("raw read");
                        if n == 0 {
                            break;
                        }
                        len += n;
                        black_box(Bytes::copy_from_slice(&buf[..n]));
                    }
                    assert_eq!(len, LARGE);
                })
            },
        ],
    );
    for i in 1..=puts {
        rt.block_on(store.delete(format!("large/{i}")))
            .expect("delete");
    }
    drop(data);
    let _ = std::fs::remove_dir_all(&raw_dir);
    let mib = LARGE as f64 / (1 << 20) as f64;
    let ms = |secs: f64| secs * 1e3;
    for (name, samples) in [
        ("large put 8 MiB, tokio", put_samples),
        ("large get 8 MiB, tokio", get_samples),
    ] {
        let [cairn_s, raw_s] = [&samples[0], &samples[1]];
        notes.push(format!(
            "{name}: median ms: cairn {:.2}, raw {:.2}",
            ms(median(cairn_s.clone())),
            ms(median(raw_s.clone()))
        ));
        rows.push(Row {
            name,
            unit: "MiB/s",
            cairn: mib / median(cairn_s.clone()),
            baseline: mib / median(raw_s.clone()),
            ratio: ratio_median(raw_s, cairn_s),
            target: "",
            met: true,
        });
    }
}

/// A field of `/proc/self/status`, in KiB.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn memory(data: &Embedded<InlineRuntime>, notes: &mut Vec<String>) {
    let store = data.store();
    // Resets VmHWM to the current VmRSS (Linux ≥ 4.0), so it covers this put alone.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before_kib = status_kib("VmRSS");
    let peak = AtomicU64::new(before_kib);
    let done = AtomicBool::new(false);
    let chunks = HUGE / CHUNK as u64;
    let body = Body::from_stream(futures_lite::stream::iter((0..chunks).map(|i| {
        let fill = (i % 251) as u8;
        Ok(Bytes::from(vec![fill; CHUNK]))
    })));
    let secs = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(status_kib("VmRSS"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let start = Instant::now();
        block_on(store.put_stream("huge", body, &PutOptions::default())).expect("1 GiB put");
        let secs = start.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        secs
    });
    let hwm_kib = if reset { status_kib("VmHWM") } else { 0 };
    let info = block_on(store.head("huge")).expect("head").expect("stored");
    assert_eq!(info.meta.size, HUGE);
    block_on(store.delete("huge")).expect("delete the 1 GiB object");
    let peak_kib = peak.load(Ordering::Relaxed);
    let growth_kib = peak_kib.max(hwm_kib).saturating_sub(before_kib);
    let mib = |kib: u64| kib as f64 / 1024.0;
    notes.push(format!(
        "1 GiB put_stream in {} KiB chunks: {:.0} MiB/s; resident memory {:.1} MiB before, peak \
         {:.1} MiB sampled (VmHWM {:.1} MiB): growth {:.1} MiB; bound: the 1 MiB inline threshold \
         + a few chunks, far below 1 GiB: {}",
        CHUNK >> 10,
        (HUGE >> 20) as f64 / secs,
        mib(before_kib),
        mib(peak_kib),
        mib(hwm_kib),
        mib(growth_kib),
        if growth_kib < 8 << 10 {
            "met"
        } else {
            "MISSED"
        }
    ));
}

/// Puts per second of `writers` threads each doing `puts` durable 1 KiB puts on `store`, timed
/// from the moment all of them are ready to the moment the last one is done.
fn rate(store: &Store, writers: usize, puts: usize) -> f64 {
    let payload = Bytes::from(vec![3u8; SMALL]);
    let opts = PutOptions::default();
    let barrier = Barrier::new(writers + 1);
    let start = std::thread::scope(|s| {
        for w in 0..writers {
            let (barrier, payload, opts) = (&barrier, &payload, &opts);
            s.spawn(move || {
                let keys: Vec<String> = (0..puts)
                    .map(|i| format!("concurrent/{writers}/{w:02}/{i:04}"))
                    .collect();
                barrier.wait();
                for key in &keys {
                    block_on(store.put(key, payload.clone(), opts)).expect("put");
                }
            });
        }
        barrier.wait();
        Instant::now()
    }); // every writer has joined here
    (writers * puts) as f64 / start.elapsed().as_secs_f64()
}

/// cairn's [`Runtime`] on a tokio runtime, as the crate's own `TokioRuntime` (behind its `tokio`
/// feature, off by default) does it.
#[derive(Clone)]
struct Tokio(tokio::runtime::Handle);

impl Runtime for Tokio {
    fn spawn(&self, task: Task) {
        drop(self.0.spawn(task));
    }
    fn sleep(&self, duration: Duration) -> Task {
        Box::pin(tokio::time::sleep(duration))
    }
    fn unblock(&self, job: BlockingJob) {
        drop(self.0.spawn_blocking(job));
    }
}

/// Puts per second of `writers` tokio tasks each doing `puts` durable 1 KiB puts on `store`.
fn rate_tokio(
    rt: &tokio::runtime::Runtime,
    store: &EmbeddedStore<Tokio>,
    writers: usize,
    puts: usize,
) -> f64 {
    let payload = Bytes::from(vec![3u8; SMALL]);
    let secs = rt.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let keys: Vec<String> = (0..puts)
                    .map(|i| format!("concurrent/{writers}/{w:02}/{i:04}"))
                    .collect();
                (keys, store.clone(), payload.clone())
            })
            .collect();
        let start = Instant::now();
        let tasks: Vec<_> = tasks
            .into_iter()
            .map(|(keys, store, payload)| {
                tokio::spawn(async move {
                    let opts = PutOptions::default();
                    for key in &keys {
                        store.put(key, payload.clone(), &opts).await.expect("put");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("writer task");
        }
        start.elapsed().as_secs_f64()
    });
    (writers * puts) as f64 / secs
}

/// What this machine charges for waking parked threads, with no storage involved: `n` threads
/// park, this one sleeps for a while (as the writer does in an fsync, so that idle processors
/// go to sleep too), then unparks every one of them in turn and polls until all `n` have run
/// again. The median over `rounds`, in µs. With 16 it is the floor under a group commit's
/// cycle that no writer design on this side of the kernel removes: 16 callers blocked on one
/// commit must each be woken before they can send their next put.
fn wake_floor(n: usize, rounds: usize) -> f64 {
    let arrived = AtomicUsize::new(0);
    let go: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
    let wait_for = |count: usize| {
        while arrived.load(Ordering::Acquire) < count {
            std::thread::yield_now();
        }
    };
    std::thread::scope(|s| {
        let threads: Vec<_> = go
            .iter()
            .map(|go| {
                let arrived = &arrived;
                s.spawn(move || {
                    // Round 0 is the start; `usize::MAX` is the end.
                    for round in 1.. {
                        arrived.fetch_add(1, Ordering::Release);
                        let mut seen = go.load(Ordering::Acquire);
                        while seen < round {
                            std::thread::park();
                            seen = go.load(Ordering::Acquire);
                        }
                        if seen == usize::MAX {
                            break;
                        }
                    }
                })
            })
            .collect();
        let mut samples = Vec::with_capacity(rounds);
        for round in 1..=rounds {
            wait_for(n * round);
            std::thread::sleep(Duration::from_micros(200));
            let start = Instant::now();
            for (go, thread) in go.iter().zip(&threads) {
                go.store(round, Ordering::Release);
                thread.thread().unpark();
            }
            wait_for(n * (round + 1));
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
        wait_for(n * (rounds + 1));
        for (go, thread) in go.iter().zip(&threads) {
            go.store(usize::MAX, Ordering::Release);
            thread.thread().unpark();
        }
        median(samples)
    })
}

fn concurrent(
    data: &Embedded<InlineRuntime>,
    root: &Path,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    notes.push(format!(
        "concurrent: waking parked threads until each has run (no storage): 16 threads {:.0} µs, \
         1 thread {:.0} µs (medians)",
        wake_floor(WRITERS, 300),
        wake_floor(1, 300)
    ));
    group_commit(
        "16 writers vs 1, threads",
        data.db(),
        |writers, puts| rate(data.store(), writers, puts),
        rows,
        notes,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let handle = rt.handle().clone();
    let tokio_data = rt
        .block_on(Embedded::open(
            &root.join("cairn-tokio"),
            EmbeddedOptions::default(),
            Tokio(handle),
        ))
        .expect("open the data directory");
    notes.push(format!(
        "concurrent, tokio: disk before: {}",
        fsync_probe(root)
    ));
    group_commit(
        "16 writers vs 1, tokio tasks",
        tokio_data.db(),
        |writers, puts| rate_tokio(&rt, tokio_data.store(), writers, puts),
        rows,
        notes,
    );
    drop(tokio_data);
}

/// 16 concurrent writers against one, alternately, with what the writer thread saw.
fn group_commit(
    name: &'static str,
    db: &SqliteDb,
    rate: impl FnMut(usize, usize) -> f64,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    let (mut lone_stats, mut many_stats) = ((0, 0), (0, 0));
    let mut largest = 0;
    // Both sides call `rate`, one at a time.
    let rate = std::cell::RefCell::new(rate);
    let (many, lone, ratio) = paired(
        CONCURRENT_ROUNDS,
        || {
            let before = db.writer_stats();
            let r = (rate.borrow_mut())(WRITERS, PUTS_PER_WRITER);
            let after = db.writer_stats();
            let (c, w) = stats_delta(after, before);
            many_stats = (many_stats.0 + c, many_stats.1 + w);
            largest = after.largest_batch;
            r
        },
        || {
            let before = db.writer_stats();
            let r = (rate.borrow_mut())(1, LONE_PUTS);
            let (c, w) = stats_delta(db.writer_stats(), before);
            lone_stats = (lone_stats.0 + c, lone_stats.1 + w);
            r
        },
    );
    rows.push(Row {
        name,
        unit: "puts/s",
        cairn: many,
        baseline: lone,
        ratio,
        target: "≥ 10",
        met: ratio >= 10.0,
    });
    notes.push(format!(
        "{name}: writer_stats: {WRITERS} writers: {} puts in {} commits = {:.1} writes per \
         commit (largest batch {largest}); 1 writer: {} puts in {} commits = {:.2} per commit",
        many_stats.1,
        many_stats.0,
        many_stats.1 as f64 / many_stats.0 as f64,
        lone_stats.1,
        lone_stats.0,
        lone_stats.1 as f64 / lone_stats.0 as f64
    ));
}
