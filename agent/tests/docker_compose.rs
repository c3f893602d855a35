//! A compose service updated by the agent stays compose's: docker-compose (v1, the one on
//! this machine) recreates it from the project's own files after the agent pulled the
//! approved digest and moved the tag, so its labels stay and a following `docker-compose up
//! -d` leaves it alone (same container id). A new image that fails its healthcheck: the
//! service is back on the old image, running and still compose's, and the reason is given.

mod docker_support;

use docker_support::{docker, inspect, ready, update, Lab};
use std::path::Path;
use std::process::Command;

/// `docker-compose -p PROJECT up -d` in `dir`; its output.
fn compose_up(dir: &Path, project: &str) -> String {
    let out = Command::new("docker-compose")
        .args(["-p", project, "up", "-d"])
        .current_dir(dir)
        .output()
        .expect("docker-compose");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "docker-compose up -d: {text}");
    text
}

fn short(id: &str) -> String {
    format!("sha256:{}", &id["sha256:".len().."sha256:".len() + 12])
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compose_service_keeps_its_labels_and_compose_leaves_it_alone_afterwards() {
    if !ready(true) {
        return;
    }
    let lab = Lab::start("compose");
    let v1 = lab.image("v1", true);
    let v2 = lab.image("v2", true);
    let broken = lab.image("broken", false);
    let reference = format!("{}:stable", lab.repo("web"));
    lab.push(&v1, &reference);
    let project = lab.name("shop");
    let dir = lab.dir.path().join("shop");
    std::fs::create_dir_all(&dir).expect("project dir");
    std::fs::write(
        dir.join("docker-compose.yml"),
        format!(
            r#"version: "2.4"
services:
  web:
    image: {reference}
    network_mode: host
    environment:
      MODE: prod
    labels:
      team: web
    healthcheck:
      test: ["CMD", "test", "-f", "/healthy"]
      interval: 1s
      retries: 2
"#
        ),
    )
    .expect("compose file");
    compose_up(&dir, &project);
    let web = format!("{project}_web_1");
    lab.wait_healthy(&web);
    let first = inspect(&web, "{{.Id}}");
    let to = lab.publish(&v2, &reference);

    let r = update(
        &reference,
        &to,
        &[&format!("{web} (compose {project}/web)")],
    )
    .await;
    assert!(r.success, "{r:#?}");
    assert!(
        r.stdout
            .contains(&format!("docker-compose --project-name {project}"))
            && r.stdout.contains("up -d --no-deps web"),
        "{}",
        r.stdout
    );
    let moved = inspect(&web, "{{.Id}}");
    assert_ne!(moved, first, "compose recreated it");
    assert_eq!(inspect(&web, "{{.Image}}"), v2);
    assert_eq!(docker(&["exec", &web, "cat", "/version"]), "v2");
    assert_eq!(
        inspect(
            &web,
            "{{index .Config.Labels \"com.docker.compose.project\"}}"
        ),
        project
    );
    assert_eq!(
        inspect(
            &web,
            "{{index .Config.Labels \"com.docker.compose.service\"}}"
        ),
        "web"
    );
    assert!(!inspect(
        &web,
        "{{index .Config.Labels \"com.docker.compose.config-hash\"}}"
    )
    .is_empty());
    assert_eq!(inspect(&web, "{{index .Config.Labels \"team\"}}"), "web");
    assert!(inspect(&web, "{{json .Config.Env}}").contains("\"MODE=prod\""));
    assert_eq!(inspect(&web, "{{.State.Health.Status}}"), "healthy");

    // The user's next `up -d` finds nothing to change.
    let out = compose_up(&dir, &project);
    assert_eq!(
        inspect(&web, "{{.Id}}"),
        moved,
        "compose left it alone: {out}"
    );
    assert!(out.contains("up-to-date"), "{out}");

    // A new image whose healthcheck fails: back on v2, through compose, with the reason.
    let bad = lab.publish(&broken, &reference);
    let r = update(&reference, &bad, &[&web]).await;
    assert!(!r.success, "{r:#?}");
    for part in [
        format!("{web}: new image {}", short(&broken)),
        "unhealthy after".into(),
        format!("back on {}", short(&v2)),
    ] {
        assert!(r.summary.contains(&part), "no {part:?} in: {}", r.summary);
    }
    assert_eq!(inspect(&web, "{{.Image}}"), v2);
    assert_eq!(inspect(&web, "{{.State.Status}}"), "running");
    lab.wait_healthy(&web);
    assert_eq!(
        inspect(
            &web,
            "{{index .Config.Labels \"com.docker.compose.project\"}}"
        ),
        project
    );
    assert_eq!(
        inspect(&reference, "{{.Id}}"),
        v2,
        "the tag is back on the old image"
    );
    let back = inspect(&web, "{{.Id}}");
    let out = compose_up(&dir, &project);
    assert_eq!(
        inspect(&web, "{{.Id}}"),
        back,
        "compose leaves the rolled-back one alone too: {out}"
    );
}
