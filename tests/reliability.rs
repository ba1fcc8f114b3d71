//! Reliability and security of the server as a whole: overload, slow clients, faults during load,
//! graceful shutdown, Secret values that never leak, TLS. Most tests run the real binary
//! (`regate serve`) as a subprocess on 127.0.0.1 with its logs captured; none asserts on a timing
//! figure, only on answers, log lines and process state. The 10-minute soak is `#[ignore]`d
//! (`scripts/soak.sh`); see docs/RELIABILITY.md.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod reliability_support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Posts a stuck ConfigMap review (uid `stuck-<i>`) for each `i` of `ids`, each in its own task.
fn spawn_stuck(
    client: &reqwest::Client,
    url: &str,
    ids: std::ops::Range<usize>,
) -> Vec<tokio::task::JoinHandle<(u16, reqwest::Version, Value)>> {
    ids.map(|i| {
        let (client, url) = (client.clone(), url.to_string());
        tokio::spawn(async move {
            post(
                &client,
                &url,
                configmap_review(&format!("stuck-{i}"), "prod"),
            )
            .await
        })
    })
    .collect()
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
    ext.extend_from_slice(&[
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ]);
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
    for (version, name) in [
        (&rustls::version::TLS13, "TLSv1_3"),
        (&rustls::version::TLS12, "TLSv1_2"),
    ] {
        let stream = tls_connect(server.addr, client_config(&ca, &[version], &[b"http/1.1"]))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let conn = stream.get_ref().1;
        assert_eq!(format!("{:?}", conn.protocol_version().unwrap()), name);
        let suite = format!("{:?}", conn.negotiated_cipher_suite().unwrap().suite());
        assert!(
            suite.contains("GCM") || suite.contains("CHACHA20_POLY1305"),
            "{name}: {suite}"
        );
    }
    // Hand-made ClientHellos: rustls cannot even build a TLS 1.1 one.
    let ecdhe_cbc = [0xc009u16, 0xc013, 0x002f, 0x0035];
    let ecdhe_gcm = [0xc02bu16, 0xc02f];
    for version in [0x0301u16, 0x0302] {
        let answer = raw_handshake(
            server.addr,
            &client_hello(version, &[&ecdhe_gcm[..], &ecdhe_cbc[..]].concat()),
        )
        .await;
        assert_eq!(
            answer.first(),
            Some(&TLS_ALERT),
            "TLS {version:#06x}: {answer:02x?}"
        );
        assert_eq!(answer.get(5), Some(&2), "fatal alert: {answer:02x?}");
        assert_eq!(
            answer.get(6),
            Some(&ALERT_PROTOCOL_VERSION),
            "TLS {version:#06x}: {answer:02x?}"
        );
    }
    let answer = raw_handshake(server.addr, &client_hello(0x0303, &ecdhe_cbc)).await;
    assert_eq!(
        answer.first(),
        Some(&TLS_ALERT),
        "TLS 1.2 with CBC suites only: {answer:02x?}"
    );
    assert_eq!(
        answer.get(6),
        Some(&ALERT_HANDSHAKE_FAILURE),
        "{answer:02x?}"
    );
    let answer = raw_handshake(server.addr, &client_hello(0x0303, &ecdhe_gcm)).await;
    assert_eq!(
        answer.first(),
        Some(&0x16),
        "TLS 1.2 with GCM suites gets a ServerHello: {answer:02x?}"
    );

    // openssl, where installed, as a second opinion (it refuses TLS 1.1 itself unless told
    // otherwise: SECLEVEL=0 lets it offer it).
    let addr = server.addr;
    let ca_path = server.ca.display().to_string();
    let tls11 = tokio::task::spawn_blocking(move || {
        openssl(addr, &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"])
    });
    if let Some(out) = tls11.await.unwrap() {
        // ("Protocol : TLSv1.1" in its session summary is what it tried, not what it got.)
        assert!(
            out.contains("Cipher is (NONE)"),
            "openssl negotiated TLS 1.1: {out}"
        );
        assert!(
            out.contains("alert protocol version") || out.contains("alert handshake failure"),
            "regate refused TLS 1.1 with an alert: {out}"
        );
    }
    let tls12 =
        tokio::task::spawn_blocking(move || openssl(addr, &["-tls1_2", "-CAfile", &ca_path]));
    if let Some(out) = tls12.await.unwrap() {
        assert!(
            out.contains("TLSv1.2"),
            "openssl speaks TLS 1.2 to regate: {out}"
        );
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
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer))
            .await
            .unwrap();
        assert!(
            !answer.starts_with(b"HTTP/"),
            "plain HTTP answered: {:?}",
            String::from_utf8_lossy(&answer)
        );
        let plain = reqwest::Client::new()
            .post(format!("http://127.0.0.1:{}/validate", server.addr.port()))
            .body(body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        assert!(
            plain.is_err(),
            "plain HTTP to the webhook port got {plain:?}"
        );
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
        async move {
            c.post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
        }
    };
    // No certificate.
    let r = send(client(None)).await;
    assert!(r.is_err(), "no client certificate: {r:?}");
    // A certificate from another CA (here: the server's own CA).
    let (cert, key) = regate.pki.client("intruder");
    let r = send(client(Some(
        reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap(),
    )))
    .await;
    assert!(r.is_err(), "client certificate from another CA: {r:?}");
    // A server certificate (wrong extended key usage) from the right CA.
    let other = Pki::new("other");
    let (cert, key) = other.server(1);
    let r = send(client(Some(
        reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap(),
    )))
    .await;
    assert!(r.is_err(), "certificate from an unknown CA: {r:?}");
    // Signed by the client CA: answered.
    let (cert, key) = client_ca.client("kube-apiserver");
    let r = send(client(Some(
        reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap(),
    )))
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    // And the raw handshake without a certificate fails at the TLS level.
    let config = client_config(
        &regate.pki.ca_pem,
        &[&rustls::version::TLS12],
        &[b"http/1.1"],
    );
    assert!(
        tls_connect(regate.addr, config).await.is_err(),
        "TLS 1.2 handshake without a client certificate"
    );
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

async fn slow_client(
    addr: std::net::SocketAddr,
    ca: String,
    kind: Slow,
    give_up: Duration,
) -> Fate {
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
                Slow::Headers => b"POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
                    .iter()
                    .copied()
                    .chain(std::iter::repeat_n(b'a', 100_000))
                    .collect(),
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
            let Ok((_send, conn)) = hyper::client::conn::http2::handshake::<
                _,
                _,
                http_body_util::Empty<axum::body::Bytes>,
            >(
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
/// connection limit they are closed at once or evict the oldest silent one; the rest are cut by the handshake, header, body or
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

    let kinds = [
        Slow::Handshake,
        Slow::Headers,
        Slow::IdleAfterHandshake,
        Slow::IdleHttp2,
        Slow::Body,
    ];
    let give_up = Duration::from_secs(30);
    let addr = server.addr;
    let mut attackers = Vec::new();
    for i in 0..60 {
        let kind = kinds[i % kinds.len()];
        let ca = ca.clone();
        attackers.push(tokio::spawn(async move {
            (kind, slow_client(addr, ca, kind, give_up).await)
        }));
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
    assert!(
        open.is_empty(),
        "connections the server never closed: {open:?}"
    );
    // Past the limit a new connection is refused or evicts the oldest one that has sent no
    // request: either way the server turned some away, and counted it.
    let turned_away = rejected(
        &server.metrics().await,
        "webhook",
        &["connection_limit", "evicted"],
    );
    assert!(
        turned_away > 0.0,
        "60 slow connections against a limit of 24: some must be refused or evicted ({refused} closed at once)"
    );
    // Afterwards a new client is answered.
    let (status, _, _) = post(&server.http2(), &server.url("/validate"), body.clone()).await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// Opens `n` connections to `addr`, each sending the start of an HTTP/1.1 request whose headers
/// never end. Connections the server closes at once are kept too (reading them gives EOF).
async fn half_sent_requests(addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut streams = Vec::new();
    for _ in 0..n {
        let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        let _ = tcp
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaa")
            .await;
        streams.push(tcp);
    }
    streams
}

/// Waits (at most `within` in all) until the server has closed every stream; how many it has.
async fn count_closed<S: tokio::io::AsyncRead + Unpin>(
    streams: &mut [S],
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    let mut closed = 0;
    for s in streams.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if closed_within(s, left.max(Duration::from_millis(1))).await {
            closed += 1;
        }
    }
    closed
}

/// Sum of `regate_connections_rejected_total` over `reasons` for `listener`.
fn rejected(metrics: &str, listener: &str, reasons: &[&str]) -> f64 {
    reasons
        .iter()
        .map(|r| {
            sample(
                metrics,
                &format!(
                    "regate_connections_rejected_total{{listener=\"{listener}\",reason=\"{r}\"}}"
                ),
            )
        })
        .sum()
}

/// WARN lines about rejected connections of `listener`.
fn rejection_lines(regate: &Regate, listener: &str) -> Vec<Value> {
    log_lines(&regate.logs())
        .into_iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("connections rejected"))
                && l["listener"] == listener
        })
        .collect()
}

