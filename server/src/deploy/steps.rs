//! Installing, upgrading, repairing and removing the agent in one guest, step by step,
//! through a [`Shell`]. Each step names itself to the caller (progress is data), and every
//! failure says which step and why.
//!
//! Idempotent by inspection: the guest is probed first (agent checksum, registration,
//! service state, whether the server knows the host), and only what is missing is done.

use super::shell::Shell;
use super::ssh::quote;
use anyhow::{bail, Context, Result};
use canopy_api_types::deploy::DeployOutcome;
use canopy_api_types::{GuestId, HostId};
use std::collections::HashMap;
use std::path::PathBuf;

pub const AGENT_PATH: &str = "/usr/local/bin/canopy-agent";
pub const CONFIG_DIR: &str = "/etc/canopy-agent";
pub const STATE_DIR: &str = "/var/lib/canopy-agent";
/// The dedicated system user, where the guest has sudo.
pub const AGENT_USER: &str = "canopy-agent";
const TOKEN_FILE: &str = "/etc/canopy-agent/registration.token";
const UNIT_PATH: &str = "/etc/systemd/system/canopy-agent.service";
const OPENRC_PATH: &str = "/etc/init.d/canopy-agent";
/// The OpenRC service's log (systemd has the journal).
const LOG_PATH: &str = "/var/log/canopy-agent.log";
const SUDOERS_PATH: &str = "/etc/sudoers.d/canopy-agent";

/// The agent binary the server pushes.
#[derive(Debug, Clone)]
pub struct AgentBinary {
    pub path: PathBuf,
    /// SHA-256 hex.
    pub sha256: String,
    pub version: String,
    /// `uname -m` of the machines it runs on.
    pub arch: String,
}

/// What the steps need from the server.
#[async_trait::async_trait]
pub trait Enrolment: Send + Sync {
    /// A fresh single-use registration token bound to `guest` (the secret).
    async fn registration_token(&self, guest: Option<GuestId>) -> Result<String>;
    /// The host is known to the server and is not an agentless record.
    async fn knows_host(&self, host: HostId) -> Result<bool>;
    /// Waits until the host checks in after `since`; errors after the timeout.
    async fn wait_checkin(&self, host: HostId, since: chrono::DateTime<chrono::Utc>) -> Result<()>;
}

pub struct Job<'a> {
    pub shell: &'a Shell,
    pub agent: &'a AgentBinary,
    pub guest: Option<GuestId>,
    pub server_url: &'a str,
    /// Pinned by the agent (`register --fingerprint`) when there is no CA.
    pub server_fingerprint: Option<canopy_tls::Fingerprint>,
    pub ca_pem: Option<&'a str>,
    pub enrol: &'a dyn Enrolment,
}

/// A finished item.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub outcome: DeployOutcome,
    pub host_id: Option<HostId>,
    pub run_as: Option<String>,
    pub message: Option<String>,
}

/// What the probe found in the guest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Probe {
    pub os_id: String,
    pub os_pretty: String,
    pub arch: String,
    /// `systemd` | `openrc` | `none`.
    pub init: String,
    pub sudo: bool,
    pub agent_sha: Option<String>,
    pub agent_version: Option<String>,
    pub host_id: Option<HostId>,
    /// `active` when the service runs.
    pub service: String,
    /// The `User=` of the installed unit (`root` when none).
    pub run_as: Option<String>,
}

const PROBE: &str = r#"
echo "arch=$(uname -m)"
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then echo init=systemd
elif command -v rc-service >/dev/null 2>&1; then echo init=openrc
else echo init=none; fi
if command -v sudo >/dev/null 2>&1; then echo sudo=yes; else echo sudo=no; fi
if [ -x /usr/local/bin/canopy-agent ]; then
  echo "agent_sha=$(sha256sum /usr/local/bin/canopy-agent | cut -d' ' -f1)"
  echo "agent_version=$(/usr/local/bin/canopy-agent --version 2>/dev/null | head -n1)"
fi
if [ -s /etc/canopy-agent/agent.token ] && [ -f /etc/canopy-agent/agent.toml ]; then
  echo "host_id=$(sed -n 's/^host_id *= *"\(.*\)"/\1/p' /etc/canopy-agent/agent.toml)"
