//! Reviews generated from seed objects where policies look, for the differential tests: the
//! field names and string literals of the policies' own Rego are added, removed or given values
//! of every JSON type (null, numbers, empty and odd strings, lists and maps).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{corpus, repo};

use proptest::prelude::*;
use regate::admission::review::{ManifestRequest, Review};
use serde_json::{json, Value};

/// Field names and string literals the policies read: where generation pokes.
pub struct Words {
    /// Every name and literal.
    pub fields: Vec<String>,
    /// Those written like configuration keys (`LOG_LEVEL`).
    pub keys: Vec<String>,
}

impl Words {
    /// The names (`.runAsNonRoot`) and string literals (`"CORS_ALLOWED_ORIGINS"`) of Rego
    /// `texts`, comments left out.
    pub fn of_rego<'a>(texts: impl IntoIterator<Item = &'a str>) -> Words {
        let field = regex::Regex::new(r"\.([A-Za-z][A-Za-z0-9_]*)").unwrap();
        let literal = regex::Regex::new(r#""([A-Za-z_][A-Za-z0-9_.\-/]{1,40})""#).unwrap();
        let mut words = BTreeSet::new();
        for text in texts {
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
}

/// Values by JSON type (a class is drawn first, so null or a list is as likely as a string),
/// with strings shaped like what the policies compare against.
pub fn odd_values(vocabulary: &[String]) -> Vec<Vec<Value>> {
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
pub enum Edit {
    /// Replace the value at the n-th place of the object (a value class, a value in it).
    Set(usize, usize, usize),
    /// Add a key from the vocabulary to the n-th map (a value class, a value in it).
    Add(usize, usize, usize, usize),
    /// Remove the n-th place.
    Remove(usize),
}

pub fn edit_strategy() -> impl Strategy<Value = Edit> {
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

pub fn apply(object: &mut Value, edit: &Edit, words: &Words, values: &[Vec<Value>]) {
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
            let keys = if (at.ends_with("/data") || at.ends_with("/stringData"))
                && !words.keys.is_empty()
            {
                &words.keys
            } else {
                &words.fields
            };
            if keys.is_empty() {
                return;
            }
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

/// A review of `object` in `namespace`: a CREATE, or an UPDATE from the object to itself.
pub fn review_of(object: Value, namespace: &str, update: bool) -> Option<Review> {
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

/// Generated reviews per run: `ci` under `CI=true`, `elsewhere` otherwise;
/// `REGATE_DIFFERENTIAL_CASES` asks for more (or fewer).
pub fn cases(ci: u32, elsewhere: u32) -> u32 {
    let on_ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    std::env::var("REGATE_DIFFERENTIAL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if on_ci { ci } else { elsewhere })
}

/// The generator's seed: fixed, so that CI judges the same reviews on every run;
/// `REGATE_DIFFERENTIAL_SEED` (a number) explores others.
pub fn rng() -> proptest::test_runner::TestRng {
    use proptest::test_runner::{RngAlgorithm, TestRng};
    let seed = std::env::var("REGATE_DIFFERENTIAL_SEED")
        .ok()
        .and_then(|v| v.parse::<u8>().ok())
        .unwrap_or(7);
    TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32])
}

/// Judges `count` generated reviews and returns the first disagreement `check` reports (with
/// the object it was found on, shrunk by proptest): each a seed object of a kind drawn first
/// from `by_kind` (so that a few Services weigh as much as many Pods), edited one to five
/// times where `words` say policies look, in one of `namespaces`, as a CREATE or an UPDATE.
/// `check` also gets the edits, to make of the policies' parameters what it likes.
pub fn first_disagreement(
    by_kind: &[Vec<Value>],
    words: &Words,
    namespaces: &[&str],
    count: u32,
    check: impl Fn(&Review, &[Edit]) -> Option<String>,
) -> Option<String> {
    use proptest::test_runner::{Config, TestRunner};
    let values = odd_values(&words.fields);
    let config = Config {
        cases: count,
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(config, rng());
    let strategy = (
        (0..by_kind.len(), any::<usize>()),
        prop::collection::vec(edit_strategy(), 1..6),
        0..namespaces.len(),
        any::<bool>(),
    );
    let result = runner.run(&strategy, |((kind, seed), edits, ns, update)| {
        let mut object = by_kind[kind][seed % by_kind[kind].len()].clone();
        for e in &edits {
            apply(&mut object, e, words, &values);
        }
        let Some(review) = review_of(object.clone(), namespaces[ns], update) else {
            return Ok(());
        };
        dump(&review);
        match check(&review, &edits) {
            None => Ok(()),
            Some(d) => Err(TestCaseError::fail(format!(
                "object {}\n{d}",
                serde_json::to_string(&object).unwrap_or_default()
            ))),
        }
    });
    result.err().map(|e| e.to_string())
}

/// With `REGATE_DIFFERENTIAL_DUMP=DIR`, writes the object of each generated review to `DIR`, for
/// other engines to judge (`bench/opa_gatekeeper.py --objects DIR` asks OPA).
fn dump(review: &Review) {
    let Some(dir) = std::env::var_os("REGATE_DIFFERENTIAL_DUMP") else {
        return;
    };
    let Some(object) = review.object() else {
        return;
    };
    let text = serde_json::to_string(object).unwrap();
    let name = format!("{:016x}.json", {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        text.hash(&mut h);
        h.finish()
    });
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(Path::new(&dir).join(name), text).unwrap();
}

/// `objects` grouped by kind, for [`first_disagreement`].
pub fn by_kind(objects: impl IntoIterator<Item = Value>) -> Vec<Vec<Value>> {
    let mut by_kind: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for object in objects {
        by_kind
            .entry(object["kind"].as_str().unwrap_or("").to_string())
            .or_default()
            .push(object);
    }
    by_kind.into_values().collect()
}

pub fn files(dir: &Path, exts: &[&str], out: &mut Vec<PathBuf>) {
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
pub fn objects(dir: &Path) -> Vec<Value> {
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

/// The objects the generator starts from: every review's of the fixtures and of the real
/// apiserver payloads, the manifests of the fixtures and of the YAML cases, the Pod Security
/// Admission and Kyverno corpora.
pub fn seeds() -> Vec<Value> {
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
