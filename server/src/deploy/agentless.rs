//! Agentless scanning: a guest without an agent is still read through `pct exec` (or direct
//! SSH) — its identity, OS, `apt list --upgradable` or `dnf check-update` — so the tree has
//! no holes. The result
//! is stored as an agentless host attached to the guest, with its updates ingested through the
//! same validation as an agent's report. Nothing in the guest is changed: the package lists
//! are whatever the guest last fetched.
//!
//! The parsing is the agent's own (`canopy_agent::scan`), so both paths read apt the same way;
//! a guest's Docker engine is read with its CLI (one line of JSON per container, only the
//! fields the inventory needs: the answer is cut to its last 64 KiB) and turned into
//! containers by the agent's own inventory code.

use super::shell::Shell;
use super::steps::key_values;
use super::Deployer;
use crate::error::{Error, Result as ApiResult};
use anyhow::{bail, Context, Result};
use canopy_api_types::agent::{HostFacts, ReportUpload, ScanReport, ScannerError};
use canopy_api_types::deploy::{DeployAction, DeployRequest};
use canopy_api_types::updates::PackageUpdate;
use canopy_api_types::{GuestId, HostId};
use canopy_store::{Actor, Store};
use std::sync::Arc;

/// One read of the guest; each part starts with a `@@name` line.
const SCRIPT: &str = r#"
echo @@machine-id; cat /etc/machine-id 2>/dev/null
echo @@hostname; cat /etc/hostname 2>/dev/null || hostname
echo @@os-release; cat /etc/os-release 2>/dev/null
echo @@uname; uname -r; uname -m
echo @@reboot; [ -e /var/run/reboot-required ] && echo yes
if command -v apt >/dev/null 2>&1; then
  echo @@apt-list; LC_ALL=C apt list --upgradable 2>/dev/null
  echo "@@apt-exit $?"
  echo @@apt-hold; apt-mark showhold 2>/dev/null
fi
if command -v dnf >/dev/null 2>&1; then
  echo @@dnf-check; LC_ALL=C dnf -q check-update 2>/dev/null
  echo "@@dnf-exit $?"
  echo @@dnf-security; LC_ALL=C dnf -q updateinfo list --security 2>/dev/null
  echo @@rpm; rpm -qa --qf '%{NAME}.%{ARCH} %{EPOCH}:%{VERSION}-%{RELEASE}\n' 2>/dev/null
fi
if command -v docker >/dev/null 2>&1 && [ -S /var/run/docker.sock ]; then
  ids=$(docker ps -aq 2>/dev/null); echo "@@docker-exit $?"
  echo @@docker-containers; [ -n "$ids" ] && docker inspect -f '{"Id":{{json .Id}},"Name":{{json .Name}},"Image":{{json .Image}},"Config":{"Image":{{json .Config.Image}},"Labels":{{json .Config.Labels}}},"State":{"Status":{{json .State.Status}}{{if index .State "Health"}},"Health":{"Status":{{json .State.Health.Status}}}{{end}}},"HostConfig":{"RestartPolicy":{{json .HostConfig.RestartPolicy}}}}' $ids 2>/dev/null
  images=$([ -n "$ids" ] && docker inspect -f "{{.Image}}" $ids 2>/dev/null | sort -u)
  echo @@docker-images; [ -n "$images" ] && docker image inspect $images 2>/dev/null
fi
echo @@end
"#;

/// The note on a guest an agentless scan leaves to its agent.
pub const HAS_AGENT: &str = "has an agent; it reports for itself";

/// What an agentless scan stored.
#[derive(Debug, Clone)]
pub struct Scanned {
    pub host_id: HostId,
    pub pending: usize,
}

fn sections(text: &str) -> Vec<(&str, String)> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("@@") {
            out.push((name, String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

/// The exit code a `@@NAME CODE` marker line carries ("0" when missing).
fn exit_code<'a>(parts: &[(&'a str, String)], name: &str) -> &'a str {
    parts
        .iter()
        .find_map(|(n, _)| n.strip_prefix(name)?.strip_prefix(' '))
        .map(str::trim)
        .unwrap_or("0")
}

