//! Where regorus reads classic (v0) Rego differently from OPA, which Gatekeeper runs. Two
//! grammar differences are normalised on the token stream, so that regorus parses exactly what
//! OPA's parser produces, and one builtin is adjusted through regorus's extension mechanism:
//!
//! * A newline between a reference and `(` ends the expression in OPA (a call needs the `(`
//!   right after the name); regorus parses it as a call (`input.x` ⏎ `(a - b) >= 1` becomes
//!   `input.x((a - b)) >= 1`, "could not find function"). The newline's meaning is made
//!   explicit with the `;` separator.
//! * `head { A } { B }` is OPA's shorthand for two rules with the same head (the parser emits a
//!   copy of the head per body). regorus refuses it for set rules and drops the head's value in
//!   the later bodies of functions; the head is written out before each body.
//! * `not f(x.y)`: OPA evaluates a reference passed to a call before the negation, so an
//!   undefined argument leaves the whole expression undefined; regorus negates the undefined
//!   call to true. Each reference argument is first required to be defined (`_ = x.y;`,
//!   written before the `not` on the same line).
//! * `sprintf` with fewer arguments than verbs formats the missing ones as Go does
//!   (`%!v(MISSING)`) instead of failing.
//!
//! Two more rewrites make the library's templates cheaper to run without changing any answer:
//! functions defined only over string constants become table lookups
//! ([`constant_functions_as_tables`]), and a set read only through lookups that fix one key is
//! computed only for those keys ([`observed_keys_only`]).
//!
//! Nothing else is touched: a token sequence that does not match leaves the text byte for byte
//! unchanged, and both rewrites keep every line where it was, so error positions still point
//! at the template's own lines.

use std::cell::RefCell;

use regorus::{Engine, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ident,
    Number,
    String,
    Punct,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
    /// Whether a line break (or a comment, which ends at one) precedes the token.
    after_newline: bool,
}

const KEYWORDS: &[&str] = &[
    "as", "contains", "default", "else", "every", "false", "if", "import", "in", "not", "null",
    "package", "some", "true", "with",
];

