//! `regate bench policies`: every fixture through the decision path, in process, many times.
//!
//! Per fixture it times the parse ([`Review::from_slice`]: the body straight into the value
//! policies read) and the judgement ([`judge`]: every matching policy); per policy, the
//! evaluation of that policy alone
//! as `judge` measures it (the `timings` of each [`Decision`](crate::admission::decision::Decision)).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admission::decision::judge;
use crate::admission::review::Review;
use crate::config::Environment;
use crate::policy::eval::Wants;
use crate::policy::set::PolicySet;

use super::fixtures::Fixture;
use super::stats::Samples;
use super::BenchError;

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Timed passes over the whole mix.
    pub iterations: usize,
    /// Untimed passes first (each thread's engines, caches, the allocator).
    pub warmup: usize,
    pub wants: Wants,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub evaluations: u64,
    pub mean_us: f64,
    pub p99_us: f64,
    pub per_second: f64,
}

/// A policy's row, with what a comparison needs to run the same evaluation elsewhere.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyRow {
    #[serde(flatten)]
    pub row: Row,
    pub file: String,
    pub package: String,
    pub compiled: bool,
    /// The output rules evaluated, as the endpoint asks for them.
    pub rules: Vec<&'static str>,
    /// Parameters per environment, as the policy sees them in `data.regate.parameters`.
    pub parameters: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FixtureRow {
    #[serde(flatten)]
    pub row: Row,
    pub kind: String,
    pub environment: String,
    pub policies: Vec<String>,
    pub parse_mean_us: f64,
    pub allowed: bool,
    /// The policies whose evaluation failed on it (a runtime error, the time limit): what
    /// `bench/opa_gatekeeper.py` sets against OPA's evaluation errors.
    pub failed: Vec<String>,
}

/// Mean time of one policy on one fixture.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub policy: String,
    pub fixture: String,
    pub environment: String,
    pub mean_us: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub strategy: &'static str,
    pub iterations: usize,
    pub fixtures: Vec<FixtureRow>,
    pub policies: Vec<PolicyRow>,
    pub pairs: Vec<Pair>,
    /// The whole mix, judged once per fixture: mean and p99 per fixture, fixtures per second.
    pub mix: Row,
    /// Fixtures whose decision differs from `expected.yaml`.
    pub mismatches: Vec<String>,
}

fn row(name: &str, samples: &mut Samples) -> Row {
    let n = samples.len() as u64;
    let s = samples.summary();
    Row {
        name: name.to_string(),
        evaluations: n,
        mean_us: s.mean_ms * 1e3,
        p99_us: s.p99_ms * 1e3,
        per_second: if s.mean_ms > 0.0 {
            1e3 / s.mean_ms
        } else {
            0.0
        },
    }
}

fn mean_us(total: Duration, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        total.as_secs_f64() * 1e6 / n as f64
    }
}

/// A fixture's decision, taken from its first pass.
#[derive(Debug, Clone)]
struct FirstDecision {
    allowed: bool,
    environment: Environment,
    evaluated: Vec<String>,
    failed: Vec<String>,
}

/// What the timed passes gather.
struct Acc {
    judged: Vec<Samples>,
    parsed: Vec<Duration>,
    per_policy: BTreeMap<String, Samples>,
    per_pair: BTreeMap<(String, usize), (Duration, u64)>,
    mix: Samples,
    first: Vec<Option<FirstDecision>>,
}

impl Acc {
    /// One pass over every fixture: parse (timed, then dropped) and judge.
    #[inline(always)]
    fn pass(
        &mut self,
        set: &PolicySet,
        fixtures: &[Fixture],
        reviews: &[Review],
        wants: Wants,
        timed: bool,
    ) {
        for (i, fixture) in fixtures.iter().enumerate() {
            let t = Instant::now();
            let review = Review::from_slice(&fixture.body);
            let parse = t.elapsed();
            drop(review);
            let t = Instant::now();
            let decision = judge(set, &reviews[i], wants);
            let elapsed = t.elapsed();
            if self.first[i].is_none() {
                self.first[i] = Some(FirstDecision {
                    allowed: decision.allowed,
                    environment: decision.environment,
                    evaluated: decision.evaluated.clone(),
                    failed: decision.failures.iter().map(|f| f.policy.clone()).collect(),
                });
            }
            if !timed {
                continue;
            }
            self.parsed[i] += parse;
            self.judged[i].push(elapsed);
            self.mix.push(elapsed);
            for (policy, d) in &decision.timings {
                self.per_policy.entry(policy.clone()).or_default().push(*d);
                let e = self
                    .per_pair
                    .entry((policy.clone(), i))
                    .or_insert((Duration::ZERO, 0));
                e.0 += *d;
                e.1 += 1;
            }
        }
    }
}

/// A warm-up pass. Separate from [`timed_pass`] so that `valgrind --tool=callgrind
/// --toggle-collect='*timed_pass*'` counts the timed passes only (`bench/callgrind.sh`).
#[inline(never)]
fn warmup_pass(
    acc: &mut Acc,
    set: &PolicySet,
    fixtures: &[Fixture],
    reviews: &[Review],
    wants: Wants,
) {
    acc.pass(set, fixtures, reviews, wants, false);
}

#[inline(never)]
fn timed_pass(
    acc: &mut Acc,
    set: &PolicySet,
    fixtures: &[Fixture],
    reviews: &[Review],
    wants: Wants,
) {
    acc.pass(set, fixtures, reviews, wants, true);
}

