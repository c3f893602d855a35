//! SSH host keys pinned on first use ([`SshKeyStore`]) on SQLite: the server checks every
//! connection to a PVE node or guest against the key it saw first.

use super::{insert_events, new_event, rows, ts, SqliteStore};
use crate::common::{micros, now_micros, prepare_event};
use crate::{events, Actor, Result, SshKeyStore};
use async_trait::async_trait;
use canopy_api_types::deploy::SshHostKey;
use serde_json::json;

#[async_trait]
impl SshKeyStore for SqliteStore {
    async fn host_key(&self, address: &str) -> Result<Option<SshHostKey>> {
        let row = sqlx::query("SELECT * FROM ssh_host_keys WHERE address = ?")
            .bind(address)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::ssh_host_key).transpose()
    }

    async fn pin_host_key(&self, key: &SshHostKey, actor: &Actor) -> Result<SshHostKey> {
        let mut tx = self.begin_immediate().await?;
        let inserted = sqlx::query(
            "INSERT INTO ssh_host_keys (address, key_type, fingerprint, first_seen) VALUES (?, ?, ?, ?) \
             ON CONFLICT (address) DO NOTHING",
        )
        .bind(&key.address)
        .bind(&key.key_type)
        .bind(&key.fingerprint)
        .bind(ts(key.first_seen))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            let ev = new_event(
                events::SSH_HOST_KEY_PINNED,
                events::ssh_host_key_subject(&key.address),
                actor,
                None,
                json!({
                    "address": key.address,
                    "key_type": key.key_type,
                    "fingerprint": key.fingerprint,
                }),
            );
            insert_events(&mut tx, &[prepare_event(ev, None, micros(key.first_seen))]).await?;
        }
        let row = sqlx::query("SELECT * FROM ssh_host_keys WHERE address = ?")
            .bind(&key.address)
            .fetch_one(&mut *tx)
            .await?;
        let pinned = rows::ssh_host_key(&row)?;
        tx.commit().await?;
        Ok(pinned)
    }

    async fn forget_host_key(&self, address: &str, actor: &Actor) -> Result<bool> {
        let mut tx = self.begin_immediate().await?;
        let row = sqlx::query("DELETE FROM ssh_host_keys WHERE address = ? RETURNING *")
            .bind(address)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(false) };
        let key = rows::ssh_host_key(&row)?;
        let ev = new_event(
            events::SSH_HOST_KEY_FORGOTTEN,
            events::ssh_host_key_subject(address),
            actor,
            None,
            json!({
                "address": key.address,
                "key_type": key.key_type,
                "fingerprint": key.fingerprint,
            }),
        );
        insert_events(&mut tx, &[prepare_event(ev, None, now_micros())]).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn list_host_keys(&self) -> Result<Vec<SshHostKey>> {
        let found = sqlx::query("SELECT * FROM ssh_host_keys ORDER BY address")
            .fetch_all(&self.pool)
            .await?;
        found.iter().map(rows::ssh_host_key).collect()
    }
}
