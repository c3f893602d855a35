//! `canopy-agent run`: the check-in loop. Long-polls the server, uploads the scan
//! report when the server asks for it, executes commands one at a time (started →
//! work → result, the result retried until the server has it), re-scans after every
//! command and periodically, and backs off with jitter while the server is down,
//! logging once per state change rather than once per attempt.

use crate::actions;
use crate::cache::Cache;
use crate::config::{AgentConfig, Secret};
use crate::scan::{self, ScanOptions};
use anyhow::Context;
use canopy_api_types::agent::{CheckinRequest, ReportUpload, ResultSubmission};
use canopy_api_types::client::{Client, ClientError};
use canopy_api_types::commands::{AgentCommand, CommandResult, CommandSpec};
use canopy_api_types::updates::{PackageManager, Severity};
use rand::Rng;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Exponential back-off with full jitter in `[d/2, d]`, doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            current: base,
        }
    }

    /// The next delay (jittered); the un-jittered delay doubles up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        let f: f64 = rand::thread_rng().gen_range(0.5..=1.0);
        d.mul_f64(f)
    }

    pub fn reset(&mut self) {
        self.current = self.base;
    }
}

/// The one HTTP client of the agent: rustls, connect timeout, a request timeout
/// longer than the long poll, and the server pinned by fingerprint or CA when the config
/// says so (a server presenting another certificate is refused, naming both fingerprints).
pub fn http_client(cfg: &AgentConfig) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(format!("canopy-agent/{}", crate::facts::AGENT_VERSION))
        .connect_timeout(Duration::from_secs(cfg.connect_timeout_secs))
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

/// Resolves when SIGTERM or ctrl-c arrives.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// The running agent.
pub struct Agent {
    cfg: AgentConfig,
    client: Client,
    cache: Cache,
    cache_path: PathBuf,
    /// The package managers scanned and used for commands (configured, else detected at start).
    managers: Vec<PackageManager>,
    last_scan: Option<Instant>,
    shutdown: watch::Receiver<bool>,
}

