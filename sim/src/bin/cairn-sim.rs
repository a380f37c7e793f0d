//! `cairn-sim`: run, replay, shrink and mutation-test the deterministic simulator.
//!
//! ```text
//! cairn-sim run --seeds 0..10000              many seeds on every core; a summary
//! cairn-sim replay --seed 1234 --trace        one seed again, step by step
//! cairn-sim shrink --seed 1234                a failing seed cut down to what matters
//! cairn-sim mutants                           every planted bug, until caught
//! cairn-sim bugs                              the catalogue of planted bugs
//! ```

use cairn_sim::bugs::{Bug, CATALOGUE};
use cairn_sim::params::{Options, Profile, DEFAULT_CLIENTS, DEFAULT_OPS};
use cairn_sim::runner::{cpu_time, default_jobs, replay_command, run_seeds, Progress};
use cairn_sim::sim::{run, TapeSource};
use cairn_sim::stats::Counter;
use cairn_sim::trace::{print, Sink};
use cairn_sim::{mutants, shrink};
use clap::{Args, Parser, Subcommand};
use std::ops::Range;
use std::process::ExitCode;

/// `println!` that ends the process quietly once standard output's reader is gone (see
/// [`print`]) instead of panicking.
macro_rules! say {
    () => {
        print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[derive(Parser)]
#[command(
    name = "cairn-sim",
    version,
    about = "Deterministic simulation of cairn's tiered protocol: races, faults, crashes, checkers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a range of seeds and summarise; exits non-zero on any violation.
    Run {
        /// Seeds to run, as `A..B` (B excluded) or a single seed.
        #[arg(long, value_parser = parse_seeds)]
        seeds: Range<u64>,
        #[command(flatten)]
        world: WorldArgs,
        /// Threads, 1 to 256 (default: every core).
        #[arg(long, value_parser = parse_jobs)]
        jobs: Option<usize>,
        /// Also fail if a fault kind or rare branch was never hit.
        #[arg(long)]
        require_coverage: bool,
    },
    /// Run one seed again, exactly; optionally print every step.
    Replay {
        /// The seed.
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        world: WorldArgs,
        /// Print a readable line per step.
        #[arg(long)]
        trace: bool,
    },
    /// Cut a failing seed's decisions (operations, faults) down to a minimal failing run.
    Shrink {
        /// The failing seed.
        #[arg(long)]
        seed: u64,
        #[command(flatten)]
        world: WorldArgs,
        /// Runs to spend at most.
        #[arg(long, default_value_t = shrink::DEFAULT_BUDGET)]
        budget: usize,
    },
    /// Run every planted bug until a seed catches it; exits non-zero if one survives.
    Mutants {
        /// Seeds each bug may survive (at least 1).
        #[arg(long, default_value_t = mutants::SEED_BUDGET,
              value_parser = clap::value_parser!(u64).range(1..))]
        seeds: u64,
        /// The first seed of every hunt.
        #[arg(long, default_value_t = 0)]
        first_seed: u64,
        #[command(flatten)]
        world: WorldArgs,
        /// Threads, 1 to 256 (default: every core).
        #[arg(long, value_parser = parse_jobs)]
        jobs: Option<usize>,
    },
    /// List the planted bugs: what each breaks and what catches it.
    Bugs,
}

/// The options that shape a run (everything else comes from the seed).
#[derive(Args, Clone)]
struct WorldArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = DEFAULT_CLIENTS)]
    clients: usize,
    /// Hot keys (default: drawn per seed, 4 to 20).
    #[arg(long)]
    keys: Option<usize>,
    /// Operations per seed, over all clients (at most 100,000).
    #[arg(long, default_value_t = DEFAULT_OPS)]
    ops: usize,
    /// Fault profile: swarm (default), calm or chaos.
    #[arg(long, default_value = "swarm")]
    profile: Profile,
    /// Run with a planted bug (see `cairn-sim bugs`).
    #[arg(long, value_parser = parse_bug)]
    bug: Option<Bug>,
    /// Make 1 % of seeds fail on purpose, to check that failures are reported.
    #[arg(long)]
    canary: bool,
}

impl WorldArgs {
    fn options(&self) -> Result<Options, String> {
        let options = Options {
            clients: self.clients,
            keys: self.keys,
            ops: self.ops,
            profile: self.profile,
            bug: self.bug,
            canary: self.canary,
        };
        options.validate()?;
        Ok(options)
    }
}

/// Most threads a run may ask for: far past any core count that helps, and short of the
/// thousands of threads (each with its stack) a slip of the keyboard would spawn.
const MAX_JOBS: usize = 256;

fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(jobs @ 1..=MAX_JOBS) => Ok(jobs),
        _ => Err(format!("{s:?}: threads must be 1..={MAX_JOBS}")),
    }
}

