//! Is a container that was just (re)started healthy? Its healthcheck reaches `healthy`
//! within `health_timeout_secs`; without a healthcheck it keeps running (not restarted, not
//! exited) for `settle_secs`. A bounded poll of the engine's view of it, never a blind sleep.

use super::{describe, DockerConfig, Engine};
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};
use std::time::{Duration, Instant};

/// Between two looks at the container.
const POLL: Duration = Duration::from_millis(500);

/// What one look at the container says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Healthy (its healthcheck says so).
    Healthy,
    /// Keep watching (starting, or running without a healthcheck).
    Wait { has_healthcheck: bool },
    /// Failed for good, and why.
    Failed(String),
}

/// The last healthcheck output, one line, short.
pub fn last_output(c: &ContainerInspectResponse) -> String {
    let out = c
        .state
        .as_ref()
        .and_then(|s| s.health.as_ref())
        .and_then(|h| h.log.as_ref())
        .and_then(|l| l.last())
        .map(|r| {
            let text = r.output.as_deref().unwrap_or("").trim();
            let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let text: String = text.chars().take(200).collect();
            match r.exit_code {
                Some(code) if text.is_empty() => format!("exit code {code}"),
                Some(code) => format!("exit code {code}: {text}"),
                None => text,
            }
        })
        .unwrap_or_default();
    if out.is_empty() {
        "no check ran yet".into()
    } else {
        out
    }
}

/// Judges one inspection; `restarts` is the restart count when the watch began.
pub fn look(c: &ContainerInspectResponse, restarts: i64) -> Look {
    let state = c.state.clone().unwrap_or_default();
    let exit = state.exit_code.unwrap_or_default();
    match state.status {
        Some(ContainerStateStatusEnum::RUNNING) => {}
        Some(ContainerStateStatusEnum::RESTARTING) => {
            return Look::Failed(format!("is restarting (exit code {exit})"))
        }
        Some(s) => return Look::Failed(format!("{s} (exit code {exit})")),
        None => return Look::Failed("has no state".into()),
    }
    if c.restart_count.unwrap_or_default() > restarts {
        return Look::Failed(format!(
            "was restarted {} time(s) (exit code {exit})",
            c.restart_count.unwrap_or_default() - restarts
        ));
    }
    match state.health.and_then(|h| h.status) {
        Some(HealthStatusEnum::HEALTHY) => Look::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => {
            Look::Failed(format!("unhealthy (healthcheck: {})", last_output(c)))
        }
        Some(HealthStatusEnum::STARTING) => Look::Wait {
            has_healthcheck: true,
        },
        _ => Look::Wait {
            has_healthcheck: false,
        },
    }
}

/// Watches container `id` until it is healthy (`Ok` says how) or failed (`Err` says why,
/// e.g. "unhealthy after 12 s (healthcheck: exit code 1: …)").
pub async fn wait(engine: &Engine, id: &str, cfg: &DockerConfig) -> Result<String, String> {
    let started = Instant::now();
    let mut restarts: Option<i64> = None;
    loop {
        let c = engine
            .api
            .inspect_container(id, None)
            .await
            .map_err(|e| format!("cannot be inspected: {}", describe(&e)))?;
        let base = *restarts.get_or_insert(c.restart_count.unwrap_or_default());
        let secs = started.elapsed().as_secs();
        match look(&c, base) {
            Look::Healthy => return Ok(format!("healthy after {secs} s (healthcheck)")),
            Look::Failed(why) => {
                // "unhealthy (healthcheck: …)" → "unhealthy after N s (healthcheck: …)".
                return Err(match why.split_once(' ') {
                    Some((first, rest)) if why.starts_with("unhealthy") => {
                        format!("{first} after {secs} s {rest}")
                    }
                    _ => format!("{why} after {secs} s"),
                });
            }
            Look::Wait { has_healthcheck } => {
                if !has_healthcheck && started.elapsed() >= cfg.settle() {
                    return Ok(format!(
                        "running for {} s (no healthcheck)",
                        cfg.settle().as_secs()
                    ));
                }
                if has_healthcheck && started.elapsed() >= cfg.health_timeout() {
                    return Err(format!(
                        "not healthy within {} s (healthcheck still starting: {})",
                        cfg.health_timeout().as_secs(),
                        last_output(&c)
                    ));
                }
            }
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inspect(v: serde_json::Value) -> ContainerInspectResponse {
        serde_json::from_value(v).expect("inspect")
    }

    #[test]
    fn each_state_is_judged() {
        let healthy = inspect(serde_json::json!({"RestartCount": 0,
            "State": {"Status": "running", "Health": {"Status": "healthy"}}}));
        assert_eq!(look(&healthy, 0), Look::Healthy);
        let starting = inspect(serde_json::json!({"RestartCount": 0,
            "State": {"Status": "running", "Health": {"Status": "starting"}}}));
        assert_eq!(
            look(&starting, 0),
            Look::Wait {
                has_healthcheck: true
            }
        );
        let plain = inspect(serde_json::json!({"RestartCount": 0, "State": {"Status": "running"}}));
        assert_eq!(
            look(&plain, 0),
            Look::Wait {
                has_healthcheck: false
            }
        );
        let sick = inspect(serde_json::json!({"RestartCount": 0,
            "State": {"Status": "running", "Health": {"Status": "unhealthy", "Log": [
                {"ExitCode": 1, "Output": "no /healthy\n"}]}}}));
        assert_eq!(
            look(&sick, 0),
            Look::Failed("unhealthy (healthcheck: exit code 1: no /healthy)".into())
        );
        let exited = inspect(serde_json::json!({"State": {"Status": "exited", "ExitCode": 3}}));
        assert_eq!(
            look(&exited, 0),
            Look::Failed("exited (exit code 3)".into())
        );
        let flapping =
            inspect(serde_json::json!({"RestartCount": 2, "State": {"Status": "running"}}));
        assert!(matches!(look(&flapping, 0), Look::Failed(w) if w.contains("restarted 2")));
    }
}
