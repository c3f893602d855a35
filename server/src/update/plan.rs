//! The first phase of an update operation: which guests, and exactly what each one gets.
//! Targets come from the selector (templates, stopped guests — never started —, guests whose
//! agent is missing or offline are skipped with the reason); each target is scanned and
//! dry-run in parallel, and its item keeps the plan: packages from → to, security flags, new
//! dependencies, removals, what is left out and why. The plan's fingerprint covers every guest.

use super::commands::failure_text;
use super::targets::Targets;
use super::{detail_of, Updater};
use crate::error::{Error, Result};
use canopy_api_types::bulk::{
    GuestPlan, LeftOut, NodeTotals, PlanPackage, UpdateItemDetail, UpdateOptions,
};
use canopy_api_types::clusters::SkippedTarget;
use canopy_api_types::commands::CommandStatus;
use canopy_api_types::deploy::{DeployOutcome, ItemState, OperationItem, OperationState};
use canopy_api_types::updates::{PackageManager, Severity, Update, UpdateFilter, UpdateStatus};
use canopy_api_types::{CorrelationId, HostId, OperationId};
use canopy_store::events;
use canopy_store::{Actor, ItemUpdate};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// Options that cannot work are refused before anything is recorded.
pub(super) fn check_options(o: &UpdateOptions) -> Result<()> {
    for p in &o.exclude {
        let ok = !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.:_*".contains(c));
        if !ok {
            return Err(Error::Validation(format!(
                "exclude: '{p}' is not a package name or a * glob"
            )));
        }
    }
    if let Some(st) = &o.backup_storage {
        // PVE's `pve-storage-id`.
        let b = st.as_bytes();
        let ok = b.len() >= 2
            && b[0].is_ascii_lowercase()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"-_.".contains(c));
        if !ok {
            return Err(Error::Validation(format!(
                "backup_storage: '{st}' is not a PVE storage id"
            )));
        }
    }
    for c in &o.checks {
        use canopy_api_types::bulk::HealthCheck;
        match c {
            HealthCheck::Http { url, .. }
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                return Err(Error::Validation(format!(
                    "check: '{url}' is not an http:// or https:// URL"
                )))
            }
            HealthCheck::Tcp { address } if !address.contains(':') => {
                return Err(Error::Validation(format!(
                    "check: tcp '{address}' needs HOST:PORT"
                )))
            }
            HealthCheck::Command { argv } if argv.is_empty() => {
                return Err(Error::Validation(
                    "check: a command check needs a program".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// `*` globs on package names.
pub(super) fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// The snapshot name of an operation: PVE's `pve-configid` rules (a letter first, at most 40).
pub(super) fn snapshot_name(op: OperationId) -> String {
    let hex = op.0.simple().to_string();
    format!("canopy-{}", &hex[..12])
}

/// SHA-256 over a guest's pinned set.
pub(super) fn guest_fingerprint(packages: &[PlanPackage], removals: &[String]) -> String {
    let mut h = Sha256::new();
    for p in packages {
        h.update(format!(
            "{}|{}|{}|{}\n",
            p.manager.map(|m| m.as_str()).unwrap_or(""),
            p.package,
            p.from_version.as_deref().unwrap_or(""),
            p.to_version
        ));
    }
    for r in removals {
        h.update(format!("-{r}\n"));
    }
    hex::encode(h.finalize())
}

/// SHA-256 over every planned guest's fingerprint, in item order.
pub(super) fn operation_fingerprint(items: &[OperationItem]) -> String {
    let mut h = Sha256::new();
    for i in items {
        if let Some(p) = i.update.as_ref().and_then(|d| d.plan.as_ref()) {
            h.update(format!("{}={}\n", i.target, p.fingerprint));
        }
    }
    hex::encode(h.finalize())
}

/// Totals per node of the planned guests.
pub(super) fn per_node(items: &[OperationItem]) -> Vec<NodeTotals> {
    let mut by: BTreeMap<String, NodeTotals> = BTreeMap::new();
    for i in items {
        let Some(plan) = i.update.as_ref().and_then(|d| d.plan.as_ref()) else {
            continue;
        };
        let t = by.entry(i.node.clone()).or_insert_with(|| NodeTotals {
            node: i.node.clone(),
            guests: 0,
            packages: 0,
            security: 0,
            reboots: 0,
        });
        t.guests += 1;
        t.packages += plan.packages.len() as u32;
        t.security += plan
            .packages
            .iter()
            .filter(|p| p.severity == Some(Severity::Security))
            .count() as u32;
        t.reboots += u32::from(plan.reboot_required);
    }
    by.into_values().collect()
}

impl Updater {
    /// Under `--snapshot required` without a backup storage, guests whose storage cannot
    /// snapshot (PVE's `…/feature?feature=snapshot`) are skipped with that reason before
    /// anything else. A
    /// guest PVE cannot answer for stays: its snapshot step fails before anything changes.
    pub(super) async fn keep_snapshot_capable(&self, targets: &mut Targets) {
        let checks = targets.items.iter().map(|i| async move {
            let cluster = i.target.split('/').nth(1).unwrap_or_default();
            let pve = self.discovery.cluster_client(cluster).await.ok()?;
            use canopy_hypervisor::Hypervisor;
            let kind = super::pve::guest_kind(&i.target);
            pve.can_snapshot(&i.node, kind, i.vmid).await.ok()
        });
        let answers = futures::future::join_all(checks).await;
        let mut kept = Vec::new();
        for (item, can) in std::mem::take(&mut targets.items).into_iter().zip(answers) {
            if can == Some(false) {
                targets.skipped.push(SkippedTarget {
                    id: item.target.clone(),
                    reason: "no snapshot possible (its storage cannot snapshot), the snapshot \
                             is required and no --backup-storage was given"
                        .into(),
                });
            } else {
                kept.push(item);
            }
        }
        targets.items = kept;
    }

    /// Plans every item without a plan (all at once: scans and dry-runs change nothing), then
    /// waits for an approval.
    pub(super) async fn planner(self: std::sync::Arc<Self>, id: OperationId, actor: Actor) {
        self.planning.lock().expect("planning lock").insert(id);
        if let Err(e) = self.plan_all(id, &actor).await {
            tracing::error!(operation = %id, error = %e, "planning failed");
        }
        self.planning.lock().expect("planning lock").remove(&id);
    }

    async fn plan_all(self: &std::sync::Arc<Self>, id: OperationId, actor: &Actor) -> Result<()> {
        let op = self.get(id).await?;
        let options = op.update.clone().unwrap_or_default().options;
        let mut tasks = tokio::task::JoinSet::new();
        for item in op.items.iter().filter(|i| !i.state.is_terminal()) {
            if item.update.as_ref().is_some_and(|d| d.plan.is_some()) {
                continue;
            }
            let me = self.clone();
            let (item, options, actor) = (item.clone(), options.clone(), actor.clone());
            tasks.spawn(async move { me.plan_item(id, &item, &options, &actor).await });
        }
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!(operation = %id, error = %e, "a guest could not be planned");
            }
        }
        self.planned(id, actor).await
    }

    /// Every guest is planned (or failed): the operation waits for an approval, or ends when
    /// there is nothing to approve.
    pub(super) async fn planned(&self, id: OperationId, actor: &Actor) -> Result<()> {
        let op = self.get(id).await?;
        if op.state == OperationState::Cancelling {
            return self.finish_cancelled(id, actor).await;
        }
        let mut detail = op.update.clone().unwrap_or_default();
        detail.fingerprint = Some(operation_fingerprint(&op.items));
        detail.per_node = per_node(&op.items);
        // The guests waiting for the approval: planned, not ended (up to date or failed).
        let guests = op.items.iter().filter(|i| !i.state.is_terminal()).count();
        let fp = detail.fingerprint.clone();
        self.transition(
            id,
            &[op.state],
            OperationState::AwaitingApproval,
            Some(detail),
            events::OPERATION_PLANNED,
            serde_json::json!({"operation": id, "guests": guests, "fingerprint": fp}),
            actor,
        )
        .await?;
        if guests == 0 {
            // Nothing to install anywhere: every guest is up to date or failed to plan.
            let state = super::execute::final_state(&self.get(id).await?);
            let mut pause = crate::operations::record::backoff("the end of the operation");
            crate::operations::record::operation_end(self.store.as_ref(), id, state, &mut pause)
                .await;
            self.ended(id);
        }
        Ok(())
    }

    /// Scan, choose, dry-run: the item keeps its plan, or ends (up to date, failed).
    pub(super) async fn plan_item(
        &self,
        id: OperationId,
        item: &OperationItem,
        options: &UpdateOptions,
        actor: &Actor,
    ) -> Result<()> {
        let mut detail = detail_of(item);
        match self.make_plan(id, item, options, &mut detail, actor).await {
            Ok(Some(plan)) => {
                let packages = plan.packages.len();
                detail.plan = Some(plan);
                let mut up = ItemUpdate::running("planned", chrono::Utc::now());
                up.state = ItemState::Queued;
                up.update = Some(detail);
                up.event = Some(step_event(
                    id,
                    "plan",
                    "done",
                    &format!("{packages} packages"),
                ));
                self.item(id, item, up, actor).await?;
            }
            Ok(None) => {
                let mut up = ItemUpdate::running("planned", chrono::Utc::now());
                up.state = ItemState::Succeeded;
                up.step = None;
                up.outcome = Some(DeployOutcome::Unchanged);
                up.message = Some(match detail.plan.as_ref() {
                    Some(p) if !p.left_out.is_empty() => {
                        format!("nothing to install ({} left out)", p.left_out.len())
                    }
                    _ => "up to date: nothing to install".into(),
                });
                up.update = Some(detail);
                self.item(id, item, up, actor).await?;
            }
            Err(why) => {
                let mut up =
                    ItemUpdate::failed(format!("planning failed: {why:#}"), chrono::Utc::now());
                up.update = Some(detail);
                self.item(id, item, up, actor).await?;
            }
        }
        Ok(())
    }

    /// The guest's plan; `None` when there is nothing to install (the left-out updates are
    /// kept in `detail.plan` then).
    async fn make_plan(
        &self,
        id: OperationId,
        item: &OperationItem,
        options: &UpdateOptions,
        detail: &mut UpdateItemDetail,
        actor: &Actor,
    ) -> anyhow::Result<Option<GuestPlan>> {
        let host = item
            .host_id
            .ok_or_else(|| anyhow::anyhow!("the guest has no agent host"))?;
        let mut up = ItemUpdate::running("plan: scan", chrono::Utc::now());
        up.event = Some(step_event(id, "plan", "started", "scan and dry-run"));
        self.item(id, item, up, actor).await?;
        self.scan(id, host, actor).await?;
        let rows = self.open_updates(host).await?;
        let (chosen, left_out) = choose(&rows, options, &detail.images_only);
        let reboot_required = self
            .store
            .get_host(host)
            .await?
            .is_some_and(|h| h.reboot_required);
        if chosen.is_empty() {
            detail.plan = Some(GuestPlan {
                left_out,
                reboot_required,
                ..Default::default()
            });
            return Ok(None);
        }
        self.item(
            id,
            item,
            ItemUpdate::running("plan: dry-run", chrono::Utc::now()),
            actor,
        )
        .await?;
        let ids: Vec<_> = chosen.iter().map(|u| u.id).collect();
        let outcome = self
            .store
            .approve_updates(&ids, CorrelationId(id.0), self.timeouts.dry_run, actor)
            .await?;
        let Some(cmd) = outcome.commands.first() else {
            let why: Vec<String> = outcome.skipped.iter().map(|(_, w)| w.clone()).collect();
            anyhow::bail!("nothing could be approved: {}", why.join("; "));
        };
        self.wakeups.wake(host);
        detail.dry_run = Some(cmd.id);
        let cap = Duration::from_secs(u64::from(self.timeouts.dry_run) + 120);
        let done = self.wait_command(cmd.id, cap).await?;
        let result = done
            .result
            .as_ref()
            .filter(|_| done.status == CommandStatus::Completed)
            .ok_or_else(|| anyhow::anyhow!("the dry-run failed: {}", failure_text(&done)))?;
        let severity: HashMap<&str, Severity> = rows
            .iter()
            .map(|u| (u.package.as_str(), u.severity))
            .collect();
        let packages: Vec<PlanPackage> = result
            .planned
            .iter()
            .map(|p| PlanPackage {
                package: p.package.clone(),
                manager: p.manager,
                from_version: p.from_version.clone(),
                to_version: p.to_version.clone(),
                severity: severity.get(p.package.as_str()).copied(),
                requested: p.requested,
                containers: p.containers.clone(),
            })
            .collect();
        if let Some(p) = packages
            .iter()
            .find(|p| options.exclude.iter().any(|x| glob_match(x, &p.package)))
        {
            anyhow::bail!(
                "the dry-run would also install {} {}, which this operation excludes",
                p.package,
                p.to_version
            );
        }
        let fingerprint = guest_fingerprint(&packages, &result.removed);
        Ok(Some(GuestPlan {
            packages,
            removals: result.removed.clone(),
            left_out,
            reboot_required,
            snapshot: None,
            fingerprint,
        }))
    }

    /// The host's updates that are not installed, rejected or gone.
    pub(super) async fn open_updates(&self, host: HostId) -> anyhow::Result<Vec<Update>> {
        let mut out = Vec::new();
        for page in 1.. {
            let filter = UpdateFilter {
                host_id: Some(host),
                page: Some(page),
                per_page: Some(UpdateFilter::MAX_PER_PAGE),
                ..Default::default()
            };
            let got = self.store.list_updates(&filter).await?;
            let n = got.items.len();
            out.extend(got.items.into_iter().filter(|u| {
                matches!(
                    u.status,
                    UpdateStatus::Pending
                        | UpdateStatus::Failed
                        | UpdateStatus::AwaitingConfirmation
                )
            }));
            if n < UpdateFilter::MAX_PER_PAGE as usize {
                break;
            }
        }
        Ok(out)
    }
}

/// Which of a guest's updates the operation installs, and the others with the reason.
/// The rows a guest's plan takes, and the ones it leaves out with the reason; `images_only`
/// non-empty: only image updates of those references (the selector named containers).
pub(super) fn choose<'a>(
    rows: &'a [Update],
    o: &UpdateOptions,
    images_only: &[String],
) -> (Vec<&'a Update>, Vec<LeftOut>) {
    let mut chosen = Vec::new();
    let mut left = Vec::new();
    for u in rows {
        let selected = images_only.is_empty()
            || (u.manager == PackageManager::Docker && images_only.contains(&u.package));
        let reason = if !selected {
            Some("not selected (the selector names containers)")
        } else if u.held {
            Some("held")
        } else if o.exclude.iter().any(|x| glob_match(x, &u.package)) {
            Some("excluded")
        } else if o.security_only && u.severity != Severity::Security {
            Some("not a security update")
        } else {
            None
        };
        match reason {
            Some(r) => left.push(LeftOut {
                package: u.package.clone(),
                reason: r.into(),
            }),
            None => chosen.push(u),
        }
    }
    (chosen, left)
}

/// `operation.item_step`: one step of one guest, in the guest's and the operation's history.
pub(super) fn step_event(
    id: OperationId,
    step: &str,
    status: &str,
    note: &str,
) -> canopy_store::OperationEvent {
    canopy_store::OperationEvent {
        event_type: events::OPERATION_ITEM_STEP.into(),
        payload: serde_json::json!({
            "operation": id, "step": step, "status": status, "note": note,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_within_names() {
        assert!(glob_match("canopy-demo-*", "canopy-demo-web"));
        assert!(glob_match("*-web", "canopy-demo-web"));
        assert!(glob_match("nginx", "nginx"));
        assert!(!glob_match("nginx", "nginx-common"));
        assert!(!glob_match("lib*", "canopy-lib"));
    }

    #[test]
    fn snapshot_names_follow_pve_rules() {
        let n = snapshot_name(OperationId::new());
        assert!(n.len() <= 40 && n.starts_with(|c: char| c.is_ascii_alphabetic()));
        assert!(n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn the_fingerprint_changes_with_any_version() {
        let p = |v: &str| PlanPackage {
            package: "a".into(),
            manager: None,
            from_version: Some("1".into()),
            to_version: v.into(),
            severity: None,
            requested: true,
            containers: Vec::new(),
        };
        assert_ne!(
            guest_fingerprint(&[p("2")], &[]),
            guest_fingerprint(&[p("3")], &[])
        );
        assert_ne!(
            guest_fingerprint(&[p("2")], &[]),
            guest_fingerprint(&[p("2")], &["b".into()])
        );
    }
}
