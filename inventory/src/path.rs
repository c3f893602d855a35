//! Path IDs: the one identity of every vertex in the tree (URL, database key, yew key,
//! selector target). A [`PathId`] is validated when it is built, so code that holds one never
//! re-checks it; it is cheap to clone (a shared string) and orders like the tree is shown.

pub use crate::keys::{DockerKey, GuestKey};
pub use crate::kind::Kind;
pub use crate::order::compare_names;
use crate::order::leaf_cmp;
use crate::text::Text;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

/// Why a string or a constructor call is not a path ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid name {0:?}: use 1 to {MAX_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit")]
    InvalidName(String),
    #[error(
        "invalid vmid {0:?}: expected a number from {MIN_VMID} to {MAX_VMID} without leading zeros"
    )]
    InvalidVmid(String),
    #[error("unknown kind {0:?}: expected cluster, node, lxc, vm or docker")]
    UnknownKind(String),
    #[error("{path:?} is not a path ID: expected {expected}")]
    Malformed {
        path: String,
        expected: &'static str,
    },
    #[error("a {child} cannot sit below a {parent}")]
    WrongParent { parent: Kind, child: Kind },
}

/// Longest accepted cluster, node or container name.
pub const MAX_NAME: usize = 253;
/// Proxmox VE's vmid range.
pub const MIN_VMID: u32 = 100;
pub const MAX_VMID: u32 = 999_999_999;

/// Checks a cluster, node or docker container name: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
pub fn validate_name(name: &str) -> Result<(), PathError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(is_name_byte);
    if ok {
        Ok(())
    } else {
        Err(PathError::InvalidName(name.to_owned()))
    }
}

pub(crate) fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Parses a vmid segment in its one canonical spelling (so string equality is identity).
pub fn parse_vmid(s: &str) -> Result<u32, PathError> {
    let bad = || PathError::InvalidVmid(s.to_owned());
    if s.is_empty() || s.len() > 9 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u32 = s.parse().map_err(|_| bad())?;
    if (MIN_VMID..=MAX_VMID).contains(&n) {
        Ok(n)
    } else {
        Err(bad())
    }
}

fn check_vmid(vmid: u32) -> Result<(), PathError> {
    if (MIN_VMID..=MAX_VMID).contains(&vmid) {
        Ok(())
    } else {
        Err(PathError::InvalidVmid(vmid.to_string()))
    }
}

/// `cluster/{c}` · `cluster/{c}/node/{n}` · `…/lxc/{vmid}` · `…/vm/{vmid}` ·
/// `…/{lxc|vm}/{vmid}/docker/{name}`.
///
/// Equality and hashing are those of the string; cloning is cheap (no allocation for paths
/// up to 45 bytes). Ordering is the tree's display order:
/// segment pairs compared from the root, names in natural order (`pve2` < `pve10`), guests by
/// vmid; an ancestor sorts before its descendants, so a pre-order walk yields sorted IDs.
#[derive(Clone)]
pub struct PathId(Text);

impl PathId {
    /// Parses and validates a path ID.
    pub fn parse(s: &str) -> Result<PathId, PathError> {
        let malformed = |expected| PathError::Malformed {
            path: s.to_owned(),
            expected,
        };
        let mut segs = s.split('/');
        let mut kind: Option<Kind> = None;
        while let Some(word) = segs.next() {
            let child: Kind = word.parse().map_err(|_| {
                malformed(match kind {
                    None => "`cluster/NAME` at the start",
                    Some(Kind::Cluster) => "`node/NAME` after the cluster",
                    Some(Kind::Node) => "`lxc/VMID` or `vm/VMID` after the node",
                    Some(_) => "`docker/NAME` after the guest",
                })
            })?;
            match kind {
                None if child != Kind::Cluster => {
                    return Err(malformed("`cluster/NAME` at the start"))
                }
                Some(parent) if !parent.can_contain(child) => {
                    return Err(PathError::WrongParent { parent, child })
                }
                _ => {}
            }
            let name = segs
                .next()
                .ok_or_else(|| malformed("a name after the kind"))?;
            if child.is_guest() {
                parse_vmid(name)?;
            } else {
                validate_name(name)?;
            }
            kind = Some(child);
        }
        let kind = kind.ok_or_else(|| malformed("`cluster/NAME`"))?;
        Ok(PathId::trusted(s, kind))
    }

    fn trusted(text: &str, kind: Kind) -> PathId {
        PathId(Text::new(text, kind))
    }

