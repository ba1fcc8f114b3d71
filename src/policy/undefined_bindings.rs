//! Makes a `:=` binding of an undefined value fail its body on regorus's bytecode, as it does
//! on the interpreter.
//!
//! In Rego, `x := expr` where `expr` is undefined makes the rule body fail. regorus 0.14's
//! compiler guards the variables that `=` binds (a `Guard` instruction after the `Move` that
//! binds them), but not the ones `:=` binds: the VM goes on with an undefined `x`. Usually a
//! later statement reads `x` and fails then, and the answer is the same. It differs when
//! nothing does:
//! - `x` is never read again: the body holds where it should not;
//! - `x` is read only under `not` (`not x == 1` holds) or inside a comprehension (which is
//!   defined whatever `x` is);
//! - `x` is a comprehension's term: the VM collects the row where the interpreter skips it;
//! - `x` is the value of a body followed by `else`: the VM answers undefined instead of taking
//!   the `else` (`owner(obj) := o if { o := f(obj.x) } else := ""`).
//!
//! [`guard`] inserts, after each `Move` compiled from a `:=` binding, the guard the compiler
//! emits after an `=` binding (`Guard { mode: NotUndefined }` on the bound register): the
//! program then fails the body, skips the row or takes the `else` exactly as the interpreter
//! does. The instructions after an inserted guard move, so every jump target and entry point
//! of the program is renumbered.

use std::collections::HashSet;

use regorus::rvm::instructions::GuardMode;
use regorus::rvm::{Instruction, Program};
use regorus::unstable::{AssignOp, Expr, Literal, Module, Query, Ref, Rule, RuleHead, Span};

use crate::policy::instructions::classify;

/// Where a statement or expression is: file, line, column and length of its text, as a
/// program's instruction spans record it.
type Place = (String, usize, usize, usize);

fn place(span: &Span) -> Place {
    (
        span.source.get_path().clone(),
        span.line as usize,
        span.col as usize,
        span.text().len(),
    )
}

/// A guard to insert after the instruction at `after`. Insertions at one place are ordered by
/// `mode`: a key check's coalescing first, then the check, then guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Insertion {
    after: usize,
    /// Whether jumps to the instruction after `after` run the guard first (it opens that
    /// instruction: the end of a rule body), or skip it (it closes the one at `after`: a
    /// binding, which a jump to the next statement has already passed).
    opens_next: bool,
    mode: GuardSort,
    register: u8,
}

/// What an inserted instruction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum GuardSort {
    /// Undefined becomes null, so that the key check is called (a builtin call with an
    /// undefined argument answers undefined without running).
    CoalesceToNull,
    /// A call of the key check registered with these parameters (see
    /// `builtins::object_key_checks`).
    ObjectKeyCheck(u16),
    NotUndefined,
    Condition,
}

