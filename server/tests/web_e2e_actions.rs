//! The actions on a selection, the operations pages, the single-host pipeline and a guest's
//! snapshots, from the dashboard in headless Chromium through WebDriver: scripted agents (the
//! real agent protocol, `common/scripted.rs`) on a simulated node. The admin scans the node
//! (per-guest "queued" lines, then each agent's scan arriving), finds an update operation
//! (run through the API) in the operations list and opens its detail page, approves one
//! update in a guest pane, reads the dry-run's dependency preview, confirms, sees it
//! installed, and sees the guest's PVE snapshots. Screenshots under `target/e2e/actions/`.

mod common;

use canopy_api_types::auth::{CreateUserRequest, Role};
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
    // The node's SSH address: a loopback port nothing listens on (the simulated PVE reports
    // a LAN address for it, and tests send nothing off this machine).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let node_ssh = closed.local_addr().unwrap().to_string();
    drop(closed);
    let app = spawn_app_with(Backend::Sqlite, |s| {
        s.update.agent_back_timeout_secs = 60;
        s.deploy
            .nodes
            .insert("lab/pve1".into(), node_ssh.parse().unwrap());
    })
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

    // Deploy agent: first what a deploy would do per guest, nothing started.
    b.click(".selection-actions .deploy-agent").await;
    let preview = b.wait_text(".deploy-preview", "Deploy preview:").await;
    for want in [
        "lxc/104 deploy ct104 (104) through pct exec on its node",
        "lxc/103 skipped: stopped",
    ] {
        assert!(preview.contains(want), "{want} missing from:\n{preview}");
    }
    b.shot("deploy-preview").await;
    b.click(".deploy-preview button:last-child").await;
    // Agentless scan: the guests with an agent are left to it; 104's node does not answer
    // SSH, and each line says why.
    b.click(".selection-actions .agentless-scan").await;
    let said = b.wait_text(".agentless-lines", "Agentless scan:").await;
    for want in [
        "lxc/101 not scanned: has an agent".to_string(),
        format!("lxc/104 not scanned: cannot connect to {node_ssh}"),
    ] {
        assert!(said.contains(&want), "{want} missing from:\n{said}");
    }
    b.shot("agentless").await;

    // The guest pane: the new scan's update, the snapshots, then approve → dry-run → confirm.
    b.goto(&format!("{}/tree/{G101}", app.base)).await;
    b.wait_text(".detail h2", "101 ct101").await;
    b.wait_text(".detail .updates", "curl").await;
    let snaps = b.wait_text(".detail .snapshots", "before-upgrade").await;
    assert!(snaps.contains("Taken by hand"), "{snaps}");
    assert!(
        !snaps.contains("Canopy"),
        "a snapshot by hand is not Canopy's: {snaps}"
    );
    show(&b, ".detail .snapshots").await;
    b.shot("guest-snapshots").await;
    // 102's update took a snapshot first (`canopy-…`): marked as Canopy's.
    b.goto(&format!("{}/tree/{G102}", app.base)).await;
    b.wait_text(".detail h2", "102 ct102").await;
    let ours = b.wait_text(".detail .snapshots", "canopy-").await;
    assert!(ours.contains("Canopy"), "{ours}");
    b.goto(&format!("{}/tree/{G101}", app.base)).await;
    b.wait_text(".detail h2", "101 ct101").await;
    b.wait_text(".detail .updates", "tools").await;

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

    // A viewer sees the guest's updates and snapshots but no action, and the API refuses
    // a scan anyway.
    admin
        .create_user(&CreateUserRequest {
            username: "vera".into(),
            password: "viewer password 1".into(),
            role: Role::Viewer,
        })
        .await
        .unwrap();
    b.click("header .link:last-child").await;
    b.wait_text(".login .note", "Logged out").await;
    b.goto(&format!("{}/tree/{G101}", app.base)).await;
    b.clear("#username").await;
    b.type_into("#username", "vera").await;
    b.type_into("#password", "viewer password 1").await;
    b.click("button[type=submit]").await;
    b.wait_text("header .who", "vera (viewer)").await;
    b.wait_text(".detail .updates", "curl").await;
    b.wait_text(".detail .snapshots", "before-upgrade").await;
    for css in [
        ".selection-actions",
        ".pipeline",
        "input.choose",
        ".actions",
    ] {
        assert_eq!(b.count(css).await, 0, "a viewer sees no {css}");
    }
    let status = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             fetch('api/v1/hosts/scan', {method: 'POST',
               headers: {'x-canopy-csrf': '1', 'content-type': 'application/json'},
               body: JSON.stringify({selector: 'cluster/lab/**'})}).then(r => done(r.status));",
        )
        .await;
    assert_eq!(status, 403, "the API refuses a viewer's scan");
    b.shot("viewer").await;
}
