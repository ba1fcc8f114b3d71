//! Evaluating one compiled policy against one input: the only place regate calls regorus on the
//! request path.

use std::time::{Duration, Instant};

use regorus::{LimitError, Value};

use crate::config::Environment;
use crate::policy::allowance;
use crate::policy::compiled::CompiledPolicy;
use crate::policy::flavor::Flavor;
use crate::policy::patch::AddOp;

/// Which output rules the caller needs: `/validate` needs no patch, `/mutate` no deny or warn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    pub validate: bool,
    pub mutate: bool,
}

impl Wants {
    pub const VALIDATE: Wants = Wants {
        validate: true,
        mutate: false,
    };
    pub const MUTATE: Wants = Wants {
        validate: false,
        mutate: true,
    };
    pub const ALL: Wants = Wants {
        validate: true,
        mutate: true,
    };
}

/// One `deny` or `warn` result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RuleItem {
    pub msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    RuntimeError,
    TimeLimit,
    /// Stopped by the memory limits of `policy::memory`.
    MemoryLimit,
    InvalidOutput,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::RuntimeError => "runtime_error",
            FailureReason::TimeLimit => "time_limit",
            FailureReason::MemoryLimit => "memory_limit",
            FailureReason::InvalidOutput => "invalid_output",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            FailureReason::RuntimeError => "runtime error",
            FailureReason::TimeLimit => "evaluation time limit exceeded",
            FailureReason::MemoryLimit => "evaluation memory limit exceeded",
            FailureReason::InvalidOutput => "invalid rule output",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EvalFailure {
    pub reason: FailureReason,
    /// The engine's message; withheld (empty) when the object is a Secret, since an error
    /// message may quote the value that caused it.
    pub detail: String,
}

/// What one policy said about one input.
#[derive(Debug, Clone, Default)]
pub struct PolicyOutput {
    pub deny: Vec<RuleItem>,
    pub warn: Vec<RuleItem>,
    pub patch: Vec<AddOp>,
    pub failure: Option<EvalFailure>,
    pub duration: Duration,
    /// What `print()` wrote during this evaluation ("file:line: text"), drained from the engine
    /// so that it never reaches stderr and never piles up in a reused engine.
    pub prints: Vec<String>,
}

/// Evaluates `policy` for `env` on `input`, within `limit` (the time limit its engine was
/// built with). `redact` withholds engine error text (Secrets).
pub fn evaluate(
    policy: &CompiledPolicy,
    env: Environment,
    input: &Value,
    wants: Wants,
    redact: bool,
    limit: Duration,
) -> PolicyOutput {
    let started = Instant::now();
    let mut engine = policy.engine(env).clone();
    evaluate_with(&mut engine, policy, input, wants, redact, started, limit)
}

/// What evaluation needs from an engine: the interpreter (`regorus::Engine`), or a compiled
/// program on regorus's VM (`crate::policy::bytecode`).
pub(crate) trait Evaluator {
    fn set_input(&mut self, input: Value);
    fn eval_rule(&mut self, path: String) -> anyhow::Result<Value>;
    /// Sets the time limit of the evaluations that follow.
    fn set_time_limit(&mut self, limit: Duration);
    /// Drains what `print()` gathered (regorus's bytecode has no `print`: nothing).
    fn take_prints(&mut self) -> Vec<String> {
        Vec::new()
    }
}

impl Evaluator for regorus::Engine {
    fn set_input(&mut self, input: Value) {
        regorus::Engine::set_input(self, input)
    }

    fn eval_rule(&mut self, path: String) -> anyhow::Result<Value> {
        regorus::Engine::eval_rule(self, path)
    }

    fn set_time_limit(&mut self, limit: Duration) {
        self.set_execution_timer_config(crate::policy::compiled::timer(limit));
    }

    fn take_prints(&mut self) -> Vec<String> {
        regorus::Engine::take_prints(self).unwrap_or_default()
    }
}

