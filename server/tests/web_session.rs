//! The dashboard's browser session over HTTPS (docs/design.md §5): login sets the access
//! token and the refresh token as HttpOnly, Secure, SameSite=Strict cookies (never in the
//! body), the cookie opens the same routes as a bearer token, state-changing cookie requests
//! need the CSRF header and a same-origin `Origin`, refresh rotates, logout revokes; bearer
//! clients are unaffected.

mod common;

use canopy_api_types::auth::{BrowserSession, CreateRegistrationToken};
use common::tls::{pinned_http, settings_in, TlsApp};
use common::ADMIN_PASSWORD;
use reqwest::header;
use std::collections::HashMap;

struct Browser {
    http: reqwest::Client,
    base: String,
    host: String,
    /// name → (value, path) as the server last set them.
    jar: HashMap<String, (String, String)>,
}

impl Browser {
    /// The `Cookie` header a browser would send to `path`.
    fn cookies_for(&self, path: &str) -> String {
        self.jar
            .iter()
            .filter(|(_, (v, p))| !v.is_empty() && path.starts_with(p.as_str()))
            .map(|(k, (v, _))| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Sends like the dashboard: cookies for the path, and the CSRF header when `csrf`.
    async fn send(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        csrf: bool,
        origin: Option<&str>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        let cookies = self.cookies_for(path);
        if !cookies.is_empty() {
            req = req.header(header::COOKIE, cookies);
        }
        if csrf {
            req = req.header("x-canopy-csrf", "1");
        }
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        for set in resp.headers().get_all(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            let (pair, attrs) = set.split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            let path = attrs
                .split(';')
                .find_map(|a| a.trim().strip_prefix("Path="))
                .unwrap();
            self.jar.insert(name.into(), (value.into(), path.into()));
        }
        resp
    }

    fn own_origin(&self) -> String {
        format!("https://{}", self.host)
    }
}

async fn start() -> (TlsApp, Browser, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = TlsApp::start(settings_in(dir.path()), listener).await;
    let browser = Browser {
        http: pinned_http(app.fingerprint),
        base: app.base.clone(),
        host: app.addr.to_string(),
        jar: HashMap::new(),
    };
    (app, browser, dir)
}

fn login_body() -> serde_json::Value {
    serde_json::json!({ "username": "admin", "password": ADMIN_PASSWORD })
}

fn token_body() -> serde_json::Value {
    serde_json::to_value(CreateRegistrationToken {
        label: "web".into(),
        seats: 1,
        expires_in_secs: 600,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_http_only_strict_cookies_that_open_the_api() {
    let (_app, mut b, _dir) = start().await;
    use reqwest::Method;
    // Without the CSRF header the login is refused and nothing is set.
    let refused = b
        .send(
            Method::POST,
            "/api/v1/auth/session",
            Some(login_body()),
            false,
            None,
        )
        .await;
    assert_eq!(refused.status(), 403);
    assert!(b.jar.is_empty());

    let resp = b
        .send(
            Method::POST,
            "/api/v1/auth/session",
            Some(login_body()),
            true,
            None,
        )
        .await;
    assert_eq!(resp.status(), 200);
    let sets: Vec<String> = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(sets.len(), 2, "{sets:?}");
    for set in &sets {
        for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
            assert!(set.contains(attr), "{attr} missing from {set}");
        }
    }
    assert_eq!(b.jar["canopy_access"].1, "/api/");
    assert_eq!(b.jar["canopy_refresh"].1, "/api/v1/auth/session");
    let text = resp.text().await.unwrap();
    let session: BrowserSession = serde_json::from_str(&text).unwrap();
    assert_eq!(session.user.username, "admin");
    assert!(
        !text.contains(&b.jar["canopy_access"].0),
        "no token in the body"
    );
    assert!(
        !text.contains(&b.jar["canopy_refresh"].0),
        "no token in the body"
    );

    // The cookie is the same UserAuth: reads need nothing more.
    let me = b.send(Method::GET, "/api/v1/me", None, false, None).await;
    assert_eq!(me.status(), 200);
    assert!(me.text().await.unwrap().contains("\"admin\""));
    // The refresh cookie is not sent beyond its path.
    assert!(!b.cookies_for("/api/v1/me").contains("canopy_refresh"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_by_cookie_need_the_csrf_header_and_our_origin() {
    let (app, mut b, _dir) = start().await;
    use reqwest::Method;
    b.send(
        Method::POST,
        "/api/v1/auth/session",
        Some(login_body()),
        true,
        None,
    )
    .await;
    let path = "/api/v1/registration-tokens";

    let forged = b
        .send(Method::POST, path, Some(token_body()), false, None)
        .await;
    assert_eq!(forged.status(), 403);
    let err: canopy_api_types::ApiError = forged.json().await.unwrap();
    assert!(err.message.contains("X-Canopy-CSRF"), "{}", err.message);

    let other = b
        .send(
            Method::POST,
            path,
            Some(token_body()),
            true,
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(other.status(), 403);
    let err: canopy_api_types::ApiError = other.json().await.unwrap();
    assert!(err.message.contains("evil.example"), "{}", err.message);
    let null = b
        .send(Method::POST, path, Some(token_body()), true, Some("null"))
        .await;
    assert_eq!(null.status(), 403);

    let own = b.own_origin();
    let ok = b
        .send(Method::POST, path, Some(token_body()), true, Some(&own))
        .await;
    assert_eq!(ok.status(), 200);
    let ok = b
        .send(Method::POST, path, Some(token_body()), true, None)
        .await;
    assert_eq!(ok.status(), 200);
    // Only those two were created.
    assert_eq!(app.admin.registration_tokens().await.unwrap().len(), 2);

    // A bearer client needs no header, even with a stale cookie beside it.
    let bearer = b
        .http
        .post(format!("{}{path}", b.base))
        .bearer_auth(app.admin.token().unwrap())
        .header(header::COOKIE, "canopy_access=garbage")
        .json(&token_body())
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    // A garbage cookie alone is no session.
    let garbage = b
        .http
        .get(format!("{}/api/v1/me", b.base))
        .header(header::COOKIE, "canopy_access=garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotates_and_logout_revokes() {
    let (_app, mut b, _dir) = start().await;
    use reqwest::Method;
    b.send(
        Method::POST,
        "/api/v1/auth/session",
        Some(login_body()),
        true,
        None,
    )
    .await;
    let first_refresh = b.jar["canopy_refresh"].0.clone();

    // The browser's access cookie expired (dropped): 401, then refresh.
    b.jar.remove("canopy_access");
    assert_eq!(
        b.send(Method::GET, "/api/v1/me", None, false, None)
            .await
            .status(),
        401
    );
    let no_csrf = b
        .send(
            Method::POST,
            "/api/v1/auth/session/refresh",
            None,
            false,
            None,
        )
        .await;
    assert_eq!(no_csrf.status(), 403);
    let refreshed = b
        .send(
            Method::POST,
            "/api/v1/auth/session/refresh",
            None,
            true,
            None,
        )
        .await;
    assert_eq!(refreshed.status(), 200);
    let session: BrowserSession = refreshed.json().await.unwrap();
    assert_eq!(session.user.username, "admin");
    assert_ne!(b.jar["canopy_refresh"].0, first_refresh, "rotated");
    assert!(!b.jar["canopy_access"].0.is_empty(), "a new access cookie");
    assert_eq!(
        b.send(Method::GET, "/api/v1/me", None, false, None)
            .await
            .status(),
        200
    );

    // The old refresh token is spent: 401 and both cookies cleared.
    let current = b.jar["canopy_refresh"].clone();
    b.jar
        .insert("canopy_refresh".into(), (first_refresh, current.1.clone()));
    let replay = b
        .send(
            Method::POST,
            "/api/v1/auth/session/refresh",
            None,
            true,
            None,
        )
        .await;
    assert_eq!(replay.status(), 401);
    assert_eq!(b.jar["canopy_access"].0, "", "cleared");
    assert_eq!(b.jar["canopy_refresh"].0, "", "cleared");

    // Logout revokes the current one and clears the cookies.
    b.jar.insert("canopy_refresh".into(), current);
    let out = b
        .send(Method::DELETE, "/api/v1/auth/session", None, true, None)
        .await;
    assert_eq!(out.status(), 200);
    assert_eq!(
        out.json::<serde_json::Value>().await.unwrap()["revoked"],
        true
    );
    assert_eq!(b.jar["canopy_refresh"].0, "");
    assert_eq!(
        b.send(Method::GET, "/api/v1/me", None, false, None)
            .await
            .status(),
        401
    );
}
