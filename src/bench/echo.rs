//! `regate bench echo-server`: the floor the load benchmark compares `serve` with. The same TLS
//! configuration ([`crate::tls::server_config`]), HTTP settings ([`server::http_builder`]) and
//! connection handling ([`server::serve_connection`]: TLS handshake, then hyper-util's HTTP/1.1
//! or h2 over the axum router; `serve` adds closing idle connections on top). On `/validate` and
//! `/mutate` it reads the body (with `serve`'s size limit), parses it as JSON and answers an
//! allowed AdmissionReview carrying the request's uid, serialised as `serve` serialises its
//! answers. No policy is evaluated.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::server::graceful::GracefulShutdown;
use kube::core::admission::AdmissionResponse;
use kube::core::Status;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::info;

use crate::config::Limits;
use crate::server;
use crate::tls::{self, CertStore};

use super::BenchError;

#[derive(Debug, Clone)]
pub struct EchoOptions {
    pub listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
}

/// The echo router: `/validate`, `/mutate`, `/healthz`.
pub fn router(limits: &Limits) -> Router {
    let max = limits.max_body_bytes;
    Router::new()
        .route("/validate", post(move |body: Body| echo(body, max)))
        .route("/mutate", post(move |body: Body| echo(body, max)))
        .route("/healthz", get(|| async { "ok\n" }))
}

async fn echo(body: Body, limit: usize) -> Response {
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {e}\n"),
            )
                .into_response()
        }
    };
    let value: serde_json::Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("request body is not valid JSON: {e}\n"),
            )
                .into_response()
        }
    };
    let uid = value
        .pointer("/request/uid")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_string();
    response.allowed = true;
    response.result = Status::success();
    (
        StatusCode::OK,
        axum::Json(crate::admission::respond::answer(response)),
    )
        .into_response()
}

/// Binds and serves until SIGINT/SIGTERM.
pub async fn run(opts: EchoOptions) -> Result<(), BenchError> {
    let certs = CertStore::load(&opts.tls_cert, &opts.tls_key, None)
        .map_err(|e| BenchError::Tls(e.to_string()))?;
    let config =
        tls::server_config(Arc::new(certs), None).map_err(|e| BenchError::Tls(e.to_string()))?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| BenchError::Bind {
            addr: opts.listen,
            source,
        })?;
    let limits = Limits::default();
    let builder = server::http_builder(&limits);
    let router = router(&limits);
    let handshake_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    let graceful = GracefulShutdown::new();
    info!(listen = %opts.listen, "echo server ready (no policy evaluation)");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let Some((stream, peer)) = server::accept_until(&listener, &mut shutdown).await else {
            break;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(server::serve_connection(
            (stream, peer),
            acceptor.clone(),
            builder.clone(),
            router.clone(),
            handshake_timeout,
            graceful.watcher(),
            (),
        ));
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = int.recv() => {},
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
