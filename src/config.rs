//! `regate.yaml`: the operator's configuration, shared by `serve`, `eval`, `test` and `audit`.
//!
//! Unknown keys and wrong types are errors that name the key and its line, because a typo in an
//! admission controller's config silently weakens enforcement.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The three environments every namespace belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Staging,
    Production,
}

impl Environment {
    pub const ALL: [Environment; 3] = [
        Environment::Development,
        Environment::Staging,
        Environment::Production,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Environment::Development),
            "staging" | "stage" => Ok(Environment::Staging),
            "production" | "prod" => Ok(Environment::Production),
            other => Err(format!(
                "unknown environment {other:?}: expected development, staging or production"
            )),
        }
    }
}

/// What a policy's `deny` results do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Deny,
    Warn,
    Audit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deny => "deny",
            Action::Warn => "warn",
            Action::Audit => "audit",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deny" => Ok(Action::Deny),
            "warn" => Ok(Action::Warn),
            "audit" => Ok(Action::Audit),
            other => Err(format!(
                "unknown action {other:?}: expected deny, warn or audit"
            )),
        }
    }
}

/// A value given once for every environment, or once per environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PerEnvironment<T> {
    PerEnv(PerEnvMap<T>),
    Single(T),
}

// Hand-written rather than `untagged`, so that a typo inside either form is reported with its
// own message and location instead of "did not match any variant".
impl<'de, T: Deserialize<'de>> Deserialize<'de> for PerEnvironment<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{self, value::MapAccessDeserializer, value::StrDeserializer, Visitor};
        struct PerEnvVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for PerEnvVisitor<T> {
            type Value = PerEnvironment<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value, or a map with development, staging and production")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                T::deserialize(StrDeserializer::<E>::new(v)).map(PerEnvironment::Single)
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                PerEnvMap::deserialize(MapAccessDeserializer::new(map)).map(PerEnvironment::PerEnv)
            }
        }
        deserializer.deserialize_any(PerEnvVisitor(std::marker::PhantomData))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerEnvMap<T> {
    pub development: Option<T>,
    pub staging: Option<T>,
    pub production: Option<T>,
}

