//! `regate eval`'s outputs besides JSON: text, JUnit, SARIF, GitHub annotations, the summary
//! line, and the mutated objects of `--mutate`.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::{json, Value};

use crate::audit::report::escape_xml;
use crate::audit::FailOn;
use crate::cli::eval_result::{exit_code, warned, EvalResult};
use crate::config::Action;
use crate::policy::set::PolicySet;
use crate::secrets::SecretValues;

/// (file, line) of a result's `source` ("file:line").
fn file_line(source: &str) -> (&str, usize) {
    match source.rsplit_once(':') {
        Some((file, line)) => match line.parse() {
            Ok(line) => (file, line),
            Err(_) => (source, 1),
        },
        None => (source, 1),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Indents the continuation lines of a message (regorus's source excerpt) under its first line.
fn indented(text: &str, indent: &str) -> String {
    text.lines()
        .collect::<Vec<_>>()
        .join(&format!("\n{indent}"))
}

/// "3 objects: 1 denied, 1 warned, 1 allowed".
pub fn summary(results: &[EvalResult]) -> String {
    let denied = results
        .iter()
        .filter(|r| r.error.is_some() || !r.decision.allowed)
        .count();
    let warned = results
        .iter()
        .filter(|r| r.error.is_none() && r.decision.allowed && warned(r))
        .count();
    format!(
        "{}: {denied} denied, {warned} warned, {} allowed",
        plural(results.len(), "object", "objects"),
        results.len() - denied - warned
    )
}

/// The text report: one line per object, one per finding, and the summary.
pub fn text(results: &[EvalResult]) -> String {
    let mut out = String::new();
    for r in results {
        if let Some(error) = &r.error {
            out.push_str(&format!("INVALID  {}: {error}\n", r.source));
            continue;
        }
        let verdict = if !r.decision.allowed {
            "DENIED "
        } else if warned(r) {
            "WARNED "
        } else {
            "ALLOWED"
        };
        let ns = r
            .namespace
            .as_deref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{verdict}  {} {ns}{}  [{}]  {}\n",
            r.kind, r.name, r.decision.environment, r.source
        ));
        for v in &r.decision.violations {
            let mark = match v.action {
                Action::Deny => "deny ",
                Action::Warn => "warn ",
                Action::Audit => "audit",
            };
            let path = v
                .path
                .as_deref()
                .map(|p| format!("  (at {p})"))
                .unwrap_or_default();
            out.push_str(&format!("  {mark} [{}] {}{path}\n", v.policy, v.message));
        }
        for w in &r.decision.warn_results {
            out.push_str(&format!("  warn  [{}] {}\n", w.policy, w.message));
        }
        for w in &r.decision.waivers {
            out.push_str(&format!(
                "  waived [{}] by exception {:?}: {}\n",
                w.policy, w.exception, w.reason
            ));
        }
        for f in &r.decision.failures {
            out.push_str(&format!(
                "  error [{}] {}\n",
                f.policy,
                indented(&f.describe(), "        ")
            ));
        }
        if let Some(patch) = &r.decision.patch {
            out.push_str(&format!(
                "  patch {}\n",
                serde_json::to_string(patch).unwrap_or_default()
            ));
        }
    }
    out.push_str(&summary(results));
    out.push('\n');
    out
}

/// One finding of a result, for the CI formats: (level, policy, message).
fn findings(r: &EvalResult) -> Vec<(&'static str, String, String)> {
    let mut out = Vec::new();
    if let Some(error) = &r.error {
        out.push(("error", "invalid-input".to_string(), error.clone()));
        return out;
    }
    for v in &r.decision.violations {
        let level = match v.action {
            Action::Deny => "error",
            Action::Warn => "warning",
            Action::Audit => "notice",
        };
        let at = v
            .path
            .as_deref()
            .map(|p| format!(" (at {p})"))
            .unwrap_or_default();
        out.push((level, v.policy.clone(), format!("{}{at}", v.message)));
    }
    for w in &r.decision.warn_results {
        out.push(("warning", w.policy.clone(), w.message.clone()));
    }
    for f in &r.decision.failures {
        out.push(("error", f.policy.clone(), f.describe()));
    }
    out
}

/// GitHub Actions workflow commands: `::error file=…,line=…,title=…::message`.
pub fn github(results: &[EvalResult], out: &mut dyn Write) -> io::Result<()> {
    fn data(text: &str) -> String {
        text.replace('%', "%25")
            .replace('\r', "%0D")
            .replace('\n', "%0A")
    }
    fn property(text: &str) -> String {
        data(text).replace(':', "%3A").replace(',', "%2C")
    }
    for r in results {
        let (file, line) = file_line(&r.source);
        let object = format!("{} {}", r.kind, r.name);
        for (level, policy, message) in findings(r) {
            writeln!(
                out,
                "::{level} file={},line={line},title={}::{}",
                property(file),
                property(&format!("{policy}: {}", object.trim())),
                data(&message)
            )?;
        }
    }
    Ok(())
}

/// JUnit XML: one test case per object, failing as `--fail-on` says.
pub fn junit(results: &[EvalResult], fail_on: FailOn, out: &mut dyn Write) -> io::Result<()> {
    let failed =
        |r: &EvalResult| r.error.is_some() || exit_code(std::slice::from_ref(r), fail_on) == 1;
    let failures = results.iter().filter(|r| failed(r)).count();
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites name="regate eval" tests="{}" failures="{failures}">"#,
        results.len()
    )?;
    writeln!(
        out,
        r#"  <testsuite name="regate eval" tests="{}" failures="{failures}">"#,
        results.len()
    )?;
    for r in results {
        let (file, line) = file_line(&r.source);
        let name = if r.error.is_some() {
            r.source.clone()
        } else {
            let ns = r
                .namespace
                .as_deref()
                .map(|n| format!("{n}/"))
                .unwrap_or_default();
            format!("{} {ns}{}", r.kind, r.name)
        };
        write!(
            out,
            r#"    <testcase classname="{}" name="{}" file="{}" line="{line}">"#,
            escape_xml(file),
            escape_xml(&name),
            escape_xml(file)
        )?;
        let findings = findings(r)
            .into_iter()
            .map(|(level, policy, message)| format!("{level} [{policy}] {message}"))
            .collect::<Vec<_>>()
            .join("\n");
        if failed(r) {
            write!(
                out,
                r#"<failure message="{}">{}</failure>"#,
                escape_xml(findings.lines().next().unwrap_or("denied")),
                escape_xml(&findings)
            )?;
        } else if !findings.is_empty() {
            write!(out, "<system-out>{}</system-out>", escape_xml(&findings))?;
        }
        writeln!(out, "</testcase>")?;
    }
    writeln!(out, "  </testsuite>")?;
    writeln!(out, "</testsuites>")?;
    Ok(())
}

