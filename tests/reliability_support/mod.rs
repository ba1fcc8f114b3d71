//! Helpers for the reliability tests: a PKI made with rcgen, the real `regate serve` binary as a
//! subprocess with its logs captured, raw TLS connections, and a load driver that checks every
//! answer against the fixtures' expectations.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use serde::Deserialize;
use serde_json::Value;

use crate::common::repo;

// ------------------------------------------------------------------------------------------
// PKI
// ------------------------------------------------------------------------------------------

/// A CA that issues server and client certificates.
pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(2);
        let cert = params.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(
        &self,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
        days: i64,
    ) -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(days);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A server certificate for localhost and 127.0.0.1; `days` sets its expiry (so that a
    /// rotation is visible in `regate_tls_certificate_not_after`).
    pub fn server(&self, days: i64) -> (String, String) {
        self.issue(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            days,
        )
    }

    pub fn client(&self, name: &str) -> (String, String) {
        self.issue(
            vec![name.to_string()],
            ExtendedKeyUsagePurpose::ClientAuth,
            2,
        )
    }
}

/// Writes beside `path` then renames: a watcher never sees half a file.
pub fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

// ------------------------------------------------------------------------------------------
// The real binary
// ------------------------------------------------------------------------------------------

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct BinaryOptions {
    pub config: String,
    /// Extra policy files (name, text) beside a copy of the repository's policies.
    pub extra_policies: Vec<(String, String)>,
    pub log_level: String,
    pub client_ca: Option<String>,
    /// Listen for metrics here (a port the test may already hold).
    pub metrics_port: Option<u16>,
    /// Run as the unprivileged user `nobody` (so that file permissions apply).
    pub as_nobody: bool,
    /// Run under `prlimit --nofile=N:N` (util-linux): a low open-files limit.
    pub nofile: Option<u64>,
    /// Extra environment variables (name, value).
    pub env: Vec<(String, String)>,
}

impl Default for BinaryOptions {
    fn default() -> Self {
        BinaryOptions {
            config: crate::common::TEST_CONFIG.to_string(),
            extra_policies: Vec::new(),
            log_level: "info".into(),
            client_ca: None,
            metrics_port: None,
            as_nobody: false,
            nofile: None,
            env: Vec::new(),
        }
    }
}

/// `regate serve` as a subprocess, with its own certificates, policies and config in a temporary
/// directory and its log (JSON lines on stderr) in `log`.
pub struct Regate {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
    pub dir: tempfile::TempDir,
    pub pki: Pki,
    pub log: PathBuf,
}

