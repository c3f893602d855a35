//! Registry checks for the whole fleet and the image updates they lead to (docs/design.md
//! §2.7). One check cycle looks at every container every agent reported, asks each
//! (registry, repository, tag) once (`crate::registry`), keeps the answers per (registry,
//! repository, tag, platform) and each registry's budget in the store, and turns them into
//! `docker` update rows per host (`rows`), which then go through the same review, approval
//! and bulk plans as packages. A report with containers is compared with the stored checks
//! at once, without a request; a reference no check has answered yet (a new container) is
//! checked a few seconds later on its own (reports arriving meanwhile join it). A cycle of
//! everything runs every `image_check_interval_secs`, sooner when a registry asked to wait
//! less than that, and on demand (`POST /images/check`).

pub mod rows;

use crate::discovery::Discovery;
use crate::registry::auth::{Credential, Credentials};
use crate::registry::check::{Checker, CheckerOptions};
use crate::registry::report::CheckInput;
use anyhow::{Context, Result};
use canopy_api_types::docker::{
    CheckSummary, ContainerView, ImageCheck, ImageUpdateView, RegistryStatus,
};
use canopy_api_types::updates::{PackageManager, UpdateFilter};
use canopy_api_types::HostId;
use canopy_store::{Actor, HostContainer, Store};
use chrono::Utc;
use rows::{checks_of, host_rows, key_of, CheckKey};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

pub struct Images {
    store: Arc<dyn Store>,
    discovery: Arc<Discovery>,
    checker: Checker,
    interval: Duration,
    /// One cycle at a time; credentials are loaded from the store on the first.
    cycle: tokio::sync::Mutex<bool>,
    /// A report brought a reference no check has answered yet.
    unchecked: tokio::sync::Notify,
    /// A cycle met a `429`: the earliest time its registry may be asked again, for the
    /// scheduler to check again then (not only at the next interval).
    retry_at: std::sync::Mutex<Option<chrono::DateTime<Utc>>>,
    replan: tokio::sync::Notify,
}

/// How long new references wait for others before their check (a burst of reports after a
/// restart or a deploy is one small cycle).
const GATHER_NEW: Duration = Duration::from_secs(5);

impl Images {
    pub fn new(
        store: Arc<dyn Store>,
        discovery: Arc<Discovery>,
        interval_secs: u64,
    ) -> Result<Images> {
        let checker = Checker::new(CheckerOptions::default(), Credentials::new())
            .context("the registry client")?;
        Ok(Images {
            store,
            discovery,
            checker,
            interval: Duration::from_secs(interval_secs),
            cycle: tokio::sync::Mutex::new(false),
            unchecked: tokio::sync::Notify::new(),
            retry_at: std::sync::Mutex::new(None),
            replan: tokio::sync::Notify::new(),
        })
    }

