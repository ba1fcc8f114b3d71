//! Judging an ordinary review on the async worker that read it.
//!
//! Handing each review to another thread (`block_in_place`, which gives the worker's other tasks
//! to a thread from the blocking pool) cost about three context switches per request and a
//! fifth of the server's CPU time at 1,000 requests a second (docs/BENCHMARKS.md, round
//! thirteen). Judging where the request was read costs none, but holds the worker's other
//! connections meanwhile; so a judgement here gets an allowance (`policy::allowance`). One that
//! needs longer is stopped at its end, thrown away and made again from the start with the worker
//! handed off, where it has its full time limit (counted in `regate_evaluations_moved_total`): a
//! worker is never held for more than the allowance, and no answer depends on where it was
//! made.
//!
//! Work thrown away is wasted, so a review is judged in place only when reviews of its kind
//! usually take a fraction of the allowance: a kind that a large policy library makes slow, or
//! one a stuck policy judges, is handed off at once, as every review was before judging in
//! place, until its judgements get short again. Nor is one judged in place while as many
//! judgements handed off are running as the process has cores: the worker's thread would share a
//! core with them, and its allowance would run out while it waited for the core, not while it
//! worked (with a large policy library at full load, 0.6–0.8 % of judgements were made again so).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

use crate::policy::allowance;

/// A body of more bytes than this is never judged in place: parsing it alone could hold the
/// worker longer than the allowance.
pub const IN_PLACE_BODY_BYTES: usize = 64 * 1024;

/// How long a judgement may hold the async worker it runs on.
const ALLOWANCE: Duration = Duration::from_millis(2);

/// Reviews of a kind are judged in place while their judgements usually take less than this
/// (in microseconds): a quarter of the allowance, so that one that overruns is an exception.
/// The default policies judge a review in well under it; the gatekeeper-library's templates
/// take about a millisecond for a Pod.
const IN_PLACE_BELOW_US: u32 = 500;

/// Kinds are tracked in this many slots, by a hash of their name: two kinds in one slot share
/// one estimate, which costs at most some judgements in the less suited place.
const SLOTS: usize = 64;

/// Where ordinary reviews are judged, shared by the server's workers.
#[derive(Debug)]
pub struct InPlace {
    /// For each slot of kinds, how long a judgement usually takes, in microseconds: a moving
    /// average that each judgement moves an eighth of the way to its own time.
    usual: [AtomicU32; SLOTS],
    /// Judgements handed off that are running now.
    elsewhere: AtomicUsize,
    /// The cores this process may run on.
    cores: usize,
    /// Judgements made again (`regate_evaluations_moved_total`).
    moved: IntCounter,
}

impl InPlace {
    /// Counts the judgements it makes again in `moved`.
    pub fn new(moved: IntCounter) -> InPlace {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        InPlace::with_cores(moved, cores)
    }

    fn with_cores(moved: IntCounter, cores: usize) -> InPlace {
        InPlace {
            usual: std::array::from_fn(|_| AtomicU32::new(0)),
            elsewhere: AtomicUsize::new(0),
            cores,
            moved,
        }
    }

    /// `judge`'s answer for a review of `kind`: made on this thread within the allowance when
    /// reviews of the kind usually take much less, else (or when it overran) with the worker's
    /// other tasks handed to another thread. Must run on a worker of a multi-threaded tokio
    /// runtime.
    pub fn judge<R>(&self, kind: &str, judge: impl Fn() -> R) -> R {
        let usual = &self.usual[slot(kind)];
        let before = usual.load(Ordering::Relaxed);
        let started = Instant::now();
        let a_core_is_free = self.elsewhere.load(Ordering::Relaxed) < self.cores;
        let answer = if before < IN_PLACE_BELOW_US && a_core_is_free {
            allowance::within(ALLOWANCE, &judge).unwrap_or_else(|| {
                self.moved.inc();
                tracing::debug!(
                    kind,
                    allowance_ms = ALLOWANCE.as_millis() as u64,
                    "a judgement overran its allowance in place: made again on a thread of its own"
                );
                self.handed_off(&judge)
            })
        } else {
            self.handed_off(&judge)
        };
        let took = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        usual.store(before - before / 8 + took / 8, Ordering::Relaxed);
        answer
    }
}

