//! Bytes or manifests → a `Review`: kube-core's `AdmissionRequest` for the request's attributes,
//! plus the whole AdmissionReview, both as the value policies see as `input` and as JSON (each
//! built when first needed: a webhook's body is parsed into the first). The webhook, `eval`,
//! `test` and `audit` all build their reviews here, so a manifest is judged exactly like the
//! apiserver's call.

use std::sync::OnceLock;

use kube::core::admission::{AdmissionRequest, Operation};
use kube::core::{DynamicObject, TypeMeta};
use serde_json::{json, Map, Value};

use crate::admission::shape::Shape;

pub const API_VERSION: &str = "admission.k8s.io/v1";

/// Why a body is not an AdmissionReview we can judge.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("request body is not valid JSON: {source}")]
    NotJson {
        #[source]
        source: serde_json::Error,
        uid: Option<String>,
    },
    #[error("request body is not a JSON object: an AdmissionReview is expected")]
    NotObject,
    #[error("apiVersion must be \"admission.k8s.io/v1\", got {got}")]
    WrongApiVersion { got: String, uid: Option<String> },
    #[error("kind must be \"AdmissionReview\", got {got}")]
    WrongKind { got: String, uid: Option<String> },
    #[error("AdmissionReview has no request")]
    MissingRequest,
    #[error("AdmissionReview request has no uid (request.uid)")]
    MissingUid,
    #[error("AdmissionReview request is invalid: {message}")]
    InvalidRequest { uid: String, message: String },
    #[error(
        "request body is too large to parse: parsed, it would take about {} MiB ({values} JSON \
         values, {members} object members), more than the limit of {} MiB ({} times \
         limits.maxBodyBytes)",
        estimated / (1024 * 1024),
        limit / (1024 * 1024),
        crate::admission::shape::MAX_PARSED_PER_BODY_BYTE
    )]
    TooLargeToParse {
        estimated: usize,
        values: usize,
        members: usize,
        limit: usize,
        uid: Option<String>,
    },
}

impl ReviewError {
    /// The request uid when the body had one, so the answer can still echo it.
    pub fn uid(&self) -> Option<&str> {
        match self {
            ReviewError::InvalidRequest { uid, .. } => Some(uid),
            ReviewError::NotJson { uid, .. }
            | ReviewError::WrongApiVersion { uid, .. }
            | ReviewError::WrongKind { uid, .. }
            | ReviewError::TooLargeToParse { uid, .. } => uid.as_deref(),
            _ => None,
        }
    }
}

/// `request.uid` of a body that is not an AdmissionReview we can judge, when it has one: the
/// error answer echoes it. Reads no more than the uid: everything else is skipped without
/// building values, so bodies nested deeper than the parser's limit or holding numbers out of
/// range still give their uid.
fn probe_uid(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        request: Option<ProbeRequest>,
    }
    #[derive(serde::Deserialize)]
    struct ProbeRequest {
        uid: Option<String>,
    }
    let probe: Probe = serde_json::from_slice(body).ok()?;
    probe.request?.uid.filter(|uid| !uid.is_empty())
}

/// A wrong value as the error message quotes it: at most 100 characters of it, since it could be
/// anything up to the body size limit.
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(100) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

fn uid_of(top: &Map<String, Value>) -> Option<String> {
    top.get("request")?
        .get("uid")?
        .as_str()
        .filter(|uid| !uid.is_empty())
        .map(str::to_string)
}

/// Members of `request` that are not deserialised into its attributes.
const LEFT_IN_INPUT: [&str; 3] = ["object", "oldObject", "options"];

