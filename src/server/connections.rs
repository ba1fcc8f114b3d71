//! Connection bookkeeping shared by the webhook and metrics listeners: the file-descriptor
//! budget each may use, and rejections counted in a metric and logged at WARN, rate-limited.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use crate::metrics::Metrics;

/// At most one WARN line per listener and reason this often; the line carries the count since
/// the last one. A flood of 1,000 refused connections a second writes one line per 10 s.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// File descriptors kept for everything but connections: stdio, policy, config and certificate
/// files and their watchers, the Kubernetes client, the runtime's own.
pub const RESERVED_FDS: u64 = 64;

/// Connections the metrics port serves at once: Prometheus, kubelet probes and a person with
/// curl need a handful. Never more than an eighth of the descriptors left after the reserve.
pub const METRICS_MAX_CONNECTIONS: usize = 64;

/// Connections each listener may hold open: separate caps, so that the metrics port cannot take
/// the descriptors the webhook port needs (and the reverse), both under the process's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCaps {
    pub webhook: usize,
    pub metrics: usize,
    /// The soft RLIMIT_NOFILE the caps were derived from (`None`: unknown or unlimited).
    pub fd_limit: Option<u64>,
}

impl ConnectionCaps {
    /// Splits `fd_limit` descriptors: [`RESERVED_FDS`] kept back, the metrics port's share,
    /// and the webhook port's (never more than `webhook_configured`, `limits.maxConnections`).
    pub fn derive(webhook_configured: usize, fd_limit: Option<u64>) -> ConnectionCaps {
        let webhook_configured = webhook_configured.max(1);
        let Some(limit) = fd_limit else {
            return ConnectionCaps {
                webhook: webhook_configured,
                metrics: METRICS_MAX_CONNECTIONS,
                fd_limit,
            };
        };
        let available = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
        let metrics = (available / 8).clamp(1, METRICS_MAX_CONNECTIONS);
        let webhook = available
            .saturating_sub(metrics)
            .clamp(1, webhook_configured);
        ConnectionCaps {
            webhook,
            metrics,
            fd_limit,
        }
    }

    /// Raises the soft RLIMIT_NOFILE to the hard limit (a container's default soft limit is
    /// often far below it), then derives the caps from it; logs what it decided.
    pub fn for_process(webhook_configured: usize) -> ConnectionCaps {
        let caps = ConnectionCaps::derive(webhook_configured, raise_fd_limit());
        if caps.webhook < webhook_configured {
            warn!(
                max_connections = webhook_configured,
                webhook_connections = caps.webhook,
                metrics_connections = caps.metrics,
                fd_limit = caps.fd_limit,
                "the open-files limit is too low for limits.maxConnections; the webhook port accepts fewer connections (raise RLIMIT_NOFILE)"
            );
        } else {
            info!(
                webhook_connections = caps.webhook,
                metrics_connections = caps.metrics,
                fd_limit = caps.fd_limit,
                "connection limits"
            );
        }
        caps
    }
}

/// The soft open-files limit after raising it to the hard limit; `None` when unlimited or unknown.
#[cfg(target_os = "linux")]
fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum,
            Err(e) => {
                warn!(error = %e, soft = limit.current, hard = limit.maximum, "cannot raise the open-files limit to its hard limit")
            }
        }
    }
    limit.current
}

#[cfg(not(target_os = "linux"))]
fn raise_fd_limit() -> Option<u64> {
    None
}

/// Per-key log windows: whether a line is due, and how many events it stands for.
#[derive(Debug)]
pub struct LogLimiter<K = (&'static str, &'static str)> {
    windows: Mutex<Vec<(K, Window)>>,
}

#[derive(Debug)]
struct Window {
    last: Instant,
    /// Events since the last line, not logged yet.
    pending: u64,
}

impl<K: Copy + PartialEq> Default for LogLimiter<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + PartialEq> LogLimiter<K> {
    pub const fn new() -> LogLimiter<K> {
        LogLimiter {
            windows: Mutex::new(Vec::new()),
        }
    }

    /// Keys with events not logged yet whose window has passed, with their counts (the windows
    /// restart): what a periodic flush logs, so that the tail of a burst is reported too.
    pub fn overdue(&self) -> Vec<(K, u64)> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = Vec::new();
        for (key, window) in windows.iter_mut() {
            if window.pending > 0 && now.duration_since(window.last) >= LOG_INTERVAL {
                due.push((*key, window.pending));
                window.last = now;
                window.pending = 0;
            }
        }
        due
    }

    /// Records one event for `key`. `Some(n)` when a line is due now: it stands for `n` events
    /// (this one and those since the last line); `None` while the key's window is still open.
    pub fn record(&self, key: K) -> Option<u64> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        match windows.iter_mut().find(|(k, _)| *k == key) {
            None => {
                windows.push((
                    key,
                    Window {
                        last: now,
                        pending: 0,
                    },
                ));
                Some(1)
            }
            Some((_, window)) => {
                window.pending += 1;
                if now.duration_since(window.last) < LOG_INTERVAL {
                    return None;
                }
                let count = window.pending;
                window.last = now;
                window.pending = 0;
                Some(count)
            }
        }
    }
}

