//! Background jobs: periodic Proxmox discovery, the command-timeout sweep (commands never stay `running`
//! forever), refresh-token clean-up and event retention.

use crate::state::AppState;
use std::time::Duration;

/// Spawn every job; they stop when the returned guard is dropped.
pub fn spawn(state: AppState) -> Jobs {
    let mut handles = Vec::new();
    handles.push(tokio::spawn(
        state
            .discovery
            .clone()
            .run_forever(state.settings.discovery_interval_secs),
    ));
    let s = state.clone();
    handles.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(s.settings.sweep_interval_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match s.store.expire_commands(chrono::Utc::now()).await {
                Ok(expired) => {
                    for c in expired {
                        tracing::warn!(command = %c.id, host = %c.host_id, kind = c.spec.kind(), "command timed out");
                    }
                }
                Err(e) => tracing::error!(error = %e, "command timeout sweep failed"),
            }
        }
    }));
    let s = state;
    handles.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tick.tick().await;
            let now = chrono::Utc::now();
            match s.store.purge_refresh_tokens(now).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "expired refresh tokens deleted"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "refresh token clean-up failed"),
            }
            let cutoff = now - chrono::Duration::days(i64::from(s.settings.event_retention_days));
            match s.store.purge_events(cutoff).await {
                Ok(n) if n > 0 => tracing::info!(purged = n, "events past retention deleted"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "event retention failed"),
            }
        }
    }));
    Jobs(handles)
}

/// The running jobs; dropping it aborts them.
#[derive(Debug)]
pub struct Jobs(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Jobs {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}
