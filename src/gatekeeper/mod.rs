//! Gatekeeper compatibility: ConstraintTemplates, Constraints and `verify` suites.
//!
//! Templates and constraints found among the policy YAML become ordinary
//! [`CompiledPolicy`] entries (flavor [`Flavor::Plugged`] with a [`GatekeeperPolicy`]: the
//! engine reaches them only through `policy::flavor`'s traits), one per constraint, so the one
//! decision path (`admission::decision::judge`) judges them beside native policies. What differs
//! is confined to three places: the input (`input.review`, `input.parameters`, built here),
//! the rule (`violation` instead of `deny`) and `spec.match`, applied by [`applies`].

pub mod bytecode;
pub mod constraint;
pub mod expansion;
pub mod inventory;
pub mod matching;
pub mod mutation;
pub mod rego_compat;
pub mod schema;
pub mod suite;
pub mod template;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use regorus::Value as RValue;
use serde_json::{json, Value};

use crate::admission::review::Review;
use crate::config::{Action, Config, Environment, Mode, PerEnvironment};
use crate::environment::EnvironmentResolver;
use crate::manifest;
use crate::policy::compiled::{CompiledException, CompiledPolicy, Rules};
use crate::policy::error::LoadError;
use crate::policy::flavor::{Flavor, PluggedPolicy};
use crate::policy::loader::{LoadedYaml, YamlLoader};
use crate::policy::metadata::PolicyMeta;
use crate::policy::set::{Placement, PolicySet, SyncedData};
use crate::policy::source::PolicySource;

pub use constraint::{Constraint, Points};
pub use inventory::{Inventory, SyncKind};
pub use matching::Match;
pub use template::{CompiledTemplate, Origin, Template};

/// What a Gatekeeper constraint adds to a compiled policy.
#[derive(Debug, Clone)]
pub struct GatekeeperPolicy {
    /// The ConstraintTemplate's name.
    pub template: String,
    /// The constraint's kind (the template's CRD kind).
    pub constraint_kind: String,
    pub matcher: Match,
    /// The constraint's action at each enforcement point (`scopedEnforcementActions`).
    pub points: Points,
    /// Whether the set this policy is in evaluates it: at admission (the default) whether the
    /// webhook enforcement point is among its points; in [`audit_point`]'s set, the audit's.
    pub active: bool,
    /// `input.parameters`, converted once.
    pub parameters: RValue,
    /// Kinds the template reads from `data.inventory`.
    pub sync: Vec<inventory::SyncKind>,
    /// The values of the Secrets in this policy's `data.inventory`, gathered when the inventory
    /// is installed: its messages are scrubbed of them as of the request's own.
    pub inventory_secrets: Arc<crate::secrets::SecretValues>,
}

impl GatekeeperPolicy {
    /// Gatekeeper's input from regate's: `input.request` is the review.
    pub fn input(&self, input: &RValue) -> RValue {
        let mut map = BTreeMap::new();
        map.insert(RValue::from("review"), input["request"].clone());
        map.insert(RValue::from("parameters"), self.parameters.clone());
        RValue::from(map)
    }

    /// The Gatekeeper part of `policy`, when it is a constraint.
    pub fn of(policy: &CompiledPolicy) -> Option<&GatekeeperPolicy> {
        policy.flavor.plugged::<GatekeeperPolicy>()
    }
}

