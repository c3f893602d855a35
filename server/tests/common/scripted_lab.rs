//! A simulated node pve1 (the PVE simulator, cluster `lab`) whose guests run scripted agents
//! (`scripted.rs`), added to a real server: the update engine's tests plan, approve and
//! follow operations on it and look at what PVE and each guest saw.

use super::scripted::*;
use super::*;
use canopy_api_types::bulk::{UpdateOptions, UpdateRequest};
use canopy_api_types::deploy::{Operation, OperationItem, OperationState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const TOKEN: &str = "canopy@pve!lab=3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60";

pub fn estate() -> String {
    let mut s = String::from(
        "[[clusters]]\nname = \"lab\"\n[[clusters.tokens]]\nid = \"canopy@pve!lab\"\n\
         secret = \"3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60\"\nrole = \"Administrator\"\n\
         [[clusters.nodes]]\nname = \"pve1\"\n",
    );
    for (vmid, status, template) in [
        (101, "running", false),
        (102, "running", false),
        (103, "running", false),
        (104, "stopped", false),
        (105, "stopped", true),
        (106, "running", false),
        (107, "running", false),
    ] {
        s.push_str(&format!(
            "[[clusters.guests]]\nvmid = {vmid}\ntype = \"lxc\"\nnode = \"pve1\"\nname = \"ct{vmid}\"\n\
             status = \"{status}\"\ntemplate = {template}\n"
        ));
        // 107's root disk is a directory: it cannot snapshot.
        if vmid == 107 {
            s.push_str("storage = \"local\"\n");
        }
    }
    // A VM (named like the others: the scripted agents enrol as `ct{vmid}`).
    s.push_str(
        "[[clusters.guests]]\nvmid = 200\ntype = \"qemu\"\nnode = \"pve1\"\nname = \"ct200\"\n\
         status = \"running\"\n",
    );
    s
}

pub struct Lab {
    pub app: TestApp,
    pub sim: Arc<canopy_pve_sim::RunningCluster>,
    pub guests: BTreeMap<u32, Scripted>,
}

pub async fn lab(backend: Backend, states: Vec<(u32, GuestState)>) -> Option<Lab> {
    let app = spawn_app_with(backend, |s| {
        s.update.agent_back_timeout_secs = 60;
    })
    .await?;
    let sim = Arc::new(start_sim(&estate()).await);
    sim.set_task_duration(Duration::from_millis(50));
    let mut guests = BTreeMap::new();
    for (vmid, st) in states {
        guests.insert(vmid, scripted(&app, sim.clone(), vmid, st).await);
    }
    app.add_cluster("lab", &sim, TOKEN).await;
    Some(Lab { app, sim, guests })
}

impl Lab {
    pub async fn plan(&self, options: UpdateOptions) -> Operation {
        let op = self
            .app
            .admin
            .start_update(&UpdateRequest {
                selector: "cluster/lab/node/pve1/lxc/*".into(),
                options,
            })
            .await
            .unwrap();
        assert_eq!(op.state, OperationState::Planning);
        self.until(op.id, |o| o.state != OperationState::Planning)
            .await
    }

    pub async fn until(
        &self,
        id: canopy_api_types::OperationId,
        f: impl Fn(&Operation) -> bool,
    ) -> Operation {
        let start = std::time::Instant::now();
        loop {
            let op = self.app.admin.operation(id).await.unwrap();
            if f(&op) {
                return op;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the operation did not get there within 120 s: {op:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn installs(&self, vmid: u32) -> Vec<String> {
        self.guests[&vmid].state.lock().unwrap().installs.clone()
    }

    pub fn snapshots(&self, vmid: u32) -> Vec<String> {
        self.sim
            .guest(vmid)
            .map(|g| g.snapshots.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default()
    }

    pub fn tasks(&self, vmid: u32, kind: &str) -> usize {
        self.sim
            .tasks()
            .iter()
            .filter(|t| t.id == vmid.to_string() && t.kind == kind)
            .count()
    }
}

pub fn item(op: &Operation, vmid: u32) -> &OperationItem {
    op.items
        .iter()
        .find(|i| i.vmid == vmid)
        .unwrap_or_else(|| panic!("no item for {vmid} in {op:#?}"))
}

pub fn fingerprint(op: &Operation) -> String {
    op.update.as_ref().unwrap().fingerprint.clone().unwrap()
}
