//! TLS like a PVE cluster: one cluster CA (`pve-root-ca.pem`) and one leaf per node
//! (`pve-ssl.pem`) signed by it, served by that node's listener. Fingerprints are shown the
//! way the PVE GUI shows them (`AB:CD:…`, SHA-256 of the DER leaf).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::config::{NodeTlsSpec, TlsSpec};

/// The CA and one certificate/key per node, all PEM.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    pub ca_cert_pem: String,
    pub nodes: Vec<NodeTlsSpec>,
}

impl ClusterTls {
    /// Uses `given` when present (every node must be covered), otherwise generates a CA and
    /// leaves valid for 127.0.0.1, localhost, the node name and its cluster IP.
    pub fn for_cluster(
        nodes: &[(String, Option<String>)],
        given: Option<&TlsSpec>,
    ) -> anyhow::Result<Self> {
        if let Some(given) = given {
            for (node, _) in nodes {
                if !given.nodes.iter().any(|n| &n.node == node) {
                    return Err(anyhow!("tls: no certificate given for node {node}"));
                }
            }
            return Ok(Self {
                ca_cert_pem: given.ca_cert_pem.clone(),
                nodes: given.nodes.clone(),
            });
        }
        let year = current_year();
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name
            .push(DnType::CommonName, "Proxmox Virtual Environment");
        ca.distinguished_name.push(
            DnType::OrganizationalUnitName,
            uuid::Uuid::new_v4().to_string(),
        );
        ca.distinguished_name
            .push(DnType::OrganizationName, "PVE Cluster Manager CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
        ca.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut out = Vec::new();
        for (node, ip) in nodes {
            let mut sans = vec!["127.0.0.1".to_string(), "localhost".into(), node.clone()];
            sans.extend(
                ip.iter()
                    .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                    .cloned(),
            );
            let mut leaf = CertificateParams::new(sans)?;
            leaf.distinguished_name
                .push(DnType::OrganizationalUnitName, "PVE Cluster Node");
            leaf.distinguished_name
                .push(DnType::OrganizationName, "Proxmox Virtual Environment");
            leaf.distinguished_name
                .push(DnType::CommonName, format!("{node}.local"));
            leaf.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            leaf.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
            leaf.not_after = rcgen::date_time_ymd(year + 1, 12, 31);
            let key = KeyPair::generate()?;
            let cert = leaf.signed_by(&key, &issuer)?;
            out.push(NodeTlsSpec {
                node: node.clone(),
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            });
        }
        Ok(Self {
            ca_cert_pem: ca_cert.pem(),
            nodes: out,
        })
    }

    pub fn node(&self, node: &str) -> Option<&NodeTlsSpec> {
        self.nodes.iter().find(|n| n.node == node)
    }

    pub fn to_spec(&self) -> TlsSpec {
        TlsSpec {
            ca_cert_pem: self.ca_cert_pem.clone(),
            nodes: self.nodes.clone(),
        }
    }
}

/// A rustls server config serving the node's leaf only (as pveproxy serves `pve-ssl.pem`),
/// and that leaf's fingerprint.
pub(crate) fn server_config(
    node: &NodeTlsSpec,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, String)> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(node.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .with_context(|| format!("tls: certificate of node {}", node.node))?;
    let leaf = chain
        .first()
        .ok_or_else(|| anyhow!("tls: empty certificate for {}", node.node))?;
    let fingerprint = fingerprint_of_der(leaf);
    let key = PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes())
        .with_context(|| format!("tls: key of node {}", node.node))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), fingerprint))
}

/// `AB:CD:…` (32 uppercase pairs) of SHA-256 over the DER certificate.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let hex = hex::encode_upper(digest);
    hex.as_bytes()
        .chunks(2)
        .map(|p| std::str::from_utf8(p).unwrap_or("??"))
        .collect::<Vec<_>>()
        .join(":")
}

fn current_year() -> i32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_loads_and_fingerprints_look_like_pve() {
        let nodes = vec![("pve1".to_string(), Some("10.0.0.1".to_string()))];
        let tls = ClusterTls::for_cluster(&nodes, None).unwrap();
        let (_, fp) = server_config(tls.node("pve1").unwrap()).unwrap();
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.split(':').all(|p| p.len() == 2
            && p.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())));
        let again = ClusterTls::for_cluster(&nodes, Some(&tls.to_spec())).unwrap();
        assert_eq!(server_config(again.node("pve1").unwrap()).unwrap().1, fp);
    }
}
