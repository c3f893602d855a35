//! The server's side of a deploy: registration tokens bound to the guest, and the wait for
//! the new agent's first check-in.

use super::steps::Enrolment;
use crate::auth::secrets::{random_token, sha256_hex};
use anyhow::{bail, Result};
use canopy_api_types::{GuestId, HostId, RegistrationTokenId};
use canopy_store::{Actor, NewRegistrationToken, Store};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;

/// A deploy token lives long enough for one registration.
const TOKEN_TTL: chrono::Duration = chrono::Duration::minutes(15);
const POLL: Duration = Duration::from_millis(250);

pub struct ServerEnrolment {
    pub store: Arc<dyn Store>,
    pub timeout: Duration,
}

#[async_trait::async_trait]
impl Enrolment for ServerEnrolment {
    async fn registration_token(&self, guest: Option<GuestId>) -> Result<String> {
        let token = format!("canopy-reg-{}", random_token());
        self.store
            .create_registration_token(
                NewRegistrationToken {
                    id: RegistrationTokenId::new(),
                    token_hash: sha256_hex(&token),
                    label: "agent deploy".into(),
                    seats: 1,
                    expires_at: Utc::now() + TOKEN_TTL,
                    guest_id: guest,
                },
                &Actor::System,
            )
            .await?;
        Ok(token)
    }

    async fn knows_host(&self, host: HostId) -> Result<bool> {
        Ok(self
            .store
            .get_host(host)
            .await?
            .is_some_and(|h| !h.agentless))
    }

    async fn wait_checkin(&self, host: HostId, since: DateTime<Utc>) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            if let Some(h) = self.store.get_host(host).await? {
                if h.last_seen.is_some_and(|t| t >= since) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "the agent started but did not check in within {} s (host {host}); see \
                     `journalctl -u canopy-agent` in the guest",
                    self.timeout.as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
