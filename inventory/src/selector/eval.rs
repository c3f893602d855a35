//! Resolving a selector against the tree in one walk. The union's globs are compiled into one
//! NFA whose states are bits of a `u128` (positions in the globs); each vertex adds two path
//! segments (kind word, name), so a child's state is two steps from its parent's. The walk
//! scans the inventory's pre-order snapshot ([`crate::flat`]): an empty state skips the whole
//! subtree in one jump, and a level where every live position is a literal pair is reached
//! by hash lookup. Children are visited in tree order, so results come out sorted.

use super::filter::Bound;
use super::{Segment, Selector, Term};
use crate::flat::{Entry, Flat};
use crate::graph::{Inventory, Slot};
use crate::model::Vertex;
use crate::path::{Kind, PathId};
use petgraph::stable_graph::NodeIndex;
use std::ops::Range;

#[derive(Debug, Clone)]
pub(crate) struct Program {
    /// One entry per position; `None` at each term's final position.
    pats: Vec<Option<Segment>>,
    /// Positions holding `**`.
    any_depth: u128,
    /// Each term's final position.
    finals: u128,
    start: u128,
    /// For a final position, its term's index.
    term_of: Vec<u8>,
    /// Per kind (in `Kind::ALL` order): positions whose segment matches that kind's word.
    kind_match: [u128; 5],
    /// Positions holding a lone `*` (match any segment without looking at it).
    any_one: u128,
    /// Positions whose match depends on the name (literals and patterns other than `*`).
    by_name: u128,
    /// Positions holding a literal.
    literal: u128,
}

impl Program {
    pub(crate) fn new(terms: &[Term]) -> Program {
        let mut p = Program {
            pats: Vec::new(),
            any_depth: 0,
            finals: 0,
            start: 0,
            term_of: Vec::new(),
            kind_match: [0; 5],
            any_one: 0,
            by_name: 0,
            literal: 0,
        };
        for (t, term) in terms.iter().enumerate() {
            p.start |= 1 << p.pats.len();
            for seg in &term.glob {
                let bit = 1u128 << p.pats.len();
                match seg {
                    Segment::AnyDepth => p.any_depth |= bit,
                    Segment::Pattern(s) if s == "*" => p.any_one |= bit,
                    Segment::Literal(_) | Segment::Pattern(_) => {
                        p.by_name |= bit;
                        if matches!(seg, Segment::Literal(_)) {
                            p.literal |= bit;
                        }
                        for (k, kind) in Kind::ALL.into_iter().enumerate() {
                            if seg_matches(seg, kind.as_str()) {
                                p.kind_match[k] |= bit;
                            }
                        }
                    }
                }
                p.pats.push(Some(seg.clone()));
                p.term_of.push(0);
            }
            p.finals |= 1 << p.pats.len();
            p.pats.push(None);
            p.term_of.push(t as u8);
        }
        p.start = p.closure(p.start);
        p
    }

    /// Adds the positions reachable by letting `**` match nothing.
    fn closure(&self, mut s: u128) -> u128 {
        loop {
            let add = ((s & self.any_depth) << 1) & !s;
            if add == 0 {
                return s;
            }
            s |= add;
        }
    }

