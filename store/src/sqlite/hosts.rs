//! Host enrolment (by an agent's token, or agentless through a guest), check-ins and host
//! listings on SQLite.

use super::commands::cancel_in;
use super::inventory::attach_in;
use super::rows::{self, HOST_SELECT};
use super::{insert_events, new_event, ts, SqliteStore, Tx};
use crate::common::{micros, prepare_event};
use crate::host_plan::{self, Enrolment};
use crate::{events, Actor, HostStore, NewHost, Result, StoreError, AGENTLESS_CREDENTIAL};
use async_trait::async_trait;
use canopy_api_types::agent::HostFacts;
use canopy_api_types::hosts::{Host, HostState};
use canopy_api_types::{CommandId, GuestId, HostId};
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
        let reenrol = match new.reenrol {
            Some(id) => Some((id, host_state(&mut tx, id).await?.0)),
            None => None,
        };
        let guest_host = match token.guest_id {
            Some(g) => {
                let attached: Option<Option<String>> =
                    sqlx::query_scalar("SELECT host_id FROM guests WHERE id = ?")
                        .bind(g.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                match attached.flatten() {
                    Some(h) => {
                        let h: HostId = rows::parse("guests", "host_id", &h)?;
                        Some((h, host_state(&mut tx, h).await?.0))
                    }
                    None => None,
                }
            }
            None => None,
        };
        let enrolment = host_plan::enrolment(reenrol, guest_host)?;
        let (host_id, was_agentless) = match enrolment {
            Enrolment::Existing { id, .. } => {
                let was_agentless = host_state(&mut tx, id).await?.1;
                // An agentless host becomes an agent's host: same id, updates kept.
                sqlx::query(
                    "UPDATE hosts SET hostname = ?, machine_id = ?, os_id = ?, os_pretty = ?, kernel = ?, \
                     arch = ?, agent_version = ?, read_only = ?, run_as = ?, agentless = 0, credential_hash = ?, \
                     registration_token_id = ?, last_seen = ? WHERE id = ?",
                )
                .bind(&f.hostname)
                .bind(&f.machine_id)
                .bind(&f.os_id)
                .bind(&f.os_pretty)
                .bind(&f.kernel)
                .bind(&f.arch)
                .bind(&f.agent_version)
                .bind(f.read_only)
                .bind(&f.run_as)
                .bind(&new.credential_hash)
                .bind(token.id.to_string())
                .bind(ts(now))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
                (id, was_agentless)
            }
            Enrolment::New => {
                insert_host(
                    &mut tx,
                    new.id,
                    f,
                    &new.credential_hash,
                    Some(token.id.to_string()),
                    false,
                    now,
                )
                .await?;
                (new.id, false)
            }
        };
        let twins: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM hosts WHERE machine_id = ? AND id <> ? AND state = 'active' ORDER BY id",
        )
        .bind(&f.machine_id)
        .bind(host_id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let twins = twins
            .iter()
            .map(|t| rows::parse::<HostId>("hosts", "id", t))
            .collect::<Result<Vec<_>>>()?;
        let ev =
            host_plan::enrolled_event(host_id, enrolment, f, token.id, was_agentless, &twins, now);
        insert_events(&mut tx, &[ev]).await?;
        if let Some(guest) = token.guest_id {
            let agent = Actor::Agent(host_id);
            attach_in(&mut tx, guest, host_id, &agent, now, "registration_token").await?;
        }
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
             agent_version = ?, read_only = ?, run_as = ?, package_db = ? WHERE id = ?",
        )
        .bind(ts(now))
        .bind(&facts.hostname)
        .bind(&facts.os_id)
        .bind(&facts.os_pretty)
        .bind(&facts.kernel)
        .bind(&facts.arch)
        .bind(&facts.agent_version)
        .bind(facts.read_only)
        .bind(&facts.run_as)
        .bind(package_db_json(facts)?)
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
            "{HOST_SELECT} WHERE h.state <> 'deleted' GROUP BY h.id ORDER BY h.hostname, h.id"
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

    async fn upsert_agentless_host(
        &self,
        guest: GuestId,
        facts: &HostFacts,
        now: DateTime<Utc>,
    ) -> Result<Host> {
        let now = micros(now);
        let f = facts;
        let mut tx = self.begin_immediate().await?;
        let attached: Option<Option<String>> =
            sqlx::query_scalar("SELECT host_id FROM guests WHERE id = ?")
                .bind(guest.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let attached = attached.ok_or_else(|| StoreError::NotFound(format!("guest {guest}")))?;
        let existing: Option<(String, bool)> = match attached {
            Some(h) => {
                sqlx::query_as("SELECT id, agentless FROM hosts WHERE id = ?")
                    .bind(h)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            None => None,
        };
        let host_id = match existing {
            // An agent reports for itself: its host is not the server's to change.
            Some((id, false)) => {
                let id = rows::parse::<HostId>("hosts", "id", &id)?;
                return Self::host_in(&mut tx, id)
                    .await?
                    .ok_or_else(|| StoreError::NotFound(format!("host {id}")));
            }
            Some((id, true)) => {
                let id = rows::parse::<HostId>("hosts", "id", &id)?;
                sqlx::query(
                    "UPDATE hosts SET hostname = ?, machine_id = ?, os_id = ?, os_pretty = ?, kernel = ?, \
                     arch = ?, agent_version = ?, read_only = ?, run_as = ?, last_seen = ? WHERE id = ?",
                )
                .bind(&f.hostname)
                .bind(&f.machine_id)
                .bind(&f.os_id)
                .bind(&f.os_pretty)
                .bind(&f.kernel)
                .bind(&f.arch)
                .bind(&f.agent_version)
                .bind(f.read_only)
                .bind(&f.run_as)
                .bind(ts(now))
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
                id
            }
            None => {
                let id = HostId::new();
                insert_host(&mut tx, id, f, AGENTLESS_CREDENTIAL, None, true, now).await?;
                let ev = new_event(
                    events::HOST_AGENTLESS_ADDED,
                    events::host_subject(id),
                    &Actor::System,
                    None,
                    json!({ "hostname": f.hostname, "machine_id": f.machine_id, "guest_id": guest }),
                );
                let ev = prepare_event(ev, Some(id), now).with_guest(Some(guest));
                insert_events(&mut tx, &[ev]).await?;
                attach_in(&mut tx, guest, id, &Actor::System, now, "agentless").await?;
                id
            }
        };
        let host = Self::host_in(&mut tx, host_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("host {host_id}")))?;
        tx.commit().await?;
        Ok(host)
    }

    async fn retire_host(
        &self,
        host: HostId,
        to: HostState,
        actor: &Actor,
        now: DateTime<Utc>,
    ) -> Result<Host> {
        let now = micros(now);
        let mut tx = self.begin_immediate().await?;
        let (from, _) = host_state(&mut tx, host).await?;
        host_plan::check_retire(host, from, to)?;
        sqlx::query("UPDATE hosts SET state = ?, retired_at = ?, credential_hash = ? WHERE id = ?")
            .bind(to.as_str())
            .bind(ts(now))
            .bind(host_plan::retired_credential(to))
            .bind(host.to_string())
            .execute(&mut *tx)
            .await?;
        let guest: Option<String> =
            sqlx::query_scalar("UPDATE guests SET host_id = NULL WHERE host_id = ? RETURNING id")
                .bind(host.to_string())
                .fetch_optional(&mut *tx)
                .await?;
        let guest = guest
            .map(|g| rows::parse::<GuestId>("guests", "id", &g))
            .transpose()?;
        let waiting: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM commands WHERE host_id = ? AND status IN ('pending', 'sent') ORDER BY created_at, id",
        )
        .bind(host.to_string())
        .fetch_all(&mut *tx)
        .await?;
        let mut cancelled = Vec::with_capacity(waiting.len());
        let reason = format!("host {host} was {} by {actor}", to.as_str());
        for id in waiting {
            let id: CommandId = rows::parse("commands", "id", &id)?;
            cancel_in(&mut tx, id, actor, &reason, now).await?;
            cancelled.push(id);
        }
        let ev = host_plan::retired_event(host, to, actor, guest, &cancelled, now);
        insert_events(&mut tx, &[ev]).await?;
        let out = Self::host_in(&mut tx, host)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("host {host}")))?;
        tx.commit().await?;
        Ok(out)
    }
}

