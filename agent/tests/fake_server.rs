//! The agent against a small fake server (`support`, axum on port 0): registration through
//! the real binary (files 0600, no secret on stdout/stderr, the current credential sent when
//! registering again), then the check-in loop: report upload when asked, started → result for
//! each command, a result retried after a 503, installs refused by a read-only agent, clean
//! stop on shutdown. Also the CLI edges the server's deploy relies on: `--token-file`,
//! `--version`, `run` unregistered, the helper's refusals.

mod support;

use canopy_agent::config::{AgentConfig, Secret};
use canopy_agent::run::Agent;
use canopy_api_types::agent::*;
use canopy_api_types::commands::{AgentCommand, CommandSpec};
use canopy_api_types::CommandId;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use support::*;

#[tokio::test]
async fn register_writes_private_files_and_prints_no_secret() {
    let (url, _seen) = spawn_server(vec![]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("etc/agent.toml");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy-agent"))
        .args(["register", "--server", &url, "--read-only", "--state-dir"])
        .arg(dir.path().join("state"))
        .env("CANOPY_AGENT_CONFIG", &config)
        .env("CANOPY_REGISTRATION_TOKEN", REG_TOKEN)
        .env("RUST_LOG", "debug")
        .output()
        .await
        .expect("run binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("registered as host"), "{stdout}");
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains("agent-secret"),
            "agent secret leaked: {text}"
        );
        assert!(
            !text.contains(REG_TOKEN),
            "registration token leaked: {text}"
        );
    }
    let token_path = dir.path().join("etc/agent.token");
    for p in [&config, &token_path] {
        let mode = std::fs::metadata(p).expect("written").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    let cfg = AgentConfig::load(&config).expect("config loads");
    assert!(cfg.read_only);
    assert_eq!(cfg.token().expect("token").expose(), AGENT_SECRET);
    assert!(!std::fs::read_to_string(&config)
        .expect("read")
        .contains("agent-secret"));

    // `status` reads it back without the server.
    let st = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy-agent"))
        .args(["status", "--json"])
        .env("CANOPY_AGENT_CONFIG", &config)
        .output()
        .await
        .expect("status");
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("status json");
    assert_eq!(v["registered"], true);
    assert_eq!(v["server_url"], url);
    assert!(!String::from_utf8_lossy(&st.stdout).contains("agent-secret"));
}

#[tokio::test]
async fn register_with_a_token_file_deletes_it_only_after_success() {
    let (url, seen) = spawn_server(vec![]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("etc/agent.toml");
    let token_file = dir.path().join("reg.token");
    std::fs::write(&token_file, format!("  {REG_TOKEN}\n")).expect("write");
    let register = |server: &str, token_flag: &str, token: &std::ffi::OsStr| {
        let mut c = agent_cmd();
        c.args(["register", "--server", server, token_flag])
            .arg(token)
            .arg("--config")
            .arg(&config)
            .arg("--state-dir")
            .arg(dir.path().join("state"));
        c
    };

    // Nothing listens there: the registration fails and the token file stays for a retry.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", gone.local_addr().expect("addr"));
    drop(gone);
    let out = register(&dead, "--token-file", token_file.as_os_str())
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    assert!(token_file.exists(), "kept after a failed registration");
    assert!(!config.exists());

    let out = register(&url, "--token-file", token_file.as_os_str())
        .output()
        .await
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!token_file.exists(), "deleted after success");
    assert!(stdout.contains("deleted"), "{stdout}");
    for text in [&stdout, &stderr] {
        assert!(
            !text.contains(REG_TOKEN) && !text.contains("agent-secret"),
            "{text}"
        );
    }
    let first = AgentConfig::load(&config).expect("config");
    assert_eq!(first.token().expect("token").expose(), AGENT_SECRET);
    assert_eq!(
        first.token_file.as_deref(),
        Some(dir.path().join("etc/agent.token").as_path())
    );

    // Registering again (here with --token) overwrites the config and the credential.
    let out = register(&url, "--token", REG_TOKEN.as_ref())
        .output()
        .await
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = AgentConfig::load(&config).expect("config");
    assert_ne!(second.host_id, first.host_id);
    assert_eq!(second.token().expect("token").expose(), AGENT_SECRET);
    // The second registration proved it is the host of the first: with its credential.
    let sent = lock(&seen).current_tokens.clone();
    assert_eq!(sent, [None, Some(AGENT_SECRET.to_string())]);
}

#[tokio::test]
async fn version_and_run_without_registration() {
    let out = agent_cmd().arg("--version").output().await.expect("run");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("canopy-agent {}\n", canopy_agent::facts::AGENT_VERSION)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let out = agent_cmd()
        .args(["run", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .await
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no agent config") && stderr.contains("register"),
        "{stderr}"
    );
}

#[tokio::test]
async fn checkin_loop_runs_commands_and_reports() {
    let dry = AgentCommand {
        id: CommandId::new(),
        spec: CommandSpec::DryRun {
            packages: vec!["bash".into()],
            images: Vec::new(),
        },
        timeout_secs: 120,
    };
    let install = AgentCommand {
        id: CommandId::new(),
        spec: CommandSpec::Install {
            packages: vec!["bash".into()],
            pinned: vec![],
        },
        timeout_secs: 120,
    };
    let (url, seen) = spawn_server(vec![dry.clone(), install.clone()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = AgentConfig::new(url);
    cfg.state_dir = dir.path().join("state");
    cfg.read_only = true;
    cfg.refresh_before_scan = false;
    cfg.wait_secs = 2;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let agent = Agent::new(cfg.clone(), Secret::new(AGENT_SECRET), rx).expect("agent");
    let task = tokio::spawn(agent.run());

    // Bounded poll for both results.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while lock(&seen).results.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "results not delivered: {:?}",
            lock(&seen).events
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let it check in again at least once more, then stop.
    let n = lock(&seen).checkins;
    while lock(&seen).checkins <= n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no further check-in"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tx.send(true).expect("signal");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops promptly")
        .expect("join")
        .expect("run ok");

    let g = lock(&seen);
    assert_eq!(g.auth[0], format!("Bearer {AGENT_SECRET}"));
    assert!(!g.reports.is_empty(), "report uploaded when wanted");
    assert_eq!(g.reports[0].report_hash.len(), 64);
    assert_eq!(
        g.events,
        vec![
            format!("started {}", dry.id),
            format!("result {}", dry.id),
            format!("started {}", install.id),
            format!("result {}", install.id),
        ]
    );
    let (_, dry_res) = &g.results[0];
    assert!(dry_res.result.success, "{:?}", dry_res.result);
    let (_, inst_res) = &g.results[1];
    assert!(!inst_res.result.success);
    assert!(inst_res.result.stderr.contains("read-only"));

    let cache = canopy_agent::cache::Cache::load(&cfg.cache_path()).expect("cache");
    assert!(cache.last_checkin.is_some() && cache.report.is_some());
    let mode = std::fs::metadata(cfg.cache_path())
        .expect("cache")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn scan_json_needs_no_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy-agent"))
        .args(["scan", "--json"])
        .env("CANOPY_AGENT_CONFIG", dir.path().join("missing.toml"))
        .env("CANOPY_AGENT_STATE_DIR", dir.path().join("state"))
        .output()
        .await
        .expect("run binary");
    let report: ScanReport = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(out.status.success() || !report.scanner_errors.is_empty());
    // The cache it wrote feeds list-updates.
    let csv = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy-agent"))
        .args(["list-updates", "--format", "csv"])
        .env("CANOPY_AGENT_CONFIG", dir.path().join("missing.toml"))
        .env("CANOPY_AGENT_STATE_DIR", dir.path().join("state"))
        .output()
        .await
        .expect("run binary");
    assert!(
        csv.status.success(),
        "{}",
        String::from_utf8_lossy(&csv.stderr)
    );
    let text = String::from_utf8_lossy(&csv.stdout);
    assert!(text.starts_with("manager,package,current_version,available_version"));
    assert_eq!(text.lines().count(), report.updates.len() + 1);
}

/// The helper refuses what is not its own verb with validated arguments, before anything
/// runs, and says why.
#[tokio::test]
async fn the_helper_refuses_injected_options() {
    for args in [
        vec!["install", "apt", "-oAPT::Update::Pre-Invoke::=id"],
        vec![
            "install",
            "apt",
            "canopy-demo-hello=1.1",
            "-o",
            "APT::Update::Pre-Invoke::=id",
        ],
        vec!["refresh", "apt", "-oAPT::Update::Pre-Invoke::=id"],
        vec!["run"],
        vec!["install", "docker", "x=1"],
    ] {
        let out = agent_cmd()
            .arg("helper")
            .args(&args)
            .output()
            .await
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains("refused"), "{args:?}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("uid="));
    }
}
