//! Transcripts of the canonical scenarios of the tiered protocol.
//!
//! Each scenario drives the real core machines against the simulator's world and writes down
//! every request (`->`), every answer (`<-`), each machine's result (`=>`), and the world at the
//! end, with the invariant checks. The text is compared with `tests/transcripts/<scenario>.txt`;
//! any change to what a machine asks for, or in which order, shows up as a diff.
//!
//! After an intended change, rewrite the files and review them like code:
//!
//! ```text
//! CAIRN_BLESS=1 cargo test -p cairn-tests --test transcripts
//! git diff tests/transcripts
//! ```

use cairn_core::{
    ChangeId, Cleanup, CleanupReport, Completion, Config, Delete, Found, Get, GetResult, Instant,
    Key, LargePut, Machine, MutationDone, ObjectMeta, Poll, Recovery, Revision, SmallPut,
};
use cairn_sim::world::{check_quiescent, check_safety, OpContext, World};
use std::fmt::Write as _;
use std::path::PathBuf;

const NOW: Instant = Instant::from_millis(1_000);
const SMALL: u64 = 5;
const LARGE: u64 = 2_000_000;
const A: Revision = Revision(0xA);
const B: Revision = Revision(0xB);
const C: Revision = Revision(0xC);
const CONFIG: Config = Config::DEFAULT;

/// What happens to one request between the machine and the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// The world performs it and the answer reaches the machine.
    Deliver,
    /// The world performs it, but the machine is told it failed.
    LoseResponse,
}

/// A world plus the text of everything that happened to it.
struct Transcript {
    world: World,
    now: Instant,
    text: String,
}

impl Transcript {
    fn new(description: &str) -> Transcript {
        assert!(!description.contains('\n'), "one comment line per file");
        Transcript {
            world: World::new(),
            now: NOW,
            text: format!("# {description}\n"),
        }
    }

    fn line(&mut self, line: impl std::fmt::Display) {
        writeln!(self.text, "{line}").expect("writing to a String cannot fail");
    }

    fn section(&mut self, title: impl std::fmt::Display) {
        self.line(format_args!("\n== {title}"));
    }

    /// Shows the world's state, as set up by the scenario before any machine runs.
    fn given(&mut self) {
        self.section("given");
        let state = self.world.to_string();
        self.text.push_str(if state.is_empty() {
            "(empty)\n"
        } else {
            &state
        });
    }

    /// One round of the driver loop: poll, and if the machine asks for I/O, perform it and feed
    /// the answer back (or a failure, per `fate`). Returns the output once the machine is done.
    fn step<M: Machine>(&mut self, machine: &mut M, op: OpContext, fate: Fate) -> Option<M::Output>
    where
        M::Output: std::fmt::Debug,
    {
        self.world.advance_to(self.now);
        let (request, answer) = match machine.poll(self.now) {
            Poll::Io(request) => (request.to_string(), self.world.apply(&request, op)),
            Poll::Wait(until) => {
                self.line(format_args!(".. wait until {until}"));
                self.now = until;
                return None;
            }
            Poll::Done(output) => return Some(output),
        };
        self.line(format_args!("-> {request}"));
        match fate {
            Fate::Deliver => {
                let read = answer.read.map(|v| format!(" [value {v}]"));
                self.line(format_args!("<- {answer}{}", read.unwrap_or_default()));
                machine.handle(answer.completion());
            }
            Fate::LoseResponse => {
                self.line("!! the world applied it; the response is lost");
                self.line(format_args!("<- {}", Completion::Failed));
                machine.handle(Completion::Failed);
            }
        }
        None
    }

    /// Delivers `n` requests.
    fn steps<M: Machine>(&mut self, machine: &mut M, op: OpContext, n: usize)
    where
        M::Output: std::fmt::Debug,
    {
        for _ in 0..n {
            let done = self.step(machine, op, Fate::Deliver);
            assert!(done.is_none(), "finished early: {done:?}");
        }
    }

