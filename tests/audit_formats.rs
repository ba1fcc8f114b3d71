//! `regate audit -f`: every output format parsed back, `--fail-on` exit codes, and the real
//! default policies over the repository's manifests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use audit_support::*;
use regate::audit::files::{audit_paths, FileOptions};
use regate::audit::report::openreports::{self, Limits, ReportApi};
use regate::audit::report::{self, FailOn, Format};
use regate::audit::totals::NamespaceCounts;
use regate::audit::{Finding, Label, ObjectRecord};
use regate::config::{Environment, ReportStatus};
use regate::environment::NamespaceLabels;
use regate::policy::metadata::Severity;
use serde_json::Value;

const APP: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: prod
spec:
  containers:
  - name: app
    image: nginx:1.27
    securityContext: {privileged: true}
---
# the settings
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: prod}
data: {DEBUG: \"true\"}
---
apiVersion: v1
kind: Namespace
metadata: {name: teamless}
";

const OK: &str = r#"{"apiVersion": "v1", "kind": "Pod",
 "metadata": {"name": "ok", "namespace": "shop"},
 "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "resources": {"limits": {"memory": "64Mi"}}}]}}
"#;

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: svc}
spec:
  ports: [{port: 80}]
";

/// A manifest tree: app.yaml (3 documents, lines 1, 12 and 18), sub/ok.json, sub/svc.yaml.
fn manifests(dir: &Path) -> PathBuf {
    let root = dir.join("manifests");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("app.yaml"), APP).unwrap();
    std::fs::write(root.join("sub/ok.json"), OK).unwrap();
    std::fs::write(root.join("sub/svc.yaml"), SERVICE).unwrap();
    root
}

fn audit(format: Format, fail_on: FailOn) -> (String, regate::audit::AuditRun, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let policies = write_policies(dir.path());
    let root = manifests(dir.path());
    let set = Arc::new(build_set(&policies, NamespaceLabels::default()));
    let opts = FileOptions {
        keep_passing: format.lists_passing(),
        page_size: 2,
        ..FileOptions::default()
    };
    let mut run = audit_paths(set, &[root], &opts).unwrap();
    let mut out = Vec::new();
    report::write(format, &mut run, fail_on, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), run, dir)
}

#[test]
fn json_lists_every_finding_with_its_label_file_and_line() {
    let (text, run, _dir) = audit(Format::Json, FailOn::Deny);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["kind"], "AuditReport");
    assert_eq!(v["source"], "files");
    assert_eq!(v["complete"], true);
    assert_eq!(v["summary"]["objects"], 5);
    assert_eq!(v["summary"]["objectsWithFindings"], 4);
    let s = &v["summary"]["findings"];
    assert_eq!(
        (
            s["deny"].as_u64(),
            s["warn"].as_u64(),
            s["audit"].as_u64(),
            s["error"].as_u64()
        ),
        (Some(2), Some(1), Some(1), Some(1))
    );
    assert_eq!(v["summary"]["byPolicy"]["t-privileged"]["deny"], 1);
    assert_eq!(v["summary"]["bySeverity"]["high"]["deny"], 1);
    assert_eq!(v["summary"]["byNamespace"]["prod"]["objects"], 2);
    assert_eq!(v["summary"]["byNamespace"]["shop"]["pass"], 1);
    assert_eq!(v["policies"].as_array().unwrap().len(), 5);
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len() as u64, run.totals.findings.total());
    let find = |policy: &str, action: &str| {
        findings
            .iter()
            .find(|f| f["policy"] == policy && f["action"] == action)
            .unwrap_or_else(|| panic!("no {action} finding of {policy}: {text}"))
    };
    let web = find("t-privileged", "deny");
    assert_eq!(web["kind"], "Pod");
    assert_eq!(web["apiVersion"], "v1");
    assert_eq!(web["namespace"], "prod");
    assert_eq!(web["name"], "web");
    assert_eq!(web["severity"], "high");
    assert_eq!(web["rule"], "deny");
    assert_eq!(web["environment"], "production");
    assert_eq!(web["line"], 1);
    assert!(web["file"]
        .as_str()
        .unwrap()
        .ends_with("manifests/app.yaml"));
    assert_eq!(web["path"], "spec.containers[].securityContext.privileged");
    assert_eq!(web["category"], "Pod Security");
    assert_eq!(find("t-privileged", "warn")["rule"], "warn");
    let settings = find("t-debug", "deny");
    assert_eq!(settings["line"], 12);
    assert_eq!(settings["path"], "data[DEBUG]");
    assert!(settings.get("category").is_none());
    let privileged = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "t-privileged")
        .unwrap();
    assert_eq!(privileged["category"], "Pod Security");
    let ns = find("t-namespace-team", "audit");
    assert_eq!(ns["line"], 18);
    assert!(ns.get("namespace").is_none(), "cluster-scoped");
    let svc = find("t-broken", "error");
    assert_eq!(svc["namespace"], "default");
    assert!(svc["message"]
        .as_str()
        .unwrap()
        .contains("invalid rule output"));
}

