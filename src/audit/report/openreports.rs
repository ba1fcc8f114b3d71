//! `-o openreports`: OpenReports (`openreports.io/v1alpha1`) `Report`s, one set per namespace, and
//! `ClusterReport`s for cluster-scoped objects; and the reports the background audit applies to a
//! cluster in either API (OpenReports or wgpolicyk8s), which stay small by construction.
//!
//! A namespace's results are split into numbered reports (`regate-audit`, `regate-audit-2`, ...)
//! sharing the label `regate.dev/report=regate-audit`: a report never holds more than
//! `resultsPerReport` results (default 1,000) nor more than [`MAX_REPORT_BYTES`] serialised. With
//! `maxResults`, a namespace lists that many results and the rest are cut. Only the statuses of the
//! status filter are listed (default fail, warn, error: passes stay out of etcd).
//!
//! Every finding is counted whatever is listed: each report's summary counts its own results, and
//! the first report of a namespace also counts what is not listed (passes, filtered or cut
//! results), so the summaries of all reports add up to the audit's totals.

use std::io::{self, Write};

use serde_json::{json, Map, Value};

use crate::audit::baseline::Comparison;
use crate::audit::record::ObjectRecord;
use crate::audit::report::policyreport::{self, results_of, MANAGED_BY, REPORT_NAME};
use crate::audit::report::result;
use crate::audit::runner::AuditRun;
use crate::audit::spool::by_namespace;
use crate::audit::totals::NamespaceCounts;
use crate::config::{ReportStatus, ReportsConfig};

pub const GROUP: &str = "openreports.io";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "openreports.io/v1alpha1";
/// Label shared by every report of one audit (value [`REPORT_NAME`]).
pub const REPORT_LABEL: &str = "regate.dev/report";
/// Label numbering the reports of a namespace from 1.
pub const PART_LABEL: &str = "regate.dev/part";
/// Annotation: how many reports the namespace has.
pub const PARTS_ANNOTATION: &str = "regate.dev/parts";
/// Results per report unless `audit.reports.resultsPerReport` says otherwise.
pub const DEFAULT_RESULTS_PER_REPORT: usize = 1_000;
/// Largest serialised report (etcd refuses objects over ~1.5 MiB).
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// Room kept for metadata and summary when counting result bytes.
const ENVELOPE_BYTES: usize = 16 * 1024;
/// Longest message kept in a result (longer ones end in "...").
const MAX_MESSAGE_CHARS: usize = 4_096;

/// The report API written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportApi {
    /// `openreports.io/v1alpha1` Report / ClusterReport.
    OpenReports,
    /// `wgpolicyk8s.io/v1alpha2` PolicyReport / ClusterPolicyReport.
    PolicyReport,
}

impl ReportApi {
    pub fn group(self) -> &'static str {
        match self {
            ReportApi::OpenReports => GROUP,
            ReportApi::PolicyReport => policyreport::GROUP,
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            ReportApi::OpenReports => VERSION,
            ReportApi::PolicyReport => policyreport::VERSION,
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            ReportApi::OpenReports => API_VERSION,
            ReportApi::PolicyReport => policyreport::API_VERSION,
        }
    }

    /// The kind of a namespace's reports, or of the cluster-scoped ones.
    pub fn kind(self, cluster: bool) -> &'static str {
        match (self, cluster) {
            (ReportApi::OpenReports, false) => "Report",
            (ReportApi::OpenReports, true) => "ClusterReport",
            (ReportApi::PolicyReport, false) => "PolicyReport",
            (ReportApi::PolicyReport, true) => "ClusterPolicyReport",
        }
    }

    pub fn plural(self, cluster: bool) -> &'static str {
        match (self, cluster) {
            (ReportApi::OpenReports, false) => "reports",
            (ReportApi::OpenReports, true) => "clusterreports",
            (ReportApi::PolicyReport, false) => "policyreports",
            (ReportApi::PolicyReport, true) => "clusterpolicyreports",
        }
    }
}

/// How large a report may grow and what it lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub results_per_report: usize,
    pub max_bytes: usize,
    /// Results listed per namespace; the rest are cut.
    pub max_results: Option<usize>,
    pub statuses: Vec<ReportStatus>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            results_per_report: DEFAULT_RESULTS_PER_REPORT,
            max_bytes: MAX_REPORT_BYTES,
            max_results: None,
            statuses: vec![ReportStatus::Fail, ReportStatus::Warn, ReportStatus::Error],
        }
    }
}

impl Limits {
    pub fn from_config(config: &ReportsConfig) -> Limits {
        let default = Limits::default();
        Limits {
            results_per_report: config
                .results_per_report
                .unwrap_or(default.results_per_report)
                .max(1),
            max_bytes: default.max_bytes,
            max_results: config.max_results,
            statuses: config.status_filter.clone().unwrap_or(default.statuses),
        }
    }

