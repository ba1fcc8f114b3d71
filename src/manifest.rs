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

impl ManifestError {
    /// The file (or path) the error is about.
    pub fn file(&self) -> String {
        match self {
            ManifestError::Read { path, .. } => path.display().to_string(),
            ManifestError::Parse { file, .. } => file.clone(),
        }
    }

    /// 1-based line of the error (1 when the file could not be read at all).
    pub fn line(&self) -> usize {
        match self {
            ManifestError::Read { .. } => 1,
            ManifestError::Parse { line, .. } => *line,
        }
    }

    /// What went wrong, without the location.
    pub fn reason(&self) -> String {
        match self {
            ManifestError::Read { source, .. } => format!("cannot read: {source}"),
            ManifestError::Parse { message, .. } => message.clone(),
        }
    }
}

/// What was read from some paths: every object that could be parsed, and every file or
/// document that could not (so that one broken file does not hide the verdicts on the others).
#[derive(Debug, Default)]
pub struct Manifests {
    pub objects: Vec<ManifestObject>,
    pub errors: Vec<Unreadable>,
    /// Documents that parsed but are not Kubernetes objects (no apiVersion or kind): skipped,
    /// and reported, so a wrong file is never judged as "0 objects, all fine".
    pub not_objects: Vec<NotAnObject>,
}

/// A document skipped because it is not a Kubernetes object.
#[derive(Debug, Clone, PartialEq)]
pub struct NotAnObject {
    pub file: String,
    /// 1-based line where the document starts.
    pub line: usize,
}

impl std::fmt::Display for NotAnObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: not a Kubernetes object (no apiVersion and kind); skipped",
            self.file, self.line
        )
    }
}

/// A file or document that could not be read or parsed, and its place among the objects.
#[derive(Debug)]
pub struct Unreadable {
    /// How many objects were read before it.
    pub at: usize,
    pub error: ManifestError,
}

impl Manifests {
    fn extend(&mut self, other: Manifests) {
        let offset = self.objects.len();
        self.errors
            .extend(other.errors.into_iter().map(|u| Unreadable {
                at: u.at + offset,
                error: u.error,
            }));
        self.objects.extend(other.objects);
        self.not_objects.extend(other.not_objects);
    }

    fn error(&mut self, error: ManifestError) {
        self.errors.push(Unreadable {
            at: self.objects.len(),
            error,
        });
    }

    /// The objects, or the first error.
    pub fn into_result(self) -> Result<Vec<ManifestObject>, ManifestError> {
        match self.errors.into_iter().next() {
            Some(u) => Err(u.error),
            None => Ok(self.objects),
        }
    }

    fn failed(error: ManifestError) -> Manifests {
        let mut out = Manifests::default();
        out.error(error);
        out
    }
}

/// Reads every object under each path (`-` is standard input); the first error stops it.
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<ManifestObject>, ManifestError> {
    read_paths_lenient(paths).into_result()
}

/// Reads every object under each path (`-` is standard input), going on past files and
/// documents that cannot be read or parsed; those are returned as errors, in file order.
pub fn read_paths_lenient(paths: &[PathBuf]) -> Manifests {
    let mut out = Manifests::default();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => out.extend(parse_text_lenient(&text, "<stdin>")),
                Err(source) => out.error(ManifestError::Read {
                    path: path.clone(),
                    source,
                }),
            }
        } else if path.is_dir() {
            let mut files = Vec::new();
            let mut errors = Vec::new();
            collect(path, &mut files, &mut errors);
            for e in errors {
                out.error(e);
            }
            files.sort();
            for file in files {
                out.extend(read_file_lenient(&file));
            }
        } else {
            out.extend(read_file_lenient(path));
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<ManifestError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(source) => {
            errors.push(ManifestError::Read {
                path: dir.to_path_buf(),
                source,
            });
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, out, errors);
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(path);
        }
    }
}

pub fn read_file(path: &Path) -> Result<Vec<ManifestObject>, ManifestError> {
    read_file_lenient(path).into_result()
}

fn read_file_lenient(path: &Path) -> Manifests {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_text_lenient(&text, &path.display().to_string()),
        Err(source) => Manifests::failed(ManifestError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Splits YAML documents on `---` lines, parses each, and flattens `List` kinds; the first
/// error stops it.
pub fn parse_text(text: &str, file: &str) -> Result<Vec<ManifestObject>, ManifestError> {
    parse_text_lenient(text, file).into_result()
}

/// [`parse_text`], going on past documents that do not parse.
pub fn parse_text_lenient(text: &str, file: &str) -> Manifests {
    // Nesting is bounded before any parser sees the text: a deeply nested file costs the YAML
    // scanner quadratic time, and none of its documents can be trusted to split correctly.
    if let Err(e) = crate::yaml_depth::check(text) {
        return Manifests::failed(ManifestError::Parse {
            file: file.to_string(),
            line: e.line,
            message: e.reason(),
        });
    }
    let mut out = Manifests::default();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(e) => {
                return Manifests::failed(ManifestError::Parse {
                    file: file.to_string(),
                    line: e.line(),
                    message: format!(
                        "invalid JSON: {}",
                        crate::secrets::without_quoted_values(&e.to_string())
                    ),
                })
            }
        };
        let docs = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        for (i, doc) in docs.into_iter().enumerate() {
            push_object(&mut out, file, i, 1, &[], doc);
        }
        return out;
    }
    let mut doc_index = 0;
    for (start_line, chunk) in split_documents(text) {
        if chunk.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        }) {
            continue;
        }
        match serde_yaml::from_str::<Value>(&chunk) {
            Ok(value) => {
                if !value.is_null() {
                    let items = item_lines(&chunk, start_line);
                    push_object(&mut out, file, doc_index, start_line, &items, value);
                }
            }
            Err(e) => out.error(ManifestError::Parse {
                file: file.to_string(),
                line: start_line
                    + e.location()
                        .map(|l| l.line())
                        .unwrap_or(1)
                        .saturating_sub(1),
                // The parser quotes the scalar it could not use, which may be a Secret's value.
                message: format!(
                    "invalid YAML: {}",
                    crate::secrets::without_quoted_values(&e.to_string())
                ),
            }),
        }
        doc_index += 1;
    }
    out
}

