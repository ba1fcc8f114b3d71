//! The counters regorus's memory limits read, and the budget of a suspendable VM execution.

use core::cell::Cell;
use core::sync::atomic::{AtomicI64, Ordering};

/// Bytes held through the global allocator, process-wide, as of each thread's last flush.
static GLOBAL_ALLOCATED: AtomicI64 = AtomicI64::new(0);
/// The highest value [`GLOBAL_ALLOCATED`] reached.
static GLOBAL_PEAK: AtomicI64 = AtomicI64::new(0);

/// A thread adds its difference to the process-wide total once it is this large (either way).
const DEFAULT_THREAD_FLUSH_THRESHOLD: i64 = 1024 * 1024;
static THREAD_FLUSH_THRESHOLD: AtomicI64 = AtomicI64::new(DEFAULT_THREAD_FLUSH_THRESHOLD);

/// One thread's counters, in one thread-local so that an allocation touches one TLS slot.
/// Constant initialiser and no destructor: usable from the allocator at any point of a thread's
/// life, without allocating.
///
/// The thread's live bytes are `flushed + pending`: an allocation or a free changes `pending`
/// alone and compares it with the threshold, the whole cost on the allocator's path.
struct ThreadCounters {
    /// The thread's live bytes as of its last flush (bytes allocated minus bytes freed; negative
    /// when it freed more than it allocated).
    flushed: Cell<i64>,
    /// The change since then.
    pending: Cell<i64>,
    /// Whether this thread flushed since regorus last asked.
    flushed_since_check: Cell<bool>,
    /// The suspendable VM execution this thread runs a segment of, if any.
    budget: Cell<Option<MemoryBudgetUsage>>,
}

thread_local! {
    static THREAD: ThreadCounters = const {
        ThreadCounters {
            flushed: Cell::new(0),
            pending: Cell::new(0),
            flushed_since_check: Cell::new(false),
            budget: Cell::new(None),
        }
    };
}

impl ThreadCounters {
    #[inline]
    fn change(&self, delta: i64) {
        let pending = self.pending.get().wrapping_add(delta);
        self.pending.set(pending);
        // |pending| >= threshold, in one comparison (a threshold of 0 never flushes).
        let threshold = THREAD_FLUSH_THRESHOLD.load(Ordering::Relaxed) as u64;
        if threshold > 0
            && (pending as u64).wrapping_add(threshold - 1) >= threshold.wrapping_mul(2) - 1
        {
            self.flush();
        }
    }

    fn live(&self) -> i64 {
        self.flushed.get().wrapping_add(self.pending.get())
    }

    /// Adds this thread's difference since its last flush to the process-wide total; returns
    /// the total and its peak.
    #[inline(never)]
    fn flush(&self) -> (i64, i64) {
        let delta = self.pending.replace(0);
        if delta == 0 {
            let total = GLOBAL_ALLOCATED.load(Ordering::Relaxed);
            return (total, GLOBAL_PEAK.load(Ordering::Relaxed).max(total));
        }
        self.flushed.set(self.flushed.get().wrapping_add(delta));
        let total = GLOBAL_ALLOCATED.fetch_add(delta, Ordering::Relaxed) + delta;
        let peak = GLOBAL_PEAK.fetch_max(total, Ordering::Relaxed).max(total);
        self.flushed_since_check.set(true);
        (total, peak)
    }
}

/// A layout's size as a count: at most `isize::MAX` (`Layout`'s own bound), so exact.
#[inline]
fn size(bytes: usize) -> i64 {
    bytes as i64
}

/// Counts an allocation of `bytes` for this thread (and for its suspendable execution, if any).
#[inline]
pub fn record_alloc(bytes: usize) {
    let _ = THREAD.try_with(|t| {
        t.change(size(bytes));
        if let Some(mut usage) = t.budget.get() {
            usage.record_allocation(bytes);
            t.budget.set(Some(usage));
        }
    });
}

/// Counts a free of `bytes` for this thread.
#[inline]
pub fn record_free(bytes: usize) {
    let _ = THREAD.try_with(|t| t.change(size(bytes).wrapping_neg()));
}

/// Adds this thread's difference since its last flush to the process-wide total. A thread must
/// call this before it ends, or its last difference (under the threshold) is never counted.
pub fn flush_thread_counters() {
    let _ = THREAD.try_with(ThreadCounters::flush);
}

/// Whether this thread flushed since the last call (regorus then compares the total with its
/// ceiling at once, instead of at its next stride).
#[inline]
pub fn take_thread_flushed_since_check_flag() -> bool {
    THREAD
        .try_with(|t| t.flushed_since_check.replace(false))
        .unwrap_or(false)
}

/// This thread's difference not yet added to the process-wide total.
#[inline]
pub fn thread_allocation_pending_delta() -> i64 {
    THREAD.try_with(|t| t.pending.get()).unwrap_or(0)
}

/// Sets the threshold at which threads flush (`None`: 1 MiB; `Some(0)`: only when asked).
pub fn set_thread_flush_threshold(bytes: Option<u64>) {
    let value = bytes.map_or(DEFAULT_THREAD_FLUSH_THRESHOLD, |b| {
        i64::try_from(b).unwrap_or(i64::MAX)
    });
    THREAD_FLUSH_THRESHOLD.store(value, Ordering::Relaxed);
}

