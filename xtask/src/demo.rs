//! `cargo xtask demo`: a running Canopy with agents to try it on, in the foreground.
//!
//! By default the demo runs on the lab: it installs what it needs (`prereqs`, like `cargo
//! xtask test`), starts a Docker engine when none answers (and stops it on exit only if it
//! started it), builds the web dashboard (`cargo xtask ui`), `canopy`, `canopy-agent`, `canopy-pve-sim` (release) and the static musl
//! agent, and brings up its own lab instance (`CANOPY_LAB_INSTANCE=demo`, so the default lab
//! tests use is never touched). It starts `canopy serve` over HTTPS (its self-signed
//! certificate) on SQLite in a fresh /tmp/canopy-demo with a random admin password, logs in
//! with the CLI pinning the fingerprint the server printed, and adds two simulators: the
//! estate of examples/sim/home.toml (a picture: its nodes' deploys go nowhere) and the lab's
//! node pve1 (`pve.sim_file` of lab.json: cluster `lab`, guests 101–106 whose snapshots,
//! rollbacks and reboots act on the guest containers). Then `canopy agent deploy
//! 'cluster/lab/node/pve1/lxc/*' --yes` puts agents into the six LXCs, which start with old
//! package versions, and the banner shows the bulk update to try (`demo/lab.rs`).
//!
//! `--no-lab` (alias `--no-docker`) is the quick version without Docker: a read-only agent on
//! this machine, only the home estate.
//!
//! Prints the URL, the fingerprint, the login and commands to try, then waits for Ctrl-C. A
//! detached watchdog stops the server, the agent and the simulators (the pids in
//! /tmp/canopy-demo/pids), takes the demo's lab down and stops a Docker engine the demo
//! started, once xtask is gone, however it ended.
//!
//! The server starts with a config file that keeps `canopy agent deploy` on 127.0.0.1
//! (`demo/deploy.rs`).

mod deploy;
mod lab;
mod sim;

use crate::proc::{cmd, poll};
use crate::{dockerd, prereqs, state, test};
use anyhow::{bail, Context, Result};
use deploy::{deploy_config, lab_pve_node, sim_nodes, LabRoute, LAB_CLUSTER, NOWHERE};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STATE: &str = "/tmp/canopy-demo";
/// The lab instance the demo uses unless `CANOPY_LAB_INSTANCE` names another one.
const LAB_INSTANCE: &str = "demo";

