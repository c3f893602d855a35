//! Administration in headless Chromium (WebDriver) against the real server and the PVE
//! simulator: the add-cluster wizard (an unreachable address and a wrong token come back
//! as the server's errors; the fingerprint shown is the simulator's real certificate,
//! computed here from a TLS handshake; "Add cluster" waits for the confirmation), the
//! cluster in the list and its nodes in the tree, "Discover now", and its removal after the
//! confirmation; a registration token whose secret is shown once and enrols an agent; the
//! deploy key; a viewer created in the page (role changed and back, a new password) sees no
//! administration and no action, and the API refuses them. Screenshots under
//! `target/e2e/admin/`.

mod common;

use canopy_api_types::agent::RegisterRequest;
use canopy_api_types::auth::Role;
use common::webdriver::{keys, Browser};
use common::*;
use std::sync::{Arc, Mutex};

const TOKEN_ID: &str = "canopy@pve!lab";
const SECRET: &str = "9d2c4b1a-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const ESTATE: &str = r#"
[[clusters]]
name = "lab"
[[clusters.tokens]]
id = "canopy@pve!lab"
secret = "9d2c4b1a-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
role = "PVEAuditor"
[[clusters.nodes]]
name = "alpha"
[[clusters.nodes]]
name = "beta"
[[clusters.guests]]
vmid = 101
type = "lxc"
node = "alpha"
name = "web"
status = "running"
[[clusters.guests]]
vmid = 102
type = "lxc"
node = "beta"
name = "db"
status = "running"
[[clusters.guests]]
vmid = 103
type = "lxc"
node = "beta"
name = "cache"
status = "running"
"#;

const VIEWER_PASSWORD: &str = "a viewer's password 7";

/// Records the certificate a TLS server presents and refuses it (nothing is ever trusted
/// or sent): the test's own view of which certificate the simulator serves.
#[derive(Debug)]
struct Recorder {
    seen: Mutex<Option<Vec<u8>>>,
    schemes: Vec<rustls::SignatureScheme>,
}

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.to_vec());
        Err(rustls::Error::General("recorded, not trusted".into()))
    }
    fn verify_tls12_signature(
        &self,
        _m: &[u8],
        _c: &rustls::pki_types::CertificateDer<'_>,
        _d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not trusted".into()))
    }
    fn verify_tls13_signature(
        &self,
        _m: &[u8],
        _c: &rustls::pki_types::CertificateDer<'_>,
        _d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("not trusted".into()))
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

