//! The tree as rows: which loaded vertices are visible given what is expanded, each with
//! its depth and place among its siblings, what a row shows (icon, status, rollup badges),
//! and what the arrow keys do (the WAI-ARIA tree pattern). Only visible rows are ever
//! built, so a collapsed node's guests cost nothing.

use super::loaded::Loaded;
use canopy_inventory::{Counts, Kind, TreeNode};
use std::collections::HashSet;
use std::rc::Rc;

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

/// One visible row: the vertex (its facts shared with [`Loaded`], so an unchanged row
/// compares equal) and its place in the tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub node: Rc<TreeNode>,
    /// The parent's position in the rows.
    pub parent: Option<usize>,
    /// 1 for the roots (aria-level).
    pub level: usize,
    /// How many siblings it has, itself included, and its place among them from 1
    /// (aria-setsize, aria-posinset).
    pub setsize: usize,
    pub posinset: usize,
    pub has_children: bool,
    pub expanded: bool,
    /// Expanded, its children still loading (aria-busy).
    pub busy: bool,
}

impl Row {
    pub fn id(&self) -> &str {
        self.node.id.as_str()
    }
}

/// What a row shows of its vertex.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFace {
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
}

/// The face of a vertex's row.
pub fn face(n: &TreeNode) -> RowFace {
    RowFace {
        label: label(n),
        status: n.status.clone(),
        tone: tone(n.kind, n.status.as_deref()),
        template: n.template.unwrap_or(false),
        tags: n.tags.clone().unwrap_or_default(),
        agent: n.agent.clone(),
        badges: badges(&n.rollup),
    }
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

/// The rows the tree shows, in order: every root, and the children of expanded vertices
/// (an expanded vertex whose children are not loaded yet is `busy`).
pub fn visible_rows(loaded: &Loaded, expanded: &HashSet<String>) -> Vec<Row> {
    fn walk(
        l: &Loaded,
        ids: &[String],
        parent: Option<usize>,
        level: usize,
        open: &HashSet<String>,
        out: &mut Vec<Row>,
    ) {
        let setsize = ids.len();
        for (i, id) in ids.iter().enumerate() {
            let Some(node) = l.get(id) else { continue };
            let has_children = l.has_children(id);
            let is_open = has_children && open.contains(id);
            let kids = l.children(id);
            let at = out.len();
            out.push(Row {
                node: node.clone(),
                parent,
                level,
                setsize,
                posinset: i + 1,
                has_children,
                expanded: is_open,
                busy: is_open && kids.is_none(),
            });
            if let (true, Some(kids)) = (is_open, kids) {
                walk(l, kids, Some(at), level + 1, open, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(loaded, loaded.roots(), None, 1, expanded, &mut out);
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
    let Some(i) = rows.iter().position(|r| r.id() == focused) else {
        return rows
            .first()
            .map_or(Nav::Nothing, |r| Nav::Focus(r.id().to_string()));
    };
    let row = &rows[i];
    let focus = |j: usize| {
        rows.get(j)
            .map_or(Nav::Nothing, |r| Nav::Focus(r.id().to_string()))
    };
    let id = || row.id().to_string();
    match key {
        "ArrowDown" => focus(i + 1),
        "ArrowUp" if i > 0 => focus(i - 1),
        "Home" => focus(0),
        "End" => focus(rows.len().saturating_sub(1)),
        "ArrowRight" if row.has_children && !row.expanded => Nav::Expand(id()),
        "ArrowRight" if row.expanded && !row.busy => focus(i + 1),
        "ArrowLeft" if row.expanded => Nav::Collapse(id()),
        "ArrowLeft" => row.parent.map_or(Nav::Nothing, focus),
        "Enter" | " " => Nav::Select(id()),
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

    /// `forest` loaded whole.
    fn loaded(forest: Vec<TreeNode>) -> Loaded {
        let mut l = Loaded::default();
        l.set_roots(forest);
        l
    }

    fn ids(rows: &[Row]) -> Vec<&str> {
        rows.iter().map(Row::id).collect()
    }

    fn open(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn collapsed_vertices_hide_their_subtree() {
        let rows = visible_rows(&loaded(forest()), &open(&[]));
        assert_eq!(rows.len(), 1);
        assert!(rows[0].has_children && !rows[0].expanded);
        let rows = visible_rows(
            &loaded(forest()),
            &open(&["cluster/home", "cluster/home/node/pve1"]),
        );
        assert_eq!(
            ids(&rows),
            [
                "cluster/home",
                "cluster/home/node/pve1",
                "cluster/home/node/pve1/lxc/101",
                "cluster/home/node/pve1/vm/200",
                "cluster/home/node/pve2"
            ]
        );
        assert_eq!(rows[2].level, 3);
        assert_eq!((rows[2].posinset, rows[2].setsize), (1, 2));
        assert_eq!((rows[4].posinset, rows[4].setsize), (2, 2));
        assert_eq!(face(&rows[2].node).label, "101 web");
        assert_eq!(face(&rows[3].node).label, "200");
        assert!(face(&rows[3].node).template);
        assert_eq!(face(&rows[2].node).tags, ["prod"]);
        assert_eq!(face(&rows[4].node).tone, "bad");
        assert_eq!(face(&rows[2].node).tone, "ok");
    }

    #[test]
    fn badges_say_what_they_count_most_urgent_first() {
        let rows = visible_rows(&loaded(forest()), &open(&[]));
        let b = &face(&rows[0].node).badges;
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
        let f = loaded(forest());
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
    fn an_expanded_vertex_whose_children_load_is_busy() {
        let l = loaded(
            serde_json::from_value(serde_json::json!([{
                "id": "cluster/home", "kind": "cluster", "name": "home", "children": [
                    {"id": "cluster/home/node/pve1", "kind": "node", "name": "pve1",
                     "child_count": 2, "children": []}
                ]
            }]))
            .unwrap(),
        );
        let rows = visible_rows(&l, &open(&["cluster/home", "cluster/home/node/pve1"]));
        assert_eq!(ids(&rows), ["cluster/home", "cluster/home/node/pve1"]);
        assert!(rows[1].has_children && rows[1].expanded && rows[1].busy);
        assert!(!rows[0].busy);
        assert_eq!((rows[1].posinset, rows[1].setsize), (1, 1));
        assert_eq!(
            key(&rows, "cluster/home/node/pve1", "ArrowRight"),
            Nav::Nothing
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
