//! Tiered store over the in-memory tiers, side by side with a raw hashbrown map measured in the
//! same run. Prints medians and ratios; `--count OP N` runs exactly N operations of one kind for
//! instruction counting under callgrind (see `scripts/instructions.sh`).
//!
//! ```text
//! cargo bench -p cairn-adapters --bench tiered
//! ```
//!
//! Each operation is timed in short rounds of [`ROUND`] calls, alternating between the store and
//! its baseline, and the median round counts. A short round fits inside one scheduler time slice,
//! so on a busy machine the median still measures undisturbed work, and alternating gives both
//! sides the same share of whatever disturbance remains.

use bytes::Bytes;
use cairn_adapters::backend::{Row, SyncHvBackend};
use cairn_adapters::memory::{MemoryHv, MemoryLog, MemoryLt};
use cairn_adapters::{BlockingStore, Body, Clock, CoarseClock, Location, Object, PutOptions};
use cairn_core::Key;
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const KEYS: usize = 10_000;
const SMALL: usize = 1024;
/// Calls per timed round.
const ROUND: usize = 1_000;
/// Timed rounds per side and operation (odd, for a true median).
const ROUNDS: usize = 301;

type Store = BlockingStore<MemoryHv, MemoryLt, MemoryLog>;
type Raw = hashbrown::HashMap<Vec<u8>, Bytes>;

/// The operations measured: the store's, and the raw map's beside them.
#[derive(Clone, Copy, Debug)]
enum Op {
    Put,
    Get,
    RawPut,
    RawPutInPlace,
    RawGet,
    /// What any get must do, without the core's machine and the driver: validate the key, read
    /// the clock, read the in-memory tier, build the object.
    EssentialGet,
}

impl Op {
    fn parse(name: &str) -> Op {
        match name {
            "put" => Op::Put,
            "get" => Op::Get,
            "raw-put" => Op::RawPut,
            "raw-put-in-place" => Op::RawPutInPlace,
            "raw-get" => Op::RawGet,
            "essential-get" => Op::EssentialGet,
            other => panic!("unknown operation {other}"),
        }
    }
}

/// The state every measured operation runs against: the store and the raw map, both holding all
/// keys already, so that every put overwrites and every get hits.
struct Bench {
    keys: Vec<String>,
    payload: Bytes,
    opts: PutOptions,
    store: Store,
    raw: Raw,
}

impl Bench {
    fn new() -> Bench {
        let keys: Vec<String> = (0..KEYS).map(|i| format!("bench/object-{i:06}")).collect();
        let payload = Bytes::from(vec![7u8; SMALL]);
        let opts = PutOptions::default();
        let store = BlockingStore::new(MemoryHv::new(), MemoryLt::new(), MemoryLog::new());
        let mut raw = Raw::new();
        for k in &keys {
            store.put(k, payload.clone(), &opts).expect("put");
            raw.insert(k.as_bytes().to_vec(), payload.clone());
        }
        Bench {
            keys,
            payload,
            opts,
            store,
            raw,
        }
    }

    /// Runs operation `op` on key number `i` (modulo the key count).
    fn run(&mut self, op: Op, i: usize) {
        let key = &self.keys[i % KEYS];
        match op {
            Op::Put => {
                let done = self.store.put(key, self.payload.clone(), &self.opts);
                black_box(done.expect("put"));
            }
            Op::Get => {
                black_box(self.store.get(key).expect("get").expect("present"));
            }
            // What a straightforward hashbrown user writes to insert or overwrite: an owned key
            // per call, dropped again when the key is already there.
            Op::RawPut => {
                black_box(
                    self.raw
                        .insert(key.as_bytes().to_vec(), self.payload.clone()),
                );
            }
            // The tightest overwrite hashbrown offers: no key allocation when the key exists.
            Op::RawPutInPlace => {
                let slot = self.raw.entry_ref(key.as_bytes());
                black_box(slot.insert(self.payload.clone()));
            }
            Op::RawGet => {
                black_box(self.raw.get(key.as_bytes()).cloned().expect("present"));
            }
            Op::EssentialGet => {
                let key = Key::new(key.as_bytes()).expect("valid");
                let now = CoarseClock.now();
                let hv = self.store.inner().hv();
                let Ok(Row::Inline {
                    meta,
                    payload: Some(payload),
                }) = SyncHvBackend::read(hv, key, true, now)
                else {
                    panic!("every key holds an inline object")
                };
                black_box(Object {
                    meta,
                    location: Location::Inline,
                    span: None,
                    body: Body::from_bytes(payload),
                });
            }
        }
    }