pub fn run(args: &[&str]) -> Result<()> {
    let with_lab = match args {
        [] => true,
        ["--no-lab"] | ["--no-docker"] => false,
        other => {
            bail!("usage: cargo xtask demo [--no-lab] (--no-docker is the same) (got {other:?})")
        }
    };
    let started = Instant::now();
    if with_lab && std::env::var("CANOPY_LAB_INSTANCE").map_or(true, |i| i.is_empty()) {
        // A lab of its own, so the demo never replaces the guests tests may be using (an empty
        // value would mean the default lab); the watchdog and the simulator's action hook
        // inherit it.
        std::env::set_var("CANOPY_LAB_INSTANCE", LAB_INSTANCE);
    }
    let root = state::repo_root()?;
    if with_lab {
        prereqs::run(state::is_ci())?;
    }
    let dir = PathBuf::from(STATE);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("data"))?;
    let pids = dir.join("pids");
    std::fs::write(&pids, "")?;
    let docker_marker = dir.join("dockerd-started-by-demo");
    watchdog(&pids, with_lab, &docker_marker)?;
    if with_lab && dockerd::ensure()? {
        std::fs::write(&docker_marker, "")?;
    }

    // The dashboard first: `canopy` embeds frontend/dist when it is compiled.
    crate::ui::build(&root)?;
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
    let agent = if with_lab {
        test::build_musl_agent(&root)?
    } else {
        release.join("canopy-agent")
    };

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
    if sim_nodes.iter().any(|(c, _)| c == LAB_CLUSTER) {
        bail!(
            "{} has a cluster {LAB_CLUSTER:?}, the name of the lab's",
            sim_file.display()
        );
    }
    // The lab comes first: the server's config routes deploys to its PVE node stand-in.
    let lab_node = if with_lab {
        let json = std::fs::read_to_string(crate::lab::up(0)?)?;
        Some(lab_pve_node(&json)?)
    } else {
        None
    };

    let port = first_free_port(8080)?;
    let url = format!("https://127.0.0.1:{port}");
    let config = dir.join("canopy.toml");
    let route = lab_node.as_ref().map(|node| LabRoute {
        node,
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
    track(&pids, server.id())?;
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

    // The simulated Proxmox estate (examples/sim/home.toml), added as clusters.
    let (home_sim, clusters) = sim::start(
        &release.join("canopy-pve-sim"),
        &sim_file,
        &dir.join("sim-tls"),
        &dir.join("sim.log"),
    )?;
    track(&pids, home_sim.id())?;
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
    sim::add_clusters(&canopy_s, &session, &clusters)?;

    let mut agent_child: Option<Child> = None;
    let mut setup_secs = None;
    let where_agents = if let Some(node) = &lab_node {
        let lab_sim = lab::start_sim(&release, node, &dir, &canopy_s, &session)?;
        track(&pids, lab_sim.id())?;
        let secs = lab::deploy_agents(&canopy_s, &session, node)?;
        setup_secs = Some(secs);
        lab::banner(&canopy.display().to_string(), node)
    } else {
        let child = local_agent(&canopy_s, &session, &agent, &dir, &url, &fingerprint)?;
        track(&pids, child.id())?;
        agent_child = Some(child);
        format!(
            "Agent enrolled on this machine, read-only (log {}/agent.log), pinned to that \
             fingerprint.\n\
             Try a deploy: {} agent deploy 'cluster/{}/**' --preview   \
             # without the lab every node is {NOWHERE}: a deploy fails at once",
            dir.display(),
            canopy.display(),
            sim_nodes[0].0
        )
    };

    let session_s = session.display();
    let canopy_d = canopy.display();
    if let Some(secs) = setup_secs {
        eprintln!("xtask: demo: agents deployed and reporting in {secs:.0}s");
    }
    eprintln!(
        "xtask: demo: ready {:.0}s after it started",
        started.elapsed().as_secs_f64()
    );
    println!(
        "\nCanopy is running at {url}\n\
         TLS certificate SHA-256 fingerprint: {fingerprint}\n  \
           (self-signed, {state}/data/tls-cert.pem; the CLI and the agents pin it)\n\n\
         Open {url} in a browser for the dashboard (admin and the password below; the \
         browser asks about the self-signed certificate).\n\n\
         Log in as admin with the password in {pw} ({password}):\n  \
           {canopy_d} login --server {url} --username admin --fingerprint {fingerprint}\n\
         Or use the demo's session; server log {state}/server.log\n  \
           export CANOPY_SESSION={session_s}\n\n\
         Try:\n  \
           {canopy_d} tree              # the simulated Proxmox estate\n  \
           {canopy_d} tree '**[tag=prod]' --preview\n  \
           {canopy_d} hosts\n  \
           {canopy_d} updates\n  \
           {canopy_d} approve ID        # queues a dry-run\n  \
           {canopy_d} command ID        # the dry-run plan\n  \
           {canopy_d} confirm ID        # installs\n\n\
         {where_agents}\n\n\
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

/// `--no-lab`: a registration token, and a read-only agent on this machine enrolled with it.
fn local_agent(
    canopy: &str,
    session: &Path,
    agent: &Path,
    dir: &Path,
    url: &str,
    fingerprint: &str,
) -> Result<Child> {
    let token_json = cmd(canopy, ["token", "create", "--seats", "5", "--json"])
        .env("CANOPY_SESSION", session)
        .output()?;
    let token = json_string_field(&token_json, "token").with_context(|| {
        format!("no \"token\" in `canopy token create --json` output: {token_json}")
    })?;
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
            url,
            "--token",
            &token,
            "--fingerprint",
            fingerprint,
            "--state-dir",
            &state_s,
            "--read-only",
        ],
    )
    .output()?;
    let log = std::fs::File::create(dir.join("agent.log"))?;
    Command::new(agent)
        .args(["--config", &config_s, "run", "--read-only"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start canopy-agent run")
}

/// Adds `pid` to the file the watchdog reads when xtask is gone.
fn track(pids: &Path, pid: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(pids)
        .with_context(|| format!("open {}", pids.display()))?;
    writeln!(f, "{pid}")?;
    Ok(())
}

/// A detached shell that waits for xtask to exit, then stops the processes listed in `pids`,
/// takes the demo's lab down (`with_lab`) and stops the Docker engine if `docker_marker`
/// exists (the demo started it). Ctrl-C also reaches the children directly (same process
/// group); this covers the rest.
fn watchdog(pids: &Path, with_lab: bool, docker_marker: &Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    let exe = shell_quote(&exe.to_string_lossy());
    let mut teardown = format!(
        "kill -TERM $(cat {}) 2>/dev/null;",
        shell_quote(&pids.to_string_lossy())
    );
    if with_lab {
        let instance = std::env::var("CANOPY_LAB_INSTANCE").unwrap_or_default();
        if instance.is_empty() {
            bail!("the demo's lab needs CANOPY_LAB_INSTANCE (never the default lab)");
        }
        teardown += &format!(
            " CANOPY_LAB_INSTANCE={} {exe} lab down; if [ -e {} ]; then {exe} dockerd stop; fi",
            shell_quote(&instance),
            shell_quote(&docker_marker.to_string_lossy())
        );
    }
    state::Watchdog::spawn("demo", std::process::id(), &teardown)?;
    Ok(())
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
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
    use super::{json_string_field, printed_fingerprint, shell_quote};

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
        assert_eq!(shell_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
