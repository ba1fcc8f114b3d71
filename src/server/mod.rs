//! `regate serve`: the TLS webhook listener, the metrics listener, hot reload, graceful shutdown.

pub mod app;
pub mod budget;
pub mod connections;
mod in_place;
pub mod inventory;
mod lane;
pub mod namespaces;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};

use crate::config::Limits;
use crate::environment::NamespaceLabels;
use crate::metrics::Metrics;
use crate::policy::reload::{self, BuildError, PolicySources, PolicyStore};
use crate::rollout::shadow::{Shadow, ShadowConfig, ShadowError};
use crate::tls::{self, CertStore, TlsError};
use connections::{AcceptBackoff, ConnectionCaps, LogLimiter, Reason, Rejections, Slots, Ticket};

pub use app::{app, metrics_app, AppState};

/// Everything `serve` needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub sources: PolicySources,
    /// Watch the policy, config and certificate files.
    pub watch: bool,
    /// Follow namespace labels from the cluster (in-cluster or kubeconfig).
    pub watch_namespaces: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot load policies: {0}")]
    Policies(#[from] BuildError),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start shadow evaluation: {0}")]
    Shadow(#[from] ShadowError),
}

/// A server whose listeners are bound, ready to `run`.
pub struct Server {
    pub state: AppState,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    tls: TlsAcceptor,
    config: ServerConfig,
    shutdown_tx: watch::Sender<bool>,
    _watchers: Vec<notify::RecommendedWatcher>,
}

impl Server {
    /// Loads policies and certificates and binds the listeners. Every failure here names what to fix.
    pub async fn new(config: ServerConfig) -> Result<Server, ServerError> {
        Self::with_shadow(config, None).await
    }

    /// [`Server::new`] with a candidate policy set judging requests in the shadow of the
    /// enforced one ([`crate::rollout::shadow`]).
    pub async fn with_shadow(
        config: ServerConfig,
        shadow: Option<ShadowConfig>,
    ) -> Result<Server, ServerError> {
        let metrics = Metrics::new()?;
        let labels = NamespaceLabels::default();
        let sources = config.sources.clone();
        let metrics2 = metrics.clone();
        let labels2 = labels.clone();
        let store =
            tokio::task::spawn_blocking(move || PolicyStore::new(sources, labels2, Some(metrics2)))
                .await
                .map_err(|e| ServerError::Tls(TlsError::Config(e.to_string())))??;
        let store = Arc::new(store);
        let certs = Arc::new(
            CertStore::load(&config.tls_cert, &config.tls_key, Some(metrics.clone()))
                .map_err(TlsError::from)?,
        );
        let tls_config = tls::server_config(certs.clone(), config.client_ca.as_deref())?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let metrics_listener = match config.metrics_listen {
            Some(addr) => match TcpListener::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) => {
                    // Admission matters more than metrics: serve on without them.
                    error!(%addr, error = %e, "cannot bind the metrics port; serving admission without /metrics");
                    None
                }
            },
            None => None,
        };
        let mut watchers = Vec::new();
        if config.watch {
            match reload::watch(store.clone(), Duration::from_millis(150)) {
                Ok(w) => watchers.push(w),
                Err(e) => warn!(error = %e, "cannot watch policy files; use SIGHUP to reload"),
            }
            match tls::watch(certs.clone(), Duration::from_millis(300)) {
                Ok(w) => watchers.push(w),
                Err(e) => warn!(error = %e, "cannot watch certificate files; restart to rotate"),
            }
        }
        if config.watch_namespaces {
            namespaces::spawn(labels.clone());
        }
        let shadow = match shadow {
            Some(shadow) => {
                let registry = metrics.registry.clone();
                let labels = labels.clone();
                let shadow =
                    tokio::task::spawn_blocking(move || Shadow::start(shadow, labels, &registry))
                        .await
                        .map_err(|e| ServerError::Tls(TlsError::Config(e.to_string())))??;
                if config.watch {
                    let sources = shadow.sources().clone();
                    let dir_at_start = sources.dir.exists();
                    match reload::watch_sources(
                        &sources,
                        dir_at_start,
                        Duration::from_millis(150),
                        "regate-shadow-watch",
                        shadow.clone(),
                        |shadow| {
                            let _ = shadow.reload("file change");
                        },
                    ) {
                        Ok(w) => watchers.push(w),
                        Err(e) => warn!(error = %e, "cannot watch the shadow policy files"),
                    }
                }
                Some(shadow)
            }
            None => None,
        };
        if config.watch_namespaces {
            // Gatekeeper data.inventory: only the kinds the enforced or shadow set needs.
            inventory::spawn(store.clone(), shadow.clone());
        }
        let mut state = AppState::new(store, metrics, Some(certs));
        state.shadow = shadow;
        let (shutdown_tx, _) = watch::channel(false);
        Ok(Server {
            state,
            listener,
            metrics_listener,
            tls: TlsAcceptor::from(Arc::new(tls_config)),
            config,
            shutdown_tx,
            _watchers: watchers,
        })
    }

    /// What the webhook configurations send, as the chart configured them (default: the
    /// chart's default rules); the startup log and `/readyz?verbose` name the loaded policies
    /// they leave out.
    pub fn set_webhook_rules(&mut self, rules: crate::admission::webhook_rules::WebhookRules) {
        self.state.webhook_rules = Arc::new(rules);
    }

    /// The bound webhook address (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// A handle that stops the server when sent `true` (tests; `run` also listens for SIGTERM).
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown_tx.clone()
    }

    /// Serves until SIGTERM/SIGINT or the shutdown handle; then stops accepting, drains requests
    /// in flight (bounded by the drain timeout) and returns.
    pub async fn run(self) -> Result<(), ServerError> {
        let Server {
            state,
            listener,
            metrics_listener,
            tls,
            config,
            shutdown_tx,
            _watchers,
        } = self;
        let limits = state.limits.clone();
        let set = state.store.current();
        // The bound addresses (a port of 0 is chosen by the system), and "off" for no metrics.
        let listen = listener.local_addr().unwrap_or(config.listen);
        let metrics_listen = metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        let memory = crate::policy::memory::limits();
        info!(
            listen = %listen,
            metrics_listen = %metrics_listen,
            policies = set.policies.len(),
            embedded_defaults = set.uses_embedded,
            mode = ?set.config.mode,
            default_environment = %set.config.environments.default,
            environment_label = %set.config.environments.label,
            environment_namespaces = %set
                .config
                .environments
                .namespaces
                .iter()
                .map(|(pattern, env)| format!("{pattern}={env}"))
                .collect::<Vec<_>>()
                .join(","),
            exempt_namespaces = %set.config.exempt_namespaces.join(","),
            policy_failure = ?set.config.policy_failure,
            exceptions = set.config.exceptions.len(),
            evaluation_memory_bytes = memory.evaluation.unwrap_or(0),
            memory_ceiling_bytes = memory.ceiling.unwrap_or(0),
            memory_ceiling_with_bodies_bytes = memory.ceiling_with_bodies.unwrap_or(0),
            "regate serving"
        );
        if let Some(shadow) = &state.shadow {
            info!(shadow = %shadow.status(), sample_rate = shadow.sample_rate(), "shadow evaluation on: a candidate policy set judges requests after they are answered");
        }
        for p in &set.policies {
            info!(
                policy = %p.meta.id,
                severity = %p.meta.severity,
                kinds = %p.meta.kinds.join(","),
                development = %p.actions[0],
                staging = %p.actions[1],
                production = %p.actions[2],
                "policy loaded"
            );
        }
        for unsent in crate::admission::webhook_rules::unsent(&set, &state.webhook_rules) {
            warn!(policy = %unsent.policy, webhook = unsent.webhook, "{unsent}");
        }
        spawn_signal_handlers(
            shutdown_tx.clone(),
            state.store.clone(),
            state.shadow.clone(),
        );
        // Background audit (issue 6): idle unless `audit.interval` is configured.
        crate::audit::background::spawn(
            state.store.clone(),
            state.metrics.clone(),
            shutdown_tx.subscribe(),
        );

        // Separate caps for the two ports, both within the open-files limit: a flood of the
        // metrics port cannot take the descriptors the webhook needs.
        let caps = ConnectionCaps::for_process(limits.max_connections);
        if let Some(ml) = metrics_listener {
            tokio::spawn(serve_metrics(
                ml,
                metrics_app(state.clone()),
                limits.clone(),
                caps.metrics,
                Rejections::new("metrics", Some(state.metrics.clone()), caps.metrics),
                shutdown_tx.clone(),
            ));
        }

        let router = app(state.clone());
        let max_connections = caps.webhook.clamp(1, u32::MAX as usize);
        let slots = Slots::new(max_connections);
        let connections = slots.permits().clone();
        let rejections = Rejections::new("webhook", Some(state.metrics.clone()), max_connections);
        let builder = http_builder(&limits);
        let mut shutdown_rx = shutdown_tx.subscribe();
        let handshake_timeout = Duration::from_millis(limits.header_read_timeout_ms);
        loop {
            let stopping = async {
                let _ = shutdown_rx.wait_for(|v| *v).await;
            };
            let Some((stream, peer)) = accept_on(&listener, "webhook", stopping).await else {
                break;
            };
            let Some((permit, ticket)) = slots.admit(peer, &rejections).await else {
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_webhook_connection(
                (stream, peer),
                tls.clone(),
                builder.clone(),
                router.clone(),
                handshake_timeout,
                shutdown_tx.subscribe(),
                (permit, ticket),
                rejections.clone(),
            ));
        }
        drop(listener);
        info!("shutting down: no new connections; draining requests in flight");
        let drain = Duration::from_millis(limits.drain_timeout_ms);
        // Each connection holds a permit until it has drained: all of them back means all done.
        match tokio::time::timeout(drain, connections.acquire_many(max_connections as u32)).await {
            Ok(_) => info!("all connections drained"),
            Err(_) => warn!(
                timeout_ms = limits.drain_timeout_ms,
                "drain timeout reached; closing remaining connections"
            ),
        }
        Ok(())
    }
}

