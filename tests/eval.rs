//! `regate eval`: parity with the running server on every fixture, and the expected outcomes of
//! the manifests users keep in git.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use serde_json::Value;

fn eval_json(args: &[&str], config: &std::path::Path) -> (i32, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(repo())
        .args(["eval", "-o", "json", "--config"])
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let results: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), results)
}

fn denied_ids(result: &Value) -> Vec<String> {
    let mut ids: Vec<String> = result["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["action"] == "deny")
        .map(|v| v["policy"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Every fixture gives the same decision, denials, warnings and patch through `regate eval` as
/// through the running server's /validate and /mutate.
#[tokio::test]
async fn eval_agrees_with_the_server_on_every_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("regate.yaml");
    std::fs::write(&config, TEST_CONFIG).unwrap();
    let (code, results) = eval_json(&["-f", "fixtures/admission"], &config);
    assert_eq!(code, 1, "some fixtures are denied, so eval exits 1");
    let by_uid: BTreeMap<String, &Value> = results
        .iter()
        .map(|r| (r["uid"].as_str().unwrap().to_string(), r))
        .collect();

    let server = TestServer::start().await;
    let client = server.http1();
    let mut files: Vec<_> = std::fs::read_dir(repo().join("fixtures/admission"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 60);
    for path in &files {
        let body = std::fs::read(path).unwrap();
        let review: Value = serde_json::from_slice(&body).unwrap();
        let uid = review["request"]["uid"].as_str().unwrap();
        let ours = by_uid
            .get(uid)
            .unwrap_or_else(|| panic!("{} missing from eval output", path.display()));
        let (_, _, validated) = post(&client, &server.url("/validate"), body.clone()).await;
        let (_, _, mutated) = post(&client, &server.url("/mutate"), body).await;
        let name = path.file_name().unwrap().to_string_lossy();
        assert_eq!(ours["allowed"], response(&validated)["allowed"], "{name}");
        let message = response(&validated)["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let server_denied = if response(&validated)["allowed"] == true {
            vec![]
        } else {
            ids_in(&[message])
        };
        let eval_denied = {
            let mut ids = denied_ids(ours);
            for f in ours["failures"].as_array().unwrap() {
                ids.push(f["policy"].as_str().unwrap().to_string());
            }
            ids.sort();
            ids.dedup();
            ids
        };
        assert_eq!(eval_denied, server_denied, "{name}");
        let eval_warnings: Vec<String> = ours["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_string())
            .collect();
        assert_eq!(eval_warnings, warnings(&validated), "{name}");
        let server_patch = patch_of(&mutated).map(|p| serde_json::to_value(p).unwrap());
        assert_eq!(ours.get("patch").cloned(), server_patch, "{name}");
    }
    println!("eval/server parity: {} fixtures agree", files.len());
    server.stop().await;
}

#[derive(serde::Deserialize)]
struct Expected {
    allowed: bool,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    warn: Vec<String>,
    #[serde(default)]
    patch: bool,
}

/// The manifests of fixtures/manifests (multi-document YAML, a List, JSON, stringData Secrets,
/// no namespaces) judged in production as their expected.yaml says.
#[test]
fn manifests_judged_as_expected() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("regate.yaml");
    std::fs::write(&config, "").unwrap();
    let expected: BTreeMap<String, Expected> = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("fixtures/manifests/expected.yaml")).unwrap(),
    )
    .unwrap();
    let (_, results) = eval_json(&["-f", "fixtures/manifests"], &config);
    assert_eq!(
        results.len(),
        expected.len(),
        "one result per expected object"
    );
    for r in &results {
        let file = r["source"]
            .as_str()
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let key = format!(
            "{file}/{}/{}",
            r["kind"].as_str().unwrap(),
            r["name"].as_str().unwrap()
        );
        let want = expected
            .get(&key)
            .unwrap_or_else(|| panic!("{key} not in expected.yaml"));
        assert_eq!(r["allowed"], want.allowed, "{key}: {r}");
        assert_eq!(denied_ids(r), want.deny, "{key}");
        let mut warned: Vec<String> = r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|w| {
                w.as_str()
                    .unwrap()
                    .strip_prefix('[')
                    .and_then(|s| s.split_once(']'))
                    .map(|(id, _)| id.to_string())
            })
            .collect();
        warned.sort();
        warned.dedup();
        assert_eq!(warned, want.warn, "{key}");
        assert_eq!(r.get("patch").is_some(), want.patch, "{key}");
        let text = r.to_string();
        assert!(
            !text.contains("CANARY"),
            "{key}: a Secret value leaked into eval output"
        );
    }
}

#[test]
fn eval_text_output_and_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(repo())
        .args(["eval", "-f", "fixtures/admission/deployment-secure.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(repo())
        .args([
            "eval",
            "-f",
            "-",
            "-n",
            "shop",
            "--environment",
            "development",
        ])
        .stdin(std::fs::File::open(repo().join("fixtures/manifests/chat-ws.yaml")).unwrap())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[development]"), "{stdout}");
    assert!(stdout.contains("shop/"), "{stdout}");
    assert!(
        stdout.lines().last().unwrap().contains("objects:"),
        "{stdout}"
    );
}

/// Without a policies/ directory the binary serves the defaults embedded in it.
#[test]
fn embedded_defaults_when_no_policy_directory() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(dir.path())
        .args(["check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No count: other default policies may join the embedded set.
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .ends_with(" policies OK (embedded defaults)"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("embedded default policies"), "{stderr}");
}

/// The evaluation strategy is a documented flag (and environment variable): an unknown value
/// is an error listing the valid ones, never a silent default.
#[test]
fn an_unknown_evaluation_strategy_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for (args, env) in [
        (vec!["--eval-strategy", "bogus", "check"], None),
        (vec!["check"], Some("typo")),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_regate"));
        cmd.current_dir(dir.path()).args(&args);
        match env {
            Some(v) => cmd.env("REGATE_EVAL_STRATEGY", v),
            None => cmd.env_remove("REGATE_EVAL_STRATEGY"),
        };
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("grouped, compiled, interpreter, clone"),
            "{stderr}"
        );
    }
    // A valid one applies, and `regate policies` shows each policy's backend.
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(dir.path())
        .args(["--eval-strategy", "interpreter", "policies"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("backend: interpreter: --eval-strategy interpreter"),
        "{stdout}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(dir.path())
        .env_remove("REGATE_EVAL_STRATEGY")
        .args(["check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("  configmap-allowed-origins: bytecode"),
        "{stdout}"
    );
}

/// Whether `actual` (lines) matches `expected`: a line `...` stands for any lines, and `...`
/// inside a line for any text.
fn matches_transcript(expected: &[&str], actual: &[&str]) -> bool {
    fn line_matches(pattern: &str, line: &str) -> bool {
        if !pattern.contains("...") {
            return pattern == line;
        }
        let parts: Vec<&str> = pattern.split("...").collect();
        let mut rest = line;
        for (i, part) in parts.iter().enumerate() {
            if i == 0 {
                let Some(r) = rest.strip_prefix(part) else {
                    return false;
                };
                rest = r;
            } else if i == parts.len() - 1 {
                return rest.ends_with(part);
            } else {
                let Some(at) = rest.find(part) else {
                    return false;
                };
                rest = &rest[at + part.len()..];
            }
        }
        rest.is_empty()
    }
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|i| matches_transcript(rest, &actual[i..])),
        Some((first, rest)) => {
            !actual.is_empty()
                && line_matches(first, actual[0])
                && matches_transcript(rest, &actual[1..])
        }
    }
}

/// docs/writing-policies.md, run end to end: every file it shows (marked
/// `<!-- file: PATH -->`) is written, every `$ cargo run -q -- …` command it shows is run in
/// document order, and what each prints on standard output is what the document says.
#[test]
fn the_writing_policies_walkthrough_prints_what_it_says() {
    let doc = std::fs::read_to_string(repo().join("docs/writing-policies.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<&str> = doc.lines().collect();
    let (mut files, mut commands) = (0, 0);
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if let Some(path) = line
            .strip_prefix("<!-- file: ")
            .and_then(|l| l.strip_suffix(" -->"))
        {
            assert!(lines[i + 1].starts_with("```"), "a fence after {line}");
            let end = i + 2 + lines[i + 2..].iter().position(|l| *l == "```").unwrap();
            let target = dir.path().join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, lines[i + 2..end].join("\n") + "\n").unwrap();
            files += 1;
            i = end + 1;
            continue;
        }
        if line == "```sh" {
            let end = i + 1 + lines[i + 1..].iter().position(|l| *l == "```").unwrap();
            let block = &lines[i + 1..end];
            let starts: Vec<usize> = (0..block.len())
                .filter(|&j| block[j].starts_with("$ cargo run -q -- "))
                .collect();
            for (n, &start) in starts.iter().enumerate() {
                let stop = starts.get(n + 1).copied().unwrap_or(block.len());
                let args: Vec<&str> = block[start]
                    .trim_start_matches("$ cargo run -q -- ")
                    .split_whitespace()
                    .collect();
                let out = Command::new(env!("CARGO_BIN_EXE_regate"))
                    .current_dir(dir.path())
                    .args(&args)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout);
                let actual: Vec<&str> = stdout.lines().collect();
                let expected = &block[start + 1..stop];
                assert!(
                    matches_transcript(expected, &actual),
                    "`{}` printed:\n{stdout}\nstderr:\n{}\nthe document says:\n{}",
                    block[start],
                    String::from_utf8_lossy(&out.stderr),
                    expected.join("\n")
                );
                commands += 1;
            }
            i = end + 1;
            continue;
        }
        i += 1;
    }
    assert!(
        files >= 4 && commands >= 5,
        "{files} files, {commands} commands"
    );
}

fn regate(cwd: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(cwd)
        .args(args)
        .env_remove("REGATE_POLICIES")
        .env_remove("REGATE_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("REGATE_LOG_LEVEL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const CONFIGMAP: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {LOG_LEVEL: info}\n";

/// Issue 17 (2): a path the user names that does not exist is an error in every command, never
/// a silent run on the embedded defaults; each command says which set it judged with.
#[test]
fn a_named_path_that_does_not_exist_is_an_error_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cm.yaml"), CONFIGMAP).unwrap();
    for args in [
        &["test", "no-such-dir"][..],
        &["check", "nonexist-dir"],
        &["policies", "polcies"],
        &["eval", "-f", "cm.yaml", "--policies", "no-such-dir"],
        &["audit", "-f", "cm.yaml", "--policies", "no-such-dir"],
    ] {
        let (code, stdout, stderr) = regate(dir.path(), args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("no-such-dir")
                || stderr.contains("nonexist-dir")
                || stderr.contains("polcies"),
            "{args:?}: {stderr}"
        );
        assert!(!stdout.contains("passed"), "{args:?}: {stdout}");
    }
    // No path named and no policies/ here: the embedded defaults, said so on stderr.
    let (code, _, stderr) = regate(dir.path(), &["eval", "-f", "cm.yaml"]);
    assert!(code == 0 || code == 1, "{stderr}");
    assert!(stderr.contains("embedded default policies"), "{stderr}");
}

/// Issue 17 (3, 6, 8, 14): input that is not Kubernetes is reported with file:line and a run
/// that judged nothing exits 2; no log lines on a command's stderr; --operation is checked
/// when parsed; the summary counts warned objects and says "1 object".
#[test]
fn eval_reports_what_it_did_not_judge_and_stays_quiet_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("notk8s.yaml"),
        "replicas: 3\nimage: nginx\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("cm.yaml"), CONFIGMAP).unwrap();
    for command in ["eval", "audit"] {
        let (code, stdout, stderr) = regate(dir.path(), &[command, "-f", "notk8s.yaml"]);
        assert_eq!(code, 2, "{command}: {stdout}{stderr}");
        assert!(
            stderr.contains("notk8s.yaml:1: not a Kubernetes object"),
            "{command}: {stderr}"
        );
    }
    let (code, stdout, stderr) = regate(dir.path(), &["eval", "-f", "cm.yaml"]);
    assert!(code == 0 || code == 1, "{stderr}");
    assert!(stdout.trim_end().ends_with(" allowed"), "{stdout}");
    assert!(stdout.contains("1 object: "), "{stdout}");
    assert!(stdout.contains(" warned, "), "{stdout}");
    assert!(!stderr.contains("\"level\""), "no log lines: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour codes in a pipe: {stderr}"
    );
    for bad in ["bogus", "DELETE"] {
        let (code, _, stderr) = regate(dir.path(), &["eval", "-f", "cm.yaml", "--operation", bad]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(stderr.contains("--operation"), "{stderr}");
    }
    let (code, _, stderr) = regate(
        dir.path(),
        &["eval", "-f", "cm.yaml", "--operation", "update"],
    );
    assert!(code == 0 || code == 1, "{stderr}");
}

/// Issue 17 (5, 9): an error says its cause once; a closed pipe ends the command quietly.
#[test]
fn errors_say_their_cause_once_and_a_closed_pipe_is_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, stderr) = regate(dir.path(), &["audit", "-f", "deploy.yaml"]);
    assert_ne!(code, 0, "{stderr}");
    let (code, stdout, stderr) = regate(dir.path(), &["eval", "-f", "deploy.yaml"]);
    assert_eq!(code, 2, "{stderr}");
    let all = format!("{stdout}{stderr}");
    assert_eq!(all.matches("No such file or directory").count(), 1, "{all}");
    let (_, _, stderr) = regate(
        dir.path(),
        &[
            "--log-level",
            "warn",
            "audit",
            "--config",
            "nope.yaml",
            "-f",
            "x.yaml",
        ],
    );
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "{stderr}"
    );

    // `regate audit -f many | head -1`: the reader goes away after one line.
    let many: String = (0..3000)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}, namespace: shop}}\n---\n"
            )
        })
        .collect();
    std::fs::write(dir.path().join("many.yaml"), many).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_regate"))
        .current_dir(dir.path())
        .args([
            "audit",
            "-f",
            "many.yaml",
            "-o",
            "json",
            "--fail-on",
            "never",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Read;
        let mut first = [0u8; 16];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut first)
            .unwrap();
    }
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
}

