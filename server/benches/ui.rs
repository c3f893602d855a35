//! `cargo xtask bench --only ui` runs this: the web UI's tree in headless Chromium (issue
//! 12), on the simulator's big estate (examples/sim/big.toml: 50 nodes, 5,000 guests) added
//! to the real `canopy serve` binary, driven over WebDriver (the tests' client,
//! tests/common/webdriver.rs). After one login through the page:
//!
//! 1. navigation → interactive tree: the page at `/tree` loaded afresh [`LOADS`] times;
//!    each time the figure is the `canopy:tree-ready` performance mark, which the app sets
//!    once the first tree rows are in the page and focusable, measured from the
//!    navigation's start (the mark's `startTime`): p50 / p95 (goal p95 ≤ 1,000 ms);
//! 2. one live update: with `node01` expanded (its 100 guests listed), a guest of it is
//!    stopped or started in the simulator and a discovery pass run, [`UPDATES`] times; the
//!    figure is from the tree stream's message arriving in the page (the app's
//!    `canopy:tree-event` mark, set before it parses the message) to the guest row's DOM
//!    changing (a MutationObserver on the row): p50 / p95 (goal p95 ≤ 50 ms).
//!
//! Prints one `BENCH name=value` line per figure.

mod serve;
#[allow(dead_code)] // the tests use more of it
#[path = "../tests/common/webdriver.rs"]
mod webdriver;

use canopy_api_types::client::Client;
use canopy_api_types::clusters::CreateCluster;
use serve::{Server, PASSWORD};
use std::time::{Duration, Instant};
use webdriver::Browser;

const LOADS: usize = 10;
const UPDATES: usize = 20;

/// `q`-quantile of `v` (sorted in place).
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * q).round() as usize]
}

/// Runs `script` (its last statement calls `done(value)`) in the page.
async fn js(b: &Browser, script: &str) -> serde_json::Value {
    b.run_async(&format!(
        "const done = arguments[arguments.length - 1]; {script}"
    ))
    .await
}

/// Polls `expr` in the page until it is not null (at most 60 s); its value.
async fn until(b: &Browser, what: &str, expr: &str) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = js(b, &format!("done({expr});")).await;
        if !v.is_null() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what} within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn bench(sim: &canopy_pve_sim::RunningCluster, dir: &std::path::Path) {
    let server = Server::start(dir);
    let anon = Client::new(reqwest::Client::new(), server.base.clone());
    let token = anon.login("admin", PASSWORD).await.unwrap().access_token;
    let api = anon.with_token(token);
    let index = reqwest::get(format!("{}/tree", server.base)).await.unwrap();
    assert_eq!(
        index.status(),
        200,
        "this canopy was built without the web dashboard: run `cargo xtask ui` first"
    );
    api.create_cluster(&CreateCluster {
        name: sim.name().into(),
        endpoints: vec![sim.url()],
        token: sim.token(),
        fingerprints: vec![sim.fingerprint()],
        ca_pem: None,
        interval_secs: Some(86_400),
    })
    .await
    .unwrap();
    let top = api.tree_depth(None, 1).await.unwrap();
    let guests: u32 = top.trees[0]
        .children
        .iter()
        .map(|n| n.child_count.unwrap_or(0))
        .sum();
    assert_eq!(guests, 5_000, "the big estate");
    println!("BENCH ui_guests={guests}");

    let mut b = Browser::start("ui-bench").await;
    let url = format!("{}/tree", server.base);
    b.goto(&url).await;
    b.type_into("#password", PASSWORD).await;
    b.click("button[type=submit]").await;
    b.find("[role=treeitem]").await;

    // 1. Navigation → interactive.
    let ready = "(performance.getEntriesByName('canopy:tree-ready')[0] || {}).startTime ?? null";
    let mut loads = Vec::with_capacity(LOADS);
    for _ in 0..LOADS {
        b.goto(&url).await;
        let ms = until(&b, "the tree ready", ready).await;
        loads.push(ms.as_f64().unwrap());
    }
    let rows = js(
        &b,
        "done(document.querySelectorAll('[role=treeitem]').length);",
    )
    .await;
    println!("BENCH ui_ready_rows={rows}");
    b.shot("ready").await;
    println!("BENCH ui_ready_p50_ms={:.0}", quantile(&mut loads, 0.5));
    println!("BENCH ui_ready_p95_ms={:.0}", quantile(&mut loads, 0.95));

    // 2. One live update at a time, on node01's guests.
    let node = "cluster/big/node/node01";
    b.click(&format!("[id='t-{node}'] .twisty")).await;
    let listed = api.tree_depth(Some(node), 1).await.unwrap();
    let shown: Vec<(u32, String)> = listed.trees[0]
        .children
        .iter()
        .filter(|g| g.template != Some(true))
        .take(UPDATES)
        .map(|g| (g.vmid.unwrap(), g.id.to_string()))
        .collect();
    b.find(&format!("[id='t-{}']", shown[0].1)).await;
    b.shot("expanded").await;
    let mut updates = Vec::with_capacity(UPDATES);
    for (vmid, id) in &shown {
        let before = api.tree_depth(Some(id), 0).await.unwrap().trees[0]
            .status
            .clone();
        let next = if before.as_deref() == Some("running") {
            "stopped"
        } else {
            "running"
        };
        js(
            &b,
            &format!(
                "performance.clearMarks('canopy:tree-event'); window.__applied = null;
                 const row = document.getElementById('t-{id}');
                 const seen = new MutationObserver(() => {{
                   if (window.__applied === null) window.__applied = performance.now();
                   seen.disconnect();
                 }});
                 seen.observe(row, {{subtree: true, attributes: true, childList: true, characterData: true}});
                 done(null);"
            ),
        )
        .await;
        sim.set_guest_status(*vmid, next).unwrap();
        api.discover_cluster(sim.name()).await.unwrap();
        let applied = until(&b, "the row changed", "window.__applied").await;
        let event = js(
            &b,
            "const m = performance.getEntriesByName('canopy:tree-event').filter(e => e.startTime <= window.__applied);
             done(m.length ? m[m.length - 1].startTime : null);",
        )
        .await;
        let ms = applied.as_f64().unwrap()
            - event
                .as_f64()
                .expect("the stream's message arrived before the row changed");
        updates.push(ms);
    }
    b.shot("updated").await;
    println!("BENCH ui_update_p50_ms={:.1}", quantile(&mut updates, 0.5));
    println!("BENCH ui_update_p95_ms={:.1}", quantile(&mut updates, 0.95));
}

fn main() {
    let sims = serve::Sims::start("big.toml");
    let dir = tempfile::tempdir().unwrap();
    serve::block_on(bench(&sims.clusters[0], dir.path()));
    sims.shutdown();
}
