//! regorus's error messages, with their location first. regorus writes
//! "\n--> file:line:col\n  |\nN | source\n  |   ^\nerror: what went wrong"; a one-line summary
//! of that is the excerpt's frame (` --> file:11:36    |`), and a `file:1:1:` label put before
//! it points at the wrong place. Every command shows the location, then the reason, once.

/// A regorus message taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegoMessage {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// "error: …", as regorus says it, with any text that came before the excerpt.
    pub reason: String,
    /// The source line and the caret under the column.
    pub excerpt: String,
}

impl RegoMessage {
    /// `file:line:col: reason`, then the excerpt on the following lines.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.reason
        );
        if !self.excerpt.is_empty() {
            out.push('\n');
            out.push_str(&self.excerpt);
        }
        out
    }
}

/// Finds the location and reason in a regorus message; `None` when it has no `--> ` line.
pub fn parse(text: &str) -> Option<RegoMessage> {
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("--> "))?;
    let location = lines[at].trim_start().trim_start_matches("--> ").trim();
    // file:line:col, where the file may itself hold colons.
    let mut parts = location.rsplitn(3, ':');
    let column = parts.next()?.trim().parse().ok()?;
    let line = parts.next()?.trim().parse().ok()?;
    let file = parts.next()?.to_string();
    let mut excerpt = Vec::new();
    let mut rest = Vec::new();
    for l in &lines[at + 1..] {
        let is_frame = rest.is_empty() && {
            let t = l.trim_start();
            t.starts_with('|')
                || t.split_once('|')
                    .is_some_and(|(n, _)| n.trim().parse::<usize>().is_ok())
        };
        if is_frame {
            if l.trim() != "|" {
                excerpt.push(l.trim_end().to_string());
            }
        } else {
            rest.push(*l);
        }
    }
    let before: Vec<&str> = lines[..at]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let mut reason = rest.join("\n").trim().to_string();
    if !before.is_empty() {
        let before = before.join(" ");
        let before = before.trim_end_matches(':');
        reason = if reason.is_empty() {
            before.to_string()
        } else {
            format!("{reason} ({before})")
        };
    }
    Some(RegoMessage {
        file,
        line,
        column,
        reason,
        excerpt: excerpt.join("\n"),
    })
}

/// The message with its location first, or the message as it is when it has none.
pub fn located(text: &str) -> String {
    match parse(text) {
        Some(m) => m.render(),
        None => text.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNTIME: &str = "\n--> policies/rt.rego:11:36\n   |\n11 | deny contains msg if { x := 1 / input.zero }\n   |                                    ^\nerror: divide by zero";

    #[test]
    fn location_first_then_the_reason_and_the_excerpt() {
        let m = parse(RUNTIME);
        assert_eq!(
            m.as_ref()
                .map(|m| (m.file.as_str(), m.line, m.column, m.reason.as_str())),
            Some(("policies/rt.rego", 11, 36, "error: divide by zero"))
        );
        let text = located(RUNTIME);
        assert!(
            text.starts_with("policies/rt.rego:11:36: error: divide by zero\n11 | deny"),
            "{text}"
        );
        assert_eq!(text.matches("divide by zero").count(), 1, "{text}");
    }

    #[test]
    fn text_without_a_location_is_kept() {
        assert_eq!(located("  plain failure \n"), "plain failure");
    }
}
