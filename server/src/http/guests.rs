//! A guest's PVE side for its detail pane: the snapshots PVE holds for it, read live (Canopy's
//! own marked), so an owner sees which restore points exist before approving an update.

use super::routes::Routes;
use crate::auth::UserAuth;
use crate::error::{Error, Result};
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::Json;
use canopy_api_types::clusters::GuestSnapshot;
use canopy_hypervisor::{GuestKind, Hypervisor};
use canopy_inventory::{Kind, PathId};
use serde::Deserialize;

pub(super) fn routes() -> Routes {
    Routes::new().get("/tree/snapshots", snapshots)
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub(super) struct GuestQuery {
    /// The guest's path id (`cluster/home/node/pve1/lxc/101`).
    id: String,
}

async fn snapshots(
    State(state): State<AppState>,
    _u: UserAuth,
    Query(q): Query<GuestQuery>,
) -> Result<Json<Vec<GuestSnapshot>>> {
    let path = PathId::parse(&q.id).map_err(|e| Error::Validation(format!("id: {e}")))?;
    let kind = match path.kind() {
        Kind::Lxc => GuestKind::Lxc,
        Kind::Vm => GuestKind::Qemu,
        other => {
            return Err(Error::Validation(format!(
                "id: {path} is a {other:?}, not a guest (an lxc or vm path)"
            )))
        }
    };
    if state.discovery.guest_id(&path).is_none() {
        return Err(Error::NotFound(format!("no guest at {path}")));
    }
    let cluster = path.cluster_name();
    let (Some(node), Some(vmid)) = (path.node_name(), path.vmid()) else {
        return Err(Error::Validation(format!(
            "id: {path} names no node and vmid"
        )));
    };
    let pve = state
        .discovery
        .cluster_client(cluster)
        .await
        .map_err(|e| Error::Unavailable(format!("cluster {cluster}: {e:#}")))?;
    let list = pve
        .snapshots(node, kind, vmid)
        .await
        .map_err(|e| Error::Unavailable(format!("PVE: {e}")))?;
    let mut out: Vec<GuestSnapshot> = list
        .into_iter()
        .filter(|s| !s.is_current())
        .map(|s| GuestSnapshot {
            canopy: s.name.starts_with(crate::update::SNAPSHOT_PREFIX),
            taken_at: s
                .snaptime
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
            name: s.name,
            description: s.description.filter(|d| !d.is_empty()),
            parent: s.parent,
        })
        .collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.taken_at));
    Ok(Json(out))
}
