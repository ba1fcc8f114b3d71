//! Secret values, and the one scrubber every text leaving regate goes through.
//!
//! A policy may quote what it judges: `sprintf("%v", [object.stringData])`, a `print()`, an
//! engine error. Whatever a request's Secrets hold (object and oldObject, `data` and
//! `stringData`), and whatever the Secrets of Gatekeeper's `data.inventory` hold, is replaced by
//! [`REDACTED`] in every message, warning, audit annotation, print, failure detail and report
//! before it leaves. Values are looked for in every form a message could quote them in: as
//! written, base64 (padded, unpadded, wrapped at 64 or 76 columns), base64-decoded, trimmed, line
//! by line, and escaped as JSON, HTML-safe JSON, doubly escaped JSON and Go's `%q` write them.
//!
//! Short values (fewer than [`MIN_SUBSTRING_CHARS`] characters) are redacted only where they
//! stand as a whole word (between characters that are not letters, digits or `_`, or at either
//! end of the text): redacting every `a`, `12` or `admin` inside other words (`W_ADMIN`) would
//! destroy the message, and a value that short is guessable whatever regate hides. Values made
//! only of whitespace are not looked for. See docs/RELIABILITY.md, "Secret values".

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use serde_json::Value;

/// What a scrubbed value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Values at least this long (in characters) are redacted wherever they occur; shorter ones only
/// as a whole word. Eight: the shortest password most policies accept, and long enough that a
/// value is rarely an ordinary word of a message.
pub const MIN_SUBSTRING_CHARS: usize = 8;

/// No long value occurs in a text ([`SecretValues::matcher_unless_absent`]).
struct Absent;

/// Up to this many long values, a text is searched for each before the matcher is built
/// ([`SecretValues::matcher_for`]); past it, the matcher is cheaper than the searches.
const PREFILTER_MAX_VALUES: usize = 64;

/// Columns base64 text is commonly wrapped at: MIME and `base64(1)` (76), PEM (64).
const WRAP_WIDTHS: [usize; 2] = [76, 64];

/// The values to scrub, in every form, with a matcher built once, when the first text is
/// scrubbed (most reviews of a Secret have nothing to scrub).
#[derive(Debug, Clone, Default)]
pub struct SecretValues {
    /// Values redacted wherever they occur, longest first.
    long: Vec<String>,
    /// Values redacted only as a whole word.
    short: Vec<String>,
    matcher: OnceLock<Option<AhoCorasick>>,
}

