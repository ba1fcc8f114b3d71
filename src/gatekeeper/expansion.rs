//! Gatekeeper's `ExpansionTemplate`s (`expansion.gatekeeper.sh`): a workload (a Deployment, a
//! CronJob, …) is judged also through the object it would create (its Pod), built from the
//! template source, so that constraints written for Pods catch the Deployment that would make
//! one. Semantics follow Gatekeeper's `pkg/expansion`: the resultant is the source field with
//! the generated kind, the parent's namespace, the name `<parent>-<kind>` in lower case and an
//! owner reference to the parent; expansion recurses (a CronJob's Job's Pod) to a bounded
//! depth; violations on a resultant carry the prefix `[Implied by <template>]` and, when the
//! template sets one, its enforcement action.

use serde_json::{Map, Value};

use crate::config::Action;
use crate::gatekeeper::template::Origin;
use crate::policy::error::LoadError;
use crate::policy::source::PolicySource;

pub const EXPANSION_GROUP: &str = "expansion.gatekeeper.sh";

/// Gatekeeper's bound on nested expansion (`maxRecursionDepth`).
const MAX_DEPTH: usize = 30;
/// Resultants of one object, all templates and depths together: bounded whatever the
/// templates say (two templates that each apply to the other's output would otherwise double
/// at every level).
const MAX_RESULTANTS: usize = 64;

/// One `applyTo` entry: the object's group, version and kind must each be listed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ApplyTo {
    groups: Vec<String>,
    versions: Vec<String>,
    kinds: Vec<String>,
}

impl ApplyTo {
    fn matches(&self, group: &str, version: &str, kind: &str) -> bool {
        self.groups.iter().any(|g| g == group)
            && self.versions.iter().any(|v| v == version)
            && self.kinds.iter().any(|k| k == kind)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpansionTemplate {
    pub name: String,
    apply_to: Vec<ApplyTo>,
    /// `templateSource`, split at `.`.
    source: Vec<String>,
    /// `generatedGVK`: group, version, kind.
    generated: (String, String, String),
    /// `enforcementAction`: overrides the constraint's on the resultant's violations.
    pub action: Option<Action>,
}

/// An object expansion made, and the template that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resultant {
    pub object: Value,
    pub template: String,
    pub action: Option<Action>,
}

pub fn is_expansion_template(doc: &Value) -> bool {
    doc.get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .is_some_and(|(g, _)| g == EXPANSION_GROUP)
        && doc.get("kind").and_then(Value::as_str) == Some("ExpansionTemplate")
}

fn strings(v: Option<&Value>) -> Result<Vec<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{i} is not a string"))
            })
            .collect(),
        Some(other) => Err(format!("{other} is not a list of strings")),
    }
}

/// `apiVersion` from a group and version (the core group has none).
fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

