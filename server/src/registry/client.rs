//! The registry HTTP client: a manifest `HEAD` (the digest and media type of a tag, which
//! Docker Hub does not count as a pull) and, only when the caller needs a platform's digest,
//! a `GET` of an index by its digest. Bearer and basic authentication ([`super::auth`]),
//! `429` back-off and budgets ([`super::limits`]) live here, per registry, across cycles.
//!
//! Plain HTTP only to loopback registries (Docker's default insecure registries); HTTPS with
//! the WebPKI roots otherwise (reqwest with rustls), never accepting invalid certificates,
//! and never following a redirect from HTTPS to plain HTTP.
//!
//! Why not oci-client (the issue asks for a maintained OCI client unless a measured reason
//! says otherwise): oci-client 0.18's `Client::fetch_manifest_digest` (src/client.rs,
//! lines 928-1000) returns only the digest `String`, so the `Content-Type` (index or
//! single manifest), `Retry-After` and `ratelimit-remaining` of the answer are lost; when the
//! `HEAD` answer has no `Docker-Content-Digest` — which is every `401`, `404` and `429`
//! answer — it sends a `GET` of the same manifest (line 969), a pull on Docker Hub and a second
//! request to a registry that just said `429`; and its `auth` (line 857) first sends
//! `GET /v2/` to learn the challenge, one more request per registry. It also pulls in
//! reqwest 0.13 next to the workspace's 0.12, aws-lc-rs/aws-lc-sys (a C build) next to
//! ring, and about 65 crates: 170 s more of a cold debug build on this 2-core machine
//! (base with reqwest 0.12 and tokio: 66 s). What is needed here is two requests and a
//! challenge parser.

use super::auth::{pull_scope, Credentials, RegistryAuth};
use super::limits::{self, Budget};
use super::manifest::{parse_index, MediaType, MANIFEST_TYPES};
use super::reference::{is_loopback, ImageRef};
use super::report::{CheckError, ErrorKind, IndexEntry, RequestCounts};
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The largest index read (Docker's own limit on a manifest is 4 MiB).
const MAX_INDEX_BYTES: usize = 4 << 20;

/// Timeouts and the user agent.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    /// For a whole request, answer included.
    pub request_timeout: Duration,
    pub user_agent: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(20),
            user_agent: format!("canopy/{}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// What a manifest `HEAD` said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    pub digest: String,
    pub media_type: MediaType,
}

/// Why a request gave no answer to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// `429` now or earlier: the registry is left alone until then.
    RateLimited(DateTime<Utc>),
    Error(CheckError),
}

impl From<CheckError> for Failure {
    fn from(e: CheckError) -> Self {
        Failure::Error(e)
    }
}

/// Per registry: back-off and the last budget, kept across cycles.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegistryLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// Request counts of one cycle, per registry.
#[derive(Debug, Default)]
pub struct Tally(Mutex<HashMap<String, RequestCounts>>);

impl Tally {
    pub(super) fn add(&self, registry: &str, f: impl FnOnce(&mut RequestCounts)) {
        f(self
            .0
            .lock()
            .unwrap()
            .entry(registry.to_string())
            .or_default());
    }

