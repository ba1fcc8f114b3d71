//! `audit --baseline FILE`: drift since an earlier `regate audit -o json` report. Findings are
//! matched by policy, object identity (kind, namespace, name) and field path, never by message
//! text, so a reworded message is not a new finding. Each finding of this run is `new` or
//! `unchanged`; the baseline's findings that no longer occur are `resolved`.
//!
//! Matching is by set: a key is unchanged if the baseline has it at all. Memory holds the
//! baseline's keys and the resolved findings, no more; the file's size is capped.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audit::record::{Finding, Label, ObjectRecord};
use crate::audit::spool::Spool;
use crate::policy::metadata::Severity;

/// The largest baseline report read (a report of a million findings is about 400 MiB).
pub const MAX_BASELINE_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("--baseline {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--baseline {path}: larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("--baseline {path}: not a `regate audit -o json` report: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "--baseline {path}: kind is {kind:?}; expected an AuditReport from `regate audit -o json`"
    )]
    Kind { path: PathBuf, kind: String },
}

/// Whether a finding was in the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    New,
    Unchanged,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::New => "new",
            State::Unchanged => "unchanged",
            State::Resolved => "resolved",
        }
    }

    /// SARIF's `baselineState`.
    pub fn sarif(self) -> &'static str {
        match self {
            State::New => "new",
            State::Unchanged => "unchanged",
            State::Resolved => "absent",
        }
    }
}

/// What identifies a finding across runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    policy: String,
    kind: String,
    namespace: String,
    name: String,
    path: String,
}

impl Key {
    fn of(r: &ObjectRecord, f: &Finding) -> Key {
        Key {
            policy: f.policy.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone().unwrap_or_default(),
            name: r.name.clone(),
            path: f.path.clone().unwrap_or_default(),
        }
    }
}

/// One finding of the baseline report, as `-o json` wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaselineFinding {
    #[serde(default)]
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub policy: String,
    pub action: Label,
    pub severity: Severity,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl BaselineFinding {
    fn key(&self) -> Key {
        Key {
            policy: self.policy.clone(),
            kind: self.kind.clone(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: self.name.clone(),
            path: self.path.clone().unwrap_or_default(),
        }
    }

    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }
}

#[derive(Deserialize)]
struct ReportFile {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    findings: Vec<BaselineFinding>,
}

/// Counts per state, and per severity within each.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BaselineSummary {
    pub new: u64,
    pub unchanged: u64,
    pub resolved: u64,
    /// state → severity → findings.
    pub by_severity: BTreeMap<State, BTreeMap<Severity, u64>>,
    /// New findings per label, for `--fail-on new` / `new-warn`.
    #[serde(skip)]
    pub new_by_label: BTreeMap<Label, u64>,
}

/// A baseline compared with this run.
#[derive(Debug)]
pub struct Comparison {
    pub file: String,
    keys: HashSet<Key>,
    pub summary: BaselineSummary,
    /// Baseline findings that this run no longer has.
    pub resolved: Vec<BaselineFinding>,
}

impl Comparison {
    /// The resolved findings of one namespace ("" → cluster-scoped), as the reports group them.
    pub fn resolved_in(&self, namespace: &str) -> &[BaselineFinding] {
        // `resolved` is sorted by namespace first, and None sorts before every Some as "" does.
        let ns = |b: &BaselineFinding| b.namespace.as_deref().unwrap_or("") < namespace;
        let start = self.resolved.partition_point(ns);
        let end = self
            .resolved
            .partition_point(|b| b.namespace.as_deref().unwrap_or("") <= namespace);
        self.resolved.get(start..end).unwrap_or(&[])
    }

    /// The namespaces of the resolved findings ("" for cluster-scoped ones).
    pub fn resolved_namespaces(&self) -> impl Iterator<Item = String> + '_ {
        self.resolved
            .iter()
            .map(|b| b.namespace.clone().unwrap_or_default())
    }

    /// The state of one finding of this run.
    pub fn state(&self, r: &ObjectRecord, f: &Finding) -> State {
        if self.keys.contains(&Key::of(r, f)) {
            State::Unchanged
        } else {
            State::New
        }
    }
}

