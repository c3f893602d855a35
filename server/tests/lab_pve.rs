//! The lab's node pve1 behind the PVE simulator (`pve.sim_file` in lab.json): guest tasks
//! started through the real `PveClient` act on the guest containers through the simulator's
//! action hook (`cargo xtask lab pve-action`). A snapshot, then a package installed in the
//! guest, then a rollback through the API really restores the old package; a reboot through the
//! API restarts the container, which keeps its machine-id and its services; a hook failure is
//! the task's error. A vzdump backup, restored over the stopped guest, brings the old package
//! back the same way, and deleting the archive removes its image. Needs `cargo xtask test` (CANOPY_LAB); fails without it unless
//! CANOPY_SKIP_LAB=1.

mod common;

use canopy_hypervisor::types::{TaskStatus, Upid};
use canopy_hypervisor::{
    ApiToken, Connection, GuestKind, Hypervisor, PowerAction, PveClient, Trust,
};
use canopy_pve_sim::{RunningCluster, SimFile};
use common::lab::*;
use common::*;
use std::time::Duration;

/// The guest this test snapshots, changes and rolls back.
const VMID: u32 = 103;
const PKG: &str = "canopy-demo-hello";

async fn lab_sim(lab: &Lab) -> RunningCluster {
    let file = SimFile::load(lab.pve().sim_file).expect("the lab's simulator file loads");
    let cluster = file.clusters.into_iter().next().expect("one cluster");
    assert_eq!(cluster.name, "lab");
    assert!(
        cluster.hook.is_some(),
        "the lab's cluster has an action hook"
    );
    canopy_pve_sim::start(cluster)
        .await
        .expect("simulator starts")
}

fn client(sim: &RunningCluster) -> PveClient {
    let pin = sim.fingerprint().parse().expect("fingerprint");
    let token: ApiToken = sim.token().parse().expect("token");
    PveClient::new(Connection::new(
        vec![sim.url()],
        token,
        Trust::Fingerprints(vec![pin]),
    ))
    .expect("client")
}

/// Polls the task until it stops (the hook may boot a guest: up to two minutes).
async fn await_task(pve: &PveClient, upid: &Upid) -> TaskStatus {
    eventually(Duration::from_secs(180), || async {
        let status = pve.task_status(upid).await.expect("task status");
        (status.status == "stopped").then_some(status)
    })
    .await
}

async fn guest_status(pve: &PveClient) -> String {
    pve.guests("pve1", GuestKind::Lxc)
        .await
        .expect("lxc list")
        .into_iter()
        .find(|g| g.vmid == VMID)
        .expect("guest listed")
        .status
        .unwrap_or_default()
}

fn inspect(container: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, container])
        .trim()
        .to_string()
}

