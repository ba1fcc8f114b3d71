//! Namespaces from the cluster: their labels for environment resolution and Gatekeeper's
//! `namespaceSelector`, the objects for Gatekeeper's `input.review.namespaceObject`. Optional:
//! without a cluster (or without permission) the server runs on config mappings alone.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::environment::NamespaceLabels;

/// The Namespace as Gatekeeper hands it to templates (`input.review.namespaceObject`).
fn namespace_object(ns: Namespace) -> Option<serde_json::Value> {
    serde_json::to_value(&ns)
        .ok()
        .map(crate::gatekeeper::namespace_object_of)
}

pub fn spawn(labels: NamespaceLabels) {
    tokio::spawn(async move {
        let client = match Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "no Kubernetes client: namespace labels will not decide environments");
                return;
            }
        };
        watch(labels, client).await;
    });
}

/// [`spawn`] with a given client (tests: a fake API server).
pub fn spawn_with(labels: NamespaceLabels, client: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(watch(labels, client))
}

/// Follows the cluster's Namespaces into `labels` until the stream ends.
async fn watch(labels: NamespaceLabels, client: Client) {
    let api: Api<Namespace> = Api::all(client);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    info!("watching namespace labels");
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(ns)) | Ok(Event::InitApply(ns)) => {
                if let Some(name) = ns.metadata.name.clone() {
                    let map = ns
                        .metadata
                        .labels
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    labels.set(&name, map);
                    if let Some(object) = namespace_object(ns) {
                        labels.set_object(&name, object);
                    }
                }
            }
            Ok(Event::Delete(ns)) => {
                if let Some(name) = ns.metadata.name.as_deref() {
                    labels.remove(name);
                }
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e, "namespace watch error; retrying"),
        }
    }
}
