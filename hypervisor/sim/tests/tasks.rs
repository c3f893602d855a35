//! Tasks: UPIDs in PVE's format, running → stopped, effects applied only at the end,
//! failures as task exit status, logs, and vzdump's quirks.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn upid_parts(upid: &str) -> Vec<String> {
    upid.split(':').map(str::to_string).collect()
}

#[tokio::test]
async fn snapshot_task_progresses_and_applies() {
    let sim = home().await;
    sim.set_task_duration(Duration::from_millis(300));
    let created = post(
        &sim,
        "/nodes/pve1/lxc/101/snapshot",
        ADMIN,
        &[("snapname", "pre_update"), ("description", "canopy")],
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.raw);
    let upid = created.data().as_str().unwrap().to_string();
    let p = upid_parts(&upid);
    assert_eq!(p.len(), 9);
    assert_eq!(
        (
            p[0].as_str(),
            p[1].as_str(),
            p[5].as_str(),
            p[6].as_str(),
            p[7].as_str(),
            p[8].as_str()
        ),
        ("UPID", "pve1", "vzsnapshot", "101", "root@pam!canopy", "")
    );
    assert!(p[2..5].iter().all(|h| h.len() == 8
        && h.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())));

    let running = get(&sim, &format!("/nodes/pve1/tasks/{upid}/status"), ADMIN).await;
    assert_eq!(running.data()["status"], "running");
    assert!(running.data().get("exitstatus").is_none());
    let list = get(&sim, "/nodes/pve1/lxc/101/snapshot", ADMIN).await;
    assert!(
        !list
            .data()
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "pre_update"),
        "not before the task ends"
    );
    let locked = get(&sim, "/nodes/pve1/lxc/101/config", ADMIN).await;
    assert_eq!(locked.data()["lock"], "snapshot");

    let done = wait_task(&sim, "pve1", &upid).await;
    assert_eq!(done["exitstatus"], "OK");
    assert_eq!(
        (
            done["type"].clone(),
            done["id"].clone(),
            done["user"].clone(),
            done["tokenid"].clone()
        ),
        (
            json!("vzsnapshot"),
            json!("101"),
            json!("root@pam"),
            json!("canopy")
        )
    );
    for key in ["starttime", "pid", "pstart", "upid", "node"] {
        assert!(done.get(key).is_some(), "{key}");
    }
    let list = get(&sim, "/nodes/pve1/lxc/101/snapshot", ADMIN).await;
    let snaps = list.data().as_array().unwrap();
    let new = snaps.iter().find(|s| s["name"] == "pre_update").unwrap();
    assert_eq!(
        (new["description"].clone(), new["parent"].clone()),
        (json!("canopy"), json!("before-upgrade"))
    );
    let current = snaps.last().unwrap();
    assert_eq!(
        (
            current["name"].clone(),
            current["running"].clone(),
            current["parent"].clone()
        ),
        (json!("current"), json!(1), json!("pre_update"))
    );
    assert!(get(&sim, "/nodes/pve1/lxc/101/config", ADMIN)
        .await
        .data()
        .get("lock")
        .is_none());

    let log = get(&sim, &format!("/nodes/pve1/tasks/{upid}/log"), ADMIN).await;
    let lines = log.data().as_array().unwrap();
    assert_eq!(lines.last().unwrap()["t"], "TASK OK");
    assert_eq!(lines[0]["n"], 1);
    assert_eq!(log.json["total"], lines.len());

    // The same name again: the task fails, not the request.
    let again = post(
        &sim,
        "/nodes/pve1/lxc/101/snapshot",
        ADMIN,
        &[("snapname", "pre_update")],
    )
    .await;
    let failed = wait_task(&sim, "pve1", again.data().as_str().unwrap()).await;
    assert_eq!(
        failed["exitstatus"],
        "snapshot name 'pre_update' already used"
    );

    // Rollback stops the container; delete removes the snapshot.
    sim.rename_guest(101, "renamed").unwrap();
    let rb = post(
        &sim,
        "/nodes/pve1/lxc/101/snapshot/pre_update/rollback",
        ADMIN,
        &[],
    )
    .await;
    assert_eq!(
        wait_task(&sim, "pve1", rb.data().as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    let g = sim.guest(101).unwrap();
    assert_eq!((g.name.as_str(), g.status.as_str()), ("web1", "stopped"));
    let c = client(&sim, Duration::from_secs(5));
    let del = call(
        &c,
        reqwest::Method::DELETE,
        format!(
            "{}/api2/json/nodes/pve1/lxc/101/snapshot/pre_update",
            sim.url()
        ),
        Some(ADMIN),
        &[],
    )
    .await;
    assert_eq!(
        wait_task(&sim, "pve1", del.data().as_str().unwrap()).await["exitstatus"],
        "OK"
    );
    let names: Vec<_> = sim
        .guest(101)
        .unwrap()
        .snapshots
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["before-upgrade".to_string()]);
    sim.shutdown().await;
}