/// SARIF 2.1.0: one rule per policy that found something, each result at its file and line.
pub fn sarif(set: &PolicySet, results: &[EvalResult], out: &mut dyn Write) -> io::Result<()> {
    let mut rules: BTreeMap<String, Value> = BTreeMap::new();
    let mut items = Vec::new();
    for r in results {
        let (file, line) = file_line(&r.source);
        for (level, policy, message) in findings(r) {
            rules.entry(policy.clone()).or_insert_with(|| {
                let meta = set.policies.iter().find(|p| p.meta.id == policy);
                json!({
                    "id": policy,
                    "shortDescription": {"text": meta.map(|p| p.meta.title.clone()).unwrap_or_else(|| policy.clone())},
                    "help": {"text": meta.map(|p| p.meta.description.clone()).unwrap_or_default()},
                })
            });
            let level = match level {
                "notice" => "note",
                other => other,
            };
            items.push(json!({
                "ruleId": policy,
                "level": level,
                "message": {"text": format!("{} {}: {message}", r.kind, r.name)},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": file.trim_start_matches("./")},
                    "region": {"startLine": line.max(1)},
                }}],
            }));
        }
    }
    let report = json!({
        "$schema": crate::audit::report::sarif::SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "regate",
                "informationUri": "https://github.com/regate/regate",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules.into_values().collect::<Vec<_>>(),
            }},
            "results": items,
        }],
    });
    serde_json::to_writer_pretty(&mut *out, &report)?;
    writeln!(out)
}

/// `--mutate`: each object with its /mutate patch applied, in input order, as YAML documents or
/// a JSON array. Objects that could not be judged are written unchanged.
pub fn write_mutated(
    results: &[EvalResult],
    objects: &[Value],
    as_json: bool,
) -> anyhow::Result<()> {
    let mut mutated = Vec::with_capacity(objects.len());
    for (r, object) in results.iter().zip(objects) {
        let mut object = object.clone();
        if let Some(patch) = &r.decision.patch {
            json_patch::patch(&mut object, patch).map_err(|e| {
                anyhow::anyhow!("{}: the /mutate patch does not apply: {e}", r.source)
            })?;
        }
        mutated.push(object);
    }
    let mut out = io::stdout().lock();
    if as_json {
        let text = serde_json::to_string_pretty(&mutated)?;
        let text = SecretValues::of_objects(&mutated).scrub(&text);
        writeln!(out, "{text}")?;
    } else {
        for (i, object) in mutated.iter().enumerate() {
            if i > 0 {
                writeln!(out, "---")?;
            }
            // A Secret's values stay in the Secret: its mutated form shows them redacted.
            let text = serde_yaml::to_string(object)?;
            let text = SecretValues::of_objects([object]).scrub(&text);
            out.write_all(text.as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}
