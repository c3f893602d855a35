//! Selector properties: Display/parse round trips, and `select`/`targets` agree with a
//! brute-force reference (recursive, regex-free) over random trees.

mod common;

use canopy_inventory::{Inventory, Kind, PathId, Selector, SkipReason, TargetOptions, Vertex};
use common::arb_inventory;
use proptest::collection::vec;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 192,
        ..ProptestConfig::default()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Pat(String),
    AnyDepth,
}

#[derive(Debug, Clone)]
struct Filter {
    key: &'static str,
    negated: bool,
    value: &'static str,
}

#[derive(Debug, Clone)]
struct Term {
    segs: Vec<Seg>,
    filters: Vec<Filter>,
}

fn seg(s: &str) -> Seg {
    if s == "**" {
        Seg::AnyDepth
    } else if s.contains('*') {
        Seg::Pat(s.to_owned())
    } else {
        Seg::Lit(s.to_owned())
    }
}

/// Choices for segment `k` of a glob before any `**` (the parser checks these positions).
fn positional(k: usize) -> &'static [&'static str] {
    match k {
        0 => &["cluster", "*", "c*"],
        1 => &["home", "lab", "*", "l*", "c3"],
        2 => &["node", "*", "*o*"],
        3 => &["pve1", "pve10", "n-3", "*", "pve*"],
        4 => &["lxc", "vm", "*"],
        5 => &["101", "105", "*", "10*"],
        6 => &["docker", "*"],
        _ => &["nginx", "app", "*", "a*"],
    }
}

const FREE: [&str; 11] = [
    "lxc", "vm", "node", "docker", "pve1", "101", "nginx", "*", "p*", "home", "**",
];

const FILTERS: [(&str, &[&str]); 9] = [
    ("tag", &["prod", "dev", "p*", "a"]),
    ("status", &["running", "stopped", "r*", "online", "exited"]),
    ("kind", &["lxc", "vm", "docker", "node", "cluster"]),
    ("os", &["debian", "alpine", "d*"]),
    (
        "image",
        &[
            "nginx",
            "library/nginx",
            "x/nginx",
            "nginx:1.25",
            "postgres",
            "nginx*",
            "redis:latest",
        ],
    ),
    ("name", &["web*", "db", "h0", "*1", "nginx"]),
    ("vmid", &["101", "105"]),
    ("node", &["pve1", "pve*", "n-3"]),
    ("agent", &["online", "missing", "*"]),
];

fn arb_term() -> impl Strategy<Value = Term> {
    (
        // Mostly whole (kind, name) pairs; a glob ending mid-pair matches nothing.
        prop_oneof![4 => (0..=4usize).prop_map(|k| 2 * k), 1 => 0..=8usize],
        vec(any::<prop::sample::Index>(), 8),
        any::<bool>(),
        vec(0..FREE.len(), 0..3),
        vec(
            (
                0..FILTERS.len(),
                any::<bool>(),
                any::<prop::sample::Index>(),
            ),
            0..2,
        ),
    )
        .prop_map(|(len, picks, star, suffix, filters)| {
            let mut segs: Vec<Seg> = (0..len)
                .map(|k| seg(picks[k].get::<&str>(positional(k))))
                .collect();
            if star || segs.is_empty() {
                segs.push(Seg::AnyDepth);
                segs.extend(suffix.into_iter().map(|i| seg(FREE[i])));
            }
            let filters = filters
                .into_iter()
                .map(|(k, negated, v)| Filter {
                    key: FILTERS[k].0,
                    negated,
                    value: v.get::<&str>(FILTERS[k].1),
                })
                .collect();
            Term { segs, filters }
        })
}

fn arb_selector() -> impl Strategy<Value = Vec<Term>> {
    vec(arb_term(), 1..4)
}

fn render(terms: &[Term], spaced: bool) -> String {
    let (slash, comma, open, close) = if spaced {
        (" / ", " ,  ", "[ ", " ]")
    } else {
        ("/", ", ", "[", "]")
    };
    terms
        .iter()
        .map(|t| {
            let glob: Vec<&str> = t
                .segs
                .iter()
                .map(|s| match s {
                    Seg::Lit(x) | Seg::Pat(x) => x.as_str(),
                    Seg::AnyDepth => "**",
                })
                .collect();
            let filters: String = t
                .filters
                .iter()
                .map(|f| {
                    let op = if f.negated { "!=" } else { "=" };
                    let op = if spaced {
                        format!(" {op} ")
                    } else {
                        op.to_owned()
                    };
                    format!("{open}{}{op}{}{close}", f.key, f.value)
                })
                .collect();
            format!("{}{}", glob.join(slash), filters)
        })
        .collect::<Vec<_>>()
        .join(comma)
}

