//! The policy engine: loading and metadata, the kinds index, evaluation with regorus, patches.
//!
//! One boundary: `PolicySet::evaluate` (`evaluate.rs`) answers for each policy on the backend
//! chosen for it when the set was built: the bytecode VM (`bytecode.rs`, where regorus's
//! compiler and regate's checks accept the policy) or the interpreter (`eval.rs`). Flavors other
//! than regate's own Rego plug in from above through `flavor.rs` (one policy) and `loader.rs`
//! (a set's YAML documents); nothing here names them.
//!
//! The files are layered so that each imports only those below it: `error.rs`, `flavor.rs` and
//! `allowance.rs` (how long an evaluation in place may take, set by the server) and `memory.rs`
//! (how much memory evaluations may build, set at start) at the bottom,
//! then `compiled.rs` (one compiled policy) and `bounded_builtins.rs` (builtins whose size a
//! number sets, bounded on both backends), then the backends (`eval.rs`, `bytecode.rs`), the
//! recursion check and `loader.rs`, then `set.rs` (the `PolicySet` and its build), and
//! `evaluate.rs` and `reload.rs` on top.

pub mod allowance;
pub(crate) mod bounded_builtins;
pub(crate) mod builtins;
pub mod bytecode;
pub(crate) mod bytecode_errors;
pub mod compiled;
pub mod error;
pub mod eval;
mod evaluate;
pub mod flavor;
pub(crate) mod instructions;
pub mod loader;
pub mod memory;
pub mod metadata;
pub(crate) mod mutators;
pub mod panics;
pub(crate) mod patch;
pub(crate) mod recursion;
pub(crate) mod rego_error;
pub mod reload;
pub mod set;
pub mod source;
mod source_table;
pub(crate) mod undefined_bindings;

pub use compiled::CompiledPolicy;
pub use error::{LoadError, LoadErrors};
pub use eval::Wants;
pub use metadata::{PolicyMeta, RequiredLabel, Severity};
pub use set::{Placement, PolicySet};
pub use source::PolicySource;
