//! What the Docker tests stand on, all real: the engine on `/var/run/docker.sock` (the one
//! `cargo xtask dockerd` starts), a `docker-registry` (distribution) of their own on
//! 127.0.0.1 at a free port, tiny images made from `/bin/busybox` (a root filesystem tar
//! through `docker import`), `docker push` to that registry, and docker-compose for compose
//! projects. Everything a test creates is named `canopy-agent-test-…` and removed when its
//! [`Lab`] is dropped (also after a failed assertion), with their volumes; the registry is
//! killed then.
//!
//! Without the engine or a binary a test fails in CI (`CI=true`) naming what is missing,
//! and elsewhere prints SKIPPED and returns.
#![allow(dead_code)]

use canopy_agent::actions::{install, InstallJob};
use canopy_agent::docker::DockerConfig;
use canopy_api_types::commands::{CommandResult, PlannedPackage};
use canopy_api_types::updates::PackageManager;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SOCKET: &str = "/var/run/docker.sock";
pub const REGISTRY: &str = "/usr/bin/docker-registry";
pub const BUSYBOX: &str = "/bin/busybox";

/// Whether everything a Docker test needs is here (`compose`: docker-compose too). Missing
/// in CI: a panic naming it; elsewhere: `false` and a SKIPPED line.
pub fn ready(compose: bool) -> bool {
    let mut missing = Vec::new();
    if !Path::new(SOCKET).exists() {
        missing.push(format!(
            "the Docker engine's socket {SOCKET} (start it: cargo xtask dockerd)"
        ));
    } else if !Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        missing.push("a docker CLI that reaches the engine".into());
    }
    for (path, why) in [
        (
            REGISTRY,
            "docker-registry (apt-get install docker-registry)",
        ),
        (BUSYBOX, "busybox-static"),
    ] {
        if !Path::new(path).exists() {
            missing.push(format!("{path} ({why})"));
        }
    }
    if compose
        && !Command::new("docker-compose")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    {
        missing.push("docker-compose (apt-get install docker-compose)".into());
    }
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "CI=true but the Docker tests cannot run: missing {}",
            missing.join(", ")
        );
    }
    eprintln!(
        "SKIPPED (missing {}; CI would fail here)",
        missing.join(", ")
    );
    false
}

/// `docker ARGS…`, which must succeed; its stdout, trimmed.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker inspect --format FORMAT NAME`.
pub fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, name])
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The install command of one image update, as a bulk update sends it.
pub async fn update(reference: &str, to: &str, containers: &[&str]) -> CommandResult {
    let pinned = [PlannedPackage {
        package: reference.into(),
        from_version: None,
        to_version: to.into(),
        requested: true,
        manager: Some(PackageManager::Docker),
        containers: containers.iter().map(|c| c.to_string()).collect(),
    }];
    let mut docker = DockerConfig::with_socket(SOCKET);
    docker.settle_secs = 2;
    docker.health_timeout_secs = 30;
    let job = InstallJob {
        packages: &[],
        pinned: &pinned,
        managers: &[],
        last: None,
        read_only: false,
        check_timeout: Duration::from_secs(60),
        hang_timeout: Duration::from_secs(300),
        docker,
    };
    let r = install(&job).await;
    eprintln!("== {}\n{}\n", r.summary, r.stdout);
    r
}

/// Whether the engine knows `reference`.
pub fn exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A test's world: its name prefix, its registry, its scratch directory.
pub struct Lab {
    /// `canopy-agent-test-TEST-RANDOM`: every container and repository of the test.
    pub prefix: String,
    /// `127.0.0.1:PORT`.
    pub registry: String,
    pub dir: tempfile::TempDir,
    registry_process: Child,
    /// The registry's log (its access log lines count its requests).
    pub registry_log: PathBuf,
}

