//! A one-shot reply slot: some other thread (the SQLite writer, a runtime's blocking pool) fills
//! it once, and the caller's future takes the value, on any runtime (tokio, smol,
//! `futures_lite::future::block_on`) without blocking it.
//!
//! A mutex around a value and a waker: cheaper than a channel, and the sender never waits on it
//! for longer than the caller takes to register its waker.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
    /// The sender is gone (with or without a value).
    closed: bool,
}

/// The sending half of a reply. Dropping it unanswered wakes the caller with "closed".
///
/// A value sent after the [`Answer`] was dropped is dropped by [`send`](Reply::send) itself,
/// on the sender's thread, before it returns: whatever the value owns (an open file, a temp
/// file that removes itself) is released by then.
pub(crate) struct Reply<T>(Arc<Mutex<Slot<T>>>);

impl<T> Reply<T> {
    pub(crate) fn send(self, value: T) {
        crate::memory_lock(&self.0).value = Some(value);
        // Drop wakes the caller; if the caller is gone, it drops the last handle on the slot,
        // and the value with it.
    }
}

impl<T> Drop for Reply<T> {
    fn drop(&mut self) {
        let waker = {
            let mut slot = crate::memory_lock(&self.0);
            slot.closed = true;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving half: resolves to `None` if the reply was dropped unanswered.
pub(crate) struct Answer<T>(Arc<Mutex<Slot<T>>>);

impl<T> Future for Answer<T> {
    type Output = Option<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut slot = crate::memory_lock(&self.0);
        if let Some(value) = slot.value.take() {
            return Poll::Ready(Some(value));
        }
        if slot.closed {
            return Poll::Ready(None);
        }
        match &mut slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// A fresh slot's two halves.
pub(crate) fn reply_slot<T>() -> (Reply<T>, Answer<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        value: None,
        waker: None,
        closed: false,
    }));
    (Reply(slot.clone()), Answer(slot))
}
