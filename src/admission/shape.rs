//! How much memory a JSON body takes once parsed, estimated by one pass over its bytes without
//! building anything. A body of `[{}, {}, …]` is 3 bytes per value on the wire and over 100 bytes
//! per value once parsed into `serde_json::Value` and converted for the policy engine, and an
//! object of short members (`"a":0,`) over 300 bytes per member: the body size limit alone does
//! not bound memory. The admission path refuses a body whose estimate is too large before
//! parsing it, and reserves its estimate from a process-wide budget while it is judged.

/// What one pass over a JSON text found. Approximate for text that is not valid JSON (which the
/// parser then refuses anyway); for valid JSON every count is exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    /// Length of the text.
    pub bytes: usize,
    /// Values: array elements, object members' values, and the top-level value.
    pub values: usize,
    /// Strings, object keys included.
    pub strings: usize,
    /// Objects and arrays.
    pub containers: usize,
    /// Objects with at least one member (each allocates B-tree nodes; `{}` allocates nothing).
    pub objects: usize,
    /// Object members.
    pub members: usize,
}

/// A body may take at most this many times `limits.maxBodyBytes` once parsed (192 MiB for
/// 8 MiB): an 8 MiB Kubernetes object (about 20 times once parsed) is judged; 8 MiB of `[{},…]`
/// or of short object members (up to 64 times) is refused.
pub const MAX_PARSED_PER_BODY_BYTE: usize = 24;

/// Estimated parsed bytes: the text's bytes count this many times (string contents are copied
/// into `serde_json::Value` and again into the engine's input).
pub const BYTES_FACTOR: usize = 2;
/// Bytes of every value: its `serde_json::Value` (32 bytes) with its array's growth slack, and
/// its `regorus::Value`.
pub const BYTES_PER_VALUE: usize = 64;
/// Bytes of every string on top of its contents: its allocation in both representations.
pub const BYTES_PER_STRING: usize = 64;
/// Bytes of every object or array: its own allocations in both representations.
pub const BYTES_PER_CONTAINER: usize = 64;
/// Bytes of every non-empty object: the B-tree leaf node it allocates (room for 11 members)
/// in both representations.
pub const BYTES_PER_OBJECT: usize = 640;
/// Bytes of every object member on top of its key and value: its share of further B-tree
/// nodes in large objects.
pub const BYTES_PER_MEMBER: usize = 144;

// The constants above come from measuring a review's JSON and the policies' value built from it
// (serde_json's parse, then `admission::input::from_json`), both held at once: the most a review
// builds (a webhook body is parsed into the policies' value alone, and its JSON is added only
// for mutation, Gatekeeper's matching or a Secret's values). Measured on shapes repeated hundreds of thousands of times: `[0,…]` 59 B
// an element, `["ab",…]` 118, `[[],…]` 104, `[{},…]` 120, `{"K0":"v",…}` 362 a member,
// `[{"a":0},…]` 891 an element, `[{"a":0,"b":1,"c":2},…]` 1,095, NetworkPolicy rules
// `{"ports":[{"port":80}]}` 1,962, a Pod's containers (`pod-privileged.json`'s) 10.8 KB; the
// estimate is at least the measured figure for each, and at most 1.6 times it (docs/RELIABILITY.md,
// "Memory under hostile load").

impl Shape {
    /// The memory parsing and converting this text is expected to take, in bytes.
    pub fn estimated_parsed_bytes(&self) -> usize {
        [
            (self.bytes, BYTES_FACTOR),
            (self.values, BYTES_PER_VALUE),
            (self.strings, BYTES_PER_STRING),
            (self.containers, BYTES_PER_CONTAINER),
            (self.objects, BYTES_PER_OBJECT),
            (self.members, BYTES_PER_MEMBER),
        ]
        .iter()
        .fold(0usize, |sum, (count, cost)| {
            sum.saturating_add(count.saturating_mul(*cost))
        })
    }
}

