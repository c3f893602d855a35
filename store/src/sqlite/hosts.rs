//! Host enrolment, check-ins and host listings on SQLite.

use super::rows::{self, HOST_SELECT};
use super::{insert_events, new_event, ts, SqliteStore, Tx};
use crate::common::{micros, prepare_event};
use crate::{events, Actor, HostStore, NewHost, Result, StoreError};
use async_trait::async_trait;
use canopy_api_types::agent::HostFacts;
use canopy_api_types::hosts::Host;
use canopy_api_types::HostId;
use chrono::{DateTime, Utc};
use serde_json::json;

impl SqliteStore {
    /// One host with its counts, inside a transaction.
    pub(super) async fn host_in(tx: &mut Tx, host: HostId) -> Result<Option<Host>> {
        let row = sqlx::query(&format!("{HOST_SELECT} WHERE h.id = ? GROUP BY h.id"))
            .bind(host.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        row.as_ref().map(rows::host).transpose()
    }
}

#[async_trait]
impl HostStore for SqliteStore {
    async fn register_host(
        &self,
        token_hash: &str,
        new: NewHost,
        now: DateTime<Utc>,
    ) -> Result<Host> {
        let now = micros(now);
        let mut tx = self.begin_immediate().await?;
        let token = sqlx::query("SELECT * FROM registration_tokens WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::TokenUnknown)?;
        let token = rows::registration_token(&token)?;
        if token.revoked {
            return Err(StoreError::TokenRevoked);
        }
        if token.expires_at <= now {
            return Err(StoreError::TokenExpired);
        }
        if token.seats_used >= token.seats {
            return Err(StoreError::NoSeats);
        }
        sqlx::query("UPDATE registration_tokens SET seats_used = seats_used + 1 WHERE id = ?")
            .bind(token.id.to_string())
            .execute(&mut *tx)
            .await?;
        let f = &new.facts;
        let existing: Option<String> =
            sqlx::query_scalar("SELECT id FROM hosts WHERE machine_id = ?")
                .bind(&f.machine_id)
                .fetch_optional(&mut *tx)
                .await?;
        let (host_id, event_type) = match existing {
            Some(id) => {
                sqlx::query(
                    "UPDATE hosts SET hostname = ?, os_id = ?, os_pretty = ?, kernel = ?, arch = ?, \
                     agent_version = ?, read_only = ?, credential_hash = ?, registration_token_id = ?, \
                     last_seen = ? WHERE id = ?",
                )
                .bind(&f.hostname)
                .bind(&f.os_id)
                .bind(&f.os_pretty)
                .bind(&f.kernel)
                .bind(&f.arch)
                .bind(&f.agent_version)
                .bind(f.read_only)
                .bind(&new.credential_hash)
                .bind(token.id.to_string())
                .bind(ts(now))
                .bind(&id)
                .execute(&mut *tx)
                .await?;
                (
                    rows::parse::<HostId>("hosts", "id", &id)?,
                    events::HOST_REENROLLED,
                )
            }
            None => {
                sqlx::query(
                    "INSERT INTO hosts (id, hostname, machine_id, os_id, os_pretty, kernel, arch, agent_version, \
                     read_only, credential_hash, registration_token_id, last_seen, registered_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(new.id.to_string())
                .bind(&f.hostname)
                .bind(&f.machine_id)
                .bind(&f.os_id)
                .bind(&f.os_pretty)
                .bind(&f.kernel)
                .bind(&f.arch)
                .bind(&f.agent_version)
                .bind(f.read_only)
                .bind(&new.credential_hash)
                .bind(token.id.to_string())
                .bind(ts(now))
                .bind(ts(now))
                .execute(&mut *tx)
                .await?;
                (new.id, events::HOST_REGISTERED)
            }
        };
        let ev = new_event(
            event_type,
            events::host_subject(host_id),
            &Actor::Agent(host_id),
            None,
            json!({
                "hostname": f.hostname,
                "machine_id": f.machine_id,
                "registration_token_id": token.id,
            }),
        );
        insert_events(&mut tx, &[prepare_event(ev, Some(host_id), now)]).await?;
        let host = Self::host_in(&mut tx, host_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("host {host_id}")))?;
        tx.commit().await?;
        Ok(host)
    }

    async fn host_credential(&self, host: HostId) -> Result<Option<(Host, String)>> {
        let row = sqlx::query(&format!("{HOST_SELECT} WHERE h.id = ? GROUP BY h.id"))
            .bind(host.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((rows::host(&r)?, rows::text(&r, "hosts", "credential_hash")?)))
            .transpose()
    }

    async fn touch_host(&self, host: HostId, facts: &HostFacts, now: DateTime<Utc>) -> Result<()> {
        // A check-in is not an event (it would flood the log every 30 s per host); facts
        // and last_seen are plain projection columns.
        let done = sqlx::query(
            "UPDATE hosts SET last_seen = ?, hostname = ?, os_id = ?, os_pretty = ?, kernel = ?, arch = ?, \
             agent_version = ?, read_only = ? WHERE id = ?",
        )
        .bind(ts(now))
        .bind(&facts.hostname)
        .bind(&facts.os_id)
        .bind(&facts.os_pretty)
        .bind(&facts.kernel)
        .bind(&facts.arch)
        .bind(&facts.agent_version)
        .bind(facts.read_only)
        .bind(host.to_string())
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
        let found = sqlx::query(&format!(
            "{HOST_SELECT} GROUP BY h.id ORDER BY h.hostname, h.id"
        ))
        .fetch_all(&self.pool)
        .await?;
        found.iter().map(rows::host).collect()
    }

    async fn report_hash(&self, host: HostId) -> Result<Option<String>> {
        let hash: Option<Option<String>> =
            sqlx::query_scalar("SELECT report_hash FROM hosts WHERE id = ?")
                .bind(host.to_string())
                .fetch_optional(&self.pool)
                .await?;
        Ok(hash.flatten())
    }
}
