//! The one typed client for Canopy's REST API, used by the agent, the CLI and the tests.
//! Agent delivery and operations (deploys, bulk updates, their event stream) are in
//! [`operations`].

mod actions;
mod admin;
mod docker;
mod operations;

use crate::agent::*;
use crate::auth::*;
use crate::clusters::*;
use crate::commands::{Command, HeartbeatAck, StartAccepted};
use crate::hosts::{Event, EventFilter, Host};
use crate::updates::*;
use crate::{ApiError, CommandId, API_PREFIX};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("server answered {status}: {error}")]
    Api { status: u16, error: ApiError },
    /// The server could not be reached or the body was not what we expect.
    #[error("request to {url} failed: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("server answered {status} with a body that is not JSON: {body}")]
    Garbage { status: u16, body: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } | Self::Garbage { status, .. } => Some(*status),
            Self::Transport { source, .. } => source.status().map(|s| s.as_u16()),
        }
    }
}

/// A client bound to one server and, optionally, one bearer token (a user's access
/// token or an agent token).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// `base` is the server root, e.g. `http://127.0.0.1:8080`. `http` is the one
    /// reqwest client of the caller (with its timeouts and TLS settings).
    pub fn new(http: reqwest::Client, base: impl Into<String>) -> Self {
        Self {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            token: None,
        }
    }

    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn set_token(&mut self, token: impl Into<String>) {
        self.token = Some(token.into());
    }

    /// The bearer token in use, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{}", self.base, API_PREFIX, path)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T, ClientError> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.to_string(),
                source,
            })?;
        if (200..300).contains(&status) {
            serde_json::from_slice(&bytes).map_err(|_| ClientError::Garbage {
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            })
        } else {
            match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(error) => Err(ClientError::Api { status, error }),
                Err(_) => Err(ClientError::Garbage {
                    status,
                    body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                }),
            }
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send(self.http.get(&url), &url).await
    }

    async fn get_query<T: DeserializeOwned, Q: Serialize>(
        &self,
        path: &str,
        q: &Q,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send(self.http.get(&url).query(q), &url).await
    }

    async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send(self.http.post(&url).json(body), &url).await
    }

    async fn put<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send(self.http.put(&url).json(body), &url).await
    }

    async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let url = self.url(path);
        self.send(self.http.delete(&url), &url).await
    }

    // ---- clusters and the tree ----

    pub async fn clusters(&self) -> Result<Vec<Cluster>, ClientError> {
        self.get("/clusters").await
    }

    pub async fn create_cluster(&self, req: &CreateCluster) -> Result<Cluster, ClientError> {
        self.post("/clusters", req).await
    }

    pub async fn probe_cluster(&self, url: &str) -> Result<ProbeResponse, ClientError> {
        let req = ProbeRequest {
            url: url.into(),
            token: None,
            fingerprint: None,
        };
        self.post("/clusters/probe", &req).await
    }

    pub async fn delete_cluster(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        self.delete(&format!("/clusters/{name}")).await
    }

    pub async fn discover_cluster(&self, name: &str) -> Result<DiscoveryReport, ClientError> {
        self.post(
            &format!("/clusters/{name}/discover"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn node_updates(
        &self,
        cluster: &str,
        node: &str,
    ) -> Result<NodeUpdates, ClientError> {
        self.get(&format!("/clusters/{cluster}/nodes/{node}/updates"))
            .await
    }

    /// The whole forest, or the subtrees a selector matches.
    pub async fn tree(&self, selector: Option<&str>) -> Result<TreeResponse, ClientError> {
        self.get_query("/tree", &[("selector", selector)]).await
    }

    /// The tree listed `depth` levels below each answered vertex (`0`: the vertices alone),
    /// rollups over whole subtrees; a vertex whose children were left out has `child_count`.
    pub async fn tree_depth(
        &self,
        selector: Option<&str>,
        depth: u32,
    ) -> Result<TreeResponse, ClientError> {
        let depth = depth.to_string();
        self.get_query(
            "/tree",
            &[("selector", selector), ("depth", Some(depth.as_str()))],
        )
        .await
    }

    pub async fn preview(&self, selector: &str) -> Result<SelectorPreview, ClientError> {
        self.get_query("/tree/preview", &[("selector", selector)])
            .await
    }

    /// Events of the guest at `path` (kept across migrations) and of its agent.
    pub async fn guest_history(&self, path: &str) -> Result<Vec<Event>, ClientError> {
        self.get_query("/tree/history", &[("id", path)]).await
    }

    /// The PVE snapshots of the guest at `path`, newest first.
    pub async fn guest_snapshots(
        &self,
        path: &str,
    ) -> Result<Vec<crate::clusters::GuestSnapshot>, ClientError> {
        self.get_query("/tree/snapshots", &[("id", path)]).await
    }

    // ---- users ----

    pub async fn login(&self, username: &str, password: &str) -> Result<TokenPair, ClientError> {
        self.post(
            "/auth/login",
            &LoginRequest {
                username: username.into(),
                password: password.into(),
            },
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, ClientError> {
        self.post(
            "/auth/refresh",
            &RefreshRequest {
                refresh_token: refresh_token.into(),
            },
        )
        .await
    }

    pub async fn logout(&self, refresh_token: &str) -> Result<serde_json::Value, ClientError> {
        self.post(
            "/auth/logout",
            &RefreshRequest {
                refresh_token: refresh_token.into(),
            },
        )
        .await
    }

    /// Revoke every refresh token of the logged-in user and end their access tokens
    /// (`canopy logout --all`).
    pub async fn logout_all(&self) -> Result<AccountChange, ClientError> {
        self.post("/auth/logout-all", &serde_json::json!({})).await
    }

    /// The logged-in user, as the server knows them now.
    pub async fn me(&self) -> Result<User, ClientError> {
        self.get("/me").await
    }

    /// Change the logged-in user's own password; the answer is a fresh session (every
    /// other one ends).
    pub async fn change_own_password(
        &self,
        current_password: &str,
        new_password: &str,
    ) -> Result<TokenPair, ClientError> {
        self.post(
            "/me/password",
            &ChangePasswordRequest {
                current_password: current_password.into(),
                new_password: new_password.into(),
            },
        )
        .await
    }

    pub async fn users(&self) -> Result<Vec<User>, ClientError> {
        self.get("/users").await
    }

    pub async fn create_user(&self, req: &CreateUserRequest) -> Result<User, ClientError> {
        self.post("/users", req).await
    }

    pub async fn delete_user(&self, username: &str) -> Result<AccountChange, ClientError> {
        self.delete(&format!("/users/{}", path_segment(username)))
            .await
    }

    pub async fn disable_user(&self, username: &str) -> Result<AccountChange, ClientError> {
        self.post(
            &format!("/users/{}/disable", path_segment(username)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn enable_user(&self, username: &str) -> Result<AccountChange, ClientError> {
        self.post(
            &format!("/users/{}/enable", path_segment(username)),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn set_role(&self, username: &str, role: Role) -> Result<AccountChange, ClientError> {
        self.put(
            &format!("/users/{}/role", path_segment(username)),
            &SetRoleRequest { role },
        )
        .await
    }

    /// An admin sets another user's password.
    pub async fn set_password(
        &self,
        username: &str,
        password: &str,
    ) -> Result<AccountChange, ClientError> {
        self.put(
            &format!("/users/{}/password", path_segment(username)),
            &SetPasswordRequest {
                password: password.into(),
            },
        )
        .await
    }

    pub async fn create_registration_token(
        &self,
        req: &CreateRegistrationToken,
    ) -> Result<CreatedRegistrationToken, ClientError> {
        self.post("/registration-tokens", req).await
    }

    pub async fn registration_tokens(&self) -> Result<Vec<RegistrationToken>, ClientError> {
        self.get("/registration-tokens").await
    }

    /// Revoke a registration token: agents can no longer register with it (the record
    /// stays, marked revoked).
    pub async fn revoke_registration_token(
        &self,
        id: crate::RegistrationTokenId,
    ) -> Result<RegistrationToken, ClientError> {
        self.delete(&format!("/registration-tokens/{id}")).await
    }

    pub async fn hosts(&self) -> Result<Vec<Host>, ClientError> {
        self.get("/hosts").await
    }

    pub async fn updates(&self, filter: &UpdateFilter) -> Result<Page<Update>, ClientError> {
        self.get_query("/updates", filter).await
    }

    pub async fn approve(&self, ids: Vec<crate::UpdateId>) -> Result<ApproveResponse, ClientError> {
        self.post("/updates/approve", &UpdateIdsRequest { ids })
            .await
    }

    pub async fn reject(&self, ids: Vec<crate::UpdateId>) -> Result<RejectResponse, ClientError> {
        self.post("/updates/reject", &UpdateIdsRequest { ids })
            .await
    }

    pub async fn command(&self, id: CommandId) -> Result<Command, ClientError> {
        self.get(&format!("/commands/{id}")).await
    }

    pub async fn commands_of_host(&self, host: crate::HostId) -> Result<Vec<Command>, ClientError> {
        self.get(&format!("/hosts/{host}/commands")).await
    }

    /// Confirm a completed dry-run: queues the install. Returns the install command.
    pub async fn confirm(&self, dry_run: CommandId) -> Result<Command, ClientError> {
        self.post(
            &format!("/commands/{dry_run}/confirm"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn cancel(&self, id: CommandId) -> Result<Command, ClientError> {
        self.post(&format!("/commands/{id}/cancel"), &serde_json::json!({}))
            .await
    }

    pub async fn retry(&self, id: CommandId) -> Result<Command, ClientError> {
        self.post(&format!("/commands/{id}/retry"), &serde_json::json!({}))
            .await
    }

    /// One host, whatever its state.
    pub async fn host(&self, host: crate::HostId) -> Result<Host, ClientError> {
        self.get(&format!("/hosts/{host}")).await
    }

    /// Delete a host (admin): its credential is revoked, its history kept.
    pub async fn delete_host(&self, host: crate::HostId) -> Result<Host, ClientError> {
        self.delete(&format!("/hosts/{host}")).await
    }

    /// Queue the repair of the host's interrupted `manager` database.
    pub async fn repair_host(
        &self,
        host: crate::HostId,
        manager: crate::updates::PackageManager,
    ) -> Result<Command, ClientError> {
        self.post(
            &format!("/hosts/{host}/repair"),
            &crate::hosts::RepairRequest { manager },
        )
        .await
    }

    pub async fn scan_now(&self, host: crate::HostId) -> Result<Command, ClientError> {
        self.post(&format!("/hosts/{host}/scan"), &serde_json::json!({}))
            .await
    }

    pub async fn history(
        &self,
        host: Option<crate::HostId>,
    ) -> Result<Vec<VersionChange>, ClientError> {
        match host {
            Some(h) => self.get(&format!("/hosts/{h}/history")).await,
            None => self.get("/history").await,
        }
    }

    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<Event>, ClientError> {
        self.get_query("/events", filter).await
    }

    pub async fn stats(&self) -> Result<UpdateStats, ClientError> {
        self.get("/stats").await
    }

    // ---- agents ----

    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ClientError> {
        self.post("/agent/register", req).await
    }

    pub async fn checkin(&self, req: &CheckinRequest) -> Result<CheckinResponse, ClientError> {
        self.post("/agent/checkin", req).await
    }

    pub async fn upload_report(
        &self,
        report: &ReportUpload,
    ) -> Result<ReportAccepted, ClientError> {
        self.post("/agent/report", report).await
    }

    /// Ask for the go to run `id`: `Ok` = run it; an `Api` error with a 4xx status = never
    /// run it; any other error = ask again.
    pub async fn command_started(&self, id: CommandId) -> Result<StartAccepted, ClientError> {
        self.post(
            &format!("/agent/commands/{id}/started"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn command_heartbeat(&self, id: CommandId) -> Result<HeartbeatAck, ClientError> {
        self.post(
            &format!("/agent/commands/{id}/heartbeat"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn submit_result(
        &self,
        id: CommandId,
        sub: &ResultSubmission,
    ) -> Result<serde_json::Value, ClientError> {
        self.post(&format!("/agent/commands/{id}/result"), sub)
            .await
    }
}

/// `s` percent-encoded for one path segment (`127.0.0.1:22` stays readable).
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The dashboard's browser session (`/auth/session…`): the tokens travel in HttpOnly
/// cookies the browser keeps, so these answer only the user. The caller's HTTP client sends
/// `X-Canopy-CSRF: 1` (the frontend sets it as a default header).
impl Client {
    pub async fn browser_login(
        &self,
        username: &str,
        password: &str,
    ) -> Result<BrowserSession, ClientError> {
        self.post(
            "/auth/session",
            &LoginRequest {
                username: username.into(),
                password: password.into(),
            },
        )
        .await
    }

    pub async fn browser_refresh(&self) -> Result<BrowserSession, ClientError> {
        self.post("/auth/session/refresh", &serde_json::json!({}))
            .await
    }

    pub async fn browser_logout(&self) -> Result<LogoutResponse, ClientError> {
        self.delete("/auth/session").await
    }
}
