//! YAML policy cases: an object (or AdmissionReview), its environment and operation, and the
//! expected outcome, judged through the same decision path as the webhook.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;

use crate::admission::decision::{judge, Decision};
use crate::admission::review::{ManifestRequest, Review};
use crate::config::{Action, Config, Environment};
use crate::policy::eval::Wants;
use crate::policy::set::PolicySet;
use crate::testing::{Outcome, TestResult};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// A `regate.yaml` (relative to the case file) the cases are judged under, for policies
    /// that do nothing until configured; the runner's own config otherwise.
    #[serde(default)]
    pub config: Option<PathBuf>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub environment: Option<Environment>,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub object_file: Option<PathBuf>,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub review: Option<Value>,
    #[serde(default)]
    pub review_file: Option<PathBuf>,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub allowed: bool,
    #[serde(default)]
    pub deny: Option<Vec<String>>,
    #[serde(default)]
    pub warn: Option<Vec<String>>,
    #[serde(default)]
    pub messages: Vec<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default)]
    pub patched: Option<Value>,
    #[serde(default)]
    pub patch: Option<bool>,
}

/// Builds (and caches) one policy set per environment, each forcing that environment.
pub trait SetForEnvironment {
    fn set_for(&mut self, env: Environment) -> Result<&PolicySet, String>;
    /// The same policies under another configuration (a case file's `config:`).
    fn with_config(&self, config: Config) -> Box<dyn SetForEnvironment>;
}

/// Runs every case of one file.
pub fn run_file(path: &Path, sets: &mut dyn SetForEnvironment) -> Vec<TestResult> {
    let file = path.display().to_string();
    let fail = |line: usize, name: &str, outcome: Outcome| TestResult {
        file: file.clone(),
        line,
        name: name.to_string(),
        outcome,
        output: Vec::new(),
        explanation: String::new(),
        duration: std::time::Duration::ZERO,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![fail(1, "read", Outcome::Error(e.to_string()))],
    };
    if let Err(e) = crate::yaml_depth::check(&text) {
        return vec![fail(e.line, "parse", Outcome::Error(e.reason()))];
    }
    let parsed: CaseFile = match serde_yaml::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            let line = e.location().map(|l| l.line()).unwrap_or(1);
            return vec![fail(line, "parse", Outcome::Error(e.to_string()))];
        }
    };
    let lines = case_lines(&text);
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(config) = &parsed.config {
        return match Config::load(&base.join(config)) {
            Ok(config) => {
                let mut own = sets.with_config(config);
                run_cases(&file, &parsed, &lines, base, own.as_mut())
            }
            Err(e) => {
                let line = text
                    .lines()
                    .position(|l| l.starts_with("config:"))
                    .map_or(1, |i| i + 1);
                vec![fail(line, "config", Outcome::Error(e.to_string()))]
            }
        };
    }
    run_cases(&file, &parsed, &lines, base, sets)
}

fn run_cases(
    file: &str,
    parsed: &CaseFile,
    lines: &[usize],
    base: &Path,
    sets: &mut dyn SetForEnvironment,
) -> Vec<TestResult> {
    parsed
        .cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let line = lines.get(i).copied().unwrap_or(1);
            let started = Instant::now();
            let (outcome, output, explanation) = run_case(case, base, sets);
            TestResult {
                file: file.to_string(),
                line,
                name: case.name.clone(),
                outcome,
                output,
                explanation,
                duration: started.elapsed(),
            }
        })
        .collect()
}

/// Line of each `- name:` entry under `cases:`, in order.
fn case_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t = l.trim_start();
            t.starts_with("- name:")
        })
        .map(|(i, _)| i + 1)
        .collect()
}

fn read_json_or_yaml(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    crate::yaml_depth::check(&text)
        .map_err(|e| format!("{}:{}: {}", path.display(), e.line, e.reason()))?;
    // A case may hold a Secret; the parser's message quotes the scalar it could not use.
    serde_yaml::from_str(&text).map_err(|e| {
        format!(
            "{}: {}",
            path.display(),
            crate::secrets::without_quoted_values(&e.to_string())
        )
    })
}

