//! Gatekeeper templates on regorus's bytecode VM.
//!
//! The interpreter runs a template with [`rego_compat`]'s adjustments: the source rewrites
//! (applied when the template is compiled, so the bytecode is built from the same rewritten
//! modules) and OPA's `sprintf`, installed as an engine extension. The VM cannot call engine
//! extensions; it calls builtins through function pointers resolved when the program is built.
//! [`install_opa_builtins`] points those of `sprintf` at OPA's formatting, after the program's
//! builtins were guarded (`policy::bytecode_errors`), and guards it the same way: any error
//! stops the VM, and the policy is evaluated again on the interpreter, which reports it.
//!
//! [`refusal`] names the constructs of a template the VM is known to evaluate differently from
//! the interpreter and that no guard catches; such a template stays on the interpreter.

use regorus::rvm::Program;
use std::collections::BTreeMap;

use regorus::unstable::{Expr, Ref, Rule, RuleHead, Span};
use regorus::{Engine, Value};

use crate::gatekeeper::rego_compat;

/// What an OPA-compatible builtin's error becomes on the VM: the one kind of error a rule body
/// does not swallow, as `policy::bytecode_errors` escalates the errors of guarded builtins.
fn escalated() -> anyhow::Error {
    crate::policy::bytecode_errors::escalated()
}

/// OPA's `sprintf` (Go's formatting of missing arguments, `%!v(MISSING)`) over regorus's, called
/// strictly as the interpreter calls it; any error escalated so that the VM stops.
fn opa_sprintf(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    _strict: bool,
) -> anyhow::Result<Value> {
    let Some(&(regorus_sprintf, _)) = regorus::unstable::BUILTINS.get("sprintf") else {
        return Err(escalated());
    };
    let fixed = match args {
        [Value::String(format), list @ Value::Array(items)] => {
            rego_compat::mark_missing(format, items.len()).map(|f| [Value::from(f), list.clone()])
        }
        _ => None,
    };
    let args = fixed.as_ref().map_or(args, |f| &f[..]);
    regorus_sprintf(span, params, args, true).map_err(|_| escalated())
}

/// Builtins whose OPA-compatible version differs from regorus's: the name and the version the
/// interpreter of a template calls (see [`rego_compat::install`]).
const OPA_BUILTINS: &[(&str, crate::policy::bytecode_errors::Builtin)] =
    &[("sprintf", opa_sprintf)];

/// Points the builtins of `program` that Gatekeeper templates call in their OPA-compatible form
/// at that form. Called on a program whose builtins are already guarded: the replacement is
/// its own guard.
pub fn install_opa_builtins(program: &mut Program) -> Result<(), String> {
    crate::policy::bytecode_errors::replace_builtins(program, OPA_BUILTINS)
}

