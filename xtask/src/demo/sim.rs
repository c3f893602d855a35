//! The demo's PVE simulators: `canopy-pve-sim --file FILE` (examples/sim/home.toml, and with
//! the lab its node pve1's file), each cluster read from the `SIM cluster=… url=…
//! fingerprint=… token=…` line it prints once it listens, then added to the server with
//! `canopy cluster add` (the token through `CANOPY_PVE_TOKEN`, never on a command line).

use crate::proc::cmd;
use anyhow::{bail, Context, Result};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One cluster a simulator serves, as its `SIM …` line reports it.
pub(super) struct SimCluster {
    pub(super) name: String,
    pub(super) url: String,
    pub(super) fingerprint: String,
    pub(super) token: String,
}

/// Starts `bin --file FILE --tls-dir TLS_DIR` (stderr to `log`) and waits up to 30 s for one
/// `SIM` line per `[[clusters]]` of the file.
pub(super) fn start(
    bin: &Path,
    file: &Path,
    tls_dir: &Path,
    log: &Path,
) -> Result<(Child, Vec<SimCluster>)> {
    let expected = std::fs::read_to_string(file)
        .with_context(|| format!("read {}", file.display()))?
        .lines()
        .filter(|l| l.trim() == "[[clusters]]")
        .count();
    let mut child = Command::new(bin)
        .arg("--file")
        .arg(file)
        .arg("--tls-dir")
        .arg(tls_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let stdout = child.stdout.take().context("simulator stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut clusters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while clusters.len() < expected {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            bail!(
                "the PVE simulator for {} printed no cluster within 30 s; see {}",
                file.display(),
                log.display()
            );
        };
        if let Some(c) = parse_line(&line) {
            clusters.push(c);
        }
    }
    Ok((child, clusters))
}

fn parse_line(line: &str) -> Option<SimCluster> {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
    };
    Some(SimCluster {
        name: field("cluster")?,
        url: field("url")?,
        fingerprint: field("fingerprint")?,
        token: field("token")?,
    })
}

/// `canopy cluster add NAME --url URL --fingerprint FP` for each, which also runs the first
/// discovery.
pub(super) fn add_clusters(canopy: &str, session: &Path, clusters: &[SimCluster]) -> Result<()> {
    for c in clusters {
        cmd(
            canopy,
            [
                "cluster",
                "add",
                &c.name,
                "--url",
                &c.url,
                "--fingerprint",
                &c.fingerprint,
            ],
        )
        .env("CANOPY_SESSION", session)
        .env("CANOPY_PVE_TOKEN", &c.token)
        .timeout(Duration::from_secs(60))
        .output()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_line;

    #[test]
    fn sim_line() {
        let c = parse_line(
            "SIM cluster=lab url=https://127.0.0.1:4000 fingerprint=AA:BB token=root@pam!canopy=s",
        )
        .unwrap();
        assert_eq!(
            (c.name.as_str(), c.url.as_str(), c.fingerprint.as_str()),
            ("lab", "https://127.0.0.1:4000", "AA:BB")
        );
        assert_eq!(c.token, "root@pam!canopy=s");
        assert!(parse_line("listening on 127.0.0.1:4000").is_none());
    }
}
