//! The one driver contract every machine follows (see the crate docs for the loop).

use crate::{Completion, Instant, Request};

/// What a machine wants next.
#[must_use = "a machine makes progress only when its requests are performed and answered"]
#[derive(Debug, PartialEq, Eq)]
pub enum Poll<'a, T> {
    /// Perform this request and feed its answer to [`Machine::handle`]. Polling again before
    /// answering returns the same request.
    Io(Request<'a>),
    /// Nothing to do until this instant; poll again at or after it.
    Wait(Instant),
    /// The machine is finished. It must not be polled again.
    Done(T),
}

/// A sans-IO state machine: fed through [`handle`](Machine::handle), drained through
/// [`poll`](Machine::poll), one outstanding request at a time.
///
/// Every call does a bounded amount of work and allocates nothing.
pub trait Machine {
    /// What the machine produces when it is done.
    type Output;

    /// What the machine wants next, given the current time.
    ///
    /// # Panics
    /// If called again after it returned [`Poll::Done`].
    fn poll(&mut self, now: Instant) -> Poll<'_, Self::Output>;

    /// Feeds the answer to the request last returned by [`poll`](Machine::poll).
    ///
    /// # Panics
    /// If no request is outstanding, or `completion` is not a possible answer to it: both are
    /// bugs in the driver, not conditions a machine can recover from.
    fn handle(&mut self, completion: Completion<'_>);
}

/// Panics with the standard message for a completion that does not answer the outstanding
/// request. Kept out of line so the hot paths stay small.
#[cold]
#[inline(never)]
#[track_caller]
pub(crate) fn unexpected(machine: &str, state: &str, completion: &Completion<'_>) -> ! {
    panic!("driver bug: {machine} in state {state} cannot take completion `{completion}`")
}