/// The case's outcome, what the policies printed (scrubbed of Secret values by `judge`), and for
/// a failing case the explanation `eval --explain` gives of its decision (the prints of the
/// policies it explains are in it, so they are left out of the first list).
fn run_case(
    case: &Case,
    base: &Path,
    sets: &mut dyn SetForEnvironment,
) -> (Outcome, Vec<String>, String) {
    let (decision, object) = match judge_case(case, base, sets) {
        Ok(judged) => judged,
        Err(e) => return (Outcome::Error(e), Vec::new(), String::new()),
    };
    let outcome = check(&case.expect, &decision, object.as_ref());
    let explanation = match (&outcome, sets.set_for(environment(case))) {
        (Outcome::Fail(_), Ok(set)) => {
            let object = object.unwrap_or(Value::Null);
            let heading = format!(
                "{} {}",
                object["kind"].as_str().unwrap_or("object"),
                object["metadata"]["name"].as_str().unwrap_or("")
            );
            crate::admission::explain::explain(set, &decision, &heading, &object)
        }
        _ => String::new(),
    };
    let explained = |policy: &str| {
        !explanation.is_empty()
            && (decision.violations.iter().any(|v| v.policy == policy)
                || decision.warn_results.iter().any(|w| w.policy == policy)
                || decision.failures.iter().any(|f| f.policy == policy))
    };
    let output = decision
        .prints
        .iter()
        .filter(|(policy, _)| !explained(policy))
        .map(|(policy, line)| format!("[{policy}] {line}"))
        .collect();
    (outcome, output, explanation)
}

fn environment(case: &Case) -> Environment {
    case.environment.unwrap_or(Environment::Production)
}

fn judge_case(
    case: &Case,
    base: &Path,
    sets: &mut dyn SetForEnvironment,
) -> Result<(Decision, Option<Value>), String> {
    let env = environment(case);
    // The object as the case wrote it: `patched` is compared against it with the patch applied
    // (the review adds metadata.namespace as the apiserver would, which the case need not repeat).
    let mut written = None;
    let review = if let Some(review) = &case.review {
        Review::from_value(review.clone()).map_err(|e| e.to_string())?
    } else if let Some(file) = &case.review_file {
        Review::from_value(read_json_or_yaml(&base.join(file))?).map_err(|e| e.to_string())?
    } else {
        let object = match (&case.object, &case.object_file) {
            (Some(o), _) => o.clone(),
            (None, Some(f)) => {
                let v = read_json_or_yaml(&base.join(f))?;
                // A fixture AdmissionReview given as objectFile: take its object.
                if v.get("kind").and_then(Value::as_str) == Some("AdmissionReview") {
                    v.pointer("/request/object").cloned().unwrap_or(Value::Null)
                } else {
                    v
                }
            }
            (None, None) => {
                return Err("case has none of object, objectFile, review, reviewFile".to_string())
            }
        };
        written = Some(object.clone());
        let opts = ManifestRequest {
            namespace: case.namespace.clone(),
            operation: case
                .operation
                .clone()
                .unwrap_or_else(|| "CREATE".to_string())
                .to_ascii_uppercase(),
            old_object: case.old_object.clone(),
            sub_resource: case.sub_resource.clone(),
            uid: "test-case".to_string(),
            ..ManifestRequest::default()
        };
        Review::from_manifest(object, &opts).map_err(|e| e.to_string())?
    };
    let object = written.or_else(|| review.object().cloned());
    let set = sets.set_for(env)?;
    Ok((judge(set, &review, Wants::ALL), object))
}

fn ids(decision_ids: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = decision_ids.collect();
    v.sort();
    v.dedup();
    v
}

