//! The containers of the engine, all states, as [`Container`]s: the reference as written
//! (`Config.Image`), the image id and every `RepoDigests` entry of the image, its platform,
//! state, health, restart policy and compose labels. One `inspect` per container and one
//! per distinct image.

use super::{describe, not_found, DockerConfig, Engine};
use bollard::models::{ContainerInspectResponse, ImageInspect};
use bollard::query_parameters::ListContainersOptionsBuilder;
use canopy_api_types::agent::ScannerError;
use canopy_api_types::docker::{compose_labels, ComposeService, Container};
use std::collections::HashMap;
use std::time::Duration;

/// The scan's part: `(None, None)` without an engine, `(None, Some(error))` when the engine
/// cannot be used or listing failed, else every container.
pub async fn scan(
    cfg: &DockerConfig,
    timeout: Duration,
) -> (Option<Vec<Container>>, Option<ScannerError>) {
    let error = |message: String| {
        tracing::warn!(error = %message, "docker inventory failed");
        ScannerError {
            scanner: "docker".into(),
            message,
        }
    };
    match Engine::connect(cfg, timeout).await {
        Ok(None) => (None, None),
        Err(e) => (None, Some(error(e))),
        Ok(Some(engine)) => match containers(&engine).await {
            Ok(list) => (Some(list), None),
            Err(e) => (
                None,
                Some(error(format!(
                    "listing the containers of the engine at {} failed: {e}",
                    engine.socket().display()
                ))),
            ),
        },
    }
}

/// Every container of `engine`, sorted by name. A container removed while we look is left
/// out; any other engine error fails the listing.
pub async fn containers(engine: &Engine) -> Result<Vec<Container>, String> {
    Ok(inspect_all(engine)
        .await?
        .iter()
        .map(|(c, image)| container(c, image.as_ref()))
        .collect())
}

/// Every container's inspection with its image's, sorted by name.
pub(crate) async fn inspect_all(
    engine: &Engine,
) -> Result<Vec<(ContainerInspectResponse, Option<ImageInspect>)>, String> {
    let opts = ListContainersOptionsBuilder::default().all(true).build();
    let list = engine
        .api
        .list_containers(Some(opts))
        .await
        .map_err(|e| describe(&e))?;
    let mut images: HashMap<String, Option<ImageInspect>> = HashMap::new();
    let mut out = Vec::new();
    for summary in list {
        let Some(id) = summary.id else { continue };
        let c = match engine.api.inspect_container(&id, None).await {
            Ok(c) => c,
            Err(e) if not_found(&e) => continue,
            Err(e) => return Err(format!("inspecting container {id}: {}", describe(&e))),
        };
        let image_id = c.image.clone().unwrap_or_default();
        if !images.contains_key(&image_id) {
            let image = match engine.api.inspect_image(&image_id).await {
                Ok(i) => Some(i),
                Err(e) if not_found(&e) => None,
                Err(e) => return Err(format!("inspecting image {image_id}: {}", describe(&e))),
            };
            images.insert(image_id.clone(), image);
        }
        out.push((c, images.get(&image_id).cloned().flatten()));
    }
    out.sort_by_key(|(c, _)| name_of(c));
    Ok(out)
}

/// The container's name without Docker's leading `/`.
pub fn name_of(c: &ContainerInspectResponse) -> String {
    c.name
        .as_deref()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_string()
}

/// `os/architecture[/variant]` of an image (`unknown` when the engine does not say).
pub fn platform(image: &ImageInspect) -> String {
    let os = image
        .os
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    let arch = image
        .architecture
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown");
    match image.variant.as_deref().filter(|s| !s.is_empty()) {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    }
}