fn team_label_policy(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("team-label.rego"),
        r#"# METADATA
# title: Team label
# custom:
#   id: team-label
#   severity: low
#   kinds: [ConfigMap, Secret]
#   action: {development: warn, staging: warn, production: deny}
package regate.policies.team_label

labels := object.get(input.request.object, ["metadata", "labels"], {})

deny contains {"msg": "the label \"team\" is missing", "path": "metadata.labels.team"} if {
	print("labels seen:", labels)
	not labels.team
}

deny contains {"msg": sprintf("the label team=%q is not a team", [labels.team]), "path": "metadata.labels.team"} if {
	labels.team == "nobody"
}

patch contains {"op": "add", "path": "/metadata/labels/team", "value": "unowned"} if {
	not labels.team
}
"#,
    )
    .unwrap();
}

/// Issue 17 (12): `regate test` on a failing case gives the breakdown `eval --explain` gives
/// (rule and line, the value at the path, the prints), scrubbed of Secret values; a failing case
/// with nothing to explain still shows its prints.
#[test]
fn test_explains_a_failing_case_as_eval_does() {
    let dir = tempfile::tempdir().unwrap();
    team_label_policy(&dir.path().join("p"));
    std::fs::write(
        dir.path().join("cases.yaml"),
        r#"cases:
  - name: a Secret owned by nobody is wrongly expected to pass
    environment: production
    object:
      apiVersion: v1
      kind: Secret
      metadata: {name: s, namespace: shop, labels: {team: nobody, copy: canary-value-8f3a91}}
      stringData: {token: canary-value-8f3a91}
    expect: {allowed: true}
  - name: an owned ConfigMap is wrongly expected to be denied
    environment: production
    object:
      apiVersion: v1
      kind: ConfigMap
      metadata: {name: c, namespace: shop, labels: {team: shop}}
    expect: {allowed: false, deny: [team-label]}
"#,
    )
    .unwrap();
    let (code, stdout, stderr) = regate(dir.path(), &["test", "p", "cases.yaml"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("0 passed, 2 failed"), "{stdout}");
    let (first, second) = stdout.split_at(stdout.find("FAIL  cases.yaml:10:").unwrap());
    assert!(first.contains("FAIL  cases.yaml:2:"), "{stdout}");
    for want in [
        "      explain Secret s\n",
        "        [team-label] the label team=\"nobody\" is not a team\n",
        "p/team-label.rego:17: deny contains",
        "        value   metadata.labels.team = \"nobody\"\n",
        "        print   p/team-label.rego:13: labels seen:",
    ] {
        assert!(first.contains(want), "{want:?} missing:\n{stdout}");
    }
    // The prints are in the explanation, not repeated below it.
    assert!(!first.contains("print: [team-label]"), "{stdout}");
    // Nothing denied: nothing to explain, and the prints are shown as before.
    assert!(!second.contains("explain "), "{stdout}");
    assert!(
        second.contains("      print: [team-label] p/team-label.rego:13: labels seen:"),
        "{stdout}"
    );
    assert!(!stdout.contains("canary-value-8f3a91"), "{stdout}");
    assert!(!stderr.contains("canary-value-8f3a91"), "{stderr}");
}

/// Issue 17 (12, 13, 14): --explain names the rule and line, the value at the path and the
/// prints, never a Secret's value; --mutate prints the objects as /mutate leaves them, in
/// order; --fail-on and the CI formats.
#[test]
fn eval_explains_mutates_and_speaks_ci() {
    let dir = tempfile::tempdir().unwrap();
    team_label_policy(&dir.path().join("p"));
    std::fs::write(
        dir.path().join("in.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: shop, labels: {team: nobody}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: shop}\ndata: {k: v}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: shop, labels: {team: nobody}}\nstringData: {token: canary-value-8f3a91}\n",
    )
    .unwrap();
    let base = [
        "eval",
        "--policies",
        "p",
        "-f",
        "in.yaml",
        "--environment",
        "production",
    ];
    let with = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        regate(dir.path(), &args)
    };

    let (code, _, stderr) = with(&["--explain"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("p/team-label.rego:17: deny contains"),
        "{stderr}"
    );
    assert!(
        stderr.contains("p/team-label.rego:12: deny contains"),
        "{stderr}"
    );
    assert!(
        stderr.contains("value   metadata.labels.team = \"nobody\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("value   metadata.labels.team = (not set)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("p/team-label.rego:13: labels seen:"),
        "{stderr}"
    );
    assert!(!stderr.contains("canary-value-8f3a91"), "{stderr}");

    let (_, stdout, stderr) = with(&["--mutate"]);
    let docs: Vec<Value> = stdout
        .split("\n---\n")
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b", "a", "s"], "input order: {stdout}");
    assert_eq!(docs[1]["metadata"]["labels"]["team"], "unowned", "{stdout}");
    assert_eq!(docs[0]["metadata"]["labels"]["team"], "nobody", "{stdout}");
    assert!(!stdout.contains("canary-value-8f3a91"), "{stdout}");
    assert!(stderr.contains("3 objects: 3 denied"), "{stderr}");
    let (_, stdout, _) = with(&["--mutate", "-o", "json"]);
    let json: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json[1]["metadata"]["labels"]["team"], "unowned");

    let (code, stdout, _) = with(&["-o", "github"]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("::error file=in.yaml,line=5,title=team-label%3A ConfigMap a::the label \"team\" is missing"),
        "{stdout}"
    );
    assert!(!stdout.contains("canary-value-8f3a91"));
    let (_, stdout, _) = with(&["-o", "sarif"]);
    let sarif: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(
        sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"],
        1
    );
    let (_, stdout, _) = with(&["-o", "junit"]);
    assert!(
        stdout.contains("<testsuite name=\"regate eval\" tests=\"3\" failures=\"3\">"),
        "{stdout}"
    );

    // Development: warnings only; --fail-on decides.
    let dev = |fail_on: &str| {
        regate(
            dir.path(),
            &[
                "eval",
                "--policies",
                "p",
                "-f",
                "in.yaml",
                "--environment",
                "development",
                "--fail-on",
                fail_on,
            ],
        )
    };
    let (code, stdout, _) = dev("deny");
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("3 objects: 0 denied, 3 warned, 0 allowed"),
        "{stdout}"
    );
    assert_eq!(dev("warn").0, 1);
    assert_eq!(dev("never").0, 0);
}

/// Issue 17 (15, 16): `regate new policy` writes files that pass `regate test` at once;
/// completions come from the command definitions.
#[test]
fn a_new_policy_passes_its_tests_and_completions_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = regate(
        dir.path(),
        &[
            "new",
            "policy",
            "deployment-owner",
            "--kinds",
            "Deployment,StatefulSet",
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    for file in [
        "policies/deployment-owner.rego",
        "policies/deployment-owner_test.rego",
        "tests/policies/deployment-owner.yaml",
    ] {
        assert!(dir.path().join(file).exists(), "{file}: {stdout}");
    }
    let (code, stdout, stderr) = regate(dir.path(), &["test", "policies", "tests/policies"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("3 passed, 0 failed"), "{stdout}");
    let (code, _, stderr) = regate(dir.path(), &["check", "policies"]);
    assert_eq!(code, 0, "{stderr}");
    // Never overwritten; a misspelt kind is refused.
    let (code, _, stderr) = regate(dir.path(), &["new", "policy", "deployment-owner"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("already exists"), "{stderr}");
    let (code, _, stderr) = regate(dir.path(), &["new", "policy", "x", "--kinds", "Deploymnet"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("did you mean \"Deployment\""), "{stderr}");

    for shell in ["bash", "zsh", "fish"] {
        let (code, stdout, _) = regate(dir.path(), &["completions", shell]);
        assert_eq!(code, 0);
        assert!(stdout.contains("regate"), "{shell}");
        assert!(
            stdout.contains("--fail-on") || stdout.contains("fail-on"),
            "{shell}"
        );
    }
}

/// Issue 17 (4, 7): errors carry regorus's whole reason at the real file:line:column, once;
/// `check` reports every metadata problem, unknown kinds with the nearest known one, and config
/// problems at their line in the config file.
#[test]
fn errors_point_at_the_real_place_with_the_whole_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p");
    team_label_policy(&p);
    std::fs::write(
        p.join("rt.rego"),
        "# METADATA\n# title: rt\n# custom:\n#   id: rt-err\n#   severity: low\n#   kinds: [ConfigMap]\npackage regate.policies.rt_err\n\nimport rego.v1\n\ndeny contains msg if { x := input.request.object.data.k; msg := sprintf(\"%d\", [to_number(x) + \"a\"]) }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("cm.yaml"),
        CONFIGMAP.replace("LOG_LEVEL: info", "k: '1'"),
    )
    .unwrap();
    let (_, stdout, stderr) = regate(dir.path(), &["eval", "--policies", "p", "-f", "cm.yaml"]);
    let error_line = stdout
        .lines()
        .find(|l| l.contains("error [rt-err]"))
        .unwrap_or_else(|| panic!("{stdout}{stderr}"));
    assert!(error_line.contains("p/rt.rego:11:"), "{stdout}");
    assert!(!error_line.contains("-->"), "{stdout}");

    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("bad.rego"),
        "# METADATA\n# title: bad\n# custom:\n#   id: bad\n#   severity: low\n#   kinds: [Confgmap]\npackage regate.policies.bad\n\n\n\n\n\ndeny contains \"x\" if { count(input.a ) ) }\n",
    )
    .unwrap();
    let (code, _, stderr) = regate(dir.path(), &["check", "bad"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("bad/bad.rego:13:"), "{stderr}");
    assert!(!stderr.contains("bad/bad.rego:1:1:"), "{stderr}");
    let (code, stdout, _) = regate(dir.path(), &["test", "bad"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("bad/bad.rego:13:"), "{stdout}");

    let kinds = dir.path().join("kinds");
    std::fs::create_dir_all(&kinds).unwrap();
    std::fs::write(
        kinds.join("k.rego"),
        "# METADATA\n# title: k\n# custom:\n#   id: k\n#   severity: low\n#   kinds: [Confgmap]\npackage regate.policies.k\n\ndeny contains \"x\" if { false }\n",
    )
    .unwrap();
    let (code, _, stderr) = regate(dir.path(), &["check", "kinds"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("kinds/k.rego:6:"), "{stderr}");
    assert!(stderr.contains("did you mean \"ConfigMap\""), "{stderr}");

    let config = dir.path().join("regate-bad.yaml");
    std::fs::write(
        &config,
        "mode: enforce\nenvironments:\n  default: production\n\n\n\npolicies:\n  no-such-policy:\n    action: warn\n",
    )
    .unwrap();
    let (code, _, stderr) = regate(dir.path(), &["check", "p", "--config", "regate-bad.yaml"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("regate-bad.yaml:8:"), "{stderr}");
}

/// `regate bench policies -o json` keeps the fields users' scripts read (`mix.mean_us`, each
/// fixture's `kind`, `mean_us`, `allowed`), and lists the policies that failed on a fixture
/// (`failed`), which `bench/opa_gatekeeper.py` sets against OPA's evaluation errors.
#[test]
fn bench_policies_json_keeps_its_fields_and_lists_failed_policies() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    let fixtures = dir.path().join("fixtures");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::create_dir_all(&fixtures).unwrap();
    std::fs::write(
        policies.join("broken.rego"),
        "# METADATA\n# title: fails on every ConfigMap\n# custom:\n#   id: broken\n#   severity: high\n#   kinds: [ConfigMap]\n#   action: deny\npackage regate.policies.broken\n\nimport rego.v1\n\ndeny contains \"x\" if to_number(input.request.object.data.n) > 1\n",
    )
    .unwrap();
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "operation": "CREATE", "namespace": "shop", "name": "c", "userInfo": {},
            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop"}, "data": {"n": "abc"}}}
    });
    std::fs::write(fixtures.join("c.json"), review.to_string()).unwrap();
    let (code, stdout, stderr) = regate(
        dir.path(),
        &[
            "bench",
            "policies",
            "--policies",
            "policies",
            "-f",
            "fixtures",
            "--iterations",
            "2",
            "--warmup",
            "0",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert!(report["mix"]["mean_us"].is_number(), "{report}");
    let fixture = &report["fixtures"][0];
    assert_eq!(fixture["kind"], "ConfigMap");
    assert!(fixture["mean_us"].is_number(), "{fixture}");
    assert_eq!(fixture["allowed"], false, "{fixture}");
    assert_eq!(
        fixture["failed"],
        serde_json::json!(["broken"]),
        "{fixture}"
    );
}

/// A builtin that panics (regorus 0.14's `strings.count(s, "")`) fails the policy that called
/// it, in every command, and nothing else: `eval` and `audit` report that policy's failure and
/// judge the rest, `test` reports that test as an error and runs the others, and no panic is
/// printed (its message may quote the input; for a Secret it is withheld).
#[test]
fn a_panicking_builtin_fails_its_policy_not_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("count.rego"),
        "# METADATA\n# title: Counts\n# custom:\n#   id: count-chars\n#   severity: low\n#   kinds: [ConfigMap, Secret]\n#   action: deny\npackage regate.policies.count_chars\n\nimport rego.v1\n\ndeny contains \"many\" if {\n\tstrings.count(input.request.object.metadata.name, \"\") > 1\n}\n",
    )
    .unwrap();
    std::fs::write(
        policies.join("count_test.rego"),
        "package regate.policies.count_chars_test\n\nimport data.regate.policies.count_chars\nimport rego.v1\n\ntest_panics if {\n\tcount_chars.deny with input as {\"request\": {\"object\": {\"metadata\": {\"name\": \"a\"}}}}\n}\n\ntest_runs_after if {\n\t1 == 1\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("objects.yaml"),
        format!("{CONFIGMAP}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: canary, namespace: shop}}\nstringData: {{TOKEN: panic-canary-7f3a}}\n"),
    )
    .unwrap();

    let (code, stdout, stderr) = regate(
        dir.path(),
        &[
            "eval",
            "-f",
            "objects.yaml",
            "--policies",
            "policies",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
    let results: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    assert_eq!(results.len(), 2, "{stdout}");
    for result in &results {
        let failures = result["failures"].as_array().unwrap();
        assert_eq!(failures.len(), 1, "{result}");
        assert_eq!(failures[0]["policy"], "count-chars");
        assert_eq!(failures[0]["reason"], "runtime_error");
    }
    assert!(
        results[0]["failures"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("the evaluator panicked at regorus-0.14.1/src/builtins/strings.rs"),
        "{stdout}"
    );
    assert!(
        results[1]["failures"][0]["detail"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "withheld for a Secret: {stdout}"
    );
    assert!(!stdout.contains("panic-canary-7f3a") && !stderr.contains("panic-canary-7f3a"));

    let (code, stdout, stderr) = regate(
        dir.path(),
        &["audit", "-f", "objects.yaml", "--policies", "policies"],
    );
    assert!(code == 0 || code == 1, "{stdout}{stderr}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
    assert!(stdout.contains("count-chars"), "{stdout}");

    let (code, stdout, stderr) = regate(dir.path(), &["test", "policies"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "test_panics: the evaluator panicked at regorus-0.14.1/src/builtins/strings.rs"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");
    assert!(!stderr.contains("panicked at"), "{stderr}");
}
