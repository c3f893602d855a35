//! Agent delivery end to end in the lab: the PVE simulator describes node `pve1` with the lab's
//! six systemd Debian guests (101–106) plus a guest PVE lists but the node does not have (107),
//! a template and a stopped guest. The server reaches the guests through the lab's PVE node
//! stand-in — a real sshd and a `pct` shim onto the guest containers — and, for 106, by SSH
//! straight into the guest. The real static agent is pushed, registered with a token bound to
//! its guest, started as a systemd service and checks in to the real server.
//!
//! The privilege boundary is checked in a deployed guest as the agent's own user
//! (`common/privilege.rs`).
//!
//! Needs `cargo xtask test` (CANOPY_LAB, CANOPY_AGENT_MUSL_BIN); fails without them, unless
//! CANOPY_SKIP_LAB=1.

mod common;

use canopy_api_types::deploy::{
    DeployAction, DeployOutcome, DeployRequest, ItemState, Operation, OperationItem,
    OperationState, Route,
};
use canopy_api_types::updates::UpdateFilter;
use common::cli::Cli;
use common::lab::*;
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

const TOKEN: &str = "canopy@pve!lab=3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60";
const GUESTS: &str = "cluster/lab/node/pve1/lxc/*";

/// The simulator's view of the lab node: the six systemd guests, the OpenRC guest, the dnf
/// guest, a ghost, a template, a stopped one.
fn estate(pve: &PveLab) -> String {
    let mut s = String::from(
        "[[clusters]]\nname = \"lab\"\n[[clusters.tokens]]\nid = \"canopy@pve!lab\"\n\
         secret = \"3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60\"\nrole = \"PVEAuditor\"\n\
         [[clusters.nodes]]\nname = \"pve1\"\nip = \"127.0.0.1\"\n",
    );
    let mut guest = |vmid: u32, name: &str, status: &str, template: bool| {
        s.push_str(&format!(
            "[[clusters.guests]]\nvmid = {vmid}\ntype = \"lxc\"\nnode = \"pve1\"\nname = \"{name}\"\n\
             status = \"{status}\"\ntemplate = {template}\n"
        ));
    };
    for g in &pve.guests {
        guest(g.vmid, &g.hostname, "running", false);
    }
    guest(pve.openrc_vmid, "ct108", "running", false);
    guest(pve.dnf_vmid, "dnf-1", "running", false);
    guest(107, "ghost", "running", false);
    guest(110, "tmpl", "stopped", true);
    guest(111, "off", "stopped", false);
    s
}

async fn lab_app(lab: &Lab, pve: &PveLab) -> (TestApp, canopy_pve_sim::RunningCluster) {
    let sim = start_sim(&estate(pve)).await;
    let app = spawn_app_with(Backend::Sqlite, |s| deploy_settings(s, lab, pve))
        .await
        .unwrap();
    app.add_cluster("lab", &sim, TOKEN).await;
    (app, sim)
}

/// Runs an operation to its end through the SSE stream; returns it and the item events seen.
async fn run(
    app: &TestApp,
    selector: &str,
    action: DeployAction,
) -> (Operation, Vec<OperationItem>) {
    let req = DeployRequest {
        selector: selector.into(),
        action,
    };
    let started = std::time::Instant::now();
    let op = app.admin.deploy(&req).await.expect("operation starts");
    assert_eq!(op.state, OperationState::Running);
    let mut seen = Vec::new();
    let done = tokio::time::timeout(
        Duration::from_secs(300),
        app.admin.follow_operation(op.id, |i| seen.push(i.clone())),
    )
    .await
    .expect("the operation ends within 5 minutes")
    .expect("the event stream works");
    assert!(done.state.is_terminal(), "{done:?}");
    eprintln!(
        "{} {selector}: {} in {:.1} s: {:?}",
        action.as_str(),
        done.state.as_str(),
        started.elapsed().as_secs_f64(),
        outcomes(&done)
    );
    // The stored operation is what the stream ended with.
    assert_eq!(app.admin.operation(op.id).await.unwrap(), done);
    (done, seen)
}

