//! `cargo xtask bench` runs this: selector resolution over a 100,000-vertex inventory
//! (10 clusters × 50 nodes × 150 guests, a third of them with a docker container). The goal
//! is p95 ≤ 5 ms per resolution in release.
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
    let images = ["nginx:1.25", "postgres:16", "ghcr.io/linuxserver/nginx:latest"];
    for c in 0..CLUSTERS {
        let cluster = PathId::cluster(&format!("c{c}")).unwrap();
        inv.upsert(Vertex::new(cluster.clone())).unwrap();
        for n in 0..NODES {
            let node = cluster.node(&format!("pve{}", n + 1)).unwrap();
            inv.upsert(Vertex::new(node.clone()).with_status("online")).unwrap();
            for g in 0..GUESTS {
                let vmid = (1000 + n * 200 + g) as u32;
                let id = if g % 4 == 0 { node.vm(vmid) } else { node.lxc(vmid) }.unwrap();
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

/// (median, p95) in milliseconds over `RUNS` timed runs.
fn time<R>(mut f: impl FnMut() -> R) -> (f64, f64) {
    for _ in 0..WARMUP {
        black_box(f());
    }
    let mut runs: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            black_box(f());
            t.elapsed()
        })
        .collect();
    runs.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(runs[RUNS / 2]), ms(runs[RUNS * 95 / 100]))
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
        ("docker_image", "cluster/c3/**/docker/*[image=nginx]"),
        (
            "union",
            "cluster/c1/node/pve2/lxc/*, cluster/c5/**[tag=prod][status=running], cluster/*/node/pve4*/vm/*",
        ),
    ];
    let (mut worst_median, mut worst_p95) = (0f64, 0f64);
    for (name, text) in selectors.into_iter().filter(|(n, _)| wanted(n)) {
        let sel = Selector::parse(text).unwrap();
        let matched = inv.select(&sel).len();
        assert!(matched > 0, "{text} selects nothing");
        let (median, p95) = time(|| inv.select(&sel));
        println!("BENCH selector_100k_{name}_matches={matched}");
        println!("BENCH selector_100k_{name}_median_ms={median:.3}");
        println!("BENCH selector_100k_{name}_p95_ms={p95:.3}");
        worst_median = worst_median.max(median);
        worst_p95 = worst_p95.max(p95);
    }
    println!("BENCH selector_100k_median_ms={worst_median:.3}");
    println!("BENCH selector_100k_p95_ms={worst_p95:.3}");
    if !wanted("targets") {
        return;
    }

    let everything = Selector::parse("**").unwrap();
    let targets = inv.targets(&everything);
    println!("BENCH targets_100k_hosts={}", targets.hosts.len());
    let (median, p95) = time(|| inv.targets(&everything));
    println!("BENCH targets_100k_all_median_ms={median:.3}");
    println!("BENCH targets_100k_all_p95_ms={p95:.3}");

    if !wanted("rollups") {
        return;
    }
    let (median, p95) = time(|| inv.rollups());
    println!("BENCH rollups_100k_median_ms={median:.3}");
    println!("BENCH rollups_100k_p95_ms={p95:.3}");
}