/// How the engine evaluates a constraint: Gatekeeper's input, its `violation` rule, and the
/// template's modules prepared for the VM by [`bytecode`].
impl PluggedPolicy for GatekeeperPolicy {
    fn deny_rule(&self) -> &'static str {
        "violation"
    }

    fn input(&self, input: &RValue) -> RValue {
        GatekeeperPolicy::input(self, input)
    }

    /// A template's constraints differ only in their parameters, which are input.
    fn program_key(&self) -> Option<String> {
        Some(self.template.clone())
    }

    fn engine_for_vm(
        &self,
        engine: &regorus::Engine,
        entry: &str,
    ) -> Result<Option<regorus::Engine>, String> {
        bytecode::engine_for_vm(engine, entry)
    }

    fn refusal(&self, compiled: &regorus::CompiledPolicy) -> Option<String> {
        bytecode::refusal(compiled)
    }

    fn install_builtins(&self, program: &mut regorus::rvm::program::Program) -> Result<(), String> {
        bytecode::install_opa_builtins(program)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The policy directory's Gatekeeper YAML: ConstraintTemplates and Constraints, mutators and
/// ExpansionTemplates. What the program builds its sets with (`crate::catalog`).
#[derive(Debug, Clone, Copy, Default)]
pub struct YamlLoaders;

impl YamlLoader for YamlLoaders {
    fn load(&self, yaml: &[&PolicySource], config: &Config, timeout: Duration) -> LoadedYaml {
        let (mutators, mut errors) = mutation::compile_sources(yaml);
        let mut loaded = LoadedYaml {
            mutators: mutators.into_shared(),
            ..LoadedYaml::default()
        };
        if !yaml.is_empty() {
            let (constraints, mut gk_errors) = compile_sources(yaml, config, timeout);
            errors.append(&mut gk_errors);
            let (templates, mut expansion_errors) = expansion::compile_sources(yaml);
            errors.append(&mut expansion_errors);
            loaded.policies = constraints;
            loaded.expansions = Arc::new(expansion::ExpansionTemplates(templates));
        }
        loaded.errors = errors;
        loaded
    }

    fn alias_exceptions(&self, policies: &[CompiledPolicy], exceptions: &mut [CompiledException]) {
        alias_exceptions(policies, exceptions)
    }
}

/// A synced inventory is re-applied to every set the store builds.
impl SyncedData for Inventory {
    fn apply(&self, set: &PolicySet) -> Result<PolicySet, LoadError> {
        apply_inventory(set, self)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The input Gatekeeper builds for a bare object (not an apiserver request): the object with
/// its kind, name and namespace, and none of the request attributes regate synthesized for its
/// native policies (user, uid, resource, options). Returned in the shape of regate's input
/// (`{"request": review}`) so [`GatekeeperPolicy::input`] applies unchanged.
pub fn bare_object_input(input: &RValue) -> RValue {
    let request = &input["request"];
    let mut review = BTreeMap::new();
    review.insert(RValue::from("uid"), RValue::from(""));
    review.insert(RValue::from("userInfo"), RValue::new_object());
    for key in [
        "kind",
        "name",
        "namespace",
        "operation",
        "object",
        "oldObject",
    ] {
        let v = &request[key];
        let present = match v {
            RValue::Undefined | RValue::Null => false,
            // Go's `omitempty`: an empty name or namespace is absent, not "".
            RValue::String(s) => !s.is_empty(),
            _ => true,
        };
        if present {
            review.insert(RValue::from(key), v.clone());
        }
    }
    let mut outer = BTreeMap::new();
    outer.insert(RValue::from("request"), RValue::from(review));
    RValue::from(outer)
}

/// The review Gatekeeper's templates read: the request (for a bare object, [`bare_object_input`]'s
/// shape) with `namespaceObject`, the Namespace the object is in as last seen, when known
/// (Gatekeeper fills it from its cache for namespaced objects). Returned in regate's input shape.
pub fn review_input(
    input: &RValue,
    bare: bool,
    namespace_object: Option<&serde_json::Value>,
) -> RValue {
    let base = if bare {
        bare_object_input(input)
    } else {
        input.clone()
    };
    let Some(ns) = namespace_object else {
        return base;
    };
    let mut request = base["request"].clone();
    if let Ok(map) = request.as_object_mut() {
        map.insert(RValue::from("namespaceObject"), RValue::from(ns.clone()));
    }
    let mut outer = BTreeMap::new();
    outer.insert(RValue::from("request"), request);
    RValue::from(outer)
}

/// A Namespace as Gatekeeper hands it to templates: with its apiVersion and kind (list items may
/// lack them), without `managedFields`.
pub fn namespace_object_of(mut ns: Value) -> Value {
    if let Some(map) = ns.as_object_mut() {
        map.insert("apiVersion".into(), "v1".into());
        map.insert("kind".into(), "Namespace".into());
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    }
    ns
}

/// Records the Namespace objects among `objects` for `input.review.namespaceObject` (`eval`'s
/// manifests, `--inventory` files).
pub fn record_namespaces<'a>(set: &PolicySet, objects: impl IntoIterator<Item = &'a Value>) {
    for o in objects {
        let is_namespace = o.get("kind").and_then(Value::as_str) == Some("Namespace")
            && o.get("apiVersion").and_then(Value::as_str) == Some("v1");
        let name = o.pointer("/metadata/name").and_then(Value::as_str);
        if let (true, Some(name)) = (is_namespace, name) {
            set.resolver
                .labels()
                .set_object(name, namespace_object_of(o.clone()));
        }
    }
}

/// What Gatekeeper's `spec.match` reads of one review (kind, name, namespace, labels), gathered
/// on first use and then shared by every constraint judged for that review: with hundreds of
/// constraints, rebuilding the label map per constraint was most of the cost of excluding one.
pub struct MatchSubject<'a> {
    review: &'a Review,
    /// The review is of an object an ExpansionTemplate generated.
    generated: bool,
    resolver: &'a EnvironmentResolver,
    facts: std::cell::OnceCell<SubjectFacts<'a>>,
    namespace_labels: std::cell::OnceCell<Option<matching::Labels>>,
}

struct SubjectFacts<'a> {
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
    labels: matching::Labels,
}

impl<'a> MatchSubject<'a> {
    pub fn new(review: &'a Review, resolver: &'a EnvironmentResolver) -> Self {
        MatchSubject {
            review,
            generated: false,
            resolver,
            facts: std::cell::OnceCell::new(),
            namespace_labels: std::cell::OnceCell::new(),
        }
    }

    /// The subject of a review of an object expansion generated: only constraints match it.
    pub fn generated(mut self) -> Self {
        self.generated = true;
        self
    }

