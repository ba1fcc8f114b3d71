//! A Constraint's `spec.match`: which objects it judges. The semantics follow Gatekeeper's
//! matcher (`pkg/mutation/match`): every criterion that is set must hold, an unset one holds.

use std::collections::BTreeMap;

pub use crate::environment::Labels;

use serde::Deserialize;
use serde_json::Value;

use crate::policy::RequiredLabel;

/// A `spec.match` problem: the constraint is rejected, as Gatekeeper's schema would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.match.{field}: {message}")]
pub struct MatchError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> MatchError {
    MatchError {
        field: field.into(),
        message: message.into(),
    }
}

/// Gatekeeper's namespace and name patterns: a literal, or one `*` at the start and/or the end
/// (`kube-*`, `*-system`, `*prod*`). No other glob syntax, so a `globset` pattern would accept
/// more than Gatekeeper does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wildcard {
    form: Form,
    /// The pattern without its stars.
    text: String,
}

/// Where a pattern's stars are, read once when it is parsed rather than at every match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Any,
    Exact,
    Prefix,
    Suffix,
    Contains,
}

impl Wildcard {
    pub fn parse(field: &str, pattern: &str) -> Result<Wildcard, MatchError> {
        let inner = pattern.trim_start_matches('*').trim_end_matches('*');
        let stars_inside = inner.contains('*');
        let too_many =
            pattern.len() - inner.len() > 2 || pattern.starts_with("**") || pattern.ends_with("**");
        if stars_inside || (too_many && pattern != "*") {
            return Err(err(
                field,
                format!("{pattern:?}: only a leading and/or trailing `*` is allowed"),
            ));
        }
        let leading = pattern.starts_with('*');
        let trailing = pattern.len() > 1 && pattern.ends_with('*');
        let form = match (leading, trailing) {
            _ if pattern == "*" => Form::Any,
            (true, true) => Form::Contains,
            (true, false) => Form::Suffix,
            (false, true) => Form::Prefix,
            (false, false) => Form::Exact,
        };
        Ok(Wildcard {
            form,
            text: inner.to_string(),
        })
    }

    pub fn matches(&self, candidate: &str) -> bool {
        let text = self.text.as_str();
        match self.form {
            Form::Any => true,
            Form::Exact => text == candidate,
            Form::Prefix => candidate.starts_with(text),
            Form::Suffix => candidate.ends_with(text),
            Form::Contains => candidate.contains(text),
        }
    }
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A Kubernetes label selector; `matchLabels` and `matchExpressions` are ANDed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSelector {
    #[serde(default, rename = "matchLabels")]
    match_labels: Option<BTreeMap<String, String>>,
    #[serde(default, rename = "matchExpressions")]
    match_expressions: Option<Vec<RawExpression>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpression {
    key: String,
    operator: String,
    #[serde(default)]
    values: Option<Vec<String>>,
}

impl LabelSelector {
    pub fn parse(field: &str, value: &Value) -> Result<LabelSelector, MatchError> {
        let raw: RawSelector =
            serde_json::from_value(value.clone()).map_err(|e| err(field, e.to_string()))?;
        let mut requirements = Vec::new();
        for (k, v) in raw.match_labels.unwrap_or_default() {
            requirements.push(Requirement::In(k, vec![v]));
        }
        for (i, e) in raw
            .match_expressions
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let at = format!("{field}.matchExpressions[{i}]");
            if e.key.is_empty() {
                return Err(err(at, "key must not be empty"));
            }
            let values = e.values.unwrap_or_default();
            let req = match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(err(
                        at,
                        format!("operator {} needs at least one value", e.operator),
                    ));
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(err(at, format!("operator {} takes no values", e.operator)));
                }
                "In" => Requirement::In(e.key, values),
                "NotIn" => Requirement::NotIn(e.key, values),
                "Exists" => Requirement::Exists(e.key),
                "DoesNotExist" => Requirement::DoesNotExist(e.key),
                other => {
                    return Err(err(
                        at,
                        format!("operator {other:?} is not one of In, NotIn, Exists, DoesNotExist"),
                    ));
                }
            };
            requirements.push(req);
        }
        Ok(LabelSelector { requirements })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    All,
    Cluster,
    Namespaced,
}

/// `apiGroups` × `kinds`; an empty list or `*` matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindSelector {
    pub groups: Vec<String>,
    pub kinds: Vec<String>,
}