/// The threshold at which threads flush, or `None` when they flush only when asked.
pub fn thread_flush_threshold() -> Option<u64> {
    let value = THREAD_FLUSH_THRESHOLD.load(Ordering::Relaxed);
    u64::try_from(value).ok().filter(|&v| v > 0)
}

/// Process-wide allocator figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GlobalAllocationStats {
    /// Bytes held, as of each thread's last flush (this one's included: it flushes first).
    pub allocated: u64,
    /// The most bytes held at any flush.
    pub peak: u64,
}

/// One thread's allocator figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadAllocationStats {
    /// Bytes this thread allocated minus bytes it freed.
    pub allocated: i64,
}

/// Flushes this thread, then reads the process-wide figures and this thread's.
pub fn allocation_stats_snapshot() -> (GlobalAllocationStats, ThreadAllocationStats) {
    THREAD
        .try_with(|t| {
            let (total, peak) = t.flush();
            (
                GlobalAllocationStats {
                    allocated: u64::try_from(total).unwrap_or(0),
                    peak: u64::try_from(peak).unwrap_or(0),
                },
                ThreadAllocationStats {
                    allocated: t.live(),
                },
            )
        })
        .unwrap_or_default()
}

/// Bytes this thread allocated minus bytes it freed, without flushing: what a VM execution's
/// budget is measured against.
#[inline]
pub fn current_thread_live_bytes() -> i64 {
    THREAD.try_with(ThreadCounters::live).unwrap_or(0)
}

/// Bytes requested by one suspendable VM execution, carried between its segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryBudgetUsage {
    requested_bytes: u64,
    overflowed: bool,
}

impl MemoryBudgetUsage {
    /// Bytes requested so far.
    pub const fn requested_bytes(self) -> u64 {
        self.requested_bytes
    }

    /// Whether the bytes requested exceed `limit` (or overflowed counting).
    pub const fn exceeds_limit(self, limit: u64) -> bool {
        self.overflowed || self.requested_bytes > limit
    }

    fn record_allocation(&mut self, bytes: usize) {
        match u64::try_from(bytes)
            .ok()
            .and_then(|b| self.requested_bytes.checked_add(b))
        {
            Some(total) => self.requested_bytes = total,
            None => {
                self.requested_bytes = u64::MAX;
                self.overflowed = true;
            }
        }
    }
}

/// Runs `operation` with `initial` as this thread's execution usage, and leaves the usage it
/// ended with in `updated` (on return and on unwind), restoring the previous one.
pub fn with_memory_budget_usage_scope<R>(
    initial: Option<MemoryBudgetUsage>,
    updated: &mut Option<MemoryBudgetUsage>,
    operation: impl FnOnce() -> R,
) -> R {
    let previous = THREAD
        .try_with(|t| t.budget.replace(initial))
        .ok()
        .flatten();
    let _scope = Scope { previous, updated };
    operation()
}

/// Runs `operation` charging its allocations to no execution.
pub fn with_unowned_memory_budget_scope<R>(operation: impl FnOnce() -> R) -> R {
    let mut ignored = None;
    with_memory_budget_usage_scope(None, &mut ignored, operation)
}

/// The usage of the execution this thread runs a segment of.
#[inline]
pub fn current_memory_budget_usage() -> Option<MemoryBudgetUsage> {
    THREAD.try_with(|t| t.budget.get()).ok().flatten()
}

struct Scope<'a> {
    previous: Option<MemoryBudgetUsage>,
    updated: &'a mut Option<MemoryBudgetUsage>,
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        *self.updated = current_memory_budget_usage();
        let _ = THREAD.try_with(|t| t.budget.set(self.previous));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_counts_what_it_holds_and_flushes_past_the_threshold() {
        let before = current_thread_live_bytes();
        record_alloc(1000);
        assert_eq!(current_thread_live_bytes(), before + 1000);
        record_free(400);
        assert_eq!(current_thread_live_bytes(), before + 600);
        flush_thread_counters();
        assert_eq!(thread_allocation_pending_delta(), 0);
        let _ = take_thread_flushed_since_check_flag();
        record_alloc(2 * 1024 * 1024);
        assert_eq!(thread_allocation_pending_delta(), 0, "flushed past 1 MiB");
        assert!(take_thread_flushed_since_check_flag());
        assert!(!take_thread_flushed_since_check_flag());
        record_free(2 * 1024 * 1024);
        record_free(600);

        set_thread_flush_threshold(Some(0));
        assert_eq!(thread_flush_threshold(), None);
        set_thread_flush_threshold(None);
        assert_eq!(thread_flush_threshold(), Some(1024 * 1024));
    }

    #[test]
    fn an_execution_is_charged_only_inside_its_scope() {
        let mut updated = None;
        with_memory_budget_usage_scope(Some(MemoryBudgetUsage::default()), &mut updated, || {
            record_alloc(100);
            record_alloc(50);
            with_unowned_memory_budget_scope(|| record_alloc(1000));
        });
        record_alloc(7);
        assert_eq!(updated.map(MemoryBudgetUsage::requested_bytes), Some(150));
        assert!(updated.is_some_and(|u| u.exceeds_limit(149) && !u.exceeds_limit(150)));
        assert_eq!(current_memory_budget_usage(), None);
        record_free(1157);
    }
}
