//! The Docker part of the lab as tests see it (`cargo xtask lab up --docker-guests`; the
//! `docker` section of `.lab/lab.json`, path in CANOPY_LAB): the registry and its access log,
//! the rate-limiting front, the lab images, the Docker guests 201–204 and their containers;
//! `lab image-push` through CANOPY_XTASK_BIN. Without CANOPY_LAB a test fails, unless
//! CANOPY_SKIP_LAB=1 (then it says it skipped).

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

/// The Accept header of a registry check: Docker manifest lists, OCI indexes, Docker v2 and OCI
/// manifests.
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.list.v2+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.oci.image.manifest.v1+json";

pub struct DockerLab {
    /// lab.json's `docker` section.
    pub json: Value,
    /// The whole lab.json (its `pve` section has the node the Docker guests belong to).
    pub lab: Value,
}

/// A lab image reference (`docker.images.KEY`).
#[derive(Debug, Clone)]
pub struct LabImage {
    pub key: String,
    pub repository: String,
    pub tag: String,
    /// `127.0.0.1:PORT/REPOSITORY:TAG`.
    pub reference: String,
    pub media_type: String,
    /// What `lab up` pushed (v1): the index digest for a multi-platform image.
    pub digest: String,
    pub healthcheck: bool,
    pub multi_platform: bool,
    /// `("linux/amd64", digest)`, … for a multi-platform image.
    pub platforms: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct DockerGuest {
    pub vmid: u32,
    /// The guest's container on the main engine (`canopy-lab-pve1-ctVMID`).
    pub container: String,
    /// `unix:///run/canopy-lab/VMID.sock`: the guest's own engine, from the host.
    pub docker_host: String,
    pub containers: Vec<LabContainer>,
}

#[derive(Debug, Clone)]
pub struct LabContainer {
    pub name: String,
    /// Key into [`DockerLab::images`].
    pub image: String,
    pub reference: String,
    pub restart: String,
    pub compose: Option<Compose>,
}

/// A compose service's labels as docker-compose 1.29 wrote them.
#[derive(Debug, Clone, PartialEq)]
pub struct Compose {
    pub project: String,
    pub service: String,
    pub working_dir: String,
    pub config_files: String,
}

fn text(v: &Value, what: &str) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("lab.json docker.{what} is not a string: rebuild the lab"))
        .to_string()
}

impl DockerLab {
    /// The Docker lab from CANOPY_LAB; `None` (and a SKIPPED line naming `what`) when
    /// CANOPY_SKIP_LAB=1.
    pub fn from_env(what: &str) -> Option<DockerLab> {
        let Ok(path) = std::env::var("CANOPY_LAB") else {
            if std::env::var("CANOPY_SKIP_LAB").as_deref() == Ok("1") {
                eprintln!("SKIPPED (CANOPY_SKIP_LAB=1): {what}");
                return None;
            }
            panic!("set CANOPY_LAB (cargo xtask test does), or CANOPY_SKIP_LAB=1");
        };
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        let json: Value = serde_json::from_str(&text).expect("lab.json is JSON");
        let docker = json["docker"].clone();
        assert!(
            docker.is_object(),
            "lab.json has no \"docker\" section: rebuild the lab with \
             `cargo xtask lab up --docker-guests`"
        );
        Some(DockerLab {
            json: docker,
            lab: json,
        })
    }

    /// The registry's `127.0.0.1:PORT`.
    pub fn registry_host(&self) -> String {
        text(&self.json["registry"]["host"], "registry.host")
    }

    pub fn registry_url(&self) -> String {
        text(&self.json["registry"]["url"], "registry.url")
    }

    /// The registry's access log (one combined-format line per request).
    pub fn access_log(&self) -> PathBuf {
        text(&self.json["registry"]["access_log"], "registry.access_log").into()
    }

    /// The rate-limiting front (`docker.rate_limited`: url, host, retry_after_secs, …).
    pub fn rate_limited(&self) -> &Value {
        &self.json["rate_limited"]
    }

    /// The PVE simulator file of cluster `dock` (the Docker guests on node pve1).
    pub fn sim_file(&self) -> PathBuf {
        text(&self.json["sim_file"], "sim_file").into()
    }

    pub fn images(&self) -> Vec<LabImage> {
        self.json["images"]
            .as_object()
            .expect("lab.json docker.images")
            .iter()
            .map(|(key, i)| LabImage {
                key: key.clone(),
                repository: text(&i["repository"], "images.repository"),
                tag: text(&i["tag"], "images.tag"),
                reference: text(&i["reference"], "images.reference"),
                media_type: text(&i["media_type"], "images.media_type"),
                digest: text(&i["digest"], "images.digest"),
                healthcheck: i["healthcheck"].as_bool().expect("images.healthcheck"),
                multi_platform: i["multi_platform"]
                    .as_bool()
                    .expect("images.multi_platform"),
                platforms: i["platforms"]
                    .as_object()
                    .expect("images.platforms")
                    .iter()
                    .map(|(p, d)| (p.clone(), text(d, "images.platforms")))
                    .collect(),
            })
            .collect()
    }

