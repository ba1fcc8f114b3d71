//! A small Kubernetes API server for the inventory sync tests (axum, plain HTTP on 127.0.0.1:0):
//! discovery of `networking.k8s.io/v1` (Ingress only; other group-versions are 404), list and
//! watch of Ingresses and of Namespaces (`/api/v1/namespaces`, for the namespace watch). Objects added with [`FakeCluster::add`] reach open watches as ADDED
//! events; a watch from a resourceVersion first replays what happened after it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::broadcast;

#[derive(Default)]
struct State {
    objects: Vec<Value>,
    /// (resourceVersion, event) for every change, for watches that start behind.
    log: Vec<(u64, Value)>,
    rv: u64,
    requests: Vec<String>,
}

pub struct FakeCluster {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Value>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Clone)]
struct App {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Value>,
}

fn json_response(code: StatusCode, value: Value) -> Response {
    (
        code,
        [("content-type", "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn not_found(path: &str) -> Response {
    json_response(
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "NotFound", "code": 404, "message": format!("{path} not found")}),
    )
}

fn query(uri: &Uri) -> HashMap<String, String> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn handle(axum::extract::State(app): axum::extract::State<App>, uri: Uri) -> Response {
    let path = uri.path().to_string();
    app.state.lock().unwrap().requests.push(uri.to_string());
    let q = query(&uri);
    match path.as_str() {
        "/apis/networking.k8s.io/v1" => json_response(
            StatusCode::OK,
            json!({"kind": "APIResourceList", "apiVersion": "v1",
                   "groupVersion": "networking.k8s.io/v1",
                   "resources": [{"name": "ingresses", "singularName": "ingress",
                                  "namespaced": true, "kind": "Ingress",
                                  "verbs": ["get", "list", "watch"]}]}),
        ),
        "/apis/networking.k8s.io/v1/ingresses" | "/api/v1/namespaces" => {
            let (kind, list_kind, api_version) = if path.starts_with("/api/v1/") {
                ("Namespace", "NamespaceList", "v1")
            } else {
                ("Ingress", "IngressList", "networking.k8s.io/v1")
            };
            let of_kind = move |o: &Value| o["kind"] == kind;
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                let since: u64 = q
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let (backlog, rx) = {
                    let st = app.state.lock().unwrap();
                    let backlog: Vec<Value> = st
                        .log
                        .iter()
                        .filter(|(rv, e)| *rv > since && of_kind(&e["object"]))
                        .map(|(_, e)| e.clone())
                        .collect();
                    (backlog, app.events.subscribe())
                };
                let live = futures_util::stream::unfold(rx, move |mut rx| async move {
                    loop {
                        match rx.recv().await {
                            Ok(e) if of_kind(&e["object"]) => return Some((e, rx)),
                            Ok(_) => continue,
                            Err(broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                });
                use futures_util::StreamExt;
                let stream = futures_util::stream::iter(backlog)
                    .chain(live)
                    .map(|e| Ok::<_, std::convert::Infallible>(format!("{e}\n").into_bytes()));
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Body::from_stream(stream))
                    .unwrap()
            } else {
                let st = app.state.lock().unwrap();
                // List items without apiVersion and kind, as the real API server sends them.
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|o| of_kind(o))
                    .map(|o| {
                        let mut o = o.clone();
                        let m = o.as_object_mut().unwrap();
                        m.remove("apiVersion");
                        m.remove("kind");
                        o
                    })
                    .collect();
                json_response(
                    StatusCode::OK,
                    json!({"kind": list_kind, "apiVersion": api_version,
                           "metadata": {"resourceVersion": st.rv.to_string()},
                           "items": items}),
                )
            }
        }
        other => not_found(other),
    }
}

impl FakeCluster {
    pub fn start() -> FakeCluster {
        let state = Arc::new(Mutex::new(State::default()));
        let (events, _) = broadcast::channel(256);
        let app = App {
            state: state.clone(),
            events: events.clone(),
        };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let router = Router::new().fallback(handle).with_state(app);
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        FakeCluster {
            addr: addr_rx.recv().unwrap(),
            state,
            events,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A real `kube::Client` for this server (call inside a tokio runtime).
    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse::<axum::http::Uri>().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// A kubeconfig file pointing at this server.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Adds (or replaces) an object and tells open watches.
    pub fn add(&self, mut object: Value) {
        let event = {
            let mut st = self.state.lock().unwrap();
            st.rv += 1;
            let rv = st.rv;
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let key = |o: &Value| {
                (
                    o["metadata"]["namespace"].clone(),
                    o["metadata"]["name"].clone(),
                )
            };
            let k = key(&object);
            st.objects.retain(|o| key(o) != k);
            st.objects.push(object.clone());
            let event = json!({"type": "ADDED", "object": object});
            st.log.push((rv, event.clone()));
            event
        };
        let _ = self.events.send(event);
    }

    /// Request URIs seen, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Open watch streams keep the graceful shutdown waiting; don't join the thread.
        drop(self.thread.take());
    }
}
