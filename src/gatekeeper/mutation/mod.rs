//! Gatekeeper mutators (`mutations.gatekeeper.sh`): `Assign`, `AssignMetadata`, `ModifySet` and
//! `AssignImage`, loaded from the policy directory beside templates and constraints, and run by
//! `/mutate` (and `eval`) after the native policies' `patch` rules.
//!
//! Semantics follow Gatekeeper's `pkg/mutation` and its documentation
//! (<https://open-policy-agent.github.io/gatekeeper/website/docs/mutation>): `applyTo` (exact
//! group, version and kind, and `operations`) and `match` select objects; mutators run sorted by
//! kind and name, over and over until an iteration changes nothing, at most one iteration more
//! than there are mutators (then the mutation fails as not converging and nothing is changed).
//! The result is therefore stable: mutating it again changes nothing.

mod apply;
mod image;
pub mod path;

use std::sync::Arc;

use serde_json::Value;

use crate::gatekeeper::matching::{Match, Target};
use crate::gatekeeper::template::Origin;
use crate::policy::error::LoadError;
use crate::policy::mutators::{MutationFailure, MutationRequest, Mutators};
use crate::policy::source::PolicySource;

use apply::Setter;
use path::{Node, Path, Tester};

pub const MUTATION_GROUP: &str = "mutations.gatekeeper.sh";

/// The four mutator kinds, in Gatekeeper's order (mutators run sorted by kind, then name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MutatorKind {
    Assign,
    AssignImage,
    AssignMetadata,
    ModifySet,
}

impl MutatorKind {
    fn parse(kind: &str) -> Option<MutatorKind> {
        match kind {
            "Assign" => Some(MutatorKind::Assign),
            "AssignImage" => Some(MutatorKind::AssignImage),
            "AssignMetadata" => Some(MutatorKind::AssignMetadata),
            "ModifySet" => Some(MutatorKind::ModifySet),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MutatorKind::Assign => "Assign",
            MutatorKind::AssignImage => "AssignImage",
            MutatorKind::AssignMetadata => "AssignMetadata",
            MutatorKind::ModifySet => "ModifySet",
        }
    }
}

/// One `applyTo` entry: exact groups, versions and kinds (no globs), and operations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApplyTo {
    groups: Vec<String>,
    versions: Vec<String>,
    kinds: Vec<String>,
    /// Empty: every operation the mutation webhook handles (CREATE and UPDATE).
    operations: Vec<String>,
}

impl ApplyTo {
    fn matches(&self, group: &str, version: &str, kind: &str, operation: &str) -> bool {
        let has = |list: &[String], v: &str| list.iter().any(|x| x == v);
        has(&self.groups, group)
            && has(&self.versions, version)
            && has(&self.kinds, kind)
            && (self.operations.is_empty()
                || has(&self.operations, "*")
                || has(&self.operations, operation))
    }
}

/// Where `assign` takes its value from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    Value(Value),
    /// `fromMetadata.field`: the object's `name` or `namespace`.
    Name,
    Namespace,
}

#[derive(Debug, Clone, PartialEq)]
enum Operation {
    Assign(Source),
    Merge(Vec<Value>),
    Prune(Vec<Value>),
    Image {
        domain: String,
        path: String,
        tag: String,
    },
}

/// One loaded mutator.
#[derive(Debug, Clone)]
pub struct Mutator {
    pub kind: MutatorKind,
    pub name: String,
    /// `Kind/name`: a mutator's identity in messages and decisions (an Assign and a ModifySet
    /// may share a name, as the library's capabilities samples do).
    pub id: String,
    /// Empty for AssignMetadata, which applies to every kind its `match` selects.
    apply_to: Vec<ApplyTo>,
    matcher: Match,
    location: Path,
    tester: Tester,
    operation: Operation,
    file: String,
    line: usize,
}

/// Whether a document is a Gatekeeper mutator (or claims to be: its group is the mutators').
pub fn is_mutator(doc: &Value) -> bool {
    doc.get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .is_some_and(|(g, _)| g == MUTATION_GROUP)
}

fn strings(value: Option<&Value>, field: &str) -> Result<Vec<String>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{field}: {v} is not a string"))
            })
            .collect(),
        Some(_) => Err(format!("{field} is not a list of strings")),
    }
}

