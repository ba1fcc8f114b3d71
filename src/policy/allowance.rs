//! A time allowance for evaluations run in place, on the thread that asked for them.
//!
//! `serve` judges an ordinary review on the async worker that read it: handing every review to
//! another thread cost about three context switches and a third of its CPU time (docs/
//! BENCHMARKS.md, round thirteen). A worker must not be held for long, though: the connections it
//! also serves would wait behind a policy that runs until its time limit. So an evaluation in
//! place gets an allowance ([`within`]): every policy evaluated meanwhile stops at the allowance's
//! end if its own time limit is later, and the whole judgement is then discarded, to be made
//! again from the start somewhere it may take its full time. Evaluation has no side effects, so
//! the judgement made again is the one the first would have been: the allowance decides where a
//! review is judged, never how.

use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    /// When the allowance of the evaluation running on this thread ends, if it has one.
    static ENDS: Cell<Option<Instant>> = const { Cell::new(None) };
    /// Whether an evaluation under the current allowance was stopped by it.
    static OVERRUN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `judge` with every evaluation on this thread stopped `allowance` from now at the latest;
/// `None` when one was (what `judge` answered is then incomplete and must be thrown away).
pub fn within<R>(allowance: Duration, judge: impl FnOnce() -> R) -> Option<R> {
    /// Ends the allowance however `judge` returns, a panic included: the thread's next
    /// evaluation, in place or not, must not inherit it.
    struct Ends(Option<Instant>, bool);
    impl Drop for Ends {
        fn drop(&mut self) {
            ENDS.with(|e| e.set(self.0));
            OVERRUN.with(|o| o.set(self.1));
        }
    }
    let outer = Ends(ENDS.with(Cell::get), OVERRUN.with(Cell::get));
    let ends = Instant::now().checked_add(allowance);
    // An allowance inside another ends no later than it.
    let ends = match (outer.0, ends) {
        (Some(o), Some(e)) => Some(o.min(e)),
        (o, e) => e.or(o),
    };
    ENDS.with(|e| e.set(ends));
    OVERRUN.with(|o| o.set(false));
    let answer = judge();
    let overrun = OVERRUN.with(Cell::get);
    drop(outer);
    (!overrun).then_some(answer)
}

/// The time limit for an evaluation whose own limit is `own`, when an allowance ends sooner:
/// what is left of it (possibly zero). `None` outside an allowance or when `own` ends first.
pub(crate) fn shorter_limit(own: Duration) -> Option<Duration> {
    let ends = ENDS.with(Cell::get)?;
    let left = ends.saturating_duration_since(Instant::now());
    (left < own).then_some(left)
}

/// Whether the current allowance has ended: an evaluation that starts now would be stopped at
/// once, so it is not started.
pub(crate) fn spent() -> bool {
    ENDS.with(Cell::get)
        .is_some_and(|ends| Instant::now() >= ends)
}

/// Records that an evaluation was stopped by the allowance, not by its own limit.
pub(crate) fn overran() {
    OVERRUN.with(|o| o.set(true));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowance_shortens_limits_and_reports_an_overrun() {
        assert_eq!(shorter_limit(Duration::from_secs(2)), None);
        let inside = within(Duration::from_secs(60), || {
            let limit = shorter_limit(Duration::from_secs(3600));
            assert!(limit.is_some_and(|l| l <= Duration::from_secs(60)));
            assert_eq!(shorter_limit(Duration::from_millis(5)), None);
            assert!(!spent());
            7
        });
        assert_eq!(inside, Some(7));
        let cut = within(Duration::ZERO, || {
            assert!(spent());
            assert_eq!(shorter_limit(Duration::from_secs(1)), Some(Duration::ZERO));
            overran();
        });
        assert_eq!(cut, None);
        // Nothing is left behind for the thread's next evaluation.
        assert_eq!(shorter_limit(Duration::from_secs(2)), None);
        assert!(!spent());
    }

    #[test]
    fn an_allowance_inside_another_ends_no_later_and_keeps_the_outer_state() {
        let outer = within(Duration::from_millis(1), || {
            let inner = within(Duration::from_secs(60), || {
                shorter_limit(Duration::from_secs(3600))
                    .is_some_and(|l| l <= Duration::from_millis(1))
            });
            assert_eq!(inner, Some(true));
            assert!(shorter_limit(Duration::from_secs(1)).is_some());
        });
        assert_eq!(outer, Some(()));
    }

    #[test]
    fn a_panic_ends_the_allowance() {
        let panicked = std::panic::catch_unwind(|| {
            within(Duration::ZERO, || -> () { panic!("a judgement panics") })
        });
        assert!(panicked.is_err());
        assert!(!spent());
        assert_eq!(shorter_limit(Duration::from_secs(1)), None);
    }
}
