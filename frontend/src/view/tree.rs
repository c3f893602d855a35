//! The tree as rows: which vertices are visible given what is expanded, each with its
//! depth, icon, status and rollup badges, and what the arrow keys do (the WAI-ARIA tree
//! pattern). Only visible rows are ever built, so a collapsed node's guests cost nothing.

use canopy_inventory::{Counts, Kind, TreeNode};
use std::collections::HashSet;

/// One badge on a row: what it counts, how many, and how it reads aloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Badge {
    /// CSS class suffix (`badge-security`).
    pub class: &'static str,
    pub count: u32,
    /// What the badge reads after its count: "sec", "upd", "no agent"…
    pub short: &'static str,
    /// "3 security updates" (the badge's title and aria-label).
    pub label: String,
}

/// The rollup badges of a vertex, most urgent first; zero counts are left out.
pub fn badges(rollup: &Counts) -> Vec<Badge> {
    let items: [(&'static str, u32, &'static str, &str, &str); 7] = [
        (
            "failed",
            rollup.failed_ops,
            "failed",
            "failed operation",
            "failed operations",
        ),
        (
            "security",
            rollup.security,
            "sec",
            "security update",
            "security updates",
        ),
        (
            "pending",
            rollup.pending,
            "upd",
            "pending update",
            "pending updates",
        ),
        (
            "reboot",
            rollup.reboot_required,
            "reboot",
            "reboot required",
            "reboots required",
        ),
        (
            "offline",
            rollup.agents_offline,
            "offline",
            "agent offline",
            "agents offline",
        ),
        (
            "missing",
            rollup.agents_missing,
            "no agent",
            "agent missing",
            "agents missing",
        ),
        (
            "running",
            rollup.running_ops,
            "running",
            "operation running",
            "operations running",
        ),
    ];
    items
        .into_iter()
        .filter(|(_, n, _, _, _)| *n > 0)
        .map(|(class, count, short, one, many)| Badge {
            class,
            count,
            short,
            label: format!("{count} {}", if count == 1 { one } else { many }),
        })
        .collect()
}

/// What a row shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub parent: Option<String>,
    /// 1 for clusters (aria-level).
    pub level: usize,
    pub kind: Kind,
    /// "101 web" for guests, the name otherwise.
    pub label: String,
    /// running, stopped, online, offline, unknown…
    pub status: Option<String>,
    /// The CSS class of the status dot: `ok`, `off`, `bad`, `none`.
    pub tone: &'static str,
    pub template: bool,
    pub tags: Vec<String>,
    /// online | offline | agentless | missing, on guests.
    pub agent: Option<String>,
    pub badges: Vec<Badge>,
    pub has_children: bool,
    pub expanded: bool,
}

/// The status dot's tone.
pub fn tone(kind: Kind, status: Option<&str>) -> &'static str {
    match (kind, status) {
        (_, Some("running" | "online")) => "ok",
        (_, Some("stopped")) => "off",
        (_, Some("offline" | "unknown")) => "bad",
        (Kind::Cluster, _) | (_, None) => "none",
        _ => "off",
    }
}

fn label(n: &TreeNode) -> String {
    match n.vmid {
        Some(vmid) if n.name.is_empty() || n.name == vmid.to_string() => vmid.to_string(),
        Some(vmid) => format!("{vmid} {}", n.name),
        None => n.name.clone(),
    }
}

/// The rows the tree shows, in order: every root, and the children of expanded vertices.
pub fn visible_rows(forest: &[TreeNode], expanded: &HashSet<String>) -> Vec<Row> {
    fn walk(
        n: &TreeNode,
        parent: Option<&str>,
        level: usize,
        open: &HashSet<String>,
        out: &mut Vec<Row>,
    ) {
        let id = n.id.as_str();
        let is_open = !n.children.is_empty() && open.contains(id);
        out.push(Row {
            id: id.to_string(),
            parent: parent.map(String::from),
            level,
            kind: n.kind,
            label: label(n),
            status: n.status.clone(),
            tone: tone(n.kind, n.status.as_deref()),
            template: n.template.unwrap_or(false),
            tags: n.tags.clone().unwrap_or_default(),
            agent: n.agent.clone(),
            badges: badges(&n.rollup),
            has_children: !n.children.is_empty(),
            expanded: is_open,
        });
        if is_open {
            for c in &n.children {
                walk(c, Some(id), level + 1, open, out);
            }
        }
    }
    let mut out = Vec::new();
    for root in forest {
        walk(root, None, 1, expanded, &mut out);
    }
    out
}

/// Finds a vertex by path id in the forest.
pub fn find<'a>(forest: &'a [TreeNode], id: &str) -> Option<&'a TreeNode> {
    forest.iter().find_map(|n| {
        if n.id.as_str() == id {
            Some(n)
        } else if id
            .strip_prefix(n.id.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
        {
            find(&n.children, id)
        } else {
            None
        }
    })
}

