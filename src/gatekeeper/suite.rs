//! Gatekeeper test suites (`kind: Suite`, `test.gatekeeper.sh/v1alpha1`), run as `gator verify`
//! runs them, but through regate's one decision path: each case's object becomes a `Review`
//! and is judged by `admission::decision::judge` with the test's constraint as the only policy.
//!
//! A test's `expansion` (gator's field) names a file of ExpansionTemplates: each case's bare
//! object is judged, then the objects the templates make of it, their violations prefixed
//! `[Implied by <template>]`, all counted by the assertions together, as `gator verify` does.
//!
//! regate adds mutators to the format (gator has no field for them): a test's `mutators` lists
//! files of Gatekeeper mutators that change each case's object first, through `/mutate`'s
//! decision, as the mutating webhook does before the validating one, and the expanded objects
//! before they are judged, as Gatekeeper's validating webhook does; a case's `mutated` names
//! the object expected after them. A test with mutators may leave out template and constraint.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::admission::decision::{judge, Decision};
use crate::admission::review::{plural, ManifestRequest, Review};
use crate::config::Config;
use crate::gatekeeper::expansion::{self, ExpansionTemplate};
use crate::gatekeeper::mutation::{self, MutatorSet};
use crate::gatekeeper::{
    compile_constraint, with_inventory, Constraint, Inventory, Origin, Template,
};
use crate::manifest;
use crate::policy::bytecode::Strategy;
use crate::policy::compiled::CompiledPolicy;
use crate::policy::eval::Wants;
use crate::policy::mutators::Mutators;
use crate::policy::set::PolicySet;

pub const SUITE_FILE: &str = "suite.yaml";

/// Problems with the paths given to `verify` (anything inside a suite is a case failure).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no {SUITE_FILE} found under {0}")]
    NoSuites(PathBuf),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SuiteFile {
    kind: Option<String>,
    api_version: Option<String>,
    #[serde(default)]
    skip: bool,
    #[serde(default)]
    tests: Vec<TestSpec>,
}

#[derive(Debug, Deserialize)]
struct TestSpec {
    #[serde(default)]
    name: String,
    #[serde(default)]
    template: String,
    #[serde(default)]
    constraint: String,
    /// gator's: a file of ExpansionTemplates, relative to the suite.
    #[serde(default)]
    expansion: String,
    #[serde(default)]
    invalid: bool,
    #[serde(default)]
    skip: bool,
    #[serde(default)]
    cases: Vec<CaseSpec>,
    /// regate: files of Gatekeeper mutators applied to each case's object before it is judged.
    #[serde(default)]
    mutators: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct CaseSpec {
    #[serde(default)]
    name: String,
    #[serde(default)]
    object: String,
    #[serde(default)]
    inventory: Vec<String>,
    #[serde(default)]
    skip: bool,
    #[serde(default)]
    assertions: Vec<AssertionSpec>,
    /// regate: the file of the object expected after the test's mutators.
    #[serde(default)]
    mutated: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AssertionSpec {
    #[serde(default)]
    violations: Option<Value>,
    #[serde(default)]
    message: Option<String>,
}

/// How many violations an assertion expects (among those whose message matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    AtLeastOne,
    None,
    Exactly(u64),
}

#[derive(Debug, Clone)]
pub struct Assertion {
    pub expect: Expect,
    pub message: Option<regex::Regex>,
}

impl Assertion {
    fn parse(spec: &AssertionSpec) -> Result<Assertion, String> {
        let expect = match &spec.violations {
            None => Expect::AtLeastOne,
            Some(Value::String(s)) if s == "yes" => Expect::AtLeastOne,
            Some(Value::String(s)) if s == "no" => Expect::None,
            Some(Value::Number(n)) if n.as_u64().is_some() => {
                Expect::Exactly(n.as_u64().unwrap_or(0))
            }
            Some(other) => {
                return Err(format!(
                "assertion violations {other}: must be a non-negative integer, \"yes\" or \"no\""
            ))
            }
        };
        let message = match &spec.message {
            None => None,
            Some(m) => Some(
                regex::Regex::new(m)
                    .map_err(|e| format!("assertion message {m:?} is not a regex: {e}"))?,
            ),
        };
        Ok(Assertion { expect, message })
    }

