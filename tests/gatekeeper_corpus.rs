//! Gatekeeper's policy library, every suite, through the same code as `regate verify`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use regate::gatekeeper::suite::{self, Status};

const TOTAL_CASES: usize = 270;

/// Cases that fail because of known regorus/OPA differences, each with its cause; see
/// docs/gatekeeper.md. (suite directory under library/, test, case, cause). None today: the
/// last one (`not f(undefined)`) is normalised in `gatekeeper::rego_compat`.
const KNOWN_FAILURES: &[(&str, &str, &str, &str)] = &[];

#[test]
fn gatekeeper_library_suites() {
    let Some(root) = common::corpus("gatekeeper-library/library") else {
        return;
    };
    let report = suite::run(std::slice::from_ref(&root)).unwrap();
    let mut unexpected = Vec::new();
    let mut fixed = Vec::new();
    for o in &report.outcomes {
        let dir = o
            .suite
            .strip_prefix(&format!("{}/", root.display()))
            .unwrap_or(&o.suite)
            .trim_end_matches("/suite.yaml")
            .to_string();
        let known = KNOWN_FAILURES
            .iter()
            .find(|(s, t, c, _)| *s == dir && *t == o.test && *c == o.case);
        match (&o.status, known) {
            (Status::Fail(why), None) => {
                unexpected.push(format!("{dir} / {} / {}: {why}", o.test, o.case))
            }
            (Status::Pass, Some((_, _, _, cause))) => fixed.push(format!(
                "{dir} / {} / {} now passes (was: {cause})",
                o.test, o.case
            )),
            _ => {}
        }
    }
    println!(
        "gatekeeper corpus: {} passed, {} failed of {TOTAL_CASES}",
        report.passed(),
        report.failed()
    );
    for f in &fixed {
        println!("known failure fixed, trim KNOWN_FAILURES: {f}");
    }
    assert_eq!(
        report.outcomes.len(),
        TOTAL_CASES,
        "the corpus should hold {TOTAL_CASES} cases"
    );
    assert!(
        unexpected.is_empty(),
        "unexpected failures:\n{}",
        unexpected.join("\n")
    );
}

mod fixture {
    use std::path::PathBuf;
    use std::sync::Arc;

    use regate::admission::decision::judge;
    use regate::admission::review::{ManifestRequest, Review};
    use regate::config::{Action, Config};
    use regate::environment::NamespaceLabels;
    use regate::gatekeeper::suite::{self, Status};
    use regate::policy::eval::Wants;
    use regate::policy::metadata::Severity;
    use regate::policy::set::PolicySet;
    use regate::policy::source::{self, PolicySource};

