//! The Docker part of the lab (`cargo xtask lab up --docker-guests`) with its real components:
//! the registry (Debian's docker-registry 2.8) answers and logs every manifest HEAD in its
//! access log, `lab image-push` moves a tag to a new digest (and back), a multi-platform image
//! is an OCI index of linux/amd64 and linux/arm64, the nginx front answers 429 with Retry-After
//! and Docker Hub's budget headers; each Docker guest's own engine runs exactly its containers
//! (seen from inside the guest and through the node's `pct`), with their environment, labels,
//! restart policies and compose labels naming the guest's paths; a second `docker-compose up
//! -d` in the guest recreates nothing; a broken image's container turns unhealthy. Needs
//! `cargo xtask test` (CANOPY_LAB, CANOPY_XTASK_BIN); without them the test fails, unless
//! CANOPY_SKIP_LAB=1.

mod common;

use common::docker_lab::*;
use common::lab::{docker, docker_output};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Repositories of this test's own (the lab's images stay as other tests expect them).
const SMOKE: &str = "canopy/lab-smoke";
const SMOKE_MULTI: &str = "canopy/lab-smoke-multi";
const SMOKE_HEALTH: &str = "canopy/lab-smoke-health";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// `HEAD http://HOST/v2/REPO/manifests/REFERENCE` with a checker's Accept header.
async fn head(host: &str, repo: &str, reference: &str) -> reqwest::Response {
    http()
        .head(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap()
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_logs_manifest_heads_and_image_push_moves_tags() {
    let Some(lab) = DockerLab::from_env("lab registry, image-push, rate-limiting front") else {
        return;
    };
    let host = lab.registry_host();
    let ping = http()
        .get(format!("{}/v2/", lab.registry_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);
    assert_eq!(
        header(&ping, "docker-distribution-api-version"),
        "registry/2.0"
    );

    // A tag of our own at v1; three HEADs are three HEAD lines in the registry's own log.
    let v1 = image_push(SMOKE, "moving", "v1");
    let log = RegistryLog::mark(&lab);
    for _ in 0..3 {
        let r = head(&host, SMOKE, "moving").await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "docker-content-digest"), v1);
        assert_eq!(
            header(&r, "content-type"),
            "application/vnd.docker.distribution.manifest.v2+json"
        );
    }
    let path = format!("/v2/{SMOKE}/manifests/moving");
    assert_eq!(log.count("HEAD", &path), 3, "{:#?}", log.requests());
    assert_eq!(
        log.manifest_requests(SMOKE),
        vec![(format!("HEAD {path} HTTP/1.1"), 200); 3],
        "HEADs only, no GET"
    );

    // image-push moves the tag to v2's digest, and back to v1's (variants are deterministic).
    let log = RegistryLog::mark(&lab);
    let v2 = image_push(SMOKE, "moving", "v2");
    assert_ne!(v2, v1);
    assert_eq!(log.count("PUT", &path), 1, "{:#?}", log.requests());
    assert_eq!(
        header(&head(&host, SMOKE, "moving").await, "docker-content-digest"),
        v2
    );
    assert_eq!(image_push(SMOKE, "moving", "v1"), v1);
    assert_eq!(
        header(&head(&host, SMOKE, "moving").await, "docker-content-digest"),
        v1
    );

    multi_platform_index(&lab, &host).await;
    rate_limited_front(&lab, &v1).await;
}

/// A multi-platform push is an OCI index whose digest is its content's, listing a linux/amd64
/// image (with the healthcheck in its config) and a linux/arm64 one; the lab's own
/// multi-platform image is described so in lab.json.
async fn multi_platform_index(lab: &DockerLab, host: &str) {
    let index_digest = image_push_with(SMOKE_MULTI, "t", "v1", &["--multi-platform"]);
    let r = http()
        .get(format!("http://{host}/v2/{SMOKE_MULTI}/manifests/t"))
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-type"),
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(header(&r, "docker-content-digest"), index_digest);
    let body = r.bytes().await.unwrap();
    assert_eq!(sha256(&body), index_digest);
    let index: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let platforms: BTreeSet<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        platforms,
        BTreeSet::from(["linux/amd64".into(), "linux/arm64".into()])
    );
    let amd64 = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: serde_json::Value = http()
        .get(format!("http://{host}/v2/{SMOKE_MULTI}/manifests/{amd64}"))
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value = http()
        .get(format!(
            "http://{host}/v2/{SMOKE_MULTI}/blobs/{config_digest}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(
        config["config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "test -f /healthy"])
    );

    let multi = lab.image("multi");
    assert!(multi.multi_platform);
    assert_eq!(multi.media_type, "application/vnd.oci.image.index.v1+json");
    let lab_platforms: BTreeSet<&str> = multi.platforms.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        lab_platforms,
        BTreeSet::from(["linux/amd64", "linux/arm64"])
    );
}

/// The nginx front: manifest requests over its rate answered 429 with Retry-After and the
/// exhausted budget; others pass to the registry with Docker Hub's budget headers; after
/// Retry-After seconds a request passes again.
async fn rate_limited_front(lab: &DockerLab, digest: &str) {
    let front = lab.rate_limited();
    let host = front["host"].as_str().unwrap();
    let retry_after = front["retry_after_secs"].as_u64().unwrap();
    let (mut passed, mut limited) = (None, None);
    for _ in 0..10 {
        let r = head(host, SMOKE, "moving").await;
        match r.status().as_u16() {
            200 => passed = Some(r),
            429 => limited = Some(r),
            other => panic!("the front answered {other}"),
        }
        if passed.is_some() && limited.is_some() {
            break;
        }
    }
    let passed = passed.expect("a manifest request passes the front");
    assert_eq!(header(&passed, "docker-content-digest"), digest);
    assert_eq!(header(&passed, "ratelimit-limit"), front["ratelimit_limit"]);
    assert_eq!(
        header(&passed, "ratelimit-remaining"),
        front["ratelimit_remaining"]
    );
    let limited = limited.expect("back-to-back manifest requests are limited");
    assert_eq!(header(&limited, "retry-after"), retry_after.to_string());
    assert_eq!(
        header(&limited, "ratelimit-remaining"),
        front["ratelimit_remaining_when_limited"]
    );
    // Not limited: the API root.
    let root = http()
        .get(format!("http://{host}/v2/"))
        .send()
        .await
        .unwrap();
    assert_eq!(root.status(), 200);
    // Honouring Retry-After, the next request passes (bounded: a few windows).
    let waited = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(retry_after)).await;
        if head(host, SMOKE, "moving").await.status() == 200 {
            break;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(5 * retry_after),
            "still limited after waiting Retry-After several times"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_docker_guest_runs_its_own_containers() {
    let Some(lab) = DockerLab::from_env("lab Docker guests, compose projects, healthchecks") else {
        return;
    };
    let guests = lab.guests();
    assert_eq!(
        guests.iter().map(|g| g.vmid).collect::<Vec<_>>(),
        vec![201, 202, 203, 204]
    );
    // 20 containers on 3 single-platform references, one on the multi-platform image.
    let all: Vec<&LabContainer> = guests.iter().flat_map(|g| &g.containers).collect();
    let single: Vec<&&LabContainer> = all.iter().filter(|c| c.image != "multi").collect();
    assert_eq!(single.len(), 20);
    let refs: BTreeSet<&str> = single.iter().map(|c| c.reference.as_str()).collect();
    assert_eq!(refs.len(), 3, "{refs:?}");
    assert_eq!(all.iter().filter(|c| c.image == "multi").count(), 1);
    assert!(all.iter().any(|c| c.compose.is_some()) && all.iter().any(|c| c.compose.is_none()));

    for g in &guests {
        // Inside the guest (its socket, the CLI) and from the host (the same engine).
        let mut want: Vec<&str> = g.containers.iter().map(|c| c.name.as_str()).collect();
        want.sort_unstable();
        let inside = guest_docker(&g.container, &["ps", "-a", "--format", "{{.Names}}"]);
        let mut inside: Vec<&str> = inside.split_whitespace().collect();
        inside.sort_unstable();
        assert_eq!(inside, want, "docker ps in {}", g.container);
        let host = docker(&["-H", &g.docker_host, "ps", "--format", "{{.Names}}"]);
        let mut host: Vec<&str> = host.split_whitespace().collect();
        host.sort_unstable();
        assert_eq!(host, want, "running in the engine of {}", g.container);
        for c in &g.containers {
            container_config(g, c);
        }
    }
    through_pct(&lab, &guests);
    compose_up_again_recreates_nothing(&guests);
    multi_platform_container(&lab, &guests).await;
    broken_image_turns_unhealthy(&lab, &guests[3]);
    let sim = canopy_pve_sim::SimFile::load(lab.sim_file()).expect("sim-dock.toml loads");
    let cluster = &sim.clusters[0];
    assert_eq!(cluster.name, "dock");
    assert!(cluster.hook.is_some());
    assert_eq!(
        cluster.guests.iter().map(|g| g.vmid).collect::<Vec<_>>(),
        vec![201, 202, 203, 204]
    );
}

/// Host network, no bind mounts, the environment, label and restart policy `lab up` gave it,
/// and for a compose service the compose labels naming a file that exists in the guest only.
fn container_config(g: &DockerGuest, c: &LabContainer) {
    let fmt = "{{.HostConfig.NetworkMode}}|{{.HostConfig.RestartPolicy.Name}}|\
               {{.HostConfig.RestartPolicy.MaximumRetryCount}}|\
               {{range .Mounts}}{{.Type}} {{end}}|{{json .Config.Env}}|{{json .Config.Labels}}";
    let out = guest_docker(&g.container, &["inspect", "--format", fmt, &c.name]);
    let f: Vec<&str> = out.trim().splitn(6, '|').collect();
    assert_eq!(f[0], "host", "{}", c.name);
    let restart = match f[2] {
        "0" => f[1].to_string(),
        n => format!("{}:{n}", f[1]),
    };
    assert_eq!(restart, c.restart, "{}", c.name);
    assert!(!f[3].contains("bind"), "{} bind-mounts: {}", c.name, f[3]);
    let env: Vec<String> = serde_json::from_str(f[4]).unwrap();
    let labels: serde_json::Map<String, serde_json::Value> = serde_json::from_str(f[5]).unwrap();
    let role = match &c.compose {
        None => c.name.clone(),
        Some(compose) => format!("{}-{}", compose.project, compose.service),
    };
    assert!(
        env.contains(&format!("CANOPY_LAB_ROLE={role}")),
        "{}: {env:?}",
        c.name
    );
    assert_eq!(labels["canopy.lab.role"], role.as_str(), "{}", c.name);
    if let Some(compose) = &c.compose {
        let label = |k: &str| {
            labels[&format!("com.docker.compose.{k}")]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(
            Compose {
                project: label("project"),
                service: label("service"),
                working_dir: label("project.working_dir"),
                config_files: label("project.config_files"),
            },
            *compose
        );
        let file = format!("{}/{}", compose.working_dir, compose.config_files);
        assert!(compose.working_dir.starts_with("/srv/compose/"));
        let found = docker_output(&["exec", &g.container, "test", "-f", &file]);
        assert!(found.status.success(), "{file} is in {}", g.container);
        assert!(
            !std::path::Path::new(&file).exists(),
            "{file} is a guest path, not the host's"
        );
    }
}

/// The node stand-in's `pct` reaches the Docker guests: `pct list` shows 201–204 running and
/// `pct exec VMID -- docker ps` lists that guest's containers.
fn through_pct(lab: &DockerLab, guests: &[DockerGuest]) {
    let pve = &lab.lab["pve"];
    let key = pve["ssh_key"].as_str().unwrap();
    let port = pve["node"]["ssh"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    let mut remote = String::from("pct list");
    for g in guests {
        remote.push_str(&format!(
            " && echo '== {}' && pct exec {} -- docker ps --format '{{{{.Names}}}}'",
            g.vmid, g.vmid
        ));
    }
    let out = std::process::Command::new("ssh")
        .args([
            "-i",
            key,
            "-p",
            port,
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(["-o", "LogLevel=ERROR", "root@127.0.0.1", &remote])
        .output()
        .expect("ssh runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for g in guests {
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&g.vmid.to_string()));
        assert!(
            row.is_some_and(|r| r.contains("running") && r.contains(&format!("ct{}", g.vmid))),
            "pct list: {text}"
        );
        let section = text.split(&format!("== {}\n", g.vmid)).nth(1).unwrap();
        let mut names: Vec<&str> = section
            .split("== ")
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        names.sort_unstable();
        let mut want: Vec<&str> = g.containers.iter().map(|c| c.name.as_str()).collect();
        want.sort_unstable();
        assert_eq!(names, want, "pct exec {} -- docker ps", g.vmid);
    }
}

/// `docker-compose up -d` run again in each project's directory inside the guest leaves every
/// container as it is (same ids).
fn compose_up_again_recreates_nothing(guests: &[DockerGuest]) {
    let mut projects = 0;
    for g in guests {
        let dirs: BTreeSet<&str> = g
            .containers
            .iter()
            .filter_map(|c| c.compose.as_ref().map(|p| p.working_dir.as_str()))
            .collect();
        for dir in dirs {
            projects += 1;
            let ids = || {
                let mut ids: Vec<String> = guest_docker(&g.container, &["ps", "-aq", "--no-trunc"])
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                ids.sort_unstable();
                ids
            };
            let before = ids();
            let out = docker_output(&[
                "exec",
                &g.container,
                "sh",
                "-c",
                &format!("cd {dir} && docker-compose up -d"),
            ]);
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "docker-compose up -d in {dir}: {said}"
            );
            assert!(said.contains("is up-to-date"), "{said}");
            assert_eq!(
                ids(),
                before,
                "docker-compose up -d in {dir} recreated containers"
            );
        }
    }
    assert_eq!(projects, 3, "the lab has three compose projects");
}

/// The multi-platform container runs the amd64 image pulled by the tag: its RepoDigests hold
/// the index digest, the one the registry answers for the tag today (so it is up to date).
async fn multi_platform_container(lab: &DockerLab, guests: &[DockerGuest]) {
    let multi = lab.image("multi");
    let (g, c) = guests
        .iter()
        .find_map(|g| {
            g.containers
                .iter()
                .find(|c| c.image == "multi")
                .map(|c| (g, c))
        })
        .expect("a container on the multi-platform image");
    let r = head(&lab.registry_host(), &multi.repository, &multi.tag).await;
    let current = header(&r, "docker-content-digest");
    let image = guest_docker(
        &g.container,
        &["inspect", "--format", "{{.Image}}", &c.name],
    );
    let out = guest_docker(
        &g.container,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Architecture}} {{json .RepoDigests}}",
            image.trim(),
        ],
    );
    let (arch, digests) = out.trim().split_once(' ').unwrap();
    assert_eq!(arch, "amd64");
    let digests: Vec<String> = serde_json::from_str(digests).unwrap();
    let repo = c.reference.rsplit_once(':').unwrap().0;
    assert!(
        digests.contains(&format!("{repo}@{current}")),
        "RepoDigests {digests:?} lack the index digest {current}"
    );
    let amd64 = &multi
        .platforms
        .iter()
        .find(|(p, _)| p == "linux/amd64")
        .unwrap()
        .1;
    assert!(
        !digests.iter().any(|d| d.ends_with(amd64.as_str())),
        "the platform digest is not a RepoDigest"
    );
}

