//! Reconcile: the difference between two snapshots of the tree as a list of changes the
//! server turns into events (guest added, moved, removed, status changed, …), and
//! [`Inventory::apply`] to replay them. A guest that appears under another node with the same
//! [`GuestKey`](crate::GuestKey) is one `moved` change (its containers move with it), never a
//! removal plus an addition, so its history follows it.

use crate::graph::{Inventory, InventoryError};
use crate::model::Vertex;
use crate::path::{GuestKey, Kind, PathId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// One difference between two inventories. Serialized as `{"type":"status_changed",…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    Added {
        vertex: Vertex,
    },
    /// The vertex and everything still below it.
    Removed {
        id: PathId,
    },
    /// A guest (with its containers) migrated to another node.
    Moved {
        from: PathId,
        to: PathId,
    },
    StatusChanged {
        id: PathId,
        from: Option<String>,
        to: Option<String>,
    },
    Renamed {
        id: PathId,
        from: String,
        to: String,
    },
    TagsChanged {
        id: PathId,
        from: Vec<String>,
        to: Vec<String>,
    },
    TemplateChanged {
        id: PathId,
        from: bool,
        to: bool,
    },
    /// E.g. a node became unreachable (`to` is `Some`) or came back (`to` is `None`).
    ErrorChanged {
        id: PathId,
        from: Option<String>,
        to: Option<String>,
    },
    /// Any other fact changed (os, image, agent, host or machine ID, own counts): the whole
    /// new vertex.
    Updated {
        vertex: Vertex,
    },
}

impl Change {
    /// The vertex this change is about (for `moved`, where the guest is now).
    pub fn subject(&self) -> &PathId {
        match self {
            Change::Added { vertex } | Change::Updated { vertex } => &vertex.id,
            Change::Moved { to, .. } => to,
            Change::Removed { id }
            | Change::StatusChanged { id, .. }
            | Change::Renamed { id, .. }
            | Change::TagsChanged { id, .. }
            | Change::TemplateChanged { id, .. }
            | Change::ErrorChanged { id, .. } => id,
        }
    }

    /// An event type naming the subject's kind: `guest_added`, `node_error_changed`,
    /// `docker_removed`, `guest_moved`, … (lxc and vm are both `guest`).
    pub fn event_type(&self) -> String {
        let noun = match self.subject().kind() {
            Kind::Cluster => "cluster",
            Kind::Node => "node",
            Kind::Lxc | Kind::Vm => "guest",
            Kind::Docker => "docker",
        };
        let verb = match self {
            Change::Added { .. } => "added",
            Change::Removed { .. } => "removed",
            Change::Moved { .. } => "moved",
            Change::StatusChanged { .. } => "status_changed",
            Change::Renamed { .. } => "renamed",
            Change::TagsChanged { .. } => "tags_changed",
            Change::TemplateChanged { .. } => "template_changed",
            Change::ErrorChanged { .. } => "error_changed",
            Change::Updated { .. } => "updated",
        };
        format!("{noun}_{verb}")
    }
}

