//! `PveClient`: the generated client behind `trait Hypervisor`, with API-token auth, TLS
//! pinning, one reqwest client with timeouts, error mapping, and fail-over between the
//! nodes of a cluster.
//!
//! A cluster may be reached through several endpoints (one per node). Calls go to the
//! endpoint that last answered; when it does not answer (refused, timed out) the call is
//! repeated on the next one. Answers with a status (401, 403, 500…) are never retried: every
//! node would say the same.

mod calls;
mod connection;

pub use connection::{normalize_endpoint, ApiToken, Connection};

use crate::error::Error;
use crate::generated;
use canopy_tls::{self as tls, error_chain, Fingerprint, Seen, Trust};
use progenitor_client::ResponseValue;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

struct Endpoint {
    origin: String,
    host: String,
    api: generated::Client,
}

/// The production `Hypervisor`.
pub struct PveClient {
    endpoints: Vec<Endpoint>,
    preferred: AtomicUsize,
    seen: Seen,
    trust: Trust,
    timeout: Duration,
    requests: AtomicU64,
}

impl fmt::Debug for PveClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origins: Vec<&str> = self.endpoints.iter().map(|e| e.origin.as_str()).collect();
        f.debug_struct("PveClient")
            .field("endpoints", &origins)
            .finish()
    }
}

impl PveClient {
    pub fn new(conn: Connection) -> Result<Self, Error> {
        if conn.endpoints.is_empty() {
            return Err(Error::Config("no PVE endpoint given".into()));
        }
        let (tls, seen) = tls::client_config(&conn.trust).map_err(Error::Config)?;
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, conn.token.header());
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .default_headers(headers)
            .connect_timeout(conn.connect_timeout)
            .timeout(conn.timeout)
            .user_agent(concat!("canopy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTPS client: {e}")))?;
        let endpoints = conn
            .endpoints
            .iter()
            .map(|e| {
                let url = normalize_endpoint(e)?;
                let origin = url.as_str().trim_end_matches('/').to_string();
                Ok(Endpoint {
                    host: url.host_str().unwrap_or_default().to_string(),
                    api: generated::Client::new_with_client(
                        &format!("{origin}/api2/json"),
                        http.clone(),
                    ),
                    origin,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            endpoints,
            preferred: AtomicUsize::new(0),
            seen,
            trust: conn.trust,
            timeout: conn.timeout,
            requests: AtomicU64::new(0),
        })
    }

    /// HTTP requests sent so far (every attempt, fail-overs included).
    pub fn requests_sent(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The endpoint that answered last.
    pub fn current_endpoint(&self) -> &str {
        &self.endpoints[self.preferred.load(Ordering::Relaxed) % self.endpoints.len()].origin
    }

    /// Run one API call, failing over to the other endpoints when a node does not answer.
    async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, Error>
    where
        F: Fn(generated::Client) -> Fut,
        Fut: Future<Output = Result<ResponseValue<T>, progenitor_client::Error<()>>>,
    {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let ep = &self.endpoints[idx];
            self.requests.fetch_add(1, Ordering::Relaxed);
            match f(ep.api.clone()).await {
                Ok(v) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok(v.into_inner());
                }
                Err(e) => {
                    let err = self.map_error(ep, what, e).await;
                    if !err.is_node_failure() {
                        return Err(err);
                    }
                    tracing::warn!(endpoint = %ep.origin, error = %err, "PVE endpoint failed; trying the next one");
                    last = Some(err);
                }
            }
        }
        Err(last.expect("at least one endpoint"))
    }

    async fn map_error(&self, ep: &Endpoint, what: &str, e: progenitor_client::Error<()>) -> Error {
        use progenitor_client::Error as P;
        let endpoint = ep.origin.clone();
        let what = what.to_string();
        match e {
            P::CommunicationError(e) | P::ResponseBodyError(e) | P::InvalidUpgrade(e) => {
                self.transport_error(ep, what, e)
            }
            P::UnexpectedResponse(resp) => response_error(endpoint, what, resp).await,
            P::ErrorResponse(rv) => Error::Api {
                endpoint,
                what,
                status: rv.status().as_u16(),
                reason: rv.status().canonical_reason().unwrap_or("").into(),
            },
            P::InvalidResponsePayload(_, e) => Error::InvalidResponse {
                endpoint,
                what,
                reason: e.to_string(),
            },
            P::InvalidRequest(msg) | P::Custom(msg) => Error::Config(format!("{what}: {msg}")),
        }
    }

    fn transport_error(&self, ep: &Endpoint, what: String, e: reqwest::Error) -> Error {
        let endpoint = ep.origin.clone();
        if e.is_timeout() {
            return Error::Timeout {
                endpoint,
                what,
                after: self.timeout,
            };
        }
        let chain = error_chain(&e);
        if chain.contains("certificate") || chain.contains("probe only") {
            if let (Trust::Fingerprints(pins), Some(actual)) =
                (&self.trust, self.seen.get(&ep.host))
            {
                if !pins.contains(&actual) {
                    return Error::FingerprintMismatch {
                        endpoint,
                        expected: pins
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(" or "),
                        actual: actual.to_string(),
                    };
                }
            }
            return Error::Untrusted {
                endpoint,
                reason: chain,
            };
        }
        if e.is_decode() || e.is_body() {
            return Error::InvalidResponse {
                endpoint,
                what,
                reason: chain,
            };
        }
        Error::Unreachable {
            endpoint,
            reason: chain,
        }
    }
}

/// Map a non-2xx answer: reason from the status line (PVE puts its message there) or
/// from the body's `message` (newer versions), never the raw body.
async fn response_error(endpoint: String, what: String, resp: reqwest::Response) -> Error {
    let status = resp.status();
    let phrase = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .and_then(|r| std::str::from_utf8(r.as_bytes()).ok())
        .map(str::to_string);
    let body: Option<serde_json::Value> = resp.json().await.ok();
    let message = body
        .as_ref()
        .and_then(|b| b.get("message"))
        .and_then(|m| m.as_str())
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty());
    let reason = message
        .or(phrase)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
    match status.as_u16() {
        401 => Error::Authentication { endpoint, reason },
        403 => Error::forbidden(endpoint, reason),
        s => Error::Api {
            endpoint,
            what,
            status: s,
            reason,
        },
    }
}

/// Connect to `endpoint` and report the certificate fingerprint it presents, without
/// trusting it and without sending any request. For "trust this fingerprint?" prompts.
pub async fn probe_fingerprint(endpoint: &str, timeout: Duration) -> Result<Fingerprint, Error> {
    let url = normalize_endpoint(endpoint)?;
    let host = url.host_str().unwrap_or_default().to_string();
    let (tls, seen) = tls::probe_config();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| Error::Config(format!("cannot build the HTTPS client: {e}")))?;
    let origin = url.as_str().trim_end_matches('/').to_string();
    let result = http.get(format!("{origin}/api2/json/version")).send().await;
    match (seen.get(&host), result) {
        (Some(fp), _) => Ok(fp),
        (None, Err(e)) if e.is_timeout() => Err(Error::Timeout {
            endpoint: origin,
            what: "the TLS handshake".into(),
            after: timeout,
        }),
        (None, Err(e)) => Err(Error::Unreachable {
            endpoint: origin,
            reason: error_chain(&e),
        }),
        (None, Ok(_)) => Err(Error::Untrusted {
            endpoint: origin,
            reason: "the server presented no certificate".into(),
        }),
    }
}
