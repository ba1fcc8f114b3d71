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
    assert!(
        stdout.contains("10 policies OK (embedded defaults)"),
        "{stdout}"
    );
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
