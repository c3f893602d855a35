//! Dictionary-encoded copies of the facts selectors filter on most (`status`, `os`, `agent`,
//! `tags`, `vmid`), kept inline in each graph node. A full-tree scan such as `**[tag=prod]`
//! then compares small integers in one compact node per vertex instead of chasing a vertex's
//! strings through the heap; the filter's value is looked up in the dictionary once per
//! resolution. The vertex stays the source of truth: facts are recomputed on every write.

use crate::model::Vertex;
use crate::rollup::Counts;
use crate::selector::glob_match;
use std::collections::HashMap;
use std::sync::Arc;

/// An interned string; `Sym::NONE` stands for an absent value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct Sym(u32);

impl Sym {
    pub(crate) const NONE: Sym = Sym(0);
}

/// Grows only: the interned values (statuses, OS names, agent states, tags) are few.
#[derive(Debug, Clone)]
pub(crate) struct Interner {
    ids: HashMap<Arc<str>, Sym>,
    strings: Vec<Arc<str>>,
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            ids: HashMap::new(),
            strings: vec![Arc::from("")], // Sym::NONE
        }
    }
}

impl Interner {
    fn intern(&mut self, s: &str) -> Sym {
        if let Some(&sym) = self.ids.get(s) {
            return sym;
        }
        let sym = Sym(self.strings.len() as u32);
        let s: Arc<str> = Arc::from(s);
        self.strings.push(s.clone());
        self.ids.insert(s, sym);
        sym
    }

    fn intern_opt(&mut self, s: Option<&str>) -> Sym {
        s.map_or(Sym::NONE, |s| self.intern(s))
    }

    /// The symbols whose strings match a `*` glob (or equal a plain value).
    pub(crate) fn matching(&self, pattern: &str) -> SymSet {
        if !pattern.contains('*') {
            return match self.ids.get(pattern) {
                Some(&sym) => SymSet::One(sym),
                None => SymSet::Empty,
            };
        }
        let hits: Vec<bool> = self
            .strings
            .iter()
            .enumerate()
            .map(|(i, s)| i != 0 && glob_match(pattern, s))
            .collect();
        SymSet::Many(hits)
    }
}

/// A set of symbols, bound to one inventory's interner.
#[derive(Debug, Clone)]
pub(crate) enum SymSet {
    Empty,
    One(Sym),
    /// Indexed by symbol.
    Many(Vec<bool>),
}

impl SymSet {
    pub(crate) fn contains(&self, sym: Sym) -> bool {
        match self {
            SymSet::Empty => false,
            SymSet::One(s) => *s == sym && sym != Sym::NONE,
            SymSet::Many(hits) => hits.get(sym.0 as usize).copied().unwrap_or(false),
        }
    }
}

const INLINE_TAGS: usize = 4;

/// The filterable facts of one vertex.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    pub(crate) status: Sym,
    pub(crate) os: Sym,
    pub(crate) agent: Sym,
    pub(crate) vmid: Option<u32>,
    pub(crate) template: bool,
    /// The vertex's own counts (for rollups).
    pub(crate) counts: Counts,
    /// [`Vertex::is_stopped`].
    pub(crate) stopped: bool,
    /// [`Vertex::is_unreachable`].
    pub(crate) unreachable: bool,
    tags_len: u8,
    tags_inline: [Sym; INLINE_TAGS],
    tags_spilled: Option<Box<[Sym]>>,
}

impl Facts {
    pub(crate) fn of(v: &Vertex, interner: &mut Interner) -> Facts {
        let tags: Vec<Sym> = v.tags.iter().map(|t| interner.intern(t)).collect();
        let mut facts = Facts {
            status: interner.intern_opt(v.status.as_deref()),
            os: interner.intern_opt(v.os.as_deref()),
            agent: interner.intern_opt(v.agent.as_deref()),
            vmid: v.vmid,
            template: v.template,
            counts: v.counts,
            stopped: v.is_stopped(),
            unreachable: v.is_unreachable(),
            ..Facts::default()
        };
        if tags.len() <= INLINE_TAGS {
            facts.tags_len = tags.len() as u8;
            facts.tags_inline[..tags.len()].copy_from_slice(&tags);
        } else {
            facts.tags_spilled = Some(tags.into_boxed_slice());
        }
        facts
    }

    pub(crate) fn tags(&self) -> &[Sym] {
        match &self.tags_spilled {
            Some(spilled) => spilled,
            None => &self.tags_inline[..self.tags_len as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PathId;

    #[test]
    fn encodes_and_matches() {
        let mut i = Interner::default();
        let v = Vertex::new(PathId::parse("cluster/c/node/n/lxc/101").unwrap())
            .with_status("running")
            .with_tags(["a", "b", "c", "d", "prod"]);
        let f = Facts::of(&v, &mut i);
        assert_eq!(f.tags().len(), 5);
        assert_eq!(f.os, Sym::NONE);
        assert!(i.matching("running").contains(f.status));
        assert!(i.matching("run*").contains(f.status));
        assert!(!i.matching("stopped").contains(f.status));
        assert!(!i.matching("*").contains(Sym::NONE));
        assert!(f.tags().iter().any(|&t| i.matching("pr*").contains(t)));
        let few = Facts::of(&v.clone().with_tags(["x"]), &mut i);
        assert_eq!(few.tags().len(), 1);
    }
}
