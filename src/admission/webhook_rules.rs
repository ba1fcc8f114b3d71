//! Which requests the webhook configurations send regate, and which loaded policies they leave
//! out. The apiserver only calls a webhook for the resources and operations its rules name: a
//! policy on a kind no rule names is never asked at admission (while `eval` and `audit` still
//! report it), so `regate check`, the startup log and `/readyz?verbose` name such policies.
//!
//! The rules are the chart's (`webhook.validating.rules`, `webhook.mutating.rules`, or every
//! resource with `webhook.allResources`), handed to `serve` in `REGATE_WEBHOOK_RULES`.

use serde::Deserialize;

use crate::policy::compiled::CompiledPolicy;
use crate::policy::set::PolicySet;

/// One `RuleWithOperations` of a webhook configuration (`admissionregistration.k8s.io/v1`).
/// `apiVersions` and `scope` are not compared: regate's policies name kinds, not versions
/// (the chart's webhooks use `matchPolicy: Equivalent`), nor scopes.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub operations: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
}

/// The rules of both webhooks; a webhook that is not deployed has none.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhookRules {
    #[serde(default)]
    pub validating: Vec<Rule>,
    #[serde(default)]
    pub mutating: Vec<Rule>,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookRulesError {
    #[error("webhook rules {0}: cannot read the file: {1}")]
    Read(String, #[source] std::io::Error),
    #[error("webhook rules {0}: not {{validating: [rules], mutating: [rules]}}: {1}")]
    Parse(String, #[source] serde_yaml::Error),
}

/// The chart's default rules (charts/regate/values.yaml; a test keeps the two in step).
const CHART_DEFAULTS: &str = r#"
validating:
  - {apiGroups: [""], operations: [CREATE, UPDATE], resources: [pods, replicationcontrollers, podtemplates, secrets, configmaps]}
  - {apiGroups: [""], operations: [UPDATE], resources: [pods/ephemeralcontainers]}
  - {apiGroups: [apps], operations: [CREATE, UPDATE], resources: [deployments, statefulsets, daemonsets, replicasets]}
  - {apiGroups: [batch], operations: [CREATE, UPDATE], resources: [jobs, cronjobs]}
  - {apiGroups: [networking.k8s.io], operations: [CREATE, UPDATE], resources: [networkpolicies]}
mutating:
  - {apiGroups: [""], operations: [CREATE], resources: [pods]}
  - {apiGroups: [""], operations: [CREATE, UPDATE], resources: [replicationcontrollers, podtemplates]}
  - {apiGroups: [apps], operations: [CREATE, UPDATE], resources: [deployments, statefulsets, daemonsets, replicasets]}
  - {apiGroups: [batch], operations: [CREATE, UPDATE], resources: [jobs, cronjobs]}
"#;

impl WebhookRules {
    /// The chart's default rules.
    pub fn chart_defaults() -> WebhookRules {
        serde_yaml::from_str(CHART_DEFAULTS).unwrap_or_default()
    }

    /// Gatekeeper's approach (`webhook.allResources`): every resource on CREATE and UPDATE to
    /// both webhooks, regate filtering by kind, plus `pods/ephemeralcontainers` to the
    /// validating one.
    pub fn all_resources() -> WebhookRules {
        let every = Rule {
            api_groups: vec!["*".into()],
            operations: vec!["CREATE".into(), "UPDATE".into()],
            resources: vec!["*".into()],
        };
        let debug = Rule {
            api_groups: vec!["".into()],
            operations: vec!["UPDATE".into()],
            resources: vec!["pods/ephemeralcontainers".into()],
        };
        WebhookRules {
            validating: vec![every.clone(), debug],
            mutating: vec![every],
        }
    }

    /// `chart-defaults`, `all`, the rules inline (YAML or JSON, as the chart passes them), or
    /// a file holding them. A path that does not exist is an error, never the defaults.
    pub fn from_arg(arg: &str) -> Result<WebhookRules, WebhookRulesError> {
        let arg = arg.trim();
        match arg {
            "" | "chart-defaults" => return Ok(Self::chart_defaults()),
            "all" => return Ok(Self::all_resources()),
            _ => {}
        }
        if arg.starts_with('{') {
            return serde_yaml::from_str(arg)
                .map_err(|e| WebhookRulesError::Parse("(inline)".into(), e));
        }
        let text =
            std::fs::read_to_string(arg).map_err(|e| WebhookRulesError::Read(arg.into(), e))?;
        serde_yaml::from_str(&text).map_err(|e| WebhookRulesError::Parse(arg.into(), e))
    }
}

/// Where a kind's objects are served: (API group, resource). The group is `None` for a kind
/// regate does not know (a custom resource): any group's rule for its resource name counts.
fn resource_of(kind: &str) -> (Option<&'static str>, String) {
    const KNOWN: &[(&str, &str, &str)] = &[
        ("Pod", "", "pods"),
        ("Service", "", "services"),
        ("ConfigMap", "", "configmaps"),
        ("Secret", "", "secrets"),
        ("Namespace", "", "namespaces"),
        ("ServiceAccount", "", "serviceaccounts"),
        ("PersistentVolumeClaim", "", "persistentvolumeclaims"),
        ("PersistentVolume", "", "persistentvolumes"),
        ("ReplicationController", "", "replicationcontrollers"),
        ("PodTemplate", "", "podtemplates"),
        ("Node", "", "nodes"),
        ("Endpoints", "", "endpoints"),
        ("LimitRange", "", "limitranges"),
        ("ResourceQuota", "", "resourcequotas"),
        ("Event", "", "events"),
        ("Deployment", "apps", "deployments"),
        ("StatefulSet", "apps", "statefulsets"),
        ("DaemonSet", "apps", "daemonsets"),
        ("ReplicaSet", "apps", "replicasets"),
        ("Job", "batch", "jobs"),
        ("CronJob", "batch", "cronjobs"),
        ("Ingress", "networking.k8s.io", "ingresses"),
        ("IngressClass", "networking.k8s.io", "ingressclasses"),
        ("NetworkPolicy", "networking.k8s.io", "networkpolicies"),
        ("Role", "rbac.authorization.k8s.io", "roles"),
        ("ClusterRole", "rbac.authorization.k8s.io", "clusterroles"),
        ("RoleBinding", "rbac.authorization.k8s.io", "rolebindings"),
        (
            "ClusterRoleBinding",
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
        ),
        ("PodDisruptionBudget", "policy", "poddisruptionbudgets"),
        (
            "HorizontalPodAutoscaler",
            "autoscaling",
            "horizontalpodautoscalers",
        ),
        ("StorageClass", "storage.k8s.io", "storageclasses"),
        ("PriorityClass", "scheduling.k8s.io", "priorityclasses"),
        (
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            "customresourcedefinitions",
        ),
    ];
    if let Some((_, group, resource)) = KNOWN.iter().find(|(k, _, _)| *k == kind) {
        return (Some(group), resource.to_string());
    }
    // The apiserver's default plural of a custom resource's kind.
    let lower = kind.to_ascii_lowercase();
    let plural = if lower.ends_with('s') || lower.ends_with('x') {
        format!("{lower}es")
    } else if let Some(stem) = lower
        .strip_suffix('y')
        .filter(|stem| !stem.ends_with(['a', 'e', 'i', 'o', 'u']))
    {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    };
    (None, plural)
}

fn sends(rules: &[Rule], group: Option<&str>, resource: &str, operation: &str) -> bool {
    let (main, sub) = match resource.split_once('/') {
        Some((m, s)) => (m, Some(s)),
        None => (resource, None),
    };
    rules.iter().any(|r| {
        let op = r.operations.iter().any(|o| o == "*" || o == operation);
        let grp = r
            .api_groups
            .iter()
            .any(|g| g == "*" || group.is_none_or(|group| g == group));
        let res = r.resources.iter().any(|pattern| {
            let (pm, ps) = match pattern.split_once('/') {
                Some((m, s)) => (m, Some(s)),
                None => (pattern.as_str(), None),
            };
            let main_ok = pm == "*" || pm == main;
            match (sub, ps) {
                (None, None) => main_ok,
                (Some(s), Some(p)) => main_ok && (p == "*" || p == s),
                _ => false,
            }
        });
        op && grp && res
    })
}

/// A loaded policy the webhook does not (fully) send requests for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsent {
    pub policy: String,
    /// `validating` or `mutating`.
    pub webhook: &'static str,
    /// What is not sent, e.g. `Service (CREATE, UPDATE)`, `every kind (*)`.
    pub missing: Vec<String>,
}

impl std::fmt::Display for Unsent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "policy {} is not enforced at admission for {}: the {} webhook's rules do not send them \
             (add rules for them, or set the chart's webhook.allResources)",
            self.policy,
            self.missing.join(", "),
            self.webhook
        )
    }
}