/// Inserts the guards described in the module's documentation into `program`, compiled from
/// `modules`: after every `Move` that binds a `:=` variable, and at the end of every body
/// followed by `else`; with `check_object_keys`, a key check before every partial object
/// insert (a partial object whose key may get two values: see
/// `builtins`). Returns how many instructions were inserted.
pub fn guard(
    program: &mut Program,
    modules: &[Ref<Module>],
    check_object_keys: bool,
) -> Result<usize, String> {
    if program.instruction_spans.len() != program.instructions.len() {
        return Err("the program's instruction spans do not match its instructions".to_string());
    }
    let mut insertions = binding_guards(program, modules);
    insertions.extend(else_guards(program)?);
    if check_object_keys {
        for check in crate::policy::builtins::object_key_checks(program)? {
            // Opening the insert: a jump to it runs the check first.
            let after = check
                .pc
                .checked_sub(1)
                .ok_or("a partial object insert opens the program")?;
            let opening = |register, mode| Insertion {
                after,
                opens_next: true,
                mode,
                register,
            };
            insertions.push(opening(check.key, GuardSort::CoalesceToNull));
            insertions.push(opening(check.value, GuardSort::CoalesceToNull));
            insertions.push(opening(
                check.key,
                GuardSort::ObjectKeyCheck(check.params_index),
            ));
        }
    }
    insertions.sort();
    insertions.dedup();
    if insertions.is_empty() {
        comprehensions_end_at_their_end(program)?;
        return Ok(0);
    }
    let total = program.instructions.len() + insertions.len();
    if total > Program::MAX_INSTRUCTIONS {
        return Err(format!(
            "guarding undefined values makes the program longer ({total} instructions) than regorus's VM addresses"
        ));
    }
    // The VM reads `target - 1` of a loop's or comprehension's end as the instruction that
    // closes it (`LoopNext`, `ComprehensionEnd`), and jumps to `target - 1` to resume at
    // `target`. Both stay true unless a guard that jumps skip lands right before a target,
    // which only a binding just before one would cause: refuse rather than guess.
    let targets = jump_targets(program);
    if let Some(i) = insertions
        .iter()
        .find(|i| !i.opens_next && targets.contains(&(i.after + 1)))
    {
        return Err(format!(
            "a `:=` binding at {} ends a loop or comprehension, where a guard cannot be inserted",
            crate::policy::bytecode_errors::location(program, i.after)
        ));
    }
    Relocation::new(&insertions, program.instructions.len()).apply(program)?;
    let mut instructions = Vec::with_capacity(total);
    let mut spans = Vec::with_capacity(total);
    let mut next = insertions.iter().peekable();
    for (pc, (instruction, span)) in program
        .instructions
        .drain(..)
        .zip(program.instruction_spans.drain(..))
        .enumerate()
    {
        instructions.push(instruction);
        spans.push(span.clone());
        while let Some(insertion) = next.next_if(|i| i.after == pc) {
            instructions.push(match insertion.mode {
                GuardSort::CoalesceToNull => Instruction::CoalesceUndefinedToNull {
                    register: insertion.register,
                },
                GuardSort::ObjectKeyCheck(params_index) => {
                    Instruction::BuiltinCall { params_index }
                }
                GuardSort::NotUndefined => Instruction::Guard {
                    register: insertion.register,
                    mode: GuardMode::NotUndefined,
                },
                GuardSort::Condition => Instruction::Guard {
                    register: insertion.register,
                    mode: GuardMode::Condition,
                },
            });
            spans.push(span.clone());
        }
    }
    program.instructions = instructions;
    program.instruction_spans = spans;
    comprehensions_end_at_their_end(program)?;
    Ok(insertions.len())
}

/// Points each comprehension's end at its `ComprehensionEnd` instruction instead of the one
/// after it. regorus 0.14's VM leaves a comprehension whose body failed by jumping to that
/// end, so it skipped the `ComprehensionEnd` that closes it: the comprehension stayed open,
/// and the next failed condition of the body went back into it (a run to the time limit).
/// The end is read only on those jumps (a body that runs to its end meets the instruction
/// anyway). Comprehensions that iterate by themselves (not emitted for Rego) are refused.
fn comprehensions_end_at_their_end(program: &mut Program) -> Result<(), String> {
    for params in &mut program.instruction_data.comprehension_begin_params {
        if params.collection_reg != params.result_reg {
            return Err(
                "a comprehension iterates by itself, which regate does not examine".to_string(),
            );
        }
        let end = usize::from(params.comprehension_end);
        match end
            .checked_sub(1)
            .and_then(|pc| program.instructions.get(pc))
        {
            Some(Instruction::ComprehensionEnd {}) => {
                params.comprehension_end = params.comprehension_end.saturating_sub(1);
            }
            // Already pointing at it.
            _ if matches!(
                program.instructions.get(end),
                Some(Instruction::ComprehensionEnd {})
            ) => {}
            _ => return Err("a comprehension does not end where regorus says".to_string()),
        }
    }
    Ok(())
}

