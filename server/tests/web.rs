//! The web dashboard as the real server serves it over HTTPS (docs/design.md §5, §7.2): the
//! embedded bundle that `cargo xtask ui` built, `index.html` for client-side routes with a
//! `<base href>` for a trusted proxy's sub-path, hashed assets cached for a year and sent
//! brotli or gzip when accepted, JSON 404s under `/api/`, and the security headers on everything.

mod common;

use common::tls::{pinned_http, settings_in, TlsApp};
use reqwest::header;

async fn start(
    tweak: impl FnOnce(&mut canopy_server::settings::Settings),
) -> (TlsApp, reqwest::Client, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = settings_in(dir.path());
    tweak(&mut settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = TlsApp::start(settings, listener).await;
    let http = pinned_http(app.fingerprint);
    (app, http, dir)
}

/// The names of the files `index.html` loads (`href="…"` and `src="…"`).
fn referenced(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "src=\""] {
        for part in html.split(attr).skip(1) {
            let name = part.split('"').next().unwrap();
            if !name.ends_with('/') {
                out.push(name.to_string());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_dashboard_is_served_with_its_headers() {
    assert!(
        canopy_server::webui::embedded(),
        "this canopy was built without the web dashboard: run `cargo xtask ui`, then the tests"
    );
    let (app, http, _dir) = start(|_| {}).await;
    let resp = http.get(format!("{}/", app.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    for part in [
        "default-src 'none'",
        "script-src 'self' 'wasm-unsafe-eval'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(part), "{part} missing from the CSP {csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
    let html = resp.text().await.unwrap();
    assert!(html.contains("<base href=\"/\">"), "{html}");
    // No inline script: every <script> loads a file, as a module.
    for tag in html.split("<script").skip(1) {
        assert!(
            tag.starts_with(" type=\"module\" src=\""),
            "inline or classic script: {tag}"
        );
    }
    let files = referenced(&html);
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("boot-") && f.ends_with(".js")),
        "{files:?}"
    );
    assert!(files.iter().any(|f| f.ends_with(".css")), "{files:?}");

    // The loader names the module and the wasm; each is served, immutable, gzipped on request.
    let boot = files.iter().find(|f| f.starts_with("boot-")).unwrap();
    let text = http
        .get(format!("{}/{boot}", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let module = text
        .split("from './")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    let wasm = text
        .split("new URL('")
        .nth(1)
        .unwrap()
        .split('\'')
        .next()
        .unwrap();
    for (name, kind) in [
        (boot.as_str(), "text/javascript; charset=utf-8"),
        (module, "text/javascript; charset=utf-8"),
        (wasm, "application/wasm"),
    ] {
        let url = format!("{}/{name}", app.base);
        let plain = http.get(&url).send().await.unwrap();
        assert_eq!(plain.status(), 200, "{name}");
        assert_eq!(plain.headers()[header::CONTENT_TYPE], kind, "{name}");
        assert_eq!(
            plain.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let body = plain.bytes().await.unwrap();
        let gz = http
            .get(&url)
            .header(header::ACCEPT_ENCODING, "deflate, gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip", "{name}");
        let packed = gz.bytes().await.unwrap();
        assert_eq!(&packed[..2], &[0x1f, 0x8b], "{name} is gzip");
        assert!(
            packed.len() < body.len() || body.len() < 300,
            "{name} compresses"
        );
    }
    // Brotli first where the browser takes it (the wasm: the largest file).
    let br = http
        .get(format!("{}/{wasm}", app.base))
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
        .send()
        .await
        .unwrap();
    assert_eq!(br.headers()[header::CONTENT_ENCODING], "br");
    assert_eq!(br.headers()[header::VARY], "Accept-Encoding");
    let br_len = br.bytes().await.unwrap().len();
    let wasm_body = http
        .get(format!("{}/{wasm}", app.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&wasm_body[..4], b"\0asm");
    assert!(
        br_len * 2 < wasm_body.len(),
        "brotli: {br_len} of {}",
        wasm_body.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_routes_get_the_page_and_the_api_keeps_its_404() {
    let (app, http, _dir) = start(|_| {}).await;
    for path in ["/tree", "/tree/cluster/home/node/pve1", "/operations/42"] {
        let resp = http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(
            resp.text().await.unwrap().contains("<base href=\"/\">"),
            "{path}"
        );
    }
    let missing = http
        .get(format!("{}/boot-0000.js", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    for path in ["/api/v1/no-such-thing", "/api/nothing"] {
        let resp = http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        let err: canopy_api_types::ApiError = resp.json().await.unwrap();
        assert_eq!(err.code, "not_found");
    }
    let post = http
        .post(format!("{}/tree", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 404);
    // The API's answers carry the security headers too.
    let api = http
        .get(format!("{}/api/v1/me", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    assert_eq!(api.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_href_follows_a_trusted_proxys_prefix_only() {
    let (app, http, _dir) = start(|s| s.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let page = |prefix: &'static str| {
        let http = http.clone();
        let url = format!("{}/tree", app.base);
        async move {
            http.get(url)
                .header("x-forwarded-prefix", prefix)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    assert!(page("/canopy").await.contains("<base href=\"/canopy/\">"));
    assert!(page("/tools/canopy/")
        .await
        .contains("<base href=\"/tools/canopy/\">"));
    // Not a plain path: ignored.
    assert!(page("/x\"><script>alert(1)</script>")
        .await
        .contains("<base href=\"/\">"));
    assert!(page("//evil.example").await.contains("<base href=\"/\">"));

    // A server that trusts no proxy ignores the header.
    let (app, http, _dir) = start(|_| {}).await;
    let html = http
        .get(format!("{}/", app.base))
        .header("x-forwarded-prefix", "/canopy")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("<base href=\"/\">"), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ui_dir_serves_the_files_on_disk_instead() {
    // What `cargo xtask ui --watch` rewrites while the server runs.
    let ui = tempfile::tempdir().unwrap();
    let page = |n: u32| {
        format!(
            "<!doctype html><base href=\"/\"><script type=\"module\" src=\"boot-{n}.js\"></script>"
        )
    };
    std::fs::write(ui.path().join("index.html"), page(1)).unwrap();
    std::fs::write(ui.path().join("boot-1.js"), "// one").unwrap();
    let dir = ui.path().to_path_buf();
    let (app, http, _dir) = start(move |s| s.ui_dir = Some(dir)).await;
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{}{path}", app.base));
        async move { http.get(url).send().await.unwrap() }
    };
    assert!(get("/").await.text().await.unwrap().contains("boot-1.js"));
    assert_eq!(get("/boot-1.js").await.text().await.unwrap(), "// one");
    // A rebuild is served at once, without restarting the server.
    std::fs::write(ui.path().join("index.html"), page(2)).unwrap();
    std::fs::write(ui.path().join("boot-2.js"), "// two").unwrap();
    assert!(get("/tree")
        .await
        .text()
        .await
        .unwrap()
        .contains("boot-2.js"));
    assert_eq!(get("/boot-2.js").await.text().await.unwrap(), "// two");
    assert_eq!(get("/../Cargo.toml").await.status(), 404);
}
