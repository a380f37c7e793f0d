//! Group commit. One thread owns the write connection; every write is a job sent to it over a
//! channel. The thread takes the first job, opens a transaction (`BEGIN IMMEDIATE`) and runs it
//! at once, then runs every further job already queued — and, for a moment, those still arriving
//! (see [`Gather`]) — in the same transaction, up to [`MAX_BATCH`]; it commits, and only after the
//! commit answers every caller. N concurrent writers therefore share one commit, and one fsync.
//! Jobs run as they arrive, not after the batch is complete, so the writer's work on a batch
//! overlaps its callers' work on the next requests instead of adding to it. Between jobs the
//! writer polls the queue for a moment before it blocks (see [`SPIN`]), so that callers coming
//! straight back need not wake it.
//!
//! # Isolation of jobs
//!
//! One failing job must not fail the others in its batch. A job that may write with several
//! statements ([`Shape::Savepoint`]) runs inside its own `SAVEPOINT`, which is rolled back if it
//! fails. A job that writes with at most one statement, and can fail only before or in that
//! statement ([`Shape::Atomic`], [`Shape::Lazy`]) needs none: SQLite undoes a failing statement's
//! changes and keeps the transaction, so the job leaves no trace — the statement *is* its
//! savepoint. That saves two statements per job, and nearly every job is of that shape (a put,
//! a compare-and-write, a change-log record or removal). Errors after which SQLite rolls back the
//! whole transaction (a full disk, an I/O error) fail the whole batch, as they must.
//!
//! # Lazy jobs
//!
//! Some writes need to be durable only eventually: removing a change-log entry whose cleanup is
//! over ([`Shape::Lazy`]). If such a removal is lost in a crash, the entry is still in the log,
//! and recovery runs its cleanup again — which is idempotent — and removes it again: the state
//! after the crash is exactly the one a crash just before the removal would have left, which
//! recovery handles by design. So under `synchronous=FULL` a batch that holds *only* lazy jobs
//! commits with `synchronous=NORMAL`: in WAL mode that writes the commit to the WAL without the
//! fsync (the caller does not wait for the disk). The commit is still ordered: WAL frames carry
//! cumulative checksums and SQLite's recovery replays only an unbroken prefix of them, so no
//! later commit can survive a crash without this one, and the next `FULL` commit's fsync of the
//! WAL (of any connection, in any process), or the next checkpoint, makes it durable. A lost
//! lazy commit therefore implies that every later commit was lost with it. A lazy job that joins
//! a batch with any other job simply commits durably with it; a durable job never waits for a
//! lazy batch's wait (lazy batches do not gather).
//!
//! Replies travel over one-shot [`Reply`] slots, so a caller awaits its answer on any runtime
//! (tokio, smol, `futures_lite::future::block_on`) without blocking it. The job queue is
//! unbounded, but every caller waits for its answer before sending again, so it holds at most one
//! job per concurrent caller.

use super::{lease, schema};
use super::{Shared, SqliteError, SqliteErrorKind, Synchronous};
use crate::oneshot::{reply_slot, Reply};
use rusqlite::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most jobs committed together. Large enough that sixteen or a hundred concurrent writers share
/// one fsync; small enough that one batch (up to 256 inline objects of 1 MiB at worst) stays a
/// bounded amount of WAL and of latency for the first caller in it.
pub(crate) const MAX_BATCH: usize = 256;

/// Longest the writer thread sleeps while idle before it checks whether the lease needs renewing
/// (real time; the lease itself is judged by the configured clock).
const MAX_IDLE_TICK: Duration = Duration::from_secs(1);

/// Longest the writer waits for stragglers before committing, whatever the commit costs.
const MAX_GATHER_WAIT: Duration = Duration::from_millis(1);

/// What a job sees while it runs: the write connection, inside the batch's transaction.
pub(crate) struct WriteCx<'a> {
    pub conn: &'a Connection,
    pub shared: &'a Shared,
}

/// How a job writes, which decides how it is isolated from the others in its batch and how
/// durable its commit must be. See [the module docs](self#isolation-of-jobs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Any number of writes: the job runs inside its own savepoint.
    Savepoint,
    /// At most one writing statement, and the job fails only before it or in it: SQLite's
    /// statement atomicity isolates it, no savepoint needed.
    Atomic,
    /// [`Shape::Atomic`], and durable eventually is enough: a batch of nothing but lazy jobs
    /// commits without waiting for the disk. See [the module docs](self#lazy-jobs).
    Lazy,
}

