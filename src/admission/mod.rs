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

/// The AdmissionReview fixtures' paths and texts (`fixtures/admission`, `fixtures/bench`).
#[cfg(test)]
pub(crate) fn fixture_bodies() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in ["fixtures/admission", "fixtures/bench"] {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path.display().to_string(), text));
            }
        }
    }
    out
}
