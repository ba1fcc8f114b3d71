//! A linear pre-scan that bounds the nesting depth of YAML (and JSON, which is flow YAML) before
//! the text reaches a parser.
//!
//! libyaml's scanner does work proportional to the current nesting depth for every token it reads
//! (its simple-key and indentation stacks), so a file nested thousands of levels deep costs
//! quadratic time — 23 s for a 125 KB manifest, over a minute for a 200 KB `regate.yaml` — before
//! the deserializer's own recursion limit refuses it. Counting the depth here, in one pass over
//! the bytes, refuses such a file in milliseconds, naming the line where the limit was crossed.
//!
//! The count is an estimate from the text, not a parse: flow brackets (`[`, `{`) outside quotes
//! and comments, block indentation (each deeper column, and each `- ` on a line, is a level), and
//! aliases (an alias counts as deep as the node its anchor names). Block scalars (`|`, `>`) and
//! quoted scalars are skipped, so Rego or JSON held in a string does not count. It can over-count
//! by a level or two, never by a factor, and the limit is the parser's own (128), so a file the
//! parser would accept is refused only within a level or two of that limit.

use std::collections::HashMap;

/// Deepest nesting accepted: the YAML and JSON deserializers' recursion limit.
pub const MAX_DEPTH: usize = 128;

/// A text nested deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {}", self.reason())]
pub struct DepthError {
    /// 1-based line where the limit was crossed.
    pub line: usize,
    pub limit: usize,
    /// What crossed it: "collections", or the alias that did.
    pub what: String,
}

impl DepthError {
    /// The message without the line, for callers that print `file:line:` themselves.
    pub fn reason(&self) -> String {
        format!(
            "{} nested deeper than {} levels (refused before parsing)",
            self.what, self.limit
        )
    }
}

/// Checks that `text` nests no deeper than [`MAX_DEPTH`]; linear in the length of `text`.
pub fn check(text: &str) -> Result<(), DepthError> {
    check_with_limit(text, MAX_DEPTH)
}

/// [`check`] with another limit (tests use small ones).
pub fn check_with_limit(text: &str, limit: usize) -> Result<(), DepthError> {
    let mut scanner = Scanner {
        limit,
        line: 0,
        block: Vec::new(),
        flow: 0,
        quote: None,
        block_scalar_min: None,
        open_anchors: Vec::new(),
        anchors: HashMap::new(),
    };
    for line in text.split('\n') {
        scanner.line += 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        scanner.scan_line(line.as_bytes())?;
    }
    Ok(())
}

struct OpenAnchor {
    name: String,
    /// Depth where the anchored node starts (the depth of its parent).
    base: usize,
    /// Deepest depth seen inside the node so far.
    max: usize,
}

struct Scanner {
    limit: usize,
    line: usize,
    /// Open block collections, outermost first: (column, is a sequence).
    block: Vec<(usize, bool)>,
    /// Open flow collections (`[`, `{`).
    flow: usize,
    /// Inside a quoted scalar that continues on the next line.
    quote: Option<u8>,
    /// Inside a block scalar: lines indented at least this much (and blank lines) are its text.
    block_scalar_min: Option<usize>,
    open_anchors: Vec<OpenAnchor>,
    /// Anchor name → levels inside the anchored node.
    anchors: HashMap<String, usize>,
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn is_flow_indicator(b: u8) -> bool {
    matches!(b, b',' | b'[' | b']' | b'{' | b'}')
}

impl Scanner {
    fn depth(&self) -> usize {
        self.block.len() + self.flow
    }

    fn error(&self, what: String) -> DepthError {
        DepthError {
            line: self.line,
            limit: self.limit,
            what,
        }
    }

    /// Records that nesting reached `depth` here.
    fn reach(&mut self, depth: usize) -> Result<(), DepthError> {
        if let Some(top) = self.open_anchors.last_mut() {
            top.max = top.max.max(depth);
        }
        if depth > self.limit {
            return Err(self.error("collections".to_string()));
        }
        Ok(())
    }

    /// Ends the anchored nodes that started at `depth` or deeper: the text is back at their level.
    fn close_anchors(&mut self, depth: usize) {
        while self.open_anchors.last().is_some_and(|a| a.base >= depth) {
            if let Some(done) = self.open_anchors.pop() {
                if let Some(parent) = self.open_anchors.last_mut() {
                    parent.max = parent.max.max(done.max);
                }
                self.anchors.insert(done.name, done.max - done.base);
            }
        }
    }

