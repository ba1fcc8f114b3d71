//! `regate check` and `regate policies`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::admission::webhook_rules::{unsent, WebhookRules};
use crate::config::{Config, Environment};
use crate::environment::NamespaceLabels;
use crate::policy::set::PolicySet;
use crate::policy::source;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Policy directories (default: policies/, or the embedded defaults when it does not exist).
    pub paths: Vec<PathBuf>,
    /// regate.yaml to validate with the policies.
    #[arg(long, env = "REGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Check the embedded defaults together with the given directories.
    #[arg(long, default_value_t = false)]
    pub include_defaults: bool,
    /// List the loaded policies (as `regate policies` does).
    #[arg(long)]
    pub list: bool,
    /// What the webhook configurations send (`chart-defaults`, `all`, rules as YAML/JSON, or a
    /// file): policies on kinds they leave out are named (a warning; the exit code is unchanged).
    #[arg(long, env = "REGATE_WEBHOOK_RULES", default_value = "chart-defaults")]
    pub webhook_rules: String,
}

pub fn run(args: CheckArgs, list_only: bool) -> anyhow::Result<i32> {
    let config = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                // A config that cannot be loaded at all is bad input (2), as `serve` and the
                // other commands treat it; 1 is for problems found in what did load.
                eprintln!("{e}");
                return Ok(2);
            }
        },
        None => Config::default(),
    };
    let dirs = if args.paths.is_empty() {
        vec![super::policy_dir(None)?]
    } else {
        args.paths
            .iter()
            .map(|p| super::policy_dir(Some(p.as_path())))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let mut sources = Vec::new();
    let mut embedded = false;
    for dir in &dirs {
        let (mut s, e) = source::resolve(dir, args.include_defaults)?;
        embedded |= e;
        sources.append(&mut s);
    }
    let mut problems = 0;
    let now = time::OffsetDateTime::now_utc();
    for ex in &config.exceptions {
        if let Ok(expires) = crate::config::parse_rfc3339(&ex.expires) {
            if expires <= now {
                eprintln!(
                    "{}: exception {:?} expired at {}: it no longer applies; remove it or extend it",
                    args.config.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                    ex.name,
                    ex.expires
                );
                problems += 1;
            }
        }
    }
    let rules = match WebhookRules::from_arg(&args.webhook_rules) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return Ok(2);
        }
    };
    let set = match crate::catalog::build(&sources, Arc::new(config), NamespaceLabels::default()) {
        Ok(set) => set,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.0.len() + problems);
            return Ok(1);
        }
    };
    for unsent in unsent(&set, &rules) {
        eprintln!("warning: {unsent}");
    }
    super::announce_policies(&set, &dirs);
    problems += report_unknown_kinds(&set);
    if list_only || args.list {
        print_policies(&set);
    } else {
        let source = if embedded { " (embedded defaults)" } else { "" };
        let count = set.policies.len();
        let policies = if count == 1 { "policy" } else { "policies" };
        println!("{count} {policies} OK{source}");
        for (i, p) in set.policies.iter().enumerate() {
            println!("  {}: {}", p.meta.id, set.backend(i));
        }
        let mutators = set.mutators.ids();
        if !mutators.is_empty() {
            println!("{} mutators OK, applied in this order:", mutators.len());
            for id in mutators {
                println!("  {id}");
            }
        }
    }
    Ok(if problems > 0 { 1 } else { 0 })
}

/// Kinds no stock cluster serves and no loaded Gatekeeper constraint names: a misspelling
/// (near a known kind) is an error, since the policy would never match; anything else is a
/// warning (a custom resource regate cannot confirm). Returns the number of errors.
fn report_unknown_kinds(set: &PolicySet) -> usize {
    use crate::policy::metadata::{nearest_kind, BUILT_IN_KINDS};
    let mut known: Vec<&str> = BUILT_IN_KINDS.to_vec();
    for p in &set.policies {
        if !p.flavor.is_native() {
            known.extend(p.meta.kinds.iter().map(String::as_str));
        }
    }
    let mut errors = 0;
    for p in &set.policies {
        if !p.flavor.is_native() {
            continue;
        }
        for kind in &p.meta.kinds {
            if kind == "*" || known.contains(&kind.as_str()) {
                continue;
            }
            let line = kinds_line(&p.file).unwrap_or(1);
            match nearest_kind(kind, &known) {
                Some(near) => {
                    errors += 1;
                    eprintln!(
                        "{}:{line}: policy {}: kind {kind:?} is not a known kind; did you mean {near:?}? As written the policy never matches.",
                        p.file, p.meta.id
                    );
                }
                None => eprintln!(
                    "warning: {}:{line}: policy {}: kind {kind:?} is not a built-in kind; it matches only a custom resource of that kind",
                    p.file, p.meta.id
                ),
            }
        }
    }
    errors
}

/// The line of `kinds:` in a policy file's METADATA.
fn kinds_line(file: &str) -> Option<usize> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .position(|l| {
            l.trim_start()
                .trim_start_matches('#')
                .trim_start()
                .starts_with("kinds:")
        })
        .map(|i| i + 1)
}

fn print_policies(set: &PolicySet) {
    println!(
        "ID                               SEVERITY  DEVELOPMENT STAGING     PRODUCTION  KINDS"
    );
    for (i, p) in set.policies.iter().enumerate() {
        println!(
            "{:<32} {:<9} {:<11} {:<11} {:<11} {}",
            p.meta.id,
            p.meta.severity.to_string(),
            p.action(Environment::Development).to_string(),
            p.action(Environment::Staging).to_string(),
            p.action(Environment::Production).to_string(),
            p.meta.kinds.join(",")
        );
        println!("    {}", p.meta.title);
        println!("    backend: {}", set.backend(i));
    }
}
