//! The fast path behind [`PolicySet::evaluate`], invisible to callers: each worker thread keeps
//! its own engines, cloned once from the primed ones, and, for every policy regorus's compiler
//! accepts, runs its compiled bytecode (RVM) instead of the tree-walking interpreter.
//!
//! Everything cached here is keyed on the identity of the [`PolicySet`] it came from: a hot
//! reload builds a new set with a new identity, and a thread that meets it drops what it cached
//! for the old one. A policy the compiler rejects, a VM runtime error, or a set whose policies
//! no longer line up with what was compiled, all fall back to the interpreter, which stays the
//! reference.

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::Program;
use regorus::rvm::vm::RegoVM;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};
use tracing::{debug, info};

use crate::config::Environment;
use crate::policy::eval::{self, Evaluator, FailureReason, PolicyOutput, Wants};
use crate::policy::set::{CompiledPolicy, Flavor, PolicySet};

/// How policies are evaluated on the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Per-thread engines; compiled bytecode wherever regorus compiles the policy (the default).
    Compiled,
    /// Per-thread interpreter engines only.
    Interpreter,
    /// A fresh clone of the primed engine per evaluation, as before the fast path (benchmarks).
    CloneEach,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Compiled => "compiled",
            Strategy::Interpreter => "interpreter",
            Strategy::CloneEach => "clone",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "compiled" | "auto" | "rvm" => Some(Strategy::Compiled),
            "interpreter" => Some(Strategy::Interpreter),
            "clone" => Some(Strategy::CloneEach),
            _ => None,
        }
    }
}

/// 0: not chosen yet (read `REGATE_EVAL_STRATEGY` on first use).
static STRATEGY: AtomicU8 = AtomicU8::new(0);

fn encode(s: Strategy) -> u8 {
    match s {
        Strategy::Compiled => 1,
        Strategy::Interpreter => 2,
        Strategy::CloneEach => 3,
    }
}

/// Chooses the strategy for sets built from now on (`regate bench policies --strategy`). The
/// environment variable `REGATE_EVAL_STRATEGY` (compiled, interpreter, clone) sets it for `serve`.
pub fn set_strategy(s: Strategy) {
    STRATEGY.store(encode(s), Ordering::Relaxed);
}

pub fn strategy() -> Strategy {
    match STRATEGY.load(Ordering::Relaxed) {
        1 => Strategy::Compiled,
        2 => Strategy::Interpreter,
        3 => Strategy::CloneEach,
        _ => {
            let chosen = std::env::var("REGATE_EVAL_STRATEGY")
                .ok()
                .and_then(|v| Strategy::parse(v.trim()))
                .unwrap_or(Strategy::Compiled);
            STRATEGY.store(encode(chosen), Ordering::Relaxed);
            chosen
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a set adds for the fast path: its identity and each policy's compiled program.
#[derive(Debug)]
pub struct Accel {
    id: u64,
    strategy: Strategy,
    slots: Vec<Slot>,
    timeout: Duration,
}

/// A copy is another set as far as the per-thread caches go.
impl Clone for Accel {
    fn clone(&self) -> Self {
        Accel {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            strategy: self.strategy,
            slots: self.slots.clone(),
            timeout: self.timeout,
        }
    }
}

#[derive(Debug, Clone)]
struct Slot {
    /// The policy this slot was built for: a set whose policies were reordered after it was
    /// assembled is evaluated by the interpreter instead of with the wrong program.
    policy: String,
    program: Option<Arc<Compiled>>,
}

#[derive(Debug)]
struct Compiled {
    program: Arc<Program>,
    /// `data` per environment, as the interpreter's engines hold it.
    data: [Value; 3],
}

impl Accel {
    /// Compiles what can be compiled. Never fails: a policy the compiler rejects is interpreted.
    pub fn build(policies: &[CompiledPolicy], timeout: Duration) -> Accel {
        let strategy = strategy();
        let slots = policies
            .iter()
            .map(|policy| Slot {
                policy: policy.meta.id.clone(),
                program: if strategy == Strategy::Compiled {
                    match compile(policy) {
                        Ok(c) => Some(Arc::new(c)),
                        Err(reason) => {
                            info!(policy = %policy.meta.id, %reason, "policy not compiled to bytecode; it runs on the interpreter");
                            None
                        }
                    }
                } else {
                    None
                },
            })
            .collect();
        Accel {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            strategy,
            slots,
            timeout,
        }
    }

    /// Ids of the policies running as compiled bytecode.
    pub fn compiled(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.program.is_some())
            .map(|s| s.policy.as_str())
            .collect()
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }
}

/// The rule paths evaluation asks for, in the order `eval` asks for them.
fn entry_points(policy: &CompiledPolicy) -> Vec<String> {
    let deny = match policy.flavor {
        Flavor::Native => "deny",
        Flavor::Gatekeeper(_) => "violation",
    };
    let mut out = Vec::new();
    for (present, rule) in [
        (policy.rules.deny, deny),
        (policy.rules.warn, "warn"),
        (policy.rules.patch, "patch"),
    ] {
        if present {
            out.push(format!("{}.{rule}", policy.package));
        }
    }
    out
}

fn compile(policy: &CompiledPolicy) -> Result<Compiled, String> {
    let entries = entry_points(policy);
    let first = entries.first().ok_or("no output rule")?;
    let mut engine = policy.engine(Environment::Production).clone();
    let compiled = engine
        .compile_with_entrypoint(&first.as_str().into())
        .map_err(|e| first_line(&e.to_string()))?;
    let names: Vec<&str> = entries.iter().map(String::as_str).collect();
    let program = Compiler::compile_from_policy(&compiled, &names).map_err(|e| first_line(&e.to_string()))?;
    let data = Environment::ALL.map(|env| policy.engine(env).get_data());
    let compiled = Compiled { program, data };
    // A program must at least load its data: rule/data conflicts show up here, not per request.
    for env in Environment::ALL {
        new_vm(&compiled, env, Duration::from_secs(1)).map_err(|e| first_line(&e))?;
    }
    Ok(compiled)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).chars().take(300).collect()
}

/// Instructions between two reads of the clock for the time limit.
const TIMER_CHECK_INTERVAL: u32 = 64;

fn new_vm(compiled: &Compiled, env: Environment, timeout: Duration) -> Result<RegoVM, String> {
    let mut vm = RegoVM::new();
    vm.load_program(compiled.program.clone());
    vm.set_data(compiled.data[env.index()].clone()).map_err(|e| e.to_string())?;
    // The interpreter's defaults: builtin errors are errors; the time limit is the only limit.
    vm.set_strict_builtin_errors(true);
    vm.set_max_instructions(usize::MAX);
    vm.set_execution_timer_config(Some(ExecutionTimerConfig {
        limit: timeout,
        check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
    }));
    Ok(vm)
}

struct Vm<'a>(&'a mut RegoVM);