    /// A block node starting at `column` (a sequence entry when `seq`): closes deeper ones,
    /// opens a level unless a sibling is already open there.
    fn open_block(&mut self, column: usize, seq: bool) -> Result<(), DepthError> {
        while self.block.last().is_some_and(|&(c, _)| c > column) {
            self.block.pop();
        }
        match self.block.last() {
            Some(&(c, top_seq)) if c == column => {
                if seq && !top_seq {
                    // `key:` then `- item` at the key's column: a sequence inside the mapping.
                    self.block.push((column, true));
                } else if !seq && top_seq {
                    // Back from such a sequence to the mapping's next key.
                    let len = self.block.len();
                    if len >= 2 && self.block[len - 2] == (column, false) {
                        self.block.pop();
                    }
                }
            }
            _ => self.block.push((column, seq)),
        }
        self.close_anchors(self.depth());
        self.reach(self.depth())
    }

    fn scan_line(&mut self, line: &[u8]) -> Result<(), DepthError> {
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        let rest = &line[indent..];
        let is_marker = indent == 0
            && (rest.starts_with(b"---") || rest.starts_with(b"..."))
            && rest.get(3).is_none_or(|&b| is_space(b));
        if let Some(min) = self.block_scalar_min {
            if !is_marker && (indent >= min || rest.iter().all(|&b| is_space(b))) {
                return Ok(());
            }
            self.block_scalar_min = None;
        }
        let mut i = 0;
        if let Some(q) = self.quote {
            i = self.skip_quoted(line, 0, q);
            if self.quote.is_some() {
                return Ok(());
            }
            return self.scan_tokens(line, i, false);
        }
        if rest.is_empty() || rest[0] == b'#' || rest.iter().all(|&b| is_space(b)) {
            return Ok(());
        }
        if is_marker {
            // A new document: nothing is open any more.
            self.block.clear();
            self.flow = 0;
            self.quote = None;
            self.close_anchors(0);
            return self.scan_tokens(line, 3, true);
        }
        if indent == 0 && rest[0] == b'%' {
            return Ok(()); // a directive
        }
        if self.flow == 0 {
            i = indent;
            // Each `- ` opens a sequence whose item starts at the next column with text.
            while !matches!(line[i], b'[' | b'{') {
                let seq = line[i] == b'-' && line.get(i + 1).is_none_or(|&b| is_space(b));
                self.open_block(i, seq)?;
                if !seq {
                    break;
                }
                let next = i + 1 + line[i + 1..].iter().take_while(|&&b| b == b' ').count();
                if next >= line.len() || line[next] == b'#' {
                    return Ok(());
                }
                i = next;
            }
        }
        self.scan_tokens(line, i, true)
    }

