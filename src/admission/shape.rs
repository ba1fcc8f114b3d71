//! How big a JSON body becomes once parsed, found by one pass over its bytes without building
//! anything. A body of `[{}, {}, …]` is 3 bytes per value on the wire and well over 100 bytes per
//! value once parsed into `serde_json::Value` and converted for the policy engine, so the body
//! size limit alone does not bound memory: the admission path refuses a body whose shape is too
//! large before parsing it, and reserves its estimated size from a process-wide budget while it
//! is parsed and judged.

/// What one pass over a JSON text found. Approximate for text that is not valid JSON (which the
/// parser then refuses anyway); never less than the real count for valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    /// Length of the text.
    pub bytes: usize,
    /// Values: array elements and object members (a member's key and value count once), plus
    /// the top-level value.
    pub values: usize,
    /// Objects and arrays.
    pub containers: usize,
}

/// A body may hold one value per this many bytes of `limits.maxBodyBytes` (a million values for
/// 8 MiB). Real objects hold one value per 10 to 30 bytes of JSON; `[{},{},…]` one per 3.
pub const BYTES_PER_ALLOWED_VALUE: usize = 8;

/// Bytes of memory one parsed value costs, on top of the text itself: its `serde_json::Value`
/// (32 bytes) with the growth slack of its array or the B-tree node of its object, its key, and
/// its copy in the engine's input (`regorus::Value`, reference-counted). Measured with the
/// default policies on `[{}, …]`, `[0, …]`, `{"K1":"v", …}` and 10,000-container Pods (see
/// docs/RELIABILITY.md, "Memory under hostile load"); rounded up.
pub const BYTES_PER_VALUE: usize = 160;

/// Extra bytes per object or array: its own allocations (a B-tree root, a vector buffer) in
/// both representations.
pub const BYTES_PER_CONTAINER: usize = 96;

impl Shape {
    /// The memory parsing and converting this text is expected to take, in bytes (the text's
    /// own buffer not included).
    pub fn estimated_parsed_bytes(&self) -> usize {
        self.values
            .saturating_mul(BYTES_PER_VALUE)
            .saturating_add(self.containers.saturating_mul(BYTES_PER_CONTAINER))
            .saturating_add(self.bytes)
    }
}

/// Counts the values and containers of a JSON text in one pass: commas and brackets outside
/// strings. Strings are skipped (escapes included), so a `,` or `{` inside a string never counts.
pub fn scan(text: &[u8]) -> Shape {
    let mut shape = Shape {
        bytes: text.len(),
        ..Shape::default()
    };
    let mut commas = 0usize;
    let mut empty = 0usize;
    let mut any = false;
    // The last byte outside strings and whitespace was `{` or `[`: a `}` or `]` right after
    // it closes an empty container, which holds no value.
    let mut just_opened = false;
    let mut i = 0;
    let n = text.len();
    while i < n {
        let b = text[i];
        match b {
            b'"' => {
                any = true;
                just_opened = false;
                i += 1;
                while i < n {
                    match text[i] {
                        b'"' => break,
                        b'\\' => i += 2,
                        _ => i += 1,
                    }
                }
            }
            b'{' | b'[' => {
                any = true;
                shape.containers += 1;
                just_opened = true;
            }
            b'}' | b']' => {
                if just_opened {
                    empty += 1;
                }
                just_opened = false;
            }
            b',' => {
                commas += 1;
                just_opened = false;
            }
            b' ' | b'\n' | b'\r' | b'\t' => {}
            _ => {
                any = true;
                just_opened = false;
            }
        }
        i += 1;
    }
    // Each non-empty container holds one value more than it has commas; the top-level value
    // is one more.
    let non_empty = shape.containers.saturating_sub(empty);
    shape.values = commas + non_empty + usize::from(any);
    shape
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> usize {
        scan(text.as_bytes()).values
    }

    #[test]
    fn counts_values_and_containers() {
        assert_eq!(values("1"), 1);
        assert_eq!(values("[]"), 1);
        assert_eq!(values("{}"), 1);
        assert_eq!(values("[1,2,3]"), 4);
        assert_eq!(values("[{}, {}, {}]"), 4);
        assert_eq!(values(r#"{"a":1,"b":[1,2],"c":{}}"#), 1 + 3 + 2);
        assert_eq!(values("[ [ ] , [ 1 ] ]"), 1 + 2 + 1);
        assert_eq!(scan(b"[{}, {}, []]").containers, 4);
        assert_eq!(values(""), 0);
    }

    #[test]
    fn strings_hide_their_contents() {
        assert_eq!(values(r#"["a,b,{[", "c\"],[,", "\\"]"#), 1 + 3);
        assert_eq!(scan(br#"{"k{":"v]"}"#).containers, 1);
    }

    #[test]
    fn never_undercounts_valid_json() {
        for text in [
            r#"{"apiVersion":"v1","items":[{"a":[1,2,{"b":null}]},{},[],"x",true]}"#,
            r#"[[[[[]]]],{"a":{"b":{"c":[1,2,3]}}}]"#,
        ] {
            let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            fn count(v: &serde_json::Value) -> usize {
                1 + match v {
                    serde_json::Value::Array(a) => a.iter().map(count).sum(),
                    serde_json::Value::Object(o) => o.values().map(count).sum(),
                    _ => 0,
                }
            }
            assert_eq!(values(text), count(&value), "{text}");
        }
    }
}
