//! Secret values never appear in any audit output: Secrets whose values are canaries (plain in
//! stringData, base64 in data, multi-line, and copied into the last-applied annotation) are
//! audited from files and from a cluster, in every format, with the real default policies and
//! with a careless test policy that quotes values in its messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use audit_support::*;
use regate::audit::background;
use regate::environment::NamespaceLabels;
use regate::metrics::Metrics;
use serde_json::{json, Value};

const CANARY_MULTI: &str = "CANARY-multi-5e8b2d9c4a";

fn secrets() -> Vec<Value> {
    let multi = format!("user: admin\npassword: {CANARY_MULTI}\n");
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod", "labels": {"team": "a"}}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "creds", "namespace": "prod",
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                    json!({"apiVersion": "v1", "kind": "Secret", "stringData": {"password": CANARY_PLAIN}}).to_string()}},
            "stringData": {"password": CANARY_PLAIN, "JWT_SECRET": CANARY_PLAIN, "config.yaml": multi},
            "data": {"token": b64(CANARY_B64), "SESSION_SECRET": b64(CANARY_B64), "ENCRYPTION_KEY": b64(CANARY_MULTI)}}),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "placeholder", "namespace": "prod"},
            "stringData": {"ADMIN_PASSWORD": "changeme", "API_KEY": CANARY_PLAIN},
            "data": {"broken": "%%%not-base64", "SIGNING_KEY": b64(CANARY_B64)}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "prod"},
            "data": {"DEBUG": "true"}}),
    ]
}

fn forbidden() -> Vec<String> {
    let mut out = vec![
        "CANARY".to_string(),
        b64(CANARY_PLAIN),
        b64(CANARY_B64),
        b64(CANARY_MULTI),
        b64(&format!("user: admin\npassword: {CANARY_MULTI}\n")),
    ];
    // Fragments of the base64 forms, long enough not to occur by chance.
    for s in [b64(CANARY_PLAIN), b64(CANARY_B64)] {
        out.push(s[..16].to_string());
    }
    out
}

fn assert_clean(what: &str, text: &str) {
    for needle in forbidden() {
        assert!(
            !text.contains(&needle),
            "{what} contains {needle:?}:\n{text}"
        );
    }
}

fn policy_dirs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut dirs = vec![write_policies(dir)];
    let real = repo().join("policies");
    if real.is_dir() {
        dirs.push(real);
    } else {
        eprintln!("note: policies/ is missing; the canary test runs with the test policies only");
    }
    dirs
}

const FORMATS: [&str; 7] = [
    "text",
    "json",
    "policyreport",
    "openreports",
    "junit",
    "sarif",
    "html",
];

#[test]
fn canaries_never_appear_in_file_audits() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("secrets.yaml");
    let yaml: Vec<String> = secrets()
        .iter()
        .map(|o| serde_yaml::to_string(o).unwrap())
        .collect();
    std::fs::write(&manifest, yaml.join("---\n")).unwrap();
    for policies in policy_dirs(dir.path()) {
        for format in FORMATS {
            let out_file = dir.path().join(format!("report.{format}"));
            let out = Command::new(regate_bin())
                .args(["audit", "-f"])
                .arg(&manifest)
                .arg("--policies")
                .arg(&policies)
                .args(["-o", format, "--fail-on", "never"])
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8(out.stdout).unwrap();
            let what = format!("{format} with {}", policies.display());
            assert_clean(&what, &stdout);
            assert_clean(&what, &String::from_utf8(out.stderr).unwrap());
            // The Secrets were judged: findings exist and name keys.
            assert!(stdout.contains("creds"), "{what}: {stdout}");
            // Same through --output-file.
            let status = Command::new(regate_bin())
                .args(["audit", "-f"])
                .arg(&manifest)
                .arg("--policies")
                .arg(&policies)
                .args(["-o", format, "--fail-on", "never", "--output-file"])
                .arg(&out_file)
                .status()
                .unwrap();
            assert!(status.success());
            assert_clean(&what, &std::fs::read_to_string(&out_file).unwrap());
        }
    }
}

#[test]
fn canaries_never_appear_in_cluster_audits_or_applied_reports() {
    let server = FakeApiServer::start(secrets());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    for policies in policy_dirs(dir.path()) {
        for format in FORMATS {
            let out = Command::new(regate_bin())
                .args(["audit", "--cluster", "--kubeconfig"])
                .arg(&kubeconfig)
                .arg("--policies")
                .arg(&policies)
                .args(["-o", format, "--fail-on", "never"])
                .env_remove("KUBECONFIG")
                .output()
                .unwrap();
            let what = format!("cluster {format} with {}", policies.display());
            assert_eq!(
                out.status.code(),
                Some(0),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8(out.stdout).unwrap();
            assert_clean(&what, &stdout);
            assert_clean(&what, &String::from_utf8(out.stderr).unwrap());
            assert!(stdout.contains("creds"), "{what}");
        }
        // The background audit's applied PolicyReports, its metrics and its logs' inputs.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let set = Arc::new(build_set(&policies, NamespaceLabels::default()));
            let metrics = Metrics::new().unwrap();
            let leader = AtomicBool::new(true);
            background::run_once(&server.client(), set, &metrics, 500, &leader)
                .await
                .unwrap();
            let reports = serde_json::to_string(&server.reports()).unwrap();
            assert!(reports.contains("creds"));
            assert_clean("applied reports", &reports);
            assert_clean("metrics", &metrics.render());
            // The same through OpenReports.
            let mut resources = standard_resources();
            resources.extend(openreports_resources());
            let openreports = FakeApiServer::start_with(ApiState {
                resources,
                ..ApiState::default()
            });
            openreports.set_objects(secrets());
            let set = Arc::new(build_set(&policies, NamespaceLabels::default()));
            background::run_once(&openreports.client(), set, &metrics, 500, &leader)
                .await
                .unwrap();
            let reports = serde_json::to_string(&openreports.report_objects()).unwrap();
            assert!(reports.contains("openreports.io/v1alpha1"), "{reports}");
            assert!(reports.contains("creds"));
            assert_clean("applied OpenReports", &reports);
        });
    }
}
