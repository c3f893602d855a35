//! The event log and idempotency keys on SQLite.

use super::rows::{opt_uuid, uuid};
use super::{insert_events, SqliteStore};
use crate::common::{now_micros, prepare_event};
use crate::{EventStore, NewEvent, Result, StoreError};
use async_trait::async_trait;
use canopy_api_types::hosts::{Event, EventFilter};
use canopy_api_types::{CorrelationId, EventId};
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};

fn event(row: &SqliteRow) -> Result<Event> {
    let payload: String = row.try_get("payload")?;
    Ok(Event {
        id: EventId(uuid(row, "id")?),
        seq: row.try_get("seq")?,
        ts: row.try_get("ts")?,
        event_type: row.try_get("event_type")?,
        subject: row.try_get("subject")?,
        actor: row.try_get("actor")?,
        correlation_id: opt_uuid(row, "correlation_id")?.map(CorrelationId),
        causation_id: opt_uuid(row, "causation_id")?.map(EventId),
        payload: serde_json::from_str(&payload).map_err(|e| StoreError::corrupt("events", e.to_string()))?,
        checksum: row.try_get("checksum")?,
    })
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn events(&self, f: &EventFilter) -> Result<Vec<Event>> {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM events WHERE 1 = 1");
        if let Some(h) = f.host_id {
            q.push(" AND host_id = ").push_bind(h.to_string());
        }
        if let Some(c) = f.correlation_id {
            q.push(" AND correlation_id = ").push_bind(c.to_string());
        }
        if let Some(after) = f.after {
            q.push(" AND seq > ").push_bind(after);
        }
        q.push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(f.limit.unwrap_or(1000).min(10_000)));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(event).collect()
    }

    async fn append_event(&self, new: NewEvent) -> Result<Event> {
        let prepared = prepare_event(new, None, now_micros());
        let mut tx = self.write_tx().await?;
        insert_events(&mut tx, std::slice::from_ref(&prepared)).await?;
        let row = sqlx::query("SELECT * FROM events WHERE id = ?")
            .bind(prepared.id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        event(&row)
    }

    async fn purge_events(&self, before: DateTime<Utc>) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM events WHERE ts < ?")
            .bind(before)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn idempotent_response(&self, actor: &str, key: &str) -> Result<Option<(String, serde_json::Value)>> {
        let row = sqlx::query("SELECT request_hash, response FROM idempotency_keys WHERE actor = ? AND key = ?")
            .bind(actor)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let resp: String = r.try_get("response")?;
            Ok((
                r.try_get("request_hash")?,
                serde_json::from_str(&resp).map_err(|e| StoreError::corrupt("idempotency_keys", e.to_string()))?,
            ))
        })
        .transpose()
    }

    async fn save_idempotent_response(
        &self,
        actor: &str,
        key: &str,
        request_hash: &str,
        response: &serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO idempotency_keys (actor, key, request_hash, response, created_at) VALUES (?, ?, ?, ?, ?)")
            .bind(actor)
            .bind(key)
            .bind(request_hash)
            .bind(response.to_string())
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| super::unique_to_conflict(e, || format!("Idempotency-Key '{key}' was already used")))?;
        Ok(())
    }
}
