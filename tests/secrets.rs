//! Secret values never leave regate, whatever a careless policy does with them: careless native
//! policies and Gatekeeper templates quote a Secret's `stringData`, `data` (as written and
//! decoded), its oldObject and the Secrets of `data.inventory` in deny messages, warnings, audit
//! annotations and `print()`. Canaries in raw, base64, JSON-escaped and line-wrapped forms must be
//! in no answer of a real `regate serve` (over TLS), none of its logs (every level, `off`
//! included), neither stdout nor stderr, no metric, no `eval`/`test`/`verify` output and no audit
//! report format, and each scrubbed text must say `[redacted]`. See docs/RELIABILITY.md,
//! "Secret values".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod reliability_support;

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use common::*;
use reliability_support::*;
use serde_json::{json, Value};

const RAW: &str = "CANARY-raw-1f6a9c";
/// Quote, `<&>`, newline and backslash: quoted by `%v` in its JSON-escaped form.
const ESC: &str = "CANARY-esc\"q<&>\n\\x7-b2";
/// Stored base64 in `data`.
const B64: &str = "CANARY-b64-8e0d42";
/// A short value: redacted where it stands as a whole word.
const SHORT: &str = "q7";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn long_value() -> String {
    format!("CANARY-long-{}", "z".repeat(90))
}

/// `long_value()` base64-encoded and wrapped at 76 columns, as `base64(1)` writes it.
fn wrapped() -> String {
    b64(&long_value())
        .as_bytes()
        .chunks(76)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What must never appear: the canaries, their base64 (any value starts `Q0FOQVJZ`), the middle
/// of the wrapped value's base64, and the short value quoted.
fn forbidden() -> Vec<String> {
    vec![
        "CANARY".to_string(),
        "Q0FOQVJZ".to_string(),
        "enp6enp6".to_string(),
        b64(B64),
        format!("\"{SHORT}\""),
        format!("\\\"{SHORT}\\\""),
    ]
}

#[track_caller]
fn assert_clean(what: &str, text: &str) {
    for needle in forbidden() {
        assert!(
            !text.contains(&needle),
            "{what} contains {needle:?}:\n{text}"
        );
    }
}

fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": "prod"},
        "stringData": {"RAW_KEY": RAW, "ESC_KEY": ESC, "PIN": SHORT},
        "data": {"B64_KEY": b64(B64), "WRAPPED_KEY": wrapped()}})
}

fn harmless_secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": "prod"},
        "stringData": {"RAW_KEY": "harmless-new-value-0123456789abcdef"}})
}

fn review(uid: &str, operation: &str, object: Value, old: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": "app", "namespace": "prod", "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object, "oldObject": old,
        }
    }))
    .unwrap()
}

fn native(id: &str, action: &str, body: &str) -> (String, String) {
    let package = id.replace('-', "_");
    (
        format!("{id}.rego"),
        format!(
            "# METADATA\n# title: {id}\n# custom:\n#   id: {id}\n#   severity: low\n#   kinds: [Secret]\n#   action: {action}\npackage regate.policies.{package}\n\n{body}\n"
        ),
    )
}

/// Careless native policies: deny, audit and warn messages that quote every value, and a
/// `print()` of every value.
fn careless_policies() -> Vec<(String, String)> {
    let quote_all = r#"
deny contains msg if {
  o := input.request.object
  msg := sprintf("stringData %v data %v", [object.get(o, "stringData", {}), object.get(o, "data", {})])
}

deny contains msg if {
  old := input.request.oldObject
  is_object(old)
  msg := sprintf("old stringData %v old data %v", [object.get(old, "stringData", {}), object.get(old, "data", {})])
}

deny contains msg if {
  some o in [input.request.object, input.request.oldObject]
  is_object(o)
  msg := sprintf("decoded B64_KEY=%s, PIN is %s", [base64.decode(o.data.B64_KEY), o.stringData.PIN])
}
"#;
    let prints = r#"
warn contains "checked the values" if {
  some o in [input.request.object, input.request.oldObject]
  is_object(o)
  some k, v in object.get(o, "stringData", {})
  print("checking key DB_PASSWORD", k, "value", v)
  some d, e in object.get(o, "data", {})
  print("data key", d, "value", e)
}
"#;
    vec![
        native("leaky-deny", "deny", quote_all),
        native("leaky-audit", "audit", quote_all),
        native(
            "leaky-warn",
            "deny",
            &quote_all.replace("deny contains", "warn contains"),
        ),
        native("leaky-print", "warn", prints),
    ]
}