    /// What the set's index reads of the object: the namespace `spec.match`'s namespace
    /// criteria look at (the object's, a Namespace's own name, `None` for other cluster-scoped
    /// objects) and the labels its `labelSelector` reads.
    pub fn placement(&self) -> Placement<'_> {
        let facts = self.facts();
        Placement {
            namespace: matching::judged_namespace(
                facts.group,
                facts.kind,
                facts.name,
                facts.namespace,
            ),
            labels: facts
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }

    fn facts(&self) -> &SubjectFacts<'a> {
        self.facts.get_or_init(|| subject_facts(self.review))
    }

    fn namespace_labels(&self) -> Option<&matching::Labels> {
        self.namespace_labels
            .get_or_init(|| {
                self.facts()
                    .namespace
                    .and_then(|ns| self.resolver.namespace_labels(ns))
            })
            .as_ref()
    }
}

fn subject_facts(review: &Review) -> SubjectFacts<'_> {
    // Read from the policies' value, which every review has: its JSON is built only on demand.
    let request = &review.document_except_managed_fields()["request"];
    // Gatekeeper matches the object itself (its apiVersion and kind), the old object on DELETE.
    let object = [&request["object"], &request["oldObject"]]
        .into_iter()
        .find(|o| matches!(o, RValue::Object(_)));
    let (group, kind) = match object.map(|o| (text(&o["apiVersion"]), text(&o["kind"]))) {
        Some((Some(v), Some(k))) => (v.split_once('/').map(|(g, _)| g).unwrap_or(""), k),
        _ => (review.request.kind.group.as_str(), review.kind()),
    };
    let meta = object.map(|o| &o["metadata"]);
    let name = meta
        .and_then(|m| text(&m["name"]))
        .unwrap_or_else(|| review.name());
    let namespace = review.namespace().or_else(|| {
        meta.and_then(|m| text(&m["namespace"]))
            .filter(|n| !n.is_empty())
    });
    let labels: matching::Labels = match meta.map(|m| &m["labels"]) {
        Some(RValue::Object(labels)) => labels
            .iter()
            .filter_map(|(k, v)| Some((text(k)?.to_string(), text(v)?.to_string())))
            .collect(),
        _ => matching::Labels::default(),
    };
    SubjectFacts {
        group,
        kind,
        name,
        namespace,
        labels,
    }
}

/// A string value's text.
fn text(value: &RValue) -> Option<&str> {
    value.as_string().ok().map(|s| &**s)
}

/// Whether a policy's `spec.match` selects the review's object (native policies: always).
pub fn applies(policy: &CompiledPolicy, subject: &MatchSubject<'_>) -> bool {
    let Some(gk) = GatekeeperPolicy::of(policy) else {
        // Native policies judge pod templates themselves; expansion is Gatekeeper's.
        return !subject.generated;
    };
    if !gk.active {
        return false;
    }
    let facts = subject.facts();
    let namespace_labels = if gk.matcher.namespace_selector.is_some() {
        subject.namespace_labels()
    } else {
        None
    };
    gk.matcher.matches(&matching::Target {
        group: facts.group,
        kind: facts.kind,
        name: facts.name,
        namespace: facts.namespace,
        labels: &facts.labels,
        namespace_labels,
        generated: subject.generated,
    })
}

/// A YAML document from the policy directory.
struct Doc {
    value: Value,
    origin: Origin,
}

fn documents(source: &PolicySource) -> Result<Vec<Doc>, LoadError> {
    let objects = manifest::parse_text(&source.text, &source.name).map_err(|e| match e {
        manifest::ManifestError::Parse {
            file,
            line,
            message,
        } => LoadError::new(&file, line, 1, message),
        other => LoadError::new(&source.name, 1, 1, other.to_string()),
    })?;
    Ok(objects
        .into_iter()
        .map(|m| Doc {
            value: m.object,
            origin: Origin {
                file: source.name.clone(),
                line: m.line,
                text: source.text.clone(),
            },
        })
        .collect())
}

const SUITE_GROUP: &str = "test.gatekeeper.sh";

fn gatekeeper_group(doc: &Value) -> Option<&str> {
    let group = doc.get("apiVersion")?.as_str()?.split_once('/')?.0;
    group.ends_with("gatekeeper.sh").then_some(group)
}

/// Why a Gatekeeper object other than a template or constraint is refused, and what to use.
fn unsupported(kind: &str, group: &str) -> String {
    let instead = match group {
        "config.gatekeeper.sh" => {
            "regate syncs the kinds templates name in metadata.gatekeeper.sh/requires-sync-data, \
             and exempts namespaces with exemptNamespaces in regate.yaml; move this file out of \
             the policy directory"
        }
        _ => "only ConstraintTemplates and Constraints are loaded",
    };
    format!("Gatekeeper {kind} ({group}) is not supported by regate: {instead}")
}

