//! Host registration (by an agent's token, or agentless through a guest) and check-in
//! bookkeeping on PostgreSQL.

use super::inventory::attach_in;
use super::rows::{self, HOST_SELECT};
use super::{insert_events, unique_to_conflict, PgStore};
use crate::common::{micros, prepare_event};
use crate::{
    events, Actor, HostStore, NewEvent, NewHost, Result, StoreError, AGENTLESS_CREDENTIAL,
};
use async_trait::async_trait;
use canopy_api_types::agent::HostFacts;
use canopy_api_types::hosts::Host;
use canopy_api_types::{GuestId, HostId};
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
                "SELECT id, seats, seats_used, expires_at, revoked, guest_id FROM registration_tokens \
                 WHERE token_hash = $1 FOR NO KEY UPDATE",
            )
            .bind(token_hash)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::TokenUnknown)?;
            let token_id: Uuid = token.try_get("id")?;
            let token_guest = token.try_get::<Option<Uuid>, _>("guest_id")?.map(GuestId);
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
            let existing: Option<(Uuid, bool)> = sqlx::query_as(
                "SELECT id, agentless FROM hosts WHERE machine_id = $1 FOR NO KEY UPDATE",
            )
            .bind(&f.machine_id)
            .fetch_optional(&mut *tx)
            .await?;
            let was_agentless = existing.is_some_and(|(_, a)| a);
            let (id, event_type) = match existing {
                Some((id, _)) => {
                    // An agentless host becomes an agent's host: same id, updates kept.
                    sqlx::query(
                        "UPDATE hosts SET hostname = $1, os_id = $2, os_pretty = $3, kernel = $4, arch = $5, agent_version = $6, \
                         read_only = $7, credential_hash = $8, registration_token_id = $9, last_seen = $10, \
                         run_as = $12, agentless = FALSE WHERE id = $11",
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
                    .bind(&f.run_as)
                    .execute(&mut *tx)
                    .await?;
                    (HostId(id), events::HOST_REENROLLED)
                }
                None => {
                    insert_host(
                        &mut tx,
                        new.id,
                        f,
                        &new.credential_hash,
                        Some(token_id),
                        false,
                        now,
                    )
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
                    "was_agentless": was_agentless,
                }),
            };
            insert_events(&mut tx, &[prepare_event(ev, Some(id), now)]).await?;
            if let Some(guest) = token_guest {
                attach_in(&mut tx, guest, id, &Actor::Agent(id), now, "registration_token").await?;
            }
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
             agent_version = $7, read_only = $8, run_as = $10 WHERE id = $9",
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
        .bind(&f.run_as)
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

    async fn upsert_agentless_host(
        &self,
        guest: GuestId,
        f: &HostFacts,
        now: DateTime<Utc>,
    ) -> Result<Host> {
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        let r: Result<Host> = async {
            // Lock the host: a concurrent registration of this machine waits, and vice versa.
            let existing: Option<(Uuid, bool)> = sqlx::query_as(
                "SELECT id, agentless FROM hosts WHERE machine_id = $1 FOR NO KEY UPDATE",
            )
            .bind(&f.machine_id)
            .fetch_optional(&mut *tx)
            .await?;
            let id = match existing {
                // An agent reports for itself: its host is not the server's to change.
                Some((id, false)) => HostId(id),
                Some((id, true)) => {
                    let id = HostId(id);
                    sqlx::query(
                        "UPDATE hosts SET hostname = $1, os_id = $2, os_pretty = $3, kernel = $4, arch = $5, \
                         agent_version = $6, read_only = $7, run_as = $8, last_seen = $9 WHERE id = $10",
                    )
                    .bind(&f.hostname)
                    .bind(&f.os_id)
                    .bind(&f.os_pretty)
                    .bind(&f.kernel)
                    .bind(&f.arch)
                    .bind(&f.agent_version)
                    .bind(f.read_only)
                    .bind(&f.run_as)
                    .bind(now)
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
                    let attached: Option<Uuid> =
                        sqlx::query_scalar("SELECT id FROM guests WHERE host_id = $1 LIMIT 1")
                            .bind(id.0)
                            .fetch_optional(&mut *tx)
                            .await?;
                    if attached.is_none() {
                        attach_in(&mut tx, guest, id, &Actor::System, now, "agentless").await?;
                    }
                    id
                }
                None => {
                    let id = HostId::new();
                    insert_host(&mut tx, id, f, AGENTLESS_CREDENTIAL, None, true, now)
                        .await
                        .map_err(|e| {
                            unique_to_conflict(e, || {
                                format!("a host with machine-id '{}' is being added concurrently", f.machine_id)
                            })
                        })?;
                    let ev = NewEvent {
                        event_type: events::HOST_AGENTLESS_ADDED.into(),
                        subject: events::host_subject(id),
                        actor: Actor::System,
                        correlation: None,
                        causation: None,
                        payload: serde_json::json!({
                            "hostname": f.hostname,
                            "machine_id": f.machine_id,
                            "guest_id": guest,
                        }),
                    };
                    let ev = prepare_event(ev, Some(id), now).with_guest(Some(guest));
                    insert_events(&mut tx, &[ev]).await?;
                    attach_in(&mut tx, guest, id, &Actor::System, now, "agentless").await?;
                    id
                }
            };
            let row = sqlx::query(&format!("{HOST_SELECT} WHERE h.id = $1"))
                .bind(id.0)
                .fetch_one(&mut *tx)
                .await?;
            rows::host(&row)
        }
        .await;
        super::finish(tx, r).await
    }
}

/// A new host row from `f`: an agent's (its credential and registration token) or an
/// agentless one. The database error is returned as is, for the caller to name a conflict.
#[allow(clippy::too_many_arguments)]
async fn insert_host(
    conn: &mut sqlx::PgConnection,
    id: HostId,
    f: &HostFacts,
    credential_hash: &str,
    registration_token_id: Option<Uuid>,
    agentless: bool,
    now: DateTime<Utc>,
) -> std::result::Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO hosts (id, hostname, machine_id, os_id, os_pretty, kernel, arch, agent_version, \
         read_only, run_as, agentless, credential_hash, registration_token_id, last_seen, registered_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)",
    )
    .bind(id.0)
    .bind(&f.hostname)
    .bind(&f.machine_id)
    .bind(&f.os_id)
    .bind(&f.os_pretty)
    .bind(&f.kernel)
    .bind(&f.arch)
    .bind(&f.agent_version)
    .bind(f.read_only)
    .bind(&f.run_as)
    .bind(agentless)
    .bind(credential_hash)
    .bind(registration_token_id)
    .bind(now)
    .execute(conn)
    .await
    .map(drop)
}