/// SHA-256 of the certificate served at `url` (`https://127.0.0.1:PORT`), `AA:BB:…`.
async fn certificate_fingerprint(url: &str) -> String {
    use sha2::Digest;
    let addr = url.trim_start_matches("https://").trim_end_matches('/');
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let recorder = Arc::new(Recorder {
        seen: Mutex::new(None),
        schemes: provider
            .signature_verification_algorithms
            .supported_schemes(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let refused = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    assert!(refused.is_err(), "the recorder trusts nothing");
    let der = recorder.seen.lock().unwrap().take().expect("a certificate");
    sha2::Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Waits until `css` is gone (at most 20 s).
async fn gone(b: &Browser, css: &str) {
    let start = std::time::Instant::now();
    while b.count(css).await > 0 {
        assert!(start.elapsed().as_secs() < 20, "{css} is still there");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn fetch_status(b: &Browser, method: &str, path: &str, body: &str) -> serde_json::Value {
    b.run_async(&format!(
        "const done = arguments[arguments.length - 1];
         fetch('{path}', {{method: '{method}',
           headers: {{'x-canopy-csrf': '1', 'content-type': 'application/json'}},
           body: {body}}}).then(r => done(r.status));"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_cluster_make_a_token_and_a_viewer_in_the_browser() {
    assert!(
        canopy_server::webui::embedded(),
        "this canopy was built without the web dashboard: run `cargo xtask ui`, then the tests"
    );
    let app = spawn_app(Backend::Sqlite)
        .await
        .expect("SQLite needs nothing");
    let sim = start_sim(ESTATE).await;
    let real_fingerprint = certificate_fingerprint(&sim.url()).await;

    let mut b = Browser::start("admin").await;
    b.goto(&format!("{}/admin", app.base)).await;
    b.type_into("#password", ADMIN_PASSWORD).await;
    b.click("button[type=submit]").await;
    b.wait_text(".admin-tabs a[aria-current=page]", "Clusters")
        .await;
    b.wait_text("#clusters-title + *", "No cluster yet").await;
    b.shot("clusters-empty").await;

    // An address nothing answers at: the server's error names it.
    b.type_into("#cluster-url", "https://127.0.0.1:1").await;
    b.click("#probe").await;
    let e = b.wait_text(".wizard [role=alert]", "unreachable").await;
    assert!(e.contains("127.0.0.1:1"), "{e}");
    b.shot("unreachable").await;

    // The simulator: its certificate's fingerprint, and nothing added before the tick.
    b.clear("#cluster-url").await;
    b.type_into("#cluster-url", &sim.url()).await;
    b.type_into("#token-id", TOKEN_ID).await;
    b.type_into("#token-secret", "not-the-secret").await;
    b.type_into("#cluster-name", "lab").await;
    assert_eq!(
        b.attribute("#add-cluster", "disabled").await.as_deref(),
        Some("true"),
        "nothing to add before the connection was tested"
    );
    b.click("#probe").await;
    let shown = b.text("#probe-fingerprint").await;
    assert_eq!(
        shown, real_fingerprint,
        "the page shows the certificate the simulator really serves"
    );
    b.wait_text(".fingerprint-box", "pvenode cert info").await;
    assert_eq!(
        b.attribute("#add-cluster", "disabled").await.as_deref(),
        Some("true"),
        "Add cluster waits for the confirmation"
    );
    b.shot("fingerprint").await;
    b.click("#fingerprint-ok").await;
    assert_eq!(b.attribute("#add-cluster", "disabled").await, None);

    // Checking the token over the pinned connection: a wrong secret is refused by name.
    b.click("#check-token").await;
    b.wait_text(".wizard [role=alert]", "authentication").await;
    assert_eq!(b.count("#token-ok").await, 0);

    // A wrong secret: the first discovery fails and the server says why.
    b.click("#add-cluster").await;
    let e = b
        .wait_text(".wizard [role=alert]", "authentication failed")
        .await;
    assert!(e.contains("was not added"), "{e}");
    assert!(app.admin.clusters().await.unwrap().is_empty());
    b.shot("wrong-token").await;

    // The right one: added, pinned to the fingerprint the user confirmed.
    b.clear("#token-secret").await;
    b.type_into("#token-secret", SECRET).await;
    b.click("#check-token").await;
    b.wait_text("#token-ok", "2 nodes: alpha, beta").await;
    b.shot("token-checked").await;
    b.click("#add-cluster").await;
    b.wait_text("[role=status]", "Cluster lab added").await;
    let row = b.wait_text("#cluster-lab", "ok").await;
    assert!(row.contains(&sim.url()), "{row}");
    assert_eq!(b.text("#cluster-lab td:nth-of-type(2)").await, "2", "nodes");
    assert_eq!(
        b.text("#cluster-lab td:nth-of-type(3)").await,
        "3",
        "guests"
    );
    let stored = app.admin.clusters().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].fingerprints, vec![real_fingerprint.clone()]);
    assert_eq!(
        b.count("#probe-fingerprint").await,
        0,
        "the wizard starts over"
    );
    b.shot("cluster-added").await;

    // "Discover now" and the removal's confirmation step (kept).
    b.click("#cluster-lab button[aria-label='Discover lab now']")
        .await;
    b.wait_text(
        "[role=status]",
        "Discovered lab: 2 nodes, 3 guests, 0 changes",
    )
    .await;
    b.click("#cluster-lab button[aria-label='Remove lab']")
        .await;
    b.wait_text("#cluster-lab .confirm", "Remove lab and its whole tree?")
        .await;
    b.shot("remove-confirm").await;
    b.click("#cluster-lab .confirm button:not(.danger)").await;
    gone(&b, "#cluster-lab .confirm").await;
    assert_eq!(app.admin.clusters().await.unwrap().len(), 1, "kept");

    // In the tree: the cluster and, opened, its nodes.
    b.click("#cluster-lab th a").await;
    let cluster = "[id='t-cluster/lab']";
    b.find(cluster).await;
    b.type_into(cluster, keys::RIGHT).await;
    b.find("[id='t-cluster/lab/node/alpha']").await;
    b.find("[id='t-cluster/lab/node/beta']").await;
    b.shot("tree").await;

    // A registration token: its secret once, and it enrols an agent.
    b.click("header a[href='admin']").await;
    b.click(".admin-tabs a[href='admin/tokens']").await;
    b.wait_text("#tokens-title + *", "canopy-agent register")
        .await;
    b.type_into("#token-label", "new LXCs").await;
    b.click("#create-token").await;
    b.wait_text(".secret-box .warning", "only time it is shown")
        .await;
    let secret = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             done(document.getElementById('new-token').value);",
        )
        .await
        .as_str()
        .unwrap()
        .to_string();
    assert!(secret.starts_with("canopy-reg-"), "{secret}");
    b.wait_text(".admin-table.tokens", "new LXCs").await;
    b.shot("token-created").await;
    b.click("#hide-token").await;
    gone(&b, "#new-token").await;
    let page = b
        .run_async("const done = arguments[arguments.length - 1]; done(document.body.innerHTML);")
        .await;
    assert!(
        !page.as_str().unwrap().contains(&secret),
        "the secret is shown once, then never again"
    );
    let registered = app
        .anon
        .register(&RegisterRequest {
            registration_token: secret.clone(),
            facts: facts("enrolled-from-the-page"),
            current_token: None,
        })
        .await
        .expect("the token shown enrols an agent");
    assert!(!registered.agent_token.is_empty());
    // Another section and back: the list is loaded again and the token is used up.
    b.click(".admin-tabs a[href='admin/users']").await;
    b.click(".admin-tabs a[href='admin/tokens']").await;
    b.wait_text(".admin-table.tokens", "used up").await;
    b.shot("token-used").await;

    // The deploy key to copy, the same the API gives, and no host pinned yet.
    b.click(".admin-tabs a[href='admin/deploy-key']").await;
    b.wait_text("#authorized-keys-line", "/root/.ssh/authorized_keys")
        .await;
    let shown = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             done(document.getElementById('deploy-public-key').value);",
        )
        .await;
    let key = app.admin.deploy_key().await.unwrap().public_key;
    assert!(key.starts_with("ssh-"), "{key}");
    assert_eq!(shown.as_str().map(str::trim), Some(key.trim()));
    b.wait_text("#pins-title ~ p:last-of-type", "None yet")
        .await;
    b.shot("deploy-key").await;

    // A viewer, made here.
    b.click(".admin-tabs a[href='admin/users']").await;
    b.wait_text(".admin-table.users", "admin (you)").await;
    b.type_into("#new-username", "vera").await;
    b.type_into("#new-user-password", "a first password 1")
        .await;
    b.click("#create-user").await;
    b.wait_text("[role=status]", "User vera created as viewer")
        .await;
    b.wait_text("#user-vera", "enabled").await;
    let role = b
        .run_async(
            "const done = arguments[arguments.length - 1];
             done(document.getElementById('role-vera').value);",
        )
        .await;
    assert_eq!(role, "viewer");
    // Another role and back, and a new password (the one vera logs in with below).
    b.click("#role-vera option[value=operator]").await;
    b.wait_text("[role=status]", "vera is now operator").await;
    b.click("#role-vera option[value=viewer]").await;
    b.wait_text("[role=status]", "vera is now viewer").await;
    let vera = |users: Vec<canopy_api_types::auth::User>| {
        users.into_iter().find(|u| u.username == "vera").unwrap()
    };
    assert_eq!(vera(app.admin.users().await.unwrap()).role, Role::Viewer);
    b.click("button[aria-label='Set a new password for vera']")
        .await;
    b.type_into("#new-password", VIEWER_PASSWORD).await;
    b.click(".password-form button[type=submit]").await;
    b.wait_text("[role=status]", "vera has a new password")
        .await;
    b.shot("user-created").await;

    // Their own session: no administration, no action, and the API says no.
    b.click("header .link:last-child").await;
    b.wait_text(".login .note", "Logged out").await;
    b.clear("#username").await;
    b.type_into("#username", "vera").await;
    b.type_into("#password", VIEWER_PASSWORD).await;
    b.click("button[type=submit]").await;
    b.wait_text("header .who", "vera (viewer)").await;
    let nav = b.text("header nav").await;
    assert!(
        !nav.contains("Administration"),
        "a viewer has no Administration link: {nav}"
    );
    b.wait_text("main [role=alert]", "Administration is for admins")
        .await;
    assert_eq!(b.count(".admin-form").await, 0, "no administration form");
    b.shot("viewer-admin-refused").await;
    b.click("header a[href='tree']").await;
    b.click(cluster).await;
    b.wait_text(".detail h2", "cluster lab").await;
    b.wait_text(".detail", "Recent operations").await;
    assert_eq!(b.count(".actions").await, 0, "a viewer sees no action");
    assert_eq!(b.count(".detail button.primary").await, 0);
    b.shot("viewer-tree").await;
    let status = fetch_status(
        &b,
        "POST",
        "api/v1/registration-tokens",
        "JSON.stringify({label: 'x', seats: 1, expires_in_secs: 60})",
    )
    .await;
    assert_eq!(status, 403, "the API refuses a viewer's admin call");
    let status = fetch_status(&b, "DELETE", "api/v1/clusters/lab", "null").await;
    assert_eq!(status, 403, "the API refuses a viewer's removal");
    assert_eq!(app.admin.clusters().await.unwrap().len(), 1);

    // Back as the admin: the cluster removed, after the confirmation.
    b.click("header .link:last-child").await;
    b.wait_text(".login .note", "Logged out").await;
    b.clear("#username").await;
    b.type_into("#username", "admin").await;
    b.type_into("#password", ADMIN_PASSWORD).await;
    b.click("button[type=submit]").await;
    b.click("header a[href='admin']").await;
    b.click("#cluster-lab button[aria-label='Remove lab']")
        .await;
    b.click("#cluster-lab .confirm button.danger").await;
    b.wait_text("[role=status]", "Cluster lab removed").await;
    gone(&b, "#cluster-lab").await;
    assert!(app.admin.clusters().await.unwrap().is_empty());
    b.shot("cluster-removed").await;
}
