//! What a flavor other than regate's own adds to a set as it is built: policies, mutators and
//! expansions made of the YAML documents among the set's sources.
//!
//! Sits below `set.rs`, which builds a set through a [`YamlLoader`] and holds its
//! [`Expansions`]: a loader makes compiled policies (`compiled.rs`) and errors (`error.rs`),
//! never a whole set, so nothing here needs the set.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::policy::compiled::{CompiledException, CompiledPolicy};
use crate::policy::error::LoadError;
use crate::policy::mutators::{Mutators, NoMutators};
use crate::policy::source::PolicySource;

/// Objects a flavor derives from a workload, to be judged too (none by default).
pub trait Expansions: Send + Sync + Debug + Any {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// For the flavor's own module, to read back what it stored.
    fn as_any(&self) -> &dyn Any;
}

/// No expansions: what a set without any holds.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoExpansions;

impl Expansions for NoExpansions {
    fn len(&self) -> usize {
        0
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What a loader made of a set's YAML documents.
#[derive(Debug)]
pub struct LoadedYaml {
    pub policies: Vec<CompiledPolicy>,
    pub mutators: Arc<dyn Mutators>,
    pub expansions: Arc<dyn Expansions>,
    pub errors: Vec<LoadError>,
}

impl Default for LoadedYaml {
    fn default() -> Self {
        LoadedYaml {
            policies: Vec::new(),
            mutators: Arc::new(NoMutators),
            expansions: Arc::new(NoExpansions),
            errors: Vec::new(),
        }
    }
}

/// Turns the YAML documents among a set's sources into policies, mutators and expansions.
pub trait YamlLoader: Sync + Debug {
    /// `yaml` may be empty (a set of Rego only).
    fn load(&self, yaml: &[&PolicySource], config: &Config, timeout: Duration) -> LoadedYaml;
    /// Lets config exceptions name the loaded policies as the flavor names them too.
    fn alias_exceptions(
        &self,
        _policies: &[CompiledPolicy],
        _exceptions: &mut [CompiledException],
    ) {
    }
}

/// A set of Rego only: YAML documents are left alone (the engine's own tests).
#[cfg(test)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NoYaml;

#[cfg(test)]
impl YamlLoader for NoYaml {
    fn load(&self, _: &[&PolicySource], _: &Config, _: Duration) -> LoadedYaml {
        LoadedYaml::default()
    }
}
