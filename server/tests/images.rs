//! Docker inside guests through the real server, on both backends, against a real
//! `docker-registry` (distribution 2.8) on 127.0.0.1: agents report their containers, which
//! appear under their guests; a check cycle asks each reference once (counted in the
//! registry's own access log) and finds nothing on an up-to-date fleet, a multi-platform image
//! included; a re-pushed tag is an update for exactly the containers on it, shown in the
//! tree, the container list and the updates; a host reporting the new digest closes its row
//! with no request; a new reference is checked on its own shortly after the report that
//! brings it.

mod common;
#[path = "common/registry.rs"]
mod registry;

use canopy_api_types::agent::ReportUpload;
use canopy_api_types::docker::{ComposeService, Container};
use canopy_api_types::updates::{PackageManager, UpdateFilter};
use canopy_inventory::TreeNode;
use common::{eventually, spawn_app_with, start_sim, Backend, ProtocolAgent, TestApp};
use registry::{LogLine, Registry};
use std::time::Duration;

const SECRET: &str = "0b6f2a1c-3d4e-4f5a-8b9c-1d2e3f4a5b6c";

fn estate() -> String {
    let mut s = format!(
        "[[clusters]]\nname = \"home\"\n[[clusters.tokens]]\nid = \"canopy@pve!img\"\n\
         secret = \"{SECRET}\"\nrole = \"PVEAuditor\"\n[[clusters.nodes]]\nname = \"pve1\"\n"
    );
    for i in 1..=4 {
        s.push_str(&format!(
            "[[clusters.guests]]\nvmid = {}\ntype = \"lxc\"\nnode = \"pve1\"\nname = \"ct{i}\"\n",
            100 + i
        ));
    }
    s
}

fn guest(i: usize) -> String {
    format!("cluster/home/node/pve1/lxc/{}", 101 + i)
}

fn find<'a>(trees: &'a [TreeNode], id: &str) -> Option<&'a TreeNode> {
    trees.iter().find_map(|t| {
        if t.id.as_str() == id {
            Some(t)
        } else {
            find(&t.children, id)
        }
    })
}

async fn vertex(app: &TestApp, id: &str) -> TreeNode {
    let tree = app.admin.tree(None).await.unwrap();
    find(&tree.trees, id)
        .unwrap_or_else(|| panic!("{id} is not in the tree"))
        .clone()
}

fn container(name: &str, reference: &str, repo_digest: &str) -> Container {
    Container {
        name: name.into(),
        id: format!("{:0>64}", name.len()),
        image: reference.into(),
        image_id: format!("sha256:{:0>64}", 1),
        repo_digests: vec![repo_digest.into()],
        platform: "linux/amd64".into(),
        state: "running".into(),
        health: None,
        restart_policy: Some("unless-stopped".into()),
        compose: name.ends_with('0').then(|| ComposeService {
            project: "shop".into(),
            service: name.into(),
            working_dir: Some("/srv/compose/shop".into()),
            config_files: vec!["/srv/compose/shop/docker-compose.yml".into()],
        }),
    }
}

async fn report(agent: &ProtocolAgent, containers: &[Container]) {
    let accepted = agent
        .client
        .upload_report(&ReportUpload {
            report_hash: format!("{:x}", uuid::Uuid::new_v4().as_u128()),
            reboot_required: false,
            scanned_at: chrono::Utc::now(),
            scanner_errors: vec![],
            updates: vec![],
            containers: Some(
                containers
                    .iter()
                    .map(|c| serde_json::to_value(c).unwrap())
                    .collect(),
            ),
        })
        .await
        .unwrap();
    assert!(accepted.rejected_containers.is_empty(), "{accepted:?}");
}

fn manifest_reads(lines: &[LogLine]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter(|l| l.is_manifest_read())
        .map(|l| (l.method.clone(), l.uri.clone()))
        .collect()
}

