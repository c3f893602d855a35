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

use super::auth::{
    parse_challenges, pull_scope, Challenge, Credential, Credentials, RegistryAuth, TokenAnswer,
};
use super::limits::{self, Budget};
use super::reference::{is_loopback, ImageRef};
use super::report::{CheckError, ErrorKind, IndexEntry, RequestCounts};
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Manifest types a check accepts, lists and indexes first (Docker's order).
pub const MANIFEST_TYPES: [&str; 4] = [
    DOCKER_LIST,
    OCI_INDEX,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
];
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
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

/// The `Content-Type` of a manifest answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaType {
    /// A Docker manifest list or an OCI index: the digest is the index's.
    Index,
    /// A Docker v2 or OCI image manifest: the digest is the platform's.
    Manifest,
    /// Anything else (or none): only the body tells.
    Other(String),
}

impl MediaType {
    fn of(content_type: Option<&str>) -> Self {
        let t = content_type
            .and_then(|t| t.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        match t {
            DOCKER_LIST | OCI_INDEX => MediaType::Index,
            _ if MANIFEST_TYPES.contains(&t) => MediaType::Manifest,
            other => MediaType::Other(other.to_string()),
        }
    }
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
    fn add(&self, registry: &str, f: impl FnOnce(&mut RequestCounts)) {
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
    http: reqwest::Client,
    options: ClientOptions,
    credentials: RwLock<Credentials>,
    auth: Mutex<HashMap<String, RegistryAuth>>,
    /// One token fetch per registry at a time, so concurrent checks share a token.
    token_gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
                        "needs credentials, and none are configured for this registry"
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

    /// The `Authorization` header for a request: the configured token, basic credentials
    /// for a registry that asked for them, or a bearer token (cached, or fetched now from the
    /// realm this registry named before).
    async fn authorization(
        &self,
        r: &ImageRef,
        scope: &str,
        what: &str,
        tally: &Tally,
    ) -> Result<Option<String>, Failure> {
        let registry = r.registry.as_str();
        let credential = self.credentials.read().unwrap().get(registry).cloned();
        if let Some(Credential::Token(t)) = &credential {
            return Ok(Some(format!("Bearer {t}")));
        }
        let realm = {
            let auth = self.auth.lock().unwrap();
            let Some(a) = auth.get(registry) else {
                return Ok(None);
            };
            if a.basic {
                return Ok(credential.as_ref().and_then(basic_header));
            }
            if let Some(t) = a.token(scope, Utc::now()) {
                return Ok(Some(format!("Bearer {t}")));
            }
            a.bearer.clone()
        };
        match realm {
            Some((realm, service)) => {
                let token = self
                    .token(r, scope, &realm, service.as_deref(), what, tally)
                    .await?;
                Ok(Some(format!("Bearer {token}")))
            }
            None => Ok(None),
        }
    }

    /// Learn from a `401`'s challenge what the next attempt sends.
    async fn answer_challenge(
        &self,
        r: &ImageRef,
        scope: &str,
        headers: &HeaderMap,
        what: &str,
        tally: &Tally,
    ) -> Result<(), Failure> {
        let registry = r.registry.as_str();
        let values = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let challenge = parse_challenges(values).into_iter().next();
        let credential = self.credentials.read().unwrap().get(registry).cloned();
        let unauthorized = |why: &str| {
            Failure::Error(CheckError::new(
                ErrorKind::Unauthorized,
                format!("{what}: {why} (401)"),
            ))
        };
        match (challenge, credential) {
            (_, Some(Credential::Token(_))) => {
                Err(unauthorized("the registry refused the configured token"))
            }
            (Some(Challenge::Bearer { realm, service, .. }), _) => {
                {
                    let mut auth = self.auth.lock().unwrap();
                    let a = auth.entry(registry.to_string()).or_default();
                    a.bearer = Some((realm.clone(), service.clone()));
                    a.basic = false;
                    a.tokens.remove(scope);
                }
                self.token(r, scope, &realm, service.as_deref(), what, tally)
                    .await?;
                Ok(())
            }
            (Some(Challenge::Basic), Some(Credential::Basic { .. })) => {
                self.auth
                    .lock()
                    .unwrap()
                    .entry(registry.to_string())
                    .or_default()
                    .basic = true;
                Ok(())
            }
            (Some(Challenge::Basic), None) => Err(unauthorized(
                "the registry asks for a user name and password, and none are configured for it",
            )),
            (None, _) => Err(unauthorized(
                "the registry refused the request without a usable WWW-Authenticate challenge",
            )),
        }
    }

    /// A bearer token for `scope` from `realm`: cached, or fetched (with the registry's
    /// basic credentials when configured) and cached until it expires.
    async fn token(
        &self,
        r: &ImageRef,
        scope: &str,
        realm: &str,
        service: Option<&str>,
        what: &str,
        tally: &Tally,
    ) -> Result<String, Failure> {
        let registry = r.registry.as_str();
        let gate = self
            .token_gates
            .lock()
            .unwrap()
            .entry(registry.to_string())
            .or_default()
            .clone();
        let _held = gate.lock().await;
        if let Some(t) = self
            .auth
            .lock()
            .unwrap()
            .get(registry)
            .and_then(|a| a.token(scope, Utc::now()))
        {
            return Ok(t.to_string());
        }
        let unauthorized = |why: String| {
            Failure::Error(CheckError::new(
                ErrorKind::Unauthorized,
                format!("{what}: {why}"),
            ))
        };
        let url = reqwest::Url::parse(realm).map_err(|e| {
            unauthorized(format!(
                "the registry's token realm {realm:?} is not a URL: {e}"
            ))
        })?;
        if url.scheme() != "https"
            && !(url.scheme() == "http" && url.host_str().is_some_and(is_loopback))
        {
            return Err(unauthorized(format!(
                "the registry's token realm {realm} is not HTTPS (plain HTTP only to loopback)"
            )));
        }
        let mut query = vec![("scope", scope)];
        if let Some(s) = service {
            query.push(("service", s));
        }
        let mut req = self.http.get(url).query(&query);
        let credential = self.credentials.read().unwrap().get(registry).cloned();
        if let Some(Credential::Basic { username, password }) = &credential {
            req = req.basic_auth(username, Some(password));
        }
        tally.add(registry, |c| c.token_requests += 1);
        let resp = req
            .send()
            .await
            .map_err(|e| transport(&format!("{what}: token realm {realm}"), &e))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let why = if credential.is_some() {
                "refused the configured credentials"
            } else {
                "refused an anonymous token"
            };
            return Err(unauthorized(format!(
                "the token realm {realm} {why} ({})",
                status.as_u16()
            )));
        }
        if !status.is_success() {
            return Err(bad(what, &format!("its token realm {realm} answered {status}")).into());
        }
        let answer: TokenAnswer = resp.json().await.map_err(|e| {
            bad(
                what,
                &format!("its token realm {realm} sent no token JSON: {e}"),
            )
        })?;
        let Some((token, until)) = answer.into_token(Utc::now()) else {
            return Err(bad(
                what,
                &format!("its token realm {realm} sent an empty token"),
            )
            .into());
        };
        let mut auth = self.auth.lock().unwrap();
        auth.entry(registry.to_string())
            .or_default()
            .tokens
            .insert(scope.to_string(), (token.clone(), until));
        Ok(token)
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }
}

fn basic_header(c: &Credential) -> Option<String> {
    use base64::Engine;
    match c {
        Credential::Basic { username, password } => Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
        )),
        Credential::Token(_) => None,
    }
}

