//! Shrinking a failing seed: record every decision the run makes ([`crate::tape`]), then cut
//! and simplify the recording while the run still fails the same checker (delta debugging).
//!
//! Because a zero decision is always the simplest choice and an exhausted recording plays
//! zeroes, every edit is a valid run: fewer operations, fewer clients, a shorter recording,
//! chunks of decisions deleted, single decisions zeroed (no fault, first key, shortest latency)
//! or halved. What is left is a short run whose every remaining fault and choice matters.

use crate::params::Options;
use crate::sim::{run, Failure, RunReport, TapeSource};
use crate::tape::Draw;
use crate::trace::Sink;

/// Runs a shrink may spend before it settles for what it has.
pub const DEFAULT_BUDGET: usize = 4_000;

/// A minimal failing run.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The seed it started from (only the decisions below matter now).
    pub seed: u64,
    /// The options of the minimal run (fewer clients and operations than asked for, maybe).
    pub options: Options,
    /// The decisions of the minimal run, in order (zeroes past the end).
    pub values: Vec<u64>,
    /// The same decisions with what each was for.
    pub draws: Vec<Draw>,
    /// How it fails.
    pub failure: Failure,
    /// Decisions in the original recording.
    pub original_len: usize,
    /// Runs spent.
    pub runs: usize,
}

struct Shrinker {
    seed: u64,
    checker: &'static str,
    runs: usize,
    budget: usize,
}

impl Shrinker {
    /// Whether `options` with `values` still fails the same checker.
    fn fails(&mut self, options: &Options, values: &[u64]) -> Option<RunReport> {
        if self.runs >= self.budget {
            return None;
        }
        self.runs += 1;
        let report = run(
            self.seed,
            options,
            TapeSource::Replay(values.to_vec()),
            Sink::Off,
        );
        let same = report
            .failure
            .as_ref()
            .is_some_and(|f| f.checker() == self.checker);
        same.then_some(report)
    }
}

/// Shrinks `seed`'s failing run under `options`, spending at most `budget` runs. `None` if the
/// seed does not fail.
pub fn shrink(seed: u64, options: &Options, budget: usize) -> Option<Shrunk> {
    let first = run(seed, options, TapeSource::Record, Sink::Off);
    let failure = first.failure?;
    let mut values: Vec<u64> = first.draws.iter().map(|d| d.value).collect();
    let original_len = values.len();
    let mut s = Shrinker {
        seed,
        checker: failure.checker(),
        runs: 1,
        budget,
    };
    let mut options = *options;
    let mut last = None;
    // Each pass keeps every edit that still fails; stop when a whole round changes nothing.
    loop {
        let before = (options, values.clone());
        fewer_ops(&mut s, &mut options, &values, &mut last);
        fewer_clients(&mut s, &mut options, &values, &mut last);
        truncate(&mut s, &options, &mut values, &mut last);
        delete_chunks(&mut s, &options, &mut values, &mut last);
        simplify_values(&mut s, &options, &mut values, &mut last);
        if (options, values.clone()) == before || s.runs >= s.budget {
            break;
        }
    }
    let report = match last {
        Some(report) => report,
        None => run(
            seed,
            &options,
            TapeSource::Replay(values.clone()),
            Sink::Off,
        ),
    };
    Some(Shrunk {
        seed,
        options,
        draws: report.draws,
        failure: report.failure.unwrap_or(failure),
        values,
        original_len,
        runs: s.runs,
    })
}

fn fewer_ops(
    s: &mut Shrinker,
    options: &mut Options,
    values: &[u64],
    last: &mut Option<RunReport>,
) {
    // The fewest operations that still fail, by bisection (failing is not monotone in the
    // count, so this finds a small count, not necessarily the smallest).
    let (mut lo, mut hi) = (0, options.ops);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        let trial = Options {
            ops: mid,
            ..*options
        };
        match s.fails(&trial, values) {
            Some(report) => {
                hi = mid;
                *last = Some(report);
            }
            None => lo = mid,
        }
    }
    options.ops = hi;
}

fn fewer_clients(
    s: &mut Shrinker,
    options: &mut Options,
    values: &[u64],
    last: &mut Option<RunReport>,
) {
    // Fewer clients shift every later decision, so a count that fails is not next to the
    // original: try the smallest counts first.
    for clients in 1..options.clients {
        let trial = Options {
            clients,
            ..*options
        };
        if let Some(report) = s.fails(&trial, values) {
            *options = trial;
            *last = Some(report);
            return;
        }
    }
}

fn truncate(
    s: &mut Shrinker,
    options: &Options,
    values: &mut Vec<u64>,
    last: &mut Option<RunReport>,
) {
    let (mut lo, mut hi) = (0, values.len());
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        match s.fails(options, &values[..mid]) {
            Some(report) => {
                hi = mid;
                *last = Some(report);
            }
            None => lo = mid,
        }
    }
    values.truncate(hi);
}

fn delete_chunks(
    s: &mut Shrinker,
    options: &Options,
    values: &mut Vec<u64>,
    last: &mut Option<RunReport>,
) {
    let mut size = values.len() / 2;
    while size >= 1 {
        let mut at = 0;
        while at + size <= values.len() {
            let mut trial = values.clone();
            trial.drain(at..at + size);
            match s.fails(options, &trial) {
                Some(report) => {
                    *values = trial;
                    *last = Some(report);
                }
                None => at += size,
            }
        }
        size /= 2;
    }
}

fn simplify_values(
    s: &mut Shrinker,
    options: &Options,
    values: &mut [u64],
    last: &mut Option<RunReport>,
) {
    for i in 0..values.len() {
        let original = values[i];
        for candidate in [0, original / 2, original / 4 * 3] {
            if candidate >= values[i] {
                continue;
            }
            let keep = values[i];
            values[i] = candidate;
            match s.fails(options, values) {
                Some(report) => *last = Some(report),
                None => values[i] = keep,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bugs::Bug;
    use cairn_core::PlantedBug;

    #[test]
    fn a_failing_seed_shrinks_to_a_shorter_run_that_fails_the_same_way() {
        let options = Options {
            bug: Some(Bug::Core(PlantedBug::OldBlobDeletedBeforeCommit)),
            ..Options::default()
        };
        let seed = (0..50)
            .find(|&seed| {
                run(seed, &options, TapeSource::Live, Sink::Off)
                    .failure
                    .is_some()
            })
            .expect("the bug is caught within 50 seeds");
        let original = run(seed, &options, TapeSource::Live, Sink::Off);
        let shrunk = shrink(seed, &options, 600).expect("the seed fails");
        assert_eq!(
            shrunk.failure.checker(),
            original.failure.unwrap().checker()
        );
        assert!(shrunk.values.len() < shrunk.original_len, "{shrunk:?}");
        assert!(shrunk.options.ops <= options.ops);
        let replay = run(
            seed,
            &shrunk.options,
            TapeSource::Replay(shrunk.values.clone()),
            Sink::Off,
        );
        assert_eq!(
            replay.failure,
            Some(shrunk.failure),
            "the minimal run replays"
        );
    }

    #[test]
    fn a_passing_seed_does_not_shrink() {
        assert!(shrink(1, &Options::default(), 10).is_none());
    }
}
