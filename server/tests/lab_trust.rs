//! The trustworthy single-host path with the real static agent in lab guests (real apt and
//! dpkg against the lab repository): a cancelled install never runs, an install past its
//! deadline is left to finish and recorded late with dpkg never interrupted, an install whose
//! repository moved on after the dry-run refuses before touching anything, and a copied
//! machine-id makes a second host instead of taking over the first. Guests 5–7 of the lab
//! (`lab.rs` uses 1–3, `lab_hang.rs` 4; the tests run concurrently).

mod common;

use canopy_api_types::commands::CommandStatus;
use canopy_api_types::hosts::EventFilter;
use common::lab::*;
use common::*;
use std::time::Duration;

fn lab() -> Option<Lab> {
    Lab::from_env("lab trust test")
}

/// Guest `n` (1-based) of the lab's Debian guests.
fn guest(lab: &Lab, n: usize) -> String {
    let guests = lab.guests();
    guests.get(n - 1).cloned().unwrap_or_else(|| {
        panic!(
            "the lab has {} Debian guests; this test needs guest {n} (cargo xtask test starts 7)",
            guests.len()
        )
    })
}

fn dpkg_audit(guest: &str) -> String {
    docker(&["exec", guest, "dpkg", "--audit"])
}

/// Two installs confirmed while the agent is away: when it comes back it is handed one of
/// them; the other, cancelled while the first runs, never runs — its package stays at the
/// old version. (Before the start handshake the agent claimed both in one batch, the cancel
/// of the second was accepted as "sent", and the agent installed it anyway.) The running
/// one, past its deadline in a slow postinst, is marked overdue, left to finish, and recorded
/// with its real outcome, late; dpkg is never left interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_install_never_runs_and_an_overdue_one_finishes_late() {
    let Some(lab) = lab() else { return };
    let guest = guest(&lab, 5);
    // canopy-demo-slow's postinst sleeps 20 s: far past this deadline.
    let app = spawn_app_with(Backend::Sqlite, |s| s.install_timeout_secs = 5)
        .await
        .unwrap();
    enrol_guest(&app, &lab, &guest).await;
    let hello = app.reported("canopy-demo-hello").await;
    let slow = app.reported("canopy-demo-slow").await;
    let old_hello = dpkg_version(&guest, "canopy-demo-hello");
    let (hello_dry, _) = app.dry_run(&hello).await;
    let (slow_dry, _) = app.dry_run(&slow).await;

    // Both installs wait for the agent, which is away.
    stop_agent(&guest);
    let slow_install = app.admin.confirm(slow_dry).await.unwrap();
    let hello_install = app.admin.confirm(hello_dry).await.unwrap();
    start_agent(&guest);
    eventually(Duration::from_secs(60), || async {
        (app.admin.command(slow_install.id).await.unwrap().status == CommandStatus::Running)
            .then_some(())
    })
    .await;
    // The agent was handed one command: the second still waits, unclaimed, and is cancelled.
    assert_eq!(
        app.admin.command(hello_install.id).await.unwrap().status,
        CommandStatus::Pending
    );
    let cancelled = app.admin.cancel(hello_install.id).await.unwrap();
    assert_eq!(cancelled.status, CommandStatus::Cancelled);

    // Past its deadline the slow install keeps running, marked overdue ...
    let overdue = eventually(Duration::from_secs(30), || async {
        let c = app.admin.command(slow_install.id).await.unwrap();
        c.overdue_at.is_some().then_some(c)
    })
    .await;
    assert_eq!(
        overdue.status,
        CommandStatus::Running,
        "an overdue install is left to finish"
    );
    // ... and its real outcome is recorded, late.
    let done = app
        .finished_command(slow_install.id, Duration::from_secs(120))
        .await;
    assert_eq!(
        (done.status, done.late),
        (CommandStatus::Completed, true),
        "{:?}",
        done.result
    );
    assert_eq!(dpkg_version(&guest, "canopy-demo-slow"), "1.1");
    assert_eq!(
        dpkg_audit(&guest).trim(),
        "",
        "dpkg is not left interrupted"
    );

    // The cancelled install never ran: the package is at its old version, the command was
    // never handed to the agent, and the history does not list it.
    assert_eq!(dpkg_version(&guest, "canopy-demo-hello"), old_hello);
    let still = app.admin.command(hello_install.id).await.unwrap();
    assert_eq!(still.status, CommandStatus::Cancelled);
    let events = app
        .admin
        .events(&EventFilter {
            correlation_id: Some(hello_install.correlation_id),
            ..Default::default()
        })
        .await
        .unwrap();
    let about_install: Vec<&str> = events
        .iter()
        .filter(|e| e.subject.ends_with(&hello_install.id.to_string()))
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(about_install, ["command.queued", "command.cancelled"]);
    let history = app.admin.history(None).await.unwrap();
    assert!(
        history.iter().all(|h| h.package != "canopy-demo-hello"),
        "{history:?}"
    );
    stop_agent(&guest);
}

