//! Reliability and security of the server as a whole: overload, slow clients, faults during load,
//! graceful shutdown, Secret values that never leak, TLS. Most tests run the real binary
//! (`regate serve`) as a subprocess on 127.0.0.1 with its logs captured; none asserts on a timing
//! figure, only on answers, log lines and process state. The 10-minute soak is `#[ignore]`d
//! (`scripts/soak.sh`); see docs/RELIABILITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod reliability_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reliability_support::*;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("fixtures/admission").join(name)).unwrap()
}

fn configmap_review(uid: &str, namespace: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": "c", "namespace": namespace, "operation": "CREATE", "userInfo": {"username": "alice"},
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": namespace}, "data": {"SLOW": "1"}},
            "oldObject": null
        }
    }))
    .unwrap()
}

/// A policy that never finishes by itself (10^10 iterations): only the evaluation time limit
/// stops it. It judges ConfigMaps whose data has the key SLOW.
const STUCK_POLICY: &str = r#"# METADATA
# title: Stuck
# custom:
#   id: stuck
#   severity: low
#   kinds: [ConfigMap]
package regate.policies.stuck

deny contains "never reached" if {
  input.request.object.data.SLOW
  count([x | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x == y]) < 0
}
"#;

// ------------------------------------------------------------------------------------------
// TLS
// ------------------------------------------------------------------------------------------