#[test]
fn sarif_points_at_file_and_line() {
    let (text, _run, _dir) = audit(Format::Sarif, FailOn::Deny);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], "2.1.0");
    assert!(v["$schema"].as_str().unwrap().contains("sarif-2.1.0"));
    let run = &v["runs"][0];
    assert_eq!(run["tool"]["driver"]["name"], "regate");
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"t-privileged") && ids.contains(&"t-debug"));
    let privileged = rules.iter().find(|r| r["id"] == "t-privileged").unwrap();
    assert_eq!(
        privileged["shortDescription"]["text"],
        "Containers are not privileged"
    );
    assert_eq!(privileged["properties"]["security-severity"], "8.0");
    assert_eq!(run["invocations"][0]["executionSuccessful"], true);
    let results = run["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    for r in results {
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[i]["id"], r["ruleId"]);
        let loc = &r["locations"][0]["physicalLocation"];
        assert!(loc["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .starts_with("file:///"));
        assert!(loc["region"]["startLine"].as_u64().unwrap() >= 1);
    }
    let level = |policy: &str, action: &str| {
        let r = results
            .iter()
            .find(|r| r["ruleId"] == policy && r["properties"]["action"] == action)
            .unwrap();
        (r["level"].as_str().unwrap().to_string(), r.clone())
    };
    let (l, deny) = level("t-privileged", "deny");
    assert_eq!(l, "error");
    let loc = &deny["locations"][0];
    assert!(loc["physicalLocation"]["artifactLocation"]["uri"]
        .as_str()
        .unwrap()
        .ends_with("/manifests/app.yaml"));
    assert_eq!(loc["physicalLocation"]["region"]["startLine"], 1);
    assert_eq!(
        loc["logicalLocations"][0]["fullyQualifiedName"],
        "prod/Pod/web"
    );
    assert_eq!(level("t-privileged", "warn").0, "warning");
    assert_eq!(level("t-namespace-team", "audit").0, "note");
    assert_eq!(level("t-broken", "error").0, "error");
    let (_, debug) = level("t-debug", "deny");
    assert_eq!(
        debug["locations"][0]["physicalLocation"]["region"]["startLine"],
        12
    );
}

#[test]
fn sarif_uses_relative_uris_for_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let policies = write_policies(dir.path());
    manifests(dir.path());
    let out = Command::new(regate_bin())
        .current_dir(dir.path())
        .args([
            "audit",
            "-f",
            "manifests",
            "-o",
            "sarif",
            "--fail-on",
            "never",
            "--policies",
        ])
        .arg(&policies)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let uris: Vec<(&str, &str)> = v["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let a = &r["locations"][0]["physicalLocation"]["artifactLocation"];
            (a["uri"].as_str().unwrap(), a["uriBaseId"].as_str().unwrap())
        })
        .collect();
    assert!(
        uris.contains(&("manifests/app.yaml", "%SRCROOT%")),
        "{uris:?}"
    );
    assert!(
        uris.contains(&("manifests/sub/svc.yaml", "%SRCROOT%")),
        "{uris:?}"
    );
}

