//! Host identity and lifecycle rules shared by both backends: which host a registration
//! enrols, and the events of enrolment and retirement. A host is its server-issued id plus
//! its credential; its machine-id is a fact that may be shared by clones.

use crate::common::{prepare_event, PreparedEvent};
use crate::{events, Actor, NewEvent, StoreError};
use canopy_api_types::agent::HostFacts;
use canopy_api_types::hosts::HostState;
use canopy_api_types::{HostId, RegistrationTokenId};
use chrono::{DateTime, Utc};
use serde_json::json;

/// Which host a registration enrols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolment {
    /// An existing host, re-enrolled with the new credential; `how` it proved it.
    Existing { id: HostId, how: &'static str },
    /// A new host.
    New,
}

/// The rule: the host whose current credential the agent proved; else the active host a
/// deploy-bound token's guest carries; else a new one. `reenrol` and `guest_host` come with
/// their stored state.
pub fn enrolment(
    reenrol: Option<(HostId, HostState)>,
    guest_host: Option<(HostId, HostState)>,
) -> Result<Enrolment, StoreError> {
    if let Some((id, state)) = reenrol {
        if state != HostState::Active {
            return Err(StoreError::Conflict(format!(
                "host {id} is {}; register the agent as a new host",
                state.as_str()
            )));
        }
        return Ok(Enrolment::Existing {
            id,
            how: "credential",
        });
    }
    match guest_host {
        Some((id, HostState::Active)) => Ok(Enrolment::Existing {
            id,
            how: "deploy_token",
        }),
        _ => Ok(Enrolment::New),
    }
}

/// `host.registered` (a new host) or `host.reenrolled` (an existing one, `how`), naming the
/// other active hosts that report the same machine-id.
pub fn enrolled_event(
    host: HostId,
    enrolment: Enrolment,
    facts: &HostFacts,
    token: RegistrationTokenId,
    was_agentless: bool,
    same_machine_id: &[HostId],
    now: DateTime<Utc>,
) -> PreparedEvent {
    let (event_type, how) = match enrolment {
        Enrolment::Existing { how, .. } => (events::HOST_REENROLLED, how),
        Enrolment::New => (events::HOST_REGISTERED, "new"),
    };
    let ev = NewEvent {
        event_type: event_type.into(),
        subject: events::host_subject(host),
        actor: Actor::Agent(host),
        correlation: None,
        causation: None,
        payload: json!({
            "hostname": facts.hostname,
            "machine_id": facts.machine_id,
            "registration_token_id": token,
            "how": how,
            "was_agentless": was_agentless,
            "duplicate_machine_id": same_machine_id,
        }),
    };
    prepare_event(ev, Some(host), now)
}

/// `host.archived` / `host.deleted`, with the guest it left and the commands it cancelled.
pub fn retired_event(
    host: HostId,
    to: HostState,
    actor: &Actor,
    guest: Option<canopy_api_types::GuestId>,
    cancelled: &[canopy_api_types::CommandId],
    now: DateTime<Utc>,
) -> PreparedEvent {
    let event_type = match to {
        HostState::Deleted => events::HOST_DELETED,
        _ => events::HOST_ARCHIVED,
    };
    let ev = NewEvent {
        event_type: event_type.into(),
        subject: events::host_subject(host),
        actor: actor.clone(),
        correlation: None,
        causation: None,
        payload: json!({ "guest_id": guest, "cancelled_commands": cancelled }),
    };
    prepare_event(ev, Some(host), now).with_guest(guest)
}

/// The credential hash a retired host keeps: never a SHA-256 hex digest, so it can never
/// authenticate (like [`AGENTLESS_CREDENTIAL`](crate::AGENTLESS_CREDENTIAL)).
pub fn retired_credential(to: HostState) -> &'static str {
    match to {
        HostState::Deleted => "!deleted",
        _ => "!archived",
    }
}

/// `Ok` when an active host may become `to`.
pub fn check_retire(host: HostId, from: HostState, to: HostState) -> Result<(), StoreError> {
    if to == HostState::Active {
        return Err(StoreError::Conflict(
            "a host is retired to archived or deleted, not to active".into(),
        ));
    }
    if from != HostState::Active {
        return Err(StoreError::Conflict(format!(
            "host {host} is already {}",
            from.as_str()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proved_credential_wins_then_the_deploy_token_then_new() {
        let (a, b) = (HostId::new(), HostId::new());
        assert_eq!(
            enrolment(Some((a, HostState::Active)), Some((b, HostState::Active))).unwrap(),
            Enrolment::Existing {
                id: a,
                how: "credential"
            }
        );
        assert_eq!(
            enrolment(None, Some((b, HostState::Active))).unwrap(),
            Enrolment::Existing {
                id: b,
                how: "deploy_token"
            }
        );
        assert_eq!(enrolment(None, None).unwrap(), Enrolment::New);
        assert!(enrolment(Some((a, HostState::Deleted)), None).is_err());
    }
}
