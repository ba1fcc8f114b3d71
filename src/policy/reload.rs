//! The live policy set: built off the request path, swapped whole, and kept when a new one fails.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::environment::NamespaceLabels;
use crate::gatekeeper::Inventory;
use crate::metrics::Metrics;
use crate::policy::set::{LoadErrors, PolicySet};
use crate::policy::source::{self, SourceError};

/// Where a set comes from; rebuilt from the same places on every reload.
#[derive(Debug, Clone)]
pub struct PolicySources {
    pub dir: PathBuf,
    pub include_defaults: bool,
    pub config: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Policies(#[from] LoadErrors),
}

impl PolicySources {
    /// Reads config and policies and builds a complete set, or says everything that is wrong.
    pub fn build(&self, labels: NamespaceLabels) -> Result<PolicySet, BuildError> {
        let config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        let (sources, _) = source::resolve(&self.dir, self.include_defaults)?;
        Ok(PolicySet::build(&sources, Arc::new(config), labels)?)
    }
}

/// The current set, shared by every request, and the outcome of the last reload.
pub struct PolicyStore {
    current: ArcSwap<PolicySet>,
    pub sources: PolicySources,
    labels: NamespaceLabels,
    last_error: Mutex<Option<String>>,
    metrics: Option<Metrics>,
    /// Serialises reloads, so two file events never race to swap.
    reload_lock: Mutex<()>,
    /// Gatekeeper's `data.inventory` as last synced from the cluster; every reload re-applies it,
    /// so a policy edit never drops it.
    inventory: Mutex<Option<Arc<Inventory>>>,
    /// Whether the policy directory existed at start: if it did, its disappearing later is a
    /// fault to survive, not a request to fall back to the embedded defaults.
    dir_at_start: bool,
}

impl PolicyStore {
    pub fn new(
        sources: PolicySources,
        labels: NamespaceLabels,
        metrics: Option<Metrics>,
    ) -> Result<PolicyStore, BuildError> {
        let set = sources.build(labels.clone())?;
        let store = PolicyStore {
            current: ArcSwap::from_pointee(set),
            sources,
            labels,
            last_error: Mutex::new(None),
            metrics,
            reload_lock: Mutex::new(()),
            inventory: Mutex::new(None),
            dir_at_start: false,
        };
        let store = PolicyStore {
            dir_at_start: store.sources.dir.exists(),
            ..store
        };
        store.record_success();
        Ok(store)
    }

    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    pub fn labels(&self) -> &NamespaceLabels {
        &self.labels
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Rebuilds from the sources; swaps only a complete, valid set. Blocking: call it off the
    /// async workers.
    pub fn reload(&self, trigger: &str) -> Result<(), String> {
        let _guard = self.reload_lock.lock();
        let built = if self.dir_at_start && !self.sources.dir.exists() {
            Err(BuildError::Source(
                crate::policy::source::SourceError::ReadDir {
                    path: self.sources.dir.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the policy directory disappeared",
                    ),
                },
            ))
        } else {
            Ok(())
        };
        let built = built
            .and_then(|()| self.sources.build(self.labels.clone()))
            .and_then(
                |set| match self.inventory.lock().ok().and_then(|i| i.clone()) {
                    Some(inventory) => crate::gatekeeper::apply_inventory(&set, &inventory)
                        .map_err(|e| BuildError::Policies(LoadErrors(vec![e]))),
                    None => Ok(set),
                },
            );
        match built {
            Ok(set) => {
                let count = set.policies.len();
                self.current.store(Arc::new(set));
                if let Ok(mut e) = self.last_error.lock() {
                    *e = None;
                }
                self.record_success();
                info!(trigger, policies = count, "policies reloaded");
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                error!(trigger, error = %message, "policy reload failed; keeping the last good policy set");
                if let Ok(mut last) = self.last_error.lock() {
                    *last = Some(message.clone());
                }
                if let Some(m) = &self.metrics {
                    m.policy_reloads.with_label_values(&["failure"]).inc();
                }
                Err(message)
            }
        }
    }

    /// Installs a new `data.inventory` (the server's cluster sync): swaps in the current set
    /// with it applied to the Gatekeeper policies, and keeps it for every later reload.
    /// Blocking: call it off the async workers.
    pub fn install_inventory(&self, inventory: Inventory) -> Result<(), String> {
        let _guard = self.reload_lock.lock();
        let inventory = Arc::new(inventory);
        let set = crate::gatekeeper::apply_inventory(&self.current(), &inventory)
            .map_err(|e| e.to_string())?;
        self.current.store(Arc::new(set));
        if let Ok(mut slot) = self.inventory.lock() {
            *slot = Some(inventory);
        }
        Ok(())
    }

    /// The inventory last installed, if any.
    pub fn inventory(&self) -> Option<Arc<Inventory>> {
        self.inventory.lock().ok().and_then(|i| i.clone())
    }

    fn record_success(&self) {
        if let Some(m) = &self.metrics {
            let set = self.current();
            m.policies_loaded.set(set.policies.len() as i64);
            m.policy_reloads.with_label_values(&["success"]).inc();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            m.policy_last_reload.set(now);
        }
    }
}

/// Watches the policy directory and the config file; after changes settle, reloads off the
/// request path. Returns the watcher, which stops watching when dropped.
pub fn watch(
    store: Arc<PolicyStore>,
    debounce: Duration,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let sources = store.sources.clone();
    watch_sources(&sources, debounce, "regate-policy-watch", move || {
        if store.reload("file change").is_err() {
            warn!("serving the last good policy set until the files are fixed");
        }
    })
}

/// Watches the files of `sources` and calls `on_change` on a thread of its own once changes
/// settle (the enforced set and the shadow set both reload this way).
pub fn watch_sources(
    sources: &PolicySources,
    debounce: Duration,
    thread_name: &str,
    on_change: impl Fn() + Send + 'static,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let dir = sources.dir.clone();
    let config_name = sources
        .config
        .as_ref()
        .and_then(|c| c.file_name())
        .map(|n| n.to_os_string());
    let relevant = move |path: &Path| {
        if path.starts_with(&dir) {
            return true;
        }
        // A mounted ConfigMap swaps its `..data` symlink rather than writing the file.
        path.file_name().is_some_and(|n| {
            Some(n.to_os_string()) == config_name || n.to_string_lossy().starts_with("..")
        })
    };
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if !matches!(event.kind, notify::EventKind::Access(_))
                && event.paths.iter().any(|p| relevant(p))
            {
                let _ = tx.send(());
            }
        }
    })?;
    let mut watched = Vec::new();
    if sources.dir.exists() {
        watcher.watch(&sources.dir, RecursiveMode::Recursive)?;
        watched.push(sources.dir.clone());
    }
    if let Some(config) = &sources.config {
        // Watch the folder: editors and ConfigMap mounts replace the file rather than write it.
        let parent = config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !watched.iter().any(|w| parent.starts_with(w)) {
            watcher.watch(parent, RecursiveMode::NonRecursive)?;
        }
    }
    std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // Let a burst of writes settle: the reload sees the final state.
                while rx.recv_timeout(debounce).is_ok() {}
                on_change();
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(watcher)
}
