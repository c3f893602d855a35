//! Login, refresh (rotating, sliding), logout (one session or all), the logged-in user and
//! their own password, registration tokens. Users are managed in `users.rs`.

use super::client_ip::{self, ClientIp};
use super::extract::{Json, Path};
use super::routes::Routes;
use crate::auth::jwt::Claims;
use crate::auth::secrets::{random_token, sha256_hex};
use crate::auth::{password, Admin, RequireRole, UserAuth};
use crate::error::{Error, Result};
use crate::state::AppState;
use axum::extract::State;
use canopy_api_types::auth::*;
use canopy_api_types::RegistrationTokenId;
use canopy_store::{Actor, NewEvent, NewRegistrationToken, UserRecord};
use std::time::Instant;

pub fn routes() -> Routes {
    Routes::new()
        .post("/auth/login", login)
        .post("/auth/refresh", refresh)
        .post("/auth/logout", logout)
        .post("/auth/logout-all", logout_all)
        .get("/me", me)
        .post("/me/password", change_own_password)
        .post("/registration-tokens", create_token)
        .get("/registration-tokens", list_tokens)
        .delete("/registration-tokens/{id}", revoke_token)
}

/// A fresh access JWT for `user`, bound to their current session epoch.
fn access_token(
    state: &AppState,
    user: &UserRecord,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String> {
    state.jwt.issue(&Claims {
        sub: user.user.id,
        name: user.user.username.clone(),
        role: user.user.role,
        epoch: user.session_epoch,
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

/// A new access token and a new refresh token (stored hashed).
pub(super) async fn issue_pair(state: &AppState, user: UserRecord) -> Result<TokenPair> {
    let now = chrono::Utc::now();
    let refresh_token = random_token();
    state
        .store
        .insert_refresh_token(
            user.user.id,
            &sha256_hex(&refresh_token),
            refresh_expiry(state, now),
            user.session_epoch,
        )
        .await?;
    Ok(TokenPair {
        access_token: access_token(state, &user, now)?,
        expires_in: state.settings.access_token_ttl_secs,
        refresh_token,
        user: user.user,
    })
}

/// The key of the per-name login bucket (user names are at most 64 characters).
fn name_key(username: &str) -> String {
    username.chars().take(64).collect()
}

/// Take one attempt for `username` from the per-name bucket.
fn limit_name(state: &AppState, username: &str) -> Result<String> {
    let key = name_key(username);
    client_ip::limit(&state.login_name_limiter, &key, &format!("for user {key}"))?;
    Ok(key)
}

/// Login. Attempts are limited per client address and per user name; a successful one
/// gives both back, so only failures count.
#[tracing::instrument(skip_all, fields(username = %req.username, %client))]
async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    Json(req): Json<LoginRequest>,
) -> Result<Json<TokenPair>> {
    let record = authenticate(&state, client, req).await?;
    Ok(Json(issue_pair(&state, record).await?))
}

/// The user whose name and password these are (limits, the refund, the login event); the
/// dashboard's session login (`session.rs`) shares it.
pub(super) async fn authenticate(
    state: &AppState,
    client: std::net::IpAddr,
    req: LoginRequest,
) -> Result<UserRecord> {
    client_ip::limit(&state.login_limiter, &client, &format!("from {client}"))?;
    let key = limit_name(state, &req.username)?;
    let found = state.store.user_by_name(&req.username).await?;
    let phc = found
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| password::dummy_hash().to_string());
    let ok = password::verify(req.password, phc).await?;
    let record = match (found, ok) {
        (Some(record), true) => record,
        _ => {
            tracing::warn!("failed login");
            return Err(Error::Unauthenticated("wrong username or password".into()));
        }
    };
    let now = Instant::now();
    state.login_limiter.refund(&client, now);
    state.login_name_limiter.refund(&key, now);
    if record.user.disabled {
        return Err(crate::auth::extract::disabled(&record.user.username));
    }
    state
        .store
        .append_event(NewEvent {
            event_type: "user.login".into(),
            subject: format!("user/{}", record.user.username),
            actor: Actor::User(record.user.username.clone()),
            correlation: None,
            causation: None,
            payload: serde_json::json!({ "ip": client.to_string() }),
        })
        .await?;
    Ok(record)
}

async fn refresh(
    State(state): State<AppState>,
    Json(req): Json<RefreshRequest>,
) -> Result<Json<TokenPair>> {
    Ok(Json(rotate(&state, &req.refresh_token).await?))
}

/// A new pair for a refresh token (which is revoked), or 401.
pub(super) async fn rotate(state: &AppState, refresh_token: &str) -> Result<TokenPair> {
    let now = chrono::Utc::now();
    let new_token = random_token();
    let user = state
        .store
        .rotate_refresh_token(
            &sha256_hex(refresh_token),
            &sha256_hex(&new_token),
            refresh_expiry(state, now),
            now,
        )
        .await?
        .ok_or_else(|| {
            Error::Unauthenticated(
                "refresh token is unknown, expired or revoked (logged out, or the account was \
                 disabled, deleted or changed); log in again"
                    .into(),
            )
        })?;
    Ok(TokenPair {
        access_token: access_token(state, &user, now)?,
        expires_in: state.settings.access_token_ttl_secs,
        refresh_token: new_token,
        user: user.user,
    })
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

/// Log out everywhere: every refresh token of the user revoked, every access token
/// (this one included) ended.
async fn logout_all(State(state): State<AppState>, user: UserAuth) -> Result<Json<AccountChange>> {
    Ok(Json(
        state.store.end_sessions(user.0.sub, &user.actor()).await?,
    ))
}

async fn me(user: UserAuth) -> Json<User> {
    Json(User {
        id: user.0.sub,
        username: user.0.name,
        role: user.0.role,
        disabled: false,
    })
}

/// A user changes their own password, proving the current one (attempts limited per user
/// name like logins). Every other session ends; the answer is a fresh one.
async fn change_own_password(
    State(state): State<AppState>,
    user: UserAuth,
    Json(req): Json<ChangePasswordRequest>,
) -> Result<Json<TokenPair>> {
    let key = limit_name(&state, &user.0.name)?;
    let record = state
        .store
        .user_by_id(user.0.sub)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user {}", user.0.name)))?;
    if !password::verify(req.current_password, record.password_hash).await? {
        return Err(Error::Forbidden("the current password is wrong".into()));
    }
    state.login_name_limiter.refund(&key, Instant::now());
    let hash = password::hash(req.new_password).await?;
    state
        .store
        .set_password(&user.0.name, &hash, &user.actor())
        .await?;
    let record = state
        .store
        .user_by_id(user.0.sub)
        .await?
        .ok_or_else(|| Error::NotFound(format!("user {}", user.0.name)))?;
    Ok(Json(issue_pair(&state, record).await?))
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

/// Revoke a registration token: agents can no longer register with it; hosts it enrolled
/// keep their own credentials. The record stays, marked revoked.
async fn revoke_token(
    State(state): State<AppState>,
    admin: RequireRole<Admin>,
    Path(id): Path<RegistrationTokenId>,
) -> Result<Json<RegistrationToken>> {
    Ok(Json(
        state
            .store
            .revoke_registration_token(id, &admin.actor())
            .await?,
    ))
}