impl Regate {
    pub fn start(opts: BinaryOptions) -> Regate {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(&opts) {
                Ok(r) => return r,
                Err(e) => last = e,
            }
        }
        panic!("regate serve did not start: {last}");
    }

    fn try_start(opts: &BinaryOptions) -> Result<Regate, String> {
        crate::common::install_crypto();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let pki = Pki::new("regate test CA");
        std::fs::write(root.join("ca.crt"), &pki.ca_pem).unwrap();
        // Laid out as a mounted Secret is: the files are links through `..data`, which a
        // rotation swaps in one rename (see `rotate_certificate`).
        let (cert, key) = pki.server(30);
        let tls = root.join("tls");
        std::fs::create_dir_all(tls.join("..v0")).unwrap();
        std::fs::write(tls.join("..v0/tls.crt"), cert).unwrap();
        std::fs::write(tls.join("..v0/tls.key"), key).unwrap();
        std::os::unix::fs::symlink("..v0", tls.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tls.crt", tls.join("tls.crt")).unwrap();
        std::os::unix::fs::symlink("..data/tls.key", tls.join("tls.key")).unwrap();
        copy_dir(&repo().join("policies"), &root.join("policies"));
        for (name, text) in &opts.extra_policies {
            std::fs::write(root.join("policies").join(name), text).unwrap();
        }
        std::fs::create_dir_all(root.join("config")).unwrap();
        std::fs::write(root.join("config/regate.yaml"), &opts.config).unwrap();
        if let Some(ca) = &opts.client_ca {
            std::fs::write(root.join("client-ca.crt"), ca).unwrap();
        }
        let port = free_port();
        let metrics_port = opts.metrics_port.unwrap_or_else(free_port);
        let log = root.join("regate.log");
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-listen".into(),
            format!("127.0.0.1:{metrics_port}"),
            "--tls-cert".into(),
            root.join("tls/tls.crt").display().to_string(),
            "--tls-key".into(),
            root.join("tls/tls.key").display().to_string(),
            "--policies".into(),
            root.join("policies").display().to_string(),
            "--config".into(),
            root.join("config/regate.yaml").display().to_string(),
            "--log-format".into(),
            "json".into(),
            "--log-level".into(),
            opts.log_level.clone(),
        ];
        if opts.client_ca.is_some() {
            args.push("--client-ca".into());
            args.push(root.join("client-ca.crt").display().to_string());
        }
        let bin = env!("CARGO_BIN_EXE_regate");
        let mut command = if opts.as_nobody {
            make_world_readable(root);
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", bin]);
            c
        } else if let Some(n) = opts.nofile {
            let mut c = Command::new("prlimit");
            c.args([
                format!("--nofile={n}:{n}"),
                "--".to_string(),
                bin.to_string(),
            ]);
            c
        } else {
            Command::new(bin)
        };
        let child = command
            .args(&args)
            .env_remove("RUST_LOG")
            .env("REGATE_WATCH_NAMESPACES", "false")
            .envs(opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(root.join("regate.stdout")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .map_err(|e| format!("spawn {bin}: {e}"))?;
        let mut regate = Regate {
            child,
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            metrics: format!("127.0.0.1:{metrics_port}").parse().unwrap(),
            dir,
            pki,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = regate.child.try_wait() {
                return Err(format!("exited with {status}: {}", regate.logs()));
            }
            // Below info (`off`, `error`, `warn`) the "serving" line is not logged: the port
            // answering is the sign.
            let quiet = matches!(opts.log_level.as_str(), "off" | "error" | "warn");
            if (quiet || regate.logs().contains("regate serving"))
                && std::net::TcpStream::connect(regate.addr).is_ok()
            {
                return Ok(regate);
            }
            if Instant::now() > deadline {
                let _ = regate.child.kill();
                return Err(format!("not serving after 60 s: {}", regate.logs()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replaces the serving certificate and key at once, as the kubelet updates a Secret volume:
    /// a new folder, then one rename of the `..data` link. `n` numbers the version.
    pub fn rotate_certificate(&self, n: u64, days: i64) {
        let tls = self.root().join("tls");
        let version = format!("..v{n}");
        let (cert, key) = self.pki.server(days);
        std::fs::create_dir_all(tls.join(&version)).unwrap();
        std::fs::write(tls.join(&version).join("tls.crt"), cert).unwrap();
        std::fs::write(tls.join(&version).join("tls.key"), key).unwrap();
        let link = tls.join("..data_tmp");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&version, &link).unwrap();
        std::fs::rename(&link, tls.join("..data")).unwrap();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub fn ca_path(&self) -> PathBuf {
        self.root().join("ca.crt")
    }

    pub fn http1(&self) -> reqwest::Client {
        crate::common::client(&self.ca_path(), false)
    }

    pub fn http2(&self) -> reqwest::Client {
        crate::common::client(&self.ca_path(), true)
    }

    /// Everything the process wrote to standard output.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(
            &std::fs::read(self.root().join("regate.stdout")).unwrap_or_default(),
        )
        .to_string()
    }

    pub fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let mut bytes = Vec::new();
            let _ = f.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).to_string();
        }
        text
    }

    /// Waits until the log holds `needle` `count` times; false after `within`.
    pub fn wait_log(&self, needle: &str, count: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.logs().matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    pub async fn metrics_text(&self) -> String {
        reqwest::Client::new()
            .get(format!("http://{}/metrics", self.metrics))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Resident set size, in KiB (`VmRSS`), and its peak so far (`VmHWM`).
    pub fn rss_kib(&self) -> (u64, u64) {
        rss_of(self.pid())
    }

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits for the process to exit; its exit code, or None after `within` (then killed).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        None
    }
}

impl Drop for Regate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rss_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let path = entry.path();
        if path.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()));
        } else {
            std::fs::copy(&path, to.join(entry.file_name())).unwrap();
        }
    }
}

fn make_world_readable(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p).unwrap();
        let mode = if meta.is_dir() { 0o777 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
}

/// Every JSON log line of a log.
pub fn log_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

// ------------------------------------------------------------------------------------------
// Raw TLS
// ------------------------------------------------------------------------------------------

