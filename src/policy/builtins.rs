//! Arithmetic and partial objects on regorus's VM that fail as the interpreter fails.
//!
//! regorus 0.14's arithmetic instructions (`Add`, `Sub`, `Mul`, `Div`, `Mod`) raise an error on
//! an operand that is not a number (or not a set, for `-`), and a rule body swallows it: `deny
//! if input.n + 1 > 5` with `n: "x"` quietly does not deny, where the interpreter reports the
//! error. Non-strict, the VM also answers a division by zero with undefined. A program whose
//! operands are not surely numbers was therefore refused (`bytecode_errors::unguarded_errors`).
//!
//! [`arithmetic_as_calls`] replaces each such instruction with a call of a builtin that
//! computes exactly what the interpreter computes (regorus's own `arithmetic_operation` and
//! set `difference`, the functions behind the interpreter's operators) and turns any error
//! into the one kind of error a rule body does not swallow. The VM then stops and the policy
//! is evaluated on the interpreter, which reports the real error. Undefined operands give
//! undefined, as both the instructions and builtin calls do. The replacement is one
//! instruction for one, so no jump moves.
//!
//! A partial object rule (`p[k] := v`) that gives one key two values is an error on the
//! interpreter ("object keys must be unique", as in OPA); the VM's `ObjectSet` overwrites the
//! first value. [`object_key_checks`] registers a builtin that the program calls before each
//! `ObjectSet` (`undefined_bindings` inserts the call): it answers the key when the key is new
//! or already holds the same value, and escalates otherwise, so the policy is evaluated on the
//! interpreter, which reports the conflict.

use regorus::rvm::instructions::BuiltinCallParams;
use regorus::rvm::program::BuiltinInfo;
use regorus::rvm::{Instruction, Program};
use regorus::unstable::{ArithOp, Expr, Ref, Span};
use regorus::Value;

// What an arithmetic error becomes: see `bytecode_errors`.
use crate::policy::bytecode_errors::{escalate, escalated};

type Builtin = fn(&Span, &[Ref<Expr>], &[Value], bool) -> anyhow::Result<Value>;

fn arithmetic(
    op: ArithOp,
    params: &[Ref<Expr>],
    args: &[Value],
    span: &Span,
) -> anyhow::Result<Value> {
    let ([left, right], [left_expr, right_expr, ..]) = (args, params) else {
        return Err(escalated());
    };
    let result = match (&op, left, right) {
        (ArithOp::Sub, Value::Set(_), _) | (ArithOp::Sub, _, Value::Set(_)) => {
            regorus::unstable::sets::difference(left_expr, right_expr, left.clone(), right.clone())
        }
        _ => regorus::unstable::numbers::arithmetic_operation(
            span,
            &op,
            left_expr,
            right_expr,
            left.clone(),
            right.clone(),
            true,
        ),
    };
    result.map_err(escalate)
}

fn add(span: &Span, params: &[Ref<Expr>], args: &[Value], _: bool) -> anyhow::Result<Value> {
    arithmetic(ArithOp::Add, params, args, span)
}

fn sub(span: &Span, params: &[Ref<Expr>], args: &[Value], _: bool) -> anyhow::Result<Value> {
    arithmetic(ArithOp::Sub, params, args, span)
}

fn mul(span: &Span, params: &[Ref<Expr>], args: &[Value], _: bool) -> anyhow::Result<Value> {
    arithmetic(ArithOp::Mul, params, args, span)
}

fn div(span: &Span, params: &[Ref<Expr>], args: &[Value], _: bool) -> anyhow::Result<Value> {
    arithmetic(ArithOp::Div, params, args, span)
}

fn rem(span: &Span, params: &[Ref<Expr>], args: &[Value], _: bool) -> anyhow::Result<Value> {
    arithmetic(ArithOp::Mod, params, args, span)
}

/// The index of builtin `name` in `program`, added (resolved to `function`) if missing.
fn register(
    program: &mut Program,
    name: &str,
    function: Builtin,
    num_args: u8,
) -> Result<u16, String> {
    let index = match program
        .builtin_info_table
        .iter()
        .position(|b| b.name == name)
    {
        Some(i) => i,
        None => {
            program.builtin_info_table.push(BuiltinInfo {
                name: name.to_string(),
                num_args: u16::from(num_args),
            });
            program.resolved_builtins.push((function, num_args));
            program.builtin_info_table.len() - 1
        }
    };
    u16::try_from(index).map_err(|_| "too many builtins in one program".to_string())
}

/// The parameters of a call of builtin `builtin_index` on the registers `args` (at most 8),
/// its answer in `dest`, added to `program`.
fn call_params(program: &mut Program, builtin_index: u16, dest: u8, args: &[u8]) -> u16 {
    let mut registers = [0u8; 8];
    let mut num_args = 0u8;
    for (slot, register) in registers.iter_mut().zip(args) {
        *slot = *register;
        num_args += 1;
    }
    program
        .instruction_data
        .add_builtin_call_params(BuiltinCallParams {
            dest,
            builtin_index,
            num_args,
            args: registers,
        })
}

