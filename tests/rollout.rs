//! Safe rollout: `regate diff` on fixture sets with known changes (fixtures/diff), `audit
//! --baseline` round trips in every format, and shadow evaluation in `serve` over real TLS.
//! No Secret value (the canary in fixtures/diff/objects.yaml) appears in any output.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CANARY: &str = "canary-0a9f3e1d-do-not-print";

fn regate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(repo())
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const DIFF: [&str; 9] = [
    "diff",
    "--base",
    "fixtures/diff/base",
    "--base-config",
    "fixtures/diff/base.yaml",
    "--policies",
    "fixtures/diff/candidate",
    "--config",
    "fixtures/diff/candidate.yaml",
];

fn diff(extra: &[&str]) -> Output {
    let mut args: Vec<&str> = DIFF.to_vec();
    args.extend_from_slice(extra);
    let out = regate(&args);
    assert!(!text(&out).contains(CANARY), "canary in diff output");
    out
}

fn outcome(allowed: bool, denied: &[&str], warned: &[&str]) -> Value {
    json!({"allowed": allowed, "denied_by": denied, "warned_by": warned})
}

#[test]
fn diff_reports_exactly_the_known_changes() {
    let out = diff(&["-f", "fixtures/diff/objects.yaml", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = "fixtures/diff/objects.yaml";
    let expected = json!({
        "summary": {"objects": 9, "changed": 5, "newly_denied": 2, "newly_allowed": 2},
        "changes": [
            {"kind": "Deployment", "namespace": "prod-shop", "name": "web", "source": format!("{f}:1"),
             "environment": "production", "change": "newly_denied",
             "before": outcome(true, &[], &[]), "after": outcome(false, &["deployment-min-replicas"], &[])},
            {"kind": "Pod", "namespace": "prod-shop", "name": "debug", "source": format!("{f}:12"),
             "environment": "production", "change": "newly_allowed",
             "before": outcome(false, &["pod-no-latest-tag"], &[]), "after": outcome(true, &[], &["pod-no-latest-tag"])},
            {"kind": "ConfigMap", "namespace": "prod-shop", "name": "settings", "source": format!("{f}:19"),
             "environment": "production", "change": "newly_allowed",
             "before": outcome(false, &["configmap-owner-label"], &[]), "after": outcome(true, &[], &[])},
            {"kind": "ConfigMap", "namespace": "dev-shop", "name": "labelled", "source": format!("{f}:31"),
             "environment": "development", "change": "patch_changed",
             "before": outcome(true, &[], &[]), "after": outcome(true, &[], &[])},
            {"kind": "Service", "namespace": "dev-shop", "name": "edge", "source": format!("{f}:36"),
             "environment": "development", "change": "newly_denied",
             "before": outcome(true, &[], &[]), "after": outcome(false, &["service-no-nodeport"], &[])},
        ]
    });
    assert_eq!(
        report,
        expected,
        "{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
}

#[test]
fn diff_exit_codes_and_formats() {
    let with = |extra: &[&'static str]| {
        let mut v = vec!["-f", "fixtures/diff/objects.yaml"];
        v.extend_from_slice(extra);
        v
    };
    let never = diff(&with(&["--fail-on", "never"]));
    assert_eq!(never.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&never.stdout);
    assert!(
        stdout.contains("NEWLY DENIED       Deployment prod-shop/web  [production]"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("9 objects, 5 changed: 2 newly denied, 2 newly allowed\n"),
        "{stdout}"
    );

    let md = diff(&with(&["-o", "markdown"]));
    let md = String::from_utf8_lossy(&md.stdout).to_string();
    assert!(
        md.starts_with(
            "**regate diff**: 9 objects, 5 changed: 2 newly denied, 2 newly allowed.\n\n| Change |"
        ),
        "{md}"
    );
    assert!(md.contains("| newly denied | Service dev-shop/edge | development | allowed | denied by service-no-nodeport | fixtures/diff/objects.yaml:36 |"), "{md}");

    // The same set on both sides: nothing changes, exit 0 even with --fail-on changed.
    let same = regate(&[
        "diff",
        "--base",
        "fixtures/diff/base",
        "--base-config",
        "fixtures/diff/base.yaml",
        "--policies",
        "fixtures/diff/base",
        "--config",
        "fixtures/diff/base.yaml",
        "-f",
        "fixtures/diff/objects.yaml",
        "--fail-on",
        "changed",
        "-o",
        "json",
    ]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    let report: Value = serde_json::from_slice(&same.stdout).unwrap();
    assert_eq!(
        report["summary"],
        json!({"objects": 9, "changed": 0, "newly_denied": 0, "newly_allowed": 0})
    );

    // A base that does not exist is an error, never the embedded defaults.
    let missing = regate(&[
        "diff",
        "--base",
        "no/such/dir",
        "-f",
        "fixtures/diff/objects.yaml",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing).contains("--base no/such/dir: no such directory"),
        "{}",
        text(&missing)
    );
    // An unreadable manifest: exit 2.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: [unclosed").unwrap();
    let out = diff(&["-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// Each side of `diff` is exactly `regate eval` of that side: for every fixture object, the
/// verdict and policy ids of each side equal eval's.
#[test]
fn diff_equals_eval_of_each_side() {
    let sides = [
        ("fixtures/diff/base", "fixtures/diff/base.yaml"),
        ("fixtures/diff/candidate", "fixtures/diff/candidate.yaml"),
    ];
    let mut evals: Vec<Vec<Value>> = Vec::new();
    for (policies, config) in sides {
        let out = regate(&[
            "eval",
            "-o",
            "json",
            "--policies",
            policies,
            "--config",
            config,
            "-f",
            "fixtures/diff/objects.yaml",
        ]);
        evals.push(serde_json::from_slice(&out.stdout).unwrap());
    }
    let out = diff(&[
        "-f",
        "fixtures/diff/objects.yaml",
        "-o",
        "json",
        "--fail-on",
        "never",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let changes = report["changes"].as_array().unwrap();
    let ids = |r: &Value, action: &str| -> Vec<String> {
        let mut v: Vec<String> = r["violations"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["action"] == action)
            .map(|v| v["policy"].as_str().unwrap().to_string())
            .chain(if action == "warn" {
                r["warn_results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|w| w["policy"].as_str().unwrap().to_string())
                    .collect()
            } else {
                Vec::new()
            })
            .collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(evals[0].len(), 9);
    for (i, (b, a)) in evals[0].iter().zip(&evals[1]).enumerate() {
        let same = b["allowed"] == a["allowed"]
            && ids(b, "deny") == ids(a, "deny")
            && ids(b, "warn") == ids(a, "warn")
            && b["patch"] == a["patch"];
        let listed = changes.iter().find(|c| c["source"] == b["source"]);
        assert_eq!(
            listed.is_none(),
            same,
            "object {i} ({}): listed {listed:?}",
            b["source"]
        );
        if let Some(c) = listed {
            for (side, eval) in [("before", b), ("after", a)] {
                assert_eq!(
                    c[side]["allowed"], eval["allowed"],
                    "{side} of {}",
                    b["source"]
                );
                assert_eq!(c[side]["denied_by"], json!(ids(eval, "deny")));
                assert_eq!(c[side]["warned_by"], json!(ids(eval, "warn")));
            }
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `--base-ref` reads the policy directory and the config at a git revision: the same report as
/// with the base checked out.
#[test]
fn diff_base_ref_reads_the_directory_at_a_revision() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("skipped: no git");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    git(root, &["init", "-q", "-b", "main"]);
    copy_dir(&repo().join("fixtures/diff/base"), &root.join("policies"));
    std::fs::copy(
        repo().join("fixtures/diff/base.yaml"),
        root.join("regate.yaml"),
    )
    .unwrap();
    git(root, &["add", "."]);
    git(root, &["commit", "-q", "-m", "base"]);
    std::fs::remove_dir_all(root.join("policies")).unwrap();
    copy_dir(
        &repo().join("fixtures/diff/candidate"),
        &root.join("policies"),
    );
    std::fs::copy(
        repo().join("fixtures/diff/candidate.yaml"),
        root.join("regate.yaml"),
    )
    .unwrap();
    let objects = repo().join("fixtures/diff/objects.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(root)
        .args([
            "diff",
            "--base-ref",
            "main",
            "--policies",
            "policies",
            "--config",
            "regate.yaml",
            "-o",
            "json",
            "-f",
        ])
        .arg(&objects)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let by_ref: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        by_ref["summary"],
        json!({"objects": 9, "changed": 5, "newly_denied": 2, "newly_allowed": 2})
    );

    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(root)
        .args([
            "diff",
            "--base-ref",
            "no-such-branch",
            "--policies",
            "policies",
            "-f",
        ])
        .arg(&objects)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("--base-ref no-such-branch: not a revision"),
        "{}",
        text(&out)
    );
}

// ------------------------------------------------------------------------------------------
// audit --baseline
// ------------------------------------------------------------------------------------------

fn audit(policies: &str, config: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "audit",
        "--policies",
        policies,
        "--config",
        config,
        "-f",
        "fixtures/diff/objects.yaml",
    ];
    args.extend_from_slice(extra);
    let out = regate(&args);
    assert!(!text(&out).contains(CANARY), "canary in audit output");
    out
}

#[test]
fn baseline_marks_new_unchanged_and_resolved_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let baseline = dir.path().join("baseline.json");
    let out = audit(
        "fixtures/diff/base",
        "fixtures/diff/base.yaml",
        &["-o", "json", "--output-file", baseline.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let b = baseline.to_str().unwrap();

    // The same audit against itself: everything unchanged.
    let same = audit(
        "fixtures/diff/base",
        "fixtures/diff/base.yaml",
        &["-o", "json", "--baseline", b, "--fail-on", "new"],
    );
    assert_eq!(same.status.code(), Some(0), "{}", text(&same));
    let report: Value = serde_json::from_slice(&same.stdout).unwrap();
    assert_eq!(report["baseline"]["summary"]["new"], 0);
    assert_eq!(report["baseline"]["summary"]["resolved"], 0);
    assert!(report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["baseline"] == "unchanged"));

    // The candidate: two new findings, two resolved, none unchanged.
    let out = audit(
        "fixtures/diff/candidate",
        "fixtures/diff/candidate.yaml",
        &["-o", "json", "--baseline", b, "--fail-on", "new"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<(String, String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["policy"].as_str().unwrap().into(),
                f["name"].as_str().unwrap().into(),
                f["baseline"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert!(states.contains(&("deployment-min-replicas".into(), "web".into(), "new".into())));
    assert!(states.contains(&("service-no-nodeport".into(), "edge".into(), "new".into())));
    // deny → warn: the same policy, object and path, so not new, whatever the label.
    assert!(states.contains(&(
        "pod-no-latest-tag".into(),
        "debug".into(),
        "unchanged".into()
    )));
    assert_eq!(
        report["baseline"]["summary"],
        json!({"new": 2, "unchanged": 1, "resolved": 1,
               "by_severity": {"new": {"medium": 1, "high": 1}, "unchanged": {"high": 1}, "resolved": {"low": 1}}})
    );
    let resolved = report["resolved"].as_array().unwrap();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["policy"], "configmap-owner-label");
    assert_eq!(resolved[0]["name"], "settings");

    // The report with states is itself a valid baseline (round trip): against it, nothing new.
    let second = dir.path().join("second.json");
    std::fs::write(&second, &out.stdout).unwrap();
    let again = audit(
        "fixtures/diff/candidate",
        "fixtures/diff/candidate.yaml",
        &[
            "-o",
            "json",
            "--baseline",
            second.to_str().unwrap(),
            "--fail-on",
            "new",
        ],
    );
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let r: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(r["baseline"]["summary"]["new"], 0);
    assert_eq!(r["baseline"]["summary"]["unchanged"], 3);

    // A reworded message is not a new finding.
    let reworded = std::fs::read_to_string(&baseline)
        .unwrap()
        .replace("replicas; at least", "replicas, need");
    let reworded_path = dir.path().join("reworded.json");
    std::fs::write(&reworded_path, reworded).unwrap();
    let r = audit(
        "fixtures/diff/base",
        "fixtures/diff/base.yaml",
        &["-o", "json", "--baseline", reworded_path.to_str().unwrap()],
    );
    let r: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(r["baseline"]["summary"]["new"], 0);

    // Text: the three groups.
    let t = audit(
        "fixtures/diff/candidate",
        "fixtures/diff/candidate.yaml",
        &["--baseline", b, "--fail-on", "never"],
    );
    assert_eq!(t.status.code(), Some(0));
    let t = String::from_utf8_lossy(&t.stdout).to_string();
    assert!(
        t.contains(&format!("BASELINE {b}: 2 new, 1 unchanged, 1 resolved")),
        "{t}"
    );
    let (n, u, r) = (
        t.find("NEW FINDINGS").unwrap(),
        t.find("UNCHANGED FINDINGS").unwrap(),
        t.find("RESOLVED FINDINGS").unwrap(),
    );
    assert!(n < u && u < r, "{t}");
    assert!(
        t[r..].contains("[configmap-owner-label] ConfigMap prod-shop/settings"),
        "{t}"
    );

    // SARIF: baselineState on every result, absent for the resolved one.
    let s = audit(
        "fixtures/diff/candidate",
        "fixtures/diff/candidate.yaml",
        &["-o", "sarif", "--baseline", b, "--fail-on", "never"],
    );
    let s: Value = serde_json::from_slice(&s.stdout).unwrap();
    let mut states: Vec<String> = s["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["ruleId"].as_str().unwrap(),
                r["baselineState"].as_str().unwrap()
            )
        })
        .collect();
    states.sort();
    assert_eq!(
        states,
        [
            "configmap-owner-label:absent",
            "deployment-min-replicas:new",
            "pod-no-latest-tag:unchanged",
            "service-no-nodeport:new"
        ]
    );

    // PolicyReport and OpenReports: `properties.baselineState` on every result; the resolved
    // finding is a `skip` result in its namespace's report, counted in that report's summary.
    for format in ["policyreport", "openreports"] {
        let o = audit(
            "fixtures/diff/candidate",
            "fixtures/diff/candidate.yaml",
            &["-o", format, "--baseline", b, "--fail-on", "never"],
        );
        assert_eq!(o.status.code(), Some(0), "{format}: {}", text(&o));
        let stdout = String::from_utf8_lossy(&o.stdout).to_string();
        let reports: Vec<Value> = serde_yaml::Deserializer::from_str(&stdout)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        let mut states: Vec<String> = Vec::new();
        for report in &reports {
            for r in report["results"].as_array().unwrap() {
                let ns = r["resources"][0]["namespace"].as_str().unwrap_or("");
                assert_eq!(
                    report["metadata"]["namespace"].as_str().unwrap_or(""),
                    ns,
                    "{format}: a result in another namespace's report"
                );
                states.push(format!(
                    "{}:{}:{}:{}",
                    r["policy"].as_str().unwrap(),
                    r["resources"][0]["name"].as_str().unwrap(),
                    r["result"].as_str().unwrap(),
                    r["properties"]["baselineState"].as_str().unwrap()
                ));
            }
        }
        states.sort();
        assert_eq!(
            states,
            [
                "configmap-owner-label:settings:skip:resolved",
                "deployment-min-replicas:web:fail:new",
                "pod-no-latest-tag:debug:warn:unchanged",
                "service-no-nodeport:edge:fail:new"
            ],
            "{format}"
        );
        let skipped: u64 = reports
            .iter()
            .map(|r| r["summary"]["skip"].as_u64().unwrap())
            .sum();
        assert_eq!(skipped, 1, "{format}");
    }
    // Without a baseline, no state and no skip results.
    let o = audit(
        "fixtures/diff/candidate",
        "fixtures/diff/candidate.yaml",
        &["-o", "openreports", "--fail-on", "never"],
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        !stdout.contains("baselineState") && !stdout.contains("result: skip"),
        "{stdout}"
    );

    // JUnit: a `baselineState` property per case with findings; the resolved finding is a
    // passing case of its own suite; under --fail-on new-warn only new findings fail a case.
    let j = audit(
        "fixtures/diff/candidate",
        "fixtures/diff/candidate.yaml",
        &["-o", "junit", "--baseline", b, "--fail-on", "new-warn"],
    );
    assert_eq!(j.status.code(), Some(1), "{}", text(&j));
    let j = String::from_utf8_lossy(&j.stdout).to_string();
    let cases: Vec<(String, String, bool)> = j
        .split("<testcase ")
        .skip(1)
        .filter_map(|case| {
            let case = &case[..case.find("</testcase>").unwrap_or(case.len())];
            let name = case.split('"').nth(3).unwrap().to_string();
            let state = case
                .split("name=\"baselineState\" value=\"")
                .nth(1)?
                .split('"')
                .next()
                .unwrap()
                .to_string();
            Some((name, state, case.contains("<failure")))
        })
        .collect();
    assert_eq!(
        cases,
        [
            (
                "service-no-nodeport: Service dev-shop/edge".to_string(),
                "new".to_string(),
                true
            ),
            (
                "deployment-min-replicas: Deployment prod-shop/web".to_string(),
                "new".to_string(),
                true
            ),
            (
                "pod-no-latest-tag: Pod prod-shop/debug".to_string(),
                "unchanged".to_string(),
                false
            ),
            (
                "configmap-owner-label: ConfigMap prod-shop/settings".to_string(),
                "resolved".to_string(),
                false
            ),
        ],
        "{j}"
    );
    assert!(
        j.contains("<testsuite name=\"resolved since baseline\" tests=\"1\" failures=\"0\""),
        "{j}"
    );
    assert!(j.contains(" failures=\"2\" errors=\"0\" time="), "{j}");
    assert!(j.contains("(baseline: unchanged)</system-out>"), "{j}");

    // HTML still writes its report with a baseline.
    let o = audit(
        "fixtures/diff/candidate",
        "fixtures/diff/candidate.yaml",
        &["-o", "html", "--baseline", b, "--fail-on", "new-warn"],
    );
    assert_eq!(o.status.code(), Some(1), "html: {}", text(&o));
    assert!(!o.stdout.is_empty(), "html");

    // Errors: no baseline for --fail-on new; a baseline that is not a report.
    let o = audit(
        "fixtures/diff/base",
        "fixtures/diff/base.yaml",
        &["--fail-on", "new"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("--fail-on new and new-warn need --baseline"),
        "{}",
        text(&o)
    );
    let o = audit(
        "fixtures/diff/base",
        "fixtures/diff/base.yaml",
        &["--baseline", "fixtures/diff/base.yaml"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o)
            .contains("--baseline fixtures/diff/base.yaml: not a `regate audit -o json` report"),
        "{}",
        text(&o)
    );
    let o = audit(
        "fixtures/diff/base",
        "fixtures/diff/base.yaml",
        &["--baseline", "no/such.json"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("--baseline no/such.json:"),
        "{}",
        text(&o)
    );
}

// ------------------------------------------------------------------------------------------
// Shadow evaluation in serve
// ------------------------------------------------------------------------------------------

/// `regate serve` as a subprocess with the base enforced and the candidate in the shadow, its
/// JSON log in a file.
struct Shadowed {
    child: std::process::Child,
    port: u16,
    metrics: u16,
    dir: tempfile::TempDir,
    ca: PathBuf,
}

impl Shadowed {
    fn start(candidate: &Path, extra: &[&str]) -> Shadowed {
        install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let certs = regate::tls::certs::generate(&[], &dir.path().join("certs"), 2).unwrap();
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, metrics) = (free(), free());
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_regate"))
            .current_dir(repo())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics}"),
            ])
            .arg("--tls-cert")
            .arg(&certs.cert_path)
            .arg("--tls-key")
            .arg(&certs.key_path)
            .args([
                "--policies",
                "fixtures/diff/base",
                "--config",
                "fixtures/diff/base.yaml",
                "--log-format",
                "json",
            ])
            .arg("--shadow-policies")
            .arg(candidate)
            .args(["--shadow-config", "fixtures/diff/candidate.yaml"])
            .args(extra)
            .env_remove("RUST_LOG")
            .env("REGATE_WATCH_NAMESPACES", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = Shadowed {
            child,
            port,
            metrics,
            dir,
            ca: certs.ca_path,
        };
        assert!(s.wait_log("regate serving", 1), "not serving: {}", s.logs());
        s
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str, count: usize) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.logs().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    async fn get(&self, path: &str) -> String {
        reqwest::get(format!("http://127.0.0.1:{}{path}", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits until the shadow judged `n` requests in all.
    async fn wait_judged(&self, n: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = self.get("/metrics").await;
            if m.contains(&format!("regate_shadow_evaluations_total {n}\n"))
                || Instant::now() > deadline
            {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Shadowed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fixture objects as AdmissionReviews for /validate.
fn reviews() -> Vec<Value> {
    let objects =
        regate::manifest::read_paths(&[repo().join("fixtures/diff/objects.yaml")]).unwrap();
    objects
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let o = m.object;
            let api = o["apiVersion"].as_str().unwrap();
            let (group, version) = api.split_once('/').unwrap_or(("", api));
            let kind = o["kind"].as_str().unwrap();
            wrap_request(json!({
                "uid": format!("shadow-{i}"),
                "kind": {"group": group, "version": version, "kind": kind},
                "resource": {"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())},
                "name": o["metadata"]["name"], "namespace": o["metadata"]["namespace"],
                "operation": "CREATE", "userInfo": {"username": "test"}, "object": o,
            }))
        })
        .collect()
}

/// A server enforcing the base without a shadow: the answers the shadowed one must give.
async fn plain_base_server() -> TestServer {
    TestServer::start_with(Options {
        policies: repo().join("fixtures/diff/base"),
        config: Some(std::fs::read_to_string(repo().join("fixtures/diff/base.yaml")).unwrap()),
        include_defaults: false,
    })
    .await
}

/// The shadowed server's answer to `body` is the one `plain` gives.
async fn assert_unchanged(plain: &TestServer, body: Vec<u8>, status: u16, answer: &Value) {
    let (plain_status, _, expected) = post(&plain.http1(), &plain.url("/validate"), body).await;
    assert_eq!(
        (status, answer),
        (plain_status, &expected),
        "the shadow changed an answer"
    );
}

fn metric_lines(metrics: &str, name: &str) -> Vec<String> {
    let mut v: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with(name))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_counts_and_logs_disagreements_and_never_changes_the_answer() {
    let work = tempfile::tempdir().unwrap();
    let candidate = work.path().join("candidate");
    copy_dir(&repo().join("fixtures/diff/candidate"), &candidate);
    let shadowed = Shadowed::start(&candidate, &[]);
    let plain = plain_base_server().await;
    let client = client(&shadowed.ca, false);
    let reviews = reviews();
    for review in &reviews {
        let body = serde_json::to_vec(review).unwrap();
        let (status, _, answer) = post(
            &client,
            &format!("https://localhost:{}/validate", shadowed.port),
            body.clone(),
        )
        .await;
        assert_unchanged(&plain, body, status, &answer).await;
    }
    plain.stop().await;
    let metrics = shadowed.wait_judged(reviews.len() as u64).await;
    assert_eq!(
        metric_lines(&metrics, "regate_shadow_disagreements_total{"),
        [
            "regate_shadow_disagreements_total{change=\"newly_allowed\",policy=\"configmap-owner-label\"} 1",
            "regate_shadow_disagreements_total{change=\"newly_allowed\",policy=\"pod-no-latest-tag\"} 1",
            "regate_shadow_disagreements_total{change=\"newly_denied\",policy=\"deployment-min-replicas\"} 1",
            "regate_shadow_disagreements_total{change=\"newly_denied\",policy=\"service-no-nodeport\"} 1",
            "regate_shadow_disagreements_total{change=\"warned\",policy=\"pod-no-latest-tag\"} 1",
        ],
        "{metrics}"
    );
    assert!(
        metrics.contains("regate_shadow_dropped_total 0\n"),
        "{metrics}"
    );
    let lines: Vec<Value> = shadowed
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "shadow disagreement")
        .map(|l| {
            assert_eq!(l["target"], "regate::shadow");
            let mut f = l.clone();
            let map = f.as_object_mut().unwrap();
            for k in ["timestamp", "level", "target", "message"] {
                map.remove(k);
            }
            f
        })
        .collect();
    let line = |uid: &str,
                kind: &str,
                ns: &str,
                name: &str,
                ea: bool,
                sa: bool,
                ed: &str,
                sd: &str,
                ew: &str,
                sw: &str| {
        json!({"uid": uid, "kind": kind, "namespace": ns, "name": name,
               "enforced_allowed": ea, "shadow_allowed": sa,
               "enforced_denied_by": ed, "shadow_denied_by": sd,
               "enforced_warned_by": ew, "shadow_warned_by": sw, "shadow_failed_by": ""})
    };
    assert_eq!(
        lines,
        [
            line(
                "shadow-0",
                "Deployment",
                "prod-shop",
                "web",
                true,
                false,
                "",
                "deployment-min-replicas",
                "",
                ""
            ),
            line(
                "shadow-2",
                "Pod",
                "prod-shop",
                "debug",
                false,
                true,
                "pod-no-latest-tag",
                "",
                "",
                "pod-no-latest-tag"
            ),
            line(
                "shadow-3",
                "ConfigMap",
                "prod-shop",
                "settings",
                false,
                true,
                "configmap-owner-label",
                "",
                "",
                ""
            ),
            line(
                "shadow-6",
                "Service",
                "dev-shop",
                "edge",
                true,
                false,
                "",
                "service-no-nodeport",
                "",
                ""
            ),
        ],
        "{}",
        shadowed.logs()
    );
    assert!(!shadowed.logs().contains(CANARY));
    let ready = shadowed.get("/readyz?verbose").await;
    assert!(
        ready.contains(&format!(
            "[+]shadow {}: 4 policies loaded\n",
            candidate.display()
        )),
        "{ready}"
    );

    // A broken candidate edit is reported, keeps the last good candidate, and never changes
    // enforcement; fixing it reloads.
    std::fs::write(
        candidate.join("broken.rego"),
        "package regate.policies.broken\n\ndeny contains x if {",
    )
    .unwrap();
    assert!(
        shadowed.wait_log("shadow policy set is broken", 1),
        "{}",
        shadowed.logs()
    );
    let ready = shadowed.get("/readyz?verbose").await;
    assert!(
        ready.contains("[+]shadow ")
            && ready.contains("last reload failed")
            && ready.contains("readyz check passed"),
        "{ready}"
    );
    let body = serde_json::to_vec(&reviews[0]).unwrap();
    let (status, _, answer) = post(
        &client,
        &format!("https://localhost:{}/validate", shadowed.port),
        body,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["response"]["allowed"], true,
        "enforcement follows the base only"
    );
    std::fs::remove_file(candidate.join("broken.rego")).unwrap();
    assert!(
        shadowed.wait_log("shadow policy set loaded", 2),
        "{}",
        shadowed.logs()
    );
}

/// A candidate that spends its whole evaluation budget on every request (the evaluation time
/// limit cuts it off), so that a queue of one fills as soon as requests come faster than that.
const SLOW_POLICY: &str = r#"# METADATA
# title: Slow
# custom:
#   id: slow
#   severity: low
#   kinds: [Deployment, Pod, ConfigMap, Service, Secret]
#   action: deny
package regate.policies.slow

import rego.v1

deny contains "never" if {
	count([1 | some i in numbers.range(1, 5000); some j in numbers.range(1, 5000); i * j == -1]) > 0
}
"#;

/// The shadow queue is bounded: with a queue of one and a slow candidate, requests the candidate
/// cannot take are dropped and counted, every sampled request is either judged or dropped, and
/// the enforced answers stay exactly those of a server without a shadow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_shadow_queue_drops_and_counts_and_never_changes_the_answer() {
    let work = tempfile::tempdir().unwrap();
    let candidate = work.path().join("candidate");
    copy_dir(&repo().join("fixtures/diff/candidate"), &candidate);
    std::fs::write(candidate.join("slow.rego"), SLOW_POLICY).unwrap();
    let shadowed = Shadowed::start(&candidate, &["--shadow-queue", "1"]);
    let metrics = shadowed.get("/metrics").await;
    assert!(
        metrics.contains("regate_shadow_policies_loaded 5\n"),
        "the slow candidate did not load: {metrics}\n{}",
        shadowed.logs()
    );
    let plain = plain_base_server().await;
    let client = client(&shadowed.ca, false);
    let reviews = reviews();
    let url = format!("https://localhost:{}/validate", shadowed.port);
    // All at once: one request in the candidate, one in the queue, the rest dropped.
    let sent: Vec<_> = (0..3)
        .flat_map(|_| reviews.iter())
        .map(|review| {
            let body = serde_json::to_vec(review).unwrap();
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { (body.clone(), post(&client, &url, body).await) })
        })
        .collect();
    let total = sent.len() as u64;
    for task in sent {
        let (body, (status, _, answer)) = task.await.unwrap();
        assert_unchanged(&plain, body, status, &answer).await;
    }
    plain.stop().await;
    let counter = |metrics: &str, name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|n| n.parse().ok())
            .unwrap()
    };
    // Every sampled request is judged or dropped: wait until the two add up.
    let deadline = Instant::now() + Duration::from_secs(120);
    let metrics = loop {
        let m = shadowed.get("/metrics").await;
        let judged = counter(&m, "regate_shadow_evaluations_total");
        let dropped = counter(&m, "regate_shadow_dropped_total");
        if judged + dropped == total {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "judged {judged} + dropped {dropped} != {total}: {m}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dropped = counter(&metrics, "regate_shadow_dropped_total");
    assert!(dropped > 0, "nothing dropped: {metrics}");
    assert!(
        counter(&metrics, "regate_shadow_evaluations_total") > 0,
        "{metrics}"
    );
    assert!(!shadowed.logs().contains(CANARY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_candidate_at_start_is_reported_and_enforcement_goes_on() {
    let work = tempfile::tempdir().unwrap();
    let candidate = work.path().join("candidate");
    std::fs::create_dir_all(&candidate).unwrap();
    std::fs::write(
        candidate.join("broken.rego"),
        "package x\n\ndeny contains x if {",
    )
    .unwrap();
    let shadowed = Shadowed::start(&candidate, &["--shadow-sample-rate", "0.5"]);
    assert!(
        shadowed.logs().contains("shadow policy set is broken"),
        "{}",
        shadowed.logs()
    );
    let ready = shadowed.get("/readyz?verbose").await;
    assert!(
        ready.contains("[+]shadow ") && ready.contains("broken, nothing judged"),
        "{ready}"
    );
    let client = client(&shadowed.ca, false);
    let body = serde_json::to_vec(&reviews()[2]).unwrap();
    let (status, _, answer) = post(
        &client,
        &format!("https://localhost:{}/validate", shadowed.port),
        body,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["response"]["allowed"], false,
        "the base denies the unpinned image"
    );

    // A shadow directory that does not exist is a startup error.
    let certs = shadowed.dir.path().join("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(repo())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--policies",
            "fixtures/diff/base",
            "--shadow-policies",
            "no/such/dir",
        ])
        .arg("--tls-cert")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key")
        .arg(certs.join("tls.key"))
        .env("REGATE_WATCH_NAMESPACES", "false")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out).contains("--shadow-policies no/such/dir: no such directory"),
        "{}",
        text(&out)
    );
}
