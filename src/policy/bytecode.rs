//! The bytecode backend behind [`PolicySet::evaluate`](crate::policy::set::PolicySet::evaluate), invisible to callers: each worker thread keeps
//! its own engines, cloned once from the primed ones, and, for every policy regorus's compiler
//! accepts, runs its compiled bytecode (RVM) instead of the tree-walking interpreter.
//!
//! Policies that judge the same kinds with the same data (no parameters, or equal ones) and
//! share libraries are also compiled together into one program: one pass of the VM per request
//! evaluates them all, and what their libraries compute (a workload's containers, say) is
//! computed once instead of once per policy. Each policy's answer is then read from that pass;
//! if the pass fails, each policy is evaluated on its own, so failures keep their owner.
//!
//! Everything cached here is keyed on the identity of the [`PolicySet`](crate::policy::set::PolicySet) it came from: a hot
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
use crate::policy::allowance;
use crate::policy::bytecode_errors;
use crate::policy::compiled::CompiledPolicy;
use crate::policy::eval::{self, Evaluator, FailureReason, PolicyOutput, Wants};
use crate::policy::flavor::Flavor;

/// How policies are evaluated on the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// [`Strategy::Compiled`], and policies with the same kinds and data evaluated in one pass
    /// of one program (the default).
    Grouped,
    /// Per-thread engines; compiled bytecode wherever regorus compiles the policy, one program
    /// per policy.
    Compiled,
    /// Per-thread interpreter engines only.
    Interpreter,
    /// A fresh clone of the primed engine per evaluation, as before the fast path (benchmarks).
    CloneEach,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Grouped => "grouped",
            Strategy::Compiled => "compiled",
            Strategy::Interpreter => "interpreter",
            Strategy::CloneEach => "clone",
        }
    }
}

/// The strategy for sets built from now on; 0: not chosen ([`Strategy::Grouped`]).
static STRATEGY: AtomicU8 = AtomicU8::new(0);

fn encode(s: Strategy) -> u8 {
    match s {
        Strategy::Compiled => 1,
        Strategy::Interpreter => 2,
        Strategy::CloneEach => 3,
        Strategy::Grouped => 4,
    }
}

/// Chooses the strategy for sets built from now on: the command line's `--eval-strategy`
/// (environment `REGATE_EVAL_STRATEGY`, checked by the command line: an unknown value is an
/// error there, never a silent default), or `regate bench policies --strategy`.
pub fn set_strategy(s: Strategy) {
    STRATEGY.store(encode(s), Ordering::Relaxed);
}

