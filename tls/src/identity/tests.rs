//! Handshakes in memory (rustls client ↔ server connections, no sockets): what the server
//! serves is what the pinning and CA verifiers accept or refuse.

use super::*;
use crate::{client_config, probe_config, Trust};
use rcgen::{BasicConstraints, IsCa, Issuer};
use rustls::pki_types::ServerName;

/// Runs a handshake between `client` and `server` for `name`; the client's error if any.
fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: rustls::ClientConfig,
    name: &str,
) -> Result<(), rustls::Error> {
    let name = ServerName::try_from(name.to_string()).expect("server name");
    let mut c = rustls::ClientConnection::new(Arc::new(client), name)?;
    let mut s = rustls::ServerConnection::new(server)?;
    for _ in 0..20 {
        let mut to_server = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut to_server).expect("write");
        }
        let mut slice = &to_server[..];
        while !slice.is_empty() {
            s.read_tls(&mut slice).expect("read");
            if s.process_new_packets().is_err() {
                break;
            }
        }
        let mut to_client = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut to_client).expect("write");
        }
        let mut slice = &to_client[..];
        while !slice.is_empty() {
            c.read_tls(&mut slice).expect("read");
            c.process_new_packets()?;
        }
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok(());
        }
    }
    panic!("the handshake did not finish");
}

fn names() -> Vec<String> {
    vec!["canopy.lan".into(), "127.0.0.1".into(), "::1".into()]
}

#[test]
fn a_pinned_self_signed_certificate_is_accepted_and_another_is_refused_naming_both() {
    let ours = self_signed(&names()).unwrap();
    let id = Identity::from_pem(&ours.cert_pem, &ours.key_pem, "cert.pem", "key.pem").unwrap();
    let leaf = CertificateDer::from_pem_slice(ours.cert_pem.as_bytes()).unwrap();
    assert_eq!(id.fingerprint(), Fingerprint::of_der(leaf.as_ref()));

    let (pinned, seen) = client_config(&Trust::Fingerprints(vec![id.fingerprint()])).unwrap();
    handshake(id.server_config(), pinned.clone(), "127.0.0.1").unwrap();
    assert_eq!(seen.get("127.0.0.1"), Some(id.fingerprint()));
    // A pin names the certificate, not the host: any name the owner types works.
    handshake(id.server_config(), pinned.clone(), "whatever.example").unwrap();

    let other = self_signed(&names()).unwrap();
    let other = Identity::from_pem(&other.cert_pem, &other.key_pem, "c", "k").unwrap();
    assert_ne!(other.fingerprint(), id.fingerprint());
    let err = handshake(other.server_config(), pinned, "127.0.0.1").unwrap_err();
    // Found again where HTTP clients put it: inside an io::Error inside their own.
    let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, err.clone());
    let found = crate::pin_mismatch(&wrapped).expect("a pin mismatch");
    assert_eq!(found.presented, other.fingerprint());
    assert_eq!(found.pinned, [id.fingerprint()]);
    let err = err.to_string();
    assert!(err.contains(&other.fingerprint().to_string()), "{err}");
    assert!(err.contains(&id.fingerprint().to_string()), "{err}");
    assert!(err.contains("is pinned"), "{err}");
}

#[test]
fn the_self_signed_certificate_names_what_it_serves() {
    let ours = self_signed(&names()).unwrap();
    let id = Identity::from_pem(&ours.cert_pem, &ours.key_pem, "c", "k").unwrap();
    let trust = Trust::CaPem(ours.cert_pem.clone());
    for name in ["canopy.lan", "127.0.0.1", "::1"] {
        let (config, _) = client_config(&trust).unwrap();
        handshake(id.server_config(), config, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let (config, _) = client_config(&trust).unwrap();
    let err = handshake(id.server_config(), config, "other.lan").unwrap_err();
    assert!(err.to_string().contains("not valid for name"), "{err}");
    assert!(self_signed(&[]).is_err());
}

#[test]
fn a_ca_signed_certificate_is_trusted_through_its_ca() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, "Homelab CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["canopy.lan".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let chain = format!("{}{}", leaf.pem(), ca_cert.pem());
    let id = Identity::from_pem(&chain, &leaf_key.serialize_pem(), "c", "k").unwrap();
    assert_eq!(id.fingerprint(), Fingerprint::of_der(leaf.der()));

    let (config, _) = client_config(&Trust::CaPem(ca_cert.pem())).unwrap();
    handshake(id.server_config(), config, "canopy.lan").unwrap();
    let stranger = self_signed(&["canopy.lan".into()]).unwrap();
    let (config, _) = client_config(&Trust::CaPem(stranger.cert_pem)).unwrap();
    assert!(handshake(id.server_config(), config, "canopy.lan").is_err());
}

#[test]
fn a_probe_records_the_fingerprint_and_never_trusts() {
    let ours = self_signed(&names()).unwrap();
    let id = Identity::from_pem(&ours.cert_pem, &ours.key_pem, "c", "k").unwrap();
    let (config, seen) = probe_config();
    assert!(handshake(id.server_config(), config, "127.0.0.1").is_err());
    assert_eq!(seen.last(), Some(id.fingerprint()));
}

#[test]
fn bad_pairs_are_refused_naming_the_files() {
    let a = self_signed(&names()).unwrap();
    let b = self_signed(&names()).unwrap();
    let err = Identity::from_pem(&a.cert_pem, &b.key_pem, "a.pem", "b.key").unwrap_err();
    assert!(
        err.contains("b.key") && err.contains("does not belong") && err.contains("a.pem"),
        "{err}"
    );
    let err = Identity::from_pem("", &a.key_pem, "empty.pem", "k").unwrap_err();
    assert!(err.contains("empty.pem holds no certificate"), "{err}");
    let err = Identity::from_pem(&a.cert_pem, &a.cert_pem, "c", "notakey.pem").unwrap_err();
    assert!(err.contains("notakey.pem"), "{err}");
    let err = Identity::load(Path::new("/nonexistent/c.pem"), Path::new("k")).unwrap_err();
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
}

#[test]
fn the_key_never_shows_in_debug_output() {
    let a = self_signed(&names()).unwrap();
    let body = a.key_pem.lines().nth(1).unwrap().to_string();
    assert!(!format!("{a:?}").contains(&body));
    let id = Identity::from_pem(&a.cert_pem, &a.key_pem, "c", "k").unwrap();
    assert!(!format!("{id:?}").contains(&body));
}
