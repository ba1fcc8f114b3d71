//! Recursion is refused when a set is built, as OPA refuses it (`rego_recursion_error`).
//!
//! regorus 0.14 has no recursion check: a rule that depends on itself (`f(x) := f(x)`, or
//! `a := b`, `b := a`) recurses until the thread's stack overflows, and a stack overflow aborts
//! the whole process: the first request that reaches such a rule would take the server down.
//! So every engine regate builds is checked here first: a graph of which rule refers to which,
//! read from regorus's parsed modules, and any cycle in it is a load error at the rule's
//! `file:line`.
//!
//! A reference is a rule of the same package named bare (`a`, `f(x)`), a `data.…` path, or a
//! path through an import alias (`lib.f(x)` after `import data.lib`). References inside
//! comprehensions, `else` bodies, `with … as` values, defaults and heads all count. A name the
//! rule declares itself (`x := …`, `some x`, `some x in …`, `every x in …`, a function's
//! arguments) is a local variable, not a rule.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use regorus::unstable::{Expr, Literal, Module, Query, Ref, Rule, RuleHead};
use regorus::Engine;

use crate::policy::error::LoadError;

/// One cycle of rules that depend on each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cycle {
    /// The rules in order, the first repeated at the end (`data.p.a -> data.p.b -> data.p.a`).
    pub rules: Vec<String>,
    /// Where the first rule of the cycle is defined (regorus's source name).
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl Cycle {
    /// OPA's wording: `rego_recursion_error: rule data.p.a is recursive: data.p.a -> …`.
    pub fn message(&self) -> String {
        format!(
            "rego_recursion_error: rule {} is recursive: {}",
            self.rules.first().map(String::as_str).unwrap_or("?"),
            self.rules.join(" -> ")
        )
    }
}

/// The recursion errors of the modules `engine` holds, located in their files.
pub(crate) fn check(engine: &mut Engine) -> Vec<LoadError> {
    find_cycles(engine.get_modules())
        .into_iter()
        .map(|c| LoadError::new(&c.file, c.line, c.column, c.message()))
        .collect()
}

/// A rule path as segments: `["data", "regate", "policies", "p", "deny"]`.
type Path = Vec<String>;

/// Where a rule (any of its definitions) is first defined.
#[derive(Debug, Clone)]
struct Site {
    file: String,
    line: usize,
    column: usize,
}

/// Every cycle among the rules of `modules` (each cycle once, whatever rule it is entered by).
pub(crate) fn find_cycles(modules: &[Ref<Module>]) -> Vec<Cycle> {
    let (sites, edges) = graph_with_sites(modules);
    let paths: Vec<&Path> = sites.iter().map(|(p, _)| p).collect();
    let mut cycles = Vec::new();
    let mut reported: BTreeSet<BTreeSet<usize>> = BTreeSet::new();
    for cycle in cycles_of(&edges) {
        let members: BTreeSet<usize> = cycle.iter().copied().collect();
        if !reported.insert(members) {
            continue;
        }
        let first = cycle[0];
        let site = &sites[first].1;
        let mut rules: Vec<String> = cycle.iter().map(|&i| display(paths[i])).collect();
        rules.push(display(paths[first]));
        cycles.push(Cycle {
            rules,
            file: site.file.clone(),
            line: site.line,
            column: site.column,
        });
    }
    cycles
}

/// Every rule path with where it is first defined, and the rules each refers to.
fn graph_with_sites(modules: &[Ref<Module>]) -> (Vec<(Path, Site)>, Vec<BTreeSet<usize>>) {
    // Every rule path, with where it is first defined.
    let mut sites: BTreeMap<Path, Site> = BTreeMap::new();
    for module in modules {
        let package = package_path(module);
        for rule in &module.policy {
            if let Some(path) = rule_path(&package, rule) {
                let span = rule.span();
                sites.entry(path).or_insert_with(|| Site {
                    file: span.source.get_path().clone(),
                    line: span.line as usize,
                    column: span.col as usize,
                });
            }
        }
    }
    let paths: Vec<&Path> = sites.keys().collect();
    let index: HashMap<&[String], usize> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_slice(), i))
        .collect();
    let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); paths.len()];
    // The first name of every rule below its package: a bare variable that is none of these
    // names no rule of its package (most are locals and builtins), and costs no lookup.
    let mut names: std::collections::HashSet<String> = std::collections::HashSet::new();
    for module in modules {
        let depth = package_path(module).len();
        for rule in &module.policy {
            if let Some(name) =
                rule_path(&package_path(module), rule).and_then(|p| p.get(depth).cloned())
            {
                names.insert(name);
            }
        }
    }
    for module in modules {
        let package = package_path(module);
        let imports = imports_of(module);
        for rule in &module.policy {
            let Some(path) = rule_path(&package, rule) else {
                continue;
            };
            let Some(&from) = index.get(path.as_slice()) else {
                continue;
            };
            let mut refs = Refs {
                package: &package,
                imports: &imports,
                names: &names,
                locals: locals_of(rule),
                found: Vec::new(),
            };
            refs.rule(rule);
            for reference in refs.found {
                // Rules the reference reads into (`p` for `p.x.y`)…
                for k in 1..=reference.len() {
                    if let Some(&i) = index.get(&reference[..k]) {
                        edges[from].insert(i);
                    }
                }
                // …and rules below it (every rule of a package it reads whole): contiguous
                // in the sorted map.
                for (target, _) in sites
                    .range(reference.clone()..)
                    .take_while(|(t, _)| is_prefix(&reference, t))
                {
                    if let Some(&i) = index.get(target.as_slice()) {
                        edges[from].insert(i);
                    }
                }
            }
        }
    }
    (sites.into_iter().collect(), edges)
}

