//! Builtins whose output a number argument sizes, refused past a limit: `numbers.range` and
//! `numbers.range_step` past [`MAX_RANGE_NUMBERS`] numbers, `bits.lsh` past a shift of
//! [`MAX_SHIFT_BITS`].
//!
//! regorus 0.14.1 reserves room for a whole range in one allocation before its own memory
//! guard runs: `numbers.range(1, 1e9)` asks for 24 GB. The allocation fails and Rust aborts the
//! process, or, where memory is overcommitted, the range fills memory until the kernel kills
//! it. One careless policy (`numbers.range(1, input.request.object.spec.replicas)`) would take
//! down every replica on the first request that reaches it. `bits.lsh(1, 4e9)` builds a number
//! of 512 MiB, past the memory limit the chart sets for the pod. So both backends refuse such a
//! call with an error that names it, before anything is allocated: the interpreter calls
//! [`install`]'s extensions instead of the builtins (an extension is found before a builtin of
//! the same name), and the VM's programs call [`install_in_program`]'s checks, which stop the
//! VM on any error so that the policy is evaluated on the interpreter, which reports it (see
//! `bytecode_errors`). Within the limits both give what regorus gives.

use regorus::rvm::program::Program;
use regorus::unstable::{Expr, Ref, Span};
use regorus::{Engine, Value};

/// The most numbers one call may make: 24 MB of values. Ranges over a review's own arrays,
/// ports (65,536) and test helpers stay far below it.
pub const MAX_RANGE_NUMBERS: u64 = 1_000_000;

/// The widest shift `bits.lsh` may make: numbers of 1 MiB. Bit flags need 64.
pub const MAX_SHIFT_BITS: u64 = 8 * 1024 * 1024;

/// Installs the bounded builtins on an engine that evaluates policies.
pub fn install(engine: &mut Engine) -> anyhow::Result<()> {
    engine.add_extension(BOUNDED[0].to_string(), 2, Box::new(range))?;
    engine.add_extension(BOUNDED[1].to_string(), 3, Box::new(range_step))?;
    engine.add_extension(BOUNDED[2].to_string(), 2, Box::new(lsh))
}

/// Points a program's calls of the bounded builtins at checks that stop the VM on a call past
/// its limit. Called on a program whose builtins are already guarded: the replacement is its
/// own guard.
pub fn install_in_program(program: &mut Program) -> Result<(), String> {
    crate::policy::bytecode_errors::replace_builtins(
        program,
        &[
            (BOUNDED[0], vm_bounded::<0>),
            (BOUNDED[1], vm_bounded::<1>),
            (BOUNDED[2], vm_bounded::<2>),
        ],
    )
}

/// The bounded builtins, in the order of [`vm_bounded`]'s index.
const BOUNDED: [&str; 3] = ["numbers.range", "numbers.range_step", "bits.lsh"];

/// The VM's call of the bounded builtin `BOUNDED[I]`.
fn vm_bounded<const I: usize>(
    span: &Span,
    params: &[Ref<Expr>],
    args: &[Value],
    _strict: bool,
) -> anyhow::Result<Value> {
    vm_call(BOUNDED[I], span, params, args)
}

/// regorus's builtin `name`, called strictly as the interpreter calls it, when the call is
/// within its limit; any error, and a call past the limit, stops the VM.
fn vm_call(name: &str, span: &Span, params: &[Ref<Expr>], args: &[Value]) -> anyhow::Result<Value> {
    let within = match (name, args) {
        ("bits.lsh", [value, by]) => shift(value, by).is_ok(),
        (_, [from, to]) => bounds(name, from, to, None).is_ok(),
        (_, [from, to, step]) => bounds(name, from, to, Some(step)).is_ok(),
        _ => false,
    };
    match regorus::unstable::BUILTINS.get(name) {
        Some(&(builtin, _)) if within => {
            builtin(span, params, args, true).map_err(crate::policy::bytecode_errors::escalate)
        }
        _ => Err(crate::policy::bytecode_errors::escalated()),
    }
}

