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
    /// The file this was read from, so that problems found later (an unknown policy id, a
    /// parameter of the wrong type) are reported at their line.
    #[serde(skip)]
    pub origin: Option<ConfigOrigin>,
}

/// Where a config was read from, and its text.
#[derive(Debug, Clone, Default)]
pub struct ConfigOrigin {
    pub path: String,
    pub text: String,
}

/// Where a config came from does not change what it says.
impl PartialEq for ConfigOrigin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Config {
    /// (file, line, column) of the first line under the top-level `section` that holds all of
    /// `needles` in order (e.g. a policy id, then one of its parameters on a later line);
    /// the file's first line when not found, `regate.yaml` when the config was not read from
    /// a file.
    pub fn locate(&self, section: &str, needles: &[&str]) -> (String, usize, usize) {
        let Some(origin) = &self.origin else {
            return ("regate.yaml".to_string(), 1, 1);
        };
        let mut found = (1, 1);
        let mut in_section = false;
        let mut next = 0;
        for (i, line) in origin.text.lines().enumerate() {
            let is_top_level = !line.starts_with([' ', '\t', '#', '-']) && !line.trim().is_empty();
            if is_top_level {
                in_section = line.starts_with(section)
                    && line[section.len()..]
                        .trim_start_matches(['"', '\''])
                        .starts_with(':');
                if in_section {
                    found = (i + 1, 1);
                }
            }
            if !in_section {
                continue;
            }
            while let Some(needle) = needles.get(next) {
                match line.find(needle) {
                    Some(at) => {
                        found = (i + 1, at + 1);
                        next += 1;
                    }
                    None => break,
                }
            }
            if next == needles.len() {
                break;
            }
        }
        (origin.path.clone(), found.0, found.1)
    }
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
            origin: None,
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
        let mut config: Config = serde_yaml::from_str(text).map_err(|e| {
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
        schema_parameter::check(&config, text).map_err(|bad| bad.in_file(path))?;
        config.check_ranges(text).map_err(|bad| bad.in_file(path))?;
        config.origin = Some(ConfigOrigin {
            path: path.display().to_string(),
            text: text.to_string(),
        });
        Ok(config)
    }

    /// Refuses limits that make no sense: a zero header timeout fails every handshake while
    /// `/readyz` says 200, a zero body limit refuses every review, a zero evaluation budget fails
    /// every policy, and values past the bounds overflow the clock or the process. `text` is
    /// the source, to name the line of the offending key.
    fn check_ranges(&self, text: &str) -> Result<(), Mistake> {
        let l = &self.limits;
        let reports = &self.audit.reports;
        let checks: [(&str, Option<u64>, RangeOf); 11] = [
            (
                "limits.maxBodyBytes",
                Some(l.max_body_bytes as u64),
                MAX_BODY_BYTES,
            ),
            (
                "limits.evaluationTimeoutMs",
                Some(l.evaluation_timeout_ms),
                EVALUATION_TIMEOUT_MS,
            ),
            (
                "limits.maxInFlight",
                Some(l.max_in_flight as u64),
                MAX_IN_FLIGHT,
            ),
            (
                "limits.queueTimeoutMs",
                Some(l.queue_timeout_ms),
                QUEUE_TIMEOUT_MS,
            ),
            (
                "limits.maxConnections",
                Some(l.max_connections as u64),
                MAX_CONNECTIONS,
            ),
            (
                "limits.headerReadTimeoutMs",
                Some(l.header_read_timeout_ms),
                READ_TIMEOUT_MS,
            ),
            (
                "limits.bodyReadTimeoutMs",
                Some(l.body_read_timeout_ms),
                READ_TIMEOUT_MS,
            ),
            (
                "limits.drainTimeoutMs",
                Some(l.drain_timeout_ms),
                DRAIN_TIMEOUT_MS,
            ),
            (
                "audit.pageSize",
                self.audit.page_size.map(u64::from),
                PAGE_SIZE,
            ),
            (
                "audit.reports.resultsPerReport",
                reports.results_per_report.map(|n| n as u64),
                RESULTS_PER_REPORT,
            ),
            (
                "audit.reports.maxResults",
                reports.max_results.map(|n| n as u64),
                MAX_RESULTS,
            ),
        ];
        for (key, value, range) in checks {
            if let Some(value) = value {
                range.check(text, key, value)?;
            }
        }
        if reports.status_filter.as_ref().is_some_and(Vec::is_empty) {
            return Err(Mistake {
                line: key_line(text, "audit", "reports"),
                message: "audit.reports.statusFilter: empty: name the statuses to list (pass, fail, warn, error, skip)".to_string(),
            });
        }
        if let Some(interval) = self.audit.interval.as_deref().map(str::trim) {
            let line = key_line(text, "audit", "interval");
            if !interval.is_empty() {
                let d = parse_duration(interval).map_err(|e| Mistake {
                    line,
                    message: format!("audit.interval: {e}"),
                })?;
                if !d.is_zero() && !(MIN_AUDIT_INTERVAL..=MAX_AUDIT_INTERVAL).contains(&d) {
                    return Err(Mistake {
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
    /// `u64::MAX`: no upper bound.
    max: u64,
    unit: &'static str,
    why: &'static str,
}

impl RangeOf {
    const fn new(min: u64, max: u64, unit: &'static str, why: &'static str) -> RangeOf {
        RangeOf {
            min,
            max,
            unit,
            why,
        }
    }

    /// `value` of `key` (its dotted path from the top of regate.yaml) within the range, or an
    /// error that names the key, the value, the range and the line the key is written on.
    fn check(&self, text: &str, key: &str, value: u64) -> Result<(), Mistake> {
        if (self.min..=self.max).contains(&value) {
            return Ok(());
        }
        let section = key.split('.').next().unwrap_or(key);
        let leaf = key.rsplit('.').next().unwrap_or(key);
        let bounds = if self.max == u64::MAX {
            format!("at least {}{}", self.min, self.unit)
        } else {
            format!("{}..={}{}", self.min, self.max, self.unit)
        };
        Err(Mistake {
            line: key_line(text, section, leaf),
            message: format!("{key}: {value} is out of range: {} ({bounds})", self.why),
        })
    }
}

const MAX_BODY_BYTES: RangeOf = RangeOf::new(
    1024,
    1 << 30,
    " bytes",
    "an AdmissionReview needs at least 1 KiB, and a body past 1 GiB cannot be held",
);
const EVALUATION_TIMEOUT_MS: RangeOf = RangeOf::new(
    1,
    600_000,
    " ms",
    "0 fails every policy; past 10 minutes no client is still waiting",
);
const MAX_IN_FLIGHT: RangeOf = RangeOf::new(1, 65_536, "", "0 refuses every review");
const QUEUE_TIMEOUT_MS: RangeOf = RangeOf::new(
    0,
    600_000,
    " ms",
    "0 means no waiting; past 10 minutes no client is still waiting",
);
const MAX_CONNECTIONS: RangeOf = RangeOf::new(1, 1_000_000, "", "0 refuses every connection");
const READ_TIMEOUT_MS: RangeOf = RangeOf::new(
    100,
    600_000,
    " ms",
    "below 100 ms every TLS handshake or request times out while /readyz says 200",
);
const DRAIN_TIMEOUT_MS: RangeOf = RangeOf::new(
    0,
    3_600_000,
    " ms",
    "0 drains nothing; past an hour no pod is given that long to stop",
);
const PAGE_SIZE: RangeOf = RangeOf::new(1, 100_000, "", "objects per list page");
const RESULTS_PER_REPORT: RangeOf =
    RangeOf::new(1, MAX_RESULTS_PER_REPORT as u64, "", "results per report");
const MAX_RESULTS: RangeOf = RangeOf::new(1, u64::MAX, "", "results per namespace");
const MIN_AUDIT_INTERVAL: Duration = Duration::from_secs(10);
const MAX_AUDIT_INTERVAL: Duration = Duration::from_secs(366 * 86_400);

/// A mistake found after parsing (a limit outside its range, a bad `config-schema` entry), and
/// where it is written when the line can be found.
struct Mistake {
    line: Option<(usize, usize)>,
    message: String,
}

impl Mistake {
    /// The error for `path`: with line and column where they were found.
    fn in_file(self, path: &Path) -> ConfigError {
        match self.line {
            Some((line, column)) => ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                message: self.message,
            },
            None => ConfigError::Invalid {
                path: path.to_path_buf(),
                message: self.message,
            },
        }
    }
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

/// `policies.config-schema.parameters.schemas`: the policy reads it as data, so a mistake there
/// (a misspelt keyword, a selector operator that does not exist) would otherwise only show as a
/// rule that never fires. Each entry's shape, selector, schema and per-environment merge patches
/// are checked here, with the schemas compiled by the JSON Schema implementation the policy uses.
mod schema_parameter {
    use std::fmt::Write as _;

    use serde_json::Value;

    use super::{key_line, Config, Mistake};

    const POLICY: &str = "config-schema";

    /// What a schema may say: the keywords the policy reads, and annotations.
    const KEYWORDS: &[&str] = &[
        "type",
        "required",
        "properties",
        "additionalProperties",
        "enum",
        "const",
        "pattern",
        "minLength",
        "maxLength",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
        "dependentRequired",
        "format",
        "$schema",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
    ];

    /// Formats the policy asserts (through the validator's draft-07 mode, where `format` is an
    /// assertion in every implementation).
    const FORMATS: &[&str] = &[
        "uri",
        "uri-reference",
        "email",
        "hostname",
        "ipv4",
        "ipv6",
        "date",
        "date-time",
        "time",
    ];

    const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

    #[derive(Debug, Clone)]
    enum Step {
        Key(String),
        Index(usize),
    }

    struct Found {
        at: Vec<Step>,
        message: String,
    }

    fn found(at: &[Step], message: impl Into<String>) -> Found {
        Found {
            at: at.to_vec(),
            message: message.into(),
        }
    }

    fn with(at: &[Step], step: Step) -> Vec<Step> {
        let mut out = at.to_vec();
        out.push(step);
        out
    }

    fn key(at: &[Step], k: &str) -> Vec<Step> {
        with(at, Step::Key(k.to_string()))
    }

    fn shown(at: &[Step]) -> String {
        let mut out = format!("policies.{POLICY}");
        for step in at {
            match step {
                Step::Key(k) => {
                    let _ = write!(out, ".{k}");
                }
                Step::Index(i) => {
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }

    pub(super) fn check(config: &Config, text: &str) -> Result<(), Mistake> {
        let Some(schemas) = config
            .policies
            .get(POLICY)
            .and_then(|o| o.parameters.get("schemas"))
        else {
            return Ok(());
        };
        let at = vec![
            Step::Key("parameters".to_string()),
            Step::Key("schemas".to_string()),
        ];
        check_entries(schemas, &at).map_err(|f| Mistake {
            line: locate(text, &f.at),
            message: format!("{}: {}", shown(&f.at), f.message),
        })
    }

    fn check_entries(schemas: &Value, at: &[Step]) -> Result<(), Found> {
        // A list per environment is accepted as for any parameter (`environments` is the
        // usual way to vary a schema).
        if let Value::Object(per_env) = schemas {
            if !per_env.is_empty()
                && per_env
                    .keys()
                    .all(|k| matches!(k.as_str(), "development" | "staging" | "production"))
            {
                for (env, list) in per_env {
                    check_entries(list, &key(at, env))?;
                }
                return Ok(());
            }
        }
        let Value::Array(entries) = schemas else {
            return Err(found(at, "must be a list of entries"));
        };
        for (i, entry) in entries.iter().enumerate() {
            check_entry(entry, &with(at, Step::Index(i)))?;
        }
        Ok(())
    }

    fn check_entry(entry: &Value, at: &[Step]) -> Result<(), Found> {
        let Value::Object(fields) = entry else {
            return Err(found(
                at,
                "must be a map with name, match, schema and environments",
            ));
        };
        for k in fields.keys() {
            if !["name", "match", "schema", "environments"].contains(&k.as_str()) {
                return Err(found(
                    &key(at, k),
                    "unknown field (expected name, match, schema, environments)",
                ));
            }
        }
        match fields.get("name") {
            Some(Value::String(n)) if !n.trim().is_empty() => {}
            _ => return Err(found(at, "needs a name (a non-empty string)")),
        }
        if let Some(m) = fields.get("match") {
            check_match(m, &key(at, "match"))?;
        }
        let Some(schema) = fields.get("schema") else {
            return Err(found(at, "needs a schema"));
        };
        let schema_at = key(at, "schema");
        if !schema.is_object() {
            return Err(found(&schema_at, "must be a JSON Schema object"));
        }
        check_schema(schema, &schema_at)?;
        if let Some(envs) = fields.get("environments") {
            let envs_at = key(at, "environments");
            let Value::Object(envs) = envs else {
                return Err(found(
                    &envs_at,
                    "must map development, staging or production to a merge patch",
                ));
            };
            for (env, patch) in envs {
                let patch_at = key(&envs_at, env);
                if !["development", "staging", "production"].contains(&env.as_str()) {
                    return Err(found(
                        &patch_at,
                        "unknown environment: expected development, staging or production",
                    ));
                }
                if !patch.is_object() {
                    return Err(found(
                        &patch_at,
                        "a JSON Merge Patch over the schema must be a map (any other value would replace the whole schema)",
                    ));
                }
                if let Some(deep) = deep_null(patch, &patch_at, 1) {
                    return Err(found(
                        &deep,
                        "a null (removal) deeper than 6 levels in a merge patch is not supported",
                    ));
                }
                let mut merged = schema.clone();
                json_patch::merge(&mut merged, patch);
                check_schema(&merged, &patch_at).map_err(|f| Found {
                    message: format!(
                        "the schema for {env} (after this merge patch) is invalid: {}",
                        f.message
                    ),
                    at: f.at,
                })?;
            }
        }
        Ok(())
    }

    /// The path of a null nested deeper than the policy removes (it unrolls six levels: its
    /// bytecode has no `walk`).
    fn deep_null(patch: &Value, at: &[Step], depth: usize) -> Option<Vec<Step>> {
        let Value::Object(fields) = patch else {
            return None;
        };
        fields.iter().find_map(|(k, v)| match v {
            Value::Null if depth > 6 => Some(key(at, k)),
            Value::Object(_) => deep_null(v, &key(at, k), depth + 1),
            _ => None,
        })
    }

    fn string_list<'a>(value: &'a Value, at: &[Step]) -> Result<Vec<&'a str>, Found> {
        let Value::Array(items) = value else {
            return Err(found(at, "must be a list of strings"));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .ok_or_else(|| found(&with(at, Step::Index(i)), "must be a string"))
            })
            .collect()
    }

    fn check_match(m: &Value, at: &[Step]) -> Result<(), Found> {
        let Value::Object(fields) = m else {
            return Err(found(
                at,
                "must be a map of kinds, names, namespaces and labels",
            ));
        };
        for (k, v) in fields {
            let here = key(at, k);
            match k.as_str() {
                "kinds" => {
                    for kind in string_list(v, &here)? {
                        if kind != "ConfigMap" && kind != "Secret" {
                            return Err(found(
                                &here,
                                format!("unknown kind {kind:?}: expected ConfigMap or Secret"),
                            ));
                        }
                    }
                }
                "names" | "namespaces" => {
                    for g in string_list(v, &here)? {
                        globset::Glob::new(g)
                            .map_err(|e| found(&here, format!("invalid glob {g:?}: {e}")))?;
                    }
                }
                "labels" => check_selector(v, &here)?,
                _ => {
                    return Err(found(
                        &here,
                        "unknown field (expected kinds, names, namespaces, labels)",
                    ))
                }
            }
        }
        Ok(())
    }

    /// A Kubernetes label selector: `matchLabels` and `matchExpressions`.
    fn check_selector(selector: &Value, at: &[Step]) -> Result<(), Found> {
        let Value::Object(fields) = selector else {
            return Err(found(
                at,
                "must be a label selector (matchLabels, matchExpressions)",
            ));
        };
        for (k, v) in fields {
            let here = key(at, k);
            match k.as_str() {
                "matchLabels" => {
                    let Value::Object(labels) = v else {
                        return Err(found(&here, "must map label keys to values"));
                    };
                    for (label, value) in labels {
                        if !value.is_string() {
                            return Err(found(
                                &key(&here, label),
                                "a label value must be a string (quote numbers and booleans)",
                            ));
                        }
                    }
                }
                "matchExpressions" => {
                    let Value::Array(expressions) = v else {
                        return Err(found(&here, "must be a list of expressions"));
                    };
                    for (i, e) in expressions.iter().enumerate() {
                        check_expression(e, &with(&here, Step::Index(i)))?;
                    }
                }
                _ => {
                    return Err(found(
                        &here,
                        "unknown field (expected matchLabels, matchExpressions)",
                    ))
                }
            }
        }
        Ok(())
    }

    fn check_expression(e: &Value, at: &[Step]) -> Result<(), Found> {
        let Value::Object(fields) = e else {
            return Err(found(at, "must be a map of key, operator and values"));
        };
        for k in fields.keys() {
            if !["key", "operator", "values"].contains(&k.as_str()) {
                return Err(found(
                    &key(at, k),
                    "unknown field (expected key, operator, values)",
                ));
            }
        }
        if !fields.get("key").is_some_and(Value::is_string) {
            return Err(found(at, "needs a key (a string)"));
        }
        let values = match fields.get("values") {
            Some(v) => string_list(v, &key(at, "values"))?.len(),
            None => 0,
        };
        match fields.get("operator").and_then(Value::as_str) {
            Some("In" | "NotIn") if values == 0 => Err(found(
                at,
                "operators In and NotIn need a non-empty list of values",
            )),
            Some("Exists" | "DoesNotExist") if values > 0 => Err(found(
                at,
                "operators Exists and DoesNotExist take no values",
            )),
            Some("In" | "NotIn" | "Exists" | "DoesNotExist") => Ok(()),
            Some(other) => Err(found(
                &key(at, "operator"),
                format!("unknown operator {other:?}: expected In, NotIn, Exists or DoesNotExist"),
            )),
            None => Err(found(at, "needs an operator")),
        }
    }

    /// Known keywords everywhere, known formats, then the implementation's own verdict
    /// (the draft 2020-12 meta-schema, regular expressions).
    fn check_schema(schema: &Value, at: &[Step]) -> Result<(), Found> {
        check_keywords(schema, at)?;
        jsonschema::validator_for(schema)
            .map(|_| ())
            .map_err(|e| found(at, format!("not a valid JSON Schema: {e}")))
    }

    fn check_keywords(schema: &Value, at: &[Step]) -> Result<(), Found> {
        let fields = match schema {
            Value::Bool(_) => return Ok(()),
            Value::Object(fields) => fields,
            _ => return Err(found(at, "a schema must be a map (or true/false)")),
        };
        for (k, v) in fields {
            let here = key(at, k);
            if !KEYWORDS.contains(&k.as_str()) {
                return Err(found(
                    &here,
                    format!(
                        "unknown keyword {k:?} (config-schema reads: {})",
                        KEYWORDS[..19].join(", ")
                    ),
                ));
            }
            match k.as_str() {
                "properties" => {
                    if let Value::Object(props) = v {
                        for (name, sub) in props {
                            check_keywords(sub, &key(&here, name))?;
                        }
                    }
                }
                "additionalProperties" | "not" => check_keywords(v, &here)?,
                "anyOf" | "oneOf" | "allOf" => {
                    if let Value::Array(subs) = v {
                        for (i, sub) in subs.iter().enumerate() {
                            check_keywords(sub, &with(&here, Step::Index(i)))?;
                        }
                    }
                }
                "format" => match v.as_str() {
                    Some(f) if !FORMATS.contains(&f) => {
                        return Err(found(
                            &here,
                            format!("unknown format {f:?} (known: {})", FORMATS.join(", ")),
                        ));
                    }
                    _ => {}
                },
                "$schema" if v.as_str() != Some(DRAFT_2020_12) => {
                    return Err(found(
                        &here,
                        format!("config-schema reads draft 2020-12 only ({DRAFT_2020_12})"),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The line of the deepest step of `at` that can be found, searching forward from
    /// `policies:` → `config-schema:` one step at a time (list items by their `- `).
    fn locate(text: &str, at: &[Step]) -> Option<(usize, usize)> {
        let lines: Vec<&str> = text.lines().collect();
        let (start, _) = key_line(text, "policies", POLICY)?;
        let mut best = Some((start, 1));
        let mut current = start - 1;
        for step in at {
            let next = match step {
                Step::Key(k) => find_key(&lines, current, k),
                Step::Index(i) => find_item(&lines, current, *i),
            };
            match next {
                Some((line, column)) => {
                    current = line;
                    best = Some((line + 1, column + 1));
                }
                None => break,
            }
        }
        best
    }

    fn find_key(lines: &[&str], from: usize, k: &str) -> Option<(usize, usize)> {
        for (i, line) in lines.iter().enumerate().skip(from) {
            for quote in ["", "\"", "'"] {
                let pattern = format!("{quote}{k}{quote}");
                let mut search = 0;
                while let Some(hit) = line[search..].find(&pattern) {
                    let at = search + hit;
                    let after = line[at + pattern.len()..].trim_start();
                    let before = line[..at].chars().last();
                    if after.starts_with(':') && before.is_none_or(|c| " \t{,-".contains(c)) {
                        return Some((i, at));
                    }
                    search = at + pattern.len();
                }
            }
        }
        None
    }

    /// The `index`-th `- ` item of the block list that starts after line `from`.
    fn find_item(lines: &[&str], from: usize, index: usize) -> Option<(usize, usize)> {
        let mut indent = None;
        let mut seen = 0;
        for (i, line) in lines.iter().enumerate().skip(from + 1) {
            let trimmed = line.trim_start();
            let here = line.len() - trimmed.len();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match indent {
                None if trimmed.starts_with('-') => indent = Some(here),
                None => return None,
                Some(n) if here < n => return None,
                _ => {}
            }
            if Some(here) == indent && trimmed.starts_with('-') {
                if seen == index {
                    return Some((i, here));
                }
                seen += 1;
            }
        }
        None
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
                3,
            ),
            (
                "audit:\n  reports:\n    api: auto\n    resultsPerReport: 5001\n",
                "audit.reports.resultsPerReport",
                4,
            ),
            (
                "audit:\n  reports:\n    maxResults: 0\n",
                "audit.reports.maxResults",
                3,
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

    /// Every range check says the same things: key, value, why, bounds (or the lower bound
    /// alone where there is no upper one), at the key's own line and column.
    #[test]
    fn range_messages_name_key_value_bounds_and_line() {
        for (text, wanted) in [
            (
                "limits:\n  maxInFlight: 0\n",
                "regate.yaml:2:3: limits.maxInFlight: 0 is out of range: 0 refuses every review (1..=65536)",
            ),
            (
                "audit:\n  pageSize: 100001\n",
                "regate.yaml:2:3: audit.pageSize: 100001 is out of range: objects per list page (1..=100000)",
            ),
            (
                "audit:\n  reports:\n    resultsPerReport: 5001\n",
                "regate.yaml:3:5: audit.reports.resultsPerReport: 5001 is out of range: results per report (1..=5000)",
            ),
            (
                "audit:\n  reports: {maxResults: 0}\n",
                "regate.yaml:2:13: audit.reports.maxResults: 0 is out of range: results per namespace (at least 1)",
            ),
        ] {
            let msg = error_of(text);
            assert!(msg.starts_with(wanted), "{text}: {msg}");
        }
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

    /// `policies.config-schema.parameters.schemas` is checked with the line of the mistake.
    #[test]
    fn config_schema_mistakes_are_named_with_their_line() {
        let head = "environments:\n  default: production\npolicies:\n  config-schema:\n    parameters:\n      schemas:\n";
        let entry = |body: &str| format!("{head}        - name: app\n{body}");
        for (body, line, wanted) in [
            (
                "          schema:\n            properties:\n              LOG_LEVEL: {maxLenght: 3}\n",
                10,
                "schemas[0].schema.properties.LOG_LEVEL.maxLenght: unknown keyword \"maxLenght\"",
            ),
            (
                "          schema:\n            properties:\n              PORT: {minimum: low}\n",
                8,
                "schemas[0].schema: not a valid JSON Schema",
            ),
            (
                "          schema:\n            properties:\n              X: {pattern: \"([a-z\"}\n",
                8,
                "not a valid JSON Schema",
            ),
            (
                "          schema: {required: [A]}\n          environments:\n            production: [1]\n",
                10,
                "environments.production: a JSON Merge Patch over the schema must be a map",
            ),
            (
                "          schema: {required: [A]}\n          environments:\n            production:\n              required: \"A\"\n",
                10,
                "the schema for production (after this merge patch) is invalid",
            ),
            (
                "          schema: {required: [A]}\n          environments:\n            prod: {}\n",
                10,
                "environments.prod: unknown environment",
            ),
            (
                "          match:\n            labels:\n              matchExpressions: [{key: a, operator: Has}]\n          schema: {}\n",
                10,
                "matchExpressions[0].operator: unknown operator \"Has\"",
            ),
            (
                "          match: {names: [\"a[\"]}\n          schema: {}\n",
                8,
                "match.names: invalid glob",
            ),
            (
                "          match: {kinds: [Pod]}\n          schema: {}\n",
                8,
                "unknown kind \"Pod\"",
            ),
            (
                "          schema: {properties: {U: {format: url}}}\n",
                8,
                "unknown format \"url\"",
            ),
            ("          schemas: {}\n", 8, "schemas[0].schemas: unknown field"),
            (
                "          schema: {}\n          environments:\n            production: {a: {b: {c: {d: {e: {f: {g: null}}}}}}}\n",
                10,
                "deeper than 6 levels",
            ),
        ] {
            let text = entry(body);
            let error = error_of(&text);
            assert!(
                error.starts_with(&format!("regate.yaml:{line}:")) && error.contains(wanted),
                "{text}\n=> {error}"
            );
        }
        let missing =
            format!("{head}        - match: {{kinds: [Secret]}}\n          schema: {{}}\n");
        assert!(
            error_of(&missing).contains("schemas[0]: needs a name"),
            "{}",
            error_of(&missing)
        );
        let fixture = include_str!("../fixtures/config-schema/regate.yaml");
        assert!(
            Config::parse(fixture, Path::new("regate.yaml")).is_ok(),
            "{}",
            error_of(fixture)
        );
    }
}
