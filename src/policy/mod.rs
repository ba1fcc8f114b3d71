//! The policy engine: loading and metadata, the kinds index, evaluation with regorus, patches.
//!
//! One boundary: `PolicySet::evaluate` (`evaluate.rs`) answers for each policy on the backend
//! chosen for it when the set was built: the bytecode VM (`bytecode.rs`, where regorus's
//! compiler and regate's checks accept the policy) or the interpreter (`eval.rs`). Flavors other
//! than regate's own Rego plug in from above through `flavor.rs`; nothing here names them.

pub(crate) mod builtins;
pub mod bytecode;
pub(crate) mod bytecode_errors;
pub mod eval;
mod evaluate;
pub mod flavor;
pub(crate) mod instructions;
pub mod metadata;
pub(crate) mod mutators;
pub(crate) mod patch;
pub mod recursion;
pub(crate) mod rego_error;
pub mod reload;
pub mod set;
pub mod source;
pub(crate) mod undefined_bindings;

pub use eval::Wants;
pub use metadata::{PolicyMeta, Severity};
pub use set::{CompiledPolicy, LoadError, LoadErrors, PolicySet};
pub use source::PolicySource;
