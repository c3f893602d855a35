//! `canopy update SELECTOR …`: one bulk update of a subtree. It plans (every guest scanned and
//! dry-run), prints the blast radius, asks (unless `--yes`), approves exactly that plan by its
//! fingerprint and follows the operation guest by guest. `--preview` plans, prints and
//! cancels: nothing changes.

use super::agent::{show_operation, Progress};
use super::remote::{print, Common};
use super::session;
use anyhow::{bail, Context};
use canopy_api_types::bulk::{
    Canary, HealthCheck, RebootPolicy, SnapshotPolicy, UpdateOptions, UpdateRequest,
};
use canopy_api_types::client::Client;
use canopy_api_types::deploy::{ItemState, Operation, OperationState};
use canopy_api_types::OperationId;
use clap::Args;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    common: Common,
    /// The guests to update: `cluster/home/node/pve1/lxc/*`, `cluster/home/**[tag=prod]`.
    selector: String,
    /// Only security updates.
    #[arg(long)]
    security: bool,
    /// Never install this package (repeatable; `*` globs).
    #[arg(long = "exclude", value_name = "PKG")]
    exclude: Vec<String>,
    /// never | if-required | always.
    #[arg(long, default_value = "if-required", value_parser = parse_reboot)]
    reboot: RebootPolicy,
    /// required | if-supported | off: the PVE snapshot before each guest's install.
    #[arg(long, default_value = "if-supported", value_parser = parse_snapshot)]
    snapshot: SnapshotPolicy,
    /// Where a guest's storage cannot snapshot, back it up with vzdump to this PVE storage
    /// instead (the rollback restores it).
    #[arg(long, value_name = "STORAGE")]
    backup_storage: Option<String>,
    /// Update this many guests first; the others start only when all of them are healthy.
    #[arg(long, default_value_t = 0)]
    canary: u32,
    /// A guest to run first as a canary (path id or vmid; repeatable; replaces --canary).
    #[arg(long = "canary-target", value_name = "GUEST")]
    canary_targets: Vec<String>,
    /// Guests updated at once (default: the server's update.concurrency).
    #[arg(long, default_value_t = 0)]
    concurrency: u32,
    /// Guests of one node updated at once (default: the server's update.per_node_concurrency).
    #[arg(long, default_value_t = 0)]
    per_node: u32,
    /// Health check inside each guest after its install: `GET URL` answers 2xx (repeatable).
    #[arg(long = "check-http", value_name = "URL")]
    check_http: Vec<String>,
    /// Health check: a TCP connection to HOST:PORT inside the guest succeeds (repeatable).
    #[arg(long = "check-tcp", value_name = "HOST:PORT")]
    check_tcp: Vec<String>,
    /// Health check: this command (words split on spaces, no shell) exits 0 (repeatable).
    #[arg(long = "check-command", value_name = "COMMAND")]
    check_command: Vec<String>,
    /// Plan and show what would change, then cancel: nothing is installed.
    #[arg(long)]
    preview: bool,
    /// Approve without asking.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Approve and print the operation id without following it.
    #[arg(long)]
    detach: bool,
}

fn parse_reboot(s: &str) -> Result<RebootPolicy, String> {
    RebootPolicy::parse(s).ok_or_else(|| format!("{s:?}: use never, if-required or always"))
}

fn parse_snapshot(s: &str) -> Result<SnapshotPolicy, String> {
    SnapshotPolicy::parse(s).ok_or_else(|| format!("{s:?}: use required, if-supported or off"))
}

impl UpdateArgs {
    fn request(&self) -> UpdateRequest {
        let mut checks: Vec<HealthCheck> = self
            .check_http
            .iter()
            .map(|u| HealthCheck::Http {
                url: u.clone(),
                status: None,
            })
            .collect();
        checks.extend(
            self.check_tcp
                .iter()
                .map(|a| HealthCheck::Tcp { address: a.clone() }),
        );
        checks.extend(self.check_command.iter().map(|c| HealthCheck::Command {
            argv: c.split_whitespace().map(str::to_string).collect(),
        }));
        UpdateRequest {
            selector: self.selector.clone(),
            options: UpdateOptions {
                security_only: self.security,
                exclude: self.exclude.clone(),
                reboot: self.reboot,
                snapshot: self.snapshot,
                backup_storage: self.backup_storage.clone(),
                canary: Canary {
                    count: self.canary,
                    targets: self.canary_targets.clone(),
                },
                concurrency: self.concurrency,
                per_node_concurrency: self.per_node,
                checks,
            },
        }
    }
}

const POLL: Duration = Duration::from_millis(700);

