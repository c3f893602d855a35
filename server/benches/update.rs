//! `cargo xtask bench` runs this against the lab (CANOPY_LAB, CANOPY_AGENT_MUSL_BIN): bulk
//! update operations over the lab's six systemd guests behind the PVE simulator, whose
//! snapshot, rollback and reboot act on the guest containers (the lab's action hook). The
//! server runs in this process; the agents are the real static agent, deployed over SSH.
//!
//! 1. each guest alone: one operation on that guest, from approval to its end (snapshot,
//!    health, pinned install, reboot, health); then the guest is rolled back to the snapshot
//!    through the PVE API, so every run starts from the same packages;
//! 2. the six together, `per_node_concurrency` = 2, from approval to the end.
//!
//! `update_wall_ratio` = (2) / (ceil(6 / 2) × the slowest guest alone), measured in the same
//! run: 1.0 means the operation costs nothing over its guests' own work. Also reported: the
//! plan of the six (scan + dry-run, all at once) and the time from approval to the first
//! install starting. Prints one `BENCH name=value` line per figure.

mod common;

use canopy_api_types::bulk::{RebootPolicy, SnapshotPolicy, UpdateOptions, UpdateRequest};
use canopy_api_types::deploy::{DeployAction, DeployRequest, ItemState, Operation, OperationState};
use canopy_hypervisor::GuestKind;
use canopy_hypervisor::{Hypervisor, PowerAction};
use canopy_server::state::AppState;
use canopy_store::Actor;
use std::time::{Duration, Instant};
const PER_NODE: u32 = 2;

struct Lab {
    node_ssh: String,
    key: String,
    sim_file: String,
    vmids: Vec<u32>,
}

fn lab() -> Lab {
    let path = std::env::var("CANOPY_LAB").expect("CANOPY_LAB: run through `cargo xtask bench`");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("lab.json")).unwrap();
    let pve = &json["pve"];
    assert!(
        pve.is_object(),
        "lab.json has no pve section: `cargo xtask lab up`"
    );
    Lab {
        node_ssh: pve["node"]["ssh"].as_str().unwrap().into(),
        key: pve["ssh_key"].as_str().unwrap().into(),
        sim_file: pve["sim_file"].as_str().expect("pve.sim_file").into(),
        vmids: pve["guests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["vmid"].as_u64().unwrap() as u32)
            .collect(),
    }
}