fi
if [ -f /etc/systemd/system/canopy-agent.service ]; then
  echo "service=$(systemctl is-active canopy-agent 2>/dev/null)"
  echo "run_as=$(sed -n 's/^User=//p' /etc/systemd/system/canopy-agent.service)"
elif [ -f /etc/init.d/canopy-agent ]; then
  if rc-service canopy-agent status >/dev/null 2>&1; then echo service=active; else echo service=inactive; fi
  echo "run_as=$(sed -n 's/^command_user="\(.*\)"/\1/p' /etc/init.d/canopy-agent)"
fi
"#;

/// `KEY=value` lines, `"quotes"` removed (os-release and the probe).
pub fn key_values(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

impl Probe {
    fn parse(os_release: &str, probe: &str) -> Probe {
        let os = key_values(os_release);
        let p = key_values(probe);
        let get = |k: &str| p.get(k).filter(|v| !v.is_empty()).cloned();
        Probe {
            os_id: os.get("ID").cloned().unwrap_or_default(),
            os_pretty: os.get("PRETTY_NAME").cloned().unwrap_or_default(),
            arch: get("arch").unwrap_or_default(),
            init: get("init").unwrap_or_else(|| "none".into()),
            sudo: get("sudo").as_deref() == Some("yes"),
            agent_sha: get("agent_sha"),
            agent_version: get("agent_version"),
            host_id: get("host_id").and_then(|h| h.parse().ok()),
            service: get("service").unwrap_or_default(),
            run_as: get("service").map(|_| get("run_as").unwrap_or_else(|| "root".into())),
        }
    }
}

/// Reads the guest: `cat /etc/os-release` (its own step), then the probe.
pub async fn probe(shell: &Shell, step: &(dyn Fn(&'static str) + Sync)) -> Result<Probe> {
    step("detect-os");
    let os = shell
        .ok("cat /etc/os-release", "cat /etc/os-release", None)
        .await?;
    step("probe");
    let p = shell.ok("probing the guest", PROBE, None).await?;
    Ok(Probe::parse(&os, &p))
}

/// Installs, upgrades or repairs the agent; a no-op when it runs at this version and the
/// server hears from it.
pub async fn deploy(job: &Job<'_>, step: &(dyn Fn(&'static str) + Sync)) -> Result<Done> {
    let shell = job.shell;
    let p = probe(shell, step).await?;
    if p.arch != job.agent.arch {
        bail!(
            "the guest is {} and the agent binary is built for {}",
            p.arch,
            job.agent.arch
        );
    }
    if p.init == "none" {
        bail!(
            "no service manager in the guest ({}): neither systemd nor OpenRC was found",
            pretty(&p)
        );
    }
    let same_binary = p.agent_sha.as_deref() == Some(job.agent.sha256.as_str());
    let known = match p.host_id {
        Some(h) => job.enrol.knows_host(h).await?,
        None => false,
    };
    if same_binary && known && p.service == "active" {
        return Ok(Done {
            outcome: DeployOutcome::Unchanged,
            host_id: p.host_id,
            run_as: p.run_as,
            message: Some(format!("agent {} already running", job.agent.version)),
        });
    }
    let outcome = match &p.agent_sha {
        None => DeployOutcome::Installed,
        Some(_) if !same_binary => DeployOutcome::Upgraded,
        Some(_) => DeployOutcome::Repaired,
    };

    if !same_binary {
        step("push");
        let staged = format!("{AGENT_PATH}.new");
        shell
            .push_executable(&job.agent.path, &job.agent.sha256, &staged)
            .await?;
        step("verify");
        let sha = shell
            .ok(
                "checksumming the pushed agent",
                &format!("sha256sum {staged} | cut -d' ' -f1"),
                None,
            )
            .await?;
        if sha.trim() != job.agent.sha256 {
            bail!(
                "the agent pushed into the guest has SHA-256 {}, expected {}",
                sha.trim(),
                job.agent.sha256
            );
        }
        shell
            .ok(
                "moving the agent into place",
                &format!("mv -f {staged} {AGENT_PATH}"),
                None,
            )
            .await?;
    }

    step("user");
    let run_as = if p.sudo {
        create_user(shell).await?;
        AGENT_USER
    } else {
        "root"
    };

    let host_id = match p.host_id.filter(|_| known) {
        Some(h) => h,
        None => {
            step("register");
            register(job, run_as).await?
        }
    };

    step("service");
    let since = chrono::Utc::now();
    install_service(shell, &p.init, run_as).await?;

    step("check-in");
    job.enrol.wait_checkin(host_id, since).await?;

    let mut notes = Vec::new();
    if outcome == DeployOutcome::Upgraded {
        notes.push(format!(
            "upgraded from {} to {}",
            p.agent_version.as_deref().unwrap_or("an unknown version"),
            job.agent.version
        ));
    }
    if run_as == "root" {
        notes.push("runs as root: the guest has no sudo".into());
    }
    Ok(Done {
        outcome,
        host_id: Some(host_id),
        run_as: Some(run_as.into()),
        message: (!notes.is_empty()).then(|| notes.join("; ")),
    })
}

fn pretty(p: &Probe) -> &str {
    if p.os_pretty.is_empty() {
        &p.os_id
    } else {
        &p.os_pretty
    }
}

/// The dedicated system user and its one sudoers rule: the agent's root helper, nothing else.
/// The binary the rule names is made root-owned and not writable by anyone else (whoever can
/// replace it is root). The user joins the `docker` group only where Docker is present, since
/// access to the Docker socket is root-equivalent.
async fn create_user(shell: &Shell) -> Result<()> {
    shell
        .ok(
            "creating the canopy-agent user",
            &format!(
                "id -u {AGENT_USER} >/dev/null 2>&1 || \
                 useradd --system --user-group --home-dir {STATE_DIR} --shell /usr/sbin/nologin {AGENT_USER} 2>/dev/null || \
                 adduser -S -D -H -h {STATE_DIR} -s /sbin/nologin {AGENT_USER}"
            ),
            None,
        )
        .await?;
    shell
        .ok(
            "making the agent's helper root-owned",
            &format!("chown root:root {AGENT_PATH} && chmod 0755 {AGENT_PATH}"),
            None,
        )
        .await?;
    shell
        .ok(
            "giving the agent user Docker access where Docker is present",
            &format!(
                "if command -v docker >/dev/null 2>&1 && grep -q '^docker:' /etc/group; then \
                 usermod -aG docker {AGENT_USER} 2>/dev/null || addgroup {AGENT_USER} docker; fi"
            ),
            None,
        )
        .await?;
    let rule = sudoers();
    shell
        .ok(
            "installing the sudoers rule",
            &format!(
                "set -e; umask 077; t={SUDOERS_PATH}.canopy-tmp; cat > $t; chmod 0440 $t; \
                 visudo -cf $t >/dev/null; mv -f $t {SUDOERS_PATH}"
            ),
            Some(rule.into_bytes()),
        )
        .await?;
    Ok(())
}

/// The sudoers rule of the agent user: its root helper (`canopy-agent helper VERB …`, which
/// accepts only its own verbs with validated package names and versions and builds every
/// package-manager command itself), by full path, nothing else. No `env_keep`: the helper
/// sets the environment of what it runs. No pty: the helper's output is piped to the agent,
/// and sudo relays the agent's SIGTERM to it.
pub fn sudoers() -> String {
    format!(
        "# Written by Canopy: the agent may run only its root helper as root. The helper accepts\n\
         # its own verbs (refresh, simulate, install pinned versions, upgrade, audit, repair) with\n\
         # validated package names and versions, and builds the package-manager commands itself.\n\
         Defaults:{AGENT_USER} !requiretty, !use_pty\n\
         {AGENT_USER} ALL=(root) NOPASSWD: {AGENT_PATH} helper *\n"
    )
}

/// A registration token bound to the guest goes in through stdin; the agent registers and
/// deletes it. Returns the host id the server assigned.
async fn register(job: &Job<'_>, run_as: &str) -> Result<HostId> {
    let shell = job.shell;
    let token = job.enrol.registration_token(job.guest).await?;
    shell
        .ok(
            "preparing the agent's directories",
            &format!("mkdir -p -m 0700 {CONFIG_DIR} {STATE_DIR}"),
            None,
        )
        .await?;
    shell
        .write_file(TOKEN_FILE, "0600", format!("{token}\n").as_bytes())
        .await?;
    if let Some(ca) = job.ca_pem {
        shell.write_file(CA_FILE, "0644", ca.as_bytes()).await?;
    }
    let register = register_command(job.server_url, job.ca_pem.is_some(), job.server_fingerprint);
    let out = shell.run(&register, None).await?;
    if !out.success() {
        bail!(
            "the agent could not register with {}: {}",
            job.server_url,
            out.tail()
        );
    }
    if run_as != "root" {
        shell
            .ok(
                "handing the agent's files to its user",
                &format!("chown -R {run_as}:{run_as} {CONFIG_DIR} {STATE_DIR}"),
                None,
            )
            .await?;
    }
    let id = shell
        .ok(
            "reading the registered host id",
            &format!("sed -n 's/^host_id *= *\"\\(.*\\)\"/\\1/p' {CONFIG_DIR}/agent.toml"),
            None,
        )
        .await?;
    id.trim()
        .parse()
        .with_context(|| format!("the agent config holds no host id after registering ({id:?})"))
}

/// Where a configured server CA goes in the guest.
const CA_FILE: &str = "/etc/canopy-agent/server-ca.pem";

/// `canopy-agent register …` with the server's pin: its CA file, else its fingerprint.
fn register_command(
    server_url: &str,
    ca: bool,
    fingerprint: Option<canopy_tls::Fingerprint>,
) -> String {
    let mut register = format!(
        "{AGENT_PATH} register --server {} --token-file {TOKEN_FILE}",
        quote(server_url)
    );
    match (ca, fingerprint) {
        (true, _) => register.push_str(&format!(" --ca-file {CA_FILE}")),
        (false, Some(fp)) => register.push_str(&format!(" --fingerprint {fp}")),
        (false, None) => {}
    }
    register
}

/// The systemd unit (or OpenRC script), enabled and (re)started.
async fn install_service(shell: &Shell, init: &str, run_as: &str) -> Result<()> {
    let (path, mode, content, start) = match init {
        "systemd" => (
            UNIT_PATH,
            "0644",
            systemd_unit(run_as),
            "systemctl daemon-reload && systemctl enable canopy-agent >/dev/null 2>&1 && systemctl restart canopy-agent",
        ),
        "openrc" => (
            OPENRC_PATH,
            "0755",
            openrc_script(run_as),
            "rc-update add canopy-agent default >/dev/null && rc-service canopy-agent restart",
        ),
        other => bail!("no supported service manager in the guest ({other})"),
    };
    shell.write_file(path, mode, content.as_bytes()).await?;
    shell
        .ok("starting the agent service", start, None)
        .await
        .map(drop)
}

pub fn systemd_unit(run_as: &str) -> String {
    format!(
        "# Written by Canopy.\n\
         [Unit]\n\
         Description=Canopy update agent\n\
         After=network-online.target\n\
         Wants=network-online.target\n\n\
         [Service]\n\
         User={run_as}\n\
         ExecStart={AGENT_PATH} run\n\
         Environment=RUST_LOG=info\n\
         Restart=always\n\
         RestartSec=5\n\n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// The OpenRC script. Logs go to `LOG_PATH` through `--output` where start-stop-daemon is
/// Debian's (dpkg's, which has no `--stdout`/`--stderr` for `output_log`/`error_log`), through
/// `output_log`/`error_log` elsewhere. `use net`, not `need net`: containers often have no `net`
/// service, and `need` on a missing one refuses to start.
pub fn openrc_script(run_as: &str) -> String {
    format!(
        "#!/sbin/openrc-run\n\
         # Written by Canopy.\n\
         description=\"Canopy update agent\"\n\
         command=\"{AGENT_PATH}\"\n\
         command_args=\"run\"\n\
         command_user=\"{run_as}\"\n\
         command_background=true\n\
         pidfile=\"/run/canopy-agent.pid\"\n\
         export RUST_LOG=info\n\
         if start-stop-daemon --help 2>&1 | grep -q -e --output; then\n\
         \tstart_stop_daemon_args=\"--output {LOG_PATH}\"\n\
         else\n\
         \toutput_log=\"{LOG_PATH}\"\n\
         \terror_log=\"{LOG_PATH}\"\n\
         fi\n\
         start_pre() {{ checkpath -f -m 0640 -o {run_as} {LOG_PATH}; }}\n\
         depend() {{ use net; }}\n"
    )
}

/// Stops and removes the agent, its service, sudoers rule, user and files.
pub async fn uninstall(shell: &Shell, step: &(dyn Fn(&'static str) + Sync)) -> Result<Done> {
    let p = probe(shell, step).await?;
    if p.agent_sha.is_none() && p.service.is_empty() {
        return Ok(Done {
            outcome: DeployOutcome::Absent,
            host_id: None,
            run_as: None,
            message: Some("no agent installed".into()),
        });
    }
    step("remove");
    shell
        .ok(
            "removing the agent",
            &format!(
                "if [ -f {UNIT_PATH} ]; then systemctl disable --now canopy-agent >/dev/null 2>&1 || true; rm -f {UNIT_PATH}; systemctl daemon-reload; fi; \
                 if [ -f {OPENRC_PATH} ]; then rc-service canopy-agent stop >/dev/null 2>&1 || true; rc-update del canopy-agent default >/dev/null 2>&1 || true; rm -f {OPENRC_PATH} {LOG_PATH}; fi; \
                 rm -f {AGENT_PATH} {AGENT_PATH}.new {SUDOERS_PATH}; rm -rf {CONFIG_DIR} {STATE_DIR}; \
                 if id -u {AGENT_USER} >/dev/null 2>&1; then userdel {AGENT_USER} 2>/dev/null || deluser {AGENT_USER} 2>/dev/null || true; fi"
            ),
            None,
        )
        .await?;
    // The host id in the guest's config may belong to another server: not recorded.
    Ok(Done {
        outcome: DeployOutcome::Uninstalled,
        host_id: None,
        run_as: None,
        message: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_understood() {
        let p = Probe::parse(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
            "arch=x86_64\ninit=systemd\nsudo=no\nagent_sha=abc\nagent_version=canopy-agent 0.1.0\n\
             host_id=6f1c2a56-0000-4000-8000-000000000001\nservice=inactive\nrun_as=\n",
        );
        assert_eq!(p.os_id, "debian");
        assert_eq!(p.os_pretty, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(p.init, "systemd");
        assert!(!p.sudo);
        assert_eq!(p.agent_sha.as_deref(), Some("abc"));
        assert!(p.host_id.is_some());
        assert_eq!(p.service, "inactive");
        assert_eq!(p.run_as.as_deref(), Some("root"), "no User= means root");
        let bare = Probe::parse("ID=alpine\n", "arch=x86_64\ninit=openrc\nsudo=no\n");
        assert_eq!(bare.agent_sha, None);
        assert_eq!(bare.run_as, None);
    }

    #[test]
    fn registration_pins_the_server_by_ca_or_fingerprint() {
        let fp = canopy_tls::Fingerprint::of_der(b"server certificate");
        let url = "https://canopy.lan:8443";
        let pinned = register_command(url, false, Some(fp));
        assert!(
            pinned.ends_with(&format!(" --fingerprint {fp}")),
            "{pinned}"
        );
        assert!(
            pinned.contains("--server 'https://canopy.lan:8443'")
                || pinned.contains("--server https://canopy.lan:8443"),
            "{pinned}"
        );
        let ca = register_command(url, true, Some(fp));
        assert!(
            ca.ends_with(" --ca-file /etc/canopy-agent/server-ca.pem"),
            "{ca}"
        );
        assert!(!ca.contains("--fingerprint"), "{ca}");
        let plain = register_command("http://127.0.0.1:8080", false, None);
        assert!(
            !plain.contains("--fingerprint") && !plain.contains("--ca-file"),
            "{plain}"
        );
    }

    #[test]
    fn service_files_name_the_user_and_the_binary() {
        let unit = systemd_unit("canopy-agent");
        assert!(unit.contains("User=canopy-agent\n"));
        assert!(unit.contains("ExecStart=/usr/local/bin/canopy-agent run\n"));
        let script = openrc_script("root");
        assert!(script.contains("command_user=\"root\""));
        assert!(
            script.contains("depend() { use net; }"),
            "containers may have no net"
        );
        let rule = sudoers();
        let grants: Vec<&str> = rule
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("NOPASSWD"))
            .collect();
        assert_eq!(
            grants,
            ["canopy-agent ALL=(root) NOPASSWD: /usr/local/bin/canopy-agent helper *"],
            "one rule, for the helper only"
        );
        for gone in ["apt-get", "dnf", "apk", "docker", "env_keep"] {
            assert!(!rule.contains(gone), "{gone} in {rule}");
        }
    }
}