    /// `Ok` when the messages satisfy the assertion, else why not.
    pub fn check(&self, messages: &[String]) -> Result<(), String> {
        let matching = messages
            .iter()
            .filter(|m| self.message.as_ref().is_none_or(|re| re.is_match(m)))
            .count() as u64;
        let containing = self
            .message
            .as_ref()
            .map(|re| format!(" matching {:?}", re.as_str()))
            .unwrap_or_default();
        let want = match self.expect {
            Expect::AtLeastOne if matching == 0 => "at least 1".to_string(),
            Expect::None if matching > 0 => "none".to_string(),
            Expect::Exactly(n) if matching != n => format!("exactly {n}"),
            _ => return Ok(()),
        };
        Err(format!(
            "got {matching} violations{containing} but want {want}; messages: {messages:?}"
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail(String),
    Skip,
}

/// The result of one case (or of a test that could not run its cases).
#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub suite: String,
    pub test: String,
    pub case: String,
    pub status: Status,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub outcomes: Vec<CaseOutcome>,
}

impl Report {
    fn count(&self, f: impl Fn(&Status) -> bool) -> usize {
        self.outcomes.iter().filter(|o| f(&o.status)).count()
    }
    pub fn passed(&self) -> usize {
        self.count(|s| *s == Status::Pass)
    }
    pub fn failed(&self) -> usize {
        self.count(|s| matches!(s, Status::Fail(_)))
    }
    pub fn skipped(&self) -> usize {
        self.count(|s| *s == Status::Skip)
    }
}

/// Suite files named by `paths`: files as given, directories searched for `suite.yaml`.
pub fn find_suites(paths: &[PathBuf]) -> Result<Vec<PathBuf>, VerifyError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let before = out.len();
            collect(path, &mut out)?;
            if out.len() == before {
                return Err(VerifyError::NoSuites(path.clone()));
            }
        } else if path.exists() {
            out.push(path.clone());
        } else {
            return Err(VerifyError::NotFound(path.clone()));
        }
    }
    Ok(out)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), VerifyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| VerifyError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.file_name().is_some_and(|n| n == SUITE_FILE) {
            out.push(path);
        }
    }
    Ok(())
}

/// Runs every suite under `paths`.
pub fn run(paths: &[PathBuf]) -> Result<Report, VerifyError> {
    let mut report = Report::default();
    for suite in find_suites(paths)? {
        report.outcomes.extend(run_suite(&suite));
    }
    Ok(report)
}

