//! The inventory tree (clusters → nodes → guests) as the WAI-ARIA tree pattern: one
//! `treeitem` per visible row with its level, place among its siblings, expanded state and
//! `aria-busy` while its children load; one tab stop, the arrow keys to move, expand and
//! collapse, Enter to open the detail. Only the rows of expanded, loaded vertices are built
//! (`view::tree::visible_rows`), and of a long list only the window the viewport shows is in
//! the page (`view::tree::window`), between two spacers whose heights are set through the
//! CSSOM (the CSP allows no `style` attribute). Each row is a component of its own, keyed by
//! its path id: a live update draws again only the rows whose vertex changed.

use super::badges::Badges;
use super::live_tree::{mark, Shared};
use crate::view::tree::{face, key, scroll_to, visible_rows, window, Nav, Row, ROW_PX};
use canopy_inventory::{Kind, TreeNode};
use std::rc::Rc;
use wasm_bindgen::JsCast;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct TreeProps {
    pub model: Shared,
    /// The model's generation: a new one draws again.
    pub gen: u64,
    pub selected: Option<String>,
    pub on_select: Callback<String>,
    pub on_toggle: Callback<String>,
}

fn dom_id(id: &str) -> String {
    format!("t-{id}")
}

fn kind_class(kind: Kind) -> &'static str {
    match kind {
        Kind::Cluster => "k-cluster",
        Kind::Node => "k-node",
        Kind::Lxc => "k-lxc",
        Kind::Vm => "k-vm",
        Kind::Docker => "k-docker",
    }
}

#[derive(Properties, PartialEq)]
struct RowProps {
    node: Rc<TreeNode>,
    level: usize,
    setsize: usize,
    posinset: usize,
    has_children: bool,
    expanded: bool,
    busy: bool,
    selected: bool,
    tab_stop: bool,
    /// Clicked: focus and select it.
    on_pick: Callback<String>,
    on_toggle: Callback<String>,
}

/// One row; drawn again only when its own props change.
#[function_component(TreeRow)]
fn tree_row(p: &RowProps) -> Html {
    let id = p.node.id.as_str().to_string();
    let f = face(&p.node);
    let onclick = p.on_pick.reform({
        let id = id.clone();
        move |_: MouseEvent| id.clone()
    });
    let on_twisty = {
        let (toggle, id) = (p.on_toggle.clone(), id.clone());
        Callback::from(move |e: MouseEvent| {
            e.stop_propagation();
            toggle.emit(id.clone());
        })
    };
    html! {
        <li id={dom_id(&id)} role="treeitem"
            class={classes!("row", format!("lvl-{}", p.level.min(6)), p.selected.then_some("selected"))}
            aria-level={p.level.to_string()}
            aria-setsize={p.setsize.to_string()}
            aria-posinset={p.posinset.to_string()}
            aria-expanded={p.has_children.then(|| p.expanded.to_string())}
            aria-busy={p.busy.then_some("true")}
            aria-selected={p.selected.to_string()}
            tabindex={if p.tab_stop { "0" } else { "-1" }}
            {onclick}>
            <span class={classes!("twisty", p.has_children.then_some(if p.expanded { "open" } else { "closed" }))}
                  aria-hidden="true" onclick={on_twisty}></span>
            <span class={classes!("dot", format!("tone-{}", f.tone))} aria-hidden="true"></span>
            <span class={classes!("kind", kind_class(p.node.kind))} aria-hidden="true"></span>
            <span class="label">{&f.label}</span>
            if let Some(status) = &f.status {
                <span class="visually-hidden">{format!(", {status}")}</span>
            }
            if f.template {
                <span class="tag template">{"template"}</span>
            }
            { for f.tags.iter().map(|t| html! { <span class="tag">{t}</span> }) }
            <Badges badges={f.badges.clone()} />
        </li>
    }
}