impl SecretValues {
    /// The values of every Secret among `objects` (anything else contributes nothing).
    pub fn of_objects<'a>(objects: impl IntoIterator<Item = &'a Value>) -> SecretValues {
        let mut forms = Vec::new();
        for object in objects {
            collect_secret(object, &mut forms);
        }
        SecretValues::from_forms(forms)
    }

    /// Every value of `parts` in one matcher, so that the longest value wins wherever values
    /// overlap across parts.
    pub fn union(parts: &[&SecretValues]) -> SecretValues {
        let non_empty: Vec<&&SecretValues> = parts.iter().filter(|p| !p.is_empty()).collect();
        match non_empty.as_slice() {
            [] => SecretValues::default(),
            [one] => (**one).clone(),
            many => SecretValues::from_forms(
                many.iter()
                    .flat_map(|p| p.long.iter().chain(&p.short).cloned())
                    .collect(),
            ),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.long.is_empty() && self.short.is_empty()
    }

    /// How many forms are looked for.
    pub fn len(&self) -> usize {
        self.long.len() + self.short.len()
    }

    /// `text` with every value replaced by [`REDACTED`].
    pub fn scrub(&self, text: &str) -> String {
        let mut out = match self.matcher_unless_absent(text) {
            Err(Absent) => text.to_string(),
            Ok(Some(m)) if m.is_match(text) => {
                let mut dst = String::with_capacity(text.len());
                m.replace_all_with(text, &mut dst, |_, _, dst| {
                    dst.push_str(REDACTED);
                    true
                });
                dst
            }
            Ok(Some(_)) => text.to_string(),
            // No matcher could be built (past aho-corasick's limits): value by value, longest
            // first, rather than not at all.
            Ok(None) => self.long.iter().fold(text.to_string(), |out, value| {
                out.replace(value.as_str(), REDACTED)
            }),
        };
        for value in &self.short {
            if let Some(replaced) = replace_words(&out, value) {
                out = replaced;
            }
        }
        out
    }

    /// Scrubs `text` where it is.
    pub fn scrub_in_place(&self, text: &mut String) {
        if !self.is_empty() {
            *text = self.scrub(text);
        }
    }

    /// Every string in `value` (keys too) scrubbed where it is: for JSON that leaves regate as
    /// JSON, such as a patch `regate eval` prints.
    pub fn scrub_json(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => self.scrub_in_place(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            Value::Object(map) => {
                let scrubbed: serde_json::Map<String, Value> = std::mem::take(map)
                    .into_iter()
                    .map(|(k, mut v)| {
                        self.scrub_json(&mut v);
                        (self.scrub(&k), v)
                    })
                    .collect();
                *map = scrubbed;
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    fn from_forms(forms: Vec<String>) -> SecretValues {
        let mut long = Vec::new();
        let mut short = Vec::new();
        for form in forms {
            if form.trim().is_empty() {
                continue;
            }
            if form.chars().count() >= MIN_SUBSTRING_CHARS {
                long.push(form);
            } else {
                short.push(form);
            }
        }
        long.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        long.dedup();
        short.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        short.dedup();
        SecretValues {
            long,
            short,
            matcher: OnceLock::new(),
        }
    }

    /// The matcher, or `Absent` when it is not built yet and `text` holds no long value: a
    /// search per value tells that for a Secret's few forms at a small part of the matcher's
    /// cost, and most texts hold none (the matcher is built only once one of them quotes a value).
    fn matcher_unless_absent(&self, text: &str) -> Result<Option<&AhoCorasick>, Absent> {
        if self.matcher.get().is_none()
            && self.long.len() <= PREFILTER_MAX_VALUES
            && !self
                .long
                .iter()
                .any(|value| memchr::memmem::find(text.as_bytes(), value.as_bytes()).is_some())
        {
            return Err(Absent);
        }
        Ok(self.matcher())
    }

    /// The matcher of the long values. Leftmost-longest: where values overlap, the longest is
    /// removed whole. A contiguous NFA, not a DFA: the texts are short and scrubbed once each,
    /// and a DFA of a Secret's few dozen forms costs more to build than all its searches.
    fn matcher(&self) -> Option<&AhoCorasick> {
        self.matcher
            .get_or_init(|| {
                if self.long.is_empty() {
                    return None;
                }
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .kind(Some(AhoCorasickKind::ContiguousNFA))
                    .build(&self.long)
                    .ok()
            })
            .as_ref()
    }
}

/// Adds every form of every value of `object` when it is a Secret.
fn collect_secret(object: &Value, forms: &mut Vec<String>) {
    if object.get("kind").and_then(Value::as_str) != Some("Secret") {
        return;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    if let Some(Value::Object(data)) = object.get("data") {
        for value in data.values() {
            let Some(written) = value.as_str() else {
                collect_leaves(value, forms);
                continue;
            };
            // As written (a manifest's base64 may be wrapped, or not be base64 at all).
            add_text_forms(written, forms);
            let compact: String = written.chars().filter(|c| !c.is_whitespace()).collect();
            add_base64_forms(&compact, forms);
            if let Ok(bytes) = b64.decode(compact.as_bytes()) {
                match String::from_utf8(bytes) {
                    Ok(text) => add_text_forms(&text, forms),
                    Err(e) => {
                        // Binary: each readable run may still be quoted.
                        let lossy = String::from_utf8_lossy(e.as_bytes()).into_owned();
                        for run in lossy.split('\u{FFFD}') {
                            add_text_forms(run, forms);
                        }
                    }
                }
            }
        }
    }
    if let Some(Value::Object(data)) = object.get("stringData") {
        for value in data.values() {
            match value {
                Value::Null => {}
                Value::String(text) => {
                    add_text_forms(text, forms);
                    add_base64_forms(&b64.encode(text.as_bytes()), forms);
                }
                other => {
                    let text = other.to_string();
                    add_text_forms(&text, forms);
                    add_base64_forms(&b64.encode(text.as_bytes()), forms);
                    collect_leaves(other, forms);
                }
            }
        }
    }
}

/// The strings and numbers inside a value that is not a plain string.
fn collect_leaves(value: &Value, forms: &mut Vec<String>) {
    match value {
        Value::String(s) => add_text_forms(s, forms),
        Value::Number(n) => forms.push(n.to_string()),
        Value::Array(items) => items.iter().for_each(|v| collect_leaves(v, forms)),
        Value::Object(map) => map.values().for_each(|v| collect_leaves(v, forms)),
        Value::Bool(_) | Value::Null => {}
    }
}

/// A text value as written, trimmed, line by line, and in its escaped forms.
fn add_text_forms(text: &str, forms: &mut Vec<String>) {
    let mut plain = vec![text.to_string()];
    let trimmed = text.trim();
    if trimmed != text {
        plain.push(trimmed.to_string());
    }
    if text.contains('\n') || text.contains('\r') {
        plain.extend(text.lines().map(|l| l.trim().to_string()));
    }
    for p in plain {
        for escaped in escaped_forms(&p) {
            if escaped != p {
                forms.push(escaped);
            }
        }
        forms.push(p);
    }
}

/// Base64 text padded and unpadded, and wrapped at the usual columns (each line a form, so a
/// wrapped quote is redacted line by line).
fn add_base64_forms(encoded: &str, forms: &mut Vec<String>) {
    if encoded.is_empty() {
        return;
    }
    forms.push(encoded.to_string());
    let unpadded = encoded.trim_end_matches('=');
    if unpadded != encoded {
        forms.push(unpadded.to_string());
    }
    for width in WRAP_WIDTHS {
        if encoded.len() > width {
            let bytes = encoded.as_bytes();
            for chunk in bytes.chunks(width) {
                forms.push(String::from_utf8_lossy(chunk).into_owned());
            }
        }
    }
}

/// `text` as JSON writes it inside quotes, as Go's JSON writes it (`<`, `>`, `&` as `\u003c`…),
/// escaped twice (JSON inside JSON), and as Go's `%q` writes it.
fn escaped_forms(text: &str) -> Vec<String> {
    let json = json_escape(text);
    let html = json
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let twice = json_escape(&json);
    vec![json, html, twice, go_quote(text)]
}

fn json_escape(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(&quoted)
        .to_string()
}

/// Go's `strconv.Quote` (what `%q` writes), without the quotes.
fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `text` with each whole-word occurrence of `value` redacted; `None` when there is none.
fn replace_words(text: &str, value: &str) -> Option<String> {
    let mut out = String::new();
    let mut last = 0;
    for (at, found) in text.match_indices(value) {
        let end = at + found.len();
        let before = text.get(..at).and_then(|t| t.chars().next_back());
        let after = text.get(end..).and_then(|t| t.chars().next());
        if before.is_some_and(is_word_char) || after.is_some_and(is_word_char) {
            continue;
        }
        out.push_str(text.get(last..at).unwrap_or(""));
        out.push_str(REDACTED);
        last = end;
    }
    if last == 0 {
        return None;
    }
    out.push_str(text.get(last..).unwrap_or(""));
    Some(out)
}

/// How serde (and so serde_json and the YAML parser) quotes the value it could not use, and the
/// character that ends the quote: `invalid value: string "…", expected an integer`, `invalid
/// type: integer `…``, `unknown variant `…``.
const PARSER_QUOTES: [(&str, char); 5] = [
    ("string \"", '"'),
    ("character `", '`'),
    ("integer `", '`'),
    ("floating point `", '`'),
    ("variant `", '`'),
];

/// A parser's error message with the values it quotes replaced by [`REDACTED`]. A document that
/// does not parse gives no Secret values to scrub with (`stringData: {password: !!int hunter2}`
/// fails with `invalid value: string "hunter2"`), so every quoted value goes, whatever it holds;
/// the position, the type and what was expected stay. Field names are kept: they are keys.
pub fn without_quoted_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    loop {
        let next = PARSER_QUOTES
            .iter()
            .filter_map(|(prefix, close)| rest.find(prefix).map(|at| (at, *prefix, *close)))
            .min_by_key(|(at, _, _)| *at);
        let Some((at, prefix, close)) = next else {
            out.push_str(rest);
            return out;
        };
        // The prefix without its opening quote, then the marker instead of the quoted value.
        let value_start = at + prefix.len();
        out.push_str(&rest[..value_start - 1]);
        out.push_str(REDACTED);
        let quoted = &rest[value_start..];
        rest = match closing_quote(quoted, close) {
            Some(end) => &quoted[end + close.len_utf8()..],
            None => "",
        };
    }
}

/// Where `close` ends a quoted value (a `"` quote is Rust-escaped: `\"` does not end it).
fn closing_quote(quoted: &str, close: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in quoted.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && close == '"' {
            escaped = true;
        } else if c == close {
            return Some(i);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    }

    fn secret(data: Value, string_data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
               "data": data, "stringData": string_data})
    }

    /// A text that holds no value is answered without building the matcher, and the answer is
    /// the matcher's; past `PREFILTER_MAX_VALUES` values the matcher is built at once.
    #[test]
    fn texts_without_values_do_not_build_the_matcher() {
        let values = SecretValues::of_objects([&secret(
            json!({"TOKEN": b64("hunter2-canary-token")}),
            json!({"PASSWORD": "correct-horse-battery"}),
        )]);
        assert_eq!(
            values.scrub("key \"TOKEN\" is 20 characters"),
            "key \"TOKEN\" is 20 characters"
        );
        assert!(values.matcher.get().is_none());
        assert_eq!(
            values.scrub("got hunter2-canary-token and correct-horse-battery"),
            format!("got {REDACTED} and {REDACTED}")
        );
        assert!(values.matcher.get().is_some());
        assert_eq!(values.scrub("nothing here"), "nothing here");

        let many: serde_json::Map<String, Value> = (0..PREFILTER_MAX_VALUES + 1)
            .map(|i| {
                (
                    format!("K{i}"),
                    Value::String(format!("value-number-{i:04}")),
                )
            })
            .collect();
        let values = SecretValues::of_objects([&secret(json!({}), Value::Object(many))]);
        assert!(values.long.len() > PREFILTER_MAX_VALUES);
        assert_eq!(values.scrub("nothing here"), "nothing here");
        assert!(values.matcher.get().is_some());
        assert_eq!(
            values.scrub("a value-number-0007."),
            format!("a {REDACTED}.")
        );
    }

    #[test]
    fn every_form_of_a_value_is_redacted() {
        let canary = "CANARY-4f1c\"q\n<x>&é\u{1}";
        let values = SecretValues::of_objects([&secret(
            json!({"a": b64(canary)}),
            json!({"b": "CANARY-plain-77"}),
        )]);
        let quoted_json = serde_json::to_string(canary).unwrap();
        let go_q = format!("\"{}\"", go_quote(canary));
        let html = quoted_json
            .replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026");
        let twice = serde_json::to_string(&quoted_json).unwrap();
        let long = "k".repeat(100);
        let wrapped_values = SecretValues::of_objects([&secret(json!({}), json!({"w": long}))]);
        let wrapped = b64(&"k".repeat(100))
            .as_bytes()
            .chunks(76)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join("\n");
        for text in [
            format!("raw {canary} end"),
            format!("b64 {} end", b64(canary)),
            format!("b64 {} end", b64(canary).trim_end_matches('=')),
            format!("json {quoted_json} end"),
            format!("go {go_q} end"),
            format!("html {html} end"),
            format!("twice {twice} end"),
            format!(
                "{{\"b\": \"CANARY-plain-77\"}} and {}",
                b64("CANARY-plain-77")
            ),
        ] {
            let scrubbed = values.scrub(&text);
            assert!(!scrubbed.contains("CANARY"), "{text:?} -> {scrubbed:?}");
            assert!(!scrubbed.contains(&b64(canary)[..12]), "{scrubbed:?}");
            assert!(scrubbed.contains(REDACTED), "{scrubbed:?}");
        }
        let scrubbed = wrapped_values.scrub(&format!("wrapped: {wrapped}"));
        assert!(!scrubbed.contains("a2tr"), "{scrubbed:?}");
    }

    #[test]
    fn wrapped_data_and_binary_values_are_redacted() {
        let encoded = b64("CANARY-wrapped-value");
        let written = format!("{}\n{}", &encoded[..10], &encoded[10..]);
        let binary = base64::engine::general_purpose::STANDARD
            .encode([&[0xffu8, 0xfe][..], b"CANARY-binary"].concat());
        let values = SecretValues::of_objects([&secret(
            json!({"w": written, "bin": binary, "bad": "CANARY-not*base64%"}),
            Value::Null,
        )]);
        for text in [
            encoded.clone(),
            "CANARY-wrapped-value".to_string(),
            "x CANARY-binary y".to_string(),
            "CANARY-not*base64%".to_string(),
        ] {
            let scrubbed = values.scrub(&text);
            assert!(!scrubbed.contains("CANARY"), "{scrubbed:?}");
            assert!(!scrubbed.contains(&encoded[..10]), "{scrubbed:?}");
        }
    }

    #[test]
    fn short_values_are_redacted_only_as_whole_words() {
        let values = SecretValues::of_objects([&secret(
            Value::Null,
            json!({"pin": "42", "a": "ab", "c": "x", "sp": "  "}),
        )]);
        assert_eq!(
            values.scrub("pin 42, \"ab\" and ab=x"),
            "pin [redacted], \"[redacted]\" and [redacted]=[redacted]"
        );
        // Inside other words, numbers or identifiers: left alone.
        assert_eq!(values.scrub("abc 420 x_1 tabs ex"), "abc 420 x_1 tabs ex");
        let words = SecretValues::of_objects([&secret(
            Value::Null,
            json!({"W_ADMIN": "ADMIN", "p": "hunter2"}),
        )]);
        assert_eq!(
            words.scrub(r#"key "W_ADMIN" holds "ADMIN"; hunter2, hunter22"#),
            r#"key "W_ADMIN" holds "[redacted]"; [redacted], hunter22"#
        );
        // Whitespace-only values are not looked for.
        assert_eq!(values.scrub("a  b"), "a  b");
        // Base64 forms follow the same rule: whole words when short, anywhere when long.
        assert_eq!(
            values.scrub(&format!("v {} v", b64("42"))),
            "v [redacted] v"
        );
        assert_eq!(
            words.scrub(&format!("v{}v", b64("hunter2"))),
            "v[redacted]v"
        );
    }

    #[test]
    fn anything_but_a_secret_gives_nothing() {
        let cm = json!({"kind": "ConfigMap", "data": {"a": "CANARY-cm"}});
        assert!(SecretValues::of_objects([&cm]).is_empty());
        assert_eq!(SecretValues::default().scrub("x CANARY"), "x CANARY");
    }

    #[test]
    fn union_prefers_the_longest_value_across_parts() {
        let a = SecretValues::of_objects([&secret(Value::Null, json!({"a": "CANARY"}))]);
        let b = SecretValues::of_objects([&secret(Value::Null, json!({"b": "xxCANARYyy"}))]);
        let both = SecretValues::union(&[&a, &b]);
        assert_eq!(both.scrub("v=xxCANARYyy"), "v=[redacted]");
        assert_eq!(
            SecretValues::union(&[&a, &SecretValues::default()]).len(),
            a.len()
        );
    }

    #[test]
    fn parser_messages_lose_the_values_they_quote() {
        assert_eq!(
            without_quoted_values(
                "stringData.PIN: invalid value: string \"CANARY \\\"q\\\" `x`\", expected an integer at line 3 column 8"
            ),
            "stringData.PIN: invalid value: string [redacted], expected an integer at line 3 column 8"
        );
        assert_eq!(
            without_quoted_values("unknown variant `CANARY`, expected one of `CREATE`, `UPDATE`"),
            "unknown variant [redacted], expected one of `CREATE`, `UPDATE`"
        );
        assert_eq!(
            without_quoted_values("invalid type: integer `4711`, expected a string; invalid type: floating point `1.5`"),
            "invalid type: integer [redacted], expected a string; invalid type: floating point [redacted]"
        );
        // A quote cut off by a truncated message takes the rest with it.
        assert_eq!(
            without_quoted_values("invalid value: string \"CANARY…"),
            "invalid value: string [redacted]"
        );
        // Nothing quoted: unchanged, field names and syntax characters included.
        for kept in [
            "unknown field `spec`, expected `kind`",
            "expected `,` or `}` at line 1 column 9",
            "invalid type: sequence, expected a string key at line 1 column 3",
            "é",
        ] {
            assert_eq!(without_quoted_values(kept), kept);
        }
    }

    #[test]
    fn json_is_scrubbed_in_its_strings_and_keys() {
        let secrets = SecretValues::of_objects([&secret(json!({}), json!({"K": "CANARY-json-1"}))]);
        let mut value = json!([{"op": "add", "path": "/metadata/annotations/copy", "value": "CANARY-json-1"},
                               {"op": "add", "path": "/x", "value": {"CANARY-json-1": ["a CANARY-json-1 b", 1, true, null]}}]);
        secrets.scrub_json(&mut value);
        assert_eq!(
            value,
            json!([{"op": "add", "path": "/metadata/annotations/copy", "value": "[redacted]"},
                   {"op": "add", "path": "/x", "value": {"[redacted]": ["a [redacted] b", 1, true, null]}}])
        );
    }
}
