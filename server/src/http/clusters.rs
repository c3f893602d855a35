//! Routes for Proxmox clusters and the inventory tree: add / list / remove clusters,
//! discover now, the tree (whole, by selector, a few levels deep), selector previews, a PVE
//! node's own updates and a guest's history. The cluster's token secret is sealed on the way in and
//! never leaves the server again.

use super::extract::{Json, Path, Query};
use super::routes::Routes;
use crate::auth::{Admin, Operator, RequireRole, UserAuth};
use crate::discovery::{self, Target};
use crate::error::{Error, Result};
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use canopy_api_types::clusters::*;
use canopy_api_types::hosts::Event;
use canopy_hypervisor::{normalize_endpoint, probe_fingerprint, ApiToken, Fingerprint};
use canopy_inventory::{PathId, Selector, SkipReason};
use canopy_store::{ClusterRecord, NewCluster};
use futures::Stream;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

pub fn routes() -> Routes {
    Routes::new()
        .get("/clusters", list)
        .post("/clusters", create)
        .post("/clusters/probe", probe)
        .delete("/clusters/{name}", remove)
        .post("/clusters/{name}/discover", discover_now)
        .get("/clusters/{name}/nodes/{node}/updates", node_updates)
        .get("/tree", tree)
        .get("/tree/events", tree_events)
        .get("/tree/preview", preview)
        .get("/tree/history", history)
}

pub fn to_api(c: &ClusterRecord) -> Cluster {
    Cluster {
        id: c.id,
        name: c.name.clone(),
        path: format!("cluster/{}", c.name),
        endpoints: c.endpoints.clone(),
        token_id: c.token_id.clone(),
        fingerprints: c.fingerprints.clone(),
        uses_ca: c.ca_pem.is_some(),
        interval_secs: c.interval_secs,
        standalone: c.standalone,
        created_at: c.created_at,
        last_discovery_at: c.last_discovery_at,
        last_error: c.last_error.clone(),
    }
}

async fn list(State(state): State<AppState>, _u: UserAuth) -> Result<Json<Vec<Cluster>>> {
    let clusters = state.store.list_clusters().await?;
    Ok(Json(clusters.iter().map(to_api).collect()))
}

async fn cluster(state: &AppState, name: &str) -> Result<ClusterRecord> {
    state
        .store
        .cluster_by_name(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("cluster {name:?} not found")))
}

