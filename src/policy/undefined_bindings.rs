//! Finds `:=` bindings that regorus's bytecode would let through undefined.
//!
//! In Rego, `x := expr` where `expr` is undefined makes the rule body fail, and the
//! interpreter does so. regorus 0.14's bytecode binds `x` to "undefined" and goes on (its
//! compiler guards `=` bindings, not `:=` ones). Most of the time a later statement reads `x`
//! and fails then, and the answer is the same. It differs when nothing does:
//! - `x` is never read again: the body holds where it should not (`deny contains "m" if
//!   { x := input.missing }` denies);
//! - `x` is read only under `not` (`not x == 1` holds) or inside a comprehension (which is
//!   defined whatever `x` is);
//! - `x` is only the value of a body followed by `else`: the bytecode answers undefined
//!   instead of taking the `else` (`owner(obj) := o if { o := f(obj.x) } else := ""`).
//!
//! A policy with such a binding stays on the interpreter; [`find`] says where it is. A binding
//! whose value is surely defined (a literal, a comprehension) is never a problem, and neither
//! is one only read as the value of a rule body with no `else` after it (an undefined value
//! is then no value, as in the interpreter).

use std::collections::BTreeSet;

use regorus::unstable::{AssignOp, Expr, Literal, Module, Query, Ref, Rule, RuleHead};

/// The first binding (in module order) of the rules `entries` may evaluate that bytecode
/// could pass undefined where the interpreter fails, as `file:line: why`.
pub fn find(modules: &[Ref<Module>], entries: &[&str]) -> Option<String> {
    let reachable = crate::policy::recursion::reachable(modules, entries);
    // Names of user rules and functions: a call of one is never read as a builtin's.
    let mut user = BTreeSet::new();
    for module in modules {
        for rule in &module.policy {
            let refr = match rule.as_ref() {
                Rule::Spec { head, .. } => match head {
                    RuleHead::Compr { refr, .. }
                    | RuleHead::Set { refr, .. }
                    | RuleHead::Func { refr, .. } => refr,
                },
                Rule::Default { refr, .. } => refr,
            };
            if let Some(name) = dotted(refr) {
                user.insert(name);
            }
        }
        for import in &module.imports {
            if let Some(alias) = &import.r#as {
                user.insert(alias.text().to_string());
            } else if let Some(name) = dotted(&import.refr) {
                user.extend(name.rsplit('.').next().map(str::to_string));
            }
        }
    }
    let user = &user;
    for module in modules {
        for rule in &module.policy {
            if !crate::policy::recursion::rule_path_of(module, rule)
                .is_some_and(|p| reachable.contains(&p))
            {
                continue;
            }
            let Rule::Spec { head, bodies, .. } = rule.as_ref() else {
                continue;
            };
            let head_value = match head {
                RuleHead::Compr { assign, .. } | RuleHead::Func { assign, .. } => {
                    assign.as_ref().map(|a| &a.value)
                }
                RuleHead::Set { .. } => None,
            };
            // A function's arguments are defined in its bodies (a call with an undefined
            // argument is undefined, on both evaluators).
            let mut args = BTreeSet::new();
            if let RuleHead::Func { args: a, .. } = head {
                for arg in a {
                    mentions(arg, &mut args);
                }
            }
            let mut head_key: Vec<&Expr> = Vec::new();
            match head {
                RuleHead::Set { key: Some(k), .. } => head_key.push(k),
                RuleHead::Compr { refr, .. } => indices(refr, &mut head_key),
                _ => {}
            }
            // `x := [… | …]` without a body: only its comprehensions are queries.
            if bodies.is_empty() {
                if let Some(problem) = head_value.and_then(|v| nested(v, user)) {
                    return Some(problem);
                }
            }
            for (i, body) in bodies.iter().enumerate() {
                let followed_by_else = bodies.get(i + 1).is_some_and(|b| b.is_else);
                let value = if i == 0 {
                    head_value
                } else {
                    body.assign.as_ref().map(|a| &a.value)
                };
                // The value (and key) of a body: an undefined one is no value, as in the
                // interpreter, unless an `else` follows (which bytecode then skips).
                let mut outputs: Vec<&Expr> = head_key.clone();
                if !followed_by_else {
                    outputs.extend(value.map(|v| v.as_ref()));
                }
                if let Some(problem) = query(&body.query, &outputs, followed_by_else, &args, user) {
                    return Some(problem);
                }
                // Comprehensions in the value are queries of their own.
                if let Some(v) = value {
                    if let Some(problem) = nested(v, user) {
                        return Some(problem);
                    }
                }
            }
        }
    }
    None
}