    /// Delivers every request until the machine is done.
    fn finish<M: Machine>(&mut self, machine: &mut M, op: OpContext) -> M::Output
    where
        M::Output: std::fmt::Debug,
    {
        for _ in 0..cairn_sim::world::MAX_RUN_STEPS {
            if let Some(output) = self.step(machine, op, Fate::Deliver) {
                return output;
            }
        }
        panic!("machine is looping")
    }

    /// Finishes a put or delete, then runs its cleanup, if any, to the end.
    fn finish_mutation<M: Machine<Output = MutationDone>>(
        &mut self,
        machine: &mut M,
        op: OpContext,
    ) {
        let done = self.finish(machine, op);
        self.line(format_args!("=> {done}"));
        if let Some(pending) = done.cleanup {
            self.section(format_args!("cleanup of change {}", pending.id));
            let mut cleanup = Cleanup::new(key(), pending, CONFIG);
            let report = self.finish(&mut cleanup, OpContext::read());
            self.line(format_args!("=> {}", cleanup_report(&report)));
        }
    }

    /// Ends the transcript with the world's state and the invariant checks.
    fn end(mut self) -> String {
        self.section("world");
        let state = self.world.to_string();
        self.text.push_str(if state.is_empty() {
            "(empty)\n"
        } else {
            &state
        });
        let verdict =
            |r: Result<(), _>| r.map_or_else(|v| format!("VIOLATED: {v}"), |()| "ok".into());
        let safety = verdict(check_safety(&self.world));
        let quiescent = verdict(check_quiescent(&self.world));
        self.line(format_args!("safety: {safety}"));
        self.line(format_args!("quiescent: {quiescent}"));
        self.text
    }
}

fn cleanup_report(report: &CleanupReport) -> String {
    format!(
        "cleanup {:?}, {} blob delete(s)",
        report.outcome, report.blobs_deleted
    )
}

fn get_result(result: &GetResult) -> String {
    let span = |span: Option<cairn_core::Span>| span.map_or("all".into(), |s| s.to_string());
    match result {
        Ok(None) => "not found".into(),
        Ok(Some(Found::Inline { meta, span: s })) => {
            format!("found inline size={} span={}", meta.size, span(*s))
        }
        Ok(Some(Found::LongTerm { tombstone, span: s })) => format!(
            "found in the long-term tier rev={} size={} span={}",
            tombstone.revision,
            tombstone.size,
            span(*s)
        ),
        Err(e) => format!("error: {e}"),
    }
}

fn key() -> &'static Key {
    Key::new(b"k").expect("a valid key")
}

fn small_put(id: u128) -> SmallPut<'static> {
    let meta = ObjectMeta {
        size: SMALL,
        created: NOW,
        expires: None,
    };
    SmallPut::new(key(), meta, ChangeId(id), CONFIG)
}

fn large_put(revision: Revision, id: u128) -> LargePut<'static> {
    LargePut::new(key(), revision, None, ChangeId(id), CONFIG)
}

// --- The scenarios ---------------------------------------------------------------------------

fn small_put_fresh() -> String {
    let mut t = Transcript::new(
        "Small put of a fresh key: one put_non_tombstone, no change-log entry, no cleanup.",
    );
    t.given();
    t.section("small put \"k\" (change 1, value 1)");
    t.finish_mutation(&mut small_put(1), OpContext::put(1));
    t.end()
}

fn small_put_over_tombstone() -> String {
    let mut t = Transcript::new(
        "Small put over a large object: blocked by the tombstone, record the change, replace the tombstone by compare-and-write, clean up the old blob.",
    );
    t.world.insert_large(key(), A, LARGE, None, 1);
    t.given();
    t.section("small put \"k\" (change 2, value 2)");
    t.finish_mutation(&mut small_put(2), OpContext::put(2));
    t.end()
}

fn large_put_fresh() -> String {
    let mut t = Transcript::new(
        "Large put of a fresh key: read, record, write the blob, commit the tombstone with expected=no-tombstone; nothing old to clean.",
    );
    t.given();
    t.section("large put \"k\" rev B (change 1, value 1)");
    t.finish_mutation(&mut large_put(B, 1), OpContext::put_large(1, LARGE));
    t.end()
}

