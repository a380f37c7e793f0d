//! Group commit. One thread owns the write connection; every write is a job sent to it over a
//! channel. The thread takes the first job, drains every job already queued (up to
//! [`MAX_BATCH`]; see [`gather`] for the short wait that keeps batches whole), runs them all in one `BEGIN IMMEDIATE … COMMIT`, each inside its own
//! `SAVEPOINT` so that one failing job rolls back only itself, and only after the commit answers
//! every caller. N concurrent writers therefore share one commit, and one fsync.
//!
//! Replies travel over one-shot async channels, so a caller awaits its answer on any runtime
//! (tokio, smol, `futures_lite::future::block_on`) without blocking it. The job queue is
//! unbounded, but every caller waits for its answer before sending again, so it holds at most one
//! job per concurrent caller.

use super::lease;
use super::{Shared, SqliteError, SqliteErrorKind};
use rusqlite::Connection;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Most jobs committed together. Large enough that sixteen or a hundred concurrent writers share
/// one fsync; small enough that one batch (up to 256 inline objects of 1 MiB at worst) stays a
/// bounded amount of WAL and of latency for the first caller in it.
pub(crate) const MAX_BATCH: usize = 256;

/// Longest the writer thread sleeps while idle before it checks whether the lease needs renewing
/// (real time; the lease itself is judged by the configured clock).
const MAX_IDLE_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// What a job sees while it runs: the write connection, inside the batch's transaction and its own
/// savepoint.
pub(crate) struct WriteCx<'a> {
    pub conn: &'a Connection,
    pub shared: &'a Shared,
}

/// One unit of work for the writer thread.
pub(crate) trait Job: Send {
    /// Does the work inside the transaction. An error rolls back this job's savepoint only.
    fn run(&mut self, cx: &WriteCx<'_>) -> Result<(), SqliteError>;
    /// Answers the caller once the batch is over: `batch` is the commit's outcome.
    fn finish(self: Box<Self>, batch: Result<(), SqliteError>);
}

/// A job built from a closure, answering its caller over a one-shot channel.
struct Pending<T, F> {
    op: Option<F>,
    result: Option<Result<T, SqliteError>>,
    reply: async_channel::Sender<Result<T, SqliteError>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&WriteCx<'_>) -> Result<T, SqliteError> + Send,
{
    fn run(&mut self, cx: &WriteCx<'_>) -> Result<(), SqliteError> {
        let op = self.op.take().expect("the writer runs each job once");
        let result = op(cx);
        let outcome = result.as_ref().map(|_| ()).map_err(Clone::clone);
        self.result = Some(result);
        outcome
    }

    fn finish(self: Box<Self>, batch: Result<(), SqliteError>) {
        let answer = match (self.result, batch) {
            // Its own failure: its savepoint was rolled back, whatever became of the batch.
            (Some(Err(e)), _) => Err(e),
            // The batch did not commit: nothing it did is in the database.
            (_, Err(e)) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (None, Ok(())) => unreachable!("a committed batch ran every one of its jobs"),
        };
        // The caller may have stopped waiting (its future was dropped); the answer is moot then.
        let _ = self.reply.try_send(answer);
    }
}

/// The writer's counters, for tests and benchmarks of group commit.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    commits: AtomicU64,
    writes: AtomicU64,
    largest_batch: AtomicU64,
    failed_batches: AtomicU64,
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
}

impl Stats {
    pub fn snapshot(&self) -> WriterStats {
        WriterStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            largest_batch: self.largest_batch.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
        }
    }
}

/// The sending side of the writer thread. Dropping it stops the thread after the jobs already
/// queued, releases the lease and closes the write connection, and waits for all of that.
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Starts the writer thread over `conn`.
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

    /// Runs `op` in the next batch and returns its result once the batch has committed.
    pub async fn submit<T, F>(&self, what: &str, op: F) -> Result<T, SqliteError>
    where
        T: Send + 'static,
        F: FnOnce(&WriteCx<'_>) -> Result<T, SqliteError> + Send + 'static,
    {
        let closed = || SqliteError::new(&self.shared.path, SqliteErrorKind::Closed, what);
        let (reply, answer) = async_channel::bounded(1);
        let job = Box::new(Pending {
            op: Some(op),
            result: None,
            reply,
        });
        let jobs = self.jobs.as_ref().ok_or_else(closed)?;
        jobs.send(job).map_err(|_| closed())?;
        answer.recv().await.map_err(|_| closed())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            // A panic on the writer thread has already failed every waiting caller; nothing is
            // left to report here.
            let _ = thread.join();
        }
    }
}

/// Renews the lease inside a batch; not counted as a write.
struct Renewal {
    shared: Arc<Shared>,
    /// The new end of the lease, once renewed.
    until: Option<cairn_core::Instant>,
}

