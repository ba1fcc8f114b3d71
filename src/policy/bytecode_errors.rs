//! Makes regorus's bytecode fail where its interpreter fails.
//!
//! regorus 0.14's VM reads a runtime error inside a rule body as "this body does not hold" and
//! goes on: `deny contains msg if { n := to_number("abc"); ... }` quietly yields no denial,
//! where the interpreter reports the error and the policy fails closed. Only resource-limit
//! errors escape a rule body. So every builtin a program calls is swapped for a guard that
//! turns any error of the builtin into such a limit error; the VM then stops and the caller
//! re-evaluates the policy on the interpreter, which reports the real error. The
//! other source of swallowed errors, arithmetic on values that are not numbers, has no builtin
//! to guard: programs with arithmetic instructions are refused ([`unguarded_errors`]) and stay on
//! the interpreter.

use std::sync::{Mutex, OnceLock};

use regorus::rvm::{Instruction, Program};
use regorus::unstable::{Expr, Ref, Span};
use regorus::{LimitError, Value};

use crate::policy::instructions::{classify, Class};

pub(crate) type Builtin = fn(&Span, &[Ref<Expr>], &[Value], bool) -> anyhow::Result<Value>;

/// Distinct builtins that can be guarded in one process (regorus has about 200; a policy set
/// rarely uses 40). A program needing more stays on the interpreter.
const SLOTS: usize = 128;

/// The builtin behind each guard, and the builtin names in slot order.
static ORIGINALS: [OnceLock<Builtin>; SLOTS] = [const { OnceLock::new() }; SLOTS];
static NAMES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// What a guarded builtin's error becomes: the one kind of error a VM rule body does not
/// swallow. A real memory limit is never 0 (`policy::memory`), so this value is never a real one.
const ESCALATED: LimitError = LimitError::MemoryLimitExceeded {
    usage: u64::MAX,
    limit: 0,
};

/// [`ESCALATED`], as an error: for a builtin that replaces a program's own to return.
pub(crate) fn escalated() -> anyhow::Error {
    anyhow::Error::new(ESCALATED)
}

/// A builtin's error, escalated; a limit error (a real memory limit reached inside the
/// builtin) stays what it is.
pub(crate) fn escalate(error: anyhow::Error) -> anyhow::Error {
    if error.downcast_ref::<LimitError>().is_some() {
        error
    } else {
        escalated()
    }
}

/// Calls the builtin strictly, as the interpreter does, whatever the VM asks: a non-strict
/// builtin may answer undefined where the interpreter reports an error.
fn guard<const I: usize>(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    _strict: bool,
) -> anyhow::Result<Value> {
    match ORIGINALS[I].get() {
        Some(builtin) => builtin(span, params, args, true).map_err(escalate),
        None => Err(escalated()),
    }
}

macro_rules! guards {
    ($($i:literal)*) => { [$(guard::<$i> as Builtin),*] };
}

static GUARDS: [Builtin; SLOTS] = guards!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120 121 122 123 124 125 126 127);

/// Swaps every builtin `program` calls for its guard.
pub fn guard_builtins(program: &mut Program) -> Result<(), String> {
    if program.resolved_builtins.len() != program.builtin_info_table.len() {
        return Err("the program's builtins are not resolved".to_string());
    }
    let mut names = NAMES
        .lock()
        .map_err(|_| "the builtin guard registry is poisoned".to_string())?;
    for (info, resolved) in program
        .builtin_info_table
        .iter()
        .zip(program.resolved_builtins.iter_mut())
    {
        let slot = match names.iter().position(|n| *n == info.name) {
            Some(slot) => slot,
            None if names.len() < SLOTS => {
                names.push(info.name.clone());
                names.len() - 1
            }
            None => {
                return Err(format!(
                    "more than {SLOTS} distinct builtins in use; {} is not guarded",
                    info.name
                ))
            }
        };
        // A name always resolves to the same regorus function, and only fresh programs come
        // here, so the first function seen for a name is the one every guard of it calls.
        ORIGINALS[slot].get_or_init(|| resolved.0);
        resolved.0 = GUARDS[slot];
    }
    Ok(())
}

/// Points the calls `program` makes of each builtin named in `replacements` at the function
/// given for it. For a program whose builtins are already guarded: each replacement must be
/// its own guard (escalate every error).
pub(crate) fn replace_builtins(
    program: &mut Program,
    replacements: &[(&str, Builtin)],
) -> Result<(), String> {
    if program.resolved_builtins.len() != program.builtin_info_table.len() {
        return Err("the program's builtins are not resolved".to_string());
    }
    for (info, resolved) in program
        .builtin_info_table
        .iter()
        .zip(program.resolved_builtins.iter_mut())
    {
        if let Some((_, replacement)) = replacements.iter().find(|(name, _)| *name == info.name) {
            resolved.0 = *replacement;
        }
    }
    Ok(())
}