/// With 256 file descriptors for the whole process, 600 half-sent requests on the metrics
/// port (one was enough to hold a descriptor for ever before) take only the metrics port's
/// share: the webhook port keeps accepting and answering (no "Too many open files"), fresh
/// scrapes are answered, every flooding connection is closed (cap, eviction, header or idle
/// timeout) and counted, and the log says so in a few rate-limited WARN lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_port_flood_cannot_take_the_webhooks_file_descriptors() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux prlimit is not installed");
        return;
    }
    let regate = Regate::start(BinaryOptions {
        nofile: Some(256),
        config: format!("{TEST_CONFIG}limits:\n  headerReadTimeoutMs: 4000\n"),
        ..BinaryOptions::default()
    });
    let flood = 600;
    let mut streams = half_sent_requests(regate.metrics, flood).await;
    assert_eq!(
        streams.len(),
        flood,
        "every flooding connection was accepted by the kernel"
    );

    // The webhook port: fresh connections (one client each) are answered, and so is /readyz.
    let body = fixture_bytes("pod-secure.json");
    for i in 0..20 {
        let (status, _, r) = post(&regate.http1(), &regate.url("/validate"), body.clone()).await;
        assert_eq!(status, 200, "webhook request {i} during the flood: {r}");
    }
    let ready = regate
        .http2()
        .get(regate.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    // A fresh scrape is answered too: it takes the slot of the oldest silent connection.
    let scrape = reqwest::Client::new()
        .get(format!("http://{}/readyz", regate.metrics))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(scrape.status().as_u16(), 200);

    let closed = count_closed(&mut streams, Duration::from_secs(60)).await;
    assert_eq!(
        closed, flood,
        "flooding connections left open by the server"
    );
    let metrics = regate.metrics_text().await;
    let counted = rejected(
        &metrics,
        "metrics",
        &[
            "connection_limit",
            "evicted",
            "header_timeout",
            "idle_timeout",
        ],
    );
    let logs = regate.logs();
    assert!(
        !logs.contains("Too many open files") && !logs.contains("accept failed"),
        "the process ran out of file descriptors: {logs}"
    );
    let lines = rejection_lines(&regate, "metrics");
    eprintln!(
        "metrics flood: {flood} half-sent requests under 256 fds, 20/20 webhook answers, {counted} counted, {} WARN lines: {:?}",
        lines.len(),
        lines.iter().map(|l| (l["reason"].clone(), l["count"].clone())).collect::<Vec<_>>()
    );
    assert_eq!(
        counted, flood as f64,
        "each flooding connection counted once:\n{metrics}"
    );
    assert!(
        !lines.is_empty(),
        "no WARN line for the rejected connections"
    );
    assert!(lines.iter().all(|l| l["level"] == "WARN"));
    assert!(
        lines.len() * 10 < flood,
        "rejections are logged rate-limited, not one line each: {} lines",
        lines.len()
    );
}

