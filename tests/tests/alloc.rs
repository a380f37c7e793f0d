//! Proof that the core never touches the heap: a counting global allocator, and every machine
//! driven through every path — happy paths, each failure branch, retries exhausted, lost races,
//! lost responses, refusals, backoff and deferral, vanished and dangling blobs, bad ranges, heads,
//! recovery over several entries — with the heap-operation count read before and after every
//! call into the core (building a key or a machine, `poll`, `handle`, dropping an output).
//!
//! Only calls into the core are measured: the world and the test itself allocate freely between
//! them. The counter is per thread, so tests running in parallel do not disturb each other.

use cairn_core::{
    cas_verdict, is_expired, Applied, ByteRange, ChangeId, Cleanup, CleanupOutcome, CleanupReport,
    Completion, Config, Delete, Found, Get, GetResult, HvRow, HvWrite, IdGen, Instant, Key, KeyBuf,
    LargePut, Machine, MutationDone, ObjectMeta, PendingCleanup, Phase, Poll, ReadError, Recovery,
    RecoveryReport, Request, Revision, SmallPut, Tier, Tombstone, WriteError, WriteOutcome,
};
use cairn_sim::world::{check_safety, CasMode, LoggedChange, OpContext, World, MAX_RUN_STEPS};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// --- The counting allocator ------------------------------------------------------------------

/// Counts every heap operation (allocate, reallocate, free) of the current thread, then defers
/// to the system allocator.
struct Counting;

thread_local! {
    // `const` initialisation: no lazy set-up, so touching it never allocates itself.
    static HEAP_OPS: Cell<u64> = const { Cell::new(0) };
}

fn count_heap_op() {
    // During thread teardown the counter may be gone; nothing is measured then.
    let _ = HEAP_OPS.try_with(|ops| ops.set(ops.get() + 1));
}

fn heap_ops() -> u64 {
    HEAP_OPS.with(Cell::get)
}

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; counting touches only a thread-local `Cell`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_heap_op();
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_heap_op();
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_heap_op();
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count_heap_op();
        // SAFETY: forwarded as is (see the impl).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Evaluates a call into the core and fails the test if it touched the heap.
macro_rules! core {
    ($what:expr, $call:expr) => {{
        let before = heap_ops();
        let result = $call;
        let used = heap_ops() - before;
        assert_eq!(
            used, 0,
            "the core used the heap {used} time(s) in {}",
            $what
        );
        result
    }};
}

#[test]
fn the_counter_sees_allocations_on_this_thread() {
    let before = heap_ops();
    let v: Vec<u64> = Vec::with_capacity(4);
    drop(std::hint::black_box(v));
    assert_eq!(heap_ops() - before, 2, "one allocation and one free");
}

#[test]
#[should_panic(expected = "the core used the heap 1 time(s) in a leak")]
fn the_measurement_fails_on_an_allocation() {
    let leaked = core!("a leak", Box::leak(Box::new(7u8)));
    assert_eq!(*leaked, 7);
}

// --- A driver that measures every core call --------------------------------------------------

const NOW: Instant = Instant::from_millis(1_000_000);
const SMALL: u64 = 5;
const LARGE: u64 = 2_000_000;
const A: Revision = Revision(0xA);
const B: Revision = Revision(0xB);
const C: Revision = Revision(0xC);

/// Which requests fail, counted over everything one harness drives (mutation and cleanup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Nothing fails.
    Healthy,
    /// Only request `n` fails; `applied`: it takes effect first and only its response is lost.
    At { n: usize, applied: bool },
    /// Request `n` and every later one fail.
    From { n: usize, applied: bool },
    /// The requests whose bit is set in `mask` fail.
    Mask { mask: u64, applied: bool },
    /// Only request `n` is refused (answered `Completion::Refused`: certainly not applied).
    RefusedAt { n: usize },
    /// Request `n` and every later one are refused.
    RefusedFrom { n: usize },
}

/// How a planned failure is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `Completion::Failed`, after applying the request if `applied`.
    Failed { applied: bool },
    /// `Completion::Refused`, without applying it.
    Refused,
}

