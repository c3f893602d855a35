//! Clusters, nodes and guests on PostgreSQL ([`InventoryStore`]). Every method is one
//! transaction; `apply_discovery` lives in [`super::discovery`]. Whatever binds a host to
//! a guest (a pass's name match, [`attach_in`] for an explicit attach, a guest-bound
//! registration or an agentless host) holds [`super::discovery::ATTACH_LOCK`] so that two
//! of them never attach one host to two guests.

use super::{finish, insert_events, rows, unique_to_conflict, PgStore};
use crate::common::{now_micros, prepare_event};
use crate::{
    events, Actor, ClusterRecord, DiscoveryWrite, InventorySnapshot, InventoryStore, NewCluster,
    NewEvent, Result, StoreError,
};
use async_trait::async_trait;
use canopy_api_types::hosts::Event;
use canopy_api_types::{ClusterId, GuestId, HostId};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// The most events `guest_history` returns.
const MAX_HISTORY: u32 = 10_000;

fn event(event_type: &str, subject: String, actor: &Actor, payload: serde_json::Value) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        subject,
        actor: actor.clone(),
        correlation: None,
        causation: None,
        payload,
    }
}

#[async_trait]
impl InventoryStore for PgStore {
    async fn create_cluster(&self, new: NewCluster, actor: &Actor) -> Result<ClusterRecord> {
        let now = now_micros();
        let rec = ClusterRecord {
            id: ClusterId::new(),
            name: new.name,
            endpoints: new.endpoints,
            token_id: new.token_id,
            token_secret_sealed: new.token_secret_sealed,
            fingerprints: new.fingerprints,
            ca_pem: new.ca_pem,
            interval_secs: new.interval_secs,
            created_at: now,
            last_discovery_at: None,
            last_error: None,
            standalone: false,
        };
        let mut tx = self.pool.begin().await?;
        let r: Result<()> = async {
            sqlx::query(
                "INSERT INTO clusters (id, name, endpoints, token_id, token_secret_sealed, fingerprints, ca_pem, \
                 interval_secs, standalone, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, FALSE, $9)",
            )
            .bind(rec.id.0)
            .bind(&rec.name)
            .bind(json!(rec.endpoints))
            .bind(&rec.token_id)
            .bind(&rec.token_secret_sealed)
            .bind(json!(rec.fingerprints))
            .bind(&rec.ca_pem)
            .bind(i64::from(rec.interval_secs))
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| unique_to_conflict(e, || format!("cluster name '{}' is taken", rec.name)))?;
            let ev = event(
                events::CLUSTER_ADDED,
                events::cluster_subject(&rec.name),
                actor,
                json!({
                    "cluster_id": rec.id,
                    "name": rec.name,
                    "endpoints": rec.endpoints,
                    "token_id": rec.token_id,
                    "interval_secs": rec.interval_secs,
                }),
            );
            insert_events(&mut tx, &[prepare_event(ev, None, now)]).await
        }
        .await;
        finish(tx, r).await?;
        Ok(rec)
    }

    async fn list_clusters(&self) -> Result<Vec<ClusterRecord>> {
        let found = sqlx::query("SELECT * FROM clusters ORDER BY name COLLATE \"C\", id")
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::cluster).collect()
    }

    async fn cluster_by_name(&self, name: &str) -> Result<Option<ClusterRecord>> {
        let row = sqlx::query("SELECT * FROM clusters WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::cluster).transpose()
    }

    async fn delete_cluster(&self, id: ClusterId, actor: &Actor) -> Result<()> {
        let now = now_micros();
        let mut tx = self.pool.begin().await?;
        let r: Result<()> = async {
            // Nodes and guests go by ON DELETE CASCADE; hosts stay, detached.
            let name: String =
                sqlx::query_scalar("DELETE FROM clusters WHERE id = $1 RETURNING name")
                    .bind(id.0)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("cluster {id}")))?;
            let ev = event(
                events::CLUSTER_REMOVED,
                events::cluster_subject(&name),
                actor,
                json!({ "cluster_id": id, "name": name }),
            );
            insert_events(&mut tx, &[prepare_event(ev, None, now)]).await
        }
        .await;
        finish(tx, r).await
    }

    async fn apply_discovery(&self, write: DiscoveryWrite) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let r = super::discovery::apply(&mut tx, write).await;
        finish(tx, r).await
    }

    async fn record_discovery_error(
        &self,
        cluster: ClusterId,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<()> {
        // `last_discovery_at` is the last pass, failed or not; `last_error` says which.
        let done = sqlx::query(
            "UPDATE clusters SET last_error = $1, last_discovery_at = $2 WHERE id = $3",
        )
        .bind(error)
        .bind(crate::common::micros(at))
        .bind(cluster.0)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("cluster {cluster}")));
        }
        Ok(())
    }

    async fn set_node_updates(
        &self,
        cluster: ClusterId,
        node: &str,
        at: DateTime<Utc>,
        updates: Option<serde_json::Value>,
        error: Option<&str>,
    ) -> Result<()> {
        let done = sqlx::query(
            "UPDATE pve_nodes SET apt_updates = $1, apt_checked_at = $2, apt_error = $3 \
             WHERE cluster_id = $4 AND name = $5",
        )
        .bind(updates)
        .bind(crate::common::micros(at))
        .bind(error)
        .bind(cluster.0)
        .bind(node)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "node {node} of cluster {cluster}"
            )));
        }
        Ok(())
    }

    async fn inventory(&self) -> Result<InventorySnapshot> {
        // One snapshot for the three lists.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let r: Result<InventorySnapshot> = async {
            let clusters = sqlx::query("SELECT * FROM clusters ORDER BY name COLLATE \"C\", id")
                .fetch_all(&mut *tx)
                .await?;
            let nodes =
                sqlx::query("SELECT * FROM pve_nodes ORDER BY cluster_id, name COLLATE \"C\"")
                    .fetch_all(&mut *tx)
                    .await?;
            let guests = sqlx::query("SELECT * FROM guests ORDER BY cluster_id, vmid")
                .fetch_all(&mut *tx)
                .await?;
            Ok(InventorySnapshot {
                clusters: clusters.iter().map(rows::cluster).collect::<Result<_>>()?,
                nodes: nodes.iter().map(rows::node).collect::<Result<_>>()?,
                guests: guests.iter().map(rows::guest).collect::<Result<_>>()?,
            })
        }
        .await;
        finish(tx, r).await
    }

    async fn cluster_inventory(&self, cluster: ClusterId) -> Result<InventorySnapshot> {
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let r: Result<InventorySnapshot> = async {
            let clusters = sqlx::query("SELECT * FROM clusters WHERE id = $1")
                .bind(cluster.0)
                .fetch_all(&mut *tx)
                .await?;
            let nodes = sqlx::query(
                "SELECT * FROM pve_nodes WHERE cluster_id = $1 ORDER BY name COLLATE \"C\"",
            )
            .bind(cluster.0)
            .fetch_all(&mut *tx)
            .await?;
            let guests = sqlx::query("SELECT * FROM guests WHERE cluster_id = $1 ORDER BY vmid")
                .bind(cluster.0)
                .fetch_all(&mut *tx)
                .await?;
            Ok(InventorySnapshot {
                clusters: clusters.iter().map(rows::cluster).collect::<Result<_>>()?,
                nodes: nodes.iter().map(rows::node).collect::<Result<_>>()?,
                guests: guests.iter().map(rows::guest).collect::<Result<_>>()?,
            })
        }
        .await;
        finish(tx, r).await
    }

    async fn attach_host(&self, guest: GuestId, host: HostId, actor: &Actor) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let r = attach_in(&mut tx, guest, host, actor, now_micros(), "explicit").await;
        finish(tx, r).await
    }

    async fn guest_of_host(&self, host: HostId) -> Result<Option<GuestId>> {
        let row = sqlx::query("SELECT id FROM guests WHERE host_id = $1 LIMIT 1")
            .bind(host.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Uuid, _>("id"))
            .transpose()?
            .map(GuestId))
    }

    async fn guest_history(&self, guest: GuestId, limit: u32) -> Result<Vec<Event>> {
        // Each branch walks its own index newest first; the union keeps an event that
        // names both the guest and its host once.
        let found = sqlx::query(
            "SELECT * FROM events WHERE seq IN ( \
                 (SELECT seq FROM events WHERE guest_id = $1 ORDER BY seq DESC LIMIT $2) \
                 UNION \
                 (SELECT seq FROM events WHERE host_id = (SELECT host_id FROM guests WHERE id = $1) \
                  ORDER BY seq DESC LIMIT $2) \
             ) ORDER BY seq DESC LIMIT $2",
        )
        .bind(guest.0)
        .bind(i64::from(limit.min(MAX_HISTORY)))
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::event).collect()
    }
}