/// A ClientHello offering only `version` (no supported_versions extension) and `suites`.
fn client_hello(version: u16, suites: &[u16]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut ext = Vec::new();
    // supported_groups: secp256r1, x25519
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x1d]);
    // ec_point_formats: uncompressed
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms: ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256, rsa_pkcs1_sha256
    ext.extend_from_slice(&[0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// Sends a raw ClientHello; returns the first record the server answers with.
async fn raw_handshake(addr: std::net::SocketAddr, hello: &[u8]) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

const TLS_ALERT: u8 = 0x15;
const ALERT_PROTOCOL_VERSION: u8 = 70;
const ALERT_HANDSHAKE_FAILURE: u8 = 40;

/// Only TLS 1.2 and 1.3, with AEAD suites: TLS 1.0/1.1 and CBC-only offers are refused with a
/// fatal alert, plain HTTP gets no HTTP answer, and the metrics port serves no admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_versions_suites_and_no_plaintext() {
    let server = TestServer::start().await;
    let ca = std::fs::read_to_string(&server.ca).unwrap();
    for (version, name) in [(&rustls::version::TLS13, "TLSv1_3"), (&rustls::version::TLS12, "TLSv1_2")] {
        let stream = tls_connect(server.addr, client_config(&ca, &[version], &[b"http/1.1"]))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let conn = stream.get_ref().1;
        assert_eq!(format!("{:?}", conn.protocol_version().unwrap()), name);
        let suite = format!("{:?}", conn.negotiated_cipher_suite().unwrap().suite());
        assert!(suite.contains("GCM") || suite.contains("CHACHA20_POLY1305"), "{name}: {suite}");
    }
    // Hand-made ClientHellos: rustls cannot even build a TLS 1.1 one.
    let ecdhe_cbc = [0xc009u16, 0xc013, 0x002f, 0x0035];
    let ecdhe_gcm = [0xc02bu16, 0xc02f];
    for version in [0x0301u16, 0x0302] {
        let answer = raw_handshake(server.addr, &client_hello(version, &[&ecdhe_gcm[..], &ecdhe_cbc[..]].concat())).await;
        assert_eq!(answer.first(), Some(&TLS_ALERT), "TLS {version:#06x}: {answer:02x?}");
        assert_eq!(answer.get(5), Some(&2), "fatal alert: {answer:02x?}");
        assert_eq!(answer.get(6), Some(&ALERT_PROTOCOL_VERSION), "TLS {version:#06x}: {answer:02x?}");
    }
    let answer = raw_handshake(server.addr, &client_hello(0x0303, &ecdhe_cbc)).await;
    assert_eq!(answer.first(), Some(&TLS_ALERT), "TLS 1.2 with CBC suites only: {answer:02x?}");
    assert_eq!(answer.get(6), Some(&ALERT_HANDSHAKE_FAILURE), "{answer:02x?}");
    let answer = raw_handshake(server.addr, &client_hello(0x0303, &ecdhe_gcm)).await;
    assert_eq!(answer.first(), Some(&0x16), "TLS 1.2 with GCM suites gets a ServerHello: {answer:02x?}");

    // openssl, where installed, as a second opinion (it refuses TLS 1.1 itself unless told
    // otherwise: SECLEVEL=0 lets it offer it).
    let addr = server.addr;
    let ca_path = server.ca.display().to_string();
    let tls11 = tokio::task::spawn_blocking(move || openssl(addr, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]));
    if let Some(out) = tls11.await.unwrap() {
        // ("Protocol : TLSv1.1" in its session summary is what it tried, not what it got.)
        assert!(out.contains("Cipher is (NONE)"), "openssl negotiated TLS 1.1: {out}");
        assert!(
            out.contains("alert protocol version") || out.contains("alert handshake failure"),
            "regate refused TLS 1.1 with an alert: {out}"
        );
    }
    let tls12 = tokio::task::spawn_blocking(move || openssl(addr, &["-tls1_2", "-CAfile", &ca_path]));
    if let Some(out) = tls12.await.unwrap() {
        assert!(out.contains("TLSv1.2"), "openssl speaks TLS 1.2 to regate: {out}");
    }

    // Plain HTTP on the TLS port: no HTTP response, the connection is closed.
    {
        use tokio::io::AsyncReadExt;
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let body = fixture_bytes("pod-secure.json");
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let _ = tcp.write_all(&body).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await.unwrap();
        assert!(!answer.starts_with(b"HTTP/"), "plain HTTP answered: {:?}", String::from_utf8_lossy(&answer));
        let plain = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/validate", server.addr.port()))
            .body(body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        assert!(plain.is_err(), "plain HTTP to the webhook port got {plain:?}");
        // The metrics port is plain HTTP and serves no admission.
        let metrics = server.metrics_addr.unwrap();
        for path in ["/validate", "/mutate"] {
            let r = reqwest::Client::new()
                .post(format!("http://{metrics}{path}"))
                .body(body.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 404, "{path} on the metrics port");
        }
    }
    server.stop().await;
}

fn openssl(addr: std::net::SocketAddr, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .arg("-servername")
        .arg("localhost")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    Some(format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// `--client-ca`: a caller without a certificate, or with one from another CA, is refused at
/// the TLS handshake; a caller with a certificate signed by that CA is answered.
#[tokio::test]
async fn client_ca_rejects_callers_without_a_certificate_from_it() {
    let client_ca = Pki::new("apiserver client CA");
    let regate = Regate::start(BinaryOptions {
        client_ca: Some(client_ca.ca_pem.clone()),
        ..BinaryOptions::default()
    });
    let body = fixture_bytes("pod-secure.json");
    let ca = reqwest::Certificate::from_pem(regate.pki.ca_pem.as_bytes()).unwrap();
    let client = |identity: Option<reqwest::Identity>| {
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .timeout(Duration::from_secs(10));
        if let Some(id) = identity {
            b = b.identity(id);
        }
        b.build().unwrap()
    };
    let send = |c: reqwest::Client| {
        let url = regate.url("/validate");
        let body = body.clone();
        async move { c.post(url).header("content-type", "application/json").body(body).send().await }
    };
    // No certificate.
    let r = send(client(None)).await;
    assert!(r.is_err(), "no client certificate: {r:?}");
    // A certificate from another CA (here: the server's own CA).
    let (cert, key) = regate.pki.client("intruder");
    let r = send(client(Some(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap()))).await;
    assert!(r.is_err(), "client certificate from another CA: {r:?}");
    // A server certificate (wrong extended key usage) from the right CA.
    let other = Pki::new("other");
    let (cert, key) = other.server(1);
    let r = send(client(Some(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap()))).await;
    assert!(r.is_err(), "certificate from an unknown CA: {r:?}");
    // Signed by the client CA: answered.
    let (cert, key) = client_ca.client("kube-apiserver");
    let r = send(client(Some(reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap())))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    // And the raw handshake without a certificate fails at the TLS level.
    let config = client_config(&regate.pki.ca_pem, &[&rustls::version::TLS12], &[b"http/1.1"]);
    assert!(tls_connect(regate.addr, config).await.is_err(), "TLS 1.2 handshake without a client certificate");
}

// ------------------------------------------------------------------------------------------
// Slow clients
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Slow {
    /// A TLS handshake sent one byte at a time, never completed.
    Handshake,
    /// HTTP/1.1 request headers one byte at a time, never completed.
    Headers,
    /// A complete TLS handshake, then nothing.
    IdleAfterHandshake,
    /// An HTTP/2 connection (preface and SETTINGS), then no request.
    IdleHttp2,
    /// Headers with Content-Length, then the body one byte at a time.
    Body,
}

#[derive(Debug)]
enum Fate {
    /// Closed by the server at once: over the connection limit.
    Refused,
    /// Held, then closed by the server after this long.
    Cut(Duration),
    /// Still open when the test gave up.
    Open,
}

async fn slow_client(addr: std::net::SocketAddr, ca: String, kind: Slow, give_up: Duration) -> Fate {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let drip = Duration::from_millis(200);
    let finish = |started: Instant| {
        let held = started.elapsed();
        if held < Duration::from_millis(150) {
            Fate::Refused
        } else {
            Fate::Cut(held)
        }
    };
    match kind {
        Slow::Handshake => {
            let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
                return Fate::Refused;
            };
            let hello = client_hello(0x0303, &[0xc02b]);
            let mut buf = [0u8; 64];
            for b in hello.iter().cycle() {
                if tcp.write_all(&[*b]).await.is_err() {
                    return finish(started);
                }
                match tokio::time::timeout(drip, tcp.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return finish(started),
                    _ => {}
                }
                if started.elapsed() > give_up {
                    return Fate::Open;
                }
            }
            Fate::Open
        }
        Slow::Headers | Slow::IdleAfterHandshake | Slow::Body => {
            let config = client_config(&ca, &[&rustls::version::TLS13], &[b"http/1.1"]);
            let Ok(mut tls) = tls_connect(addr, config).await else {
                return Fate::Refused;
            };
            let text: Vec<u8> = match kind {
                Slow::Headers => b"POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".iter().copied().chain(std::iter::repeat_n(b'a', 100_000)).collect(),
                Slow::Body => {
                    let mut t = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n".to_vec();
                    t.extend(std::iter::repeat_n(b' ', 100_000));
                    t
                }
                _ => Vec::new(),
            };
            if text.is_empty() {
                // A TLS 1.3 server may close before or after the client's first read.
                if closed_within(&mut tls, give_up).await {
                    return finish(started);
                }
                return Fate::Open;
            }
            let mut buf = [0u8; 4096];
            let mut text = text;
            if kind == Slow::Body {
                // The headers at once: the body is what comes slowly.
                let head_len = text.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                let _ = tls.write_all(&text[..head_len]).await;
                text.drain(..head_len);
            }
            for b in text {
                if tls.write_all(&[b]).await.is_err() || tls.flush().await.is_err() {
                    return finish(started);
                }
                match tokio::time::timeout(drip, tls.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return finish(started),
                    // A 408 for a body too slow: the server answered, then closes or idles.
                    Ok(Ok(_)) => {
                        if closed_within(&mut tls, give_up).await {
                            return finish(started);
                        }
                        return Fate::Open;
                    }
                    Err(_) => {}
                }
                if started.elapsed() > give_up {
                    return Fate::Open;
                }
            }
            Fate::Open
        }
        Slow::IdleHttp2 => {
            let config = client_config(&ca, &[&rustls::version::TLS13], &[b"h2"]);
            let Ok(tls) = tls_connect(addr, config).await else {
                return Fate::Refused;
            };
            let Ok((_send, conn)) = hyper::client::conn::http2::handshake::<_, _, http_body_util::Empty<axum::body::Bytes>>(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(tls),
            )
            .await
            else {
                return finish(started);
            };
            match tokio::time::timeout(give_up, conn).await {
                Ok(_) => finish(started),
                Err(_) => Fate::Open,
            }
        }
    }
}

/// Slowloris: many connections, each holding the server with a handshake, headers or a body
/// sent a byte at a time, or idling after the handshake (HTTP/1.1 and HTTP/2). Past the
/// connection limit they are closed at once; the rest are cut by the handshake, header, body or
/// idle timeouts. A client whose connection was open before keeps being answered throughout,
/// and a new client is answered once the attackers are cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_and_cannot_exhaust_the_server() {
    let server = TestServer::start_with(Options {
        config: Some(format!(
            "{TEST_CONFIG}limits:\n  maxConnections: 24\n  headerReadTimeoutMs: 1000\n  bodyReadTimeoutMs: 2000\n"
        )),
        ..Options::default()
    })
    .await;
    let ca = std::fs::read_to_string(&server.ca).unwrap();
    let body = fixture_bytes("pod-secure.json");
    let steady = server.http1();
    let (status, _, _) = post(&steady, &server.url("/validate"), body.clone()).await;
    assert_eq!(status, 200);

    let kinds = [Slow::Handshake, Slow::Headers, Slow::IdleAfterHandshake, Slow::IdleHttp2, Slow::Body];
    let give_up = Duration::from_secs(30);
    let addr = server.addr;
    let mut attackers = Vec::new();
    for i in 0..60 {
        let kind = kinds[i % kinds.len()];
        let ca = ca.clone();
        attackers.push(tokio::spawn(async move { (kind, slow_client(addr, ca, kind, give_up).await) }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // During the attack, the kept-alive client is answered.
    let mut answered = 0;
    for _ in 0..10 {
        let (status, _, r) = post(&steady, &server.url("/validate"), body.clone()).await;
        assert_eq!(status, 200, "{r}");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut refused = 0;
    let mut cut = Vec::new();
    let mut open = Vec::new();
    for a in attackers {
        let (kind, fate) = a.await.unwrap();
        match fate {
            Fate::Refused => refused += 1,
            Fate::Cut(d) => cut.push((kind, d)),
            Fate::Open => open.push(kind),
        }
    }
    eprintln!("slowloris: {answered} answered during the attack; {refused} refused at once; cut: {cut:?}; open: {open:?}");
    assert!(open.is_empty(), "connections the server never closed: {open:?}");
    assert!(refused > 0, "60 slow connections against a limit of 24: some must be refused");
    // Afterwards a new client is answered.
    let (status, _, _) = post(&server.http2(), &server.url("/validate"), body.clone()).await;
    assert_eq!(status, 200);
    server.stop().await;
}
