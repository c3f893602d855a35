//! A container not managed by compose moves to a new image by being recreated with the same
//! configuration: its `Config` (env, labels, cmd, entrypoint, healthcheck, user, working
//! dir, …), `HostConfig` (binds and mounts, network mode, restart policy, resources, …) and
//! networks, only the image changed. What the container merely inherited from its old image
//! (the image's env entries, labels, cmd, entrypoint, healthcheck, working dir, user,
//! volumes) is left out, so the new image's defaults apply, as they would to a container
//! created from it by hand. Anonymous volumes are handed to the new container by name
//! (their data stays).
//!
//! The steps: create `NAME-canopy-new` (nothing stopped yet, so a configuration the engine
//! refuses changes nothing), connect its other networks, stop the old one, rename it aside
//! (`NAME-canopy-old`), rename the new one to `NAME`, start it. The old container is removed
//! only once the new one is healthy ([`remove_aside`]); until then [`restore`] puts it back
//! from whatever step was reached.

use super::{describe, not_found, Engine};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, EndpointSettings,
    ImageConfig, NetworkConnectRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, RenameContainerOptionsBuilder,
};
use std::collections::HashMap;

/// How long a stop request may take (the container's stop timeout, then the kill).
const STOP: std::time::Duration = std::time::Duration::from_secs(900);

/// The name the old container waits under while the new one proves itself.
pub fn aside_name(name: &str) -> String {
    format!("{name}-canopy-old")
}

/// The name the new container is created under, before the swap.
pub fn new_name(name: &str) -> String {
    format!("{name}-canopy-new")
}

/// One container being recreated: enough to put it back from any step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub name: String,
    pub old_id: String,
    /// Set once the new container exists.
    pub new_id: Option<String>,
    /// The old container was running (the new one is started, and watched, only then).
    pub was_running: bool,
}

fn keep<T: PartialEq>(own: Option<T>, inherited: Option<&T>) -> Option<T> {
    match (&own, inherited) {
        (Some(o), Some(i)) if o == i => None,
        _ => own,
    }
}

/// `/db:/web/database` (how inspect shows a link) → `db:database` (how create takes it).
fn link(l: &str) -> String {
    match l.split_once(':') {
        Some((target, alias)) => format!(
            "{}:{}",
            target.trim_start_matches('/'),
            alias.rsplit('/').next().unwrap_or(alias)
        ),
        None => l.trim_start_matches('/').to_string(),
    }
}

/// What a new endpoint on `network` takes from the old one (never its addresses and ids,
/// which the engine assigns; aliases only on user-defined networks, minus the old short id).
fn endpoint(network: &str, old: &EndpointSettings, short_id: &str) -> EndpointSettings {
    let user_defined = !matches!(network, "bridge" | "host" | "none" | "default");
    let aliases = old
        .aliases
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a != short_id)
        .collect::<Vec<_>>();
    EndpointSettings {
        ipam_config: old.ipam_config.clone(),
        links: old.links.clone(),
        aliases: (user_defined && !aliases.is_empty()).then_some(aliases),
        driver_opts: old.driver_opts.clone(),
        ..Default::default()
    }
}