/// Bind `host` to `guest` inside the caller's transaction, under
/// [`super::discovery::ATTACH_LOCK`]: the host leaves any other guest (a host is one
/// machine) and event `host_attached` records it (`match` = `how`: `explicit`,
/// `registration_token`, `agentless`). Nothing happens when it is already bound there.
/// Errors: `NotFound` for an unknown guest or host.
pub(super) async fn attach_in(
    conn: &mut PgConnection,
    guest: GuestId,
    host: HostId,
    actor: &Actor,
    now: DateTime<Utc>,
    how: &str,
) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(super::discovery::ATTACH_LOCK)
        .execute(&mut *conn)
        .await?;
    let g = sqlx::query(
        "SELECT g.kind, g.vmid, g.node, g.host_id, c.name AS cluster FROM guests g \
         JOIN clusters c ON c.id = g.cluster_id WHERE g.id = $1 FOR NO KEY UPDATE OF g",
    )
    .bind(guest.0)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("guest {guest}")))?;
    let hostname: String = sqlx::query_scalar("SELECT hostname FROM hosts WHERE id = $1")
        .bind(host.0)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("host {host}")))?;
    let previous = g.try_get::<Option<Uuid>, _>("host_id")?.map(HostId);
    if previous == Some(host) {
        return Ok(());
    }
    // A host is one machine: it leaves any guest it was attached to before.
    let detached: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE guests SET host_id = NULL WHERE host_id = $1 AND id <> $2 RETURNING id",
    )
    .bind(host.0)
    .bind(guest.0)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("UPDATE guests SET host_id = $1 WHERE id = $2")
        .bind(host.0)
        .bind(guest.0)
        .execute(&mut *conn)
        .await?;
    let vmid: i64 = g.try_get("vmid")?;
    let subject = events::guest_subject(
        &g.try_get::<String, _>("cluster")?,
        &g.try_get::<String, _>("node")?,
        &g.try_get::<String, _>("kind")?,
        u32::try_from(vmid).unwrap_or_default(),
    );
    let ev = event(
        events::HOST_ATTACHED,
        subject,
        actor,
        json!({
            "guest_id": guest,
            "host_id": host,
            "hostname": hostname,
            "vmid": vmid,
            "match": how,
            "previous_host_id": previous,
            "detached_from": detached,
        }),
    );
    let ev = prepare_event(ev, Some(host), now).with_guest(Some(guest));
    let mut evs = vec![ev];
    // An agentless host the agent's host replaces is archived: one host per guest.
    if let Some(prev) = previous {
        let archived: Option<Uuid> = sqlx::query_scalar(
            "UPDATE hosts SET state = 'archived', retired_at = $1 WHERE id = $2 AND agentless \
             AND state = 'active' RETURNING id",
        )
        .bind(now)
        .bind(prev.0)
        .fetch_optional(&mut *conn)
        .await?;
        if archived.is_some() {
            evs.push(crate::host_plan::retired_event(
                prev,
                canopy_api_types::hosts::HostState::Archived,
                actor,
                Some(guest),
                &[],
                now,
            ));
        }
    }
    insert_events(conn, &evs).await
}
