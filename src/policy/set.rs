//! A `PolicySet`: every policy compiled for every environment, the kinds index, the config they
//! were built with. Immutable once built; hot reload builds a new one and swaps it whole.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use regorus::Engine;
use serde_json::json;

use crate::config::{Action, Config, Environment, Mode};
use crate::environment::{EnvironmentResolver, NamespaceLabels};
use crate::policy::compiled::{
    compile_exceptions, mentions_managed_fields, timer, CompiledException, CompiledPolicy, Rules,
};
use crate::policy::error::{LoadError, LoadErrors};
use crate::policy::flavor::Flavor;
use crate::policy::loader::{Expansions, NoExpansions, YamlLoader};
use crate::policy::metadata::{self, PolicyMeta};
use crate::policy::source::{PolicySource, SourceRole};

/// Data synced from outside the policy directory (a cluster's objects) that every set built
/// from now on must carry too: the policy store applies it after each reload. Defined beside
/// `PolicySet` because it maps a whole set to a set.
pub trait SyncedData: Send + Sync + std::fmt::Debug + std::any::Any {
    /// `set` with this data applied.
    fn apply(&self, set: &PolicySet) -> Result<PolicySet, LoadError>;
    /// For the flavor's own module, to read back what it stored.
    fn as_any(&self) -> &dyn std::any::Any;
}

/// What the set's index reads of an object under review.
#[derive(Debug, Clone, Default)]
pub struct Placement<'a> {
    /// Its namespace; `None` for a cluster-scoped object, which no namespace limit rules out.
    pub namespace: Option<&'a str>,
    /// Its labels, key and value.
    pub labels: Vec<(&'a str, &'a str)>,
}

/// The policies of one kind, indexed by what limits them (`PolicyMeta::namespaces`, else
/// `PolicyMeta::required_label`), so that a review never looks at a policy limited to other
/// namespaces or to objects with a label it does not carry.
#[derive(Debug, Clone, Default)]
struct PolicyIndex {
    /// Policies without such a limit.
    anywhere: Vec<usize>,
    /// Policies limited to some namespaces, under each of their names.
    by_namespace: HashMap<String, Vec<usize>>,
    /// Every policy limited to some namespaces: a cluster-scoped object is offered to them all.
    namespaced: Vec<usize>,
    /// Policies limited to objects carrying a label (and not to namespaces), by its key.
    by_label: HashMap<String, LabelIndex>,
}

/// The policies limited to objects carrying one label key.
#[derive(Debug, Clone, Default)]
struct LabelIndex {
    /// Whatever its value.
    any_value: Vec<usize>,
    /// With one of some values, under each of them.
    by_value: HashMap<String, Vec<usize>>,
}

impl PolicyIndex {
    fn add(&mut self, policy: usize, meta: &PolicyMeta) {
        fn push(list: &mut Vec<usize>, policy: usize) {
            if list.last() != Some(&policy) {
                list.push(policy);
            }
        }
        if !meta.namespaces.is_empty() {
            push(&mut self.namespaced, policy);
            for ns in &meta.namespaces {
                push(self.by_namespace.entry(ns.clone()).or_default(), policy);
            }
        } else if let Some(label) = &meta.required_label {
            let index = self.by_label.entry(label.key.clone()).or_default();
            if label.values.is_empty() {
                push(&mut index.any_value, policy);
            }
            for value in &label.values {
                push(index.by_value.entry(value.clone()).or_default(), policy);
            }
        } else {
            push(&mut self.anywhere, policy);
        }
    }

    fn limits(&self) -> bool {
        !self.namespaced.is_empty() || !self.by_label.is_empty()
    }

    /// Appends the policies for an object at `placement`; returns how many non-empty runs (each
    /// in load order) it appended.
    fn extend_for(&self, placement: &Placement<'_>, out: &mut Vec<usize>) -> usize {
        let namespaced = match placement.namespace {
            Some(ns) => self.by_namespace.get(ns).map_or(&[][..], Vec::as_slice),
            None => &self.namespaced,
        };
        let labelled = placement
            .labels
            .iter()
            .filter_map(|(key, value)| self.by_label.get(*key).map(|index| (index, *value)))
            .flat_map(|(index, value)| {
                let with_value = index.by_value.get(value).map_or(&[][..], Vec::as_slice);
                [&index.any_value[..], with_value]
            });
        let mut runs = 0;
        for run in [&self.anywhere[..], namespaced].into_iter().chain(labelled) {
            if !run.is_empty() {
                out.extend_from_slice(run);
                runs += 1;
            }
        }
        runs
    }
}