/// Runs the benchmark. Fixtures that are not valid AdmissionReviews are an error.
pub fn run(set: &PolicySet, fixtures: &[Fixture], opts: &Options) -> Result<Report, BenchError> {
    let reviews: Vec<Review> = fixtures
        .iter()
        .map(|f| {
            Review::from_slice(&f.body).map_err(|e| BenchError::Fixture {
                path: f.name.clone().into(),
                message: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    let n = fixtures.len();
    let mut acc = Acc {
        judged: (0..n)
            .map(|_| Samples::with_capacity(opts.iterations))
            .collect(),
        parsed: vec![Duration::ZERO; n],
        per_policy: BTreeMap::new(),
        per_pair: BTreeMap::new(),
        mix: Samples::with_capacity(opts.iterations * n),
        first: vec![None; n],
    };
    for _ in 0..opts.warmup {
        warmup_pass(&mut acc, set, fixtures, &reviews, opts.wants);
    }
    for _ in 0..opts.iterations {
        timed_pass(&mut acc, set, fixtures, &reviews, opts.wants);
    }
    let Acc {
        mut judged,
        parsed,
        mut per_policy,
        per_pair,
        mut mix,
        first,
    } = acc;

    let mut mismatches = Vec::new();
    let mut fixture_rows = Vec::with_capacity(n);
    for (i, fixture) in fixtures.iter().enumerate() {
        let FirstDecision {
            allowed,
            environment,
            evaluated: policies,
            failed,
        } = first[i].clone().unwrap_or(FirstDecision {
            allowed: true,
            environment: Environment::Production,
            evaluated: Vec::new(),
            failed: Vec::new(),
        });
        if opts.wants.validate {
            if let Some(expected) = fixture.expected_allowed {
                if expected != allowed {
                    mismatches.push(format!(
                        "{}: allowed={allowed}, expected {expected}",
                        fixture.name
                    ));
                }
            }
        }
        let timed = judged[i].len() as u64;
        fixture_rows.push(FixtureRow {
            row: row(&fixture.name, &mut judged[i]),
            kind: fixture.kind.clone(),
            environment: environment.as_str().to_string(),
            policies,
            parse_mean_us: mean_us(parsed[i], timed),
            allowed,
            failed,
        });
    }
    let compiled = set.compiled_policies();
    let mut policy_rows = Vec::new();
    for policy in &set.policies {
        let Some(samples) = per_policy.get_mut(policy.id()) else {
            continue;
        };
        let parameters = Environment::ALL
            .iter()
            .map(|env| {
                (
                    env.as_str().to_string(),
                    policy.parameters[env.index()].clone(),
                )
            })
            .collect();
        policy_rows.push(PolicyRow {
            row: row(policy.id(), samples),
            file: policy.file.clone(),
            package: policy.package.clone(),
            compiled: compiled.iter().any(|c| *c == policy.id()),
            rules: [
                (
                    opts.wants.validate && policy.rules.deny,
                    policy.flavor.deny_rule(),
                ),
                (opts.wants.validate && policy.rules.warn, "warn"),
                (opts.wants.mutate && policy.rules.patch, "patch"),
            ]
            .into_iter()
            .filter_map(|(on, rule)| on.then_some(rule))
            .collect(),
            parameters,
        });
    }
    let pairs = per_pair
        .into_iter()
        .map(|((policy, i), (total, count))| Pair {
            policy,
            fixture: fixtures[i].name.clone(),
            environment: fixture_rows[i].environment.clone(),
            mean_us: mean_us(total, count),
        })
        .collect();
    Ok(Report {
        strategy: set.strategy().as_str(),
        iterations: opts.iterations,
        mix: row("mix", &mut mix),
        fixtures: fixture_rows,
        policies: policy_rows,
        pairs,
        mismatches,
    })
}

impl Report {
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "evaluation strategy: {}; {} timed pass(es) over {} fixture(s)\n",
            self.strategy,
            self.iterations,
            self.fixtures.len()
        );
        let _ = writeln!(
            out,
            "{:<44} {:>10} {:>10} {:>10} {:>12}",
            "POLICY", "EVALS", "MEAN µs", "P99 µs", "EVALS/S"
        );
        for p in &self.policies {
            let r = &p.row;
            let name = if p.compiled {
                r.name.clone()
            } else {
                format!("{} (interpreted)", r.name)
            };
            let _ = writeln!(
                out,
                "{:<44} {:>10} {:>10.2} {:>10.2} {:>12.0}",
                name, r.evaluations, r.mean_us, r.p99_us, r.per_second
            );
        }
        let _ = writeln!(
            out,
            "\n{:<44} {:>8} {:>10} {:>10} {:>12} {:>10}",
            "FIXTURE (judge: matching policies)",
            "POLICIES",
            "MEAN µs",
            "P99 µs",
            "PER S",
            "PARSE µs"
        );
        for f in &self.fixtures {
            let r = &f.row;
            let _ = writeln!(
                out,
                "{:<44} {:>8} {:>10.2} {:>10.2} {:>12.0} {:>10.2}",
                r.name,
                f.policies.len(),
                r.mean_us,
                r.p99_us,
                r.per_second,
                f.parse_mean_us
            );
        }
        let parse: f64 = self.fixtures.iter().map(|f| f.parse_mean_us).sum::<f64>()
            / self.fixtures.len().max(1) as f64;
        let _ = writeln!(
            out,
            "\nmix: judge mean {:.2} µs, p99 {:.2} µs ({:.0} reviews/s per core); parse mean {:.2} µs",
            self.mix.mean_us, self.mix.p99_us, self.mix.per_second, parse
        );
        if self.mismatches.is_empty() {
            let _ = writeln!(out, "decisions: all as expected");
        } else {
            let _ = writeln!(out, "decisions NOT as expected:");
            for m in &self.mismatches {
                let _ = writeln!(out, "  {m}");
            }
        }
        out
    }
}