/// The variable indices of a head (`p[k] := v` → `k`).
fn indices<'a>(refr: &'a Expr, out: &mut Vec<&'a Expr>) {
    let mut at = refr;
    loop {
        match at {
            Expr::RefBrack { refr, index, .. } => {
                out.push(index);
                at = refr;
            }
            Expr::RefDot { refr, .. } => at = refr,
            _ => return,
        }
    }
}

/// The problem in one query whose `outputs` are read as its value (or `None`); `defined`
/// are variables known to be defined when it starts.
fn query(
    q: &Query,
    outputs: &[&Expr],
    before_else: bool,
    defined: &BTreeSet<String>,
    user: &BTreeSet<String>,
) -> Option<String> {
    // Forwards: which variables are surely defined at each binding (read by an earlier
    // condition, iterated, or bound to a surely defined value).
    let mut defined = defined.clone();
    let mut binding_is_defined: Vec<bool> = Vec::new();
    for stmt in &q.stmts {
        match &stmt.literal {
            Literal::Expr { expr, .. } => match expr.as_ref() {
                Expr::AssignExpr {
                    op: AssignOp::ColEq,
                    lhs,
                    rhs,
                    ..
                } => {
                    let sure = surely_defined(rhs, &defined, user);
                    if sure {
                        mentions(lhs, &mut defined);
                    }
                    binding_is_defined.push(sure);
                }
                other => mentions(other, &mut defined),
            },
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    mentions(k, &mut defined);
                }
                mentions(value, &mut defined);
                mentions(collection, &mut defined);
            }
            Literal::NotExpr { .. } | Literal::Every { .. } | Literal::SomeVars { .. } => {}
        }
    }
    // Variables whose being undefined makes this query fail (read by a condition, iterated
    // over, bound with `=`) or changes nothing (an output of a body without `else`); grown
    // backwards through `:=` chains (`a := f(b)` with `a` in the set adds `b`).
    let mut safe: BTreeSet<String> = BTreeSet::new();
    for o in outputs {
        mentions(o, &mut safe);
    }
    let mut bindings: Vec<(&Expr, &Expr, usize)> = Vec::new();
    for stmt in &q.stmts {
        match &stmt.literal {
            Literal::Expr { expr, .. } => match expr.as_ref() {
                Expr::AssignExpr {
                    op: AssignOp::ColEq,
                    lhs,
                    rhs,
                    span,
                    ..
                } => bindings.push((lhs, rhs, span.line as usize)),
                other => mentions(other, &mut safe),
            },
            Literal::SomeIn { collection, .. } => mentions(collection, &mut safe),
            // Under `not` an undefined value makes the expression hold; `every` over an
            // undefined domain holds: neither fails the body.
            Literal::NotExpr { .. } | Literal::Every { .. } | Literal::SomeVars { .. } => {}
        }
    }
    for (lhs, rhs, _) in bindings.iter().rev() {
        let mut bound = BTreeSet::new();
        mentions(lhs, &mut bound);
        if bound.iter().any(|v| safe.contains(v)) {
            mentions(rhs, &mut safe);
        }
    }
    for ((lhs, _, line), sure) in bindings.iter().zip(&binding_is_defined) {
        if *sure {
            continue;
        }
        let mut bound = BTreeSet::new();
        mentions(lhs, &mut bound);
        bound.remove("_");
        if bound.is_empty() || bound.iter().any(|v| safe.contains(v)) {
            continue;
        }
        let file = lhs.span().source.get_path();
        let names = bound.into_iter().collect::<Vec<_>>().join(", ");
        let why = if before_else {
            "before an `else`, which regorus's bytecode skips when it is undefined"
        } else {
            "that nothing after it reads in a way that fails when it is undefined (regorus's bytecode goes on with an undefined value where the interpreter fails the body)"
        };
        return Some(format!(
            "{file}:{line}: `{names} := …` may bind an undefined value {why}"
        ));
    }
    // Queries nested in this one: comprehensions and `every` bodies.
    for stmt in &q.stmts {
        let problem = match &stmt.literal {
            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => nested(expr, user),
            Literal::SomeIn { collection, .. } => nested(collection, user),
            Literal::Every {
                domain, query: q, ..
            } => nested(domain, user).or_else(|| query(q, &[], false, &BTreeSet::new(), user)),
            Literal::SomeVars { .. } => None,
        };
        if problem.is_some() {
            return problem;
        }
    }
    None
}

