//! Gatekeeper's `data.inventory` outside `verify`: `regate eval --inventory`, and the server's
//! list+watch of exactly the kinds referential templates need, against a fake API server with
//! the real `kube::Client`. The template and constraint come from the gatekeeper-library corpus
//! (`uniqueingresshost`), copied into a temporary policy directory at test time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod inventory_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use inventory_support::FakeCluster;
use regate::environment::NamespaceLabels;
use regate::metrics::Metrics;
use regate::policy::reload::{PolicySources, PolicyStore};
use regate::server::{app, AppState};
use serde_json::{json, Value};
use tower::ServiceExt;

const LIBRARY: &str = "gatekeeper-library/library/general/uniqueingresshost";

fn library() -> PathBuf {
    common::repo().join("../shared/corpora").join(LIBRARY)
}

/// Whether the corpus is beside the checkout (see `common::corpus`); each test returns early
/// when it is not.
fn have_corpus() -> bool {
    common::corpus(LIBRARY).is_some()
}

fn samples() -> PathBuf {
    library().join("samples/unique-ingress-host")
}

/// A policy directory with the corpus template and constraint (never committed to the repo).
fn policy_dir(root: &Path) -> PathBuf {
    let dir = root.join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(library().join("template.yaml"), dir.join("template.yaml")).unwrap();
    std::fs::copy(
        samples().join("constraint.yaml"),
        dir.join("constraint.yaml"),
    )
    .unwrap();
    dir
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_value(&text)
}

fn serde_yaml_value(text: &str) -> Value {
    let objects = regate::manifest::parse_text(text, "sample").unwrap();
    objects.into_iter().next().unwrap().object
}

