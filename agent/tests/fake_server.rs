//! The agent against a small fake server (axum on port 0): registration through the
//! real binary (files 0600, no secret on stdout/stderr, the current credential sent when
//! registering again), then the check-in loop: report upload when asked, started → result for
//! each command, a result retried after a 503, installs refused by a read-only agent, clean
//! stop on shutdown. The start handshake: a command whose start the server refuses (409, 404)
//! never runs and gets no result; a start that fails at the transport level is asked again
//! and the command runs once; a shutdown before the go runs nothing. Also the CLI edges the
//! server's deploy relies on: `--token-file`, `--version`, `run` unregistered, the helper's
//! refusals.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use canopy_agent::config::{AgentConfig, Secret};
use canopy_agent::run::Agent;
use canopy_api_types::agent::*;
use canopy_api_types::commands::{AgentCommand, CommandSpec, CommandStatus, StartAccepted};
use canopy_api_types::{CommandId, HostId};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const AGENT_SECRET: &str = "HOSTID.agent-secret-d41d8cd9";
const REG_TOKEN: &str = "reg-token-5f4dcc3b";

#[derive(Default)]
struct Seen {
    checkins: usize,
    reports: Vec<ReportUpload>,
    events: Vec<String>,
    results: Vec<(CommandId, ResultSubmission)>,
    failed_once: bool,
    auth: Vec<String>,
    /// `current_token` of each registration.
    current_tokens: Vec<Option<String>>,
    /// Calls of `/started` per command.
    start_calls: HashMap<CommandId, usize>,
    heartbeats: usize,
}

/// How the fake answers a command's `/started`.
#[derive(Debug, Clone, Copy)]
enum StartPlan {
    /// This status with an error body (409 cancelled, 404 unknown, 503 down).
    Status(u16),
    /// The first N calls break off mid-answer (a transport error), then 200.
    Transport(usize),
    /// 200 with the body of a server from before `StartAccepted`.
    OldServer,
}

type S = Arc<Mutex<Seen>>;

fn lock(s: &S) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().expect("lock")
}

async fn spawn_server(commands: Vec<AgentCommand>) -> (String, S) {
    spawn_server_with(commands, HashMap::new()).await
}

/// A 200 whose body breaks off: the client sees a transport error, not an answer.
fn broken_answer() -> axum::response::Response {
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![
        Ok("{\"id\":"),
        Err(std::io::Error::other("connection lost")),
    ];
    axum::response::Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(futures::stream::iter(chunks)))
        .expect("response")
}

fn api_error(status: u16) -> axum::response::Response {
    use axum::response::IntoResponse;
    let code = StatusCode::from_u16(status).expect("status");
    let body = canopy_api_types::ApiError {
        code: "conflict".into(),
        message: format!("fake server says {status}"),
    };
    (code, Json(body)).into_response()
}