fn parse_apply_to(spec: &Value) -> Result<Vec<ApplyTo>, String> {
    let entries = match spec.get("applyTo") {
        None | Some(Value::Null) => return Err("spec.applyTo is required".into()),
        Some(Value::Array(a)) if a.is_empty() => return Err("spec.applyTo is required".into()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("spec.applyTo is not a list".into()),
    };
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let at = format!("spec.applyTo[{i}]");
        let entry = ApplyTo {
            groups: strings(e.get("groups"), &format!("{at}.groups"))?,
            versions: strings(e.get("versions"), &format!("{at}.versions"))?,
            kinds: strings(e.get("kinds"), &format!("{at}.kinds"))?,
            operations: strings(e.get("operations"), &format!("{at}.operations"))?,
        };
        if entry.groups.is_empty() || entry.versions.is_empty() || entry.kinds.is_empty() {
            return Err(format!(
                "{at}: all of groups, versions and kinds must be specified"
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        for op in &entry.operations {
            if !matches!(op.as_str(), "CREATE" | "UPDATE" | "*") {
                return Err(format!(
                    "{at}.operations: {op:?} must be one of CREATE, UPDATE, *"
                ));
            }
            if seen.contains(&op.as_str()) {
                return Err(format!("{at}.operations: duplicate operation {op:?}"));
            }
            seen.push(op.as_str());
        }
        if seen.contains(&"*") && seen.len() > 1 {
            return Err(format!(
                "{at}.operations: \"*\" must not be combined with other operations"
            ));
        }
        out.push(entry);
    }
    Ok(out)
}

fn path_tests(parameters: &Value) -> Result<Vec<(String, String)>, String> {
    match parameters.get("pathTests") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let s = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_string);
                match (s("subPath"), s("condition")) {
                    (Some(p), Some(c)) => Ok((p, c)),
                    _ => Err(format!(
                        "spec.parameters.pathTests[{i}] needs subPath and condition"
                    )),
                }
            })
            .collect(),
        Some(_) => Err("spec.parameters.pathTests is not a list".into()),
    }
}

/// `parameters.assign`: exactly one of `value`, `fromMetadata`, `externalData`; the last is
/// refused by name, since regate calls no external data providers.
fn parse_assign(parameters: &Value) -> Result<Source, String> {
    let assign = parameters
        .get("assign")
        .filter(|a| !a.is_null())
        .ok_or("spec.parameters.assign is required")?;
    let value = assign.get("value").filter(|v| !v.is_null());
    let from = assign.get("fromMetadata").filter(|v| !v.is_null());
    let external = assign.get("externalData").filter(|v| !v.is_null());
    if external.is_some() {
        return Err(
            "spec.parameters.assign.externalData is not supported: regate calls no \
             external data providers; assign a value or fromMetadata instead"
                .into(),
        );
    }
    match (value, from) {
        (Some(_), Some(_)) => Err(
            "spec.parameters.assign must set only one of externalData, value or fromMetadata"
                .into(),
        ),
        (None, None) => {
            Err("spec.parameters.assign must set one of externalData, value or fromMetadata".into())
        }
        (Some(v), None) => Ok(Source::Value(v.clone())),
        (None, Some(f)) => match f.get("field").and_then(Value::as_str) {
            Some("name") => Ok(Source::Name),
            Some("namespace") => Ok(Source::Namespace),
            other => Err(format!(
                "spec.parameters.assign.fromMetadata.field {:?} is not recognized (name or namespace)",
                other.unwrap_or("")
            )),
        },
    }
}

fn is_metadata_root(path: &Path) -> bool {
    path.nodes.first() == Some(&Node::Object("metadata".to_string()))
}

/// Gatekeeper's `CheckKeyNotChanged`: `foo[name: bar].name` would change the element's key.
fn check_key_not_changed(path: &Path) -> Result<(), String> {
    let n = path.nodes.len();
    if n < 2 {
        return Ok(());
    }
    if let (Node::List { key, .. }, Node::Object(field)) = (&path.nodes[n - 2], &path.nodes[n - 1])
    {
        if key == field {
            return Err(format!(
                "location {:?}: changing the item key is not allowed",
                path.text
            ));
        }
    }
    Ok(())
}

