//! The input policies read: a review's JSON as a regorus value, built once per request.
//!
//! A webhook body is parsed straight into that value ([`parse`]): no `serde_json::Value` is
//! built and dropped on the way. Reviews built from manifests convert their JSON
//! ([`from_json`]). Both give the same value for the same JSON (the tests below check it on
//! every fixture).

use std::collections::BTreeMap;

use regorus::Value;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Parses a JSON text into the value policies read. Numbers, strings, duplicate keys (the last
/// one wins), errors and the nesting limit are exactly those of `serde_json::from_str` then
/// [`from_json`]: the same parser reads the text.
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let mut parser = serde_json::Deserializer::from_str(text);
    let value = Document.deserialize(&mut parser)?;
    parser.end()?;
    Ok(value)
}

/// [`parse`] with `metadata.managedFields` of `request.object` and `request.oldObject` left out:
/// the value [`for_policies`] gives without them, with [`parse`]'s errors (what is left out is
/// still read and checked as JSON, only not built). `managedFields` is often the largest part of
/// an object, and most policy sets never read it.
pub fn parse_without_managed_fields(text: &str) -> Result<Value, serde_json::Error> {
    let mut parser = serde_json::Deserializer::from_str(text);
    let value = Toward(Step::Review).deserialize(&mut parser)?;
    parser.end()?;
    Ok(value)
}

/// The JSON of a review as policies see it, `managedFields` included: converted in one walk
/// without copying the JSON first.
pub fn from_json(review: &serde_json::Value) -> Value {
    match review {
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
        serde_json::Value::Array(items) => {
            Value::from(items.iter().map(from_json).collect::<Vec<_>>())
        }
        serde_json::Value::Object(map) => {
            // One insert per key: faster here than collecting (measured, docs/BENCHMARKS.md).
            let mut out = BTreeMap::new();
            for (k, v) in map {
                out.insert(Value::String(k.as_str().into()), from_json(v));
            }
            Value::from(out)
        }
    }
}

/// `input` for one judgement of `document` (a whole review, as [`parse`] or [`from_json`] built
/// it). Its top-level object is always a new one: the grouped pass recognises the request it
/// ran for by that allocation (`policy::bytecode`), so each judgement must have its own. With
/// `drop_managed_fields`, `metadata.managedFields` of `request.object` and `request.oldObject`
/// is left out: it is often the largest part of an object and no policy of the set reads it.
/// Only the objects on the way to it are copied, and of those only their entries.
pub fn for_policies(document: &Value, drop_managed_fields: bool) -> Value {
    let Value::Object(top) = document else {
        return document.clone();
    };
    rebuilt(top, |key, value| {
        if drop_managed_fields && key == "request" {
            request_without_managed_fields(value)
        } else {
            value.clone()
        }
    })
}

/// The members of `request` that hold the objects under review.
const OBJECTS: [&str; 2] = ["object", "oldObject"];

/// `request` with its object and old object as [`object_without_managed_fields`] leaves them;
/// shared as it is when neither holds any.
fn request_without_managed_fields(request: &Value) -> Value {
    let Value::Object(map) = request else {
        return request.clone();
    };
    if !OBJECTS.iter().any(|f| holds_managed_fields(&request[*f])) {
        return request.clone();
    }
    rebuilt(map, |key, value| {
        if OBJECTS.contains(&key) {
            object_without_managed_fields(value)
        } else {
            value.clone()
        }
    })
}

/// Whether `object.metadata` is an object with a `managedFields` member.
fn holds_managed_fields(object: &Value) -> bool {
    match &object["metadata"] {
        metadata @ Value::Object(_) => !matches!(&metadata["managedFields"], Value::Undefined),
        _ => false,
    }
}

fn object_without_managed_fields(object: &Value) -> Value {
    match object {
        Value::Object(map) if holds_managed_fields(object) => {
            rebuilt(map, |key, value| match value {
                Value::Object(metadata) if key == "metadata" => Value::from(
                    metadata
                        .iter()
                        .filter(|(k, _)| k.as_string().map_or(true, |k| &**k != "managedFields"))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                _ => value.clone(),
            })
        }
        _ => object.clone(),
    }
}

/// A new object with `map`'s entries, each value given by `value(key, value)`.
fn rebuilt(map: &regorus::value::Object, value: impl Fn(&str, &Value) -> Value) -> Value {
    Value::from(
        map.iter()
            .map(|(k, v)| {
                let v = match k.as_string() {
                    Ok(name) => value(name, v),
                    Err(_) => v.clone(),
                };
                (k.clone(), v)
            })
            .collect::<BTreeMap<_, _>>(),
    )
}

/// Any JSON value, built as [`from_json`] converts it.
struct Document;

/// An object key: a string (JSON has no other).
struct Key;

impl<'de> DeserializeSeed<'de> for Document {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, parser: D) -> Result<Value, D::Error> {
        parser.deserialize_any(self)
    }
}

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, parser: D) -> Result<Value, D::Error> {
        parser.deserialize_str(self)
    }
}

