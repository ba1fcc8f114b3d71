//! `regate test`: Rego unit tests and YAML cases through one runner, shared by the CLI and
//! `cargo test`, so the repository's own cases run in both.

pub mod cases;
pub mod unit;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Environment};
use crate::environment::NamespaceLabels;
use crate::policy::set::PolicySet;
use crate::policy::source::{self, PolicySource};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Error(String),
}

#[derive(Debug, Clone)]
pub struct TestResult {
    pub file: String,
    pub line: usize,
    pub name: String,
    pub outcome: Outcome,
    /// `print()` output gathered while the test ran.
    pub output: Vec<String>,
    /// For a failing YAML case, `eval --explain`'s account of its decision (else empty).
    pub explanation: String,
    pub duration: Duration,
}

impl TestResult {
    pub fn passed(&self) -> bool {
        self.outcome == Outcome::Pass
    }
}

/// The summary of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub results: Vec<TestResult>,
    pub coverage: Vec<unit::FileCoverage>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }
    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }
}

/// Policy sets per forced environment, built lazily from the same sources and config.
pub struct EnvironmentSets {
    sources: Vec<PolicySource>,
    config: Config,
    sets: HashMap<Environment, PolicySet>,
}

impl EnvironmentSets {
    pub fn new(sources: Vec<PolicySource>, config: Config) -> Self {
        Self {
            sources,
            config,
            sets: HashMap::new(),
        }
    }
}

impl cases::SetForEnvironment for EnvironmentSets {
    fn set_for(&mut self, env: Environment) -> Result<&PolicySet, String> {
        if !self.sets.contains_key(&env) {
            let mut config = self.config.clone();
            config.environments.default = env;
            config.environments.namespaces =
                crate::config::indexmap_like::OrderedMap(vec![("*".to_string(), env)]);
            // Cases judge policies, not the exemption list: a case may use any namespace.
            config.exempt_namespaces.retain(|_| false);
            let set =
                crate::catalog::build(&self.sources, Arc::new(config), NamespaceLabels::default())
                    .map_err(|e| e.to_string())?;
            self.sets.insert(env, set);
        }
        self.sets
            .get(&env)
            .ok_or_else(|| "policy set missing".to_string())
    }

    fn with_config(&self, config: Config) -> Box<dyn cases::SetForEnvironment> {
        Box::new(EnvironmentSets::new(self.sources.clone(), config))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error(transparent)]
    Source(#[from] source::SourceError),
}

/// What to run: policy directories (unit tests) and case files or directories.
#[derive(Debug, Clone)]
pub struct Plan {
    pub policy_dirs: Vec<PathBuf>,
    pub case_paths: Vec<PathBuf>,
    pub config: Config,
    pub coverage: bool,
}

/// Runs everything in the plan.
pub fn run(plan: &Plan) -> Result<Report, TestError> {
    let mut sources = Vec::new();
    for dir in &plan.policy_dirs {
        let (mut s, _) = source::resolve(dir, false)?;
        sources.append(&mut s);
    }
    let (mut results, coverage) = unit::run(&sources, plan.coverage);
    let mut sets = EnvironmentSets::new(sources, plan.config.clone());
    for path in case_files(&plan.case_paths) {
        results.extend(cases::run_file(&path, &mut sets));
    }
    Ok(Report { results, coverage })
}

/// YAML files among the given paths, recursing into directories, sorted.
pub fn case_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        collect(p, &mut out);
    }
    out.sort();
    out
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        if let Ok(entries) = std::fs::read_dir(path) {
            for e in entries.flatten() {
                collect(&e.path(), out);
            }
        }
    } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        out.push(path.to_path_buf());
    }
}
