//! Metrics, decision logs and health: scrape /metrics after a known mix and check the counts;
//! parse the JSON logs of a real `regate serve` process and check every decision line; keep
//! Secret canaries out of both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("fixtures/admission").join(name)).unwrap()
}

/// The value of one sample line in the text exposition, 0 when absent.
fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

const MIX: &[(&str, &str, &str)] = &[
    // (fixture, kind, expected /validate decision label)
    ("deployment-secure.json", "Deployment", "allowed"),
    (
        "deployment-missing-run-as-non-root.json",
        "Deployment",
        "denied",
    ),
    (
        "deployment-no-security-context.json",
        "Deployment",
        "denied",
    ),
    (
        "deployment-best-practices-warning.json",
        "Deployment",
        "warned",
    ),
    ("secret-jwt-short-prod.json", "Secret", "denied"),
    ("secret-jwt-long-prod.json", "Secret", "allowed"),
    ("configmap-origins-star-dev.json", "ConfigMap", "warned"),
    ("configmap-debug-mode-prod.json", "ConfigMap", "denied"),
];

#[tokio::test]
async fn metrics_count_a_known_mix() {
    let server = TestServer::start().await;
    let client = server.http1();
    let mut expected: BTreeMap<String, f64> = BTreeMap::new();
    for (file, kind, decision) in MIX {
        let (status, _, _) = post(&client, &server.url("/validate"), fixture(file)).await;
        assert_eq!(status, 200);
        *expected
            .entry(format!(
                r#"regate_admission_requests_total{{decision="{decision}",endpoint="validate",kind="{kind}",operation="CREATE"}}"#
            ))
            .or_default() += 1.0;
    }
    for file in [
        "deployment-no-security-context.json",
        "deployment-secure.json",
    ] {
        post(&client, &server.url("/mutate"), fixture(file)).await;
    }
    let (status, _, _) = post(&client, &server.url("/validate"), "garbage").await;
    assert_eq!(status, 400);

    let metrics = server.metrics().await;
    for (line, count) in &expected {
        assert_eq!(sample(&metrics, line), *count, "{line}\n{metrics}");
    }
    assert_eq!(
        sample(
            &metrics,
            r#"regate_admission_requests_total{decision="mutated",endpoint="mutate",kind="Deployment",operation="CREATE"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"regate_admission_requests_total{decision="allowed",endpoint="mutate",kind="Deployment",operation="CREATE"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"regate_admission_requests_total{decision="invalid",endpoint="validate",kind="other",operation="other"}"#
        ),
        1.0
    );
    // Every answered request is in the latency histogram.
    assert_eq!(
        sample(
            &metrics,
            r#"regate_admission_duration_seconds_count{endpoint="validate"}"#
        ),
        MIX.len() as f64 + 1.0
    );
    assert_eq!(
        sample(
            &metrics,
            r#"regate_admission_duration_seconds_count{endpoint="mutate"}"#
        ),
        2.0
    );
    assert!(metrics
        .contains(r#"regate_admission_duration_seconds_bucket{endpoint="validate",le="0.0001"}"#));
    assert!(metrics
        .contains(r#"regate_admission_duration_seconds_bucket{endpoint="validate",le="10"}"#));
    // Violations by policy, action and severity.
    assert_eq!(
        sample(
            &metrics,
            r#"regate_policy_violations_total{action="deny",policy="secret-min-length",severity="high"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"regate_policy_violations_total{action="deny",policy="configmap-production-flags",severity="medium"}"#
        ) + sample(
            &metrics,
            r#"regate_policy_violations_total{action="deny",policy="configmap-production-flags",severity="high"}"#
        ) + sample(
            &metrics,
            r#"regate_policy_violations_total{action="deny",policy="configmap-production-flags",severity="low"}"#
        ),
        1.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            r#"regate_policy_evaluation_duration_seconds_count{policy="pod-run-as-non-root"}"#
        ) >= 6.0
    );
    assert_eq!(sample(&metrics, "regate_policies_loaded"), 10.0);
    assert_eq!(
        sample(&metrics, r#"regate_policy_reload_total{result="success"}"#),
        1.0
    );
    assert!(sample(&metrics, "regate_policy_last_reload_timestamp_seconds") > 1.7e9);
    assert!(
        sample(
            &metrics,
            "regate_tls_certificate_not_after_timestamp_seconds"
        ) > 1.7e9
    );
    assert!(metrics.contains(&format!(
        "regate_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
    // Bounded labels: no object names or namespaces anywhere in the exposition.
    for forbidden in ["namespace=\"prod\"", "name=\"", "web-"] {
        assert!(!metrics.contains(forbidden), "{forbidden} in metrics");
    }
    assert!(!metrics.contains("CANARY"));

    // Health on both listeners.
    let m = server.metrics_addr.unwrap();
    for url in [server.url("/healthz"), server.url("/readyz")] {
        assert_eq!(client.get(url).send().await.unwrap().status().as_u16(), 200);
    }
    for path in ["/healthz", "/readyz"] {
        let r = reqwest::get(format!("http://{m}{path}")).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let verbose = client
        .get(server.url("/readyz?verbose"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        verbose.contains("[+]policies 10 policies loaded"),
        "{verbose}"
    );
    assert!(verbose.contains("[+]certificate"), "{verbose}");
    assert!(verbose.contains("[+]last-reload ok"), "{verbose}");
    server.stop().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `regate serve` with JSON logs at trace level: one decision line per request with
/// every field, the effective configuration at startup, and no Secret value anywhere.
#[tokio::test]
async fn decision_logs_are_complete_and_never_carry_secrets() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let certs = regate::tls::certs::generate(&[], dir.path(), 2).unwrap();
    let config = dir.path().join("regate.yaml");
    std::fs::write(&config, TEST_CONFIG).unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(repo())
        .args(["serve", "--log-format", "json", "--log-level", "trace"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        .arg("--tls-cert")
        .arg(&certs.cert_path)
        .arg("--tls-key")
        .arg(&certs.key_path)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = client(&certs.ca_path, false);
    let base = format!("https://localhost:{port}");
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            ready = r.status().as_u16() == 200;
            if ready {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(ready, "server did not become ready");

    let sent = [
        ("deployment-missing-run-as-non-root.json", "denied"),
        ("deployment-secure.json", "allowed"),
        ("secret-jwt-short-prod.json", "denied"),
        ("secret-placeholder-dev.json", "warned"),
        ("secret-invalid-base64-prod.json", "denied"),
        ("secret-jwt-long-prod.json", "allowed"),
    ];
    // SIGHUP forces a reload (logged with its trigger).
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut bodies = String::new();
    for (file, _) in sent {
        let (status, _, body) = post(&client, &format!("{base}/validate"), fixture(file)).await;
        assert_eq!(status, 200);
        bodies.push_str(&body.to_string());
        let (_, _, body) = post(&client, &format!("{base}/mutate"), fixture(file)).await;
        bodies.push_str(&body.to_string());
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // SIGTERM: graceful stop, exit 0.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (status, stderr)
    })
    .await
    .unwrap();
    let (status, logs) = status;
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM\n{logs}");

    let lines: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(lines.len() > 10, "JSON log lines: {}", logs.lines().count());
    assert!(lines
        .iter()
        .any(|l| l["message"] == "regate serving" && l["policies"] == 10));
    assert!(
        lines.iter().any(|l| l["message"] == "policy loaded"
            && l["policy"] == "pod-run-as-non-root"
            && l["production"] == "deny"),
        "startup logs the policies with their actions"
    );
    let decisions: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "admission decision" && l["endpoint"] == "validate")
        .collect();
    assert_eq!(decisions.len(), sent.len());
    for (file, decision) in sent {
        let review: Value = serde_json::from_slice(&fixture(file)).unwrap();
        let uid = review["request"]["uid"].as_str().unwrap();
        let line = decisions
            .iter()
            .find(|l| l["uid"] == uid)
            .unwrap_or_else(|| panic!("no decision line for {file}"));
        assert_eq!(line["decision"], decision, "{file}: {line}");
        for field in [
            "kind",
            "namespace",
            "name",
            "operation",
            "user",
            "dry_run",
            "policies",
            "patch_bytes",
            "duration_us",
            "environment",
        ] {
            assert!(
                line.get(field).is_some(),
                "{file}: decision line lacks {field}: {line}"
            );
        }
        assert_eq!(line["kind"], review["request"]["kind"]["kind"]);
        assert_eq!(line["namespace"], review["request"]["namespace"]);
        assert_eq!(line["user"], review["request"]["userInfo"]["username"]);
        if decision == "denied" {
            assert!(
                line["policies"].as_str().unwrap().contains(":deny"),
                "{line}"
            );
        }
    }
    // The canaries: not in any response, log line (trace level included) or metric, nor their
    // base64 form.
    for needle in ["CANARY", "Q0FOQVJZ"] {
        assert!(!logs.contains(needle), "{needle} leaked into the logs");
        assert!(!bodies.contains(needle), "{needle} leaked into a response");
        assert!(!metrics.contains(needle), "{needle} leaked into metrics");
    }
}

/// A policy for every kind, and one naming a custom kind.
const EVERY_KIND_POLICY: &str = r#"# METADATA
# title: Every object is labelled with an owner
# custom:
#   id: every-kind-owner
#   severity: low
#   kinds: ["*"]
#   action: warn
package regate.policies.every_kind_owner

import rego.v1

warn contains "objects should carry an owner label" if {
	not input.request.object.metadata.labels.owner
}
"#;

const WIDGET_POLICY: &str = r#"# METADATA
# title: Widgets are small
# custom:
#   id: widget-small
#   severity: low
#   kinds: [Widget]
#   action: deny
package regate.policies.widget_small

import rego.v1

deny contains "widgets must be small" if {
	input.request.object.spec.size > 10
}
"#;

fn review_of_kind(i: usize, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": format!("kind-{i}"),
            "kind": {"group": "example.com", "version": "v1", "kind": kind},
            "resource": {"group": "example.com", "version": "v1", "resource": "things"},
            "name": "x", "namespace": "prod", "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "example.com/v1", "kind": kind, "metadata": {"name": "x", "namespace": "prod"}},
            "oldObject": null
        }
    }))
    .unwrap()
}

/// A policy for every kind (`kinds: ["*"]`) and requests of 500 invented kinds: the kind label
/// takes only built-in kinds and kinds a loaded policy names; every other kind is `other`, so
/// the number of series stays bounded however many kinds clients send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_stay_bounded_when_a_policy_targets_every_kind() {
    let policies = tempfile::tempdir().unwrap();
    std::fs::write(policies.path().join("every-kind.rego"), EVERY_KIND_POLICY).unwrap();
    std::fs::write(policies.path().join("widget.rego"), WIDGET_POLICY).unwrap();
    let server = TestServer::start_with(Options {
        policies: policies.path().to_path_buf(),
        ..Options::default()
    })
    .await;
    let client = server.http2();
    let url = server.url("/validate");
    let kinds = 500;
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in 0..10 {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            for i in (chunk * kinds / 10)..((chunk + 1) * kinds / 10) {
                let (status, _, body) =
                    post(&client, &url, review_of_kind(i, &format!("Invented{i}"))).await;
                assert_eq!(status, 200, "{body}");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    for kind in ["Widget", "ConfigMap"] {
        let (status, _, _) = post(&client, &url, review_of_kind(0, kind)).await;
        assert_eq!(status, 200);
    }

    let metrics = server.metrics().await;
    let requests: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("regate_admission_requests_total{"))
        .collect();
    eprintln!(
        "{kinds} invented kinds: {} regate_admission_requests_total series, /metrics {} bytes",
        requests.len(),
        metrics.len()
    );
    assert!(
        !metrics.contains("Invented"),
        "an invented kind became a label"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"regate_admission_requests_total{decision="warned",endpoint="validate",kind="other",operation="CREATE"}"#
        ),
        kinds as f64,
        "{metrics}"
    );
    // Kinds a policy names, and built-in kinds, keep their own label.
    for kind in ["Widget", "ConfigMap"] {
        assert!(
            requests
                .iter()
                .any(|l| l.contains(&format!("kind=\"{kind}\""))),
            "{kind}: {requests:?}"
        );
    }
    assert!(requests.len() <= 4, "{requests:?}");
    let series = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count();
    assert!(series < 400, "{series} series in /metrics");
    server.stop().await;
}
