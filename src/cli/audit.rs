//! `regate audit`: what existing objects (files or a live cluster) violate. The work is in
//! `crate::audit`; this file reads the arguments and picks the source and the output.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::audit::cluster::{ClusterOptions, DEFAULT_PAGE_SIZE};
use crate::audit::files::FileOptions;
use crate::audit::{self, FailOn, Format};
use crate::cli::PolicyArgs;
use crate::config::Environment;
use crate::environment::{EnvironmentResolver, NamespaceLabels};

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Manifest files or directories (recursive); `-` reads standard input.
    #[arg(
        short = 'f',
        long = "filename",
        conflicts_with = "cluster",
        required_unless_present = "cluster"
    )]
    pub files: Vec<PathBuf>,
    /// Audit the live cluster (kubeconfig, or the in-cluster service account): every kind a
    /// loaded policy targets, plus Namespaces for environments.
    #[arg(long)]
    pub cluster: bool,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, requires = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long, requires = "cluster")]
    pub context: Option<String>,
    /// Objects per list page (default: audit.pageSize of the config, else 500).
    #[arg(long)]
    pub page_size: Option<u32>,
    /// Namespace for manifests that name none.
    #[arg(short = 'n', long, conflicts_with = "cluster")]
    pub namespace: Option<String>,
    /// Judge every object in this environment, whatever its namespace.
    #[arg(long, value_parser = super::parse_environment)]
    pub environment: Option<Environment>,
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
    /// Objects (files or directories) that fill Gatekeeper's `data.inventory`, limited to the
    /// kinds referential templates name in requires-sync-data; repeatable.
    #[arg(long = "inventory", value_name = "FILE|DIR")]
    pub inventory: Vec<PathBuf>,
    /// An earlier `regate audit -o json` report: each finding is marked new or unchanged, and
    /// the baseline's findings that are gone are listed as resolved.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

async fn client(args: &AuditArgs) -> anyhow::Result<kube::Client> {
    kube_client(args.kubeconfig.as_deref(), args.context.as_deref()).await
}

/// A client from the kubeconfig (or the in-cluster service account); shared with `diff`.
pub async fn kube_client(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> anyhow::Result<kube::Client> {
    let config = if kubeconfig.is_none() && context.is_none() {
        kube::Config::infer().await.context(
            "no cluster: neither a kubeconfig nor an in-cluster service account was found",
        )?
    } else {
        let kubeconfig = match kubeconfig {
            Some(path) => kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?,
            None => kube::config::Kubeconfig::read().context("reading the kubeconfig")?,
        };
        let options = kube::config::KubeConfigOptions {
            context: context.map(str::to_string),
            ..Default::default()
        };
        kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .context("loading the kubeconfig")?
    };
    kube::Client::try_from(config).context("creating the Kubernetes client")
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
    let mut set = args.policy.build_set(args.environment)?;
    if args.environment.is_none() {
        // Namespace labels read from the cluster decide environments, as in `serve`.
        set.resolver = EnvironmentResolver::new(&set.config, NamespaceLabels::default());
    }
    // After the resolver: it keeps the inventory's Namespaces (`namespaceObject`).
    let set = crate::gatekeeper::with_inventory_files(set, &args.inventory)?;
    let page_size = args
        .page_size
        .or(set.config.audit.page_size)
        .unwrap_or(DEFAULT_PAGE_SIZE)
        .max(1);
    let keep_passing = args.output.lists_passing();
    // Gatekeeper's audit enforcement point: scoped constraints act as they say there.
    let set = crate::gatekeeper::audit_point(Arc::new(set));
    let mut run = if args.cluster {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = client(&args).await?;
            let opts = ClusterOptions {
                page_size,
                keep_passing,
                namespace_labels: args.environment.is_none(),
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
        audit::files::audit_paths(set, &args.files, &opts)?
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
    if !args.cluster && t.objects == 0 && t.unreadable == 0 && run.issues.is_empty() {
        // Files that hold no Kubernetes object at all: most likely the wrong files.
        eprintln!("regate audit: nothing judged: no Kubernetes objects in the input");
        return Ok(2);
    }
    Ok(args.fail_on.exit_code(&run))
}