impl InPlace {
    /// `judge` with the worker's other tasks handed to another thread, counted in `elsewhere`
    /// while it runs.
    fn handed_off<R>(&self, judge: impl Fn() -> R) -> R {
        struct Running<'a>(&'a AtomicUsize);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.elsewhere.fetch_add(1, Ordering::Relaxed);
        let _running = Running(&self.elsewhere);
        tokio::task::block_in_place(judge)
    }
}

/// The slot of `kind` (FNV-1a).
fn slot(kind: &str) -> usize {
    let hash = kind.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    hash as usize % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// What a judgement stopped by the allowance answers: "cut", and the overrun reported.
    fn judged(attempts: &AtomicUsize) -> &'static str {
        attempts.fetch_add(1, Ordering::Relaxed);
        if allowance::shorter_limit(Duration::from_secs(60)).is_some() {
            allowance::overran();
            "cut"
        } else {
            "whole"
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_overrun_is_made_again_and_a_slow_kind_is_handed_off_until_it_gets_quick() {
        let moved = IntCounter::new("moved", "moved").unwrap();
        let in_place = InPlace::new(moved.clone());
        assert_eq!(in_place.judge("Pod", || 1), 1);
        let attempts = AtomicUsize::new(0);
        // In place, stopped, made again whole.
        assert_eq!(in_place.judge("Pod", || judged(&attempts)), "whole");
        assert_eq!(attempts.load(Ordering::Relaxed), 2);
        assert_eq!(moved.get(), 1);
        // Pods take seconds now: handed off at once, judged once, with no allowance.
        in_place.judge("Pod", || std::thread::sleep(Duration::from_millis(40)));
        attempts.store(0, Ordering::Relaxed);
        assert_eq!(in_place.judge("Pod", || judged(&attempts)), "whole");
        assert_eq!(attempts.load(Ordering::Relaxed), 1);
        assert_eq!(moved.get(), 1);
        // Another kind is judged in place meanwhile.
        if slot("ConfigMap") != slot("Pod") {
            assert!(
                in_place.judge("ConfigMap", || allowance::shorter_limit(Duration::MAX)
                    .is_some())
            );
        }
        // Quick Pod judgements bring Pods back in place.
        for _ in 0..60 {
            in_place.judge("Pod", || ());
        }
        assert!(in_place.judge("Pod", || allowance::shorter_limit(Duration::MAX).is_some()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_judgement_is_made_in_place_while_judgements_handed_off_fill_the_cores() {
        let in_place = std::sync::Arc::new(InPlace::with_cores(
            IntCounter::new("moved", "moved").unwrap(),
            1,
        ));
        let in_place_now = |in_place: &InPlace| {
            in_place.judge("ConfigMap", || {
                allowance::shorter_limit(Duration::MAX).is_some()
            })
        };
        assert!(in_place_now(&in_place));
        // Pods are slow: handed off. One runs on the other worker until told to end.
        in_place.judge("Pod", || std::thread::sleep(Duration::from_millis(40)));
        let (started, running) = std::sync::mpsc::channel();
        let (end, ended) = std::sync::mpsc::channel::<()>();
        let pod = tokio::spawn({
            let in_place = in_place.clone();
            async move {
                in_place.judge("Pod", || {
                    started.send(()).unwrap();
                    ended.recv_timeout(Duration::from_secs(30)).unwrap();
                })
            }
        });
        running.recv_timeout(Duration::from_secs(30)).unwrap();
        // The one core is taken: a quick kind is handed off too.
        assert!(!in_place_now(&in_place));
        end.send(()).unwrap();
        pod.await.unwrap();
        assert!(in_place_now(&in_place));
    }

    #[test]
    fn the_kinds_of_the_default_policies_have_slots_of_their_own() {
        let kinds = [
            "Pod",
            "Deployment",
            "StatefulSet",
            "DaemonSet",
            "ReplicaSet",
            "Job",
            "CronJob",
            "Secret",
            "ConfigMap",
            "NetworkPolicy",
        ];
        let mut slots: Vec<usize> = kinds.iter().map(|k| slot(k)).collect();
        slots.sort_unstable();
        slots.dedup();
        assert_eq!(slots.len(), kinds.len());
    }
}