fn eval(policies: &Path, args: &[&Path]) -> (i32, Vec<Value>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_regate"));
    cmd.env_remove("REGATE_POLICIES")
        .env_remove("REGATE_CONFIG")
        .env_remove("REGATE_INCLUDE_DEFAULTS")
        .args(["eval", "-o", "json", "--policies"])
        .arg(policies);
    for a in args {
        cmd.arg(a);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let results: Vec<Value> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (out.status.code().unwrap(), results, stderr)
}

fn denied_by(result: &Value) -> Vec<String> {
    result["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["action"] == "deny")
        .map(|v| v["policy"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn eval_inventory_fills_data_inventory_for_referential_templates() {
    if !have_corpus() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let policies = policy_dir(tmp.path());
    let object = samples().join("example_disallowed.yaml");

    // Without an inventory the host is unique: allowed.
    let (code, results, stderr) = eval(&policies, &[Path::new("-f"), &object]);
    assert_eq!(code, 0, "{results:?} {stderr}");
    assert!(results[0]["allowed"].as_bool().unwrap());

    // With the corpus' inventory (a directory holding it and an unrelated kind, which the
    // bound leaves out), the same host is taken: denied by the constraint.
    let inv = tmp.path().join("inventory");
    std::fs::create_dir_all(&inv).unwrap();
    std::fs::copy(
        samples().join("example_inventory_disallowed.yaml"),
        inv.join("ingress.yaml"),
    )
    .unwrap();
    std::fs::write(
        inv.join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: default\n",
    )
    .unwrap();
    let (code, results, stderr) = eval(
        &policies,
        &[Path::new("-f"), &object, Path::new("--inventory"), &inv],
    );
    assert_eq!(code, 1, "{results:?} {stderr}");
    assert_eq!(denied_by(&results[0]), vec!["unique-ingress-host"]);
    let message = results[0]["violations"][0]["message"].as_str().unwrap();
    assert!(message.contains("example-host.example.com"), "{message}");

    // Repeatable, and a file works as well as a directory: the second sample's conflict.
    let (code, results, _) = eval(
        &policies,
        &[
            Path::new("-f"),
            &samples().join("example_disallowed2.yaml"),
            Path::new("--inventory"),
            &samples().join("example_inventory_disallowed.yaml"),
            Path::new("--inventory"),
            &samples().join("example_inventory_disallowed2.yaml"),
        ],
    );
    assert_eq!(code, 1);
    assert_eq!(denied_by(&results[0]), vec!["unique-ingress-host"]);

    // The allowed sample stays allowed with the inventory.
    let (code, _, _) = eval(
        &policies,
        &[
            Path::new("-f"),
            &samples().join("example_allowed.yaml"),
            Path::new("--inventory"),
            &inv,
        ],
    );
    assert_eq!(code, 0);

    // A missing inventory file is an error, not an empty inventory.
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args(["eval", "--policies"])
        .arg(&policies)
        .arg("-f")
        .arg(&object)
        .arg("--inventory")
        .arg(tmp.path().join("missing.yaml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("inventory"));
}

#[test]
fn audit_files_inventory_fills_data_inventory() {
    if !have_corpus() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let policies = policy_dir(tmp.path());
    let audit = |extra: &[&Path]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regate"));
        cmd.env_remove("REGATE_POLICIES")
            .env_remove("REGATE_CONFIG")
            .env_remove("REGATE_INCLUDE_DEFAULTS")
            .args(["audit", "-o", "json", "--policies"])
            .arg(&policies)
            .arg("-f")
            .arg(samples().join("example_disallowed.yaml"));
        for a in extra {
            cmd.arg(a);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, stderr) = audit(&[]);
    assert_eq!(code, 0, "{stdout} {stderr}");
    let inventory = samples().join("example_inventory_disallowed.yaml");
    let (code, stdout, stderr) = audit(&[Path::new("--inventory"), &inventory]);
    assert_eq!(code, 1, "{stdout} {stderr}");
    assert!(stdout.contains("unique-ingress-host"), "{stdout}");
}

fn review(object: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "inv-1",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "Ingress"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "ingresses"},
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object,
            "oldObject": null,
            "dryRun": false,
        }
    })
}

async fn allowed(router: &axum::Router, object: &Value) -> (bool, Value) {
    let request = axum::http::Request::post("/validate")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(review(object).to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    (
        body["response"]["allowed"].as_bool().unwrap(),
        body["response"].clone(),
    )
}

async fn wait_for(router: &axum::Router, object: &Value, want: bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (got, response) = allowed(router, object).await;
        if got == want {
            return response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still allowed={got} after 30 s: {response}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_syncs_inventory_from_the_cluster_and_denies_conflicts() {
    if !have_corpus() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let policies = policy_dir(tmp.path());
    let sources = PolicySources {
        dir: policies,
        include_defaults: false,
        config: None,
        yaml_loader: regate::catalog::YAML_LOADERS,
    };
    let store = Arc::new(PolicyStore::new(sources, NamespaceLabels::default(), None).unwrap());
    let cluster = FakeCluster::start();
    let sync = regate::server::inventory::spawn_with(
        store.clone(),
        cluster.client(),
        Duration::from_millis(200),
    );
    let router = app(AppState::new(store.clone(), Metrics::new().unwrap(), None));
    let object = yaml(&samples().join("example_disallowed.yaml"));

    // An empty cluster: the host is unique.
    let (ok, response) = allowed(&router, &object).await;
    assert!(ok, "{response}");

    // Someone creates an Ingress with the same host: the watch brings it into data.inventory,
    // and the conflicting request is denied.
    cluster.add(yaml(&samples().join("example_inventory_disallowed.yaml")));
    let response = wait_for(&router, &object, false).await;
    assert!(
        response.to_string().contains("unique-ingress-host"),
        "{response}"
    );
    assert!(store.synced().is_some());

    // A policy reload re-applies the synced inventory: still denied.
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.reload("test"))
        .await
        .unwrap()
        .unwrap();
    let (ok, response) = allowed(&router, &object).await;
    assert!(!ok, "reload dropped the inventory: {response}");

    // Bounded: only the kinds in requires-sync-data were asked for (Ingress in its three
    // group-versions, of which the fake serves networking.k8s.io/v1).
    let requests = cluster.requests();
    assert!(
        requests.iter().any(|r| r.contains("watch=true")),
        "{requests:?}"
    );
    for r in &requests {
        assert!(
            r.starts_with("/apis/networking.k8s.io/") || r.starts_with("/apis/extensions/v1beta1"),
            "unexpected request {r}"
        );
        if r.contains("/ingresses") {
            assert!(r.starts_with("/apis/networking.k8s.io/v1/ingresses"), "{r}");
        }
    }
    sync.abort();
}

fn counter(metrics: &Metrics, name: &str, filter: &dyn Fn(&str) -> bool) -> u64 {
    metrics
        .render()
        .lines()
        .find(|l| l.starts_with(name) && filter(l))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0)
}

fn newly_denied(metrics: &Metrics) -> u64 {
    counter(metrics, "regate_shadow_disagreements_total{", &|l| {
        l.contains("change=\"newly_denied\"") && l.contains("unique-ingress-host")
    })
}

/// Posts the Ingress until the candidate has newly denied it `at_least` times in all, then
/// waits until it judged every request sent (so later counts start from a drained queue).
async fn wait_newly_denied(
    router: &axum::Router,
    object: &Value,
    metrics: &Metrics,
    posts: &std::sync::atomic::AtomicU64,
    at_least: u64,
) {
    use std::sync::atomic::Ordering::SeqCst;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, response) = allowed(router, object).await;
        posts.fetch_add(1, SeqCst);
        assert!(ok, "the enforced set has no referential policy: {response}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        if newly_denied(metrics) >= at_least {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no newly_denied disagreement after 30 s:\n{}",
            metrics.render()
        );
    }
    let sent = posts.load(SeqCst);
    while counter(metrics, "regate_shadow_evaluations_total", &|_| true) < sent {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shadow queue not drained"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shadow (candidate) set gets the synced inventory too, on its own kinds, and keeps it
/// across its reloads: a referential constraint only in the candidate denies the conflicting
/// Ingress there (a `newly_denied` disagreement) while the enforced set, which has no such
/// constraint, keeps allowing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_set_gets_the_inventory_and_keeps_it_on_reload() {
    if !have_corpus() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let candidate = policy_dir(tmp.path());
    let enforced = tmp.path().join("enforced");
    std::fs::create_dir_all(&enforced).unwrap();
    std::fs::write(
        enforced.join("noop.rego"),
        "# METADATA\n# custom:\n#   id: noop\n#   kinds: [ConfigMap]\n#   severity: low\npackage regate.policies.noop\n\ndeny contains \"never\" if {\n\tfalse\n}\n",
    )
    .unwrap();
    let source = |dir: &Path| PolicySources {
        dir: dir.to_path_buf(),
        include_defaults: false,
        config: None,
        yaml_loader: regate::catalog::YAML_LOADERS,
    };
    let store =
        Arc::new(PolicyStore::new(source(&enforced), NamespaceLabels::default(), None).unwrap());
    let metrics = Metrics::new().unwrap();
    let shadow = regate::rollout::shadow::Shadow::start(
        regate::rollout::shadow::ShadowConfig {
            sources: source(&candidate),
            queue: 16,
            sample_rate: 1.0,
        },
        NamespaceLabels::default(),
        &metrics.registry,
    )
    .unwrap();
    let cluster = FakeCluster::start();
    cluster.add(yaml(&samples().join("example_inventory_disallowed.yaml")));
    let targets: Vec<Arc<dyn regate::server::inventory::InventoryTarget>> =
        vec![store.clone(), shadow.clone()];
    let sync =
        regate::server::inventory::spawn_for(targets, cluster.client(), Duration::from_millis(200));
    let mut state = AppState::new(store.clone(), metrics.clone(), None);
    state.shadow = Some(shadow.clone());
    let router = app(state);
    let object = yaml(&samples().join("example_disallowed.yaml"));
    let posts = std::sync::atomic::AtomicU64::new(0);
    wait_newly_denied(&router, &object, &metrics, &posts, 1).await;
    // Only the candidate asked for Ingresses: the enforced set got none.
    assert!(store.synced().is_some_and(|s| {
        s.as_any().downcast_ref::<regate::gatekeeper::Inventory>() == Some(&Default::default())
    }));

    // A candidate reload re-applies the synced inventory: still newly denied.
    let s = shadow.clone();
    tokio::task::spawn_blocking(move || s.reload("test"))
        .await
        .unwrap()
        .unwrap();
    let before = newly_denied(&metrics);
    wait_newly_denied(&router, &object, &metrics, &posts, before + 1).await;
    sync.abort();
}

/// The same through `Server::new` as `regate serve` builds it: the cluster opt-in
/// (`watch_namespaces`) starts the inventory sync with the default client (here a kubeconfig
/// pointing at the fake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_with_cluster_opt_in_syncs_the_inventory() {
    if !have_corpus() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let policies = policy_dir(tmp.path());
    let cluster = FakeCluster::start();
    cluster.add(yaml(&samples().join("example_inventory_disallowed.yaml")));
    std::env::set_var("KUBECONFIG", cluster.kubeconfig(tmp.path()));
    let certs = regate::tls::certs::generate(&[], &tmp.path().join("certs"), 2).unwrap();
    let config = regate::server::ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: None,
        tls_cert: certs.cert_path.clone(),
        tls_key: certs.key_path.clone(),
        client_ca: None,
        sources: PolicySources {
            dir: policies,
            include_defaults: false,
            config: None,
            yaml_loader: regate::catalog::YAML_LOADERS,
        },
        watch: false,
        watch_namespaces: true,
    };
    let server = regate::server::Server::new(config).await.unwrap();
    let router = app(server.state.clone());
    let object = yaml(&samples().join("example_disallowed.yaml"));
    let response = wait_for(&router, &object, false).await;
    assert!(
        response.to_string().contains("unique-ingress-host"),
        "{response}"
    );
    assert!(cluster
        .requests()
        .iter()
        .any(|r| r.starts_with("/apis/networking.k8s.io/v1/ingresses")));
}

/// Nothing is watched until a referential constraint is loaded; a reload that adds one starts
/// the sync for its kinds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_starts_when_a_reload_adds_a_referential_constraint() {
    if !have_corpus() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let policies = policy_dir(tmp.path());
    let constraint = std::fs::read(policies.join("constraint.yaml")).unwrap();
    std::fs::remove_file(policies.join("constraint.yaml")).unwrap();
    let sources = PolicySources {
        dir: policies.clone(),
        include_defaults: false,
        config: None,
        yaml_loader: regate::catalog::YAML_LOADERS,
    };
    let store = Arc::new(PolicyStore::new(sources, NamespaceLabels::default(), None).unwrap());
    let cluster = FakeCluster::start();
    cluster.add(yaml(&samples().join("example_inventory_disallowed.yaml")));
    let sync = regate::server::inventory::spawn_with(
        store.clone(),
        cluster.client(),
        Duration::from_millis(200),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(cluster.requests().is_empty(), "{:?}", cluster.requests());

    std::fs::write(policies.join("constraint.yaml"), constraint).unwrap();
    let s = store.clone();
    tokio::task::spawn_blocking(move || s.reload("test"))
        .await
        .unwrap()
        .unwrap();
    let router = app(AppState::new(store.clone(), Metrics::new().unwrap(), None));
    let object = yaml(&samples().join("example_disallowed.yaml"));
    wait_for(&router, &object, false).await;
    sync.abort();
}

// ---------------------------------------------------------------------------------------------
// Gatekeeper 3.22+ input and enforcement: `input.review.namespaceObject`, scoped enforcement per
// point, and the policies the webhook rules leave out. Templates are written here (no corpus).

const TIER_TEMPLATE: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8snamespacetier
spec:
  crd:
    spec:
      names:
        kind: K8sNamespaceTier
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8snamespacetier
        violation[{"msg": msg}] {
          input.review.namespaceObject.metadata.labels.tier == "restricted"
          msg := sprintf("namespace %v is restricted", [input.review.namespaceObject.metadata.name])
        }
"#;

const TIER_CONSTRAINT: &str = "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sNamespaceTier\nmetadata:\n  name: tier\nspec:\n  match:\n    kinds:\n      - apiGroups: [\"\"]\n        kinds: [\"Pod\"]\n";

fn write_policies(root: &Path, files: &[(&str, &str)]) -> PathBuf {
    let dir = root.join("policies");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

fn namespace(name: &str, tier: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {"tier": tier}}})
}

