//! Fill-missing patch semantics. Policies emit `add` operations for leaf fields; regate creates
//! missing parents, never overwrites an existing value, and answers with the difference between
//! the object and the result. Two policies adding under the same missing parent therefore never
//! conflict, and a second pass over a mutated object finds nothing to add: no patch.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchOpError {
    #[error("patch operation is not an object with op, path and value")]
    Malformed,
    #[error("patch op {0:?} is not supported: regate patches only add what is missing")]
    UnsupportedOp(String),
    #[error("patch path {0:?} is not a JSON pointer")]
    BadPath(String),
}

/// One `add` a policy asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct AddOp {
    pub path: String,
    pub tokens: Vec<String>,
    pub value: Value,
}

impl AddOp {
    pub fn from_json(op: &Value) -> Result<AddOp, PatchOpError> {
        let obj = op.as_object().ok_or(PatchOpError::Malformed)?;
        let kind = obj
            .get("op")
            .and_then(Value::as_str)
            .ok_or(PatchOpError::Malformed)?;
        if kind != "add" {
            return Err(PatchOpError::UnsupportedOp(kind.to_string()));
        }
        let path = obj
            .get("path")
            .and_then(Value::as_str)
            .ok_or(PatchOpError::Malformed)?;
        let value = obj.get("value").cloned().ok_or(PatchOpError::Malformed)?;
        let tokens = pointer_tokens(path).ok_or_else(|| PatchOpError::BadPath(path.to_string()))?;
        if tokens.is_empty() {
            return Err(PatchOpError::BadPath(path.to_string()));
        }
        Ok(AddOp {
            path: path.to_string(),
            tokens,
            value,
        })
    }
}

fn pointer_tokens(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix('/')?;
    Some(
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    )
}

/// Applies `ops` to a copy of `object` with fill-missing semantics and returns the result.
/// Operations that would overwrite a value, or walk through a scalar, are dropped.
pub fn fill_missing(object: &Value, ops: &[AddOp]) -> Value {
    let mut result = object.clone();
    for op in ops {
        apply_one(&mut result, &op.tokens, &op.value);
    }
    result
}

fn apply_one(root: &mut Value, tokens: &[String], value: &Value) {
    let Some((last, parents)) = tokens.split_last() else {
        return;
    };
    let mut current = root;
    for (i, token) in parents.iter().enumerate() {
        // A missing parent becomes an array when the next step indexes into one (`/-`, `/0`).
        let next = tokens.get(i + 1).map(String::as_str).unwrap_or("");
        let container = if next == "-" || next.parse::<usize>().is_ok() {
            Value::Array(Vec::new())
        } else {
            Value::Object(Default::default())
        };
        current = match current {
            Value::Object(map) => {
                let entry = map.entry(token.clone()).or_insert(Value::Null);
                if entry.is_null() {
                    *entry = container;
                }
                entry
            }
            Value::Array(items) => match token.parse::<usize>().ok().and_then(|i| items.get_mut(i))
            {
                Some(item) => item,
                None => return,
            },
            _ => return,
        };
    }
    match current {
        Value::Object(map) => {
            let absent = map.get(last).is_none_or(Value::is_null);
            if absent {
                map.insert(last.clone(), value.clone());
            }
        }
        Value::Array(items) => {
            if last == "-" {
                items.push(value.clone());
            } else if let Ok(i) = last.parse::<usize>() {
                if i <= items.len() {
                    items.insert(i, value.clone());
                }
            }
        }
        _ => {}
    }
}

/// The JSONPatch that turns `before` into `after`; `None` when they are equal.
pub fn diff(before: &Value, after: &Value) -> Option<json_patch::Patch> {
    if before == after {
        return None;
    }
    let patch = json_patch::diff(before, after);
    if patch.0.is_empty() {
        None
    } else {
        Some(patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(path: &str, value: Value) -> AddOp {
        AddOp::from_json(&json!({"op": "add", "path": path, "value": value})).unwrap_or_else(|_| {
            AddOp {
                path: String::new(),
                tokens: vec![],
                value: Value::Null,
            }
        })
    }

    #[test]
    fn two_adds_under_one_missing_parent_do_not_conflict() -> Result<(), Box<dyn std::error::Error>>
    {
        let object = json!({"spec": {"containers": [{"name": "app"}]}});
        let ops = [
            op(
                "/spec/containers/0/securityContext/readOnlyRootFilesystem",
                json!(true),
            ),
            op(
                "/spec/containers/0/securityContext/allowPrivilegeEscalation",
                json!(false),
            ),
            op("/spec/securityContext/runAsNonRoot", json!(true)),
        ];
        let after = fill_missing(&object, &ops);
        let patch = diff(&object, &after).ok_or("expected a patch")?;
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &patch)?;
        assert_eq!(patched, after);
        assert_eq!(
            after["spec"]["containers"][0]["securityContext"],
            json!({"readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false})
        );
        // Idempotent: a second pass adds nothing.
        assert_eq!(diff(&after, &fill_missing(&after, &ops)), None);
        Ok(())
    }

    #[test]
    fn never_overwrites() {
        let object = json!({"spec": {"securityContext": {"runAsNonRoot": false}}});
        let after = fill_missing(
            &object,
            &[op("/spec/securityContext/runAsNonRoot", json!(true))],
        );
        assert_eq!(after, object);
    }

    #[test]
    fn appends_to_arrays() {
        let object = json!({"c": {"drop": ["NET_RAW"]}});
        let after = fill_missing(&object, &[op("/c/drop/-", json!("ALL"))]);
        assert_eq!(after, json!({"c": {"drop": ["NET_RAW", "ALL"]}}));
    }

    #[test]
    fn creates_missing_arrays() {
        let object = json!({"c": {}});
        let after = fill_missing(&object, &[op("/c/drop/-", json!("ALL"))]);
        assert_eq!(after, json!({"c": {"drop": ["ALL"]}}));
    }

    #[test]
    fn rejects_other_ops() {
        let r = AddOp::from_json(&json!({"op": "replace", "path": "/a", "value": 1}));
        assert_eq!(r, Err(PatchOpError::UnsupportedOp("replace".into())));
    }
}
