//! The rules of account changes, shared by both backends: who may not be disabled,
//! demoted or deleted (the last enabled admin), and the events each change writes. The
//! backends only read the target and the enabled admins under a lock and write what the
//! plan says.

use crate::events;
use crate::model::{Actor, NewEvent};
use crate::{Result, StoreError};
use canopy_api_types::auth::{Role, User};
use serde_json::json;

/// Why a new session was refused: the user changed between the password check and the
/// token's insertion.
pub(crate) const SESSION_ENDED: &str =
    "the user was disabled or changed while logging in; log in again";

/// What a change does to the target user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Disable,
    Enable,
    Role(Role),
    Delete,
    Password,
    EndSessions,
}

impl Change {
    /// `true` when the change takes the user's admin rights away.
    fn removes_admin(self, target: &User) -> bool {
        let enabled_admin = target.role == Role::Admin && !target.disabled;
        enabled_admin
            && match self {
                Self::Disable | Self::Delete => true,
                Self::Role(r) => r != Role::Admin,
                Self::Enable | Self::Password | Self::EndSessions => false,
            }
    }

    /// `false` when the user is already as asked: nothing is written.
    pub(crate) fn changes(self, target: &User) -> bool {
        match self {
            Self::Disable => !target.disabled,
            Self::Enable => target.disabled,
            Self::Role(r) => r != target.role,
            Self::Delete | Self::Password | Self::EndSessions => true,
        }
    }

    /// `true` when the change ends the user's sessions (refresh tokens revoked, session
    /// epoch bumped).
    pub(crate) fn ends_sessions(self) -> bool {
        !matches!(self, Self::Enable)
    }

    fn event_type(self) -> &'static str {
        match self {
            Self::Disable => events::USER_DISABLED,
            Self::Enable => events::USER_ENABLED,
            Self::Role(_) => events::USER_ROLE_CHANGED,
            Self::Delete => events::USER_DELETED,
            Self::Password => events::USER_PASSWORD_SET,
            Self::EndSessions => events::USER_SESSIONS_REVOKED,
        }
    }
}

/// Refuse a change that would leave no enabled admin. `other_enabled_admins` counts the
/// enabled admins besides `target`, read under a lock in the same transaction.
pub(crate) fn guard_last_admin(
    change: Change,
    target: &User,
    other_enabled_admins: i64,
) -> Result<()> {
    if change.removes_admin(target) && other_enabled_admins == 0 {
        let what = match change {
            Change::Disable => "disabled",
            Change::Delete => "deleted",
            _ => "demoted",
        };
        return Err(StoreError::Conflict(format!(
            "{} is the last enabled admin and cannot be {what}: make another user admin first",
            target.username
        )));
    }
    Ok(())
}

/// The event of a change to `target`, with how many refresh tokens it revoked.
pub(crate) fn event(change: Change, target: &User, actor: &Actor, revoked: u64) -> NewEvent {
    let mut payload = json!({
        "user_id": target.id,
        "username": target.username,
        "revoked_refresh_tokens": revoked,
    });
    if let Change::Role(to) = change {
        payload["from"] = json!(target.role);
        payload["to"] = json!(to);
    }
    NewEvent {
        event_type: change.event_type().into(),
        subject: format!("user/{}", target.username),
        actor: actor.clone(),
        correlation: None,
        causation: None,
        payload,
    }
}

/// The user as it is after the change (`None` once deleted).
pub(crate) fn after(change: Change, target: &User) -> Option<User> {
    let mut u = target.clone();
    match change {
        Change::Delete => return None,
        Change::Disable => u.disabled = true,
        Change::Enable => u.disabled = false,
        Change::Role(r) => u.role = r,
        Change::Password | Change::EndSessions => {}
    }
    Some(u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_api_types::UserId;

    fn user(role: Role, disabled: bool) -> User {
        User {
            id: UserId::new(),
            username: "ada".into(),
            role,
            disabled,
        }
    }

    #[test]
    fn the_last_enabled_admin_is_kept() {
        let admin = user(Role::Admin, false);
        for c in [
            Change::Disable,
            Change::Delete,
            Change::Role(Role::Operator),
        ] {
            let err = guard_last_admin(c, &admin, 0).unwrap_err().to_string();
            assert!(err.contains("last enabled admin"), "{err}");
            guard_last_admin(c, &admin, 1).unwrap();
        }
        for c in [
            Change::Password,
            Change::EndSessions,
            Change::Role(Role::Admin),
        ] {
            guard_last_admin(c, &admin, 0).unwrap();
        }
        // A disabled admin or an operator is never the one keeping the server administrable.
        guard_last_admin(Change::Delete, &user(Role::Admin, true), 0).unwrap();
        guard_last_admin(Change::Disable, &user(Role::Operator, false), 0).unwrap();
    }

    #[test]
    fn role_event_names_both_roles() {
        let u = user(Role::Admin, false);
        let ev = event(Change::Role(Role::Viewer), &u, &Actor::System, 2);
        assert_eq!(ev.event_type, events::USER_ROLE_CHANGED);
        assert_eq!(ev.payload["from"], "admin");
        assert_eq!(ev.payload["to"], "viewer");
        assert_eq!(ev.payload["revoked_refresh_tokens"], 2);
        assert!(!Change::Role(Role::Admin).changes(&u));
        assert_eq!(after(Change::Disable, &u).map(|u| u.disabled), Some(true));
    }
}
