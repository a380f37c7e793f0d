//! Large-put throughput of the blob directory, side by side with the raw file-system work it
//! cannot avoid, in one run on the same disk:
//!
//! - **raw**: create a temp file, write the 8 MiB in one call, `fdatasync`, rename, `fsync` the
//!   directory (the durable minimum; without the last step a crash may lose the rename);
//! - **blobdir, 1 chunk** and **blobdir, 64 KiB chunks**: `BlobDir::put` of the same bytes as one
//!   chunk and as a stream of 64 KiB chunks;
//! - **store**: a whole large put through `BlockingStore` (in-memory HV and log, BlobDir LT).
//!
//! Each round runs every variant, in an order that rotates from round to round, so that drift in
//! the disk's speed and the journal's state hits all of them alike;
//! medians are printed with each variant's share of raw throughput. `--rss` also streams 1 GiB
//! and reports the process's peak resident memory before and after.
//!
//! ```text
//! cargo run --release -p cairn-adapters --example blobdir_throughput [-- --dir PATH] [--rss]
//! ```

use bytes::Bytes;
use cairn_adapters::backend::LtBackend;
use cairn_adapters::blobdir::{BlobDir, BlobDirOptions};
use cairn_adapters::memory::{MemoryHv, MemoryLog};
use cairn_adapters::{BlockingStore, Body, Metadata, PutOptions};
use cairn_core::{BlobId, Key, Revision};
use futures_lite::future::block_on;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const SIZE: usize = 8 * MIB;
const CHUNK: usize = 64 * 1024;
const ROUNDS: usize = 50;

fn raw_put(dir: &Path, i: usize, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(format!("raw-{i}.partial"));
    let mut f = File::create(&temp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&temp, dir.join(format!("raw-{i}")))?;
    File::open(dir)?.sync_all()
}

fn chunks(bytes: &Bytes) -> Body {
    Body::from_chunks(
        (0..bytes.len())
            .step_by(CHUNK)
            .map(|at| bytes.slice(at..(at + CHUNK).min(bytes.len())))
            .collect(),
    )
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn mib_per_s(d: Duration) -> f64 {
    SIZE as f64 / MIB as f64 / d.as_secs_f64()
}

/// Peak resident set of this process so far, in KiB (Linux; 0 elsewhere).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let base = match args.iter().position(|a| a == "--dir") {
        Some(i) => PathBuf::from(&args[i + 1]),
        None => std::env::temp_dir(),
    };
    let work = base.join(format!("cairn-blobdir-bench-{}", std::process::id()));
    let raw_dir = work.join("raw");
    std::fs::create_dir_all(&raw_dir)?;
    let dir = BlobDir::open(&work.join("lt"), BlobDirOptions::default())?;
    let store = BlockingStore::new(MemoryHv::new(), dir.clone(), MemoryLog::new());
    let bytes = Bytes::from((0..SIZE).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
    let key = Key::new(b"bench/large").expect("a valid key");
    let meta = Metadata::default();

    let mut samples: [Vec<Duration>; 4] = Default::default();
    for round in 0..=ROUNDS {
        let blob = |n: usize| BlobId {
            key,
            revision: Revision((round * 4 + n) as u128),
        };
        let store_key = format!("bench/store-{round}");
        let mut timings = [Duration::ZERO; 4];
        // Rotate the order so that no variant always follows the same one.
        for v in (0..4).map(|v| (v + round) % 4) {
            timings[v] = match v {
                0 => time(|| raw_put(&raw_dir, round, &bytes))?,
                1 => time(|| block_on(dir.put(blob(1), &meta, Body::from_bytes(bytes.clone()))))?,
                2 => time(|| block_on(dir.put(blob(2), &meta, chunks(&bytes))))?,
                _ => time(|| store.put(&store_key, bytes.clone(), &PutOptions::default()))?,
            };
        }
        // Clean up outside the timed part, keeping the disk's state alike across rounds.
        std::fs::remove_file(raw_dir.join(format!("raw-{round}")))?;
        block_on(dir.delete(blob(1)))?;
        block_on(dir.delete(blob(2)))?;
        store.delete(&store_key)?;
        if round > 0 {
            // Round 0 warms caches and allocators up.
            for (s, t) in samples.iter_mut().zip(timings) {
                s.push(t);
            }
        }
    }
    let names = [
        "raw temp+write+fdatasync+rename+dir fsync",
        "BlobDir::put, one 8 MiB chunk",
        "BlobDir::put, 64 KiB chunks",
        "BlockingStore::put (memory HV, BlobDir LT)",
    ];
    let raw = median(samples[0].clone());
    println!(
        "8 MiB durable put, median of {ROUNDS} rounds, in {}",
        work.display()
    );
    for (name, s) in names.iter().zip(samples) {
        let m = median(s);
        println!(
            "  {name:<44} {:>8.2} ms {:>8.1} MiB/s {:>6.1} % of raw",
            m.as_secs_f64() * 1e3,
            mib_per_s(m),
            100.0 * raw.as_secs_f64() / m.as_secs_f64()
        );
    }

    if args.iter().any(|a| a == "--rss") {
        let before = peak_rss_kib();
        let gib = (1u64 << 30) as usize;
        let mut pos = 0;
        let body = Body::from_stream(futures_lite::stream::iter(std::iter::from_fn(move || {
            (pos < gib).then(|| {
                pos += CHUNK;
                Ok(Bytes::from(vec![(pos / CHUNK) as u8; CHUNK]))
            })
        })));
        let started = Instant::now();
        let big = BlobId {
            key,
            revision: Revision(u128::MAX),
        };
        block_on(dir.put(big, &meta, body))?;
        let took = started.elapsed();
        println!(
            "1 GiB streamed put in {took:.2?}: peak RSS {} MiB before, {} MiB after",
            before / 1024,
            peak_rss_kib() / 1024
        );
        block_on(dir.delete(big))?;
    }
    drop(store);
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

fn time<T, E>(f: impl FnOnce() -> Result<T, E>) -> Result<Duration, E> {
    let started = Instant::now();
    f()?;
    Ok(started.elapsed())
}