/// Everything one decision needs, built once and shared by every request until the next reload.
#[derive(Debug, Clone)]
pub struct PolicySet {
    pub policies: Vec<CompiledPolicy>,
    by_kind: HashMap<String, PolicyIndex>,
    /// The policies of every kind (`*`).
    all_kinds: PolicyIndex,
    pub config: Arc<Config>,
    pub resolver: EnvironmentResolver,
    pub exceptions: Vec<CompiledException>,
    /// Objects a flavor derives from workloads (none by default): workloads are judged also
    /// through the objects they would create.
    pub expansions: Arc<dyn Expansions>,
    pub evaluation_timeout: Duration,
    /// Whether any policy mentions `managedFields`; when none does it is dropped from the input.
    pub reads_managed_fields: bool,
    pub built_at: SystemTime,
    /// Whether the embedded defaults are part of this set.
    pub uses_embedded: bool,
    /// This set's identity for per-thread caches, and its compiled programs (`policy::bytecode`).
    pub(crate) accel: crate::policy::bytecode::Accel,
    /// Object mutators loaded beside the policies (none by default), run on `/mutate` after
    /// the `patch` rules.
    pub mutators: Arc<dyn crate::policy::mutators::Mutators>,
}

impl PolicySet {
    /// Builds a set from sources, with `yaml_loader` making policies (and mutators, and
    /// expansions) of the YAML documents among them, or reports every problem found.
    pub fn build_with(
        sources: &[PolicySource],
        config: Arc<Config>,
        labels: NamespaceLabels,
        yaml_loader: &dyn YamlLoader,
    ) -> Result<PolicySet, LoadErrors> {
        let mut errors = Vec::new();
        let sources = dedupe_overrides(sources);
        let libraries: Vec<&PolicySource> = sources
            .iter()
            .filter(|s| s.role() == SourceRole::Library)
            .collect();
        let evaluation_timeout = config.limits.evaluation_timeout();
        // Libraries are checked on their own, so a broken one is reported even when no policy
        // would compile with it (for example after its only policy was deleted).
        for lib in &libraries {
            if let Some((line, pkg)) = metadata::package_of(&lib.text) {
                if pkg.starts_with("regate.policies.") {
                    errors.push(LoadError::new(
                        &lib.name,
                        line,
                        1,
                        format!("package {pkg} is a policy package but the file has no # METADATA block"),
                    ));
                    continue;
                }
            }
            let mut engine = Engine::new();
            if let Err(e) = engine.add_policy(lib.name.clone(), lib.text.clone()) {
                errors.push(locate_regorus_error(&lib.name, &e.to_string()));
            }
        }
        errors.extend(import_errors(&sources));
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        // The libraries, parsed once and cloned for each policy (a clone shares the parsed
        // modules).
        let library_base = new_engine(evaluation_timeout, &libraries);
        let mut policies: Vec<CompiledPolicy> = Vec::new();
        for source in sources.iter().filter(|s| s.role() == SourceRole::Policy) {
            match compile_policy(source, &library_base, &config) {
                Ok(policy) => add_unless_declared(
                    &mut policies,
                    &mut errors,
                    policy,
                    &source.name,
                    |id, other| format!("policy id {id:?} is already declared in {other}"),
                ),
                Err(mut e) => errors.append(&mut e),
            }
        }
        // A recursive rule would overflow the stack of the first evaluation that reaches it
        // (priming, or a request): checked before anything is evaluated, over the modules of
        // every policy at once (the libraries they share are the same modules).
        let mut modules: Vec<regorus::unstable::Ref<regorus::unstable::Module>> = Vec::new();
        for policy in &mut policies {
            for m in policy.engines[0].get_modules() {
                if !modules.iter().any(|o| o == m) {
                    modules.push(m.clone());
                }
            }
        }
        errors.extend(
            crate::policy::recursion::find_cycles(&modules)
                .into_iter()
                .map(|c| LoadError::new(&c.file, c.line, c.column, c.message())),
        );
        let yaml: Vec<&PolicySource> = sources
            .iter()
            .filter(|s| s.role() == SourceRole::Yaml)
            .collect();
        let loaded = yaml_loader.load(&yaml, &config, evaluation_timeout);
        errors.extend(loaded.errors);
        for policy in loaded.policies {
            let file = policy.file.clone();
            add_unless_declared(&mut policies, &mut errors, policy, &file, |id, other| {
                format!("constraint {id:?}: a policy with this id is already declared in {other}")
            });
        }
        for id in config.policies.keys() {
            if !policies.iter().any(|p| &p.meta.id == id) {
                let (file, line, column) = config.locate("policies", &[id]);
                errors.push(LoadError::new(
                    &file,
                    line,
                    column,
                    format!("policies.{id}: no loaded policy has this id"),
                ));
            }
        }
        let mut exceptions = compile_exceptions(&config, &mut errors);
        yaml_loader.alias_exceptions(&policies, &mut exceptions);
        // A cycle inside a library is found once per policy compiled with it.
        let mut seen = Vec::new();
        errors.retain(|e| {
            let new = !seen.contains(e);
            if new {
                seen.push(e.clone());
            }
            new
        });
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        policies.retain(|p| !config.policies.get(&p.meta.id).is_some_and(|o| o.disabled));
        let uses_embedded = sources.iter().any(|s| s.name.starts_with("embedded:"));
        let mut set = Self::assemble(policies, config, labels, exceptions, uses_embedded);
        set.expansions = loaded.expansions;
        Ok(set.with_mutators(loaded.mutators))
    }

