//! How much memory evaluations may build before regorus stops them.
//!
//! The time limit alone let a careless policy fill memory: a comprehension over two ranges of a
//! million numbers each reached 1.2 GB in its 2 s, past the chart's 512 MiB limit, and the
//! kernel would have killed every replica that judged such a review. regorus (its
//! `allocator-memory-limits` feature) checks, while it evaluates, counters that the global
//! allocator keeps for each thread (`crates/regorus-mimalloc`), and stops with an error when:
//! - **an evaluation on the VM** holds more than its budget beyond what its thread held when it
//!   began ([`DEFAULT_EVALUATION_MIB`], `--evaluation-memory-mib`);
//! - **the process** holds more than its ceiling, whatever evaluates (the interpreter has no
//!   budget of its own): by default half the memory the process may use (its cgroup's limit,
//!   else the machine's), `--memory-ceiling-mib`. Parsing a review's body into regorus's values
//!   stops there too. Half, because regorus checks between steps: a step that doubles a
//!   collection past the ceiling holds the old copy and the new one at once (with a ceiling of
//!   256 MiB, a comprehension was stopped at 348 MB counted, 459 MB resident).
//!
//! Either way the policy fails as a policy that runs out of time does (`memory_limit`), its
//! failure policy decides, and the memory it built is freed. Both are process-wide settings,
//! made once at start.
//!
//! The allocator cannot tell an evaluation's bytes from a request body's, and the server's body
//! budgets let a flood of large bodies hold more than half the chart's limit on their own (up to
//! 360 MiB by their estimates): with a fixed ceiling, every ordinary review judged during such a
//! flood failed for memory. So the ceiling in force is the one set plus what the body budgets
//! hold at the moment ([`BodyMemory`]): it bounds what evaluations build beyond the bodies,
//! which their own budgets bound.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use regorus::MemoryBudgetConfig;

/// The default budget of one evaluation on the VM, in MiB: a hundred times what the library's
/// largest policies build for a Pod, and with two of them at once still under the chart's
/// 512 MiB limit.
pub const DEFAULT_EVALUATION_MIB: u64 = 128;

const MIB: u64 = 1024 * 1024;

/// The budget of one VM evaluation, in bytes (0: none).
static EVALUATION_BUDGET: AtomicU64 = AtomicU64::new(DEFAULT_EVALUATION_MIB * MIB);

/// The ceiling set, in bytes ([`NO_CEILING`]: none); regorus is given this plus [`BODIES`].
static CEILING: AtomicU64 = AtomicU64::new(NO_CEILING);
const NO_CEILING: u64 = u64::MAX;
/// Bytes request bodies hold now under the server's body budgets (all servers of the process).
static BODIES: AtomicU64 = AtomicU64::new(0);
/// Serialises the reads of [`BODIES`] with the writes of regorus's limit: each write then
/// carries a value read after every change before it, so the last write is never a stale one.
static PUBLISH: Mutex<()> = Mutex::new(());

/// The limits in force, for `regate serve`'s start-up log and `regate check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Budget of one evaluation on the VM, in bytes.
    pub evaluation: Option<u64>,
    /// Ceiling on the memory the process holds while evaluating, in bytes.
    pub ceiling: Option<u64>,
}

/// Sets both limits, in MiB (`None`: the default; `Some(0)`: no limit), for every evaluation
/// from now on. Returns what is in force.
pub fn set_limits(evaluation_mib: Option<u64>, ceiling_mib: Option<u64>) -> Limits {
    let evaluation = evaluation_mib
        .unwrap_or(DEFAULT_EVALUATION_MIB)
        .saturating_mul(MIB);
    EVALUATION_BUDGET.store(evaluation, Ordering::Relaxed);
    let ceiling = match ceiling_mib {
        Some(mib) => Some(mib.saturating_mul(MIB)).filter(|&b| b > 0),
        None => default_ceiling(),
    };
    CEILING.store(ceiling.unwrap_or(NO_CEILING), Ordering::Relaxed);
    publish_ceiling();
    // A thread adds what it holds to the process's count every 256 KiB (regorus's default:
    // 1 MiB), so that a thread that ends without flushing loses less.
    regorus::set_thread_flush_threshold_override(Some(256 * 1024));
    limits()
}

/// The limits in force (the ceiling as set, without the bodies held now).
pub fn limits() -> Limits {
    Limits {
        evaluation: Some(EVALUATION_BUDGET.load(Ordering::Relaxed)).filter(|&b| b > 0),
        ceiling: Some(CEILING.load(Ordering::Relaxed)).filter(|&b| b != NO_CEILING),
    }
}

