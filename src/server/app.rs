//! The router and its handlers. Handlers extract, call one plain function, and wrap the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use kube::core::admission::{AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, Status};
use tokio::sync::Semaphore;
use tracing::{info, warn, Instrument};

use crate::admission::decision::judge;
use crate::admission::respond::{self, Endpoint};
use crate::admission::review::{Review, ReviewError};
use crate::config::Limits;
use crate::metrics::{decision_label, Metrics};
use crate::policy::eval::Wants;
use crate::policy::reload::PolicyStore;
use crate::tls::CertStore;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<PolicyStore>,
    pub metrics: Metrics,
    pub certs: Option<Arc<CertStore>>,
    pub evaluations: Arc<Semaphore>,
    pub limits: Limits,
}

impl AppState {
    pub fn new(
        store: Arc<PolicyStore>,
        metrics: Metrics,
        certs: Option<Arc<CertStore>>,
    ) -> AppState {
        let limits = store.current().config.limits.clone();
        AppState {
            evaluations: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            store,
            metrics,
            certs,
            limits,
        }
    }
}

/// The webhook port's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/validate", post(validate).fallback(method_not_allowed))
        .route("/mutate", post(mutate).fallback(method_not_allowed))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

/// The metrics port's routes: plain HTTP, no admission.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

async fn validate(State(state): State<AppState>, body: Body) -> Response {
    admit(&state, Endpoint::Validate, body).await
}

async fn mutate(State(state): State<AppState>, body: Body) -> Response {
    admit(&state, Endpoint::Mutate, body).await
}

async fn method_not_allowed() -> Response {
    let mut response = (
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: the admission endpoints accept POST with an AdmissionReview\n",
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    response
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: regate serves POST /validate, POST /mutate, GET /healthz and GET /readyz\n",
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(serde::Deserialize)]
struct ReadyQuery {
    verbose: Option<String>,
}

async fn readyz(State(state): State<AppState>, Query(q): Query<ReadyQuery>) -> Response {
    let report = readiness(&state);
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if q.verbose.is_some() {
        return (status, report.text()).into_response();
    }
    (status, if report.ready { "ok\n" } else { "not ready\n" }).into_response()
}

/// The readiness checks, each with its state.
pub struct Readiness {
    pub ready: bool,
    pub checks: Vec<(&'static str, bool, String)>,
}

impl Readiness {
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (name, ok, detail) in &self.checks {
            let mark = if *ok { "[+]" } else { "[-]" };
            out.push_str(&format!("{mark}{name} {}\n", detail));
        }
        out.push_str(if self.ready {
            "readyz check passed\n"
        } else {
            "readyz check failed\n"
        });
        out
    }
}

pub fn readiness(state: &AppState) -> Readiness {
    let set = state.store.current();
    let mut checks = Vec::new();
    let loaded = !set.policies.is_empty();
    checks.push((
        "policies",
        loaded,
        format!("{} policies loaded", set.policies.len()),
    ));
    match state.store.last_error() {
        // A failed reload does not make the server unready: it keeps serving the last good set.
        Some(error) => checks.push((
            "last-reload",
            true,
            format!(
                "failed, serving the last good set: {}",
                error.replace('\n', " | ")
            ),
        )),
        None => checks.push(("last-reload", true, "ok".to_string())),
    }
    if let Some(certs) = &state.certs {
        // Ready only while clients would accept the certificate served now.
        let check = match certs.validity_problem() {
            Some(problem) => ("certificate", false, problem),
            None => (
                "certificate",
                true,
                format!(
                    "not before {}, not after {}",
                    certs.not_before(),
                    certs.not_after()
                ),
            ),
        };
        checks.push(check);
    }
    Readiness {
        ready: checks.iter().all(|(_, ok, _)| *ok),
        checks,
    }
}

type Answer = (StatusCode, AdmissionReview<DynamicObject>);

/// Reads the body, waits for an evaluation slot, and judges the review off the async workers.
pub async fn admit(state: &AppState, endpoint: Endpoint, body: Body) -> Response {
    let started = Instant::now();
    let bytes = match read_body(
        body,
        state.limits.max_body_bytes,
        state.limits.body_read_timeout_ms,
    )
    .await
    {
        Ok(bytes) => bytes,
        Err((status, message)) => {
            state
                .metrics
                .record_unjudged(endpoint.as_str(), "invalid", started.elapsed());
            warn!(endpoint = endpoint.as_str(), status = status.as_u16(), %message, "rejected request body");
            return plain_error(status, &message);
        }
    };
    let permit = match tokio::time::timeout(
        Duration::from_millis(state.limits.queue_timeout_ms),
        state.evaluations.clone().acquire_owned(),
    )
    .await
    {
        Ok(Ok(permit)) => permit,
        _ => {
            state
                .metrics
                .rejected_overload
                .with_label_values(&[endpoint.as_str()])
                .inc();
            state
                .metrics
                .record_unjudged(endpoint.as_str(), "error", started.elapsed());
            warn!(
                endpoint = endpoint.as_str(),
                "overloaded: no evaluation slot within the queue timeout"
            );
            let message = format!(
                "regate is overloaded: {} evaluations in flight and no slot freed within {} ms",
                state.limits.max_in_flight, state.limits.queue_timeout_ms
            );
            let mut response = plain_error(StatusCode::SERVICE_UNAVAILABLE, &message);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
    };
    let span = tracing::info_span!("admission", endpoint = endpoint.as_str());
    let evaluate = {
        let state = state.clone();
        move || {
            let _enter = span.enter();
            state.metrics.in_flight.inc();
            // A panic inside evaluation fails this request, not the server.
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                decide(&state, endpoint, &bytes, started)
            }));
            state.metrics.in_flight.dec();
            drop(permit);
            answer.ok()
        }
    };
    // Off the async worker either way. On the multi-threaded runtime `serve` builds,
    // `block_in_place` evaluates on this thread and hands the worker's other tasks to another
    // thread: no wake-up of a pool thread on the request's path. Elsewhere (a current-thread
    // runtime in a test), the blocking pool.
    let answer = match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(evaluate),
        _ => tokio::task::spawn_blocking(evaluate)
            .instrument(tracing::Span::current())
            .await
            .ok()
            .flatten(),
    };
    match answer {
        Some((status, review)) => (status, axum::Json(review)).into_response(),
        None => {
            // A panic (or, on a current-thread runtime, a blocking task cancelled by shutdown).
            state
                .metrics
                .record_unjudged(endpoint.as_str(), "error", started.elapsed());
            tracing::error!(
                endpoint = endpoint.as_str(),
                panicked = true,
                "evaluation task failed"
            );
            plain_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error while evaluating policies",
            )
        }
    }
}

