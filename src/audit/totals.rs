//! Counters kept in memory while auditing: bounded by the number of policies, namespaces and
//! kinds, never by the number of objects or findings.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::record::{Label, ObjectRecord};
use crate::policy::metadata::Severity;

/// Findings by label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub deny: u64,
    pub warn: u64,
    pub audit: u64,
    pub error: u64,
}

impl Counts {
    pub fn add(&mut self, label: Label) {
        match label {
            Label::Deny => self.deny += 1,
            Label::Warn => self.warn += 1,
            Label::Audit => self.audit += 1,
            Label::Error => self.error += 1,
        }
    }

    pub fn get(&self, label: Label) -> u64 {
        match label {
            Label::Deny => self.deny,
            Label::Warn => self.warn,
            Label::Audit => self.audit,
            Label::Error => self.error,
        }
    }

    pub fn total(&self) -> u64 {
        self.deny + self.warn + self.audit + self.error
    }
}

/// Per namespace: findings, passing (object, policy) pairs, objects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NamespaceCounts {
    #[serde(flatten)]
    pub findings: Counts,
    pub pass: u64,
    pub objects: u64,
}

/// Every counter of one audit.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Objects judged (including those no policy applied to).
    pub objects: u64,
    /// Objects with at least one finding.
    pub objects_with_findings: u64,
    /// Objects that were not judged: exempt namespace, no matching policy.
    pub skipped: u64,
    /// Objects that could not be presented as admission requests.
    pub invalid: u64,
    /// Files or documents that could not be read or parsed (each is one error finding).
    pub unreadable: u64,
    /// All findings by label.
    pub findings: Counts,
    /// (object, policy) pairs judged.
    pub pairs: u64,
    /// (object, policy) pairs by their worst finding; pairs without findings are passes.
    pub pairs_worst: Counts,
    pub by_policy: BTreeMap<String, Counts>,
    /// Keyed by namespace; "" holds cluster-scoped objects.
    pub by_namespace: BTreeMap<String, NamespaceCounts>,
    pub by_severity: BTreeMap<Severity, Counts>,
    pub by_kind: BTreeMap<String, u64>,
    /// (policy, namespace) → findings other than errors (for the audit metrics).
    #[serde(skip)]
    pub by_policy_namespace: BTreeMap<(String, String), u64>,
}

impl Totals {
    pub fn record(&mut self, record: &ObjectRecord) {
        self.objects += 1;
        *self.by_kind.entry(record.kind.clone()).or_default() += 1;
        if record.skipped.is_some() {
            self.skipped += 1;
        }
        self.by_namespace
            .entry(record.namespace_key().to_string())
            .or_default()
            .objects += 1;
        if !record.findings.is_empty() {
            self.objects_with_findings += 1;
        }
        self.record_findings(record);
    }

    /// A file or document that could not be read or parsed: its error finding counts like any
    /// other, but it is not an object.
    pub fn record_unreadable(&mut self, record: &ObjectRecord) {
        self.unreadable += 1;
        self.record_findings(record);
    }

    fn record_findings(&mut self, record: &ObjectRecord) {
        let ns = record.namespace_key().to_string();
        let ns_counts = self.by_namespace.entry(ns.clone()).or_default();
        for f in &record.findings {
            self.findings.add(f.action);
            ns_counts.findings.add(f.action);
            self.by_policy
                .entry(f.policy.clone())
                .or_default()
                .add(f.action);
            self.by_severity
                .entry(f.severity)
                .or_default()
                .add(f.action);
            if f.action != Label::Error {
                *self
                    .by_policy_namespace
                    .entry((f.policy.clone(), ns.clone()))
                    .or_default() += 1;
            }
        }
        for (_, worst) in record.pairs() {
            self.pairs += 1;
            match worst {
                Some(label) => self.pairs_worst.add(label),
                None => ns_counts.pass += 1,
            }
        }
    }

    /// (object, policy) pairs without any finding.
    pub fn passes(&self) -> u64 {
        self.pairs - self.pairs_worst.total()
    }
}
