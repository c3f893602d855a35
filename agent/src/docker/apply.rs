//! Image updates inside an install (`CommandSpec::Install`'s pinned entries of manager
//! `docker`, after the package managers' pins), or alone: every container created from the
//! reference moves to exactly the approved digest, and back when it is not healthy.
//!
//! 1. **Check** (nothing changes): every reference and digest well-formed; each reference
//!    still used by a container; no container started with `--rm` (it could not be put
//!    back); no `NAME-canopy-old`/`-new` left by an interrupted update; compose found
//!    where a compose service moves.
//! 2. **Pull** every reference as `REPO@DIGEST` (pinned: exactly the approved image; a tag
//!    is never pulled). A registry that no longer serves the digest refuses the whole
//!    update, naming the reference and the digest, before anything changed.
//! 3. **Move**, one reference after the other: the old image id (the containers') tagged
//!    `REPO:canopy-previous`, the reference's tag moved to the new image, then each compose
//!    service ([`super::compose`]) or container ([`super::recreate`]) in turn, each watched
//!    until healthy ([`super::health`]). A failure rolls the whole reference back — the tag
//!    on the old image, every container moved so far back on it — and ends the command
//!    ("web: new image sha256:… unhealthy after 30 s (healthcheck: …); back on sha256:…").
//!    Success drops the old containers and the `canopy-previous` tag.
//!
//! Every step is a line of the command's output, so the server shows what happened.

use super::compose::{self, Flavor};
use super::health;
use super::image::{self, PREVIOUS_TAG};
use super::inventory::{self, compose_of, name_of};
use super::plan::check_target;
use super::recreate::{self, aside_name, new_name, Swap};
use super::reference::Reference;
use super::{describe, short_id, DockerConfig, Engine};
use crate::process::{truncate_tail, MAX_OUTPUT};
use bollard::models::{ContainerInspectResponse, ImageConfig, ImageInspect};
use bollard::query_parameters::ListContainersOptionsBuilder;
use canopy_api_types::commands::{CommandResult, PlannedPackage};
use canopy_api_types::docker::{compose_labels, ComposeService};
use std::collections::HashMap;
use std::time::Duration;

/// How long the engine may take for one request that is not a pull or a stop.
const REQUEST: Duration = Duration::from_secs(120);

type Inspected = (ContainerInspectResponse, Option<ImageInspect>);

/// One reference to move.
struct Target {
    reference: String,
    parsed: Reference,
    digest: String,
    users: Vec<Inspected>,
    new_id: String,
}

/// Something moved, to be moved back on failure.
enum Moved {
    Compose(ComposeService),
    Plain(Swap),
}

/// How the command ended.
enum End {
    Done(String),
    /// Refused before anything changed.
    Refused(String),
    /// Failed after changes (rolled back, as the message says).
    Failed(String),
}

/// Apply `pins` (entries of manager `docker`); `deadline` bounds each pull and compose run.
#[tracing::instrument(skip_all, fields(images = pins.len()))]
pub async fn apply(
    pins: &[PlannedPackage],
    cfg: &DockerConfig,
    deadline: Duration,
) -> CommandResult {
    let mut log = Vec::new();
    let end = run(pins, cfg, deadline, &mut log).await;
    // -1: nothing ran (as the package managers' refusals); 1: it ran and failed.
    let (exit_code, summary) = match end {
        End::Done(s) => (0, s),
        End::Refused(s) => (-1, format!("refused: {s}")),
        End::Failed(s) => (1, s),
    };
    let success = exit_code == 0;
    for l in &log {
        tracing::info!(step = %l, "docker");
    }
    CommandResult {
        exit_code,
        success,
        stdout: truncate_tail(&log.join("\n"), MAX_OUTPUT),
        stderr: if success {
            String::new()
        } else {
            summary.clone()
        },
        planned: Vec::new(),
        removed: Vec::new(),
        summary,
        health: None,
    }
}

