//! Constraints (`constraints.gatekeeper.sh/*`): an instance of a template's kind with its
//! parameters, match criteria and enforcement action.

use serde_json::Value;

use crate::config::Action;
use crate::gatekeeper::matching::Match;
use crate::gatekeeper::schema;
use crate::gatekeeper::template::{Origin, Template};
use crate::policy::error::LoadError;
use crate::policy::metadata::Severity;

pub const CONSTRAINT_GROUP: &str = "constraints.gatekeeper.sh";

/// The annotation that gives a constraint (or its template) a severity; medium otherwise.
pub const SEVERITY_ANNOTATION: &str = "regate.dev/severity";

/// The annotation that gives a constraint (or its template) a report category; "Gatekeeper"
/// otherwise.
pub const CATEGORY_ANNOTATION: &str = "regate.dev/category";

/// Gatekeeper's enforcement points regate stands in for: the validating webhook (`serve`'s
/// `/validate`, and `eval`, which predicts it) and the audit (`audit`, `serve`'s background
/// audit).
const WEBHOOK_POINT: &str = "validation.gatekeeper.sh";
const AUDIT_POINT: &str = "audit.gatekeeper.sh";

/// What a constraint does at each enforcement point; `None`: it is not evaluated there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Points {
    pub admission: Option<Action>,
    pub audit: Option<Action>,
}

#[derive(Debug, Clone)]
pub struct Constraint {
    pub name: String,
    pub kind: String,
    /// The action at admission (`audit` when the webhook does not enforce it).
    pub action: Action,
    pub points: Points,
    pub matcher: Match,
    /// `spec.parameters` with the schema's defaults applied (`{}` when absent, as Gatekeeper).
    pub parameters: Value,
    pub severity: Severity,
    pub category: String,
    pub origin: Origin,
}

pub fn is_constraint(doc: &Value) -> bool {
    doc.get("apiVersion")
        .and_then(Value::as_str)
        .and_then(|v| v.split_once('/'))
        .is_some_and(|(g, _)| g == CONSTRAINT_GROUP)
}

/// The constraint's kind and name, for messages before it is parsed.
pub fn identity(doc: &Value) -> (String, String) {
    let s = |p: &str| {
        doc.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("/kind"), s("/metadata/name"))
}

fn parse_action(value: &str) -> Option<Action> {
    match value {
        "deny" => Some(Action::Deny),
        "warn" => Some(Action::Warn),
        "dryrun" => Some(Action::Audit),
        _ => None,
    }
}

/// The strictest action a `scoped` constraint gives each enforcement point (Gatekeeper: an
/// entry applies to the points it names, `*` to all); a point no entry names does not evaluate
/// the constraint.
fn scoped_points(spec: &Value, origin: &Origin, name: &str) -> Result<Points, LoadError> {
    let Some(Value::Array(entries)) = spec.get("scopedEnforcementActions") else {
        return Err(origin.error_at(
            "enforcementAction",
            format!(
                "constraint {name}: enforcementAction scoped needs spec.scopedEnforcementActions"
            ),
        ));
    };
    let rank = |a: Action| match a {
        Action::Deny => 2,
        Action::Warn => 1,
        Action::Audit => 0,
    };
    let stricter = |best: Option<Action>, a: Action| match best {
        Some(b) if rank(b) >= rank(a) => Some(b),
        _ => Some(a),
    };
    let mut points = Points {
        admission: None,
        audit: None,
    };
    for entry in entries {
        let raw = entry.get("action").and_then(Value::as_str).unwrap_or("");
        let action = parse_action(raw).ok_or_else(|| {
            origin.error_at(
                "scopedEnforcementActions",
                format!(
                    "constraint {name}: scoped action {raw:?} is not one of deny, warn, dryrun"
                ),
            )
        })?;
        let names: Vec<&str> = entry
            .get("enforcementPoints")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p.get("name").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        if names.iter().any(|p| *p == "*" || *p == WEBHOOK_POINT) {
            points.admission = stricter(points.admission, action);
        }
        if names.iter().any(|p| *p == "*" || *p == AUDIT_POINT) {
            points.audit = stricter(points.audit, action);
        }
    }
    Ok(points)
}

