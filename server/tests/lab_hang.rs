//! A package manager that hangs, in a real lab guest: the agent (root, the helper's code path
//! in process) runs with `CANOPY_AGENT_HANG_TIMEOUT_SECS=4`, and the postinst of
//! `canopy-demo-slow` 1.1 prints nothing for 20 s. The hang watchdog stops the whole process
//! group — apt-get, dpkg, the maintainer script and its `sleep` — with SIGTERM, the command
//! fails saying so, the dpkg database is left interrupted (as `dpkg --audit` shows), and the
//! next install of that host refuses to start until the database is repaired.
//!
//! Uses the lab's fourth apt guest (the others belong to `lab.rs`). Needs `cargo xtask test`
//! (CANOPY_LAB, CANOPY_AGENT_MUSL_BIN); fails without them, unless CANOPY_SKIP_LAB=1.

mod common;

use canopy_api_types::commands::CommandStatus;
use canopy_api_types::updates::UpdateFilter;
use common::lab::*;
use common::*;
use std::time::Duration;

fn in_guest(guest: &str, script: &str) -> (bool, String) {
    let out = docker_output(&["exec", guest, "sh", "-c", script]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Puts `canopy-demo-slow` back at 1.0 with a healthy database, also after a failed assertion.
struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        stop_agent(&self.0);
        let _ = in_guest(
            &self.0,
            "export DEBIAN_FRONTEND=noninteractive; dpkg --configure -a >/dev/null 2>&1; \
             apt-get install -y -q --allow-downgrades canopy-demo-slow=1.0 canopy-demo-hello=1.0 \
             >/dev/null 2>&1",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_install_is_stopped_as_a_group_and_blocks_the_next_install() {
    let Some(lab) = Lab::from_env("hang watchdog lab test") else {
        return;
    };
    let guests = lab.guests();
    let guest = guests
        .get(3)
        .unwrap_or_else(|| {
            panic!(
                "the lab has {} apt guests, this test needs 4: `cargo xtask lab up --lab-guests 4`",
                guests.len()
            )
        })
        .clone();
    let _restore = Restore(guest.clone());
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    install_agent(&lab, &guest);
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
    ]);
    docker(&[
        "exec",
        "-d",
        "-e",
        "RUST_LOG=info",
        "-e",
        "CANOPY_AGENT_HANG_TIMEOUT_SECS=4",
        &guest,
        "sh",
        "-c",
        "exec canopy-agent run >>/var/log/canopy-agent.log 2>&1",
    ]);

    let slow = app.reported("canopy-demo-slow").await;
    let (dry_id, _) = app.dry_run(&slow).await;
    let install = app.admin.confirm(dry_id).await.unwrap();
    let done = app
        .finished_command(install.id, Duration::from_secs(120))
        .await;
    let result = done.result.clone().expect("the agent reported the outcome");
    eprintln!("hung install: {:?}: {}", done.status, result.summary);
    assert_eq!(done.status, CommandStatus::Failed, "{result:?}");
    assert!(result.summary.contains("looks hung"), "{}", result.summary);
    assert!(
        result.summary.contains("SIGTERM to its process group"),
        "{}",
        result.summary
    );
    assert!(
        result.stdout.contains("Setting up canopy-demo-slow (1.1)"),
        "the output before the stop is kept: {}",
        result.stdout
    );

    // Nothing of the transaction runs on unsupervised: not apt-get, not dpkg, not the script.
    // (Bracketed first letters, so that the pattern does not match its own shell.)
    let (left, ps) = in_guest(
        &guest,
        "pgrep -a -f '[c]anopy-demo-slow|[d]pkg --status-fd|^sleep 20$'",
    );
    assert!(!left, "still running after the group stop:\n{ps}");
    // dpkg was stopped halfway: the database says so.
    let (_, audit) = in_guest(&guest, "dpkg --audit");
    assert!(
        audit.contains("canopy-demo-slow") && audit.contains("half configured"),
        "{audit}"
    );

    // The next install of this host refuses to start on the interrupted database.
    let hello = eventually(Duration::from_secs(60), || async {
        let page = app
            .admin
            .updates(&UpdateFilter {
                package: Some("canopy-demo-hello".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        page.items.into_iter().next()
    })
    .await;
    let approved = app.admin.approve(vec![hello.id]).await.unwrap();
    let dry_id = approved.dry_run_commands[0];
    let dry = app.finished_command(dry_id, Duration::from_secs(60)).await;
    assert_eq!(dry.status, CommandStatus::Completed, "{:?}", dry.result);
    let next = app.admin.confirm(dry_id).await.unwrap();
    let refused = app.finished_command(next.id, Duration::from_secs(60)).await;
    let r = refused.result.expect("the agent reported the refusal");
    assert_eq!(refused.status, CommandStatus::Failed, "{r:?}");
    assert!(
        r.stderr.starts_with(
            "the dpkg database is interrupted: approve the repair (dpkg --configure -a) first"
        ),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("canopy-demo-slow"), "{}", r.stderr);
    let (_, hello_now) = in_guest(&guest, "dpkg-query -W -f '${Version}' canopy-demo-hello");
    assert_eq!(hello_now, "1.0", "the refused install touched nothing");
    let (_, still) = in_guest(&guest, "dpkg --audit");
    assert_eq!(still, audit, "the refused install touched nothing");
}
