//! The per-operation health checks, run inside the guest: `http` (a `GET`, 2xx or the status
//! asked for), `tcp` (a connection to `host:port`) and `command` (argv, no shell, exit 0),
//! each bounded by the health command's time. A check that cannot even start (a bad URL, an
//! empty argv) fails with the reason as its detail; it never fails the report.

use super::CHECK_GRACE;
use crate::process::{self, Cmd, ProcessError};
use canopy_api_types::bulk::{CheckOutcome, HealthCheck};
use std::time::Duration;

/// Run every check at once, each within `budget`; the outcomes in the order of `checks`.
pub(super) async fn run_all(checks: &[HealthCheck], budget: Duration) -> Vec<CheckOutcome> {
    if checks.is_empty() {
        return Vec::new();
    }
    let client = match crate::http::check_client(budget) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "no HTTP client for the health checks");
            None
        }
    };
    let tasks: Vec<_> = checks
        .iter()
        .cloned()
        .map(|check| {
            let client = client.clone();
            tokio::spawn(async move { run_check(&check, client.as_ref(), budget).await })
        })
        .collect();
    let mut outcomes = Vec::with_capacity(checks.len());
    for (check, task) in checks.iter().zip(tasks) {
        outcomes.push(task.await.unwrap_or_else(|e| CheckOutcome {
            check: check.describe(),
            ok: false,
            detail: format!("the check did not finish: {e}"),
        }));
    }
    outcomes
}

/// One check within `budget`. `client` is the health-check HTTP client
/// ([`crate::http::check_client`]); `None` fails `http` checks.
pub async fn run_check(
    check: &HealthCheck,
    client: Option<&reqwest::Client>,
    budget: Duration,
) -> CheckOutcome {
    let (ok, detail) = match check {
        HealthCheck::Http { url, status } => match client {
            Some(c) => http(c, url, *status, budget).await,
            None => (false, "no HTTP client".to_string()),
        },
        HealthCheck::Tcp { address } => tcp(address, budget).await,
        HealthCheck::Command { argv } => command(argv, budget).await,
    };
    tracing::debug!(check = %check.describe(), ok, %detail, "health check");
    CheckOutcome {
        check: check.describe(),
        ok,
        detail,
    }
}

async fn http(
    client: &reqwest::Client,
    url: &str,
    expected: Option<u16>,
    budget: Duration,
) -> (bool, String) {
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return (false, format!("not a URL: {e}")),
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return (
            false,
            format!(
                "only http:// and https:// URLs are checked, not {}://",
                parsed.scheme()
            ),
        );
    }
    let answer = tokio::time::timeout(budget, client.get(parsed).send()).await;
    let response = match answer {
        Err(_) => return (false, no_answer(budget)),
        Ok(Err(e)) if e.is_timeout() => return (false, no_answer(budget)),
        Ok(Err(e)) => return (false, canopy_tls::error_chain(&e)),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    let ok = match expected {
        Some(want) => status.as_u16() == want,
        None => status.is_success(),
    };
    let mut detail = status.to_string();
    if status.is_redirection() {
        if let Some(to) = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
        {
            detail.push_str(&format!(" → {to}"));
        }
    }
    if !ok {
        match expected {
            Some(want) => detail.push_str(&format!(", expected {want}")),
            None => detail.push_str(", expected 2xx"),
        }
    }
    (ok, detail)
}

fn no_answer(budget: Duration) -> String {
    format!("no answer within {} s", budget.as_secs_f64())
}

async fn tcp(address: &str, budget: Duration) -> (bool, String) {
    let port_ok = address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !port_ok {
        return (false, format!("`{address}` is not host:port"));
    }
    match tokio::time::timeout(budget, tokio::net::TcpStream::connect(address)).await {
        Err(_) => (
            false,
            format!("no connection within {} s", budget.as_secs_f64()),
        ),
        Ok(Err(e)) => (false, format!("cannot connect: {e}")),
        Ok(Ok(stream)) => {
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| address.to_string());
            (true, format!("connected to {peer}"))
        }
    }
}

/// The last lines of a command's stderr, short enough for a detail.
fn stderr_tail(stderr: &str) -> String {
    let tail = process::tail_lines(stderr, 3);
    match tail.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &tail[..cut]),
        None => tail,
    }
}

async fn command(argv: &[String], budget: Duration) -> (bool, String) {
    let Some((program, args)) = argv.split_first() else {
        return (false, "no program given".to_string());
    };
    let cmd = Cmd::new(program.as_str())
        .args(args.iter().cloned())
        .timeout(budget)
        .grace(CHECK_GRACE);
    match process::run(&cmd).await {
        Ok(out) if out.success() => (true, "exit 0".to_string()),
        Ok(out) if out.exit_code == -1 => (
            false,
            format!("killed by a signal: {}", stderr_tail(&out.stderr)),
        ),
        Ok(out) => (
            false,
            format!("exit {}: {}", out.exit_code, stderr_tail(&out.stderr)),
        ),
        Err(ProcessError::Stopped { reason, .. }) => (false, reason.to_string()),
        Err(e) => (false, e.to_string()),
    }
}
