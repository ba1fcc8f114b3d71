//! Decision → AdmissionResponse (kube-core's type, end to end).

use kube::core::admission::{AdmissionResponse, AdmissionReview};
use kube::core::{DynamicObject, Status};

use crate::admission::decision::Decision;
use crate::admission::review::{Review, ReviewError};

/// Which webhook endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Validate,
    Mutate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Validate => "validate",
            Endpoint::Mutate => "mutate",
        }
    }
}

/// Builds the response for a judged review.
pub fn respond(review: &Review, decision: &Decision, endpoint: Endpoint) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(&review.request);
    match endpoint {
        Endpoint::Validate => {
            if !decision.allowed {
                response = response.deny(decision.deny_message());
                response.result.code = 403;
                response.result.reason = "Forbidden".to_string();
            }
            let warnings = decision.warnings();
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            for (key, value) in decision.audit_annotations() {
                response.audit_annotations.insert(key, value);
            }
        }
        Endpoint::Mutate => {
            if let Some(patch) = &decision.patch {
                // A patch that cannot be serialised is dropped rather than failing the request:
                // /mutate never denies, and /validate still judges the unpatched object.
                if let Ok(with_patch) = response.clone().with_patch(patch.clone()) {
                    response = with_patch;
                }
            }
        }
    }
    response
}

/// The answer to a body that could not be judged: an AdmissionReview with `allowed: false`,
/// status code 400, the reason, and the request's uid when it had one.
pub fn invalid(error: &ReviewError) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid(error.to_string());
    response.result = Status::failure(&error.to_string(), "BadRequest").with_code(400);
    if let Some(uid) = error.uid() {
        response.uid = uid.to_string();
    }
    response
}

pub fn into_review(response: AdmissionResponse) -> AdmissionReview<DynamicObject> {
    response.into_review()
}
