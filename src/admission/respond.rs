//! Decision → AdmissionResponse (kube-core's type) → the AdmissionReview answer on the wire.
//!
//! Two things here are not kube-core's: the answer is serialised by [`AdmissionAnswer`], which
//! writes `response.patch` as base64 as the AdmissionReview API documents it, and what a
//! decision puts in the answer is capped (see the `MAX_*` constants), so that a request with
//! thousands of violations cannot make an answer of megabytes.

use std::collections::HashMap;

use base64::Engine as _;
use kube::core::admission::AdmissionResponse;
use kube::core::Status;
use serde::Serialize;

use crate::admission::decision::Decision;
use crate::admission::review::{Review, ReviewError, API_VERSION};

/// Denying results listed in a deny message; the rest are counted (`… and 9,980 more`).
pub const MAX_MESSAGE_PARTS: usize = 20;
/// Characters of one listed result in a deny message (cut with `…`).
pub const MAX_MESSAGE_PART_CHARS: usize = 512;
/// Warnings in an answer, the count of those left out included. kube-apiserver keeps at most
/// 4,096 characters of warnings per response and cuts each to 256 beyond that.
pub const MAX_WARNINGS: usize = 20;
/// Characters of one warning (kube-apiserver asks for 120 where possible and truncates beyond
/// 256; regate passes policy messages through as written up to 256).
pub const MAX_WARNING_CHARS: usize = 256;
/// Characters of all warnings of one answer together.
pub const MAX_WARNINGS_TOTAL_CHARS: usize = 4_096;
/// Audit annotations in an answer (one per policy with audit-action violations).
pub const MAX_AUDIT_ANNOTATIONS: usize = 32;
/// Messages listed in one audit annotation; the rest are counted.
pub const MAX_AUDIT_MESSAGES: usize = 10;
/// Characters of one message in an audit annotation.
pub const MAX_AUDIT_MESSAGE_CHARS: usize = 256;
/// The annotation that counts annotations left out.
pub const TRUNCATED_ANNOTATION: &str = "regate.dev/truncated";

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
                response = response.deny(capped_message(&decision.deny_parts()));
                response.result.code = 403;
                response.result.reason = "Forbidden".to_string();
            }
            let warnings = capped_warnings(decision.warnings());
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            response.audit_annotations = capped_annotations(decision.audit_annotation_parts());
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
/// the error's status code (400, or 413 for a body too large to parse), the reason, and the
/// request's uid when it had one.
pub fn invalid(error: &ReviewError) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid(error.to_string());
    let (code, reason) = match error {
        ReviewError::TooLargeToParse { .. } => (413, "RequestEntityTooLarge"),
        _ => (400, "BadRequest"),
    };
    response.result = Status::failure(&error.to_string(), reason).with_code(code);
    if let Some(uid) = error.uid() {
        response.uid = uid.to_string();
    }
    response
}

/// Wraps a response as the AdmissionReview answer.
pub fn answer(response: AdmissionResponse) -> AdmissionAnswer {
    AdmissionAnswer { response }
}

/// An AdmissionReview answer, serialised as kube-apiserver documents it: `apiVersion`, `kind`
/// and `response`, whose `patch` is the base64 of a JSON Patch with `patchType: JSONPatch`.
/// kube-core 5 serialises `AdmissionResponse::patch` (`Vec<u8>`) as an array of numbers
/// (kube-rs/kube#1781); Go's decoder happens to read both, but base64 is the documented form and
/// what every Go webhook sends.
#[derive(Debug, Clone)]
pub struct AdmissionAnswer {
    pub response: AdmissionResponse,
}

