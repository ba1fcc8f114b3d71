//! One compiled policy (its engines per environment, actions, parameters, flavor), the
//! compiled config exceptions, and the helpers that prepare a policy's interpreter engines.
//!
//! Sits below `set.rs`: the backends (`eval.rs`, `bytecode.rs`) and the flavors' loaders
//! (`loader.rs`) work on single policies and must not depend on the set that gathers them;
//! the set is built from these types, never the other way round.

use std::num::NonZeroU32;
use std::time::Duration;

use regorus::utils::limits::ExecutionTimerConfig;
use regorus::Engine;
use serde_json::json;

use crate::config::{Action, Config, Environment};
use crate::policy::error::LoadError;
use crate::policy::flavor::Flavor;
use crate::policy::metadata::PolicyMeta;

/// Which output rules a policy defines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rules {
    pub deny: bool,
    pub warn: bool,
    pub patch: bool,
}

/// One policy, compiled once per environment (each engine already holds that environment's
/// `data.regate`, and has evaluated once so that clones start warm).
#[derive(Clone)]
pub struct CompiledPolicy {
    pub meta: PolicyMeta,
    pub file: String,
    pub package: String,
    pub rules: Rules,
    pub(crate) engines: [Engine; 3],
    /// Effective action per environment, after config overrides and `mode: audit`.
    pub actions: [Action; 3],
    /// Parameters per environment, defaults overridden by config.
    pub parameters: [serde_json::Value; 3],
    pub flavor: Flavor,
    /// Whether the policy's Rego (or a library it is compiled with) mentions `managedFields`.
    pub reads_managed_fields: bool,
}

impl std::fmt::Debug for CompiledPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledPolicy")
            .field("id", &self.meta.id)
            .field("file", &self.file)
            .field("actions", &self.actions)
            .finish()
    }
}

impl CompiledPolicy {
    pub fn id(&self) -> &str {
        &self.meta.id
    }

    pub fn action(&self, env: Environment) -> Action {
        self.actions[env.index()]
    }

    pub fn engine(&self, env: Environment) -> &Engine {
        &self.engines[env.index()]
    }
}

/// An exception from config, with its patterns compiled.
#[derive(Debug, Clone)]
pub struct CompiledException {
    pub name: String,
    pub policies: Vec<String>,
    pub reason: String,
    pub expires: time::OffsetDateTime,
    pub expires_text: String,
    namespace: Option<globset::GlobMatcher>,
    kind: Option<globset::GlobMatcher>,
    name_glob: Option<globset::GlobMatcher>,
}

impl CompiledException {
    pub fn is_expired(&self, now: time::OffsetDateTime) -> bool {
        now >= self.expires
    }

    pub fn matches(&self, policy: &str, namespace: &str, kind: &str, name: &str) -> bool {
        let hit =
            |m: &Option<globset::GlobMatcher>, v: &str| m.as_ref().is_none_or(|m| m.is_match(v));
        self.policies.iter().any(|p| p == policy)
            && hit(&self.namespace, namespace)
            && hit(&self.kind, kind)
            && hit(&self.name_glob, name)
    }
}

/// The config's exceptions with their patterns compiled; a pattern that does not compile is
/// reported in `errors`.
pub(crate) fn compile_exceptions(
    config: &Config,
    errors: &mut Vec<LoadError>,
) -> Vec<CompiledException> {
    let glob = |p: &Option<String>,
                errors: &mut Vec<LoadError>,
                what: &str|
     -> Option<globset::GlobMatcher> {
        let p = p.as_ref()?;
        match globset::Glob::new(p) {
            Ok(g) => Some(g.compile_matcher()),
            Err(e) => {
                let (file, line, column) = config.locate("exceptions", &[p.as_str()]);
                errors.push(LoadError::new(
                    &file,
                    line,
                    column,
                    format!("exceptions: {what} {p:?}: {e}"),
                ));
                None
            }
        }
    };
    let mut out = Vec::new();
    for ex in &config.exceptions {
        let Ok(expires) = crate::config::parse_rfc3339(&ex.expires) else {
            continue;
        };
        out.push(CompiledException {
            name: ex.name.clone(),
            policies: ex.policies.clone(),
            reason: ex.reason.clone(),
            expires,
            expires_text: ex.expires.clone(),
            namespace: glob(&ex.matches.namespace, errors, "namespace"),
            kind: glob(&ex.matches.kind, errors, "kind"),
            name_glob: glob(&ex.matches.name, errors, "name"),
        });
    }
    out
}

/// Work units (statements, loop iterations) the interpreter runs between two reads of the
/// clock for the time limit. Reading it at every unit cost 15-19% of the server's CPU on
/// constraint-heavy sets; a unit is small, so a runaway policy still stops within a few
/// microseconds of its limit.
const INTERPRETER_TIMER_CHECK_INTERVAL: u32 = 64;

/// The interpreter's time limit (native policies and plugged-in flavors alike).
pub(crate) fn timer(limit: Duration) -> ExecutionTimerConfig {
    ExecutionTimerConfig {
        limit,
        check_interval: NonZeroU32::new(INTERPRETER_TIMER_CHECK_INTERVAL)
            .unwrap_or(NonZeroU32::MIN),
    }
}

/// Whether any module of `engine` mentions `managedFields`: when no policy of a set does, the
/// field is dropped from the input (it is often the largest part of an object). Unreadable
/// sources count as mentioning it, so nothing is dropped by mistake.
pub(crate) fn mentions_managed_fields(engine: &Engine) -> bool {
    engine.get_policies().map_or(true, |sources| {
        sources
            .iter()
            .any(|s| s.get_contents().contains("managedFields"))
    })
}

/// One evaluation on a representative input, so that engines cloned from this one skip the
/// first-use preparation on the request path.
pub(crate) fn prime(engine: &mut Engine, package: &str, rules: Rules, meta: &PolicyMeta) {
    let kind = meta
        .kinds
        .first()
        .cloned()
        .unwrap_or_else(|| "Pod".to_string());
    let input = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "prime",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "operation": "CREATE",
            "namespace": "default",
            "userInfo": {},
            "object": {"kind": kind, "metadata": {"name": "prime"}, "spec": {}},
        }
    });
    engine.set_input(regorus::Value::from(input));
    for (present, rule) in [
        (rules.deny, "deny"),
        (rules.warn, "warn"),
        (rules.patch, "patch"),
    ] {
        if present {
            let _ = engine.eval_rule(format!("data.{package}.{rule}"));
        }
    }
    // Clones of this engine must not start with (and keep copying) the priming's prints.
    let _ = engine.take_prints();
}
