//! A live cluster as an audit source: discovery for the kinds the loaded policies target,
//! Namespaces for environments, then paged lists (`limit`/`continue`), each page judged and
//! dropped before the next is requested.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::api::ListParams;
use kube::core::{ApiResource, DynamicObject, Request, Resource};
use kube::Client;
use serde::Deserialize;
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::audit::record::Origin;
use crate::audit::runner::{AuditRun, Auditor, SourceKind};
use crate::audit::AuditError;
use crate::environment::NamespaceLabels;
use crate::policy::set::PolicySet;

/// Objects per list page unless configured.
pub const DEFAULT_PAGE_SIZE: u32 = 500;

/// Options of a cluster audit.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `limit` of each list request.
    pub page_size: u32,
    /// Spool objects without findings too (JUnit).
    pub keep_passing: bool,
    /// Hand the namespaces' labels to the set's environment resolver (off when an environment
    /// is forced for every namespace).
    pub namespace_labels: bool,
    /// How long one API group's discovery may take (the client retries an unavailable
    /// aggregated API for minutes); a group that runs out of time counts as failed.
    pub discovery_timeout: Duration,
}

/// Default of [`ClusterOptions::discovery_timeout`].
pub const DEFAULT_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            page_size: DEFAULT_PAGE_SIZE,
            keep_passing: false,
            namespace_labels: true,
            discovery_timeout: DEFAULT_DISCOVERY_TIMEOUT,
        }
    }
}

/// A listable resource found by discovery.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: ApiResource,
    pub namespaced: bool,
}

/// What discovery found for the kinds asked for.
#[derive(Debug, Default)]
pub struct Discovered {
    /// Kind → resource, for every kind served and listable.
    pub targets: Vec<Target>,
    /// Kinds that no served group has (a CRD that is not installed, a misspelt kind).
    pub missing: Vec<String>,
    /// Groups whose resources could not be read (e.g. an unavailable aggregated API).
    pub failed_groups: Vec<(String, String)>,
}

/// Finds each kind in the preferred version of the served groups: the core group first, then the
/// groups in the order the server lists them. A group that fails to answer only matters if a
/// kind is then missing.
pub async fn discover(
    client: &Client,
    kinds: &[String],
    timeout: Duration,
) -> Result<Discovered, AuditError> {
    let mut lists: Vec<(String, APIResourceList)> = Vec::new();
    let mut failed_groups = Vec::new();
    let core = client.list_core_api_versions().await?;
    let core_version = if core.versions.iter().any(|v| v == "v1") {
        Some("v1".to_string())
    } else {
        core.versions.first().cloned()
    };
    if let Some(v) = core_version {
        lists.push((String::new(), client.list_core_api_resources(&v).await?));
    }
    let groups = client.list_api_groups().await?;
    for g in groups.groups {
        let Some(gv) = g
            .preferred_version
            .as_ref()
            .map(|p| p.group_version.clone())
            .or_else(|| g.versions.first().map(|v| v.group_version.clone()))
        else {
            continue;
        };
        match tokio::time::timeout(timeout, client.list_api_group_resources(&gv)).await {
            Ok(Ok(list)) => lists.push((g.name.clone(), list)),
            Ok(Err(e)) => {
                debug!(group = %g.name, error = %e, "discovery of group failed");
                failed_groups.push((gv, e.to_string()));
            }
            Err(_) => {
                debug!(group = %g.name, "discovery of group timed out");
                failed_groups.push((gv, format!("no answer within {}s", timeout.as_secs_f64())));
            }
        }
    }
    let mut found: HashMap<&str, Target> = HashMap::new();
    for (group, list) in &lists {
        let (list_group, version) = match list.group_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), list.group_version.clone()),
        };
        let group = if list_group.is_empty() {
            group.clone()
        } else {
            list_group
        };
        for r in &list.resources {
            if r.name.contains('/') || !r.verbs.iter().any(|v| v == "list") {
                continue;
            }
            let Some(kind) = kinds.iter().find(|k| **k == r.kind) else {
                continue;
            };
            found.entry(kind.as_str()).or_insert_with(|| Target {
                resource: ApiResource {
                    group: group.clone(),
                    version: version.clone(),
                    api_version: list.group_version.clone(),
                    kind: r.kind.clone(),
                    plural: r.name.clone(),
                },
                namespaced: r.namespaced,
            });
        }
    }
    let mut out = Discovered {
        failed_groups,
        ..Discovered::default()
    };
    for kind in kinds {
        match found.remove(kind.as_str()) {
            Some(t) => out.targets.push(t),
            None => out.missing.push(kind.clone()),
        }
    }
    Ok(out)
}

