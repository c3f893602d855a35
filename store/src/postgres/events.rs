//! The append-only event log and the idempotency-key store on PostgreSQL.

use super::{insert_events, rows, unique_to_conflict, PgStore};
use crate::common::{micros, now_micros, prepare_event};
use crate::{EventStore, NewEvent, Result};
use async_trait::async_trait;
use canopy_api_types::hosts::{Event, EventFilter};
use canopy_api_types::HostId;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Row};

/// Events returned when the filter names no limit, and the most ever returned.
const DEFAULT_LIMIT: u32 = 1000;
const MAX_LIMIT: u32 = 10_000;

/// The host an event is about, from its subject path `host/{id}/…`.
fn host_of(subject: &str) -> Option<HostId> {
    subject
        .strip_prefix("host/")?
        .split('/')
        .next()?
        .parse()
        .ok()
}

#[async_trait]
impl EventStore for PgStore {
    async fn events(&self, f: &EventFilter) -> Result<Vec<Event>> {
        let mut q = QueryBuilder::<Postgres>::new("SELECT * FROM events WHERE TRUE");
        if let Some(h) = f.host_id {
            q.push(" AND host_id = ").push_bind(h.0);
        }
        if let Some(c) = f.correlation_id {
            q.push(" AND correlation_id = ").push_bind(c.0);
        }
        if let Some(after) = f.after {
            q.push(" AND seq > ").push_bind(after);
        }
        q.push(" ORDER BY seq LIMIT ")
            .push_bind(i64::from(f.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT)));
        let rows = q.build().fetch_all(&self.pool).await?;
        rows.iter().map(rows::event).collect()
    }

    async fn append_event(&self, new: NewEvent) -> Result<Event> {
        let host = host_of(&new.subject);
        let prepared = prepare_event(new, host, now_micros());
        let mut tx = self.pool.begin().await?;
        insert_events(&mut tx, std::slice::from_ref(&prepared)).await?;
        let row = sqlx::query("SELECT * FROM events WHERE id = $1")
            .bind(prepared.id.0)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        rows::event(&row)
    }

    async fn purge_events(&self, before: DateTime<Utc>) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM events WHERE ts < $1")
            .bind(micros(before))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn idempotent_response(
        &self,
        actor: &str,
        key: &str,
    ) -> Result<Option<(String, serde_json::Value)>> {
        let row = sqlx::query(
            "SELECT request_hash, response FROM idempotency_keys WHERE actor = $1 AND key = $2",
        )
        .bind(actor)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("request_hash")?, r.try_get("response")?)))
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
        sqlx::query(
            "INSERT INTO idempotency_keys (actor, key, request_hash, response, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(actor)
        .bind(key)
        .bind(request_hash)
        .bind(response)
        .bind(micros(now))
        .execute(&self.pool)
        .await
        .map_err(|e| unique_to_conflict(e, || format!("Idempotency-Key '{key}' was already used")))?;
        Ok(())
    }
}
