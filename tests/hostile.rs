//! The wire format exactly as kube-apiserver documents it, and memory bounded under hostile load
//! (issue 15): `/mutate`'s patch as base64; a body declared larger than the limit refused (413)
//! before it is read, the answer reaching a client that waits for it (HTTP/1.1 and HTTP/2); the
//! process-wide and per-connection budgets of buffered request bytes; bodies too large to parse;
//! parsing counted in the evaluation time budget; answers capped. Real TLS on 127.0.0.1; no
//! assertion on a timing figure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod reliability_support;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use common::*;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use reliability_support::{client_config, sample, tls_connect, BinaryOptions, Regate};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(repo().join("fixtures/admission").join(name)).unwrap())
        .unwrap()
}

fn config(limits: &str) -> String {
    format!("{TEST_CONFIG}limits:\n{limits}")
}

async fn start(limits: &str) -> TestServer {
    TestServer::start_with(Options {
        config: Some(config(limits)),
        ..Options::default()
    })
    .await
}

fn ca_pem(server: &TestServer) -> String {
    std::fs::read_to_string(&server.ca).unwrap()
}

// ------------------------------------------------------------------------------------------
// The patch, as documented
// ------------------------------------------------------------------------------------------

/// `response.patch` is a JSON string, the base64 of a JSON Patch array, with `patchType:
/// JSONPatch` (kube-core 5 alone would send an array of numbers: kube-rs/kube#1781). Decoded
/// here by hand, exactly as the AdmissionReview API documents it, over HTTP/1.1 and HTTP/2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_sends_the_patch_as_base64_as_documented() {
    use base64::Engine as _;
    let server = TestServer::start().await;
    let body = serde_json::to_vec(&fixture("deployment-no-security-context.json")).unwrap();
    let object = fixture("deployment-no-security-context.json")["request"]["object"].clone();
    for client in [server.http1(), server.http2()] {
        let (status, _, answer) = post(&client, &server.url("/mutate"), body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = &answer["response"];
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch", "{answer}");
        let Value::String(b64) = &response["patch"] else {
            panic!("response.patch is not a JSON string: {}", response["patch"]);
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let patch: Value = serde_json::from_slice(&bytes).unwrap();
        let ops = patch.as_array().expect("a JSON Patch is an array");
        assert!(!ops.is_empty());
        for op in ops {
            assert!(op["op"].is_string() && op["path"].is_string(), "{op}");
        }
        let mut patched = object.clone();
        let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
        assert_ne!(patched, object);
    }
    // No patch: neither field.
    let body = std::fs::read(repo().join("fixtures/admission/pod-secure.json")).unwrap();
    let (_, _, answer) = post(&server.http1(), &server.url("/mutate"), body).await;
    let response = answer["response"].as_object().unwrap();
    assert!(!response.contains_key("patch") && !response.contains_key("patchType"));
    server.stop().await;
}

// ------------------------------------------------------------------------------------------
// 413 before the body is read
// ------------------------------------------------------------------------------------------

/// Reads one HTTP/1.1 response (headers and a `Content-Length` body) from a raw stream.
async fn read_http1_response<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                return (status, text[end + 4..end + 4 + length].to_string());
            }
        }
    }
}

/// A client that sends headers declaring a body over the limit, then waits for an answer
/// without sending the body (as a client using `Expect: 100-continue`, or one that reads early
/// answers, does): it gets 413 with an AdmissionReview at once, not 408 after the body timeout
/// (set here to 10 minutes, so that a late answer cannot pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_the_limit_is_refused_before_the_body_is_read() {
    let server = start("  bodyReadTimeoutMs: 600000\n").await;
    let huge = 1u64 << 30;
    for expect in ["", "Expect: 100-continue\r\n"] {
        let config = client_config(&ca_pem(&server), &[&rustls::version::TLS13], &[b"http/1.1"]);
        let mut tls = tls_connect(server.addr, config).await.unwrap();
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {huge}\r\n{expect}\r\n"
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        let (status, body) =
            tokio::time::timeout(Duration::from_secs(60), read_http1_response(&mut tls))
                .await
                .expect("an answer while the body is still unsent");
        assert_eq!(status, 413, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["allowed"], false);
        assert_eq!(answer["response"]["status"]["code"], 413);
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("larger than the limit of 8388608 bytes"),
            "{answer}"
        );
    }

    // HTTP/2: the same on one stream; the connection carries on for the others.
    let mut h2 = H2::connect(&server).await;
    let (parts, body) = h2
        .send(
            "/validate",
            Some(huge),
            StreamBody::new(futures_util::stream::pending::<
                Result<Frame<Bytes>, Infallible>,
            >())
            .boxed(),
        )
        .await;
    assert_eq!(parts.status, 413, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["response"]["status"]["code"], 413);
    let ok = std::fs::read(repo().join("fixtures/admission/pod-secure.json")).unwrap();
    let (parts, body) = h2.send_full("/validate", ok).await;
    assert_eq!(parts.status, 200, "{body}");
    server.stop().await;
}