    /// A set of the Rego among `sources` (YAML documents are left alone): the engine's own tests.
    #[cfg(test)]
    pub(crate) fn build_with_rego_only(
        sources: &[PolicySource],
        config: Arc<Config>,
        labels: NamespaceLabels,
    ) -> Result<PolicySet, LoadErrors> {
        Self::build_with(sources, config, labels, &crate::policy::loader::NoYaml)
    }

    /// A set of one Rego file with `text` and the default config: the engine's own tests.
    #[cfg(test)]
    pub(crate) fn of_one_rego_file(text: &str) -> Result<PolicySet, LoadErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.rego"), text).unwrap();
        let (sources, _) = crate::policy::source::resolve(dir.path(), false).unwrap();
        Self::build_with_rego_only(
            &sources,
            Arc::new(Config::default()),
            NamespaceLabels::default(),
        )
    }

    /// This set with `mutators` in place of its own.
    pub fn with_mutators(mut self, mutators: Arc<dyn crate::policy::mutators::Mutators>) -> Self {
        self.mutators = mutators;
        self
    }

    /// Builds the index over already compiled policies (policies of plugged-in flavors join here too).
    pub fn assemble(
        mut policies: Vec<CompiledPolicy>,
        config: Arc<Config>,
        labels: NamespaceLabels,
        exceptions: Vec<CompiledException>,
        uses_embedded: bool,
    ) -> PolicySet {
        let mut by_kind: HashMap<String, PolicyIndex> = HashMap::new();
        let mut all_kinds = PolicyIndex::default();
        for (i, p) in policies.iter().enumerate() {
            for kind in &p.meta.kinds {
                let index = if kind == "*" {
                    &mut all_kinds
                } else {
                    by_kind.entry(kind.clone()).or_default()
                };
                index.add(i, &p.meta);
            }
        }
        let reads_managed_fields = policies.iter().any(|p| p.reads_managed_fields);
        let accel = crate::policy::bytecode::Accel::build(
            &mut policies,
            config.limits.evaluation_timeout(),
        );
        PolicySet {
            accel,
            resolver: EnvironmentResolver::new(&config, labels),
            evaluation_timeout: config.limits.evaluation_timeout(),
            policies,
            by_kind,
            all_kinds,
            config,
            exceptions,
            expansions: Arc::new(NoExpansions),
            reads_managed_fields,
            built_at: SystemTime::now(),
            uses_embedded,
            mutators: Arc::new(crate::policy::mutators::NoMutators),
        }
    }

    /// This set with `policies` in place of its own, where they differ only in the data their
    /// interpreter engines hold (`changed[i]` for each that does): a sync of cluster data
    /// ([`SyncedData`]). Nothing is recompiled, and threads keep what they cached for the other policies.
    /// Policies that do not line up with this set's (ids, order) get a fresh build.
    pub fn with_changed_engines(
        &self,
        policies: Vec<CompiledPolicy>,
        changed: &[bool],
    ) -> PolicySet {
        let aligned = policies.len() == self.policies.len()
            && changed.len() == policies.len()
            && policies
                .iter()
                .zip(&self.policies)
                .all(|(a, b)| a.meta.id == b.meta.id);
        match self.accel.with_new_engines(changed).filter(|_| aligned) {
            Some(accel) => PolicySet {
                accel,
                policies,
                by_kind: self.by_kind.clone(),
                all_kinds: self.all_kinds.clone(),
                config: self.config.clone(),
                resolver: self.resolver.clone(),
                exceptions: self.exceptions.clone(),
                expansions: self.expansions.clone(),
                evaluation_timeout: self.evaluation_timeout,
                reads_managed_fields: self.reads_managed_fields,
                built_at: self.built_at,
                uses_embedded: self.uses_embedded,
                mutators: self.mutators.clone(),
            },
            None => {
                let mut set = Self::assemble(
                    policies,
                    self.config.clone(),
                    self.resolver.labels().clone(),
                    self.exceptions.clone(),
                    self.uses_embedded,
                );
                set.expansions = self.expansions.clone();
                set.with_mutators(self.mutators.clone())
            }
        }
    }

    /// Indices of the policies that may judge an object of `kind` placed as `placement` says,
    /// in load order. A policy limited to other namespaces, or to objects with a label this one
    /// lacks, is not looked at, so it costs the review nothing. `placement` is asked only when
    /// some policy of the kind has such a limit.
    pub fn for_object<'a>(
        &self,
        kind: &str,
        placement: impl FnOnce() -> Placement<'a>,
    ) -> Vec<usize> {
        let indexes = || self.by_kind.get(kind).into_iter().chain([&self.all_kinds]);
        let placement = if indexes().any(PolicyIndex::limits) {
            placement()
        } else {
            Placement::default()
        };
        let mut out = Vec::new();
        let mut runs = 0;
        for index in indexes() {
            runs += index.extend_for(&placement, &mut out);
        }
        // Each run is in load order already; only runs from different lists need merging.
        if runs > 1 {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// Whether a loaded policy names `kind` itself (not only through `*`).
    pub fn names_kind(&self, kind: &str) -> bool {
        self.by_kind.contains_key(kind)
    }

    /// Every kind some policy names (for the webhook rules, the audit's lists).
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.by_kind.keys().cloned().collect();
        kinds.sort();
        kinds
    }

    pub fn get(&self, id: &str) -> Option<&CompiledPolicy> {
        self.policies.iter().find(|p| p.meta.id == id)
    }
}

