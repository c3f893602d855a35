//! `canopy discover`: one-shot discovery of one cluster, no server, no database (docs/design.md §7.3).
//! Prints the cluster's tree (`--json`: the contract's JSON on stdout).

use crate::discovery::{self, build};
use anyhow::{Context, Result};
use canopy_hypervisor::{probe_fingerprint, ApiToken};
use canopy_inventory::{PathId, TreeNode};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct PveArgs {
    /// PVE API address (`https://pve1:8006`); repeat for the other nodes of the cluster.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// API token `USER@REALM!TOKENID=SECRET` (or CANOPY_PVE_TOKEN, which keeps it out of
    /// the process list).
    #[arg(long, env = "CANOPY_PVE_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Pinned SHA-256 certificate fingerprint as the PVE GUI shows it (AA:BB:…); repeatable.
    #[arg(long = "fingerprint")]
    pub fingerprints: Vec<String>,
    /// Trust certificates issued by this CA instead (e.g. the cluster's pve-root-ca.pem).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// Seconds to wait for each request.
    #[arg(long, default_value_t = 15)]
    pub timeout: u64,
}

impl PveArgs {
    pub fn target(&self) -> Result<discovery::Target> {
        let token: ApiToken = self.token.parse()?;
        let ca_pem = self
            .ca
            .as_ref()
            .map(|p| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display())))
            .transpose()?;
        Ok(discovery::Target {
            endpoints: self.urls.clone(),
            token,
            fingerprints: self.fingerprints.clone(),
            ca_pem,
            timeout: Duration::from_secs(self.timeout.max(1)),
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct DiscoverArgs {
    #[command(flatten)]
    pub pve: PveArgs,
    /// Name of the cluster in the tree (default: PVE's cluster name, or the node's name for
    /// a standalone node).
    #[arg(long)]
    pub name: Option<String>,
    /// Print the tree as JSON (the shape in docs/design.md §7.3).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: DiscoverArgs) -> Result<()> {
    let target = args.pve.target()?;
    if target.fingerprints.is_empty() && target.ca_pem.is_none() {
        let url = &target.endpoints[0];
        let fp = probe_fingerprint(url, target.timeout).await?;
        anyhow::bail!(
            "no --fingerprint or --ca given; {url} presents the certificate fingerprint\n  {fp}\n\
             Compare it with the PVE GUI (Node → System → Certificates) and pass --fingerprint {fp}"
        );
    }
    let client = discovery::connect(&target)?;
    let obs = build::observe(&client, args.name.as_deref()).await?;
    let (inv, warnings) = build::to_inventory(&obs)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let tree = inv
        .tree(&PathId::cluster(&obs.name)?)
        .context("the cluster vertex is missing")?;
    let text = if args.json {
        format!("{}\n", serde_json::to_string(&tree)?)
    } else {
        render(&tree)
    };
    print_stdout(&text)
}

/// Write to stdout; a closed pipe (`| head`) is not an error.
pub fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// An indented tree for people: one line per vertex with its status and notes.
pub fn render(tree: &TreeNode) -> String {
    let mut out = String::new();
    render_into(&tree.to_vertex(), &tree.children, 0, &mut out);
    out
}

fn render_into(
    v: &canopy_inventory::Vertex,
    children: &[TreeNode],
    depth: usize,
    out: &mut String,
) {
    use std::fmt::Write as _;
    let label = match v.vmid {
        Some(vmid) => format!("{} {vmid} {}", v.kind.as_str(), v.name),
        None => format!("{} {}", v.kind.as_str(), v.name),
    };
    let mut notes = Vec::new();
    if let Some(s) = &v.status {
        notes.push(s.clone());
    }
    if v.template {
        notes.push("template".into());
    }
    if !v.tags.is_empty() {
        notes.push(format!("tags {}", v.tags.join(",")));
    }
    match (&v.agent, &v.agent_user) {
        (Some(a), Some(user)) => notes.push(format!("agent {a} as {user}")),
        (Some(a), None) => notes.push(format!("agent {a}")),
        _ => {}
    }
    if let Some(e) = &v.error {
        notes.push(format!("ERROR: {e}"));
    }
    let _ = writeln!(
        out,
        "{}{label}{}",
        "  ".repeat(depth),
        if notes.is_empty() {
            String::new()
        } else {
            format!("  [{}]", notes.join("; "))
        }
    );
    for c in children {
        render_into(&c.to_vertex(), &c.children, depth + 1, out);
    }
}
