//! What a single bracketed filter means for one vertex, and the two small matchers it needs:
//! `*` globs within one string, and docker image references compared by repository. A filter
//! is evaluated either on a [`Vertex`] (the reference meaning) or, during a tree walk, bound to
//! the inventory's dictionary and evaluated on a graph node's encoded facts.

use super::{Filter, Key, Value};
use crate::facts::{Interner, SymSet};
use crate::graph::Slot;
use crate::model::Vertex;

/// A filter prepared for one walk over one inventory.
pub(crate) enum Bound<'f> {
    /// tag, status, os, agent: the matching dictionary entries.
    Facts {
        key: Key,
        set: SymSet,
        negated: bool,
    },
    /// Anything else is read from the vertex.
    Vertex(&'f Filter),
}

impl Filter {
    pub(crate) fn bind(&self, interner: &Interner) -> Bound<'_> {
        match (self.key, &self.value) {
            (Key::Tag | Key::Status | Key::Os | Key::Agent, Value::Text(pattern)) => Bound::Facts {
                key: self.key,
                set: interner.matching(pattern),
                negated: self.negated,
            },
            _ => Bound::Vertex(self),
        }
    }
}

impl Bound<'_> {
    pub(crate) fn matches(&self, slot: &Slot) -> bool {
        match self {
            Bound::Facts { key, set, negated } => {
                let f = &slot.facts;
                let holds = match key {
                    Key::Tag => f.tags().iter().any(|&t| set.contains(t)),
                    Key::Status => set.contains(f.status),
                    Key::Os => set.contains(f.os),
                    _ => set.contains(f.agent),
                };
                holds != *negated
            }
            Bound::Vertex(filter) => match (filter.key, &filter.value) {
                (Key::Kind, Value::Kind(k)) => (slot.kind == *k) != filter.negated,
                (Key::Vmid, Value::Vmid(n)) => (slot.facts.vmid == Some(*n)) != filter.negated,
                _ => filter.matches(&slot.vertex),
            },
        }
    }
}

impl Filter {
    pub(crate) fn matches(&self, v: &Vertex) -> bool {
        self.holds(v) != self.negated
    }

    fn holds(&self, v: &Vertex) -> bool {
        let text = |field: Option<&str>| match (&self.value, field) {
            (Value::Text(pat), Some(s)) => glob_match(pat, s),
            _ => false,
        };
        match (self.key, &self.value) {
            (Key::Kind, Value::Kind(k)) => v.kind == *k,
            (Key::Vmid, Value::Vmid(n)) => v.vmid == Some(*n),
            (Key::Image, Value::Image { path, tag }) => v
                .image
                .as_deref()
                .is_some_and(|image| image_matches(path, tag.as_deref(), image)),
            (Key::Tag, Value::Text(pat)) => v.tags.iter().any(|t| glob_match(pat, t)),
            (Key::Status, _) => text(v.status.as_deref()),
            (Key::Os, _) => text(v.os.as_deref()),
            (Key::Name, _) => text(Some(&v.name)),
            (Key::Node, _) => text(v.id.node_name()),
            (Key::Agent, _) => text(v.agent.as_deref()),
            _ => false,
        }
    }
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub(crate) fn glob_match(pattern: &str, s: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            backtrack = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((star, from)) = backtrack {
            pi = star + 1;
            si = from + 1;
            backtrack = Some((star, from + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Splits an image reference into (repository path, tag): drops a digest, a registry host
/// (a first component with `.` or `:`, or `localhost`) and Docker Hub's `library/`.
pub(crate) fn split_image(reference: &str) -> (&str, Option<&str>) {
    let r = reference.split('@').next().unwrap_or("");
    let r = match r.split_once('/') {
        Some((host, rest)) if host.contains(['.', ':']) || host == "localhost" => rest,
        _ => r,
    };
    let (path, tag) = match r.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
        _ => (r, None),
    };
    (path.strip_prefix("library/").unwrap_or(path), tag)
}

fn image_matches(path_pat: &str, tag_pat: Option<&str>, image: &str) -> bool {
    let (path, tag) = split_image(image);
    let name_ok = if path_pat.contains('/') {
        glob_match(path_pat, path)
    } else {
        glob_match(path_pat, path.rsplit('/').next().unwrap_or(path))
    };
    name_ok && tag_pat.is_none_or(|t| glob_match(t, tag.unwrap_or("latest")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, s, want) in [
            ("*", "", true),
            ("*", "abc", true),
            ("web*", "web1", true),
            ("web*", "we", false),
            ("*-db", "pg-db", true),
            ("*-db", "pg-db2", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("", "", true),
        ] {
            assert_eq!(glob_match(p, s), want, "{p:?} vs {s:?}");
        }
    }

    #[test]
    fn image_names_ignore_registry_and_tag() {
        assert_eq!(split_image("nginx"), ("nginx", None));
        assert_eq!(
            split_image("docker.io/library/nginx:1.25"),
            ("nginx", Some("1.25"))
        );
        assert_eq!(split_image("localhost:5000/app:dev"), ("app", Some("dev")));
        assert_eq!(
            split_image("ghcr.io/linuxserver/nginx@sha256:abc"),
            ("linuxserver/nginx", None)
        );
        for image in [
            "nginx",
            "nginx:1.25",
            "docker.io/library/nginx",
            "ghcr.io/linuxserver/nginx:latest",
        ] {
            assert!(image_matches("nginx", None, image), "{image}");
        }
        assert!(!image_matches("nginx", None, "nginx-proxy"));
        assert!(image_matches("nginx*", None, "nginx-proxy"));
        assert!(image_matches(
            "linuxserver/nginx",
            None,
            "ghcr.io/linuxserver/nginx"
        ));
        assert!(!image_matches("linuxserver/nginx", None, "nginx"));
        assert!(image_matches("nginx", Some("1.25"), "nginx:1.25"));
        assert!(!image_matches("nginx", Some("1.25"), "nginx"));
        assert!(image_matches("nginx", Some("latest"), "nginx"));
    }
}
