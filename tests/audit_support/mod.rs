//! Shared by the audit tests: a small Kubernetes API server (axum, plain HTTP on 127.0.0.1:0)
//! that serves discovery, paged lists (checking `limit` and `continue`), Lease get/create/update
//! and report server-side apply, list and delete (wgpolicyk8s and OpenReports), from objects the test hands it (or generates on demand);
//! a policy directory in the policy contract; and a minimal XML reader for JUnit output.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// The API server

#[derive(Debug, Clone)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub listable: bool,
}

impl ResourceDef {
    pub fn group_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub fn standard_resources() -> Vec<ResourceDef> {
    let r = |group, version, kind, plural, namespaced| ResourceDef {
        group,
        version,
        kind,
        plural,
        namespaced,
        listable: true,
    };
    vec![
        r("", "v1", "Namespace", "namespaces", false),
        r("", "v1", "Pod", "pods", true),
        r("", "v1", "Secret", "secrets", true),
        r("", "v1", "ConfigMap", "configmaps", true),
        r("", "v1", "Service", "services", true),
        r("", "v1", "Node", "nodes", false),
        r("apps", "v1", "Deployment", "deployments", true),
        r("apps", "v1", "StatefulSet", "statefulsets", true),
        r("batch", "v1", "Job", "jobs", true),
        r(
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
        ),
        r("coordination.k8s.io", "v1", "Lease", "leases", true),
        r(
            "wgpolicyk8s.io",
            "v1alpha2",
            "PolicyReport",
            "policyreports",
            true,
        ),
        r(
            "wgpolicyk8s.io",
            "v1alpha2",
            "ClusterPolicyReport",
            "clusterpolicyreports",
            false,
        ),
    ]
}

/// The OpenReports CRDs (`openreports.io/v1alpha1` Report and ClusterReport).
pub fn openreports_resources() -> Vec<ResourceDef> {
    vec![
        ResourceDef {
            group: "openreports.io",
            version: "v1alpha1",
            kind: "Report",
            plural: "reports",
            namespaced: true,
            listable: true,
        },
        ResourceDef {
            group: "openreports.io",
            version: "v1alpha1",
            kind: "ClusterReport",
            plural: "clusterreports",
            namespaced: false,
            listable: true,
        },
    ]
}

fn is_report_group(group: &str) -> bool {
    group == "wgpolicyk8s.io" || group == "openreports.io"
}

/// One list request as the server saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ListRequest {
    pub plural: String,
    pub namespace: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// One server-side apply as the server saw it.
#[derive(Debug, Clone)]
pub struct ApplyRequest {
    pub path: String,
    pub content_type: String,
    pub field_manager: Option<String>,
    pub force: bool,
    /// The report's size as JSON, and how many results it lists.
    pub bytes: usize,
    pub results: usize,
}

/// Objects generated on demand from their index (the memory benchmark: nothing is stored).
#[derive(Debug, Clone, Copy)]
pub struct Generated {
    pub namespaces: usize,
    pub pods: usize,
    pub deployments: usize,
    pub configmaps: usize,
    pub secrets: usize,
}

impl Generated {
    /// `total` objects: 50% Pods, 20% Deployments, 20% ConfigMaps, 10% Secrets, over 100 namespaces.
    pub fn with_total(total: usize) -> Generated {
        Generated {
            namespaces: 100,
            pods: total / 2,
            deployments: total / 5,
            configmaps: total / 5,
            secrets: total - total / 2 - 2 * (total / 5),
        }
    }

    fn count(&self, plural: &str) -> usize {
        match plural {
            "namespaces" => self.namespaces,
            "pods" => self.pods,
            "deployments" => self.deployments,
            "configmaps" => self.configmaps,
            "secrets" => self.secrets,
            _ => 0,
        }
    }

