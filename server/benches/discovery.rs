//! `cargo xtask bench` runs this: discovery of a 50-node / 5,000-guest cluster
//! (examples/sim/big.toml in the PVE simulator) into a SQLite store, through the server's own
//! `Discovery::run_pass`, the code the periodic loop and `canopy cluster discover` run.
//!
//! 1. First pass: empty store → 5,000 guests (this one also fetches the 50 nodes' apt lists,
//!    which are separate per-node calls, counted apart).
//! 2. Steady pass: nothing changed, median and p95 over `STEADY_RUNS`, and the mean on-CPU
//!    time per pass of the server's threads and of the simulator's (Linux).
//! 3. Changed pass: after 50 guests migrated and 50 changed power state.
//! 4. Where a steady pass spends its time: after each steady pass, its steps are timed one
//!    by one through the same public functions the pass calls: PVE fetch (2 calls), one
//!    store snapshot read (a pass takes three: before the diff, for the node apt lists, in
//!    the rebuild), diff (two inventories + reconcile), store write, tree rebuild.
//!
//! Every pass's PVE requests are counted twice, by the client (`api_calls` in the report)
//! and by the simulator's request log; the bench aborts when they disagree (the count would
//! be wrong). The most calls any pass made is the figure `discovery_5000_api_calls`, goal ≤ 3:
//! more is recorded as a miss, with the calls listed on stderr.
//! The simulator runs on its own runtime thread but shares the cores: the fetch figure
//! includes the simulator serialising 5,000 resources.
//!
//! Prints one `BENCH name=value` line per figure for xtask to record.

use canopy_api_types::clusters::DiscoveryReport;
use canopy_inventory::reconcile;
use canopy_pve_sim::{RunningCluster, SimFile};
use canopy_server::discovery::{build, connect, Target};
use canopy_server::settings::Settings;
use canopy_server::state::AppState;
use canopy_store::{Actor, ClusterRecord, DiscoveryWrite, NewCluster};
use std::future::Future;
use std::time::{Duration, Instant};

// The manifest dir as cargo sets it when this runs, not as it was at build time: a target
// dir shared by two checkouts can hand over a binary built in the other one.
fn sim_file() -> String {
    format!(
        "{}/../examples/sim/big.toml",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")
    )
}
const STEADY_RUNS: usize = 20;
const SIM_THREAD: &str = "pve-sim";
const MAX_API_CALLS: usize = 3;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `q`-quantile of `v` (sorted in place), in milliseconds.
fn quantile(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    ms(v[((v.len() as f64 - 1.0) * q).round() as usize])
}

async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let out = f.await;
    (out, t.elapsed())
}

/// On-CPU time of this process's threads so far as (canopy, simulator), told apart by the
/// simulator runtime's thread name (Linux). Wall time on a busy shared machine includes
/// waiting for a core; this does not.
fn cpu() -> Option<(Duration, Duration)> {
    let (mut ours, mut sim) = (0u64, 0u64);
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(dir.join("schedstat")) else {
            continue;
        };
        let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() == SIM_THREAD {
            sim += ns;
        } else {
            ours += ns;
        }
    }
    Some((Duration::from_nanos(ours), Duration::from_nanos(sim)))
}

/// One pass as the server runs it, with its PVE requests counted and checked.
struct Pass {
    wall: Duration,
    report: DiscoveryReport,
    api_calls: usize,
    apt_calls: usize,
}