async fn fleet(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| s.image_check_interval_secs = 0).await else {
        return;
    };
    let sim = start_sim(&estate()).await;
    app.add_cluster("home", &sim, &format!("canopy@pve!img={SECRET}"))
        .await;
    let mut agents = Vec::new();
    for i in 1..=4 {
        agents.push(app.enrol(&format!("ct{i}")).await);
    }
    let reg = Registry::start().await;
    let a = reg.addr.clone();
    let web = reg.push_index("canopy/web", "stable", "web v1").await;
    let db = reg
        .push_image("canopy/db", "15", ("linux", "amd64"), "db v1")
        .await;
    let cache = reg.push_index("canopy/cache", "7", "cache v1").await;
    let refs = [
        (
            format!("{a}/canopy/web:stable"),
            format!("{a}/canopy/web@{}", web.index),
        ),
        (format!("{a}/canopy/db:15"), format!("{a}/canopy/db@{db}")),
        (
            format!("{a}/canopy/cache:7"),
            format!("{a}/canopy/cache@{}", cache.index),
        ),
    ];
    // 20 containers on 4 guests sharing 3 references (two of them multi-platform indexes).
    let mut per_host: Vec<Vec<Container>> = vec![Vec::new(); 4];
    for i in 0..20 {
        let (reference, digest) = &refs[i % 3];
        per_host[i % 4].push(container(&format!("c{i}"), reference, digest));
    }
    for (agent, containers) in agents.iter().zip(&per_host) {
        report(agent, containers).await;
    }
    let c0 = vertex(&app, &format!("{}/docker/c0", guest(0))).await;
    assert_eq!(
        (c0.image.as_deref(), c0.status.as_deref()),
        (Some(refs[0].0.as_str()), Some("running"))
    );
    assert_eq!(vertex(&app, &guest(1)).await.children.len(), 5);

    let _ = reg.log.since_last_mark().await;
    let summary = app.admin.check_images().await.unwrap();
    let reads = manifest_reads(&reg.log.since_last_mark().await);
    assert_eq!(reads.len(), 3, "one request per reference: {reads:?}");
    assert!(reads.iter().all(|(m, _)| m == "HEAD"), "{reads:?}");
    assert_eq!(
        (
            summary.containers,
            summary.references,
            summary.heads,
            summary.gets,
            summary.updates
        ),
        (20, 3, 3, 0, 0),
        "{summary:?}"
    );
    let listed = app.admin.containers(None).await.unwrap();
    assert_eq!(listed.len(), 20);
    assert!(listed
        .iter()
        .all(|c| c.update.is_none() && c.check.as_ref().is_some_and(|k| k.error.is_none())));
    let multi = listed.iter().find(|c| c.container.name == "c2").unwrap();
    assert_eq!(
        multi.check.as_ref().unwrap().remote_digest.as_deref(),
        Some(cache.index.as_str()),
        "an up-to-date multi-platform image: its index digest"
    );
    assert_eq!(vertex(&app, "cluster/home").await.rollup.pending, 0);

    // A new web image: an update for exactly the 7 containers on that tag, one row per host.
    let web2 = reg.push_index("canopy/web", "stable", "web v2").await;
    let summary = app.admin.check_images().await.unwrap();
    // The new index matches no local digest: it is read once (a GET) to rule out a local
    // image that is its amd64 manifest; the next cycle has it cached.
    assert_eq!(
        (summary.heads, summary.gets, summary.updates),
        (3, 1, 7),
        "{summary:?}"
    );
    let summary = app.admin.check_images().await.unwrap();
    assert_eq!(
        (summary.heads, summary.gets, summary.updates),
        (3, 0, 7),
        "{summary:?}"
    );
    let listed = app.admin.containers(None).await.unwrap();
    let behind: Vec<&str> = listed
        .iter()
        .filter(|c| c.update.is_some())
        .map(|c| c.container.name.as_str())
        .collect();
    let mut want: Vec<String> = (0..20)
        .filter(|i| i % 3 == 0)
        .map(|i| format!("c{i}"))
        .collect();
    want.sort();
    let mut behind_sorted: Vec<String> = behind.iter().map(|s| s.to_string()).collect();
    behind_sorted.sort();
    assert_eq!(behind_sorted, want);
    let u = listed.iter().find(|c| c.container.name == "c0").unwrap();
    let u = u.update.as_ref().unwrap();
    assert_eq!(
        (u.from_digest.as_str(), u.to_digest.as_str()),
        (web.index.as_str(), web2.index.as_str())
    );
    let rows = app
        .admin
        .updates(&UpdateFilter {
            manager: Some(PackageManager::Docker),
            ..UpdateFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.total, 4, "one image update per host: {:?}", rows.items);
    let c0 = vertex(&app, &format!("{}/docker/c0", guest(0))).await;
    assert_eq!(c0.counts.pending, 1);
    assert_eq!(
        vertex(&app, "cluster/home").await.rollup.pending,
        7,
        "each container that would move counts once"
    );
    let selected = app
        .admin
        .containers(Some("cluster/home/**[image=canopy/web]"))
        .await
        .unwrap();
    assert_eq!(selected.len(), 7);

    // Host 1 updated its web containers itself: its report closes its row, no request.
    let _ = reg.log.since_last_mark().await;
    let updated: Vec<Container> = per_host[0]
        .iter()
        .map(|c| {
            let mut c = c.clone();
            if c.image == refs[0].0 {
                c.repo_digests = vec![format!("{a}/canopy/web@{}", web2.index)];
            }
            c
        })
        .collect();
    report(&agents[0], &updated).await;
    assert!(manifest_reads(&reg.log.since_last_mark().await).is_empty());
    let rows = app
        .admin
        .updates(&UpdateFilter {
            manager: Some(PackageManager::Docker),
            host_id: Some(agents[0].host_id),
            ..UpdateFilter::default()
        })
        .await
        .unwrap();
    assert!(
        rows.items.iter().all(|r| r.status.is_closed()),
        "{:?}",
        rows.items
    );
    assert_eq!(vertex(&app, &guest(0)).await.rollup.pending, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_checks_and_updates_sqlite() {
    fleet(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_checks_and_updates_postgres() {
    fleet(Backend::Postgres).await;
}

/// With checks scheduled, a container on a reference never checked is checked on its own
/// shortly after the report that brought it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_reference_is_checked_soon_after_its_report() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| s.image_check_interval_secs = 3600).await
    else {
        return;
    };
    let reg = Registry::start().await;
    let db = reg
        .push_image("canopy/db", "15", ("linux", "amd64"), "db v1")
        .await;
    let agent = app.enrol("lonely").await;
    let reference = format!("{}/canopy/db:15", reg.addr);
    report(
        &agent,
        &[container(
            "db",
            &reference,
            &format!("{}/canopy/db@{db}", reg.addr),
        )],
    )
    .await;
    let checked = eventually(Duration::from_secs(60), || async {
        let list = app.admin.containers(None).await.unwrap();
        list.into_iter().find_map(|c| c.check)
    })
    .await;
    assert_eq!(checked.remote_digest.as_deref(), Some(db.as_str()));
    assert_eq!(
        manifest_reads(&reg.log.since_last_mark().await).len(),
        1,
        "only the new reference"
    );
}

/// A registry answering `429` with `Retry-After` (nginx's `limit_req` in front of the real
/// registry): Canopy records the wait and the budget it announced, asks nothing before the
/// time, and checks again by itself once it may.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_answering_429_is_waited_for_and_checked_again() {
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| s.image_check_interval_secs = 3600).await
    else {
        return;
    };
    let reg = Registry::start().await;
    let front = registry::Nginx::start(&reg.addr).await;
    let db = reg
        .push_image("canopy/db", "15", ("linux", "amd64"), "db v1")
        .await;
    let agent = app.enrol("limited").await;
    let reference = format!("{}/canopy/db:15", front.addr);
    report(
        &agent,
        &[container(
            "db",
            &reference,
            &format!("{}/canopy/db@{db}", front.addr),
        )],
    )
    .await;
    // The new reference is checked on its own: one request, answered.
    let first = eventually(Duration::from_secs(60), || async {
        let list = app.admin.containers(None).await.unwrap();
        list.into_iter().find_map(|c| c.check)
    })
    .await;
    assert_eq!(first.error, None);
    // Asked again at once: 429, Retry-After 2.
    let summary = app.admin.check_images().await.unwrap();
    assert_eq!(summary.errors, 1, "{summary:?}");
    let status = &summary.registries[0];
    assert_eq!(
        status.remaining,
        Some(0),
        "the budget it announced: {status:?}"
    );
    let retry_after = status.retry_after.expect("the wait is recorded");
    let registries = app.admin.registries().await.unwrap();
    assert_eq!(registries[0].retry_after, Some(retry_after), "and shown");
    let listed = app.admin.containers(None).await.unwrap();
    let error = listed[0].check.as_ref().unwrap().error.clone().unwrap();
    assert!(error.contains("429"), "{error}");
    let before = front.log.since_last_mark().await;
    assert_eq!(
        before
            .iter()
            .filter(|l| l.is_manifest_read())
            .map(|l| l.status)
            .collect::<Vec<_>>(),
        [200, 429]
    );
    // Before the time nothing is sent; after it, Canopy checks again by itself.
    let held = app.admin.check_images().await.unwrap();
    if chrono::Utc::now() < retry_after {
        assert_eq!(held.heads + held.gets, 0, "{held:?}");
    }
    let again = eventually(Duration::from_secs(60), || async {
        let list = app.admin.containers(None).await.unwrap();
        list.into_iter()
            .find_map(|c| c.check)
            .filter(|c| c.error.is_none() && c.checked_at > retry_after)
    })
    .await;
    assert_eq!(again.remote_digest.as_deref(), Some(db.as_str()));
    let after: Vec<u16> = front
        .log
        .since_last_mark()
        .await
        .iter()
        .filter(|l| l.is_manifest_read())
        .map(|l| l.status)
        .collect();
    assert_eq!(after, [200], "one request, after the wait");
}

/// A registry's wait outlives a restart: a server starting on a database where a registry
/// asked (a `429`) not to be asked before a time asks it nothing before that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registrys_wait_outlives_a_restart() {
    let reg = Registry::start().await;
    let db = reg
        .push_image("canopy/db", "15", ("linux", "amd64"), "db v1")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("before.db").display());
    let until = chrono::Utc::now() + chrono::Duration::hours(1);
    {
        // What the server that stopped had stored after the registry's 429.
        let store = canopy_store::open(&url).await.unwrap();
        let status = canopy_api_types::docker::RegistryStatus {
            registry: reg.addr.clone(),
            remaining: Some(0),
            retry_after: Some(until),
            checked_at: Some(chrono::Utc::now()),
            ..Default::default()
        };
        store.save_image_checks(&[], &[status]).await.unwrap();
    }
    let Some(app) = spawn_app_with(Backend::Sqlite, |s| {
        s.database_url = url.clone();
        s.image_check_interval_secs = 0;
    })
    .await
    else {
        return;
    };
    let agent = app.enrol("after-restart").await;
    let reference = format!("{}/canopy/db:15", reg.addr);
    report(
        &agent,
        &[container(
            "db",
            &reference,
            &format!("{}/canopy/db@{db}", reg.addr),
        )],
    )
    .await;
    let _ = reg.log.since_last_mark().await;
    let summary = app.admin.check_images().await.unwrap();
    assert_eq!(
        (summary.heads, summary.gets, summary.errors),
        (0, 0, 1),
        "{summary:?}"
    );
    assert!(manifest_reads(&reg.log.since_last_mark().await).is_empty());
    let listed = app.admin.containers(None).await.unwrap();
    let check = listed[0].check.as_ref().unwrap();
    assert_eq!(check.retry_after, Some(until));
}