    fn item(&self, plural: &str, i: usize) -> Value {
        let ns = format!("team-{:03}", i % self.namespaces.max(1));
        let env = ["development", "staging", "production"][i % 3];
        let insecure = i % 4 == 0;
        let container = |name: String| {
            let mut c = json!({
                "name": name,
                "image": format!("registry.example/app-{}:1.{}.0", i % 50, i % 7),
                "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
                "env": [{"name": "MODE", "value": "serve"}, {"name": "INDEX", "value": i.to_string()}],
            });
            if i % 7 != 0 {
                c["livenessProbe"] = json!({"httpGet": {"path": "/healthz", "port": 8080}});
                c["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": 8080}});
            }
            c["securityContext"] = if insecure {
                json!({"privileged": true, "runAsUser": 0})
            } else {
                json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true, "runAsUser": 10001, "capabilities": {"drop": ["ALL"]}})
            };
            c
        };
        let meta = |name: String| {
            json!({
                "name": name,
                "namespace": ns,
                "uid": format!("00000000-0000-0000-0000-{i:012}"),
                "resourceVersion": (1000 + i).to_string(),
                "labels": {"app": format!("app-{}", i % 50), "tier": "backend"},
                "annotations": {"note": "x".repeat(200)},
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}}}],
            })
        };
        match plural {
            "namespaces" => json!({
                "metadata": {"name": format!("team-{i:03}"), "labels": {"environment": env}},
            }),
            "pods" => json!({
                "metadata": meta(format!("pod-{i}")),
                "spec": {"containers": [container("app".into()), container("sidecar".into())]},
            }),
            "deployments" => json!({
                "metadata": meta(format!("deploy-{i}")),
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "x"}}, "template": {
                    "metadata": {"labels": {"app": "x"}},
                    "spec": {"containers": [container("app".into())]}}},
            }),
            "configmaps" => json!({
                "metadata": meta(format!("config-{i}")),
                "data": {"LOG_LEVEL": if i % 5 == 0 { "debug" } else { "info" }, "DEBUG": if i % 6 == 0 { "true" } else { "false" }, "payload": "y".repeat(300)},
            }),
            "secrets" => json!({
                "metadata": meta(format!("secret-{i}")),
                "type": "Opaque",
                "data": {"JWT_SECRET": if i % 3 == 0 { "c2hvcnQ=" } else { "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4OQ==" }},
            }),
            _ => json!({}),
        }
    }
}

#[derive(Debug, Default)]
pub struct ApiState {
    pub resources: Vec<ResourceDef>,
    /// plural → objects (namespaced ones keep metadata.namespace).
    pub objects: HashMap<String, Vec<Value>>,
    pub generated: Option<Generated>,
    pub lists: Vec<ListRequest>,
    pub applies: Vec<ApplyRequest>,
    /// "ns/name" → Lease.
    pub leases: BTreeMap<String, Value>,
    /// "" (cluster) or namespace → the applied report named regate-audit (either API).
    pub reports: BTreeMap<String, Value>,
    /// "plural/namespace/name" → every applied report (namespace "" when cluster-scoped).
    pub report_objects: BTreeMap<String, Value>,
    /// "plural/namespace/name" of every report deleted.
    pub deletes: Vec<String>,
    /// Store applied reports without their results (large audits: summaries are kept).
    pub strip_results: bool,
    /// Plurals whose list answers 403.
    pub forbidden: Vec<String>,
    /// Groups whose discovery answers 503.
    pub broken_groups: Vec<String>,
    pub lease_writes: Vec<String>,
    pub resource_version: u64,
}

impl ApiState {
    fn next_rv(&mut self) -> String {
        self.resource_version += 1;
        self.resource_version.to_string()
    }
}

