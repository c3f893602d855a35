//! The actions on a selection, the operations pages, the single-host pipeline and a guest's
//! snapshots, from the dashboard in headless Chromium through WebDriver: scripted agents (the
//! real agent protocol, `common/scripted.rs`) on a simulated node. The admin scans the node
//! (per-guest "queued" lines, then each agent's scan arriving), finds an update operation
//! (run through the API) in the operations list and opens its detail page, approves one
//! update in a guest pane, reads the dry-run's dependency preview, confirms, sees it
//! installed, and sees the guest's PVE snapshots. Screenshots under `target/e2e/actions/`.

mod common;

use canopy_api_types::bulk::UpdateRequest;
use canopy_api_types::deploy::OperationState;
use common::scripted::{pkg, scripted, standard};
use common::webdriver::Browser;
use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
[[clusters.guests]]
vmid = 104
type = "lxc"
node = "pve1"
name = "ct104"
status = "running"
"#;

const G101: &str = "cluster/lab/node/pve1/lxc/101";
const G102: &str = "cluster/lab/node/pve1/lxc/102";

/// Takes a snapshot of 101 through the simulator's PVE API (its CA pinned), as an owner
/// would in the PVE GUI, and waits for PVE's task to finish.
async fn snapshot_by_hand(sim: &canopy_pve_sim::RunningCluster) {
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let resp = http
        .post(format!(
            "{}/api2/json/nodes/pve1/lxc/101/snapshot",
            sim.url()
        ))
        .header("authorization", format!("PVEAPIToken={TOKEN}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("snapname=before-upgrade&description=Taken%20by%20hand")
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{:?}", resp.text().await);
    eventually(Duration::from_secs(20), || async {
        sim.guest(101)
            .is_some_and(|g| g.snapshots.iter().any(|s| s.name == "before-upgrade"))
            .then_some(())
    })
    .await;
}

/// Scrolls the element matching `css` into view (for the screenshot).
async fn show(b: &Browser, css: &str) {
    b.find(css).await;
    b.run_async(&format!(
        "document.querySelector({css:?}).scrollIntoView({{block: 'center'}}); arguments[arguments.length - 1](true);"
    ))
    .await;
}

/// Waits (at most 20 s) until `css`'s text no longer contains `gone`.
async fn wait_gone(b: &Browser, css: &str, gone: &str) {
    let start = Instant::now();
    loop {
        let t = b.text(css).await;
        if !t.contains(gone) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{css} still says {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_operations_single_host_and_snapshots_from_the_dashboard() {
    assert!(
        canopy_server::webui::embedded(),
        "this canopy was built without the web dashboard: run `cargo xtask ui`, then the tests"
    );
    let app = spawn_app_with(Backend::Sqlite, |s| s.update.agent_back_timeout_secs = 60)
        .await
        .expect("SQLite needs nothing");
    let sim = Arc::new(start_sim(ESTATE).await);
    sim.set_task_duration(Duration::from_millis(50));
    let mut with_tools = standard();
    with_tools
        .packages
        .insert("tools".into(), pkg("1.0", "2.0"));
    let guests = [
        scripted(&app, sim.clone(), 101, with_tools).await,
        scripted(&app, sim.clone(), 102, standard()).await,
    ];
    app.add_cluster("lab", &sim, TOKEN).await;
    snapshot_by_hand(&sim).await;

    // An update of 102, run to its end through the API (the CLI's way).
    let admin = &app.admin;
    let op = admin
        .start_update(&UpdateRequest {
            selector: G102.into(),
            options: Default::default(),
        })
        .await
        .unwrap();
    let planned = eventually(Duration::from_secs(60), || async {
        let o = admin.operation(op.id).await.unwrap();
        (o.state != OperationState::Planning).then_some(o)
    })
    .await;
    assert_eq!(
        planned.state,
        OperationState::AwaitingApproval,
        "{planned:#?}"
    );
    let fp = planned
        .update
        .as_ref()
        .unwrap()
        .fingerprint
        .clone()
        .unwrap();
    admin.approve_operation(op.id, &fp).await.unwrap();
    let done = admin.follow_operation(op.id, |_| {}).await.unwrap();
    assert_eq!(done.state, OperationState::Succeeded, "{done:#?}");

    let mut b = Browser::start("actions").await;
    b.goto(&format!("{}/tree/cluster/lab/node/pve1", app.base))
        .await;
    b.type_into("#password", ADMIN_PASSWORD).await;
    b.click("button[type=submit]").await;
    b.wait_text(".detail h2", "node pve1").await;

    // Scan the node: one line per guest, queued or skipped and why; then the scans arrive.
    guests[0]
        .state
        .lock()
        .unwrap()
        .packages
        .insert("curl".into(), pkg("7.88", "7.88+deb12u5"));
    b.click(".selection-actions .scan-now").await;
    let lines = b.wait_text(".scan-lines", "2 queued, 2 skipped").await;
    for want in [
        G101,
        G102,
        "lxc/103 skipped: stopped",
        "lxc/104 skipped: agent missing",
    ] {
        assert!(lines.contains(want), "{want} missing from:\n{lines}");
    }
    let start = Instant::now();
    loop {
        let t = b.text(".scan-lines").await;
        if t.matches("scanned").count() == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the scans did not arrive: {t}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.shot("scanned").await;

    // The guest pane: the new scan's update, the snapshots, then approve → dry-run → confirm.
    b.goto(&format!("{}/tree/{G101}", app.base)).await;
    b.wait_text(".detail h2", "101 ct101").await;
    b.wait_text(".detail .updates", "curl").await;
    let snaps = b.wait_text(".detail .snapshots", "before-upgrade").await;
    assert!(snaps.contains("Taken by hand"), "{snaps}");
    show(&b, ".detail .snapshots").await;
    b.shot("guest-snapshots").await;

    b.click(".detail input[aria-label='Select tools']").await;
    b.wait_text(".pipeline .approve-selected", "Approve 1 selected")
        .await;
    b.click(".pipeline .approve-selected").await;
    let dry = b.wait_text(".pipeline .dry-run", "Dry-run: done").await;
    for want in [
        "tools 1.0 → 2.0",
        "libextra 1.0 (new), also installed as a dependency",
    ] {
        assert!(
            dry.contains(want),
            "{want} missing from the dry-run:\n{dry}"
        );
    }
    assert!(guests[0].state.lock().unwrap().installs.is_empty());
    // Approved, the row is no longer open: the list was loaded again.
    wait_gone(&b, ".detail .updates", "tools").await;
    show(&b, ".pipeline").await;
    b.shot("dry-run").await;
    b.click(".pipeline button.confirm").await;
    b.wait_text(".pipeline .install", "Install: done").await;
    assert_eq!(
        guests[0].state.lock().unwrap().installs,
        ["tools 2.0", "libextra 1.0"]
    );
    // Every row, not only open ones: it is installed.
    b.click("#open-only").await;
    let all = b.wait_text(".detail .updates", "tools").await;
    assert!(
        all.lines()
            .any(|l| l.contains("tools") && l.contains("installed")),
        "{all}"
    );
    show(&b, ".pipeline").await;
    b.shot("installed").await;

    // The operations page lists the update of 102; its detail shows the per-guest result.
    b.click(".sections a[href='operations']").await;
    let list = b.wait_text(".op-list", G102).await;
    assert!(list.contains("update"), "{list}");
    assert!(list.contains("succeeded"), "{list}");
    assert!(list.contains("1 succeeded"), "{list}");
    b.click("#op-state option[value='failed']").await;
    b.wait_text(".operations-page", "No operation matches")
        .await;
    b.click("#op-state option[value='succeeded']").await;
    b.wait_text(".op-list", G102).await;
    b.shot("operations").await;
    b.click(".op-list a").await;
    b.wait_text(".operation-page h2", "update of").await;
    let progress = b.wait_text(".operation .progress", "succeeded").await;
    assert!(progress.contains("1 of 1 guests done"), "{progress}");
    let rows = b.text(".operation .plan").await;
    assert!(rows.contains(G102), "{rows}");
    assert!(
        rows.contains("succeeded: updated"),
        "the guest's result: {rows}"
    );
    b.shot("operation").await;
}
