//! The background audit of `serve` (`audit.interval` in regate.yaml; off when absent): one replica,
//! elected on a Lease, audits the cluster every interval, applies its reports with server-side
//! apply (OpenReports when the cluster serves them, else wgpolicyk8s PolicyReports; see
//! [`crate::audit::report::openreports`] for their limits), deletes the ones no longer needed,
//! and exposes the last run's counts as metrics.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject};
use kube::Client;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::audit::cluster::{audit_cluster, ClusterOptions, DEFAULT_PAGE_SIZE};
use crate::audit::lease::{LeaderElector, LeaseConfig};
use crate::audit::report::openreports::{Limits, ReportApi, ReportWalker};
use crate::audit::report::policyreport::{MANAGED_BY, REPORT_NAME};
use crate::audit::runner::AuditRun;
use crate::audit::totals::Totals;
use crate::audit::AuditError;
use crate::config::{parse_duration, ReportStatus, ReportsApi};
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
    let mut state = ReportState::default();
    loop {
        let interval = configured_interval(&store, &opts);
        let is_leader = leader.load(Ordering::SeqCst);
        if !is_leader {
            // A replica that becomes leader audits at once, and writes every report again:
            // another leader may have written them meanwhile.
            last = None;
            state = ReportState::default();
        }
        let mut wait = opts.renew_period;
        if let (Some(interval), true) = (interval, is_leader) {
            let due = last.is_none_or(|l| l.elapsed() >= interval);
            if due {
                last = Some(Instant::now());
                // Gatekeeper's audit enforcement point: scoped constraints act as they say there.
                let set = crate::gatekeeper::audit_point(store.current());
                let page_size = set.config.audit.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
                match run_once_with(&client, set, &metrics, page_size, &leader, &mut state).await {
                    Ok(_) => {}
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
/// Remembers nothing between calls (every report is written); [`run`] uses [`run_once_with`].
pub async fn run_once(
    client: &Client,
    set: Arc<crate::policy::set::PolicySet>,
    metrics: &Metrics,
    page_size: u32,
    leader: &AtomicBool,
) -> Result<(), AuditError> {
    let mut state = ReportState::default();
    run_once_with(client, set, metrics, page_size, leader, &mut state)
        .await
        .map(|_| ())
}

/// What one background audit found and wrote.
#[derive(Debug, Clone)]
pub struct Round {
    pub totals: Totals,
    /// The API written, if any (none served, forced off, or leadership lost).
    pub api: Option<ReportApi>,
    pub outcome: ApplyOutcome,
}

/// [`run_once`] keeping the applied reports' digests in `state`.
pub async fn run_once_with(
    client: &Client,
    set: Arc<crate::policy::set::PolicySet>,
    metrics: &Metrics,
    page_size: u32,
    leader: &AtomicBool,
    state: &mut ReportState,
) -> Result<Round, AuditError> {
    let reports = set.config.audit.reports.clone();
    let limits = Limits::from_config(&reports);
    let opts = ClusterOptions {
        page_size,
        // Listing passes needs the objects without findings too.
        keep_passing: limits.statuses.contains(&ReportStatus::Pass),
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
    let mut round = Round {
        totals: run.totals.clone(),
        api: None,
        outcome: ApplyOutcome::default(),
    };
    if !leader.load(Ordering::SeqCst) {
        info!("audit leadership lost during the audit; reports left to the new leader");
        return Ok(round);
    }
    let Some(api) = resolve_api(client, reports.api).await? else {
        return Ok(round);
    };
    let outcome = apply_reports(client, &mut run, api, &limits, state).await?;
    info!(
        api = api.api_version(),
        written = outcome.written,
        unchanged = outcome.unchanged,
        deleted = outcome.deleted,
        failed = outcome.failed,
        "reports applied"
    );
    round.api = Some(api);
    round.outcome = outcome;
    Ok(round)
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

fn report_resource(api: ReportApi, cluster: bool) -> ApiResource {
    ApiResource {
        group: api.group().to_string(),
        version: api.version().to_string(),
        api_version: api.api_version().to_string(),
        kind: api.kind(cluster).to_string(),
        plural: api.plural(cluster).to_string(),
    }
}

/// Whether the cluster serves both report kinds of `api` (its CRDs are installed).
pub async fn served(client: &Client, api: ReportApi) -> Result<bool, AuditError> {
    let gv = format!("{}/{}", api.group(), api.version());
    match client.list_api_group_resources(&gv).await {
        Ok(list) => Ok([false, true]
            .iter()
            .all(|&cluster| list.resources.iter().any(|r| r.name == api.plural(cluster)))),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The API the reports are written in: the configured one when served, or with `auto`
/// OpenReports, else wgpolicyk8s; `None` when there is nothing to write to (said in the log).
pub async fn resolve_api(
    client: &Client,
    choice: ReportsApi,
) -> Result<Option<ReportApi>, AuditError> {
    let candidates: &[ReportApi] = match choice {
        ReportsApi::None => {
            info!("audit.reports.api is none: audit results are in metrics and logs only");
            return Ok(None);
        }
        ReportsApi::Auto => &[ReportApi::OpenReports, ReportApi::PolicyReport],
        ReportsApi::Openreports => &[ReportApi::OpenReports],
        ReportsApi::Policyreport => &[ReportApi::PolicyReport],
    };
    for &api in candidates {
        if served(client, api).await? {
            return Ok(Some(api));
        }
    }
    let wanted: Vec<String> = candidates
        .iter()
        .map(|a| format!("{} ({})", a.api_version(), a.kind(false)))
        .collect();
    warn!(
        wanted = ?wanted,
        "the report CRDs are not installed; audit results are in metrics and logs only"
    );
    Ok(None)
}

/// What the background audit remembers between runs: a digest of every report it applied, so
/// an unchanged report is not written again.
#[derive(Debug, Default)]
pub struct ReportState {
    applied: HashMap<String, u64>,
}

/// What one round of applying reports did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    pub written: usize,
    pub unchanged: usize,
    pub deleted: usize,
    pub failed: usize,
}

/// A digest of a report's content, leaving out the results' timestamps (a finding that is still
/// there is not news).
fn digest(report: &Value) -> u64 {
    let mut h = DefaultHasher::new();
    if let Some(map) = report.as_object() {
        for (k, v) in map {
            k.hash(&mut h);
            if k == "results" {
                for r in v.as_array().into_iter().flatten() {
                    for (rk, rv) in r.as_object().into_iter().flatten() {
                        if rk != "timestamp" {
                            rk.hash(&mut h);
                            rv.to_string().hash(&mut h);
                        }
                    }
                }
            } else {
                v.to_string().hash(&mut h);
            }
        }
    }
    h.finish()
}

fn report_key(plural: &str, namespace: Option<&str>, name: &str) -> String {
    format!("{plural}/{}/{name}", namespace.unwrap_or(""))
}

/// Applies every report of a run (server-side apply, forced, one field manager: each report
/// replaces the previous one whole), skips those unchanged since the last run, and deletes the
/// reports regate wrote before that this run did not (a namespace whose objects are gone, parts
/// no longer needed).
pub async fn apply_reports(
    client: &Client,
    run: &mut AuditRun,
    api: ReportApi,
    limits: &Limits,
    state: &mut ReportState,
) -> Result<ApplyOutcome, AuditError> {
    let namespaced = report_resource(api, false);
    let cluster_wide = report_resource(api, true);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut walker = ReportWalker::new(run, api, limits.clone());
    let mut current: HashMap<String, u64> = HashMap::new();
    let mut outcome = ApplyOutcome::default();
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
            let name = report
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or(REPORT_NAME)
                .to_string();
            let key = report_key(api.plural(namespace.is_none()), namespace.as_deref(), &name);
            let sum = digest(&report);
            if state.applied.get(&key) == Some(&sum) {
                current.insert(key, sum);
                outcome.unchanged += 1;
                continue;
            }
            let reports_api: Api<DynamicObject> = match &namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &namespaced),
                None => Api::all_with(client.clone(), &cluster_wide),
            };
            match reports_api
                .patch(&name, &params, &Patch::Apply(&report))
                .await
            {
                Ok(_) => {
                    current.insert(key, sum);
                    outcome.written += 1;
                }
                Err(e) => {
                    // Kept in `current` without a digest match, so it is written again next time
                    // and not deleted as stale now.
                    current.insert(key, 0);
                    outcome.failed += 1;
                    if outcome.failed <= 5 {
                        warn!(namespace = ?namespace, name = %name, error = %e, "cannot apply the report");
                    }
                }
            }
        }
    }
    if outcome.failed > 0 {
        warn!(
            failed = outcome.failed,
            written = outcome.written,
            "some reports could not be applied"
        );
    }
    // An incomplete audit may have missed a namespace's objects: its reports stay.
    if run.complete() {
        for (resource, cluster) in [(&namespaced, false), (&cluster_wide, true)] {
            outcome.deleted += delete_stale(client, api, resource, cluster, &current).await?;
        }
    }
    state.applied = current;
    Ok(outcome)
}

/// Deletes the reports managed by regate that are not in `current`.
async fn delete_stale(
    client: &Client,
    api: ReportApi,
    resource: &ApiResource,
    cluster: bool,
    current: &HashMap<String, u64>,
) -> Result<usize, AuditError> {
    let all: Api<DynamicObject> = Api::all_with(client.clone(), resource);
    let mut params = ListParams::default()
        .labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"))
        .limit(500);
    let mut stale: Vec<(Option<String>, String)> = Vec::new();
    loop {
        let page = all.list(&params).await?;
        for item in &page.items {
            let Some(name) = item.metadata.name.clone() else {
                continue;
            };
            let ns = item.metadata.namespace.clone();
            if !current.contains_key(&report_key(api.plural(cluster), ns.as_deref(), &name)) {
                stale.push((ns, name));
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params.continue_token = Some(token),
            None => break,
        }
    }
    let mut deleted = 0;
    for (ns, name) in stale {
        let reports_api: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
            None => Api::all_with(client.clone(), resource),
        };
        match reports_api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                warn!(namespace = ?ns, name = %name, error = %e, "cannot delete a stale report")
            }
        }
    }
    Ok(deleted)
}
