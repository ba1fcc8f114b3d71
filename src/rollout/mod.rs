//! Safe rollout of a policy change: what a candidate policy set decides differently from the
//! enforced (base) one. [`Outcome`] and [`compare`] are shared by `regate diff` (objects from
//! files or the cluster) and shadow evaluation in `serve` ([`shadow`]), so both call the same
//! thing a change.

pub mod shadow;

use serde::Serialize;

use crate::admission::decision::Decision;
use crate::config::Action;

/// What one policy set decided about one object, reduced to what a rollout compares: policy ids
/// only (sorted, each once), never messages, so nothing of the object's content is carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub allowed: bool,
    /// Policies whose `deny` results carry the deny action here.
    pub denied_by: Vec<String>,
    /// Policies that warned: `warn` results, and `deny` results whose action is warn.
    pub warned_by: Vec<String>,
    /// Policies that could not be evaluated (listed only when some did).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_by: Vec<String>,
    /// The JSONPatch `/mutate` would answer with, compared but never printed (a patch may carry
    /// values of the object).
    #[serde(skip)]
    pub patch: Option<String>,
}

impl Outcome {
    pub fn of(decision: &Decision) -> Outcome {
        let ids = |it: &mut dyn Iterator<Item = &String>| {
            let mut v: Vec<String> = it.cloned().collect();
            v.sort();
            v.dedup();
            v
        };
        let denied_by = ids(&mut decision
            .violations
            .iter()
            .filter(|v| v.action == Action::Deny)
            .map(|v| &v.policy));
        let warned_by = ids(&mut decision
            .violations
            .iter()
            .filter(|v| v.action == Action::Warn)
            .map(|v| &v.policy)
            .chain(decision.warn_results.iter().map(|w| &w.policy)));
        let failed_by = ids(&mut decision.failures.iter().map(|f| &f.policy));
        Outcome {
            allowed: decision.allowed,
            denied_by,
            warned_by,
            failed_by,
            patch: decision
                .patch
                .as_ref()
                .and_then(|p| serde_json::to_string(p).ok()),
        }
    }
}

/// How the candidate's outcome differs from the base's, most important first: an object whose
/// verdict flips is `NewlyDenied`/`NewlyAllowed` even if its warnings changed too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A policy failed to evaluate on one side (or failed differently): reported as such, never
    /// as a change of verdict.
    EvaluationFailed,
    NewlyDenied,
    NewlyAllowed,
    /// Denied on both sides, by a different set of policies.
    DeniedByChanged,
    WarningsChanged,
    PatchChanged,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::EvaluationFailed => "evaluation_failed",
            Change::NewlyDenied => "newly_denied",
            Change::NewlyAllowed => "newly_allowed",
            Change::DeniedByChanged => "denied_by_changed",
            Change::WarningsChanged => "warnings_changed",
            Change::PatchChanged => "patch_changed",
        }
    }
}

/// The change from `before` (base) to `after` (candidate), if any.
pub fn compare(before: &Outcome, after: &Outcome) -> Option<Change> {
    if before.failed_by != after.failed_by {
        return Some(Change::EvaluationFailed);
    }
    if before.allowed && !after.allowed {
        return Some(if after.failed_by.is_empty() {
            Change::NewlyDenied
        } else {
            Change::EvaluationFailed
        });
    }
    if !before.allowed && after.allowed {
        return Some(if before.failed_by.is_empty() {
            Change::NewlyAllowed
        } else {
            Change::EvaluationFailed
        });
    }
    if before.denied_by != after.denied_by {
        return Some(Change::DeniedByChanged);
    }
    if before.warned_by != after.warned_by {
        return Some(Change::WarningsChanged);
    }
    if before.patch != after.patch {
        return Some(Change::PatchChanged);
    }
    None
}

/// Ids in `a` that are not in `b` (both sorted).
pub fn only_in<'a>(a: &'a [String], b: &'a [String]) -> impl Iterator<Item = &'a String> {
    a.iter().filter(move |id| b.binary_search(id).is_err())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(allowed: bool, denied: &[&str], warned: &[&str], failed: &[&str]) -> Outcome {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect();
        Outcome {
            allowed,
            denied_by: v(denied),
            warned_by: v(warned),
            failed_by: v(failed),
            patch: None,
        }
    }

    #[test]
    fn verdict_flips_outrank_warnings() {
        let base = outcome(true, &[], &["a"], &[]);
        let cand = outcome(false, &["b"], &[], &[]);
        assert_eq!(compare(&base, &cand), Some(Change::NewlyDenied));
        assert_eq!(compare(&cand, &base), Some(Change::NewlyAllowed));
        assert_eq!(compare(&base, &base), None);
    }

    #[test]
    fn a_failure_is_not_a_change_of_verdict() {
        let base = outcome(true, &[], &[], &[]);
        let cand = outcome(false, &[], &[], &["p"]);
        assert_eq!(compare(&base, &cand), Some(Change::EvaluationFailed));
    }

    #[test]
    fn other_deniers_and_warnings_and_patches() {
        let base = outcome(false, &["a"], &[], &[]);
        assert_eq!(
            compare(&base, &outcome(false, &["b"], &[], &[])),
            Some(Change::DeniedByChanged)
        );
        assert_eq!(
            compare(&base, &outcome(false, &["a"], &["w"], &[])),
            Some(Change::WarningsChanged)
        );
        let mut patched = base.clone();
        patched.patch = Some("[]".into());
        assert_eq!(compare(&base, &patched), Some(Change::PatchChanged));
    }
}