const TEMPLATE: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8sleakysecret
spec:
  crd:
    spec:
      names:
        kind: K8sLeakySecret
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8sleakysecret

        violation[{"msg": msg}] {
          msg := sprintf("stringData %v", [input.review.object.stringData])
        }

        violation[{"msg": msg}] {
          msg := sprintf("data %v", [input.review.object.data])
        }

        violation[{"msg": msg}] {
          msg := sprintf("old data %v old stringData %v", [input.review.oldObject.data, input.review.oldObject.stringData])
        }
"#;

fn constraint(name: &str, action: &str) -> String {
    format!(
        "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sLeakySecret\nmetadata:\n  name: {name}\nspec:\n  enforcementAction: {action}\n  match:\n    kinds:\n      - apiGroups: [\"\"]\n        kinds: [\"Secret\"]\n"
    )
}

/// A referential template that quotes the Secrets of `data.inventory` when judging a Pod.
const INVENTORY_TEMPLATE: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8sinventoryleak
  annotations:
    metadata.gatekeeper.sh/requires-sync-data: |
      "[[{"groups": [""], "versions": ["v1"], "kinds": ["Secret"]}]]"
spec:
  crd:
    spec:
      names:
        kind: K8sInventoryLeak
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8sinventoryleak

        violation[{"msg": msg}] {
          s := data.inventory.namespace[_][_]["Secret"][_]
          msg := sprintf("inventory %v %v %v", [s.metadata.name, s.data, s.stringData])
        }
"#;

const INVENTORY_CONSTRAINT: &str = r#"apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sInventoryLeak
metadata:
  name: inventory-leak
spec:
  enforcementAction: deny
  match:
    kinds:
      - apiGroups: [""]
        kinds: ["Pod"]
"#;

fn gatekeeper_policies() -> Vec<(String, String)> {
    vec![
        ("leaky-template.yaml".into(), TEMPLATE.into()),
        (
            "leaky-secret-warn.yaml".into(),
            constraint("leaky-secret-warn", "warn"),
        ),
        (
            "leaky-secret-deny.yaml".into(),
            constraint("leaky-secret-deny", "deny"),
        ),
    ]
}

fn texts_of(body: &Value) -> (String, Vec<String>, Vec<String>) {
    let r = response(body);
    let message = r["status"]["message"].as_str().unwrap_or("").to_string();
    let annotations = r["auditAnnotations"]
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (message, warnings(body), annotations)
}