pub struct FakeApiServer {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<ApiState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(value: Value) -> Response {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn query_map(uri: &Uri) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(k.to_string(), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<ApiState>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_string();
    let query = query_map(&uri);
    let mut st = state.lock().unwrap();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();

    // Discovery.
    if method == Method::GET {
        match segs.as_slice() {
            ["api"] => {
                return ok(
                    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
                );
            }
            ["apis"] => {
                let mut groups: Vec<(&str, &str)> = Vec::new();
                for r in st.resources.iter().filter(|r| !r.group.is_empty()) {
                    if !groups.iter().any(|(g, _)| *g == r.group) {
                        groups.push((r.group, r.version));
                    }
                }
                let groups: Vec<Value> = groups
                    .into_iter()
                    .map(|(g, v)| {
                        let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                        json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                    })
                    .collect();
                return ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}));
            }
            ["api", version] | ["apis", _, version] => {
                let group = if segs[0] == "api" { "" } else { segs[1] };
                if st.broken_groups.iter().any(|g| g == group) {
                    return status(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        "the server is currently unable to handle the request",
                    );
                }
                let gv = if group.is_empty() {
                    version.to_string()
                } else {
                    format!("{group}/{version}")
                };
                let resources: Vec<Value> = st
                    .resources
                    .iter()
                    .filter(|r| r.group == group && r.version == *version)
                    .map(|r| {
                        let mut verbs = vec!["get", "create", "update", "patch", "delete"];
                        if r.listable {
                            verbs.extend(["list", "watch"]);
                        }
                        json!({"name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced, "kind": r.kind, "verbs": verbs})
                    })
                    .collect();
                if resources.is_empty() {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "the server could not find the requested resource",
                    );
                }
                return ok(
                    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
                );
            }
            _ => {}
        }
    }