impl Mutator {
    /// Parses and checks one mutator document, as Gatekeeper's webhook and controller do.
    pub fn parse(doc: &Value, origin: &Origin) -> Result<Mutator, LoadError> {
        let kind_text = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let Some(kind) = MutatorKind::parse(kind_text) else {
            return Err(origin.error(format!(
                "Gatekeeper {kind_text} ({MUTATION_GROUP}) is not a mutator regate knows \
                 (Assign, AssignMetadata, ModifySet, AssignImage)"
            )));
        };
        let fail = |key: &str, message: String| {
            origin.error_at(key, format!("{} {name}: {message}", kind.as_str()))
        };
        if name.is_empty() {
            return Err(origin.error(format!("{}: metadata.name is required", kind.as_str())));
        }
        if name.len() > 63 {
            return Err(fail(
                "name",
                "the name must be at most 63 characters".into(),
            ));
        }
        let empty = Value::Null;
        let spec = doc.get("spec").unwrap_or(&empty);
        let text = spec
            .get("location")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("location", "spec.location is required".into()))?;
        let location =
            path::parse(text).map_err(|e| fail("location", format!("invalid location: {e}")))?;
        let matcher = Match::parse(spec.get("match")).map_err(|e| fail("match", e.to_string()))?;
        let parameters = spec.get("parameters").unwrap_or(&empty);
        let last_is_list = location.nodes.last().is_some_and(Node::is_list);
        let (apply_to, tester, operation) = match kind {
            MutatorKind::AssignMetadata => {
                let valid = location.nodes.len() == 3
                    && location.nodes.iter().all(|n| !n.is_list())
                    && is_metadata_root(&location)
                    && matches!(&location.nodes[1], Node::Object(f) if f == "labels" || f == "annotations");
                if !valid {
                    return Err(fail(
                        "location",
                        format!(
                            "invalid location {text:?}: must be metadata.labels.<key> or metadata.annotations.<key>"
                        ),
                    ));
                }
                let source = parse_assign(parameters).map_err(|m| fail("assign", m))?;
                if let Source::Value(v) = &source {
                    if !v.is_string() {
                        return Err(fail(
                            "value",
                            "spec.parameters.assign.value must be a string".into(),
                        ));
                    }
                }
                // AssignMetadata only adds: an existing label or annotation is never changed.
                let tester = Tester::must_not_exist(&location);
                (Vec::new(), tester, Operation::Assign(source))
            }
            MutatorKind::Assign => {
                if is_metadata_root(&location) {
                    return Err(fail(
                        "location",
                        "Assign can't change metadata (use AssignMetadata)".into(),
                    ));
                }
                check_key_not_changed(&location).map_err(|m| fail("location", m))?;
                let source = parse_assign(parameters).map_err(|m| fail("assign", m))?;
                if let Some(Node::List { key, value }) = location.nodes.last() {
                    let Source::Value(v) = &source else {
                        return Err(fail(
                            "fromMetadata",
                            "cannot assign a metadata field to a list".into(),
                        ));
                    };
                    let Some(value) = value else {
                        return Err(fail("location", "can't append to a globbed list".into()));
                    };
                    if !v
                        .as_object()
                        .and_then(|o| o.get(key))
                        .is_some_and(|k| value.matches(k))
                    {
                        return Err(fail(
                            "value",
                            format!(
                                "only objects whose {key} is the location's ({}) can be added to a keyed list",
                                value.to_json()
                            ),
                        ));
                    }
                }
                let tests = path_tests(parameters).map_err(|m| fail("pathTests", m))?;
                let tester =
                    Tester::new(&location, &tests).map_err(|e| fail("pathTests", e.to_string()))?;
                let apply_to = parse_apply_to(spec).map_err(|m| fail("applyTo", m))?;
                (apply_to, tester, Operation::Assign(source))
            }
            MutatorKind::ModifySet => {
                if is_metadata_root(&location) {
                    return Err(fail("location", "ModifySet can't change metadata".into()));
                }
                if last_is_list {
                    return Err(fail(
                        "location",
                        "the final node of a ModifySet location cannot be a keyed list".into(),
                    ));
                }
                let values = match parameters.pointer("/values/fromList") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(v)) => v.clone(),
                    Some(_) => {
                        return Err(fail(
                            "fromList",
                            "spec.parameters.values.fromList is not a list".into(),
                        ))
                    }
                };
                let operation = match parameters.get("operation").and_then(Value::as_str) {
                    None | Some("merge") => Operation::Merge(values),
                    Some("prune") => Operation::Prune(values),
                    Some(other) => {
                        return Err(fail(
                            "operation",
                            format!("operation {other:?} is not merge or prune"),
                        ))
                    }
                };
                let tests = path_tests(parameters).map_err(|m| fail("pathTests", m))?;
                let tester =
                    Tester::new(&location, &tests).map_err(|e| fail("pathTests", e.to_string()))?;
                let apply_to = parse_apply_to(spec).map_err(|m| fail("applyTo", m))?;
                (apply_to, tester, operation)
            }
            MutatorKind::AssignImage => {
                if is_metadata_root(&location) {
                    return Err(fail("location", "AssignImage can't change metadata".into()));
                }
                if last_is_list {
                    return Err(fail(
                        "location",
                        "AssignImage cannot mutate list-type fields".into(),
                    ));
                }
                check_key_not_changed(&location).map_err(|m| fail("location", m))?;
                let s = |k: &str| {
                    parameters
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                let (domain, image_path, tag) =
                    (s("assignDomain"), s("assignPath"), s("assignTag"));
                image::validate(&domain, &image_path, &tag)
                    .map_err(|m| fail("parameters", format!("invalid parameters: {m}")))?;
                let tests = path_tests(parameters).map_err(|m| fail("pathTests", m))?;
                let tester =
                    Tester::new(&location, &tests).map_err(|e| fail("pathTests", e.to_string()))?;
                let apply_to = parse_apply_to(spec).map_err(|m| fail("applyTo", m))?;
                (
                    apply_to,
                    tester,
                    Operation::Image {
                        domain,
                        path: image_path,
                        tag,
                    },
                )
            }
        };
        Ok(Mutator {
            kind,
            id: format!("{}/{name}", kind.as_str()),
            name,
            apply_to,
            matcher,
            location,
            tester,
            operation,
            file: origin.file.clone(),
            line: origin.line,
        })
    }

    /// Whether this mutator selects the object as it is now (labels may have been changed by
    /// an earlier mutator, as in Gatekeeper).
    fn selects(&self, object: &Value, request: &MutationRequest<'_>) -> bool {
        let api_version = object.get("apiVersion").and_then(Value::as_str);
        let kind = object.get("kind").and_then(Value::as_str);
        let (group, version, kind) = match (api_version, kind) {
            (Some(v), Some(k)) => {
                let (g, v) = v.split_once('/').unwrap_or(("", v));
                (g, v, k)
            }
            _ => (request.group, request.version, request.kind),
        };
        if self.kind != MutatorKind::AssignMetadata
            && !self
                .apply_to
                .iter()
                .any(|a| a.matches(group, version, kind, request.operation))
        {
            return false;
        }
        let meta = object.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let namespace = request.namespace.or_else(|| {
            meta.and_then(|m| m.get("namespace"))
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
        });
        let labels: crate::gatekeeper::matching::Labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .map(|l| {
                l.iter()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let namespace_labels = match (&self.matcher.namespace_selector, namespace) {
            (Some(_), Some(ns)) => request.resolver.namespace_labels(ns),
            _ => None,
        };
        self.matcher.matches(&Target {
            group,
            kind,
            name,
            namespace,
            labels: &labels,
            namespace_labels: namespace_labels.as_ref(),
            generated: false,
        })
    }

    /// Applies the mutator once; whether the object changed.
    fn apply(&self, object: &mut Value, request: &MutationRequest<'_>) -> Result<bool, String> {
        let setter = match &self.operation {
            Operation::Assign(Source::Value(v)) => Setter::Value(v.clone()),
            Operation::Assign(source) => {
                let meta = |k: &str| {
                    object
                        .pointer(&format!("/metadata/{k}"))
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                };
                let value = match source {
                    Source::Name => meta("name").unwrap_or(""),
                    _ => meta("namespace").or(request.namespace).unwrap_or(""),
                };
                Setter::Value(Value::String(value.to_string()))
            }
            Operation::Merge(v) => Setter::Merge(v.clone()),
            Operation::Prune(v) => Setter::Prune(v.clone()),
            Operation::Image { domain, path, tag } => Setter::Image {
                domain: domain.clone(),
                path: path.clone(),
                tag: tag.clone(),
            },
        };
        apply::apply(&self.location, &self.tester, &setter, object).map(|o| o.changed)
    }

    /// Kinds this mutator may change (`*` for AssignMetadata, which has no `applyTo`).
    fn kinds(&self) -> Vec<String> {
        if self.kind == MutatorKind::AssignMetadata {
            return self.matcher.index_kinds();
        }
        self.apply_to
            .iter()
            .flat_map(|a| a.kinds.iter().cloned())
            .collect()
    }
}

/// What a mutator's location says a node is (Gatekeeper's `pkg/mutation/schema` node types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemaType {
    /// Assign's last node: any value.
    Unknown,
    Object,
    List,
    /// ModifySet's last node: a list of values.
    Set,
    /// AssignImage's last node: a string.
    String,
}