fn parse_seeds(s: &str) -> Result<Range<u64>, String> {
    let number = |n: &str| {
        n.trim()
            .replace('_', "")
            .parse::<u64>()
            .map_err(|e| format!("{n:?}: {e}"))
    };
    match s.split_once("..") {
        Some((a, b)) => {
            let range = number(a)?..number(b)?;
            if range.is_empty() {
                return Err(format!("empty seed range {s}"));
            }
            Ok(range)
        }
        None => {
            let a = number(s)?;
            // A `Range` cannot hold the last seed; `replay --seed` runs it.
            let end = a.checked_add(1).ok_or_else(|| {
                format!(
                    "seed {a} is past the last one `run` takes; replay it with `replay --seed {a}`"
                )
            })?;
            Ok(a..end)
        }
    }
}

fn parse_bug(s: &str) -> Result<Bug, String> {
    Bug::from_name(s).ok_or_else(|| {
        let names: Vec<_> = CATALOGUE.iter().map(|e| e.name).collect();
        format!("unknown bug {s:?}; one of: {}", names.join(", "))
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run {
            seeds,
            world,
            jobs,
            require_coverage,
        } => world
            .options()
            .map(|o| run_command(seeds, &o, jobs, require_coverage)),
        Command::Replay { seed, world, trace } => {
            world.options().map(|o| replay_command_run(seed, &o, trace))
        }
        Command::Shrink {
            seed,
            world,
            budget,
        } => world.options().map(|o| shrink_command(seed, &o, budget)),
        Command::Mutants {
            seeds,
            first_seed,
            world,
            jobs,
        } => world
            .options()
            .map(|o| mutants_command(&o, first_seed, seeds, jobs)),
        Command::Bugs => Ok(bugs_command()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("cairn-sim: {message}");
            ExitCode::from(2)
        }
    }
}

fn run_command(
    seeds: Range<u64>,
    options: &Options,
    jobs: Option<usize>,
    require_coverage: bool,
) -> ExitCode {
    let jobs = jobs.unwrap_or_else(default_jobs);
    let keys = options
        .keys
        .map_or_else(|| "4-20 (per seed)".to_owned(), |k| k.to_string());
    say!(
        "cairn-sim run: seeds {}..{} | {} clients, keys {keys}, {} ops/seed, profile {}{}{} | {jobs} threads",
        seeds.start,
        seeds.end,
        options.clients,
        options.ops,
        options.profile,
        options.bug.map_or(String::new(), |b| format!(", bug {b}")),
        if options.canary { ", canary" } else { "" },
    );
    let cpu_before = cpu_time();
    let summary = run_seeds(seeds.clone(), options, jobs, |p: Progress| {
        let rate = p.done as f64 / p.elapsed.as_secs_f64().max(1e-9);
        eprintln!(
            "  {:>9}/{} seeds  {} failed  {:.1}s  {rate:.0} seeds/s",
            p.done,
            p.total,
            p.failed,
            p.elapsed.as_secs_f64()
        );
    });
    let cpu = cpu_time()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    let stats = &summary.stats;
    say!();
    print(format_args!("{stats}"));
    say!("violations: {}", stats.failed);
    let wall = summary.elapsed.as_secs_f64().max(1e-9);
    say!(
        "wall {wall:.2}s: {:.0} seeds/s, {:.0} simulated ops/s",
        stats.seeds as f64 / wall,
        stats.ops as f64 / wall
    );
    if let Some(cpu) = cpu.filter(|c| !c.is_zero()) {
        let cpu = cpu.as_secs_f64();
        say!(
            "cpu {cpu:.2}s: {:.0} seeds per CPU-second, {:.0} simulated ops per CPU-second",
            stats.seeds as f64 / cpu,
            stats.ops as f64 / cpu
        );
    }
    for failed in &summary.failures {
        say!("\nseed {} FAILED: {}", failed.seed, failed.failure);
        say!("  drew: {}", failed.params);
        say!("  replay: {}", replay_command(failed.seed, options));
    }
    if stats.failed > summary.failures.len() as u64 {
        say!(
            "\n... and {} more failing seeds",
            stats.failed - summary.failures.len() as u64
        );
    }
    let inconclusive = stats.get(Counter::LinearizabilityInconclusive);
    if inconclusive > 0 {
        say!("\n{}", inconclusive_note(inconclusive));
    }
    let unexercised = stats.unexercised();
    if require_coverage && !unexercised.is_empty() {
        let names: Vec<_> = unexercised.iter().map(|c| c.name()).collect();
        say!("\ncoverage: never hit: {}", names.join(", "));
        return ExitCode::FAILURE;
    }
    if require_coverage && inconclusive > 0 {
        return ExitCode::FAILURE;
    }
    if stats.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn replay_command_run(seed: u64, options: &Options, trace: bool) -> ExitCode {
    let sink = if trace { Sink::Stdout } else { Sink::Off };
    let report = run(seed, options, TapeSource::Live, sink);
    say!("seed {seed}: {}", report.params);
    match &report.failure {
        None => {
            say!(
                "seed {seed}: ok ({} operations, trace hash {:016x})",
                report.stats.ops,
                report.trace_hash
            );
            let inconclusive = report.stats.get(Counter::LinearizabilityInconclusive);
            if inconclusive > 0 {
                say!("{}", inconclusive_note(inconclusive));
            }
            ExitCode::SUCCESS
        }
        Some(failure) => {
            say!(
                "seed {seed} FAILED [{}]: {failure}\ntrace hash {:016x}",
                failure.checker(),
                report.trace_hash
            );
            if !trace {
                say!("  step by step: {} --trace", replay_command(seed, options));
            }
            ExitCode::FAILURE
        }
    }
}

/// Says that a passing run did not check linearizability everywhere: a search out of budget is
/// no evidence either way, and must not read as a pass.
fn inconclusive_note(histories: u64) -> String {
    format!(
        "linearizability NOT CHECKED on {histories} key histories: the search ran out of budget \
         (fewer clients, or more keys, keep histories decidable); --require-coverage fails on it"
    )
}

fn shrink_command(seed: u64, options: &Options, budget: usize) -> ExitCode {
    say!("shrinking seed {seed} ({})", options.flags());
    let Some(shrunk) = shrink::shrink(seed, options, budget) else {
        say!("seed {seed} does not fail: nothing to shrink");
        return ExitCode::FAILURE;
    };
    let kept: Vec<_> = shrunk
        .draws
        .iter()
        .enumerate()
        .filter(|(_, d)| d.value != 0)
        .collect();
    say!(
        "minimal run after {} runs: {} clients, {} operations; {} of {} decisions left, {} of them not the simplest choice",
        shrunk.runs,
        shrunk.options.clients,
        shrunk.options.ops,
        shrunk.values.len(),
        shrunk.original_len,
        kept.len()
    );
    let mut by_label = std::collections::BTreeMap::new();
    for (_, draw) in &kept {
        *by_label.entry(draw.label).or_insert(0) += 1;
    }
    let summary: Vec<_> = by_label
        .iter()
        .map(|(label, n)| format!("{label} ×{n}"))
        .collect();
    say!("choices that are not the simplest: {}", summary.join(", "));
    say!("\nthe minimal run, step by step:");
    let report = run(
        seed,
        &shrunk.options,
        TapeSource::Replay(shrunk.values.clone()),
        Sink::Stdout,
    );
    say!(
        "\nminimal failure [{}]: {}",
        shrunk.failure.checker(),
        report.failure.as_ref().unwrap_or(&shrunk.failure)
    );
    ExitCode::SUCCESS
}

fn mutants_command(
    options: &Options,
    first_seed: u64,
    budget: u64,
    jobs: Option<usize>,
) -> ExitCode {
    let jobs = jobs.unwrap_or_else(default_jobs);
    say!(
        "cairn-sim mutants: {} planted bugs, up to {budget} seeds each from seed {first_seed}, {jobs} threads",
        CATALOGUE.len()
    );
    let started = std::time::Instant::now();
    let hunts = mutants::hunt_all(options, first_seed, budget, jobs);
    say!("\n{:<42} {:>6} {:>8}  caught by", "bug", "seeds", "seed");
    for hunt in &hunts {
        match (&hunt.caught_by_seed, &hunt.failure) {
            (Some(seed), Some(failure)) => say!(
                "{:<42} {:>6} {:>8}  {}",
                hunt.bug.name(),
                hunt.seeds,
                seed,
                failure.checker()
            ),
            _ => say!(
                "{:<42} {:>6} {:>8}  SURVIVED",
                hunt.bug.name(),
                hunt.seeds,
                "-"
            ),
        }
    }
    let survivors = hunts.iter().filter(|h| h.caught_by_seed.is_none()).count();
    if let Some((median, max)) = mutants::median_and_max(&hunts) {
        say!(
            "\n{} of {} caught; seeds to catch: median {median}, max {max} ({:.1}s)",
            hunts.len() - survivors,
            hunts.len(),
            started.elapsed().as_secs_f64()
        );
    }
    if survivors > 0 {
        say!("{survivors} planted bug(s) survived {budget} seeds");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn bugs_command() -> ExitCode {
    for entry in &CATALOGUE {
        say!(
            "{}\n  in:        {}\n  breaks:    {}\n  caught by: {}\n",
            entry.name,
            entry.site,
            entry.breaks,
            entry.caught_by
        );
    }
    ExitCode::SUCCESS
}