    /// `cluster/{name}`.
    pub fn cluster(name: &str) -> Result<PathId, PathError> {
        validate_name(name)?;
        Ok(PathId::trusted(&format!("cluster/{name}"), Kind::Cluster))
    }

    /// `{self}/node/{name}`; `self` must be a cluster.
    pub fn node(&self, name: &str) -> Result<PathId, PathError> {
        self.child(Kind::Node, name)
    }

    /// `{self}/lxc/{vmid}`; `self` must be a node.
    pub fn lxc(&self, vmid: u32) -> Result<PathId, PathError> {
        self.guest(Kind::Lxc, vmid)
    }

    /// `{self}/vm/{vmid}`; `self` must be a node.
    pub fn vm(&self, vmid: u32) -> Result<PathId, PathError> {
        self.guest(Kind::Vm, vmid)
    }

    /// `{self}/{lxc|vm}/{vmid}`; `self` must be a node and `kind` a guest kind.
    pub fn guest(&self, kind: Kind, vmid: u32) -> Result<PathId, PathError> {
        check_vmid(vmid)?;
        self.child_unchecked_name(kind, &vmid.to_string())
    }

    /// `{self}/docker/{name}`; `self` must be a guest.
    pub fn docker(&self, name: &str) -> Result<PathId, PathError> {
        self.child(Kind::Docker, name)
    }

    /// The child of `self` of the given kind and name (a vmid for guests).
    pub fn child(&self, kind: Kind, name: &str) -> Result<PathId, PathError> {
        if kind.is_guest() {
            parse_vmid(name)?;
        } else {
            validate_name(name)?;
        }
        self.child_unchecked_name(kind, name)
    }

    fn child_unchecked_name(&self, kind: Kind, name: &str) -> Result<PathId, PathError> {
        if !self.kind().can_contain(kind) {
            return Err(PathError::WrongParent {
                parent: self.kind(),
                child: kind,
            });
        }
        let text = format!("{}/{}/{}", self.as_str(), kind.as_str(), name);
        Ok(PathId::trusted(&text, kind))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn kind(&self) -> Kind {
        self.0.kind()
    }

    /// The last segment: the cluster, node or container name, or the guest's vmid.
    pub fn name(&self) -> &str {
        let s = self.as_str();
        &s[s.rfind('/').map_or(0, |i| i + 1)..]
    }

    /// All `/`-separated segments, kind words included.
    pub fn segments(&self) -> std::str::Split<'_, char> {
        self.as_str().split('/')
    }

    /// The enclosing vertex's ID; `None` for a cluster.
    pub fn parent(&self) -> Option<PathId> {
        let kind = match self.kind() {
            Kind::Cluster => return None,
            Kind::Node => Kind::Cluster,
            Kind::Lxc | Kind::Vm => Kind::Node,
            Kind::Docker => self.nth_word(2).parse().ok()?,
        };
        Some(self.ancestor(kind.depth(), kind))
    }

    fn ancestor(&self, depth: usize, kind: Kind) -> PathId {
        let s = self.as_str();
        let end = s
            .match_indices('/')
            .nth(depth * 2 + 1)
            .map_or(s.len(), |(i, _)| i);
        PathId::trusted(&s[..end], kind)
    }

    /// The kind word of the `depth`-th pair (0 = cluster).
    fn nth_word(&self, depth: usize) -> &str {
        self.as_str().split('/').nth(depth * 2).unwrap_or("")
    }

    fn nth_name(&self, depth: usize) -> Option<&str> {
        (self.kind().depth() >= depth)
            .then(|| self.as_str().split('/').nth(depth * 2 + 1))
            .flatten()
    }

    /// The cluster's name (every path starts with one).
    pub fn cluster_name(&self) -> &str {
        self.nth_name(0).unwrap_or("")
    }

    /// `cluster/{c}` for any path.
    pub fn cluster_id(&self) -> PathId {
        self.ancestor(0, Kind::Cluster)
    }

    /// The node's name, for nodes and everything below them.
    pub fn node_name(&self) -> Option<&str> {
        self.nth_name(1)
    }

    /// The node's ID, for nodes and everything below them.
    pub fn node_id(&self) -> Option<PathId> {
        (self.kind().depth() >= 1).then(|| self.ancestor(1, Kind::Node))
    }

    /// The guest's ID, for guests and docker containers.
    pub fn guest_id(&self) -> Option<PathId> {
        if self.kind().depth() < 2 {
            return None;
        }
        let kind = self.nth_word(2).parse().ok()?;
        Some(self.ancestor(2, kind))
    }

    /// The vmid of the guest this path is, or is inside.
    pub fn vmid(&self) -> Option<u32> {
        self.nth_name(2).and_then(|v| v.parse().ok())
    }

