//! Validating a Constraint's `spec.parameters` against its template's `openAPIV3Schema`, the
//! way the apiserver validates a custom resource: the structural-schema subset of OpenAPI v3
//! (types, properties, items, enums, bounds, patterns, combinators) and its defaulting. Unknown
//! keywords (`description`, `example`, `x-kubernetes-*` …) are accepted and ignored.

use serde_json::{Map, Value};

/// Every violation of `schema` by `value`, as `path: message`, in document order.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, value, "spec.parameters", &mut errors);
    errors
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(expected: &str, value: &Value, int_or_string: bool) -> bool {
    if int_or_string && (value.is_string() || value.is_i64() || value.is_u64()) {
        return true;
    }
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        // An unknown type name is a broken template; the apiserver would have refused it.
        _ => false,
    }
}

fn check(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Value::Object(s) = schema else {
        return;
    };
    let nullable = s.get("nullable").and_then(Value::as_bool).unwrap_or(false);
    if value.is_null() && nullable {
        return;
    }
    let int_or_string = s
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if let Some(expected) = s.get("type").and_then(Value::as_str) {
        if !type_ok(expected, value, int_or_string) {
            errors.push(format!(
                "{path}: must be of type {expected}, got {}",
                type_name(value)
            ));
            return;
        }
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.iter().any(|o| o == value) {
            let list: Vec<String> = options.iter().map(Value::to_string).collect();
            errors.push(format!("{path}: {value} is not one of {}", list.join(", ")));
        }
    }
    match value {
        Value::Object(map) => check_object(s, map, path, errors),
        Value::Array(items) => check_array(s, items, path, errors),
        Value::String(text) => check_string(s, text, path, errors),
        Value::Number(n) => check_number(s, n.as_f64().unwrap_or(0.0), path, errors),
        _ => {}
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        let Some(Value::Array(subs)) = s.get(key) else {
            continue;
        };
        let passing = subs
            .iter()
            .filter(|sub| {
                let mut e = Vec::new();
                check(sub, value, path, &mut e);
                e.is_empty()
            })
            .count();
        let ok = match key {
            "allOf" => passing == subs.len(),
            "anyOf" => passing > 0,
            _ => passing == 1,
        };
        if !ok {
            errors.push(format!("{path}: does not satisfy {key}"));
        }
    }
    if let Some(not) = s.get("not") {
        let mut e = Vec::new();
        check(not, value, path, &mut e);
        if e.is_empty() {
            errors.push(format!("{path}: must not match the `not` schema"));
        }
    }
}

fn check_object(
    s: &Map<String, Value>,
    map: &Map<String, Value>,
    path: &str,
    errors: &mut Vec<String>,
) {
    let props = s.get("properties").and_then(Value::as_object);
    if let Some(Value::Array(required)) = s.get("required") {
        for r in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                errors.push(format!("{path}.{r}: required"));
            }
        }
    }
    for (key, v) in map {
        let child = format!("{path}.{key}");
        if let Some(p) = props.and_then(|p| p.get(key)) {
            check(p, v, &child, errors);
        } else {
            match s.get("additionalProperties") {
                Some(Value::Object(_)) => check(&s["additionalProperties"], v, &child, errors),
                Some(Value::Bool(false)) => errors.push(format!("{child}: unknown field")),
                // Without `additionalProperties` the apiserver prunes unknown fields rather
                // than rejecting them; the Rego simply never reads them.
                _ => {}
            }
        }
    }
    let len = map.len() as u64;
    if let Some(n) = s.get("minProperties").and_then(Value::as_u64) {
        if len < n {
            errors.push(format!("{path}: needs at least {n} fields, has {len}"));
        }
    }
    if let Some(n) = s.get("maxProperties").and_then(Value::as_u64) {
        if len > n {
            errors.push(format!("{path}: allows at most {n} fields, has {len}"));
        }
    }
}

fn check_array(s: &Map<String, Value>, items: &[Value], path: &str, errors: &mut Vec<String>) {
    if let Some(item_schema) = s.get("items") {
        for (i, item) in items.iter().enumerate() {
            check(item_schema, item, &format!("{path}[{i}]"), errors);
        }
    }
    let len = items.len() as u64;
    if let Some(n) = s.get("minItems").and_then(Value::as_u64) {
        if len < n {
            errors.push(format!("{path}: needs at least {n} items, has {len}"));
        }
    }
    if let Some(n) = s.get("maxItems").and_then(Value::as_u64) {
        if len > n {
            errors.push(format!("{path}: allows at most {n} items, has {len}"));
        }
    }
    if s.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
        for (i, a) in items.iter().enumerate() {
            if items[..i].contains(a) {
                errors.push(format!("{path}[{i}]: duplicate item {a}"));
            }
        }
    }
}

