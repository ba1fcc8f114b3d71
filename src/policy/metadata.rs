//! The `# METADATA` block at the top of a policy file (OPA's annotation syntax). regorus does not
//! parse annotations, so regate reads the YAML inside the comment itself and maps its errors
//! back to the file's own line numbers.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::{Action, Environment, PerEnvironment};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(format!(
                "unknown severity {other:?}: expected low, medium, high or critical"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl ParameterType {
    pub fn accepts(self, value: &serde_json::Value) -> bool {
        match self {
            ParameterType::String => value.is_string(),
            ParameterType::Integer => value.is_i64() || value.is_u64(),
            ParameterType::Number => value.is_number(),
            ParameterType::Boolean => value.is_boolean(),
            ParameterType::Array => value.is_array(),
            ParameterType::Object => value.is_object(),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParameterType::String => "string",
            ParameterType::Integer => "integer",
            ParameterType::Number => "number",
            ParameterType::Boolean => "boolean",
            ParameterType::Array => "array",
            ParameterType::Object => "object",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParameterSpec {
    #[serde(rename = "type")]
    pub kind: ParameterType,
    #[serde(default)]
    pub description: Option<String>,
    /// A value, or a map with one value per environment.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

impl ParameterSpec {
    /// Resolves a declared default or a configured value for one environment: a map whose keys are
    /// all environment names gives one value per environment.
    pub fn resolve(
        &self,
        value: &serde_json::Value,
        env: Environment,
    ) -> Option<serde_json::Value> {
        resolve_per_environment(value, env, self.kind)
    }
}

pub fn resolve_per_environment(
    value: &serde_json::Value,
    env: Environment,
    _kind: ParameterType,
) -> Option<serde_json::Value> {
    if let serde_json::Value::Object(map) = value {
        let per_env = !map.is_empty()
            && map
                .keys()
                .all(|k| matches!(k.as_str(), "development" | "staging" | "production"));
        // An object keyed only by environment names is read as one value per environment, for
        // object-typed parameters too: give such a parameter other keys.
        if per_env {
            return map.get(env.as_str()).cloned();
        }
    }
    Some(value.clone())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCustom {
    id: String,
    severity: Severity,
    #[serde(default)]
    category: Option<String>,
    kinds: Vec<String>,
    #[serde(default)]
    action: Option<PerEnvironment<Action>>,
    #[serde(default)]
    operations: Option<Vec<String>>,
    #[serde(default)]
    subresources: Vec<String>,
    #[serde(default)]
    parameters: BTreeMap<String, ParameterSpec>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawMetadata {
    title: Option<String>,
    description: Option<String>,
    custom: Option<RawCustom>,
}

/// A label an object must carry for a policy to judge it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequiredLabel {
    pub key: String,
    /// The values it may have; empty when any value will do.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// What a policy declares about itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyMeta {
    pub id: String,
    pub title: String,
    pub description: String,
    pub severity: Severity,
    /// A grouping shown in reports (OpenReports' and PolicyReport's `category`), e.g. "Pod Security".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    pub kinds: Vec<String>,
    /// The only namespaces the policy can judge objects in (and Namespaces of these names),
    /// when it is limited to some: the set's index then never offers it objects elsewhere.
    /// Empty when objects in any namespace may concern it. No namespace limit keeps a
    /// cluster-scoped object from a policy. An index only: the policy's own matching decides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// A label the policy can judge only objects carrying, when there is one; an index like
    /// `namespaces`, used for policies not limited to namespaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_label: Option<RequiredLabel>,
    pub action: PerEnvironment<Action>,
    pub operations: Vec<String>,
    pub subresources: Vec<String>,
    pub parameters: BTreeMap<String, ParameterSpec>,
}

impl PolicyMeta {
    pub fn default_action(&self, env: Environment) -> Action {
        self.action.get(env).unwrap_or(Action::Deny)
    }

    /// The Rego package the policy must declare.
    pub fn package(&self) -> String {
        format!("regate.policies.{}", self.id.replace('-', "_"))
    }
}

/// A metadata problem, located in the policy file (1-based line and column).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct MetadataError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

const VALID_OPERATIONS: [&str; 2] = ["CREATE", "UPDATE"];

/// Finds and parses the `# METADATA` block. `Ok(None)` when the file has none (a library file).
/// The first problem only; [`parse_all`] gives every one.
pub fn parse(source: &str) -> Result<Option<PolicyMeta>, MetadataError> {
    parse_all(source).map_err(|errors| {
        errors.into_iter().next().unwrap_or(MetadataError {
            line: 1,
            column: 1,
            message: "invalid METADATA".to_string(),
        })
    })
}

/// [`parse`], with every problem of the block at once, each at the line of its key.
pub fn parse_all(source: &str) -> Result<Option<PolicyMeta>, Vec<MetadataError>> {
    let lines: Vec<&str> = source.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim() == "# METADATA") else {
        return Ok(None);
    };
    let mut yaml = String::new();
    for line in &lines[start + 1..] {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix('#') else {
            break;
        };
        yaml.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        yaml.push('\n');
    }
    let first_yaml_line = start + 2;
    crate::yaml_depth::check(&yaml).map_err(|e| {
        vec![MetadataError {
            line: first_yaml_line + e.line.saturating_sub(1),
            column: 1,
            message: format!("METADATA: {}", e.reason()),
        }]
    })?;
    let raw: RawMetadata = serde_yaml::from_str(&yaml).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column() + 2))
            .unwrap_or((1, 1));
        vec![MetadataError {
            line: first_yaml_line + line.saturating_sub(1),
            column,
            message: format!("METADATA: {}", strip_location(&e.to_string())),
        }]
    })?;
    let at_block = |message: String| MetadataError {
        line: start + 1,
        column: 1,
        message,
    };
    // The line of a key (or list item) inside the block, for errors about its value.
    let at_key = |key: &str, message: String| {
        let block = lines[start + 1..]
            .iter()
            .take_while(|l| l.trim_start().starts_with('#'));
        let found = block.enumerate().find_map(|(i, l)| {
            let text = l.trim_start().trim_start_matches('#').trim_start();
            text.starts_with(key)
                .then(|| (start + 2 + i, l.len() - text.len() + 1))
        });
        match found {
            Some((line, column)) => MetadataError {
                line,
                column,
                message,
            },
            None => at_block(message),
        }
    };
    let custom = raw.custom.ok_or_else(|| {
        vec![at_block(
            "METADATA has no `custom:` section with the policy's id, severity and kinds".into(),
        )]
    })?;
    let mut errors = Vec::new();
    if custom.id.is_empty()
        || !custom
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        errors.push(at_key(
            "id:",
            format!(
                "custom.id {:?} must be lower-case letters, digits and dashes",
                custom.id
            ),
        ));
    }
    if custom.kinds.is_empty() {
        errors.push(at_key(
            "kinds:",
            format!(
                "policy {}: custom.kinds must list at least one kind",
                custom.id
            ),
        ));
    }
    for kind in &custom.kinds {
        let known = kind == "*"
            || kind.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && kind.chars().all(|c| c.is_ascii_alphanumeric());
        if !known {
            errors.push(at_key(
                "kinds:",
                format!(
                    "policy {}: kind {kind:?} is not a Kubernetes kind (e.g. Pod, Deployment)",
                    custom.id
                ),
            ));
        }
    }
    let operations = custom
        .operations
        .unwrap_or_else(|| VALID_OPERATIONS.iter().map(|s| s.to_string()).collect());
    for op in &operations {
        if !VALID_OPERATIONS.contains(&op.as_str()) {
            errors.push(at_key(
                "operations:",
                format!(
                    "policy {}: operation {op:?} is not judged; use CREATE and/or UPDATE",
                    custom.id
                ),
            ));
        }
    }
    for (name, spec) in &custom.parameters {
        if let Some(default) = &spec.default {
            for env in Environment::ALL {
                if let Some(v) = spec.resolve(default, env) {
                    if !spec.kind.accepts(&v) {
                        errors.push(at_key(
                            &format!("{name}:"),
                            format!(
                                "policy {}: parameter {name} default for {env} is {v}, not of type {}",
                                custom.id,
                                spec.kind.as_str()
                            ),
                        ));
                        break;
                    }
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Some(PolicyMeta {
        title: raw.title.unwrap_or_else(|| custom.id.clone()),
        description: raw.description.unwrap_or_default(),
        id: custom.id,
        severity: custom.severity,
        category: custom.category.filter(|c| !c.trim().is_empty()),
        kinds: custom.kinds,
        namespaces: Vec::new(),
        required_label: None,
        action: custom
            .action
            .unwrap_or(PerEnvironment::Single(Action::Deny)),
        operations,
        subresources: custom.subresources,
        parameters: custom.parameters,
    }))
}

/// The kinds a stock cluster serves (core, apps, batch, networking, policy, RBAC, storage,
/// autoscaling, admissionregistration, apiextensions, coordination, discovery, events, node,
/// scheduling, certificates, flowcontrol): a policy naming another kind matches only custom
/// resources, so `regate check` questions it.
pub const BUILT_IN_KINDS: &[&str] = &[
    "Binding",
    "ComponentStatus",
    "ConfigMap",
    "Endpoints",
    "Event",
    "LimitRange",
    "Namespace",
    "Node",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Pod",
    "PodTemplate",
    "ReplicationController",
    "ResourceQuota",
    "Secret",
    "Service",
    "ServiceAccount",
    "ControllerRevision",
    "DaemonSet",
    "Deployment",
    "ReplicaSet",
    "StatefulSet",
    "CronJob",
    "Job",
    "Ingress",
    "IngressClass",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "CSIDriver",
    "CSINode",
    "CSIStorageCapacity",
    "StorageClass",
    "VolumeAttachment",
    "HorizontalPodAutoscaler",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "CustomResourceDefinition",
    "APIService",
    "Lease",
    "EndpointSlice",
    "RuntimeClass",
    "PriorityClass",
    "CertificateSigningRequest",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "TokenReview",
    "SubjectAccessReview",
    "LocalSubjectAccessReview",
    "SelfSubjectAccessReview",
    "SelfSubjectRulesReview",
    "SelfSubjectReview",
    "Eviction",
    "Scale",
    "ResourceClaim",
    "ResourceClaimTemplate",
    "DeviceClass",
    "ResourceSlice",
];

/// The known kind `kind` is most likely a misspelling of: case-insensitively at most two
/// edits away.
pub fn nearest_kind<'a>(kind: &str, known: &[&'a str]) -> Option<&'a str> {
    let kind = kind.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&kind, &k.to_ascii_lowercase()), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(idx) => message[..idx].to_string(),
        None => message.to_string(),
    }
}

