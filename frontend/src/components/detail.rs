//! The detail pane of the selected vertex: for a guest its facts, agent, updates (filtered and paged on
//! the server; held ones shown as such) and history; for a node or cluster its rollups, a
//! node's own pending updates, and the recent operations that touched it.

use super::actions::SelectionActions;
use super::badges::Badges;
use super::operation::{OperationView, UpdateAction};
use super::pipeline::UpdatesTable;
use super::snapshots::Snapshots;
use crate::api;
use crate::loadable::{use_loadable, Loadable};
use crate::view::detail::{event_line, facts, kind_name, page_line};
use crate::view::operation::{concerns, update_selector};
use crate::view::tree::{badges, find};
use canopy_api_types::updates::{Severity, UpdateFilter, UpdateStatus};
use canopy_api_types::HostId;
use canopy_inventory::{Kind, TreeNode};
use std::rc::Rc;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct DetailProps {
    pub forest: Rc<Vec<TreeNode>>,
    pub id: String,
}

/// Loading, an error, or the content.
fn show<T>(state: &Loadable<T>, what: &str, f: impl FnOnce(&T) -> Html) -> Html {
    match state {
        Loadable::Loading => html! { <p role="status">{format!("Loading {what}…")}</p> },
        Loadable::Failed(e) => {
            html! { <p class="error" role="alert">{format!("Cannot load {what}: {e}")}</p> }
        }
        Loadable::Ready(v) => f(v),
    }
}

