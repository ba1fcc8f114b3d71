//! Differential test: every evaluation backend gives the interpreter's answer.
//!
//! The bytecode VM is used only where it is proven equal to the interpreter. This harness is
//! that proof for the default policies: it judges every seed review (the fixtures, the YAML
//! cases' objects, the Pod Security Admission and Kyverno corpora, the real apiserver payloads)
//! and thousands of reviews generated from them, on every strategy, and fails on the first
//! difference in verdict, messages, warnings, failures or patch.
//!
//! Generated reviews change the seeds where the policies look: the field names and string
//! literals that appear in the policies' own Rego (`runAsNonRoot`, `CORS_ALLOWED_ORIGINS`, …)
//! are added, removed or given values of every JSON type (null, numbers, empty and odd strings,
//! lists and maps), and the namespace moves between environments. The generator is proptest's,
//! with a fixed seed so that CI judges the same reviews on every run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{corpus, repo};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};
use regate::admission::decision::{judge, Decision};
use regate::admission::review::{ManifestRequest, Review};
use regate::config::Config;
use regate::environment::NamespaceLabels;
use regate::policy::bytecode::Strategy as Backend;
use regate::policy::eval::Wants;
use regate::policy::set::PolicySet;
use regate::policy::source;
use serde_json::{json, Value};

const CONFIG: &str = "environments:\n  default: production\n  namespaces: { prod: production, staging: staging, dev: development }\n";
const NAMESPACES: [&str; 4] = ["dev", "staging", "prod", "elsewhere"];
/// Generated reviews per run (each judged on every strategy): 3,000 in CI, 500 elsewhere;
/// `REGATE_DIFFERENTIAL_CASES` asks for more (or fewer).
fn generated() -> u32 {
    let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    std::env::var("REGATE_DIFFERENTIAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if ci { 3000 } else { 500 })
}

fn files(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, exts, out);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| exts.contains(&e))
        {
            out.push(p);
        }
    }
}

/// Kubernetes objects (not reviews) from manifests under `dir`.
fn objects(dir: &Path) -> Vec<Value> {
    let mut paths = Vec::new();
    files(dir, &["yaml", "yml"], &mut paths);
    paths
        .iter()
        .filter_map(|p| regate::manifest::read_file(p).ok())
        .flatten()
        .map(|m| m.object)
        .filter(|o| o.get("kind").and_then(Value::as_str).is_some() && o.get("metadata").is_some())
        .filter(|o| o.get("kind").and_then(Value::as_str) != Some("AdmissionReview"))
        .collect()
}

/// The object of every seed review: what the generator starts from.
fn seeds() -> Vec<Value> {
    let mut out = Vec::new();
    let mut reviews = Vec::new();
    for dir in ["fixtures/admission", "fixtures/bench"] {
        files(&repo().join(dir), &["json"], &mut reviews);
    }
    if let Some(dir) = corpus("admissionreview") {
        files(&dir, &["json"], &mut reviews);
    }
    for p in reviews {
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let request = v.get("request").unwrap_or(&v);
        for field in ["object", "oldObject"] {
            if let Some(o) = request.get(field).filter(|o| o.is_object()) {
                out.push(o.clone());
            }
        }
    }
    out.extend(objects(&repo().join("fixtures/manifests")));
    out.extend(objects(&repo().join("tests/policies")));
    for rel in ["pod-security-admission", "kyverno-policies/pod-security"] {
        if let Some(dir) = corpus(rel) {
            out.extend(objects(&dir));
        }
    }
    out
}

/// Field names and string literals the default policies read: where generation pokes.
struct Words {
    /// Every name and literal.
    fields: Vec<String>,
    /// Those written like configuration keys (`LOG_LEVEL`).
    keys: Vec<String>,
}

