//! The live policy set: built off the request path, swapped whole, and kept when a new one fails.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError};
use crate::environment::NamespaceLabels;
use crate::metrics::Metrics;
use crate::policy::error::LoadErrors;
use crate::policy::loader::YamlLoader;
use crate::policy::set::{PolicySet, SyncedData};
use crate::policy::source::{self, SourceError};

/// Where a set comes from; rebuilt from the same places on every reload.
#[derive(Debug, Clone)]
pub struct PolicySources {
    pub dir: PathBuf,
    pub include_defaults: bool,
    pub config: Option<PathBuf>,
    /// What makes policies of the YAML files (the program's: `crate::catalog`).
    pub yaml_loader: &'static dyn YamlLoader,
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
        Ok(PolicySet::build_with(
            &sources,
            Arc::new(config),
            labels,
            self.yaml_loader,
        )?)
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
    /// The data last synced from the cluster; every reload re-applies it, so a policy edit
    /// never drops it.
    synced: Mutex<Option<Arc<dyn SyncedData>>>,
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
            synced: Mutex::new(None),
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
            .and_then(|()| build_on_a_thread_of_its_own(|| self.sources.build(self.labels.clone())))
            .and_then(|set| match self.synced() {
                Some(synced) => synced
                    .apply(&set)
                    .map_err(|e| BuildError::Policies(LoadErrors(vec![e]))),
                None => Ok(set),
            });
        match built {
            Ok(set) => {
                let count = set.policies.len();
                // The old set is usually dropped right here (no request holds it); building the
                // new one left as much again freed in this thread's heap. Both go back to the
                // OS now, or RSS would stay at two sets' worth after every reload.
                drop(self.current.swap(Arc::new(set)));
                alloc_release::release_freed_memory();
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

    /// Installs data newly synced from the cluster (the server's inventory sync): swaps in the
    /// current set with it applied, and keeps it for every later reload. Blocking: call it off
    /// the async workers.
    pub fn install_synced(&self, synced: Arc<dyn SyncedData>) -> Result<(), String> {
        let _guard = self.reload_lock.lock();
        let set = synced.apply(&self.current()).map_err(|e| e.to_string())?;
        // Kept before the set is swapped in: whoever sees a decision made with it also finds
        // it here.
        if let Ok(mut slot) = self.synced.lock() {
            *slot = Some(synced);
        }
        self.current.store(Arc::new(set));
        Ok(())
    }

    /// The synced data last installed, if any.
    pub fn synced(&self) -> Option<Arc<dyn SyncedData>> {
        self.synced.lock().ok().and_then(|i| i.clone())
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
///
/// notify reports absolute paths, so nothing is compared with the directory as the user typed
/// it (`--policies policies` is relative). Two watches cover every way a file changes:
/// - the directory's real location (symlinks resolved), recursively: writes, creates, deletes
///   and the renames editors use to save;
/// - its parent (and the config file's), not recursively, for the names that matter there only:
///   the directory itself being replaced (a symlinked directory re-pointed, a ConfigMap volume's
///   `..data` swap) and the config file. After such a swap the first watch is moved to the new
///   target.
pub fn watch(
    store: Arc<PolicyStore>,
    debounce: Duration,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    let sources = store.sources.clone();
    let dir_at_start = store.dir_at_start;
    watch_sources(
        &sources,
        dir_at_start,
        debounce,
        "regate-policy-watch",
        store,
        |store| {
            if store.reload("file change").is_err() {
                warn!("serving the last good policy set until the files are fixed");
            }
        },
    )
}

/// Watches the files of `sources` and calls `on_change(&owner)` on a thread of its own once
/// changes settle (the enforced set and the shadow set both reload this way). The thread ends
/// when it holds the last reference to `owner` (the server is gone). `dir_at_start`: whether the
/// directory existed when the set was first built (only then is its replacement watched for).
pub fn watch_sources<T: Send + Sync + 'static>(
    sources: &PolicySources,
    dir_at_start: bool,
    debounce: Duration,
    thread_name: &str,
    owner: Arc<T>,
    on_change: impl Fn(&T) + Send + 'static,
) -> Result<notify::RecommendedWatcher, notify::Error> {
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let dir = absolute(&sources.dir);
    let dir_name = dir.file_name().map(|n| n.to_os_string());
    let config = sources.config.as_deref().map(absolute);
    let config_name = config
        .as_ref()
        .and_then(|c| c.file_name())
        .map(|n| n.to_os_string());
    let relevant_in_parent = move |path: &Path| {
        path.file_name().is_some_and(|n| {
            Some(n) == dir_name.as_deref()
                || Some(n) == config_name.as_deref()
                // A mounted ConfigMap swaps its `..data` symlink rather than writing the file.
                || n.to_string_lossy().starts_with("..")
        })
    };
    let parent_tx = tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            if changes(&event) && event.paths.iter().any(|p| relevant_in_parent(p)) {
                let _ = parent_tx.send(());
            }
        }
    })?;
    let mut parents: Vec<PathBuf> = Vec::new();
    if dir_at_start {
        parents.extend(dir.parent().map(Path::to_path_buf));
    }
    if let Some(config) = &config {
        parents.extend(config.parent().map(Path::to_path_buf));
    }
    parents.dedup();
    for parent in &parents {
        watcher.watch(parent, RecursiveMode::NonRecursive)?;
    }
    let mut tree = TreeWatch::default();
    tree.arm(&dir, &tx)?;
    std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            loop {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(()) => {}
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        // The server is gone when this thread holds the last reference.
                        if Arc::strong_count(&owner) == 1 {
                            return;
                        }
                        continue;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                }
                // Let a burst of writes settle: the reload sees the final state.
                while rx.recv_timeout(debounce).is_ok() {}
                if let Err(e) = tree.arm(&dir, &tx) {
                    warn!(error = %e, "cannot watch the policy directory after it changed");
                }
                on_change(&owner);
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    Ok(watcher)
}