/// Why `program` can hit a runtime error no guard catches, if it can: an arithmetic instruction
/// whose operands are not surely numbers (or a division whose divisor is not a non-zero
/// literal). The bytecode raises that error and a rule body swallows it, where the interpreter
/// reports it.
pub fn unguarded_errors(program: &Program) -> Option<String> {
    for (pc, instruction) in program.instructions.iter().enumerate() {
        let (left, right, divides) = match classify(instruction) {
            Class::Arithmetic {
                left,
                right,
                divides,
                ..
            } => (left, right, divides),
            Class::Foreign { .. } => {
                return Some(format!(
                "{} compiled to a host or Azure Policy instruction, which regate does not examine",
                location(program, pc)
            ))
            }
            // Every other class raises no error of its own that a rule body swallows where
            // the interpreter reports one (see `Class`; every instruction is classified there):
            // builtin calls are guarded by `guard_builtins`, and user function and rule calls
            // run this same program.
            _ => continue,
        };
        let left_ok = producer(program, pc, left).is_some_and(|p| p != Producer::Unknown);
        let right_ok = match producer(program, pc, right) {
            Some(Producer::NonZeroLiteral) => true,
            Some(Producer::Number) => !divides,
            _ => false,
        };
        if !(left_ok && right_ok) {
            return Some(format!(
                "arithmetic at {} may meet a value that is not a number (or a zero divisor): an error the interpreter reports and bytecode ignores",
                location(program, pc)
            ));
        }
    }
    None
}

/// Where a failing condition would be misrouted, if anywhere: regorus 0.14's VM sends a failed
/// condition (`Guard`, `AssertEq`) to the innermost *loop* when there is one, before it looks
/// at comprehensions. A condition inside a comprehension that is itself inside a loop of the
/// same rule body, with no loop of its own around the condition, therefore abandons the
/// comprehension and continues the outer loop, leaving the comprehension open: wrong answers or
/// a run to the time limit. Such a program stays on the interpreter.
pub fn misrouted_conditions(program: &Program) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Kind {
        Loop,
        Comprehension,
    }
    // Body ranges [start, end) of every loop and comprehension.
    let mut ranges: Vec<(usize, usize, Kind)> = Vec::new();
    for instruction in &program.instructions {
        match *instruction {
            Instruction::LoopStart { params_index } => {
                let Some(p) = program.instruction_data.get_loop_params(params_index) else {
                    return Some(format!(
                        "a loop at {} has no parameters",
                        location(program, 0)
                    ));
                };
                ranges.push((
                    usize::from(p.body_start),
                    usize::from(p.loop_end),
                    Kind::Loop,
                ));
            }
            Instruction::ComprehensionBegin { params_index } => {
                let Some(p) = program
                    .instruction_data
                    .get_comprehension_begin_params(params_index)
                else {
                    return Some(format!(
                        "a comprehension at {} has no parameters",
                        location(program, 0)
                    ));
                };
                ranges.push((
                    usize::from(p.body_start),
                    usize::from(p.comprehension_end),
                    Kind::Comprehension,
                ));
            }
            _ => {}
        }
    }
    if !ranges.iter().any(|r| r.2 == Kind::Comprehension) {
        return None;
    }
    for (pc, instruction) in program.instructions.iter().enumerate() {
        if !matches!(
            instruction,
            Instruction::Guard { .. } | Instruction::AssertEq { .. }
        ) {
            continue;
        }
        let around = |r: &&(usize, usize, Kind)| r.0 <= pc && pc < r.1;
        let Some(innermost) = ranges.iter().filter(around).min_by_key(|r| r.1 - r.0) else {
            continue;
        };
        if innermost.2 == Kind::Comprehension
            && ranges.iter().any(|r| {
                r.2 == Kind::Loop && r.0 <= innermost.0 && innermost.1 <= r.1 && r != innermost
            })
        {
            return Some(format!(
                "a condition at {} inside a comprehension inside a loop, which regorus's bytecode would apply to the loop instead",
                location(program, pc)
            ));
        }
    }
    None
}