    const CONSTRAINT: &str = "deployments-need-owner";

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/gatekeeper")
    }

    /// The embedded native policies plus the fixture's template and constraint, loaded from a
    /// policy directory as `serve` loads it.
    fn set() -> PolicySet {
        let mut sources = source::embedded();
        sources.extend(source::load_dir(&dir().join("policies")).unwrap());
        regate::catalog::build(
            &sources,
            Arc::new(Config::default()),
            NamespaceLabels::default(),
        )
        .unwrap()
    }

    fn object(name: &str) -> serde_json::Value {
        let text = std::fs::read_to_string(dir().join("samples").join(name)).unwrap();
        serde_yaml::from_str(&text).unwrap()
    }

    #[test]
    fn constraint_is_judged_beside_native_policies() {
        let set = set();
        let policy = set.get(CONSTRAINT).expect("constraint loaded as a policy");
        assert_eq!(policy.meta.severity, Severity::High);
        assert_eq!(policy.meta.kinds, vec!["Deployment".to_string()]);
        assert!(set.policies.len() > 1, "native policies load too");

        let review = Review::from_manifest(
            object("deployment-unowned.yaml"),
            &ManifestRequest::default(),
        )
        .unwrap();
        let decision = judge(&set, &review, Wants::VALIDATE);
        let ours: Vec<_> = decision
            .violations
            .iter()
            .filter(|v| v.policy == CONSTRAINT)
            .collect();
        assert_eq!(ours.len(), 1, "{:?}", decision.violations);
        assert_eq!(ours[0].action, Action::Deny);
        assert_eq!(ours[0].severity, Severity::High);
        assert_eq!(
            ours[0].message,
            r#"Deployment cart is missing required labels: {"owner"}"#
        );
        assert!(!decision.allowed);
        assert!(decision
            .deny_message()
            .contains("[deployments-need-owner] Deployment cart"));
        assert!(
            decision.evaluated.len() > 1,
            "native policies judged the same request: {:?}",
            decision.evaluated
        );

        let owned =
            Review::from_manifest(object("deployment-owned.yaml"), &ManifestRequest::default())
                .unwrap();
        let decision = judge(&set, &owned, Wants::VALIDATE);
        assert!(decision.evaluated.iter().any(|p| p == CONSTRAINT));
        assert!(!decision.violations.iter().any(|v| v.policy == CONSTRAINT));
    }

    #[test]
    fn match_excludes_namespaces_and_kinds() {
        let set = set();
        for sample in ["deployment-sandbox.yaml", "pod-unowned.yaml"] {
            let review =
                Review::from_manifest(object(sample), &ManifestRequest::default()).unwrap();
            let decision = judge(&set, &review, Wants::VALIDATE);
            assert!(
                !decision.evaluated.iter().any(|p| p == CONSTRAINT),
                "{sample}: {:?}",
                decision.evaluated
            );
        }
    }

    #[test]
    fn webhook_requests_see_the_admission_request_as_review() {
        let set = set();
        let body = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "6f1c",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "namespace": "shop",
                "operation": "CREATE",
                "userInfo": {"username": "alice"},
                "object": object("deployment-unowned.yaml"),
            }
        });
        let review = Review::from_slice(body.to_string().as_bytes()).unwrap();
        let decision = judge(&set, &review, Wants::VALIDATE);
        assert_eq!(
            decision
                .violations
                .iter()
                .filter(|v| v.policy == CONSTRAINT)
                .count(),
            1
        );
    }

    #[test]
    fn cel_only_templates_are_reported_by_name() {
        let template = PolicySource {
            name: "policies/cel.yaml".into(),
            text: "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata:\n  name: k8sceldemo\nspec:\n  crd:\n    spec:\n      names:\n        kind: K8sCelDemo\n  targets:\n    - target: admission.k8s.gatekeeper.sh\n      code:\n        - engine: K8sNativeValidation\n          source:\n            validations:\n              - expression: \"true\"\n".into(),
        };
        let err = regate::catalog::build(
            &[template],
            Arc::new(Config::default()),
            NamespaceLabels::default(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("policies/cel.yaml:10:"), "{text}");
        assert!(
            text.contains("k8sceldemo") && text.contains("CEL"),
            "{text}"
        );
    }

    #[test]
    fn fixture_suite_passes_through_verify() {
        let report = suite::run(&[dir()]).unwrap();
        for o in &report.outcomes {
            assert_eq!(o.status, Status::Pass, "{} / {}", o.test, o.case);
        }
        assert_eq!(report.outcomes.len(), 5);
    }
}

/// Gatekeeper 3.22+ features beside the library's templates: ExpansionTemplates, scoped
/// enforcement per point, `input.review.namespaceObject`, exceptions by kind and name.
mod gatekeeper_features {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use regate::admission::decision::{judge, Decision};
    use regate::admission::review::{ManifestRequest, Review};
    use regate::config::{Action, Config};
    use regate::environment::NamespaceLabels;
    use regate::policy::eval::Wants;
    use regate::policy::set::PolicySet;
    use regate::policy::source::PolicySource;

    use super::common;

    fn source(name: &str, text: String) -> PolicySource {
        PolicySource {
            name: name.to_string(),
            text,
        }
    }

