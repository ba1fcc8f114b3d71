//! Benchmarks (issue 7): in-process policy timing, the load generator and the echo floor.
//!
//! - [`policies`]: every fixture through the one decision path ([`crate::admission::decision::judge`])
//!   many times, timed per policy and per fixture.
//! - [`load`]: AdmissionReviews over TLS (HTTP/1.1 keep-alive or h2), open loop at a fixed
//!   arrival rate or closed loop at a fixed concurrency, every answer checked.
//! - [`echo`]: the same TLS and HTTP stack as `serve` with no policy evaluation: the floor.

pub mod echo;
pub mod fixtures;
pub mod load;
pub mod policies;
pub mod stats;

use std::path::PathBuf;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Fixture { path: PathBuf, message: String },
    #[error("no AdmissionReview fixtures (*.json) in {}", .0.display())]
    NoFixtures(PathBuf),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("--target {0}: {1}")]
    Target(String, String),
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
