//! `canopy-pve-sim`: starts every cluster of a simulator file and prints one
//! `SIM cluster=… url=… fingerprint=… token=…` line per cluster, then serves until Ctrl-C.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use canopy_pve_sim::{SimFile, TlsSpec};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "canopy-pve-sim",
    about = "Proxmox VE API simulator (HTTPS on 127.0.0.1)"
)]
struct Cli {
    /// Simulator cluster file, e.g. examples/sim/home.toml.
    #[arg(long)]
    file: PathBuf,
    /// Give nodes fixed ports: the first node of the file gets N, the next N+1, …
    #[arg(long)]
    port_base: Option<u16>,
    /// Keep each cluster's CA and node certificates in DIR/NAME.tls.toml, so fingerprints
    /// stay the same across restarts.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "canopy_pve_sim=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut file = SimFile::load(&cli.file)?;

    if let Some(base) = cli.port_base {
        let mut port = base;
        for node in file.clusters.iter_mut().flat_map(|c| c.nodes.iter_mut()) {
            node.port = Some(port);
            port = port
                .checked_add(1)
                .context("--port-base: ran out of ports")?;
        }
    }

    let mut running = Vec::new();
    for mut cluster in file.clusters {
        let tls_file = cli
            .tls_dir
            .as_ref()
            .map(|d| d.join(format!("{}.tls.toml", cluster.name)));
        if let Some(path) = tls_file
            .as_ref()
            .filter(|p| p.exists() && cluster.tls.is_none())
        {
            let text = std::fs::read_to_string(path)?;
            cluster.tls = Some(
                toml::from_str::<TlsSpec>(&text)
                    .with_context(|| format!("reading {}", path.display()))?,
            );
        }
        let sim = canopy_pve_sim::start(cluster).await?;
        if let Some(path) = tls_file.filter(|p| !p.exists()) {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, toml::to_string(&sim.tls_material())?)?;
        }
        println!(
            "SIM cluster={} url={} fingerprint={} token={}",
            sim.name(),
            sim.url(),
            sim.fingerprint(),
            sim.token()
        );
        for (node, url, fingerprint) in sim.endpoints() {
            tracing::info!(cluster = sim.name(), node, url, fingerprint, "listening");
        }
        running.push(sim);
    }
    std::io::stdout().flush()?;

    tokio::signal::ctrl_c().await?;
    for sim in running {
        sim.shutdown().await;
    }
    Ok(())
}
