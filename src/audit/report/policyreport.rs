//! `-o policyreport`: `wgpolicyk8s.io/v1alpha2` PolicyReports, one per namespace, and one
//! ClusterPolicyReport for cluster-scoped objects, listing every finding. The background audit
//! applies reports of this API split to its limits ([`super::openreports`]).
//!
//! Each result is one finding: `result` is `fail` for deny and audit findings, `warn` for warnings,
//! `error` for policies that could not be evaluated; `properties.action` keeps the exact label.
//! `summary.pass` counts (object, policy) pairs without findings; passing pairs are not listed.
//! With `--baseline`, results carry `properties.baselineState` and resolved findings are listed as
//! `skip` results ([`super::result`]).

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::audit::baseline::Comparison;
use crate::audit::record::{Label, ObjectRecord};
use crate::audit::report::result;
use crate::audit::runner::AuditRun;
use crate::audit::spool::by_namespace;
use crate::audit::totals::NamespaceCounts;

pub const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";
pub const GROUP: &str = "wgpolicyk8s.io";
pub const VERSION: &str = "v1alpha2";
/// Every report regate writes has this name (one per namespace, one cluster-wide).
pub const REPORT_NAME: &str = "regate-audit";
pub const MANAGED_BY: &str = "regate";

/// Largest report applied to a cluster: etcd refuses objects over ~1.5 MiB. Results beyond it are
/// left out (the summary still counts them) and the report is annotated.
pub const MAX_CLUSTER_REPORT_BYTES: usize = 1024 * 1024;
pub const TRUNCATED_ANNOTATION: &str = "regate.dev/results-omitted";

/// The results of one object's findings, each with its baseline state when there is one.
pub fn results_of<'a>(
    r: &'a ObjectRecord,
    seconds: i64,
    baseline: Option<&'a Comparison>,
) -> impl Iterator<Item = Value> + 'a {
    r.findings
        .iter()
        .map(move |f| result::of_finding(r, f, seconds, baseline.map(|b| b.state(r, f))))
}

/// Builds the report of one namespace ("" → the ClusterPolicyReport) from its records (sorted,
/// all of that namespace) and its counters. With `max_bytes`, results stop there.
pub fn build(
    namespace: &str,
    records: &[ObjectRecord],
    counts: Option<&NamespaceCounts>,
    seconds: i64,
    max_bytes: Option<usize>,
    baseline: Option<&Comparison>,
) -> Value {
    let resolved = baseline.map_or(&[][..], |b| b.resolved_in(namespace));
    let mut results = Vec::new();
    let mut size = 0usize;
    let mut omitted = 0u64;
    let (mut fail, mut warn, mut error) = (0u64, 0u64, 0u64);
    for r in records {
        for f in &r.findings {
            match f.action {
                Label::Deny | Label::Audit => fail += 1,
                Label::Warn => warn += 1,
                Label::Error => error += 1,
            }
        }
        for result in results_of(r, seconds, baseline) {
            push_within(&mut results, &mut size, &mut omitted, max_bytes, result);
        }
    }
    for b in resolved {
        push_within(
            &mut results,
            &mut size,
            &mut omitted,
            max_bytes,
            result::of_resolved(b, seconds),
        );
    }
    let mut metadata = json!({
        "name": REPORT_NAME,
        "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
    });
    if !namespace.is_empty() {
        metadata["namespace"] = Value::String(namespace.to_string());
    }
    if omitted > 0 {
        metadata["annotations"] = json!({ TRUNCATED_ANNOTATION: omitted.to_string() });
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": if namespace.is_empty() { "ClusterPolicyReport" } else { "PolicyReport" },
        "metadata": metadata,
        "summary": {
            "pass": counts.map_or(0, |c| c.pass),
            "fail": fail,
            "warn": warn,
            "error": error,
            "skip": resolved.len(),
        },
        "results": results,
    })
}

/// Adds `result` unless it would take the results past `max_bytes`.
fn push_within(
    results: &mut Vec<Value>,
    size: &mut usize,
    omitted: &mut u64,
    max_bytes: Option<usize>,
    result: Value,
) {
    if let Some(max) = max_bytes {
        let len = serde_json::to_vec(&result).map(|v| v.len()).unwrap_or(0) + 1;
        if *size + len > max {
            *omitted += 1;
            return;
        }
        *size += len;
    }
    results.push(result);
}

/// Walks the spool and yields every report in namespace order: the ClusterPolicyReport first,
/// then a PolicyReport for every namespace known to the audit, empty ones included (applied to a
/// cluster, an empty report replaces stale results).
pub struct ReportWalker {
    namespaces: Vec<String>,
    next: usize,
    seconds: i64,
    max_bytes: Option<usize>,
}

impl ReportWalker {
    pub fn new(run: &AuditRun, max_bytes: Option<usize>) -> ReportWalker {
        let mut namespaces: Vec<String> = run.spool.namespaces().to_vec();
        namespaces.extend(run.totals.by_namespace.keys().cloned());
        if let Some(b) = &run.baseline {
            namespaces.extend(b.resolved_namespaces());
        }
        namespaces.push(String::new());
        namespaces.sort();
        namespaces.dedup();
        ReportWalker {
            namespaces,
            next: 0,
            seconds: run.started_at.as_second(),
            max_bytes,
        }
    }

    fn empty_until(&mut self, run: &AuditRun, stop: Option<&str>, out: &mut Vec<Value>) {
        while let Some(ns) = self.namespaces.get(self.next) {
            if stop.is_some_and(|s| ns.as_str() >= s) {
                break;
            }
            out.push(build(
                ns,
                &[],
                run.totals.by_namespace.get(ns),
                self.seconds,
                self.max_bytes,
                run.baseline.as_ref(),
            ));
            self.next += 1;
        }
    }

    /// The reports up to and including the namespaces of one partition's records.
    pub fn partition(&mut self, run: &AuditRun, records: Vec<ObjectRecord>) -> Vec<Value> {
        let mut out = Vec::new();
        for (ns, group) in by_namespace(records) {
            self.empty_until(run, Some(&ns), &mut out);
            out.push(build(
                &ns,
                &group,
                run.totals.by_namespace.get(&ns),
                self.seconds,
                self.max_bytes,
                run.baseline.as_ref(),
            ));
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

/// Every report as a YAML stream (`kubectl apply -f` takes it as is).
pub fn write(run: &mut AuditRun, out: &mut dyn Write) -> io::Result<()> {
    let mut walker = ReportWalker::new(run, None);
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
