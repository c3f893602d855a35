//! Registry authentication, as Docker does it: a `401` names a scheme in `WWW-Authenticate`.
//! `Bearer realm=…,service=…,scope=…` sends the client to a token realm (anonymously, or with
//! the registry's basic credentials), and the token it gets is sent as `Authorization: Bearer`
//! until it expires; `Basic` takes the configured user name and password on every request.
//!
//! Credentials are the caller's (per registry, kept sealed by the server); they are never
//! logged and never shown by `Debug`. Tokens are cached per (registry, scope), and each
//! registry's challenge is remembered so that the next repository's token is fetched before
//! its first request, not after a `401` (every `401` is a request the registry counts).

use super::client::{bad, transport, Failure, RegistryClient, Tally};
use super::reference::{is_loopback, normalize_registry, ImageRef};
use super::report::{CheckError, ErrorKind};
use chrono::{DateTime, Duration, Utc};
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;

/// How the server authenticates to one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (or access token used as a password, as Docker Hub and GHCR
    /// take them): sent to the token realm on a `Bearer` challenge, to the registry on a
    /// `Basic` one.
    Basic { username: String, password: String },
    /// A bearer token sent to the registry as it is.
    Token(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { .. } => f.write_str("Credential::Basic(<redacted>)"),
            Credential::Token(_) => f.write_str("Credential::Token(<redacted>)"),
        }
    }
}

/// Credentials per registry name (`docker.io`, `ghcr.io`, `127.0.0.1:5000`).
#[derive(Clone, Default)]
pub struct Credentials(HashMap<String, Credential>);

impl Credentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Credentials for `registry`; Docker Hub's aliases (`index.docker.io`, …) are one.
    pub fn insert(&mut self, registry: &str, credential: Credential) -> &mut Self {
        self.0.insert(normalize_registry(registry), credential);
        self
    }

    pub fn get(&self, registry: &str) -> Option<&Credential> {
        self.0.get(registry)
    }
}

/// Shows which registries have credentials, never the credentials.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.0.keys().collect();
        names.sort();
        f.debug_tuple("Credentials").field(&names).finish()
    }
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// The challenges of `WWW-Authenticate` values, `Bearer` ones first; unknown schemes are
/// left out.
pub(crate) fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    let mut out = Vec::new();
    for value in values {
        let mut rest = value.trim();
        while !rest.is_empty() {
            let (scheme, after) = rest.split_once(' ').unwrap_or((rest, ""));
            let (params, next) = parse_params(after);
            match scheme.to_ascii_lowercase().as_str() {
                "bearer" => {
                    if let Some(realm) = params.get("realm") {
                        out.push(Challenge::Bearer {
                            realm: realm.clone(),
                            service: params.get("service").cloned(),
                            scope: params.get("scope").cloned(),
                        });
                    }
                }
                "basic" => out.push(Challenge::Basic),
                _ => {}
            }
            rest = next.trim_start_matches([',', ' ']);
        }
    }
    out.sort_by_key(|c| matches!(c, Challenge::Basic));
    out
}

/// `k="v", k2=v2` up to the next challenge's scheme; returns the parameters and the rest.
fn parse_params(s: &str) -> (HashMap<String, String>, &str) {
    let mut params = HashMap::new();
    let mut rest = s.trim_start();
    loop {
        let Some(eq) = rest.find('=') else {
            return (params, rest);
        };
        let key = &rest[..eq];
        if key.is_empty() || key.contains([' ', ',', '"']) {
            // The next challenge's scheme, not a parameter.
            return (params, rest);
        }
        let after = &rest[eq + 1..];
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.insert(key.trim().to_ascii_lowercase(), value);
        rest = tail.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None => return (params, rest),
        }
    }
}

/// A token realm's answer (the Docker token specification; `access_token` is OAuth2's name).
#[derive(Deserialize)]
pub(crate) struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
}

/// Docker's default lifetime of a token that does not say.
const DEFAULT_TOKEN_SECS: i64 = 60;