/// The request's attributes (all of `request` but [`LEFT_IN_INPUT`]) as kube-core's type;
/// `misshapen` names `object` or `oldObject` when it is neither an object nor null.
fn request_of(
    uid: String,
    mut attributes: Map<String, Value>,
    misshapen: Option<&str>,
) -> Result<AdmissionRequest<DynamicObject>, ReviewError> {
    attributes
        .entry("userInfo")
        .or_insert_with(|| Value::Object(Map::new()));
    for field in ["kind", "resource", "operation"] {
        if !attributes.contains_key(field) {
            return Err(ReviewError::InvalidRequest {
                uid,
                message: format!("request.{field} is missing"),
            });
        }
    }
    if let Some(field) = misshapen {
        return Err(ReviewError::InvalidRequest {
            uid,
            message: format!("request.{field} must be an object or null"),
        });
    }
    let mut parsed: AdmissionRequest<DynamicObject> =
        match serde_json::from_value(Value::Object(attributes)) {
            Ok(parsed) => parsed,
            Err(e) => {
                return Err(ReviewError::InvalidRequest {
                    uid,
                    // serde quotes the value it could not use; the review's fields may hold a
                    // copy of anything, a Secret's value included.
                    message: format!(
                        "request: {}",
                        crate::secrets::without_quoted_values(&e.to_string())
                    ),
                });
            }
        };
    // The response copies these from the request (kube-core fills them when converting a
    // whole review; here only the request is deserialised).
    parsed.types = TypeMeta {
        api_version: API_VERSION.to_string(),
        kind: "AdmissionReview".to_string(),
    };
    Ok(parsed)
}

/// The attributes of a review parsed straight into the policies' value, when it is one that
/// [`Review::from_value`] accepts: the same checks, on the other representation. `None` for
/// anything else, which then goes the JSON way for its precise error.
fn attributes_of(document: &regorus::Value) -> Option<AdmissionRequest<DynamicObject>> {
    let is = |v: &regorus::Value, expected: &str| v.as_string().is_ok_and(|s| &**s == expected);
    if !is(&document["apiVersion"], API_VERSION) || !is(&document["kind"], "AdmissionReview") {
        return None;
    }
    let request_value = &document["request"];
    let regorus::Value::Object(request) = request_value else {
        return None;
    };
    let uid = request_value["uid"]
        .as_string()
        .ok()
        .filter(|uid| !uid.is_empty())?
        .to_string();
    let mut attributes = Map::with_capacity(request.len());
    for (k, v) in request.iter() {
        let key = k.as_string().ok()?;
        match (LEFT_IN_INPUT.iter().position(|f| *f == &**key), v) {
            // `object` or `oldObject`, as `from_value` requires them.
            (Some(0 | 1), regorus::Value::Null | regorus::Value::Object(_)) => {}
            (Some(0 | 1), _) => return None,
            (Some(_), _) => {}
            // The attributes hold no number that deserialises (no field of kube-core's type is
            // one), so the value's own serialisation, which writes numbers its way, is exact.
            (None, _) => {
                attributes.insert(key.to_string(), serde_json::to_value(v).ok()?);
            }
        }
    }
    request_of(uid, attributes, None).ok()
}

/// A parsed admission request.
#[derive(Debug, Clone)]
pub struct Review {
    /// The request's attributes (object and oldObject are left in the review, not copied here).
    pub request: AdmissionRequest<DynamicObject>,
    /// The whole AdmissionReview as policies read it, `managedFields` included
    /// ([`Review::document`]): converted from `json`, or for a webhook's review parsed from its
    /// body, when first asked for (only a set whose policies read `managedFields` asks).
    document: OnceLock<regorus::Value>,
    /// A webhook's review as policies read it without `managedFields`, parsed from its body
    /// ([`crate::admission::input::parse_without_managed_fields`]): `managedFields` is often the
    /// larger part of an object, and most sets never read it.
    lean: Option<regorus::Value>,
    /// The whole AdmissionReview as JSON ([`Review::input`]): given, or parsed from `text` when
    /// first asked for. A webhook's review needs it only for mutation patches, Gatekeeper's
    /// expansion and the values of a Secret under review. Either this or `lean` is set.
    json: OnceLock<Value>,
    /// The body a webhook review was parsed from, kept for `json`.
    text: Option<String>,
    /// Built by regate around a bare object (`eval`, `audit`, `verify`), not sent by an
    /// apiserver: Gatekeeper constraints then see Gatekeeper's bare-object review.
    pub synthesized: bool,
}