pub fn strategy() -> Strategy {
    match STRATEGY.load(Ordering::Relaxed) {
        1 => Strategy::Compiled,
        2 => Strategy::Interpreter,
        3 => Strategy::CloneEach,
        _ => Strategy::Grouped,
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a set adds for the fast path: its identity and each policy's compiled program.
#[derive(Debug)]
pub struct Accel {
    id: u64,
    strategy: Strategy,
    slots: Vec<Slot>,
    groups: Vec<Arc<Group>>,
    /// How many distinct programs the slots run (constraints of one template share one).
    programs: usize,
    timeout: Duration,
}

/// A copy is another set as far as the per-thread caches go.
impl Clone for Accel {
    fn clone(&self) -> Self {
        Accel {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            strategy: self.strategy,
            slots: self.slots.clone(),
            groups: self.groups.clone(),
            programs: self.programs,
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
    /// Which of the set's distinct programs `program` is: each thread keeps one VM per
    /// program, shared by the policies that run it.
    vm: usize,
    /// Why the policy runs on the interpreter (`program` is `None`).
    refused: Option<String>,
    /// Which interpreter engines of the policy threads may keep: a set whose policies changed
    /// only in their data (cluster data synced in) keeps the identity of the set it replaces,
    /// and threads re-clone just the engines whose generation changed.
    generation: u64,
    /// The group (index in `Accel::groups`) whose pass answers for this policy.
    group: Option<usize>,
}

/// Which evaluator answers for a policy, chosen when its set is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Compiled bytecode on regorus's VM (the interpreter is consulted only on a VM error).
    Bytecode {
        /// Evaluated in one pass together with other policies (or its own deny and warn).
        grouped: bool,
    },
    /// The tree-walking interpreter, and why the bytecode was refused.
    Interpreter { reason: String },
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Bytecode { grouped: false } => write!(f, "bytecode"),
            Backend::Bytecode { grouped: true } => write!(f, "bytecode (grouped pass)"),
            Backend::Interpreter { reason } => write!(f, "interpreter: {reason}"),
        }
    }
}

/// Policies evaluated in one pass of one program.
#[derive(Debug)]
struct Group {
    members: Vec<usize>,
    /// Entry point and, in order, the rule paths whose values it returns as an array.
    validate: Option<(String, Vec<String>)>,
    mutate: Option<(String, Vec<String>)>,
    compiled: Compiled,
}

#[derive(Debug)]
struct Compiled {
    program: Arc<Program>,
    /// `data` per environment, as the interpreter's engines hold it.
    data: [Value; 3],
}

impl Accel {
    /// Compiles what can be compiled, with the process's [`strategy`]. Never fails: a policy the
    /// compiler rejects is interpreted.
    pub fn build(policies: &mut [CompiledPolicy], timeout: Duration) -> Accel {
        Self::build_with(policies, timeout, strategy())
    }

    /// Compiles each policy to bytecode when `strategy` asks for it, and primes the interpreter
    /// engines of the policies that will be interpreted (one evaluation, so that the clones the
    /// threads take start warm). The engines of a compiled policy stay unprimed: they serve only
    /// when its bytecode fails, and priming three engines per policy costs startup time and
    /// memory for nothing.
    pub fn build_with(
        policies: &mut [CompiledPolicy],
        timeout: Duration,
        strategy: Strategy,
    ) -> Accel {
        let mut slots = Vec::with_capacity(policies.len());
        let mut shared: Vec<Shared> = Vec::new();
        let mut programs = 0;
        for policy in policies.iter_mut() {
            let (program, refused, vm) = if matches!(
                strategy,
                Strategy::Compiled | Strategy::Grouped
            ) {
                let (result, vm) = compile_shared(policy, &mut shared, &mut programs);
                match result {
                    Ok(c) => (Some(c), None, vm),
                    Err(reason) => {
                        info!(policy = %policy.meta.id, %reason, "policy not compiled to bytecode; it runs on the interpreter");
                        (None, Some(reason), 0)
                    }
                }
            } else {
                (
                    None,
                    Some(format!(
                        "--eval-strategy {} runs every policy on the interpreter",
                        strategy.as_str()
                    )),
                    0,
                )
            };
            if program.is_none() && matches!(policy.flavor, Flavor::Native) {
                let package = policy
                    .package
                    .strip_prefix("data.")
                    .unwrap_or(&policy.package)
                    .to_string();
                let (rules, meta) = (policy.rules, policy.meta.clone());
                for engine in policy.engines.iter_mut() {
                    crate::policy::compiled::prime(engine, &package, rules, &meta);
                }
            }
            slots.push(Slot {
                policy: policy.meta.id.clone(),
                program,
                vm,
                refused,
                generation: 0,
                group: None,
            });
        }
        let mut groups = Vec::new();
        if matches!(strategy, Strategy::Compiled | Strategy::Grouped) {
            for members in group_candidates(policies, &slots, strategy == Strategy::Grouped) {
                let ids: Vec<&str> = members.iter().map(|&i| policies[i].id()).collect();
                match compile_group(policies, &members, groups.len()) {
                    Ok(group) => {
                        if members.len() > 1 {
                            info!(policies = %ids.join(","), "policies evaluated together in one pass");
                        }
                        for &i in &members {
                            slots[i].group = Some(groups.len());
                        }
                        groups.push(Arc::new(group));
                    }
                    Err(reason) => {
                        debug!(policies = %ids.join(","), %reason, "policies not grouped")
                    }
                }
            }
        }
        Accel {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            strategy,
            slots,
            groups,
            programs,
            timeout,
        }
    }

    /// Ids of the policies of each group evaluated in one pass.
    pub fn groups(&self) -> Vec<Vec<&str>> {
        self.groups
            .iter()
            .map(|g| {
                g.members
                    .iter()
                    .filter_map(|&i| self.slots.get(i))
                    .map(|s| s.policy.as_str())
                    .collect()
            })
            .collect()
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

    /// This accel for policies that differ from the ones it was built for only in the data of
    /// the interpreter engines of those `changed` says (a new `data.inventory`): the same
    /// programs, groups and identity, so threads keep their VMs and re-clone only those
    /// engines. `None` when a changed policy runs as bytecode (its program holds the old data).
    pub(crate) fn with_new_engines(&self, changed: &[bool]) -> Option<Accel> {
        let mut slots = self.slots.clone();
        for (slot, _) in slots.iter_mut().zip(changed).filter(|(_, &c)| c) {
            if slot.program.is_some() {
                return None;
            }
            slot.generation = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        }
        Some(Accel {
            id: self.id,
            strategy: self.strategy,
            slots,
            groups: self.groups.clone(),
            programs: self.programs,
            timeout: self.timeout,
        })
    }

    /// The backend of the policy at `index`, and for the interpreter, why.
    pub fn backend(&self, index: usize) -> Backend {
        match self.slots.get(index) {
            Some(Slot {
                program: Some(_),
                group,
                ..
            }) => Backend::Bytecode {
                grouped: group.is_some(),
            },
            Some(Slot { refused, .. }) => Backend::Interpreter {
                reason: refused
                    .clone()
                    .unwrap_or_else(|| "not compiled".to_string()),
            },
            None => Backend::Interpreter {
                reason: "not part of the compiled set".to_string(),
            },
        }
    }
}

/// What tests of a synced set compare: the set's identity for the per-thread caches, and for
/// the policy at `index`, its program (its address: shared or not) and engines' generation.
#[cfg(test)]
impl Accel {
    pub(crate) fn cache_view(&self, index: usize) -> (u64, Option<usize>, u64) {
        let slot = self.slots.get(index);
        (
            self.id,
            slot.and_then(|s| s.program.as_ref())
                .map(|p| Arc::as_ptr(p) as usize),
            slot.map_or(0, |s| s.generation),
        )
    }
}

/// The rule paths evaluation asks for, in the order `eval` asks for them.
fn entry_points(policy: &CompiledPolicy) -> Vec<String> {
    let deny = policy.flavor.deny_rule();
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

/// Why `policy` does not compile to bytecode (and runs on the interpreter), if it does not.
pub fn refusal(policy: &CompiledPolicy) -> Option<String> {
    compile(policy).err()
}

/// A program compiled for one template of a plugged-in flavor (see [`Flavor::Plugged`]), or why it was refused, kept while a set is
/// built: the template's other constraints differ only in their parameters, which are input,
/// so they run the very same program.
struct Shared {
    /// The template and its package.
    template: (String, String),
    /// The data the program was built with (the inventory): equal for every constraint of a
    /// set, but checked.
    data: [Value; 3],
    result: Result<Arc<Compiled>, String>,
    vm: usize,
}

/// `policy` compiled, or the program of an earlier constraint of its template (see [`Shared`]),
/// and the number of its program among the set's distinct ones (`programs` counts them).
fn compile_shared(
    policy: &CompiledPolicy,
    shared: &mut Vec<Shared>,
    programs: &mut usize,
) -> (Result<Arc<Compiled>, String>, usize) {
    let template = match &policy.flavor {
        Flavor::Plugged(plugged) => plugged
            .program_key()
            .map(|key| (key, policy.package.clone())),
        Flavor::Native => None,
    };
    let data = Environment::ALL.map(|env| policy.engine(env).get_data());
    if let Some(found) = template
        .as_ref()
        .and_then(|t| shared.iter().find(|s| s.template == *t && s.data == data))
    {
        return (found.result.clone(), found.vm);
    }
    let result = compile(policy).map(Arc::new);
    let vm = *programs;
    if result.is_ok() {
        *programs += 1;
    }
    if let Some(template) = template {
        shared.push(Shared {
            template,
            data,
            result: result.clone(),
            vm,
        });
    }
    (result, vm)
}

fn compile(policy: &CompiledPolicy) -> Result<Compiled, String> {
    // A plugged-in flavor (its modules already normalised by its loader) gets its own rewrite,
    // refusals and builtins.
    let plugged = match &policy.flavor {
        Flavor::Plugged(plugged) => Some(plugged),
        Flavor::Native => None,
    };
    let entries = entry_points(policy);
    let first = entries.first().ok_or("no output rule")?;
    let mut engine = policy.engine(Environment::Production);
    let rewritten = match plugged {
        Some(plugged) => plugged.engine_for_vm(engine, first)?,
        None => None,
    };
    if let Some(rewritten) = &rewritten {
        engine = rewritten;
    }
    let entry: regorus::Rc<str> = first.as_str().into();
    let qualified = plugged.is_none().then(|| qualified_engine(engine)).flatten().and_then(|mut q| match q.compile_with_entrypoint(&entry) {
        Ok(c) => Some(c),
        Err(e) => {
            debug!(policy = %policy.meta.id, error = %first_line(&e.to_string()), "qualified imports did not compile; compiling the sources as written");
            None
        }
    });
    let compiled = match qualified {
        Some(c) => c,
        None => engine
            .clone()
            .compile_with_entrypoint(&entry)
            .map_err(|e| first_line(&e.to_string()))?,
    };
    if let Some(reason) = plugged.and_then(|plugged| plugged.refusal(&compiled)) {
        return Err(reason);
    }
    let mut out = to_program(
        &compiled,
        &entries,
        Environment::ALL.map(|env| policy.engine(env).get_data()),
    )?;
    if let Some(plugged) = plugged {
        plugged.install_builtins(Arc::make_mut(&mut out.program))?;
    }
    Ok(out)
}

/// Bytecode for `entries` of a compiled policy, with `data` per environment: refused when a
/// rule may conflict, when it could swallow a runtime error, or when it cannot load its data.
fn to_program(
    compiled: &regorus::CompiledPolicy,
    entries: &[String],
    data: [Value; 3],
) -> Result<Compiled, String> {
    // A partial object's keys can be checked as the program runs (see `builtins`); other
    // conflicts can only be ruled out here.
    let check_object_keys = match may_conflict(compiled, false) {
        None => false,
        Some(_) => match may_conflict(compiled, true) {
            None => true,
            Some(path) => {
                return Err(format!(
            "{path} has definitions that may give different values, a conflict the interpreter reports and bytecode would not"
        ))
            }
        },
    };
    let names: Vec<&str> = entries.iter().map(String::as_str).collect();
    let program =
        Compiler::compile_from_policy(compiled, &names).map_err(|e| first_line(&e.to_string()))?;
    let compiled = Compiled {
        program: harden(program, compiled.get_modules(), check_object_keys)?,
        data,
    };
    // A program must at least load its data: rule/data conflicts show up here, not per request.
    for env in Environment::ALL {
        new_vm(&compiled, env, Duration::from_secs(1)).map_err(|e| first_line(&e))?;
    }
    Ok(compiled)
}

/// `program`, compiled from `modules`, failing as the interpreter fails: see
/// [`bytecode_errors`] and `undefined_bindings`.
fn harden(
    program: Arc<Program>,
    modules: &[regorus::unstable::Ref<regorus::unstable::Module>],
    check_object_keys: bool,
) -> Result<Arc<Program>, String> {
    let mut program = Arc::try_unwrap(program).unwrap_or_else(|shared| (*shared).clone());
    // Spans name their files first: the guards below find `:=` bindings by file and line.
    crate::policy::source_table::repair(&mut program, modules)?;
    // `x := undefined` fails the body, as on the interpreter; so does a partial object key
    // given two values, when asked.
    crate::policy::undefined_bindings::guard(&mut program, modules, check_object_keys)?;
    if let Some(reason) = bytecode_errors::misrouted_conditions(&program) {
        return Err(reason);
    }
    // Arithmetic that may fail becomes guarded builtin calls: see `builtins`.
    if bytecode_errors::unguarded_errors(&program).is_some() {
        crate::policy::builtins::arithmetic_as_calls(&mut program)?;
    }
    if let Some(reason) = bytecode_errors::unguarded_errors(&program) {
        return Err(reason);
    }
    bytecode_errors::guard_builtins(&mut program)?;
    crate::policy::bounded_builtins::install_in_program(&mut program)?;
    Ok(Arc::new(program))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).chars().take(300).collect()
}

/// Sets of compiled, native policies that judge the same kinds and operations with the same
/// `data` in every environment: candidates for one pass (only with `across_policies`). A
/// policy left alone that has both `deny` and `warn` is a set of its own: one pass computes
/// what both rules share, where two would compute it twice.
fn group_candidates(
    policies: &[CompiledPolicy],
    slots: &[Slot],
    across_policies: bool,
) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let key = |p: &CompiledPolicy| {
        let mut kinds = p.meta.kinds.clone();
        kinds.sort();
        let mut operations = p.meta.operations.clone();
        operations.sort();
        (kinds, operations, p.parameters.clone())
    };
    for (i, policy) in policies.iter().enumerate() {
        if slots[i].program.is_none() || !matches!(policy.flavor, Flavor::Native) {
            continue;
        }
        match groups
            .iter_mut()
            .find(|g| across_policies && key(&policies[g[0]]) == key(policy))
        {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups.retain(|g| g.len() >= 2 || (policies[g[0]].rules.deny && policies[g[0]].rules.warn));
    groups
}

fn compile_group(
    policies: &[CompiledPolicy],
    members: &[usize],
    n: usize,
) -> Result<Group, String> {
    let package = format!("regate_fast_pass.group_{n}");
    let mut sources: Vec<(String, String)> = Vec::new();
    let (mut validate, mut mutate) = (Vec::new(), Vec::new());
    for &i in members {
        let policy = &policies[i];
        for source in policy
            .engine(Environment::Production)
            .get_policies()
            .map_err(|e| e.to_string())?
        {
            if !sources.iter().any(|(path, _)| path == source.get_path()) {
                let text = qualify_imports(source.get_contents())
                    .unwrap_or_else(|| source.get_contents().clone());
                sources.push((source.get_path().clone(), text));
            }
        }
        if policy.rules.deny {
            validate.push(format!("{}.deny", policy.package));
        }
        if policy.rules.warn {
            validate.push(format!("{}.warn", policy.package));
        }
        if policy.rules.patch {
            mutate.push(format!("{}.patch", policy.package));
        }
    }
    let mut module = format!("package {package}\n\nimport rego.v1\n");
    let mut entries = Vec::new();
    for (name, paths) in [("validate", &validate), ("mutate", &mutate)] {
        if !paths.is_empty() {
            module.push_str(&format!("\n{name} := [{}]\n", paths.join(", ")));
            entries.push(format!("data.{package}.{name}"));
        }
    }
    let mut engine = Engine::new();
    for (path, text) in sources {
        engine
            .add_policy(path, text)
            .map_err(|e| first_line(&e.to_string()))?;
    }
    engine
        .add_policy(format!("{package}.rego"), module)
        .map_err(|e| first_line(&e.to_string()))?;
    let first = &policies[members[0]];
    engine
        .add_data(first.engine(Environment::Production).get_data())
        .map_err(|e| first_line(&e.to_string()))?;
    let entry = entries.first().ok_or("no output rule")?;
    let compiled = engine
        .compile_with_entrypoint(&entry.as_str().into())
        .map_err(|e| first_line(&e.to_string()))?;
    let compiled = to_program(
        &compiled,
        &entries,
        Environment::ALL.map(|env| first.engine(env).get_data()),
    )?;
    let mut names = entries.into_iter();
    Ok(Group {
        members: members.to_vec(),
        validate: if validate.is_empty() {
            None
        } else {
            names.next().map(|e| (e, validate))
        },
        mutate: if mutate.is_empty() {
            None
        } else {
            names.next().map(|e| (e, mutate))
        },
        compiled,
    })
}

/// The first rule (path) whose definitions could give two different values for one input.
/// Rego makes that a runtime error, and the interpreter reports it (a policy failure, failing
/// closed by default); regorus 0.14's bytecode takes one of the values instead. A policy with such
/// a rule stays on the interpreter. Safe, and not flagged: partial sets, `else` chains, rules
/// whose every definition gives the same literal (`allow if ...` several times), and functions
/// whose definitions differ in a literal argument (`f(x, true) := ...`, `f(x, false) := ...`).
/// With `keys_checked`, partial objects (`p[k] := v`) are not flagged either: the program then
/// checks each insert as it runs (`builtins::object_key_checks`).
fn may_conflict(compiled: &regorus::CompiledPolicy, keys_checked: bool) -> Option<String> {
    use regorus::unstable::{Expr, Rule, RuleHead};
    fn literal(e: &Expr) -> Option<&Value> {
        match e {
            Expr::String { value, .. }
            | Expr::RawString { value, .. }
            | Expr::Number { value, .. }
            | Expr::Bool { value, .. }
            | Expr::Null { value, .. } => Some(value),
            _ => None,
        }
    }
    let truth = Value::Bool(true);
    for (path, definitions) in compiled.get_rules() {
        // A partial object's conflicts are found as the program runs when its keys are checked
        // (`keys_checked`), however many definitions it has.
        let keyed = |d: &regorus::unstable::Ref<Rule>| matches!(&**d, Rule::Spec { head: RuleHead::Compr { refr, .. }, .. } if matches!(**refr, Expr::RefBrack { .. }));
        if keys_checked && !definitions.is_empty() && definitions.iter().all(keyed) {
            continue;
        }
        // One entry per alternative that can hold at the same time: (its value, its arguments).
        let mut alternatives: Vec<(Option<&Value>, &[regorus::unstable::Ref<Expr>])> = Vec::new();
        for definition in definitions {
            let Rule::Spec { head, bodies, .. } = &**definition else {
                continue;
            };
            // A partial object (`p[k] := v`) can give one key two values within one definition.
            let (assign, args, keyed) = match head {
                RuleHead::Set { .. } => continue,
                RuleHead::Compr { assign, refr, .. } => {
                    (assign, &[][..], matches!(**refr, Expr::RefBrack { .. }))
                }
                RuleHead::Func { assign, args, .. } => (assign, args.as_slice(), false),
            };
            let value = match assign {
                None => Some(&truth),
                Some(a) => literal(&a.value),
            };
            let independent =
                bodies.iter().filter(|b| !b.is_else).count().max(1) * if keyed { 2 } else { 1 };
            for _ in 0..independent {
                alternatives.push((value, args));
            }
        }
        for (i, (va, aa)) in alternatives.iter().enumerate() {
            for (vb, ab) in &alternatives[i + 1..] {
                let same_value = matches!((va, vb), (Some(x), Some(y)) if x == y);
                let exclusive = aa
                    .iter()
                    .zip(ab.iter())
                    .any(|(x, y)| matches!((literal(x), literal(y)), (Some(x), Some(y)) if x != y));
                if !same_value && !exclusive {
                    let at = definitions
                        .first()
                        .map(|d| {
                            let span = d.span();
                            format!(" ({}:{})", span.source.get_path(), span.line)
                        })
                        .unwrap_or_default();
                    return Some(format!("{path}{at}"));
                }
            }
        }
    }
    None
}

/// A copy of `engine` whose modules refer to imported packages by their full path, or `None`
/// when no module changes. regorus 0.14's bytecode compiler turns a reference through an import
/// (`workload.containers` after `import data.regate.lib.workload`) into a lookup of the whole
/// package, evaluating every rule in it; `data.regate.lib.workload.containers` compiles to a
/// call of that one rule. Same meaning, a fraction of the work.
fn qualified_engine(engine: &Engine) -> Option<Engine> {
    let sources = engine.get_policies().ok()?;
    let rewritten: Vec<Option<String>> = sources
        .iter()
        .map(|s| qualify_imports(s.get_contents()))
        .collect();
    if rewritten.iter().all(Option::is_none) {
        return None;
    }
    // regate's own policies are Rego v1 (regorus's default); plugged-in flavors are never qualified.
    let mut out = Engine::new();
    for (text, source) in rewritten.into_iter().zip(&sources) {
        let text = text.unwrap_or_else(|| source.get_contents().clone());
        out.add_policy(source.get_path().clone(), text).ok()?;
    }
    out.add_data(engine.get_data()).ok()?;
    Some(out)
}

/// Rewrites `alias.x` to `data.pkg.x` for every `import data.pkg [as alias]` of a module.
/// `None` when there is nothing to rewrite, or when an alias is ever used other than as
/// `alias.`: a bare use may be a local variable or rule of the same name shadowing the import,
/// and the module is then compiled as written. Comments and strings are left alone, and the
/// text keeps its lines, so positions in errors stay right.
pub(crate) fn qualify_imports(text: &str) -> Option<String> {
    let mut imports: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("import") {
            continue;
        }
        let Some(path) = words.next() else { continue };
        let rest: Vec<&str> = words.take_while(|w| !w.starts_with('#')).collect();
        let parts: Vec<&str> = path.split('.').collect();
        if parts.len() < 2 || parts[0] != "data" || !parts.iter().all(|p| is_identifier(p)) {
            continue;
        }
        let alias = match rest.as_slice() {
            [] => parts[parts.len() - 1].to_string(),
            ["as", alias] if is_identifier(alias) => alias.to_string(),
            _ => continue,
        };
        imports.push((alias, path.to_string()));
    }
    if imports.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len() + 256);
    let mut changed = false;
    let mut i = 0;
    let mut line_start = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push('\n');
                i += 1;
                line_start = i;
            }
            b'#' => {
                let end = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
                out.push_str(&text[i..end]);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < bytes.len() && bytes[j] != b'"' && bytes[j] != b'\n' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(bytes.len());
                out.push_str(&text[i..end]);
                i = end;
            }
            b'`' => {
                let end = text[i + 1..].find('`').map_or(bytes.len(), |n| i + n + 2);
                out.push_str(&text[i..end]);
                i = end;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i + 1;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                let word = &text[i..j];
                let head = text[line_start..i].trim_start();
                let declaration = head.starts_with("import") || head.starts_with("package");
                let after_dot = i > 0 && bytes[i - 1] == b'.';
                match imports.iter().find(|(alias, _)| alias == word) {
                    Some((_, path)) if !declaration && !after_dot => {
                        if bytes.get(j) != Some(&b'.') {
                            return None;
                        }
                        out.push_str(path);
                        changed = true;
                    }
                    _ => out.push_str(word),
                }
                i = j;
            }
            _ => {
                let len = text[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&text[i..i + len]);
                i += len;
            }
        }
    }
    changed.then_some(out)
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Instructions between two reads of the clock for the time limit.
const TIMER_CHECK_INTERVAL: u32 = 64;

