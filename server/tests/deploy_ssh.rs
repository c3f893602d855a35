//! The SSH layer of agent delivery against real sshd in the lab's PVE node stand-in: host keys
//! pinned on first use and a changed key refused (an extra sshd on its own port, whose host key
//! the test swaps), remote commands with exit codes, separate stderr, stdin, deadlines and
//! tail-truncated output, and the errors for a key the server does not know and a closed port.
//! Each test uses a fresh SQLite store. Guests are only read (`pct exec … cat`): another test
//! deploys into them.
//!
//! Needs `cargo xtask test` (CANOPY_LAB, CANOPY_AGENT_MUSL_BIN); fails without them, unless
//! CANOPY_SKIP_LAB=1.

mod common;

use canopy_server::deploy::ssh::{Ssh, SshError, SshTarget};
use canopy_store::{Actor, Store};
use common::lab::*;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh SQLite store in its own directory (kept alive by the returned guard).
async fn fresh_store() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("canopy.db").display());
    let store = canopy_store::open(&url).await.expect("the store opens");
    (dir, store)
}

/// A 127.0.0.1 port nothing listens on right now (all lab containers share the host network).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn listening(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
        .is_ok()
}

/// Polls `f` every 50 ms until it holds, at most 10 s; panics with `what` otherwise.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `sh -c script` in container `c`; its stdout (the call panics unless it succeeds).
fn sh(c: &str, script: &str) -> String {
    docker(&["exec", c, "sh", "-c", script])
}

/// The `SHA256:…` fingerprints `ssh-keygen -lf` prints for each public key file in `c`.
fn keygen_fingerprints(c: &str, pub_files: &str) -> Vec<String> {
    sh(
        c,
        &format!("for f in {pub_files}; do ssh-keygen -lf $f; done"),
    )
    .lines()
    .map(|l| {
        l.split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("ssh-keygen -lf printed {l:?}"))
            .to_string()
    })
    .collect()
}

/// A second sshd in the node container on its own 127.0.0.1 port, with host keys the test
/// generates; dropping it stops the sshd and removes its files, also when a test panics.
struct ExtraSshd {
    container: String,
    port: u16,
    /// `/tmp/canopy-test-sshd-PORT`: the prefix of every file this sshd uses.
    prefix: String,
}

