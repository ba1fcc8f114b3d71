//! Shadow evaluation in `serve`: a candidate policy set judges a sample of the admission requests
//! after the enforced set has answered them, on its own thread, and only disagreements are
//! recorded. The answer to kube-apiserver is never touched: the request path hands the already
//! parsed review to a bounded queue with `try_send` (no waiting, no copy of the body), and what
//! does not fit is counted as dropped. A candidate that fails to build is reported (log,
//! `/readyz?verbose`) and judges nothing until it is fixed; enforcement never depends on it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use tracing::{error, info, warn};

use crate::admission::decision::{judge_within, Decision};
use crate::admission::review::Review;
use crate::environment::NamespaceLabels;
use crate::gatekeeper::Inventory;
use crate::policy::eval::Wants;
use crate::policy::reload::PolicySources;
use crate::policy::set::PolicySet;
use crate::rollout::{only_in, Outcome};

/// Queue length unless configured.
pub const DEFAULT_QUEUE: usize = 1024;

/// How `serve` runs the candidate.
#[derive(Debug, Clone)]
pub struct ShadowConfig {
    pub sources: PolicySources,
    /// Requests waiting for the candidate at most; more are dropped (and counted).
    pub queue: usize,
    /// Share of requests judged by the candidate, 0 to 1.
    pub sample_rate: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    #[error("--shadow-policies {0}: no such directory")]
    MissingDir(PathBuf),
    #[error("--shadow-config {0}: no such file")]
    MissingConfig(PathBuf),
    #[error("--shadow-sample-rate {0}: must be between 0 and 1")]
    SampleRate(f64),
    #[error("shadow metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start the shadow thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// One request for the candidate: the review and what the enforced set decided about it.
struct Job {
    review: Review,
    wants: Wants,
    enforced: Outcome,
}

struct ShadowMetrics {
    disagreements: IntCounterVec,
    dropped: IntCounter,
    evaluated: IntCounter,
    policies: IntGauge,
    reloads: IntCounterVec,
}

impl ShadowMetrics {
    fn new(registry: &Registry) -> Result<ShadowMetrics, prometheus::Error> {
        let disagreements = IntCounterVec::new(
            Opts::new(
                "regate_shadow_disagreements_total",
                "Requests on which a policy of the shadow (candidate) set decides differently from \
                 the enforced set: newly_denied (the candidate's policy denies, the enforced one \
                 does not), newly_allowed, warned (warnings differ).",
            ),
            &["policy", "change"],
        )?;
        let dropped = IntCounter::new(
            "regate_shadow_dropped_total",
            "Sampled requests the shadow set did not judge: its queue was full, or no candidate is loaded.",
        )?;
        let evaluated = IntCounter::new(
            "regate_shadow_evaluations_total",
            "Requests judged by the shadow set.",
        )?;
        let policies = IntGauge::new(
            "regate_shadow_policies_loaded",
            "Policies in the shadow set (0 while it is broken).",
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "regate_shadow_reloads_total",
                "Loads of the shadow set, by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(disagreements.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        registry.register(Box::new(evaluated.clone()))?;
        registry.register(Box::new(policies.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        Ok(ShadowMetrics {
            disagreements,
            dropped,
            evaluated,
            policies,
            reloads,
        })
    }
}

/// The candidate set, its queue and its counters.
pub struct Shadow {
    sources: PolicySources,
    labels: NamespaceLabels,
    current: ArcSwapOption<PolicySet>,
    /// Gatekeeper's `data.inventory` as last synced ([`crate::server::inventory`]); every
    /// reload re-applies it, as the enforced store does.
    inventory: Mutex<Option<Arc<Inventory>>>,
    last_error: Mutex<Option<String>>,
    reload_lock: Mutex<()>,
    queue: SyncSender<Job>,
    /// Sampling by count (every 1/rate-th request), so that a rate of 1 judges every request
    /// and tests are deterministic.
    sample_rate: f64,
    seen: AtomicU64,
    metrics: ShadowMetrics,
}

impl Shadow {
    /// Loads the candidate (a broken one is reported, not an error) and starts its thread.
    /// Errors are what the operator must fix before starting: a path that does not exist, a
    /// sample rate out of range.
    pub fn start(
        config: ShadowConfig,
        labels: NamespaceLabels,
        registry: &Registry,
    ) -> Result<Arc<Shadow>, ShadowError> {
        if !config.sources.dir.is_dir() {
            return Err(ShadowError::MissingDir(config.sources.dir.clone()));
        }
        if let Some(c) = &config.sources.config {
            if !c.is_file() {
                return Err(ShadowError::MissingConfig(c.clone()));
            }
        }
        if !(0.0..=1.0).contains(&config.sample_rate) {
            return Err(ShadowError::SampleRate(config.sample_rate));
        }
        let (tx, rx) = sync_channel(config.queue.max(1));
        let shadow = Arc::new(Shadow {
            sources: config.sources,
            labels,
            current: ArcSwapOption::empty(),
            inventory: Mutex::new(None),
            last_error: Mutex::new(None),
            reload_lock: Mutex::new(()),
            queue: tx,
            sample_rate: config.sample_rate,
            seen: AtomicU64::new(0),
            metrics: ShadowMetrics::new(registry)?,
        });
        let _ = shadow.reload("start");
        let worker = shadow.clone();
        std::thread::Builder::new()
            .name("regate-shadow".into())
            .spawn(move || worker.work(rx))?;
        Ok(shadow)
    }

    pub fn sample_rate(&self) -> f64 {
        self.sample_rate
    }

    pub fn sources(&self) -> &PolicySources {
        &self.sources
    }

    /// Rebuilds the candidate from its sources. A failure keeps the last good candidate (as
    /// for the enforced set), or none when there never was one.
    pub fn reload(&self, trigger: &str) -> Result<(), String> {
        let _guard = self.reload_lock.lock();
        let dir = self.sources.dir.display().to_string();
        let built = if self.sources.dir.is_dir() {
            self.sources
                .build(self.labels.clone())
                .map_err(|e| e.to_string())
        } else {
            Err(format!("{dir}: the shadow policy directory disappeared"))
        };
        let built = built.and_then(|set| match self.inventory() {
            Some(inventory) => {
                crate::gatekeeper::apply_inventory(&set, &inventory).map_err(|e| e.to_string())
            }
            None => Ok(set),
        });
        match built {
            Ok(set) => {
                let count = set.policies.len();
                let ids: Vec<&str> = set.policies.iter().map(|p| p.meta.id.as_str()).collect();
                info!(trigger, shadow_policies = %dir, policies = count, ids = %ids.join(","), "shadow policy set loaded");
                self.current.store(Some(Arc::new(set)));
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                self.metrics.policies.set(count as i64);
                self.metrics.reloads.with_label_values(&["success"]).inc();
                Ok(())
            }
            Err(message) => {
                error!(trigger, shadow_policies = %dir, error = %message, "shadow policy set is broken; enforcement is not affected");
                if let Ok(mut e) = self.last_error.lock() {
                    *e = Some(message.clone());
                }
                if self.current.load().is_none() {
                    self.metrics.policies.set(0);
                }
                self.metrics.reloads.with_label_values(&["failure"]).inc();
                Err(message)
            }
        }
    }

    /// The candidate as loaded now, if one ever loaded.
    pub fn current(&self) -> Option<Arc<PolicySet>> {
        self.current.load_full()
    }

    /// Installs a new `data.inventory` in the candidate and keeps it for every later reload
    /// (a broken candidate gets it when it loads). Blocking.
    pub fn install_inventory(&self, inventory: Inventory) -> Result<(), String> {
        let _guard = self.reload_lock.lock();
        let inventory = Arc::new(inventory);
        if let Some(set) = self.current.load_full() {
            let set =
                crate::gatekeeper::apply_inventory(&set, &inventory).map_err(|e| e.to_string())?;
            self.current.store(Some(Arc::new(set)));
        }
        if let Ok(mut slot) = self.inventory.lock() {
            *slot = Some(inventory);
        }
        Ok(())
    }

    fn inventory(&self) -> Option<Arc<Inventory>> {
        self.inventory.lock().ok().and_then(|i| i.clone())
    }

    /// For `/readyz?verbose` and the startup log: which candidate is loaded, or why none is.
    /// Never makes the server unready.
    pub fn status(&self) -> String {
        let dir = self.sources.dir.display();
        let loaded = self.current.load_full();
        let error = self.last_error.lock().ok().and_then(|e| e.clone());
        match (loaded, error) {
            (Some(set), None) => format!("{dir}: {} policies loaded", set.policies.len()),
            (Some(set), Some(e)) => format!(
                "{dir}: last reload failed, judging with the last good candidate ({} policies): {}",
                set.policies.len(),
                e.replace('\n', " | ")
            ),
            (None, e) => format!(
                "{dir}: broken, nothing judged (enforcement unaffected): {}",
                e.unwrap_or_default().replace('\n', " | ")
            ),
        }
    }

    /// Whether this request is sampled. Cheap: one atomic add.
    fn sampled(&self) -> bool {
        if self.sample_rate >= 1.0 {
            return true;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.sample_rate).floor() > (n * self.sample_rate).floor()
    }

    /// Hands a judged request to the candidate; never waits. Called after the enforced answer
    /// is built, with the review it no longer needs.
    pub fn submit(&self, review: Review, wants: Wants, enforced: &Decision) {
        if !self.sampled() {
            return;
        }
        // With no candidate loaded (broken since start) nothing would judge it: counted as
        // dropped, so evaluated + dropped always adds up to the sampled requests.
        if self.current.load().is_none() {
            self.metrics.dropped.inc();
            return;
        }
        match self.queue.try_send(Job {
            review,
            wants,
            enforced: Outcome::of(enforced),
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.metrics.dropped.inc()
            }
        }
    }

    fn work(&self, rx: Receiver<Job>) {
        // The candidate yields the CPU to the request path: at nice 10 this thread weighs about
        // a tenth of a request thread when both want the same core.
        #[cfg(target_os = "linux")]
        {
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
        }
        while let Ok(job) = rx.recv() {
            let Some(set) = self.current.load_full() else {
                self.metrics.dropped.inc();
                continue;
            };
            // A panic in the candidate loses this comparison only.
            let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                judge_within(&set, &job.review, job.wants, Instant::now())
            }));
            let Ok(decision) = judged else {
                warn!(uid = %job.review.uid(), "shadow evaluation panicked");
                continue;
            };
            self.metrics.evaluated.inc();
            self.record(&job, &Outcome::of(&decision));
        }
    }

