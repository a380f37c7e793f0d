//! What the driver needs from an async runtime: spawn background work, sleep, and run blocking
//! file I/O where it cannot stall the runtime's other tasks. One small trait, a few lines per
//! runtime.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable unit of background work.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A closure that blocks its thread (a file write, an `fsync`), for [`Runtime::unblock`].
pub type BlockingJob = Box<dyn FnOnce() + Send + 'static>;

/// Spawning, sleeping and running blocking jobs: the only runtime services the driver and the
/// backends use.
pub trait Runtime: Send + Sync + 'static {
    /// Runs `task` in the background.
    fn spawn(&self, task: Task);
    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> Task;
    /// Whether [`spawn`](Runtime::spawn) runs the task to its end before it returns, as
    /// [`InlineRuntime`] does. Work that repeats for the store's lifetime
    /// ([`TieredStore::recover_every`](crate::TieredStore::recover_every)) then gets a thread
    /// of its own instead of never handing the caller's thread back.
    fn runs_inline(&self) -> bool {
        false
    }
    /// Runs `job`, which blocks its thread (the blob directory's file writes, `fsync`s,
    /// renames, unlinks and sweeps; its reads stay in place), where it cannot stall this
    /// runtime's other tasks: on its blocking pool
    /// (`spawn_blocking`, `smol::unblock`). Each job must run once, or be dropped unrun when the
    /// runtime shuts down (it then runs in place, on the thread that drops it).
    ///
    /// The default runs it in place, on the calling thread, before returning: right for
    /// [`InlineRuntime`], which has no other tasks to stall. A runtime of your own that keeps
    /// the default blocks its executor's thread for the duration of each job.
    fn unblock(&self, job: BlockingJob) {
        job();
    }
}

