//! The large-request lane: bodies over [`LARGE_BODY_BYTES`] or estimated over
//! `SMALL_PARSE_BYTES` parsed are parsed and judged on a few threads of their own, at a
//! lower CPU priority (nice +10), so that an ordinary review (a few KiB, a millisecond of CPU)
//! never waits behind them for a core: the scheduler gives a nice-0 thread about ten times the
//! share of a nice-10 one. On an idle machine the priority changes nothing.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};

use tracing::{debug, warn};

/// A body of more bytes than this is parsed and judged on the lane.
pub const LARGE_BODY_BYTES: usize = 256 * 1024;

/// How much the lane's threads are niced above the process (up to the maximum, 19).
pub const LANE_NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run large requests, fed by a channel; they end when the last clone of the lane
/// is dropped.
#[derive(Debug)]
pub struct LargeLane {
    jobs: Mutex<Sender<Job>>,
}

impl LargeLane {
    /// Starts `threads` threads (at least one). `None` when not one could be started: large
    /// requests then run where small ones do.
    pub fn start(threads: usize) -> Option<Arc<LargeLane>> {
        let (jobs, receiver) = channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut started = 0;
        for i in 0..threads.max(1) {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("regate-large-{i}"))
                .spawn(move || {
                    lower_priority();
                    work(&receiver);
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => warn!(error = %e, "cannot start a thread for large requests"),
            }
        }
        (started > 0).then(|| {
            Arc::new(LargeLane {
                jobs: Mutex::new(jobs),
            })
        })
    }

    /// Runs `job` on the lane; `None` when it panicked or the lane has stopped.
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
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job)
            .ok()?;
        answer.await.ok()
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let next = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
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
        let lane = LargeLane::start(2).expect("threads start");
        let name = lane
            .run(|| std::thread::current().name().map(str::to_string))
            .await
            .flatten();
        assert!(name.is_some_and(|n| n.starts_with("regate-large-")));
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
}