// ------------------------------------------------------------------------------------------
// Budgets of buffered request bytes
// ------------------------------------------------------------------------------------------

type H2Body = BoxBody<Bytes, Infallible>;

/// An HTTP/2 connection (hyper's client over rustls, ALPN h2) to a test server.
struct H2 {
    send: hyper::client::conn::http2::SendRequest<H2Body>,
    authority: String,
}

impl H2 {
    async fn connect(server: &TestServer) -> H2 {
        Self::connect_to(server.addr, &ca_pem(server)).await
    }

    async fn connect_to(addr: std::net::SocketAddr, ca: &str) -> H2 {
        let config = client_config(ca, &[&rustls::version::TLS13], &[b"h2"]);
        let tls = tls_connect(addr, config).await.unwrap();
        let (send, conn) = hyper::client::conn::http2::handshake::<_, _, H2Body>(
            TokioExecutor::new(),
            TokioIo::new(tls),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        H2 {
            send,
            authority: format!("localhost:{}", addr.port()),
        }
    }

    /// Sends a request and waits for its answer: (head, body text).
    async fn send(
        &mut self,
        path: &str,
        content_length: Option<u64>,
        body: H2Body,
    ) -> (hyper::http::response::Parts, String) {
        let response = self.start(path, content_length, body).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts, String::from_utf8_lossy(&bytes).to_string())
    }

    async fn send_full(
        &mut self,
        path: &str,
        body: Vec<u8>,
    ) -> (hyper::http::response::Parts, String) {
        let length = body.len() as u64;
        self.send(path, Some(length), Full::new(Bytes::from(body)).boxed())
            .await
    }

    /// Starts a request; the future resolves with the response head.
    fn start(
        &mut self,
        path: &str,
        content_length: Option<u64>,
        body: H2Body,
    ) -> impl std::future::Future<Output = hyper::Result<hyper::Response<hyper::body::Incoming>>>
    {
        let mut request = hyper::Request::post(format!("https://{}{path}", self.authority))
            .header("content-type", "application/json");
        if let Some(length) = content_length {
            request = request.header("content-length", length);
        }
        self.send.send_request(request.body(body).unwrap())
    }
}

/// A body that sends `first` bytes and then never ends (the sender is returned: dropping it ends
/// the body early, which the server sees as a broken stream).
fn unfinished(first: usize) -> (H2Body, tokio::sync::mpsc::Sender<Bytes>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let body = StreamBody::new(stream).boxed();
    let tx2 = tx.clone();
    tokio::spawn(async move {
        if first > 0 {
            let _ = tx2.send(Bytes::from(vec![b' '; first])).await;
        }
    });
    (body, tx)
}

fn budget_rejections(metrics: &str, reason: &str) -> f64 {
    sample(
        metrics,
        &format!("regate_memory_budget_rejections_total{{reason=\"{reason}\"}}"),
    )
}