/// Compiles the ConstraintTemplates and Constraints among the policy directory's YAML files.
/// YAML that is not Gatekeeper's is left alone; Gatekeeper objects regate cannot run
/// (CEL-only templates) are errors, so nothing is skipped silently. Mutators are
/// [`mutation::compile_sources`]'s.
pub fn compile_sources(
    sources: &[&PolicySource],
    config: &Config,
    timeout: Duration,
) -> (Vec<CompiledPolicy>, Vec<LoadError>) {
    let mut errors = Vec::new();
    let mut templates: Vec<CompiledTemplate> = Vec::new();
    let mut constraints: Vec<Doc> = Vec::new();
    for source in sources {
        let docs = match documents(source) {
            Ok(d) => d,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        for doc in docs {
            // Suites (test.gatekeeper.sh) are `regate verify`'s, as `_test.rego` files are
            // `regate test`'s; a library checkout can then serve as the policy directory.
            let Some(group) = gatekeeper_group(&doc.value).filter(|g| *g != SUITE_GROUP) else {
                continue;
            };
            if template::is_template(&doc.value) {
                match Template::parse(&doc.value, doc.origin).and_then(|t| {
                    match templates.iter().find(|o| o.template.kind == t.kind) {
                        Some(o) => Err(t.origin.error(format!(
                            "ConstraintTemplate {}: kind {} is already defined in {}:{}",
                            t.name, t.kind, o.template.origin.file, o.template.origin.line
                        ))),
                        None => Ok(t),
                    }
                }) {
                    Ok(t) => match t.compile(timeout) {
                        Ok(c) => templates.push(c),
                        Err(mut e) => errors.append(&mut e),
                    },
                    Err(e) => errors.push(e),
                }
            } else if constraint::is_constraint(&doc.value) {
                constraints.push(doc);
            } else if mutation::is_mutator(&doc.value) {
                // Loaded by `mutation::compile_sources`.
            } else if expansion::is_expansion_template(&doc.value) {
                // Loaded by `expansion::compile_sources`.
            } else {
                let kind = doc.value.get("kind").and_then(Value::as_str).unwrap_or("?");
                errors.push(doc.origin.error(unsupported(kind, group)));
            }
        }
    }
    // Gatekeeper identifies a constraint by its kind and name: one name may be used by
    // constraints of different kinds (the library's samples do), never twice within a kind.
    let mut kinds_of_name: HashMap<String, Vec<(String, String)>> = HashMap::new();
    let mut unique: Vec<Doc> = Vec::new();
    for doc in constraints {
        let (kind, name) = constraint::identity(&doc.value);
        let seen = kinds_of_name.entry(name.clone()).or_default();
        if let Some((_, at)) = seen.iter().find(|(k, _)| *k == kind) {
            errors.push(doc.origin.error(format!(
                "constraint {kind} {name:?} is already defined in {at}; a kind and a name identify one constraint"
            )));
            continue;
        }
        seen.push((kind, format!("{}:{}", doc.origin.file, doc.origin.line)));
        unique.push(doc);
    }
    let mut policies: Vec<CompiledPolicy> = Vec::new();
    for doc in unique {
        let (kind, name) = constraint::identity(&doc.value);
        let id = constraint_id(&kind, &name, kinds_of_name.get(&name).map_or(1, Vec::len));
        let Some(template) = templates.iter().find(|t| t.template.kind == kind) else {
            errors.push(doc.origin.error(format!(
                "constraint {name}: no ConstraintTemplate defines kind {kind:?} (or its template failed to load)"
            )));
            continue;
        };
        let compiled = Constraint::parse(&doc.value, doc.origin, &template.template)
            .and_then(|c| compile_constraint(template, &c, &id, config, &Inventory::default()));
        match compiled {
            Ok(p) => policies.push(p),
            Err(e) => errors.push(e),
        }
    }
    (policies, errors)
}

/// A constraint's policy id: its name, or `Kind/name` when constraints of `kinds` different
/// kinds share that name (ids name one policy in `regate.yaml`, exceptions, metrics and
/// messages).
pub fn constraint_id(kind: &str, name: &str, kinds: usize) -> String {
    if kinds > 1 {
        format!("{kind}/{name}")
    } else {
        name.to_string()
    }
}

/// Config exceptions name a constraint by its policy id or, always, by Gatekeeper's identity
/// `Kind/name` (the id is the bare name while no other kind uses it): an exception that names
/// `K8sRequiredLabels/owner` waives constraint `owner` either way.
pub fn alias_exceptions(policies: &[CompiledPolicy], exceptions: &mut [CompiledException]) {
    for p in policies {
        let Some(gk) = GatekeeperPolicy::of(p) else {
            continue;
        };
        if p.id().contains('/') {
            continue;
        }
        let full = format!("{}/{}", gk.constraint_kind, p.id());
        for ex in exceptions.iter_mut() {
            if ex.policies.contains(&full) && !ex.policies.iter().any(|q| q == p.id()) {
                ex.policies.push(p.id().to_string());
            }
        }
    }
}

/// One constraint as a policy: the template's engine with `data.inventory`, its action per
/// environment (config overrides and `mode: audit` apply as to native policies).
pub fn compile_constraint(
    template: &CompiledTemplate,
    constraint: &Constraint,
    id: &str,
    config: &Config,
    inventory: &Inventory,
) -> Result<CompiledPolicy, LoadError> {
    let origin = &constraint.origin;
    let overrides = config.policies.get(id);
    if let Some(o) = overrides {
        if !o.parameters.is_empty() {
            return Err(LoadError::new(
                "regate.yaml",
                1,
                1,
                format!(
                    "policies.{}.parameters: a Gatekeeper constraint takes its parameters from its spec.parameters ({})",
                    id, origin.file
                ),
            ));
        }
    }
    let actions = actions_for(constraint.action, overrides, config);
    let gk = GatekeeperPolicy {
        template: template.template.name.clone(),
        constraint_kind: constraint.kind.clone(),
        matcher: constraint.matcher.clone(),
        points: constraint.points,
        active: constraint.points.admission.is_some(),
        parameters: RValue::from(constraint.parameters.clone()),
        sync: template.template.sync.clone(),
        inventory_secrets: Arc::new(inventory.secret_values()),
    };
    let mut engine = template.engine.clone();
    set_inventory(&mut engine, inventory)
        .map_err(|e| origin.error(format!("constraint {}: {e}", constraint.name)))?;
    let kinds = constraint.matcher.index_kinds();
    prime(
        &mut engine,
        &template.package,
        &gk,
        kinds.first().map(String::as_str),
    );
    let meta = PolicyMeta {
        id: id.to_string(),
        title: template.template.title.clone(),
        description: template.template.description.clone(),
        severity: constraint.severity,
        category: Some(constraint.category.clone()),
        kinds,
        namespaces: constraint.matcher.index_namespaces(),
        required_label: constraint.matcher.index_label(),
        action: PerEnvironment::Single(constraint.action),
        operations: vec!["CREATE".to_string(), "UPDATE".to_string()],
        subresources: Vec::new(),
        parameters: BTreeMap::new(),
    };
    Ok(CompiledPolicy {
        meta,
        file: origin.file.clone(),
        package: template.package.clone(),
        rules: Rules {
            deny: true,
            warn: false,
            patch: false,
        },
        engines: [engine.clone(), engine.clone(), engine],
        actions,
        parameters: [
            constraint.parameters.clone(),
            constraint.parameters.clone(),
            constraint.parameters.clone(),
        ],
        flavor: Flavor::Plugged(Arc::new(gk)),
        reads_managed_fields: crate::policy::compiled::mentions_managed_fields(&template.engine),
    })
}

/// A constraint's action per environment from its enforcement action at one point: config
/// overrides (`policies.<id>.action`) and `mode: audit` apply as to native policies.
fn actions_for(
    action: Action,
    overrides: Option<&crate::config::PolicyOverride>,
    config: &Config,
) -> [Action; 3] {
    let mut actions = [action; 3];
    for env in Environment::ALL {
        let mut a = overrides
            .and_then(|o| o.action.as_ref())
            .and_then(|a| a.get(env))
            .unwrap_or(action);
        if config.mode == Mode::Audit && a == Action::Deny {
            a = Action::Audit;
        }
        actions[env.index()] = a;
    }
    actions
}

/// The set as Gatekeeper's audit enforcement point sees it: each constraint with the action
/// its `scopedEnforcementActions` give `audit.gatekeeper.sh` (or `*`), and the constraints
/// they do not name left out. What `audit` and `serve`'s background audit judge with; the set
/// itself when no constraint acts differently there (no scoped constraint), so nothing is
/// copied in the common case.
pub fn audit_point(set: Arc<PolicySet>) -> Arc<PolicySet> {
    let differs = |p: &CompiledPolicy| {
        GatekeeperPolicy::of(p).is_some_and(|gk| gk.points.audit != gk.points.admission)
    };
    if !set.policies.iter().any(differs) {
        return set;
    }
    let policies: Vec<CompiledPolicy> = set
        .policies
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if let Some(gk) = GatekeeperPolicy::of(&p) {
                let mut gk = gk.clone();
                gk.active = gk.points.audit.is_some();
                let action = gk.points.audit.unwrap_or(Action::Audit);
                p.actions = actions_for(action, set.config.policies.get(p.id()), &set.config);
                p.meta.action = PerEnvironment::Single(action);
                p.flavor = Flavor::Plugged(Arc::new(gk));
            }
            p
        })
        .collect();
    let unchanged = vec![false; policies.len()];
    Arc::new(set.with_changed_engines(policies, &unchanged))
}

