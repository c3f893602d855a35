//! The generated client behind `PveClient` against the PVE simulator over real HTTPS:
//! parsing of every quirk, pinning, the error cases a homelab owner meets, fail-over.

use canopy_hypervisor::types::ResourceType;
use canopy_hypervisor::{
    probe_fingerprint, ApiToken, Connection, Error, GuestKind, Hypervisor, PveClient, Trust,
};
use canopy_pve_sim::{RunningCluster, SimFile};
use std::time::{Duration, Instant};

const ESTATE: &str = r#"
[[clusters]]
name = "home"
task_duration_ms = 200
[clusters.quirks]
error_message_in_body = false
numbers_as_strings = true
[[clusters.tokens]]
id = "root@pam!canopy"
secret = "11111111-2222-3333-4444-555555555555"
role = "Administrator"
[[clusters.tokens]]
id = "auditor@pve!ro"
secret = "66666666-7777-8888-9999-000000000000"
role = "PVEAuditor"
[[clusters.nodes]]
name = "pve1"
updates = [{ package = "pve-manager", old_version = "8.4.0", version = "8.4.1", origin = "Proxmox" }]
[[clusters.nodes]]
name = "pve2"
[[clusters.guests]]
vmid = 101
type = "lxc"
node = "pve1"
name = "web"
status = "running"
tags = ["prod", "web"]
[[clusters.guests]]
vmid = 9000
type = "lxc"
node = "pve2"
name = "tmpl"
status = "stopped"
template = true
[[clusters.guests]]
vmid = 200
type = "qemu"
node = "pve2"
name = "vm"
status = "stopped"
"#;

async fn sim() -> RunningCluster {
    let file = SimFile::from_toml_str(ESTATE).unwrap();
    canopy_pve_sim::start(file.clusters[0].clone())
        .await
        .unwrap()
}

fn client_for(
    sim: &RunningCluster,
    token: &str,
    trust: Trust,
    endpoints: Vec<String>,
) -> PveClient {
    let mut conn = Connection::new(endpoints, token.parse::<ApiToken>().unwrap(), trust);
    conn.timeout = Duration::from_secs(2);
    conn.connect_timeout = Duration::from_secs(2);
    let _ = sim;
    PveClient::new(conn).unwrap()
}

fn pinned(sim: &RunningCluster) -> PveClient {
    let fps = sim
        .endpoints()
        .iter()
        .map(|(_, _, fp)| fp.parse().unwrap())
        .collect();
    client_for(sim, &sim.token(), Trust::Fingerprints(fps), vec![sim.url()])
}

