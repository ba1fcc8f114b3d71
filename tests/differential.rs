//! Differential test: every evaluation backend gives the interpreter's answer.
//!
//! The bytecode VM is used only where it is proven equal to the interpreter. This harness is
//! that proof for the default policies: it judges every seed review (the fixtures, the YAML
//! cases' objects, the Pod Security Admission and Kyverno corpora, the real apiserver payloads)
//! and thousands of reviews generated from them, on every strategy, and fails on the first
//! difference in verdict, messages, warnings, failures or patch.
//!
//! Generated reviews change the seeds where the policies look: the field names and string
//! literals that appear in the policies' own Rego (`runAsNonRoot`, `CORS_ALLOWED_ORIGINS`, …)
//! are added, removed or given values of every JSON type (null, numbers, empty and odd strings,
//! lists and maps), and the namespace moves between environments. The generator is proptest's,
//! with a fixed seed so that CI judges the same reviews on every run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::generate::{by_kind, cases, files, first_disagreement, review_of, seeds, Words};
use common::repo;

use std::path::Path;

use std::sync::Arc;

use regate::admission::decision::{judge, Decision};
use regate::admission::review::Review;
use regate::config::Config;
use regate::environment::NamespaceLabels;
use regate::policy::bytecode::Strategy as Backend;
use regate::policy::eval::Wants;
use regate::policy::set::PolicySet;
use regate::policy::source;

const CONFIG: &str = "environments:\n  default: production\n  namespaces: { prod: production, staging: staging, dev: development }\n";
const NAMESPACES: [&str; 4] = ["dev", "staging", "prod", "elsewhere"];

/// Field names and string literals the default policies read.
fn vocabulary() -> Words {
    let mut paths = Vec::new();
    files(&repo().join("policies"), &["rego"], &mut paths);
    let texts: Vec<String> = paths
        .iter()
        .filter(|p| !p.to_string_lossy().ends_with("_test.rego"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    Words::of_rego(texts.iter().map(String::as_str))
}

/// What a decision says, without timings.
fn summary(d: &Decision) -> String {
    let failures: Vec<String> = d
        .failures
        .iter()
        .map(|f| format!("{}:{:?}", f.policy, f.reason))
        .collect();
    format!(
        "allowed={} violations={:?} warn={:?} failures={:?} patch={}",
        d.allowed,
        d.violations,
        d.warn_results,
        failures,
        d.patch
            .as_ref()
            .map(|p| serde_json::to_string(p).unwrap_or_default())
            .unwrap_or_default()
    )
}

struct Backends {
    reference: PolicySet,
    others: Vec<(&'static str, PolicySet)>,
}

impl Backends {
    fn new() -> Backends {
        let config = Config::parse(CONFIG, Path::new("regate.yaml")).unwrap();
        let (sources, _) = source::resolve(&repo().join("policies"), false).unwrap();
        let set =
            regate::catalog::build(&sources, Arc::new(config), NamespaceLabels::default()).unwrap();
        Backends {
            reference: set.clone().with_strategy(Backend::CloneEach),
            others: vec![
                (
                    "interpreter",
                    set.clone().with_strategy(Backend::Interpreter),
                ),
                ("compiled", set.clone().with_strategy(Backend::Compiled)),
                ("grouped", set.with_strategy(Backend::Grouped)),
            ],
        }
    }

    /// The first backend that disagrees with a fresh interpreter, with both answers.
    fn disagreement(&self, review: &Review) -> Option<String> {
        let want = summary(&judge(&self.reference, review, Wants::ALL));
        for (label, set) in &self.others {
            let got = summary(&judge(set, review, Wants::ALL));
            if got != want {
                return Some(format!("{label}:\n  got  {got}\n  want {want}"));
            }
        }
        None
    }
}

#[test]
fn every_backend_agrees_on_the_seeds() {
    let backends = Backends::new();
    let seeds = seeds();
    assert!(seeds.len() >= 100, "only {} seeds", seeds.len());
    let mut judged = 0;
    let mut failures = Vec::new();
    for (i, object) in seeds.iter().enumerate() {
        // Each seed in two environments, rotating, so every environment sees every kind.
        for ns in [NAMESPACES[i % 4], NAMESPACES[(i + 1) % 4]] {
            let Some(review) = review_of(object.clone(), ns, i % 3 == 0) else {
                continue;
            };
            judged += 1;
            if let Some(d) = backends.disagreement(&review) {
                failures.push(format!("seed {i} ({}) in {ns}: {d}", object["kind"]));
            }
        }
    }
    println!(
        "{} seeds, {judged} reviews judged on every backend",
        seeds.len()
    );
    assert!(
        failures.is_empty(),
        "{} disagreements, first: {}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn every_backend_agrees_on_generated_reviews() {
    let backends = Backends::new();
    let count = cases(3000, 500);
    let disagreement = first_disagreement(
        &by_kind(seeds()),
        &vocabulary(),
        &NAMESPACES,
        count,
        |review, _| backends.disagreement(review),
    );
    if let Some(d) = disagreement {
        panic!("backends disagree on a generated review: {d}");
    }
    println!("{count} generated reviews judged on every backend");
}