    fn step(&self, state: u128, seg: &str) -> u128 {
        let mut bits = state & !self.finals;
        let mut next = 0u128;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            match &self.pats[i] {
                Some(Segment::AnyDepth) => next |= 1 << i,
                Some(p) if seg_matches(p, seg) => next |= 1 << (i + 1),
                _ => {}
            }
        }
        self.closure(next)
    }

    /// The state after a vertex's (kind word, name) pair: `step` twice, but the kind word is
    /// matched from a precomputed table and the name is only read when a live position needs
    /// it (so `**` and `*` walk without touching names).
    /// Also says whether the name was needed (if not, the result holds for any sibling of
    /// the same kind).
    fn child_state<'n>(
        &self,
        state: u128,
        kind: Kind,
        name: impl FnOnce() -> &'n str,
    ) -> (u128, bool) {
        let live = state & !self.finals;
        let moved = live & (self.kind_match[kind as usize] | self.any_one);
        let after_word = self.closure((moved << 1) | (live & self.any_depth)) & !self.finals;
        if after_word == 0 {
            return (0, false);
        }
        let mut next = ((after_word & self.any_one) << 1) | (after_word & self.any_depth);
        let mut bits = after_word & self.by_name;
        let by_name = bits != 0;
        if by_name {
            let name = name();
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if self.pats[i].as_ref().is_some_and(|p| seg_matches(p, name)) {
                    next |= 1 << (i + 1);
                }
            }
        }
        (self.closure(next), by_name)
    }

    /// Bit `t` set for each term `t` whose glob ends here and whose filters hold.
    fn matched_terms(&self, terms: &[Term], state: u128, v: &Vertex) -> u64 {
        let mut fin = state & self.finals;
        let mut mask = 0u64;
        while fin != 0 {
            let t = self.term_of[fin.trailing_zeros() as usize] as usize;
            fin &= fin - 1;
            if terms[t].filters.iter().all(|f| f.matches(v)) {
                mask |= 1 << t;
            }
        }
        mask
    }

    /// Like `matched_terms`, on a graph node with filters bound to its inventory.
    fn matched_bound(&self, bound: &[Vec<Bound<'_>>], state: u128, slot: &Slot) -> u64 {
        let mut fin = state & self.finals;
        let mut mask = 0u64;
        while fin != 0 {
            let t = self.term_of[fin.trailing_zeros() as usize] as usize;
            fin &= fin - 1;
            if bound[t].iter().all(|f| f.matches(slot)) {
                mask |= 1 << t;
            }
        }
        mask
    }

    pub(crate) fn matches(&self, terms: &[Term], v: &Vertex) -> bool {
        let mut state = self.start;
        let mut segs = v.id.segments();
        while let (Some(word), Some(name)) = (segs.next(), segs.next()) {
            state = self.step(state, word);
            state = self.step(state, name);
            if state == 0 {
                return false;
            }
        }
        self.matched_terms(terms, state, v) != 0
    }

    /// If every live position starts a literal (kind word, name) pair, those pairs.
    fn literal_pairs(&self, live: u128) -> Option<Vec<(&str, &str)>> {
        if live & !self.literal != 0 {
            return None;
        }
        let mut pairs = Vec::new();
        let mut bits = live;
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(Segment::Literal(word)) = &self.pats[i] else {
                return None;
            };
            match &self.pats[i + 1] {
                None => {} // the glob ends mid-pair: nothing can match through here
                Some(Segment::Literal(name)) => pairs.push((word.as_str(), name.as_str())),
                Some(_) => return None,
            }
        }
        Some(pairs)
    }

    /// Walks the tree in order, calling `visit(index, node, matched_terms, covered)` on every
    /// vertex that some term could still match, plus, where `visit` returned true for an
    /// ancestor ("cover my subtree"), every vertex down to guests.
    pub(crate) fn walk<F>(&self, inv: &Inventory, terms: &[Term], mut visit: F)
    where
        F: FnMut(NodeIndex, &Slot, u64, bool) -> bool,
    {
        let bound: Vec<Vec<Bound<'_>>> = terms
            .iter()
            .map(|t| t.filters.iter().map(|f| f.bind(inv.interner())).collect())
            .collect();
        let flat = inv.flat();
        let mut walker = Walker {
            program: self,
            inv,
            flat,
            bound: &bound,
            visit: &mut visit,
            memo: [(0, 0); 5],
        };
        walker.children(None, 0..flat.entries.len(), self.start, false);
    }
}

/// One walk's context; recursion depth is the tree's (at most four levels).
struct Walker<'a, F> {
    program: &'a Program,
    inv: &'a Inventory,
    flat: &'a Flat,
    bound: &'a [Vec<Bound<'a>>],
    visit: &'a mut F,
    /// Per kind: the last (parent live state, child state) computed without reading a name,
    /// valid for every later child of that kind reached with the same live state.
    memo: [(u128, u128); 5],
}