#[tokio::test]
async fn reads_the_estate_with_numbers_as_strings() {
    let sim = sim().await;
    let pve = pinned(&sim);
    let status = pve.cluster_status().await.unwrap();
    assert!(status
        .iter()
        .any(|e| e.kind == "cluster" && e.name == "home" && e.quorate));
    let res = pve.resources().await.unwrap();
    let web = res.iter().find(|r| r.vmid == Some(101)).expect("guest 101");
    assert_eq!(web.kind, ResourceType::Lxc);
    assert_eq!(web.tags, vec!["prod", "web"]);
    assert_eq!(web.status.as_deref(), Some("running"));
    assert!(res.iter().any(|r| r.vmid == Some(9000) && r.template));
    assert_eq!(
        pve.guests("pve2", GuestKind::Qemu).await.unwrap()[0].vmid,
        200
    );
    let ups = pve.node_apt_updates("pve1").await.unwrap();
    assert_eq!(ups[0].package, "pve-manager");
    assert!(pve.version().await.unwrap().version.is_some());
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_fingerprint_names_both_fingerprints() {
    let sim = sim().await;
    let wrong = canopy_hypervisor::Fingerprint::of_der(b"another certificate");
    let pve = client_for(
        &sim,
        &sim.token(),
        Trust::Fingerprints(vec![wrong]),
        vec![sim.url()],
    );
    let err = pve.version().await.unwrap_err();
    assert!(matches!(err, Error::FingerprintMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&sim.fingerprint()) && msg.contains(&wrong.to_string()),
        "{msg}"
    );
    assert_eq!(
        sim.request_count(),
        0,
        "no request may pass an unverified handshake"
    );
    let seen = probe_fingerprint(&sim.url(), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(seen.to_string(), sim.fingerprint());
    sim.shutdown().await;
}

#[tokio::test]
async fn ca_trust_works_and_a_foreign_ca_is_refused() {
    let sim = sim().await;
    let pve = client_for(
        &sim,
        &sim.token(),
        Trust::CaPem(sim.ca_pem()),
        vec![sim.url()],
    );
    assert!(!pve.resources().await.unwrap().is_empty());
    let other = canopy_pve_sim::start(SimFile::from_toml_str(ESTATE).unwrap().clusters[0].clone())
        .await
        .unwrap();
    let pve = client_for(
        &sim,
        &sim.token(),
        Trust::CaPem(other.ca_pem()),
        vec![sim.url()],
    );
    let err = pve.version().await.unwrap_err();
    assert!(matches!(err, Error::Untrusted { .. }), "{err:?}");
    other.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_token_is_an_authentication_error() {
    let sim = sim().await;
    let fps = vec![sim.fingerprint().parse().unwrap()];
    let pve = client_for(
        &sim,
        "root@pam!canopy=not-the-secret",
        Trust::Fingerprints(fps),
        vec![sim.url()],
    );
    let err = pve.resources().await.unwrap_err();
    assert!(matches!(err, Error::Authentication { .. }), "{err:?}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(
        !err.to_string().contains("not-the-secret"),
        "the secret leaked: {err}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn missing_privilege_is_named_from_the_reason_phrase() {
    let sim = sim().await;
    let fps = vec![sim.fingerprint().parse().unwrap()];
    let pve = client_for(
        &sim,
        "auditor@pve!ro=66666666-7777-8888-9999-000000000000",
        Trust::Fingerprints(fps),
        vec![sim.url()],
    );
    // Reading is allowed for an auditor …
    assert!(!pve.resources().await.unwrap().is_empty());
    // … taking a snapshot is not.
    let err = pve
        .snapshot_create("pve1", GuestKind::Lxc, 101, "canopy-test", "")
        .await
        .unwrap_err();
    match &err {
        Error::Forbidden {
            privilege, path, ..
        } => {
            assert_eq!(privilege.as_deref(), Some("VM.Snapshot"));
            assert_eq!(path.as_deref(), Some("/vms/101"));
        }
        other => panic!("expected Forbidden, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("lacks the privilege VM.Snapshot on /vms/101"),
        "{err}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn snapshot_task_progresses_and_takes_effect() {
    let sim = sim().await;
    let pve = pinned(&sim);
    let upid = pve
        .snapshot_create("pve1", GuestKind::Lxc, 101, "before-update", "canopy")
        .await
        .unwrap();
    assert_eq!(upid.node(), Some("pve1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = pve.task_status(&upid).await.unwrap();
        if !st.is_running() {
            assert!(st.succeeded(), "{st:?}");
            break;
        }
        assert!(Instant::now() < deadline, "task never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snaps = pve.snapshots("pve1", GuestKind::Lxc, 101).await.unwrap();
    assert!(snaps.iter().any(|s| s.name == "before-update"), "{snaps:?}");
    assert!(snaps.iter().any(|s| s.is_current()));
    let log = pve.task_log(&upid).await;
    assert!(
        log.as_ref().is_ok_and(|l| !l.is_empty()),
        "{log:?} {:?}",
        sim.requests().last()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_hanging_node_fails_over_to_the_next() {
    let sim = sim().await;
    let eps = sim.endpoints();
    let fps = eps.iter().map(|(_, _, fp)| fp.parse().unwrap()).collect();
    let urls = eps.iter().map(|(_, url, _)| url.clone()).collect();
    let pve = client_for(&sim, &sim.token(), Trust::Fingerprints(fps), urls);
    sim.set_node_hang("pve1", true).unwrap();
    let res = pve.resources().await.unwrap();
    assert!(!res.is_empty());
    assert_eq!(pve.current_endpoint(), sim.node_url("pve2"));
    // The next call goes straight to the node that answered.
    let sent = pve.requests_sent();
    pve.cluster_status().await.unwrap();
    assert_eq!(pve.requests_sent(), sent + 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_single_hanging_endpoint_is_a_timeout_error() {
    let sim = sim().await;
    let pve = pinned(&sim);
    sim.set_node_hang("pve1", true).unwrap();
    let err = pve.resources().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("did not answer"), "{err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn unreachable_endpoint_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut conn = Connection::new(
        vec![format!("127.0.0.1:{port}")],
        "root@pam!x=y".parse().unwrap(),
        Trust::Fingerprints(vec![canopy_hypervisor::Fingerprint::of_der(b"x")]),
    );
    conn.connect_timeout = Duration::from_secs(2);
    let err = PveClient::new(conn).unwrap().version().await.unwrap_err();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{port} is unreachable")),
        "{err}"
    );
}

async fn wait_task(pve: &PveClient, upid: &canopy_hypervisor::types::Upid) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = pve.task_status(upid).await.unwrap();
        if !st.is_running() {
            return if st.succeeded() {
                Ok(())
            } else {
                Err(st.exitstatus.unwrap_or_default())
            };
        }
        assert!(Instant::now() < deadline, "task {upid:?} never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The fallback where a guest's storage cannot snapshot: a vzdump archive with our notes,
/// listed on the storage, restored over the stopped container, then deleted.
#[tokio::test]
async fn backup_is_listed_restored_over_the_container_and_deleted() {
    use canopy_hypervisor::{PowerAction, VzdumpMode};
    let sim = sim().await;
    let pve = pinned(&sim);
    let upid = pve
        .vzdump(
            "pve1",
            101,
            VzdumpMode::Suspend,
            Some("local"),
            "canopy-op7 {{guestname}}",
        )
        .await
        .unwrap();
    wait_task(&pve, &upid).await.unwrap();
    let backups = pve.backups("pve1", "local", 101).await.unwrap();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let b = &backups[0];
    assert!(
        b.volid.starts_with("local:backup/vzdump-lxc-101-") && b.volid.ends_with(".tar.zst"),
        "{b:?}"
    );
    assert_eq!(b.notes.as_deref(), Some("canopy-op7 web"));
    assert_eq!(b.vmid, Some(101));
    // Another guest's backups are not listed for 101, and a wrong storage is named.
    assert!(pve.backups("pve1", "local", 102).await.unwrap().is_empty());
    let err = pve.backups("pve1", "nosuch", 101).await.unwrap_err();
    assert!(err.to_string().contains("nosuch"), "{err}");

    // Restoring over a running container is refused by the task, as PVE does.
    let upid = pve
        .restore("pve1", GuestKind::Lxc, 101, &b.volid, Some("local-lvm"))
        .await
        .unwrap();
    let err = wait_task(&pve, &upid).await.unwrap_err();
    assert!(err.contains("running"), "{err}");
    let upid = pve
        .power("pve1", GuestKind::Lxc, 101, PowerAction::Shutdown)
        .await
        .unwrap();
    wait_task(&pve, &upid).await.unwrap();
    let upid = pve
        .restore("pve1", GuestKind::Lxc, 101, &b.volid, Some("local-lvm"))
        .await
        .unwrap();
    wait_task(&pve, &upid).await.unwrap();
    let upid = pve
        .power("pve1", GuestKind::Lxc, 101, PowerAction::Start)
        .await
        .unwrap();
    wait_task(&pve, &upid).await.unwrap();

    // A volume that is not there is named; ours goes away.
    let err = pve
        .volume_delete(
            "pve1",
            "local",
            "local:backup/vzdump-lxc-101-nosuch.tar.zst",
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    let upid = pve.volume_delete("pve1", "local", &b.volid).await.unwrap();
    wait_task(&pve, &upid).await.unwrap();
    assert!(pve.backups("pve1", "local", 101).await.unwrap().is_empty());
    sim.shutdown().await;
}