/// The body that creates `c` again from `image`, and the networks to connect after the
/// create (the engine takes one at create time). `old` is the old image's config.
pub fn create_body(
    c: &ContainerInspectResponse,
    old: Option<&ImageConfig>,
    image: &str,
) -> (ContainerCreateBody, Vec<(String, EndpointSettings)>) {
    let cfg = c.config.clone().unwrap_or_default();
    let old = old.cloned().unwrap_or_default();
    let mut host = c.host_config.clone().unwrap_or_default();
    let id = c.id.clone().unwrap_or_default();
    let short_id = &id[..id.len().min(12)];
    let mode = host.network_mode.clone().unwrap_or_default();
    let shares_a_namespace = mode.starts_with("container:");

    // Anonymous volumes (an image VOLUME or `-v /path`) go to the new container by name.
    let mut binds = host.binds.clone().unwrap_or_default();
    let mut claimed: Vec<String> = binds
        .iter()
        .filter_map(|b| b.split(':').nth(1).map(String::from))
        .collect();
    claimed.extend(
        host.mounts
            .iter()
            .flatten()
            .filter_map(|m| m.target.clone()),
    );
    for m in c.mounts.iter().flatten() {
        let (Some("volume"), Some(name), Some(dest)) = (
            m.typ.as_deref(),
            m.name.as_deref(),
            m.destination.as_deref(),
        ) else {
            continue;
        };
        if !claimed.iter().any(|d| d == dest) {
            let ro = if m.rw == Some(false) { ":ro" } else { "" };
            binds.push(format!("{name}:{dest}{ro}"));
            claimed.push(dest.to_string());
        }
    }
    host.binds = (!binds.is_empty()).then_some(binds);
    host.links = host.links.map(|ls| ls.iter().map(|l| link(l)).collect());

    let inherited_env = old.env.clone().unwrap_or_default();
    let env: Vec<String> = cfg
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| !inherited_env.contains(e))
        .collect();
    let inherited_labels = old.labels.clone().unwrap_or_default();
    let labels: HashMap<String, String> = cfg
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, v)| inherited_labels.get(k) != Some(v))
        .collect();
    let entrypoint = keep(cfg.entrypoint.clone(), old.entrypoint.as_ref());
    // An entrypoint of its own drops the image's cmd (the engine's rule), so the cmd is
    // only inherited when the entrypoint is too.
    let cmd = if entrypoint.is_none() {
        keep(cfg.cmd.clone(), old.cmd.as_ref())
    } else {
        cfg.cmd.clone()
    };
    let inherited_volumes = old.volumes.clone().unwrap_or_default();
    let volumes: Vec<String> = cfg
        .volumes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|v| !inherited_volumes.contains(v))
        .collect();
    let inherited_ports = old.exposed_ports.clone().unwrap_or_default();
    let ports: Vec<String> = cfg
        .exposed_ports
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !inherited_ports.contains(p))
        .collect();
    // The engine names a container's host after its short id unless told otherwise.
    let hostname = cfg
        .hostname
        .clone()
        .filter(|h| !h.is_empty() && h != short_id && !shares_a_namespace);

    let mut networks: Vec<(String, EndpointSettings)> = c
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, ep)| {
            let e = endpoint(&name, &ep, short_id);
            (name, e)
        })
        .collect();
    // The network of the network mode first (the one given at create), the rest by name.
    networks.sort_by_key(|(name, _)| (*name != mode, name.clone()));
    let first = if shares_a_namespace || networks.is_empty() {
        None
    } else {
        Some(networks.remove(0))
    };
    let body = ContainerCreateBody {
        hostname,
        domainname: cfg.domainname.clone().filter(|d| !d.is_empty()),
        user: keep(cfg.user.clone(), old.user.as_ref()).filter(|u| !u.is_empty()),
        attach_stdin: cfg.attach_stdin,
        attach_stdout: cfg.attach_stdout,
        attach_stderr: cfg.attach_stderr,
        exposed_ports: (!ports.is_empty() && !shares_a_namespace).then_some(ports),
        tty: cfg.tty,
        open_stdin: cfg.open_stdin,
        stdin_once: cfg.stdin_once,
        env: (!env.is_empty()).then_some(env),
        cmd,
        healthcheck: keep(cfg.healthcheck.clone(), old.healthcheck.as_ref()),
        image: Some(image.to_string()),
        volumes: (!volumes.is_empty()).then_some(volumes),
        working_dir: keep(cfg.working_dir.clone(), old.working_dir.as_ref())
            .filter(|w| !w.is_empty()),
        entrypoint,
        network_disabled: cfg.network_disabled,
        labels: (!labels.is_empty()).then_some(labels),
        stop_signal: keep(cfg.stop_signal.clone(), old.stop_signal.as_ref()),
        stop_timeout: cfg.stop_timeout,
        host_config: Some(host),
        networking_config: first.map(|(name, ep)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(name, ep)])),
        }),
        ..Default::default()
    };
    let rest = if shares_a_namespace {
        Vec::new()
    } else {
        networks
    };
    (body, rest)
}

fn step_err(what: &str, e: &bollard::errors::Error) -> String {
    format!("{what}: {}", describe(e))
}

