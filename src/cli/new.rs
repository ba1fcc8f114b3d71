//! `regate new policy <id>`: a policy with its METADATA, Rego unit tests (one passing, one
//! failing input) and a YAML case, which all pass `regate test` as written. The rule judges a
//! placeholder label no real object carries, so adding it never changes another case's verdict
//! until the author edits it.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::policy::metadata::{nearest_kind, BUILT_IN_KINDS};

#[derive(Debug, Args)]
pub struct NewArgs {
    #[command(subcommand)]
    pub command: NewCommand,
}

#[derive(Debug, Subcommand)]
pub enum NewCommand {
    /// Write <dir>/<id>.rego, <dir>/<id>_test.rego and <cases>/<id>.yaml.
    Policy {
        /// The policy id: lower-case letters, digits and dashes.
        id: String,
        /// Kinds the policy judges (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "Deployment")]
        kinds: Vec<String>,
        /// Policy directory.
        #[arg(long, default_value = "policies")]
        dir: PathBuf,
        /// Directory of YAML cases.
        #[arg(long, default_value = "tests/policies")]
        cases: PathBuf,
    },
}

/// The label the starting rule forbids: no real object carries it.
const PLACEHOLDER_LABEL: &str = "example.com/forbidden";

pub fn run(args: NewArgs) -> anyhow::Result<i32> {
    let NewCommand::Policy {
        id,
        kinds,
        dir,
        cases,
    } = args.command;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || id.starts_with('-')
    {
        anyhow::bail!("policy id {id:?}: use lower-case letters, digits and dashes (e.g. deployment-owner-label)");
    }
    let kinds: Vec<String> = kinds
        .iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    let Some(first_kind) = kinds.first() else {
        anyhow::bail!("--kinds: name at least one kind (e.g. Deployment,StatefulSet)");
    };
    for kind in &kinds {
        if !BUILT_IN_KINDS.contains(&kind.as_str()) {
            if let Some(near) = nearest_kind(kind, BUILT_IN_KINDS) {
                anyhow::bail!("--kinds: {kind:?} is not a kind; did you mean {near:?}?");
            }
        }
    }
    let files = [
        (dir.join(format!("{id}.rego")), policy(&id, &kinds)),
        (
            dir.join(format!("{id}_test.rego")),
            unit_tests(&id, first_kind),
        ),
        (cases.join(format!("{id}.yaml")), case(&id, first_kind)),
    ];
    for (path, _) in &files {
        if path.exists() {
            anyhow::bail!("{} already exists; nothing written", path.display());
        }
    }
    for (path, text) in &files {
        write_new(path, text)?;
        println!("wrote {}", path.display());
    }
    println!(
        "next: edit the rule in {}, then `regate test {} {}`",
        files[0].0.display(),
        dir.display(),
        cases.display()
    );
    Ok(0)
}

fn write_new(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

fn package(id: &str) -> String {
    id.replace('-', "_")
}

fn api_version(kind: &str) -> &'static str {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ControllerRevision" => {
            "apps/v1"
        }
        "Job" | "CronJob" => "batch/v1",
        "Ingress" | "IngressClass" | "NetworkPolicy" => "networking.k8s.io/v1",
        "PodDisruptionBudget" => "policy/v1",
        "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => {
            "rbac.authorization.k8s.io/v1"
        }
        "HorizontalPodAutoscaler" => "autoscaling/v2",
        _ => "v1",
    }
}

fn policy(id: &str, kinds: &[String]) -> String {
    format!(
        r#"# METADATA
# title: TODO say in one line what {id} requires
# description: TODO say why, and what to change when it fires.
# custom:
#   id: {id}
#   severity: medium
#   category: TODO a grouping for reports, e.g. Pod Security
#   kinds: [{kinds}]
#   action: {{development: warn, staging: warn, production: deny}}
#   parameters:
#     forbidden_labels:
#       type: array
#       description: label keys objects must not carry (a placeholder to replace)
#       default: ["{PLACEHOLDER_LABEL}"]
package regate.policies.{package}

# Read fields through object.get: in regorus `not x` is true when x is undefined.
labels := object.get(input.request.object, ["metadata", "labels"], {{}})

deny contains {{"msg": sprintf("label %q is not allowed", [key]), "path": sprintf("metadata.labels.%s", [key])}} if {{
	some key in data.regate.parameters.forbidden_labels
	labels[key]
}}
"#,
        kinds = kinds.join(", "),
        package = package(id)
    )
}

fn unit_tests(id: &str, kind: &str) -> String {
    format!(
        r#"package regate.policies.{package}_test

import data.regate.policies.{package} as policy

review(labels) := {{"request": {{
	"kind": {{"kind": "{kind}"}}, "operation": "CREATE", "namespace": "default",
	"object": {{"apiVersion": "{api}", "kind": "{kind}", "metadata": {{"name": "example", "labels": labels}}}},
}}}}

test_forbidden_label_is_denied if {{
	count(policy.deny) == 1 with input as review({{"{PLACEHOLDER_LABEL}": "yes"}})
}}

test_other_labels_are_fine if {{
	count(policy.deny) == 0 with input as review({{"app": "web"}})
}}
"#,
        package = package(id),
        api = api_version(kind)
    )
}

fn case(id: &str, kind: &str) -> String {
    format!(
        r#"cases:
  - name: {id} denies a {kind} with a forbidden label in production
    environment: production
    object:
      apiVersion: {api}
      kind: {kind}
      metadata:
        name: example
        namespace: default
        labels: {{"{PLACEHOLDER_LABEL}": "yes"}}
    expect:
      allowed: false
      messages: ['label "{PLACEHOLDER_LABEL}" is not allowed']
"#,
        api = api_version(kind)
    )
}