fn bad(what: &str, why: &str) -> CheckError {
    CheckError::new(ErrorKind::BadAnswer, format!("{what}: the registry {why}"))
}

fn unexpected(what: &str, status: StatusCode) -> CheckError {
    CheckError::new(
        ErrorKind::BadAnswer,
        format!("{what}: the registry answered {status}"),
    )
}

/// A request that got no answer: connection refused, DNS, TLS, timeout.
fn transport(what: &str, e: &reqwest::Error) -> CheckError {
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

#[derive(serde::Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Option<Vec<IndexDocEntry>>,
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
}

#[derive(serde::Deserialize)]
struct IndexDocEntry {
    digest: String,
    #[serde(default)]
    platform: Option<IndexDocPlatform>,
}

#[derive(serde::Deserialize)]
struct IndexDocPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// An index's entries; `None` for a document that is a single manifest.
fn parse_index(body: &[u8]) -> Result<Option<Vec<IndexEntry>>, String> {
    let doc: IndexDoc = serde_json::from_slice(body)
        .map_err(|e| format!("sent a manifest that is not JSON: {e}"))?;
    let Some(manifests) = doc.manifests else {
        return match doc.media_type.as_deref() {
            Some(DOCKER_LIST | OCI_INDEX) => Err("sent an index without a manifests list".into()),
            _ => Ok(None),
        };
    };
    Ok(Some(
        manifests
            .into_iter()
            .map(|m| IndexEntry {
                digest: m.digest,
                platform: m.platform.map(|p| {
                    super::platform::Platform::new(&p.os, &p.architecture, p.variant.as_deref())
                }),
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        assert_eq!(MediaType::of(Some(OCI_INDEX)), MediaType::Index);
        assert_eq!(
            MediaType::of(Some(&format!("{DOCKER_LIST}; charset=utf-8"))),
            MediaType::Index
        );
        assert_eq!(MediaType::of(Some(MANIFEST_TYPES[2])), MediaType::Manifest);
        assert_eq!(MediaType::of(Some(MANIFEST_TYPES[3])), MediaType::Manifest);
        assert_eq!(MediaType::of(None), MediaType::Other(String::new()));
    }

    #[test]
    fn indexes_parse_and_single_manifests_are_told_apart() {
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,"platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:cc","size":1}]}"#;
        let e = parse_index(index).unwrap().unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].platform.as_ref().unwrap().to_string(), "linux/arm64");
        assert_eq!(e[2].platform, None);
        let manifest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}"#;
        assert_eq!(parse_index(manifest).unwrap(), None);
        assert!(parse_index(b"<html>").unwrap_err().contains("not JSON"));
        assert!(
            parse_index(br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#).is_err()
        );
    }

    #[test]
    fn basic_header_is_base64() {
        let c = Credential::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(basic_header(&c).unwrap(), "Basic dTpw");
    }
}
