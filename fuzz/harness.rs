//! The whole admission path under test, shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`)
//! and the stable mutation loop (`tests/properties.rs`):
//!
//! body bytes ──► `server::app::decide` (Review::from_body → judge → respond) ──► AdmissionReview
//!
//! [`Harness::check`] runs one body through `/validate` and `/mutate` and checks what must hold
//! for any input: an HTTP status of 200 or 400, a well-formed `admission.k8s.io/v1`
//! AdmissionReview, the request's uid echoed whenever the body carries one, a 400 that denies,
//! `/mutate` never denying, its JSONPatch applying to the object, and a second `/mutate` of the
//! patched object asking for nothing more. A violation is returned as a [`Finding`]; a panic
//! propagates (the fuzzers and the tests catch it as a crash).
//!
//! The mutators are deterministic functions of a [`Source`] of choices: a seeded PRNG for the
//! stable loop, the fuzzer's input bytes for cargo-fuzz.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use regate::admission::decision::judge;
use regate::admission::respond::Endpoint;
use regate::admission::review::Review;
use regate::environment::NamespaceLabels;
use regate::metrics::Metrics;
use regate::policy::eval::Wants;
use regate::policy::reload::{PolicySources, PolicyStore};
use regate::server::app::{decide, AppState};
use serde_json::{json, Map, Value};

/// The configuration the fixtures' expectations assume, with a short evaluation budget so that
/// a pathological input costs at most a second.
pub const CONFIG: &str = r#"
environments:
  default: production
  namespaces: { prod: production, staging: staging, dev: development }
limits:
  evaluationTimeoutMs: 1000
"#;

/// No single body may take longer than this through both endpoints (the evaluation budget is
/// one second per request): anything slower is reported as a hang.
pub const HANG: Duration = Duration::from_secs(30);

/// A property that did not hold.
#[derive(Debug, Clone)]
pub struct Finding {
    pub what: String,
    pub body: Vec<u8>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: String = String::from_utf8_lossy(&self.body)
            .chars()
            .take(600)
            .collect();
        write!(
            f,
            "{} (body: {} bytes: {shown})",
            self.what,
            self.body.len()
        )
    }
}

/// What the inputs exercised: statuses, decisions, patches, policy failures.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub executions: u64,
    pub bad_request: u64,
    pub allowed: u64,
    pub denied: u64,
    pub patched: u64,
    pub uid_checked: u64,
    /// `[policy] reason` of evaluation failures surfaced in responses (fail closed).
    pub failures: BTreeMap<String, u64>,
    pub slowest: Duration,
}

impl Tally {
    pub fn merge(&mut self, other: &Tally) {
        self.executions += other.executions;
        self.bad_request += other.bad_request;
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.patched += other.patched;
        self.uid_checked += other.uid_checked;
        for (k, v) in &other.failures {
            *self.failures.entry(k.clone()).or_default() += v;
        }
        self.slowest = self.slowest.max(other.slowest);
    }

    pub fn summary(&self) -> String {
        let failures: Vec<String> = self
            .failures
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!(
            "{} executions: {} answered 400, {} allowed, {} denied, {} patched, uid checked on {}; \
             slowest {:?}; evaluation failures: [{}]",
            self.executions,
            self.bad_request,
            self.allowed,
            self.denied,
            self.patched,
            self.uid_checked,
            self.slowest,
            failures.join(", ")
        )
    }
}

pub struct Harness {
    pub state: AppState,
    _config: PathBuf,
}

impl Harness {
    /// A policy store built from `policies` with [`CONFIG`], as `serve` builds it.
    pub fn new(policies: &Path) -> Harness {
        Self::with_config(policies, CONFIG)
    }

