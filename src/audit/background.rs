//! The background audit of `serve` (`audit.interval` in regate.yaml; off when absent): one replica,
//! elected on a Lease, audits the cluster every interval, applies a PolicyReport per namespace
//! and a ClusterPolicyReport with server-side apply (each replaces the last one whole, so stale
//! results disappear), and exposes the last run's counts as metrics.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::Client;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::audit::cluster::{self, audit_cluster, ClusterOptions, DEFAULT_PAGE_SIZE};
use crate::audit::lease::{LeaderElector, LeaseConfig};
use crate::audit::report::policyreport::{self, ReportWalker, MAX_CLUSTER_REPORT_BYTES};
use crate::audit::runner::AuditRun;
use crate::audit::AuditError;
use crate::config::parse_duration;
use crate::metrics::Metrics;
use crate::policy::reload::PolicyStore;

/// Field manager of the applied reports.
pub const FIELD_MANAGER: &str = "regate-audit";
/// Namespaces named in `regate_audit_violations` (the most affected ones); the rest are summed
/// under [`OTHER_NAMESPACES`].
pub const MAX_NAMESPACE_LABELS: usize = 50;
pub const OTHER_NAMESPACES: &str = "_other";
pub const CLUSTER_SCOPE: &str = "_cluster";

/// How the background audit runs; `from_env` gives the production values.
#[derive(Debug, Clone)]
pub struct BackgroundOptions {
    pub lease_name: String,
    /// Defaults to POD_NAMESPACE, then the client's namespace.
    pub lease_namespace: Option<String>,
    pub identity: String,
    pub lease_duration: Duration,
    /// How often the holder renews (and others retry).
    pub renew_period: Duration,
    /// How often to look for `audit.interval` while it is unset.
    pub config_poll: Duration,
    /// Overrides `audit.interval` (tests).
    pub interval: Option<Duration>,
}

impl BackgroundOptions {
    pub fn from_env() -> BackgroundOptions {
        let identity = std::env::var("POD_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "regate".to_string());
                format!("{host}-{}", std::process::id())
            });
        BackgroundOptions {
            lease_name: "regate-audit".to_string(),
            lease_namespace: std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty()),
            identity,
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            config_poll: Duration::from_secs(30),
            interval: None,
        }
    }
}

fn configured_interval(store: &PolicyStore, opts: &BackgroundOptions) -> Option<Duration> {
    if opts.interval.is_some() {
        return opts.interval;
    }
    let set = store.current();
    let text = set.config.audit.interval.as_deref()?.trim();
    if text.is_empty() {
        return None;
    }
    parse_duration(text).ok().filter(|d| !d.is_zero())
}

async fn sleep_or_shutdown(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.wait_for(|v| *v) => true,
    }
}

/// Called once by `serve`: waits until `audit.interval` is configured (config reloads count),
/// then connects to the cluster and audits on its lease until shutdown.
pub fn spawn(
    store: Arc<PolicyStore>,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let opts = BackgroundOptions::from_env();
        while configured_interval(&store, &opts).is_none() {
            if sleep_or_shutdown(opts.config_poll, &mut shutdown).await {
                return;
            }
        }
        let client = loop {
            match Client::try_default().await {
                Ok(c) => break c,
                Err(e) => {
                    warn!(error = %e, "background audit: no Kubernetes client; retrying in a minute");
                    if sleep_or_shutdown(Duration::from_secs(60), &mut shutdown).await {
                        return;
                    }
                }
            }
        };
        run(client, store, metrics, opts, shutdown).await;
    })
}

/// The election and audit loops, until shutdown (then the lease is released).
pub async fn run(
    client: Client,
    store: Arc<PolicyStore>,
    metrics: Metrics,
    opts: BackgroundOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let namespace = opts
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let elector = Arc::new(LeaderElector::new(
        client.clone(),
        LeaseConfig {
            namespace,
            name: opts.lease_name.clone(),
            identity: opts.identity.clone(),
            duration: opts.lease_duration,
        },
    ));
    let leader = Arc::new(AtomicBool::new(false));
    let election = {
        let elector = elector.clone();
        let leader = leader.clone();
        let mut shutdown = shutdown.clone();
        let period = opts.renew_period;
        tokio::spawn(async move {
            loop {
                match elector.try_acquire_or_renew().await {
                    Ok(held) => {
                        if leader.swap(held, Ordering::SeqCst) && !held {
                            info!("audit leadership lost");
                        }
                    }
                    Err(e) => {
                        // Without the API we cannot know whether another replica took over.
                        if leader.swap(false, Ordering::SeqCst) {
                            warn!(error = %e, "cannot renew the audit lease; stepping down");
                        } else {
                            debug!(error = %e, "cannot read the audit lease");
                        }
                    }
                }
                if sleep_or_shutdown(period, &mut shutdown).await {
                    break;
                }
            }
            if leader.swap(false, Ordering::SeqCst) {
                if let Err(e) = elector.release().await {
                    warn!(error = %e, "cannot release the audit lease");
                }
            }
        })
    };

    let mut last: Option<Instant> = None;
    loop {
        let interval = configured_interval(&store, &opts);
        let is_leader = leader.load(Ordering::SeqCst);
        if !is_leader {
            // A replica that becomes leader audits at once.
            last = None;
        }
        let mut wait = opts.renew_period;
        if let (Some(interval), true) = (interval, is_leader) {
            let due = last.is_none_or(|l| l.elapsed() >= interval);
            if due {
                last = Some(Instant::now());
                // Gatekeeper's audit enforcement point: scoped constraints act as they say there.
                let set = crate::gatekeeper::audit_point(store.current());
                let page_size = set.config.audit.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
                match run_once(&client, set, &metrics, page_size, &leader).await {
                    Ok(()) => {}
                    Err(e) => warn!(error = %e, "background audit failed"),
                }
            }
            if let Some(l) = last {
                wait = wait.min(
                    interval
                        .saturating_sub(l.elapsed())
                        .max(Duration::from_millis(50)),
                );
            }
        }
        if sleep_or_shutdown(wait, &mut shutdown).await {
            break;
        }
    }
    let _ = election.await;
}