/// A guard after each `Move` that binds a `:=` variable of `modules` (found by the span the
/// compiler gives it: the `:=` statement's or expression's).
fn binding_guards(program: &Program, modules: &[Ref<Module>]) -> Vec<Insertion> {
    let mut places = HashSet::new();
    for module in modules {
        for rule in &module.policy {
            rule_places(rule, &mut places);
        }
    }
    let binds = |pc: usize, instruction: &Instruction| -> Option<u8> {
        let Instruction::Move { dest, .. } = *instruction else {
            return None;
        };
        let span = program.instruction_spans.get(pc)?.as_ref()?;
        let file = program.sources.get(span.source_index)?;
        places
            .contains(&(file.name.clone(), span.line, span.column, span.length))
            .then_some(dest)
    };
    let mut out = Vec::new();
    for (pc, instruction) in program.instructions.iter().enumerate() {
        if let Some(register) = binds(pc, instruction) {
            let guarded = matches!(
                program.instructions.get(pc + 1),
                Some(Instruction::Guard { register: r, mode: GuardMode::NotUndefined }) if *r == register
            );
            if !guarded {
                out.push(Insertion {
                    after: pc,
                    opens_next: false,
                    register,
                    mode: GuardSort::NotUndefined,
                });
            }
        }
    }
    out
}

/// A guard after every loop of a body followed by `else` (not the loops of comprehensions in
/// it) that fails when no iteration held. regorus runs such a body to its end without failing
/// when its loops find nothing, and answers undefined instead of taking the `else`; the
/// interpreter fails the body and takes it. (A body that holds with an undefined value does
/// not take the `else`, on either.)
fn else_guards(program: &Program) -> Result<Vec<Insertion>, String> {
    let data = &program.instruction_data;
    let comprehensions: Vec<(usize, usize)> = data
        .comprehension_begin_params
        .iter()
        .map(|p| (usize::from(p.body_start), usize::from(p.comprehension_end)))
        .collect();
    let mut out = Vec::new();
    for rule in &program.rule_infos {
        for (definition, bodies) in rule.definitions.iter().enumerate() {
            let is_else = rule.else_bodies.get(definition);
            for (b, window) in bodies.windows(2).enumerate() {
                if !is_else.and_then(|e| e.get(b + 1)).copied().unwrap_or(false) {
                    continue;
                }
                let (entry, next) = (pc_of(window[0])?, pc_of(window[1])?);
                if !matches!(
                    program.instructions.get(entry),
                    Some(Instruction::RuleInit { .. })
                ) {
                    return Err(format!(
                        "a body of {} does not start where regorus says",
                        rule.name
                    ));
                }
                for pc in entry..next {
                    let Some(Instruction::LoopStart { params_index }) =
                        program.instructions.get(pc)
                    else {
                        continue;
                    };
                    let params = data
                        .get_loop_params(*params_index)
                        .ok_or_else(|| format!("a loop of {} has no parameters", rule.name))?;
                    if matches!(params.mode, regorus::rvm::instructions::LoopMode::Every)
                        || comprehensions
                            .iter()
                            .any(|&(start, end)| start <= pc && pc < end)
                    {
                        continue;
                    }
                    let end = usize::from(params.loop_end);
                    if end == 0 || end > next {
                        return Err(format!("a loop of {} ends outside its body", rule.name));
                    }
                    out.push(Insertion {
                        after: end - 1,
                        opens_next: true,
                        register: params.result_reg,
                        mode: GuardSort::Condition,
                    });
                }
            }
        }
    }
    Ok(out)
}

fn pc_of(pc: u32) -> Result<usize, String> {
    usize::try_from(pc).map_err(|_| "a program counter does not fit".to_string())
}

/// Old program counter → new one, with guards inserted.
struct Relocation {
    /// For each old pc (and one past the end): how many guards are inserted before its
    /// instruction, and how many of those a jump to it runs.
    shift: Vec<(usize, usize)>,
}

impl Relocation {
    fn new(insertions: &[Insertion], len: usize) -> Relocation {
        let mut shift = Vec::with_capacity(len + 1);
        let mut before = 0;
        let mut opening = 0;
        let mut next = insertions.iter().peekable();
        for pc in 0..=len {
            shift.push((before, opening));
            opening = 0;
            while let Some(i) = next.next_if(|i| i.after == pc) {
                before += 1;
                if i.opens_next {
                    opening += 1;
                }
            }
        }
        Relocation { shift }
    }