    /// Median nanoseconds per call of each of `ops`, timed in alternating rounds.
    fn medians<const N: usize>(&mut self, ops: [Op; N]) -> [f64; N] {
        let mut next = 0;
        let mut round = |b: &mut Bench, op: Op| {
            let start = Instant::now();
            for i in next..next + ROUND {
                b.run(op, i);
            }
            next += ROUND;
            start.elapsed().as_nanos() as f64 / ROUND as f64
        };
        for op in ops {
            for _ in 0..KEYS / ROUND {
                round(self, op); // warm up: every key once
            }
        }
        let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(ROUNDS));
        for _ in 0..ROUNDS {
            for (op, s) in ops.iter().zip(&mut samples) {
                s.push(round(self, *op));
            }
        }
        samples.map(|mut s| {
            s.sort_by(|a, b| a.total_cmp(b));
            s[ROUNDS / 2]
        })
    }

    fn allocs_per_op(&mut self, op: Op) -> f64 {
        let before = ALLOCS.load(Ordering::Relaxed);
        for i in 0..1000 {
            self.run(op, i);
        }
        (ALLOCS.load(Ordering::Relaxed) - before) as f64 / 1000.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--count") {
        let op = Op::parse(&args[i + 1]);
        let n: usize = args[i + 2].parse().expect("--count OP N");
        // Exactly `n` operations after a fixed setup, so that two callgrind runs with different
        // `n` give instructions per operation by difference.
        let mut b = Bench::new();
        return (0..n).for_each(|i| b.run(op, i));
    }
    let mut b = Bench::new();
    let [put, raw_put, raw_put_in_place] = b.medians([Op::Put, Op::RawPut, Op::RawPutInPlace]);
    let [get, raw_get, essential_get] = b.medians([Op::Get, Op::RawGet, Op::EssentialGet]);
    let put_allocs = b.allocs_per_op(Op::Put);
    let get_allocs = b.allocs_per_op(Op::Get);

    let opts = PutOptions::default();
    let large = Bytes::from(vec![9u8; 8 << 20]);
    let large_store = BlockingStore::new(MemoryHv::new(), MemoryLt::new(), MemoryLog::new());
    let mut samples: Vec<f64> = (0..9)
        .map(|i| {
            let start = Instant::now();
            large_store
                .put(format!("large-{}", i % 3), large.clone(), &opts)
                .expect("large put");
            start.elapsed().as_secs_f64()
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    let large_mibs = 8.0 / samples[samples.len() / 2];
    let copy = {
        let mut s: Vec<f64> = (0..9)
            .map(|_| {
                let start = Instant::now();
                black_box(large.to_vec());
                start.elapsed().as_secs_f64()
            })
            .collect();
        s.sort_by(|a, b| a.total_cmp(b));
        8.0 / s[s.len() / 2]
    };

    println!(
        "tiered store over in-memory tiers, {KEYS} keys, {SMALL} B objects, \
         median of {ROUNDS} rounds of {ROUND} calls"
    );
    println!(
        "{:<28}{:>12}{:>12}{:>10}{:>14}",
        "operation", "ns/op", "baseline", "ratio", "allocs/op"
    );
    let row = |name: &str, ours: f64, base: f64, allocs: &str| {
        println!(
            "{name:<28}{ours:>12.0}{base:>12.0}{:>10.2}{allocs:>14}",
            ours / base
        )
    };
    row(
        "small put (1 KiB)",
        put,
        raw_put,
        &format!("{put_allocs:.1}"),
    );
    row("  vs in-place overwrite", put, raw_put_in_place, "");
    row(
        "small get (1 KiB)",
        get,
        raw_get,
        &format!("{get_allocs:.1}"),
    );
    row("  essential work alone", essential_get, raw_get, "");
    println!(
        "{:<28}{:>12.0}{:>12}{:>10}",
        "large put (8 MiB), MiB/s",
        large_mibs,
        format!("{copy:.0}"),
        format!("{:.2}", large_mibs / copy)
    );
    println!("baselines: a hashbrown map from key bytes to the same payload, the same keys in the same order:");
    println!(
        "  put: map.insert(key.to_vec(), payload), what a straightforward user writes to insert or"
    );
    println!("       overwrite (it allocates a key that is dropped again when the key is already there);");
    println!(
        "  in-place overwrite: map.entry_ref(key).insert(payload), no key allocation on overwrite,"
    );
    println!("       shown for reference (the store allocates none either);");
    println!("  get: map.get(key).cloned(); large put: one memcpy of 8 MiB;");
    println!("  essential work alone: what any get must do, without the core's machine and the");
    println!(
        "       driver: key check, clock read, MemoryHv::read, the Object built (diagnostic)."
    );
}
