//! The discrete-event simulator: one seed, one virtual clock, one event queue keyed by
//! (time, sequence), N clients running tiered operations on a few hot keys against the
//! [`World`], with faults and crashes drawn from the seed.
//!
//! Every request a machine emits becomes two events: the tier *applies* it after a drawn latency
//! (at which point a fault may keep it from applying, or apply it and fail the answer anyway), and
//! the machine *receives* the answer after another. Answers of different clients therefore arrive
//! in any order. Each client runs one foreground operation at a time; the cleanups its puts and
//! deletes hand back run beside it as tasks of their own.
//!
//! A crash drops all of a client's machines at a step boundary. Requests it had in flight that
//! the tier had not applied yet are decided on the spot (they land or they never will: a failed
//! request never applies later), and the client restarts as a new incarnation that first runs
//! [`Recovery`]. The change log's scan skips entries that live machines of any client still own
//! (the world's *held* set), so recovery never collects a change that is still in flight.
//!
//! A run has two phases. **Safety**: faults on, the invariants checked after every step.
//! **Liveness**: once every operation has started, faults stop; everything in flight finishes,
//! a final recovery runs, and within a budget of events the tiers must be quiescent. Then the
//! history is checked for per-key linearizability and acknowledged writes for durability.

use crate::bugs::Bug;
use crate::durability::{Durability, LostWrite, Ticket};
use crate::history::{Kind, Outcome, Record, RIVAL};
use crate::keys;
use crate::linearizability::{self, Verdict};
use crate::params::{Options, Params, INLINE_THRESHOLD};
use crate::stats::{Counter, Stats};
use crate::tape::{Draw, Label, Tape};
use crate::trace::{Sink, Trace};
use crate::world::{
    self, check_quiescent, check_request, check_safety, check_safety_of, Answer, CasMode,
    OpContext, Violation, World, WorldBug,
};
use cairn_core::limits::MAX_REDIRECT_HOPS;
use cairn_core::{
    BlobId, ByteRange, Change, ChangeId, Cleanup, CleanupOutcome, CleanupReport, Completion,
    Delete, Found, Get, GetResult, IdGen, Instant, Key, LargePut, Machine, MutationDone,
    ObjectMeta, Phase, Poll, ReadError, Recovery, RecoveryReport, Request, Revision, SmallPut,
    Tier, WriteOutcome,
};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

/// Events the liveness phase may take before the run counts as not converging. A healthy run
/// needs a few thousand.
pub const LIVENESS_EVENT_BUDGET: u64 = 200_000;
/// Virtual time the liveness phase may take, in milliseconds: far more than the longest cleanup
/// backoff chain a seed can draw.
pub const LIVENESS_TIME_BUDGET_MS: u64 = 10 * 60 * 1000;
/// Where the virtual clock starts (any value works; a non-zero one catches code that confuses an
/// instant with a duration).
const EPOCH_MS: u64 = 1_000_000;
/// The longest a crashed client stays down, in milliseconds.
const MAX_DOWNTIME_MS: u64 = 300;
/// Chance (per million) that a crashed client's unapplied request lands anyway.
const CRASH_APPLY_CHANCE: u32 = 500_000;

/// Where a run's decisions come from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum TapeSource {
    /// Drawn from the seed (the fast path).
    #[default]
    Live,
    /// Drawn from the seed and recorded (for shrinking).
    Record,
    /// Played back from a recording (edited by the shrinker).
    Replay(Vec<u64>),
}

/// Why a run failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A safety invariant broke during the run.
    Safety {
        /// The broken invariant.
        violation: Violation,
        /// When.
        at: Instant,
        /// The event number.
        event: u64,
    },
    /// After liveness, the tiers were not quiescent.
    Quiescence(Violation),
    /// A key's history has no linearization.
    NotLinearizable {
        /// The key's index.
        key: usize,
        /// The operations on the key, in invocation order.
        history: Vec<Record>,
    },
    /// A write acknowledged as committed, with no later write on its key, is not what the key
    /// holds after a crash (or at the end).
    LostWrite {
        /// The key's index.
        key: usize,
        /// The value tag that should be visible (`None`: absent).
        expected: Option<u64>,
        /// What is visible.
        found: Option<u64>,
    },
    /// A read reported its object lost (a live tombstone whose blob is gone) while the world
    /// held no such tombstone: the safety checks, run after every event, would have caught a
    /// real loss first, so the read cried wolf where it should have followed the key on.
    FalseLoss {
        /// The key's index.
        key: usize,
        /// The revision the read called lost.
        revision: Revision,
    },
    /// A read failed with an I/O error although its own requests to that tier were not failed
    /// [`Config::io_attempts`](cairn_core::Config::io_attempts) times in a row, the only way a
    /// get runs out of attempts: the error did not happen, the read made it up.
    FalseIoError {
        /// The key's index.
        key: usize,
        /// The tier the read blamed.
        tier: Tier,
        /// How many of the read's last answers were injected failures of requests to `tier`.
        failed: u8,
        /// The attempts a get makes per request.
        attempts: u8,
    },
    /// A read gave up as unstable (the key kept changing under it) before it had seen more than
    /// [`MAX_REDIRECT_HOPS`] blobs vanish: it stopped following the key too early.
    FalseUnstable {
        /// The key's index.
        key: usize,
        /// How many blobs the read found missing.
        vanished: u8,
    },
    /// A read refused its range as not satisfiable, yet the simulator asks only `From(0)`,
    /// which every object it writes (at least one byte) satisfies: the read resolved the range
    /// against a size nobody wrote.
    FalseRangeError {
        /// The key's index.
        key: usize,
        /// The object size the read resolved the range against.
        size: u64,
    },
    /// A read returned a value with a size or an expiry other than the ones it was written with
    /// (the simulator chooses both: the core takes an absolute expiry, never a time-to-live).
    WrongMetadata {
        /// The key's index.
        key: usize,
        /// The value tag read.
        value: u64,
        /// What the write gave it.
        written: Metadata,
        /// What the read reported.
        read: Metadata,
    },
    /// The liveness phase did not converge within its budget.
    NoConvergence {
        /// What was still going on.
        what: String,
    },
    /// A machine (or the world) panicked: a core assertion fired, or a contract was broken.
    Panic {
        /// The panic message and location.
        message: String,
    },
}