/// One connection may buffer at most twice `maxBodyBytes` (here 1 MiB → 2 MiB): further streams
/// on it are refused with 503 and `Retry-After` at once, whether they declare their length or
/// not, while other connections are served. When the unfinished bodies time out, the budget is
/// whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_cannot_buffer_more_than_its_share() {
    let server = start("  maxBodyBytes: 1048576\n  bodyReadTimeoutMs: 3000\n").await;
    let mut flood = H2::connect(&server).await;
    let declared = (1 << 20) - 1;
    // Two unfinished bodies that declare just under the limit: the connection's share.
    let mut held = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..2 {
        let (body, tx) = unfinished(1000);
        held.push(tokio::spawn(flood.start("/validate", Some(declared), body)));
        senders.push(tx);
    }
    // Let the server reserve them before the next ones arrive.
    let metrics_has = |needle: &'static str| {
        let server = &server;
        async move {
            for _ in 0..200 {
                if server.metrics().await.contains(needle) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        }
    };
    assert!(
        metrics_has("regate_memory_budget_bytes{budget=\"buffered\"} 2097150").await,
        "{}",
        server.metrics().await
    );
    // Four more declared, and one streamed without a length: all refused at once.
    for i in 0..5 {
        let (body, tx) = unfinished(64 * 1024);
        let length = (i < 4).then_some(declared);
        let (parts, text) = flood.send("/validate", length, body).await;
        drop(tx);
        assert_eq!(parts.status, 503, "{text}");
        assert_eq!(parts.headers["retry-after"], "1");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["response"]["status"]["code"], 503);
        assert!(
            text.contains("this connection's share of the request body budget"),
            "{text}"
        );
    }
    assert_eq!(
        budget_rejections(&server.metrics().await, "connection"),
        5.0
    );
    // Meanwhile another connection is served.
    let ok = std::fs::read(repo().join("fixtures/admission/pod-secure.json")).unwrap();
    let (status, _, answer) = post(&server.http2(), &server.url("/validate"), ok.clone()).await;
    assert_eq!(status, 200, "{answer}");
    // The two unfinished bodies time out (408) and give their bytes back.
    for h in held {
        let response = h.await.unwrap().unwrap();
        assert_eq!(response.status(), 408);
    }
    drop(senders);
    assert!(
        metrics_has("regate_memory_budget_bytes{budget=\"buffered\"} 0").await,
        "{}",
        server.metrics().await
    );
    let (parts, text) = flood.send_full("/validate", ok).await;
    assert_eq!(parts.status, 200, "{text}");
    server.stop().await;
}

