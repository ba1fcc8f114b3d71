//! Gatekeeper's mutation location syntax (`pkg/mutation/path/parser` and `token`):
//! `spec.containers[name: *].securityContext.runAsUser`. A path is a list of object fields,
//! each optionally followed by one keyed-list step `[key: value]` or a glob `[key: *]`. Field
//! names and key values are `[A-Za-z0-9_-]+`, or quoted with `"` or `'` (backslash escapes the
//! next character); a key value made of digits only is an integer.
//!
//! Also `pathTests` (`pkg/mutation/path/tester`): per depth of the location, whether the node
//! there must exist or must not.

use std::collections::BTreeMap;

/// A location that cannot be parsed, or path tests that cannot hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("{0:?}: error at position {1}: {2}")]
    Syntax(String, usize, String),
    #[error("location is empty")]
    Empty,
    #[error("pathTests: subPath {0:?} is not a prefix of location {1:?}")]
    NotPrefix(String, String),
    #[error("pathTests: condition {0:?} is not MustExist or MustNotExist")]
    Condition(String),
    #[error("pathTests: {0:?} is marked both MustExist and MustNotExist")]
    Conflict(String),
    #[error("pathTests: {0:?} is marked MustExist but its parent {1:?} MustNotExist")]
    ChildOfMissing(String, String),
}

/// The value that selects a keyed-list element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    Str(String),
    Int(i64),
}

