//! An update operation as the dashboard follows it: the server-sent events folded into the
//! operation (`snapshot`, `item`, `done`, as `GET /operations/{id}/events` sends them), the
//! plan as rows for the approval, and one line of progress.

use canopy_api_types::deploy::{ItemState, Operation, OperationItem, OperationState};
use canopy_inventory::Kind;

/// The selector an update of this vertex uses: a guest itself, or everything below a node or
/// cluster.
pub fn update_selector(kind: Kind, id: &str) -> String {
    if kind.is_guest() {
        id.to_string()
    } else {
        format!("{id}/**")
    }
}

/// Does `op` concern the vertex `id` (one of its guests is below it, or it was addressed at
/// or below it)? A node's and a cluster's detail list only these.
pub fn concerns(op: &Operation, id: &str) -> bool {
    let below =
        |path: &str| path == id || path.strip_prefix(id).is_some_and(|r| r.starts_with('/'));
    below(&op.selector)
        || op.items.iter().any(|i| below(&i.target))
        || op.skipped.iter().any(|s| below(&s.id))
}

/// Folds one server-sent event into `op`; `Ok(true)` when it was the last (`done`).
pub fn apply_event(op: &mut Option<Operation>, event: &str, data: &str) -> Result<bool, String> {
    let bad =
        |e: serde_json::Error| format!("the server sent a {event} event that does not read: {e}");
    match event {
        "snapshot" | "done" => {
            *op = Some(serde_json::from_str(data).map_err(bad)?);
            Ok(event == "done")
        }
        "item" => {
            let item: OperationItem = serde_json::from_str(data).map_err(bad)?;
            if let Some(op) = op {
                match op.items.iter_mut().find(|i| i.target == item.target) {
                    Some(slot) => *slot = item,
                    None => op.items.push(item),
                }
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// One guest of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    pub target: String,
    /// "openssl 3.0.1 → 3.0.2", "+ libfoo 1.2 (new)".
    pub packages: Vec<String>,
    pub left_out: Vec<String>,
    pub reboot: bool,
    pub snapshot: Option<String>,
    /// The item's state and step, or why it ended as it did.
    pub state: String,
}

pub fn plan_rows(op: &Operation) -> Vec<PlanRow> {
    op.items
        .iter()
        .map(|i| {
            let plan = i.update.as_ref().and_then(|u| u.plan.as_ref());
            let packages = plan
                .map(|p| {
                    p.packages
                        .iter()
                        .map(|pk| match &pk.from_version {
                            Some(from) => format!("{} {from} → {}", pk.package, pk.to_version),
                            None => format!("+ {} {} (new)", pk.package, pk.to_version),
                        })
                        .chain(p.removals.iter().map(|r| format!("− {r} (removed)")))
                        .collect()
                })
                .unwrap_or_default();
            let left_out = plan
                .map(|p| {
                    p.left_out
                        .iter()
                        .map(|l| format!("{} ({})", l.package, l.reason))
                        .collect()
                })
                .unwrap_or_default();
            let mut state = i.state.as_str().to_string();
            if let Some(step) = i.step.as_deref().filter(|_| i.state == ItemState::Running) {
                state = format!("{state}: {step}");
            }
            // The final result of a finished guest: installed, updated, rolled back…
            if let Some(o) = i.outcome.filter(|_| i.state.is_terminal()) {
                state = format!("{state}: {}", o.as_str().replace('_', " "));
            }
            if let Some(m) = &i.message {
                state = format!("{state} ({m})");
            }
            PlanRow {
                target: i.target.clone(),
                packages,
                left_out,
                reboot: plan.is_some_and(|p| p.reboot_required),
                snapshot: plan.and_then(|p| p.snapshot.clone()),
                state,
            }
        })
        .collect()
}

/// "running: 2 of 6 guests done, 1 failed".
pub fn progress_line(op: &Operation) -> String {
    let (queued, running, ok, failed) = op.tally();
    let total = op.items.len();
    let mut line = format!(
        "{}: {} of {total} guests done",
        op.state.as_str().replace('_', " "),
        ok + failed
    );
    if failed > 0 {
        line.push_str(&format!(", {failed} failed"));
    }
    if running > 0 {
        line.push_str(&format!(", {running} in progress"));
    }
    if queued > 0 && op.state == OperationState::Running {
        line.push_str(&format!(", {queued} waiting"));
    }
    if !op.skipped.is_empty() {
        line.push_str(&format!(" ({} skipped)", op.skipped.len()));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(state: &str, items: serde_json::Value) -> String {
        serde_json::json!({
            "id": "00000000-0000-0000-0000-0000000000aa", "action": "update",
            "selector": "cluster/lab/**", "state": state, "created_by": "admin",
            "created_at": "2026-01-01T00:00:00Z", "items": items,
            "skipped": [{"id": "cluster/lab/node/pve1/lxc/106", "reason": "stopped"}]
        })
        .to_string()
    }

    fn item(target: &str, state: &str, step: Option<&str>) -> serde_json::Value {
        serde_json::json!({
            "target": target, "node": "pve1", "vmid": 101, "route": "pct", "state": state,
            "step": step,
            "update": {"plan": {"packages": [
                {"package": "openssl", "from_version": "3.0.1", "to_version": "3.0.2", "requested": true},
                {"package": "libnew", "to_version": "1.0", "requested": false}
            ], "left_out": [{"package": "held-pkg", "reason": "held"}],
               "reboot_required": true, "fingerprint": "ab"}}
        })
    }

    #[test]
    fn events_fold_into_the_operation() {
        let mut o = None;
        let a = "cluster/lab/node/pve1/lxc/101";
        let snap = op("running", serde_json::json!([item(a, "queued", None)]));
        assert_eq!(apply_event(&mut o, "snapshot", &snap), Ok(false));
        let changed = item(a, "running", Some("install")).to_string();
        assert_eq!(apply_event(&mut o, "item", &changed), Ok(false));
        let rows = plan_rows(o.as_ref().unwrap());
        assert_eq!(rows[0].state, "running: install");
        assert_eq!(
            rows[0].packages,
            ["openssl 3.0.1 → 3.0.2", "+ libnew 1.0 (new)"]
        );
        assert_eq!(rows[0].left_out, ["held-pkg (held)"]);
        assert!(rows[0].reboot);
        assert_eq!(
            progress_line(o.as_ref().unwrap()),
            "running: 0 of 1 guests done, 1 in progress (1 skipped)"
        );
        let mut finished = item(a, "succeeded", None);
        finished["outcome"] = serde_json::json!("rolled_back");
        let done = op("succeeded", serde_json::json!([finished]));
        assert_eq!(apply_event(&mut o, "done", &done), Ok(true));
        assert_eq!(
            progress_line(o.as_ref().unwrap()),
            "succeeded: 1 of 1 guests done (1 skipped)"
        );
        assert_eq!(
            plan_rows(o.as_ref().unwrap())[0].state,
            "succeeded: rolled back"
        );
        assert!(apply_event(&mut o, "item", "{")
            .unwrap_err()
            .contains("item event"));
        assert_eq!(apply_event(&mut o, "ping", ""), Ok(false));
    }

    #[test]
    fn operations_belong_to_the_vertices_they_touched() {
        let a = "cluster/lab/node/pve1/lxc/101";
        let o: Operation =
            serde_json::from_str(&op("running", serde_json::json!([item(a, "queued", None)])))
                .unwrap();
        assert!(concerns(&o, "cluster/lab"));
        assert!(concerns(&o, "cluster/lab/node/pve1"));
        assert!(concerns(&o, a));
        assert!(!concerns(&o, "cluster/lab/node/pve2"));
        assert!(!concerns(&o, "cluster/la"));
        assert!(!concerns(&o, "cluster/lab/node/pve1/lxc/10"));
    }

    #[test]
    fn guests_are_updated_alone_and_the_rest_by_subtree() {
        assert_eq!(
            update_selector(Kind::Lxc, "cluster/c/node/n/lxc/1"),
            "cluster/c/node/n/lxc/1"
        );
        assert_eq!(
            update_selector(Kind::Node, "cluster/c/node/n"),
            "cluster/c/node/n/**"
        );
    }
}
