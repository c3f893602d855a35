//! `canopy cluster add|list|remove|discover|node-updates` and `canopy tree [SELECTOR]`:
//! the Proxmox side of the server, from the command line.

use super::discover::{print_stdout, render};
use super::remote::{print, Common};
use super::session;
use anyhow::{bail, Context};
use canopy_api_types::clusters::CreateCluster;
use clap::{Args, Subcommand};
use std::io::BufRead;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Add a PVE cluster (or standalone node) and run its first discovery.
    Add(AddArgs),
    /// List clusters with their last discovery.
    List(#[command(flatten)] Common),
    /// Remove a cluster and its tree (enrolled hosts stay).
    Remove {
        #[command(flatten)]
        common: Common,
        name: String,
    },
    /// Run a discovery pass now and show what changed.
    Discover {
        #[command(flatten)]
        common: Common,
        name: String,
    },
    /// A PVE node's own pending apt updates (read-only).
    NodeUpdates {
        #[command(flatten)]
        common: Common,
        cluster: String,
        node: String,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[command(flatten)]
    common: Common,
    /// Name in the tree (`cluster/NAME`).
    name: String,
    /// PVE API address; repeat for the other nodes of the cluster.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// `USER@REALM!TOKENID=SECRET` (or CANOPY_PVE_TOKEN, which keeps it off the process list).
    #[arg(long, env = "CANOPY_PVE_TOKEN", hide_env_values = true)]
    token: String,
    /// Pinned certificate fingerprint (AA:BB:…); without it (and without --ca) the
    /// fingerprint is shown and you are asked to trust it.
    #[arg(long = "fingerprint")]
    fingerprints: Vec<String>,
    /// Trust a CA instead (e.g. the cluster's /etc/pve/pve-root-ca.pem).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Seconds between discovery passes (default: the server's setting, 60).
    #[arg(long)]
    interval: Option<u32>,
}

#[derive(Debug, Args)]
pub struct TreeArgs {
    #[command(flatten)]
    common: Common,
    /// e.g. `cluster/home/node/pve1/lxc/*`, `**[tag=prod]`, `cluster/home/**[status=running]`.
    selector: Option<String>,
    /// Show what an action on the selector would touch instead of the tree.
    #[arg(long, requires = "selector")]
    preview: bool,
}

pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Add(args) => add(args).await,
        ClusterCommand::List(c) => {
            let clusters = session::client(c.server.as_deref())
                .await?
                .clusters()
                .await?;
            print(c.json, &clusters, |cs| {
                println!(
                    "{:<16} {:<36} {:<24} LAST DISCOVERY",
                    "NAME", "ENDPOINT", "TOKEN"
                );
                for c in cs {
                    let last = match (&c.last_error, c.last_discovery_at) {
                        (Some(e), _) => format!("FAILED: {e}"),
                        (None, Some(t)) => t.to_rfc3339(),
                        (None, None) => "never".into(),
                    };
                    println!(
                        "{:<16} {:<36} {:<24} {last}",
                        c.name,
                        c.endpoints.first().map(String::as_str).unwrap_or(""),
                        c.token_id
                    );
                }
            })
        }
        ClusterCommand::Remove { common, name } => {
            let client = session::client(common.server.as_deref()).await?;
            let out = client.delete_cluster(&name).await?;
            print(common.json, &out, |_| println!("removed cluster {name}"))
        }
        ClusterCommand::Discover { common, name } => {
            let client = session::client(common.server.as_deref()).await?;
            let report = client.discover_cluster(&name).await?;
            print(common.json, &report, |r| {
                if let Some(e) = &r.error {
                    println!("discovery of {} FAILED: {e}", r.cluster);
                    return;
                }
                println!(
                    "{}: {} nodes, {} guests, {} API calls, {} changes",
                    r.cluster,
                    r.nodes,
                    r.guests,
                    r.api_calls,
                    r.changes.len()
                );
                for c in &r.changes {
                    println!("  {c}");
                }
                for e in &r.node_errors {
                    println!("  node {}: {}", e.node, e.error);
                }
            })?;
            if report.error.is_some() {
                bail!("discovery failed");
            }
            Ok(())
        }
        ClusterCommand::NodeUpdates {
            common,
            cluster,
            node,
        } => {
            let client = session::client(common.server.as_deref()).await?;
            let ups = client.node_updates(&cluster, &node).await?;
            print(common.json, &ups, |u| {
                if let Some(e) = &u.error {
                    println!("last refresh failed: {e}");
                }
                println!(
                    "{:<32} {:<24} {:<24} ORIGIN",
                    "PACKAGE", "CURRENT", "AVAILABLE"
                );
                for p in &u.updates {
                    println!(
                        "{:<32} {:<24} {:<24} {}",
                        p.package,
                        p.current_version.as_deref().unwrap_or(""),
                        p.available_version.as_deref().unwrap_or(""),
                        p.origin.as_deref().unwrap_or("")
                    );
                }
            })
        }
    }
}

async fn add(args: AddArgs) -> anyhow::Result<()> {
    let client = session::client(args.common.server.as_deref()).await?;
    let ca_pem = args
        .ca
        .as_ref()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display())))
        .transpose()?;
    let mut fingerprints = args.fingerprints.clone();
    if fingerprints.is_empty() && ca_pem.is_none() {
        for url in &args.urls {
            let probe = client.probe_cluster(url).await?;
            eprintln!(
                "{url} presents a certificate with the SHA-256 fingerprint\n  {}\n\
                 Compare it with the PVE GUI (Node → System → Certificates).",
                probe.fingerprint
            );
            eprint!("Trust it? [y/N] ");
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            if !matches!(line.trim(), "y" | "Y" | "yes") {
                bail!("not trusted; nothing was added");
            }
            fingerprints.push(probe.fingerprint);
        }
    }
    let cluster = client
        .create_cluster(&CreateCluster {
            name: args.name,
            endpoints: args.urls,
            token: args.token,
            fingerprints,
            ca_pem,
            interval_secs: args.interval,
        })
        .await?;
    print(args.common.json, &cluster, |c| {
        println!(
            "added cluster {} ({}), discovered {}",
            c.name,
            c.endpoints.join(", "),
            c.last_discovery_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default()
        );
    })
}

pub async fn tree(args: TreeArgs) -> anyhow::Result<()> {
    let client = session::client(args.common.server.as_deref()).await?;
    if args.preview {
        let selector = args.selector.as_deref().unwrap_or_default();
        let p = client.preview(selector).await?;
        return print(args.common.json, &p, |p| {
            println!("{} {}", p.selector, p.summary);
            for t in &p.targets {
                println!("  {t}");
            }
            for s in &p.skipped {
                println!("  {} (skipped: {})", s.id, s.reason);
            }
        });
    }
    let resp = client.tree(args.selector.as_deref()).await?;
    if args.common.json {
        return print_stdout(&format!("{}\n", serde_json::to_string(&resp.trees)?));
    }
    if resp.trees.is_empty() {
        eprintln!(
            "{}",
            match &resp.selector {
                Some(s) => format!("nothing matches {s}"),
                None => "no cluster yet: add one with `canopy cluster add`".into(),
            }
        );
    }
    let text: String = resp.trees.iter().map(render).collect();
    print_stdout(&text)
}
