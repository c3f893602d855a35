//! Scripted agents for the update engine's tests: each speaks the real agent protocol
//! (check-in, start handshake, report, result) with the package state of one guest, and watches
//! the PVE simulator's tasks, so a rollback restores its packages and a reboot restarts it, as
//! a guest would.

use super::*;
use canopy_api_types::agent::{CheckinRequest, ResultSubmission};
use canopy_api_types::bulk::HealthReport;
use canopy_api_types::commands::{CommandResult, CommandSpec, PlannedPackage};
use canopy_api_types::updates::PackageManager;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One package: installed version, the repository's version, security or not, held.
#[derive(Debug, Clone)]
pub struct Pkg {
    pub installed: String,
    pub repo: String,
    pub security: bool,
    pub held: bool,
    /// Installing it makes a reboot required.
    pub needs_reboot: bool,
    /// Installing it makes this unit fail.
    pub breaks_unit: Option<String>,
    /// Installing it leaves this service running outdated code (what needrestart lists).
    pub outdates_service: Option<String>,
}

pub fn pkg(installed: &str, repo: &str) -> Pkg {
    Pkg {
        installed: installed.into(),
        repo: repo.into(),
        security: false,
        held: false,
        needs_reboot: false,
        breaks_unit: None,
        outdates_service: None,
    }
}

/// What a guest is: its packages, and what the last installs did.
#[derive(Debug, Clone, Default)]
pub struct GuestState {
    pub packages: BTreeMap<String, Pkg>,
    pub failed_units: Vec<String>,
    pub reboot_required: bool,
    pub services_to_restart: Vec<String>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// "NAME VERSION" per package installed, in order (a postinst's log).
    pub installs: Vec<String>,
    /// The repository publishes a newer version of this package after the next dry-run.
    pub bump_after_dry_run: Option<(String, String)>,
    /// Packages as they were at each snapshot, by snapshot name.
    pub snapshots: BTreeMap<String, BTreeMap<String, Pkg>>,
}