/// An idle-TLS flood (connections that finish the handshake and send nothing) many times the
/// connection limit: fresh clients are still answered (each takes the slot of the oldest
/// silent connection), every rejection is counted by reason, and the log has a few WARN
/// lines, each with the count since the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tls_flood_is_counted_logged_and_locks_no_one_out() {
    let regate = Regate::start(BinaryOptions {
        config: format!(
            "{TEST_CONFIG}limits:\n  maxConnections: 40\n  headerReadTimeoutMs: 4000\n"
        ),
        ..BinaryOptions::default()
    });
    let ca = std::fs::read_to_string(regate.ca_path()).unwrap();
    let flood = 100;
    let mut idle = Vec::new();
    for _ in 0..flood {
        let config = client_config(&ca, &[&rustls::version::TLS13], &[b"http/1.1"]);
        if let Ok(tls) = tls_connect(regate.addr, config).await {
            idle.push(tls);
        }
    }
    let mut answered = 0;
    for _ in 0..20 {
        let r = regate.http1().get(regate.url("/readyz")).send().await;
        if r.is_ok_and(|r| r.status().as_u16() == 200) {
            answered += 1;
        }
    }
    let closed = count_closed(&mut idle, Duration::from_secs(60)).await;
    let metrics = regate.metrics_text().await;
    let evicted = rejected(&metrics, "webhook", &["evicted"]);
    let lines = rejection_lines(&regate, "webhook");
    eprintln!(
        "idle TLS flood: {flood} connections against a limit of 40; {answered}/20 fresh probes answered; {evicted} evicted; {} WARN lines: {:?}",
        lines.len(),
        lines.iter().map(|l| (l["reason"].clone(), l["count"].clone())).collect::<Vec<_>>()
    );
    assert_eq!(answered, 20, "fresh probes refused during the flood");
    assert_eq!(
        closed,
        idle.len(),
        "idle connections left open by the server"
    );
    // Each flooding connection past the limit evicted an older one, and the first probe one
    // more (a probe's connection closes with its client, freeing its slot for the next).
    assert!(
        evicted > (flood - 40) as f64,
        "every connection past the limit evicted an idle one:\n{metrics}"
    );
    let evictions: Vec<&Value> = lines.iter().filter(|l| l["reason"] == "evicted").collect();
    assert!(
        !evictions.is_empty(),
        "no WARN line for evictions: {}",
        regate.logs()
    );
    assert!(lines.iter().all(|l| l["level"] == "WARN"));
    let logged: f64 = evictions.iter().filter_map(|l| l["count"].as_f64()).sum();
    assert!(
        evictions.len() < 10 && logged <= evicted,
        "rate-limited lines carry the counts: {evictions:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Overload and stuck policies
// ------------------------------------------------------------------------------------------

async fn in_flight(regate: &Regate) -> f64 {
    sample(&regate.metrics_text().await, "regate_evaluations_in_flight")
}

async fn wait_in_flight(regate: &Regate, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while in_flight(regate).await < at_least {
        assert!(
            Instant::now() < deadline,
            "evaluations never reached {at_least} in flight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_cut_by_time_limit(status: u16, body: &Value) {
    assert_eq!(status, 200, "{body}");
    let r = &body["response"];
    assert_eq!(r["allowed"], false, "a policy cut off fails closed: {body}");
    let message = r["status"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("[stuck] policy evaluation failed: evaluation time limit exceeded"),
        "{message}"
    );
}

/// A policy slower than a judgement may hold the async worker that read the request (`serve`
/// stops it there after 2 ms, `server::in_place`) and faster than its time limit: 22,500 steps.
const UNHURRIED_POLICY: &str = r#"# METADATA
# title: Takes its time
# custom:
#   id: unhurried
#   severity: medium
#   kinds: [ConfigMap]
package regate.policies.unhurried

deny contains "slow, and finished" if {
  input.request.object.data.SLOW
  count([x | some x in numbers.range(1, 150); some y in numbers.range(1, 150); x == y]) == 150
}
"#;

/// A judgement stopped on the worker is made again off it, whole: the answer is the one its
/// policy gives, never a time-limit failure, for the request that overran and for those
/// after it (handed off at once for a while), and ordinary reviews are judged as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_slower_than_the_worker_allows_is_judged_in_full() {
    let regate = Regate::start(BinaryOptions {
        config: format!("{TEST_CONFIG}limits:\n  evaluationTimeoutMs: 18000\n"),
        extra_policies: vec![("unhurried.rego".into(), UNHURRIED_POLICY.into())],
        ..BinaryOptions::default()
    });
    let client = regate.http1();
    let url = regate.url("/validate");
    for i in 0..3 {
        let uid = format!("slow-{i}");
        let (status, _, body) = post(&client, &url, configmap_review(&uid, "prod")).await;
        assert_eq!(status, 200, "{body}");
        let r = &body["response"];
        assert_eq!(r["uid"], uid.as_str(), "{body}");
        assert_eq!(r["allowed"], false, "{body}");
        let message = r["status"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains("[unhurried] slow, and finished") && !message.contains("time limit"),
            "{message}"
        );
    }
    let (status, _, body) = post(&client, &url, fixture_bytes("pod-secure.json")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], true, "{body}");
    // At least the first was stopped on its worker and made again (the others may have been
    // handed off at once).
    let moved = sample(
        &regate.metrics_text().await,
        "regate_evaluations_moved_total",
    );
    assert!((1.0..=3.0).contains(&moved), "{moved}");
}

const HUGE_RANGE_POLICY: &str = r#"# METADATA
# title: Counts to a billion
# custom:
#   id: huge-range
#   severity: medium
#   kinds: [ConfigMap]
package regate.policies.huge_range

deny contains "counted" if {
  input.request.object.data.COUNT
  count(numbers.range(1, 1e9)) > 0
}
"#;

/// A policy asking for a range of a billion numbers (24 GB, which regorus reserves at once, so
/// the process used to abort) fails that review with a message naming the call, and the server
/// answers every review before and after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_too_large_to_build_fails_its_policy_not_the_server() {
    let regate = Regate::start(BinaryOptions {
        extra_policies: vec![("huge-range.rego".into(), HUGE_RANGE_POLICY.into())],
        ..BinaryOptions::default()
    });
    fails_closed_then_answers(
        &regate,
        "COUNT",
        "huge-range",
        "would make 1000000000 numbers",
    )
    .await;
}

