//! Applying one mutator's location to an object: a port of Gatekeeper's
//! `pkg/mutation/mutators/core/mutation_function.go`. Missing objects and keyed-list elements
//! on the way are created (a new element carries its key), globs visit every element,
//! `pathTests` stop the mutation where a node must (not) exist, and the setter writes the last
//! node. As in Gatekeeper, a created parent is kept whenever the setter was reached, even if it
//! wrote nothing (a ModifySet prune under a missing parent leaves the empty parent).
//!
//! One deliberate difference: a field holding JSON `null` counts as missing (Gatekeeper would
//! fail on it; the apiserver never sends one for built-in kinds, but `eval` reads manifests as
//! written).
//!
//! Messages name locations and JSON types, never values of the object: they may be a Secret's.

use serde_json::{Map, Value};

use super::image;
use super::path::{KeyValue, Node, Path, Tester};

/// What the last node of a location receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Setter {
    /// Assign and AssignMetadata: the value (already resolved for `fromMetadata`).
    Value(Value),
    /// ModifySet: `merge` appends each value not already present, `prune` removes them.
    Merge(Vec<Value>),
    Prune(Vec<Value>),
    /// AssignImage: the image components to replace (empty: keep).
    Image {
        domain: String,
        path: String,
        tag: String,
    },
}

/// What applying a location did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The setter ran somewhere (Gatekeeper's `mutated`: created parents are then kept).
    pub reached: bool,
    /// The object is different afterwards.
    pub changed: bool,
}

