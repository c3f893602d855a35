//! The fake server the agent's tests talk to (axum on port 0): registration, check-in with a
//! one-time batch of commands, report upload, the start handshake (answered per command as a
//! test plans it), heartbeats and results (the first result answered 503, so every test also
//! sees a retried submission). Everything it saw is kept in [`Seen`].
#![allow(dead_code)]

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
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const AGENT_SECRET: &str = "HOSTID.agent-secret-d41d8cd9";
pub const REG_TOKEN: &str = "reg-token-5f4dcc3b";

#[derive(Default)]
pub struct Seen {
    pub checkins: usize,
    pub reports: Vec<ReportUpload>,
    pub events: Vec<String>,
    pub results: Vec<(CommandId, ResultSubmission)>,
    pub failed_once: bool,
    pub auth: Vec<String>,
    /// `current_token` of each registration.
    pub current_tokens: Vec<Option<String>>,
    /// Calls of `/started` per command.
    pub start_calls: HashMap<CommandId, usize>,
    /// Each heartbeat: its command and how many events had been seen when it came.
    pub heartbeats: Vec<(CommandId, usize)>,
}

/// How the fake answers a command's `/started`.
#[derive(Debug, Clone, Copy)]
pub enum StartPlan {
    /// This status with an error body (409 cancelled, 404 unknown, 503 down).
    Status(u16),
    /// The first N calls break off mid-answer (a transport error), then 200.
    Transport(usize),
    /// 200 with the body of a server from before `StartAccepted`.
    OldServer,
}

pub type S = Arc<Mutex<Seen>>;

pub fn lock(s: &S) -> std::sync::MutexGuard<'_, Seen> {
    s.lock().expect("lock")
}

pub async fn spawn_server(commands: Vec<AgentCommand>) -> (String, S) {
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

pub async fn spawn_server_with(
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
                            rejected_containers: vec![],
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
                post(|State(s): State<S>, Path(id): Path<CommandId>| async move {
                    let mut g = lock(&s);
                    let at = g.events.len();
                    g.heartbeats.push((id, at));
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

pub fn agent_cmd() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy-agent"));
    c.env_remove("CANOPY_REGISTRATION_TOKEN")
        .env_remove("CANOPY_AGENT_CONFIG");
    c
}

/// An agent on `url` (installs allowed unless `read_only`), with fast retries.
pub fn fast_agent(
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
pub async fn wait_for(seen: &S, what: &str, cond: impl Fn(&Seen) -> bool) {
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

pub fn command(spec: CommandSpec) -> AgentCommand {
    AgentCommand {
        id: CommandId::new(),
        spec,
        timeout_secs: 120,
    }
}