impl Visitor<'_> for Key {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.into()))
    }
}

impl<'de> Visitor<'de> for Document {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::from(n))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        // Finite: serde_json refuses a number out of range.
        Ok(Value::from(n))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.into()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = items.next_element_seed(Document)? {
            out.push(item);
        }
        Ok(Value::from(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, members: A) -> Result<Value, A::Error> {
        object_of(members, None)
    }
}

/// Where a value sits on the way from the review to a `managedFields` that
/// [`parse_without_managed_fields`] leaves out.
#[derive(Clone, Copy)]
enum Step {
    /// The review itself.
    Review,
    /// `request`.
    Request,
    /// `request.object` or `request.oldObject`.
    Object,
    /// Their `metadata`.
    Metadata,
}

/// A value on the way to a `managedFields`: built as [`Document`] builds it, except for the one
/// member it leaves out.
struct Toward(Step);

/// A value read and checked as JSON, and not built.
struct Skipped;

impl<'de> DeserializeSeed<'de> for Toward {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, parser: D) -> Result<Value, D::Error> {
        parser.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Toward {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        Document.expecting(f)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        Document.visit_unit()
    }

    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Value, E> {
        Document.visit_bool(b)
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Value, E> {
        Document.visit_u64(n)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Value, E> {
        Document.visit_i64(n)
    }

    fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Value, E> {
        Document.visit_f64(n)
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Value, E> {
        Document.visit_str(s)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, items: A) -> Result<Value, A::Error> {
        // No `managedFields` the policies could lose sits in an array.
        Document.visit_seq(items)
    }

    fn visit_map<A: MapAccess<'de>>(self, members: A) -> Result<Value, A::Error> {
        object_of(members, Some(self.0))
    }
}

/// An object's members, each built as [`Document`] builds it; at a `step` on the way to a
/// `managedFields` ([`Toward`]), the member that leads on is built as [`Toward`] builds it, and
/// `managedFields` itself is read and left out.
fn object_of<'de, A: MapAccess<'de>>(
    mut members: A,
    step: Option<Step>,
) -> Result<Value, A::Error> {
    let mut out = BTreeMap::new();
    while let Some(key) = members.next_key_seed(Key)? {
        let next = match step {
            None => None,
            Some(step) => match (step, key.as_string().map(|k| &**k).unwrap_or("")) {
                (Step::Review, "request") => Some(Step::Request),
                (Step::Request, "object" | "oldObject") => Some(Step::Object),
                (Step::Object, "metadata") => Some(Step::Metadata),
                (Step::Metadata, "managedFields") => {
                    members.next_value_seed(Skipped)?;
                    continue;
                }
                _ => None,
            },
        };
        let value = match next {
            Some(step) => members.next_value_seed(Toward(step))?,
            None => members.next_value_seed(Document)?,
        };
        out.insert(key, value);
    }
    Ok(Value::from(out))
}

impl<'de> DeserializeSeed<'de> for Skipped {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, parser: D) -> Result<(), D::Error> {
        // `deserialize_any`, not serde's `IgnoredAny`: serde_json skips an ignored value
        // without checking that its numbers are in range, and the text must be refused here
        // exactly when [`parse`] refuses it.
        parser.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skipped {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        while items.next_element_seed(Skipped)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut members: A) -> Result<(), A::Error> {
        while members.next_key_seed(Skipped)?.is_some() {
            members.next_value_seed(Skipped)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `json` with `metadata.managedFields` of the request's object and old object removed.
    fn stripped(json: &serde_json::Value) -> serde_json::Value {
        let mut out = json.clone();
        for field in OBJECTS {
            if let Some(meta) = out
                .pointer_mut(&format!("/request/{field}/metadata"))
                .and_then(|m| m.as_object_mut())
            {
                meta.remove("managedFields");
            }
        }
        out
    }

    /// Every way of building the input agrees with regorus's own conversion of the JSON.
    fn check(name: &str, text: &str) {
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        let parsed = parse(text).unwrap();
        assert_eq!(parsed, Value::from(json.clone()), "{name}: parsed");
        assert_eq!(from_json(&json), parsed, "{name}: converted");
        assert_eq!(for_policies(&parsed, false), parsed, "{name}: kept");
        assert_eq!(
            for_policies(&parsed, true),
            Value::from(stripped(&json)),
            "{name}: without managedFields"
        );
        assert_eq!(
            parse_without_managed_fields(text).unwrap(),
            Value::from(stripped(&json)),
            "{name}: parsed without managedFields"
        );
    }

    #[test]
    fn every_fixture_parses_as_regorus_converts_it() {
        for (name, text) in crate::admission::fixture_bodies() {
            check(&name, &text);
        }
    }

    #[test]
    fn odd_values_and_managed_fields() {
        let meta = r#"{"name":"n","managedFields":[{"manager":"kubectl"}],"labels":{"a":"b"}}"#;
        let cases = [
            r#"{"a": [1, -2, 2.5, -0, 0.0, 1e300, -1e-300, 18446744073709551615, 18446744073709551616, -9223372036854775808, null, true, "x"]}"#.to_string(),
            r#"{"a": 1, "a": 2, "\u00e9\ud83d\ude00": "\n\"", "": {}}"#.to_string(),
            format!(r#"{{"request": {{"object": {{"metadata": {meta}, "spec": {{"metadata": {meta}}}}}, "oldObject": {{"metadata": {meta}}}, "metadata": {meta}}}}}"#),
            r#"{"request": {"object": {"metadata": {"managedFields": null}}, "oldObject": null}}"#.to_string(),
            format!(r#"{{"request": {{"object": {{"metadata": [1]}}, "oldObject": [{{"metadata": {meta}}}]}}}}"#),
            format!(r#"{{"request": [{{"object": {{"metadata": {meta}}}}}]}}"#),
            r#"[1, {"request": 2}]"#.to_string(),
            r#""text""#.to_string(),
        ];
        for (i, text) in cases.iter().enumerate() {
            check(&format!("case {i}: {text}"), text);
        }
    }

    #[test]
    fn each_judgement_gets_its_own_input() {
        let parsed = parse(r#"{"request": {"object": {}}}"#).unwrap();
        let (Value::Object(a), Value::Object(b), Value::Object(original)) = (
            for_policies(&parsed, false),
            for_policies(&parsed, true),
            &parsed,
        ) else {
            panic!("not objects");
        };
        assert!(!regorus::Rc::ptr_eq(&a, &b));
        assert!(!regorus::Rc::ptr_eq(&a, original));
    }

    #[test]
    fn parse_errors_are_serde_json_s() {
        let deep = "[".repeat(200);
        for text in [
            "",
            "{",
            "[1,]",
            r#"{"a":1} x"#,
            "1e999",
            "\"\\ud800\"",
            &deep,
        ] {
            let ours = parse(text).err().map(|e| e.to_string());
            let theirs = serde_json::from_str::<serde_json::Value>(text)
                .err()
                .map(|e| e.to_string());
            assert!(ours.is_some(), "{text}");
            assert_eq!(ours, theirs, "{text}");
        }
    }

    /// What is left out is still read as JSON: the same text is refused, with the same error,
    /// wherever the fault sits inside a `managedFields`.
    #[test]
    fn left_out_values_are_refused_as_parse_refuses_them() {
        let deep = "[".repeat(200);
        for fault in [
            "1e999",
            "\"\\ud800\"",
            "[1,]",
            "{\"a\" 1}",
            "tru",
            &deep,
            "{\"f:x\":{}}",
        ] {
            for place in [
                "{\"request\":{\"object\":{\"metadata\":{\"managedFields\":FAULT}}}}",
                "{\"request\":{\"oldObject\":{\"metadata\":{\"name\":\"n\",\"managedFields\":[{\"fieldsV1\":FAULT}]}}}}",
            ] {
                let text = place.replace("FAULT", fault);
                let ours = parse_without_managed_fields(&text).err().map(|e| e.to_string());
                let full = parse(&text).err().map(|e| e.to_string());
                assert_eq!(ours, full, "{text}");
            }
        }
    }
}