/// The facts and the scan report an agentless read of a guest gives.
pub fn parse(text: &str) -> Result<(HostFacts, ScanReport)> {
    let parts = sections(text);
    let get = |name: &str| {
        parts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| b.as_str())
    };
    if get("end").is_none() {
        bail!("the guest's answer was cut short");
    }
    let machine_id = get("machine-id").unwrap_or("").trim().to_string();
    if machine_id.is_empty() {
        bail!("the guest has no /etc/machine-id");
    }
    let os = key_values(get("os-release").unwrap_or(""));
    let mut uname = get("uname").unwrap_or("").lines();
    let facts = HostFacts {
        hostname: get("hostname").unwrap_or("").trim().to_string(),
        machine_id,
        os_id: os.get("ID").cloned().unwrap_or_default(),
        os_pretty: os.get("PRETTY_NAME").cloned().unwrap_or_default(),
        kernel: uname.next().unwrap_or("").trim().to_string(),
        arch: uname.next().unwrap_or("").trim().to_string(),
        agent_version: String::new(),
        read_only: true,
        run_as: String::new(),
        package_db: Vec::new(),
    };
    let mut updates: Vec<PackageUpdate> = Vec::new();
    let mut scanner_errors = Vec::new();
    if let Some(list) = get("apt-list") {
        let exit = exit_code(&parts, "apt-exit");
        if exit != "0" {
            scanner_errors.push(ScannerError {
                scanner: "apt".into(),
                message: format!("apt list --upgradable exited with {exit}"),
            });
        } else {
            let held = canopy_agent::scan::apt::parse_showhold(get("apt-hold").unwrap_or(""));
            match canopy_agent::scan::apt::parse_list_upgradable(list) {
                Ok(rows) => updates.extend(rows.into_iter().map(|r| r.into_update(&held))),
                Err(e) => scanner_errors.push(ScannerError {
                    scanner: "apt".into(),
                    message: format!("{e:#}"),
                }),
            }
        }
    }
    if let Some(list) = get("dnf-check") {
        use canopy_agent::scan::dnf;
        // dnf check-update: 0 = nothing to do, 100 = updates listed.
        match exit_code(&parts, "dnf-exit") {
            "0" | "100" => {
                let security = dnf::parse_updateinfo_security(get("dnf-security").unwrap_or(""));
                let installed = dnf::parse_rpm_query(get("rpm").unwrap_or(""));
                updates.extend(
                    dnf::parse_check_update(list)
                        .into_iter()
                        .map(|r| dnf::to_update(r, &installed, &security)),
                );
            }
            code => scanner_errors.push(ScannerError {
                scanner: "dnf".into(),
                message: format!("dnf check-update exited with {code}"),
            }),
        }
    }
    // Docker, where the guest has an engine: the CLI's inspections, read as the agent reads
    // the engine's (`canopy_agent::docker::inventory`).
    let mut containers = None;
    if let Some(list) = get("docker-containers") {
        let read = match exit_code(&parts, "docker-exit") {
            "0" => canopy_agent::docker::inventory::from_cli_json(
                list,
                get("docker-images").unwrap_or(""),
            ),
            code => Err(format!(
                "docker ps exited with {code} (is the engine running?)"
            )),
        };
        match read {
            Ok(list) => containers = Some(list),
            Err(message) => scanner_errors.push(ScannerError {
                scanner: "docker".into(),
                message,
            }),
        }
    }
    if get("apt-list").is_none() && get("dnf-check").is_none() {
        scanner_errors.push(ScannerError {
            scanner: "agentless".into(),
            message: format!(
                "no package manager the agentless scan reads (apt, dnf) in {}",
                if facts.os_pretty.is_empty() {
                    "the guest"
                } else {
                    &facts.os_pretty
                }
            ),
        });
    }
    let report = ScanReport {
        updates,
        reboot_required: get("reboot").is_some_and(|b| b.trim() == "yes"),
        scanner_errors,
        scanned_at: chrono::Utc::now(),
        containers,
    };
    Ok((facts, report))
}

