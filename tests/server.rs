//! The webhook end to end: real TLS sockets, HTTP/1.1 keep-alive and HTTP/2 clients verifying
//! the CA, every fixture through /validate and /mutate, the apiserver corpus, bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use rstest::rstest;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
struct Expected {
    allowed: bool,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    warn: Vec<String>,
    #[serde(default)]
    patch: bool,
}

fn expectations() -> BTreeMap<String, Expected> {
    let text = std::fs::read_to_string(repo().join("fixtures/admission/expected.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Every fixture, judged by /validate and /mutate over HTTP/1.1 keep-alive; patched objects are
/// re-submitted: the patch applies cleanly, removes what it fixes, and a second /mutate is empty.
#[rstest]
#[tokio::test]
async fn fixture(#[files("fixtures/admission/*.json")] path: PathBuf) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let expected = expectations();
    let expected = expected
        .get(&name)
        .unwrap_or_else(|| panic!("{name} has no entry in fixtures/admission/expected.yaml"));
    let body = std::fs::read(&path).unwrap();
    let review: Value = serde_json::from_slice(&body).unwrap();
    let uid = review["request"]["uid"].as_str().unwrap().to_string();

    let server = TestServer::start().await;
    let client = server.http1();
    let (status, version, validated) = post(&client, &server.url("/validate"), body.clone()).await;
    assert_eq!(status, 200, "{name}: {validated}");
    assert_eq!(version, reqwest::Version::HTTP_11);
    let r = response(&validated);
    assert_eq!(r["uid"], uid, "{name}: uid echoed");
    assert_eq!(r["allowed"], expected.allowed, "{name}: {validated}");
    let message = r["status"]["message"].as_str().unwrap_or("").to_string();
    let denied_ids = if expected.allowed {
        vec![]
    } else {
        ids_in(std::slice::from_ref(&message))
    };
    assert_eq!(
        denied_ids, expected.deny,
        "{name}: deny message {message:?}"
    );
    if !expected.allowed {
        assert_eq!(r["status"]["code"], 403, "{name}");
    }
    let warned = ids_in(&warnings(&validated));
    assert_eq!(
        warned,
        expected.warn,
        "{name}: warnings {:?}",
        warnings(&validated)
    );

    let (status, _, mutated) = post(&client, &server.url("/mutate"), body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(response(&mutated)["uid"], uid);
    assert_eq!(response(&mutated)["allowed"], true, "/mutate never denies");
    let patch = patch_of(&mutated);
    assert_eq!(
        patch.is_some(),
        expected.patch,
        "{name}: /mutate patch {mutated}"
    );
    if let Some(patch) = patch {
        assert_eq!(response(&mutated)["patchType"], "JSONPatch");
        let mut object = review["request"]["object"].clone();
        json_patch::patch(&mut object, &patch)
            .unwrap_or_else(|e| panic!("{name}: patch does not apply: {e}"));
        let mut again = review.clone();
        again["request"]["object"] = object;
        let again_bytes = serde_json::to_vec(&again).unwrap();
        let (_, _, remutated) = post(&client, &server.url("/mutate"), again_bytes.clone()).await;
        assert!(
            patch_of(&remutated).is_none(),
            "{name}: patch is idempotent"
        );
        let (_, _, revalidated) = post(&client, &server.url("/validate"), again_bytes).await;
        let message = response(&revalidated)["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let still = if response(&revalidated)["allowed"] == true {
            vec![]
        } else {
            ids_in(&[message])
        };
        for id in &still {
            assert!(
                expected.deny.contains(id),
                "{name}: patching introduced a denial by {id}"
            );
        }
    }
    server.stop().await;
}

/// The same decisions over HTTP/2 (ALPN h2).
#[tokio::test]
async fn http2_serves_the_same_decisions() {
    let server = TestServer::start().await;
    let client = server.http2();
    let expected = expectations();
    for (name, exp) in expected.iter().take(12) {
        let body = std::fs::read(repo().join("fixtures/admission").join(name)).unwrap();
        let (status, version, validated) = post(&client, &server.url("/validate"), body).await;
        assert_eq!(status, 200);
        assert_eq!(version, reqwest::Version::HTTP_2, "ALPN negotiated h2");
        assert_eq!(response(&validated)["allowed"], exp.allowed, "{name}");
    }
    server.stop().await;
}

/// Real kube-apiserver payloads: uid echoed, DELETE and status updates allowed. Read at run
/// time (not a compile-time glob), so a clone without ../shared still builds its tests.
#[tokio::test]
async fn apiserver_payloads() {
    let Some(dir) = corpus("admissionreview") else {
        return;
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no *.json in {}", dir.display());
    let server = TestServer::start().await;
    let client = server.http1();
    for path in &paths {
        let mut value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        if value.get("request").is_none() {
            value = wrap_request(value);
        }
        let uid = value["request"]["uid"].as_str().unwrap().to_string();
        for endpoint in ["/validate", "/mutate"] {
            let (status, _, body) = post(
                &client,
                &server.url(endpoint),
                serde_json::to_vec(&value).unwrap(),
            )
            .await;
            assert_eq!(status, 200, "{}: {body}", path.display());
            assert_eq!(response(&body)["uid"], uid, "{}", path.display());
            assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
            assert_eq!(body["kind"], "AdmissionReview");
        }
        let op = value["request"]["operation"].as_str().unwrap();
        let sub = value["request"]["subResource"].as_str().unwrap_or("");
        let (_, _, body) = post(
            &client,
            &server.url("/validate"),
            serde_json::to_vec(&value).unwrap(),
        )
        .await;
        if op == "DELETE" || !sub.is_empty() {
            assert_eq!(response(&body)["allowed"], true, "{}", path.display());
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let server = TestServer::start().await;
    let client = server.http1();
    let url = server.url("/validate");

    let (status, _, body) = post(&client, &url, "this is not json").await;
    assert_eq!(status, 400);
    assert!(
        response(&body)["status"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{body}"
    );

    let (status, _, body) = post(&client, &url, r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#).await;
    assert_eq!(status, 400);
    assert!(
        response(&body)["status"]["message"]
            .as_str()
            .unwrap()
            .contains("apiVersion must be"),
        "{body}"
    );

    let (status, _, body) = post(
        &client,
        &url,
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        response(&body)["status"]["message"]
            .as_str()
            .unwrap()
            .contains("has no request"),
        "{body}"
    );

    let (status, _, body) = post(
        &client,
        &url,
        r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{}}}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        response(&body)["status"]["message"]
            .as_str()
            .unwrap()
            .contains("request.uid"),
        "{body}"
    );

    // A uid but a broken request: the answer still echoes the uid.
    let (status, _, body) = post(&client, &url, r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","operation":"CREATE"}}"#).await;
    assert_eq!(status, 400);
    assert_eq!(response(&body)["uid"], "u-1");
    assert!(
        response(&body)["status"]["message"]
            .as_str()
            .unwrap()
            .contains("request.kind is missing"),
        "{body}"
    );

    // Over the 8 MiB default limit.
    let huge = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"big","pad":"{}"}}}}"#,
        "x".repeat(9 * 1024 * 1024)
    );
    let (status, _, body) = post(&client, &url, huge).await;
    assert_eq!(status, 413, "{body}");

    let response = client.get(server.url("/validate")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.headers()["allow"], "POST");

    // Deeply nested JSON is refused by the parser's depth limit, not by a stack overflow.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (status, _, _) = post(&client, &url, deep).await;
    assert_eq!(status, 400);

    // Still serving after all of that.
    let ok = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    server.stop().await;
}

fn policy_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

const SLOW_POLICY: &str = r#"# METADATA
# title: Slow
# custom:
#   id: slow
#   severity: low
#   kinds: [ConfigMap]
package regate.policies.slow

# Sixteen million iterations: far over any sensible time limit.
deny contains "too many" if {
  count([x | some x in numbers.range(1, 4000); some y in numbers.range(1, 4000); x == y]) > 1
}
"#;

const BROKEN_AT_RUNTIME: &str = r#"# METADATA
# title: Broken
# custom:
#   id: broken
#   severity: low
#   kinds: [ConfigMap]
package regate.policies.broken

# Two bodies of a complete rule giving different values: a runtime conflict error.
v := 1 if input.request.object.data.A
v := 2 if input.request.object.data.B

deny contains "conflict" if v > 0
"#;

fn configmap_review(uid: &str, data: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": "c", "namespace": "prod", "operation": "CREATE", "userInfo": {"username": "alice"},
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "prod"}, "data": data},
            "oldObject": null
        }
    }))
    .unwrap()
}

