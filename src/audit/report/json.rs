//! `-o json`: one document, the summary first, then every finding flattened with its object.

use std::io::{self, Write};

use serde::Serialize;

use crate::audit::baseline::State;
use crate::audit::record::{Finding, ObjectRecord};
use crate::audit::runner::AuditRun;
use crate::config::Environment;

/// One finding with the object it is about, as `-o json` lists it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlatFinding<'a> {
    pub api_version: &'a str,
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub environment: Environment,
    #[serde(flatten)]
    pub finding: &'a Finding,
    /// new or unchanged, with `--baseline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<State>,
}

impl<'a> FlatFinding<'a> {
    pub fn new(r: &'a ObjectRecord, f: &'a Finding) -> Self {
        FlatFinding {
            api_version: &r.api_version,
            kind: &r.kind,
            namespace: r.namespace.as_deref(),
            name: &r.name,
            uid: r.uid.as_deref(),
            file: r.file.as_deref(),
            line: r.line,
            environment: r.environment,
            finding: f,
            baseline: None,
        }
    }
}

fn field<T: Serialize + ?Sized>(
    out: &mut dyn Write,
    name: &str,
    value: &T,
    last: bool,
) -> io::Result<()> {
    write!(
        out,
        "  {}: ",
        serde_json::to_string(name).map_err(io::Error::other)?
    )?;
    let text = serde_json::to_string_pretty(value).map_err(io::Error::other)?;
    out.write_all(text.replace('\n', "\n  ").as_bytes())?;
    out.write_all(if last { b"\n" } else { b",\n" })
}

pub fn write(run: &mut AuditRun, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{{")?;
    field(out, "apiVersion", "regate.dev/v1alpha1", false)?;
    field(out, "kind", "AuditReport", false)?;
    field(out, "source", &run.source, false)?;
    field(out, "startedAt", &run.started_at.to_string(), false)?;
    field(out, "durationSeconds", &run.duration.as_secs_f64(), false)?;
    field(out, "complete", &run.complete(), false)?;
    field(out, "policies", &run.policies, false)?;
    field(out, "summary", &run.totals, false)?;
    if let Some(b) = &run.baseline {
        field(
            out,
            "baseline",
            &serde_json::json!({"file": b.file, "summary": b.summary}),
            false,
        )?;
    }
    field(out, "issues", &run.issues, false)?;
    write!(out, "  \"findings\": [")?;
    let mut first = true;
    run.spool.for_each_partition::<io::Error>(|records| {
        for r in &records {
            for f in &r.findings {
                out.write_all(if first { b"\n    " } else { b",\n    " })?;
                first = false;
                let mut flat = FlatFinding::new(r, f);
                flat.baseline = run.baseline.as_ref().map(|b| b.state(r, f));
                serde_json::to_writer(&mut *out, &flat).map_err(io::Error::other)?;
            }
        }
        Ok(())
    })?;
    let close = if first { "]" } else { "\n  ]" };
    match &run.baseline {
        // Beside `findings`, so that this report read as a baseline counts only what it found.
        Some(b) => {
            writeln!(out, "{close},")?;
            field(out, "resolved", &b.resolved, true)?;
        }
        None => writeln!(out, "{close}")?,
    }
    writeln!(out, "}}")
}
