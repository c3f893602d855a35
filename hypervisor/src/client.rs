//! `PveClient`: the generated client behind `trait Hypervisor`, with API-token auth, TLS
//! pinning, one reqwest client with timeouts, error mapping, and fail-over between the
//! nodes of a cluster.
//!
//! A cluster may be reached through several endpoints (one per node). Calls go to the
//! endpoint that last answered; when it does not answer (refused, timed out) the call is
//! repeated on the next one. Answers with a status (401, 403, 500…) are never retried: every
//! node would say the same.

use crate::error::Error;
use crate::generated;
use crate::tls::{self, Fingerprint, Seen, Trust};
use crate::types::*;
use crate::{GuestKind, Hypervisor, PowerAction, VzdumpMode};
use progenitor_client::ResponseValue;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Url;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// A PVE API token, `USER@REALM!TOKENID=SECRET`. `Display`/`Debug` never show the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    id: String,
    secret: String,
}

impl ApiToken {
    /// `USER@REALM!TOKENID`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret part, for storage by the caller (never log it).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    fn header(&self) -> HeaderValue {
        let mut v = HeaderValue::from_str(&format!("PVEAPIToken={}={}", self.id, self.secret))
            .expect("validated on parse");
        v.set_sensitive(true);
        v
    }
}

impl FromStr for ApiToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::Config(format!(
                "the API token must look like USER@REALM!TOKENID=SECRET ({why})"
            ))
        };
        let (id, secret) = s
            .trim()
            .split_once('=')
            .ok_or_else(|| bad("no '=' before the secret"))?;
        let (user, token_name) = id
            .split_once('!')
            .ok_or_else(|| bad("no '!' before the token id"))?;
        if !user.contains('@') || user.starts_with('@') || user.ends_with('@') {
            return Err(bad("the user needs a realm, e.g. root@pam"));
        }
        if token_name.is_empty() || secret.is_empty() {
            return Err(bad("empty token id or secret"));
        }
        if !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad("only printable ASCII without spaces"));
        }
        Ok(Self {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }
}

impl fmt::Display for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiToken({}=…)", self.id)
    }
}

