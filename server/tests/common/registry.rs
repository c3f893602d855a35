//! Real registries for the registry-check tests and the registry bench: Debian's
//! `docker-registry` (distribution 2.8) on 127.0.0.1 with its access log on, nginx in front
//! of it with `limit_req` for the `429` case, and a token issuer for `auth: token` (the
//! registry verifies the issuer's signed JWTs itself). Images are pushed through the
//! registry's HTTP API: blobs (`POST` an upload, `PUT ?digest=`), manifests and an OCI index.
//!
//! A missing `docker-registry` or `nginx` fails the test with what to install, in CI and
//! locally. Every process is killed when its handle drops.
#![allow(dead_code)]

#[path = "registry/issuer.rs"]
mod issuer;
#[path = "registry/nginx.rs"]
mod nginx;

// Not every test binary uses every helper.
#[allow(unused_imports)]
pub use issuer::{TokenIssuer, HTPASSWD_LINE, HTPASSWD_PASSWORD};
#[allow(unused_imports)]
pub use nginx::{Nginx, LIAR_DIGEST};

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const READY_WITHIN: Duration = Duration::from_secs(20);
const PUSH_AGENT: &str = "canopy-test-push";

/// The path of `binary` (PATH, then /usr/sbin and /usr/bin), or a failure saying what to
/// install.
pub fn require(binary: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|d| d.join(binary))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{binary} is not installed: the registry tests run the real one \
                 (apt-get install {package}; cargo xtask prereqs installs it in CI)"
            )
        })
}

/// A port that was free a moment ago (for binaries that cannot take a bound socket).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .user_agent(PUSH_AGENT)
        .build()
        .unwrap()
}

