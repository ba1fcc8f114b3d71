//! `regate eval`: judges manifests with the same path as the webhook.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::admission::decision::{judge, Decision};
use crate::admission::review::{ManifestRequest, Review};
use crate::cli::eval_result::{exit_code, EvalResult};
use crate::cli::PolicyArgs;
use crate::config::Environment;
use crate::manifest::{self, ManifestObject};
use crate::policy::eval::Wants;
use crate::policy::set::PolicySet;

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
    /// Operation to present: policies judge CREATE and UPDATE (DELETE and CONNECT are always
    /// allowed, so they are no test).
    #[arg(long, value_enum, ignore_case = true, default_value = "CREATE")]
    pub operation: Operation,
    /// Output: text, json, junit, sarif, or github (GitHub Actions annotations with file and
    /// line).
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// Exit 1 when an object is denied (or a policy cannot be evaluated): deny; also when one
    /// is warned: warn; never: report only. Input that cannot be read exits 2 in every case.
    #[arg(long, value_enum, default_value = "deny")]
    pub fail_on: crate::audit::FailOn,
    /// For each violation and failure: the policy file, the rule and line that produced it,
    /// the values at the violation's path and what the policy printed (Secret values
    /// redacted).
    #[arg(long)]
    pub explain: bool,
    /// Print each object with /mutate's patch applied, in input order: YAML documents, or a
    /// JSON array with -o json. The verdicts go to standard error.
    #[arg(long)]
    pub mutate: bool,
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
#[value(rename_all = "UPPER")]
pub enum Operation {
    Create,
    Update,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Junit,
    Sarif,
    Github,
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
    let secrets = review.secret_values();
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
    if args.mutate && !matches!(args.output, Output::Text | Output::Json) {
        anyhow::bail!("--mutate prints objects: use it with -o text (YAML) or -o json");
    }
    if args.fail_on.needs_baseline() {
        anyhow::bail!(
            "--fail-on new and new-warn compare with a baseline report: use them with `regate audit --baseline`"
        );
    }
    let set = args.policy.build_set(args.environment)?;
    let set = crate::gatekeeper::with_inventory_files(set, &args.inventory)?;
    // One unreadable file must not hide the verdicts on the others: it is reported in its place
    // (file order) as an invalid result, and the run exits 2 once everything else is judged.
    let read = manifest::read_paths_lenient(&args.files);
    for skipped in &read.not_objects {
        eprintln!("regate eval: {skipped}");
    }
    let unreadable = read.errors.len();
    // Namespaces among the manifests are Gatekeeper's `input.review.namespaceObject`.
    crate::gatekeeper::record_namespaces(&set, read.objects.iter().map(|m| &m.object));
    let objects: Vec<serde_json::Value> = if args.explain || args.mutate {
        read.objects.iter().map(|m| m.object.clone()).collect()
    } else {
        Vec::new()
    };
    let judged = evaluate_objects(
        &set,
        read.objects,
        args.namespace.as_deref(),
        args.operation.as_str(),
    );
    if judged.is_empty() && unreadable == 0 {
        eprintln!(
            "regate eval: nothing judged: no Kubernetes objects in {}",
            args.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(2);
    }
    if args.mutate {
        super::eval_report::write_mutated(&judged, &objects, args.output == Output::Json)?;
    }
    let explanations: Vec<String> = if args.explain {
        judged
            .iter()
            .zip(&objects)
            .map(|(r, object)| {
                let heading = format!("{} {} ({})", r.kind, r.name, r.source);
                crate::admission::explain::explain(&set, &r.decision, &heading, object)
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut results = Vec::with_capacity(judged.len() + unreadable);
    let mut errors = read.errors.into_iter().peekable();
    for (i, result) in judged.into_iter().enumerate() {
        while let Some(u) = errors.next_if(|u| u.at <= i) {
            results.push(unreadable_result(&u.error));
        }
        results.push(result);
    }
    results.extend(errors.map(|u| unreadable_result(&u.error)));
    if args.mutate {
        // The objects went to standard output; the verdicts go beside them.
        eprint!("{}", super::eval_report::text(&results));
    } else {
        let mut out = std::io::stdout().lock();
        match args.output {
            Output::Json => {
                serde_json::to_writer_pretty(&mut out, &results)?;
                writeln!(out)?;
            }
            Output::Text => out.write_all(super::eval_report::text(&results).as_bytes())?,
            Output::Junit => super::eval_report::junit(&results, args.fail_on, &mut out)?,
            Output::Sarif => super::eval_report::sarif(&set, &results, &mut out)?,
            Output::Github => super::eval_report::github(&results, &mut out)?,
        }
        out.flush()?;
    }
    if args.explain {
        for explanation in explanations.iter().filter(|e| !e.is_empty()) {
            eprint!("{explanation}");
        }
    }
    if args.prints {
        for r in &results {
            for (policy, line) in &r.decision.prints {
                eprintln!("print {} [{policy}] {line}", r.source);
            }
        }
    }
    if !matches!(args.output, Output::Text | Output::Json) && !args.mutate {
        eprintln!("{}", super::eval_report::summary(&results));
    }
    if unreadable > 0 {
        eprintln!("regate eval: {unreadable} file(s) or document(s) could not be read or parsed");
        return Ok(2);
    }
    Ok(exit_code(&results, args.fail_on))
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
        mutations: Vec::new(),
        evaluated: Vec::new(),
        skipped: None,
        timings: Vec::new(),
        failure_policy: Default::default(),
        prints: Vec::new(),
    }
}
