//! Mutation testing with the planted bugs: each bug runs seed after seed until a checker catches
//! it. A bug that survives its seed budget means a checker (or the fault model) has a blind spot.

use crate::bugs::{Bug, CATALOGUE};
use crate::params::Options;
use crate::sim::{run, Failure, TapeSource};
use crate::trace::Sink;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Seeds a bug may survive before `cairn-sim mutants` fails (the bound).
pub const SEED_BUDGET: u64 = 1_000;

/// How one planted bug fared.
#[derive(Clone, Debug)]
pub struct Hunt {
    /// The bug.
    pub bug: Bug,
    /// The first seed that caught it, if any did within the budget.
    pub caught_by_seed: Option<u64>,
    /// Seeds run (up to and including the catching one).
    pub seeds: u64,
    /// What caught it.
    pub failure: Option<Failure>,
}

/// Runs `bug` from `first_seed` on until a seed fails or `budget` seeds have passed.
pub fn hunt(bug: Bug, options: &Options, first_seed: u64, budget: u64) -> Hunt {
    let options = Options {
        bug: Some(bug),
        ..*options
    };
    // Seeds past `u64::MAX` do not exist: a hunt starting near it ends there.
    let seeds = (first_seed..=u64::MAX).take(usize::try_from(budget).unwrap_or(usize::MAX));
    for (i, seed) in (1..).zip(seeds) {
        let report = run(seed, &options, TapeSource::Live, Sink::Off);
        if let Some(failure) = report.failure {
            return Hunt {
                bug,
                caught_by_seed: Some(seed),
                seeds: i,
                failure: Some(failure),
            };
        }
    }
    Hunt {
        bug,
        caught_by_seed: None,
        seeds: budget.min((u64::MAX - first_seed).saturating_add(1)),
        failure: None,
    }
}

/// Hunts every bug in the catalogue on `jobs` threads; results in catalogue order.
pub fn hunt_all(options: &Options, first_seed: u64, budget: u64, jobs: usize) -> Vec<Hunt> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(entry) = CATALOGUE.get(i) else { break };
                let result = hunt(entry.bug, options, first_seed, budget);
                results.lock().expect("no panics here").push((i, result));
            });
        }
    });
    let mut results = results.into_inner().expect("threads finished");
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, hunt)| hunt).collect()
}

/// The median and the maximum of the seeds the caught bugs took.
pub fn median_and_max(hunts: &[Hunt]) -> Option<(u64, u64)> {
    let mut seeds: Vec<u64> = hunts
        .iter()
        .filter(|h| h.caught_by_seed.is_some())
        .map(|h| h.seeds)
        .collect();
    seeds.sort_unstable();
    let max = *seeds.last()?;
    let mid = seeds.len() / 2;
    let median = if seeds.len() % 2 == 0 {
        (seeds[mid - 1] + seeds[mid]) / 2
    } else {
        seeds[mid]
    };
    Some((median, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caught(seeds: u64) -> Hunt {
        Hunt {
            bug: CATALOGUE[0].bug,
            caught_by_seed: Some(seeds - 1),
            seeds,
            failure: None,
        }
    }

    #[test]
    fn median_of_caught_bugs_ignores_survivors() {
        let survivor = Hunt {
            caught_by_seed: None,
            seeds: SEED_BUDGET,
            ..caught(1)
        };
        assert_eq!(
            median_and_max(&[caught(1), caught(9), caught(4), survivor]),
            Some((4, 9))
        );
        assert_eq!(median_and_max(&[caught(2), caught(6)]), Some((4, 6)));
        assert_eq!(median_and_max(&[]), None);
    }

    #[test]
    fn a_hunt_stops_at_the_last_seed_there_is() {
        let options = Options {
            ops: 20,
            ..Options::default()
        };
        let hunt = hunt(
            Bug::from_name("recovery-deletes-without-reread").unwrap(),
            &options,
            u64::MAX,
            5,
        );
        assert!(hunt.seeds <= 1, "{hunt:?}");
        assert!(hunt.caught_by_seed.is_none_or(|seed| seed == u64::MAX));
    }
}