#[function_component(Detail)]
pub fn detail(props: &DetailProps) -> Html {
    let Some(node) = find(&props.forest, &props.id) else {
        return html! { <section class="detail"><p>{format!("{} is not in the tree (any more).", props.id)}</p></section> };
    };
    let heading = match node.vmid {
        Some(v) => format!("{} {v} {}", kind_name(node.kind), node.name),
        None => format!("{} {}", kind_name(node.kind), node.name),
    };
    html! {
        <section class="detail" aria-labelledby="detail-title">
            <h2 id="detail-title">{heading}</h2>
            <p class="path"><code>{node.id.as_str()}</code></p>
            <Badges badges={badges(&node.rollup)} />
            <dl class="facts">
                { for facts(node).into_iter().map(|(k, v)| html! { <><dt>{k}</dt><dd>{v}</dd></> }) }
            </dl>
            <UpdateAction selector={update_selector(node.kind, node.id.as_str())} />
            <SelectionActions selector={update_selector(node.kind, node.id.as_str())} />
            if node.kind.is_guest() {
                if let Some(host) = node.host_id.as_deref().and_then(|h| h.parse::<HostId>().ok()) {
                    <GuestUpdates {host} />
                } else {
                    <p>{"No agent reports this guest's packages yet."}</p>
                }
                <Snapshots id={props.id.clone()} />
                <History id={props.id.clone()} />
            } else {
                if node.kind == Kind::Node {
                    <NodeUpdates cluster={node.id.cluster_name().to_string()} node={node.name.clone()} />
                }
                <Operations id={props.id.clone()} />
            }
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct GuestUpdatesProps {
    host: HostId,
}

#[function_component(GuestUpdates)]
fn guest_updates(props: &GuestUpdatesProps) -> Html {
    let page = use_state(|| 1u32);
    // Open rows (pending, held among them) unless asked for every row; all severities
    // unless asked for security ones. Filtered and paged by the server.
    let open_only = use_state(|| true);
    let security_only = use_state(|| false);
    let loaded = use_loadable(
        (props.host, *page, *open_only, *security_only),
        Some(15_000),
        |(host, page, open, security): (HostId, u32, bool, bool)| async move {
            api::call(move |c| async move {
                c.updates(&UpdateFilter {
                    host_id: Some(host),
                    page: Some(page),
                    per_page: Some(50),
                    status: open.then_some(UpdateStatus::Pending),
                    severity: security.then_some(Severity::Security),
                    ..Default::default()
                })
                .await
            })
            .await
        },
    );
    let toggle = |flag: &UseStateHandle<bool>| {
        let (flag, page) = (flag.clone(), page.clone());
        Callback::from(move |_: Event| {
            flag.set(!*flag);
            page.set(1);
        })
    };
    let go = |delta: i64| {
        let page = page.clone();
        Callback::from(move |_: MouseEvent| page.set((i64::from(*page) + delta).max(1) as u32))
    };
    html! {
        <section aria-labelledby="updates-title">
            <h3 id="updates-title">{"Updates"}</h3>
            <div class="update-filters">
                <label><input type="checkbox" id="open-only" checked={*open_only} onchange={toggle(&open_only)} />{" Open only"}</label>
                <label><input type="checkbox" id="security-only" checked={*security_only} onchange={toggle(&security_only)} />{" Security only"}</label>
            </div>
            { show(&loaded.state, "the updates", |p| html! {
                <>
                <UpdatesTable items={p.items.clone()} on_change={loaded.reload.clone()} />
                <nav class="pager" aria-label="Update pages">
                    <button onclick={go(-1)} disabled={p.page <= 1}>{"Previous"}</button>
                    <span>{page_line(p.page, p.per_page, p.total)}</span>
                    <button onclick={go(1)} disabled={u64::from(p.page) * u64::from(p.per_page) >= p.total}>{"Next"}</button>
                </nav>
                </>
            }) }
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct HistoryProps {
    id: String,
}

#[function_component(History)]
fn history(props: &HistoryProps) -> Html {
    let loaded = use_loadable(props.id.clone(), None, |id: String| async move {
        api::call(move |c| {
            let id = id.clone();
            async move { c.guest_history(&id).await }
        })
        .await
    });
    html! {
        <section aria-labelledby="history-title">
            <h3 id="history-title">{"History"}</h3>
            { show(&loaded.state, "the history", |events| html! {
                if events.is_empty() {
                    <p>{"Nothing recorded yet."}</p>
                } else {
                    <ol class="timeline">
                    { for events.iter().take(50).map(event_line).map(|(when, what, who)| html! {
                        <li><time>{when}</time>{" "}<span>{what}</span>{" "}<span class="actor">{who}</span></li>
                    }) }
                    </ol>
                }
            }) }
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct NodeUpdatesProps {
    cluster: String,
    node: String,
}

#[function_component(NodeUpdates)]
fn node_updates(props: &NodeUpdatesProps) -> Html {
    let loaded = use_loadable(
        (props.cluster.clone(), props.node.clone()),
        None,
        |(c, n): (String, String)| async move {
            api::call(move |client| {
                let (c, n) = (c.clone(), n.clone());
                async move { client.node_updates(&c, &n).await }
            })
            .await
        },
    );
    html! {
        <section aria-labelledby="node-updates-title">
            <h3 id="node-updates-title">{"The node's own updates"}</h3>
            { show(&loaded.state, "the node's updates", |u| html! {
                <>
                if let Some(e) = &u.error { <p class="error">{e}</p> }
                if u.updates.is_empty() { <p>{"None pending."}</p> } else {
                    <ul class="plain">
                    { for u.updates.iter().map(|p| html! {
                        <li>{format!("{} {} → {}", p.package, p.current_version.as_deref().unwrap_or("?"), p.available_version.as_deref().unwrap_or("?"))}</li>
                    }) }
                    </ul>
                }
                </>
            }) }
        </section>
    }
}

#[derive(Properties, PartialEq)]
struct OperationsProps {
    /// The node or cluster whose operations are listed.
    id: String,
}

/// The recent operations that touched this node or cluster.
#[function_component(Operations)]
fn operations(props: &OperationsProps) -> Html {
    let loaded = use_loadable(props.id.clone(), Some(10_000), |id: String| async move {
        let ops = api::call(|c| async move { c.operations(50).await }).await?;
        Ok(ops
            .into_iter()
            .filter(|o| concerns(o, &id))
            .take(10)
            .collect::<Vec<_>>())
    });
    let open = use_state(|| None::<canopy_api_types::OperationId>);
    html! {
        <section aria-labelledby="ops-title">
            <h3 id="ops-title">{"Recent operations"}</h3>
            { show(&loaded.state, "the operations", |ops| html! {
                if ops.is_empty() { <p>{"None yet."}</p> } else {
                    <table class="ops">
                        <thead><tr><th scope="col">{"Action"}</th><th scope="col">{"Selector"}</th>
                            <th scope="col">{"State"}</th><th scope="col">{"By"}</th></tr></thead>
                        <tbody>
                        { for ops.iter().map(|o| {
                            let (open, id) = (open.clone(), o.id);
                            let onclick = Callback::from(move |_: MouseEvent| open.set(Some(id)));
                            html! {
                                <tr><td><button class="link" {onclick}>{&o.action}</button></td>
                                    <td><code>{&o.selector}</code></td>
                                    <td>{o.state.as_str()}</td><td>{&o.created_by}</td></tr>
                            }
                        }) }
                        </tbody>
                    </table>
                }
            }) }
            if let Some(id) = *open {
                <h4>{format!("Operation {id}")}</h4>
                <OperationView {id} />
            }
        </section>
    }
}