fn set_inventory(engine: &mut regorus::Engine, inventory: &Inventory) -> Result<(), String> {
    // A template's engine holds no data but the inventory, so replacing all of it is exact.
    engine.clear_data();
    engine
        .add_data(RValue::from(inventory.to_data()))
        .map_err(|e| format!("cannot add inventory: {e}"))
}

/// Replaces `data.inventory` in every Gatekeeper policy (referential templates read it); native
/// policies are returned unchanged. Used by `verify` per case, and by whoever syncs a cluster.
pub fn with_inventory(
    policies: &[CompiledPolicy],
    inventory: &Inventory,
) -> Result<Vec<CompiledPolicy>, LoadError> {
    let secrets = Arc::new(inventory.secret_values());
    policies
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if let Some(gk) = GatekeeperPolicy::of(&p) {
                let mut gk = gk.clone();
                gk.inventory_secrets = secrets.clone();
                p.flavor = Flavor::Plugged(Arc::new(gk));
                for engine in p.engines.iter_mut() {
                    set_inventory(engine, inventory)
                        .map_err(|e| LoadError::new(&p.file, 1, 1, e))?;
                }
            }
            Ok(p)
        })
        .collect()
}

/// The set with `data.inventory` replaced in its Gatekeeper policies (native policies, config,
/// exceptions and namespace labels unchanged): what `eval`/`audit --inventory` judge with, and
/// what the server installs when its cluster sync or a policy reload produces a new inventory.
pub fn apply_inventory(set: &PolicySet, inventory: &Inventory) -> Result<PolicySet, LoadError> {
    if !set
        .policies
        .iter()
        .any(|p| GatekeeperPolicy::of(p).is_some())
    {
        return Ok(set.clone());
    }
    let policies = with_inventory(&set.policies, inventory)?;
    // Only the constraints' engines changed: native programs are not recompiled, and threads
    // keep what they cached for them.
    let changed: Vec<bool> = policies
        .iter()
        .map(|p| GatekeeperPolicy::of(p).is_some())
        .collect();
    Ok(set.with_changed_engines(policies, &changed))
}

