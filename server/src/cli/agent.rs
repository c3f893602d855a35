//! `canopy agent deploy|uninstall|agentless-scan|ssh-key|host-keys|forget-host-key` and
//! `canopy operation [ID]`: agent delivery from the command line. A deploy shows its targets,
//! asks (unless `--yes`), then follows the operation's event stream with one progress line.

use super::remote::{print, Common};
use super::session;
use anyhow::bail;
use canopy_api_types::deploy::{
    DeployAction, DeployRequest, ItemState, Operation, OperationItem, OperationState,
};
use canopy_api_types::OperationId;
use clap::{Args, Subcommand};
use std::io::{BufRead, IsTerminal, Write};

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Install (or upgrade, or repair) the agent in every running LXC below SELECTOR, through
    /// the PVE node (`pct`) or direct SSH. Re-running is a no-op where the agent is fine.
    Deploy(DeployArgs),
    /// Remove the agent, its service, user and files from every guest below SELECTOR.
    Uninstall(DeployArgs),
    /// Scan guests without an agent through `pct exec` (read-only); they show as agentless.
    AgentlessScan {
        #[command(flatten)]
        common: Common,
        selector: String,
    },
    /// The public SSH key to add to each PVE node's /root/.ssh/authorized_keys.
    SshKey(#[command(flatten)] Common),
    /// SSH host keys pinned on first use.
    HostKeys(#[command(flatten)] Common),
    /// Forget a pinned host key (after a node was reinstalled), so the next deploy pins anew.
    ForgetHostKey {
        #[command(flatten)]
        common: Common,
        /// `host:port` as `canopy agent host-keys` shows it.
        address: String,
    },
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    common: Common,
    /// e.g. `cluster/home/node/pve1/**`, `cluster/home/**/lxc/*[tag=prod]`.
    selector: String,
    /// Do not ask before starting.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Show the targets and stop.
    #[arg(long)]
    preview: bool,
    /// Start and print the operation id without waiting for it.
    #[arg(long)]
    detach: bool,
}

#[derive(Debug, Args)]
pub struct OperationArgs {
    #[command(flatten)]
    common: Common,
    /// `ID` shows one operation (without it, the recent ones); `pause ID`, `resume ID`,
    /// `cancel ID` control an update operation.
    #[arg(num_args = 0..=2, value_name = "[VERB] ID")]
    args: Vec<String>,
}

pub async fn run(cmd: AgentCommand) -> anyhow::Result<()> {
    match cmd {
        AgentCommand::Deploy(a) => deploy(a, DeployAction::Deploy).await,
        AgentCommand::Uninstall(a) => deploy(a, DeployAction::Uninstall).await,
        AgentCommand::AgentlessScan { common, selector } => {
            let client = session::client(common.server.as_deref()).await?;
            let results = client.agentless_scan(&selector).await?;
            print(common.json, &results, |rs| {
                for r in rs {
                    match (&r.error, r.pending) {
                        (Some(e), _) => println!("{:<44} FAILED: {e}", r.target),
                        (None, Some(n)) => println!("{:<44} agentless, {n} pending", r.target),
                        (None, None) => println!("{:<44} agentless", r.target),
                    }
                }
            })?;
            if results
                .iter()
                .any(|r| r.error.is_some() && r.host_id.is_none())
            {
                bail!("some guests could not be scanned");
            }
            Ok(())
        }
        AgentCommand::SshKey(c) => {
            let key = session::client(c.server.as_deref())
                .await?
                .ssh_key()
                .await?;
            print(c.json, &key, |k| {
                println!("{}", k["public_key"].as_str().unwrap_or_default())
            })
        }
        AgentCommand::HostKeys(c) => {
            let keys = session::client(c.server.as_deref())
                .await?
                .host_keys()
                .await?;
            print(c.json, &keys, |ks| {
                // IPv6 addresses (`[2001:db8::10]:22`) are longer than most.
                let w = ks
                    .iter()
                    .map(|k| k.address.len())
                    .max()
                    .unwrap_or(0)
                    .max(28);
                println!(
                    "{:<w$} {:<20} {:<52} FIRST SEEN",
                    "ADDRESS", "TYPE", "FINGERPRINT"
                );
                for k in ks {
                    println!(
                        "{:<w$} {:<20} {:<52} {}",
                        k.address,
                        k.key_type,
                        k.fingerprint,
                        k.first_seen.to_rfc3339()
                    );
                }
            })
        }
        AgentCommand::ForgetHostKey { common, address } => {
            let out = session::client(common.server.as_deref())
                .await?
                .forget_host_key(&address)
                .await?;
            print(common.json, &out, |_| {
                println!("forgot the host key of {address}")
            })
        }
    }
}

async fn deploy(args: DeployArgs, action: DeployAction) -> anyhow::Result<()> {
    let client = session::client(args.common.server.as_deref()).await?;
    let req = DeployRequest {
        selector: args.selector.clone(),
        action,
    };
    let preview = client.deploy_preview(&req).await?;
    if args.preview {
        return print(args.common.json, &preview, |p| {
            println!("{}", p.summary);
            for t in &p.targets {
                println!("  {:<44} {:<16} via {}", t.target, t.name, t.route.as_str());
            }
            for s in &p.skipped {
                println!("  {:<44} skipped: {}", s.id, s.reason);
            }
        });
    }
    if preview.targets.is_empty() {
        bail!("{}: nothing to do", preview.summary);
    }
    if !args.yes {
        eprintln!("{}", preview.summary);
        for t in &preview.targets {
            eprintln!("  {} ({}) via {}", t.target, t.name, t.route.as_str());
        }
        for s in &preview.skipped {
            eprintln!("  {} skipped: {}", s.id, s.reason);
        }
        eprint!("Proceed? [y/N] ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        if !matches!(line.trim(), "y" | "Y" | "yes") {
            bail!("nothing started");
        }
    }
    let op = client.deploy(&req).await?;
    if args.detach {
        return print(args.common.json, &op, |o| println!("operation {}", o.id));
    }
    let mut bar = Progress::new(&op);
    let done = client
        .follow_operation(op.id, |item| bar.update(item))
        .await?;
    bar.finish();
    print(args.common.json, &done, show_operation)?;
    if done.state != OperationState::Succeeded {
        bail!("{} of {} guests failed", done.tally().3, done.items.len());
    }
    Ok(())
}

/// `canopy operation [ID]`.
pub async fn operation(args: OperationArgs) -> anyhow::Result<()> {
    let client = session::client(args.common.server.as_deref()).await?;
    let parse = |s: &str| -> anyhow::Result<OperationId> {
        s.parse()
            .map_err(|_| anyhow::anyhow!("{s:?} is not an operation id"))
    };
    match args.args.as_slice() {
        [verb, id] => {
            if !matches!(verb.as_str(), "pause" | "resume" | "cancel") {
                bail!("{verb:?}: use pause, resume or cancel");
            }
            let op = client.control_operation(parse(id)?, verb).await?;
            print(args.common.json, &op, show_operation)
        }
        [id] => {
            let op = client.operation(parse(id)?).await?;
            print(args.common.json, &op, show_operation)
        }
        _ => {
            let ops = client.operations(20).await?;
            print(args.common.json, &ops, |ops| {
                for o in ops {
                    let (_, _, ok, failed) = o.tally();
                    println!(
                        "{}  {:<10} {:<9} {ok} ok, {failed} failed  {}",
                        o.id,
                        o.action,
                        o.state.as_str(),
                        o.selector
                    );
                }
            })
        }
    }
}

pub(super) fn show_operation(op: &Operation) {
    let (_, _, ok, failed) = op.tally();
    println!(
        "operation {} ({} {}): {}, {ok} ok, {failed} failed",
        op.id,
        op.action,
        op.selector,
        op.state.as_str()
    );
    for i in &op.items {
        let what = match (i.state, i.outcome) {
            (ItemState::Succeeded, Some(o)) => o.as_str().to_string(),
            (s, _) => s.as_str().to_string(),
        };
        let note = i
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        // An update's guest: its last recorded step.
        let last = i
            .update
            .as_ref()
            .and_then(|d| d.steps.last())
            .filter(|_| !i.state.is_terminal())
            .map(|s| format!(" [{} {}]", s.step, s.status))
            .unwrap_or_default();
        let note = format!("{last}{note}");
        let user = i
            .run_as
            .as_deref()
            .map(|u| format!(" (as {u})"))
            .unwrap_or_default();
        println!("  {:<44} {what}{user}{note}", i.target);
    }
    for s in &op.skipped {
        println!("  {:<44} skipped: {}", s.id, s.reason);
    }
    if let Some(reason) = op.update.as_ref().and_then(|u| u.paused_reason.as_deref()) {
        println!("paused: {reason}");
    }
}

/// One line on a terminal (`[#####-----] 3/6 ct103: push`), rewritten in place; plain lines
/// per finished item otherwise.
pub(super) struct Progress {
    total: usize,
    finished: std::collections::BTreeSet<String>,
    tty: bool,
}

impl Progress {
    pub(super) fn new(op: &Operation) -> Self {
        Self {
            total: op.items.len(),
            finished: Default::default(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub(super) fn update(&mut self, item: &OperationItem) {
        let done = item.state.is_terminal();
        if done {
            self.finished.insert(item.target.clone());
        }
        let n = self.finished.len();
        if self.tty {
            let width = 20;
            let filled = (n * width).checked_div(self.total).unwrap_or(width);
            let what = match (&item.step, done) {
                (_, true) => item.state.as_str().to_string(),
                (Some(s), false) => s.clone(),
                (None, false) => item.state.as_str().to_string(),
            };
            eprint!(
                "\r\x1b[K[{}{}] {n}/{} {}: {what}",
                "#".repeat(filled),
                "-".repeat(width - filled),
                self.total,
                item.target
            );
            let _ = std::io::stderr().flush();
        } else if done {
            eprintln!(
                "[{n}/{}] {} {}",
                self.total,
                item.target,
                item.state.as_str()
            );
        }
    }

    pub(super) fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