pub fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> rustls::ClientConfig {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

pub async fn tls_connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await
}

/// Whether the server closed the connection within `within` (a read returns end of stream or
/// an error), false if it is still open.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> bool {
    use tokio::io::AsyncReadExt;
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

// ------------------------------------------------------------------------------------------
// Load with expected answers
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub struct Expected {
    pub allowed: bool,
    #[serde(default)]
    pub deny: Option<Vec<String>>,
    #[serde(default)]
    pub warn: Option<Vec<String>>,
    #[serde(default)]
    pub patch: Option<bool>,
}

/// A request of the mix and what its answer must be.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub body: Arc<Vec<u8>>,
    pub uid: String,
    pub expected: Expected,
}

/// The realistic mix: every fixture under `fixtures/admission` and `fixtures/bench`, each with
/// its expected answer.
pub fn mix() -> Vec<Case> {
    let mut out = Vec::new();
    for dir in ["fixtures/admission", "fixtures/bench"] {
        let dir = repo().join(dir);
        let text = std::fs::read_to_string(dir.join("expected.yaml")).unwrap();
        let expected: BTreeMap<String, Expected> = serde_yaml::from_str(&text).unwrap();
        for (name, expected) in expected {
            let body = std::fs::read(dir.join(&name)).unwrap();
            let value: Value = serde_json::from_slice(&body).unwrap();
            out.push(Case {
                name: format!("{}/{name}", dir.file_name().unwrap().to_string_lossy()),
                uid: value["request"]["uid"].as_str().unwrap().to_string(),
                body: Arc::new(body),
                expected,
            });
        }
    }
    out
}

/// Checks one answer against its case; the reason it is wrong, if it is.
pub fn wrong_answer(case: &Case, endpoint: &str, status: u16, body: &Value) -> Option<String> {
    let r = &body["response"];
    if status != 200 {
        return Some(format!("{} {endpoint}: HTTP {status}: {body}", case.name));
    }
    if r["uid"] != case.uid.as_str() {
        return Some(format!("{} {endpoint}: uid {} ", case.name, r["uid"]));
    }
    if endpoint == "/mutate" {
        if r["allowed"] != true {
            return Some(format!("{} /mutate denied", case.name));
        }
        if let Some(patch) = case.expected.patch {
            if (r["patch"].is_null()) == patch {
                return Some(format!(
                    "{} /mutate: patch expected {patch}: {body}",
                    case.name
                ));
            }
        }
        return None;
    }
    if r["allowed"] != case.expected.allowed {
        return Some(format!(
            "{} /validate: allowed {} expected {}: {body}",
            case.name, r["allowed"], case.expected.allowed
        ));
    }
    if let Some(deny) = &case.expected.deny {
        let message = r["status"]["message"].as_str().unwrap_or("").to_string();
        let ids = if case.expected.allowed {
            vec![]
        } else {
            crate::common::ids_in(&[message])
        };
        if &ids != deny {
            return Some(format!(
                "{} /validate: denied by {ids:?}, expected {deny:?}",
                case.name
            ));
        }
    }
    if let Some(warn) = &case.expected.warn {
        let ids = crate::common::ids_in(&crate::common::warnings(body));
        if &ids != warn {
            return Some(format!(
                "{} /validate: warned by {ids:?}, expected {warn:?}",
                case.name
            ));
        }
    }
    None
}

/// Counters shared by load workers.
#[derive(Default)]
pub struct LoadStats {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub wrong: AtomicU64,
    pub errors: Mutex<Vec<String>>,
    pub latencies_us: Mutex<Vec<u64>>,
}

impl LoadStats {
    pub fn record_error(&self, e: String) {
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 20 {
            errors.push(e);
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} answered correctly, {} failed, {} wrong; first errors: {:?}",
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
            self.errors.lock().unwrap()
        )
    }

    /// (p50, p99, max) in milliseconds, for the record.
    pub fn percentiles_ms(&self) -> (f64, f64, f64) {
        let mut l = self.latencies_us.lock().unwrap().clone();
        if l.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        l.sort_unstable();
        let at = |q: f64| l[((l.len() as f64 - 1.0) * q) as usize] as f64 / 1000.0;
        (at(0.5), at(0.99), at(1.0))
    }
}