/// `eval --inventory` and `audit --inventory`: the set with an inventory read from `paths`,
/// holding only the kinds its referential templates need ([`sync_kinds`]), and the Namespaces
/// among them recorded for `input.review.namespaceObject`. No paths: the set as it is.
pub fn with_inventory_files(
    set: PolicySet,
    paths: &[std::path::PathBuf],
) -> Result<PolicySet, InventoryFilesError> {
    if paths.is_empty() {
        return Ok(set);
    }
    let (inventory, namespaces) = inventory::read_paths(paths, &sync_kinds(&set.policies))?;
    record_namespaces(&set, &namespaces);
    Ok(apply_inventory(&set, &inventory)?)
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryFilesError {
    #[error("reading the inventory: {0}")]
    Read(#[from] inventory::InventoryLoadError),
    #[error("installing the inventory: {0}")]
    Install(#[from] LoadError),
}

/// Every kind the set's referential templates read from `data.inventory`: what a cluster sync
/// needs to watch (and no more) to fill it; see [`with_inventory`].
pub fn sync_kinds(policies: &[CompiledPolicy]) -> Vec<inventory::SyncKind> {
    let mut out: Vec<inventory::SyncKind> = policies
        .iter()
        .filter_map(|p| GatekeeperPolicy::of(p).map(|gk| gk.sync.iter().cloned()))
        .flatten()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// One evaluation so that clones of this engine start warm (as native policies do).
fn prime(engine: &mut regorus::Engine, package: &str, gk: &GatekeeperPolicy, kind: Option<&str>) {
    let kind = kind.filter(|k| *k != "*").unwrap_or("Pod");
    let input = RValue::from(json!({"request": {
        "uid": "prime",
        "kind": {"group": "", "version": "v1", "kind": kind},
        "operation": "CREATE",
        "namespace": "default",
        "name": "prime",
        "userInfo": {},
        "object": {"apiVersion": "v1", "kind": kind, "metadata": {"name": "prime", "namespace": "default"}, "spec": {}},
    }}));
    engine.set_input(gk.input(&input));
    let _ = engine.eval_rule(format!("{package}.violation"));
    // Clones of this engine must not start with (and keep copying) the priming's prints.
    let _ = engine.take_prints();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native_policy_text(rules: &str) -> String {
        format!(
            "# METADATA\n# title: t\n# custom:\n#   id: p\n#   severity: low\n#   kinds: [ConfigMap]\npackage regate.policies.p\n\nimport rego.v1\n\n{rules}\n"
        )
    }

    fn summary(d: &crate::admission::decision::Decision) -> String {
        format!(
            "allowed={} violations={:?} failures={:?}",
            d.allowed, d.violations, d.failures
        )
    }

    /// An inventory sync changes only the constraints' data: native programs are not
    /// recompiled, the set keeps its identity (threads keep their VMs), and only the
    /// constraints' engines are taken again by the threads.
    #[test]
    fn an_inventory_sync_keeps_compiled_programs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.rego"),
            native_policy_text("deny contains \"m\" if input.request.object.data.x == \"abc\""),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("gk.yaml"),
            "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata:\n  name: k8sinv\nspec:\n  crd:\n    spec:\n      names:\n        kind: K8sInv\n  targets:\n    - target: admission.k8s.gatekeeper.sh\n      rego: |\n        package k8sinv\n        violation[{\"msg\": \"taken\"}] { data.inventory.cluster[\"v1\"][\"Namespace\"][\"n\"] }\n---\napiVersion: constraints.gatekeeper.sh/v1beta1\nkind: K8sInv\nmetadata:\n  name: inv\nspec:\n  match:\n    kinds: [{apiGroups: [\"\"], kinds: [ConfigMap]}]\n",
        )
        .unwrap();
        let (sources, _) = crate::policy::source::resolve(dir.path(), false).unwrap();
        let set = crate::catalog::build(
            &sources,
            std::sync::Arc::new(crate::config::Config::default()),
            crate::environment::NamespaceLabels::default(),
        )
        .unwrap();
        let review = crate::admission::review::Review::from_slice(
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","kind":{"group":"","version":"v1","kind":"ConfigMap"},"resource":{"group":"","version":"v1","resource":"configmaps"},"namespace":"n","operation":"CREATE","userInfo":{},"object":{"kind":"ConfigMap","metadata":{"name":"c"},"data":{"x":"abc","none":[],"nul":null,"w":true}}}}"#,
        )
        .unwrap();
        let before =
            crate::admission::decision::judge(&set, &review, crate::policy::Wants::VALIDATE);
        assert_eq!(before.violations.len(), 1, "{}", summary(&before));
        let mut inventory = Inventory::default();
        inventory
            .add(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}}))
            .unwrap();
        let synced = apply_inventory(&set, &inventory).unwrap();
        let native = set.policies.iter().position(|p| p.id() == "p").unwrap();
        let constraint = set.policies.iter().position(|p| p.id() == "inv").unwrap();
        // A constraint on bytecode holds its data in its program: the set is then built again
        // (what the assertions below say holds only for interpreted constraints).
        let view = |s: &PolicySet, i: usize| s.accel.cache_view(i);
        if view(&set, constraint).1.is_none() {
            let (a, b) = (view(&set, native), view(&synced, native));
            assert_eq!(b.0, a.0, "the set keeps its identity");
            assert!(a.1.is_some());
            assert_eq!(a.1, b.1, "the native program is the same one");
            assert_eq!(a.2, b.2);
            assert_ne!(view(&set, constraint).2, view(&synced, constraint).2);
        }
        // This thread cached the constraint's old engine: it answers with the new inventory.
        let after =
            crate::admission::decision::judge(&synced, &review, crate::policy::Wants::VALIDATE);
        assert_eq!(after.violations.len(), 2, "{}", summary(&after));
        let old = crate::admission::decision::judge(&set, &review, crate::policy::Wants::VALIDATE);
        assert_eq!(summary(&old), summary(&before));
    }

    fn template(kind: &str) -> String {
        format!(
            "apiVersion: templates.gatekeeper.sh/v1\nkind: ConstraintTemplate\nmetadata:\n  name: {}\nspec:\n  crd:\n    spec:\n      names:\n        kind: {kind}\n  targets:\n    - target: admission.k8s.gatekeeper.sh\n      rego: |\n        package {}\n        violation[{{\"msg\": \"no\"}}] {{ input.review.object.bad }}\n",
            kind.to_ascii_lowercase(),
            kind.to_ascii_lowercase()
        )
    }

    /// Compiles `files` (name, text) as one policy directory.
    fn compile<const N: usize>(
        files: [(&str, String); N],
    ) -> (Vec<CompiledPolicy>, Vec<LoadError>) {
        let sources = files.map(|(name, text)| PolicySource {
            name: name.to_string(),
            text,
        });
        let refs: Vec<&PolicySource> = sources.iter().collect();
        compile_sources(&refs, &Config::default(), Duration::from_secs(1))
    }

    fn assembled(policies: Vec<CompiledPolicy>) -> PolicySet {
        PolicySet::assemble(
            policies,
            Arc::new(Config::default()),
            crate::environment::NamespaceLabels::default(),
            Vec::new(),
            false,
        )
    }

    fn constraint(kind: &str, name: &str) -> String {
        format!("apiVersion: constraints.gatekeeper.sh/v1beta1\nkind: {kind}\nmetadata:\n  name: {name}\n")
    }

    /// As in Gatekeeper, a constraint is its kind and name: one name may serve two kinds (the
    /// ids then say the kind), never one kind twice.
    #[test]
    fn constraints_are_identified_by_kind_and_name() {
        let sources = [
            ("t/a.yaml", template("K8sA")),
            ("t/b.yaml", template("K8sB")),
            ("c/a.yaml", constraint("K8sA", "shared")),
            ("c/b.yaml", constraint("K8sB", "shared")),
            ("c/only.yaml", constraint("K8sA", "only")),
        ];
        let (policies, errors) = compile(sources);
        assert_eq!(errors, vec![]);
        let ids: Vec<&str> = policies.iter().map(|p| p.id()).collect();
        assert_eq!(ids, vec!["K8sA/shared", "K8sB/shared", "only"]);

        let twice = [
            ("t/a.yaml", template("K8sA")),
            ("c/a.yaml", constraint("K8sA", "same")),
            ("c/a2.yaml", constraint("K8sA", "same")),
        ];
        let (_, errors) = compile(twice);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].file, "c/a2.yaml");
        assert!(
            errors[0]
                .message
                .contains("K8sA \"same\" is already defined in c/a.yaml:1"),
            "{errors:?}"
        );
    }

    /// The set's namespace index hides a constraint only from objects its `spec.match` could
    /// never select: one limited to literal namespaces is offered for objects in them, for
    /// Namespaces of those names and for cluster-scoped objects; patterns and exclusions are
    /// left to matching.
    #[test]
    fn namespace_index_offers_every_constraint_that_can_match() {
        let limited =
            |name: &str, spec: &str| format!("{}spec:\n  match:\n{spec}", constraint("K8sA", name));
        let sources = [
            ("t/a.yaml", template("K8sA")),
            ("c/exact.yaml", limited("exact", "    namespaces: [a, c]\n")),
            (
                "c/pattern.yaml",
                limited("pattern", "    namespaces: [a*]\n"),
            ),
            (
                "c/excluded.yaml",
                limited("excluded", "    excludedNamespaces: [a]\n"),
            ),
            ("c/open.yaml", constraint("K8sA", "open")),
            (
                "c/tier.yaml",
                limited("tier", "    labelSelector: {matchLabels: {tier: web}}\n"),
            ),
            (
                "c/untiered.yaml",
                limited(
                    "untiered",
                    "    labelSelector:\n      matchExpressions: [{key: tier, operator: DoesNotExist}]\n",
                ),
            ),
            (
                "c/owned.yaml",
                limited(
                    "owned",
                    "    labelSelector:\n      matchExpressions: [{key: owner, operator: Exists}]\n",
                ),
            ),
            (
                "c/pods.yaml",
                limited(
                    "pods",
                    "    kinds: [{apiGroups: [\"\"], kinds: [Pod]}]\n    namespaces: [b]\n",
                ),
            ),
        ];
        let (policies, errors) = compile(sources);
        assert_eq!(errors, vec![]);
        let set = assembled(policies);
        // "apiVersion kind namespace name [key=value…]" (`-`: cluster-scoped) → the
        // constraints offered.
        let cases = [
            ("v1 Pod a p", "exact pattern excluded open untiered"),
            ("v1 Pod b p", "pattern excluded open untiered pods"),
            ("v1 Pod zz p", "pattern excluded open untiered"),
            ("v1 Pod zz p tier=db", "pattern excluded open untiered"),
            (
                "v1 Pod zz p app=x tier=web",
                "pattern excluded open tier untiered",
            ),
            (
                "v1 Pod zz p owner=me tier=web",
                "pattern excluded open tier untiered owned",
            ),
            (
                "v1 Pod b p owner=",
                "pattern excluded open untiered owned pods",
            ),
            ("v1 Namespace - c", "exact pattern excluded open untiered"),
            ("v1 Namespace - zz", "pattern excluded open untiered"),
            (
                "rbac.authorization.k8s.io/v1 ClusterRole - r",
                "exact pattern excluded open untiered",
            ),
        ];
        for (object, expected) in cases {
            let words: Vec<&str> = object.split(' ').collect();
            let [api_version, kind, namespace, name, ..] = words[..] else {
                panic!("{object}");
            };
            let labels: serde_json::Map<String, Value> = words[4..]
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            let namespace = Some(namespace).filter(|n| *n != "-");
            let group = api_version.split_once('/').map_or("", |(g, _)| g);
            let review = Review::from_value(json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "u",
                    "kind": {"group": group, "version": "v1", "kind": kind},
                    "resource": {"group": group, "version": "v1", "resource": "things"},
                    "name": name,
                    "namespace": namespace,
                    "operation": "CREATE",
                    "userInfo": {},
                    "object": {
                        "apiVersion": api_version,
                        "kind": kind,
                        "metadata": {"name": name, "namespace": namespace, "labels": labels},
                    },
                },
            }))
            .map_err(|e| e.to_string());
            let Ok(review) = review else {
                panic!("{review:?}");
            };
            let subject = MatchSubject::new(&review, &set.resolver);
            let offered = set.for_object(review.kind(), || subject.placement());
            let ids: Vec<&str> = offered.iter().map(|&i| set.policies[i].id()).collect();
            assert_eq!(ids.join(" "), expected, "{object}");
            for (i, policy) in set.policies.iter().enumerate() {
                if applies(policy, &subject) {
                    assert!(offered.contains(&i), "{} hidden from {object}", policy.id());
                }
            }
        }
    }

    /// Whether `managedFields` is kept in the input follows from the policies themselves, for
    /// every way a set is put together (`verify` assembles one per case).
    #[test]
    fn managed_fields_are_kept_for_policies_that_read_them() {
        let reading = template("K8sA").replace(
            "input.review.object.bad",
            "input.review.object.metadata.managedFields",
        );
        for (text, expected) in [(template("K8sA"), false), (reading, true)] {
            let (policies, errors) =
                compile([("t/a.yaml", text), ("c/a.yaml", constraint("K8sA", "a"))]);
            assert_eq!(errors, vec![]);
            let set = assembled(policies);
            assert_eq!(set.reads_managed_fields, expected);
        }
    }

    #[test]
    fn bare_object_review_has_gatekeepers_shape() {
        let input = RValue::from(json!({"request": {
            "uid": "eval-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "p",
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {"username": "regate-cli"},
            "object": {"kind": "Pod"},
            "oldObject": null,
            "options": {},
        }}));
        let bare = bare_object_input(&input);
        let expected = RValue::from(json!({"request": {
            "uid": "",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "name": "p",
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {},
            "object": {"kind": "Pod"},
        }}));
        assert_eq!(bare, expected);
    }
}