    // Resource paths: /api/v1/[namespaces/{ns}/]{plural}[/{name}] or /apis/{g}/{v}/...
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return status(StatusCode::NOT_FOUND, "NotFound", "no such path"),
    };
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural] => (Some(ns.to_string()), plural.to_string(), None),
        ["namespaces", ns, plural, name] => (
            Some(ns.to_string()),
            plural.to_string(),
            Some(name.to_string()),
        ),
        [plural] => (None, plural.to_string(), None),
        [plural, name] => (None, plural.to_string(), Some(name.to_string())),
        _ => return status(StatusCode::NOT_FOUND, "NotFound", "no such path"),
    };
    let Some(def) = st
        .resources
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .cloned()
    else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({plural})"),
        );
    };

    match (method.clone(), name) {
        (Method::GET, None) => list(&mut st, &def, namespace, &query),
        (Method::GET, Some(name)) if plural == "leases" => {
            let key = format!("{}/{name}", namespace.unwrap_or_default());
            match st.leases.get(&key) {
                Some(l) => ok(l.clone()),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("leases.coordination.k8s.io \"{name}\" not found"),
                ),
            }
        }
        (Method::POST, None) if plural == "leases" => {
            let mut lease: Value = serde_json::from_slice(&body).unwrap();
            let name = lease["metadata"]["name"].as_str().unwrap().to_string();
            let key = format!("{}/{name}", namespace.clone().unwrap_or_default());
            if st.leases.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                );
            }
            lease["metadata"]["resourceVersion"] = json!(st.next_rv());
            lease["metadata"]["namespace"] = json!(namespace);
            let holder = lease["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or("")
                .to_string();
            st.lease_writes.push(format!("create {holder}"));
            st.leases.insert(key, lease.clone());
            (
                StatusCode::CREATED,
                [("content-type", "application/json")],
                lease.to_string(),
            )
                .into_response()
        }
        (Method::PUT, Some(name)) if plural == "leases" => {
            let mut lease: Value = serde_json::from_slice(&body).unwrap();
            let key = format!("{}/{name}", namespace.unwrap_or_default());
            let Some(current) = st.leases.get(&key) else {
                return status(StatusCode::NOT_FOUND, "NotFound", "lease not found");
            };
            if current["metadata"]["resourceVersion"] != lease["metadata"]["resourceVersion"] {
                return status(StatusCode::CONFLICT, "Conflict", "the object has been modified; please apply your changes to the latest version and try again");
            }
            lease["metadata"]["resourceVersion"] = json!(st.next_rv());
            let holder = lease["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or("")
                .to_string();
            st.lease_writes.push(format!("update {holder}"));
            st.leases.insert(key, lease.clone());
            ok(lease)
        }
        (Method::DELETE, Some(name)) if is_report_group(def.group) => {
            let key = format!(
                "{}/{}/{name}",
                def.plural,
                namespace.clone().unwrap_or_default()
            );
            match st.report_objects.remove(&key) {
                Some(_) => {
                    if name == "regate-audit" {
                        st.reports.remove(&namespace.unwrap_or_default());
                    }
                    st.deletes.push(key);
                    ok(json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))
                }
                None => status(StatusCode::NOT_FOUND, "NotFound", "report not found"),
            }
        }
        (Method::PATCH, Some(name)) if is_report_group(def.group) => {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let text = String::from_utf8_lossy(&body).into_owned();
            let parsed: Value = serde_yaml::from_str(&text).unwrap_or(Value::Null);
            st.applies.push(ApplyRequest {
                path: path.clone(),
                content_type: content_type.clone(),
                field_manager: query.get("fieldManager").cloned(),
                force: query.get("force").is_some_and(|f| f == "true"),
                bytes: serde_json::to_vec(&parsed).unwrap().len(),
                results: parsed["results"].as_array().map_or(0, Vec::len),
            });
            if content_type != "application/apply-patch+yaml" {
                return status(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    "only server-side apply is served here",
                );
            }
            if !query.contains_key("fieldManager") {
                return status(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    "fieldManager is required for apply requests",
                );
            }
            let mut report = parsed;
            if report["kind"] != json!(def.kind)
                || report["apiVersion"] != json!(def.group_version())
            {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "kind or apiVersion does not match the path",
                );
            }
            if report["metadata"]["name"] != json!(name) {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "name does not match the path",
                );
            }
            if def.namespaced {
                let ns = namespace.clone().unwrap_or_default();
                let known = st
                    .objects
                    .get("namespaces")
                    .is_some_and(|nss| nss.iter().any(|n| n["metadata"]["name"] == json!(ns)))
                    || st.generated.is_some();
                if !known {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        &format!("namespaces \"{ns}\" not found"),
                    );
                }
                report["metadata"]["namespace"] = json!(ns);
            }
            report["metadata"]["resourceVersion"] = json!(st.next_rv());
            if st.strip_results {
                report["results"] = json!([]);
            }
            // One field manager owning the whole object: the apply replaces it whole.
            let ns = namespace.unwrap_or_default();
            st.report_objects
                .insert(format!("{}/{ns}/{name}", def.plural), report.clone());
            if name == "regate-audit" {
                st.reports.insert(ns, report.clone());
            }
            ok(report)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not served by the test API server",
        ),
    }
}