/// The builtins arithmetic becomes, by the names they are known by in a program (names no
/// Rego builtin or user function can have).
const ARITHMETIC: [(&str, Builtin); 5] = [
    ("regate arithmetic +", add),
    ("regate arithmetic -", sub),
    ("regate arithmetic *", mul),
    ("regate arithmetic /", div),
    ("regate arithmetic %", rem),
];

/// Replaces every arithmetic instruction of `program` with a call of its guarded builtin (see
/// the module's documentation). Call before `bytecode_errors::guard_builtins`: the calls are
/// their own guards, which that step then wraps like any builtin.
pub fn arithmetic_as_calls(program: &mut Program) -> Result<(), String> {
    if program.resolved_builtins.len() != program.builtin_info_table.len() {
        return Err("the program's builtins are not resolved".to_string());
    }
    for pc in 0..program.instructions.len() {
        let (which, dest, left, right) = match program.instructions[pc] {
            Instruction::Add { dest, left, right } => (0, dest, left, right),
            Instruction::Sub { dest, left, right } => (1, dest, left, right),
            Instruction::Mul { dest, left, right } => (2, dest, left, right),
            Instruction::Div { dest, left, right } => (3, dest, left, right),
            Instruction::Mod { dest, left, right } => (4, dest, left, right),
            _ => continue,
        };
        let (name, function) = ARITHMETIC[which];
        let builtin_index = register(program, name, function, 2)?;
        let params_index = call_params(program, builtin_index, dest, &[left, right]);
        program.instructions[pc] = Instruction::BuiltinCall { params_index };
    }
    Ok(())
}

/// Largest partial object whose inserts are checked on the VM. The object is passed to the
/// check by value, which makes the VM copy it on the insert that follows; past this size the
/// policy is evaluated on the interpreter instead, so a hostile input cannot make the copies
/// quadratic.
const CHECKED_OBJECT_KEYS: usize = 256;

/// The name the key check is known by in a program (no Rego builtin or user function can have
/// it).
const OBJECT_KEY_CHECK: &str = "regate object key free";

/// `args` = (object, key, value): the key when the object has no value for it yet, or the same
/// value; an escalated error on a conflict (or an object past [`CHECKED_OBJECT_KEYS`]). A key
/// or value that is null may have been undefined (see `undefined_bindings`), on which the
/// interpreter fails: escalated too.
fn object_key_free(_: &Span, _: &[Ref<Expr>], args: &[Value], _: bool) -> anyhow::Result<Value> {
    let [Value::Object(object), key, value] = args else {
        return Err(escalated());
    };
    if *key == Value::Null || *value == Value::Null {
        return Err(escalated());
    }
    match object.get(key) {
        Some(existing) if existing == value => Ok(key.clone()),
        Some(_) => Err(escalated()),
        None if object.len() >= CHECKED_OBJECT_KEYS => Err(escalated()),
        None => Ok(key.clone()),
    }
}

/// A check to run before the `ObjectSet` at `pc`: the call (its parameters are registered in
/// the program) answers `key` into the key's own register, after `key` and `value` are coalesced
/// from undefined to null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObjectKeyCheck {
    pub pc: usize,
    pub params_index: u16,
    pub key: u8,
    pub value: u8,
}