/// The changes that turn `old` into `new`, in an order [`Inventory::apply`] can replay:
/// clusters and nodes added; containers of migrating guests removed; guests moved; guests
/// and containers added (parents first); facts changed; everything else removed (children
/// first, each vertex reported).
pub fn reconcile(old: &Inventory, new: &Inventory) -> Vec<Change> {
    let moves = pair_moves(old, new);
    let moved_to: HashMap<&PathId, &PathId> = moves.iter().map(|(f, t)| (f, t)).collect();
    let moved_from: HashMap<&PathId, &PathId> = moves.iter().map(|(f, t)| (t, f)).collect();

    // Where an old vertex lives in `new`, if it survives.
    let successor = |id: &PathId| -> Option<PathId> {
        if new.contains(id) {
            return Some(id.clone());
        }
        match id.kind() {
            Kind::Lxc | Kind::Vm => moved_to.get(id).map(|&t| t.clone()),
            Kind::Docker => {
                let guest = id.guest_id()?;
                let to = moved_to.get(&guest)?;
                id.rebase(&guest, to).filter(|d| new.contains(d))
            }
            _ => None,
        }
    };
    // Where a new vertex came from in `old`, if it existed.
    let source = |id: &PathId| -> Option<PathId> {
        if old.contains(id) {
            return Some(id.clone());
        }
        match id.kind() {
            Kind::Lxc | Kind::Vm => moved_from.get(id).map(|&f| f.clone()),
            Kind::Docker => {
                let guest = id.guest_id()?;
                let from = moved_from.get(&guest)?;
                id.rebase(&guest, from).filter(|d| old.contains(d))
            }
            _ => None,
        }
    };

    let mut out = Vec::new();
    let added = |v: &Vertex| source(&v.id).is_none();
    out.extend(
        new.iter()
            .filter(|v| matches!(v.kind, Kind::Cluster | Kind::Node) && added(v))
            .map(|v| Change::Added { vertex: v.clone() }),
    );
    for (from, _) in &moves {
        out.extend(
            old.children(from)
                .filter(|d| successor(&d.id).is_none())
                .map(|d| Change::Removed { id: d.id.clone() }),
        );
    }
    out.extend(moves.iter().map(|(from, to)| Change::Moved {
        from: from.clone(),
        to: to.clone(),
    }));
    out.extend(
        new.iter()
            .filter(|v| matches!(v.kind, Kind::Lxc | Kind::Vm | Kind::Docker) && added(v))
            .map(|v| Change::Added { vertex: v.clone() }),
    );
    for v in new.iter() {
        if let Some(src) = source(&v.id).and_then(|s| old.get(&s)) {
            diff(src, v, &mut out);
        }
    }
    let mut removed: Vec<Change> = old
        .iter()
        .filter(|v| successor(&v.id).is_none())
        .filter(|v| !v.id.parent().is_some_and(|p| moved_to.contains_key(&p)))
        .map(|v| Change::Removed { id: v.id.clone() })
        .collect();
    removed.reverse();
    out.extend(removed);
    out
}

/// Guests gone from their old place paired with guests new in a place, by key; duplicates
/// pair in tree order.
fn pair_moves(old: &Inventory, new: &Inventory) -> Vec<(PathId, PathId)> {
    let mut gone: BTreeMap<GuestKey, VecDeque<&PathId>> = BTreeMap::new();
    for v in old.iter() {
        if let Some(key) = v.id.guest_key().filter(|_| !new.contains(&v.id)) {
            gone.entry(key).or_default().push_back(&v.id);
        }
    }
    let mut moves = Vec::new();
    for v in new.iter() {
        let Some(key) = v.id.guest_key().filter(|_| !old.contains(&v.id)) else {
            continue;
        };
        if let Some(from) = gone.get_mut(&key).and_then(VecDeque::pop_front) {
            moves.push((from.clone(), v.id.clone()));
        }
    }
    moves.sort();
    moves
}

fn diff(a: &Vertex, b: &Vertex, out: &mut Vec<Change>) {
    let id = &b.id;
    if a.name != b.name {
        out.push(Change::Renamed {
            id: id.clone(),
            from: a.name.clone(),
            to: b.name.clone(),
        });
    }
    if a.status != b.status {
        out.push(Change::StatusChanged {
            id: id.clone(),
            from: a.status.clone(),
            to: b.status.clone(),
        });
    }
    if a.tags != b.tags {
        out.push(Change::TagsChanged {
            id: id.clone(),
            from: a.tags.clone(),
            to: b.tags.clone(),
        });
    }
    if a.template != b.template {
        out.push(Change::TemplateChanged {
            id: id.clone(),
            from: a.template,
            to: b.template,
        });
    }
    if a.error != b.error {
        out.push(Change::ErrorChanged {
            id: id.clone(),
            from: a.error.clone(),
            to: b.error.clone(),
        });
    }
    if other_facts(a) != other_facts(b) {
        out.push(Change::Updated { vertex: b.clone() });
    }
}

type OtherFacts<'a> = (
    &'a Option<String>,
    &'a Option<String>,
    &'a Option<String>,
    &'a Option<String>,
    &'a Option<String>,
    &'a Option<String>,
    crate::Counts,
);