impl Plan {
    /// `None`: deliver; `Some(fault)`: fail request `i` so.
    fn fails(self, i: usize) -> Option<Fault> {
        match self {
            Plan::At { n, applied } if i == n => Some(Fault::Failed { applied }),
            Plan::From { n, applied } if i >= n => Some(Fault::Failed { applied }),
            Plan::Mask { mask, applied } if i < 64 && mask & (1 << i) != 0 => {
                Some(Fault::Failed { applied })
            }
            Plan::RefusedAt { n } if i == n => Some(Fault::Refused),
            Plan::RefusedFrom { n } if i >= n => Some(Fault::Refused),
            _ => None,
        }
    }

    /// Every plan that fails or refuses one of the first `len` requests, or all from one of
    /// them on.
    fn sweep(len: usize) -> impl Iterator<Item = Plan> {
        let faulty = (0..len).flat_map(|n| {
            [
                Plan::At { n, applied: false },
                Plan::From { n, applied: false },
                Plan::At { n, applied: true },
                Plan::From { n, applied: true },
                Plan::RefusedAt { n },
                Plan::RefusedFrom { n },
            ]
        });
        std::iter::once(Plan::Healthy).chain(faulty)
    }
}

/// Changes the world behind cairn's back just before a request is performed.
type Tamper = Box<dyn FnMut(&mut World, &Request<'_>)>;

struct Harness {
    world: World,
    now: Instant,
    plan: Plan,
    requests: usize,
    tamper: Tamper,
}

/// A finished put or delete and, if it had one, its cleanup.
#[derive(Debug)]
struct MutationRun {
    result: Result<WriteOutcome, WriteError>,
    cleanup: Option<(Phase, CleanupReport)>,
}

impl Harness {
    fn new(world: World) -> Harness {
        Harness {
            world,
            now: NOW,
            plan: Plan::Healthy,
            requests: 0,
            tamper: Box::new(|_, _| {}),
        }
    }

    fn plan(mut self, plan: Plan) -> Harness {
        self.plan = plan;
        self
    }

    fn tamper(mut self, tamper: impl FnMut(&mut World, &Request<'_>) + 'static) -> Harness {
        self.tamper = Box::new(tamper);
        self
    }

    /// Drives `machine` to the end, measuring every poll, handle and the final drop.
    fn drive<M: Machine>(&mut self, mut machine: M, op: OpContext) -> M::Output {
        for _ in 0..MAX_RUN_STEPS {
            self.world.advance_to(self.now);
            let answer = match core!("poll", machine.poll(self.now)) {
                Poll::Io(request) => {
                    (self.tamper)(&mut self.world, &request);
                    let fails = self.plan.fails(self.requests);
                    self.requests += 1;
                    match fails {
                        None => Some(self.world.apply(&request, op)),
                        Some(Fault::Failed { applied }) => {
                            if applied {
                                self.world.apply(&request, op);
                            }
                            None
                        }
                        Some(Fault::Refused) => {
                            core!("handle of a refusal", machine.handle(Completion::Refused));
                            continue;
                        }
                    }
                }
                Poll::Wait(until) => {
                    assert!(until > self.now, "a wait must be for a later instant");
                    self.now = until;
                    continue;
                }
                Poll::Done(output) => {
                    core!("drop of a finished machine", drop(machine));
                    return output;
                }
            };
            match &answer {
                Some(answer) => {
                    let completion = answer.completion();
                    core!("handle", machine.handle(completion));
                }
                None => core!("handle of a failure", machine.handle(Completion::Failed)),
            }
        }
        panic!("machine is looping")
    }

    /// Drives a put or delete, then its cleanup; drops the output inside a measurement.
    fn mutate<M: Machine<Output = MutationDone>>(
        &mut self,
        machine: M,
        op: OpContext,
    ) -> MutationRun {
        let mut done = self.drive(machine, op);
        let result = done.result;
        let cleanup = core!("take the cleanup", done.cleanup.take());
        core!("drop of MutationDone", drop(done));
        let cleanup = cleanup.map(|pending| {
            let machine = core!(
                "Cleanup::new",
                Cleanup::new(key(), pending, Config::DEFAULT)
            );
            (pending.phase, self.drive(machine, OpContext::read()))
        });
        MutationRun { result, cleanup }
    }
}

/// A machine that allocates in `handle`, as a careless core change might.
struct Leaky(Option<Box<u8>>);

impl Machine for Leaky {
    type Output = ();
    fn poll(&mut self, _now: Instant) -> Poll<'_, ()> {
        match self.0 {
            None => Poll::Io(Request::LogScan { after: None }),
            Some(_) => Poll::Done(()),
        }
    }
    fn handle(&mut self, _: Completion<'_>) {
        self.0 = Some(Box::new(1));
    }
}

#[test]
#[should_panic(expected = "the core used the heap 1 time(s) in handle")]
fn the_harness_catches_a_machine_that_allocates() {
    Harness::new(World::new()).drive(Leaky(None), OpContext::read());
}

fn key() -> &'static Key {
    core!("Key::new", Key::new(b"k")).expect("a valid key")
}