/// Runs `job` through [`Runtime::unblock`] and returns its result, or `None` if the runtime
/// lost the job without running or dropping it (forgot it). A panic in the job resumes in the
/// caller.
///
/// A job the runtime drops unrun — tokio's `spawn_blocking` on a runtime shut down, or shutting
/// down — runs in place instead, where it is dropped: a store that outlives its tokio runtime
/// goes on writing its blobs as on [`InlineRuntime`], instead of failing every large put, delete
/// and sweep.
///
/// The job runs to its end even if this future is dropped; its result is then dropped on the
/// thread that ran it, before the job is over (see [`Reply`](crate::oneshot::Reply)).
#[cfg(feature = "blobdir")] // its only user, so far
pub(crate) async fn unblocked<T: Send + 'static>(
    runtime: &dyn Runtime,
    job: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (reply, answer) = crate::oneshot::reply_slot();
    unblock_detached(runtime, move || {
        reply.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)));
    });
    match answer.await? {
        Ok(value) => Some(value),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `job` through [`Runtime::unblock`] without waiting for it; a job the runtime drops unrun
/// runs in place, as in [`unblocked`].
#[cfg(feature = "blobdir")]
pub(crate) fn unblock_detached(runtime: &dyn Runtime, job: impl FnOnce() + Send + 'static) {
    /// Runs its job when dropped: after the runtime called it, or instead.
    struct RunOnDrop<F: FnOnce()>(Option<F>);

    impl<F: FnOnce()> Drop for RunOnDrop<F> {
        fn drop(&mut self) {
            if let Some(job) = self.0.take() {
                let _job = InBlockingJob::enter();
                job();
            }
        }
    }

    let run = RunOnDrop(Some(job));
    runtime.unblock(Box::new(move || drop(run)));
}

#[cfg(feature = "blobdir")]
std::thread_local! {
    static IN_BLOCKING_JOB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as running a job of [`unblocked`] until dropped: the job itself and
/// the drop of a result nobody waits for any more.
#[cfg(feature = "blobdir")]
struct InBlockingJob {
    was: bool,
}

#[cfg(feature = "blobdir")]
impl InBlockingJob {
    fn enter() -> InBlockingJob {
        InBlockingJob {
            was: IN_BLOCKING_JOB.replace(true),
        }
    }
}

#[cfg(feature = "blobdir")]
impl Drop for InBlockingJob {
    fn drop(&mut self) {
        IN_BLOCKING_JOB.set(self.was);
    }
}

/// Whether the current thread is running a job of [`unblocked`] (on a blocking pool, or in
/// place): file work found to be needed there can be done at once rather than handed on.
#[cfg(feature = "blobdir")]
pub(crate) fn in_blocking_job() -> bool {
    IN_BLOCKING_JOB.get()
}

/// The tokio runtime (feature `tokio`).
#[cfg(feature = "tokio")]
#[derive(Clone, Debug)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
}

#[cfg(feature = "tokio")]
impl TokioRuntime {
    /// The runtime this is called from.
    ///
    /// # Panics
    /// Outside a tokio runtime (use [`TokioRuntime::from_handle`] there), and in one built
    /// without its time driver, as [`from_handle`](TokioRuntime::from_handle) does.
    pub fn current() -> Self {
        Self::from_handle(tokio::runtime::Handle::current())
    }

    /// A specific runtime.
    ///
    /// # Panics
    /// If the runtime was built without its time driver (`enable_time()` or `enable_all()` on
    /// its builder): the store sleeps between retries and between background passes, and a
    /// sleep on such a runtime would panic inside a background task, where nobody sees it —
    /// recovery every so often would simply stop. Better here, at once.
    pub fn from_handle(handle: tokio::runtime::Handle) -> Self {
        let timers = {
            let _runtime = handle.enter();
            std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_ok()
        };
        assert!(
            timers,
            "cairn's TokioRuntime needs the tokio runtime's time driver: build the runtime with \
             `enable_time()` or `enable_all()`"
        );
        TokioRuntime { handle }
    }
}

#[cfg(feature = "tokio")]
impl Runtime for TokioRuntime {
    fn spawn(&self, task: Task) {
        drop(self.handle.spawn(task));
    }
    fn sleep(&self, duration: Duration) -> Task {
        // The timer is this runtime's even when the store is driven from elsewhere
        // (`futures_lite::future::block_on` on a plain thread, say): it runs as a task of the
        // runtime, which the returned future awaits. A store may outlive its runtime, though
        // (driven on from another runtime, or from a plain thread, after its own was shut
        // down), and a tokio timer polled then panics ("A Tokio 1.x context was found, but it is
        // being shutdown"). The runtime drops the timer's task unfinished instead, whether it
        // was spawned after the shutdown or before: the rest of the wait is then served by a
        // thread of its own.
        let started = std::time::Instant::now();
        let timer = {
            let _runtime = self.handle.enter();
            let until = tokio::time::Instant::now() + duration;
            Timer(self.handle.spawn(tokio::time::sleep_until(until)))
        };
        Box::pin(async move {
            let mut timer = timer;
            if (&mut timer.0).await.is_err() {
                sleep_on_a_thread(started + duration).await;
            }
        })
    }
    fn unblock(&self, job: BlockingJob) {
        drop(self.handle.spawn_blocking(job));
    }
}

/// A tokio timer's task, aborted when the sleep is dropped early (a background loop that ends
/// with its store does not leave its timer behind for the rest of the interval).
#[cfg(feature = "tokio")]
struct Timer(tokio::task::JoinHandle<()>);

#[cfg(feature = "tokio")]
impl Drop for Timer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Completes at `until`, timed by a thread of its own: for a sleep whose runtime is gone. If no
/// thread can be had, at once. Dropped early, it wakes its thread, which then ends at once
/// rather than sleep out the rest of the wait (a backoff of up to 30 s) for nobody.
#[cfg(feature = "tokio")]
async fn sleep_on_a_thread(until: std::time::Instant) {
    use event_listener::{Event, Listener};
    use std::sync::Arc;

    /// Rings its event when dropped: with the sleep, done or not.
    struct Dropped(Arc<Event>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.notify(usize::MAX);
        }
    }

    let left = until.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        return;
    }
    let (rung, dropped) = (Arc::new(Event::new()), Dropped(Arc::new(Event::new())));
    let (listener, cancelled) = (rung.listen(), dropped.0.listen());
    let spawned = std::thread::Builder::new()
        .name("cairn-sleep".into())
        .spawn(move || {
            if cancelled.wait_timeout(left).is_none() {
                rung.notify(usize::MAX);
            }
        });
    if spawned.is_ok() {
        listener.await;
    }
}

/// The smol runtime (feature `smol`): its global executor and timers.
#[cfg(feature = "smol")]
#[derive(Clone, Copy, Debug, Default)]
pub struct SmolRuntime;

#[cfg(feature = "smol")]
impl Runtime for SmolRuntime {
    fn spawn(&self, task: Task) {
        smol::spawn(task).detach();
    }
    fn sleep(&self, duration: Duration) -> Task {
        Box::pin(async move {
            smol::Timer::after(duration).await;
        })
    }
    fn unblock(&self, job: BlockingJob) {
        smol::unblock(job).detach();
    }
}