    pub fn with_config(policies: &Path, config: &str) -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let path = std::env::temp_dir().join(format!(
            "regate-harness-{}-{}.yaml",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::write(&path, config).unwrap();
        let sources = PolicySources {
            dir: policies.to_path_buf(),
            include_defaults: false,
            config: Some(path.clone()),
            yaml_loader: regate::catalog::YAML_LOADERS,
        };
        let metrics = Metrics::new().unwrap();
        let store = PolicyStore::new(sources, NamespaceLabels::default(), Some(metrics.clone()))
            .unwrap_or_else(|e| panic!("cannot build the policy set: {e}"));
        let state = AppState::new(Arc::new(store), metrics, None);
        Harness {
            state,
            _config: path,
        }
    }

    /// One body through `/validate` then `/mutate`, with every invariant checked.
    pub fn check(&self, body: &[u8]) -> Result<Tally, Finding> {
        let mut tally = Tally {
            executions: 1,
            ..Tally::default()
        };
        let fail = |what: String| Finding {
            what,
            body: body.to_vec(),
        };
        let uid = expected_uid(body);
        let started = Instant::now();
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            let (status, review) = decide(&self.state, endpoint, body, Instant::now());
            let status = status.as_u16();
            let answer = serde_json::to_value(&review)
                .map_err(|e| fail(format!("answer does not serialise: {e}")))?;
            // Round trip through bytes, as the apiserver reads it.
            let bytes = serde_json::to_vec(&answer)
                .map_err(|e| fail(format!("answer does not serialise: {e}")))?;
            let answer: Value = serde_json::from_slice(&bytes)
                .map_err(|e| fail(format!("answer is not JSON: {e}")))?;
            check_answer(&answer, status, endpoint, uid.as_deref()).map_err(fail)?;
            if uid.is_some() {
                tally.uid_checked += 1;
            }
            let response = &answer["response"];
            match (endpoint, status) {
                (_, 400 | 413) => tally.bad_request += 1,
                (Endpoint::Validate, _) => {
                    if response["allowed"] == true {
                        tally.allowed += 1;
                    } else {
                        tally.denied += 1;
                    }
                    let message = response["status"]["message"].as_str().unwrap_or("");
                    for failure in failures_in(message) {
                        *tally.failures.entry(failure).or_default() += 1;
                    }
                }
                (Endpoint::Mutate, _) => {
                    if let Some(patch) = patch_of(response).map_err(fail)? {
                        tally.patched += 1;
                        self.check_patch(body, &patch).map_err(fail)?;
                    }
                }
            }
        }
        let elapsed = started.elapsed();
        tally.slowest = elapsed;
        if elapsed > HANG {
            return Err(fail(format!("took {elapsed:?} through both endpoints")));
        }
        Ok(tally)
    }

    /// The patch applies to `request.object`, and the patched object needs no further patch.
    fn check_patch(&self, body: &[u8], patch: &json_patch::Patch) -> Result<(), String> {
        let input: Value = serde_json::from_slice(body)
            .map_err(|e| format!("patched a body that is not JSON: {e}"))?;
        let mut object = input["request"]["object"].clone();
        json_patch::patch(&mut object, patch).map_err(|e| {
            format!(
                "/mutate's patch does not apply to the object: {e}; patch {}",
                json!(patch)
            )
        })?;
        // Idempotence holds when every policy could judge the object: a policy that failed on
        // the first pass contributed nothing to the patch and may add on the second.
        let set = self.state.store.current();
        let review = Review::from_slice(body)
            .map_err(|e| format!("patched a body that does not parse: {e}"))?;
        if !judge(&set, &review, Wants::MUTATE).failures.is_empty() {
            return Ok(());
        }
        let mut again = input.clone();
        again["request"]["object"] = object;
        let again = serde_json::to_vec(&again).map_err(|e| e.to_string())?;
        let review = Review::from_slice(&again)
            .map_err(|e| format!("the patched object no longer parses: {e}"))?;
        let second = judge(&set, &review, Wants::MUTATE);
        if !second.failures.is_empty() {
            return Ok(());
        }
        if let Some(p) = second.patch {
            return Err(format!(
                "/mutate is not idempotent: after {} a second pass asks for {}",
                json!(patch),
                json!(p)
            ));
        }
        Ok(())
    }
}

static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The uid the answer must echo: the body's `request.uid`, when it is a non-empty string. A body
/// serde_json cannot build a value from (nested deeper than its limit, a number out of range)
/// still names its uid when the rest of it is well-formed JSON syntax.
pub fn expected_uid(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        request: Option<ProbeRequest>,
    }
    #[derive(serde::Deserialize)]
    struct ProbeRequest {
        uid: Option<String>,
    }
    let uid = match serde_json::from_slice::<Value>(body) {
        Ok(value) => value.get("request")?.get("uid")?.as_str()?.to_string(),
        Err(_) => serde_json::from_slice::<Probe>(body).ok()?.request?.uid?,
    };
    Some(uid).filter(|uid| !uid.is_empty())
}

