//! The lab as the lab tests see it: `.lab/lab.json` (path in CANOPY_LAB, written by
//! `cargo xtask lab up`), the static agent (CANOPY_AGENT_MUSL_BIN), and `docker` helpers
//! for its guests. Without the variables a lab test fails, unless CANOPY_SKIP_LAB=1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};

pub struct Lab {
    /// The parsed lab.json.
    pub json: serde_json::Value,
    pub agent_bin: String,
}

impl Lab {
    /// The lab from the environment; `None` (and a SKIPPED line naming `what`) when
    /// CANOPY_SKIP_LAB=1.
    pub fn from_env(what: &str) -> Option<Lab> {
        let (Ok(path), Ok(agent_bin)) = (
            std::env::var("CANOPY_LAB"),
            std::env::var("CANOPY_AGENT_MUSL_BIN"),
        ) else {
            if std::env::var("CANOPY_SKIP_LAB").as_deref() == Ok("1") {
                eprintln!("SKIPPED (CANOPY_SKIP_LAB=1): {what}");
                return None;
            }
            panic!("set CANOPY_LAB and CANOPY_AGENT_MUSL_BIN (cargo xtask test does), or CANOPY_SKIP_LAB=1");
        };
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let json = serde_json::from_str(&text).expect("lab.json is JSON");
        Some(Lab { json, agent_bin })
    }

    /// The Debian (apt) guests.
    pub fn guests(&self) -> Vec<String> {
        names(&self.json["guests"])
    }

    /// The dnf guests.
    pub fn dnf_guests(&self) -> Vec<String> {
        names(&self.dnf()["guests"])
    }

    /// The dnf section of lab.json (`dnf.guests`, `dnf.packages`, …).
    pub fn dnf(&self) -> &serde_json::Value {
        let dnf = &self.json["dnf"];
        assert!(
            dnf.is_object(),
            "lab.json has no \"dnf\" section: rebuild the lab with `cargo xtask lab up`"
        );
        dnf
    }
}