/// How to reach one cluster (or one standalone node).
#[derive(Clone, Debug)]
pub struct Connection {
    /// One or more node addresses: `https://pve1:8006`, `pve1`, `10.0.0.5:8006`, …
    pub endpoints: Vec<String>,
    pub token: ApiToken,
    pub trust: Trust,
    /// Per request, after the connection is up.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Connection {
    pub fn new(endpoints: Vec<String>, token: ApiToken, trust: Trust) -> Self {
        Self {
            endpoints,
            token,
            trust,
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Normalise what a user types into the API origin: `https://host:8006`.
pub fn normalize_endpoint(input: &str) -> Result<Url, Error> {
    let input = input.trim().trim_end_matches('/');
    let with_scheme = if input.contains("://") {
        input.to_string()
    } else {
        format!("https://{input}")
    };
    let mut url = Url::parse(&with_scheme)
        .map_err(|e| Error::Config(format!("{input:?} is not a PVE address: {e}")))?;
    if url.scheme() != "https" {
        return Err(Error::Config(format!(
            "{input:?}: PVE is only reached over https"
        )));
    }
    if url.host_str().is_none() {
        return Err(Error::Config(format!("{input:?} has no host")));
    }
    if url.port().is_none() {
        url.set_port(Some(8006)).ok();
    }
    url.set_path("");
    url.set_query(None);
    Ok(url)
}

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

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        src = s.source();
    }
    parts.join(": ")
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

fn vmid_str(vmid: u32) -> String {
    vmid.to_string()
}

#[async_trait::async_trait]
impl Hypervisor for PveClient {
    async fn version(&self) -> Result<Version, Error> {
        self.call("GET /version", |c| async move { c.version().await })
            .await
            .map(|r| r.data.unwrap_or_default())
    }

    async fn cluster_status(&self) -> Result<Vec<ClusterStatusEntry>, Error> {
        self.call("GET /cluster/status", |c| async move {
            c.cluster_status().await
        })
        .await
        .map(|r| r.data)
    }

    async fn resources(&self) -> Result<Vec<ClusterResource>, Error> {
        self.call("GET /cluster/resources", |c| async move {
            c.cluster_resources(None).await
        })
        .await
        .map(|r| r.data)
    }

    async fn nodes(&self) -> Result<Vec<NodeListEntry>, Error> {
        self.call("GET /nodes", |c| async move { c.nodes().await })
            .await
            .map(|r| r.data)
    }

    async fn node_apt_updates(&self, node: &str) -> Result<Vec<AptUpdate>, Error> {
        let what = format!("GET /nodes/{node}/apt/update");
        self.call(&what, |c| async move { c.node_apt_updates(node).await })
            .await
            .map(|r| r.data)
    }

    async fn guests(&self, node: &str, kind: GuestKind) -> Result<Vec<GuestListEntry>, Error> {
        let what = format!("GET /nodes/{node}/{}", kind.path());
        self.call(&what, |c| async move {
            match kind {
                GuestKind::Lxc => c.lxc_list(node).await,
                GuestKind::Qemu => c.qemu_list(node).await,
            }
        })
        .await
        .map(|r| r.data)
    }

    async fn lxc_config(&self, node: &str, vmid: u32) -> Result<LxcConfig, Error> {
        let what = format!("GET /nodes/{node}/lxc/{vmid}/config");
        self.call(&what, |c| async move { c.lxc_config(node, vmid).await })
            .await
            .map(|r| r.data.unwrap_or_default())
    }

    async fn lxc_power(&self, node: &str, vmid: u32, action: PowerAction) -> Result<Upid, Error> {
        let what = format!("POST /nodes/{node}/lxc/{vmid}/status/{}", action.as_str());
        self.call(&what, |c| async move {
            match action {
                PowerAction::Start => c.lxc_start(node, vmid).await,
                PowerAction::Shutdown => {
                    c.lxc_shutdown(node, vmid, &generated::types::ShutdownParams::default())
                        .await
                }
                PowerAction::Reboot => c.lxc_reboot(node, vmid).await,
            }
        })
        .await
        .and_then(|r| task_upid(r.data, &what))
    }

    async fn snapshots(&self, node: &str, vmid: u32) -> Result<Vec<Snapshot>, Error> {
        let what = format!("GET /nodes/{node}/lxc/{vmid}/snapshot");
        self.call(&what, |c| async move { c.lxc_snapshots(node, vmid).await })
            .await
            .map(|r| r.data)
    }

    async fn snapshot_create(
        &self,
        node: &str,
        vmid: u32,
        name: &str,
        description: &str,
    ) -> Result<Upid, Error> {
        let what = format!("POST /nodes/{node}/lxc/{vmid}/snapshot");
        let body = generated::types::SnapshotParams {
            snapname: name.to_string(),
            description: Some(description.to_string()).filter(|d| !d.is_empty()),
        };
        let body = &body;
        self.call(&what, |c| async move {
            c.lxc_snapshot_create(node, vmid, body).await
        })
        .await
        .and_then(|r| task_upid(r.data, &what))
    }

    async fn snapshot_rollback(&self, node: &str, vmid: u32, name: &str) -> Result<Upid, Error> {
        let what = format!("POST /nodes/{node}/lxc/{vmid}/snapshot/{name}/rollback");
        self.call(&what, |c| async move {
            c.lxc_snapshot_rollback(node, vmid, name).await
        })
        .await
        .and_then(|r| task_upid(r.data, &what))
    }

    async fn snapshot_delete(&self, node: &str, vmid: u32, name: &str) -> Result<Upid, Error> {
        let what = format!("DELETE /nodes/{node}/lxc/{vmid}/snapshot/{name}");
        self.call(&what, |c| async move {
            c.lxc_snapshot_delete(node, vmid, name).await
        })
        .await
        .and_then(|r| task_upid(r.data, &what))
    }

    async fn vzdump(
        &self,
        node: &str,
        vmid: u32,
        mode: VzdumpMode,
        storage: Option<&str>,
    ) -> Result<Upid, Error> {
        use generated::types::VzdumpParamsMode as M;
        let what = format!("POST /nodes/{node}/vzdump");
        let body = generated::types::VzdumpParams {
            vmid: vmid_str(vmid),
            mode: Some(match mode {
                VzdumpMode::Snapshot => M::Snapshot,
                VzdumpMode::Suspend => M::Suspend,
                VzdumpMode::Stop => M::Stop,
            }),
            storage: storage.map(str::to_string),
            compress: Some("zstd".into()),
            notes_template: Some("canopy: before update of {{guestname}}".into()),
        };
        let body = &body;
        self.call(&what, |c| async move { c.vzdump(node, body).await })
            .await
            .and_then(|r| task_upid(r.data, &what))
    }

    async fn task_status(&self, upid: &Upid) -> Result<TaskStatus, Error> {
        let node = upid_node(upid)?;
        let what = format!("GET /nodes/{node}/tasks/{{upid}}/status");
        let id = upid.0.as_str();
        self.call(&what, |c| async move { c.task_status(node, id).await })
            .await?
            .data
            .ok_or_else(|| Error::InvalidResponse {
                endpoint: self.current_endpoint().to_string(),
                what,
                reason: "no task status in the answer".into(),
            })
    }

    async fn task_log(&self, upid: &Upid) -> Result<Vec<String>, Error> {
        let node = upid_node(upid)?;
        let what = format!("GET /nodes/{node}/tasks/{{upid}}/log");
        let id = upid.0.as_str();
        let mut lines = self
            .call(&what, |c| async move {
                c.task_log(node, id, Some(5000), None).await
            })
            .await?
            .data;
        lines.sort_by_key(|l| l.n);
        Ok(lines.into_iter().map(|l| l.t).collect())
    }
}

fn upid_node(upid: &Upid) -> Result<&str, Error> {
    upid.node()
        .ok_or_else(|| Error::Config(format!("{:?} is not a PVE task id (UPID:node:…)", upid.0)))
}

fn task_upid(data: Option<Upid>, what: &str) -> Result<Upid, Error> {
    data.filter(|u| u.node().is_some())
        .ok_or_else(|| Error::InvalidResponse {
            endpoint: String::new(),
            what: what.to_string(),
            reason: "expected a task UPID in data".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_never_show_the_secret() {
        let t: ApiToken = "root@pam!canopy=3f1c-aa".parse().unwrap();
        assert_eq!(t.id(), "root@pam!canopy");
        assert_eq!(t.to_string(), "root@pam!canopy");
        assert!(!format!("{t:?}").contains("3f1c"));
        for bad in [
            "root@pam=secret",
            "root!x=s",
            "root@pam!x",
            "@pam!x=s",
            "root@pam!=s",
        ] {
            let e = bad.parse::<ApiToken>().unwrap_err().to_string();
            assert!(e.contains("USER@REALM!TOKENID=SECRET"), "{bad}: {e}");
        }
    }

    #[test]
    fn endpoints_normalise_to_https_origins() {
        let ok = |s: &str| normalize_endpoint(s).unwrap().to_string();
        assert_eq!(ok("pve1"), "https://pve1:8006/");
        assert_eq!(
            ok("https://10.0.0.5:8006/api2/json/"),
            "https://10.0.0.5:8006/"
        );
        assert_eq!(ok("127.0.0.1:9443"), "https://127.0.0.1:9443/");
        assert!(normalize_endpoint("http://pve1:8006")
            .unwrap_err()
            .to_string()
            .contains("only reached over https"));
    }
}
