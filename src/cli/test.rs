//! `regate test`: Rego unit tests and YAML cases.

use std::path::PathBuf;

use clap::Args;

use crate::config::Config;
use crate::testing::{self, Outcome, Plan};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Policy directories and case files or directories. Directories holding `.rego` files are
    /// policy directories; YAML files are cases. Default: policies/ and tests/policies/.
    pub paths: Vec<PathBuf>,
    /// regate.yaml to judge the cases with.
    #[arg(long, env = "REGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// List every test, with its print() output.
    #[arg(short, long)]
    pub verbose: bool,
    /// Per-file line coverage of the policies.
    #[arg(long)]
    pub coverage: bool,
}

pub fn run(args: TestArgs) -> anyhow::Result<i32> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("policies"), PathBuf::from("tests/policies")]
    } else {
        // A path the user named must exist: a typo must not run the defaults and pass.
        for path in &args.paths {
            if !path.exists() {
                anyhow::bail!("{}: no such file or directory", path.display());
            }
        }
        args.paths.clone()
    };
    let (policy_dirs, case_paths): (Vec<PathBuf>, Vec<PathBuf>) =
        paths.into_iter().partition(|p| holds_rego(p));
    let plan = Plan {
        policy_dirs: if policy_dirs.is_empty() {
            vec![PathBuf::from("policies")]
        } else {
            policy_dirs
        },
        case_paths,
        config,
        coverage: args.coverage,
    };
    let dirs = plan.policy_dirs.clone();
    let report = testing::run(&plan)?;
    let existing: Vec<String> = dirs
        .iter()
        .filter(|d| d.exists())
        .map(|d| d.display().to_string())
        .collect();
    if existing.is_empty() {
        eprintln!("regate: testing the embedded default policies (no policies/ directory here)");
    } else {
        eprintln!("regate: testing the policies in {}", existing.join(", "));
    }
    for r in &report.results {
        match &r.outcome {
            Outcome::Pass if args.verbose => {
                println!("PASS  {}:{}: {} ({:?})", r.file, r.line, r.name, r.duration)
            }
            Outcome::Pass => {}
            Outcome::Fail(why) => println!(
                "FAIL  {}:{}: {}: {}",
                r.file,
                r.line,
                r.name,
                indent_more(why)
            ),
            Outcome::Error(why) => println!(
                "ERROR {}:{}: {}: {}",
                r.file,
                r.line,
                r.name,
                indent_more(why)
            ),
        }
        for line in r.explanation.lines() {
            println!("      {line}");
        }
        if args.verbose || !r.passed() {
            for line in &r.output {
                println!("      print: {line}");
            }
        }
    }
    if args.coverage {
        println!("coverage:");
        for f in &report.coverage {
            println!(
                "  {:>6.1}%  {}  (not covered: {:?})",
                f.percent(),
                f.file,
                f.not_covered
            );
        }
    }
    println!("{} passed, {} failed", report.passed(), report.failed());
    Ok(if report.failed() > 0 { 1 } else { 0 })
}

/// Continuation lines of a message (regorus's source excerpt), indented under the result.
fn indent_more(text: &str) -> String {
    text.lines().collect::<Vec<_>>().join("\n      ")
}

fn holds_rego(path: &std::path::Path) -> bool {
    if path.extension().is_some_and(|e| e == "rego") {
        return true;
    }
    path.is_dir()
        && std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "rego"))
            })
            .unwrap_or(false)
}