/// The careless policies quote every value in messages, warnings and audit annotations of a real
/// server's answers, for a Secret's CREATE and for an UPDATE whose old object alone holds the
/// canaries, over HTTP/1.1 and HTTP/2; with every log at trace level, nothing leaks into the
/// answers, the logs, stdout or /metrics, and each quoting text says `[redacted]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_scrubs_secret_values_from_answers_logs_and_metrics() {
    let mut extra = careless_policies();
    extra.extend(gatekeeper_policies());
    let regate = Regate::start(BinaryOptions {
        log_level: "trace".into(),
        extra_policies: extra,
        ..BinaryOptions::default()
    });
    let bodies = [
        (
            "create",
            review("create", "CREATE", secret("app"), Value::Null),
        ),
        (
            "update-old-only",
            review("update", "UPDATE", harmless_secret("app"), secret("app")),
        ),
    ];
    for client in [regate.http1(), regate.http2()] {
        for (what, body) in &bodies {
            for endpoint in ["/validate", "/mutate"] {
                let (status, _, answer) = post(&client, &regate.url(endpoint), body.clone()).await;
                assert_eq!(status, 200, "{what} {endpoint}: {answer}");
                let text = answer.to_string();
                assert_clean(&format!("{what} {endpoint} answer"), &text);
                if endpoint == "/mutate" {
                    continue;
                }
                let (message, warnings, annotations) = texts_of(&answer);
                assert_eq!(response(&answer)["allowed"], false, "{text}");
                for id in ["leaky-deny", "leaky-secret-deny"] {
                    assert!(message.contains(&format!("[{id}]")), "{what}: {message}");
                }
                assert!(message.contains("[redacted]"), "{what}: {message}");
                for id in ["leaky-warn", "leaky-secret-warn"] {
                    assert!(
                        warnings
                            .iter()
                            .any(|w| w.contains(&format!("[{id}]")) && w.contains("[redacted]")),
                        "{what}: {warnings:?}"
                    );
                }
                assert!(
                    !annotations.is_empty() && annotations.iter().all(|a| a.contains("[redacted]")),
                    "{what}: {annotations:?}"
                );
            }
        }
    }
    // A field of the review holding a copy of a value: the parser's message quotes it no more.
    let mut wrong: Value =
        serde_json::from_slice(&review("wrong", "CREATE", secret("app"), Value::Null)).unwrap();
    wrong["request"]["dryRun"] = json!(RAW);
    let wrong = serde_json::to_vec(&wrong).unwrap();
    for endpoint in ["/validate", "/mutate"] {
        let (status, _, answer) = post(&regate.http1(), &regate.url(endpoint), wrong.clone()).await;
        assert_eq!(status, 400, "{endpoint}: {answer}");
        let message = response(&answer)["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains("invalid type: string [redacted], expected a boolean"),
            "{endpoint}: {message}"
        );
        assert_clean(
            &format!("{endpoint} answer to a wrong dryRun"),
            &answer.to_string(),
        );
    }
    assert!(regate.wait_log("admission decision", 8, std::time::Duration::from_secs(10)));
    assert_clean("the log (trace)", &regate.logs());
    assert_clean("stdout", &regate.stdout_text());
    assert_clean("/metrics", &regate.metrics_text().await);
}

/// A policy `print()`s every value of the Secret it judges. At every log level (`off` too),
/// `serve` writes none of it: not to stderr (where regorus would print), not to stdout, not in
/// the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_never_reach_serve_output_at_any_log_level() {
    for level in ["off", "error", "warn", "info", "debug", "trace"] {
        let regate = Regate::start(BinaryOptions {
            log_level: level.into(),
            extra_policies: vec![careless_policies().pop().unwrap()],
            ..BinaryOptions::default()
        });
        let client = regate.http1();
        for body in [
            review("p1", "CREATE", secret("app"), Value::Null),
            review("p2", "UPDATE", harmless_secret("app"), secret("app")),
        ] {
            let (status, _, answer) = post(&client, &regate.url("/validate"), body).await;
            assert_eq!(status, 200, "{answer}");
            // The print policy ran: its warning is there.
            assert!(
                warnings(&answer)
                    .iter()
                    .any(|w| w.contains("[leaky-print]")),
                "{answer}"
            );
            assert_clean(&format!("answer at {level}"), &answer.to_string());
        }
        let logs = regate.logs();
        assert!(!logs.contains("checking key"), "{level}: {logs}");
        assert_clean(&format!("stderr at {level}"), &logs);
        let stdout = regate.stdout_text();
        assert!(!stdout.contains("checking key"), "{level}: {stdout}");
        assert_clean(&format!("stdout at {level}"), &stdout);
    }
}

