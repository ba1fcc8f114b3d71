//! Certificates: `regate certs generate`, rotation without failing requests, rejection of a
//! bad, expired or not-yet-valid pair, client-certificate verification, readiness on an expired
//! or not-yet-valid certificate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    PKCS_ECDSA_P256_SHA256,
};
use regate::policy::reload::PolicySources;
use regate::server::{Server, ServerConfig};

#[test]
fn certs_generate_writes_a_ca_and_a_server_pair() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args([
            "certs",
            "generate",
            "--dns",
            "regate.regate-system.svc",
            "--dns",
            "regate.regate-system.svc.cluster.local",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let bundle = stdout
        .lines()
        .find_map(|l| l.strip_prefix("caBundle: "))
        .unwrap();
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(bundle)
        .unwrap();
    assert_eq!(decoded, std::fs::read(dir.path().join("ca.crt")).unwrap());

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let pem = std::fs::read(dir.path().join("tls.crt")).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let cert = pem.parse_x509().unwrap();
    let spki = cert.public_key();
    assert_eq!(
        spki.algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1",
        "ECDSA"
    );
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve.to_id_string(), "1.2.840.10045.3.1.7", "P-256");
    let eku = cert.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth);
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    for want in [
        "localhost",
        "regate.regate-system.svc",
        "regate.regate-system.svc.cluster.local",
    ] {
        assert!(
            names.iter().any(|n| n.contains(want)),
            "{want} in {names:?}"
        );
    }
}

use std::process::Command;

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

fn leaf(
    issuer: &Issuer<'static, KeyPair>,
    names: &[&str],
    eku: ExtendedKeyUsagePurpose,
    days: (i64, i64),
) -> (String, String) {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.extended_key_usages = vec![eku];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(days.0);
    params.not_after = now + time::Duration::days(days.1);
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Writes beside the target and renames, as a Secret volume's symlink swap replaces files whole.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn start(
    cert: &Path,
    key: &Path,
    client_ca: Option<PathBuf>,
) -> (Server, tokio::sync::watch::Sender<bool>) {
    install_crypto();
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        tls_cert: cert.to_path_buf(),
        tls_key: key.to_path_buf(),
        client_ca,
        sources: PolicySources {
            dir: repo().join("policies"),
            include_defaults: false,
            config: None,
            yaml_loader: regate::catalog::YAML_LOADERS,
        },
        watch: true,
        watch_namespaces: false,
    };
    let server = Server::new(config).await.unwrap();
    let shutdown = server.shutdown_handle();
    (server, shutdown)
}

