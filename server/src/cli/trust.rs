//! How the CLI trusts the Canopy server's certificate: a pinned SHA-256 fingerprint (from
//! `canopy login --fingerprint`, the confirmed prompt, or `CANOPY_SERVER_FINGERPRINT`), a CA
//! file, or the public web roots (a reverse proxy's certificate). The pin is kept in the
//! session; a server that later presents another certificate is refused, naming both
//! fingerprints. Never "accept invalid certificates".

use anyhow::{bail, Context};
use canopy_tls::{Fingerprint, Trust};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

/// Pins the server for scripts (wins over the session's pin).
pub const FINGERPRINT_ENV: &str = "CANOPY_SERVER_FINGERPRINT";

/// How the server's certificate is trusted beyond the web roots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    Fingerprint(Fingerprint),
    CaFile(PathBuf),
}

/// The pin from `CANOPY_SERVER_FINGERPRINT`, if set.
pub fn from_env() -> anyhow::Result<Option<Pin>> {
    match std::env::var(FINGERPRINT_ENV) {
        Ok(v) if !v.trim().is_empty() => Ok(Some(Pin::Fingerprint(
            v.parse()
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("{FINGERPRINT_ENV} is invalid"))?,
        ))),
        _ => Ok(None),
    }
}

/// The one HTTP client of the user commands, trusting the server as `pin` says.
pub fn http(pin: Option<&Pin>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(120));
    if let Some(pin) = pin {
        let trust = match pin {
            Pin::Fingerprint(fp) => Trust::Fingerprints(vec![*fp]),
            Pin::CaFile(path) => Trust::CaPem(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the CA file {}", path.display()))?,
            ),
        };
        let (tls, _) = canopy_tls::client_config(&trust).map_err(anyhow::Error::msg)?;
        b = b.use_preconfigured_tls(tls);
    }
    Ok(b.build()?)
}

/// For `canopy login`: the pin given (flag or environment), else, for an `https://` server
/// whose certificate the web roots do not vouch for (a self-signed one), its fingerprint,
/// shown and confirmed on stdin.
pub async fn for_login(
    server: &str,
    fingerprint: Option<Fingerprint>,
    ca_file: Option<PathBuf>,
) -> anyhow::Result<Option<Pin>> {
    if let Some(fp) = fingerprint {
        return Ok(Some(Pin::Fingerprint(fp)));
    }
    if let Some(path) = ca_file {
        let path = std::path::absolute(&path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        return Ok(Some(Pin::CaFile(path)));
    }
    if !server.trim().starts_with("https://") {
        return Ok(None);
    }
    let healthz = format!("{}/healthz", server.trim().trim_end_matches('/'));
    let err = match http(None)?.get(&healthz).send().await {
        Ok(_) => return Ok(None), // the web roots vouch for it (e.g. a reverse proxy's)
        Err(e) => canopy_tls::error_chain(&e),
    };
    if !err.contains("certificate") {
        bail!("cannot reach {server}: {err}");
    }
    let (probe, seen) = canopy_tls::probe_config();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(probe)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .build()?;
    let _ = client.get(&healthz).send().await; // refused by design: only records
    let fp = seen
        .last()
        .with_context(|| format!("{server} presented no certificate: {err}"))?;
    eprintln!(
        "{server} presents a certificate this machine does not trust, with the SHA-256 \
         fingerprint\n  {fp}\nCompare it with the one `canopy serve` printed at start-up."
    );
    eprint!("Trust it? [y/N] ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if !matches!(line.trim(), "y" | "Y" | "yes") {
        bail!("not trusted; not logged in (or pass --fingerprint {fp})");
    }
    Ok(Some(Pin::Fingerprint(fp)))
}