impl SchemaType {
    fn describe(self) -> &'static str {
        match self {
            SchemaType::Unknown => "anything",
            SchemaType::Object => "an object",
            SchemaType::List => "a keyed list",
            SchemaType::Set => "a list of values (ModifySet)",
            SchemaType::String => "an image string (AssignImage)",
        }
    }
}

impl Mutator {
    /// The type the location gives the node at `depth`: the kind of the next node, or the
    /// mutator's terminal type at the end.
    fn schema_type(&self, depth: usize) -> SchemaType {
        match self.location.nodes.get(depth + 1) {
            Some(Node::Object(_)) => SchemaType::Object,
            Some(Node::List { .. }) => SchemaType::List,
            None => match self.kind {
                MutatorKind::ModifySet => SchemaType::Set,
                MutatorKind::AssignImage => SchemaType::String,
                _ => SchemaType::Unknown,
            },
        }
    }

    /// A group/version/kind both mutators apply to, if any.
    fn shared_kind(&self, other: &Mutator) -> Option<String> {
        for a in &self.apply_to {
            for b in &other.apply_to {
                for g in a.groups.iter().filter(|g| b.groups.contains(g)) {
                    for v in a.versions.iter().filter(|v| b.versions.contains(v)) {
                        if let Some(k) = a.kinds.iter().find(|k| b.kinds.contains(k)) {
                            let gv = if g.is_empty() {
                                v.clone()
                            } else {
                                format!("{g}/{v}")
                            };
                            return Some(format!("{gv} {k}"));
                        }
                    }
                }
            }
        }
        None
    }
}

