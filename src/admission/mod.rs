//! The admission path: bytes → `Review` → `Decision` → `AdmissionResponse`.

pub mod decision;
pub mod explain;
pub mod input;
pub mod respond;
pub mod review;
pub mod shape;
pub mod webhook_rules;

pub use decision::{judge, Decision, Violation};
pub use respond::{respond, Endpoint};
pub use review::{ManifestRequest, Review, ReviewError};
