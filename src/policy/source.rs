//! Where policy text comes from: a directory on disk, or the defaults embedded in the binary.

use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_policies.rs"));
}

/// One file of policy text, named as the author knows it (its path) for every error message.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySource {
    pub name: String,
    pub text: String,
}

/// What a file is, from its name and content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRole {
    /// A policy: Rego with a `# METADATA` block.
    Policy,
    /// Shared Rego compiled into every policy.
    Library,
    /// Rego unit tests (`*_test.rego`), run by `regate test` only.
    Test,
    /// YAML: documents for a flavor's loader (`crate::policy::loader::YamlLoader`).
    Yaml,
}

impl PolicySource {
    pub fn role(&self) -> SourceRole {
        if self.name.ends_with(".yaml") || self.name.ends_with(".yml") {
            SourceRole::Yaml
        } else if self.name.ends_with("_test.rego") {
            SourceRole::Test
        } else if self.text.lines().any(|l| l.trim() == "# METADATA") {
            SourceRole::Policy
        } else {
            SourceRole::Library
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read policy directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read policy file {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The default policies compiled into the binary.
pub fn embedded() -> Vec<PolicySource> {
    embedded::EMBEDDED_POLICIES
        .iter()
        .map(|(name, text)| PolicySource {
            name: format!("embedded:policies/{name}"),
            text: (*text).to_string(),
        })
        .collect()
}

/// Every `.rego` and `.yaml` file below `dir`, sorted by path so that loading is deterministic.
/// Hidden entries (`..data`, the timestamped folders of a mounted ConfigMap) are skipped; the
/// visible symlinks point into them.
pub fn load_dir(dir: &Path) -> Result<Vec<PolicySource>, SourceError> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(|source| SourceError::ReadFile {
                path: path.clone(),
                source,
            })?;
            Ok(PolicySource {
                name: path.display().to_string(),
                text,
            })
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SourceError> {
    let entries = std::fs::read_dir(dir).map_err(|source| SourceError::ReadDir {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| SourceError::ReadDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            collect(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "rego" || e == "yaml" || e == "yml")
        {
            out.push(path);
        }
    }
    Ok(())
}

/// The sources `serve`, `eval` and friends use: the directory when it exists, else the embedded
/// defaults; with `include_defaults`, both (a directory policy with the same id replaces the
/// embedded one, which the set builder resolves).
pub fn resolve(
    dir: &Path,
    include_defaults: bool,
) -> Result<(Vec<PolicySource>, bool), SourceError> {
    if !dir.exists() {
        return Ok((embedded(), true));
    }
    let mut sources = load_dir(dir)?;
    if include_defaults {
        let mut all = embedded();
        all.append(&mut sources);
        return Ok((all, true));
    }
    Ok((sources, false))
}