fn meta() -> ObjectMeta {
    ObjectMeta {
        size: SMALL,
        created: NOW,
        expires: None,
    }
}

fn small_put() -> SmallPut<'static> {
    let key = key();
    core!(
        "SmallPut::new",
        SmallPut::new(key, meta(), ChangeId(2), Config::DEFAULT)
    )
}

fn large_put(revision: Revision) -> LargePut<'static> {
    let key = key();
    core!(
        "LargePut::new",
        LargePut::new(key, revision, None, ChangeId(2), Config::DEFAULT)
    )
}

fn delete() -> Delete<'static> {
    let key = key();
    core!(
        "Delete::new",
        Delete::new(key, ChangeId(2), Config::DEFAULT)
    )
}

fn get(range: Option<ByteRange>) -> Get<'static> {
    let key = key();
    core!("Get::new", Get::new(key, range, Config::DEFAULT))
}

fn head() -> Get<'static> {
    let key = key();
    core!("Get::head", Get::head(key, Config::DEFAULT))
}

/// What the key holds before the operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Given {
    Absent,
    Inline,
    Tombstone,
}

fn world(given: Given, mode: CasMode) -> World {
    let mut world = World::with_mode(mode);
    match given {
        Given::Absent => {}
        Given::Inline => world.insert_inline(key(), meta(), 1),
        Given::Tombstone => {
            world.insert_large(key(), A, LARGE, None, 1);
        }
    }
    world
}

fn harness(given: Given) -> Harness {
    Harness::new(world(given, CasMode::Reapply))
}

/// A tamper that lets another writer commit tombstone C (and clean up what it replaced) just
/// before our first compare-and-write.
fn race_before_cas(world: &mut World, request: &Request<'_>) {
    let Request::HvCompareAndWrite { key, .. } = request else {
        return;
    };
    let current = world.row(key).and_then(|row| row.target());
    if current != Some(C) {
        if let Some(old) = current {
            world.remove_blob(key, old);
        }
        world.insert_large(key, C, LARGE, None, 3);
    }
}

fn err(tier: Tier, applied: Applied) -> Result<WriteOutcome, WriteError> {
    Err(WriteError { tier, applied })
}

fn assert_cleanup(run: &MutationRun, phase: Phase, outcome: CleanupOutcome, blobs: u8) {
    let Some((got_phase, report)) = run.cleanup else {
        panic!("expected a {phase:?} cleanup, got none: {run:?}")
    };
    assert_eq!(
        (got_phase, report.outcome, report.blobs_deleted),
        (phase, outcome, blobs),
        "{run:?}"
    );
}

// --- Small put -------------------------------------------------------------------------------

