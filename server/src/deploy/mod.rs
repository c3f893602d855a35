//! Agent delivery (docs/design.md §2.2): a deploy is an operation addressed by selector, with one
//! item per running LXC below it (and VMs configured for direct SSH). Each item SSHes to the
//! guest's PVE node and works through `pct exec` / `pct push`, or SSHes into the guest, and
//! runs the idempotent steps of [`steps`]. Progress is data: every item change is written to
//! the store and published to the operation's stream (SSE).
//!
//! Concurrency: at most `concurrency` guests at once, and `per_node_concurrency` per node, so
//! one node's sshd and disk are not flooded. One dead node fails only its own items. One
//! operation at a time works on a guest: another one's item waits, queued, with the step
//! [`guest_lock::WAITING_STEP`], until the first one's item has ended.

pub mod address;
pub mod agentless;
mod enrol;
mod keys;
mod plan;
pub mod shell;
pub mod ssh;
pub mod steps;

use crate::discovery::Discovery;
use crate::error::{Error, Result};
use crate::operations::{guest_lock, record, Engine, Slots};
use crate::settings::{DeploySettings, Settings};
use canopy_api_types::deploy::{
    DeployAction, DeployPreview, DeployRequest, ItemState, Operation, OperationState,
};
use canopy_api_types::hosts::HostState;
use canopy_api_types::OperationId;
use canopy_store::{Actor, ItemUpdate, NewOperation, Store};
use plan::{Planned, Reach};
use shell::Shell;
use ssh::{Ssh, SshTarget};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use steps::{AgentBinary, Done, Job};

pub use keys::public_key;

pub struct Deployer {
    store: Arc<dyn Store>,
    discovery: Arc<Discovery>,
    settings: DeploySettings,
    /// The certificate this server serves, pinned by the agents it deploys (https only).
    server_fingerprint: Option<canopy_tls::Fingerprint>,
    data_dir: PathBuf,
    agent: Mutex<Option<Arc<AgentBinary>>>,
    engine: Arc<Engine>,
    staging: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    slots: Slots,
}

impl std::fmt::Debug for Deployer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployer").finish_non_exhaustive()
    }
}

impl Deployer {
    pub fn new(
        store: Arc<dyn Store>,
        discovery: Arc<Discovery>,
        settings: &Settings,
        server_fingerprint: Option<canopy_tls::Fingerprint>,
        engine: Arc<Engine>,
    ) -> Self {
        Self {
            store,
            discovery,
            slots: Slots::new(
                settings.deploy.concurrency,
                settings.deploy.per_node_concurrency,
            ),
            settings: settings.deploy.clone(),
            server_fingerprint,
            data_dir: settings.data_dir.clone(),
            agent: Mutex::new(None),
            engine,
            staging: Mutex::new(HashMap::new()),
        }
    }

    /// The SSH private key: configured, or `DATA_DIR/ssh/id_ed25519` (generated when missing).
    pub fn key_file(&self) -> PathBuf {
        keys::key_file(&self.settings, &self.data_dir)
    }

    /// What an operation would touch, without touching it.
    pub async fn preview(&self, req: &DeployRequest) -> Result<DeployPreview> {
        Ok(
            plan::plan(&self.discovery, self.store.as_ref(), &self.settings, req)
                .await?
                .0,
        )
    }

    /// Records the operation and starts its items in the background.
    pub async fn start(self: &Arc<Self>, req: DeployRequest, actor: Actor) -> Result<Operation> {
        if req.action == DeployAction::Deploy && self.settings.server_url.trim().is_empty() {
            return Err(Error::Validation(
                "deploy.server_url is not set: agents need the URL they reach this server at \
                 (CANOPY_DEPLOY_SERVER_URL or [deploy] server_url)"
                    .into(),
            ));
        }
        if req.action == DeployAction::Deploy
            && self.server_fingerprint.is_some()
            && self.settings.server_url.trim().starts_with("http://")
        {
            return Err(Error::Validation(format!(
                "deploy.server_url is {} but this server speaks HTTPS: use https://",
                self.settings.server_url.trim()
            )));
        }
        let agent = match req.action {
            DeployAction::Deploy => Some(self.agent_binary()?),
            DeployAction::Uninstall => None,
        };
        keys::ensure_key(&self.key_file()).map_err(Error::internal)?;
        let (preview, planned) =
            plan::plan(&self.discovery, self.store.as_ref(), &self.settings, &req).await?;
        let op = self
            .store
            .create_operation(
                NewOperation {
                    id: OperationId::new(),
                    action: req.action.as_str().into(),
                    selector: req.selector.clone(),
                    items: planned.iter().map(|p| p.item.clone()).collect(),
                    skipped: preview.skipped.clone(),
                    created_at: chrono::Utc::now(),
                    state: canopy_api_types::deploy::OperationState::Running,
                    update: None,
                },
                &actor,
            )
            .await?;
        self.engine.open(op.id);
        let me = self.clone();
        let id = op.id;
        tokio::spawn(async move { me.run(id, req.action, agent, planned, actor).await });
        Ok(op)
    }

