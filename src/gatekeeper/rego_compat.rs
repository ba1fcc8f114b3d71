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
//! * `sprintf` with fewer arguments than verbs formats the missing ones as Go does
//!   (`%!v(MISSING)`) instead of failing.
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
        // `} {` at the top level, both braces a body's: another body for the same head.
        let prev = i - 1;
        if body[i] && is_punct(src, &tokens[prev], "}") && depth[prev] == 0 {
            if let Some(head) = head_of(src, &tokens, &depth, &body, prev) {
                inserts.push((t.start, format!("{head} ")));
            }
        }
    }
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
}
