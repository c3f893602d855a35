//! The `health` command through the real check-in loop, against the fake server (`support`):
//! a read-only agent runs it, the checks run against real listeners and programs on
//! 127.0.0.1, and the result carries the report with the agent's start time.

mod support;

use canopy_api_types::bulk::HealthCheck;
use canopy_api_types::commands::CommandSpec;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers every HTTP request on 127.0.0.1 with `status` and an empty body.
async fn http_server(status: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let answer =
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_read_only_agent_reports_health_and_runs_the_checks() {
    let up = http_server("200 OK").await;
    let down = http_server("503 Service Unavailable").await;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let checks = vec![
        HealthCheck::Http {
            url: format!("http://{up}/"),
            status: None,
        },
        HealthCheck::Http {
            url: format!("http://{down}/"),
            status: None,
        },
        HealthCheck::Tcp {
            address: up.clone(),
        },
        HealthCheck::Tcp {
            address: closed.clone(),
        },
        HealthCheck::Command {
            argv: vec!["true".into()],
        },
        HealthCheck::Command {
            argv: vec!["sh".into(), "-c".into(), "echo broken >&2; exit 4".into()],
        },
    ];
    let health = command(CommandSpec::Health {
        checks: checks.clone(),
    });
    let before = chrono::Utc::now();
    let (url, seen) = spawn_server(vec![health.clone()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (agent, tx) = fast_agent(&url, dir.path(), true);
    let task = tokio::spawn(agent.run());
    wait_for(&seen, "the health result", |g| !g.results.is_empty()).await;
    tx.send(true).expect("signal");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("run ok");

    let g = lock(&seen);
    let (id, sub) = &g.results[0];
    assert_eq!(*id, health.id);
    let r = &sub.result;
    // This machine's own systemd decides whether the report can be made; where systemd runs
    // and answers, it is, and so it is without systemd.
    let report = r
        .health
        .as_ref()
        .unwrap_or_else(|| panic!("no report: {r:?}"));
    assert!(r.success, "{r:?}");
    assert_eq!(
        report.systemd,
        std::path::Path::new("/run/systemd/system").is_dir()
    );
    assert_eq!(
        report.reboot_required,
        canopy_agent::scan::reboot_required(std::path::Path::new("/"))
    );
    let started = report.agent_started_at.expect("the agent's start time");
    assert!(
        started >= before && started <= chrono::Utc::now(),
        "{started}"
    );

    let seen: Vec<(String, bool, String)> = report
        .checks
        .iter()
        .map(|c| (c.check.clone(), c.ok, c.detail.clone()))
        .collect();
    assert_eq!(seen.len(), checks.len(), "{seen:?}");
    for (c, s) in checks.iter().zip(&seen) {
        assert_eq!(s.0, c.describe());
    }
    let oks: Vec<bool> = seen.iter().map(|s| s.1).collect();
    assert_eq!(oks, [true, false, true, false, true, false], "{seen:?}");
    assert_eq!(seen[0].2, "200 OK");
    assert_eq!(seen[1].2, "503 Service Unavailable, expected 2xx");
    assert_eq!(seen[2].2, format!("connected to {up}"));
    assert!(seen[3].2.starts_with("cannot connect: "), "{seen:?}");
    assert_eq!(seen[4].2, "exit 0");
    assert_eq!(seen[5].2, "exit 4: broken");
    assert!(
        r.summary.contains("3 of 6 checks failed: "),
        "{}",
        r.summary
    );
}

/// `canopy-agent health --json` on this machine, no server: the same result as the command's,
/// with the checks from its flags; exit 2 when a check failed (1 when no report could be made).
#[tokio::test]
async fn the_cli_prints_the_same_report() {
    let up = http_server("200 OK").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let out = agent_cmd()
        .env("CANOPY_AGENT_CONFIG", dir.path().join("none.toml"))
        .args(["health", "--json", "--timeout", "30", "--tcp", &up])
        .args(["--http", &format!("http://{up}/"), "--command", "false"])
        .output()
        .await
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let r: canopy_api_types::commands::CommandResult =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(
        out.status.code(),
        Some(if r.success { 2 } else { 1 }),
        "{r:?} {stderr}"
    );
    if r.success {
        let report = r.health.expect("a report");
        assert_eq!(report.agent_started_at, None, "no agent runs here");
        let checks: Vec<(String, bool)> = report
            .checks
            .iter()
            .map(|c| (c.check.clone(), c.ok))
            .collect();
        assert_eq!(
            checks,
            [
                (format!("http http://{up}/"), true),
                (format!("tcp {up}"), true),
                ("command false".to_string(), false),
            ]
        );
    } else {
        assert!(r.health.is_none(), "{r:?}");
        assert!(r
            .summary
            .starts_with("cannot list the failed systemd units"));
    }
}