fn list(
    st: &mut ApiState,
    def: &ResourceDef,
    namespace: Option<String>,
    query: &HashMap<String, String>,
) -> Response {
    let limit = query.get("limit").map(|l| l.parse::<usize>().unwrap());
    let token = query.get("continue").cloned();
    st.lists.push(ListRequest {
        plural: def.plural.to_string(),
        namespace: namespace.clone(),
        limit,
        continue_token: token.clone(),
    });
    if st.forbidden.iter().any(|p| p == def.plural) {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!("{} is forbidden: User \"system:serviceaccount:regate:regate\" cannot list resource \"{}\"", def.plural, def.plural),
        );
    }
    let start = match &token {
        None => 0,
        Some(t) => match t
            .strip_prefix(&format!("{}:", def.plural))
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => {
                return status(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old or invalid",
                )
            }
        },
    };
    let (total, items): (usize, Vec<Value>) = if is_report_group(def.group) {
        // Applied reports, with `labelSelector` (k=v[,k=v]) as the audit uses it.
        let selector: Vec<(String, String)> = query
            .get("labelSelector")
            .map(|s| {
                s.split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let prefix = format!("{}/", def.plural);
        let all: Vec<Value> = st
            .report_objects
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, r)| r)
            .filter(|r| {
                namespace
                    .as_ref()
                    .is_none_or(|ns| r["metadata"]["namespace"] == json!(ns))
            })
            .filter(|r| {
                selector
                    .iter()
                    .all(|(k, v)| r["metadata"]["labels"][k] == json!(v))
            })
            .cloned()
            .collect();
        let total = all.len();
        let end = limit.map_or(total, |l| (start + l).min(total));
        (total, all[start.min(total)..end].to_vec())
    } else if let Some(generated) = st.generated {
        let total = generated.count(def.plural);
        let end = limit.map_or(total, |l| (start + l).min(total));
        (
            total,
            (start..end)
                .map(|i| generated.item(def.plural, i))
                .collect(),
        )
    } else {
        let all: Vec<&Value> = st
            .objects
            .get(def.plural)
            .map(|v| {
                v.iter()
                    .filter(|o| {
                        namespace
                            .as_ref()
                            .is_none_or(|ns| o["metadata"]["namespace"] == json!(ns))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let total = all.len();
        let end = limit.map_or(total, |l| (start + l).min(total));
        let items = all[start.min(total)..end]
            .iter()
            .map(|o| {
                // The apiserver does not repeat apiVersion and kind on list items.
                let mut o = (*o).clone();
                if let Some(m) = o.as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
                o
            })
            .collect();
        (total, items)
    };
    let end = start + items.len();
    let mut metadata = json!({"resourceVersion": "4242"});
    if end < total {
        metadata["continue"] = json!(format!("{}:{end}", def.plural));
        metadata["remainingItemCount"] = json!(total - end);
    }
    ok(json!({
        "kind": format!("{}List", def.kind),
        "apiVersion": def.group_version(),
        "metadata": metadata,
        "items": items,
    }))
}

impl FakeApiServer {
    /// Serves `objects` (full objects with apiVersion and kind) on 127.0.0.1 from its own thread.
    pub fn start(objects: Vec<Value>) -> FakeApiServer {
        let state = ApiState {
            resources: standard_resources(),
            ..ApiState::default()
        };
        let server = Self::start_with(state);
        server.set_objects(objects);
        server
    }

    /// Serves objects generated on demand.
    pub fn start_generated(generated: Generated) -> FakeApiServer {
        Self::start_with(ApiState {
            resources: standard_resources(),
            generated: Some(generated),
            ..ApiState::default()
        })
    }

    pub fn start_with(state: ApiState) -> FakeApiServer {
        let state = Arc::new(Mutex::new(state));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let app_state = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let app = Router::new().fallback(handle).with_state(app_state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = addr_rx.recv().unwrap();
        FakeApiServer {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the served objects.
    pub fn set_objects(&self, objects: Vec<Value>) {
        let mut st = self.state.lock().unwrap();
        st.objects.clear();
        for o in objects {
            let api_version = o["apiVersion"].as_str().unwrap().to_string();
            let kind = o["kind"].as_str().unwrap().to_string();
            let def = st
                .resources
                .iter()
                .find(|r| r.group_version() == api_version && r.kind == kind)
                .unwrap_or_else(|| panic!("no resource for {api_version} {kind}"))
                .clone();
            st.objects
                .entry(def.plural.to_string())
                .or_default()
                .push(o);
        }
    }

    /// A `kube::Client` for this server (call inside a tokio runtime).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse::<axum::http::Uri>().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// A kubeconfig file pointing at this server.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: regate\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn lists(&self) -> Vec<ListRequest> {
        self.state.lock().unwrap().lists.clone()
    }

    pub fn reports(&self) -> BTreeMap<String, Value> {
        self.state.lock().unwrap().reports.clone()
    }

    pub fn report_objects(&self) -> BTreeMap<String, Value> {
        self.state.lock().unwrap().report_objects.clone()
    }

    pub fn deletes(&self) -> Vec<String> {
        self.state.lock().unwrap().deletes.clone()
    }

    pub fn applies(&self) -> Vec<ApplyRequest> {
        self.state.lock().unwrap().applies.clone()
    }

    pub fn lease(&self, key: &str) -> Option<Value> {
        self.state.lock().unwrap().leases.get(key).cloned()
    }
}

// ---------------------------------------------------------------------------------------------
// Objects and policies

pub const CANARY_PLAIN: &str = "CANARY-plain-7f3e9a1c55d2";
pub const CANARY_B64: &str = "CANARY-b64-0c4d8e2a9b7f1";

pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn ns(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "uid": format!("uid-ns-{name}"), "labels": labels}})
}

fn pod(namespace: &str, name: &str, privileged: bool, limits: bool) -> Value {
    let mut c = json!({"name": "app", "image": "nginx:1.27", "securityContext": {"privileged": privileged}});
    if limits {
        c["resources"] = json!({"limits": {"memory": "64Mi"}});
    }
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-pod-{namespace}-{name}")},
           "spec": {"containers": [c]}})
}