/// Runs one suite file; problems with the file itself are one failed outcome.
pub fn run_suite(path: &Path) -> Vec<CaseOutcome> {
    let suite_name = path.display().to_string();
    let fail = |test: &str, case: &str, why: String| CaseOutcome {
        suite: suite_name.clone(),
        test: test.to_string(),
        case: case.to_string(),
        status: Status::Fail(why),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![fail("", "", format!("cannot read suite: {e}"))],
    };
    if let Err(e) = crate::yaml_depth::check(&text) {
        return vec![fail("", "", format!("invalid suite: {e}"))];
    }
    let suite: SuiteFile = match serde_yaml::from_str(&text) {
        Ok(s) => s,
        Err(e) => return vec![fail("", "", format!("invalid suite: {e}"))],
    };
    if suite.kind.as_deref() != Some("Suite")
        || !suite
            .api_version
            .as_deref()
            .is_some_and(|v| v.starts_with("test.gatekeeper.sh/"))
    {
        return vec![fail(
            "",
            "",
            "not a Suite (kind: Suite, apiVersion: test.gatekeeper.sh/v1alpha1)".to_string(),
        )];
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for test in &suite.tests {
        let outcome = |case: &str, status: Status| CaseOutcome {
            suite: suite_name.clone(),
            test: test.name.clone(),
            case: case.to_string(),
            status,
        };
        if suite.skip || test.skip {
            out.extend(test.cases.iter().map(|c| outcome(&c.name, Status::Skip)));
            continue;
        }
        let additions = match load_additions(dir, test) {
            Ok(a) => a,
            Err(why) => {
                if test.cases.is_empty() {
                    out.push(outcome("", Status::Fail(why.clone())));
                }
                out.extend(
                    test.cases
                        .iter()
                        .map(|c| outcome(&c.name, Status::Fail(why.clone()))),
                );
                continue;
            }
        };
        if is_mutation_only(test) {
            for (i, case) in test.cases.iter().enumerate() {
                let status = if case.skip {
                    Status::Skip
                } else {
                    match mutated_object(dir, case, i, &additions.mutators) {
                        Ok(_) if !case.assertions.is_empty() => Status::Fail(
                            "assertions need a template and a constraint to judge with".into(),
                        ),
                        Ok(_) => Status::Pass,
                        Err(why) => Status::Fail(why),
                    }
                };
                out.push(outcome(&case.name, status));
            }
            continue;
        }
        let loaded = load_test(dir, test);
        if test.invalid {
            let status = match loaded {
                Err(Load::ConstraintRejected(_)) => Status::Pass,
                Err(Load::Other(why)) => {
                    Status::Fail(format!("want the constraint rejected, but: {why}"))
                }
                Ok(_) => Status::Fail(
                    "the constraint was accepted but the test says it is invalid".to_string(),
                ),
            };
            out.push(outcome("(invalid constraint)", status));
            continue;
        }
        let policy = match loaded {
            Ok(p) => p,
            Err(Load::ConstraintRejected(why) | Load::Other(why)) => {
                if test.cases.is_empty() {
                    out.push(outcome("", Status::Fail(why.clone())));
                }
                out.extend(
                    test.cases
                        .iter()
                        .map(|c| outcome(&c.name, Status::Fail(why.clone()))),
                );
                continue;
            }
        };
        for (i, case) in test.cases.iter().enumerate() {
            let status = if case.skip {
                Status::Skip
            } else {
                match run_case(dir, &policy, &additions, case, i) {
                    Ok(()) => Status::Pass,
                    Err(why) => Status::Fail(why),
                }
            };
            out.push(outcome(&case.name, status));
        }
    }
    out
}

enum Load {
    /// The template loaded but the constraint was refused (what `invalid: true` expects).
    ConstraintRejected(String),
    Other(String),
}

/// Reads a file that must hold exactly one object.
fn read_one(dir: &Path, rel: &str, what: &str) -> Result<(Value, Origin), String> {
    if rel.is_empty() {
        return Err(format!("the test names no {what}"));
    }
    let path = dir.join(rel);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    let file = path.display().to_string();
    let mut objects = manifest::parse_text(&text, &file).map_err(|e| e.to_string())?;
    if objects.len() != 1 {
        return Err(format!(
            "{what} {file} holds {} objects; exactly one is expected",
            objects.len()
        ));
    }
    let m = objects.remove(0);
    Ok((
        m.object,
        Origin {
            file,
            line: m.line,
            text,
        },
    ))
}

fn load_test(dir: &Path, test: &TestSpec) -> Result<CompiledPolicy, Load> {
    let (doc, origin) = read_one(dir, &test.template, "template").map_err(Load::Other)?;
    let template = Template::parse(&doc, origin)
        .map_err(|e| Load::Other(e.to_string()))?
        .compile(Duration::from_secs(5))
        .map_err(|e| {
            Load::Other(
                e.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
    let (doc, origin) = read_one(dir, &test.constraint, "constraint").map_err(Load::Other)?;
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != template.template.kind {
        return Err(Load::Other(format!(
            "constraint kind {kind:?} is not the template's kind {:?}",
            template.template.kind
        )));
    }
    let constraint = Constraint::parse(&doc, origin, &template.template)
        .map_err(|e| Load::ConstraintRejected(e.to_string()))?;
    compile_constraint(
        &template,
        &constraint,
        &constraint.name,
        &verify_config(),
        &Inventory::default(),
    )
    .map_err(|e| Load::Other(e.to_string()))
}

/// The config a suite runs under: nothing exempt, so only `spec.match` selects objects.
fn verify_config() -> Config {
    Config {
        exempt_namespaces: Vec::new(),
        ..Config::default()
    }
}

fn run_case(
    dir: &Path,
    policy: &CompiledPolicy,
    additions: &Additions,
    case: &CaseSpec,
    index: usize,
) -> Result<(), String> {
    let assertions = case
        .assertions
        .iter()
        .map(Assertion::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let object = mutated_object(dir, case, index, &additions.mutators)?;
    let decision = decide_case(dir, policy, additions, object, case, index, None)?.0;
    if let Some(f) = decision.failures.first() {
        return Err(format!(
            "evaluation failed: {}: {}",
            f.reason.describe(),
            f.detail
        ));
    }
    let messages: Vec<String> = decision
        .violations
        .iter()
        .map(|v| v.message.clone())
        .collect();
    if assertions.is_empty() {
        // A case without assertions expects the object to pass.
        return Assertion {
            expect: Expect::None,
            message: None,
        }
        .check(&messages);
    }
    for a in &assertions {
        a.check(&messages)?;
    }
    Ok(())
}

/// The decision on one case, with its constraint as the only policy and its inventory, on
/// `strategy` (the process's when `None`); and whether the policy ran on bytecode.
fn decide_case(
    dir: &Path,
    policy: &CompiledPolicy,
    additions: &Additions,
    object: Value,
    case: &CaseSpec,
    index: usize,
    strategy: Option<Strategy>,
) -> Result<(Decision, bool), String> {
    let mut inventory = Inventory::default();
    for rel in &case.inventory {
        let path = dir.join(rel);
        for m in manifest::read_file(&path).map_err(|e| e.to_string())? {
            inventory
                .add(&m.object)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    let policies =
        with_inventory(std::slice::from_ref(policy), &inventory).map_err(|e| e.to_string())?;
    let mut set = PolicySet::assemble(
        policies,
        Arc::new(verify_config()),
        inventory.namespace_labels(),
        Vec::new(),
        false,
    );
    if let Some(strategy) = strategy {
        set = set.with_strategy(strategy);
    }
    // gator expands bare objects only: an AdmissionReview case is reviewed as given.
    if !is_admission_review(&object) {
        set.expansions = additions.expansions.clone();
    }
    if !additions.mutators.is_empty() {
        set = set.with_mutators(Arc::new(additions.mutators.clone()));
    }
    let on_bytecode = !set.compiled_policies().is_empty();
    let review = review_of(object, &format!("verify-{index:04}"))?;
    Ok((judge(&set, &review, Wants::VALIDATE), on_bytecode))
}

/// One case of a suite, decided on one evaluation strategy: what the differential tests of
/// the backends compare.
#[derive(Debug, Clone)]
pub struct CaseDecision {
    pub test: String,
    pub case: String,
    /// Whether the case's constraint ran on bytecode.
    pub on_bytecode: bool,
    /// The decision, or why the case could not be decided (on any strategy alike).
    pub decision: Result<Decision, String>,
}

/// Every case of the suite at `path` that `verify` would run (skipped and `invalid` tests
/// left out), decided as `verify` decides it but on `strategy`.
pub fn decide_suite(path: &Path, strategy: Strategy) -> Vec<CaseDecision> {
    let suite: Option<SuiteFile> = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_yaml::from_str(&text).ok());
    let Some(suite) = suite.filter(|s| !s.skip) else {
        return Vec::new();
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for test in suite
        .tests
        .iter()
        .filter(|t| !t.skip && !t.invalid && !is_mutation_only(t))
    {
        let policy = load_test(dir, test);
        let additions = load_additions(dir, test);
        for (i, case) in test.cases.iter().enumerate().filter(|(_, c)| !c.skip) {
            let decided = match (&policy, &additions) {
                (Ok(p), Ok(a)) => mutated_object(dir, case, i, &a.mutators)
                    .and_then(|object| decide_case(dir, p, a, object, case, i, Some(strategy))),
                (Err(Load::ConstraintRejected(why) | Load::Other(why)), _) | (_, Err(why)) => {
                    Err(why.clone())
                }
            };
            let (decision, on_bytecode) = match decided {
                Ok((d, b)) => (Ok(d), b),
                Err(why) => (Err(why), false),
            };
            out.push(CaseDecision {
                test: test.name.clone(),
                case: case.name.clone(),
                on_bytecode,
                decision,
            });
        }
    }
    out
}

/// A test with mutators and neither template nor constraint checks mutation only.
fn is_mutation_only(test: &TestSpec) -> bool {
    !test.mutators.is_empty() && test.template.is_empty() && test.constraint.is_empty()
}

/// What a test adds to its constraint: mutators (regate's field) and ExpansionTemplates
/// (gator's `expansion`).
struct Additions {
    mutators: MutatorSet,
    expansions: Arc<crate::gatekeeper::expansion::ExpansionTemplates>,
}

fn load_additions(dir: &Path, test: &TestSpec) -> Result<Additions, String> {
    let paths: Vec<PathBuf> = test.mutators.iter().map(|m| dir.join(m)).collect();
    Ok(Additions {
        mutators: mutation::load_files(&paths)?,
        expansions: Arc::new(crate::gatekeeper::expansion::ExpansionTemplates(
            load_expansions(dir, &test.expansion)?,
        )),
    })
}

/// The ExpansionTemplates of a test's `expansion` file: one or more, and nothing else in the
/// file (gator's `ReadExpansions` refuses any other object).
fn load_expansions(dir: &Path, rel: &str) -> Result<Vec<ExpansionTemplate>, String> {
    if rel.is_empty() {
        return Ok(Vec::new());
    }
    let path = dir.join(rel);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read expansion {}: {e}", path.display()))?;
    let file = path.display().to_string();
    let objects = manifest::parse_text(&text, &file).map_err(|e| e.to_string())?;
    if objects.is_empty() {
        return Err(format!("expansion {file} holds no ExpansionTemplate"));
    }
    let mut templates: Vec<ExpansionTemplate> = Vec::with_capacity(objects.len());
    for m in objects {
        if !expansion::is_expansion_template(&m.object) {
            return Err(format!(
                "expansion {file}:{}: not an ExpansionTemplate ({}/v1beta1); the file may hold only ExpansionTemplates",
                m.line,
                expansion::EXPANSION_GROUP
            ));
        }
        let origin = Origin {
            file: file.clone(),
            line: m.line,
            text: text.clone(),
        };
        let template = ExpansionTemplate::parse(&m.object, &origin).map_err(|e| e.to_string())?;
        // gator upserts by name: a later template of the same name replaces the earlier one.
        templates.retain(|t| t.name != template.name);
        templates.push(template);
    }
    Ok(templates)
}

fn is_admission_review(object: &Value) -> bool {
    object.get("kind").and_then(Value::as_str) == Some("AdmissionReview")
        && object
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("admission.k8s.io/"))
}

/// The case's object after the test's mutators (as read when there are none), checked against
/// the case's `mutated` object when it names one. An AdmissionReview keeps its request, with the
/// mutated object in it.
fn mutated_object(
    dir: &Path,
    case: &CaseSpec,
    index: usize,
    mutators: &MutatorSet,
) -> Result<Value, String> {
    let (mut object, _) = read_one(dir, &case.object, "object")?;
    if mutators.is_empty() {
        if case.mutated.is_some() {
            return Err("the case names a mutated object but the test names no mutators".into());
        }
        return Ok(object);
    }
    let review = review_of(object.clone(), &format!("verify-{index:04}"))?;
    let set = PolicySet::assemble(
        Vec::new(),
        Arc::new(verify_config()),
        Default::default(),
        Vec::new(),
        false,
    )
    .with_mutators(Arc::new(mutators.clone()));
    let decision = judge(&set, &review, Wants::MUTATE);
    let secrets = review.secret_values();
    if let Some(f) = decision.failures.first() {
        return Err(secrets.scrub(&format!("mutation failed: [{}] {}", f.policy, f.describe())));
    }
    let Some(original) = review.object() else {
        return Err("the case has no object to mutate".into());
    };
    let mut mutated = original.clone();
    if let Some(patch) = &decision.patch {
        json_patch::patch(&mut mutated, patch)
            .map_err(|e| format!("the mutation's patch does not apply: {e}"))?;
    }
    let is_review = object.get("kind").and_then(Value::as_str) == Some("AdmissionReview");
    let subject = if is_review {
        object.pointer("/request/object")
    } else {
        Some(&object)
    };
    // A bare object's review carries the namespace regate presents it in; the case's file
    // (and its expected object) need not.
    if subject
        .and_then(|o| o.pointer("/metadata/namespace"))
        .is_none()
    {
        if let Some(meta) = mutated.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("namespace");
        }
    }
    if let Some(rel) = &case.mutated {
        let (expected, _) = read_one(dir, rel, "mutated object")?;
        if let Some(diff) = crate::policy::patch::diff(&expected, &mutated) {
            let diff = serde_json::to_string(&diff).unwrap_or_default();
            return Err(secrets.scrub(&format!(
                "the mutated object differs from {rel} (mutated by {:?}): JSON Patch from expected to mutated: {diff}",
                decision.mutations
            )));
        }
    }
    if is_review {
        if let Some(slot) = object.pointer_mut("/request/object") {
            *slot = mutated;
        }
        Ok(object)
    } else {
        Ok(mutated)
    }
}

/// The case's object as a review: an AdmissionReview's request as given (with what an
/// apiserver always sends filled in), or a bare object as Gatekeeper's audit sees it.
pub fn review_of(object: Value, uid: &str) -> Result<Review, String> {
    if !is_admission_review(&object) {
        let opts = ManifestRequest {
            uid: uid.to_string(),
            ..ManifestRequest::default()
        };
        return Review::from_manifest(object, &opts).map_err(|e| e.to_string());
    }
    let Some(Value::Object(mut request)) = object.get("request").cloned() else {
        return Err("the AdmissionReview has no request".to_string());
    };
    let subject = ["object", "oldObject"]
        .iter()
        .find_map(|k| request.get(*k).filter(|o| o.is_object()).cloned())
        .ok_or("the AdmissionRequest has neither object nor oldObject to review")?;
    let api_version = subject
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("v1");
    let kind = subject.get("kind").and_then(Value::as_str).unwrap_or("");
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    if request
        .get("uid")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        request.insert("uid".into(), json!(uid));
    }
    request
        .entry("kind")
        .or_insert_with(|| json!({"group": group, "version": version, "kind": kind}));
    request
        .entry("resource")
        .or_insert_with(|| json!({"group": group, "version": version, "resource": plural(kind)}));
    request
        .entry("operation")
        .or_insert_with(|| json!("CREATE"));
    Review::from_value(json!({
        "apiVersion": crate::admission::review::API_VERSION,
        "kind": "AdmissionReview",
        "request": request,
    }))
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assertion(violations: Option<Value>, message: Option<&str>) -> Assertion {
        Assertion::parse(&AssertionSpec {
            violations,
            message: message.map(str::to_string),
        })
        .unwrap()
    }

    #[test]
    fn assertions_count_matching_messages() {
        let msgs = vec![
            "container <a> bad".to_string(),
            "initContainer <b> bad".to_string(),
        ];
        assert!(assertion(None, None).check(&msgs).is_ok());
        assert!(assertion(Some(json!("no")), None).check(&msgs).is_err());
        assert!(assertion(Some(json!(2)), None).check(&msgs).is_ok());
        assert!(assertion(Some(json!(1)), Some("initContainer"))
            .check(&msgs)
            .is_ok());
        assert!(assertion(Some(json!(1)), Some("^container"))
            .check(&msgs)
            .is_ok());
        assert!(assertion(Some(json!(0)), Some("ephemeral"))
            .check(&msgs)
            .is_ok());
        assert!(assertion(Some(json!("yes")), Some("ephemeral"))
            .check(&msgs)
            .is_err());
        assert!(assertion(Some(json!("no")), None).check(&[]).is_ok());
        assert!(Assertion::parse(&AssertionSpec {
            violations: Some(json!("maybe")),
            message: None
        })
        .is_err());
        assert!(Assertion::parse(&AssertionSpec {
            violations: Some(json!(-1)),
            message: None
        })
        .is_err());
    }

    #[test]
    fn yaml_1_2_yes_and_no_are_strings() {
        let a: AssertionSpec = serde_yaml::from_str("violations: yes").unwrap();
        assert_eq!(a.violations, Some(json!("yes")));
        let b: AssertionSpec = serde_yaml::from_str("violations: no").unwrap();
        assert_eq!(b.violations, Some(json!("no")));
    }

    #[test]
    fn admission_review_is_completed_like_an_apiserver_request() {
        let ar = json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1beta1", "request": {
            "operation": "UPDATE",
            "object": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
        }});
        let review = review_of(ar, "u1").unwrap();
        assert!(!review.synthesized);
        assert_eq!(review.kind(), "Deployment");
        assert_eq!(review.operation(), "UPDATE");
        assert_eq!(review.request.resource.resource, "deployments");
        assert_eq!(review.uid(), "u1");
    }

    /// A suite's `mutators` change each case's object before the constraint judges it, a case's
    /// `mutated` is compared with the result, and a test may check mutation only.
    #[test]
    fn mutators_run_before_the_constraint() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "mutator.yaml",
            "apiVersion: mutations.gatekeeper.sh/v1\nkind: Assign\nmetadata:\n  name: non-root\nspec:\n  applyTo:\n  - groups: [\"\"]\n    kinds: [\"Pod\"]\n    versions: [\"v1\"]\n  location: \"spec.containers[name:*].securityContext.runAsNonRoot\"\n  parameters:\n    pathTests:\n    - subPath: \"spec.containers[name:*].securityContext.runAsNonRoot\"\n      condition: MustNotExist\n    assign:\n      value: true\n",
        );
        write(
            "template.yaml",
            "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata:\n  name: k8snonroot\nspec:\n  crd:\n    spec:\n      names:\n        kind: K8sNonRoot\n  targets:\n  - target: admission.k8s.gatekeeper.sh\n    rego: |\n      package k8snonroot\n      violation[{\"msg\": msg}] {\n        c := input.review.object.spec.containers[_]\n        not c.securityContext.runAsNonRoot\n        msg := sprintf(\"%v runs as root\", [c.name])\n      }\n",
        );
        write(
            "constraint.yaml",
            "apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sNonRoot\nmetadata:\n  name: non-root\n",
        );
        write(
            "pod.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: nginx\n",
        );
        write(
            "root.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: nginx\n    securityContext:\n      runAsNonRoot: false\n",
        );
        write(
            "expected.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n    image: nginx\n    securityContext:\n      runAsNonRoot: true\n",
        );
        write(
            "suite.yaml",
            "kind: Suite\napiVersion: test.gatekeeper.sh/v1alpha1\ntests:\n- name: judged\n  template: template.yaml\n  constraint: constraint.yaml\n  mutators: [mutator.yaml]\n  cases:\n  - name: defaulted\n    object: pod.yaml\n    mutated: expected.yaml\n    assertions:\n    - violations: no\n  - name: explicit-root\n    object: root.yaml\n    assertions:\n    - violations: 1\n  - name: wrong-expectation\n    object: root.yaml\n    mutated: expected.yaml\n- name: mutation-only\n  mutators: [mutator.yaml]\n  cases:\n  - name: defaulted\n    object: pod.yaml\n    mutated: expected.yaml\n- name: missing-mutators\n  mutators: [nowhere.yaml]\n  cases:\n  - name: any\n    object: pod.yaml\n",
        );
        let outcomes = run_suite(&dir.path().join("suite.yaml"));
        let status = |test: &str, case: &str| {
            outcomes
                .iter()
                .find(|o| o.test == test && o.case == case)
                .map(|o| o.status.clone())
                .unwrap()
        };
        assert_eq!(status("judged", "defaulted"), Status::Pass);
        assert_eq!(status("judged", "explicit-root"), Status::Pass);
        let Status::Fail(why) = status("judged", "wrong-expectation") else {
            panic!("{outcomes:?}");
        };
        assert!(
            why.contains("differs from expected.yaml") && why.contains("runAsNonRoot"),
            "{why}"
        );
        assert_eq!(status("mutation-only", "defaulted"), Status::Pass);
        let Status::Fail(why) = status("missing-mutators", "any") else {
            panic!("{outcomes:?}");
        };
        assert!(why.contains("cannot read mutators"), "{why}");
    }
}
