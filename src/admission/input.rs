//! The input policies read: a review's JSON as a regorus value, built once per request.

use regorus::Value;

/// The JSON of a review as policies see it (`input`), converted in one walk without copying the
/// JSON first. With `drop_managed_fields`, `metadata.managedFields` of `request.object` and
/// `request.oldObject` is left out: it is often the largest part of an object and no policy of
/// the set reads it.
pub fn input_value(review: &serde_json::Value, drop_managed_fields: bool) -> Value {
    convert(
        review,
        if drop_managed_fields {
            Level::Review
        } else {
            Level::Plain
        },
    )
}

/// Where in the review a value sits, as far as dropping `managedFields` goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    Plain,
    Review,
    Request,
    Object,
    Metadata,
}

fn convert(v: &serde_json::Value, level: Level) -> Value {
    match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                // serde_json's numbers are finite; this is what regorus's own conversion does.
                Value::from(serde_json::Value::Number(n.clone()))
            }
        }
        serde_json::Value::String(s) => Value::String(s.as_str().into()),
        serde_json::Value::Array(items) => Value::from(
            items
                .iter()
                .map(|i| convert(i, Level::Plain))
                .collect::<Vec<_>>(),
        ),
        serde_json::Value::Object(map) => {
            let mut out = std::collections::BTreeMap::new();
            for (k, v) in map {
                let next = match (level, k.as_str()) {
                    (Level::Review, "request") => Level::Request,
                    (Level::Request, "object" | "oldObject") => Level::Object,
                    (Level::Object, "metadata") => Level::Metadata,
                    (Level::Metadata, "managedFields") => continue,
                    _ => Level::Plain,
                };
                out.insert(Value::String(k.as_str().into()), convert(v, next));
            }
            Value::from(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::review::Review;

    #[test]
    fn input_conversion_matches_regorus() {
        for dir in ["fixtures/admission", "fixtures/bench"] {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
            for entry in std::fs::read_dir(&root).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                let name = path.display().to_string();
                let review = Review::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                let mut stripped = review.input.clone();
                for field in ["object", "oldObject"] {
                    if let Some(meta) = stripped
                        .pointer_mut(&format!("/request/{field}/metadata"))
                        .and_then(|m| m.as_object_mut())
                    {
                        meta.remove("managedFields");
                    }
                }
                assert_eq!(
                    input_value(&review.input, false),
                    Value::from(review.input.clone()),
                    "{name}"
                );
                assert_eq!(
                    input_value(&review.input, true),
                    Value::from(stripped),
                    "{name} without managedFields"
                );
            }
        }
        let odd =
            serde_json::json!({"a": [1, -2, 2.5, 1e300, 18446744073709551615u64, null, true, "x"]});
        assert_eq!(input_value(&odd, true), Value::from(odd.clone()));
    }
}
