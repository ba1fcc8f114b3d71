//! The large-request lane: bodies over [`LARGE_BODY_BYTES`] or estimated over
//! `SMALL_PARSE_BYTES` parsed are parsed and judged on a few threads of their own, at a
//! lower CPU priority (nice +10), so that an ordinary review (a few KiB, a millisecond of CPU)
//! never waits behind them for a core: the scheduler gives a nice-0 thread about ten times the
//! share of a nice-10 one. On an idle machine the priority changes nothing.
//!
//! The threads start when a job needs one and end after [`LANE_IDLE`] without work. A thread
//! that parsed a hostile body keeps pages of it in its allocator heap (and the thread-local
//! engines keep their caches); a thread that ends gives all of it back, whoever freed what, so
//! memory returns to its idle level after an attack by construction, not by a later request.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing::{debug, warn};

/// A body of more bytes than this is parsed and judged on the lane.
pub const LARGE_BODY_BYTES: usize = 256 * 1024;

/// How much the lane's threads are niced above the process (up to the maximum, 19).
pub const LANE_NICE: i32 = 10;

/// How long a lane thread waits for another job before it ends. Long enough that a burst of
/// large requests keeps its threads (and their compiled engines); short enough that memory is
/// back a few seconds after the burst.
pub const LANE_IDLE: Duration = Duration::from_secs(2);

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run large requests, at most `max_threads` at once, fed by a queue.
#[derive(Debug)]
pub struct LargeLane {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
    max_threads: usize,
    idle_after: Duration,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads running or waiting for a job.
    live: usize,
    /// Of them, those waiting.
    waiting: usize,
    /// Set when the lane is dropped: threads end once the queue is empty.
    closed: bool,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("jobs", &self.jobs.len())
            .field("live", &self.live)
            .field("waiting", &self.waiting)
            .field("closed", &self.closed)
            .finish()
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl LargeLane {
    /// A lane of at most `threads` threads (at least one), started as jobs come and ended after
    /// [`LANE_IDLE`] without one.
    pub fn start(threads: usize) -> Arc<LargeLane> {
        LargeLane::with_idle(threads, LANE_IDLE)
    }

    fn with_idle(threads: usize, idle_after: Duration) -> Arc<LargeLane> {
        Arc::new(LargeLane {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                max_threads: threads.max(1),
                idle_after,
            }),
        })
    }

    /// Threads of the lane alive now.
    #[cfg(test)]
    fn live_threads(&self) -> usize {
        self.shared.state().live
    }

    /// Runs `job` on the lane; `None` when it panicked or no thread could run it.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            if let Ok(value) = result {
                let _ = reply.send(value);
            }
        });
        self.submit(job);
        answer.await.ok()
    }

    fn submit(&self, job: Job) {
        let mut state = self.shared.state();
        state.jobs.push_back(job);
        // A waiting thread takes it; otherwise a new one, up to the maximum; otherwise it waits
        // for the first thread to finish its job.
        if state.waiting > state.jobs.len().saturating_sub(1) {
            self.shared.work.notify_one();
            return;
        }
        if state.live >= self.shared.max_threads {
            return;
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("regate-large".to_string())
            .spawn(move || {
                lower_priority();
                work(&shared);
            });
        match spawned {
            Ok(_) => state.live += 1,
            Err(e) => {
                warn!(error = %e, "cannot start a thread for large requests");
                if state.live == 0 {
                    // Nobody will take it: dropping the job drops its reply, and the request
                    // fails (500) instead of waiting forever.
                    state.jobs.pop_back();
                }
            }
        }
    }
}

impl Drop for LargeLane {
    fn drop(&mut self) {
        self.shared.state().closed = true;
        self.shared.work.notify_all();
    }
}

fn work(shared: &Shared) {
    let mut state = shared.state();
    loop {
        if let Some(job) = state.jobs.pop_front() {
            drop(state);
            job();
            state = shared.state();
            continue;
        }
        if state.closed {
            break;
        }
        state.waiting += 1;
        let (next, wait) = shared
            .work
            .wait_timeout(state, shared.idle_after)
            .unwrap_or_else(PoisonError::into_inner);
        state = next;
        state.waiting -= 1;
        if wait.timed_out() && state.jobs.is_empty() {
            break;
        }
    }
    state.live -= 1;
    drop(state);
    crate::policy::memory::thread_ends();
    // The thread ends here: mimalloc frees its heap's free pages and hands the rest to the
    // threads that free them (`mi_thread_done`), and the thread-local engines are dropped.
}

/// Lowers this thread's priority (a thread may always lower its own; raising it back would need
/// a privilege, so the lane's threads keep it for good).
#[cfg(target_os = "linux")]
fn lower_priority() {
    let tid = rustix::thread::gettid();
    let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
    let lowered = current.saturating_add(LANE_NICE).min(19);
    if let Err(e) = rustix::process::setpriority_process(Some(tid), lowered) {
        debug!(error = %e, "cannot lower the priority of a large-request thread");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {
    debug!("large-request threads keep the default priority on this platform");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_lowered_threads_and_a_panic_fails_only_its_job() {
        let lane = LargeLane::start(2);
        let name = lane
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .flatten();
        assert_eq!(name.as_deref(), Some("regate-large"));
        #[cfg(target_os = "linux")]
        {
            let nice_of_this_thread =
                || rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok();
            let here = nice_of_this_thread().expect("own priority");
            let nice = lane.run(nice_of_this_thread).await.flatten();
            assert_eq!(nice, Some((here + LANE_NICE).min(19)));
        }
        let panicked = lane.run(|| -> u8 { panic!("a job panics") }).await;
        assert_eq!(panicked, None);
        assert_eq!(lane.run(|| 7).await, Some(7));
    }

    /// Without the idle end, a thread that parsed a hostile body kept its heap (about 200 MiB
    /// after `bench/hostile.sh`) until the next large request.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn threads_start_on_demand_and_end_when_idle() {
        let lane = LargeLane::with_idle(2, Duration::from_millis(50));
        assert_eq!(lane.live_threads(), 0);
        // Two jobs that wait for each other run on two threads at once.
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let (a, b) = tokio::join!(
            lane.run({
                let barrier = barrier.clone();
                move || barrier.wait().is_leader()
            }),
            lane.run({
                let barrier = barrier.clone();
                move || barrier.wait().is_leader()
            })
        );
        assert_eq!([a, b].iter().flatten().filter(|leader| **leader).count(), 1);
        assert!(lane.live_threads() <= 2);
        // Ends: polled, not timed (a loaded machine may take long to schedule them).
        while lane.live_threads() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // And a job after that starts a thread again.
        assert_eq!(lane.run(|| 7).await, Some(7));
        // More jobs than threads queue and all run.
        let results = futures_util::future::join_all((0..8).map(|i| lane.run(move || i * 2))).await;
        assert_eq!(results, (0..8).map(|i| Some(i * 2)).collect::<Vec<_>>());
        assert!(lane.live_threads() <= 2);
    }
}
