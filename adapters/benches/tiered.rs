//! Tiered store over the in-memory tiers, side by side with a raw hashbrown map measured in the
//! same run. Prints medians and ratios; `--count put|get N` runs exactly N operations for
//! instruction counting under callgrind (see `scripts/instructions.sh`).
//!
//! ```text
//! cargo bench -p cairn-adapters --bench tiered
//! ```

use bytes::Bytes;
use cairn_adapters::memory::{MemoryHv, MemoryLog, MemoryLt};
use cairn_adapters::{BlockingStore, PutOptions};
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
const ROUNDS: usize = 15;

type Store = BlockingStore<MemoryHv, MemoryLt, MemoryLog>;

fn store() -> Store {
    BlockingStore::new(MemoryHv::new(), MemoryLt::new(), MemoryLog::new())
}

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("bench/object-{i:06}")).collect()
}

/// Median nanoseconds per operation over `ROUNDS` rounds of `KEYS` operations.
fn median_ns(mut round: impl FnMut()) -> f64 {
    round(); // warm up
    let mut samples: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            round();
            start.elapsed().as_nanos() as f64 / KEYS as f64
        })
        .collect();
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[ROUNDS / 2]
}

fn allocs_per_op(mut op: impl FnMut()) -> f64 {
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..1000 {
        op();
    }
    (ALLOCS.load(Ordering::Relaxed) - before) as f64 / 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--count") {
        let what = args[i + 1].as_str();
        let n: usize = args[i + 2].parse().expect("--count put|get N");
        return count(what, n);
    }
    let keys = keys();
    let payload = Bytes::from(vec![7u8; SMALL]);
    let opts = PutOptions::default();

    // Baseline: a raw hashbrown map from key bytes to payload, as close to the in-memory tier's
    // own work as possible without any protocol.
    let mut raw: hashbrown::HashMap<Vec<u8>, Bytes> = hashbrown::HashMap::new();
    let raw_put = median_ns(|| {
        for k in &keys {
            raw.insert(k.as_bytes().to_vec(), payload.clone());
        }
    });
    let raw_get = median_ns(|| {
        for k in &keys {
            black_box(raw.get(k.as_bytes()).cloned());
        }
    });

    let s = store();
    let put = median_ns(|| {
        for k in &keys {
            s.put(k, payload.clone(), &opts).expect("put");
        }
    });
    let get = median_ns(|| {
        for k in &keys {
            black_box(s.get(k).expect("get").expect("present"));
        }
    });
    let put_allocs = allocs_per_op(|| {
        s.put(&keys[0], payload.clone(), &opts).expect("put");
    });
    let get_allocs = allocs_per_op(|| {
        black_box(s.get(&keys[0]).expect("get"));
    });

    let large = Bytes::from(vec![9u8; 8 << 20]);
    let large_store = store();
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

    println!("tiered store over in-memory tiers, {KEYS} keys, {SMALL} B objects, median of {ROUNDS} rounds");
    println!(
        "{:<28}{:>12}{:>12}{:>10}{:>14}",
        "operation", "ns/op", "baseline", "ratio", "allocs/op"
    );
    println!(
        "{:<28}{:>12.0}{:>12.0}{:>10.2}{:>14.1}",
        "small put (1 KiB)",
        put,
        raw_put,
        put / raw_put,
        put_allocs
    );
    println!(
        "{:<28}{:>12.0}{:>12.0}{:>10.2}{:>14.1}",
        "small get (1 KiB)",
        get,
        raw_get,
        get / raw_get,
        get_allocs
    );
    println!(
        "{:<28}{:>12.0}{:>12}{:>10}",
        "large put (8 MiB), MiB/s",
        large_mibs,
        format!("{copy:.0}"),
        format!("{:.2}", large_mibs / copy)
    );
    println!("baselines: hashbrown insert / get of the same keys and payload; for the large put, one memcpy of 8 MiB");
}

/// Exactly `n` operations of one kind after a fixed setup, so that two callgrind runs with
/// different `n` give instructions per operation by difference.
fn count(what: &str, n: usize) {
    let keys = keys();
    let payload = Bytes::from(vec![7u8; SMALL]);
    let opts = PutOptions::default();
    let s = store();
    for k in &keys {
        s.put(k, payload.clone(), &opts).expect("put");
    }
    let mut raw: hashbrown::HashMap<Vec<u8>, Bytes> = hashbrown::HashMap::new();
    for k in &keys {
        raw.insert(k.as_bytes().to_vec(), payload.clone());
    }
    match what {
        "raw-put" => (0..n).for_each(|i| {
            raw.insert(keys[i % KEYS].as_bytes().to_vec(), payload.clone());
        }),
        "raw-get" => (0..n).for_each(|i| {
            black_box(raw.get(keys[i % KEYS].as_bytes()).cloned());
        }),
        "put" => (0..n).for_each(|i| {
            s.put(&keys[i % KEYS], payload.clone(), &opts).expect("put");
        }),
        "get" => (0..n).for_each(|i| {
            black_box(s.get(&keys[i % KEYS]).expect("get"));
        }),
        other => panic!("unknown --count target {other}"),
    }
}
