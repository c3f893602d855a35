//! Shared test harness: start a cluster from the example files and talk to it with a plain
//! reqwest client that trusts only the simulator's CA.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use canopy_pve_sim::{ClusterSpec, RunningCluster, SimFile};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ADMIN: &str = "root@pam!canopy=5f0c6b1e-2a47-4c1d-9e8a-3b7d6c5a4f21";
pub const AUDITOR: &str = "auditor@pve!ro=0b9e7c2a-5d4f-4e3b-8a1c-9f8e7d6c5b4a";

pub fn example(name: &str) -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../examples/sim")
        .join(name)
}

pub fn cluster(file: &str, name: &str) -> ClusterSpec {
    let file = SimFile::load(example(file)).expect("example file loads");
    file.clusters
        .into_iter()
        .find(|c| c.name == name)
        .expect("cluster in file")
}

pub async fn home() -> RunningCluster {
    start(cluster("home.toml", "home")).await
}

pub async fn start(spec: ClusterSpec) -> RunningCluster {
    canopy_pve_sim::start(spec).await.expect("simulator starts")
}

pub fn client(sim: &RunningCluster, timeout: Duration) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(sim.ca_pem().as_bytes()).expect("CA PEM");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .tls_built_in_root_certs(false)
        .timeout(timeout)
        .build()
        .expect("client")
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub reason: Option<String>,
    pub raw: String,
    pub json: Value,
}

impl Answer {
    pub fn data(&self) -> &Value {
        &self.json["data"]
    }

    /// The entry of a list answer (`/cluster/resources`) whose `id` is `id`.
    pub fn entry(&self, id: &str) -> &Value {
        self.data()
            .as_array()
            .expect("a list answer")
            .iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {}", self.data()))
    }
}

pub async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    form: &[(&str, &str)],
) -> Answer {
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("PVEAPIToken={t}"));
    }
    if !form.is_empty() {
        req = req.form(form);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned());
    let raw = resp.text().await.expect("body");
    let json = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Answer {
        status,
        reason,
        raw,
        json,
    }
}

pub async fn get(sim: &RunningCluster, path: &str, token: &str) -> Answer {
    let c = client(sim, Duration::from_secs(10));
    call(
        &c,
        reqwest::Method::GET,
        format!("{}/api2/json{path}", sim.url()),
        Some(token),
        &[],
    )
    .await
}

pub async fn post(sim: &RunningCluster, path: &str, token: &str, form: &[(&str, &str)]) -> Answer {
    let c = client(sim, Duration::from_secs(10));
    call(
        &c,
        reqwest::Method::POST,
        format!("{}/api2/json{path}", sim.url()),
        Some(token),
        form,
    )
    .await
}

/// Polls `f` every 25 ms until it returns `Some`, for at most `limit`.
pub async fn wait_for<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the task stops; returns its final status object.
pub async fn wait_task(sim: &RunningCluster, node: &str, upid: &str) -> Value {
    wait_for(Duration::from_secs(10), || async {
        let a = get(sim, &format!("/nodes/{node}/tasks/{upid}/status"), ADMIN).await;
        assert_eq!(a.status, 200, "{}", a.raw);
        (a.data()["status"] == "stopped").then(|| a.data().clone())
    })
    .await
}

/// Raw HTTPS: sends `request` bytes, returns the status line, the peer leaf certificate's
/// fingerprint and the whole response text.
pub async fn raw_request(
    sim: &RunningCluster,
    url: &str,
    request: &str,
) -> (String, String, String) {
    use rustls::pki_types::pem::PemObject;
    let addr = url.trim_start_matches("https://");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(sim.ca_pem().as_bytes()) {
        roots.add(cert.expect("CA cert")).expect("add root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut tls = connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake against the sim CA");
    let leaf = tls.get_ref().1.peer_certificates().expect("peer certs")[0].clone();
    let fingerprint = canopy_pve_sim::fingerprint_of_der(&leaf);
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status_line = text.lines().next().unwrap_or_default().to_string();
    (status_line, fingerprint, text)
}