fn large_overwrite() -> String {
    let mut t = Transcript::new(
        "Large put over a large object: swap tombstone A for B by compare-and-write, then delete blob A.",
    );
    t.world.insert_large(key(), A, LARGE, None, 1);
    t.given();
    t.section("large put \"k\" rev B (change 2, value 2)");
    t.finish_mutation(&mut large_put(B, 2), OpContext::put_large(2, LARGE));
    t.end()
}

fn large_put_losing_race() -> String {
    let mut t = Transcript::new(
        "Large put B loses the race: after it read tombstone A, put C commits and deletes A; B's compare-and-write conflicts, B reports superseded and deletes only its own blob.",
    );
    t.world.insert_large(key(), A, LARGE, None, 1);
    t.given();
    let op_b = OpContext::put_large(2, LARGE);
    let mut put_b = large_put(B, 2);
    t.section("large put \"k\" rev B (change 2, value 2): read, record, write the blob");
    t.steps(&mut put_b, op_b, 3);
    t.section("large put \"k\" rev C (change 3, value 3) runs to the end");
    t.finish_mutation(&mut large_put(C, 3), OpContext::put_large(3, LARGE));
    t.section("large put \"k\" rev B resumes");
    t.finish_mutation(&mut put_b, op_b);
    t.end()
}

fn cas_lost_response_large_fresh() -> String {
    let mut t = Transcript::new(
        "Large put of a fresh key whose compare-and-write (expected=no-tombstone) is applied but its response lost: not retried, resolved by a read that finds its own tombstone.",
    );
    t.given();
    let op = OpContext::put_large(1, LARGE);
    let mut put = large_put(B, 1);
    t.section("large put \"k\" rev B (change 1, value 1)");
    t.steps(&mut put, op, 3);
    t.step(&mut put, op, Fate::LoseResponse);
    t.finish_mutation(&mut put, op);
    t.end()
}

fn cas_lost_response_small_over_tombstone() -> String {
    let mut t = Transcript::new(
        "Small put over tombstone A whose compare-and-write (expected=A) is applied but its response lost: an inline write is never retried (a retry could resurrect it after a later write), so the put reports an unknown outcome and its cleanup re-reads, finds its own value, and deletes A.",
    );
    t.world.insert_large(key(), A, LARGE, None, 1);
    t.given();
    let op = OpContext::put(2);
    let mut put = small_put(2);
    t.section("small put \"k\" (change 2, value 2)");
    t.steps(&mut put, op, 2);
    t.step(&mut put, op, Fate::LoseResponse);
    t.finish_mutation(&mut put, op);
    t.end()
}

fn delete_large() -> String {
    let mut t = Transcript::new(
        "Delete of a large object: blocked by the tombstone, record, delete the row by compare-and-write (the commit point), then delete the blob.",
    );
    t.world.insert_large(key(), A, LARGE, None, 1);
    t.given();
    t.section("delete \"k\" (change 2)");
    let mut delete = Delete::new(key(), ChangeId(2), CONFIG);
    t.finish_mutation(&mut delete, OpContext::read());
    t.end()
}

fn get_racing_overwrite_and_cleanup() -> String {
    let mut t = Transcript::new(
        "Get reads tombstone A; an overwrite commits B and cleans up A; the get's blob read misses, it re-reads and follows B instead of reporting not found.",
    );
    t.world.insert_large(key(), A, LARGE, None, 1);
    t.given();
    let mut get = Get::new(key(), None, CONFIG);
    t.section("get \"k\": read the row");
    t.steps(&mut get, OpContext::read(), 1);
    t.section("large put \"k\" rev B (change 2, value 2) runs to the end");
    t.finish_mutation(&mut large_put(B, 2), OpContext::put_large(2, LARGE));
    t.section("get \"k\" resumes");
    let result = t.finish(&mut get, OpContext::read());
    t.line(format_args!("=> {}", get_result(&result)));
    t.end()
}

