//! The command line: one file per subcommand. `anyhow` lives here and in `main.rs` only.

pub mod audit;
pub mod bench;
pub mod certs;
pub mod check;
pub mod completions;
pub mod diff;
pub mod eval;
mod eval_report;
pub mod eval_result;
pub mod new;
mod objects;
pub mod serve;
pub mod test;
pub mod verify;

use std::path::{Path, PathBuf};
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
    /// Memory one evaluation on the bytecode VM may build, in MiB, before it is stopped and its
    /// policy fails (default 128; 0: no budget).
    #[arg(
        long,
        global = true,
        env = "REGATE_EVALUATION_MEMORY_MIB",
        value_name = "MIB"
    )]
    pub evaluation_memory_mib: Option<u64>,
    /// Memory the process may hold while it evaluates, in MiB, beyond the request bodies its
    /// body budgets hold: past it, every evaluation (on either backend) stops and its policy
    /// fails (default: half the cgroup's memory limit, else half the machine's memory; the
    /// bodies raise it to three quarters at most; 0: no ceiling).
    #[arg(
        long,
        global = true,
        env = "REGATE_MEMORY_CEILING_MIB",
        value_name = "MIB"
    )]
    pub memory_ceiling_mib: Option<u64>,
}

/// `--eval-strategy`: see [`crate::policy::bytecode::Strategy`].
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

impl From<EvalStrategy> for crate::policy::bytecode::Strategy {
    fn from(s: EvalStrategy) -> Self {
        use crate::policy::bytecode::Strategy;
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
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),
    /// Start something new: `regate new policy <id>` writes a policy, its tests and a case.
    New(new::NewArgs),
}

/// An error's message with its causes, each said once: thiserror types already include their
/// source in their message, and anyhow's chain would repeat it.
pub fn error_message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

/// Whether the error is standard output's reader having gone away (`regate … | head`).
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Where policies and config come from: shared by every subcommand that evaluates.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// Policy directory [default: policies/ when it exists, else the embedded default
    /// policies]. A directory named here must exist.
    #[arg(long, env = "REGATE_POLICIES")]
    pub policies: Option<PathBuf>,
    /// Serve the embedded default policies as well as those in --policies.
    #[arg(long, env = "REGATE_INCLUDE_DEFAULTS", default_value_t = false)]
    pub include_defaults: bool,
    /// regate.yaml.
    #[arg(long, env = "REGATE_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The policy directory used when none is named.
pub const DEFAULT_POLICY_DIR: &str = "policies";

/// The directory a command reads: the one the user named, which must exist, or `policies/`
/// (absent: the embedded defaults).
pub fn policy_dir(named: Option<&Path>) -> anyhow::Result<PathBuf> {
    match named {
        Some(dir) if !dir.exists() => {
            anyhow::bail!("policy directory {}: no such directory", dir.display())
        }
        Some(dir) => Ok(dir.to_path_buf()),
        None => Ok(PathBuf::from(DEFAULT_POLICY_DIR)),
    }
}

/// Says on standard error which policies a command judges with, so that a run on the
/// embedded defaults is never mistaken for a run on the author's files.
pub fn announce_policies(set: &PolicySet, dirs: &[PathBuf]) {
    let count = set.policies.len();
    let policies = if count == 1 { "policy" } else { "policies" };
    let dirs = dirs
        .iter()
        .filter(|d| d.exists())
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>();
    if dirs.is_empty() {
        eprintln!(
            "regate: {count} embedded default {policies} (no {DEFAULT_POLICY_DIR}/ directory here)"
        );
    } else if set.uses_embedded {
        eprintln!(
            "regate: {count} {policies} from {} and the embedded defaults",
            dirs.join(", ")
        );
    } else {
        eprintln!("regate: {count} {policies} from {}", dirs.join(", "));
    }
}

impl PolicyArgs {
    /// Where the set comes from; an error when `--policies` names a directory that does not
    /// exist.
    pub fn sources(&self) -> anyhow::Result<crate::policy::reload::PolicySources> {
        Ok(crate::policy::reload::PolicySources {
            dir: policy_dir(self.policies.as_deref())?,
            include_defaults: self.include_defaults,
            config: self.config.clone(),
            yaml_loader: crate::catalog::YAML_LOADERS,
        })
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
        let dir = policy_dir(self.policies.as_deref())?;
        let (sources, _) = source::resolve(&dir, self.include_defaults)
            .with_context(|| format!("loading policies from {}", dir.display()))?;
        let set = crate::catalog::build(&sources, Arc::new(config), NamespaceLabels::default())?;
        announce_policies(&set, &[dir]);
        Ok(set)
    }
}

pub fn parse_environment(s: &str) -> Result<Environment, String> {
    s.parse()
}
