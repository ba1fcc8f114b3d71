//! `regate bench`: `policies` (in process), `load` (over TLS), `echo-server` (the floor).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::bench::{echo, fixtures, load, policies};
use crate::cli::{EvalStrategy, PolicyArgs};
use crate::policy::bytecode;
use crate::policy::eval::Wants;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Evaluate each fixture in process many times: mean and p99 per policy and per fixture.
    Policies(PoliciesArgs),
    /// Send AdmissionReviews to a webhook over TLS: open loop (--rate) or closed loop (--concurrency).
    Load(LoadArgs),
    /// Serve the webhook's TLS and HTTP stack with no policy evaluation: the floor to compare with.
    EchoServer(EchoArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EndpointArg {
    Validate,
    Mutate,
    Both,
}

#[derive(Debug, Args)]
pub struct PoliciesArgs {
    /// AdmissionReview fixtures: a directory of *.json (with expected.yaml) or one file.
    /// Default: fixtures/bench, else fixtures/admission.
    #[arg(short = 'f', long = "fixtures")]
    pub fixtures: Option<PathBuf>,
    /// Timed passes over the fixtures.
    #[arg(long, default_value_t = 500)]
    pub iterations: usize,
    /// Untimed passes first.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Which output rules to evaluate, as the endpoint would.
    #[arg(long, value_enum, default_value = "validate")]
    pub endpoint: EndpointArg,
    /// How policies are evaluated; the same as the global `--eval-strategy` (default: grouped).
    #[arg(long, value_enum)]
    pub strategy: Option<EvalStrategy>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Webhook URL; the path chooses the endpoint.
    #[arg(long, default_value = "https://127.0.0.1:8443/validate")]
    pub target: String,
    /// CA bundle (PEM) that signed the server's certificate.
    #[arg(long, default_value = "certs/ca.crt")]
    pub ca: PathBuf,
    /// Use h2 instead of HTTP/1.1 keep-alive connections.
    #[arg(long)]
    pub http2: bool,
    /// Open loop: requests per second, latency from each request's scheduled send time.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop: requests in flight (the maximum throughput). Default when no --rate: 16.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Measured time, e.g. 10s, 500ms, 1m.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Sent first and not measured (errors still count).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Connections opened before the clock starts (open loop), or shared by h2 workers.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Most connections the open loop opens when all are busy (HTTP/1.1).
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Check only the uid of each answer, not its decision (the echo server allows everything).
    #[arg(long)]
    pub any_decision: bool,
    /// A request unanswered after this long is an error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// AdmissionReview fixtures, sent round-robin. Default: fixtures/bench, else fixtures/admission.
    #[arg(short = 'f', long = "fixtures")]
    pub fixtures: Option<PathBuf>,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct EchoArgs {
    #[arg(long, default_value = "127.0.0.1:8444")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "certs/tls.crt")]
    pub tls_cert: PathBuf,
    #[arg(long, default_value = "certs/tls.key")]
    pub tls_key: PathBuf,
}

/// `10s`, `250ms`, `1m`, `1.5s`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 10s, 500ms or 1m"))?;
    let secs = match unit {
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(args: BenchArgs) -> anyhow::Result<i32> {
    match args.command {
        BenchCommand::Policies(a) => run_policies(a),
        BenchCommand::Load(a) => run_load(a),
        BenchCommand::EchoServer(a) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(echo::run(echo::EchoOptions {
                listen: a.listen,
                tls_cert: a.tls_cert,
                tls_key: a.tls_key,
            }))?;
            Ok(0)
        }
    }
}

fn run_policies(a: PoliciesArgs) -> anyhow::Result<i32> {
    if let Some(strategy) = a.strategy {
        bytecode::set_strategy(strategy.into());
    }
    let path = a.fixtures.clone().unwrap_or_else(fixtures::default_path);
    let fixtures = fixtures::load(&path)?;
    let set = a
        .policy
        .build_set(None)
        .context("building the policy set")?;
    let wants = match a.endpoint {
        EndpointArg::Validate => Wants::VALIDATE,
        EndpointArg::Mutate => Wants::MUTATE,
        EndpointArg::Both => Wants::ALL,
    };
    let report = policies::run(
        &set,
        &fixtures,
        &policies::Options {
            iterations: a.iterations.max(1),
            warmup: a.warmup,
            wants,
        },
    )?;
    match a.output {
        Output::Text => print!("{}", report.text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(if report.mismatches.is_empty() { 0 } else { 1 })
}

fn run_load(a: LoadArgs) -> anyhow::Result<i32> {
    let path = a.fixtures.clone().unwrap_or_else(fixtures::default_path);
    let fixtures = fixtures::load(&path)?;
    let mode = match (a.rate, a.concurrency) {
        (Some(r), _) => {
            anyhow::ensure!(
                r.is_finite() && r > 0.0,
                "--rate must be a positive number of requests per second"
            );
            load::Mode::Rate(r)
        }
        (None, c) => load::Mode::Concurrency(c.unwrap_or(16).max(1)),
    };
    let opts = load::LoadOptions {
        target: a.target,
        ca: a.ca,
        http2: a.http2,
        mode,
        duration: a.duration,
        warmup: a.warmup,
        connections: a.connections,
        max_connections: a.max_connections,
        timeout: a.timeout,
        check_decision: !a.any_decision,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(load::run(opts, fixtures))?;
    match a.output {
        Output::Text => print!("{}", report.text()),
        Output::Json => println!("{}", serde_json::to_string(&report)?),
    }
    Ok(if report.errors == 0 { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("ten").is_err());
    }
}
