//! Returning freed memory to the OS, for a process whose global allocator is mimalloc (v3, as
//! linked by the `mimalloc` crate). regate forbids `unsafe`; these two FFI calls are kept here,
//! in a crate of their own, so that the rule still holds everywhere else.
//!
//! mimalloc keeps pages freed by a thread in that thread's heap, and purges (`MADV_DONTNEED`)
//! free arena memory only after a delay (1 s in v3) and only when some thread touches the
//! allocator again. A server that parsed a few hundred MiB of hostile bodies on threads that
//! then sit idle would keep that memory resident.

use std::cell::Cell;
use std::os::raw::{c_int, c_long};
use std::sync::atomic::{AtomicU64, Ordering};

// Links the allocator library (the symbols below live in it).
use libmimalloc_sys as _;

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (include/mimalloc.h).
const MI_OPTION_PURGE_DELAY: c_int = 15;

extern "C" {
    fn mi_collect(force: bool);
    fn mi_option_set(option: c_int, value: c_long);
    fn mi_option_get(option: c_int) -> c_long;
}

/// Free arena memory is returned to the OS as soon as it is free, not a second later (and then
/// only on the next allocator activity). Call once, at start.
pub fn purge_without_delay() {
    // SAFETY: `mi_option_set` writes one option of mimalloc's static option table (an atomic
    // store); valid for any option index below `_mi_option_last` and any value, from any thread.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

/// `mi_option_page_reclaim_on_free` in mimalloc v3's `mi_option_t` (include/mimalloc.h).
const MI_OPTION_PAGE_RECLAIM_ON_FREE: c_int = 35;

/// A block freed into a page whose thread has ended takes that page into the freeing thread's
/// heap, which then frees and returns it with the rest (v3's default leaves such a page with
/// its ended thread until some thread happens to allocate from it). A policy set is built on a
/// thread of its own and dropped by another: without this, resident memory crept up with every
/// reload (300 constraints: 58 MiB after the first reload, 66 after the twentieth; with it,
/// 61). Call once, at start.
pub fn reclaim_pages_of_ended_threads_on_free() {
    // SAFETY: as in `purge_without_delay`: one atomic store into mimalloc's option table.
    unsafe { mi_option_set(MI_OPTION_PAGE_RECLAIM_ON_FREE, 1) }
}

/// Whether pages of ended threads are reclaimed on free (`1`), as set above; v3's default is 0.
pub fn pages_of_ended_threads_reclaimed_on_free() -> bool {
    // SAFETY: reads one option of mimalloc's static option table, from any thread.
    unsafe { mi_option_get(MI_OPTION_PAGE_RECLAIM_ON_FREE) == 1 }
}

/// The purge delay now in force, in milliseconds (`0`: at once; `-1`: never).
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one option of mimalloc's static option table; valid for any option index
    // below `_mi_option_last`, from any thread.
    i64::from(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) })
}

/// Gives the pages this thread's heap holds free back to the arenas and purges every arena's
/// free memory (process-wide). Costs a walk of the heap and the arenas' bitmaps: call it after
/// a large request, not after every one.
///
/// It also tells every other thread that large blocks were freed: a block freed here that
/// another thread allocated (a body read on an async worker, dropped after judging on another
/// thread) waits on that thread's page until that thread collects, which it does in
/// [`collect_if_released_elsewhere`].
pub fn release_freed_memory() {
    let generation = RELEASES.fetch_add(1, Ordering::AcqRel) + 1;
    collect();
    let _ = SEEN.try_with(|seen| seen.set(generation));
}

/// Collects this thread's heap if some thread called [`release_freed_memory`] since this one
/// last collected: one atomic load otherwise. For a thread about to sleep (a Tokio worker's
/// `on_thread_park`): an idle thread would otherwise keep, until it allocates much again, the
/// pages of large blocks it allocated and others freed.
pub fn collect_if_released_elsewhere() {
    let generation = RELEASES.load(Ordering::Acquire);
    let stale = SEEN
        .try_with(|seen| seen.replace(generation) != generation)
        .unwrap_or(false);
    if stale {
        collect();
    }
}

/// Calls of [`release_freed_memory`], process-wide.
static RELEASES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The value of [`RELEASES`] when this thread last collected.
    static SEEN: Cell<u64> = const { Cell::new(0) };
}

fn collect() {
    // SAFETY: `mi_collect` collects the calling thread's own heap and the shared arenas, which
    // mimalloc synchronises itself; it takes no pointer and is valid from any thread at any time.
    unsafe { mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // v3's default is 1000 ms: a wrong index would read another option's value.
        assert_eq!(purge_delay_ms(), 1000);
        purge_without_delay();
        assert_eq!(purge_delay_ms(), 0);
        let big: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 1 << 20]).collect();
        drop(big);
        release_freed_memory();
    }

    #[test]
    fn the_reclaim_option_is_the_one_set() {
        // v3's default is 0: a wrong index would read another option's value.
        assert!(!pages_of_ended_threads_reclaimed_on_free());
        reclaim_pages_of_ended_threads_on_free();
        assert!(pages_of_ended_threads_reclaimed_on_free());
    }

    #[test]
    fn a_thread_collects_once_after_another_released() {
        // This thread has seen every release so far once it collects.
        collect_if_released_elsewhere();
        let seen = || SEEN.with(Cell::get);
        let before = seen();
        collect_if_released_elsewhere();
        assert_eq!(seen(), before, "nothing released: nothing to collect");
        let released = std::thread::spawn(|| {
            release_freed_memory();
            SEEN.with(Cell::get)
        })
        .join()
        .unwrap_or_default();
        assert!(released > before);
        collect_if_released_elsewhere();
        assert!(
            seen() >= released,
            "this thread collected after the other released"
        );
    }
}
