//! Agent delivery and operations: deploy previews and starts, agentless scans, SSH keys,
//! bulk update operations (plan, approve, pause/resume/cancel) and following an operation's
//! server-sent events.

use super::{path_segment, Client, ClientError};
use crate::bulk::{ApproveOperation, UpdateRequest};
use crate::deploy::*;
use crate::OperationId;

impl Client {
    pub async fn deploy_preview(&self, req: &DeployRequest) -> Result<DeployPreview, ClientError> {
        self.get_query(
            "/agents/deploy/preview",
            &[
                ("selector", req.selector.as_str()),
                ("action", req.action.as_str()),
            ],
        )
        .await
    }

    /// Starts a deploy (or uninstall) operation; returns at once with its queued items.
    pub async fn deploy(&self, req: &DeployRequest) -> Result<Operation, ClientError> {
        self.post("/agents/deploy", req).await
    }

    pub async fn agentless_scan(
        &self,
        selector: &str,
    ) -> Result<Vec<AgentlessResult>, ClientError> {
        self.post(
            "/agents/agentless-scan",
            &serde_json::json!({ "selector": selector }),
        )
        .await
    }

    /// The deploy key's public half (`{"public_key": "ssh-ed25519 …"}`).
    pub async fn ssh_key(&self) -> Result<serde_json::Value, ClientError> {
        self.get("/agents/ssh-key").await
    }

    pub async fn host_keys(&self) -> Result<Vec<SshHostKey>, ClientError> {
        self.get("/agents/host-keys").await
    }

    pub async fn forget_host_key(&self, address: &str) -> Result<serde_json::Value, ClientError> {
        self.delete(&format!("/agents/host-keys/{}", path_segment(address)))
            .await
    }

    /// Plans an update of every guest `req.selector` resolves to; returns at once (planning).
    pub async fn start_update(&self, req: &UpdateRequest) -> Result<Operation, ClientError> {
        self.post("/operations/update", req).await
    }

    /// Approves an update operation's plan; 409 when its fingerprint is no longer `fingerprint`.
    pub async fn approve_operation(
        &self,
        id: OperationId,
        fingerprint: &str,
    ) -> Result<Operation, ClientError> {
        let body = ApproveOperation {
            fingerprint: fingerprint.to_string(),
        };
        self.post(&format!("/operations/{id}/approve"), &body).await
    }

    /// `pause`, `resume` or `cancel` an update operation.
    pub async fn control_operation(
        &self,
        id: OperationId,
        verb: &str,
    ) -> Result<Operation, ClientError> {
        self.post(&format!("/operations/{id}/{verb}"), &serde_json::json!({}))
            .await
    }

    pub async fn operations(&self, limit: u32) -> Result<Vec<Operation>, ClientError> {
        self.get_query("/operations", &[("limit", limit)]).await
    }

    /// The newest operations that touched `under` (a guest's, node's or cluster's path id)
    /// or anything below it.
    pub async fn operations_under(
        &self,
        under: &str,
        limit: u32,
    ) -> Result<Vec<Operation>, ClientError> {
        let limit = limit.to_string();
        self.get_query(
            "/operations",
            &[("under", under), ("limit", limit.as_str())],
        )
        .await
    }

    pub async fn operation(&self, id: OperationId) -> Result<Operation, ClientError> {
        self.get(&format!("/operations/{id}")).await
    }

    /// Not on wasm32: a browser follows the stream with its own `EventSource` (the frontend).
    ///
    /// Follows an operation's server-sent events: `on_item` for each item change, until the
    /// `done` event, whose operation is returned. A stream cut short (a client timeout, a
    /// proxy, a server restart) is picked up again: each connection starts with a snapshot.
    #[cfg(not(target_arch = "wasm32"))]
    pub async fn follow_operation(
        &self,
        id: OperationId,
        mut on_item: impl FnMut(&OperationItem),
    ) -> Result<Operation, ClientError> {
        loop {
            match self.follow_once(id, &mut on_item).await {
                Ok(Some(done)) => return Ok(done),
                // The stream ended without `done`: look at the stored state.
                Ok(None) => {
                    let op = self.operation(id).await?;
                    if op.state.is_terminal() {
                        return Ok(op);
                    }
                }
                Err(ClientError::Transport { .. }) => {
                    let op = self.operation(id).await?;
                    if op.state.is_terminal() {
                        return Ok(op);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One connection to the event stream; `Some` when it delivered `done`.
    #[cfg(not(target_arch = "wasm32"))]
    async fn follow_once(
        &self,
        id: OperationId,
        on_item: &mut impl FnMut(&OperationItem),
    ) -> Result<Option<Operation>, ClientError> {
        let url = self.url(&format!("/operations/{id}/events"));
        let mut req = self.http.get(&url).header("accept", "text/event-stream");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let transport = |source| ClientError::Transport {
            url: url.clone(),
            source,
        };
        let mut resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let bytes = resp.bytes().await.map_err(transport)?;
            return Err(match serde_json::from_slice::<crate::ApiError>(&bytes) {
                Ok(error) => ClientError::Api { status, error },
                Err(_) => ClientError::Garbage {
                    status,
                    body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                },
            });
        }
        let mut buf = String::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                let (mut event, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_string();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.strip_prefix(' ').unwrap_or(d));
                    }
                }
                let garbage = |_| ClientError::Garbage {
                    status,
                    body: data.chars().take(500).collect(),
                };
                match event.as_str() {
                    "item" => on_item(&serde_json::from_str(&data).map_err(garbage)?),
                    "snapshot" => {
                        let op: Operation = serde_json::from_str(&data).map_err(garbage)?;
                        op.items.iter().for_each(&mut *on_item);
                    }
                    "done" => return serde_json::from_str(&data).map(Some).map_err(garbage),
                    _ => {}
                }
            }
        }
        Ok(None)
    }
}