/// Twice: a ConfigMap whose `data` has `key` fails closed, the message naming `policy`'s failure
/// and `reason`; a Pod review after it is allowed.
async fn fails_closed_then_answers(regate: &Regate, key: &str, policy: &str, reason: &str) {
    let client = regate.http1();
    let url = regate.url("/validate");
    let mut review: serde_json::Value =
        serde_json::from_slice(&configmap_review("careless", "prod")).unwrap();
    review["request"]["object"]["data"][key] = "yes".into();
    let review = serde_json::to_vec(&review).unwrap();
    for _ in 0..2 {
        let (status, _, body) = post(&client, &url, review.clone()).await;
        assert_eq!(status, 200, "{body}");
        let r = &body["response"];
        assert_eq!(r["uid"], "careless", "{body}");
        assert_eq!(r["allowed"], false, "{body}");
        let message = r["status"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(&format!("[{policy}] policy evaluation failed"))
                && message.contains(reason),
            "{message}"
        );
        let (status, _, body) = post(&client, &url, fixture_bytes("pod-secure.json")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"]["allowed"], true, "{body}");
    }
}

const MEMORY_HOG_POLICY: &str = r#"# METADATA
# title: Pairs every number with every other
# custom:
#   id: memory-hog
#   severity: medium
#   kinds: [ConfigMap]
package regate.policies.memory_hog

deny contains "paired" if {
  input.request.object.data.PAIRS
  count([[x, y] | some x in numbers.range(1, 1000000); some y in numbers.range(1, 1000000)]) > 0
}
"#;

/// A policy that builds memory step by step (each range is within `numbers.range`'s bound; the
/// pairs are not: 1.2 GB in the 2 s the time limit allows, past the chart's 512 MiB) is stopped
/// by the memory limits on either backend: the review fails closed naming the limit, the server
/// stays up, answers the next review, and its peak resident memory stays bounded.
/// The interpreter's case has a time limit long enough that memory is what stops it.
#[rstest::rstest]
#[case::bytecode_budget_per_evaluation(&[], "", 400)]
#[case::interpreter_process_ceiling(
    &[("REGATE_EVAL_STRATEGY", "interpreter"), ("REGATE_MEMORY_CEILING_MIB", "128")],
    "limits:\n  evaluationTimeoutMs: 30000\n",
    512
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_policy_builds_step_by_step_is_bounded(
    #[case] env: &[(&str, &str)],
    #[case] limits: &str,
    #[case] peak_mib: u64,
) {
    let regate = Regate::start(BinaryOptions {
        config: format!("{TEST_CONFIG}{limits}"),
        extra_policies: vec![("memory-hog.rego".into(), MEMORY_HOG_POLICY.into())],
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..BinaryOptions::default()
    });
    fails_closed_then_answers(
        &regate,
        "PAIRS",
        "memory-hog",
        "evaluation memory limit exceeded",
    )
    .await;
    let (_, peak_kib) = regate.rss_kib();
    assert!(
        peak_kib > 0 && peak_kib < peak_mib * 1024,
        "peak resident memory {peak_kib} KiB, bound {peak_mib} MiB"
    );
}

/// The evaluation memory ceiling leaves out what request bodies hold under the body budgets: a
/// flood of large unfinished bodies that alone holds more than the ceiling set does not fail the
/// reviews judged meanwhile (with a fixed ceiling every one of them failed closed as
/// `memory_limit`), and the ceiling in force is the one set again once the bodies are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_held_do_not_fail_evaluations_for_memory() {
    const MIB: f64 = 1024.0 * 1024.0;
    let ceiling_mib = 16.0;
    let regate = Regate::start(BinaryOptions {
        config: format!("{TEST_CONFIG}limits:\n  bodyReadTimeoutMs: 30000\n"),
        env: vec![("REGATE_MEMORY_CEILING_MIB".into(), "16".into())],
        ..BinaryOptions::default()
    });
    let metric = |text: &str, name: &str| sample(text, name);
    let idle = regate.metrics_text().await;
    assert_eq!(
        metric(&idle, "regate_memory_ceiling_bytes"),
        ceiling_mib * MIB,
        "{idle}"
    );

    // Three connections, each with a body of 7 MiB declared and 6 MiB sent, then held.
    let declared: usize = 7 << 20;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let config = client_config(
            &regate.pki.ca_pem,
            &[&rustls::version::TLS13],
            &[b"http/1.1"],
        );
        let mut tls = tls_connect(regate.addr, config).await.unwrap();
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(&vec![b' '; 6 << 20]).await.unwrap();
        tls.flush().await.unwrap();
        bodies.push(tls);
    }
    let mut text = String::new();
    for _ in 0..400 {
        text = regate.metrics_text().await;
        if metric(&text, "regate_memory_held_bytes") > ceiling_mib * MIB {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        metric(&text, "regate_memory_held_bytes") > ceiling_mib * MIB,
        "the bodies alone hold more than the ceiling set: {text}"
    );
    assert_eq!(
        metric(&text, "regate_memory_ceiling_bytes"),
        ceiling_mib * MIB + metric(&text, "regate_memory_budget_bytes{budget=\"buffered\"}"),
        "{text}"
    );

    // Meanwhile reviews are judged as usual, none failing for memory.
    let client = regate.http1();
    for _ in 0..5 {
        let (status, _, body) = post(
            &client,
            &regate.url("/validate"),
            fixture_bytes("pod-secure.json"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"]["allowed"], true, "{body}");
    }
    let (status, _, body) = post(
        &client,
        &regate.url("/validate"),
        fixture_bytes("pod-privileged.json"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"]["allowed"], false, "{body}");
    assert!(
        !body.to_string().contains("memory limit"),
        "denied by its policies, not for memory: {body}"
    );
    let text = regate.metrics_text().await;
    assert!(
        text.lines()
            .filter(|l| l.starts_with("regate_policy_errors_total") && l.contains("memory_limit"))
            .all(|l| l.ends_with(" 0")),
        "{text}"
    );

    // The bodies go; the ceiling in force is the one set again.
    drop(bodies);
    let mut ceiling = 0.0;
    for _ in 0..400 {
        ceiling = metric(&regate.metrics_text().await, "regate_memory_ceiling_bytes");
        if ceiling == ceiling_mib * MIB {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(ceiling, ceiling_mib * MIB);
}

/// A policy that never finishes is cut off by the evaluation time limit (failing closed) and
/// never blocks requests for other objects; past `maxInFlight`, requests wait `queueTimeoutMs`
/// and are answered with a clear 503 (an AdmissionReview naming the limits, Retry-After), not
/// queued without bound: memory stays bounded and comes back after each wave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_cleanly_and_a_stuck_policy_blocks_nothing() {
    let regate = Regate::start(BinaryOptions {
        config: format!(
            "{TEST_CONFIG}limits:\n  maxInFlight: 4\n  queueTimeoutMs: 500\n  evaluationTimeoutMs: 18000\n"
        ),
        extra_policies: vec![("stuck.rego".into(), STUCK_POLICY.into())],
        ..BinaryOptions::default()
    });
    let client = regate.http1();
    let url = regate.url("/validate");
    let pod = fixture_bytes("pod-secure.json");

    // Two stuck requests take two of the four slots.
    let stuck = spawn_stuck(&client, &url, 0..2);
    wait_in_flight(&regate, 2.0).await;
    // Requests for other objects are judged meanwhile, on the free slots.
    for _ in 0..10 {
        let (status, _, body) = post(&client, &url, pod.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["response"]["allowed"], true);
    }
    assert!(
        stuck.iter().all(|t| !t.is_finished()),
        "the stuck evaluations were still running while the others were answered"
    );

    // Two more stuck requests fill every slot; a wave of requests past the limit is refused.
    let more = spawn_stuck(&client, &url, 2..4);
    wait_in_flight(&regate, 4.0).await;
    let (rss_before, _) = regate.rss_kib();
    // 256 KiB per body, 200 at once: a bounded 50 MiB of bodies waiting.
    let mut padded: Value = serde_json::from_slice(&pod).unwrap();
    padded["request"]["object"]["metadata"]["annotations"] = json!({"pad": "x".repeat(256 * 1024)});
    let padded = serde_json::to_vec(&padded).unwrap();
    let wave: Vec<_> = (0..200)
        .map(|i| {
            let client = if i % 2 == 0 {
                regate.http1()
            } else {
                client.clone()
            };
            let (url, body) = (url.clone(), padded.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                let status = r.status().as_u16();
                let body: Value = r.json().await.unwrap();
                (status, retry_after, body, started.elapsed())
            })
        })
        .collect();
    let mut refused = 0;
    for t in wave {
        let (status, retry_after, body, waited) = t.await.unwrap();
        assert_eq!(
            status, 503,
            "every slot is taken by a stuck evaluation: {body}"
        );
        refused += 1;
        assert_eq!(retry_after.as_deref(), Some("1"));
        assert_eq!(body["kind"], "AdmissionReview");
        let message = body["response"]["status"]["message"].as_str().unwrap();
        assert!(
            message.contains("regate is overloaded: 4 evaluations in flight"),
            "{message}"
        );
        assert!(message.contains("500 ms"), "{message}");
        assert_eq!(body["response"]["status"]["code"], 503);
        assert!(
            waited >= Duration::from_millis(500),
            "answered before the queue timeout: {waited:?}"
        );
    }
    let (rss_after, peak) = regate.rss_kib();
    eprintln!("overload: {refused} refused with 503; RSS {rss_before} KiB before the wave, {rss_after} KiB after, peak {peak} KiB");
    // The 200 waiting bodies (50 MiB) and their parsing are the bound; nothing grows past it.
    assert!(
        peak < rss_before + 1024 * 1024,
        "peak RSS {peak} KiB from {rss_before} KiB"
    );
    // Every stuck request is cut off by the time limit and fails closed.
    for t in stuck.into_iter().chain(more) {
        let (status, _, body) = t.await.unwrap();
        assert_cut_by_time_limit(status, &body);
    }
    let metrics = regate.metrics_text().await;
    assert_eq!(
        sample(
            &metrics,
            "regate_overload_rejections_total{endpoint=\"validate\"}"
        ),
        refused as f64
    );
    assert_eq!(
        sample(
            &metrics,
            "regate_policy_errors_total{policy=\"stuck\",reason=\"time_limit\"}"
        ),
        4.0
    );
    assert_eq!(in_flight(&regate).await, 0.0);
    let logs = regate.logs();
    assert!(logs.contains("overloaded: no evaluation slot within the queue timeout"));
    // And the server answers normally again.
    let (status, _, body) = post(&regate.http2(), &url, pod.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(body["response"]["allowed"], true);
}

// ------------------------------------------------------------------------------------------
// Faults during load
// ------------------------------------------------------------------------------------------

struct Load {
    stats: Arc<LoadStats>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(regate: &Regate, workers: usize) -> Load {
        let cases = Arc::new(mix());
        let stats = Arc::new(LoadStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let base = format!("https://localhost:{}", regate.addr.port());
        let tasks = (0..workers)
            .map(|w| {
                let ca = regate.ca_path();
                let factory: Arc<dyn Fn() -> reqwest::Client + Send + Sync> =
                    Arc::new(move || client(&ca, w % 2 == 1));
                tokio::spawn(worker(
                    factory,
                    base.clone(),
                    cases.clone(),
                    w * 11,
                    stats.clone(),
                    stop.clone(),
                    25,
                ))
            })
            .collect();
        Load { stats, stop, tasks }
    }

    fn answered(&self) -> u64 {
        self.stats.ok.load(Ordering::Relaxed)
    }

    /// Lets at least `n` more requests be answered.
    async fn run_for(&self, n: u64) {
        let target = self.answered() + n;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.answered() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Arc<LoadStats> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.stats
    }
}

/// Waits for `needle` to appear once more in the log; returns the new log lines holding it.
fn expect_log(regate: &Regate, needle: &str, before: usize) -> Vec<Value> {
    assert!(
        regate.wait_log(needle, before + 1, Duration::from_secs(30)),
        "no log line {needle:?}; log:\n{}",
        regate.logs()
    );
    log_lines(&regate.logs())
        .into_iter()
        .filter(|l| l.to_string().contains(needle))
        .skip(before)
        .collect()
}

fn count_log(regate: &Regate, needle: &str) -> usize {
    regate.logs().matches(needle).count()
}

const RELOAD_FAILED: &str = "policy reload failed; keeping the last good policy set";
const RELOADED: &str = "policies reloaded";
const CERT_REJECTED: &str = "new certificate rejected; keeping the current one";
const CERT_RELOADED: &str = "serving certificate reloaded";

/// Policy files replaced with garbage, a library deleted, a file unreadable (a dangling link: as
/// root, permissions are not enforced; see `unreadable_files_as_an_unprivileged_user`), the
/// config broken, the certificate swapped for garbage and for a pair that does not match, each
/// while requests flow: the last good state is kept, every answer is right, each fault logs a
/// clear line, and the fixed file is picked up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_during_load_keep_the_last_good_state() {
    let regate = Regate::start(BinaryOptions::default());
    let load = Load::start(&regate, 4);
    load.run_for(100).await;
    let root = regate.root().to_path_buf();
    let policy = root.join("policies/pod-run-as-non-root.rego");
    let library = root.join("policies/lib/workload.rego");
    let config = root.join("config/regate.yaml");
    let policy_text = std::fs::read(&policy).unwrap();
    let library_text = std::fs::read(&library).unwrap();
    let config_text = std::fs::read(&config).unwrap();

    type Fault = (&'static str, Box<dyn Fn()>, Box<dyn Fn()>, &'static str);
    let mut faults: Vec<Fault> = Vec::new();
    {
        let (p, t) = (policy.clone(), policy_text.clone());
        faults.push((
            "policy file replaced with garbage",
            Box::new({
                let p = p.clone();
                move || write_atomic(&p, b"package regate.policies.pod_run_as_non_root\n\ndeny contains msg if {{{ garbage")
            }),
            Box::new(move || write_atomic(&p, &t)),
            "pod-run-as-non-root.rego:",
        ));
    }
    {
        let (p, t) = (library.clone(), library_text.clone());
        faults.push((
            "library file deleted",
            Box::new({
                let p = p.clone();
                move || std::fs::remove_file(&p).unwrap()
            }),
            Box::new(move || write_atomic(&p, &t)),
            "workload",
        ));
    }
    {
        let (p, t) = (policy.clone(), policy_text.clone());
        faults.push((
            "policy file unreadable (a dangling symbolic link)",
            Box::new({
                let p = p.clone();
                move || {
                    // Renamed over the file: there is no moment without it.
                    let link = p.with_extension("link");
                    std::os::unix::fs::symlink("/nonexistent/pod-run-as-non-root.rego", &link)
                        .unwrap();
                    std::fs::rename(&link, &p).unwrap();
                }
            }),
            Box::new(move || write_atomic(&p, &t)),
            "pod-run-as-non-root.rego",
        ));
    }
    {
        let (p, t) = (config.clone(), config_text.clone());
        faults.push((
            "config file broken",
            Box::new({
                let p = p.clone();
                move || write_atomic(&p, b"environments:\n  default: production\nlimits: [\n")
            }),
            Box::new(move || write_atomic(&p, &t)),
            "regate.yaml:",
        ));
    }
    for (what, break_it, fix_it, names) in &faults {
        let failed_before = count_log(&regate, RELOAD_FAILED);
        let reloaded_before = count_log(&regate, RELOADED);
        break_it();
        let lines = expect_log(&regate, RELOAD_FAILED, failed_before);
        let line = lines[0].to_string();
        assert!(
            line.contains(names),
            "{what}: the log line names the problem: {line}"
        );
        eprintln!("{what}: {}", lines[0]["error"]);
        load.run_for(150).await;
        fix_it();
        expect_log(&regate, RELOADED, reloaded_before);
        load.run_for(50).await;
    }
    let readyz = reqwest::get(format!("http://{}/readyz?verbose", regate.metrics))
        .await
        .unwrap();
    assert_eq!(readyz.status().as_u16(), 200);

    // The serving certificate replaced with garbage, then with a pair whose key does not match:
    // both rejected, new connections still served with the current certificate; then a good
    // pair is taken.
    let cert = root.join("tls/tls.crt");
    let key = root.join("tls/tls.key");
    let rejected_before = count_log(&regate, CERT_REJECTED);
    write_atomic(
        &cert,
        b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    let lines = expect_log(&regate, CERT_REJECTED, rejected_before);
    eprintln!("certificate garbage: {}", lines[0]["error"]);
    assert_eq!(lines[0]["level"], "WARN", "{}", lines[0]);
    load.run_for(100).await;
    let (other_cert, _) = regate.pki.server(5);
    write_atomic(&cert, other_cert.as_bytes());
    let lines = expect_log(&regate, CERT_REJECTED, rejected_before + 1);
    assert!(
        lines[0].to_string().contains("does not match"),
        "{}",
        lines[0]
    );
    eprintln!("certificate and key mismatched: {}", lines[0]["error"]);
    load.run_for(100).await;
    // An expired pair (the kubelet swapping in a Secret that was not renewed) is refused too:
    // served, it would fail every handshake. Readiness stays true on both ports.
    let (expired_cert, expired_key) = regate.pki.server(-1);
    write_atomic(&key, expired_key.as_bytes());
    write_atomic(&cert, expired_cert.as_bytes());
    assert!(
        regate.wait_log("\"reason\":\"expired\"", 1, Duration::from_secs(30)),
        "no rejection of the expired certificate: {}",
        regate.logs()
    );
    let line = log_lines(&regate.logs())
        .into_iter()
        .find(|l| l["reason"] == "expired")
        .unwrap();
    assert_eq!(line["message"], CERT_REJECTED, "{line}");
    assert_eq!(line["level"], "WARN", "{line}");
    eprintln!("certificate expired: {}", line["error"]);
    load.run_for(100).await;
    let metrics = regate.metrics_text().await;
    assert!(
        sample(
            &metrics,
            r#"regate_certificate_reload_rejected_total{reason="expired"}"#
        ) >= 1.0,
        "{metrics}"
    );
    for ready in [
        regate
            .http1()
            .get(regate.url("/readyz"))
            .send()
            .await
            .unwrap(),
        reqwest::get(format!("http://{}/readyz", regate.metrics))
            .await
            .unwrap(),
    ] {
        assert_eq!(ready.status().as_u16(), 200);
    }
    for http2 in [false, true] {
        let (status, _, _) = post(
            &client(&regate.ca_path(), http2),
            &regate.url("/validate"),
            fixture_bytes("pod-secure.json"),
        )
        .await;
        assert_eq!(status, 200, "a new connection after the bad certificate");
    }
    let reloaded_before = count_log(&regate, CERT_RELOADED);
    let (c, k) = regate.pki.server(9);
    write_atomic(&key, k.as_bytes());
    write_atomic(&cert, c.as_bytes());
    expect_log(&regate, CERT_RELOADED, reloaded_before);
    load.run_for(100).await;

    let stats = load.stop().await;
    eprintln!("faults during load: {}", stats.summary());
    assert_eq!(
        stats.failed.load(Ordering::Relaxed),
        0,
        "{}",
        stats.summary()
    );
    assert_eq!(
        stats.wrong.load(Ordering::Relaxed),
        0,
        "{}",
        stats.summary()
    );
    assert!(regate.logs().contains("regate serving"));
}

/// Run as an unprivileged user, a policy file or the config made unreadable (chmod 000) is a
/// failed reload: the last good set is kept and the error names the file and the permission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_files_as_an_unprivileged_user() {
    use std::os::unix::fs::PermissionsExt;
    if std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "true"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        eprintln!("SKIPPED: cannot run a process as nobody here (setpriv), so permissions cannot be tested");
        return;
    }
    let regate = Regate::start(BinaryOptions {
        as_nobody: true,
        ..BinaryOptions::default()
    });
    let load = Load::start(&regate, 2);
    load.run_for(50).await;
    for file in ["policies/pod-run-as-non-root.rego", "config/regate.yaml"] {
        let path = regate.root().join(file);
        let failed_before = count_log(&regate, RELOAD_FAILED);
        let reloaded_before = count_log(&regate, RELOADED);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        let lines = expect_log(&regate, RELOAD_FAILED, failed_before);
        let line = lines[0].to_string();
        assert!(line.contains("Permission denied"), "{file}: {line}");
        eprintln!("{file} chmod 000: {}", lines[0]["error"]);
        load.run_for(100).await;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        expect_log(&regate, RELOADED, reloaded_before);
    }
    let stats = load.stop().await;
    assert_eq!(
        stats.failed.load(Ordering::Relaxed) + stats.wrong.load(Ordering::Relaxed),
        0,
        "{}",
        stats.summary()
    );
}

/// A metrics port that is already taken: regate logs it and serves admission without /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_port_does_not_stop_admission() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let regate = Regate::start(BinaryOptions {
        metrics_port: Some(port),
        ..BinaryOptions::default()
    });
    let lines = log_lines(&regate.logs());
    let line = lines
        .iter()
        .find(|l| {
            l["message"] == "cannot bind the metrics port; serving admission without /metrics"
        })
        .unwrap_or_else(|| panic!("no log line for the taken port: {}", regate.logs()));
    assert_eq!(line["level"], "ERROR");
    assert!(line.to_string().contains(&port.to_string()), "{line}");
    let load = Load::start(&regate, 2);
    load.run_for(100).await;
    let stats = load.stop().await;
    assert_eq!(
        stats.failed.load(Ordering::Relaxed) + stats.wrong.load(Ordering::Relaxed),
        0,
        "{}",
        stats.summary()
    );
    drop(taken);
}

// ------------------------------------------------------------------------------------------
// Graceful shutdown
// ------------------------------------------------------------------------------------------

/// SIGTERM: the listener closes at once (new connections are refused), requests in flight on
/// HTTP/1.1 and HTTP/2 are finished and answered, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_requests_in_flight_and_exits_zero() {
    let mut regate = Regate::start(BinaryOptions {
        config: format!(
            "{TEST_CONFIG}limits:\n  evaluationTimeoutMs: 3000\n  drainTimeoutMs: 20000\n"
        ),
        extra_policies: vec![("stuck.rego".into(), STUCK_POLICY.into())],
        ..BinaryOptions::default()
    });
    let url = regate.url("/validate");
    let in_flight_requests: Vec<_> = (0..4)
        .map(|i| {
            let client = if i % 2 == 0 {
                regate.http1()
            } else {
                regate.http2()
            };
            let url = url.clone();
            tokio::spawn(async move {
                post(
                    &client,
                    &url,
                    configmap_review(&format!("drain-{i}"), "prod"),
                )
                .await
            })
        })
        .collect();
    wait_in_flight(&regate, 4.0).await;
    regate.signal("TERM");
    assert!(
        regate.wait_log(
            "shutting down: no new connections",
            1,
            Duration::from_secs(10)
        ),
        "{}",
        regate.logs()
    );
    // The listener is closed: a new connection is refused.
    let refused = tokio::net::TcpStream::connect(regate.addr).await;
    assert!(
        refused.is_err(),
        "a new connection after SIGTERM was accepted"
    );
    for t in in_flight_requests {
        let (status, _, body) = t.await.unwrap();
        assert_cut_by_time_limit(status, &body);
    }
    let code = tokio::task::spawn_blocking(move || {
        let code = regate.wait_exit(Duration::from_secs(30));
        (code, regate.logs())
    })
    .await
    .unwrap();
    assert_eq!(code.0, Some(0), "exit code after SIGTERM: {}", code.1);
    assert!(code.1.contains("SIGTERM received"));
    assert!(code.1.contains("all connections drained"), "{}", code.1);
}