impl Review {
    /// Parses a webhook request body.
    pub fn from_slice(body: &[u8]) -> Result<Review, ReviewError> {
        Self::from_body(body.to_vec())
    }

    /// Parses a webhook request body, keeping it for [`Review::input`].
    pub fn from_body(body: Vec<u8>) -> Result<Review, ReviewError> {
        // UTF-8 checked once for the whole body: parsing bytes checks every string on its own.
        match String::from_utf8(body) {
            Ok(text) => Self::from_text(text),
            Err(e) => Self::from_json_text(Err(e.as_bytes())),
        }
    }

    /// The body parsed straight into the policies' value. Anything short of a well-formed
    /// review goes the JSON way instead ([`Review::from_value`]), which says precisely what is
    /// wrong; so does a body that is not JSON, for serde_json's error.
    fn from_text(text: String) -> Result<Review, ReviewError> {
        let Ok(lean) = crate::admission::input::parse_without_managed_fields(&text) else {
            return Self::from_json_text(Ok(&text));
        };
        match attributes_of(&lean) {
            Some(request) => Ok(Review {
                request,
                document: OnceLock::new(),
                lean: Some(lean),
                json: OnceLock::new(),
                text: Some(text),
                synthesized: false,
            }),
            None => Self::from_json_text(Ok(&text)),
        }
    }

    /// A body (text, or bytes that are not UTF-8) parsed as JSON, then [`Review::from_value`].
    fn from_json_text(body: Result<&str, &[u8]>) -> Result<Review, ReviewError> {
        let parsed = match body {
            Ok(text) => serde_json::from_str(text),
            Err(bytes) => serde_json::from_slice(bytes),
        };
        let value: Value = parsed.map_err(|source| ReviewError::NotJson {
            source,
            uid: probe_uid(match body {
                Ok(text) => text.as_bytes(),
                Err(bytes) => bytes,
            }),
        })?;
        Self::from_value(value)
    }

    /// Refuses, before parsing it, a body whose shape (see [`crate::admission::shape`]) would
    /// take more than `max_parsed_bytes` once parsed: far more memory than its size says.
    pub fn check_shape(
        body: &[u8],
        shape: &Shape,
        max_parsed_bytes: usize,
    ) -> Result<(), ReviewError> {
        let estimated = shape.estimated_parsed_bytes();
        if estimated <= max_parsed_bytes {
            return Ok(());
        }
        Err(ReviewError::TooLargeToParse {
            estimated,
            values: shape.values,
            members: shape.members,
            limit: max_parsed_bytes,
            uid: probe_uid(body),
        })
    }

