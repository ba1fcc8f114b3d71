//! `regate bench load`: AdmissionReviews over TLS, as kube-apiserver sends them.
//!
//! - Open loop (`--rate R`): request `i` is due at `start + i/R`, whether or not earlier answers
//!   have come back; its latency runs from that due time, so queueing anywhere (client, network,
//!   server) is counted, not hidden. HTTP/1.1 requests take an idle keep-alive connection, or open
//!   one when all are busy (up to `--max-connections`); h2 requests share the connections.
//! - Closed loop (`--concurrency C`): C workers each send, wait for the answer, send again: the
//!   maximum throughput. Latency runs from each send.
//!
//! Every answer is checked: HTTP 200, an AdmissionReview whose `response.uid` is the request's
//! own (each request carries a fresh uid), and, on `/validate`, `response.allowed` as the
//! fixture's `expected.yaml` says. Anything else is an error, counted by kind.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::fixtures::Fixture;
use super::stats::Samples;
use super::BenchError;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Open loop: requests per second.
    Rate(f64),
    /// Closed loop: requests in flight.
    Concurrency(usize),
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub target: String,
    pub ca: PathBuf,
    pub http2: bool,
    pub mode: Mode,
    pub duration: Duration,
    /// Sent like the rest but not measured (latency); errors still count.
    pub warmup: Duration,
    /// Connections opened before the clock starts (open loop), or shared by h2 workers.
    pub connections: usize,
    /// Most connections the open loop opens (HTTP/1.1).
    pub max_connections: usize,
    /// Per-request limit; a slower answer is an error.
    pub timeout: Duration,
    /// Compare each decision with the fixture's expected one (off for the echo floor).
    pub check_decision: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub target: String,
    pub protocol: &'static str,
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    pub duration_s: f64,
    pub fixtures: usize,
    /// Requests measured (due, or sent, after the warm-up), answered or failed.
    pub requests: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub connections: usize,
    pub error_kinds: BTreeMap<String, u64>,
    /// Requests sent during the warm-up (not in the figures above, but their errors are).
    pub warmup_requests: u64,
}

impl LoadReport {
    pub fn text(&self) -> String {
        let mode = match (self.rate, self.concurrency) {
            (Some(r), _) => format!("open loop at {r} req/s"),
            (_, Some(c)) => format!("closed loop, concurrency {c}"),
            _ => self.mode.to_string(),
        };
        let mut out = format!(
            "target {} ({}), {mode}, {:.1}s, {} fixtures, {} connection(s)\n\
             requests    {}\nerrors      {}\nthroughput  {:.0} req/s\n\
             latency ms  mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}\n",
            self.target,
            self.protocol,
            self.duration_s,
            self.fixtures,
            self.connections,
            self.requests,
            self.errors,
            self.throughput_rps,
            self.mean_ms,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.p999_ms,
            self.max_ms
        );
        for (kind, n) in &self.error_kinds {
            out.push_str(&format!("  error {kind}: {n}\n"));
        }
        out
    }
}

/// What every request needs.
struct Ctx {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    connector: TlsConnector,
    uri: Uri,
    path: String,
    authority: String,
    http2: bool,
    validate: bool,
    check_decision: bool,
    fixtures: Vec<Fixture>,
    timeout: Duration,
}

#[derive(Clone)]
enum Conn {
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

#[derive(Default)]
struct Tally {
    samples: Samples,
    requests: u64,
    warmup: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }
}

fn parse_target(
    target: &str,
) -> Result<(SocketAddr, ServerName<'static>, Uri, String, String), BenchError> {
    let bad = |m: &str| BenchError::Target(target.to_string(), m.to_string());
    let uri: Uri = target
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| bad(&e.to_string()))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad(
            "must be an https:// URL (the webhook is served over TLS)",
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| bad("no host"))?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
        .map_err(|e| bad(&e.to_string()))?
        .next()
        .ok_or_else(|| bad("host does not resolve"))?;
    let server_name = ServerName::try_from(host.clone()).map_err(|e| bad(&e.to_string()))?;
    let path = match uri.path() {
        "" | "/" => "/validate".to_string(),
        p => p.to_string(),
    };
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or(host);
    let full: Uri = format!("https://{authority}{path}")
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| bad(&e.to_string()))?;
    Ok((addr, server_name, full, path, authority))
}

