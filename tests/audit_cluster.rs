//! `regate audit --cluster` and the background audit, through the real `kube::Client` against a
//! small API server started by the test (discovery, paged lists, Leases, server-side apply).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod audit_support;
mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use audit_support::*;
use regate::audit::background::{self, BackgroundOptions};
use regate::audit::cluster::{audit_cluster, ClusterOptions};
use regate::audit::{Label, ObjectRecord};
use regate::environment::NamespaceLabels;
use regate::metrics::Metrics;
use regate::policy::reload::{PolicySources, PolicyStore};
use serde_json::Value;

fn records(run: &mut regate::audit::AuditRun) -> Vec<ObjectRecord> {
    let mut out = Vec::new();
    run.spool
        .for_each_partition::<std::io::Error>(|r| {
            out.extend(r);
            Ok(())
        })
        .unwrap();
    out
}

fn labels_of(records: &[ObjectRecord], ns: &str, name: &str, policy: &str) -> Vec<Label> {
    records
        .iter()
        .filter(|r| r.namespace_key() == ns && r.name == name)
        .flat_map(|r| r.findings.iter())
        .filter(|f| f.policy == policy)
        .map(|f| f.action)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_audit_discovers_pages_and_judges_every_targeted_kind() {
    let server = FakeApiServer::start(cluster_objects());
    let dir = tempfile::tempdir().unwrap();
    let policies = write_policies(dir.path());
    let set = Arc::new(build_set(&policies, NamespaceLabels::default()));
    let client = server.client();
    let opts = ClusterOptions {
        page_size: 3,
        ..ClusterOptions::default()
    };
    let mut run = audit_cluster(&client, set, &opts).await.unwrap();
    assert!(run.complete(), "{:?}", run.issues);

    // Namespaces 4 + Pods 9 + Deployment 1 + ConfigMaps 4 + Secret 1 + Service 1; no Nodes.
    assert_eq!(run.totals.objects, 20, "{:?}", run.totals.by_kind);
    assert_eq!(run.totals.by_kind.get("Pod"), Some(&9));
    assert!(!run.totals.by_kind.contains_key("Node"));

    // Every list is paged with the configured limit, and continue tokens are followed.
    let lists = server.lists();
    assert!(lists.iter().all(|l| l.limit == Some(3)), "{lists:?}");
    assert!(
        !lists.iter().any(|l| l.plural == "nodes"),
        "Nodes are not targeted"
    );
    let pods: Vec<Option<String>> = lists
        .iter()
        .filter(|l| l.plural == "pods")
        .map(|l| l.continue_token.clone())
        .collect();
    assert_eq!(
        pods,
        vec![None, Some("pods:3".into()), Some("pods:6".into())]
    );
    // Namespaces: once for labels (environments), once as a targeted kind.
    assert_eq!(lists.iter().filter(|l| l.plural == "namespaces").count(), 4);

    let records = records(&mut run);
    // deny whatever the environment; the warn rule is labelled warn.
    let web = labels_of(&records, "prod", "web-privileged", "t-privileged");
    assert!(
        web.contains(&Label::Deny) && web.contains(&Label::Warn),
        "{web:?}"
    );
    assert_eq!(
        labels_of(&records, "dev", "dev-privileged", "t-privileged"),
        vec![Label::Deny]
    );
    assert!(labels_of(&records, "prod", "api", "t-privileged").contains(&Label::Deny));
    assert!(labels_of(&records, "prod", "web-ok", "t-privileged").is_empty());
    // Exempt namespace: not judged.
    assert!(labels_of(&records, "kube-system", "kube-proxy", "t-privileged").is_empty());
    // The namespace label decides the environment, and the environment the action.
    assert_eq!(
        labels_of(&records, "dev", "settings", "t-debug"),
        vec![Label::Warn]
    );
    assert_eq!(
        labels_of(&records, "stage", "settings", "t-debug"),
        vec![Label::Audit]
    );
    assert_eq!(
        labels_of(&records, "prod", "settings", "t-debug"),
        vec![Label::Deny]
    );
    // Cluster-scoped Namespaces without a team label.
    assert_eq!(
        labels_of(&records, "", "stage", "t-namespace-team"),
        vec![Label::Audit]
    );
    assert_eq!(
        labels_of(&records, "", "kube-system", "t-namespace-team"),
        vec![Label::Audit]
    );
    assert!(labels_of(&records, "", "dev", "t-namespace-team").is_empty());
    // A policy that fails is an error finding.
    assert_eq!(
        labels_of(&records, "prod", "svc", "t-broken"),
        vec![Label::Error]
    );
    // Items arrive without apiVersion/kind; records carry them from discovery.
    let deploy = records.iter().find(|r| r.name == "api").unwrap();
    assert_eq!(
        (deploy.api_version.as_str(), deploy.kind.as_str()),
        ("apps/v1", "Deployment")
    );
    assert_eq!(deploy.uid.as_deref(), Some("uid-deploy-api"));
    let ns_record = records.iter().find(|r| r.kind == "Namespace").unwrap();
    assert_eq!(ns_record.namespace, None);

    // The careless Secret policy's messages are scrubbed of every form of the values.
    let secret = records.iter().find(|r| r.kind == "Secret").unwrap();
    assert_eq!(secret.findings.len(), 3, "{:?}", secret.findings);
    for f in &secret.findings {
        let text = format!("{} {:?}", f.message, f.path);
        assert!(!text.contains("CANARY"), "{text}");
        assert!(!text.contains(&b64(CANARY_B64)), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}

#[test]
fn cli_cluster_audit_writes_policyreports_and_reports_forbidden_lists() {
    let server = FakeApiServer::start(cluster_objects());
    let dir = tempfile::tempdir().unwrap();
    let policies = write_policies(dir.path());
    let kubeconfig = server.kubeconfig(dir.path());
    let run = |extra: &[&str]| {
        let out = Command::new(regate_bin())
            .args(["audit", "--cluster", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--policies")
            .arg(&policies)
            .args(["--page-size", "2"])
            .args(extra)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };

    let (code, stdout, stderr) = run(&["-o", "policyreport"]);
    assert_eq!(
        code,
        Some(1),
        "deny findings fail the audit by default: {stderr}"
    );
    assert!(server.lists().iter().all(|l| l.limit == Some(2)));
    let mut reports: BTreeMap<String, Value> = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(&stdout) {
        let v: Value = serde::Deserialize::deserialize(doc).unwrap();
        let key = v["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        assert_eq!(v["apiVersion"], "wgpolicyk8s.io/v1alpha2");
        assert_eq!(v["metadata"]["name"], "regate-audit");
        reports.insert(key, v);
    }
    assert_eq!(
        reports.keys().cloned().collect::<Vec<_>>(),
        vec!["", "dev", "kube-system", "prod", "stage"]
    );
    assert_eq!(reports[""]["kind"], "ClusterPolicyReport");
    assert_eq!(reports["prod"]["kind"], "PolicyReport");
    let prod = &reports["prod"];
    let results = prod["results"].as_array().unwrap();
    let web = results
        .iter()
        .find(|r| r["resources"][0]["name"] == "web-privileged" && r["result"] == "fail")
        .unwrap();
    assert_eq!(web["policy"], "t-privileged");
    assert_eq!(web["rule"], "deny");
    assert_eq!(web["severity"], "high");
    assert_eq!(web["properties"]["action"], "deny");
    assert_eq!(web["properties"]["environment"], "production");
    assert_eq!(web["resources"][0]["kind"], "Pod");
    assert_eq!(web["resources"][0]["apiVersion"], "v1");
    assert_eq!(web["resources"][0]["uid"], "uid-pod-prod-web-privileged");
    assert!(web["message"].as_str().unwrap().contains("privileged"));
    assert!(results
        .iter()
        .any(|r| r["result"] == "warn" && r["rule"] == "warn"));
    assert!(results
        .iter()
        .any(|r| r["result"] == "error" && r["policy"] == "t-broken"));
    // Summary counts every result of the namespace.
    let count = |status: &str| results.iter().filter(|r| r["result"] == status).count() as u64;
    assert_eq!(prod["summary"]["fail"], count("fail"));
    assert_eq!(prod["summary"]["warn"], count("warn"));
    assert_eq!(prod["summary"]["error"], count("error"));
    assert!(
        prod["summary"]["pass"].as_u64().unwrap() >= 2,
        "web-ok and the clean ConfigMap pass"
    );
    // Audit-action findings are fail results labelled audit.
    let stage_debug = reports["stage"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["policy"] == "t-debug")
        .unwrap();
    assert_eq!(stage_debug["result"], "fail");
    assert_eq!(stage_debug["properties"]["action"], "audit");
    assert_eq!(reports[""]["summary"]["fail"], 2);
    assert_eq!(
        reports["kube-system"]["results"].as_array().unwrap().len(),
        0
    );
    assert!(!stdout.contains("CANARY"));

    // --environment judges every namespace in that environment, whatever its labels.
    let (code, stdout, stderr) = run(&["-o", "json", "--environment", "development"]);
    assert_eq!(code, Some(1), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let debug: Vec<(&str, &str)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["policy"] == "t-debug")
        .map(|f| {
            (
                f["namespace"].as_str().unwrap(),
                f["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        debug,
        vec![("dev", "warn"), ("prod", "warn"), ("stage", "warn")]
    );

    // A list the identity may not read makes the audit incomplete: exit 2, named in the report.
    server
        .state
        .lock()
        .unwrap()
        .forbidden
        .push("secrets".into());
    let (code, stdout, stderr) = run(&["-o", "json", "--fail-on", "never"]);
    assert_eq!(code, Some(2), "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["complete"], false);
    let issue = &report["issues"][0];
    assert_eq!(issue["source"], "secrets");
    assert!(
        issue["message"]
            .as_str()
            .unwrap()
            .contains("not allowed to list secrets"),
        "{issue}"
    );
    assert!(stderr.contains("incomplete"), "{stderr}");
    // Everything else was still judged.
    assert_eq!(report["summary"]["objects"], 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_group_only_matters_when_a_kind_goes_missing() {
    let server = FakeApiServer::start(cluster_objects());
    let dir = tempfile::tempdir().unwrap();
    let policies = write_policies(dir.path());
    let client = server.client();
    // batch is broken, and no policy needs it.
    server
        .state
        .lock()
        .unwrap()
        .broken_groups
        .push("batch".into());
    let set = Arc::new(build_set(&policies, NamespaceLabels::default()));
    let opts = ClusterOptions {
        discovery_timeout: Duration::from_millis(800),
        ..ClusterOptions::default()
    };
    let run = audit_cluster(&client, set.clone(), &opts).await.unwrap();
    assert!(run.complete(), "{:?}", run.issues);
    assert_eq!(run.totals.objects, 20);
    // apps is broken, and Deployments live there: the audit says so.
    server
        .state
        .lock()
        .unwrap()
        .broken_groups
        .push("apps".into());
    let run = audit_cluster(&client, set, &opts).await.unwrap();
    assert!(!run.complete());
    assert!(
        run.issues
            .iter()
            .any(|i| i.source == "Deployment" && i.message.contains("apps/v1")),
        "{:?}",
        run.issues
    );
    assert_eq!(run.totals.objects, 19);
}

fn replica(
    policies: &std::path::Path,
    identity: &str,
) -> (Arc<PolicyStore>, Metrics, BackgroundOptions) {
    let store = PolicyStore::new(
        PolicySources {
            dir: policies.to_path_buf(),
            include_defaults: false,
            config: None,
            yaml_loader: regate::catalog::YAML_LOADERS,
        },
        NamespaceLabels::default(),
        None,
    )
    .unwrap();
    let opts = BackgroundOptions {
        lease_name: "regate-audit".into(),
        lease_namespace: Some("regate".into()),
        identity: identity.into(),
        lease_duration: Duration::from_secs(10),
        renew_period: Duration::from_millis(150),
        config_poll: Duration::from_millis(100),
        interval: Some(Duration::from_millis(400)),
    };
    (Arc::new(store), Metrics::new().unwrap(), opts)
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..400 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn report_names(report: &Value) -> Vec<String> {
    report["results"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| r["resources"][0]["name"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_audit_elects_one_leader_applies_whole_reports_and_fails_over() {
    let server = FakeApiServer::start(cluster_objects());
    let dir = tempfile::tempdir().unwrap();
    let policies = write_policies(dir.path());
    let (store_a, metrics_a, opts_a) = replica(&policies, "replica-a");
    let (store_b, metrics_b, opts_b) = replica(&policies, "replica-b");
    let (stop_a, rx_a) = tokio::sync::watch::channel(false);
    let (stop_b, rx_b) = tokio::sync::watch::channel(false);
    let a = tokio::spawn(background::run(
        server.client(),
        store_a,
        metrics_a.clone(),
        opts_a,
        rx_a,
    ));
    // b starts once a holds the lease, so a is the first leader.
    eventually("a takes the lease", || {
        server.lease("regate/regate-audit").is_some()
    })
    .await;
    let b = tokio::spawn(background::run(
        server.client(),
        store_b,
        metrics_b.clone(),
        opts_b,
        rx_b,
    ));

    eventually("reports applied", || server.reports().contains_key("prod")).await;
    eventually("a second audit", || {
        server.lists().iter().filter(|l| l.plural == "pods").count() >= 2
    })
    .await;
    let lease = server.lease("regate/regate-audit").unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 10);
    assert!(metrics_a.audit_objects.get() == 20, "the leader audits");
    assert_eq!(
        metrics_b.audit_objects.get(),
        0,
        "the follower does not audit"
    );

    // Server-side apply, forced, one field manager.
    for apply in server.applies() {
        assert_eq!(apply.content_type, "application/apply-patch+yaml");
        assert_eq!(apply.field_manager.as_deref(), Some("regate-audit"));
        assert!(apply.force);
    }
    let paths: Vec<String> = server.applies().iter().map(|a| a.path.clone()).collect();
    assert!(paths.contains(
        &"/apis/wgpolicyk8s.io/v1alpha2/namespaces/prod/policyreports/regate-audit".to_string()
    ));
    assert!(paths
        .contains(&"/apis/wgpolicyk8s.io/v1alpha2/clusterpolicyreports/regate-audit".to_string()));
    let reports = server.reports();
    assert!(report_names(&reports["prod"]).contains(&"web-privileged".to_string()));
    assert_eq!(reports[""]["kind"], "ClusterPolicyReport");

    // Metrics of the last run, with bounded namespace labels.
    let text = metrics_a.render();
    assert!(
        text.contains(
            "regate_audit_violations{namespace=\"prod\",policy=\"t-privileged\",severity=\"high\"}"
        ),
        "{text}"
    );
    assert!(
        text.contains("namespace=\"_cluster\",policy=\"t-namespace-team\""),
        "{text}"
    );
    assert!(metrics_a.audit_duration.get() > 0.0);

    // Fix the privileged Pod: the next report no longer lists it (stale results disappear).
    let fixed: Vec<Value> = cluster_objects()
        .into_iter()
        .filter(|o| o["metadata"]["name"] != "web-privileged")
        .collect();
    server.set_objects(fixed);
    eventually("stale result gone", || {
        server
            .reports()
            .get("prod")
            .is_some_and(|r| !report_names(r).contains(&"web-privileged".to_string()))
    })
    .await;
    assert!(report_names(&server.reports()["prod"]).contains(&"api".to_string()));
    eventually("metrics follow", || metrics_a.audit_objects.get() == 19).await;
    assert_eq!(metrics_b.audit_objects.get(), 0);

    // The leader stops: it releases the lease, and the other replica takes over and audits.
    stop_a.send(true).unwrap();
    a.await.unwrap();
    assert!(
        server
            .state
            .lock()
            .unwrap()
            .lease_writes
            .iter()
            .any(|w| w == "update "),
        "released"
    );
    eventually("b takes over", || {
        server
            .lease("regate/regate-audit")
            .is_some_and(|l| l["spec"]["holderIdentity"] == "replica-b")
    })
    .await;
    eventually("b audits", || metrics_b.audit_objects.get() == 19).await;
    stop_b.send(true).unwrap();
    b.await.unwrap();
}

/// The policy set of the test policies with `regate.yaml` holding `config`.
fn set_with_config(dir: &std::path::Path, config: &str) -> Arc<regate::policy::set::PolicySet> {
    let policies = write_policies(dir);
    let path = dir.join("regate.yaml");
    std::fs::write(&path, config).unwrap();
    let sources = PolicySources {
        dir: policies,
        include_defaults: false,
        config: Some(path),
        yaml_loader: regate::catalog::YAML_LOADERS,
    };
    Arc::new(sources.build(NamespaceLabels::default()).unwrap())
}

fn server_serving(openreports: bool, policyreports: bool) -> FakeApiServer {
    let mut resources: Vec<ResourceDef> = standard_resources()
        .into_iter()
        .filter(|r| policyreports || r.group != "wgpolicyk8s.io")
        .collect();
    if openreports {
        resources.extend(openreports_resources());
    }
    let server = FakeApiServer::start_with(ApiState {
        resources,
        ..ApiState::default()
    });
    server.set_objects(cluster_objects());
    server
}

async fn once(
    server: &FakeApiServer,
    set: Arc<regate::policy::set::PolicySet>,
    state: &mut background::ReportState,
) -> background::ApplyOutcome {
    let metrics = Metrics::new().unwrap();
    let leader = std::sync::atomic::AtomicBool::new(true);
    background::run_once_with(&server.client(), set, &metrics, 500, &leader, state)
        .await
        .unwrap()
        .outcome
}

fn plurals(server: &FakeApiServer) -> Vec<String> {
    let mut out: Vec<String> = server
        .report_objects()
        .keys()
        .map(|k| k.split('/').next().unwrap().to_string())
        .collect();
    out.dedup();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_audit_picks_the_served_report_api_or_the_forced_one() {
    let dir = tempfile::tempdir().unwrap();
    let auto = set_with_config(dir.path(), "audit: {reports: {api: auto}}\n");
    let forced_pr = set_with_config(dir.path(), "audit: {reports: {api: policyreport}}\n");
    let forced_or = set_with_config(dir.path(), "audit: {reports: {api: openreports}}\n");
    let none = set_with_config(dir.path(), "audit: {reports: {api: none}}\n");

    // Both served: OpenReports unless policyreport is forced.
    let both = server_serving(true, true);
    let mut state = background::ReportState::default();
    assert!(once(&both, auto.clone(), &mut state).await.written > 0);
    assert_eq!(plurals(&both), ["clusterreports", "reports"]);
    let both = server_serving(true, true);
    let mut state = background::ReportState::default();
    once(&both, forced_pr.clone(), &mut state).await;
    assert_eq!(plurals(&both), ["clusterpolicyreports", "policyreports"]);
    let both = server_serving(true, true);
    let mut state = background::ReportState::default();
    assert_eq!(once(&both, none, &mut state).await, Default::default());
    assert!(both.applies().is_empty());

    // Only wgpolicyk8s: auto writes PolicyReports; forcing OpenReports writes nothing.
    let wg = server_serving(false, true);
    let mut state = background::ReportState::default();
    once(&wg, auto.clone(), &mut state).await;
    assert_eq!(plurals(&wg), ["clusterpolicyreports", "policyreports"]);
    let wg = server_serving(false, true);
    let mut state = background::ReportState::default();
    assert_eq!(once(&wg, forced_or, &mut state).await.written, 0);
    assert!(wg.applies().is_empty());

    // Neither: results stay in metrics.
    let bare = server_serving(false, false);
    let mut state = background::ReportState::default();
    assert_eq!(once(&bare, auto, &mut state).await, Default::default());
    assert!(bare.applies().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_openreports_split_validate_skip_unchanged_and_delete_stale() {
    let dir = tempfile::tempdir().unwrap();
    // One result per report: every finding of a namespace gets its numbered report.
    let set = set_with_config(dir.path(), "audit: {reports: {resultsPerReport: 1}}\n");
    let server = server_serving(true, false);
    let mut state = background::ReportState::default();
    let first = once(&server, set.clone(), &mut state).await;
    let reports = server.report_objects();
    assert_eq!(first.written, reports.len());
    assert!(first.written > 4, "{first:?}");
    assert!(
        reports.contains_key("reports/prod/regate-audit-2"),
        "{:?}",
        reports.keys()
    );
    for (key, r) in &reports {
        assert!(r["results"].as_array().unwrap().len() <= 1, "{key}");
        assert_eq!(r["apiVersion"], "openreports.io/v1alpha1");
        assert_eq!(
            r["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "regate"
        );
    }
    for apply in server.applies() {
        assert_eq!(apply.field_manager.as_deref(), Some("regate-audit"));
        assert!(apply.force);
    }
    if let Some(corpus) = common::corpus("openreports") {
        for (key, r) in &reports {
            let plural = key.split('/').next().unwrap();
            let violations = schema_violations(&openreports_schema(&corpus, plural), r);
            assert!(violations.is_empty(), "{key}: {violations:#?}");
        }
    }
    // The summaries add up to the audit's totals.
    let metrics = Metrics::new().unwrap();
    let leader = std::sync::atomic::AtomicBool::new(true);
    let mut scratch = background::ReportState::default();
    let round = background::run_once_with(
        &server.client(),
        set.clone(),
        &metrics,
        500,
        &leader,
        &mut scratch,
    )
    .await
    .unwrap();
    let t = &round.totals;
    let sum = |field: &str| -> u64 {
        reports
            .values()
            .map(|r| r["summary"][field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(
        (sum("pass"), sum("fail"), sum("warn"), sum("error")),
        (
            t.passes(),
            t.findings.deny + t.findings.audit,
            t.findings.warn,
            t.findings.error
        )
    );
    assert!(t.findings.total() > 0);

    // Nothing changed: nothing written.
    let applies = server.applies().len();
    let second = once(&server, set.clone(), &mut state).await;
    assert_eq!(second.written, 0, "{second:?}");
    assert_eq!(second.unchanged, first.written);
    assert_eq!(server.applies().len(), applies);
    assert!(server.deletes().is_empty());

    // prod's objects are gone: its reports are deleted, the others stay untouched.
    let without_prod: Vec<Value> = cluster_objects()
        .into_iter()
        .filter(|o| o["metadata"]["namespace"] != "prod")
        .collect();
    server.set_objects(without_prod);
    let third = once(&server, set.clone(), &mut state).await;
    let prod_reports = reports
        .keys()
        .filter(|k| k.starts_with("reports/prod/"))
        .count();
    assert_eq!(third.deleted, prod_reports, "{third:?}");
    assert!(server
        .report_objects()
        .keys()
        .all(|k| !k.starts_with("reports/prod/")));
    // A new replica (no memory) deletes stale reports too, and rewrites the rest once.
    server.set_objects(cluster_objects());
    once(&server, set.clone(), &mut state).await;
    server.set_objects(
        cluster_objects()
            .into_iter()
            .filter(|o| o["metadata"]["name"] != "web-privileged")
            .collect(),
    );
    let mut fresh = background::ReportState::default();
    let after = once(&server, set, &mut fresh).await;
    assert!(after.deleted >= 1, "{after:?}");
    assert_eq!(after.written, server.report_objects().len());
}

/// `regate diff --cluster`: both sets judge the live objects, paged as `audit --cluster` reads
/// them; the changes are those of the same objects read from files, with `source: cluster`.
#[test]
fn cli_diff_over_the_cluster_finds_the_changes_the_files_show() {
    let mut objects: Vec<Value> =
        regate::manifest::read_paths(&[repo().join("fixtures/diff/objects.yaml")])
            .unwrap()
            .into_iter()
            .map(|m| m.object)
            .collect();
    objects.push(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "prod-shop"}}));
    objects.push(serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev-shop"}}));
    let server = FakeApiServer::start(objects);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let diff = |dir_args: &[&str]| {
        let out = Command::new(regate_bin())
            .current_dir(repo())
            .args([
                "diff",
                "--base",
                "fixtures/diff/base",
                "--base-config",
                "fixtures/diff/base.yaml",
                "--policies",
                "fixtures/diff/candidate",
                "--config",
                "fixtures/diff/candidate.yaml",
                "-o",
                "json",
            ])
            .args(dir_args)
            .env_remove("KUBECONFIG")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let cluster = diff(&[
        "--cluster",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--page-size",
        "2",
    ]);
    assert!(server.lists().iter().all(|l| l.limit == Some(2)));
    let files = diff(&["-f", "fixtures/diff/objects.yaml"]);
    // The Secret is listed by neither side's kinds in the cluster; the files judge it too.
    assert_eq!(cluster["summary"]["objects"], 8);
    assert_eq!(cluster["summary"]["changed"], files["summary"]["changed"]);
    let key = |c: &Value| {
        format!(
            "{} {} {} {} {} {}",
            c["kind"], c["namespace"], c["name"], c["change"], c["before"], c["after"]
        )
    };
    let mut a: Vec<String> = cluster["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(key)
        .collect();
    let mut b: Vec<String> = files["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(key)
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(cluster["changes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["source"] == "cluster"));
}