    /// Validates an AdmissionReview already parsed as JSON.
    pub fn from_value(value: Value) -> Result<Review, ReviewError> {
        let Value::Object(top) = &value else {
            return Err(ReviewError::NotObject);
        };
        match top.get("apiVersion") {
            Some(Value::String(v)) if v == API_VERSION => {}
            Some(other) => {
                return Err(ReviewError::WrongApiVersion {
                    got: shown(other),
                    uid: uid_of(top),
                })
            }
            None => {
                return Err(ReviewError::WrongApiVersion {
                    got: "nothing".to_string(),
                    uid: uid_of(top),
                })
            }
        }
        match top.get("kind") {
            Some(Value::String(k)) if k == "AdmissionReview" => {}
            Some(other) => {
                return Err(ReviewError::WrongKind {
                    got: shown(other),
                    uid: uid_of(top),
                })
            }
            None => {
                return Err(ReviewError::WrongKind {
                    got: "nothing".to_string(),
                    uid: uid_of(top),
                })
            }
        }
        let request = match top.get("request") {
            Some(Value::Object(r)) => r,
            Some(Value::Null) | None => return Err(ReviewError::MissingRequest),
            Some(_) => return Err(ReviewError::MissingRequest),
        };
        let uid = match request.get("uid") {
            Some(Value::String(uid)) if !uid.is_empty() => uid.clone(),
            _ => return Err(ReviewError::MissingUid),
        };
        let misshapen = ["object", "oldObject"].into_iter().find(|field| {
            !matches!(
                request.get(*field),
                None | Some(Value::Null) | Some(Value::Object(_))
            )
        });
        // Deserialize the attributes without the (possibly large) objects; they stay in `input`.
        let attributes = request
            .iter()
            .filter(|(k, _)| !LEFT_IN_INPUT.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let parsed = request_of(uid, attributes, misshapen)?;
        Ok(Review {
            request: parsed,
            document: OnceLock::new(),
            lean: None,
            json: OnceLock::from(value),
            text: None,
            synthesized: false,
        })
    }

    pub fn uid(&self) -> &str {
        &self.request.uid
    }

    pub fn kind(&self) -> &str {
        &self.request.kind.kind
    }

    pub fn namespace(&self) -> Option<&str> {
        self.request.namespace.as_deref().filter(|n| !n.is_empty())
    }

    pub fn name(&self) -> &str {
        if !self.request.name.is_empty() {
            return &self.request.name;
        }
        let metadata = &self.document_except_managed_fields()["request"]["object"]["metadata"];
        let name = match &metadata["name"] {
            regorus::Value::Undefined => &metadata["generateName"],
            name => name,
        };
        name.as_string().map_or("", |name| name)
    }

    pub fn operation(&self) -> &'static str {
        match self.request.operation {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }

    pub fn sub_resource(&self) -> Option<&str> {
        self.request
            .sub_resource
            .as_deref()
            .filter(|s| !s.is_empty())
    }

    /// The values of this review's Secrets, its object's and its old object's: what every
    /// text about it is scrubbed of.
    pub fn secret_values(&self) -> crate::secrets::SecretValues {
        let request = &self.document_except_managed_fields()["request"];
        let secret = |field: &str| {
            request[field]["kind"]
                .as_string()
                .is_ok_and(|kind| &**kind == "Secret")
        };
        if !secret("object") && !secret("oldObject") {
            // Nothing to scrub, and no need for the review's JSON.
            return crate::secrets::SecretValues::default();
        }
        let old = self.input().pointer("/request/oldObject");
        crate::secrets::SecretValues::of_objects(self.object().into_iter().chain(old))
    }

    /// The whole AdmissionReview as JSON.
    pub fn input(&self) -> &Value {
        self.json.get_or_init(|| {
            // Unset only for a webhook's review, whose `text` parsed once already, into
            // `document`: it cannot fail to parse now.
            self.text
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or(Value::Null)
        })
    }

    /// The whole AdmissionReview as policies read it, `managedFields` included.
    pub fn document(&self) -> &regorus::Value {
        self.document.get_or_init(|| {
            // A webhook's body parsed once already (without `managedFields`, which are read
            // and checked all the same): it cannot fail to parse now.
            self.text
                .as_deref()
                .and_then(|text| crate::admission::input::parse(text).ok())
                .unwrap_or_else(|| crate::admission::input::from_json(self.input()))
        })
    }

    /// The review as policies read it, for reading anything but `managedFields`: a webhook's
    /// review has them left out, one built from JSON keeps them.
    pub fn document_except_managed_fields(&self) -> &regorus::Value {
        match &self.lean {
            Some(lean) => lean,
            None => self.document(),
        }
    }

    /// The policies' `input` for one judgement: see [`crate::admission::input::for_policies`].
    pub fn policy_input(&self, drop_managed_fields: bool) -> regorus::Value {
        if drop_managed_fields {
            crate::admission::input::for_policies(self.document_except_managed_fields(), true)
        } else {
            crate::admission::input::for_policies(self.document(), false)
        }
    }

    /// Whether the request carries an object (`request.object` is a JSON object).
    pub fn has_object(&self) -> bool {
        matches!(
            &self.document_except_managed_fields()["request"]["object"],
            regorus::Value::Object(_)
        )
    }

    pub fn object(&self) -> Option<&Value> {
        if !self.has_object() {
            return None;
        }
        self.input()
            .get("request")
            .and_then(|r| r.get("object"))
            .filter(|o| o.is_object())
    }

    pub fn user(&self) -> &str {
        self.request.user_info.username.as_deref().unwrap_or("")
    }
}

/// How to present a manifest object as an admission request.
#[derive(Debug, Clone)]
pub struct ManifestRequest {
    pub namespace: Option<String>,
    pub operation: String,
    pub old_object: Option<Value>,
    pub sub_resource: Option<String>,
    pub username: String,
    pub uid: String,
}

impl Default for ManifestRequest {
    fn default() -> Self {
        Self {
            namespace: None,
            operation: "CREATE".to_string(),
            old_object: None,
            sub_resource: None,
            username: "regate-cli".to_string(),
            uid: "00000000-0000-0000-0000-000000000000".to_string(),
        }
    }
}

/// Kinds that live outside namespaces: their requests carry no namespace.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "APIService",
    "CSIDriver",
    "CSINode",
    "IngressClass",
    "RuntimeClass",
    "VolumeAttachment",
    "ClusterPolicyReport",
    "CertificateSigningRequest",
];

