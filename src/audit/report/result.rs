//! One finding as a result of a report API: the single mapping behind both `wgpolicyk8s.io`
//! PolicyReports ([`super::policyreport`]) and OpenReports ([`super::openreports`]), whose
//! result schemas are the same. Property values are strings, as both CRDs require.
//!
//! With `--baseline`, `properties.baselineState` says `new` or `unchanged`; a finding that the
//! baseline had and this run no longer has is a `skip` result with `baselineState: resolved`
//! (it is no longer failing, and `skip` keeps the pass/fail/warn/error counts equal to the audit's).

use serde_json::{json, Map, Value};

use crate::audit::baseline::{BaselineFinding, State};
use crate::audit::record::{Finding, ObjectRecord};

/// The `result` of a resolved finding.
pub const RESOLVED_RESULT: &str = "skip";

fn resource_ref(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    uid: Option<&str>,
) -> Value {
    let mut m = Map::new();
    m.insert("apiVersion".into(), Value::from(api_version));
    m.insert("kind".into(), Value::from(kind));
    if let Some(ns) = namespace {
        m.insert("namespace".into(), Value::from(ns));
    }
    m.insert("name".into(), Value::from(name));
    if let Some(uid) = uid {
        m.insert("uid".into(), Value::from(uid));
    }
    Value::Object(m)
}

fn record_ref(r: &ObjectRecord) -> Value {
    resource_ref(
        &r.api_version,
        &r.kind,
        r.namespace.as_deref(),
        &r.name,
        r.uid.as_deref(),
    )
}

/// The result of one finding of this run; `state` with `--baseline`.
pub fn of_finding(r: &ObjectRecord, f: &Finding, seconds: i64, state: Option<State>) -> Value {
    let mut properties = Map::new();
    properties.insert("action".into(), Value::from(f.action.as_str()));
    properties.insert("environment".into(), Value::from(r.environment.as_str()));
    if let Some(path) = &f.path {
        properties.insert("path".into(), Value::from(path.as_str()));
    }
    if let Some(file) = &r.file {
        properties.insert("file".into(), Value::from(file.as_str()));
    }
    if let Some(line) = r.line {
        properties.insert("line".into(), Value::from(line.to_string()));
    }
    if let Some(state) = state {
        properties.insert("baselineState".into(), Value::from(state.as_str()));
    }
    let mut result = json!({
        "source": "regate",
        "policy": f.policy,
        "rule": f.rule,
        "result": f.action.report_result(),
        "severity": f.severity.as_str(),
        "message": f.message,
        "scored": true,
        "timestamp": {"seconds": seconds, "nanos": 0},
        "resources": [record_ref(r)],
        "properties": properties,
    });
    if let Some(category) = &f.category {
        result["category"] = Value::String(category.clone());
    }
    result
}

/// The `pass` result of an (object, policy) pair without findings.
pub fn of_pass(r: &ObjectRecord, policy: &str, seconds: i64) -> Value {
    json!({
        "source": "regate",
        "policy": policy,
        "result": "pass",
        "scored": true,
        "timestamp": {"seconds": seconds, "nanos": 0},
        "resources": [record_ref(r)],
        "properties": {"environment": r.environment.as_str()},
    })
}

/// The result of a baseline finding this run no longer has.
pub fn of_resolved(b: &BaselineFinding, seconds: i64) -> Value {
    let mut properties = Map::new();
    properties.insert("action".into(), Value::from(b.action.as_str()));
    if let Some(path) = &b.path {
        properties.insert("path".into(), Value::from(path.as_str()));
    }
    properties.insert(
        "baselineState".into(),
        Value::from(State::Resolved.as_str()),
    );
    json!({
        "source": "regate",
        "policy": b.policy,
        "result": RESOLVED_RESULT,
        "severity": b.severity.as_str(),
        "message": b.message,
        "scored": true,
        "timestamp": {"seconds": seconds, "nanos": 0},
        "resources": [resource_ref(&b.api_version, &b.kind, b.namespace.as_deref(), &b.name, None)],
        "properties": properties,
    })
}