/// Why a connection was closed before it carried a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The listener's connection cap was reached: closed at once.
    ConnectionLimit,
    /// The TLS handshake did not finish within the header read timeout.
    HandshakeTimeout,
    /// The TLS handshake failed (not TLS, no common version or suite, no client certificate).
    HandshakeFailed,
    /// HTTP/1.1 request headers did not arrive whole within the header read timeout.
    HeaderTimeout,
    /// No request at all within the idle timeout.
    IdleTimeout,
    /// Closed, before it sent a request, to make room for a new connection at the cap.
    Evicted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ConnectionLimit => "connection_limit",
            Reason::HandshakeTimeout => "handshake_timeout",
            Reason::HandshakeFailed => "handshake_failed",
            Reason::HeaderTimeout => "header_timeout",
            Reason::IdleTimeout => "idle_timeout",
            Reason::Evicted => "evicted",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Reason::ConnectionLimit => "connection limit reached; closing new connections",
            Reason::HandshakeTimeout => "TLS handshakes timed out",
            Reason::HandshakeFailed => "TLS handshakes failed",
            Reason::HeaderTimeout => "request headers not received within the header read timeout",
            Reason::IdleTimeout => "connections sent no request within the idle timeout",
            Reason::Evicted => {
                "connection limit reached; closed the oldest connection that had sent no request"
            }
        }
    }
}

/// Counts rejected connections of one listener (`regate_connections_rejected_total`) and logs
/// them at WARN, at most one line per reason per [`LOG_INTERVAL`]; events held back are logged
/// by a flush once the interval has passed.
#[derive(Clone)]
pub struct Rejections {
    listener: &'static str,
    metrics: Option<Metrics>,
    log: Arc<LogLimiter<Reason>>,
    /// Added to log lines: the listener's connection cap.
    cap: usize,
}

impl Rejections {
    /// Within a Tokio runtime, also starts the flush, which ends with the last clone.
    pub fn new(listener: &'static str, metrics: Option<Metrics>, cap: usize) -> Rejections {
        let log = Arc::new(LogLimiter::new());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let log = Arc::downgrade(&log);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(LOG_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(log) = log.upgrade() else { break };
                    for (reason, count) in log.overdue() {
                        log_rejections(listener, reason, count, cap, None, "");
                    }
                }
            });
        }
        Rejections {
            listener,
            metrics,
            log,
            cap,
        }
    }

    pub fn listener(&self) -> &'static str {
        self.listener
    }

    pub fn reject(&self, reason: Reason, peer: SocketAddr, error: Option<&dyn std::fmt::Display>) {
        if let Some(m) = &self.metrics {
            m.connections_rejected
                .with_label_values(&[self.listener, reason.as_str()])
                .inc();
        }
        let Some(count) = self.log.record(reason) else {
            return;
        };
        let error = error.map(|e| e.to_string()).unwrap_or_default();
        log_rejections(self.listener, reason, count, self.cap, Some(peer), &error);
    }
}

/// One WARN line for `count` rejections (since the last line for this listener and reason).
fn log_rejections(
    listener: &'static str,
    reason: Reason,
    count: u64,
    cap: usize,
    last_peer: Option<SocketAddr>,
    last_error: &str,
) {
    warn!(
        listener,
        reason = reason.as_str(),
        count,
        interval_s = LOG_INTERVAL.as_secs(),
        max_connections = cap,
        last_peer = last_peer.map(|p| p.to_string()).unwrap_or_default(),
        last_error,
        "connections rejected: {}",
        reason.describe()
    );
}

/// How long a new connection at the cap waits for the slot of the connection evicted for it.
const EVICTION_WAIT: Duration = Duration::from_millis(250);

/// The connection slots of one listener: a cap, and the connections that may be evicted to make
/// room for a new one — those that have not begun a request yet (in the TLS handshake, or
/// connected and silent), oldest first. Connections that serve requests are never evicted. A
/// flood of idle connections then cannot lock fresh clients out: each new connection at the cap
/// closes the oldest silent one instead of being refused.
pub struct Slots {
    permits: Arc<Semaphore>,
    silent: Arc<Silent>,
}

#[derive(Default)]
struct Silent {
    /// Registration order (oldest first) to the connection's eviction signal.
    connections: Mutex<BTreeMap<u64, Arc<Notify>>>,
    next: AtomicU64,
}

impl Silent {
    fn remove(&self, id: u64) {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }
}

/// A connection's place among the evictable ones; dropping it (at the first request, or when
/// the connection ends) makes the connection unevictable.
pub struct Ticket {
    id: u64,
    signal: Arc<Notify>,
    silent: Arc<Silent>,
}

