//! The tree page: the filter box and the tree on the left, the selected vertex's detail on
//! the right. The selection is the address (`tree/<path id>` below the base), so it
//! survives a reload and can be shared.

use super::detail::Detail;
use super::filter::Filter;
use super::tree::Tree;
use crate::api;
use crate::loadable::{use_loadable, Loadable};
use crate::nav::NavContext;
use crate::view::page::Page;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct DashboardProps {
    /// The selected vertex's path id, from the address.
    pub selected: Option<String>,
}

#[function_component(Dashboard)]
pub fn dashboard(props: &DashboardProps) -> Html {
    let nav = use_context::<NavContext>().expect("the app provides the navigation");
    let selector = use_state(String::new);
    let tree = use_loadable(
        (*selector).clone(),
        Some(15_000),
        |sel: String| async move {
            api::call(move |c| {
                let sel = sel.clone();
                async move {
                    c.tree(Some(sel.as_str()).filter(|s| !s.is_empty()))
                        .await
                        .map(|t| t.trees)
                }
            })
            .await
        },
    );
    let on_select = Callback::from(move |id: String| nav.go(Page::Tree(Some(id))));
    let on_apply = {
        let selector = selector.clone();
        Callback::from(move |s: String| selector.set(s))
    };
    let selected = &props.selected;
    html! {
        <div class="tree-page">
            <nav class="side" aria-label="Inventory">
                <div class="side-tools">
                    <button class="link" onclick={tree.reload.reform(|_: MouseEvent| ())}>{"Refresh"}</button>
                </div>
                <Filter applied={(*selector).clone()} {on_apply} />
                { match &tree.state {
                    Loadable::Loading => html! { <p role="status">{"Loading the tree…"}</p> },
                    Loadable::Failed(e) => html! { <p class="error" role="alert">{format!("Cannot load the tree: {e}")}</p> },
                    Loadable::Ready(t) if t.is_empty() => html! {
                        <p>{ if selector.is_empty() { "No clusters yet: add one with canopy cluster add." } else { "Nothing matches this selector." } }</p>
                    },
                    Loadable::Ready(t) => html! {
                        <Tree forest={t.clone()} selected={selected.clone()} on_select={on_select.clone()} />
                    },
                } }
            </nav>
            <main class="main">
                { match (&tree.state, selected) {
                    (Loadable::Ready(t), Some(id)) => html! {
                        <Detail forest={t.clone()} id={id.clone()} />
                    },
                    _ => html! { <p class="hint">{"Select a cluster, node or guest to see its details."}</p> },
                } }
            </main>
        </div>
    }
}
