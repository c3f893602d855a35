//! The start handshake against the fake server (`support`): a command whose start the server
//! refuses (409 cancelled, 404 unknown) never runs and gets no result; a start whose answer
//! is lost in transit is asked again and the command runs once; a shutdown before the go runs
//! nothing. Never "running it anyway". While a command runs, heartbeats go out, and only then.

mod support;

use canopy_api_types::commands::CommandSpec;
use std::collections::HashMap;
use std::time::Duration;
use support::*;

/// Cancelled (409) or unknown (404) at start: the command never runs and no result is posted;
/// the next command of the same batch runs as usual (its 200 carries an older server's body:
/// the status is the decision).
#[tokio::test]
async fn a_refused_start_never_runs_the_command() {
    let install = command(CommandSpec::Install {
        packages: vec!["canopy-no-such-package-xyz".into()],
        pinned: vec![],
    });
    let scan = command(CommandSpec::Scan);
    let dry = command(CommandSpec::DryRun {
        packages: vec!["bash".into()],
        images: Vec::new(),
    });
    let starts = HashMap::from([
        (install.id, StartPlan::Status(409)),
        (scan.id, StartPlan::Status(404)),
        (dry.id, StartPlan::OldServer),
    ]);
    let (url, seen) =
        spawn_server_with(vec![install.clone(), scan.clone(), dry.clone()], starts).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (agent, tx) = fast_agent(&url, dir.path(), false);
    let task = tokio::spawn(agent.run());
    wait_for(&seen, "the dry-run's result", |g| {
        g.results.iter().any(|(id, _)| *id == dry.id)
    })
    .await;
    tx.send(true).expect("signal");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("run ok");
    let g = lock(&seen);
    assert_eq!(
        g.events,
        [
            format!("start refused {}", install.id),
            format!("start refused {}", scan.id),
            format!("started {}", dry.id),
            format!("result {}", dry.id),
        ]
    );
    assert_eq!(g.results.len(), 1, "no result for the refused commands");
    assert_eq!(g.start_calls[&install.id], 1, "a 4xx is final");
}

/// A start whose answer is lost twice is asked again; the command runs once, after the go.
#[tokio::test]
async fn a_start_lost_in_transit_is_asked_again_and_runs_once() {
    let dry = command(CommandSpec::DryRun {
        packages: vec!["bash".into()],
        images: Vec::new(),
    });
    let starts = HashMap::from([(dry.id, StartPlan::Transport(2))]);
    let (url, seen) = spawn_server_with(vec![dry.clone()], starts).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (agent, tx) = fast_agent(&url, dir.path(), true);
    let task = tokio::spawn(agent.run());
    wait_for(&seen, "the dry-run's result", |g| !g.results.is_empty()).await;
    // One more check-in, so a second run (if any) would have shown by now.
    let n = lock(&seen).checkins;
    wait_for(&seen, "another check-in", |g| g.checkins > n).await;
    tx.send(true).expect("signal");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("run ok");
    let g = lock(&seen);
    assert_eq!(g.start_calls[&dry.id], 3, "two lost answers, then the go");
    assert_eq!(
        g.events,
        [format!("started {}", dry.id), format!("result {}", dry.id)]
    );
    assert_eq!(g.results.len(), 1);
    assert!(g.results[0].1.result.success, "{:?}", g.results[0].1.result);
}

/// The server answers 503 to the start; a shutdown before the go stops the agent without
/// running the command or posting anything for it.
#[tokio::test]
async fn a_shutdown_before_the_go_runs_nothing() {
    let install = command(CommandSpec::Install {
        packages: vec!["canopy-no-such-package-xyz".into()],
        pinned: vec![],
    });
    let starts = HashMap::from([(install.id, StartPlan::Status(503))]);
    let (url, seen) = spawn_server_with(vec![install.clone()], starts).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (agent, tx) = fast_agent(&url, dir.path(), false);
    let task = tokio::spawn(agent.run());
    wait_for(&seen, "the start asked again", |g| {
        g.start_calls.get(&install.id).copied().unwrap_or(0) >= 3
    })
    .await;
    tx.send(true).expect("signal");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops promptly")
        .expect("join")
        .expect("run ok");
    let g = lock(&seen);
    assert!(g.results.is_empty(), "{:?}", g.events);
    assert!(g.events.iter().all(|e| e.starts_with("start refused")));
}

/// Heartbeats go out while the command runs — after its start, before its result — and stop
/// with it.
#[tokio::test]
async fn heartbeats_are_sent_while_a_command_runs_and_only_then() {
    let dry = command(CommandSpec::DryRun {
        packages: vec!["bash".into()],
        images: Vec::new(),
    });
    let (url, seen) = spawn_server(vec![dry.clone()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (agent, tx) = fast_agent(&url, dir.path(), true);
    let agent = agent.with_intervals(Duration::from_millis(2), Duration::from_millis(20));
    let task = tokio::spawn(agent.run());
    wait_for(&seen, "the dry-run's result", |g| !g.results.is_empty()).await;
    let n = lock(&seen).checkins;
    wait_for(&seen, "another check-in", |g| g.checkins > n).await;
    tx.send(true).expect("signal");
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops")
        .expect("join")
        .expect("run ok");
    let g = lock(&seen);
    assert_eq!(
        g.events,
        [format!("started {}", dry.id), format!("result {}", dry.id)]
    );
    assert!(!g.heartbeats.is_empty(), "no heartbeat while apt-get ran");
    for (id, at) in &g.heartbeats {
        assert_eq!(*id, dry.id);
        assert_eq!(*at, 1, "a heartbeat outside the run: {:?}", g.heartbeats);
    }
}