// ---- the reference: recursive and slow on purpose ----

fn wild(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|k| wild(rest, &s[k..])),
        Some((c, rest)) => s.first() == Some(c) && wild(rest, &s[1..]),
    }
}

fn w(p: &str, s: &str) -> bool {
    wild(p.as_bytes(), s.as_bytes())
}

fn glob(p: &[Seg], s: &[&str]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((Seg::AnyDepth, rest)) => (0..=s.len()).any(|k| glob(rest, &s[k..])),
        Some((Seg::Lit(x) | Seg::Pat(x), rest)) => {
            !s.is_empty() && w(x, s[0]) && glob(rest, &s[1..])
        }
    }
}

/// (repository path without registry or `library/`, tag).
fn image_parts(r: &str) -> (String, Option<String>) {
    let r = r.split('@').next().unwrap();
    let parts: Vec<&str> = r.split('/').collect();
    let first = parts[0];
    let r = if parts.len() > 1
        && (first.contains('.') || first.contains(':') || first == "localhost")
    {
        parts[1..].join("/")
    } else {
        r.to_owned()
    };
    let (path, tag) = match r.rfind(':') {
        Some(i) if !r[i..].contains('/') => (r[..i].to_owned(), Some(r[i + 1..].to_owned())),
        _ => (r.clone(), None),
    };
    (
        path.strip_prefix("library/")
            .map(str::to_owned)
            .unwrap_or(path),
        tag,
    )
}

fn filter_holds(f: &Filter, v: &Vertex) -> bool {
    let opt = |x: &Option<String>| x.as_deref().is_some_and(|s| w(f.value, s));
    let holds = match f.key {
        "tag" => v.tags.iter().any(|t| w(f.value, t)),
        "status" => opt(&v.status),
        "kind" => v.kind.as_str() == f.value,
        "os" => opt(&v.os),
        "name" => w(f.value, &v.name),
        "vmid" => v.vmid.map(|n| n.to_string()).as_deref() == Some(f.value),
        "node" => v.id.node_name().is_some_and(|n| w(f.value, n)),
        "agent" => opt(&v.agent),
        "image" => v.image.as_deref().is_some_and(|image| {
            let (path, tag) = image_parts(image);
            let (vpath, vtag) = image_parts(f.value);
            let name_ok = if vpath.contains('/') {
                w(&vpath, &path)
            } else {
                w(&vpath, path.rsplit('/').next().unwrap())
            };
            name_ok && vtag.is_none_or(|t| w(&t, tag.as_deref().unwrap_or("latest")))
        }),
        other => panic!("unknown key {other}"),
    };
    holds != f.negated
}

fn term_matches(t: &Term, v: &Vertex) -> bool {
    let segs: Vec<&str> = v.id.as_str().split('/').collect();
    glob(&t.segs, &segs) && t.filters.iter().all(|f| filter_holds(f, v))
}

fn wants_docker(t: &Term) -> bool {
    let n = t.segs.len();
    (n >= 2 && t.segs[n - 2] == Seg::Lit("docker".into()))
        || t.filters
            .iter()
            .any(|f| !f.negated && (f.key == "image" || (f.key == "kind" && f.value == "docker")))
}

