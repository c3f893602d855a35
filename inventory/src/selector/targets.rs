//! From "what matches" to "what an action touches": a matched cluster or node stands for the
//! guests below it, a guest for itself, a container only when the selector asked for
//! containers (a glob ending in `docker/…`, or an `image` / `kind=docker` filter). Templates
//! are never targets and stopped hosts are skipped unless the action says otherwise; both are
//! listed with the reason so a preview can say "resolves to 14 hosts (2 templates skipped)".

use super::{Filter, Key, Segment, Selector, Term, Value};
use crate::facts::Facts;
use crate::graph::Inventory;
use crate::path::{Kind, PathId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How to expand a selector into targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetOptions {
    /// Target stopped guests (and exited containers) too; for actions that may start them.
    pub include_stopped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// A template (or a container in one): never targeted.
    Template,
    /// A stopped guest, a container that is not running, or one inside a stopped guest.
    Stopped,
    /// PVE reports its state as `unknown` (its node is offline): never targeted.
    Unreachable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub id: PathId,
    pub reason: SkipReason,
}

/// The hosts an action on a selector would touch, and the ones it leaves out; both sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    pub hosts: Vec<PathId>,
    pub skipped: Vec<Skipped>,
}

impl Targets {
    pub fn skipped_for(&self, reason: SkipReason) -> usize {
        self.skipped.iter().filter(|s| s.reason == reason).count()
    }
}

/// `resolves to 14 hosts (2 templates skipped, 1 stopped skipped)`.
impl fmt::Display for Targets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.hosts.len();
        write!(f, "resolves to {n} host{}", if n == 1 { "" } else { "s" })?;
        let parts: Vec<String> = [
            (SkipReason::Template, "template"),
            (SkipReason::Stopped, "stopped"),
            (SkipReason::Unreachable, "unreachable"),
        ]
        .into_iter()
        .filter_map(|(reason, what)| {
            let k = self.skipped_for(reason);
            let plural = if k != 1 && reason == SkipReason::Template {
                "s"
            } else {
                ""
            };
            (k > 0).then(|| format!("{k} {what}{plural} skipped"))
        })
        .collect();
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

impl Term {
    /// Whether the term asks for containers themselves rather than the guests holding them.
    fn wants_docker(&self) -> bool {
        let n = self.glob.len();
        let glob_says = n >= 2 && self.glob[n - 2] == Segment::Literal("docker".into());
        glob_says
            || self.filters.iter().any(|f: &Filter| {
                !f.negated && (f.key == Key::Image || f.value == Value::Kind(Kind::Docker))
            })
    }
}

impl Inventory {
    /// [`Inventory::targets_with`] with default options (stopped hosts skipped).
    pub fn targets(&self, selector: &Selector) -> Targets {
        self.targets_with(selector, TargetOptions::default())
    }

    pub fn targets_with(&self, selector: &Selector, options: TargetOptions) -> Targets {
        let docker_terms: u64 = selector
            .terms()
            .iter()
            .enumerate()
            .filter(|(_, t)| t.wants_docker())
            .fold(0, |m, (i, _)| m | 1 << i);
        let mut out = Targets::default();
        selector.walk(self, |idx, slot, mask, covered| {
            let target = match slot.kind {
                Kind::Cluster | Kind::Node => return covered || mask != 0,
                Kind::Lxc | Kind::Vm => covered || mask != 0,
                Kind::Docker => mask & docker_terms != 0,
            };
            if target {
                let guest = (slot.kind == Kind::Docker)
                    .then(|| self.parent_index(idx).map(|g| &self.slot(g).facts))
                    .flatten();
                match skip_reason(&slot.facts, guest, options) {
                    None => out.hosts.push(slot.id.clone()),
                    Some(reason) => out.skipped.push(Skipped {
                        id: slot.id.clone(),
                        reason,
                    }),
                }
            }
            false
        });
        out
    }
}