/// `policy` added to `policies`, or, when its id is taken, an error at line 1 of `file` worded
/// by `taken(id, file of the first)`.
fn add_unless_declared(
    policies: &mut Vec<CompiledPolicy>,
    errors: &mut Vec<LoadError>,
    policy: CompiledPolicy,
    file: &str,
    taken: impl Fn(&str, &str) -> String,
) {
    match policies.iter().find(|p| p.meta.id == policy.meta.id) {
        Some(other) => errors.push(LoadError::new(
            file,
            1,
            1,
            taken(&policy.meta.id, &other.file),
        )),
        None => policies.push(policy),
    }
}

/// Imports that would load here and fail or mislead elsewhere: `import data.regate.lib.…` lines
/// that name a package no loaded file declares (Rego reads an undefined import as undefined,
/// not as an error: a deleted helper library would silently turn every rule that uses it into a
/// no-op, and every object it judges into an allowed one), and `import rego.<x>` other than
/// `rego.v1`.
fn import_errors(sources: &[PolicySource]) -> Vec<LoadError> {
    let packages: Vec<String> = sources
        .iter()
        .filter_map(|s| metadata::package_of(&s.text).map(|(_, p)| p))
        .collect();
    let mut errors = Vec::new();
    for source in sources
        .iter()
        .filter(|s| matches!(s.role(), SourceRole::Policy | SourceRole::Library))
    {
        for (i, line) in source.text.lines().enumerate() {
            // regorus takes any `import rego.<x>`; OPA takes only `rego.v1`, so a typo would
            // load here and nowhere else.
            if let Some(rest) = line.trim().strip_prefix("import rego.") {
                let version = rest.split_whitespace().next().unwrap_or("");
                if version != "v1" {
                    errors.push(LoadError::new(
                        &source.name,
                        i + 1,
                        1,
                        format!(
                            "invalid import rego.{version}: the only one is rego.v1 (as in OPA)"
                        ),
                    ));
                }
                continue;
            }
            let Some(rest) = line.trim().strip_prefix("import data.") else {
                continue;
            };
            let path = rest.split_whitespace().next().unwrap_or("");
            if !path.starts_with("regate.lib.") {
                continue;
            }
            let declared = packages.iter().any(|p| {
                path == p
                    || path
                        .strip_prefix(p.as_str())
                        .is_some_and(|r| r.starts_with('.'))
            });
            if !declared {
                errors.push(LoadError::new(
                    &source.name,
                    i + 1,
                    1,
                    format!("imports data.{path}, but no loaded file declares package {path}"),
                ));
            }
        }
    }
    errors
}

