use super::*;

/// Whether `pid` is still a live process (a zombie waiting for its reaper counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => {
            let state = stat.rsplit_once(')').map(|(_, r)| r.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z') | Some('X'))
        }
    }
}

/// Polls (bounded) until none of `pids` is alive; panics naming the survivors.
fn assert_all_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pids(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[tokio::test]
async fn captures_output_and_exit_code() {
    let out = run(&Cmd::new("sh").args(["-c", "echo hi; echo err >&2; exit 3"]))
        .await
        .expect("sh runs");
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout, "hi\n");
    assert_eq!(out.stderr, "err\n");
    let e = out.check(&[]).unwrap_err().to_string();
    assert!(
        e.contains("sh -c") && e.contains("exit code 3") && e.contains("err"),
        "{e}"
    );
}

#[tokio::test]
async fn a_deadline_stops_the_command_with_sigterm() {
    let err = run(&Cmd::new("sleep")
        .arg("30")
        .timeout(Duration::from_millis(200)))
    .await
    .unwrap_err();
    let ProcessError::Stopped { reason, killed, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(*reason, StopReason::Deadline(Duration::from_millis(200)));
    assert!(!killed, "sleep ends on SIGTERM");
    let msg = err.to_string();
    assert!(
        msg.contains("sleep 30") && msg.contains("timed out"),
        "{msg}"
    );
    assert!(msg.contains("SIGTERM to its process group"), "{msg}");
    assert!(!err.hung());
}

/// The hang watchdog stops the whole process group: the shell *and* the child it put in the
/// background (killing only the direct child — `sudo` — left the rest running).
#[tokio::test]
async fn the_hang_watchdog_stops_the_whole_process_group() {
    let cmd = Cmd::new("sh")
        .args(["-c", "sleep 1000 & echo $! $$; sleep 1000"])
        .limit(Limit::Silence(Duration::from_millis(300)))
        .grace(Duration::from_secs(10));
    let err = run(&cmd).await.unwrap_err();
    let ProcessError::Stopped {
        reason,
        killed,
        stdout,
        ..
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*reason, StopReason::Silent(Duration::from_millis(300)));
    assert!(!killed, "SIGTERM was enough");
    assert!(err.hung());
    assert!(err.to_string().contains("looks hung"), "{err}");
    let pids = pids(stdout);
    assert_eq!(pids.len(), 2, "{stdout:?}");
    assert_all_gone(&pids);
}

/// A group that ignores SIGTERM gets SIGKILL after the grace period, the whole group again.
#[tokio::test]
async fn sigkill_follows_only_after_the_grace_period() {
    let cmd = Cmd::new("sh")
        .args(["-c", "trap '' TERM; sleep 1000 & echo $! $$; sleep 1000"])
        .limit(Limit::Silence(Duration::from_millis(200)))
        .grace(Duration::from_millis(300));
    let err = run(&cmd).await.unwrap_err();
    let ProcessError::Stopped { killed, stdout, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(killed, "{err}");
    assert!(err.to_string().contains("then SIGKILL"), "{err}");
    assert_all_gone(&pids(stdout));
}

/// Output resets the hang clock: a transaction that keeps printing is never stopped, however
/// long it runs in total.
#[tokio::test]
async fn a_command_that_keeps_printing_is_not_hung() {
    let cmd = Cmd::new("sh")
        .args(["-c", "for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done"])
        .limit(Limit::Silence(Duration::from_secs(1)));
    let out = run(&cmd).await.expect("not stopped");
    assert!(out.success());
    assert_eq!(out.stdout.lines().count(), 6);
}

#[tokio::test]
async fn a_stop_request_stops_the_group() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let cmd = Cmd::new("sh")
        .args(["-c", "echo $$; sleep 1000"])
        .limit(Limit::Unlimited);
    let task = tokio::spawn(async move {
        run_until(&cmd, async {
            let _ = rx.await;
        })
        .await
    });
    tx.send(()).expect("send");
    let err = task.await.expect("join").unwrap_err();
    assert!(
        matches!(
            err,
            ProcessError::Stopped {
                reason: StopReason::Requested,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Dropping a running command (its caller went away) never leaves the group running.
#[tokio::test]
async fn dropping_a_running_command_terminates_its_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
    let cmd = Cmd::new("sh").args(["-c", &script]).limit(Limit::Unlimited);
    let task = tokio::spawn(async move { run(&cmd).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(p) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
        {
            break p;
        }
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    task.abort();
    let _ = task.await;
    assert_all_gone(&[pid]);
}

#[tokio::test]
async fn passthrough_returns_the_exit_code() {
    let code = run_passthrough(
        &Cmd::new("sh").args(["-c", "exit 7"]),
        std::future::pending(),
    )
    .await
    .expect("runs");
    assert_eq!(code, 7);
    let code = run_passthrough(
        &Cmd::new("sh").args(["-c", "kill -TERM $$"]),
        std::future::pending(),
    )
    .await
    .expect("runs");
    assert_eq!(code, 128 + 15);
}

#[tokio::test]
async fn a_cleared_environment_keeps_only_what_the_command_sets() {
    let mut cmd = Cmd::new("/bin/sh").args(["-c", "env | sort"]);
    cmd.clear_env = true;
    cmd.dir = Some("/".into());
    let out = run(&cmd.env("FOO", "bar")).await.expect("runs");
    let vars: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("PWD=") && !l.starts_with("SHLVL=") && !l.starts_with('_'))
        .collect();
    assert_eq!(vars, ["FOO=bar", "LANG=C", "LC_ALL=C"], "{}", out.stdout);
}

#[tokio::test]
async fn missing_program_is_named() {
    let err = run(&Cmd::new("definitely-not-a-program-xyz"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("definitely-not-a-program-xyz"));
    assert_eq!(err.exit_code(), -1);
}

#[tokio::test]
async fn output_is_tail_truncated() {
    let out = run(&Cmd::new("sh").args(["-c", "head -c 300000 /dev/zero | tr '\\0' a; echo END"]))
        .await
        .expect("sh runs");
    assert!(out.stdout.len() < MAX_OUTPUT + 200);
    assert!(out.stdout.ends_with("END\n"));
    assert!(out.stdout.starts_with("[… output truncated"));
}

#[test]
fn truncate_tail_respects_char_boundaries() {
    let s = "ééééé";
    let t = truncate_tail(s, 3);
    assert!(t.ends_with('é'));
}