fn check(expect: &Expect, decision: &Decision, object: Option<&Value>) -> Outcome {
    let mut problems = Vec::new();
    if decision.allowed != expect.allowed {
        problems.push(format!(
            "expected allowed={}, got allowed={} ({})",
            expect.allowed,
            decision.allowed,
            summary(decision)
        ));
    }
    if let Some(want) = &expect.deny {
        let got = ids(decision
            .violations
            .iter()
            .filter(|v| v.action == Action::Deny)
            .map(|v| v.policy.clone()));
        let mut want = want.clone();
        want.sort();
        if got != want {
            problems.push(format!("expected deny {want:?}, got {got:?}"));
        }
    }
    let warnings = decision.warnings();
    if let Some(want) = &expect.warn {
        let got = ids(warnings.iter().filter_map(|w| {
            w.strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .map(|(id, _)| id.to_string())
        }));
        let mut want = want.clone();
        want.sort();
        if got != want {
            problems.push(format!("expected warn {want:?}, got {got:?}"));
        }
    }
    for fragment in &expect.messages {
        if !decision
            .violations
            .iter()
            .any(|v| v.message.contains(fragment.as_str()))
        {
            let got: Vec<&str> = decision
                .violations
                .iter()
                .map(|v| v.message.as_str())
                .collect();
            problems.push(format!(
                "no violation message contains {fragment:?}; messages: {got:?}"
            ));
        }
    }
    for fragment in &expect.warnings {
        if !warnings.iter().any(|w| w.contains(fragment.as_str())) {
            problems.push(format!(
                "no warning contains {fragment:?}; warnings: {warnings:?}"
            ));
        }
    }
    if expect.patch == Some(false) && decision.patch.is_some() {
        problems.push(format!(
            "expected no patch, got {}",
            serde_json::to_string(&decision.patch).unwrap_or_default()
        ));
    }
    if expect.patch == Some(true) && decision.patch.is_none() {
        problems.push("expected a patch, got none".to_string());
    }
    if let Some(want) = &expect.patched {
        match (object, &decision.patch) {
            (Some(object), patch) => {
                let mut patched = object.clone();
                if let Some(p) = patch {
                    if let Err(e) = json_patch::patch(&mut patched, p) {
                        problems.push(format!("the patch does not apply: {e}"));
                    }
                }
                if &patched != want {
                    problems.push(format!(
                        "patched object differs: {}",
                        first_difference(want, &patched)
                    ));
                }
            }
            (None, _) => problems
                .push("expected a patched object, but the request has no object".to_string()),
        }
    }
    if problems.is_empty() {
        Outcome::Pass
    } else {
        Outcome::Fail(problems.join("; "))
    }
}

fn summary(decision: &Decision) -> String {
    let mut parts: Vec<String> = decision
        .violations
        .iter()
        .map(|v| format!("{} {}: {}", v.action, v.policy, v.message))
        .collect();
    parts.extend(
        decision
            .failures
            .iter()
            .map(|f| format!("error {}: {}", f.policy, f.describe())),
    );
    if parts.is_empty() {
        "no violations".to_string()
    } else {
        parts.join("; ")
    }
}

/// The first path at which two JSON values differ, with both sides.
pub fn first_difference(want: &Value, got: &Value) -> String {
    fn walk(path: &str, a: &Value, b: &Value) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: BTreeMap<&String, ()> =
                    x.keys().chain(y.keys()).map(|k| (k, ())).collect();
                for k in keys.keys() {
                    let p = format!("{path}/{k}");
                    match (x.get(*k), y.get(*k)) {
                        (Some(av), Some(bv)) => {
                            if let Some(d) = walk(&p, av, bv) {
                                return Some(d);
                            }
                        }
                        (Some(av), None) => return Some(format!("{p}: expected {av}, missing")),
                        (None, Some(bv)) => return Some(format!("{p}: unexpected {bv}")),
                        (None, None) => {}
                    }
                }
                None
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (av, bv))| walk(&format!("{path}/{i}"), av, bv)),
            _ if a == b => None,
            _ => Some(format!(
                "{}: expected {a}, got {b}",
                if path.is_empty() { "/" } else { path }
            )),
        }
    }
    walk("", want, got).unwrap_or_else(|| "equal".to_string())
}
