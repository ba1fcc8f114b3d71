//! The Prometheus registry and instruments. Label values come only from bounded sets: endpoints,
//! operations, decisions, kinds and policy ids of the loaded set — never object names, namespaces
//! or messages.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::admission::decision::Decision;
use crate::admission::review::Review;
use crate::policy::set::PolicySet;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub admission_requests: IntCounterVec,
    pub admission_duration: HistogramVec,
    pub policy_violations: IntCounterVec,
    pub policy_evaluation_duration: HistogramVec,
    pub policy_errors: IntCounterVec,
    pub policies_loaded: IntGauge,
    pub policy_reloads: IntCounterVec,
    pub policy_last_reload: Gauge,
    pub tls_not_after: Gauge,
    pub build_info: IntCounterVec,
    pub audit_violations: GaugeVec,
    pub audit_duration: Gauge,
    pub audit_objects: IntGauge,
    pub in_flight: IntGauge,
    /// Judgements stopped on the async worker that read their request, and made again off it
    /// (`server::in_place`).
    pub evaluations_moved: IntCounter,
    pub rejected_overload: IntCounterVec,
    pub certificate_reload_rejected: IntCounterVec,
    pub connections_rejected: IntCounterVec,
    /// Requests refused by a memory budget, by reason (buffered, connection, parsing, parse_size).
    pub budget_rejections: IntCounterVec,
    /// Bytes held in each memory budget (buffered, parsing), set when /metrics is read.
    pub budget_bytes: IntGaugeVec,
    /// Bytes the process holds through its allocator, set when /metrics is read.
    pub memory_held: IntGauge,
    /// The evaluation memory ceiling in force, set when /metrics is read.
    pub memory_ceiling: IntGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Buckets from 100 µs to 10 s.
fn latency_buckets() -> Vec<f64> {
    vec![
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ]
}

/// Kinds outside the loaded set are reported as "other", so a client cannot grow the label set.
pub const OTHER: &str = "other";

/// The `reason` values of `regate_certificate_reload_rejected_total` (see `CertError::reason`).
const CERTIFICATE_REJECTION_REASONS: [&str; 5] = [
    "expired",
    "not_yet_valid",
    "key_mismatch",
    "invalid",
    "unreadable",
];

/// The `listener` and `reason` values of `regate_connections_rejected_total`, published at 0 so
/// that a rate() over them works from the first scrape.
const CONNECTION_REJECTION_REASONS: [(&str, &str); 8] = [
    ("webhook", "connection_limit"),
    ("webhook", "handshake_timeout"),
    ("webhook", "handshake_failed"),
    ("webhook", "header_timeout"),
    ("webhook", "idle_timeout"),
    ("metrics", "connection_limit"),
    ("metrics", "header_timeout"),
    ("metrics", "idle_timeout"),
];