fn check_string(s: &Map<String, Value>, text: &str, path: &str, errors: &mut Vec<String>) {
    let len = text.chars().count() as u64;
    if let Some(n) = s.get("minLength").and_then(Value::as_u64) {
        if len < n {
            errors.push(format!("{path}: shorter than {n} characters"));
        }
    }
    if let Some(n) = s.get("maxLength").and_then(Value::as_u64) {
        if len > n {
            errors.push(format!("{path}: longer than {n} characters"));
        }
    }
    if let Some(pattern) = s.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if !re.is_match(text) => {
                errors.push(format!("{path}: {text:?} does not match {pattern:?}"));
            }
            Ok(_) => {}
            Err(e) => errors.push(format!(
                "{path}: the schema's pattern {pattern:?} is invalid: {e}"
            )),
        }
    }
}

fn check_number(s: &Map<String, Value>, n: f64, path: &str, errors: &mut Vec<String>) {
    if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
        let exclusive = s
            .get("exclusiveMinimum")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if n < min || (exclusive && n == min) {
            errors.push(format!(
                "{path}: must be {} {min}",
                if exclusive { ">" } else { ">=" }
            ));
        }
    }
    if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
        let exclusive = s
            .get("exclusiveMaximum")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if n > max || (exclusive && n == max) {
            errors.push(format!(
                "{path}: must be {} {max}",
                if exclusive { "<" } else { "<=" }
            ));
        }
    }
    if let Some(m) = s.get("multipleOf").and_then(Value::as_f64) {
        if m > 0.0 && (n / m).fract() != 0.0 {
            errors.push(format!("{path}: must be a multiple of {m}"));
        }
    }
}

/// Fills `default`s below properties that are absent, as the apiserver does for a structural
/// schema before a custom resource is stored (so the Rego sees what a cluster would hand it).
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    let Value::Object(s) = schema else {
        return;
    };
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(props)) = s.get("properties") {
                for (key, prop) in props {
                    if !map.contains_key(key) {
                        if let Some(default) = prop.get("default") {
                            map.insert(key.clone(), default.clone());
                        }
                    }
                    if let Some(child) = map.get_mut(key) {
                        apply_defaults(prop, child);
                    }
                }
            }
            if let Some(extra @ Value::Object(_)) = s.get("additionalProperties") {
                let known = s.get("properties").and_then(Value::as_object);
                for (key, child) in map.iter_mut() {
                    if known.is_none_or(|k| !k.contains_key(key)) {
                        apply_defaults(extra, child);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = s.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "repos": {"type": "array", "items": {"type": "string"}},
                "max": {"type": "integer", "minimum": 1},
                "mode": {"type": "string", "enum": ["strict", "lax"]},
                "strict": {"type": "boolean", "default": true},
                "ranges": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"min": {"type": "integer"}, "max": {"type": "integer", "default": 65535}}
                }},
                "port": {"x-kubernetes-int-or-string": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            }
        })
    }

    #[test]
    fn accepts_valid_parameters() {
        let p = json!({"repos": ["a/", "b/"], "max": 3, "mode": "lax", "port": "http", "labels": {"a": "b"}});
        assert_eq!(validate(&schema(), &p), Vec::<String>::new());
        assert!(validate(&schema(), &json!({"port": 8080})).is_empty());
    }

    #[test]
    fn reports_each_problem_with_its_path() {
        let p = json!({"repos": "a/", "max": 0, "mode": "loose", "ranges": [{"min": "x"}], "labels": {"a": 1}});
        let errors = validate(&schema(), &p);
        assert!(
            errors
                .contains(&"spec.parameters.repos: must be of type array, got string".to_string()),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.parameters.max: must be >= 1")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.parameters.mode: \"loose\" is not one of")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.parameters.ranges[0].min: must be of type integer")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("spec.parameters.labels.a: must be of type string")),
            "{errors:?}"
        );
        assert_eq!(errors.len(), 5, "{errors:?}");
    }

    #[test]
    fn integers_are_not_floats() {
        assert!(!validate(&schema(), &json!({"max": 1.5})).is_empty());
    }

    #[test]
    fn unknown_fields_are_ignored_unless_forbidden() {
        assert!(validate(&schema(), &json!({"other": 1})).is_empty());
        let closed =
            json!({"type": "object", "additionalProperties": false, "properties": {"a": {}}});
        assert_eq!(
            validate(&closed, &json!({"b": 1})),
            vec!["spec.parameters.b: unknown field".to_string()]
        );
    }

    #[test]
    fn required_and_combinators() {
        let s = json!({"type": "object", "required": ["a"], "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}});
        assert_eq!(
            validate(&s, &json!({})),
            vec!["spec.parameters.a: required".to_string()]
        );
        assert!(validate(&s, &json!({"a": 1})).is_empty());
        assert!(!validate(&s, &json!({"a": true})).is_empty());
    }

    #[test]
    fn defaults_fill_absent_fields_only() {
        let mut p = json!({"ranges": [{"min": 1}, {"min": 2, "max": 3}]});
        apply_defaults(&schema(), &mut p);
        assert_eq!(p["strict"], json!(true));
        assert_eq!(p["ranges"][0]["max"], json!(65535));
        assert_eq!(p["ranges"][1]["max"], json!(3));
        let mut q = json!({"strict": false});
        apply_defaults(&schema(), &mut q);
        assert_eq!(q["strict"], json!(false));
    }
}
