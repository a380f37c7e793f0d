//! The `cairn-sim` command line: exit codes, the summary, replay commands and traces.

use std::process::{Command, Output};

fn cairn_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn-sim"))
        .args(args)
        .output()
        .expect("cairn-sim runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn run_prints_a_summary_and_exits_zero_when_every_seed_passes() {
    let out = cairn_sim(&["run", "--seeds", "0..40", "--ops", "60", "--jobs", "1"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    for needle in [
        "seeds 40",
        "faults injected:",
        "rare branches hit:",
        "lost_race",
        "violations: 0",
        "seeds/s",
        "simulated ops/s",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn run_exits_non_zero_and_prints_the_replay_command_of_a_failing_seed() {
    let out = cairn_sim(&["run", "--seeds", "40..45", "--canary", "--jobs", "1"]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("seed 42 FAILED"), "{text}");
    assert!(
        text.contains(
            "replay: cargo run --release -p cairn-sim -- replay --seed 42 --clients 8 --ops 200 --canary"
        ),
        "{text}"
    );
}

#[test]
fn replay_reproduces_the_failure_and_prints_a_readable_trace() {
    let out = cairn_sim(&["replay", "--seed", "42", "--canary", "--trace"]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("seed 42 FAILED"), "{text}");
    assert!(text.contains("starts"), "{text}");
    assert!(text.contains("-> hv."), "{text}");
    assert!(text.contains("!! canary"), "{text}");
    let plain = cairn_sim(&["replay", "--seed", "42"]);
    assert!(plain.status.success(), "{}", stdout(&plain));
}

#[test]
fn shrink_cuts_a_failing_seed_down_and_prints_the_minimal_run() {
    let out = cairn_sim(&[
        "shrink",
        "--seed",
        "0",
        "--bug",
        "old-blob-deleted-before-commit",
        "--budget",
        "300",
    ]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("minimal run after"), "{text}");
    assert!(
        text.contains("minimal failure [no blob deleted while referenced]"),
        "{text}"
    );
}

#[test]
fn mutants_lists_every_bug_with_the_seeds_it_took() {
    let out = cairn_sim(&["mutants", "--seeds", "50"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("24 of 24 caught"), "{text}");
    assert!(text.contains("cas-not-idempotent"), "{text}");
}

#[test]
fn bad_arguments_are_the_callers_fault() {
    let out = cairn_sim(&["run", "--seeds", "5..5"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cairn_sim(&["run", "--seeds", "0..2", "--clients", "0"]);
    assert_eq!(out.status.code(), Some(2));
    // Not a run that never ends (or overflows its counts) but a bound the message names.
    // Nor a run of nothing that passes.
    for ops in ["0", "100001", "18446744073709551615"] {
        let out = cairn_sim(&["replay", "--seed", "1", "--ops", ops]);
        assert_eq!(out.status.code(), Some(2), "--ops {ops}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--ops must be 1..=100000"), "{err}");
    }
    // A hunt of no seeds would report every planted bug as surviving.
    let out = cairn_sim(&["mutants", "--seeds", "0"]);
    assert_eq!(out.status.code(), Some(2));
    // No threads, or a hundred thousand of them.
    for jobs in ["0", "100000"] {
        let out = cairn_sim(&["run", "--seeds", "0..2", "--jobs", jobs]);
        assert_eq!(out.status.code(), Some(2), "--jobs {jobs}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("threads must be 1..=256"), "{err}");
    }
    let out = cairn_sim(&["replay", "--seed", "1", "--bug", "no-such-bug"]);
    assert_eq!(out.status.code(), Some(2));
    // One past the last seed does not fit in a u64: refused, not wrapped into an empty range.
    let out = cairn_sim(&["run", "--seeds", "18446744073709551615"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("replay --seed 18446744073709551615"), "{err}");
}

#[test]
fn a_run_whose_linearizability_search_ran_out_of_budget_says_so() {
    // 64 clients on one key: histories too entangled for the search's node budget (which a
    // debug build spends in about 20 s).
    let out = cairn_sim(&[
        "run",
        "--seeds",
        "1",
        "--clients",
        "64",
        "--keys",
        "1",
        "--ops",
        "300",
        "--require-coverage",
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("linearizability NOT CHECKED on 1 key"),
        "{text}"
    );
    assert!(!out.status.success(), "{text}");
}

/// `cairn-sim replay --trace | head`: the reader leaves after a line, and the simulator stops
/// quietly rather than panic on its next line; a standard output that cannot be written is
/// reported, not a panic either.
#[test]
fn a_reader_that_stops_reading_ends_the_run_quietly() {
    use std::io::Read as _;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn-sim"))
        .args(["replay", "--seed", "1", "--ops", "2000", "--trace"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cairn-sim runs");
    let mut first = [0u8; 64];
    let read = child.stdout.as_mut().unwrap().read(&mut first).unwrap();
    assert!(read > 0, "it printed something first");
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {said}", out.status);
    assert!(!said.contains("panicked"), "{said}");

    let full = std::fs::File::options().write(true).open("/dev/full");
    if let Ok(full) = full {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn-sim"))
            .args(["replay", "--seed", "1"])
            .stdout(full)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{said}");
        assert!(said.contains("writing to standard output"), "{said}");
        assert!(!said.contains("panicked"), "{said}");
    }
}
