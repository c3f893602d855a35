//! `cargo xtask bench` runs this: selector resolution over a 100,000-vertex inventory
//! (10 clusters × 50 nodes × 150 guests, a third of them with a docker container). The goal
//! is p95 ≤ 5 ms per resolution in release (`selector_100k_p95_ms`, the worst selector's).
//!
//! Each figure is wall-clock median and p95 over 200 runs, plus the mean on-CPU time
//! (`*_cpu_mean_ms`, Linux), which stays meaningful when a busy shared machine preempts the
//! benchmark. `scan_only` visits every vertex and matches none: the walk without results.
//!
//! Prints one `BENCH name=value` line per figure for xtask to record.

use canopy_inventory::{Counts, Inventory, PathId, Selector, Vertex};
use std::hint::black_box;
use std::time::{Duration, Instant};

const CLUSTERS: usize = 10;
const NODES: usize = 50;
const GUESTS: usize = 150;
const WARMUP: usize = 10;
const RUNS: usize = 200;

fn build() -> Inventory {
    let mut inv = Inventory::new();
    let images = [
        "nginx:1.25",
        "postgres:16",
        "ghcr.io/linuxserver/nginx:latest",
    ];
    for c in 0..CLUSTERS {
        let cluster = PathId::cluster(&format!("c{c}")).unwrap();
        inv.upsert(Vertex::new(cluster.clone())).unwrap();
        for n in 0..NODES {
            let node = cluster.node(&format!("pve{}", n + 1)).unwrap();
            inv.upsert(Vertex::new(node.clone()).with_status("online"))
                .unwrap();
            for g in 0..GUESTS {
                let vmid = (1000 + n * 200 + g) as u32;
                let id = if g % 4 == 0 {
                    node.vm(vmid)
                } else {
                    node.lxc(vmid)
                }
                .unwrap();
                let guest = Vertex::new(id.clone())
                    .with_name(format!("host-{vmid}"))
                    .with_status(if g % 10 == 9 { "stopped" } else { "running" })
                    .with_tags([if g % 5 == 0 { "prod" } else { "dev" }, "managed"])
                    .with_template(g == GUESTS - 1)
                    .with_os(if g % 2 == 0 { "debian" } else { "alpine" })
                    .with_counts(Counts {
                        pending: (g % 7) as u32,
                        ..Counts::default()
                    });
                inv.upsert(guest).unwrap();
                if g % 3 == 0 {
                    let d = Vertex::new(id.docker("app").unwrap())
                        .with_status("running")
                        .with_image(images[g % images.len()]);
                    inv.upsert(d).unwrap();
                }
            }
        }
    }
    inv
}

/// Wall-clock (median, p95) and mean on-CPU time, in milliseconds, over `RUNS` timed runs.
struct Timing {
    wall: (f64, f64),
    cpu_mean: Option<f64>,
}

fn time<R>(mut f: impl FnMut() -> R) -> Timing {
    for _ in 0..WARMUP {
        black_box(f());
    }
    let cpu_start = thread_cpu();
    let mut wall: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    let cpu = cpu_start
        .zip(thread_cpu())
        .map(|(a, b)| b.saturating_sub(a));
    wall.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Timing {
        wall: (ms(wall[RUNS / 2]), ms(wall[RUNS * 95 / 100])),
        cpu_mean: cpu.map(|c| ms(c) / RUNS as f64),
    }
}

/// This thread's time on a CPU (Linux; updated at scheduler ticks, so only the mean over
/// many runs is meaningful). On a busy shared machine it tells the work apart from time
/// spent waiting for a core.
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = s.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

fn report(name: &str, t: &Timing) {
    println!("BENCH {name}_median_ms={:.3}", t.wall.0);
    println!("BENCH {name}_p95_ms={:.3}", t.wall.1);
    if let Some(mean) = t.cpu_mean {
        println!("BENCH {name}_cpu_mean_ms={mean:.3}");
    }
}

fn main() {
    // `cargo bench -p canopy-inventory --bench selector -- NAME` runs only figures whose name
    // contains NAME (cargo also passes `--bench`, which is ignored).
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    let t = Instant::now();
    let inv = build();
    let build_ms = t.elapsed().as_secs_f64() * 1e3;
    println!("BENCH inventory_100k_vertices={}", inv.len());
    println!("BENCH inventory_build_100k_ms={build_ms:.1}");

    let selectors = [
        ("literal", "cluster/c3/node/pve17/lxc/4201"),
        ("wildcard", "cluster/*/node/pve1/lxc/*"),
        ("tag_all", "**[tag=prod]"),
        // Visits every vertex but matches none: the walk without building results.
        ("scan_only", "**[tag=nowhere]"),
        ("docker_image", "cluster/c3/**/docker/*[image=nginx]"),
        (
            "union",
            "cluster/c1/node/pve2/lxc/*, cluster/c5/**[tag=prod][status=running], cluster/*/node/pve4*/vm/*",
        ),
    ];
    let mut worst = Timing {
        wall: (0.0, 0.0),
        cpu_mean: Some(0.0),
    };
    for (name, text) in selectors.into_iter().filter(|(n, _)| wanted(n)) {
        let sel = Selector::parse(text).unwrap();
        let matched = inv.select(&sel).len();
        assert!(matched > 0 || name == "scan_only", "{text} selects nothing");
        let t = time(|| inv.select(&sel));
        println!("BENCH selector_100k_{name}_matches={matched}");
        report(&format!("selector_100k_{name}"), &t);
        worst.wall.0 = worst.wall.0.max(t.wall.0);
        worst.wall.1 = worst.wall.1.max(t.wall.1);
        worst.cpu_mean = worst.cpu_mean.zip(t.cpu_mean).map(|(w, c)| w.max(c));
    }
    report("selector_100k", &worst);
    if wanted("targets") {
        let everything = Selector::parse("**").unwrap();
        let targets = inv.targets(&everything);
        println!("BENCH targets_100k_hosts={}", targets.hosts.len());
        report("targets_100k_all", &time(|| inv.targets(&everything)));
    }
    if wanted("rollups") {
        report("rollups_100k", &time(|| inv.rollups()));
    }
}