fn skip_reason(v: &Facts, guest: Option<&Facts>, options: TargetOptions) -> Option<SkipReason> {
    if v.template || guest.is_some_and(|g| g.template) {
        return Some(SkipReason::Template);
    }
    if v.unreachable || guest.is_some_and(|g| g.unreachable) {
        return Some(SkipReason::Unreachable);
    }
    let stopped = v.stopped || guest.is_some_and(|g| g.stopped);
    (stopped && !options.include_stopped).then_some(SkipReason::Stopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::Vertex;

    fn v(s: &str) -> Vertex {
        Vertex::new(PathId::parse(s).unwrap())
    }

    fn sample() -> Inventory {
        Inventory::from_vertices([
            v("cluster/h"),
            v("cluster/h/node/a"),
            v("cluster/h/node/a/lxc/101").with_status("running"),
            v("cluster/h/node/a/lxc/101/docker/web")
                .with_image("nginx")
                .with_status("running"),
            v("cluster/h/node/a/lxc/101/docker/old")
                .with_image("nginx")
                .with_status("exited"),
            v("cluster/h/node/a/lxc/102").with_status("stopped"),
            v("cluster/h/node/a/lxc/102/docker/db")
                .with_image("postgres")
                .with_status("running"),
            v("cluster/h/node/a/vm/9000")
                .with_template(true)
                .with_status("stopped"),
            v("cluster/h/node/b"),
            v("cluster/h/node/b/vm/103").with_status("running"),
        ])
        .unwrap()
    }

    fn hosts(t: &Targets) -> Vec<&str> {
        t.hosts.iter().map(PathId::as_str).collect()
    }

    #[test]
    fn guests_of_an_offline_node_are_never_targets() {
        let mut inv = sample();
        inv.upsert(v("cluster/h/node/c").with_status("offline"))
            .unwrap();
        inv.upsert(v("cluster/h/node/c/lxc/301").with_status("unknown"))
            .unwrap();
        let all = TargetOptions {
            include_stopped: true,
        };
        let t = inv.targets_with(&Selector::parse("cluster/h/node/c").unwrap(), all);
        assert!(t.hosts.is_empty());
        assert_eq!(t.skipped_for(SkipReason::Unreachable), 1);
        assert_eq!(t.to_string(), "resolves to 0 hosts (1 unreachable skipped)");
    }

    #[test]
    fn clusters_and_nodes_expand_to_guests() {
        let inv = sample();
        let t = inv.targets(&Selector::parse("cluster/h").unwrap());
        assert_eq!(
            hosts(&t),
            ["cluster/h/node/a/lxc/101", "cluster/h/node/b/vm/103"]
        );
        assert_eq!(t.skipped_for(SkipReason::Template), 1);
        assert_eq!(t.skipped_for(SkipReason::Stopped), 1);
        assert_eq!(
            t.to_string(),
            "resolves to 2 hosts (1 template skipped, 1 stopped skipped)"
        );

        let all = inv.targets_with(
            &Selector::parse("cluster/h/**").unwrap(),
            TargetOptions {
                include_stopped: true,
            },
        );
        assert_eq!(
            all.hosts.len(),
            3,
            "containers are not targets unless asked for"
        );
        assert_eq!(all.to_string(), "resolves to 3 hosts (1 template skipped)");
    }

    #[test]
    fn containers_when_asked_for() {
        let inv = sample();
        let t = inv.targets(
            &Selector::parse("**[image=nginx], cluster/h/node/*/lxc/102/docker/*").unwrap(),
        );
        assert_eq!(hosts(&t), ["cluster/h/node/a/lxc/101/docker/web"]);
        let skipped: Vec<(&str, SkipReason)> = t
            .skipped
            .iter()
            .map(|s| (s.id.as_str(), s.reason))
            .collect();
        assert_eq!(
            skipped,
            [
                ("cluster/h/node/a/lxc/101/docker/old", SkipReason::Stopped),
                ("cluster/h/node/a/lxc/102/docker/db", SkipReason::Stopped)
            ]
        );
        let t = inv.targets(
            &Selector::parse("cluster/h/node/a/lxc/101, cluster/h/**/docker/web").unwrap(),
        );
        assert_eq!(
            hosts(&t),
            [
                "cluster/h/node/a/lxc/101",
                "cluster/h/node/a/lxc/101/docker/web"
            ]
        );
        assert_eq!(
            serde_json::to_string(&Targets {
                hosts: vec![],
                skipped: vec![Skipped {
                    id: PathId::parse("cluster/h").unwrap(),
                    reason: SkipReason::Template
                }]
            })
            .unwrap(),
            r#"{"hosts":[],"skipped":[{"id":"cluster/h","reason":"template"}]}"#
        );
    }
}