impl KindSelector {
    /// A list holding `*` is kept as the empty list, which means the same, so that matching
    /// compares each name once.
    fn new(groups: Vec<String>, kinds: Vec<String>) -> KindSelector {
        let any = |list: Vec<String>| {
            if list.iter().any(|x| x == "*") {
                Vec::new()
            } else {
                list
            }
        };
        KindSelector {
            groups: any(groups),
            kinds: any(kinds),
        }
    }

    fn matches(&self, group: &str, kind: &str) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        any(&self.kinds, kind) && any(&self.groups, group)
    }
}

/// A compiled `spec.match`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Match {
    pub kinds: Vec<KindSelector>,
    pub scope: Scope,
    pub namespaces: Vec<Wildcard>,
    pub excluded_namespaces: Vec<Wildcard>,
    pub label_selector: Option<LabelSelector>,
    pub namespace_selector: Option<LabelSelector>,
    pub name: Option<Wildcard>,
    pub source: Source,
}

/// `spec.match.source`: original objects, the ones expansion generates, or both (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    #[default]
    All,
    Original,
    Generated,
}

/// What the matcher needs to know about the object under review.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    /// The request's namespace, else the object's own; `None` for cluster-scoped objects.
    pub namespace: Option<&'a str>,
    pub labels: &'a Labels,
    /// The labels of the object's namespace, when known.
    pub namespace_labels: Option<&'a Labels>,
    /// Whether the object was generated by an ExpansionTemplate (not sent by the apiserver).
    pub generated: bool,
}

impl Target<'_> {
    fn is_namespace(&self) -> bool {
        self.kind == "Namespace" && self.group.is_empty()
    }

    /// The namespace the namespace criteria look at: a Namespace is judged by its own name.
    fn namespace_name(&self) -> Option<&str> {
        judged_namespace(self.group, self.kind, self.name, self.namespace)
    }
}

/// The namespace `spec.match`'s namespace criteria look at for an object of `group` and
/// `kind` named `name` in `namespace`: a Namespace is judged by its own name.
pub fn judged_namespace<'a>(
    group: &str,
    kind: &str,
    name: &'a str,
    namespace: Option<&'a str>,
) -> Option<&'a str> {
    if kind == "Namespace" && group.is_empty() {
        Some(name)
    } else {
        namespace
    }
}

fn strings(field: &str, value: Option<&Value>) -> Result<Vec<String>, MatchError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err(field, format!("{v} is not a string")))
            })
            .collect(),
        Some(other) => Err(err(field, format!("{other} is not a list of strings"))),
    }
}

const KNOWN_FIELDS: &[&str] = &[
    "kinds",
    "scope",
    "namespaces",
    "excludedNamespaces",
    "labelSelector",
    "namespaceSelector",
    "name",
    "source",
];