fn configmap(namespace: &str, name: &str, debug: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": name, "namespace": namespace},
           "data": {"DEBUG": if debug { "true" } else { "false" }}})
}

/// The test cluster: namespaces with environment labels, Pods (some privileged, enough of them
/// to need several pages), a Deployment, ConfigMaps with DEBUG in every environment, Secrets
/// holding canaries, a Service whose policy fails to evaluate, and a Node (not targeted).
pub fn cluster_objects() -> Vec<Value> {
    let mut out = vec![
        ns("dev", json!({"environment": "development", "team": "a"})),
        ns("prod", json!({"team": "b"})),
        ns("stage", json!({"environment": "staging"})),
        ns("kube-system", json!({})),
    ];
    out.push(pod("prod", "web-privileged", true, false));
    out.push(pod("prod", "web-ok", false, true));
    out.push(pod("dev", "dev-privileged", true, true));
    for i in 0..5 {
        out.push(pod("stage", &format!("batch-{i}"), false, true));
    }
    out.push(pod("kube-system", "kube-proxy", true, false));
    out.push(json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "api", "namespace": "prod", "uid": "uid-deploy-api"},
        "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "api:1", "securityContext": {"privileged": true}, "resources": {"limits": {"memory": "1Gi"}}}]}}}}));
    out.push(configmap("dev", "settings", true));
    out.push(configmap("stage", "settings", true));
    out.push(configmap("prod", "settings", true));
    out.push(configmap("prod", "clean", false));
    out.push(json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "creds", "namespace": "prod",
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{{\"stringData\":{{\"password\":\"{CANARY_PLAIN}\"}}}}")}},
        "stringData": {"password": CANARY_PLAIN},
        "data": {"token": b64(CANARY_B64)}}));
    out.push(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "svc", "namespace": "prod"},
        "spec": {"ports": [{"port": 80}]}}));
    out.push(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}));
    out
}

