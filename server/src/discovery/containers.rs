//! A guest's Docker containers in the tree (docs/design.md §3): children
//! `…/{lxc|vm}/{vmid}/docker/{name}` of the guest whose host reported them, each with its
//! state, its image reference (so `[image=nginx]` selects it) and one pending update when its
//! reference has an open image update. The guest's own counts leave image updates out, so a
//! subtree's rollup counts each container that would move once.

use canopy_api_types::docker::Container;
use canopy_api_types::HostId;
use canopy_inventory::{Counts, Inventory, Kind, PathId, Vertex};
use canopy_store::HostContainer;
use std::collections::{BTreeSet, HashMap};

/// What the tree shows of one host's Docker engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Docker {
    /// By name, as the store lists them.
    pub(super) containers: Vec<Container>,
    /// References with an open image update.
    pub(super) updates: BTreeSet<String>,
}

impl Docker {
    pub(super) fn new(
        containers: Vec<Container>,
        updates: impl IntoIterator<Item = String>,
    ) -> Self {
        Docker {
            containers,
            updates: updates.into_iter().collect(),
        }
    }

    /// Every host's, from the store's lists.
    pub(super) fn by_host(
        containers: Vec<HostContainer>,
        updates: Vec<(HostId, String)>,
    ) -> HashMap<HostId, Docker> {
        let mut out: HashMap<HostId, Docker> = HashMap::new();
        for c in containers {
            out.entry(c.host_id)
                .or_default()
                .containers
                .push(c.container);
        }
        for (h, reference) in updates {
            out.entry(h).or_default().updates.insert(reference);
        }
        out
    }

    /// Open image updates (each counted once in the host's own open updates).
    pub(super) fn pending(&self) -> u32 {
        u32::try_from(self.updates.len()).unwrap_or(u32::MAX)
    }
}

/// What changed under one guest when its containers were shown again.
#[derive(Debug, Default)]
pub(super) struct Shown {
    /// Containers added or removed: the guest's children changed.
    pub(super) reshaped: bool,
    /// Containers shown differently in place.
    pub(super) changed: Vec<PathId>,
}

/// Makes the docker children of `guest` those of `docker` (none without a host).
pub(super) fn show(inv: &mut Inventory, guest: &PathId, docker: Option<&Docker>) -> Shown {
    let mut shown = Shown::default();
    let want: Vec<Vertex> = docker
        .map(|d| {
            d.containers
                .iter()
                .filter_map(|c| vertex(guest, c, d.updates.contains(&c.image)))
                .collect()
        })
        .unwrap_or_default();
    let gone: Vec<PathId> = inv
        .children(guest)
        .filter(|v| v.kind == Kind::Docker && !want.iter().any(|w| w.id == v.id))
        .map(|v| v.id.clone())
        .collect();
    for id in gone {
        inv.remove(&id);
        shown.reshaped = true;
    }
    for v in want {
        let id = v.id.clone();
        match inv.upsert(v.clone()) {
            Ok(None) => shown.reshaped = true,
            Ok(Some(before)) if before != v => shown.changed.push(id),
            Ok(Some(_)) => {}
            Err(e) => tracing::warn!(container = %id, error = %e, "container not shown"),
        }
    }
    shown
}

fn vertex(guest: &PathId, c: &Container, update: bool) -> Option<Vertex> {
    let id = guest.docker(&c.name).ok()?;
    let mut v = Vertex::new(id)
        .with_status(c.state.clone())
        .with_image(c.image.clone());
    if c.health.as_deref() == Some("unhealthy") {
        v.error = Some("the container's healthcheck reports unhealthy".into());
    }
    v.counts = Counts {
        pending: u32::from(update),
        ..Counts::default()
    };
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            id: "0".repeat(64),
            image: image.into(),
            image_id: "sha256:1".into(),
            repo_digests: vec![],
            platform: "linux/amd64".into(),
            state: "running".into(),
            health: None,
            restart_policy: None,
            compose: None,
        }
    }

    #[test]
    fn containers_become_children_with_their_update_and_leave_with_their_host() {
        let guest = PathId::cluster("home")
            .unwrap()
            .node("pve1")
            .unwrap()
            .guest(Kind::Lxc, 101)
            .unwrap();
        let mut inv = Inventory::new();
        for id in [
            PathId::cluster("home").unwrap(),
            guest.parent().unwrap(),
            guest.clone(),
        ] {
            inv.upsert(Vertex::new(id)).unwrap();
        }
        let docker = Docker::new(
            vec![container("web", "nginx"), container("db", "postgres:16")],
            ["nginx".to_string()],
        );
        let shown = show(&mut inv, &guest, Some(&docker));
        assert!(shown.reshaped);
        let web = inv.get(&guest.docker("web").unwrap()).unwrap();
        assert_eq!(
            (web.image.as_deref(), web.counts.pending),
            (Some("nginx"), 1)
        );
        assert_eq!(
            inv.get(&guest.docker("db").unwrap())
                .unwrap()
                .counts
                .pending,
            0
        );
        let rollup = inv.rollups();
        assert_eq!(rollup[&guest].pending, 1);

        // The same again changes nothing; a state change is a change in place.
        let again = show(&mut inv, &guest, Some(&docker));
        assert!(!again.reshaped && again.changed.is_empty());
        let mut stopped = docker.clone();
        stopped.containers[1].state = "exited".into();
        let shown = show(&mut inv, &guest, Some(&stopped));
        assert_eq!(shown.changed, vec![guest.docker("db").unwrap()]);

        // No host any more: no containers.
        assert!(show(&mut inv, &guest, None).reshaped);
        assert_eq!(inv.children(&guest).count(), 0);
    }
}
