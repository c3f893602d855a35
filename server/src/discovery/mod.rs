//! Proxmox discovery: building the tree from PVE (`build`), connecting with the stored
//! settings of a cluster (`connect`), the periodic per-cluster service (`service`), the
//! in-memory tree it serves (`live`), what agents do to it (`hosts`) and its changes pushed
//! to followers (`news`).

pub mod build;
mod containers;
mod hosts;
mod live;
mod news;
pub mod service;

pub use news::TreeEvent;
pub use service::Discovery;

use anyhow::{bail, Context, Result};
use canopy_hypervisor::{ApiToken, Connection, Fingerprint, PveClient, Trust};
use std::time::Duration;

/// How to reach a cluster, as given on a command line or stored with it.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoints: Vec<String>,
    pub token: ApiToken,
    pub fingerprints: Vec<String>,
    pub ca_pem: Option<String>,
    pub timeout: Duration,
}

/// A client for `target`; fingerprints are checked for form here, against the server later.
pub fn connect(target: &Target) -> Result<PveClient> {
    let trust = match (&target.ca_pem, target.fingerprints.as_slice()) {
        (Some(pem), []) => Trust::CaPem(pem.clone()),
        (None, []) => bail!(
            "no certificate fingerprint and no CA: Canopy never accepts an unverified certificate"
        ),
        (Some(_), _) => bail!("give either --fingerprint or --ca, not both"),
        (None, fps) => Trust::Fingerprints(
            fps.iter()
                .map(|f| f.parse::<Fingerprint>().map_err(anyhow::Error::msg))
                .collect::<Result<_>>()
                .context("--fingerprint")?,
        ),
    };
    let mut conn = Connection::new(target.endpoints.clone(), target.token.clone(), trust);
    conn.timeout = target.timeout;
    conn.connect_timeout = target.timeout.min(Duration::from_secs(5));
    Ok(PveClient::new(conn)?)
}
