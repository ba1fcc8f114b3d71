//! `regate eval --explain` and `regate test` on a failing case: for each violation and failure,
//! where it comes from (policy file, rule, line), what the object holds at the violation's path,
//! and what the policy printed. Everything shown passes through the Secret scrubber.

use serde_json::Value;

use crate::admission::decision::Decision;
use crate::policy::set::PolicySet;
use crate::policy::source;
use crate::secrets::SecretValues;

/// The explanation of one judged object, headed `explain {heading}`; empty when nothing was
/// found.
pub fn explain(set: &PolicySet, d: &Decision, heading: &str, object: &Value) -> String {
    if d.violations.is_empty() && d.warn_results.is_empty() && d.failures.is_empty() {
        return String::new();
    }
    let secrets = SecretValues::of_objects([object]);
    let mut out = format!("explain {heading}\n");
    let findings = d
        .violations
        .iter()
        .map(|v| ("deny", &v.policy, &v.message, v.path.as_deref()))
        .chain(
            d.warn_results
                .iter()
                .map(|w| ("warn", &w.policy, &w.message, w.path.as_deref())),
        );
    for (rule, policy, message, path) in findings {
        out.push_str(&format!("  [{policy}] {message}\n"));
        let (file, text) = policy_text(set, policy);
        match rule_line(&text, rule, message) {
            Some((line, head)) => {
                out.push_str(&format!("    rule    {file}:{line}: {}\n", head.trim()))
            }
            None => out.push_str(&format!("    policy  {file}\n")),
        }
        if let Some(path) = path {
            let value = value_at(object, path)
                .map(|v| serde_json::to_string(v).unwrap_or_default())
                .unwrap_or_else(|| "(not set)".to_string());
            out.push_str(&format!("    value   {path} = {}\n", truncate(&value)));
        }
        prints(&mut out, d, policy);
    }
    for f in &d.failures {
        let (file, _) = policy_text(set, &f.policy);
        out.push_str(&format!(
            "  [{}] {}\n",
            f.policy,
            f.describe().lines().next().unwrap_or("")
        ));
        out.push_str(&format!("    policy  {file}\n"));
        for line in f.describe().lines().skip(1) {
            out.push_str(&format!("    {line}\n"));
        }
        prints(&mut out, d, &f.policy);
    }
    secrets.scrub(&out)
}

fn prints(out: &mut String, d: &Decision, policy: &str) {
    for (p, line) in &d.prints {
        if p == policy {
            out.push_str(&format!("    print   {line}\n"));
        }
    }
}

fn truncate(text: &str) -> String {
    const MAX: usize = 300;
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}…")
}

/// The policy's file name and text (read again from disk, or the embedded copy).
fn policy_text(set: &PolicySet, id: &str) -> (String, String) {
    let Some(p) = set.policies.iter().find(|p| p.meta.id == id) else {
        return (format!("(policy {id})"), String::new());
    };
    let text = match p.file.strip_prefix("embedded:") {
        Some(_) => source::embedded()
            .into_iter()
            .find(|s| s.name == p.file)
            .map(|s| s.text)
            .unwrap_or_default(),
        None => std::fs::read_to_string(&p.file).unwrap_or_default(),
    };
    (p.file.clone(), text)
}

/// The rule of `kind` (`deny` or `warn`) most likely to have produced `message`: the one whose
/// string literals cover most of it. (line, first line of the rule).
fn rule_line(text: &str, kind: &str, message: &str) -> Option<(usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| {
            l.starts_with(&format!("{kind} contains"))
                || l.starts_with(&format!("{kind}["))
                || l.starts_with(&format!("{kind} if"))
        })
        .map(|(i, _)| i)
        .collect();
    let mut best: Option<(usize, usize)> = None;
    for (n, &start) in starts.iter().enumerate() {
        let end = lines
            .iter()
            .enumerate()
            .skip(start + 1)
            .find(|(i, l)| {
                starts.get(n + 1) == Some(i)
                    || (!l.is_empty() && !l.starts_with([' ', '\t', '}', ']', ')']))
            })
            .map_or(lines.len(), |(i, _)| i);
        let body = lines[start..end].join("\n");
        let score: usize = literals(&body)
            .iter()
            .filter(|lit| lit.len() >= 3)
            .map(|lit| {
                lit.split("%v")
                    .flat_map(|p| p.split("%q"))
                    .flat_map(|p| p.split("%s"))
                    .flat_map(|p| p.split("%d"))
                    .filter(|p| p.len() >= 3 && message.contains(p.replace("\\\"", "\"").as_str()))
                    .map(str::len)
                    .sum::<usize>()
            })
            .sum();
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((start, score));
        }
    }
    best.map(|(start, _)| (start + 1, lines[start].to_string()))
}

/// The double-quoted string literals in Rego text.
fn literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut inside, mut escaped) = (false, false);
    for c in text.chars() {
        if !inside {
            inside = c == '"';
        } else if escaped {
            current.push('\\');
            current.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            out.push(std::mem::take(&mut current));
            inside = false;
        } else {
            current.push(c);
        }
    }
    out
}

/// The value at a violation path such as `spec.containers[0].image`.
fn value_at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    let mut at = object;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            at = at.get(key)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let index = index.trim_end_matches(']');
            at = match index.parse::<usize>() {
                Ok(i) => at.get(i)?,
                Err(_) => at.get(index.trim_matches(['"', '\'']))?,
            };
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_found_at_violation_paths() {
        let object = serde_json::json!({"spec": {"containers": [{"image": "nginx"}]}, "metadata": {"labels": {"a.b/c": "x"}}});
        assert_eq!(
            value_at(&object, "spec.containers[0].image"),
            Some(&Value::from("nginx"))
        );
        assert_eq!(value_at(&object, "spec.containers[1].image"), None);
        assert_eq!(value_at(&object, "metadata.missing"), None);
    }

    #[test]
    fn the_rule_whose_literals_match_the_message() {
        let text = "package p\n\ndeny contains \"no team label\" if {\n\tnot input.x\n}\n\ndeny contains sprintf(\"image %q uses latest\", [i]) if {\n\ti := input.y\n}\n";
        assert_eq!(
            rule_line(text, "deny", "image \"nginx\" uses latest").map(|(l, _)| l),
            Some(7)
        );
        assert_eq!(
            rule_line(text, "deny", "no team label").map(|(l, _)| l),
            Some(3)
        );
        assert_eq!(rule_line(text, "warn", "x"), None);
    }
}