/// The lab repository publishes a newer version between dry-run and confirm: the install
/// refuses before touching anything, naming the package and both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_whose_repository_moved_on_refuses_and_changes_nothing() {
    let Some(lab) = lab() else { return };
    let guest = guest(&lab, 6);
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    enrol_guest(&app, &lab, &guest).await;
    let tools = app.reported("canopy-demo-tools").await;
    let old_tools = dpkg_version(&guest, "canopy-demo-tools");
    let (dry, planned) = app.dry_run(&tools).await;
    let approved = planned
        .iter()
        .find(|p| p.package == "canopy-demo-tools")
        .expect("the dry-run plans canopy-demo-tools");
    assert!(planned.iter().any(|p| p.package == "canopy-demo-libextra"));

    // A newer version appears (in a suite only this guest reads).
    let suite = format!("moved-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let newer = format!("{}.1", approved.to_version);
    publish_to_guest(&lab, &guest, &suite, "canopy-demo-tools", &newer);

    let install = app.admin.confirm(dry).await.unwrap();
    let done = app
        .finished_command(install.id, Duration::from_secs(120))
        .await;
    unpublish_from_guest(&guest, &suite);
    assert_eq!(done.status, CommandStatus::Failed, "{:?}", done.result);
    let result = done.result.expect("a result");
    let said = format!("{}\n{}", result.summary, result.stderr);
    let expected = format!(
        "canopy-demo-tools: approved {}, now {newer}: run the dry-run again",
        approved.to_version
    );
    assert!(said.contains(&expected), "expected {expected:?} in {said}");
    assert_eq!(
        dpkg_version(&guest, "canopy-demo-tools"),
        old_tools,
        "nothing changed in the guest"
    );
    assert_eq!(dpkg_version(&guest, "canopy-demo-libextra"), "");
    stop_agent(&guest);
}

/// A second registration with the same machine-id (a clone) and a fresh registration token
/// creates a second host, both flagged duplicate; the first host's credential still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_machine_id_registers_a_second_host_and_takes_over_nothing() {
    let Some(lab) = lab() else { return };
    let guest = guest(&lab, 7);
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    enrol_guest(&app, &lab, &guest).await;
    let first = eventually(Duration::from_secs(60), || async {
        app.admin.hosts().await.unwrap().into_iter().next()
    })
    .await;
    // The clone: the same /etc/machine-id, its own config, a fresh token.
    let token = app.registration_token(1).await;
    docker(&[
        "exec",
        "-e",
        &format!("CANOPY_REGISTRATION_TOKEN={token}"),
        &guest,
        "canopy-agent",
        "register",
        "--server",
        &app.base,
        "--config",
        "/tmp/clone/agent.toml",
    ]);
    let hosts = app.admin.hosts().await.unwrap();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    assert_eq!(hosts[0].machine_id, hosts[1].machine_id);
    assert!(hosts.iter().all(|h| h.duplicate_machine_id), "{hosts:?}");
    // The first agent still runs with its credential: a scan queued for its host completes.
    let scan = app.admin.scan_now(first.id).await.unwrap();
    let done = app
        .finished_command(scan.id, Duration::from_secs(120))
        .await;
    assert_eq!(done.status, CommandStatus::Completed, "{:?}", done.result);
    let _ = docker_output(&["exec", &guest, "rm", "-rf", "/tmp/clone"]);
    stop_agent(&guest);
}