impl ExtraSshd {
    fn new(container: &str) -> Self {
        let port = free_port();
        Self {
            container: container.to_string(),
            port,
            prefix: format!("/tmp/canopy-test-sshd-{port}"),
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn key_file(&self, name: &str) -> String {
        format!("{}-hk-{name}", self.prefix)
    }

    /// Generates host key `name` (ed25519) and returns its fingerprint as `ssh-keygen -lf`
    /// prints it.
    fn generate_key(&self, name: &str) -> String {
        let key = self.key_file(name);
        sh(
            &self.container,
            &format!("rm -f {key} {key}.pub && ssh-keygen -q -t ed25519 -N '' -C {name} -f {key}"),
        );
        keygen_fingerprints(&self.container, &format!("{key}.pub")).remove(0)
    }

    /// Starts sshd with host key `name` (the node's rules: root by key only, no PAM) and
    /// waits until it accepts connections.
    fn start(&self, name: &str) {
        let p = &self.prefix;
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\nHostKey {key}\nPidFile {p}.pid\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\n",
            port = self.port,
            key = self.key_file(name),
        );
        sh(
            &self.container,
            &format!("printf '%s' '{config}' > {p}.conf && /usr/sbin/sshd -f {p}.conf -E {p}.log"),
        );
        wait_for(
            &format!(
                "the extra sshd does not listen on {}: {}",
                self.address(),
                sh(&self.container, &format!("cat {p}.log 2>&1 || true"))
            ),
            || listening(self.port),
        );
    }

    /// Stops the listening sshd and waits until the port is closed.
    fn stop(&self) {
        let p = &self.prefix;
        sh(
            &self.container,
            &format!(
                "if [ -f {p}.pid ]; then kill $(cat {p}.pid) 2>/dev/null; rm -f {p}.pid; fi; true"
            ),
        );
        wait_for(
            &format!("the extra sshd on {} does not stop", self.address()),
            || !listening(self.port),
        );
    }
}

impl Drop for ExtraSshd {
    fn drop(&mut self) {
        let p = &self.prefix;
        let _ = docker_output(&[
            "exec",
            &self.container,
            "sh",
            "-c",
            &format!(
                "[ -f {p}.pid ] && kill $(cat {p}.pid); rm -f {p}.pid {p}.conf {p}.log {p}-hk-*"
            ),
        ]);
    }
}

fn target(address: &str, pve: &PveLab, key_file: &Path) -> SshTarget {
    SshTarget {
        address: address.to_string(),
        user: pve.node.user.clone(),
        key_file: key_file.to_path_buf(),
    }
}

async fn pinned(store: &dyn Store, address: &str) -> Option<String> {
    store
        .host_key(address)
        .await
        .unwrap()
        .map(|k| k.fingerprint)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_refused_with_a_clear_error() {
    let Some(lab) = Lab::from_env("SSH host key pinning test") else {
        return;
    };
    let pve = lab.pve();
    let (_dir, store) = fresh_store().await;
    let actor = Actor::System;
    let sshd = ExtraSshd::new(&pve.node.container);
    let address = sshd.address();
    let t = target(&address, &pve, &pve.ssh_key);
    let fp_a = sshd.generate_key("A");
    let fp_b = sshd.generate_key("B");
    assert_ne!(fp_a, fp_b);

    // First use: connected, key A pinned in ssh-keygen's fingerprint format.
    sshd.start("A");
    let ssh = Ssh::connect(&t, CONNECT_TIMEOUT, store.as_ref(), &actor)
        .await
        .expect("the first connection pins and logs in");
    let out = ssh
        .exec("echo pinned", None, COMMAND_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(out.stdout, "pinned\n");
    let key = store.host_key(&address).await.unwrap().expect("a pin");
    assert_eq!(
        key.fingerprint, fp_a,
        "our fingerprint differs from ssh-keygen's"
    );
    assert_eq!(key.key_type, "ssh-ed25519");
    assert_eq!(key.address, address);
    drop(ssh);

    // Same key again: still accepted.
    Ssh::connect(&t, CONNECT_TIMEOUT, store.as_ref(), &actor)
        .await
        .expect("the pinned key is accepted again");

    // The host is "reinstalled" with key B: refused, and the pin stays A.
    sshd.stop();
    sshd.start("B");
    let err = Ssh::connect(&t, CONNECT_TIMEOUT, store.as_ref(), &actor)
        .await
        .expect_err("a changed host key is refused");
    match &err {
        SshError::HostKeyChanged {
            address: a,
            key_type,
            pinned,
            presented,
        } => {
            assert_eq!(a, &address);
            assert_eq!(key_type, "ssh-ed25519");
            assert_eq!(pinned, &fp_a);
            assert_eq!(presented, &fp_b);
        }
        other => panic!("expected HostKeyChanged, got {other:?}"),
    }
    let message = err.to_string();
    for part in [
        address.as_str(),
        &fp_a,
        &fp_b,
        "changed",
        &format!("canopy agent forget-host-key {address}"),
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert_eq!(pinned(store.as_ref(), &address).await, Some(fp_a.clone()));

    // The operator forgets the pin: the next connection pins B.
    assert!(store.forget_host_key(&address, &actor).await.unwrap());
    assert_eq!(pinned(store.as_ref(), &address).await, None);
    let ssh = Ssh::connect(&t, CONNECT_TIMEOUT, store.as_ref(), &actor)
        .await
        .expect("after forget-host-key the new key is pinned");
    let out = ssh
        .exec("echo repinned", None, COMMAND_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(out.stdout, "repinned\n");
    assert_eq!(pinned(store.as_ref(), &address).await, Some(fp_b));
    drop(ssh);
    sshd.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_commands_have_deadlines_stdin_and_exit_codes() {
    let Some(lab) = Lab::from_env("SSH remote command test") else {
        return;
    };
    let pve = lab.pve();
    let (_dir, store) = fresh_store().await;
    let address = pve.node.ssh.to_string();
    let ssh = Ssh::connect(
        &target(&address, &pve, &pve.ssh_key),
        CONNECT_TIMEOUT,
        store.as_ref(),
        &Actor::System,
    )
    .await
    .expect("the node's sshd accepts the lab key");
    // The node's own host key was pinned, as ssh-keygen fingerprints it.
    let node_keys = keygen_fingerprints(&pve.node.container, "/etc/ssh/ssh_host_*_key.pub");
    let pin = pinned(store.as_ref(), &address).await.expect("a pin");
    assert!(node_keys.contains(&pin), "{pin} not among {node_keys:?}");

    // Exit codes pass through; a non-zero exit is an output, not an error.
    let out = ssh.exec("exit 3", None, COMMAND_TIMEOUT).await.unwrap();
    assert_eq!(out.exit_code, 3);
    assert!(!out.success());

    // stdout and stderr are captured apart.
    let out = ssh
        .exec("echo to-out; echo to-err >&2", None, COMMAND_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "to-out\n", "to-err\n")
    );
    assert_eq!(out.tail(), "to-err");

    // 1 MiB of random bytes through stdin arrive intact.
    let mut data = vec![0u8; 1 << 20];
    rand::thread_rng().fill(&mut data[..]);
    let local = hex::encode(Sha256::digest(&data));
    let out = ssh
        .exec("sha256sum", Some(data), COMMAND_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert_eq!(out.stdout.split_whitespace().next(), Some(local.as_str()));

    // The deadline: a command that outlives it is a Timeout, and the session stays usable.
    let started = std::time::Instant::now();
    let err = ssh
        .exec("sleep 30", None, Duration::from_secs(2))
        .await
        .expect_err("sleep 30 outlives a 2 s deadline");
    eprintln!(
        "sleep 30 with a 2 s deadline returned after {:?}",
        started.elapsed()
    );
    assert!(matches!(err, SshError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("sleep 30"), "{err}");
    let out = ssh
        .exec("echo after-timeout", None, COMMAND_TIMEOUT)
        .await
        .expect("the session works after a timed-out command");
    assert_eq!(out.stdout, "after-timeout\n");

    // Large output keeps its tail (at most 64 KiB), on both streams.
    let out = ssh
        .exec("seq 1 100000; seq 1 100000 >&2", None, COMMAND_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    for stream in [&out.stdout, &out.stderr] {
        assert!(stream.len() <= 64 * 1024, "{} bytes kept", stream.len());
        assert!(stream.len() > 60 * 1024, "only {} bytes kept", stream.len());
        assert!(stream.ends_with("\n99999\n100000\n"));
        // Whole lines after the first (cut) one are the consecutive end of the sequence.
        let lines: Vec<u32> = stream.lines().skip(1).map(|l| l.parse().unwrap()).collect();
        // 64 KiB hold about 10 900 of the last 6-byte lines.
        let first = lines[0];
        assert!(first > 85_000, "{first}");
        assert!(lines.iter().zip(first..).all(|(&l, n)| l == n));
    }

    // A file copied to the node keeps its bytes and mode.
    let dir = tempfile::tempdir().unwrap();
    let local_file = dir.path().join("payload");
    std::fs::write(&local_file, b"canopy upload test\n").unwrap();
    let remote = format!("/tmp/canopy-test-upload-{}", uuid::Uuid::new_v4().simple());
    ssh.upload(&local_file, &remote, 0o640, COMMAND_TIMEOUT)
        .await
        .expect("upload");
    let out = ssh
        .exec(
            &format!("stat -c %a {remote}; cat {remote}; rm -f {remote}"),
            None,
            COMMAND_TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(out.stdout, "640\ncanopy upload test\n");

    // Through the node into a guest, read-only.
    let out = ssh
        .exec("pct exec 101 -- cat /etc/os-release", None, COMMAND_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(
        out.stdout.lines().any(|l| l == "ID=debian"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_and_closed_port_fail_with_clear_errors() {
    let Some(lab) = Lab::from_env("SSH error message test") else {
        return;
    };
    let pve = lab.pve();
    let (dir, store) = fresh_store().await;
    let actor = Actor::System;

    // A key the node has never seen.
    let stranger: PathBuf = dir.path().join("stranger");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .output()
        .expect("ssh-keygen runs");
    assert!(keygen.status.success(), "{keygen:?}");
    let address = pve.node.ssh.to_string();
    let err = Ssh::connect(
        &target(&address, &pve, &stranger),
        CONNECT_TIMEOUT,
        store.as_ref(),
        &actor,
    )
    .await
    .expect_err("an unknown key is refused");
    assert!(
        matches!(&err, SshError::Auth { address: a, user, .. } if a == &address && user == "root"),
        "{err:?}"
    );
    let message = err.to_string();
    for part in [
        "authentication",
        "failed",
        &format!("root@{address}"),
        "canopy agent ssh-key",
        "authorized_keys",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }

    // Nothing listens on the port.
    let closed = format!("127.0.0.1:{}", free_port());
    let err = Ssh::connect(
        &target(&closed, &pve, &pve.ssh_key),
        CONNECT_TIMEOUT,
        store.as_ref(),
        &actor,
    )
    .await
    .expect_err("a closed port fails");
    assert!(
        matches!(&err, SshError::Connect { address: a, .. } if a == &closed),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains(&closed), "{message}");
    assert!(message.contains("cannot connect"), "{message}");
    assert_eq!(pinned(store.as_ref(), &closed).await, None);
}
