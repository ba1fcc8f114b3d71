//! `data.inventory`: the objects referential templates compare against, laid out as Gatekeeper's
//! sync does: `cluster[<groupversion>][<kind>][<name>]` for cluster-scoped objects and
//! `namespace[<ns>][<groupversion>][<kind>][<name>]` for namespaced ones.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use crate::environment::NamespaceLabels;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inventory object {name:?}: {message}")]
pub struct InventoryError {
    pub name: String,
    pub message: String,
}

/// Objects by group-version, kind and name.
type ByVersion = BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    cluster: ByVersion,
    namespace: BTreeMap<String, ByVersion>,
    /// Labels of the Namespace objects added, for `namespaceSelector`.
    namespaces: HashMap<String, crate::environment::Labels>,
}

impl Inventory {
    pub fn is_empty(&self) -> bool {
        self.cluster.is_empty() && self.namespace.is_empty()
    }

    /// Adds one object; an object with the same place replaces the earlier one.
    pub fn add(&mut self, object: &Value) -> Result<(), InventoryError> {
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let fail = |message: &str| InventoryError {
            name: name.clone(),
            message: message.to_string(),
        };
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty() && !v.ends_with('/'))
            .ok_or_else(|| fail("has no apiVersion"))?;
        let kind = object
            .get("kind")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| fail("has no kind"))?;
        if name.is_empty() {
            return Err(fail("has no metadata.name"));
        }
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let tree = match namespace {
            None => &mut self.cluster,
            Some(ns) => self.namespace.entry(ns.to_string()).or_default(),
        };
        tree.entry(api_version.to_string())
            .or_default()
            .entry(kind.to_string())
            .or_default()
            .insert(name.clone(), object.clone());
        if kind == "Namespace" && !api_version.contains('/') {
            let labels = object
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            self.namespaces.insert(name, labels);
        }
        Ok(())
    }

    /// The data document: `{"inventory": {...}}`, holding only the trees that have objects
    /// (with nothing synced, Gatekeeper's `data.inventory` is undefined too).
    pub fn to_data(&self) -> Value {
        let mut inv = Map::new();
        if !self.cluster.is_empty() {
            inv.insert(
                "cluster".into(),
                serde_json::to_value(&self.cluster).unwrap_or_default(),
            );
        }
        if !self.namespace.is_empty() {
            inv.insert(
                "namespace".into(),
                serde_json::to_value(&self.namespace).unwrap_or_default(),
            );
        }
        if inv.is_empty() {
            return Value::Object(Map::new());
        }
        let mut data = Map::new();
        data.insert("inventory".into(), Value::Object(inv));
        Value::Object(data)
    }

    /// The values of every Secret in the inventory (see [`crate::secrets`]).
    pub fn secret_values(&self) -> crate::secrets::SecretValues {
        let trees = std::iter::once(&self.cluster).chain(self.namespace.values());
        let secrets = trees.flat_map(|tree| {
            tree.values()
                .filter_map(|kinds| kinds.get("Secret"))
                .flat_map(|by_name| by_name.values())
        });
        crate::secrets::SecretValues::of_objects(secrets)
    }

    /// Namespace labels as the inventory's Namespace objects give them.
    pub fn namespace_labels(&self) -> NamespaceLabels {
        let labels = NamespaceLabels::default();
        for (ns, l) in &self.namespaces {
            labels.set(ns, l.clone());
        }
        labels
    }
}

/// The template annotation that names the kinds a referential template reads from
/// `data.inventory`.
pub const REQUIRES_SYNC_DATA: &str = "metadata.gatekeeper.sh/requires-sync-data";

/// A kind to keep in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SyncKind {
    pub group: String,
    pub version: String,
    pub kind: String,
}

#[derive(Debug, serde::Deserialize)]
struct GvkSet {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    kinds: Vec<String>,
}

