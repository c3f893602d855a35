//! The privilege boundary of a deployed non-root agent, checked in its guest as the agent's own
//! user (`runuser -u canopy-agent`): its one sudoers rule names only the root helper; the
//! root-equivalent calls the old rule allowed (`sudo apt-get -o APT::Update::Pre-Invoke::=…`)
//! are refused; the helper refuses injected options and unknown verbs before running anything;
//! a pinned install through the helper installs exactly the named version; a hung transaction
//! stopped the way the agent stops one (SIGTERM to the process group it started sudo in) ends
//! entirely — sudo relays the signal to the helper, the helper to its package manager's group —
//! and the `repair` verb brings the interrupted dpkg database back.

use super::lab::{docker, docker_output};
use std::process::Output;

const HELPER: &str = "/usr/local/bin/canopy-agent";
/// A lab demo package whose old (1.0, installed) and new (1.1) versions are both published.
const PACKAGE: &str = "canopy-demo-hello";

/// `ARGV` as the `canopy-agent` user in `container`, whatever its exit status.
fn as_agent(container: &str, argv: &[&str]) -> Output {
    let mut args = vec!["exec", container, "runuser", "-u", "canopy-agent", "--"];
    args.extend_from_slice(argv);
    docker_output(&args)
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn installed(container: &str) -> String {
    docker(&[
        "exec",
        container,
        "dpkg-query",
        "-W",
        "-f",
        "${Version}",
        PACKAGE,
    ])
}

/// The sudoers file holds one grant, for the helper by full path (0440), and the helper binary
/// is root's (0755): whoever could replace it would be root.
pub fn assert_only_the_helper_is_root(container: &str) {
    let rule = docker(&["exec", container, "cat", "/etc/sudoers.d/canopy-agent"]);
    let grants: Vec<&str> = rule
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("NOPASSWD"))
        .collect();
    assert_eq!(
        grants,
        ["canopy-agent ALL=(root) NOPASSWD: /usr/local/bin/canopy-agent helper *"],
        "{rule}"
    );
    let modes = docker(&[
        "exec",
        container,
        "stat",
        "-c",
        "%U %a",
        "/etc/sudoers.d/canopy-agent",
        HELPER,
    ]);
    assert_eq!(modes.trim(), "root 440\nroot 755", "{modes}");
}

/// Puts the packages back at their old versions with a healthy database, also when an
/// assertion failed half-way.
struct Restore<'a>(&'a str);

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = docker_output(&[
            "exec",
            self.0,
            "sh",
            "-c",
            "export DEBIAN_FRONTEND=noninteractive; dpkg --configure -a >/dev/null 2>&1; \
             apt-get install -y -q --allow-downgrades canopy-demo-hello=1.0 canopy-demo-slow=1.0 \
             >/dev/null 2>&1; rm -f /tmp/canopy-stop.pgid /tmp/canopy-stop.out",
        ]);
    }
}