impl ExpansionTemplate {
    /// Parses and validates a template as Gatekeeper's `ValidateTemplate` does.
    pub fn parse(doc: &Value, origin: &Origin) -> Result<ExpansionTemplate, LoadError> {
        let name = doc
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let fail = |field: &str, message: String| {
            origin.error_at(field, format!("ExpansionTemplate {name:?}: {message}"))
        };
        if name.is_empty() {
            return Err(origin.error("ExpansionTemplate has no metadata.name".to_string()));
        }
        if name.len() >= 64 {
            return Err(fail(
                "name",
                "the name must be shorter than 64 characters".into(),
            ));
        }
        let spec = doc.get("spec").cloned().unwrap_or(Value::Null);
        let source = spec
            .get("templateSource")
            .and_then(Value::as_str)
            .unwrap_or("");
        if source.is_empty() {
            return Err(fail(
                "templateSource",
                "spec.templateSource is empty".into(),
            ));
        }
        let gvk = spec.get("generatedGVK").cloned().unwrap_or(Value::Null);
        let part = |k: &str| gvk.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let generated = (part("group"), part("version"), part("kind"));
        if generated.1.is_empty() || generated.2.is_empty() {
            return Err(fail(
                "generatedGVK",
                "spec.generatedGVK needs a version and a kind".into(),
            ));
        }
        let mut apply_to = Vec::new();
        if let Some(items) = spec.get("applyTo").and_then(Value::as_array) {
            for (i, item) in items.iter().enumerate() {
                let field = |k: &str| {
                    strings(item.get(k))
                        .map_err(|e| fail("applyTo", format!("spec.applyTo[{i}].{k}: {e}")))
                };
                apply_to.push(ApplyTo {
                    groups: field("groups")?,
                    versions: field("versions")?,
                    kinds: field("kinds")?,
                });
            }
        }
        if apply_to.is_empty() {
            return Err(fail("applyTo", "spec.applyTo is empty".into()));
        }
        if apply_to
            .iter()
            .any(|a| a.matches(&generated.0, &generated.1, &generated.2))
        {
            return Err(fail(
                "applyTo",
                format!(
                    "it generates {} {} and also applies to it",
                    api_version(&generated.0, &generated.1),
                    generated.2
                ),
            ));
        }
        let action = match spec.get("enforcementAction") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => match s.as_str() {
                "" => None,
                "deny" => Some(Action::Deny),
                "warn" => Some(Action::Warn),
                "dryrun" => Some(Action::Audit),
                other => {
                    return Err(fail(
                        "enforcementAction",
                        format!("enforcementAction {other:?} is not one of deny, warn, dryrun"),
                    ))
                }
            },
            Some(other) => {
                return Err(fail(
                    "enforcementAction",
                    format!("enforcementAction {other} is not a string"),
                ))
            }
        };
        Ok(ExpansionTemplate {
            name,
            apply_to,
            source: source.split('.').map(str::to_string).collect(),
            generated,
            action,
        })
    }

    fn applies(&self, object: &Value) -> bool {
        let Some((group, version, kind)) = gvk(object) else {
            return false;
        };
        self.apply_to
            .iter()
            .any(|a| a.matches(group, version, kind))
    }

    /// The resultant of `parent` in `namespace`; `None` when the parent has no object at the
    /// template source (Gatekeeper reports an error and judges the parent alone).
    fn expand(&self, parent: &Value, namespace: Option<&str>) -> Option<Value> {
        let mut at = parent;
        for step in &self.source {
            at = at.get(step)?;
        }
        let mut object: Map<String, Value> = at.as_object()?.clone();
        let (group, version, kind) = &self.generated;
        object.insert("apiVersion".into(), api_version(group, version).into());
        object.insert("kind".into(), kind.clone().into());
        let meta = object
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        let meta = meta.as_object_mut()?;
        if let Some(ns) = namespace.filter(|n| !n.is_empty()) {
            meta.insert("namespace".into(), ns.into());
        }
        let parent_name = parent
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        meta.insert(
            "name".into(),
            format!("{parent_name}-{kind}").to_ascii_lowercase().into(),
        );
        let owner = |k: &str| parent.get(k).and_then(Value::as_str).unwrap_or("");
        let (p_version, p_kind) = (owner("apiVersion"), owner("kind"));
        if !p_version.is_empty() && !p_kind.is_empty() && !parent_name.is_empty() {
            let refs = meta
                .entry("ownerReferences")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(refs) = refs.as_array_mut() {
                let present = refs.iter().any(|r| {
                    r.get("apiVersion").and_then(Value::as_str) == Some(p_version)
                        && r.get("kind").and_then(Value::as_str) == Some(p_kind)
                        && r.get("name").and_then(Value::as_str) == Some(parent_name)
                });
                if !present {
                    refs.push(serde_json::json!({
                        "apiVersion": p_version, "kind": p_kind, "name": parent_name,
                    }));
                }
            }
        }
        Some(Value::Object(object))
    }
}

fn gvk(object: &Value) -> Option<(&str, &str, &str)> {
    let api_version = object.get("apiVersion")?.as_str()?;
    let kind = object.get("kind")?.as_str()?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Some((group, version, kind))
}