    fn lists(&self, status: &str) -> bool {
        self.statuses.iter().any(|s| s.as_str() == status)
    }
}

/// A report's `summary`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub pass: u64,
    pub fail: u64,
    pub warn: u64,
    pub error: u64,
    pub skip: u64,
}

impl Summary {
    fn add(&mut self, status: &str) {
        match status {
            "pass" => self.pass += 1,
            "fail" => self.fail += 1,
            "warn" => self.warn += 1,
            "skip" => self.skip += 1,
            _ => self.error += 1,
        }
    }

    fn merge(&mut self, other: Summary) {
        self.pass += other.pass;
        self.fail += other.fail;
        self.warn += other.warn;
        self.error += other.error;
        self.skip += other.skip;
    }

    fn to_json(self) -> Value {
        json!({
            "pass": self.pass,
            "fail": self.fail,
            "warn": self.warn,
            "error": self.error,
            "skip": self.skip,
        })
    }
}

#[derive(Default)]
struct Part {
    results: Vec<Value>,
    bytes: usize,
    summary: Summary,
}

/// One `pass` result per (object, policy) pair without findings.
fn pass_results(r: &ObjectRecord, seconds: i64) -> impl Iterator<Item = Value> + '_ {
    r.pairs()
        .into_iter()
        .filter(|(_, worst)| worst.is_none())
        .map(move |(policy, _)| result::of_pass(r, policy, seconds))
}

fn cap_message(result: &mut Value) {
    if let Some(Value::String(message)) = result.get_mut("message") {
        if message.chars().count() > MAX_MESSAGE_CHARS {
            let cut: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
            *message = format!("{cut}...");
        }
    }
}

/// The name of a namespace's `index`th report (from 0).
pub fn part_name(index: usize) -> String {
    if index == 0 {
        REPORT_NAME.to_string()
    } else {
        format!("{REPORT_NAME}-{}", index + 1)
    }
}

/// Builds the reports of one namespace ("" → cluster-scoped reports) from its records (sorted,
/// all of that namespace) and its counters: at least one report, more when the limits split it.
/// With `--baseline`, every finding's state and the namespace's resolved findings.
pub fn build(
    api: ReportApi,
    namespace: &str,
    records: &[ObjectRecord],
    counts: Option<&NamespaceCounts>,
    seconds: i64,
    limits: &Limits,
    baseline: Option<&Comparison>,
) -> Vec<Value> {
    let resolved = baseline.map_or(&[][..], |b| b.resolved_in(namespace));
    let budget = limits.max_bytes.saturating_sub(ENVELOPE_BYTES).max(1);
    let list_pass = limits.lists("pass");
    let mut parts = vec![Part::default()];
    let mut unlisted = Summary::default();
    let mut omitted = 0u64;
    let mut listed = 0usize;
    let mut pass_seen = 0u64;
    let judged = records.iter().flat_map(|r| {
        let passes = list_pass.then(|| pass_results(r, seconds));
        results_of(r, seconds, baseline).chain(passes.into_iter().flatten())
    });
    let resolved = resolved.iter().map(|b| result::of_resolved(b, seconds));
    for mut result in judged.chain(resolved) {
        let status = result
            .get("result")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_string();
        if status == "pass" {
            pass_seen += 1;
        }
        if !limits.lists(&status) {
            unlisted.add(&status);
            continue;
        }
        if limits.max_results.is_some_and(|max| listed >= max) {
            unlisted.add(&status);
            omitted += 1;
            continue;
        }
        cap_message(&mut result);
        let len = serde_json::to_vec(&result).map_or(0, |v| v.len()) + 1;
        let full = parts.last().is_some_and(|p| {
            !p.results.is_empty()
                && (p.results.len() >= limits.results_per_report || p.bytes + len > budget)
        });
        if full {
            parts.push(Part::default());
        }
        if let Some(part) = parts.last_mut() {
            part.results.push(result);
            part.bytes += len;
            part.summary.add(&status);
        }
        listed += 1;
    }
    // Passes of objects the spool did not keep (only those with findings are kept unless
    // passes are listed) are counted, not listed.
    unlisted.pass += counts.map_or(0, |c| c.pass).saturating_sub(pass_seen);
    if let Some(first) = parts.first_mut() {
        first.summary.merge(unlisted);
    }
    let total = parts.len();
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| render(api, namespace, i, total, part, limits, omitted))
        .collect()
}