fn is_prefix(prefix: &[String], path: &[String]) -> bool {
    prefix.len() <= path.len() && prefix.iter().zip(path).all(|(a, b)| a == b)
}

fn display(path: &Path) -> String {
    path.join(".")
}

/// Cycles of the graph, each as the rules along it (the first not repeated): one per back
/// edge found by a depth-first walk from every rule in order. Iterative, so a long chain of
/// rules cannot overflow this thread's stack either.
fn cycles_of(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; edges.len()];
    let mut out = Vec::new();
    for root in 0..edges.len() {
        if mark[root] != Mark::New {
            continue;
        }
        // (node, its successors not yet visited)
        let mut stack: Vec<(usize, Vec<usize>)> =
            vec![(root, edges[root].iter().copied().collect())];
        mark[root] = Mark::Open;
        while let Some((node, pending)) = stack.last_mut() {
            let node = *node;
            match pending.pop() {
                Some(next) => match mark[next] {
                    Mark::New => {
                        mark[next] = Mark::Open;
                        stack.push((next, edges[next].iter().copied().collect()));
                    }
                    Mark::Open => {
                        let start = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        out.push(stack[start..].iter().map(|(n, _)| *n).collect());
                    }
                    Mark::Done => {}
                },
                None => {
                    mark[node] = Mark::Done;
                    stack.pop();
                }
            }
        }
    }
    out
}

/// `["data", …]` of a module's package.
fn package_path(module: &Module) -> Path {
    let mut out = vec!["data".to_string()];
    if let Some((root, segments)) = simple_ref(&module.package.refr) {
        out.push(root);
        out.extend(segments);
    }
    out
}

/// Alias → imported path, for imports of `data.…`.
fn imports_of(module: &Module) -> HashMap<String, Path> {
    let mut out = HashMap::new();
    for import in &module.imports {
        let Some((root, segments)) = simple_ref(&import.refr) else {
            continue;
        };
        if root != "data" || segments.is_empty() {
            continue;
        }
        let alias = match &import.r#as {
            Some(span) => span.text().to_string(),
            None => segments.last().cloned().unwrap_or_default(),
        };
        let mut path = vec![root];
        path.extend(segments);
        out.insert(alias, path);
    }
    out
}

/// The root variable and the constant segments after it (`a.b["c"]` → `a`, `[b, c]`); `None`
/// when the expression does not start with a variable. Stops at the first index that is not a
/// string literal.
fn simple_ref(expr: &Expr) -> Option<(String, Vec<String>)> {
    let mut segments = Vec::new();
    let mut at = expr;
    loop {
        match at {
            Expr::Var { span, .. } => {
                segments.reverse();
                return Some((span.text().to_string(), segments));
            }
            Expr::RefDot { refr, field, .. } => {
                segments.push(field.0.text().to_string());
                at = refr;
            }
            Expr::RefBrack { refr, index, .. } => {
                match index.as_ref() {
                    Expr::String { value, .. } | Expr::RawString { value, .. } => {
                        segments.push(value.as_string().ok()?.to_string())
                    }
                    // A variable index: what follows it is not a fixed path.
                    _ => segments.clear(),
                }
                at = refr;
            }
            _ => return None,
        }
    }
}

/// The path a rule defines (`package.name`, `package.a.b` for `a.b := …`, `package.p` for
/// `p[k] := …`).
fn rule_path(package: &Path, rule: &Rule) -> Option<Path> {
    let mut path = package.clone();
    path.extend(name_in_package(rule)?);
    Some(path)
}