impl Agent {
    pub fn new(
        cfg: AgentConfig,
        token: Secret,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        let client =
            Client::new(http_client(&cfg)?, cfg.server_url.clone()).with_token(token.expose());
        let cache_path = cfg.cache_path();
        let cache = Cache::load(&cache_path).unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), "ignoring unreadable cache");
            Cache::default()
        });
        let managers = scan::select_managers(&cfg.package_managers);
        Ok(Self {
            cfg,
            client,
            cache,
            cache_path,
            managers,
            last_scan: None,
            shutdown,
        })
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn save_cache(&self) {
        if let Err(e) = self.cache.save(&self.cache_path) {
            tracing::warn!(error = %format!("{e:#}"), "cannot write cache");
        }
    }

    /// Scan, store the report in the cache.
    async fn rescan(&mut self, refresh: bool, timeout: Duration) {
        let report = scan::scan(&ScanOptions {
            refresh,
            timeout,
            managers: self.managers.clone(),
        })
        .await;
        self.cache.set_report(report);
        self.last_scan = Some(Instant::now());
        self.save_cache();
    }

    fn scan_due(&self) -> bool {
        match self.last_scan {
            None => true,
            Some(t) => t.elapsed() >= Duration::from_secs(self.cfg.scan_interval_secs),
        }
    }

    /// Upload the cached report. Returns whether the server accepted it.
    async fn upload(&mut self) -> bool {
        let Some(report) = &self.cache.report else {
            return false;
        };
        let Some(hash) = self.cache.report_hash.clone() else {
            return false;
        };
        let upload = ReportUpload::of(report, hash.clone());
        match self.client.upload_report(&upload).await {
            Ok(acc) => {
                tracing::info!(
                    accepted = acc.accepted,
                    rejected = acc.rejected.len(),
                    reconciled = acc.reconciled,
                    "report uploaded"
                );
                for r in &acc.rejected {
                    tracing::warn!(index = r.index, reason = %r.reason, "server rejected a report row");
                }
                self.cache.uploaded_hash = Some(hash);
                self.save_cache();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "report upload failed; will resend when asked");
                false
            }
        }
    }

    /// The loop; returns when `shutdown` flips to true.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let managers: Vec<&str> = self.managers.iter().map(|m| m.as_str()).collect();
        let how = if self.cfg.package_managers.is_empty() {
            "detected"
        } else {
            "configured"
        };
        tracing::info!(server = %self.cfg.server_url, read_only = self.cfg.read_only, managers = %managers.join(","), how, "agent starting");
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut online: Option<bool> = None;
        let scan_timeout = Duration::from_secs(self.cfg.scan_timeout_secs);
        while !self.stopping() {
            if self.scan_due() {
                self.rescan(self.cfg.refresh_before_scan, scan_timeout)
                    .await;
            }
            let req = CheckinRequest {
                facts: crate::facts::gather(self.cfg.read_only),
                report_hash: self.cache.report_hash.clone(),
                wait_secs: self.cfg.wait_secs,
                connecting: online != Some(true),
            };
            let started = Instant::now();
            let mut shutdown = self.shutdown.clone();
            let res = tokio::select! {
                r = self.client.checkin(&req) => r,
                _ = shutdown.changed() => break,
            };
            match res {
                Ok(resp) => {
                    if online != Some(true) {
                        tracing::info!("connected to the server");
                    }
                    online = Some(true);
                    backoff.reset();
                    self.cache.last_checkin = Some(chrono::Utc::now());
                    self.cache.last_error = None;
                    self.save_cache();
                    if resp.report_wanted {
                        self.upload().await;
                    }
                    let idle = resp.commands.is_empty();
                    for cmd in resp.commands {
                        self.execute(cmd).await;
                    }
                    // A server that answers at once must not make us spin; otherwise
                    // reconnect after a small jitter.
                    let min = if idle && started.elapsed() < Duration::from_secs(1) {
                        1000
                    } else {
                        0
                    };
                    let jitter = rand::thread_rng().gen_range(min..=min + 250);
                    self.sleep(Duration::from_millis(jitter)).await;
                }
                Err(e) => {
                    let msg = describe(&e);
                    if online != Some(false) {
                        tracing::warn!(error = %msg, "check-in failed; retrying with back-off (further failures logged at debug)");
                        self.cache.last_error = Some(msg);
                        self.save_cache();
                    } else {
                        tracing::debug!(error = %msg, "check-in failed again");
                    }
                    online = Some(false);
                    self.sleep(backoff.next_delay()).await;
                }
            }
        }
        tracing::info!("agent stopped");
        Ok(())
    }

    /// Sleep, waking early on shutdown.
    async fn sleep(&self, d: Duration) {
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => {},
            _ = shutdown.changed() => {},
        }
    }

    /// started → do it → result (retried) → re-scan and upload if changed.
    /// A command is never abandoned because of a shutdown request: killing apt
    /// half-way is worse than a late stop.
    #[tracing::instrument(skip_all, fields(command = %cmd.id, kind = cmd.spec.kind()))]
    pub async fn execute(&mut self, cmd: AgentCommand) {
        if let Err(e) = self.client.command_started(cmd.id).await {
            tracing::warn!(error = %e, "could not mark the command started; running it anyway");
        }
        let timeout = Duration::from_secs(u64::from(cmd.timeout_secs.max(1)));
        let result = match &cmd.spec {
            CommandSpec::Scan => {
                self.rescan(self.cfg.refresh_before_scan, timeout).await;
                scan_result(&self.cache)
            }
            // Each package goes to the manager that reported it in the last scan.
            CommandSpec::DryRun { packages } => {
                match actions::route(packages, &self.managers, self.cache.report.as_ref()) {
                    Ok(batches) => actions::dry_run(&batches, timeout).await,
                    Err(refused) => *refused,
                }
            }
            CommandSpec::Install { packages, .. } => {
                match actions::route(packages, &self.managers, self.cache.report.as_ref()) {
                    Ok(batches) => actions::install(&batches, timeout, self.cfg.read_only).await,
                    Err(refused) => *refused,
                }
            }
            CommandSpec::Repair { manager } => CommandResult {
                exit_code: -1,
                success: false,
                stdout: String::new(),
                stderr: format!(
                    "repairing the {} database is not implemented yet",
                    manager.as_str()
                ),
                planned: vec![],
                removed: vec![],
                summary: "repair not supported".into(),
            },
        };
        tracing::info!(success = result.success, exit_code = result.exit_code, summary = %result.summary, "command finished");
        self.submit(cmd.id, result).await;
        if !matches!(cmd.spec, CommandSpec::Scan) {
            self.rescan(false, Duration::from_secs(self.cfg.scan_timeout_secs))
                .await;
        }
        if self.cache.report_hash != self.cache.uploaded_hash {
            self.upload().await;
        }
    }

    /// Submit a result until the server has it (duplicates are no-ops there). A 4xx
    /// answer (command cancelled or unknown) ends the retries; so does shutdown.
    async fn submit(&self, id: canopy_api_types::CommandId, result: CommandResult) {
        let sub = ResultSubmission { result };
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut logged = false;
        loop {
            match self.client.submit_result(id, &sub).await {
                Ok(_) => return,
                Err(e) if matches!(e.status(), Some(s) if (400..500).contains(&s) && s != 408 && s != 429) =>
                {
                    tracing::warn!(error = %e, "server refused the result; not retrying");
                    return;
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %describe(&e), "result submission failed; retrying");
                        logged = true;
                    }
                    if self.stopping() {
                        tracing::warn!("stopping before the result was delivered");
                        return;
                    }
                    self.sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

fn describe(e: &ClientError) -> String {
    match e.status() {
        Some(401) | Some(403) => {
            format!("authentication rejected by the server ({e}); re-register the agent")
        }
        _ => explain_transport(e),
    }
}

/// The result of a `scan` command: counts, and failure if every scanner failed.
pub fn scan_result(cache: &Cache) -> CommandResult {
    let Some(r) = &cache.report else {
        return CommandResult {
            exit_code: -1,
            success: false,
            stdout: String::new(),
            stderr: "no report".into(),
            planned: vec![],
            removed: vec![],
            summary: "scan failed".into(),
        };
    };
    let sec = r
        .updates
        .iter()
        .filter(|u| u.severity == Severity::Security)
        .count();
    let errors: Vec<String> = r
        .scanner_errors
        .iter()
        .map(|e| format!("{}: {}", e.scanner, e.message))
        .collect();
    let ok = errors.is_empty() || !r.updates.is_empty();
    CommandResult {
        exit_code: if ok { 0 } else { 1 },
        success: ok,
        stdout: String::new(),
        stderr: errors.join("\n"),
        planned: vec![],
        removed: vec![],
        summary: format!(
            "{} updates ({sec} security){}",
            r.updates.len(),
            if r.reboot_required {
                ", reboot required"
            } else {
                ""
            }
        ),
    }
}

/// Load the config and token, start the agent, stop on SIGTERM / ctrl-c. `managers` are the
/// `--package-manager` flags (they and the environment replace the file's list).
pub async fn launch(
    mut cfg: AgentConfig,
    read_only_flag: bool,
    managers: &[PackageManager],
) -> anyhow::Result<()> {
    cfg.read_only |= read_only_flag;
    cfg.package_managers = crate::config::effective_managers(&cfg.package_managers, managers)?;
    let token = cfg.token()?;
    crate::config::ensure_private_dir(&cfg.state_dir)?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = tx.send(true);
    });
    Agent::new(cfg, token, rx)?.run().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(500) && delays[0] <= Duration::from_secs(1));
        assert!(delays[3] >= Duration::from_secs(4) && delays[3] <= Duration::from_secs(8));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(60)));
        assert!(delays[9] >= Duration::from_secs(30));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
