//! Gatekeeper's `data.inventory` from the cluster: list+watch of exactly the kinds the loaded
//! referential templates name in `requires-sync-data` ([`crate::gatekeeper::sync_kinds`]), and
//! nothing else. After changes settle (debounced) the inventory is installed in the
//! [`PolicyStore`], which re-applies it on every policy reload, and in the shadow candidate
//! ([`Shadow`]) when `serve` runs one, which does the same on its reloads. The kinds watched are
//! those either set needs; each set gets only the kinds it asked for, so a candidate never adds
//! objects to what the enforced set reads. When a reload changes the set of kinds, the watches are
//! restarted for the new set; with no referential template loaded nothing is watched at all. Kinds the cluster does not serve (old API versions a template lists as
//! alternatives) are skipped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::gatekeeper::{self, Inventory, SyncKind};
use crate::policy::reload::PolicyStore;
use crate::rollout::shadow::Shadow;

/// A policy set the synced inventory is installed in.
pub trait InventoryTarget: Send + Sync + 'static {
    /// The kinds its referential templates need, now.
    fn sync_kinds(&self) -> Vec<SyncKind>;
    /// Installs an inventory and keeps it for later reloads. Blocking.
    fn install(&self, inventory: Inventory) -> Result<(), String>;
}

impl InventoryTarget for PolicyStore {
    fn sync_kinds(&self) -> Vec<SyncKind> {
        gatekeeper::sync_kinds(&self.current().policies)
    }

    fn install(&self, inventory: Inventory) -> Result<(), String> {
        self.install_synced(Arc::new(inventory))
    }
}

impl InventoryTarget for Shadow {
    fn sync_kinds(&self) -> Vec<SyncKind> {
        self.current()
            .map(|set| gatekeeper::sync_kinds(&set.policies))
            .unwrap_or_default()
    }

    fn install(&self, inventory: Inventory) -> Result<(), String> {
        self.install_inventory(inventory)
    }
}

type Targets = Vec<Arc<dyn InventoryTarget>>;

/// Every kind any target needs, sorted and without repeats.
fn kinds_of(targets: &Targets) -> Vec<SyncKind> {
    let mut kinds: Vec<SyncKind> = targets.iter().flat_map(|t| t.sync_kinds()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// How long changes must settle before a new inventory is installed.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// How often the loaded set is checked for a changed list of kinds to sync.
const RECHECK: Duration = Duration::from_secs(5);

/// Starts the sync with the default client (in-cluster or kubeconfig) for the enforced set and
/// the shadow candidate if any; without a client, the server runs with an empty inventory.
pub fn spawn(store: Arc<PolicyStore>, shadow: Option<Arc<Shadow>>) {
    let mut targets: Targets = vec![store];
    if let Some(shadow) = shadow {
        targets.push(shadow);
    }
    tokio::spawn(async move {
        match Client::try_default().await {
            Ok(client) => run(targets, client, DEBOUNCE).await,
            Err(e) => {
                warn!(error = %e, "no Kubernetes client: Gatekeeper's data.inventory stays empty")
            }
        }
    });
}

/// Starts the sync with `client` for the enforced set; the task runs until aborted.
pub fn spawn_with(store: Arc<PolicyStore>, client: Client, debounce: Duration) -> JoinHandle<()> {
    tokio::spawn(run(vec![store], client, debounce))
}

/// [`spawn_with`] for several sets (the enforced one and a shadow candidate).
pub fn spawn_for(targets: Targets, client: Client, debounce: Duration) -> JoinHandle<()> {
    tokio::spawn(run(targets, client, debounce))
}

/// One watched kind's objects, by namespace and name.
#[derive(Default)]
struct Objects {
    live: BTreeMap<(String, String), Value>,
    /// Objects of a relist in progress (`Init` … `InitDone`), swapped in whole at the end.
    pending: Option<BTreeMap<(String, String), Value>>,
}

async fn run(targets: Targets, client: Client, debounce: Duration) {
    loop {
        let kinds = kinds_of(&targets);
        if kinds.is_empty() {
            tokio::time::sleep(RECHECK).await;
            continue;
        }
        let mut resources = Vec::new();
        for k in &kinds {
            let gvk = GroupVersionKind::gvk(&k.group, &k.version, &k.kind);
            match kube::discovery::pinned_kind(&client, &gvk).await {
                Ok((ar, _)) => resources.push(ar),
                Err(e) => debug!(kind = %describe(k), error = %e, "kind not served; not synced"),
            }
        }
        info!(
            kinds = %resources.iter().map(|r| format!("{}/{}", r.api_version, r.kind)).collect::<Vec<_>>().join(","),
            "syncing Gatekeeper data.inventory"
        );
        let (tx, mut rx) = mpsc::channel::<(usize, Event<DynamicObject>)>(1024);
        let tasks: Vec<JoinHandle<()>> = resources
            .iter()
            .enumerate()
            .map(|(i, ar)| tokio::spawn(watch(client.clone(), ar.clone(), i, tx.clone())))
            .collect();
        drop(tx);
        let mut objects: Vec<Objects> = resources.iter().map(|_| Objects::default()).collect();
        let mut recheck = tokio::time::interval(RECHECK);
        recheck.tick().await;
        loop {
            tokio::select! {
                event = rx.recv() => {
                    let Some((i, event)) = event else {
                        // No kind is served: wait for a policy change.
                        recheck.tick().await;
                        if kinds_of(&targets) != kinds { break; }
                        continue;
                    };
                    apply(&mut objects, &resources, i, event);
                    // Let a burst settle (bounded, so a busy cluster still gets updates).
                    let deadline = tokio::time::Instant::now() + debounce * 10;
                    while let Ok(Some((i, event))) =
                        tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + debounce), rx.recv()).await
                    {
                        apply(&mut objects, &resources, i, event);
                    }
                    install(&targets, &resources, &objects).await;
                }
                _ = recheck.tick() => {
                    if kinds_of(&targets) != kinds {
                        info!("policies need other kinds; restarting the inventory sync");
                        break;
                    }
                }
            }
        }
        for t in tasks {
            t.abort();
        }
    }
}

