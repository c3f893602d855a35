//! What the lab benches (`deploy`, `update`) share: a server in the bench's own process that
//! deploys through the lab's PVE node stand-in, with the simulated cluster `lab` added.

use canopy_api_types::clusters::CreateCluster;
use canopy_server::settings::{Secret, Settings};
use canopy_server::state::AppState;
use std::collections::BTreeMap;

const PASSWORD: &str = "bench password 1";

/// Serves on a free 127.0.0.1 port with SQLite in `dir`, the static agent
/// (CANOPY_AGENT_MUSL_BIN), `key` for SSH and node `lab/pve1` at `node_ssh`; `tweak` adjusts
/// the settings last. The admin adds `sim` as cluster `lab` with its first token.
pub async fn lab_server(
    node_ssh: &str,
    key: &str,
    sim: &canopy_pve_sim::RunningCluster,
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut Settings),
) -> AppState {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut s = Settings {
        database_url: format!("sqlite://{}", dir.join("canopy.db").display()),
        data_dir: dir.join("data"),
        admin_password: Some(Secret::new(PASSWORD)),
        auth_attempts_per_minute: 1000,
        ..Settings::default()
    };
    s.deploy.server_url = base.clone();
    s.deploy.agent_binary = Some(
        std::env::var("CANOPY_AGENT_MUSL_BIN")
            .expect("CANOPY_AGENT_MUSL_BIN")
            .into(),
    );
    s.deploy.ssh_key_file = Some(key.into());
    s.deploy.nodes = BTreeMap::from([("lab/pve1".to_string(), node_ssh.parse().unwrap())]);
    tweak(&mut s);
    let state = canopy_server::prepare(s).await.unwrap();
    tokio::spawn(canopy_server::serve(
        state.clone(),
        listener,
        std::future::pending(),
    ));
    let anon = canopy_api_types::client::Client::new(reqwest::Client::new(), base);
    let pair = anon.login("admin", PASSWORD).await.unwrap();
    anon.with_token(pair.access_token)
        .create_cluster(&CreateCluster {
            name: "lab".into(),
            endpoints: vec![sim.url()],
            token: sim.token(),
            fingerprints: vec![sim.fingerprint()],
            ca_pem: None,
            interval_secs: Some(3600),
        })
        .await
        .unwrap();
    state
}
