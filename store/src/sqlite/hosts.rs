//! Host registration and check-in bookkeeping on SQLite.

use super::rows::{self, HOST_SELECT};
use super::{insert_events, SqliteStore};
use crate::common::{micros, prepare_event};
use crate::{events, Actor, HostStore, NewEvent, NewHost, Result, StoreError};
use async_trait::async_trait;
use canopy_api_types::agent::HostFacts;
use canopy_api_types::hosts::Host;
use canopy_api_types::HostId;
use chrono::{DateTime, Utc};
use sqlx::Row;

#[async_trait]
impl HostStore for SqliteStore {
    async fn register_host(&self, token_hash: &str, new: NewHost, now: DateTime<Utc>) -> Result<Host> {
        let now = micros(now);
        let mut tx = self.write_tx().await?;
        let token = sqlx::query("SELECT id, seats, seats_used, expires_at, revoked FROM registration_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::TokenUnknown)?;
        let token_id: String = token.try_get("id")?;
        if token.try_get::<bool, _>("revoked")? {
            return Err(StoreError::TokenRevoked);
        }
        if token.try_get::<DateTime<Utc>, _>("expires_at")? <= now {
            return Err(StoreError::TokenExpired);
        }
        if token.try_get::<i64, _>("seats_used")? >= token.try_get::<i64, _>("seats")? {
            return Err(StoreError::NoSeats);
        }
        sqlx::query("UPDATE registration_tokens SET seats_used = seats_used + 1 WHERE id = ?")
            .bind(&token_id)
            .execute(&mut *tx)
            .await?;
        let f = &new.facts;
        let existing: Option<String> = sqlx::query_scalar("SELECT id FROM hosts WHERE machine_id = ?")
            .bind(&f.machine_id)
            .fetch_optional(&mut *tx)
            .await?;
        let (id, event_type) = match existing {
            Some(id) => {
                sqlx::query(
                    "UPDATE hosts SET hostname = ?, os_id = ?, os_pretty = ?, kernel = ?, arch = ?, agent_version = ?, \
                     read_only = ?, credential_hash = ?, registration_token_id = ?, last_seen = ? WHERE id = ?",
                )
                .bind(&f.hostname)
                .bind(&f.os_id)
                .bind(&f.os_pretty)
                .bind(&f.kernel)
                .bind(&f.arch)
                .bind(&f.agent_version)
                .bind(f.read_only)
                .bind(&new.credential_hash)
                .bind(&token_id)
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                (id, events::HOST_REENROLLED)
            }
            None => {
                let id = new.id.to_string();
                sqlx::query(
                    "INSERT INTO hosts (id, hostname, machine_id, os_id, os_pretty, kernel, arch, agent_version, read_only, \
                     credential_hash, registration_token_id, last_seen, registered_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(&id)
                .bind(&f.hostname)
                .bind(&f.machine_id)
                .bind(&f.os_id)
                .bind(&f.os_pretty)
                .bind(&f.kernel)
                .bind(&f.arch)
                .bind(&f.agent_version)
                .bind(f.read_only)
                .bind(&new.credential_hash)
                .bind(&token_id)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                (id, events::HOST_REGISTERED)
            }
        };
        let host_id: HostId = id
            .parse()
            .map_err(|_| StoreError::corrupt("hosts", format!("id {id}")))?;
        let ev = NewEvent {
            event_type: event_type.into(),
            subject: events::host_subject(host_id),
            actor: Actor::Agent(host_id),
            correlation: None,
            causation: None,
            payload: serde_json::json!({
                "hostname": f.hostname, "machine_id": f.machine_id, "os": f.os_pretty,
                "read_only": f.read_only, "registration_token": token_id,
            }),
        };
        insert_events(&mut tx, &[prepare_event(ev, Some(host_id), now)]).await?;
        let row = sqlx::query(&format!("{HOST_SELECT} WHERE h.id = ?"))
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        let host = rows::host(&row)?;
        tx.commit().await?;
        Ok(host)
    }

    async fn host_credential(&self, host: HostId) -> Result<Option<(Host, String)>> {
        let row = sqlx::query(&format!("{HOST_SELECT} WHERE h.id = ?"))
            .bind(host.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((rows::host(&r)?, r.try_get("credential_hash")?))).transpose()
    }

    async fn touch_host(&self, host: HostId, f: &HostFacts, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE hosts SET last_seen = ?, hostname = ?, os_id = ?, os_pretty = ?, kernel = ?, arch = ?, \
             agent_version = ?, read_only = ? WHERE id = ?",
        )
        .bind(micros(now))
        .bind(&f.hostname)
        .bind(&f.os_id)
        .bind(&f.os_pretty)
        .bind(&f.kernel)
        .bind(&f.arch)
        .bind(&f.agent_version)
        .bind(f.read_only)
        .bind(host.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_host(&self, host: HostId) -> Result<Option<Host>> {
        Ok(self.host_credential(host).await?.map(|(h, _)| h))
    }

    async fn list_hosts(&self) -> Result<Vec<Host>> {
        // One statement: the counts come from a grouped join, not a query per host.
        let rows = sqlx::query(
            "SELECT h.*, COALESCE(c.pending, 0) AS pending_updates, COALESCE(c.security, 0) AS security_updates \
             FROM hosts h LEFT JOIN ( \
                SELECT host_id, COUNT(*) AS pending, SUM(severity = 'security') AS security FROM updates \
                WHERE status NOT IN ('installed','reconciled','rejected') GROUP BY host_id \
             ) c ON c.host_id = h.id ORDER BY h.hostname",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::host).collect()
    }

    async fn report_hash(&self, host: HostId) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT report_hash FROM hosts WHERE id = ?")
            .bind(host.to_string())
            .fetch_optional(&self.pool)
            .await?
            .flatten())
    }
}
