//! `cargo xtask bench --only tree` runs this: the tree API at scale (issue 12). Two simulated
//! estates together (examples/sim/scale.toml: `dense`, 150 nodes × 100 guests, and `wide`,
//! 500 nodes × 30 guests: 650 nodes, 30,000 guests) are added to the real `canopy serve`
//! binary (SQLite, a process of its own) through the REST API, whose first discovery passes
//! fill the store. Then, over loopback, each request timed until its last byte arrived:
//!
//! 1. one node's subtree (`GET /tree?selector=cluster/C/node/N`), nodes of both estates in
//!    turn: p50 / p95 over [`NODE_RUNS`] (goal p95 ≤ 20 ms);
//! 2. the whole tree (`GET /tree`, about 11 MB): p50 / p95 over [`WHOLE_RUNS`] (goal p95 ≤
//!    200 ms);
//! 3. one level below a cluster (`GET /tree?selector=cluster/dense&depth=1`: its 150 nodes
//!    with their rollups, no guests), the form the web UI loads when a cluster is expanded;
//! 4. the server's resident memory (VmRSS of its process, /proc) after discovery and at the
//!    end (goal ≤ 200 MB), and its peak (VmHWM).
//!
//! Every answer is checked once before the clock runs (a node's subtree holds its 100 or 30
//! guests, the whole tree all 30,000). Prints one `BENCH name=value` line per figure.

use canopy_api_types::client::Client;
use canopy_api_types::clusters::{CreateCluster, TreeResponse};
use canopy_inventory::TreeNode;
mod serve;

use serve::Server;
use std::path::Path;
use std::time::{Duration, Instant};

use serve::PASSWORD;
const NODE_RUNS: usize = 200;
const WHOLE_RUNS: usize = 20;
const GUESTS: usize = 30_000;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `q`-quantile of `v` (sorted in place), in milliseconds.
fn quantile(v: &mut [Duration], q: f64) -> f64 {
    v.sort();
    ms(v[((v.len() as f64 - 1.0) * q).round() as usize])
}

/// One timed `GET`, until the last byte of the body arrived; the body is returned.
async fn get(http: &reqwest::Client, token: &str, url: &str) -> (impl AsRef<[u8]>, Duration) {
    let t = Instant::now();
    let resp = http.get(url).bearer_auth(token).send().await.unwrap();
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    let body = resp.bytes().await.unwrap();
    (body, t.elapsed())
}

fn guests(t: &TreeNode) -> usize {
    usize::from(t.kind.is_guest()) + t.children.iter().map(guests).sum::<usize>()
}

fn tree(body: &[u8]) -> TreeResponse {
    serde_json::from_slice(body).expect("a tree answer")
}

async fn bench(sims: &[canopy_pve_sim::RunningCluster], dir: &Path) {
    let server = Server::start(dir);
    let http = reqwest::Client::new();
    let anon = Client::new(http.clone(), server.base.clone());
    let token = anon.login("admin", PASSWORD).await.unwrap().access_token;
    let api = anon.with_token(token.clone());
    for sim in sims {
        let t = Instant::now();
        api.create_cluster(&CreateCluster {
            name: sim.name().into(),
            endpoints: vec![sim.url()],
            token: sim.token(),
            fingerprints: vec![sim.fingerprint()],
            ca_pem: None,
            interval_secs: Some(86_400),
        })
        .await
        .unwrap();
        println!(
            "BENCH tree_first_pass_{}_s={:.1}",
            sim.name(),
            t.elapsed().as_secs_f64()
        );
    }
    let (rss, _) = server.memory_mb();
    println!("BENCH tree_server_rss_after_discovery_mb={rss:.0}");

    let url = |q: &str| format!("{}/api/v1/tree{q}", server.base);
    // (cluster, node, guests) of every node, both estates interleaved.
    let mut nodes: Vec<(String, String, usize)> = Vec::new();
    for sim in sims {
        let per_node = if sim.name() == "dense" { 100 } else { 30 };
        for (node, _, _) in sim.endpoints() {
            nodes.push((sim.name().to_string(), node, per_node));
        }
    }
    // A fixed shuffle (an LCG), so every run asks for the same nodes in the same order.
    let mut seed = 0x2545_f491_u64;
    let mut pick = || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize
    };
    for (cluster, node, per_node) in [&nodes[0], &nodes[nodes.len() - 1]] {
        let (body, _) = get(
            &http,
            &token,
            &url(&format!("?selector=cluster/{cluster}/node/{node}")),
        )
        .await;
        let t = tree(body.as_ref());
        assert_eq!(t.trees.len(), 1, "{cluster}/{node}");
        assert_eq!(guests(&t.trees[0]), *per_node, "{cluster}/{node}");
        println!("BENCH tree_node_{cluster}_bytes={}", body.as_ref().len());
    }
    let mut node_times = Vec::with_capacity(NODE_RUNS);
    for _ in 0..NODE_RUNS {
        let (cluster, node, _) = &nodes[pick() % nodes.len()];
        let (_, t) = get(
            &http,
            &token,
            &url(&format!("?selector=cluster/{cluster}/node/{node}")),
        )
        .await;
        node_times.push(t);
    }
    println!(
        "BENCH tree_node_p50_ms={:.1}",
        quantile(&mut node_times, 0.5)
    );
    println!(
        "BENCH tree_node_p95_ms={:.1}",
        quantile(&mut node_times, 0.95)
    );

    let (body, _) = get(&http, &token, &url("?selector=cluster/dense&depth=1")).await;
    let level = tree(body.as_ref());
    let shown: usize = level.trees[0].children.len();
    println!("BENCH tree_cluster_depth1_bytes={}", body.as_ref().len());
    println!("BENCH tree_cluster_depth1_vertices={}", 1 + shown);
    let mut level_times = Vec::with_capacity(NODE_RUNS);
    for _ in 0..NODE_RUNS / 4 {
        let (_, t) = get(&http, &token, &url("?selector=cluster/dense&depth=1")).await;
        level_times.push(t);
    }
    println!(
        "BENCH tree_cluster_depth1_p95_ms={:.1}",
        quantile(&mut level_times, 0.95)
    );

    let (body, _) = get(&http, &token, &url("")).await;
    let whole = tree(body.as_ref());
    assert_eq!(whole.trees.iter().map(guests).sum::<usize>(), GUESTS);
    println!("BENCH tree_whole_bytes={}", body.as_ref().len());
    drop((whole, body));
    let mut whole_times = Vec::with_capacity(WHOLE_RUNS);
    for _ in 0..WHOLE_RUNS {
        let (_, t) = get(&http, &token, &url("")).await;
        whole_times.push(t);
    }
    println!(
        "BENCH tree_whole_p50_ms={:.1}",
        quantile(&mut whole_times, 0.5)
    );
    println!(
        "BENCH tree_whole_p95_ms={:.1}",
        quantile(&mut whole_times, 0.95)
    );
    let (rss, peak) = server.memory_mb();
    println!("BENCH tree_server_peak_rss_mb={peak:.0}");
    println!("BENCH tree_server_rss_mb={rss:.0}");
}

fn main() {
    let sims = serve::Sims::start("scale.toml");
    let dir = tempfile::tempdir().unwrap();
    serve::block_on(bench(&sims.clusters, dir.path()));
    sims.shutdown();
}