    /// Scans from `i`; `value` is whether a node may start here.
    fn scan_tokens(
        &mut self,
        line: &[u8],
        mut i: usize,
        mut value: bool,
    ) -> Result<(), DepthError> {
        while i < line.len() {
            let b = line[i];
            let next_is_space = line.get(i + 1).is_none_or(|&n| is_space(n));
            match b {
                b' ' | b'\t' => i += 1,
                b'#' if i == 0 || is_space(line[i - 1]) => return Ok(()),
                b'"' | b'\'' if value => {
                    i = self.skip_quoted(line, i + 1, b);
                    if self.quote.is_some() {
                        return Ok(());
                    }
                    value = false;
                }
                b'[' | b'{' if value || self.flow > 0 => {
                    self.flow += 1;
                    self.reach(self.depth())?;
                    value = true;
                    i += 1;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    self.close_anchors(self.depth());
                    value = false;
                    i += 1;
                }
                b',' if self.flow > 0 => {
                    self.close_anchors(self.depth());
                    value = true;
                    i += 1;
                }
                b':' if self.flow > 0 || next_is_space => {
                    value = true;
                    i += 1;
                }
                b'-' | b'?' if value && next_is_space => i += 1,
                b'&' | b'*' | b'!' if value => {
                    let end = i + line[i..]
                        .iter()
                        .take_while(|&&c| !is_space(c) && !is_flow_indicator(c))
                        .count();
                    let name = String::from_utf8_lossy(&line[i + 1..end]).into_owned();
                    if b == b'&' {
                        let base = self.depth();
                        self.open_anchors.push(OpenAnchor {
                            name,
                            base,
                            max: base,
                        });
                    } else if b == b'*' {
                        let size = self.anchors.get(&name).copied().unwrap_or(0);
                        let depth = self.depth() + size;
                        if let Some(top) = self.open_anchors.last_mut() {
                            top.max = top.max.max(depth);
                        }
                        if depth > self.limit {
                            return Err(self.error(format!("alias *{name}")));
                        }
                        value = false;
                    }
                    i = end;
                }
                b'|' | b'>' if value && self.flow == 0 => {
                    // A block scalar: its text is the following lines indented deeper than the
                    // collection it belongs to.
                    self.block_scalar_min = Some(self.block.last().map_or(0, |&(c, _)| c + 1));
                    return Ok(());
                }
                _ => {
                    // A plain scalar: up to `: `, ` #`, or (in flow) an indicator.
                    value = false;
                    i += 1;
                    while i < line.len() {
                        let c = line[i];
                        let after_space = line.get(i + 1).is_none_or(|&n| is_space(n));
                        if (c == b':' && (after_space || self.flow > 0))
                            || (c == b'#' && is_space(line[i - 1]))
                            || (self.flow > 0 && is_flow_indicator(c))
                        {
                            break;
                        }
                        i += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Skips a quoted scalar from `i` (just after the opening quote); returns the index after the
    /// closing quote, or the line's length with `self.quote` set when it continues.
    fn skip_quoted(&mut self, line: &[u8], mut i: usize, quote: u8) -> usize {
        while i < line.len() {
            let c = line[i];
            if quote == b'"' && c == b'\\' {
                i += 2;
                continue;
            }
            if c == quote {
                if quote == b'\'' && line.get(i + 1) == Some(&b'\'') {
                    i += 2;
                    continue;
                }
                self.quote = None;
                return i + 1;
            }
            i += 1;
        }
        self.quote = Some(quote);
        line.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, limit: usize) -> bool {
        check_with_limit(text, limit).is_ok()
    }

    #[test]
    fn flow_nesting_is_counted() {
        assert!(depth_ok("[[[1]]]", 3));
        assert!(!depth_ok("[[[[1]]]]", 3));
        assert!(depth_ok(r#"{"a": {"b": [1, 2]}}"#, 3));
        assert!(!depth_ok(r#"{"a": {"b": [[1], 2]}}"#, 3));
        let err = check(&format!("a: 1\nb:\n  {}", "[".repeat(200)));
        assert_eq!(err.map_err(|e| e.line), Err(3));
    }

    #[test]
    fn block_nesting_is_counted() {
        assert!(depth_ok("a:\n  b:\n    c: 1\n", 3));
        assert!(!depth_ok("a:\n  b:\n    c:\n      d: 1\n", 3));
        // Siblings and dedents do not add up.
        assert!(depth_ok("a:\n  b: 1\n  c: 2\nd:\n  e: 3\n", 2));
        // `- - -` nests sequences on one line.
        assert!(!depth_ok("- - - - x\n", 3));
        let deep: String = (0..300)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let err = check(&deep);
        assert_eq!(err.map_err(|e| e.line), Err(MAX_DEPTH + 1));
    }

    #[test]
    fn strings_comments_and_block_scalars_do_not_count() {
        let text = "a: \"[[[[[[\"\nb: '{{{{{{'\nc: x[[[[[[\n# [[[[[[\nd: |\n  violation[{\"msg\": msg}] {\n    {{{{{{\n  }\ne: [1]\n";
        assert!(depth_ok(text, 2));
        // A quoted scalar over several lines.
        assert!(depth_ok("a: \"[[[[\n  [[[[\"\nb: 1\n", 1));
        // Escaped quotes do not end a string.
        assert!(depth_ok(r#"{"a": "\"[[[[[["}"#, 1));
    }

    #[test]
    fn documents_start_afresh() {
        assert!(depth_ok("a:\n  b: 1\n---\nc:\n  d: 1\n", 2));
    }

    #[test]
    fn aliases_count_as_deep_as_their_anchor() {
        // Three levels anchored, used at depth 3: 3 + 3.
        let text = "a: &x [[[1]]]\nb: [[*x]]\n";
        assert!(depth_ok(text, 6));
        let err = check_with_limit(text, 5);
        assert!(
            err.as_ref()
                .is_err_and(|e| e.what == "alias *x" && e.line == 2),
            "{err:?}"
        );
        // A block anchor.
        let text = "a: &y\n  b:\n    c: 1\nd:\n  e: *y\n";
        assert!(depth_ok(text, 4));
        assert!(!depth_ok(text, 3));
    }

    #[test]
    fn real_manifests_pass() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
            .unwrap_or_default();
        assert!(check(&text).is_ok());
        let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {app: web}\nspec:\n  containers:\n  - name: app\n    image: nginx\n    args: [\"--x={a}\"]\n    securityContext:\n      capabilities: {drop: [ALL]}\n";
        assert!(depth_ok(pod, 7));
        assert!(!depth_ok(pod, 6));
        // A sequence at its key's column is a level of its own.
        assert!(!depth_ok("a:\n- b:\n  - c:\n    - d: 1\n", 6));
        assert!(depth_ok("a:\n- b:\n  - c:\n    - d: 1\n", 7));
    }
}