/// (hosts, skipped) as the brief defines targets.
fn reference_targets(
    inv: &Inventory,
    terms: &[Term],
    include_stopped: bool,
) -> (Vec<PathId>, Vec<(PathId, SkipReason)>) {
    let matched = |v: &Vertex| terms.iter().any(|t| term_matches(t, v));
    let (mut hosts, mut skipped) = (Vec::new(), Vec::new());
    for v in inv.iter() {
        let is_target = match v.kind {
            Kind::Cluster | Kind::Node => false,
            Kind::Lxc | Kind::Vm => {
                matched(v)
                    || inv
                        .iter()
                        .any(|a| !a.kind.is_guest() && a.id.is_ancestor_of(&v.id) && matched(a))
            }
            Kind::Docker => terms.iter().any(|t| wants_docker(t) && term_matches(t, v)),
        };
        if !is_target {
            continue;
        }
        let guest = (v.kind == Kind::Docker)
            .then(|| inv.parent(&v.id))
            .flatten();
        let stopped = |x: &Vertex| {
            matches!(
                x.status.as_deref(),
                Some("stopped" | "exited" | "dead" | "created")
            )
        };
        if v.template || guest.is_some_and(|g| g.template) {
            skipped.push((v.id.clone(), SkipReason::Template));
        } else if v.is_unreachable() || guest.is_some_and(|g| g.is_unreachable()) {
            skipped.push((v.id.clone(), SkipReason::Unreachable));
        } else if !include_stopped && (stopped(v) || guest.is_some_and(stopped)) {
            skipped.push((v.id.clone(), SkipReason::Stopped));
        } else {
            hosts.push(v.id.clone());
        }
    }
    (hosts, skipped)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn display_and_parse_round_trip(terms in arb_selector()) {
        let text = render(&terms, false);
        let sel = Selector::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(sel.to_string(), text.clone());
        prop_assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel.clone());
        let spaced = render(&terms, true);
        prop_assert_eq!(Selector::parse(&spaced).unwrap(), sel);
    }

    #[test]
    fn select_equals_the_reference(inv in arb_inventory(), terms in arb_selector()) {
        let sel = Selector::parse(&render(&terms, false)).unwrap();
        let expected: Vec<PathId> = inv
            .iter()
            .filter(|v| terms.iter().any(|t| term_matches(t, v)))
            .map(|v| v.id.clone())
            .collect();
        prop_assert_eq!(inv.select(&sel), expected.clone());
        let per_vertex: Vec<PathId> = inv.iter().filter(|v| sel.matches(&inv, v)).map(|v| v.id.clone()).collect();
        prop_assert_eq!(per_vertex, expected);
    }

    #[test]
    fn targets_equal_the_reference(inv in arb_inventory(), terms in arb_selector(), include_stopped in any::<bool>()) {
        let sel = Selector::parse(&render(&terms, false)).unwrap();
        let got = inv.targets_with(&sel, TargetOptions { include_stopped });
        let (hosts, skipped) = reference_targets(&inv, &terms, include_stopped);
        prop_assert_eq!(&got.hosts, &hosts);
        let got_skipped: Vec<(PathId, SkipReason)> = got.skipped.iter().map(|s| (s.id.clone(), s.reason)).collect();
        prop_assert_eq!(got_skipped, skipped);
    }

    #[test]
    fn selections_follow_edits(inv in arb_inventory(), terms in arb_selector(), victim in any::<prop::sample::Index>()) {
        // Mutate after a first resolution (the walk's snapshot must follow).
        let sel = Selector::parse(&render(&terms, false)).unwrap();
        let _ = inv.select(&sel);
        let mut inv = inv;
        let ids: Vec<PathId> = inv.iter().map(|v| v.id.clone()).collect();
        if !ids.is_empty() {
            let id = victim.get(&ids).clone();
            if id.kind() == Kind::Node {
                inv.remove(&id);
            } else {
                inv.update(&id, |v| {
                    v.tags.push("prod".into());
                    v.status = Some("running".into());
                }).unwrap();
            }
        }
        let expected: Vec<PathId> = inv.iter().filter(|v| terms.iter().any(|t| term_matches(t, v))).map(|v| v.id.clone()).collect();
        prop_assert_eq!(inv.select(&sel), expected);
    }

    #[test]
    fn unions_of_existing_paths(inv in arb_inventory(), picks in vec(any::<prop::sample::Index>(), 1..5), tail in 0..3usize) {
        // Literal paths taken from the tree, in random order with repeats, sometimes
        // extended to the subtree (`/**`) or to the children (`/*/*`).
        let ids: Vec<PathId> = inv.iter().map(|v| v.id.clone()).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let suffix = ["", "/**", "/*/*"][tail];
        let text = picks
            .iter()
            .map(|i| {
                let id = i.get(&ids);
                // A container has no children: `/*/*` below it would be too deep to parse.
                let suffix = if id.kind() == Kind::Docker && tail == 2 { "" } else { suffix };
                format!("{id}{suffix}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sel = Selector::parse(&text).unwrap();
        let terms: Vec<Term> = text
            .split(", ")
            .map(|t| Term {
                segs: t.split('/').map(seg).collect(),
                filters: Vec::new(),
            })
            .collect();
        let expected: Vec<PathId> = inv
            .iter()
            .filter(|v| terms.iter().any(|t| term_matches(t, v)))
            .map(|v| v.id.clone())
            .collect();
        prop_assert!(!expected.is_empty() || suffix == "/*/*");
        prop_assert_eq!(inv.select(&sel), expected);
    }
}