/// The facts without a change type of their own (reported as `updated`).
fn other_facts(v: &Vertex) -> OtherFacts<'_> {
    (
        &v.os,
        &v.image,
        &v.host_id,
        &v.machine_id,
        &v.agent,
        &v.agent_user,
        v.counts,
    )
}

impl Inventory {
    /// Replays changes in order. Strict: a change about a vertex that is not there, or an
    /// addition whose parent is missing, is an error; changes before it stay applied. The
    /// `from` side of a fact change is not checked.
    pub fn apply(&mut self, changes: &[Change]) -> Result<(), InventoryError> {
        changes.iter().try_for_each(|c| self.apply_one(c))
    }

    pub fn apply_one(&mut self, change: &Change) -> Result<(), InventoryError> {
        match change {
            Change::Added { vertex } => self.upsert(vertex.clone()).map(drop),
            Change::Removed { id } => {
                if self.remove(id).is_empty() {
                    Err(InventoryError::NotFound(id.clone()))
                } else {
                    Ok(())
                }
            }
            Change::Moved { from, to } => self.move_guest(from, to),
            Change::Updated { vertex } => {
                if !self.contains(&vertex.id) {
                    return Err(InventoryError::NotFound(vertex.id.clone()));
                }
                self.upsert(vertex.clone()).map(drop)
            }
            Change::StatusChanged { id, to, .. } => self.update(id, |v| v.status = to.clone()),
            Change::Renamed { id, to, .. } => self.update(id, |v| v.name = to.clone()),
            Change::TagsChanged { id, to, .. } => self.update(id, |v| v.tags = to.clone()),
            Change::TemplateChanged { id, to, .. } => self.update(id, |v| v.template = *to),
            Change::ErrorChanged { id, to, .. } => self.update(id, |v| v.error = to.clone()),
        }
    }

