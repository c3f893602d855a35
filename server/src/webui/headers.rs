//! The security headers on every response, and the public sub-path behind a reverse proxy.
//!
//! The Content-Security-Policy allows only this origin's files: scripts from `'self'` (the
//! hashed bundle, loaded by `<script type=module src>`, no inline script anywhere) plus
//! `'wasm-unsafe-eval'` to compile the WebAssembly, styles from `'self'` (no `style`
//! attributes), requests to `'self'` only, no framing. No HSTS: a homelab server with a
//! self-signed certificate would lock its users out of the certificate warning.

use crate::state::AppState;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use std::net::IpAddr;

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self' \
    'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
    font-src 'self'; manifest-src 'self'; base-uri 'self'; form-action 'self'; \
    frame-ancestors 'none'";

/// Adds the security headers a response does not set itself.
pub async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    }
    h.entry("cross-origin-opener-policy")
        .or_insert(HeaderValue::from_static("same-origin"));
    resp
}

/// The path the browser sees this server under (`/canopy`; empty at the root): the
/// `X-Forwarded-Prefix` of a request whose TCP peer is one of `trusted_proxies`, else
/// nothing. Only a plain path is believed (letters, digits, `-._~/`, no `..`), so it can
/// go into the page and the cookies' `Path` as it is.
pub fn public_prefix(state: &AppState, peer: Option<IpAddr>, headers: &HeaderMap) -> String {
    let trusted = peer.is_some_and(|p| state.trusted_proxies.contains(p));
    if !trusted {
        return String::new();
    }
    headers
        .get("x-forwarded-prefix")
        .and_then(|v| v.to_str().ok())
        .and_then(clean_prefix)
        .unwrap_or_default()
}

/// `/canopy/` → `/canopy`; `None` for anything but a plain absolute path.
pub fn clean_prefix(raw: &str) -> Option<String> {
    let p = raw.trim().trim_end_matches('/');
    if p.is_empty() {
        return Some(String::new());
    }
    let plain = p.starts_with('/')
        && !p.contains("//")
        && !p.split('/').any(|s| s == "." || s == "..")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/".contains(&b));
    plain.then(|| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_prefixes_are_believed() {
        assert_eq!(clean_prefix("/canopy/").as_deref(), Some("/canopy"));
        assert_eq!(clean_prefix("/a/b-c_d.e").as_deref(), Some("/a/b-c_d.e"));
        assert_eq!(clean_prefix("/").as_deref(), Some(""));
        assert_eq!(clean_prefix("canopy"), None);
        assert_eq!(clean_prefix("/x\"><script>"), None);
        assert_eq!(clean_prefix("/a/../b"), None);
        assert_eq!(clean_prefix("//evil.example"), None);
    }
}
