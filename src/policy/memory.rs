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
//! 360 MiB by their estimates): with a fixed ceiling, most ordinary reviews judged during such
//! a flood failed for memory (74 of 98 in `bench/hostile.sh`'s attack). So the ceiling in force
//! is the one set plus what the body budgets hold at the moment ([`BodyMemory`]): it bounds
//! what evaluations build beyond the bodies, which their own budgets bound. The bodies raise it to three quarters of the memory the
//! process may use at most, so that a flood and a careless policy at once still stop short of
//! the limit (a flood under the chart's budgets held 307 MiB counted).

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
/// The most the bodies raise the ceiling to ([`NO_CEILING`]: no bound): three quarters of the
/// memory the process may use.
static CEILING_CAP: AtomicU64 = AtomicU64::new(NO_CEILING);
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
    /// The most request bodies held raise the ceiling to, in bytes (`None`: no bound).
    pub ceiling_with_bodies: Option<u64>,
}

/// Sets both limits, in MiB (`None`: the default; `Some(0)`: no limit), for every evaluation
/// from now on. Returns what is in force.
pub fn set_limits(evaluation_mib: Option<u64>, ceiling_mib: Option<u64>) -> Limits {
    let evaluation = evaluation_mib
        .unwrap_or(DEFAULT_EVALUATION_MIB)
        .saturating_mul(MIB);
    EVALUATION_BUDGET.store(evaluation, Ordering::Relaxed);
    let available = available();
    let ceiling = match ceiling_mib {
        Some(mib) => Some(mib.saturating_mul(MIB)).filter(|&b| b > 0),
        None => available.map(|bytes| bytes / 2),
    };
    CEILING.store(ceiling.unwrap_or(NO_CEILING), Ordering::Relaxed);
    CEILING_CAP.store(
        available.map_or(NO_CEILING, |bytes| bytes / 4 * 3),
        Ordering::Relaxed,
    );
    publish_ceiling();
    // A thread adds what it holds to the process's count every 256 KiB (regorus's default:
    // 1 MiB), so that a thread that ends without flushing loses less.
    regorus::set_thread_flush_threshold_override(Some(256 * 1024));
    limits()
}

