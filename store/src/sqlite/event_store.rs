//! The event log and idempotency keys on SQLite.

use super::{insert_events, is_unique_violation, rows, ts, SqliteStore};
use crate::common::{now_micros, prepare_event};
use crate::{EventStore, NewEvent, Result, StoreError};
use async_trait::async_trait;
use canopy_api_types::hosts::{Event, EventFilter};
use canopy_api_types::HostId;
use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};

/// Events returned when the filter names no limit, and the most ever returned.
const DEFAULT_EVENT_LIMIT: u32 = 1_000;
const MAX_EVENT_LIMIT: u32 = 10_000;

/// `host/{uuid}…` subjects concern that host.
fn host_of(subject: &str) -> Option<HostId> {
    let rest = subject.strip_prefix("host/")?;
    rest.split('/').next()?.parse().ok()
}

#[async_trait]
impl EventStore for SqliteStore {
    async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let mut qb: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new("SELECT * FROM events WHERE 1 = 1");
        if let Some(h) = filter.host_id {
            qb.push(" AND host_id = ").push_bind(h.to_string());
        }
        if let Some(c) = filter.correlation_id {
            qb.push(" AND correlation_id = ").push_bind(c.to_string());
        }
        if let Some(after) = filter.after {
            qb.push(" AND seq > ").push_bind(after);
        }
        let limit = filter
            .limit
            .unwrap_or(DEFAULT_EVENT_LIMIT)
            .clamp(1, MAX_EVENT_LIMIT);
        qb.push(" ORDER BY seq LIMIT ").push_bind(i64::from(limit));
        let found = qb.build().fetch_all(&self.pool).await?;
        found.iter().map(rows::event).collect()
    }

    async fn append_event(&self, event: NewEvent) -> Result<Event> {
        let host = host_of(&event.subject);
        let prepared = prepare_event(event, host, now_micros());
        let mut tx = self.pool.begin().await?;
        insert_events(&mut tx, std::slice::from_ref(&prepared)).await?;
        let row = sqlx::query("SELECT * FROM events WHERE id = ?")
            .bind(prepared.id.to_string())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        rows::event(&row)
    }

    async fn purge_events(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM events WHERE ts < ?")
            .bind(ts(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn idempotent_response(
        &self,
        actor: &str,
        key: &str,
    ) -> Result<Option<(String, serde_json::Value)>> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT request_hash, response FROM idempotency_keys WHERE actor = ? AND key = ?",
        )
        .bind(actor)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(hash, body)| {
            serde_json::from_str(&body).map(|v| (hash, v)).map_err(|e| {
                StoreError::corrupt("idempotency_keys", format!("column response: {e}"))
            })
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
        let res = sqlx::query(
            "INSERT INTO idempotency_keys (actor, key, request_hash, response, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(actor)
        .bind(key)
        .bind(request_hash)
        .bind(response.to_string())
        .bind(ts(now))
        .execute(&self.pool)
        .await;
        match res {
            Err(e) if is_unique_violation(&e) => Err(StoreError::Conflict(format!(
                "idempotency key '{key}' was already used by {actor}"
            ))),
            other => other.map(|_| ()).map_err(Into::into),
        }
    }
}