fn connector(ca: &std::path::Path, http2: bool) -> Result<TlsConnector, BenchError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::tls::certs::read_bundle(ca).map_err(|e| BenchError::Tls(e.to_string()))? {
        roots
            .add(cert)
            .map_err(|e| BenchError::Tls(format!("{}: {e}", ca.display())))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| BenchError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn connect(ctx: &Ctx) -> Result<Conn, BenchError> {
    let fail = |message: String| BenchError::Connect {
        addr: ctx.addr.to_string(),
        message,
    };
    let tcp = TcpStream::connect(ctx.addr)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let tls = ctx
        .connector
        .connect(ctx.server_name.clone(), tcp)
        .await
        .map_err(|e| fail(format!("TLS: {e}")))?;
    let io = TokioIo::new(tls);
    if ctx.http2 {
        let (send, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| fail(format!("h2: {e}")))?;
        tokio::spawn(conn);
        Ok(Conn::H2(send))
    } else {
        let (send, conn) = http1::handshake(io)
            .await
            .map_err(|e| fail(format!("http/1.1: {e}")))?;
        tokio::spawn(conn);
        Ok(Conn::H1(Arc::new(tokio::sync::Mutex::new(send))))
    }
}

#[derive(serde::Deserialize)]
struct Answer {
    response: Option<AnswerResponse>,
}

#[derive(serde::Deserialize)]
struct AnswerResponse {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    allowed: bool,
}

/// A pooled HTTP/1.1 connection found closed before the request was written.
const STALE: &str = "stale";

/// Sends request `i` (fixture `i mod n`) on `conn` and checks the answer. `Err` names the kind;
/// [`STALE`] means nothing was sent, and the caller retries on a new connection.
async fn request(ctx: &Ctx, conn: &Conn, i: u64) -> Result<(), &'static str> {
    let fixture = &ctx.fixtures[(i % ctx.fixtures.len() as u64) as usize];
    let uid = format!("regate-bench-{i:012}");
    let (body, expected_uid) = match fixture.body_with_uid(&uid) {
        Some(body) => (body, uid.as_str()),
        None => (fixture.body.clone(), fixture.uid.as_str()),
    };
    let builder = Request::post(if ctx.http2 {
        ctx.uri.clone()
    } else {
        Uri::from_maybe_shared(ctx.path.clone()).map_err(|_| "request")?
    })
    .header(header::CONTENT_TYPE, "application/json")
    .header(header::ACCEPT, "application/json");
    let builder = if ctx.http2 {
        builder
    } else {
        builder.header(header::HOST, ctx.authority.as_str())
    };
    let req = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| "request")?;
    let exchange = async {
        let response = match conn {
            Conn::H1(send) => {
                let mut send = send.lock().await;
                // Closed while idle in the pool (the server closes idle connections): nothing
                // was sent. Go's transport, kube-apiserver's, retries such a request on a new
                // connection, and so do the callers here.
                send.ready().await.map_err(|_| STALE)?;
                send.send_request(req).await.map_err(|_| "connection")?
            }
            Conn::H2(send) => {
                let mut send = send.clone();
                send.ready().await.map_err(|_| "connection")?;
                send.send_request(req).await.map_err(|_| "connection")?
            }
        };
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|_| "connection")?
            .to_bytes();
        if status != axum::http::StatusCode::OK {
            return Err(match status.as_u16() {
                503 => "http_503",
                429 => "http_429",
                400..=499 => "http_4xx",
                _ => "http_5xx",
            });
        }
        Ok(bytes)
    };
    let bytes = tokio::time::timeout(ctx.timeout, exchange)
        .await
        .map_err(|_| "timeout")??;
    let answer: Answer = serde_json::from_slice(&bytes).map_err(|_| "invalid_answer")?;
    let response = answer.response.ok_or("invalid_answer")?;
    if response.uid != expected_uid {
        return Err("uid_mismatch");
    }
    if !ctx.check_decision {
        return Ok(());
    }
    let expected = if ctx.validate {
        fixture.expected_allowed
    } else {
        Some(true)
    };
    if expected.is_some_and(|e| e != response.allowed) {
        return Err("wrong_decision");
    }
    Ok(())
}

