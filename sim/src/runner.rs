//! Runs a range of seeds on all cores and adds up what they did. The total does not depend on
//! the number of threads: seeds are independent, counters are sums, failures are sorted by seed.

use crate::params::{Options, Params};
use crate::sim::{run, Failure, TapeSource};
use crate::stats::Stats;
use crate::trace::Sink;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Seeds a worker claims at a time: small enough to balance, large enough to keep the shared
/// counter cold.
const BATCH: u64 = 8;
/// Failures kept in a summary (the rest are counted).
pub const MAX_FAILURES_KEPT: usize = 20;

/// One failing seed.
#[derive(Clone, Debug)]
pub struct Failed {
    /// The seed.
    pub seed: u64,
    /// What the seed drew (fault rates and settings).
    pub params: Params,
    /// What broke.
    pub failure: Failure,
}

/// What a range of seeds did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Totals and coverage.
    pub stats: Stats,
    /// The first failing seeds, in seed order.
    pub failures: Vec<Failed>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Progress while seeds run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Seeds finished.
    pub done: u64,
    /// Seeds in the range.
    pub total: u64,
    /// Seeds failed so far.
    pub failed: u64,
    /// Wall time so far.
    pub elapsed: Duration,
}

/// Runs every seed in `seeds` on `jobs` threads, calling `progress` about once a second (wall
/// time is used for this display only; it never influences a run).
pub fn run_seeds(
    seeds: Range<u64>,
    options: &Options,
    jobs: usize,
    mut progress: impl FnMut(Progress),
) -> Summary {
    let started = Instant::now();
    let total = seeds.end.saturating_sub(seeds.start);
    // Batches are claimed by number, not by first seed: a shared next seed would wrap past
    // `u64::MAX` near the end of the range and hand out seeds from its start again.
    let next_batch = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let working = AtomicUsize::new(jobs.max(1));
    let merged = Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                // Counted down however the worker ends, so that a panic in one cannot leave
                // the progress loop below waiting for seeds nobody will run.
                let _working = Leaving(&working);
                let mut local = Summary::default();
                loop {
                    let batch = next_batch.fetch_add(1, Ordering::Relaxed);
                    let from = batch
                        .checked_mul(BATCH)
                        .and_then(|offset| seeds.start.checked_add(offset))
                        .filter(|&from| from < seeds.end);
                    let Some(from) = from else { break };
                    for seed in from..from.saturating_add(BATCH).min(seeds.end) {
                        let report = run(seed, options, TapeSource::Live, Sink::Off);
                        local.stats.merge(&report.stats);
                        if let Some(failure) = report.failure {
                            failed.fetch_add(1, Ordering::Relaxed);
                            local.failures.push(Failed {
                                seed,
                                params: report.params,
                                failure,
                            });
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let mut merged = merged.lock().expect("no worker panics while holding it");
                merged.stats.merge(&local.stats);
                merged.failures.append(&mut local.failures);
            });
        }
        let mut last = Instant::now();
        while done.load(Ordering::Relaxed) < total && working.load(Ordering::Relaxed) > 0 {
            std::thread::sleep(Duration::from_millis(50));
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                progress(Progress {
                    done: done.load(Ordering::Relaxed),
                    total,
                    failed: failed.load(Ordering::Relaxed),
                    elapsed: started.elapsed(),
                });
            }
        }
    });
    let mut summary = merged.into_inner().expect("workers finished");
    summary.failures.sort_by_key(|f| f.seed);
    summary.failures.truncate(MAX_FAILURES_KEPT);
    summary.elapsed = started.elapsed();
    summary
}

/// Counts a worker out when it ends, by return or by panic.
struct Leaving<'a>(&'a AtomicUsize);

impl Drop for Leaving<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The command that replays `seed` with `options`.
pub fn replay_command(seed: u64, options: &Options) -> String {
    format!(
        "cargo run --release -p cairn-sim -- replay --seed {seed} {}",
        options.flags()
    )
}

/// CPU time used by this process so far, where the platform tells (Linux); for reports only.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may contain spaces) start after its `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In USER_HZ, which is 100 on every mainstream Linux configuration.
    Some(Duration::from_millis(ticks * 10))
}

/// Threads to use by default: every core.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_do_not_depend_on_the_number_of_threads() {
        let options = Options {
            ops: 40,
            ..Options::default()
        };
        let one = run_seeds(0..24, &options, 1, |_| {});
        let four = run_seeds(0..24, &options, 4, |_| {});
        assert_eq!(one.stats, four.stats);
        assert_eq!(one.stats.seeds, 24);
    }

    #[test]
    fn seeds_at_the_end_of_the_range_of_u64_run_once_each() {
        let options = Options {
            ops: 20,
            ..Options::default()
        };
        let last = u64::MAX - 3..u64::MAX;
        for jobs in [1, 3, 8] {
            let summary = run_seeds(last.clone(), &options, jobs, |_| {});
            assert_eq!(summary.stats.seeds, 3, "{jobs} threads");
        }
    }
}
