//! A Proxmox VE API simulator: the real `/api2/json` paths over HTTPS on 127.0.0.1, with
//! PVE's wire quirks (0/1 booleans, `a;b` tags, `{"data": …}`, errors in the reason
//! phrase, task UPIDs), token privileges, one TLS listener per node, and failure, latency
//! and hang injection. Tests, the demo and benchmarks talk to it instead of a real cluster.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let file = canopy_pve_sim::SimFile::load("examples/sim/home.toml")?;
//! let sim = canopy_pve_sim::start(file.clusters[0].clone()).await?;
//! println!("{} {} {}", sim.url(), sim.fingerprint(), sim.token());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod auth;
mod config;
mod control;
mod generate;
mod pipeline;
mod reply;
mod routes;
mod server;
mod state;
mod tasks;
mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinHandle;

pub use auth::{role_privs, split_token_id};
pub use config::{
    AclSpec, AptUpdate, ClusterSpec, FailureSpec, GenerateSpec, GuestKind, GuestSpec, NodeSpec,
    NodeTlsSpec, Quirks, SimFile, SnapshotSpec, StorageSpec, TlsSpec, TokenSpec,
};
pub use control::TaskInfo;
pub use server::RequestRecord;
pub use tls::fingerprint_of_der;

use server::Shared;

/// One listener: node name, bound address and leaf certificate fingerprint.
#[derive(Debug, Clone)]
struct Endpoint {
    node: String,
    addr: SocketAddr,
    fingerprint: String,
}

/// A started cluster. Dropping it stops the listeners; `shutdown` also waits for them.
pub struct RunningCluster {
    name: String,
    shared: Arc<Shared>,
    endpoints: Vec<Endpoint>,
    tls: tls::ClusterTls,
    token: String,
    handles: Vec<JoinHandle<()>>,
}

/// Starts every node's HTTPS listener on 127.0.0.1 (fixed `port` or a free one).
pub async fn start(mut spec: ClusterSpec) -> anyhow::Result<RunningCluster> {
    spec.expand()?;
    spec.validate()?;
    let node_ips: Vec<(String, Option<String>)> = spec
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.ip.clone()))
        .collect();
    let cluster_tls = tls::ClusterTls::for_cluster(&node_ips, spec.tls.as_ref())?;

    let mut bound = Vec::new();
    let mut fingerprints = BTreeMap::new();
    for node in &spec.nodes {
        let node_tls = cluster_tls
            .node(&node.name)
            .context("tls material missing")?;
        let (config, fingerprint) = tls::server_config(node_tls)?;
        let listener = server::bind(node.port.unwrap_or(0))
            .await
            .with_context(|| {
                format!(
                    "binding listener for node {} of cluster {}",
                    node.name, spec.name
                )
            })?;
        let addr = listener.local_addr()?;
        fingerprints.insert(node.name.clone(), fingerprint.clone());
        bound.push((
            Endpoint {
                node: node.name.clone(),
                addr,
                fingerprint,
            },
            listener,
            config,
        ));
    }

    let shared = Arc::new(Shared::new(state::State::new(&spec, &fingerprints)));
    let mut endpoints = Vec::new();
    let mut handles = Vec::new();
    for (endpoint, listener, config) in bound {
        handles.push(server::spawn_listener(
            shared.clone(),
            endpoint.node.clone(),
            listener,
            endpoint.addr,
            config,
        ));
        endpoints.push(endpoint);
    }
    let token = spec
        .tokens
        .first()
        .map(|t| format!("{}={}", t.id, t.secret))
        .unwrap_or_default();
    tracing::info!(cluster = %spec.name, nodes = endpoints.len(), guests = spec.guests.len(), "PVE simulator started");
    Ok(RunningCluster {
        name: spec.name,
        shared,
        endpoints,
        tls: cluster_tls,
        token,
        handles,
    })
}

/// Starts every cluster of a file, in order (stopping those already started on error).
pub async fn start_all(file: SimFile) -> anyhow::Result<Vec<RunningCluster>> {
    let mut running = Vec::new();
    for spec in file.clusters {
        running.push(start(spec).await?);
    }
    Ok(running)
}

impl RunningCluster {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `https://127.0.0.1:PORT` of the first online node (the first node if none is online).
    pub fn url(&self) -> String {
        let st = self.shared.lock();
        let online = self
            .endpoints
            .iter()
            .find(|e| st.node(&e.node).is_some_and(|n| n.online));
        let endpoint = online.or(self.endpoints.first());
        endpoint
            .map(|e| format!("https://{}", e.addr))
            .unwrap_or_default()
    }

    /// `https://127.0.0.1:PORT` of `node`'s listener; empty for an unknown node.
    pub fn node_url(&self, node: &str) -> String {
        self.endpoint(node)
            .map(|e| format!("https://{}", e.addr))
            .unwrap_or_default()
    }

    /// `(node, url, fingerprint)` for every node, in file order.
    pub fn endpoints(&self) -> Vec<(String, String, String)> {
        self.endpoints
            .iter()
            .map(|e| {
                (
                    e.node.clone(),
                    format!("https://{}", e.addr),
                    e.fingerprint.clone(),
                )
            })
            .collect()
    }

    /// Fingerprint (`AA:BB:…`) of the certificate served at `url()`.
    pub fn fingerprint(&self) -> String {
        let url = self.url();
        self.endpoints
            .iter()
            .find(|e| format!("https://{}", e.addr) == url)
            .map(|e| e.fingerprint.clone())
            .unwrap_or_default()
    }

    /// Fingerprint of `node`'s certificate.
    pub fn node_fingerprint(&self, node: &str) -> String {
        self.endpoint(node)
            .map(|e| e.fingerprint.clone())
            .unwrap_or_default()
    }

    /// The cluster CA (like `/etc/pve/pve-root-ca.pem`).
    pub fn ca_pem(&self) -> String {
        self.tls.ca_cert_pem.clone()
    }

    /// CA and node certificates/keys, e.g. to start the same cluster again with the same
    /// fingerprints (`ClusterSpec::tls`).
    pub fn tls_material(&self) -> TlsSpec {
        self.tls.to_spec()
    }

    /// The first token of the file as `USER@REALM!TOKENID=SECRET`.
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// Stops all listeners and open connections and waits for the listeners to end.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.send_replace(true);
        for handle in std::mem::take(&mut self.handles) {
            let _ = handle.await;
        }
    }

    fn endpoint(&self, node: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.node == node)
    }
}

impl Drop for RunningCluster {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}