/// A directory of policies (the careless ones, the Gatekeeper ones, the inventory template),
/// manifests (a Secret, and a Pod the inventory template judges) and an inventory holding a
/// Secret with the canaries.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Workspace {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let policies = root.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        let mut all = careless_policies();
        all.extend(gatekeeper_policies());
        all.push(("inventory-template.yaml".into(), INVENTORY_TEMPLATE.into()));
        all.push((
            "inventory-constraint.yaml".into(),
            INVENTORY_CONSTRAINT.into(),
        ));
        for (name, text) in all {
            std::fs::write(policies.join(name), text).unwrap();
        }
        std::fs::create_dir_all(root.join("manifests")).unwrap();
        std::fs::write(
            root.join("manifests/secret.yaml"),
            serde_json::to_string_pretty(&secret("app")).unwrap(),
        )
        .unwrap();
        std::fs::write(
            root.join("manifests/pod.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: prod\nspec:\n  containers:\n    - name: c\n      image: nginx\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("inventory")).unwrap();
        std::fs::write(
            root.join("inventory/secret.yaml"),
            serde_json::to_string_pretty(&secret("db-credentials")).unwrap(),
        )
        .unwrap();
        Workspace { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs `regate <args>` in the workspace: (exit code, stdout, stderr).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_regate"))
            .env_remove("REGATE_POLICIES")
            .env_remove("REGATE_CONFIG")
            .env_remove("REGATE_INCLUDE_DEFAULTS")
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }
}

/// `regate eval` (text and JSON) quotes nothing; `--prints` shows what the policies printed,
/// scrubbed; an inventory Secret quoted by a referential constraint is scrubbed too.
#[test]
fn eval_output_and_prints_are_scrubbed() {
    let ws = Workspace::new();
    for output in ["text", "json"] {
        let (code, stdout, stderr) = ws.run(&[
            "eval",
            "--policies",
            "policies",
            "-f",
            "manifests",
            "--inventory",
            "inventory",
            "--prints",
            "-o",
            output,
        ]);
        assert_eq!(code, 1, "{stdout}\n{stderr}");
        assert_clean(&format!("eval -o {output} stdout"), &stdout);
        assert_clean(&format!("eval -o {output} stderr"), &stderr);
        assert!(stdout.contains("[redacted]"), "{stdout}");
        assert!(stdout.contains("inventory-leak"), "{stdout}");
        assert!(
            stderr.contains("checking key DB_PASSWORD") && stderr.contains("[redacted]"),
            "{stderr}"
        );
    }
    // Without --prints, nothing printed.
    let (_, _, stderr) = ws.run(&["eval", "--policies", "policies", "-f", "manifests"]);
    assert!(!stderr.contains("checking key"), "{stderr}");
}

/// A patch rule that copies a Secret's value: `/mutate` must send the value (it is the
/// mutation), but `regate eval` prints the patch as any other text, scrubbed.
#[test]
fn eval_prints_a_patch_copying_a_secret_value_scrubbed() {
    let ws = Workspace::new();
    let dir = ws.path("patching");
    std::fs::create_dir_all(&dir).unwrap();
    let (name, text) = native(
        "leaky-patch",
        "deny",
        r#"
patch contains {"op": "add", "path": "/metadata/annotations/copied", "value": input.request.object.stringData.RAW_KEY}

patch contains {"op": "add", "path": "/metadata/labels/pin", "value": input.request.object.stringData.PIN}
"#,
    );
    std::fs::write(dir.join(name), text).unwrap();
    for output in ["text", "json"] {
        let (code, stdout, stderr) = ws.run(&[
            "eval",
            "--policies",
            "patching",
            "-f",
            "manifests/secret.yaml",
            "-o",
            output,
        ]);
        assert_eq!(code, 0, "{stdout}\n{stderr}");
        assert_clean(&format!("eval -o {output} of a patch"), &stdout);
        assert_clean(&format!("eval -o {output} stderr"), &stderr);
        let patch = if output == "json" {
            let results: Vec<Value> = serde_json::from_str(&stdout).unwrap();
            results[0]["patch"].to_string()
        } else {
            stdout.clone()
        };
        // The two adds, as the diff writes them: the missing maps, holding the copies.
        for copied in [r#""copied":"[redacted]""#, r#""pin":"[redacted]""#] {
            assert!(patch.contains(copied), "{copied} in {patch}");
        }
    }
}

/// A document the parser refuses because of a value (`!!int` on a string): the message of
/// `eval` and of every `audit -f` report keeps the position and the type, not the value.
#[test]
fn parse_errors_do_not_quote_the_value_they_refuse() {
    let ws = Workspace::new();
    std::fs::write(
        ws.path("manifests/broken.yaml"),
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: broken\n  namespace: prod\nstringData:\n  PIN: !!int {RAW}\n  OTHER: !!bool \"{SHORT}\"\n"
        ),
    )
    .unwrap();
    for output in ["text", "json"] {
        let (code, stdout, stderr) = ws.run(&[
            "eval",
            "--policies",
            "policies",
            "-f",
            "manifests/broken.yaml",
            "-o",
            output,
        ]);
        assert_eq!(code, 2, "{stdout}\n{stderr}");
        assert_clean(&format!("eval -o {output} of a broken Secret"), &stdout);
        assert_clean(&format!("eval -o {output} stderr"), &stderr);
        assert!(
            stdout.contains("invalid value: string [redacted], expected an integer"),
            "{stdout}"
        );
        assert!(stdout.contains("broken.yaml:7"), "{stdout}");
    }
    for format in ["text", "json", "sarif"] {
        let (code, stdout, stderr) = ws.run(&[
            "audit",
            "--policies",
            "policies",
            "-f",
            "manifests/broken.yaml",
            "-o",
            format,
        ]);
        assert_eq!(code, 2, "{format}: {stdout}\n{stderr}");
        assert_clean(&format!("audit -o {format} of a broken Secret"), &stdout);
        assert_clean(&format!("audit -o {format} stderr"), &stderr);
        assert!(stdout.contains("[redacted]"), "{format}: {stdout}");
    }
}