    pub fn get(&self, registry: &str) -> RequestCounts {
        self.0
            .lock()
            .unwrap()
            .get(registry)
            .copied()
            .unwrap_or_default()
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Head,
    Get,
}

/// The one registry client; shared by every cycle of a server.
pub struct RegistryClient {
    pub(super) http: reqwest::Client,
    options: ClientOptions,
    pub(super) credentials: RwLock<Credentials>,
    pub(super) auth: Mutex<HashMap<String, RegistryAuth>>,
    /// One token fetch per registry at a time, so concurrent checks share a token.
    pub(super) token_gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    limits: Mutex<HashMap<String, RegistryLimits>>,
}

impl RegistryClient {
    pub fn new(options: ClientOptions, credentials: Credentials) -> Result<Self, reqwest::Error> {
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let url = attempt.url();
            let plain_ok = url.host_str().is_some_and(is_loopback);
            if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else if url.scheme() != "https" && !plain_ok {
                attempt.error("a redirect to plain HTTP on a host that is not loopback")
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(options.user_agent.clone())
            .redirect(redirects)
            .build()?;
        Ok(RegistryClient {
            http,
            options,
            credentials: RwLock::new(credentials),
            auth: Mutex::default(),
            token_gates: Mutex::default(),
            limits: Mutex::default(),
        })
    }

    /// Replace the credentials; cached tokens and learnt schemes are dropped.
    pub fn set_credentials(&self, credentials: Credentials) {
        *self.credentials.write().unwrap() = credentials;
        self.auth.lock().unwrap().clear();
    }

    /// Back-off and budget of every registry seen.
    pub fn limits(&self) -> HashMap<String, RegistryLimits> {
        self.limits.lock().unwrap().clone()
    }

    /// Restore back-offs and budgets (after a restart).
    pub fn restore_limits(&self, limits: HashMap<String, RegistryLimits>) {
        *self.limits.lock().unwrap() = limits;
    }

    /// Back-off and budget of `registry`.
    pub fn registry_limits(&self, registry: &str) -> RegistryLimits {
        self.limits
            .lock()
            .unwrap()
            .get(registry)
            .cloned()
            .unwrap_or_default()
    }

    /// The digest and media type the registry serves for `r`'s tag: one `HEAD` (two when a
    /// `401` asks for a token first).
    pub async fn head_manifest(
        &self,
        r: &ImageRef,
        tally: &Tally,
    ) -> Result<ManifestHead, Failure> {
        let tag = r.tag.as_deref().unwrap_or("latest");
        let what = format!("{}/{}:{tag}", r.registry, r.repository);
        let resp = self.request(Kind::Head, r, tag, &what, tally).await?;
        let status = resp.status();
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(CheckError::new(
                    ErrorKind::NotFound,
                    format!(
                        "{what}: the registry has no tag {tag:?} in repository {} (404)",
                        r.repository
                    ),
                )
                .into())
            }
            s => return Err(unexpected(&what, s).into()),
        }
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let Some(digest) = header("docker-content-digest") else {
            return Err(bad(&what, "answered 200 without a Docker-Content-Digest header").into());
        };
        if let Err(e) = super::reference::validate_digest(digest) {
            return Err(bad(
                &what,
                &format!("answered with a bad Docker-Content-Digest: {e}"),
            )
            .into());
        }
        Ok(ManifestHead {
            digest: digest.to_string(),
            media_type: MediaType::of(header(CONTENT_TYPE.as_str())),
        })
    }