/// One worker: sends the mix round-robin (starting at `offset`) to /validate and /mutate until
/// `stop` is set, checking every answer. A fresh client every `reconnect_every` requests, so
/// that new TLS handshakes (and rotated certificates) are part of the load.
pub async fn worker(
    client_factory: Arc<dyn Fn() -> reqwest::Client + Send + Sync>,
    base: String,
    cases: Arc<Vec<Case>>,
    offset: usize,
    stats: Arc<LoadStats>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    reconnect_every: u64,
) {
    let mut client = client_factory();
    let mut i = offset;
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let case = &cases[i % cases.len()];
        let endpoint = if (i / cases.len()) % 2 == 0 {
            "/validate"
        } else {
            "/mutate"
        };
        i += 1;
        sent += 1;
        if reconnect_every > 0 && sent % reconnect_every == 0 {
            client = client_factory();
        }
        let started = Instant::now();
        let result = client
            .post(format!("{base}{endpoint}"))
            .header("content-type", "application/json")
            .body(case.body.as_ref().clone())
            .send()
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                stats.record_error(format!("{} {endpoint}: {e:?}", case.name));
                continue;
            }
        };
        let status = response.status().as_u16();
        let body: Value = match response.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                stats.record_error(format!("{} {endpoint}: body: {e:?}", case.name));
                continue;
            }
        };
        stats
            .latencies_us
            .lock()
            .unwrap()
            .push(started.elapsed().as_micros() as u64);
        match wrong_answer(case, endpoint, status, &body) {
            None => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Some(why) => {
                if status == 200 {
                    stats.wrong.fetch_add(1, Ordering::Relaxed);
                } else {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                }
                stats.record_error(why);
            }
        }
    }
}

/// The value of one sample line (`name{labels} value`) in a Prometheus text exposition; 0 when
/// absent.
pub fn sample(metrics: &str, name_and_labels: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

// ------------------------------------------------------------------------------------------
// Soak
// ------------------------------------------------------------------------------------------

pub struct SoakPlan {
    pub duration: Duration,
    pub reload_every: Duration,
    pub rotate_every: Duration,
    pub workers: usize,
    pub rss_every: Duration,
    /// RSS samples before this are warm-up.
    pub warm_up: Duration,
}

#[derive(Debug, Default)]
pub struct SoakReport {
    pub seconds: f64,
    pub requests_ok: u64,
    pub failed: u64,
    pub wrong: u64,
    pub errors: Vec<String>,
    pub reloads_done: u64,
    pub reloads_seen: f64,
    pub rotations_done: u64,
    pub rotations_seen: u64,
    /// (seconds since start, VmRSS KiB).
    pub rss: Vec<(f64, u64)>,
    pub peak_kib: u64,
    pub latency_ms: (f64, f64, f64),
    pub log_errors: Vec<String>,
}

impl SoakReport {
    /// Median RSS of the first and the last minute after warm-up (or of the first and last
    /// quarter of the samples after warm-up, when shorter), and their relative difference.
    pub fn rss_drift(&self, warm_up: Duration) -> (u64, u64, f64) {
        let after: Vec<(f64, u64)> = self
            .rss
            .iter()
            .copied()
            .filter(|(t, _)| *t >= warm_up.as_secs_f64())
            .collect();
        if after.len() < 4 {
            return (0, 0, 0.0);
        }
        let span = (after.len() / 4).max(1);
        let window = |xs: &[(f64, u64)]| {
            let mut v: Vec<u64> = xs.iter().map(|(_, r)| *r).collect();
            v.sort_unstable();
            v[v.len() / 2]
        };
        let minute = after
            .iter()
            .filter(|(t, _)| *t < after[0].0 + 60.0)
            .count()
            .max(span);
        let minute = minute.min(after.len() / 2).max(1);
        let first = window(&after[..minute]);
        let last = window(&after[after.len() - minute..]);
        (first, last, (last as f64 - first as f64) / first as f64)
    }

    pub fn summary(&self, warm_up: Duration) -> String {
        let (first, last, drift) = self.rss_drift(warm_up);
        let min = self
            .rss
            .iter()
            .filter(|(t, _)| *t >= warm_up.as_secs_f64())
            .map(|(_, r)| *r)
            .min()
            .unwrap_or(0);
        let max = self
            .rss
            .iter()
            .filter(|(t, _)| *t >= warm_up.as_secs_f64())
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0);
        format!(
            "soak {:.0} s: {} requests answered correctly ({:.0}/s), {} failed, {} wrong; \
             policy reloads {} written / {} seen, certificate rotations {} written / {} seen; \
             latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; RSS after warm-up: first {} KiB, \
             last {} KiB, drift {:+.1}%, range {}..{} KiB, peak (VmHWM) {} KiB; {} error log lines",
            self.seconds,
            self.requests_ok,
            self.requests_ok as f64 / self.seconds.max(1.0),
            self.failed,
            self.wrong,
            self.reloads_done,
            self.reloads_seen,
            self.rotations_done,
            self.rotations_seen,
            self.latency_ms.0,
            self.latency_ms.1,
            self.latency_ms.2,
            first,
            last,
            drift * 100.0,
            min,
            max,
            self.peak_kib,
            self.log_errors.len(),
        )
    }
}