/// Gatekeeper's schema conflict between two mutators of one kind of object: their locations
/// make one node two different things (an object and a list, lists keyed by two different
/// fields, a ModifySet list extended by another path...). Gatekeeper then applies neither;
/// regate refuses to load them. AssignMetadata has no schema.
fn schema_conflict(a: &Mutator, b: &Mutator) -> Option<String> {
    if a.kind == MutatorKind::AssignMetadata || b.kind == MutatorKind::AssignMetadata {
        return None;
    }
    let kind = a.shared_kind(b)?;
    let key = |n: &Node| match n {
        Node::Object(f) => f.clone(),
        Node::List { key, .. } => key.clone(),
    };
    for (i, (na, nb)) in a.location.nodes.iter().zip(&b.location.nodes).enumerate() {
        if key(na) != key(nb) {
            if na.is_list() && nb.is_list() {
                return Some(format!(
                    "for {kind}, {} is a list keyed by {:?} in {} and by {:?} in {}",
                    a.location.text_to(i.saturating_sub(1)),
                    key(na),
                    a.id,
                    key(nb),
                    b.id
                ));
            }
            return None;
        }
        let (ta, tb) = (a.schema_type(i), b.schema_type(i));
        if ta != SchemaType::Unknown && tb != SchemaType::Unknown && ta != tb {
            return Some(format!(
                "for {kind}, {} is {} in {} and {} in {}",
                a.location.text_to(i),
                ta.describe(),
                a.id,
                tb.describe(),
                b.id
            ));
        }
    }
    None
}

/// The loaded mutators, in the order they run.
#[derive(Debug, Clone, Default)]
pub struct MutatorSet {
    mutators: Vec<Mutator>,
    /// Every kind some mutator may change, sorted (`*`: any).
    kinds: Vec<String>,
}

impl MutatorSet {
    pub fn new(mut mutators: Vec<Mutator>) -> MutatorSet {
        mutators.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        let mut kinds: Vec<String> = mutators.iter().flat_map(Mutator::kinds).collect();
        kinds.sort();
        kinds.dedup();
        MutatorSet { mutators, kinds }
    }

    pub fn mutators(&self) -> &[Mutator] {
        &self.mutators
    }

    pub fn into_shared(self) -> Arc<dyn Mutators> {
        Arc::new(self)
    }
}

impl Mutators for MutatorSet {
    fn is_empty(&self) -> bool {
        self.mutators.is_empty()
    }

    fn ids(&self) -> Vec<String> {
        self.mutators.iter().map(|m| m.id.clone()).collect()
    }

    fn kinds(&self) -> Vec<String> {
        self.kinds.clone()
    }

    fn may_apply(&self, kind: &str) -> bool {
        self.kinds.iter().any(|k| k == kind || k == "*")
    }

    fn mutate(
        &self,
        object: &mut Value,
        request: &MutationRequest<'_>,
    ) -> Result<Vec<String>, MutationFailure> {
        if self.mutators.is_empty() {
            return Ok(Vec::new());
        }
        let mut working = object.clone();
        let mut applied: Vec<String> = Vec::new();
        let max_iterations = self.mutators.len() + 1;
        let mut last_changed: Vec<&str> = Vec::new();
        for _ in 0..max_iterations {
            let before = working.clone();
            last_changed.clear();
            for m in &self.mutators {
                if !m.selects(&working, request) {
                    continue;
                }
                let changed =
                    m.apply(&mut working, request)
                        .map_err(|message| MutationFailure {
                            mutator: m.id.clone(),
                            message,
                        })?;
                if changed {
                    last_changed.push(&m.id);
                    if !applied.contains(&m.id) {
                        applied.push(m.id.clone());
                    }
                }
            }
            if last_changed.is_empty() || working == before {
                if applied.is_empty() || working == *object {
                    return Ok(Vec::new());
                }
                *object = working;
                return Ok(applied);
            }
        }
        Err(MutationFailure {
            mutator: String::new(),
            message: format!(
                "mutation not converging after {max_iterations} iterations ({} still changing the object)",
                last_changed.join(", ")
            ),
        })
    }
}