const POLICIES: &[(&str, &str)] = &[
    (
        "t-privileged.rego",
        r#"# METADATA
# title: Containers are not privileged
# description: No container may run privileged.
# custom:
#   id: t-privileged
#   severity: high
#   category: Pod Security
#   kinds: [Pod, Deployment]
#   action: deny
package regate.policies.t_privileged

import rego.v1

containers contains c if {
	some c in input.request.object.spec.containers
}

containers contains c if {
	some c in input.request.object.spec.template.spec.containers
}

deny contains {"msg": sprintf("container %q is privileged", [c.name]), "path": "spec.containers[].securityContext.privileged"} if {
	some c in containers
	c.securityContext.privileged == true
}

warn contains sprintf("container %q has no memory limit", [c.name]) if {
	some c in containers
	not c.resources.limits.memory
}
"#,
    ),
    (
        "t-debug.rego",
        r#"# METADATA
# title: No debug flags
# description: ConfigMaps must not turn DEBUG on.
# custom:
#   id: t-debug
#   severity: medium
#   kinds: [ConfigMap]
#   action: {development: warn, staging: audit, production: deny}
package regate.policies.t_debug

import rego.v1

deny contains {"msg": sprintf("key %q enables debug", [k]), "path": sprintf("data[%s]", [k])} if {
	some k, v in input.request.object.data
	k == "DEBUG"
	v == "true"
}
"#,
    ),
    (
        "t-namespace-team.rego",
        r#"# METADATA
# title: Namespaces name their team
# description: Every namespace carries a team label.
# custom:
#   id: t-namespace-team
#   severity: low
#   kinds: [Namespace]
#   action: audit
package regate.policies.t_namespace_team

import rego.v1

deny contains "namespace has no team label" if {
	labels := object.get(input.request.object.metadata, "labels", {})
	not labels.team
}
"#,
    ),
    (
        "t-secret-leak.rego",
        r#"# METADATA
# title: A careless Secret policy
# description: Quotes values in its messages (it must not); regate scrubs them.
# custom:
#   id: t-secret-leak
#   severity: critical
#   kinds: [Secret]
#   action: deny
package regate.policies.t_secret_leak

import rego.v1

deny contains sprintf("key %s holds %s", [k, v]) if {
	some k, v in input.request.object.stringData
}

deny contains {"msg": sprintf("key %s decodes to %s", [k, base64.decode(v)]), "path": sprintf("data[%s]=%s", [k, v])} if {
	some k, v in input.request.object.data
}

deny contains sprintf("annotation is %s", [a]) if {
	a := input.request.object.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]
}
"#,
    ),
    (
        "t-broken.rego",
        r#"# METADATA
# title: A policy whose output regate rejects on Services
# description: Returns a result without a message, an invalid output, so the policy fails.
# custom:
#   id: t-broken
#   severity: medium
#   kinds: [Service]
#   action: deny
package regate.policies.t_broken

import rego.v1

deny contains {"path": "spec.ports"} if {
	input.request.object.spec.ports
}
"#,
    ),
];

/// Writes the test policies into `dir/policies` and returns that directory.
pub fn write_policies(dir: &Path) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for (name, text) in POLICIES {
        std::fs::write(policies.join(name), text).unwrap();
    }
    policies
}

/// Builds the policy set from a directory, as the CLI does (no embedded defaults).
pub fn build_set(
    policies: &Path,
    labels: regate::environment::NamespaceLabels,
) -> regate::policy::set::PolicySet {
    let sources = regate::policy::reload::PolicySources {
        dir: policies.to_path_buf(),
        include_defaults: false,
        config: None,
        yaml_loader: regate::catalog::YAML_LOADERS,
    };
    sources.build(labels).unwrap()
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn regate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_regate"))
}

// ---------------------------------------------------------------------------------------------
// A minimal XML reader: enough to check JUnit output is well-formed and read it back.

#[derive(Debug, Clone, Default)]
pub struct Element {
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    pub fn attr(&self, name: &str) -> &str {
        self.attrs.get(name).map(String::as_str).unwrap_or("")
    }

    pub fn all<'a>(&'a self, name: &str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            }
            c.all(name, out);
        }
    }

    pub fn find_all(&self, name: &str) -> Vec<&Element> {
        let mut out = Vec::new();
        self.all(name, &mut out);
        out
    }
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').expect("unterminated entity") + i;
        let entity = &rest[i + 1..end];
        out.push(match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            e if e.starts_with("#x") => {
                char::from_u32(u32::from_str_radix(&e[2..], 16).unwrap()).unwrap()
            }
            e if e.starts_with('#') => char::from_u32(e[1..].parse().unwrap()).unwrap(),
            other => panic!("unknown entity &{other};"),
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    assert!(!out.contains('<'), "raw < in text");
    out
}

