//! `regate eval`: judges manifests with the same path as the webhook.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::admission::decision::{judge, Decision};
use crate::admission::review::{ManifestRequest, Review};
use crate::cli::PolicyArgs;
use crate::config::{Action, Environment};
use crate::manifest::{self, ManifestObject};
use crate::policy::eval::Wants;
use crate::policy::set::PolicySet;
use crate::secrets::SecretValues;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Manifest files or directories (recursive); `-` reads standard input.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace for objects that name none.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Judge every object in this environment, whatever its namespace.
    #[arg(long, value_parser = super::parse_environment)]
    pub environment: Option<Environment>,
    /// Operation to present (CREATE or UPDATE).
    #[arg(long, default_value = "CREATE")]
    pub operation: String,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// Objects (files or directories) that fill Gatekeeper's `data.inventory`, limited to the
    /// kinds referential templates name in requires-sync-data; repeatable.
    #[arg(long = "inventory", value_name = "FILE|DIR")]
    pub inventory: Vec<PathBuf>,
    /// Show what the policies' `print()` calls wrote, on standard error (Secret values
    /// redacted).
    #[arg(long)]
    pub prints: bool,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// One judged object, as `-o json` prints it.
#[derive(Debug, Serialize)]
pub struct EvalResult {
    pub source: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    #[serde(flatten)]
    pub decision: Decision,
    pub warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Judges each object as an admission request; shared by `eval`, `audit -f` and the chart test.
pub fn evaluate_objects(
    set: &PolicySet,
    objects: Vec<ManifestObject>,
    namespace: Option<&str>,
    operation: &str,
) -> Vec<EvalResult> {
    let mut out = Vec::with_capacity(objects.len());
    for (i, m) in objects.into_iter().enumerate() {
        let source = m.location();
        let opts = ManifestRequest {
            namespace: namespace.map(str::to_string),
            operation: operation.to_ascii_uppercase(),
            uid: format!("eval-{i:06}"),
            ..ManifestRequest::default()
        };
        match Review::from_manifest(m.object, &opts) {
            Ok(review) => {
                let mut decision = judge(set, &review, Wants::ALL);
                scrub_patch(&mut decision, &review);
                out.push(EvalResult {
                    source,
                    kind: review.kind().to_string(),
                    namespace: review.namespace().map(str::to_string),
                    name: review.name().to_string(),
                    warnings: decision.warnings(),
                    decision,
                    error: None,
                });
            }
            Err(e) => out.push(EvalResult {
                source,
                kind: String::new(),
                namespace: None,
                name: String::new(),
                warnings: Vec::new(),
                decision: empty_decision(),
                error: Some(e.to_string()),
            }),
        }
    }
    out
}

/// A patch is the mutation itself, and `/mutate` sends it as it is; printed, it is a text like
/// any other, and a patch rule may copy a Secret's value into it (judge scrubs messages, not the
/// patch). Values and paths are scrubbed; a path the scrubbing leaves unparsable keeps the
/// marker as its last segment.
fn scrub_patch(decision: &mut Decision, review: &Review) {
    let Some(patch) = decision.patch.as_mut() else {
        return;
    };
    let secrets = SecretValues::of_review(review);
    if secrets.is_empty() {
        return;
    }
    for operation in patch.0.iter_mut() {
        use json_patch::PatchOperation as Op;
        let (path, value) = match operation {
            Op::Add(op) => (&mut op.path, Some(&mut op.value)),
            Op::Replace(op) => (&mut op.path, Some(&mut op.value)),
            Op::Test(op) => (&mut op.path, Some(&mut op.value)),
            Op::Remove(op) => (&mut op.path, None),
            Op::Move(op) => (&mut op.path, None),
            Op::Copy(op) => (&mut op.path, None),
        };
        if let Some(value) = value {
            secrets.scrub_json(value);
        }
        let text = path.to_string();
        let scrubbed = secrets.scrub(&text);
        if scrubbed != text {
            *path = json_patch::jsonptr::PointerBuf::parse(&scrubbed).unwrap_or_else(|_| {
                json_patch::jsonptr::PointerBuf::from_tokens([crate::secrets::REDACTED])
            });
        }
    }
}

pub fn run(args: EvalArgs) -> anyhow::Result<i32> {
    let set = args.policy.build_set(args.environment)?;
    let set = crate::gatekeeper::with_inventory_files(set, &args.inventory)?;
    // One unreadable file must not hide the verdicts on the others: it is reported in its place
    // (file order) as an invalid result, and the run exits 2 once everything else is judged.
    let read = manifest::read_paths_lenient(&args.files);
    let unreadable = read.errors.len();
    let judged = evaluate_objects(
        &set,
        read.objects,
        args.namespace.as_deref(),
        &args.operation,
    );
    let mut results = Vec::with_capacity(judged.len() + unreadable);
    let mut errors = read.errors.into_iter().peekable();
    for (i, result) in judged.into_iter().enumerate() {
        while let Some(u) = errors.next_if(|u| u.at <= i) {
            results.push(unreadable_result(&u.error));
        }
        results.push(result);
    }
    results.extend(errors.map(|u| unreadable_result(&u.error)));
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Output::Text => print_text(&results),
    }
    if args.prints {
        for r in &results {
            for (policy, line) in &r.decision.prints {
                eprintln!("print {} [{policy}] {line}", r.source);
            }
        }
    }
    if unreadable > 0 {
        eprintln!("regate eval: {unreadable} file(s) or document(s) could not be read or parsed");
        return Ok(2);
    }
    let denied = results.iter().any(|r| !r.decision.allowed);
    Ok(if denied { 1 } else { 0 })
}