/// A policy over its time limit, or failing at runtime, fails closed by default (deny naming the
/// policy and the reason) and open with a warning when configured; the server keeps serving.
#[tokio::test]
async fn failing_policies_fail_closed_or_open() {
    let dir = policy_dir(&[
        ("slow.rego", SLOW_POLICY),
        ("broken.rego", BROKEN_AT_RUNTIME),
    ]);
    for (failure, allowed) in [("closed", false), ("open", true)] {
        let server = TestServer::start_with(Options {
            policies: dir.path().to_path_buf(),
            config: Some(format!(
                "policyFailure: {failure}\nlimits:\n  evaluationTimeoutMs: 200\n"
            )),
            include_defaults: false,
        })
        .await;
        let client = server.http1();
        let (status, _, body) = post(
            &client,
            &server.url("/validate"),
            configmap_review("t-1", json!({"A": "x", "B": "y"})),
        )
        .await;
        assert_eq!(status, 200);
        let r = response(&body);
        assert_eq!(r["allowed"], allowed, "{failure}: {body}");
        let text = if allowed {
            warnings(&body).join("\n")
        } else {
            r["status"]["message"].as_str().unwrap().to_string()
        };
        assert!(
            text.contains("[slow] policy evaluation failed: evaluation time limit exceeded"),
            "{failure}: {text}"
        );
        assert!(
            text.contains("[broken] policy evaluation failed"),
            "{failure}: {text}"
        );
        let metrics = server.metrics().await;
        assert!(
            metrics.contains(r#"regate_policy_errors_total{policy="slow",reason="time_limit"} 1"#),
            "{metrics}"
        );
        let ok = client.get(server.url("/readyz")).send().await.unwrap();
        assert_eq!(ok.status().as_u16(), 200);
        server.stop().await;
    }
}

const MUTATORS: &str = r#"apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata:
  name: inject-data
spec:
  applyTo:
  - groups: [""]
    kinds: ["ConfigMap"]
    versions: ["v1"]
  location: "data.injected"
  parameters:
    pathTests:
    - subPath: "data.injected"
      condition: MustNotExist
    assign:
      value: "yes"
---
apiVersion: mutations.gatekeeper.sh/v1
kind: AssignMetadata
metadata:
  name: owner
spec:
  match:
    kinds:
    - apiGroups: [""]
      kinds: ["ConfigMap"]
  location: "metadata.labels.owner"
  parameters:
    assign:
      value: "platform"
"#;

/// Gatekeeper mutators in the policy directory answer /mutate with a patch (for a kind no
/// policy judges), the patched object gets none, and /validate is not mutated.
#[tokio::test]
async fn gatekeeper_mutators_patch_on_mutate() {
    let dir = policy_dir(&[("mutators.yaml", MUTATORS)]);
    let server = TestServer::start_with(Options {
        policies: dir.path().to_path_buf(),
        include_defaults: true,
        ..Options::default()
    })
    .await;
    let client = server.http1();
    let body = configmap_review("m-1", json!({"a": "1"}));
    let (status, _, mutated) = post(&client, &server.url("/mutate"), body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(response(&mutated)["allowed"], true);
    let patch = patch_of(&mutated).expect("a patch");
    let mut review: Value = serde_json::from_slice(&body).unwrap();
    let object = &mut review["request"]["object"];
    json_patch::patch(object, &patch).unwrap();
    assert_eq!(object["data"], json!({"a": "1", "injected": "yes"}));
    assert_eq!(object["metadata"]["labels"], json!({"owner": "platform"}));
    let again = serde_json::to_vec(&review).unwrap();
    let (_, _, remutated) = post(&client, &server.url("/mutate"), again).await;
    assert!(patch_of(&remutated).is_none(), "{remutated}");
    let (_, _, validated) = post(&client, &server.url("/validate"), body).await;
    assert!(patch_of(&validated).is_none(), "{validated}");
    server.stop().await;
}