/// A new host row from `f`: an agent's (its credential and registration token) or an
/// agentless one.
#[allow(clippy::too_many_arguments)]
async fn insert_host(
    tx: &mut Tx,
    id: HostId,
    f: &HostFacts,
    credential_hash: &str,
    registration_token_id: Option<String>,
    agentless: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO hosts (id, hostname, machine_id, os_id, os_pretty, kernel, arch, agent_version, \
         read_only, run_as, agentless, credential_hash, registration_token_id, last_seen, registered_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(id.to_string())
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
    .bind(ts(now))
    .bind(ts(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A host's state and whether it is agentless; `NotFound` for an unknown host.
async fn host_state(tx: &mut Tx, host: HostId) -> Result<(HostState, bool)> {
    let row: Option<(String, bool)> =
        sqlx::query_as("SELECT state, agentless FROM hosts WHERE id = ?")
            .bind(host.to_string())
            .fetch_optional(&mut **tx)
            .await?;
    let (state, agentless) = row.ok_or_else(|| StoreError::NotFound(format!("host {host}")))?;
    let state = HostState::parse(&state)
        .ok_or_else(|| StoreError::corrupt("hosts", format!("unknown state '{state}'")))?;
    Ok((state, agentless))
}

/// The package-database health an agent reported, as stored.
pub(super) fn package_db_json(facts: &HostFacts) -> Result<String> {
    serde_json::to_string(&facts.package_db)
        .map_err(|e| StoreError::corrupt("hosts", format!("package_db: {e}")))
}