/// The PVE node stand-in of the lab (`pve` in lab.json): `ssh -i ssh_key -p PORT root@127.0.0.1
/// pct exec VMID -- …` reaches the guests, as on a real PVE node.
#[derive(Debug, Clone)]
pub struct PveLab {
    /// The guests' image (`canopy-lab/debian-systemd:bookworm`) and the node's.
    pub image: String,
    pub node_image: String,
    pub node: PveNode,
    /// The lab's private key (ed25519, no passphrase); its public half is root's
    /// authorized key on the node and on the guests with their own sshd.
    pub ssh_key: PathBuf,
    /// vmids 101–106, in order.
    pub guests: Vec<PveGuest>,
    /// The vmid under which the node's `pct` reaches the dnf guest (no systemd).
    pub dnf_vmid: u32,
    /// The vmid of the OpenRC guest (container `<node container>-ct108`, no systemd, no
    /// sudo); not in `guests`.
    pub openrc_vmid: u32,
    /// The PVE simulator cluster file for this node (`cluster lab`, guests 101–106), whose
    /// guest tasks act on the guest containers through `cargo xtask lab pve-action`.
    pub sim_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct PveNode {
    /// The PVE node name (`pve1`).
    pub name: String,
    pub container: String,
    /// The node's sshd on 127.0.0.1.
    pub ssh: SocketAddr,
    pub user: String,
}

#[derive(Debug, Clone)]
pub struct PveGuest {
    pub vmid: u32,
    pub container: String,
    pub hostname: String,
    /// False: sudo is not installed (deploy code must act as root).
    pub sudo: bool,
    /// The guest's own sshd, for SSH straight into it; `None`: through the node's pct only.
    pub ssh: Option<SocketAddr>,
}

impl PveLab {
    /// The guest with `vmid`; panics when the lab has none.
    pub fn guest(&self, vmid: u32) -> &PveGuest {
        self.guests
            .iter()
            .find(|g| g.vmid == vmid)
            .unwrap_or_else(|| panic!("the lab has no PVE guest {vmid}"))
    }
}

impl Lab {
    /// The PVE node stand-in and its guests; panics with "rebuild the lab" when lab.json
    /// predates them.
    pub fn pve(&self) -> PveLab {
        let pve = &self.json["pve"];
        assert!(
            pve.is_object(),
            "lab.json has no \"pve\" section: rebuild the lab with `cargo xtask lab up`"
        );
        let text = |v: &serde_json::Value, what: &str| -> String {
            v.as_str()
                .unwrap_or_else(|| panic!("lab.json pve.{what} is not a string: rebuild the lab"))
                .to_string()
        };
        let addr = |v: &serde_json::Value, what: &str| -> SocketAddr {
            text(v, what)
                .parse()
                .unwrap_or_else(|e| panic!("lab.json pve.{what}: {e}"))
        };
        let node = &pve["node"];
        let guests = pve["guests"]
            .as_array()
            .expect("lab.json pve.guests is a list")
            .iter()
            .map(|g| PveGuest {
                vmid: g["vmid"].as_u64().expect("pve guest vmid") as u32,
                container: text(&g["container"], "guests[].container"),
                hostname: text(&g["hostname"], "guests[].hostname"),
                sudo: g["sudo"].as_bool().expect("pve guest sudo"),
                ssh: (!g["ssh"].is_null()).then(|| addr(&g["ssh"], "guests[].ssh")),
            })
            .collect();
        PveLab {
            image: text(&pve["image"], "image"),
            node_image: text(&pve["node_image"], "node_image"),
            node: PveNode {
                name: text(&node["name"], "node.name"),
                container: text(&node["container"], "node.container"),
                ssh: addr(&node["ssh"], "node.ssh"),
                user: text(&node["user"], "node.user"),
            },
            ssh_key: PathBuf::from(text(&pve["ssh_key"], "ssh_key")),
            dnf_vmid: pve["dnf_vmid"]
                .as_u64()
                .expect("lab.json pve.dnf_vmid: rebuild the lab with `cargo xtask lab up`")
                as u32,
            openrc_vmid: pve["openrc_vmid"]
                .as_u64()
                .expect("lab.json pve.openrc_vmid: rebuild the lab with `cargo xtask lab up`")
                as u32,
            sim_file: PathBuf::from(text(&pve["sim_file"], "sim_file")),
            guests,
        }
    }
}

fn names(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .expect("lab.json lists guests")
        .iter()
        .map(|g| {
            g.as_str()
                .or_else(|| g["name"].as_str())
                .expect("guest name")
                .to_string()
        })
        .collect()
}

/// `docker ARGS`; panics with its output unless it succeeds; returns stdout.
pub fn docker(args: &[&str]) -> String {
    let out = docker_output(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `docker ARGS`, whatever its exit status.
pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

/// Copies the agent into `guest` and removes what an earlier run left (registration, cache,
/// a running agent).
pub fn install_agent(lab: &Lab, guest: &str) {
    docker(&[
        "cp",
        &lab.agent_bin,
        &format!("{guest}:/usr/local/bin/canopy-agent"),
    ]);
    stop_agent(guest);
    let _ = docker_output(&[
        "exec",
        guest,
        "rm",
        "-rf",
        "/etc/canopy-agent",
        "/var/lib/canopy-agent",
        "/var/log/canopy-agent.log",
    ]);
}

/// `canopy-agent run` in the background, logging to /var/log/canopy-agent.log.
pub fn start_agent(guest: &str) {
    docker(&[
        "exec",
        "-d",
        "-e",
        "RUST_LOG=info",
        guest,
        "sh",
        "-c",
        "exec canopy-agent run >>/var/log/canopy-agent.log 2>&1",
    ]);
}

pub fn stop_agent(guest: &str) {
    let _ = docker_output(&["exec", guest, "pkill", "-f", "canopy-agent run"]);
}

/// The agent's log in `guest`, without terminal colour codes.
pub fn agent_log(guest: &str) -> String {
    let out = docker_output(&["exec", guest, "cat", "/var/log/canopy-agent.log"]);
    strip_ansi(&String::from_utf8_lossy(&out.stdout))
}

/// Drops `ESC [ … letter` sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `script` run by `sh -c` in `container`: its stdout, trimmed (a failure panics, naming it).
pub fn in_guest(container: &str, script: &str) -> String {
    docker(&["exec", container, "sh", "-c", script])
        .trim()
        .to_string()
}

/// `dpkg-query`'s version of `package` in `guest` ("" when it is not installed).
pub fn dpkg_version(guest: &str, package: &str) -> String {
    let out = docker_output(&[
        "exec",
        guest,
        "dpkg-query",
        "-W",
        "-f",
        "${Version}",
        package,
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copy the agent into `guest`, register it with a fresh token, start `canopy-agent run`.
pub async fn enrol_guest(app: &super::TestApp, lab: &Lab, guest: &str) {
    install_agent(lab, guest);
    let token = app.registration_token(1).await;
    let out = docker(&[
        "exec",
        "-e",
        &format!("CANOPY_REGISTRATION_TOKEN={token}"),
        guest,
        "canopy-agent",
        "register",
        "--server",
        &app.base,
    ]);
    assert!(
        !out.contains(&token),
        "the registration token must not be echoed"
    );
    start_agent(guest);
}

/// Publish `package` `version` into suite `suite` of the lab's apt repository (through
/// `cargo xtask lab publish`, whose binary `cargo xtask test` exports as CANOPY_XTASK_BIN).
pub fn publish(suite: &str, package: &str, version: &str) {
    let xtask = std::env::var("CANOPY_XTASK_BIN").expect(
        "CANOPY_XTASK_BIN (cargo xtask test exports it) to publish into the lab repository",
    );
    let out = Command::new(&xtask)
        .args(["lab", "publish", suite, package, version])
        .output()
        .expect("the xtask binary runs");
    assert!(
        out.status.success(),
        "lab publish failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Point `guest` at suite `suite` of the lab repository and refresh its lists.
pub fn use_suite(lab: &Lab, guest: &str, suite: &str) {
    let url = lab.json["repo_url"].as_str().expect("lab.json repo_url");
    docker(&[
        "exec",
        guest,
        "sh",
        "-c",
        &format!(
            "echo 'deb [trusted=yes] {url} {suite} main' > /etc/apt/sources.list.d/{suite}.list && apt-get -q update"
        ),
    ]);
}

/// [`publish`], and point `guest` at that suite: the repository moved on, for this guest
/// only.
pub fn publish_to_guest(lab: &Lab, guest: &str, suite: &str, package: &str, version: &str) {
    publish(suite, package, version);
    use_suite(lab, guest, suite);
}

/// Undo [`publish_to_guest`] in the guest (its lists forget the suite again).
pub fn unpublish_from_guest(guest: &str, suite: &str) {
    docker(&[
        "exec",
        guest,
        "sh",
        "-c",
        &format!("rm -f /etc/apt/sources.list.d/{suite}.list && apt-get -q update"),
    ]);
}

/// Deploys through the lab's node stand-in to its six systemd guests, 106 straight over SSH:
/// the `[deploy]` settings a server needs for that.
pub fn deploy_settings(s: &mut canopy_server::settings::Settings, lab: &Lab, pve: &PveLab) {
    let direct = pve.guest(106).ssh.expect("guest 106 has its own sshd");
    s.deploy.agent_binary = Some(lab.agent_bin.clone().into());
    s.deploy.ssh_key_file = Some(pve.ssh_key.clone());
    s.deploy.nodes = std::collections::BTreeMap::from([(
        "lab/pve1".into(),
        pve.node.ssh.to_string().parse().unwrap(),
    )]);
    s.deploy.direct = std::collections::BTreeMap::from([(
        "lab/106".into(),
        canopy_server::settings::DirectSsh {
            address: direct.to_string().parse().unwrap(),
            user: "root".into(),
            key_file: None,
        },
    )]);
    s.deploy.checkin_timeout_secs = 90;
}