/// Polls `f` every 100 ms until it holds, at most 60 s; panics with `what` otherwise.
fn poll(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "{what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `sh -c SCRIPT` in the container as root: (success, stdout).
fn sh(container: &str, script: &str) -> (bool, String) {
    let out = docker_output(&["exec", container, "sh", "-c", script]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// What is left of the slow transaction (bracketed first letters: not the pgrep's own shell).
fn slow_transaction(container: &str) -> Option<String> {
    let (found, ps) = sh(
        container,
        "pgrep -a -f '[c]anopy-demo-slow|[d]pkg --status-fd|^sleep 20$'",
    );
    found.then_some(ps)
}

/// The agent's stop of a hung install, by the agent's user, through sudo and the helper.
fn assert_a_stopped_transaction_ends_and_repairs(container: &str) {
    let script = format!(
        "echo $$ > /tmp/canopy-stop.pgid; \
         exec sudo -n {HELPER} helper install apt canopy-demo-slow=1.1 >/tmp/canopy-stop.out 2>&1"
    );
    docker(&[
        "exec",
        "-d",
        container,
        "runuser",
        "-u",
        "canopy-agent",
        "--",
        "setsid",
        "sh",
        "-c",
        &script,
    ]);
    poll("the slow postinst never started", || {
        sh(container, "pgrep -f '[c]anopy-demo-slow.postinst'").0
    });
    let stop = as_agent(
        container,
        &["sh", "-c", "kill -TERM -$(cat /tmp/canopy-stop.pgid)"],
    );
    assert!(stop.status.success(), "{}", text(&stop));
    poll("the transaction outlived the group SIGTERM", || {
        slow_transaction(container).is_none()
    });
    let (_, out) = sh(container, "cat /tmp/canopy-stop.out");
    assert!(out.contains("was asked to stop"), "{out}");
    let (_, audit) = sh(container, "dpkg --audit");
    assert!(audit.contains("canopy-demo-slow"), "interrupted: {audit}");

    let repair = as_agent(
        container,
        &["sudo", "-n", HELPER, "helper", "repair", "apt"],
    );
    assert!(repair.status.success(), "{}", text(&repair));
    let (_, audit) = sh(container, "dpkg --audit");
    assert_eq!(audit.trim(), "", "repaired");
}

/// See the module documentation. Leaves the guest's packages as it found them.
pub fn assert_boundary_holds(container: &str) {
    assert_only_the_helper_is_root(container);
    assert_eq!(installed(container), "1.0", "the guest image's version");

    // The old rule's root shell: refused by sudo, `id` never runs as root.
    for argv in [
        &[
            "sudo",
            "-n",
            "apt-get",
            "-o",
            "APT::Update::Pre-Invoke::=id",
            "update",
        ][..],
        &["sudo", "-n", "/usr/bin/apt-get", "update"],
        &["sudo", "-n", "dpkg", "--audit"],
        &["sudo", "-n", "sh", "-c", "id"],
        // The agent binary, but not its helper: `run`/`register` as root would read files
        // the agent user controls.
        &["sudo", "-n", HELPER, "run"],
        &[
            "sudo",
            "-n",
            HELPER,
            "--config",
            "/tmp/x.toml",
            "helper",
            "audit",
            "apt",
        ],
    ] {
        let out = as_agent(container, argv);
        let t = text(&out);
        eprintln!("privilege: {argv:?}: {t}");
        assert!(!out.status.success(), "{argv:?} ran: {t}");
        assert!(!t.contains("uid=0"), "{argv:?} ran something as root: {t}");
    }

    // The helper itself refuses injected options and unknown verbs (exit 64), runs nothing.
    for argv in [
        &["helper", "install", "apt", "-oAPT::Update::Pre-Invoke::=id"][..],
        &[
            "helper",
            "install",
            "apt",
            "canopy-demo-hello=1.1",
            "-oAPT::Update::Pre-Invoke::=id=1",
        ],
        &["helper", "install", "apt", "canopy-demo-hello=1.1;id"],
        &["helper", "upgrade", "apt", "--allow-downgrades"],
        &["helper", "refresh", "apt", "-oAPT::Update::Pre-Invoke::=id"],
        &["helper", "install", "apt", "./evil.deb=1"],
        &["helper", "shell", "apt"],
    ] {
        let mut full = vec!["sudo", "-n", HELPER];
        full.extend_from_slice(argv);
        let out = as_agent(container, &full);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(64), "{argv:?}: {t}");
        assert!(t.contains("canopy-agent helper: refused"), "{argv:?}: {t}");
        assert!(!t.contains("uid=0"), "{argv:?}: {t}");
    }
    assert_eq!(installed(container), "1.0", "nothing was installed");

    // What the agent does: audit and a pinned install through the helper.
    let audit = as_agent(container, &["sudo", "-n", HELPER, "helper", "audit", "apt"]);
    assert!(audit.status.success(), "{}", text(&audit));
    let _restore = Restore(container);
    let pin = format!("{PACKAGE}=1.1");
    let out = as_agent(
        container,
        &["sudo", "-n", HELPER, "helper", "install", "apt", &pin],
    );
    assert!(out.status.success(), "pinned install: {}", text(&out));
    assert_eq!(installed(container), "1.1");

    assert_a_stopped_transaction_ends_and_repairs(container);
}
