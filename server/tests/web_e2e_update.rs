//! An update run from the dashboard to its end, in headless Chromium through WebDriver:
//! scripted agents (the real agent protocol, `common/scripted.rs`) on a simulated node; the
//! admin opens the node, plans an update of it, reads the plan (packages per guest, the held
//! one left out, the stopped guest skipped), approves it, and watches each guest reach
//! `succeeded` live; then finds it among the node's operations and in a guest's history.
//! Screenshots under `target/e2e/update/`.

mod common;

use common::scripted::{scripted, standard};
use common::webdriver::{keys, Browser};
use common::*;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "canopy@pve!lab=3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60";
const ESTATE: &str = r#"
[[clusters]]
name = "lab"
[[clusters.tokens]]
id = "canopy@pve!lab"
secret = "3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60"
role = "Administrator"
[[clusters.nodes]]
name = "pve1"
[[clusters.guests]]
vmid = 101
type = "lxc"
node = "pve1"
name = "ct101"
status = "running"
[[clusters.guests]]
vmid = 102
type = "lxc"
node = "pve1"
name = "ct102"
status = "running"
[[clusters.guests]]
vmid = 103
type = "lxc"
node = "pve1"
name = "ct103"
status = "stopped"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_approve_and_watch_an_update_reach_its_end() {
    assert!(
        canopy_server::webui::embedded(),
        "this canopy was built without the web dashboard: run `cargo xtask ui`, then the tests"
    );
    let app = spawn_app_with(Backend::Sqlite, |s| s.update.agent_back_timeout_secs = 60)
        .await
        .expect("SQLite needs nothing");
    let sim = Arc::new(start_sim(ESTATE).await);
    sim.set_task_duration(Duration::from_millis(50));
    let _guests = [
        scripted(&app, sim.clone(), 101, standard()).await,
        scripted(&app, sim.clone(), 102, standard()).await,
    ];
    app.add_cluster("lab", &sim, TOKEN).await;

    let mut b = Browser::start("update").await;
    b.goto(&format!("{}/tree/cluster/lab/node/pve1", app.base))
        .await;
    b.type_into("#password", ADMIN_PASSWORD).await;
    b.click("button[type=submit]").await;
    b.wait_text(".detail h2", "node pve1").await;
    // The node's rollup: the two guests' pending updates (security ones counted apart).
    b.wait_text(".detail .badge-security", "sec").await;
    b.shot("node").await;

    b.click(".actions button").await;
    let waiting = b
        .wait_text(".operation .progress", "awaiting approval")
        .await;
    assert!(waiting.contains("(1 skipped)"), "{waiting}");
    let plan = b.text(".operation .plan").await;
    for want in [
        "cluster/lab/node/pve1/lxc/101",
        "cluster/lab/node/pve1/lxc/102",
        "ssl 1.0 → 1.0+deb12u1",
        "web 1.0 → 1.1",
        "left out: pinned (held)",
    ] {
        assert!(plan.contains(want), "{want} missing from the plan:\n{plan}");
    }
    assert!(
        b.text(".operation").await.contains("lxc/103 (stopped"),
        "the stopped guest is skipped"
    );
    b.shot("plan").await;

    b.click(".operation button.primary").await;
    // Progress arrives over the event stream; the end is the operation's `done`.
    let start = std::time::Instant::now();
    loop {
        let line = b.text(".operation .progress").await;
        if line.starts_with("succeeded") {
            assert!(line.contains("2 of 2 guests done"), "{line}");
            break;
        }
        assert!(
            !line.starts_with("failed") && !line.starts_with("partial"),
            "{line}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "still {line:?} after 120 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let states = b.text(".operation .plan").await;
    assert_eq!(states.matches("succeeded").count(), 2, "{states}");
    b.shot("done").await;

    // The node lists it among its operations; the guest's history has its steps.
    b.click(".side-tools .link").await;
    b.wait_text(".detail .ops", "succeeded").await;
    assert!(b
        .text(".detail .ops")
        .await
        .contains("cluster/lab/node/pve1/**"));
    b.type_into("[id='t-cluster/lab/node/pve1']", keys::RIGHT)
        .await;
    b.click(&format!("[id='t-{}']", "cluster/lab/node/pve1/lxc/101"))
        .await;
    b.wait_text(".detail h2", "101 ct101").await;
    b.wait_text(".detail .timeline", "operation").await;
    // Open updates by default: only the held one is left; every row on request.
    let open = b.wait_text(".detail .updates", "held").await;
    assert!(!open.contains("installed"), "{open}");
    b.click("#open-only").await;
    b.wait_text(".detail .updates", "installed").await;
    b.shot("guest-history").await;
}