impl Failure {
    /// Which checker caught it, in a word or two.
    pub fn checker(&self) -> &'static str {
        match self {
            Failure::Safety { violation, .. } | Failure::Quiescence(violation) => match violation {
                Violation::DanglingTombstone { problem, .. } if problem.is_mismatch() => {
                    "a tombstone describes its blob"
                }
                Violation::DanglingTombstone { .. } => "no dangling tombstone",
                Violation::OrphanBlob { .. } => "no orphan blob",
                Violation::DeletedWhileReferenced { .. } => "no blob deleted while referenced",
                Violation::OpenLogEntry { .. } => "quiescence: open log entry",
                Violation::UnreferencedBlob { .. } => "quiescence: unreferenced blob",
            },
            Failure::NotLinearizable { .. } => "linearizability",
            Failure::LostWrite { .. } => "acknowledged writes survive crashes",
            Failure::FalseLoss { .. } => "no read reports a loss that did not happen",
            Failure::FalseIoError { .. } => "no read reports an I/O error that did not happen",
            Failure::FalseUnstable { .. } => "no read gives up before its redirect limit",
            Failure::FalseRangeError { .. } => "no read refuses a range that fits",
            Failure::WrongMetadata { .. } => "reads return the metadata written",
            Failure::NoConvergence { .. } => "liveness",
            Failure::Panic { .. } => "assertion (panic)",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Safety {
                violation,
                at,
                event,
            } => write!(f, "safety violated at {at} (event {event}): {violation}"),
            Failure::Quiescence(violation) => {
                write!(f, "not quiescent after liveness: {violation}")
            }
            Failure::NotLinearizable { key, history } => {
                writeln!(f, "history of k{key} is not linearizable:")?;
                for record in history {
                    writeln!(f, "  {record}")?;
                }
                Ok(())
            }
            Failure::LostWrite {
                key,
                expected,
                found,
            } => write!(
                f,
                "acknowledged write lost on k{key}: expected {}, found {}",
                tag(*expected),
                tag(*found)
            ),
            Failure::FalseLoss { key, revision } => write!(
                f,
                "a read of k{key} reported revision {revision} lost, yet no tombstone dangled"
            ),
            Failure::FalseIoError {
                key,
                tier,
                failed,
                attempts,
            } => write!(
                f,
                "a read of k{key} failed with a {tier} I/O error, yet only {failed} of its last \
                 {attempts} attempts there were failed"
            ),
            Failure::FalseUnstable { key, vanished } => write!(
                f,
                "a read of k{key} gave up as unstable after {vanished} vanished blobs; it may \
                 only after more than {MAX_REDIRECT_HOPS}"
            ),
            Failure::FalseRangeError { key, size } => write!(
                f,
                "a read of k{key} refused range 0.. for an object of {size} bytes; every object \
                 written has at least one"
            ),
            Failure::WrongMetadata {
                key,
                value,
                written,
                read,
            } => write!(
                f,
                "a read of k{key} returned value {value} with {read}, but it was written with \
                 {written}"
            ),
            Failure::NoConvergence { what } => write!(f, "liveness: did not converge: {what}"),
            Failure::Panic { message } => write!(f, "panic: {message}"),
        }
    }
}

/// The metadata a read reports along with a value: its size and its expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Bytes.
    pub size: u64,
    /// When it expires, if ever.
    pub expires: Option<Instant>,
}

impl Metadata {
    /// What a get or head reports about the object it found.
    pub fn of(found: Found) -> Metadata {
        match found {
            Found::Inline { meta, .. } => Metadata {
                size: meta.size,
                expires: meta.expires,
            },
            Found::LongTerm { tombstone, .. } => Metadata {
                size: tombstone.size,
                expires: tombstone.expires,
            },
        }
    }
}

impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "size {}", self.size)?;
        match self.expires {
            Some(at) => write!(f, " expiring at {at}"),
            None => f.write_str(" and no expiry"),
        }
    }
}

fn tag(value: Option<u64>) -> String {
    value.map_or_else(|| "absent".to_owned(), |v| format!("value {v}"))
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// What the seed drew.
    pub params: Params,
    /// The first failure, if any.
    pub failure: Option<Failure>,
    /// Counters.
    pub stats: Stats,
    /// The hash of every event: equal for equal seeds.
    pub trace_hash: u64,
    /// The decisions, if recorded.
    pub draws: Vec<Draw>,
    /// The readable trace, if it was buffered.
    pub trace: Option<String>,
}

/// Runs one seed.
pub fn run(seed: u64, options: &Options, tape: TapeSource, sink: Sink) -> RunReport {
    crate::panics::install_quiet_hook();
    let mut sim = Sim::new(seed, options, tape, sink);
    let result = crate::panics::quietly(|| panic::catch_unwind(AssertUnwindSafe(|| sim.run())));
    if let Err(message) = result {
        sim.fail(Failure::Panic { message });
    }
    sim.finish()
}

// --- Tasks ---------------------------------------------------------------------------------

