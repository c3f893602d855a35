//! Clusters in the server against the PVE simulator, on both backends: add (secret never
//! shown), the tree and selector previews, a migrated guest that keeps its identity and
//! history, a node that times out while the rest refresh, and bad input.

mod common;

use canopy_api_types::client::ClientError;
use canopy_api_types::clusters::{CreateCluster, TreeResponse};
use canopy_pve_sim::{RunningCluster, SimFile};
use common::cli::Cli;
use common::{spawn_app_with, Backend, TestApp};

const SECRET: &str = "0d3f9a7c-1b2e-4c5d-8e9f-a0b1c2d3e4f5";

fn estate() -> String {
    format!(
        r#"
[[clusters]]
name = "home"
[[clusters.tokens]]
id = "canopy@pve!discovery"
secret = "{SECRET}"
role = "PVEAuditor"
acl = [{{ path = "/nodes", privs = ["Sys.Audit", "Sys.Modify"] }}]
[[clusters.nodes]]
name = "pve1"
updates = [{{ package = "pve-manager", old_version = "8.4.0", version = "8.4.1", origin = "Proxmox" }}]
[[clusters.nodes]]
name = "pve2"
[[clusters.guests]]
vmid = 101
type = "lxc"
node = "pve1"
name = "web"
status = "running"
tags = "prod;web"
[[clusters.guests]]
vmid = 102
type = "lxc"
node = "pve1"
name = "db"
status = "running"
tags = "prod"
[[clusters.guests]]
vmid = 9000
type = "lxc"
node = "pve1"
name = "tmpl"
status = "stopped"
template = true
tags = "prod"
[[clusters.guests]]
vmid = 201
type = "qemu"
node = "pve2"
name = "ha"
status = "running"
"#
    )
}

async fn setup(backend: Backend) -> Option<(TestApp, RunningCluster)> {
    let app = spawn_app_with(backend, |s| {
        s.pve_timeout_secs = 2;
        s.discovery_interval_secs = 3600; // only the passes the test asks for
    })
    .await?;
    let file = SimFile::from_toml_str(&estate()).unwrap();
    let sim = canopy_pve_sim::start(file.clusters[0].clone())
        .await
        .unwrap();
    Some((app, sim))
}

fn create_req(sim: &RunningCluster, token: &str, fingerprint: &str) -> CreateCluster {
    CreateCluster {
        name: "home".into(),
        endpoints: vec![sim.url()],
        token: token.into(),
        fingerprints: vec![fingerprint.into()],
        ca_pem: None,
        interval_secs: None,
    }
}

fn token() -> String {
    format!("canopy@pve!discovery={SECRET}")
}

fn vertex<'a>(tree: &'a TreeResponse, id: &str) -> Option<&'a canopy_inventory::TreeNode> {
    fn find<'a>(
        n: &'a canopy_inventory::TreeNode,
        id: &str,
    ) -> Option<&'a canopy_inventory::TreeNode> {
        if n.id.as_str() == id {
            return Some(n);
        }
        n.children.iter().find_map(|c| find(c, id))
    }
    tree.trees.iter().find_map(|t| find(t, id))
}

async fn add_cluster_and_read_the_tree(backend: Backend) {
    let Some((app, sim)) = setup(backend).await else {
        return;
    };
    let cluster = app
        .admin
        .create_cluster(&create_req(&sim, &token(), &sim.fingerprint()))
        .await
        .unwrap();
    assert_eq!(cluster.token_id, "canopy@pve!discovery");
    assert!(cluster.last_discovery_at.is_some());
    // The secret appears in no response.
    let raw = common::http()
        .get(format!("{}/api/v1/clusters", app.base))
        .bearer_auth(app.admin.token().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        raw.contains("canopy@pve!discovery") && !raw.contains(SECRET),
        "{raw}"
    );

    let tree = app.admin.tree(None).await.unwrap();
    assert_eq!(tree.trees.len(), 1);
    let web = vertex(&tree, "cluster/home/node/pve1/lxc/101").expect("guest 101 in the tree");
    assert_eq!(
        web.tags.as_deref(),
        Some(&["prod".to_string(), "web".to_string()][..])
    );
    assert_eq!(web.agent.as_deref(), Some("missing"));

    let sel = app
        .admin
        .tree(Some("cluster/home/node/pve1/lxc/*"))
        .await
        .unwrap();
    assert_eq!(sel.trees.len(), 3);
    let preview = app
        .admin
        .preview("cluster/home/**[tag=prod]")
        .await
        .unwrap();
    assert_eq!(preview.targets.len(), 2, "{preview:?}");
    assert_eq!(preview.summary, "resolves to 2 hosts (1 template skipped)");
    let err = app
        .admin
        .preview("cluster/home/nodes/pve1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status: 400 | 422, error } if error.message.contains("selector")),
        "{err}"
    );

    let ups = app.admin.node_updates("home", "pve1").await.unwrap();
    assert_eq!(ups.updates[0].package, "pve-manager");
    assert!(ups.error.is_none());

    // A second pass with nothing changed: two API calls, no changes.
    sim.reset_requests();
    let report = app.admin.discover_cluster("home").await.unwrap();
    assert!(report.changes.is_empty(), "{:?}", report.changes);
    assert!(report.api_calls <= 3, "{report:?}");
    let pass_calls = sim
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/api2/json/cluster/"))
        .count();
    assert_eq!(pass_calls, 2);
    sim.shutdown().await;
}