/// Puts the guest back (running, the old package) even when an assertion failed midway.
struct Restore {
    container: String,
    old: String,
    snapshot_image: String,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = docker_output(&["image", "rm", "-f", &self.snapshot_image]);
        let _ = docker_output(&["start", &self.container]);
        let _ = docker_output(&[
            "exec",
            &self.container,
            "sh",
            "-c",
            &format!(
                "systemctl is-system-running --wait >/dev/null; DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -q --allow-downgrades {PKG}={} >/dev/null",
                self.old
            ),
        ]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_rollback_and_reboot_through_the_api_act_on_the_lab_guest() {
    let Some(lab) = Lab::from_env("lab PVE actions (snapshot, rollback, reboot)") else {
        return;
    };
    let container = lab.pve().guest(VMID).container.clone();
    let old = lab.json["packages"][PKG]["old"]
        .as_str()
        .expect("lab.json packages")
        .to_string();
    let new = lab.json["packages"][PKG]["new"]
        .as_str()
        .unwrap()
        .to_string();
    let snap = format!("labtest_{}", std::process::id());
    let snapshot_image = format!("canopy-lab/snap-{container}:{snap}");
    let _restore = Restore {
        container: container.clone(),
        old: old.clone(),
        snapshot_image: snapshot_image.clone(),
    };
    assert_eq!(dpkg_version(&container, PKG), old);
    let machine_id = in_guest(&container, "cat /etc/machine-id");
    let sim = lab_sim(&lab).await;
    let pve = client(&sim);

    // Snapshot, then the repository's new version installed behind PVE's back.
    let upid = pve
        .snapshot_create("pve1", GuestKind::Lxc, VMID, &snap, "lab test")
        .await
        .expect("snapshot");
    let done = await_task(&pve, &upid).await;
    assert_eq!(done.exitstatus.as_deref(), Some("OK"), "{done:?}");
    in_guest(
        &container,
        &format!("DEBIAN_FRONTEND=noninteractive apt-get install -y -q {PKG} >/dev/null"),
    );
    assert_eq!(dpkg_version(&container, PKG), new);

    // Rollback: the container is recreated from the snapshot, stopped (as PVE leaves a CT).
    let upid = pve
        .snapshot_rollback("pve1", GuestKind::Lxc, VMID, &snap)
        .await
        .expect("rollback");
    let done = await_task(&pve, &upid).await;
    assert_eq!(done.exitstatus.as_deref(), Some("OK"), "{done:?}");
    assert_eq!(inspect(&container, "{{.State.Running}}"), "false");
    assert_eq!(guest_status(&pve).await, "stopped");

    // Start: the old version is back, same host identity, the service runs again.
    let upid = pve
        .power("pve1", GuestKind::Lxc, VMID, PowerAction::Start)
        .await
        .expect("start");
    let done = await_task(&pve, &upid).await;
    assert_eq!(done.exitstatus.as_deref(), Some("OK"), "{done:?}");
    assert_eq!(guest_status(&pve).await, "running");
    assert_eq!(dpkg_version(&container, PKG), old);
    assert_eq!(in_guest(&container, "cat /etc/machine-id"), machine_id);
    assert_eq!(
        in_guest(&container, "systemctl is-active canopy-demo-web.service"),
        "active"
    );

    // Reboot through the API restarts the container (a new start time, same identity).
    let started = inspect(&container, "{{.State.StartedAt}}");
    in_guest(&container, "touch /run/canopy-lab-before-reboot");
    let upid = pve
        .power("pve1", GuestKind::Lxc, VMID, PowerAction::Reboot)
        .await
        .expect("reboot");
    let done = await_task(&pve, &upid).await;
    assert_eq!(done.exitstatus.as_deref(), Some("OK"), "{done:?}");
    assert_ne!(inspect(&container, "{{.State.StartedAt}}"), started);
    assert_eq!(
        in_guest(
            &container,
            "test -e /run/canopy-lab-before-reboot && echo kept || echo gone"
        ),
        "gone",
        "/run is a fresh tmpfs after a reboot"
    );
    assert_eq!(in_guest(&container, "cat /etc/machine-id"), machine_id);
    assert_eq!(
        in_guest(&container, "systemctl is-active canopy-demo-web.service"),
        "active"
    );

    // A hook failure is the task's error: the snapshot's image is gone, nothing changes.
    docker(&["image", "rm", "-f", &snapshot_image]);
    let upid = pve
        .snapshot_rollback("pve1", GuestKind::Lxc, VMID, &snap)
        .await
        .expect("rollback");
    let done = await_task(&pve, &upid).await;
    let error = done.exitstatus.clone().unwrap_or_default();
    assert!(
        error.contains("no snapshot image") && error.contains(&snap),
        "{done:?}"
    );
    let log = pve.task_log(&upid).await.expect("task log");
    assert_eq!(
        log.last().map(String::as_str),
        Some(format!("TASK ERROR: {error}").as_str())
    );
    assert_eq!(inspect(&container, "{{.State.Running}}"), "true");
    assert_eq!(guest_status(&pve).await, "running");
    let config = pve.lxc_config("pve1", VMID).await.expect("config");
    assert_eq!(
        config.other.get("lock"),
        None,
        "a failed rollback leaves no lock"
    );
    sim.shutdown().await;
}

/// The guest the backup test backs up, changes and restores.
const BACKUP_VMID: u32 = 106;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_through_the_api_act_on_the_lab_guest() {
    let Some(lab) = Lab::from_env("lab PVE actions (vzdump backup, restore)") else {
        return;
    };
    let container = lab.pve().guest(BACKUP_VMID).container.clone();
    let old = lab.json["packages"][PKG]["old"]
        .as_str()
        .expect("lab.json packages")
        .to_string();
    let sim = lab_sim(&lab).await;
    let pve = client(&sim);
    let machine_id = in_guest(&container, "cat /etc/machine-id");
    assert_eq!(dpkg_version(&container, PKG), old);

    let notes = format!("labtest-{}", std::process::id());
    let upid = pve
        .vzdump(
            "pve1",
            BACKUP_VMID,
            canopy_hypervisor::VzdumpMode::Suspend,
            Some("local"),
            &notes,
        )
        .await
        .expect("vzdump");
    let done = await_task(&pve, &upid).await;
    assert_eq!(done.exitstatus.as_deref(), Some("OK"), "{done:?}");
    let backups = pve
        .backups("pve1", "local", BACKUP_VMID)
        .await
        .expect("list");
    let volid = backups
        .iter()
        .find(|b| b.notes.as_deref() == Some(notes.as_str()))
        .map(|b| b.volid.clone())
        .unwrap_or_else(|| panic!("our backup is listed: {backups:?}"));
    let archive = volid.rsplit('/').next().unwrap().to_string();
    let image = format!("canopy-lab/backup-{container}:{archive}");
    let _restore = Restore {
        container: container.clone(),
        old: old.clone(),
        snapshot_image: image.clone(),
    };
    assert!(
        docker_output(&["image", "inspect", &image])
            .status
            .success(),
        "{image}"
    );
    in_guest(
        &container,
        &format!("DEBIAN_FRONTEND=noninteractive apt-get install -y -q {PKG} >/dev/null"),
    );
    assert_ne!(dpkg_version(&container, PKG), old);

    // Restore over the stopped guest: recreated from the archive's image, then started.
    let upid = pve
        .power("pve1", GuestKind::Lxc, BACKUP_VMID, PowerAction::Shutdown)
        .await
        .expect("shutdown");
    let done = await_task(&pve, &upid).await;
    assert_eq!(done.exitstatus.as_deref(), Some("OK"), "{done:?}");
    let upid = pve
        .restore(
            "pve1",
            GuestKind::Lxc,
            BACKUP_VMID,
            &volid,
            Some("local-lvm"),
        )
        .await
        .expect("restore");
    let done = await_task(&pve, &upid).await;
    assert_eq!(done.exitstatus.as_deref(), Some("OK"), "{done:?}");
    let upid = pve
        .power("pve1", GuestKind::Lxc, BACKUP_VMID, PowerAction::Start)
        .await
        .expect("start");
    let done = await_task(&pve, &upid).await;
    assert_eq!(done.exitstatus.as_deref(), Some("OK"), "{done:?}");
    assert_eq!(dpkg_version(&container, PKG), old);
    assert_eq!(in_guest(&container, "cat /etc/machine-id"), machine_id);
    assert_eq!(
        in_guest(&container, "systemctl is-active canopy-demo-web.service"),
        "active"
    );

    // Deleting the archive removes its image.
    let upid = pve
        .volume_delete("pve1", "local", &volid)
        .await
        .expect("delete");
    let done = await_task(&pve, &upid).await;
    assert_eq!(done.exitstatus.as_deref(), Some("OK"), "{done:?}");
    assert!(!docker_output(&["image", "inspect", &image])
        .status
        .success());
    sim.shutdown().await;
}