fn vocabulary() -> Words {
    let mut paths = Vec::new();
    files(&repo().join("policies"), &["rego"], &mut paths);
    let field = regex::Regex::new(r"\.([A-Za-z][A-Za-z0-9_]*)").unwrap();
    let literal = regex::Regex::new(r#""([A-Za-z_][A-Za-z0-9_.\-/]{1,40})""#).unwrap();
    let mut words = BTreeSet::new();
    for p in paths
        .iter()
        .filter(|p| !p.to_string_lossy().ends_with("_test.rego"))
    {
        let text = std::fs::read_to_string(p).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for c in field.captures_iter(line) {
                words.insert(c[1].to_string());
            }
            for c in literal.captures_iter(line) {
                words.insert(c[1].to_string());
            }
        }
    }
    let fields: Vec<String> = words.into_iter().collect();
    let keys = fields
        .iter()
        .filter(|w| {
            w.len() > 2
                && w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .cloned()
        .collect();
    Words { fields, keys }
}

/// Values by JSON type (a class is drawn first, so null or a list is as likely as a string),
/// with strings shaped like what the policies compare against.
fn odd_values(vocabulary: &[String]) -> Vec<Vec<Value>> {
    vec![
        vec![Value::Null],
        vec![json!(true), json!(false)],
        vec![json!(0), json!(-1), json!(1000), json!(2.5)],
        vec![
            json!(""),
            json!("true"),
            json!("false"),
            json!("0"),
            json!("*"),
            json!("https://a.example.com,*"),
            json!("http://localhost:3000"),
            json!("https://shop.example.com"),
            json!("changeme"),
            json!("x".repeat(80)),
            json!("é\u{0}\n\"'"),
            json!("ALL"),
            json!("debug"),
        ],
        vocabulary.iter().map(|w| json!(w)).collect(),
        vec![
            json!([]),
            json!(["ALL"]),
            json!(["NET_ADMIN", 7]),
            json!([{}]),
        ],
        vec![
            json!({}),
            json!({"runAsNonRoot": false}),
            json!({"a": null}),
        ],
    ]
}

fn pick(classes: &[Vec<Value>], class: usize, v: usize) -> &Value {
    let c = &classes[class % classes.len()];
    &c[v % c.len()]
}

#[derive(Debug, Clone)]
enum Edit {
    /// Replace the value at the n-th place of the object (a value class, a value in it).
    Set(usize, usize, usize),
    /// Add a key from the vocabulary to the n-th map (a value class, a value in it).
    Add(usize, usize, usize, usize),
    /// Remove the n-th place.
    Remove(usize),
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(p, c, v)| Edit::Set(p, c, v)),
        (
            any::<usize>(),
            any::<usize>(),
            any::<usize>(),
            any::<usize>()
        )
            .prop_map(|(p, k, c, v)| Edit::Add(p, k, c, v)),
        any::<usize>().prop_map(Edit::Remove),
    ]
}

/// Every JSON pointer below the object's root, in document order.
fn places(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                places(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                places(c, p, out);
            }
        }
        _ => {}
    }
}