#[test]
fn small_put_paths_do_not_allocate() {
    let run = harness(Given::Absent).mutate(small_put(), OpContext::put(2));
    assert_eq!(run.result, Ok(WriteOutcome::Committed));
    assert!(run.cleanup.is_none());

    let run = harness(Given::Tombstone).mutate(small_put(), OpContext::put(2));
    assert_eq!(run.result, Ok(WriteOutcome::Committed));
    assert_cleanup(&run, Phase::Committed, CleanupOutcome::Finished, 1);

    let run = harness(Given::Tombstone)
        .tamper(race_before_cas)
        .mutate(small_put(), OpContext::put(2));
    assert_eq!(run.result, Ok(WriteOutcome::Superseded), "CAS conflict");
    assert_cleanup(&run, Phase::Lost, CleanupOutcome::Finished, 0);

    let plan = Plan::At {
        n: 0,
        applied: false,
    };
    let run = harness(Given::Absent)
        .plan(plan)
        .mutate(small_put(), OpContext::put(2));
    assert_eq!(
        run.result,
        err(Tier::Hv, Applied::Unknown),
        "a guarded write is not retried"
    );

    let plan = Plan::From {
        n: 0,
        applied: false,
    };
    let run = harness(Given::Absent)
        .plan(plan)
        .mutate(small_put(), OpContext::put(2));
    assert_eq!(
        run.result,
        err(Tier::Hv, Applied::Unknown),
        "opening exhausted"
    );
    assert!(run.cleanup.is_none());

    let plan = Plan::At {
        n: 1,
        applied: false,
    };
    let run = harness(Given::Tombstone)
        .plan(plan)
        .mutate(small_put(), OpContext::put(2));
    assert_eq!(run.result, Ok(WriteOutcome::Committed), "record retried");

    let plan = Plan::From {
        n: 1,
        applied: false,
    };
    let run = harness(Given::Tombstone)
        .plan(plan)
        .mutate(small_put(), OpContext::put(2));
    assert_eq!(run.result, err(Tier::Log, Applied::No), "record exhausted");
    assert_cleanup(
        &run,
        Phase::Recorded,
        CleanupOutcome::Deferred(Tier::Log),
        0,
    );

    let plan = Plan::At {
        n: 2,
        applied: true,
    };
    let run = harness(Given::Tombstone)
        .plan(plan)
        .mutate(small_put(), OpContext::put(2));
    assert_eq!(
        run.result,
        err(Tier::Hv, Applied::Unknown),
        "CAS response lost: an inline write is not retried, so its outcome stays unknown"
    );
    assert_cleanup(&run, Phase::Unknown, CleanupOutcome::Finished, 1);

    // The CAS keeps failing; the unknown-outcome cleanup reads, deletes and removes.
    let plan = Plan::From {
        n: 2,
        applied: false,
    };
    let mut h = harness(Given::Tombstone).plan(plan);
    let run = h.mutate(small_put(), OpContext::put(2));
    assert_eq!(run.result, err(Tier::Hv, Applied::Unknown), "CAS exhausted");
    assert_cleanup(&run, Phase::Unknown, CleanupOutcome::Deferred(Tier::Hv), 0);
    assert!(h.now > NOW, "the cleanup backed off");
}

// --- Large put -------------------------------------------------------------------------------