/// One unit of work for the writer thread.
pub(crate) trait Job: Send {
    /// How the job writes.
    fn shape(&self) -> Shape;
    /// Does the work inside the transaction. An error undoes this job's writes only. Called
    /// again, in a new transaction, if the first one was rolled back for want of disk space
    /// (see [`Thread::retry_alone`]).
    fn run(&mut self, cx: &WriteCx<'_>) -> Result<(), SqliteError>;
    /// Answers the caller once the batch is over: `batch` is the commit's outcome.
    fn finish(self: Box<Self>, batch: Result<(), SqliteError>);
}

/// A job built from a closure, answering its caller through a [`Reply`].
struct Pending<T, F> {
    shape: Shape,
    op: F,
    result: Option<Result<T, SqliteError>>,
    reply: Reply<Result<T, SqliteError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnMut(&WriteCx<'_>) -> Result<T, SqliteError> + Send,
{
    fn shape(&self) -> Shape {
        self.shape
    }

    fn run(&mut self, cx: &WriteCx<'_>) -> Result<(), SqliteError> {
        // Run again after its batch failed for want of space, the job starts over: the
        // transaction its first run wrote in was rolled back.
        let result = (self.op)(cx);
        let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
        self.result = Some(result);
        outcome
    }

    fn finish(self: Box<Self>, batch: Result<(), SqliteError>) {
        let answer = match (self.result, batch) {
            // Its own failure: its writes were undone, whatever became of the batch.
            (Some(Err(e)), _) => Err(e.refused()),
            // The batch did not commit: nothing it did is in the database.
            (_, Err(e)) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (None, Ok(())) => unreachable!("a committed batch ran every one of its jobs"),
        };
        // The caller may have stopped waiting (its future was dropped); the answer is moot then.
        self.reply.send(answer);
    }
}

/// The writer's counters, for tests and benchmarks of group commit.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    commits: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
    failed_batches: AtomicU64,
    lazy_commits: AtomicU64,
}

/// A snapshot of the writer thread's counters.
///
/// `writes / commits` is the average number of requests that shared one commit (one fsync).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Write requests carried by those commits (lease renewals not counted).
    pub writes: u64,
    /// Most requests in one batch so far.
    pub largest_batch: u64,
    /// Batches that failed to begin or to commit (every request in them failed).
    pub failed_batches: u64,
    /// Commits (among `commits`) made of nothing but writes that need to be durable only
    /// eventually (change-log removals), committed without an fsync under
    /// [`Synchronous::Full`](super::Synchronous::Full).
    pub lazy_commits: u64,
}

impl Stats {
    pub fn snapshot(&self) -> WriterStats {
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
            lazy_commits: self.lazy_commits.load(Ordering::Relaxed),
        }
    }
}

/// The sending side of the writer thread. Dropping it stops the thread after the jobs already
/// queued, releases the lease and closes the write connection, and waits for all of that —
/// unless it is dropped on the writer thread itself, which then does all of that right after.
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Starts the writer thread over `conn`, whose `synchronous` setting is the configured one.
    pub fn start(conn: Connection, shared: Arc<Shared>) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-sqlite-writer".into())
            .spawn(move || run(conn, thread_shared, &queue))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
            shared,
        })
    }

    /// Runs `op`, which may write with any number of statements, in the next batch and returns
    /// its result once the batch has committed.
    pub async fn submit<T, F>(&self, what: &str, op: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnMut(&WriteCx<'_>) -> Result<T, SqliteError> + Send + 'static,
    {
        self.submit_shaped(what, Shape::Savepoint, op).await
    }

    /// [`submit`](Writer::submit) for an `op` of the given shape. `Shape::Atomic` and
    /// `Shape::Lazy` promise that `op` writes with at most one statement and fails only before
    /// or in it (never after a write succeeded). `op` may run more than once, each time in a
    /// new transaction, the earlier ones rolled back (a full disk: see [`Thread::retry_alone`]).
    pub async fn submit_shaped<T, F>(
        &self,
        what: &str,
        shape: Shape,
        op: F,
    ) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnMut(&WriteCx<'_>) -> Result<T, SqliteError> + Send + 'static,
    {
        let closed = || SqliteError::new(&self.shared.path, SqliteErrorKind::Closed, what);
        let (reply, answer) = reply_slot();
        let job = Box::new(Pending {
            shape,
            op,
            result: None,
            reply,
        });
        // Never sent: refused. Sent and dropped unanswered (the thread died mid-batch): unknown.
        let jobs = self.jobs.as_ref().ok_or_else(|| closed().refused())?;
        jobs.send(job).map_err(|_| closed().refused())?;
        answer.await.ok_or_else(closed)?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        let Some(thread) = self.thread.take() else {
            return;
        };
        // The last handle may go on the writer thread itself: answering a caller wakes (and so
        // may drop) a waker that owns it — an executor's task, left to its waker when the
        // executor was shut down. A thread cannot wait for itself; it goes on after this drop
        // as it would after a join, finishes the jobs queued, releases the lease and closes.
        if thread.thread().id() == std::thread::current().id() {
            return;
        }
        // A panic on the writer thread has already failed every waiting caller; nothing is
        // left to report here.
        let _ = thread.join();
    }
}

/// Renews the lease inside a batch; not counted as a write.
struct Renewal {
    shared: Arc<Shared>,
    /// The new end of the lease, once renewed.
    until: Option<cairn_core::Instant>,
}

impl Job for Renewal {
    fn shape(&self) -> Shape {
        // One UPDATE; nothing fails after it.
        Shape::Atomic
    }

    fn run(&mut self, cx: &WriteCx<'_>) -> Result<(), SqliteError> {
        let lease = &cx.shared.lease;
        let now = cx.shared.clock.now();
        match lease::renew(cx.conn, lease.instance, now, lease.duration) {
            Ok(Some(until)) => self.until = Some(until),
            // Not live any more, and never again: true whatever becomes of this batch.
            Ok(None) => lease.fence(),
            Err(e) => return Err(cx.shared.sqlite_err("renewing the instance lease")(e)),
        }
        Ok(())
    }

    fn finish(self: Box<Self>, batch: Result<(), SqliteError>) {
        // A renewal that did not commit leaves the lease as it was; the next batch tries again.
        if let (Some(until), Ok(())) = (self.until, batch) {
            self.shared.lease.renewed(until);
        }
    }
}

/// The writer thread's state between batches.
struct Thread<'q> {
    conn: Connection,
    shared: Arc<Shared>,
    queue: &'q mpsc::Receiver<Box<dyn Job>>,
    /// A job taken from the queue that did not fit the batch it met (a durable job behind a
    /// lazy batch): the first job of the next batch.
    carried: Option<Box<dyn Job>>,
    /// Whether the connection is at `synchronous=NORMAL` for a lazy batch although the
    /// configured level is `FULL`; set back before the next durable batch begins.
    relaxed: bool,
    /// The last durable batches, to gather the next one (see [`Gather`]).
    recent: Recent,
    /// The jobs of the batch being run, in the order they ran.
    batch: Vec<Box<dyn Job>>,
    /// How many of them (lease renewals aside) took effect so far.
    succeeded: usize,
    /// Those of them (by position) that failed alone for want of disk space, their batch going
    /// on without them: tried again alone (see [`Thread::retry_alone`]).
    wanting_room: Vec<usize>,
}

fn run(conn: Connection, shared: Arc<Shared>, queue: &mpsc::Receiver<Box<dyn Job>>) {
    let tick = Duration::from_millis(shared.lease.duration.as_millis() / 4)
        .clamp(Duration::from_millis(1), MAX_IDLE_TICK);
    let mut thread = Thread {
        conn,
        shared,
        queue,
        carried: None,
        relaxed: false,
        recent: Recent::default(),
        batch: Vec::with_capacity(MAX_BATCH + 1),
        succeeded: 0,
        wanting_room: Vec::new(),
    };
    let mut open = true;
    while open {
        let first = match thread.carried.take() {
            Some(job) => Some(job),
            None => match next_job(queue, Instant::now() + tick) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    // Idle for a tick: whoever was writing together has stopped.
                    thread.recent = Recent::default();
                    None
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            },
        };
        let shared = &thread.shared;
        let renewal = shared
            .lease
            .renewal_due(shared.clock.now())
            .then(|| Renewal {
                shared: shared.clone(),
                until: None,
            });
        if first.is_some() || renewal.is_some() {
            thread.batch(first, renewal);
        }
    }
    // A clean close hands this instance's remaining change-log entries to the next scanner at
    // once; and leaves the connection as configured. Best effort: if it fails, the lease simply
    // runs out.
    let _ = thread.durable();
    let _ = lease::release(&thread.conn, thread.shared.lease.instance);
}

