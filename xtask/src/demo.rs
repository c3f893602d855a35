//! `cargo xtask demo`: a running Canopy with one enrolled agent, in the foreground.
//!
//! Builds `canopy` and `canopy-agent` (release), starts `canopy serve` over HTTPS (its
//! self-signed certificate, generated in the data dir) on SQLite in a fresh /tmp/canopy-demo
//! with a random admin password, logs in with the CLI pinning the fingerprint the server
//! printed, creates a registration token and enrols an agent pinned the same way: inside a lab
//! guest (static musl agent) when a Docker engine answers (unless `--no-docker`), else on this
//! machine in read-only mode. Prints the URL, the fingerprint, the login and a few commands to
//! try, then waits for Ctrl-C. A detached watchdog stops the server, the agent and the lab once
//! xtask is gone, however it ended.
//!
//! The server starts with a config file that keeps `canopy agent deploy` on 127.0.0.1
//! (`demo/deploy.rs`).

mod deploy;

use crate::proc::{cmd, poll};
use crate::{dockerd, lab, state, test};
use anyhow::{bail, Context, Result};
use deploy::{deploy_config, lab_pve_node, sim_nodes, LabRoute, NOWHERE};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const STATE: &str = "/tmp/canopy-demo";

pub fn run(args: &[&str]) -> Result<()> {
    let docker = match args {
        [] => dockerd::engine_up(),
        ["--no-docker"] => false,
        other => bail!("usage: cargo xtask demo [--no-docker] (got {other:?})"),
    };
    if docker && std::env::var_os("CANOPY_LAB_INSTANCE").is_none() {
        // A lab of its own, so the demo never replaces the guests tests may be using; the
        // watchdog inherits this and tears down only the demo's lab.
        std::env::set_var("CANOPY_LAB_INSTANCE", "demo");
    }
    let root = state::repo_root()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    cmd(
        &cargo,
        [
            "build",
            "--release",
            "-p",
            "canopy-server",
            "-p",
            "canopy-agent",
            "-p",
            "canopy-pve-sim",
        ],
    )
    .current_dir(&root)
    .timeout(Duration::from_secs(40 * 60))
    .stream()?;
    let release = test::target_dir(&root)?.join("release");
    let canopy = release.join("canopy");
    let agent = if docker {
        test::build_musl_agent(&root)?
    } else {
        release.join("canopy-agent")
    };

    let dir = PathBuf::from(STATE);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data"))?;
    let password = random_hex(12)?;
    let pw_file = dir.join("admin-password");
    std::fs::write(&pw_file, format!("{password}\n"))?;
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600))?;
    let session = dir.join("session.json");

    let sim_file = root.join("examples/sim/home.toml");
    let sim_nodes = sim_nodes(
        &std::fs::read_to_string(&sim_file)
            .with_context(|| format!("read {}", sim_file.display()))?,
    )
    .with_context(|| format!("the node names in {}", sim_file.display()))?;
    // The lab comes first: the server's config routes deploys to its PVE node stand-in.
    let lab_json = if docker {
        watchdog(&[], docker)?; // takes the lab down should xtask end before the server starts
        Some(std::fs::read_to_string(lab::up(1)?)?)
    } else {
        None
    };
    let lab_node = match &lab_json {
        Some(json) => Some(lab_pve_node(json)?),
        None => None,
    };

    let port = first_free_port(8080)?;
    let url = format!("https://127.0.0.1:{port}");
    let config = dir.join("canopy.toml");
    let route = lab_node.as_ref().map(|n| LabRoute {
        node_ssh: &n.ssh,
        ssh_key: &n.ssh_key,
        agent: &agent,
    });
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&config)
        .and_then(|mut f| f.write_all(deploy_config(&url, &sim_nodes, route).as_bytes()))
        .with_context(|| format!("write {}", config.display()))?;
    let log = std::fs::File::create(dir.join("server.log"))?;
    let mut server = Command::new(&canopy)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        // The file's [deploy] wins: these would override it from the caller's environment.
        .env_remove("CANOPY_DEPLOY_SERVER_URL")
        .env_remove("CANOPY_DEPLOY_SSH_KEY_FILE")
        .env_remove("CANOPY_DEPLOY_AGENT_BINARY")
        .env(
            "CANOPY_DATABASE_URL",
            format!("sqlite://{}", dir.join("canopy.db").display()),
        )
        .env("CANOPY_LISTEN", format!("127.0.0.1:{port}"))
        // HTTPS on loopback too, with the self-signed certificate: what agents pin.
        .env("CANOPY_TLS", "on")
        .env_remove("CANOPY_TLS_CERT_FILE")
        .env_remove("CANOPY_TLS_KEY_FILE")
        .env("CANOPY_DATA_DIR", dir.join("data"))
        .env("CANOPY_ADMIN_PASSWORD_FILE", &pw_file)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {}", canopy.display()))?;
    let mut children: Vec<u32> = vec![server.id()];
    watchdog(&children, docker)?;
    // Listening once it prints the fingerprint of the certificate it serves.
    let mut fingerprint = None;
    if !poll(Duration::from_secs(30), Duration::from_millis(200), || {
        fingerprint = printed_fingerprint(&dir.join("server.log"));
        fingerprint.is_some() || matches!(server.try_wait(), Ok(Some(_)))
    }) || fingerprint.is_none()
    {
        let _ = server.kill();
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        bail!(
            "canopy serve printed no TLS certificate fingerprint within 30 s:\n{}",
            crate::proc::tail(&log, 20)
        );
    }
    let fingerprint = fingerprint.unwrap_or_default();

    let canopy_s = canopy.to_string_lossy().into_owned();
    let pw_s = pw_file.to_string_lossy().into_owned();
    cmd(
        &canopy_s,
        [
            "login",
            "--server",
            &url,
            "--username",
            "admin",
            "--password-file",
            &pw_s,
            "--fingerprint",
            &fingerprint,
        ],
    )
    .env("CANOPY_SESSION", &session)
    .output()?;
    let token_json = cmd(&canopy_s, ["token", "create", "--seats", "5", "--json"])
        .env("CANOPY_SESSION", &session)
        .output()?;
    let token = json_string_field(&token_json, "token").with_context(|| {
        format!("no \"token\" in `canopy token create --json` output: {token_json}")
    })?;

    // The simulated Proxmox estate (examples/sim/home.toml), added as clusters.
    let (sim, clusters) = start_sim(&release, &root, &dir)?;
    children.push(sim.id());
    watchdog(&children, docker)?;
    if let Some(c) = clusters
        .iter()
        .find(|c| !sim_nodes.iter().any(|(name, _)| *name == c.name))
    {
        bail!(
            "the simulator serves cluster {:?}, which {} does not list: its nodes would be \
             deployed to at their LAN addresses",
            c.name,
            sim_file.display()
        );
    }
    for c in &clusters {
        cmd(
            &canopy_s,
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
        .env("CANOPY_SESSION", &session)
        .env("CANOPY_PVE_TOKEN", &c.token)
        .output()?;
    }

    let mut agent_child: Option<Child> = None;
    let where_agent = if let Some(lab_json) = &lab_json {
        let guests = lab_json
            .find("\"guests\"")
            .map(|i| &lab_json[i + 8..])
            .unwrap_or("");
        let guest = json_array_first(guests).context("lab.json lists no guest")?;
        let guest = guest.as_str();
        let dest = format!("{guest}:/usr/local/bin/canopy-agent");
        cmd("docker", ["cp", &agent.to_string_lossy(), &dest]).output()?;
        cmd(
            "docker",
            [
                "exec",
                guest,
                "canopy-agent",
                "register",
                "--server",
                &url,
                "--token",
                &token,
                "--fingerprint",
                &fingerprint,
            ],
        )
        .output()?;
        cmd("docker", ["exec", "-d", guest, "canopy-agent", "run"]).output()?;
        format!("in the lab guest {guest} (docker exec {guest} canopy-agent status)")
    } else {
        let config = dir.join("agent/agent.toml");
        let config_s = config.to_string_lossy().into_owned();
        let state_s = dir.join("agent-state").to_string_lossy().into_owned();
        let agent_s = agent.to_string_lossy().into_owned();
        cmd(
            &agent_s,
            [
                "--config",
                &config_s,
                "register",
                "--server",
                &url,
                "--token",
                &token,
                "--fingerprint",
                &fingerprint,
                "--state-dir",
                &state_s,
                "--read-only",
            ],
        )
        .output()?;
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = Command::new(&agent)
            .args(["--config", &config_s, "run", "--read-only"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start canopy-agent run")?;
        children.push(child.id());
        watchdog(&children, docker)?;
        agent_child = Some(child);
        format!(
            "on this machine, read-only (log {}/agent.log)",
            dir.display()
        )
    };

    let session_s = session.display();
    let canopy_d = canopy.display();
    let deploy_line = match &lab_node {
        Some(node) => {
            // The simulated node named like the lab's: its LXCs 101 and 102 exist there.
            let (cluster, name) = sim_nodes
                .iter()
                .find_map(|(c, nodes)| nodes.iter().find(|n| **n == node.name).map(|n| (c, n)))
                .or_else(|| sim_nodes.first().and_then(|(c, n)| Some((c, n.first()?))))
                .context("examples/sim/home.toml has no node")?;
            format!(
                "{canopy_d} agent deploy 'cluster/{cluster}/node/{name}/**' --preview   \
                 # deploys go to the lab's PVE node {}",
                node.ssh
            )
        }
        None => format!(
            "{canopy_d} agent deploy 'cluster/{}/**' --preview   \
             # without Docker every node is {NOWHERE}: a deploy fails at once",
            sim_nodes[0].0
        ),
    };
    println!(
        "\nCanopy is running at {url}\n\
         TLS certificate SHA-256 fingerprint: {fingerprint}\n  \
           (self-signed, {state}/data/tls-cert.pem; the CLI and the agent pin it)\n\n\
         Log in as admin with the password in {pw} ({password}):\n  \
           {canopy_d} login --server {url} --username admin --fingerprint {fingerprint}\n\
         Agent enrolled {where_agent}, pinned to that fingerprint; server log {state}/server.log\n\n\
         Try:\n  \
           export CANOPY_SESSION={session_s}\n  \
           {canopy_d} tree              # the simulated Proxmox estate\n  \
           {canopy_d} tree '**[tag=prod]' --preview\n  \
           {canopy_d} hosts\n  \
           {canopy_d} updates\n  \
           {canopy_d} approve ID        # queues a dry-run\n  \
           {canopy_d} command ID        # the dry-run plan\n  \
           {canopy_d} confirm ID        # installs\n  \
           {deploy_line}\n\n\
         Ctrl-C stops everything.",
        pw = pw_file.display(),
        state = dir.display(),
    );
    loop {
        if let Some(status) = server.try_wait()? {
            // Ctrl-C reaches the server too (one process group): a clean exit is a stop.
            if status.success() {
                eprintln!("xtask: canopy stopped");
                return Ok(());
            }
            bail!(
                "canopy serve exited ({status}); see {}/server.log",
                dir.display()
            );
        }
        if let Some(child) = agent_child.as_mut() {
            if let Some(status) = child.try_wait()? {
                eprintln!(
                    "xtask: the agent exited ({status}); see {}/agent.log",
                    dir.display()
                );
                agent_child = None;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One cluster the simulator serves, as its `SIM …` line reports it.
struct SimCluster {
    name: String,
    url: String,
    fingerprint: String,
    token: String,
}

/// Start `canopy-pve-sim` on examples/sim/home.toml and read one `SIM` line per cluster.
fn start_sim(release: &Path, root: &Path, dir: &Path) -> Result<(Child, Vec<SimCluster>)> {
    use std::io::BufRead;
    let bin = release.join("canopy-pve-sim");
    let file = root.join("examples/sim/home.toml");
    let expected = std::fs::read_to_string(&file)
        .with_context(|| format!("read {}", file.display()))?
        .lines()
        .filter(|l| l.trim() == "[[clusters]]")
        .count();
    let mut child = Command::new(&bin)
        .arg("--file")
        .arg(&file)
        .arg("--tls-dir")
        .arg(dir.join("sim-tls"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join("sim.log"))?)
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
    let field = |line: &str, key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")).map(str::to_string))
    };
    let mut clusters = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while clusters.len() < expected {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            bail!(
                "the PVE simulator printed no cluster within 30 s; see {}/sim.log",
                dir.display()
            );
        };
        if let (Some(name), Some(url), Some(fingerprint), Some(token)) = (
            field(&line, "cluster"),
            field(&line, "url"),
            field(&line, "fingerprint"),
            field(&line, "token"),
        ) {
            clusters.push(SimCluster {
                name,
                url,
                fingerprint,
                token,
            });
        }
    }
    Ok((child, clusters))
}

/// A detached shell that waits for xtask to exit, then stops `pids` (and the lab).
/// Ctrl-C also reaches the children directly (same process group); this covers the rest.
fn watchdog(pids: &[u32], docker: bool) -> Result<()> {
    let dir = Path::new(STATE);
    let me = std::process::id();
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let exe = std::env::current_exe()?;
    let lab_down = if docker {
        format!("'{}' lab down", exe.display())
    } else {
        String::new()
    };
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -TERM {} 2>/dev/null; {lab_down}",
        pids.join(" ")
    );
    let pidfile = dir.join(format!("watchdog-{}.pid", pids.len()));
    state::spawn_detached(
        cmd("sh", ["-c", &script]),
        &dir.join("watchdog.log"),
        &pidfile,
    )?;
    Ok(())
}

/// The fingerprint `canopy serve` printed once it listens (`TLS certificate SHA-256
/// fingerprint: AA:BB:…`), from its log.
fn printed_fingerprint(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("TLS certificate SHA-256 fingerprint: ")
            .map(|f| f.trim().to_string())
            .filter(|f| f.len() == 32 * 3 - 1)
    })
}

fn first_free_port(start: u16) -> Result<u16> {
    (start..start + 100)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .with_context(|| format!("no free port on 127.0.0.1 from {start}"))
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The first string in the JSON array that starts `text` (after optional `:` and spaces).
fn json_array_first(text: &str) -> Option<String> {
    let rest = text
        .trim_start()
        .trim_start_matches(':')
        .trim_start()
        .strip_prefix('[')?;
    let rest = rest.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

/// The string value of `"key": "..."` in a JSON document (top-level or first occurrence).
fn json_string_field(json: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\"");
    let after = &json[json.find(&pat)? + pat.len()..];
    let after = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = after.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{json_array_first, json_string_field, printed_fingerprint};

    #[test]
    fn fingerprint_from_the_server_log() {
        let dir = std::env::temp_dir().join(format!("xtask-demo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("server.log");
        let fp = ["AB"; 32].join(":");
        std::fs::write(
            &log,
            "INFO starting\nCanopy is listening on https://127.0.0.1:8080\n",
        )
        .unwrap();
        assert_eq!(printed_fingerprint(&log), None);
        std::fs::write(
            &log,
            format!("Canopy is listening on https://127.0.0.1:8080\nTLS certificate SHA-256 fingerprint: {fp}\n"),
        )
        .unwrap();
        assert_eq!(printed_fingerprint(&log), Some(fp));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn token_field() {
        let j = r#"{"token": "cnp_abc\"d", "info": {"token": "no"}}"#;
        assert_eq!(json_string_field(j, "token").as_deref(), Some("cnp_abc\"d"));
        assert_eq!(json_string_field(j, "missing"), None);
        let lab = r#"{"guests": ["canopy-lab-demo-guest-1", "x"]}"#;
        let at = &lab[lab.find("\"guests\"").unwrap() + 8..];
        assert_eq!(
            json_array_first(at).as_deref(),
            Some("canopy-lab-demo-guest-1")
        );
    }
}