/// The ancestors of `id` (`cluster/c`, `cluster/c/node/n` for a guest): what to expand so
/// that it is visible.
pub fn ancestors(id: &str) -> Vec<String> {
    let segs: Vec<&str> = id.split('/').collect();
    (2..segs.len())
        .step_by(2)
        .map(|n| segs[..n].join("/"))
        .collect()
}

/// The height of one row in pixels (`.row` in style.css).
pub const ROW_PX: u32 = 26;
/// Below this many visible rows every row is in the page; above, only a window of them.
pub const VIRTUAL_FROM: usize = 300;
/// Rows kept in the page above and below what the viewport shows.
const OVERSCAN: u32 = 20;

/// The rows `[start, end)` to put in the page for a viewport `height` pixels high scrolled to
/// `scroll_top`, out of `len`; everything when `len` is small.
pub fn window(len: usize, scroll_top: u32, height: u32) -> (usize, usize) {
    if len < VIRTUAL_FROM {
        return (0, len);
    }
    let first = (scroll_top / ROW_PX).saturating_sub(OVERSCAN) as usize;
    let last = ((scroll_top + height.max(ROW_PX)) / ROW_PX + 1 + OVERSCAN) as usize;
    (first.min(len), last.min(len))
}

/// The `scroll_top` that shows row `i` when it is outside `[scroll_top, scroll_top + height)`.
pub fn scroll_to(i: usize, scroll_top: u32, height: u32) -> Option<u32> {
    let top = i as u32 * ROW_PX;
    if top < scroll_top {
        Some(top)
    } else if top + ROW_PX > scroll_top + height {
        Some((top + ROW_PX).saturating_sub(height))
    } else {
        None
    }
}

/// What a key does on the focused row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nav {
    /// Move focus to this row.
    Focus(String),
    Expand(String),
    Collapse(String),
    /// Select (open the detail of) this row.
    Select(String),
    Nothing,
}