    /// Where a jump to `old` goes: to its instruction, or to the guards that open it.
    fn pc(&self, old: usize) -> Result<usize, String> {
        self.shift
            .get(old)
            .map(|(before, opening)| old + before - opening)
            .ok_or_else(|| format!("jump target {old} is outside the program"))
    }

    fn pc16(&self, old: u16) -> Result<u16, String> {
        u16::try_from(self.pc(usize::from(old))?)
            .map_err(|_| "a jump target no longer fits regorus's VM".to_string())
    }

    fn pc32(&self, old: u32) -> Result<u32, String> {
        u32::try_from(self.pc(pc_of(old)?)?).map_err(|_| "a jump target does not fit".to_string())
    }

    /// Renumbers every program counter `program` holds: jumps in instructions and their
    /// parameters, entry points, and rule bodies.
    fn apply(&self, program: &mut Program) -> Result<(), String> {
        for instruction in &mut program.instructions {
            // The others hold no program counter (the parameters of those that point into the
            // program are renumbered below).
            if !classify(instruction).jumps() {
                continue;
            }
            match instruction {
                Instruction::LoopNext {
                    body_start,
                    loop_end,
                } => {
                    *body_start = self.pc16(*body_start)?;
                    *loop_end = self.pc16(*loop_end)?;
                }
                Instruction::LogicalBlockStart { end_pc, .. }
                | Instruction::AllOfNext { end_pc, .. }
                | Instruction::AnyOfNext { end_pc, .. } => *end_pc = self.pc16(*end_pc)?,
                _ => {
                    return Err(
                        "an instruction holds a program counter regate cannot renumber".to_string(),
                    )
                }
            }
        }
        for params in &mut program.instruction_data.loop_params {
            params.body_start = self.pc16(params.body_start)?;
            params.loop_end = self.pc16(params.loop_end)?;
        }
        for params in &mut program.instruction_data.comprehension_begin_params {
            params.body_start = self.pc16(params.body_start)?;
            params.comprehension_end = self.pc16(params.comprehension_end)?;
        }
        for pc in program.entry_points.values_mut() {
            *pc = self.pc(*pc)?;
        }
        program.main_entry_point = self.pc32(program.main_entry_point)?;
        for rule in &mut program.rule_infos {
            let mut definitions = (*rule.definitions).clone();
            for bodies in &mut definitions {
                for pc in bodies.iter_mut() {
                    *pc = self.pc32(*pc)?;
                }
            }
            rule.definitions = regorus::Rc::new(definitions);
            for pc in rule.destructuring_blocks.iter_mut().flatten() {
                *pc = self.pc32(*pc)?;
            }
        }
        Ok(())
    }
}

/// The loop and comprehension targets of `program` (old program counters).
fn jump_targets(program: &Program) -> HashSet<usize> {
    let mut out = HashSet::new();
    for instruction in &program.instructions {
        if let Instruction::LoopNext {
            body_start,
            loop_end,
        } = *instruction
        {
            out.insert(usize::from(body_start));
            out.insert(usize::from(loop_end));
        }
    }
    for p in &program.instruction_data.loop_params {
        out.insert(usize::from(p.body_start));
        out.insert(usize::from(p.loop_end));
    }
    for p in &program.instruction_data.comprehension_begin_params {
        out.insert(usize::from(p.body_start));
        out.insert(usize::from(p.comprehension_end));
    }
    out
}