/// Runs the benchmark on the current tokio runtime.
pub async fn run(opts: LoadOptions, fixtures: Vec<Fixture>) -> Result<LoadReport, BenchError> {
    let (addr, server_name, uri, path, authority) = parse_target(&opts.target)?;
    let validate = !path.ends_with("/mutate");
    let ctx = Arc::new(Ctx {
        addr,
        server_name,
        connector: connector(&opts.ca, opts.http2)?,
        uri,
        path,
        authority,
        http2: opts.http2,
        validate,
        check_decision: opts.check_decision,
        fixtures,
        timeout: opts.timeout,
    });
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (connections, elapsed) = match opts.mode {
        Mode::Concurrency(c) => closed_loop(&ctx, &opts, c.max(1), &tally).await?,
        Mode::Rate(r) => open_loop(&ctx, &opts, r, &tally).await?,
    };
    let mut tally = match Arc::try_unwrap(tally) {
        Ok(m) => m.into_inner().unwrap_or_default(),
        Err(shared) => std::mem::take(&mut *shared.lock().unwrap_or_else(|p| p.into_inner())),
    };
    let summary = tally.samples.summary();
    let errors: u64 = tally.errors.values().sum();
    let secs = elapsed.as_secs_f64();
    Ok(LoadReport {
        target: opts.target.clone(),
        protocol: if opts.http2 { "h2" } else { "http/1.1" },
        mode: match opts.mode {
            Mode::Rate(_) => "open",
            Mode::Concurrency(_) => "closed",
        },
        rate: match opts.mode {
            Mode::Rate(r) => Some(r),
            Mode::Concurrency(_) => None,
        },
        concurrency: match opts.mode {
            Mode::Concurrency(c) => Some(c),
            Mode::Rate(_) => None,
        },
        duration_s: secs,
        fixtures: ctx.fixtures.len(),
        requests: tally.requests,
        errors,
        throughput_rps: if secs > 0.0 {
            summary.count as f64 / secs
        } else {
            0.0
        },
        mean_ms: summary.mean_ms,
        p50_ms: summary.p50_ms,
        p90_ms: summary.p90_ms,
        p99_ms: summary.p99_ms,
        p999_ms: summary.p999_ms,
        max_ms: summary.max_ms,
        connections,
        error_kinds: tally.errors,
        warmup_requests: tally.warmup,
    })
}

fn record(
    tally: &Mutex<Tally>,
    measured: bool,
    result: Result<(), &'static str>,
    latency: Duration,
) {
    let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
    if measured {
        t.requests += 1;
    } else {
        t.warmup += 1;
    }
    match result {
        // Only answered requests have a latency; failed ones count as errors.
        Ok(()) if measured => t.samples.push(latency),
        Ok(()) => {}
        Err(kind) => t.error(kind),
    }
}

