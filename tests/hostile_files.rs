//! Files a careless author or a hostile one hands regate: limits that make no sense in
//! `regate.yaml`, and YAML or JSON nested thousands of levels deep, through every command that
//! reads them. Each is refused with the file, the line and the key, exit code 2, and no panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

fn regate(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(dir)
        .env_remove("REGATE_POLICIES")
        .env_remove("REGATE_CONFIG")
        .env_remove("REGATE_INCLUDE_DEFAULTS")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `regate serve --config FILE`, which must exit on its own: killed (and failed) if it is still
/// running after a minute, since a server that accepted the config would never return.
fn serve(dir: &Path, config: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(dir)
        .env_remove("REGATE_POLICIES")
        .env_remove("REGATE_INCLUDE_DEFAULTS")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--config",
        ])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (out.status.code(), stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!("serve accepted the config: {}", stderr(&out));
}

/// Deeply nested flow and block YAML, and deep JSON.
fn deep_texts() -> Vec<(&'static str, String)> {
    let block: String = (0..1_000)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i + 1)))
        .collect();
    vec![
        (
            "flow.yaml",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata:\n  x: {}1{}\n",
                "[".repeat(60_000),
                "]".repeat(60_000)
            ),
        ),
        (
            "block.yaml",
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\ndata:\n{block}"),
        ),
        (
            "deep.json",
            format!(
                "{{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"data\": {}{}}}\n",
                "{\"a\": ".repeat(60_000),
                "1".to_string() + &"}".repeat(60_000)
            ),
        ),
    ]
}

#[test]
fn senseless_limits_are_refused_by_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "limits:\n  headerReadTimeoutMs: 0\n",
            2,
            "limits.headerReadTimeoutMs",
        ),
        (
            "mode: enforce\nlimits:\n  evaluationTimeoutMs: 0\n",
            3,
            "limits.evaluationTimeoutMs",
        ),
        ("limits: {maxBodyBytes: 0}\n", 1, "limits.maxBodyBytes"),
        ("limits:\n  maxInFlight: 0\n", 2, "limits.maxInFlight"),
        (
            "audit:\n  interval: 99999999999999999999d\n",
            2,
            "audit.interval",
        ),
        (
            "audit:\n  interval: 18446744073709551615d\n",
            2,
            "audit.interval",
        ),
    ];
    for (i, (text, line, key)) in cases.iter().enumerate() {
        let config = dir.path().join(format!("regate-{i}.yaml"));
        std::fs::write(&config, text).unwrap();
        let location = format!("{}:{line}:", config.display());

        let out = regate(dir.path(), &["check", "--config", config.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(&location), "{text}: {err}");
        assert!(err.contains(key), "{text}: {err}");
        assert!(!err.contains("panicked"), "{err}");

        let (code, err) = serve(dir.path(), &config);
        assert_eq!(code, Some(2), "{text}: {err}");
        assert!(
            err.contains(&location) && err.contains(key),
            "{text}: {err}"
        );
    }
}

#[test]
fn deep_manifests_are_refused_by_eval_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in deep_texts() {
        std::fs::write(dir.path().join(name), text).unwrap();
        let out = regate(dir.path(), &["eval", "-f", name]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{name}: {stdout}{}",
            stderr(&out)
        );
        assert!(
            stdout.contains(&format!("INVALID  {name}:"))
                && stdout.contains("nested deeper than 128 levels"),
            "{name}: {stdout}"
        );
        let out = regate(dir.path(), &["audit", "-f", name, "-o", "json"]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("nested deeper than 128 levels"));
    }
}

#[test]
fn deep_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("regate.yaml");
    std::fs::write(
        &config,
        format!(
            "mode: enforce\npolicies:\n  x:\n    parameters:\n      a: {}1{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        ),
    )
    .unwrap();
    let out = regate(dir.path(), &["check", "--config", config.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:5:", config.display()))
            && err.contains("nested deeper than 128 levels"),
        "{err}"
    );
}

/// YAML test cases, Gatekeeper suites and policy directories read the same way.
#[test]
fn deep_test_cases_suites_and_policies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let flow = |prefix: &str| format!("{prefix}{}1{}\n", "[".repeat(60_000), "]".repeat(60_000));

    let cases = dir.path().join("cases");
    std::fs::create_dir_all(&cases).unwrap();
    std::fs::write(
        cases.join("deep.yaml"),
        flow("cases:\n- name: x\n  object: "),
    )
    .unwrap();
    let out = regate(dir.path(), &["test", "cases"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("nested deeper than 128 levels"),
        "{stdout}{}",
        stderr(&out)
    );

    let suite = dir.path().join("suite");
    std::fs::create_dir_all(&suite).unwrap();
    std::fs::write(
        suite.join("suite.yaml"),
        flow("kind: Suite\napiVersion: test.gatekeeper.sh/v1alpha1\ntests: "),
    )
    .unwrap();
    let out = regate(dir.path(), &["verify", "suite"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("nested deeper than 128 levels"),
        "{stdout}{}",
        stderr(&out)
    );

    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("template.yaml"),
        flow("apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nspec: "),
    )
    .unwrap();
    let out = regate(dir.path(), &["check", "policies"]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a policy that does not load: {err}"
    );
    assert!(err.contains("policies/template.yaml:3:"), "{err}");
    assert!(err.contains("nested deeper than 128 levels"), "{err}");
}

/// One file that does not parse does not hide the verdicts on the others: it is reported in
/// its place with file and line, the rest are judged, and eval exits 2 at the end.
#[test]
fn eval_judges_the_rest_when_one_file_does_not_parse() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::copy(
        repo().join("fixtures/admission/deployment-secure.json"),
        manifests.join("a-secure.json"),
    )
    .unwrap();
    std::fs::write(
        manifests.join("b-broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
    )
    .unwrap();
    std::fs::write(
        manifests.join("c-fine.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine, namespace: shop}\n",
    )
    .unwrap();
    let out = regate(dir.path(), &["eval", "-f", "manifests"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", stderr(&out));
    let lines: Vec<&str> = stdout.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle}: {stdout}"))
    };
    // In file order: the broken file in its place, between the two it does not hide.
    assert!(at("a-secure.json") < at("b-broken.yaml") && at("b-broken.yaml") < at("c-fine.yaml"));
    assert!(lines[at("b-broken.yaml")].starts_with("INVALID  manifests/b-broken.yaml:"));
    assert!(lines[at("c-fine.yaml")].starts_with("ALLOWED"), "{stdout}");

    let out = regate(dir.path(), &["eval", "-o", "json", "-f", "manifests"]);
    assert_eq!(out.status.code(), Some(2));
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[1]["source"]
        .as_str()
        .unwrap()
        .starts_with("manifests/b-broken.yaml:"));
    assert!(results[1]["error"]
        .as_str()
        .unwrap()
        .contains("invalid YAML"));
    assert_eq!(results[2]["allowed"], true);
}
