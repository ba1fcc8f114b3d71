//! The router and its handlers. Handlers extract, call one plain function, and wrap the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use kube::core::admission::AdmissionResponse;
use kube::core::Status;
use tokio::sync::Semaphore;
use tracing::{info, warn, Instrument};

use crate::admission::decision::judge_within;
use crate::admission::respond::{self, AdmissionAnswer, Endpoint};
use crate::admission::review::{Review, ReviewError};
use crate::admission::shape::{self, Shape};
use crate::admission::webhook_rules::WebhookRules;
use crate::config::Limits;
use crate::metrics::{decision_label, Metrics};
use crate::policy::eval::Wants;
use crate::policy::reload::PolicyStore;
use crate::rollout::shadow::Shadow;
use crate::server::budget::{Budgets, ConnectionShare, Exhausted, Reservation, SMALL_PARSE_BYTES};
use crate::server::connections::{LogLimiter, LOG_INTERVAL};
use crate::server::in_place::{InPlace, IN_PLACE_BODY_BYTES};
use crate::server::lane::{LargeLane, LARGE_BODY_BYTES};
use crate::tls::CertStore;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<PolicyStore>,
    pub metrics: Metrics,
    pub certs: Option<Arc<CertStore>>,
    pub evaluations: Arc<Semaphore>,
    pub limits: Limits,
    /// Memory budgets of request bodies, process-wide.
    pub budgets: Arc<Budgets>,
    /// What the webhook configurations send (`/readyz?verbose` names the policies they leave
    /// out).
    pub webhook_rules: Arc<WebhookRules>,
    /// WARN lines of requests refused before they were judged, rate-limited.
    refusals: Arc<LogLimiter<RefusalKey>>,
    /// Where large requests are parsed and judged.
    large: Arc<LargeLane>,
    /// Whether ordinary requests are judged on the worker that read them.
    in_place: Arc<InPlace>,
    /// The candidate set judging requests after they are answered (`serve --shadow-policies`).
    pub shadow: Option<Arc<Shadow>>,
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
            budgets: Arc::new(Budgets::new(&limits)),
            refusals: refusal_log(),
            large: LargeLane::start(std::thread::available_parallelism().map_or(1, |n| n.get())),
            in_place: Arc::new(InPlace::new(metrics.evaluations_moved.clone())),
            store,
            metrics,
            certs,
            limits,
            webhook_rules: Arc::new(WebhookRules::chart_defaults()),
            shadow: None,
        }
    }
}

/// Why a request was refused before it was judged, for its WARN line: (endpoint, what, status).
type RefusalKey = (&'static str, Refused, u16);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Its body was refused while read: too large, over a memory budget, too slow.
    Body,
    /// No evaluation slot freed within the queue timeout.
    NoSlot,
    /// The parsing budget stayed full for the queue timeout.
    Parsing,
}

impl Refused {
    fn describe(self) -> &'static str {
        match self {
            Refused::Body => "rejected request body",
            Refused::NoSlot => "overloaded: no evaluation slot within the queue timeout",
            Refused::Parsing => "overloaded: the parsing budget stayed full for the queue timeout",
        }
    }
}

/// The log of refusals: a flood of refused requests would otherwise write one WARN line each.
/// Within a Tokio runtime a flush, which ends with the last clone, logs what is held back once
/// the interval has passed, so the tail of a burst is reported too.
fn refusal_log() -> Arc<LogLimiter<RefusalKey>> {
    let log = Arc::new(LogLimiter::new());
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let weak = Arc::downgrade(&log);
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(LOG_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(log) = weak.upgrade() else { break };
                for (key, count) in log.overdue() {
                    warn_refusals(key, count, "");
                }
            }
        });
    }
    log
}

/// Counts a refusal; logs a WARN line when one is due (the first, then one per
/// [`LOG_INTERVAL`] with the count since the last).
fn log_refusal(state: &AppState, key: RefusalKey, last_message: &str) {
    if let Some(count) = state.refusals.record(key) {
        warn_refusals(key, count, last_message);
    }
}