/// A range's step (negative when it counts down), when it makes at most [`MAX_RANGE_NUMBERS`]
/// numbers; else the error, as regorus words those it shares (never quoting an argument: one
/// may be a Secret's value).
fn bounds(name: &str, from: &Value, to: &Value, step: Option<&Value>) -> Result<i64, String> {
    let integer = |v: &Value| match v {
        Value::Number(n) if n.is_integer() => Ok(()),
        Value::Number(_) => Err(format!("`{name}`: operand must be integer")),
        _ => Err(format!("`{name}` expects numeric arguments")),
    };
    integer(from)?;
    integer(to)?;
    let step = match step {
        None => 1,
        Some(v @ Value::Number(n)) if n.is_integer() && *v > Value::from(0i64) => n
            .as_i64()
            .ok_or_else(|| format!("`{name}`: could not determine number of elements"))?,
        Some(Value::Number(_)) => return Err(format!("`{name}`: step must be a positive integer")),
        Some(_) => return Err(format!("`{name}` expects numeric arguments")),
    };
    let (Value::Number(first), Value::Number(last)) = (from, to) else {
        return Err(format!("`{name}` expects numeric argument"));
    };
    let span = last
        .sub(first)
        .ok()
        .and_then(|d| d.as_i64())
        .ok_or_else(|| format!("`{name}`: could not determine number of elements"))?;
    let numbers = span.unsigned_abs() / step.unsigned_abs() + 1;
    if numbers > MAX_RANGE_NUMBERS {
        return Err(format!(
            "`{name}` would make {numbers} numbers; regate allows at most {MAX_RANGE_NUMBERS} in one call"
        ));
    }
    Ok(if span < 0 { -step } else { step })
}

/// The numbers from `first` to `last` by `step`, as regorus's builtins make them.
fn numbers(first: &Value, last: &Value, step: i64) -> anyhow::Result<Value> {
    let (Value::Number(first), Value::Number(last)) = (first, last) else {
        anyhow::bail!("a range's bounds must be numbers");
    };
    let step_number = match Value::from(step) {
        Value::Number(n) => n,
        _ => anyhow::bail!("a range's step must be a number"),
    };
    let mut values = Vec::new();
    let mut v = first.clone();
    while (step > 0 && v <= *last) || (step < 0 && v >= *last) {
        values.push(Value::Number(v.clone()));
        v.add_assign(&step_number)?;
    }
    Ok(Value::from(values))
}

fn range(args: Vec<Value>) -> anyhow::Result<Value> {
    let [from, to] = &args[..] else {
        anyhow::bail!("`numbers.range` takes 2 arguments");
    };
    let step = bounds("numbers.range", from, to, None).map_err(anyhow::Error::msg)?;
    numbers(from, to, step)
}

fn range_step(args: Vec<Value>) -> anyhow::Result<Value> {
    let [from, to, step] = &args[..] else {
        anyhow::bail!("`numbers.range_step` takes 3 arguments");
    };
    let step = bounds("numbers.range_step", from, to, Some(step)).map_err(anyhow::Error::msg)?;
    numbers(from, to, step)
}

/// `value` and the shift when `bits.lsh` may shift it by `by`; else the error, as regorus
/// words it without quoting an argument (a shift past 2^32 - 1, which regorus answers with
/// undefined and no allocation, is let through).
fn shift<'a>(value: &'a Value, by: &'a Value) -> Result<(&'a Value, &'a Value), String> {
    const NAME: &str = "bits.lsh";
    for v in [value, by] {
        if !matches!(v, Value::Number(_)) {
            return Err(format!("`{NAME}` expects numeric arguments"));
        }
    }
    for v in [value, by] {
        if let Value::Number(n) = v {
            if !n.is_integer() {
                return Err(format!("`{NAME}` expects integer arguments"));
            }
        }
    }
    if *by < Value::from(0i64) {
        return Err(format!("`{NAME}` expects a non-negative shift"));
    }
    if let Value::Number(n) = by {
        if let Some(bits) = n.as_u64() {
            if bits > MAX_SHIFT_BITS && bits <= u64::from(u32::MAX) {
                return Err(format!(
                    "`{NAME}` would shift by {bits} bits; regate allows at most {MAX_SHIFT_BITS}"
                ));
            }
        }
    }
    Ok((value, by))
}