/// The places of the `:=` statements in `rule` (statement and expression: the compiler spans
/// the binding's `Move` with one of them).
fn rule_places(rule: &Rule, out: &mut HashSet<Place>) {
    match rule {
        Rule::Spec { head, bodies, .. } => {
            match head {
                RuleHead::Compr { refr, assign, .. } => {
                    expr_places(refr, out);
                    if let Some(a) = assign {
                        expr_places(&a.value, out);
                    }
                }
                RuleHead::Set { refr, key, .. } => {
                    expr_places(refr, out);
                    if let Some(k) = key {
                        expr_places(k, out);
                    }
                }
                RuleHead::Func {
                    refr, args, assign, ..
                } => {
                    expr_places(refr, out);
                    for a in args {
                        expr_places(a, out);
                    }
                    if let Some(a) = assign {
                        expr_places(&a.value, out);
                    }
                }
            }
            for body in bodies {
                if let Some(a) = &body.assign {
                    expr_places(&a.value, out);
                }
                query_places(&body.query, out);
            }
        }
        Rule::Default {
            refr, args, value, ..
        } => {
            expr_places(refr, out);
            for a in args {
                expr_places(a, out);
            }
            expr_places(value, out);
        }
    }
}

fn query_places(q: &Query, out: &mut HashSet<Place>) {
    for stmt in &q.stmts {
        match &stmt.literal {
            Literal::Expr { expr, .. } => {
                if let Expr::AssignExpr {
                    op: AssignOp::ColEq,
                    span,
                    ..
                } = expr.as_ref()
                {
                    out.insert(place(&stmt.span));
                    out.insert(place(span));
                }
                expr_places(expr, out);
            }
            Literal::NotExpr { expr, .. } => expr_places(expr, out),
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    expr_places(k, out);
                }
                expr_places(value, out);
                expr_places(collection, out);
            }
            Literal::Every { domain, query, .. } => {
                expr_places(domain, out);
                query_places(query, out);
            }
            Literal::SomeVars { .. } => {}
        }
        for with in &stmt.with_mods {
            expr_places(&with.refr, out);
            expr_places(&with.r#as, out);
        }
    }
}

/// The `:=` places in the comprehensions inside `e`.
fn expr_places(e: &Expr, out: &mut HashSet<Place>) {
    match e {
        Expr::ArrayCompr { query, .. }
        | Expr::SetCompr { query, .. }
        | Expr::ObjectCompr { query, .. } => query_places(query, out),
        _ => {}
    }
    children(e, &mut |c| expr_places(c, out));
}