/// The tree keyboard pattern: ↓/↑ next/previous row, → expands or goes to the first child,
/// ← collapses or goes to the parent, Home/End the first/last row, Enter/Space selects.
pub fn key(rows: &[Row], focused: &str, key: &str) -> Nav {
    let Some(i) = rows.iter().position(|r| r.id == focused) else {
        return rows
            .first()
            .map_or(Nav::Nothing, |r| Nav::Focus(r.id.clone()));
    };
    let row = &rows[i];
    let focus = |j: usize| {
        rows.get(j)
            .map_or(Nav::Nothing, |r| Nav::Focus(r.id.clone()))
    };
    match key {
        "ArrowDown" => focus(i + 1),
        "ArrowUp" if i > 0 => focus(i - 1),
        "Home" => focus(0),
        "End" => focus(rows.len().saturating_sub(1)),
        "ArrowRight" if row.has_children && !row.expanded => Nav::Expand(row.id.clone()),
        "ArrowRight" if row.expanded => focus(i + 1),
        "ArrowLeft" if row.expanded => Nav::Collapse(row.id.clone()),
        "ArrowLeft" => row.parent.clone().map_or(Nav::Nothing, Nav::Focus),
        "Enter" | " " => Nav::Select(row.id.clone()),
        _ => Nav::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forest() -> Vec<TreeNode> {
        serde_json::from_value(serde_json::json!([{
            "id": "cluster/home", "kind": "cluster", "name": "home",
            "rollup": {"pending": 5, "security": 2, "agents_missing": 1},
            "children": [
                {"id": "cluster/home/node/pve1", "kind": "node", "name": "pve1", "status": "online",
                 "rollup": {"pending": 5, "security": 2},
                 "children": [
                    {"id": "cluster/home/node/pve1/lxc/101", "kind": "lxc", "vmid": 101,
                     "name": "web", "status": "running", "template": false, "tags": ["prod"],
                     "agent": "online", "counts": {"pending": 5, "security": 2},
                     "rollup": {"pending": 5, "security": 2}, "children": []},
                    {"id": "cluster/home/node/pve1/vm/200", "kind": "vm", "vmid": 200,
                     "name": "", "status": "stopped", "template": true, "tags": [], "children": []}
                 ]},
                {"id": "cluster/home/node/pve2", "kind": "node", "name": "pve2", "status": "offline",
                 "rollup": {"agents_missing": 1},
                 "children": [
                    {"id": "cluster/home/node/pve2/lxc/102", "kind": "lxc", "vmid": 102,
                     "name": "db", "status": "unknown", "template": false, "tags": [],
                     "agent": "missing", "counts": {"agents_missing": 1},
                     "rollup": {"agents_missing": 1}, "children": []}
                 ]}
            ]
        }]))
        .unwrap()
    }

    fn open(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn collapsed_vertices_hide_their_subtree() {
        let rows = visible_rows(&forest(), &open(&[]));
        assert_eq!(rows.len(), 1);
        assert!(rows[0].has_children && !rows[0].expanded);
        let rows = visible_rows(
            &forest(),
            &open(&["cluster/home", "cluster/home/node/pve1"]),
        );
        let ids: Vec<_> = rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "cluster/home",
                "cluster/home/node/pve1",
                "cluster/home/node/pve1/lxc/101",
                "cluster/home/node/pve1/vm/200",
                "cluster/home/node/pve2"
            ]
        );
        assert_eq!(rows[2].level, 3);
        assert_eq!(rows[2].label, "101 web");
        assert_eq!(rows[3].label, "200");
        assert!(rows[3].template);
        assert_eq!(rows[2].tags, ["prod"]);
        assert_eq!(rows[4].tone, "bad");
        assert_eq!(rows[2].tone, "ok");
    }

    #[test]
    fn badges_say_what_they_count_most_urgent_first() {
        let rows = visible_rows(&forest(), &open(&[]));
        let b = &rows[0].badges;
        assert_eq!(
            b.iter().map(|b| b.class).collect::<Vec<_>>(),
            ["security", "pending", "missing"]
        );
        assert_eq!(b[0].label, "2 security updates");
        assert_eq!(b[0].short, "sec");
        assert_eq!(b[2].label, "1 agent missing");
        assert!(badges(&Counts::default()).is_empty());
    }

    #[test]
    fn arrow_keys_follow_the_tree_pattern() {
        let f = forest();
        let closed = visible_rows(&f, &open(&[]));
        assert_eq!(
            key(&closed, "cluster/home", "ArrowRight"),
            Nav::Expand("cluster/home".into())
        );
        let rows = visible_rows(&f, &open(&["cluster/home"]));
        assert_eq!(
            key(&rows, "cluster/home", "ArrowRight"),
            Nav::Focus("cluster/home/node/pve1".into())
        );
        assert_eq!(
            key(&rows, "cluster/home", "ArrowLeft"),
            Nav::Collapse("cluster/home".into())
        );
        assert_eq!(
            key(&rows, "cluster/home/node/pve1", "ArrowLeft"),
            Nav::Focus("cluster/home".into())
        );
        assert_eq!(
            key(&rows, "cluster/home/node/pve1", "ArrowDown"),
            Nav::Focus("cluster/home/node/pve2".into())
        );
        assert_eq!(
            key(&rows, "cluster/home/node/pve2", "ArrowDown"),
            Nav::Nothing
        );
        assert_eq!(key(&rows, "cluster/home", "ArrowUp"), Nav::Nothing);
        assert_eq!(
            key(&rows, "cluster/home/node/pve2", "Home"),
            Nav::Focus("cluster/home".into())
        );
        assert_eq!(
            key(&rows, "cluster/home", "End"),
            Nav::Focus("cluster/home/node/pve2".into())
        );
        assert_eq!(
            key(&rows, "cluster/home/node/pve2", "Enter"),
            Nav::Select("cluster/home/node/pve2".into())
        );
        assert_eq!(
            key(&rows, "gone", "ArrowDown"),
            Nav::Focus("cluster/home".into())
        );
    }

    #[test]
    fn only_a_window_of_a_long_tree_is_in_the_page() {
        assert_eq!(window(100, 5000, 800), (0, 100), "short trees whole");
        let (a, b) = window(5000, 0, 780);
        assert_eq!(a, 0);
        assert!(b > 780 / ROW_PX as usize && b < 100, "{b}");
        let (a, b) = window(5000, 26 * 1000, 780);
        assert!(a < 1000 && a > 900 && b > 1030 && b < 1100, "{a} {b}");
        assert_eq!(window(5000, 26 * 6000, 780).1, 5000);
        assert_eq!(scroll_to(10, 0, 780), None);
        assert_eq!(scroll_to(100, 0, 780), Some(101 * 26 - 780));
        assert_eq!(scroll_to(5, 26 * 50, 780), Some(26 * 5));
    }

    #[test]
    fn a_guest_is_found_and_its_ancestors_named() {
        let f = forest();
        assert_eq!(
            find(&f, "cluster/home/node/pve2/lxc/102").unwrap().name,
            "db"
        );
        assert!(find(&f, "cluster/home/node/pve9").is_none());
        assert_eq!(
            ancestors("cluster/home/node/pve1/lxc/101"),
            ["cluster/home", "cluster/home/node/pve1"]
        );
        assert!(ancestors("cluster/home").is_empty());
    }
}