/// Polls the operation, reporting item changes, until `stop` says so.
async fn follow(
    client: &Client,
    id: OperationId,
    bar: &mut Progress,
    stop: impl Fn(&Operation) -> bool,
) -> anyhow::Result<Operation> {
    let mut seen: HashMap<String, (ItemState, Option<String>)> = HashMap::new();
    loop {
        let op = client.operation(id).await?;
        for item in &op.items {
            let now = (item.state, item.step.clone());
            if seen.get(&item.target) != Some(&now) {
                bar.update(item);
                seen.insert(item.target.clone(), now);
            }
        }
        if stop(&op) {
            bar.finish();
            return Ok(op);
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn run(args: UpdateArgs) -> anyhow::Result<()> {
    let client = session::client(args.common.server.as_deref()).await?;
    let op = client
        .start_update(&args.request())
        .await
        .context("cannot start the update")?;
    if !args.common.json {
        eprintln!(
            "planning operation {}: scanning and dry-running {} guests …",
            op.id,
            op.items.len()
        );
    }
    let mut bar = Progress::new(&op);
    let planned = follow(&client, op.id, &mut bar, |o| {
        o.state != OperationState::Planning
    })
    .await?;
    if args.preview {
        if planned.state == OperationState::AwaitingApproval {
            client.control_operation(planned.id, "cancel").await?;
        }
        return print(args.common.json, &planned, show_plan);
    }
    if planned.state != OperationState::AwaitingApproval {
        // Nothing to approve: every guest was up to date or could not be planned.
        print(args.common.json, &planned, show_operation)?;
        return match planned.state {
            OperationState::Succeeded => Ok(()),
            s => bail!("the operation ended while planning: {}", s.as_str()),
        };
    }
    let fingerprint = planned
        .update
        .as_ref()
        .and_then(|u| u.fingerprint.clone())
        .context("the plan has no fingerprint")?;
    if !args.yes {
        show_plan(&planned);
        eprint!("Approve this plan ({})? [y/N] ", &fingerprint[..12]);
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            client.control_operation(planned.id, "cancel").await?;
            bail!(
                "not approved: operation {} cancelled, nothing changed",
                planned.id
            );
        }
    }
    let op = client.approve_operation(planned.id, &fingerprint).await?;
    if args.detach {
        return print(args.common.json, &op, |o| println!("operation {}", o.id));
    }
    let mut bar = Progress::new(&op);
    let done = follow(&client, op.id, &mut bar, |o| {
        o.state.is_terminal()
            || matches!(
                o.state,
                OperationState::Paused | OperationState::AwaitingApproval
            )
    })
    .await?;
    print(args.common.json, &done, show_operation)?;
    match done.state {
        OperationState::Succeeded => Ok(()),
        OperationState::Paused => bail!(
            "paused: {} — `canopy operation resume {}` or `canopy operation cancel {}`",
            done.update
                .as_ref()
                .and_then(|u| u.paused_reason.clone())
                .unwrap_or_default(),
            done.id,
            done.id
        ),
        OperationState::AwaitingApproval => bail!(
            "guests were re-planned (their repository moved on) and wait for a new approval: \
             `canopy operation {}`",
            done.id
        ),
        _ => bail!("{} of {} guests failed", done.tally().3, done.items.len()),
    }
}

/// The blast radius: per guest what changes, then skipped guests and totals per node.
pub fn show_plan(op: &Operation) {
    println!("update {} ({}): {}", op.selector, op.id, op.state.as_str());
    for i in &op.items {
        let d = i.update.clone().unwrap_or_default();
        let canary = if d.canary { " [canary]" } else { "" };
        match (&d.plan, i.state) {
            (Some(p), s) if !s.is_terminal() => {
                println!("  {}{canary}: {} packages", i.target, p.packages.len());
                for pkg in &p.packages {
                    let sec = if pkg.severity == Some(canopy_api_types::updates::Severity::Security)
                    {
                        " (security)"
                    } else {
                        ""
                    };
                    let dep = if pkg.requested {
                        ""
                    } else {
                        " (new dependency)"
                    };
                    println!(
                        "      {} {} → {}{sec}{dep}",
                        pkg.package,
                        pkg.from_version.as_deref().unwrap_or("(new)"),
                        pkg.to_version
                    );
                }
                for r in &p.removals {
                    println!("      {r} removed");
                }
                for l in &p.left_out {
                    println!("      {} left out: {}", l.package, l.reason);
                }
                if p.reboot_required {
                    println!("      a reboot is already required");
                }
            }
            _ => println!(
                "  {}: {}",
                i.target,
                i.message.as_deref().unwrap_or(i.state.as_str())
            ),
        }
    }
    for s in &op.skipped {
        println!("  {} skipped: {}", s.id, s.reason);
    }
    if let Some(u) = &op.update {
        for n in &u.per_node {
            println!(
                "node {}: {} guests, {} packages ({} security), {} already need a reboot \
                 (the installs may ask for more; --reboot decides)",
                n.node, n.guests, n.packages, n.security, n.reboots
            );
        }
        if let Some(fp) = &u.fingerprint {
            println!("plan fingerprint {fp}");
        }
    }
}