/// No runtime at all: background work runs to completion inline, on the calling thread, before
/// the call that started it returns; sleeping blocks the thread, and blocking jobs run in place.
/// Used by
/// [`BlockingStore`](crate::BlockingStore).
#[derive(Clone, Copy, Debug, Default)]
pub struct InlineRuntime;

impl Runtime for InlineRuntime {
    fn spawn(&self, mut task: Task) {
        block_on(task.as_mut());
    }
    fn sleep(&self, duration: Duration) -> Task {
        std::thread::sleep(duration);
        Box::pin(std::future::ready(()))
    }
    fn runs_inline(&self) -> bool {
        true
    }
}

/// Runs `future` to completion on the calling thread. A future that is ready on its first poll
/// (every call served by synchronous backends) is polled once with a no-op waker: no parker, no
/// thread-local. One that suspends is handed on to `futures_lite`'s `block_on`, which polls it
/// again with a real waker and parks the thread between wake-ups.
///
/// Takes the future pinned where the caller built it (`block_on(pin!(store.get(key)))`): a
/// store future is large, and moving it here would copy all of it on every call.
pub(crate) fn block_on<F: Future + ?Sized>(mut future: Pin<&mut F>) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => futures_lite::future::block_on(future),
    }
}

#[cfg(all(test, feature = "tokio"))]
mod tests {
    use super::*;

    /// A store over `TokioRuntime::from_handle` may be driven outside the runtime — which is
    /// what `from_handle` is for — and back off there.
    #[test]
    fn a_tokio_sleep_works_from_outside_the_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let runtime = TokioRuntime::from_handle(rt.handle().clone());
        futures_lite::future::block_on(runtime.sleep(Duration::from_millis(1)));
    }

    /// A sleep served by a thread because its runtime is gone, dropped early, ends its thread
    /// then, not when the wait would have.
    #[test]
    #[cfg(target_os = "linux")]
    fn a_sleep_outliving_its_tokio_runtime_leaves_no_thread_when_dropped() {
        let sleepers = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .flatten()
                .filter(|task| {
                    std::fs::read_to_string(task.path().join("comm"))
                        .is_ok_and(|c| c.trim_end() == "cairn-sleep")
                })
                .count()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let runtime = TokioRuntime::from_handle(rt.handle().clone());
        drop(rt);
        let mut sleep = runtime.sleep(Duration::from_secs(3600));
        let polled = futures_lite::future::block_on(futures_lite::future::poll_once(&mut sleep));
        assert!(polled.is_none(), "an hour has not passed");
        // Waits for the count of sleeping threads to be `done` (a thread names itself once it
        // runs), failing with `what` after 20 s.
        let wait_until = |what: &str, done: &dyn Fn(usize) -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while !done(sleepers()) {
                assert!(std::time::Instant::now() < deadline, "{what}");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        wait_until("the wait is on a thread of its own", &|n| n >= 1);
        drop(sleep);
        wait_until("the thread slept on", &|n| n == 0);
    }

    /// A blocking job leaves the executor's thread: on a current-thread runtime, the only
    /// thread that polls tasks is the caller's, and the job runs on another.
    #[test]
    #[cfg(feature = "blobdir")]
    fn a_tokio_blocking_job_runs_off_the_executor_thread() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let caller = std::thread::current().id();
        let ran_on = rt.block_on(async {
            unblocked(&TokioRuntime::current(), || std::thread::current().id()).await
        });
        assert_ne!(ran_on, Some(caller));
        assert!(ran_on.is_some());
    }

    /// A job that panics on the blocking pool panics in the caller too, as the job would have
    /// where it was called.
    #[test]
    #[cfg(feature = "blobdir")]
    #[should_panic(expected = "the job's own panic")]
    fn a_panic_in_a_blocking_job_resumes_in_the_caller() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            unblocked(&TokioRuntime::current(), || panic!("the job's own panic")).await
        });
    }

    /// A runtime without timers is refused when the store's runtime is made, not found out by
    /// a background task that panics unseen at its first sleep.
    #[test]
    #[should_panic(expected = "needs the tokio runtime's time driver")]
    fn a_tokio_runtime_without_timers_is_refused_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _ = rt.block_on(async { TokioRuntime::current() });
    }
}