fn render(
    api: ReportApi,
    namespace: &str,
    index: usize,
    total: usize,
    part: Part,
    limits: &Limits,
    omitted: u64,
) -> Value {
    let mut annotations = Map::new();
    annotations.insert(PARTS_ANNOTATION.into(), Value::String(total.to_string()));
    if index == 0 && omitted > 0 {
        annotations.insert(
            policyreport::TRUNCATED_ANNOTATION.into(),
            Value::String(omitted.to_string()),
        );
    }
    let mut metadata = json!({
        "name": part_name(index),
        "labels": {
            "app.kubernetes.io/managed-by": MANAGED_BY,
            REPORT_LABEL: REPORT_NAME,
            PART_LABEL: (index + 1).to_string(),
        },
        "annotations": annotations,
    });
    if !namespace.is_empty() {
        metadata["namespace"] = Value::String(namespace.to_string());
    }
    let mut report = json!({
        "apiVersion": api.api_version(),
        "kind": api.kind(namespace.is_empty()),
        "metadata": metadata,
    });
    if api == ReportApi::OpenReports {
        let per_report = limits.max_results.map_or(limits.results_per_report, |m| {
            m.min(limits.results_per_report)
        });
        let statuses: Vec<&str> = limits.statuses.iter().map(|s| s.as_str()).collect();
        report["source"] = json!("regate");
        report["configuration"] = json!({
            "limits": {"maxResults": per_report, "statusFilter": statuses},
        });
    }
    report["summary"] = part.summary.to_json();
    report["results"] = Value::Array(part.results);
    report
}

/// Walks the spool and yields every namespace's reports in namespace order: the cluster-scoped
/// ones first, then those of every namespace where objects were judged, empty ones included
/// (they carry the passes).
pub struct ReportWalker {
    api: ReportApi,
    limits: Limits,
    namespaces: Vec<String>,
    next: usize,
    seconds: i64,
}

impl ReportWalker {
    pub fn new(run: &AuditRun, api: ReportApi, limits: Limits) -> ReportWalker {
        let mut namespaces: Vec<String> = run.spool.namespaces().to_vec();
        namespaces.extend(run.totals.by_namespace.keys().cloned());
        if let Some(b) = &run.baseline {
            namespaces.extend(b.resolved_namespaces());
        }
        namespaces.push(String::new());
        namespaces.sort();
        namespaces.dedup();
        ReportWalker {
            api,
            limits,
            namespaces,
            next: 0,
            seconds: run.started_at.as_second(),
        }
    }

    fn build(&self, run: &AuditRun, ns: &str, records: &[ObjectRecord]) -> Vec<Value> {
        let counts = run.totals.by_namespace.get(ns);
        let baseline = run.baseline.as_ref();
        let nothing =
            counts.is_none_or(|c| c.objects == 0 && c.pass == 0 && c.findings.total() == 0);
        let resolved = baseline.is_some_and(|b| !b.resolved_in(ns).is_empty());
        if !ns.is_empty() && records.is_empty() && nothing && !resolved {
            // A namespace with nothing judged in it gets no report (a stale one is deleted).
            return Vec::new();
        }
        build(
            self.api,
            ns,
            records,
            counts,
            self.seconds,
            &self.limits,
            baseline,
        )
    }

    fn empty_until(&mut self, run: &AuditRun, stop: Option<&str>, out: &mut Vec<Value>) {
        while let Some(ns) = self.namespaces.get(self.next) {
            if stop.is_some_and(|s| ns.as_str() >= s) {
                break;
            }
            out.extend(self.build(run, ns, &[]));
            self.next += 1;
        }
    }

    /// The reports up to and including the namespaces of one partition's records.
    pub fn partition(&mut self, run: &AuditRun, records: Vec<ObjectRecord>) -> Vec<Value> {
        let mut out = Vec::new();
        for (ns, group) in by_namespace(records) {
            self.empty_until(run, Some(&ns), &mut out);
            out.extend(self.build(run, &ns, &group));
            if self.namespaces.get(self.next).is_some_and(|n| *n == ns) {
                self.next += 1;
            }
        }
        out
    }

    /// The reports of the namespaces left.
    pub fn finish(&mut self, run: &AuditRun) -> Vec<Value> {
        let mut out = Vec::new();
        self.empty_until(run, None, &mut out);
        out
    }
}

/// Every OpenReports report as a YAML stream (`kubectl apply -f` takes it as is), with the
/// default limits; with `--baseline`, `skip` results are listed too (the resolved findings).
pub fn write(run: &mut AuditRun, out: &mut dyn Write) -> io::Result<()> {
    let mut limits = Limits::default();
    if run.baseline.is_some() {
        limits.statuses.push(ReportStatus::Skip);
    }
    let mut walker = ReportWalker::new(run, ReportApi::OpenReports, limits);
    let emit = |reports: Vec<Value>, out: &mut dyn Write| -> io::Result<()> {
        for report in reports {
            out.write_all(b"---\n")?;
            let text = serde_yaml::to_string(&report).map_err(io::Error::other)?;
            out.write_all(text.as_bytes())?;
        }
        Ok(())
    };
    for p in 0..run.spool.partitions() {
        let records = run.spool.read_partition(p)?;
        let reports = walker.partition(run, records);
        emit(reports, out)?;
    }
    let reports = walker.finish(run);
    emit(reports, out)
}
