//! The policy engine: loading and metadata, the kinds index, evaluation with regorus, patches.

pub mod builtins;
pub mod bytecode;
pub mod bytecode_errors;
pub mod eval;
pub mod evaluate;
pub mod flavor;
pub mod metadata;
pub mod mutators;
pub mod patch;
pub mod recursion;
pub mod rego_error;
pub mod reload;
pub mod set;
pub mod source;
pub mod undefined_bindings;

pub use eval::Wants;
pub use metadata::{PolicyMeta, Severity};
pub use set::{CompiledPolicy, LoadError, LoadErrors, PolicySet};
pub use source::PolicySource;