/// The HTTP/1.1 and h2 settings of the webhook port (`regate bench echo-server` serves with them too).
pub fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    // Flow control keeps what one client can push bounded: a connection has at most
    // `H2_MAX_STREAMS` requests open and at most `H2_CONNECTION_WINDOW` bytes sent but not yet
    // taken by a handler; handlers take bodies within the memory budgets (`budget`).
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(H2_MAX_SEND_BUFFER)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    builder
}

/// Requests open at once on one HTTP/2 connection (hyper's default is 200, h2's unlimited). An
/// apiserver opens another connection when it needs more.
pub const H2_MAX_STREAMS: u32 = 32;
/// Bytes a client may send on one stream before the handler takes them.
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;
/// Bytes a client may send on one connection, all streams together, before handlers take them.
pub const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Bytes of one answer queued for sending at a time (answers are capped; patches are the
/// largest).
pub const H2_MAX_SEND_BUFFER: usize = 256 * 1024;
/// Bytes of one request's headers (hyper's default, said explicitly).
pub const H2_MAX_HEADER_LIST: u32 = 16 * 1024;

/// The next connection, or `None` once `stop` completes first (for `regate bench echo-server`).
pub async fn accept_until(
    listener: &TcpListener,
    stop: impl std::future::Future<Output = ()>,
) -> Option<(TcpStream, SocketAddr)> {
    accept_on(listener, "webhook", stop).await
}

/// Accept errors, per listener: one WARN line per [`connections::LOG_INTERVAL`].
static ACCEPT_ERRORS: LogLimiter = LogLimiter::new();

/// The next connection of `listener` (named `name` in logs), or `None` once `stop` completes
/// first. An accept error (out of file descriptors: EMFILE, ENFILE) waits with a growing pause
/// rather than spin (the pending connection stays in the backlog meanwhile), and is logged at
/// WARN at most once per interval with the count since the last line.
pub async fn accept_on(
    listener: &TcpListener,
    name: &'static str,
    stop: impl std::future::Future<Output = ()>,
) -> Option<(TcpStream, SocketAddr)> {
    tokio::pin!(stop);
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => return Some(pair),
                Err(e) => {
                    let wait = backoff.next_wait();
                    if let Some(count) = ACCEPT_ERRORS.record((name, "accept")) {
                        warn!(
                            listener = name,
                            error = %e,
                            count,
                            interval_s = connections::LOG_INTERVAL.as_secs(),
                            pause_ms = wait.as_millis() as u64,
                            "accept failed; pausing before the next accept"
                        );
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = &mut stop => return None,
                    }
                }
            },
            _ = &mut stop => return None,
        }
    }
}

