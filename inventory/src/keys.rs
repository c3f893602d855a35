//! Identities that outlive a path: a guest keeps its [`GuestKey`] when it migrates to another
//! node (so its history follows it), and a container its [`DockerKey`].

use crate::path::Kind;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A guest's identity that survives migration between nodes: `(cluster, kind, vmid)`.
/// (The server adds the agent's machine-id on top; that is not the inventory's business.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GuestKey {
    pub cluster: String,
    pub kind: Kind,
    pub vmid: u32,
}

impl fmt::Display for GuestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.cluster, self.kind, self.vmid)
    }
}

/// A docker container's identity: its guest's key plus the container name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DockerKey {
    pub guest: GuestKey,
    pub name: String,
}

impl fmt::Display for DockerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/docker/{}", self.guest, self.name)
    }
}
