//! `regate diff`: two policy sets, the same objects, what changes. Each side judges every object
//! through `eval`'s own function ([`evaluate_objects`]), so each side's verdict is exactly what
//! `regate eval` prints for it; only objects whose outcome differs are listed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use crate::cli::eval::evaluate_objects;
use crate::cli::eval_result::EvalResult;
use crate::cli::objects::ObjectArgs;
use crate::cli::PolicyArgs;
use crate::config::Environment;
use crate::manifest::{self, ManifestObject};
use crate::policy::set::PolicySet;
use crate::rollout::{compare, Change, Outcome};

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The base policy directory (what is enforced today). With --base-ref, the directory read
    /// at that revision (default: the --policies directory).
    #[arg(long, required_unless_present = "base_ref")]
    pub base: Option<PathBuf>,
    /// regate.yaml of the base (default: none; with --base-ref, --config at that revision).
    #[arg(long)]
    pub base_config: Option<PathBuf>,
    /// Read the base from this git revision (e.g. main) instead of the work tree: needs the
    /// `git` command and the directory inside a git repository.
    #[arg(long)]
    pub base_ref: Option<String>,
    #[command(flatten)]
    pub objects: ObjectArgs,
    /// Namespace for objects that name none.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Operation to present (CREATE or UPDATE).
    #[arg(long, default_value = "CREATE")]
    pub operation: String,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    /// Exit 1 when this happens: an object newly denied (or a candidate policy that fails to
    /// evaluate), any change, or never.
    #[arg(long, value_enum, default_value = "newly-denied")]
    pub fail_on: DiffFailOn,
    /// The candidate: --policies and --config, as everywhere else.
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFailOn {
    NewlyDenied,
    Changed,
    Never,
}

/// The `-o json` document.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub summary: Summary,
    pub changes: Vec<ObjectChange>,
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub objects: usize,
    pub changed: usize,
    pub newly_denied: usize,
    pub newly_allowed: usize,
}

/// One object whose outcome differs.
#[derive(Debug, Serialize)]
pub struct ObjectChange {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub source: String,
    pub environment: Environment,
    pub change: Change,
    pub before: Outcome,
    pub after: Outcome,
}

impl Report {
    /// Adds the judged pairs of one batch of objects (the same objects, in the same order).
    fn add(&mut self, base: Vec<EvalResult>, candidate: Vec<EvalResult>, cluster: bool) {
        for (before, after) in base.into_iter().zip(candidate) {
            self.summary.objects += 1;
            let b = Outcome::of(&before.decision);
            let a = Outcome::of(&after.decision);
            let Some(change) = compare(&b, &a) else {
                continue;
            };
            self.summary.changed += 1;
            match change {
                Change::NewlyDenied => self.summary.newly_denied += 1,
                Change::NewlyAllowed => self.summary.newly_allowed += 1,
                _ => {}
            }
            self.changes.push(ObjectChange {
                kind: after.kind,
                namespace: after.namespace,
                name: after.name,
                source: if cluster {
                    "cluster".to_string()
                } else {
                    after.source
                },
                environment: after.decision.environment,
                change,
                before: b,
                after: a,
            });
        }
    }

    fn fails(&self, on: DiffFailOn) -> bool {
        match on {
            DiffFailOn::Never => false,
            DiffFailOn::Changed => self.summary.changed > 0,
            DiffFailOn::NewlyDenied => self.changes.iter().any(|c| {
                c.change == Change::NewlyDenied
                    || (c.change == Change::EvaluationFailed && !c.after.failed_by.is_empty())
            }),
        }
    }
}

pub fn run(args: DiffArgs) -> anyhow::Result<i32> {
    // Kept until the end: a --base-ref checkout lives in it.
    let (base_policy, _checkout) = base_policy_args(&args)?;
    let objects = &args.objects;
    let base = objects.prepare(base_policy.build_set(objects.environment)?)?;
    let candidate = objects.prepare(args.policy.build_set(objects.environment)?)?;

    let mut report = Report::default();
    if objects.cluster {
        diff_cluster(&args, base, candidate, &mut report)?;
    } else {
        let read = manifest::read_paths_lenient(&objects.files);
        if !read.errors.is_empty() {
            for e in &read.errors {
                eprintln!(
                    "regate diff: {}:{}: {}",
                    e.error.file(),
                    e.error.line(),
                    e.error.reason()
                );
            }
            eprintln!(
                "regate diff: {} file(s) or document(s) could not be read or parsed",
                read.errors.len()
            );
            return Ok(2);
        }
        let objects = read.objects;
        let judged_base = evaluate_objects(
            &base,
            objects.clone(),
            args.namespace.as_deref(),
            &args.operation,
        );
        let judged_candidate = evaluate_objects(
            &candidate,
            objects,
            args.namespace.as_deref(),
            &args.operation,
        );
        report.add(judged_base, judged_candidate, false);
    }
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => print!("{}", text(&report)),
        Output::Markdown => print!("{}", markdown(&report)),
    }
    Ok(i32::from(report.fails(args.fail_on)))
}

