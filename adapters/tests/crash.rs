//! Crash safety of the embedded default, with the real binary: `cairn __workload` writes small
//! and large objects until it is killed with SIGKILL at a random moment; then the data directory
//! is reopened (recovery runs) and checked: no dangling tombstone, no orphan blob, no change-log
//! entry left, every acknowledged write readable with its exact bytes, `PRAGMA integrity_check`
//! ok. 50 cycles by default; `CAIRN_CRASH_CYCLES=1000` for the long run.
#![cfg(all(unix, feature = "cli"))]

#[path = "../src/bin/cairn/workload_plan.rs"]
mod workload_plan;

use bytes::Bytes;
use cairn_adapters::embedded::{Embedded, EmbeddedOptions};
use cairn_adapters::{Clock, InlineRuntime, ManualClock, SystemClock};
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

/// Runs the workload until a random moment, kills it, and records what it announced.
fn run_and_kill(
    dir: &std::path::Path,
    seed: u64,
    kill_after: std::time::Duration,
    keys: &mut BTreeMap<String, Allowed>,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .arg("--data")
        .arg(dir)
        .args(["--lease-ms", "60000", "__workload", &seed.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cairn __workload");
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // The kill lands at an arbitrary point of an arbitrary operation: that moment is the input
    // this test randomises (from its seed), not a wait for something to happen.
    std::thread::sleep(kill_after);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    for line in reader.join().expect("reader") {
        let fields: Vec<&str> = line.split(' ').collect();
        let [what, key, seed, i, _size] = fields[..] else {
            continue;
        };
        let put = Put::new(seed.parse().expect("seed"), i.parse().expect("index"));
        assert_eq!(put.key, key, "the workload and the test agree on put {i}");
        let allowed = keys.entry(key.to_string()).or_default();
        match what {
            "begin" => allowed.unacked.push(put),
            "ack" => {
                allowed.unacked.retain(|p| *p != put);
                allowed.acked = Some(put);
                allowed.unacked.clear();
            }
            other => panic!("unexpected workload line {other:?}"),
        }
    }
}

/// Reopens as a later process would, an hour on (so the killed writer's lease has run out and
/// recovery may reclaim its unfinished writes), and checks everything.
fn verify(dir: &std::path::Path, keys: &mut BTreeMap<String, Allowed>, cycle: u64) {
    let later = Arc::new(ManualClock::new(SystemClock.now().as_millis()));
    later.advance(Duration::from_secs(3600));
    let options = EmbeddedOptions {
        clock: later,
        ..EmbeddedOptions::default()
    };
    let data =
        block_on(Embedded::open(dir, options, InlineRuntime)).expect("reopen after the crash");
    let report = block_on(data.fsck(false)).expect("fsck");
    assert!(report.is_clean(), "cycle {cycle}: {report:#?}");
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
    for cycle in 0..cycles() {
        let kill_after = std::time::Duration::from_millis(20 + rng.below(300));
        run_and_kill(dir.path(), cycle, kill_after, &mut keys);
        verify(dir.path(), &mut keys, cycle);
    }
    assert!(
        keys.values().any(|a| a.acked.is_some()),
        "the workload acknowledged writes"
    );
}
