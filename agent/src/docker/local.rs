//! `canopy-agent containers [--json]`: the engine's containers as the next report will
//! carry them, read locally (no server needed).

use super::{inventory, DockerConfig};
use anyhow::Context;
use canopy_api_types::docker::Container;
use std::time::Duration;

/// Prints the containers; exit code 0, or 2 when the engine cannot be used. A host without
/// an engine prints that it has none (exit 0).
pub async fn print(cfg: &DockerConfig, json: bool, timeout: Duration) -> anyhow::Result<i32> {
    let (containers, error) = inventory::scan(cfg, timeout).await;
    if let Some(e) = error {
        eprintln!("docker: {}", e.message);
        return Ok(2);
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&containers).context("serialising containers")?
        );
        return Ok(0);
    }
    match containers {
        None => println!(
            "no Docker engine on this host (no socket at {})",
            cfg.socket_path().map_err(anyhow::Error::msg)?.display()
        ),
        Some(list) => print_table(&list),
    }
    Ok(0)
}

fn print_table(list: &[Container]) {
    for c in list {
        let state = match &c.health {
            Some(h) => format!("{} ({h})", c.state),
            None => c.state.clone(),
        };
        let compose = c
            .compose
            .as_ref()
            .map(|s| format!(" compose {}/{}", s.project, s.service))
            .unwrap_or_default();
        println!(
            "{:<28} {:<44} {:<19} {:<14} {:<20} {}{compose}",
            c.name,
            c.image,
            super::short_id(&c.image_id),
            c.platform,
            state,
            c.restart_policy.as_deref().unwrap_or("-"),
        );
    }
    println!("{} containers", list.len());
}