/// Rego's lexical structure, as far as brackets, separators and names need: comments, double-
/// quoted strings with escapes, raw strings, names, numbers and single-character punctuation.
fn lex(src: &str) -> Vec<Token> {
    let bytes = src.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut newline = true;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\n' => {
                newline = true;
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' | b'`' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    if c == b'"' && bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i = (i + 1).min(bytes.len());
                tokens.push(Token {
                    kind: Kind::String,
                    start,
                    end: i,
                    after_newline: newline,
                });
                newline = false;
            }
            _ if c == b'_' || c.is_ascii_alphabetic() => {
                let start = i;
                while i < bytes.len() && (bytes[i] == b'_' || bytes[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                tokens.push(Token {
                    kind: Kind::Ident,
                    start,
                    end: i,
                    after_newline: newline,
                });
                newline = false;
            }
            _ if c.is_ascii_digit() => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
                tokens.push(Token {
                    kind: Kind::Number,
                    start,
                    end: i,
                    after_newline: newline,
                });
                newline = false;
            }
            _ => {
                // One character of punctuation (multi-byte UTF-8 stays whole).
                let len = src[i..].chars().next().map(char::len_utf8).unwrap_or(1);
                tokens.push(Token {
                    kind: Kind::Punct,
                    start: i,
                    end: i + len,
                    after_newline: newline,
                });
                newline = false;
                i += len;
            }
        }
    }
    tokens
}

fn text<'a>(src: &'a str, t: &Token) -> &'a str {
    &src[t.start..t.end]
}

fn is_punct(src: &str, t: &Token, p: &str) -> bool {
    t.kind == Kind::Punct && text(src, t) == p
}

/// Whether the tokens up to and including `end` form a reference that regorus would call when a
/// `(` follows: a name, then `.name` or `["string"]` steps.
fn ends_callable_ref(src: &str, tokens: &[Token], end: usize) -> bool {
    let mut i = end;
    loop {
        let t = &tokens[i];
        if t.kind == Kind::Ident {
            // After a dot any name is a field, keywords included.
            if i >= 1 && is_punct(src, &tokens[i - 1], ".") && tokens[i - 1].end == t.start {
                if i < 2 {
                    return false;
                }
                i -= 2;
                continue;
            }
            return !KEYWORDS.contains(&text(src, t));
        }
        if is_punct(src, t, "]")
            && i >= 3
            && tokens[i - 1].kind == Kind::String
            && is_punct(src, &tokens[i - 2], "[")
        {
            i -= 3;
            continue;
        }
        return false;
    }
}

/// Depth of bracket nesting before each token.
fn depths(src: &str, tokens: &[Token]) -> Vec<usize> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut depth = 0usize;
    for t in tokens {
        let closes = t.kind == Kind::Punct && matches!(text(src, t), ")" | "]" | "}");
        if closes {
            depth = depth.saturating_sub(1);
        }
        out.push(depth);
        if t.kind == Kind::Punct && matches!(text(src, t), "(" | "[" | "{") {
            depth += 1;
        }
    }
    out
}

/// The index of the bracket that opens the one closed at `close`.
fn matching_open(depth: &[usize], close: usize) -> Option<usize> {
    (0..close).rev().find(|&j| depth[j] == depth[close])
}

fn is_closer(src: &str, t: &Token) -> bool {
    t.kind == Kind::Punct && matches!(text(src, t), ")" | "]" | "}")
}

/// Which top-level `{` open a rule body (rather than an object or set literal in a head, which
/// follows `=`, `:=` or `contains`).
fn body_opens(src: &str, tokens: &[Token], depth: &[usize]) -> Vec<bool> {
    (0..tokens.len())
        .map(|i| {
            is_punct(src, &tokens[i], "{")
                && depth[i] == 0
                && !(i >= 1 && matches!(text(src, &tokens[i - 1]), "=" | "contains"))
        })
        .collect()
}

/// The source as OPA would parse it, rewritten only where regorus would read it differently.
pub fn normalize(src: &str) -> String {
    let tokens = lex(src);
    let depth = depths(src, &tokens);
    let body = body_opens(src, &tokens, &depth);
    let mut inserts: Vec<(usize, String)> = Vec::new();
    for i in 1..tokens.len() {
        let t = &tokens[i];
        // A newline before `(` inside a query: the expression before it has ended.
        if is_punct(src, t, "(")
            && t.after_newline
            && depth[i] > 0
            && ends_callable_ref(src, &tokens, i - 1)
        {
            inserts.push((tokens[i - 1].end, ";".to_string()));
        }
        let field = is_punct(src, &tokens[i - 1], ".") && tokens[i - 1].end == t.start;
        if t.kind == Kind::Ident && text(src, t) == "not" && depth[i] > 0 && !field {
            let guards = negated_call_guards(src, &tokens, &depth, i);
            if !guards.is_empty() {
                inserts.push((t.start, guards));
            }
        }
        // `} {` at the top level, both braces a body's: another body for the same head.
        let prev = i - 1;
        if body[i] && is_punct(src, &tokens[prev], "}") && depth[prev] == 0 {
            if let Some(head) = head_of(src, &tokens, &depth, &body, prev) {
                inserts.push((t.start, format!("{head} ")));
            }
        }
    }
    with_inserts(src, inserts)
}

/// `src` with each text inserted at its byte offset.
fn with_inserts(src: &str, mut inserts: Vec<(usize, String)>) -> String {
    if inserts.is_empty() {
        return src.to_string();
    }
    inserts.sort_by_key(|(at, _)| *at);
    let mut out =
        String::with_capacity(src.len() + inserts.iter().map(|(_, s)| s.len()).sum::<usize>());
    let mut last = 0;
    for (at, s) in inserts {
        out.push_str(&src[last..at]);
        out.push_str(&s);
        last = at;
    }
    out.push_str(&src[last..]);
    out
}

/// Whether `tokens` are a reference with at least one step (`a.b`, `a["k"]`, `a.b["k"].c`) on
/// one line: what may be undefined where a variable (always bound under `not`) may not.
fn is_plain_ref(src: &str, tokens: &[Token]) -> bool {
    let Some(first) = tokens.first() else {
        return false;
    };
    if first.kind != Kind::Ident || KEYWORDS.contains(&text(src, first)) || text(src, first) == "_"
    {
        return false;
    }
    let mut i = 1;
    let mut steps = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        if t.after_newline {
            return false;
        }
        if is_punct(src, t, ".")
            && tokens
                .get(i + 1)
                .is_some_and(|n| n.kind == Kind::Ident && n.start == t.end && !n.after_newline)
        {
            i += 2;
        } else if is_punct(src, t, "[")
            && tokens.get(i + 1).is_some_and(|n| n.kind == Kind::String)
            && tokens.get(i + 2).is_some_and(|n| is_punct(src, n, "]"))
        {
            i += 3;
        } else {
            return false;
        }
        steps += 1;
    }
    steps > 0
}

/// For `not f(args)` starting at token `not_at`: `_ = arg; ` for every argument that is a
/// reference, so that an undefined argument makes the expression undefined, as in OPA (which
/// evaluates the call's arguments before negating). Empty when nothing needs guarding.
fn negated_call_guards(src: &str, tokens: &[Token], depth: &[usize], not_at: usize) -> String {
    // The called name: a reference right after `not`, then `(` directly after it.
    let mut end = not_at;
    while let Some(t) = tokens.get(end + 1) {
        let in_ref = matches!(t.kind, Kind::Ident | Kind::String)
            || is_punct(src, t, ".")
            || is_punct(src, t, "[")
            || is_punct(src, t, "]");
        if !in_ref || t.after_newline {
            break;
        }
        end += 1;
    }
    let open = end + 1;
    let name = &tokens[not_at + 1..open.min(tokens.len())];
    let named = name.len() == 1 && name[0].kind == Kind::Ident || is_plain_ref(src, name);
    let called = tokens
        .get(open)
        .is_some_and(|t| is_punct(src, t, "(") && t.start == tokens[end].end);
    if end == not_at || !named || !called || !ends_callable_ref(src, tokens, end) {
        return String::new();
    }
    let inner = depth[open] + 1;
    let mut guards = String::new();
    let mut arg_start = open + 1;
    let mut k = open + 1;
    while k < tokens.len() {
        let at_top = depth[k] == inner;
        let closes = is_punct(src, &tokens[k], ")") && depth[k] == depth[open];
        if closes || (at_top && is_punct(src, &tokens[k], ",")) {
            let arg = &tokens[arg_start..k];
            if is_plain_ref(src, arg) {
                if let (Some(a), Some(b)) = (arg.first(), arg.last()) {
                    guards.push_str(&format!("_ = {}; ", &src[a.start..b.end]));
                }
            }
            if closes {
                // `with` replaces data or input for the call only: the guard would read the
                // unreplaced value, so such a call is left as it is.
                let with = tokens
                    .get(k + 1)
                    .is_some_and(|t| t.kind == Kind::Ident && text(src, t) == "with");
                return if with { String::new() } else { guards };
            }
            arg_start = k + 1;
        }
        k += 1;
    }
    String::new()
}

/// The head of the rule whose body ends at `close` (a top-level `}`), walking back over any
/// earlier bodies of the same head, written on one line with the original spacing. `None`
/// when `close` does not end a body, or the head is not one to repeat (an `else` chain).
fn head_of(
    src: &str,
    tokens: &[Token],
    depth: &[usize],
    body: &[bool],
    close: usize,
) -> Option<String> {
    let mut open = matching_open(depth, close)?;
    if !body[open] {
        return None;
    }
    // Earlier bodies of the same chain: `} {` repeated.
    while open >= 1 && is_punct(src, &tokens[open - 1], "}") && depth[open - 1] == 0 {
        let earlier = matching_open(depth, open - 1)?;
        if !body[earlier] {
            break;
        }
        open = earlier;
    }
    // The head starts at the first top-level token of its line; bracketed parts (a set rule's
    // key, a function's arguments, a literal value) are stepped over whole.
    let mut start = open;
    while start > 0 {
        let prev = start - 1;
        let t = &tokens[prev];
        if is_closer(src, t) && depth[prev] == 0 {
            let o = matching_open(depth, prev)?;
            if body[o] {
                break;
            }
            start = o;
        } else {
            start = prev;
        }
        if tokens[start].after_newline && depth[start] == 0 {
            break;
        }
    }
    if start == open {
        return None;
    }
    let head = &tokens[start..open];
    if head
        .iter()
        .any(|t| matches!(text(src, t), "else" | "default" | "import" | "package"))
    {
        return None;
    }
    let mut out = String::new();
    for (k, t) in head.iter().enumerate() {
        if k > 0 && head[k - 1].end != t.start {
            out.push(' ');
        }
        out.push_str(text(src, t));
    }
    Some(out)
}

/// Go's `%!verb(MISSING)` for the verbs `args` cannot fill, recognising verbs exactly as
/// regorus's `sprintf` does; `None` when every verb has an argument.
pub(crate) fn mark_missing(format: &str, args: usize) -> Option<String> {
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars().peekable();
    let mut index = 0usize;
    let mut changed = false;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::from('%');
        match chars.next() {
            Some('%') => {
                out.push_str("%%");
                continue;
            }
            Some(d) if d == '.' || d.is_numeric() => {
                spec.push(d);
                while let Some(n) = chars.peek().copied().filter(|n| n.is_numeric()) {
                    spec.push(n);
                    chars.next();
                }
                match chars.next() {
                    Some(verb) => spec.push(verb),
                    None => {
                        out.push_str(&spec);
                        break;
                    }
                }
            }
            Some(verb) => spec.push(verb),
            None => {
                out.push('%');
                break;
            }
        }
        if index >= args {
            let verb = spec.chars().last().unwrap_or('v');
            out.push_str(&format!("%%!{verb}(MISSING)"));
            changed = true;
        } else {
            out.push_str(&spec);
        }
        index += 1;
    }
    changed.then_some(out)
}

thread_local! {
    /// An engine without the override, to reach regorus's own `sprintf`.
    static BUILTIN: RefCell<Option<Engine>> = const { RefCell::new(None) };
}

fn builtin_sprintf(format: Value, args: Value) -> anyhow::Result<Value> {
    BUILTIN.with(|cell| {
        let mut slot = cell.borrow_mut();
        let engine = match slot.as_mut() {
            Some(e) => e,
            None => {
                let mut e = Engine::new();
                e.add_policy(
                    "regate:sprintf.rego".to_string(),
                    "package regate_sprintf\nout := sprintf(input.f, input.a)\n".to_string(),
                )?;
                slot.insert(e)
            }
        };
        let mut input = std::collections::BTreeMap::new();
        input.insert(Value::from("f"), format);
        input.insert(Value::from("a"), args);
        engine.set_input(Value::from(input));
        engine.eval_rule("data.regate_sprintf.out".to_string())
    })
}

/// `sprintf` as OPA's (Go's) formatting treats missing arguments.
fn sprintf(mut params: Vec<Value>) -> anyhow::Result<Value> {
    let args = params.pop().unwrap_or(Value::Undefined);
    let format = params.pop().unwrap_or(Value::Undefined);
    if let (Value::String(f), Value::Array(a)) = (&format, &args) {
        if let Some(fixed) = mark_missing(f, a.len()) {
            return builtin_sprintf(Value::from(fixed), args);
        }
    }
    builtin_sprintf(format, args)
}

/// One definition of a function over one string constant: `f("k") = v { true }`, `f("k") = v`
/// or `f("k") := v`, on one line, `v` a number or string literal.
struct ConstantDefinition {
    key: String,
    value: String,
    start: usize,
    end: usize,
}

/// The definition starting at statement token `i`, if it has exactly that shape.
fn constant_definition(src: &str, tokens: &[Token], i: usize) -> Option<ConstantDefinition> {
    let at = |k: usize| tokens.get(i + k);
    let name = at(0).filter(|t| t.kind == Kind::Ident)?;
    let key = at(2).filter(|t| t.kind == Kind::String && text(src, t).starts_with('"'))?;
    if !at(1).is_some_and(|t| is_punct(src, t, "("))
        || !at(3).is_some_and(|t| is_punct(src, t, ")"))
        || text(src, key).contains('\\')
    {
        return None;
    }
    // `=`, or `:=` (two punctuation tokens side by side).
    let mut v = 4;
    if at(v).is_some_and(|t| is_punct(src, t, ":")) {
        v += 1;
    }
    if !at(v).is_some_and(|t| is_punct(src, t, "=")) {
        return None;
    }
    v += 1;
    let value = at(v).filter(|t| matches!(t.kind, Kind::Number | Kind::String))?;
    let mut last = v;
    if at(v + 1).is_some_and(|t| is_punct(src, t, "{") && !t.after_newline) {
        if !(at(v + 2).is_some_and(|t| text(src, t) == "true")
            && at(v + 3).is_some_and(|t| is_punct(src, t, "}")))
        {
            return None;
        }
        last = v + 3;
    }
    // On one line, and nothing after it on that line (an `else`, another body).
    if (1..=last).any(|k| at(k).is_some_and(|t| t.after_newline))
        || at(last + 1).is_some_and(|t| !t.after_newline)
    {
        return None;
    }
    Some(ConstantDefinition {
        key: text(src, key).to_string(),
        value: text(src, value).to_string(),
        start: name.start,
        end: at(last)?.end,
    })
}

/// Functions defined only over string constants (the library's `mem_multiple("Gi") =
/// 1073741824000 { true }`, fourteen definitions) become one lookup in a constant object.
/// A call then runs one body, not one per definition: the VM tries every definition of a
/// function on every call, and the resource-parsing templates call these several times per
/// container. The answers are the same: a key that is not in the table is undefined, as a call
/// no definition matches is; keys are distinct, so no two definitions could conflict.
/// The first definition's line holds the new function, the others are emptied and the table
/// is appended, so every other line keeps its number.
pub fn constant_functions_as_tables(src: &str) -> String {
    if src.contains("rego.v1") {
        return src.to_string();
    }
    let tokens = lex(src);
    let depth = depths(src, &tokens);
    let starts: Vec<usize> = (0..tokens.len())
        .filter(|&i| depth[i] == 0 && (i == 0 || tokens[i].after_newline))
        .collect();
    // Every statement that defines (or gives a default to) each name, by shape.
    let mut by_name: Vec<(String, Vec<ConstantDefinition>, bool)> = Vec::new();
    for &i in &starts {
        let t = &tokens[i];
        if t.kind != Kind::Ident {
            continue;
        }
        let (name, def) = match text(src, t) {
            "default" => match tokens.get(i + 1) {
                Some(n) if n.kind == Kind::Ident => (text(src, n).to_string(), None),
                _ => continue,
            },
            "package" | "import" => continue,
            other => (other.to_string(), constant_definition(src, &tokens, i)),
        };
        let entry = match by_name.iter().position(|(n, _, _)| *n == name) {
            Some(p) => &mut by_name[p],
            None => {
                by_name.push((name, Vec::new(), true));
                let last = by_name.len() - 1;
                &mut by_name[last]
            }
        };
        match def {
            Some(d) => entry.1.push(d),
            None => entry.2 = false,
        }
    }
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut tables = String::new();
    for (name, defs, only_constants) in by_name {
        let table = format!("__regate_table_{name}");
        if !only_constants || defs.len() < 2 || src.contains(&table) {
            continue;
        }
        let mut keys: Vec<&str> = defs.iter().map(|d| d.key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.len() != defs.len() {
            continue;
        }
        for (n, d) in defs.iter().enumerate() {
            let with = if n == 0 {
                format!("{name}(__regate_key) = __regate_value {{ __regate_value := {table}[__regate_key] }}")
            } else {
                String::new()
            };
            edits.push((d.start, d.end, with));
        }
        let entries: Vec<String> = defs
            .iter()
            .map(|d| format!("{}: {}", d.key, d.value))
            .collect();
        tables.push_str(&format!("\n{table} := {{{}}}\n", entries.join(", ")));
    }
    if edits.is_empty() {
        return src.to_string();
    }
    edits.sort_by_key(|(start, _, _)| *start);
    let mut out = String::with_capacity(src.len() + tables.len());
    let mut last = 0;
    for (start, end, with) in edits {
        out.push_str(&src[last..start]);
        out.push_str(&with);
        last = end;
    }
    out.push_str(&src[last..]);
    out.push_str(&tables);
    out
}

/// The index of the bracket that closes the one opened at `open`.
fn matching_close(src: &str, tokens: &[Token], depth: &[usize], open: usize) -> Option<usize> {
    (open + 1..tokens.len()).find(|&j| depth[j] == depth[open] && is_closer(src, &tokens[j]))
}

/// The entries of the object literal opened at `open` whose key is a plain string and whose
/// value is one token: (key, value token). `None` when it is not an object literal with
/// `key: value` entries (a set literal, a comprehension).
fn object_entries(
    src: &str,
    tokens: &[Token],
    depth: &[usize],
    open: usize,
) -> Option<(Vec<(String, usize)>, usize)> {
    let close = matching_close(src, tokens, depth, open)?;
    let inner = depth[open] + 1;
    let mut entries = Vec::new();
    let mut start = open + 1;
    while start < close {
        let end = (start..close)
            .find(|&j| depth[j] == inner && is_punct(src, &tokens[j], ","))
            .unwrap_or(close);
        if end == start + 3
            && tokens[start].kind == Kind::String
            && text(src, &tokens[start]).starts_with('"')
            && is_punct(src, &tokens[start + 1], ":")
        {
            entries.push((text(src, &tokens[start]).to_string(), start + 2));
        } else if !(start + 1..end).any(|j| depth[j] == inner && is_punct(src, &tokens[j], ":")) {
            return None;
        }
        start = end + 1;
    }
    Some((entries, close))
}

/// The object literal of a lookup `name[{...}]` whose name is token `at`: its plain-string-keyed
/// one-token entries and the index of its `}` (see [`object_entries`]).
fn object_lookup(
    src: &str,
    tokens: &[Token],
    depth: &[usize],
    at: usize,
) -> Option<(Vec<(String, usize)>, usize)> {
    if !(is_punct(src, tokens.get(at + 1)?, "[") && is_punct(src, tokens.get(at + 2)?, "{")) {
        return None;
    }
    let (object, close) = object_entries(src, tokens, depth, at + 2)?;
    is_punct(src, tokens.get(close + 1)?, "]").then_some((object, close))
}

/// One definition of a partial set `g[{..., "k": var, ...}] { body }`.
struct SetDefinition {
    /// Each key whose value in the head is a variable, with that variable.
    variables: Vec<(String, String)>,
    /// The body's `{`.
    body: usize,
    /// The tokens of the head and body, which are not references to the set.
    span: (usize, usize),
}

/// A partial set of objects that the template reads only by lookups fixing one key to string
/// constants, `general_violation[{"msg": msg, "field": "containers"}]`, is computed only for
/// those constants: each body first binds the key's variable to one of them. The library's
/// resource templates (`container := input.review.object.spec[field][_]`) otherwise walk every
/// field of a Pod's spec, volumes and tolerations included, in each of their bodies.
/// The set's other elements could never be seen: no entry point is the set, no other piece of
/// the template names it, and every reference fixes the key. A set with a body that declares
/// the variable itself (`some`, `every`, `:=`) is left as it is. Lines keep their numbers.
pub fn observed_keys_only(src: &str, entries: &[&str], others: &[&str]) -> String {
    if src.contains("rego.v1") {
        return src.to_string();
    }
    let tokens = lex(src);
    let depth = depths(src, &tokens);
    let body = body_opens(src, &tokens, &depth);
    let mut sets: Vec<(String, Vec<SetDefinition>, bool)> = Vec::new();
    for i in 0..tokens.len() {
        let t = &tokens[i];
        // A statement starts a line, or follows a body's `}` (as `normalize` writes the heads of
        // `head { A } { B }`).
        let starts =
            i == 0 || t.after_newline || (is_punct(src, &tokens[i - 1], "}") && depth[i - 1] == 0);
        if depth[i] != 0 || !starts || t.kind != Kind::Ident {
            continue;
        }
        let name = text(src, t);
        if KEYWORDS.contains(&name) {
            continue;
        }
        let definition = (|| {
            let (object, close) = object_lookup(src, &tokens, &depth, i)?;
            let open = close + 2;
            if !*body.get(open)? {
                return None;
            }
            let end = matching_close(src, &tokens, &depth, open)?;
            let variables = object
                .into_iter()
                .filter(|(_, v)| {
                    let v = &tokens[*v];
                    v.kind == Kind::Ident
                        && !KEYWORDS.contains(&text(src, v))
                        && text(src, v) != "_"
                })
                .map(|(k, v)| (k, text(src, &tokens[v]).to_string()))
                .collect();
            Some(SetDefinition {
                variables,
                body: open,
                span: (i, end),
            })
        })();
        let at = match sets.iter().position(|(n, _, _)| n == name) {
            Some(p) => p,
            None => {
                sets.push((name.to_string(), Vec::new(), true));
                sets.len() - 1
            }
        };
        match definition {
            Some(d) => sets[at].1.push(d),
            None => sets[at].2 = false,
        }
    }
    let names_in_others: std::collections::HashSet<&str> = others
        .iter()
        .flat_map(|o| {
            lex(o)
                .into_iter()
                .filter(|t| t.kind == Kind::Ident)
                .map(move |t| text(o, &t))
        })
        .collect();
    let mut inserts: Vec<(usize, String)> = Vec::new();
    for (name, definitions, only_sets) in sets {
        let named_elsewhere = entries.iter().any(|e| e.rsplit('.').next() == Some(&name))
            || names_in_others.contains(name.as_str());
        if !only_sets || definitions.is_empty() || named_elsewhere {
            continue;
        }
        // Every other mention of the name, and the constants it fixes each key to.
        let inside = |j: usize| definitions.iter().any(|d| d.span.0 <= j && j <= d.span.1);
        let mut fixed: Option<Vec<(String, Vec<String>)>> = None;
        let mut references = 0;
        for j in 0..tokens.len() {
            if tokens[j].kind != Kind::Ident || text(src, &tokens[j]) != name || inside(j) {
                continue;
            }
            references += 1;
            let constants: Vec<(String, String)> = object_lookup(src, &tokens, &depth, j)
                .map(|(object, _)| {
                    object
                        .into_iter()
                        .filter(|(_, v)| {
                            let t = &tokens[*v];
                            t.kind == Kind::String && text(src, t).starts_with('"')
                        })
                        .map(|(k, v)| (k, text(src, &tokens[v]).to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let keys = fixed.get_or_insert_with(|| {
                constants
                    .iter()
                    .map(|(k, _)| (k.clone(), Vec::new()))
                    .collect()
            });
            keys.retain(|(k, _)| constants.iter().any(|(c, _)| c == k));
            for (k, values) in keys.iter_mut() {
                values.extend(
                    constants
                        .iter()
                        .filter(|(c, _)| c == k)
                        .map(|(_, v)| v.clone()),
                );
            }
        }
        let Some(fixed) = fixed.filter(|_| references > 0) else {
            continue;
        };
        // The first fixed key that every definition binds to a variable it does not declare.
        let chosen = fixed.into_iter().find_map(|(key, mut values)| {
            let variables: Vec<&str> = definitions
                .iter()
                .map(|d| {
                    d.variables
                        .iter()
                        .find(|(k, _)| *k == key)
                        .map(|(_, v)| v.as_str())
                })
                .collect::<Option<_>>()?;
            let declares = definitions.iter().zip(&variables).any(|(d, var)| {
                (d.body..d.span.1).any(|j| {
                    let t = text(src, &tokens[j]);
                    t == "some"
                        || t == "every"
                        || (t == *var && tokens.get(j + 1).is_some_and(|n| is_punct(src, n, ":")))
                })
            });
            if declares {
                return None;
            }
            values.sort();
            values.dedup();
            Some((values, variables))
        });
        let Some((values, variables)) = chosen else {
            continue;
        };
        for (d, var) in definitions.iter().zip(variables) {
            inserts.push((
                tokens[d.body].end,
                format!(" {{{}}}[{var}];", values.join(", ")),
            ));
        }
    }
    with_inserts(src, inserts)
}

/// Installs the builtin adjustments on an engine that runs Gatekeeper templates.
pub fn install(engine: &mut Engine) -> anyhow::Result<()> {
    engine.add_extension("sprintf".to_string(), 2, Box::new(sprintf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_before_paren_ends_the_expression() {
        let src = "p {\n  input.parameters.spread\n  (a - b) >= 1\n}\n";
        assert_eq!(
            normalize(src),
            "p {\n  input.parameters.spread;\n  (a - b) >= 1\n}\n"
        );
        let brack = "p {\n  x[\"k\"]\n  (1)\n}";
        assert_eq!(normalize(brack), "p {\n  x[\"k\"];\n  (1)\n}");
    }

    #[test]
    fn calls_and_other_parens_are_left_alone() {
        for src in [
            "p {\n  f(x)\n  g(y)\n}",
            "p {\n  x := a +\n  (b)\n}",
            "p {\n  x[_]\n  (1)\n}",
            "p {\n  x in\n  (y)\n}",
            "p { f (x) }",
            "p {\n  s := \"a\n(\"\n}",
            "p {\n  x # comment (\n  y\n}",
            "f(x) = y {\n  y := x\n}",
        ] {
            assert_eq!(normalize(src), src, "{src}");
        }
    }

    #[test]
    fn comments_between_name_and_paren() {
        let src = "p {\n  input.a # why\n  (1 + 1) == 2\n}";
        assert_eq!(normalize(src), "p {\n  input.a; # why\n  (1 + 1) == 2\n}");
    }

    #[test]
    fn multi_body_rules_repeat_their_head() {
        let src = "violation[{\"msg\": msg}] {\n  a\n  msg := \"}\"\n} {\n  b\n  msg := \"x\"\n} {\n  c\n}\n";
        let out = normalize(src);
        assert_eq!(
            out,
            "violation[{\"msg\": msg}] {\n  a\n  msg := \"}\"\n} violation[{\"msg\": msg}] {\n  b\n  msg := \"x\"\n} violation[{\"msg\": msg}] {\n  c\n}\n"
        );
        assert_eq!(out.lines().count(), src.lines().count());
        let f = "get(obj) = spec {\n  obj.kind == \"Pod\"\n} {\n  obj.kind == \"Job\"\n}";
        assert_eq!(normalize(f), "get(obj) = spec {\n  obj.kind == \"Pod\"\n} get(obj) = spec {\n  obj.kind == \"Job\"\n}");
    }

    #[test]
    fn literal_values_in_heads_are_part_of_the_head() {
        let src = "p = {\"a\": 1} { x } { y }";
        assert_eq!(normalize(src), "p = {\"a\": 1} { x } p = {\"a\": 1} { y }");
    }

    #[test]
    fn multi_line_heads_are_written_on_one_line() {
        let src = "v[{\"msg\": m,\n   \"details\": d}] {\n  a\n} {\n  b\n}";
        assert_eq!(
            normalize(src),
            "v[{\"msg\": m,\n   \"details\": d}] {\n  a\n} v[{\"msg\": m, \"details\": d}] {\n  b\n}"
        );
    }

    #[test]
    fn separate_rules_and_else_are_left_alone() {
        for src in [
            "p { a }\nq { b }",
            "p = 1 { a } else = 2 { b }",
            "p { a }\n\nq[x] { x := 1 }",
            "x := {\"a\": 1}",
            "p = {\"a\": 1} { true }",
            "p = {\"a\": 1} { true }\nq { x }",
            "default p = {}\nq { x }",
        ] {
            assert_eq!(normalize(src), src, "{src}");
        }
    }

    #[test]
    fn negated_calls_require_their_reference_arguments() {
        let src = "p {\n  not f(rule, params.ranges, x[\"k\"].y, 1)\n}";
        assert_eq!(
            normalize(src),
            "p {\n  _ = params.ranges; _ = x[\"k\"].y; not f(rule, params.ranges, x[\"k\"].y, 1)\n}"
        );
        let lib = "p { not data.lib.f(input.a) }";
        assert_eq!(normalize(lib), "p { _ = input.a; not data.lib.f(input.a) }");
        for same in [
            "p {\n  not f(x, 1)\n}",
            "p {\n  not input.a\n}",
            "p {\n  not f(x[_].a)\n}",
            "p {\n  not f(g(input.a))\n}",
            "p {\n  not x.y == 1\n}",
            "not_f(input.x)",
            "p {\n  not f(input.a) with input as {}\n}",
            "p {\n  input.not(x.y)\n}",
        ] {
            assert_eq!(normalize(same), same, "{same}");
        }
    }

    /// The rewrite gives OPA's answer: an undefined argument leaves `not f(…)` undefined.
    #[test]
    fn undefined_argument_under_not_is_undefined() {
        let mut e = Engine::new();
        e.set_rego_v0(true);
        let src = "package t\nf(_, _) { true }\nfires { p := {\"rule\": 1}; not f(p.rule, p.ranges) }\nother { p := {\"rule\": 1}; not g(p.rule) }\ng(x) { x == 2 }\n";
        e.add_policy("t.rego".into(), normalize(src)).unwrap();
        assert_eq!(
            e.eval_rule("data.t.fires".into()).unwrap(),
            Value::Undefined
        );
        assert_eq!(
            e.eval_rule("data.t.other".into()).unwrap(),
            Value::from(true)
        );
    }

    #[test]
    fn missing_sprintf_arguments_are_marked() {
        assert_eq!(mark_missing("%v and %v", 2), None);
        assert_eq!(
            mark_missing("%v and %v", 1).as_deref(),
            Some("%v and %%!v(MISSING)")
        );
        assert_eq!(
            mark_missing("100%% %5d %s", 0).as_deref(),
            Some("100%% %%!d(MISSING) %%!s(MISSING)")
        );
        assert_eq!(mark_missing("%.2f", 0).as_deref(), Some("%%!f(MISSING)"));
    }

    #[test]
    fn sprintf_extension_formats_like_go() {
        let mut e = Engine::new();
        install(&mut e).unwrap();
        e.add_policy(
            "t.rego".into(),
            "package t\nfull := sprintf(\"%v-%d\", [\"a\", 2])\nshort := sprintf(\"%v <%v> %v\", [\"a\", [1]])\n".into(),
        )
        .unwrap();
        assert_eq!(
            e.eval_rule("data.t.full".into()).unwrap(),
            Value::from("a-2")
        );
        assert_eq!(
            e.eval_rule("data.t.short".into()).unwrap(),
            Value::from("a <[1]> %!v(MISSING)")
        );
    }
    #[test]
    fn constant_functions_become_tables() {
        let src = "package p\n\n# 10 ** 3\nm(\"\") = 1000 { true }\nm(\"Ki\") = 1024000 { true }\nm(\"x\") := \"y\"\n\nq = m(\"Ki\")\n";
        assert_eq!(
            constant_functions_as_tables(src),
            "package p\n\n# 10 ** 3\nm(__regate_key) = __regate_value { __regate_value := __regate_table_m[__regate_key] }\n\n\n\nq = m(\"Ki\")\n\n__regate_table_m := {\"\": 1000, \"Ki\": 1024000, \"x\": \"y\"}\n"
        );
    }

    #[test]
    fn functions_not_only_over_constants_are_left_alone() {
        for src in [
            // another definition of another shape
            "package p\nm(\"a\") = 1 { true }\nm(x) = 2 { x == \"b\" }\n",
            // a default
            "package p\ndefault m(_) = 0\nm(\"a\") = 1\nm(\"b\") = 2\n",
            // a key twice
            "package p\nm(\"a\") = 1\nm(\"a\") = 2\n",
            // a body that is not `true`, an else
            "package p\nm(\"a\") = 1 { input.x }\nm(\"b\") = 2\n",
            "package p\nm(\"a\") = 1 { true } else = 3\nm(\"b\") = 2\n",
            // one definition only
            "package p\nm(\"a\") = 1\n",
            "package p\nimport rego.v1\nm(\"a\") := 1\nm(\"b\") := 2\n",
        ] {
            assert_eq!(constant_functions_as_tables(src), src, "{src}");
        }
    }

    #[test]
    fn a_table_answers_as_the_definitions_do() {
        let defs = "package p\nm(\"E\") = 1000000000000000000000 { true }\nm(\"Ki\") = 1024000 { true }\nm(\"\") = 1000 { true }\n";
        let queries = [
            "m(\"Ki\")",
            "m(\"\")",
            "m(\"E\")",
            "m(\"Q\")",
            "m(1)",
            "[x | x := m(\"Ki\")]",
            "[x | x := m(\"nope\")]",
        ];
        for q in queries {
            let q_src = |src: &str| format!("{src}\nanswer = {q}\n");
            let answer = |src: &str| {
                let mut e = Engine::new();
                e.set_rego_v0(true);
                e.add_policy("p.rego".into(), q_src(src))
                    .map_err(|e| e.to_string())?;
                e.eval_rule("data.p.answer".into())
                    .map(|v| v.to_string())
                    .map_err(|e| e.to_string())
            };
            assert_eq!(
                answer(defs),
                answer(&constant_functions_as_tables(defs)),
                "{q}"
            );
        }
    }

    const RESOURCES: &str = "package p\n\nviolation[{\"msg\": msg}] {\n  general_violation[{\"msg\": msg, \"field\": \"containers\"}]\n}\n\nviolation[{\"msg\": msg}] {\n  general_violation[{\"msg\": msg, \"field\": \"initContainers\"}]\n}\n\ngeneral_violation[{\"msg\": msg, \"field\": field}] {\n  c := input.spec[field][_]\n  not c.limits\n  msg := sprintf(\"%v in %v\", [c.name, field])\n}\n\ngeneral_violation[{\"msg\": msg, \"field\": field}] {\n  c := input.spec[field][_]\n  c.bad\n  msg := \"bad\"\n}\n";

    #[test]
    fn sets_read_through_fixed_keys_are_computed_for_those_keys() {
        let out = observed_keys_only(RESOURCES, &["violation"], &[]);
        assert_eq!(
            out,
            RESOURCES.replace(
                "general_violation[{\"msg\": msg, \"field\": field}] {",
                "general_violation[{\"msg\": msg, \"field\": field}] { {\"containers\", \"initContainers\"}[field];"
            )
        );
        assert_eq!(out.lines().count(), RESOURCES.lines().count());
        // `normalize` writes a later body's head after the earlier `}`.
        let chained = normalize("package p\nv[m] { s[{\"m\": m, \"k\": \"a\"}] }\ns[{\"m\": m, \"k\": k}] { input[k][_] = m } {\n  input[k].x = m\n}\n");
        assert_eq!(
            observed_keys_only(&chained, &["v"], &[]),
            "package p\nv[m] { s[{\"m\": m, \"k\": \"a\"}] }\ns[{\"m\": m, \"k\": k}] { {\"a\"}[k]; input[k][_] = m } s[{\"m\": m, \"k\": k}] { {\"a\"}[k];\n  input[k].x = m\n}\n"
        );
    }

    #[test]
    fn sets_read_any_other_way_are_left_alone() {
        let cases = [
            // read whole, or with a variable for the key
            RESOURCES.replace("violation[{\"msg\": msg}] {\n  general_violation[{\"msg\": msg, \"field\": \"containers\"}]", "violation[{\"msg\": msg}] {\n  count(general_violation) > 0; msg := \"x\""),
            RESOURCES.replace("\"field\": \"containers\"", "\"field\": f"),
            // a body declares the variable itself
            RESOURCES.replace("c.bad\n", "some field\n  c.bad\n"),
            RESOURCES.replace("c.bad\n", "field := \"x\"\n  c.bad\n"),
            // another definition of another shape
            format!("{RESOURCES}\ngeneral_violation[x] {{ x := input.y }}\n"),
            format!("{RESOURCES}\ndefault general_violation = {{}}\n"),
            // v1
            format!("{RESOURCES}\nimport rego.v1\n"),
        ];
        for src in &cases {
            assert_eq!(&observed_keys_only(src, &["violation"], &[]), src, "{src}");
        }
        // an entry point, or named by a lib
        assert_eq!(
            observed_keys_only(RESOURCES, &["violation", "general_violation"], &[]),
            RESOURCES
        );
        let lib = "package lib.x\nq { data.p.general_violation }\n";
        assert_eq!(
            observed_keys_only(RESOURCES, &["violation"], &[lib]),
            RESOURCES
        );
    }

    #[test]
    fn sets_computed_for_their_fixed_keys_answer_as_before() {
        let inputs = [
            r#"{"spec": {"containers": [{"name": "a"}, {"name": "b", "limits": 1}], "initContainers": [{"name": "i", "bad": true}], "volumes": [{"name": "v"}, {"name": "w", "bad": true}], "tolerations": [], "priority": 3}}"#,
            r#"{"spec": {"volumes": [{"name": "v"}]}}"#,
            r#"{"spec": {}}"#,
            r#"{"spec": {"containers": "not a list"}}"#,
        ];
        let answer = |src: &str, input: &str| {
            let mut e = Engine::new();
            e.set_rego_v0(true);
            e.add_policy("p.rego".into(), src.to_string())
                .map_err(|e| e.to_string())?;
            e.set_input_json(input).map_err(|e| e.to_string())?;
            e.eval_rule("data.p.violation".into())
                .map(|v| v.to_string())
                .map_err(|e| e.to_string())
        };
        let rewritten = observed_keys_only(RESOURCES, &["violation"], &[]);
        assert_ne!(rewritten, RESOURCES);
        for input in inputs {
            assert_eq!(
                answer(RESOURCES, input),
                answer(&rewritten, input),
                "{input}"
            );
        }
    }
}
