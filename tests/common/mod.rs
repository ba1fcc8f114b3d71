//! A real regate server on an ephemeral port with a generated CA, and clients that verify it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod generate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regate::policy::reload::PolicySources;
use regate::server::{Server, ServerConfig};
use serde_json::Value;

pub const TEST_CONFIG: &str = r#"
environments:
  default: production
  namespaces: { prod: production, staging: staging, dev: development }
"#;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A path under `../shared/corpora` (beside the checkout), or `None` when it is absent, with a
/// printed "skipped" line: a fresh clone has no corpora and its `cargo test` must still pass.
/// Under `CI=true` an absent corpus fails the test instead, so CI always runs the corpus tests.
/// The one way every test that reads the corpora handles their absence.
pub fn corpus(relative: &str) -> Option<PathBuf> {
    let path = repo().join("../shared/corpora").join(relative);
    if path.exists() {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    assert!(
        !ci,
        "../shared/corpora/{relative} not found at {} (CI=true: the corpus tests must run)",
        path.display()
    );
    println!("skipped: ../shared/corpora/{relative} not found");
    None
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub shutdown: tokio::sync::watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
}

pub struct Options {
    pub policies: PathBuf,
    pub config: Option<String>,
    pub include_defaults: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policies: repo().join("policies"),
            config: Some(TEST_CONFIG.to_string()),
            include_defaults: false,
        }
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> TestServer {
        install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let certs = regate::tls::certs::generate(&[], &dir.path().join("certs"), 2).unwrap();
        let config_path = opts.config.as_ref().map(|text| {
            let p = dir.path().join("config").join("regate.yaml");
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            p
        });
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            tls_cert: certs.cert_path.clone(),
            tls_key: certs.key_path.clone(),
            client_ca: None,
            sources: PolicySources {
                dir: opts.policies.clone(),
                include_defaults: opts.include_defaults,
                config: config_path,
                yaml_loader: regate::catalog::YAML_LOADERS,
            },
            watch: true,
            watch_namespaces: false,
        };
        let server = Server::new(config).await.unwrap();
        let addr = server.local_addr().unwrap();
        let metrics_addr = server.metrics_addr();
        let shutdown = server.shutdown_handle();
        let task = tokio::spawn(async move {
            server.run().await.unwrap();
        });
        TestServer {
            addr,
            metrics_addr,
            dir,
            ca: certs.ca_path,
            shutdown,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config").join("regate.yaml")
    }

    /// An HTTP/1.1 keep-alive client trusting only the test CA, as kube-apiserver calls webhooks.
    pub fn http1(&self) -> reqwest::Client {
        client(&self.ca, false)
    }

    /// An HTTP/2 client (ALPN h2) trusting only the test CA.
    pub fn http2(&self) -> reqwest::Client {
        client(&self.ca, true)
    }

    pub async fn metrics(&self) -> String {
        let addr = self.metrics_addr.unwrap();
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

pub fn client(ca: &Path, http2: bool) -> reqwest::Client {
    let pem = std::fs::read(ca).unwrap();
    let cert = reqwest::Certificate::from_pem(&pem).unwrap();
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .pool_max_idle_per_host(4)
        .timeout(Duration::from_secs(20));
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build().unwrap()
}

/// Posts a review and returns (HTTP status, HTTP version, body JSON).
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::Version, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let version = response.version();
    let text = response.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, version, json)
}

/// Wraps a `*.request.json` corpus file as a full AdmissionReview.
pub fn wrap_request(request: Value) -> Value {
    serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

/// Policy ids named in a deny message or warnings (`[id] …`).
pub fn ids_in(texts: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for text in texts {
        for part in text.split("; [").map(|p| p.trim_start_matches('[')) {
            if let Some(end) = part.find(']') {
                let id = part[..end].to_string();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
    }
    ids.sort();
    ids
}

pub fn response(body: &Value) -> &Value {
    &body["response"]
}

pub fn warnings(body: &Value) -> Vec<String> {
    body["response"]["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes /mutate's patch exactly as the AdmissionReview API documents it: `response.patch`
/// is a JSON string holding the base64 of a JSON Patch array, with `patchType: JSONPatch`.
/// Anything else (kube-core's array of numbers included) fails the test.
pub fn patch_of(body: &Value) -> Option<json_patch::Patch> {
    use base64::Engine as _;
    let response = &body["response"];
    let b64 = match &response["patch"] {
        Value::Null => {
            assert!(
                response.get("patchType").is_none(),
                "patchType without a patch: {body}"
            );
            return None;
        }
        Value::String(b64) => b64,
        other => panic!("response.patch is not a base64 string: {other}"),
    };
    assert_eq!(response["patchType"], "JSONPatch", "{body}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("response.patch is not standard base64: {e}"));
    let patch: Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("response.patch is not JSON: {e}"));
    assert!(patch.is_array(), "a JSON Patch is an array: {patch}");
    Some(serde_json::from_value(patch).unwrap())
}
