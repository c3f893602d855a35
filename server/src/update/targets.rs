//! Which guests an update operation works on (docs/design.md §2.6): the selector resolved
//! against the tree, guests without an online agent skipped with the reason, a selected
//! container standing for its guest restricted to that container's image, and the canaries.

use crate::discovery::Discovery;
use crate::error::{Error, Result};
use canopy_api_types::bulk::{Canary, UpdateItemDetail, UpdateRequest};
use canopy_api_types::clusters::SkippedTarget;
use canopy_api_types::deploy::{OperationItem, Route};
use canopy_inventory::{Kind, PathId, Selector};
use std::collections::{HashMap, HashSet};

pub(super) struct Targets {
    pub items: Vec<OperationItem>,
    pub skipped: Vec<SkippedTarget>,
}

/// The guests `req.selector` resolves to that an update can work on, and the others with
/// the reason.
pub(super) fn targets(discovery: &Discovery, req: &UpdateRequest) -> Result<Targets> {
    let sel =
        Selector::parse(&req.selector).map_err(|e| Error::Validation(format!("selector: {e}")))?;
    let inv = discovery.tree();
    let resolved = inv.targets(&sel);
    let mut skipped = crate::http::clusters::skipped(&resolved);
    for s in &mut skipped {
        if s.reason == "stopped" {
            s.reason = "stopped (it is never started for an update)".into();
        }
    }
    // A container selected stands for its guest, restricted to the containers' images
    // (unless the guest is selected itself).
    let mut guests: Vec<PathId> = Vec::new();
    let mut images_only: HashMap<PathId, Vec<String>> = HashMap::new();
    let mut whole: HashSet<PathId> = HashSet::new();
    for path in &resolved.hosts {
        let guest = if path.kind() == Kind::Docker {
            let Some(g) = path.parent() else { continue };
            if let Some(image) = inv.get(path).and_then(|v| v.image.clone()) {
                images_only.entry(g.clone()).or_default().push(image);
            }
            g
        } else {
            whole.insert(path.clone());
            path.clone()
        };
        if !guests.contains(&guest) {
            guests.push(guest);
        }
    }
    let mut items = Vec::new();
    for path in &guests {
        let (Some(node), Some(vmid)) = (path.node_name(), path.vmid()) else {
            continue;
        };
        let Some(v) = inv.get(path) else { continue };
        let why = match (v.agent.as_deref(), v.host_id.as_deref()) {
            (Some("online"), Some(_)) => None,
            (Some("offline"), _) => Some("agent offline".to_string()),
            (Some("agentless"), _) => Some(
                "agent missing (scanned agentless): deploy it with canopy agent deploy".to_string(),
            ),
            _ => Some("agent missing: deploy it with canopy agent deploy".to_string()),
        };
        if let Some(reason) = why {
            skipped.push(SkippedTarget {
                id: path.to_string(),
                reason,
            });
            continue;
        }
        let route = if path.kind() == Kind::Lxc {
            Route::Pct
        } else {
            Route::Ssh
        };
        let mut item = OperationItem::queued(
            path.to_string(),
            discovery.guest_id(path),
            node,
            vmid,
            route,
        );
        item.host_id = v.host_id.as_deref().and_then(|h| h.parse().ok());
        let mut only = if whole.contains(path) {
            Vec::new()
        } else {
            images_only.remove(path).unwrap_or_default()
        };
        only.sort();
        only.dedup();
        item.update = Some(UpdateItemDetail {
            host_id: item.host_id,
            images_only: only,
            ..Default::default()
        });
        items.push(item);
    }
    if items.is_empty() && skipped.is_empty() {
        return Err(Error::Validation(format!(
            "selector '{}' matches no guest",
            req.selector
        )));
    }
    Ok(Targets { items, skipped })
}

/// Marks the canaries: the named ones, else the first `count` guests.
pub(super) fn mark_canaries(items: &mut [OperationItem], canary: &Canary) -> Result<()> {
    if canary.targets.is_empty() {
        for item in items.iter_mut().take(canary.count as usize) {
            if let Some(d) = item.update.as_mut() {
                d.canary = true;
            }
        }
    } else {
        for name in &canary.targets {
            let hit = items
                .iter_mut()
                .find(|i| &i.target == name || i.vmid.to_string() == *name);
            match hit {
                Some(i) => {
                    if let Some(d) = i.update.as_mut() {
                        d.canary = true;
                    }
                }
                None => {
                    return Err(Error::Validation(format!(
                        "canary {name} is not one of the guests this operation updates"
                    )))
                }
            }
        }
    }
    Ok(())
}