/// The sizes of the last few durable batches and the latest one's commit time.
#[derive(Debug, Default)]
struct Recent {
    sizes: [usize; 3],
    commit: Duration,
}

impl Recent {
    fn record(&mut self, size: usize, commit: Duration) {
        self.sizes.rotate_right(1);
        self.sizes[0] = size;
        self.commit = commit;
    }

    /// How many callers to wait for: the largest of the last few batches. Not the last one
    /// alone: a batch split by a straggler would otherwise teach the next batch to stop short,
    /// and the split would feed on itself (batches of 16 writers were seen to fall apart into
    /// 5, 7, 3, 3 before they gathered again).
    fn callers(&self) -> usize {
        self.sizes.into_iter().max().unwrap_or(0)
    }
}

/// How long a batch keeps taking jobs. Every job already queued joins at once; and if one of
/// the last three batches was larger, the writer also waits briefly for the rest of its callers:
/// answered all at once, they come back a few microseconds apart, and a writer that committed
/// whatever had arrived first would split them into a large and a small batch, paying two
/// commits for one. The wait is bounded by half the previous commit's time (an fsync, under
/// `synchronous=FULL`), so it costs little where it helps and nothing where commits are cheap.
/// A lone writer never waits, except in the three batches right after a burst (at most half a
/// commit each, or until the writer idles for a tick). Jobs run as they arrive, so the wait
/// overlaps the batch's own work. (16 threads answered at once on 2 virtual CPUs came back
/// over 30 to 60 µs; with a 150 µs fsync a quarter of it split about one batch in ten, and
/// half of it raised the writes per commit of 16 writers from 13-14 to about 15.)
struct Gather {
    want: usize,
    deadline: Instant,
}

impl Gather {
    fn after(started: Instant, recent: &Recent) -> Gather {
        Gather {
            want: recent.callers().min(MAX_BATCH),
            deadline: started + (recent.commit / 2).min(MAX_GATHER_WAIT),
        }
    }

    /// Nothing beyond what is queued already.
    fn none() -> Gather {
        Gather {
            want: 0,
            deadline: Instant::now(),
        }
    }

    /// The next job for a batch of `len` jobs so far, if one comes in time.
    fn next(&self, queue: &mpsc::Receiver<Box<dyn Job>>, len: usize) -> Option<Box<dyn Job>> {
        if len >= MAX_BATCH {
            return None;
        }
        if let Ok(job) = queue.try_recv() {
            return Some(job);
        }
        if len >= self.want {
            return None;
        }
        next_job(queue, self.deadline).ok()
    }
}

/// How long the writer polls the queue before it blocks on it.
///
/// A thread blocked on the queue must be woken by the caller that sends the next job, and on a
/// virtual machine whose processor went idle meanwhile that wake-up takes tens of microseconds
/// (about 100 µs per put were measured, ten times what the put itself costs without its
/// fsync). A caller answered a moment ago sends its next request within a few microseconds, so
/// the writer polls for a while first, yielding the processor between polls so that the
/// callers it would wait for get to run: the sender then finds nobody to wake, and the writer's
/// processor never goes to sleep between requests that come back to back.
const SPIN: Duration = Duration::from_micros(50);