/// Parses a document; panics on anything malformed (unbalanced tags, bad attributes, raw `<`).
pub fn parse_xml(text: &str) -> Element {
    let mut s = text.trim_start();
    if s.starts_with("<?xml") {
        s = &s[s.find("?>").unwrap() + 2..];
    }
    let mut stack: Vec<Element> = vec![Element {
        name: "#document".into(),
        ..Element::default()
    }];
    while !s.is_empty() {
        if let Some(rest) = s.strip_prefix("</") {
            let end = rest.find('>').unwrap();
            let name = rest[..end].trim();
            let el = stack.pop().unwrap();
            assert_eq!(el.name, name, "mismatched closing tag");
            stack.last_mut().unwrap().children.push(el);
            s = &rest[end + 1..];
        } else if let Some(rest) = s.strip_prefix('<') {
            let end = rest.find('>').unwrap();
            let mut inner = &rest[..end];
            let self_closing = inner.ends_with('/');
            if self_closing {
                inner = &inner[..inner.len() - 1];
            }
            let name_end = inner.find(char::is_whitespace).unwrap_or(inner.len());
            let mut el = Element {
                name: inner[..name_end].to_string(),
                ..Element::default()
            };
            let mut attrs = inner[name_end..].trim();
            while !attrs.is_empty() {
                let eq = attrs.find('=').unwrap();
                let key = attrs[..eq].trim().to_string();
                let after = &attrs[eq + 1..];
                assert!(after.starts_with('"'), "unquoted attribute {key}");
                let close = after[1..].find('"').unwrap() + 1;
                let value = unescape(&after[1..close]);
                assert!(
                    el.attrs.insert(key.clone(), value).is_none(),
                    "duplicate attribute {key}"
                );
                attrs = after[close + 1..].trim_start();
            }
            if self_closing {
                stack.last_mut().unwrap().children.push(el);
            } else {
                stack.push(el);
            }
            s = &rest[end + 1..];
        } else {
            let end = s.find('<').unwrap_or(s.len());
            let text = unescape(&s[..end]);
            stack.last_mut().unwrap().text.push_str(&text);
            s = &s[end..];
        }
    }
    assert_eq!(stack.len(), 1, "unclosed elements");
    let mut doc = stack.pop().unwrap();
    assert_eq!(doc.children.len(), 1, "one root element");
    doc.children.pop().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The OpenReports CRDs' schemas

/// The `openAPIV3Schema` of `../shared/corpora/openreports/openreports.io_{plural}.yaml`
/// (`reports` or `clusterreports`), or None when the corpus is absent (see `common::corpus`).
pub fn openreports_schema(corpus: &Path, plural: &str) -> Value {
    let path = corpus.join(format!("openreports.io_{plural}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap();
    let crd: Value = serde_yaml::from_str(&text).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Checks `value` against a structural OpenAPI v3 schema as the apiserver does for a CRD:
/// types, enums, required fields, integer formats, and no fields the schema does not declare
/// (the apiserver would prune them silently). Returns every violation with its path.
pub fn schema_violations(schema: &Value, value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check_schema(schema, value, "", &mut out);
    out
}

fn check_schema(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let ty = schema["type"].as_str().unwrap_or("");
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        _ => true,
    };
    if !ok {
        out.push(format!("{path}: expected {ty}, got {value}"));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            out.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
    }
    if schema["format"] == "int32" {
        if let Some(n) = value.as_i64() {
            if i32::try_from(n).is_err() {
                out.push(format!("{path}: {n} is out of int32 range"));
            }
        }
    }
    if let Some(obj) = value.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(key.as_str().unwrap()) {
                out.push(format!("{path}: missing required field {key}"));
            }
        }
        let properties = schema["properties"].as_object();
        let additional = schema.get("additionalProperties");
        let preserve = schema["x-kubernetes-preserve-unknown-fields"] == true;
        for (k, v) in obj {
            let sub = format!("{path}.{k}");
            if let Some(p) = properties.and_then(|p| p.get(k)) {
                check_schema(p, v, &sub, out);
            } else if let Some(a) = additional {
                check_schema(a, v, &sub, out);
            } else if properties.is_some() && !preserve {
                out.push(format!("{sub}: not in the schema"));
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check_schema(items, v, &format!("{path}[{i}]"), out);
        }
    }
}