impl<T: Clone> PerEnvironment<T> {
    pub fn get(&self, env: Environment) -> Option<T> {
        match self {
            PerEnvironment::Single(v) => Some(v.clone()),
            PerEnvironment::PerEnv(m) => match env {
                Environment::Development => m.development.clone(),
                Environment::Staging => m.staging.clone(),
                Environment::Production => m.production.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

/// What happens when a policy fails at evaluation time (runtime error or time limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    #[default]
    Closed,
    Open,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Environments {
    #[serde(default = "default_environment")]
    pub default: Environment,
    #[serde(default = "default_label")]
    pub label: String,
    /// Namespace name or glob → environment, in the order written.
    #[serde(default)]
    pub namespaces: indexmap_like::OrderedMap<Environment>,
}

fn default_environment() -> Environment {
    Environment::Production
}

fn default_label() -> String {
    "environment".to_string()
}

impl Default for Environments {
    fn default() -> Self {
        Self {
            default: default_environment(),
            label: default_label(),
            namespaces: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyOverride {
    pub action: Option<PerEnvironment<Action>>,
    /// Parameter name → value, or value per environment.
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// Turn a policy off entirely.
    #[serde(default)]
    pub disabled: bool,
}

/// A time-bound waiver of some policies for matching objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Exception {
    pub name: String,
    pub policies: Vec<String>,
    #[serde(rename = "match", default)]
    pub matches: ExceptionMatch,
    pub reason: String,
    /// RFC 3339 timestamp after which the exception no longer applies.
    pub expires: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ExceptionMatch {
    pub namespace: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Limits {
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Per-request evaluation time limit, in milliseconds.
    #[serde(default = "default_eval_timeout_ms")]
    pub evaluation_timeout_ms: u64,
    /// Evaluations running at once; further requests wait.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long a request may wait for an evaluation slot, in milliseconds.
    #[serde(default = "default_queue_timeout_ms")]
    pub queue_timeout_ms: u64,
    /// Open TLS connections at once on the webhook port.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Time allowed for a client to send request headers, in milliseconds.
    #[serde(default = "default_header_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// Time allowed for a client to send the whole body, in milliseconds.
    #[serde(default = "default_body_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// How long SIGTERM waits for requests in flight, in milliseconds.
    #[serde(default = "default_drain_ms")]
    pub drain_timeout_ms: u64,
}

fn default_max_body() -> usize {
    8 * 1024 * 1024
}
fn default_eval_timeout_ms() -> u64 {
    2_000
}
fn default_max_in_flight() -> usize {
    256
}
fn default_queue_timeout_ms() -> u64 {
    5_000
}
fn default_max_connections() -> usize {
    1_024
}
fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_body_timeout_ms() -> u64 {
    10_000
}
fn default_drain_ms() -> u64 {
    20_000
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            evaluation_timeout_ms: default_eval_timeout_ms(),
            max_in_flight: default_max_in_flight(),
            queue_timeout_ms: default_queue_timeout_ms(),
            max_connections: default_max_connections(),
            header_read_timeout_ms: default_header_timeout_ms(),
            body_read_timeout_ms: default_body_timeout_ms(),
            drain_timeout_ms: default_drain_ms(),
        }
    }
}

impl Limits {
    pub fn evaluation_timeout(&self) -> Duration {
        Duration::from_millis(self.evaluation_timeout_ms)
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuditConfig {
    /// How often the background audit runs in `serve` (e.g. `1h`, `15m`); off when absent.
    pub interval: Option<String>,
    /// Objects per list page.
    pub page_size: Option<u32>,
    /// What the background audit writes to the cluster.
    #[serde(default)]
    pub reports: ReportsConfig,
}

/// Which report API the background audit writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportsApi {
    /// OpenReports when the cluster serves its CRDs, else wgpolicyk8s PolicyReports, else none.
    #[default]
    Auto,
    Openreports,
    Policyreport,
    /// Results in metrics and logs only.
    None,
}

/// A report result status (the OpenReports `statusFilter` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    Pass,
    Fail,
    Warn,
    Error,
    Skip,
}

impl ReportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Pass => "pass",
            ReportStatus::Fail => "fail",
            ReportStatus::Warn => "warn",
            ReportStatus::Error => "error",
            ReportStatus::Skip => "skip",
        }
    }
}

/// `audit.reports`: the API and the limits of the reports applied to the cluster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReportsConfig {
    #[serde(default)]
    pub api: ReportsApi,
    /// Results per report before the next numbered report starts (default 1000).
    pub results_per_report: Option<usize>,
    /// Results listed per namespace at most; the rest are cut (the summary still counts them).
    pub max_results: Option<usize>,
    /// Which results are listed (default fail, warn, error).
    pub status_filter: Option<Vec<ReportStatus>>,
}

/// Upper bound of `audit.reports.resultsPerReport`.
pub const MAX_RESULTS_PER_REPORT: usize = 5_000;

/// The whole of `regate.yaml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub environments: Environments,
    #[serde(default = "default_exempt")]
    pub exempt_namespaces: Vec<String>,
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyOverride>,
    #[serde(default)]
    pub policy_failure: FailurePolicy,
    #[serde(default)]
    pub exceptions: Vec<Exception>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub audit: AuditConfig,
}

fn default_exempt() -> Vec<String> {
    vec![
        "kube-system".to_string(),
        "kube-public".to_string(),
        "kube-node-lease".to_string(),
    ]
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            environments: Environments::default(),
            exempt_namespaces: default_exempt(),
            policies: BTreeMap::new(),
            policy_failure: FailurePolicy::default(),
            exceptions: Vec::new(),
            limits: Limits::default(),
            audit: AuditConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `regate.yaml` text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        // Bounded before parsing: deep nesting costs the YAML scanner quadratic time.
        crate::yaml_depth::check(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            line: e.line,
            column: 1,
            message: e.reason(),
        })?;
        let config: Config = serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: strip_location(&e.to_string()),
            }
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        config.check_ranges(text).map_err(|bad| match bad.line {
            Some((line, column)) => ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: bad.message,
            },
            None => ConfigError::Invalid {
                path: path.to_path_buf(),
                message: bad.message,
            },
        })?;
        Ok(config)
    }

    /// Refuses limits that make no sense: a zero header timeout fails every handshake while
    /// `/readyz` says 200, a zero body limit refuses every review, a zero evaluation budget fails
    /// every policy, and values past the bounds overflow the clock or the process. `text` is
    /// the source, to name the line of the offending key.
    fn check_ranges(&self, text: &str) -> Result<(), OutOfRange> {
        let l = &self.limits;
        let checks: [(&str, u64, RangeOf); 8] = [
            ("maxBodyBytes", l.max_body_bytes as u64, MAX_BODY_BYTES),
            (
                "evaluationTimeoutMs",
                l.evaluation_timeout_ms,
                EVALUATION_TIMEOUT_MS,
            ),
            ("maxInFlight", l.max_in_flight as u64, MAX_IN_FLIGHT),
            ("queueTimeoutMs", l.queue_timeout_ms, QUEUE_TIMEOUT_MS),
            ("maxConnections", l.max_connections as u64, MAX_CONNECTIONS),
            (
                "headerReadTimeoutMs",
                l.header_read_timeout_ms,
                READ_TIMEOUT_MS,
            ),
            ("bodyReadTimeoutMs", l.body_read_timeout_ms, READ_TIMEOUT_MS),
            ("drainTimeoutMs", l.drain_timeout_ms, DRAIN_TIMEOUT_MS),
        ];
        for (key, value, range) in checks {
            if value < range.min || value > range.max {
                return Err(OutOfRange {
                    line: key_line(text, "limits", key),
                    message: format!(
                        "limits.{key}: {value} is out of range: {} ({}..={}{})",
                        range.why, range.min, range.max, range.unit
                    ),
                });
            }
        }
        if let Some(size) = self.audit.page_size {
            if !(1..=MAX_PAGE_SIZE).contains(&size) {
                return Err(OutOfRange {
                    line: key_line(text, "audit", "pageSize"),
                    message: format!(
                        "audit.pageSize: {size} is out of range: objects per list page (1..={MAX_PAGE_SIZE})"
                    ),
                });
            }
        }
        let reports = &self.audit.reports;
        if let Some(n) = reports.results_per_report {
            if !(1..=MAX_RESULTS_PER_REPORT).contains(&n) {
                return Err(OutOfRange {
                    line: key_line(text, "audit", "reports"),
                    message: format!(
                        "audit.reports.resultsPerReport: {n} is out of range: results per report (1..={MAX_RESULTS_PER_REPORT})"
                    ),
                });
            }
        }
        if reports.max_results == Some(0) {
            return Err(OutOfRange {
                line: key_line(text, "audit", "reports"),
                message: "audit.reports.maxResults: 0 is out of range: results per namespace (at least 1)".to_string(),
            });
        }
        if reports.status_filter.as_ref().is_some_and(Vec::is_empty) {
            return Err(OutOfRange {
                line: key_line(text, "audit", "reports"),
                message: "audit.reports.statusFilter: empty: name the statuses to list (pass, fail, warn, error, skip)".to_string(),
            });
        }
        if let Some(interval) = self.audit.interval.as_deref().map(str::trim) {
            let line = key_line(text, "audit", "interval");
            if !interval.is_empty() {
                let d = parse_duration(interval).map_err(|e| OutOfRange {
                    line,
                    message: format!("audit.interval: {e}"),
                })?;
                if !d.is_zero() && !(MIN_AUDIT_INTERVAL..=MAX_AUDIT_INTERVAL).contains(&d) {
                    return Err(OutOfRange {
                        line,
                        message: format!(
                            "audit.interval: {interval:?} is out of range: between 10s and 366d (0 or no value turns the audit off)"
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), String> {
        for pattern in self.environments.namespaces.keys() {
            globset::Glob::new(pattern).map_err(|e| {
                format!("environments.namespaces: invalid pattern {pattern:?}: {e}")
            })?;
        }
        for (i, exception) in self.exceptions.iter().enumerate() {
            parse_rfc3339(&exception.expires).map_err(|e| {
                format!(
                    "exceptions[{i}] ({}): expires {:?} is not an RFC 3339 time: {e}",
                    exception.name, exception.expires
                )
            })?;
            if exception.policies.is_empty() {
                return Err(format!(
                    "exceptions[{i}] ({}): policies must list at least one policy id",
                    exception.name
                ));
            }
        }
        Ok(())
    }

    /// The environment-independent exemption check: these namespaces are never judged, nor is
    /// regate's own namespace (a webhook that judges its own pods can lock itself out).
    pub fn is_exempt_namespace(&self, namespace: &str) -> bool {
        self.exempt_namespaces.iter().any(|n| n == namespace)
            || own_namespace().is_some_and(|own| own == namespace)
    }
}

/// Accepted values of a limit, and what it is (for the error message).
#[derive(Debug, Clone, Copy)]
struct RangeOf {
    min: u64,
    max: u64,
    unit: &'static str,
    why: &'static str,
}

const MAX_BODY_BYTES: RangeOf = RangeOf {
    min: 1024,
    max: 1 << 30,
    unit: " bytes",
    why: "an AdmissionReview needs at least 1 KiB, and a body past 1 GiB cannot be held",
};
const EVALUATION_TIMEOUT_MS: RangeOf = RangeOf {
    min: 1,
    max: 600_000,
    unit: " ms",
    why: "0 fails every policy; past 10 minutes no client is still waiting",
};
const MAX_IN_FLIGHT: RangeOf = RangeOf {
    min: 1,
    max: 65_536,
    unit: "",
    why: "0 refuses every review",
};
const QUEUE_TIMEOUT_MS: RangeOf = RangeOf {
    min: 0,
    max: 600_000,
    unit: " ms",
    why: "0 means no waiting; past 10 minutes no client is still waiting",
};
const MAX_CONNECTIONS: RangeOf = RangeOf {
    min: 1,
    max: 1_000_000,
    unit: "",
    why: "0 refuses every connection",
};
const READ_TIMEOUT_MS: RangeOf = RangeOf {
    min: 100,
    max: 600_000,
    unit: " ms",
    why: "below 100 ms every TLS handshake or request times out while /readyz says 200",
};
const DRAIN_TIMEOUT_MS: RangeOf = RangeOf {
    min: 0,
    max: 3_600_000,
    unit: " ms",
    why: "0 drains nothing; past an hour no pod is given that long to stop",
};
const MAX_PAGE_SIZE: u32 = 100_000;
const MIN_AUDIT_INTERVAL: Duration = Duration::from_secs(10);
const MAX_AUDIT_INTERVAL: Duration = Duration::from_secs(366 * 86_400);

/// A limit outside its range, and where the key is written when it can be found.
struct OutOfRange {
    line: Option<(usize, usize)>,
    message: String,
}

/// (line, column), 1-based, of `key` inside the top-level `section`, found in the source text:
/// serde has forgotten positions by the time ranges are checked. Block and flow style both work.
fn key_line(text: &str, section: &str, key: &str) -> Option<(usize, usize)> {
    let mut in_section = false;
    for (i, line) in text.lines().enumerate() {
        let is_top_level = !line.starts_with([' ', '\t', '#', '-']) && !line.trim().is_empty();
        if is_top_level {
            in_section = line.starts_with(section)
                && line[section.len()..]
                    .trim_start_matches(['"', '\''])
                    .starts_with(':');
        }
        if !in_section {
            continue;
        }
        for quote in ["", "\"", "'"] {
            let pattern = format!("{quote}{key}{quote}");
            if let Some(at) = line.find(&pattern) {
                let after = line[at + pattern.len()..].trim_start();
                let before = line[..at].chars().last();
                if after.starts_with(':') && before.is_none_or(|c| " \t{,".contains(c)) {
                    return Some((i + 1, at + 1));
                }
            }
        }
    }
    None
}

/// The namespace regate runs in: `REGATE_NAMESPACE` or `POD_NAMESPACE` (the chart sets it from
/// the downward API), else the service account's namespace file; none outside a cluster.
pub fn own_namespace() -> Option<&'static str> {
    static OWN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    OWN.get_or_init(|| {
        std::env::var("REGATE_NAMESPACE")
            .or_else(|_| std::env::var("POD_NAMESPACE"))
            .ok()
            .or_else(|| {
                std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    .ok()
                    .map(|s| s.trim().to_string())
            })
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// serde_yaml appends " at line L column C"; the location is printed by us in front.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(idx) => message[..idx].to_string(),
        None => message.to_string(),
    }
}

/// Parses `90s`, `15m`, `1h`, `2d` or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 15m or 1h"))?;
    let per_unit: u64 = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?} is not a duration like 30s, 15m or 1h")),
    };
    // Checked: `18446744073709551615d` would otherwise wrap (release) or panic (debug).
    let secs = n
        .checked_mul(per_unit)
        .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    Ok(Duration::from_secs(secs))
}

pub fn parse_rfc3339(text: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())
}

/// A string-keyed map that keeps the order of the YAML source, so that the first matching
/// namespace pattern wins as written.
pub mod indexmap_like {
    use serde::de::{MapAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::fmt;
    use std::marker::PhantomData;

    #[derive(Debug, Clone, PartialEq)]
    pub struct OrderedMap<V>(pub Vec<(String, V)>);

    impl<V> Default for OrderedMap<V> {
        fn default() -> Self {
            Self(Vec::new())
        }
    }

    impl<V> OrderedMap<V> {
        pub fn keys(&self) -> impl Iterator<Item = &String> {
            self.0.iter().map(|(k, _)| k)
        }
        pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
            self.0.iter().map(|(k, v)| (k, v))
        }
    }

    impl<V: Serialize> Serialize for OrderedMap<V> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for (k, v) in &self.0 {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
    }

    impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct OrderedVisitor<V>(PhantomData<V>);
            impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedVisitor<V> {
                type Value = OrderedMap<V>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a map")
                }
                fn visit_map<A: MapAccess<'de>>(
                    self,
                    mut access: A,
                ) -> Result<Self::Value, A::Error> {
                    let mut entries = Vec::new();
                    while let Some((k, v)) = access.next_entry::<String, V>()? {
                        entries.push((k, v));
                    }
                    Ok(OrderedMap(entries))
                }
            }
            deserializer.deserialize_map(OrderedVisitor(PhantomData))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() -> Result<(), ConfigError> {
        let text = r#"
mode: enforce
environments:
  default: production
  label: environment
  namespaces: { dev: development, "*-staging": staging, prod: production }
exemptNamespaces: [kube-system, kube-public, kube-node-lease]
policies:
  pod-run-as-non-root:
    action: { development: warn, staging: deny, production: deny }
  secret-min-length:
    parameters: { min_length: { development: 32, staging: 32, production: 64 } }
"#;
        let config = Config::parse(text, Path::new("regate.yaml"))?;
        let action = config.policies["pod-run-as-non-root"].action.clone();
        assert_eq!(
            action.and_then(|a| a.get(Environment::Development)),
            Some(Action::Warn)
        );
        assert_eq!(config.environments.namespaces.0.len(), 3);
        Ok(())
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "mode: enforce\nenvironments:\n  defualt: staging\n";
        let err = Config::parse(text, Path::new("regate.yaml")).map(|_| ());
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("regate.yaml:3:"), "{msg}");
        assert!(msg.contains("defualt"), "{msg}");
    }

    #[test]
    fn wrong_type_names_line() {
        let text = "mode: enforce\nlimits:\n  maxBodyBytes: lots\n";
        let msg = Config::parse(text, Path::new("c.yaml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("c.yaml:3:"), "{msg}");
    }

    #[test]
    fn action_typo_is_named() {
        let text = "policies:\n  x:\n    action: {development: warn, stagin: deny}\n";
        let msg = Config::parse(text, Path::new("c.yaml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("c.yaml:3:"), "{msg}");
        assert!(msg.contains("stagin"), "{msg}");
        let text = "policies:\n  x:\n    action: dney\n";
        let msg = Config::parse(text, Path::new("c.yaml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("dney"), "{msg}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("18446744073709551615d").is_err());
        assert!(parse_duration("99999999999999999999999s").is_err());
    }

    fn error_of(text: &str) -> String {
        Config::parse(text, Path::new("regate.yaml"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn senseless_limits_are_refused_with_key_and_line() {
        for (text, key, line) in [
            (
                "limits:\n  headerReadTimeoutMs: 0\n",
                "limits.headerReadTimeoutMs",
                2,
            ),
            (
                "mode: enforce\nlimits:\n  maxInFlight: 8\n  evaluationTimeoutMs: 0\n",
                "limits.evaluationTimeoutMs",
                4,
            ),
            ("limits: {maxBodyBytes: 0}\n", "limits.maxBodyBytes", 1),
            ("limits:\n  maxInFlight: 0\n", "limits.maxInFlight", 2),
            ("limits:\n  maxConnections: 0\n", "limits.maxConnections", 2),
            (
                "limits:\n  bodyReadTimeoutMs: 5\n",
                "limits.bodyReadTimeoutMs",
                2,
            ),
            (
                "limits:\n  evaluationTimeoutMs: 18446744073709551615\n",
                "limits.evaluationTimeoutMs",
                2,
            ),
            (
                "limits:\n  drainTimeoutMs: 99999999999\n",
                "limits.drainTimeoutMs",
                2,
            ),
            (
                "audit:\n  interval: 18446744073709551615d\n",
                "audit.interval",
                2,
            ),
            (
                "audit:\n  pageSize: 5\n  interval: 1s\n",
                "audit.interval",
                3,
            ),
            ("audit: {pageSize: 0}\n", "audit.pageSize", 1),
            (
                "audit:\n  reports:\n    resultsPerReport: 0\n",
                "audit.reports.resultsPerReport",
                2,
            ),
            (
                "audit:\n  reports:\n    resultsPerReport: 5001\n",
                "audit.reports.resultsPerReport",
                2,
            ),
            (
                "audit:\n  reports:\n    maxResults: 0\n",
                "audit.reports.maxResults",
                2,
            ),
            (
                "audit:\n  reports:\n    statusFilter: []\n",
                "audit.reports.statusFilter",
                2,
            ),
        ] {
            let msg = error_of(text);
            assert!(
                msg.starts_with(&format!("regate.yaml:{line}:")),
                "{text}: {msg}"
            );
            assert!(msg.contains(key), "{text}: {msg}");
        }
        // The key is named even where its line cannot be found.
        let msg = error_of("limits:\n  ? headerReadTimeoutMs\n  : 0\n");
        assert!(msg.contains("limits.headerReadTimeoutMs"), "{msg}");
    }

    #[test]
    fn sensible_limits_and_intervals_are_accepted() {
        let text = "limits:\n  queueTimeoutMs: 0\n  drainTimeoutMs: 0\n  headerReadTimeoutMs: 100\n  maxBodyBytes: 1024\naudit:\n  interval: 15m\n";
        assert!(Config::parse(text, Path::new("r.yaml")).is_ok());
        let text = "audit:\n  reports:\n    api: openreports\n    resultsPerReport: 200\n    maxResults: 50\n    statusFilter: [pass, fail]\n";
        let config = Config::parse(text, Path::new("r.yaml")).map(|c| c.audit.reports);
        assert!(
            config
                .as_ref()
                .is_ok_and(|r| r.api == ReportsApi::Openreports
                    && r.results_per_report == Some(200)
                    && r.status_filter == Some(vec![ReportStatus::Pass, ReportStatus::Fail])),
            "{config:?}"
        );
        for interval in ["\"\"", "0s", "10s", "366d"] {
            let text = format!("audit:\n  interval: {interval}\n");
            assert!(
                Config::parse(&text, Path::new("r.yaml")).is_ok(),
                "{interval}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let flow = format!(
            "policies:\n  x:\n    parameters: {{a: {}}}\n",
            "[".repeat(100_000)
        );
        let msg = error_of(&flow);
        assert!(msg.starts_with("regate.yaml:3:"), "{msg}");
        assert!(msg.contains("nested deeper than 128 levels"), "{msg}");
        let block: String = (0..1_000)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i + 1)))
            .collect();
        let msg = error_of(&format!("policies:\n{block}"));
        assert!(msg.contains("nested deeper than 128 levels"), "{msg}");
    }
}