/// Reads the guest through `shell` and stores what it found.
pub async fn scan(
    shell: &Shell,
    store: &dyn Store,
    guest: GuestId,
    actor: &Actor,
) -> Result<Scanned> {
    let text = shell.ok("the agentless scan", SCRIPT, None).await?;
    let (facts, report) = parse(&text)?;
    let host = store
        .upsert_agentless_host(guest, &facts, chrono::Utc::now())
        .await
        .context("recording the agentless host")?;
    if !host.agentless {
        bail!(
            "the guest has an enrolled agent (host {}); it reports for itself",
            host.id
        );
    }
    let upload = ReportUpload::of(&report, canopy_agent::scan::report_hash(&report));
    let ingest = crate::pipeline::report::validate(upload, &facts.os_id).report;
    let outcome = store.ingest_report(host.id, ingest, actor).await?;
    Ok(Scanned {
        host_id: host.id,
        pending: outcome.accepted as usize,
    })
}

impl Deployer {
    /// Scans every targeted guest that has no enrolled agent through `pct exec` (or direct
    /// SSH), concurrently within the same limits as deploys. Guests with an agent are left to it.
    pub async fn scan_agentless(
        self: &Arc<Self>,
        selector: &str,
        actor: &Actor,
    ) -> ApiResult<Vec<canopy_api_types::deploy::AgentlessResult>> {
        use canopy_api_types::deploy::AgentlessResult;
        super::keys::ensure_key(&self.key_file()).map_err(Error::internal)?;
        let req = DeployRequest {
            selector: selector.to_string(),
            action: DeployAction::Deploy,
        };
        let (_, planned) =
            super::plan::plan(&self.discovery, self.store.as_ref(), &self.settings, &req).await?;
        let tree = self.discovery.tree();
        let mut tasks = tokio::task::JoinSet::new();
        let mut results = Vec::new();
        for p in planned {
            let path = canopy_inventory::PathId::parse(&p.item.target).map_err(Error::internal)?;
            let agent = tree.get(&path).and_then(|v| v.agent.clone());
            if matches!(agent.as_deref(), Some("online" | "offline")) {
                results.push(AgentlessResult {
                    target: p.item.target.clone(),
                    host_id: None,
                    pending: None,
                    error: Some(HAS_AGENT.into()),
                });
                continue;
            }
            let Some(guest) = p.item.guest_id else {
                continue;
            };
            let (me, actor) = (self.clone(), actor.clone());
            tasks.spawn(async move {
                let _guest = me.guest(None, &p, &actor).await;
                let _slots = me.slots.acquire(&p.node_key()).await;
                let r = async {
                    let shell = me.shell(&p).await?;
                    let scanned = scan(&shell, me.store.as_ref(), guest, &actor).await?;
                    me.discovery.host_changed(scanned.host_id).await?;
                    anyhow::Ok(scanned)
                }
                .await;
                match r {
                    Ok(s) => AgentlessResult {
                        target: p.item.target,
                        host_id: Some(s.host_id),
                        pending: Some(s.pending as u64),
                        error: None,
                    },
                    Err(e) => AgentlessResult {
                        target: p.item.target,
                        host_id: None,
                        pending: None,
                        error: Some(format!("{e:#}")),
                    },
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            results.push(r.map_err(Error::internal)?);
        }
        results.sort_by(|a, b| a.target.cmp(&b.target));
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_debian_guest() {
        let text = "@@machine-id\nabc123\n@@hostname\nct101\n@@os-release\nID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n\
                    @@uname\n6.8.12-4-pve\nx86_64\n@@reboot\n@@apt-list\nListing...\n\
                    canopy-demo-tools/bookworm 2.0 all [upgradable from: 1.0]\n\
                    canopy-demo-ssl/bookworm-security 1.1 all [upgradable from: 1.0]\n@@apt-exit 0\n@@apt-hold\n@@end\n";
        let (facts, report) = parse(text).unwrap();
        assert_eq!(facts.machine_id, "abc123");
        assert_eq!(facts.hostname, "ct101");
        assert_eq!(facts.os_id, "debian");
        assert_eq!(facts.arch, "x86_64");
        assert_eq!(report.updates.len(), 2);
        assert_eq!(report.containers, None, "no Docker engine answered");
        assert!(report.scanner_errors.is_empty());
        let ssl = report
            .updates
            .iter()
            .find(|u| u.package == "canopy-demo-ssl")
            .unwrap();
        assert_eq!(ssl.severity, canopy_api_types::updates::Severity::Security);
    }

    #[test]
    fn reads_the_guests_docker_engine_and_names_what_fails() {
        let base =
            "@@machine-id\nabc\n@@hostname\nct204\n@@os-release\nID=debian\n@@uname\n6\nx86_64\n\
                    @@apt-list\nListing...\n@@apt-exit 0\n@@apt-hold\n";
        let ok = format!(
            "{base}@@docker-exit 0\n@@docker-containers\n[{{\"Id\":\"c1\",\"Name\":\"/web\",\"Image\":\"sha256:i\",\
             \"Config\":{{\"Image\":\"nginx:1\"}},\"State\":{{\"Status\":\"running\"}}}}]\n\
             @@docker-images\n[{{\"Id\":\"sha256:i\",\"RepoDigests\":[\"nginx@sha256:d\"],\"Os\":\"linux\",\"Architecture\":\"amd64\"}}]\n@@end\n"
        );
        let (_, report) = parse(&ok).unwrap();
        let containers = report.containers.expect("the engine's containers");
        assert_eq!(containers[0].name, "web");
        assert_eq!(containers[0].repo_digests, ["nginx@sha256:d"]);
        let empty = format!("{base}@@docker-exit 0\n@@docker-containers\n@@docker-images\n@@end\n");
        assert_eq!(parse(&empty).unwrap().1.containers, Some(vec![]));
        let down = format!("{base}@@docker-exit 1\n@@docker-containers\n@@docker-images\n@@end\n");
        let (_, report) = parse(&down).unwrap();
        assert_eq!(report.containers, None, "kept as they were");
        assert!(report.scanner_errors.iter().any(|e| e.scanner == "docker"));
    }

    #[test]
    fn a_cut_answer_or_no_machine_id_is_an_error() {
        assert!(parse("@@machine-id\nabc\n").is_err());
        assert!(parse("@@machine-id\n\n@@end\n").is_err());
    }

    #[test]
    fn no_apt_is_a_scanner_error_not_a_failure() {
        let (_, report) = parse("@@machine-id\nm\n@@os-release\nID=alpine\n@@end\n").unwrap();
        assert_eq!(report.scanner_errors.len(), 1);
        assert!(report.scanner_errors[0].message.contains("apt, dnf"));
    }

    #[test]
    fn reads_a_dnf_guest() {
        let text = "@@machine-id\nm\n@@os-release\nID=debian\n@@dnf-check\n\
                    canopy-demo-ssl.noarch   1.0-2   canopy-lab\n\
                    canopy-demo-web.noarch   2.0-1   canopy-lab\n@@dnf-exit 100\n\
                    @@dnf-security\nCANOPY-LAB-2023-0004 Important/Sec. canopy-demo-ssl-1.0-2.noarch\n\
                    @@rpm\ncanopy-demo-ssl.noarch (none):1.0-1\ncanopy-demo-web.noarch (none):1.0-1\n@@end\n";
        let (_, report) = parse(text).unwrap();
        assert!(
            report.scanner_errors.is_empty(),
            "{:?}",
            report.scanner_errors
        );
        assert_eq!(report.updates.len(), 2);
        let ssl = report
            .updates
            .iter()
            .find(|u| u.package == "canopy-demo-ssl")
            .unwrap();
        assert_eq!(ssl.current_version, "1.0-1");
        assert_eq!(ssl.available_version, "1.0-2");
        assert_eq!(ssl.severity, canopy_api_types::updates::Severity::Security);
        assert_eq!(ssl.manager, canopy_api_types::updates::PackageManager::Dnf);
    }
}