/// The template's modules as they are compiled to bytecode, or `None` when they compile as
/// written: every function (and complete rule) with several definitions made to fail on a
/// conflict as the interpreter does.
///
/// When two definitions give different values, Rego makes that an error; regorus 0.14's VM
/// answers undefined instead. Each definition `f` of such a rule is renamed `f__regate_defN`
/// and `f` becomes one definition that collects their values in a set: none, `f` is
/// undefined; one, that value; more than one, a `to_number` of a string that is not a number
/// (a builtin error, which the guards turn into a VM stop, so the interpreter reports the
/// conflict). Partial object rules and rules with a `default` are left alone (and refused by
/// the conflict check if their definitions may differ). Lines do not move: the renames keep
/// their line and the new definitions go after the module's last line.
pub fn engine_for_vm(engine: &Engine, entry: &str) -> Result<Option<Engine>, String> {
    let compiled = engine
        .clone()
        .compile_with_entrypoint(&entry.into())
        .map_err(|e| first_line(&e.to_string()))?;
    // Per module: (start, end, replacement) of the renamed heads, and the new definitions.
    let mut edits: BTreeMap<String, ModuleEdits> = BTreeMap::new();
    for (path, definitions) in compiled.get_rules() {
        if definitions.len() < 2 {
            continue;
        }
        let Some(plan) = wrap_plan(path, definitions) else {
            continue;
        };
        let wrapper = plan.wrapper();
        for (module, start, end, name) in plan.renames {
            edits.entry(module).or_default().0.push((start, end, name));
        }
        let entry = edits.entry(plan.module).or_default();
        entry.1.push('\n');
        entry.1.push_str(&wrapper);
    }
    if edits.is_empty() {
        return Ok(None);
    }
    let mut out = Engine::new();
    out.set_rego_v0(true);
    out.set_gather_prints(false);
    rego_compat::install(&mut out).map_err(|e| e.to_string())?;
    for source in engine.get_policies().map_err(|e| e.to_string())? {
        let path = source.get_path().clone();
        let mut text = source.get_contents().clone();
        if let Some((mut renames, appendix)) = edits.remove(&path) {
            renames.sort_by_key(|r| std::cmp::Reverse(r.0));
            for (start, end, name) in renames {
                if text.get(start..end).is_none() {
                    return Err(format!("{path}: a rule head is not where regorus put it"));
                }
                text.replace_range(start..end, &name);
            }
            text.push_str(&appendix);
        }
        out.add_policy(path, text)
            .map_err(|e| first_line(&e.to_string()))?;
    }
    out.add_data(engine.get_data())
        .map_err(|e| first_line(&e.to_string()))?;
    Ok(Some(out))
}

/// A module's renamed heads (start, end, new name) and the definitions appended to it.
type ModuleEdits = (Vec<(usize, usize, String)>, String);

/// How one rule with several definitions is rewritten.
struct WrapPlan {
    /// The rule's name (last path component).
    name: String,
    /// `Some(arity)` for a function, `None` for a complete rule.
    arity: Option<usize>,
    definitions: usize,
    /// (module, start, end, new name) of each definition's name in its head.
    renames: Vec<(String, usize, usize, String)>,
    /// The module the new definition goes into (the first definition's).
    module: String,
}

