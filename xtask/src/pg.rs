//! `cargo xtask pg start|stop|url`: a throwaway PostgreSQL 15 for the storage conformance
//! tests. It runs as the unprivileged user `canopy-pg` (initdb refuses root), listens on
//! 127.0.0.1 only on a free port, keeps its socket and data under the xtask state dir, trusts
//! the superuser role `canopy`, and trades durability for speed (fsync off).

use crate::prereqs::PG_BIN;
use crate::proc::cmd;
use crate::state;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

const PG_USER: &str = "canopy-pg";
const ROLE: &str = "canopy";

struct Paths {
    root: PathBuf,
    data: PathBuf,
    sock: PathBuf,
    port: PathBuf,
    log: PathBuf,
}

fn paths() -> Result<Paths> {
    let root = state::state_dir()?.join("pg");
    Ok(Paths {
        data: root.join("data"),
        sock: root.join("sock"),
        port: root.join("port"),
        log: root.join("postgres.log"),
        root,
    })
}

fn url_for(port: u16) -> String {
    format!("postgres://{ROLE}@127.0.0.1:{port}/postgres")
}

/// `pg_ctl …` as the unprivileged user.
fn pg_ctl(args: &[&str], timeout: Duration) -> crate::proc::Cmd {
    let pg_ctl = format!("{PG_BIN}/pg_ctl");
    let mut all = vec!["-u", PG_USER, "--", pg_ctl.as_str()];
    all.extend_from_slice(args);
    cmd("runuser", all).timeout(timeout)
}

fn running(p: &Paths) -> bool {
    p.data.join("PG_VERSION").is_file()
        && pg_ctl(
            &["status", "-D", p.data.to_str().unwrap_or_default()],
            Duration::from_secs(10),
        )
        .ok()
}

fn saved_port(p: &Paths) -> Option<u16> {
    fs::read_to_string(&p.port).ok()?.trim().parse().ok()
}

/// Starts (or reuses) the server and returns its URL.
pub fn start() -> Result<String> {
    start_owned().map(|(url, _)| url)
}

/// Like [`start`], and tells whether this call started the server (false when it reused one
/// that was already running, which the caller should then leave running).
pub fn start_owned() -> Result<(String, bool)> {
    let p = paths()?;
    if running(&p) {
        if let Some(port) = saved_port(&p) {
            if ready(&p, port) {
                return Ok((url_for(port), false));
            }
        }
        // Running but unknown port: restart it cleanly.
        stop()?;
    }
    ensure_user()?;
    fs::create_dir_all(&p.sock)?;
    cmd(
        "chown",
        [
            "-R",
            &format!("{PG_USER}:{PG_USER}"),
            p.root.to_str().unwrap_or_default(),
        ],
    )
    .output()?;
    let data = p.data.to_str().context("non-UTF-8 state dir")?;
    if !p.data.join("PG_VERSION").is_file() {
        let initdb = format!("{PG_BIN}/initdb");
        cmd(
            "runuser",
            [
                "-u",
                PG_USER,
                "--",
                &initdb,
                "-D",
                data,
                "-U",
                ROLE,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )
        .timeout(Duration::from_secs(120))
        .output()
        .context("initdb")?;
    }
    let port = state::free_port()?;
    let options = format!(
        "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} \
         -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
        p.sock.display()
    );
    let log = p.log.to_str().context("non-UTF-8 state dir")?;
    pg_ctl(
        &[
            "start", "-D", data, "-l", log, "-w", "-t", "60", "-o", &options,
        ],
        Duration::from_secs(90),
    )
    .output()
    .with_context(|| format!("pg_ctl start (log: {log})"))?;
    fs::write(&p.port, format!("{port}\n"))?;
    if !ready(&p, port) {
        bail!("PostgreSQL started but does not answer on 127.0.0.1:{port} (log: {log})");
    }
    eprintln!("xtask: PostgreSQL 15 running on 127.0.0.1:{port} (data {data})");
    Ok((url_for(port), true))
}

/// `pg_isready` against the TCP address, bounded.
fn ready(_p: &Paths, port: u16) -> bool {
    let isready = format!("{PG_BIN}/pg_isready");
    let port = port.to_string();
    crate::proc::poll(Duration::from_secs(20), Duration::from_millis(200), || {
        cmd(&isready, ["-h", "127.0.0.1", "-p", &port, "-U", ROLE])
            .timeout(Duration::from_secs(5))
            .ok()
    })
}

/// Stops the server if it runs (the data dir stays for a quick restart).
pub fn stop() -> Result<()> {
    let p = paths()?;
    if running(&p) {
        let data = p.data.to_str().context("non-UTF-8 state dir")?;
        pg_ctl(
            &["stop", "-D", data, "-m", "fast", "-w", "-t", "30"],
            Duration::from_secs(45),
        )
        .output()?;
        eprintln!("xtask: PostgreSQL stopped");
    }
    let _ = fs::remove_file(&p.port);
    Ok(())
}

/// Stops the server and removes its data directory: every test creates its own database
/// and nothing drops it when the test ends, so a data directory kept run after run grows
/// (882 databases, 7.3 GB once; dropping them one by one took PostgreSQL a second each).
/// The next start runs initdb again (a few seconds).
pub fn discard() -> Result<()> {
    stop()?;
    let p = paths()?;
    if p.data.exists() {
        fs::remove_dir_all(&p.data).with_context(|| format!("removing {}", p.data.display()))?;
    }
    Ok(())
}

/// The URL of the running server, or an error if none runs.
pub fn url() -> Result<String> {
    let p = paths()?;
    match saved_port(&p) {
        Some(port) if running(&p) => Ok(url_for(port)),
        _ => bail!("PostgreSQL is not running (start it with `cargo xtask pg start`)"),
    }
}

fn ensure_user() -> Result<()> {
    if cmd("id", ["-u", PG_USER]).ok() {
        return Ok(());
    }
    eprintln!("xtask: creating system user {PG_USER}");
    cmd(
        "useradd",
        [
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            PG_USER,
        ],
    )
    .output()
    .context("useradd")?;
    Ok(())
}