/// Validate, store (secret sealed), run the first pass; a first pass that fails as a whole
/// (wrong token, wrong fingerprint, unreachable) removes the cluster again and says why.
async fn create(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Json(req): Json<CreateCluster>,
) -> Result<(StatusCode, Json<Cluster>)> {
    PathId::cluster(&req.name).map_err(|e| Error::Validation(format!("name: {e}")))?;
    if req.endpoints.is_empty() {
        return Err(Error::Validation(
            "endpoints: give at least one PVE address".into(),
        ));
    }
    let endpoints = req
        .endpoints
        .iter()
        .map(|e| {
            normalize_endpoint(e)
                .map(|u| u.as_str().trim_end_matches('/').to_string())
                .map_err(|e| Error::Validation(format!("endpoints: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let token: ApiToken = req
        .token
        .parse()
        .map_err(|e: canopy_hypervisor::Error| Error::Validation(format!("token: {e}")))?;
    let fingerprints = req
        .fingerprints
        .iter()
        .map(|f| {
            f.parse::<Fingerprint>()
                .map(|f| f.to_string())
                .map_err(|e| Error::Validation(format!("fingerprints: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    // Build the client once to check the trust settings before anything is stored.
    discovery::connect(&Target {
        endpoints: endpoints.clone(),
        token: token.clone(),
        fingerprints: fingerprints.clone(),
        ca_pem: req.ca_pem.clone(),
        timeout: Duration::from_secs(5),
    })
    .map_err(|e| Error::Validation(format!("{e:#}")))?;
    let record = state
        .store
        .create_cluster(
            NewCluster {
                name: req.name.clone(),
                endpoints,
                token_id: token.id().to_string(),
                token_secret_sealed: state.discovery.sealer().seal(token.secret()),
                fingerprints,
                ca_pem: req.ca_pem,
                interval_secs: req
                    .interval_secs
                    .unwrap_or(state.settings.discovery_interval_secs),
            },
            &admin.actor(),
        )
        .await?;
    let report = state.discovery.run_pass(&record, true).await;
    if let Some(error) = report.error {
        state.discovery.forget(record.id);
        state
            .store
            .delete_cluster(record.id, &admin.actor())
            .await?;
        state.discovery.rebuild().await.map_err(Error::internal)?;
        return Err(Error::Validation(format!(
            "cluster {:?} was not added: {error}",
            req.name
        )));
    }
    state.discovery.wake();
    let record = cluster(&state, &record.name).await?;
    Ok((StatusCode::CREATED, Json(to_api(&record))))
}

async fn probe(
    State(_state): State<AppState>,
    _admin: RequireRole<Admin>,
    Json(req): Json<ProbeRequest>,
) -> Result<Json<ProbeResponse>> {
    let fp = probe_fingerprint(&req.url, Duration::from_secs(10))
        .await
        .map_err(|e| Error::Validation(e.to_string()))?;
    let nodes = match (&req.token, &req.fingerprint) {
        (None, _) => None,
        (Some(_), None) => {
            return Err(Error::Validation(
                "fingerprint: confirm the certificate's fingerprint before the token is sent"
                    .into(),
            ))
        }
        (Some(token), Some(pinned)) => Some(token_sees(&req.url, token, pinned).await?),
    };
    Ok(Json(ProbeResponse {
        url: req.url,
        fingerprint: fp.to_string(),
        nodes,
    }))
}

/// Signs in at `url` with `token` over a connection pinned to `pinned` and lists the nodes it
/// sees: a wrong token, or a certificate other than the confirmed one, is the error.
async fn token_sees(url: &str, token: &str, pinned: &str) -> Result<Vec<String>> {
    use canopy_hypervisor::Hypervisor;
    let endpoint = normalize_endpoint(url)
        .map(|u| u.as_str().trim_end_matches('/').to_string())
        .map_err(|e| Error::Validation(format!("url: {e}")))?;
    let token: ApiToken = token
        .parse()
        .map_err(|e: canopy_hypervisor::Error| Error::Validation(format!("token: {e}")))?;
    let pinned = pinned
        .parse::<Fingerprint>()
        .map_err(|e| Error::Validation(format!("fingerprint: {e}")))?;
    let pve = discovery::connect(&Target {
        endpoints: vec![endpoint],
        token,
        fingerprints: vec![pinned.to_string()],
        ca_pem: None,
        timeout: Duration::from_secs(10),
    })
    .map_err(|e| Error::Validation(format!("{e:#}")))?;
    let nodes = pve
        .nodes()
        .await
        .map_err(|e| Error::Validation(e.to_string()))?;
    Ok(nodes.into_iter().map(|n| n.node).collect())
}

async fn remove(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(name): Path<String>,
) -> Result<Json<ClusterRemoved>> {
    let record = cluster(&state, &name).await?;
    state
        .store
        .delete_cluster(record.id, &admin.actor())
        .await?;
    state.discovery.forget(record.id);
    state.discovery.rebuild().await.map_err(Error::internal)?;
    Ok(Json(ClusterRemoved { removed: name }))
}

async fn discover_now(
    State(state): State<AppState>,
    _op: RequireRole<Operator>,
    Path(name): Path<String>,
) -> Result<Json<DiscoveryReport>> {
    let record = cluster(&state, &name).await?;
    Ok(Json(state.discovery.run_pass(&record, true).await))
}

async fn node_updates(
    State(state): State<AppState>,
    _u: UserAuth,
    Path((name, node)): Path<(String, String)>,
) -> Result<Json<NodeUpdates>> {
    let record = cluster(&state, &name).await?;
    let snap = state.store.inventory().await?;
    let n = snap
        .nodes
        .into_iter()
        .find(|n| n.cluster_id == record.id && n.row.name == node)
        .ok_or_else(|| Error::NotFound(format!("node {node:?} of cluster {name:?} not found")))?;
    let updates = n
        .apt_updates
        .map(serde_json::from_value::<Vec<canopy_hypervisor::types::AptUpdate>>)
        .transpose()
        .map_err(Error::internal)?
        .unwrap_or_default()
        .into_iter()
        .map(|u| NodeUpdate {
            package: u.package,
            current_version: u.old_version,
            available_version: u.version,
            origin: u.origin,
            title: u.title,
        })
        .collect();
    Ok(Json(NodeUpdates {
        node: format!("cluster/{name}/node/{node}"),
        checked_at: n.apt_checked_at,
        error: n.apt_error,
        updates,
    }))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct SelectorQuery {
    /// A selector (`cluster/home/**[tag=prod]`); none = everything.
    selector: Option<String>,
}

fn parse_selector(s: &str) -> Result<Selector> {
    Selector::parse(s).map_err(|e| Error::Validation(format!("selector: {e}")))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct TreeQuery {
    /// A selector (`cluster/home/**[tag=prod]`); none = everything. Each matched vertex
    /// comes with its subtree; one inside another matched vertex is not repeated.
    selector: Option<String>,
    /// List this many levels of children below each answered vertex (`0`: the vertices
    /// alone, `1`: with their children); none = all. Rollups always cover the whole
    /// subtree; a vertex whose children were left out says how many it has
    /// (`child_count`).
    depth: Option<u32>,
}

/// `TreeResponse`, written straight from the in-memory tree.
#[derive(serde::Serialize)]
struct TreeAnswer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<&'a str>,
    trees: Vec<canopy_inventory::TreeView<'a>>,
}

/// The tree from memory (discovery, check-ins and reports keep it current; docs/design.md
/// §7.2): the cost is the subtrees asked for, not the estate.
async fn tree(
    State(state): State<AppState>,
    _u: UserAuth,
    Query(q): Query<TreeQuery>,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    let selector = match q.selector.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(s) => Some(parse_selector(s)?),
        None => None,
    };
    let inv = state.discovery.tree();
    // A whole tree is megabytes of JSON: written off the async workers.
    tokio::task::spawn_blocking(move || {
        let trees = match &selector {
            None => inv.forest_view(q.depth),
            Some(sel) => topmost(inv.select(sel))
                .iter()
                .filter_map(|id| inv.view(id, q.depth))
                .collect(),
        };
        axum::Json(TreeAnswer {
            selector: q.selector.as_deref(),
            trees,
        })
        .into_response()
    })
    .await
    .map_err(Error::internal)
}

/// The tree's changes as server-sent events (docs/design.md §7.2): `ready` once
/// subscribed (load or reload what you show now: nothing after it is missed), then
/// `vertices` (the vertices shown differently and their ancestors, each as `GET
/// /tree?depth=0` has it) and `reload` ([`TreeReload`]) as they happen; a follower that fell
/// behind gets `reload` with `all`. The stream ends when the access token it was opened
/// with expires (a stream outlives no session; the browser opens it again with its
/// refreshed cookie, `frontend/src/sse.rs`) and when the server shuts down.
async fn tree_events(
    State(state): State<AppState>,
    user: UserAuth,
) -> Sse<impl Stream<Item = std::result::Result<SseEvent, Infallible>>> {
    let rx = state.discovery.subscribe();
    let left = (user.0.exp - chrono::Utc::now().timestamp()).max(0) as u64;
    let expires = tokio::time::Instant::now() + Duration::from_secs(left);
    let ready = vec![discovery::TreeEvent {
        name: "ready",
        data: "{}".into(),
    }];
    // Ends when the server shuts down, so a graceful shutdown does not wait for the tab.
    let shutdown = state.shutdown.clone();
    let stream = futures::stream::unfold(
        (std::collections::VecDeque::from(ready), rx),
        move |(mut queue, mut rx)| {
            let shutdown = shutdown.clone();
            async move {
                loop {
                    if let Some(e) = queue.pop_front() {
                        // `retry`: the browser opens it again a second after it ends.
                        let event = SseEvent::default()
                            .event(e.name)
                            .data(e.data)
                            .retry(Duration::from_secs(1));
                        return Some((Ok(event), (queue, rx)));
                    }
                    let next = tokio::select! {
                        next = rx.recv() => next,
                        () = shutdown.wait() => return None,
                        () = tokio::time::sleep_until(expires) => return None,
                    };
                    match next {
                        Ok(events) => queue.extend(events.iter().cloned()),
                        Err(RecvError::Lagged(_)) => {
                            queue.push_back(discovery::TreeEvent::reload_all())
                        }
                        Err(RecvError::Closed) => return None,
                    }
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The matched vertices no other matched vertex holds (`ids` in tree order, where a
/// vertex's subtree follows it).
fn topmost(ids: Vec<PathId>) -> Vec<PathId> {
    let mut out: Vec<PathId> = Vec::new();
    for id in ids {
        if !out.last().is_some_and(|top| top.is_ancestor_of(&id)) {
            out.push(id);
        }
    }
    out
}

async fn preview(
    State(state): State<AppState>,
    _u: UserAuth,
    Query(q): Query<SelectorQuery>,
) -> Result<Json<SelectorPreview>> {
    let raw = q
        .selector
        .ok_or_else(|| Error::Validation("selector: missing".into()))?;
    let sel = parse_selector(&raw)?;
    let inv = state.discovery.tree();
    let targets = inv.targets(&sel);
    Ok(Json(SelectorPreview {
        selector: raw,
        matched: inv.select(&sel).len(),
        summary: targets.to_string(),
        targets: targets.hosts.iter().map(ToString::to_string).collect(),
        skipped: skipped(&targets),
    }))
}

/// The targets a selector leaves out, with the reason, as the API shows them.
pub fn skipped(targets: &canopy_inventory::Targets) -> Vec<SkippedTarget> {
    targets
        .skipped
        .iter()
        .map(|s| SkippedTarget {
            id: s.id.to_string(),
            reason: match s.reason {
                SkipReason::Template => "template",
                SkipReason::Stopped => "stopped",
                SkipReason::Unreachable => "unreachable",
            }
            .into(),
        })
        .collect()
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct HistoryQuery {
    /// The guest's path ID (`cluster/home/node/pve1/lxc/101`).
    id: String,
    /// At most this many events (default 200, at most 1000).
    limit: Option<u32>,
}

async fn history(
    State(state): State<AppState>,
    _u: UserAuth,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Vec<Event>>> {
    let path = PathId::parse(&q.id).map_err(|e| Error::Validation(format!("id: {e}")))?;
    let guest = state
        .discovery
        .guest_id(&path)
        .ok_or_else(|| Error::NotFound(format!("no guest at {path}")))?;
    Ok(Json(
        state
            .store
            .guest_history(guest, q.limit.unwrap_or(200).min(1000))
            .await?,
    ))
}