/// The line (1-based) of `package …` in a Rego source, and the package path.
pub fn package_of(source: &str) -> Option<(usize, String)> {
    source.lines().enumerate().find_map(|(i, line)| {
        let rest = line.trim().strip_prefix("package ")?;
        Some((i + 1, rest.trim().to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"# METADATA
# title: Containers run as non-root
# description: Every container must run as non-root.
# custom:
#   id: pod-run-as-non-root
#   severity: high
#   kinds: [Pod, Deployment]
#   action: {development: warn, staging: deny, production: deny}
#   parameters:
#     min_length:
#       type: integer
#       default: {development: 32, staging: 32, production: 64}
package regate.policies.pod_run_as_non_root
"#;

    #[test]
    fn category_is_optional_and_kept() -> Result<(), MetadataError> {
        let with = POLICY.replace(
            "#   severity: high\n",
            "#   severity: high\n#   category: Pod Security\n",
        );
        let meta = parse(&with)?.ok_or(MetadataError {
            line: 0,
            column: 0,
            message: "none".into(),
        })?;
        assert_eq!(meta.category.as_deref(), Some("Pod Security"));
        let blank = POLICY.replace(
            "#   severity: high\n",
            "#   severity: high\n#   category: \"\"\n",
        );
        assert_eq!(parse(&blank)?.and_then(|m| m.category), None);
        Ok(())
    }

    #[test]
    fn parses_block() -> Result<(), MetadataError> {
        let meta = parse(POLICY)?.ok_or(MetadataError {
            line: 0,
            column: 0,
            message: "none".into(),
        })?;
        assert_eq!(meta.id, "pod-run-as-non-root");
        assert_eq!(meta.default_action(Environment::Development), Action::Warn);
        assert_eq!(meta.severity, Severity::High);
        assert_eq!(meta.category, None);
        let p = &meta.parameters["min_length"];
        let default = p.default.clone().unwrap_or_default();
        assert_eq!(
            p.resolve(&default, Environment::Production),
            Some(serde_json::json!(64))
        );
        assert_eq!(package_of(POLICY).map(|p| p.0), Some(13));
        Ok(())
    }

    #[test]
    fn error_points_at_file_line() {
        let bad = POLICY.replace("severity: high", "severity: hihg");
        let err = parse(&bad).err();
        assert_eq!(err.as_ref().map(|e| e.line), Some(6), "{err:?}");
    }

    #[test]
    fn misspelt_kinds_find_their_nearest() {
        assert_eq!(nearest_kind("Confgmap", BUILT_IN_KINDS), Some("ConfigMap"));
        assert_eq!(
            nearest_kind("deployment", BUILT_IN_KINDS),
            Some("Deployment")
        );
        assert_eq!(nearest_kind("Certificate", &["Ingress"]), None);
    }

    #[test]
    fn every_metadata_problem_at_once_at_its_line() {
        let text = "# METADATA\n# title: t\n# custom:\n#   id: Bad_Id\n#   severity: low\n#   kinds: []\n#   operations: [DELETE]\npackage regate.policies.x\n";
        let errors = parse_all(text).err().unwrap_or_default();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![4, 6, 7], "{errors:?}");
    }

    #[test]
    fn library_file_has_none() {
        assert_eq!(parse("package regate.lib.x\n"), Ok(None));
    }
}