impl TokenAnswer {
    /// The token and until when to use it: its lifetime less a tenth, so that it is not sent
    /// in its last seconds.
    pub(crate) fn into_token(self, now: DateTime<Utc>) -> Option<(String, DateTime<Utc>)> {
        let token = self.token.or(self.access_token).filter(|t| !t.is_empty())?;
        let secs = self
            .expires_in
            .filter(|s| *s > 0)
            .unwrap_or(DEFAULT_TOKEN_SECS);
        Some((token, now + Duration::seconds(secs - secs / 10)))
    }
}

/// What is known about authenticating to one registry.
#[derive(Default)]
pub(crate) struct RegistryAuth {
    /// The last `Bearer` challenge's realm and service.
    pub bearer: Option<(String, Option<String>)>,
    /// The registry asked for `Basic`.
    pub basic: bool,
    /// Tokens by scope, with when they stop being used.
    pub tokens: HashMap<String, (String, DateTime<Utc>)>,
}

impl RegistryAuth {
    /// A cached token for `scope` that is still good at `now`.
    pub fn token(&self, scope: &str, now: DateTime<Utc>) -> Option<&str> {
        self.tokens
            .get(scope)
            .filter(|(_, until)| *until > now)
            .map(|(t, _)| t.as_str())
    }
}

/// The pull scope of a repository, as registries name it in challenges.
pub(crate) fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

impl RegistryClient {
    /// The `Authorization` header for a request: the configured token, basic credentials
    /// for a registry that asked for them, or a bearer token (cached, or fetched now from the
    /// realm this registry named before).
    pub(super) async fn authorization(
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
    pub(super) async fn answer_challenge(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse_with_commas_inside_quotes() {
        let c = parse_challenges([
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
        ]);
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/nginx:pull,push".into()),
            }]
        );
        let c = parse_challenges([
            r#"Basic realm="Registry Realm", Bearer realm=http://127.0.0.1:9/t"#,
        ]);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            matches!(&c[0], Challenge::Bearer { realm, service: None, scope: None } if realm == "http://127.0.0.1:9/t")
        );
        assert_eq!(c[1], Challenge::Basic);
        assert!(parse_challenges(["Negotiate abc"]).is_empty());
        assert!(
            parse_challenges([r#"Bearer service="x""#]).is_empty(),
            "no realm"
        );
    }

    #[test]
    fn tokens_expire_before_their_lifetime_ends() {
        let now = Utc::now();
        let a: TokenAnswer = serde_json::from_str(r#"{"token":"t","expires_in":300}"#).unwrap();
        let (t, until) = a.into_token(now).unwrap();
        assert_eq!(t, "t");
        assert_eq!(until, now + Duration::seconds(270));
        let a: TokenAnswer = serde_json::from_str(r#"{"access_token":"o"}"#).unwrap();
        let (t, until) = a.into_token(now).unwrap();
        assert_eq!((t.as_str(), until), ("o", now + Duration::seconds(54)));
        let a: TokenAnswer = serde_json::from_str(r#"{"token":""}"#).unwrap();
        assert!(a.into_token(now).is_none());

        let mut auth = RegistryAuth::default();
        auth.tokens
            .insert("s".into(), ("tok".into(), now + Duration::seconds(5)));
        assert_eq!(auth.token("s", now), Some("tok"));
        assert_eq!(auth.token("s", now + Duration::seconds(5)), None);
        assert_eq!(auth.token("other", now), None);
    }

    #[test]
    fn basic_header_is_base64() {
        let c = Credential::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(basic_header(&c).unwrap(), "Basic dTpw");
    }

    #[test]
    fn credentials_never_show() {
        let mut c = Credentials::new();
        c.insert(
            "https://index.docker.io/v1/",
            Credential::Basic {
                username: "someone".into(),
                password: "hunter2".into(),
            },
        );
        c.insert("ghcr.io", Credential::Token("ghp_secret".into()));
        let shown = format!("{c:?} {:?} {:?}", c.get("docker.io"), c.get("ghcr.io"));
        for secret in ["someone", "hunter2", "ghp_secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(
            shown.contains("docker.io") && shown.contains("ghcr.io"),
            "{shown}"
        );
    }
}