/// With embedded defaults and a directory together, a directory file replaces the embedded
/// policy with the same id, or the embedded library with the same file name.
fn dedupe_overrides(sources: &[PolicySource]) -> Vec<PolicySource> {
    let key = |s: &PolicySource| -> Option<String> {
        match s.role() {
            SourceRole::Policy => metadata::parse(&s.text)
                .ok()
                .flatten()
                .map(|m| format!("policy:{}", m.id)),
            SourceRole::Library | SourceRole::Test => {
                s.name.rsplit('/').next().map(|f| format!("file:{f}"))
            }
            SourceRole::Yaml => None,
        }
    };
    let mut out: Vec<PolicySource> = Vec::new();
    for s in sources {
        let k = key(s);
        if let Some(k) = &k {
            if !s.name.starts_with("embedded:") {
                out.retain(|o| !(o.name.starts_with("embedded:") && key(o).as_ref() == Some(k)));
            } else if out
                .iter()
                .any(|o| !o.name.starts_with("embedded:") && key(o).as_ref() == Some(k))
            {
                continue;
            }
        }
        out.push(s.clone());
    }
    out
}

/// Parses a regorus error message for `file:line:col`, so load errors point at the right place
/// and say regorus's reason once.
pub fn locate_regorus_error(file: &str, message: &str) -> LoadError {
    if let Some(m) = crate::policy::rego_error::parse(message) {
        let mut text = m.reason;
        if !m.excerpt.is_empty() {
            text.push('\n');
            text.push_str(&m.excerpt);
        }
        return LoadError::new(&m.file, m.line, m.column, text);
    }
    // The older form: "<file>:<line>:<col>: error: ...".
    let first = message.lines().next().unwrap_or(message);
    if let Some(rest) = first.strip_prefix(file).and_then(|r| r.strip_prefix(':')) {
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().and_then(|l| l.trim().parse().ok());
        let col = parts.next().and_then(|c| c.trim().parse().ok());
        if let (Some(line), Some(col)) = (line, col) {
            let text = parts.next().unwrap_or("").trim();
            let detail: Vec<&str> = message.lines().skip(1).collect();
            let mut msg = text.to_string();
            if !detail.is_empty() {
                msg.push('\n');
                msg.push_str(&detail.join("\n"));
            }
            return LoadError::new(file, line, col, msg);
        }
    }
    LoadError::new(file, 1, 1, message.trim().to_string())
}

pub(crate) fn new_engine(
    timeout: Duration,
    libraries: &[&PolicySource],
) -> Result<Engine, Vec<LoadError>> {
    let mut engine = Engine::new();
    engine.set_execution_timer_config(timer(timeout));
    // Gathered, never written to stderr: a print may quote a Secret (see `crate::secrets`).
    engine.set_gather_prints(true);
    let mut errors = Vec::new();
    if let Err(e) = crate::policy::bounded_builtins::install(&mut engine) {
        errors.push(LoadError::new("numbers.range", 1, 1, e.to_string()));
    }
    for lib in libraries {
        if let Err(e) = engine.add_policy(lib.name.clone(), lib.text.clone()) {
            errors.push(locate_regorus_error(&lib.name, &e.to_string()));
        }
    }
    if errors.is_empty() {
        Ok(engine)
    } else {
        Err(errors)
    }
}

