//! Namespace → environment: the namespace's label first, then the config's names and patterns,
//! then the default (production unless configured: secure by default).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use globset::{Glob, GlobMatcher};

use crate::config::{Config, Environment};

/// An object's labels. Ordered, not hashed: an object has a handful, and comparing a few keys
/// costs less than hashing one with the standard hasher (Gatekeeper's label selectors look
/// labels up for every constraint).
pub type Labels = BTreeMap<String, String>;

/// Namespace labels as last seen from the cluster; empty when running without one.
#[derive(Debug, Default, Clone)]
pub struct NamespaceLabels {
    inner: Arc<RwLock<HashMap<String, Labels>>>,
    /// The Namespace objects themselves (without `managedFields`), for Gatekeeper's
    /// `input.review.namespaceObject`.
    objects: Arc<RwLock<HashMap<String, Arc<serde_json::Value>>>>,
}

impl NamespaceLabels {
    pub fn set(&self, namespace: &str, labels: Labels) {
        if let Ok(mut map) = self.inner.write() {
            map.insert(namespace.to_string(), labels);
        }
    }

    pub fn remove(&self, namespace: &str) {
        if let Ok(mut map) = self.inner.write() {
            map.remove(namespace);
        }
        if let Ok(mut map) = self.objects.write() {
            map.remove(namespace);
        }
    }

    /// Records a Namespace object as last seen (its labels are recorded with [`Self::set`]).
    pub fn set_object(&self, namespace: &str, object: serde_json::Value) {
        if let Ok(mut map) = self.objects.write() {
            map.insert(namespace.to_string(), Arc::new(object));
        }
    }

    pub fn object(&self, namespace: &str) -> Option<Arc<serde_json::Value>> {
        let map = self.objects.read().ok()?;
        map.get(namespace).cloned()
    }

    pub fn label(&self, namespace: &str, key: &str) -> Option<String> {
        let map = self.inner.read().ok()?;
        map.get(namespace)?.get(key).cloned()
    }

    pub fn labels(&self, namespace: &str) -> Option<Labels> {
        let map = self.inner.read().ok()?;
        map.get(namespace).cloned()
    }
}

/// Resolves environments with the patterns of one config compiled once.
#[derive(Debug, Clone)]
pub struct EnvironmentResolver {
    label: String,
    default: Environment,
    patterns: Vec<(GlobMatcher, Environment)>,
    labels: NamespaceLabels,
}

impl EnvironmentResolver {
    pub fn new(config: &Config, labels: NamespaceLabels) -> Self {
        let patterns = config
            .environments
            .namespaces
            .iter()
            .filter_map(|(pattern, env)| {
                // Config validation already rejected invalid globs.
                Glob::new(pattern).ok().map(|g| (g.compile_matcher(), *env))
            })
            .collect();
        Self {
            label: config.environments.label.clone(),
            default: config.environments.default,
            patterns,
            labels,
        }
    }

    /// The labels of a namespace as last seen, for Gatekeeper's `namespaceSelector`.
    pub fn namespace_labels(&self, namespace: &str) -> Option<Labels> {
        self.labels.labels(namespace)
    }

    /// The Namespace object as last seen, for Gatekeeper's `input.review.namespaceObject`.
    pub fn namespace_object(&self, namespace: &str) -> Option<Arc<serde_json::Value>> {
        self.labels.object(namespace)
    }

    pub fn resolve(&self, namespace: Option<&str>) -> Environment {
        let Some(namespace) = namespace.filter(|n| !n.is_empty()) else {
            return self.default;
        };
        if let Some(value) = self.labels.label(namespace, &self.label) {
            if let Ok(env) = value.parse() {
                return env;
            }
        }
        // Exact names win over patterns, whatever their order.
        if let Some((_, env)) = self
            .patterns
            .iter()
            .find(|(m, _)| m.glob().glob() == namespace)
        {
            return *env;
        }
        self.patterns
            .iter()
            .find(|(m, _)| m.is_match(namespace))
            .map(|(_, env)| *env)
            .unwrap_or(self.default)
    }

    pub fn labels(&self) -> &NamespaceLabels {
        &self.labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn label_then_config_then_default() -> Result<(), Box<dyn std::error::Error>> {
        let config = Config::parse(
            "environments:\n  namespaces: { dev: development, \"*-staging\": staging }\n",
            Path::new("t.yaml"),
        )?;
        let labels = NamespaceLabels::default();
        let resolver = EnvironmentResolver::new(&config, labels.clone());
        assert_eq!(resolver.resolve(Some("dev")), Environment::Development);
        assert_eq!(resolver.resolve(Some("shop-staging")), Environment::Staging);
        assert_eq!(resolver.resolve(Some("other")), Environment::Production);
        assert_eq!(resolver.resolve(None), Environment::Production);
        labels.set(
            "shop-staging",
            Labels::from([("environment".to_string(), "development".to_string())]),
        );
        assert_eq!(
            resolver.resolve(Some("shop-staging")),
            Environment::Development
        );
        Ok(())
    }
}
