//! Docker inside guests end to end, in the lab (`cargo xtask lab up --docker-guests`): the
//! real agent deployed into the four Docker guests 201–204 (each with its own engine), their
//! 21 containers under their guests in the tree, a check cycle that asks the lab registry once
//! per reference (its own access log) and finds the multi-platform image up to date; a new
//! `canopy/web` image updated through one bulk operation that names the containers
//! (`[image=canopy/web]`) — compose services through compose, keeping their labels so a
//! later `docker-compose up -d` leaves them alone, the others recreated with the same
//! configuration; a new image whose healthcheck fails, every container back on the old one
//! and running, the operation saying why; and back to v1 at the end, as the lab started.

mod common;

use canopy_api_types::bulk::{Canary, RebootPolicy, SnapshotPolicy, UpdateOptions};
use canopy_api_types::deploy::{DeployAction, DeployRequest, ItemState, OperationState};
use canopy_api_types::updates::PackageManager;
use common::docker_lab::{guest_docker, image_push, DockerLab, RegistryLog};
use common::eventually;
use common::lab::{in_guest, Lab};
use common::update_lab::{approve, plan, setup_cluster, wait, Env};
use std::collections::BTreeMap;
use std::time::Duration;

const WEB: &str = "canopy/web";
const DOCK: &str = "cluster/dock/node/pve1";

fn options() -> UpdateOptions {
    UpdateOptions {
        snapshot: SnapshotPolicy::Off,
        reboot: RebootPolicy::Never,
        canary: Canary {
            count: 0,
            targets: vec![],
        },
        ..Default::default()
    }
}

/// Every web container's (guest container, name) → the digest of `canopy/web` it runs.
fn web_digests(dl: &DockerLab) -> BTreeMap<(String, String), String> {
    let mut out = BTreeMap::new();
    for g in dl.guests() {
        for c in g.containers.iter().filter(|c| c.image == "web") {
            let image = guest_docker(&g.container, &["inspect", "-f", "{{.Image}}", &c.name]);
            let digests = guest_docker(
                &g.container,
                &[
                    "image",
                    "inspect",
                    "-f",
                    "{{json .RepoDigests}}",
                    image.trim(),
                ],
            );
            let digests: Vec<String> = serde_json::from_str(digests.trim()).unwrap();
            let d = digests
                .iter()
                .find_map(|d| d.split_once('@').map(|(_, d)| d.to_string()))
                .unwrap_or_default();
            out.insert((g.container.clone(), c.name.clone()), d);
        }
    }
    out
}

fn running(container: &str, name: &str) -> String {
    guest_docker(container, &["inspect", "-f", "{{.State.Status}}", name])
        .trim()
        .to_string()
}

