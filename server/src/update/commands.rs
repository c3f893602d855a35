//! The agent commands an update operation queues (scan, dry-run, health, install) and how it
//! waits for them: by reading the store, so a restarted server waits for the same command
//! instead of sending it again.

use super::{Updater, POLL};
use anyhow::{bail, Context};
use canopy_api_types::bulk::{HealthCheck, HealthReport};
use canopy_api_types::commands::{Command, CommandSpec, CommandStatus};
use canopy_api_types::{CommandId, CorrelationId, HostId, OperationId};
use canopy_store::{Actor, NewCommand};
use std::time::{Duration, Instant};

impl Updater {
    /// Queue `spec` for `host` under the operation's correlation and wake its check-in.
    pub(super) async fn queue(
        &self,
        op: OperationId,
        host: HostId,
        spec: CommandSpec,
        timeout_secs: u32,
        actor: &Actor,
    ) -> anyhow::Result<Command> {
        let new = NewCommand {
            id: CommandId::new(),
            host,
            spec,
            correlation: CorrelationId(op.0),
            caused_by: None,
            timeout_secs,
        };
        let cmd = self.store.enqueue_command(new, actor).await?;
        self.wakeups.wake(host);
        Ok(cmd)
    }

    /// The command once it has ended; an error when it has not within `cap` (it is cancelled
    /// then, if it has not started, so it never runs late).
    pub(super) async fn wait_command(
        &self,
        id: CommandId,
        cap: Duration,
    ) -> anyhow::Result<Command> {
        let until = Instant::now() + cap;
        loop {
            let cmd = self
                .store
                .get_command(id)
                .await?
                .with_context(|| format!("command {id} is gone"))?;
            if cmd.status.is_terminal() {
                return Ok(cmd);
            }
            if Instant::now() >= until {
                if matches!(cmd.status, CommandStatus::Pending | CommandStatus::Sent) {
                    let _ = self.store.cancel_command(id, &Actor::System).await;
                }
                bail!(
                    "the agent did not finish its {} within {} s (command {id} is {})",
                    cmd.spec.kind(),
                    cap.as_secs(),
                    cmd.status.as_str()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A scan of `host`, to its end; its report is on the server once it completed (the
    /// agent uploads it before the result). An error naming why when it did not complete.
    pub(super) async fn scan(
        &self,
        op: OperationId,
        host: HostId,
        actor: &Actor,
    ) -> anyhow::Result<()> {
        let cmd = self
            .queue(op, host, CommandSpec::Scan, self.timeouts.scan, actor)
            .await?;
        let cap = Duration::from_secs(u64::from(self.timeouts.scan) + 120);
        let done = self.wait_command(cmd.id, cap).await?;
        if done.status != CommandStatus::Completed {
            bail!("the scan failed: {}", failure_text(&done));
        }
        Ok(())
    }

    /// The longest an install may run before the sweep has ended it one way or another.
    pub(super) fn install_cap(&self) -> Duration {
        Duration::from_secs(u64::from(self.timeouts.install) * 2 + self.timeouts.vanished + 120)
    }

    /// Ask the agent for its health (and run `checks` in the guest). Waiting for it also
    /// proves the agent is back (after a reboot or a rollback).
    pub(super) async fn health(
        &self,
        op: OperationId,
        host: HostId,
        checks: &[HealthCheck],
        cap: Duration,
        actor: &Actor,
    ) -> anyhow::Result<HealthReport> {
        let spec = CommandSpec::Health {
            checks: checks.to_vec(),
        };
        let cmd = self
            .queue(op, host, spec, self.timeouts.dry_run, actor)
            .await?;
        let done = self.wait_command(cmd.id, cap).await?;
        let result = done
            .result
            .as_ref()
            .filter(|_| done.status == CommandStatus::Completed);
        match result.and_then(|r| r.health.clone()) {
            Some(h) => Ok(h),
            None => bail!("the health check did not run: {}", failure_text(&done)),
        }
    }
}

/// Why a command did not succeed, in one line.
pub(super) fn failure_text(cmd: &Command) -> String {
    let from_result = cmd.result.as_ref().map(|r| {
        let stderr = r.stderr.trim();
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        match (r.summary.trim(), last) {
            ("", l) => l.to_string(),
            (s, "") => s.to_string(),
            (s, l) => format!("{s}: {l}"),
        }
    });
    from_result
        .filter(|s| !s.is_empty())
        .or_else(|| cmd.error.clone())
        .unwrap_or_else(|| format!("command {} {}", cmd.id, cmd.status.as_str()))
}
