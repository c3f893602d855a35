//! HTTPS helpers: a real server (the library, on a listener bound first) serving its
//! self-signed certificate, stoppable and restartable on the same port and data dir with a
//! new certificate ("the server's certificate changed"); HTTP clients that pin it; the real
//! `canopy serve` with its stderr read line by line; where the real `canopy-agent` is.

use super::ADMIN_PASSWORD;
use canopy_api_types::client::Client;
use canopy_server::settings::{Secret, Settings, TlsMode};
use canopy_tls::{Fingerprint, Trust};
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running HTTPS server.
pub struct TlsApp {
    pub base: String,
    pub addr: SocketAddr,
    pub fingerprint: Fingerprint,
    pub settings: Settings,
    /// The admin, logged in over a client that pins `fingerprint`.
    pub admin: Client,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// SQLite in `dir`, the data dir `dir/data`, HTTPS with the self-signed certificate.
pub fn settings_in(dir: &Path) -> Settings {
    Settings {
        database_url: format!("sqlite://{}", dir.join("canopy.db").display()),
        data_dir: dir.join("data"),
        admin_password: Some(Secret::new(ADMIN_PASSWORD)),
        auth_attempts_per_minute: 1000,
        tls: TlsMode::On,
        ..Settings::default()
    }
}

/// A reqwest client that trusts only `fp`.
pub fn pinned_http(fp: Fingerprint) -> reqwest::Client {
    let (tls, _) = canopy_tls::client_config(&Trust::Fingerprints(vec![fp])).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

impl TlsApp {
    /// Serves `settings` on `listener` (bound by the caller, so no wait for start-up).
    pub async fn start(settings: Settings, listener: tokio::net::TcpListener) -> TlsApp {
        let addr = listener.local_addr().unwrap();
        let state = canopy_server::prepare(settings.clone())
            .await
            .expect("server prepares");
        let fingerprint = state
            .tls
            .as_ref()
            .expect("the server serves HTTPS")
            .identity
            .fingerprint();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(canopy_server::serve(state, listener, async move {
            let _ = rx.await;
        }));
        let base = format!("https://{addr}");
        let anon = Client::new(pinned_http(fingerprint), base.clone());
        let pair = anon
            .login("admin", ADMIN_PASSWORD)
            .await
            .expect("admin logs in over HTTPS");
        TlsApp {
            admin: anon.with_token(pair.access_token),
            base,
            addr,
            fingerprint,
            settings,
            stop,
            task,
        }
    }

    /// Stops the server and waits until it has stopped (bounded).
    pub async fn stop(self) -> Settings {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("the server stops within 15 s")
            .expect("server task")
            .expect("the server stops cleanly");
        self.settings
    }

    /// Stops the server, deletes its self-signed certificate and starts it again on the same
    /// address, database and data dir: same server, new certificate.
    pub async fn restart_with_new_certificate(self) -> TlsApp {
        let addr = self.addr;
        let old = self.fingerprint;
        let settings = self.stop().await;
        for f in [canopy_server::tls::CERT_FILE, canopy_server::tls::KEY_FILE] {
            std::fs::remove_file(settings.data_dir.join(f)).unwrap();
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("the port is free again");
        let app = TlsApp::start(settings, listener).await;
        assert_ne!(app.fingerprint, old, "a new certificate was generated");
        app
    }
}

/// The real `canopy-agent`: beside `canopy` (built by `cargo test --workspace` and
/// `cargo xtask test`), else `CANOPY_AGENT_BIN` or `CANOPY_AGENT_MUSL_BIN` (the static one,
/// which runs here too). Missing → the test fails saying how to build it.
pub fn agent_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CANOPY_AGENT_BIN") {
        return p.into();
    }
    let beside = Path::new(env!("CARGO_BIN_EXE_canopy")).with_file_name("canopy-agent");
    if beside.exists() {
        return beside;
    }
    if let Some(p) = std::env::var_os("CANOPY_AGENT_MUSL_BIN") {
        return p.into();
    }
    panic!(
        "no canopy-agent binary beside {}: run `cargo build -p canopy-agent` first \
         (cargo test --workspace and cargo xtask test build it) or set CANOPY_AGENT_BIN",
        beside.display()
    );
}

/// The real `canopy serve`, its stderr read line by line.
pub struct Serve {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every stderr line so far.
    pub stderr: Vec<String>,
}

impl Serve {
    pub fn spawn(envs: &[(&str, String)]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_canopy"))
            .arg("serve")
            .env_remove("CANOPY_CONFIG")
            .env_remove("CANOPY_TLS")
            .env_remove("CANOPY_TLS_CERT_FILE")
            .env_remove("CANOPY_TLS_KEY_FILE")
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("canopy runs");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Serve {
            child,
            lines,
            stderr: Vec::new(),
        }
    }

    /// The first stderr line (from now) for which `f` answers, within `limit`.
    pub fn wait_line<T>(&mut self, limit: Duration, mut f: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push(line.clone());
                    if let Some(v) = f(&line) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "no such line within {limit:?}; stderr so far:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
    }

    /// `https://ADDR` from "Canopy is listening on …", and the printed fingerprint.
    pub fn wait_https(&mut self) -> (String, Fingerprint) {
        let url = self.wait_line(Duration::from_secs(30), |l| {
            l.strip_prefix("Canopy is listening on ")
                .map(str::to_string)
        });
        assert!(url.starts_with("https://"), "{url}");
        let fp = self.wait_line(Duration::from_secs(5), |l| {
            l.strip_prefix("TLS certificate SHA-256 fingerprint: ")
                .map(|f| f.parse::<Fingerprint>().expect("a fingerprint"))
        });
        (url, fp)
    }

    /// SIGTERM, as systemd and `kill` send it.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
    }

    /// The exit status within `limit`, or a panic.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "canopy did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fingerprint of the first certificate in a PEM file.
pub fn fingerprint_of_file(path: &Path) -> Fingerprint {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_file(path).unwrap();
    Fingerprint::of_der(der.as_ref())
}
