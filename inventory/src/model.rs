//! The vertex: everything the tree knows about one cluster, node, guest or container. A plain
//! serde struct so the server, the CLI and the frontend can carry it as is; its identity
//! fields (`id`, `kind`, `vmid`) are checked against each other when it enters an
//! [`Inventory`](crate::Inventory).

use crate::path::{Kind, PathId};
use crate::rollup::Counts;
use serde::{Deserialize, Serialize};

/// One vertex of the tree. Optional facts are `None` when unknown and left out of JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vertex {
    pub id: PathId,
    pub kind: Kind,
    /// Cluster, node or container name; a guest's hostname.
    pub name: String,
    /// Nodes: online | offline | unknown. Guests: running | stopped | unknown.
    /// Docker: running | exited | … (as the engine says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Guests only (equal to the vmid in `id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmid: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub template: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Docker only: the image reference the container runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Why this vertex could not be read (e.g. node unreachable): partial failure as data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The enrolled agent's host, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// online | offline | agentless | missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The user the agent runs as (`root` or `canopy-agent`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_user: Option<String>,
    /// This vertex's own counts; subtree sums come from [`Inventory::rollups`](crate::Inventory::rollups).
    #[serde(default, skip_serializing_if = "Counts::is_zero")]
    pub counts: Counts,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Vertex {
    /// A vertex with identity fields taken from `id` and its name set to the last path
    /// segment (a guest's hostname is unknown until set with [`Vertex::with_name`]).
    pub fn new(id: PathId) -> Vertex {
        Vertex {
            kind: id.kind(),
            vmid: if id.kind().is_guest() {
                id.vmid()
            } else {
                None
            },
            name: id.name().to_owned(),
            id,
            status: None,
            template: false,
            tags: Vec::new(),
            os: None,
            image: None,
            error: None,
            host_id: None,
            machine_id: None,
            agent: None,
            agent_user: None,
            counts: Counts::default(),
        }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Vertex {
        self.name = name.into();
        self
    }

    pub fn with_status(mut self, status: impl Into<String>) -> Vertex {
        self.status = Some(status.into());
        self
    }

    pub fn with_tags<I, S>(mut self, tags: I) -> Vertex
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_template(mut self, template: bool) -> Vertex {
        self.template = template;
        self
    }

    pub fn with_os(mut self, os: impl Into<String>) -> Vertex {
        self.os = Some(os.into());
        self
    }

    pub fn with_image(mut self, image: impl Into<String>) -> Vertex {
        self.image = Some(image.into());
        self
    }

    pub fn with_error(mut self, error: impl Into<String>) -> Vertex {
        self.error = Some(error.into());
        self
    }

    pub fn with_agent(mut self, agent: impl Into<String>) -> Vertex {
        self.agent = Some(agent.into());
        self
    }

    pub fn with_counts(mut self, counts: Counts) -> Vertex {
        self.counts = counts;
        self
    }

    /// The identity fields agree: `kind` and `vmid` are those `id` implies.
    pub(crate) fn identity_error(&self) -> Option<crate::InventoryError> {
        if self.kind != self.id.kind() {
            return Some(crate::InventoryError::KindMismatch {
                id: self.id.clone(),
                found: self.kind,
            });
        }
        let vmid = if self.kind.is_guest() {
            self.id.vmid()
        } else {
            None
        };
        (self.vmid != vmid).then(|| crate::InventoryError::VmidMismatch {
            id: self.id.clone(),
            found: self.vmid,
        })
    }

    /// Resets `kind` and `vmid` to what `id` implies.
    pub(crate) fn fix_identity(&mut self) {
        self.kind = self.id.kind();
        self.vmid = if self.kind.is_guest() {
            self.id.vmid()
        } else {
            None
        };
    }

    /// A stopped guest, or a container that is not running (exited, dead, created).
    /// PVE cannot say what state it is in (`unknown`: its node is offline or not reporting).
    pub fn is_unreachable(&self) -> bool {
        self.kind != crate::Kind::Node && self.status.as_deref() == Some("unknown")
    }

    pub fn is_stopped(&self) -> bool {
        matches!(
            self.status.as_deref(),
            Some("stopped" | "exited" | "dead" | "created")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_json_leaves_out_empty_fields() {
        let id = PathId::parse("cluster/home/node/pve1/lxc/101").unwrap();
        let v = Vertex::new(id).with_name("web").with_status("running");
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(
            json,
            r#"{"id":"cluster/home/node/pve1/lxc/101","kind":"lxc","name":"web","status":"running","vmid":101}"#
        );
        assert_eq!(serde_json::from_str::<Vertex>(&json).unwrap(), v);
    }
}
