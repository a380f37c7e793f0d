//! The simulator's throughput on the default profile: 8 clients, 200 operations per seed, keys
//! and fault rates drawn per seed, every check on. One thread, so seeds per second of wall time
//! are seeds per CPU-second (the CPU time is reported too, where the platform tells).
//!
//! ```text
//! cargo bench -p cairn-sim                      # 5,000 seeds
//! cargo bench -p cairn-sim -- 20000             # more
//! ```
//!
//! Target (issue 3): at least 2,000 seeds per CPU-second.

use cairn_sim::params::Options;
use cairn_sim::runner::cpu_time;
use cairn_sim::sim::{run, TapeSource};
use cairn_sim::trace::Sink;
use std::time::Instant;

fn main() {
    // `cargo bench` passes `--bench`; the first number, if any, is the seed count.
    let seeds: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5_000);
    let options = Options::default();
    // Warm up (page in the code, grow the allocator's pools).
    for seed in 0..50 {
        run(seed, &options, TapeSource::Live, Sink::Off);
    }
    let cpu_before = cpu_time();
    let started = Instant::now();
    let (mut ops, mut requests, mut failed) = (0u64, 0u64, 0u64);
    for seed in 0..seeds {
        let report = run(seed, &options, TapeSource::Live, Sink::Off);
        ops += report.stats.ops;
        requests += report.stats.requests;
        failed += u64::from(report.failure.is_some());
    }
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before).as_secs_f64())
        .filter(|&c| c > 0.0);
    println!(
        "default profile (8 clients, 200 ops/seed): {seeds} seeds, {ops} operations, {requests} requests, {failed} failed"
    );
    println!(
        "wall {wall:.2}s: {:.0} seeds/s, {:.0} simulated ops/s",
        seeds as f64 / wall,
        ops as f64 / wall
    );
    if let Some(cpu) = cpu {
        println!(
            "cpu  {cpu:.2}s: {:.0} seeds per CPU-second (target 2000), {:.0} simulated ops per CPU-second",
            seeds as f64 / cpu,
            ops as f64 / cpu
        );
    }
    assert_eq!(failed, 0, "the benchmark runs healthy seeds");
}
