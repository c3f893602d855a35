//! `canopy-agent health`: the report of this host, printed (a table or the command's JSON
//! result), with checks from the command line — to try an operation's checks on a host first.

use super::{gather, lines, result};
use anyhow::Context;
use canopy_api_types::bulk::HealthCheck;
use std::path::Path;
use std::time::Duration;

/// The checks given as `--http URL`, `--tcp HOST:PORT` and `--command "PROG ARG…"` (split on
/// whitespace, no shell), in that order.
pub fn checks_from_flags(
    http: Vec<String>,
    tcp: Vec<String>,
    command: Vec<String>,
) -> anyhow::Result<Vec<HealthCheck>> {
    let mut checks: Vec<HealthCheck> = http
        .into_iter()
        .map(|url| HealthCheck::Http { url, status: None })
        .collect();
    checks.extend(tcp.into_iter().map(|address| HealthCheck::Tcp { address }));
    for c in command {
        let argv: Vec<String> = c.split_whitespace().map(str::to_string).collect();
        anyhow::ensure!(!argv.is_empty(), "--command needs a program");
        checks.push(HealthCheck::Command { argv });
    }
    Ok(checks)
}

/// Print the report; the exit code: 0 healthy, 2 a failed unit or check, 1 no report. No
/// agent start time: this process is not the running agent.
pub async fn print(checks: &[HealthCheck], json: bool, timeout: Duration) -> anyhow::Result<i32> {
    let g = gather(Path::new("/"), checks, timeout, None).await;
    let code = match (&g.error, g.healthy()) {
        (Some(_), _) => 1,
        (None, true) => 0,
        (None, false) => 2,
    };
    if json {
        let r = result(g);
        println!(
            "{}",
            serde_json::to_string_pretty(&r).context("serialising the result")?
        );
    } else {
        for l in lines(&g) {
            println!("{l}");
        }
        for n in g.error.iter().chain(&g.notes) {
            eprintln!("{n}");
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_checks_in_order() {
        let checks = checks_from_flags(
            vec!["http://127.0.0.1/".into()],
            vec!["127.0.0.1:22".into()],
            vec!["systemctl is-active  nginx".into()],
        )
        .expect("checks");
        let described: Vec<String> = checks.iter().map(|c| c.describe()).collect();
        assert_eq!(
            described,
            [
                "http http://127.0.0.1/",
                "tcp 127.0.0.1:22",
                "command systemctl is-active nginx"
            ]
        );
        let e = checks_from_flags(vec![], vec![], vec!["  ".into()]).unwrap_err();
        assert_eq!(e.to_string(), "--command needs a program");
    }
}