    fn library_file(root: &Path, rel: &str) -> PolicySource {
        source(rel, std::fs::read_to_string(root.join(rel)).unwrap())
    }

    fn build(sources: &[PolicySource], config: Config) -> PolicySet {
        regate::catalog::build(sources, Arc::new(config), NamespaceLabels::default()).unwrap()
    }

    fn fixture(name: &str) -> Review {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/admission")
            .join(name);
        Review::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn messages(d: &Decision) -> Vec<String> {
        d.violations
            .iter()
            .map(|v| format!("{} {:?} {}", v.policy, v.action, v.message))
            .collect()
    }

    const EXPANSION: &str = r#"
apiVersion: expansion.gatekeeper.sh/v1beta1
kind: ExpansionTemplate
metadata:
  name: expand-workloads
spec:
  applyTo:
    - groups: ["apps"]
      kinds: ["DaemonSet", "Deployment", "ReplicaSet", "StatefulSet"]
      versions: ["v1"]
    - groups: ["batch"]
      kinds: ["Job"]
      versions: ["v1"]
  templateSource: "spec.template"
  generatedGVK:
    kind: "Pod"
    group: ""
    version: "v1"
---
apiVersion: expansion.gatekeeper.sh/v1beta1
kind: ExpansionTemplate
metadata:
  name: expand-cronjobs
spec:
  applyTo:
    - groups: ["batch"]
      kinds: ["CronJob"]
      versions: ["v1"]
  templateSource: "spec.jobTemplate"
  enforcementAction: warn
  generatedGVK:
    kind: "Job"
    group: "batch"
    version: "v1"
"#;

    /// The library's Pod templates judge the Pod a workload would create.
    #[test]
    fn expansion_judges_the_pods_workloads_would_create() {
        let Some(root) = common::corpus("gatekeeper-library/library/pod-security-policy") else {
            return;
        };
        let sources = vec![
            library_file(&root, "read-only-root-filesystem/template.yaml"),
            library_file(
                &root,
                "read-only-root-filesystem/samples/psp-readonlyrootfilesystem/constraint.yaml",
            ),
            library_file(&root, "privileged-containers/template.yaml"),
            library_file(
                &root,
                "privileged-containers/samples/psp-privileged-container/constraint.yaml",
            ),
            source("expansion.yaml", EXPANSION.to_string()),
        ];
        let set = build(&sources, Config::default());
        assert_eq!(set.expansions.len(), 2);
        let d = judge(
            &set,
            &fixture("statefulset-missing-read-only-root-filesystem.json"),
            Wants::VALIDATE,
        );
        let m = messages(&d);
        assert!(
            m.iter().any(|m| m.starts_with("psp-readonlyrootfilesystem Deny [Implied by expand-workloads] only read-only root filesystem container is allowed")),
            "{m:?}"
        );
        assert!(!d.allowed);
        let d = judge(
            &set,
            &fixture("deployment-missing-read-only-root-filesystem.json"),
            Wants::VALIDATE,
        );
        let m = messages(&d);
        assert!(
            m.iter()
                .any(|m| m
                    .starts_with("psp-readonlyrootfilesystem Deny [Implied by expand-workloads]")),
            "{m:?}"
        );
        let d = judge(&set, &fixture("daemonset-privileged.json"), Wants::VALIDATE);
        let m = messages(&d);
        assert!(
            m.iter().any(|m| m.starts_with("psp-privileged-container Deny [Implied by expand-workloads] Privileged container is not allowed")),
            "{m:?}"
        );
        // A CronJob expands into a Job, then into a Pod; the Pod is made by expand-workloads.
        let d = judge(
            &set,
            &fixture("cronjob-read-only-root-filesystem-false.json"),
            Wants::VALIDATE,
        );
        let m = messages(&d);
        assert!(
            m.iter()
                .any(|m| m
                    .starts_with("psp-readonlyrootfilesystem Deny [Implied by expand-workloads]")),
            "{m:?}"
        );
        for secure in [
            "statefulset-secure.json",
            "daemonset-secure.json",
            "cronjob-secure.json",
        ] {
            let d = judge(&set, &fixture(secure), Wants::VALIDATE);
            assert!(d.violations.is_empty(), "{secure}: {:?}", messages(&d));
        }
        // Without the templates, the workloads pass the Pod constraints untouched.
        let without = build(&sources[..4], Config::default());
        let d = judge(
            &without,
            &fixture("daemonset-privileged.json"),
            Wants::VALIDATE,
        );
        assert!(d.violations.is_empty(), "{:?}", messages(&d));
    }

    /// As in Gatekeeper, mutators apply to the expanded Pod before the constraints judge it: an
    /// Assign that sets `readOnlyRootFilesystem` on Pods clears the implied violation.
    #[test]
    fn mutators_apply_to_expanded_pods_first() {
        let Some(root) = common::corpus("gatekeeper-library/library/pod-security-policy") else {
            return;
        };
        const ASSIGN: &str = r#"
apiVersion: mutations.gatekeeper.sh/v1
kind: Assign
metadata:
  name: read-only-root
spec:
  applyTo:
    - groups: [""]
      kinds: ["Pod"]
      versions: ["v1"]
  location: "spec.containers[name:*].securityContext.readOnlyRootFilesystem"
  parameters:
    assign:
      value: true
"#;
        let constraint_sources = vec![
            library_file(&root, "read-only-root-filesystem/template.yaml"),
            library_file(
                &root,
                "read-only-root-filesystem/samples/psp-readonlyrootfilesystem/constraint.yaml",
            ),
            source("expansion.yaml", EXPANSION.to_string()),
        ];
        let review = fixture("deployment-missing-read-only-root-filesystem.json");
        let without = build(&constraint_sources, Config::default());
        let d = judge(&without, &review, Wants::VALIDATE);
        assert!(
            messages(&d)
                .iter()
                .any(|m| m.contains("[Implied by expand-workloads]")),
            "{:?}",
            messages(&d)
        );
        let mut with = constraint_sources.clone();
        with.push(source("assign.yaml", ASSIGN.to_string()));
        let set = build(&with, Config::default());
        let d = judge(&set, &review, Wants::VALIDATE);
        assert!(
            !messages(&d)
                .iter()
                .any(|m| m.contains("[Implied by expand-workloads]")),
            "{:?}",
            messages(&d)
        );
    }

    fn template(kind: &str, rego_body: &str) -> String {
        format!(
            "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata:\n  name: {}\nspec:\n  crd:\n    spec:\n      names:\n        kind: {kind}\n  targets:\n    - target: admission.k8s.gatekeeper.sh\n      rego: |\n        package {}\n        violation[{{\"msg\": msg}}] {{\n          {rego_body}\n        }}\n",
            kind.to_ascii_lowercase(),
            kind.to_ascii_lowercase()
        )
    }

    fn pod(namespace: &str) -> Review {
        Review::from_manifest(
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": namespace}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
            &ManifestRequest::default(),
        )
        .unwrap()
    }

    /// A label-based rule on the request's Namespace, read from `input.review.namespaceObject`.
    #[test]
    fn templates_read_the_namespace_object() {
        let sources = vec![
            source(
                "t.yaml",
                template(
                    "K8sNamespaceTier",
                    "input.review.namespaceObject.metadata.labels.tier == \"restricted\"\n          msg := sprintf(\"namespace %v is restricted\", [input.review.namespaceObject.metadata.name])",
                ),
            ),
            source(
                "c.yaml",
                "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sNamespaceTier\nmetadata:\n  name: tier\n".to_string(),
            ),
        ];
        let set = build(&sources, Config::default());
        let namespaces = [
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "locked", "labels": {"tier": "restricted"}, "managedFields": [{"manager": "x"}]}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "open", "labels": {"tier": "free"}}}),
        ];
        regate::gatekeeper::record_namespaces(&set, namespaces.iter());
        let d = judge(&set, &pod("locked"), Wants::VALIDATE);
        assert_eq!(
            messages(&d),
            vec!["tier Deny namespace locked is restricted"]
        );
        assert!(judge(&set, &pod("open"), Wants::VALIDATE)
            .violations
            .is_empty());
        // Unknown namespace: no namespaceObject, the rule is undefined.
        assert!(judge(&set, &pod("elsewhere"), Wants::VALIDATE)
            .violations
            .is_empty());
        let object = set.resolver.namespace_object("locked").unwrap();
        assert!(object.pointer("/metadata/managedFields").is_none());
    }

    fn scoped_sources() -> Vec<PolicySource> {
        let constraint = |name: &str, spec: &str| {
            format!("---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sNoPods\nmetadata:\n  name: {name}\nspec:\n{spec}")
        };
        let constraints = [
            constraint("audit-only", "  enforcementAction: scoped\n  scopedEnforcementActions:\n    - action: deny\n      enforcementPoints: [{name: audit.gatekeeper.sh}]\n"),
            constraint("webhook-only", "  enforcementAction: scoped\n  scopedEnforcementActions:\n    - action: deny\n      enforcementPoints: [{name: validation.gatekeeper.sh}]\n"),
            constraint("warn-here-deny-there", "  enforcementAction: scoped\n  scopedEnforcementActions:\n    - action: warn\n      enforcementPoints: [{name: validation.gatekeeper.sh}]\n    - action: deny\n      enforcementPoints: [{name: audit.gatekeeper.sh}]\n"),
            constraint("dry", "  enforcementAction: dryrun\n"),
        ]
        .concat();
        vec![
            source("t.yaml", template("K8sNoPods", "msg := \"no pods\"")),
            source("c.yaml", constraints),
        ]
    }

    fn actions(d: &Decision) -> Vec<(String, Action)> {
        let mut out: Vec<(String, Action)> = d
            .violations
            .iter()
            .map(|v| (v.policy.clone(), v.action))
            .collect();
        out.sort();
        out
    }

    /// `scopedEnforcementActions` per enforcement point: admission (validation.gatekeeper.sh)
    /// and audit (audit.gatekeeper.sh); dryrun is audit-only everywhere.
    #[test]
    fn scoped_enforcement_is_per_point() {
        let set = build(&scoped_sources(), Config::default());
        let admission = judge(&set, &pod("default"), Wants::VALIDATE);
        assert_eq!(
            actions(&admission),
            vec![
                ("dry".to_string(), Action::Audit),
                ("warn-here-deny-there".to_string(), Action::Warn),
                ("webhook-only".to_string(), Action::Deny),
            ]
        );
        let audit_set = regate::gatekeeper::audit_point(Arc::new(set));
        let audit = judge(&audit_set, &pod("default"), Wants::VALIDATE);
        assert_eq!(
            actions(&audit),
            vec![
                ("audit-only".to_string(), Action::Deny),
                ("dry".to_string(), Action::Audit),
                ("warn-here-deny-there".to_string(), Action::Deny),
            ]
        );
        // Without scoped constraints the audit's set is the set itself.
        let plain = Arc::new(build(&scoped_sources()[..1], Config::default()));
        assert!(Arc::ptr_eq(
            &plain,
            &regate::gatekeeper::audit_point(plain.clone())
        ));
    }

    /// Config exceptions waive a constraint named by its id or by `Kind/name`.
    #[test]
    fn exceptions_name_constraints_by_kind_and_name() {
        let config: Config = serde_yaml::from_str(
            "exceptions:\n  - name: legacy\n    policies: [K8sNoPods/webhook-only, dry]\n    reason: migration\n    expires: \"2999-01-01T00:00:00Z\"\n    match:\n      namespace: legacy\n",
        )
        .unwrap();
        let set = build(&scoped_sources(), config);
        let d = judge(&set, &pod("legacy"), Wants::VALIDATE);
        let waived: Vec<&str> = d.waivers.iter().map(|w| w.policy.as_str()).collect();
        assert_eq!(waived, vec!["webhook-only", "dry"], "{:?}", d.waivers);
        assert!(d.allowed);
        let d = judge(&set, &pod("default"), Wants::VALIDATE);
        assert!(!d.allowed);
    }
}