fn describe(k: &SyncKind) -> String {
    format!("{}/{}", k.api_version(), k.kind)
}

async fn watch(
    client: Client,
    ar: ApiResource,
    index: usize,
    tx: mpsc::Sender<(usize, Event<DynamicObject>)>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &ar);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(e) => {
                if tx.send((index, e)).await.is_err() {
                    return;
                }
            }
            Err(e) => warn!(kind = %ar.kind, error = %e, "inventory watch error; retrying"),
        }
    }
}

/// The object as the inventory keeps it: its apiVersion and kind set (list items may lack
/// them), without managedFields (no template reads them; they are most of an object's size).
fn to_value(ar: &ApiResource, object: &DynamicObject) -> Option<((String, String), Value)> {
    let mut value = serde_json::to_value(object).ok()?;
    let map = value.as_object_mut()?;
    map.insert("apiVersion".into(), Value::from(ar.api_version.clone()));
    map.insert("kind".into(), Value::from(ar.kind.clone()));
    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let key = (
        object.metadata.namespace.clone().unwrap_or_default(),
        object.metadata.name.clone()?,
    );
    Some((key, value))
}

fn apply(
    objects: &mut [Objects],
    resources: &[ApiResource],
    i: usize,
    event: Event<DynamicObject>,
) {
    let (Some(slot), Some(ar)) = (objects.get_mut(i), resources.get(i)) else {
        return;
    };
    match event {
        Event::Apply(o) => {
            if let Some((k, v)) = to_value(ar, &o) {
                slot.live.insert(k, v);
            }
        }
        Event::Delete(o) => {
            if let Some((k, _)) = to_value(ar, &o) {
                slot.live.remove(&k);
            }
        }
        Event::Init => slot.pending = Some(BTreeMap::new()),
        Event::InitApply(o) => {
            if let (Some((k, v)), Some(p)) = (to_value(ar, &o), slot.pending.as_mut()) {
                p.insert(k, v);
            }
        }
        Event::InitDone => {
            if let Some(p) = slot.pending.take() {
                slot.live = p;
            }
        }
    }
}

/// Installs in each target the objects of the kinds it needs.
async fn install(targets: &Targets, resources: &[ApiResource], objects: &[Objects]) {
    for target in targets {
        let wanted = target.sync_kinds();
        let mut inventory = Inventory::default();
        let mut count = 0usize;
        for (ar, o) in resources.iter().zip(objects) {
            let needed = wanted
                .iter()
                .any(|k| k.group == ar.group && k.version == ar.version && k.kind == ar.kind);
            if !needed {
                continue;
            }
            for v in o.live.values() {
                match inventory.add(v) {
                    Ok(()) => count += 1,
                    Err(e) => debug!(error = %e, "object left out of the inventory"),
                }
            }
        }
        let target = target.clone();
        match tokio::task::spawn_blocking(move || target.install(inventory)).await {
            Ok(Ok(())) => debug!(objects = count, "inventory installed"),
            Ok(Err(e)) => warn!(error = %e, "cannot install the inventory; keeping the last one"),
            Err(e) => warn!(error = %e, "inventory install task failed"),
        }
    }
}