async fn run(
    pins: &[PlannedPackage],
    cfg: &DockerConfig,
    deadline: Duration,
    log: &mut Vec<String>,
) -> End {
    let engine = match Engine::connect(cfg, REQUEST).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            let socket = cfg.socket_path().unwrap_or_default();
            return End::Refused(format!(
                "no Docker engine on this host (no socket at {})",
                socket.display()
            ));
        }
        Err(e) => return End::Refused(e),
    };
    let (mut targets, flavor) = match prepare(&engine, pins, deadline).await {
        Ok(t) => t,
        Err(e) => return End::Refused(e),
    };
    for t in &mut targets {
        match image::pull(&engine, &t.reference, &t.parsed, &t.digest, deadline, log).await {
            Ok(id) => t.new_id = id,
            Err(e) => return End::Refused(e),
        }
    }
    let mut done = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        match move_reference(&engine, t, flavor, cfg, deadline, log).await {
            Ok(s) => done.push(s),
            Err(e) => {
                let rest: Vec<&str> = targets[i + 1..]
                    .iter()
                    .map(|t| t.reference.as_str())
                    .collect();
                let mut msg = e;
                if !rest.is_empty() {
                    msg.push_str(&format!(" (not attempted: {})", rest.join(", ")));
                }
                if !done.is_empty() {
                    msg.push_str(&format!(" (updated before: {})", done.join("; ")));
                }
                return End::Failed(msg);
            }
        }
    }
    End::Done(done.join("; "))
}

/// Step 1: every check that needs no change. The targets with their containers, and the
/// compose to use when a compose service moves.
async fn prepare(
    engine: &Engine,
    pins: &[PlannedPackage],
    timeout: Duration,
) -> Result<(Vec<Target>, Option<Flavor>), String> {
    let mut targets = Vec::new();
    for p in pins {
        let parsed = check_target(&p.package, &p.to_version)?;
        if targets.iter().any(|t: &Target| t.reference == p.package) {
            return Err(format!("{} is listed twice", p.package));
        }
        targets.push(Target {
            reference: p.package.clone(),
            parsed,
            digest: p.to_version.clone(),
            users: Vec::new(),
            new_id: String::new(),
        });
    }
    if targets.is_empty() {
        return Err("no image updates given".into());
    }
    let all = inventory::inspect_all(engine).await.map_err(|e| {
        format!(
            "listing the containers of the engine at {} failed: {e}",
            engine.socket().display()
        )
    })?;
    let names: Vec<String> = all.iter().map(|(c, _)| name_of(c)).collect();
    let mut needs_compose = false;
    for t in &mut targets {
        t.users = all
            .iter()
            .filter(|(c, _)| {
                c.config.as_ref().and_then(|k| k.image.as_deref()) == Some(t.reference.as_str())
            })
            .cloned()
            .collect();
        if t.users.is_empty() {
            return Err(format!(
                "no container on this host uses {} any more (nothing to move); run the dry-run again",
                t.reference
            ));
        }
        for (c, _) in &t.users {
            let name = name_of(c);
            let labels = c
                .config
                .as_ref()
                .and_then(|k| k.labels.clone())
                .unwrap_or_default();
            if let Some(svc) = compose_of(&labels) {
                compose::project_dir(&svc)?;
                needs_compose = true;
                continue;
            }
            if c.host_config.as_ref().and_then(|h| h.auto_remove) == Some(true) {
                return Err(format!(
                    "{name} was started with --rm (AutoRemove): stopping it would delete it, so it cannot be put back; Canopy does not recreate it"
                ));
            }
            for left in [aside_name(&name), new_name(&name)] {
                if names.contains(&left) {
                    return Err(format!(
                        "a container named {left} exists (left by an interrupted update?): remove it, or rename it back to {name}, first"
                    ));
                }
            }
        }
    }
    let flavor = if needs_compose {
        Some(compose::detect(timeout.min(REQUEST)).await?)
    } else {
        None
    };
    Ok((targets, flavor))
}