#[test]
fn junit_has_one_case_per_object_and_policy() {
    let (text, run, _dir) = audit(Format::Junit, FailOn::Deny);
    let root = parse_xml(&text);
    assert_eq!(root.name, "testsuites");
    // web: t-privileged; settings: t-debug; teamless: t-namespace-team; ok: t-privileged; svc: t-broken.
    assert_eq!(root.attr("tests"), "5");
    assert_eq!(run.totals.pairs, 5);
    assert_eq!(root.attr("failures"), "2");
    assert_eq!(root.attr("errors"), "1");
    let suites = root.find_all("testsuite");
    let names: Vec<&str> = suites.iter().map(|s| s.attr("name")).collect();
    assert_eq!(
        names,
        vec![
            "namespace (cluster-scoped)",
            "namespace default",
            "namespace prod",
            "namespace shop"
        ]
    );
    let cases = root.find_all("testcase");
    assert_eq!(cases.len(), 5);
    let case = |name: &str| {
        *cases
            .iter()
            .find(|c| c.attr("name") == name)
            .unwrap_or_else(|| panic!("{name}: {text}"))
    };
    let web = case("t-privileged: Pod prod/web");
    assert_eq!(web.attr("classname"), "regate.t-privileged");
    assert!(web.attr("file").ends_with("manifests/app.yaml"));
    assert_eq!(web.attr("line"), "1");
    let failure = web.find_all("failure")[0];
    assert_eq!(failure.attr("type"), "deny");
    assert_eq!(failure.attr("message"), "container \"app\" is privileged");
    assert!(failure
        .text
        .contains("DENY [high] container \"app\" is privileged"));
    assert!(failure
        .text
        .contains("WARN [high] container \"app\" has no memory limit"));
    assert!(
        case("t-privileged: Pod shop/ok").children.is_empty(),
        "passing case"
    );
    let ns = case("t-namespace-team: Namespace teamless");
    assert!(ns.find_all("failure").is_empty());
    assert!(ns.find_all("system-out")[0]
        .text
        .contains("AUDIT [low] namespace has no team label"));
    let svc = case("t-broken: Service default/svc");
    assert_eq!(svc.find_all("error").len(), 1);
    let prod = suites
        .iter()
        .find(|s| s.attr("name") == "namespace prod")
        .unwrap();
    assert_eq!(
        (
            prod.attr("tests"),
            prod.attr("failures"),
            prod.attr("errors")
        ),
        ("2", "2", "0")
    );

    // Under --fail-on never nothing fails; the findings stay in system-out.
    let (text, _, _dir) = audit(Format::Junit, FailOn::Never);
    let root = parse_xml(&text);
    assert_eq!((root.attr("failures"), root.attr("errors")), ("0", "0"));
    assert!(root.find_all("failure").is_empty());
    assert_eq!(root.find_all("system-out").len(), 4);
}