#[test]
fn large_put_paths_do_not_allocate() {
    let op = OpContext::put_large(2, LARGE);
    let run = harness(Given::Absent).mutate(large_put(B), op);
    assert_eq!(run.result, Ok(WriteOutcome::Committed));
    assert_cleanup(&run, Phase::Committed, CleanupOutcome::Finished, 0);

    let run = harness(Given::Tombstone).mutate(large_put(B), op);
    assert_eq!(run.result, Ok(WriteOutcome::Committed), "overwrite");
    assert_cleanup(&run, Phase::Committed, CleanupOutcome::Finished, 1);

    let run = harness(Given::Inline).mutate(large_put(B), op);
    assert_eq!(run.result, Ok(WriteOutcome::Committed), "over inline");

    let run = harness(Given::Tombstone)
        .tamper(race_before_cas)
        .mutate(large_put(B), op);
    assert_eq!(run.result, Ok(WriteOutcome::Superseded), "CAS conflict");
    assert_cleanup(&run, Phase::Lost, CleanupOutcome::Finished, 1);

    let plan = Plan::From {
        n: 0,
        applied: false,
    };
    let run = harness(Given::Absent).plan(plan).mutate(large_put(B), op);
    assert_eq!(run.result, err(Tier::Hv, Applied::No), "read exhausted");
    assert!(run.cleanup.is_none());

    let plan = Plan::At {
        n: 1,
        applied: true,
    };
    let run = harness(Given::Absent).plan(plan).mutate(large_put(B), op);
    assert_eq!(
        run.result,
        Ok(WriteOutcome::Committed),
        "record response lost"
    );

    let plan = Plan::From {
        n: 1,
        applied: false,
    };
    let run = harness(Given::Absent).plan(plan).mutate(large_put(B), op);
    assert_eq!(run.result, err(Tier::Log, Applied::No), "record exhausted");

    let plan = Plan::At {
        n: 2,
        applied: false,
    };
    let run = harness(Given::Absent).plan(plan).mutate(large_put(B), op);
    assert_eq!(
        run.result,
        err(Tier::Lt, Applied::No),
        "blob write is never retried"
    );
    assert_cleanup(&run, Phase::Recorded, CleanupOutcome::Finished, 1);

    // expected = None: a failed CAS is resolved by a read, never retried.
    let plan = Plan::At {
        n: 3,
        applied: true,
    };
    let run = harness(Given::Absent).plan(plan).mutate(large_put(B), op);
    assert_eq!(run.result, Ok(WriteOutcome::Committed), "resolved: ours");
    let plan = Plan::Mask {
        mask: 0b11000,
        applied: true,
    };
    let run = harness(Given::Absent).plan(plan).mutate(large_put(B), op);
    assert_eq!(
        run.result,
        Ok(WriteOutcome::Committed),
        "resolve retried: ours"
    );
    let plan = Plan::At {
        n: 3,
        applied: false,
    };
    let run = harness(Given::Absent).plan(plan).mutate(large_put(B), op);
    assert_eq!(
        run.result,
        err(Tier::Hv, Applied::Unknown),
        "resolved: not ours"
    );
    assert_cleanup(&run, Phase::Unknown, CleanupOutcome::Finished, 1);

    // expected = Some: not retried either; resolved by a read.
    let plan = Plan::At {
        n: 3,
        applied: false,
    };
    let run = harness(Given::Tombstone)
        .plan(plan)
        .mutate(large_put(B), op);
    assert_eq!(
        run.result,
        err(Tier::Hv, Applied::Unknown),
        "not retried; the read finds the old tombstone"
    );
    let plan = Plan::From {
        n: 3,
        applied: false,
    };
    let run = harness(Given::Tombstone)
        .plan(plan)
        .mutate(large_put(B), op);
    assert_eq!(
        run.result,
        err(Tier::Hv, Applied::Unknown),
        "CAS and resolve exhausted"
    );
    assert_cleanup(&run, Phase::Unknown, CleanupOutcome::Deferred(Tier::Hv), 0);
}

// --- Delete ----------------------------------------------------------------------------------

#[test]
fn delete_paths_do_not_allocate() {
    for given in [Given::Absent, Given::Inline] {
        let run = harness(given).mutate(delete(), OpContext::read());
        assert_eq!(run.result, Ok(WriteOutcome::Committed), "{given:?}");
        assert!(run.cleanup.is_none());
    }

    let run = harness(Given::Tombstone).mutate(delete(), OpContext::read());
    assert_eq!(run.result, Ok(WriteOutcome::Committed));
    assert_cleanup(&run, Phase::Committed, CleanupOutcome::Finished, 1);

    let run = harness(Given::Tombstone)
        .tamper(race_before_cas)
        .mutate(delete(), OpContext::read());
    assert_eq!(run.result, Ok(WriteOutcome::Superseded), "CAS conflict");
    assert_cleanup(&run, Phase::Lost, CleanupOutcome::Finished, 0);

    let plan = Plan::From {
        n: 0,
        applied: true,
    };
    let run = harness(Given::Inline)
        .plan(plan)
        .mutate(delete(), OpContext::read());
    assert_eq!(
        run.result,
        err(Tier::Hv, Applied::Unknown),
        "opening exhausted"
    );

    let plan = Plan::From {
        n: 2,
        applied: false,
    };
    let run = harness(Given::Tombstone)
        .plan(plan)
        .mutate(delete(), OpContext::read());
    assert_eq!(run.result, err(Tier::Hv, Applied::Unknown), "CAS exhausted");
}

// --- Get and head ----------------------------------------------------------------------------

fn read(h: &mut Harness, machine: Get) -> GetResult {
    h.drive(machine, OpContext::read())
}