/// Registers the key check of every `ObjectSet` of `program` (the instruction regorus emits for
/// the head of a partial object rule, and for nothing else) and returns where each goes.
pub(crate) fn object_key_checks(program: &mut Program) -> Result<Vec<ObjectKeyCheck>, String> {
    if program.resolved_builtins.len() != program.builtin_info_table.len() {
        return Err("the program's builtins are not resolved".to_string());
    }
    let mut out = Vec::new();
    for pc in 0..program.instructions.len() {
        let Instruction::ObjectSet { obj, key, value } = program.instructions[pc] else {
            continue;
        };
        let builtin_index = register(program, OBJECT_KEY_CHECK, object_key_free, 3)?;
        let params_index = call_params(program, builtin_index, key, &[obj, key, value]);
        out.push(ObjectKeyCheck {
            pc,
            params_index,
            key,
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regorus::languages::rego::compiler::Compiler;
    use regorus::rvm::RegoVM;
    use regorus::Engine;

    fn run(rule: &str, input: serde_json::Value) -> Result<Value, String> {
        let mut engine = Engine::new();
        engine
            .add_policy(
                "p.rego".into(),
                format!("package p\nimport rego.v1\n{rule}\n"),
            )
            .unwrap();
        let compiled = engine.compile_with_entrypoint(&"data.p.v".into()).unwrap();
        let mut program =
            (*Compiler::compile_from_policy(&compiled, &["data.p.v"]).unwrap()).clone();
        arithmetic_as_calls(&mut program).unwrap();
        assert!(crate::policy::bytecode_errors::unguarded_errors(&program).is_none());
        let mut vm = RegoVM::new();
        vm.load_program(std::sync::Arc::new(program));
        vm.set_strict_builtin_errors(false);
        vm.set_input(Value::from(input));
        vm.execute_entry_point_by_name("data.p.v")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn arithmetic_computes_as_before() {
        let input = serde_json::json!({"n": 7, "m": 2, "a": ["x", "y"], "b": ["y"]});
        for (rule, want) in [
            ("v := input.n + input.m", Value::from(9_u64)),
            ("v := input.n - input.m", Value::from(5_u64)),
            ("v := input.n * input.m", Value::from(14_u64)),
            ("v := input.n / input.m", Value::from(3.5)),
            ("v := input.n % input.m", Value::from(1_u64)),
            (
                "v := {x | some x in input.a} - {x | some x in input.b}",
                Value::from(std::collections::BTreeSet::from([Value::from("x")])),
            ),
        ] {
            assert_eq!(run(rule, input.clone()).unwrap(), want, "{rule}");
        }
        assert_eq!(
            run("v := input.missing + 1", input.clone()).unwrap(),
            Value::Undefined
        );
    }

    #[test]
    fn arithmetic_errors_stop_the_vm() {
        let input = serde_json::json!({"n": 7, "s": "x", "z": 0});
        for rule in [
            "v if { x := input.s + 1; x > 0 }",
            "v if { x := input.n / input.z; x > 0 }",
            "v if { x := input.n % input.z; x > 0 }",
            "v if { x := input.s - {1}; count(x) > 0 }",
        ] {
            assert!(run(rule, input.clone()).is_err(), "{rule}");
        }
    }

    /// The VM's answer with keys checked (`error` when it escalates), and the interpreter's.
    fn both_with_keys_checked(rules: &str, input: serde_json::Value) -> (String, String) {
        let (interpreted, on_vm) =
            crate::policy::undefined_bindings::tests::interpreter_and_guarded_vm(
                rules, &input, true,
            );
        let error_as_one_word = |answer: String| {
            if answer.starts_with("error") {
                "error".to_string()
            } else {
                answer
            }
        };
        (error_as_one_word(on_vm), error_as_one_word(interpreted))
    }

    #[test]
    fn partial_object_keys_given_two_values_stop_the_vm() {
        // The library's seccomp templates: containers by name from three lists.
        let rules = "v[c.name] := c if some c in input.a\nv[c.name] := c if some c in input.b";
        // (input, whether the VM hands the review to the interpreter)
        for (input, escalates) in [
            (
                serde_json::json!({"a": [{"name": "x", "i": 1}], "b": [{"name": "y"}]}),
                false,
            ),
            (
                serde_json::json!({"a": [{"name": "x"}], "b": [{"name": "x"}]}),
                false,
            ),
            (
                serde_json::json!({"a": [{"name": "x", "i": 1}], "b": [{"name": "x", "i": 2}]}),
                true,
            ),
            (
                serde_json::json!({"a": [{"name": "x", "i": 1}, {"name": "x", "i": 2}]}),
                true,
            ),
            // An undefined key: the interpreter fails; so does the VM, by handing it over.
            (
                serde_json::json!({"a": [{"i": 1}, {"name": "z"}], "b": []}),
                true,
            ),
            // A null key may have been undefined: handed over, and the interpreter answers.
            (serde_json::json!({"a": [{"name": null}], "b": []}), true),
            (serde_json::json!({"a": []}), false),
        ] {
            let (on_vm, interpreted) = both_with_keys_checked(rules, input.clone());
            if escalates {
                assert_eq!(on_vm, "error", "{input}");
            } else {
                assert_eq!(on_vm, interpreted, "{input}");
                assert_ne!(on_vm, "error", "{input}");
            }
        }
        // Conflicts are errors on the interpreter too.
        for input in [
            serde_json::json!({"a": [{"name": "x", "i": 1}], "b": [{"name": "x", "i": 2}]}),
            serde_json::json!({"a": [{"i": 1}, {"name": "z"}], "b": []}),
        ] {
            assert_eq!(both_with_keys_checked(rules, input).1, "error");
        }
    }

    #[test]
    fn large_partial_objects_are_left_to_the_interpreter() {
        let names: Vec<serde_json::Value> = (0..CHECKED_OBJECT_KEYS + 1)
            .map(|i| serde_json::json!({"name": format!("c{i}")}))
            .collect();
        let rules = "v[c.name] := c if some c in input.a";
        let (on_vm, _) = both_with_keys_checked(rules, serde_json::json!({"a": names}));
        assert_eq!(on_vm, "error");
        let (on_vm, interpreted) =
            both_with_keys_checked(rules, serde_json::json!({"a": names[..10]}));
        assert_eq!(on_vm, interpreted);
    }
}
