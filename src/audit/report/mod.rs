//! Report formats. Each writer reads the counters for summaries and streams the spooled records
//! partition by partition, so no format holds every finding in memory.

pub mod html;
pub mod json;
pub mod junit;
pub mod openreports;
pub mod policyreport;
pub mod result;
pub mod sarif;
pub mod text;

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use crate::audit::record::Label;
use crate::audit::runner::AuditRun;

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Text,
    Json,
    Policyreport,
    Openreports,
    Junit,
    Sarif,
    Html,
}

impl Format {
    /// Whether the format lists objects without findings (JUnit's passing test cases).
    pub fn lists_passing(self) -> bool {
        self == Format::Junit
    }
}

/// `--fail-on`: which findings make the audit fail (exit code 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FailOn {
    /// Findings whose action is deny, and policies that could not be evaluated.
    #[default]
    Deny,
    /// Deny findings, errors and warnings (warn rules and the warn action).
    Warn,
    /// Never: report only.
    Never,
    /// Deny findings and errors that are new since `--baseline`.
    New,
    /// Deny, error and warn findings that are new since `--baseline`.
    NewWarn,
}

impl FailOn {
    pub fn fails(self, label: Label) -> bool {
        match self {
            FailOn::Deny => matches!(label, Label::Deny | Label::Error),
            FailOn::Warn => matches!(label, Label::Deny | Label::Error | Label::Warn),
            FailOn::Never => false,
            FailOn::New => matches!(label, Label::Deny | Label::Error),
            FailOn::NewWarn => matches!(label, Label::Deny | Label::Error | Label::Warn),
        }
    }

    /// Whether only findings new since a baseline count.
    pub fn needs_baseline(self) -> bool {
        matches!(self, FailOn::New | FailOn::NewWarn)
    }

    /// 2 when part of the audit could not be done, 1 when a finding fails it, 0 otherwise.
    pub fn exit_code(self, run: &AuditRun) -> i32 {
        if !run.complete() {
            return 2;
        }
        let failing = match (&run.baseline, self.needs_baseline()) {
            (Some(b), true) => Label::ALL.iter().any(|&l| {
                self.fails(l) && b.summary.new_by_label.get(&l).copied().unwrap_or(0) > 0
            }),
            _ => Label::ALL
                .iter()
                .any(|&l| self.fails(l) && run.totals.findings.get(l) > 0),
        };
        i32::from(failing)
    }
}

/// Writes the report in `format`.
pub fn write(
    format: Format,
    run: &mut AuditRun,
    fail_on: FailOn,
    out: &mut dyn Write,
) -> io::Result<()> {
    match format {
        Format::Text => text::write(run, out),
        Format::Json => json::write(run, out),
        Format::Policyreport => policyreport::write(run, out),
        Format::Openreports => openreports::write(run, out),
        Format::Junit => junit::write(run, fail_on, out),
        Format::Sarif => sarif::write(run, out),
        Format::Html => html::write(run, out),
    }
}

/// Escapes text for XML and HTML (element content and quoted attributes).
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // XML 1.0 forbids most control characters even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\r' | '\t') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// " (at PATH)" after a finding's message, or nothing without a path.
pub fn at_path(path: Option<&str>) -> String {
    path.map(|p| format!(" (at {p})")).unwrap_or_default()
}

/// "" (cluster scope) shown to people.
pub fn namespace_label(ns: &str) -> &str {
    if ns.is_empty() {
        "(cluster-scoped)"
    } else {
        ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            escape_xml("<a href=\"x\">&'\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;\u{FFFD}"
        );
    }

    #[test]
    fn fail_on_thresholds() {
        assert!(FailOn::Deny.fails(Label::Deny));
        assert!(!FailOn::Deny.fails(Label::Warn));
        assert!(!FailOn::Deny.fails(Label::Audit));
        assert!(FailOn::Warn.fails(Label::Warn));
        assert!(!FailOn::Warn.fails(Label::Audit));
        assert!(!FailOn::Never.fails(Label::Deny));
    }
}
