//! The lab's local apt repository: two suites (`bookworm`, `bookworm-security`, component
//! `main`) with Release files from `apt-ftparchive`, served over HTTP on 127.0.0.1 by a
//! detached `python3 -m http.server` with a pid file.

use super::packages::{build_deb, new_postinst, tree_postinst, DemoPackage};
use crate::proc::{cmd, poll};
use crate::state;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const MAIN_SUITE: &str = "bookworm";
pub const SECURITY_SUITE: &str = "bookworm-security";

/// Origin/Label/Suite/Codename of each suite, as the real Debian archive sets them.
fn release_fields(suite: &str) -> [(&'static str, String); 4] {
    let label = if suite == SECURITY_SUITE {
        "Debian-Security"
    } else {
        "Debian"
    };
    [
        ("Origin", "Debian".to_string()),
        ("Label", label.to_string()),
        ("Suite", suite.to_string()),
        ("Codename", suite.to_string()),
    ]
}

/// Builds every package and lays out the repository in `repo` (wiped first). Old versions go to
/// `bookworm`, new versions to their suite. Returns the old debs for the image to install.
pub fn build(pkgs: &[DemoPackage], repo: &Path) -> Result<Vec<PathBuf>> {
    if repo.exists() {
        fs::remove_dir_all(repo)?;
    }
    let work = repo.with_extension("work");
    fs::create_dir_all(&work)?;
    let mut old_debs = Vec::new();
    for p in pkgs {
        if let Some(old) = &p.old {
            let deb = build_deb(
                &p.name,
                old,
                &[],
                tree_postinst(p.tree(old))?.as_deref(),
                p.tree(old),
                &work,
                &repo.join("pool").join(MAIN_SUITE),
            )?;
            old_debs.push(deb);
        }
        let tree = p.tree(&p.new);
        let body = tree_postinst(tree)?.or_else(|| p.postinst.clone());
        build_deb(
            &p.name,
            &p.new,
            &p.depends,
            Some(&new_postinst(&p.name, &p.new, body.as_deref())),
            tree,
            &work,
            &repo.join("pool").join(&p.suite),
        )?;
    }
    fs::remove_dir_all(&work)?;
    let mut suites: Vec<&str> = vec![MAIN_SUITE, SECURITY_SUITE];
    for p in pkgs {
        if !suites.contains(&p.suite.as_str()) {
            suites.push(&p.suite);
        }
    }
    for suite in suites {
        index_suite(repo, suite)?;
    }
    Ok(old_debs)
}

/// Builds `name` `version` into the pool of `suite` and (re)indexes that suite: a version
/// published while the lab runs (a repository that moved on). A suite of its own per test
/// keeps the other guests' repository unchanged. A demo package's version is built like its
/// new version (`like`: same files and postinst). Returns the deb.
pub fn publish(
    repo: &Path,
    suite: &str,
    name: &str,
    version: &str,
    like: Option<&DemoPackage>,
) -> Result<PathBuf> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.+~".contains(&b))
    };
    if !plain(suite) || !plain(name) || !plain(version) {
        bail!("lab publish: suite, package and version may hold letters, digits and -.+~ only");
    }
    let work = repo.with_extension(format!("publish-{suite}"));
    fs::create_dir_all(&work)?;
    let tree = like.and_then(|p| p.tree(&p.new));
    let body = tree_postinst(tree)?.or_else(|| like.and_then(|p| p.postinst.clone()));
    let deb = build_deb(
        name,
        version,
        &[],
        Some(&new_postinst(name, version, body.as_deref())),
        tree,
        &work,
        &repo.join("pool").join(suite),
    )?;
    fs::remove_dir_all(&work)?;
    index_suite(repo, suite)?;
    Ok(deb)
}

fn index_suite(repo: &Path, suite: &str) -> Result<()> {
    let pool = format!("pool/{suite}");
    fs::create_dir_all(repo.join(&pool))?;
    let bin = repo.join("dists").join(suite).join("main/binary-amd64");
    fs::create_dir_all(&bin)?;
    let packages = cmd("apt-ftparchive", ["packages", &pool])
        .current_dir(repo)
        .output()?;
    fs::write(bin.join("Packages"), &packages)?;
    let mut args: Vec<String> = Vec::new();
    for (k, v) in release_fields(suite) {
        args.push("-o".into());
        args.push(format!("APT::FTPArchive::Release::{k}={v}"));
    }
    for (k, v) in [
        ("Architectures", "amd64"),
        ("Components", "main"),
        ("Description", "Canopy lab repository"),
    ] {
        args.push("-o".into());
        args.push(format!("APT::FTPArchive::Release::{k}={v}"));
    }
    args.push("release".into());
    args.push(format!("dists/{suite}"));
    let release = cmd("apt-ftparchive", &args).current_dir(repo).output()?;
    fs::write(repo.join("dists").join(suite).join("Release"), release)?;
    Ok(())
}

/// Runtime files of the HTTP server.
fn pidfile() -> Result<PathBuf> {
    Ok(super::lab_dir()?.join("http.pid"))
}

/// Serves `repo` on 127.0.0.1 at a free port; returns the base URL (with trailing slash).
pub fn serve(repo: &Path) -> Result<String> {
    stop()?;
    let port = state::free_port()?;
    let python = if Path::new("/usr/bin/python3").is_file() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    let dir = repo.to_str().context("non-UTF-8 repo path")?;
    let server = cmd(
        python,
        [
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
            dir,
        ],
    );
    let log = super::lab_dir()?.join("http.log");
    state::spawn_detached(server, &log, &pidfile()?)?;
    let probe = format!("/dists/{MAIN_SUITE}/Release");
    if !poll(Duration::from_secs(15), Duration::from_millis(100), || {
        http_get_ok(port, &probe)
    }) {
        bail!(
            "apt repository server did not answer on 127.0.0.1:{port} (log {})",
            log.display()
        );
    }
    Ok(format!("http://127.0.0.1:{port}/"))
}

/// Stops the server if it runs.
pub fn stop() -> Result<()> {
    state::stop_pid(&pidfile()?, Duration::from_secs(5))?;
    Ok(())
}

/// A minimal `GET` on 127.0.0.1 (no HTTP client dependency): true on status 200.
pub fn http_get_ok(port: u16, path: &str) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
    };
    attempt().unwrap_or(false)
}