/// Parses and judges one body: the plain function behind both endpoints.
pub fn decide(state: &AppState, endpoint: Endpoint, bytes: &[u8], started: Instant) -> Answer {
    let review = match Review::from_slice(bytes) {
        Ok(review) => review,
        Err(error) => return invalid_review(state, endpoint, &error, started),
    };
    let set = state.store.current();
    let wants = match endpoint {
        Endpoint::Validate => Wants::VALIDATE,
        Endpoint::Mutate => Wants::MUTATE,
    };
    let decision = judge(&set, &review, wants);
    let response = respond::respond(&review, &decision, endpoint);
    let elapsed = started.elapsed();
    let label = decision_label(&decision, endpoint == Endpoint::Mutate);
    state
        .metrics
        .record_decision(&set, endpoint.as_str(), &review, &decision, label, elapsed);
    let violated: Vec<String> = decision
        .violations
        .iter()
        .map(|v| format!("{}:{}", v.policy, v.action))
        .chain(
            decision
                .failures
                .iter()
                .map(|f| format!("{}:{}", f.policy, f.reason.as_str())),
        )
        .collect();
    let patch_bytes = response.patch.as_ref().map(|p| p.len()).unwrap_or(0);
    info!(
        target: "regate::decision",
        uid = %review.uid(),
        endpoint = endpoint.as_str(),
        kind = %review.kind(),
        namespace = %review.namespace().unwrap_or(""),
        name = %review.name(),
        operation = review.operation(),
        user = %review.user(),
        dry_run = review.request.dry_run,
        environment = %decision.environment,
        decision = label,
        policies = %violated.join(","),
        warnings = decision.warnings().len(),
        patch_bytes,
        duration_us = elapsed.as_micros() as u64,
        "admission decision"
    );
    (StatusCode::OK, response.into_review())
}

fn invalid_review(
    state: &AppState,
    endpoint: Endpoint,
    error: &ReviewError,
    started: Instant,
) -> Answer {
    state
        .metrics
        .record_unjudged(endpoint.as_str(), "invalid", started.elapsed());
    warn!(
        target: "regate::decision",
        endpoint = endpoint.as_str(),
        uid = error.uid().unwrap_or(""),
        decision = "invalid",
        error = %error,
        "invalid admission request"
    );
    let response: AdmissionResponse = respond::invalid(error);
    (StatusCode::BAD_REQUEST, response.into_review())
}

/// A non-AdmissionReview error answer (the body could not even be read).
fn plain_error(status: StatusCode, message: &str) -> Response {
    let response = AdmissionResponse::invalid(message);
    let mut review = response.into_review();
    if let Some(r) = review.response.as_mut() {
        r.result = Status::failure(message, status.canonical_reason().unwrap_or("Error"))
            .with_code(status.as_u16());
    }
    (status, axum::Json(review)).into_response()
}

/// Reads at most `limit` bytes within `timeout_ms`; a larger body is refused without reading it all.
async fn read_body(
    body: Body,
    limit: usize,
    timeout_ms: u64,
) -> Result<Bytes, (StatusCode, String)> {
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(Duration::from_millis(timeout_ms), limited.collect()).await {
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            format!("request body not received within {timeout_ms} ms"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than the limit of {limit} bytes"),
                ))
            } else {
                Err((
                    StatusCode::BAD_REQUEST,
                    format!("cannot read request body: {e}"),
                ))
            }
        }
    }
}
