//! Differential test of the evaluation backends on Gatekeeper's policy library: every suite
//! case, every admission and bench fixture, and reviews generated from the library's examples
//! and the defaults' seeds (`common::generate`, poking where the templates' Rego looks) through the
//! whole library beside the default policies, decided on the interpreter, on per-policy
//! bytecode and on grouped passes. The
//! decisions must be identical (violations with their messages, warnings, failures, what was
//! evaluated), not merely agree on allow/deny. A template that diverges must be refused by the
//! bytecode compiler (`gatekeeper::bytecode::refusal`), never listed here as an exception.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use common::generate::{
    self, apply, by_kind, cases, first_disagreement, odd_values, Edit as Generated, Words,
};

use regate::admission::decision::{judge, Decision};
use regate::admission::review::Review;
use regate::config::Config;
use regate::environment::NamespaceLabels;
use regate::gatekeeper::suite;
use regate::policy::bytecode::{self, Strategy};
use regate::policy::eval::Wants;
use regate::policy::set::PolicySet;
use regate::policy::source::{self, PolicySource};

const STRATEGIES: [Strategy; 3] = [Strategy::Interpreter, Strategy::Compiled, Strategy::Grouped];

/// Library templates (all 49 have Rego) that must run on bytecode, a floor so that a change that
/// silently sends more of them to the interpreter is seen. All 49 today: `:=` bindings of
/// values that may be undefined are guarded in the program (`policy::undefined_bindings`), and
/// so are the keys of partial objects (the seccomp templates: `policy::builtins`).
const MIN_TEMPLATES_ON_BYTECODE: usize = 49;

fn library() -> Option<PathBuf> {
    common::corpus("gatekeeper-library/library")
}

/// A decision as the backends must agree on it: everything it serializes (timings excluded).
fn summary(d: &Decision) -> String {
    serde_json::to_string(d).unwrap()
}

#[test]
fn suite_cases_decide_alike_on_every_backend() {
    let Some(root) = library() else {
        return;
    };
    let suites = suite::find_suites(std::slice::from_ref(&root)).unwrap();
    let mut cases = 0;
    let mut divergences = Vec::new();
    let mut on_bytecode: BTreeMap<String, bool> = BTreeMap::new();
    for path in &suites {
        let dir = path
            .parent()
            .unwrap()
            .strip_prefix(&root)
            .unwrap()
            .display()
            .to_string();
        let per_strategy: Vec<Vec<suite::CaseDecision>> = STRATEGIES
            .iter()
            .map(|&s| suite::decide_suite(path, s))
            .collect();
        let reference = &per_strategy[0];
        cases += reference.len();
        for (strategy, decided) in STRATEGIES.iter().zip(&per_strategy).skip(1) {
            assert_eq!(decided.len(), reference.len(), "{dir} on {strategy:?}");
            for (want, got) in reference.iter().zip(decided) {
                let entry = on_bytecode.entry(dir.clone()).or_insert(false);
                *entry |= got.on_bytecode;
                let (w, g) = match (&want.decision, &got.decision) {
                    (Ok(w), Ok(g)) => (summary(w), summary(g)),
                    (w, g) => (format!("{w:?}"), format!("{g:?}")),
                };
                if w != g {
                    divergences.push(format!(
                        "{dir} / {} / {} on {strategy:?} (bytecode: {}):\n  interpreter: {w}\n  {strategy:?}: {g}",
                        want.test, want.case, got.on_bytecode
                    ));
                }
            }
        }
    }
    let compiled = on_bytecode.values().filter(|b| **b).count();
    let refused: Vec<&String> = on_bytecode
        .iter()
        .filter(|(_, b)| !**b)
        .map(|(d, _)| d)
        .collect();
    println!(
        "{cases} cases decided alike by {} backends; {compiled} of {} templates on bytecode; on the interpreter: {refused:?}",
        STRATEGIES.len(),
        on_bytecode.len()
    );
    assert!(cases >= 260, "only {cases} cases ran");
    assert!(
        divergences.is_empty(),
        "{} divergences:\n{}",
        divergences.len(),
        divergences.join("\n")
    );
    assert!(
        compiled >= MIN_TEMPLATES_ON_BYTECODE,
        "{compiled} templates on bytecode; on the interpreter: {refused:?}"
    );
}