async fn migrated_guest_moves_with_its_history(backend: Backend) {
    let Some((app, sim)) = setup(backend).await else {
        return;
    };
    app.admin
        .create_cluster(&create_req(&sim, &token(), &sim.fingerprint()))
        .await
        .unwrap();
    // An agent on guest 101 (hostname "web") is attached to its vertex.
    let agent = app.enrol("web").await;
    let tree = app.admin.tree(None).await.unwrap();
    let web = vertex(&tree, "cluster/home/node/pve1/lxc/101").unwrap();
    assert_eq!(
        web.host_id.as_deref(),
        Some(agent.host_id.to_string().as_str())
    );
    assert_eq!(web.agent.as_deref(), Some("online"));

    sim.migrate(101, "pve2").unwrap();
    let report = app.admin.discover_cluster("home").await.unwrap();
    assert_eq!(
        report.changes,
        ["guest_moved cluster/home/node/pve2/lxc/101"],
        "{report:?}"
    );
    let tree = app.admin.tree(None).await.unwrap();
    assert!(
        vertex(&tree, "cluster/home/node/pve1/lxc/101").is_none(),
        "no duplicate left behind"
    );
    let moved = vertex(&tree, "cluster/home/node/pve2/lxc/101").expect("moved guest");
    assert_eq!(
        moved.host_id.as_deref(),
        Some(agent.host_id.to_string().as_str())
    );
    let history = app
        .admin
        .guest_history("cluster/home/node/pve2/lxc/101")
        .await
        .unwrap();
    let types: Vec<&str> = history.iter().map(|e| e.event_type.as_str()).collect();
    for t in ["guest_added", "host_attached", "guest_moved"] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }
    assert!(
        history
            .iter()
            .any(|e| e.subject == "cluster/home/node/pve1/lxc/101"),
        "events from before the move stay in the history"
    );
    sim.shutdown().await;
}

async fn hanging_node_keeps_its_error_while_others_refresh(backend: Backend) {
    let Some((app, sim)) = setup(backend).await else {
        return;
    };
    app.admin
        .create_cluster(&create_req(&sim, &token(), &sim.fingerprint()))
        .await
        .unwrap();
    sim.set_node_hang("pve2", true).unwrap();
    sim.set_guest_status(102, "stopped").unwrap();
    let report = app.admin.discover_cluster("home").await.unwrap();
    assert!(report.error.is_none(), "{report:?}");
    assert_eq!(
        report.changes,
        ["guest_status_changed cluster/home/node/pve1/lxc/102"]
    );
    assert_eq!(report.node_errors.len(), 1, "{report:?}");
    assert_eq!(report.node_errors[0].node, "pve2");
    let tree = app.admin.tree(None).await.unwrap();
    let pve2 = vertex(&tree, "cluster/home/node/pve2").unwrap();
    let err = pve2.error.as_deref().expect("pve2 shows its error");
    assert!(err.contains("did not answer"), "{err}");
    assert!(vertex(&tree, "cluster/home/node/pve1")
        .unwrap()
        .error
        .is_none());
    assert_eq!(
        vertex(&tree, "cluster/home/node/pve1/lxc/102")
            .unwrap()
            .status
            .as_deref(),
        Some("stopped")
    );
    // It recovers.
    sim.set_node_hang("pve2", false).unwrap();
    let report = app.admin.discover_cluster("home").await.unwrap();
    assert!(report.node_errors.is_empty(), "{report:?}");
    let tree = app.admin.tree(None).await.unwrap();
    assert!(vertex(&tree, "cluster/home/node/pve2")
        .unwrap()
        .error
        .is_none());
    sim.shutdown().await;
}