/// The direct sub-expressions of `e` (not the queries of comprehensions).
fn children(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    match e {
        Expr::String { .. }
        | Expr::RawString { .. }
        | Expr::Number { .. }
        | Expr::Bool { .. }
        | Expr::Null { .. }
        | Expr::Var { .. } => {}
        Expr::Array { items, .. } | Expr::Set { items, .. } => items.iter().for_each(|i| f(i)),
        Expr::Object { fields, .. } => {
            for (_, k, v) in fields {
                f(k);
                f(v);
            }
        }
        Expr::ArrayCompr { term, .. } | Expr::SetCompr { term, .. } => f(term),
        Expr::ObjectCompr { key, value, .. } => {
            f(key);
            f(value);
        }
        Expr::Call { fcn, params, .. } => {
            f(fcn);
            params.iter().for_each(|p| f(p));
        }
        Expr::UnaryExpr { expr, .. } => f(expr),
        Expr::RefDot { refr, .. } => f(refr),
        Expr::RefBrack { refr, index, .. } => {
            f(refr);
            f(index);
        }
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => {
            f(lhs);
            f(rhs);
        }
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => {
            if let Some(k) = key {
                f(k);
            }
            f(value);
            f(collection);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use regorus::languages::rego::compiler::Compiler;
    use regorus::{Engine, Value};

    /// `data.p.v` of `rules` on `input`: (interpreter, bytecode with guards).
    fn both(rules: &str, input: &serde_json::Value) -> (String, String) {
        interpreter_and_guarded_vm(rules, input, false)
    }

    /// `data.p.v` of `rules` on `input`: (interpreter, bytecode with guards, and with partial
    /// object keys checked when `check_object_keys`); an error as `error <message>`.
    pub(crate) fn interpreter_and_guarded_vm(
        rules: &str,
        input: &serde_json::Value,
        check_object_keys: bool,
    ) -> (String, String) {
        let mut engine = Engine::new();
        engine
            .add_policy(
                "p.rego".into(),
                format!("package p\nimport rego.v1\n{rules}\n"),
            )
            .unwrap();
        engine.set_input(Value::from(input.clone()));
        let interpreted = match engine.clone().eval_rule("data.p.v".into()) {
            Ok(v) => v.to_string(),
            Err(e) => format!("error {e}"),
        };
        let compiled = engine.compile_with_entrypoint(&"data.p.v".into()).unwrap();
        let mut program =
            (*Compiler::compile_from_policy(&compiled, &["data.p.v"]).unwrap()).clone();
        guard(&mut program, compiled.get_modules(), check_object_keys).unwrap();
        if std::env::var("LISTING").is_ok() {
            let config = regorus::rvm::program::AssemblyListingConfig::default();
            println!(
                "{}",
                regorus::rvm::program::generate_assembly_listing(&program, &config)
            );
        }
        let mut vm = regorus::rvm::RegoVM::new();
        vm.load_program(std::sync::Arc::new(program));
        vm.set_input(Value::from(input.clone()));
        let bytecode = match vm.execute_entry_point_by_name("data.p.v") {
            Ok(v) => v.to_string(),
            Err(e) => format!("error {e}"),
        };
        (interpreted, bytecode)
    }

    /// The VM with guards answers as the interpreter on undefined bindings and on bodies before
    /// `else` that find nothing. (Not listed: a partial rule's head reading a field a value lacks,
    /// `v contains x.a if { some x in input.items }`, where regorus's interpreter answers an
    /// error or nothing and the VM, like OPA, skips the value: see the module documentation.)
    #[test]
    fn guarded_bytecode_agrees_with_the_interpreter() {
        let input = serde_json::json!({"items": [{"a": 1}, {}], "items2": [{}, {"a": 1}], "items3": [1, 2], "o": {"k": {"a": 2}, "l": {}}, "o2": {"a": {}, "k": {"a": 2}}, "s": "x"});
        let mut bad = Vec::new();
        for rules in [
            "v contains x.a if { some x in input.items3 }",
            "v contains x if { some x in input.items3 }",
            "v contains y if { some x in input.items; y := x.a }",
            "v := x.a if { some x in input.items }",
            "v contains m if { x := input.items2[_]; m := {\"m\": x.a} }",
            "v contains x if { x := input.items2[_].a }",
            "f := sprintf(\"x %v\", args) if { input.s; args := [concat(\", \", [n | data.inv.c[n]])] } else := \"y\"\nv := f",
            "v := y if { some x in input.items; y := x.a }",
            "f(x) := y if { some k; y := x[k].missing } else := 2\nv := f(input.o)",
            "f(x) := 1 if { some k; x[k].missing } else := 2\nv := f(input.o)",
            "f(x) := 1 if { some k; some j; x[k][j] == 7 } else := 2\nv := f(input.o)",
            "f(x) := x.missing if { true } else := 2\nv := f(input.o)",
            "v := [y | some x in input.items; y := x.a]",
            "v := 1 if { y := input.missing } else := 2",
            "v := 1 if { every x in input.items { y := x.a } } else := 2",
            "v := 1 if { [a, b] := input.items } else := 2",
            "v := 1 if { [a, b] := [input.missing, 1] } else := 2",
            "v := 1 if { {\"a\": a} := {\"a\": input.missing} } else := 2",
            "g(x) := x.a\nf(x) := y if { y := g(x) } else := 2\nv := f(input.o)",
            "g(x) := x.a\nf(x) := 1 if { g(x) } else := 2\nv := f(input.o)",
            "g(x) := x.a\nf(x) := 1 if { some k; g(x[k]) == 3 } else := 2\nv := f(input.o)",
        ] {
            let (i, b) = both(rules, &input);
            if i != b {
                bad.push(format!("{rules}\n  interpreter: {i}\n  bytecode:    {b}"));
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }
}
