//! Host registration (by an agent's token, or agentless through a guest) and check-in
//! bookkeeping on PostgreSQL.

use super::commands::cancel_in;
use super::inventory::attach_in;
use super::rows::{self, HOST_SELECT};
use super::{insert_events, unique_to_conflict, PgStore};
use crate::common::{micros, prepare_event};
use crate::host_plan::{self, Enrolment};
use crate::{
    events, Actor, HostStore, NewEvent, NewHost, Result, StoreError, AGENTLESS_CREDENTIAL,
};
use async_trait::async_trait;
use canopy_api_types::agent::HostFacts;
use canopy_api_types::hosts::{Host, HostState};
use canopy_api_types::{CommandId, GuestId, HostId, RegistrationTokenId};
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
            let reenrol = match new.reenrol {
                Some(id) => Some((id, host_state(&mut tx, id).await?.0)),
                None => None,
            };
            let guest_host = match token_guest {
                Some(g) => {
                    let attached: Option<Option<Uuid>> =
                        sqlx::query_scalar("SELECT host_id FROM guests WHERE id = $1 FOR NO KEY UPDATE")
                            .bind(g.0)
                            .fetch_optional(&mut *tx)
                            .await?;
                    match attached.flatten() {
                        Some(h) => Some((HostId(h), host_state(&mut tx, HostId(h)).await?.0)),
                        None => None,
                    }
                }
                None => None,
            };
            let enrolment = host_plan::enrolment(reenrol, guest_host)?;
            let (id, was_agentless) = match enrolment {
                Enrolment::Existing { id, .. } => {
                    let was_agentless = host_state(&mut tx, id).await?.1;
                    // An agentless host becomes an agent's host: same id, updates kept.
                    sqlx::query(
                        "UPDATE hosts SET hostname = $1, os_id = $2, os_pretty = $3, kernel = $4, arch = $5, agent_version = $6, \
                         read_only = $7, credential_hash = $8, registration_token_id = $9, last_seen = $10, \
                         run_as = $12, machine_id = $13, agentless = FALSE WHERE id = $11",
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
                    .bind(id.0)
                    .bind(&f.run_as)
                    .bind(&f.machine_id)
                    .execute(&mut *tx)
                    .await?;
                    (id, was_agentless)
                }
                Enrolment::New => {
                    insert_host(&mut tx, new.id, f, &new.credential_hash, Some(token_id), false, now)
                        .await
                        .map_err(|e| unique_to_conflict(e, || format!("host {} already exists", new.id)))?;
                    (new.id, false)
                }
            };
            let twins: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM hosts WHERE machine_id = $1 AND id <> $2 AND state = 'active' ORDER BY id",
            )
            .bind(&f.machine_id)
            .bind(id.0)
            .fetch_all(&mut *tx)
            .await?;
            let twins: Vec<HostId> = twins.into_iter().map(HostId).collect();
            let ev = host_plan::enrolled_event(
                id,
                enrolment,
                f,
                RegistrationTokenId(token_id),
                was_agentless,
                &twins,
                now,
            );
            insert_events(&mut tx, &[ev]).await?;
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
             agent_version = $7, read_only = $8, run_as = $10, package_db = $11 WHERE id = $9",
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
        .bind(serde_json::to_value(&f.package_db).map_err(|e| {
            StoreError::corrupt("hosts", format!("package_db: {e}"))
        })?)
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
            "{HOST_SELECT} WHERE h.state <> 'deleted' ORDER BY h.hostname COLLATE \"C\", h.id"
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
            // Lock the guest: a concurrent scan or registration of this guest waits.
            let attached: Option<Option<Uuid>> =
                sqlx::query_scalar("SELECT host_id FROM guests WHERE id = $1 FOR NO KEY UPDATE")
                    .bind(guest.0)
                    .fetch_optional(&mut *tx)
                    .await?;
            let attached = attached.ok_or_else(|| StoreError::NotFound(format!("guest {guest}")))?;
            let existing: Option<(Uuid, bool)> = match attached {
                Some(h) => {
                    sqlx::query_as("SELECT id, agentless FROM hosts WHERE id = $1 FOR NO KEY UPDATE")
                        .bind(h)
                        .fetch_optional(&mut *tx)
                        .await?
                }
                None => None,
            };
            let id = match existing {
                // An agent reports for itself: its host is not the server's to change.
                Some((id, false)) => HostId(id),
                Some((id, true)) => {
                    let id = HostId(id);
                    sqlx::query(
                        "UPDATE hosts SET hostname = $1, os_id = $2, os_pretty = $3, kernel = $4, arch = $5, \
                         agent_version = $6, read_only = $7, run_as = $8, last_seen = $9, machine_id = $11 WHERE id = $10",
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
                    .bind(&f.machine_id)
                    .execute(&mut *tx)
                    .await?;
                    id
                }
                None => {
                    let id = HostId::new();
                    insert_host(&mut tx, id, f, AGENTLESS_CREDENTIAL, None, true, now).await?;
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

    async fn retire_host(
        &self,
        host: HostId,
        to: HostState,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Host> {
        let now = micros(now);
        let mut tx = self.pool.begin().await?;
        let r: Result<Host> = async {
            let (from, _) = host_state(&mut tx, host).await?;
            host_plan::check_retire(host, from, to)?;
            sqlx::query(
                "UPDATE hosts SET state = $1, retired_at = $2, credential_hash = $3 WHERE id = $4",
            )
            .bind(to.as_str())
            .bind(now)
            .bind(host_plan::retired_credential(to))
            .bind(host.0)
            .execute(&mut *tx)
            .await?;
            let guest: Option<Uuid> = sqlx::query_scalar(
                "UPDATE guests SET host_id = NULL WHERE host_id = $1 RETURNING id",
            )
            .bind(host.0)
            .fetch_optional(&mut *tx)
            .await?;
            let guest = guest.map(GuestId);
            let waiting: Vec<Uuid> = sqlx::query_scalar(
                "SELECT id FROM commands WHERE host_id = $1 AND status IN ('pending', 'sent') \
                 ORDER BY created_at, id FOR NO KEY UPDATE",
            )
            .bind(host.0)
            .fetch_all(&mut *tx)
            .await?;
            let reason = format!("host {host} was {} by {actor}", to.as_str());
            let mut cancelled = Vec::with_capacity(waiting.len());
            for id in waiting {
                cancel_in(&mut tx, CommandId(id), actor, &reason, now).await?;
                cancelled.push(CommandId(id));
            }
            let ev = host_plan::retired_event(host, to, actor, guest, &cancelled, now);
            insert_events(&mut tx, &[ev]).await?;
            let row = sqlx::query(&format!("{HOST_SELECT} WHERE h.id = $1"))
                .bind(host.0)
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

/// A host's state and whether it is agentless, locked; `NotFound` for an unknown host.
async fn host_state(conn: &mut sqlx::PgConnection, host: HostId) -> Result<(HostState, bool)> {
    let row: Option<(String, bool)> =
        sqlx::query_as("SELECT state, agentless FROM hosts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(host.0)
            .fetch_optional(conn)
            .await?;
    let (state, agentless) = row.ok_or_else(|| StoreError::NotFound(format!("host {host}")))?;
    let state = HostState::parse(&state)
        .ok_or_else(|| StoreError::corrupt("hosts", format!("unknown state '{state}'")))?;
    Ok((state, agentless))
}