/// Every mutation sample of the library (`mutation/pod-security-policy/*/samples`), applied to its
/// example Pod through `/mutate`'s decision path, against the object Gatekeeper's mutation
/// documentation gives (written out here in full). Each result is also checked to be stable:
/// judging the mutated Pod again gives no patch.
mod mutation_samples {
    use std::path::Path;
    use std::sync::Arc;

    use regate::admission::decision::judge;
    use regate::admission::review::{ManifestRequest, Review};
    use regate::config::Config;
    use regate::environment::NamespaceLabels;
    use regate::policy::eval::Wants;
    use regate::policy::set::PolicySet;
    use regate::policy::source::PolicySource;
    use serde_json::{json, Value};

    use super::common;

    fn set(dir: &Path, mutators: &[&str]) -> PolicySet {
        let sources: Vec<PolicySource> = mutators
            .iter()
            .map(|f| PolicySource {
                name: f.to_string(),
                text: std::fs::read_to_string(dir.join(f)).unwrap(),
            })
            .collect();
        let set = regate::catalog::build(
            &sources,
            Arc::new(Config::default()),
            NamespaceLabels::default(),
        )
        .unwrap();
        assert!(!set.mutators.is_empty());
        set
    }

    /// The object after `/mutate`, and the ids of the mutators that changed it.
    fn mutate(set: &PolicySet, object: &Value) -> (Value, Vec<String>) {
        let review = Review::from_manifest(object.clone(), &ManifestRequest::default()).unwrap();
        let decision = judge(set, &review, Wants::MUTATE);
        assert!(decision.failures.is_empty(), "{:?}", decision.failures);
        let mut out = review.object().unwrap().clone();
        if let Some(patch) = &decision.patch {
            json_patch::patch(&mut out, patch).unwrap();
        }
        (out, decision.mutations)
    }

