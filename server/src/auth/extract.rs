//! Authorization in types: `UserAuth` (a valid access JWT, as a bearer token or the
//! dashboard's session cookie, `cookie.rs`), `RequireRole<Operator>`
//! (at least that role), `AgentAuth` (a valid agent credential). The agent and UI
//! routers use different extractors, so an agent token never opens a UI route.

use super::cookie;
use super::secrets::{digest_eq, sha256_hex};
use crate::error::Error;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use canopy_api_types::auth::Role;
use canopy_api_types::hosts::Host;
use canopy_api_types::HostId;
use canopy_store::Actor;
use std::marker::PhantomData;

use super::jwt::Claims;

fn bearer(parts: &Parts) -> Result<&str, Error> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| Error::Unauthenticated("missing Authorization: Bearer header".into()))?;
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthenticated("Authorization header is not ASCII".into()))?;
    value
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::Unauthenticated("Authorization header must be 'Bearer TOKEN'".into()))
}

/// The refusal for a disabled user: who they are is known, they may do nothing.
pub fn disabled(username: &str) -> Error {
    Error::Forbidden(format!(
        "user {username} is disabled; an admin can enable it again"
    ))
}

/// A logged-in user (any role), as the database knows them at this request: the access
/// JWT's signature and expiry are checked, then the user is read by id (one primary-key
/// read) and must exist, be enabled and still be at the session epoch the token was issued
/// under. Disabling or deleting a user, a role or password change and `logout --all` bump
/// the epoch, so access tokens issued before them stop working at once. The name and role
/// in the claims are replaced by the stored ones.
#[derive(Debug, Clone)]
pub struct UserAuth(pub Claims);

impl UserAuth {
    pub fn actor(&self) -> Actor {
        Actor::User(self.0.name.clone())
    }
}

impl FromRequestParts<AppState> for UserAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        // A bearer token when there is an Authorization header (the CLI, scripts); else the
        // dashboard's session cookie, whose state-changing requests must pass the CSRF check.
        let token = if parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            bearer(parts)?
        } else if let Some(token) = cookie::cookie(&parts.headers, cookie::ACCESS_COOKIE) {
            cookie::check_csrf(state, parts)?;
            token
        } else {
            return Err(Error::Unauthenticated(
                "missing Authorization: Bearer header (or the dashboard's session cookie);                  log in"
                    .into(),
            ));
        };
        let mut claims = state.jwt.verify(token)?;
        let record = state.store.user_by_id(claims.sub).await?.ok_or_else(|| {
            Error::Unauthenticated(format!(
                "user {} no longer exists; log in as another user",
                claims.name
            ))
        })?;
        let user = record.user;
        if user.disabled {
            return Err(disabled(&user.username));
        }
        if record.session_epoch != claims.epoch {
            return Err(Error::Unauthenticated(format!(
                "the session of {} was ended (password or role changed, or logged out \
                 everywhere); log in again",
                user.username
            )));
        }
        claims.name = user.username;
        claims.role = user.role;
        Ok(Self(claims))
    }
}

pub trait MinRole: Send + Sync + 'static {
    const ROLE: Role;
}
#[derive(Debug)]
pub struct Viewer;
#[derive(Debug)]
pub struct Operator;
#[derive(Debug)]
pub struct Admin;
impl MinRole for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl MinRole for Operator {
    const ROLE: Role = Role::Operator;
}
impl MinRole for Admin {
    const ROLE: Role = Role::Admin;
}

/// A logged-in user with at least role `R`.
#[derive(Debug)]
pub struct RequireRole<R: MinRole>(pub UserAuth, PhantomData<R>);

impl<R: MinRole> RequireRole<R> {
    pub fn actor(&self) -> Actor {
        self.0.actor()
    }
}

impl<R: MinRole> FromRequestParts<AppState> for RequireRole<R> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let user = UserAuth::from_request_parts(parts, state).await?;
        if user.0.role < R::ROLE {
            return Err(Error::Forbidden(format!(
                "this needs the {} role; {} has {}",
                R::ROLE.as_str(),
                user.0.name,
                user.0.role.as_str()
            )));
        }
        Ok(Self(user, PhantomData))
    }
}

/// A user who may deploy and uninstall agents, which runs commands as root on every node
/// over SSH: an admin, or an operator when `deploy.operators_may_deploy` is set.
#[derive(Debug)]
pub struct MayDeploy(pub UserAuth);

impl MayDeploy {
    pub fn actor(&self) -> Actor {
        self.0.actor()
    }
}

impl FromRequestParts<AppState> for MayDeploy {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let user = UserAuth::from_request_parts(parts, state).await?;
        let least = if state.settings.deploy.operators_may_deploy {
            Role::Operator
        } else {
            Role::Admin
        };
        if user.0.role < least {
            let grant = if least == Role::Admin && user.0.role == Role::Operator {
                " (an admin can let operators deploy with [deploy] operators_may_deploy = true)"
            } else {
                ""
            };
            return Err(Error::Forbidden(format!(
                "deploying and uninstalling agents runs commands as root on every node, so it \
                 needs the {} role; {} has {}{grant}",
                least.as_str(),
                user.0.name,
                user.0.role.as_str()
            )));
        }
        Ok(Self(user))
    }
}

/// An enrolled agent, authenticated by `Bearer HOST_ID.SECRET`.
#[derive(Debug, Clone)]
pub struct AgentAuth(pub Host);

impl AgentAuth {
    pub fn host_id(&self) -> HostId {
        self.0.id
    }
    pub fn actor(&self) -> Actor {
        Actor::Agent(self.0.id)
    }
}

/// The active host whose credential `token` (`HOST_ID.SECRET`) is, if it is one.
pub async fn verify_agent_token(state: &AppState, token: &str) -> Result<Option<Host>, Error> {
    let Some((id, secret)) = split_agent_token(token) else {
        return Ok(None);
    };
    Ok(match state.store.host_credential(id).await? {
        Some((host, stored))
            if host.state == canopy_api_types::hosts::HostState::Active
                && digest_eq(&sha256_hex(secret), &stored) =>
        {
            Some(host)
        }
        _ => None,
    })
}

/// Split an agent token `HOST_ID.SECRET`.
pub fn split_agent_token(token: &str) -> Option<(HostId, &str)> {
    let (id, secret) = token.split_once('.')?;
    Some((id.parse().ok()?, secret))
}

impl FromRequestParts<AppState> for AgentAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = bearer(parts)?;
        let bad =
            || Error::Unauthenticated("agent token is not valid; re-register the agent".into());
        let (id, secret) = split_agent_token(token).ok_or_else(bad)?;
        let (host, stored) = state.store.host_credential(id).await?.ok_or_else(bad)?;
        if host.state != canopy_api_types::hosts::HostState::Active {
            return Err(Error::Unauthenticated(format!(
                "host {id} was {}; its credential is revoked — register the agent again with a new registration token",
                host.state.as_str()
            )));
        }
        if !digest_eq(&sha256_hex(secret), &stored) {
            return Err(bad());
        }
        Ok(Self(host))
    }
}