fn pod_in(namespace: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "namespace": namespace},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}})
}

async fn pod_allowed(router: &axum::Router, pod: &Value) -> (bool, Value) {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "ns-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": pod,
        }
    });
    let request = axum::http::Request::post("/validate")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    (
        body["response"]["allowed"].as_bool().unwrap(),
        body["response"].clone(),
    )
}

async fn wait_for_pod(router: &axum::Router, pod: &Value, want: bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (got, response) = pod_allowed(router, pod).await;
        if got == want {
            return response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still allowed={got} after 30 s: {response}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `serve`: the namespace watch (real kube client, fake API server) gives templates the
/// request's Namespace; a relabel reaches them through the watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_gives_templates_the_namespace_object_from_the_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = write_policies(
        tmp.path(),
        &[
            ("template.yaml", TIER_TEMPLATE),
            ("constraint.yaml", TIER_CONSTRAINT),
        ],
    );
    let labels = NamespaceLabels::default();
    let sources = PolicySources {
        dir: policies,
        include_defaults: false,
        config: None,
        yaml_loader: regate::catalog::YAML_LOADERS,
    };
    let store = Arc::new(PolicyStore::new(sources, labels.clone(), None).unwrap());
    let cluster = FakeCluster::start();
    cluster.add(namespace("locked", "restricted"));
    cluster.add(namespace("open", "free"));
    let watch = regate::server::namespaces::spawn_with(labels, cluster.client());
    let router = app(AppState::new(store, Metrics::new().unwrap(), None));

    let response = wait_for_pod(&router, &pod_in("locked"), false).await;
    assert!(
        response
            .to_string()
            .contains("[tier] namespace locked is restricted"),
        "{response}"
    );
    let (allowed, response) = pod_allowed(&router, &pod_in("open")).await;
    assert!(allowed, "{response}");
    // The Namespace is relabelled: the watch brings the new object.
    cluster.add(namespace("locked", "free"));
    wait_for_pod(&router, &pod_in("locked"), true).await;
    assert!(cluster
        .requests()
        .iter()
        .any(|r| r.starts_with("/api/v1/namespaces")));
    watch.abort();
}