/// The library's template directories (each with a suite and a `template.yaml`), in order.
fn template_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = suite::find_suites(&[root.to_path_buf()])
        .unwrap()
        .iter()
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .filter(|d| d.join("template.yaml").exists())
        .collect();
    dirs.sort();
    dirs
}

/// The sample constraints of a template directory (`samples/*/constraint.yaml`), in order.
fn sample_constraints(dir: &Path) -> Vec<PathBuf> {
    let mut samples: Vec<PathBuf> = std::fs::read_dir(dir.join("samples"))
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path().join("constraint.yaml"))
        .filter(|p| p.exists())
        .collect();
    samples.sort();
    samples
}

/// Every template and sample constraint of the library, one constraint per name (the first),
/// as policy sources beside the embedded defaults.
fn library_sources(root: PathBuf) -> Vec<PolicySource> {
    let mut templates = Vec::new();
    let mut constraints = Vec::new();
    let mut names = Vec::new();
    for dir in template_dirs(&root) {
        let template = dir.join("template.yaml");
        templates.push(PolicySource {
            name: template.display().to_string(),
            text: std::fs::read_to_string(&template).unwrap(),
        });
        for sample in sample_constraints(&dir) {
            let text = std::fs::read_to_string(&sample).unwrap();
            let doc: serde_json::Value = serde_yaml::from_str(&text).unwrap();
            let name = doc["metadata"]["name"].as_str().unwrap_or("").to_string();
            if names.contains(&name) {
                continue;
            }
            names.push(name);
            constraints.push(PolicySource {
                name: sample.display().to_string(),
                text,
            });
        }
    }
    let mut sources = source::embedded();
    sources.extend(templates);
    sources.extend(constraints);
    sources
}

/// The set built from `sources`, once per backend of [`STRATEGIES`]; `None` when it does not
/// build.
fn sets_of(sources: &[PolicySource]) -> Option<Vec<PolicySet>> {
    // The backends are compared on what they decide, never on how fast: a Pod of 300 containers
    // took the interpreter of this debug build past the default 2 s on a busy CI machine, and
    // that time limit alone made a divergence.
    let mut config = Config::default();
    config.limits.evaluation_timeout_ms = 120_000;
    let set = regate::catalog::build(sources, Arc::new(config), NamespaceLabels::default()).ok()?;
    Some(
        STRATEGIES
            .iter()
            .map(|&s| set.clone().with_strategy(s))
            .collect(),
    )
}

/// The first backend of `sets` (one per [`STRATEGIES`]) whose decision on `review` differs
/// from the interpreter's, with both decisions.
fn first_difference(sets: &[PolicySet], review: &Review) -> Option<String> {
    let want = summary(&judge(&sets[0], review, Wants::ALL));
    STRATEGIES
        .iter()
        .zip(sets)
        .skip(1)
        .find_map(|(strategy, set)| {
            let got = summary(&judge(set, review, Wants::ALL));
            (got != want)
                .then(|| format!("on {strategy:?}:\n  interpreter: {want}\n  {strategy:?}: {got}"))
        })
}

fn reviews(dir: &str) -> Vec<(String, Review)> {
    raw_reviews(dir)
        .into_iter()
        .map(|(name, raw)| {
            let review = Review::from_slice(&serde_json::to_vec(&raw).unwrap()).unwrap();
            (name, review)
        })
        .collect()
}