fn recovery_after_crash_before_commit() -> String {
    let mut t = Transcript::new(
        "Large put B over A crashes after writing its blob, before its compare-and-write; recovery re-reads the row, deletes B (unreferenced), keeps A (referenced), removes the entry.",
    );
    t.world.insert_large(key(), A, LARGE, None, 1);
    t.given();
    let mut put = large_put(B, 2);
    t.section("large put \"k\" rev B (change 2, value 2) until its blob is written");
    t.steps(&mut put, OpContext::put_large(2, LARGE), 3);
    let _crashed = put; // the machine is abandoned mid-operation
    t.line("!! crash: the put is gone; its change-log entry and blob B stay behind");
    t.section("after the crash");
    let state = t.world.to_string();
    t.text.push_str(&state);
    let safety = check_safety(&t.world).map_or_else(|v| v.to_string(), |()| "ok".into());
    t.line(format_args!(
        "safety: {safety} (blob B is covered by its entry)"
    ));
    t.section("recovery");
    let report = t.finish(&mut Recovery::new(CONFIG), OpContext::read());
    t.line(format_args!("=> {report:?}"));
    t.end()
}

// --- Comparing with the files ----------------------------------------------------------------

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        const SCENARIOS: &[&str] = &[$(stringify!($name)),*];
        mod scenario {
            $(
                #[test]
                fn $name() {
                    super::check(stringify!($name), &super::$name());
                }
            )*
        }
    };
}

scenarios!(
    small_put_fresh,
    small_put_over_tombstone,
    large_put_fresh,
    large_overwrite,
    large_put_losing_race,
    cas_lost_response_large_fresh,
    cas_lost_response_small_over_tombstone,
    delete_large,
    get_racing_overwrite_and_cleanup,
    recovery_after_crash_before_commit,
);

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("transcripts")
}

fn blessing() -> bool {
    std::env::var_os("CAIRN_BLESS").is_some_and(|v| v == "1")
}

fn check(name: &str, actual: &str) {
    let path = dir().join(format!("{name}.txt"));
    if blessing() {
        std::fs::create_dir_all(dir()).expect("create the transcripts directory");
        std::fs::write(&path, actual).expect("write the transcript");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nto create it: CAIRN_BLESS=1 cargo test -p cairn-tests --test transcripts",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "transcript {name} changed (- file, + now):\n{}\nif the change is intended: CAIRN_BLESS=1 cargo test -p cairn-tests --test transcripts",
            line_diff(&expected, actual)
        );
    }
}

/// A unified-style line diff (longest common subsequence; transcripts are short).
fn line_diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            writeln!(out, "  {}", a[i]).unwrap();
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            writeln!(out, "- {}", a[i]).unwrap();
            i += 1;
        } else {
            writeln!(out, "+ {}", b[j]).unwrap();
            j += 1;
        }
    }
    out
}

#[test]
fn every_transcript_file_belongs_to_a_scenario() {
    if blessing() {
        return;
    }
    for entry in std::fs::read_dir(dir()).expect("the transcripts directory exists") {
        let path = entry.expect("readable directory entry").path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        assert!(
            path.extension().is_some_and(|e| e == "txt") && SCENARIOS.contains(&stem),
            "{} is not the transcript of any scenario; remove it or add the scenario",
            path.display()
        );
    }
}

#[test]
fn transcripts_start_with_a_comment_line() {
    for name in SCENARIOS {
        let text = std::fs::read_to_string(dir().join(format!("{name}.txt"))).unwrap_or_default();
        assert!(
            blessing() || text.starts_with("# "),
            "{name}.txt must start with a `# ` line describing the scenario"
        );
    }
}

#[test]
fn line_diff_marks_removed_and_added_lines() {
    let diff = line_diff("a\nb\nc\n", "a\nx\nc\nd\n");
    assert_eq!(diff, "  a\n- b\n+ x\n  c\n+ d\n");
}