/// Whether a file event can change what a reload reads.
fn changes(event: &notify::Event) -> bool {
    !matches!(event.kind, notify::EventKind::Access(_))
}

/// `path` made absolute against the working directory, without resolving symlinks.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The recursive watch on the policy directory's real location, moved when that changes.
#[derive(Default)]
struct TreeWatch {
    watcher: Option<notify::RecommendedWatcher>,
    target: Option<PathBuf>,
}

impl TreeWatch {
    /// Watches where `dir` points now, unless that is already watched; nothing while it does
    /// not exist.
    fn arm(&mut self, dir: &Path, tx: &std::sync::mpsc::Sender<()>) -> notify::Result<()> {
        use notify::{RecursiveMode, Watcher};
        let Ok(target) = std::fs::canonicalize(dir) else {
            self.watcher = None;
            self.target = None;
            return Ok(());
        };
        if self.target.as_ref() == Some(&target) && self.watcher.is_some() {
            return Ok(());
        }
        let tx = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Everything under the directory is the policy set's input.
                if event.is_ok_and(|e| changes(&e)) {
                    let _ = tx.send(());
                }
            })?;
        watcher.watch(&target, RecursiveMode::Recursive)?;
        self.watcher = Some(watcher);
        self.target = Some(target);
        Ok(())
    }
}

/// Runs `build` on a new thread and waits for it. The allocator gives each thread pages of its
/// own: a set built beside the one it replaces would otherwise fill the holes in that set's
/// pages, and once the old set is dropped those pages could not go back to the OS (resident
/// memory grew by half a set per reload). If no thread can be started, builds here.
fn build_on_a_thread_of_its_own<T: Send>(build: impl Fn() -> T + Sync) -> T {
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("regate-policy-build".into())
            .spawn_scoped(scope, || {
                let built = build();
                crate::policy::memory::thread_ends();
                built
            }) {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => build(),
        }
    })
}