    /// Moves a guest and its containers under another node of the same cluster.
    pub fn move_guest(&mut self, from: &PathId, to: &PathId) -> Result<(), InventoryError> {
        let invalid = || InventoryError::InvalidMove {
            from: from.clone(),
            to: to.clone(),
        };
        if from.guest_key().is_none() || from.guest_key() != to.guest_key() {
            return Err(invalid());
        }
        if !self.contains(from) {
            return Err(InventoryError::NotFound(from.clone()));
        }
        if self.contains(to) {
            return Err(InventoryError::AlreadyExists(to.clone()));
        }
        let parent = to.parent().ok_or_else(invalid)?;
        if !self.contains(&parent) {
            return Err(InventoryError::MissingParent {
                id: to.clone(),
                parent,
            });
        }
        for mut v in self.remove(from) {
            v.id = v.id.rebase(from, to).ok_or_else(invalid)?;
            self.upsert(v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathId {
        PathId::parse(s).unwrap()
    }

    fn inv(vertices: &[Vertex]) -> Inventory {
        Inventory::from_vertices(vertices.iter().cloned()).unwrap()
    }

    fn v(s: &str) -> Vertex {
        Vertex::new(p(s))
    }

    #[test]
    fn migration_is_one_move_carrying_containers() {
        let base = [v("cluster/h"), v("cluster/h/node/a"), v("cluster/h/node/b")];
        let mut before = base.to_vec();
        before.extend([
            v("cluster/h/node/a/lxc/101").with_status("running"),
            v("cluster/h/node/a/lxc/101/docker/web"),
            v("cluster/h/node/a/lxc/101/docker/old"),
        ]);
        let mut after = base.to_vec();
        after.extend([
            v("cluster/h/node/b/lxc/101").with_status("stopped"),
            v("cluster/h/node/b/lxc/101/docker/web"),
            v("cluster/h/node/b/lxc/101/docker/new"),
        ]);
        let (old, new) = (inv(&before), inv(&after));
        let changes = reconcile(&old, &new);
        let types: Vec<String> = changes.iter().map(Change::event_type).collect();
        assert_eq!(
            types,
            [
                "docker_removed",
                "guest_moved",
                "docker_added",
                "guest_status_changed"
            ]
        );
        assert_eq!(
            changes[1],
            Change::Moved {
                from: p("cluster/h/node/a/lxc/101"),
                to: p("cluster/h/node/b/lxc/101")
            }
        );
        assert_eq!(
            changes[0].subject(),
            &p("cluster/h/node/a/lxc/101/docker/old")
        );
        let mut replay = old.clone();
        replay.apply(&changes).unwrap();
        assert_eq!(replay, new);
        assert!(reconcile(&new, &new).is_empty());
    }

    #[test]
    fn json_shapes() {
        let moved = Change::Moved {
            from: p("cluster/h/node/a/lxc/101"),
            to: p("cluster/h/node/b/lxc/101"),
        };
        assert_eq!(
            serde_json::to_string(&moved).unwrap(),
            r#"{"type":"moved","from":"cluster/h/node/a/lxc/101","to":"cluster/h/node/b/lxc/101"}"#
        );
        let status = Change::StatusChanged {
            id: p("cluster/h/node/a"),
            from: Some("online".into()),
            to: None,
        };
        let json = serde_json::to_string(&status).unwrap();
        assert_eq!(
            json,
            r#"{"type":"status_changed","id":"cluster/h/node/a","from":"online","to":null}"#
        );
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), status);
        let added = Change::Added {
            vertex: v("cluster/h"),
        };
        assert_eq!(
            serde_json::to_string(&added).unwrap(),
            r#"{"type":"added","vertex":{"id":"cluster/h","kind":"cluster","name":"h"}}"#
        );
    }

    #[test]
    fn node_loss_reports_every_vertex_children_first() {
        let old = inv(&[
            v("cluster/h"),
            v("cluster/h/node/a"),
            v("cluster/h/node/a/vm/100"),
            v("cluster/h/node/a/vm/100/docker/x"),
        ]);
        let new = inv(&[v("cluster/h")]);
        let changes = reconcile(&old, &new);
        let subjects: Vec<&str> = changes.iter().map(|c| c.subject().as_str()).collect();
        assert_eq!(
            subjects,
            [
                "cluster/h/node/a/vm/100/docker/x",
                "cluster/h/node/a/vm/100",
                "cluster/h/node/a"
            ]
        );
        let mut replay = old.clone();
        replay.apply(&changes).unwrap();
        assert_eq!(replay, new);
    }

    #[test]
    fn facts_and_errors() {
        let old = inv(&[v("cluster/h"), v("cluster/h/node/a").with_status("online")]);
        let new = inv(&[
            v("cluster/h").with_os("x"),
            v("cluster/h/node/a")
                .with_status("offline")
                .with_error("unreachable"),
        ]);
        let types: Vec<String> = reconcile(&old, &new)
            .iter()
            .map(Change::event_type)
            .collect();
        assert_eq!(
            types,
            [
                "cluster_updated",
                "node_status_changed",
                "node_error_changed"
            ]
        );
    }

    #[test]
    fn apply_is_strict() {
        let mut i = inv(&[
            v("cluster/h"),
            v("cluster/h/node/a"),
            v("cluster/h/node/a/lxc/101"),
        ]);
        let gone = p("cluster/h/node/z");
        assert!(i.apply(&[Change::Removed { id: gone.clone() }]).is_err());
        assert!(i
            .apply(&[Change::Added {
                vertex: v("cluster/h/node/z/lxc/5000")
            }])
            .is_err());
        let bad_move = Change::Moved {
            from: p("cluster/h/node/a/lxc/101"),
            to: p("cluster/h/node/a/vm/101"),
        };
        assert!(matches!(
            i.apply(&[bad_move]),
            Err(InventoryError::InvalidMove { .. })
        ));
        let no_node = Change::Moved {
            from: p("cluster/h/node/a/lxc/101"),
            to: p("cluster/h/node/z/lxc/101"),
        };
        assert!(matches!(
            i.apply(&[no_node]),
            Err(InventoryError::MissingParent { .. })
        ));
    }
}