async fn pass(state: &AppState, sim: &RunningCluster, record: &ClusterRecord) -> Pass {
    sim.reset_requests();
    let t = Instant::now();
    let report = state.discovery.run_pass(record, false).await;
    let wall = t.elapsed();
    if let Some(e) = &report.error {
        panic!("discovery pass failed: {e}");
    }
    let log = sim.requests();
    assert_eq!(log.len(), sim.request_count(), "simulator request log");
    let apt_calls = log
        .iter()
        .filter(|r| r.path.starts_with("/api2/json/nodes/") && r.path.ends_with("/apt/update"))
        .count();
    let cluster_calls = log
        .iter()
        .filter(|r| r.path.starts_with("/api2/json/cluster/"))
        .count();
    // Anything else (a version probe, a retry) is a discovery call too.
    let api_calls = log.len() - apt_calls;
    assert_eq!(
        report.api_calls as usize, api_calls,
        "the client counted {} discovery calls, the simulator saw {api_calls} ({cluster_calls} on cluster/*)",
        report.api_calls
    );
    if api_calls > MAX_API_CALLS {
        eprintln!(
            "discovery: a pass made {api_calls} API calls (goal ≤ {MAX_API_CALLS}): {:?}",
            log.iter().map(|r| &r.path).collect::<Vec<_>>()
        );
    }
    Pass {
        wall,
        report,
        api_calls,
        apt_calls,
    }
}

async fn record(state: &AppState, name: &str) -> ClusterRecord {
    let all = state.store.list_clusters().await.unwrap();
    all.into_iter().find(|c| c.name == name).unwrap()
}