impl<F> Walker<'_, F>
where
    F: FnMut(NodeIndex, &Slot, u64, bool) -> bool,
{
    /// The children of `parent`, whose subtree (without itself) is `range` of the snapshot.
    fn children(
        &mut self,
        parent: Option<NodeIndex>,
        range: Range<usize>,
        state: u128,
        cover: bool,
    ) {
        let live = state & !self.program.finals;
        if range.is_empty() || (live == 0 && !cover) {
            return;
        }
        if !cover {
            if let Some(pairs) = self.program.literal_pairs(live) {
                for c in lookup(self.inv, parent, &pairs) {
                    self.subtree(self.flat.pos[c.index()] as usize, live, false);
                }
                return;
            }
        }
        let mut i = range.start;
        while i < range.end {
            let next = self.flat.entries[i].end as usize;
            self.subtree(i, live, cover);
            i = next;
        }
    }

    /// The vertex at snapshot position `i`, reached with its parent's live state.
    fn subtree(&mut self, i: usize, live: u128, cover: bool) {
        let Entry { idx, end, kind } = self.flat.entries[i];
        let p = self.program;
        let state = match self.memo[kind as usize] {
            _ if live == 0 => 0,
            (seen, state) if seen == live => state,
            _ => {
                let (state, by_name) = p.child_state(live, kind, || self.inv.slot(idx).id.name());
                if !by_name {
                    self.memo[kind as usize] = (live, state);
                }
                state
            }
        };
        if state == 0 && !(cover && kind != Kind::Docker) {
            return;
        }
        let slot = self.inv.slot(idx);
        let mask = if state & p.finals != 0 {
            p.matched_bound(self.bound, state, slot)
        } else {
            0
        };
        let cover_children = (self.visit)(idx, slot, mask, cover);
        self.children(Some(idx), i + 1..end as usize, state, cover_children);
    }
}

fn seg_matches(seg: &Segment, text: &str) -> bool {
    match seg {
        Segment::AnyDepth => false,
        Segment::Literal(l) => l == text,
        Segment::Pattern(p) => p == "*" || super::filter::glob_match(p, text),
    }
}

/// The children named by literal pairs, in tree order.
fn lookup(inv: &Inventory, parent: Option<NodeIndex>, pairs: &[(&str, &str)]) -> Vec<NodeIndex> {
    let parent_id = parent.map(|p| &inv.slot(p).vertex.id);
    let mut found: Vec<NodeIndex> = pairs
        .iter()
        .filter_map(|&(word, name)| {
            let kind: Kind = word.parse().ok()?;
            let id = match parent_id {
                Some(p) => p.child(kind, name).ok()?,
                None if kind == Kind::Cluster => PathId::cluster(name).ok()?,
                None => return None,
            };
            inv.index_of(&id)
        })
        .collect();
    found.sort_by(|&a, &b| inv.slot(a).vertex.id.sibling_cmp(&inv.slot(b).vertex.id));
    found.dedup();
    found
}

impl Selector {
    pub(crate) fn walk<F>(&self, inv: &Inventory, visit: F)
    where
        F: FnMut(NodeIndex, &Slot, u64, bool) -> bool,
    {
        self.program.walk(inv, &self.terms, visit);
    }

    pub(crate) fn terms(&self) -> &[Term] {
        &self.terms
    }
}