/// Problems in the comprehensions inside `e`. A comprehension's term is not an output that
/// excuses an undefined binding: bytecode collects it where the interpreter skips the row.
fn nested(e: &Expr, user: &BTreeSet<String>) -> Option<String> {
    let mut found = None;
    walk(e, &mut |x| {
        if found.is_some() {
            return;
        }
        found = match x {
            Expr::ArrayCompr { query: q, .. }
            | Expr::SetCompr { query: q, .. }
            | Expr::ObjectCompr { query: q, .. } => query(q, &[], false, &BTreeSet::new(), user),
            _ => None,
        };
    });
    found
}

/// Whether `e` cannot be undefined when the variables `defined` are: literals, those
/// variables, comprehensions (always defined, possibly empty), collections and arithmetic of
/// such values, and calls of builtins on them (a builtin answers a value or an error, and
/// errors are handled apart: `policy::bytecode_errors`). Not references into documents or
/// values (a key may be missing), nor calls of user functions.
fn surely_defined(e: &Expr, defined: &BTreeSet<String>, user: &BTreeSet<String>) -> bool {
    let sure = |x: &Expr| surely_defined(x, defined, user);
    match e {
        Expr::Var { span, .. } => defined.contains(span.text()),
        Expr::ArithExpr { lhs, rhs, .. } | Expr::BinExpr { lhs, rhs, .. } => sure(lhs) && sure(rhs),
        Expr::Call { fcn, params, .. } => {
            dotted(fcn).is_some_and(|name| {
                !user.contains(&name)
                    && !name
                        .split('.')
                        .next()
                        .is_some_and(|root| user.contains(root))
                    && regorus::unstable::BUILTINS.contains_key(name.as_str())
            }) && params.iter().all(|p| sure(p))
        }
        Expr::String { .. }
        | Expr::RawString { .. }
        | Expr::Number { .. }
        | Expr::Bool { .. }
        | Expr::Null { .. }
        | Expr::ArrayCompr { .. }
        | Expr::SetCompr { .. }
        | Expr::ObjectCompr { .. } => true,
        Expr::Array { items, .. } | Expr::Set { items, .. } => items.iter().all(|i| sure(i)),
        Expr::Object { fields, .. } => fields.iter().all(|(_, k, v)| sure(k) && sure(v)),
        _ => false,
    }
}

/// `a.b.c` of a reference made of names only.
fn dotted(e: &Expr) -> Option<String> {
    let mut parts = Vec::new();
    let mut at = e;
    loop {
        match at {
            Expr::Var { span, .. } => {
                parts.push(span.text().to_string());
                break;
            }
            Expr::RefDot { refr, field, .. } => {
                parts.push(field.0.text().to_string());
                at = refr;
            }
            _ => return None,
        }
    }
    parts.reverse();
    Some(parts.join("."))
}

/// Variable names `e` reads, outside comprehensions (whose values are defined whatever the
/// variables they read).
fn mentions(e: &Expr, out: &mut BTreeSet<String>) {
    match e {
        Expr::Var { span, .. } => {
            out.insert(span.text().to_string());
        }
        Expr::ArrayCompr { .. } | Expr::SetCompr { .. } | Expr::ObjectCompr { .. } => {}
        other => children(other, &mut |c| mentions(c, out)),
    }
}

/// `f` on `e` and every expression inside it, comprehension queries included.
fn walk(e: &Expr, f: &mut dyn FnMut(&Expr)) {
    f(e);
    children(e, &mut |c| walk(c, f));
    let q = match e {
        Expr::ArrayCompr { query, .. }
        | Expr::SetCompr { query, .. }
        | Expr::ObjectCompr { query, .. } => query,
        _ => return,
    };
    for stmt in &q.stmts {
        match &stmt.literal {
            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => walk(expr, f),
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    walk(k, f);
                }
                walk(value, f);
                walk(collection, f);
            }
            Literal::Every { domain, .. } => walk(domain, f),
            Literal::SomeVars { .. } => {}
        }
    }
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