async fn until(
    state: &AppState,
    id: canopy_api_types::OperationId,
    f: impl Fn(&Operation) -> bool,
) -> Operation {
    let start = Instant::now();
    loop {
        let op = state.store.get_operation(id).await.unwrap().unwrap();
        if f(&op) {
            return op;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1200),
            "stuck: {op:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Plans and approves an update of `selector`; (the operation, plan time, approval → end,
/// approval → first install started).
async fn update(state: &AppState, selector: &str) -> (Operation, Duration, Duration, Duration) {
    let t = Instant::now();
    let op = state
        .updater
        .start(
            UpdateRequest {
                selector: selector.into(),
                options: UpdateOptions {
                    exclude: vec!["canopy-demo-slow".into()],
                    reboot: RebootPolicy::IfRequired,
                    snapshot: SnapshotPolicy::Required,
                    per_node_concurrency: PER_NODE,
                    concurrency: 6,
                    ..Default::default()
                },
            },
            Actor::System,
        )
        .await
        .unwrap();
    let planned = until(state, op.id, |o| o.state != OperationState::Planning).await;
    let plan = t.elapsed();
    assert_eq!(
        planned.state,
        OperationState::AwaitingApproval,
        "{planned:#?}"
    );
    let fp = planned
        .update
        .as_ref()
        .unwrap()
        .fingerprint
        .clone()
        .unwrap();
    let approved_at = chrono::Utc::now();
    let t = Instant::now();
    state
        .updater
        .approve(op.id, &fp, Actor::System)
        .await
        .unwrap();
    let done = until(state, op.id, |o| o.state.is_terminal()).await;
    let took = t.elapsed();
    for i in &done.items {
        assert_eq!(i.state, ItemState::Succeeded, "{i:#?}");
    }
    let first_install = done
        .items
        .iter()
        .flat_map(|i| i.update.iter().flat_map(|d| d.steps.iter()))
        .filter(|s| s.step == "install" && s.status == "started")
        .map(|s| s.at)
        .min()
        .expect("an install started");
    let to_install = (first_install - approved_at).to_std().unwrap_or_default();
    (done, plan, took, to_install)
}

/// Back to the snapshot the operation took, through the PVE API; waits for the agent.
async fn roll_back(state: &AppState, op: &Operation, vmid: u32) {
    let pve = state.discovery.cluster_client("lab").await.unwrap();
    let item = op.items.iter().find(|i| i.vmid == vmid).unwrap();
    let snap = item.update.as_ref().unwrap().snapshot.clone().unwrap();
    let wait = |upid: canopy_hypervisor::types::Upid| {
        let pve = pve.clone();
        async move {
            loop {
                let st = pve.task_status(&upid).await.unwrap();
                if st.status == "stopped" {
                    assert_eq!(st.exitstatus.as_deref(), Some("OK"), "{st:?}");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait(
        pve.snapshot_rollback("pve1", GuestKind::Lxc, vmid, &snap)
            .await
            .unwrap(),
    )
    .await;
    wait(
        pve.power("pve1", GuestKind::Lxc, vmid, PowerAction::Start)
            .await
            .unwrap(),
    )
    .await;
    let host = item.host_id.unwrap();
    let since = chrono::Utc::now();
    loop {
        let h = state.store.get_host(host).await.unwrap().unwrap();
        if h.last_seen.is_some_and(|t| t > since) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() {
    let lab = lab();
    let file = canopy_pve_sim::SimFile::load(&lab.sim_file).expect("the lab's simulator file");
    let sim = canopy_pve_sim::start(file.clusters.into_iter().next().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = common::lab_server(&lab.node_ssh, &lab.key, &sim, dir.path(), |s| {
        s.sweep_interval_secs = 1;
        s.deploy.per_node_concurrency = 6;
    })
    .await;
    let all = "cluster/lab/node/pve1/lxc/*";
    let deploy = state
        .deployer
        .start(
            DeployRequest {
                selector: all.into(),
                action: DeployAction::Deploy,
            },
            Actor::System,
        )
        .await
        .unwrap();
    let deployed = until(&state, deploy.id, |o| o.state.is_terminal()).await;
    assert_eq!(deployed.state, OperationState::Succeeded, "{deployed:#?}");

    let mut alone = Vec::new();
    for &vmid in &lab.vmids {
        let one = format!("cluster/lab/node/pve1/lxc/{vmid}");
        let (op, _, took, _) = update(&state, &one).await;
        eprintln!("update: ct{vmid} alone {:.1} s", took.as_secs_f64());
        alone.push(took);
        roll_back(&state, &op, vmid).await;
    }
    let (_, plan, wall, to_install) = update(&state, all).await;
    let slowest = alone.iter().max().copied().unwrap();
    let n = lab.vmids.len() as u32;
    let rounds = n.div_ceil(PER_NODE);
    let s = |d: Duration| d.as_secs_f64();
    eprintln!(
        "update: {n} guests {:.1} s (plan {:.1} s); slowest alone {:.1} s; {rounds} rounds of {PER_NODE}",
        s(wall),
        s(plan),
        s(slowest)
    );
    println!("BENCH update_{n}_guests_s={:.2}", s(wall));
    println!("BENCH update_slowest_alone_s={:.2}", s(slowest));
    println!("BENCH update_plan_{n}_guests_s={:.2}", s(plan));
    println!(
        "BENCH update_wall_ratio={:.2}",
        s(wall) / (f64::from(rounds) * s(slowest))
    );
    println!(
        "BENCH update_approve_to_first_install_s={:.2}",
        s(to_install)
    );
}