/// The limits in force (the ceiling as set, without the bodies held now).
pub fn limits() -> Limits {
    let set = |value: &AtomicU64| Some(value.load(Ordering::Relaxed)).filter(|&b| b != NO_CEILING);
    let ceiling = set(&CEILING);
    Limits {
        evaluation: Some(EVALUATION_BUDGET.load(Ordering::Relaxed)).filter(|&b| b > 0),
        ceiling,
        ceiling_with_bodies: ceiling
            .zip(set(&CEILING_CAP))
            .map(|(base, cap)| base.max(cap)),
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
    regorus::set_global_memory_limit((ceiling != NO_CEILING).then(|| {
        in_force(
            ceiling,
            BODIES.load(Ordering::Relaxed),
            CEILING_CAP.load(Ordering::Relaxed),
        )
    }));
}

/// The ceiling in force: the one set (`base`) raised by the bodies held, to `cap` at most (or
/// not at all when the one set is higher); below `u64::MAX`, which regorus reads as none.
fn in_force(base: u64, bodies: u64, cap: u64) -> u64 {
    base.saturating_add(bodies)
        .min(cap.max(base))
        .min(NO_CEILING - 1)
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

/// The memory this process may use: the lowest limit of its cgroup and the cgroups above it
/// (v2, then v1), else the machine's.
fn available() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let own = read("/proc/self/cgroup").unwrap_or_default();
    cgroup_limit(&own, |path| read(path))
        .or_else(|| read("/proc/meminfo").and_then(|text| mem_total(&text)))
}

/// The lowest memory limit on the way from this process's cgroup (as `/proc/self/cgroup`
/// names it) up to the root of its hierarchy, read through `read`. Inside a container with its
/// own cgroup namespace, the process's cgroup is the root, and the path is `/`; without one, a
/// limit may be set on an ancestor; where the named path is not mounted, only the root is read.
fn cgroup_limit(own: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    // v2: `0::/path`; v1: `N:memory:/path` (or `N:...,memory,...:/path`).
    let v2 = own.lines().find_map(|l| l.strip_prefix("0::"));
    let v1 = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let controllers = parts.nth(1)?;
        controllers
            .split(',')
            .any(|c| c == "memory")
            .then(|| parts.next())
            .flatten()
    });
    let limits = |root: &str, file: &str, path: Option<&str>| -> Option<u64> {
        let mut lowest: Option<u64> = None;
        let mut dir = path.unwrap_or("/").trim_end_matches('/').to_string();
        loop {
            let limit = read(&format!("{root}{dir}/{file}"))
                .and_then(|text| text.trim().parse::<u64>().ok())
                // "max" (v2) does not parse; v1 reports "no limit" as a number near 2^63.
                .filter(|&bytes| bytes < (1 << 60));
            lowest = match (lowest, limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match dir.rfind('/') {
                Some(i) if !dir.is_empty() => dir.truncate(i),
                _ => break,
            }
        }
        lowest
    };
    limits("/sys/fs/cgroup", "memory.max", v2)
        .or_else(|| limits("/sys/fs/cgroup/memory", "memory.limit_in_bytes", v1))
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
    fn the_lowest_limit_from_the_processs_cgroup_up_is_the_one() {
        let files = |entries: &'static [(&'static str, &'static str)]| {
            move |path: &str| {
                entries
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, v)| v.to_string())
            }
        };
        // v1, a child cgroup with 512 MiB under a parent without a limit.
        let v1 = "4:memory:/pa/child\n3:cpuset:/\n";
        let read = files(&[
            (
                "/sys/fs/cgroup/memory/pa/child/memory.limit_in_bytes",
                "536870912\n",
            ),
            (
                "/sys/fs/cgroup/memory/pa/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(cgroup_limit(v1, read), Some(512 * MIB));
        // v2 inside a cgroup namespace: the root is the container's.
        let read = files(&[("/sys/fs/cgroup/memory.max", "536870912\n")]);
        assert_eq!(cgroup_limit("0::/\n", read), Some(512 * MIB));
        // v2, a limit on an ancestor lower than the process's own; "max" is none.
        let read = files(&[
            ("/sys/fs/cgroup/a/b/memory.max", "max\n"),
            ("/sys/fs/cgroup/a/memory.max", "268435456\n"),
        ]);
        assert_eq!(cgroup_limit("0::/a/b\n", read), Some(256 * MIB));
        // The named path is not mounted here: the root's limit.
        let read = files(&[(
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "1073741824\n",
        )]);
        assert_eq!(
            cgroup_limit("7:memory:/docker/abc\n", read),
            Some(1024 * MIB)
        );
        // No limit anywhere.
        assert_eq!(cgroup_limit("0::/\n", files(&[])), None);
    }

    #[test]
    fn bodies_raise_the_ceiling_up_to_its_cap() {
        const M: u64 = MIB;
        // The chart: 512 MiB, so 256 set and 384 at most.
        assert_eq!(in_force(256 * M, 0, 384 * M), 256 * M);
        assert_eq!(in_force(256 * M, 100 * M, 384 * M), 356 * M);
        assert_eq!(in_force(256 * M, 300 * M, 384 * M), 384 * M);
        // A ceiling set above the cap is not raised, nor lowered.
        assert_eq!(in_force(450 * M, 100 * M, 384 * M), 450 * M);
        // No cap known.
        assert_eq!(in_force(16 * M, 7 * M, NO_CEILING), 23 * M);
        assert_eq!(in_force(NO_CEILING - 5, 10, NO_CEILING), NO_CEILING - 1);
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
