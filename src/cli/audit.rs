//! `regate audit`: what existing objects (files or a live cluster) violate. The work is in
//! `crate::audit`; this file reads the arguments and picks the source and the output.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::audit::cluster::ClusterOptions;
use crate::audit::files::FileOptions;
use crate::audit::{self, FailOn, Format};
use crate::cli::objects::ObjectArgs;
use crate::cli::PolicyArgs;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub objects: ObjectArgs,
    /// Namespace for manifests that name none.
    #[arg(short = 'n', long, conflicts_with = "cluster")]
    pub namespace: Option<String>,
    /// Report format.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
    /// Write the report to this file rather than standard output.
    #[arg(long)]
    pub output_file: Option<PathBuf>,
    /// Exit 1 when a finding with this action (or worse) is found: deny (and policies that
    /// could not be evaluated), warn, or never. Exit 2 when part of the audit could not be done.
    #[arg(long, value_enum, default_value = "deny")]
    pub fail_on: FailOn,
    /// An earlier `regate audit -o json` report: each finding is marked new or unchanged, and
    /// the baseline's findings that are gone are listed as resolved.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

pub fn run(args: AuditArgs) -> anyhow::Result<i32> {
    if args.fail_on.needs_baseline() && args.baseline.is_none() {
        anyhow::bail!("--fail-on new and new-warn need --baseline FILE (an earlier `regate audit -o json` report)");
    }
    // Read before the audit: a wrong path fails at once, not after a long cluster walk.
    let baseline = match &args.baseline {
        Some(path) => Some(audit::baseline::load(path)?),
        None => None,
    };
    let objects = &args.objects;
    let set = objects.prepare(args.policy.build_set(objects.environment)?)?;
    let page_size = objects.page_size(set.config.audit.page_size);
    let keep_passing = args.output.lists_passing();
    // Gatekeeper's audit enforcement point: scoped constraints act as they say there.
    let set = crate::gatekeeper::audit_point(Arc::new(set));
    let mut run = if objects.cluster {
        objects.with_cluster(|client| async move {
            let opts = ClusterOptions {
                page_size,
                keep_passing,
                namespace_labels: objects.environment.is_none(),
                ..ClusterOptions::default()
            };
            audit::cluster::audit_cluster(&client, set, &opts)
                .await
                .context("auditing the cluster")
        })?
    } else {
        let opts = FileOptions {
            namespace: args.namespace.clone(),
            page_size: page_size as usize,
            keep_passing,
        };
        audit::files::audit_paths(set, &objects.files, &opts)?
    };

    if let (Some(findings), Some(path)) = (baseline, &args.baseline) {
        let comparison =
            audit::baseline::compare(path.display().to_string(), findings, &mut run.spool)
                .context("comparing with the baseline")?;
        run.baseline = Some(comparison);
    }

    {
        let sink: Box<dyn Write> = match &args.output_file {
            Some(path) => Box::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            ),
            None => Box::new(std::io::stdout().lock()),
        };
        let mut out = BufWriter::with_capacity(64 * 1024, sink);
        audit::report::write(args.output, &mut run, args.fail_on, &mut out)
            .context("writing the report")?;
        out.flush().context("writing the report")?;
    }

    let t = &run.totals;
    let peak = audit::peak_rss_bytes()
        .map(|b| format!("; peak memory {:.1} MiB", b as f64 / (1024.0 * 1024.0)))
        .unwrap_or_default();
    let unreadable = if t.unreadable > 0 {
        format!(
            "; {} file(s) or document(s) could not be parsed",
            t.unreadable
        )
    } else {
        String::new()
    };
    eprintln!(
        "regate audit: {} objects judged in {:.2}s ({:.0} objects/s): {} deny, {} warn, {} audit, {} error{unreadable}{peak}",
        t.objects,
        run.duration.as_secs_f64(),
        run.rate(),
        t.findings.deny,
        t.findings.warn,
        t.findings.audit,
        t.findings.error
    );
    if let Some(b) = &run.baseline {
        eprintln!(
            "regate audit: since the baseline: {} new, {} unchanged, {} resolved",
            b.summary.new, b.summary.unchanged, b.summary.resolved
        );
    }
    for i in &run.issues {
        eprintln!("regate audit: incomplete: {}: {}", i.source, i.message);
    }
    if !objects.cluster && t.objects == 0 && t.unreadable == 0 && run.issues.is_empty() {
        // Files that hold no Kubernetes object at all: most likely the wrong files.
        eprintln!("regate audit: nothing judged: no Kubernetes objects in the input");
        return Ok(2);
    }
    Ok(args.fail_on.exit_code(&run))
}