/// The inventory's Secret values are scrubbed from a constraint's message even when the
/// request itself holds no Secret.
#[test]
fn inventory_secret_values_are_scrubbed_from_constraint_messages() {
    let ws = Workspace::new();
    let (code, stdout, stderr) = ws.run(&[
        "eval",
        "--policies",
        "policies",
        "-f",
        "manifests/pod.yaml",
        "--inventory",
        "inventory",
        "-o",
        "json",
    ]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    let results: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    let message = results[0]["violations"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("inventory db-credentials") && message.contains("[redacted]"),
        "{message}"
    );
    assert_clean("eval of a Pod with a Secret inventory", &stdout);
}

/// Every audit report format of a Secret and of a Pod judged against a Secret inventory.
#[test]
fn audit_reports_in_every_format_are_scrubbed() {
    let ws = Workspace::new();
    let audit = |format: &str, extra: &[&str]| {
        let mut args = vec![
            "audit",
            "--policies",
            "policies",
            "-f",
            "manifests",
            "--inventory",
            "inventory",
            "-o",
            format,
        ];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = ws.run(&args);
        assert!(
            code == 0 || code == 1,
            "{format}: {code}\n{stdout}\n{stderr}"
        );
        assert_clean(&format!("audit -o {format} {extra:?}"), &stdout);
        assert_clean(&format!("audit -o {format} {extra:?} stderr"), &stderr);
        assert!(stdout.contains("[redacted]"), "{format}: {stdout}");
        stdout
    };
    let formats = "text json policyreport openreports junit sarif html".split(' ');
    for format in formats.clone() {
        audit(format, &[]);
    }
    // With a baseline: every finding unchanged (their messages are in the states' output).
    let baseline = ws.path("baseline.json");
    std::fs::write(&baseline, audit("json", &[])).unwrap();
    // A finding gone since the baseline: resolved results quote the baseline's message.
    let mut gone: Value =
        serde_json::from_str(&std::fs::read_to_string(&baseline).unwrap()).unwrap();
    let mut extra = gone["findings"][0].clone();
    extra["name"] = json!("deleted-since");
    gone["findings"].as_array_mut().unwrap().push(extra);
    std::fs::write(&baseline, gone.to_string()).unwrap();
    for format in formats {
        audit(format, &["--baseline", baseline.to_str().unwrap()]);
    }
}

/// `regate test`: a failing case shows its explanation (rules, prints), scrubbed, and its messages.
#[test]
fn test_output_shows_scrubbed_prints_of_failing_cases() {
    let ws = Workspace::new();
    let case = json!({"cases": [{
        "name": "a careless Secret",
        "namespace": "prod",
        "object": secret("app"),
        "expect": {"allowed": true},
    }]});
    std::fs::write(
        ws.path("cases.yaml"),
        serde_json::to_string_pretty(&case).unwrap(),
    )
    .unwrap();
    let (code, stdout, stderr) = ws.run(&["test", "policies", "cases.yaml"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert!(stdout.contains("FAIL"), "{stdout}");
    // The explanation of the failing case (as `eval --explain` gives it) holds the prints of
    // the policies it explains.
    assert!(stdout.contains("explain Secret app"), "{stdout}");
    assert!(
        stdout.contains("[leaky-print] checked the values")
            && stdout.contains("checking key DB_PASSWORD"),
        "{stdout}"
    );
    assert!(stdout.contains("[redacted]"), "{stdout}");
    assert_clean("regate test stdout", &stdout);
    assert_clean("regate test stderr", &stderr);
}

/// `regate verify` prints the messages of failed cases: scrubbed, for a Secret under review and
/// for a Secret in a case's inventory.
#[test]
fn verify_output_is_scrubbed() {
    let ws = Workspace::new();
    let suite = ws.path("suite");
    std::fs::create_dir_all(&suite).unwrap();
    std::fs::write(suite.join("template.yaml"), TEMPLATE).unwrap();
    std::fs::write(
        suite.join("constraint.yaml"),
        constraint("leaky-secret-deny", "deny"),
    )
    .unwrap();
    std::fs::write(suite.join("inventory-template.yaml"), INVENTORY_TEMPLATE).unwrap();
    std::fs::write(
        suite.join("inventory-constraint.yaml"),
        INVENTORY_CONSTRAINT,
    )
    .unwrap();
    std::fs::copy(ws.path("manifests/secret.yaml"), suite.join("secret.yaml")).unwrap();
    std::fs::copy(ws.path("manifests/pod.yaml"), suite.join("pod.yaml")).unwrap();
    std::fs::copy(
        ws.path("inventory/secret.yaml"),
        suite.join("inventory-secret.yaml"),
    )
    .unwrap();
    std::fs::write(
        suite.join("suite.yaml"),
        r#"kind: Suite
apiVersion: test.gatekeeper.sh/v1alpha1
tests:
  - name: leaky
    template: template.yaml
    constraint: constraint.yaml
    cases:
      - name: secret under review
        object: secret.yaml
        assertions:
          - violations: no
  - name: inventory
    template: inventory-template.yaml
    constraint: inventory-constraint.yaml
    cases:
      - name: secret in the inventory
        object: pod.yaml
        inventory: [inventory-secret.yaml]
        assertions:
          - violations: no
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = ws.run(&["verify", "suite"]);
    assert_eq!(code, 1, "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("FAIL").count(), 2, "{stdout}");
    assert!(stdout.contains("[redacted]"), "{stdout}");
    assert!(stdout.contains("inventory db-credentials"), "{stdout}");
    assert_clean("regate verify stdout", &stdout);
    assert_clean("regate verify stderr", &stderr);
}

// --- config-schema: the seeds' rules, and a Secret canary in every kind of failing rule -------

/// The seeds' entries (fixtures/config-schema/regate.yaml) plus two entries for Secrets named
/// `canary-*` that every kind of rule breaks, as JSON (which is YAML).
fn config_schema_config() -> String {
    let text = std::fs::read_to_string(repo().join("fixtures/config-schema/regate.yaml")).unwrap();
    let mut config: Value = serde_yaml::from_str(&text).unwrap();
    let schemas = config["policies"]["config-schema"]["parameters"]["schemas"]
        .as_array_mut()
        .unwrap();
    schemas.push(json!({
        "name": "canary-rules",
        "match": {"kinds": ["Secret"], "names": ["canary-*"], "namespaces": ["*-production"]},
        "schema": {
            "additionalProperties": false,
            "required": ["MUST_EXIST"],
            "properties": {
                "MIN": {"minLength": 200}, "MAX": {"maxLength": 3},
                "PAT": {"pattern": "^postgres://"}, "URI": {"format": "uri"},
                "MAIL": {"format": "email"}, "ENUM": {"enum": ["a", "b"]},
                "CONST": {"const": "fixed"}, "INT": {"type": "integer"},
                "NUM": {"type": "number", "exclusiveMaximum": 0}, "BOOL": {"type": "boolean"},
                "NOT": {"not": {"pattern": "CANARY"}},
                "ANY": {"anyOf": [{"const": "x"}, {"const": "y"}]},
                "ONE": {"oneOf": [{"minLength": 1}, {"pattern": "CANARY"}]},
                "ALL": {"allOf": [{"maxLength": 2}]},
                "DEP": {}, "MUST_EXIST": {}
            },
            "dependentRequired": {"DEP": ["DEP_PARTNER"]},
            "anyOf": [{"required": ["A_KEY"]}, {"required": ["B_KEY"]}]
        },
        "environments": {"production": {"properties": {"MIN": {"minLength": 300}}}}
    }));
    schemas.push(json!({"name": "canary-shape", "match": {"names": ["canary-*"]}, "schema": {"type": "array"}}));
    serde_json::to_string_pretty(&config).unwrap()
}

/// Breaks every rule of `canary-rules` once, each with a canary value (raw and base64).
fn canary_secret() -> Value {
    let c = |tag: &str| format!("CANARY-cs-{tag}-5d1e");
    json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "canary-app", "namespace": "bytebot-production"},
        "stringData": {
            "MIN": c("min"), "MAX": c("max"), "PAT": c("pat"), "URI": c("uri"), "MAIL": c("mail"),
            "ENUM": c("enum"), "CONST": c("const"), "INT": c("int"), "NUM": "12",
            "BOOL": c("bool"), "NOT": c("not"), "ANY": c("any"), "ONE": c("one"),
            "DEP": c("dep"), "EXTRA": c("extra")
        },
        "data": {"ALL": b64(&c("all"))}})
}

/// The messages config-schema gives for `canary_secret()`: one per kind of rule.
const CANARY_RULES: &[&str] = &[
    "canary-rules: MIN is shorter than 300 characters in production",
    "canary-rules: MAX is longer than 3 characters",
    "canary-rules: PAT does not match the required format ^postgres://",
    "canary-rules: URI is not a valid uri",
    "canary-rules: MAIL is not a valid email",
    "canary-rules: ENUM must be one of a, b",
    "canary-rules: CONST must be fixed",
    "canary-rules: INT must be an integer",
    "canary-rules: NUM must be less than 0",
    "canary-rules: BOOL must be true or false",
    "canary-rules: NOT matches a schema it must not match (not)",
    "canary-rules: ANY matches none of its allowed alternatives (anyOf)",
    "canary-rules: ONE must match exactly one of its alternatives (oneOf)",
    "canary-rules: ALL breaks one of its rules (allOf)",
    "canary-rules: DEP_PARTNER is required when DEP is set",
    "canary-rules: EXTRA is not an allowed key",
    "canary-rules: MUST_EXIST is required",
    "canary-rules: at least one of A_KEY, B_KEY must be set",
    "canary-shape: the keys do not satisfy the schema in production",
];

/// One message per seed rule the fixtures break (fixtures/config-schema/manifests).
const SEED_RULES: &[&str] = &[
    "bytebot-agent-config: NODE_ENV must be production in production",
    "bytebot-agent-config: LOG_LEVEL must be one of warn, error in production",
    "bytebot-agent-config: DEBUG_MODE must be false in production",
    "bytebot-agent-config: ENABLE_CONFIG_HOT_RELOAD must be true or false in production",
    "bytebot-agent-config: CONFIG_RELOAD_DEBOUNCE_MS must be at least 100 in production",
    "bytebot-secrets: JWT_SECRET is shorter than 64 characters in production",
    "bytebot-secrets: DATABASE_URL does not match the required format",
    "bytebot-secrets: at least one of ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY must be set in production",
    "agentforge-config: ENVIRONMENT must be production in production",
    "agentforge-config: NATS_URL does not match the required format",
    "agentforge-config: PUBLIC_BASE_URL is not a valid uri in production",
    "agentforge-config: WORKER_CONCURRENCY must be at most 64 in production",
    "agentforge-config: REQUEST_TIMEOUT_SECONDS must be greater than 0 in production",
    "agentforge-config: ALLOWED_HOSTS matches a schema it must not match (not) in production",
    "agentforge-config: TLS_KEY_PATH is required when TLS_CERT_PATH is set in production",
    "agentforge-config: ALERT_EMAIL is required in production",
    "agentforge-config: ALERT_EMAIL is not a valid email in staging",
    "agentforge-config: WORKER_CONCURRENCY must be an integer in staging",
    "bi-monitoring-env: LOG_LEVEL must be warning in production",
    "bi-monitoring-env: ENABLE_PROFILING must be false in production",
    "bi-monitoring-env: METRICS_RETENTION_DAYS must be at least 90 in production",
    "bi-monitoring-env: DEBUG_MODE is required in production",
    "bi-monitoring-env: ENVIRONMENT must be staging in staging",
    "bi-monitoring-env: LOG_LEVEL must be one of info, warning, error in staging",
];

/// Every object of the config-schema fixtures, and the canary Secret.
fn config_schema_objects() -> Vec<Value> {
    let dir = repo().join("fixtures/config-schema/manifests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut objects = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let object: Value = serde::Deserialize::deserialize(doc).unwrap();
            if object.is_object() {
                objects.push(object);
            }
        }
    }
    objects.push(canary_secret());
    objects
}

#[track_caller]
fn assert_has_all(what: &str, text: &str, wanted: &[&str]) {
    let missing: Vec<&&str> = wanted.iter().filter(|m| !text.contains(**m)).collect();
    assert!(missing.is_empty(), "{what} lacks {missing:?}:\n{text}");
}

/// The seeds' rules end to end through a real `regate serve` over TLS: each fires, no answer
/// or log holds a Secret value, and no config-schema message needed the scrubber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_schema_rules_fire_over_tls_and_never_quote_a_value() {
    let regate = Regate::start(BinaryOptions {
        log_level: "trace".into(),
        config: config_schema_config(),
        ..BinaryOptions::default()
    });
    let client = regate.http1();
    let mut messages = String::new();
    for (i, object) in config_schema_objects().into_iter().enumerate() {
        let kind = object["kind"].as_str().unwrap().to_string();
        let resource = if kind == "Secret" {
            "secrets"
        } else {
            "configmaps"
        };
        let body = serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": format!("cs-{i}"), "kind": {"group": "", "version": "v1", "kind": kind},
                "resource": {"group": "", "version": "v1", "resource": resource},
                "name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"],
                "operation": "CREATE", "userInfo": {"username": "alice"}, "object": object,
            }
        }))
        .unwrap();
        let (status, _, answer) = post(&client, &regate.url("/validate"), body).await;
        assert_eq!(status, 200, "{answer}");
        assert_clean("config-schema answer", &answer.to_string());
        let (message, _, _) = texts_of(&answer);
        for part in message
            .split("; [")
            .filter(|p| p.contains("config-schema]"))
        {
            assert!(
                !part.contains("[redacted]"),
                "a message quoted a value: {part}"
            );
        }
        messages.push_str(&message);
        messages.push('\n');
    }
    assert_has_all("the answers", &messages, SEED_RULES);
    assert_has_all("the answers", &messages, CANARY_RULES);
    assert!(regate.wait_log("admission decision", 9, std::time::Duration::from_secs(10)));
    assert_clean("the log (trace)", &regate.logs());
    assert_clean("stdout", &regate.stdout_text());
}