// ------------------------------------------------------------------------------------------
// Secret values never leak
// ------------------------------------------------------------------------------------------

const MARK: &str = "CANARYq7Zx";

/// The strings that must never appear: the marker, and its base64 form at each of the three
/// alignments it can take inside a longer value.
fn needles() -> Vec<String> {
    use base64::Engine as _;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out = vec![MARK.to_string(), "CANARY".to_string()];
    for pad in 0..3 {
        let mut bytes = vec![b'a'; pad];
        bytes.extend_from_slice(MARK.as_bytes());
        let encoded = b64(&bytes);
        // Drop the characters that also depend on the neighbouring bytes.
        let skip = if pad == 0 { 0 } else { (pad * 8).div_ceil(6) };
        let keep = (MARK.len() * 8) / 6 - 1;
        out.push(encoded[skip..skip + keep].to_string());
    }
    out
}

fn secret_review(
    uid: &str,
    namespace: &str,
    data: Value,
    string_data: Value,
    operation: &str,
) -> Vec<u8> {
    let mut object = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": "app-secrets", "namespace": namespace}});
    if !data.is_null() {
        object["data"] = data;
    }
    if !string_data.is_null() {
        object["stringData"] = string_data;
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Secret"},
            "resource": {"group": "", "version": "v1", "resource": "secrets"},
            "name": "app-secrets", "namespace": namespace, "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object,
            "oldObject": if operation == "UPDATE" { object.clone() } else { Value::Null },
        }
    }))
    .unwrap()
}

