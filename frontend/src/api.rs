//! The one typed client (`canopy-api-types`, compiled for wasm32) as the dashboard uses it:
//! the API under the page's `<base href>`, the session in the browser's HttpOnly cookies,
//! `X-Canopy-CSRF: 1` on every request (docs/design.md §5), and one refresh of an expired
//! access cookie before a 401 counts as logged out.

use canopy_api_types::client::{Client, ClientError};
use std::future::Future;

/// Why a call failed, as the components need to know it.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// No session (or it ended): show the login page.
    LoggedOut,
    /// The server's message, or what went wrong on the way.
    Other(String),
}

impl Failure {
    pub fn message(&self) -> String {
        match self {
            Self::LoggedOut => "your session ended; log in again".into(),
            Self::Other(m) => m.clone(),
        }
    }
}

/// The server's own words for an error.
pub fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Api { error, .. } => error.message.clone(),
        other => other.to_string(),
    }
}

/// The page's base URL without its trailing `/` (the server's sub-path behind a proxy).
pub fn base() -> String {
    let uri = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.base_uri().ok().flatten())
        .unwrap_or_default();
    uri.trim_end_matches('/').to_string()
}

/// The path of the page below the base (`tree/cluster/home` for `/canopy/tree/cluster/home`).
pub fn route() -> String {
    let Some(loc) = web_sys::window().map(|w| w.location()) else {
        return String::new();
    };
    let href = loc.href().unwrap_or_default();
    let base = base();
    let rest = href.strip_prefix(&base).unwrap_or("");
    rest.trim_start_matches('/')
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .to_string()
}

/// Shows `path` (below the base) in the address bar without loading anything: `push` adds a
/// history entry (Back returns), otherwise the current entry is replaced.
pub fn set_route(path: &str, push: bool) {
    if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
        let url = format!("{}/{path}", base());
        let _ = if push {
            history.push_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&url))
        } else {
            history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&url))
        };
    }
}

pub fn client() -> Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-canopy-csrf",
        reqwest::header::HeaderValue::from_static("1"),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a browser client builds");
    Client::new(http, base())
}

/// Runs `f` with the client; a 401 refreshes the session once and runs it again.
pub async fn call<T, F, Fut>(f: F) -> Result<T, Failure>
where
    F: Fn(Client) -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let c = client();
    match f(c.clone()).await {
        Ok(v) => Ok(v),
        Err(e) if e.status() == Some(401) => match c.browser_refresh().await {
            Ok(_) => f(c).await.map_err(|e| match e.status() {
                Some(401) => Failure::LoggedOut,
                _ => Failure::Other(describe(&e)),
            }),
            Err(_) => Err(Failure::LoggedOut),
        },
        Err(e) => Err(Failure::Other(describe(&e))),
    }
}
