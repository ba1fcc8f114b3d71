//! The errors of loading policies: one problem located in its file, and all of a set's at once.
//!
//! Below everything else in `policy/`: the set's build, the recursion check, the flavors' YAML
//! loaders and the compiled policies all report in these terms, so none of them needs the set
//! (`set.rs`) to name an error.

/// A load or compile problem, located in its file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct LoadError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl LoadError {
    pub fn new(file: &str, line: usize, column: usize, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// All the problems found while building a set: a set is built whole or not at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} error(s) in policies:\n{}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct LoadErrors(pub Vec<LoadError>);