/// The metrics port: plain HTTP with the webhook port's protections. The header read timeout
/// (hyper, HTTP/1.1), the idle timeout (a connection that sends no request is closed) and its
/// own connection cap, so that half-sent requests can neither pile up nor take the file
/// descriptors the webhook port needs.
async fn serve_metrics(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    max_connections: usize,
    rejections: Rejections,
    shutdown: watch::Sender<bool>,
) {
    let slots = Slots::new(max_connections);
    let builder = metrics_http_builder(&limits);
    let idle_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    let mut shutdown_rx = shutdown.subscribe();
    loop {
        let stopping = async {
            let _ = shutdown_rx.wait_for(|v| *v).await;
        };
        let Some((stream, peer)) = accept_on(&listener, "metrics", stopping).await else {
            break;
        };
        let Some(slot) = slots.admit(peer, &rejections).await else {
            drop(stream);
            continue;
        };
        tokio::spawn(serve_http(
            TokioIo::new(stream),
            peer,
            builder.clone(),
            router.clone(),
            idle_timeout,
            shutdown.subscribe(),
            slot,
            rejections.clone(),
        ));
    }
}

/// The metrics port's HTTP settings: HTTP/1.1 with the header read timeout, and h2 (prior
/// knowledge) with few streams: scrapes and probes, nothing more.
fn metrics_http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(8);
    builder
}