/// A child process killed (and reaped) on drop.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { name, child }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Poll `url` until it answers `ok` (bounded); fail with the process's log when it exits.
async fn wait_ready(proc: &mut Proc, url: &str, ok: &[u16], log: &Path) {
    let client = http();
    let deadline = Instant::now() + READY_WITHIN;
    loop {
        if let Some(status) = proc.exited() {
            panic!(
                "{} exited ({status}) before answering: {}",
                proc.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if let Ok(r) = client.get(url).send().await {
            if ok.contains(&r.status().as_u16()) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} did not answer {url} within {READY_WITHIN:?}: {}",
            proc.name,
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How the registry authenticates.
pub enum Auth {
    None,
    /// `auth: htpasswd` (a `Basic` challenge) with this bcrypt line.
    Htpasswd(String),
    /// `auth: token`, trusting the issuer's certificate.
    Token(Arc<TokenIssuer>),
}

/// One access-log line: method, request URI, status, user agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub method: String,
    pub uri: String,
    pub status: u16,
    pub agent: String,
}

impl LogLine {
    /// A manifest request (`HEAD` or `GET …/manifests/…`), as the checks make them.
    pub fn is_manifest_read(&self) -> bool {
        matches!(self.method.as_str(), "HEAD" | "GET") && self.uri.contains("/manifests/")
    }
}

/// An access log file, read between marker requests: a marker is a request with a unique
/// query sent after the requests to count, and the lines before its own line are theirs.
pub struct AccessLog {
    path: PathBuf,
    /// Where markers are sent (`http://addr/v2/`).
    mark_url: String,
    parse: fn(&str) -> Option<LogLine>,
    marks: AtomicU64,
    /// Lines already handed out.
    seen: Mutex<usize>,
}

impl AccessLog {
    /// Mark the log and return every line since the previous mark (markers left out).
    pub async fn since_last_mark(&self) -> Vec<LogLine> {
        let id = format!(
            "canopy-mark-{}-{}",
            std::process::id(),
            self.marks.fetch_add(1, Ordering::SeqCst)
        );
        let _ = http().get(format!("{}?{id}", self.mark_url)).send().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if let Some(at) = lines.iter().position(|l| l.contains(&id)) {
                let mut seen = self.seen.lock().unwrap();
                let out = lines[*seen..at]
                    .iter()
                    .filter(|l| !l.contains("canopy-mark-"))
                    .filter_map(|l| (self.parse)(l))
                    .collect();
                *seen = at + 1;
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "marker {id} never reached {}",
                self.path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// distribution's access log (gorilla's combined format):
/// `127.0.0.1 - - [date] "HEAD /v2/x/manifests/t HTTP/1.1" 200 0 "" "agent"`.
fn parse_combined(line: &str) -> Option<LogLine> {
    let mut quoted = line.split('"');
    let _ = quoted.next()?;
    let request = quoted.next()?;
    let status = quoted.next()?.split_whitespace().next()?.parse().ok()?;
    let _referer = quoted.next();
    let _ = quoted.next();
    let agent = quoted.next().unwrap_or_default().to_string();
    let mut parts = request.split(' ');
    Some(LogLine {
        method: parts.next()?.to_string(),
        uri: parts.next()?.to_string(),
        status,
        agent,
    })
}

/// A running `docker-registry`.
pub struct Registry {
    /// `127.0.0.1:PORT`, the name references use.
    pub addr: String,
    pub log: AccessLog,
    /// Sent with pushes (the registry's own auth).
    push_auth: Option<PushAuth>,
    _proc: Proc,
    _dir: tempfile::TempDir,
}

enum PushAuth {
    Basic(String, String),
    Issuer(Arc<TokenIssuer>),
}

impl Registry {
    pub async fn start() -> Registry {
        Self::start_with(Auth::None).await
    }

    pub async fn start_with(auth: Auth) -> Registry {
        let bin = require("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let (auth_yaml, push_auth) = match auth {
            Auth::None => (String::new(), None),
            Auth::Htpasswd(line) => {
                let file = dir.path().join("htpasswd");
                std::fs::write(&file, format!("{line}\n")).unwrap();
                let user = line.split(':').next().unwrap().to_string();
                (
                    format!(
                        "auth:\n  htpasswd:\n    realm: canopy-test\n    path: {}\n",
                        file.display()
                    ),
                    Some(PushAuth::Basic(user, HTPASSWD_PASSWORD.to_string())),
                )
            }
            Auth::Token(issuer) => {
                let cert = dir.path().join("issuer.pem");
                std::fs::write(&cert, &issuer.cert_pem).unwrap();
                (
                    format!(
                        "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                        issuer.realm(),
                        TokenIssuer::SERVICE,
                        TokenIssuer::ISSUER,
                        cert.display()
                    ),
                    Some(PushAuth::Issuer(issuer)),
                )
            }
        };
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {addr}\n{auth_yaml}",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let access = dir.path().join("access.log");
        let errors = dir.path().join("registry.log");
        let mut proc = Proc::spawn(
            "docker-registry",
            Command::new(bin)
                .arg("serve")
                .arg(&config)
                .stdout(std::fs::File::create(&access).unwrap())
                .stderr(std::fs::File::create(&errors).unwrap()),
        );
        // `/v2/` answers 200, or 401 with auth on.
        wait_ready(
            &mut proc,
            &format!("http://{addr}/v2/"),
            &[200, 401],
            &errors,
        )
        .await;
        let log = AccessLog {
            path: access,
            mark_url: format!("http://{addr}/v2/"),
            parse: parse_combined,
            marks: AtomicU64::new(0),
            seen: Mutex::new(0),
        };
        let registry = Registry {
            addr,
            log,
            push_auth,
            _proc: proc,
            _dir: dir,
        };
        // Start counting after the readiness polls.
        registry.log.since_last_mark().await;
        registry
    }

    fn authorize(&self, req: reqwest::RequestBuilder, repo: &str) -> reqwest::RequestBuilder {
        match &self.push_auth {
            None => req,
            Some(PushAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
            Some(PushAuth::Issuer(i)) => req.bearer_auth(i.mint(repo, &["pull", "push"])),
        }
    }

    /// Upload a blob (`POST` an upload, `PUT` it with its digest); its digest.
    pub async fn put_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        let client = http();
        let start = self
            .authorize(
                client.post(format!("http://{}/v2/{repo}/blobs/uploads/", self.addr)),
                repo,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            start.status().as_u16(),
            202,
            "start upload: {:?}",
            start.text().await
        );
        let location = start.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with('/') {
            format!("http://{}{location}", self.addr)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .authorize(client.put(format!("{location}{sep}digest={digest}")), repo)
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            put.status().as_u16(),
            201,
            "finish upload: {:?}",
            put.text().await
        );
        digest
    }

    /// Put a manifest under `reference` (a tag or its digest); its digest as the registry
    /// says it (checked against the content).
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let resp = self
            .authorize(
                http().put(format!(
                    "http://{}/v2/{repo}/manifests/{reference}",
                    self.addr
                )),
                repo,
            )
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status().as_u16(),
            201,
            "put manifest: {:?}",
            resp.text().await
        );
        let digest = resp.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(digest, sha256(body));
        digest
    }

    /// A single-platform OCI image under `tag` whose layer holds `content`; its manifest
    /// digest.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        platform: (&str, &str),
        content: &str,
    ) -> String {
        let body = self.image_manifest(repo, platform, content).await;
        self.put_manifest(repo, tag, OCI_MANIFEST, &body).await
    }

    /// An OCI index of an amd64 and an arm64 image (layers from `content`) under `tag`.
    pub async fn push_index(&self, repo: &str, tag: &str, content: &str) -> Pushed {
        let mut entries = Vec::new();
        let mut digests = Vec::new();
        for arch in ["amd64", "arm64"] {
            let body = self.image_manifest(repo, ("linux", arch), content).await;
            let digest = self
                .put_manifest(repo, &sha256(&body), OCI_MANIFEST, &body)
                .await;
            entries.push(serde_json::json!({
                "mediaType": OCI_MANIFEST, "digest": digest, "size": body.len(),
                "platform": {"os": "linux", "architecture": arch},
            }));
            digests.push(digest);
        }
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
        }))
        .unwrap();
        let index = self.put_manifest(repo, tag, OCI_INDEX, &index).await;
        Pushed {
            index,
            amd64: digests[0].clone(),
            arm64: digests[1].clone(),
        }
    }

    async fn image_manifest(&self, repo: &str, (os, arch): (&str, &str), content: &str) -> Vec<u8> {
        let layer = format!("{content} for {os}/{arch}").into_bytes();
        let layer_digest = self.put_blob(repo, &layer).await;
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": os,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }))
        .unwrap();
        let config_digest = self.put_blob(repo, &config).await;
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        }))
        .unwrap()
    }
}

/// What [`Registry::push_index`] pushed.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub index: String,
    pub amd64: String,
    pub arm64: String,
}