    /// Counts and logs where the two sets disagree: policy ids only, never object content.
    fn record(&self, job: &Job, candidate: &Outcome) {
        let enforced = &job.enforced;
        let count = |ids: Vec<&String>, change: &str| {
            for id in &ids {
                self.metrics
                    .disagreements
                    .with_label_values(&[id.as_str(), change])
                    .inc();
            }
            !ids.is_empty()
        };
        let newly_denied: Vec<&String> = only_in(&candidate.denied_by, &enforced.denied_by)
            .chain(only_in(&candidate.failed_by, &enforced.failed_by))
            .collect();
        let newly_allowed: Vec<&String> =
            only_in(&enforced.denied_by, &candidate.denied_by).collect();
        let warned: Vec<&String> = only_in(&candidate.warned_by, &enforced.warned_by)
            .chain(only_in(&enforced.warned_by, &candidate.warned_by))
            .collect();
        let mut disagree = count(newly_denied, "newly_denied");
        disagree |= count(newly_allowed, "newly_allowed");
        disagree |= count(warned, "warned");
        if !disagree && enforced.allowed == candidate.allowed {
            return;
        }
        let review = &job.review;
        info!(
            target: "regate::shadow",
            uid = %review.uid(),
            kind = %review.kind(),
            namespace = %review.namespace().unwrap_or(""),
            name = %review.name(),
            enforced_allowed = enforced.allowed,
            shadow_allowed = candidate.allowed,
            enforced_denied_by = %enforced.denied_by.join(","),
            shadow_denied_by = %candidate.denied_by.join(","),
            enforced_warned_by = %enforced.warned_by.join(","),
            shadow_warned_by = %candidate.warned_by.join(","),
            shadow_failed_by = %candidate.failed_by.join(","),
            "shadow disagreement"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shadow(sample_rate: f64, queue: usize) -> (Arc<Shadow>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let config = ShadowConfig {
            sources: PolicySources {
                dir: dir.path().to_path_buf(),
                include_defaults: false,
                config: None,
                yaml_loader: crate::catalog::YAML_LOADERS,
            },
            queue,
            sample_rate,
        };
        let registry = Registry::new();
        let s = Shadow::start(config, NamespaceLabels::default(), &registry).unwrap();
        (s, dir)
    }

    #[test]
    fn sampling_by_count_takes_exactly_the_rate() {
        let (s, _dir) = shadow(0.25, 8);
        let taken = (0..1000).filter(|_| s.sampled()).count();
        assert_eq!(taken, 250);
        let (all, _dir) = shadow(1.0, 8);
        assert!((0..10).all(|_| all.sampled()));
        let (none, _dir) = shadow(0.0, 8);
        assert!(!(0..10).any(|_| none.sampled()));
    }

    #[test]
    fn bad_settings_are_refused() {
        let registry = Registry::new();
        let config = |dir: &str, rate: f64| ShadowConfig {
            sources: PolicySources {
                dir: PathBuf::from(dir),
                include_defaults: false,
                config: None,
                yaml_loader: crate::catalog::YAML_LOADERS,
            },
            queue: 1,
            sample_rate: rate,
        };
        let missing = Shadow::start(
            config("no/such/dir", 1.0),
            NamespaceLabels::default(),
            &registry,
        );
        assert!(matches!(missing, Err(ShadowError::MissingDir(_))));
        let dir = std::env::temp_dir().display().to_string();
        let rate = Shadow::start(config(&dir, 1.5), NamespaceLabels::default(), &registry);
        assert!(matches!(rate, Err(ShadowError::SampleRate(_))));
    }
}