fn new_vm(compiled: &Compiled, env: Environment, timeout: Duration) -> Result<RegoVM, String> {
    let mut vm = RegoVM::new();
    vm.load_program(compiled.program.clone());
    vm.set_data(compiled.data[env.index()].clone())
        .map_err(|e| e.to_string())?;
    // Not strict: strict bytecode makes comparing values of different types an error (which a
    // rule body then swallows), where the interpreter orders them as OPA does. Builtin errors
    // reach the caller either way, through the guards of `bytecode_errors`.
    vm.set_strict_builtin_errors(false);
    vm.set_max_instructions(usize::MAX);
    vm.set_execution_timer_config(vm_timer(timeout));
    vm.set_memory_budget_config(crate::policy::memory::vm_budget());
    Ok(vm)
}

fn vm_timer(limit: Duration) -> Option<ExecutionTimerConfig> {
    Some(ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::new(TIMER_CHECK_INTERVAL).unwrap_or(NonZeroU32::MIN),
    })
}

struct Vm<'a>(&'a mut RegoVM);

impl Evaluator for Vm<'_> {
    fn set_input(&mut self, input: Value) {
        self.0.set_input(input);
    }

    fn eval_rule(&mut self, path: String) -> anyhow::Result<Value> {
        Ok(self.0.execute_entry_point_by_name(&path)?)
    }

    fn set_time_limit(&mut self, limit: Duration) {
        self.0.set_execution_timer_config(vm_timer(limit));
    }
}