/// The compose service a container's labels name (project and service both present).
pub fn compose_of(labels: &HashMap<String, String>) -> Option<ComposeService> {
    let project = labels.get(compose_labels::PROJECT)?.clone();
    let service = labels.get(compose_labels::SERVICE)?.clone();
    Some(ComposeService {
        project,
        service,
        working_dir: labels.get(compose_labels::WORKING_DIR).cloned(),
        config_files: labels
            .get(compose_labels::CONFIG_FILES)
            .map(|f| {
                f.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// One inspected container (and its image, when the engine still has it) as reported.
pub fn container(c: &ContainerInspectResponse, image: Option<&ImageInspect>) -> Container {
    let config = c.config.clone().unwrap_or_default();
    let state = c.state.clone().unwrap_or_default();
    let labels = config.labels.clone().unwrap_or_default();
    Container {
        name: name_of(c),
        id: c.id.clone().unwrap_or_default(),
        image: config.image.clone().unwrap_or_default(),
        image_id: c.image.clone().unwrap_or_default(),
        repo_digests: image
            .and_then(|i| i.repo_digests.clone())
            .unwrap_or_default(),
        platform: image.map_or_else(|| "unknown".to_string(), platform),
        state: state
            .status
            .map_or_else(|| "unknown".to_string(), |s| s.to_string()),
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty() && s != "none"),
        restart_policy: c
            .host_config
            .as_ref()
            .and_then(|h| h.restart_policy.as_ref())
            .and_then(|r| r.name)
            .map(|n| n.to_string())
            .filter(|n| !n.is_empty()),
        compose: compose_of(&labels),
    }
}

/// The containers `docker inspect ID…` and `docker image inspect ID…` printed (the engine
/// API's own JSON: an array, or one object per line as `-f '{{json …}}'` prints them): how an
/// agentless scan reads a guest's engine through `pct exec` with the guest's Docker CLI.
/// Sorted by name, like [`containers`].
pub fn from_cli_json(containers: &str, images: &str) -> Result<Vec<Container>, String> {
    let parse = |what: &str, text: &str| -> Result<Vec<serde_json::Value>, String> {
        let text = text.trim();
        let bad = |e: serde_json::Error| format!("{what}: not the JSON docker prints ({e})");
        if text.starts_with('[') {
            return serde_json::from_str(text).map_err(bad);
        }
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(bad))
            .collect()
    };
    let images: HashMap<String, ImageInspect> = parse("docker image inspect", images)?
        .into_iter()
        .filter_map(|v| serde_json::from_value::<ImageInspect>(v).ok())
        .filter_map(|i| Some((i.id.clone()?, i)))
        .collect();
    let mut out = Vec::new();
    for v in parse("docker inspect", containers)? {
        let c: ContainerInspectResponse = serde_json::from_value(v)
            .map_err(|e| format!("docker inspect: a container it does not describe ({e})"))?;
        let image = c.image.as_ref().and_then(|id| images.get(id));
        out.push(container(&c, image));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clis_json_reads_like_the_apis() {
        let containers = r#"[{"Id": "abc", "Name": "/web", "Image": "sha256:img",
            "Config": {"Image": "nginx:1", "Labels": {"com.docker.compose.project": "shop",
            "com.docker.compose.service": "web"}},
            "State": {"Status": "running", "Health": {"Status": "healthy"}},
            "HostConfig": {"RestartPolicy": {"Name": "always"}}}]"#;
        let images = r#"[{"Id": "sha256:img", "RepoDigests": ["nginx@sha256:d"],
            "Os": "linux", "Architecture": "arm", "Variant": "v7"}]"#;
        let got = from_cli_json(containers, images).unwrap();
        assert_eq!(got.len(), 1);
        let c = &got[0];
        assert_eq!(
            (
                c.name.as_str(),
                c.image.as_str(),
                c.platform.as_str(),
                c.state.as_str()
            ),
            ("web", "nginx:1", "linux/arm/v7", "running")
        );
        assert_eq!(c.repo_digests, ["nginx@sha256:d"]);
        assert_eq!(c.health.as_deref(), Some("healthy"));
        assert_eq!(c.restart_policy.as_deref(), Some("always"));
        assert_eq!(c.compose.as_ref().unwrap().service, "web");
        assert!(from_cli_json("", "").unwrap().is_empty());
        let lines = format!(
            "{}\n",
            containers
                .replace('\n', " ")
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
        );
        assert_eq!(
            from_cli_json(&lines, images).unwrap(),
            got,
            "one object per line"
        );
        assert!(from_cli_json("not json", "[]")
            .unwrap_err()
            .contains("docker inspect"));
    }

    #[test]
    fn compose_labels_become_the_service_with_its_files_split() {
        let mut labels: HashMap<String, String> = HashMap::new();
        assert_eq!(compose_of(&labels), None);
        labels.insert(compose_labels::PROJECT.into(), "shop".into());
        labels.insert(compose_labels::SERVICE.into(), "web".into());
        labels.insert(compose_labels::WORKING_DIR.into(), "/srv/shop".into());
        labels.insert(
            compose_labels::CONFIG_FILES.into(),
            "/srv/shop/compose.yml,/srv/shop/override.yml".into(),
        );
        let s = compose_of(&labels).expect("compose");
        assert_eq!((s.project.as_str(), s.service.as_str()), ("shop", "web"));
        assert_eq!(s.working_dir.as_deref(), Some("/srv/shop"));
        assert_eq!(
            s.config_files,
            ["/srv/shop/compose.yml", "/srv/shop/override.yml"]
        );
    }

    /// An engine answer as 20.10 gives it (trimmed to the fields read): the reference as
    /// written, not the image id; the platform with its variant; health and restart policy.
    #[test]
    fn an_inspection_becomes_a_container() {
        let c: ContainerInspectResponse = serde_json::from_value(serde_json::json!({
            "Id": "4f1c",
            "Name": "/web",
            "Image": "sha256:aaaa",
            "State": {"Status": "running", "Running": true, "Health": {"Status": "healthy", "FailingStreak": 0, "Log": []}},
            "HostConfig": {"RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}},
            "Config": {"Image": "127.0.0.1:5000/web:v1", "Labels": {}},
        }))
        .expect("inspect");
        let i: ImageInspect = serde_json::from_value(serde_json::json!({
            "Id": "sha256:aaaa",
            "RepoDigests": ["127.0.0.1:5000/web@sha256:bbbb"],
            "Os": "linux", "Architecture": "arm", "Variant": "v7",
        }))
        .expect("image");
        let got = container(&c, Some(&i));
        assert_eq!(got.name, "web");
        assert_eq!(got.image, "127.0.0.1:5000/web:v1");
        assert_eq!(got.image_id, "sha256:aaaa");
        assert_eq!(got.repo_digests, ["127.0.0.1:5000/web@sha256:bbbb"]);
        assert_eq!(got.platform, "linux/arm/v7");
        assert_eq!(got.state, "running");
        assert_eq!(got.health.as_deref(), Some("healthy"));
        assert_eq!(got.restart_policy.as_deref(), Some("unless-stopped"));
        assert_eq!(got.compose, None);
        let bare = container(&c, None);
        assert_eq!(bare.platform, "unknown");
        assert!(bare.repo_digests.is_empty());
    }
}
