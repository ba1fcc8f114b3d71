//! `-o junit`: one test suite per namespace, one test case per (object, policy) pair. A pair
//! fails when one of its findings fails the audit under `--fail-on` (a policy that could not be
//! evaluated is an `<error>`); other findings are listed in the case's `<system-out>`.
//!
//! With `--baseline`, a case with findings has the property `baselineState` (`new` when one of
//! its findings is new, else `unchanged`) and each finding line ends in its state; under
//! `--fail-on new`/`new-warn` only new findings fail a case. The baseline's findings this run no
//! longer has are passing cases, property `baselineState` `resolved`, in a suite of their own.

use std::io::{self, Write};

use crate::audit::baseline::{BaselineFinding, Comparison, State};
use crate::audit::record::{Finding, Label, ObjectRecord};
use crate::audit::report::{at_path, escape_xml as x, namespace_label, FailOn};
use crate::audit::runner::AuditRun;
use crate::audit::spool::by_namespace;

fn line_of(f: &Finding, state: Option<State>) -> String {
    let path = at_path(f.path.as_deref());
    let state = state
        .map(|s| format!(" (baseline: {})", s.as_str()))
        .unwrap_or_default();
    format!(
        "{} [{}] {}{path}{state}",
        f.action.as_str().to_uppercase(),
        f.severity.as_str(),
        f.message
    )
}

/// The label that decides a pair's verdict: its worst finding, or under `--fail-on new` and
/// `new-warn` its worst new finding (unchanged ones are known and do not fail it).
fn deciding_label(
    r: &ObjectRecord,
    policy: &str,
    worst: Option<Label>,
    fail_on: FailOn,
    baseline: Option<&Comparison>,
) -> Option<Label> {
    match baseline {
        Some(b) if fail_on.needs_baseline() => r
            .findings
            .iter()
            .filter(|f| f.policy == policy && b.state(r, f) == State::New)
            .map(|f| f.action)
            .max_by_key(|l| l.rank()),
        _ => worst,
    }
}

/// A case's `<properties>` with its baseline state.
fn state_property(state: State) -> String {
    format!(
        "      <properties><property name=\"baselineState\" value=\"{}\"/></properties>\n",
        state.as_str()
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

/// (tests, failures, errors) of some records' pairs.
fn count(
    records: &[ObjectRecord],
    fail_on: FailOn,
    baseline: Option<&Comparison>,
) -> (u64, u64, u64) {
    let (mut tests, mut failures, mut errors) = (0u64, 0u64, 0u64);
    for r in records {
        for (policy, worst) in r.pairs() {
            tests += 1;
            let (f, e) = classify(fail_on, deciding_label(r, policy, worst, fail_on, baseline));
            failures += u64::from(f);
            errors += u64::from(e);
        }
    }
    (tests, failures, errors)
}

fn write_suite(
    out: &mut dyn Write,
    ns: &str,
    records: &[ObjectRecord],
    fail_on: FailOn,
    baseline: Option<&Comparison>,
) -> io::Result<()> {
    let (tests, failures, errors) = count(records, fail_on, baseline);
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
            let states: Vec<Option<State>> = findings
                .iter()
                .map(|f| baseline.map(|b| b.state(r, f)))
                .collect();
            if let Some(state) = states.iter().flatten().min() {
                out.write_all(state_property(*state).as_bytes())?;
            }
            let text: Vec<String> = findings
                .iter()
                .zip(&states)
                .map(|(f, s)| line_of(f, *s))
                .collect();
            let body = x(&text.join("\n"));
            let first = findings
                .iter()
                .max_by_key(|f| f.action.rank())
                .map(|f| f.message.as_str())
                .unwrap_or("");
            let deciding = deciding_label(r, policy, worst, fail_on, baseline);
            match classify(fail_on, deciding) {
                (true, _) => writeln!(
                    out,
                    "      <failure type=\"{}\" message=\"{}\">{body}</failure>",
                    deciding.map_or("", Label::as_str),
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

/// The suite of the baseline's findings that this run no longer has: passing cases.
fn write_resolved(out: &mut dyn Write, resolved: &[BaselineFinding]) -> io::Result<()> {
    writeln!(
        out,
        "  <testsuite name=\"resolved since baseline\" tests=\"{}\" failures=\"0\" errors=\"0\" skipped=\"0\">",
        resolved.len()
    )?;
    for b in resolved {
        let path = at_path(b.path.as_deref());
        writeln!(
            out,
            "    <testcase classname=\"regate.{}\" name=\"{}\">",
            x(&b.policy),
            x(&format!("{}: {}", b.policy, b.display_name()))
        )?;
        out.write_all(state_property(State::Resolved).as_bytes())?;
        let line = format!(
            "RESOLVED {} [{}] {}{path}",
            b.action.as_str().to_uppercase(),
            b.severity.as_str(),
            b.message
        );
        writeln!(out, "      <system-out>{}</system-out>", x(&line))?;
        writeln!(out, "    </testcase>")?;
    }
    writeln!(out, "  </testsuite>")
}

pub fn write(run: &mut AuditRun, fail_on: FailOn, out: &mut dyn Write) -> io::Result<()> {
    let t = &run.totals;
    let (mut tests, mut failures, mut errors) = (t.pairs, 0u64, 0u64);
    match &run.baseline {
        // Which pairs fail depends on each finding's state: one more pass over the spool.
        Some(b) if fail_on.needs_baseline() => {
            run.spool.for_each_partition::<io::Error>(|records| {
                let (_, f, e) = count(&records, fail_on, Some(b));
                failures += f;
                errors += e;
                Ok(())
            })?;
        }
        _ => {
            for label in Label::ALL {
                let n = t.pairs_worst.get(label);
                match classify(fail_on, Some(label)) {
                    (true, _) => failures += n,
                    (_, true) => errors += n,
                    _ => {}
                }
            }
        }
    }
    if let Some(b) = &run.baseline {
        tests += b.resolved.len() as u64;
    }
    errors += run.issues.len() as u64;
    tests += run.issues.len() as u64;
    writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
    writeln!(
        out,
        "<testsuites name=\"regate audit\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{:.3}\">",
        run.duration.as_secs_f64()
    )?;
    let baseline = run.baseline.as_ref();
    run.spool.for_each_partition::<io::Error>(|records| {
        for (ns, group) in by_namespace(records) {
            write_suite(out, &ns, &group, fail_on, baseline)?;
        }
        Ok(())
    })?;
    if let Some(b) = baseline.filter(|b| !b.resolved.is_empty()) {
        write_resolved(out, &b.resolved)?;
    }
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
