//! The inventory tree (clusters → nodes → guests) as the WAI-ARIA tree pattern: one
//! `treeitem` per visible row with its level and expanded state, one tab stop, the arrow
//! keys to move, expand and collapse, Enter to open the detail. Only the rows of expanded
//! vertices are built (`view::tree::visible_rows`), and of a long list only the window the
//! viewport shows is in the page (`view::tree::window`), between two spacers whose heights
//! are set through the CSSOM (the CSP allows no `style` attribute).

use super::badges::Badges;
use crate::view::tree::{ancestors, key, scroll_to, visible_rows, window, Nav, Row, ROW_PX};
use canopy_inventory::{Kind, TreeNode};
use std::collections::HashSet;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct TreeProps {
    pub forest: Rc<Vec<TreeNode>>,
    pub selected: Option<String>,
    pub on_select: Callback<String>,
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

#[function_component(Tree)]
pub fn tree(props: &TreeProps) -> Html {
    // Clusters start open, so their nodes show.
    let expanded = {
        let forest = props.forest.clone();
        use_state(move || {
            forest
                .iter()
                .map(|c| c.id.to_string())
                .collect::<HashSet<_>>()
        })
    };
    let focused = use_state(|| props.selected.clone().unwrap_or_default());
    let by_keyboard = use_mut_ref(|| false);
    // A selection made elsewhere (the address bar) opens its ancestors.
    {
        let expanded = expanded.clone();
        use_effect_with(props.selected.clone(), move |sel| {
            if let Some(sel) = sel {
                let missing: Vec<String> = ancestors(sel)
                    .into_iter()
                    .filter(|a| !expanded.contains(a))
                    .collect();
                if !missing.is_empty() {
                    let mut next = (*expanded).clone();
                    next.extend(missing);
                    expanded.set(next);
                }
            }
        });
    }
    let rows: Rc<Vec<Row>> = Rc::new(visible_rows(&props.forest, &expanded));
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
                let i = rows.iter().position(|r| &r.id == id);
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
    let toggle = {
        let expanded = expanded.clone();
        Callback::from(move |id: String| {
            let mut next = (*expanded).clone();
            if !next.remove(&id) {
                next.insert(id);
            }
            expanded.set(next);
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
    let tab_stop = if rows.iter().any(|r| r.id == *focused) {
        (*focused).clone()
    } else {
        rows.first().map(|r| r.id.clone()).unwrap_or_default()
    };
    html! {
        <div class="tree-view" ref={viewport} {onscroll}>
        <ul class="tree" role="tree" aria-label="Clusters, nodes and guests" {onkeydown}>
            <li class="spacer" role="none" aria-hidden="true" ref={top_spacer}></li>
            { for rows[start..end].iter().map(|row| {
                let id = row.id.clone();
                let onclick = {
                    let (focused, on_select, id) = (focused.clone(), props.on_select.clone(), id.clone());
                    Callback::from(move |_: MouseEvent| {
                        focused.set(id.clone());
                        on_select.emit(id.clone());
                    })
                };
                let on_twisty = {
                    let (toggle, id) = (toggle.clone(), id.clone());
                    Callback::from(move |e: MouseEvent| {
                        e.stop_propagation();
                        toggle.emit(id.clone());
                    })
                };
                let selected = props.selected.as_deref() == Some(row.id.as_str());
                html! {
                    <li key={row.id.clone()} id={dom_id(&row.id)} role="treeitem"
                        class={classes!("row", format!("lvl-{}", row.level.min(6)), selected.then_some("selected"))}
                        aria-level={row.level.to_string()}
                        aria-expanded={row.has_children.then(|| row.expanded.to_string())}
                        aria-selected={selected.to_string()}
                        tabindex={if row.id == tab_stop { "0" } else { "-1" }}
                        {onclick}>
                        <span class={classes!("twisty", row.has_children.then_some(if row.expanded { "open" } else { "closed" }))}
                              aria-hidden="true" onclick={on_twisty}></span>
                        <span class={classes!("dot", format!("tone-{}", row.tone))} aria-hidden="true"></span>
                        <span class={classes!("kind", kind_class(row.kind))} aria-hidden="true"></span>
                        <span class="label">{&row.label}</span>
                        if let Some(status) = &row.status {
                            <span class="visually-hidden">{format!(", {status}")}</span>
                        }
                        if row.template {
                            <span class="tag template">{"template"}</span>
                        }
                        { for row.tags.iter().map(|t| html! { <span class="tag">{t}</span> }) }
                        <Badges badges={row.badges.clone()} />
                    </li>
                }
            }) }
            <li class="spacer" role="none" aria-hidden="true" ref={bottom_spacer}></li>
        </ul>
        </div>
    }
}
