//! Selectors: the one way to name a set of vertices, shared by the CLI (`canopy run ACTION
//! SELECTOR`), the REST API and the UI's search box, so all three agree on what a selector
//! means and on what an operation will touch.
//!
//! # Grammar
//!
//! ```text
//! selector := term ( "," term )*                 a union
//! term     := glob filter*  |  filter+           filters alone mean "**"
//! glob     := segment ( "/" segment )*
//! segment  := "**"                                zero or more segments
//!           | ( NAMECHAR | "*" )+                 "*" matches within ONE segment: *, pve*, *-db
//! filter   := "[" key ( "=" | "!=" ) value "]"    filters are ANDed
//! key      := tag | status | kind | os | image | name | vmid | node | agent
//! value    := ( NAMECHAR | "*" | ":" | "/" | "@" | "+" )+
//! NAMECHAR := [A-Za-z0-9_.-]
//! ```
//!
//! Whitespace is allowed around `,` `/` `[` `]` `=` `!=`. A glob is matched against the
//! `/`-separated segments of path IDs (`cluster/home/node/pve1/lxc/101` has six), so a bare
//! path selects exactly that vertex. Before any `**`, literal segments are checked against
//! the path layout (`cluster/home/nodes/pve1` is an error naming `node`).
//!
//! # Filters
//!
//! - `tag`: some tag matches. `kind`: one of cluster, node, lxc, vm, docker (exact).
//!   `vmid`: the guest's vmid (exact number; containers have none).
//! - `status`, `os`, `name`, `agent`: the vertex's field; `node`: the node the vertex is on
//!   (or is). Values may use `*`; matching is case-sensitive.
//! - `image` (docker): compared by repository, ignoring registry, digest and the Docker Hub
//!   `library/` prefix. A value without `/` matches the last path component (`nginx` matches
//!   `nginx:1.25`, `docker.io/library/nginx`, `ghcr.io/linuxserver/nginx`); a value with `/`
//!   matches the whole repository path (`linuxserver/nginx`). A value with a tag
//!   (`nginx:1.25`) also requires the tag (an untagged image counts as `latest`).
//! - `!=` is the negation of `=`: a vertex without the field (a node has no image) matches
//!   `[image!=nginx]` and not `[image=nginx]`.
//!
//! # Evaluation
//!
//! [`Inventory::select`](crate::Inventory::select) walks the tree once for the whole union,
//! carrying the set of glob positions still alive as a bitmask (an NFA over segments): a
//! subtree where no term can match is never entered, and a level where every live term
//! expects a literal is reached by hash lookup instead of scanning siblings.

mod eval;
mod filter;
mod parse;
mod targets;

pub(crate) use filter::glob_match;
pub use targets::{SkipReason, Skipped, TargetOptions, Targets};

use crate::graph::Inventory;
use crate::model::Vertex;
use crate::path::Kind;
use eval::Program;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A parsed selector; `Display` gives back a canonical string that parses to the same value.
#[derive(Clone)]
pub struct Selector {
    terms: Vec<Term>,
    program: Program,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Term {
    pub(crate) glob: Vec<Segment>,
    pub(crate) filters: Vec<Filter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Literal(String),
    /// Contains `*` (but is not `**`).
    Pattern(String),
    AnyDepth,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    pub(crate) key: Key,
    pub(crate) negated: bool,
    /// As written (for `Display`).
    pub(crate) raw: String,
    pub(crate) value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Tag,
    Status,
    Kind,
    Os,
    Image,
    Name,
    Vmid,
    Node,
    Agent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Text(String),
    Kind(Kind),
    Vmid(u32),
    Image { path: String, tag: Option<String> },
}

/// Where and why a selector failed to parse. `position` counts characters from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid selector at position {position}: expected {expected}, found {}", found.as_deref().map_or("the end".to_owned(), |f| format!("`{f}`")))]
pub struct SelectorError {
    pub position: usize,
    pub expected: String,
    pub found: Option<String>,
}

impl Selector {
    pub fn parse(input: &str) -> Result<Selector, SelectorError> {
        parse::parse(input).map(Selector::from_terms)
    }

    fn from_terms(terms: Vec<Term>) -> Selector {
        let program = Program::new(&terms);
        Selector { terms, program }
    }

    /// Whether `vertex` is selected (the same answer [`Inventory::select`] gives; the
    /// inventory is the context the vertex is judged in, unused by today's filters).
    pub fn matches(&self, _inventory: &Inventory, vertex: &Vertex) -> bool {
        self.program.matches(&self.terms, vertex)
    }
}

impl Key {
    pub(crate) const ALL: [(Key, &'static str); 9] = [
        (Key::Tag, "tag"),
        (Key::Status, "status"),
        (Key::Kind, "kind"),
        (Key::Os, "os"),
        (Key::Image, "image"),
        (Key::Name, "name"),
        (Key::Vmid, "vmid"),
        (Key::Node, "node"),
        (Key::Agent, "agent"),
    ];

    pub(crate) fn as_str(self) -> &'static str {
        Key::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map_or("", |(_, s)| s)
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.terms == other.terms
    }
}

impl Eq for Selector {}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Selector").field(&self.to_string()).finish()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            for (j, seg) in term.glob.iter().enumerate() {
                if j > 0 {
                    f.write_str("/")?;
                }
                match seg {
                    Segment::Literal(s) | Segment::Pattern(s) => f.write_str(s)?,
                    Segment::AnyDepth => f.write_str("**")?,
                }
            }
            for filter in &term.filters {
                let op = if filter.negated { "!=" } else { "=" };
                write!(f, "[{}{op}{}]", filter.key.as_str(), filter.raw)?;
            }
        }
        Ok(())
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Selector::parse(&s).map_err(serde::de::Error::custom)
    }
}
