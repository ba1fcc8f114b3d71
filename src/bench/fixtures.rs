//! AdmissionReview fixtures for the benchmarks: `*.json` files from a directory, with the
//! decision expected for each from the directory's `expected.yaml` (`file: {allowed: bool}`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::BenchError;

/// The default mix: `fixtures/bench/`, or `fixtures/admission/` where there is no bench mix.
pub fn default_path() -> PathBuf {
    let bench = PathBuf::from("fixtures/bench");
    if bench.is_dir() {
        bench
    } else {
        PathBuf::from("fixtures/admission")
    }
}

/// One AdmissionReview as sent on the wire.
#[derive(Debug, Clone)]
pub struct Fixture {
    /// File name, e.g. `deployment-00-checkout.json`.
    pub name: String,
    pub body: Vec<u8>,
    /// `request.uid` in the file.
    pub uid: String,
    /// `request.kind.kind`.
    pub kind: String,
    /// `response.allowed` expected from `/validate`, when `expected.yaml` says.
    pub expected_allowed: Option<bool>,
    /// Where the uid's characters sit in `body`, when it occurs exactly once: each request of
    /// the load generator carries its own uid there, so an echoed uid proves the answer is its own.
    uid_span: Option<(usize, usize)>,
}

impl Fixture {
    /// The body with `uid` as its request uid (the original body when the uid cannot be placed).
    pub fn body_with_uid(&self, uid: &str) -> Option<Vec<u8>> {
        let (start, end) = self.uid_span?;
        let mut out = Vec::with_capacity(self.body.len() + uid.len());
        out.extend_from_slice(&self.body[..start]);
        out.extend_from_slice(uid.as_bytes());
        out.extend_from_slice(&self.body[end..]);
        Some(out)
    }

    pub fn from_bytes(name: &str, body: Vec<u8>, path: &Path) -> Result<Fixture, BenchError> {
        let bad = |message: String| BenchError::Fixture {
            path: path.to_path_buf(),
            message,
        };
        let value: Value =
            serde_json::from_slice(&body).map_err(|e| bad(format!("not JSON: {e}")))?;
        let uid = value
            .pointer("/request/uid")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("not an AdmissionReview: no request.uid".to_string()))?
            .to_string();
        let kind = value
            .pointer("/request/kind/kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let quoted = format!("\"{uid}\"");
        let hits: Vec<usize> = find_all(&body, quoted.as_bytes());
        let plain = uid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        let uid_span = match hits.as_slice() {
            [at] if plain => Some((at + 1, at + 1 + uid.len())),
            _ => None,
        };
        Ok(Fixture {
            name: name.to_string(),
            body,
            uid,
            kind,
            expected_allowed: None,
            uid_span,
        })
    }
}

fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return Vec::new();
    }
    (0..=haystack.len() - needle.len())
        .filter(|&i| &haystack[i..i + needle.len()] == needle)
        .collect()
}

/// Loads `path`: a directory of `*.json` AdmissionReviews (sorted by name) with an optional
/// `expected.yaml`, or a single file (its directory's `expected.yaml` applies).
pub fn load(path: &Path) -> Result<Vec<Fixture>, BenchError> {
    let read_err = |source| BenchError::Read {
        path: path.to_path_buf(),
        source,
    };
    let (dir, files): (PathBuf, Vec<PathBuf>) = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(read_err)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        (path.to_path_buf(), files)
    } else {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        (dir, vec![path.to_path_buf()])
    };
    let expected = load_expected(&dir.join("expected.yaml"))?;
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let body = std::fs::read(&file).map_err(|source| BenchError::Read {
            path: file.clone(),
            source,
        })?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut fixture = Fixture::from_bytes(&name, body, &file)?;
        fixture.expected_allowed = expected.get(&name).copied();
        out.push(fixture);
    }
    if out.is_empty() {
        return Err(BenchError::NoFixtures(path.to_path_buf()));
    }
    Ok(out)
}

/// `expected.yaml`: file name → `{allowed: bool, ...}`; absent means nothing is expected.
fn load_expected(path: &Path) -> Result<BTreeMap<String, bool>, BenchError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(BenchError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let doc: BTreeMap<String, serde_yaml::Value> =
        serde_yaml::from_str::<Option<BTreeMap<String, serde_yaml::Value>>>(&text)
            .map_err(|e| BenchError::Fixture {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?
            .unwrap_or_default();
    Ok(doc
        .into_iter()
        .filter_map(|(file, v)| {
            v.get("allowed")
                .and_then(serde_yaml::Value::as_bool)
                .map(|a| (file, a))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_is_replaced_in_place() {
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"abc-1","kind":{"kind":"Pod"}}}"#;
        let f = Fixture::from_bytes("x.json", body.to_vec(), Path::new("x.json")).unwrap();
        assert_eq!(f.kind, "Pod");
        let replaced = f.body_with_uid("bench-000042").unwrap();
        let v: Value = serde_json::from_slice(&replaced).unwrap();
        assert_eq!(
            v.pointer("/request/uid").and_then(Value::as_str),
            Some("bench-000042")
        );
    }

    #[test]
    fn bench_mix_loads_with_expectations() {
        let fixtures = load(&default_path()).unwrap();
        assert!(!fixtures.is_empty());
        assert!(fixtures.iter().all(|f| f.expected_allowed.is_some()));
        assert!(fixtures.iter().all(|f| f.uid_span.is_some()));
    }
}