#[function_component(Tree)]
pub fn tree(props: &TreeProps) -> Html {
    let focused = use_state(|| props.selected.clone().unwrap_or_default());
    let by_keyboard = use_mut_ref(|| false);
    let rows: Rc<Vec<Row>> = {
        let m = props.model.0.borrow();
        use_memo((props.model.clone(), props.gen), |_| {
            visible_rows(&m.loaded, &m.expanded)
        })
    };
    // The app is ready once the first rows are in the page (the `ui` bench reads it).
    let marked = use_mut_ref(|| false);
    {
        let (marked, any) = (marked.clone(), !rows.is_empty());
        use_effect(move || {
            if any && !*marked.borrow() {
                *marked.borrow_mut() = true;
                mark("canopy:tree-ready");
            }
        });
    }
    let viewport = use_node_ref();
    let (top_spacer, bottom_spacer) = (use_node_ref(), use_node_ref());
    // (scroll_top, height) of the viewport, updated every few rows of scrolling.
    let scroll = use_state(|| (0u32, 900u32));
    let (start, end) = window(rows.len(), scroll.0, scroll.1);
    {
        let (top, bottom, len) = (top_spacer.clone(), bottom_spacer.clone(), rows.len());
        use_effect_with((start, end, len), move |&(start, end, len)| {
            for (r, n) in [(&top, start), (&bottom, len - end)] {
                if let Some(el) = r.cast::<web_sys::HtmlElement>() {
                    let _ = el
                        .style()
                        .set_property("height", &format!("{}px", n as u32 * ROW_PX));
                }
            }
        });
    }
    let onscroll = {
        let (scroll, viewport) = (scroll.clone(), viewport.clone());
        Callback::from(move |_: Event| {
            if let Some(el) = viewport.cast::<web_sys::HtmlElement>() {
                let (top, height) = (
                    el.scroll_top().max(0) as u32,
                    el.client_height().max(0) as u32,
                );
                if top.abs_diff(scroll.0) >= 5 * ROW_PX || height != scroll.1 {
                    scroll.set((top, height));
                }
            }
        })
    };
    // Keyboard moves take the browser's focus along; a row outside the window is scrolled
    // to first, and focused once it is in the page.
    {
        let (by_keyboard, rows, viewport, scroll) = (
            by_keyboard.clone(),
            rows.clone(),
            viewport.clone(),
            scroll.clone(),
        );
        use_effect_with(((*focused).clone(), start), move |(id, _)| {
            if *by_keyboard.borrow() {
                let el = web_sys::window()
                    .and_then(|w| w.document())
                    .and_then(|d| d.get_element_by_id(&dom_id(id)))
                    .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok());
                let i = rows.iter().position(|r| r.id() == id);
                let view = viewport.cast::<web_sys::HtmlElement>();
                if let (Some(i), Some(view)) = (i, &view) {
                    let height = view.client_height().max(0) as u32;
                    if let Some(top) = scroll_to(i, view.scroll_top().max(0) as u32, height) {
                        view.set_scroll_top(top as i32);
                        scroll.set((top, height));
                    }
                }
                if let Some(el) = el {
                    let _ = el.focus();
                    *by_keyboard.borrow_mut() = false;
                }
            }
        });
    }
    let toggle = props.on_toggle.clone();
    let on_pick = {
        let (focused, on_select) = (focused.setter(), props.on_select.clone());
        use_callback(on_select, move |id: String, on_select| {
            focused.set(id.clone());
            on_select.emit(id);
        })
    };
    let onkeydown = {
        let (rows, focused, toggle) = (rows.clone(), focused.clone(), toggle.clone());
        let on_select = props.on_select.clone();
        Callback::from(move |e: KeyboardEvent| {
            match key(&rows, &focused, &e.key()) {
                Nav::Nothing => return,
                Nav::Focus(id) => {
                    *by_keyboard.borrow_mut() = true;
                    focused.set(id);
                }
                Nav::Expand(id) | Nav::Collapse(id) => toggle.emit(id),
                Nav::Select(id) => on_select.emit(id),
            }
            e.prevent_default();
        })
    };
    let tab_stop = if rows.iter().any(|r| r.id() == *focused) {
        (*focused).clone()
    } else {
        rows.first().map(|r| r.id().to_string()).unwrap_or_default()
    };
    html! {
        <div class="tree-view" ref={viewport} {onscroll}>
        <ul class="tree" role="tree" aria-label="Clusters, nodes and guests" {onkeydown}>
            <li class="spacer" role="none" aria-hidden="true" ref={top_spacer}></li>
            { for rows[start..end].iter().map(|row| html! {
                <TreeRow key={row.id()} node={row.node.clone()} level={row.level}
                    setsize={row.setsize} posinset={row.posinset}
                    has_children={row.has_children} expanded={row.expanded} busy={row.busy}
                    selected={props.selected.as_deref() == Some(row.id())}
                    tab_stop={row.id() == tab_stop}
                    on_pick={on_pick.clone()} on_toggle={toggle.clone()} />
            }) }
            <li class="spacer" role="none" aria-hidden="true" ref={bottom_spacer}></li>
        </ul>
        </div>
    }
}