fn lsh(args: Vec<Value>) -> anyhow::Result<Value> {
    let [value, by] = &args[..] else {
        anyhow::bail!("`bits.lsh` takes 2 arguments");
    };
    match shift(value, by).map_err(anyhow::Error::msg)? {
        (Value::Number(value), Value::Number(by)) => {
            Ok(value.lsh(by).map_or(Value::Undefined, Value::Number))
        }
        _ => Ok(Value::Undefined),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `numbers.range`, `numbers.range_step` and `bits.lsh` over a grid of arguments, odd ones
    /// included: the same value from the bounded extensions as from regorus's builtins, or an
    /// error from both.
    #[test]
    fn within_the_limits_the_answers_are_regorus_s() {
        let values = [
            "-3",
            "0",
            "2",
            "5",
            "1.5",
            "\"7\"",
            "null",
            "1e3",
            "9223372036854775807",
            "18446744073709551616",
            "18446744073709551620",
        ];
        let mut queries = Vec::new();
        for a in values {
            for b in values {
                queries.push(format!("numbers.range({a}, {b})"));
                for step in ["1", "2", "0", "-1", "2.5", "\"1\""] {
                    queries.push(format!("numbers.range_step({a}, {b}, {step})"));
                }
            }
        }
        for a in values {
            for b in values {
                queries.push(format!("bits.lsh({a}, {b})"));
            }
        }
        for by in ["0", "-1", "63", "8388608", "4294967296", "4294967297"] {
            queries.push(format!("bits.lsh(3, {by})"));
        }
        let answer = |bounded: bool, query: &str| {
            let mut engine = Engine::new();
            if bounded {
                install(&mut engine).unwrap();
            }
            engine
                .add_policy("q.rego".into(), format!("package q\nx := {query}\n"))
                .unwrap();
            engine
                .eval_rule("data.q.x".into())
                .map_err(|e| e.to_string())
        };
        let mut compared = 0;
        for query in &queries {
            let ours = answer(true, query);
            // Past the limit only ours answers: regorus would try to build the range (and
            // panics on a capacity overflow for the largest).
            if ours.as_ref().is_err_and(|e| e.contains("would make")) {
                continue;
            }
            let theirs = answer(false, query);
            assert_eq!(ours.ok(), theirs.ok(), "{query}");
            compared += 1;
        }
        assert!(
            compared > queries.len() / 2,
            "{compared} of {}",
            queries.len()
        );
    }

    #[test]
    fn past_the_limit_a_call_is_refused_before_anything_is_built() {
        let error = lsh(vec![Value::from(1i64), Value::from(4_000_000_000u64)])
            .unwrap_err()
            .to_string();
        assert!(error.contains("would shift by 4000000000 bits"), "{error}");
        for (args, numbers) in [
            (
                vec![Value::from(1u64), Value::from(1_000_000_000u64)],
                1_000_000_000u64,
            ),
            (
                vec![Value::from(1_000_001i64), Value::from(0i64)],
                1_000_002,
            ),
        ] {
            let error = range(args).unwrap_err().to_string();
            assert!(
                error.contains(&format!("would make {numbers} numbers")),
                "{error}"
            );
        }
        let error = range_step(vec![
            Value::from(0i64),
            Value::from(3_000_000i64),
            Value::from(2i64),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("would make 1500001 numbers"), "{error}");
        assert_eq!(
            range(vec![Value::from(1i64), Value::from(1_000_000i64)])
                .unwrap()
                .as_array()
                .map(|a| a.len())
                .ok(),
            Some(1_000_000)
        );
    }
}