/// Reads a baseline report.
pub fn load(path: &Path) -> Result<Vec<BaselineFinding>, BaselineError> {
    let read = |source| BaselineError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let size = file.metadata().map_err(read)?.len();
    if size > MAX_BASELINE_BYTES {
        return Err(BaselineError::TooLarge {
            path: path.to_path_buf(),
            max: MAX_BASELINE_BYTES,
        });
    }
    let mut text = Vec::with_capacity(size as usize);
    file.take(MAX_BASELINE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(read)?;
    let report: ReportFile =
        serde_json::from_slice(&text).map_err(|source| BaselineError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
    if report.kind != "AuditReport" {
        return Err(BaselineError::Kind {
            path: path.to_path_buf(),
            kind: report.kind,
        });
    }
    Ok(report.findings)
}

/// Compares the spooled findings of this run with the baseline's (one pass over the spool).
pub fn compare(
    file: String,
    baseline: Vec<BaselineFinding>,
    spool: &mut Spool,
) -> std::io::Result<Comparison> {
    let keys: HashSet<Key> = baseline.iter().map(BaselineFinding::key).collect();
    let mut seen: HashSet<Key> = HashSet::new();
    let mut summary = BaselineSummary::default();
    spool.for_each_partition::<std::io::Error>(|records| {
        for r in &records {
            for f in &r.findings {
                let key = Key::of(r, f);
                let state = if keys.contains(&key) {
                    summary.unchanged += 1;
                    State::Unchanged
                } else {
                    summary.new += 1;
                    *summary.new_by_label.entry(f.action).or_default() += 1;
                    State::New
                };
                *summary
                    .by_severity
                    .entry(state)
                    .or_default()
                    .entry(f.severity)
                    .or_default() += 1;
                if state == State::Unchanged {
                    seen.insert(key);
                }
            }
        }
        Ok(())
    })?;
    let mut resolved: Vec<BaselineFinding> = baseline
        .into_iter()
        .filter(|b| !seen.contains(&b.key()))
        .collect();
    resolved.sort_by(|a, b| {
        (&a.namespace, &a.kind, &a.name, &a.policy, &a.path).cmp(&(
            &b.namespace,
            &b.kind,
            &b.name,
            &b.policy,
            &b.path,
        ))
    });
    for b in &resolved {
        summary.resolved += 1;
        *summary
            .by_severity
            .entry(State::Resolved)
            .or_default()
            .entry(b.severity)
            .or_default() += 1;
    }
    Ok(Comparison {
        file,
        keys,
        summary,
        resolved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(namespace: Option<&str>, name: &str) -> BaselineFinding {
        BaselineFinding {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
            policy: "p".into(),
            action: Label::Deny,
            severity: Severity::Low,
            message: String::new(),
            path: None,
        }
    }

    #[test]
    fn resolved_findings_are_grouped_by_namespace() {
        let mut resolved = vec![
            finding(Some("b"), "b1"),
            finding(None, "cluster"),
            finding(Some("a"), "a1"),
            finding(Some("b"), "b2"),
        ];
        resolved.sort_by(|x, y| (&x.namespace, &x.name).cmp(&(&y.namespace, &y.name)));
        let c = Comparison {
            file: "f".into(),
            keys: HashSet::new(),
            summary: BaselineSummary::default(),
            resolved,
        };
        let names =
            |ns: &str| -> Vec<&str> { c.resolved_in(ns).iter().map(|b| b.name.as_str()).collect() };
        assert_eq!(names(""), ["cluster"]);
        assert_eq!(names("a"), ["a1"]);
        assert_eq!(names("b"), ["b1", "b2"]);
        assert!(names("c").is_empty());
        assert!(names("0").is_empty());
        let mut namespaces: Vec<String> = c.resolved_namespaces().collect();
        namespaces.dedup();
        assert_eq!(namespaces, ["", "a", "b"]);
    }
}
