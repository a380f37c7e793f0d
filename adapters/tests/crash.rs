//! Crash safety of the embedded default, with the real binary: `cairn __workload` writes small
//! and large objects until it is killed with SIGKILL at a random moment; then the data directory
//! is reopened (recovery runs) and checked: no dangling tombstone, no orphan blob, no change-log
//! entry left, every acknowledged write readable with its exact bytes, `PRAGMA integrity_check`
//! ok. 50 cycles by default; `CAIRN_CRASH_CYCLES=1000` for the long run.
//!
//! Any put that fails on its own fails the test, and so does a run whose kills did not land
//! where it matters — during large and small puts, leaving change-log entries and staged blobs
//! behind — so that the check cannot pass on a workload that did nothing.
#![cfg(all(unix, feature = "cli"))]

#[path = "../src/bin/cairn/workload_plan.rs"]
mod workload_plan;

use bytes::Bytes;
use cairn_adapters::embedded::{Embedded, EmbeddedOptions};
use cairn_adapters::{Clock, InlineRuntime, ManualClock, SystemClock};
use cairn_core::limits::DEFAULT_INLINE_THRESHOLD;
use cairn_core::{Duration, Rng};
use futures_lite::future::block_on;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use workload_plan::Put;

/// What a key may hold after a crash: its last acknowledged put, or any put begun after it
/// without an acknowledgement (it may have committed before the kill, or failed ambiguously).
#[derive(Default, Debug)]
struct Allowed {
    acked: Option<Put>,
    unacked: Vec<Put>,
}

