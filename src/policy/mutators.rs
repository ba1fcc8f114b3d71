//! Object mutators that a policy flavor loads beside the Rego policies (through its
//! [`crate::policy::loader::YamlLoader`]). A set
//! only holds them; `admission::decision::judge` runs them after the policies' `patch` rules,
//! so that one JSONPatch carries both.

use std::fmt::Debug;

use serde_json::Value;

use crate::environment::EnvironmentResolver;

/// What mutators may read about the request besides the object itself.
#[derive(Debug, Clone, Copy)]
pub struct MutationRequest<'a> {
    /// `CREATE` or `UPDATE`.
    pub operation: &'a str,
    /// The request's namespace, when it has one.
    pub namespace: Option<&'a str>,
    /// The kind the request names (used when the object has no `apiVersion`/`kind`).
    pub group: &'a str,
    pub version: &'a str,
    pub kind: &'a str,
    /// Namespace labels, for namespace selectors.
    pub resolver: &'a EnvironmentResolver,
}

/// A mutator that could not be applied: the whole mutation is abandoned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{mutator}: {message}")]
pub struct MutationFailure {
    /// The mutator's id (`Kind/name`), or empty when no single mutator is to blame.
    pub mutator: String,
    pub message: String,
}

/// A group of mutators, applied together until the object is stable.
pub trait Mutators: Send + Sync + Debug {
    /// Whether there is nothing to apply (the common case: no mutator loaded).
    fn is_empty(&self) -> bool;
    /// Ids of the mutators, in the order they run.
    fn ids(&self) -> Vec<String>;
    /// Kinds some mutator may change (for the webhook rules).
    fn kinds(&self) -> Vec<String>;
    /// Whether any mutator may apply to an object of `kind` (before looking at the object).
    fn may_apply(&self, kind: &str) -> bool;
    /// Mutates `object` in place; returns the ids of the mutators that changed it. On failure
    /// `object` is left as it was.
    fn mutate(
        &self,
        object: &mut Value,
        request: &MutationRequest<'_>,
    ) -> Result<Vec<String>, MutationFailure>;
}

/// No mutators: what a set without any holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMutators;

impl Mutators for NoMutators {
    fn is_empty(&self) -> bool {
        true
    }
    fn ids(&self) -> Vec<String> {
        Vec::new()
    }
    fn kinds(&self) -> Vec<String> {
        Vec::new()
    }
    fn may_apply(&self, _kind: &str) -> bool {
        false
    }
    fn mutate(
        &self,
        _object: &mut Value,
        _request: &MutationRequest<'_>,
    ) -> Result<Vec<String>, MutationFailure> {
        Ok(Vec::new())
    }
}