fn compile_policy(
    source: &PolicySource,
    library_base: &Result<Engine, Vec<LoadError>>,
    config: &Config,
) -> Result<CompiledPolicy, Vec<LoadError>> {
    let meta = match metadata::parse_all(&source.text) {
        Ok(Some(meta)) => meta,
        Ok(None) => {
            return Err(vec![LoadError::new(
                &source.name,
                1,
                1,
                "no # METADATA block",
            )]);
        }
        Err(errors) => {
            return Err(errors
                .into_iter()
                .map(|e| LoadError::new(&source.name, e.line, e.column, e.message))
                .collect())
        }
    };
    let expected = meta.package();
    match metadata::package_of(&source.text) {
        Some((_, pkg)) if pkg == expected => {}
        Some((line, pkg)) => {
            return Err(vec![LoadError::new(
                &source.name,
                line,
                9,
                format!(
                    "package is {pkg:?}; policy {} must declare `package {expected}`",
                    meta.id
                ),
            )]);
        }
        None => {
            return Err(vec![LoadError::new(
                &source.name,
                1,
                1,
                format!("no package declaration; expected `package {expected}`"),
            )]);
        }
    }
    let mut base = library_base.clone()?;
    if let Err(e) = base.add_policy(source.name.clone(), source.text.clone()) {
        return Err(vec![locate_regorus_error(&source.name, &e.to_string())]);
    }
    let has = |engine: &Engine, rule: &str| {
        engine
            .has_declared_rule_rooted_at(&source.name, rule)
            .unwrap_or(false)
    };
    let rules = Rules {
        deny: has(&base, "deny"),
        warn: has(&base, "warn"),
        patch: has(&base, "patch"),
    };
    if !(rules.deny || rules.warn || rules.patch) {
        return Err(vec![LoadError::new(
            &source.name,
            1,
            1,
            format!("policy {} defines none of deny, warn or patch", meta.id),
        )]);
    }

    let overrides = config.policies.get(&meta.id);
    let mut errors = Vec::new();
    let mut actions = [Action::Deny; 3];
    let mut parameters: [serde_json::Value; 3] = [json!({}), json!({}), json!({})];
    for env in Environment::ALL {
        let mut action = overrides
            .and_then(|o| o.action.as_ref())
            .and_then(|a| a.get(env))
            .unwrap_or_else(|| meta.default_action(env));
        if config.mode == Mode::Audit && action == Action::Deny {
            action = Action::Audit;
        }
        actions[env.index()] = action;
        let mut params = serde_json::Map::new();
        for (name, spec) in &meta.parameters {
            let configured = overrides.and_then(|o| o.parameters.get(name));
            let value = configured
                .or(spec.default.as_ref())
                .and_then(|v| spec.resolve(v, env));
            if let Some(value) = value {
                if !spec.kind.accepts(&value) {
                    let (file, line, column) = config.locate("policies", &[&meta.id, name]);
                    errors.push(LoadError::new(
                        &file,
                        line,
                        column,
                        format!(
                            "policies.{}.parameters.{name}: {value} is not of type {} (for {env})",
                            meta.id,
                            spec.kind.as_str()
                        ),
                    ));
                }
                params.insert(name.clone(), value);
            }
        }
        if let Some(o) = overrides {
            for name in o.parameters.keys() {
                if !meta.parameters.contains_key(name) && env == Environment::Production {
                    let (file, line, column) = config.locate("policies", &[&meta.id, name]);
                    errors.push(LoadError::new(
                        &file,
                        line,
                        column,
                        format!(
                            "policies.{}.parameters.{name}: the policy declares no such parameter (it has: {})",
                            meta.id,
                            meta.parameters.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
            }
        }
        parameters[env.index()] = serde_json::Value::Object(params);
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut engines: Vec<Engine> = Vec::with_capacity(3);
    for env in Environment::ALL {
        let mut engine = base.clone();
        let data = json!({"regate": {
            "environment": env.as_str(),
            "parameters": parameters[env.index()].clone(),
        }});
        if let Err(e) = engine.add_data(regorus::Value::from(data)) {
            return Err(vec![LoadError::new(
                &source.name,
                1,
                1,
                format!("cannot add data: {e}"),
            )]);
        }
        // Primed by `policy::bytecode` when the policy is interpreted (not when it runs as bytecode).
        engines.push(engine);
    }
    let engines: [Engine; 3] = match engines.try_into() {
        Ok(e) => e,
        Err(_) => {
            return Err(vec![LoadError::new(
                &source.name,
                1,
                1,
                "internal: engine count",
            )])
        }
    };
    let package = format!("data.{expected}");
    Ok(CompiledPolicy {
        meta,
        file: source.name.clone(),
        package,
        rules,
        engines,
        actions,
        parameters,
        flavor: Flavor::Native,
        reads_managed_fields: mentions_managed_fields(&base),
    })
}

/// A summary of each policy's effective action per environment, for startup logs and `regate policies`.
pub fn describe(set: &PolicySet) -> Vec<BTreeMap<&'static str, String>> {
    set.policies
        .iter()
        .map(|p| {
            let mut m = BTreeMap::new();
            m.insert("id", p.meta.id.clone());
            m.insert("severity", p.meta.severity.to_string());
            m.insert("kinds", p.meta.kinds.join(","));
            for env in Environment::ALL {
                let key = match env {
                    Environment::Development => "development",
                    Environment::Staging => "staging",
                    Environment::Production => "production",
                };
                m.insert(key, p.action(env).to_string());
            }
            m
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::source;

    /// `import rego.va` loads in regorus and nowhere else (OPA refuses it): an error at its
    /// line; `rego.v1` and a commented-out line are fine.
    #[test]
    fn only_rego_v1_is_imported_from_rego() {
        let policy = |import: &str| {
            format!(
                "# METADATA\n# title: t\n# custom:\n#   id: p\n#   severity: low\n#   kinds: [ConfigMap]\npackage regate.policies.p\n\n{import}\n# import rego.v2\n\ndeny contains 1 if input.x\n"
            )
        };
        let build = |import: &str| {
            PolicySet::of_one_rego_file(&policy(import))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert_eq!(build("import rego.v1"), Ok(()));
        let error = build("import rego.va").unwrap_err();
        assert!(error.contains("p.rego:9:1"), "{error}");
        assert!(error.contains("invalid import rego.va"), "{error}");
    }

    /// Through the real build (`policy::recursion` finds the cycles): every recursive shape is a
    /// load error at the rule's file and line, OPA's `rego_recursion_error`, and the set is not
    /// built.
    #[test]
    fn a_set_with_recursion_is_not_built() {
        let policy = |rules: &str| {
            format!(
                "# METADATA\n# title: t\n# custom:\n#   id: p\n#   severity: low\n#   kinds: [ConfigMap]\npackage regate.policies.p\n\nimport rego.v1\nimport data.regate.lib.h\n\n{rules}\n"
            )
        };
        // Line 12 is the first rule of the policy.
        for (rules, lib, file, line) in [
            ("f(x) := f(x)\ndeny contains 1 if f(1)", "", "p.rego", 12),
            (
                "a := b if { input.x }\nb := a\ndeny contains 1 if a",
                "",
                "p.rego",
                12,
            ),
            (
                "f(x) := 1 if x == 0\nelse := g(x)\ng(x) := f(x - 1)\ndeny contains 1 if f(2)",
                "",
                "p.rego",
                12,
            ),
            (
                "deny contains m if { some m in h.msgs }",
                "msgs := {m | some m in data.regate.policies.p.deny}",
                "h.rego",
                4,
            ),
        ] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("p.rego"), policy(rules)).unwrap();
            std::fs::create_dir(dir.path().join("lib")).unwrap();
            std::fs::write(
                dir.path().join("lib/h.rego"),
                format!("package regate.lib.h\n\nimport rego.v1\n{lib}\n"),
            )
            .unwrap();
            let (sources, _) = source::resolve(dir.path(), false).unwrap();
            let errors = PolicySet::build_with_rego_only(
                &sources,
                std::sync::Arc::new(Config::default()),
                NamespaceLabels::default(),
            )
            .unwrap_err();
            assert_eq!(errors.0.len(), 1, "{rules}: {errors}");
            let e = &errors.0[0];
            assert!(e.file.ends_with(file), "{rules}: {e}");
            assert_eq!(e.line, line, "{rules}: {e}");
            assert!(
                e.message.starts_with("rego_recursion_error: rule data."),
                "{e}"
            );
        }
    }
}