    /// The image with `key` (`web`, `worker`, `cache`, `multi`).
    pub fn image(&self, key: &str) -> LabImage {
        self.images()
            .into_iter()
            .find(|i| i.key == key)
            .unwrap_or_else(|| panic!("the lab has no image {key}"))
    }

    pub fn guests(&self) -> Vec<DockerGuest> {
        self.json["guests"]
            .as_array()
            .expect("lab.json docker.guests")
            .iter()
            .map(|g| DockerGuest {
                vmid: g["vmid"].as_u64().expect("docker guest vmid") as u32,
                container: text(&g["container"], "guests.container"),
                docker_host: text(&g["docker_host"], "guests.docker_host"),
                containers: g["containers"]
                    .as_array()
                    .expect("guests.containers")
                    .iter()
                    .map(|c| LabContainer {
                        name: text(&c["name"], "containers.name"),
                        image: text(&c["image"], "containers.image"),
                        reference: text(&c["reference"], "containers.reference"),
                        restart: text(&c["restart"], "containers.restart"),
                        compose: (!c["compose"].is_null()).then(|| Compose {
                            project: text(&c["compose"]["project"], "compose.project"),
                            service: text(&c["compose"]["service"], "compose.service"),
                            working_dir: text(&c["compose"]["working_dir"], "compose.working_dir"),
                            config_files: text(
                                &c["compose"]["config_files"],
                                "compose.config_files",
                            ),
                        }),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The registry's access log from a point on: `mark` it, make requests, count them.
pub struct RegistryLog {
    path: PathBuf,
    offset: u64,
}

impl RegistryLog {
    pub fn mark(lab: &DockerLab) -> RegistryLog {
        let path = lab.access_log();
        let offset = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .len();
        RegistryLog { path, offset }
    }

    /// The request lines (`"METHOD PATH HTTP/1.1"` unquoted) logged since the mark, with the
    /// status: `("HEAD /v2/canopy/web/manifests/stable HTTP/1.1", 200)`.
    pub fn requests(&self) -> Vec<(String, u16)> {
        let bytes = std::fs::read(&self.path).expect("the registry's access log");
        let new = String::from_utf8_lossy(&bytes[self.offset as usize..]).into_owned();
        new.lines()
            .filter_map(|line| {
                // 127.0.0.1 - - [date] "METHOD PATH HTTP/1.1" STATUS BYTES "REFERER" "AGENT"
                let mut quoted = line.split('"');
                let request = quoted.nth(1)?.to_string();
                let status = quoted.next()?.split_whitespace().next()?.parse().ok()?;
                Some((request, status))
            })
            .collect()
    }

    /// How many `METHOD PATH` requests were logged since the mark.
    pub fn count(&self, method: &str, path: &str) -> usize {
        let want = format!("{method} {path} HTTP/1.1");
        self.requests().iter().filter(|(r, _)| *r == want).count()
    }

    /// The manifest requests (`HEAD` or `GET /v2/REPO/manifests/…`) for `repository` since the
    /// mark.
    pub fn manifest_requests(&self, repository: &str) -> Vec<(String, u16)> {
        let prefix = format!("/v2/{repository}/manifests/");
        self.requests()
            .into_iter()
            .filter(|(r, _)| {
                let mut f = r.split_whitespace();
                matches!(f.next(), Some("HEAD" | "GET"))
                    && f.next().is_some_and(|p| p.starts_with(&prefix))
            })
            .collect()
    }
}

/// `cargo xtask lab image-push REPOSITORY TAG VARIANT` (v1, v2, broken, crash): a new version
/// in the lab registry; returns its digest.
pub fn image_push(repository: &str, tag: &str, variant: &str) -> String {
    image_push_with(repository, tag, variant, &[])
}

/// [`image_push`] with flags (`--multi-platform`, `--no-healthcheck`).
pub fn image_push_with(repository: &str, tag: &str, variant: &str, flags: &[&str]) -> String {
    let xtask = std::env::var("CANOPY_XTASK_BIN")
        .expect("CANOPY_XTASK_BIN (cargo xtask test exports it) to push into the lab registry");
    let out = Command::new(&xtask)
        .args(["lab", "image-push", repository, tag, variant])
        .args(flags)
        .output()
        .expect("the xtask binary runs");
    assert!(
        out.status.success(),
        "lab image-push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        digest.starts_with("sha256:"),
        "image-push printed {digest:?}"
    );
    digest
}

/// `docker ARGS` run inside the Docker guest `container` (its own engine); panics with the
/// output unless it succeeds; returns stdout.
pub fn guest_docker(container: &str, args: &[&str]) -> String {
    let mut all = vec!["exec", container, "docker"];
    all.extend_from_slice(args);
    super::lab::docker(&all)
}
