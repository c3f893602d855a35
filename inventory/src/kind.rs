//! What a vertex is (cluster, node, lxc, vm, docker) and which kinds nest in which; the
//! kind word is also the path segment before a vertex's name.

use crate::path::PathError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a vertex is. The path segment naming a vertex's kind is [`Kind::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Cluster,
    Node,
    Lxc,
    Vm,
    Docker,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Cluster, Kind::Node, Kind::Lxc, Kind::Vm, Kind::Docker];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Node => "node",
            Kind::Lxc => "lxc",
            Kind::Vm => "vm",
            Kind::Docker => "docker",
        }
    }

    /// LXC containers and VMs: the things with a vmid.
    pub fn is_guest(self) -> bool {
        matches!(self, Kind::Lxc | Kind::Vm)
    }

    /// Whether a vertex of this kind may sit directly below one of kind `self`.
    pub fn can_contain(self, child: Kind) -> bool {
        matches!(
            (self, child),
            (Kind::Cluster, Kind::Node)
                | (Kind::Node, Kind::Lxc | Kind::Vm)
                | (Kind::Lxc | Kind::Vm, Kind::Docker)
        )
    }

    /// Distance from the cluster: cluster 0, node 1, guest 2, docker 3.
    pub fn depth(self) -> usize {
        match self {
            Kind::Cluster => 0,
            Kind::Node => 1,
            Kind::Lxc | Kind::Vm => 2,
            Kind::Docker => 3,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| PathError::UnknownKind(s.to_owned()))
    }
}
