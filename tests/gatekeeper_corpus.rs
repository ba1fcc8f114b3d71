//! Gatekeeper's policy library, every suite, through the same code as `regate verify`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use regate::gatekeeper::suite::{self, Status};

const TOTAL_CASES: usize = 270;

/// Cases that fail because of known regorus/OPA differences, each with its cause; see
/// docs/gatekeeper.md. (suite directory under library/, test, case, cause)
const KNOWN_FAILURES: &[(&str, &str, &str, &str)] = &[(
    "pod-security-policy/users",
    "users-and-groups-together",
    "example-allowed",
    "`not accept_value(rule, provided_value, params.ranges)` with `params.ranges` undefined: OPA \
     evaluates a user function's arguments before the negation, so the expression is undefined; \
     regorus negates the undefined call to true and reports a violation",
)];

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
        PolicySet::build(
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
        let err = PolicySet::build(
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
        let set = PolicySet::build(
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
        let set = PolicySet::build(
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
