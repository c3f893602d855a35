//! `apply_discovery` on PostgreSQL, inside the caller's transaction: the cluster row is
//! locked (`FOR NO KEY UPDATE`, so two passes of one cluster serialise), its guests are
//! loaded once, the pass is planned in Rust ([`crate::inventory_plan`]), then written with
//! one `INSERT … SELECT FROM UNNEST(…) ON CONFLICT` per table and `= ANY($n)` deletes,
//! and enrolled hosts are attached to guests by name.

use super::insert_events;
use crate::common::{micros, prepare_event};
use crate::inventory_plan::{self, StoredGuest};
use crate::{events, Actor, DiscoveryWrite, NewEvent, Result, StoreError};
use canopy_api_types::{ClusterId, GuestId, HostId};
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

/// Transaction-level advisory lock held while hosts are bound to guests: passes of two
/// clusters (and explicit attaches) take turns, so each sees the others' bindings.
pub(super) const ATTACH_LOCK: i64 = 0x4341_4E4F_5059_0001;

pub(super) async fn apply(conn: &mut PgConnection, write: DiscoveryWrite) -> Result<()> {
    let cluster = write.cluster_id;
    let at = micros(write.at);
    let standalone = write.standalone;
    let name: String =
        sqlx::query_scalar("SELECT name FROM clusters WHERE id = $1 FOR NO KEY UPDATE")
            .bind(cluster.0)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("cluster {cluster}")))?;
    let stored = load_guests(conn, cluster).await?;
    let plan = inventory_plan::plan(stored, write);

    // The events first: their guest links were resolved before any row goes.
    insert_events(&mut *conn, &plan.events).await?;
    if !plan.delete.is_empty() {
        let ids: Vec<Uuid> = plan.delete.iter().map(|g| g.0).collect();
        sqlx::query("DELETE FROM guests WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut *conn)
            .await?;
    }
    if !plan.guests.is_empty() {
        let g = &plan.guests;
        // A known guest keeps its id, first_seen, os and host.
        sqlx::query(
            "INSERT INTO guests (id, cluster_id, kind, vmid, node, name, status, template, tags, first_seen, last_seen) \
             SELECT v.id, $1, v.kind, v.vmid, v.node, v.name, v.status, v.template, v.tags::jsonb, $2, $2 \
             FROM UNNEST($3::uuid[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[], $9::bool[], $10::text[]) \
                 AS v(id, kind, vmid, node, name, status, template, tags) \
             ON CONFLICT (cluster_id, vmid) DO UPDATE SET node = excluded.node, name = excluded.name, \
                 status = excluded.status, template = excluded.template, tags = excluded.tags, \
                 last_seen = excluded.last_seen",
        )
        .bind(cluster.0)
        .bind(at)
        .bind(g.iter().map(|(id, _)| id.0).collect::<Vec<_>>())
        .bind(g.iter().map(|(_, r)| r.kind.clone()).collect::<Vec<_>>())
        .bind(g.iter().map(|(_, r)| i64::from(r.vmid)).collect::<Vec<_>>())
        .bind(g.iter().map(|(_, r)| r.node.clone()).collect::<Vec<_>>())
        .bind(g.iter().map(|(_, r)| r.name.clone()).collect::<Vec<_>>())
        .bind(g.iter().map(|(_, r)| r.status.clone()).collect::<Vec<_>>())
        .bind(g.iter().map(|(_, r)| r.template).collect::<Vec<_>>())
        .bind(g.iter().map(|(_, r)| json!(r.tags).to_string()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }

    let n = &plan.nodes;
    sqlx::query("DELETE FROM pve_nodes WHERE cluster_id = $1 AND NOT (name = ANY($2))")
        .bind(cluster.0)
        .bind(n.iter().map(|n| n.name.clone()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    if !n.is_empty() {
        // The node's cached apt updates outlive the pass.
        sqlx::query(
            "INSERT INTO pve_nodes (cluster_id, name, status, ip, error, updated_at) \
             SELECT $1, v.name, v.status, v.ip, v.error, $2 \
             FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[]) AS v(name, status, ip, error) \
             ON CONFLICT (cluster_id, name) DO UPDATE SET status = excluded.status, ip = excluded.ip, \
                 error = excluded.error, updated_at = excluded.updated_at",
        )
        .bind(cluster.0)
        .bind(at)
        .bind(n.iter().map(|n| n.name.clone()).collect::<Vec<_>>())
        .bind(n.iter().map(|n| n.status.clone()).collect::<Vec<_>>())
        .bind(n.iter().map(|n| n.ip.clone()).collect::<Vec<_>>())
        .bind(n.iter().map(|n| n.error.clone()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }

    sqlx::query(
        "UPDATE clusters SET last_error = NULL, last_discovery_at = $1, standalone = $2 WHERE id = $3",
    )
    .bind(at)
    .bind(standalone)
    .bind(cluster.0)
    .execute(&mut *conn)
    .await?;
    attach_by_name(conn, cluster, &name, at).await
}

async fn load_guests(conn: &mut PgConnection, cluster: ClusterId) -> Result<Vec<StoredGuest>> {
    let found = sqlx::query("SELECT id, vmid, kind FROM guests WHERE cluster_id = $1")
        .bind(cluster.0)
        .fetch_all(&mut *conn)
        .await?;
    found
        .iter()
        .map(|r| {
            let vmid: i64 = r.try_get("vmid")?;
            Ok(StoredGuest {
                id: GuestId(r.try_get("id")?),
                vmid: u32::try_from(vmid)
                    .map_err(|_| StoreError::corrupt("guests", format!("column vmid: {vmid}")))?,
                kind: r.try_get("kind")?,
            })
        })
        .collect()
}

/// Attach each enrolled host to this cluster's guest of the same name when exactly one
/// non-template guest (in any cluster) and exactly one unattached host have that name and
/// the guest has no host yet. One query finds the pairs, one UPDATE binds them; each
/// becomes `host_attached`.
async fn attach_by_name(
    conn: &mut PgConnection,
    cluster: ClusterId,
    cluster_name: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(ATTACH_LOCK)
        .execute(&mut *conn)
        .await?;
    let pairs = sqlx::query(
        "SELECT g.id AS guest_id, g.kind, g.vmid, g.node, h.id AS host_id, h.hostname \
         FROM guests g JOIN hosts h ON h.hostname = g.name \
         WHERE g.cluster_id = $1 AND g.host_id IS NULL AND NOT g.template \
           AND NOT EXISTS (SELECT 1 FROM guests a WHERE a.host_id = h.id) \
           AND (SELECT COUNT(*) FROM guests o WHERE o.name = g.name AND NOT o.template) = 1 \
           AND (SELECT COUNT(*) FROM hosts o WHERE o.hostname = g.name \
                AND NOT EXISTS (SELECT 1 FROM guests a WHERE a.host_id = o.id)) = 1 \
         ORDER BY g.vmid",
    )
    .bind(cluster.0)
    .fetch_all(&mut *conn)
    .await?;
    if pairs.is_empty() {
        return Ok(());
    }
    let mut guests = Vec::with_capacity(pairs.len());
    let mut hosts = Vec::with_capacity(pairs.len());
    let mut evs = Vec::with_capacity(pairs.len());
    for p in &pairs {
        let guest = GuestId(p.try_get("guest_id")?);
        let host = HostId(p.try_get("host_id")?);
        let vmid = u32::try_from(p.try_get::<i64, _>("vmid")?).unwrap_or_default();
        guests.push(guest.0);
        hosts.push(host.0);
        let ev = NewEvent {
            event_type: events::HOST_ATTACHED.into(),
            subject: events::guest_subject(
                cluster_name,
                &p.try_get::<String, _>("node")?,
                &p.try_get::<String, _>("kind")?,
                vmid,
            ),
            actor: Actor::System,
            correlation: None,
            causation: None,
            payload: json!({
                "guest_id": guest,
                "host_id": host,
                "hostname": p.try_get::<String, _>("hostname")?,
                "vmid": vmid,
                "match": "hostname",
            }),
        };
        evs.push(prepare_event(ev, Some(host), at).with_guest(Some(guest)));
    }
    sqlx::query(
        "UPDATE guests g SET host_id = v.host FROM UNNEST($1::uuid[], $2::uuid[]) AS v(guest, host) \
         WHERE g.id = v.guest",
    )
    .bind(guests)
    .bind(hosts)
    .execute(&mut *conn)
    .await?;
    insert_events(&mut *conn, &evs).await
}
