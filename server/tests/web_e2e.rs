//! The dashboard end to end in headless Chromium (WebDriver), against the real server on a
//! simulated estate: a deep link sends a logged-out visitor to the login page (every page
//! does, checked again after the logout); after the
//! login, the tree with its rollup badges; the arrow keys expand and collapse a node; a
//! selector's live preview and the tree narrowed to it; a guest's detail; logging out; a
//! viewer sees no action button and the API refuses the action anyway. A screenshot of each
//! step is saved under `target/e2e/dashboard/`.

mod common;

use canopy_api_types::auth::{CreateUserRequest, Role};
use common::webdriver::{keys, Browser};
use common::*;

const TOKEN: &str = "canopy@pve!home=3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60";
const ESTATE: &str = r#"
[[clusters]]
name = "home"
[[clusters.tokens]]
id = "canopy@pve!home"
secret = "3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60"
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
status = "running"
tags = "prod;web"
[[clusters.guests]]
vmid = 102
type = "lxc"
node = "pve1"
name = "db"
status = "running"
[[clusters.guests]]
vmid = 201
type = "lxc"
node = "pve2"
name = "proxy"
status = "running"
tags = "prod"
[[clusters.guests]]
vmid = 9000
type = "lxc"
node = "pve2"
name = "tpl"
status = "stopped"
template = true
tags = "prod"
"#;

const VIEWER_PASSWORD: &str = "viewer password 1";

fn row(id: &str) -> String {
    format!("[id='t-{id}']")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_in_browse_filter_and_stay_read_only_as_a_viewer() {
    assert!(
        canopy_server::webui::embedded(),
        "this canopy was built without the web dashboard: run `cargo xtask ui`, then the tests"
    );
    let app = spawn_app(Backend::Sqlite)
        .await
        .expect("SQLite needs nothing");
    let sim = start_sim(ESTATE).await;
    app.add_cluster("home", &sim, TOKEN).await;
    app.admin
        .create_user(&CreateUserRequest {
            username: "vera".into(),
            password: VIEWER_PASSWORD.into(),
            role: Role::Viewer,
        })
        .await
        .unwrap();

    let mut b = Browser::start("dashboard").await;
    // Logged out, a deep link shows the login page.
    b.goto(&format!("{}/tree/cluster/home/node/pve1", app.base))
        .await;
    b.find("#password").await;
    b.shot("login").await;
    b.type_into("#password", ADMIN_PASSWORD).await;
    b.click("button[type=submit]").await;

    // The tree, opened down to the linked node, with its rollups.
    let pve1 = row("cluster/home/node/pve1");
    b.find(&pve1).await;
    assert_eq!(
        b.attribute(&pve1, "aria-selected").await.as_deref(),
        Some("true")
    );
    assert_eq!(
        b.attribute(&pve1, "aria-expanded").await.as_deref(),
        Some("false")
    );
    assert_eq!(
        b.attribute(&row("cluster/home"), "aria-expanded")
            .await
            .as_deref(),
        Some("true")
    );
    // Every guest lacks an agent: the cluster's badge counts them (templates aside).
    let badge = b
        .wait_text(
            &format!("{} .badge-missing", row("cluster/home")),
            "no agent",
        )
        .await;
    assert!(badge.starts_with('3'), "{badge}");
    b.wait_text(".detail h2", "node pve1").await;
    b.shot("tree").await;

    // The keyboard: → opens the node, ↓ moves to its first guest, ← ← back and closed.
    b.type_into(&pve1, keys::RIGHT).await;
    b.find(&row("cluster/home/node/pve1/lxc/101")).await;
    assert_eq!(
        b.attribute(&pve1, "aria-expanded").await.as_deref(),
        Some("true")
    );
    b.shot("expanded").await;
    b.type_into(&pve1, keys::DOWN).await;
    b.type_into(&row("cluster/home/node/pve1/lxc/101"), keys::ENTER)
        .await;
    b.wait_text(".detail h2", "LXC container 101 web").await;
    b.wait_text(".detail .facts", "missing: no agent deployed")
        .await;
    b.shot("guest").await;
    b.type_into(&row("cluster/home/node/pve1/lxc/101"), keys::LEFT)
        .await;
    b.type_into(&pve1, keys::LEFT).await;
    let start = std::time::Instant::now();
    while b.count(&row("cluster/home/node/pve1/lxc/101")).await > 0 {
        assert!(start.elapsed().as_secs() < 20, "the node did not collapse");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // A selector: the live preview, then the tree narrowed to it.
    b.type_into("#selector", "cluster/home/**[tag=prod]").await;
    let preview = b.wait_text("#selector-preview", "resolves to").await;
    assert!(preview.contains("resolves to 2 hosts"), "{preview}");
    assert!(preview.contains("1 template skipped"), "{preview}");
    b.type_into("#selector", keys::ENTER).await;
    b.find(&row("cluster/home/node/pve2/lxc/201")).await;
    let start = std::time::Instant::now();
    while b.count(&row("cluster/home/node/pve1/lxc/102")).await > 0 || b.count(&pve1).await > 0 {
        assert!(start.elapsed().as_secs() < 20, "the tree was not narrowed");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    b.shot("filtered").await;
    // The admin may act on the selection.
    b.click(&row("cluster/home/node/pve2/lxc/201")).await;
    b.wait_text(".actions button", "Plan an update").await;

    // Log out, then in as a viewer: no action, and the API refuses it anyway.
    b.click("header .link:last-child").await;
    b.wait_text(".login .note", "Logged out").await;
    // Logged out, every page of the dashboard is the login page.
    for page in [
        "operations",
        "operations/0b9c7f4e-2f7e-4f7c-9d39-1d0f0b7f6a11",
        "admin/users",
        "tree/cluster/home",
    ] {
        b.goto(&format!("{}/{page}", app.base)).await;
        b.find("#password").await;
        assert_eq!(
            b.count("header .sections").await,
            0,
            "{page} shows nothing but the login page"
        );
    }
    b.clear("#username").await;
    b.type_into("#username", "vera").await;
    b.type_into("#password", VIEWER_PASSWORD).await;
    b.click("button[type=submit]").await;
    b.wait_text("header .who", "vera (viewer)").await;
    b.click(&row("cluster/home")).await;
    b.wait_text(".detail h2", "cluster home").await;
    b.wait_text(".detail", "Recent operations").await;
    assert_eq!(
        b.count(".actions").await,
        0,
        "a viewer sees no action button"
    );
    b.shot("viewer").await;
    let status = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             fetch('api/v1/operations/update', {method: 'POST',
               headers: {'x-canopy-csrf': '1', 'content-type': 'application/json'},
               body: JSON.stringify({selector: 'cluster/home/**'})}).then(r => done(r.status));",
        )
        .await;
    assert_eq!(status, 403, "the API refuses a viewer's update");
}