pub struct Scripted {
    pub state: Arc<Mutex<GuestState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn rows(st: &GuestState) -> Vec<serde_json::Value> {
    st.packages
        .iter()
        .filter(|(_, p)| p.installed != p.repo)
        .map(|(name, p)| {
            let mut u = package(name, p.security);
            u.current_version = p.installed.clone();
            u.available_version = p.repo.clone();
            u.held = p.held;
            serde_json::to_value(u).unwrap()
        })
        .collect()
}

fn ok(summary: &str) -> CommandResult {
    CommandResult {
        exit_code: 0,
        success: true,
        stdout: String::new(),
        stderr: String::new(),
        planned: vec![],
        removed: vec![],
        summary: summary.into(),
        health: None,
    }
}

fn failed(stderr: &str) -> CommandResult {
    CommandResult {
        exit_code: 100,
        success: false,
        stderr: stderr.into(),
        summary: "install refused".into(),
        ..ok("")
    }
}

/// Applies what PVE did to `vmid` since last time: snapshots and backups taken, rollbacks and
/// restores, reboots.
fn observe_pve(
    sim: &canopy_pve_sim::RunningCluster,
    vmid: u32,
    seen: &mut HashSet<String>,
    st: &mut GuestState,
) {
    for t in sim.tasks() {
        if t.id != vmid.to_string()
            || t.status != "stopped"
            || t.exitstatus.as_deref() != Some("OK")
        {
            continue;
        }
        if !seen.insert(t.upid.clone()) {
            continue;
        }
        match t.kind.as_str() {
            "vzsnapshot" | "qmsnapshot" => {
                let names: Vec<String> = sim
                    .guest(vmid)
                    .map(|g| g.snapshots.iter().map(|s| s.name.clone()).collect())
                    .unwrap_or_default();
                for n in names {
                    st.snapshots.entry(n).or_insert_with(|| st.packages.clone());
                }
            }
            // A backup is a snapshot kept under a name after every snapshot's.
            "vzdump" => {
                st.snapshots.insert("~vzdump".into(), st.packages.clone());
            }
            "vzrollback" | "vzrestore" | "qmrollback" | "qmrestore" => {
                // The newest snapshot of ours (or the backup) is the one gone back to.
                if let Some((_, pkgs)) = st.snapshots.iter().next_back() {
                    let mut restored = pkgs.clone();
                    for (name, p) in restored.iter_mut() {
                        p.repo = st
                            .packages
                            .get(name)
                            .map(|q| q.repo.clone())
                            .unwrap_or(p.repo.clone());
                    }
                    st.packages = restored;
                }
                st.failed_units.clear();
                st.reboot_required = false;
                st.services_to_restart.clear();
                st.started_at = Some(chrono::Utc::now());
            }
            "vzreboot" | "qmreboot" => {
                st.reboot_required = false;
                st.services_to_restart.clear();
                st.started_at = Some(chrono::Utc::now());
            }
            _ => {}
        }
    }
}

/// Runs a scripted agent for `hostname` until dropped.
pub async fn scripted(
    app: &TestApp,
    sim: Arc<canopy_pve_sim::RunningCluster>,
    vmid: u32,
    initial: GuestState,
) -> Scripted {
    let agent = app.enrol(&format!("ct{vmid}")).await;
    let state = Arc::new(Mutex::new(GuestState {
        started_at: Some(chrono::Utc::now()),
        ..initial
    }));
    let initial_rows = rows(&state.lock().unwrap());
    agent.report(initial_rows).await;
    let st = state.clone();
    let task = tokio::spawn(async move {
        let mut seen = HashSet::new();
        loop {
            observe_pve(&sim, vmid, &mut seen, &mut st.lock().unwrap());
            let resp = agent
                .client
                .checkin(&CheckinRequest {
                    facts: agent.facts.clone(),
                    report_hash: None,
                    wait_secs: 1,
                    connecting: false,
                })
                .await;
            let Ok(resp) = resp else {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            };
            for cmd in resp.commands {
                if agent.client.command_started(cmd.id).await.is_err() {
                    continue;
                }
                observe_pve(&sim, vmid, &mut seen, &mut st.lock().unwrap());
                let result = run_command(&st, &cmd.spec);
                if matches!(cmd.spec, CommandSpec::Scan) {
                    let r = rows(&st.lock().unwrap());
                    agent.report(r).await;
                }
                let _ = agent
                    .client
                    .submit_result(cmd.id, &ResultSubmission { result })
                    .await;
            }
        }
    });
    Scripted { state, task }
}

fn run_command(st: &Arc<Mutex<GuestState>>, spec: &CommandSpec) -> CommandResult {
    let mut st = st.lock().unwrap();
    match spec {
        CommandSpec::Scan => ok("scanned"),
        CommandSpec::Health { .. } => CommandResult {
            health: Some(HealthReport {
                failed_units: st.failed_units.clone(),
                reboot_required: st.reboot_required,
                services_to_restart: st.services_to_restart.clone(),
                systemd: true,
                agent_started_at: st.started_at,
                ..Default::default()
            }),
            ..ok("health")
        },
        CommandSpec::DryRun { packages, .. } => {
            let mut planned: Vec<PlannedPackage> = packages
                .iter()
                .filter_map(|n| st.packages.get(n).map(|p| (n, p)))
                .map(|(n, p)| PlannedPackage {
                    package: n.clone(),
                    from_version: Some(p.installed.clone()),
                    to_version: p.repo.clone(),
                    requested: true,
                    manager: Some(PackageManager::Apt),
                    containers: Vec::new(),
                })
                .collect();
            if packages.iter().any(|p| p == "tools") {
                planned.push(PlannedPackage {
                    package: "libextra".into(),
                    from_version: None,
                    to_version: "1.0".into(),
                    requested: false,
                    manager: Some(PackageManager::Apt),
                    containers: Vec::new(),
                });
            }
            if let Some((name, v)) = st.bump_after_dry_run.take() {
                if let Some(p) = st.packages.get_mut(&name) {
                    p.repo = v;
                }
            }
            CommandResult {
                planned,
                ..ok("dry-run")
            }
        }
        CommandSpec::Install { pinned, .. } => {
            for p in pinned {
                let now = st.packages.get(&p.package).map(|q| q.repo.clone());
                if let Some(now) = now.filter(|n| n != &p.to_version) {
                    return failed(&format!(
                        "{}: approved {}, now {now}: run the dry-run again",
                        p.package, p.to_version
                    ));
                }
            }
            for p in pinned {
                st.installs.push(format!("{} {}", p.package, p.to_version));
                let entry = st
                    .packages
                    .entry(p.package.clone())
                    .or_insert_with(|| pkg(&p.to_version, &p.to_version));
                entry.installed = p.to_version.clone();
                let (reboot, breaks) = (entry.needs_reboot, entry.breaks_unit.clone());
                let outdated = entry.outdates_service.clone();
                st.reboot_required |= reboot;
                st.services_to_restart.extend(outdated);
                if let Some(u) = breaks {
                    st.failed_units.push(u);
                }
            }
            ok("installed")
        }
        CommandSpec::Repair { .. } => failed("no repair here"),
    }
}

pub fn guest(packages: &[(&str, Pkg)]) -> GuestState {
    GuestState {
        packages: packages
            .iter()
            .map(|(n, p)| (n.to_string(), p.clone()))
            .collect(),
        ..Default::default()
    }
}

pub fn standard() -> GuestState {
    guest(&[
        ("web", pkg("1.0", "1.1")),
        (
            "ssl",
            Pkg {
                security: true,
                ..pkg("1.0", "1.0+deb12u1")
            },
        ),
        (
            "pinned",
            Pkg {
                held: true,
                ..pkg("1.0", "1.1")
            },
        ),
    ])
}