/// Step 3 for one reference; `Err` is the command's failure message, rollback done.
async fn move_reference(
    engine: &Engine,
    t: &Target,
    flavor: Option<Flavor>,
    cfg: &DockerConfig,
    deadline: Duration,
    log: &mut Vec<String>,
) -> Result<String, String> {
    let r = &t.parsed;
    let movers: Vec<&Inspected> = t
        .users
        .iter()
        .filter(|(c, _)| c.image.as_deref() != Some(t.new_id.as_str()))
        .collect();
    let Some((first, old_image)) = movers.first().copied() else {
        log.push(format!(
            "{}: every container is on {} already",
            t.reference,
            short_id(&t.new_id)
        ));
        image::tag(engine, &t.new_id, &r.repository, r.tag_or_latest()).await?;
        return Ok(format!(
            "{} unchanged (already on {})",
            t.reference,
            short_id(&t.new_id)
        ));
    };
    let old_id = first.image.clone().unwrap_or_default();
    let old_config: Option<ImageConfig> = old_image.as_ref().and_then(|i| i.config.clone());
    image::tag(engine, &old_id, &r.repository, PREVIOUS_TAG).await?;
    log.push(format!(
        "{}: old image {} kept as {}",
        t.reference,
        short_id(&old_id),
        r.with_tag(PREVIOUS_TAG)
    ));
    let back = |why: String| format!("{why}; back on {}", short_id(&old_id));
    let mut moved: Vec<Moved> = Vec::new();
    let result = async {
        image::tag(engine, &t.new_id, &r.repository, r.tag_or_latest())
            .await
            .map_err(|e| format!("{}: {e}", t.reference))?;
        log.push(format!(
            "{}: now points at {}",
            t.reference,
            short_id(&t.new_id)
        ));
        let mut services: Vec<String> = Vec::new();
        for (c, _) in &movers {
            let name = name_of(c);
            let labels = c
                .config
                .as_ref()
                .and_then(|k| k.labels.clone())
                .unwrap_or_default();
            if let Some(svc) = compose_of(&labels) {
                let key = format!("{}/{}", svc.project, svc.service);
                if services.contains(&key) {
                    continue;
                }
                services.push(key);
                moved.push(Moved::Compose(svc.clone()));
                let flavor = flavor.ok_or("compose is not available")?;
                move_service(engine, flavor, &svc, &t.new_id, cfg, deadline, log).await?;
            } else {
                let running = c.state.as_ref().and_then(|s| s.running) == Some(true);
                let mut swap = Swap {
                    name: name.clone(),
                    old_id: c.id.clone().unwrap_or_default(),
                    new_id: None,
                    was_running: running,
                };
                let made = recreate::recreate(
                    engine,
                    c,
                    old_config.as_ref(),
                    &t.reference,
                    &mut swap,
                    log,
                )
                .await;
                let new = swap.new_id.clone().unwrap_or_default();
                moved.push(Moved::Plain(swap));
                made.map_err(|e| format!("{name}: {e}"))?;
                if running {
                    let ok = health::wait(engine, &new, cfg).await.map_err(|why| {
                        format!("{name}: new image {} {why}", short_id(&t.new_id))
                    })?;
                    log.push(format!("{name}: {ok}"));
                }
            }
        }
        Ok::<(), String>(())
    }
    .await;
    if let Err(why) = result {
        log.push(format!("{}: failed: {why}; rolling back", t.reference));
        let undo = roll_back(engine, t, &old_id, &moved, flavor, cfg, deadline, log).await;
        return Err(match undo {
            Ok(()) => back(why),
            Err(e) => format!("{why}; rolling back failed too: {e}"),
        });
    }
    for m in &moved {
        if let Moved::Plain(swap) = m {
            if let Err(e) = recreate::remove_aside(engine, swap, log).await {
                log.push(format!("{}: {e} (left in place)", swap.name));
            }
        }
    }
    image::untag_previous(engine, r, log).await;
    let names: Vec<String> = movers.iter().map(|(c, _)| name_of(c)).collect();
    Ok(format!(
        "{} {} -> {} ({})",
        t.reference,
        short_id(&old_id),
        short_id(&t.new_id),
        names.join(", ")
    ))
}

