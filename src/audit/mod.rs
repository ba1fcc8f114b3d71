//! Audit: judging existing objects (files or a live cluster) and reporting every violation.
//!
//! Objects go through the one decision path ([`crate::admission::decision::judge`]) as if each
//! were created now. Memory stays flat however large the cluster:
//! - sources hand the [`runner::Auditor`] one page at a time ([`cluster`] lists with
//!   `limit`/`continue`), and each page is judged and dropped before the next is read;
//! - what was found is kept as counters ([`totals::Totals`]) and spooled to disk
//!   ([`spool::Spool`]), partitioned by namespace so that reports are written one namespace
//!   range at a time ([`report`]).
//!
//! Secret values never leave the evaluation: records carry policy messages only (which name keys
//! and lengths), scrubbed by the decision path of every value of the Secrets they are about
//! ([`crate::secrets`]).

pub mod background;
pub mod baseline;
pub mod cluster;
pub mod files;
pub mod lease;
pub mod record;
pub mod report;
pub mod runner;
pub mod spool;
pub mod totals;

pub use record::{Finding, Label, ObjectRecord};
pub use report::{FailOn, Format};
pub use runner::{AuditRun, Auditor};

/// Why an audit could not run (problems with single kinds or files are reported, not errors).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit spool: {0}")]
    Spool(#[from] std::io::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot read manifests: {0}")]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("audit task failed: {0}")]
    Task(String),
}

/// Peak resident memory of this process (Linux `VmHWM`), for the audit's closing line.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
