//! Clusters, nodes and guests on SQLite ([`InventoryStore`]). Every method is one
//! transaction (writes in `BEGIN IMMEDIATE`, so passes of any two clusters queue on the
//! write lock); `apply_discovery` lives in [`super::discovery`]. [`attach_in`] binds a
//! host to a guest for `attach_host`, a guest-bound registration and an agentless host.

use super::{insert_events, is_unique_violation, new_event, rows, ts, SqliteStore};
use crate::common::{now_micros, prepare_event};
use crate::{
    events, Actor, ClusterRecord, DiscoveryWrite, InventorySnapshot, InventoryStore, NewCluster,
    Result, StoreError,
};
use async_trait::async_trait;
use canopy_api_types::hosts::Event;
use canopy_api_types::{ClusterId, GuestId, HostId};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::sqlite::SqliteConnection;
use sqlx::Row;

/// The most events `guest_history` returns.
const MAX_HISTORY: u32 = 10_000;

#[async_trait]
impl InventoryStore for SqliteStore {
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
        let mut tx = self.begin_immediate().await?;
        sqlx::query(
            "INSERT INTO clusters (id, name, endpoints, token_id, token_secret_sealed, fingerprints, ca_pem, \
             interval_secs, standalone, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?)",
        )
        .bind(rec.id.to_string())
        .bind(&rec.name)
        .bind(json!(rec.endpoints).to_string())
        .bind(&rec.token_id)
        .bind(&rec.token_secret_sealed)
        .bind(json!(rec.fingerprints).to_string())
        .bind(&rec.ca_pem)
        .bind(i64::from(rec.interval_secs))
        .bind(ts(now))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Conflict(format!("cluster name '{}' is taken", rec.name))
            } else {
                e.into()
            }
        })?;
        let ev = new_event(
            events::CLUSTER_ADDED,
            events::cluster_subject(&rec.name),
            actor,
            None,
            json!({
                "cluster_id": rec.id,
                "name": rec.name,
                "endpoints": rec.endpoints,
                "token_id": rec.token_id,
                "interval_secs": rec.interval_secs,
            }),
        );
        insert_events(&mut tx, &[prepare_event(ev, None, now)]).await?;
        tx.commit().await?;
        Ok(rec)
    }

    async fn list_clusters(&self) -> Result<Vec<ClusterRecord>> {
        let found = sqlx::query("SELECT * FROM clusters ORDER BY name, id")
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::cluster).collect()
    }

    async fn cluster_by_name(&self, name: &str) -> Result<Option<ClusterRecord>> {
        let row = sqlx::query("SELECT * FROM clusters WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::cluster).transpose()
    }

    async fn delete_cluster(&self, id: ClusterId, actor: &Actor) -> Result<()> {
        let now = now_micros();
        let mut tx = self.begin_immediate().await?;
        // Nodes and guests go by ON DELETE CASCADE; hosts stay, detached.
        let name: String = sqlx::query_scalar("DELETE FROM clusters WHERE id = ? RETURNING name")
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("cluster {id}")))?;
        let ev = new_event(
            events::CLUSTER_REMOVED,
            events::cluster_subject(&name),
            actor,
            None,
            json!({ "cluster_id": id, "name": name }),
        );
        insert_events(&mut tx, &[prepare_event(ev, None, now)]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn apply_discovery(&self, write: DiscoveryWrite) -> Result<()> {
        let mut tx = self.begin_immediate().await?;
        super::discovery::apply(&mut tx, write).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_discovery_error(
        &self,
        cluster: ClusterId,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<()> {
        // `last_discovery_at` is the last pass, failed or not; `last_error` says which.
        let done =
            sqlx::query("UPDATE clusters SET last_error = ?, last_discovery_at = ? WHERE id = ?")
                .bind(error)
                .bind(ts(at))
                .bind(cluster.to_string())
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
            "UPDATE pve_nodes SET apt_updates = ?, apt_checked_at = ?, apt_error = ? \
             WHERE cluster_id = ? AND name = ?",
        )
        .bind(updates.map(|u| u.to_string()))
        .bind(ts(at))
        .bind(error)
        .bind(cluster.to_string())
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
        // One read transaction: the three lists are one consistent snapshot.
        let mut tx = self.pool.begin().await?;
        let clusters = sqlx::query("SELECT * FROM clusters ORDER BY name, id")
            .fetch_all(&mut *tx)
            .await?;
        let nodes = sqlx::query("SELECT * FROM pve_nodes ORDER BY cluster_id, name")
            .fetch_all(&mut *tx)
            .await?;
        let guests = sqlx::query("SELECT * FROM guests ORDER BY cluster_id, vmid")
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(InventorySnapshot {
            clusters: clusters.iter().map(rows::cluster).collect::<Result<_>>()?,
            nodes: nodes.iter().map(rows::node).collect::<Result<_>>()?,
            guests: guests.iter().map(rows::guest).collect::<Result<_>>()?,
        })
    }

    async fn cluster_inventory(&self, cluster: ClusterId) -> Result<InventorySnapshot> {
        let mut tx = self.pool.begin().await?;
        let id = cluster.to_string();
        let clusters = sqlx::query("SELECT * FROM clusters WHERE id = ?")
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
        let nodes = sqlx::query("SELECT * FROM pve_nodes WHERE cluster_id = ? ORDER BY name")
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
        let guests = sqlx::query("SELECT * FROM guests WHERE cluster_id = ? ORDER BY vmid")
            .bind(&id)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(InventorySnapshot {
            clusters: clusters.iter().map(rows::cluster).collect::<Result<_>>()?,
            nodes: nodes.iter().map(rows::node).collect::<Result<_>>()?,
            guests: guests.iter().map(rows::guest).collect::<Result<_>>()?,
        })
    }

    async fn attach_host(&self, guest: GuestId, host: HostId, actor: &Actor) -> Result<()> {
        let mut tx = self.begin_immediate().await?;
        attach_in(&mut tx, guest, host, actor, now_micros(), "explicit").await?;
        tx.commit().await?;
        Ok(())
    }

    async fn guest_of_host(&self, host: HostId) -> Result<Option<GuestId>> {
        let row = sqlx::query("SELECT id FROM guests WHERE host_id = ? LIMIT 1")
            .bind(host.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref()
            .map(|r| rows::id(r, "guests", "id"))
            .transpose()
    }

    async fn guest_history(&self, guest: GuestId, limit: u32) -> Result<Vec<Event>> {
        // Each branch walks its own index newest first; the union keeps an event that
        // names both the guest and its host once.
        let limit = i64::from(limit.min(MAX_HISTORY));
        let found = sqlx::query(
            "SELECT * FROM events WHERE seq IN ( \
                 SELECT seq FROM (SELECT seq FROM events WHERE guest_id = ? ORDER BY seq DESC LIMIT ?) \
                 UNION \
                 SELECT seq FROM (SELECT seq FROM events WHERE host_id = \
                     (SELECT host_id FROM guests WHERE id = ?) ORDER BY seq DESC LIMIT ?) \
             ) ORDER BY seq DESC LIMIT ?",
        )
        .bind(guest.to_string())
        .bind(limit)
        .bind(guest.to_string())
        .bind(limit)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::event).collect()
    }
}

/// Bind `host` to `guest` inside the caller's write transaction: the host leaves any other
/// guest (a host is one machine) and event `host_attached` records it (`match` = `how`:
/// `explicit`, `registration_token`, `agentless`). Nothing happens when it is already
/// bound there. Errors: `NotFound` for an unknown guest or host.
pub(super) async fn attach_in(
    conn: &mut SqliteConnection,
    guest: GuestId,
    host: HostId,
    actor: &Actor,
    now: DateTime<Utc>,
    how: &str,
) -> Result<()> {
    let g = sqlx::query(
        "SELECT g.kind, g.vmid, g.node, g.host_id, c.name AS cluster FROM guests g \
         JOIN clusters c ON c.id = g.cluster_id WHERE g.id = ?",
    )
    .bind(guest.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("guest {guest}")))?;
    let hostname: String = sqlx::query_scalar("SELECT hostname FROM hosts WHERE id = ?")
        .bind(host.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("host {host}")))?;
    const T: &str = "guests";
    let previous: Option<HostId> = rows::opt_id(&g, T, "host_id")?;
    if previous == Some(host) {
        return Ok(());
    }
    // A host is one machine: it leaves any guest it was attached to before.
    let detached: Vec<String> = sqlx::query_scalar(
        "UPDATE guests SET host_id = NULL WHERE host_id = ? AND id <> ? RETURNING id",
    )
    .bind(host.to_string())
    .bind(guest.to_string())
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("UPDATE guests SET host_id = ? WHERE id = ?")
        .bind(host.to_string())
        .bind(guest.to_string())
        .execute(&mut *conn)
        .await?;
    let vmid: i64 = g.try_get("vmid")?;
    let subject = events::guest_subject(
        &rows::text(&g, T, "cluster")?,
        &rows::text(&g, T, "node")?,
        &rows::text(&g, T, "kind")?,
        u32::try_from(vmid).unwrap_or_default(),
    );
    let ev = new_event(
        events::HOST_ATTACHED,
        subject,
        actor,
        None,
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
        let archived: Option<String> = sqlx::query_scalar(
            "UPDATE hosts SET state = 'archived', retired_at = ? WHERE id = ? AND agentless = 1 \
             AND state = 'active' RETURNING id",
        )
        .bind(super::ts(now))
        .bind(prev.to_string())
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