/// The path a rule defines below its package (`name`, `a.b` for `a.b := …`, `p` for
/// `p[k] := …`).
pub(crate) fn name_in_package(rule: &Rule) -> Option<Path> {
    let refr = match rule {
        Rule::Spec { head, .. } => match head {
            RuleHead::Compr { refr, .. }
            | RuleHead::Set { refr, .. }
            | RuleHead::Func { refr, .. } => refr,
        },
        Rule::Default { refr, .. } => refr,
    };
    let (root, segments) = head_ref(refr)?;
    Some(std::iter::once(root).chain(segments).collect())
}

/// A head's root and its constant segments up to the first variable index (`p[k]` → `p`).
fn head_ref(expr: &Expr) -> Option<(String, Vec<String>)> {
    let mut chain = Vec::new();
    let mut at = expr;
    loop {
        match at {
            Expr::Var { span, .. } => {
                chain.reverse();
                let mut segments = Vec::new();
                for s in chain {
                    match s {
                        Some(s) => segments.push(s),
                        None => break,
                    }
                }
                return Some((span.text().to_string(), segments));
            }
            Expr::RefDot { refr, field, .. } => {
                chain.push(Some(field.0.text().to_string()));
                at = refr;
            }
            Expr::RefBrack { refr, index, .. } => {
                chain.push(match index.as_ref() {
                    Expr::String { value, .. } | Expr::RawString { value, .. } => {
                        value.as_string().ok().map(|s| s.to_string())
                    }
                    _ => None,
                });
                at = refr;
            }
            _ => return None,
        }
    }
}

/// Names a rule declares for itself: its arguments, `:=` targets, `some` and `every` variables
/// (over-approximated across its bodies: a name declared anywhere in the rule is never read as
/// a rule of the package within it).
fn locals_of(rule: &Rule) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    match rule {
        Rule::Spec { head, bodies, .. } => {
            if let RuleHead::Func { args, .. } = head {
                for a in args {
                    vars_in(a, &mut out);
                }
            }
            for body in bodies {
                query_locals(&body.query, &mut out);
                if let Some(assign) = &body.assign {
                    expr_locals(&assign.value, &mut out);
                }
            }
            match head {
                RuleHead::Compr { assign, .. } | RuleHead::Func { assign, .. } => {
                    if let Some(assign) = assign {
                        expr_locals(&assign.value, &mut out);
                    }
                }
                RuleHead::Set { key, .. } => {
                    if let Some(key) = key {
                        expr_locals(key, &mut out);
                    }
                }
            }
        }
        Rule::Default { args, .. } => {
            for a in args {
                vars_in(a, &mut out);
            }
        }
    }
    out
}

fn query_locals(query: &Query, out: &mut BTreeSet<String>) {
    for stmt in &query.stmts {
        match &stmt.literal {
            Literal::SomeVars { vars, .. } => {
                out.extend(vars.iter().map(|v| v.text().to_string()));
            }
            Literal::SomeIn {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(key) = key {
                    vars_in(key, out);
                }
                vars_in(value, out);
                expr_locals(collection, out);
            }
            Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => expr_locals(expr, out),
            Literal::Every {
                key,
                value,
                domain,
                query,
                ..
            } => {
                if let Some(key) = key {
                    out.insert(key.text().to_string());
                }
                out.insert(value.text().to_string());
                expr_locals(domain, out);
                query_locals(query, out);
            }
        }
        for w in &stmt.with_mods {
            expr_locals(&w.r#as, out);
        }
    }
}

/// Locals declared inside an expression: `:=` targets, and those of comprehension bodies.
fn expr_locals(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::AssignExpr {
            op: regorus::unstable::AssignOp::ColEq,
            lhs,
            rhs,
            ..
        } => {
            vars_in(lhs, out);
            expr_locals(rhs, out);
        }
        Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
            expr_locals(term, out);
            query_locals(query, out);
        }
        Expr::ObjectCompr {
            key, value, query, ..
        } => {
            expr_locals(key, out);
            expr_locals(value, out);
            query_locals(query, out);
        }
        _ => {}
    }
}

/// Every variable name in a term (a destructuring pattern or an argument list).
fn vars_in(expr: &Expr, out: &mut BTreeSet<String>) {
    match expr {
        Expr::Var { span, .. } => {
            out.insert(span.text().to_string());
        }
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            for i in items {
                vars_in(i, out);
            }
        }
        Expr::Object { fields, .. } => {
            for (_, k, v) in fields {
                vars_in(k, out);
                vars_in(v, out);
            }
        }
        _ => {}
    }
}