impl Evaluator for Vm<'_> {
    fn set_input(&mut self, input: Value) {
        self.0.set_input(input);
    }

    fn eval_rule(&mut self, path: String) -> anyhow::Result<Value> {
        Ok(self.0.execute_entry_point_by_name(&path)?)
    }
}

/// One thread's engines and VMs, for one set.
#[derive(Default)]
struct ThreadCache {
    set: u64,
    slots: Vec<ThreadSlot>,
}

#[derive(Default)]
struct ThreadSlot {
    engines: [Option<Engine>; 3],
    vms: [Option<RegoVM>; 3],
}

thread_local! {
    static CACHE: RefCell<ThreadCache> = RefCell::new(ThreadCache::default());
}

impl PolicySet {
    /// Evaluates `self.policies[index]`: exactly what [`eval::evaluate`] answers, faster.
    pub fn evaluate(&self, index: usize, env: Environment, input: &Value, wants: Wants, redact: bool) -> PolicyOutput {
        let started = Instant::now();
        let Some(policy) = self.policies.get(index) else {
            return PolicyOutput::default();
        };
        let accel = &self.accel;
        let slot = match accel.slots.get(index) {
            Some(slot) if slot.policy == policy.meta.id && accel.strategy != Strategy::CloneEach => slot,
            _ => return eval::evaluate(policy, env, input, wants, redact),
        };
        let cached = CACHE.try_with(|cell| {
            let Ok(mut cache) = cell.try_borrow_mut() else {
                return None;
            };
            if cache.set != accel.id {
                cache.set = accel.id;
                cache.slots.clear();
            }
            if cache.slots.len() < accel.slots.len() {
                cache.slots.resize_with(accel.slots.len(), ThreadSlot::default);
            }
            let mine = cache.slots.get_mut(index)?;
            let e = env.index();
            if let Some(compiled) = &slot.program {
                if mine.vms[e].is_none() {
                    mine.vms[e] = new_vm(compiled, env, accel.timeout).ok();
                }
                if let Some(vm) = mine.vms[e].as_mut() {
                    let out = eval::evaluate_with(&mut Vm(vm), policy, input, wants, redact, started);
                    match &out.failure {
                        Some(f) if f.reason == FailureReason::RuntimeError => {
                            // The interpreter is the reference: a VM error gets a second opinion.
                            debug!(policy = %policy.meta.id, "bytecode evaluation failed; retrying on the interpreter");
                            mine.vms[e] = None;
                        }
                        _ => return Some(out),
                    }
                }
            }
            let engine = mine.engines[e].get_or_insert_with(|| policy.engine(env).clone());
            let out = eval::evaluate_with(engine, policy, input, wants, redact, started);
            if out.failure.is_some() {
                // Whatever state a failed evaluation left behind is not carried to the next one.
                mine.engines[e] = None;
            }
            Some(out)
        });
        match cached {
            Ok(Some(out)) => out,
            _ => eval::evaluate(policy, env, input, wants, redact),
        }
    }
}