/// Whether the policy is evaluated at admission at all (a scoped Gatekeeper constraint may act
/// only in audit).
fn at_admission(policy: &CompiledPolicy) -> bool {
    crate::gatekeeper::GatekeeperPolicy::of(policy).is_none_or(|gk| gk.active)
}

/// What `rules` leave out of what the policy judges. The mutating webhook is only asked to send
/// CREATE, and no subresources: regate's patches fill in what is missing from new objects
/// (the chart sends a bare Pod's UPDATE nowhere, as a Pod update cannot take a patch). A
/// subresource counts as sent when any of the policy's operations is sent for it (each
/// subresource takes only some: `pods/ephemeralcontainers` only UPDATE).
fn missing_for(policy: &CompiledPolicy, rules: &[Rule], mutating: bool) -> Vec<String> {
    let mut missing = Vec::new();
    for kind in &policy.meta.kinds {
        let (group, resource) = if kind == "*" {
            (Some("*"), "*".to_string())
        } else {
            resource_of(kind)
        };
        let mut targets = vec![resource.clone()];
        if !mutating {
            for sr in &policy.meta.subresources {
                if sr.split_once('/').is_some_and(|(m, _)| m == resource) {
                    targets.push(sr.clone());
                }
            }
        }
        let operations: Vec<&str> = policy
            .meta
            .operations
            .iter()
            .map(String::as_str)
            .filter(|op| !mutating || *op == "CREATE")
            .collect();
        for target in targets {
            let ops: Vec<&str> = operations
                .iter()
                .copied()
                .filter(|op| !sends(rules, group, &target, op))
                .collect();
            let subresource = target != resource;
            if ops.is_empty() || subresource && ops.len() < operations.len() {
                continue;
            }
            let what = if kind == "*" {
                "every kind (*)".to_string()
            } else if target == resource {
                kind.clone()
            } else {
                format!("{kind} {}", target.split_once('/').map_or("", |(_, s)| s))
            };
            missing.push(format!("{what} ({})", ops.join(", ")));
        }
    }
    missing
}

