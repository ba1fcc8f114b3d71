//! `-o junit`: one test suite per namespace, one test case per (object, policy) pair. A pair
//! fails when one of its findings fails the audit under `--fail-on` (a policy that could not be
//! evaluated is an `<error>`); other findings are listed in the case's `<system-out>`.

use std::io::{self, Write};

use crate::audit::record::{Finding, Label, ObjectRecord};
use crate::audit::report::{escape_xml as x, namespace_label, FailOn};
use crate::audit::runner::AuditRun;
use crate::audit::spool::by_namespace;

fn line_of(f: &Finding) -> String {
    let path = f
        .path
        .as_deref()
        .map(|p| format!(" (at {p})"))
        .unwrap_or_default();
    format!(
        "{} [{}] {}{path}",
        f.action.as_str().to_uppercase(),
        f.severity.as_str(),
        f.message
    )
}

/// (failures, errors) of pairs by their worst label.
fn classify(fail_on: FailOn, worst: Option<Label>) -> (bool, bool) {
    match worst {
        Some(Label::Error) if fail_on.fails(Label::Error) => (false, true),
        Some(l) if fail_on.fails(l) => (true, false),
        _ => (false, false),
    }
}

fn write_suite(
    out: &mut dyn Write,
    ns: &str,
    records: &[ObjectRecord],
    fail_on: FailOn,
) -> io::Result<()> {
    let (mut tests, mut failures, mut errors) = (0u64, 0u64, 0u64);
    for r in records {
        for (_, worst) in r.pairs() {
            tests += 1;
            let (f, e) = classify(fail_on, worst);
            failures += u64::from(f);
            errors += u64::from(e);
        }
    }
    writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\">",
        x(&format!("namespace {}", namespace_label(ns)))
    )?;
    for r in records {
        for (policy, worst) in r.pairs() {
            let findings: Vec<&Finding> =
                r.findings.iter().filter(|f| f.policy == policy).collect();
            let location = match (&r.file, r.line) {
                (Some(f), Some(l)) => format!(" file=\"{}\" line=\"{l}\"", x(f)),
                (Some(f), None) => format!(" file=\"{}\"", x(f)),
                _ => String::new(),
            };
            write!(
                out,
                "    <testcase classname=\"regate.{}\" name=\"{}\"{location}",
                x(policy),
                x(&format!("{policy}: {}", r.display_name()))
            )?;
            if findings.is_empty() {
                writeln!(out, "/>")?;
                continue;
            }
            writeln!(out, ">")?;
            let text: Vec<String> = findings.iter().map(|f| line_of(f)).collect();
            let body = x(&text.join("\n"));
            let first = findings
                .iter()
                .max_by_key(|f| f.action.rank())
                .map(|f| f.message.as_str())
                .unwrap_or("");
            match classify(fail_on, worst) {
                (true, _) => writeln!(
                    out,
                    "      <failure type=\"{}\" message=\"{}\">{body}</failure>",
                    worst.map_or("", Label::as_str),
                    x(first)
                )?,
                (_, true) => writeln!(
                    out,
                    "      <error type=\"error\" message=\"{}\">{body}</error>",
                    x(first)
                )?,
                _ => writeln!(out, "      <system-out>{body}</system-out>")?,
            }
            writeln!(out, "    </testcase>")?;
        }
    }
    writeln!(out, "  </testsuite>")
}

pub fn write(run: &mut AuditRun, fail_on: FailOn, out: &mut dyn Write) -> io::Result<()> {
    let t = &run.totals;
    let (mut failures, mut errors) = (0u64, 0u64);
    for label in Label::ALL {
        let n = t.pairs_worst.get(label);
        match classify(fail_on, Some(label)) {
            (true, _) => failures += n,
            (_, true) => errors += n,
            _ => {}
        }
    }
    errors += run.issues.len() as u64;
    writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
    writeln!(
        out,
        "<testsuites name=\"regate audit\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{:.3}\">",
        t.pairs + run.issues.len() as u64,
        run.duration.as_secs_f64()
    )?;
    run.spool.for_each_partition::<io::Error>(|records| {
        for (ns, group) in by_namespace(records) {
            write_suite(out, &ns, &group, fail_on)?;
        }
        Ok(())
    })?;
    if !run.issues.is_empty() {
        writeln!(
            out,
            "  <testsuite name=\"audit completeness\" tests=\"{0}\" failures=\"0\" errors=\"{0}\" skipped=\"0\">",
            run.issues.len()
        )?;
        for i in &run.issues {
            writeln!(
                out,
                "    <testcase classname=\"regate.audit\" name=\"{}\">\n      <error type=\"incomplete\" message=\"{}\"/>\n    </testcase>",
                x(&i.source),
                x(&i.message)
            )?;
        }
        writeln!(out, "  </testsuite>")?;
    }
    writeln!(out, "</testsuites>")
}
