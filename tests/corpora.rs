//! Agreement with independently written corpora: the Pod Security Admission fixtures and
//! Kyverno's CLI test verdicts, each judged by the matching default policy alone. Counts are
//! printed; every disagreement must be one that docs/policies.md explains.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use regate::admission::decision::{judge, Decision};
use regate::admission::review::{ManifestRequest, Review};
use regate::config::{Action, Config};
use regate::environment::NamespaceLabels;
use regate::policy::eval::Wants;
use regate::policy::set::PolicySet;
use regate::policy::source;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn default_set() -> PolicySet {
    let (sources, _) = source::resolve(&repo().join("policies"), false).unwrap();
    regate::catalog::build(
        &sources,
        Arc::new(Config::default()),
        NamespaceLabels::default(),
    )
    .unwrap()
}

fn judge_object(set: &PolicySet, object: Value) -> Decision {
    let opts = ManifestRequest {
        namespace: Some("corpus".to_string()),
        ..ManifestRequest::default()
    };
    let review = Review::from_manifest(object, &opts).unwrap();
    judge(set, &review, Wants::VALIDATE)
}

fn denied_by(decision: &Decision, policy: &str) -> Vec<String> {
    decision
        .violations
        .iter()
        .filter(|v| v.policy == policy && v.action == Action::Deny)
        .map(|v| v.message.clone())
        .collect()
}

fn read_objects(path: &Path) -> Vec<Value> {
    regate::manifest::read_file(path)
        .unwrap()
        .into_iter()
        .map(|m| m.object)
        .collect()
}

#[test]
fn pod_security_admission_restricted() {
    let Some(root) = common::corpus("pod-security-admission/restricted/v1.37") else {
        return;
    };
    let set = default_set();
    let checks: [(&str, &[&str]); 2] = [
        ("pod-run-as-non-root", &["runasnonroot", "runasuser"]),
        (
            "pod-no-privilege-escalation",
            &["allowprivilegeescalation", "capabilities_", "privileged"],
        ),
    ];
    for (policy, failing_checks) in checks {
        let (mut agree, mut total) = (0, 0);
        let mut disagreements = Vec::new();
        for folder in ["pass", "fail"] {
            let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(folder))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for file in files {
                let name = file.file_name().unwrap().to_string_lossy().to_string();
                let should_deny =
                    folder == "fail" && failing_checks.iter().any(|c| name.starts_with(c));
                for object in read_objects(&file) {
                    total += 1;
                    let denied = !denied_by(&judge_object(&set, object), policy).is_empty();
                    if denied == should_deny {
                        agree += 1;
                    } else {
                        disagreements
                            .push(format!("{folder}/{name}: expected denied={should_deny}"));
                    }
                }
            }
        }
        println!("pod-security-admission restricted/v1.37 with {policy}: {agree}/{total} agree");
        assert_eq!(disagreements, Vec::<String>::new(), "{policy}");
    }
}

#[derive(serde::Deserialize)]
struct KyvernoCase {
    policy: String,
    kind: String,
    name: String,
    expect: String,
    resource_file: String,
}

/// Kyverno's verdicts for three policies, each against the matching regate policy. A case may
/// differ only for the documented reasons: Kyverno's privilege-escalation rule does not require
/// dropping ALL capabilities (regate's does), and its read-only rule skips init containers.
#[test]
fn kyverno_cli_verdicts() {
    let Some(manifest) = common::corpus("kyverno-policies/manifest.jsonl") else {
        return;
    };
    let root = manifest.parent().unwrap().to_path_buf();
    let set = default_set();
    let pairs = [
        ("require-run-as-nonroot", "pod-run-as-non-root"),
        ("require-ro-rootfs", "pod-read-only-root-filesystem"),
        (
            "disallow-privilege-escalation",
            "pod-no-privilege-escalation",
        ),
    ];
    let text = std::fs::read_to_string(&manifest).unwrap();
    for (kyverno, ours) in pairs {
        let (mut agree, mut explained, mut total) = (0, 0, 0);
        let mut unexplained = Vec::new();
        for line in text.lines() {
            let case: KyvernoCase = serde_json::from_str(line).unwrap();
            if case.policy != kyverno {
                continue;
            }
            let objects = read_objects(&root.join(&case.resource_file));
            let object = objects
                .into_iter()
                .find(|o| o["kind"] == case.kind && o["metadata"]["name"] == case.name)
                .unwrap_or_else(|| {
                    panic!("{} {} not in {}", case.kind, case.name, case.resource_file)
                });
            total += 1;
            let messages = denied_by(&judge_object(&set, object), ours);
            let kyverno_fails = case.expect == "fail";
            if kyverno_fails != messages.is_empty() {
                agree += 1;
            } else if !kyverno_fails
                && ours == "pod-no-privilege-escalation"
                && messages
                    .iter()
                    .all(|m| m.contains("must drop ALL capabilities"))
            {
                explained += 1;
            } else {
                unexplained.push(format!(
                    "{} {}/{}: kyverno {}, regate {:?}",
                    case.resource_file, case.kind, case.name, case.expect, messages
                ));
            }
        }
        println!(
            "kyverno {kyverno} vs {ours}: {agree}/{total} agree, {explained} differ as documented (drop ALL), {} unexplained",
            unexplained.len()
        );
        assert!(total > 0, "{kyverno} has cases");
        assert_eq!(unexplained, Vec::<String>::new(), "{kyverno}");
    }
}
