//! `canopy-agent run`: the check-in loop. Long-polls the server, uploads the scan
//! report when the server asks for it, executes commands one at a time, re-scans after every
//! command and periodically, and backs off with jitter while the server is down, logging
//! once per state change rather than once per attempt.
//!
//! A command runs only after the server accepted its start (`POST …/started` → 200): a 4xx
//! answer (cancelled, timed out, unknown) means never run it and report nothing; a network
//! error, 5xx, 408 or 429 means ask again (with back-off) — never run blind. While it runs,
//! a heartbeat goes to the server every [`HEARTBEAT_SECS`]; then the result is retried until
//! the server has it. The package databases are audited at start-up and after every install
//! and repair, and reported with each check-in (`HostFacts.package_db`).

use crate::actions;
use crate::cache::Cache;
use crate::config::{AgentConfig, Secret};
use crate::http::{explain_transport, http_client};
use crate::scan::{self, ScanOptions};
use canopy_api_types::agent::PackageDbIssue;
use canopy_api_types::agent::{CheckinRequest, ReportUpload, ResultSubmission};
use canopy_api_types::client::{Client, ClientError};
use canopy_api_types::commands::{AgentCommand, CommandResult, CommandSpec, HEARTBEAT_SECS};
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
    /// The last package-database audit (sent with every check-in).
    package_db: Vec<PackageDbIssue>,
    /// Between heartbeats of a running command.
    heartbeat: Duration,
    /// The first delay of the start and result retries (doubles up to a minute).
    retry_base: Duration,
    /// When this agent started (health reports carry it: a reboot restarts the agent).
    started_at: chrono::DateTime<chrono::Utc>,
}