impl Serialize for AdmissionAnswer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Review<'a> {
            api_version: &'a str,
            kind: &'a str,
            response: Response<'a>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Response<'a> {
            uid: &'a str,
            allowed: bool,
            status: &'a Status,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            patch_type: Option<&'a str>,
            #[serde(skip_serializing_if = "HashMap::is_empty")]
            audit_annotations: &'a HashMap<String, String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            warnings: Option<&'a Vec<String>>,
        }
        let r = &self.response;
        // kube-core sets `patchType` whenever it sets `patch` (`with_patch`), and JSONPatch is
        // the only type there is.
        let patch = r
            .patch
            .as_ref()
            .map(|bytes| base64::engine::general_purpose::STANDARD.encode(bytes));
        Review {
            api_version: API_VERSION,
            kind: "AdmissionReview",
            response: Response {
                uid: &r.uid,
                allowed: r.allowed,
                status: &r.result,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                audit_annotations: &r.audit_annotations,
                warnings: r.warnings.as_ref(),
            },
        }
        .serialize(serializer)
    }
}

/// `text` cut to at most `max` characters, the last of them `…` when it was cut.
pub fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((end, _)) if text[end..].chars().nth(1).is_some() => format!("{}…", &text[..end]),
        _ => text.to_string(),
    }
}

/// A number with thousands separators, as the caps' counts are written.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The deny message: the first [`MAX_MESSAGE_PARTS`] results, each cut to
/// [`MAX_MESSAGE_PART_CHARS`], then how many were left out.
pub fn capped_message(parts: &[String]) -> String {
    let mut listed: Vec<String> = parts
        .iter()
        .take(MAX_MESSAGE_PARTS)
        .map(|p| truncate_chars(p, MAX_MESSAGE_PART_CHARS))
        .collect();
    if parts.len() > MAX_MESSAGE_PARTS {
        listed.push(format!(
            "… and {} more ({} in all)",
            grouped(parts.len() - MAX_MESSAGE_PARTS),
            grouped(parts.len())
        ));
    }
    listed.join("; ")
}

/// The warnings: each cut to [`MAX_WARNING_CHARS`], in order, as many as fit in
/// [`MAX_WARNINGS`] entries and [`MAX_WARNINGS_TOTAL_CHARS`], the last entry then counting those
/// left out.
pub fn capped_warnings(warnings: Vec<String>) -> Vec<String> {
    // Room kept for the count at the end: "… and 1,000,000 more warnings (…)" fits in 80.
    const SUMMARY_ROOM: usize = 80;
    let all = warnings.len();
    let fits_whole = all <= MAX_WARNINGS
        && warnings
            .iter()
            .map(|w| w.chars().count().min(MAX_WARNING_CHARS))
            .sum::<usize>()
            <= MAX_WARNINGS_TOTAL_CHARS;
    if fits_whole {
        return warnings
            .into_iter()
            .map(|w| truncate_chars(&w, MAX_WARNING_CHARS))
            .collect();
    }
    let mut out = Vec::with_capacity(MAX_WARNINGS);
    let mut total = 0;
    for warning in warnings {
        let warning = truncate_chars(&warning, MAX_WARNING_CHARS);
        let chars = warning.chars().count();
        if out.len() + 1 >= MAX_WARNINGS || total + chars > MAX_WARNINGS_TOTAL_CHARS - SUMMARY_ROOM
        {
            break;
        }
        total += chars;
        out.push(warning);
    }
    let left = all - out.len();
    out.push(format!(
        "… and {} more warnings ({} in all)",
        grouped(left),
        grouped(all)
    ));
    out
}

