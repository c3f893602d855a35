//! The storage behind [`PathId`](crate::PathId): inline up to a cache line's worth of bytes,
//! shared beyond, so that cloning the IDs of thousands of selected vertices neither
//! allocates nor touches reference counts scattered across the heap.

use crate::kind::Kind;
use std::sync::Arc;

/// Longest path kept inline (most are: `cluster/home/node/pve1/lxc/101` is 30 bytes); a
/// `PathId` is 48 bytes either way.
const INLINE: usize = 45;

/// Inline up to [`INLINE`] bytes, shared beyond. Inline clones copy the bytes instead of
/// touching a far-away reference count, which is what selector results at 100,000 vertices
/// are made of. Always ASCII (checked on construction).
#[derive(Clone)]
pub(crate) enum Text {
    Inline {
        kind: Kind,
        len: u8,
        bytes: [u8; INLINE],
    },
    Shared(Kind, Arc<str>),
}

impl Text {
    pub(crate) fn new(s: &str, kind: Kind) -> Text {
        if s.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..s.len()].copy_from_slice(s.as_bytes());
            Text::Inline {
                kind,
                len: s.len() as u8,
                bytes,
            }
        } else {
            Text::Shared(kind, Arc::from(s))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Only ever built from a `&str`, so this cannot fail.
            Text::Inline { len, bytes, .. } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or("")
            }
            Text::Shared(_, s) => s,
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            Text::Inline { kind, .. } | Text::Shared(kind, _) => *kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Kind, PathId};
    use std::collections::HashSet;

    #[test]
    fn short_and_long_paths_behave_the_same() {
        assert_eq!(std::mem::size_of::<PathId>(), 48);
        let long = "cluster/home/node/pve1/lxc/101/docker/a-rather-long-container-name-1";
        let short = "cluster/home/node/pve1/lxc/101/docker/web";
        for s in [long, short] {
            let id = PathId::parse(s).unwrap();
            assert_eq!(id.as_str(), s);
            assert_eq!(id.kind(), Kind::Docker);
            let copy = id.clone();
            assert_eq!(copy, id);
            assert_eq!(
                HashSet::from([id.clone()]).len(),
                HashSet::from([id, copy]).len()
            );
        }
        let via_builder = PathId::parse("cluster/home/node/pve1/lxc/101")
            .unwrap()
            .docker("a-rather-long-container-name-1")
            .unwrap();
        assert_eq!(via_builder, PathId::parse(long).unwrap());
    }
}