/// Recreate `c` from `image`: create, connect, stop the old, swap names, start. `swap` records
/// how far it got (for [`restore`]); `log` gets a line per step.
pub async fn recreate(
    engine: &Engine,
    c: &ContainerInspectResponse,
    old_image: Option<&ImageConfig>,
    image: &str,
    swap: &mut Swap,
    log: &mut Vec<String>,
) -> Result<(), String> {
    let name = swap.name.clone();
    let (body, more) = create_body(c, old_image, image);
    let temp = new_name(&name);
    let opts = CreateContainerOptionsBuilder::default().name(&temp).build();
    let created = engine
        .api
        .create_container(Some(opts), body)
        .await
        .map_err(|e| step_err(&format!("creating {temp} from {image}"), &e))?;
    swap.new_id = Some(created.id.clone());
    log.push(format!(
        "{name}: created {temp} ({}) from {image}",
        &created.id[..12.min(created.id.len())]
    ));
    for (network, ep) in more {
        let req = NetworkConnectRequest {
            container: created.id.clone(),
            endpoint_config: Some(ep),
        };
        engine
            .api
            .connect_network(&network, req)
            .await
            .map_err(|e| step_err(&format!("connecting {temp} to network {network}"), &e))?;
        log.push(format!("{name}: connected {temp} to network {network}"));
    }
    if swap.was_running {
        // The engine waits the container's own stop timeout before it kills it.
        engine
            .with_timeout(STOP)
            .stop_container(&swap.old_id, None)
            .await
            .map_err(|e| step_err(&format!("stopping {name}"), &e))?;
        log.push(format!("{name}: stopped the old container"));
    }
    let aside = aside_name(&name);
    rename(engine, &swap.old_id, &aside).await?;
    log.push(format!("{name}: old container renamed {aside}"));
    rename(engine, &created.id, &name).await?;
    if swap.was_running {
        engine
            .api
            .start_container(&created.id, None)
            .await
            .map_err(|e| step_err(&format!("starting the new {name}"), &e))?;
        log.push(format!("{name}: started the new container"));
    } else {
        log.push(format!(
            "{name}: was not running: the new container is left stopped too"
        ));
    }
    Ok(())
}

async fn rename(engine: &Engine, id: &str, to: &str) -> Result<(), String> {
    let opts = RenameContainerOptionsBuilder::default().name(to).build();
    engine
        .api
        .rename_container(id, opts)
        .await
        .map_err(|e| step_err(&format!("renaming {} to {to}", &id[..12.min(id.len())]), &e))
}

/// Put the old container back from whatever step [`recreate`] reached: the new one
/// removed, the old one under its name again and running (if it was).
pub async fn restore(engine: &Engine, swap: &Swap, log: &mut Vec<String>) -> Result<(), String> {
    let name = &swap.name;
    if let Some(new) = &swap.new_id {
        let opts = RemoveContainerOptionsBuilder::default().force(true).build();
        match engine.api.remove_container(new, Some(opts)).await {
            Ok(()) => log.push(format!("{name}: removed the new container")),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(step_err(&format!("removing the new {name}"), &e)),
        }
    }
    let old = engine
        .api
        .inspect_container(&swap.old_id, None)
        .await
        .map_err(|e| step_err(&format!("inspecting the old {name}"), &e))?;
    if super::inventory::name_of(&old) != *name {
        rename(engine, &swap.old_id, name).await?;
        log.push(format!("{name}: old container renamed back to {name}"));
    }
    let running = old
        .state
        .as_ref()
        .and_then(|s| s.status)
        .is_some_and(|s| s == ContainerStateStatusEnum::RUNNING);
    if swap.was_running && !running {
        engine
            .api
            .start_container(&swap.old_id, None)
            .await
            .map_err(|e| step_err(&format!("starting the old {name}"), &e))?;
        log.push(format!("{name}: old container started again"));
    }
    Ok(())
}

/// Remove the old container, once the new one is healthy (its volumes stay).
pub async fn remove_aside(
    engine: &Engine,
    swap: &Swap,
    log: &mut Vec<String>,
) -> Result<(), String> {
    let opts = RemoveContainerOptionsBuilder::default().force(true).build();
    match engine.api.remove_container(&swap.old_id, Some(opts)).await {
        Ok(()) => {
            log.push(format!(
                "{}: removed the old container ({})",
                swap.name,
                aside_name(&swap.name)
            ));
            Ok(())
        }
        Err(e) if not_found(&e) => Ok(()),
        Err(e) => Err(step_err(
            &format!("removing {}", aside_name(&swap.name)),
            &e,
        )),
    }
}

#[cfg(test)]
mod tests;
