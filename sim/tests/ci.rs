//! The simulator's CI run, within `cargo test --workspace`: a few thousand seeds of the default
//! profile, every planted bug, the canary and the determinism check. The long run is a command:
//! `cargo run --release -p cairn-sim -- run --seeds 0..100000`.

use cairn_sim::bugs::CATALOGUE;
use cairn_sim::mutants::{self, SEED_BUDGET};
use cairn_sim::params::Options;
use cairn_sim::runner::{default_jobs, replay_command, run_seeds};
use cairn_sim::sim::{is_canary_seed, run, TapeSource};
use cairn_sim::stats::Counter;
use cairn_sim::trace::Sink;

/// Seeds of the default profile in the CI run.
const CI_SEEDS: u64 = 4_000;

#[test]
fn a_few_thousand_seeds_pass_and_hit_every_fault_kind_and_rare_branch() {
    let options = Options::default();
    let summary = run_seeds(0..CI_SEEDS, &options, default_jobs(), |_| {});
    let report: Vec<String> = summary
        .failures
        .iter()
        .map(|f| {
            format!(
                "seed {}: {}\n  replay: {}",
                f.seed,
                f.failure,
                replay_command(f.seed, &options)
            )
        })
        .collect();
    assert!(
        report.is_empty(),
        "{} seeds failed:\n{}",
        summary.stats.failed,
        report.join("\n")
    );
    assert_eq!(summary.stats.seeds, CI_SEEDS);
    // A search out of budget checks nothing: every history of the CI run must be decided.
    let inconclusive = summary.stats.get(Counter::LinearizabilityInconclusive);
    assert_eq!(
        inconclusive, 0,
        "linearizability undecided on {inconclusive} histories"
    );
    let never: Vec<_> = summary
        .stats
        .unexercised()
        .iter()
        .map(|c| c.name())
        .collect();
    assert!(
        never.is_empty(),
        "the CI run never hit: {}\n{}",
        never.join(", "),
        summary.stats
    );
}

#[test]
fn every_planted_bug_is_caught_within_the_seed_budget() {
    let hunts = mutants::hunt_all(&Options::default(), 0, SEED_BUDGET, default_jobs());
    assert_eq!(hunts.len(), CATALOGUE.len());
    let survivors: Vec<_> = hunts
        .iter()
        .filter(|h| h.caught_by_seed.is_none())
        .map(|h| h.bug.name())
        .collect();
    assert!(survivors.is_empty(), "planted bugs survived: {survivors:?}");
    let (median, max) = mutants::median_and_max(&hunts).expect("bugs were caught");
    assert!(median <= 100, "median seeds to catch a bug: {median}");
    assert!(max <= SEED_BUDGET, "{max}");
}

#[test]
fn canary_seeds_fail_and_are_reported_with_a_command_that_replays_them() {
    let options = Options {
        canary: true,
        ..Options::default()
    };
    let summary = run_seeds(0..300, &options, default_jobs(), |_| {});
    let failed: Vec<u64> = summary.failures.iter().map(|f| f.seed).collect();
    let canaries: Vec<u64> = (0..300).filter(|&s| is_canary_seed(s)).collect();
    assert_eq!(failed, canaries, "exactly the canary seeds (1 %) fail");
    for failed in &summary.failures {
        let command = replay_command(failed.seed, &options);
        assert!(
            command.contains(&format!("replay --seed {}", failed.seed))
                && command.contains("--canary"),
            "{command}"
        );
        let again = run(failed.seed, &options, TapeSource::Live, Sink::Off);
        assert_eq!(again.failure.as_ref(), Some(&failed.failure), "it replays");
    }
    let calm = run_seeds(40..45, &Options::default(), 1, |_| {});
    assert!(calm.failures.is_empty(), "without --canary seed 42 passes");
}

#[test]
fn the_same_seed_always_yields_the_same_trace_hash() {
    let options = Options::default();
    let mut hashes = std::collections::BTreeSet::new();
    for seed in 0..150 {
        let live = run(seed, &options, TapeSource::Live, Sink::Off);
        let again = run(seed, &options, TapeSource::Live, Sink::Off);
        let recorded = run(seed, &options, TapeSource::Record, Sink::Off);
        let values = recorded.draws.iter().map(|d| d.value).collect();
        let replayed = run(seed, &options, TapeSource::Replay(values), Sink::Off);
        assert_eq!(live.trace_hash, again.trace_hash, "seed {seed}");
        assert_eq!(
            live.trace_hash, recorded.trace_hash,
            "seed {seed}: recording"
        );
        assert_eq!(live.trace_hash, replayed.trace_hash, "seed {seed}: replay");
        assert_eq!(live.stats, again.stats, "seed {seed}");
        hashes.insert(live.trace_hash);
    }
    assert_eq!(hashes.len(), 150, "different seeds, different traces");
}