#[tokio::test]
async fn power_tasks_and_json_bodies() {
    let sim = home().await;
    sim.set_task_duration(Duration::from_millis(150));
    let c = client(&sim, Duration::from_secs(5));
    let shutdown = c
        .post(format!(
            "{}/api2/json/nodes/pve1/lxc/102/status/shutdown",
            sim.url()
        ))
        .header("Authorization", format!("PVEAPIToken={ADMIN}"))
        .json(&json!({"timeout": 30, "forceStop": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(shutdown.status(), 200);
    let upid = shutdown.json::<serde_json::Value>().await.unwrap()["data"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(upid.contains(":vzshutdown:102:"));
    assert_eq!(
        sim.guest(102).unwrap().status,
        "running",
        "effect only when the task ends"
    );
    wait_task(&sim, "pve1", &upid).await;
    let current = get(&sim, "/nodes/pve1/lxc/102/status/current", ADMIN).await;
    assert_eq!(current.data()["status"], "stopped");
    assert_eq!(current.data()["ha"]["managed"], 0);

    let start = post(&sim, "/nodes/pve1/lxc/102/status/start", ADMIN, &[]).await;
    wait_task(&sim, "pve1", start.data().as_str().unwrap()).await;
    assert_eq!(sim.guest(102).unwrap().status, "running");

    let template = post(&sim, "/nodes/pve1/lxc/9000/status/start", ADMIN, &[]).await;
    let failed = wait_task(&sim, "pve1", template.data().as_str().unwrap()).await;
    assert_eq!(
        failed["exitstatus"],
        "you can't start a CT if it's a template"
    );
    let log = get(
        &sim,
        &format!(
            "/nodes/pve1/tasks/{}/log",
            template.data().as_str().unwrap()
        ),
        ADMIN,
    )
    .await;
    assert_eq!(
        log.data().as_array().unwrap().last().unwrap()["t"],
        "TASK ERROR: you can't start a CT if it's a template"
    );

    let vm = post(&sim, "/nodes/pve1/qemu/100/status/reboot", ADMIN, &[]).await;
    assert!(vm.data().as_str().unwrap().contains(":qmreboot:100:"));

    // A task is only known to the node that runs it.
    let elsewhere = get(&sim, &format!("/nodes/pve2/tasks/{upid}/status"), ADMIN).await;
    assert_eq!(elsewhere.json["errors"]["upid"], "no such task");
    let garbage = get(&sim, "/nodes/pve1/tasks/UPID:nope/status", ADMIN).await;
    assert_eq!(
        garbage.json["errors"]["upid"],
        "unable to parse worker upid"
    );
    // Another token needs Sys.Audit on the node to read someone else's task.
    assert_eq!(
        get(&sim, &format!("/nodes/pve1/tasks/{upid}/status"), AUDITOR)
            .await
            .status,
        200
    );
    assert_eq!(sim.tasks().len(), 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn vzdump_like_pve() {
    let mut spec = cluster("home.toml", "home");
    spec.tokens.push(canopy_pve_sim::TokenSpec {
        id: "backup@pve!job".into(),
        secret: "b1".into(),
        role: Some("PVEAuditor".into()),
        privs: vec!["Datastore.AllocateSpace".into()],
        acl: vec![],
        expire: None,
    });
    let sim = start(spec).await;
    sim.set_task_duration(Duration::from_millis(150));
    let ok = post(
        &sim,
        "/nodes/pve1/vzdump",
        ADMIN,
        &[("vmid", "101"), ("mode", "snapshot"), ("storage", "local")],
    )
    .await;
    let upid = ok.data().as_str().unwrap().to_string();
    assert!(upid.contains(":vzdump:101:root@pam!canopy:"));
    assert_eq!(sim.guest(101).unwrap().lock.as_deref(), Some("backup"));
    let done = wait_task(&sim, "pve1", &upid).await;
    assert_eq!(done["exitstatus"], "OK");
    assert_eq!(sim.guest(101).unwrap().lock, None);

    // Guests on other nodes: a silent "OK" and no task.
    let elsewhere = post(&sim, "/nodes/pve1/vzdump", ADMIN, &[("vmid", "201")]).await;
    assert_eq!(elsewhere.data(), &json!("OK"));

    let denied = post(&sim, "/nodes/pve1/vzdump", AUDITOR, &[("vmid", "101")]).await;
    assert_eq!(
        denied.reason.as_deref(),
        Some("Permission check failed (/storage/local, Datastore.AllocateSpace)")
    );
    // VM.Backup is checked inside the worker: the task fails.
    let in_task = post(
        &sim,
        "/nodes/pve1/vzdump",
        "backup@pve!job=b1",
        &[("vmid", "101")],
    )
    .await;
    assert_eq!(in_task.status, 200);
    let failed = wait_task(&sim, "pve1", in_task.data().as_str().unwrap()).await;
    assert_eq!(
        failed["exitstatus"],
        "Permission check failed (/vms/101, VM.Backup)"
    );
    sim.shutdown().await;
}