impl Inventory {
    /// The IDs of the vertices the selector matches, sorted (tree order), each once.
    pub fn select(&self, selector: &Selector) -> Vec<PathId> {
        let mut out = Vec::new();
        selector.walk(self, |_, slot, mask, _| {
            if mask != 0 {
                out.push(slot.id.clone());
            }
            false
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathId {
        PathId::parse(s).unwrap()
    }

    fn sample() -> Inventory {
        let mut vs = vec![
            Vertex::new(p("cluster/home")),
            Vertex::new(p("cluster/lab")),
            Vertex::new(p("cluster/lab/node/pve1")),
            Vertex::new(p("cluster/lab/node/pve1/vm/300")).with_tags(["prod"]),
        ];
        for node in ["pve1", "pve2", "backup"] {
            vs.push(Vertex::new(p(&format!("cluster/home/node/{node}"))).with_status("online"));
            for vmid in [101, 102, 200] {
                let id = p(&format!("cluster/home/node/{node}/lxc/{vmid}"));
                let g = Vertex::new(id.clone())
                    .with_name(format!("web{vmid}"))
                    .with_status(if vmid == 102 { "stopped" } else { "running" })
                    .with_tags(if vmid == 200 { vec!["prod"] } else { vec![] })
                    .with_os("debian");
                vs.push(g);
                vs.push(Vertex::new(id.docker("nginx").unwrap()).with_image("nginx:1.25"));
            }
        }
        Inventory::from_vertices(vs).unwrap()
    }

    fn select(inv: &Inventory, s: &str) -> Vec<String> {
        let sel = Selector::parse(s).unwrap();
        let got: Vec<String> = inv.select(&sel).iter().map(|i| i.to_string()).collect();
        let brute: Vec<String> = inv
            .iter()
            .filter(|v| sel.matches(inv, v))
            .map(|v| v.id.to_string())
            .collect();
        assert_eq!(got, brute, "walk and per-vertex matching agree for {s}");
        got
    }

    #[test]
    fn globs_and_filters() {
        let inv = sample();
        assert_eq!(
            select(&inv, "cluster/home/node/pve1"),
            ["cluster/home/node/pve1"]
        );
        assert_eq!(select(&inv, "cluster/nope"), Vec::<String>::new());
        assert_eq!(
            select(&inv, "cluster/home/node/pve*/lxc/2*"),
            [
                "cluster/home/node/pve1/lxc/200",
                "cluster/home/node/pve2/lxc/200"
            ]
        );
        assert_eq!(select(&inv, "cluster/*/node/pve1/*/*[tag=prod]").len(), 2);
        assert_eq!(select(&inv, "**[tag=prod]").len(), 4);
        assert_eq!(select(&inv, "cluster/home/**[image=nginx]").len(), 9);
        assert_eq!(select(&inv, "cluster/home/**/docker/*").len(), 9);
        assert_eq!(select(&inv, "**/lxc/102[status=stopped]").len(), 3);
        assert_eq!(
            select(&inv, "**[status!=stopped][kind=lxc][node=pve2]").len(),
            2
        );
        assert_eq!(select(&inv, "cluster/home/**").len(), 1 + 3 * 7);
        assert_eq!(select(&inv, "**").len(), inv.len());
        assert_eq!(select(&inv, "cluster/**/node/backup").len(), 1);
        assert_eq!(select(&inv, "**[vmid=101][name=web1*]").len(), 3);
        assert_eq!(select(&inv, "**[os=deb*]").len(), 9);
    }

    #[test]
    fn unions_are_sorted_and_deduplicated() {
        let inv = sample();
        assert_eq!(
            select(
                &inv,
                "cluster/lab/node/pve1/vm/300, cluster/home/node/pve1, cluster/home/node/pve1, cluster/home/node/backup/lxc/101"
            ),
            [
                "cluster/home/node/backup/lxc/101",
                "cluster/home/node/pve1",
                "cluster/lab/node/pve1/vm/300"
            ]
        );
        assert_eq!(
            select(&inv, "cluster/home/node/pve1/lxc/101, **[tag=prod]").len(),
            5
        );
        assert_eq!(
            select(
                &inv,
                "cluster/home/node/pve2, cluster/home/node/pve1, cluster/home/node/pve2, cluster/lab"
            ),
            ["cluster/home/node/pve1", "cluster/home/node/pve2", "cluster/lab"]
        );
    }
}