/// `eval` (text, JSON) and `audit` in every report format on the same objects.
#[test]
fn config_schema_eval_and_audit_reports_never_quote_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("regate.yaml"), config_schema_config()).unwrap();
    std::fs::create_dir_all(root.join("manifests")).unwrap();
    for (i, object) in config_schema_objects().iter().enumerate() {
        let text = serde_json::to_string_pretty(object).unwrap();
        std::fs::write(root.join(format!("manifests/{i:02}.json")), text).unwrap();
    }
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_regate"))
            .env_remove("REGATE_POLICIES")
            .env_remove("REGATE_CONFIG")
            .env_remove("REGATE_INCLUDE_DEFAULTS")
            .env_remove("RUST_LOG")
            .current_dir(root)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    for output in ["text", "json"] {
        let (code, stdout, stderr) = run(&[
            "eval",
            "--config",
            "regate.yaml",
            "-f",
            "manifests",
            "-o",
            output,
        ]);
        assert_eq!(code, 1, "{stdout}\n{stderr}");
        assert_clean(&format!("eval -o {output}"), &stdout);
        assert_clean(&format!("eval -o {output} stderr"), &stderr);
        if output == "text" {
            assert_has_all("eval -o text", &stdout, SEED_RULES);
            assert_has_all("eval -o text", &stdout, CANARY_RULES);
        }
    }
    for format in ["text", "json", "policyreport", "junit", "sarif", "html"] {
        let (code, stdout, stderr) = run(&[
            "audit",
            "--config",
            "regate.yaml",
            "-f",
            "manifests",
            "-o",
            format,
        ]);
        assert!(
            code == 0 || code == 1,
            "{format}: {code}\n{stdout}\n{stderr}"
        );
        assert_clean(&format!("audit -o {format}"), &stdout);
        assert_clean(&format!("audit -o {format} stderr"), &stderr);
        assert!(stdout.contains("canary-rules"), "{format}: {stdout}");
    }
}