#[derive(Debug, Deserialize)]
struct RawListMeta {
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

/// One page of a list, items kept as plain JSON (exactly as served).
#[derive(Debug, Deserialize)]
struct RawList {
    #[serde(default)]
    metadata: Option<RawListMeta>,
    #[serde(default)]
    items: Vec<Value>,
}

/// Pages through one resource across all namespaces, one `limit`-sized page per call.
pub struct Pager {
    request: Request,
    page_size: u32,
    token: Option<String>,
    done: bool,
    pub pages: usize,
}

impl Pager {
    pub fn new(resource: &ApiResource, page_size: u32) -> Pager {
        Pager {
            request: Request::new(DynamicObject::url_path(resource, None)),
            page_size: page_size.max(1),
            token: None,
            done: false,
            pages: 0,
        }
    }

    /// The next page's items, or `None` after the last page.
    pub async fn next(&mut self, client: &Client) -> Result<Option<Vec<Value>>, AuditError> {
        if self.done {
            return Ok(None);
        }
        let mut lp = ListParams::default().limit(self.page_size);
        if let Some(t) = &self.token {
            lp = lp.continue_token(t);
        }
        let req = self.request.list(&lp).map_err(kube::Error::BuildRequest)?;
        let list: RawList = client.request(req).await?;
        self.pages += 1;
        self.token = list
            .metadata
            .and_then(|m| m.continue_token)
            .filter(|t| !t.is_empty());
        self.done = self.token.is_none();
        Ok(Some(list.items))
    }
}

pub fn describe_list_error(resource: &ApiResource, e: &AuditError) -> String {
    match e {
        AuditError::Kube(kube::Error::Api(status)) if status.code == 410 => format!(
            "listing {} expired before the last page (continue token too old); objects after it were not judged",
            resource.plural
        ),
        AuditError::Kube(kube::Error::Api(status)) if status.is_forbidden() => format!(
            "not allowed to list {}: grant list on {} to the audit's identity",
            resource.plural,
            if resource.group.is_empty() {
                resource.plural.clone()
            } else {
                format!("{}.{}", resource.plural, resource.group)
            }
        ),
        other => format!("cannot list {}: {other}", resource.plural),
    }
}

/// Lists the cluster's Namespaces (paged) and hands each one's labels to every `labels` (the
/// environment resolvers of the sets that will judge). Returns the names, and what went wrong
/// if the list could not be read (environments then fall back to the config's mappings).
pub async fn read_namespaces(
    client: &Client,
    discovered: &Discovered,
    page_size: u32,
    labels: &[NamespaceLabels],
    objects: &[NamespaceLabels],
) -> (Vec<String>, Option<String>) {
    let mut namespaces: Vec<String> = Vec::new();
    let Some(target) = discovered
        .targets
        .iter()
        .find(|t| t.resource.kind == "Namespace" && t.resource.group.is_empty())
    else {
        return (namespaces, None);
    };
    let mut pager = Pager::new(&target.resource, page_size);
    loop {
        match pager.next(client).await {
            Ok(Some(items)) => {
                for ns in items {
                    let Some(name) = ns.pointer("/metadata/name").and_then(Value::as_str) else {
                        continue;
                    };
                    let map: crate::environment::Labels = ns
                        .pointer("/metadata/labels")
                        .and_then(Value::as_object)
                        .map(|m| {
                            m.iter()
                                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                                .collect()
                        })
                        .unwrap_or_default();
                    for l in labels {
                        l.set(name, map.clone());
                    }
                    // Gatekeeper's `input.review.namespaceObject`, whatever decides environments.
                    for o in objects {
                        o.set_object(name, crate::gatekeeper::namespace_object_of(ns.clone()));
                    }
                    namespaces.push(name.to_string());
                }
            }
            Ok(None) => return (namespaces, None),
            Err(e) => {
                let issue = format!(
                    "{}; environments fall back to the config's namespace mappings",
                    describe_list_error(&target.resource, &e)
                );
                return (namespaces, Some(issue));
            }
        }
    }
}

/// Audits the cluster: every kind the set's policies target, plus Namespaces for environments
/// (their labels go to the set's resolver).
pub async fn audit_cluster(
    client: &Client,
    set: Arc<PolicySet>,
    opts: &ClusterOptions,
) -> Result<AuditRun, AuditError> {
    let kinds = set.kinds();
    let mut wanted = kinds.clone();
    if !wanted.iter().any(|k| k == "Namespace") {
        wanted.push("Namespace".to_string());
    }
    let discovered = discover(client, &wanted, opts.discovery_timeout).await?;

    // Namespaces first: their labels decide environments, and their names partition the spool.
    let resolvers = if opts.namespace_labels {
        vec![set.resolver.labels().clone()]
    } else {
        Vec::new()
    };
    let objects = [set.resolver.labels().clone()];
    let (namespaces, namespace_issue) =
        read_namespaces(client, &discovered, opts.page_size, &resolvers, &objects).await;
    info!(namespaces = namespaces.len(), kinds = ?kinds, "auditing the cluster");

    let mut auditor = Auditor::new(set, namespaces, opts.keep_passing);
    if let Some(message) = namespace_issue {
        auditor.issue("namespaces", message);
    }
    let failed: Vec<&str> = discovered
        .failed_groups
        .iter()
        .map(|(g, _)| g.as_str())
        .collect();
    for kind in discovered.missing.iter().filter(|k| kinds.contains(k)) {
        if failed.is_empty() {
            debug!(%kind, "kind not served by the cluster; nothing to audit");
        } else {
            auditor.issue(
                kind.as_str(),
                format!(
                    "kind {kind} was not found, and discovery failed for {}",
                    failed.join(", ")
                ),
            );
        }
    }

    for target in discovered
        .targets
        .iter()
        .filter(|t| kinds.contains(&t.resource.kind))
    {
        let resource = &target.resource;
        let mut pager = Pager::new(resource, opts.page_size);
        loop {
            let items = match pager.next(client).await {
                Ok(Some(items)) => items,
                Ok(None) => break,
                Err(e) => {
                    let message = describe_list_error(resource, &e);
                    warn!(resource = %resource.plural, error = %message, "audit list failed");
                    auditor.issue(resource.plural.as_str(), message);
                    break;
                }
            };
            let page: Vec<(Value, Origin)> = items
                .into_iter()
                .map(|mut item| {
                    if let Some(map) = item.as_object_mut() {
                        map.entry("apiVersion")
                            .or_insert_with(|| Value::String(resource.api_version.clone()));
                        map.entry("kind")
                            .or_insert_with(|| Value::String(resource.kind.clone()));
                    }
                    let origin = Origin {
                        cluster_scoped: Some(!target.namespaced),
                        ..Origin::default()
                    };
                    (item, origin)
                })
                .collect();
            // Judging is CPU work: off the async workers. The page is dropped when it is judged.
            let (back, result) = tokio::task::spawn_blocking(move || {
                let r = auditor.judge_page(page);
                (auditor, r)
            })
            .await
            .map_err(|e| AuditError::Task(e.to_string()))?;
            auditor = back;
            result?;
        }
        debug!(resource = %resource.plural, pages = pager.pages, "listed");
    }
    Ok(auditor.finish(SourceKind::Cluster))
}