/// Loads the mutators among the policy directory's YAML documents (other documents are left
/// to the template/constraint loader). A kind and a name identify one mutator.
pub fn compile_sources(sources: &[&PolicySource]) -> (MutatorSet, Vec<LoadError>) {
    let mut errors = Vec::new();
    let mut mutators: Vec<Mutator> = Vec::new();
    for source in sources {
        // Unparsable files are reported by the constraint loader, which reads the same files.
        let Ok(docs) = crate::manifest::parse_text(&source.text, &source.name) else {
            continue;
        };
        for m in docs {
            if !is_mutator(&m.object) {
                continue;
            }
            let origin = Origin {
                file: source.name.clone(),
                line: m.line,
                text: source.text.clone(),
            };
            match Mutator::parse(&m.object, &origin) {
                Ok(mutator) => {
                    if let Some(other) = mutators.iter().find(|o| o.id == mutator.id) {
                        errors.push(origin.error(format!(
                            "{} {:?} is already defined in {}:{}; a kind and a name identify one mutator",
                            mutator.kind.as_str(),
                            mutator.name,
                            other.file,
                            other.line
                        )));
                    } else {
                        mutators.push(mutator);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
    }
    for (i, b) in mutators.iter().enumerate() {
        for a in &mutators[..i] {
            if let Some(why) = schema_conflict(a, b) {
                errors.push(LoadError::new(
                    &b.file,
                    b.line,
                    1,
                    format!(
                        "{} conflicts with {} ({}:{}): {why}; Gatekeeper applies neither of two conflicting mutators",
                        b.id, a.id, a.file, a.line
                    ),
                ));
            }
        }
    }
    (MutatorSet::new(mutators), errors)
}

/// Loads the mutators of the YAML files `paths` (for `verify` suites).
pub fn load_files(paths: &[std::path::PathBuf]) -> Result<MutatorSet, String> {
    let mut sources = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read mutators {}: {e}", path.display()))?;
        sources.push(PolicySource {
            name: path.display().to_string(),
            text,
        });
    }
    let refs: Vec<&PolicySource> = sources.iter().collect();
    let (set, errors) = compile_sources(&refs);
    if let Some(e) = errors.first() {
        return Err(e.to_string());
    }
    for source in &sources {
        let parsed =
            crate::manifest::parse_text(&source.text, &source.name).map_err(|e| e.to_string())?;
        if let Some(m) = parsed.iter().find(|m| !is_mutator(&m.object)) {
            return Err(format!(
                "{}:{}: not a Gatekeeper mutator ({MUTATION_GROUP})",
                source.name, m.line
            ));
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Config;
    use crate::environment::{EnvironmentResolver, NamespaceLabels};

    fn load(yaml: &str) -> Result<MutatorSet, Vec<LoadError>> {
        let source = PolicySource {
            name: "m.yaml".into(),
            text: yaml.to_string(),
        };
        let (set, errors) = compile_sources(&[&source]);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    fn error(yaml: &str) -> String {
        match load(yaml) {
            Ok(_) => panic!("loaded: {yaml}"),
            Err(e) => e
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    fn assign(name: &str, location: &str, parameters: &str) -> String {
        format!(
            "apiVersion: mutations.gatekeeper.sh/v1\nkind: Assign\nmetadata:\n  name: {name}\nspec:\n  applyTo:\n  - groups: [\"\"]\n    kinds: [\"Pod\"]\n    versions: [\"v1\"]\n  location: \"{location}\"\n  parameters:\n{parameters}\n"
        )
    }

    fn run(
        set: &MutatorSet,
        object: &Value,
        operation: &str,
    ) -> Result<(Value, Vec<String>), MutationFailure> {
        let resolver = EnvironmentResolver::new(&Config::default(), NamespaceLabels::default());
        let request = MutationRequest {
            operation,
            namespace: Some("default"),
            group: "",
            version: "v1",
            kind: "Pod",
            resolver: &resolver,
        };
        let mut out = object.clone();
        let ids = set.mutate(&mut out, &request)?;
        Ok((out, ids))
    }

    fn pod() -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"}},
               "spec": {"containers": [{"name": "app", "image": "nginx:1.25"}]}})
    }

    #[test]
    fn mutators_run_sorted_by_kind_then_name() {
        // Loaded b before a: a runs first, so b's value is the one left.
        let yaml = [
            assign("b", "spec.priority", "    assign:\n      value: 2"),
            assign("a", "spec.priority", "    assign:\n      value: 1"),
        ]
        .join("---\n");
        let set = load(&yaml).unwrap();
        assert_eq!(set.ids(), vec!["Assign/a", "Assign/b"]);
        let (out, ids) = run(&set, &pod(), "CREATE").unwrap();
        assert_eq!(out["spec"]["priority"], json!(2));
        assert_eq!(ids, vec!["Assign/a", "Assign/b"]);
        // Stable: another pass changes nothing.
        assert_eq!(run(&set, &out, "CREATE").unwrap().1, Vec::<String>::new());
    }

    #[test]
    fn external_data_is_refused_by_name() {
        let e = error(&assign(
            "ext",
            "spec.containers[name: *].image",
            "    assign:\n      externalData:\n        provider: my-provider\n        dataSource: ValueAtLocation",
        ));
        assert!(
            e.contains("m.yaml:")
                && e.contains("Assign ext")
                && e.contains("externalData is not supported"),
            "{e}"
        );
    }

    #[test]
    fn invalid_mutators_are_load_errors() {
        for (yaml, want) in [
            (assign("m", "metadata.labels.x", "    assign:\n      value: a"), "can't change metadata"),
            (assign("m", "spec.containers[name: *", "    assign:\n      value: a"), "invalid location"),
            (assign("m", "spec.containers[name: a].name", "    assign:\n      value: a"), "item key"),
            (assign("m", "spec.x", "    assign: {}"), "must set one of"),
            (assign("m", "spec.x", "    assign:\n      value: 1\n      fromMetadata: {field: name}"), "only one of"),
            (assign("m", "spec.x", "    assign:\n      fromMetadata: {field: uid}"), "not recognized"),
            (assign("m", "spec.containers[name: a]", "    assign:\n      value: {name: b}"), "keyed list"),
            (assign("m", "spec.x.y", "    pathTests:\n    - subPath: spec.z\n      condition: MustExist\n    assign:\n      value: 1"), "not a prefix"),
            (assign("m", "spec.x", "    assign:\n      value: 1").replace("  applyTo:\n  - groups: [\"\"]\n    kinds: [\"Pod\"]\n    versions: [\"v1\"]\n", ""), "applyTo is required"),
            (assign("m", "spec.x", "    assign:\n      value: 1").replace("versions: [\"v1\"]", "versions: [\"v1\"]\n    operations: [DELETE]"), "must be one of CREATE, UPDATE"),
            ("apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata:\n  name: m\nspec:\n  location: spec.x\n  parameters:\n    assign:\n      value: a\n".to_string(), "metadata.labels.<key>"),
            ("apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata:\n  name: m\nspec:\n  location: metadata.labels.x\n  parameters:\n    assign:\n      value: 1\n".to_string(), "must be a string"),
            ("apiVersion: mutations.gatekeeper.sh/v1\nkind: ModifySet\nmetadata:\n  name: m\nspec:\n  applyTo:\n  - {groups: [\"\"], kinds: [Pod], versions: [v1]}\n  location: \"spec.containers[name: a]\"\n  parameters:\n    values:\n      fromList: [a]\n".to_string(), "cannot be a keyed list"),
            ("apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignImage\nmetadata:\n  name: m\nspec:\n  applyTo:\n  - {groups: [\"\"], kinds: [Pod], versions: [v1]}\n  location: \"spec.containers[name: *].image\"\n  parameters:\n    assignPath: my.repo.lib/app\n".to_string(), "assignDomain must be set"),
            ("apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignEverything\nmetadata:\n  name: m\n".to_string(), "not a mutator regate knows"),
            ([assign("m", "spec.x", "    assign:\n      value: 1"), assign("m", "spec.y", "    assign:\n      value: 1")].join("---\n"), "already defined in m.yaml:1"),
        ] {
            let e = error(&yaml);
            assert!(e.contains(want), "want {want:?} in {e}");
        }
    }

    #[test]
    fn schema_conflicts_are_load_errors() {
        let modify_set = "apiVersion: mutations.gatekeeper.sh/v1\nkind: ModifySet\nmetadata:\n  name: caps\nspec:\n  applyTo:\n  - {groups: [\"\"], kinds: [Pod], versions: [v1]}\n  location: \"spec.containers[name: *].securityContext.capabilities.add\"\n  parameters:\n    values:\n      fromList: [NET_ADMIN]\n";
        for (other, want) in [
            (
                assign(
                    "x",
                    "spec.containers[name: *].securityContext.capabilities.add.first",
                    "    assign:\n      value: 1",
                ),
                "is a list of values (ModifySet) in ModifySet/caps and an object in Assign/x",
            ),
            (
                assign(
                    "x",
                    "spec.containers[image: nginx].securityContext",
                    "    assign:\n      value: {}",
                ),
                "a list keyed by \"name\" in ModifySet/caps and by \"image\" in Assign/x",
            ),
            (
                assign(
                    "x",
                    "spec.containers.securityContext",
                    "    assign:\n      value: {}",
                ),
                "spec.containers is a keyed list in ModifySet/caps and an object in Assign/x",
            ),
        ] {
            let e = error(&[modify_set.to_string(), other].join("---\n"));
            assert!(
                e.contains(want) && e.contains("Gatekeeper applies neither"),
                "{e}"
            );
        }
        // The same path written the same way, or another kind of object: no conflict.
        let same = assign(
            "x",
            "spec.containers[name: *].securityContext.capabilities.add",
            "    assign:\n      value: [A]",
        );
        assert!(load(&[modify_set.to_string(), same].join("---\n")).is_ok());
        let elsewhere = assign(
            "x",
            "spec.containers.securityContext",
            "    assign:\n      value: {}",
        )
        .replace("kinds: [\"Pod\"]", "kinds: [\"PodTemplate\"]");
        assert!(load(&[modify_set.to_string(), elsewhere].join("---\n")).is_ok());
    }

    #[test]
    fn apply_to_selects_kind_and_operation() {
        let create_only = assign("m", "spec.x", "    assign:\n      value: 1").replace(
            "versions: [\"v1\"]",
            "versions: [\"v1\"]\n    operations: [CREATE]",
        );
        let set = load(&create_only).unwrap();
        assert_eq!(
            run(&set, &pod(), "CREATE").unwrap().0["spec"]["x"],
            json!(1)
        );
        assert_eq!(run(&set, &pod(), "UPDATE").unwrap().1, Vec::<String>::new());
        let mut deployment = pod();
        deployment["apiVersion"] = json!("apps/v1");
        deployment["kind"] = json!("Deployment");
        assert_eq!(
            run(&set, &deployment, "CREATE").unwrap().1,
            Vec::<String>::new()
        );
    }

    #[test]
    fn match_narrows_what_apply_to_selects() {
        let yaml = assign("m", "spec.x", "    assign:\n      value: 1").replace(
            "  location:",
            "  match:\n    excludedNamespaces: [\"default\"]\n  location:",
        );
        let set = load(&yaml).unwrap();
        assert_eq!(run(&set, &pod(), "CREATE").unwrap().1, Vec::<String>::new());
        let yaml = assign("m", "spec.x", "    assign:\n      value: 1").replace(
            "  location:",
            "  match:\n    labelSelector:\n      matchLabels: {app: web}\n  location:",
        );
        let set = load(&yaml).unwrap();
        assert_eq!(run(&set, &pod(), "CREATE").unwrap().1, vec!["Assign/m"]);
    }

    #[test]
    fn assign_metadata_adds_and_never_overwrites() {
        let yaml = "apiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata:\n  name: owner\nspec:\n  location: metadata.labels.owner\n  parameters:\n    assign:\n      value: admin\n---\napiVersion: mutations.gatekeeper.sh/v1\nkind: AssignMetadata\nmetadata:\n  name: app\nspec:\n  location: metadata.labels.app\n  parameters:\n    assign:\n      value: other\n---\napiVersion: mutations.gatekeeper.sh/v1beta1\nkind: AssignMetadata\nmetadata:\n  name: ns\nspec:\n  location: metadata.annotations.\"example.com/namespace\"\n  parameters:\n    assign:\n      fromMetadata:\n        field: namespace\n";
        let set = load(yaml).unwrap();
        let (out, ids) = run(&set, &pod(), "CREATE").unwrap();
        assert_eq!(
            out["metadata"]["labels"],
            json!({"app": "web", "owner": "admin"})
        );
        assert_eq!(
            out["metadata"]["annotations"],
            json!({"example.com/namespace": "default"})
        );
        assert_eq!(ids, vec!["AssignMetadata/ns", "AssignMetadata/owner"]);
    }

    #[test]
    fn from_metadata_assigns_the_objects_name() {
        let set = load(&assign(
            "m",
            "spec.containers[name: *].env[name: POD].value",
            "    assign:\n      fromMetadata:\n        field: name",
        ))
        .unwrap();
        let (out, _) = run(&set, &pod(), "CREATE").unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["env"],
            json!([{"name": "POD", "value": "web-1"}])
        );
    }

    #[test]
    fn assign_image_changes_components() {
        let yaml = "apiVersion: mutations.gatekeeper.sh/v1alpha1\nkind: AssignImage\nmetadata:\n  name: mirror\nspec:\n  applyTo:\n  - groups: [\"\"]\n    kinds: [\"Pod\"]\n    versions: [\"v1\"]\n  location: \"spec.containers[name:*].image\"\n  parameters:\n    assignDomain: mirror.example.com\n";
        let set = load(yaml).unwrap();
        let (out, ids) = run(&set, &pod(), "CREATE").unwrap();
        assert_eq!(
            out["spec"]["containers"][0]["image"],
            json!("mirror.example.com/nginx:1.25")
        );
        assert_eq!(ids, vec!["AssignImage/mirror"]);
        assert!(run(&set, &out, "CREATE").unwrap().1.is_empty());
    }

    /// A Pod with thousands of containers: every mutator walks it once per pass, the result is
    /// right, and a second run changes nothing (work is bounded by passes × mutators × size).
    #[test]
    fn large_objects_are_mutated_in_bounded_passes() {
        let yaml = [
            assign("glob", "spec.containers[name: *].securityContext.runAsNonRoot", "    assign:\n      value: true"),
            assign("keyed", "spec.containers[name: c-4999].imagePullPolicy", "    assign:\n      value: Always"),
            "apiVersion: mutations.gatekeeper.sh/v1\nkind: ModifySet\nmetadata:\n  name: args\nspec:\n  applyTo:\n  - {groups: [\"\"], kinds: [Pod], versions: [v1]}\n  location: \"spec.containers[name: *].args\"\n  parameters:\n    operation: prune\n    values:\n      fromList: [--debug]\n".to_string(),
        ]
        .join("---\n");
        let set = load(&yaml).unwrap();
        let containers: Vec<Value> = (0..5000)
            .map(
                |i| json!({"name": format!("c-{i}"), "image": "nginx", "args": ["--debug", "--x"]}),
            )
            .collect();
        let mut object = pod();
        object["spec"]["containers"] = Value::Array(containers);
        let (out, ids) = run(&set, &object, "CREATE").unwrap();
        assert_eq!(ids, vec!["Assign/glob", "Assign/keyed", "ModifySet/args"]);
        let list = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(list.len(), 5000);
        assert!(list
            .iter()
            .all(|c| c["securityContext"]["runAsNonRoot"] == json!(true)
                && c["args"] == json!(["--x"])));
        assert_eq!(list[4999]["imagePullPolicy"], json!("Always"));
        assert!(run(&set, &out, "CREATE").unwrap().1.is_empty());
    }

    #[test]
    fn a_failing_mutator_leaves_the_object_alone() {
        let set = load(
            &[
                assign("a", "spec.priority", "    assign:\n      value: 1"),
                assign(
                    "b",
                    "spec.containers[name: *].image",
                    "    assign:\n      value: x",
                ),
            ]
            .join("---\n"),
        )
        .unwrap();
        let mut object = pod();
        object["spec"]["containers"] = json!({"app": "not a list"});
        let failure = run(&set, &object, "CREATE").unwrap_err();
        assert_eq!(failure.mutator, "Assign/b");
        assert_eq!(failure.message, "spec.containers is an object, not a list");
    }
}
