//! The `canopy` CLI as a whole, through the real binary against a running server: every
//! command ends quietly when whoever reads its output goes away, and `canopy cancel`.

mod common;

use canopy_api_types::commands::CommandStatus;
use common::cli::Cli;
use common::*;
use std::os::unix::process::ExitStatusExt;

const TOKEN: &str = "canopy@pve!home=3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60";
const ESTATE: &str = r#"
[[clusters]]
name = "home"
[[clusters.tokens]]
id = "canopy@pve!home"
secret = "3e1f5a9c-7b2d-4c8e-9f0a-1b2c3d4e5f60"
role = "PVEAuditor"
[[clusters.nodes]]
name = "pve1"
[[clusters.guests]]
vmid = 101
type = "lxc"
node = "pve1"
name = "web"
status = "running"
[[clusters.guests]]
vmid = 102
type = "lxc"
node = "pve1"
name = "db"
status = "running"
"#;

/// SIGPIPE: how `cat` and friends end when their reader is gone (status 141 in the shell).
const SIGPIPE: i32 = 13;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_ends_quietly_when_its_reader_is_gone() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let sim = start_sim(ESTATE).await;
    app.add_cluster("home", &sim, TOKEN).await;
    let agent = app.enrol("web").await;
    agent
        .report(vec![serde_json::to_value(package("openssl", true)).unwrap()])
        .await;
    let cli = Cli::new().login(&app.base);
    for args in [
        &["tree"][..],
        &["tree", "--json"],
        &["tree", "--preview", "cluster/home/**"],
        &["hosts"],
        &["hosts", "--json"],
        &["updates"],
        &["history", "--json"],
        &["cluster", "list"],
        &["default-config"],
    ] {
        // The command does print (to a reader), so it is the closed pipe that is tested.
        let read = cli.run(args, "");
        assert!(read.status.success(), "{args:?}: {}", read.stderr);
        assert!(!read.stdout.is_empty(), "{args:?} prints nothing");
        let gone = cli.run_reader_gone(args);
        assert!(
            gone.status.success() || gone.status.signal() == Some(SIGPIPE),
            "{args:?} ended with {:?}: {}",
            gone.status,
            gone.stderr
        );
        assert_eq!(gone.stderr, "", "{args:?} is not quiet");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_command_from_the_cli() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let agent = app.enrol("web").await;
    agent
        .report(vec![serde_json::to_value(package("curl", false)).unwrap()])
        .await;
    agent.checkin(0).await;
    let page = app.admin.updates(&Default::default()).await.unwrap();
    let approved = app
        .admin
        .approve(page.items.iter().map(|u| u.id).collect())
        .await
        .unwrap();
    let id = approved.dry_run_commands[0];
    let cli = Cli::new().login(&app.base);

    let out = cli.run(&["cancel", &id.to_string()], "");
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), format!("dry_run {id}: cancelled"));
    assert_eq!(
        app.admin.command(id).await.unwrap().status,
        CommandStatus::Cancelled
    );
    // The agent never gets it.
    assert!(agent.checkin(0).await.commands.is_empty());

    // A command that already ended cannot be cancelled: the server's reason, exit 1.
    let out = cli.run(&["cancel", &id.to_string()], "");
    assert!(!out.status.success());
    assert!(out.stderr.contains("cancelled"), "{}", out.stderr);
    let out = cli.run(&["cancel", "--json", &id.to_string()], "");
    assert!(!out.status.success());
}