#[test]
fn get_and_head_paths_do_not_allocate() {
    assert_eq!(read(&mut harness(Given::Absent), get(None)), Ok(None));
    let inline = read(&mut harness(Given::Inline), get(Some(ByteRange::Suffix(2))));
    assert!(matches!(
        inline,
        Ok(Some(Found::Inline { span: Some(_), .. }))
    ));
    let large = read(
        &mut harness(Given::Tombstone),
        get(Some(ByteRange::From(10))),
    );
    assert!(matches!(
        large,
        Ok(Some(Found::LongTerm { span: Some(_), .. }))
    ));

    for given in [Given::Inline, Given::Tombstone] {
        let result = read(&mut harness(given), get(Some(ByteRange::From(LARGE))));
        assert!(
            matches!(result, Err(ReadError::Range(_))),
            "{given:?}: {result:?}"
        );
    }

    for given in [Given::Inline, Given::Tombstone] {
        let result = read(&mut harness(given), head());
        assert!(matches!(result, Ok(Some(_))), "head {given:?}");
    }
    assert_eq!(read(&mut harness(Given::Absent), head()), Ok(None));

    // The blob vanished under an overwrite: re-read and follow the new tombstone.
    let mut overwritten = harness(Given::Tombstone).tamper(|world, request| {
        if let Request::LtGet { blob, .. } = request {
            if blob.revision == A {
                world.remove_blob(blob.key, A);
                world.insert_large(blob.key, B, LARGE, None, 2);
            }
        }
    });
    let result = read(&mut overwritten, get(None));
    assert!(
        matches!(result, Ok(Some(Found::LongTerm { tombstone, .. })) if tombstone.revision == B)
    );

    // The blob was removed behind cairn's back: the same tombstone again means it is lost.
    let mut dangling = harness(Given::Tombstone);
    dangling.world.remove_blob(key(), A);
    assert_eq!(read(&mut dangling, get(None)), Err(ReadError::Lost(A)));

    // Overwritten under every read: gives up as unstable.
    let mut next = 0xB0_u128;
    let mut unstable = harness(Given::Tombstone).tamper(move |world, request| {
        if let Request::LtHead { blob } | Request::LtGet { blob, .. } = request {
            world.remove_blob(blob.key, blob.revision);
            next += 1;
            world.insert_large(blob.key, Revision(next), LARGE, None, 2);
        }
    });
    assert_eq!(read(&mut unstable, head()), Err(ReadError::Unstable));

    let plan = Plan::At {
        n: 0,
        applied: false,
    };
    let result = read(&mut harness(Given::Tombstone).plan(plan), get(None));
    assert!(matches!(result, Ok(Some(_))), "row read retried");
    let plan = Plan::From {
        n: 0,
        applied: false,
    };
    let result = read(&mut harness(Given::Tombstone).plan(plan), get(None));
    assert_eq!(result, Err(ReadError::Io(Tier::Hv)));
    let plan = Plan::At {
        n: 1,
        applied: false,
    };
    let result = read(&mut harness(Given::Tombstone).plan(plan), get(None));
    assert!(matches!(result, Ok(Some(_))), "blob read retried");
    let plan = Plan::From {
        n: 1,
        applied: false,
    };
    let result = read(&mut harness(Given::Tombstone).plan(plan), get(None));
    assert_eq!(result, Err(ReadError::Io(Tier::Lt)));
}

// --- Cleanup ---------------------------------------------------------------------------------

fn cleanup(phase: Phase, new: Option<Revision>, old: Option<Revision>) -> Cleanup<&'static Key> {
    let key = key();
    let pending = PendingCleanup {
        id: ChangeId(2),
        new,
        old,
        phase,
    };
    core!("Cleanup::new", Cleanup::new(key, pending, Config::DEFAULT))
}