    /// Mutates the sample's example with `mutators` and compares with `expected`; then mutates
    /// the result again and expects nothing to change.
    fn check(sample: &str, mutators: &[&str], example: &str, expected: Value) {
        let Some(dir) = common::corpus(&format!(
            "gatekeeper-library/mutation/pod-security-policy/{sample}/samples"
        )) else {
            return;
        };
        let set = set(&dir, mutators);
        let text = std::fs::read_to_string(dir.join(example)).unwrap();
        let object: Value = serde_yaml::from_str(&text).unwrap();
        let (mutated, by) = mutate(&set, &object);
        assert_eq!(mutated, expected, "{sample} {example} mutated by {by:?}");
        let (again, by) = mutate(&set, &mutated);
        assert_eq!(again, mutated, "{sample}: a second pass changed the object");
        assert!(by.is_empty(), "{by:?}");
    }

    fn pod(name: &str, container: Value, pod_security: Option<Value>) -> Value {
        let mut spec = json!({"containers": [container]});
        if let Some(sc) = pod_security {
            spec["securityContext"] = sc;
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": spec,
        })
    }

    fn nginx(security_context: Value) -> Value {
        json!({"name": "nginx", "image": "nginx", "securityContext": security_context})
    }

    #[test]
    fn allow_privilege_escalation() {
        check(
            "allow-privilege-escalation",
            &["mutation.yaml"],
            "default-allow-privilege-escalation/example.yaml",
            pod(
                "nginx-default-privilege-escalation",
                nginx(json!({"allowPrivilegeEscalation": false})),
                None,
            ),
        );
    }

    #[test]
    fn capabilities_assign_and_modify_set() {
        let expected = pod(
            "nginx-default-add-capabilities",
            nginx(json!({"capabilities": {"add": ["NEW_CAPABILITY"]}})),
            None,
        );
        for mutators in [
            &["mutation-assign.yaml"][..],
            &["mutation-modifyset.yaml"][..],
            &["mutation-assign.yaml", "mutation-modifyset.yaml"][..],
        ] {
            check(
                "capabilities",
                mutators,
                "default-add-capabilities/example.yaml",
                expected.clone(),
            );
        }
    }

    #[test]
    fn read_only_root_filesystem() {
        check(
            "read-only-root-filesystem",
            &["mutation.yaml"],
            "read-only-root-filesystem/example.yaml",
            pod(
                "nginx-readonlyrootfs",
                nginx(json!({"readOnlyRootFilesystem": true})),
                None,
            ),
        );
    }

    #[test]
    fn seccomp() {
        let expected = pod(
            "nginx-default-seccomp",
            json!({"name": "nginx", "image": "nginx"}),
            Some(json!({"seccompProfile": {"type": "RuntimeDefault"}})),
        );
        check(
            "seccomp",
            &["mutation.yaml"],
            "default-seccomp/example.yaml",
            expected,
        );
    }

    #[test]
    fn selinux() {
        check(
            "selinux",
            &["mutation.yaml"],
            "default-selinux/example.yaml",
            pod(
                "nginx-default-selinux",
                nginx(json!({"seLinuxOptions": {
                    "level": "s1:c234,c567",
                    "user": "sysadm_u",
                    "role": "sysadm_r",
                    "type": "svirt_lxc_net_t",
                }})),
                None,
            ),
        );
    }

    const USERS: &[&str] = &[
        "mutation-fsGroup.yaml",
        "mutation-mustRunAsNonRoot.yaml",
        "mutation-runAsGroup.yaml",
        "mutation-runAsUser.yaml",
        "mutation-supplementalGroups.yaml",
    ];

    #[test]
    fn users_all_five_mutators() {
        check(
            "users",
            USERS,
            "users/example.yaml",
            pod(
                "nginx-users",
                nginx(json!({"runAsNonRoot": true, "runAsGroup": 2000, "runAsUser": 1000})),
                Some(json!({"fsGroup": 3000, "supplementalGroups": [3000]})),
            ),
        );
        // The Pod that sets runAsUser and runAsNonRoot keeps them; what it leaves unset is
        // still defaulted.
        check(
            "users",
            USERS,
            "users/example-nomutation.yaml",
            pod(
                "nginx-run-as-root",
                nginx(json!({"runAsUser": 0, "runAsNonRoot": false, "runAsGroup": 2000})),
                Some(json!({"fsGroup": 3000, "supplementalGroups": [3000]})),
            ),
        );
    }

    #[test]
    fn users_run_as_non_root_leaves_an_explicit_root_alone() {
        check(
            "users",
            &["mutation-mustRunAsNonRoot.yaml"],
            "users/example-nomutation.yaml",
            pod(
                "nginx-run-as-root",
                nginx(json!({"runAsUser": 0, "runAsNonRoot": false})),
                None,
            ),
        );
        check(
            "users",
            &["mutation-mustRunAsNonRoot.yaml"],
            "users/example.yaml",
            pod("nginx-users", nginx(json!({"runAsNonRoot": true})), None),
        );
    }

    /// The embedded native policies' `patch` rules and the library's mutators together: one
    /// patch that applies cleanly, with both sides' changes, and nothing left to do after it.
    #[test]
    fn native_patches_and_mutators_make_one_stable_patch() {
        let Some(root) = common::corpus("gatekeeper-library/mutation/pod-security-policy") else {
            return;
        };
        let mut sources = regate::policy::source::embedded();
        for (sample, file) in [
            ("capabilities", "mutation-modifyset.yaml"),
            ("users", "mutation-runAsUser.yaml"),
            ("seccomp", "mutation.yaml"),
        ] {
            let path = root.join(sample).join("samples").join(file);
            sources.push(PolicySource {
                name: path.display().to_string(),
                text: std::fs::read_to_string(&path).unwrap(),
            });
        }
        let set = regate::catalog::build(
            &sources,
            Arc::new(Config::default()),
            NamespaceLabels::default(),
        )
        .unwrap();
        let object = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1"}]}});
        let (mutated, by) = mutate(&set, &object);
        assert_eq!(
            by,
            vec![
                "Assign/k8spsprunasuser".to_string(),
                "Assign/k8spspseccomp".to_string(),
                "ModifySet/k8spspcapabilities".to_string()
            ]
        );
        let sc = &mutated["spec"]["containers"][0]["securityContext"];
        // The native policy's additions...
        assert_eq!(sc["allowPrivilegeEscalation"], json!(false));
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        // ...and the mutators', under the same parents.
        assert_eq!(sc["capabilities"]["add"], json!(["NEW_CAPABILITY"]));
        assert_eq!(sc["runAsUser"], json!(1000));
        assert_eq!(
            mutated["spec"]["securityContext"]["seccompProfile"],
            json!({"type": "RuntimeDefault"})
        );
        let (again, by) = mutate(&set, &mutated);
        assert_eq!(again, mutated);
        assert!(by.is_empty(), "{by:?}");
    }
}