/// A file or document that could not be read or parsed, as a result: denied, with the error.
fn unreadable_result(e: &manifest::ManifestError) -> EvalResult {
    EvalResult {
        source: format!("{}:{}", e.file(), e.line()),
        kind: String::new(),
        namespace: None,
        name: String::new(),
        warnings: Vec::new(),
        decision: empty_decision(),
        error: Some(e.reason()),
    }
}

fn empty_decision() -> Decision {
    Decision {
        uid: String::new(),
        allowed: false,
        environment: Environment::Production,
        violations: Vec::new(),
        warn_results: Vec::new(),
        failures: Vec::new(),
        waivers: Vec::new(),
        patch: None,
        evaluated: Vec::new(),
        skipped: None,
        timings: Vec::new(),
        failure_policy: Default::default(),
        prints: Vec::new(),
    }
}

fn print_text(results: &[EvalResult]) {
    let mut denied = 0;
    for r in results {
        if let Some(error) = &r.error {
            println!("INVALID  {}: {error}", r.source);
            denied += 1;
            continue;
        }
        let verdict = if !r.decision.allowed {
            denied += 1;
            "DENIED "
        } else if !r.warnings.is_empty() {
            "WARNED "
        } else {
            "ALLOWED"
        };
        let ns = r
            .namespace
            .as_deref()
            .map(|n| format!("{n}/"))
            .unwrap_or_default();
        println!(
            "{verdict}  {} {ns}{}  [{}]  {}",
            r.kind, r.name, r.decision.environment, r.source
        );
        for v in &r.decision.violations {
            let mark = match v.action {
                Action::Deny => "deny ",
                Action::Warn => "warn ",
                Action::Audit => "audit",
            };
            let path = v
                .path
                .as_deref()
                .map(|p| format!("  (at {p})"))
                .unwrap_or_default();
            println!("  {mark} [{}] {}{path}", v.policy, v.message);
        }
        for w in &r.decision.warn_results {
            println!("  warn  [{}] {}", w.policy, w.message);
        }
        for w in &r.decision.waivers {
            println!(
                "  waived [{}] by exception {:?}: {}",
                w.policy, w.exception, w.reason
            );
        }
        for f in &r.decision.failures {
            println!("  error [{}] {}", f.policy, f.reason.describe());
        }
        if let Some(patch) = &r.decision.patch {
            println!(
                "  patch {}",
                serde_json::to_string(patch).unwrap_or_default()
            );
        }
    }
    println!(
        "{} objects: {} denied, {} allowed",
        results.len(),
        denied,
        results.len() - denied
    );
}
