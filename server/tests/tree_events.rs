//! `GET /tree/events` pushes the tree's changes (docs/design.md §7.2), on both backends:
//! `ready` once subscribed; a report's new counts reach the stream as the guest's vertex
//! with its node's and cluster's rollups; a discovery pass that stops a guest sends that
//! guest alone, one that adds a guest names its node to reload; a follower without a
//! session is refused.

mod common;

use canopy_api_types::clusters::TreeReload;
use canopy_inventory::TreeNode;
use canopy_pve_sim::{GuestKind, GuestSpec};
use common::{package, spawn_app_with, start_sim, Backend, TestApp};
use std::time::Duration;

const ESTATE: &str = r#"
[[clusters]]
name = "home"
[[clusters.tokens]]
id = "canopy@pve!tree"
secret = "6a1f0c2e-4b3d-4e9a-8c7b-2d1e0f9a8b7c"
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
[[clusters.guests]]
vmid = 102
type = "lxc"
node = "pve1"
name = "db"
[[clusters.guests]]
vmid = 201
type = "qemu"
node = "pve2"
name = "ha"
"#;

const WEB: &str = "cluster/home/node/pve1/lxc/101";
const DB: &str = "cluster/home/node/pve1/lxc/102";
const PVE1: &str = "cluster/home/node/pve1";
const PVE2: &str = "cluster/home/node/pve2";
const HOME: &str = "cluster/home";
const WAIT: Duration = Duration::from_secs(30);

/// The events of one `GET /tree/events`, read as they come.
struct Follower {
    resp: reqwest::Response,
    buf: String,
}

impl Follower {
    async fn open(app: &TestApp) -> Follower {
        let resp = reqwest::Client::new()
            .get(format!("{}/api/v1/tree/events", app.base))
            .bearer_auth(app.admin.token().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        Follower {
            resp,
            buf: String::new(),
        }
    }

    /// The next event `(name, data)` (keep-alive comments skipped), within [`WAIT`].
    async fn next(&mut self) -> (String, String) {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let (mut name, mut data) = (String::new(), String::new());
                    for line in block.lines() {
                        if let Some(n) = line.strip_prefix("event:") {
                            name = n.trim().to_string();
                        } else if let Some(d) = line.strip_prefix("data:") {
                            data.push_str(d.trim_start());
                        }
                    }
                    if !name.is_empty() {
                        return (name, data);
                    }
                    continue;
                }
                let chunk = self
                    .resp
                    .chunk()
                    .await
                    .unwrap()
                    .expect("the stream stays open");
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("an event within 30 s")
    }

    /// The next `vertices` event, by id.
    async fn vertices(&mut self) -> Vec<TreeNode> {
        loop {
            let (name, data) = self.next().await;
            if name == "vertices" {
                return serde_json::from_str(&data).unwrap();
            }
        }
    }
}

fn ids(v: &[TreeNode]) -> Vec<&str> {
    v.iter().map(|n| n.id.as_str()).collect()
}

async fn changes_reach_the_stream(backend: Backend) {
    let Some(app) = spawn_app_with(backend, |s| s.discovery_interval_secs = 3600).await else {
        return;
    };
    let sim = start_sim(ESTATE).await;
    app.add_cluster(
        "home",
        &sim,
        "canopy@pve!tree=6a1f0c2e-4b3d-4e9a-8c7b-2d1e0f9a8b7c",
    )
    .await;
    let mut f = Follower::open(&app).await;
    assert_eq!(f.next().await.0, "ready");

    // An agent on web reports two updates: web, pve1 and home, with the new counts.
    let web = app.enrol("web").await;
    web.report(vec![
        serde_json::to_value(package("nginx", false)).unwrap(),
        serde_json::to_value(package("openssl", true)).unwrap(),
    ])
    .await;
    let v = loop {
        let v = f.vertices().await;
        if v.iter()
            .any(|n| n.id.as_str() == WEB && n.counts.pending == 2)
        {
            break v;
        }
    };
    assert_eq!(
        ids(&v),
        [HOME, PVE1, WEB],
        "the guest and its ancestors only"
    );
    assert_eq!(v[0].rollup.security, 1);
    assert_eq!(v[1].rollup.pending, 2);
    assert_eq!(v[1].child_count, Some(2), "listed as depth=0 lists it");
    assert!(v.iter().all(|n| n.children.is_empty()));
    assert_eq!(v[2].agent.as_deref(), Some("online"));

    // A pass that stops db: db alone changed in place (its ancestors follow).
    sim.set_guest_status(102, "stopped").unwrap();
    app.admin.discover_cluster("home").await.unwrap();
    let v = f.vertices().await;
    assert_eq!(ids(&v), [HOME, PVE1, DB]);
    assert_eq!(v[2].status.as_deref(), Some("stopped"));

    // A pass that adds a guest on pve2: pve2's children are to be loaded again.
    sim.add_guest(GuestSpec::new(202, GuestKind::Lxc, "pve2", "cache"))
        .unwrap();
    app.admin.discover_cluster("home").await.unwrap();
    let v = f.vertices().await;
    let pve2 = v.iter().find(|n| n.id.as_str() == PVE2).expect("pve2");
    assert_eq!(pve2.child_count, Some(2));
    assert!(!ids(&v).contains(&WEB), "{:?}", ids(&v));
    let (name, data) = f.next().await;
    assert_eq!(name, "reload");
    let reload: TreeReload = serde_json::from_str(&data).unwrap();
    assert_eq!(
        reload,
        TreeReload {
            all: false,
            parents: vec![PVE2.to_string()]
        }
    );

    // Without a session: refused.
    let anon = reqwest::Client::new()
        .get(format!("{}/api/v1/tree/events", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    sim.shutdown().await;
}

on_both_backends!(changes_reach_the_stream);