async fn bad_clusters_are_refused_with_the_reason(backend: Backend) {
    let Some((app, sim)) = setup(backend).await else {
        return;
    };
    let msg = |e: ClientError| match e {
        ClientError::Api { status, error } => (status, error.message),
        other => panic!("unexpected {other}"),
    };
    let (status, m) = msg(app
        .admin
        .create_cluster(&create_req(
            &sim,
            "canopy@pve!discovery=wrong",
            &sim.fingerprint(),
        ))
        .await
        .unwrap_err());
    assert_eq!(status, 400);
    assert!(m.contains("authentication"), "{m}");
    assert!(!m.contains("wrong"), "the secret leaked: {m}");
    let wrong_fp = "AB:".repeat(31) + "AB";
    let (_, m) = msg(app
        .admin
        .create_cluster(&create_req(&sim, &token(), &wrong_fp))
        .await
        .unwrap_err());
    assert!(
        m.contains("fingerprint") && m.contains(&sim.fingerprint()),
        "{m}"
    );
    let (status, m) = msg(app
        .admin
        .create_cluster(&create_req(&sim, "no-realm", &sim.fingerprint()))
        .await
        .unwrap_err());
    assert_eq!(status, 400);
    assert!(m.contains("token"), "{m}");
    assert!(
        app.admin.clusters().await.unwrap().is_empty(),
        "nothing half-added"
    );
    // A viewer-level mistake: unknown cluster.
    let (status, _) = msg(app.admin.discover_cluster("nope").await.unwrap_err());
    assert_eq!(status, 404);
    sim.shutdown().await;
}

async fn updates_by_selector(backend: Backend) {
    let Some((app, sim)) = setup(backend).await else {
        return;
    };
    app.admin
        .create_cluster(&create_req(&sim, &token(), &sim.fingerprint()))
        .await
        .unwrap();
    let row = |name: &str| serde_json::to_value(common::package(name, false)).unwrap();
    for (host, pkg) in [
        ("web", "nginx"),
        ("db", "postgresql-15"),
        ("laptop", "firefox-esr"),
    ] {
        let agent = app.enrol(host).await;
        let accepted = agent.report(vec![row(pkg)]).await;
        assert_eq!(accepted.rejected.len(), 0);
    }
    let packages = |selector: &'static str| {
        let admin = app.admin.clone();
        async move {
            let page = admin
                .updates(&canopy_api_types::updates::UpdateFilter {
                    selector: Some(selector.into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut names: Vec<String> = page.items.into_iter().map(|u| u.package).collect();
            names.sort();
            names
        }
    };
    assert_eq!(packages("cluster/home/node/pve1/lxc/101").await, ["nginx"]);
    assert_eq!(
        packages("cluster/home/node/pve1").await,
        ["nginx", "postgresql-15"]
    );
    assert_eq!(packages("**[tag=web]").await, ["nginx"]);
    assert!(packages("cluster/home/node/pve2/**").await.is_empty());
    let err = app
        .admin
        .updates(&canopy_api_types::updates::UpdateFilter {
            selector: Some("cluster/home/nodes".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Api { status: 400, error } if error.message.contains("selector")),
        "{err}"
    );
    sim.shutdown().await;
}

on_both_backends!(
    add_cluster_and_read_the_tree,
    migrated_guest_moves_with_its_history,
    hanging_node_keeps_its_error_while_others_refresh,
    bad_clusters_are_refused_with_the_reason,
    updates_by_selector,
);

/// The CLI as a homelab owner uses it: `cluster add` without a pin shows the fingerprint
/// and asks; `tree` and `tree --preview` read the server's tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_cluster_add_asks_to_trust_and_tree_shows_the_estate() {
    let (app, sim) = setup(Backend::Sqlite).await.unwrap();
    let cli = Cli::new()
        .env("CANOPY_PVE_TOKEN", &token())
        .login(&app.base);
    let url = sim.url();
    // Refusing the shown fingerprint adds nothing.
    let out = cli.run(&["cluster", "add", "home", "--url", &url], "n\n");
    assert!(!out.status.success());
    let err = out.stderr;
    assert!(
        err.contains(&sim.fingerprint()) && err.contains("not trusted"),
        "{err}"
    );
    assert!(app.admin.clusters().await.unwrap().is_empty());
    // Accepting it adds the cluster, pinned to that fingerprint.
    let out = cli.run(&["cluster", "add", "home", "--url", &url], "y\n");
    assert!(out.status.success(), "{}", out.stderr);
    let clusters = app.admin.clusters().await.unwrap();
    assert_eq!(clusters[0].fingerprints, [sim.fingerprint()]);

    let text = cli.run(&["tree", "cluster/home/node/pve1"], "").stdout;
    assert!(
        text.contains("lxc 101 web") && text.contains("template"),
        "{text}"
    );
    assert!(
        !text.contains("vm 201"),
        "pve2's guests are outside the selector: {text}"
    );
    let text = cli.run(&["tree", "**[tag=prod]", "--preview"], "").stdout;
    assert!(
        text.contains("resolves to 2 hosts (1 template skipped)"),
        "{text}"
    );
    let trees: serde_json::Value =
        serde_json::from_str(&cli.run(&["tree", "--json"], "").stdout).unwrap();
    assert_eq!(trees[0]["id"], "cluster/home");
    sim.shutdown().await;
}