    /// Reads the registries' credentials from the store again (unsealed in memory only).
    pub async fn credentials_changed(&self) {
        match self.credentials().await {
            Ok(c) => self.checker.set_credentials(c),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "registry credentials not loaded"),
        }
    }

    /// What the registries said before this server started: a `429`'s wait still running and
    /// the last budget, so a restart does not ask a registry that said to wait.
    async fn restore_limits(&self) -> Result<()> {
        let mut state = crate::registry::CheckerState::default();
        for r in self.store.list_registries().await? {
            let Some(s) = r.status else { continue };
            let budget = s.remaining.map(|remaining| crate::registry::Budget {
                remaining,
                limit: s.limit,
                window_secs: s.window_secs,
                observed_at: s.checked_at.unwrap_or_else(Utc::now),
            });
            let backoff_until = s.retry_after.filter(|t| *t > Utc::now());
            if budget.is_some() || backoff_until.is_some() {
                state.registries.insert(
                    r.registry,
                    crate::registry::RegistryLimits {
                        backoff_until,
                        budget,
                    },
                );
            }
        }
        self.checker.restore(state);
        Ok(())
    }

    async fn credentials(&self) -> Result<Credentials> {
        let mut out = Credentials::new();
        for r in self.store.list_registries().await? {
            let Some(c) = r.credential else { continue };
            let secret = self
                .discovery
                .sealer()
                .open(&c.secret_sealed)
                .with_context(|| format!("the credentials of registry {}", r.registry))?;
            let credential = match c.kind.as_str() {
                "token" => Credential::Token(secret),
                _ => Credential::Basic {
                    username: c.username.unwrap_or_default(),
                    password: secret,
                },
            };
            out.insert(&r.registry, credential);
        }
        Ok(out)
    }

    /// One check cycle of every container's image now (after one already running).
    pub async fn cycle(&self) -> Result<CheckSummary> {
        self.run(false).await
    }

    /// A cycle of every image, or (`only_new`) of the ones no stored check answers.
    async fn run(&self, only_new: bool) -> Result<CheckSummary> {
        let mut loaded = self.cycle.lock().await;
        if !*loaded {
            self.credentials_changed().await;
            self.restore_limits().await?;
            *loaded = true;
        }
        let all = self.store.list_containers().await?;
        let known = if only_new {
            self.stored_checks().await?
        } else {
            HashMap::new()
        };
        let checked: Vec<&HostContainer> = all
            .iter()
            .filter(|c| {
                key_of(&c.container.image, &c.container.platform)
                    .is_some_and(|k| !known.contains_key(&k))
            })
            .collect();
        let inputs: Vec<CheckInput> = checked
            .iter()
            .map(|c| CheckInput {
                id: format!("{}/{}", c.host_id, c.container.name),
                reference: c.container.image.clone(),
                platform: c.container.platform.clone(),
                repo_digests: c.container.repo_digests.clone(),
            })
            .collect();
        let report = self.checker.check(&inputs).await;
        if let Some(t) = report.retry_at {
            *self.retry_at.lock().expect("retry lock") = Some(t);
            self.replan.notify_one();
        }
        let containers: Vec<_> = checked.iter().map(|c| &c.container).collect();
        let checks = checks_of(&containers, &report.results, report.finished_at);
        let mut registries: Vec<RegistryStatus> = report
            .registries
            .iter()
            .map(|r| RegistryStatus {
                registry: r.registry.clone(),
                remaining: r.budget.as_ref().map(|b| b.remaining),
                limit: r.budget.as_ref().and_then(|b| b.limit),
                window_secs: r.budget.as_ref().and_then(|b| b.window_secs),
                retry_after: r.backoff_until,
                heads: r.requests.heads,
                gets: r.requests.gets,
                authenticated: false,
                checked_at: Some(report.finished_at),
            })
            .collect();
        self.store.save_image_checks(&checks, &registries).await?;
        let updates = self.apply(&all, &checks).await?;
        let errors = checks.iter().filter(|c| c.error.is_some()).count() as u64;
        let authenticated = self.authenticated().await?;
        for r in &mut registries {
            r.authenticated = authenticated.contains_key(&r.registry);
        }
        let summary = CheckSummary {
            containers: checked.len() as u64,
            references: checks.len() as u64,
            heads: registries.iter().map(|r| r.heads).sum(),
            gets: registries.iter().map(|r| r.gets).sum(),
            updates,
            errors,
            registries,
        };
        tracing::info!(
            containers = summary.containers,
            references = summary.references,
            heads = summary.heads,
            gets = summary.gets,
            updates = summary.updates,
            errors = summary.errors,
            "image check cycle"
        );
        Ok(summary)
    }

    /// Every host's rows from `checks` (this cycle's; the stored ones fill in keys it did not
    /// ask), stored; hosts whose rows changed are shown again. Returns the containers behind.
    async fn apply(&self, all: &[HostContainer], fresh: &[ImageCheck]) -> Result<u64> {
        let mut checks = self.stored_checks().await?;
        for c in fresh {
            checks.insert(check_key(c), c.clone());
        }
        let mut by_host: BTreeMap<HostId, Vec<canopy_api_types::docker::Container>> =
            BTreeMap::new();
        for c in all {
            by_host
                .entry(c.host_id)
                .or_default()
                .push(c.container.clone());
        }
        // Hosts with image rows but no containers any more get theirs reconciled too.
        for (h, _) in self.store.open_image_updates(None).await? {
            by_host.entry(h).or_default();
        }
        let mut behind = 0u64;
        for (host, containers) in &by_host {
            let rows = host_rows(containers, &checks);
            behind += containers
                .iter()
                .filter(|c| rows.iter().any(|r| r.package == c.image))
                .count() as u64;
            self.sync(*host, rows).await?;
        }
        Ok(behind)
    }

    async fn sync(
        &self,
        host: HostId,
        rows: Vec<canopy_api_types::updates::PackageUpdate>,
    ) -> Result<()> {
        let out = self
            .store
            .sync_image_updates(host, rows, &Actor::System)
            .await?;
        if out.discovered > 0 || out.reconciled > 0 || out.accepted > 0 {
            self.discovery.host_changed(host).await?;
        }
        Ok(())
    }

    async fn stored_checks(&self) -> Result<HashMap<CheckKey, ImageCheck>> {
        Ok(self
            .store
            .list_image_checks()
            .await?
            .into_iter()
            .map(|c| (check_key(&c), c))
            .collect())
    }

    async fn authenticated(&self) -> Result<HashMap<String, ()>> {
        Ok(self
            .store
            .list_registries()
            .await?
            .into_iter()
            .filter(|r| r.credential.is_some())
            .map(|r| (r.registry, ()))
            .collect())
    }

    /// A host reported its containers: its image rows from the stored checks, no request;
    /// references no check answered yet are checked shortly.
    pub async fn host_reported(&self, host: HostId) -> Result<()> {
        let containers = self.store.host_containers(host).await?;
        let checks = self.stored_checks().await?;
        if containers
            .iter()
            .any(|c| key_of(&c.image, &c.platform).is_some_and(|k| !checks.contains_key(&k)))
        {
            self.unchecked.notify_one();
        }
        let rows = host_rows(&containers, &checks);
        let had_rows = !self.store.open_image_updates(Some(host)).await?.is_empty();
        if rows.is_empty() && !had_rows {
            return Ok(());
        }
        self.sync(host, rows).await
    }

    /// Agentless scans read containers too: each scanned host's image rows, as after a
    /// report.
    pub async fn hosts_scanned(&self, results: &[canopy_api_types::deploy::AgentlessResult]) {
        for host in results.iter().filter_map(|r| r.host_id) {
            if let Err(e) = self.host_reported(host).await {
                tracing::warn!(host = %host, error = %format!("{e:#}"), "image updates not worked out after an agentless scan");
            }
        }
    }

    /// Every container with its place in the tree, its open image update and its check.
    pub async fn containers(&self) -> Result<Vec<ContainerView>> {
        let all = self.store.list_containers().await?;
        let checks = self.stored_checks().await?;
        let tree = self.discovery.tree();
        let mut guest_of: HashMap<String, canopy_inventory::PathId> = HashMap::new();
        for v in tree.iter().filter(|v| v.kind.is_guest()) {
            if let Some(h) = &v.host_id {
                guest_of.insert(h.clone(), v.id.clone());
            }
        }
        let open = self
            .store
            .list_updates(&UpdateFilter {
                manager: Some(PackageManager::Docker),
                per_page: Some(500),
                ..UpdateFilter::default()
            })
            .await?
            .items;
        let mut hostnames: HashMap<HostId, String> = HashMap::new();
        for h in self.store.list_hosts().await? {
            hostnames.insert(h.id, h.hostname);
        }
        Ok(all
            .into_iter()
            .map(|hc| {
                let c = hc.container;
                let id = guest_of
                    .get(&hc.host_id.to_string())
                    .and_then(|g| g.docker(&c.name).ok())
                    .map(|p| p.to_string());
                let update = open
                    .iter()
                    .find(|u| {
                        u.host_id == hc.host_id && u.package == c.image && !u.status.is_closed()
                    })
                    .map(|u| ImageUpdateView {
                        update_id: u.id,
                        status: u.status,
                        from_digest: u.current_version.clone(),
                        to_digest: u.available_version.clone(),
                    });
                let check = key_of(&c.image, &c.platform).and_then(|k| checks.get(&k).cloned());
                ContainerView {
                    id,
                    host_id: hc.host_id,
                    hostname: hostnames.get(&hc.host_id).cloned().unwrap_or_default(),
                    container: c,
                    update,
                    check,
                }
            })
            .collect())
    }

    /// Every registry with its last status (and whether credentials are stored).
    pub async fn registries(&self) -> Result<Vec<RegistryStatus>> {
        Ok(self
            .store
            .list_registries()
            .await?
            .into_iter()
            .map(|r| {
                let mut s = r.status.unwrap_or_default();
                s.registry = r.registry;
                s.authenticated = r.credential.is_some();
                s
            })
            .collect())
    }

    /// Cycles forever: every interval, or sooner when a registry asked to wait less; new
    /// references shortly after they are reported. With an interval of 0, only on demand.
    pub async fn run_forever(self: Arc<Self>) {
        if self.interval.is_zero() {
            return;
        }
        let mut due = tokio::time::Instant::now();
        loop {
            let only_new = tokio::select! {
                _ = tokio::time::sleep_until(due) => false,
                _ = self.replan.notified() => {
                    // A registry asked to wait: check again once it may be asked.
                    if let Some(t) = self.retry_at.lock().expect("retry lock").take() {
                        let wait = (t - Utc::now()).to_std().unwrap_or_default();
                        due = due.min(tokio::time::Instant::now() + wait);
                    }
                    continue;
                }
                _ = self.unchecked.notified() => {
                    tokio::time::sleep(GATHER_NEW).await;
                    true
                }
            };
            if only_new {
                if let Err(e) = self.run(true).await {
                    tracing::error!(error = %format!("{e:#}"), "checking new images failed");
                }
                continue; // the full cycle keeps its time
            }
            if let Err(e) = self.cycle().await {
                tracing::error!(error = %format!("{e:#}"), "image check cycle failed");
            }
            // A 429 in that cycle brought `due` forward again through `replan`.
            due = tokio::time::Instant::now() + self.interval.max(Duration::from_secs(1));
        }
    }
}

fn check_key(c: &ImageCheck) -> CheckKey {
    (
        c.registry.clone(),
        c.repository.clone(),
        c.tag.clone(),
        c.platform.clone(),
    )
}