impl Ticket {
    /// The eviction signal: completes once this connection was chosen to make room.
    pub fn signal(&self) -> Arc<Notify> {
        self.signal.clone()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.silent.remove(self.id);
    }
}

impl Slots {
    pub fn new(max_connections: usize) -> Slots {
        Slots {
            permits: Arc::new(Semaphore::new(max_connections.clamp(1, u32::MAX as usize))),
            silent: Arc::new(Silent::default()),
        }
    }

    pub fn permits(&self) -> &Arc<Semaphore> {
        &self.permits
    }

    /// A slot for a new connection from `peer`: a free one, or the one of the oldest silent
    /// connection, evicted for it. `None` (counted, logged) when neither is to be had.
    pub async fn admit(
        &self,
        peer: SocketAddr,
        rejections: &Rejections,
    ) -> Option<(OwnedSemaphorePermit, Ticket)> {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if self.evict_oldest() => {
                // The evicted connection's task drops it (and its permit) as soon as it runs;
                // only this loop takes permits, so the freed one is ours.
                tokio::time::timeout(EVICTION_WAIT, self.permits.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            rejections.reject(Reason::ConnectionLimit, peer, None);
            return None;
        };
        Some((permit, self.register()))
    }

    fn register(&self) -> Ticket {
        let id = self.silent.next.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(Notify::new());
        self.silent
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, signal.clone());
        Ticket {
            id,
            signal,
            silent: self.silent.clone(),
        }
    }

    /// Signals the oldest silent connection to close; false when there is none.
    fn evict_oldest(&self) -> bool {
        let oldest = self
            .silent
            .connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_first();
        match oldest {
            // notify_one keeps the signal for a task that is not waiting on it right now.
            Some((_, signal)) => {
                signal.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Waits after a failed `accept` (out of file descriptors and the like): doubling from 10 ms to
/// 1 s while failures repeat, so the accept loop neither spins nor stays asleep once it recovers.
#[derive(Debug)]
pub struct AcceptBackoff {
    next: Duration,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff { next: Self::FIRST }
    }
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// The pause for this failure.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_keep_the_metrics_share_apart_and_within_the_limit() {
        let caps = ConnectionCaps::derive(1024, Some(256));
        assert_eq!(caps.metrics, 24);
        assert_eq!(caps.webhook, 168);
        assert!(caps.webhook + caps.metrics + RESERVED_FDS as usize <= 256);
        let roomy = ConnectionCaps::derive(1024, Some(1 << 20));
        assert_eq!(
            (roomy.webhook, roomy.metrics),
            (1024, METRICS_MAX_CONNECTIONS)
        );
        let tiny = ConnectionCaps::derive(1024, Some(10));
        assert_eq!((tiny.webhook, tiny.metrics), (1, 1));
        assert_eq!(ConnectionCaps::derive(0, None).webhook, 1);
    }

    #[test]
    fn the_log_limiter_logs_the_first_event_then_counts() {
        let limiter: LogLimiter = LogLimiter::new();
        assert_eq!(limiter.record(("webhook", "connection_limit")), Some(1));
        assert_eq!(limiter.record(("webhook", "connection_limit")), None);
        assert_eq!(limiter.record(("webhook", "connection_limit")), None);
        // Another reason has its own window.
        assert_eq!(limiter.record(("webhook", "handshake_timeout")), Some(1));
        assert_eq!(limiter.record(("metrics", "connection_limit")), Some(1));
        // Within the window nothing is overdue yet; the two held back wait for the flush.
        assert!(limiter.overdue().is_empty());
    }

    #[tokio::test]
    async fn a_full_listener_evicts_its_oldest_silent_connection() {
        let slots = Slots::new(2);
        let rejections = Rejections::new("webhook", None, 2);
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (p1, t1) = slots.admit(peer, &rejections).await.unwrap();
        let (p2, t2) = slots.admit(peer, &rejections).await.unwrap();
        // The second one begins a request: no longer evictable.
        drop(t2);
        let signal = t1.signal();
        let evicted = tokio::spawn(async move {
            signal.notified().await;
            drop((p1, t1));
        });
        let third = slots.admit(peer, &rejections).await;
        assert!(third.is_some(), "the oldest silent connection made room");
        assert!(evicted.await.is_ok());
        // Now every slot is held by a connection that is busy or this new one (silent):
        let (p3, t3) = third.unwrap();
        drop(t3);
        assert!(
            slots.admit(peer, &rejections).await.is_none(),
            "nothing to evict: refused"
        );
        drop((p2, p3));
    }

    #[test]
    fn accept_backoff_doubles_to_a_ceiling_and_resets() {
        let mut backoff = AcceptBackoff::default();
        let waits: Vec<u64> = (0..9)
            .map(|_| backoff.next_wait().as_millis() as u64)
            .collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(10));
    }
}