/// The invariants of one answer.
pub fn check_answer(
    answer: &Value,
    status: u16,
    endpoint: Endpoint,
    uid: Option<&str>,
) -> Result<(), String> {
    // 413: a body too large to parse (more JSON values than the limit allows).
    if status != 200 && status != 400 && status != 413 {
        return Err(format!("HTTP status {status}: {answer}"));
    }
    if answer["apiVersion"] != "admission.k8s.io/v1" || answer["kind"] != "AdmissionReview" {
        return Err(format!(
            "not an admission.k8s.io/v1 AdmissionReview: {answer}"
        ));
    }
    let response = &answer["response"];
    let Some(allowed) = response["allowed"].as_bool() else {
        return Err(format!("response.allowed is not a boolean: {answer}"));
    };
    if let Some(uid) = uid {
        if response["uid"] != uid {
            return Err(format!("uid {uid:?} not echoed: {}", response["uid"]));
        }
    }
    if status != 200 {
        if allowed {
            return Err(format!("a {status} answer allows: {answer}"));
        }
        if response["status"]["code"] != status {
            return Err(format!(
                "a {status} answer without status.code {status}: {answer}"
            ));
        }
        if response["status"]["message"]
            .as_str()
            .unwrap_or("")
            .is_empty()
        {
            return Err(format!("a {status} answer without a message: {answer}"));
        }
    } else {
        if endpoint == Endpoint::Mutate && !allowed {
            return Err(format!("/mutate denied: {answer}"));
        }
        if endpoint == Endpoint::Validate && response.get("patch").is_some_and(|p| !p.is_null()) {
            return Err(format!("/validate answered with a patch: {answer}"));
        }
        if !allowed && response["status"]["code"] != 403 {
            return Err(format!("a denial without status.code 403: {answer}"));
        }
    }
    Ok(())
}

/// `[policy] reason` for each "policy evaluation failed" in a deny message.
pub fn failures_in(message: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in message.split("; ") {
        if let Some((head, rest)) = part.split_once("] policy evaluation failed: ") {
            let reason = rest.split(':').next().unwrap_or(rest);
            out.push(format!("{}] {reason}", head));
        }
    }
    out
}

/// Decodes `/mutate`'s patch (kube-core writes the bytes as an array of numbers; base64 is read
/// too, as the apiserver's decoder would).
pub fn patch_of(response: &Value) -> Result<Option<json_patch::Patch>, String> {
    use base64::Engine as _;
    // As the AdmissionReview API documents it: a string, the base64 of a JSON Patch.
    let bytes: Vec<u8> = match &response["patch"] {
        Value::Null => return Ok(None),
        Value::String(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("patch is not base64: {e}"))?,
        other => return Err(format!("patch is not a base64 string: {other}")),
    };
    if response["patchType"] != "JSONPatch" {
        return Err(format!(
            "a patch without patchType JSONPatch: {}",
            response["patchType"]
        ));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| format!("patch is not a JSONPatch: {e}"))
}

// ------------------------------------------------------------------------------------------
// Seeds
// ------------------------------------------------------------------------------------------

/// Every seed AdmissionReview: `fixtures/admission`, `fixtures/bench` and the apiserver corpus in
/// `../shared/corpora/admissionreview` (bare requests are wrapped), sorted by path.
pub fn seeds(repo: &Path) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let dirs = [
        repo.join("fixtures/admission"),
        repo.join("fixtures/bench"),
        repo.join("../shared/corpora/admissionreview"),
    ];
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let Ok(mut value) = serde_json::from_slice::<Value>(&text) else {
                continue;
            };
            if value.get("request").is_none() {
                value = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": value});
            }
            out.push((path.display().to_string(), value));
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Sources of choices
// ------------------------------------------------------------------------------------------

pub trait Source {
    fn next_u32(&mut self) -> u32;

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            self.next_u32() as usize % n
        }
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.next_u32() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// xorshift64*: a fixed seed gives the same run everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
}

impl Source for Rng {
    fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }
}