fn warn_refusals((endpoint, refused, status): RefusalKey, count: u64, last_message: &str) {
    warn!(
        endpoint,
        status,
        count,
        interval_s = LOG_INTERVAL.as_secs(),
        last_message,
        "{}",
        refused.describe()
    );
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

async fn validate(State(state): State<AppState>, request: Request) -> Response {
    let (connection, body) = connection_and_body(request);
    admit(&state, Endpoint::Validate, body, connection).await
}

async fn mutate(State(state): State<AppState>, request: Request) -> Response {
    let (connection, body) = connection_and_body(request);
    admit(&state, Endpoint::Mutate, body, connection).await
}

/// The body, and the share of buffered bytes of the connection it came on (the webhook port
/// puts one in every request).
fn connection_and_body(request: Request) -> (Option<ConnectionShare>, Body) {
    let (parts, body) = request.into_parts();
    (parts.extensions.get::<ConnectionShare>().cloned(), body)
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
    state.metrics.record_budgets(
        state.budgets.buffered_in_use(),
        state.budgets.parsing_in_use(),
    );
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
    if let Some(shadow) = &state.shadow {
        // Informational: a broken candidate never makes the server unready.
        checks.push(("shadow", true, shadow.status()));
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
    // Informational, never unready: a policy the webhook does not send is named, so that it is
    // not silently unenforced.
    let unsent = crate::admission::webhook_rules::unsent(&set, &state.webhook_rules);
    checks.push((
        "webhook-rules",
        true,
        if unsent.is_empty() {
            "the webhooks send every kind the loaded policies judge".to_string()
        } else {
            unsent
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" | ")
        },
    ));
    Readiness {
        ready: checks.iter().all(|(_, ok, _)| *ok),
        checks,
    }
}

type Answer = (StatusCode, AdmissionAnswer);

/// Reads the body within the memory budgets, waits for an evaluation slot and for room to parse
/// it, and judges the review off the async workers.
pub async fn admit(
    state: &AppState,
    endpoint: Endpoint,
    body: Body,
    connection: Option<ConnectionShare>,
) -> Response {
    let started = Instant::now();
    // Declared before the body's bytes, so dropped after them on every path out of here.
    let _release = ReleaseWhenDone(large_declared(&body));
    let reservation = state.budgets.reservation(connection);
    let (bytes, reservation) =
        match read_body(body, reservation, &state.limits, &state.metrics).await {
            Ok(read) => read,
            Err(refusal) => {
                let label = if refusal.status == StatusCode::SERVICE_UNAVAILABLE {
                    "error"
                } else {
                    "invalid"
                };
                state
                    .metrics
                    .record_unjudged(endpoint.as_str(), label, started.elapsed());
                log_refusal(
                    state,
                    (endpoint.as_str(), Refused::Body, refusal.status.as_u16()),
                    &refusal.message,
                );
                return refusal.into_response();
            }
        };
    // One pass over the bytes, before anything is built from them. Not on the large lane: a
    // refusal must not wait behind large evaluations for a lane thread.
    let shape = scan_off_the_worker(&bytes);
    let large =
        bytes.len() > LARGE_BODY_BYTES || shape.estimated_parsed_bytes() > SMALL_PARSE_BYTES;
    if let Err(error) = Review::check_shape(&bytes, &shape, state.budgets.max_parsed_bytes) {
        state
            .metrics
            .budget_rejections
            .with_label_values(&["parse_size"])
            .inc();
        let (status, answer) = invalid_review(state, endpoint, &error, started);
        return (status, axum::Json(answer)).into_response();
    }
    let queue_timeout = Duration::from_millis(state.limits.queue_timeout_ms);
    let queued = Instant::now();
    let permit = match tokio::time::timeout(
        queue_timeout,
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
            let message = format!(
                "regate is overloaded: {} evaluations in flight and no slot freed within {} ms",
                state.limits.max_in_flight, state.limits.queue_timeout_ms
            );
            log_refusal(state, (endpoint.as_str(), Refused::NoSlot, 503), &message);
            return retry_later(&message);
        }
    };
    // Large bodies wait, within what is left of the queue timeout, until the ones being parsed
    // leave room for theirs; small ones never wait here.
    let parsing = match state
        .budgets
        .reserve_parsing(&shape, queue_timeout.saturating_sub(queued.elapsed()))
        .await
    {
        Ok(parsing) => parsing,
        Err(exhausted) => {
            drop(permit);
            state
                .metrics
                .budget_rejections
                .with_label_values(&[exhausted.as_str()])
                .inc();
            state
                .metrics
                .record_unjudged(endpoint.as_str(), "error", started.elapsed());
            let message = format!(
                "regate is overloaded: bodies being parsed hold the parsing budget of {} MiB; no \
                 room for this one (about {} MiB parsed, {} bytes) within {} ms",
                state.budgets.parsing_limit / (1024 * 1024),
                shape.estimated_parsed_bytes() / (1024 * 1024),
                bytes.len(),
                state.limits.queue_timeout_ms
            );
            log_refusal(state, (endpoint.as_str(), Refused::Parsing, 503), &message);
            return retry_later(&message);
        }
    };
    let span = tracing::info_span!("admission", endpoint = endpoint.as_str());
    let in_place_size = bytes.len() <= IN_PLACE_BODY_BYTES;
    let evaluate = {
        let state = state.clone();
        move |in_place: bool| {
            let _enter = span.enter();
            state.metrics.in_flight.inc();
            // The evaluation time budget starts here: parsing the body counts.
            let budget_start = Instant::now();
            // A panic inside evaluation fails this request, not the server.
            // The review keeps the body (for its JSON, built only if asked for) until judged.
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let judged = Judged {
                    started,
                    budget_start,
                    in_place,
                };
                decide_shaped(&state, endpoint, bytes, &shape, judged)
            }));
            state.metrics.in_flight.dec();
            drop(reservation);
            drop(parsing);
            drop(permit);
            if large {
                // What this request parsed is free now, but held by this thread's heap until it
                // allocates again, and purged only after a delay: give it back at once.
                alloc_release::release_freed_memory();
            }
            answer.ok()
        }
    };
    // A large request on the large lane. On the multi-threaded runtime `serve` builds, an
    // ordinary one on this worker: judged here within an allowance (`server::in_place`), parsed
    // here when it is small, else on this thread with the worker's other tasks handed to another
    // thread (`block_in_place`): no wake-up of a pool thread on the request's path either way.
    // Elsewhere (a current-thread runtime in a test), the blocking pool.
    let answer = if large {
        state.large.run(move || evaluate(false)).await.flatten()
    } else {
        match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread if in_place_size => evaluate(true),
            tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(move || evaluate(false))
            }
            _ => tokio::task::spawn_blocking(move || evaluate(false))
                .instrument(tracing::Span::current())
                .await
                .ok()
                .flatten(),
        }
    };
    match answer {
        Some((status, review)) => (status, axum::Json(review)).into_response(),
        None => evaluation_failed(state, endpoint, started),
    }
}