async fn spawn_server_with(
    commands: Vec<AgentCommand>,
    starts: HashMap<CommandId, StartPlan>,
) -> (String, S) {
    let seen: S = Arc::default();
    let starts = Arc::new(starts);
    let cmds = Arc::new(Mutex::new(Some(commands)));
    let app =
        Router::new()
            .route(
                "/api/v1/agent/register",
                post(
                    |State(s): State<S>, Json(req): Json<RegisterRequest>| async move {
                        assert_eq!(req.registration_token, REG_TOKEN);
                        assert!(!req.facts.hostname.is_empty());
                        lock(&s).current_tokens.push(req.current_token.clone());
                        Json(RegisterResponse {
                            host_id: HostId::new(),
                            agent_token: AGENT_SECRET.into(),
                        })
                    },
                ),
            )
            .route(
                "/api/v1/agent/checkin",
                post({
                    let cmds = cmds.clone();
                    move |State(s): State<S>,
                          headers: axum::http::HeaderMap,
                          Json(req): Json<CheckinRequest>| async move {
                        let first = cmds.lock().expect("lock").take();
                        {
                            let mut g = lock(&s);
                            g.checkins += 1;
                            g.auth.push(
                                headers
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or("")
                                    .to_string(),
                            );
                        }
                        assert!(req.wait_secs > 0);
                        match first {
                            Some(commands) => Json(CheckinResponse {
                                commands,
                                report_wanted: true,
                            }),
                            None => {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                Json(CheckinResponse {
                                    commands: vec![],
                                    report_wanted: false,
                                })
                            }
                        }
                    }
                }),
            )
            .route(
                "/api/v1/agent/report",
                post(
                    |State(s): State<S>, Json(r): Json<ReportUpload>| async move {
                        let n = r.updates.len() as u64;
                        lock(&s).reports.push(r);
                        Json(ReportAccepted {
                            accepted: n,
                            rejected: vec![],
                            reconciled: 0,
                        })
                    },
                ),
            )
            .route(
                "/api/v1/agent/commands/{id}/started",
                post({
                    let starts = starts.clone();
                    move |State(s): State<S>, Path(id): Path<CommandId>| async move {
                        use axum::response::IntoResponse;
                        let mut g = lock(&s);
                        let n = {
                            let c = g.start_calls.entry(id).or_default();
                            *c += 1;
                            *c
                        };
                        match starts.get(&id) {
                            Some(StartPlan::Status(code)) => {
                                g.events.push(format!("start refused {id}"));
                                api_error(*code)
                            }
                            Some(StartPlan::Transport(k)) if n <= *k => broken_answer(),
                            Some(StartPlan::OldServer) => {
                                g.events.push(format!("started {id}"));
                                Json(serde_json::json!({ "status": "running" })).into_response()
                            }
                            _ => {
                                g.events.push(format!("started {id}"));
                                Json(StartAccepted {
                                    id,
                                    status: CommandStatus::Running,
                                    deadline: chrono::Utc::now() + chrono::Duration::minutes(5),
                                })
                                .into_response()
                            }
                        }
                    }
                }),
            )
            .route(
                "/api/v1/agent/commands/{id}/heartbeat",
                post(|State(s): State<S>| async move {
                    lock(&s).heartbeats += 1;
                    Json(canopy_api_types::commands::HeartbeatAck { overdue: false })
                }),
            )
            .route(
                "/api/v1/agent/commands/{id}/result",
                post(
                    |State(s): State<S>,
                     Path(id): Path<CommandId>,
                     Json(r): Json<ResultSubmission>| async move {
                        let mut g = lock(&s);
                        if !g.failed_once {
                            g.failed_once = true;
                            return Err(StatusCode::SERVICE_UNAVAILABLE);
                        }
                        g.events.push(format!("result {id}"));
                        g.results.push((id, r));
                        Ok(Json(serde_json::json!({})))
                    },
                ),
            )
            .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, seen)
}

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

fn agent_cmd() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy-agent"));
    c.env_remove("CANOPY_REGISTRATION_TOKEN")
        .env_remove("CANOPY_AGENT_CONFIG");
    c
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

/// An agent on `url` (installs allowed unless `read_only`), with fast retries.
fn fast_agent(
    url: &str,
    dir: &std::path::Path,
    read_only: bool,
) -> (Agent, tokio::sync::watch::Sender<bool>) {
    let mut cfg = AgentConfig::new(url);
    cfg.state_dir = dir.join("state");
    cfg.read_only = read_only;
    cfg.refresh_before_scan = false;
    cfg.wait_secs = 2;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let agent = Agent::new(cfg, Secret::new(AGENT_SECRET), rx)
        .expect("agent")
        .with_intervals(Duration::from_millis(50), Duration::from_millis(20));
    (agent, tx)
}

