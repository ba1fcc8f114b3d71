//! How a policy of a flavor other than regate's own plugs into the engine from above. The
//! engine evaluates every policy the same way; what differs per flavor (the input its Rego
//! reads, the rule that holds its violations, how its modules are prepared for the bytecode VM)
//! comes through these traits, so that nothing in `policy/` depends on any flavor's module. The
//! program wires the flavors in where it builds sets (`crate::catalog`).
//!
//! The lowest layer of `policy/`: every compiled policy carries its flavor (`compiled.rs`), so
//! this file names nothing else of `policy/`. What a flavor adds to a whole set is above it:
//! the YAML documents a set is built from in `loader.rs`, cluster data every set must carry in
//! `reload.rs`.

use std::any::Any;
use std::fmt::Debug;
use std::sync::Arc;

use regorus::rvm::program::Program;
use regorus::{Engine, Value};

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