    /// The guest's identity across migrations; `Some` for lxc and vm paths only.
    pub fn guest_key(&self) -> Option<GuestKey> {
        if !self.kind().is_guest() {
            return None;
        }
        Some(GuestKey {
            cluster: self.cluster_name().to_owned(),
            kind: self.kind(),
            vmid: self.vmid()?,
        })
    }

    /// A container's identity across its guest's migrations; `Some` for docker paths only.
    pub fn docker_key(&self) -> Option<DockerKey> {
        if self.kind() != Kind::Docker {
            return None;
        }
        Some(DockerKey {
            guest: self.guest_id()?.guest_key()?,
            name: self.name().to_owned(),
        })
    }

    /// Whether `other` lies strictly below `self`.
    pub fn is_ancestor_of(&self, other: &PathId) -> bool {
        let (s, o) = (self.as_str(), other.as_str());
        o.len() > s.len() && o.starts_with(s) && o.as_bytes()[s.len()] == b'/'
    }

    /// `self` with the prefix `from` replaced by `to` (e.g. a container of a migrated guest).
    /// `None` unless `self` is `from` or below it and `from`, `to` are of the same kind.
    pub fn rebase(&self, from: &PathId, to: &PathId) -> Option<PathId> {
        if from.kind() != to.kind() {
            return None;
        }
        if self == from {
            return Some(to.clone());
        }
        if !from.is_ancestor_of(self) {
            return None;
        }
        let text = format!("{}{}", to.as_str(), &self.as_str()[from.as_str().len()..]);
        Some(PathId::trusted(&text, self.kind()))
    }

    /// Compares two siblings (IDs with the same parent) by their last segment pair only.
    pub(crate) fn sibling_cmp(&self, other: &PathId) -> Ordering {
        leaf_cmp(self.last_pair(), other.last_pair())
    }

    /// The last (kind word, name) pair.
    pub(crate) fn last_pair(&self) -> (&str, &str) {
        let s = self.as_str();
        let name_start = s.rfind('/').map_or(0, |i| i + 1);
        let head = &s[..name_start.saturating_sub(1)];
        let word_start = head.rfind('/').map_or(0, |i| i + 1);
        (&head[word_start..], &s[name_start..])
    }
}

impl PartialEq for PathId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for PathId {}

impl Hash for PathId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl Ord for PathId {
    fn cmp(&self, other: &Self) -> Ordering {
        let (mut a, mut b) = (self.as_str().split('/'), other.as_str().split('/'));
        loop {
            match (a.next(), b.next()) {
                (None, None) => return Ordering::Equal,
                (None, Some(_)) => return Ordering::Less,
                (Some(_), None) => return Ordering::Greater,
                (Some(ka), Some(kb)) => {
                    let pa = (ka, a.next().unwrap_or(""));
                    let pb = (kb, b.next().unwrap_or(""));
                    match leaf_cmp(pa, pb) {
                        Ordering::Equal => {}
                        o => return o,
                    }
                }
            }
        }
    }
}

impl PartialOrd for PathId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PathId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl AsRef<str> for PathId {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl FromStr for PathId {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PathId::parse(s)
    }
}

impl TryFrom<&str> for PathId {
    type Error = PathError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        PathId::parse(s)
    }
}

impl TryFrom<String> for PathId {
    type Error = PathError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        PathId::parse(&s)
    }
}

impl From<PathId> for String {
    fn from(id: PathId) -> String {
        id.as_str().to_owned()
    }
}

impl Serialize for PathId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PathId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        PathId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A path ID is a string on the wire (`cluster/home/node/pve1/lxc/101`).
#[cfg(feature = "schema")]
impl schemars::JsonSchema for PathId {
    fn schema_name() -> String {
        "PathId".into()
    }