/// `eval`: a Namespace among the manifests (or in `--inventory`) is the namespaceObject of the
/// objects in it.
#[test]
fn eval_gives_templates_the_namespace_object_from_manifests() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = write_policies(
        tmp.path(),
        &[
            ("template.yaml", TIER_TEMPLATE),
            ("constraint.yaml", TIER_CONSTRAINT),
        ],
    );
    let manifests = tmp.path().join("app.yaml");
    std::fs::write(
        &manifests,
        format!(
            "{}---\n{}",
            serde_yaml::to_string(&namespace("locked", "restricted")).unwrap(),
            serde_yaml::to_string(&pod_in("locked")).unwrap()
        ),
    )
    .unwrap();
    let (code, results, stderr) = eval(&policies, &[Path::new("-f"), &manifests]);
    assert_eq!(code, 1, "{results:?} {stderr}");
    assert_eq!(denied_by(&results[1]), vec!["tier".to_string()]);
    assert!(results[1]
        .to_string()
        .contains("namespace locked is restricted"));

    // The Namespace from --inventory instead.
    let pod_only = tmp.path().join("pod.yaml");
    std::fs::write(&pod_only, pod_in("locked").to_string()).unwrap();
    let ns = tmp.path().join("ns.yaml");
    std::fs::write(&ns, namespace("locked", "restricted").to_string()).unwrap();
    let (code, results, _) = eval(&policies, &[Path::new("-f"), &pod_only]);
    assert_eq!(code, 0, "{results:?}");
    let (code, results, stderr) = eval(
        &policies,
        &[Path::new("-f"), &pod_only, Path::new("--inventory"), &ns],
    );
    assert_eq!(code, 1, "{results:?} {stderr}");
    assert_eq!(denied_by(&results[0]), vec!["tier".to_string()]);
}

