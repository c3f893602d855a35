//! Background jobs: periodic Proxmox discovery, the command sweep (overdue marked, vanished
//! agents timed out, nothing pending forever: `CommandStore::expire_commands`), agentless scans of guests without an agent, refresh-token clean-up and event
//! retention.

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
    handles.push(tokio::spawn(state.images.clone().run_forever()));
    let s = state.clone();
    handles.push(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(s.settings.sweep_interval_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match s.store.expire_commands(chrono::Utc::now(), &s.settings.expiry_policy()).await {
                Ok(expired) => {
                    for e in expired {
                        let c = &e.command;
                        tracing::warn!(command = %c.id, host = %c.host_id, kind = c.spec.kind(), what = ?e.expiry, reason = %e.reason, "command swept");
                    }
                }
                Err(e) => tracing::error!(error = %e, "command timeout sweep failed"),
            }
        }
    }));
    let every = state.settings.deploy.agentless_interval_secs;
    if every > 0 {
        let s = state.clone();
        handles.push(tokio::spawn(async move {
            let period = Duration::from_secs(every);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if !s.deployer.key_file().exists() {
                    continue; // deploys are not set up: no SSH to try
                }
                match s.deployer.scan_agentless("**", &canopy_store::Actor::System).await {
                    Ok(results) => {
                        s.images.hosts_scanned(&results).await;
                        let scanned = results.iter().filter(|r| r.host_id.is_some()).count();
                        let failed: Vec<_> = results
                            .iter()
                            .filter(|r| r.host_id.is_none() && r.error.as_deref().is_some_and(|e| e != crate::deploy::agentless::HAS_AGENT))
                            .collect();
                        tracing::info!(scanned, failed = failed.len(), "agentless scan");
                        for r in failed {
                            tracing::warn!(target = %r.target, error = r.error.as_deref().unwrap_or(""), "agentless scan failed");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "agentless scan failed"),
                }
            }
        }));
    }
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