/// The base's policy arguments, and the temporary directory holding a --base-ref checkout.
fn base_policy_args(args: &DiffArgs) -> anyhow::Result<(PolicyArgs, Option<tempfile::TempDir>)> {
    let Some(rev) = &args.base_ref else {
        let Some(dir) = &args.base else {
            bail!("--base DIR or --base-ref REV is required");
        };
        // The embedded defaults stand in for a missing --policies, never for a missing base.
        if !dir.is_dir() {
            bail!("--base {}: no such directory", dir.display());
        }
        if let Some(config) = &args.base_config {
            if !config.is_file() {
                bail!("--base-config {}: no such file", config.display());
            }
        }
        let policy = PolicyArgs {
            policies: Some(dir.clone()),
            include_defaults: args.policy.include_defaults,
            config: args.base_config.clone(),
        };
        return Ok((policy, None));
    };
    let named = match &args.base {
        Some(dir) => dir.clone(),
        None => super::policy_dir(args.policy.policies.as_deref())?,
    };
    let dir = &named;
    let checkout =
        tempfile::tempdir().context("creating a directory for the --base-ref checkout")?;
    let policies = checkout.path().join("policies");
    export_at_revision(dir, rev, &policies, true)?;
    let config = match (&args.base_config, &args.policy.config) {
        (Some(c), _) => Some(c.clone()),
        (None, Some(c)) => {
            let at = checkout.path().join("regate.yaml");
            export_at_revision(c, rev, &at, false)?;
            Some(at)
        }
        (None, None) => None,
    };
    let policy = PolicyArgs {
        policies: Some(policies),
        include_defaults: args.policy.include_defaults,
        config,
    };
    Ok((policy, Some(checkout)))
}

/// Writes `path` (a directory when `dir`, else a file) as it is at git revision `rev` into
/// `to`, with `git ls-tree` and `git show`: no checkout, no change to the repository.
fn export_at_revision(path: &Path, rev: &str, to: &Path, dir: bool) -> anyhow::Result<()> {
    let abs = std::fs::canonicalize(path)
        .or_else(|_| std::env::current_dir().map(|d| d.join(path)))
        .with_context(|| format!("{}: cannot resolve the path", path.display()))?;
    let cwd = if dir {
        abs.clone()
    } else {
        abs.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let cwd = if cwd.is_dir() {
        cwd
    } else {
        std::env::current_dir()?
    };
    let git = |args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = Command::new("git")
            .current_dir(&cwd)
            .args(args)
            .output()
            .context("--base-ref needs the git command: cannot run git")?;
        if !out.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    };
    let top = String::from_utf8_lossy(&git(&["rev-parse", "--show-toplevel"])?)
        .trim()
        .to_string();
    let top = std::fs::canonicalize(&top).unwrap_or_else(|_| PathBuf::from(&top));
    let top_dir = top.to_string_lossy().to_string();
    let rel = abs
        .strip_prefix(&top)
        .with_context(|| {
            format!(
                "{} is not inside the git repository {}",
                abs.display(),
                top.display()
            )
        })?
        .to_string_lossy()
        .to_string();
    git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{rev}^{{commit}}"),
    ])
    .with_context(|| format!("--base-ref {rev}: not a revision of {}", top.display()))?;
    if !dir {
        let text =
            git(&["show", &format!("{rev}:{rel}")]).with_context(|| format!("{rel} at {rev}"))?;
        std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    let spec = if rel.is_empty() {
        ".".to_string()
    } else {
        rel.clone()
    };
    let listing = git(&[
        "-C",
        &top_dir,
        "ls-tree",
        "-r",
        "-z",
        "--name-only",
        rev,
        "--",
        &spec,
    ])?;
    let files: Vec<String> = listing
        .split(|b| *b == 0)
        .filter(|f| !f.is_empty())
        .map(|f| String::from_utf8_lossy(f).to_string())
        .collect();
    if files.is_empty() {
        bail!("--base-ref {rev}: {rel} does not exist at that revision");
    }
    for file in files {
        let inner = Path::new(&file)
            .strip_prefix(&rel)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| PathBuf::from(&file));
        let target = to.join(inner);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = git(&["-C", &top_dir, "show", &format!("{rev}:{file}")])?;
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    Ok(())
}