const NO_PODS_TEMPLATE: &str = r#"apiVersion: templates.gatekeeper.sh/v1
kind: ConstraintTemplate
metadata:
  name: k8snopods
spec:
  crd:
    spec:
      names:
        kind: K8sNoPods
  targets:
    - target: admission.k8s.gatekeeper.sh
      rego: |
        package k8snopods
        violation[{"msg": "no pods"}] {
          input.review.object.kind == "Pod"
        }
"#;

const SCOPED_CONSTRAINTS: &str = r#"apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sNoPods
metadata:
  name: audit-only
spec:
  enforcementAction: scoped
  scopedEnforcementActions:
    - action: deny
      enforcementPoints: [{name: audit.gatekeeper.sh}]
---
apiVersion: constraints.gatekeeper.sh/v1beta1
kind: K8sNoPods
metadata:
  name: webhook-only
spec:
  enforcementAction: scoped
  scopedEnforcementActions:
    - action: deny
      enforcementPoints: [{name: validation.gatekeeper.sh}]
"#;

/// Scoped enforcement per point: `serve` denies with the webhook's constraint only, `audit`
/// reports the audit's only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_enforcement_differs_between_serve_and_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = write_policies(
        tmp.path(),
        &[
            ("template.yaml", NO_PODS_TEMPLATE),
            ("constraints.yaml", SCOPED_CONSTRAINTS),
        ],
    );
    let sources = PolicySources {
        dir: policies.clone(),
        include_defaults: false,
        config: None,
        yaml_loader: regate::catalog::YAML_LOADERS,
    };
    let store = Arc::new(PolicyStore::new(sources, NamespaceLabels::default(), None).unwrap());
    let router = app(AppState::new(store, Metrics::new().unwrap(), None));
    let (allowed, response) = pod_allowed(&router, &pod_in("default")).await;
    assert!(!allowed);
    let text = response.to_string();
    assert!(text.contains("[webhook-only] no pods"), "{text}");
    assert!(!text.contains("audit-only"), "{text}");

    let pod = tmp.path().join("pod.yaml");
    std::fs::write(&pod, pod_in("default").to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .env_remove("REGATE_POLICIES")
        .env_remove("REGATE_CONFIG")
        .env_remove("REGATE_INCLUDE_DEFAULTS")
        .args(["audit", "-o", "json", "--policies"])
        .arg(&policies)
        .arg("-f")
        .arg(&pod)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let by_policy: Vec<&String> = report["summary"]["byPolicy"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(by_policy, vec!["audit-only"], "{stdout}");
}

const SERVICES_CONSTRAINT: &str = "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sNoPods\nmetadata:\n  name: services-too\nspec:\n  match:\n    kinds:\n      - apiGroups: [\"\"]\n        kinds: [\"Service\"]\n";

/// A constraint on a kind the chart's default rules do not send is named by `regate check`
/// and `/readyz?verbose`; with every resource sent it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_the_webhook_does_not_send_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = write_policies(
        tmp.path(),
        &[
            ("template.yaml", NO_PODS_TEMPLATE),
            ("services.yaml", SERVICES_CONSTRAINT),
        ],
    );
    let check = |rules: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_regate"))
            .env_remove("REGATE_CONFIG")
            .env_remove("REGATE_WEBHOOK_RULES")
            .args(["check", "--webhook-rules", rules])
            .arg(&policies)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stderr) = check("chart-defaults");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: policy services-too is not enforced at admission for Service (CREATE, UPDATE)"),
        "{stderr}"
    );
    let (code, stderr) = check("all");
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (code, stderr) = check(tmp.path().join("missing.yaml").to_str().unwrap());
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("missing.yaml"), "{stderr}");

    let sources = PolicySources {
        dir: policies,
        include_defaults: false,
        config: None,
        yaml_loader: regate::catalog::YAML_LOADERS,
    };
    let store = Arc::new(PolicyStore::new(sources, NamespaceLabels::default(), None).unwrap());
    let readyz = |state: AppState| async move {
        let request = axum::http::Request::get("/readyz?verbose")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app(state).oneshot(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).to_string()
    };
    let mut state = AppState::new(store, Metrics::new().unwrap(), None);
    let text = readyz(state.clone()).await;
    assert!(
        text.contains("[+]webhook-rules policy services-too is not enforced at admission for Service (CREATE, UPDATE)"),
        "{text}"
    );
    assert!(text.contains("readyz check passed"), "{text}");
    state.webhook_rules = Arc::new(regate::admission::webhook_rules::WebhookRules::all_resources());
    let text = readyz(state).await;
    assert!(
        text.contains("[+]webhook-rules the webhooks send every kind"),
        "{text}"
    );
}
