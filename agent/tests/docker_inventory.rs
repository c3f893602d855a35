//! The container inventory and the image dry-run against the real engine: containers of
//! every state with their reference as written, RepoDigests, platform, health, restart
//! policy and compose labels; a scan report carries them; a socket that is not an engine
//! is a scanner error naming it; a dry-run plans exactly the containers of a reference and
//! sends the registry nothing.

mod docker_support;

use canopy_agent::docker::{inventory, DockerConfig};
use canopy_agent::scan::{self, ScanOptions};
use canopy_api_types::docker::ImageTarget;
use canopy_api_types::updates::PackageManager;
use docker_support::{docker, ready, Lab, SOCKET};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn engine() -> DockerConfig {
    DockerConfig::with_socket(SOCKET)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inventory_lists_every_container_with_its_image_health_and_compose_service() {
    if !ready(true) {
        return;
    }
    let lab = Lab::start("inv");
    let v1 = lab.image("v1", true);
    let reference = format!("{}:stable", lab.repo("web"));
    let digest = lab.push(&v1, &reference);
    let web = lab.name("web");
    lab.run(
        &web,
        &[
            "--restart",
            "unless-stopped",
            "--health-cmd",
            "test -f /healthy",
            "--health-interval",
            "1s",
            "-e",
            "MODE=prod",
            "--label",
            "team=web",
        ],
        &reference,
    );
    let idle = lab.name("idle");
    docker(&["create", "--name", &idle, "--network", "host", &reference]);
    // A compose project with two config files (docker-compose v1).
    let project = lab.name("shop");
    let dir = lab.dir.path().join("shop");
    std::fs::create_dir_all(&dir).expect("project dir");
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            "version: \"2.4\"\nservices:\n  api:\n    image: {reference}\n    network_mode: host\n"
        ),
    )
    .expect("compose file");
    std::fs::write(
        dir.join("override.yml"),
        "version: \"2.4\"\nservices:\n  api:\n    restart: always\n",
    )
    .expect("override");
    let up = std::process::Command::new("docker-compose")
        .args([
            "-p",
            &project,
            "-f",
            "docker-compose.yml",
            "-f",
            "override.yml",
            "up",
            "-d",
        ])
        .current_dir(&dir)
        .output()
        .expect("docker-compose");
    assert!(
        up.status.success(),
        "docker-compose up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    lab.wait_healthy(&web);

    let (list, error) = inventory::scan(&engine(), T).await;
    assert_eq!(error, None);
    let list = list.expect("an engine: Some");
    let platform = docker(&["version", "--format", "{{.Server.Os}}/{{.Server.Arch}}"]);
    let c = list
        .iter()
        .find(|c| c.name == web)
        .expect("the running container");
    assert_eq!(c.image, reference, "the reference as written");
    assert_eq!(c.image_id, v1);
    assert!(
        c.repo_digests
            .contains(&format!("{}@{digest}", lab.repo("web"))),
        "{:?}",
        c.repo_digests
    );
    assert_eq!(c.platform, platform);
    assert_eq!(c.state, "running");
    assert_eq!(c.health.as_deref(), Some("healthy"));
    assert_eq!(c.restart_policy.as_deref(), Some("unless-stopped"));
    assert_eq!(c.compose, None);
    assert_eq!(c.id, docker_support::inspect(&web, "{{.Id}}"));
    let i = list
        .iter()
        .find(|c| c.name == idle)
        .expect("the created container");
    assert_eq!(i.state, "created");
    assert_eq!(i.health, None);
    let s = list
        .iter()
        .find(|c| c.compose.as_ref().is_some_and(|s| s.project == project))
        .expect("the compose container");
    let svc = s.compose.as_ref().expect("compose");
    assert_eq!(svc.service, "api");
    assert_eq!(
        svc.working_dir.as_deref(),
        Some(dir.to_str().expect("utf-8"))
    );
    assert_eq!(svc.config_files.len(), 2, "{:?}", svc.config_files);
    assert!(
        svc.config_files[0].ends_with("docker-compose.yml"),
        "{:?}",
        svc.config_files
    );
    assert!(
        svc.config_files[1].ends_with("override.yml"),
        "{:?}",
        svc.config_files
    );
    assert_eq!(s.restart_policy.as_deref(), Some("always"));
    let mut names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        list.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        "sorted by name"
    );

    // The scan report carries them.
    let report = scan::scan(&ScanOptions {
        managers: vec![PackageManager::Apt],
        timeout: T,
        docker: engine(),
        ..ScanOptions::default()
    })
    .await;
    assert!(
        !report.scanner_errors.iter().any(|e| e.scanner == "docker"),
        "{:?}",
        report.scanner_errors
    );
    let carried = report.containers.expect("containers in the report");
    assert!(carried
        .iter()
        .any(|c| c.name == web && c.health.as_deref() == Some("healthy")));
}