/// One thread's engines and VMs, for one set.
#[derive(Default)]
struct ThreadCache {
    set: u64,
    slots: Vec<ThreadSlot>,
    /// One VM per distinct program (`Slot::vm`) and environment.
    vms: Vec<[Option<RegoVM>; 3]>,
    groups: Vec<[Option<RegoVM>; 3]>,
    /// The last pass of a group: valid for the same request (the very same input value).
    pass: Option<Pass>,
}

struct Pass {
    group: usize,
    env: usize,
    wants: Wants,
    /// Held so that its allocation, which identifies the request, cannot be reused meanwhile.
    input: Value,
    /// Rule path → value; `None` when the pass failed.
    values: Option<std::collections::HashMap<String, Value>>,
    /// The pass's time, shared equally among the group's policies.
    share: Duration,
}

/// Answers from a group's pass.
struct Precomputed<'a>(&'a std::collections::HashMap<String, Value>);

impl Evaluator for Precomputed<'_> {
    fn set_input(&mut self, _: Value) {}

    fn eval_rule(&mut self, path: String) -> anyhow::Result<Value> {
        self.0
            .get(&path)
            .cloned()
            .ok_or_else(|| anyhow::Error::msg(format!("{path} is not in the pass")))
    }

    /// The pass has run: nothing left to limit.
    fn set_time_limit(&mut self, _: Duration) {}
}

fn same_request(a: &Value, b: &Value) -> bool {
    matches!((a, b), (Value::Object(x), Value::Object(y)) if regorus::Rc::ptr_eq(x, y))
}

/// `policy`'s answer from its group's pass over `input` (running the pass when this request has
/// not yet), or `None` when the pass failed and the policy must be evaluated on its own.
#[allow(clippy::too_many_arguments)]
fn from_pass(
    cache: &mut ThreadCache,
    accel: &Accel,
    g: usize,
    policy: &CompiledPolicy,
    env: Environment,
    input: &Value,
    wants: Wants,
    redact: bool,
) -> Option<PolicyOutput> {
    let group = accel.groups.get(g)?;
    let e = env.index();
    let fresh = cache.pass.as_ref().is_some_and(|p| {
        p.group == g && p.env == e && p.wants == wants && same_request(&p.input, input)
    });
    if !fresh {
        if !matches!(input, Value::Object(_)) {
            return None;
        }
        if cache.groups.len() < accel.groups.len() {
            cache
                .groups
                .resize_with(accel.groups.len(), Default::default);
        }
        let vms = cache.groups.get_mut(g)?;
        if vms[e].is_none() {
            vms[e] = new_vm(&group.compiled, env, accel.timeout).ok();
        }
        let vm = vms[e].as_mut()?;
        let started = Instant::now();
        vm.set_input(input.clone());
        // An allowance that ends sooner than the pass's limit shortens it (`policy::allowance`);
        // a pass it stops fails, and each policy then meets the spent allowance on its own.
        let shorter = allowance::shorter_limit(accel.timeout);
        if let Some(shorter) = shorter {
            vm.set_execution_timer_config(vm_timer(shorter));
        }
        let mut values = std::collections::HashMap::new();
        let mut ok = true;
        for (wanted, part) in [
            (wants.validate, &group.validate),
            (wants.mutate, &group.mutate),
        ] {
            let Some((entry, paths)) = part.as_ref().filter(|_| wanted) else {
                continue;
            };
            // A panic fails the pass as an error does: each policy is then evaluated on its
            // own, so that only the policy that panics fails (`PolicySet::evaluate` catches it).
            match crate::policy::panics::caught(|| vm.execute_entry_point_by_name(entry)) {
                Ok(Ok(Value::Array(items))) if items.len() == paths.len() => {
                    values.extend(paths.iter().cloned().zip(items.iter().cloned()));
                }
                Ok(_) => ok = false,
                Err(_) => {
                    ok = false;
                    // The VM stopped halfway: it is not used again.
                    vms[e] = None;
                    break;
                }
            }
        }
        if shorter.is_some() {
            if let Some(vm) = vms[e].as_mut() {
                vm.set_execution_timer_config(vm_timer(accel.timeout));
            }
        }
        let share = started.elapsed() / u32::try_from(group.members.len()).unwrap_or(1).max(1);
        cache.pass = Some(Pass {
            group: g,
            env: e,
            wants,
            input: input.clone(),
            values: ok.then_some(values),
            share,
        });
    }
    let pass = cache.pass.as_ref()?;
    let values = pass.values.as_ref()?;
    let mut out = eval::evaluate_with(
        &mut Precomputed(values),
        policy,
        input,
        wants,
        redact,
        Instant::now(),
        accel.timeout,
    );
    // A rule missing from the pass is for the policy's own evaluation to report; an invalid
    // output would only be found again.
    if out
        .failure
        .as_ref()
        .is_some_and(|f| f.reason != FailureReason::InvalidOutput)
    {
        return None;
    }
    out.duration = pass.share;
    Some(out)
}

#[derive(Default)]
struct ThreadSlot {
    /// The slot generation `engines` were cloned for.
    generation: u64,
    engines: [Option<Engine>; 3],
}

thread_local! {
    static CACHE: RefCell<ThreadCache> = RefCell::new(ThreadCache::default());
}

impl Accel {
    /// Evaluates `policies[index]` (the policies this accel was built for) on its backend:
    /// see [`PolicySet::evaluate`](crate::policy::set::PolicySet::evaluate).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn evaluate(
        &self,
        policies: &[CompiledPolicy],
        index: usize,
        selected: &[usize],
        env: Environment,
        input: &Value,
        wants: Wants,
        redact: bool,
    ) -> PolicyOutput {
        let started = Instant::now();
        let Some(policy) = policies.get(index) else {
            return PolicyOutput::default();
        };
        let accel = self;
        let slot = match accel.slots.get(index) {
            Some(slot)
                if slot.policy == policy.meta.id && accel.strategy != Strategy::CloneEach =>
            {
                slot
            }
            _ => return eval::evaluate(policy, env, input, wants, redact, accel.timeout),
        };
        let cached = CACHE.try_with(|cell| {
            let Ok(mut cache) = cell.try_borrow_mut() else {
                return None;
            };
            if cache.set != accel.id {
                cache.set = accel.id;
                cache.slots.clear();
                cache.vms.clear();
                cache.groups.clear();
                cache.pass = None;
            }
            if let Some(g) = slot.group.filter(|&g| {
                accel.groups.get(g).is_some_and(|group| {
                    group
                        .members
                        .iter()
                        .all(|m| selected.binary_search(m).is_ok())
                })
            }) {
                if let Some(out) = from_pass(&mut cache, accel, g, policy, env, input, wants, redact) {
                    return Some(out);
                }
            }
            if cache.slots.len() < accel.slots.len() {
                cache.slots.resize_with(accel.slots.len(), ThreadSlot::default);
            }
            let mine = cache.slots.get_mut(index)?;
            if mine.generation != slot.generation {
                mine.engines = Default::default();
                mine.generation = slot.generation;
            }
            let e = env.index();
            if let Some(compiled) = &slot.program {
                if cache.vms.len() < accel.programs {
                    cache.vms.resize_with(accel.programs, Default::default);
                }
                let vms = cache.vms.get_mut(slot.vm)?;
                if vms[e].is_none() {
                    vms[e] = new_vm(compiled, env, accel.timeout).ok();
                }
                if let Some(vm) = vms[e].as_mut() {
                    // The VM is kept whatever happens: each execution starts from a clean state
                    // (regorus resets registers, rule cache and stacks at every entry point), so
                    // a policy that errs on every request does not rebuild it every time.
                    let out = eval::evaluate_with(
                        &mut Vm(vm),
                        policy,
                        input,
                        wants,
                        redact,
                        started,
                        accel.timeout,
                    );
                    match &out.failure {
                        Some(f) if f.reason == FailureReason::RuntimeError => {
                            // The interpreter is the reference: a VM error gets a second opinion.
                            debug!(policy = %policy.meta.id, "bytecode evaluation failed; retrying on the interpreter");
                        }
                        _ => return Some(out),
                    }
                }
            }
            let mine = cache.slots.get_mut(index)?;
            let engine = mine.engines[e].get_or_insert_with(|| policy.engine(env).clone());
            let out =
                eval::evaluate_with(engine, policy, input, wants, redact, started, accel.timeout);
            if out.failure.is_some() {
                // Whatever state a failed evaluation left behind is not carried to the next one.
                mine.engines[e] = None;
            }
            Some(out)
        });
        match cached {
            Ok(Some(out)) => out,
            _ => eval::evaluate(policy, env, input, wants, redact, accel.timeout),
        }
    }
}

