//! `GET /tree` is served from the in-memory tree (docs/design.md §3, §7.2), never rebuilt per
//! request, and is still fresh, on both backends: after a discovery pass adds and removes
//! guests, after an agent registers, checks in, changes who it runs as, falls silent and
//! comes back, after its reports change its counts and after it is deleted, with the
//! rollups of every level following; `depth` lists fewer levels with the same rollups.

mod common;

use canopy_api_types::agent::CheckinRequest;
use canopy_api_types::clusters::{CreateCluster, TreeResponse};
use canopy_inventory::TreeNode;
use canopy_pve_sim::{GuestKind, GuestSpec, RunningCluster, SimFile};
use common::{eventually, package, spawn_app_with, Backend, ProtocolAgent, TestApp};
use std::time::Duration;

const SECRET: &str = "6a1f0c2e-4b3d-4e9a-8c7b-2d1e0f9a8b7c";
const WAIT: Duration = Duration::from_secs(60);

fn estate() -> String {
    format!(
        r#"
[[clusters]]
name = "home"
[[clusters.tokens]]
id = "canopy@pve!tree"
secret = "{SECRET}"
role = "PVEAuditor"
[[clusters.nodes]]
name = "pve1"
[[clusters.nodes]]
name = "pve2"
[[clusters.guests]]
vmid = 101
type = "lxc"
node = "pve1"
name = "web"
tags = "prod"
[[clusters.guests]]
vmid = 102
type = "lxc"
node = "pve1"
name = "db"
[[clusters.guests]]
vmid = 9000
type = "lxc"
node = "pve1"
name = "tmpl"
status = "stopped"
template = true
[[clusters.guests]]
vmid = 201
type = "qemu"
node = "pve2"
name = "ha"
"#
    )
}