/// The ceiling regorus compares the process's memory with now: the one set plus the bodies
/// held (`None`: no ceiling).
pub fn ceiling_now() -> Option<u64> {
    regorus::global_memory_limit()
}

/// The bytes the process holds through the global allocator, as the ceiling counts them (each
/// thread's count as of its last flush, this thread's flushed first).
pub fn held() -> u64 {
    regorus_mimalloc::allocation_stats_snapshot().0.allocated
}

/// Gives regorus the ceiling set plus the bodies held now.
fn publish_ceiling() {
    let _serial = PUBLISH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ceiling = CEILING.load(Ordering::Relaxed);
    regorus::set_global_memory_limit(
        (ceiling != NO_CEILING)
            .then(|| ceiling.saturating_add(BODIES.load(Ordering::Relaxed)))
            // regorus reads u64::MAX as no limit.
            .map(|c| c.min(NO_CEILING - 1)),
    );
}

/// Memory that request bodies hold under the server's body budgets (bytes buffered as they
/// arrive, or a parsed body's estimated size), which the ceiling does not count against
/// evaluations while it is held. Dropping it gives the bytes back.
#[derive(Debug, Default)]
#[must_use = "the bytes are held only while this lives"]
pub struct BodyMemory {
    bytes: u64,
}

impl BodyMemory {
    /// Holds `bytes`.
    pub fn new(bytes: usize) -> BodyMemory {
        let mut held = BodyMemory::default();
        held.grow(bytes);
        held
    }

    /// Holds `more` bytes besides.
    pub fn grow(&mut self, more: usize) {
        let more = u64::try_from(more).unwrap_or(u64::MAX);
        if more == 0 {
            return;
        }
        self.bytes = self.bytes.saturating_add(more);
        BODIES.fetch_add(more, Ordering::Relaxed);
        publish_ceiling();
    }
}

impl Drop for BodyMemory {
    fn drop(&mut self) {
        if self.bytes > 0 {
            BODIES.fetch_sub(self.bytes, Ordering::Relaxed);
            publish_ceiling();
        }
    }
}

/// The budget a VM is given for each of its executions.
pub(crate) fn vm_budget() -> Option<MemoryBudgetConfig> {
    NonZeroU64::new(EVALUATION_BUDGET.load(Ordering::Relaxed))
        .map(|limit| MemoryBudgetConfig { limit })
}

/// Whether `error` is regorus stopping an evaluation for its memory. A limit of 0 is never
/// one of these (a limit of 0 is none): it is how a guarded builtin's error stops the VM for
/// the interpreter to report (`bytecode_errors`).
pub(crate) fn is_memory_limit(error: &anyhow::Error) -> bool {
    use regorus::rvm::vm::VmError;
    error.chain().any(|e| {
        matches!(
            e.downcast_ref::<regorus::LimitError>(),
            Some(regorus::LimitError::MemoryLimitExceeded { limit: 1.., .. })
        ) || matches!(
            e.downcast_ref::<VmError>(),
            Some(
                VmError::MemoryLimitExceeded { limit: 1.., .. }
                    | VmError::MemoryBudgetExceeded { .. }
            )
        )
    })
}

/// Flushes this thread's allocation counters into the process's: a thread must before it
/// ends, or the difference it has not yet added is lost (and the process's count drifts by it
/// for good).
pub fn thread_ends() {
    regorus::flush_thread_memory_counters();
}

/// Half the memory this process may use.
fn default_ceiling() -> Option<u64> {
    available().map(|bytes| bytes / 2)
}

/// The memory this process may use: its cgroup's limit (v2, then v1), else the machine's.
fn available() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|text| text.trim().parse::<u64>().ok())
        // v1 reports "no limit" as a number near 2^63.
        .filter(|&bytes| bytes < (1 << 60));
    cgroup.or_else(|| read("/proc/meminfo").and_then(|text| mem_total(&text)))
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machines_memory_is_read_from_meminfo() {
        let text = "MemTotal:        8039844 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total(text), Some(8_039_844 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
        assert!(
            available().is_some_and(|b| b > 0),
            "Linux has /proc/meminfo"
        );
    }

    #[test]
    fn a_memory_error_is_recognised_from_either_backend() {
        let vm = anyhow::Error::new(regorus::rvm::vm::VmError::MemoryBudgetExceeded {
            usage: 2,
            budget: 1,
            pc: 0,
        });
        let engine =
            anyhow::Error::new(regorus::LimitError::MemoryLimitExceeded { usage: 2, limit: 1 });
        assert!(is_memory_limit(&vm) && is_memory_limit(&engine));
        assert!(!is_memory_limit(&anyhow::anyhow!("memory")));
        assert!(!is_memory_limit(
            &crate::policy::bytecode_errors::escalated()
        ));
    }
}