/// The TLS handshake of an accepted connection, bounded by `timeout`; `None` when it fails or
/// times out (counted and logged by `rejections` when given, else logged at debug).
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    timeout: Duration,
    rejections: Option<(&Rejections, &Ticket)>,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let evicted = async {
        match rejections {
            Some((_, ticket)) => ticket.signal().notified().await,
            None => std::future::pending().await,
        }
    };
    let accepted = tokio::select! {
        accepted = tokio::time::timeout(timeout, acceptor.accept(stream)) => accepted,
        _ = evicted => {
            if let Some((r, _)) = rejections {
                r.reject(Reason::Evicted, peer, None);
            }
            return None;
        }
    };
    let rejections = rejections.map(|(r, _)| r);
    match accepted {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            match rejections {
                Some(r) => r.reject(Reason::HandshakeFailed, peer, Some(&e)),
                None => debug!(%peer, error = %e, "TLS handshake failed"),
            }
            None
        }
        Err(_) => {
            match rejections {
                Some(r) => r.reject(Reason::HandshakeTimeout, peer, None),
                None => debug!(%peer, "TLS handshake timed out"),
            }
            None
        }
    }
}

/// Serves one accepted connection: the TLS handshake within `handshake_timeout`, then HTTP/1.1
/// or h2 (as ALPN chose) until the client closes it or `watcher`'s shutdown drains it. `guard`
/// (a connection-limit permit) is held until then.
pub async fn serve_connection<G: Send + 'static>(
    (stream, peer): (TcpStream, SocketAddr),
    acceptor: TlsAcceptor,
    builder: auto::Builder<TokioExecutor>,
    router: axum::Router,
    handshake_timeout: Duration,
    watcher: Watcher,
    guard: G,
) {
    let Some(tls_stream) = handshake(stream, peer, &acceptor, handshake_timeout, None).await else {
        return;
    };
    let service = TowerToHyperService::new(router);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        debug!(%peer, error = %e, "connection ended with an error");
    }
    drop(guard);
}

/// [`serve_connection`] for the webhook port: the TLS handshake, then [`serve_http`].
#[allow(clippy::too_many_arguments)]
async fn serve_webhook_connection(
    (stream, peer): (TcpStream, SocketAddr),
    acceptor: TlsAcceptor,
    builder: auto::Builder<TokioExecutor>,
    router: axum::Router,
    handshake_timeout: Duration,
    shutdown: watch::Receiver<bool>,
    slot: (tokio::sync::OwnedSemaphorePermit, Ticket),
    rejections: Rejections,
) {
    let Some(tls_stream) = handshake(
        stream,
        peer,
        &acceptor,
        handshake_timeout,
        Some((&rejections, &slot.1)),
    )
    .await
    else {
        return;
    };
    serve_http(
        TokioIo::new(tls_stream),
        peer,
        builder,
        router,
        handshake_timeout,
        shutdown,
        slot,
        rejections,
    )
    .await;
}