/// The containers of a compose service (one-off `run` containers left out).
async fn service_containers(
    engine: &Engine,
    s: &ComposeService,
) -> Result<Vec<ContainerInspectResponse>, String> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={}", compose_labels::PROJECT, s.project),
            format!("{}={}", compose_labels::SERVICE, s.service),
        ],
    )]);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    let list = engine
        .api
        .list_containers(Some(opts))
        .await
        .map_err(|e| describe(&e))?;
    let mut out = Vec::new();
    for c in list {
        let oneoff = c
            .labels
            .as_ref()
            .and_then(|l| l.get("com.docker.compose.oneoff"))
            .map(String::as_str);
        if matches!(oneoff, Some("True") | Some("true")) {
            continue;
        }
        if let Some(id) = c.id {
            out.push(
                engine
                    .api
                    .inspect_container(&id, None)
                    .await
                    .map_err(|e| describe(&e))?,
            );
        }
    }
    Ok(out)
}

/// `up -d --no-deps SERVICE`, then each of the service's containers on `image` and healthy.
async fn move_service(
    engine: &Engine,
    flavor: Flavor,
    s: &ComposeService,
    image: &str,
    cfg: &DockerConfig,
    deadline: Duration,
    log: &mut Vec<String>,
) -> Result<(), String> {
    let what = format!("{}/{}", s.project, s.service);
    let cmd = compose::up_cmd(flavor, s, cfg, deadline)?;
    log.push(format!("compose {what}: {cmd}"));
    compose::up(flavor, s, cfg, deadline)
        .await
        .map_err(|e| format!("compose {what}: {e}"))?;
    let containers = service_containers(engine, s)
        .await
        .map_err(|e| format!("compose {what}: {e}"))?;
    if containers.is_empty() {
        return Err(format!("compose {what}: no container after `up`"));
    }
    for c in containers {
        let name = name_of(&c);
        let on = c.image.clone().unwrap_or_default();
        if on != image {
            return Err(format!(
                "{name}: compose left it on {} instead of {}",
                short_id(&on),
                short_id(image)
            ));
        }
        let id = c.id.clone().unwrap_or_default();
        let ok = health::wait(engine, &id, cfg)
            .await
            .map_err(|why| format!("{name}: new image {} {why}", short_id(image)))?;
        log.push(format!(
            "{name}: {ok} (container {})",
            &id[..12.min(id.len())]
        ));
    }
    Ok(())
}

/// The reference's tag back on `old_id`, every moved container back on it (last first).
#[allow(clippy::too_many_arguments)]
async fn roll_back(
    engine: &Engine,
    t: &Target,
    old_id: &str,
    moved: &[Moved],
    flavor: Option<Flavor>,
    cfg: &DockerConfig,
    deadline: Duration,
    log: &mut Vec<String>,
) -> Result<(), String> {
    let r = &t.parsed;
    image::tag(engine, old_id, &r.repository, r.tag_or_latest()).await?;
    log.push(format!(
        "{}: points at {} again",
        t.reference,
        short_id(old_id)
    ));
    let mut problems = Vec::new();
    for m in moved.iter().rev() {
        match m {
            Moved::Compose(s) => {
                let Some(flavor) = flavor else { continue };
                if let Err(e) = move_service(engine, flavor, s, old_id, cfg, deadline, log).await {
                    problems.push(e);
                }
            }
            Moved::Plain(swap) => {
                if let Err(e) = recreate::restore(engine, swap, log).await {
                    problems.push(format!("{}: {e}", swap.name));
                } else if swap.was_running {
                    match health::wait(engine, &swap.old_id, cfg).await {
                        Ok(ok) => {
                            log.push(format!("{}: back on {}: {ok}", swap.name, short_id(old_id)))
                        }
                        Err(why) => problems.push(format!(
                            "{}: back on {} but {why}",
                            swap.name,
                            short_id(old_id)
                        )),
                    }
                }
            }
        }
    }
    image::untag_previous(engine, r, log).await;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
