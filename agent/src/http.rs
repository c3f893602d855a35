//! The agent's HTTP clients, built in one place: the server client (pinned to the Canopy
//! server when the config says so) and the health-check client (the guest's own services,
//! verified against the web roots). Neither ever accepts an invalid certificate.

use crate::config::AgentConfig;
use anyhow::Context;
use std::time::Duration;

fn builder(connect_timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(format!("canopy-agent/{}", crate::facts::AGENT_VERSION))
        .connect_timeout(connect_timeout)
}

/// The one HTTP client of the agent: rustls, connect timeout, a request timeout
/// longer than the long poll, and the server pinned by fingerprint or CA when the config
/// says so (a server presenting another certificate is refused, naming both fingerprints).
pub fn http_client(cfg: &AgentConfig) -> anyhow::Result<reqwest::Client> {
    let mut b = builder(Duration::from_secs(cfg.connect_timeout_secs))
        .timeout(Duration::from_secs(u64::from(cfg.wait_secs) + 30));
    if let Some(trust) = cfg.server_trust()? {
        let (tls, _) = canopy_tls::client_config(&trust).map_err(anyhow::Error::msg)?;
        b = b.use_preconfigured_tls(tls);
    }
    b.build().context("building the HTTP client")
}

/// A failed request in words: a changed server certificate names both fingerprints and
/// the fix; anything else is the whole cause chain (the reason sits a few levels down).
pub fn explain_transport(e: &(dyn std::error::Error + 'static)) -> String {
    match canopy_tls::pin_mismatch(e) {
        Some(m) => format!(
            "the server presents a certificate with the SHA-256 fingerprint {}, but {} is \
             pinned; if its certificate was replaced on purpose, register again with \
             --fingerprint {} (or set server_fingerprint in agent.toml)",
            m.presented,
            m.pinned
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" or "),
            m.presented
        ),
        None => canopy_tls::error_chain(e),
    }
}

/// The client of the `http` health checks: `GET` inside the guest, answered within
/// `timeout`. It sees the URL's own answer (redirects are not followed, so a check may expect
/// a 301), goes direct (no proxy from the environment: the check is about this guest), and
/// verifies `https://` against the web roots — never the server pin, never "accept invalid".
pub fn check_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    builder(timeout)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .context("building the health-check HTTP client")
}
