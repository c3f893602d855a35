//! `cargo xtask bench` runs this against the lab (CANOPY_LAB, CANOPY_AGENT_MUSL_BIN; xtask
//! brings the lab up and builds the static agent first): agent deploys through the lab's PVE
//! node stand-in (real sshd, `pct` shim) into its six systemd guests, by the server's own
//! `Deployer`, the code `canopy agent deploy` runs.
//!
//! Every figure is a fresh install (the guests are uninstalled before), start to the first
//! check-in, in one run so the ratios compare like with like. The agent binary is uploaded
//! to the node before anything is timed: a deploy uploads it once per node (later ones
//! `pct push` the node's copy), so whichever run came first would pay for all of them.
//!
//! 1. one guest alone;
//! 2. six guests with `per_node_concurrency = 6`;
//! 3. six guests with `per_node_concurrency = 1` (one after the other);
//! 4. a no-op re-run over the six.
//!
//! `deploy_speedup` = 6 × (1) / (2): how much of a six-fold speed-up the parallel deploy gets
//! on this machine; `deploy_parallel_vs_serial` = (3) / (2).
//!
//! Prints one `BENCH name=value` line per figure for xtask to record.

mod common;

use canopy_api_types::deploy::{DeployAction, DeployRequest, ItemState, Operation};
use canopy_server::state::AppState;
use canopy_store::Actor;
use std::time::{Duration, Instant};

struct Lab {
    node_ssh: String,
    key: String,
    vmids: Vec<u64>,
    hostnames: Vec<String>,
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
    let guests = pve["guests"].as_array().unwrap();
    Lab {
        node_ssh: pve["node"]["ssh"].as_str().unwrap().into(),
        key: pve["ssh_key"].as_str().unwrap().into(),
        vmids: guests.iter().map(|g| g["vmid"].as_u64().unwrap()).collect(),
        hostnames: guests
            .iter()
            .map(|g| g["hostname"].as_str().unwrap().to_string())
            .collect(),
    }
}

/// Runs an operation to its end; its wall time. Panics unless every item succeeded.
async fn run(state: &AppState, selector: &str, action: DeployAction) -> (Operation, Duration) {
    let t = Instant::now();
    let op = state
        .deployer
        .start(
            DeployRequest {
                selector: selector.into(),
                action,
            },
            Actor::System,
        )
        .await
        .unwrap();
    loop {
        let now = state.store.get_operation(op.id).await.unwrap().unwrap();
        if now.state.is_terminal() {
            let took = t.elapsed();
            for i in &now.items {
                assert_eq!(i.state, ItemState::Succeeded, "{i:?}");
            }
            return (now, took);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The agent on the node as a deploy leaves it: the deploy's own upload (the node's staging
/// copy, checked by SHA-256), here into the first guest's /tmp and removed again.
async fn upload_agent_to_node(state: &AppState, lab: &Lab) {
    use canopy_server::deploy::shell::Shell;
    use canopy_server::deploy::ssh::{Ssh, SshTarget};
    use sha2::Digest;
    let agent = std::path::PathBuf::from(std::env::var("CANOPY_AGENT_MUSL_BIN").unwrap());
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&agent).unwrap()));
    let address = canopy_server::deploy::address::SshAddress::parse(&lab.node_ssh).unwrap();
    let target = SshTarget {
        address: address.to_string(),
        user: "root".into(),
        key_file: lab.key.clone().into(),
    };
    let ssh = Ssh::connect(
        &target,
        Duration::from_secs(10),
        state.store.as_ref(),
        &Actor::System,
    )
    .await
    .unwrap();
    let timeout = Duration::from_secs(120);
    let shell = Shell::pct(ssh, lab.vmids[0] as u32, Default::default(), timeout);
    let probe = "/tmp/canopy-bench-upload";
    let t = Instant::now();
    shell.push_executable(&agent, &sha, probe).await.unwrap();
    eprintln!(
        "deploy: agent uploaded to the node in {:.1} s (not timed below)",
        t.elapsed().as_secs_f64()
    );
    shell
        .ok("removing the upload probe", &format!("rm -f {probe}"), None)
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let lab = lab();
    let mut estate = String::from(
        "[[clusters]]\nname = \"lab\"\n[[clusters.tokens]]\nid = \"canopy@pve!lab\"\n\
         secret = \"3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60\"\nrole = \"PVEAuditor\"\n\
         [[clusters.nodes]]\nname = \"pve1\"\nip = \"127.0.0.1\"\n",
    );
    for (vmid, name) in lab.vmids.iter().zip(&lab.hostnames) {
        estate.push_str(&format!(
            "[[clusters.guests]]\nvmid = {vmid}\ntype = \"lxc\"\nnode = \"pve1\"\nname = \"{name}\"\nstatus = \"running\"\n"
        ));
    }
    let sim = canopy_pve_sim::start(
        canopy_pve_sim::SimFile::from_toml_str(&estate)
            .unwrap()
            .clusters[0]
            .clone(),
    )
    .await
    .unwrap();
    let n = lab.vmids.len();
    let (dir_par, dir_ser) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Deploys with `n` slots per node, and with one.
    let parallel = common::lab_server(&lab.node_ssh, &lab.key, &sim, dir_par.path(), |s| {
        s.deploy.per_node_concurrency = n
    })
    .await;
    let serial = common::lab_server(&lab.node_ssh, &lab.key, &sim, dir_ser.path(), |s| {
        s.deploy.per_node_concurrency = 1
    })
    .await;
    let all = "cluster/lab/node/pve1/lxc/*";
    let one = format!("cluster/lab/node/pve1/lxc/{}", lab.vmids[0]);

    run(&parallel, all, DeployAction::Uninstall).await;
    upload_agent_to_node(&parallel, &lab).await;
    let (_, t1) = run(&parallel, &one, DeployAction::Deploy).await;
    run(&parallel, &one, DeployAction::Uninstall).await;
    let (_, tn) = run(&parallel, all, DeployAction::Deploy).await;
    let (_, noop) = run(&parallel, all, DeployAction::Deploy).await;
    run(&serial, all, DeployAction::Uninstall).await;
    let (_, tn_serial) = run(&serial, all, DeployAction::Deploy).await;

    let s = |d: Duration| d.as_secs_f64();
    eprintln!(
        "deploy: 1 guest {:.1} s; {n} guests {:.1} s in parallel, {:.1} s one by one; no-op {:.1} s",
        s(t1),
        s(tn),
        s(tn_serial),
        s(noop)
    );
    println!("BENCH deploy_1_guest_s={:.2}", s(t1));
    println!("BENCH deploy_{n}_guests_s={:.2}", s(tn));
    println!("BENCH deploy_{n}_guests_serial_s={:.2}", s(tn_serial));
    println!("BENCH deploy_noop_{n}_guests_s={:.2}", s(noop));
    println!("BENCH deploy_speedup={:.2}", n as f64 * s(t1) / s(tn));
    println!(
        "BENCH deploy_parallel_vs_serial={:.2}",
        s(tn_serial) / s(tn)
    );
}