impl WrapPlan {
    fn wrapper(&self) -> String {
        let name = &self.name;
        let (params, call) = match self.arity {
            Some(n) => {
                let list = (0..n)
                    .map(|i| format!("__regate_a{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                (format!("({list})"), format!("({list})"))
            }
            None => (String::new(), String::new()),
        };
        // One statement per definition: a long chain of `|` is more than regorus's parser
        // nests.
        let mut out = format!("{name}{params} = __regate_v {{ __regate_s0 := {{__regate_x | __regate_x := {name}__regate_def0{call}}}; ");
        for i in 1..self.definitions {
            out.push_str(&format!(
                "__regate_s{i} := __regate_s{} | {{__regate_x | __regate_x := {name}__regate_def{i}{call}}}; ",
                i - 1
            ));
        }
        let last = self.definitions.saturating_sub(1);
        out.push_str(&format!(
            "count(__regate_s{last}) > 0; to_number(substring(\"1x\", 0, count(__regate_s{last}))); __regate_v := [__regate_y | __regate_y := __regate_s{last}[_]][0] }}\n"
        ));
        out
    }
}

/// The rewrite of the rule at `path`, or `None` when it is not a function or complete rule
/// whose definitions all name it plainly in their heads.
fn wrap_plan(path: &str, definitions: &[Ref<Rule>]) -> Option<WrapPlan> {
    if !may_differ(definitions) {
        return None;
    }
    let name = path.rsplit('.').next()?.to_string();
    let mut arity: Option<Option<usize>> = None;
    let mut renames = Vec::new();
    for (i, definition) in definitions.iter().enumerate() {
        let Rule::Spec { head, .. } = &**definition else {
            return None;
        };
        let (refr, this_arity) = match head {
            RuleHead::Func { refr, args, .. } => (refr, Some(args.len())),
            RuleHead::Compr { refr, .. } => (refr, None),
            RuleHead::Set { .. } => return None,
        };
        if *arity.get_or_insert(this_arity) != this_arity {
            return None;
        }
        let Expr::Var { span, .. } = &**refr else {
            return None;
        };
        if span.text() != name {
            return None;
        }
        renames.push((
            span.source.get_path().clone(),
            usize::try_from(span.start).ok()?,
            usize::try_from(span.end).ok()?,
            format!("{name}__regate_def{i}"),
        ));
    }
    Some(WrapPlan {
        module: renames.first()?.0.clone(),
        name,
        arity: arity?,
        definitions: definitions.len(),
        renames,
    })
}

/// The message of a regorus error in one line: its location and its `error:` line.
/// Whether two definitions of one rule may both hold with different values: not when every
/// two of them give the same literal value, or differ in a literal argument (`f("E") := ...`,
/// `f("P") := ...`), as `policy::bytecode` reads conflicts.
fn may_differ(definitions: &[Ref<Rule>]) -> bool {
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
    let mut seen: Vec<(Option<&Value>, &[Ref<Expr>])> = Vec::new();
    for definition in definitions {
        let Rule::Spec { head, bodies, .. } = &**definition else {
            return true;
        };
        let (assign, args) = match head {
            RuleHead::Func { assign, args, .. } => (assign, args.as_slice()),
            RuleHead::Compr { assign, .. } => (assign, &[][..]),
            RuleHead::Set { .. } => return true,
        };
        let value = if bodies.iter().any(|b| b.assign.is_some()) {
            None
        } else {
            match assign {
                None => Some(&truth),
                Some(a) => literal(&a.value),
            }
        };
        for (other_value, other_args) in &seen {
            let same = matches!((value, other_value), (Some(x), Some(y)) if x == *y);
            let exclusive = args
                .iter()
                .zip(other_args.iter())
                .any(|(x, y)| matches!((literal(x), literal(y)), (Some(x), Some(y)) if x != y));
            if !same && !exclusive {
                return true;
            }
        }
        seen.push((value, args));
    }
    false
}

fn first_line(s: &str) -> String {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let location = lines.iter().find(|l| l.starts_with("-->"));
    let error = lines
        .iter()
        .find(|l| l.starts_with("error:"))
        .or(lines.first());
    let text = match (location, error) {
        (Some(at), Some(e)) => format!("{e} {at}"),
        (None, Some(e)) => e.to_string(),
        _ => s.to_string(),
    };
    text.chars().take(300).collect()
}

/// Why the template compiled in `compiled` must not run on bytecode, if it must not: a rule
/// with an `else` whose earlier body calls a user function. regorus 0.14's VM does not fall
/// back to the `else` when that call is undefined (the rule is then undefined), where the
/// interpreter and OPA take the `else` value.
pub fn refusal(compiled: &regorus::CompiledPolicy) -> Option<String> {
    for (path, definitions) in compiled.get_rules() {
        for definition in definitions {
            let Rule::Spec { bodies, .. } = &**definition else {
                continue;
            };
            if !bodies.iter().any(|b| b.is_else) {
                continue;
            }
            // Every body but the last is one the VM may leave without reaching its `else`.
            for body in &bodies[..bodies.len().saturating_sub(1)] {
                let span = &body.query.span;
                if let Some(call) = user_call(span.text()) {
                    return Some(format!(
                        "{path} ({}:{}) has an `else` after a body that calls the user function `{call}`: bytecode skips the `else` when that call is undefined",
                        span.source.get_path(),
                        span.line
                    ));
                }
            }
        }
    }
    None
}

/// The first name called in `text` (`name(`, `a.b(`) that is not a builtin: a user function.
/// Strings and comments are skipped; a name a builtin and a user function share counts as the
/// builtin's (a user function of that name would be refused by regorus anyway).
fn user_call(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
                i += 1;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.')
                {
                    i += 1;
                }
                let name = &text[start..i];
                if bytes.get(i) == Some(&b'(') && !regorus::unstable::BUILTINS.contains_key(name) {
                    return Some(name.to_string());
                }
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use regorus::Engine;

    fn compiled(text: &str) -> regorus::CompiledPolicy {
        let mut engine = Engine::new();
        engine.set_rego_v0(true);
        engine.add_policy("t.rego".into(), text.into()).unwrap();
        engine
            .compile_with_entrypoint(&"data.t.violation".into())
            .unwrap()
    }

    #[test]
    fn else_after_a_user_call_is_refused() {
        let text = "package t\nviolation[{\"msg\": m}] { m := owner(input.o) }\nowner(o) = x { x := trimmed(o.owner) } else = \"\" { true }\ntrimmed(s) = t { t := trim_space(s) }\n";
        let why = refusal(&compiled(text)).unwrap();
        assert!(why.contains("trimmed") && why.contains("t.rego:3"), "{why}");
    }

    #[test]
    fn else_after_builtins_only_is_accepted() {
        let text = "package t\nviolation[{\"msg\": m}] { m := name(input.o) }\nname(o) = x { x := sprintf(\"%v(\", [object.get(o, \"n\", \"\")]) } else = \"\" { true }\n";
        assert_eq!(refusal(&compiled(text)), None);
        assert_eq!(
            refusal(&compiled(
                "package t\nviolation[{\"msg\": m}] { m := f(input.o) }\nf(x) = 1 { x }\n"
            )),
            None
        );
    }

    /// The template's rules on the VM as `policy::bytecode` runs them: rewritten, guarded, with
    /// OPA's builtins.
    fn on_vm(text: &str, rule: &str, input: serde_json::Value) -> Result<Value, String> {
        let mut engine = Engine::new();
        engine.set_rego_v0(true);
        engine
            .add_policy("t.rego".into(), rego_compat::normalize(text))
            .unwrap();
        let engine = engine_for_vm(&engine, rule).unwrap().unwrap_or(engine);
        let compiled = engine
            .clone()
            .compile_with_entrypoint(&rule.into())
            .unwrap();
        let program =
            regorus::languages::rego::compiler::Compiler::compile_from_policy(&compiled, &[rule])
                .unwrap();
        let mut program = (*program).clone();
        crate::policy::bytecode_errors::guard_builtins(&mut program).unwrap();
        install_opa_builtins(&mut program).unwrap();
        let mut vm = regorus::rvm::RegoVM::new();
        vm.load_program(std::sync::Arc::new(program));
        vm.set_strict_builtin_errors(false);
        vm.set_input(Value::from(input));
        vm.execute_entry_point_by_name(rule)
            .map_err(|e| e.to_string())
    }

    const TWO_DEFINITIONS: &str = "package t\nviolation[{\"msg\": m}] { m := sprintf(\"%v %v\", [msg(input.p, \"d\")]) }\nmsg(p, d) = d { not p.message }\nmsg(p, _) = p.message\n";

    #[test]
    fn conflicting_definitions_stop_the_vm() {
        let rule = "data.t.violation";
        let one = on_vm(
            TWO_DEFINITIONS,
            rule,
            serde_json::json!({"p": {"message": "m"}}),
        )
        .unwrap();
        let expected = Value::from_json_str(r#"[{"msg": "m %!v(MISSING)"}]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&one).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        let other = on_vm(TWO_DEFINITIONS, rule, serde_json::json!({"p": {}})).unwrap();
        assert!(
            serde_json::to_string(&other)
                .unwrap()
                .contains("d %!v(MISSING)"),
            "{other}"
        );
        // `message: false`: both definitions hold with different values, an error in OPA.
        assert!(on_vm(
            TWO_DEFINITIONS,
            rule,
            serde_json::json!({"p": {"message": false}})
        )
        .is_err());
    }

    #[test]
    fn calls_are_found_outside_strings_and_comments() {
        assert_eq!(user_call("x := \"f(\" # g(\n y := count(z)"), None);
        assert_eq!(user_call("y := lib.f(z)").as_deref(), Some("lib.f"));
        assert_eq!(user_call("y := object.get(z, \"a\", 1)"), None);
    }
}