/// Lets go of the input this thread's engines, VMs and last pass still hold from the last
/// request evaluated here (they keep it until the next request otherwise). After a large body
/// that is its whole parsed size, on every thread that judged one: the webhook calls this after
/// each large request.
pub fn release_thread_input() {
    let _ = CACHE.try_with(|cell| {
        let Ok(mut cache) = cell.try_borrow_mut() else {
            return;
        };
        cache.pass = None;
        for vm in cache.vms.iter_mut().flatten().flatten() {
            vm.set_input(Value::Null);
        }
        for slot in &mut cache.slots {
            for engine in slot.engines.iter_mut().flatten() {
                engine.set_input(Value::Null);
            }
        }
        for group in &mut cache.groups {
            for vm in group.iter_mut().flatten() {
                vm.set_input(Value::Null);
            }
        }
    });
}

/// Drops every engine, VM and pass this thread cached: after a panic, one of them may have
/// stopped halfway through an evaluation, and none is trusted again.
pub(crate) fn forget_thread_engines() {
    let _ = CACHE.try_with(|cell| {
        if let Ok(mut cache) = cell.try_borrow_mut() {
            *cache = ThreadCache::default();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::decision::{judge, Decision};
    use crate::admission::review::Review;
    use crate::config::Config;
    use crate::environment::NamespaceLabels;
    use crate::policy::set::PolicySet;
    use crate::policy::source;

    #[test]
    fn imports_are_qualified() {
        let text = "package a.b\n\nimport data.regate.lib.workload\nimport data.x.y as z\nimport rego.v1\n\n# workload.c in a comment\ndeny contains msg if {\n\tsome e in workload.containers\n\tmsg := sprintf(\"workload.x %v\", [z.q(e)])\n}\n";
        let out = qualify_imports(text).unwrap();
        assert!(out.contains("some e in data.regate.lib.workload.containers"));
        assert!(out.contains("[data.x.y.q(e)]"));
        assert!(out.contains("# workload.c in a comment"));
        assert!(out.contains("\"workload.x %v\""));
        assert!(out.contains("import data.regate.lib.workload\n"));
        assert_eq!(out.lines().count(), text.lines().count());
    }

    #[test]
    fn shadowed_or_bare_imports_are_left_alone() {
        assert_eq!(
            qualify_imports("package a\nimport data.lib.w\nx := w\n"),
            None
        );
        assert_eq!(
            qualify_imports("package a\nimport data.lib.w\nx if { some w in input.y; w.z }\n"),
            None
        );
        assert_eq!(
            qualify_imports("package a\nimport rego.v1\nx := input.w.z\n"),
            None
        );
        assert_eq!(
            qualify_imports("package a\nimport data.lib.w\nx := input.w.z\n"),
            None
        );
    }

    fn conflicts(text: &str) -> Option<String> {
        let mut engine = Engine::new();
        engine.add_policy("p.rego".into(), text.into()).unwrap();
        let compiled = engine
            .compile_with_entrypoint(&"data.p.deny".into())
            .unwrap();
        may_conflict(&compiled, false)
    }

    #[test]
    fn conflicting_definitions_are_found() {
        let head = "package p\nimport rego.v1\ndeny contains 1 if v\n";
        assert!(conflicts(&format!("{head}v := 1 if input.a\nv := 2 if input.b\n")).is_some());
        assert!(conflicts(&format!(
            "{head}v := input.x if input.a\nv := 2 if input.b\n"
        ))
        .is_some());
        assert!(conflicts(&format!(
            "{head}f(x) := 1 if x\nf(y) := 2 if y\nv := f(input.a)\n"
        ))
        .is_some());
        assert!(conflicts(&format!("{head}v[k] := x if {{ some k, x in input.o }}\n")).is_some());
        let mut engine = Engine::new();
        engine
            .add_policy(
                "p.rego".into(),
                format!("{head}v[k] := x if {{ some k, x in input.o }}\nv[k] := 1 if {{ some k in input.s }}\n"),
            )
            .unwrap();
        let compiled = engine
            .compile_with_entrypoint(&"data.p.deny".into())
            .unwrap();
        assert_eq!(may_conflict(&compiled, true), None);
        assert!(may_conflict(&compiled, false).is_some());
        assert_eq!(
            conflicts(&format!("{head}v[k] := true if {{ some k in input.o }}\n")),
            None
        );
        assert_eq!(
            conflicts(&format!("{head}v if input.a\nv if input.b\n")),
            None
        );
        assert_eq!(
            conflicts(&format!("{head}v := 1 if input.a\nv := 1 if input.b\n")),
            None
        );
        assert_eq!(
            conflicts(&format!(
                "{head}v := 1 if input.a\nelse := 2\ndefault v := 3\n"
            )),
            None
        );
        assert_eq!(
            conflicts(&format!(
                "{head}f(x, true) := x\nf(x, false) := 2\nv := f(1, input.b)\n"
            )),
            None
        );
    }

    /// A reload builds a new set: threads that cached the old set's engines and VMs for a policy
    /// at the same index answer with the new one.
    #[test]
    fn caches_follow_the_set_across_reloads() {
        let policy = |msg: &str| {
            format!(
                "# METADATA\n# title: t\n# custom:\n#   id: p\n#   severity: low\n#   kinds: [ConfigMap]\npackage regate.policies.p\n\nimport rego.v1\n\ndeny contains \"{msg}\" if input.request.object.data.x\n"
            )
        };
        let review = configmap_review(r#"{"x":"1"}"#);
        for strategy in [Strategy::Grouped, Strategy::Compiled, Strategy::Interpreter] {
            for msg in ["first", "second", "third"] {
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join("p.rego"), policy(msg)).unwrap();
                let (sources, _) = source::resolve(dir.path(), false).unwrap();
                let set = built(&sources, strategy);
                let d = judge(&set, &review, Wants::VALIDATE);
                assert_eq!(d.violations.len(), 1, "{strategy:?}");
                assert_eq!(d.violations[0].message, msg, "{strategy:?}");
            }
        }
    }

    /// Two ConfigMap policies that share a grouped pass: `a` denies when `data.x` is set, `b`
    /// when `b_body` holds. The directory lives as long as the first value.
    fn policies_a_and_b(b_body: &str) -> (tempfile::TempDir, Vec<source::PolicySource>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.rego"),
            configmap_policy("a", "input.request.object.data.x"),
        )
        .unwrap();
        std::fs::write(dir.path().join("b.rego"), configmap_policy("b", b_body)).unwrap();
        let (sources, _) = source::resolve(dir.path(), false).unwrap();
        (dir, sources)
    }

    /// The set of `sources` with the default config, evaluated with `strategy`.
    fn built(sources: &[source::PolicySource], strategy: Strategy) -> PolicySet {
        PolicySet::build_with_rego_only(
            sources,
            std::sync::Arc::new(Config::default()),
            NamespaceLabels::default(),
        )
        .unwrap()
        .with_strategy(strategy)
    }

    /// The set of `sources` with the configuration `regate_yaml`, evaluated with `strategy`.
    fn built_with(
        sources: &[source::PolicySource],
        regate_yaml: &str,
        strategy: Strategy,
    ) -> PolicySet {
        let config = Config::parse(regate_yaml, std::path::Path::new("regate.yaml")).unwrap();
        PolicySet::build_with_rego_only(
            sources,
            std::sync::Arc::new(config),
            NamespaceLabels::default(),
        )
        .unwrap()
        .with_strategy(strategy)
    }

    /// A webhook review of a CREATE of ConfigMap `c` with `data` (JSON).
    fn configmap_review(data: &str) -> Review {
        Review::from_slice(
            format!(r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","kind":{{"group":"","version":"v1","kind":"ConfigMap"}},"resource":{{"group":"","version":"v1","resource":"configmaps"}},"namespace":"n","operation":"CREATE","userInfo":{{}},"object":{{"kind":"ConfigMap","metadata":{{"name":"c"}},"data":{data}}}}}}}"#).as_bytes(),
        )
        .unwrap()
    }

    /// When the pass of a group fails (here: one policy runs over the time limit), each policy
    /// is evaluated on its own: the failure is the failing policy's alone.
    #[test]
    fn a_failing_pass_falls_back_to_each_policy() {
        let (_dir, sources) = policies_a_and_b(
            "count([x | some x in numbers.range(1, 3000); some y in numbers.range(1, 3000); x == y]) > 1",
        );
        let set = built_with(
            &sources,
            "limits:\n  evaluationTimeoutMs: 100\n",
            Strategy::Grouped,
        );
        assert_eq!(set.accel.groups(), vec![vec!["a", "b"]]);
        let review = configmap_review(r#"{"x":"1","n":5}"#);
        let d = judge(&set, &review, Wants::VALIDATE);
        assert_eq!(
            d.violations
                .iter()
                .map(|v| v.policy.as_str())
                .collect::<Vec<_>>(),
            vec!["a"]
        );
        assert_eq!(
            d.failures
                .iter()
                .map(|f| f.policy.as_str())
                .collect::<Vec<_>>(),
            vec!["b"]
        );
        assert_eq!(d.failures[0].reason, FailureReason::TimeLimit);
        assert!(!d.allowed);
    }

    /// An allowance (`policy::allowance`, how long `serve` lets a judgement hold the async
    /// worker it runs on) stops a judgement that needs longer on every strategy, and reports
    /// it; the engines it shortened get their own limit back, so the judgement made again
    /// without an allowance, on the same thread, is whole: the same as one never stopped.
    #[test]
    fn an_allowance_stops_a_judgement_and_leaves_the_engines_their_own_limit() {
        let (_dir, sources) = policies_a_and_b(
            "count([x | some x in numbers.range(1, 150); some y in numbers.range(1, 150); x == y]) == 150",
        );
        let review = configmap_review(r#"{"x":"1"}"#);
        let outcome = |d: &Decision| {
            let denied: Vec<String> = d.violations.iter().map(|v| v.policy.clone()).collect();
            let failed: Vec<String> = d.failures.iter().map(|f| f.policy.clone()).collect();
            (denied, failed, d.allowed)
        };
        let whole = (vec!["a".to_string(), "b".to_string()], Vec::new(), false);
        for strategy in STRATEGIES {
            let set = built_with(
                &sources,
                "limits:\n  evaluationTimeoutMs: 60000\n",
                strategy,
            );
            for allowance in [Duration::ZERO, Duration::from_micros(200)] {
                let stopped =
                    allowance::within(allowance, || judge(&set, &review, Wants::VALIDATE));
                assert!(stopped.is_none(), "{strategy:?}, {allowance:?}");
                let d = judge(&set, &review, Wants::VALIDATE);
                assert_eq!(outcome(&d), whole, "{strategy:?}, after {allowance:?}");
                if strategy == Strategy::Grouped {
                    // Answered by the group's pass, not by the fallback to each policy.
                    let passed = CACHE
                        .with(|c| c.borrow().pass.as_ref().is_some_and(|p| p.values.is_some()));
                    assert!(passed, "after {allowance:?}");
                }
            }
            let within = allowance::within(Duration::from_secs(600), || {
                judge(&set, &review, Wants::VALIDATE)
            });
            assert_eq!(
                within.map(|d| outcome(&d)),
                Some(whole.clone()),
                "{strategy:?}"
            );
        }
    }

    /// A builtin that panics (regorus 0.14's `strings.count(s, "")`) fails its own policy on
    /// every strategy, and only that policy: the pass it shares with another policy falls back
    /// to each policy alone, and the thread's engines keep working for the next request.
    #[test]
    fn a_panicking_policy_fails_alone_on_every_strategy() {
        let (_dir, sources) =
            policies_a_and_b("strings.count(input.request.object.data.x, \"\") > 0");
        let review = configmap_review(r#"{"x":"1"}"#);
        for strategy in [
            Strategy::Grouped,
            Strategy::Compiled,
            Strategy::Interpreter,
            Strategy::CloneEach,
        ] {
            let set = built(&sources, strategy);
            if strategy == Strategy::Grouped {
                assert_eq!(set.accel.groups(), vec![vec!["a", "b"]]);
            }
            for _ in 0..2 {
                let d = judge(&set, &review, Wants::VALIDATE);
                let denied: Vec<&str> = d.violations.iter().map(|v| v.policy.as_str()).collect();
                assert_eq!(denied, vec!["a"], "{strategy:?}");
                let failed: Vec<&str> = d.failures.iter().map(|f| f.policy.as_str()).collect();
                assert_eq!(failed, vec!["b"], "{strategy:?}");
                assert_eq!(d.failures[0].reason, FailureReason::RuntimeError);
                assert!(
                    d.failures[0].detail.contains("the evaluator panicked")
                        && d.failures[0]
                            .detail
                            .contains("window size must be non-zero"),
                    "{strategy:?}: {}",
                    d.failures[0].detail
                );
                assert!(!d.allowed);
            }
        }
    }

    /// A runaway policy (10^10 steps) is stopped by the time limit on every strategy: the
    /// interpreter reads the clock every `INTERPRETER_TIMER_CHECK_INTERVAL` steps, the VM every
    /// `TIMER_CHECK_INTERVAL` instructions. (Were either check missing, this test would not end.)
    #[test]
    fn a_runaway_policy_is_stopped_on_every_strategy() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.rego"),
            policy_text("deny contains \"m\" if {\n\tcount([x | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x == y]) > 1\n}"),
        )
        .unwrap();
        let (sources, _) = source::resolve(dir.path(), false).unwrap();
        let set = built_with(
            &sources,
            "limits:\n  evaluationTimeoutMs: 100\n",
            Strategy::Grouped,
        );
        for strategy in STRATEGIES {
            let d = judge(
                &set.clone().with_strategy(strategy),
                &odd_review(),
                Wants::VALIDATE,
            );
            assert_eq!(d.failures.len(), 1, "{strategy:?}: {}", summary(&d));
            assert_eq!(
                d.failures[0].reason,
                FailureReason::TimeLimit,
                "{strategy:?}"
            );
            assert!(!d.allowed);
        }
    }

    /// A ConfigMap policy `id` denying with its id when `body` holds.
    fn configmap_policy(id: &str, body: &str) -> String {
        format!(
            "# METADATA\n# title: t\n# custom:\n#   id: {id}\n#   severity: low\n#   kinds: [ConfigMap]\npackage regate.policies.{id}\n\nimport rego.v1\n\ndeny contains \"{id}\" if {body}\n"
        )
    }

    /// A range too large to build (24 GB for `numbers.range(1, 1e9)`, which aborted the
    /// process) or a shift of 4e9 bits (512 MiB) fails the policy on every strategy with an
    /// error naming the call, and the policy beside it still answers; calls within the limits
    /// give the same values on each.
    #[test]
    fn a_call_too_large_to_build_fails_its_policy_on_every_strategy() {
        let dir = tempfile::tempdir().unwrap();
        for (id, body) in [
            ("huge", "{\n\tcount(numbers.range(1, 1e9)) > 0\n}"),
            ("stepped", "{\n\tcount(numbers.range_step(-1e12, 0, 7)) > 0\n}"),
            ("shifted", "{\n\tbits.lsh(1, 4e9) > 0\n}"),
            (
                "small",
                "{\n\tnumbers.range(3, 1) == [3, 2, 1]\n\tnumbers.range_step(10, 1, 4) == [10, 6, 2]\n\tcount(numbers.range(1, 1000000)) == 1000000\n\tbits.lsh(3, 4) == 48\n}",
            ),
        ] {
            std::fs::write(dir.path().join(format!("{id}.rego")), configmap_policy(id, body)).unwrap();
        }
        let (sources, _) = source::resolve(dir.path(), false).unwrap();
        let set = built_with(&sources, "", Strategy::Grouped);
        for strategy in STRATEGIES {
            let d = judge(
                &set.clone().with_strategy(strategy),
                &odd_review(),
                Wants::VALIDATE,
            );
            let mut failed: Vec<(&str, &str)> = d
                .failures
                .iter()
                .map(|f| (f.policy.as_str(), f.reason.as_str()))
                .collect();
            failed.sort_unstable();
            assert_eq!(
                failed,
                [
                    ("huge", "runtime_error"),
                    ("shifted", "runtime_error"),
                    ("stepped", "runtime_error")
                ],
                "{strategy:?}: {}",
                summary(&d)
            );
            for f in &d.failures {
                assert!(
                    f.detail.contains("would make 1000000000 numbers")
                        || f.detail.contains("would make 142857142858 numbers")
                        || f.detail.contains("would shift by 4000000000 bits"),
                    "{strategy:?}: {}",
                    f.detail
                );
            }
            assert!(
                d.violations.iter().any(|v| v.policy == "small"),
                "{strategy:?}: {}",
                summary(&d)
            );
        }
    }

    /// A policy on the VM that builds more than an evaluation's memory budget (9 million pairs,
    /// each within every other bound) is stopped there, fails as `memory_limit` without being
    /// run again on the interpreter, and the policy beside it answers.
    #[test]
    fn a_policy_building_past_its_memory_budget_fails_on_the_vm() {
        let dir = tempfile::tempdir().unwrap();
        for (id, body) in [
            (
                "pairs",
                "{\n\tcount([[x, y] | some x in numbers.range(1, 3000); some y in numbers.range(1, 3000)]) > 0\n}",
            ),
            ("small", "{\n\tcount(numbers.range(1, 1000)) == 1000\n}"),
        ] {
            std::fs::write(dir.path().join(format!("{id}.rego")), configmap_policy(id, body)).unwrap();
        }
        let (sources, _) = source::resolve(dir.path(), false).unwrap();
        let set = built_with(&sources, "", Strategy::Grouped);
        assert!(crate::policy::memory::limits().evaluation.is_some());
        for strategy in [Strategy::Grouped, Strategy::Compiled] {
            let d = judge(
                &set.clone().with_strategy(strategy),
                &odd_review(),
                Wants::VALIDATE,
            );
            let failed: Vec<(&str, &str)> = d
                .failures
                .iter()
                .map(|f| (f.policy.as_str(), f.reason.as_str()))
                .collect();
            assert_eq!(
                failed,
                [("pairs", "memory_limit")],
                "{strategy:?}: {}",
                summary(&d)
            );
            assert!(
                d.failures[0].detail.contains("memory budget"),
                "{strategy:?}: {}",
                d.failures[0].detail
            );
            assert!(
                d.violations.iter().any(|v| v.policy == "small"),
                "{strategy:?}: {}",
                summary(&d)
            );
        }
    }

    /// A policy waived by an exception is not evaluated, not even inside a pass: here it would
    /// run over the request's time budget, and every policy judged after it would fail closed.
    #[test]
    fn a_waived_policy_never_runs_in_a_pass() {
        let dir = tempfile::tempdir().unwrap();
        for (id, body) in [
            ("a", "input.request.object.data.missing"),
            (
                "b",
                "count([x | some x in numbers.range(1, 3000); some y in numbers.range(1, 3000); x == y]) > 1",
            ),
            ("c", "input.request.object.data.missing"),
        ] {
            std::fs::write(dir.path().join(format!("{id}.rego")), configmap_policy(id, body)).unwrap();
        }
        let (sources, _) = source::resolve(dir.path(), false).unwrap();
        let set = built_with(
            &sources,
            "limits:\n  evaluationTimeoutMs: 100\nexceptions:\n  - name: slow\n    policies: [b]\n    match: { namespace: n }\n    reason: testing\n    expires: \"2099-01-01T00:00:00Z\"\n",
            Strategy::Grouped,
        );
        assert_eq!(set.accel.groups(), vec![vec!["a", "b", "c"]]);
        let review = Review::from_slice(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"ConfigMap"},"resource":{"group":"","version":"v1","resource":"configmaps"},"namespace":"n","operation":"CREATE","userInfo":{},"object":{"kind":"ConfigMap","metadata":{"name":"c"},"data":{"x":"1"}}}}"#,
        )
        .unwrap();
        let d = judge(&set, &review, Wants::VALIDATE);
        assert!(d.failures.is_empty(), "{}", summary(&d));
        assert!(d.allowed, "{}", summary(&d));
        assert_eq!(d.evaluated, vec!["a", "c"]);
        assert_eq!(
            d.waivers
                .iter()
                .map(|w| w.policy.as_str())
                .collect::<Vec<_>>(),
            vec!["b"]
        );
    }

    fn policy_text(rules: &str) -> String {
        format!(
            "# METADATA\n# title: t\n# custom:\n#   id: p\n#   severity: low\n#   kinds: [ConfigMap]\npackage regate.policies.p\n\nimport rego.v1\n\n{rules}\n"
        )
    }

    fn set_of(rules: &str) -> PolicySet {
        PolicySet::of_one_rego_file(&policy_text(rules)).unwrap()
    }

    /// A function or rule whose first body is undefined (here: because a function it calls is)
    /// takes its `else` value, on every strategy; and a `:=` of an undefined value fails its
    /// body. regorus 0.14's bytecode skips the `else` and goes on with the undefined value
    /// instead, unless each such binding is followed by a guard (`policy::undefined_bindings`):
    /// with the guards, every one of these runs on bytecode and agrees with the interpreter.
    #[test]
    fn undefined_bindings_agree_on_every_strategy() {
        let review = odd_review();
        let owner = "trimmed(s) := trim_space(s)\n\nowner(obj) := o if {\n\to := trimmed(obj.metadata.labels.owner)\n} else := \"\"\n\ndeny contains \"no owner\" if owner(input.request.object) == \"\"";
        let set = set_of(owner);
        let d = judge(&set, &review, Wants::VALIDATE);
        assert!(!d.allowed, "{}", summary(&d));
        assert_eq!(set.backend(0), Backend::Bytecode { grouped: false });
        for rules in [
            owner,
            "trimmed(s) := trim_space(s)\n\nowner := o if {\n\to := trimmed(input.request.object.metadata.labels.owner)\n} else := \"\"\n\ndeny contains \"no owner\" if owner == \"\"",
            "owner(obj) := o if {\n\to := trim_space(obj.metadata.labels.owner)\n} else := \"\"\n\ndeny contains \"no owner\" if owner(input.request.object) == \"\"",
            "owner(obj) := o if {\n\to := obj.metadata.labels.owner\n} else := \"\"\n\ndeny contains \"no owner\" if owner(input.request.object) == \"\"",
            "g(x) := x.a\n\nf(x) := 1 if {\n\tg(x)\n} else := 2\n\ndeny contains \"two\" if f(input.request.object) == 2",
            "g(x) := x.a\n\nf(x) := y if {\n\ty := g(x)\n} else := 2 if {\n\ty := g(x.b)\n} else := 3\n\ndeny contains \"three\" if f(input.request.object) == 3",
            "str(x) := x if is_string(x)\n\ntext(raw) := t if {\n\tt := str(raw)\n} else := \"\" if raw == null\n\ndeny contains \"empty\" if text(input.request.object.data.nul) == \"\"",
            "f(x) := 1 if {\n\to := x.missing\n} else := 2\n\ndeny contains \"two\" if f(input.request.object) == 2",
            "v := 1 if {\n\to := input.request.object.missing\n} else := 2\n\ndeny contains \"two\" if v == 2",
            "f(x) := 1 if {\n\to := x.missing\n}\n\ndeny contains \"one\" if not f(input.request.object)",
            "deny contains \"x\" if {\n\to := input.request.object.missing\n}\n\ndeny contains \"y\" if input.request.object.data.w",
            "deny contains \"y\" if {\n\tm := input.request.object.missing\n\tnot m == 1\n}",
            "deny contains \"y\" if {\n\tcount([m | m := input.request.object.missing]) == 0\n}",
            "deny contains \"y\" if {\n\tcount({k: o | some k in [\"a\"]; o := input.request.object.missing}) == 0\n}",
            "deny contains \"y\" if {\n\tcount([x | some i in [1]; x := {\"a\": input.request.object.missing}]) == 0\n}",
            // Guarded, or harmless: these stay on bytecode, and agree.
            "deny contains m if {\n\tm := input.request.object.missing\n}\n\ndeny contains \"y\" if input.request.object.data.w",
            "f(x) := o if {\n\to := x.missing\n\to == o\n} else := 2\n\ndeny contains \"two\" if f(input.request.object) == 2",
            "deny contains \"y\" if {\n\tx := {\"a\": input.request.object.missing}\n\tis_object(x)\n}",
            "text(raw) := \"\" if raw == null\n\nelse := raw if is_string(raw)\n\ndeny contains \"empty\" if text(input.request.object.data.nul) == \"\"",
            // Loops, destructuring, `every` and comprehensions around undefined bindings.
            "f(x) := y if {\n\tsome k\n\ty := x.data[k].missing\n} else := 2\n\ndeny contains \"two\" if f(input.request.object) == 2",
            "deny contains k if {\n\tsome k, v in input.request.object.data\n\tx := v.missing\n}\n\ndeny contains \"y\" if input.request.object.data.w",
            "deny contains k if {\n\tsome k in object.keys(input.request.object.data)\n\tx := input.request.object.data[k]\n\tnot x == 1\n}",
            "deny contains \"y\" if {\n\tevery v in input.request.object.data {\n\t\tz := v.missing\n\t}\n}",
            "deny contains \"y\" if {\n\t[a, b] := input.request.object.data.pair\n}",
            "deny contains \"y\" if {\n\t[a, b] := [input.request.object.missing, 1]\n}",
            "deny contains \"y\" if {\n\t{\"a\": a} := {\"a\": input.request.object.missing}\n}",
            "deny contains \"y\" if {\n\tcount({k | some k, v in input.request.object.data; x := v.missing}) == 0\n}",
            "g(x) := x.a\n\nf(x) := y if {\n\ty := g(x)\n\tz := g(y)\n} else := 2\n\ndeny contains \"two\" if f({\"a\": {\"b\": 1}}) == 2",
        ] {
            let set = set_of(rules);
            let expected = summary(&judge(
                &set.clone().with_strategy(Strategy::CloneEach),
                &review,
                Wants::VALIDATE,
            ));
            for strategy in STRATEGIES {
                let set = set.clone().with_strategy(strategy);
                if matches!(strategy, Strategy::Compiled | Strategy::Grouped) {
                    assert!(
                        matches!(set.backend(0), Backend::Bytecode { .. }),
                        "{strategy:?} on `{rules}`: {}",
                        set.backend(0)
                    );
                }
                let d = judge(&set, &review, Wants::VALIDATE);
                assert_eq!(summary(&d), expected, "{strategy:?} on `{rules}`");
            }
        }
        // A condition in a comprehension inside a loop: regorus's VM would apply its failure to
        // the loop (and here run to the time limit). Refused, with the place, and agreeing.
        let rules = "deny contains \"y\" if {\n\tcount([x | some v in input.request.object.data; x := [y | y := v.missing]]) == 4\n}";
        let set = set_of(rules).with_strategy(Strategy::Compiled);
        match set.backend(0) {
            Backend::Interpreter { reason } => {
                assert!(
                    reason.contains("p.rego:12") && reason.contains("comprehension"),
                    "{reason}"
                )
            }
            other => panic!("{other}"),
        }
        let d = judge(&set, &review, Wants::VALIDATE);
        assert!(!d.allowed && d.failures.is_empty(), "{}", summary(&d));
    }

    fn one_policy(body: &str) -> PolicySet {
        let text = format!(
            "# METADATA\n# title: t\n# custom:\n#   id: p\n#   severity: low\n#   kinds: [ConfigMap]\npackage regate.policies.p\n\nimport rego.v1\n\ndeny contains \"m\" if {{\n\t{body}\n}}\n\nwarn contains \"w\" if input.request.object.data.w\n"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.rego"), text).unwrap();
        let (sources, _) = source::resolve(dir.path(), false).unwrap();
        PolicySet::build_with_rego_only(
            &sources,
            std::sync::Arc::new(Config::default()),
            NamespaceLabels::default(),
        )
        .unwrap()
    }

    fn odd_review() -> Review {
        Review::from_slice(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"ConfigMap"},"resource":{"group":"","version":"v1","resource":"configmaps"},"namespace":"n","operation":"CREATE","userInfo":{},"object":{"kind":"ConfigMap","metadata":{"name":"c"},"data":{"x":"abc","none":[],"nul":null,"w":true}}}}"#,
        )
        .unwrap()
    }

    const STRATEGIES: [Strategy; 4] = [
        Strategy::CloneEach,
        Strategy::Interpreter,
        Strategy::Compiled,
        Strategy::Grouped,
    ];

    /// A runtime error in a rule body is a policy failure on every strategy, as the interpreter
    /// reports it; bytecode must never read it as "the rule does not hold" (which would allow).
    #[test]
    fn runtime_errors_are_failures_on_every_strategy() {
        let review = odd_review();
        for body in [
            "n := to_number(input.request.object.data.x)\n\tn > 5",
            "n := input.request.object.data.x + 1\n\tn > 5",
            "n := 10 / count(input.request.object.data.none)\n\tn > 5",
            "n := count(5)\n\tn > 5",
            "regex.match(\"[\", input.request.object.data.x)",
            "lower(input.request.object.data.none) == \"x\"",
        ] {
            let set = one_policy(body);
            for strategy in STRATEGIES {
                let d = judge(
                    &set.clone().with_strategy(strategy),
                    &review,
                    Wants::VALIDATE,
                );
                assert_eq!(
                    d.failures.len(),
                    1,
                    "{strategy:?} on `{body}`: {}",
                    summary(&d)
                );
                assert!(!d.allowed, "{strategy:?} on `{body}`: {}", summary(&d));
            }
        }
    }

    /// A flavor plugged in from above (here a stand-in) is evaluated with its
    /// own input and its own rule on every backend.
    #[test]
    fn a_plugged_flavor_gets_its_input_and_rule_on_every_strategy() {
        #[derive(Debug)]
        struct Wrapped;
        impl crate::policy::flavor::PluggedPolicy for Wrapped {
            fn deny_rule(&self) -> &'static str {
                "violation"
            }
            fn input(&self, input: &Value) -> Value {
                let mut map = std::collections::BTreeMap::new();
                map.insert(Value::from("wrapped"), input.clone());
                Value::from(map)
            }
            fn program_key(&self) -> Option<String> {
                None
            }
            fn engine_for_vm(&self, _: &Engine, _: &str) -> Result<Option<Engine>, String> {
                Ok(None)
            }
            fn refusal(&self, _: &regorus::CompiledPolicy) -> Option<String> {
                None
            }
            fn install_builtins(&self, _: &mut Program) -> Result<(), String> {
                Ok(())
            }
            fn as_any(&self) -> &dyn std::any::Any {
                self
            }
        }
        let mut set = set_of(
            "deny contains \"native\" if input.request.object.data.x == \"abc\"\n\nviolation contains \"plugged\" if input.wrapped.request.object.data.x == \"abc\"",
        );
        set.policies[0].flavor = Flavor::Plugged(Arc::new(Wrapped));
        assert!(matches!(
            set.clone().with_strategy(Strategy::Compiled).backend(0),
            Backend::Bytecode { .. }
        ));
        let review = odd_review();
        for strategy in STRATEGIES {
            let d = judge(
                &set.clone().with_strategy(strategy),
                &review,
                Wants::VALIDATE,
            );
            let messages: Vec<&str> = d.violations.iter().map(|v| v.message.as_str()).collect();
            assert_eq!(messages, ["plugged"], "{strategy:?}: {}", summary(&d));
        }
    }

    /// Where the interpreter reports no error, bytecode agrees with it, including on what
    /// non-strict and strict evaluation treat differently.
    #[test]
    fn no_error_no_difference() {
        let review = odd_review();
        for body in [
            "input.request.object.data.x < 5",
            "input.request.object.data.x > 5",
            "input.request.object.data.nul",
            "input.request.object.data.missing < 5",
            "not startswith(input.request.object.data.missing, \"a\")",
            "count(input.request.object.data.x) == 3",
        ] {
            let set = one_policy(body);
            let expected = summary(&judge(
                &set.clone().with_strategy(Strategy::CloneEach),
                &review,
                Wants::VALIDATE,
            ));
            assert!(!expected.contains("failures=[P"), "`{body}`: {expected}");
            for strategy in STRATEGIES {
                let d = judge(
                    &set.clone().with_strategy(strategy),
                    &review,
                    Wants::VALIDATE,
                );
                assert_eq!(summary(&d), expected, "{strategy:?} on `{body}`");
            }
        }
    }

    const CONFIG: &str = "environments:\n  default: production\n  namespaces: { prod: production, staging: staging, dev: development }\n";

    fn reviews(dir: &str) -> Vec<(String, Review)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut files: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (
                    name,
                    Review::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
                )
            })
            .collect()
    }

    fn summary(d: &Decision) -> String {
        format!(
            "allowed={} violations={:?} warn={:?} failures={:?} patch={:?}",
            d.allowed,
            d.violations,
            d.warn_results,
            d.failures,
            d.patch
                .as_ref()
                .map(|p| serde_json::to_string(p).unwrap_or_default())
        )
    }

    /// Bytecode and per-thread engines answer exactly what a fresh interpreter clone answers,
    /// in any order of requests (no state carried from one evaluation to the next).
    #[test]
    fn fast_paths_agree_with_the_interpreter() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = Config::parse(CONFIG, std::path::Path::new("regate.yaml")).unwrap();
        let (sources, _) = source::resolve(&root.join("policies"), false).unwrap();
        let set = PolicySet::build_with_rego_only(
            &sources,
            std::sync::Arc::new(config),
            NamespaceLabels::default(),
        )
        .unwrap();
        let reference = set.clone().with_strategy(Strategy::CloneEach);
        let interpreter = set.clone().with_strategy(Strategy::Interpreter);
        let grouped = set.clone().with_strategy(Strategy::Grouped);
        let compiled = set.with_strategy(Strategy::Compiled);
        assert!(
            grouped.accel.groups().iter().any(|g| g.len() >= 4),
            "the pod policies share one pass: {:?}",
            grouped.accel.groups()
        );
        assert_eq!(
            compiled.compiled_policies().len(),
            compiled.policies.len(),
            "every default policy compiles: {:?}",
            compiled.compiled_policies()
        );
        let mut all = reviews("fixtures/admission");
        all.extend(reviews("fixtures/bench"));
        let expected: Vec<String> = all
            .iter()
            .map(|(_, r)| summary(&judge(&reference, r, Wants::ALL)))
            .collect();
        for pass in 0..2 {
            let order: Vec<usize> = if pass == 0 {
                (0..all.len()).collect()
            } else {
                (0..all.len()).rev().collect()
            };
            for &i in &order {
                let (name, review) = &all[i];
                for (label, set) in [
                    ("interpreter", &interpreter),
                    ("compiled", &compiled),
                    ("grouped", &grouped),
                ] {
                    let got = summary(&judge(set, review, Wants::ALL));
                    assert_eq!(got, expected[i], "{label} on {name} (pass {pass})");
                }
            }
        }
    }
}