fn trusting(cas: &[&rcgen::Certificate]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .http1_only();
    for ca in cas {
        builder = builder
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn not_after_metric(addr: std::net::SocketAddr) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("regate_tls_certificate_not_after_timestamp_seconds "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn rotation_keeps_serving_and_rejects_a_bad_pair() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (ca1, issuer1) = ca("ca one");
    let (ca2, issuer2) = ca("ca two");
    let (c, k) = leaf(
        &issuer1,
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        (-1, 10),
    );
    std::fs::write(&cert_path, c).unwrap();
    std::fs::write(&key_path, k).unwrap();
    let (server, shutdown) = start(&cert_path, &key_path, None).await;
    let (addr, metrics) = (server.local_addr().unwrap(), server.metrics_addr().unwrap());
    let task = tokio::spawn(server.run());
    let url = format!("https://localhost:{}/validate", addr.port());
    let first_expiry = not_after_metric(metrics).await;

    // Requests flow through the whole rotation on a client that trusts both CAs.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let body = std::fs::read(repo().join("fixtures/admission/deployment-secure.json")).unwrap();
    let background = {
        let (stop, sent, failed, url, body) = (
            stop.clone(),
            sent.clone(),
            failed.clone(),
            url.clone(),
            body.clone(),
        );
        let client = trusting(&[&ca1, &ca2]);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let r = client.post(&url).body(body.clone()).send().await;
                sent.fetch_add(1, Ordering::Relaxed);
                if !r.map(|r| r.status().is_success()).unwrap_or(false) {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // Rotate to a pair from another CA: new connections get it.
    let (c, k) = leaf(
        &issuer2,
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        (-1, 40),
    );
    replace(&key_path, &k);
    replace(&cert_path, &c);
    let only_new = trusting(&[&ca2]);
    let mut rotated = false;
    for _ in 0..200 {
        if only_new.post(&url).body(body.clone()).send().await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(rotated, "the new certificate is served to new connections");
    assert!(
        trusting(&[&ca1])
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .is_err(),
        "the old one is gone"
    );
    assert!(not_after_metric(metrics).await > first_expiry + 20.0 * 86_400.0);

    // A certificate that does not match its key is rejected; the current pair stays.
    let (other_cert, _) = leaf(
        &issuer1,
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        (-1, 5),
    );
    replace(&cert_path, &other_cert);
    tokio::time::sleep(Duration::from_millis(800)).await;
    replace(&cert_path, "not a certificate");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(only_new
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    assert!(trusting(&[&ca1])
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .is_err());

    stop.store(true, Ordering::Relaxed);
    background.await.unwrap();
    println!(
        "requests during rotation: {} sent, {} failed",
        sent.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(sent.load(Ordering::Relaxed) > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    let _ = shutdown.send(true);
    let _ = task.await;
}

#[tokio::test]
async fn client_ca_rejects_callers_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, server_issuer) = ca("server ca");
    let (client_ca, client_issuer) = ca("apiserver client ca");
    let (c, k) = leaf(
        &server_issuer,
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        (-1, 10),
    );
    let (cert_path, key_path, client_ca_path) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("client-ca.crt"),
    );
    std::fs::write(&cert_path, c).unwrap();
    std::fs::write(&key_path, k).unwrap();
    std::fs::write(&client_ca_path, client_ca.pem()).unwrap();
    let (server, shutdown) = start(&cert_path, &key_path, Some(client_ca_path)).await;
    let addr = server.local_addr().unwrap();
    let task = tokio::spawn(server.run());
    let url = format!("https://localhost:{}/healthz", addr.port());

    assert!(
        trusting(&[&server_ca]).get(&url).send().await.is_err(),
        "no client certificate: refused"
    );

    let (cc, ck) = leaf(
        &client_issuer,
        &["kube-apiserver"],
        ExtendedKeyUsagePurpose::ClientAuth,
        (-1, 10),
    );
    let identity = reqwest::Identity::from_pem(format!("{cc}{ck}").as_bytes()).unwrap();
    let with_cert = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem().as_bytes()).unwrap())
        .identity(identity)
        .build()
        .unwrap();
    assert_eq!(
        with_cert.get(&url).send().await.unwrap().status().as_u16(),
        200
    );

    // A certificate from another CA is refused too.
    let (_, stranger_issuer) = ca("stranger");
    let (sc, sk) = leaf(
        &stranger_issuer,
        &["mallory"],
        ExtendedKeyUsagePurpose::ClientAuth,
        (-1, 10),
    );
    let stranger = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(server_ca.pem().as_bytes()).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{sc}{sk}").as_bytes()).unwrap())
        .build()
        .unwrap();
    assert!(stranger.get(&url).send().await.is_err());
    let _ = shutdown.send(true);
    let _ = task.await;
}

#[tokio::test]
async fn an_expired_certificate_makes_the_server_unready() {
    let dir = tempfile::tempdir().unwrap();
    let (_, issuer) = ca("ca");
    let (c, k) = leaf(
        &issuer,
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        (-10, -1),
    );
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, c).unwrap();
    std::fs::write(&key_path, k).unwrap();
    let (server, shutdown) = start(&cert_path, &key_path, None).await;
    let metrics = server.metrics_addr().unwrap();
    let task = tokio::spawn(server.run());
    let r = reqwest::get(format!("http://{metrics}/readyz?verbose"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("[-]certificate expired"), "{text}");
    assert!(
        not_after_metric(metrics).await < time::OffsetDateTime::now_utc().unix_timestamp() as f64
    );
    let _ = shutdown.send(true);
    let _ = task.await;
}

/// `name{labels} value` from a /metrics text (0 when absent).
async fn metric(addr: std::net::SocketAddr, name_and_labels: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name_and_labels} ")))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Waits (bounded) until the rejection counter for `reason` exceeds `before`.
async fn wait_rejected(metrics: std::net::SocketAddr, reason: &str, before: f64) -> f64 {
    let name = format!("regate_certificate_reload_rejected_total{{reason=\"{reason}\"}}");
    for _ in 0..400 {
        let now = metric(metrics, &name).await;
        if now > before {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no certificate rejection with reason {reason} counted");
}

/// Hot reload refuses a certificate that clients would refuse: expired (every handshake would
/// fail) or not valid yet. The current pair keeps serving, readiness stays true, and each
/// refusal is counted by reason; a valid pair is then taken as usual.
#[tokio::test]
async fn reload_refuses_an_expired_or_not_yet_valid_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let (ca1, issuer1) = ca("ca one");
    let (ca2, issuer2) = ca("ca two");
    let (c, k) = leaf(
        &issuer1,
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        (-1, 10),
    );
    std::fs::write(&cert_path, c).unwrap();
    std::fs::write(&key_path, k).unwrap();
    let (server, shutdown) = start(&cert_path, &key_path, None).await;
    let (addr, metrics) = (server.local_addr().unwrap(), server.metrics_addr().unwrap());
    let task = tokio::spawn(server.run());
    let url = format!("https://localhost:{}/readyz", addr.port());
    let old = trusting(&[&ca1]);
    assert_eq!(old.get(&url).send().await.unwrap().status().as_u16(), 200);

    let cases = [("expired", (-10, -1)), ("not_yet_valid", (2, 30))];
    for (reason, days) in cases {
        let before = metric(
            metrics,
            &format!("regate_certificate_reload_rejected_total{{reason=\"{reason}\"}}"),
        )
        .await;
        let (c, k) = leaf(
            &issuer2,
            &["localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            days,
        );
        replace(&key_path, &k);
        replace(&cert_path, &c);
        wait_rejected(metrics, reason, before).await;
        // A new connection still gets the old pair, and both ports say ready.
        let fresh = trusting(&[&ca1]);
        assert_eq!(
            fresh.get(&url).send().await.unwrap().status().as_u16(),
            200,
            "{reason}: the old certificate keeps serving"
        );
        assert!(
            trusting(&[&ca2]).get(&url).send().await.is_err(),
            "{reason}: the refused certificate is not served"
        );
        let r = reqwest::get(format!("http://{metrics}/readyz?verbose"))
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{reason}");
        let text = r.text().await.unwrap();
        assert!(text.contains("[+]certificate"), "{text}");
    }

    // A valid pair from the second CA is taken.
    let (c, k) = leaf(
        &issuer2,
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        (-1, 30),
    );
    replace(&key_path, &k);
    replace(&cert_path, &c);
    let new = trusting(&[&ca2]);
    let mut rotated = false;
    for _ in 0..400 {
        if new.get(&url).send().await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        rotated,
        "a valid certificate is taken after the refused ones"
    );
    let _ = shutdown.send(true);
    let _ = task.await;
}

/// A serving certificate that is not valid yet (clients refuse it) makes the server unready,
/// with the reason in `?verbose`, as an expired one does.
#[tokio::test]
async fn a_not_yet_valid_certificate_makes_the_server_unready() {
    let dir = tempfile::tempdir().unwrap();
    let (_, issuer) = ca("ca");
    let (c, k) = leaf(
        &issuer,
        &["localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        (1, 10),
    );
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, c).unwrap();
    std::fs::write(&key_path, k).unwrap();
    let (server, shutdown) = start(&cert_path, &key_path, None).await;
    let metrics = server.metrics_addr().unwrap();
    let task = tokio::spawn(server.run());
    let r = reqwest::get(format!("http://{metrics}/readyz?verbose"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("[-]certificate not valid yet"), "{text}");
    let r = reqwest::get(format!("http://{metrics}/readyz"))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let _ = shutdown.send(true);
    let _ = task.await;
}

#[test]
fn missing_certificate_flag_is_a_startup_error_naming_the_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--tls-cert",
            "/nonexistent/tls.crt",
            "--tls-key",
            "/nonexistent/tls.key",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/tls.crt"), "{stderr}");
}

/// Issue 17 (11): the CA key is kept (0600) and reused, so a rotation keeps the caBundle; an
/// existing server pair is never overwritten without --force.
#[test]
fn certs_generate_keeps_the_ca_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let generate = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_regate"))
            .args(["certs", "generate", "--out"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap()
    };
    let first = generate(&[]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let ca = std::fs::read(dir.path().join("ca.crt")).unwrap();
    let cert = std::fs::read(dir.path().join("tls.crt")).unwrap();

    let again = generate(&[]);
    assert_eq!(again.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("tls.crt") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(dir.path().join("tls.crt")).unwrap(), cert);

    let forced = generate(&["--force"]);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let stdout = String::from_utf8_lossy(&forced.stdout);
    assert!(stdout.contains("caBundle is unchanged"), "{stdout}");
    assert_eq!(
        std::fs::read(dir.path().join("ca.crt")).unwrap(),
        ca,
        "same CA"
    );
    let new_cert = std::fs::read(dir.path().join("tls.crt")).unwrap();
    assert_ne!(new_cert, cert, "a new server certificate");
    // The new certificate chains to the kept CA.
    let (_, ca_pem) = x509_parser::pem::parse_x509_pem(&ca).unwrap();
    let ca_cert = ca_pem.parse_x509().unwrap();
    let (_, leaf_pem) = x509_parser::pem::parse_x509_pem(&new_cert).unwrap();
    let leaf = leaf_pem.parse_x509().unwrap();
    assert_eq!(leaf.issuer(), ca_cert.subject());
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    let ski = ca_cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        });
    assert!(aki.is_some() && aki == ski, "signed by the kept CA's key");
}
