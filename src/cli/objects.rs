//! Where `audit` and `diff` read the objects they judge: manifest files or the live cluster,
//! with the same flags, the same kube client, the same paging and the same inventory. One
//! definition, so that `diff --cluster` reads exactly what `audit --cluster` reads.

use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::audit::cluster::DEFAULT_PAGE_SIZE;
use crate::config::Environment;
use crate::environment::{EnvironmentResolver, NamespaceLabels};
use crate::policy::set::PolicySet;

#[derive(Debug, Args)]
pub struct ObjectArgs {
    /// Manifest files or directories (recursive); `-` reads standard input.
    #[arg(
        short = 'f',
        long = "filename",
        conflicts_with = "cluster",
        required_unless_present = "cluster"
    )]
    pub files: Vec<PathBuf>,
    /// Judge the live cluster's objects (kubeconfig, or the in-cluster service account): every
    /// kind a loaded policy targets, plus Namespaces for environments; paged, bounded memory.
    #[arg(long)]
    pub cluster: bool,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, requires = "cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long, requires = "cluster")]
    pub context: Option<String>,
    /// Objects per list page with --cluster (default: audit.pageSize of the config, else 500).
    #[arg(long)]
    pub page_size: Option<u32>,
    /// Judge every object in this environment, whatever its namespace.
    #[arg(long, value_parser = super::parse_environment)]
    pub environment: Option<Environment>,
    /// Objects (files or directories) that fill Gatekeeper's `data.inventory`, limited to the
    /// kinds referential templates name in requires-sync-data; repeatable.
    #[arg(long = "inventory", value_name = "FILE|DIR")]
    pub inventory: Vec<PathBuf>,
}

impl ObjectArgs {
    /// `set` ready to judge these objects: namespace labels left to the cluster or the
    /// inventory unless `--environment` fixes one, and the inventory installed.
    pub fn prepare(&self, mut set: PolicySet) -> anyhow::Result<PolicySet> {
        if self.environment.is_none() {
            // Namespace labels read from the cluster decide environments, as in `serve`.
            set.resolver = EnvironmentResolver::new(&set.config, NamespaceLabels::default());
        }
        // After the resolver: it keeps the inventory's Namespaces (`namespaceObject`).
        Ok(crate::gatekeeper::with_inventory_files(
            set,
            &self.inventory,
        )?)
    }

    /// Objects per list page: the flag, else the config's `audit.pageSize`, else the default.
    pub fn page_size(&self, configured: Option<u32>) -> u32 {
        self.page_size
            .or(configured)
            .unwrap_or(DEFAULT_PAGE_SIZE)
            .max(1)
    }

    /// Runs `read` with a client for the cluster, on a runtime of its own (the commands are
    /// synchronous everywhere else).
    pub fn with_cluster<T, F>(&self, read: impl FnOnce(kube::Client) -> F) -> anyhow::Result<T>
    where
        F: Future<Output = anyhow::Result<T>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = kube_client(self.kubeconfig.as_deref(), self.context.as_deref()).await?;
            read(client).await
        })
    }
}

/// A client from the kubeconfig (or the in-cluster service account).
async fn kube_client(
    kubeconfig: Option<&Path>,
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        objects: ObjectArgs,
    }

    fn parse(args: &[&str]) -> ObjectArgs {
        let argv = std::iter::once("regate").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.objects).unwrap()
    }

    /// The flag wins, then the config's `audit.pageSize`, then the default; never 0.
    #[test]
    fn page_size_comes_from_the_flag_the_config_or_the_default() {
        let cluster = parse(&["--cluster"]);
        assert_eq!(cluster.page_size(None), DEFAULT_PAGE_SIZE);
        assert_eq!(cluster.page_size(Some(7)), 7);
        let flagged = parse(&["--cluster", "--page-size", "3"]);
        assert_eq!(flagged.page_size(Some(7)), 3);
        assert_eq!(parse(&["--cluster", "--page-size", "0"]).page_size(None), 1);
    }

    /// Files or the cluster: one of them, never both.
    #[test]
    fn files_and_cluster_exclude_each_other() {
        let argv = |args: &[&'static str]| {
            Cli::try_parse_from(std::iter::once("regate").chain(args.iter().copied()))
        };
        assert!(argv(&[]).is_err());
        assert!(argv(&["-f", "x.yaml", "--cluster"]).is_err());
        assert_eq!(
            parse(&["-f", "x.yaml"]).files,
            vec![PathBuf::from("x.yaml")]
        );
    }
}
