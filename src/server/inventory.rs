//! Gatekeeper's `data.inventory` from the cluster: list+watch of exactly the kinds the loaded
//! referential templates name in `requires-sync-data` ([`crate::gatekeeper::sync_kinds`]), and
//! nothing else. After changes settle (debounced) the inventory is installed in the
//! [`PolicyStore`], which re-applies it on every policy reload. When a reload changes the set of
//! kinds, the watches are restarted for the new set; with no referential template loaded nothing
//! is watched at all. Kinds the cluster does not serve (old API versions a template lists as
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

/// How long changes must settle before a new inventory is installed.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// How often the loaded set is checked for a changed list of kinds to sync.
const RECHECK: Duration = Duration::from_secs(5);

/// Starts the sync with the default client (in-cluster or kubeconfig); without one, the
/// server runs with an empty inventory.
pub fn spawn(store: Arc<PolicyStore>) {
    tokio::spawn(async move {
        match Client::try_default().await {
            Ok(client) => run(store, client, DEBOUNCE).await,
            Err(e) => {
                warn!(error = %e, "no Kubernetes client: Gatekeeper's data.inventory stays empty")
            }
        }
    });
}

/// Starts the sync with `client`; the task runs until aborted.
pub fn spawn_with(store: Arc<PolicyStore>, client: Client, debounce: Duration) -> JoinHandle<()> {
    tokio::spawn(run(store, client, debounce))
}

/// One watched kind's objects, by namespace and name.
#[derive(Default)]
struct Objects {
    live: BTreeMap<(String, String), Value>,
    /// Objects of a relist in progress (`Init` … `InitDone`), swapped in whole at the end.
    pending: Option<BTreeMap<(String, String), Value>>,
}

async fn run(store: Arc<PolicyStore>, client: Client, debounce: Duration) {
    loop {
        let kinds = gatekeeper::sync_kinds(&store.current().policies);
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
                        if gatekeeper::sync_kinds(&store.current().policies) != kinds { break; }
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
                    install(&store, &objects).await;
                }
                _ = recheck.tick() => {
                    if gatekeeper::sync_kinds(&store.current().policies) != kinds {
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

async fn install(store: &Arc<PolicyStore>, objects: &[Objects]) {
    let mut inventory = Inventory::default();
    let mut count = 0usize;
    for o in objects {
        for v in o.live.values() {
            match inventory.add(v) {
                Ok(()) => count += 1,
                Err(e) => debug!(error = %e, "object left out of the inventory"),
            }
        }
    }
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.install_synced(Arc::new(inventory))).await {
        Ok(Ok(())) => debug!(objects = count, "inventory installed"),
        Ok(Err(e)) => warn!(error = %e, "cannot install the inventory; keeping the last one"),
        Err(e) => warn!(error = %e, "inventory install task failed"),
    }
}