/// Both sides over the live cluster, one page at a time: every kind either set targets.
fn diff_cluster(
    args: &DiffArgs,
    base: PolicySet,
    candidate: PolicySet,
    report: &mut Report,
) -> anyhow::Result<()> {
    use crate::audit::cluster::{self, Pager};
    let objects = &args.objects;
    // The candidate's config pages, as `audit --cluster` would with it.
    let page_size = objects.page_size(candidate.config.audit.page_size);
    let mut kinds = base.kinds();
    for k in candidate.kinds() {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    objects.with_cluster(|client| async move {
        let mut wanted = kinds.clone();
        wanted.push("Namespace".to_string());
        let discovered = cluster::discover(&client, &wanted, cluster::DEFAULT_DISCOVERY_TIMEOUT)
            .await
            .context("discovering the cluster's kinds")?;
        let labels = if objects.environment.is_none() {
            vec![
                base.resolver.labels().clone(),
                candidate.resolver.labels().clone(),
            ]
        } else {
            Vec::new()
        };
        let namespace_objects = [
            base.resolver.labels().clone(),
            candidate.resolver.labels().clone(),
        ];
        let (_, issue) =
            cluster::read_namespaces(&client, &discovered, page_size, &labels, &namespace_objects)
                .await;
        if let Some(issue) = issue {
            bail!("reading namespaces: {issue}");
        }
        for target in discovered
            .targets
            .iter()
            .filter(|t| kinds.contains(&t.resource.kind))
        {
            let resource = &target.resource;
            let mut pager = Pager::new(resource, page_size);
            while let Some(items) = pager
                .next(&client)
                .await
                .map_err(|e| anyhow::anyhow!(cluster::describe_list_error(resource, &e)))?
            {
                let page: Vec<ManifestObject> = items
                    .into_iter()
                    .map(|mut object| {
                        if let Some(map) = object.as_object_mut() {
                            map.entry("apiVersion")
                                .or_insert_with(|| Value::String(resource.api_version.clone()));
                            map.entry("kind")
                                .or_insert_with(|| Value::String(resource.kind.clone()));
                        }
                        ManifestObject {
                            file: "cluster".to_string(),
                            index: 0,
                            line: 0,
                            object,
                        }
                    })
                    .collect();
                let judged_base = evaluate_objects(&base, page.clone(), None, &args.operation);
                let judged_candidate = evaluate_objects(&candidate, page, None, &args.operation);
                report.add(judged_base, judged_candidate, true);
            }
        }
        Ok(())
    })
}

fn ids(ids: &[String]) -> String {
    if ids.is_empty() {
        "-".to_string()
    } else {
        ids.join(", ")
    }
}

fn verdict(o: &Outcome) -> String {
    let mut s = if o.allowed {
        "allowed".to_string()
    } else {
        format!("denied by {}", ids(&o.denied_by))
    };
    if !o.warned_by.is_empty() {
        s.push_str(&format!("; warned by {}", ids(&o.warned_by)));
    }
    if !o.failed_by.is_empty() {
        s.push_str(&format!("; failed to evaluate: {}", ids(&o.failed_by)));
    }
    s
}

fn object_name(c: &ObjectChange) -> String {
    match &c.namespace {
        Some(ns) => format!("{} {ns}/{}", c.kind, c.name),
        None => format!("{} {}", c.kind, c.name),
    }
}

fn summary_line(r: &Report) -> String {
    format!(
        "{} objects, {} changed: {} newly denied, {} newly allowed",
        r.summary.objects, r.summary.changed, r.summary.newly_denied, r.summary.newly_allowed
    )
}

/// For a terminal: one block per changed object, then the summary.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    for c in &r.changes {
        out.push_str(&format!(
            "{:<18} {}  [{}]  {}\n  before: {}\n  after:  {}\n",
            c.change.as_str().replace('_', " ").to_uppercase(),
            object_name(c),
            c.environment,
            c.source,
            verdict(&c.before),
            verdict(&c.after)
        ));
    }
    out.push_str(&summary_line(r));
    out.push('\n');
    out
}

/// For a pull-request comment: a summary line and a table.
pub fn markdown(r: &Report) -> String {
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let mut out = format!("**regate diff**: {}.\n", summary_line(r));
    if r.changes.is_empty() {
        return out;
    }
    out.push_str("\n| Change | Object | Environment | Before | After | Source |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for c in &r.changes {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            c.change.as_str().replace('_', " "),
            cell(&object_name(c)),
            c.environment,
            cell(&verdict(&c.before)),
            cell(&verdict(&c.after)),
            cell(&c.source)
        ));
    }
    out
}
