//! SSH for agent delivery (libssh2 through the `ssh2` crate): key authentication, host keys
//! pinned on first use and verified on every later connection, and remote commands with a
//! deadline, stdin, and captured (tail-truncated) output.
//!
//! libssh2 is blocking; every call here runs on tokio's blocking pool. One [`Ssh`] is one
//! session used by one worker at a time (a blocking read holds the session's lock, so
//! concurrent channels on one session would starve each other).

use canopy_api_types::deploy::SshHostKey;
use canopy_store::{Actor, Store};
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Captured output is cut to its last `MAX_OUTPUT` bytes per stream.
const MAX_OUTPUT: usize = 64 * 1024;

/// How long a command that failed or outlived its deadline gets to close its channel.
const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// `host:port` in [`super::address::SshAddress`]'s canonical form (`[IPv6]:port`).
    pub address: String,
    pub user: String,
    pub key_file: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("cannot connect to {address}: {message}")]
    Connect { address: String, message: String },
    #[error("SSH handshake with {address} failed: {message}")]
    Handshake { address: String, message: String },
    #[error(
        "the SSH host key of {address} changed: pinned {pinned}, presented {presented} \
         ({key_type}). Refusing to connect. If the host was reinstalled, remove the pin with \
         `canopy agent forget-host-key {}` and deploy again",
        quote(.address)
    )]
    HostKeyChanged {
        address: String,
        key_type: String,
        pinned: String,
        presented: String,
    },
    #[error(
        "SSH key authentication as {user}@{address} failed: {message} (add the public key \
         printed by `canopy agent ssh-key` to {user}'s ~/.ssh/authorized_keys)"
    )]
    Auth {
        address: String,
        user: String,
        message: String,
    },
    #[error("`{command}` on {address} did not finish within {secs} s")]
    Timeout {
        address: String,
        command: String,
        secs: u64,
    },
    #[error("SSH to {address}: {message}")]
    Io { address: String, message: String },
    #[error("cannot record the host key of {address}: {message}")]
    Store { address: String, message: String },
}

/// What a finished remote command produced.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl RemoteOutput {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// The last non-empty lines of stderr (else stdout), for error messages.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    }
}

/// An authenticated session.
#[derive(Clone)]
pub struct Ssh {
    session: Arc<Mutex<Session>>,
    pub address: String,
}

/// The session of an [`Ssh`]; dropping it never waits for the server. libssh2 frees a
/// session's channels first, and a channel whose command outlived its deadline is closed by
/// the server only when that command ends: a blocking free would hold the dropping thread
/// until then (or the last timeout). Non-blocking, such a session is left to leak instead.
struct Session(ssh2::Session);

impl std::ops::Deref for Session {
    type Target = ssh2::Session;
    fn deref(&self) -> &ssh2::Session {
        &self.0
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.0.set_blocking(false);
    }
}

impl std::fmt::Debug for Ssh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ssh")
            .field("address", &self.address)
            .finish()
    }
}

/// `SHA256:…` as `ssh-keygen -l` prints it (unpadded base64 of the key blob's SHA-256).
pub fn fingerprint(blob: &[u8]) -> String {
    use base64::Engine;
    let digest = Sha256::digest(blob);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

fn key_type_name(t: ssh2::HostKeyType) -> &'static str {
    match t {
        ssh2::HostKeyType::Rsa => "ssh-rsa",
        ssh2::HostKeyType::Dss => "ssh-dss",
        ssh2::HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        ssh2::HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        ssh2::HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        ssh2::HostKeyType::Ed25519 => "ssh-ed25519",
        ssh2::HostKeyType::Unknown => "unknown",
    }
}

async fn blocking<T: Send + 'static>(
    address: &str,
    f: impl FnOnce() -> Result<T, SshError> + Send + 'static,
) -> Result<T, SshError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SshError::Io {
            address: address.to_string(),
            message: format!("SSH worker failed: {e}"),
        })?
}

impl Ssh {
    /// Connects, checks the host key against the pin in `store` (pinning it on first use),
    /// then authenticates with the key file.
    pub async fn connect(
        target: &SshTarget,
        connect_timeout: Duration,
        store: &dyn Store,
        actor: &Actor,
    ) -> Result<Ssh, SshError> {
        let address = target.address.clone();
        let (session, presented) = blocking(&address.clone(), move || {
            handshake(&address, connect_timeout)
        })
        .await?;
        let address = target.address.clone();
        verify_host_key(store, actor, presented).await?;
        let (user, key) = (target.user.clone(), target.key_file.clone());
        let addr = address.clone();
        let session = blocking(&address, move || {
            session
                .userauth_pubkey_file(&user, None, &key, None)
                .map_err(|e| SshError::Auth {
                    address: addr.clone(),
                    user: user.clone(),
                    message: e.message().to_string(),
                })?;
            if !session.authenticated() {
                return Err(SshError::Auth {
                    address: addr,
                    user,
                    message: "the server did not accept the key".into(),
                });
            }
            Ok(session)
        })
        .await?;
        Ok(Ssh {
            session: Arc::new(Mutex::new(Session(session))),
            address,
        })
    }