/// The fuzzer's bytes as a tape of choices; zeros once it runs out.
pub struct Tape<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Tape<'a> {
    pub fn new(data: &'a [u8]) -> Tape<'a> {
        Tape { data, pos: 0 }
    }
}

impl Source for Tape<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut out = [0u8; 4];
        for b in out.iter_mut() {
            if let Some(v) = self.data.get(self.pos) {
                *b = *v;
            }
            self.pos += 1;
        }
        u32::from_le_bytes(out)
    }
}

// ------------------------------------------------------------------------------------------
// Mutators
// ------------------------------------------------------------------------------------------

/// Field names the policies and the review parser read.
pub const FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "request",
    "uid",
    "object",
    "oldObject",
    "operation",
    "namespace",
    "name",
    "subResource",
    "userInfo",
    "username",
    "metadata",
    "spec",
    "template",
    "jobTemplate",
    "containers",
    "initContainers",
    "ephemeralContainers",
    "securityContext",
    "allowPrivilegeEscalation",
    "privileged",
    "capabilities",
    "drop",
    "add",
    "readOnlyRootFilesystem",
    "runAsNonRoot",
    "runAsUser",
    "os",
    "resources",
    "requests",
    "limits",
    "cpu",
    "memory",
    "image",
    "livenessProbe",
    "readinessProbe",
    "data",
    "stringData",
    "type",
    "ingress",
    "egress",
    "from",
    "to",
    "ports",
    "ipBlock",
    "cidr",
    "except",
    "labels",
    "managedFields",
    "dryRun",
    "options",
    "resource",
    "group",
    "version",
    "CORS_ALLOWED_ORIGINS",
    "WS_ALLOWED_ORIGINS",
    "JWT_SECRET",
    "SIGNING_KEY",
    "LOG_LEVEL",
    "DEBUG_MODE",
    "ENABLE_PROFILING",
];

pub const KINDS: &[&str] = &[
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
    "PodTemplate",
    "Secret",
    "ConfigMap",
    "NetworkPolicy",
    "Namespace",
    "",
    "pod",
];

pub const OPERATIONS: &[&str] = &[
    "CREATE", "UPDATE", "DELETE", "CONNECT", "create", "PATCH", "",
];

pub const NAMESPACES: &[&str] = &[
    "prod",
    "staging",
    "dev",
    "kube-system",
    "",
    "default",
    "prod\u{0}",
];

/// A value of some type, often one a policy does not expect where it is put.
pub fn interesting(src: &mut impl Source) -> Value {
    match src.below(34) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(false),
        3 => json!(0),
        4 => json!(-1),
        5 => json!(1e308),
        6 => json!(-1e308),
        7 => json!(u64::MAX),
        8 => json!(i64::MIN),
        9 => json!(0.5),
        10 => json!(""),
        11 => json!("ALL"),
        12 => json!("0"),
        13 => json!("true"),
        14 => json!("false"),
        15 => json!("*"),
        16 => json!("null"),
        17 => json!("http://localhost:8080"),
        18 => json!("https://*.example.com, null, *"),
        19 => json!("0.0.0.0/0"),
        20 => json!("::/0"),
        21 => json!("CANARY-changeme"),
        22 => Value::String("a".repeat(1 + src.below(20_000))),
        23 => json!("ü\u{0}\u{202e}\u{1F600}\u{FFFF}"),
        24 => json!([]),
        25 => json!({}),
        26 => json!(["ALL", 1, null, {"a": []}]),
        27 => json!({"drop": "ALL", "add": [0, "SYS_ADMIN"]}),
        28 => json!([{"name": 7, "securityContext": []}]),
        29 => json!({"cidr": "0.0.0.0/0", "except": "10.0.0.0/8"}),
        30 => json!("Q0FOQVJZ"),
        31 => json!("%%%not base64"),
        32 => json!(-0.0),
        _ => json!(9007199254740993u64),
    }
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