fn raw_reviews(dir: &str) -> Vec<(String, serde_json::Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = format!("{dir}/{}", p.file_name().unwrap().to_string_lossy());
            (
                name,
                serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn fixtures_decide_alike_through_the_whole_library() {
    let Some(root) = library() else {
        return;
    };
    let sets = sets_of(&library_sources(root)).unwrap();
    let compiled = &sets[1];
    let on_bytecode = compiled.compiled_policies().len();
    let refused: Vec<String> = compiled
        .policies
        .iter()
        .filter_map(|p| bytecode::refusal(p).map(|r| format!("{}: {r}", p.meta.id)))
        .collect();
    println!(
        "{on_bytecode} of {} policies on bytecode; refused:\n{}",
        compiled.policies.len(),
        refused.join("\n")
    );
    let mut all = reviews("fixtures/admission");
    all.extend(reviews("fixtures/bench"));
    let variants: Vec<(String, Review)> = ["fixtures/admission", "fixtures/bench"]
        .iter()
        .flat_map(|dir| raw_reviews(dir))
        .flat_map(|(name, raw)| container_shapes(&name, &raw))
        .collect();
    assert!(variants.len() >= 30, "only {} variants", variants.len());
    all.extend(variants);
    let mut divergences = Vec::new();
    for (name, review) in &all {
        let want = summary(&judge(&sets[0], review, Wants::ALL));
        for (strategy, set) in STRATEGIES.iter().zip(&sets).skip(1) {
            let got = summary(&judge(set, review, Wants::ALL));
            if got != want {
                divergences.push(format!(
                    "{name} on {strategy:?}:\n  interpreter: {want}\n  {strategy:?}: {got}"
                ));
            }
        }
    }
    assert!(
        divergences.is_empty(),
        "{} divergences:\n{}",
        divergences.len(),
        divergences.join("\n")
    );
}

/// Variants of a Pod review in the shapes that partial objects keyed by container name meet
/// (the seccomp templates' `input_containers[c.name] := c` over three lists): one name twice
/// with different or equal contents, a container without a name or with a null name, and more
/// containers than a checked object holds on bytecode (`policy::builtins`).
/// A change to a Pod's `spec`.
type Edit<'a> = dyn Fn(&mut serde_json::Value) + 'a;

fn container_shapes(name: &str, raw: &serde_json::Value) -> Vec<(String, Review)> {
    let Some(first) = raw["request"]["object"]["spec"]["containers"]
        .get(0)
        .cloned()
    else {
        return Vec::new();
    };
    let edits: [(&str, Box<Edit<'_>>); 6] = [
        (
            "same name, other image",
            Box::new(|spec| {
                let mut twin = first.clone();
                twin["image"] = "registry.example/other:1".into();
                spec["initContainers"] = serde_json::json!([twin]);
            }),
        ),
        (
            "same name, same container",
            Box::new(|spec| {
                spec["initContainers"] = serde_json::json!([first.clone()]);
            }),
        ),
        (
            "same name twice in one list",
            Box::new(|spec| {
                let mut twin = first.clone();
                twin["securityContext"] = serde_json::json!({"privileged": true});
                spec["containers"].as_array_mut().unwrap().push(twin);
            }),
        ),
        (
            "no name",
            Box::new(|spec| {
                spec["containers"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("name");
            }),
        ),
        (
            "null name",
            Box::new(|spec| {
                spec["containers"][0]["name"] = serde_json::Value::Null;
            }),
        ),
        (
            "300 containers",
            Box::new(|spec| {
                spec["containers"] = (0..300)
                    .map(|i| {
                        let mut c = first.clone();
                        c["name"] = format!("c{i}").into();
                        c
                    })
                    .collect();
            }),
        ),
    ];
    edits
        .iter()
        .map(|(what, edit)| {
            let mut raw = raw.clone();
            edit(&mut raw["request"]["object"]["spec"]);
            let review = Review::from_slice(&serde_json::to_vec(&raw).unwrap()).unwrap();
            (format!("{name} ({what})"), review)
        })
        .collect()
}

/// Namespaces the generated reviews move between: the library's samples exclude system ones.
const NAMESPACES: [&str; 4] = ["default", "kube-system", "production", "gatekeeper-system"];

/// Kubernetes objects of the library's examples under `root` (`samples/*/example_*.yaml`, not
/// the constraints) and every seed of the defaults' generator (`generate::seeds`: fixtures,
/// real apiserver payloads, Pod Security Admission and Kyverno corpora): what generation
/// starts from.
fn seed_objects(root: &Path) -> Vec<serde_json::Value> {
    let mut objects: Vec<serde_json::Value> = generate::objects(root)
        .into_iter()
        .filter(|o| {
            // Gatekeeper's own objects (templates, constraints, suites) are not what it judges.
            !o["apiVersion"].as_str().is_some_and(|v| {
                v.starts_with("templates.gatekeeper.sh/")
                    || v.starts_with("constraints.gatekeeper.sh/")
                    || v.starts_with("test.gatekeeper.sh/")
            })
        })
        .collect();
    objects.extend(generate::seeds());
    objects
}

#[test]
fn generated_reviews_decide_alike_through_the_whole_library() {
    let Some(root) = library() else {
        return;
    };
    let sources = library_sources(root.clone());
    let words = Words::of_rego(
        sources
            .iter()
            .filter(|s| s.name.ends_with("template.yaml"))
            .map(|s| s.text.as_str()),
    );
    let sets = sets_of(&sources).unwrap();
    let seeds = by_kind(seed_objects(&root));
    assert!(seeds.len() >= 10, "only {} kinds of seeds", seeds.len());
    let count = cases(4000, 1000);
    let disagreement = first_disagreement(&seeds, &words, &NAMESPACES, count, |review, _| {
        first_difference(&sets, review)
    });
    if let Some(d) = disagreement {
        panic!("backends disagree on a generated review: {d}");
    }
    println!("{count} generated reviews decided alike through the library on every backend");
}

/// Each template of the library with each of its sample constraints, alone, the constraint's
/// parameters edited as generated reviews are (the same edits, applied to the parameters where
/// the template's Rego looks), judging the template's own examples and the fixtures, edited:
/// the branches a template takes on its parameters (`MustRunAs`, `MayRunAs`, ranges, exempt
/// images) meet the objects that reach them.
#[test]
fn generated_parameters_decide_alike_template_by_template() {
    let Some(root) = library() else {
        return;
    };
    let dirs = template_dirs(&root);
    let mut constraints = 0u32;
    let judged = std::cell::Cell::new(0u32);
    // The generated cases shared out among the library's 69 sample constraints.
    let per_constraint = (cases(4000, 1000) / 69).max(1);
    for dir in &dirs {
        let template = PolicySource {
            name: dir.join("template.yaml").display().to_string(),
            text: std::fs::read_to_string(dir.join("template.yaml")).unwrap(),
        };
        let words = Words::of_rego([template.text.as_str()]);
        let values = odd_values(&words.fields);
        let seeds = by_kind(seed_objects(&dir.join("samples")));
        for sample in sample_constraints(dir) {
            constraints += 1;
            let constraint: serde_json::Value =
                serde_yaml::from_str(&std::fs::read_to_string(&sample).unwrap()).unwrap();
            // Sets by the parameters they were built with: most edits leave them alone.
            // Parameters the template's schema refuses fail the set on every backend alike:
            // nothing to compare (`None`).
            let built: std::cell::RefCell<BTreeMap<String, Option<Rc<Vec<PolicySet>>>>> =
                Default::default();
            // The constraint's parameters with `edits` applied, and its sets.
            let sets_for = |edits: &[Generated]| -> (String, Option<Rc<Vec<PolicySet>>>) {
                let mut edited = constraint.clone();
                if let Some(parameters) = edited["spec"].get_mut("parameters") {
                    for e in edits {
                        apply(parameters, e, &words, &values);
                    }
                }
                let key = serde_json::to_string(&edited["spec"]["parameters"]).unwrap();
                let sets = built
                    .borrow_mut()
                    .entry(key.clone())
                    .or_insert_with(|| {
                        let constraint = PolicySource {
                            name: sample.display().to_string(),
                            text: serde_yaml::to_string(&edited).unwrap(),
                        };
                        sets_of(&[template.clone(), constraint]).map(Rc::new)
                    })
                    .clone();
                (key, sets)
            };
            let disagreement = first_disagreement(
                &seeds,
                &words,
                &NAMESPACES,
                per_constraint,
                |review, edits| {
                    let (parameters, sets) = sets_for(edits);
                    let sets = sets?;
                    judged.set(judged.get() + 1);
                    first_difference(&sets, review)
                        .map(|d| format!("{} with parameters {parameters}\n{d}", sample.display()))
                },
            );
            if let Some(d) = disagreement {
                panic!("backends disagree: {d}");
            }
        }
    }
    assert!(constraints >= 60, "only {constraints} constraints");
    println!(
        "{constraints} constraints, {per_constraint} generated cases each: {} reviews judged on every backend",
        judged.get()
    );
}