/// Closed loop: `c` workers, each with its own keep-alive connection (HTTP/1.1) or sharing
/// `opts.connections` h2 connections. Returns the connections used and the measured time.
async fn closed_loop(
    ctx: &Arc<Ctx>,
    opts: &LoadOptions,
    c: usize,
    tally: &Arc<Mutex<Tally>>,
) -> Result<(usize, Duration), BenchError> {
    let n_conns = if ctx.http2 {
        opts.connections.clamp(1, c)
    } else {
        c
    };
    let mut conns = Vec::with_capacity(n_conns);
    for _ in 0..n_conns {
        conns.push(connect(ctx).await?);
    }
    let start = Instant::now();
    let measure_from = start + opts.warmup;
    let end = measure_from + opts.duration;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..c {
        let ctx = ctx.clone();
        let tally = tally.clone();
        let next = next.clone();
        let mut conn = conns[w % n_conns].clone();
        workers.spawn(async move {
            loop {
                let sent = Instant::now();
                if sent >= end {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                let mut result = request(&ctx, &conn, i).await;
                if result == Err(STALE) {
                    match connect(&ctx).await {
                        Ok(c) => {
                            conn = c;
                            result = request(&ctx, &conn, i).await;
                        }
                        Err(_) => result = Err("connection"),
                    }
                }
                let failed_connection = result == Err("connection") || result == Err(STALE);
                record(&tally, sent >= measure_from, result, sent.elapsed());
                if failed_connection && !ctx.http2 {
                    // The server closed it: reconnect, as kube-apiserver would.
                    match connect(&ctx).await {
                        Ok(c) => conn = c,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    // Up to the last answer of a request sent before the end.
    Ok((
        n_conns,
        Instant::now().saturating_duration_since(measure_from),
    ))
}

/// Open loop at `rate` requests per second: request `i` leaves at `start + i/rate` (the runtime
/// spins between close sends; the generator's core is busy for the run).
async fn open_loop(
    ctx: &Arc<Ctx>,
    opts: &LoadOptions,
    rate: f64,
    tally: &Arc<Mutex<Tally>>,
) -> Result<(usize, Duration), BenchError> {
    let rate = if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        1.0
    };
    let pool = Arc::new(Pool::new(opts.max_connections.max(1)));
    let warm = opts.connections.max(1);
    for _ in 0..warm {
        let conn = connect(ctx).await?;
        pool.opened.fetch_add(1, Ordering::Relaxed);
        pool.release(conn);
    }
    let total = ((opts.warmup + opts.duration).as_secs_f64() * rate).floor() as u64;
    let start = Instant::now() + Duration::from_millis(5);
    let measure_from = start + opts.warmup;
    let mut inflight = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        // Keep the schedule to the microsecond: sleep while the next request is far, then
        // spin, yielding to the runtime (which polls its sockets meanwhile). A tokio timer
        // fires on the millisecond, and a sleeping thread takes tens to hundreds of
        // microseconds to wake on a virtual machine: either would add the load generator's own
        // delay to every latency measured from the due time.
        loop {
            let now = Instant::now();
            if now >= due {
                break;
            }
            if due - now > Duration::from_millis(2) {
                tokio::time::sleep(due - now - Duration::from_millis(1)).await;
            } else {
                tokio::task::yield_now().await;
            }
        }
        while inflight.try_join_next().is_some() {}
        let ctx = ctx.clone();
        let tally = tally.clone();
        let pool = pool.clone();
        inflight.spawn(async move {
            let mut attempts = 0;
            let (conn, result) = loop {
                let conn = match pool.acquire(&ctx).await {
                    Ok(c) => c,
                    Err(_) => {
                        record(&tally, due >= measure_from, Err("connect"), due.elapsed());
                        return;
                    }
                };
                let result = request(&ctx, &conn, i).await;
                if result == Err(STALE) && attempts < 3 {
                    attempts += 1;
                    pool.opened.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
                break (conn, result);
            };
            let latency = due.elapsed();
            let broken =
                result == Err("connection") || result == Err("timeout") || result == Err(STALE);
            record(&tally, due >= measure_from, result, latency);
            if broken && !ctx.http2 {
                pool.opened.fetch_sub(1, Ordering::Relaxed);
            } else {
                pool.release(conn);
            }
        });
    }
    let deadline = tokio::time::Instant::now() + ctx.timeout + Duration::from_secs(1);
    loop {
        match tokio::time::timeout_at(deadline, inflight.join_next()).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => {
                let left = inflight.len() as u64;
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                t.requests += left;
                *t.errors.entry("unfinished".to_string()).or_insert(0) += left;
                inflight.abort_all();
                break;
            }
        }
    }
    Ok((
        pool.opened.load(Ordering::Relaxed).max(pool.peak()),
        opts.duration,
    ))
}

/// Idle connections for the open loop. HTTP/1.1 connections carry one request at a time; h2
/// connections are handed out round-robin and shared.
struct Pool {
    idle: Mutex<Vec<Conn>>,
    waiters: tokio::sync::Notify,
    opened: AtomicUsize,
    peak: AtomicUsize,
    max: usize,
    shared: Mutex<(Vec<Conn>, usize)>,
}

impl Pool {
    fn new(max: usize) -> Pool {
        Pool {
            idle: Mutex::new(Vec::new()),
            waiters: tokio::sync::Notify::new(),
            opened: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            max,
            shared: Mutex::new((Vec::new(), 0)),
        }
    }

    fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn release(&self, conn: Conn) {
        match conn {
            Conn::H2(_) => {
                let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                if shared.0.len() < self.opened.load(Ordering::Relaxed) {
                    shared.0.push(conn);
                }
            }
            Conn::H1(_) => {
                self.idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(conn);
                self.waiters.notify_one();
            }
        }
    }

    async fn acquire(&self, ctx: &Ctx) -> Result<Conn, BenchError> {
        if ctx.http2 {
            let picked = {
                let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                if shared.0.is_empty() {
                    None
                } else {
                    shared.1 = (shared.1 + 1) % shared.0.len();
                    Some(shared.0[shared.1].clone())
                }
            };
            if let Some(conn) = picked {
                return Ok(conn);
            }
            let conn = connect(ctx).await?;
            self.opened.fetch_add(1, Ordering::Relaxed);
            self.release(conn.clone());
            return Ok(conn);
        }
        loop {
            let waiting = self.waiters.notified();
            if let Some(conn) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                return Ok(conn);
            }
            let opened = self.opened.load(Ordering::Relaxed);
            if opened < self.max
                && self
                    .opened
                    .compare_exchange(opened, opened + 1, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.peak.fetch_max(opened + 1, Ordering::Relaxed);
                return match connect(ctx).await {
                    Ok(conn) => Ok(conn),
                    Err(e) => {
                        self.opened.fetch_sub(1, Ordering::Relaxed);
                        Err(e)
                    }
                };
            }
            waiting.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let (addr, _, uri, path, authority) =
            parse_target("https://127.0.0.1:8443/validate").unwrap();
        assert_eq!(addr.port(), 8443);
        assert_eq!(path, "/validate");
        assert_eq!(authority, "127.0.0.1:8443");
        assert_eq!(uri.to_string(), "https://127.0.0.1:8443/validate");
        let (_, _, _, path, _) = parse_target("https://localhost:9443").unwrap();
        assert_eq!(path, "/validate");
        assert!(parse_target("http://127.0.0.1:8443/validate").is_err());
    }
}