fn cycles() -> u64 {
    std::env::var("CAIRN_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// What one cycle did, as the workload announced it and the killed process left it.
#[derive(Default, Debug)]
struct Cycle {
    /// Puts acknowledged, and how many of them large (above the inline threshold).
    acked: u64,
    acked_large: u64,
    /// The size of the put under way when the kill landed (begun, not acknowledged).
    killed_mid_put: Option<u64>,
    /// Change-log entries the kill left in the database: it landed between a put's record and
    /// its removal (around a tombstone's commit).
    log_entries_left: u64,
    /// Temporary blob files the kill left: it landed while a large put staged its blob (or
    /// before its publication).
    temp_files_left: u64,
}

/// Runs the workload until a random moment, kills it, and records what it announced.
fn run_and_kill(
    dir: &std::path::Path,
    seed: u64,
    kill_after: std::time::Duration,
    keys: &mut BTreeMap<String, Allowed>,
) -> Cycle {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--data")
        .arg(dir)
        .args(["--lease-ms", "60000", "__workload", &seed.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cairn __workload");
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let mut stderr = child.stderr.take().expect("piped stderr");
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    // The kill lands at an arbitrary point of an arbitrary operation: that moment is the input
    // this test randomises (from its seed), not a wait for something to happen.
    std::thread::sleep(kill_after);
    // The workload never ends by itself: one that did (an open that failed, a panic) would
    // leave this cycle checking nothing.
    if let Some(status) = child.try_wait().expect("poll the workload") {
        panic!(
            "cycle {seed}: the workload exited by itself ({status}) before the kill: {}",
            errors.join().expect("stderr reader")
        );
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let _ = errors.join();
    let mut cycle = Cycle::default();
    let mut under_way = None;
    for line in reader.join().expect("reader") {
        // A line cut short by the kill has fewer fields (or a shorter size, which is unused).
        let fields: Vec<&str> = line.splitn(6, ' ').collect();
        let [what, key, seed, i, size, ..] = fields[..] else {
            continue;
        };
        let put = Put::new(seed.parse().expect("seed"), i.parse().expect("index"));
        assert_eq!(put.key, key, "the workload and the test agree on put {i}");
        let allowed = keys.entry(key.to_string()).or_default();
        match what {
            "begin" => {
                under_way = Some(put.size);
                allowed.unacked.push(put);
            }
            "ack" => {
                under_way = None;
                cycle.acked += 1;
                cycle.acked_large += u64::from(put.size > DEFAULT_INLINE_THRESHOLD);
                allowed.acked = Some(put);
                allowed.unacked.clear();
            }
            // Nothing injects faults: a put that fails on its own is a defect, not noise.
            "fail" => panic!("cycle {seed}: put {i} of {key} ({size}) failed: {line}"),
            other => panic!("unexpected workload line {other:?}"),
        }
    }
    cycle.killed_mid_put = under_way;
    cycle.log_entries_left = log_entries(dir);
    cycle
}

/// The change-log entries in the database as the kill left it, read without writing anything
/// (recovery has not run yet).
fn log_entries(dir: &std::path::Path) -> u64 {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        dir.join("cairn.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0; // killed before the database was made
    };
    db.query_row("SELECT count(*) FROM changes", [], |r| r.get(0))
        .unwrap_or(0)
}

/// Reopens as a later process would, an hour on (so the killed writer's lease has run out and
/// recovery may reclaim its unfinished writes), and checks everything.
fn verify(dir: &std::path::Path, keys: &mut BTreeMap<String, Allowed>, cycle: u64) {
    let later = Arc::new(ManualClock::new(SystemClock.now().as_millis()));
    later.advance(Duration::from_secs(3600));
    // The temporary files are an hour older too (maintenance judges them by their modification
    // time), so the open must sweep them — and a long run does not pile up gigabytes of them.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for entry in std::fs::read_dir(dir.join("blobs").join("tmp"))
        .into_iter()
        .flatten()
    {
        let path = entry.expect("list blobs/tmp").path();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(hour_ago))
            .expect("age a temporary file");
    }
    let options = EmbeddedOptions {
        clock: later,
        ..EmbeddedOptions::default()
    };
    let data =
        block_on(Embedded::open(dir, options, InlineRuntime)).expect("reopen after the crash");
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "cycle {cycle}: {report:#?}");
    assert_eq!(
        report.temp_files, 0,
        "cycle {cycle}: the open left a crashed write's temporary file an hour old"
    );
    // The killed writer's lease ran out an hour ago: an entry still held for it would mean
    // recovery skipped it (and fsck excuses the blobs such an entry covers).
    assert!(
        report.in_flight.is_empty(),
        "cycle {cycle}: recovery left the dead writer's entries: {report:#?}"
    );
    assert_eq!(
        data.db().log_entries().expect("change log").len(),
        0,
        "cycle {cycle}: the change log is empty after recovery"
    );
    assert_eq!(
        data.db().integrity_check().expect("integrity check"),
        ["ok"],
        "cycle {cycle}"
    );
    for (key, allowed) in keys.iter_mut() {
        let got: Option<Bytes> = block_on(async {
            match data.store().get(key).await.expect("get") {
                Some(object) => Some(object.bytes().await.expect("body")),
                None => None,
            }
        });
        let matches = |p: &Put| got.as_ref() == Some(&p.bytes());
        if let Some(p) = allowed.unacked.iter().find(|p| matches(p)) {
            // An unacknowledged put committed before the kill: it is the value from now on.
            allowed.acked = Some(p.clone());
            allowed.unacked.clear();
            continue;
        }
        match &allowed.acked {
            Some(p) => assert!(
                matches(p),
                "cycle {cycle}: {key} lost its acknowledged put {p:?}"
            ),
            None => assert!(
                got.is_none(),
                "cycle {cycle}: {key} holds bytes nobody wrote"
            ),
        }
        allowed.unacked.clear();
    }
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = Rng::new(0x5eed_c0de);
    let mut keys: BTreeMap<String, Allowed> = BTreeMap::new();
    let cycles = cycles();
    let mut done = Vec::new();
    for cycle in 0..cycles {
        // From the first instant on: a few kills land while the process starts and opens.
        let kill_after = std::time::Duration::from_millis(rng.below(320));
        let mut stats = run_and_kill(dir.path(), cycle, kill_after, &mut keys);
        // The last check left none: all there are, this kill left.
        stats.temp_files_left = temp_files(dir.path());
        verify(dir.path(), &mut keys, cycle);
        done.push(stats);
    }
    // A check that saw nothing proves nothing: the kills must have landed where it matters.
    let count = |f: fn(&Cycle) -> bool| done.iter().filter(|c| f(c)).count() as u64;
    let acking = count(|c| c.acked > 0);
    let large_acked: u64 = done.iter().map(|c| c.acked_large).sum();
    let mid_large = count(|c| {
        c.killed_mid_put
            .is_some_and(|s| s > DEFAULT_INLINE_THRESHOLD)
    });
    let mid_small = count(|c| {
        c.killed_mid_put
            .is_some_and(|s| s <= DEFAULT_INLINE_THRESHOLD)
    });
    let entries_left = count(|c| c.log_entries_left > 0);
    let temps_left = count(|c| c.temp_files_left > 0);
    eprintln!(
        "{cycles} cycles: {acking} acknowledged a put ({large_acked} large puts in all), \
         {mid_large} killed mid large put, {mid_small} mid small put, {entries_left} left a \
         change-log entry, {temps_left} a temporary blob file"
    );
    // Loose bounds, a tenth of what a quiet machine gives, so a busy one passes as well; a run
    // of a handful of cycles (a smoke test) is too short for them.
    if cycles < 20 {
        return;
    }
    let tenth = cycles / 10;
    assert!(acking >= tenth, "too few cycles acknowledged anything");
    assert!(large_acked >= tenth, "too few large puts acknowledged");
    assert!(mid_large >= tenth, "too few kills during a large put");
    assert!(mid_small >= 1, "no kill during a small put");
    assert!(entries_left >= 1, "no kill left a change-log entry");
    assert!(temps_left >= 1, "no kill left a staged blob");
}

fn temp_files(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir.join("blobs").join("tmp")).map_or(0, |entries| entries.count() as u64)
}
