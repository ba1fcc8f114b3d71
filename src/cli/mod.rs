//! The command line: one file per subcommand. `anyhow` lives here and in `main.rs` only.

pub mod audit;
pub mod bench;
pub mod certs;
pub mod check;
pub mod diff;
pub mod eval;
pub mod serve;
pub mod test;
pub mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, Environment};
use crate::environment::NamespaceLabels;
use crate::policy::set::PolicySet;
use crate::policy::source;

#[derive(Debug, Parser)]
#[command(
    name = "regate",
    version,
    about = "Kubernetes policy-as-code admission webhook: Rego policies on every kubectl apply"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format; json by default when stderr is not a terminal.
    #[arg(long, global = true, env = "REGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level or filter (e.g. info, regate=debug); RUST_LOG also works.
    #[arg(long, global = true, env = "REGATE_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// How policies are evaluated, for benchmarks and comparisons (default: grouped). Every
    /// strategy gives the same decisions; an unknown value is an error.
    #[arg(long, global = true, env = "REGATE_EVAL_STRATEGY", value_enum)]
    pub eval_strategy: Option<EvalStrategy>,
}

/// `--eval-strategy`: see [`crate::policy::fast::Strategy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvalStrategy {
    /// Bytecode wherever it is proven equal, and policies with the same kinds and data in one
    /// pass of one program (what `serve` does by default).
    #[value(alias = "auto")]
    Grouped,
    /// Bytecode wherever it is proven equal, one program per policy.
    #[value(alias = "rvm")]
    Compiled,
    /// The interpreter only, with per-thread engines.
    Interpreter,
    /// A fresh clone of the primed interpreter engine per evaluation.
    Clone,
}

impl From<EvalStrategy> for crate::policy::fast::Strategy {
    fn from(s: EvalStrategy) -> Self {
        use crate::policy::fast::Strategy;
        match s {
            EvalStrategy::Grouped => Strategy::Grouped,
            EvalStrategy::Compiled => Strategy::Compiled,
            EvalStrategy::Interpreter => Strategy::Interpreter,
            EvalStrategy::Clone => Strategy::CloneEach,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the admission webhook over HTTPS.
    Serve(serve::ServeArgs),
    /// Judge manifests exactly as the server would.
    Eval(eval::EvalArgs),
    /// What a policy change changes: two policy sets judge the same objects.
    Diff(diff::DiffArgs),
    /// Parse and compile every policy, check metadata and regate.yaml.
    Check(check::CheckArgs),
    /// List the loaded policies with their effective action per environment.
    Policies(check::CheckArgs),
    /// Run Rego unit tests and YAML policy cases.
    Test(test::TestArgs),
    /// Report what existing objects (files or a live cluster) violate.
    Audit(audit::AuditArgs),
    /// Run Gatekeeper test suites (as `gator verify`).
    Verify(verify::VerifyArgs),
    /// Benchmarks: policies in-process, load over TLS, the echo floor.
    Bench(bench::BenchArgs),
    /// Certificate tools.
    Certs(certs::CertsArgs),
}

/// Where policies and config come from: shared by every subcommand that evaluates.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Policy directory; when it does not exist, the embedded default policies are used.
    #[arg(long, env = "REGATE_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// Serve the embedded default policies as well as those in --policies.
    #[arg(long, env = "REGATE_INCLUDE_DEFAULTS", default_value_t = false)]
    pub include_defaults: bool,
    /// regate.yaml.
    #[arg(long, env = "REGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

impl PolicyArgs {
    pub fn sources(&self) -> crate::policy::reload::PolicySources {
        crate::policy::reload::PolicySources {
            dir: self.policies.clone(),
            include_defaults: self.include_defaults,
            config: self.config.clone(),
        }
    }

    pub fn load_config(&self) -> anyhow::Result<Config> {
        match &self.config {
            Some(path) => Ok(Config::load(path)?),
            None => Ok(Config::default()),
        }
    }

    /// Builds the policy set as `serve` would, with an optional environment forced for every
    /// namespace.
    pub fn build_set(&self, environment: Option<Environment>) -> anyhow::Result<PolicySet> {
        let mut config = self.load_config()?;
        if let Some(env) = environment {
            config.environments.default = env;
            config.environments.namespaces =
                crate::config::indexmap_like::OrderedMap(vec![("*".to_string(), env)]);
        }
        let (sources, _) = source::resolve(&self.policies, self.include_defaults)
            .with_context(|| format!("loading policies from {}", self.policies.display()))?;
        let set = PolicySet::build(&sources, Arc::new(config), NamespaceLabels::default())?;
        Ok(set)
    }
}

pub fn parse_environment(s: &str) -> Result<Environment, String> {
    s.parse()
}