/// The next job, polling the queue for at most [`SPIN`] (see there) and then blocking on it,
/// until `deadline`.
fn next_job(
    queue: &mpsc::Receiver<Box<dyn Job>>,
    deadline: Instant,
) -> Result<Box<dyn Job>, mpsc::RecvTimeoutError> {
    let spin_until = deadline.min(Instant::now() + SPIN);
    loop {
        match queue.try_recv() {
            Ok(job) => return Ok(job),
            Err(mpsc::TryRecvError::Disconnected) => {
                return Err(mpsc::RecvTimeoutError::Disconnected)
            }
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if Instant::now() >= spin_until {
            break;
        }
        std::thread::yield_now();
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(mpsc::RecvTimeoutError::Timeout);
    }
    queue.recv_timeout(left)
}

impl Thread<'_> {
    fn sqlite_err(&self, what: &'static str) -> impl Fn(rusqlite::Error) -> SqliteError + '_ {
        self.shared.sqlite_err(what)
    }

    fn exec(&self, sql: &str, what: &'static str) -> Result<(), SqliteError> {
        self.conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(self.sqlite_err(what))
    }

    /// Sets `synchronous`. Never cached: SQLite applies this pragma when it is prepared.
    fn set_synchronous(&self, level: &str) -> Result<(), SqliteError> {
        self.conn
            .execute_batch(&format!("PRAGMA synchronous = {level}"))
            .map_err(self.sqlite_err("setting the synchronous level"))
    }

    /// Makes sure the next commit is as durable as configured.
    fn durable(&mut self) -> Result<(), SqliteError> {
        if self.relaxed {
            self.set_synchronous("FULL")?;
            self.relaxed = false;
        }
        Ok(())
    }

    /// Whether a batch that starts with `first` (and no renewal) may commit lazily, having set
    /// the connection up for it if so.
    fn relax_for(&mut self, first: &dyn Job) -> bool {
        if first.shape() != Shape::Lazy || self.shared.synchronous != Synchronous::Full {
            return false;
        }
        if !self.relaxed {
            // If this fails the batch simply commits durably.
            self.relaxed = self.set_synchronous("NORMAL").is_ok();
        }
        self.relaxed
    }

    /// Runs one batch that starts with `first` and/or a lease renewal, takes further jobs as
    /// [`Gather`] allows, commits, and answers every job.
    fn batch(&mut self, first: Option<Box<dyn Job>>, renewal: Option<Renewal>) {
        let started = Instant::now();
        self.succeeded = 0;
        let lazy = match (&first, &renewal) {
            (Some(job), None) => self.relax_for(job.as_ref()),
            _ => false,
        };
        let gather = if lazy {
            Gather::none()
        } else {
            Gather::after(started, &self.recent)
        };
        let renewed = renewal.is_some();
        let mut pending: Option<Box<dyn Job>> = match renewal {
            Some(r) => Some(Box::new(r)),
            None => None,
        };
        let mut first = first;
        let outcome = (|| {
            if !lazy {
                self.durable()?;
            }
            self.exec("BEGIN IMMEDIATE", "starting a write transaction")
        })();
        let outcome = match outcome {
            Err(e) => {
                // Nothing ran; every job taken so far fails with the reason.
                self.batch.extend(pending.take());
                self.batch.extend(first.take());
                Err(e)
            }
            Ok(()) => self.fill(pending.take(), first.take(), &gather, lazy),
        };
        let committing = Instant::now();
        let outcome = match outcome {
            Ok(()) => self.commit(),
            Err(e) => Err(e.refused()),
        };
        let commit_time = committing.elapsed();
        if outcome.is_err() && !self.conn.is_autocommit() {
            // Nothing of the batch may commit later: end the transaction here.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let jobs = self.batch.len() - usize::from(renewed);
        self.count(&outcome, renewed);
        if !lazy {
            // The commit's own time (an fsync under FULL) bounds the next gather, not the
            // gathering and running that preceded it.
            self.recent.record(jobs, commit_time);
        }
        // Short of disk space, the batch as a whole (no room for its new pages, a commit that
        // could not grow the WAL, a statement that spilled to it and made SQLite roll the
        // transaction back) or single jobs: each is tried again alone. The lease renewal too,
        // or a disk that stays full could keep the lease from renewing until it ran out.
        let mut retry = Vec::new();
        if matches!(&outcome, Err(e) if e.kind() == SqliteErrorKind::Full) {
            retry.extend(self.batch.drain(..).enumerate());
        } else {
            for i in self.wanting_room.drain(..).rev() {
                retry.push((i, self.batch.remove(i)));
            }
            retry.reverse();
        }
        self.wanting_room.clear();
        let retry = retry.into_iter().map(|(i, job)| (job, renewed && i == 0));
        let retry: Vec<_> = retry.collect();
        for job in self.batch.drain(..) {
            job.finish(outcome.clone());
        }
        if !retry.is_empty() {
            self.retry_alone(retry);
        }
    }

    /// Counts a transaction that ended with `outcome` in the writer's statistics.
    fn count(&self, outcome: &Result<(), SqliteError>, renewed: bool) {
        // Only the requests that took effect count as writes (a job that failed alone left no
        // trace); a batch of nothing else committed nothing worth counting.
        let writes = self.succeeded as u64;
        let stats = &self.shared.stats;
        match outcome {
            Ok(()) if writes > 0 || renewed => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.writes.fetch_add(writes, Ordering::Relaxed);
                stats.largest_batch.fetch_max(writes, Ordering::Relaxed);
                if self.relaxed {
                    stats.lazy_commits.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(()) => {}
            Err(_) => {
                stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Tries `jobs` again after their batch (or they alone) failed for want of disk space, each
    /// in a transaction of its own, so that one that fits is not failed by others that do not.
    ///
    /// A full disk need not stop writes that need no new space (deleting objects): SQLite
    /// starts the WAL over from its beginning, overwriting what is already there, at the first
    /// write after a checkpoint copied all of it back into the database, and grows the file
    /// only while it cannot. So the WAL is checkpointed first — which takes no space either:
    /// every commit made room in the database file for its pages ([`schema::reserve`]) — and
    /// again after every attempt that found no room, before that job's second and last
    /// attempt.
    ///
    /// Running a job again is sound because the transaction of its first run certainly did
    /// not commit: a full disk is reported when there was no room for the new pages (before
    /// the COMMIT), or when a write of the WAL failed, and a transaction commits only by the
    /// frame that ends it, the last one written. (Had it committed all the same, every job is
    /// idempotent or fails on its own the second time: a re-applied compare-and-write, or a
    /// change-log record whose id is taken.)
    fn retry_alone(&mut self, jobs: Vec<(Box<dyn Job>, bool)>) {
        const ATTEMPTS: usize = 2;
        self.checkpoint();
        for (mut job, renewal) in jobs {
            for attempt in 1..=ATTEMPTS {
                let outcome = self.alone(job, renewal);
                job = self
                    .batch
                    .pop()
                    .expect("a job run alone is the whole batch");
                let short = !self.wanting_room.is_empty()
                    || matches!(&outcome, Err(e) if e.kind() == SqliteErrorKind::Full);
                self.wanting_room.clear();
                if short {
                    self.checkpoint();
                    if attempt < ATTEMPTS {
                        continue;
                    }
                }
                job.finish(outcome);
                break;
            }
        }
    }

    /// Runs `job` (a lease `renewal`, or a write) in a transaction of its own, leaving it as
    /// the batch's only job, for the caller to answer, and returns how the transaction ended.
    fn alone(&mut self, job: Box<dyn Job>, renewal: bool) -> Result<(), SqliteError> {
        self.succeeded = 0;
        let outcome = match self.exec("BEGIN IMMEDIATE", "starting a write transaction") {
            Err(e) => {
                self.batch.push(job);
                Err(e.refused())
            }
            Ok(()) => match self.run_one(job) {
                Ok(took_effect) => {
                    self.succeeded = usize::from(took_effect && !renewal);
                    self.commit()
                }
                Err(e) => Err(e.refused()),
            },
        };
        if outcome.is_err() && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.count(&outcome, renewal);
        outcome
    }

    /// Commits the open transaction, once the database file has room for its new pages (see
    /// [`schema::reserve`]). A transaction that failed before its COMMIT (no room) committed
    /// nothing; a failed COMMIT (an fsync error) may have reached the disk all the same.
    fn commit(&self) -> Result<(), SqliteError> {
        schema::reserve(&self.conn, &self.shared.path).map_err(SqliteError::refused)?;
        self.exec("COMMIT", "committing")
    }

    /// Copies what it can of the WAL back into the database, outside any transaction, so that
    /// the next write can start the WAL over instead of growing it. Best effort: a reader still
    /// using the WAL (in another process, say) keeps the next write from starting it over, and
    /// pages a store written by an older cairn left in the WAL, without room made for them in
    /// the database file, cannot be copied there without space.
    fn checkpoint(&self) {
        let _ = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }

    /// Inside the open transaction: runs `renewal`, `first`, and every further job `gather`
    /// lets in (only lazy ones in a lazy batch), each isolated from the others. Every job taken
    /// ends up in `self.batch`. An error means the transaction is lost.
    fn fill(
        &mut self,
        renewal: Option<Box<dyn Job>>,
        first: Option<Box<dyn Job>>,
        gather: &Gather,
        lazy: bool,
    ) -> Result<(), SqliteError> {
        if let Some(renewal) = renewal {
            self.run_one(renewal)?;
        }
        if let Some(job) = first {
            self.succeeded += usize::from(self.run_one(job)?);
        }
        while let Some(job) = gather.next(self.queue, self.batch.len()) {
            if lazy && job.shape() != Shape::Lazy {
                // A durable job never commits lazily: it starts the next batch.
                self.carried = Some(job);
                break;
            }
            self.succeeded += usize::from(self.run_one(job)?);
        }
        Ok(())
    }

    /// Runs one job inside the transaction, isolated from the rest of the batch, and adds it
    /// to `self.batch`. `Ok(true)` if the job took effect, `Ok(false)` if it failed alone.
    fn run_one(&mut self, mut job: Box<dyn Job>) -> Result<bool, SqliteError> {
        let savepoint = job.shape() == Shape::Savepoint;
        if savepoint {
            if let Err(e) = self.exec("SAVEPOINT job", "starting a savepoint") {
                self.batch.push(job);
                return Err(e);
            }
        }
        let cx = WriteCx {
            conn: &self.conn,
            shared: &self.shared,
        };
        let ran = job.run(&cx);
        self.batch.push(job);
        match ran {
            Ok(()) if savepoint => self
                .exec("RELEASE job", "releasing a savepoint")
                .map(|()| true),
            Ok(()) => Ok(true),
            Err(e) if self.conn.is_autocommit() => {
                // Some failures (I/O, a full disk) make SQLite roll back the whole transaction.
                let (kind, what) = match e.kind() {
                    SqliteErrorKind::Full => (
                        SqliteErrorKind::Full,
                        "another request in the same batch ran out of disk space, and SQLite \
                         rolled the batch back",
                    ),
                    _ => (
                        SqliteErrorKind::Sqlite,
                        "another request in the same batch failed and SQLite rolled the batch \
                         back",
                    ),
                };
                Err(SqliteError::new(&self.shared.path, kind, what))
            }
            Err(e) if e.kind() == SqliteErrorKind::Full => {
                // Failed alone, the batch going on: tried again alone after the batch.
                self.wanting_room.push(self.batch.len() - 1);
                if savepoint {
                    self.exec("ROLLBACK TO job", "rolling back a savepoint")?;
                    self.exec("RELEASE job", "releasing a savepoint")?;
                }
                Ok(false)
            }
            // SQLite undid the failing statement, and with it the whole job.
            Err(_) if !savepoint => Ok(false),
            Err(_) => {
                self.exec("ROLLBACK TO job", "rolling back a savepoint")?;
                self.exec("RELEASE job", "releasing a savepoint")
                    .map(|()| false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::{SqliteDb, SqliteOptions};
    use futures_lite::future::block_on;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::mpsc::{sync_channel, Receiver};
    use std::sync::Mutex;
    use std::task::{Context, Waker};

    #[test]
    fn a_batch_waits_for_the_callers_of_the_last_few_batches() {
        let fsync = Duration::from_micros(200);
        let mut recent = Recent::default();
        let want = |r: &Recent| Gather::after(Instant::now(), r).want;
        assert_eq!(want(&recent), 0, "nothing seen: take what is queued");
        recent.record(16, fsync);
        // A straggler split the next batch: the one after it still waits for all sixteen.
        recent.record(5, fsync);
        assert_eq!(want(&recent), 16);
        recent.record(11, fsync);
        assert_eq!(want(&recent), 16);
        // Three batches later the sixteen are forgotten: a lone writer never waits.
        recent.record(1, fsync);
        assert_eq!(want(&recent), 11);
        recent.record(1, fsync);
        recent.record(1, fsync);
        assert_eq!(want(&recent), 1);
        let gather = Gather::after(Instant::now(), &recent);
        assert!(gather.deadline <= Instant::now() + fsync / 2);
        recent.record(MAX_BATCH * 2, fsync);
        assert_eq!(want(&recent), MAX_BATCH);
    }

    /// A fresh database in a directory removed on drop.
    struct Db {
        db: Arc<SqliteDb>,
        dir: std::path::PathBuf,
    }

    impl Db {
        fn open(synchronous: Synchronous) -> Db {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("cairn-writer-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let options = SqliteOptions::default().synchronous(synchronous);
            let db = SqliteDb::open(&dir.join("w.sqlite"), options).unwrap();
            db.writer
                .conn_setup(|conn| conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY)"));
            Db { db, dir }
        }
    }

    impl Drop for Db {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Writer {
        /// Runs `f` on the write connection as a job of its own (test setup).
        fn conn_setup(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<()> + Send + 'static) {
            let mut f = Some(f);
            let op = move |cx: &WriteCx<'_>| {
                f.take().expect("set up once")(cx.conn).unwrap();
                Ok(())
            };
            block_on(self.submit("setting up", op)).unwrap();
        }
    }

    type Submitted<'a, T> = Pin<Box<dyn Future<Output = Result<T, SqliteError>> + 'a>>;

    /// Submits `op` and returns its answer to await: the job is queued when this returns. Only
    /// while a [`gate`] holds the writer: otherwise the writer may answer before the first poll.
    fn queue<'a, T: Send + 'static>(
        db: &'a SqliteDb,
        shape: Shape,
        op: impl FnMut(&WriteCx<'_>) -> Result<T, SqliteError> + Send + 'static,
    ) -> Submitted<'a, T> {
        let mut answer: Submitted<'a, T> = Box::pin(db.writer.submit_shaped("test", shape, op));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            answer.as_mut().poll(&mut cx).is_pending(),
            "queued, not answered"
        );
        answer
    }

    /// A job that, once it runs, holds the writer until released: the jobs queued meanwhile
    /// all find the batch open. Returns its answer and the release. Run again (its batch
    /// having failed for want of space), it holds nothing.
    fn gate(db: &SqliteDb, shape: Shape) -> (Submitted<'_, i64>, std::sync::mpsc::SyncSender<()>) {
        let (running, is_running) = sync_channel(0);
        let (release, released): (_, Receiver<()>) = sync_channel(0);
        let answer = queue(db, shape, move |cx| {
            if running.send(()).is_ok() {
                released.recv().unwrap();
            }
            Ok(synchronous(cx))
        });
        is_running.recv().unwrap();
        (answer, release)
    }

    /// The `synchronous` level a lone job of `shape` runs at. (Not through `queue`: with no
    /// gate holding the writer, the answer may come before a first poll.)
    fn level(db: &SqliteDb, shape: Shape) -> i64 {
        block_on(
            db.writer
                .submit_shaped("test", shape, |cx| Ok(synchronous(cx))),
        )
        .unwrap()
    }

    /// The connection's `synchronous` level inside the running batch: 1 NORMAL, 2 FULL.
    fn synchronous(cx: &WriteCx<'_>) -> i64 {
        cx.conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    }

    fn insert(cx: &WriteCx<'_>, sql: &str) -> Result<(), SqliteError> {
        cx.conn
            .execute(sql, [])
            .map(drop)
            .map_err(cx.shared.sqlite_err("inserting"))
    }

    fn keys(db: &SqliteDb) -> Vec<i64> {
        db.readers
            .with(|conn| {
                let mut stmt = conn.prepare("SELECT k FROM t ORDER BY k").unwrap();
                let rows = stmt.query_map([], |r| r.get(0)).unwrap();
                Ok(rows.map(Result::unwrap).collect())
            })
            .unwrap()
    }

    /// What a store relies on when a put is dropped half way: `settled` answers only once a
    /// write queued before it has committed, though nobody awaits that write any more.
    #[test]
    fn settled_answers_after_every_earlier_write_even_one_nobody_awaits() {
        use crate::backend::HvBackend;
        let db = Db::open(Synchronous::Full);
        let (held, release) = gate(&db.db, Shape::Atomic);
        drop(queue(&db.db, Shape::Atomic, |cx| {
            insert(cx, "INSERT INTO t VALUES (7)")
        }));
        let hv = db.db.hv();
        let mut settled = Box::pin(hv.settled());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(settled.as_mut().poll(&mut cx).is_pending());
        assert_eq!(keys(&db.db), [0i64; 0], "not committed yet");
        release.send(()).unwrap();
        block_on(settled);
        assert_eq!(keys(&db.db), [7]);
        block_on(held).unwrap();
    }

    /// A waker that owns something, as an executor's waker owns its task and the task the
    /// future: waking it, or dropping it, drops what it owns wherever that happens.
    struct Owning(Mutex<Option<Arc<SqliteDb>>>);

    impl std::task::Wake for Owning {
        fn wake(self: Arc<Self>) {
            crate::memory_lock(&self.0).take();
        }
    }

    /// The last handle to a database may be dropped on its own writer thread: when the writer
    /// answers a caller whose waker owns that handle (an executor that was shut down, leaving
    /// its task to the waker). Closing then must not wait for the writer thread from inside it
    /// — that panicked there ("failed to join thread: Resource deadlock avoided"), which left
    /// the lease unreleased — but let it finish the jobs queued and release the lease as a
    /// clean close does.
    #[test]
    fn the_last_handle_dropped_on_the_writer_thread_closes_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.sqlite");
        let db = SqliteDb::open(&path, SqliteOptions::default()).unwrap();
        let instance = db.instance_id();
        let (held, release) = gate(&db, Shape::Atomic);
        let owner = Arc::new(Owning(Mutex::new(Some(db.clone()))));
        let waker = Waker::from(owner.clone());
        let mut answer = Box::pin(db.writer.submit_shaped("test", Shape::Atomic, |_| Ok(())));
        let mut cx = Context::from_waker(&waker);
        assert!(
            answer.as_mut().poll(&mut cx).is_pending(),
            "queued behind the gate"
        );
        // A job queued behind it, whose caller is gone: the writer still runs it.
        drop(queue(&db, Shape::Savepoint, |cx| {
            insert_t(
                cx,
                "CREATE TABLE t (k INTEGER PRIMARY KEY); INSERT INTO t VALUES (9)",
            )
        }));
        drop((answer, held, waker, owner));
        let weak = Arc::downgrade(&db);
        drop(db);
        assert!(
            weak.upgrade().is_some(),
            "only the waker holds the database"
        );
        release.send(()).unwrap();
        // The writer answers, and the waker drops the last handle there.
        let check = rusqlite::Connection::open(&path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let claimed: i64 = check
                .query_row(
                    "SELECT claimed FROM instances WHERE id = ?1",
                    [instance],
                    |r| r.get(0),
                )
                .unwrap();
            if claimed == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "the lease was never released");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(weak.upgrade().is_none());
        let nine: i64 = check
            .query_row("SELECT k FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(nine, 9, "the job queued behind ran before the close");
    }

    fn insert_t(cx: &WriteCx<'_>, sql: &str) -> Result<(), SqliteError> {
        cx.conn
            .execute_batch(sql)
            .map_err(cx.shared.sqlite_err("inserting"))
    }

    #[test]
    fn a_job_whose_one_statement_fails_leaves_no_trace_and_fails_alone() {
        let Db { db, .. } = &Db::open(Synchronous::Normal);
        let before = db.writer_stats();
        let (gate, release) = gate(db, Shape::Atomic);
        // Inserts 1, then fails on the second 1: SQLite undoes the statement, 1 included.
        let failing = queue(db, Shape::Atomic, |cx| {
            insert(cx, "INSERT INTO t VALUES (1), (1)")
        });
        let fine = queue(db, Shape::Atomic, |cx| {
            insert(cx, "INSERT INTO t VALUES (2)")
        });
        // Two statements, the first of which succeeds: its savepoint undoes it.
        let multi = queue(db, Shape::Savepoint, |cx| {
            insert(cx, "INSERT INTO t VALUES (3)")?;
            insert(cx, "INSERT INTO t VALUES (2)")
        });
        let last = queue(db, Shape::Atomic, |cx| {
            insert(cx, "INSERT INTO t VALUES (4)")
        });
        release.send(()).unwrap();
        block_on(gate).unwrap();
        assert!(block_on(failing).is_err());
        block_on(fine).unwrap();
        assert!(block_on(multi).is_err());
        block_on(last).unwrap();
        let after = db.writer_stats();
        assert_eq!(
            (after.commits - before.commits, after.writes - before.writes),
            (1, 3),
            "one batch, carrying the three requests that took effect"
        );
        assert_eq!(keys(db), [2, 4]);
    }

    #[test]
    fn a_failure_that_loses_the_transaction_fails_every_job_and_the_next_batch_is_fresh() {
        let Db { db, .. } = &Db::open(Synchronous::Normal);
        let before = db.writer_stats();
        let (gate, release) = gate(db, Shape::Atomic);
        let fine = queue(db, Shape::Atomic, |cx| {
            insert(cx, "INSERT INTO t VALUES (1)")
        });
        // A failure after which SQLite has rolled back the whole transaction (as it does
        // after an I/O error): even the jobs that succeeded before it must fail.
        let lost = queue(db, Shape::Atomic, |cx| {
            cx.conn.execute_batch("ROLLBACK").unwrap();
            insert(cx, "INSERT INTO t VALUES (1), (1)")
        });
        release.send(()).unwrap();
        assert!(block_on(gate).is_err(), "lost with the transaction");
        assert!(block_on(fine).is_err(), "lost with the transaction");
        assert!(block_on(lost).is_err());
        let after = db.writer_stats();
        assert_eq!(after.failed_batches - before.failed_batches, 1);
        assert_eq!(after.commits, before.commits, "nothing committed");
        // The writer goes on with a fresh transaction.
        block_on(db.writer.submit_shaped("after", Shape::Atomic, |cx| {
            insert(cx, "INSERT INTO t VALUES (5)")
        }))
        .unwrap();
        assert_eq!(keys(db), [5]);
    }

    /// A full disk rolls the whole transaction back too, but its jobs are tried again, each
    /// alone: one that needs the space fails, the others commit.
    #[test]
    fn a_batch_short_of_space_is_tried_again_job_by_job() {
        let Db { db, .. } = &Db::open(Synchronous::Normal);
        let before = db.writer_stats();
        let (gate, release) = gate(db, Shape::Atomic);
        let fine = queue(db, Shape::Atomic, |cx| {
            insert(cx, "INSERT INTO t VALUES (1)")
        });
        // A database that may not grow fails as a full disk does.
        let full = queue(db, Shape::Savepoint, |cx| {
            cx.conn
                .execute_batch("CREATE TABLE IF NOT EXISTS big (v BLOB)")
                .unwrap();
            let pages: i64 = cx
                .conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .unwrap();
            cx.conn
                .pragma_update(None, "max_page_count", pages)
                .unwrap();
            insert(cx, "INSERT INTO big VALUES (zeroblob(1000000))")
        });
        let also_fine = queue(db, Shape::Savepoint, |cx| {
            insert(cx, "INSERT INTO t VALUES (2)")
        });
        release.send(()).unwrap();
        block_on(gate).unwrap();
        block_on(fine).unwrap();
        let err = block_on(full).unwrap_err();
        assert_eq!(err.kind(), SqliteErrorKind::Full, "{err}");
        block_on(also_fine).unwrap();
        assert_eq!(keys(db), [1, 2]);
        let after = db.writer_stats();
        assert_eq!(
            after.commits - before.commits,
            3,
            "the three that fit, one by one"
        );
        // The batch, and the two attempts of the one that does not fit.
        assert_eq!(after.failed_batches - before.failed_batches, 3);
        block_on(db.writer.submit_shaped("after", Shape::Atomic, |cx| {
            cx.conn
                .pragma_update(None, "max_page_count", 1_000_000_000i64)
                .unwrap();
            insert(cx, "INSERT INTO t VALUES (5)")
        }))
        .unwrap();
        assert_eq!(keys(db), [1, 2, 5]);
    }

    #[test]
    fn only_a_batch_of_lazy_jobs_alone_commits_without_the_fsync() {
        let Db { db, .. } = &Db::open(Synchronous::Full);
        let lazy_commits = || db.writer_stats().lazy_commits;
        // Alone, a lazy job commits lazily; the next durable one durably again.
        assert_eq!(level(db, Shape::Lazy), 1);
        assert_eq!(lazy_commits(), 1);
        assert_eq!(level(db, Shape::Atomic), 2);
        assert_eq!(level(db, Shape::Savepoint), 2);
        assert_eq!(lazy_commits(), 1);

        // A lazy job that joins a durable batch commits durably with it.
        let (gate_level, release) = gate(db, Shape::Atomic);
        let joined = queue(db, Shape::Lazy, |cx| Ok(synchronous(cx)));
        release.send(()).unwrap();
        assert_eq!(block_on(gate_level).unwrap(), 2);
        assert_eq!(block_on(joined).unwrap(), 2);
        assert_eq!(lazy_commits(), 1);

        // A durable job that arrives while a lazy batch runs waits for the next batch.
        let commits = db.writer_stats().commits;
        let (gate_level, release) = gate(db, Shape::Lazy);
        let also_lazy = queue(db, Shape::Lazy, |cx| Ok(synchronous(cx)));
        let durable = queue(db, Shape::Atomic, |cx| Ok(synchronous(cx)));
        let lazy_after = queue(db, Shape::Lazy, |cx| Ok(synchronous(cx)));
        release.send(()).unwrap();
        assert_eq!(block_on(gate_level).unwrap(), 1);
        assert_eq!(block_on(also_lazy).unwrap(), 1);
        assert_eq!(block_on(durable).unwrap(), 2);
        assert_eq!(block_on(lazy_after).unwrap(), 2, "joined the durable batch");
        assert_eq!(db.writer_stats().commits - commits, 2);
        assert_eq!(lazy_commits(), 2);
    }

    #[test]
    fn under_synchronous_normal_nothing_is_relaxed_or_counted_as_lazy() {
        let Db { db, .. } = &Db::open(Synchronous::Normal);
        assert_eq!(level(db, Shape::Lazy), 1);
        assert_eq!(level(db, Shape::Atomic), 1);
        assert_eq!(db.writer_stats().lazy_commits, 0);
    }
}
