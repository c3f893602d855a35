//! The real dashboard in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `cargo xtask prereqs`) loads a deep link from the real server, so the bundle must load
//! under the server's Content-Security-Policy (module script, wasm compile), the app must ask
//! who is logged in, and a logged-out visitor must get the login page. Plain HTTP on
//! loopback, the default for a browser on the same machine.

mod common;

use common::{spawn_app, Backend};
use std::time::Duration;

/// Chromium, or a failure saying how to get it (never a silent skip).
fn chromium() -> &'static str {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(bin).is_file() {
            return bin;
        }
    }
    panic!("headless Chromium is missing: `cargo xtask prereqs` installs Debian's chromium");
}

/// The DOM after the page ran its scripts (Chromium's virtual time lets the wasm start).
async fn rendered(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium answers within 90 s")
        .expect("chromium starts");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_out_visitor_of_a_deep_link_gets_the_login_page() {
    assert!(
        canopy_server::webui::embedded(),
        "this canopy was built without the web dashboard: run `cargo xtask ui`, then the tests"
    );
    let app = spawn_app(Backend::Sqlite)
        .await
        .expect("SQLite needs nothing");
    let dom = rendered(&format!("{}/tree/cluster/home/node/pve1", app.base)).await;
    assert!(dom.contains("<base href=\"/\">"), "{dom}");
    // Rendered by the wasm app, not in index.html: the bundle ran under the CSP.
    assert!(
        dom.contains("class=\"login\""),
        "no login page rendered:\n{dom}"
    );
    assert!(
        dom.contains("id=\"username\"") && dom.contains("type=\"password\""),
        "{dom}"
    );
    assert!(
        dom.contains("<label for=\"password\">Password</label>"),
        "{dom}"
    );
    assert!(
        !dom.contains("role=\"tree\""),
        "a logged-out visitor sees no tree"
    );
}