#[test]
fn policyreport_per_namespace_and_cluster() {
    let (text, _run, _dir) = audit(Format::Policyreport, FailOn::Deny);
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<(String, String)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("ClusterPolicyReport".to_string(), String::new()),
            ("PolicyReport".to_string(), "default".to_string()),
            ("PolicyReport".to_string(), "prod".to_string()),
            ("PolicyReport".to_string(), "shop".to_string()),
        ]
    );
    for d in &docs {
        assert_eq!(d["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(
            d["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "regate"
        );
    }
    let cluster = &docs[0];
    assert_eq!(cluster["summary"]["fail"], 1);
    assert_eq!(cluster["results"][0]["properties"]["action"], "audit");
    assert_eq!(cluster["results"][0]["properties"]["line"], "18");
    assert!(cluster["results"][0]["resources"][0]
        .get("namespace")
        .is_none());
    let prod = &docs[2];
    assert_eq!(prod["summary"]["fail"], 2);
    assert_eq!(prod["summary"]["warn"], 1);
    assert_eq!(prod["summary"]["pass"], 0);
    let results = prod["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        assert_eq!(r["source"], "regate");
        assert!(["fail", "warn"].contains(&r["result"].as_str().unwrap()));
        assert!(r["timestamp"]["seconds"].as_i64().unwrap() > 1_600_000_000);
        assert_eq!(r["resources"][0]["namespace"], "prod");
        assert_category(r);
    }
    let shop = &docs[3];
    assert_eq!(shop["summary"]["pass"], 1);
    assert_eq!(shop["results"].as_array().unwrap().len(), 0);
    assert_eq!(docs[1]["summary"]["error"], 1);
}

/// A result carries its policy's declared category (t-privileged declares one), and no
/// `category` at all for a policy that declares none.
fn assert_category(result: &Value) {
    if result["policy"] == "t-privileged" {
        assert_eq!(result["category"], "Pod Security", "{result:#}");
    } else {
        assert!(result.get("category").is_none(), "{result:#}");
    }
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

/// Checks OpenReports objects against the reports-api v1alpha1 CRDs (when the corpus is here).
fn assert_openreports_schema(docs: &[Value]) {
    let Some(corpus) = common::corpus("openreports") else {
        return;
    };
    let report = openreports_schema(&corpus, "reports");
    let cluster = openreports_schema(&corpus, "clusterreports");
    for d in docs {
        let schema = match d["kind"].as_str().unwrap() {
            "Report" => &report,
            "ClusterReport" => &cluster,
            other => panic!("unexpected kind {other}"),
        };
        let violations = schema_violations(schema, d);
        assert!(violations.is_empty(), "{violations:#?}\n{d:#}");
    }
}

/// The sum of the summaries of `docs`: (pass, fail, warn, error).
fn summary_sum(docs: &[Value]) -> (u64, u64, u64, u64) {
    docs.iter().fold((0, 0, 0, 0), |acc, d| {
        let s = &d["summary"];
        (
            acc.0 + s["pass"].as_u64().unwrap(),
            acc.1 + s["fail"].as_u64().unwrap(),
            acc.2 + s["warn"].as_u64().unwrap(),
            acc.3 + s["error"].as_u64().unwrap(),
        )
    })
}

#[test]
fn openreports_per_namespace_and_cluster_follow_the_crd_schema() {
    let (text, run, _dir) = audit(Format::Openreports, FailOn::Deny);
    let docs = yaml_docs(&text);
    let kinds: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap(),
                d["metadata"]["namespace"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("ClusterReport", ""),
            ("Report", "default"),
            ("Report", "prod"),
            ("Report", "shop"),
        ]
    );
    for d in &docs {
        assert_eq!(d["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(d["source"], "regate");
        assert_eq!(d["metadata"]["name"], "regate-audit");
        assert_eq!(d["metadata"]["labels"]["regate.dev/report"], "regate-audit");
        assert_eq!(
            d["configuration"]["limits"]["statusFilter"],
            serde_json::json!(["fail", "warn", "error"])
        );
        assert_eq!(d["configuration"]["limits"]["maxResults"], 1000);
    }
    assert_openreports_schema(&docs);
    let prod = &docs[2];
    assert_eq!(prod["summary"]["fail"], 2);
    assert_eq!(prod["summary"]["warn"], 1);
    let results = prod["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        assert!(["fail", "warn"].contains(&r["result"].as_str().unwrap()));
        assert_eq!(r["resources"][0]["namespace"], "prod");
        assert!(r["severity"].is_string());
        assert_category(r);
    }
    // Every finding and pass is counted once.
    let f = &run.totals.findings;
    assert_eq!(
        summary_sum(&docs),
        (run.totals.passes(), f.deny + f.audit, f.warn, f.error)
    );
}

fn many_findings(namespace: &str, objects: usize, per_object: usize) -> Vec<ObjectRecord> {
    (0..objects)
        .map(|i| ObjectRecord {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: Some(namespace.into()),
            name: format!("pod-{i:05}"),
            uid: None,
            file: None,
            line: None,
            environment: Environment::Production,
            evaluated: vec!["p-ok".into(), "p-bad".into()],
            skipped: None,
            findings: (0..per_object)
                .map(|j| Finding {
                    policy: "p-bad".into(),
                    action: if j % 3 == 0 { Label::Warn } else { Label::Deny },
                    rule: "deny".into(),
                    severity: Severity::High,
                    category: None,
                    message: format!("finding {j} of pod-{i:05}: {}", "x".repeat(300)),
                    path: None,
                })
                .collect(),
        })
        .collect()
}

#[test]
fn openreports_split_by_count_and_bytes_cut_and_filter_keep_every_count() {
    let records = many_findings("big", 500, 10); // 5,000 findings, 500 passes
    let counts = NamespaceCounts {
        pass: 500,
        objects: 500,
        ..NamespaceCounts::default()
    };
    let want = (500, 3_000, 2_000, 0);

    // By count: 1,000 results per report → 5 numbered reports.
    let limits = Limits::default();
    let docs = openreports::build(
        ReportApi::OpenReports,
        "big",
        &records,
        Some(&counts),
        1,
        &limits,
        None,
    );
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "regate-audit",
            "regate-audit-2",
            "regate-audit-3",
            "regate-audit-4",
            "regate-audit-5"
        ]
    );
    for (i, d) in docs.iter().enumerate() {
        assert_eq!(d["results"].as_array().unwrap().len(), 1000);
        assert_eq!(
            d["metadata"]["labels"]["regate.dev/part"],
            (i + 1).to_string()
        );
        assert_eq!(d["metadata"]["annotations"]["regate.dev/parts"], "5");
    }
    assert_eq!(summary_sum(&docs), want);
    assert_openreports_schema(&docs);

    // By bytes: results of ~400 bytes, 100,000 per report allowed → the 1 MiB limit splits.
    let limits = Limits {
        results_per_report: 5_000,
        ..Limits::default()
    };
    let docs = openreports::build(
        ReportApi::OpenReports,
        "big",
        &records,
        Some(&counts),
        1,
        &limits,
        None,
    );
    assert!(docs.len() >= 2, "{} reports", docs.len());
    for d in &docs {
        let bytes = serde_json::to_vec(d).unwrap().len();
        assert!(bytes <= openreports::MAX_REPORT_BYTES, "{bytes} bytes");
    }
    assert_eq!(summary_sum(&docs), want);

    // maxResults cuts: one report of 100 results, the summary still counts everything.
    let limits = Limits {
        max_results: Some(100),
        ..Limits::default()
    };
    let docs = openreports::build(
        ReportApi::OpenReports,
        "big",
        &records,
        Some(&counts),
        1,
        &limits,
        None,
    );
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["results"].as_array().unwrap().len(), 100);
    assert_eq!(
        docs[0]["metadata"]["annotations"]["regate.dev/results-omitted"],
        "4900"
    );
    assert_eq!(docs[0]["configuration"]["limits"]["maxResults"], 100);
    assert_eq!(summary_sum(&docs), want);

    // The status filter: passes listed too (one per passing pair), or warnings only.
    let limits = Limits {
        statuses: vec![ReportStatus::Pass, ReportStatus::Fail, ReportStatus::Warn],
        results_per_report: 5_000,
        max_bytes: usize::MAX,
        ..Limits::default()
    };
    let docs = openreports::build(
        ReportApi::OpenReports,
        "big",
        &records,
        Some(&counts),
        1,
        &limits,
        None,
    );
    let results: Vec<&Value> = docs
        .iter()
        .flat_map(|d| d["results"].as_array().unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "5,500 results, 5,000 per report");
    assert_eq!(
        results.iter().filter(|r| r["result"] == "pass").count(),
        500
    );
    assert_eq!(results.len(), 5_500);
    assert_eq!(summary_sum(&docs), want);
    assert_openreports_schema(&docs);
    let limits = Limits {
        statuses: vec![ReportStatus::Warn],
        ..Limits::default()
    };
    let docs = openreports::build(
        ReportApi::OpenReports,
        "big",
        &records,
        Some(&counts),
        1,
        &limits,
        None,
    );
    assert_eq!(docs.len(), 2);
    assert!(docs
        .iter()
        .flat_map(|d| d["results"].as_array().unwrap())
        .all(|r| r["result"] == "warn"));
    assert_eq!(summary_sum(&docs), want);

    // wgpolicyk8s reports split the same way, without the OpenReports-only fields.
    let docs = openreports::build(
        ReportApi::PolicyReport,
        "",
        &records,
        None,
        1,
        &Limits::default(),
        None,
    );
    assert_eq!(docs.len(), 5);
    assert_eq!(docs[0]["kind"], "ClusterPolicyReport");
    assert!(docs[0].get("configuration").is_none());
}

