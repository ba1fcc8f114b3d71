//! A panic inside an evaluation fails that policy, not the process.
//!
//! regorus 0.14 has builtins that panic on some arguments (`strings.count(s, "")` takes byte
//! windows of length zero), so a careless policy could abort `regate eval`, `test` and `audit`,
//! and fail every request it judged in `serve`. [`caught`] runs an evaluation and turns a panic
//! into a [`Panicked`] its caller reports as the policy's failure.
//!
//! The panic's message goes where failures go (withheld for a Secret, scrubbed of its values),
//! never to stderr: while [`caught`] runs, [`is_caught`] tells the process's panic hook to stay
//! silent, and the hook records where the panic happened ([`note_location`]).

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    /// Whether this thread is inside [`caught`] (nested calls count).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
    /// Where the last panic on this thread happened, as the hook saw it.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic caught during an evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Panicked {
    /// The panic's message (may quote input: report it as an engine error is reported).
    pub message: String,
    /// `file:line:column` of the panic, when the process's hook recorded it.
    pub location: Option<String>,
}

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.location {
            Some(at) => write!(f, "the evaluator panicked at {at}: {}", self.message),
            None => write!(f, "the evaluator panicked: {}", self.message),
        }
    }
}

impl std::error::Error for Panicked {}

/// Runs `evaluation`; a panic in it becomes `Err`.
pub fn caught<T>(evaluation: impl FnOnce() -> T) -> Result<T, Panicked> {
    DEPTH.with(|d| d.set(d.get() + 1));
    LOCATION.with(|l| l.borrow_mut().take());
    let result = catch_unwind(AssertUnwindSafe(evaluation));
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    result.map_err(|payload| Panicked {
        message: payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("a panic without a message")
            .chars()
            .take(300)
            .collect(),
        location: LOCATION.with(|l| l.borrow_mut().take()),
    })
}

/// Whether a panic on this thread now will be caught by [`caught`] (for the panic hook: it
/// should then print nothing).
pub fn is_caught() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Records where a panic that [`caught`] will catch happened (called by the panic hook).
pub fn note_location(location: &std::panic::Location<'_>) {
    // A dependency's file as `crate-version/src/...`, not the path of this machine's registry.
    let file = location.file();
    let file = file
        .find("/registry/src/")
        .and_then(|at| {
            let rest = &file[at + "/registry/src/".len()..];
            rest.find('/').map(|slash| &rest[slash + 1..])
        })
        .unwrap_or(file);
    let text = format!("{file}:{}:{}", location.line(), location.column());
    let _ = LOCATION.try_with(|l| {
        if let Ok(mut slot) = l.try_borrow_mut() {
            *slot = Some(text);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let err = caught(|| -> u32 { panic!("window size must be non-zero") }).unwrap_err();
        assert_eq!(err.message, "window size must be non-zero");
        assert!(!is_caught());
        assert_eq!(caught(|| 7).unwrap(), 7);
    }

    #[test]
    fn nested_calls_keep_the_hook_silent_until_the_outer_one_ends() {
        let inner = caught(|| {
            let e = caught(|| -> () { panic!("inner") }).unwrap_err();
            assert!(is_caught(), "still inside the outer call");
            e
        })
        .unwrap();
        assert_eq!(inner.message, "inner");
        assert!(!is_caught());
    }

    #[test]
    fn the_location_the_hook_noted_is_reported() {
        let err = caught(|| -> () {
            note_location(std::panic::Location::caller());
            panic!("{}", String::from("formatted"))
        })
        .unwrap_err();
        assert_eq!(err.message, "formatted");
        assert!(err.location.unwrap().contains("panics.rs"));
    }
}