pub fn is_cluster_scoped(kind: &str) -> bool {
    CLUSTER_SCOPED.contains(&kind)
}

/// The resource name of a kind, as the apiserver would put it in `request.resource`.
pub fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.as_str() {
        "endpoints" => lower,
        "networkpolicy" | "podsecuritypolicy" | "policy" => {
            format!("{}ies", &lower[..lower.len() - 1])
        }
        "ingress" => "ingresses".to_string(),
        _ if lower.ends_with('s') => format!("{lower}es"),
        _ if lower.ends_with('y') && !lower.ends_with("ay") && !lower.ends_with("ey") => {
            format!("{}ies", &lower[..lower.len() - 1])
        }
        _ => format!("{lower}s"),
    }
}

impl Review {
    /// Wraps a manifest object (or passes an AdmissionReview through) as the apiserver would send it.
    pub fn from_manifest(object: Value, opts: &ManifestRequest) -> Result<Review, ReviewError> {
        if object.get("kind").and_then(Value::as_str) == Some("AdmissionReview") {
            return Self::from_value(object);
        }
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("v1")
            .to_string();
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.clone()),
        };
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let namespace = if is_cluster_scoped(&kind) {
            None
        } else {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| opts.namespace.clone())
                .or_else(|| Some("default".to_string()))
        };
        let mut object = object;
        if let (Some(ns), Some(meta)) = (
            &namespace,
            object.get_mut("metadata").and_then(Value::as_object_mut),
        ) {
            meta.entry("namespace")
                .or_insert_with(|| Value::String(ns.clone()));
        }
        let gvk = json!({"group": group, "version": version, "kind": kind});
        let gvr = json!({"group": group, "version": version, "resource": plural(&kind)});
        let mut request = json!({
            "uid": opts.uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": name,
            "operation": opts.operation,
            "userInfo": {"username": opts.username, "groups": ["system:authenticated"]},
            "object": object,
            "oldObject": opts.old_object.clone().unwrap_or(Value::Null),
            "dryRun": false,
            "options": {"kind": format!("{}Options", title_case(&opts.operation)), "apiVersion": "meta.k8s.io/v1"},
        });
        if let Some(map) = request.as_object_mut() {
            if let Some(ns) = namespace {
                map.insert("namespace".into(), Value::String(ns));
            }
            if let Some(sr) = &opts.sub_resource {
                map.insert("subResource".into(), Value::String(sr.clone()));
                map.insert("requestSubResource".into(), Value::String(sr.clone()));
            }
        }
        let mut review = Self::from_value(
            json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}),
        )?;
        review.synthesized = true;
        Ok(review)
    }
}

