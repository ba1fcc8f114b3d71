//! regate: a Kubernetes policy-as-code admission webhook.
//!
//! One decision path serves the webhook, `eval`, `test` and `audit`:
//! bytes → [`admission::Review`] → [`policy::PolicySet`] → [`admission::Decision`] →
//! `AdmissionResponse`.

pub mod admission;
pub mod audit;
pub mod bench;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod environment;
pub mod gatekeeper;
pub mod manifest;
pub mod metrics;
pub mod policy;
pub mod rollout;
pub mod secrets;
pub mod server;
pub mod telemetry;
pub mod testing;
pub mod tls;
pub mod yaml_depth;
