//! `-o text`: a summary table by policy and by namespace, then every finding.

use std::io::{self, Write};

use crate::audit::baseline::{Comparison, State};
use crate::audit::record::Label;
use crate::audit::report::{at_path, namespace_label};
use crate::audit::runner::{AuditRun, SourceKind};

pub fn write(run: &mut AuditRun, out: &mut dyn Write) -> io::Result<()> {
    let t = &run.totals;
    let source = match run.source {
        SourceKind::Files => "files",
        SourceKind::Cluster => "the cluster",
    };
    writeln!(
        out,
        "regate audit of {source}: {} objects judged by {} policies; {} objects with findings ({} deny, {} warn, {} audit, {} error)",
        t.objects,
        run.policies.len(),
        t.objects_with_findings,
        t.findings.deny,
        t.findings.warn,
        t.findings.audit,
        t.findings.error
    )?;

    let policy_width = run
        .policies
        .iter()
        .map(|p| p.id.len())
        .chain(t.by_policy.keys().map(String::len))
        .max()
        .unwrap_or(6)
        .max(6);
    writeln!(out)?;
    writeln!(
        out,
        "{:<policy_width$}  {:<8}  {:>6}  {:>6}  {:>6}  {:>6}",
        "POLICY", "SEVERITY", "DENY", "WARN", "AUDIT", "ERROR"
    )?;
    for p in &run.policies {
        let c = t.by_policy.get(&p.id).copied().unwrap_or_default();
        writeln!(
            out,
            "{:<policy_width$}  {:<8}  {:>6}  {:>6}  {:>6}  {:>6}",
            p.id,
            p.severity.as_str(),
            c.deny,
            c.warn,
            c.audit,
            c.error
        )?;
    }

    let ns_width = t
        .by_namespace
        .keys()
        .map(|n| namespace_label(n).len())
        .max()
        .unwrap_or(9)
        .max(9);
    writeln!(out)?;
    writeln!(
        out,
        "{:<ns_width$}  {:>7}  {:>6}  {:>6}  {:>6}  {:>6}  {:>6}",
        "NAMESPACE", "OBJECTS", "DENY", "WARN", "AUDIT", "ERROR", "PASS"
    )?;
    for (ns, c) in &t.by_namespace {
        writeln!(
            out,
            "{:<ns_width$}  {:>7}  {:>6}  {:>6}  {:>6}  {:>6}  {:>6}",
            namespace_label(ns),
            c.objects,
            c.findings.deny,
            c.findings.warn,
            c.findings.audit,
            c.findings.error,
            c.pass
        )?;
    }

    match run.baseline.take() {
        None => {
            if t.findings.total() > 0 {
                writeln!(out)?;
                writeln!(out, "FINDINGS")?;
            }
            findings(run, None, out)?;
        }
        Some(b) => {
            let s = &b.summary;
            writeln!(out)?;
            writeln!(
                out,
                "BASELINE {}: {} new, {} unchanged, {} resolved",
                b.file, s.new, s.unchanged, s.resolved
            )?;
            for (state, counts) in &s.by_severity {
                let counts: Vec<String> = counts
                    .iter()
                    .map(|(severity, n)| format!("{n} {}", severity.as_str()))
                    .collect();
                writeln!(out, "  {:<9}  {}", state.as_str(), counts.join(", "))?;
            }
            for (state, heading, n) in [
                (State::New, "NEW FINDINGS", s.new),
                (State::Unchanged, "UNCHANGED FINDINGS", s.unchanged),
            ] {
                if n > 0 {
                    writeln!(out)?;
                    writeln!(out, "{heading}")?;
                    findings(run, Some((&b, state)), out)?;
                }
            }
            if !b.resolved.is_empty() {
                writeln!(out)?;
                writeln!(out, "RESOLVED FINDINGS")?;
                for f in &b.resolved {
                    let path = at_path(f.path.as_deref());
                    writeln!(
                        out,
                        "{} {:<8} [{}] {}: {}{path}",
                        label(f.action),
                        f.severity.as_str(),
                        f.policy,
                        f.display_name(),
                        f.message
                    )?;
                }
            }
            run.baseline = Some(b);
        }
    }

    if !run.issues.is_empty() {
        writeln!(out)?;
        writeln!(out, "INCOMPLETE: part of the audit could not be done")?;
        for i in &run.issues {
            writeln!(out, "  {}: {}", i.source, i.message)?;
        }
    }
    Ok(())
}

fn label(action: Label) -> &'static str {
    match action {
        Label::Deny => "DENY ",
        Label::Warn => "WARN ",
        Label::Audit => "AUDIT",
        Label::Error => "ERROR",
    }
}

/// Every spooled finding, or with a baseline those in `state`.
fn findings(
    run: &mut AuditRun,
    only: Option<(&Comparison, State)>,
    out: &mut dyn Write,
) -> io::Result<()> {
    run.spool.for_each_partition::<io::Error>(|records| {
        for r in &records {
            for f in &r.findings {
                if only.is_some_and(|(b, state)| b.state(r, f) != state) {
                    continue;
                }
                let path = at_path(f.path.as_deref());
                let location = r.location().map(|l| format!("  {l}")).unwrap_or_default();
                writeln!(
                    out,
                    "{} {:<8} [{}] {}: {}{path}{location}",
                    label(f.action),
                    f.severity.as_str(),
                    f.policy,
                    r.display_name(),
                    f.message
                )?;
            }
        }
        Ok(())
    })
}
