//! What the detail pane shows for a vertex: its facts, its agent in words, its updates
//! and history as rows, the selector preview's line.

use canopy_api_types::clusters::SelectorPreview;
use canopy_api_types::hosts::Event;
use canopy_api_types::updates::{Severity, Update, UpdateStatus};
use canopy_inventory::{Kind, TreeNode};

/// The agent of a guest, in words.
pub fn agent_text(agent: Option<&str>, user: Option<&str>) -> String {
    match (agent, user) {
        (Some("online"), Some(u)) => format!("online, runs as {u}"),
        (Some("online"), None) => "online".into(),
        (Some("offline"), _) => "offline: the agent has not checked in lately".into(),
        (Some("agentless"), _) => "agentless: scanned over SSH through its node".into(),
        (Some("missing"), _) | (None, _) => "missing: no agent deployed".into(),
        (Some(other), _) => other.into(),
    }
}

/// `(label, value)` lines about a vertex, in the order shown.
pub fn facts(n: &TreeNode) -> Vec<(&'static str, String)> {
    let mut out = vec![("Kind", kind_name(n.kind).to_string())];
    if let Some(vmid) = n.vmid {
        out.push(("VMID", vmid.to_string()));
    }
    if let Some(s) = &n.status {
        out.push(("Status", s.clone()));
    }
    if n.template == Some(true) {
        out.push(("Template", "yes (never targeted)".into()));
    }
    if let Some(os) = &n.os {
        out.push(("OS", os.clone()));
    }
    if let Some(image) = &n.image {
        out.push(("Image", image.clone()));
        let update = if n.counts.pending > 0 {
            "a newer image is in the registry: update it with its guest's plan"
        } else {
            "none known (as of the last registry check)"
        };
        out.push(("Image update", update.into()));
    }
    if n.kind.is_guest() {
        out.push((
            "Agent",
            agent_text(n.agent.as_deref(), n.agent_user.as_deref()),
        ));
    }
    if let Some(tags) = n.tags.as_ref().filter(|t| !t.is_empty()) {
        out.push(("Tags", tags.join(", ")));
    }
    if let Some(e) = &n.error {
        out.push(("Error", e.clone()));
    }
    out
}

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Cluster => "cluster",
        Kind::Node => "node",
        Kind::Lxc => "LXC container",
        Kind::Vm => "virtual machine",
        Kind::Docker => "Docker container",
    }
}

/// One update as a row of the guest's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateRow {
    pub package: String,
    pub versions: String,
    pub severity: &'static str,
    /// `pending`, `held`, `installing`…
    pub state: String,
}

pub fn update_row(u: &Update) -> UpdateRow {
    let state = if u.held && u.status == UpdateStatus::Pending {
        "held".to_string()
    } else {
        status_name(u.status).to_string()
    };
    UpdateRow {
        package: u.package.clone(),
        versions: format!("{} → {}", u.current_version, u.available_version),
        severity: match u.severity {
            Severity::Security => "security",
            Severity::Important => "important",
            Severity::Normal => "normal",
            Severity::Low => "low",
        },
        state,
    }
}

fn status_name(s: UpdateStatus) -> &'static str {
    match s {
        UpdateStatus::Pending => "pending",
        UpdateStatus::Approved => "approved",
        UpdateStatus::Rejected => "rejected",
        UpdateStatus::DryRun => "dry-run",
        UpdateStatus::AwaitingConfirmation => "awaiting confirmation",
        UpdateStatus::Installing => "installing",
        UpdateStatus::Installed => "installed",
        UpdateStatus::Failed => "failed",
        UpdateStatus::Reconciled => "no longer offered",
    }
}

/// "Page 2 of 5 (412 updates)".
pub fn page_line(page: u32, per_page: u32, total: u64) -> String {
    let pages = total.div_ceil(u64::from(per_page.max(1))).max(1);
    let noun = if total == 1 { "update" } else { "updates" };
    format!("Page {page} of {pages} ({total} {noun})")
}

/// One history line: when, what, who.
pub fn event_line(e: &Event) -> (String, String, String) {
    (
        e.ts.format("%Y-%m-%d %H:%M").to_string(),
        e.event_type.replace(['.', '_'], " "),
        e.actor.clone(),
    )
}