    /// The agent binary to push, read and checksummed once.
    fn agent_binary(&self) -> Result<Arc<AgentBinary>> {
        let mut slot = self.agent.lock().expect("agent lock");
        if let Some(a) = slot.as_ref() {
            return Ok(a.clone());
        }
        let a = Arc::new(
            keys::agent_binary(&self.settings).map_err(|e| Error::Validation(format!("{e:#}")))?,
        );
        *slot = Some(a.clone());
        Ok(a)
    }

    async fn run(
        self: Arc<Self>,
        id: OperationId,
        action: DeployAction,
        agent: Option<Arc<AgentBinary>>,
        planned: Vec<Planned>,
        actor: Actor,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut targets = HashMap::new();
        for p in planned {
            let me = self.clone();
            let (agent, actor) = (agent.clone(), actor.clone());
            let target = p.item.target.clone();
            let task = tasks.spawn(async move { me.run_item(id, action, agent, p, &actor).await });
            targets.insert(task.id(), target);
        }
        let (mut ok, mut failed, mut unrecorded) = (0usize, 0usize, 0usize);
        while let Some(r) = tasks.join_next_with_id().await {
            match r {
                Ok((_, Some(true))) => ok += 1,
                Ok((_, Some(false))) => failed += 1,
                Ok((_, None)) => unrecorded += 1,
                // A task that panicked wrote no result: record that it failed.
                Err(e) => {
                    let target = targets.get(&e.id()).cloned().unwrap_or_default();
                    let up = ItemUpdate::failed(
                        format!("the deploy of this guest stopped unexpectedly: {e}"),
                        chrono::Utc::now(),
                    );
                    let mut pause = record::backoff("an item's failure");
                    let stream = self.engine.stream(id);
                    match record::item_end(
                        self.store.as_ref(),
                        &stream,
                        id,
                        &target,
                        up,
                        &actor,
                        &mut pause,
                    )
                    .await
                    {
                        Some(_) => failed += 1,
                        None => unrecorded += 1,
                    }
                }
            }
        }
        if unrecorded > 0 {
            // Ended, its unfinished items would stay `running` for ever; left running, the
            // next start fails them together.
            tracing::error!(operation = %id, unrecorded, "items' results could not be recorded; the operation stays running until the next start fails it");
        } else {
            let state = match (ok, failed) {
                (_, 0) => OperationState::Succeeded,
                (0, _) => OperationState::Failed,
                _ => OperationState::Partial,
            };
            let mut pause = record::backoff("the end of the operation");
            record::operation_end(self.store.as_ref(), id, state, &mut pause).await;
        }
        self.engine.close(id);
        tracing::info!(operation = %id, ok, failed, unrecorded, "deploy operation finished");
    }

