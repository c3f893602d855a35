//! The real `canopy serve` binary for the benches that measure it from outside (`tree`,
//! `ui`): SQLite in a directory of the bench's, a free loopback port, the admin's password
//! [`PASSWORD`], discovery only when asked; killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "bench password 1";

/// The real `canopy serve`; killed when dropped.
pub struct Server {
    child: Child,
    pub base: String,
    log: PathBuf,
}

impl Server {
    pub fn start(dir: &Path) -> Server {
        let config = dir.join("canopy.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{db}\"\ndata_dir = \"{data}\"\n\
                 access_token_ttl_secs = 7200\ndiscovery_interval_secs = 86400\n\
                 node_updates_interval_secs = 86400\npve_timeout_secs = 120\n",
                db = dir.join("canopy.db").display(),
                data = dir.join("data").display(),
            ),
        )
        .unwrap();
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_canopy"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("CANOPY_ADMIN_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn")
            .env_remove("CANOPY_DATABASE_URL")
            .env_remove("CANOPY_LISTEN")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("canopy serve starts");
        let mut server = Server {
            child,
            base: String::new(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        server.base = loop {
            let text = std::fs::read_to_string(&server.log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.strip_prefix("Canopy is listening on "))
            {
                break addr.trim().to_string();
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("canopy serve exited with {status}:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "canopy serve did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        server
    }

    /// `(VmRSS, VmHWM)` of the server process, in MB.
    #[allow(dead_code)] // not every bench reads it
    pub fn memory_mb(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/PID/status of the server");
        let kb = |key: &str| -> f64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("{key} in /proc/PID/status"))
        };
        (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The simulated estate `examples/sim/NAME` on a runtime thread of its own, so the bench's
/// client never queues behind the simulators; [`Sims::shutdown`] stops them.
pub struct Sims {
    rt: tokio::runtime::Runtime,
    pub clusters: Vec<canopy_pve_sim::RunningCluster>,
}

impl Sims {
    pub fn start(name: &str) -> Sims {
        // The manifest dir as cargo sets it when this runs, not as it was at build time: a
        // target dir shared by two checkouts can hand over a binary built in the other one.
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        let file = canopy_pve_sim::SimFile::load(format!("{dir}/../examples/sim/{name}")).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pve-sim")
            .enable_all()
            .build()
            .unwrap();
        let clusters = rt.block_on(canopy_pve_sim::start_all(file)).unwrap();
        Sims { rt, clusters }
    }

    pub fn shutdown(self) {
        for sim in self.clusters {
            self.rt.block_on(sim.shutdown());
        }
    }
}

/// Runs the bench itself on a runtime of the calling thread.
pub fn block_on<F: std::future::Future>(bench: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench)
}
