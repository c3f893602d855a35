//! HTTPS end to end with the real binaries: `canopy serve` prints the fingerprint of the
//! certificate it serves (self-signed and kept, or the owner's own), the real
//! `canopy-agent` registers with `--fingerprint` and checks in, the agent and the CLI refuse
//! a server whose certificate changed (naming both fingerprints), and a stopping server
//! answers held check-ins at once.

mod common;

use canopy_api_types::agent::{CheckinRequest, RegisterRequest};
use canopy_api_types::client::Client;
use common::tls::{agent_binary, fingerprint_of_file, pinned_http, settings_in, Serve, TlsApp};
use common::{eventually, facts, ADMIN_PASSWORD};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn serve_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "CANOPY_DATABASE_URL",
            format!("sqlite://{}", dir.join("canopy.db").display()),
        ),
        ("CANOPY_DATA_DIR", dir.join("data").display().to_string()),
        ("CANOPY_LISTEN", "127.0.0.1:0".into()),
        ("CANOPY_ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_the_fingerprint_of_its_self_signed_certificate_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = serve_env(dir.path());
    env.push(("CANOPY_TLS", "on".into()));
    let mut serve = Serve::spawn(&env);
    let (url, printed) = serve.wait_https();
    serve.wait_line(Duration::from_secs(5), |l| {
        l.contains("self-signed, generated now in").then_some(())
    });

    let cert = dir.path().join("data/tls-cert.pem");
    let key = dir.path().join("data/tls-key.pem");
    assert_eq!(
        printed,
        fingerprint_of_file(&cert),
        "the printed fingerprint is the served file's"
    );
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_body = key_text.lines().nth(1).unwrap();
    assert!(
        !serve.stderr.join("\n").contains(key_body),
        "the key leaked"
    );

    // What is served is what was printed: a client pinning it gets through.
    let health = pinned_http(printed)
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect("the pinned fingerprint is served");
    assert_eq!(health.status(), 200);
    // Plain HTTP on the HTTPS port gets told, not reset.
    let plain = common::http()
        .get(format!("{}/healthz", url.replace("https://", "http://")))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    assert!(plain.text().await.unwrap().contains("use https://"));

    serve.terminate();
    assert!(serve.wait_exit(Duration::from_secs(15)).success());

    // A later start serves the same certificate.
    let mut again = Serve::spawn(&env);
    let (_, second) = again.wait_https();
    assert_eq!(second, printed);
    again.wait_line(Duration::from_secs(5), |l| {
        l.contains(&format!("self-signed, from {}", cert.display()))
            .then_some(())
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_and_key_from_settings_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let own = canopy_tls::self_signed(&["canopy.lan".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.path().join("own.pem"), dir.path().join("own.key"));
    std::fs::write(&cert, &own.cert_pem).unwrap();
    std::fs::write(&key, &own.key_pem).unwrap();
    let expected = fingerprint_of_file(&cert);

    // tls = "auto" on loopback: a configured certificate means HTTPS.
    let mut env = serve_env(dir.path());
    env.push(("CANOPY_TLS_CERT_FILE", cert.display().to_string()));
    env.push(("CANOPY_TLS_KEY_FILE", key.display().to_string()));
    let mut serve = Serve::spawn(&env);
    let (url, printed) = serve.wait_https();
    assert_eq!(printed, expected);

    // What a client sees in the handshake, without trusting anything.
    let (probe, seen) = canopy_tls::probe_config();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(probe)
        .build()
        .unwrap();
    assert!(client.get(format!("{url}/healthz")).send().await.is_err());
    assert_eq!(seen.last(), Some(expected));
    assert!(
        !dir.path().join("data/tls-cert.pem").exists(),
        "no self-signed certificate when one is given"
    );

    // A key that is not the certificate's is refused at start-up, naming both files.
    let other = canopy_tls::self_signed(&["x".into()]).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg("serve")
        .env_remove("CANOPY_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not belong to the certificate") && err.contains("own.key"),
        "{err}"
    );
}

/// Registers the real agent; returns its config path.
fn agent(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(agent_binary())
        .arg("--config")
        .arg(dir.join("agent/agent.toml"))
        .args(args)
        .env_remove("CANOPY_AGENT_CONFIG")
        .env("CANOPY_AGENT_STATE_DIR", dir.join("agent-state"))
        .output()
        .expect("canopy-agent runs")
}

fn spawn_agent_run(dir: &Path, log: &str) -> std::process::Child {
    std::process::Command::new(agent_binary())
        .arg("--config")
        .arg(dir.join("agent/agent.toml"))
        .args(["run", "--read-only"])
        .env_remove("CANOPY_AGENT_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .expect("canopy-agent run starts")
}

fn status_json(dir: &Path) -> serde_json::Value {
    let out = agent(dir, &["status", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_pins_the_server_and_refuses_a_changed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = TlsApp::start(settings_in(dir.path()), listener).await;
    let token = app
        .admin
        .create_registration_token(&canopy_api_types::auth::CreateRegistrationToken {
            label: "tls".into(),
            seats: 1,
            expires_in_secs: 3600,
        })
        .await
        .unwrap()
        .token;
    let state = dir.path().join("agent-state").display().to_string();
    let register = |pin: &[&str]| {
        let mut args = vec![
            "register",
            "--server",
            &app.base,
            "--token",
            &token,
            "--state-dir",
            &state,
        ];
        args.extend_from_slice(pin);
        agent(dir.path(), &args)
    };

    // Unpinned, a self-signed server is not trusted, and the error says what to do.
    let out = register(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("certificate") && err.contains("--fingerprint"),
        "{err}"
    );

    let fp = app.fingerprint.to_string();
    let out = register(&["--fingerprint", &fp]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = std::fs::read_to_string(dir.path().join("agent/agent.toml")).unwrap();
    assert!(
        config.contains(&format!("server_fingerprint = \"{fp}\"")),
        "{config}"
    );

    let mut run = spawn_agent_run(dir.path(), "agent-1.log");
    eventually(Duration::from_secs(60), || async {
        let hosts = app.admin.hosts().await.unwrap();
        hosts.into_iter().find(|h| h.last_seen.is_some())
    })
    .await;
    eventually(Duration::from_secs(30), || async {
        status_json(dir.path())["last_checkin"]
            .is_string()
            .then_some(())
    })
    .await;
    let _ = run.kill();
    let _ = run.wait();

    // The same server, a new certificate: the agent refuses it and says which is which.
    let app = app.restart_with_new_certificate().await;
    let mut run = spawn_agent_run(dir.path(), "agent-2.log");
    let error = eventually(Duration::from_secs(60), || async {
        status_json(dir.path())["last_error"]
            .as_str()
            .filter(|e| e.contains("is pinned"))
            .map(str::to_string)
    })
    .await;
    let _ = run.kill();
    let _ = run.wait();
    assert!(
        error.contains(&app.fingerprint.to_string()),
        "presented missing: {error}"
    );
    assert!(error.contains(&fp), "pinned missing: {error}");
    let log = std::fs::read_to_string(dir.path().join("agent-2.log")).unwrap();
    assert!(
        log.contains(&app.fingerprint.to_string()) && log.contains(&fp),
        "{log}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_pins_the_server_at_login_and_refuses_a_changed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = TlsApp::start(settings_in(dir.path()), listener).await;
    let pw = dir.path().join("pw");
    std::fs::write(&pw, ADMIN_PASSWORD).unwrap();
    let pw = pw.to_str().unwrap().to_string();
    let cli = common::cli::Cli::new();
    let base = app.base.clone();
    let login = ["login", "--server", &base, "--password-file", &pw];

    // No pin given: the fingerprint is shown and the owner is asked.
    let out = cli.run(&login, "n\n");
    assert!(!out.status.success());
    assert!(
        out.stderr.contains(&app.fingerprint.to_string()),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("not trusted"), "{}", out.stderr);
    let out = cli.run(&login, "y\n");
    assert!(out.status.success(), "{}", out.stderr);
    let hosts = cli.run(&["hosts", "--json"], "");
    assert!(hosts.status.success(), "{}", hosts.stderr);

    let old = app.fingerprint.to_string();
    let app = app.restart_with_new_certificate().await;
    let new = app.fingerprint.to_string();
    let out = cli.run(&["hosts"], "");
    assert!(!out.status.success());
    assert!(
        out.stderr.contains(&new) && out.stderr.contains(&old),
        "{}",
        out.stderr
    );

    // Logging in again with the old pin is refused the same way; the new pin works, and so
    // does CANOPY_SERVER_FINGERPRINT for scripts.
    let mut pinned = login.to_vec();
    pinned.extend(["--fingerprint", &old]);
    let out = cli.run(&pinned, "");
    assert!(!out.status.success());
    assert!(
        out.stderr.contains(&new) && out.stderr.contains(&old),
        "{}",
        out.stderr
    );
    let scripted = common::cli::Cli::new().env("CANOPY_SERVER_FINGERPRINT", &new);
    let out = scripted.run(&login, "");
    assert!(out.status.success(), "{}", out.stderr);
    assert!(scripted.run(&["hosts"], "").status.success());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_answers_held_checkins_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = serve_env(dir.path());
    env.push(("CANOPY_TLS", "on".into()));
    let mut serve = Serve::spawn(&env);
    let (url, fp) = serve.wait_https();
    let anon = Client::new(pinned_http(fp), url.clone());
    let admin = anon.clone().with_token(
        anon.login("admin", ADMIN_PASSWORD)
            .await
            .unwrap()
            .access_token,
    );
    let token = admin
        .create_registration_token(&canopy_api_types::auth::CreateRegistrationToken {
            label: "t".into(),
            seats: 1,
            expires_in_secs: 600,
        })
        .await
        .unwrap()
        .token;
    let facts = facts("held");
    let reg = anon
        .register(&RegisterRequest {
            registration_token: token,
            facts: facts.clone(),
            current_token: None,
        })
        .await
        .unwrap();
    let agent = Client::new(pinned_http(fp), url).with_token(reg.agent_token);
    let before = admin.hosts().await.unwrap()[0].last_seen;
    // `connecting` makes the check-in record the host as seen before it waits (up to 30 s).
    let held = tokio::spawn(async move {
        agent
            .checkin(&CheckinRequest {
                facts,
                report_hash: None,
                wait_secs: 30,
                connecting: true,
            })
            .await
    });
    eventually(Duration::from_secs(10), || async {
        (admin.hosts().await.unwrap()[0].last_seen != before).then_some(())
    })
    .await;

    serve.terminate();
    let answer = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the held check-in is answered long before its 30 s hold")
        .unwrap()
        .expect("answered, not cut off");
    assert!(answer.commands.is_empty());
    assert!(serve.wait_exit(Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_from_an_https_server_need_its_https_url() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut settings = settings_in(dir.path());
    let addr = listener.local_addr().unwrap();
    // Agents would be sent to plain HTTP on a port that speaks only HTTPS.
    settings.deploy.server_url = format!("http://{addr}");
    let app = TlsApp::start(settings, listener).await;
    let err = app
        .admin
        .deploy(&canopy_api_types::deploy::DeployRequest {
            selector: "cluster/home/**".into(),
            action: canopy_api_types::deploy::DeployAction::Deploy,
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        err.to_string().contains("speaks HTTPS: use https://"),
        "{err}"
    );
    app.stop().await;
}

/// A homelab CA (PEM) and a certificate it signed for 127.0.0.1, with its key.
fn ca_and_leaf() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "Homelab CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca_cert.pem(), leaf.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_and_the_cli_trust_a_server_through_its_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = ca_and_leaf();
    let path = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca_file = path("ca.pem", &ca);
    let mut settings = settings_in(dir.path());
    settings.tls_cert_file = Some(path("cert.pem", &cert).into());
    settings.tls_key_file = Some(path("key.pem", &key).into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = TlsApp::start(settings, listener).await;
    let token = app
        .admin
        .create_registration_token(&canopy_api_types::auth::CreateRegistrationToken {
            label: "ca".into(),
            seats: 1,
            expires_in_secs: 3600,
        })
        .await
        .unwrap()
        .token;

    let state = dir.path().join("agent-state").display().to_string();
    let out = agent(
        dir.path(),
        &[
            "register",
            "--server",
            &app.base,
            "--token",
            &token,
            "--state-dir",
            &state,
            "--ca-file",
            &ca_file,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = std::fs::read_to_string(dir.path().join("agent/agent.toml")).unwrap();
    assert!(
        config.contains("ca_file = ") && !config.contains("server_fingerprint"),
        "{config}"
    );

    let pw = path("pw", ADMIN_PASSWORD);
    let cli = common::cli::Cli::new();
    let out = cli.run(
        &[
            "login",
            "--server",
            &app.base,
            "--password-file",
            &pw,
            "--ca-file",
            &ca_file,
        ],
        "",
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(cli.run(&["hosts"], "").status.success());
    // Another CA does not vouch for this server.
    let (other_ca, _, _) = ca_and_leaf();
    let other = path("other-ca.pem", &other_ca);
    let out = common::cli::Cli::new().run(
        &[
            "login",
            "--server",
            &app.base,
            "--password-file",
            &pw,
            "--ca-file",
            &other,
        ],
        "",
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("certificate"), "{}", out.stderr);
    app.stop().await;
}
