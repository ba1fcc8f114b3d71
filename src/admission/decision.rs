//! Review → Decision: the one decision path that `serve`, `eval`, `test` and `audit` share.
//! Selects the policies that apply, evaluates them, applies actions, environments, exceptions
//! and the failure policy, and gathers the patch.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admission::review::Review;
use crate::config::{Action, Environment, FailurePolicy};
use crate::gatekeeper;
use crate::policy::eval::{FailureReason, Wants};
use crate::policy::metadata::Severity;
use crate::policy::patch;
use crate::policy::set::{Flavor, PolicySet};

/// One `deny` result with the action it carries in this request's environment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    pub policy: String,
    pub action: Action,
    pub severity: Severity,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A policy that could not be evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyFailure {
    pub policy: String,
    pub reason: FailureReason,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl PolicyFailure {
    /// "policy evaluation failed: <reason>[: <detail>]", without the policy.
    pub fn describe(&self) -> String {
        if self.detail.is_empty() {
            format!("policy evaluation failed: {}", self.reason.describe())
        } else {
            format!(
                "policy evaluation failed: {}: {}",
                self.reason.describe(),
                self.detail
            )
        }
    }
}

/// A policy waived for this request by a config exception.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Waiver {
    pub policy: String,
    pub exception: String,
    pub reason: String,
    pub expires: String,
}

/// Why a request was allowed without evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    Operation,
    ExemptNamespace,
    Subresource,
    NoMatchingPolicy,
    NoObject,
}

/// A warning result, kept apart from deny results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Warning {
    pub policy: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Everything regate decided about one request.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub uid: String,
    pub allowed: bool,
    pub environment: Environment,
    /// `deny` results, each with its effective action.
    pub violations: Vec<Violation>,
    /// `warn` results (always warnings, whatever the action).
    pub warn_results: Vec<Warning>,
    pub failures: Vec<PolicyFailure>,
    pub waivers: Vec<Waiver>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<json_patch::Patch>,
    pub evaluated: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skip>,
    #[serde(skip)]
    pub timings: Vec<(String, Duration)>,
    #[serde(skip)]
    pub failure_policy: FailurePolicy,
}

impl Decision {
    fn allowed(uid: &str, environment: Environment, skip: Skip) -> Decision {
        Decision {
            uid: uid.to_string(),
            allowed: true,
            environment,
            violations: Vec::new(),
            warn_results: Vec::new(),
            failures: Vec::new(),
            waivers: Vec::new(),
            patch: None,
            evaluated: Vec::new(),
            skipped: Some(skip),
            timings: Vec::new(),
            failure_policy: FailurePolicy::Closed,
        }
    }

    pub fn denials(&self) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(|v| v.action == Action::Deny)
    }

    /// The message of a denied request: every denying result, each prefixed with its policy id.
    pub fn deny_message(&self) -> String {
        self.deny_parts().join("; ")
    }

    /// The parts of [`Decision::deny_message`], one per denying result or failure.
    pub fn deny_parts(&self) -> Vec<String> {
        let mut parts: Vec<String> = self
            .denials()
            .map(|v| format!("[{}] {}", v.policy, v.message))
            .collect();
        if self.failure_policy == FailurePolicy::Closed {
            parts.extend(self.failures.iter().map(failure_text));
        }
        parts
    }

    /// What the client sees as warnings: warn results, violations whose action is warn, waivers,
    /// and failures when failing open.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in self.violations.iter().filter(|v| v.action == Action::Warn) {
            out.push(format!("[{}] {}", v.policy, v.message));
        }
        for w in &self.warn_results {
            out.push(format!("[{}] {}", w.policy, w.message));
        }
        for w in &self.waivers {
            out.push(format!(
                "[{}] waived by exception {:?} until {}: {}",
                w.policy, w.exception, w.expires, w.reason
            ));
        }
        if self.failure_policy == FailurePolicy::Open {
            out.extend(
                self.failures
                    .iter()
                    .map(|f| format!("{} (failing open)", failure_text(f))),
            );
        }
        out.dedup();
        out
    }

    /// Policy id → messages of violations whose action is audit.
    pub fn audit_annotations(&self) -> Vec<(String, String)> {
        self.audit_annotation_parts()
            .into_iter()
            .map(|(key, messages)| (key, messages.join("; ")))
            .collect()
    }

    /// The annotations of [`Decision::audit_annotations`], each with its messages apart.
    pub fn audit_annotation_parts(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for v in self.violations.iter().filter(|v| v.action == Action::Audit) {
            let key = format!("regate.dev/{}", v.policy);
            match out.iter_mut().find(|(k, _)| k == &key) {
                Some((_, messages)) => messages.push(v.message.clone()),
                None => out.push((key, vec![v.message.clone()])),
            }
        }
        out
    }
}

fn failure_text(f: &PolicyFailure) -> String {
    format!("[{}] {}", f.policy, f.describe())
}

/// Judges a review with a policy set. `wants` says whether the caller needs the verdict, the
/// patch, or both.
pub fn judge(set: &PolicySet, review: &Review, wants: Wants) -> Decision {
    judge_within(set, review, wants, Instant::now())
}