/// Polls `cond` on what the fake server saw, at most 60 s.
async fn wait_for(seen: &S, what: &str, cond: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond(&lock(seen)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:?}",
            lock(seen).events
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn command(spec: CommandSpec) -> AgentCommand {
    AgentCommand {
        id: CommandId::new(),
        spec,
        timeout_secs: 120,
    }
}

/// Cancelled (409) or unknown (404) at start: the command never runs and no result is posted;
/// the next command of the same batch runs as usual (its 200 carries an older server's body:
/// the status is the decision).
#[tokio::test]
async fn a_refused_start_never_runs_the_command() {
    let install = command(CommandSpec::Install {
        packages: vec!["canopy-no-such-package-xyz".into()],
        pinned: vec![],
    });
    let scan = command(CommandSpec::Scan);
    let dry = command(CommandSpec::DryRun {
        packages: vec!["bash".into()],
    });
    let starts = HashMap::from([
        (install.id, StartPlan::Status(409)),
        (scan.id, StartPlan::Status(404)),
        (dry.id, StartPlan::OldServer),
    ]);
    let (url, seen) =
        spawn_server_with(vec![install.clone(), scan.clone(), dry.clone()], starts).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (agent, tx) = fast_agent(&url, dir.path(), false);
    let task = tokio::spawn(agent.run());
    wait_for(&seen, "the dry-run's result", |g| {
        g.results.iter().any(|(id, _)| *id == dry.id)
    })
    .await;
    tx.send(true).expect("signal");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("run ok");
    let g = lock(&seen);
    assert_eq!(
        g.events,
        [
            format!("start refused {}", install.id),
            format!("start refused {}", scan.id),
            format!("started {}", dry.id),
            format!("result {}", dry.id),
        ]
    );
    assert_eq!(g.results.len(), 1, "no result for the refused commands");
    assert_eq!(g.start_calls[&install.id], 1, "a 4xx is final");
}

/// A start whose answer is lost twice is asked again; the command runs once, after the go.
#[tokio::test]
async fn a_start_lost_in_transit_is_asked_again_and_runs_once() {
    let dry = command(CommandSpec::DryRun {
        packages: vec!["bash".into()],
    });
    let starts = HashMap::from([(dry.id, StartPlan::Transport(2))]);
    let (url, seen) = spawn_server_with(vec![dry.clone()], starts).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (agent, tx) = fast_agent(&url, dir.path(), true);
    let task = tokio::spawn(agent.run());
    wait_for(&seen, "the dry-run's result", |g| !g.results.is_empty()).await;
    // One more check-in, so a second run (if any) would have shown by now.
    let n = lock(&seen).checkins;
    wait_for(&seen, "another check-in", |g| g.checkins > n).await;
    tx.send(true).expect("signal");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("run ok");
    let g = lock(&seen);
    assert_eq!(g.start_calls[&dry.id], 3, "two lost answers, then the go");
    assert_eq!(
        g.events,
        [format!("started {}", dry.id), format!("result {}", dry.id)]
    );
    assert_eq!(g.results.len(), 1);
    assert!(g.results[0].1.result.success, "{:?}", g.results[0].1.result);
}

/// The server answers 503 to the start; a shutdown before the go stops the agent without
/// running the command or posting anything for it.
#[tokio::test]
async fn a_shutdown_before_the_go_runs_nothing() {
    let install = command(CommandSpec::Install {
        packages: vec!["canopy-no-such-package-xyz".into()],
        pinned: vec![],
    });
    let starts = HashMap::from([(install.id, StartPlan::Status(503))]);
    let (url, seen) = spawn_server_with(vec![install.clone()], starts).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (agent, tx) = fast_agent(&url, dir.path(), false);
    let task = tokio::spawn(agent.run());
    wait_for(&seen, "the start asked again", |g| {
        g.start_calls.get(&install.id).copied().unwrap_or(0) >= 3
    })
    .await;
    tx.send(true).expect("signal");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops promptly")
        .expect("join")
        .expect("run ok");
    let g = lock(&seen);
    assert!(g.results.is_empty(), "{:?}", g.events);
    assert!(g.events.iter().all(|e| e.starts_with("start refused")));
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
