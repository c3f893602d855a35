//! Browser sessions (docs/design.md §5): the dashboard holds its access JWT and refresh token
//! in HttpOnly, Secure, SameSite=Strict cookies, which the same `UserAuth` extractor reads
//! when a request has no `Authorization` header. The access cookie goes to `/api/` only and
//! lives as long as the JWT; the refresh cookie goes only to `/api/v1/auth/session` (refresh
//! and logout), so no other request carries it.
//!
//! CSRF: every state-changing request authenticated by a cookie (and every call of the
//! session routes) must carry `X-Canopy-CSRF: 1`. A page of another origin cannot send a
//! custom header without a CORS preflight, which this server never grants, and a form
//! cannot send one at all. When the browser names the request's `Origin`, it must also be
//! this server's own (the `Host`, or the `X-Forwarded-Host` of a trusted proxy). Bearer
//! clients (the CLI, agents, scripts) send no cookies and are not concerned.

use crate::error::Error;
use crate::state::AppState;
use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use std::net::SocketAddr;

pub const ACCESS_COOKIE: &str = "canopy_access";
pub const REFRESH_COOKIE: &str = "canopy_refresh";
/// The header that proves a request comes from a page of this origin.
pub const CSRF_HEADER: &str = "x-canopy-csrf";
/// The path (under the public prefix) the refresh cookie is sent to.
pub const SESSION_PATH: &str = "/api/v1/auth/session";

/// The value of cookie `name`, if the request carries it.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// One `Set-Cookie` value: HttpOnly, Secure, SameSite=Strict; `None` clears the cookie.
pub fn set_cookie(name: &str, value: Option<&str>, path: &str, max_age: u64) -> HeaderValue {
    let (value, max_age) = match value {
        Some(v) => (v, max_age),
        None => ("", 0),
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    ))
    .expect("cookie values are tokens and paths are plain")
}

/// The peer's address, for believing proxy headers.
pub fn peer(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Refuses a cross-site request: state-changing methods need [`CSRF_HEADER`], and an
/// `Origin` the browser names must be this server's.
pub fn check_csrf(state: &AppState, parts: &Parts) -> Result<(), Error> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    if parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()) != Some("1") {
        return Err(Error::Forbidden(
            "a request authenticated by the session cookie must carry the X-Canopy-CSRF: 1 \
             header (the dashboard sends it; a request from another site cannot)"
                .into(),
        ));
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("null");
        let ours = own_host(state, parts);
        let theirs = origin.split_once("://").map(|(_, authority)| authority);
        if ours.is_none() || theirs != ours {
            return Err(Error::Forbidden(format!(
                "cross-origin request refused: Origin {origin} is not this server"
            )));
        }
    }
    Ok(())
}

/// `host[:port]` as the browser addressed this server.
fn own_host<'a>(state: &AppState, parts: &'a Parts) -> Option<&'a str> {
    let trusted = peer(parts).is_some_and(|p| state.trusted_proxies.contains(p));
    let forwarded = trusted
        .then(|| parts.headers.get("x-forwarded-host"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    forwarded.or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; canopy_access=abc.def"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("canopy_refresh=xyz"),
        );
        assert_eq!(cookie(&h, ACCESS_COOKIE), Some("abc.def"));
        assert_eq!(cookie(&h, REFRESH_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "canopy"), None);
    }

    #[test]
    fn set_cookie_is_http_only_secure_strict_and_clears() {
        let v = set_cookie(ACCESS_COOKIE, Some("t"), "/x/api/", 900);
        assert_eq!(
            v.to_str().unwrap(),
            "canopy_access=t; Path=/x/api/; Max-Age=900; HttpOnly; Secure; SameSite=Strict"
        );
        let gone = set_cookie(REFRESH_COOKIE, None, SESSION_PATH, 900);
        assert!(gone
            .to_str()
            .unwrap()
            .contains("=; Path=/api/v1/auth/session; Max-Age=0;"));
    }
}