impl Constraint {
    /// Parses and validates a constraint of `template`'s kind. Any error here is what Gatekeeper
    /// would reject the constraint for (the `invalid: true` cases of a suite).
    pub fn parse(
        doc: &Value,
        origin: Origin,
        template: &Template,
    ) -> Result<Constraint, LoadError> {
        let (kind, name) = identity(doc);
        if name.is_empty() {
            return Err(origin.error(format!("{kind} constraint has no metadata.name")));
        }
        let empty = Value::Object(Default::default());
        let spec = doc.get("spec").unwrap_or(&empty);
        if !spec.is_object() {
            return Err(
                origin.error_at("spec", format!("constraint {name}: spec must be an object"))
            );
        }
        let single = |a: Action| Points {
            admission: Some(a),
            audit: Some(a),
        };
        let points = match spec.get("enforcementAction") {
            None | Some(Value::Null) => single(Action::Deny),
            Some(Value::String(s)) if s.is_empty() => single(Action::Deny),
            Some(Value::String(s)) if s == "scoped" => scoped_points(spec, &origin, &name)?,
            Some(Value::String(s)) => single(parse_action(s).ok_or_else(|| {
                origin.error_at(
                    "enforcementAction",
                    format!("constraint {name}: enforcementAction {s:?} is not one of deny, warn, dryrun, scoped"),
                )
            })?),
            Some(other) => {
                return Err(origin.error_at("enforcementAction", format!("constraint {name}: enforcementAction {other} is not a string")));
            }
        };
        let action = points.admission.unwrap_or(Action::Audit);
        let matcher = Match::parse(spec.get("match"))
            .map_err(|e| origin.error_at("match", format!("constraint {name}: {e}")))?;
        let mut parameters = match spec.get("parameters") {
            None | Some(Value::Null) => empty.clone(),
            Some(p @ Value::Object(_)) => p.clone(),
            Some(other) => {
                return Err(origin.error_at(
                    "parameters",
                    format!("constraint {name}: spec.parameters must be an object, got {other}"),
                ));
            }
        };
        if let Some(schema) = &template.schema {
            schema::apply_defaults(schema, &mut parameters);
            let problems = schema::validate(schema, &parameters);
            if !problems.is_empty() {
                return Err(origin.error_at(
                    "parameters",
                    format!(
                        "constraint {name}: parameters do not match the schema of ConstraintTemplate {}: {}",
                        template.name,
                        problems.join("; ")
                    ),
                ));
            }
        }
        let severity_text = doc
            .pointer(&format!(
                "/metadata/annotations/{}",
                SEVERITY_ANNOTATION.replace('/', "~1")
            ))
            .or_else(|| template.annotations.get(SEVERITY_ANNOTATION))
            .and_then(Value::as_str);
        let severity = match severity_text {
            None => Severity::Medium,
            Some(s) => s.parse().map_err(|e: String| {
                origin.error_at(SEVERITY_ANNOTATION, format!("constraint {name}: {e}"))
            })?,
        };
        let category = doc
            .pointer(&format!(
                "/metadata/annotations/{}",
                CATEGORY_ANNOTATION.replace('/', "~1")
            ))
            .or_else(|| template.annotations.get(CATEGORY_ANNOTATION))
            .and_then(Value::as_str)
            .filter(|c| !c.trim().is_empty())
            .unwrap_or("Gatekeeper")
            .to_string();
        Ok(Constraint {
            name,
            kind,
            action,
            points,
            matcher,
            parameters,
            severity,
            category,
            origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template() -> Template {
        let doc = json!({
            "apiVersion": "templates.gatekeeper.sh/v1",
            "kind": "ConstraintTemplate",
            "metadata": {"name": "k8sdemo", "annotations": {"regate.dev/severity": "low"}},
            "spec": {
                "crd": {"spec": {"names": {"kind": "K8sDemo"}, "validation": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "repos": {"type": "array", "items": {"type": "string"}},
                        "strict": {"type": "boolean", "default": true},
                    }
                }}}},
                "targets": [{"target": "admission.k8s.gatekeeper.sh", "rego": "package k8sdemo\nviolation[{\"msg\": \"x\"}] { false }\n"}]
            }
        });
        Template::parse(&doc, origin()).unwrap()
    }

    fn origin() -> Origin {
        Origin {
            file: "c.yaml".into(),
            line: 1,
            text: String::new(),
        }
    }

    fn constraint(spec: Value) -> Result<Constraint, LoadError> {
        let doc = json!({
            "apiVersion": "constraints.gatekeeper.sh/v1beta1",
            "kind": "K8sDemo",
            "metadata": {"name": "demo"},
            "spec": spec,
        });
        Constraint::parse(&doc, origin(), &template())
    }

    #[test]
    fn enforcement_actions_map_to_regate_actions() {
        let action = |a: Value| constraint(json!({"enforcementAction": a})).map(|c| c.action);
        assert_eq!(constraint(json!({})).unwrap().action, Action::Deny);
        assert_eq!(action(json!("deny")).unwrap(), Action::Deny);
        assert_eq!(action(json!("warn")).unwrap(), Action::Warn);
        assert_eq!(action(json!("dryrun")).unwrap(), Action::Audit);
        assert!(action(json!("block")).is_err());
        assert!(action(json!("Deny")).is_err());
    }