impl Outcome {
    fn merge(self, other: Outcome) -> Outcome {
        Outcome {
            reached: self.reached || other.reached,
            changed: self.changed || other.changed,
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn present(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

struct State<'a> {
    path: &'a Path,
    tester: &'a Tester,
    setter: &'a Setter,
}

/// Applies `setter` at `path` in `object`. On error the object may be partly changed: the
/// caller works on a copy.
pub fn apply(
    path: &Path,
    tester: &Tester,
    setter: &Setter,
    object: &mut Value,
) -> Result<Outcome, String> {
    State {
        path,
        tester,
        setter,
    }
    .at(object, 0)
}

impl State<'_> {
    fn last(&self) -> usize {
        self.path.nodes.len().saturating_sub(1)
    }

    /// The location up to and including `depth`, for messages.
    fn prefix(&self, depth: usize) -> String {
        self.path.text_to(depth)
    }

    fn at(&self, current: &mut Value, depth: usize) -> Result<Outcome, String> {
        let Some(node) = self.path.nodes.get(depth) else {
            return Ok(Outcome::default());
        };
        match node {
            Node::Object(field) => {
                let Value::Object(map) = current else {
                    return Err(format!(
                        "{} is {}, not an object",
                        self.parent_text(depth),
                        type_name(current)
                    ));
                };
                let exists = present(map.get(field)).is_some();
                let allowed = if exists {
                    self.tester.exists_okay(depth)
                } else {
                    self.tester.missing_okay(depth)
                };
                if !allowed {
                    return Ok(Outcome::default());
                }
                if depth == self.last() {
                    let changed = self.set(map, field, depth)?;
                    return Ok(Outcome {
                        reached: true,
                        changed,
                    });
                }
                if exists {
                    match map.get_mut(field) {
                        Some(next) => self.at(next, depth + 1),
                        None => Ok(Outcome::default()),
                    }
                } else {
                    let mut next = self.missing_element(depth)?;
                    let out = self.at(&mut next, depth + 1)?;
                    if out.reached {
                        map.insert(field.clone(), next);
                        return Ok(Outcome {
                            reached: true,
                            changed: true,
                        });
                    }
                    Ok(out)
                }
            }
            Node::List { key, value } => {
                let Value::Array(items) = current else {
                    return Err(format!(
                        "{} is {}, not a list",
                        self.parent_text(depth),
                        type_name(current)
                    ));
                };
                if depth == self.last() {
                    return self.set_element(items, key, value.as_ref(), depth);
                }
                let Some(value) = value else {
                    // A glob: every element. "MustNotExist" on a glob can never hold.
                    if !self.tester.exists_okay(depth) {
                        return Ok(Outcome::default());
                    }
                    let mut out = Outcome::default();
                    for item in items.iter_mut() {
                        out = out.merge(self.at(item, depth + 1)?);
                    }
                    return Ok(out);
                };
                let mut out = Outcome::default();
                let mut found = false;
                for item in items.iter_mut() {
                    let matches = item
                        .as_object()
                        .and_then(|o| o.get(key))
                        .is_some_and(|v| value.matches(v));
                    if matches {
                        if !self.tester.exists_okay(depth) {
                            return Ok(Outcome::default());
                        }
                        out = out.merge(self.at(item, depth + 1)?);
                        found = true;
                    }
                }
                if !found {
                    if !self.tester.missing_okay(depth) {
                        return Ok(Outcome::default());
                    }
                    let mut next = self.missing_element(depth)?;
                    let added = self.at(&mut next, depth + 1)?;
                    if added.reached {
                        items.push(next);
                        out = Outcome {
                            reached: true,
                            changed: true,
                        };
                    }
                }
                Ok(out)
            }
        }
    }

    /// The text of the location up to the node before `depth` (what `current` is).
    fn parent_text(&self, depth: usize) -> String {
        if depth == 0 {
            "the object".to_string()
        } else {
            self.prefix(depth - 1)
        }
    }

    /// A new element for the node after `depth`: an object or a list, and when `depth` is a
    /// keyed list, an object holding the key.
    fn missing_element(&self, depth: usize) -> Result<Value, String> {
        let next = match self.path.nodes.get(depth + 1) {
            Some(Node::List { .. }) => Value::Array(Vec::new()),
            _ => Value::Object(Map::new()),
        };
        match self.path.nodes.get(depth) {
            Some(Node::List {
                key,
                value: Some(value),
            }) => match next {
                Value::Object(mut map) => {
                    map.insert(key.clone(), value.to_json());
                    Ok(Value::Object(map))
                }
                _ => Err(format!(
                    "{}: a list element cannot itself be a list",
                    self.prefix(depth + 1)
                )),
            },
            Some(Node::List { value: None, .. }) => Err(format!(
                "{}: a glob cannot create a list element",
                self.prefix(depth)
            )),
            _ => Ok(next),
        }
    }

    /// The setter at an object's field.
    fn set(&self, map: &mut Map<String, Value>, field: &str, depth: usize) -> Result<bool, String> {
        let location = || self.prefix(depth);
        match self.setter {
            Setter::Value(v) => {
                if map.get(field) == Some(v) {
                    return Ok(false);
                }
                map.insert(field.to_string(), v.clone());
                Ok(true)
            }
            Setter::Merge(values) => match map.get_mut(field) {
                None | Some(Value::Null) => {
                    map.insert(field.to_string(), Value::Array(values.clone()));
                    Ok(true)
                }
                Some(Value::Array(items)) => {
                    let mut changed = false;
                    for v in values {
                        if !items.contains(v) {
                            items.push(v.clone());
                            changed = true;
                        }
                    }
                    Ok(changed)
                }
                Some(other) => Err(format!(
                    "{} is {}, not a list of values to treat as a set",
                    location(),
                    type_name(other)
                )),
            },
            Setter::Prune(values) => match map.get_mut(field) {
                None | Some(Value::Null) => Ok(false),
                Some(Value::Array(items)) => {
                    let before = items.len();
                    items.retain(|i| !values.contains(i));
                    Ok(items.len() != before)
                }
                Some(other) => Err(format!(
                    "{} is {}, not a list of values to treat as a set",
                    location(),
                    type_name(other)
                )),
            },
            Setter::Image { domain, path, tag } => {
                let old = match map.get(field) {
                    None | Some(Value::Null) => "",
                    Some(Value::String(s)) => s.as_str(),
                    Some(other) => {
                        return Err(format!(
                            "{} is {}, not an image string",
                            location(),
                            type_name(other)
                        ))
                    }
                };
                let new = image::mutate(domain, path, tag, old);
                if present(map.get(field)).and_then(Value::as_str) == Some(new.as_str()) {
                    return Ok(false);
                }
                map.insert(field.to_string(), Value::String(new));
                Ok(true)
            }
        }
    }

    /// The setter at a keyed-list element (Assign only: its value is an object holding the
    /// key): replaces the element with that key, or appends it.
    fn set_element(
        &self,
        items: &mut Vec<Value>,
        key: &str,
        value: Option<&KeyValue>,
        depth: usize,
    ) -> Result<Outcome, String> {
        let Setter::Value(new) = self.setter else {
            return Err(format!(
                "{}: only Assign can set a whole list element",
                self.prefix(depth)
            ));
        };
        let Some(value) = value else {
            return Err(format!(
                "{}: the last node of a location cannot be a glob",
                self.prefix(depth)
            ));
        };
        let Some(new_key) = new.as_object().and_then(|o| o.get(key)) else {
            return Err(format!(
                "{}: the assigned value is not an object with {key}",
                self.prefix(depth)
            ));
        };
        if !value.matches(new_key) {
            return Err(format!(
                "{}: the assigned value's {key} differs from the location's",
                self.prefix(depth)
            ));
        }
        for item in items.iter_mut() {
            let Value::Object(element) = item else {
                return Err(format!(
                    "{}: an element is {}, not an object",
                    self.prefix(depth.saturating_sub(1)),
                    type_name(item)
                ));
            };
            if element.get(key).is_some_and(|v| value.matches(v)) {
                if !self.tester.exists_okay(depth) {
                    return Ok(Outcome::default());
                }
                let changed = *item != *new;
                *item = new.clone();
                return Ok(Outcome {
                    reached: true,
                    changed,
                });
            }
        }
        if !self.tester.missing_okay(depth) {
            return Ok(Outcome::default());
        }
        items.push(new.clone());
        Ok(Outcome {
            reached: true,
            changed: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::gatekeeper::mutation::path::parse;

    fn run(location: &str, tests: &[(&str, &str)], setter: Setter, object: Value) -> Value {
        let path = parse(location).unwrap();
        let tests: Vec<(String, String)> = tests
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let tester = Tester::new(&path, &tests).unwrap();
        let mut object = object;
        apply(&path, &tester, &setter, &mut object).unwrap();
        object
    }

    #[test]
    fn keyed_list_elements_are_found_or_created() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "x": 1}]}});
        let out = run(
            "spec.containers[name: b].x",
            &[],
            Setter::Value(json!(2)),
            pod.clone(),
        );
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "x": 2}]}})
        );
        let out = run(
            "spec.containers[name: c].x",
            &[],
            Setter::Value(json!(3)),
            pod.clone(),
        );
        assert_eq!(out["spec"]["containers"][2], json!({"name": "c", "x": 3}));
        // MustExist on the element: no sidecar is invented.
        let out = run(
            "spec.containers[name: c].x",
            &[("spec.containers[name: c]", "MustExist")],
            Setter::Value(json!(3)),
            pod.clone(),
        );
        assert_eq!(out, pod);
    }

    #[test]
    fn globs_visit_every_element_and_create_nothing() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 0}}]}});
        let out = run(
            "spec.containers[name: *].securityContext.runAsUser",
            &[(
                "spec.containers[name: *].securityContext.runAsUser",
                "MustNotExist",
            )],
            Setter::Value(json!(1000)),
            pod,
        );
        assert_eq!(
            out,
            json!({"spec": {"containers": [
                {"name": "a", "securityContext": {"runAsUser": 1000}},
                {"name": "b", "securityContext": {"runAsUser": 0}}
            ]}})
        );
        let empty = json!({"spec": {}});
        assert_eq!(
            run(
                "spec.containers[name: *].image",
                &[],
                Setter::Value(json!("x")),
                empty.clone()
            ),
            json!({"spec": {}})
        );
    }

    #[test]
    fn whole_elements_are_replaced_or_appended() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "old"}]}});
        let sidecar = json!({"name": "net", "image": "quay.io/net"});
        let out = run(
            "spec.containers[name: net]",
            &[],
            Setter::Value(sidecar.clone()),
            pod.clone(),
        );
        assert_eq!(out["spec"]["containers"][1], sidecar);
        let replaced = json!({"name": "a", "image": "new"});
        let out = run(
            "spec.containers[name: a]",
            &[],
            Setter::Value(replaced.clone()),
            pod,
        );
        assert_eq!(out["spec"]["containers"], json!([replaced]));
    }

    #[test]
    fn modify_set_merges_and_prunes() {
        let pod =
            json!({"spec": {"containers": [{"name": "a", "args": ["--x", "--y"]}, {"name": "b"}]}});
        let out = run(
            "spec.containers[name: *].args",
            &[],
            Setter::Merge(vec![json!("--y"), json!("--z")]),
            pod.clone(),
        );
        assert_eq!(
            out["spec"]["containers"][0]["args"],
            json!(["--x", "--y", "--z"])
        );
        assert_eq!(out["spec"]["containers"][1]["args"], json!(["--y", "--z"]));
        let out = run(
            "spec.containers[name: *].args",
            &[],
            Setter::Prune(vec![json!("--x")]),
            pod,
        );
        assert_eq!(out["spec"]["containers"][0]["args"], json!(["--y"]));
        assert_eq!(out["spec"]["containers"][1], json!({"name": "b"}));
    }

    #[test]
    fn type_mismatches_are_errors_without_values() {
        let path = parse("spec.containers[name: *].image").unwrap();
        let tester = Tester::default();
        let mut object = json!({"spec": {"containers": {"name": "SECRET-VALUE"}}});
        let err = apply(&path, &tester, &Setter::Value(json!("x")), &mut object).unwrap_err();
        assert_eq!(err, "spec.containers is an object, not a list");
        let mut object = json!({"spec": {"args": "SECRET-VALUE"}});
        let err = apply(
            &parse("spec.args").unwrap(),
            &tester,
            &Setter::Merge(vec![json!("a")]),
            &mut object,
        )
        .unwrap_err();
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn null_counts_as_missing() {
        let out = run(
            "spec.securityContext.runAsNonRoot",
            &[("spec.securityContext.runAsNonRoot", "MustNotExist")],
            Setter::Value(json!(true)),
            json!({"spec": {"securityContext": null}}),
        );
        assert_eq!(
            out,
            json!({"spec": {"securityContext": {"runAsNonRoot": true}}})
        );
    }
}