/// Secrets whose values carry the canary: in `data` (valid base64 at every alignment, invalid
/// base64, binary), in `stringData` (short, long, placeholder-like, numbers), in keys that the
/// policies check and keys they don't, in every environment, as CREATE and UPDATE, and in bodies
/// that are refused. Through /validate and /mutate (HTTP/1.1 and HTTP/2), `regate eval` (text and
/// JSON) and `regate audit -f`, with every log at trace level: the canary is in no response,
/// warning, log line, metric or error, nor in base64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_never_leak() {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let regate = Regate::start(BinaryOptions {
        log_level: "trace".into(),
        ..BinaryOptions::default()
    });
    let values = [
        MARK.to_string(),
        format!("x{MARK}"),
        format!("xy{MARK}"),
        format!("{MARK}-changeme-placeholder"),
        format!("{}{MARK}", "k".repeat(80)),
        format!("  {MARK}\n"),
    ];
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut n = 0;
    for ns in ["prod", "staging", "dev"] {
        for op in ["CREATE", "UPDATE"] {
            for v in &values {
                n += 1;
                let data = json!({
                    "JWT_SECRET": b64(v),
                    "API_TOKEN": b64(v),
                    "SIGNING_KEY": format!("{v}!not*base64%"),
                    "BINARY_KEY": base64::engine::general_purpose::STANDARD.encode([&[0xffu8, 0xfe][..], v.as_bytes()].concat()),
                    "WRAPPED": format!("{}\n{}", &b64(v)[..8], &b64(v)[8..]),
                });
                let string_data =
                    json!({"SESSION_SECRET": v, "password": v, "NUMBER": 12345, "LIST": [v]});
                bodies.push(secret_review(
                    &format!("canary-{n}"),
                    ns,
                    data.clone(),
                    string_data.clone(),
                    op,
                ));
                bodies.push(secret_review(
                    &format!("canary-d{n}"),
                    ns,
                    data,
                    Value::Null,
                    op,
                ));
                bodies.push(secret_review(
                    &format!("canary-s{n}"),
                    ns,
                    Value::Null,
                    string_data,
                    op,
                ));
            }
        }
    }
    // Refused bodies that carry a canary: not JSON, a wrong apiVersion, a broken request.
    let good = String::from_utf8(secret_review(
        "canary-bad",
        "prod",
        json!({"K": b64(MARK)}),
        json!({"S": MARK}),
        "CREATE",
    ))
    .unwrap();
    bodies.push(
        good.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
            .into_bytes(),
    );
    bodies.push(good.replacen("}", "", 1).into_bytes());
    bodies.push(
        good.replace("\"operation\":\"CREATE\"", "\"operation\":5")
            .into_bytes(),
    );
    bodies.push(format!("{}\u{0}", &good[..good.len() / 2]).into_bytes());
    // The fixtures' own canaries.
    for name in [
        "secret-invalid-base64-prod.json",
        "secret-jwt-short-prod.json",
        "secret-placeholder-dev.json",
        "secret-jwt-long-prod.json",
    ] {
        bodies.push(fixture_bytes(name));
    }

    let mut answers = String::new();
    let mut statuses = std::collections::BTreeMap::new();
    for (i, body) in bodies.iter().enumerate() {
        let client = if i % 2 == 0 {
            regate.http1()
        } else {
            regate.http2()
        };
        for endpoint in ["/validate", "/mutate"] {
            let r = client
                .post(regate.url(endpoint))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            *statuses.entry(r.status().as_u16()).or_insert(0) += 1;
            for (k, v) in r.headers() {
                answers.push_str(&format!("{k}: {v:?}\n"));
            }
            answers.push_str(&r.text().await.unwrap());
            answers.push('\n');
        }
    }
    let metrics = regate.metrics_text().await;
    let logs = regate.logs();
    assert!(
        statuses.get(&200).copied().unwrap_or(0) > 100 && statuses.contains_key(&400),
        "{statuses:?}"
    );
    assert!(
        answers.contains("is not valid base64") && answers.contains("holds a placeholder value"),
        "the policies judged the Secrets"
    );

    // The same Secrets as manifests, through `regate eval` and `regate audit -f`.
    let manifests = regate.root().join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    let mut docs = Vec::new();
    for (i, v) in values.iter().enumerate() {
        docs.push(format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s{i}\n  namespace: prod\ntype: Opaque\ndata:\n  JWT_SECRET: {}\n  SIGNING_KEY: \"{}!bad%\"\nstringData:\n  SESSION_SECRET: {:?}\n  password: {:?}\n",
            b64(v), MARK, v, v
        ));
    }
    std::fs::write(manifests.join("secrets.yaml"), docs.join("---\n")).unwrap();
    std::fs::write(
        manifests.join("broken.yaml"),
        format!("apiVersion: v1\nkind: Secret\nstringData:\n  K: {MARK}\n  - [\n"),
    )
    .unwrap();
    let mut cli = String::new();
    let bin = env!("CARGO_BIN_EXE_regate");
    for args in [
        vec!["eval", "-f", "manifests/secrets.yaml", "-o", "text"],
        vec!["eval", "-f", "manifests/secrets.yaml", "-o", "json"],
        vec!["eval", "-f", "manifests/broken.yaml"],
        vec![
            "eval",
            "-f",
            "manifests/secrets.yaml",
            "--environment",
            "development",
            "-o",
            "json",
        ],
        vec!["audit", "-f", "manifests/secrets.yaml", "-o", "json"],
        vec!["audit", "-f", "manifests/secrets.yaml", "-o", "text"],
    ] {
        let out = std::process::Command::new(bin)
            .args(&args)
            .args([
                "--policies",
                "policies",
                "--config",
                "config/regate.yaml",
                "--log-level",
                "trace",
                "--log-format",
                "json",
            ])
            .current_dir(regate.root())
            .output()
            .unwrap();
        cli.push_str(&format!(
            "$ regate {}\n{}\n{}\n",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    assert!(
        cli.contains("is not valid base64"),
        "regate eval judged the Secrets:\n{cli}"
    );
    assert!(cli.contains("AuditReport"), "regate audit reported:\n{cli}");

    let sent: String = bodies
        .iter()
        .map(|b| String::from_utf8_lossy(b).to_string())
        .collect();
    for needle in needles() {
        assert!(
            sent.contains(&needle),
            "the test sends {needle:?} (else it would prove nothing)"
        );
        for (what, text) in [
            ("a response", &answers),
            ("the server log", &logs),
            ("/metrics", &metrics),
            ("regate eval/audit", &cli),
        ] {
            if let Some(i) = text.find(&needle) {
                let context: String =
                    text[i.saturating_sub(300)..(i + 100).min(text.len())].to_string();
                panic!("{needle:?} leaked into {what}: …{context}…");
            }
        }
    }
    eprintln!(
        "canary: {} bodies × 2 endpoints ({statuses:?}), {} log lines at trace level ({} bytes), {} bytes of CLI output: no canary",
        bodies.len(),
        logs.lines().count(),
        logs.len(),
        cli.len()
    );
}

// ------------------------------------------------------------------------------------------
// Soak
// ------------------------------------------------------------------------------------------

/// The soak in small (CI): 25 s of the mix with a policy reload every 5 s and a certificate
/// rotation every 10 s; every answer right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_smoke() {
    let plan = SoakPlan {
        duration: Duration::from_secs(25),
        reload_every: Duration::from_secs(5),
        rotate_every: Duration::from_secs(10),
        workers: 4,
        rss_every: Duration::from_secs(1),
        warm_up: Duration::from_secs(5),
    };
    let warm_up = plan.warm_up;
    let report = soak(plan).await;
    eprintln!("{}", report.summary(warm_up));
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert_eq!(report.wrong, 0, "{:?}", report.errors);
    assert!(report.requests_ok > 100);
    assert!(
        report.reloads_seen >= report.reloads_done as f64,
        "every policy rewrite was reloaded"
    );
    assert_eq!(
        report.rotations_seen, report.rotations_done,
        "every certificate rotation was taken"
    );
    assert!(report.log_errors.is_empty(), "{:?}", report.log_errors);
}

/// The full soak: `SOAK_SECONDS` (default 600) of the mix, a policy reload every 10 s, a
/// certificate rotation every minute, RSS sampled every 5 s and flat within 10% after a
/// one-minute warm-up. Run by `scripts/soak.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "10 minutes: scripts/soak.sh"]
async fn soak_full() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let workers: usize = std::env::var("SOAK_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let plan = SoakPlan {
        duration: Duration::from_secs(seconds),
        reload_every: Duration::from_secs(10),
        rotate_every: Duration::from_secs(60),
        workers,
        rss_every: Duration::from_secs(5),
        warm_up: Duration::from_secs(60.min(seconds / 5)),
    };
    let warm_up = plan.warm_up;
    let report = soak(plan).await;
    println!("{}", report.summary(warm_up));
    println!(
        "RSS samples (s, KiB): {}",
        report
            .rss
            .iter()
            .map(|(t, r)| format!("{t:.0}:{r}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (_, _, drift) = report.rss_drift(warm_up);
    assert_eq!(report.failed, 0, "{:?}", report.errors);
    assert_eq!(report.wrong, 0, "{:?}", report.errors);
    assert!(report.reloads_seen >= report.reloads_done as f64);
    assert_eq!(report.rotations_seen, report.rotations_done);
    assert!(
        drift.abs() <= 0.10,
        "RSS drifted {:+.1}% after warm-up",
        drift * 100.0
    );
    assert!(report.log_errors.is_empty(), "{:?}", report.log_errors);
}

#[test]
fn canary_needles_cover_every_alignment() {
    use base64::Engine as _;
    let needles = needles();
    for prefix in ["", "a", "ab", "abc", "abcd"] {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{MARK}-tail"));
        assert!(
            needles.iter().any(|n| encoded.contains(n.as_str())),
            "{prefix:?}: {encoded}"
        );
    }
}