/// [`shape::scan`]; for a large body (milliseconds of CPU per MiB) with the worker's other tasks
/// handed to another thread first (`block_in_place`), so that the ordinary reviews queued on
/// this worker are not held up by the scan of a hostile body.
fn scan_off_the_worker(bytes: &[u8]) -> Shape {
    let on_multi_thread_runtime = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if bytes.len() > LARGE_BODY_BYTES && on_multi_thread_runtime {
        tokio::task::block_in_place(|| shape::scan(bytes))
    } else {
        shape::scan(bytes)
    }
}

/// A panic while scanning or judging (or, on a current-thread runtime, a blocking task
/// cancelled by shutdown): 500, logged.
fn evaluation_failed(state: &AppState, endpoint: Endpoint, started: Instant) -> Response {
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

/// Whether a body declares more than [`LARGE_BODY_BYTES`], or no length at all.
fn large_declared(body: &Body) -> bool {
    use axum::body::HttpBody as _;
    body.size_hint()
        .upper()
        .is_none_or(|upper| upper > LARGE_BODY_BYTES as u64)
}

/// Once a large body is dropped (judged or refused), gives what this thread freed back to the
/// OS. mimalloc keeps a thread's free pages in its heap, and a block freed by another thread
/// (the body judged on the lane) waits for its owner to collect: a worker that then serves only
/// small requests, or nothing, would keep the memory of the last large bodies it read. A few
/// tens of microseconds, paid by large bodies only.
struct ReleaseWhenDone(bool);

impl Drop for ReleaseWhenDone {
    fn drop(&mut self) {
        if self.0 {
            alloc_release::release_freed_memory();
        }
    }
}

/// A 503 that asks the client to retry in a second.
fn retry_later(message: &str) -> Response {
    let mut response = plain_error(StatusCode::SERVICE_UNAVAILABLE, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Parses and judges one body: the plain function behind both endpoints. The evaluation time
/// budget counts from `started`.
pub fn decide(state: &AppState, endpoint: Endpoint, bytes: &[u8], started: Instant) -> Answer {
    let shape = shape::scan(bytes);
    let judged = Judged {
        started,
        budget_start: started,
        in_place: false,
    };
    decide_shaped(state, endpoint, bytes.to_vec(), &shape, judged)
}

/// When and where a request is judged.
#[derive(Clone, Copy)]
struct Judged {
    /// When the request arrived (for its duration metric).
    started: Instant,
    /// When its evaluation time budget started.
    budget_start: Instant,
    /// On the async worker that read it, within an allowance (`server::in_place`).
    in_place: bool,
}

/// [`decide`] for a body already scanned: refused when its shape is too large, otherwise parsed
/// and judged as `judged` says.
fn decide_shaped(
    state: &AppState,
    endpoint: Endpoint,
    bytes: Vec<u8>,
    shape: &Shape,
    judged: Judged,
) -> Answer {
    let Judged {
        started,
        budget_start,
        in_place,
    } = judged;
    let review = match Review::check_shape(&bytes, shape, state.budgets.max_parsed_bytes)
        .and_then(|()| Review::from_body(bytes))
    {
        Ok(review) => review,
        Err(error) => return invalid_review(state, endpoint, &error, started),
    };
    let set = state.store.current();
    let wants = match endpoint {
        Endpoint::Validate => Wants::VALIDATE,
        Endpoint::Mutate => Wants::MUTATE,
    };
    let judge = || judge_within(&set, &review, wants, budget_start);
    let decision = if in_place {
        state.in_place.judge(review.kind(), judge)
    } else {
        judge()
    };
    if shape.estimated_parsed_bytes() > SMALL_PARSE_BYTES {
        // The engines on this thread would otherwise keep this input until their next request.
        crate::policy::bytecode::release_thread_input();
    }
    let response = respond::respond(&review, &decision, endpoint);
    let elapsed = started.elapsed();
    let label = decision_label(&decision, endpoint == Endpoint::Mutate);
    state
        .metrics
        .record_decision(&set, endpoint.as_str(), &review, &decision, label, elapsed);
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
        policies = %violated_policies(&decision),
        warnings = decision.warnings().len(),
        patch_bytes,
        duration_us = elapsed.as_micros() as u64,
        "admission decision"
    );
    let answer = respond::answer(response);
    if let Some(shadow) = &state.shadow {
        // After the answer is built, with the review it no longer needs: never waits.
        shadow.submit(review, wants, &decision);
    }
    (StatusCode::OK, answer)
}

/// `policy:action` and `policy:failure` pairs of a decision for its log line, each once (10,000
/// containers denied by one policy make one entry), at most [`respond::MAX_MESSAGE_PARTS`].
fn violated_policies(decision: &crate::admission::decision::Decision) -> String {
    let mut seen: Vec<String> = Vec::new();
    let pairs = decision
        .violations
        .iter()
        .map(|v| format!("{}:{}", v.policy, v.action))
        .chain(
            decision
                .failures
                .iter()
                .map(|f| format!("{}:{}", f.policy, f.reason.as_str())),
        );
    let mut more = 0usize;
    for pair in pairs {
        if seen.contains(&pair) {
            continue;
        }
        if seen.len() < respond::MAX_MESSAGE_PARTS {
            seen.push(pair);
        } else {
            more += 1;
        }
    }
    let mut text = seen.join(",");
    if more > 0 {
        text.push_str(&format!(",… {more} more"));
    }
    text
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
    let status = match error {
        ReviewError::TooLargeToParse { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, respond::answer(response))
}

/// An error answer to a body that could not even be read or queued: an AdmissionReview with
/// the status in `status.code`.
fn plain_error(status: StatusCode, message: &str) -> Response {
    let mut response = AdmissionResponse::invalid(message);
    response.result = Status::failure(message, status.canonical_reason().unwrap_or("Error"))
        .with_code(status.as_u16());
    (status, axum::Json(respond::answer(response))).into_response()
}

/// Why a body was not read whole.
struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: String) -> Refusal {
        Refusal { status, message }
    }

    fn into_response(self) -> Response {
        match self.status {
            StatusCode::SERVICE_UNAVAILABLE => retry_later(&self.message),
            StatusCode::PAYLOAD_TOO_LARGE => {
                // The rest of the body is never read: the connection cannot carry another
                // HTTP/1.1 request (hyper closes it; HTTP/2 resets only the stream).
                let mut response = plain_error(self.status, &self.message);
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                response
            }
            status => plain_error(status, &self.message),
        }
    }
}

/// Reads a body of at most `limits.maxBodyBytes` within `limits.bodyReadTimeoutMs`, reserving
/// its bytes from the memory budgets as they arrive (all at once when `Content-Length` says how
/// many). A declared length over the limit is refused (413) before a byte of the body is read,
/// so a client waiting for an early answer gets it at once; a body that exceeds a budget is
/// refused (503, `Retry-After`) and dropped.
async fn read_body(
    body: Body,
    mut reservation: Reservation,
    limits: &Limits,
    metrics: &Metrics,
) -> Result<(Vec<u8>, Reservation), Refusal> {
    use axum::body::HttpBody as _;
    let limit = limits.max_body_bytes;
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {limit} bytes"),
        )
    };
    let exhausted = |exhausted: Exhausted, wanted: usize| {
        metrics
            .budget_rejections
            .with_label_values(&[exhausted.as_str()])
            .inc();
        let which = match exhausted {
            Exhausted::Connection => "this connection's share of the request body budget",
            _ => "the request body budget",
        };
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("regate is overloaded: {which} has no room for {wanted} more bytes"),
        )
    };
    let hint = body.size_hint();
    let declared = usize::try_from(hint.lower()).unwrap_or(usize::MAX);
    if declared > limit {
        return Err(too_large());
    }
    reservation
        .grow(declared)
        .map_err(|e| exhausted(e, declared))?;
    let mut buffer: Vec<u8> = Vec::with_capacity(declared);
    let timeout_ms = limits.body_read_timeout_ms;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(timeout_ms);
    let mut body = body;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(Refusal::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("request body not received within {timeout_ms} ms"),
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read request body: {e}"),
                ))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let needed = buffer.len().saturating_add(data.len());
        if needed > limit {
            return Err(too_large());
        }
        if needed > buffer.capacity() {
            // Grown by doubling (never past the limit) so that the budget covers the capacity
            // actually allocated, not only the bytes received.
            let capacity = needed.max(buffer.capacity().saturating_mul(2)).min(limit);
            let more = capacity.saturating_sub(reservation.bytes());
            reservation.grow(more).map_err(|e| exhausted(e, more))?;
            buffer.reserve_exact(capacity - buffer.len());
        }
        buffer.extend_from_slice(&data);
    }
    Ok((buffer, reservation))
}
