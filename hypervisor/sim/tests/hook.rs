//! The cluster action hook: every guest task runs `HOOK… ACTION VMID [SNAPNAME] [--start]`,
//! stays `running` while the hook runs (other requests still answer), applies its effect when
//! the hook exits 0, and fails with the hook's last stderr line (no effect, lock released)
//! otherwise. The hook here is a small shell script that records its arguments.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// Records each call in `DIR/calls`; waits while `DIR/hold` exists; fails rollbacks to a
/// snapshot named `gone` with two stderr lines (the task must show the last one).
const SCRIPT: &str = r#"#!/bin/sh
dir=$(dirname "$0")
echo "$*" >> "$dir/calls"
n=0
while [ -e "$dir/hold" ] && [ $n -lt 2000 ]; do sleep 0.01; n=$((n+1)); done
if [ "$1" = rollback ] && [ "$3" = gone ]; then
    echo "docker: some noise first" >&2
    echo "no snapshot image for guest $2 and snapshot gone" >&2
    exit 3
fi
exit 0
"#;

struct Hook {
    dir: PathBuf,
}

impl Hook {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "canopy-sim-hook-{tag}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hook.sh"), SCRIPT).unwrap();
        Self { dir }
    }

    fn argv(&self) -> Vec<String> {
        vec![
            "/bin/sh".into(),
            self.dir.join("hook.sh").to_string_lossy().into(),
        ]
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn sim_with(hook: &Hook) -> canopy_pve_sim::RunningCluster {
    let mut spec = cluster("home.toml", "home");
    spec.hook = Some(hook.argv());
    spec.task_duration_ms = 0;
    start(spec).await
}

fn upid(a: &Answer) -> String {
    assert_eq!(a.status, 200, "{}", a.raw);
    a.data().as_str().expect("a UPID").to_string()
}

async fn wait_calls(hook: &Hook, n: usize) -> Vec<String> {
    wait_for(Duration::from_secs(10), || async {
        let calls = hook.calls();
        (calls.len() >= n).then_some(calls)
    })
    .await
}

fn touch(p: &Path) {
    std::fs::write(p, "").unwrap();
}

#[tokio::test]
async fn hook_gets_each_action_and_holds_the_task_until_it_exits() {
    let hook = Hook::new("ok");
    let sim = sim_with(&hook).await;
    touch(&hook.path("hold"));
    let snap = upid(
        &post(
            &sim,
            "/nodes/pve1/lxc/101/snapshot",
            ADMIN,
            &[("snapname", "canopy_op1")],
        )
        .await,
    );
    assert_eq!(wait_calls(&hook, 1).await, ["snapshot 101 canopy_op1"]);
    // The hook is still waiting: the task runs, the guest is locked, nothing applied yet, and
    // the simulator answers other requests meanwhile.
    let status = get(&sim, &format!("/nodes/pve1/tasks/{snap}/status"), ADMIN).await;
    assert_eq!(status.data()["status"], "running");
    let config = get(&sim, "/nodes/pve1/lxc/101/config", ADMIN).await;
    assert_eq!(config.data()["lock"], "snapshot");
    assert!(sim
        .guest(101)
        .unwrap()
        .snapshots
        .iter()
        .all(|s| s.name != "canopy_op1"));
    std::fs::remove_file(hook.path("hold")).unwrap();
    assert_eq!(wait_task(&sim, "pve1", &snap).await["exitstatus"], "OK");
    let g = sim.guest(101).unwrap();
    assert!(g.snapshots.iter().any(|s| s.name == "canopy_op1"));
    assert_eq!(g.lock, None);

    // Every other guest action, with its arguments; rollback passes --start when asked.
    let mut expected = vec!["snapshot 101 canopy_op1".to_string()];
    for (path, form, call) in [
        (
            "/nodes/pve1/lxc/101/status/reboot",
            vec![],
            "reboot 101".to_string(),
        ),
        (
            "/nodes/pve1/lxc/101/status/shutdown",
            vec![],
            "shutdown 101".into(),
        ),
        (
            "/nodes/pve1/lxc/101/status/start",
            vec![],
            "start 101".into(),
        ),
        ("/nodes/pve1/lxc/101/status/stop", vec![], "stop 101".into()),
        (
            "/nodes/pve1/lxc/101/snapshot/canopy_op1/rollback",
            vec![("start", "1")],
            "rollback 101 canopy_op1 --start".into(),
        ),
        (
            "/nodes/pve1/lxc/101/snapshot/canopy_op1/rollback",
            vec![],
            "rollback 101 canopy_op1".into(),
        ),
    ] {
        let task = upid(&post(&sim, path, ADMIN, &form).await);
        assert_eq!(wait_task(&sim, "pve1", &task).await["exitstatus"], "OK");
        expected.push(call);
    }
    assert_eq!(
        sim.guest(101).unwrap().status,
        "stopped",
        "rollback without start"
    );
    let c = client(&sim, Duration::from_secs(10));
    let del = call(
        &c,
        reqwest::Method::DELETE,
        format!(
            "{}/api2/json/nodes/pve1/lxc/101/snapshot/canopy_op1",
            sim.url()
        ),
        Some(ADMIN),
        &[],
    )
    .await;
    assert_eq!(
        wait_task(&sim, "pve1", &upid(&del)).await["exitstatus"],
        "OK"
    );
    expected.push("delsnapshot 101 canopy_op1".into());
    assert_eq!(hook.calls(), expected);

    // A worker that dies in its first checks never runs the hook.
    let missing = post(
        &sim,
        "/nodes/pve1/lxc/101/snapshot/canopy_op1/rollback",
        ADMIN,
        &[],
    )
    .await;
    assert_eq!(
        wait_task(&sim, "pve1", &upid(&missing)).await["exitstatus"],
        "snapshot 'canopy_op1' does not exist"
    );
    assert_eq!(hook.calls(), expected);
}

#[tokio::test]
async fn hook_failure_is_the_task_error_and_has_no_effect() {
    let hook = Hook::new("fail");
    let sim = sim_with(&hook).await;
    let snap = upid(
        &post(
            &sim,
            "/nodes/pve1/lxc/101/snapshot",
            ADMIN,
            &[("snapname", "gone")],
        )
        .await,
    );
    assert_eq!(wait_task(&sim, "pve1", &snap).await["exitstatus"], "OK");
    sim.rename_guest(101, "renamed").unwrap();
    let rb = upid(
        &post(
            &sim,
            "/nodes/pve1/lxc/101/snapshot/gone/rollback",
            ADMIN,
            &[("start", "1")],
        )
        .await,
    );
    let done = wait_task(&sim, "pve1", &rb).await;
    assert_eq!(
        done["exitstatus"],
        "no snapshot image for guest 101 and snapshot gone"
    );
    let log = get(&sim, &format!("/nodes/pve1/tasks/{rb}/log"), ADMIN).await;
    let lines: Vec<&str> = log
        .data()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["t"].as_str())
        .collect();
    assert_eq!(
        lines.last().copied(),
        Some("TASK ERROR: no snapshot image for guest 101 and snapshot gone")
    );
    assert!(lines.contains(&"docker: some noise first"), "{lines:?}");
    // No effect: still running under its new name, and the rollback lock is gone.
    let g = sim.guest(101).unwrap();
    assert_eq!(
        (g.name.as_str(), g.status.as_str(), g.lock.clone()),
        ("renamed", "running", None)
    );
    assert_eq!(
        hook.calls(),
        ["snapshot 101 gone", "rollback 101 gone --start"]
    );
}

#[test]
fn an_empty_hook_is_refused() {
    let text = "[[clusters]]\nname = \"c\"\nhook = []\n[[clusters.nodes]]\nname = \"pve1\"\n";
    let err = canopy_pve_sim::SimFile::from_toml_str(text).unwrap_err();
    assert!(
        format!("{err:#}").contains("hook must name a program"),
        "{err:#}"
    );
}
