//! Reading Kubernetes objects from files as users keep them: YAML (multi-document), JSON,
//! `List` kinds and AdmissionReviews, from files, directories (recursively) or standard input.
//! Each object remembers its file and line, for messages and SARIF.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One object and where it was found.
#[derive(Debug, Clone)]
pub struct ManifestObject {
    pub file: String,
    /// Position of the document in its file (0-based), then of the item inside a `List`.
    pub index: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    pub object: Value,
}

impl ManifestObject {
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Parse {
        file: String,
        line: usize,
        message: String,
    },
}

/// Reads every object under each path (`-` is standard input).
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<ManifestObject>, ManifestError> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| ManifestError::Read {
                    path: path.clone(),
                    source,
                })?;
            out.extend(parse_text(&text, "<stdin>")?);
        } else if path.is_dir() {
            let mut files = Vec::new();
            collect(path, &mut files)?;
            files.sort();
            for file in files {
                out.extend(read_file(&file)?);
            }
        } else {
            out.extend(read_file(path)?);
        }
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ManifestError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ManifestError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(path);
        }
    }
    Ok(())
}

pub fn read_file(path: &Path) -> Result<Vec<ManifestObject>, ManifestError> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_text(&text, &path.display().to_string())
}

/// Splits YAML documents on `---` lines, parses each, and flattens `List` kinds.
pub fn parse_text(text: &str, file: &str) -> Result<Vec<ManifestObject>, ManifestError> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: Value = serde_json::from_str(text).map_err(|e| ManifestError::Parse {
            file: file.to_string(),
            line: e.line(),
            message: format!("invalid JSON: {e}"),
        })?;
        let mut out = Vec::new();
        let docs = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        for (i, doc) in docs.into_iter().enumerate() {
            push_object(&mut out, file, i, 1, doc);
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    let mut doc_index = 0;
    for (start_line, chunk) in split_documents(text) {
        if chunk.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        }) {
            continue;
        }
        let value: Value = serde_yaml::from_str(&chunk).map_err(|e| ManifestError::Parse {
            file: file.to_string(),
            line: start_line
                + e.location()
                    .map(|l| l.line())
                    .unwrap_or(1)
                    .saturating_sub(1),
            message: format!("invalid YAML: {e}"),
        })?;
        if !value.is_null() {
            push_object(&mut out, file, doc_index, start_line, value);
        }
        doc_index += 1;
    }
    Ok(out)
}

fn push_object(out: &mut Vec<ManifestObject>, file: &str, index: usize, line: usize, value: Value) {
    // Directories hold more than manifests (kustomization files, Helm values, expectations):
    // only documents with an apiVersion and a kind are objects.
    let is_object = value.get("kind").is_some_and(Value::is_string)
        && value.get("apiVersion").is_some_and(Value::is_string);
    if !is_object {
        tracing::debug!(
            file,
            line,
            "skipping a document that is not a Kubernetes object (no apiVersion and kind)"
        );
        return;
    }
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Some(Value::Array(items)) = value.get("items") {
            for (i, item) in items.iter().enumerate() {
                out.push(ManifestObject {
                    file: file.to_string(),
                    index: index * 10_000 + i,
                    line,
                    object: item.clone(),
                });
            }
        }
        return;
    }
    out.push(ManifestObject {
        file: file.to_string(),
        index,
        line,
        object: value,
    });
}

/// (first line of the document, its text) for each `---`-separated document.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let is_separator = line.starts_with("---")
            && line[3..]
                .trim_start()
                .chars()
                .next()
                .is_none_or(|c| c == '#');
        if is_separator {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_with_lines() -> Result<(), ManifestError> {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n# c\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: s}}\n";
        let objs = parse_text(text, "x.yaml")?;
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].line, 1);
        assert_eq!(objs[1].line, 7);
        assert_eq!(objs[1].object["kind"], "Secret");
        Ok(())
    }
}