async fn bench(sim: &RunningCluster) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        database_url: format!("sqlite://{}", dir.path().join("discovery.db").display()),
        data_dir: dir.path().join("data"),
        pve_timeout_secs: 30,
        discovery_interval_secs: 3600,
        // Steady passes make discovery calls only; node apt lists are fetched once.
        node_updates_interval_secs: 86_400,
        ..Settings::default()
    };
    let state = canopy_server::prepare(settings).await.unwrap();
    let token: canopy_hypervisor::ApiToken = sim.token().parse().unwrap();
    let target = Target {
        endpoints: vec![sim.url()],
        token: token.clone(),
        fingerprints: vec![sim.fingerprint()],
        ca_pem: None,
        timeout: Duration::from_secs(30),
    };
    let created = state
        .store
        .create_cluster(
            NewCluster {
                name: "big".into(),
                endpoints: target.endpoints.clone(),
                token_id: token.id().to_string(),
                token_secret_sealed: state.discovery.sealer().seal(token.secret()),
                fingerprints: target.fingerprints.clone(),
                ca_pem: None,
                interval_secs: 3600,
            },
            &Actor::System,
        )
        .await
        .unwrap();

    let first = pass(&state, sim, &created).await;
    let mut api_calls = first.api_calls;
    assert_eq!(first.report.guests, 5000, "big.toml has 5,000 guests");
    println!("BENCH discovery_5000_nodes={}", first.report.nodes);
    println!("BENCH discovery_5000_guests={}", first.report.guests);
    println!("BENCH discovery_5000_first_pass_ms={:.1}", ms(first.wall));
    println!(
        "BENCH discovery_5000_first_pass_changes={}",
        first.report.changes.len()
    );
    println!(
        "BENCH discovery_5000_first_pass_node_apt_calls={}",
        first.apt_calls
    );

    let rec = record(&state, "big").await;
    let client = connect(&target).unwrap();
    build::observe(&client, Some("big")).await.unwrap(); // TLS handshake, pool warm
    let mut steady = Vec::with_capacity(STEADY_RUNS);
    let (mut cpu_ours, mut cpu_sim) = (Some(Duration::ZERO), Some(Duration::ZERO));
    let mut steps: [Vec<Duration>; 5] = Default::default();
    for _ in 0..STEADY_RUNS {
        let before = cpu();
        let p = pass(&state, sim, &rec).await;
        let spent = before
            .zip(cpu())
            .map(|((o0, s0), (o1, s1))| (o1.saturating_sub(o0), s1.saturating_sub(s0)));
        cpu_ours = cpu_ours.zip(spent).map(|(a, (o, _))| a + o);
        cpu_sim = cpu_sim.zip(spent).map(|(a, (_, s))| a + s);
        assert!(p.report.changes.is_empty(), "{:?}", p.report.changes);
        assert_eq!(
            p.apt_calls, 0,
            "node apt lists are not due in a steady pass"
        );
        api_calls = api_calls.max(p.api_calls);
        steady.push(p.wall);

        // The same pass step by step, under the same load (each step alone).
        let (obs, t) = timed(build::observe(&client, Some("big"))).await;
        let obs = obs.unwrap();
        steps[0].push(t);
        let (snap, t) = timed(state.store.inventory()).await;
        let snap = snap.unwrap();
        steps[1].push(t);
        let old = build::Observed {
            name: rec.name.clone(),
            standalone: rec.standalone,
            nodes: snap.nodes.iter().map(|n| n.row.clone()).collect(),
            guests: snap.guests.iter().map(|g| g.row.clone()).collect(),
            unnamed: Default::default(),
        };
        let t = Instant::now();
        let (a, _) = build::to_inventory(&old).unwrap();
        let (b, _) = build::to_inventory(&obs).unwrap();
        let changes = reconcile(&a, &b);
        steps[2].push(t.elapsed());
        assert!(changes.is_empty(), "{} changes", changes.len());
        let write = DiscoveryWrite {
            cluster_id: rec.id,
            at: chrono::Utc::now(),
            standalone: obs.standalone,
            nodes: obs.nodes,
            guests: obs.guests,
            events: Vec::new(),
        };
        let (r, t) = timed(state.store.apply_discovery(write)).await;
        r.unwrap();
        steps[3].push(t);
        let (r, t) = timed(state.discovery.rebuild()).await;
        r.unwrap();
        steps[4].push(t);
    }
    println!(
        "BENCH discovery_5000_steady_pass_median_ms={:.1}",
        quantile(&mut steady, 0.5)
    );
    println!(
        "BENCH discovery_5000_steady_pass_p95_ms={:.1}",
        quantile(&mut steady, 0.95)
    );
    if let (Some(ours), Some(sim)) = (cpu_ours, cpu_sim) {
        let mean = |d: Duration| ms(d) / STEADY_RUNS as f64;
        println!(
            "BENCH discovery_5000_steady_pass_cpu_mean_ms={:.1}",
            mean(ours)
        );
        println!(
            "BENCH discovery_5000_steady_pass_sim_cpu_mean_ms={:.1}",
            mean(sim)
        );
    }
    let names = ["pve_fetch", "store_read", "diff", "store_write", "rebuild"];
    for (name, v) in names.iter().zip(steps.iter_mut()) {
        println!(
            "BENCH discovery_5000_step_{name}_median_ms={:.1}",
            quantile(v, 0.5)
        );
    }

    // 100 guests spread over the estate: even ones move to the next node, odd ones flip power.
    let snap = state.store.inventory().await.unwrap();
    let nodes: Vec<&str> = snap.nodes.iter().map(|n| n.row.name.as_str()).collect();
    for (i, g) in snap.guests.iter().step_by(50).take(100).enumerate() {
        let vmid = g.row.vmid;
        if i % 2 == 0 {
            let at = nodes.iter().position(|n| *n == g.row.node).unwrap();
            sim.migrate(vmid, nodes[(at + 1) % nodes.len()]).unwrap();
        } else {
            let now = sim.guest(vmid).unwrap().status;
            let flip = if now == "running" {
                "stopped"
            } else {
                "running"
            };
            sim.set_guest_status(vmid, flip).unwrap();
        }
    }
    let changed = pass(&state, sim, &rec).await;
    api_calls = api_calls.max(changed.api_calls);
    println!(
        "BENCH discovery_5000_changed_pass_ms={:.1}",
        ms(changed.wall)
    );
    println!(
        "BENCH discovery_5000_changed_pass_changes={}",
        changed.report.changes.len()
    );
    println!("BENCH discovery_5000_api_calls={api_calls}");
}

fn main() {
    // The simulator gets its own runtime so its work never queues behind the server's.
    let sim_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SIM_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let file = SimFile::load(sim_file()).unwrap();
    let sim = sim_rt
        .block_on(canopy_pve_sim::start(file.clusters[0].clone()))
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bench(&sim));
    drop(rt);
    sim_rt.block_on(sim.shutdown());
}
