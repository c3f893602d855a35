//! The clusters section: every cluster with its address, node and guest counts, last
//! discovery and its error; "Discover now"; removing one after an explicit confirmation;
//! the add-cluster wizard below.

use super::wizard::Wizard;
use super::{alert, run, show};
use crate::api;
use crate::loadable::use_loadable;
use crate::nav::NavContext;
use crate::view::admin::{cluster_rows, discovery_line, ClusterRow};
use crate::view::page::Page;
use canopy_api_types::clusters::Cluster;
use yew::prelude::*;

#[function_component(Clusters)]
pub fn clusters() -> Html {
    let nav = use_context::<NavContext>().expect("the app provides the navigation");
    let loaded = use_loadable((), Some(30_000), |()| async move {
        let clusters = api::call(|c| async move { c.clusters().await }).await?;
        // Counts are a bonus: without the tree the table still lists the clusters.
        let tree = api::call(|c| async move { c.tree_depth(None, 1).await })
            .await
            .ok();
        Ok(cluster_rows(
            &clusters,
            tree.as_ref().map(|t| t.trees.as_slice()),
        ))
    });
    let error = use_state(|| None::<String>);
    let note = use_state(|| None::<String>);
    let busy = use_state(|| None::<String>);
    // The cluster whose removal waits for a second click.
    let confirming = use_state(|| None::<String>);

    let discover = |name: String| {
        let (error, note, busy, reload) = (
            error.clone(),
            note.clone(),
            busy.clone(),
            loaded.reload.clone(),
        );
        Callback::from(move |_: MouseEvent| {
            busy.set(Some(name.clone()));
            note.set(None);
            let (note, busy, reload, n) =
                (note.clone(), busy.clone(), reload.clone(), name.clone());
            run(
                error.clone(),
                move |c| {
                    let n = n.clone();
                    async move { c.discover_cluster(&n).await }
                },
                move |r| {
                    note.set(Some(discovery_line(&r)));
                    busy.set(None);
                    reload.emit(());
                },
            );
        })
    };
    let ask_remove = |name: Option<String>| {
        let confirming = confirming.clone();
        Callback::from(move |_: MouseEvent| confirming.set(name.clone()))
    };
    let remove = |name: String| {
        let (error, note, confirming, reload) = (
            error.clone(),
            note.clone(),
            confirming.clone(),
            loaded.reload.clone(),
        );
        Callback::from(move |_: MouseEvent| {
            let (note, confirming, reload, n) = (
                note.clone(),
                confirming.clone(),
                reload.clone(),
                name.clone(),
            );
            run(
                error.clone(),
                move |c| {
                    let n = n.clone();
                    async move { c.remove_cluster(&n).await }
                },
                move |r| {
                    note.set(Some(format!(
                        "Cluster {} removed with its nodes and guests.",
                        r.removed
                    )));
                    confirming.set(None);
                    reload.emit(());
                },
            );
        })
    };
    let on_added = {
        let (note, reload) = (note.clone(), loaded.reload.clone());
        Callback::from(move |c: Cluster| {
            note.set(Some(format!("Cluster {} added.", c.name)));
            reload.emit(());
        })
    };
    let row = |r: &ClusterRow| {
        let page = Page::Tree(Some(format!("cluster/{}", r.name)));
        let open = nav.to::<MouseEvent>(page.clone()).reform(|e: MouseEvent| {
            e.prevent_default();
            e
        });
        let count = |n: Option<u32>| n.map_or("–".to_string(), |n| n.to_string());
        let working = busy.as_deref() == Some(r.name.as_str());
        html! {
            <tr id={format!("cluster-{}", r.name)}>
                <th scope="row"><a href={page.path()} onclick={open}>{&r.name}</a></th>
                <td><code>{&r.endpoints}</code></td>
                <td class="num">{count(r.nodes)}</td>
                <td class="num">{count(r.guests)}</td>
                <td>{&r.last_discovery}</td>
                <td class="cluster-state">{ match &r.error {
                    Some(e) => html! { <span class="error">{e}</span> },
                    None => html! { <span class="ok">{"ok"}</span> },
                } }</td>
                <td class="row-actions">
                    if confirming.as_deref() == Some(r.name.as_str()) {
                        <span class="confirm" role="group" aria-label={format!("Remove cluster {}?", r.name)}>
                            {format!("Remove {} and its whole tree? ", r.name)}
                            <button class="danger" onclick={remove(r.name.clone())}>{"Yes, remove"}</button>
                            <button onclick={ask_remove(None)}>{"Keep it"}</button>
                        </span>
                    } else {
                        <button onclick={discover(r.name.clone())} disabled={working}
                            aria-label={format!("Discover {} now", r.name)}>
                            { if working { "Discovering…" } else { "Discover now" } }
                        </button>
                        <button onclick={ask_remove(Some(r.name.clone()))}
                            aria-label={format!("Remove {}", r.name)}>{"Remove"}</button>
                    }
                </td>
            </tr>
        }
    };
    html! {
        <>
        <section aria-labelledby="clusters-title">
            <h2 id="clusters-title">{"Clusters"}</h2>
            { alert(&error) }
            if let Some(n) = &*note { <p class="note" role="status">{n}</p> }
            { show(&loaded.state, "the clusters", |rows| html! {
                if rows.is_empty() {
                    <p>{"No cluster yet: add one below."}</p>
                } else {
                    <div class="table-wrap">
                    <table class="admin-table clusters">
                        <thead><tr>
                            <th scope="col">{"Name"}</th><th scope="col">{"Address"}</th>
                            <th scope="col">{"Nodes"}</th><th scope="col">{"Guests"}</th>
                            <th scope="col">{"Last discovery"}</th><th scope="col">{"State"}</th>
                            <th scope="col">{"Actions"}</th>
                        </tr></thead>
                        <tbody>{ for rows.iter().map(row) }</tbody>
                    </table>
                    </div>
                }
            }) }
        </section>
        <Wizard {on_added} />
        </>
    }
}