impl Match {
    /// Parses `spec.match` (absent: match everything).
    pub fn parse(value: Option<&Value>) -> Result<Match, MatchError> {
        let map = match value {
            None | Some(Value::Null) => return Ok(Match::default()),
            Some(Value::Object(map)) => map,
            Some(other) => return Err(err("", format!("{other} is not an object"))),
        };
        if let Some(unknown) = map.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(err(unknown.clone(), "unknown field"));
        }
        let mut m = Match::default();
        if let Some(kinds) = map.get("kinds") {
            let Value::Array(items) = kinds else {
                return Err(err("kinds", "must be a list of {apiGroups, kinds}"));
            };
            for (i, item) in items.iter().enumerate() {
                let at = format!("kinds[{i}]");
                let Value::Object(entry) = item else {
                    return Err(err(at, "must be an object with apiGroups and kinds"));
                };
                m.kinds.push(KindSelector::new(
                    strings(&format!("{at}.apiGroups"), entry.get("apiGroups"))?,
                    strings(&format!("{at}.kinds"), entry.get("kinds"))?,
                ));
            }
        }
        m.scope = match map.get("scope").and_then(Value::as_str) {
            None | Some("*") => Scope::All,
            Some("Cluster") => Scope::Cluster,
            Some("Namespaced") => Scope::Namespaced,
            Some(other) => {
                return Err(err(
                    "scope",
                    format!("{other:?} is not one of *, Cluster, Namespaced"),
                ))
            }
        };
        for (field, out) in [
            ("namespaces", &mut m.namespaces),
            ("excludedNamespaces", &mut m.excluded_namespaces),
        ] {
            for p in strings(field, map.get(field))? {
                out.push(Wildcard::parse(field, &p)?);
            }
        }
        if let Some(sel) = map.get("labelSelector").filter(|v| !v.is_null()) {
            m.label_selector = Some(LabelSelector::parse("labelSelector", sel)?);
        }
        if let Some(sel) = map.get("namespaceSelector").filter(|v| !v.is_null()) {
            m.namespace_selector = Some(LabelSelector::parse("namespaceSelector", sel)?);
        }
        match map.get("name") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => m.name = Some(Wildcard::parse("name", s)?),
            Some(other) => return Err(err("name", format!("{other} is not a string"))),
        }
        m.source = match map.get("source") {
            None | Some(Value::Null) => Source::All,
            Some(Value::String(s)) => match s.as_str() {
                "" | "All" => Source::All,
                "Original" => Source::Original,
                "Generated" => Source::Generated,
                other => {
                    return Err(err(
                        "source",
                        format!("{other:?} is not one of All, Original, Generated"),
                    ))
                }
            },
            Some(other) => return Err(err("source", format!("{other} is not a string"))),
        };
        Ok(m)
    }

    /// The kinds to index the constraint under; `["*"]` when any kind can match.
    pub fn index_kinds(&self) -> Vec<String> {
        if self.kinds.is_empty()
            || self
                .kinds
                .iter()
                .any(|k| k.kinds.is_empty() || k.kinds.iter().any(|x| x == "*"))
        {
            return vec!["*".to_string()];
        }
        let mut out: Vec<String> = self
            .kinds
            .iter()
            .flat_map(|k| k.kinds.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The namespaces to index the constraint under: the names of `namespaces` when every
    /// entry is a literal name; empty (any namespace) when there are none or one is a pattern.
    /// `excludedNamespaces` and the selectors narrow it further at match time.
    pub fn index_namespaces(&self) -> Vec<String> {
        if self.namespaces.iter().any(|w| w.form != Form::Exact) {
            return Vec::new();
        }
        let mut out: Vec<String> = self.namespaces.iter().map(|w| w.text.clone()).collect();
        out.sort();
        out.dedup();
        out
    }

    /// A label the constraint selects only objects carrying: the first `matchLabels` entry or
    /// `In` expression of `labelSelector` (the key with its values), else its first `Exists`
    /// expression (the key, any value), if any.
    pub fn index_label(&self) -> Option<RequiredLabel> {
        let requirements = &self.label_selector.as_ref()?.requirements;
        let with_values = requirements.iter().find_map(|r| match r {
            Requirement::In(key, values) => Some(RequiredLabel {
                key: key.clone(),
                values: values.clone(),
            }),
            _ => None,
        });
        with_values.or_else(|| {
            requirements.iter().find_map(|r| match r {
                Requirement::Exists(key) => Some(RequiredLabel {
                    key: key.clone(),
                    values: Vec::new(),
                }),
                _ => None,
            })
        })
    }

    pub fn matches(&self, t: &Target<'_>) -> bool {
        let source_ok = match self.source {
            Source::All => true,
            Source::Original => !t.generated,
            Source::Generated => t.generated,
        };
        if !source_ok {
            return false;
        }
        if !self.kinds.is_empty() && !self.kinds.iter().any(|k| k.matches(t.group, t.kind)) {
            return false;
        }
        let has_namespace = t.namespace.is_some();
        let scope_ok = match self.scope {
            Scope::All => true,
            Scope::Cluster => t.is_namespace() || !has_namespace,
            Scope::Namespaced => !t.is_namespace() && has_namespace,
        };
        if !scope_ok {
            return false;
        }
        // A cluster-scoped object (other than a Namespace) cannot be ruled out by namespace.
        if let Some(ns) = t.namespace_name() {
            if !self.namespaces.is_empty() && !self.namespaces.iter().any(|w| w.matches(ns)) {
                return false;
            }
            if self.excluded_namespaces.iter().any(|w| w.matches(ns)) {
                return false;
            }
        }
        if let Some(sel) = &self.label_selector {
            if !sel.matches(t.labels) {
                return false;
            }
        }
        if let Some(sel) = &self.namespace_selector {
            let empty = Labels::new();
            if t.is_namespace() {
                if !sel.matches(t.labels) {
                    return false;
                }
            } else if has_namespace {
                // Gatekeeper errors when it cannot find the namespace; regate judges an unknown
                // namespace (offline `eval`, a namespace not yet seen) as one without labels.
                if !sel.matches(t.namespace_labels.unwrap_or(&empty)) {
                    return false;
                }
            }
        }
        if let Some(name) = &self.name {
            if !name.matches(t.name) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn target<'a>(
        kind: &'a str,
        name: &'a str,
        namespace: Option<&'a str>,
        labels: &'a Labels,
        ns_labels: Option<&'a Labels>,
    ) -> Target<'a> {
        Target {
            group: if kind == "Deployment" { "apps" } else { "" },
            kind,
            name,
            namespace,
            labels,
            namespace_labels: ns_labels,
            generated: false,
        }
    }

    #[test]
    fn source_selects_original_or_generated_objects() {
        let none = labels(&[]);
        let pod = target("Pod", "p", Some("default"), &none, None);
        let generated = Target {
            generated: true,
            ..pod
        };
        for (source, original, expanded) in [
            (json!("All"), true, true),
            (json!("Original"), true, false),
            (json!("Generated"), false, true),
        ] {
            let m = Match::parse(Some(&json!({"source": source}))).unwrap();
            assert_eq!(m.matches(&pod), original, "{source}");
            assert_eq!(m.matches(&generated), expanded, "{source}");
        }
        assert!(Match::parse(Some(&json!({"source": "Fake"}))).is_err());
    }

    #[test]
    fn wildcards_follow_gatekeeper() {
        let w = |p: &str| Wildcard::parse("namespaces", p).unwrap();
        assert!(w("kube-*").matches("kube-system"));
        assert!(!w("kube-*").matches("default"));
        assert!(w("*-system").matches("gatekeeper-system"));
        assert!(w("*prod*").matches("eu-prod-1"));
        assert!(w("default").matches("default"));
        assert!(!w("default").matches("default2"));
        assert!(w("*").matches("anything"));
        assert!(Wildcard::parse("namespaces", "a*b").is_err());
        assert!(Wildcard::parse("namespaces", "**x").is_err());
    }

    #[test]
    fn kinds_and_groups() {
        let m = Match::parse(Some(
            &json!({"kinds": [{"apiGroups": ["apps"], "kinds": ["Deployment"]}]}),
        ))
        .unwrap();
        let l = labels(&[]);
        assert!(m.matches(&target("Deployment", "d", Some("a"), &l, None)));
        assert!(!m.matches(&target("Pod", "p", Some("a"), &l, None)));
        assert_eq!(m.index_kinds(), vec!["Deployment".to_string()]);
        let any = Match::parse(Some(
            &json!({"kinds": [{"apiGroups": ["*"], "kinds": ["*"]}]}),
        ))
        .unwrap();
        assert!(any.matches(&target("Pod", "p", None, &l, None)));
        assert_eq!(any.index_kinds(), vec!["*".to_string()]);
        let wrong_group = Match::parse(Some(
            &json!({"kinds": [{"apiGroups": [""], "kinds": ["Deployment"]}]}),
        ))
        .unwrap();
        assert!(!wrong_group.matches(&target("Deployment", "d", Some("a"), &l, None)));
    }

    #[test]
    fn namespaces_and_exclusions() {
        let m = Match::parse(Some(
            &json!({"namespaces": ["prod-*"], "excludedNamespaces": ["prod-legacy"]}),
        ))
        .unwrap();
        let l = labels(&[]);
        assert!(m.matches(&target("Pod", "p", Some("prod-eu"), &l, None)));
        assert!(!m.matches(&target("Pod", "p", Some("prod-legacy"), &l, None)));
        assert!(!m.matches(&target("Pod", "p", Some("dev"), &l, None)));
        // Cluster-scoped objects cannot be excluded by namespace.
        assert!(m.matches(&target("ClusterRole", "r", None, &l, None)));
        // A Namespace is judged by its own name.
        assert!(m.matches(&target("Namespace", "prod-x", None, &l, None)));
        assert!(!m.matches(&target("Namespace", "dev", None, &l, None)));
        // Indexed only under literal names: a pattern may select any namespace.
        assert_eq!(m.index_namespaces(), Vec::<String>::new());
        let exact = Match::parse(Some(&json!({"namespaces": ["b", "a", "b"]}))).unwrap();
        assert_eq!(exact.index_namespaces(), vec!["a", "b"]);
        let mixed = Match::parse(Some(&json!({"namespaces": ["a", "b*"]}))).unwrap();
        assert_eq!(mixed.index_namespaces(), Vec::<String>::new());
        assert_eq!(Match::default().index_namespaces(), Vec::<String>::new());
        // The first label every selected object carries, if any.
        let index_label = |selector: Value| {
            Match::parse(Some(&json!({"labelSelector": selector})))
                .unwrap()
                .index_label()
        };
        let label = |key: &str, values: &[&str]| {
            Some(RequiredLabel {
                key: key.to_string(),
                values: values.iter().map(|v| v.to_string()).collect(),
            })
        };
        assert_eq!(
            index_label(json!({"matchLabels": {"b": "1", "a": "2"}})),
            label("a", &["2"])
        );
        let expressions = json!({"matchExpressions": [
            {"key": "x", "operator": "NotIn", "values": ["1"]},
            {"key": "y", "operator": "DoesNotExist"},
            {"key": "z", "operator": "Exists"},
            {"key": "w", "operator": "In", "values": ["1", "2"]},
        ]});
        assert_eq!(index_label(expressions), label("w", &["1", "2"]));
        let exists = json!({"matchExpressions": [{"key": "z", "operator": "Exists"}]});
        assert_eq!(index_label(exists), label("z", &[]));
        let none = json!({"matchExpressions": [{"key": "y", "operator": "DoesNotExist"}]});
        assert_eq!(index_label(none), None);
        assert_eq!(index_label(json!({})), None);
    }

    #[test]
    fn scope() {
        let l = labels(&[]);
        let cluster = Match::parse(Some(&json!({"scope": "Cluster"}))).unwrap();
        assert!(cluster.matches(&target("ClusterRole", "r", None, &l, None)));
        assert!(cluster.matches(&target("Namespace", "n", None, &l, None)));
        assert!(!cluster.matches(&target("Pod", "p", Some("a"), &l, None)));
        let namespaced = Match::parse(Some(&json!({"scope": "Namespaced"}))).unwrap();
        assert!(namespaced.matches(&target("Pod", "p", Some("a"), &l, None)));
        assert!(!namespaced.matches(&target("Namespace", "n", None, &l, None)));
        assert!(Match::parse(Some(&json!({"scope": "cluster"}))).is_err());
    }

    #[test]
    fn label_selectors() {
        let m = Match::parse(Some(&json!({"labelSelector": {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["db"]},
            {"key": "owner", "operator": "Exists"},
        ]}})))
        .unwrap();
        let ok = labels(&[("app", "web"), ("owner", "me")]);
        let db = labels(&[("app", "web"), ("owner", "me"), ("tier", "db")]);
        let orphan = labels(&[("app", "web")]);
        assert!(m.matches(&target("Pod", "p", Some("a"), &ok, None)));
        assert!(!m.matches(&target("Pod", "p", Some("a"), &db, None)));
        assert!(!m.matches(&target("Pod", "p", Some("a"), &orphan, None)));
        assert!(Match::parse(Some(
            &json!({"labelSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}})
        ))
        .is_err());
        assert!(Match::parse(Some(&json!({"labelSelector": {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}}))).is_err());
        assert!(Match::parse(Some(
            &json!({"labelSelector": {"matchExpressions": [{"key": "a", "operator": "Has"}]}})
        ))
        .is_err());
    }

    #[test]
    fn namespace_selector() {
        let m = Match::parse(Some(
            &json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}}),
        ))
        .unwrap();
        let none = labels(&[]);
        let prod = labels(&[("env", "prod")]);
        assert!(m.matches(&target("Pod", "p", Some("a"), &none, Some(&prod))));
        assert!(!m.matches(&target("Pod", "p", Some("a"), &none, Some(&none))));
        // Unknown namespace: judged as one without labels.
        assert!(!m.matches(&target("Pod", "p", Some("a"), &none, None)));
        // A Namespace is selected by its own labels; other cluster-scoped objects always match.
        assert!(m.matches(&target("Namespace", "a", None, &prod, None)));
        assert!(m.matches(&target("ClusterRole", "r", None, &none, None)));
    }

    #[test]
    fn names() {
        let m = Match::parse(Some(&json!({"name": "web-*"}))).unwrap();
        let l = labels(&[]);
        assert!(m.matches(&target("Pod", "web-1", Some("a"), &l, None)));
        assert!(!m.matches(&target("Pod", "db-1", Some("a"), &l, None)));
        assert!(Match::parse(Some(&json!({"nmae": "x"}))).is_err());
    }
}
