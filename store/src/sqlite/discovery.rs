//! `apply_discovery` on SQLite, inside the caller's `BEGIN IMMEDIATE` transaction: the
//! cluster's guests are loaded once, the pass is planned in Rust
//! ([`crate::inventory_plan`]), then written as multi-row statements of [`CHUNK`] rows,
//! and enrolled hosts are attached to guests by name.

use super::{insert_events, placeholders, rows, ts, Tx};
use crate::common::{micros, prepare_event};
use crate::inventory_plan::{self, StoredGuest};
use crate::{events, Actor, DiscoveryWrite, GuestRow, NewEvent, Result, StoreError};
use canopy_api_types::{ClusterId, GuestId, HostId};
use serde_json::json;
use sqlx::{QueryBuilder, Sqlite};

/// Rows per multi-row statement (at most 11 binds a row, below SQLite's 32,766).
const CHUNK: usize = 500;

pub(super) async fn apply(tx: &mut Tx, write: DiscoveryWrite) -> Result<()> {
    let cluster = write.cluster_id;
    let at = micros(write.at);
    let standalone = write.standalone;
    let name: String = sqlx::query_scalar("SELECT name FROM clusters WHERE id = ?")
        .bind(cluster.to_string())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("cluster {cluster}")))?;
    let stored = load_guests(tx, cluster).await?;
    let plan = inventory_plan::plan(stored, write);

    // The events first: their guest links were resolved before any row goes.
    insert_events(tx, &plan.events).await?;
    for chunk in plan.delete.chunks(CHUNK) {
        let sql = format!(
            "DELETE FROM guests WHERE id IN ({})",
            placeholders(chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id.to_string());
        }
        q.execute(&mut **tx).await?;
    }
    for chunk in plan.guests.chunks(CHUNK) {
        upsert_guests(tx, cluster, chunk, &ts(at)).await?;
    }

    let mut del = QueryBuilder::<Sqlite>::new("DELETE FROM pve_nodes WHERE cluster_id = ");
    del.push_bind(cluster.to_string());
    if !plan.nodes.is_empty() {
        del.push(" AND name NOT IN (");
        let mut names = del.separated(", ");
        for n in &plan.nodes {
            names.push_bind(n.name.clone());
        }
        del.push(")");
    }
    del.build().execute(&mut **tx).await?;
    for chunk in plan.nodes.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO pve_nodes (cluster_id, name, status, ip, error, updated_at) ",
        );
        q.push_values(chunk, |mut b, n| {
            b.push_bind(cluster.to_string())
                .push_bind(n.name.clone())
                .push_bind(n.status.clone())
                .push_bind(n.ip.clone())
                .push_bind(n.error.clone())
                .push_bind(ts(at));
        });
        // The node's cached apt updates outlive the pass.
        q.push(
            " ON CONFLICT (cluster_id, name) DO UPDATE SET status = excluded.status, ip = excluded.ip, \
             error = excluded.error, updated_at = excluded.updated_at",
        );
        q.build().execute(&mut **tx).await?;
    }

    sqlx::query(
        "UPDATE clusters SET last_error = NULL, last_discovery_at = ?, standalone = ? WHERE id = ?",
    )
    .bind(ts(at))
    .bind(standalone)
    .bind(cluster.to_string())
    .execute(&mut **tx)
    .await?;
    attach_by_name(tx, cluster, &name, at).await
}

async fn load_guests(tx: &mut Tx, cluster: ClusterId) -> Result<Vec<StoredGuest>> {
    const T: &str = "guests";
    let found = sqlx::query("SELECT id, vmid, kind FROM guests WHERE cluster_id = ?")
        .bind(cluster.to_string())
        .fetch_all(&mut **tx)
        .await?;
    found
        .iter()
        .map(|r| {
            let vmid = rows::int(r, T, "vmid")?;
            Ok(StoredGuest {
                id: rows::id(r, T, "id")?,
                vmid: u32::try_from(vmid)
                    .map_err(|_| StoreError::corrupt(T, format!("column vmid: {vmid}")))?,
                kind: rows::text(r, T, "kind")?,
            })
        })
        .collect()
}