    /// The manifests the index `digest` of `r`'s repository lists (one `GET`, by digest,
    /// checked against it); `None` when the document is a single manifest.
    pub async fn get_index(
        &self,
        r: &ImageRef,
        digest: &str,
        tally: &Tally,
    ) -> Result<Option<Vec<IndexEntry>>, Failure> {
        let what = format!("{}/{}@{digest}", r.registry, r.repository);
        let mut resp = self.request(Kind::Get, r, digest, &what, tally).await?;
        match resp.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(CheckError::new(
                    ErrorKind::NotFound,
                    format!("{what}: the registry no longer has this index (404)"),
                )
                .into())
            }
            s => return Err(unexpected(&what, s).into()),
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&what, &e))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_INDEX_BYTES {
                return Err(bad(&what, "sent an index larger than 4 MiB").into());
            }
        }
        if let Some(hex) = digest.strip_prefix("sha256:") {
            let got = hex::encode(Sha256::digest(&body));
            if got != hex {
                return Err(
                    bad(&what, &format!("sent content whose digest is sha256:{got}")).into(),
                );
            }
        }
        parse_index(&body).map_err(|e| bad(&what, &e).into())
    }

    /// Send one manifest request, authenticating as the registry asks; `429` and `401`/`403`
    /// are handled here, every other status is the caller's.
    async fn request(
        &self,
        kind: Kind,
        r: &ImageRef,
        reference: &str,
        what: &str,
        tally: &Tally,
    ) -> Result<reqwest::Response, Failure> {
        let registry = r.registry.as_str();
        let scheme = if is_loopback(registry) {
            "http"
        } else {
            "https"
        };
        let url = format!(
            "{scheme}://{}/v2/{}/manifests/{reference}",
            r.api_host(),
            r.repository
        );
        let scope = pull_scope(&r.repository);
        let mut challenged = false;
        loop {
            if let Some(until) = self.backed_off(registry) {
                tally.add(registry, |c| c.held_back += 1);
                return Err(Failure::RateLimited(until));
            }
            let authorization = self.authorization(r, &scope, what, tally).await?;
            let method = match kind {
                Kind::Head => Method::HEAD,
                Kind::Get => Method::GET,
            };
            let mut req = self
                .http
                .request(method, &url)
                .header(ACCEPT, MANIFEST_TYPES.join(", "));
            if let Some(a) = authorization {
                req = req.header(AUTHORIZATION, a);
            }
            tally.add(registry, |c| match kind {
                Kind::Head => c.heads += 1,
                Kind::Get => c.gets += 1,
            });
            tracing::debug!(%url, ?challenged, "registry manifest request");
            let resp = req.send().await.map_err(|e| transport(what, &e))?;
            let now = Utc::now();
            self.record_budget(registry, resp.headers(), now);
            match resp.status() {
                StatusCode::TOO_MANY_REQUESTS => {
                    let value = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok());
                    let until = limits::retry_after(value, now);
                    tracing::warn!(registry, %until, "registry answered 429; backing off");
                    self.limits
                        .lock()
                        .unwrap()
                        .entry(registry.to_string())
                        .or_default()
                        .backoff_until = Some(until);
                    return Err(Failure::RateLimited(until));
                }
                StatusCode::UNAUTHORIZED if !challenged => {
                    challenged = true;
                    self.answer_challenge(r, &scope, resp.headers(), what, tally)
                        .await?;
                }
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    let status = resp.status();
                    self.forget_token(registry, &scope);
                    let has = self.credentials.read().unwrap().get(registry).is_some();
                    let why = if has {
                        "refused the configured credentials"
                    } else {
                        "needs credentials (or the repository does not exist), and none are configured for this registry"
                    };
                    return Err(CheckError::new(
                        ErrorKind::Unauthorized,
                        format!("{what}: the registry {why} ({})", status.as_u16()),
                    )
                    .into());
                }
                _ => return Ok(resp),
            }
        }
    }

    fn backed_off(&self, registry: &str) -> Option<DateTime<Utc>> {
        let limits = self.limits.lock().unwrap();
        limits
            .get(registry)
            .and_then(|l| l.backoff_until)
            .filter(|until| *until > Utc::now())
    }

    fn record_budget(&self, registry: &str, headers: &HeaderMap, now: DateTime<Utc>) {
        if let Some(b) = limits::budget(headers, now) {
            self.limits
                .lock()
                .unwrap()
                .entry(registry.to_string())
                .or_default()
                .budget = Some(b);
        }
    }

    fn forget_token(&self, registry: &str, scope: &str) {
        if let Some(a) = self.auth.lock().unwrap().get_mut(registry) {
            a.tokens.remove(scope);
        }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }
}

pub(super) fn bad(what: &str, why: &str) -> CheckError {
    CheckError::new(ErrorKind::BadAnswer, format!("{what}: the registry {why}"))
}

fn unexpected(what: &str, status: StatusCode) -> CheckError {
    CheckError::new(
        ErrorKind::BadAnswer,
        format!("{what}: the registry answered {status}"),
    )
}

/// A request that got no answer: connection refused, DNS, TLS, timeout.
pub(super) fn transport(what: &str, e: &reqwest::Error) -> CheckError {
    let mut chain = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        source = s.source();
    }
    let why = if e.is_timeout() {
        "no answer in time".to_string()
    } else if e.is_connect() {
        format!("cannot connect{chain}")
    } else {
        format!("the request failed{chain}")
    };
    CheckError::new(ErrorKind::Unreachable, format!("{what}: {why}"))
}
