//! SSH host keys pinned on first use ([`SshKeyStore`]) on PostgreSQL: the server checks
//! every connection to a PVE node or guest against the key it saw first. Two replicas
//! pinning one address race on `ON CONFLICT DO NOTHING`; both then read the winner.

use super::{finish, insert_events, rows, PgStore};
use crate::common::{micros, now_micros, prepare_event};
use crate::{events, Actor, NewEvent, Result, SshKeyStore};
use async_trait::async_trait;
use canopy_api_types::deploy::SshHostKey;
use serde_json::json;

fn key_event(event_type: &str, key: &SshHostKey, actor: &Actor) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        subject: events::ssh_host_key_subject(&key.address),
        actor: actor.clone(),
        correlation: None,
        causation: None,
        payload: json!({
            "address": key.address,
            "key_type": key.key_type,
            "fingerprint": key.fingerprint,
        }),
    }
}

#[async_trait]
impl SshKeyStore for PgStore {
    async fn host_key(&self, address: &str) -> Result<Option<SshHostKey>> {
        let row = sqlx::query("SELECT * FROM ssh_host_keys WHERE address = $1")
            .bind(address)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::ssh_host_key).transpose()
    }

    async fn pin_host_key(&self, key: &SshHostKey, actor: &Actor) -> Result<SshHostKey> {
        let first_seen = micros(key.first_seen);
        let mut tx = self.pool.begin().await?;
        let r: Result<SshHostKey> = async {
            let inserted = sqlx::query(
                "INSERT INTO ssh_host_keys (address, key_type, fingerprint, first_seen) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (address) DO NOTHING",
            )
            .bind(&key.address)
            .bind(&key.key_type)
            .bind(&key.fingerprint)
            .bind(first_seen)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if inserted {
                let ev = key_event(events::SSH_HOST_KEY_PINNED, key, actor);
                insert_events(&mut tx, &[prepare_event(ev, None, first_seen)]).await?;
            }
            // READ COMMITTED: this statement sees a key another transaction committed.
            let row = sqlx::query("SELECT * FROM ssh_host_keys WHERE address = $1")
                .bind(&key.address)
                .fetch_one(&mut *tx)
                .await?;
            rows::ssh_host_key(&row)
        }
        .await;
        finish(tx, r).await
    }

    async fn forget_host_key(&self, address: &str, actor: &Actor) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let r: Result<bool> = async {
            let row = sqlx::query("DELETE FROM ssh_host_keys WHERE address = $1 RETURNING *")
                .bind(address)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(row) = row else { return Ok(false) };
            let key = rows::ssh_host_key(&row)?;
            let ev = key_event(events::SSH_HOST_KEY_FORGOTTEN, &key, actor);
            insert_events(&mut tx, &[prepare_event(ev, None, now_micros())]).await?;
            Ok(true)
        }
        .await;
        finish(tx, r).await
    }

    async fn list_host_keys(&self) -> Result<Vec<SshHostKey>> {
        let found = sqlx::query("SELECT * FROM ssh_host_keys ORDER BY address COLLATE \"C\"")
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::ssh_host_key).collect()
    }
}