fn apply(object: &mut Value, edit: &Edit, words: &Words, values: &[Vec<Value>]) {
    let mut all = Vec::new();
    places(object, String::new(), &mut all);
    // Identity is kept: a review must still be one (kind and apiVersion are what route it).
    all.retain(|p| p != "/kind" && p != "/apiVersion" && p != "/metadata");
    if all.is_empty() {
        return;
    }
    match *edit {
        Edit::Set(p, c, v) => {
            if let Some(slot) = object.pointer_mut(&all[p % all.len()]) {
                *slot = pick(values, c, v).clone();
            }
        }
        Edit::Add(p, k, c, v) => {
            let maps: Vec<&String> = all
                .iter()
                .filter(|p| object.pointer(p).is_some_and(Value::is_object))
                .collect();
            if maps.is_empty() {
                return;
            }
            let at = maps[p % maps.len()].clone();
            // A ConfigMap's or Secret's keys are what its policies look up by name.
            let keys = if at.ends_with("/data") || at.ends_with("/stringData") {
                &words.keys
            } else {
                &words.fields
            };
            if let Some(Value::Object(m)) = object.pointer_mut(&at) {
                m.insert(keys[k % keys.len()].clone(), pick(values, c, v).clone());
            }
        }
        Edit::Remove(p) => {
            let at = &all[p % all.len()];
            let (parent, key) = at.rsplit_once('/').unwrap();
            match object.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&key.replace("~1", "/").replace("~0", "~"));
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn review_of(object: Value, namespace: &str, update: bool) -> Option<Review> {
    let opts = ManifestRequest {
        namespace: Some(namespace.to_string()),
        operation: if update { "UPDATE" } else { "CREATE" }.to_string(),
        old_object: update.then(|| object.clone()),
        ..ManifestRequest::default()
    };
    let mut object = object;
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".to_string(), json!(namespace));
    }
    Review::from_manifest(object, &opts).ok()
}

/// What a decision says, without timings.
fn summary(d: &Decision) -> String {
    let failures: Vec<String> = d
        .failures
        .iter()
        .map(|f| format!("{}:{:?}", f.policy, f.reason))
        .collect();
    format!(
        "allowed={} violations={:?} warn={:?} failures={:?} patch={}",
        d.allowed,
        d.violations,
        d.warn_results,
        failures,
        d.patch
            .as_ref()
            .map(|p| serde_json::to_string(p).unwrap_or_default())
            .unwrap_or_default()
    )
}

struct Backends {
    reference: PolicySet,
    others: Vec<(&'static str, PolicySet)>,
}

impl Backends {
    fn new() -> Backends {
        let config = Config::parse(CONFIG, Path::new("regate.yaml")).unwrap();
        let (sources, _) = source::resolve(&repo().join("policies"), false).unwrap();
        let set =
            regate::catalog::build(&sources, Arc::new(config), NamespaceLabels::default()).unwrap();
        Backends {
            reference: set.clone().with_strategy(Backend::CloneEach),
            others: vec![
                (
                    "interpreter",
                    set.clone().with_strategy(Backend::Interpreter),
                ),
                ("compiled", set.clone().with_strategy(Backend::Compiled)),
                ("grouped", set.with_strategy(Backend::Grouped)),
            ],
        }
    }

    /// The first backend that disagrees with a fresh interpreter, with both answers.
    fn disagreement(&self, review: &Review) -> Option<String> {
        let want = summary(&judge(&self.reference, review, Wants::ALL));
        for (label, set) in &self.others {
            let got = summary(&judge(set, review, Wants::ALL));
            if got != want {
                return Some(format!("{label}:\n  got  {got}\n  want {want}"));
            }
        }
        None
    }
}

#[test]
fn every_backend_agrees_on_the_seeds() {
    let backends = Backends::new();
    let seeds = seeds();
    assert!(seeds.len() >= 100, "only {} seeds", seeds.len());
    let mut judged = 0;
    let mut failures = Vec::new();
    for (i, object) in seeds.iter().enumerate() {
        // Each seed in two environments, rotating, so every environment sees every kind.
        for ns in [NAMESPACES[i % 4], NAMESPACES[(i + 1) % 4]] {
            let Some(review) = review_of(object.clone(), ns, i % 3 == 0) else {
                continue;
            };
            judged += 1;
            if let Some(d) = backends.disagreement(&review) {
                failures.push(format!("seed {i} ({}) in {ns}: {d}", object["kind"]));
            }
        }
    }
    println!(
        "{} seeds, {judged} reviews judged on every backend",
        seeds.len()
    );
    assert!(
        failures.is_empty(),
        "{} disagreements, first: {}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn every_backend_agrees_on_generated_reviews() {
    let backends = Backends::new();
    let seeds = seeds();
    let words = vocabulary();
    let values = odd_values(&words.fields);
    // Seeds by kind, a kind drawn first: the few ConfigMaps weigh as much as the many Pods.
    let mut by_kind: std::collections::BTreeMap<String, Vec<&Value>> = Default::default();
    for s in &seeds {
        by_kind
            .entry(s["kind"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(s);
    }
    let by_kind: Vec<Vec<&Value>> = by_kind.into_values().collect();
    let config = PropConfig {
        cases: generated(),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..PropConfig::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let strategy = (
        (0..by_kind.len(), any::<usize>()),
        prop::collection::vec(edit_strategy(), 1..6),
        0..NAMESPACES.len(),
        any::<bool>(),
    );
    let result = runner.run(&strategy, |((kind, seed), edits, ns, update)| {
        let mut object = by_kind[kind][seed % by_kind[kind].len()].clone();
        for e in &edits {
            apply(&mut object, e, &words, &values);
        }
        let Some(review) = review_of(object.clone(), NAMESPACES[ns], update) else {
            return Ok(());
        };
        if let Some(d) = backends.disagreement(&review) {
            return Err(TestCaseError::fail(format!(
                "object {}\n{d}",
                serde_json::to_string(&object).unwrap_or_default()
            )));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("backends disagree on a generated review: {e}");
    }
    println!("{} generated reviews judged on every backend", generated());
}
