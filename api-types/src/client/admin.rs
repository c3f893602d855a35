//! Administration as the dashboard needs it, with typed answers: remove a cluster, the
//! deploy key's public half, forget a pinned SSH host key. (The older untyped calls in
//! [`super::operations`] and the cluster calls stay for the CLI.)

use super::{path_segment, Client, ClientError};
use crate::clusters::{ClusterRemoved, ProbeRequest, ProbeResponse};
use crate::deploy::{HostKeyForgotten, SshPublicKey};

impl Client {
    /// `POST /clusters/probe` with a token: signs in at `url` over a connection pinned to the
    /// `fingerprint` the user confirmed, and lists the nodes the token sees.
    pub async fn check_cluster_token(
        &self,
        url: &str,
        token: &str,
        fingerprint: &str,
    ) -> Result<ProbeResponse, ClientError> {
        let req = ProbeRequest {
            url: url.into(),
            token: Some(token.into()),
            fingerprint: Some(fingerprint.into()),
        };
        self.post("/clusters/probe", &req).await
    }

    /// `DELETE /clusters/{name}`: the cluster, its nodes and guests leave the tree.
    pub async fn remove_cluster(&self, name: &str) -> Result<ClusterRemoved, ClientError> {
        self.delete(&format!("/clusters/{}", path_segment(name)))
            .await
    }

    /// `GET /agents/ssh-key`: the line to add to each PVE node's `authorized_keys`.
    pub async fn deploy_key(&self) -> Result<SshPublicKey, ClientError> {
        self.get("/agents/ssh-key").await
    }

    /// `DELETE /agents/host-keys/{address}`: the next connection pins the key it sees.
    pub async fn unpin_host_key(&self, address: &str) -> Result<HostKeyForgotten, ClientError> {
        self.delete(&format!("/agents/host-keys/{}", path_segment(address)))
            .await
    }
}
