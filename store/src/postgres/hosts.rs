//! Host registration and check-in bookkeeping on PostgreSQL.

use super::rows::{self, HOST_SELECT};
use super::{insert_events, unique_to_conflict, PgStore};
use crate::common::{micros, prepare_event};
use crate::{events, Actor, HostStore, NewEvent, NewHost, Result, StoreError};
use async_trait::async_trait;
use canopy_api_types::agent::HostFacts;
use canopy_api_types::hosts::Host;
use canopy_api_types::HostId;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

#[async_trait]
impl HostStore for PgStore {
    async fn register_host(
        &self,
        token_hash: &str,
        new: NewHost,
        now: DateTime<Utc>,
    ) -> Result<Host> {
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        let r: Result<_> = async {
            // Lock the token: concurrent registrations queue here and cannot overspend seats.
            let token = sqlx::query(
                "SELECT id, seats, seats_used, expires_at, revoked FROM registration_tokens WHERE token_hash = $1 FOR NO KEY UPDATE",
            )
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::TokenUnknown)?;
            let token_id: Uuid = token.try_get("id")?;
            if token.try_get::<bool, _>("revoked")? {
                return Err(StoreError::TokenRevoked);
            }
            if token.try_get::<DateTime<Utc>, _>("expires_at")? <= now {
                return Err(StoreError::TokenExpired);
            }
            if token.try_get::<i32, _>("seats_used")? >= token.try_get::<i32, _>("seats")? {
                return Err(StoreError::NoSeats);
            }
            sqlx::query("UPDATE registration_tokens SET seats_used = seats_used + 1 WHERE id = $1")
                .bind(token_id)
                .execute(&mut *tx)
                .await?;
            let f = &new.facts;
            let existing: Option<Uuid> = sqlx::query_scalar("SELECT id FROM hosts WHERE machine_id = $1 FOR NO KEY UPDATE")
                .bind(&f.machine_id)
                .fetch_optional(&mut *tx)
                .await?;
            let (id, event_type) = match existing {
                Some(id) => {
                    sqlx::query(
                        "UPDATE hosts SET hostname = $1, os_id = $2, os_pretty = $3, kernel = $4, arch = $5, agent_version = $6, \
                         read_only = $7, credential_hash = $8, registration_token_id = $9, last_seen = $10 WHERE id = $11",
                    )
                    .bind(&f.hostname)
                    .bind(&f.os_id)
                    .bind(&f.os_pretty)
                    .bind(&f.kernel)
                    .bind(&f.arch)
                    .bind(&f.agent_version)
                    .bind(f.read_only)
                    .bind(&new.credential_hash)
                    .bind(token_id)
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                    (HostId(id), events::HOST_REENROLLED)
                }
                None => {
                    sqlx::query(
                        "INSERT INTO hosts (id, hostname, machine_id, os_id, os_pretty, kernel, arch, agent_version, read_only, \
                         credential_hash, registration_token_id, last_seen, registered_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)",
                    )
                    .bind(new.id.0)
                    .bind(&f.hostname)
                    .bind(&f.machine_id)
                    .bind(&f.os_id)
                    .bind(&f.os_pretty)
                    .bind(&f.kernel)
                    .bind(&f.arch)
                    .bind(&f.agent_version)
                    .bind(f.read_only)
                    .bind(&new.credential_hash)
                    .bind(token_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| {
                        unique_to_conflict(e, || {
                            format!("a host with machine-id '{}' is being registered concurrently", f.machine_id)
                        })
                    })?;
                    (new.id, events::HOST_REGISTERED)
                }
            };
            let ev = NewEvent {
                event_type: event_type.into(),
                subject: events::host_subject(id),
                actor: Actor::Agent(id),
                correlation: None,
                causation: None,
                payload: serde_json::json!({
                    "hostname": f.hostname,
                    "machine_id": f.machine_id,
                    "registration_token_id": token_id,
                }),
            };
            insert_events(&mut tx, &[prepare_event(ev, Some(id), now)]).await?;
            let row = sqlx::query(&format!("{HOST_SELECT} WHERE h.id = $1"))
                .bind(id.0)
                .fetch_one(&mut *tx)
                .await?;
            let host = rows::host(&row)?;
            Ok(host)
        }
        .await;
        super::finish(tx, r).await
    }

    async fn host_credential(&self, host: HostId) -> Result<Option<(Host, String)>> {
        let row = sqlx::query(&format!("{HOST_SELECT} WHERE h.id = $1"))
            .bind(host.0)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((rows::host(&r)?, r.try_get("credential_hash")?)))
            .transpose()
    }

    async fn touch_host(&self, host: HostId, f: &HostFacts, now: DateTime<Utc>) -> Result<()> {
        // A check-in is not an event (it would flood the log every 30 s per host).
        let done = sqlx::query(
            "UPDATE hosts SET last_seen = $1, hostname = $2, os_id = $3, os_pretty = $4, kernel = $5, arch = $6, \
             agent_version = $7, read_only = $8 WHERE id = $9",
        )
        .bind(micros(now))
        .bind(&f.hostname)
        .bind(&f.os_id)
        .bind(&f.os_pretty)
        .bind(&f.kernel)
        .bind(&f.arch)
        .bind(&f.agent_version)
        .bind(f.read_only)
        .bind(host.0)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("host {host}")));
        }
        Ok(())
    }

    async fn get_host(&self, host: HostId) -> Result<Option<Host>> {
        Ok(self.host_credential(host).await?.map(|(h, _)| h))
    }

    async fn list_hosts(&self) -> Result<Vec<Host>> {
        let rows = sqlx::query(&format!(
            "{HOST_SELECT} ORDER BY h.hostname COLLATE \"C\", h.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::host).collect()
    }

    async fn report_hash(&self, host: HostId) -> Result<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT report_hash FROM hosts WHERE id = $1")
                .bind(host.0)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }
}