/// The rule paths one rule refers to.
struct Refs<'a> {
    package: &'a Path,
    imports: &'a HashMap<String, Path>,
    names: &'a std::collections::HashSet<String>,
    locals: BTreeSet<String>,
    found: Vec<Path>,
}

impl Refs<'_> {
    fn rule(&mut self, rule: &Rule) {
        match rule {
            Rule::Spec { head, bodies, .. } => {
                match head {
                    RuleHead::Compr { refr, assign, .. } => {
                        self.head_indices(refr);
                        if let Some(a) = assign {
                            self.expr(&a.value);
                        }
                    }
                    RuleHead::Set { refr, key, .. } => {
                        self.head_indices(refr);
                        if let Some(k) = key {
                            self.expr(k);
                        }
                    }
                    RuleHead::Func {
                        refr, args, assign, ..
                    } => {
                        self.head_indices(refr);
                        for a in args {
                            self.expr(a);
                        }
                        if let Some(a) = assign {
                            self.expr(&a.value);
                        }
                    }
                }
                for body in bodies {
                    self.query(&body.query);
                    if let Some(a) = &body.assign {
                        self.expr(&a.value);
                    }
                }
            }
            Rule::Default { args, value, .. } => {
                for a in args {
                    self.expr(a);
                }
                self.expr(value);
            }
        }
    }

    /// The variable indices of a head (`p[k]`, `p[f(x)]`), which may read rules.
    fn head_indices(&mut self, refr: &Expr) {
        let mut at = refr;
        loop {
            match at {
                Expr::RefDot { refr, .. } => at = refr,
                Expr::RefBrack { refr, index, .. } => {
                    self.expr(index);
                    at = refr;
                }
                _ => return,
            }
        }
    }

    fn query(&mut self, query: &Query) {
        for stmt in &query.stmts {
            match &stmt.literal {
                Literal::SomeVars { .. } => {}
                Literal::SomeIn {
                    key,
                    value,
                    collection,
                    ..
                } => {
                    if let Some(k) = key {
                        self.expr(k);
                    }
                    self.expr(value);
                    self.expr(collection);
                }
                Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => self.expr(expr),
                Literal::Every { domain, query, .. } => {
                    self.expr(domain);
                    self.query(query);
                }
            }
            // `with data.x as v`: the target is replaced, not read; the value is read.
            for w in &stmt.with_mods {
                self.expr(&w.r#as);
            }
        }
    }

    /// Records the rule path a reference may read, if any.
    fn reference(&mut self, expr: &Expr) {
        let Some((root, segments)) = simple_ref(expr) else {
            return;
        };
        let mut path = if root == "data" {
            vec![root]
        } else if self.locals.contains(&root)
            || root == "input"
            || !(self.imports.contains_key(&root) || self.names.contains(&root))
        {
            return;
        } else if let Some(imported) = self.imports.get(&root) {
            imported.clone()
        } else {
            let mut p = self.package.clone();
            p.push(root);
            p
        };
        path.extend(segments);
        self.found.push(path);
    }

    fn expr(&mut self, expr: &Expr) {
        match expr {
            Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. } => {}
            Expr::Var { .. } => self.reference(expr),
            Expr::RefDot { refr, .. } => {
                self.reference(expr);
                self.indices(refr);
            }
            Expr::RefBrack { refr, index, .. } => {
                self.reference(expr);
                self.expr(index);
                self.indices(refr);
            }
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                for i in items {
                    self.expr(i);
                }
            }
            Expr::Object { fields, .. } => {
                for (_, k, v) in fields {
                    self.expr(k);
                    self.expr(v);
                }
            }
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                self.expr(term);
                self.query(query);
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                self.expr(key);
                self.expr(value);
                self.query(query);
            }
            Expr::Call { fcn, params, .. } => {
                self.reference(fcn);
                self.indices(fcn);
                for p in params {
                    self.expr(p);
                }
            }
            Expr::UnaryExpr { expr, .. } => self.expr(expr),
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. }
            | Expr::AssignExpr { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => {
                if let Some(k) = key {
                    self.expr(k);
                }
                self.expr(value);
                self.expr(collection);
            }
        }
    }

    /// The index expressions inside a reference chain (`a[f(x)].b`), which are evaluated too;
    /// the chain itself was recorded whole by [`Refs::reference`].
    fn indices(&mut self, expr: &Expr) {
        let mut at = expr;
        loop {
            match at {
                Expr::RefDot { refr, .. } => at = refr,
                Expr::RefBrack { refr, index, .. } => {
                    self.expr(index);
                    at = refr;
                }
                Expr::Var { .. } => return,
                other => {
                    // A reference into a computed value (`f(x).y`, `[1][0]`).
                    self.expr(other);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cycles(files: &[(&str, &str)]) -> Vec<Cycle> {
        let mut engine = Engine::new();
        for (name, text) in files {
            engine
                .add_policy((*name).to_string(), (*text).to_string())
                .unwrap();
        }
        find_cycles(engine.get_modules())
    }

    fn one(text: &str) -> Vec<Cycle> {
        cycles(&[("p.rego", text)])
    }

    const HEAD: &str = "package p\nimport rego.v1\n";

    #[test]
    fn direct_recursion_is_found() {
        let c = one(&format!("{HEAD}f(x) := f(x)\ndeny contains 1 if f(1)\n"));
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].rules, vec!["data.p.f", "data.p.f"]);
        assert_eq!((c[0].file.as_str(), c[0].line), ("p.rego", 3));
        assert!(c[0]
            .message()
            .starts_with("rego_recursion_error: rule data.p.f is recursive"));
    }

    #[test]
    fn mutual_recursion_is_found() {
        let c = one(&format!(
            "{HEAD}a := b if {{ input.x }}\nb := a\ndeny contains 1 if a\n"
        ));
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].rules.len(), 3, "{c:?}");
        assert_eq!(c[0].line, 3);
    }

    #[test]
    fn recursion_through_else_comprehension_and_functions_is_found() {
        for (text, line) in [
            ("f(x) := 1 if x == 0\nelse := g(x)\ng(x) := f(x - 1)\n", 3),
            ("s := {y | some y in t}\nt := [z | some z in s]\n", 3),
            (
                "p contains x if { some x in q }\nq contains x if { some x in p }\n",
                3,
            ),
            (
                "o[k] := v if { some k, v in o2 }\no2[k] := v if { some k, v in o }\n",
                3,
            ),
            ("x := 1 if { not y }\ny if { count([1 | x]) > 0 }\n", 3),
            ("a := data.p.b\nb := data.p.a\n", 3),
            ("a := x if { x := b with input as c }\nb := 1\nc := a\n", 3),
        ] {
            let c = one(&format!("{HEAD}{text}"));
            assert_eq!(c.len(), 1, "{text}: {c:?}");
            assert_eq!(c[0].line, line, "{text}: {c:?}");
        }
    }

    #[test]
    fn recursion_across_packages_and_imports_is_found() {
        let c = cycles(&[
            (
                "lib.rego",
                "package lib.h\nimport rego.v1\nimport data.p\nhelper(x) := p.f(x)\n",
            ),
            (
                "p.rego",
                "package p\nimport rego.v1\nimport data.lib.h as hh\nf(x) := hh.helper(x)\n",
            ),
        ]);
        assert_eq!(c.len(), 1, "{c:?}");
    }

    #[test]
    fn ordinary_policies_have_no_cycles() {
        for text in [
            "x := 1\ny := x + 1\nf(a) := a + y\ndeny contains m if { m := f(x) }\n",
            // A local variable with a rule's name is not the rule.
            "v := 1\nw := v if { v := 2 }\nz := v2 if { some v in [1]; v2 := v }\n",
            "f(x) := 1 if x\nelse := 2\ng(x) := f(x)\n",
            "a[k] := 1 if { some k in input.ks }\nb := a.x\n",
            "deny contains msg if { some c in input.cs; msg := c }\nwarn contains m if { some m in deny }\n",
            "default allow := false\nallow if input.ok\n",
        ] {
            assert_eq!(one(&format!("{HEAD}{text}")), vec![], "{text}");
        }
        // A rule that reads the data document below another package is not recursive.
        assert_eq!(
            cycles(&[
                ("a.rego", "package a\nimport rego.v1\nx := data.b.y\n"),
                ("b.rego", "package b\nimport rego.v1\ny := data.a.z\n"),
                ("c.rego", "package a\nimport rego.v1\nz := 1\n"),
            ]),
            vec![]
        );
    }

    #[test]
    fn rego_v0_recursion_is_found() {
        let mut engine = Engine::new();
        engine.set_rego_v0(true);
        engine
            .add_policy(
                "t.rego".into(),
                "package k\nviolation[{\"msg\": msg}] { msg := m(input.review) }\nm(x) = y { y := m(x) }\n".into(),
            )
            .unwrap();
        let c = find_cycles(engine.get_modules());
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].line, 3);
    }
}