/// [`judge`] with the evaluation time budget counted from `started` (the webhook starts it
/// before parsing the body, so that parsing and converting the input count too): policies not
/// yet started when it is spent fail with the time limit, and the failure policy decides.
pub fn judge_within(set: &PolicySet, review: &Review, wants: Wants, started: Instant) -> Decision {
    let uid = review.uid();
    let environment = set.resolver.resolve(review.namespace());
    let operation = review.operation();
    if operation == "DELETE" || operation == "CONNECT" {
        return Decision::allowed(uid, environment, Skip::Operation);
    }
    if review
        .namespace()
        .is_some_and(|ns| set.config.is_exempt_namespace(ns))
    {
        return Decision::allowed(uid, environment, Skip::ExemptNamespace);
    }
    let sub_resource = review
        .sub_resource()
        .map(|sr| format!("{}/{}", review.request.resource.resource, sr));
    let candidates: Vec<usize> = set
        .for_kind(review.kind())
        .into_iter()
        .filter(|&i| {
            let meta = &set.policies[i].meta;
            meta.operations.iter().any(|o| o == operation)
                && sub_resource
                    .as_ref()
                    .is_none_or(|sr| meta.subresources.iter().any(|s| s == sr))
                && gatekeeper::applies(&set.policies[i], review, &set.resolver)
        })
        .collect();
    if candidates.is_empty() {
        let skip = if sub_resource.is_some() {
            Skip::Subresource
        } else {
            Skip::NoMatchingPolicy
        };
        return Decision::allowed(uid, environment, skip);
    }
    let Some(object) = review.object() else {
        return Decision::allowed(uid, environment, Skip::NoObject);
    };

    let input = policy_input(set, review);
    // Gatekeeper constraints judge a bare object as Gatekeeper's audit does; built on first use.
    let bare_input = std::cell::OnceCell::new();
    let redact = review.kind() == "Secret";
    let namespace = review.namespace().unwrap_or("");
    let name = review.name();
    let now = time::OffsetDateTime::now_utc();

    let mut decision = Decision {
        uid: uid.to_string(),
        allowed: true,
        environment,
        violations: Vec::new(),
        warn_results: Vec::new(),
        failures: Vec::new(),
        waivers: Vec::new(),
        patch: None,
        evaluated: Vec::with_capacity(candidates.len()),
        skipped: None,
        timings: Vec::with_capacity(candidates.len()),
        failure_policy: set.config.policy_failure,
    };
    let mut adds = Vec::new();
    for i in candidates {
        let policy = &set.policies[i];
        let id = policy.id();
        if let Some(ex) = set
            .exceptions
            .iter()
            .find(|e| !e.is_expired(now) && e.matches(id, namespace, review.kind(), name))
        {
            decision.waivers.push(Waiver {
                policy: id.to_string(),
                exception: ex.name.clone(),
                reason: ex.reason.clone(),
                expires: ex.expires_text.clone(),
            });
            continue;
        }
        if started.elapsed() >= set.evaluation_timeout {
            // The request's budget is spent: the remaining policies fail like a stuck one would.
            decision.failures.push(PolicyFailure {
                policy: id.to_string(),
                reason: FailureReason::TimeLimit,
                detail: String::new(),
            });
            continue;
        }
        let input = match policy.flavor {
            Flavor::Gatekeeper(_) if review.synthesized => {
                bare_input.get_or_init(|| gatekeeper::bare_object_input(&input))
            }
            _ => &input,
        };
        let output = set.evaluate(i, environment, input, wants, redact);
        decision.evaluated.push(id.to_string());
        decision.timings.push((id.to_string(), output.duration));
        let action = policy.action(environment);
        for item in output.deny {
            decision.violations.push(Violation {
                policy: id.to_string(),
                action,
                severity: policy.meta.severity,
                message: item.msg,
                path: item.path,
            });
        }
        for item in output.warn {
            decision.warn_results.push(Warning {
                policy: id.to_string(),
                message: item.msg,
                path: item.path,
            });
        }
        if let Some(failure) = output.failure {
            decision.failures.push(PolicyFailure {
                policy: id.to_string(),
                reason: failure.reason,
                detail: failure.detail,
            });
        } else {
            adds.extend(output.patch);
        }
    }

    if wants.validate {
        let denied = decision.violations.iter().any(|v| v.action == Action::Deny);
        let failed_closed =
            !decision.failures.is_empty() && set.config.policy_failure == FailurePolicy::Closed;
        decision.allowed = !(denied || failed_closed);
    }
    if wants.mutate && !adds.is_empty() {
        let patched = patch::fill_missing(object, &adds);
        decision.patch = patch::diff(object, &patched);
    }
    decision
}

/// The JSON handed to policies, converted once per request. `managedFields` is dropped when no
/// policy reads it: it is often the largest part of an object and never decides anything.
fn policy_input(set: &PolicySet, review: &Review) -> regorus::Value {
    crate::policy::fast::input_value(&review.input, !set.reads_managed_fields)
}