#[test]
fn cleanup_paths_do_not_allocate() {
    let phases = [
        Phase::Recorded,
        Phase::Lost,
        Phase::Committed,
        Phase::Unknown,
    ];
    for phase in phases {
        let report =
            harness(Given::Tombstone).drive(cleanup(phase, Some(B), Some(A)), OpContext::read());
        assert_eq!(report.outcome, CleanupOutcome::Finished, "{phase:?}");
    }

    // A spawned cleanup owns its key, inline.
    let owned = core!("Key::to_key_buf", key().to_key_buf());
    let pending = PendingCleanup {
        id: ChangeId(2),
        new: Some(B),
        old: Some(A),
        phase: Phase::Unknown,
    };
    let machine = core!(
        "Cleanup::new",
        Cleanup::new(owned, pending, Config::DEFAULT)
    );
    let report = harness(Given::Tombstone).drive(machine, OpContext::read());
    assert_eq!(report.outcome, CleanupOutcome::Finished, "with a KeyBuf");

    // A failure backs off (a wait), then the retry succeeds.
    let mut h = harness(Given::Tombstone).plan(Plan::At {
        n: 0,
        applied: false,
    });
    let report = h.drive(cleanup(Phase::Lost, Some(B), Some(A)), OpContext::read());
    assert_eq!(
        (report.outcome, report.blobs_deleted),
        (CleanupOutcome::Finished, 1)
    );
    assert!(h.now > NOW, "waited");

    // Each step gives up as deferred to recovery when its tier keeps failing.
    let cases = [
        (Phase::Unknown, 0, Tier::Hv),
        (Phase::Lost, 0, Tier::Lt),
        (Phase::Unknown, 1, Tier::Lt),
        (Phase::Lost, 1, Tier::Log),
    ];
    for (phase, n, tier) in cases {
        let plan = Plan::From { n, applied: false };
        let report = harness(Given::Tombstone)
            .plan(plan)
            .drive(cleanup(phase, Some(B), Some(A)), OpContext::read());
        assert_eq!(
            report.outcome,
            CleanupOutcome::Deferred(tier),
            "{phase:?} from {n}"
        );
    }

    let plan = core!("Phase::plan", Phase::Unknown.plan(Some(A), Some(B), None));
    assert_eq!((plan.first, plan.second), (Some(A), Some(B)));
}

// --- Recovery --------------------------------------------------------------------------------

/// A world after three crashed mutations on three keys, one entry held by a live operation.
fn crashed_world() -> World {
    let mut world = World::new();
    let k1 = Key::new(b"k1").unwrap();
    let k2 = Key::new(b"k2").unwrap();
    let k3 = Key::new(b"k3").unwrap();
    // k1: a large put that committed B over A but never cleaned up.
    world.insert_large(k1, A, LARGE, None, 1);
    world.insert_large(k1, B, LARGE, None, 2);
    world.set_entry(
        ChangeId(1),
        LoggedChange {
            key: k1.to_key_buf(),
            new: Some(B),
            old: Some(A),
        },
    );
    // k2: a large put over nothing that crashed before its commit.
    world.insert_large(k2, C, LARGE, None, 3);
    world.remove_row(k2);
    world.set_entry(
        ChangeId(2),
        LoggedChange {
            key: k2.to_key_buf(),
            new: Some(C),
            old: None,
        },
    );
    // k3: a delete still in flight.
    world.insert_large(k3, A, LARGE, None, 4);
    world.set_entry(
        ChangeId(3),
        LoggedChange {
            key: k3.to_key_buf(),
            new: None,
            old: Some(A),
        },
    );
    world.hold(ChangeId(3));
    world
}

fn recovery() -> Recovery {
    core!("Recovery::new", Recovery::new(Config::DEFAULT))
}

#[test]
fn recovery_paths_do_not_allocate() {
    let mut h = Harness::new(crashed_world());
    let report = h.drive(recovery(), OpContext::read());
    let want = RecoveryReport {
        entries: 2,
        cleaned: 2,
        deferred: 0,
        blobs_deleted: 2,
        complete: true,
    };
    assert_eq!(report, want, "the held entry is skipped");
    assert_eq!(h.world.log().count(), 1);
    assert_eq!(check_safety(&h.world), Ok(()));

    let plan = Plan::At {
        n: 0,
        applied: false,
    };
    let report = Harness::new(crashed_world())
        .plan(plan)
        .drive(recovery(), OpContext::read());
    assert_eq!(report, want, "scan retried");

    let plan = Plan::From {
        n: 0,
        applied: false,
    };
    let report = Harness::new(crashed_world())
        .plan(plan)
        .drive(recovery(), OpContext::read());
    assert!(
        !report.complete && report.entries == 0,
        "scan exhausted: {report:?}"
    );

    // The first entry's cleanup backs off until it is deferred; the pass goes on.
    let plan = Plan::From {
        n: 1,
        applied: false,
    };
    let mut h = Harness::new(crashed_world()).plan(plan);
    let report = h.drive(recovery(), OpContext::read());
    assert_eq!(
        (report.entries, report.deferred, report.complete),
        (1, 1, false)
    );
    assert!(h.now > NOW, "waited");

    let mut ids = core!("IdGen::new", IdGen::new(7));
    let (a, b) = core!("IdGen::revision", (ids.revision(NOW), ids.change_id(NOW)));
    assert_ne!({ a.0 }, { b.0 });
}

