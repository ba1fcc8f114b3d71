//! `-o sarif`: SARIF 2.1.0 for code-scanning tools. One rule per policy; each finding points at
//! the manifest's file and line when the source is files, and names the object logically always.

use std::io::{self, Write};

use serde_json::{json, Value};

use crate::audit::baseline::BaselineFinding;
use crate::audit::record::{Finding, Label, ObjectRecord};
use crate::audit::report::at_path;
use crate::audit::runner::AuditRun;
use crate::policy::metadata::Severity;

pub const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

fn level(label: Label) -> &'static str {
    match label {
        Label::Deny | Label::Error => "error",
        Label::Warn => "warning",
        Label::Audit => "note",
    }
}

/// GitHub code scanning's scale (0-10) for security results.
fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
    }
}

fn percent_encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// An artifact location for a manifest path: relative paths against `%SRCROOT%`, absolute ones
/// as `file://` URIs; nothing for standard input.
fn artifact_location(file: &str) -> Option<Value> {
    if file.starts_with('<') {
        return None;
    }
    let normalized = file.replace('\\', "/");
    if normalized.starts_with('/') {
        return Some(json!({"uri": format!("file://{}", percent_encode(&normalized))}));
    }
    let relative = normalized.trim_start_matches("./");
    Some(json!({"uri": percent_encode(relative), "uriBaseId": "%SRCROOT%"}))
}

fn result(run: &AuditRun, r: &ObjectRecord, f: &Finding) -> Value {
    let rule_index = run.policies.iter().position(|p| p.id == f.policy);
    let logical_name = match &r.namespace {
        Some(ns) => format!("{ns}/{}/{}", r.kind, r.name),
        None => format!("{}/{}", r.kind, r.name),
    };
    let mut location = json!({
        "logicalLocations": [{"name": r.name, "fullyQualifiedName": logical_name, "kind": "object"}],
    });
    if let Some(artifact) = r.file.as_deref().and_then(artifact_location) {
        let mut physical = json!({"artifactLocation": artifact});
        if let Some(line) = r.line {
            physical["region"] = json!({"startLine": line});
        }
        location["physicalLocation"] = physical;
    }
    let path = at_path(f.path.as_deref());
    let mut out = json!({
        "ruleId": f.policy,
        "level": level(f.action),
        "message": {"text": format!("{}: {}{path}", logical_name, f.message)},
        "locations": [location],
        "partialFingerprints": {
            "regateObjectPolicy/v1": format!("{}|{}|{}", f.policy, logical_name, f.path.as_deref().unwrap_or("")),
        },
        "properties": {
            "action": f.action.as_str(),
            "severity": f.severity.as_str(),
            "environment": r.environment.as_str(),
            "kind": r.kind,
            "namespace": r.namespace,
            "name": r.name,
            "path": f.path,
        },
    });
    if let Some(i) = rule_index {
        out["ruleIndex"] = json!(i);
    }
    if let Some(b) = &run.baseline {
        out["baselineState"] = json!(b.state(r, f).sarif());
    }
    out
}

/// A finding of the baseline that this run no longer has: `baselineState: absent`.
fn resolved_result(run: &AuditRun, f: &BaselineFinding) -> Value {
    let logical_name = match &f.namespace {
        Some(ns) => format!("{ns}/{}/{}", f.kind, f.name),
        None => format!("{}/{}", f.kind, f.name),
    };
    let path = at_path(f.path.as_deref());
    let mut out = json!({
        "ruleId": f.policy,
        "level": level(f.action),
        "message": {"text": format!("{}: {}{path}", logical_name, f.message)},
        "locations": [{"logicalLocations": [{"name": f.name, "fullyQualifiedName": logical_name, "kind": "object"}]}],
        "partialFingerprints": {
            "regateObjectPolicy/v1": format!("{}|{}|{}", f.policy, logical_name, f.path.as_deref().unwrap_or("")),
        },
        "baselineState": "absent",
        "properties": {
            "action": f.action.as_str(),
            "severity": f.severity.as_str(),
            "kind": f.kind,
            "namespace": f.namespace,
            "name": f.name,
            "path": f.path,
        },
    });
    if let Some(i) = run.policies.iter().position(|p| p.id == f.policy) {
        out["ruleIndex"] = json!(i);
    }
    out
}

pub fn write(run: &mut AuditRun, out: &mut dyn Write) -> io::Result<()> {
    let rules: Vec<Value> = run
        .policies
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "name": p.id,
                "shortDescription": {"text": if p.title.is_empty() { p.id.clone() } else { p.title.clone() }},
                "fullDescription": {"text": if p.description.is_empty() { p.title.clone() } else { p.description.clone() }},
                "defaultConfiguration": {"level": "error"},
                "properties": {
                    "severity": p.severity.as_str(),
                    "security-severity": security_severity(p.severity),
                    "kinds": p.kinds,
                    "tags": ["kubernetes", "security", "regate"],
                },
            })
        })
        .collect();
    let tool = json!({
        "driver": {
            "name": "regate",
            "version": env!("CARGO_PKG_VERSION"),
            "rules": rules,
        }
    });
    let notifications: Vec<Value> = run
        .issues
        .iter()
        .map(|i| json!({"level": "error", "message": {"text": format!("{}: {}", i.source, i.message)}}))
        .collect();
    let invocations = json!([{
        "executionSuccessful": run.complete(),
        "toolExecutionNotifications": notifications,
    }]);
    let indent = |v: &Value, by: &str| -> io::Result<String> {
        Ok(serde_json::to_string_pretty(v)
            .map_err(io::Error::other)?
            .replace('\n', &format!("\n{by}")))
    };
    writeln!(out, "{{")?;
    writeln!(out, "  \"$schema\": \"{SCHEMA}\",")?;
    writeln!(out, "  \"version\": \"2.1.0\",")?;
    writeln!(out, "  \"runs\": [")?;
    writeln!(out, "    {{")?;
    writeln!(out, "      \"tool\": {},", indent(&tool, "      ")?)?;
    writeln!(
        out,
        "      \"invocations\": {},",
        indent(&invocations, "      ")?
    )?;
    write!(out, "      \"results\": [")?;
    let mut first = true;
    let mut records_by_partition = Vec::new();
    for p in 0..run.spool.partitions() {
        records_by_partition.clear();
        records_by_partition.extend(run.spool.read_partition(p)?);
        for r in &records_by_partition {
            for f in &r.findings {
                out.write_all(if first { b"\n        " } else { b",\n        " })?;
                first = false;
                serde_json::to_writer(&mut *out, &result(run, r, f)).map_err(io::Error::other)?;
            }
        }
    }
    if let Some(b) = &run.baseline {
        for f in &b.resolved {
            out.write_all(if first { b"\n        " } else { b",\n        " })?;
            first = false;
            serde_json::to_writer(&mut *out, &resolved_result(run, f)).map_err(io::Error::other)?;
        }
    }
    if first {
        writeln!(out, "]")?;
    } else {
        writeln!(out, "\n      ]")?;
    }
    writeln!(out, "    }}")?;
    writeln!(out, "  ]")?;
    writeln!(out, "}}")
}