/// Drives the realistic mix at a real `regate serve` for `plan.duration` while a policy file is
/// rewritten every `reload_every` (the same rules, a different comment, so that every answer
/// keeps its expected value) and the serving certificate is replaced every `rotate_every` (a
/// new key, signed by the same CA, with a different expiry). Every answer is checked.
pub async fn soak(plan: SoakPlan) -> SoakReport {
    let regate = Regate::start(BinaryOptions::default());
    let cases = Arc::new(mix());
    let stats = Arc::new(LoadStats::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ca = regate.ca_path();
    let base = format!("https://localhost:{}", regate.addr.port());
    let mut tasks = Vec::new();
    for w in 0..plan.workers {
        let ca = ca.clone();
        let http2 = w % 2 == 1;
        let factory: Arc<dyn Fn() -> reqwest::Client + Send + Sync> =
            Arc::new(move || crate::common::client(&ca, http2));
        tasks.push(tokio::spawn(worker(
            factory,
            base.clone(),
            cases.clone(),
            w * 7,
            stats.clone(),
            stop.clone(),
            200,
        )));
    }
    let started = Instant::now();
    let mut report = SoakReport::default();
    let policy = regate.root().join("policies/pod-run-as-non-root.rego");
    let original = std::fs::read_to_string(&policy).unwrap();
    let mut next_reload = plan.reload_every;
    let mut next_rotate = plan.rotate_every;
    let mut next_rss = Duration::ZERO;
    let mut last_not_after = sample(
        &regate.metrics_text().await,
        "regate_tls_certificate_not_after_timestamp_seconds",
    );
    let reloads_before = sample(
        &regate.metrics_text().await,
        "regate_policy_reload_total{result=\"success\"}",
    );
    while started.elapsed() < plan.duration {
        let now = started.elapsed();
        if now >= next_rss {
            let (rss, _) = regate.rss_kib();
            report.rss.push((now.as_secs_f64(), rss));
            next_rss += plan.rss_every;
        }
        if now >= next_reload {
            report.reloads_done += 1;
            write_atomic(
                &policy,
                format!("{original}\n# soak reload {}\n", report.reloads_done).as_bytes(),
            );
            next_reload += plan.reload_every;
        }
        if now >= next_rotate {
            report.rotations_done += 1;
            regate.rotate_certificate(report.rotations_done, 30 + report.rotations_done as i64);
            next_rotate += plan.rotate_every;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if report.rotations_done > report.rotations_seen {
            let not_after = sample(
                &regate.metrics_text().await,
                "regate_tls_certificate_not_after_timestamp_seconds",
            );
            if not_after != last_not_after {
                report.rotations_seen += 1;
                last_not_after = not_after;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    report.seconds = started.elapsed().as_secs_f64();
    let (_, peak) = regate.rss_kib();
    report.peak_kib = peak;
    let metrics = regate.metrics_text().await;
    report.reloads_seen =
        sample(&metrics, "regate_policy_reload_total{result=\"success\"}") - reloads_before;
    report.requests_ok = stats.ok.load(Ordering::Relaxed);
    report.failed = stats.failed.load(Ordering::Relaxed);
    report.wrong = stats.wrong.load(Ordering::Relaxed);
    report.errors = stats.errors.lock().unwrap().clone();
    report.latency_ms = stats.percentiles_ms();
    report.log_errors = log_lines(&regate.logs())
        .into_iter()
        .filter(|l| l["level"] == "ERROR")
        .map(|l| l.to_string())
        .collect();
    report
}
