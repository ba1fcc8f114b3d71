//! The runner: judges the objects sources hand it, one page at a time, and keeps only counters
//! and the spooled records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;

use crate::audit::record::{judge_object, Finding, Label, ObjectRecord, Origin};
use crate::audit::spool::Spool;
use crate::audit::totals::Totals;
use crate::audit::AuditError;
use crate::config::Environment;
use crate::policy::metadata::Severity;

/// The policy id of the error finding for a file or document that could not be parsed.
pub const UNREADABLE_POLICY: &str = "manifest-parse";
use crate::policy::set::PolicySet;

/// Where the audited objects came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Files,
    Cluster,
}

/// A part of the audit that could not be done (a kind the cluster does not serve, a list the
/// service account may not read, an object that is not a Kubernetes object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Issue {
    pub source: String,
    pub message: String,
}

/// A policy as reports describe it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyInfo {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub kinds: Vec<String>,
    pub file: String,
}

/// Judges objects into a spool and counters.
pub struct Auditor {
    set: Arc<PolicySet>,
    spool: Spool,
    totals: Totals,
    issues: Vec<Issue>,
    keep_passing: bool,
    started: Instant,
    started_at: Timestamp,
    judged: u64,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("judged", &self.judged)
            .finish()
    }
}

impl Auditor {
    /// `namespaces` partition the spool (all that are known up front; others still work).
    /// `keep_passing` spools objects without findings too (JUnit lists passing cases).
    pub fn new(set: Arc<PolicySet>, namespaces: Vec<String>, keep_passing: bool) -> Auditor {
        Auditor {
            set,
            spool: Spool::new(namespaces),
            totals: Totals::default(),
            issues: Vec::new(),
            keep_passing,
            started: Instant::now(),
            started_at: Timestamp::now(),
            judged: 0,
        }
    }

    pub fn set(&self) -> &Arc<PolicySet> {
        &self.set
    }

    /// Judges one object.
    pub fn judge(&mut self, object: Value, origin: &Origin) -> Result<(), AuditError> {
        self.judged += 1;
        let uid = format!("audit-{:08}", self.judged);
        match judge_object(&self.set, object, origin, uid) {
            Ok(record) => {
                self.totals.record(&record);
                if self.keep_passing || !record.findings.is_empty() {
                    self.spool.push(&record)?;
                }
            }
            Err(e) => {
                self.totals.invalid += 1;
                let source = origin.file.as_ref().map_or_else(
                    || "object".to_string(),
                    |f| format!("{f}:{}", origin.line.unwrap_or(1)),
                );
                self.issue(source, format!("not a Kubernetes object: {e}"));
            }
        }
        Ok(())
    }

    /// A file or document that could not be read or parsed: an error finding at its file and
    /// line, which every report format shows in place, and an incomplete audit (exit 2).
    pub fn unreadable(
        &mut self,
        file: String,
        line: usize,
        message: String,
    ) -> Result<(), AuditError> {
        let record = ObjectRecord {
            api_version: String::new(),
            kind: "File".to_string(),
            namespace: None,
            name: file.clone(),
            uid: None,
            file: Some(file),
            line: Some(line),
            environment: Environment::Production,
            evaluated: Vec::new(),
            skipped: None,
            findings: vec![Finding {
                policy: UNREADABLE_POLICY.to_string(),
                action: Label::Error,
                rule: "parse".to_string(),
                severity: Severity::High,
                category: None,
                message,
                path: None,
            }],
        };
        self.totals.record_unreadable(&record);
        self.spool.push(&record)?;
        Ok(())
    }

    /// Judges a page; the page is dropped when this returns.
    pub fn judge_page(&mut self, page: Vec<(Value, Origin)>) -> Result<(), AuditError> {
        for (object, origin) in page {
            self.judge(object, &origin)?;
        }
        Ok(())
    }

    pub fn issue(&mut self, source: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue {
            source: source.into(),
            message: message.into(),
        });
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    pub fn finish(self, source: SourceKind) -> AuditRun {
        let policies = self
            .set
            .policies
            .iter()
            .map(|p| PolicyInfo {
                id: p.meta.id.clone(),
                title: p.meta.title.clone(),
                description: p.meta.description.clone(),
                severity: p.meta.severity,
                category: p.meta.category.clone(),
                kinds: p.meta.kinds.clone(),
                file: p.file.clone(),
            })
            .collect();
        AuditRun {
            source,
            policies,
            totals: self.totals,
            spool: self.spool,
            issues: self.issues,
            started_at: self.started_at,
            duration: self.started.elapsed(),
            baseline: None,
        }
    }
}

/// A finished audit: counters in memory, records in the spool.
#[derive(Debug)]
pub struct AuditRun {
    pub source: SourceKind,
    pub policies: Vec<PolicyInfo>,
    pub totals: Totals,
    pub spool: Spool,
    pub issues: Vec<Issue>,
    pub started_at: Timestamp,
    pub duration: Duration,
    /// The comparison with `--baseline`, when one was given.
    pub baseline: Option<crate::audit::baseline::Comparison>,
}

impl AuditRun {
    /// Whether every part of the audit could be done (every file parsed too).
    pub fn complete(&self) -> bool {
        self.issues.is_empty() && self.totals.unreadable == 0
    }

    pub fn policy(&self, id: &str) -> Option<&PolicyInfo> {
        self.policies.iter().find(|p| p.id == id)
    }

    /// Objects judged per second.
    pub fn rate(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.totals.objects as f64 / secs
        } else {
            0.0
        }
    }
}
