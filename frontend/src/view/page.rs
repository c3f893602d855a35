//! The dashboard's pages and their addresses below the `<base href>`: the address is the
//! state, so a reload or a shared link shows the same page.
//!
//! | Address | Page |
//! |---|---|
//! | `` or `tree` | the tree, nothing selected |
//! | `tree/cluster/home/node/pve1` | the tree with that vertex selected |
//! | `operations` | the operations list |
//! | `operations/ID` | one operation |
//! | `admin` or `admin/SECTION` | administration (clusters, tokens, users, deploy key) |

/// One page of the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// The tree, with the selected vertex's path id if any.
    Tree(Option<String>),
    Operations,
    Operation(String),
    /// Administration; the section's name, empty for the first one.
    Admin(String),
}

impl Page {
    /// The page an address shows; anything unknown is the tree.
    pub fn parse(route: &str) -> Page {
        let route = route.trim_matches('/');
        let (head, rest) = route.split_once('/').unwrap_or((route, ""));
        match head {
            "operations" if rest.is_empty() => Page::Operations,
            "operations" => Page::Operation(rest.to_string()),
            "admin" => Page::Admin(rest.to_string()),
            "tree" if rest.starts_with("cluster/") => Page::Tree(Some(rest.to_string())),
            _ => Page::Tree(None),
        }
    }

    /// The address of this page below the base (no leading `/`).
    pub fn path(&self) -> String {
        match self {
            Page::Tree(None) => "tree".into(),
            Page::Tree(Some(id)) => format!("tree/{id}"),
            Page::Operations => "operations".into(),
            Page::Operation(id) => format!("operations/{id}"),
            Page::Admin(s) if s.is_empty() => "admin".into(),
            Page::Admin(s) => format!("admin/{s}"),
        }
    }

    /// Which entry of the header's navigation this page belongs to.
    pub fn section(&self) -> Section {
        match self {
            Page::Tree(_) => Section::Tree,
            Page::Operations | Page::Operation(_) => Section::Operations,
            Page::Admin(_) => Section::Admin,
        }
    }
}

/// The header's navigation entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Tree,
    Operations,
    Admin,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_reads_back_from_its_own_address() {
        for page in [
            Page::Tree(None),
            Page::Tree(Some("cluster/home/node/pve1/lxc/101".into())),
            Page::Operations,
            Page::Operation("0b9c7f4e-2f7e-4f7c-9d39-1d0f0b7f6a11".into()),
            Page::Admin(String::new()),
            Page::Admin("users".into()),
        ] {
            assert_eq!(Page::parse(&page.path()), page, "{}", page.path());
        }
    }

    #[test]
    fn an_unknown_or_empty_address_is_the_tree() {
        assert_eq!(Page::parse(""), Page::Tree(None));
        assert_eq!(Page::parse("nonsense/x"), Page::Tree(None));
        assert_eq!(Page::parse("tree/not-a-path"), Page::Tree(None));
        assert_eq!(Page::parse("/operations/"), Page::Operations);
    }
}
