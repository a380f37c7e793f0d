//! Running the directory's blocking file work off the executor: on the blocking pool of the
//! runtime given to [`BlobDirOptions::offload`](super::BlobDirOptions::offload), and waiting
//! for what was started there before (see [`Offload::settled`]).

use crate::runtime::{unblocked, Runtime};
use event_listener::Event;
use std::io;
use std::sync::{Arc, Mutex};

/// A runtime's blocking pool, and the jobs running on it now.
pub(crate) struct Offload {
    runtime: Arc<dyn Runtime>,
    running: Mutex<Running>,
    /// Notified whenever a job finishes.
    finished: Event,
}

/// The tickets of the jobs started and not yet finished. A put has a few jobs in flight at
/// most (one per operation under way), so a vector searched in full is the cheapest set.
#[derive(Default)]
struct Running {
    next: u64,
    tickets: Vec<u64>,
}

/// A job's place in [`Running`], given back when it drops: on the pool's thread, after the
/// job's result was dropped there if nobody was waiting for it any more (see
/// [`Offload::run`]), or in the caller's future once the caller took the result.
struct Ticket {
    offload: Arc<Offload>,
    id: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        {
            let mut running = crate::memory_lock(&self.offload.running);
            let at = running.tickets.iter().position(|&t| t == self.id);
            let at = at.unwrap_or_else(|| unreachable!("a ticket is given back once"));
            running.tickets.swap_remove(at);
        }
        self.offload.finished.notify(usize::MAX);
    }
}

impl Offload {
    pub(crate) fn new(runtime: Arc<dyn Runtime>) -> Offload {
        Offload {
            runtime,
            running: Mutex::default(),
            finished: Event::new(),
        }
    }

    /// Runs `job` on the runtime's blocking pool and returns its result.
    ///
    /// The job runs to its end even if this future is dropped meanwhile; its result (an open
    /// file, a temp file that removes itself when dropped) is then dropped on the pool's thread,
    /// and only after that does the job count as finished for [`settled`](Offload::settled).
    pub(crate) async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        job: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let ticket = self.ticket();
        // A tuple drops its fields in order: the result before the ticket.
        match unblocked(&*self.runtime, move || (job(), ticket)).await {
            Some((result, _ticket)) => result,
            None => Err(io::Error::other(
                "the runtime lost the blob directory's file work without running or dropping it",
            )),
        }
    }

    /// Runs `job` on the runtime's blocking pool without waiting for it: cleanup of a future
    /// dropped half way, such as removing its temp file. [`settled`](Offload::settled) waits for
    /// it as for any other job.
    pub(crate) fn detach(self: &Arc<Self>, job: impl FnOnce() + Send + 'static) {
        let ticket = self.ticket();
        crate::runtime::unblock_detached(&*self.runtime, move || {
            job();
            drop(ticket);
        });
    }

    /// Counts a job as running until the ticket drops.
    fn ticket(self: &Arc<Self>) -> Ticket {
        let mut running = crate::memory_lock(&self.running);
        let id = running.next;
        running.next += 1;
        running.tickets.push(id);
        Ticket {
            offload: self.clone(),
            id,
        }
    }

    /// Resolves once every job started before the call has finished, those whose callers
    /// stopped waiting included. Jobs started meanwhile are not waited for, so a busy directory
    /// cannot keep it waiting.
    pub(crate) async fn settled(&self) {
        let until = crate::memory_lock(&self.running).next;
        let done = || {
            let running = crate::memory_lock(&self.running);
            running.tickets.iter().all(|&t| t >= until)
        };
        loop {
            if done() {
                return;
            }
            let listener = self.finished.listen();
            if done() {
                return;
            }
            listener.await;
        }
    }
}