/// `file:line` of the Rego an instruction was compiled from, or `instruction <pc>`.
pub fn location(program: &Program, pc: usize) -> String {
    program
        .instruction_spans
        .get(pc)
        .and_then(Option::as_ref)
        .and_then(|span| {
            program
                .sources
                .get(span.source_index)
                .map(|file| format!("{}:{}", file.name, span.line))
        })
        .unwrap_or_else(|| format!("instruction {pc}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Producer {
    NonZeroLiteral,
    Number,
    Unknown,
}

/// Builtins whose every successful answer is a number (their errors are guarded).
const NUMERIC_BUILTINS: &[&str] = &[
    "count",
    "to_number",
    "abs",
    "ceil",
    "floor",
    "round",
    "sum",
    "product",
    "indexof",
    "strings.count",
    "units.parse",
    "units.parse_bytes",
    "time.now_ns",
];

/// What last wrote `register` before `pc`, looking back along straight-line code only: the
/// scan stops, answering `None`, at any instruction that may be a jump or a jump's target
/// (loops, comprehensions, rule and function boundaries) or whose writes it does not know, so
/// the write it finds is the only one that reaches `pc`.
fn producer(program: &Program, pc: usize, register: u8) -> Option<Producer> {
    let params = &program.instruction_data;
    for instruction in program.instructions.get(..pc)?.iter().rev() {
        let written = match classify(instruction) {
            Class::Load { dest, literal } => {
                (dest == register).then(|| match program.literals.get(usize::from(literal)) {
                    Some(n @ Value::Number(_)) if *n != Value::from(0_u64) => {
                        Producer::NonZeroLiteral
                    }
                    Some(Value::Number(_)) => Producer::Number,
                    _ => Producer::Unknown,
                })
            }
            Class::Move { dest, src } if dest == register => {
                return producer_before(program, instruction, pc, src)
            }
            Class::Arithmetic { dest, .. } | Class::Count { dest } => {
                (dest == register).then_some(Producer::Number)
            }
            Class::BuiltinCall { params: index } => {
                let call = params.builtin_call_params.get(usize::from(index))?;
                (call.dest == register).then(|| {
                    let name = program
                        .builtin_info_table
                        .get(usize::from(call.builtin_index))
                        .map(|b| b.name.as_str());
                    if name.is_some_and(|n| NUMERIC_BUILTINS.contains(&n)) {
                        Producer::Number
                    } else {
                        Producer::Unknown
                    }
                })
            }
            Class::FunctionCall { params: index } => {
                let call = params.function_call_params.get(usize::from(index))?;
                (call.dest == register).then_some(Producer::Unknown)
            }
            Class::Move { dest, .. } | Class::Writes { dest } => {
                (dest == register).then_some(Producer::Unknown)
            }
            // Exits on failure, never a jump's target, writes nothing.
            Class::Condition => None,
            // Anything else may jump, be jumped to, or write registers this scan does not
            // follow: the producer is unknown.
            Class::LoopNext | Class::Other | Class::Foreign { .. } => return None,
        };
        if written.is_some() {
            return written;
        }
    }
    None
}

/// [`producer`] of `register` before the instruction `at` (found by identity, scanning back
/// from `pc`).
fn producer_before(
    program: &Program,
    at: &Instruction,
    pc: usize,
    register: u8,
) -> Option<Producer> {
    let position = program
        .instructions
        .get(..pc)?
        .iter()
        .rposition(|i| std::ptr::eq(i, at))?;
    producer(program, position, register)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regorus::languages::rego::compiler::Compiler;
    use regorus::Engine;

    fn program(rule: &str) -> Program {
        let mut engine = Engine::new();
        engine
            .add_policy(
                "p.rego".into(),
                format!("package p\nimport rego.v1\n{rule}\n"),
            )
            .unwrap();
        let compiled = engine.compile_with_entrypoint(&"data.p.v".into()).unwrap();
        (*Compiler::compile_from_policy(&compiled, &["data.p.v"]).unwrap()).clone()
    }

    #[test]
    fn arithmetic_on_surely_numbers_is_accepted() {
        for rule in [
            "v := x if { parts := split(input.s, \"/\"); x := parts[count(parts) - 1] }",
            "v := ((count(input.s) / 4) * 3) - (count(input.s) - count(trim_right(input.s, \"=\")))",
            "v := to_number(input.s) * 2",
        ] {
            assert_eq!(unguarded_errors(&program(rule)), None, "{rule}");
        }
    }

    #[test]
    fn arithmetic_that_may_fail_is_refused() {
        for rule in [
            "v := input.n + 1",
            "v := 10 / count(input.a)",
            "v := count(input.a) % input.n",
            "f(x) := 2 if x\nv := count(input.a) - f(input.b)",
        ] {
            assert!(unguarded_errors(&program(rule)).is_some(), "{rule}");
        }
    }

    #[test]
    fn guarded_builtins_report_errors_as_limits() {
        let mut p = program("v := to_number(input.s)");
        guard_builtins(&mut p).unwrap();
        let mut vm = regorus::rvm::RegoVM::new();
        vm.load_program(std::sync::Arc::new(p));
        vm.set_input(Value::from(serde_json::json!({"s": "abc"})));
        assert!(vm.execute_entry_point_by_name("data.p.v").is_err());
        vm.set_input(Value::from(serde_json::json!({"s": "12"})));
        assert_eq!(
            vm.execute_entry_point_by_name("data.p.v").unwrap(),
            Value::from(12_u64)
        );
    }
}
