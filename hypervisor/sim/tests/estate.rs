//! The estate and its changes: standalone nodes, offline and hanging nodes, migration and
//! other runtime control, injected failures, and the request counter.

mod common;

use std::time::{Duration, Instant};

use canopy_pve_sim::{GuestKind, GuestSpec};
use common::*;
use serde_json::json;

#[tokio::test]
async fn standalone_node_has_no_cluster_entry() {
    let edge = start(cluster("home.toml", "edge")).await;
    let token = "root@pam!canopy=9a3c1d7e-4b2f-4e6a-8c5d-2f1e0a9b8c7d";
    assert_eq!(edge.token(), token);
    let status = get(&edge, "/cluster/status", token).await;
    assert_eq!(
        status.data(),
        &json!([{"type": "node", "id": "node/edge", "name": "edge", "ip": "10.20.0.2", "local": 1, "nodeid": 0, "online": 1, "level": ""}])
    );
    let res = get(&edge, "/cluster/resources?type=vm", token).await;
    assert_eq!(res.data().as_array().unwrap().len(), 2);
    edge.shutdown().await;
}

#[tokio::test]
async fn offline_node_and_its_guests() {
    let sim = home().await;
    let res = get(&sim, "/cluster/resources", ADMIN).await;
    let list = res.data().as_array().unwrap();
    let node = list.iter().find(|r| r["id"] == "node/pve3").unwrap();
    assert_eq!(node["status"], "offline");
    let backup = list.iter().find(|r| r["id"] == "lxc/301").unwrap();
    assert_eq!(backup["status"], "unknown");
    assert_eq!(backup["node"], "pve3");
    assert_eq!(
        backup["tags"], "prod",
        "tags come from the cluster-wide config"
    );
    assert!(
        backup.get("name").is_none(),
        "no RRD data for a node that is gone"
    );

    let proxied = get(&sim, "/nodes/pve3/lxc", ADMIN).await;
    assert_eq!(
        (
            proxied.status,
            proxied.reason.as_deref(),
            proxied.raw.as_str()
        ),
        (595, Some("No route to host"), "")
    );
    // Permission checks come before the proxy.
    let denied = get(&sim, "/nodes/pve3/apt/update", AUDITOR).await;
    assert_eq!(denied.status, 403);

    let pve3_url = sim.node_url("pve3");
    let c = client(&sim, Duration::from_secs(2));
    let direct = c.get(format!("{pve3_url}/api2/json/version")).send().await;
    assert!(
        direct.is_err(),
        "an offline node's port refuses connections"
    );

    sim.set_node_online("pve3", true).unwrap();
    let back = wait_for(Duration::from_secs(5), || async {
        let r = c
            .get(format!("{pve3_url}/api2/json/version"))
            .header("Authorization", format!("PVEAPIToken={ADMIN}"))
            .send()
            .await;
        r.ok().map(|r| r.status().as_u16())
    })
    .await;
    assert_eq!(back, 200);
    let res = get(&sim, "/cluster/resources?type=vm", ADMIN).await;
    let backup = res.entry("lxc/301").clone();
    assert_eq!(
        (backup["status"].clone(), backup["name"].clone()),
        (json!("running"), json!("backup"))
    );

    sim.set_node_online("pve1", false).unwrap();
    assert_eq!(
        sim.url(),
        sim.node_url("pve2"),
        "url() moves to the first online node"
    );
    let status = get(&sim, "/cluster/status", ADMIN).await;
    let pve1 = status
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "pve1")
        .unwrap()
        .clone();
    assert_eq!(pve1["online"], 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn hanging_node_never_answers() {
    let sim = home().await;
    sim.set_node_hang("pve2", true).unwrap();
    let c = client(&sim, Duration::from_millis(400));
    let before = sim.request_count();
    let started = Instant::now();
    let own = c
        .get(format!("{}/api2/json/version", sim.node_url("pve2")))
        .header("Authorization", format!("PVEAPIToken={ADMIN}"))
        .send()
        .await;
    assert!(own.unwrap_err().is_timeout());
    assert!(started.elapsed() >= Duration::from_millis(400));
    let proxied = c
        .get(format!("{}/api2/json/nodes/pve2/status", sim.url()))
        .header("Authorization", format!("PVEAPIToken={ADMIN}"))
        .send()
        .await;
    assert!(proxied.unwrap_err().is_timeout());
    assert_eq!(sim.request_count(), before + 2, "hung requests are counted");
    // Other nodes still answer.
    assert_eq!(get(&sim, "/nodes/pve1/status", ADMIN).await.status, 200);
    sim.set_node_hang("pve2", false).unwrap();
    assert_eq!(get(&sim, "/nodes/pve2/status", ADMIN).await.status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_is_applied() {
    let sim = home().await;
    sim.set_latency("pve1", Duration::from_millis(300)).unwrap();
    let started = Instant::now();
    assert_eq!(get(&sim, "/version", ADMIN).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    sim.shutdown().await;
}

#[tokio::test]
async fn migrate_and_other_runtime_changes() {
    let sim = home().await;
    sim.migrate(101, "pve2").unwrap();
    let res = get(&sim, "/cluster/resources?type=vm", ADMIN).await;
    let web1 = res.entry("lxc/101").clone();
    assert_eq!(web1["node"], "pve2");
    assert_eq!(
        get(&sim, "/nodes/pve1/lxc/101/config", ADMIN).await.status,
        500
    );
    assert_eq!(
        get(&sim, "/nodes/pve2/lxc/101/config", ADMIN).await.data()["hostname"],
        "web1"
    );

    sim.rename_guest(101, "web1-new").unwrap();
    sim.set_tags(101, &["prod", "edge"]).unwrap();
    sim.set_guest_status(101, "stopped").unwrap();
    let mut ct = GuestSpec::new(150, GuestKind::Lxc, "pve1", "newbie");
    ct.tags = vec!["dev".into()];
    sim.add_guest(ct).unwrap();
    sim.remove_guest(102).unwrap();
    let res = get(&sim, "/cluster/resources?type=vm", ADMIN).await;
    let list = res.data().as_array().unwrap();
    let web1 = list.iter().find(|r| r["id"] == "lxc/101").unwrap();
    assert_eq!(
        (
            web1["name"].clone(),
            web1["tags"].clone(),
            web1["status"].clone()
        ),
        (json!("web1-new"), json!("prod;edge"), json!("stopped"))
    );
    assert!(list
        .iter()
        .any(|r| r["id"] == "lxc/150" && r["status"] == "running"));
    assert!(!list.iter().any(|r| r["id"] == "lxc/102"));
    assert!(sim.migrate(999, "pve1").is_err());
    assert!(sim.migrate(101, "nope").is_err());
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_failures_and_request_counter() {
    let sim = home().await;
    sim.reset_requests();
    sim.fail_next("/cluster/resources", 500, "simulated outage", 1);
    let first = get(&sim, "/cluster/resources", ADMIN).await;
    assert_eq!(
        (first.status, first.reason.as_deref()),
        (500, Some("simulated outage"))
    );
    assert_eq!(get(&sim, "/cluster/resources", ADMIN).await.status, 200);
    sim.fail_always("/api2/json/nodes/pve2", 503, "maintenance");
    assert_eq!(get(&sim, "/nodes/pve2/status", ADMIN).await.status, 503);
    assert_eq!(get(&sim, "/nodes/pve2/lxc", ADMIN).await.status, 503);
    sim.clear_failures();
    assert_eq!(get(&sim, "/nodes/pve2/lxc", ADMIN).await.status, 200);

    let requests = sim.requests();
    assert_eq!(sim.request_count(), 5);
    assert_eq!(requests.len(), 5);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/api2/json/cluster/resources");
    assert_eq!(requests[0].listener_node, "pve1");
    let c = client(&sim, Duration::from_secs(5));
    let _ = c
        .get(format!("{}/api2/json/cluster/status", sim.node_url("pve2")))
        .send()
        .await
        .unwrap();
    let last = sim.requests().pop().unwrap();
    assert_eq!(
        (last.listener_node.as_str(), last.path.as_str()),
        ("pve2", "/api2/json/cluster/status")
    );
    sim.reset_requests();
    assert_eq!(sim.request_count(), 0);

    // From the file, with a method and a count.
    let mut spec = cluster("home.toml", "home");
    spec.failures.push(canopy_pve_sim::FailureSpec {
        path: "/nodes/pve1/apt/update".into(),
        method: Some("GET".into()),
        status: 500,
        reason: "apt cache locked".into(),
        count: Some(2),
    });
    let sim2 = start(spec).await;
    for _ in 0..2 {
        assert_eq!(
            get(&sim2, "/nodes/pve1/apt/update", ADMIN)
                .await
                .reason
                .as_deref(),
            Some("apt cache locked")
        );
    }
    assert_eq!(
        get(&sim2, "/nodes/pve1/apt/update", ADMIN).await.status,
        200
    );
    sim2.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn acl_limits_what_a_token_sees() {
    let mut spec = cluster("home.toml", "home");
    spec.tokens.push(canopy_pve_sim::TokenSpec {
        id: "ops@pve!one".into(),
        secret: "s1".into(),
        role: None,
        privs: vec![],
        acl: vec![canopy_pve_sim::AclSpec {
            path: "/vms/101".into(),
            role: Some("PVEVMAdmin".into()),
            privs: vec![],
        }],
        expire: None,
    });
    let sim = start(spec).await;
    let res = get(&sim, "/cluster/resources?type=vm", "ops@pve!one=s1").await;
    let ids: Vec<_> = res
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("lxc/101")]);
    let status = get(&sim, "/cluster/status", "ops@pve!one=s1").await;
    assert_eq!(
        status.reason.as_deref(),
        Some("Permission check failed (/, Sys.Audit)")
    );
    let nodes = get(&sim, "/nodes", "ops@pve!one=s1").await;
    let pve1 = &nodes.data().as_array().unwrap()[0];
    assert!(pve1.get("maxmem").is_none(), "node stats need Sys.Audit");
    sim.shutdown().await;
}