#[test]
fn text_has_summaries_then_findings() {
    let (text, _run, _dir) = audit(Format::Text, FailOn::Deny);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(
            "regate audit of files: 5 objects judged by 5 policies; 4 objects with findings"
        ),
        "{first}"
    );
    assert!(text.contains("POLICY"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("t-privileged") && l.contains("high")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("(cluster-scoped)")),
        "{text}"
    );
    let findings = text.split("FINDINGS").nth(1).unwrap();
    assert!(
        findings.contains(
            "DENY  high     [t-privileged] Pod prod/web: container \"app\" is privileged"
        ),
        "{text}"
    );
    assert!(
        findings.contains(
            "AUDIT low      [t-namespace-team] Namespace teamless: namespace has no team label"
        ),
        "{text}"
    );
    assert!(
        findings.contains("ERROR medium   [t-broken] Service default/svc"),
        "{text}"
    );
    assert!(findings.contains("app.yaml:12"), "{text}");
}

#[test]
fn html_is_self_contained_with_charts_and_a_searchable_table() {
    let (text, run, _dir) = audit(Format::Html, FailOn::Deny);
    assert!(text.starts_with("<!DOCTYPE html>"));
    for id in ["chart-policy", "chart-namespace", "chart-severity"] {
        assert!(
            text.contains(&format!("<figure id=\"{id}\"><figcaption>")),
            "{id}"
        );
    }
    assert_eq!(text.matches("<svg ").count(), 3);
    assert!(text.contains("<input id=\"q\" type=\"search\""));
    // The findings travel as JSON data, one row each, that the page's script renders a page at
    // a time.
    let data = text
        .split("<script type=\"application/json\" id=\"findings-data\">")
        .nth(1)
        .and_then(|s| s.split("</script>").next())
        .unwrap();
    let rows: Vec<Vec<String>> = serde_json::from_str(data).unwrap();
    assert_eq!(rows.len() as u64, run.totals.findings.total());
    assert!(rows
        .iter()
        .any(|r| r[3] == "t-privileged" && r[2] == "Pod Security"));
    // No external assets: no scripts, styles, images or fonts fetched from anywhere.
    for needle in ["src=", "<link", "@import", "url(", "http://", "https://"] {
        let allowed = needle == "http://"
            && text.matches(needle).count() == text.matches("http://www.w3.org/2000/svg").count();
        assert!(allowed || !text.contains(needle), "found {needle}");
    }
    // Messages are escaped for the script element.
    assert!(data.contains(r#"container \"app\" is privileged"#));
    assert!(!data.contains('<'));
}

fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(regate_bin())
        .current_dir(dir)
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn fail_on_sets_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_policies(dir.path());
    let p = p.to_str().unwrap();
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).unwrap();
        name.to_string()
    };
    let deny = write("deny.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: x, securityContext: {privileged: true}, resources: {limits: {memory: 1Mi}}}]\n");
    let warn = write("warn.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: x}]\n");
    let audit = write(
        "audit.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
    );
    let error = write("error.yaml", SERVICE);
    let clean = write(
        "clean.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: {team: a}}\n",
    );
    let invalid = write(
        "invalid.yaml",
        "apiVersion: v1\nkind: List\nitems: [just a string]\n",
    );
    let code = |file: &str, fail_on: &str| {
        cli(
            dir.path(),
            &[
                "-f",
                file,
                "--policies",
                p,
                "--fail-on",
                fail_on,
                "-o",
                "json",
            ],
        )
        .0
    };
    assert_eq!(code(&deny, "deny"), 1);
    assert_eq!(code(&deny, "warn"), 1);
    assert_eq!(code(&deny, "never"), 0);
    assert_eq!(code(&warn, "deny"), 0);
    assert_eq!(code(&warn, "warn"), 1);
    assert_eq!(code(&warn, "never"), 0);
    assert_eq!(code(&audit, "deny"), 0);
    assert_eq!(
        code(&audit, "warn"),
        0,
        "audit findings are reported, never fail"
    );
    assert_eq!(
        code(&error, "deny"),
        1,
        "a policy that cannot be evaluated fails"
    );
    assert_eq!(code(&error, "never"), 0);
    assert_eq!(code(&clean, "warn"), 0);
    // Input that is not a Kubernetes object: the audit is incomplete.
    let (c, stdout, stderr) = cli(
        dir.path(),
        &[
            "-f",
            &invalid,
            "--policies",
            p,
            "--fail-on",
            "never",
            "-o",
            "json",
        ],
    );
    assert_eq!(c, 2, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["issues"][0]["source"]
        .as_str()
        .unwrap()
        .starts_with("invalid.yaml:1"));
    // Default: --fail-on deny; the closing line goes to stderr.
    let (c, _, stderr) = cli(dir.path(), &["-f", &deny, "--policies", p]);
    assert_eq!(c, 1);
    assert!(
        stderr.contains("regate audit: 1 objects judged"),
        "{stderr}"
    );
    // Standard input, and --output-file.
    let out = dir.path().join("report.json");
    let mut child = Command::new(regate_bin())
        .current_dir(dir.path())
        .args([
            "audit",
            "-f",
            "-",
            "--policies",
            p,
            "-o",
            "json",
            "--output-file",
        ])
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(APP.as_bytes())
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(v["findings"][0]["file"], "<stdin>");
    // -f and --cluster exclude each other.
    assert_eq!(cli(dir.path(), &["-f", &deny, "--cluster"]).0, 2);
}