    /// Runs `command` (a shell command line for the remote login shell), feeding `stdin`,
    /// and waits at most `timeout` for it to finish. A non-zero exit is not an error here.
    pub async fn exec(
        &self,
        command: &str,
        stdin: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<RemoteOutput, SshError> {
        let session = self.session.clone();
        let address = self.address.clone();
        let command = command.to_string();
        blocking(&self.address, move || {
            let session = session.lock().expect("ssh session lock");
            exec_blocking(&session, &address, &command, stdin.as_deref(), timeout)
        })
        .await
    }

    /// Copies `local` to `remote` with `mode` (scp), at most `timeout`.
    pub async fn upload(
        &self,
        local: &Path,
        remote: &str,
        mode: i32,
        timeout: Duration,
    ) -> Result<(), SshError> {
        let session = self.session.clone();
        let address = self.address.clone();
        let (local, remote) = (local.to_path_buf(), remote.to_string());
        blocking(&self.address, move || {
            let io = |e: std::io::Error| SshError::Io {
                address: address.clone(),
                message: format!("copying {} to {remote}: {e}", local.display()),
            };
            let data = std::fs::read(&local).map_err(io)?;
            let session = session.lock().expect("ssh session lock");
            session.set_blocking(true);
            session.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
            let mut ch = session
                .scp_send(Path::new(&remote), mode, data.len() as u64, None)
                .map_err(|e| SshError::Io {
                    address: address.clone(),
                    message: format!("scp to {remote}: {}", e.message()),
                })?;
            ch.write_all(&data).map_err(io)?;
            let ssh = |e: ssh2::Error| SshError::Io {
                address: address.clone(),
                message: format!("scp to {remote}: {}", e.message()),
            };
            ch.send_eof().map_err(ssh)?;
            ch.wait_eof().map_err(ssh)?;
            ch.close().map_err(ssh)?;
            ch.wait_close().map_err(ssh)?;
            Ok(())
        })
        .await
    }
}

struct Presented {
    address: String,
    key_type: String,
    fingerprint: String,
}

fn handshake(address: &str, timeout: Duration) -> Result<(ssh2::Session, Presented), SshError> {
    let connect_err = |message: String| SshError::Connect {
        address: address.to_string(),
        message,
    };
    let addrs: Vec<_> = address
        .to_socket_addrs()
        .map_err(|e| connect_err(format!("cannot resolve the address: {e}")))?
        .collect();
    let mut last = None;
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = tcp.ok_or_else(|| {
        connect_err(match last {
            Some(e) if e.kind() == ErrorKind::TimedOut => {
                format!("no answer within {} s", timeout.as_secs())
            }
            Some(e) => e.to_string(),
            None => "the address resolves to nothing".into(),
        })
    })?;
    let mut session = ssh2::Session::new().map_err(|e| SshError::Handshake {
        address: address.to_string(),
        message: e.to_string(),
    })?;
    session.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
    session.set_tcp_stream(tcp);
    session.handshake().map_err(|e| SshError::Handshake {
        address: address.to_string(),
        message: e.message().to_string(),
    })?;
    let (blob, kind) = session.host_key().ok_or_else(|| SshError::Handshake {
        address: address.to_string(),
        message: "the server presented no host key".into(),
    })?;
    let presented = Presented {
        address: address.to_string(),
        key_type: key_type_name(kind).to_string(),
        fingerprint: fingerprint(blob),
    };
    Ok((session, presented))
}

/// Trust on first use: pin the presented key when none is pinned, refuse a different one.
async fn verify_host_key(
    store: &dyn Store,
    actor: &Actor,
    presented: Presented,
) -> Result<(), SshError> {
    let store_err = |e: canopy_store::StoreError| SshError::Store {
        address: presented.address.clone(),
        message: e.to_string(),
    };
    let pinned = match store
        .host_key(&presented.address)
        .await
        .map_err(store_err)?
    {
        Some(k) => k,
        None => {
            let key = SshHostKey {
                address: presented.address.clone(),
                key_type: presented.key_type.clone(),
                fingerprint: presented.fingerprint.clone(),
                first_seen: chrono::Utc::now(),
            };
            let pinned = store.pin_host_key(&key, actor).await.map_err(store_err)?;
            if pinned.fingerprint == key.fingerprint {
                tracing::info!(address = %key.address, fingerprint = %key.fingerprint, "SSH host key pinned on first use");
            }
            pinned
        }
    };
    if pinned.fingerprint != presented.fingerprint {
        return Err(SshError::HostKeyChanged {
            address: presented.address,
            key_type: presented.key_type,
            pinned: pinned.fingerprint,
            presented: presented.fingerprint,
        });
    }
    Ok(())
}

fn exec_blocking(
    session: &ssh2::Session,
    address: &str,
    command: &str,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<RemoteOutput, SshError> {
    let deadline = Instant::now() + timeout;
    let io = |what: &str, e: String| SshError::Io {
        address: address.to_string(),
        message: format!("{what} `{}`: {e}", short(command)),
    };
    let timed_out = || SshError::Timeout {
        address: address.to_string(),
        command: short(command),
        secs: timeout.as_secs(),
    };
    session.set_blocking(true);
    session.set_timeout(timeout.as_millis().min(u32::MAX as u128) as u32);
    let mut ch = session
        .channel_session()
        .map_err(|e| io("opening a channel for", e.message().to_string()))?;
    ch.exec(command)
        .map_err(|e| io("starting", e.message().to_string()))?;
    if let Some(data) = stdin {
        ch.write_all(data)
            .map_err(|e| io("writing stdin of", e.to_string()))?;
    }
    ch.send_eof()
        .map_err(|e| io("closing stdin of", e.message().to_string()))?;

    // Read both streams without blocking on either, so a chatty stderr cannot stall stdout.
    session.set_blocking(false);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut buf = [0u8; 16 * 1024];
    let result = loop {
        let mut progressed = false;
        let mut failure = None;
        for (stream, sink) in [(0, &mut out), (1, &mut err)] {
            match ch.stream(stream).read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    progressed = true;
                    sink.extend_from_slice(&buf[..n]);
                    if sink.len() > 2 * MAX_OUTPUT {
                        sink.drain(..sink.len() - MAX_OUTPUT);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => failure = Some(io("reading the output of", e.to_string())),
            }
        }
        if let Some(e) = failure {
            break Err(e);
        }
        if ch.eof() && !progressed {
            break Ok(());
        }
        if Instant::now() >= deadline {
            break Err(timed_out());
        }
        if !progressed {
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    session.set_blocking(true);
    if let Err(e) = result {
        // The command may still run: the server closes the channel only when it ends, and
        // libssh2 waits for that in `close` and again when the channel is freed, each up to
        // the session timeout, which would triple the deadline. Send the close, wait briefly.
        session.set_timeout(CLOSE_GRACE.as_millis() as u32);
        let _ = ch.close();
        drop(ch);
        return Err(e);
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    session.set_timeout(remaining.as_millis().clamp(1, u32::MAX as u128) as u32);
    ch.wait_close()
        .map_err(|e| io("waiting for", e.message().to_string()))?;
    let exit_code = ch
        .exit_status()
        .map_err(|e| io("reading the exit status of", e.message().to_string()))?;
    Ok(RemoteOutput {
        exit_code,
        stdout: tail_string(out),
        stderr: tail_string(err),
    })
}

fn tail_string(mut v: Vec<u8>) -> String {
    if v.len() > MAX_OUTPUT {
        v.drain(..v.len() - MAX_OUTPUT);
    }
    String::from_utf8_lossy(&v).into_owned()
}

/// The command for messages: the first line, at most 120 characters.
fn short(command: &str) -> String {
    let line = command.lines().next().unwrap_or("");
    if line.chars().count() > 120 {
        format!("{}…", line.chars().take(120).collect::<String>())
    } else {
        line.to_string()
    }
}

/// `s` quoted for a POSIX shell.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_match_ssh_keygen() {
        // SHA-256 of the empty input, in ssh-keygen's form (prefix, unpadded base64); the
        // lab test compares real keys with `ssh-keygen -lf`.
        assert_eq!(
            fingerprint(b""),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn quoting_survives_the_shell() {
        assert_eq!(quote("pct"), "pct");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", quote("x'y $HOME `id` \"z\"")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "x'y $HOME `id` \"z\"");
    }

    #[test]
    fn a_changed_ipv6_host_key_names_a_command_the_shell_keeps_intact() {
        let e = SshError::HostKeyChanged {
            address: "[2001:db8::10]:22".into(),
            key_type: "ssh-ed25519".into(),
            pinned: "SHA256:a".into(),
            presented: "SHA256:b".into(),
        };
        // Unquoted, `[…]` is a glob pattern to the shell.
        assert!(
            e.to_string()
                .contains("`canopy agent forget-host-key '[2001:db8::10]:22'`"),
            "{e}"
        );
    }

    #[test]
    fn short_cuts_long_commands() {
        assert_eq!(short("a\nb"), "a");
        assert!(short(&"x".repeat(500)).ends_with('…'));
    }
}
