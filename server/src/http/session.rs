//! The dashboard's browser session (docs/design.md §5): log in, refresh and log out with
//! the tokens in HttpOnly cookies (`auth/cookie.rs`) instead of the JSON body. The same
//! users, limits, events and refresh-token rotation as `/auth/login`; every call needs the
//! CSRF header.

use super::auth_routes::{authenticate, issue_pair, rotate};
use super::client_ip::ClientIp;
use super::extract::Json;
use super::routes::Routes;
use crate::auth::cookie::{self, ACCESS_COOKIE, REFRESH_COOKIE, SESSION_PATH};
use crate::auth::secrets::sha256_hex;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::webui::headers::public_prefix;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use canopy_api_types::auth::{BrowserSession, LoginRequest, LogoutResponse, TokenPair};

pub fn routes() -> Routes {
    Routes::new()
        .post("/auth/session", login)
        .post("/auth/session/refresh", refresh)
        .delete("/auth/session", logout)
}

/// What a session route needs of the request: it passed the CSRF check, its cookies, and
/// the public prefix the cookies' paths start with.
struct SessionRequest {
    headers: HeaderMap,
    prefix: String,
}

impl FromRequestParts<AppState> for SessionRequest {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        cookie::check_csrf(state, parts)?;
        Ok(Self {
            prefix: public_prefix(state, cookie::peer(parts), &parts.headers),
            headers: parts.headers.clone(),
        })
    }
}

/// The answer with both cookies set (or cleared, without a pair).
fn with_cookies(
    state: &AppState,
    prefix: &str,
    pair: Option<&TokenPair>,
    body: impl IntoResponse,
) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        cookie::set_cookie(
            ACCESS_COOKIE,
            pair.map(|p| p.access_token.as_str()),
            &format!("{prefix}/api/"),
            state.settings.access_token_ttl_secs,
        ),
    );
    h.append(
        header::SET_COOKIE,
        cookie::set_cookie(
            REFRESH_COOKIE,
            pair.map(|p| p.refresh_token.as_str()),
            &format!("{prefix}{SESSION_PATH}"),
            state.settings.refresh_token_ttl_secs,
        ),
    );
    h.insert(header::CACHE_CONTROL, "no-store".parse().expect("valid"));
    resp
}

fn session(pair: &TokenPair) -> Json<BrowserSession> {
    Json(BrowserSession {
        user: pair.user.clone(),
        expires_in: pair.expires_in,
    })
}

#[tracing::instrument(skip_all, fields(username = %req.username, %client))]
async fn login(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    s: SessionRequest,
    Json(req): Json<LoginRequest>,
) -> Result<Response> {
    let record = authenticate(&state, client, req).await?;
    let pair = issue_pair(&state, record).await?;
    Ok(with_cookies(&state, &s.prefix, Some(&pair), session(&pair)))
}

/// A new access cookie for the refresh cookie (rotated); without a valid one, 401 and both
/// cookies cleared.
async fn refresh(State(state): State<AppState>, s: SessionRequest) -> Result<Response> {
    let Some(token) = cookie::cookie(&s.headers, REFRESH_COOKIE) else {
        return Err(Error::Unauthenticated(
            "no session to refresh; log in".into(),
        ));
    };
    match rotate(&state, token).await {
        Ok(pair) => Ok(with_cookies(&state, &s.prefix, Some(&pair), session(&pair))),
        Err(e @ Error::Unauthenticated(_)) => Ok(with_cookies(&state, &s.prefix, None, e)),
        Err(e) => Err(e),
    }
}

/// Ends this browser's session: its refresh token revoked, both cookies cleared.
async fn logout(State(state): State<AppState>, s: SessionRequest) -> Result<Response> {
    let revoked = match cookie::cookie(&s.headers, REFRESH_COOKIE) {
        Some(token) => state.store.revoke_refresh_token(&sha256_hex(token)).await?,
        None => false,
    };
    Ok(with_cookies(
        &state,
        &s.prefix,
        None,
        Json(LogoutResponse { revoked }),
    ))
}
