//! `POST /hosts/scan`: ask every agent in a subtree to scan now (the dashboard's Scan on the
//! selection, `canopy`'s bulk form of `POST /hosts/{id}/scan`). Partial failure is data: one
//! line per guest the selector resolves to, its scan queued or skipped and why.

use super::extract::Json;
use super::routes::Routes;
use crate::auth::{Operator, RequireRole};
use crate::error::{Error, Result};
use crate::state::AppState;
use axum::extract::State;
use canopy_api_types::commands::CommandSpec;
use canopy_api_types::hosts::{HostScan, ScanRequest};
use canopy_inventory::Selector;

pub(super) fn routes() -> Routes {
    Routes::new().post("/hosts/scan", scan_all)
}

/// Why an agent of `agent` state is not asked to scan, if it is not.
fn skip_reason(agent: Option<&str>, host: bool) -> Option<String> {
    match (agent, host) {
        (Some("online" | "offline"), true) => None,
        (Some("agentless"), _) => {
            Some("agentless: no agent to ask; run an agentless scan instead".into())
        }
        _ => Some("agent missing: deploy it with canopy agent deploy".into()),
    }
}

#[tracing::instrument(skip_all, fields(selector = %req.selector))]
async fn scan_all(
    State(state): State<AppState>,
    op: RequireRole<Operator>,
    Json(req): Json<ScanRequest>,
) -> Result<Json<Vec<HostScan>>> {
    let sel =
        Selector::parse(&req.selector).map_err(|e| Error::Validation(format!("selector: {e}")))?;
    let inv = state.discovery.tree();
    let resolved = inv.targets(&sel);
    let mut out: Vec<HostScan> = Vec::new();
    for path in &resolved.hosts {
        let Some(v) = inv.get(path) else { continue };
        let host_id = v.host_id.as_deref().and_then(|h| h.parse().ok());
        let mut line = HostScan {
            target: path.to_string(),
            host_id,
            command_id: None,
            queued: false,
            reason: skip_reason(v.agent.as_deref(), host_id.is_some()),
        };
        if let (None, Some(host)) = (&line.reason, host_id) {
            let timeout = state.settings.scan_timeout_secs;
            match super::hosts::queue_now(&state, host, CommandSpec::Scan, timeout, &op.actor())
                .await
            {
                Ok(Json(cmd)) => {
                    line.queued = true;
                    line.command_id = Some(cmd.id);
                    if v.agent.as_deref() == Some("offline") {
                        line.reason =
                            Some("agent offline: it scans when it checks in again".into());
                    }
                }
                Err(e @ (Error::Conflict(_) | Error::Validation(_) | Error::NotFound(_))) => {
                    line.reason = Some(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        out.push(line);
    }
    out.extend(
        super::clusters::skipped(&resolved)
            .into_iter()
            .map(|s| HostScan {
                target: s.id,
                host_id: None,
                command_id: None,
                queued: false,
                reason: Some(s.reason),
            }),
    );
    if out.is_empty() {
        return Err(Error::Validation(format!(
            "selector '{}' matches no guest",
            req.selector
        )));
    }
    Ok(Json(out))
}

#[cfg(test)]
mod tests {
    use super::skip_reason;

    #[test]
    fn only_guests_with_an_agent_are_asked() {
        assert_eq!(skip_reason(Some("online"), true), None);
        assert_eq!(skip_reason(Some("offline"), true), None);
        assert!(skip_reason(Some("agentless"), false)
            .unwrap()
            .starts_with("agentless"));
        assert!(skip_reason(None, false)
            .unwrap()
            .starts_with("agent missing"));
        assert!(skip_reason(Some("online"), false)
            .unwrap()
            .starts_with("agent missing"));
    }
}