/// All connections together buffer at most 12 × `maxBodyBytes` (here 12 MiB); beyond that a
/// large body is refused (503), and a small one still has the reserve, so an ordinary review is
/// answered while the budget is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_connections_share_one_budget_and_small_reviews_keep_a_reserve() {
    let server = start("  maxBodyBytes: 1048576\n  bodyReadTimeoutMs: 5000\n").await;
    let declared = (1 << 20) - 1;
    let mut held = Vec::new();
    let mut senders = Vec::new();
    let mut connections = Vec::new();
    // 6 connections × 2 bodies: the whole budget (12 × (1 MiB − 1)).
    for _ in 0..6 {
        let mut c = H2::connect(&server).await;
        for _ in 0..2 {
            let (body, tx) = unfinished(100);
            held.push(tokio::spawn(c.start("/validate", Some(declared), body)));
            senders.push(tx);
        }
        connections.push(c);
    }
    let mut full = false;
    for _ in 0..200 {
        let text = server.metrics().await;
        if sample(&text, "regate_memory_budget_bytes{budget=\"buffered\"}")
            >= 12.0 * declared as f64
        {
            full = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(full, "{}", server.metrics().await);
    // A seventh connection's large body: refused.
    let mut seventh = H2::connect(&server).await;
    let (body, tx) = unfinished(100);
    let (parts, text) = seventh.send("/validate", Some(declared), body).await;
    drop(tx);
    assert_eq!(parts.status, 503, "{text}");
    assert!(
        text.contains("the request body budget has no room"),
        "{text}"
    );
    assert_eq!(budget_rejections(&server.metrics().await, "buffered"), 1.0);
    // An ordinary review: answered, from the reserve.
    let ok = std::fs::read(repo().join("fixtures/admission/pod-secure.json")).unwrap();
    let (parts, text) = seventh.send_full("/validate", ok.clone()).await;
    assert_eq!(parts.status, 200, "{text}");
    drop(senders);
    for h in held {
        let _ = h.await;
    }
    server.stop().await;
}

/// The real binary under an HTTP/2 flood of unfinished bodies just under the limit (4
/// connections × 32 streams × (1 MiB − 1), 128 MiB if buffered): its memory stays within the
/// budgets, the flood is refused with 503, an ordinary review is answered meanwhile, and once the
/// bodies time out the budget is whole again and resident memory comes back down.
/// RSS (KiB) once a few ordinary reviews were judged, so that idle memory includes what serving
/// normally takes.
async fn idle_after_warm_up(regate: &Regate, client: &reqwest::Client, ok: &[u8]) -> u64 {
    for _ in 0..20 {
        let (status, _, _) = post(client, &regate.url("/validate"), ok.to_vec()).await;
        assert_eq!(status, 200);
    }
    regate.rss_kib().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_flood_of_unfinished_bodies_stays_within_the_budget() {
    let regate = Regate::start(BinaryOptions {
        config: config("  maxBodyBytes: 1048576\n  bodyReadTimeoutMs: 4000\n"),
        ..BinaryOptions::default()
    });
    let ca = regate.pki.ca_pem.clone();
    let ok = std::fs::read(repo().join("fixtures/admission/pod-secure.json")).unwrap();
    let client = regate.http2();
    let idle = idle_after_warm_up(&regate, &client, &ok).await;
    let declared = (1 << 20) - 1;
    let mut tasks = Vec::new();
    let mut senders = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..4 {
        let mut c = H2::connect_to(regate.addr, &ca).await;
        for _ in 0..32 {
            // Each sends all but one byte of its body, then waits.
            let (body, tx) = unfinished(declared - 1);
            tasks.push(tokio::spawn(c.start(
                "/validate",
                Some(declared as u64),
                body,
            )));
            senders.push(tx);
        }
        connections.push(c);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _, answer) = post(&regate.http1(), &regate.url("/validate"), ok.clone()).await;
    assert_eq!(status, 200, "an ordinary review during the flood: {answer}");
    let (during, peak) = regate.rss_kib();
    let mut statuses = std::collections::BTreeMap::new();
    for t in tasks {
        let status = match t.await.unwrap() {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        };
        *statuses.entry(status).or_insert(0) += 1;
    }
    drop(senders);
    let metrics = regate.metrics_text().await;
    let refused =
        budget_rejections(&metrics, "connection") + budget_rejections(&metrics, "buffered");
    eprintln!(
        "flood: answers {statuses:?}; refused by budget {refused}; RSS idle {idle} KiB, \
         during {during} KiB, peak {peak} KiB"
    );
    // Each connection holds at most its share (2 bodies): the other 30 streams are refused.
    assert!(refused >= 4.0 * 30.0, "{statuses:?}\n{metrics}");
    assert_eq!(statuses.get(&503).copied().unwrap_or(0) as f64, refused);
    assert_eq!(statuses.get(&408).copied().unwrap_or(0), 8, "{statuses:?}");
    assert_eq!(
        sample(&metrics, "regate_memory_budget_bytes{budget=\"buffered\"}"),
        0.0
    );
    // The refusals are logged rate-limited: one WARN line per status and interval, counting
    // what it stands for, not one line per refused stream.
    let logs = regate.logs();
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| l.contains("rejected request body"))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let refused_lines = lines
        .iter()
        .filter(|l| l.to_string().contains("\"status\":503"))
        .count();
    assert!(
        (1..=2).contains(&refused_lines) && lines.len() <= 4,
        "{refused} refusals logged in {} lines:\n{logs}",
        lines.len()
    );
    assert!(
        lines.iter().all(|l| l.to_string().contains("\"count\":")),
        "{logs}"
    );
    // The flood would be 128 MiB buffered; the budget allows 8 bodies at once (about 8 MiB).
    assert!(
        peak < idle + 64 * 1024,
        "peak RSS {peak} KiB, idle {idle} KiB"
    );
    // Memory comes back once the flood ended: within 20% of idle or 16 MiB, whichever is more
    // (the allocator keeps some freed pages per thread; docs/RELIABILITY.md has the figures).
    let mut after = 0;
    for _ in 0..40 {
        // Allocator activity lets it return freed pages.
        let _ = post(&client, &regate.url("/validate"), ok.clone()).await;
        after = regate.rss_kib().0;
        if after <= (idle + idle / 5).max(idle + 16 * 1024) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        after <= (idle + idle / 5).max(idle + 16 * 1024),
        "RSS after {after} KiB, idle {idle} KiB"
    );
}

/// Large reviews judged, then nothing: RSS comes back near idle without another request.
/// mimalloc keeps a block freed by another thread than the one that allocated it (a body read on
/// a worker, dropped after judging on a lane thread) in the allocating thread's heap until that
/// thread collects; before the workers collected when they park and the lane's threads ended
/// when idle, `bench/hostile.sh` kept about 200 MiB (7 × idle) until the next large review.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_after_large_reviews_without_another_request() {
    let regate = Regate::start(BinaryOptions {
        config: config("  maxBodyBytes: 8388608\n"),
        log_level: "warn".into(),
        ..BinaryOptions::default()
    });
    let ok = std::fs::read(repo().join("fixtures/admission/pod-secure.json")).unwrap();
    let idle = idle_after_warm_up(&regate, &regate.http1(), &ok).await;
    // 300,000 `{}` in a Pod: 900 KB of body, about 40 MiB once parsed; 12 of them, 4 at once,
    // each on a connection of its own (so over both workers and the lane's threads).
    let mut pod = fixture("pod-secure.json");
    pod["request"]["object"]["metadata"]["finalizers"] = json!("PLACEHOLDER");
    let body = serde_json::to_string(&pod).unwrap().replace(
        "\"PLACEHOLDER\"",
        &format!("[{}{{}}]", "{},".repeat(299_999)),
    );
    for _ in 0..3 {
        let posts = (0..4).map(|_| {
            let client = regate.http1();
            let url = regate.url("/validate");
            let body = body.clone();
            async move { post(&client, &url, body).await.0 }
        });
        let statuses = futures_util::future::join_all(posts).await;
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
    let (_, peak) = regate.rss_kib();
    // No request from here on: what comes back, comes back by itself. Polled until it does, for
    // up to a minute (a loaded machine schedules the idle threads late).
    let target = (idle + idle / 5).max(idle + 16 * 1024);
    let mut after = regate.rss_kib().0;
    for _ in 0..240 {
        if after <= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = regate.rss_kib().0;
    }
    eprintln!("large reviews: RSS idle {idle} KiB, peak {peak} KiB, after {after} KiB");
    assert!(
        peak > target,
        "the reviews took memory (peak {peak} KiB, idle {idle} KiB): the test measures something"
    );
    assert!(after <= target, "RSS after {after} KiB, idle {idle} KiB");
}

// ------------------------------------------------------------------------------------------
// Bodies too large to parse; parsing in the time budget
// ------------------------------------------------------------------------------------------

/// A Pod carrying 2.5 million `{}` (7.5 MB, under the body limit; about 330 MiB once parsed)
/// would take more than a body may once parsed (24 × `maxBodyBytes`): refused with 413 before
/// it is parsed, the uid echoed, counted in
/// `regate_memory_budget_rejections_total{reason="parse_size"}`. A million (about 130 MiB) is
/// judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_to_parse_is_refused_before_parsing() {
    let server = TestServer::start().await;
    let mut pod = fixture("pod-secure.json");
    pod["request"]["uid"] = json!("many-values-1");
    pod["request"]["object"]["metadata"]["finalizers"] = json!("PLACEHOLDER");
    let with = |n: usize| {
        serde_json::to_string(&pod)
            .unwrap()
            .replace("\"PLACEHOLDER\"", &format!("[{}{{}}]", "{},".repeat(n - 1)))
    };
    let body = with(2_500_000);
    assert!(body.len() < 8 * 1024 * 1024);
    for client in [server.http1(), server.http2()] {
        let (status, _, answer) = post(&client, &server.url("/validate"), body.clone()).await;
        assert_eq!(status, 413, "{answer}");
        let response = &answer["response"];
        assert_eq!(response["uid"], "many-values-1");
        assert_eq!(response["allowed"], false);
        assert_eq!(response["status"]["code"], 413);
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("request body is too large to parse: parsed, it would take about ")
                && message.contains(" JSON values, ")
                && message
                    .contains("more than the limit of 192 MiB (24 times limits.maxBodyBytes)"),
            "{message}"
        );
    }
    assert_eq!(
        budget_rejections(&server.metrics().await, "parse_size"),
        2.0
    );
    let (status, _, answer) =
        post(&server.http1(), &server.url("/validate"), with(1_000_000)).await;
    assert_eq!(status, 200, "{answer}");
    server.stop().await;
}