/// Counts the values, strings, containers and members of a JSON text in one pass: commas,
/// colons, quotes and brackets outside strings. Strings are skipped (escapes included), so a `,`
/// or `{` inside a string never counts.
pub fn scan(text: &[u8]) -> Shape {
    let mut shape = Shape {
        bytes: text.len(),
        ..Shape::default()
    };
    let mut commas = 0usize;
    let mut empty = 0usize;
    let mut empty_objects = 0usize;
    let mut braces = 0usize;
    let mut any = false;
    // The last byte outside strings and whitespace was `{` or `[`: a `}` or `]` right after
    // it closes an empty container, which holds no value.
    let mut just_opened = false;
    let mut just_opened_object = false;
    let mut i = 0;
    let n = text.len();
    while i < n {
        match text[i] {
            b'"' => {
                any = true;
                just_opened = false;
                shape.strings += 1;
                i += 1;
                // Most of a Kubernetes object's bytes are inside strings: jump from one quote
                // or backslash to the next.
                while let Some(at) = memchr::memchr2(b'"', b'\\', text.get(i..).unwrap_or(&[])) {
                    i += at;
                    if text[i] == b'"' {
                        break;
                    }
                    i += 2;
                }
                if i >= n || text[i] != b'"' {
                    // An unterminated string runs to the end.
                    i = n;
                }
            }
            open @ (b'{' | b'[') => {
                any = true;
                shape.containers += 1;
                just_opened = true;
                just_opened_object = open == b'{';
                braces += usize::from(just_opened_object);
            }
            b'}' | b']' => {
                if just_opened {
                    empty += 1;
                    empty_objects += usize::from(just_opened_object);
                }
                just_opened = false;
            }
            b',' => {
                commas += 1;
                just_opened = false;
            }
            b':' => {
                shape.members += 1;
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
    shape.objects = braces.saturating_sub(empty_objects);
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
        let shape = scan(br#"{"a":"x","b":{"c":["d"]},"e":{}}"#);
        assert_eq!(
            (
                shape.strings,
                shape.members,
                shape.containers,
                shape.objects
            ),
            (6, 4, 4, 2)
        );
    }

    #[test]
    fn strings_hide_their_contents() {
        assert_eq!(values(r#"["a,b,{[", "c\"],[,", "\\"]"#), 1 + 3);
        let shape = scan(br#"{"k{:":"v]"}"#);
        assert_eq!((shape.containers, shape.members, shape.strings), (1, 1, 2));
    }

    #[test]
    fn counts_are_exact_for_valid_json() {
        type Counts = (usize, usize, usize, usize, usize);
        fn count(v: &serde_json::Value) -> Counts {
            let mut total = (1, usize::from(v.is_string()), 0, 0, 0);
            let add = |t: &mut Counts, c: Counts| {
                t.0 += c.0;
                t.1 += c.1;
                t.2 += c.2;
                t.3 += c.3;
                t.4 += c.4;
            };
            match v {
                serde_json::Value::Array(a) => {
                    total.2 += 1;
                    for x in a {
                        add(&mut total, count(x));
                    }
                }
                serde_json::Value::Object(o) => {
                    total.2 += 1;
                    total.3 += o.len();
                    total.1 += o.len();
                    total.4 += usize::from(!o.is_empty());
                    for x in o.values() {
                        add(&mut total, count(x));
                    }
                }
                _ => {}
            }
            total
        }
        for text in [
            r#"{"apiVersion":"v1","items":[{"a":[1,2,{"b":null}]},{},[],"x",true]}"#,
            r#"[[[[[]]]],{"a":{"b":{"c":[1,2,3]}}}]"#,
        ] {
            let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            let s = scan(text.as_bytes());
            assert_eq!(
                (s.values, s.strings, s.containers, s.members, s.objects),
                count(&value),
                "{text}"
            );
        }
    }

    #[test]
    fn short_members_cost_most() {
        let members = scan(br#"{"a":0,"b":0}"#).estimated_parsed_bytes();
        let elements = scan(b"[0,0]").estimated_parsed_bytes();
        assert!(members > 4 * elements, "{members} {elements}");
    }

    /// The scan as first written (a byte at a time inside strings), for any bytes at all:
    /// unterminated strings, trailing backslashes, escaped quotes.
    #[test]
    fn skipping_strings_by_search_counts_as_byte_by_byte() {
        fn by_bytes(text: &[u8]) {
            let (mut strings, mut containers, mut members, mut i) = (0, 0, 0, 0);
            while i < text.len() {
                match text[i] {
                    b'"' => {
                        strings += 1;
                        i += 1;
                        while i < text.len() {
                            match text[i] {
                                b'"' => break,
                                b'\\' => i += 2,
                                _ => i += 1,
                            }
                        }
                    }
                    b'{' | b'[' => containers += 1,
                    b':' => members += 1,
                    _ => {}
                }
                i += 1;
            }
            let s = scan(text);
            assert_eq!(
                (s.strings, s.containers, s.members),
                (strings, containers, members),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
        let alphabet = b"\"\\{}[],:a ";
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..400 {
            let text: Vec<u8> = (0..len % 40)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            by_bytes(&text);
        }
        for text in [
            &b"\"abc"[..],
            b"\"a\\",
            b"\"\\\"\"",
            b"[\"a\\\\\",1]",
            b"\"",
        ] {
            by_bytes(text);
        }
    }
}
