//! Image updates of containers not managed by compose, against the real engine and a real
//! registry: moved to exactly the approved digest with their configuration (env, labels,
//! restart policy, healthcheck, volumes); a new image that fails its healthcheck rolled
//! back (the same container, running, on the old image) with the reason; a digest the
//! registry no longer serves refused before anything changes. Each through the agent's
//! install command, as the server sends it (a pinned entry of manager `docker`).

mod docker_support;

use docker_support::{docker, exists, inspect, ready, update, Lab};
use std::process::Command;

fn no_leftovers(lab: &Lab, name: &str, repo: &str) {
    let names = docker(&["ps", "-a", "--format", "{{.Names}}"]);
    for left in [format!("{name}-canopy-old"), format!("{name}-canopy-new")] {
        assert!(!names.lines().any(|n| n == left), "{left} left behind");
    }
    assert!(
        !exists(&format!("{repo}:canopy-previous")),
        "the canopy-previous tag is dropped"
    );
    let _ = lab;
}

/// `docker run` arguments of the web container: a healthcheck, env, a label, a restart
/// policy, a named and an anonymous volume.
fn web_args(volume: &str) -> Vec<String> {
    [
        "--restart",
        "unless-stopped",
        "--health-cmd",
        "test -f /healthy",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "-e",
        "MODE=prod",
        "--label",
        "team=web",
        "-v",
        &format!("{volume}:/data"),
        "-v",
        "/cache",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_moves_to_the_approved_digest_with_its_configuration() {
    if !ready(false) {
        return;
    }
    let lab = Lab::start("move");
    let v1 = lab.image("v1", true);
    let v2 = lab.image("v2", true);
    let repo = lab.repo("web");
    let reference = format!("{repo}:stable");
    lab.push(&v1, &reference);
    let web = lab.name("web");
    let args = web_args(&lab.name("data"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let old_id = lab.run(&web, &args, &reference);
    lab.wait_healthy(&web);
    docker(&[
        "exec",
        &web,
        "sh",
        "-c",
        "echo named > /data/x; echo anonymous > /cache/y",
    ]);
    let to = lab.publish(&v2, &reference);

    let r = update(&reference, &to, &[&web]).await;
    assert!(r.success, "{r:#?}");
    for step in [
        "pulling",
        &format!("@{to}"),
        "canopy-previous",
        "started the new container",
        "healthy after",
    ] {
        assert!(
            r.stdout.contains(step),
            "no step {step:?} in:\n{}",
            r.stdout
        );
    }
    assert!(r.summary.contains(&reference), "{}", r.summary);

    let new_id = inspect(&web, "{{.Id}}");
    assert_ne!(new_id, old_id, "recreated");
    assert_eq!(inspect(&web, "{{.Image}}"), v2);
    assert_eq!(
        inspect(&web, "{{.Config.Image}}"),
        reference,
        "the reference as written"
    );
    assert_eq!(docker(&["exec", &web, "cat", "/version"]), "v2");
    assert_eq!(inspect(&web, "{{.State.Status}}"), "running");
    assert_eq!(inspect(&web, "{{.State.Health.Status}}"), "healthy");
    assert!(inspect(&web, "{{json .Config.Env}}").contains("\"MODE=prod\""));
    assert_eq!(inspect(&web, "{{index .Config.Labels \"team\"}}"), "web");
    assert_eq!(
        inspect(&web, "{{.HostConfig.RestartPolicy.Name}}"),
        "unless-stopped"
    );
    assert_eq!(
        inspect(&web, "{{json .Config.Healthcheck.Test}}"),
        r#"["CMD-SHELL","test -f /healthy"]"#
    );
    assert_eq!(inspect(&web, "{{.HostConfig.NetworkMode}}"), "host");
    assert_eq!(
        docker(&["exec", &web, "cat", "/data/x"]),
        "named",
        "the named volume stays"
    );
    assert_eq!(
        docker(&["exec", &web, "cat", "/cache/y"]),
        "anonymous",
        "the anonymous volume too"
    );
    assert_eq!(
        inspect(&reference, "{{.Id}}"),
        v2,
        "the tag is on the new image"
    );
    no_leftovers(&lab, &web, &repo);
    assert!(
        Command::new("docker")
            .args(["inspect", &old_id])
            .output()
            .is_ok_and(|o| !o.status.success()),
        "the old container is removed once the new one is healthy"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_image_that_fails_its_healthcheck_is_rolled_back() {
    if !ready(false) {
        return;
    }
    let lab = Lab::start("sick");
    let v1 = lab.image("v1", true);
    let broken = lab.image("broken", false);
    let repo = lab.repo("web");
    let reference = format!("{repo}:stable");
    lab.push(&v1, &reference);
    let web = lab.name("web");
    let args = web_args(&lab.name("data"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let old_id = lab.run(&web, &args, &reference);
    lab.wait_healthy(&web);
    let to = lab.publish(&broken, &reference);

    let r = update(&reference, &to, &[&web]).await;
    assert!(!r.success, "{r:#?}");
    let short = |id: &str| format!("sha256:{}", &id["sha256:".len().."sha256:".len() + 12]);
    for part in [
        format!("{web}: new image {}", short(&broken)),
        "unhealthy after".to_string(),
        "(healthcheck: exit code 1".to_string(),
        format!("back on {}", short(&v1)),
    ] {
        assert!(
            r.summary.contains(&part),
            "no {part:?} in the reason: {}",
            r.summary
        );
    }
    assert!(
        r.stdout.contains("rolling back") && r.stdout.contains("renamed back"),
        "{}",
        r.stdout
    );

    assert_eq!(
        inspect(&web, "{{.Id}}"),
        old_id,
        "the old container itself is back"
    );
    assert_eq!(inspect(&web, "{{.Image}}"), v1);
    assert_eq!(inspect(&web, "{{.State.Status}}"), "running");
    assert_eq!(docker(&["exec", &web, "cat", "/version"]), "v1");
    lab.wait_healthy(&web);
    assert_eq!(
        inspect(&reference, "{{.Id}}"),
        v1,
        "the tag is back on the old image"
    );
    no_leftovers(&lab, &web, &repo);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_digest_the_registry_no_longer_serves_is_refused_before_anything_changes() {
    if !ready(false) {
        return;
    }
    let lab = Lab::start("gone");
    let v1 = lab.image("v1", true);
    let v3 = lab.image("v3", true);
    let repo = lab.repo("web");
    let reference = format!("{repo}:stable");
    lab.push(&v1, &reference);
    let web = lab.name("web");
    let old_id = lab.run(&web, &[], &reference);
    let to = lab.publish(&v3, &reference);
    // Approved, then gone from the registry (and never on this host).
    docker(&["rmi", "-f", &v3]);
    lab.delete_manifest(&repo, &to).await;

    let r = update(&reference, &to, &[&web]).await;
    assert!(!r.success, "{r:#?}");
    assert!(r.summary.starts_with("refused:"), "{}", r.summary);
    assert!(
        r.summary.contains(&format!("{repo}@{to}")) && r.summary.contains(&reference),
        "{}",
        r.summary
    );
    assert!(r.summary.contains("nothing was changed"), "{}", r.summary);
    assert_eq!(inspect(&web, "{{.Id}}"), old_id);
    assert_eq!(inspect(&web, "{{.Image}}"), v1);
    assert_eq!(inspect(&web, "{{.State.Status}}"), "running");
    assert_eq!(inspect(&reference, "{{.Id}}"), v1);
    no_leftovers(&lab, &web, &repo);
}