/// Parses `requires-sync-data`: a JSON list of requirements, each a list of alternative
/// `{groups, versions, kinds}`; every kind any of them names is returned, so a sync limited to
/// these kinds is bounded and still satisfies every alternative. The library wraps the JSON in
/// an extra pair of quotes, which Gatekeeper tolerates, and so does this.
pub fn parse_requires_sync_data(text: &str) -> Result<Vec<SyncKind>, String> {
    let trimmed = text.trim();
    let json = trimmed
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(trimmed);
    let requirements: Vec<Vec<GvkSet>> = serde_json::from_str(json).map_err(|e| {
        format!("{REQUIRES_SYNC_DATA} is not a list of lists of {{groups, versions, kinds}}: {e}")
    })?;
    let mut out = Vec::new();
    for set in requirements.iter().flatten() {
        for group in &set.groups {
            for version in &set.versions {
                for kind in &set.kinds {
                    out.push(SyncKind {
                        group: group.clone(),
                        version: version.clone(),
                        kind: kind.clone(),
                    });
                }
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

impl SyncKind {
    /// The `apiVersion` objects of this kind carry (`v1`, `networking.k8s.io/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether `object` is of this group, version and kind.
    pub fn holds(&self, object: &Value) -> bool {
        object.get("kind").and_then(Value::as_str) == Some(self.kind.as_str())
            && object.get("apiVersion").and_then(Value::as_str) == Some(&*self.api_version())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryLoadError {
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error("{location}: {source}")]
    Object {
        location: String,
        #[source]
        source: InventoryError,
    },
}

/// An inventory of the objects under `paths` (files or directories, as `eval -f` reads them),
/// bounded to `kinds`: objects of any other kind are left out, as a cluster sync leaves them.
/// Also returns the Namespace objects found, synced or not (for `input.review.namespaceObject`).
pub fn read_paths(
    paths: &[std::path::PathBuf],
    kinds: &[SyncKind],
) -> Result<(Inventory, Vec<Value>), InventoryLoadError> {
    let mut inventory = Inventory::default();
    let mut namespaces = Vec::new();
    for m in crate::manifest::read_paths(paths)? {
        if m.object.get("kind").and_then(Value::as_str) == Some("Namespace") {
            namespaces.push(m.object.clone());
        }
        if kinds.iter().any(|k| k.holds(&m.object)) {
            inventory
                .add(&m.object)
                .map_err(|source| InventoryLoadError::Object {
                    location: m.location(),
                    source,
                })?;
        }
    }
    Ok((inventory, namespaces))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lays_out_cluster_and_namespace_trees() {
        let mut inv = Inventory::default();
        inv.add(&json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "a", "namespace": "web"}}))
            .unwrap();
        inv.add(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web", "labels": {"env": "prod"}}}))
            .unwrap();
        let data = inv.to_data();
        assert_eq!(
            data["inventory"]["namespace"]["web"]["networking.k8s.io/v1"]["Ingress"]["a"]["kind"],
            "Ingress"
        );
        assert_eq!(
            data["inventory"]["cluster"]["v1"]["Namespace"]["web"]["metadata"]["name"],
            "web"
        );
        assert_eq!(
            inv.namespace_labels().label("web", "env").as_deref(),
            Some("prod")
        );
        assert!(inv
            .add(&json!({"kind": "Pod", "metadata": {"name": "x"}}))
            .is_err());
    }

    #[test]
    fn sync_kind_holds_only_its_group_version_and_kind() {
        let k = SyncKind {
            group: "networking.k8s.io".into(),
            version: "v1".into(),
            kind: "Ingress".into(),
        };
        assert!(k.holds(&json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress"})));
        assert!(!k.holds(&json!({"apiVersion": "extensions/v1beta1", "kind": "Ingress"})));
        assert!(!k.holds(&json!({"apiVersion": "v1", "kind": "Pod"})));
        let core = SyncKind {
            group: String::new(),
            version: "v1".into(),
            kind: "Namespace".into(),
        };
        assert_eq!(core.api_version(), "v1");
    }

    #[test]
    fn empty_inventory_adds_no_data() {
        assert_eq!(Inventory::default().to_data(), json!({}));
    }

    #[test]
    fn sync_requirements_are_bounded_kinds() {
        let text = "\"[\n  [\n    {\"groups\": [\"extensions\"], \"versions\": [\"v1beta1\"], \"kinds\": [\"Ingress\"]},\n    {\"groups\": [\"networking.k8s.io\"], \"versions\": [\"v1beta1\", \"v1\"], \"kinds\": [\"Ingress\"]}\n  ]\n]\"\n";
        let kinds = parse_requires_sync_data(text).unwrap();
        assert_eq!(kinds.len(), 3);
        assert_eq!(kinds[0].group, "extensions");
        assert!(kinds.iter().all(|k| k.kind == "Ingress"));
        assert!(parse_requires_sync_data("[{}]").is_err());
    }
}
