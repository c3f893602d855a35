//! nginx in front of a test registry, for the `429` case, and as a broken registry.

use super::{free_port, require, wait_ready, AccessLog, LogLine, Proc, OCI_INDEX};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

/// nginx in front of a registry: `limit_req` at 30 requests a minute without burst on
/// manifest requests, `429` with `Retry-After: 2` and a `ratelimit-remaining` header; and a
/// second server that answers like a broken registry.
pub struct Nginx {
    /// The rate-limited front of the registry.
    pub addr: String,
    /// Answers `200` without a digest for `/v2/garbage/…`, and for `/v2/liar/…` an index
    /// digest whose content does not match.
    pub broken_addr: String,
    pub log: AccessLog,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

/// The digest nginx's `/v2/liar/` claims.
pub const LIAR_DIGEST: &str =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";

impl Nginx {
    pub async fn start(upstream: &str) -> Nginx {
        let bin = require("nginx", "nginx");
        let dir = tempfile::tempdir().unwrap();
        let (port, broken) = (free_port(), free_port());
        let d = dir.path().display();
        let conf = format!(
            r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  log_format canopy '$request_method $request_uri $status "$http_user_agent"';
  access_log {d}/access.log canopy;
  limit_req_zone $binary_remote_addr zone=registry:1m rate=30r/m;
  limit_req_status 429;
  map $limit_req_status $remaining {{ REJECTED "0;w=60"; default "1;w=60"; }}
  map $limit_req_status $retry_after {{ REJECTED "2"; default ""; }}
  server {{
    listen 127.0.0.1:{port};
    location ~ /manifests/ {{
      limit_req zone=registry;
      add_header Retry-After $retry_after always;
      add_header RateLimit-Limit "30;w=60" always;
      add_header RateLimit-Remaining $remaining always;
      proxy_pass http://{upstream};
      proxy_set_header Host $http_host;
    }}
    location / {{
      proxy_pass http://{upstream};
      proxy_set_header Host $http_host;
    }}
  }}
  server {{
    listen 127.0.0.1:{broken};
    location /v2/garbage/ {{ default_type text/html; return 200 "<html>not a registry</html>"; }}
    location /v2/liar/ {{
      add_header Docker-Content-Digest {LIAR_DIGEST} always;
      default_type {OCI_INDEX};
      return 200 '{{"schemaVersion":2,"manifests":[]}}';
    }}
    location / {{ return 200 "{{}}"; }}
  }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let errors = dir.path().join("error.log");
        let mut proc = Proc::spawn(
            "nginx",
            Command::new(bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(&errors)
                .arg("-c")
                .arg(&conf_path)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap()),
        );
        let addr = format!("127.0.0.1:{port}");
        wait_ready(
            &mut proc,
            &format!("http://{addr}/v2/"),
            &[200, 401],
            &errors,
        )
        .await;
        wait_ready(
            &mut proc,
            &format!("http://127.0.0.1:{broken}/"),
            &[200],
            &errors,
        )
        .await;
        let log = AccessLog {
            path: dir.path().join("access.log"),
            mark_url: format!("http://{addr}/v2/"),
            parse: parse_nginx,
            marks: AtomicU64::new(0),
            seen: Mutex::new(0),
        };
        log.since_last_mark().await;
        Nginx {
            addr,
            broken_addr: format!("127.0.0.1:{broken}"),
            log,
            _proc: proc,
            _dir: dir,
        }
    }
}

/// nginx's `canopy` log format: `METHOD URI STATUS "agent"`.
fn parse_nginx(line: &str) -> Option<LogLine> {
    let (head, agent) = line.split_once(" \"")?;
    let mut parts = head.split(' ');
    Some(LogLine {
        method: parts.next()?.to_string(),
        uri: parts.next()?.to_string(),
        status: parts.next()?.parse().ok()?,
        agent: agent.trim_end_matches('"').to_string(),
    })
}