impl KeyValue {
    /// Whether a list element's key field holds this value (a string never equals a number).
    pub fn matches(&self, value: &serde_json::Value) -> bool {
        match (self, value) {
            (KeyValue::Str(s), serde_json::Value::String(v)) => s == v,
            (KeyValue::Int(i), serde_json::Value::Number(n)) => n.as_i64() == Some(*i),
            _ => false,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            KeyValue::Str(s) => serde_json::Value::String(s.clone()),
            KeyValue::Int(i) => serde_json::Value::from(*i),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A field of an object.
    Object(String),
    /// The elements of a list whose `key` field equals `value`; every element when `value` is
    /// `None` (a glob).
    List {
        key: String,
        value: Option<KeyValue>,
    },
}

impl Node {
    pub fn is_list(&self) -> bool {
        matches!(self, Node::List { .. })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    pub nodes: Vec<Node>,
    pub text: String,
}

impl Path {
    /// The location up to and including the node at `depth`, for messages.
    pub fn text_to(&self, depth: usize) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().take(depth + 1).enumerate() {
            match n {
                Node::Object(f) => {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(f);
                }
                Node::List { key, value: None } => out.push_str(&format!("[{key}: *]")),
                Node::List {
                    key,
                    value: Some(KeyValue::Str(v)),
                } => out.push_str(&format!("[{key}: {v}]")),
                Node::List {
                    key,
                    value: Some(KeyValue::Int(v)),
                } => out.push_str(&format!("[{key}: {v}]")),
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Int(String),
    Separator,
    LBracket,
    RBracket,
    Glob,
    Colon,
    Eof,
}

struct Scanner<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    len: usize,
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl Scanner<'_> {
    fn position(&mut self) -> usize {
        self.chars.peek().map_or(self.len, |(i, _)| *i)
    }

    fn next_token(&mut self) -> Result<Token, (usize, String)> {
        while self
            .chars
            .peek()
            .is_some_and(|(_, c)| matches!(c, ' ' | '\t' | '\r' | '\n'))
        {
            self.chars.next();
        }
        let at = self.position();
        let Some(&(_, c)) = self.chars.peek() else {
            return Ok(Token::Eof);
        };
        if c.is_ascii_digit() {
            let mut out = String::new();
            while let Some(&(_, d)) = self.chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                out.push(d);
                self.chars.next();
            }
            return Ok(Token::Int(out));
        }
        if is_ident_char(c) {
            let mut out = String::new();
            while let Some(&(_, d)) = self.chars.peek().filter(|(_, d)| is_ident_char(*d)) {
                out.push(d);
                self.chars.next();
            }
            return Ok(Token::Ident(out));
        }
        self.chars.next();
        Ok(match c {
            '.' => Token::Separator,
            '[' => Token::LBracket,
            ']' => Token::RBracket,
            '*' => Token::Glob,
            ':' => Token::Colon,
            '"' | '\'' => {
                let mut out = String::new();
                loop {
                    match self.chars.next() {
                        Some((_, q)) if q == c => break Token::Ident(out),
                        Some((_, '\\')) => {
                            if let Some((_, e)) = self.chars.next() {
                                out.push(e);
                            }
                        }
                        Some((_, other)) => out.push(other),
                        None => return Err((self.len, "unterminated string".to_string())),
                    }
                }
            }
            other => return Err((at, format!("invalid character {other:?}"))),
        })
    }
}

/// Parses a location (or a `pathTests` subPath).
pub fn parse(input: &str) -> Result<Path, PathError> {
    let mut scanner = Scanner {
        chars: input.char_indices().peekable(),
        len: input.len(),
    };
    let syntax = |(at, message): (usize, String)| PathError::Syntax(input.to_string(), at, message);
    let mut tokens = Vec::new();
    loop {
        let at = scanner.position();
        let t = scanner.next_token().map_err(syntax)?;
        let end = t == Token::Eof;
        tokens.push((at, t));
        if end {
            break;
        }
    }
    let mut nodes = Vec::new();
    let mut i = 0;
    let unexpected = |at: usize, what: &str, got: &Token| {
        PathError::Syntax(
            input.to_string(),
            at,
            format!("expected {what}, got {got:?}"),
        )
    };
    let eof = (input.len(), Token::Eof);
    let tok = |i: usize| tokens.get(i).unwrap_or(&eof);
    while let (_, Token::Ident(field)) = tok(i) {
        nodes.push(Node::Object(field.clone()));
        i += 1;
        if tok(i).1 == Token::LBracket {
            i += 1;
            let (at, t) = tok(i);
            let Token::Ident(key) = t else {
                return Err(unexpected(*at, "a key field in [key: value]", t));
            };
            i += 1;
            let (at, t) = tok(i);
            if *t != Token::Colon {
                return Err(unexpected(*at, "':' after the key field", t));
            }
            i += 1;
            let (at, t) = tok(i);
            let value = match t {
                Token::Glob => None,
                Token::Ident(v) => Some(KeyValue::Str(v.clone())),
                Token::Int(v) => Some(KeyValue::Int(v.parse::<i64>().map_err(|_| {
                    PathError::Syntax(input.to_string(), *at, format!("integer {v} overflows"))
                })?)),
                other => return Err(unexpected(*at, "a key value or *", other)),
            };
            i += 1;
            let (at, t) = tok(i);
            if *t != Token::RBracket {
                return Err(unexpected(*at, "']'", t));
            }
            i += 1;
            nodes.push(Node::List {
                key: key.clone(),
                value,
            });
        }
        match tok(i) {
            (_, Token::Separator) => {
                i += 1;
                if tok(i).1 == Token::Eof {
                    return Err(PathError::Syntax(
                        input.to_string(),
                        input.len(),
                        "trailing separator".to_string(),
                    ));
                }
            }
            (_, Token::Eof) => {}
            (at, other) => return Err(unexpected(*at, "'.' or the end", other)),
        }
    }
    let (at, t) = tok(i);
    if *t != Token::Eof {
        return Err(unexpected(*at, "a field name or the end", t));
    }
    if nodes.is_empty() {
        return Err(PathError::Empty);
    }
    Ok(Path {
        nodes,
        text: input.to_string(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    MustExist,
    MustNotExist,
}

/// The `pathTests` of a mutator, by depth in its location.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tester {
    tests: BTreeMap<usize, Condition>,
}

impl Tester {
    /// Checks each `(subPath, condition)` against `location` as Gatekeeper does: every subPath
    /// is a prefix of the location, and no node is both required and forbidden. A node required
    /// below a forbidden one is refused too (Gatekeeper compares the tests' list positions for
    /// this; regate compares their depths, which is what the condition means).
    pub fn new(location: &Path, tests: &[(String, String)]) -> Result<Tester, PathError> {
        let mut out = BTreeMap::new();
        let mut texts: BTreeMap<usize, String> = BTreeMap::new();
        for (sub, condition) in tests {
            let path = parse(sub)?;
            if path.nodes.len() > location.nodes.len()
                || path.nodes[..] != location.nodes[..path.nodes.len()]
            {
                return Err(PathError::NotPrefix(sub.clone(), location.text.clone()));
            }
            let condition = match condition.as_str() {
                "MustExist" => Condition::MustExist,
                "MustNotExist" => Condition::MustNotExist,
                other => return Err(PathError::Condition(other.to_string())),
            };
            let depth = path.nodes.len() - 1;
            if out.get(&depth).is_some_and(|c| *c != condition) {
                return Err(PathError::Conflict(sub.clone()));
            }
            out.insert(depth, condition);
            texts.insert(depth, sub.clone());
        }
        let forbidden = out
            .iter()
            .find(|(_, c)| **c == Condition::MustNotExist)
            .map(|(d, _)| *d);
        let required = out
            .iter()
            .rev()
            .find(|(_, c)| **c == Condition::MustExist)
            .map(|(d, _)| *d);
        if let (Some(f), Some(r)) = (forbidden, required) {
            if r > f {
                return Err(PathError::ChildOfMissing(
                    texts.get(&r).cloned().unwrap_or_default(),
                    texts.get(&f).cloned().unwrap_or_default(),
                ));
            }
        }
        Ok(Tester { tests: out })
    }

    /// A tester that forbids the last node of `location` (AssignMetadata never overwrites).
    pub fn must_not_exist(location: &Path) -> Tester {
        let mut tests = BTreeMap::new();
        tests.insert(
            location.nodes.len().saturating_sub(1),
            Condition::MustNotExist,
        );
        Tester { tests }
    }

    pub fn exists_okay(&self, depth: usize) -> bool {
        self.tests
            .get(&depth)
            .is_none_or(|c| *c == Condition::MustExist)
    }

    pub fn missing_okay(&self, depth: usize) -> bool {
        self.tests
            .get(&depth)
            .is_none_or(|c| *c == Condition::MustNotExist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(s: &str) -> Node {
        Node::Object(s.to_string())
    }

    #[test]
    fn parses_fields_keyed_lists_and_globs() {
        let p = parse("spec.containers[name: *].securityContext.runAsUser").unwrap();
        assert_eq!(
            p.nodes,
            vec![
                obj("spec"),
                obj("containers"),
                Node::List {
                    key: "name".into(),
                    value: None
                },
                obj("securityContext"),
                obj("runAsUser"),
            ]
        );
        let p = parse("spec.containers[name:foo].ports[containerPort: 80]").unwrap();
        assert_eq!(
            p.nodes[2],
            Node::List {
                key: "name".into(),
                value: Some(KeyValue::Str("foo".into()))
            }
        );
        assert_eq!(
            p.nodes[4],
            Node::List {
                key: "containerPort".into(),
                value: Some(KeyValue::Int(80))
            }
        );
        let p = parse(r#"metadata.annotations."example.com/a b""#).unwrap();
        assert_eq!(p.nodes[2], obj("example.com/a b"));
        let p = parse(r#"spec['x': 'a\'b']"#).unwrap();
        assert_eq!(
            p.nodes[1],
            Node::List {
                key: "x".into(),
                value: Some(KeyValue::Str("a'b".into()))
            }
        );
    }

    #[test]
    fn refuses_what_gatekeeper_refuses() {
        for bad in [
            "",
            "spec.",
            ".spec",
            "spec..a",
            "spec.a[name]",
            "spec.a[name:]",
            "spec.a[name: x",
            "spec.a[name: x][b: y]",
            "spec.a b",
            "spec.0a",
            "spec.a/b",
            "spec.\"open",
            "spec.a[name: 99999999999999999999]",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn path_tests_follow_the_location() {
        let loc = parse("spec.containers[name: foo].securityContext.capabilities").unwrap();
        let t = Tester::new(
            &loc,
            &[
                ("spec.containers[name: foo]".into(), "MustExist".into()),
                (
                    "spec.containers[name: foo].securityContext.capabilities".into(),
                    "MustNotExist".into(),
                ),
            ],
        )
        .unwrap();
        assert!(t.exists_okay(2) && !t.missing_okay(2));
        assert!(!t.exists_okay(4) && t.missing_okay(4));
        assert!(t.exists_okay(3) && t.missing_okay(3));
        assert!(matches!(
            Tester::new(&loc, &[("spec.initContainers".into(), "MustExist".into())]),
            Err(PathError::NotPrefix(..))
        ));
        assert!(matches!(
            Tester::new(&loc, &[("spec".into(), "Maybe".into())]),
            Err(PathError::Condition(_))
        ));
        assert!(matches!(
            Tester::new(
                &loc,
                &[
                    ("spec".into(), "MustExist".into()),
                    ("spec".into(), "MustNotExist".into())
                ]
            ),
            Err(PathError::Conflict(_))
        ));
        assert!(matches!(
            Tester::new(
                &loc,
                &[
                    ("spec.containers".into(), "MustExist".into()),
                    ("spec".into(), "MustNotExist".into())
                ]
            ),
            Err(PathError::ChildOfMissing(..))
        ));
    }
}