// --- The functions backends and drivers call ---------------------------------------------

#[test]
fn the_functions_backends_and_drivers_call_do_not_allocate() {
    let tombstone = |revision| {
        HvRow::Tombstone(Tombstone {
            revision,
            size: LARGE,
            expires: Some(NOW),
        })
    };
    let writes = [
        HvWrite::Tombstone(Tombstone {
            revision: B,
            size: LARGE,
            expires: None,
        }),
        HvWrite::Inline(meta()),
        HvWrite::Delete,
    ];
    for row in [
        HvRow::Absent,
        HvRow::Inline(meta()),
        tombstone(A),
        tombstone(B),
    ] {
        let live = core!("HvRow::at", row.at(NOW));
        for expected in [None, Some(A), Some(C)] {
            for write in &writes {
                let verdict = core!("cas_verdict", cas_verdict(live, expected, write));
                core!("CasVerdict::succeeded", verdict.succeeded());
            }
        }
    }
    core!("is_expired", is_expired(Some(NOW), NOW));
    core!("Config::validate", Config::DEFAULT.validate()).expect("the defaults are valid");
    core!(
        "Config::validate",
        Config {
            io_attempts: 0,
            ..Config::DEFAULT
        }
        .validate()
    )
    .expect_err("no attempt at all");
    core!("KeyBuf::new", KeyBuf::new(&[b'k'; 1024])).expect("the longest key");
    core!("Key::new", Key::new(&[b'k'; 1025])).expect_err("one byte too long");
    for range in [
        ByteRange::From(1),
        ByteRange::Inclusive {
            start: 1,
            end: u64::MAX,
        },
        ByteRange::Suffix(u64::MAX),
        ByteRange::From(u64::MAX),
    ] {
        let _span = core!("ByteRange::resolve", range.resolve(SMALL));
    }
    core!("Completion::or_failed", Completion::Refused.or_failed());
}

// --- Every path, every fault -----------------------------------------------------------------

/// Long enough to cover every request of the longest healthy run plus its retries.
const SWEEP_REQUESTS: usize = 16;

/// One operation of the sweep, driven on a fresh harness.
type SweepOp = (&'static str, fn(&mut Harness));

const SWEEP_OPS: &[SweepOp] = &[
    ("small put", |h| {
        h.mutate(small_put(), OpContext::put(2));
    }),
    ("large put", |h| {
        h.mutate(large_put(B), OpContext::put_large(2, LARGE));
    }),
    ("large put racing", |h| {
        h.tamper = Box::new(race_before_cas);
        h.mutate(large_put(B), OpContext::put_large(2, LARGE));
    }),
    ("delete", |h| {
        h.mutate(delete(), OpContext::read());
    }),
    ("get", |h| {
        let range = ByteRange::Inclusive { start: 1, end: 3 };
        let _result = h.drive(get(Some(range)), OpContext::read());
    }),
    ("head", |h| {
        let _result = h.drive(head(), OpContext::read());
    }),
];

#[test]
fn every_machine_under_every_single_and_persistent_fault_does_not_allocate() {
    let mut runs = 0;
    for mode in [CasMode::Reapply, CasMode::Skip] {
        for given in [Given::Absent, Given::Inline, Given::Tombstone] {
            for plan in Plan::sweep(SWEEP_REQUESTS) {
                for (name, op) in SWEEP_OPS {
                    let mut h = Harness::new(world(given, mode)).plan(plan);
                    op(&mut h);
                    let safety = check_safety(&h.world);
                    assert_eq!(safety, Ok(()), "{name} {given:?} {mode:?} {plan:?}");
                    runs += 1;
                }
            }
        }
        for plan in Plan::sweep(SWEEP_REQUESTS) {
            let mut h = Harness::new(crashed_world()).plan(plan);
            h.drive(recovery(), OpContext::read());
            assert_eq!(check_safety(&h.world), Ok(()), "recovery {plan:?}");
            runs += 1;
        }
    }
    assert!(runs > 1_000, "the sweep ran only {runs} operations");
}