    /// One item, start to end: whether it succeeded, `None` when its end could not be
    /// recorded.
    async fn run_item(
        &self,
        id: OperationId,
        action: DeployAction,
        agent: Option<Arc<AgentBinary>>,
        p: Planned,
        actor: &Actor,
    ) -> Option<bool> {
        let target = p.item.target.clone();
        // The guest before any slot: an item waiting for its guest holds none.
        let _guest = self.guest(Some(id), &p, actor).await;
        let _slots = self.slots.acquire(&p.node_key()).await;
        let (step_tx, writer) = {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
            let store = self.store.clone();
            let streams = self.engine.stream(id);
            let (target, actor) = (target.clone(), actor.clone());
            let writer = tokio::spawn(async move {
                while let Some(step) = rx.recv().await {
                    let up = ItemUpdate::running(step, chrono::Utc::now());
                    let _ = crate::operations::publish(
                        store.as_ref(),
                        &streams,
                        id,
                        &target,
                        up,
                        &actor,
                    )
                    .await;
                }
            });
            (tx, writer)
        };
        let step = |s: &'static str| {
            let _ = step_tx.send(s);
        };
        let result = self
            .item_work(action, agent.as_deref(), &p, &step, actor)
            .await;
        drop(step_tx);
        // Every step note is written before the result.
        let _ = writer.await;
        let up = match &result {
            Ok(done) => ItemUpdate {
                state: ItemState::Succeeded,
                step: None,
                outcome: Some(done.outcome),
                message: done.message.clone(),
                host_id: done.host_id,
                run_as: done.run_as.clone(),
                at: chrono::Utc::now(),
                event: None,
                update: None,
            },
            Err(e) => ItemUpdate::failed(format!("{e:#}"), chrono::Utc::now()),
        };
        let stream = self.engine.stream(id);
        let mut pause = record::backoff("an item's result");
        let written = record::item_end(
            self.store.as_ref(),
            &stream,
            id,
            &target,
            up,
            actor,
            &mut pause,
        )
        .await?;
        Some(written == record::Written::Result && result.is_ok())
    }

    async fn item_work(
        &self,
        action: DeployAction,
        agent: Option<&AgentBinary>,
        p: &Planned,
        step: &(dyn Fn(&'static str) + Sync),
        actor: &Actor,
    ) -> anyhow::Result<Done> {
        step("connect");
        let shell = self.shell(p).await?;
        if let Some(status) = shell.pct_status().await? {
            if status != "running" {
                anyhow::bail!("the guest is {status} (it is never started unasked)");
            }
        }
        match (action, agent) {
            (DeployAction::Uninstall, _) => {
                let done = steps::uninstall(&shell, step).await?;
                self.archive_agent_host(p, actor).await?;
                Ok(done)
            }
            (DeployAction::Deploy, Some(agent)) => {
                let ca = match &self.settings.server_ca_file {
                    Some(f) => Some(std::fs::read_to_string(f).map_err(|e| {
                        anyhow::anyhow!("cannot read deploy.server_ca_file {}: {e}", f.display())
                    })?),
                    None => None,
                };
                let enrol = enrol::ServerEnrolment {
                    store: self.store.clone(),
                    timeout: Duration::from_secs(self.settings.checkin_timeout_secs.max(1)),
                };
                let server_url = self.settings.server_url.trim().trim_end_matches('/');
                let job = Job {
                    shell: &shell,
                    agent,
                    guest: p.item.guest_id,
                    server_url,
                    // A configured CA wins; otherwise agents pin this server's own certificate.
                    server_fingerprint: self
                        .server_fingerprint
                        .filter(|_| ca.is_none() && server_url.starts_with("https://")),
                    ca_pem: ca.as_deref(),
                    enrol: &enrol,
                };
                steps::deploy(&job, step).await
            }
            (DeployAction::Deploy, None) => anyhow::bail!("no agent binary"),
        }
    }

    /// The guest's agent is gone: its host is archived (credential revoked, detached, history
    /// kept) and the guest goes back to agentless scanning.
    async fn archive_agent_host(&self, p: &Planned, actor: &Actor) -> anyhow::Result<()> {
        let guest = canopy_inventory::Selector::parse(&p.item.target)
            .map_err(|e| anyhow::anyhow!("target {}: {e}", p.item.target))?;
        for id in self.discovery.hosts_under(&guest) {
            let agent_host = self
                .store
                .get_host(id)
                .await?
                .is_some_and(|h| !h.agentless && h.state == HostState::Active);
            if agent_host {
                self.store
                    .retire_host(id, HostState::Archived, actor, chrono::Utc::now())
                    .await?;
                self.discovery.host_changed(id).await?;
            }
        }
        Ok(())
    }

    /// Connects to whatever reaches the guest.
    async fn shell(&self, p: &Planned) -> anyhow::Result<Shell> {
        let timeout = Duration::from_secs(self.settings.command_timeout_secs.max(1));
        let connect = Duration::from_secs(self.settings.connect_timeout_secs.max(1));
        let actor = Actor::System;
        match &p.reach {
            Reach::Node {
                address: Err(why), ..
            } => anyhow::bail!("{why}"),
            Reach::Node {
                address: Ok(address),
                ..
            } => {
                let address = address.to_string();
                let target = SshTarget {
                    address: address.clone(),
                    user: self.settings.ssh_user.clone(),
                    key_file: self.key_file(),
                };
                let ssh = Ssh::connect(&target, connect, self.store.as_ref(), &actor).await?;
                let staging = self
                    .staging
                    .lock()
                    .expect("staging lock")
                    .entry(address.clone())
                    .or_default()
                    .clone();
                Ok(Shell::pct(ssh, p.item.vmid, staging, timeout))
            }
            Reach::Direct(d) => {
                let target = SshTarget {
                    address: d.address.to_string(),
                    user: d.user.clone(),
                    key_file: d.key_file.clone().unwrap_or_else(|| self.key_file()),
                };
                let ssh = Ssh::connect(&target, connect, self.store.as_ref(), &actor).await?;
                Ok(Shell::direct(ssh, &d.user, timeout))
            }
        }
    }

    /// The guest of `p`, once no other operation works on it. While it waits, its item (in
    /// operation `id`, or none for an agentless scan) stays queued and says so.
    async fn guest(
        &self,
        id: Option<OperationId>,
        p: &Planned,
        actor: &Actor,
    ) -> guest_lock::GuestGuard {
        match self.engine.guests.try_lock(&p.guest_key) {
            Ok(guard) => guard,
            Err(wait) => {
                if let Some(id) = id {
                    let up = ItemUpdate {
                        state: ItemState::Queued,
                        step: Some(guest_lock::WAITING_STEP.into()),
                        outcome: None,
                        message: None,
                        host_id: None,
                        run_as: None,
                        at: chrono::Utc::now(),
                        event: None,
                        update: None,
                    };
                    let _ = self
                        .engine
                        .publish(self.store.as_ref(), id, &p.item.target, up, actor)
                        .await;
                }
                wait.wait().await
            }
        }
    }
}
