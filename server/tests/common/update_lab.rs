//! The lab bulk-update test's helpers: the server with the lab's node pve1 behind the PVE
//! simulator (its action hook acting on the guest containers), the guests' install log, the
//! repository moving on, the real `canopy serve` for the restart scenario.

use super::lab::*;
use super::*;
use canopy_api_types::bulk::{UpdateOptions, UpdateRequest};
use canopy_api_types::deploy::{Operation, OperationItem, OperationState};
use canopy_api_types::OperationId;
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

pub const BREAK_MARKER: &str = "/etc/canopy-demo/break-web";
pub const INSTALL_LOG: &str = "/var/log/canopy-demo-installs.log";

pub struct Env {
    pub app: TestApp,
    pub sim: canopy_pve_sim::RunningCluster,
    pub pve: PveLab,
}

pub async fn setup(lab: &Lab) -> Env {
    let pve = lab.pve();
    let sim_file = pve.sim_file.clone();
    setup_cluster(lab, "lab", &sim_file, |s| {
        s.update.agent_back_timeout_secs = 180;
    })
    .await
}

/// A server (the lab's deploy settings, then `tweak`) with the simulator of `sim_file` added
/// as cluster `name`, node `NAME/pve1` reached through the lab's node stand-in.
pub async fn setup_cluster(
    lab: &Lab,
    name: &str,
    sim_file: &std::path::Path,
    tweak: impl FnOnce(&mut canopy_server::settings::Settings),
) -> Env {
    let pve = lab.pve();
    let file = canopy_pve_sim::SimFile::load(sim_file).expect("the lab's simulator file");
    let sim = canopy_pve_sim::start(file.clusters.into_iter().next().expect("one cluster"))
        .await
        .expect("simulator starts");
    let app = spawn_app_with(Backend::Sqlite, |s| {
        deploy_settings(s, lab, &pve);
        let node = s.deploy.nodes["lab/pve1"].clone();
        s.deploy.nodes.insert(format!("{name}/pve1"), node);
        tweak(s);
    })
    .await
    .unwrap();
    app.admin
        .create_cluster(&canopy_api_types::clusters::CreateCluster {
            name: name.into(),
            endpoints: vec![sim.url()],
            token: sim.token(),
            fingerprints: vec![sim.fingerprint()],
            ca_pem: None,
            interval_secs: Some(3600),
        })
        .await
        .unwrap();
    Env { app, sim, pve }
}

pub fn container(env: &Env, vmid: u32) -> String {
    env.pve.guest(vmid).container.clone()
}

/// Lines of the lab packages' install log: one per postinst run.
pub fn installs(container: &str, what: &str) -> usize {
    in_guest(container, &format!("cat {INSTALL_LOG} 2>/dev/null || true"))
        .lines()
        .filter(|l| l.trim() == what)
        .count()
}

/// Publish `package` `version` in `suite` and point these guests at it (their lists refreshed).
pub fn publish_for(lab: &Lab, env: &Env, suite: &str, package: &str, version: &str, vmids: &[u32]) {
    publish(suite, package, version);
    for &vmid in vmids {
        use_suite(lab, &container(env, vmid), suite);
    }
}

pub async fn wait(env: &Env, id: OperationId, f: impl Fn(&Operation) -> bool) -> Operation {
    let start = std::time::Instant::now();
    loop {
        let op = env.app.admin.operation(id).await.unwrap();
        if f(&op) {
            return op;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "the operation did not get there within 10 minutes: {op:#?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn plan(env: &Env, selector: &str, options: UpdateOptions) -> Operation {
    let op = env
        .app
        .admin
        .start_update(&UpdateRequest {
            selector: selector.into(),
            options,
        })
        .await
        .unwrap();
    let planned = wait(env, op.id, |o| o.state != OperationState::Planning).await;
    assert_eq!(
        planned.state,
        OperationState::AwaitingApproval,
        "{planned:#?}"
    );
    planned
}

pub async fn approve(env: &Env, op: &Operation) {
    let fp = op.update.as_ref().unwrap().fingerprint.clone().unwrap();
    env.app.admin.approve_operation(op.id, &fp).await.unwrap();
}

pub fn item(op: &Operation, vmid: u32) -> &OperationItem {
    op.items
        .iter()
        .find(|i| i.vmid == vmid)
        .unwrap_or_else(|| panic!("no item for {vmid}: {op:#?}"))
}

pub fn planned_packages(op: &Operation, vmid: u32) -> BTreeMap<String, String> {
    item(op, vmid)
        .update
        .as_ref()
        .and_then(|d| d.plan.as_ref())
        .map(|p| {
            p.packages
                .iter()
                .map(|p| (p.package.clone(), p.to_version.clone()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn snapshots(env: &Env, vmid: u32) -> Vec<String> {
    env.sim
        .guest(vmid)
        .map(|g| g.snapshots.iter().map(|s| s.name.clone()).collect())
        .unwrap_or_default()
}

pub fn tasks(env: &Env, vmid: u32, kind: &str) -> usize {
    env.sim
        .tasks()
        .iter()
        .filter(|t| t.id == vmid.to_string() && t.kind == kind)
        .count()
}

pub fn running(container: &str) -> bool {
    docker(&["inspect", "-f", "{{.State.Running}}", container]).trim() == "true"
}

/// The real `canopy serve`, its config in `dir`, on `port`.
pub fn serve(dir: &std::path::Path, port: u16, env: &Env, lab: &Lab) -> std::process::Child {
    let config = dir.join("canopy.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"sqlite://{db}\"\ndata_dir = \"{data}\"\n\
             sweep_interval_secs = 1\n[deploy]\nserver_url = \"http://127.0.0.1:{port}\"\n\
             agent_binary = \"{agent}\"\nssh_key_file = \"{key}\"\ncheckin_timeout_secs = 90\n\
             [deploy.nodes]\n\"lab/pve1\" = \"{node}\"\n[update]\nagent_back_timeout_secs = 180\n",
            db = dir.join("canopy.db").display(),
            data = dir.join("data").display(),
            agent = lab.agent_bin,
            key = env.pve.ssh_key.display(),
            node = env.pve.node.ssh,
        ),
    )
    .unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("CANOPY_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env_remove("CANOPY_DATABASE_URL")
        .env_remove("CANOPY_LISTEN")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("canopy serve starts")
}
