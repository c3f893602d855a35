//! The long-poll check-in: record that the agent is alive, hand it its queued
//! commands, and when there are none hold the request until one is queued or the
//! wait runs out (so a command starts within a second of being approved).

use crate::error::Result;
use crate::state::AppState;
use canopy_api_types::agent::{CheckinRequest, CheckinResponse, HostFacts};
use canopy_api_types::commands::AgentCommand;
use canopy_api_types::hosts::Host;
use std::time::Duration;

/// Commands handed out per check-in: one. The agent runs it, then checks in again at once;
/// the next command stays `pending` (cancellable, and its deadline not yet running) until
/// the agent is ready for it.
const CLAIM_LIMIT: u32 = 1;

/// `last_seen` is refreshed at most this often when nothing else changed, so that a
/// hash-gated check-in is a read, not a write.
const LAST_SEEN_RESOLUTION: chrono::Duration = chrono::Duration::seconds(10);

fn needs_touch(host: &Host, f: &HostFacts, now: chrono::DateTime<chrono::Utc>) -> bool {
    let facts_changed = host.hostname != f.hostname
        || host.os_id != f.os_id
        || host.os_pretty != f.os_pretty
        || host.kernel != f.kernel
        || host.arch != f.arch
        || host.agent_version != f.agent_version
        || host.read_only != f.read_only
        || host.run_as != f.run_as
        || host.package_db != f.package_db;
    facts_changed
        || host
            .last_seen
            .is_none_or(|t| now - t >= LAST_SEEN_RESOLUTION)
}

pub async fn checkin(
    state: &AppState,
    host: &Host,
    req: CheckinRequest,
) -> Result<CheckinResponse> {
    let now = chrono::Utc::now();
    if req.connecting || needs_touch(host, &req.facts, now) {
        state.store.touch_host(host.id, &req.facts, now).await?;
    }
    state.discovery.agent_seen(host.id, &req.facts, now);
    let report_wanted = match &req.report_hash {
        Some(hash) => state.store.report_hash(host.id).await?.as_deref() != Some(hash.as_str()),
        None => false,
    };
    let wait = Duration::from_secs(u64::from(
        req.wait_secs.min(state.settings.checkin_max_wait_secs),
    ));
    let deadline = tokio::time::Instant::now() + wait;
    let notify = state.wakeups.handle(host.id);
    loop {
        // Register interest before looking, so a command queued in between still wakes us.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let commands = state
            .store
            .claim_commands(host.id, chrono::Utc::now(), CLAIM_LIMIT)
            .await?;
        if !commands.is_empty() || report_wanted || tokio::time::Instant::now() >= deadline {
            return Ok(CheckinResponse {
                commands: commands
                    .into_iter()
                    .map(|c| AgentCommand {
                        id: c.id,
                        spec: c.spec,
                        timeout_secs: c.timeout_secs,
                    })
                    .collect(),
                report_wanted,
            });
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
            // The server is stopping: answer now rather than hold graceful shutdown.
            _ = state.shutdown.wait() => {
                return Ok(CheckinResponse { commands: Vec::new(), report_wanted });
            }
        }
    }
}