impl Lab {
    /// Starts a registry on a free loopback port and waits until it answers `/v2/`.
    pub fn start(test: &str) -> Lab {
        let prefix = format!("canopy-agent-test-{test}-{:08x}", rand::random::<u32>());
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("registry.yml");
        let log = dir.path().join("registry.log");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let out = std::fs::File::create(&log).expect("registry log");
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("start docker-registry");
        let lab = Lab {
            prefix,
            registry: format!("127.0.0.1:{port}"),
            dir,
            registry_process: child,
            registry_log: log,
        };
        poll("the registry answers /v2/", Duration::from_secs(20), || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n").ok()?;
            let mut buf = [0u8; 12];
            std::io::Read::read_exact(&mut s, &mut buf).ok()?;
            buf.starts_with(b"HTTP/1.0 200").then_some(())
        });
        lab
    }

    /// `127.0.0.1:PORT/PREFIX-NAME`.
    pub fn repo(&self, name: &str) -> String {
        format!("{}/{}-{name}", self.registry, self.prefix)
    }

    /// `PREFIX-NAME`: a container name.
    pub fn name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// An image from busybox: `/version` holds `version`, and `/healthy` exists unless
    /// `healthy` is false. Its command loops until SIGTERM. Returns the image id (the image
    /// stays tagged `PREFIX-build:VERSION`, so untagging it elsewhere never deletes it).
    pub fn image(&self, version: &str, healthy: bool) -> String {
        let root = self.dir.path().join(format!("rootfs-{version}"));
        std::fs::create_dir_all(root.join("bin")).expect("rootfs");
        std::fs::create_dir_all(root.join("tmp")).expect("rootfs");
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).expect("busybox");
        for applet in ["sh", "sleep", "test", "cat", "true"] {
            let link = root.join("bin").join(applet);
            if !link.exists() {
                std::os::unix::fs::symlink("busybox", &link).expect("applet link");
            }
        }
        std::fs::write(root.join("version"), version).expect("version file");
        if healthy {
            std::fs::write(root.join("healthy"), "").expect("healthy file");
        }
        let mut tar = Command::new("tar")
            .args(["-C", root.to_str().expect("utf-8"), "-cf", "-", "."])
            .stdout(Stdio::piped())
            .spawn()
            .expect("tar");
        let local = format!("{}-build:{version}", self.prefix);
        let out = Command::new("docker")
            .args([
                "import",
                "--change",
                r#"CMD ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]"#,
                "--change",
                "ENV PATH=/bin",
                "-",
                &local,
            ])
            .stdin(tar.stdout.take().expect("tar output"))
            .output()
            .expect("docker import");
        assert!(
            tar.wait().is_ok_and(|s| s.success()),
            "tar of the root filesystem failed"
        );
        assert!(
            out.status.success(),
            "docker import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        inspect(&local, "{{.Id}}")
    }

    /// Tags image `id` as `reference`, pushes it and returns the digest the registry now
    /// serves for it.
    pub fn push(&self, id: &str, reference: &str) -> String {
        docker(&["tag", id, reference]);
        docker(&["push", "--quiet", reference]);
        let repo = reference.rsplit_once(':').map_or(reference, |(r, _)| r);
        let digests = inspect(reference, "{{range .RepoDigests}}{{println .}}{{end}}");
        digests
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{repo}@")))
            .map(String::from)
            .unwrap_or_else(|| panic!("no RepoDigest of {repo} after the push: {digests}"))
    }

    /// Pushes `id` as `reference` (what the registry serves from now on) without moving the
    /// local tag: the local engine keeps what it had, as on a host before it updates.
    pub fn publish(&self, id: &str, reference: &str) -> String {
        let before = Command::new("docker")
            .args(["inspect", "--format", "{{.Id}}", reference])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        let digest = self.push(id, reference);
        match before {
            Some(old) => docker(&["tag", &old, reference]),
            None => docker(&["rmi", reference]),
        };
        digest
    }

    /// Lines the registry logged for requests so far (its access log).
    pub fn registry_requests(&self) -> usize {
        std::fs::read_to_string(&self.registry_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/"))
            .count()
    }

    /// Deletes the manifest `digest` of `repo` from the registry (its DELETE API).
    pub async fn delete_manifest(&self, repo: &str, digest: &str) {
        let path = repo
            .strip_prefix(&format!("{}/", self.registry))
            .expect("a repo of this registry");
        let url = format!("http://{}/v2/{path}/manifests/{digest}", self.registry);
        let r = reqwest::Client::new()
            .delete(&url)
            .send()
            .await
            .expect("DELETE manifest");
        assert_eq!(
            r.status().as_u16(),
            202,
            "DELETE {url}: {:?}",
            r.text().await
        );
    }

    /// `docker run -d --name NAME --network host ARGS… IMAGE`; the container's id.
    pub fn run(&self, name: &str, args: &[&str], image: &str) -> String {
        let mut all = vec!["run", "-d", "--name", name, "--network", "host"];
        all.extend_from_slice(args);
        all.push(image);
        docker(&all)
    }

    /// Waits until the container's healthcheck says `healthy`.
    pub fn wait_healthy(&self, name: &str) {
        poll(&format!("{name} healthy"), Duration::from_secs(60), || {
            (inspect(name, "{{.State.Health.Status}}") == "healthy").then_some(())
        });
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.registry_process.kill();
        let _ = self.registry_process.wait();
        let list = |args: &[&str]| -> Vec<String> {
            Command::new("docker")
                .args(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        // The volumes the test's containers mounted (an anonymous one handed to a recreated
        // container by name is no longer anonymous to the engine).
        let mut volumes: Vec<String> = Vec::new();
        for line in list(&["ps", "-a", "--format", "{{.ID}} {{.Names}}"]) {
            if let Some((id, name)) = line.split_once(' ') {
                if name.contains(&self.prefix) {
                    let format = "{{range .Mounts}}{{if eq .Type \"volume\"}}{{println .Name}}{{end}}{{end}}";
                    volumes.extend(
                        list(&["inspect", "--format", format, id])
                            .into_iter()
                            .filter(|v| !v.is_empty()),
                    );
                    let _ = Command::new("docker").args(["rm", "-f", "-v", id]).output();
                }
            }
        }
        let mut ids: Vec<String> = Vec::new();
        for line in list(&[
            "image",
            "ls",
            "-a",
            "--no-trunc",
            "--format",
            "{{.ID}} {{.Repository}}",
        ]) {
            if let Some((id, repo)) = line.split_once(' ') {
                if repo.contains(&self.prefix) && !ids.iter().any(|i| i == id) {
                    ids.push(id.to_string());
                }
            }
        }
        for id in ids {
            let _ = Command::new("docker").args(["rmi", "-f", &id]).output();
        }
        volumes.extend(
            list(&["volume", "ls", "--format", "{{.Name}}"])
                .into_iter()
                .filter(|v| v.contains(&self.prefix)),
        );
        for volume in volumes {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f", &volume])
                .output();
        }
    }
}
