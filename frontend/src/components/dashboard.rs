//! The tree page: the filter box and the tree on the left, the selected vertex's detail on
//! the right. The selection is the address (`tree/<path id>` below the base), so it
//! survives a reload and can be shared. The tree is loaded level by level and kept current
//! by the server's tree stream ([`super::live_tree`]).

use super::detail::Detail;
use super::filter::Filter;
use super::live_tree::{use_live_tree, Status};
use super::tree::Tree;
use crate::nav::NavContext;
use crate::view::page::Page;
use std::rc::Rc;
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
    let tree = use_live_tree((*selector).clone(), props.selected.clone());
    let on_select = use_callback(nav, |id: String, nav| nav.go(Page::Tree(Some(id))));
    let on_apply = {
        let selector = selector.clone();
        Callback::from(move |s: String| selector.set(s))
    };
    let selected = &props.selected;
    let m = tree.model.0.borrow();
    html! {
        <div class="tree-page">
            <nav class="side" aria-label="Inventory">
                <div class="side-tools">
                    <button class="link" onclick={tree.refresh.reform(|_: MouseEvent| ())}>{"Refresh"}</button>
                </div>
                <Filter applied={(*selector).clone()} {on_apply} />
                if let Some(note) = &m.note {
                    <p class="error" role="alert">{note}</p>
                }
                { match &m.status {
                    Status::Loading => html! { <p role="status">{"Loading the tree…"}</p> },
                    Status::Failed(e) => html! { <p class="error" role="alert">{format!("Cannot load the tree: {e}")}</p> },
                    Status::Ready if m.loaded.is_empty() => html! {
                        <p>{ if selector.is_empty() { "No clusters yet: add one with canopy cluster add." } else { "Nothing matches this selector." } }</p>
                    },
                    Status::Ready => html! {
                        <Tree model={tree.model.clone()} gen={tree.gen} selected={selected.clone()}
                              {on_select} on_toggle={tree.toggle.clone()} />
                    },
                } }
            </nav>
            <main class="main">
                { match (m.loaded.get(selected.as_deref().unwrap_or("")), selected) {
                    (Some(_), Some(id)) => html! {
                        <Detail forest={Rc::new(m.loaded.forest_of(id))} id={id.clone()} />
                    },
                    (None, Some(_)) if m.status == Status::Loading => html! { <p role="status">{"Loading…"}</p> },
                    (None, Some(id)) => html! { <section class="detail"><p>{format!("{id} is not in the tree (any more).")}</p></section> },
                    _ => html! { <p class="hint">{"Select a cluster, node or guest to see its details."}</p> },
                } }
            </main>
        </div>
    }
}