fn title_case(op: &str) -> String {
    let lower = op.to_ascii_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(plural("NetworkPolicy"), "networkpolicies");
        assert_eq!(plural("Deployment"), "deployments");
        assert_eq!(plural("Ingress"), "ingresses");
        assert_eq!(plural("ConfigMap"), "configmaps");
    }

    #[test]
    fn missing_uid_is_named() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#;
        let err = Review::from_slice(body).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("AdmissionReview request has no uid (request.uid)")
        );
    }

    /// A webhook's body and the same review given as JSON make the same review.
    fn same_review(name: &str, text: &str) {
        let json: Value = serde_json::from_str(text).unwrap();
        let from_body = Review::from_slice(text.as_bytes()).map_err(|e| e.to_string());
        let from_json = Review::from_value(json).map_err(|e| e.to_string());
        match (&from_body, &from_json) {
            (Ok(a), Ok(b)) => {
                assert_eq!(
                    format!("{:?}", a.request),
                    format!("{:?}", b.request),
                    "{name}"
                );
                assert_eq!(a.document(), b.document(), "{name}");
                for drop in [true, false] {
                    assert_eq!(a.policy_input(drop), b.policy_input(drop), "{name}");
                }
                assert_eq!(a.input(), b.input(), "{name}");
                assert_eq!(a.name(), b.name(), "{name}");
                assert_eq!(a.has_object(), b.has_object(), "{name}");
                assert_eq!(a.object(), b.object(), "{name}");
                assert_eq!(
                    a.secret_values().is_empty(),
                    b.secret_values().is_empty(),
                    "{name}"
                );
            }
            _ => assert_eq!(from_body.err(), from_json.err(), "{name}"),
        }
    }

    #[test]
    fn every_fixture_makes_the_same_review_from_its_body() {
        for (name, text) in crate::admission::fixture_bodies() {
            same_review(&name, &text);
        }
    }

    #[test]
    fn odd_reviews_get_the_same_answer_from_their_body() {
        let review = |request: &str| {
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request}}}"#
            )
        };
        let gvk = r#""kind":{"group":"","version":"v1","kind":"Secret"},"resource":{"group":"","version":"v1","resource":"secrets"},"operation":"CREATE""#;
        let cases = [
            r#"{"kind":"AdmissionReview","request":{"uid":"u"}}"#.to_string(),
            r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u"}}"#.to_string(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"Review","request":{"uid":"u"}}"#.to_string(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_string(),
            r#"[1]"#.to_string(),
            review("null"),
            review(r#"{"uid":""}"#),
            review(r#"{"uid":"u","object":1}"#),
            review(&format!(r#"{{"uid":"u",{gvk},"object":1}}"#)),
            review(&format!(r#"{{"uid":"u",{gvk},"oldObject":[]}}"#)),
            review(&format!(r#"{{"uid":"u",{gvk},"userInfo":5}}"#)),
            review(&format!(r#"{{"uid":"u",{gvk},"name":1.5}}"#)),
            review(&format!(r#"{{"uid":"u",{gvk},"dryRun":"s3cr3t"}}"#)),
            review(&format!(r#"{{"uid":"u",{gvk},"dryRun":1,"options":[2.5]}}"#)),
            review(&format!(r#"{{"uid":"u",{gvk},"name":"","object":{{"kind":"Secret","metadata":{{"generateName":"g-"}},"data":{{"k":"dmFsdWU="}}}}}}"#)),
            review(&format!(r#"{{"uid":"u",{gvk},"object":{{"metadata":{{"name":7,"generateName":"g"}}}},"oldObject":{{"kind":"Secret","stringData":{{"k":"v"}}}}}}"#)),
            review(&format!(r#"{{"uid":"u",{gvk},"userInfo":{{"username":"me","extra":{{"x":["y"]}}}},"extra":{{"n":1.0}}}}"#)),
        ];
        for (i, text) in cases.iter().enumerate() {
            same_review(&format!("case {i}: {text}"), text);
        }
    }

    #[test]
    fn manifest_becomes_review() -> Result<(), ReviewError> {
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {}});
        let review = Review::from_manifest(obj, &ManifestRequest::default())?;
        assert_eq!(review.kind(), "Deployment");
        assert_eq!(review.namespace(), Some("default"));
        assert_eq!(review.request.resource.resource, "deployments");
        Ok(())
    }
}