/// 10,000 containers (about 1.8 MB) with a 10 ms evaluation budget: parsing and converting the
/// body alone take longer than that, so the policies fail with the time limit and the failure
/// policy decides (closed: denied naming the limit; open: allowed with warnings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parsing_counts_in_the_evaluation_time_budget() {
    let mut pod = fixture("pod-privileged.json");
    let one = pod["request"]["object"]["spec"]["containers"][0].clone();
    pod["request"]["object"]["spec"]["containers"] = json!(vec![one; 10_000]);
    let body = serde_json::to_vec(&pod).unwrap();
    for (failure, allowed) in [("closed", false), ("open", true)] {
        let server = TestServer::start_with(Options {
            config: Some(format!(
                "{TEST_CONFIG}policyFailure: {failure}\nlimits:\n  evaluationTimeoutMs: 10\n"
            )),
            ..Options::default()
        })
        .await;
        let (status, _, answer) =
            post(&server.http1(), &server.url("/validate"), body.clone()).await;
        assert_eq!(status, 200, "{answer}");
        let response = &answer["response"];
        assert_eq!(response["allowed"], allowed, "{answer}");
        let text = if allowed {
            warnings(&answer).join("\n")
        } else {
            response["status"]["message"].as_str().unwrap().to_string()
        };
        assert!(
            text.contains("policy evaluation failed: evaluation time limit exceeded"),
            "{text}"
        );
        let metrics = server.metrics().await;
        assert!(
            metrics.contains("reason=\"time_limit\""),
            "time limit failures counted: {metrics}"
        );
        server.stop().await;
    }
}