#[test]
fn default_policies_over_repository_manifests() {
    let repo = repo();
    let policies = repo.join("policies");
    let manifests = repo.join("fixtures/manifests");
    if !policies.is_dir() || !manifests.is_dir() {
        eprintln!("note: policies/ or fixtures/manifests/ missing; skipping");
        return;
    }
    let (code, stdout, stderr) = cli(
        &repo,
        &[
            "-f",
            manifests.to_str().unwrap(),
            "--policies",
            policies.to_str().unwrap(),
            "-o",
            "json",
            "--fail-on",
            "never",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["summary"]["objects"].as_u64().unwrap() > 0);
    assert!(v["policies"].as_array().unwrap().len() >= 3);
    // Every finding names a known policy, a label and a location.
    let ids: Vec<&str> = v["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    for f in v["findings"].as_array().unwrap() {
        assert!(ids.contains(&f["policy"].as_str().unwrap()), "{f}");
        assert!(["deny", "warn", "audit", "error"].contains(&f["action"].as_str().unwrap()));
        assert!(f["line"].as_u64().unwrap() >= 1);
    }
}

/// A file that does not parse (a broken document beside a good one, a file nested past the depth
/// limit) is an error finding at its file and line in every format; everything else is judged,
/// and the audit exits 2 at the end instead of aborting with nothing reported.
#[test]
fn an_unparsable_file_is_an_error_finding_and_the_rest_is_judged() {
    let dir = tempfile::tempdir().unwrap();
    let policies = write_policies(dir.path());
    let root = manifests(dir.path());
    std::fs::write(
        root.join("broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fine, namespace: prod}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n",
    )
    .unwrap();
    std::fs::write(
        root.join("sub/deep.json"),
        format!(
            "{{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"data\": {}1{}}}",
            "[".repeat(5_000),
            "]".repeat(5_000)
        ),
    )
    .unwrap();
    let run = |format: &str, fail_on: &str| {
        cli(
            dir.path(),
            &[
                "-f",
                root.to_str().unwrap(),
                "--policies",
                policies.to_str().unwrap(),
                "--fail-on",
                fail_on,
                "-o",
                format,
            ],
        )
    };

    let (code, text, stderr) = run("json", "never");
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("2 file(s) or document(s) could not be parsed"),
        "{stderr}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["complete"], false);
    assert_eq!(v["summary"]["unreadable"], 2);
    assert_eq!(
        v["summary"]["objects"], 6,
        "the 5 objects and the good document"
    );
    let findings = v["findings"].as_array().unwrap();
    assert!(findings
        .iter()
        .any(|f| f["policy"] == "t-privileged" && f["action"] == "deny"));
    let parse_errors: Vec<&Value> = findings
        .iter()
        .filter(|f| f["policy"] == "manifest-parse")
        .collect();
    assert_eq!(parse_errors.len(), 2, "{text}");
    let broken = parse_errors
        .iter()
        .find(|f| f["file"].as_str().unwrap().ends_with("broken.yaml"))
        .unwrap();
    assert_eq!(broken["action"], "error");
    assert!(broken["line"].as_u64().unwrap() >= 5, "{broken}");
    let deep = parse_errors
        .iter()
        .find(|f| f["file"].as_str().unwrap().ends_with("sub/deep.json"))
        .unwrap();
    assert_eq!(deep["line"], 1);
    assert!(
        deep["message"]
            .as_str()
            .unwrap()
            .contains("nested deeper than 128 levels"),
        "{deep}"
    );

    let (code, text, _) = run("sarif", "deny");
    assert_eq!(code, 2);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["runs"][0]["invocations"][0]["executionSuccessful"], false);
    let results = v["runs"][0]["results"].as_array().unwrap();
    let broken = results
        .iter()
        .find(|r| {
            r["ruleId"] == "manifest-parse"
                && r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                    .as_str()
                    .unwrap()
                    .ends_with("broken.yaml")
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(broken["level"], "error");
    assert!(
        broken["locations"][0]["physicalLocation"]["region"]["startLine"]
            .as_u64()
            .unwrap()
            >= 5
    );

    let (code, text, _) = run("text", "deny");
    assert_eq!(code, 2);
    assert!(
        text.lines().any(|l| l.starts_with("ERROR")
            && l.contains("[manifest-parse]")
            && l.contains("broken.yaml:")),
        "{text}"
    );
    assert!(text.contains("[t-privileged]"), "{text}");

    let (code, text, _) = run("junit", "deny");
    assert_eq!(code, 2);
    let xml = parse_xml(&text);
    let cases = xml.find_all("testcase");
    let case = cases
        .iter()
        .find(|c| {
            c.attr("classname") == "regate.manifest-parse"
                && c.attr("file").ends_with("broken.yaml")
        })
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!case.find_all("error").is_empty(), "{text}");

    let (code, text, _) = run("policyreport", "deny");
    assert_eq!(code, 2);
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let results: Vec<&Value> = docs
        .iter()
        .flat_map(|d| d["results"].as_array().unwrap())
        .filter(|r| r["policy"] == "manifest-parse")
        .collect();
    assert_eq!(results.len(), 2, "{text}");
    assert!(results.iter().all(|r| r["result"] == "error"));

    let (code, text, _) = run("html", "deny");
    assert_eq!(code, 2);
    assert!(text.contains("manifest-parse") && text.contains("broken.yaml"));
}
