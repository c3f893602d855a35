//! The tree in headless Chromium loads only what it shows and follows the estate live
//! (docs/design.md §7.2): after the login the page asked for the clusters with their nodes
//! alone (`depth=1`), no guest; expanding a node asks for that node's children and nothing
//! else; a guest stopped in PVE (then a discovery pass) and an agent's report show in their
//! rows without a reload and without another tree request, through the tree stream; the
//! rows carry their level, place among siblings and expanded state for screen readers.
//! When the access cookie expires the stream ends; the page refreshes the session and
//! opens it again, and changes keep arriving. Screenshots under `target/e2e/tree-live/`.

mod common;

use common::webdriver::Browser;
use common::*;
use std::time::{Duration, Instant};

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
"#;

fn row(id: &str) -> String {
    format!("[id='t-{id}']")
}

/// The tree requests the page made so far (resource timing), as `?query` strings.
async fn tree_requests(b: &Browser) -> Vec<String> {
    let v = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             done(performance.getEntriesByType('resource').map(e => e.name)
               .filter(n => n.includes('/api/v1/tree?') || n.endsWith('/api/v1/tree'))
               .map(n => decodeURIComponent(n.slice(n.indexOf('/api/v1/tree') + 12))));",
        )
        .await;
    serde_json::from_value(v).unwrap()
}

/// Waits (at most 20 s) until `script` (a JS expression) is true in the page.
async fn until(b: &Browser, what: &str, script: &str) {
    let start = Instant::now();
    loop {
        let v = b
            .run_async(&format!(
                "const done = arguments[arguments.length - 1]; done(!!({script}));"
            ))
            .await;
        if v == true {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tree_loads_what_it_shows_and_follows_the_estate() {
    assert!(
        canopy_server::webui::embedded(),
        "this canopy was built without the web dashboard: run `cargo xtask ui`, then the tests"
    );
    let app = spawn_app(Backend::Sqlite)
        .await
        .expect("SQLite needs nothing");
    let sim = start_sim(ESTATE).await;
    app.add_cluster("home", &sim, TOKEN).await;

    let mut b = Browser::start("tree-live").await;
    b.goto(&format!("{}/tree", app.base)).await;
    b.type_into("#password", ADMIN_PASSWORD).await;
    b.click("button[type=submit]").await;

    // The clusters with their nodes: one request, no guest loaded.
    let pve1 = row("cluster/home/node/pve1");
    b.find(&pve1).await;
    assert_eq!(tree_requests(&b).await, ["?depth=1"]);
    assert_eq!(b.count("[role=treeitem]").await, 3);
    assert_eq!(
        b.attribute(&pve1, "aria-expanded").await.as_deref(),
        Some("false")
    );
    assert_eq!(b.attribute(&pve1, "aria-level").await.as_deref(), Some("2"));
    assert_eq!(
        b.attribute(&pve1, "aria-setsize").await.as_deref(),
        Some("2")
    );
    assert_eq!(
        b.attribute(&pve1, "aria-posinset").await.as_deref(),
        Some("1")
    );
    b.shot("top").await;

    // Expanding pve1 asks for pve1's children alone.
    b.click(&format!("{pve1} .twisty")).await;
    let db = row("cluster/home/node/pve1/lxc/102");
    b.find(&db).await;
    assert_eq!(
        tree_requests(&b).await,
        ["?depth=1", "?selector=cluster/home/node/pve1&depth=1"]
    );
    assert_eq!(
        b.attribute(&pve1, "aria-expanded").await.as_deref(),
        Some("true")
    );
    assert_eq!(b.attribute(&db, "aria-level").await.as_deref(), Some("3"));
    assert_eq!(
        b.attribute(&db, "aria-posinset").await.as_deref(),
        Some("2")
    );
    assert_eq!(b.count(&row("cluster/home/node/pve2/lxc/201")).await, 0);
    assert_eq!(b.count(&format!("{db} .tone-ok")).await, 1);
    b.shot("expanded").await;

    // The page is never reloaded: a mark left in it stays.
    b.run_async("window.__same_page = 1; arguments[arguments.length - 1]();")
        .await;
    // db stopped in PVE, then a discovery pass: its row turns stopped.
    sim.set_guest_status(102, "stopped").unwrap();
    app.admin.discover_cluster("home").await.unwrap();
    until(
        &b,
        "db shown stopped",
        &format!("document.querySelector(\"{db} .tone-off\")"),
    )
    .await;
    // An agent on web reports an update: its row (and pve1's) gets the badge.
    let web = app.enrol("web").await;
    web.report(vec![serde_json::to_value(package("nginx", false)).unwrap()])
        .await;
    let web_row = row("cluster/home/node/pve1/lxc/101");
    b.wait_text(&format!("{web_row} .badge-pending"), "upd")
        .await;
    b.wait_text(&format!("{pve1} .badge-pending"), "upd").await;
    until(&b, "the same page", "window.__same_page === 1").await;
    assert_eq!(
        tree_requests(&b).await,
        ["?depth=1", "?selector=cluster/home/node/pve1&depth=1"],
        "live changes come through the stream, not another load"
    );
    b.shot("live").await;

    // Collapsing and expanding again loads that level again (it was forgotten).
    b.click(&format!("{pve1} .twisty")).await;
    until(
        &b,
        "pve1 collapsed",
        &format!("!document.querySelector(\"{db}\")"),
    )
    .await;
    b.click(&format!("{pve1} .twisty")).await;
    b.find(&db).await;
    assert_eq!(tree_requests(&b).await.len(), 3);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_is_opened_again_after_the_session_is_refreshed() {
    assert!(
        canopy_server::webui::embedded(),
        "this canopy was built without the web dashboard: run `cargo xtask ui`, then the tests"
    );
    // Access cookies last 2 s: the stream ends with them.
    let app = spawn_app_with(Backend::Sqlite, |s| s.access_token_ttl_secs = 2)
        .await
        .expect("SQLite needs nothing");
    let sim = start_sim(ESTATE).await;
    app.add_cluster("home", &sim, TOKEN).await;

    let mut b = Browser::start("tree-live-session").await;
    b.goto(&format!("{}/tree", app.base)).await;
    b.type_into("#password", ADMIN_PASSWORD).await;
    b.click("button[type=submit]").await;
    let pve2 = row("cluster/home/node/pve2");
    b.find(&pve2).await;
    // The stream ended with the cookie, was refused, the session refreshed, and it was
    // opened again: a second top load follows its second `ready`.
    until(
        &b,
        "a session refresh",
        "performance.getEntriesByType('resource').some(e => e.name.includes('/auth/session/refresh'))",
    )
    .await;
    until(
        &b,
        "the tree loaded again after the stream reopened",
        "performance.getEntriesByType('resource').filter(e => e.name.endsWith('/api/v1/tree?depth=1')).length >= 2",
    )
    .await;
    // Changes still arrive: pve2's guest stopped shows on pve2 once expanded, and a new
    // guest appears in the expanded node without a reload.
    b.click(&format!("{pve2} .twisty")).await;
    let proxy = row("cluster/home/node/pve2/lxc/201");
    b.find(&proxy).await;
    sim.set_guest_status(201, "stopped").unwrap();
    app.admin.discover_cluster("home").await.unwrap();
    until(
        &b,
        "proxy shown stopped",
        &format!("document.querySelector(\"{proxy} .tone-off\")"),
    )
    .await;
    b.shot("after-refresh").await;
    assert_eq!(b.count(".login").await, 0, "still logged in");
    sim.shutdown().await;
}
