//! How policy flavors other than regate's own plug into the engine from above. The engine
//! evaluates every policy the same way; what differs per flavor (the input its Rego reads, the
//! rule that holds its violations, how its modules are prepared for the bytecode VM, which
//! YAML documents a set is built from) comes through these traits, so that nothing in
//! `policy/` depends on any flavor's module. The program wires the flavors in where it builds
//! sets (`crate::catalog`).

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use regorus::rvm::program::Program;
use regorus::{Engine, Value};

use crate::config::Config;
use crate::policy::mutators::{Mutators, NoMutators};
use crate::policy::set::{CompiledException, CompiledPolicy, LoadError};
use crate::policy::source::PolicySource;

/// What a policy of a plugged-in flavor adds to a compiled policy.
pub trait PluggedPolicy: Send + Sync + Debug + Any {
    /// The rule holding the policy's violations (regate's own policies: `deny`).
    fn deny_rule(&self) -> &'static str;
    /// The input the policy's Rego reads, from the one regate's own policies read.
    fn input(&self, input: &Value) -> Value;
    /// Policies with the same key differ only in their input, so they run one compiled
    /// program (`None`: the policy has its own).
    fn program_key(&self) -> Option<String>;
    /// A copy of `engine` rewritten for the VM's entry point `entry` (`None`: compile it as it
    /// is), or why the policy cannot run on the VM.
    fn engine_for_vm(&self, engine: &Engine, entry: &str) -> Result<Option<Engine>, String>;
    /// Why the compiled policy must stay on the interpreter, if it must.
    fn refusal(&self, compiled: &regorus::CompiledPolicy) -> Option<String>;
    /// Installs what the flavor's Rego expects of the VM's builtins.
    fn install_builtins(&self, program: &mut Program) -> Result<(), String>;
    /// For the flavor's own module, to read back what it stored.
    fn as_any(&self) -> &dyn Any;
}

/// Where a policy comes from: regate's own Rego, or a flavor plugged in from above (whose
/// input, rule and matching differ).
#[derive(Debug, Clone, Default)]
pub enum Flavor {
    #[default]
    Native,
    Plugged(Arc<dyn PluggedPolicy>),
}

impl Flavor {
    pub fn is_native(&self) -> bool {
        matches!(self, Flavor::Native)
    }

    /// The rule holding the policy's violations.
    pub fn deny_rule(&self) -> &'static str {
        match self {
            Flavor::Native => "deny",
            Flavor::Plugged(p) => p.deny_rule(),
        }
    }

    /// The plugged-in policy, when it is a `T`.
    pub fn plugged<T: PluggedPolicy>(&self) -> Option<&T> {
        match self {
            Flavor::Native => None,
            Flavor::Plugged(p) => p.as_any().downcast_ref::<T>(),
        }
    }
}

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

/// Data synced from outside the policy directory (a cluster's objects) that every set built
/// from now on must carry too: the store applies it after each reload.
pub trait SyncedData: Send + Sync + Debug + Any {
    /// `set` with this data applied.
    fn apply(
        &self,
        set: &crate::policy::set::PolicySet,
    ) -> Result<crate::policy::set::PolicySet, LoadError>;
    /// For the flavor's own module, to read back what it stored.
    fn as_any(&self) -> &dyn Any;
}
