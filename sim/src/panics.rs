//! A panic inside a seed (a core assertion, a broken contract) is a failure to report with the
//! seed, not a crash of the simulator, and thousands of them (in `cairn-sim mutants`) must not
//! flood the terminal. [`quietly`] runs a closure with the panic hook silenced on this thread
//! and hands back the panic's message and location instead.

use std::cell::{Cell, RefCell};
use std::panic;
use std::sync::Once;

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that records instead of printing while
/// [`quietly`] runs on the panicking thread, and defers to the previous hook otherwise.
pub fn install_quiet_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                LAST.with(|last| *last.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f` (which catches its own unwinding) with panics recorded rather than printed; an
/// `Err` comes back as the panic's message with its location.
pub fn quietly<T>(f: impl FnOnce() -> std::thread::Result<T>) -> Result<T, String> {
    QUIET.with(|q| q.set(true));
    let result = f();
    QUIET.with(|q| q.set(false));
    result.map_err(|payload| {
        LAST.with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| message(payload.as_ref()))
    })
}

fn message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_panic_comes_back_with_its_message_and_location() {
        install_quiet_hook();
        let result: Result<(), String> =
            quietly(|| panic::catch_unwind(|| panic!("assertion in a machine")));
        let message = result.unwrap_err();
        assert!(message.contains("assertion in a machine"), "{message}");
        assert!(message.contains("panics.rs"), "{message}");
        assert_eq!(quietly(|| panic::catch_unwind(|| 7)), Ok(7));
    }
}