/// `regate verify` with gator's `expansion` field and regate's `mutators`
/// (`fixtures/gatekeeper-expansion/`): a Deployment and a CronJob judged by a Pod template
/// through the Pods they would create, and a mutator applied to the expanded Pod first.
mod verify_expansion {
    use std::path::PathBuf;
    use std::process::Command;

    fn verify(suite: &str) -> (i32, String) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/gatekeeper-expansion");
        let out = Command::new(env!("CARGO_BIN_EXE_regate"))
            .current_dir(&dir)
            .args(["verify", suite])
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
        )
    }

    #[test]
    fn expansion_and_mutators_pass_per_case() {
        let (code, stdout) = verify("suite.yaml");
        assert_eq!(code, 0, "{stdout}");
        for line in [
            "ok    suite.yaml: workloads-judged-by-their-pods / privileged-deployment",
            "ok    suite.yaml: workloads-judged-by-their-pods / unprivileged-deployment",
            "ok    suite.yaml: workloads-judged-by-their-pods / privileged-cronjob",
            "ok    suite.yaml: workloads-judged-by-their-pods / pod-judged-as-itself",
            "ok    suite.yaml: without-expansion / deployment-not-matched",
            "ok    suite.yaml: mutated-before-judged / expanded-pod-mutated",
            "ok    suite.yaml: mutated-before-judged / pod-mutated",
            "7 passed, 0 failed",
        ] {
            assert!(stdout.lines().any(|l| l == line), "{line:?} in\n{stdout}");
        }
    }

    /// A failed case shows the expanded Pod's violation with Gatekeeper's prefix, and an
    /// `expansion` file holding anything but ExpansionTemplates fails its cases by name.
    #[test]
    fn failures_name_the_implied_violation_and_the_bad_file() {
        let (code, stdout) = verify("failing.yaml");
        assert_eq!(code, 1, "{stdout}");
        assert!(
            stdout.contains("FAIL  failing.yaml: wrong-expectation / privileged-deployment\n      got 1 violations but want none; messages: [\"[Implied by expand-workloads] Privileged container is not allowed: app\"]"),
            "{stdout}"
        );
        assert!(
            stdout.contains("FAIL  failing.yaml: expansion-is-not-a-template / any\n      expansion constraint.yaml:1: not an ExpansionTemplate"),
            "{stdout}"
        );
        assert!(stdout.ends_with("0 passed, 2 failed\n"), "{stdout}");
    }
}