/// Removes the test's containers and images from a guest, also when the test fails.
struct Cleanup<'a> {
    guest: &'a str,
    names: Vec<&'static str>,
    images: Vec<String>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let mut args = vec!["exec", self.guest, "docker", "rm", "-f"];
        args.extend(&self.names);
        let _ = docker_output(&args);
        let mut args = vec!["exec", self.guest, "docker", "image", "rm"];
        args.extend(self.images.iter().map(String::as_str));
        let _ = docker_output(&args);
    }
}

/// A container of the `broken` variant turns unhealthy and keeps running; one of v1 turns
/// healthy.
fn broken_image_turns_unhealthy(lab: &DockerLab, g: &DockerGuest) {
    image_push(SMOKE_HEALTH, "good", "v1");
    image_push(SMOKE_HEALTH, "broken", "broken");
    let host = lab.registry_host();
    let reference = |tag: &str| format!("{host}/{SMOKE_HEALTH}:{tag}");
    let cleanup = Cleanup {
        guest: &g.container,
        names: vec!["lab-smoke-good", "lab-smoke-broken"],
        images: vec![reference("good"), reference("broken")],
    };
    for (name, tag) in [("lab-smoke-good", "good"), ("lab-smoke-broken", "broken")] {
        let reference = reference(tag);
        guest_docker(
            &g.container,
            &["run", "-d", "--name", name, "--network", "host", &reference],
        );
    }
    let state = |name: &str| {
        let fmt = "{{.State.Status}} {{.State.Health.Status}}";
        guest_docker(&g.container, &["inspect", "--format", fmt, name])
            .trim()
            .to_string()
    };
    let start = Instant::now();
    loop {
        let (good, broken) = (state("lab-smoke-good"), state("lab-smoke-broken"));
        if good == "running healthy" && broken == "running unhealthy" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "after 60s: good {good:?}, broken {broken:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(cleanup);
}