/// `item_lines`: the line of each `items:` entry of a YAML `List`, when they could be found.
fn push_object(
    out: &mut Manifests,
    file: &str,
    index: usize,
    line: usize,
    item_lines: &[usize],
    value: Value,
) {
    // Directories hold more than manifests (kustomization files, Helm values, expectations):
    // only documents with an apiVersion and a kind are objects; the others are reported.
    let is_object = value.get("kind").is_some_and(Value::is_string)
        && value.get("apiVersion").is_some_and(Value::is_string);
    if !is_object {
        out.not_objects.push(NotAnObject {
            file: file.to_string(),
            line,
        });
        return;
    }
    let out = &mut out.objects;
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Some(Value::Array(items)) = value.get("items") {
            let own_lines = item_lines.len() == items.len();
            for (i, item) in items.iter().enumerate() {
                out.push(ManifestObject {
                    file: file.to_string(),
                    index: index * 10_000 + i,
                    line: if own_lines { item_lines[i] } else { line },
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

/// The line where each entry of a top-level `items:` block sequence starts, in a YAML document
/// starting at `start_line`; empty when there is none (a flow sequence, or no `items:`).
fn item_lines(chunk: &str, start_line: usize) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut in_items = false;
    let mut indent = None;
    for (i, text) in chunk.lines().enumerate() {
        let content = text.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let depth = text.len() - content.len();
        if depth == 0 && !content.starts_with('-') {
            if in_items {
                break;
            }
            in_items = content.trim_end() == "items:";
            continue;
        }
        if !in_items {
            continue;
        }
        let item_indent = *indent.get_or_insert(depth);
        if depth == item_indent && (content == "-" || content.starts_with("- ")) {
            lines.push(start_line + i);
        }
    }
    lines
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
        // A List item reports its own line, not the List's.
        assert_eq!(objs[1].line, 10);
        assert_eq!(objs[1].object["kind"], "Secret");
        Ok(())
    }

    #[test]
    fn list_items_report_their_own_line() -> Result<(), ManifestError> {
        let text = "apiVersion: v1\nkind: List\nitems:\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: a}\n  # between\n  - apiVersion: v1\n    kind: Secret\n    metadata:\n      name: s\n";
        let objs = parse_text(text, "x.yaml")?;
        let lines: Vec<usize> = objs.iter().map(|o| o.line).collect();
        assert_eq!(lines, vec![4, 8]);
        Ok(())
    }

    #[test]
    fn documents_that_are_not_objects_are_reported() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nreplicas: 3\nimage: nginx\n";
        let read = parse_text_lenient(text, "values.yaml");
        assert_eq!(read.objects.len(), 1);
        assert_eq!(
            read.not_objects,
            vec![NotAnObject {
                file: "values.yaml".into(),
                line: 5
            }]
        );
        assert_eq!(
            read.not_objects[0].to_string(),
            "values.yaml:5: not a Kubernetes object (no apiVersion and kind); skipped"
        );
    }

    #[test]
    fn a_broken_document_leaves_the_others_readable() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: [unclosed\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s}\n";
        let read = parse_text_lenient(text, "x.yaml");
        assert_eq!(read.objects.len(), 2);
        assert_eq!(read.errors.len(), 1);
        assert_eq!(read.errors[0].at, 1);
        assert_eq!(read.errors[0].error.file(), "x.yaml");
        assert!(read.errors[0].error.line() >= 5, "{}", read.errors[0].error);
        assert!(parse_text(text, "x.yaml").is_err());
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        for text in [
            format!(
                "apiVersion: v1\nkind: ConfigMap\ndata: {}",
                "[".repeat(50_000)
            ),
            format!("{}1", "[".repeat(50_000)),
            (0..2_000)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect::<String>(),
        ] {
            let read = parse_text_lenient(&text, "deep.yaml");
            assert!(read.objects.is_empty());
            let msg = read
                .errors
                .first()
                .map(|u| u.error.to_string())
                .unwrap_or_default();
            assert!(msg.starts_with("deep.yaml:"), "{msg}");
            assert!(msg.contains("nested deeper than 128 levels"), "{msg}");
        }
    }
}