/// [`evaluate`] on a given engine; `started` is when the caller began (its duration counts).
/// `limit` is the engine's own time limit; an allowance that ends sooner (`policy::allowance`)
/// shortens it for this evaluation only.
pub(crate) fn evaluate_with<E: Evaluator>(
    engine: &mut E,
    policy: &CompiledPolicy,
    input: &Value,
    wants: Wants,
    redact: bool,
    started: Instant,
    limit: Duration,
) -> PolicyOutput {
    let shorter = allowance::shorter_limit(limit);
    if let Some(shorter) = shorter {
        engine.set_time_limit(shorter);
    }
    // A plugged-in flavor reads its own input (built from regate's) and names its own rule.
    let deny_rule = match &policy.flavor {
        Flavor::Native => {
            engine.set_input(input.clone());
            "deny"
        }
        Flavor::Plugged(plugged) => {
            engine.set_input(plugged.input(input));
            plugged.deny_rule()
        }
    };
    let mut out = PolicyOutput::default();
    let mut rules: Vec<&str> = Vec::with_capacity(3);
    if wants.validate && policy.rules.deny {
        rules.push(deny_rule);
    }
    if wants.validate && policy.rules.warn {
        rules.push("warn");
    }
    if wants.mutate && policy.rules.patch {
        rules.push("patch");
    }
    for rule in rules {
        let value = match engine.eval_rule(format!("{}.{rule}", policy.package)) {
            Ok(v) => v,
            Err(e) => {
                out.failure = Some(failure_of(&e, redact));
                break;
            }
        };
        let items = match collection_items(&value) {
            Ok(items) => items,
            Err(what) => {
                out.failure = Some(EvalFailure {
                    reason: FailureReason::InvalidOutput,
                    detail: format!("{rule} must be a set of messages, got {what}"),
                });
                break;
            }
        };
        for item in items {
            let parsed = if rule == "patch" {
                parse_patch(item).map(|op| out.patch.push(op))
            } else {
                parse_item(item).map(|i| {
                    if rule == "warn" {
                        out.warn.push(i)
                    } else {
                        out.deny.push(i)
                    }
                })
            };
            if let Err(detail) = parsed {
                out.failure = Some(EvalFailure {
                    reason: FailureReason::InvalidOutput,
                    detail: format!("{rule}: {detail}"),
                });
            }
        }
    }
    out.prints = engine.take_prints();
    if shorter.is_some() {
        // The engine may be reused, by a judgement that has its full time.
        engine.set_time_limit(limit);
        if out
            .failure
            .as_ref()
            .is_some_and(|f| f.reason == FailureReason::TimeLimit)
        {
            allowance::overran();
        }
    }
    out.duration = started.elapsed();
    out
}

fn failure_of(error: &anyhow::Error, redact: bool) -> EvalFailure {
    let is_time = error.chain().any(|e| {
        matches!(
            e.downcast_ref::<LimitError>(),
            Some(LimitError::TimeLimitExceeded { .. })
        )
    }) || error.to_string().contains("time limit");
    let reason = if is_time {
        FailureReason::TimeLimit
    } else if crate::policy::memory::is_memory_limit(error) {
        FailureReason::MemoryLimit
    } else {
        FailureReason::RuntimeError
    };
    let detail = if redact {
        String::new()
    } else {
        // regorus's whole message, location first (its first lines are only the excerpt's
        // frame), bounded.
        let mut whole = String::new();
        for cause in error.chain() {
            let part = cause.to_string();
            if !whole.contains(&part) {
                whole.push_str(&part);
                whole.push('\n');
            }
        }
        let text = crate::policy::rego_error::located(&whole);
        text.chars().take(800).collect()
    };
    EvalFailure { reason, detail }
}

fn collection_items(value: &Value) -> Result<Vec<&Value>, &'static str> {
    match value {
        Value::Undefined => Ok(Vec::new()),
        Value::Set(set) => Ok(set.iter().collect()),
        Value::Array(items) => Ok(items.iter().collect()),
        Value::Bool(_) => Err("a boolean"),
        Value::Null => Ok(Vec::new()),
        Value::String(_) => Err("a string"),
        Value::Number(_) => Err("a number"),
        Value::Object(_) => Err("an object"),
    }
}

fn to_json(value: &Value) -> serde_json::Value {
    if matches!(value, Value::Undefined) {
        return serde_json::Value::Null;
    }
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

fn parse_item(value: &Value) -> Result<RuleItem, String> {
    match value {
        Value::String(s) => Ok(RuleItem {
            msg: s.to_string(),
            path: None,
            details: None,
        }),
        Value::Object(_) => {
            let json = to_json(value);
            let msg = json
                .get("msg")
                .or_else(|| json.get("message"))
                .and_then(|m| m.as_str())
                .ok_or("an object result needs a string msg")?
                .to_string();
            let path = json
                .get("path")
                .and_then(|p| p.as_str())
                .map(str::to_string);
            let details = json.get("details").cloned();
            Ok(RuleItem { msg, path, details })
        }
        other => Ok(RuleItem {
            msg: to_json(other).to_string(),
            path: None,
            details: None,
        }),
    }
}

fn parse_patch(value: &Value) -> Result<AddOp, String> {
    AddOp::from_json(&to_json(value)).map_err(|e| e.to_string())
}