/// A server with cluster `home` added (its first pass done), and the simulator behind it.
async fn setup(
    backend: Backend,
    tweak: impl FnOnce(&mut canopy_server::settings::Settings),
) -> Option<(TestApp, RunningCluster)> {
    let app = spawn_app_with(backend, |s| {
        s.discovery_interval_secs = 3600; // only the passes the test asks for
        tweak(s);
    })
    .await?;
    let file = SimFile::from_toml_str(&estate()).unwrap();
    let sim = canopy_pve_sim::start(file.clusters[0].clone())
        .await
        .unwrap();
    app.admin
        .create_cluster(&CreateCluster {
            name: "home".into(),
            endpoints: vec![sim.url()],
            token: format!("canopy@pve!tree={SECRET}"),
            fingerprints: vec![sim.fingerprint()],
            ca_pem: None,
            interval_secs: None,
        })
        .await
        .unwrap();
    Some((app, sim))
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

/// The vertex at `id` in the whole tree (which must hold it).
async fn vertex(app: &TestApp, id: &str) -> TreeNode {
    let tree: TreeResponse = app.admin.tree(None).await.unwrap();
    find(&tree.trees, id)
        .unwrap_or_else(|| panic!("{id} not in the tree"))
        .clone()
}

/// Check in once, with `run_as` as the user the agent runs as.
async fn checkin_as(agent: &ProtocolAgent, run_as: &str) {
    let mut facts = agent.facts.clone();
    facts.run_as = run_as.into();
    agent
        .client
        .checkin(&CheckinRequest {
            facts,
            report_hash: None,
            wait_secs: 0,
            connecting: false,
        })
        .await
        .unwrap();
}

const WEB: &str = "cluster/home/node/pve1/lxc/101";
const PVE1: &str = "cluster/home/node/pve1";
const HOME: &str = "cluster/home";

async fn discovery_adds_and_removes_guests(backend: Backend) {
    let Some((app, sim)) = setup(backend, |_| {}).await else {
        return;
    };
    // A second cluster with an agent: a pass of `home` leaves it as it is.
    let lab = canopy_pve_sim::start(
        SimFile::from_toml_str(
            &estate()
                .replace("\"home\"", "\"lab\"")
                .replace("\"ha\"", "\"edge\""),
        )
        .unwrap()
        .clusters[0]
            .clone(),
    )
    .await
    .unwrap();
    app.admin
        .create_cluster(&CreateCluster {
            name: "lab".into(),
            endpoints: vec![lab.url()],
            token: format!("canopy@pve!tree={SECRET}"),
            fingerprints: vec![lab.fingerprint()],
            ca_pem: None,
            interval_secs: None,
        })
        .await
        .unwrap();
    const EDGE: &str = "cluster/lab/node/pve2/vm/201";
    let edge = app.enrol("edge").await; // attached to lab's vm/201 by its hostname
    let shown = vertex(&app, EDGE).await;
    assert_eq!(shown.host_id, Some(edge.host_id.to_string()));
    let before = app.admin.tree(None).await.unwrap();
    assert!(find(&before.trees, "cluster/home/node/pve1/lxc/102").is_some());
    assert!(find(&before.trees, "cluster/home/node/pve2/lxc/103").is_none());
    // Two LXCs without an agent (the template does not count).
    assert_eq!(find(&before.trees, HOME).unwrap().rollup.agents_missing, 2);

    sim.add_guest(GuestSpec::new(103, GuestKind::Lxc, "pve2", "cache"))
        .unwrap();
    sim.remove_guest(102).unwrap();
    sim.rename_guest(101, "www").unwrap();
    let report = app.admin.discover_cluster("home").await.unwrap();
    assert_eq!(report.changes.len(), 3, "{:?}", report.changes);

    let after = app.admin.tree(None).await.unwrap();
    let added = find(&after.trees, "cluster/home/node/pve2/lxc/103").expect("the new guest");
    assert_eq!(
        (added.name.as_str(), added.agent.as_deref()),
        ("cache", Some("missing"))
    );
    assert!(find(&after.trees, "cluster/home/node/pve1/lxc/102").is_none());
    assert_eq!(find(&after.trees, WEB).unwrap().name, "www");
    assert_eq!(
        find(&after.trees, EDGE).unwrap(),
        &shown,
        "lab is left as it was"
    );
    assert_eq!(find(&after.trees, PVE1).unwrap().rollup.agents_missing, 1);
    assert_eq!(
        find(&after.trees, "cluster/home/node/pve2")
            .unwrap()
            .rollup
            .agents_missing,
        1
    );
    // The new guest is addressable at once (its history by path).
    assert!(app
        .admin
        .guest_history("cluster/home/node/pve2/lxc/103")
        .await
        .is_ok());

    // A pass that changes nothing leaves the tree as it was.
    let again = app.admin.discover_cluster("home").await.unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    let same = app.admin.tree(None).await.unwrap();
    assert_eq!(
        serde_json::to_value(&same.trees).unwrap(),
        serde_json::to_value(&after.trees).unwrap()
    );
    sim.shutdown().await;
    lab.shutdown().await;
}

async fn agents_check_in_fall_silent_and_come_back(backend: Backend) {
    // Agents silent for 2 s show as offline: the test waits for it, never sleeps.
    let Some((app, sim)) = setup(backend, |s| s.agent_offline_after_secs = 2).await else {
        return;
    };
    assert_eq!(vertex(&app, WEB).await.agent.as_deref(), Some("missing"));
    let agent = app.enrol("web").await; // attached to lxc/101 by its hostname

    // A check-in shows the agent online, attached, with the user it runs as.
    let web = eventually(WAIT, || async {
        checkin_as(&agent, "canopy-agent").await;
        let v = vertex(&app, WEB).await;
        (v.agent.as_deref() == Some("online")).then_some(v)
    })
    .await;
    assert_eq!(web.host_id, Some(agent.host_id.to_string()));
    assert_eq!(web.agent_user.as_deref(), Some("canopy-agent"));
    assert_eq!(web.os.as_deref(), Some("debian"));
    assert_eq!(web.counts.agents_missing, 0);
    // Without a check-in for longer than the limit it is offline, at every level.
    let silent = eventually(WAIT, || async {
        let v = vertex(&app, WEB).await;
        (v.agent.as_deref() == Some("offline")).then_some(v)
    })
    .await;
    assert_eq!(silent.counts.agents_offline, 1);
    assert_eq!(vertex(&app, PVE1).await.rollup.agents_offline, 1);
    assert_eq!(vertex(&app, HOME).await.rollup.agents_offline, 1);
    // The offline agent is a filter too.
    let offline = app.admin.preview("**[agent=offline]").await.unwrap();
    assert_eq!(offline.matched, 1);

    // It checks in again, now as root: online, and the tree says so.
    let back = eventually(WAIT, || async {
        checkin_as(&agent, "root").await;
        let v = vertex(&app, WEB).await;
        (v.agent.as_deref() == Some("online")).then_some(v)
    })
    .await;
    assert_eq!(back.agent_user.as_deref(), Some("root"));
    assert_eq!(back.counts.agents_offline, 0);
    sim.shutdown().await;
}

async fn reports_and_deletion_change_the_counts(backend: Backend) {
    let Some((app, sim)) = setup(backend, |_| {}).await else {
        return;
    };
    let web = app.enrol("web").await;
    let db = app.enrol("db").await;
    let accepted = web
        .report(vec![
            serde_json::to_value(package("nginx", false)).unwrap(),
            serde_json::to_value(package("openssl", true)).unwrap(),
        ])
        .await;
    assert!(accepted.rejected.is_empty());
    let v = vertex(&app, WEB).await;
    assert_eq!((v.counts.pending, v.counts.security), (2, 1));
    assert_eq!(v.agent.as_deref(), Some("online"));
    assert_eq!(vertex(&app, PVE1).await.rollup.pending, 2);
    assert_eq!(vertex(&app, HOME).await.rollup.security, 1);

    // A new scan without nginx closes its row: the counts follow, up to the cluster.
    web.report(vec![serde_json::to_value(package("openssl", true)).unwrap()])
        .await;
    db.report(
        ["a", "b", "c"]
            .iter()
            .map(|p| serde_json::to_value(package(p, false)).unwrap())
            .collect(),
    )
    .await;
    let v = vertex(&app, WEB).await;
    assert_eq!((v.counts.pending, v.counts.security), (1, 1));
    assert_eq!(
        vertex(&app, "cluster/home/node/pve1/lxc/102")
            .await
            .counts
            .pending,
        3
    );
    let home = vertex(&app, HOME).await;
    assert_eq!((home.rollup.pending, home.rollup.security), (4, 1));
    assert_eq!(home.rollup.agents_missing, 0);

    // Deleting a host detaches it: its guest shows no agent and its counts leave the rollups.
    app.admin.delete_host(web.host_id).await.unwrap();
    let v = vertex(&app, WEB).await;
    assert_eq!(
        (v.agent.as_deref(), v.host_id.as_deref()),
        (Some("missing"), None)
    );
    assert_eq!(v.counts.pending, 0);
    let home = vertex(&app, HOME).await;
    assert_eq!((home.rollup.pending, home.rollup.agents_missing), (3, 1));
    sim.shutdown().await;
}

async fn depth_lists_fewer_levels_with_the_same_rollups(backend: Backend) {
    let Some((app, sim)) = setup(backend, |_| {}).await else {
        return;
    };
    let web = app.enrol("web").await;
    web.report(vec![serde_json::to_value(package("nginx", false)).unwrap()])
        .await;
    let whole = app.admin.tree(None).await.unwrap();
    assert!(whole.trees.iter().all(|t| t.child_count.is_none()));

    // One level: the cluster with its nodes, whose guests are counted, not listed.
    let top = app.admin.tree_depth(None, 1).await.unwrap();
    assert_eq!(top.trees.len(), 1);
    let home = &top.trees[0];
    assert_eq!(home.child_count, None, "its nodes are listed");
    assert_eq!(home.rollup, whole.trees[0].rollup);
    let pve1 = &home.children[0];
    assert_eq!(pve1.id.as_str(), PVE1);
    assert!(pve1.children.is_empty());
    assert_eq!(pve1.child_count, Some(3));
    assert_eq!(pve1.rollup.pending, 1);

    // Expanding a node: its guests, each as the whole tree has it.
    let node = app.admin.tree_depth(Some(PVE1), 1).await.unwrap();
    let listed = &node.trees[0];
    assert_eq!(listed.children.len(), 3);
    assert_eq!(listed, find(&whole.trees, PVE1).unwrap());
    // Depth 0: the vertex alone.
    let alone = app.admin.tree_depth(Some(PVE1), 0).await.unwrap();
    assert!(alone.trees[0].children.is_empty());
    assert_eq!(alone.trees[0].child_count, Some(3));

    // A selector whose matches nest answers each subtree once.
    let nested = app
        .admin
        .tree(Some("cluster/home, cluster/home/node/*"))
        .await
        .unwrap();
    assert_eq!(nested.trees.len(), 1);
    assert_eq!(nested.trees[0].id.as_str(), HOME);
    // A bad depth is refused, naming it.
    let bad = reqwest::Client::new()
        .get(format!("{}/api/v1/tree?depth=-1", app.base))
        .bearer_auth(app.admin.token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("depth"));
    sim.shutdown().await;
}

on_both_backends!(
    discovery_adds_and_removes_guests,
    agents_check_in_fall_silent_and_come_back,
    reports_and_deletion_change_the_counts,
    depth_lists_fewer_levels_with_the_same_rollups,
);
