//! What the audit keeps about one judged object: its identity, where it came from, and every
//! finding (violations whatever their action, warnings, failures), each labelled. Never the
//! object itself.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admission::decision::{judge, Decision};
use crate::admission::review::{ManifestRequest, Review, ReviewError};
use crate::config::{Action, Environment};
use crate::policy::eval::Wants;
use crate::policy::metadata::Severity;
use crate::policy::set::PolicySet;

/// How a finding is labelled: the effective action of a `deny` result (`deny`, `warn`, `audit`),
/// `warn` for results of a `warn` rule, `error` for a policy that could not be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Deny,
    Warn,
    Audit,
    Error,
}

impl Label {
    pub const ALL: [Label; 4] = [Label::Deny, Label::Warn, Label::Audit, Label::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Deny => "deny",
            Label::Warn => "warn",
            Label::Audit => "audit",
            Label::Error => "error",
        }
    }

    /// Higher is worse: deny, then error, then warn, then audit.
    pub fn rank(self) -> u8 {
        match self {
            Label::Deny => 3,
            Label::Error => 2,
            Label::Warn => 1,
            Label::Audit => 0,
        }
    }

    /// The PolicyReport result: `fail` for deny and audit, `warn`, or `error`.
    pub fn report_result(self) -> &'static str {
        match self {
            Label::Deny | Label::Audit => "fail",
            Label::Warn => "warn",
            Label::Error => "error",
        }
    }
}

impl From<Action> for Label {
    fn from(a: Action) -> Label {
        match a {
            Action::Deny => Label::Deny,
            Action::Warn => Label::Warn,
            Action::Audit => Label::Audit,
        }
    }
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One result about one object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub policy: String,
    /// The label: deny, warn, audit or error.
    pub action: Label,
    /// The Rego rule that produced it: `deny`, `warn`, or `evaluation` for failures.
    pub rule: String,
    pub severity: Severity,
    /// The policy's declared category, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One judged object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub environment: Environment,
    /// Policies that judged the object.
    #[serde(default)]
    pub evaluated: Vec<String>,
    /// Why nothing judged it (exempt namespace, no matching policy...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(default)]
    pub findings: Vec<Finding>,
}

impl ObjectRecord {
    /// The namespace, or "" for cluster-scoped objects.
    pub fn namespace_key(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    /// `Kind ns/name` (or `Kind name`).
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    /// `file:line` when the object came from a file.
    pub fn location(&self) -> Option<String> {
        self.file.as_ref().map(|f| match self.line {
            Some(l) => format!("{f}:{l}"),
            None => f.clone(),
        })
    }

    /// Each (policy, worst label of its findings) pair: one per policy that judged the object or
    /// produced a finding; `None` is a pass.
    pub fn pairs(&self) -> Vec<(&str, Option<Label>)> {
        let mut out: Vec<(&str, Option<Label>)> =
            self.evaluated.iter().map(|p| (p.as_str(), None)).collect();
        for f in &self.findings {
            match out.iter_mut().find(|(p, _)| *p == f.policy) {
                Some((_, worst)) => {
                    if worst.is_none_or(|w| f.action.rank() > w.rank()) {
                        *worst = Some(f.action);
                    }
                }
                None => out.push((f.policy.as_str(), Some(f.action))),
            }
        }
        out
    }
}

/// Where an object was read from.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub file: Option<String>,
    pub line: Option<usize>,
    /// The namespace for objects that name none (files), or the object's scope from discovery
    /// (cluster): `Some("")` forces cluster scope.
    pub default_namespace: Option<String>,
    /// Cluster scope known from discovery.
    pub cluster_scoped: Option<bool>,
}

/// Judges one object as an admission request (operation CREATE), on the one decision path.
pub fn judge_object(
    set: &PolicySet,
    object: Value,
    origin: &Origin,
    uid: String,
) -> Result<ObjectRecord, ReviewError> {
    let object_uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let opts = ManifestRequest {
        namespace: origin.default_namespace.clone().filter(|n| !n.is_empty()),
        operation: "CREATE".to_string(),
        uid,
        username: "regate-audit".to_string(),
        ..ManifestRequest::default()
    };
    let review = Review::from_manifest(object, &opts)?;
    // `judge` has scrubbed every message of the Secret values of the review (a file may hold an
    // AdmissionReview around the Secret) and of the inventory: see `crate::secrets`.
    let decision = judge(set, &review, Wants::VALIDATE);
    let namespace = match origin.cluster_scoped {
        Some(true) => None,
        _ => review.namespace().map(str::to_string),
    };
    let gvk = &review.request.kind;
    let api_version = if gvk.group.is_empty() {
        gvk.version.clone()
    } else {
        format!("{}/{}", gvk.group, gvk.version)
    };
    let record = ObjectRecord {
        api_version,
        kind: review.kind().to_string(),
        namespace,
        name: review.name().to_string(),
        uid: object_uid,
        file: origin.file.clone(),
        line: origin.line,
        environment: decision.environment,
        evaluated: decision.evaluated.clone(),
        skipped: decision.skipped.and_then(|s| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
        }),
        findings: findings(set, &decision),
    };
    Ok(record)
}

fn severity_of(set: &PolicySet, policy: &str) -> Severity {
    set.get(policy)
        .map(|p| p.meta.severity)
        .unwrap_or(Severity::Medium)
}

fn category_of(set: &PolicySet, policy: &str) -> Option<String> {
    set.get(policy).and_then(|p| p.meta.category.clone())
}

/// Every result of a decision, labelled.
pub fn findings(set: &PolicySet, decision: &Decision) -> Vec<Finding> {
    let mut out = Vec::with_capacity(decision.violations.len() + decision.warn_results.len());
    for v in &decision.violations {
        out.push(Finding {
            policy: v.policy.clone(),
            action: v.action.into(),
            rule: "deny".to_string(),
            severity: v.severity,
            category: category_of(set, &v.policy),
            message: v.message.clone(),
            path: v.path.clone(),
        });
    }
    for w in &decision.warn_results {
        out.push(Finding {
            policy: w.policy.clone(),
            action: Label::Warn,
            rule: "warn".to_string(),
            severity: severity_of(set, &w.policy),
            category: category_of(set, &w.policy),
            message: w.message.clone(),
            path: w.path.clone(),
        });
    }
    for f in &decision.failures {
        let message = f.describe();
        out.push(Finding {
            policy: f.policy.clone(),
            action: Label::Error,
            rule: "evaluation".to_string(),
            severity: severity_of(set, &f.policy),
            category: category_of(set, &f.policy),
            message,
            path: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_take_the_worst_label() {
        let f = |policy: &str, action| Finding {
            policy: policy.to_string(),
            action,
            rule: "deny".into(),
            severity: Severity::High,
            category: None,
            message: String::new(),
            path: None,
        };
        let record = ObjectRecord {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: None,
            name: "p".into(),
            uid: None,
            file: None,
            line: None,
            environment: Environment::Production,
            evaluated: vec!["a".into(), "b".into(), "c".into()],
            skipped: None,
            findings: vec![
                f("a", Label::Warn),
                f("a", Label::Deny),
                f("b", Label::Audit),
            ],
        };
        assert_eq!(
            record.pairs(),
            vec![
                ("a", Some(Label::Deny)),
                ("b", Some(Label::Audit)),
                ("c", None)
            ]
        );
    }
}