    #[test]
    fn scoped_actions_are_per_enforcement_point() {
        let scoped = |entries: Value| {
            constraint(json!({"enforcementAction": "scoped", "scopedEnforcementActions": entries}))
                .map(|c| (c.action, c.points))
        };
        let webhook = json!([{"name": "validation.gatekeeper.sh"}]);
        let audit = json!([{"name": "audit.gatekeeper.sh"}]);
        let points = |admission, audit| Points { admission, audit };
        assert_eq!(
            scoped(json!([{"action": "warn", "enforcementPoints": webhook}, {"action": "deny", "enforcementPoints": audit}])).unwrap(),
            (Action::Warn, points(Some(Action::Warn), Some(Action::Deny)))
        );
        assert_eq!(
            scoped(json!([{"action": "warn", "enforcementPoints": [{"name": "*"}]}, {"action": "deny", "enforcementPoints": webhook}])).unwrap(),
            (Action::Deny, points(Some(Action::Deny), Some(Action::Warn)))
        );
        // Audit only: not evaluated at admission at all.
        assert_eq!(
            scoped(json!([{"action": "deny", "enforcementPoints": audit}])).unwrap(),
            (Action::Audit, points(None, Some(Action::Deny)))
        );
        assert_eq!(
            scoped(json!([{"action": "dryrun", "enforcementPoints": webhook}])).unwrap(),
            (Action::Audit, points(Some(Action::Audit), None))
        );
        assert!(constraint(json!({"enforcementAction": "scoped"})).is_err());
        assert!(scoped(json!([{"action": "block", "enforcementPoints": webhook}])).is_err());
        let plain = constraint(json!({"enforcementAction": "dryrun"})).unwrap();
        assert_eq!(
            plain.points,
            points(Some(Action::Audit), Some(Action::Audit))
        );
    }

    #[test]
    fn parameters_are_defaulted_then_validated() {
        let c = constraint(json!({"parameters": {"repos": ["a/"]}})).unwrap();
        assert_eq!(c.parameters, json!({"repos": ["a/"], "strict": true}));
        assert_eq!(
            constraint(json!({})).unwrap().parameters,
            json!({"strict": true})
        );
        let e = constraint(json!({"parameters": {"repos": "a/"}})).unwrap_err();
        assert!(
            e.message
                .contains("spec.parameters.repos: must be of type array"),
            "{e}"
        );
        assert!(constraint(json!({"parameters": ["a"]})).is_err());
    }

    #[test]
    fn severity_from_constraint_then_template() {
        assert_eq!(constraint(json!({})).unwrap().severity, Severity::Low);
        let doc = json!({
            "apiVersion": "constraints.gatekeeper.sh/v1beta1",
            "kind": "K8sDemo",
            "metadata": {"name": "demo", "annotations": {"regate.dev/severity": "critical"}},
        });
        assert_eq!(
            Constraint::parse(&doc, origin(), &template())
                .unwrap()
                .severity,
            Severity::Critical
        );
        let bad = json!({
            "apiVersion": "constraints.gatekeeper.sh/v1beta1",
            "kind": "K8sDemo",
            "metadata": {"name": "demo", "annotations": {"regate.dev/severity": "urgent"}},
        });
        assert!(Constraint::parse(&bad, origin(), &template()).is_err());
    }

    #[test]
    fn category_from_constraint_then_template_else_gatekeeper() {
        assert_eq!(constraint(json!({})).unwrap().category, "Gatekeeper");
        let mut template = template();
        template
            .annotations
            .insert(CATEGORY_ANNOTATION.into(), json!("Supply Chain"));
        let plain = json!({
            "apiVersion": "constraints.gatekeeper.sh/v1beta1",
            "kind": "K8sDemo",
            "metadata": {"name": "demo"},
        });
        assert_eq!(
            Constraint::parse(&plain, origin(), &template)
                .unwrap()
                .category,
            "Supply Chain"
        );
        let own = json!({
            "apiVersion": "constraints.gatekeeper.sh/v1beta1",
            "kind": "K8sDemo",
            "metadata": {"name": "demo", "annotations": {"regate.dev/category": "Network"}},
        });
        assert_eq!(
            Constraint::parse(&own, origin(), &template)
                .unwrap()
                .category,
            "Network"
        );
    }

    #[test]
    fn bad_match_rejects_the_constraint() {
        let e = constraint(json!({"match": {"namespaces": ["a*b"]}})).unwrap_err();
        assert!(e.message.contains("spec.match.namespaces"), "{e}");
    }
}