/// Serves HTTP/1.1 or h2 on one connection and closes it when idle: one that carries no request
/// for `idle_timeout` is shut down gracefully (HTTP/2: GOAWAY). hyper does this itself for an
/// HTTP/1.1 connection between requests; without it a connection that never sends its first
/// bytes, or an idle HTTP/2 connection, would hold a connection slot for ever, and a few idle
/// clients could lock everyone else out. A connection closed before its first request (header
/// read timeout, idle timeout) counts as rejected; until then it may be evicted to make room
/// for a new connection (`slot`'s ticket). `shutdown` drains it when the server stops; `slot`'s
/// permit is held until it has ended.
#[allow(clippy::too_many_arguments)]
async fn serve_http<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    builder: auto::Builder<TokioExecutor>,
    router: axum::Router,
    idle_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    (permit, ticket): (tokio::sync::OwnedSemaphorePermit, Ticket),
    rejections: Rejections,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let evict = ticket.signal();
    let activity = Arc::new(Activity::new(Some(ticket)));
    // This connection's share of the buffered request bytes, seen by every request on it.
    let share = budget::ConnectionShare::new();
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(share.clone());
            let busy = activity.begin();
            let router = router.clone();
            async move {
                let response = tower::ServiceExt::oneshot(router, request).await;
                drop(busy);
                response
            }
        })
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    let header_timeout = e
                        .downcast_ref::<hyper::Error>()
                        .is_some_and(hyper::Error::is_timeout);
                    // Counted once: a connection already closing was counted as idle.
                    if header_timeout && !closing {
                        rejections.reject(Reason::HeaderTimeout, peer, None);
                    } else {
                        debug!(%peer, listener = rejections.listener(), error = %e, "connection ended with an error");
                    }
                }
                break;
            }
            _ = shutdown.wait_for(|v| *v), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = activity.idle(idle_timeout), if !closing => {
                if activity.served() {
                    debug!(%peer, listener = rejections.listener(), idle_ms = idle_timeout.as_millis() as u64, "closing an idle connection");
                } else {
                    rejections.reject(Reason::IdleTimeout, peer, None);
                }
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = evict.notified(), if !closing && !activity.served() => {
                // Chosen before its first request began (a request may have begun since: then
                // it is served, and the new connection waits in vain for this slot).
                if !activity.served() {
                    rejections.reject(Reason::Evicted, peer, None);
                    break;
                }
            }
            // A peer that does not let an idle connection's graceful close finish is dropped
            // (a draining server is bounded by the drain timeout instead).
            _ = activity.idle(idle_timeout.saturating_mul(2)), if closing && !*shutdown.borrow() => break,
        }
    }
    drop(permit);
}

/// Requests in flight on one connection, and when it was last busy.
struct Activity {
    started: std::time::Instant,
    in_flight: std::sync::atomic::AtomicUsize,
    /// Whether a request has begun on this connection.
    served: std::sync::atomic::AtomicBool,
    /// The connection's place among the evictable ones, given up at the first request.
    ticket: std::sync::Mutex<Option<Ticket>>,
    /// Milliseconds after `started`.
    last: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new(ticket: Option<Ticket>) -> Activity {
        Activity {
            ticket: std::sync::Mutex::new(ticket),
            started: std::time::Instant::now(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            served: std::sync::atomic::AtomicBool::new(false),
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    fn served(&self) -> bool {
        self.served.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard is dropped.
    fn begin(self: &Arc<Self>) -> Busy {
        if !self.served.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let ticket = self
                .ticket
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            drop(ticket);
        }
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.touch();
        Busy(self.clone())
    }

    /// Resolves once no request has been in flight for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let busy = self.in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0;
            let last = Duration::from_millis(self.last.load(std::sync::atomic::Ordering::Relaxed));
            let idle_for = self.started.elapsed().saturating_sub(last);
            if !busy && idle_for >= timeout {
                return;
            }
            let wait = if busy { timeout } else { timeout - idle_for };
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }
}

struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn spawn_signal_handlers(
    shutdown: watch::Sender<bool>,
    store: Arc<PolicyStore>,
    shadow: Option<Arc<Shadow>>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        tokio::spawn(async move {
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                error!("cannot install signal handlers");
                return;
            };
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = int.recv() => info!("SIGINT received"),
            }
            let _ = shutdown.send(true);
        });
        tokio::spawn(async move {
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                let store = store.clone();
                let shadow = shadow.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    if let Some(shadow) = shadow {
                        let _ = shadow.reload("SIGHUP");
                    }
                    store.reload("SIGHUP")
                })
                .await;
            }
        });
    }
    #[cfg(not(unix))]
    {
        let _ = (store, shadow);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = shutdown.send(true);
        });
    }
}