/// Plans the web containers' update, approves it and waits for its end.
async fn update_web(env: &Env) -> canopy_api_types::deploy::Operation {
    let op = plan(env, &format!("{DOCK}/**[image={WEB}]"), options()).await;
    for item in &op.items {
        let plan = item.update.as_ref().and_then(|d| d.plan.as_ref()).unwrap();
        assert!(
            plan.packages
                .iter()
                .all(|p| p.manager == Some(PackageManager::Docker) && p.package.contains(WEB)),
            "only the web image is planned: {plan:?}"
        );
        assert!(
            plan.packages.iter().all(|p| !p.containers.is_empty()),
            "with its containers: {plan:?}"
        );
    }
    approve(env, &op).await;
    wait(env, op.id, |o| o.state.is_terminal()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_updates_through_the_bulk_plan_with_compose_and_rollback() {
    let Some(lab) = Lab::from_env("Docker image updates end to end") else {
        return;
    };
    let dl = DockerLab::from_env("Docker image updates end to end").unwrap();
    let env = setup_cluster(&lab, "dock", &dl.sim_file(), |s| {
        s.image_check_interval_secs = 0;
    })
    .await;
    let guests = dl.guests();
    let total: usize = guests.iter().map(|g| g.containers.len()).sum();

    // Without an agent, an agentless scan (pct exec, the guest's Docker CLI) reads 204's
    // containers.
    let scanned = env
        .app
        .admin
        .agentless_scan(&format!("{DOCK}/lxc/204"))
        .await
        .unwrap();
    assert!(scanned[0].host_id.is_some(), "{scanned:?}");
    let seen = env.app.admin.containers(None).await.unwrap();
    let mut names: Vec<String> = seen.iter().map(|c| c.container.name.clone()).collect();
    names.sort();
    let mut want: Vec<String> = guests[3]
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    want.sort();
    assert_eq!(names, want);
    assert!(seen.iter().all(|c| c
        .id
        .as_deref()
        .is_some_and(|id| id.starts_with(&format!("{DOCK}/lxc/204/docker/")))));

    // Agents in the four Docker guests; their containers reach the tree.
    let deploy = env
        .app
        .admin
        .deploy(&DeployRequest {
            selector: format!("{DOCK}/lxc/*"),
            action: DeployAction::Deploy,
        })
        .await
        .unwrap();
    let deployed = env
        .app
        .admin
        .follow_operation(deploy.id, |_| {})
        .await
        .unwrap();
    assert_eq!(deployed.state, OperationState::Succeeded, "{deployed:#?}");
    eventually(Duration::from_secs(120), || async {
        let n = env.app.admin.containers(None).await.unwrap().len();
        (n == total).then_some(())
    })
    .await;
    let tree = env
        .app
        .admin
        .tree(Some(&format!("{DOCK}/lxc/201/docker/*")))
        .await
        .unwrap();
    let json = serde_json::to_string(&tree).unwrap();
    for c in &guests[0].containers {
        assert!(
            json.contains(&format!("{DOCK}/lxc/201/docker/{}", c.name)),
            "{json}"
        );
    }

    // As the lab started: the tag on v1 and every web container on it (a run that failed
    // half-way may have left them elsewhere).
    let v1 = dl.image("web").digest;
    assert_eq!(image_push(WEB, "stable", "v1"), v1);
    if web_digests(&dl).values().any(|d| *d != v1) {
        env.app.admin.check_images().await.unwrap();
        let back = update_web(&env).await;
        assert_eq!(back.state, OperationState::Succeeded, "{back:#?}");
    }

    // One request per reference for the whole fleet; nothing to update, the multi-platform
    // image included.
    let log = RegistryLog::mark(&dl);
    let summary = env.app.admin.check_images().await.unwrap();
    let references: std::collections::BTreeSet<String> = guests
        .iter()
        .flat_map(|g| g.containers.iter().map(|c| c.reference.clone()))
        .collect();
    let reads: Vec<(String, u16)> = dl
        .images()
        .iter()
        .flat_map(|i| log.manifest_requests(&i.repository))
        .collect();
    assert_eq!(reads.len(), references.len(), "{reads:?}");
    assert!(
        reads.iter().all(|(r, _)| r.starts_with("HEAD ")),
        "{reads:?}"
    );
    assert_eq!((summary.updates, summary.errors), (0, 0), "{summary:?}");
    let listed = env.app.admin.containers(None).await.unwrap();
    let multi = listed
        .iter()
        .find(|c| c.container.name == "multi-1")
        .unwrap();
    assert!(multi.update.is_none() && multi.check.as_ref().unwrap().error.is_none());

    // A new web image: the web containers, and only they, are behind.
    let v2 = image_push(WEB, "stable", "v2");
    let summary = env.app.admin.check_images().await.unwrap();
    let webs = web_digests(&dl);
    assert_eq!(summary.updates as usize, webs.len(), "{summary:?}");
    let compose_id = |name: &str| {
        guest_docker(&guests[0].container, &["inspect", "-f", "{{.Id}}", name])
            .trim()
            .to_string()
    };
    let labels_before = guest_docker(
        &guests[0].container,
        &["inspect", "-f", "{{json .Config.Labels}}", "shop_web_1"],
    );

    let done = update_web(&env).await;
    assert_eq!(done.state, OperationState::Succeeded, "{done:#?}");
    assert!(
        web_digests(&dl).values().all(|d| *d == v2),
        "{:?}",
        web_digests(&dl)
    );
    for g in &guests {
        for c in g.containers.iter().filter(|c| c.image == "web") {
            assert_eq!(running(&g.container, &c.name), "running", "{}", c.name);
        }
    }
    // The compose service kept its labels: compose itself leaves it alone afterwards.
    let labels_after = guest_docker(
        &guests[0].container,
        &["inspect", "-f", "{{json .Config.Labels}}", "shop_web_1"],
    );
    // The container's own labels (compose's, the lab's); the image's come with the image, and
    // compose's config hash covers the image id (so compose knows it is current).
    let keep = |l: &str| -> BTreeMap<String, serde_json::Value> {
        let v: BTreeMap<String, serde_json::Value> = serde_json::from_str(l.trim()).unwrap();
        v.into_iter()
            .filter(|(k, _)| {
                !k.starts_with("org.opencontainers.image.") && k != "com.docker.compose.config-hash"
            })
            .collect()
    };
    assert_eq!(keep(&labels_after), keep(&labels_before));
    let id = compose_id("shop_web_1");
    in_guest(
        &guests[0].container,
        "cd /srv/compose/shop && docker-compose up -d",
    );
    assert_eq!(
        compose_id("shop_web_1"),
        id,
        "docker-compose up -d recreated it"
    );
    let rows = env.app.admin.containers(None).await.unwrap();
    assert!(
        rows.iter().all(|c| c.update.is_none()),
        "nothing left behind"
    );

    // A new image whose healthcheck fails: back on v2 and running, and the operation says why.
    let _broken = image_push(WEB, "stable", "broken");
    env.app.admin.check_images().await.unwrap();
    let failed = update_web(&env).await;
    assert_ne!(failed.state, OperationState::Succeeded, "{failed:#?}");
    for item in &failed.items {
        assert_eq!(item.state, ItemState::Failed, "{item:#?}");
        let why = item.message.clone().unwrap_or_default();
        assert!(why.contains("unhealthy") || why.contains("health"), "{why}");
    }
    assert!(
        web_digests(&dl).values().all(|d| *d == v2),
        "{:?}",
        web_digests(&dl)
    );
    for g in &guests {
        for c in g.containers.iter().filter(|c| c.image == "web") {
            assert_eq!(running(&g.container, &c.name), "running", "{}", c.name);
        }
    }

    // Back to v1, as the lab started.
    assert_eq!(image_push(WEB, "stable", "v1"), v1);
    env.app.admin.check_images().await.unwrap();
    let back = update_web(&env).await;
    assert_eq!(back.state, OperationState::Succeeded, "{back:#?}");
    assert!(web_digests(&dl).values().all(|d| *d == v1));
}
