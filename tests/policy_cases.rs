//! The repository's own policy tests through the same runner as `regate test`: every Rego unit
//! test in policies/, and one generated test per YAML case file in tests/policies/.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use regate::config::Config;
use regate::testing::{self, Outcome, Plan};
use rstest::rstest;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn report_failures(report: &testing::Report) -> Vec<String> {
    report
        .results
        .iter()
        .filter(|r| r.outcome != Outcome::Pass)
        .map(|r| format!("{}:{}: {}: {:?}", r.file, r.line, r.name, r.outcome))
        .collect()
}

#[test]
fn rego_unit_tests() {
    let plan = Plan {
        policy_dirs: vec![repo().join("policies")],
        case_paths: vec![],
        config: Config::default(),
        coverage: false,
    };
    let report = testing::run(&plan).unwrap();
    println!(
        "rego unit tests: {} passed, {} failed",
        report.passed(),
        report.failed()
    );
    assert!(
        report.passed() > 100,
        "the default policies have their unit tests"
    );
    assert_eq!(report_failures(&report), Vec::<String>::new());
}

#[rstest]
fn yaml_cases(#[files("tests/policies/*.yaml")] path: PathBuf) {
    let (sources, _) = regate::policy::source::resolve(&repo().join("policies"), false).unwrap();
    let mut sets = testing::EnvironmentSets::new(sources, Config::default());
    let report = testing::Report {
        results: testing::cases::run_file(&path, &mut sets),
        coverage: vec![],
    };
    assert!(!report.results.is_empty(), "{} holds cases", path.display());
    println!(
        "{}: {} passed, {} failed",
        path.display(),
        report.passed(),
        report.failed()
    );
    assert_eq!(report_failures(&report), Vec::<String>::new());
}

/// The runner reports failures with file and line, and counts them.
#[test]
fn failures_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("case.yaml");
    std::fs::write(
        &case,
        "cases:\n  - name: wrong on purpose\n    object: {apiVersion: v1, kind: ConfigMap, metadata: {name: c}, data: {DEBUG: \"true\"}}\n    expect:\n      allowed: true\n",
    )
    .unwrap();
    let plan = Plan {
        policy_dirs: vec![repo().join("policies")],
        case_paths: vec![case],
        config: Config::default(),
        coverage: false,
    };
    let report = testing::run(&plan).unwrap();
    let failed: Vec<_> = report.results.iter().filter(|r| !r.passed()).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].line, 2);
    match &failed[0].outcome {
        Outcome::Fail(why) => assert!(why.contains("configmap-production-flags"), "{why}"),
        other => panic!("{other:?}"),
    }
}