/// What the server said to a command's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// 200: run it.
    Go,
    /// 4xx: never run it (the reason, for the log).
    Refused(String),
    /// Shutdown was requested before the server answered.
    Stopping,
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
            package_db: Vec::new(),
            heartbeat: Duration::from_secs(HEARTBEAT_SECS),
            retry_base: Duration::from_secs(1),
            started_at: chrono::Utc::now(),
        })
    }

    /// Heartbeat and retry intervals other than the protocol's (tests).
    pub fn with_intervals(mut self, heartbeat: Duration, retry_base: Duration) -> Self {
        self.heartbeat = heartbeat;
        self.retry_base = retry_base;
        self
    }

    fn check_timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.scan_timeout_secs)
    }

    fn hang_timeout(&self) -> Duration {
        // Validated by `launch`; the default for an agent built by hand.
        self.cfg
            .hang_timeout()
            .unwrap_or(Duration::from_secs(self.cfg.hang_timeout_secs.max(1)))
    }

    /// Audit the package databases of the managers in use.
    async fn audit(&mut self) {
        self.package_db = crate::audit::audit(&self.managers, self.check_timeout()).await;
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
            docker: self.cfg.docker.clone(),
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
        if !self.stopping() {
            self.audit().await;
        }
        while !self.stopping() {
            if self.scan_due() {
                self.rescan(self.cfg.refresh_before_scan, scan_timeout)
                    .await;
            }
            let mut facts = crate::facts::gather(self.cfg.read_only);
            facts.package_db = self.package_db.clone();
            let req = CheckinRequest {
                facts,
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

    /// The server's go for `id`: asked until it answers. 2xx = go; a 4xx (other than 408 and
    /// 429) = never run it; a network error, 5xx, 408 or 429 = ask again with back-off, until
    /// shutdown is requested.
    pub async fn start(&self, id: canopy_api_types::CommandId) -> Start {
        let mut backoff = Backoff::new(self.retry_base, Duration::from_secs(60));
        let mut logged = false;
        loop {
            match self.client.command_started(id).await {
                Ok(_) => return Start::Go,
                // The status is the server's decision; an older server answers 200 with
                // `{"status": "running"}` instead of a `StartAccepted`.
                Err(ClientError::Garbage { status, .. }) if (200..300).contains(&status) => {
                    tracing::debug!(status, "start accepted without a StartAccepted body");
                    return Start::Go;
                }
                Err(e) if refused(&e) => return Start::Refused(e.to_string()),
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %describe(&e), "the server did not answer the start; asking again (never running without its go)");
                        logged = true;
                    }
                    if self.stopping() {
                        return Start::Stopping;
                    }
                    self.sleep(backoff.next_delay()).await;
                    if self.stopping() {
                        return Start::Stopping;
                    }
                }
            }
        }
    }

    /// started (the server's go) → do it, with heartbeats → result (retried) → re-scan and
    /// upload if changed. A command is never abandoned because of a shutdown request once it
    /// started: stopping apt half-way is worse than a late stop.
    #[tracing::instrument(skip_all, fields(command = %cmd.id, kind = cmd.spec.kind()))]
    pub async fn execute(&mut self, cmd: AgentCommand) {
        match self.start(cmd.id).await {
            Start::Go => {}
            Start::Refused(why) => {
                tracing::warn!(reason = %why, "the server refused the start (cancelled, timed out or unknown): not running it");
                return;
            }
            Start::Stopping => {
                tracing::info!("stopping before the server's go: not running it");
                return;
            }
        }
        let beats = self.heartbeats(cmd.id);
        let result = self.work(&cmd).await;
        beats.abort();
        tracing::info!(success = result.success, exit_code = result.exit_code, summary = %result.summary, "command finished");
        // A scan's report goes up before its result: once the server has the result of a
        // scan, it has the report too (a bulk update plans from it, docs/design.md §2.6).
        if matches!(cmd.spec, CommandSpec::Scan)
            && self.cache.report_hash != self.cache.uploaded_hash
        {
            self.upload().await;
        }
        self.submit(cmd.id, result).await;
        if !matches!(cmd.spec, CommandSpec::Scan) {
            self.rescan(false, self.check_timeout()).await;
        }
        if self.cache.report_hash != self.cache.uploaded_hash {
            self.upload().await;
        }
    }

    /// Sends a heartbeat for `id` every `heartbeat` until aborted; failures are logged only.
    fn heartbeats(&self, id: canopy_api_types::CommandId) -> tokio::task::JoinHandle<()> {
        let client = self.client.clone();
        let every = self.heartbeat;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut overdue_logged = false;
            loop {
                tick.tick().await;
                match client.command_heartbeat(id).await {
                    Ok(ack) if ack.overdue && !overdue_logged => {
                        tracing::info!(
                            "past its deadline on the server: it will be recorded as late"
                        );
                        overdue_logged = true;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %describe(&e), "heartbeat failed"),
                }
            }
        })
    }

    /// The command itself.
    async fn work(&mut self, cmd: &AgentCommand) -> CommandResult {
        let timeout = Duration::from_secs(u64::from(cmd.timeout_secs.max(1)));
        match &cmd.spec {
            CommandSpec::Scan => {
                self.rescan(self.cfg.refresh_before_scan, timeout).await;
                scan_result(&self.cache)
            }
            // Read-only: a read-only agent runs it too. Boxed: its future is large, and the
            // check-in loop's must stay small for the thread that polls it.
            CommandSpec::Health { checks } => {
                Box::pin(crate::health::command(
                    checks,
                    timeout,
                    Some(self.started_at),
                ))
                .await
            }
            // Each package goes to the manager that reported it in the last scan; image
            // updates to the Docker engine.
            CommandSpec::DryRun { packages, images } => {
                let last = self.cache.report.as_ref();
                actions::images::dry_run(
                    packages,
                    images,
                    &self.managers,
                    last,
                    &self.cfg.docker,
                    timeout,
                )
                .await
            }
            // Never stopped at the deadline: the server marks it overdue, the hang watchdog
            // is the only stop. The database is audited afterwards, whatever happened.
            CommandSpec::Install { packages, pinned } => {
                let job = actions::InstallJob {
                    packages,
                    pinned,
                    managers: &self.managers,
                    last: self.cache.report.as_ref(),
                    read_only: self.cfg.read_only,
                    check_timeout: self.check_timeout(),
                    hang_timeout: self.hang_timeout(),
                    docker: self.cfg.docker.clone(),
                };
                let r = actions::install(&job).await;
                if !self.cfg.read_only {
                    self.audit().await;
                }
                r
            }
            CommandSpec::Repair { manager } => {
                let r = actions::repair(
                    *manager,
                    self.cfg.read_only,
                    self.check_timeout(),
                    self.hang_timeout(),
                )
                .await;
                self.audit().await;
                r
            }
        }
    }

    /// Submit a result until the server has it (duplicates are no-ops there). A 4xx
    /// answer (command cancelled or unknown) ends the retries; so does shutdown.
    async fn submit(&self, id: canopy_api_types::CommandId, result: CommandResult) {
        let sub = ResultSubmission { result };
        let mut backoff = Backoff::new(self.retry_base, Duration::from_secs(60));
        let mut logged = false;
        loop {
            match self.client.submit_result(id, &sub).await {
                Ok(_) => return,
                Err(e) if refused(&e) => {
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

/// A final "no" from the server: a 4xx answer other than 408 (timeout) and 429 (slow down).
/// Everything else — no answer, 5xx — is worth asking again.
fn refused(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { .. } | ClientError::Garbage { .. })
        && matches!(e.status(), Some(s) if (400..500).contains(&s) && s != 408 && s != 429)
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
            health: None,
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
    // The Docker inventory failing does not fail a scan of the packages.
    let ok = !r.scanner_errors.iter().any(|e| e.scanner != "docker") || !r.updates.is_empty();
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
        health: None,
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
    cfg.hang_timeout_secs = cfg.hang_timeout()?.as_secs();
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
