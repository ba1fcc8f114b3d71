//! Files as an audit source: FILE, DIR (recursively) or `-`, read as `regate eval` reads them,
//! each object remembering its file and line.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::admission::review::is_cluster_scoped;
use crate::audit::record::Origin;
use crate::audit::runner::{AuditRun, Auditor, SourceKind};
use crate::audit::AuditError;
use crate::manifest::{self, ManifestObject, Unreadable};
use crate::policy::set::PolicySet;

/// Options of a file audit.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// Namespace for objects that name none (default: `default`, as the apiserver would).
    pub namespace: Option<String>,
    /// Objects judged per page.
    pub page_size: usize,
    /// Spool objects without findings too (JUnit).
    pub keep_passing: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            page_size: 500,
            keep_passing: false,
        }
    }
}

/// Audits every object under `paths`.
pub fn audit_paths(
    set: Arc<PolicySet>,
    paths: &[PathBuf],
    opts: &FileOptions,
) -> Result<AuditRun, AuditError> {
    // A file that cannot be parsed is an error finding in its place, not the end of the audit.
    let read = manifest::read_paths_lenient(paths);
    for skipped in &read.not_objects {
        eprintln!("regate audit: {skipped}");
    }
    audit_read(set, read.objects, read.errors, opts)
}

fn namespace_of(object: &Value, default: Option<&str>) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    if is_cluster_scoped(kind) {
        return String::new();
    }
    object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .or(default)
        .unwrap_or("default")
        .to_string()
}

/// Audits objects already read.
pub fn audit_objects(
    set: Arc<PolicySet>,
    objects: Vec<ManifestObject>,
    opts: &FileOptions,
) -> Result<AuditRun, AuditError> {
    audit_read(set, objects, Vec::new(), opts)
}

fn audit_read(
    set: Arc<PolicySet>,
    objects: Vec<ManifestObject>,
    unreadable: Vec<Unreadable>,
    opts: &FileOptions,
) -> Result<AuditRun, AuditError> {
    let namespaces: Vec<String> = objects
        .iter()
        .map(|o| namespace_of(&o.object, opts.namespace.as_deref()))
        .collect();
    let mut auditor = Auditor::new(set, namespaces, opts.keep_passing);
    for u in unreadable {
        auditor.unreadable(u.error.file(), u.error.line(), u.error.reason())?;
    }
    let mut page: Vec<(Value, Origin)> = Vec::with_capacity(opts.page_size.max(1));
    for m in objects {
        let origin = Origin {
            file: Some(m.file),
            line: Some(m.line),
            default_namespace: opts.namespace.clone(),
            cluster_scoped: None,
        };
        page.push((m.object, origin));
        if page.len() >= opts.page_size.max(1) {
            auditor.judge_page(std::mem::take(&mut page))?;
        }
    }
    auditor.judge_page(page)?;
    Ok(auditor.finish(SourceKind::Files))
}
