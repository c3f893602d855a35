//! The lab's Docker registry: Debian's `docker-registry` (the distribution 2.8 server) run
//! natively on a free 127.0.0.1 port with a config file, filesystem storage and logs under
//! `.lab/docker/registry/` (`.lab/docker-NAME/…` for an instance). Wiped at every `lab up`, so
//! it holds exactly what `lab up` and `lab image-push` pushed.
//!
//! Its access log (`access.log`, the server's stdout) has one line per request in the Apache
//! "combined" format, written by distribution's gorilla `CombinedLoggingHandler`:
//!
//! ```text
//! 127.0.0.1 - - [06/Dec/2025:16:40:59 +0000] "HEAD /v2/canopy/web/manifests/stable HTTP/1.1" 200 0 "" "canopy-xtask"
//! ```
//!
//! (client, two dashes, time, the quoted request line with the path and query as sent, status,
//! body bytes, quoted referer and user agent). Tests count manifest requests in it; its
//! diagnostics (logrus `level=info msg=…` lines) go to `registry.log`, never to `access.log`.

use super::daemon::{listening, Daemon};
use super::http;
use crate::proc::cmd;
use crate::state::{self, json_str};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `start` started, for lab.json.
pub struct Registry {
    /// `127.0.0.1:PORT`: the registry host in image references.
    pub addr: String,
    pub dir: PathBuf,
}

impl Registry {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn access_log(&self) -> PathBuf {
        self.dir.join("access.log")
    }

    /// The `"registry"` object of lab.json's `docker` section.
    pub fn json(&self) -> String {
        format!(
            "{{ \"url\": {}, \"host\": {}, \"access_log\": {}, \"access_log_format\": \"combined\", \
             \"log\": {}, \"config\": {}, \"data_dir\": {} }}",
            json_str(&self.url()),
            json_str(&self.addr),
            json_str(&self.access_log().to_string_lossy()),
            json_str(&self.dir.join("registry.log").to_string_lossy()),
            json_str(&self.dir.join("config.yml").to_string_lossy()),
            json_str(&self.dir.join("data").to_string_lossy()),
        )
    }
}

fn daemon() -> Result<Daemon> {
    Ok(Daemon {
        name: "registry",
        dir: super::docker_dir()?.join("registry"),
    })
}

/// The config file: filesystem storage in `data`, 127.0.0.1:`port` only, access log on.
fn config(data: &Path, port: u16) -> String {
    format!(
        "# Written by `cargo xtask lab up`: the canopy lab's registry (docker-registry 2.8).\n\
         version: 0.1\n\
         log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
         maintenance:\n    uploadpurging:\n      enabled: false\n\
         http:\n  addr: 127.0.0.1:{port}\n  headers:\n    X-Content-Type-Options: [nosniff]\n",
        json_str(&data.to_string_lossy())
    )
}

/// Starts an empty registry (any old one stopped and wiped) and waits until `GET /v2/` answers.
pub fn start() -> Result<Registry> {
    if !crate::proc::have("docker-registry") {
        bail!("docker-registry is not installed (run `cargo xtask prereqs`)");
    }
    let d = daemon()?;
    stop()?;
    super::base::remove_tree(&d.dir)?;
    let data = d.dir.join("data");
    fs::create_dir_all(&data)?;
    let port = state::free_port()?;
    let conf = d.dir.join("config.yml");
    fs::write(&conf, config(&data, port))?;
    let (access, log) = (d.dir.join("access.log"), d.dir.join("registry.log"));
    d.spawn(cmd("docker-registry", ["serve"]).arg(&conf), &access, &log)?;
    let addr = format!("127.0.0.1:{port}");
    d.wait(Duration::from_secs(20), &log, || {
        listening(port)
            && http::request("GET", &addr, "/v2/", &[], &[])
                .map(|r| r.status == 200)
                .unwrap_or(false)
    })?;
    fs::write(d.dir.join("addr"), &addr)?;
    Ok(Registry { addr, dir: d.dir })
}

/// The running registry's `127.0.0.1:PORT` (for `lab image-push`).
pub fn running_addr() -> Result<String> {
    let d = daemon()?;
    if d.running().is_none() {
        bail!("the lab's registry is not running (run `cargo xtask lab up --docker-guests`)");
    }
    let addr = fs::read_to_string(d.dir.join("addr")).context("the registry's address file")?;
    Ok(addr.trim().to_string())
}

pub fn stop() -> Result<()> {
    daemon()?.stop(Duration::from_secs(10)).map(drop)
}