/// The set's ExpansionTemplates, as the engine holds them (`PolicySet::expansions`).
#[derive(Debug, Clone, Default)]
pub struct ExpansionTemplates(pub Vec<ExpansionTemplate>);

impl crate::policy::loader::Expansions for ExpansionTemplates {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The ExpansionTemplates `set` holds (none when it was built without Gatekeeper's loaders).
pub fn templates_of(set: &crate::policy::set::PolicySet) -> &[ExpansionTemplate] {
    set.expansions
        .as_any()
        .downcast_ref::<ExpansionTemplates>()
        .map_or(&[], |t| t.0.as_slice())
}

/// Every object the templates expand `object` into, nested expansions included (a CronJob's
/// Job, then that Job's Pod), deepest first as Gatekeeper lists them; each names the template
/// that made it (the innermost: its prefix and action are the ones applied).
pub fn expand(
    templates: &[ExpansionTemplate],
    object: &Value,
    namespace: Option<&str>,
) -> Vec<Resultant> {
    let mut out = Vec::new();
    expand_into(templates, object, namespace, 0, &mut out);
    out
}

fn expand_into(
    templates: &[ExpansionTemplate],
    object: &Value,
    namespace: Option<&str>,
    depth: usize,
    out: &mut Vec<Resultant>,
) {
    if depth >= MAX_DEPTH {
        return;
    }
    for t in templates.iter().filter(|t| t.applies(object)) {
        if out.len() >= MAX_RESULTANTS {
            return;
        }
        let Some(resultant) = t.expand(object, namespace) else {
            continue;
        };
        expand_into(templates, &resultant, namespace, depth + 1, out);
        if out.len() < MAX_RESULTANTS {
            out.push(Resultant {
                object: resultant,
                template: t.name.clone(),
                action: t.action,
            });
        }
    }
}

/// The ExpansionTemplates among the policy directory's YAML (other documents are left alone).
/// Two templates with one name are an error, as one name identifies one object.
pub fn compile_sources(sources: &[&PolicySource]) -> (Vec<ExpansionTemplate>, Vec<LoadError>) {
    let mut templates: Vec<(ExpansionTemplate, String)> = Vec::new();
    let mut errors = Vec::new();
    for source in sources {
        let Ok(objects) = crate::manifest::parse_text(&source.text, &source.name) else {
            // Unparsable YAML is reported once, by the constraint loader.
            continue;
        };
        for m in objects {
            if !is_expansion_template(&m.object) {
                continue;
            }
            let origin = Origin {
                file: source.name.clone(),
                line: m.line,
                text: source.text.clone(),
            };
            match ExpansionTemplate::parse(&m.object, &origin) {
                Ok(t) => match templates.iter().find(|(o, _)| o.name == t.name) {
                    Some((_, at)) => errors.push(origin.error(format!(
                        "ExpansionTemplate {:?} is already defined in {at}",
                        t.name
                    ))),
                    None => templates.push((t, format!("{}:{}", origin.file, origin.line))),
                },
                Err(e) => errors.push(e),
            }
        }
    }
    (templates.into_iter().map(|(t, _)| t).collect(), errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn origin() -> Origin {
        Origin {
            file: "x.yaml".into(),
            line: 1,
            text: String::new(),
        }
    }

    fn template(name: &str, kinds: Value, groups: Value, source: &str, gen: Value) -> Value {
        json!({
            "apiVersion": "expansion.gatekeeper.sh/v1beta1",
            "kind": "ExpansionTemplate",
            "metadata": {"name": name},
            "spec": {
                "applyTo": [{"groups": groups, "kinds": kinds, "versions": ["v1"]}],
                "templateSource": source,
                "generatedGVK": gen,
            }
        })
    }

    fn pods() -> ExpansionTemplate {
        ExpansionTemplate::parse(
            &template(
                "expand-deployments",
                json!(["Deployment", "Job"]),
                json!(["apps", "batch"]),
                "spec.template",
                json!({"group": "", "version": "v1", "kind": "Pod"}),
            ),
            &origin(),
        )
        .unwrap()
    }

    fn jobs() -> ExpansionTemplate {
        ExpansionTemplate::parse(
            &template(
                "expand-cronjobs",
                json!(["CronJob"]),
                json!(["batch"]),
                "spec.jobTemplate",
                json!({"group": "batch", "version": "v1", "kind": "Job"}),
            ),
            &origin(),
        )
        .unwrap()
    }

    #[test]
    fn a_deployment_expands_into_its_pod() {
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "Web", "namespace": "shop"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
        });
        let out = expand(&[pods()], &deployment, Some("shop"));
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].object,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"labels": {"app": "web"}, "namespace": "shop", "name": "web-pod",
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "Web"}]},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}
            })
        );
        assert_eq!(out[0].template, "expand-deployments");
        // Other kinds and versions are not expanded.
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        assert!(expand(&[pods()], &pod, None).is_empty());
        let old =
            json!({"apiVersion": "apps/v1beta1", "kind": "Deployment", "spec": {"template": {}}});
        assert!(expand(&[pods()], &old, None).is_empty());
    }

    #[test]
    fn a_cronjob_expands_into_a_job_then_a_pod() {
        let cronjob = json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}}
        });
        let out = expand(&[pods(), jobs()], &cronjob, Some("ops"));
        let kinds: Vec<(&str, &str)> = out
            .iter()
            .map(|r| {
                (
                    r.object["kind"].as_str().unwrap(),
                    r.object["metadata"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            vec![("Pod", "nightly-job-pod"), ("Job", "nightly-job")]
        );
        assert_eq!(out[0].template, "expand-deployments");
    }

    #[test]
    fn templates_are_validated_as_gatekeeper_does() {
        let bad = |doc: Value| {
            ExpansionTemplate::parse(&doc, &origin())
                .unwrap_err()
                .message
        };
        let gen = json!({"group": "", "version": "v1", "kind": "Pod"});
        assert!(bad(template(
            "t",
            json!(["Deployment"]),
            json!(["apps"]),
            "",
            gen.clone()
        ))
        .contains("templateSource"));
        assert!(bad(template(
            "t",
            json!(["Pod"]),
            json!([""]),
            "spec",
            gen.clone()
        ))
        .contains("also applies"));
        assert!(bad(template(
            "t",
            json!(["Deployment"]),
            json!(["apps"]),
            "spec",
            json!({})
        ))
        .contains("generatedGVK"));
        let mut doc = template(
            "t",
            json!(["Deployment"]),
            json!(["apps"]),
            "spec.template",
            gen,
        );
        doc["spec"]["enforcementAction"] = json!("block");
        assert!(bad(doc.clone()).contains("enforcementAction"));
        doc["spec"]["enforcementAction"] = json!("warn");
        assert_eq!(
            ExpansionTemplate::parse(&doc, &origin()).unwrap().action,
            Some(Action::Warn)
        );
    }

    #[test]
    fn expansion_is_bounded() {
        // Two templates that expand into each other's kind.
        let a = ExpansionTemplate::parse(
            &template(
                "a",
                json!(["A"]),
                json!(["x"]),
                "spec",
                json!({"group": "x", "version": "v1", "kind": "B"}),
            ),
            &origin(),
        )
        .unwrap();
        let b = ExpansionTemplate::parse(
            &template(
                "b",
                json!(["B"]),
                json!(["x"]),
                "spec",
                json!({"group": "x", "version": "v1", "kind": "A"}),
            ),
            &origin(),
        )
        .unwrap();
        let mut obj = json!({"apiVersion": "x/v1", "kind": "A", "metadata": {"name": "n"}});
        let mut inner = obj.clone();
        for _ in 0..40 {
            inner = json!({"spec": inner});
        }
        obj["spec"] = inner;
        let out = expand(&[a, b], &obj, None);
        assert!(out.len() <= MAX_DEPTH, "{}", out.len());
    }
}