fn item(op: &Operation, vmid: u32) -> &OperationItem {
    op.items
        .iter()
        .find(|i| i.vmid == vmid)
        .unwrap_or_else(|| panic!("no item for {vmid}: {op:#?}"))
}

fn outcomes(op: &Operation) -> BTreeMap<u32, String> {
    op.items
        .iter()
        .map(|i| {
            let o = match (i.state, i.outcome) {
                (ItemState::Succeeded, Some(o)) => o.as_str().to_string(),
                (s, _) => format!("{}: {}", s.as_str(), i.message.clone().unwrap_or_default()),
            };
            (i.vmid, o)
        })
        .collect()
}

fn main_pid(container: &str) -> String {
    in_guest(container, "systemctl show -p MainPID --value canopy-agent")
}

/// The OpenRC guest's container (named like the others: node container + `-ctVMID`).
fn openrc_container(pve: &PveLab) -> String {
    format!("{}-ct{}", pve.node.container, pve.openrc_vmid)
}

fn openrc_pid(container: &str) -> String {
    in_guest(container, "cat /run/canopy-agent.pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_to_six_lab_guests_is_idempotent_repairs_and_reports_per_guest() {
    let Some(lab) = Lab::from_env("agent deploy end-to-end test") else {
        return;
    };
    let pve = lab.pve();
    let (app, _sim) = lab_app(&lab, &pve).await;

    // Start clean: whatever an earlier run left is removed (or found absent).
    let (clean, _) = run(&app, GUESTS, DeployAction::Uninstall).await;
    let vmids = pve.guests.iter().map(|g| g.vmid);
    for vmid in vmids.chain([pve.openrc_vmid]) {
        let i = item(&clean, vmid);
        assert_eq!(i.state, ItemState::Succeeded, "{i:?}");
        assert!(matches!(
            i.outcome,
            Some(DeployOutcome::Absent | DeployOutcome::Uninstalled)
        ));
    }

    // Agentless: no agent anywhere, yet the guests' pending updates are read through pct exec.
    let scanned = app.admin.agentless_scan(GUESTS).await.unwrap();
    let ct101 = scanned
        .iter()
        .find(|r| r.target.ends_with("/lxc/101"))
        .expect("101 scanned");
    assert!(ct101.error.is_none(), "{scanned:?}");
    assert!(ct101.pending.unwrap() >= 4, "{scanned:?}");
    let ghost = scanned
        .iter()
        .find(|r| r.target.ends_with("/lxc/107"))
        .unwrap();
    assert!(
        ghost
            .error
            .as_deref()
            .unwrap_or("")
            .contains("107.conf' does not exist"),
        "{ghost:?}"
    );
    // The dnf guest (vmid 120) is read with dnf check-update; at least the update the dnf
    // pipeline test never approves is pending whatever that test did meanwhile.
    let dnf = scanned
        .iter()
        .find(|r| r.target.ends_with(&format!("/lxc/{}", pve.dnf_vmid)))
        .expect("the dnf guest scanned");
    assert!(dnf.error.is_none(), "{dnf:?}");
    let dnf_updates = app
        .admin
        .updates(&UpdateFilter {
            selector: Some(format!("cluster/lab/node/pve1/lxc/{}", pve.dnf_vmid)),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        dnf_updates
            .items
            .iter()
            .any(|u| u.manager == canopy_api_types::updates::PackageManager::Dnf),
        "{dnf_updates:?}"
    );
    let agentless_host = ct101.host_id.unwrap();
    let tree = app
        .admin
        .tree(Some("cluster/lab/node/pve1/lxc/101"))
        .await
        .unwrap();
    assert_eq!(tree.trees[0].agent.as_deref(), Some("agentless"));
    assert!(tree.trees[0].counts.pending >= 4, "{:?}", tree.trees[0]);
    let page = app
        .admin
        .updates(&UpdateFilter {
            selector: Some("cluster/lab/node/pve1/lxc/101".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        page.items.iter().any(|u| u.package == "canopy-demo-ssl"),
        "{page:?}"
    );

    // The preview: 9 guests (six systemd guests, the OpenRC guest, the dnf guest, the ghost),
    // template and stopped guest skipped.
    let preview = app
        .admin
        .deploy_preview(&DeployRequest {
            selector: GUESTS.into(),
            action: DeployAction::Deploy,
        })
        .await
        .unwrap();
    assert_eq!(preview.targets.len(), 9, "{preview:?}");
    assert_eq!(preview.summary, "deploys to 9 guests on 1 node (2 skipped)");
    let route_106 = preview
        .targets
        .iter()
        .find(|t| t.vmid == 106)
        .unwrap()
        .route;
    assert_eq!(route_106, Route::Ssh);
    let reasons: Vec<_> = preview.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(reasons, ["template", "stopped"], "{preview:?}");

    // Deploy: six install and check in; the ghost fails with pct's reason; progress streamed.
    let (first, events) = run(&app, GUESTS, DeployAction::Deploy).await;
    assert_eq!(
        first.state,
        OperationState::Partial,
        "{:#?}",
        outcomes(&first)
    );
    for g in &pve.guests {
        let i = item(&first, g.vmid);
        assert_eq!(
            i.outcome,
            Some(DeployOutcome::Installed),
            "{:#?}",
            outcomes(&first)
        );
        let user = if g.sudo { "canopy-agent" } else { "root" };
        assert_eq!(i.run_as.as_deref(), Some(user));
    }
    // The OpenRC guest (no sudo): installed as an OpenRC service, running as root.
    let openrc = openrc_container(&pve);
    let i = item(&first, pve.openrc_vmid);
    assert_eq!(
        i.outcome,
        Some(DeployOutcome::Installed),
        "{:#?}",
        outcomes(&first)
    );
    assert_eq!(i.run_as.as_deref(), Some("root"), "{i:?}");
    let status = in_guest(&openrc, "rc-service canopy-agent status 2>&1");
    eprintln!("ct108: rc-service canopy-agent status: {status}");
    assert!(status.contains("started"), "{status}");
    let ghost = item(&first, 107);
    assert_eq!(ghost.state, ItemState::Failed);
    assert!(
        ghost
            .message
            .as_deref()
            .unwrap()
            .contains("107.conf' does not exist"),
        "{ghost:?}"
    );
    // The dnf guest runs no service manager: a clear error, nothing half-installed.
    let no_init = item(&first, pve.dnf_vmid);
    assert_eq!(no_init.state, ItemState::Failed);
    assert!(
        no_init
            .message
            .as_deref()
            .unwrap()
            .contains("neither systemd nor OpenRC"),
        "{no_init:?}"
    );
    let steps: Vec<_> = events
        .iter()
        .filter(|e| e.vmid == 101)
        .filter_map(|e| e.step.clone())
        .collect();
    // Streamed in order; the late steps (seconds after the start) are surely seen, the early
    // ones may pass before the stream is subscribed.
    let order = [
        "connect",
        "detect-os",
        "probe",
        "push",
        "verify",
        "user",
        "register",
        "service",
        "check-in",
    ];
    let positions: Vec<usize> = steps
        .iter()
        .map(|s| {
            order
                .iter()
                .position(|o| o == s)
                .unwrap_or_else(|| panic!("unknown step {s}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] <= w[1]),
        "steps out of order: {steps:?}"
    );
    for s in ["register", "service", "check-in"] {
        assert!(
            steps.iter().any(|x| x == s),
            "step {s} not streamed: {steps:?}"
        );
    }

    // Every agent checked in, is attached to its guest, and the tree says who it runs as.
    for g in &pve.guests {
        let path = format!("cluster/lab/node/pve1/lxc/{}", g.vmid);
        let t = eventually(Duration::from_secs(30), || async {
            let t = app.admin.tree(Some(&path)).await.unwrap().trees.remove(0);
            (t.agent.as_deref() == Some("online")).then_some(t)
        })
        .await;
        let user = if g.sudo { "canopy-agent" } else { "root" };
        assert_eq!(t.agent_user.as_deref(), Some(user), "{t:?}");
        // Files: config and credential 0600, the registration token gone.
        let c = &g.container;
        assert_eq!(
            in_guest(c, "stat -c '%a %U' /etc/canopy-agent/agent.toml"),
            format!("600 {user}")
        );
        assert_eq!(
            in_guest(c, "stat -c %a /etc/canopy-agent/agent.token"),
            "600"
        );
        assert_eq!(
            in_guest(
                c,
                "test -e /etc/canopy-agent/registration.token && echo left || echo gone"
            ),
            "gone"
        );
        assert_eq!(
            in_guest(
                c,
                "ps -o user= -p $(systemctl show -p MainPID --value canopy-agent)"
            ),
            user
        );
        if g.sudo {
            common::privilege::assert_only_the_helper_is_root(c);
        }
    }
    // As the deployed agent's user: no sudo apt-get, the helper refuses injected options, a
    // pinned install through the helper works.
    common::privilege::assert_boundary_holds(&pve.guest(101).container);
    let path = format!("cluster/lab/node/pve1/lxc/{}", pve.openrc_vmid);
    let t = eventually(Duration::from_secs(30), || async {
        let t = app.admin.tree(Some(&path)).await.unwrap().trees.remove(0);
        (t.agent.as_deref() == Some("online")).then_some(t)
    })
    .await;
    eprintln!(
        "ct108: tree agent {:?}, agent_user {:?}",
        t.agent, t.agent_user
    );
    assert_eq!(t.agent_user.as_deref(), Some("root"), "{t:?}");
    assert_eq!(
        in_guest(&openrc, "ps -o user= -p $(cat /run/canopy-agent.pid)"),
        "root"
    );
    // The agentless record became the agent's host: same id, no duplicate.
    let hosts = app.admin.hosts().await.unwrap();
    let h101 = hosts
        .iter()
        .find(|h| h.id == agentless_host)
        .expect("same host id");
    assert!(!h101.agentless);
    assert_eq!(
        hosts.len(),
        8,
        "seven agents and the agentless dnf guest: {hosts:?}"
    );
    assert_eq!(hosts.iter().filter(|h| h.agentless).count(), 1);

    // Re-run: a no-op everywhere (no service restarted).
    let pids: Vec<_> = pve.guests.iter().map(|g| main_pid(&g.container)).collect();
    let openrc_pid_before = openrc_pid(&openrc);
    let (second, _) = run(&app, GUESTS, DeployAction::Deploy).await;
    let vmids = pve.guests.iter().map(|g| g.vmid);
    for vmid in vmids.chain([pve.openrc_vmid]) {
        assert_eq!(
            item(&second, vmid).outcome,
            Some(DeployOutcome::Unchanged),
            "{:#?}",
            outcomes(&second)
        );
    }
    eprintln!("ct108: re-run {:?}", item(&second, pve.openrc_vmid).outcome);
    let after: Vec<_> = pve.guests.iter().map(|g| main_pid(&g.container)).collect();
    assert_eq!(pids, after, "a no-op re-run restarted an agent");
    assert_eq!(
        openrc_pid(&openrc),
        openrc_pid_before,
        "the OpenRC agent restarted"
    );

    // The same through the CLI as a homelab owner types it: asked first ("n" starts nothing),
    // then `--yes` with progress on stderr and the per-guest result on stdout.
    let cli = Cli::new().login(&app.base);
    let before = app.admin.operations(100).await.unwrap().len();
    let out = cli.run(&["agent", "deploy", GUESTS], "n\n");
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("deploys to 9 guests on 1 node (2 skipped)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing started"), "{}", out.stderr);
    assert_eq!(app.admin.operations(100).await.unwrap().len(), before);
    let out = cli.run(&["agent", "deploy", GUESTS, "--yes"], "");
    assert!(
        !out.status.success(),
        "the ghost failed, so the command does"
    );
    let vmids = pve.guests.iter().map(|g| g.vmid);
    for vmid in vmids.chain([pve.openrc_vmid]) {
        let line = format!("cluster/lab/node/pve1/lxc/{vmid}");
        assert!(
            out.stdout
                .lines()
                .any(|l| l.contains(&line) && l.contains("unchanged")),
            "{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("107.conf' does not exist"),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("[9/9]"), "progress: {}", out.stderr);
    assert!(
        out.stderr.contains("2 of 9 guests failed"),
        "{}",
        out.stderr
    );
    let after: Vec<_> = pve.guests.iter().map(|g| main_pid(&g.container)).collect();
    assert_eq!(pids, after, "the CLI re-run restarted an agent");

    // Kill one agent's service and put a different agent build into another guest: the
    // re-run repairs the first, upgrades the second, and leaves the rest untouched.
    let victim = pve.guest(103);
    in_guest(&victim.container, "systemctl stop canopy-agent");
    assert_eq!(
        in_guest(
            &victim.container,
            "systemctl is-active canopy-agent || true"
        ),
        "inactive"
    );
    let older = pve.guest(104);
    in_guest(
        &older.container,
        "cp /usr/local/bin/canopy-agent /tmp/a && printf 'another build' >> /tmp/a && \
         install -m 0755 /tmp/a /usr/local/bin/canopy-agent && rm /tmp/a",
    );
    let (third, _) = run(&app, GUESTS, DeployAction::Deploy).await;
    assert_eq!(
        item(&third, 103).outcome,
        Some(DeployOutcome::Repaired),
        "{:#?}",
        outcomes(&third)
    );
    let upgraded = item(&third, 104);
    assert_eq!(
        upgraded.outcome,
        Some(DeployOutcome::Upgraded),
        "{upgraded:?}"
    );
    assert!(upgraded
        .message
        .as_deref()
        .unwrap_or("")
        .contains("upgraded from"));
    let agent_sha = |c: &str| in_guest(c, "sha256sum /usr/local/bin/canopy-agent | cut -d' ' -f1");
    assert_eq!(
        agent_sha(&older.container),
        agent_sha(&pve.guest(101).container)
    );
    assert_eq!(item(&third, 101).outcome, Some(DeployOutcome::Unchanged));
    assert_eq!(
        in_guest(&victim.container, "systemctl is-active canopy-agent"),
        "active"
    );

    common::deploy::one_guest_at_a_time(&app, "cluster/lab/node/pve1/lxc/105").await;

    // Uninstall one guest cleanly: its host is archived and the guest shows no agent.
    let attached = app
        .admin
        .tree(Some("cluster/lab/node/pve1/lxc/102"))
        .await
        .unwrap()
        .trees[0]
        .host_id
        .clone()
        .expect("102's agent is attached before the uninstall");
    let (gone, _) = run(
        &app,
        "cluster/lab/node/pve1/lxc/102",
        DeployAction::Uninstall,
    )
    .await;
    assert_eq!(item(&gone, 102).outcome, Some(DeployOutcome::Uninstalled));
    let c = &pve.guest(102).container;
    assert_eq!(
        in_guest(c, "ls /usr/local/bin/canopy-agent /etc/canopy-agent /etc/systemd/system/canopy-agent.service /etc/sudoers.d/canopy-agent 2>/dev/null | wc -l"),
        "0"
    );
    assert_eq!(
        in_guest(
            c,
            "id canopy-agent >/dev/null 2>&1 && echo user || echo none"
        ),
        "none"
    );
    let archived = app.admin.host(attached.parse().unwrap()).await.unwrap();
    assert_eq!(archived.state, canopy_api_types::hosts::HostState::Archived);
    let tree = app
        .admin
        .tree(Some("cluster/lab/node/pve1/lxc/102"))
        .await
        .unwrap();
    assert_eq!(
        tree.trees[0].host_id, None,
        "the guest left its archived host"
    );
    let history = app
        .admin
        .guest_history("cluster/lab/node/pve1/lxc/102")
        .await
        .unwrap();
    assert!(history.iter().any(|e| e.event_type == "host.archived"));

    // The history of a guest shows the deploy results.
    let history = app
        .admin
        .guest_history("cluster/lab/node/pve1/lxc/103")
        .await
        .unwrap();
    let types: Vec<_> = history.iter().map(|e| e.event_type.as_str()).collect();
    assert!(types.contains(&"operation.item_succeeded"), "{types:?}");
}
