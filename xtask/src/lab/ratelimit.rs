//! A rate-limiting front for the lab's registry, like Docker Hub's: nginx (the real server) on
//! its own 127.0.0.1 port proxying everything to the registry, with manifest requests
//! (`/v2/…/manifests/…`, HEAD and GET: what Docker Hub counts) limited by `limit_req` to
//! [`RATE_PER_MINUTE`] with no burst. A request over the limit is answered `429` with
//! `Retry-After: 2`; every manifest answer carries Docker Hub's headers, `ratelimit-limit:
//! 100;w=21600` and `ratelimit-remaining: 76;w=21600` (`0;w=21600` on a 429). These budget
//! values are fixed strings (nginx does not count), listed in lab.json.
//!
//! nginx runs in the foreground (`daemon off`) as a child of nothing, with its config, pid
//! file, error and access logs and temp directories under `.lab/docker/ratelimit/`. Its access
//! log has the combined format plus ` limit_req=PASSED|REJECTED|-` at the end.

use super::daemon::{listening, Daemon};
use crate::proc::cmd;
use crate::state::{self, json_str};
use anyhow::{bail, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const RATE_PER_MINUTE: u32 = 30;
pub const RETRY_AFTER_SECS: u32 = 2;
pub const LIMIT_HEADER: &str = "100;w=21600";
pub const REMAINING_HEADER: &str = "76;w=21600";
pub const REMAINING_WHEN_LIMITED: &str = "0;w=21600";

pub struct Front {
    pub addr: String,
    pub dir: PathBuf,
}

impl Front {
    /// The `"rate_limited"` object of lab.json's `docker` section.
    pub fn json(&self) -> String {
        format!(
            "{{ \"url\": {}, \"host\": {}, \"limited\": \"HEAD and GET /v2/*/manifests/*\", \
             \"rate_per_minute\": {RATE_PER_MINUTE}, \"burst\": 0, \"status\": 429, \
             \"retry_after_secs\": {RETRY_AFTER_SECS}, \"ratelimit_limit\": {}, \
             \"ratelimit_remaining\": {}, \"ratelimit_remaining_when_limited\": {}, \
             \"access_log\": {}, \"error_log\": {} }}",
            json_str(&format!("http://{}", self.addr)),
            json_str(&self.addr),
            json_str(LIMIT_HEADER),
            json_str(REMAINING_HEADER),
            json_str(REMAINING_WHEN_LIMITED),
            json_str(&self.dir.join("access.log").to_string_lossy()),
            json_str(&self.dir.join("error.log").to_string_lossy()),
        )
    }
}

fn daemon() -> Result<Daemon> {
    Ok(Daemon {
        name: "nginx",
        dir: super::docker_dir()?.join("ratelimit"),
    })
}

fn config(dir: &Path, port: u16, upstream: &str) -> String {
    let p = |name: &str| json_str(&dir.join(name).to_string_lossy());
    format!(
        "# Written by `cargo xtask lab up`: the canopy lab's rate-limiting registry front.\n\
worker_processes 1;\n\
pid {pid};\n\
error_log {error} notice;\n\
events {{ worker_connections 256; }}\n\
http {{\n\
    log_format canopy '$remote_addr - - [$time_local] \"$request\" $status $body_bytes_sent '\n\
                      '\"$http_referer\" \"$http_user_agent\" limit_req=$limit_req_status';\n\
    access_log {access} canopy;\n\
    client_body_temp_path {tmp_body};\n\
    proxy_temp_path {tmp_proxy};\n\
    fastcgi_temp_path {tmp_fastcgi};\n\
    uwsgi_temp_path {tmp_uwsgi};\n\
    scgi_temp_path {tmp_scgi};\n\
    limit_req_zone $binary_remote_addr zone=manifests:1m rate={RATE_PER_MINUTE}r/m;\n\
    limit_req_status 429;\n\
    map $status $canopy_retry_after {{ 429 \"{RETRY_AFTER_SECS}\"; default \"\"; }}\n\
    map $status $canopy_remaining {{ 429 \"{REMAINING_WHEN_LIMITED}\"; default \"{REMAINING_HEADER}\"; }}\n\
    server {{\n\
        listen 127.0.0.1:{port};\n\
        client_max_body_size 0;\n\
        proxy_http_version 1.1;\n\
        proxy_buffering off;\n\
        proxy_request_buffering off;\n\
        proxy_set_header Host $http_host;\n\
        location ~ ^/v2/.+/manifests/ {{\n\
            limit_req zone=manifests;\n\
            add_header Retry-After $canopy_retry_after always;\n\
            add_header ratelimit-limit \"{LIMIT_HEADER}\" always;\n\
            add_header ratelimit-remaining $canopy_remaining always;\n\
            proxy_pass http://{upstream};\n\
        }}\n\
        location / {{\n\
            proxy_pass http://{upstream};\n\
        }}\n\
    }}\n\
}}\n",
        pid = p("nginx.pid"),
        error = p("error.log"),
        access = p("access.log"),
        tmp_body = p("temp/client_body"),
        tmp_proxy = p("temp/proxy"),
        tmp_fastcgi = p("temp/fastcgi"),
        tmp_uwsgi = p("temp/uwsgi"),
        tmp_scgi = p("temp/scgi"),
    )
}

/// Starts nginx in front of the registry at `upstream` (`127.0.0.1:PORT`), any old one stopped.
pub fn start(upstream: &str) -> Result<Front> {
    if !crate::proc::have("nginx") && !Path::new("/usr/sbin/nginx").is_file() {
        bail!("nginx is not installed (run `cargo xtask prereqs`)");
    }
    let d = daemon()?;
    stop()?;
    super::base::remove_tree(&d.dir)?;
    fs::create_dir_all(d.dir.join("temp"))?;
    let port = state::free_port()?;
    let conf = d.dir.join("nginx.conf");
    fs::write(&conf, config(&d.dir, port, upstream))?;
    let (out, err) = (d.dir.join("nginx.out"), d.dir.join("error.log"));
    let nginx = if crate::proc::have("nginx") {
        "nginx"
    } else {
        "/usr/sbin/nginx"
    };
    d.spawn(
        cmd(nginx, ["-p"])
            .arg(&d.dir)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(&err)
            .args_from(&["-g", "daemon off;"]),
        &out,
        &out,
    )?;
    d.wait(Duration::from_secs(20), &err, || listening(port))?;
    Ok(Front {
        addr: format!("127.0.0.1:{port}"),
        dir: d.dir,
    })
}

pub fn stop() -> Result<()> {
    daemon()?.stop(Duration::from_secs(10)).map(drop)
}
