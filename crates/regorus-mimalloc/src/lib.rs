//! The allocator regorus's memory limits read (its `allocator-memory-limits` feature).
//!
//! regorus enforces two limits while it evaluates: a process-wide ceiling on the bytes the
//! global allocator holds (`regorus::set_global_memory_limit`), and a budget per VM execution
//! on the bytes its thread holds (`RegoVM::set_memory_budget_config`). Both read counters kept
//! by the global allocator, which regorus declares itself when the feature is on
//! ([`assign_global`]). crates.io's `regorus-mimalloc` keeps them over a vendored mimalloc v2;
//! this crate keeps the same counters, behind the same interface, over the mimalloc v3 that
//! regate's memory tuning is written for (`alloc-release`): both link the C library under one
//! name, so only one of them can be in the build.
//!
//! Each thread counts the bytes it allocated minus the bytes it freed (negative when it frees
//! blocks another thread allocated), and adds the difference since its last flush to the
//! process-wide total whenever that difference passes a threshold (256 KiB), or when asked. A
//! thread that ends must flush first ([`limits::flush_thread_counters`]) or its last
//! difference is lost.

pub mod limits;
pub mod mimalloc;

pub use limits::{
    allocation_stats_snapshot, current_thread_live_bytes, GlobalAllocationStats,
    ThreadAllocationStats,
};

/// Declares [`mimalloc::Mimalloc`] the global allocator (regorus calls this in its crate root).
#[macro_export]
macro_rules! assign_global {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::mimalloc::Mimalloc = $crate::mimalloc::Mimalloc;
    };
}