/// The audit annotations: at most [`MAX_AUDIT_ANNOTATIONS`] (then one more,
/// [`TRUNCATED_ANNOTATION`], counting those left out), each listing at most
/// [`MAX_AUDIT_MESSAGES`] messages of at most [`MAX_AUDIT_MESSAGE_CHARS`].
pub fn capped_annotations(parts: Vec<(String, Vec<String>)>) -> HashMap<String, String> {
    let all = parts.len();
    let mut out = HashMap::with_capacity(all.min(MAX_AUDIT_ANNOTATIONS + 1));
    for (key, messages) in parts.into_iter().take(MAX_AUDIT_ANNOTATIONS) {
        let mut listed: Vec<String> = messages
            .iter()
            .take(MAX_AUDIT_MESSAGES)
            .map(|m| truncate_chars(m, MAX_AUDIT_MESSAGE_CHARS))
            .collect();
        if messages.len() > MAX_AUDIT_MESSAGES {
            listed.push(format!(
                "… and {} more ({} in all)",
                grouped(messages.len() - MAX_AUDIT_MESSAGES),
                grouped(messages.len())
            ));
        }
        out.insert(key, listed.join("; "));
    }
    if all > MAX_AUDIT_ANNOTATIONS {
        out.insert(
            TRUNCATED_ANNOTATION.to_string(),
            format!(
                "{} more policies with audit findings ({} in all)",
                grouped(all - MAX_AUDIT_ANNOTATIONS),
                grouped(all)
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn patch_is_base64_of_a_json_patch() {
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "add", "path": "/spec/x", "value": 1}
        ]))
        .unwrap();
        let response = AdmissionResponse::invalid("")
            .with_patch(patch.clone())
            .unwrap();
        let wire: Value = serde_json::to_value(answer(response)).unwrap();
        assert_eq!(wire["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(wire["kind"], "AdmissionReview");
        assert_eq!(wire["response"]["patchType"], "JSONPatch");
        let Value::String(b64) = &wire["response"]["patch"] else {
            panic!("patch is not a string: {wire}");
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let decoded: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(decoded, patch);
    }

    #[test]
    fn no_patch_no_patch_fields() {
        let wire = serde_json::to_value(answer(AdmissionResponse::invalid("x"))).unwrap();
        let response = wire["response"].as_object().unwrap();
        assert!(!response.contains_key("patch"));
        assert!(!response.contains_key("patchType"));
        assert!(!response.contains_key("warnings"));
        assert!(!response.contains_key("auditAnnotations"));
        assert_eq!(wire["response"]["status"]["message"], "x");
    }

    #[test]
    fn truncation_counts_characters() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcd", 3), "ab…");
        assert_eq!(truncate_chars("ééééé", 4), "ééé…");
        assert_eq!(truncate_chars("", 3), "");
        assert_eq!(grouped(1_234_567), "1,234,567");
        assert_eq!(grouped(999), "999");
    }

    #[test]
    fn message_lists_twenty_and_counts_the_rest() {
        let parts: Vec<String> = (0..10_000).map(|i| format!("[p] v{i}")).collect();
        let message = capped_message(&parts);
        assert!(message.starts_with("[p] v0; [p] v1; "));
        assert!(message.contains("[p] v19; … and 9,980 more (10,000 in all)"));
        assert!(!message.contains("v20"));
        let long = vec!["x".repeat(100_000)];
        assert_eq!(
            capped_message(&long).chars().count(),
            MAX_MESSAGE_PART_CHARS
        );
    }

    #[test]
    fn warnings_fit_what_the_apiserver_keeps() {
        let few = vec!["short".to_string(); 3];
        assert_eq!(capped_warnings(few.clone()), few);
        let many: Vec<String> = (0..50_000)
            .map(|i| format!("w{i} {}", "y".repeat(300)))
            .collect();
        let capped = capped_warnings(many);
        assert!(capped.len() <= MAX_WARNINGS);
        assert!(capped
            .iter()
            .all(|w| w.chars().count() <= MAX_WARNING_CHARS));
        let total: usize = capped.iter().map(|w| w.chars().count()).sum();
        assert!(total <= MAX_WARNINGS_TOTAL_CHARS, "{total}");
        let listed = capped.len() - 1;
        assert_eq!(
            capped.last().unwrap(),
            &format!(
                "… and {} more warnings (50,000 in all)",
                grouped(50_000 - listed)
            )
        );
    }

    #[test]
    fn annotations_are_capped() {
        let parts: Vec<(String, Vec<String>)> = (0..40)
            .map(|i| (format!("regate.dev/p{i}"), vec!["m".repeat(1000); 12]))
            .collect();
        let capped = capped_annotations(parts);
        assert_eq!(capped.len(), MAX_AUDIT_ANNOTATIONS + 1);
        assert_eq!(
            capped[TRUNCATED_ANNOTATION],
            "8 more policies with audit findings (40 in all)"
        );
        let one = &capped["regate.dev/p0"];
        assert!(one.ends_with("; … and 2 more (12 in all)"));
        assert!(one.chars().count() <= 10 * (MAX_AUDIT_MESSAGE_CHARS + 2) + 40);
    }
}