impl Job for Renewal {
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

fn run(conn: Connection, shared: Arc<Shared>, queue: &mpsc::Receiver<Box<dyn Job>>) {
    let tick = std::time::Duration::from_millis(shared.lease.duration.as_millis() / 4)
        .clamp(std::time::Duration::from_millis(1), MAX_IDLE_TICK);
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH + 1);
    let mut open = true;
    // The previous batch's size and commit time, to gather the next one (see `gather`).
    let mut last = (0, std::time::Duration::ZERO);
    while open {
        match queue.recv_timeout(tick) {
            Ok(job) => batch.push(job),
            // Idle for a tick: whoever was writing together has stopped.
            Err(mpsc::RecvTimeoutError::Timeout) => last = (0, std::time::Duration::ZERO),
            Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
        }
        if !batch.is_empty() {
            gather(queue, &mut batch, last);
        }
        let writes = batch.len() as u64;
        if shared.lease.renewal_due(shared.clock.now()) {
            let renewal = Renewal {
                shared: shared.clone(),
                until: None,
            };
            batch.insert(0, Box::new(renewal));
        }
        if !batch.is_empty() {
            let started = std::time::Instant::now();
            commit(&conn, &shared, &mut batch, writes);
            last = (writes as usize, started.elapsed());
        }
    }
    // A clean close hands this instance's remaining change-log entries to the next scanner at
    // once. Best effort: if it fails, the lease simply runs out.
    let _ = lease::release(&conn, shared.lease.instance);
}

/// Longest the writer waits for stragglers before committing, whatever the commit costs.
const MAX_GATHER_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// Fills `batch` with the jobs already queued, and then, if the previous batch was larger, waits
/// briefly for the rest of its callers: answered all at once, they come back a few microseconds
/// apart, and a writer that committed whatever had arrived first would split them into a large and
/// a small batch, paying two commits for one. The wait is bounded by a quarter of the previous
/// commit's time (an fsync, under `synchronous=FULL`), so it costs little where it helps and
/// nothing where commits are cheap; a lone writer (previous batch of one) never waits.
fn gather(
    queue: &mpsc::Receiver<Box<dyn Job>>,
    batch: &mut Vec<Box<dyn Job>>,
    (last_size, last_commit): (usize, std::time::Duration),
) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    let want = last_size.min(MAX_BATCH);
    let deadline = std::time::Instant::now() + (last_commit / 4).min(MAX_GATHER_WAIT);
    while batch.len() < want {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match queue.recv_timeout(left) {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// Runs `batch` in one transaction and answers every job.
fn commit(conn: &Connection, shared: &Shared, batch: &mut Vec<Box<dyn Job>>, writes: u64) {
    let exec = |sql: &str, what: &'static str| {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute([]))
            .map(drop)
            .map_err(shared.sqlite_err(what))
    };
    let cx = WriteCx { conn, shared };
    // A lone job needs no savepoint: if it fails, rolling back the whole transaction undoes
    // exactly its work. That saves two statements on the uncontended path.
    let alone = batch.len() == 1;
    let outcome = (|| {
        exec("BEGIN IMMEDIATE", "starting a write transaction")?;
        for job in batch.iter_mut() {
            if alone {
                if job.run(&cx).is_err() {
                    if !conn.is_autocommit() {
                        exec("ROLLBACK", "rolling back a failed request")?;
                    }
                    // The job answers with its own error; there is nothing else to answer.
                    return Ok(false);
                }
                continue;
            }
            exec("SAVEPOINT job", "starting a savepoint")?;
            if job.run(&cx).is_ok() {
                exec("RELEASE job", "releasing a savepoint")?;
                continue;
            }
            if conn.is_autocommit() {
                // Some failures (I/O, a full disk) make SQLite roll back the whole transaction.
                return Err(SqliteError::new(
                    &shared.path,
                    SqliteErrorKind::Sqlite,
                    "another request in the same batch failed and SQLite rolled the batch back",
                ));
            }
            exec("ROLLBACK TO job", "rolling back a savepoint")?;
            exec("RELEASE job", "releasing a savepoint")?;
        }
        exec("COMMIT", "committing").map(|()| true)
    })();
    if outcome.is_err() && !conn.is_autocommit() {
        // Nothing of the batch may commit later: end the transaction here.
        let _ = conn.execute_batch("ROLLBACK");
    }
    let stats = &shared.stats;
    match outcome {
        Ok(true) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.writes.fetch_add(writes, Ordering::Relaxed);
            stats.largest_batch.fetch_max(writes, Ordering::Relaxed);
        }
        Ok(false) => {}
        Err(_) => {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
        }
    }
    let outcome = outcome.map(drop);
    for job in batch.drain(..) {
        job.finish(outcome.clone());
    }
}
