//! What goes over the wire: the `{"data": …}` envelope, 0/1 booleans, `a;b` tags, extra
//! fields, errors in the reason phrase (and body per quirk), auth failures, TLS fingerprints.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test]
async fn envelope_booleans_tags_and_extra_fields() {
    let sim = home().await;
    let status = get(&sim, "/cluster/status", ADMIN).await;
    assert_eq!(status.status, 200);
    let items = status.data().as_array().unwrap();
    let cluster = items.iter().find(|i| i["type"] == "cluster").unwrap();
    assert_eq!(cluster["name"], "home");
    assert_eq!(cluster["nodes"], 3);
    assert_eq!(cluster["quorate"], 1);
    let pve1 = items.iter().find(|i| i["name"] == "pve1").unwrap();
    assert_eq!(pve1["id"], "node/pve1");
    assert_eq!(
        (
            pve1["online"].clone(),
            pve1["local"].clone(),
            pve1["nodeid"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
    let pve3 = items.iter().find(|i| i["name"] == "pve3").unwrap();
    assert_eq!(
        (pve3["online"].clone(), pve3["local"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(pve3["ip"], "192.168.1.13");

    let res = get(&sim, "/cluster/resources", ADMIN).await;
    let list = res.data().as_array().unwrap();
    let web1 = list.iter().find(|r| r["id"] == "lxc/101").unwrap();
    assert_eq!(web1["type"], "lxc");
    assert_eq!(web1["vmid"], 101);
    assert_eq!(web1["node"], "pve1");
    assert_eq!(web1["name"], "web1");
    assert_eq!(web1["status"], "running");
    assert_eq!(web1["template"], 0);
    assert_eq!(web1["tags"], "prod;web");
    assert_eq!(web1["maxmem"], 1024 * 1024 * 1024);
    for extra in [
        "diskread",
        "diskwrite",
        "netin",
        "netout",
        "maxdisk",
        "disk",
        "uptime",
        "cpu",
        "maxcpu",
        "mem",
    ] {
        assert!(web1.get(extra).is_some(), "{extra} missing");
    }
    let template = list.iter().find(|r| r["id"] == "lxc/9000").unwrap();
    assert_eq!(template["template"], 1);
    assert!(list
        .iter()
        .any(|r| r["id"] == "qemu/100" && r["type"] == "qemu"));
    assert!(list
        .iter()
        .any(|r| r["id"] == "node/pve1" && r["status"] == "online"));
    assert!(list
        .iter()
        .any(|r| r["id"] == "storage/pve1/local" && r["shared"] == 0));
    assert!(
        list.iter().any(|r| r["type"] == "sdn"),
        "newer resource types appear too"
    );

    let only_vms = get(&sim, "/cluster/resources?type=vm", ADMIN).await;
    let types: Vec<_> = only_vms
        .data()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].clone())
        .collect();
    assert!(types.iter().all(|t| t == "lxc" || t == "qemu") && types.len() == 10);
    let bad = get(&sim, "/cluster/resources?type=foo", ADMIN).await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.reason.as_deref(),
        Some("Parameter verification failed.")
    );
    assert!(bad.json["errors"]["type"]
        .as_str()
        .unwrap()
        .contains("enumeration"));

    let version = get(&sim, "/version", AUDITOR).await;
    assert_eq!(version.data()["version"], "8.4.1");
    assert_eq!(version.data()["release"], "8.4");

    let config = get(&sim, "/nodes/pve1/lxc/101/config", ADMIN).await;
    let c = config.data();
    assert_eq!(c["hostname"], "web1");
    assert_eq!(c["tags"], "prod;web");
    assert!(c["net0"].as_str().unwrap().contains("ip=192.168.1.101/24"));
    assert_eq!(c["digest"].as_str().unwrap().len(), 40);
    assert_eq!(c["parent"], "before-upgrade");
    let tconf = get(&sim, "/nodes/pve1/lxc/9000/config", ADMIN).await;
    assert_eq!(tconf.data()["template"], 1);

    let updates = get(&sim, "/nodes/pve1/apt/update", ADMIN).await;
    let pkgs = updates.data().as_array().unwrap();
    let mgr = pkgs.iter().find(|p| p["Package"] == "pve-manager").unwrap();
    assert_eq!(
        (
            mgr["OldVersion"].clone(),
            mgr["Version"].clone(),
            mgr["Origin"].clone()
        ),
        (json!("8.4.0"), json!("8.4.1"), json!("Proxmox"))
    );
    for key in ["Title", "Description", "Priority", "Section", "Arch"] {
        assert!(mgr.get(key).is_some(), "{key} missing");
    }
    assert!(pkgs.iter().any(|p| p["Origin"] == "Debian"));
    sim.shutdown().await;
}

#[tokio::test]
async fn unauthorized_like_pve() {
    let sim = home().await;
    let c = client(&sim, Duration::from_secs(10));
    let url = format!("{}/api2/json/cluster/resources", sim.url());
    let none = call(&c, reqwest::Method::GET, url.clone(), None, &[]).await;
    assert_eq!(
        (none.status, none.reason.as_deref(), none.raw.as_str()),
        (401, Some("No ticket"), "")
    );
    let wrong = call(
        &c,
        reqwest::Method::GET,
        url.clone(),
        Some("root@pam!canopy=nope"),
        &[],
    )
    .await;
    assert_eq!(
        (wrong.status, wrong.reason.as_deref()),
        (401, Some("Authentication failed!"))
    );
    let colon = call(
        &c,
        reqwest::Method::GET,
        url.clone(),
        Some(&ADMIN.replacen('=', ":", 1)),
        &[],
    )
    .await;
    assert_eq!(colon.status, 401, "PVE only splits at '='");
    let unknown = call(&c, reqwest::Method::GET, url, Some("ghost@pam!x1=abc"), &[]).await;
    assert_eq!(unknown.status, 401);

    let (line, _, text) = raw_request(
        &sim,
        &sim.url(),
        "GET /api2/json/nodes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: PVEAPIToken=root@pam!canopy=wrong\r\n\r\n",
    )
    .await;
    assert_eq!(line, "HTTP/1.1 401 Authentication failed!");
    assert!(text.to_ascii_lowercase().contains("connection: close"));
    // The space form `PVEAPIToken USER=SECRET` is accepted too (extract_auth_value).
    let (line, _, _) = raw_request(
        &sim,
        &sim.url(),
        &format!("GET /api2/json/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: PVEAPIToken {ADMIN}\r\n\r\n"),
    )
    .await;
    assert_eq!(line, "HTTP/1.1 200 OK");
    sim.shutdown().await;
}

#[tokio::test]
async fn forbidden_names_path_and_privilege() {
    let sim = home().await;
    let denied = post(
        &sim,
        "/nodes/pve1/lxc/101/snapshot",
        AUDITOR,
        &[("snapname", "x1")],
    )
    .await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.reason.as_deref(),
        Some("Permission check failed (/vms/101, VM.Snapshot)")
    );
    assert_eq!(
        denied.json,
        json!({"data": null, "message": "Permission check failed (/vms/101, VM.Snapshot)\n"})
    );
    let power = post(&sim, "/nodes/pve1/lxc/101/status/shutdown", AUDITOR, &[]).await;
    assert_eq!(
        power.reason.as_deref(),
        Some("Permission check failed (/vms/101, VM.PowerMgmt)")
    );
    // Real PVE guards GET apt/update with Sys.Modify, so an auditor cannot list updates.
    let apt = get(&sim, "/nodes/pve1/apt/update", AUDITOR).await;
    assert_eq!(
        apt.reason.as_deref(),
        Some("Permission check failed (/nodes/pve1, Sys.Modify)")
    );
    let rollback = post(
        &sim,
        "/nodes/pve1/lxc/101/snapshot/before-upgrade/rollback",
        AUDITOR,
        &[],
    )
    .await;
    assert_eq!(
        rollback.reason.as_deref(),
        Some("Permission check failed (/vms/101, VM.Snapshot|VM.Snapshot.Rollback)")
    );
    // The auditor still reads.
    assert_eq!(get(&sim, "/cluster/resources", AUDITOR).await.status, 200);
    assert_eq!(get(&sim, "/nodes/pve1/status", AUDITOR).await.status, 200);

    let (line, _, text) = raw_request(
        &sim,
        &sim.url(),
        &format!("POST /api2/json/nodes/pve1/lxc/101/snapshot HTTP/1.1\r\nHost: x\r\nAuthorization: PVEAPIToken={AUDITOR}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 11\r\n\r\nsnapname=a1"),
    )
    .await;
    assert_eq!(
        line,
        "HTTP/1.1 403 Permission check failed (/vms/101, VM.Snapshot)"
    );
    assert!(
        text.ends_with(
            r#"{"data":null,"message":"Permission check failed (/vms/101, VM.Snapshot)\n"}"#
        ),
        "{text}"
    );
    sim.shutdown().await;

    // Older servers: the reason phrase only.
    let edge = start(cluster("home.toml", "edge")).await;
    let auditor = "auditor@pve!ro=3e8d2c1b-7a6f-4d5e-9b0c-1a2b3c4d5e6f";
    let denied = post(&edge, "/nodes/edge/lxc/110/status/reboot", auditor, &[]).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.json, json!({"data": null}));
    edge.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_and_errors() {
    let sim = home().await;
    let missing = get(&sim, "/foo/bar", ADMIN).await;
    assert_eq!(
        (missing.status, missing.reason.as_deref()),
        (501, Some("Method 'GET /foo/bar' not implemented"))
    );
    assert_eq!(
        missing.json,
        json!({"data": null, "message": "Method 'GET /foo/bar' not implemented"})
    );
    let wrong_node = get(&sim, "/nodes/pve2/lxc/101/config", ADMIN).await;
    assert_eq!(wrong_node.status, 500);
    assert_eq!(
        wrong_node.reason.as_deref(),
        Some("Configuration file 'nodes/pve2/lxc/101.conf' does not exist")
    );
    let bad_vmid = get(&sim, "/nodes/pve1/lxc/abc/config", ADMIN).await;
    assert_eq!(bad_vmid.status, 400);
    assert_eq!(
        bad_vmid.json["errors"]["vmid"],
        "type check ('integer') failed - got 'abc'"
    );
    let no_node = get(&sim, "/nodes/nope/status", ADMIN).await;
    assert_eq!(no_node.status, 500);
    assert!(no_node
        .reason
        .unwrap()
        .starts_with("hostname lookup 'nope' failed"));
    let running = post(&sim, "/nodes/pve1/lxc/101/status/start", ADMIN, &[]).await;
    assert_eq!(running.reason.as_deref(), Some("CT 101 already running"));
    let missing_param = post(&sim, "/nodes/pve1/lxc/101/snapshot", ADMIN, &[]).await;
    assert_eq!(
        missing_param.json["errors"]["snapname"],
        "property is missing and it is not optional"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn numbers_as_strings_quirk() {
    let mut spec = cluster("home.toml", "home");
    spec.quirks.numbers_as_strings = true;
    let sim = start(spec).await;
    let res = get(&sim, "/cluster/resources?type=vm", ADMIN).await;
    let web1 = res.entry("lxc/101").clone();
    assert_eq!(web1["vmid"], "101");
    assert_eq!(web1["maxmem"], "1073741824");
    assert_eq!(web1["template"], 0, "booleans stay 0/1");
    let list = get(&sim, "/nodes/pve1/lxc", ADMIN).await;
    assert!(list
        .data()
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["vmid"].is_string()));
    sim.shutdown().await;
}

#[tokio::test]
async fn every_listener_serves_its_own_certificate() {
    let sim = home().await;
    let endpoints = sim.endpoints();
    assert_eq!(endpoints.len(), 3);
    let (_, url1, fp1) = &endpoints[0];
    assert_eq!(url1, &sim.url());
    assert_eq!(fp1, &sim.fingerprint());
    assert_eq!(fp1.split(':').count(), 32);
    let (_, url2, fp2) = &endpoints[1];
    assert_ne!(fp1, fp2);
    for (url, fp) in [(url1, fp1), (url2, fp2)] {
        let (line, seen, _) = raw_request(
            &sim,
            url,
            "GET /api2/json/version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(&seen, fp);
        assert_eq!(line, "HTTP/1.1 401 No ticket");
    }
    // /nodes reports the same fingerprints, like the PVE GUI.
    let nodes = get(&sim, "/nodes", ADMIN).await;
    let pve2 = nodes
        .data()
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "pve2")
        .unwrap()
        .clone();
    assert_eq!(pve2["ssl_fingerprint"], json!(fp2));
    sim.shutdown().await;
}
