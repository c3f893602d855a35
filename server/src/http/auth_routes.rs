//! Login, refresh (rotating, sliding), logout, users and registration tokens.

use super::client_ip;
use super::extract::Json;
use super::routes::Routes;
use crate::auth::jwt::Claims;
use crate::auth::secrets::{random_token, sha256_hex};
use crate::auth::{password, Admin, RequireRole};
use crate::error::{Error, Result};
use crate::pipeline::bootstrap;
use crate::state::AppState;
use axum::extract::{ConnectInfo, State};
use canopy_api_types::auth::*;
use canopy_api_types::RegistrationTokenId;
use canopy_store::{Actor, NewEvent, NewRegistrationToken};
use std::net::SocketAddr;

pub fn routes() -> Routes {
    Routes::new()
        .post("/auth/login", login)
        .post("/auth/refresh", refresh)
        .post("/auth/logout", logout)
        .post("/users", create_user)
        .post("/registration-tokens", create_token)
        .get("/registration-tokens", list_tokens)
        .get("/me", me)
}

/// A fresh access JWT for `user`.
fn access_token(
    state: &AppState,
    user: &User,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String> {
    state.jwt.issue(&Claims {
        sub: user.id,
        name: user.username.clone(),
        role: user.role,
        iat: now.timestamp(),
        exp: now.timestamp() + state.settings.access_token_ttl_secs as i64,
    })
}

fn refresh_expiry(
    state: &AppState,
    now: chrono::DateTime<chrono::Utc>,
) -> chrono::DateTime<chrono::Utc> {
    now + chrono::Duration::seconds(state.settings.refresh_token_ttl_secs as i64)
}

/// Login: a new access token and a new refresh token (stored hashed).
async fn issue_pair(state: &AppState, user: User) -> Result<TokenPair> {
    let now = chrono::Utc::now();
    let refresh_token = random_token();
    state
        .store
        .insert_refresh_token(
            user.id,
            &sha256_hex(&refresh_token),
            refresh_expiry(state, now),
        )
        .await?;
    Ok(TokenPair {
        access_token: access_token(state, &user, now)?,
        expires_in: state.settings.access_token_ttl_secs,
        refresh_token,
        user,
    })
}

#[tracing::instrument(skip_all, fields(username = %req.username))]
async fn login(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Json(req): Json<LoginRequest>,
) -> Result<Json<TokenPair>> {
    client_ip::limit(&state.login_limiter, addr)?;
    let found = state.store.user_by_name(&req.username).await?;
    let phc = found
        .as_ref()
        .map(|(_, h)| h.clone())
        .unwrap_or_else(|| password::dummy_hash().to_string());
    let ok = password::verify(req.password, phc).await?;
    let user = match (found, ok) {
        (Some((user, _)), true) => user,
        _ => {
            tracing::warn!(ip = %addr.ip(), "failed login");
            return Err(Error::Unauthenticated("wrong username or password".into()));
        }
    };
    state
        .store
        .append_event(NewEvent {
            event_type: "user.login".into(),
            subject: format!("user/{}", user.username),
            actor: Actor::User(user.username.clone()),
            correlation: None,
            causation: None,
            payload: serde_json::json!({ "ip": addr.ip().to_string() }),
        })
        .await?;
    Ok(Json(issue_pair(&state, user).await?))
}

async fn refresh(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> Result<Json<TokenPair>> {
    let now = chrono::Utc::now();
    let new_token = random_token();
    let user = state
        .store
        .rotate_refresh_token(
            &sha256_hex(&req.refresh_token),
            &sha256_hex(&new_token),
            refresh_expiry(&state, now),
            now,
        )
        .await?
        .ok_or_else(|| {
            Error::Unauthenticated(
                "refresh token is unknown, expired or revoked; log in again".into(),
            )
        })?;
    Ok(Json(TokenPair {
        access_token: access_token(&state, &user, now)?,
        expires_in: state.settings.access_token_ttl_secs,
        refresh_token: new_token,
        user,
    }))
}

async fn logout(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> Result<Json<LogoutResponse>> {
    let revoked = state
        .store
        .revoke_refresh_token(&sha256_hex(&req.refresh_token))
        .await?;
    Ok(Json(LogoutResponse { revoked }))
}

async fn me(user: crate::auth::UserAuth) -> Json<User> {
    Json(User {
        id: user.0.sub,
        username: user.0.name,
        role: user.0.role,
    })
}

async fn create_user(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
    Json(req): Json<CreateUserRequest>,
) -> Result<Json<User>> {
    Ok(Json(
        bootstrap::create_user(state.store.as_ref(), &req.username, req.password, req.role).await?,
    ))
}

async fn create_token(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Json(req): Json<CreateRegistrationToken>,
) -> Result<Json<CreatedRegistrationToken>> {
    if req.seats == 0 || req.seats > 10_000 {
        return Err(Error::Validation(
            "seats must be between 1 and 10000".into(),
        ));
    }
    if req.expires_in_secs == 0 || req.expires_in_secs > 365 * 24 * 3600 {
        return Err(Error::Validation(
            "expires_in_secs must be between 1 and one year".into(),
        ));
    }
    let token = format!("canopy-reg-{}", random_token());
    let info = state
        .store
        .create_registration_token(
            NewRegistrationToken {
                id: RegistrationTokenId::new(),
                token_hash: sha256_hex(&token),
                label: req.label,
                seats: req.seats,
                expires_at: chrono::Utc::now()
                    + chrono::Duration::seconds(req.expires_in_secs as i64),
                guest_id: None,
            },
            &admin.actor(),
        )
        .await?;
    Ok(Json(CreatedRegistrationToken { token, info }))
}

async fn list_tokens(
    State(state): State<AppState>,
    _admin: RequireRole<Admin>,
) -> Result<Json<Vec<RegistrationToken>>> {
    Ok(Json(state.store.list_registration_tokens().await?))
}