/// What the filter box says under itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewLine {
    Empty,
    Checking,
    Resolves(String),
    Invalid(String),
}

pub fn preview_line(selector: &str, answer: Option<Result<&SelectorPreview, &str>>) -> PreviewLine {
    if selector.trim().is_empty() {
        return PreviewLine::Empty;
    }
    match answer {
        None => PreviewLine::Checking,
        Some(Ok(p)) => PreviewLine::Resolves(p.summary.clone()),
        Some(Err(e)) => PreviewLine::Invalid(e.strip_prefix("selector: ").unwrap_or(e).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(held: bool, status: UpdateStatus) -> Update {
        serde_json::from_value(serde_json::json!({
            "id": "00000000-0000-0000-0000-000000000001",
            "host_id": "00000000-0000-0000-0000-000000000002",
            "hostname": "web", "manager": "apt", "package": "openssl",
            "current_version": "3.0.1", "available_version": "3.0.2",
            "severity": "security", "held": held, "status": status,
            "first_seen": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn updates_read_as_rows_with_held_shown() {
        let r = update_row(&update(false, UpdateStatus::Pending));
        assert_eq!(r.versions, "3.0.1 → 3.0.2");
        assert_eq!(r.severity, "security");
        assert_eq!(r.state, "pending");
        assert_eq!(
            update_row(&update(true, UpdateStatus::Pending)).state,
            "held"
        );
        assert_eq!(
            update_row(&update(true, UpdateStatus::AwaitingConfirmation)).state,
            "awaiting confirmation"
        );
    }

    #[test]
    fn guests_say_how_their_agent_is() {
        let g: TreeNode = serde_json::from_value(serde_json::json!({
            "id": "cluster/c/node/n/lxc/101", "kind": "lxc", "vmid": 101, "name": "web",
            "status": "running", "template": false, "tags": ["a", "b"], "os": "debian",
            "agent": "online", "agent_user": "canopy-agent", "children": []
        }))
        .unwrap();
        let f = facts(&g);
        assert!(f.contains(&("Agent", "online, runs as canopy-agent".into())));
        assert!(f.contains(&("Tags", "a, b".into())));
        assert!(f.contains(&("VMID", "101".into())));
        assert_eq!(agent_text(None, None), "missing: no agent deployed");
        assert!(agent_text(Some("agentless"), None).starts_with("agentless"));
    }

    #[test]
    fn containers_name_their_image_and_its_update() {
        let c: TreeNode = serde_json::from_value(serde_json::json!({
            "id": "cluster/c/node/n/lxc/101/docker/web", "kind": "docker", "name": "web",
            "status": "running", "image": "nginx:1", "counts": {"pending": 1}, "children": []
        }))
        .unwrap();
        let f = facts(&c);
        assert!(f.contains(&("Kind", "Docker container".into())));
        assert!(f.contains(&("Image", "nginx:1".into())));
        assert!(f
            .iter()
            .any(|(k, v)| *k == "Image update" && v.starts_with("a newer image")));
        assert!(!f.iter().any(|(k, _)| *k == "Agent"));
    }

    #[test]
    fn pages_and_previews_in_words() {
        assert_eq!(page_line(2, 100, 412), "Page 2 of 5 (412 updates)");
        assert_eq!(page_line(1, 100, 0), "Page 1 of 1 (0 updates)");
        assert_eq!(preview_line("  ", None), PreviewLine::Empty);
        assert_eq!(preview_line("x", None), PreviewLine::Checking);
        assert_eq!(
            preview_line("x[", Some(Err("selector: unclosed ["))),
            PreviewLine::Invalid("unclosed [".into())
        );
        let p = SelectorPreview {
            selector: "**".into(),
            matched: 3,
            targets: vec![],
            skipped: vec![],
            summary: "resolves to 2 hosts (1 template skipped)".into(),
        };
        assert_eq!(
            preview_line("**", Some(Ok(&p))),
            PreviewLine::Resolves("resolves to 2 hosts (1 template skipped)".into())
        );
    }
}