/// Kinds of the built-in Kubernetes APIs: label values whether or not a policy names them. Any
/// other kind is a label value only when a loaded policy names it; a policy for every kind
/// (`kinds: ["*"]`) does not let a client invent label values.
const BUILT_IN_KINDS: &[&str] = &[
    "APIService",
    "Binding",
    "CSIDriver",
    "CSINode",
    "CSIStorageCapacity",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "ComponentStatus",
    "ConfigMap",
    "ControllerRevision",
    "CronJob",
    "CustomResourceDefinition",
    "DaemonSet",
    "Deployment",
    "EndpointSlice",
    "Endpoints",
    "Event",
    "FlowSchema",
    "HorizontalPodAutoscaler",
    "Ingress",
    "IngressClass",
    "Job",
    "Lease",
    "LimitRange",
    "MutatingWebhookConfiguration",
    "Namespace",
    "NetworkPolicy",
    "Node",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Pod",
    "PodDisruptionBudget",
    "PodTemplate",
    "PriorityClass",
    "PriorityLevelConfiguration",
    "ReplicaSet",
    "ReplicationController",
    "ResourceQuota",
    "Role",
    "RoleBinding",
    "RuntimeClass",
    "Secret",
    "Service",
    "ServiceAccount",
    "StatefulSet",
    "StorageClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
];

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let admission_requests = IntCounterVec::new(
            Opts::new(
                "regate_admission_requests_total",
                "Admission requests answered, by endpoint, kind, operation and decision.",
            ),
            &["endpoint", "kind", "operation", "decision"],
        )?;
        let admission_duration = HistogramVec::new(
            HistogramOpts::new(
                "regate_admission_duration_seconds",
                "Time from a request's body being read to its answer, by endpoint.",
            )
            .buckets(latency_buckets()),
            &["endpoint"],
        )?;
        let policy_violations = IntCounterVec::new(
            Opts::new(
                "regate_policy_violations_total",
                "Policy violations found, by policy, effective action and severity.",
            ),
            &["policy", "action", "severity"],
        )?;
        let policy_evaluation_duration = HistogramVec::new(
            HistogramOpts::new(
                "regate_policy_evaluation_duration_seconds",
                "Time to evaluate one policy on one request.",
            )
            .buckets(latency_buckets()),
            &["policy"],
        )?;
        let policy_errors = IntCounterVec::new(
            Opts::new(
                "regate_policy_errors_total",
                "Policy evaluations that failed, by policy and reason (runtime_error, time_limit, memory_limit, invalid_output).",
            ),
            &["policy", "reason"],
        )?;
        let policies_loaded =
            IntGauge::new("regate_policies_loaded", "Policies in the active set.")?;
        let policy_reloads = IntCounterVec::new(
            Opts::new(
                "regate_policy_reload_total",
                "Policy and config reloads, by result (success, failure).",
            ),
            &["result"],
        )?;
        let policy_last_reload = Gauge::new(
            "regate_policy_last_reload_timestamp_seconds",
            "Unix time of the last successful policy load.",
        )?;
        let tls_not_after = Gauge::new(
            "regate_tls_certificate_not_after_timestamp_seconds",
            "Unix time at which the serving certificate expires.",
        )?;
        let build_info = IntCounterVec::new(
            Opts::new(
                "regate_build_info",
                "Always 1; the version label says which build runs.",
            ),
            &["version"],
        )?;
        let audit_violations = GaugeVec::new(
            Opts::new(
                "regate_audit_violations",
                "Violations found by the last background audit.",
            ),
            &["policy", "severity", "namespace"],
        )?;
        let audit_duration = Gauge::new(
            "regate_audit_last_duration_seconds",
            "How long the last background audit took.",
        )?;
        let audit_objects = IntGauge::new(
            "regate_audit_last_objects",
            "Objects judged by the last background audit.",
        )?;
        let in_flight = IntGauge::new(
            "regate_evaluations_in_flight",
            "Policy evaluations running now.",
        )?;
        let rejected_overload = IntCounterVec::new(
            Opts::new(
                "regate_overload_rejections_total",
                "Requests answered with an error because no evaluation slot freed up in time.",
            ),
            &["endpoint"],
        )?;
        let certificate_reload_rejected = IntCounterVec::new(
            Opts::new(
                "regate_certificate_reload_rejected_total",
                "New serving certificates refused at reload (the current one kept), by reason.",
            ),
            &["reason"],
        )?;
        let connections_rejected = IntCounterVec::new(
            Opts::new(
                "regate_connections_rejected_total",
                "Connections closed before serving a request, by listener (webhook, metrics) and reason.",
            ),
            &["listener", "reason"],
        )?;
        registry.register(Box::new(certificate_reload_rejected.clone()))?;
        registry.register(Box::new(connections_rejected.clone()))?;
        registry.register(Box::new(admission_requests.clone()))?;
        registry.register(Box::new(admission_duration.clone()))?;
        registry.register(Box::new(policy_violations.clone()))?;
        registry.register(Box::new(policy_evaluation_duration.clone()))?;
        registry.register(Box::new(policy_errors.clone()))?;
        registry.register(Box::new(policies_loaded.clone()))?;
        registry.register(Box::new(policy_reloads.clone()))?;
        registry.register(Box::new(policy_last_reload.clone()))?;
        registry.register(Box::new(tls_not_after.clone()))?;
        registry.register(Box::new(build_info.clone()))?;
        registry.register(Box::new(audit_violations.clone()))?;
        registry.register(Box::new(audit_duration.clone()))?;
        registry.register(Box::new(audit_objects.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        let evaluations_moved = IntCounter::new(
            "regate_evaluations_moved_total",
            "Judgements that needed longer than a request may hold the worker that read it: \
             made again from the start on a thread of their own.",
        )?;
        registry.register(Box::new(evaluations_moved.clone()))?;
        registry.register(Box::new(rejected_overload.clone()))?;
        let budget_rejections = IntCounterVec::new(
            Opts::new(
                "regate_memory_budget_rejections_total",
                "Requests refused by a memory budget: buffered (all request bodies), connection \
                 (one connection's share), parsing (bodies being parsed), parse_size (a body too large to parse).",
            ),
            &["reason"],
        )?;
        let budget_bytes = IntGaugeVec::new(
            Opts::new(
                "regate_memory_budget_bytes",
                "Bytes held in a memory budget: buffered (request bodies being read or judged), \
                 parsing (estimated parsed size of large bodies being judged).",
            ),
            &["budget"],
        )?;
        registry.register(Box::new(budget_rejections.clone()))?;
        registry.register(Box::new(budget_bytes.clone()))?;
        let memory_held = IntGauge::new(
            "regate_memory_held_bytes",
            "Bytes the process holds through its allocator, as the evaluation memory ceiling counts them.",
        )?;
        let memory_ceiling = IntGauge::new(
            "regate_memory_ceiling_bytes",
            "Evaluations fail for memory while the process holds more than this: the ceiling set \
             plus the request bodies the memory budgets hold (0: no ceiling).",
        )?;
        registry.register(Box::new(memory_held.clone()))?;
        registry.register(Box::new(memory_ceiling.clone()))?;
        for reason in ["buffered", "connection", "parsing", "parse_size"] {
            budget_rejections.with_label_values(&[reason]);
        }
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .inc();
        for result in ["success", "failure"] {
            policy_reloads.with_label_values(&[result]);
        }
        for reason in CERTIFICATE_REJECTION_REASONS {
            certificate_reload_rejected.with_label_values(&[reason]);
        }
        for (listener, reason) in CONNECTION_REJECTION_REASONS {
            connections_rejected.with_label_values(&[listener, reason]);
        }
        Ok(Metrics {
            registry,
            admission_requests,
            admission_duration,
            policy_violations,
            policy_evaluation_duration,
            policy_errors,
            policies_loaded,
            policy_reloads,
            policy_last_reload,
            tls_not_after,
            build_info,
            audit_violations,
            audit_duration,
            audit_objects,
            in_flight,
            evaluations_moved,
            rejected_overload,
            certificate_reload_rejected,
            connections_rejected,
            budget_rejections,
            budget_bytes,
            memory_held,
            memory_ceiling,
        })
    }

    /// Sets the memory budget gauges.
    pub fn record_budgets(&self, buffered: usize, parsing: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.budget_bytes
            .with_label_values(&["buffered"])
            .set(gauge(buffered));
        self.budget_bytes
            .with_label_values(&["parsing"])
            .set(gauge(parsing));
        let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.memory_held.set(bytes(crate::policy::memory::held()));
        self.memory_ceiling
            .set(crate::policy::memory::ceiling_now().map_or(0, bytes));
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Records one answered request and what its decision contained.
    pub fn record_decision(
        &self,
        set: &PolicySet,
        endpoint: &str,
        review: &Review,
        decision: &Decision,
        label: &str,
        elapsed: Duration,
    ) {
        let kind = bounded_kind(set, review.kind());
        let operation = review.operation();
        self.admission_requests
            .with_label_values(&[endpoint, kind, bounded_operation(operation), label])
            .inc();
        self.admission_duration
            .with_label_values(&[endpoint])
            .observe(elapsed.as_secs_f64());
        for (policy, duration) in &decision.timings {
            self.policy_evaluation_duration
                .with_label_values(&[policy.as_str()])
                .observe(duration.as_secs_f64());
        }
        if endpoint == "validate" {
            for v in &decision.violations {
                self.policy_violations
                    .with_label_values(&[v.policy.as_str(), v.action.as_str(), v.severity.as_str()])
                    .inc();
            }
        }
        for f in &decision.failures {
            self.policy_errors
                .with_label_values(&[f.policy.as_str(), f.reason.as_str()])
                .inc();
        }
    }

    /// Records a request that never reached a decision (bad input, overload).
    pub fn record_unjudged(&self, endpoint: &str, label: &str, elapsed: Duration) {
        self.admission_requests
            .with_label_values(&[endpoint, OTHER, OTHER, label])
            .inc();
        self.admission_duration
            .with_label_values(&[endpoint])
            .observe(elapsed.as_secs_f64());
    }
}

/// `kind` when it is a built-in kind or one a loaded policy names explicitly, else `other`.
fn bounded_kind<'a>(set: &PolicySet, kind: &'a str) -> &'a str {
    if BUILT_IN_KINDS.binary_search(&kind).is_ok() || set.names_kind(kind) {
        kind
    } else {
        OTHER
    }
}

fn bounded_operation(op: &str) -> &str {
    match op {
        "CREATE" | "UPDATE" | "DELETE" | "CONNECT" => op,
        _ => OTHER,
    }
}

/// The decision label: allowed, denied, warned or mutated (invalid and error are set by callers).
pub fn decision_label(decision: &Decision, mutate: bool) -> &'static str {
    if mutate {
        return if decision.patch.is_some() {
            "mutated"
        } else {
            "allowed"
        };
    }
    if !decision.allowed {
        "denied"
    } else if !decision.warnings().is_empty() {
        "warned"
    } else {
        "allowed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_kinds_are_sorted_for_binary_search() {
        assert!(BUILT_IN_KINDS.windows(2).all(|w| w[0] < w[1]));
    }
}
