//! What the driver needs from an async runtime: spawn background work and sleep. One small trait,
//! a few lines per runtime.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed, sendable unit of background work.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Spawning and sleeping, the only runtime services the driver uses.
pub trait Runtime: Send + Sync + 'static {
    /// Runs `task` in the background.
    fn spawn(&self, task: Task);
    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> Task;
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
    /// Outside a tokio runtime; use [`TokioRuntime::from_handle`] there.
    pub fn current() -> Self {
        TokioRuntime {
            handle: tokio::runtime::Handle::current(),
        }
    }

    /// A specific runtime. Its time driver must be enabled.
    pub fn from_handle(handle: tokio::runtime::Handle) -> Self {
        TokioRuntime { handle }
    }
}

#[cfg(feature = "tokio")]
impl Runtime for TokioRuntime {
    fn spawn(&self, task: Task) {
        drop(self.handle.spawn(task));
    }
    fn sleep(&self, duration: Duration) -> Task {
        Box::pin(tokio::time::sleep(duration))
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
}

/// No runtime at all: background work runs to completion inline, on the calling thread, before
/// the call that started it returns; sleeping blocks the thread. Used by
/// [`BlockingStore`](crate::BlockingStore).
#[derive(Clone, Copy, Debug, Default)]
pub struct InlineRuntime;

impl Runtime for InlineRuntime {
    fn spawn(&self, task: Task) {
        futures_lite::future::block_on(task);
    }
    fn sleep(&self, duration: Duration) -> Task {
        std::thread::sleep(duration);
        Box::pin(std::future::ready(()))
    }
}
