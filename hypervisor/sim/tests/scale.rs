//! The benchmark estate: `big.toml` expands to 50 nodes and 5,000 guests and lists them in
//! one `/cluster/resources` call.

mod common;

use std::time::{Duration, Instant};

use canopy_pve_sim::SimFile;
use common::*;

#[tokio::test]
async fn big_estate_loads_and_lists_quickly() {
    let file = SimFile::load(example("big.toml")).unwrap();
    let spec = file.clusters[0].clone();
    assert_eq!(spec.nodes.len(), 50);
    assert_eq!(spec.guests.len(), 5_000);
    assert!(spec.generate.is_none(), "expanded on load");
    let sim = start(spec).await;
    let token = sim.token();
    let c = client(&sim, Duration::from_secs(30));
    let url = format!("{}/api2/json/cluster/resources", sim.url());
    // Warm up the connection, then time one call.
    let _ = call(
        &c,
        reqwest::Method::GET,
        format!("{}/api2/json/version", sim.url()),
        Some(&token),
        &[],
    )
    .await;
    let started = Instant::now();
    let res = call(&c, reqwest::Method::GET, url, Some(&token), &[]).await;
    let took = started.elapsed();
    assert_eq!(res.status, 200);
    let list = res.data().as_array().unwrap();
    let guests = list
        .iter()
        .filter(|r| r["type"] == "lxc" || r["type"] == "qemu")
        .count();
    let nodes = list.iter().filter(|r| r["type"] == "node").count();
    assert_eq!((guests, nodes), (5_000, 50));
    assert_eq!(list.iter().filter(|r| r["type"] == "qemu").count(), 1_000);
    eprintln!(
        "cluster/resources with 5,000 guests: {took:?}, {} bytes",
        res.raw.len()
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    sim.shutdown().await;
}
