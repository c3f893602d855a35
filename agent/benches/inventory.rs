//! The agent's Docker inventory of a host with 100 containers (issue 13: "inventory and check
//! time for 100 containers"; the check half is the registry bench): 100 containers created
//! from one busybox image on the local engine (`/var/run/docker.sock`, or `DOCKER_HOST`), then
//! `docker::inventory::containers` — list, one inspect per container and per distinct image —
//! timed 11 times in one process. The containers and the image are removed afterwards, also
//! when the bench fails. Prints `BENCH name=value` lines for `cargo xtask bench`.

use canopy_agent::docker::{inventory, DockerConfig, Engine};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const N: usize = 100;
const PREFIX: &str = "canopy-bench-inventory-";
const IMAGE: &str = "canopy-bench/inventory:1";

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the docker CLI does not run ({e}): install docker.io"));
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the bench's containers and image when dropped.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name={PREFIX}")])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").arg("rm").args(&ids).output();
        }
        let _ = Command::new("docker").args(["rmi", IMAGE]).output();
    }
}

fn image() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("bin")).unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("bin/busybox"))
        .expect("/bin/busybox (busybox-static): cargo xtask prereqs installs it");
    std::os::unix::fs::symlink("busybox", dir.path().join("bin/sleep")).unwrap();
    let mut tar = Command::new("tar")
        .args(["-C"])
        .arg(dir.path())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let status = Command::new("docker")
        .args(["import", "-", IMAGE])
        .stdin(tar.stdout.take().unwrap())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        tar.wait().unwrap().success(),
        "tar of the bench image failed"
    );
    assert!(status.success(), "docker import of the bench image failed");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let _cleanup = Cleanup;
    drop(Cleanup); // leftovers of an interrupted run
    image();
    for i in 0..N {
        docker(&[
            "create",
            "--network",
            "host",
            "--name",
            &format!("{PREFIX}{i:03}"),
            IMAGE,
            "/bin/sleep",
            "1000",
        ]);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (times, found) = rt.block_on(async {
        let engine = Engine::connect(&DockerConfig::default(), Duration::from_secs(30))
            .await
            .expect("the engine answers")
            .expect("an engine at /var/run/docker.sock or DOCKER_HOST");
        let mut times = Vec::new();
        let mut found = 0;
        for _ in 0..11 {
            let start = Instant::now();
            let list = inventory::containers(&engine).await.expect("the inventory");
            times.push(start.elapsed());
            found = list.iter().filter(|c| c.name.starts_with(PREFIX)).count();
        }
        (times, found)
    });
    assert_eq!(found, N, "the inventory lists every bench container");
    let mut sorted = times.clone();
    sorted.sort();
    println!("BENCH docker_inventory_containers={N}");
    println!(
        "BENCH docker_inventory_100_p50_ms={:.1}",
        ms(sorted[sorted.len() / 2])
    );
    println!(
        "BENCH docker_inventory_100_max_ms={:.1}",
        ms(sorted[sorted.len() - 1])
    );
}