/// The loaded policies the webhooks leave out, in load order: validating policies (`deny`,
/// `warn`, constraints) against the validating webhook's rules, `patch` against the mutating.
pub fn unsent(set: &PolicySet, rules: &WebhookRules) -> Vec<Unsent> {
    let mut out = Vec::new();
    for p in set.policies.iter().filter(|p| at_admission(p)) {
        let mut check = |webhook: &'static str, rules: &[Rule]| {
            let missing = missing_for(p, rules, webhook == "mutating");
            if !missing.is_empty() {
                out.push(Unsent {
                    policy: p.id().to_string(),
                    webhook,
                    missing,
                });
            }
        };
        if p.rules.deny || p.rules.warn {
            check("validating", &rules.validating);
        }
        if p.rules.patch {
            check("mutating", &rules.mutating);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], ops: &[&str], resources: &[&str]) -> Rule {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        Rule {
            api_groups: s(groups),
            operations: s(ops),
            resources: s(resources),
        }
    }

    #[test]
    fn rules_send_by_group_resource_and_operation() {
        let rules = vec![
            rule(&[""], &["CREATE", "UPDATE"], &["pods"]),
            rule(&[""], &["UPDATE"], &["pods/ephemeralcontainers"]),
            rule(&["apps"], &["*"], &["*"]),
        ];
        assert!(sends(&rules, Some(""), "pods", "CREATE"));
        assert!(!sends(&rules, Some(""), "services", "CREATE"));
        assert!(!sends(&rules, Some(""), "pods", "DELETE"));
        assert!(sends(
            &rules,
            Some(""),
            "pods/ephemeralcontainers",
            "UPDATE"
        ));
        assert!(!sends(&rules, Some(""), "pods/exec", "CREATE"));
        assert!(sends(&rules, Some("apps"), "deployments", "DELETE"));
        assert!(!sends(&rules, Some("apps"), "deployments/scale", "UPDATE"));
        assert!(sends(&rules, None, "deployments", "CREATE"));
        let all = WebhookRules::all_resources();
        assert!(sends(
            &all.validating,
            Some("networking.k8s.io"),
            "ingresses",
            "UPDATE"
        ));
        assert!(sends(&all.validating, Some("*"), "*", "CREATE"));
    }

    /// The chart's default rules send everything regate's own default policies judge.
    #[test]
    fn the_chart_sends_what_the_default_policies_judge() {
        let set = crate::catalog::build(
            &crate::policy::source::embedded(),
            std::sync::Arc::new(crate::config::Config::default()),
            crate::environment::NamespaceLabels::default(),
        )
        .unwrap();
        assert_eq!(unsent(&set, &WebhookRules::chart_defaults()), vec![]);
        assert_eq!(unsent(&set, &WebhookRules::all_resources()), vec![]);
        let none = unsent(&set, &WebhookRules::default());
        assert!(none.len() >= set.policies.len(), "{none:?}");
        let pods = none
            .iter()
            .find(|u| u.policy == "pod-run-as-non-root" && u.webhook == "validating")
            .unwrap();
        assert!(
            pods.missing.iter().any(|m| m == "Pod (CREATE, UPDATE)"),
            "{pods:?}"
        );
    }

    /// The defaults here are the chart's (values.yaml), rule for rule.
    #[test]
    fn defaults_are_the_charts() {
        let values: serde_json::Value =
            serde_yaml::from_str(include_str!("../../charts/regate/values.yaml")).unwrap();
        for (name, ours) in [
            ("validating", WebhookRules::chart_defaults().validating),
            ("mutating", WebhookRules::chart_defaults().mutating),
        ] {
            let chart: Vec<Rule> =
                serde_json::from_value(values["webhook"][name]["rules"].clone()).unwrap();
            assert_eq!(chart, ours, "webhook.{name}.rules");
        }
    }

    #[test]
    fn custom_kinds_use_the_default_plural() {
        assert_eq!(
            resource_of("Ingress"),
            (Some("networking.k8s.io"), "ingresses".into())
        );
        assert_eq!(resource_of("Widget"), (None, "widgets".into()));
        assert_eq!(resource_of("Policy"), (None, "policies".into()));
        assert_eq!(resource_of("Gateway"), (None, "gateways".into()));
        assert_eq!(resource_of("Class"), (None, "classes".into()));
    }

    #[test]
    fn rules_come_from_an_argument() {
        assert_eq!(
            WebhookRules::from_arg("chart-defaults").unwrap(),
            WebhookRules::chart_defaults()
        );
        assert_eq!(WebhookRules::chart_defaults().validating.len(), 5);
        assert_eq!(
            WebhookRules::from_arg("all").unwrap(),
            WebhookRules::all_resources()
        );
        let inline = WebhookRules::from_arg(
            r#"{"validating":[{"apiGroups":[""],"apiVersions":["v1"],"operations":["CREATE"],"resources":["services"],"scope":"*"}]}"#,
        )
        .unwrap();
        assert_eq!(inline.validating.len(), 1);
        assert!(inline.mutating.is_empty());
        let e = WebhookRules::from_arg("/no/such/rules.yaml").unwrap_err();
        assert!(e.to_string().contains("/no/such/rules.yaml"), "{e}");
        assert!(WebhookRules::from_arg("{\"validate\": []}").is_err());
    }
}
