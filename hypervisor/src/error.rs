//! What can go wrong talking to PVE, each case worded so a homelab owner knows what to fix.
//!
//! The message always names the endpoint; a 401 names authentication, a 403 names the
//! privilege and path PVE reported (from the reason phrase or the body's `message`), a TLS
//! failure names the fingerprint the server presented. Secrets never appear.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authentication failed at {endpoint}: PVE answered 401 {reason}; check the API token (USER@REALM!TOKENID=SECRET), its secret and its expiry")]
    Authentication { endpoint: String, reason: String },

    #[error("permission denied at {endpoint}: {}", forbidden_detail(.privilege.as_deref(), .path.as_deref(), .reason))]
    Forbidden {
        endpoint: String,
        /// The privilege PVE said is missing, e.g. `VM.Snapshot`.
        privilege: Option<String>,
        /// The ACL path it is missing on, e.g. `/vms/101`.
        path: Option<String>,
        reason: String,
    },

    #[error("TLS certificate fingerprint mismatch at {endpoint}: the server presents {actual}, but {expected} is pinned (if the node's certificate was renewed on purpose, pin the new fingerprint)")]
    FingerprintMismatch {
        endpoint: String,
        expected: String,
        actual: String,
    },

    #[error("TLS certificate of {endpoint} is not trusted: {reason}")]
    Untrusted { endpoint: String, reason: String },

    #[error("{endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },

    #[error("{endpoint} did not answer {what} within {} s", .after.as_secs_f32())]
    Timeout {
        endpoint: String,
        what: String,
        after: Duration,
    },

    #[error("{what} failed at {endpoint}: HTTP {status} {reason}")]
    Api {
        endpoint: String,
        what: String,
        status: u16,
        reason: String,
    },

    #[error("{what} at {endpoint} returned a body Canopy cannot read: {reason}")]
    InvalidResponse {
        endpoint: String,
        what: String,
        reason: String,
    },

    #[error("{0}")]
    Config(String),
}

fn forbidden_detail(privilege: Option<&str>, path: Option<&str>, reason: &str) -> String {
    match (privilege, path) {
        (Some(p), Some(path)) => {
            format!("the API token lacks the privilege {p} on {path} (PVE said: {reason})")
        }
        _ => format!("PVE answered 403 {reason}"),
    }
}

impl Error {
    /// Worth trying on another node of the cluster: the node we asked did not answer.
    pub fn is_node_failure(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout { .. })
    }

    /// Parse PVE's `Permission check failed (/vms/101, VM.Snapshot)`.
    pub(crate) fn forbidden(endpoint: String, reason: String) -> Self {
        let (path, privilege) = parse_permission(&reason).unzip();
        Self::Forbidden {
            endpoint,
            privilege,
            path,
            reason,
        }
    }
}

fn parse_permission(reason: &str) -> Option<(String, String)> {
    let inner = reason.split_once('(')?.1.rsplit_once(')')?.0;
    let (path, privs) = inner.split_once(',')?;
    let path = path.trim();
    let privs = privs.trim();
    (path.starts_with('/') && !privs.is_empty()).then(|| (path.to_string(), privs.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_names_privilege_and_path() {
        let e = Error::forbidden(
            "https://pve1:8006".into(),
            "Permission check failed (/vms/101, VM.Snapshot)".into(),
        );
        let msg = e.to_string();
        assert!(
            msg.contains("lacks the privilege VM.Snapshot on /vms/101"),
            "{msg}"
        );
        let e = Error::forbidden("x".into(), "Permission check failed".into());
        assert!(e.to_string().contains("403 Permission check failed"));
    }
}