    fn json_schema(_: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        schemars::schema::SchemaObject {
            instance_type: Some(schemars::schema::InstanceType::String.into()),
            metadata: Some(Box::new(schemars::schema::Metadata {
                description: Some(
                    "A path ID: `cluster/{c}`, `cluster/{c}/node/{n}`, `…/lxc/{vmid}`, `…/vm/{vmid}`, `…/docker/{name}`."
                        .into(),
                ),
                ..Default::default()
            })),
            ..Default::default()
        }
        .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathId {
        PathId::parse(s).unwrap()
    }

    #[test]
    fn builds_and_parses_the_same_ids() {
        let c = PathId::cluster("home").unwrap();
        let n = c.node("pve1").unwrap();
        let g = n.lxc(101).unwrap();
        let d = g.docker("nginx").unwrap();
        assert_eq!(d.as_str(), "cluster/home/node/pve1/lxc/101/docker/nginx");
        assert_eq!(p(d.as_str()), d);
        assert_eq!(n.vm(200).unwrap().kind(), Kind::Vm);
        assert_eq!(d.kind(), Kind::Docker);
        assert_eq!(d.parent(), Some(g.clone()));
        assert_eq!(g.parent(), Some(n.clone()));
        assert_eq!(n.parent(), Some(c.clone()));
        assert_eq!(c.parent(), None);
        assert_eq!(d.cluster_name(), "home");
        assert_eq!(d.cluster_id(), c);
        assert_eq!(d.node_name(), Some("pve1"));
        assert_eq!(c.node_name(), None);
        assert_eq!(d.node_id(), Some(n.clone()));
        assert_eq!(d.guest_id(), Some(g.clone()));
        assert_eq!(d.vmid(), Some(101));
        assert_eq!(n.vmid(), None);
        assert_eq!(d.name(), "nginx");
        assert_eq!(g.name(), "101");
        assert_eq!(d.last_pair(), ("docker", "nginx"));
        assert_eq!(c.last_pair(), ("cluster", "home"));
        assert!(c.is_ancestor_of(&d));
        assert!(!d.is_ancestor_of(&d));
        assert!(!p("cluster/home").is_ancestor_of(&p("cluster/homelab")));
    }

    #[test]
    fn keys_survive_migration() {
        let a = p("cluster/home/node/pve1/lxc/101");
        let b = p("cluster/home/node/pve2/lxc/101");
        assert_ne!(a, b);
        assert_eq!(a.guest_key(), b.guest_key());
        assert_eq!(a.guest_key().unwrap().to_string(), "home/lxc/101");
        assert_ne!(
            a.guest_key(),
            p("cluster/home/node/pve1/vm/101").guest_key()
        );
        let d = a.docker("web").unwrap();
        assert_eq!(d.rebase(&a, &b).unwrap(), b.docker("web").unwrap());
        assert_eq!(
            d.docker_key().unwrap().to_string(),
            "home/lxc/101/docker/web"
        );
        assert_eq!(d.rebase(&b, &a), None);
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            "",
            "cluster",
            "cluster/",
            "node/pve1",
            "cluster/home/lxc/101",
            "cluster/home/node/pve1/lxc/0101",
            "cluster/home/node/pve1/lxc/99",
            "cluster/home/node/pve1/lxc/1000000000",
            "cluster/home/node/pve1/lxc/abc",
            "cluster/home/node/pve 1",
            "cluster/home/node/-pve",
            "cluster/home/node/pve1/docker/x",
            "cluster/home/node/pve1/vm/100/docker/x/docker/y",
            "cluster/home/",
            "cluster/a*b",
        ] {
            assert!(PathId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(PathId::cluster("a/b").is_err());
        assert!(PathId::cluster("home").unwrap().lxc(101).is_err());
        assert!(p("cluster/h/node/n").lxc(5).is_err());
    }

    #[test]
    fn orders_like_the_tree() {
        let mut ids: Vec<PathId> = [
            "cluster/home/node/pve10",
            "cluster/home/node/pve2/vm/1000",
            "cluster/home/node/pve2/lxc/101/docker/b",
            "cluster/home/node/pve2",
            "cluster/home/node/pve2/lxc/101",
            "cluster/home/node/pve2/vm/102",
            "cluster/home/node/pve2/lxc/101/docker/a",
            "cluster/home",
            "cluster/alpha",
        ]
        .into_iter()
        .map(p)
        .collect();
        ids.sort();
        let got: Vec<&str> = ids.iter().map(PathId::as_str).collect();
        assert_eq!(
            got,
            [
                "cluster/alpha",
                "cluster/home",
                "cluster/home/node/pve2",
                "cluster/home/node/pve2/lxc/101",
                "cluster/home/node/pve2/lxc/101/docker/a",
                "cluster/home/node/pve2/lxc/101/docker/b",
                "cluster/home/node/pve2/vm/102",
                "cluster/home/node/pve2/vm/1000",
                "cluster/home/node/pve10",
            ]
        );
    }

    #[test]
    fn serializes_as_a_string() {
        let id = p("cluster/home/node/pve1");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, r#""cluster/home/node/pve1""#);
        assert_eq!(serde_json::from_str::<PathId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<PathId>(r#""cluster/x/y""#).is_err());
        assert_eq!(serde_json::to_string(&Kind::Lxc).unwrap(), r#""lxc""#);
    }
}