// ------------------------------------------------------------------------------------------
// Answers capped
// ------------------------------------------------------------------------------------------

/// 10,000 containers with no securityContext: tens of thousands of violations and warnings. The
/// answer lists the first 20 denials and counts the rest, carries at most 20 warnings of at most
/// 256 characters (4,096 in all) with the count of those left out, and stays under 16 KiB; the
/// counts are those of the uncapped decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_capped_with_counts_of_what_was_left_out() {
    let limits = "  evaluationTimeoutMs: 600000\n";
    let mut pod = fixture("deployment-no-security-context.json");
    let template = &mut pod["request"]["object"]["spec"]["template"]["spec"];
    let one = template["containers"][0].clone();
    template["containers"] = json!((0..10_000)
        .map(|i| {
            let mut c = one.clone();
            c["name"] = json!(format!("c{i}"));
            c
        })
        .collect::<Vec<_>>());
    let body = serde_json::to_vec(&pod).unwrap();

    // The uncapped decision, from the library.
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("regate.yaml");
    std::fs::write(&config_path, config(limits)).unwrap();
    let store = regate::policy::reload::PolicyStore::new(
        regate::policy::reload::PolicySources {
            dir: repo().join("policies"),
            include_defaults: false,
            config: Some(config_path),
            yaml_loader: regate::catalog::YAML_LOADERS,
        },
        regate::environment::NamespaceLabels::default(),
        None,
    )
    .unwrap();
    let review = regate::admission::Review::from_slice(&body).unwrap();
    let judged = std::time::Instant::now();
    let decision = regate::admission::judge(
        &store.current(),
        &review,
        regate::policy::eval::Wants::VALIDATE,
    );
    eprintln!("judged in {:?}", judged.elapsed());
    assert!(decision.failures.is_empty(), "{:?}", decision.failures);
    let denials = decision.deny_parts().len();
    let all_warnings = decision.warnings().len();
    assert!(
        denials > 20 && all_warnings > 20,
        "{denials} {all_warnings}"
    );

    let server = start(limits).await;
    // A debug build on a loaded machine takes a while over 10,000 containers.
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&server.ca).unwrap()).unwrap(),
        )
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let response = client
        .post(server.url("/validate"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    eprintln!(
        "answer: {} bytes for {denials} denials and {all_warnings} warnings",
        text.len()
    );
    assert!(text.len() < 16 * 1024, "answer of {} bytes", text.len());
    let answer: Value = serde_json::from_str(&text).unwrap();
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    let grouped = |n: usize| {
        let digits = n.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    };
    assert_eq!(message.matches("; [").count(), 19, "{message}");
    assert!(
        message.ends_with(&format!(
            "; … and {} more ({} in all)",
            grouped(denials - 20),
            grouped(denials)
        )),
        "{message}"
    );
    let warned = warnings(&answer);
    assert!(warned.len() <= 20);
    assert!(warned.iter().all(|w| w.chars().count() <= 256));
    assert!(warned.iter().map(|w| w.chars().count()).sum::<usize>() <= 4096);
    let listed = warned.len() - 1;
    assert_eq!(
        warned.last().unwrap(),
        &format!(
            "… and {} more warnings ({} in all)",
            grouped(all_warnings - listed),
            grouped(all_warnings)
        )
    );
    server.stop().await;
}