/// Insert new guests and refresh known ones; a known guest keeps its id, first_seen,
/// os and host.
async fn upsert_guests(
    tx: &mut Tx,
    cluster: ClusterId,
    guests: &[(GuestId, GuestRow)],
    now: &str,
) -> Result<()> {
    let mut q = QueryBuilder::<Sqlite>::new(
        "INSERT INTO guests (id, cluster_id, kind, vmid, node, name, status, template, tags, first_seen, last_seen) ",
    );
    q.push_values(guests, |mut b, (id, g)| {
        b.push_bind(id.to_string())
            .push_bind(cluster.to_string())
            .push_bind(g.kind.clone())
            .push_bind(i64::from(g.vmid))
            .push_bind(g.node.clone())
            .push_bind(g.name.clone())
            .push_bind(g.status.clone())
            .push_bind(g.template)
            .push_bind(json!(g.tags).to_string())
            .push_bind(now.to_string())
            .push_bind(now.to_string());
    });
    q.push(
        " ON CONFLICT (cluster_id, vmid) DO UPDATE SET node = excluded.node, name = excluded.name, \
         status = excluded.status, template = excluded.template, tags = excluded.tags, \
         last_seen = excluded.last_seen",
    );
    q.build().execute(&mut **tx).await?;
    Ok(())
}

/// Attach each enrolled host to this cluster's guest of the same name when exactly one
/// non-template guest (in any cluster) and exactly one unattached host have that name and
/// the guest has no host yet. One query finds the pairs; each becomes `host_attached`.
async fn attach_by_name(
    tx: &mut Tx,
    cluster: ClusterId,
    cluster_name: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    const T: &str = "guests";
    let pairs = sqlx::query(
        "SELECT g.id AS guest_id, g.kind, g.vmid, g.node, h.id AS host_id, h.hostname \
         FROM guests g JOIN hosts h ON h.hostname = g.name \
         WHERE g.cluster_id = ? AND g.host_id IS NULL AND NOT g.template \
           AND NOT EXISTS (SELECT 1 FROM guests a WHERE a.host_id = h.id) \
           AND (SELECT COUNT(*) FROM guests o WHERE o.name = g.name AND NOT o.template) = 1 \
           AND (SELECT COUNT(*) FROM hosts o WHERE o.hostname = g.name \
                AND NOT EXISTS (SELECT 1 FROM guests a WHERE a.host_id = o.id)) = 1 \
         ORDER BY g.vmid",
    )
    .bind(cluster.to_string())
    .fetch_all(&mut **tx)
    .await?;
    let mut evs = Vec::with_capacity(pairs.len());
    for p in &pairs {
        let guest: GuestId = rows::id(p, T, "guest_id")?;
        let host: HostId = rows::id(p, "hosts", "host_id")?;
        let vmid = u32::try_from(rows::int(p, T, "vmid")?).unwrap_or_default();
        sqlx::query("UPDATE guests SET host_id = ? WHERE id = ?")
            .bind(host.to_string())
            .bind(guest.to_string())
            .execute(&mut **tx)
            .await?;
        let ev = NewEvent {
            event_type: events::HOST_ATTACHED.into(),
            subject: events::guest_subject(
                cluster_name,
                &rows::text(p, T, "node")?,
                &rows::text(p, T, "kind")?,
                vmid,
            ),
            actor: Actor::System,
            correlation: None,
            causation: None,
            payload: json!({
                "guest_id": guest,
                "host_id": host,
                "hostname": rows::text(p, "hosts", "hostname")?,
                "vmid": vmid,
                "match": "hostname",
            }),
        };
        evs.push(prepare_event(ev, Some(host), at).with_guest(Some(guest)));
    }
    insert_events(tx, &evs).await
}
