//! `canopy discover` (docs/design.md §7.3) as a user runs it: the real binary against the PVE
//! simulator over HTTPS. Exact JSON, the specified errors, standalone mode, and the number
//! of API calls a pass makes.

use canopy_pve_sim::{RunningCluster, SimFile};
use std::process::Output;

const CLUSTER: &str = r#"
[[clusters]]
name = "home"
[[clusters.tokens]]
id = "root@pam!canopy"
secret = "11111111-2222-3333-4444-555555555555"
role = "PVEAuditor"
[[clusters.nodes]]
name = "pve1"
[[clusters.nodes]]
name = "pve2"
online = false
[[clusters.guests]]
vmid = 101
type = "lxc"
node = "pve1"
name = "web"
status = "running"
tags = "prod;web"
[[clusters.guests]]
vmid = 9000
type = "lxc"
node = "pve1"
name = "tmpl"
status = "stopped"
template = true
[[clusters.guests]]
vmid = 100
type = "qemu"
node = "pve1"
name = "ha"
status = "stopped"
[[clusters.guests]]
vmid = 201
type = "lxc"
node = "pve2"
name = "db"
status = "running"
"#;

const EXPECTED: &str = concat!(
    r#"{"id":"cluster/home","kind":"cluster","name":"home","children":["#,
    r#"{"id":"cluster/home/node/pve1","kind":"node","name":"pve1","status":"online","children":["#,
    r#"{"id":"cluster/home/node/pve1/vm/100","kind":"vm","vmid":100,"name":"ha","status":"stopped","template":false,"tags":[],"children":[]},"#,
    r#"{"id":"cluster/home/node/pve1/lxc/101","kind":"lxc","vmid":101,"name":"web","status":"running","template":false,"tags":["prod","web"],"children":[]},"#,
    r#"{"id":"cluster/home/node/pve1/lxc/9000","kind":"lxc","vmid":9000,"name":"tmpl","status":"stopped","template":true,"tags":[],"children":[]}]},"#,
    r#"{"id":"cluster/home/node/pve2","kind":"node","name":"pve2","status":"offline","children":["#,
    // An offline node's guests lose their names in /cluster/resources, as on real PVE.
    r#"{"id":"cluster/home/node/pve2/lxc/201","kind":"lxc","vmid":201,"name":"CT201","status":"unknown","template":false,"tags":[],"children":[]}]}]}"#,
);

async fn start(toml: &str) -> RunningCluster {
    let file = SimFile::from_toml_str(toml).unwrap();
    canopy_pve_sim::start(file.clusters[0].clone())
        .await
        .unwrap()
}

async fn discover(args: Vec<String>) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_canopy"))
        .arg("discover")
        .args(args)
        .env_remove("CANOPY_PVE_TOKEN")
        .output()
        .await
        .unwrap()
}

fn args(sim: &RunningCluster, token: &str, fingerprint: &str) -> Vec<String> {
    vec![
        "--url".into(),
        sim.url(),
        "--token".into(),
        token.into(),
        "--fingerprint".into(),
        fingerprint.into(),
        "--json".into(),
    ]
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn prints_exactly_the_contract_tree_in_two_api_calls() {
    let sim = start(CLUSTER).await;
    let out = discover(args(&sim, &sim.token(), &sim.fingerprint())).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim_end(), EXPECTED);
    let paths: Vec<String> = sim.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths.len() <= 3,
        "a discovery pass made {} calls: {paths:?}",
        paths.len()
    );
    assert_eq!(
        paths,
        ["/api2/json/cluster/status", "/api2/json/cluster/resources"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn api_calls_do_not_grow_with_the_number_of_guests() {
    let big = r#"
[[clusters]]
name = "big"
[[clusters.tokens]]
id = "root@pam!canopy"
secret = "11111111-2222-3333-4444-555555555555"
role = "PVEAuditor"
[clusters.generate]
nodes = 10
lxc_per_node = 40
vm_per_node = 10
"#;
    let sim = start(big).await;
    let out = discover(args(&sim, &sim.token(), &sim.fingerprint())).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let tree: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let guests: usize = tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["children"].as_array().unwrap().len())
        .sum();
    assert_eq!(guests, 500);
    assert_eq!(sim.request_count(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_fingerprint_fails_naming_the_certificate_fingerprint() {
    let sim = start(CLUSTER).await;
    let wrong = "AB:".repeat(31) + "AB";
    let out = discover(args(&sim, &sim.token(), &wrong)).await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("certificate fingerprint"), "{err}");
    assert!(err.contains(&sim.fingerprint()), "{err}");
    assert!(out.stdout.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_token_fails_naming_authentication() {
    let sim = start(CLUSTER).await;
    let out = discover(args(
        &sim,
        "root@pam!canopy=wrong-secret",
        &sim.fingerprint(),
    ))
    .await;
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("authentication"), "{err}");
    assert!(!err.contains("wrong-secret"), "the secret leaked: {err}");
    sim.shutdown().await;
}

#[tokio::test]
async fn without_a_pin_it_shows_the_fingerprint_and_refuses() {
    let sim = start(CLUSTER).await;
    let mut a = args(&sim, &sim.token(), "x");
    a.drain(4..6);
    let out = discover(a).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains(&sim.fingerprint()));
    assert_eq!(
        sim.request_count(),
        0,
        "nothing is sent to an unverified server"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn standalone_node_is_named_after_the_node() {
    let standalone = r#"
[[clusters]]
name = "edge"
standalone = true
[[clusters.tokens]]
id = "root@pam!canopy"
secret = "11111111-2222-3333-4444-555555555555"
role = "PVEAuditor"
[[clusters.nodes]]
name = "edge"
[[clusters.guests]]
vmid = 110
type = "lxc"
node = "edge"
name = "pihole"
status = "running"
"#;
    let sim = start(standalone).await;
    let out = discover(args(&sim, &sim.token(), &sim.fingerprint())).await;
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let tree: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tree["id"], "cluster/edge");
    assert_eq!(tree["children"][0]["id"], "cluster/edge/node/edge");
    assert_eq!(
        tree["children"][0]["children"][0]["id"],
        "cluster/edge/node/edge/lxc/110"
    );
    let mut renamed = args(&sim, &sim.token(), &sim.fingerprint());
    renamed.extend(["--name".to_string(), "garage".to_string()]);
    let out = discover(renamed).await;
    let tree: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(tree["id"], "cluster/garage");
    sim.shutdown().await;
}
