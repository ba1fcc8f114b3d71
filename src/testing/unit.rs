//! Rego unit tests: rules named `test_*` in `*_test.rego` files, as `opa test` runs them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use regorus::{Engine, Value};
use serde_json::json;

use crate::config::Environment;
use crate::policy::metadata;
use crate::policy::source::{PolicySource, SourceRole};
use crate::testing::{Outcome, TestResult};

/// Line coverage of one policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileCoverage {
    pub file: String,
    pub covered: usize,
    pub not_covered: Vec<u32>,
}

impl FileCoverage {
    pub fn percent(&self) -> f64 {
        let total = self.covered + self.not_covered.len();
        if total == 0 {
            100.0
        } else {
            self.covered as f64 * 100.0 / total as f64
        }
    }
}

/// Runs every `test_*` rule of every test file in `sources`, against all the non-test Rego.
pub fn run(sources: &[PolicySource], coverage: bool) -> (Vec<TestResult>, Vec<FileCoverage>) {
    let modules: Vec<&PolicySource> = sources
        .iter()
        .filter(|s| matches!(s.role(), SourceRole::Policy | SourceRole::Library))
        .collect();
    let mut results = Vec::new();
    let mut engine = Engine::new();
    engine.set_gather_prints(true);
    if let Err(e) = crate::policy::bounded_builtins::install(&mut engine) {
        results.push(compile_error("numbers.range", &e));
    }
    engine.set_enable_coverage(coverage);
    for m in &modules {
        if let Err(e) = engine.add_policy(m.name.clone(), m.text.clone()) {
            results.push(compile_error(&m.name, &e));
        }
    }
    if results.iter().any(|r| r.outcome != Outcome::Pass) {
        return (results, Vec::new());
    }
    let defaults = parameter_defaults(&modules);
    let mut merged: BTreeMap<
        String,
        (
            std::collections::BTreeSet<u32>,
            std::collections::BTreeSet<u32>,
        ),
    > = BTreeMap::new();
    for test_file in sources.iter().filter(|s| s.role() == SourceRole::Test) {
        let Some((_, package)) = metadata::package_of(&test_file.text) else {
            continue;
        };
        let mut file_engine = engine.clone();
        if let Err(e) = file_engine.add_policy(test_file.name.clone(), test_file.text.clone()) {
            results.push(compile_error(&test_file.name, &e));
            continue;
        }
        // A recursive rule would overflow the stack and abort `regate test` itself.
        let recursion = crate::policy::recursion::check(&mut file_engine);
        if !recursion.is_empty() {
            results.extend(recursion.into_iter().map(|e| TestResult {
                file: e.file.clone(),
                line: e.line,
                name: "compile".to_string(),
                outcome: Outcome::Error(e.message),
                output: Vec::new(),
                explanation: String::new(),
                duration: Duration::ZERO,
            }));
            continue;
        }
        // The policy under test gets its production defaults, as the server would give it;
        // tests override them with `with data.regate... as`.
        let policy_package = package.trim_end_matches("_test").to_string();
        let parameters = defaults
            .get(&policy_package)
            .cloned()
            .unwrap_or_else(|| json!({}));
        let data = json!({"regate": {"environment": Environment::Production.as_str(), "parameters": parameters}});
        let _ = file_engine.add_data(Value::from(data.clone()));
        for (line, name) in test_rules(&test_file.text) {
            let started = Instant::now();
            let value = crate::policy::panics::caught(|| {
                file_engine.eval_rule(format!("data.{package}.{name}"))
            });
            let output = file_engine.take_prints().unwrap_or_default();
            let outcome = match value {
                Ok(Ok(Value::Bool(true))) => Outcome::Pass,
                Ok(Ok(Value::Undefined)) => {
                    Outcome::Fail("a body expression was false or undefined".to_string())
                }
                Ok(Ok(other)) => Outcome::Fail(format!("result is {other:?}, not true")),
                Ok(Err(e)) => Outcome::Error(crate::policy::rego_error::located(&e.to_string())),
                Err(panicked) => {
                    // The engine may have stopped halfway: the file's next tests get a fresh one.
                    file_engine = engine.clone();
                    let _ = file_engine.add_policy(test_file.name.clone(), test_file.text.clone());
                    let _ = file_engine.add_data(Value::from(data.clone()));
                    Outcome::Error(panicked.to_string())
                }
            };
            results.push(TestResult {
                file: test_file.name.clone(),
                line,
                name,
                outcome,
                output,
                explanation: String::new(),
                duration: started.elapsed(),
            });
        }
        if coverage {
            // Each test file runs in its own clone: merge what every clone covered.
            if let Ok(report) = file_engine.get_coverage_report() {
                for f in report.files {
                    let entry = merged.entry(f.path.clone()).or_default();
                    entry.0.extend(f.covered.iter().copied());
                    entry.1.extend(f.not_covered.iter().copied());
                }
            }
        }
    }
    let files = merged
        .into_iter()
        .filter(|(path, _)| !path.ends_with("_test.rego"))
        .map(|(file, (covered, not_covered))| FileCoverage {
            file,
            covered: covered.len(),
            not_covered: not_covered.difference(&covered).copied().collect(),
        })
        .collect();
    (results, files)
}

/// A file that does not compile, reported where regorus says the problem is, with its whole
/// reason ("expecting `)`" included).
fn compile_error(file: &str, error: &anyhow::Error) -> TestResult {
    let text = error.to_string();
    let (file, line, why) = match crate::policy::rego_error::parse(&text) {
        Some(m) => {
            let mut why = format!("{}:{}: {}", m.line, m.column, m.reason);
            if !m.excerpt.is_empty() {
                why.push('\n');
                why.push_str(&m.excerpt);
            }
            (m.file, m.line, why)
        }
        None => (file.to_string(), 1, text.trim().to_string()),
    };
    TestResult {
        file,
        line,
        name: "compile".to_string(),
        outcome: Outcome::Error(why),
        output: Vec::new(),
        explanation: String::new(),
        duration: Duration::ZERO,
    }
}

/// `(line, name)` of every rule named `test_*` (its first definition).
pub fn test_rules(text: &str) -> Vec<(usize, String)> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if !line.starts_with("test_") && !trimmed.starts_with("test_")
            || line.starts_with(' ')
            || line.starts_with('\t')
        {
            continue;
        }
        let name: String = trimmed
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !seen.contains(&name) {
            seen.push(name.clone());
            out.push((i + 1, name));
        }
    }
    out
}

/// Production parameter defaults of every policy, by package.
fn parameter_defaults(modules: &[&PolicySource]) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for m in modules {
        if let Ok(Some(meta)) = metadata::parse(&m.text) {
            let mut params = serde_json::Map::new();
            for (name, spec) in &meta.parameters {
                if let Some(v) = spec
                    .default
                    .as_ref()
                    .and_then(|d| spec.resolve(d, Environment::Production))
                {
                    params.insert(name.clone(), v);
                }
            }
            out.insert(meta.package(), serde_json::Value::Object(params));
        }
    }
    out
}