fn paths(value: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>, budget: usize) {
    if out.len() >= budget {
        return;
    }
    out.push(prefix.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(Seg::Key(k.clone()));
                paths(v, prefix, out, budget);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate().take(64) {
                prefix.push(Seg::Index(i));
                paths(v, prefix, out, budget);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'a>(value: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut current = value;
    for seg in path {
        current = match (seg, current) {
            (Seg::Key(k), Value::Object(map)) => map.get_mut(k)?,
            (Seg::Index(i), Value::Array(items)) => items.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(current)
}

/// A node of `value`, under `request.object` seven times in ten.
fn random_path(src: &mut impl Source, value: &Value) -> Vec<Seg> {
    let mut all = Vec::new();
    let object = value
        .pointer("/request/object")
        .is_some_and(Value::is_object);
    if object && src.chance(70) {
        let mut prefix = vec![Seg::Key("request".into()), Seg::Key("object".into())];
        let sub = value
            .pointer("/request/object")
            .cloned()
            .unwrap_or(Value::Null);
        paths(&sub, &mut prefix, &mut all, 4096);
    } else {
        paths(value, &mut Vec::new(), &mut all, 4096);
    }
    all.get(src.below(all.len())).cloned().unwrap_or_default()
}

fn set_kind(value: &mut Value, kind: &str) {
    if let Some(k) = value.pointer_mut("/request/kind/kind") {
        *k = json!(kind);
    }
    if let Some(k) = value.pointer_mut("/request/object/kind") {
        *k = json!(kind);
    }
}

/// One structural mutation of a review.
pub fn mutate_value(src: &mut impl Source, value: &mut Value, seeds: &[(String, Value)]) {
    let path = random_path(src, value);
    match src.below(12) {
        0 | 1 => {
            if let Some(node) = at_mut(value, &path) {
                *node = interesting(src);
            }
        }
        2 | 3 => {
            let key = src.pick(FIELDS).to_string();
            let new = if src.chance(50) {
                interesting(src)
            } else {
                let (_, other) = src.pick(seeds);
                let mut sub = Vec::new();
                paths(other, &mut Vec::new(), &mut sub, 512);
                let p = sub.get(src.below(sub.len())).cloned().unwrap_or_default();
                let mut other = other.clone();
                at_mut(&mut other, &p)
                    .map(|v| v.take())
                    .unwrap_or(Value::Null)
            };
            match at_mut(value, &path) {
                Some(Value::Object(map)) => {
                    map.insert(key, new);
                }
                Some(node) => *node = new,
                None => {}
            }
        }
        4 => {
            if let Some((last, parent)) = path.split_last() {
                match (at_mut(value, parent), last) {
                    (Some(Value::Object(map)), Seg::Key(k)) => {
                        map.remove(k);
                    }
                    (Some(Value::Array(items)), Seg::Index(i)) if *i < items.len() => {
                        items.remove(*i);
                    }
                    _ => {}
                }
            }
        }
        5 => {
            if let Some(Value::Array(items)) = at_mut(value, &path) {
                if let Some(first) = items.first().cloned() {
                    let n = [2, 10, 100, 1000][src.below(4)];
                    items.extend(std::iter::repeat_n(first, n));
                }
            } else if let Some(node) = at_mut(value, &path) {
                *node = json!([node.take()]);
            }
        }
        6 => {
            if let Some(node) = at_mut(value, &path) {
                let depth = [2, 16, 100, 126, 127, 128, 200][src.below(7)];
                let mut inner = node.take();
                for i in 0..depth {
                    inner = if i % 2 == 0 {
                        json!([inner])
                    } else {
                        json!({"x": inner})
                    };
                }
                *node = inner;
            }
        }
        7 => {
            let kind = src.pick(KINDS).to_string();
            set_kind(value, &kind);
        }
        8 => {
            let ns = src.pick(NAMESPACES).to_string();
            if let Some(r) = value.get_mut("request").and_then(Value::as_object_mut) {
                r.insert("namespace".into(), json!(ns));
            }
        }
        9 => {
            let op = src.pick(OPERATIONS).to_string();
            let sub = ["", "status", "scale", "ephemeralcontainers"][src.below(4)];
            if let Some(r) = value.get_mut("request").and_then(Value::as_object_mut) {
                r.insert("operation".into(), json!(op));
                if sub.is_empty() {
                    r.remove("subResource");
                } else {
                    r.insert("subResource".into(), json!(sub));
                }
            }
        }
        10 => {
            // Another seed's object under this request (a Secret judged as a Pod, ...).
            let (_, other) = src.pick(seeds);
            let object = other
                .pointer("/request/object")
                .cloned()
                .unwrap_or(Value::Null);
            if let Some(r) = value.get_mut("request").and_then(Value::as_object_mut) {
                r.insert("object".into(), object);
            }
        }
        _ => {
            // Same node, other type.
            if let Some(node) = at_mut(value, &path) {
                *node = match node.take() {
                    Value::String(s) => s.parse::<f64>().map(|n| json!(n)).unwrap_or(json!([s])),
                    Value::Number(n) => json!(n.to_string()),
                    Value::Bool(b) => json!(b.to_string()),
                    Value::Array(items) => {
                        let map: Map<String, Value> = items
                            .into_iter()
                            .enumerate()
                            .map(|(i, v)| (i.to_string(), v))
                            .collect();
                        Value::Object(map)
                    }
                    Value::Object(map) => Value::Array(map.into_iter().map(|(_, v)| v).collect()),
                    Value::Null => json!({}),
                };
            }
        }
    }
}

/// Text-level damage to serialised JSON: what a structural mutation cannot express.
pub fn mutate_bytes(src: &mut impl Source, bytes: &mut Vec<u8>) {
    const TOKENS: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b",",
        b":",
        b"\\",
        b"\\u0000",
        b"\\ud800",
        b"\\udfff\\ud800",
        b"1e400",
        b"-1e400",
        b"18446744073709551616",
        b"-9223372036854775809",
        b"0.0000000000000000000001e-400",
        b"NaN",
        b"Infinity",
        b"null",
        b"true",
        b"\xff",
        b"\xc0\xaf",
        b"\xed\xa0\x80",
        b"\xf4\x90\x80\x80",
        b"\xef\xbb\xbf",
        b"\"securityContext\":[],",
        b"\"uid\":\"dup\",",
        b"\"containers\":\"x\",",
    ];
    if bytes.is_empty() {
        let token: &[u8] = src.pick::<&[u8]>(TOKENS);
        bytes.extend_from_slice(token);
        return;
    }
    let at = src.below(bytes.len() + 1);
    match src.below(8) {
        0 => {
            let i = src.below(bytes.len());
            bytes[i] ^= 1 << src.below(8);
        }
        1 => {
            let token: &[u8] = src.pick::<&[u8]>(TOKENS);
            bytes.splice(at..at, token.iter().copied());
        }
        2 => {
            let end = (at + 1 + src.below(64)).min(bytes.len());
            bytes.drain(at.min(end)..end);
        }
        3 => {
            let end = (at + 1 + src.below(256)).min(bytes.len());
            let chunk: Vec<u8> = bytes[at.min(end)..end].to_vec();
            bytes.splice(at..at, chunk);
        }
        4 => bytes.truncate(at),
        5 => {
            // A duplicate key: repeat one `"key":` with another value just before it.
            let text = String::from_utf8_lossy(bytes).to_string();
            let key = src.pick(FIELDS);
            let needle = format!("\"{key}\":");
            if let Some(i) = text.find(&needle) {
                let dup = format!("{needle}{},", interesting(src));
                bytes.splice(i..i, dup.into_bytes());
            }
        }
        6 => {
            let i = src.below(bytes.len());
            bytes[i] = src.next_u32() as u8;
        }
        _ => {
            // A string's content replaced by raw bytes that are not UTF-8.
            if let Some(i) = bytes[at.min(bytes.len() - 1)..]
                .iter()
                .position(|b| *b == b'"')
            {
                let i = at.min(bytes.len() - 1) + i + 1;
                bytes.splice(i..i, [0xffu8, 0xfe, 0x80].iter().copied());
            }
        }
    }
}

/// A whole input: a seed, some structural mutations, sometimes damaged as text.
pub fn generate(src: &mut impl Source, seeds: &[(String, Value)]) -> Vec<u8> {
    let (_, seed) = src.pick(seeds);
    let mut value = seed.clone();
    let rounds = 1 + src.below(6);
    for _ in 0..rounds {
        mutate_value(src, &mut value, seeds);
    }
    let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
    if src.chance(25) {
        let damage = 1 + src.below(3);
        for _ in 0..damage {
            mutate_bytes(src, &mut bytes);
        }
    }
    bytes
}