/// The machine a task drives.
enum Job {
    Small(SmallPut<'static>),
    Large(LargePut<'static>),
    Delete(Delete<'static>),
    Get(Get<'static>),
    Cleanup(Cleanup<&'static Key>),
    // Boxed: recovery keeps an owned key (a kilobyte) for the entry it cleans.
    Recovery(Box<Recovery>),
}

/// What a job wants next, with its request re-borrowed from the static key table so that it can
/// sit in the event queue.
enum Next {
    Io(Request<'static>),
    Wait(Instant),
    Wrote(MutationDone),
    Read(GetResult),
    Cleaned(CleanupReport),
    Recovered(RecoveryReport),
}

fn lift<T>(poll: Poll<'_, T>, done: fn(T) -> Next) -> Next {
    match poll {
        Poll::Io(request) => Next::Io(rekey(request)),
        Poll::Wait(until) => Next::Wait(until),
        Poll::Done(output) => done(output),
    }
}

impl Job {
    fn poll(&mut self, now: Instant) -> Next {
        match self {
            Job::Small(m) => lift(m.poll(now), Next::Wrote),
            Job::Large(m) => lift(m.poll(now), Next::Wrote),
            Job::Delete(m) => lift(m.poll(now), Next::Wrote),
            Job::Get(m) => lift(m.poll(now), Next::Read),
            Job::Cleanup(m) => lift(m.poll(now), Next::Cleaned),
            Job::Recovery(m) => lift(m.poll(now), Next::Recovered),
        }
    }

    fn handle(&mut self, completion: Completion<'_>) {
        match self {
            Job::Small(m) => m.handle(completion),
            Job::Large(m) => m.handle(completion),
            Job::Delete(m) => m.handle(completion),
            Job::Get(m) => m.handle(completion),
            Job::Cleanup(m) => m.handle(completion),
            Job::Recovery(m) => m.handle(completion),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Job::Small(_) => "small_put",
            Job::Large(_) => "large_put",
            Job::Delete(_) => "delete",
            Job::Get(_) => "get",
            Job::Cleanup(_) => "cleanup",
            Job::Recovery(_) => "recovery",
        }
    }
}

/// The same request, borrowing the simulator's static copy of its key.
fn rekey(request: Request<'_>) -> Request<'static> {
    let k = keys::to_static;
    let blob = |b: BlobId<'_>| BlobId {
        key: k(b.key),
        revision: b.revision,
    };
    match request {
        Request::HvRead { key, payload, now } => Request::HvRead {
            key: k(key),
            payload,
            now,
        },
        Request::HvPutNonTombstone { key, meta, now } => Request::HvPutNonTombstone {
            key: k(key),
            meta,
            now,
        },
        Request::HvDeleteNonTombstone { key, now } => {
            Request::HvDeleteNonTombstone { key: k(key), now }
        }
        Request::HvCompareAndWrite {
            key,
            expected,
            write,
            now,
        } => Request::HvCompareAndWrite {
            key: k(key),
            expected,
            write,
            now,
        },
        Request::LtPut { blob: b, expires } => Request::LtPut {
            blob: blob(b),
            expires,
        },
        Request::LtGet { blob: b, span } => Request::LtGet {
            blob: blob(b),
            span,
        },
        Request::LtHead { blob: b } => Request::LtHead { blob: blob(b) },
        Request::LtDelete { blob: b } => Request::LtDelete { blob: blob(b) },
        Request::LogRecord { id, change } => Request::LogRecord {
            id,
            change: Change {
                key: k(change.key),
                new: change.new,
                old: change.old,
            },
        },
        Request::LogRemove { id } => Request::LogRemove { id },
        Request::LogScan { after } => Request::LogScan { after },
    }
}

/// The key a request touches, if it names one.
fn request_key(request: &Request<'static>) -> Option<&'static Key> {
    match *request {
        Request::HvRead { key, .. }
        | Request::HvPutNonTombstone { key, .. }
        | Request::HvDeleteNonTombstone { key, .. }
        | Request::HvCompareAndWrite { key, .. } => Some(key),
        Request::LtPut { blob, .. }
        | Request::LtGet { blob, .. }
        | Request::LtHead { blob }
        | Request::LtDelete { blob } => Some(blob.key),
        Request::LogRecord { change, .. } => Some(change.key),
        Request::LogRemove { .. } | Request::LogScan { .. } => None,
    }
}

/// The request a rival writer lands just before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Before {
    /// A compare-and-write: the mutation's read is stale when it lands.
    Cas,
    /// A get's blob read: the blob its high-volume read found is overwritten and cleaned up.
    BlobRead,
}

/// What happens to one request between the machine and the tier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Deliver,
    /// Fails without taking effect.
    FailBefore,
    /// Fails without taking effect, and the answer says so ([`Completion::Refused`]).
    Refused,
    /// Takes effect, then reports failure.
    FailAfter,
    /// A compare-and-write that takes effect and whose answer is lost; `timeout`: after a long
    /// delay.
    CasLost {
        timeout: bool,
    },
    /// A compare-and-write delivered twice in a row; the second answer is returned.
    CasDuplicated,
    /// A blob write that leaves a partial blob and fails.
    Partial,
}

impl Fate {
    fn applies(self) -> bool {
        !matches!(self, Fate::FailBefore | Fate::Refused)
    }
}

/// A request between the machine and its answer.
struct InFlight {
    request: Request<'static>,
    fate: Fate,
    /// Set once the tier has performed it (or decided not to).
    settled: bool,
    answer: Option<Answer>,
    issued: u64,
}

struct Task {
    client: usize,
    job: Job,
    /// The history record of a foreground operation.
    record: Option<usize>,
    ctx: OpContext,
    /// The change-log entry this task owns, held in the world so scans skip it.
    held: Option<ChangeId>,
    io: Option<InFlight>,
    /// The value tag the last answer read.
    last_read: Option<u64>,
    /// A get's blob was missing on the last answer.
    vanished: bool,
    /// How many blobs a get found missing.
    vanished_blobs: u8,
    /// The tier of the last request and how many answers in a row, up to the last one, were
    /// injected failures of requests to it (`None`: the last answer was delivered).
    failing: Option<(Tier, u8)>,
    /// A compare-and-write of this mutation failed.
    cas_failed: bool,
    /// A write's ticket for the durability check.
    ticket: Option<Ticket>,
}

impl Task {
    /// A task of `client` with nothing in flight, no record, no entry held, reading no value.
    fn new(client: usize, job: Job) -> Task {
        Task {
            client,
            job,
            record: None,
            ctx: OpContext::read(),
            held: None,
            io: None,
            last_read: None,
            vanished: false,
            vanished_blobs: 0,
            failing: None,
            cas_failed: false,
            ticket: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TaskRef {
    slot: u32,
    generation: u32,
}

struct Slot {
    generation: u32,
    task: Option<Task>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Start { client: u32, incarnation: u32 },
    Apply(TaskRef),
    Respond(TaskRef),
    Wake(TaskRef),
    Restart { client: u32 },
}

struct Client {
    incarnation: u32,
    alive: bool,
    ids: IdGen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Safety,
    Liveness { since_event: u64, since: Instant },
}

struct Sim {
    seed: u64,
    options: Options,
    params: Params,
    tape: Tape,
    world: World,
    now: Instant,
    queue: BinaryHeap<Reverse<(Instant, u64, Event)>>,
    sequence: u64,
    slots: Vec<Slot>,
    free: Vec<u32>,
    clients: Vec<Client>,
    history: Vec<Record>,
    /// The history's clock: one tick per invocation or response.
    clock: u64,
    /// What each write gave its value tag (value `v` at index `v - 1`).
    written: Vec<Metadata>,
    ops_left: usize,
    stage: Stage,
    final_recovery: bool,
    durability: Durability,
    rival_ids: IdGen,
    /// The latest-issued request answered so far (an answer to an earlier one is reordered).
    latest_answered: u64,
    issued: u64,
    events: u64,
    stats: Stats,
    trace: Trace,
    failure: Option<Failure>,
}

/// Mixes a seed with small numbers into an unrelated seed (SplitMix64 finaliser).
fn derive(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether `seed` is one of the 1 % that fail on purpose under `--canary`.
pub fn is_canary_seed(seed: u64) -> bool {
    seed % 100 == 42
}

impl Sim {
    fn new(seed: u64, options: &Options, tape: TapeSource, sink: Sink) -> Sim {
        let mut tape = match tape {
            TapeSource::Live => Tape::live(seed),
            TapeSource::Record => Tape::recording(seed),
            TapeSource::Replay(values) => Tape::replay(values),
        };
        let params = Params::draw(&mut tape, options);
        let core_bug = options.bug.and_then(Bug::core);
        let mut world = World::with_mode(params.cas_mode);
        world.plant(core_bug, options.bug.and_then(Bug::world));
        let now = Instant::from_millis(EPOCH_MS);
        world.advance_to(now);
        let clients = (0..options.clients)
            .map(|c| Client {
                incarnation: 0,
                alive: true,
                ids: IdGen::planted(derive(seed, c as u64, 0), core_bug),
            })
            .collect();
        let mut stats = Stats::default();
        stats.seeds = 1;
        stats.hit(match params.cas_mode {
            CasMode::Reapply => Counter::ReapplySeed,
            CasMode::Skip => Counter::SkipSeed,
        });
        let mut trace = Trace::new(sink);
        trace.line(format_args!("seed {seed}: {params}"));
        Sim {
            seed,
            options: *options,
            params,
            tape,
            world,
            now,
            queue: BinaryHeap::with_capacity(4 * options.clients),
            sequence: 0,
            slots: Vec::with_capacity(4 * options.clients),
            free: Vec::new(),
            clients,
            history: Vec::with_capacity(options.ops + 16),
            clock: 0,
            written: Vec::with_capacity(options.ops + 16),
            ops_left: options.ops,
            stage: Stage::Safety,
            final_recovery: false,
            durability: Durability::new(params.keys),
            rival_ids: IdGen::planted(derive(seed, u64::MAX, 0), core_bug),
            latest_answered: 0,
            issued: 0,
            events: 0,
            stats,
            trace,
            failure: None,
        }
    }

    fn fail(&mut self, failure: Failure) {
        if self.failure.is_none() {
            self.trace.line(format_args!("!! {failure}"));
            self.failure = Some(failure);
        }
    }

    fn finish(mut self) -> RunReport {
        self.stats.events = self.events;
        self.stats.requests = self.issued;
        self.stats.add(Counter::Expired, self.world.expired_seen());
        self.stats.failed = u64::from(self.failure.is_some());
        let trace = self.trace.buffered().map(str::to_owned);
        RunReport {
            seed: self.seed,
            params: self.params,
            failure: self.failure,
            stats: self.stats,
            trace_hash: self.trace.hash(),
            draws: self.tape.into_draws(),
            trace,
        }
    }

    fn faulty(&self) -> bool {
        self.stage == Stage::Safety
    }

    fn schedule(&mut self, at: Instant, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence, event)));
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    // --- The loop ----------------------------------------------------------------------------

    fn run(&mut self) {
        for client in 0..self.clients.len() {
            let at = self.now + self.think();
            self.schedule(
                at,
                Event::Start {
                    client: client as u32,
                    incarnation: 0,
                },
            );
        }
        loop {
            while let Some(Reverse((at, _, event))) = self.queue.pop() {
                self.step(at, event);
                if self.failure.is_some() {
                    return;
                }
            }
            if self.final_recovery {
                break;
            }
            // Everything has finished: one last recovery pass collects what cleanups deferred.
            self.enter_liveness();
            self.final_recovery = true;
            self.spawn_recovery(0);
            if self.failure.is_some() {
                return;
            }
        }
        self.final_checks();
    }

    fn step(&mut self, at: Instant, event: Event) {
        debug_assert!(at >= self.now, "time runs forward");
        self.now = at;
        self.world.advance_to(at);
        self.events += 1;
        self.trace.word(at.as_millis());
        match event {
            Event::Start {
                client,
                incarnation,
            } => self.start(client as usize, incarnation),
            Event::Apply(task) => self.apply(task),
            Event::Respond(task) => self.respond(task),
            Event::Wake(task) => self.advance(task),
            Event::Restart { client } => self.restart(client as usize),
        }
        if self.failure.is_some() {
            return;
        }
        match self.stage {
            Stage::Safety if self.ops_left == 0 => self.enter_liveness(),
            Stage::Safety => self.maybe_crash(),
            Stage::Liveness { since_event, since } => {
                let events = self.events - since_event;
                let elapsed = at.as_millis() - since.as_millis();
                if events > LIVENESS_EVENT_BUDGET || elapsed > LIVENESS_TIME_BUDGET_MS {
                    let tasks = self.slots.iter().filter_map(|s| s.task.as_ref());
                    let names: Vec<_> = tasks.map(|t| t.job.name()).collect();
                    self.fail(Failure::NoConvergence {
                        what: format!(
                            "{events} events and {elapsed} ms after faults stopped, still running: {}",
                            names.join(", ")
                        ),
                    });
                }
            }
        }
    }

    fn enter_liveness(&mut self) {
        if self.stage != Stage::Safety {
            return;
        }
        self.trace
            .line(format_args!("[{}] -- liveness: faults off --", self.now));
        self.stage = Stage::Liveness {
            since_event: self.events,
            since: self.now,
        };
        if self.options.canary && is_canary_seed(self.seed) {
            self.canary();
        }
    }

    /// Fails the seed on purpose, through the checkers: removes the blob of a live tombstone,
    /// or, if there is none, leaves a blob nothing covers.
    fn canary(&mut self) {
        let now = self.now;
        let target = self.world.rows().find_map(|(key, row)| match row {
            world::Row::Tombstone(t) if row.is_live(now) => {
                Some((keys::to_static(key), t.revision))
            }
            _ => None,
        });
        let key = match target {
            Some((key, revision)) => {
                self.world.remove_blob(key, revision);
                key
            }
            None => {
                let key = keys::key(0);
                let blob = world::Blob {
                    size: 1,
                    expires: None,
                    value: 0,
                    complete: true,
                };
                self.world
                    .set_blob(key, cairn_core::Revision(u128::MAX), blob);
                key
            }
        };
        self.trace.line(format_args!(
            "[{}] !! canary: tampered with {key}",
            self.now
        ));
        self.check_key(key);
    }

    // --- Operations ---------------------------------------------------------------------------

    fn think(&mut self) -> cairn_core::Duration {
        cairn_core::Duration::from_millis(self.tape.between(Label::Think, 0, self.params.think_max))
    }

    fn start(&mut self, client: usize, incarnation: u32) {
        let c = &self.clients[client];
        if !c.alive || c.incarnation != incarnation {
            return; // a start scheduled before a crash
        }
        if self.stage != Stage::Safety || self.ops_left == 0 {
            return; // the client is done
        }
        self.ops_left -= 1;
        let now = self.now;
        let config = self.params.config;
        let kind = self.tape.weighted(Label::OpKind, &self.params.weights);
        let key_index = self.tape.below(Label::Key, self.params.keys as u64) as usize;
        let key = keys::key(key_index);
        let mut ctx = OpContext::read();
        let mut held = None;
        let (job, kind) = match kind {
            0 => {
                let range = (self.tape.below(Label::Range, 4) == 3).then_some(ByteRange::From(0));
                (Job::Get(Get::new(key, range, config)), Kind::Get)
            }
            1 => (Job::Get(Get::head(key, config)), Kind::Head),
            2 | 3 => {
                let expires = self.ttl();
                let id = self.clients[client].ids.change_id(now);
                held = Some(id);
                if kind == 2 {
                    let size = self.tape.between(Label::Size, 1, INLINE_THRESHOLD);
                    let value = self.mint(size, expires);
                    let meta = ObjectMeta {
                        size,
                        created: now,
                        expires,
                    };
                    ctx = OpContext::put(value);
                    let job = Job::Small(SmallPut::new(key, meta, id, config));
                    (job, Kind::SmallPut { value, expires })
                } else {
                    let size =
                        self.tape
                            .between(Label::Size, INLINE_THRESHOLD + 1, 10 * INLINE_THRESHOLD);
                    let value = self.mint(size, expires);
                    let revision = self.clients[client].ids.revision(now);
                    ctx = OpContext::put_large(value, size);
                    let job = Job::Large(LargePut::new(key, revision, expires, id, config));
                    (job, Kind::LargePut { value, expires })
                }
            }
            _ => {
                let id = self.clients[client].ids.change_id(now);
                held = Some(id);
                (Job::Delete(Delete::new(key, id, config)), Kind::Delete)
            }
        };
        let start = self.tick();
        self.history.push(Record {
            client: client as u32,
            key: key_index as u16,
            kind,
            start,
            end: u64::MAX,
            start_ms: now.as_millis(),
            end_ms: u64::MAX,
            outcome: Outcome::Pending,
        });
        let ticket = kind.is_write().then(|| self.durability.started(key_index));
        if let Some(id) = held {
            self.world.hold(id);
        }
        if self.trace.enabled() {
            let written = match kind.written() {
                Some((value, Some(e))) => format!(" value={value} expires={e}"),
                Some((value, None)) => format!(" value={value}"),
                None => String::new(),
            };
            self.trace.line(format_args!(
                "[{now}] c{client} starts {} on {key}{written}",
                job.name()
            ));
        }
        let task = Task {
            record: Some(self.history.len() - 1),
            ctx,
            held,
            ticket,
            ..Task::new(client, job)
        };
        let task = self.spawn(task);
        self.advance(task);
    }

    /// A fresh value tag for a write of `size` bytes expiring at `expires`, remembered so that
    /// every read of it can be checked.
    fn mint(&mut self, size: u64, expires: Option<Instant>) -> u64 {
        self.written.push(Metadata { size, expires });
        self.written.len() as u64
    }

    /// The metadata written with value tag `value`.
    fn written(&self, value: u64) -> Metadata {
        let index = value.checked_sub(1).and_then(|i| usize::try_from(i).ok());
        *index
            .and_then(|i| self.written.get(i))
            .unwrap_or_else(|| panic!("a read returned value {value}, which nothing wrote"))
    }

    fn ttl(&mut self) -> Option<Instant> {
        if self.tape.chance(Label::Ttl, self.params.ttl_chance) {
            let ttl = self.tape.between(Label::Ttl, 1, self.params.ttl_max);
            Some(self.now + cairn_core::Duration::from_millis(ttl))
        } else {
            None
        }
    }

    fn spawn(&mut self, task: Task) -> TaskRef {
        match self.free.pop() {
            Some(slot) => {
                let s = &mut self.slots[slot as usize];
                s.task = Some(task);
                TaskRef {
                    slot,
                    generation: s.generation,
                }
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    task: Some(task),
                });
                TaskRef {
                    slot: self.slots.len() as u32 - 1,
                    generation: 0,
                }
            }
        }
    }

    fn task(&mut self, task: TaskRef) -> Option<&mut Task> {
        let slot = &mut self.slots[task.slot as usize];
        if slot.generation == task.generation {
            slot.task.as_mut()
        } else {
            None
        }
    }

    fn remove(&mut self, task: TaskRef) -> Task {
        let slot = &mut self.slots[task.slot as usize];
        assert_eq!(slot.generation, task.generation, "removing a stale task");
        let removed = slot.task.take().expect("removing a live task");
        slot.generation += 1;
        self.free.push(task.slot);
        removed
    }

    fn spawn_recovery(&mut self, client: usize) {
        self.trace
            .line(format_args!("[{}] c{client} starts recovery", self.now));
        let recovery = Job::Recovery(Box::new(Recovery::new(self.params.config)));
        let task = self.spawn(Task::new(client, recovery));
        self.advance(task);
    }

    /// Polls a task until it issues a request, waits, or finishes.
    fn advance(&mut self, tr: TaskRef) {
        let now = self.now;
        let Some(task) = self.task(tr) else {
            return; // a wake-up for a task that crashed
        };
        match task.job.poll(now) {
            Next::Io(request) => self.issue(tr, request),
            Next::Wait(until) => {
                assert!(until > now, "a machine waits for a later instant");
                self.schedule(until, Event::Wake(tr));
            }
            Next::Wrote(done) => self.wrote(tr, done),
            Next::Read(result) => self.read(tr, result),
            Next::Cleaned(report) => self.cleaned(tr, report),
            Next::Recovered(report) => self.recovered(tr, report),
        }
    }

    fn issue(&mut self, tr: TaskRef, request: Request<'static>) {
        let fate = if self.faulty() {
            self.draw_fate(&request)
        } else {
            Fate::Deliver
        };
        let delay = self.latency();
        self.issued += 1;
        let issued = self.issued;
        self.trace.request(&request);
        if self.trace.enabled() {
            let task = self.task(tr).expect("issuing for a live task");
            let (client, name) = (task.client, task.job.name());
            self.trace
                .line(format_args!("[{}] c{client} {name} -> {request}", self.now));
        }
        let task = self.task(tr).expect("issuing for a live task");
        if task.vanished && matches!(request, Request::HvRead { .. }) {
            task.vanished = false;
            self.stats.hit(Counter::VanishedBlobRetried);
        }
        let task = self.task(tr).expect("issuing for a live task");
        task.io = Some(InFlight {
            request,
            fate,
            settled: false,
            answer: None,
            issued,
        });
        let at = self.now + delay;
        self.schedule(at, Event::Apply(tr));
    }

    fn latency(&mut self) -> cairn_core::Duration {
        let spike = self.faulty() && self.tape.chance(Label::Latency, self.params.faults.spike);
        let millis = if spike {
            self.stats.hit(Counter::LatencySpike);
            self.tape.between(Label::Latency, 100, 2_000)
        } else {
            self.tape
                .between(Label::Latency, 1, self.params.latency_max)
        };
        cairn_core::Duration::from_millis(millis)
    }

    fn draw_fate(&mut self, request: &Request<'_>) -> Fate {
        let f = self.params.faults;
        let mut choices: [(u32, Fate); 5] = [(0, Fate::Deliver); 5];
        let mut n = 0;
        let mut offer = |rate: u32, fate: Fate| {
            choices[n] = (rate, fate);
            n += 1;
        };
        match request {
            // Half the failures before a high-volume write takes effect say so.
            Request::HvCompareAndWrite { .. } => {
                offer(f.fail_before / 2, Fate::FailBefore);
                offer(f.fail_before / 2, Fate::Refused);
                offer(f.cas_lost / 2, Fate::CasLost { timeout: false });
                offer(f.cas_lost / 2, Fate::CasLost { timeout: true });
                offer(f.cas_duplicated, Fate::CasDuplicated);
            }
            Request::LtPut { .. } => {
                offer(f.fail_before, Fate::FailBefore);
                offer(f.fail_after, Fate::FailAfter);
                offer(f.partial_blob, Fate::Partial);
            }
            Request::LtDelete { .. } => {
                offer(f.delete_fails, Fate::FailBefore);
                offer(f.fail_after, Fate::FailAfter);
            }
            Request::HvPutNonTombstone { .. } | Request::HvDeleteNonTombstone { .. } => {
                offer(f.fail_before / 2, Fate::FailBefore);
                offer(f.fail_before / 2, Fate::Refused);
                offer(f.fail_after, Fate::FailAfter);
            }
            _ => {
                offer(f.fail_before, Fate::FailBefore);
                offer(f.fail_after, Fate::FailAfter);
            }
        }
        let draw = self.tape.below(Label::Fault, 1_000_000) as u32;
        let mut edge = 1_000_000u32;
        for &(rate, fate) in &choices[..n] {
            edge = edge.saturating_sub(rate);
            if draw >= edge && rate > 0 {
                return fate;
            }
        }
        Fate::Deliver
    }

    /// The tier performs (or, by a fault, does not perform) a task's request.
    fn apply(&mut self, tr: TaskRef) {
        let Some(task) = self.task(tr) else {
            return; // crashed meanwhile; its requests were decided then
        };
        let io = task.io.as_ref().expect("an apply event has a request");
        let (request, fate, ctx) = (io.request, io.fate, task.ctx);
        let rival = match request {
            Request::HvCompareAndWrite { .. } => Some((Before::Cas, self.params.faults.rival)),
            // Only a get reads blobs.
            Request::LtGet { .. } | Request::LtHead { .. } => {
                Some((Before::BlobRead, self.params.faults.rival_read))
            }
            _ => None,
        };
        if let Some((before, rate)) = rival {
            if self.faulty() && rate > 0 && self.tape.chance(Label::Rival, rate) {
                let key = request_key(&request).expect("a write or blob read names its key");
                self.rival(key, before);
                if self.failure.is_some() {
                    return;
                }
            }
        }
        let answer = self.perform(&request, fate, ctx);
        let counter = match fate {
            Fate::Deliver => None,
            Fate::FailBefore if matches!(request, Request::LtDelete { .. }) => {
                Some(Counter::BlobDeleteFailed)
            }
            Fate::FailBefore => Some(Counter::FailBefore),
            Fate::Refused => Some(Counter::Refused),
            Fate::FailAfter => Some(Counter::FailAfter),
            Fate::CasLost { timeout: false } => Some(Counter::CasResponseLost),
            Fate::CasLost { timeout: true } => Some(Counter::CasTimeout),
            Fate::CasDuplicated => Some(Counter::CasDuplicated),
            Fate::Partial => Some(Counter::PartialBlob),
        };
        if let Some(counter) = counter {
            self.stats.hit(counter);
        }
        if self.trace.enabled() && fate != Fate::Deliver {
            self.trace
                .line(format_args!("[{}] !! {fate:?}: {request}", self.now));
        }
        let delay = match fate {
            Fate::CasLost { timeout: true } => {
                cairn_core::Duration::from_millis(self.tape.between(Label::Latency, 500, 5_000))
            }
            _ => self.latency(),
        };
        let task = self.task(tr).expect("still live");
        let io = task.io.as_mut().expect("still in flight");
        io.settled = true;
        io.answer = answer;
        let at = self.now + delay;
        self.schedule(at, Event::Respond(tr));
    }

    /// Performs `request` per `fate` against the world, with the checks around it. Returns the
    /// answer if the machine is to receive one.
    fn perform(
        &mut self,
        request: &Request<'static>,
        fate: Fate,
        ctx: OpContext,
    ) -> Option<Answer> {
        let lies =
            fate == Fate::Refused && self.world.bug() == Some(WorldBug::RefusedAfterApplying);
        if !fate.applies() && !lies {
            return None;
        }
        // Only a write can break an invariant, and only on its own key; the key a log removal
        // uncovers is the removed entry's.
        let key = match *request {
            Request::LogRemove { id } => self.world.entry(id).map(|c| keys::to_static(&c.key)),
            Request::HvRead { .. }
            | Request::LtGet { .. }
            | Request::LtHead { .. }
            | Request::LogScan { .. }
            | Request::LogRecord { .. } => None,
            _ => request_key(request),
        };
        if let Err(violation) = check_request(&self.world, request) {
            self.safety(violation);
            return None;
        }
        let answer = match fate {
            Fate::Partial => {
                self.world.apply_partial(request, ctx);
                None
            }
            Fate::CasDuplicated => {
                self.world.apply(request, ctx);
                Some(self.world.apply(request, ctx))
            }
            _ => Some(self.world.apply(request, ctx)),
        };
        if let Some(key) = key {
            self.check_key(key);
        }
        match fate {
            Fate::Deliver | Fate::CasDuplicated => answer,
            _ => None,
        }
    }

    fn check_key(&mut self, key: &Key) {
        if let Err(violation) = check_safety_of(&self.world, key) {
            self.safety(violation);
        }
    }

    fn safety(&mut self, violation: Violation) {
        let failure = Failure::Safety {
            violation,
            at: self.now,
            event: self.events,
        };
        self.fail(failure);
    }

    /// Another writer commits on `key`, whole, right now, cleanup included: the race between a
    /// read and a compare-and-write, or between a get's two reads, forced.
    fn rival(&mut self, key: &'static Key, before: Before) {
        let choice = match before {
            Before::Cas => {
                self.stats.hit(Counter::RivalBeforeCas);
                self.tape.below(Label::Rival, 3)
            }
            // A large put: the get's blob vanishes, and its re-read finds another blob to follow
            // (which the next rival may take away again).
            Before::BlobRead => {
                self.stats.hit(Counter::RivalBeforeBlobRead);
                1
            }
        };
        let now = self.now;
        let config = self.params.config;
        let id = self.rival_ids.change_id(now);
        let (kind, done) = match choice {
            0 => {
                let value = self.mint(1, None);
                let meta = ObjectMeta {
                    size: 1,
                    created: now,
                    expires: None,
                };
                let put = SmallPut::new(key, meta, id, config);
                let kind = Kind::SmallPut {
                    value,
                    expires: None,
                };
                (kind, self.run_inline(put, OpContext::put(value)))
            }
            1 => {
                let value = self.mint(INLINE_THRESHOLD + 1, None);
                let revision = self.rival_ids.revision(now);
                let put = LargePut::new(key, revision, None, id, config);
                let ctx = OpContext::put_large(value, INLINE_THRESHOLD + 1);
                let kind = Kind::LargePut {
                    value,
                    expires: None,
                };
                (kind, self.run_inline(put, ctx))
            }
            _ => (
                Kind::Delete,
                self.run_inline(Delete::new(key, id, config), OpContext::read()),
            ),
        };
        let Some(done) = done else { return };
        let outcome = match done.result {
            Ok(WriteOutcome::Committed) => Outcome::Committed,
            Ok(WriteOutcome::Superseded) => Outcome::Superseded,
            Err(_) => unreachable!("a rival runs without faults"),
        };
        let (start, end) = (self.tick(), self.tick());
        self.history.push(Record {
            client: RIVAL,
            key: keys::index(key) as u16,
            kind,
            start,
            end,
            start_ms: now.as_millis(),
            end_ms: now.as_millis(),
            outcome,
        });
        self.durability.interfered(keys::index(key));
        self.trace.line(format_args!(
            "[{now}] !! rival {} on {key} lands first: {done}",
            kind.name()
        ));
        if let Some(pending) = done.cleanup {
            self.run_inline(Cleanup::new(key, pending, config), OpContext::read());
        }
    }

    /// Runs a machine to the end right now, without faults, checking every step.
    fn run_inline<M: Machine>(&mut self, mut machine: M, ctx: OpContext) -> Option<M::Output> {
        for _ in 0..world::MAX_RUN_STEPS {
            let answer = match machine.poll(self.now) {
                Poll::Io(request) => {
                    let request = rekey(request);
                    self.trace.request(&request);
                    self.perform(&request, Fate::Deliver, ctx)?
                }
                Poll::Wait(_) => unreachable!("nothing fails, so nothing backs off"),
                Poll::Done(output) => return Some(output),
            };
            let completion = answer.completion();
            self.trace.completion(&completion);
            machine.handle(completion);
        }
        panic!("an inline machine is looping")
    }

    /// A task receives the answer to its request.
    fn respond(&mut self, tr: TaskRef) {
        let Some(task) = self.task(tr) else {
            return;
        };
        let io = task.io.take().expect("a respond event has a request");
        debug_assert!(io.settled);
        let failed = match io.fate {
            Fate::Refused => Completion::Refused,
            _ => Completion::Failed,
        };
        let completion = io.answer.as_ref().map_or(failed, Answer::completion);
        match &io.answer {
            Some(answer) => {
                task.last_read = answer.read;
                task.failing = None;
            }
            None => {
                let tier = io.request.tier();
                task.failing = match task.failing {
                    Some((t, n)) if t == tier => Some((tier, n.saturating_add(1))),
                    _ => Some((tier, 1)),
                };
            }
        }
        if matches!(completion, Completion::Blob { found: false }) {
            task.vanished = true;
            task.vanished_blobs = task.vanished_blobs.saturating_add(1);
        }
        if matches!(io.request, Request::HvCompareAndWrite { .. })
            && matches!(completion, Completion::Failed | Completion::Refused)
        {
            task.cas_failed = true;
        }
        task.job.handle(completion);
        self.trace.completion(&completion);
        if self.trace.enabled() {
            let task = self.task(tr).expect("still live");
            let (client, name) = (task.client, task.job.name());
            self.trace.line(format_args!(
                "[{}] c{client} {name} <- {completion}",
                self.now
            ));
        }
        if io.issued < self.latest_answered {
            self.stats.hit(Counter::Reordered);
        }
        self.latest_answered = self.latest_answered.max(io.issued);
        self.advance(tr);
    }

    // --- Endings ------------------------------------------------------------------------------

    fn end_record(&mut self, record: usize, outcome: Outcome) {
        let end = self.tick();
        let r = &mut self.history[record];
        r.end = end;
        r.end_ms = self.now.as_millis();
        r.outcome = outcome;
        self.stats.ops += 1;
    }

    /// A foreground task ended: the client thinks, then starts its next operation.
    fn next_op(&mut self, client: usize) {
        let at = self.now + self.think();
        let incarnation = self.clients[client].incarnation;
        self.schedule(
            at,
            Event::Start {
                client: client as u32,
                incarnation,
            },
        );
    }

    fn wrote(&mut self, tr: TaskRef, done: MutationDone) {
        let task = self.remove(tr);
        let record = task.record.expect("a mutation has a record");
        let outcome = match done.result {
            Ok(WriteOutcome::Committed) => Outcome::Committed,
            Ok(WriteOutcome::Superseded) => {
                self.stats.hit(Counter::LostRace);
                Outcome::Superseded
            }
            Err(e) => match e.applied {
                cairn_core::Applied::No => Outcome::NotApplied,
                cairn_core::Applied::Unknown => Outcome::Unknown,
            },
        };
        if task.cas_failed && outcome == Outcome::Committed {
            self.stats.hit(Counter::CasResolvedByRead);
        }
        self.trace.line(format_args!(
            "[{}] c{} {} => {done}",
            self.now,
            task.client,
            task.job.name()
        ));
        self.end_record(record, outcome);
        let r = self.history[record];
        let ticket = task.ticket.expect("a write has a ticket");
        let committed = (outcome == Outcome::Committed).then(|| r.kind.written());
        self.durability.ended(usize::from(r.key), ticket, committed);
        match done.cleanup {
            Some(pending) => {
                debug_assert_eq!(Some(pending.id), task.held, "the cleanup owns the entry");
                let key = keys::key(usize::from(r.key));
                let job = Job::Cleanup(Cleanup::new(key, pending, self.params.config));
                let cleanup = Task {
                    held: Some(pending.id),
                    ..Task::new(task.client, job)
                };
                let cleanup = self.spawn(cleanup);
                self.advance(cleanup);
            }
            None => self.release(task.held),
        }
        self.next_op(task.client);
    }

    fn release(&mut self, held: Option<ChangeId>) {
        if let Some(id) = held {
            self.world.release(id);
        }
    }

    fn read(&mut self, tr: TaskRef, result: GetResult) {
        let task = self.remove(tr);
        let record = task.record.expect("a read has a record");
        let outcome = match result {
            Ok(None) => Outcome::Read(None),
            Ok(Some(found)) => {
                let value = task.last_read.expect("a found object was read");
                let read = Metadata::of(found);
                let written = self.written(value);
                if read != written {
                    self.fail(Failure::WrongMetadata {
                        key: usize::from(self.history[record].key),
                        value,
                        written,
                        read,
                    });
                }
                Outcome::Read(Some(value))
            }
            Err(error) => {
                let key = usize::from(self.history[record].key);
                if let Some(failure) = self.false_read_error(&task, key, error) {
                    self.fail(failure);
                }
                if error == ReadError::Unstable {
                    self.stats.hit(Counter::GetUnstable);
                }
                Outcome::ReadFailed
            }
        };
        self.trace.line(format_args!(
            "[{}] c{} {} => {outcome:?}",
            self.now,
            task.client,
            task.job.name()
        ));
        self.end_record(record, outcome);
        self.next_op(task.client);
    }

    /// Why the error a read of `key` ended with is not one that what happened to the read
    /// explains, if it is not. Each rule is the get machine's own condition for the error.
    fn false_read_error(&self, task: &Task, key: usize, error: ReadError) -> Option<Failure> {
        match error {
            // A real loss is a dangling tombstone, which the safety checks catch first.
            ReadError::Lost(revision) => Some(Failure::FalseLoss { key, revision }),
            ReadError::Io(tier) => {
                let attempts = self.params.config.io_attempts;
                let failed = match task.failing {
                    Some((t, n)) if t == tier => n,
                    _ => 0,
                };
                (failed < attempts).then_some(Failure::FalseIoError {
                    key,
                    tier,
                    failed,
                    attempts,
                })
            }
            // The hop counter starts at 0 and gives up on the vanished blob it meets at
            // MAX_REDIRECT_HOPS: the (MAX_REDIRECT_HOPS + 1)-th.
            ReadError::Unstable => {
                (task.vanished_blobs <= MAX_REDIRECT_HOPS).then_some(Failure::FalseUnstable {
                    key,
                    vanished: task.vanished_blobs,
                })
            }
            ReadError::Range(refused) => Some(Failure::FalseRangeError {
                key,
                size: refused.size,
            }),
        }
    }

    fn cleaned(&mut self, tr: TaskRef, report: CleanupReport) {
        let task = self.remove(tr);
        let Job::Cleanup(cleanup) = &task.job else {
            unreachable!("a cleanup report comes from a cleanup")
        };
        match report.outcome {
            CleanupOutcome::Finished if cleanup.phase() == Phase::Unknown => {
                self.stats.hit(Counter::UnknownOutcomeResolved);
            }
            CleanupOutcome::Finished => {}
            CleanupOutcome::Deferred(_) => self.stats.hit(Counter::CleanupDeferred),
        }
        self.trace.line(format_args!(
            "[{}] c{} cleanup {} => {:?}",
            self.now, task.client, report.id, report.outcome
        ));
        self.release(task.held);
    }

    fn recovered(&mut self, tr: TaskRef, report: RecoveryReport) {
        let task = self.remove(tr);
        self.stats.add(Counter::RecoveryCleanup, report.cleaned);
        self.trace.line(format_args!(
            "[{}] c{} recovery => {report:?}",
            self.now, task.client
        ));
        self.check_durability();
        self.next_op(task.client);
    }

    // --- Crashes ------------------------------------------------------------------------------

    fn maybe_crash(&mut self) {
        if !self.tape.chance(Label::Crash, self.params.faults.crash) {
            return;
        }
        let client = self.tape.below(Label::Crash, self.clients.len() as u64) as usize;
        if self.clients[client].alive {
            self.crash(client);
        }
    }

    fn crash(&mut self, client: usize) {
        self.stats.hit(Counter::Crash);
        self.trace
            .line(format_args!("[{}] !! c{client} crashes", self.now));
        for slot in 0..self.slots.len() {
            let tr = TaskRef {
                slot: slot as u32,
                generation: self.slots[slot].generation,
            };
            match self.task(tr) {
                Some(task) if task.client == client => {}
                _ => continue,
            }
            let task = self.remove(tr);
            if let Some(io) = &task.io {
                // Not yet performed: it lands now or never (a failed request never lands later).
                if !io.settled
                    && io.fate.applies()
                    && self.tape.chance(Label::CrashApply, CRASH_APPLY_CHANCE)
                {
                    self.stats.hit(Counter::CrashInFlightApplied);
                    self.trace.line(format_args!(
                        "[{}] !! lands anyway: {}",
                        self.now, io.request
                    ));
                    self.perform(&io.request, io.fate, task.ctx);
                }
            }
            if let Some(record) = task.record {
                self.end_record(record, Outcome::Crashed);
                if task.ticket.is_some() {
                    self.durability.cut(usize::from(self.history[record].key));
                }
            }
            self.release(task.held);
        }
        let c = &mut self.clients[client];
        c.alive = false;
        self.check_durability();
        let downtime = self.tape.between(Label::Restart, 1, MAX_DOWNTIME_MS);
        let at = self.now + cairn_core::Duration::from_millis(downtime);
        self.schedule(
            at,
            Event::Restart {
                client: client as u32,
            },
        );
    }

    fn restart(&mut self, client: usize) {
        let core_bug = self.options.bug.and_then(Bug::core);
        let c = &mut self.clients[client];
        c.incarnation += 1;
        c.alive = true;
        c.ids = IdGen::planted(
            derive(self.seed, client as u64, u64::from(c.incarnation)),
            core_bug,
        );
        self.trace.line(format_args!(
            "[{}] c{client} restarts (incarnation {})",
            self.now, c.incarnation
        ));
        self.spawn_recovery(client);
    }

    // --- Checks -------------------------------------------------------------------------------

    /// Every key that a lone committed write settled still shows it.
    fn check_durability(&mut self) {
        if self.failure.is_some() {
            return;
        }
        match self.durability.check(&self.world) {
            Ok(checked) => self.stats.add(Counter::AcknowledgedWriteSurvived, checked),
            Err(LostWrite {
                key,
                expected,
                found,
            }) => self.fail(Failure::LostWrite {
                key,
                expected,
                found,
            }),
        }
    }

    fn final_checks(&mut self) {
        if let Err(violation) = check_safety(&self.world) {
            self.safety(violation);
            return;
        }
        if let Err(violation) = check_quiescent(&self.world) {
            self.fail(Failure::Quiescence(violation));
            return;
        }
        self.check_durability();
        if self.failure.is_some() {
            return;
        }
        let mut by_key: Vec<Vec<Record>> = vec![Vec::new(); self.params.keys];
        for record in &self.history {
            by_key[usize::from(record.key)].push(*record);
        }
        for (key, records) in by_key.into_iter().enumerate() {
            let ops: Vec<_> = records.iter().filter_map(Record::to_op).collect();
            match linearizability::check(&ops) {
                Verdict::Linearizable => {}
                Verdict::Inconclusive => self.stats.hit(Counter::LinearizabilityInconclusive),
                Verdict::Violation => {
                    self.fail(Failure::NotLinearizable {
                        key,
                        history: records,
                    });
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim() -> Sim {
        Sim::new(0, &Options::default(), TapeSource::Live, Sink::Off)
    }

    fn get() -> Task {
        let get = Get::new(keys::key(0), None, sim().params.config);
        Task::new(0, Job::Get(get))
    }

    #[test]
    fn an_io_error_needs_every_attempt_failed_on_that_tier() {
        let sim = sim();
        let attempts = sim.params.config.io_attempts;
        let error = ReadError::Io(Tier::Lt);
        let judge = |failing| {
            let task = Task { failing, ..get() };
            sim.false_read_error(&task, 0, error)
        };
        assert_eq!(judge(Some((Tier::Lt, attempts))), None);
        let short = Failure::FalseIoError {
            key: 0,
            tier: Tier::Lt,
            failed: attempts - 1,
            attempts,
        };
        assert_eq!(judge(Some((Tier::Lt, attempts - 1))), Some(short));
        assert!(
            judge(Some((Tier::Hv, attempts))).is_some(),
            "the wrong tier"
        );
        assert!(judge(None).is_some(), "nothing failed");
    }

    #[test]
    fn unstable_needs_more_vanished_blobs_than_redirect_hops() {
        let sim = sim();
        let judge = |vanished_blobs| {
            let task = Task {
                vanished_blobs,
                ..get()
            };
            sim.false_read_error(&task, 0, ReadError::Unstable)
        };
        assert_eq!(judge(MAX_REDIRECT_HOPS + 1), None);
        assert_eq!(
            judge(MAX_REDIRECT_HOPS),
            Some(Failure::FalseUnstable {
                key: 0,
                vanished: MAX_REDIRECT_HOPS
            })
        );
    }

    #[test]
    fn lost_and_range_errors_never_fit() {
        let sim = sim();
        let lost = sim.false_read_error(&get(), 3, ReadError::Lost(Revision(7)));
        assert!(matches!(lost, Some(Failure::FalseLoss { key: 3, .. })));
        let range = ByteRange::From(0).resolve(0).expect_err("nothing to read");
        let refused = sim.false_read_error(&get(), 3, ReadError::Range(range));
        assert_eq!(refused, Some(Failure::FalseRangeError { key: 3, size: 0 }));
    }
}