/// One audit: judge the cluster, record the metrics, and (while still leader) apply the reports.
pub async fn run_once(
    client: &Client,
    set: Arc<crate::policy::set::PolicySet>,
    metrics: &Metrics,
    page_size: u32,
    leader: &AtomicBool,
) -> Result<(), AuditError> {
    let opts = ClusterOptions {
        page_size,
        ..ClusterOptions::default()
    };
    let mut run = audit_cluster(client, set, &opts).await?;
    record_metrics(metrics, &run);
    info!(
        objects = run.totals.objects,
        findings = run.totals.findings.total(),
        deny = run.totals.findings.deny,
        warn = run.totals.findings.warn,
        audit = run.totals.findings.audit,
        error = run.totals.findings.error,
        seconds = run.duration.as_secs_f64(),
        complete = run.complete(),
        "background audit done"
    );
    for i in &run.issues {
        warn!(source = %i.source, "background audit incomplete: {}", i.message);
    }
    if !leader.load(Ordering::SeqCst) {
        info!("audit leadership lost during the audit; reports left to the new leader");
        return Ok(());
    }
    let written = apply_reports(client, &mut run).await?;
    info!(reports = written, "policy reports applied");
    Ok(())
}

/// Sets the audit metrics from a run: gauges replaced whole, namespace labels bounded.
pub fn record_metrics(metrics: &Metrics, run: &AuditRun) {
    let t = &run.totals;
    let mut by_ns: Vec<(&String, u64)> = t
        .by_namespace
        .iter()
        .filter(|(ns, _)| !ns.is_empty())
        .map(|(ns, c)| (ns, c.findings.total() - c.findings.error))
        .filter(|(_, n)| *n > 0)
        .collect();
    by_ns.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let named: HashSet<&str> = by_ns
        .iter()
        .take(MAX_NAMESPACE_LABELS)
        .map(|(ns, _)| ns.as_str())
        .collect();
    metrics.audit_violations.reset();
    for ((policy, ns), n) in &t.by_policy_namespace {
        let ns_label = if ns.is_empty() {
            CLUSTER_SCOPE
        } else if named.contains(ns.as_str()) {
            ns.as_str()
        } else {
            OTHER_NAMESPACES
        };
        let severity = run.policy(policy).map_or("medium", |p| p.severity.as_str());
        metrics
            .audit_violations
            .with_label_values(&[policy.as_str(), severity, ns_label])
            .add(*n as f64);
    }
    metrics.audit_duration.set(run.duration.as_secs_f64());
    metrics
        .audit_objects
        .set(i64::try_from(t.objects).unwrap_or(i64::MAX));
}

fn report_resource(kind: &str) -> ApiResource {
    ApiResource {
        group: policyreport::GROUP.to_string(),
        version: policyreport::VERSION.to_string(),
        api_version: policyreport::API_VERSION.to_string(),
        kind: kind.to_string(),
        plural: format!("{}s", kind.to_ascii_lowercase()),
    }
}

/// Applies every report of a run (server-side apply, forced, one field manager: each report
/// replaces the previous one whole). Returns how many were written.
pub async fn apply_reports(client: &Client, run: &mut AuditRun) -> Result<usize, AuditError> {
    let kinds = [
        "PolicyReport".to_string(),
        "ClusterPolicyReport".to_string(),
    ];
    let served = cluster::discover(client, &kinds, cluster::DEFAULT_DISCOVERY_TIMEOUT).await?;
    if !served.missing.is_empty() {
        warn!(
            missing = ?served.missing,
            "the wgpolicyk8s.io/v1alpha2 PolicyReport CRDs are not installed; audit results are in metrics and logs only"
        );
        return Ok(0);
    }
    let namespaced = report_resource("PolicyReport");
    let cluster_wide = report_resource("ClusterPolicyReport");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut walker = ReportWalker::new(run, Some(MAX_CLUSTER_REPORT_BYTES));
    let mut written = 0;
    let mut failed = 0;
    let partitions = run.spool.partitions();
    for p in 0..=partitions {
        let reports = if p < partitions {
            let records = run.spool.read_partition(p)?;
            walker.partition(run, records)
        } else {
            walker.finish(run)
        };
        for report in reports {
            let namespace = report
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            let api: Api<DynamicObject> = match &namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &namespaced),
                None => Api::all_with(client.clone(), &cluster_wide),
            };
            match api
                .patch(policyreport::REPORT_NAME, &params, &Patch::Apply(&report))
                .await
            {
                Ok(_) => written += 1,
                Err(e) => {
                    failed += 1;
                    if failed <= 5 {
                        warn!(namespace = ?namespace, error = %e, "cannot apply the policy report");
                    }
                }
            }
        }
    }
    if failed > 0 {
        warn!(failed, written, "some policy reports could not be applied");
    }
    Ok(written)
}
