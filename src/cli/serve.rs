//! `regate serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use tracing::info;

use crate::cli::PolicyArgs;
use crate::rollout::shadow::ShadowConfig;
use crate::server::{Server, ServerConfig};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// HTTPS address for the webhook.
    #[arg(long, env = "REGATE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Plain-HTTP address for /metrics, /healthz and /readyz ("off" to disable).
    #[arg(long, env = "REGATE_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: String,
    /// Serving certificate (PEM). With neither --tls-cert nor --tls-key and no files at the
    /// defaults, a development CA and certificate are generated into certs/.
    #[arg(long, env = "REGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(long, env = "REGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Extra DNS names for a generated development certificate.
    #[arg(long = "dns", env = "REGATE_DNS", value_delimiter = ',')]
    pub dns: Vec<String>,
    /// Require client certificates signed by this CA (PEM) on the webhook port.
    #[arg(long, env = "REGATE_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Follow namespace labels from the cluster (auto: when running in a cluster).
    #[arg(long, env = "REGATE_WATCH_NAMESPACES", default_value = "auto")]
    pub watch_namespaces: String,
    /// What the webhook configurations send: `chart-defaults`, `all` (the chart's
    /// webhook.allResources), the rules as YAML/JSON (`{validating: [...], mutating: [...]}`,
    /// as the chart passes them) or a file holding them. Policies on kinds they leave out are
    /// named at startup and in /readyz?verbose.
    #[arg(long, env = "REGATE_WEBHOOK_RULES", default_value = "chart-defaults")]
    pub webhook_rules: String,
    /// A candidate policy directory judged in the shadow of the enforced one: every sampled
    /// request is judged by it after it is answered, and disagreements are counted and logged.
    #[arg(long, env = "REGATE_SHADOW_POLICIES")]
    pub shadow_policies: Option<PathBuf>,
    /// regate.yaml of the candidate (default: none).
    #[arg(long, env = "REGATE_SHADOW_CONFIG", requires = "shadow_policies")]
    pub shadow_config: Option<PathBuf>,
    /// Share of requests the candidate judges, 0 to 1.
    #[arg(long, env = "REGATE_SHADOW_SAMPLE_RATE", default_value_t = 1.0)]
    pub shadow_sample_rate: f64,
    /// Requests waiting for the candidate at most; more are dropped and counted.
    #[arg(long, env = "REGATE_SHADOW_QUEUE", default_value_t = crate::rollout::shadow::DEFAULT_QUEUE)]
    pub shadow_queue: usize,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

const DEFAULT_CERT: &str = "certs/tls.crt";
const DEFAULT_KEY: &str = "certs/tls.key";

pub async fn run(args: ServeArgs) -> anyhow::Result<i32> {
    let (tls_cert, tls_key) = match (&args.tls_cert, &args.tls_key) {
        (None, None) => {
            let cert = PathBuf::from(DEFAULT_CERT);
            let key = PathBuf::from(DEFAULT_KEY);
            if !cert.exists() || !key.exists() {
                let generated =
                    crate::tls::certs::generate(&args.dns, &PathBuf::from("certs"), 365)
                        .context("generating a development certificate into certs/")?;
                info!(
                    ca_bundle = %generated.ca_path.display(),
                    cert = %generated.cert_path.display(),
                    "generated a development CA and server certificate; clients trust the CA bundle"
                );
            }
            (cert, key)
        }
        (Some(cert), Some(key)) => {
            for (flag, path) in [("--tls-cert", cert), ("--tls-key", key)] {
                std::fs::metadata(path)
                    .with_context(|| format!("{flag} {}: cannot read the file", path.display()))?;
            }
            (cert.clone(), key.clone())
        }
        (Some(_), None) => anyhow::bail!("--tls-cert was given without --tls-key"),
        (None, Some(_)) => anyhow::bail!("--tls-key was given without --tls-cert"),
    };
    let metrics_listen = match args.metrics_listen.as_str() {
        "off" | "" => None,
        addr => Some(addr.parse::<SocketAddr>().with_context(|| {
            format!("--metrics-listen {addr:?} is not an address like 0.0.0.0:9090")
        })?),
    };
    let watch_namespaces = match args.watch_namespaces.as_str() {
        "auto" => std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
        "true" | "on" => true,
        _ => false,
    };
    let config = ServerConfig {
        listen: args.listen,
        metrics_listen,
        tls_cert,
        tls_key,
        client_ca: args.client_ca.clone(),
        sources: args.policy.sources()?,
        watch: true,
        watch_namespaces,
    };
    let rules = crate::admission::webhook_rules::WebhookRules::from_arg(&args.webhook_rules)?;
    let shadow = args.shadow_policies.as_ref().map(|dir| ShadowConfig {
        sources: crate::policy::reload::PolicySources {
            dir: dir.clone(),
            include_defaults: false,
            config: args.shadow_config.clone(),
            yaml_loader: crate::catalog::YAML_LOADERS,
        },
        queue: args.shadow_queue,
        sample_rate: args.shadow_sample_rate,
    });
    let mut server = Server::with_shadow(config, shadow).await?;
    server.set_webhook_rules(rules);
    server.run().await?;
    Ok(0)
}
