//! Review → Decision: the one decision path that `serve`, `eval`, `test` and `audit` share.
//! Selects the policies that apply, evaluates them, applies actions, environments, exceptions
//! and the failure policy, and gathers the patch.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::admission::review::{ManifestRequest, Review};
use crate::config::{Action, Environment, FailurePolicy};
use crate::gatekeeper;
use crate::policy::eval::{FailureReason, Wants};
use crate::policy::metadata::Severity;
use crate::policy::mutators::MutationRequest;
use crate::policy::patch;
use crate::policy::set::PolicySet;
use crate::secrets::SecretValues;

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
    /// Mutators (`Kind/name`) that changed the object, in the order they first did; their
    /// changes are part of `patch`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mutations: Vec<String>,
    pub evaluated: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<Skip>,
    #[serde(skip)]
    pub timings: Vec<(String, Duration)>,
    #[serde(skip)]
    pub failure_policy: FailurePolicy,
    /// What `print()` wrote, per policy, already scrubbed of Secret values: shown to authors by
    /// `regate test` and `regate eval --prints`, never by `serve`.
    #[serde(skip)]
    pub prints: Vec<(String, String)>,
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
            mutations: Vec::new(),
            evaluated: Vec::new(),
            skipped: Some(skip),
            timings: Vec::new(),
            failure_policy: FailurePolicy::Closed,
            prints: Vec::new(),
        }
    }

    /// Replaces every Secret value in every text of the decision that a policy wrote (messages,
    /// paths, failure details, prints) with `[redacted]`; see [`crate::secrets`].
    pub fn scrub(&mut self, secrets: &SecretValues) {
        if secrets.is_empty() {
            return;
        }
        for v in &mut self.violations {
            secrets.scrub_in_place(&mut v.message);
            if let Some(path) = v.path.as_mut() {
                secrets.scrub_in_place(path);
            }
        }
        for w in &mut self.warn_results {
            secrets.scrub_in_place(&mut w.message);
            if let Some(path) = w.path.as_mut() {
                secrets.scrub_in_place(path);
            }
        }
        for f in &mut self.failures {
            secrets.scrub_in_place(&mut f.detail);
        }
        for (_, line) in &mut self.prints {
            secrets.scrub_in_place(line);
        }
    }

    /// Whether any text a policy wrote is in the decision (the only texts a Secret value can
    /// reach).
    fn has_policy_text(&self) -> bool {
        !(self.violations.is_empty()
            && self.warn_results.is_empty()
            && self.prints.is_empty()
            && self.failures.iter().all(|f| f.detail.is_empty()))
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
            // A kind-qualified constraint id (`K8sAllowedRepos/name`) has a `/`, which an
            // annotation key's name part cannot.
            let key = format!("regate.dev/{}", v.policy.replace('/', "."));
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

/// The failure's policy when the mutators together fail (not converging, out of time).
pub const MUTATION_FAILURE_ID: &str = "mutation";

/// Judges a review with a policy set. `wants` says whether the caller needs the verdict, the
/// patch, or both.
pub fn judge(set: &PolicySet, review: &Review, wants: Wants) -> Decision {
    judge_within(set, review, wants, Instant::now())
}

/// [`judge`] with the evaluation time budget counted from `started` (the webhook starts it
/// before parsing the body, so that parsing and converting the input count too): policies not
/// yet started when it is spent fail with the time limit, and the failure policy decides.
pub fn judge_within(set: &PolicySet, review: &Review, wants: Wants, started: Instant) -> Decision {
    judge_review(set, review, wants, started, false)
}

/// Gatekeeper's expansion: the objects the ExpansionTemplates make of the review's object (a
/// Deployment's Pod), each judged by the constraints that match generated objects, as a
/// request of the same operation, namespace and user.
fn judge_expanded(
    set: &PolicySet,
    review: &Review,
    started: Instant,
) -> Vec<(gatekeeper::expansion::Resultant, Decision)> {
    let Some(object) = review.object() else {
        return Vec::new();
    };
    gatekeeper::expansion::expand(
        gatekeeper::expansion::templates_of(set),
        object,
        review.namespace(),
    )
    .into_iter()
    .filter_map(|r| {
        let opts = ManifestRequest {
            namespace: review.namespace().map(str::to_string),
            operation: review.operation().to_string(),
            uid: review.uid().to_string(),
            username: review.user().to_string(),
            ..ManifestRequest::default()
        };
        // As in Gatekeeper, the mutators apply to the generated object before it is
        // judged (a failing mutation leaves it as generated).
        let mut object = r.object.clone();
        if !set.mutators.is_empty() {
            let api_version = object["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
            let request = MutationRequest {
                operation: review.operation(),
                namespace: review.namespace(),
                group,
                version,
                kind: &kind,
                resolver: &set.resolver,
            };
            if set.mutators.may_apply(&kind) {
                let _ = set.mutators.mutate(&mut object, &request);
            }
        }
        let child = Review::from_manifest(object, &opts).ok()?;
        let decision = judge_review(set, &child, Wants::VALIDATE, started, true);
        Some((r, decision))
    })
    .collect()
}

fn judge_review(
    set: &PolicySet,
    review: &Review,
    wants: Wants,
    started: Instant,
    generated: bool,
) -> Decision {
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
    // Mutators (Gatekeeper's) run on /mutate for the objects they may apply to, whether or not
    // any policy judges the kind.
    let mutating = wants.mutate && sub_resource.is_none() && set.mutators.may_apply(review.kind());
    let subject = gatekeeper::MatchSubject::new(review, &set.resolver);
    let subject = if generated {
        subject.generated()
    } else {
        subject
    };
    let candidates: Vec<usize> = set
        .for_object(review.kind(), || subject.placement())
        .into_iter()
        .filter(|&i| {
            let meta = &set.policies[i].meta;
            meta.operations.iter().any(|o| o == operation)
                && sub_resource
                    .as_ref()
                    .is_none_or(|sr| meta.subresources.iter().any(|s| s == sr))
                && gatekeeper::applies(&set.policies[i], &subject)
        })
        .collect();
    let implied = if generated || !wants.validate || set.expansions.is_empty() {
        Vec::new()
    } else {
        judge_expanded(set, review, started)
    };
    if candidates.is_empty() && implied.is_empty() && !mutating {
        let skip = if sub_resource.is_some() {
            Skip::Subresource
        } else {
            Skip::NoMatchingPolicy
        };
        return Decision::allowed(uid, environment, skip);
    }
    if !review.has_object() {
        return Decision::allowed(uid, environment, Skip::NoObject);
    }

    let input = policy_input(set, review);
    // Gatekeeper constraints judge a bare object as Gatekeeper's audit does, with the
    // namespace's object; built on first use.
    let gatekeeper_input = std::cell::OnceCell::new();
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
        mutations: Vec::new(),
        evaluated: Vec::with_capacity(candidates.len()),
        skipped: None,
        timings: Vec::with_capacity(candidates.len()),
        failure_policy: set.config.policy_failure,
        prints: Vec::new(),
    };
    // The inventory's Secrets, from the Gatekeeper policies that read it.
    let mut inventory_secrets: Vec<std::sync::Arc<SecretValues>> = Vec::new();
    // Waivers first: the policies left are exactly the ones evaluated, and a pass that
    // evaluates several policies at once (`PolicySet::evaluate`) runs only when all of its
    // policies are among them, so a waived policy never spends this request's time.
    let mut selected: Vec<usize> = Vec::with_capacity(candidates.len());
    for i in candidates {
        let id = set.policies[i].id();
        match set
            .exceptions
            .iter()
            .find(|e| !e.is_expired(now) && e.matches(id, namespace, review.kind(), name))
        {
            Some(ex) => decision.waivers.push(Waiver {
                policy: id.to_string(),
                exception: ex.name.clone(),
                reason: ex.reason.clone(),
                expires: ex.expires_text.clone(),
            }),
            None => selected.push(i),
        }
    }
    let mut adds = Vec::new();
    for &i in &selected {
        let policy = &set.policies[i];
        let id = policy.id();
        if started.elapsed() >= set.evaluation_timeout {
            // The request's budget is spent: the remaining policies fail like a stuck one would.
            decision.failures.push(PolicyFailure {
                policy: id.to_string(),
                reason: FailureReason::TimeLimit,
                detail: String::new(),
            });
            continue;
        }
        let constraint = gatekeeper::GatekeeperPolicy::of(policy);
        let input = match constraint {
            Some(_) => gatekeeper_input.get_or_init(|| {
                let ns = review
                    .namespace()
                    .and_then(|ns| set.resolver.namespace_object(ns));
                gatekeeper::review_input(&input, review.synthesized, ns.as_deref())
            }),
            None => &input,
        };
        let output = set.evaluate(i, &selected, environment, input, wants, redact);
        if let Some(gk) = constraint {
            if !gk.inventory_secrets.is_empty()
                && !inventory_secrets
                    .iter()
                    .any(|s| std::sync::Arc::ptr_eq(s, &gk.inventory_secrets))
            {
                inventory_secrets.push(gk.inventory_secrets.clone());
            }
        }
        decision
            .prints
            .extend(output.prints.into_iter().map(|p| (id.to_string(), p)));
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

    for (resultant, child) in implied {
        // Gatekeeper's `[Implied by <template>]` prefix, and the template's action if it sets one.
        let prefix = format!("[Implied by {}]", resultant.template);
        for mut v in child.violations {
            v.message = format!("{prefix} {}", v.message);
            if let Some(action) = resultant.action {
                v.action = action;
            }
            decision.violations.push(v);
        }
        for mut w in child.warn_results {
            w.message = format!("{prefix} {}", w.message);
            decision.warn_results.push(w);
        }
        for mut f in child.failures {
            f.detail = format!("{prefix} {}", f.detail);
            decision.failures.push(f);
        }
        decision.waivers.extend(child.waivers);
        for id in child.evaluated {
            if !decision.evaluated.contains(&id) {
                decision.evaluated.push(id);
            }
        }
        decision.timings.extend(child.timings);
        decision.prints.extend(child.prints);
    }
    if wants.validate {
        let denied = decision.violations.iter().any(|v| v.action == Action::Deny);
        let failed_closed =
            !decision.failures.is_empty() && set.config.policy_failure == FailurePolicy::Closed;
        decision.allowed = !(denied || failed_closed);
    }
    // The review's JSON is built only for mutation: validating reads the policies' input.
    let object = if wants.mutate { review.object() } else { None };
    if let Some(object) = object {
        // The policies' additions first, then the mutators until the object is stable: one
        // patch for both, and mutating its result again changes nothing.
        let mut patched = (!adds.is_empty()).then(|| patch::fill_missing(object, &adds));
        if mutating {
            if started.elapsed() >= set.evaluation_timeout {
                decision.failures.push(PolicyFailure {
                    policy: MUTATION_FAILURE_ID.to_string(),
                    reason: FailureReason::TimeLimit,
                    detail: String::new(),
                });
            } else {
                let mut target = patched.take().unwrap_or_else(|| object.clone());
                let request = MutationRequest {
                    operation,
                    namespace: review.namespace(),
                    group: &review.request.kind.group,
                    version: &review.request.kind.version,
                    kind: review.kind(),
                    resolver: &set.resolver,
                };
                match set.mutators.mutate(&mut target, &request) {
                    Ok(ids) => {
                        if !ids.is_empty() || !adds.is_empty() {
                            patched = Some(target);
                        }
                        decision.mutations = ids;
                    }
                    Err(failure) => {
                        if !adds.is_empty() {
                            patched = Some(target);
                        }
                        decision.failures.push(PolicyFailure {
                            policy: if failure.mutator.is_empty() {
                                MUTATION_FAILURE_ID.to_string()
                            } else {
                                failure.mutator
                            },
                            reason: FailureReason::RuntimeError,
                            detail: failure.message,
                        });
                    }
                }
            }
        }
        if let Some(patched) = patched {
            decision.patch = patch::diff(object, &patched);
        }
    }
    if decision.has_policy_text() {
        // Before the decision leaves: every answer, log, report and print is built from it.
        let request_secrets = review.secret_values();
        let parts: Vec<&SecretValues> = std::iter::once(&request_secrets)
            .chain(inventory_secrets.iter().map(|s| s.as_ref()))
            .filter(|s| !s.is_empty())
            .collect();
        match parts.as_slice() {
            [] => {}
            // The common cases (a Secret under review, or an inventory's Secrets) use the
            // matcher as built; only both at once need one matcher over the union.
            [one] => decision.scrub(one),
            many => decision.scrub(&SecretValues::union(many)),
        }
    }
    decision
}

/// The review as policies read it, for this judgement (built once per review, when its body was
/// parsed). `managedFields` is dropped when no policy reads it: it is often the largest part of
/// an object and never decides anything.
fn policy_input(set: &PolicySet, review: &Review) -> regorus::Value {
    review.policy_input(!set.reads_managed_fields)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::admission::review::ManifestRequest;
    use crate::config::Config;
    use crate::environment::NamespaceLabels;
    use crate::policy::source::PolicySource;

    const PRINTING: &str = "# METADATA\n# title: printing\n# custom:\n#   id: printing\n#   severity: low\n#   kinds: [Secret]\npackage regate.policies.printing\n\ndeny contains msg if {\n  v := input.request.object.stringData.P\n  print(\"value\", v)\n  msg := sprintf(\"value %v\", [v])\n}\n";

    fn set() -> PolicySet {
        let sources = [PolicySource {
            name: "printing.rego".into(),
            text: PRINTING.into(),
        }];
        crate::catalog::build(
            &sources,
            Arc::new(Config::default()),
            NamespaceLabels::default(),
        )
        .unwrap()
    }

    fn review(value: &str) -> Review {
        Review::from_manifest(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
                   "stringData": {"P": value}}),
            &ManifestRequest::default(),
        )
        .unwrap()
    }

    /// A webhook's review is parsed without `managedFields`; a set whose policy reads them
    /// still sees them (the whole review is parsed again, once), and one that does not judges
    /// the same without them.
    #[test]
    fn a_policy_that_reads_managed_fields_sees_them_in_a_webhook_review() {
        let policy = |id: &str, condition: &str| {
            format!("# METADATA\n# title: t\n# custom:\n#   id: {id}\n#   severity: low\n#   kinds: [ConfigMap]\npackage regate.policies.{id}\n\nimport rego.v1\n\ndeny contains \"{id}\" if {condition}\n")
        };
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"ConfigMap"},"resource":{"group":"","version":"v1","resource":"configmaps"},"namespace":"n","operation":"UPDATE","userInfo":{},"object":{"kind":"ConfigMap","metadata":{"name":"c","managedFields":[{"manager":"kubectl"}]}},"oldObject":{"kind":"ConfigMap","metadata":{"name":"c","managedFields":[{"manager":"helm"}]}}}}"#;
        let reading = PolicySet::of_one_rego_file(&policy(
            "managers",
            "{\n\tinput.request.object.metadata.managedFields[0].manager == \"kubectl\"\n\tinput.request.oldObject.metadata.managedFields[0].manager == \"helm\"\n}",
        ))
        .unwrap();
        assert!(reading.reads_managed_fields);
        let review = Review::from_slice(body).unwrap();
        let denied = judge(&reading, &review, Wants::VALIDATE);
        assert_eq!(denied.violations.len(), 1, "{:?}", denied.failures);

        let named = PolicySet::of_one_rego_file(&policy(
            "named",
            "input.request.object.metadata.name == \"c\"",
        ))
        .unwrap();
        assert!(!named.reads_managed_fields);
        let review = Review::from_slice(body).unwrap();
        assert_eq!(judge(&named, &review, Wants::VALIDATE).violations.len(), 1);
        assert!(matches!(
            &review.policy_input(true)["request"]["object"]["metadata"]["managedFields"],
            regorus::Value::Undefined
        ));
    }

    #[test]
    fn prints_are_gathered_per_evaluation_and_scrubbed() {
        let set = set();
        // The same (thread-cached) engine judges every request: each decision holds exactly its
        // own print, never the priming's or an earlier request's.
        for i in 0..50 {
            let value = format!("CANARY-{i:04}");
            let decision = judge(&set, &review(&value), Wants::VALIDATE);
            assert_eq!(decision.prints.len(), 1, "{:?}", decision.prints);
            let (policy, line) = &decision.prints[0];
            assert_eq!(policy, "printing");
            assert!(line.ends_with("value [redacted]"), "{line}");
            assert_eq!(decision.violations[0].message, "value [redacted]");
        }
    }
}