#[tokio::test]
async fn no_socket_is_no_docker_and_a_socket_that_is_no_engine_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let absent = dir.path().join("absent.sock");
    let (list, error) = inventory::scan(&DockerConfig::with_socket(&absent), T).await;
    assert_eq!((list, error), (None, None));

    // Something listens, but answers garbage.
    let garbage = dir.path().join("garbage.sock");
    let listener = std::os::unix::net::UnixListener::bind(&garbage).expect("bind");
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut conn = conn;
            let _ = std::io::Write::write_all(&mut conn, b"SSH-2.0-not-docker\r\n\r\n");
        }
    });
    let (list, error) = inventory::scan(&DockerConfig::with_socket(&garbage), T).await;
    assert_eq!(list, None);
    let e = error.expect("an error");
    assert_eq!(e.scanner, "docker");
    assert!(
        e.message.contains(garbage.to_str().expect("utf-8")),
        "{}",
        e.message
    );
    assert!(
        e.message.starts_with("cannot use the Docker engine at"),
        "{}",
        e.message
    );
    eprintln!("garbage socket: {}", e.message);

    // A file that is not a socket at all.
    let file = dir.path().join("file.sock");
    std::fs::write(&file, "").expect("file");
    let (list, error) = inventory::scan(&DockerConfig::with_socket(&file), T).await;
    assert_eq!(list, None);
    let e = error.expect("an error").message;
    assert!(
        e.contains(file.to_str().expect("utf-8")) && e.to_lowercase().contains("refused"),
        "{e}"
    );
    eprintln!("not a socket: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_plans_exactly_the_containers_of_the_reference_and_asks_no_registry() {
    if !ready(false) {
        return;
    }
    let lab = Lab::start("plan");
    let v1 = lab.image("v1", true);
    let v2 = lab.image("v2", true);
    let reference = format!("{}:stable", lab.repo("web"));
    let other = format!("{}:other", lab.repo("web"));
    let from = lab.push(&v1, &reference);
    lab.push(&v1, &other);
    let (a, b, c) = (lab.name("a"), lab.name("b"), lab.name("c"));
    lab.run(&b, &[], &reference);
    lab.run(&a, &[], &reference);
    lab.run(&c, &[], &other);
    // The registry now serves v2 as :stable; this host still has v1.
    let to = lab.publish(&v2, &reference);
    assert_ne!(from, to);

    let before = lab.registry_requests();
    assert!(before > 0, "the registry's access log counts the pushes");
    let target = ImageTarget {
        reference: reference.clone(),
        to_digest: to.clone(),
    };
    let r = canopy_agent::actions::images::dry_run(&[], &[target], &[], None, &engine(), T).await;
    assert_eq!(
        lab.registry_requests(),
        before,
        "a dry-run sends the registry nothing"
    );
    assert!(r.success, "{r:?}");
    assert_eq!(r.planned.len(), 1);
    let p = &r.planned[0];
    assert_eq!(p.package, reference);
    assert_eq!(p.manager, Some(PackageManager::Docker));
    assert_eq!(p.from_version.as_deref(), Some(from.as_str()));
    assert_eq!(p.to_version, to);
    assert!(p.requested);
    assert_eq!(
        p.containers,
        [a, b],
        "exactly the containers of that reference"
    );

    let nobody = format!("{}:stable", lab.repo("nobody"));
    let target = ImageTarget {
        reference: nobody.clone(),
        to_digest: to,
    };
    let r = canopy_agent::actions::images::dry_run(&[], &[target], &[], None, &engine(), T).await;
    assert!(!r.success);
    assert!(
        r.stderr.contains(&nobody) && r.stderr.contains("no container"),
        "{r:?}"
    );
}

/// `canopy-agent containers`: the list as root; as a user outside the `docker` group, the
/// socket named with "permission denied" (exit 2). The `[docker]` socket comes from the config.
#[tokio::test(flavor = "multi_thread")]
async fn the_containers_command_lists_them_and_names_a_socket_it_may_not_use() {
    if !ready(false) {
        return;
    }
    let lab = Lab::start("cli");
    let v1 = lab.image("v1", true);
    let reference = format!("{}:stable", lab.repo("web"));
    lab.push(&v1, &reference);
    let web = lab.name("web");
    lab.run(&web, &["--restart", "always"], &reference);
    // Readable by anyone (the binary and the config), as a user other than root needs them.
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("canopy-agent");
    std::fs::copy(env!("CARGO_BIN_EXE_canopy-agent"), &bin).expect("copy the agent");
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!("server_url = \"http://127.0.0.1:9\"\n\n[docker]\nsocket = \"{SOCKET}\"\n"),
    )
    .expect("config");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let config = config.to_str().expect("utf-8");

    let out = std::process::Command::new(&bin)
        .args(["--config", config, "containers", "--json"])
        .output()
        .expect("canopy-agent containers");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<canopy_api_types::docker::Container> =
        serde_json::from_slice(&out.stdout).expect("a JSON list");
    let c = list.iter().find(|c| c.name == web).expect("the container");
    assert_eq!(
        (c.image.as_str(), c.restart_policy.as_deref()),
        (reference.as_str(), Some("always"))
    );
    let out = std::process::Command::new(&bin)
        .args(["--config", config, "containers"])
        .output()
        .expect("canopy-agent containers");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&web) && l.contains(&reference)),
        "{table}"
    );

    if !canopy_agent::identity::is_root() {
        eprintln!(
            "SKIPPED the permission-denied half: only root can run the agent as another user here"
        );
        return;
    }
    let out = std::process::Command::new("runuser")
        .args([
            "-u",
            "nobody",
            "--",
            bin.to_str().expect("utf-8"),
            "--config",
            config,
            "containers",
        ])
        .output()
        .expect("runuser");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("docker: cannot use the Docker engine at {SOCKET}"))
            && err.contains("Permission denied"),
        "{err}"
    );
}
