//! The tree the page shows, loaded level by level and kept current by the server's tree
//! stream (docs/design.md §7.2, §9). The top (`GET /tree?depth=1`: clusters with their
//! nodes, or what the filter's selector matches with one level below) loads once the stream
//! says `ready`, so no change falls between the two; expanding a vertex loads its children
//! (`?selector=ID&depth=1`), collapsing one forgets them; a deep link loads the path down to
//! its vertex. The stream's `vertices` replace the facts of the loaded vertices they name,
//! its `reload` loads again the children of the loaded vertices it names (or everything
//! loaded), and a refresh loads again exactly what is loaded.

use crate::api;
use crate::session::SessionContext;
use crate::view::loaded::Loaded;
use crate::view::tree::ancestors;
use canopy_api_types::clusters::TreeReload;
use canopy_inventory::{Kind, TreeNode};
use gloo_timers::callback::Timeout;
use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use yew::prelude::*;

/// Where the top of the tree is.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Status {
    #[default]
    Loading,
    Ready,
    Failed(String),
}

#[derive(Default)]
pub struct TreeModel {
    pub loaded: Loaded,
    pub expanded: HashSet<String>,
    pub status: Status,
    /// A level that could not be loaded.
    pub note: Option<String>,
    /// Bumped by every change (what the components compare).
    pub gen: u64,
    /// Bumped when the selector changes: answers to an older one are dropped.
    epoch: u64,
    selector: String,
    selected: Option<String>,
    /// The stream said `ready` at least once.
    streaming: bool,
}

/// The model, shared; equal when it is the same one.
#[derive(Clone)]
pub struct Shared(pub Rc<RefCell<TreeModel>>);

impl PartialEq for Shared {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

/// What the page gets: the model (and its generation), and what it may do.
pub struct LiveTree {
    pub model: Shared,
    pub gen: u64,
    pub toggle: Callback<String>,
    pub refresh: Callback<()>,
}

/// Marks a moment in the page's performance timeline (the `ui` bench reads them).
pub fn mark(name: &str) {
    if let Some(p) = web_sys::window().and_then(|w| w.performance()) {
        let _ = p.mark(name);
    }
}

/// Loads and follows the tree for `selector`, opening the path to `selected`.
#[hook]
pub fn use_live_tree(selector: String, selected: Option<String>) -> LiveTree {
    let model = use_mut_ref(TreeModel::default);
    let redraw = use_force_update();
    let expired = use_context::<SessionContext>().map(|s| s.expired);
    // Made once, so the callbacks below stay the same and rows do not draw again for them.
    let ctx = (*use_memo((), {
        let model = model.clone();
        move |_| Ctx {
            model,
            redraw: Callback::from(move |()| redraw.force_update()),
            expired: expired.unwrap_or_default(),
        }
    }))
    .clone();
    model.borrow_mut().selected = selected.clone();
    // Another selector: start over (the first one waits for the stream's `ready`).
    {
        let ctx = ctx.clone();
        use_effect_with(selector, move |sel| {
            let start = {
                let mut m = ctx.model.borrow_mut();
                let first = m.epoch == 0;
                m.epoch += 1;
                m.selector = sel.clone();
                if !first {
                    m.loaded = Loaded::default();
                    m.expanded.clear();
                    m.status = Status::Loading;
                }
                !first || m.streaming
            };
            if start {
                ctx.redraw.emit(());
                ctx.spawn_refresh();
            }
        });
    }
    // The stream; without it after 3 s, the tree loads anyway (and is not live).
    {
        let ctx = ctx.clone();
        use_effect_with((), move |_| {
            let on_event = {
                let ctx = ctx.clone();
                Callback::from(move |(name, data): (&'static str, String)| ctx.event(name, &data))
            };
            let stream = crate::sse::open(
                "api/v1/tree/events",
                &["ready", "vertices", "reload"],
                on_event,
                ctx.expired.clone(),
            );
            let fallback = {
                let ctx = ctx.clone();
                Timeout::new(3_000, move || {
                    let nothing = {
                        let m = ctx.model.borrow();
                        !m.streaming && m.loaded.is_empty()
                    };
                    if nothing {
                        ctx.spawn_refresh();
                    }
                })
            };
            move || drop((stream, fallback))
        });
    }
    // A selection made elsewhere (the address bar) loads and opens the path to it.
    {
        let ctx = ctx.clone();
        use_effect_with(selected, move |sel| {
            if let Some(sel) = sel.clone() {
                if ctx.model.borrow().status == Status::Ready {
                    wasm_bindgen_futures::spawn_local(async move { ctx.open_path(&sel).await });
                }
            }
        });
    }
    let (toggle, refresh) = (*use_memo((), move |_| {
        let c = ctx.clone();
        (
            Callback::from(move |id: String| c.toggle(id)),
            Callback::from(move |()| ctx.spawn_refresh()),
        )
    }))
    .clone();
    let gen = model.borrow().gen;
    LiveTree {
        model: Shared(model),
        gen,
        toggle,
        refresh,
    }
}

#[derive(Clone)]
struct Ctx {
    model: Rc<RefCell<TreeModel>>,
    redraw: Callback<()>,
    expired: Callback<()>,
}

impl Ctx {
    /// Changes the model and draws again.
    fn change(&self, f: impl FnOnce(&mut TreeModel)) {
        {
            let mut m = self.model.borrow_mut();
            f(&mut m);
            m.gen += 1;
        }
        self.redraw.emit(());
    }

    fn event(&self, name: &str, data: &str) {
        match name {
            "ready" => {
                self.model.borrow_mut().streaming = true;
                self.spawn_refresh();
            }
            "vertices" => {
                mark("canopy:tree-event");
                let Ok(vertices) = serde_json::from_str::<Vec<TreeNode>>(data) else {
                    return;
                };
                let shown = self.model.borrow_mut().loaded.apply(vertices);
                if shown > 0 {
                    self.change(|_| {});
                }
            }
            "reload" => {
                let Ok(r) = serde_json::from_str::<TreeReload>(data) else {
                    return;
                };
                if r.all {
                    self.spawn_refresh();
                    return;
                }
                for p in r.parents {
                    let shown = self.model.borrow().loaded.children(&p).is_some();
                    if shown {
                        let ctx = self.clone();
                        wasm_bindgen_futures::spawn_local(async move {
                            ctx.load_children(p).await;
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn spawn_refresh(&self) {
        let ctx = self.clone();
        wasm_bindgen_futures::spawn_local(async move { ctx.refresh().await });
    }

    /// Loads again what is loaded: the top, then every loaded level below it.
    async fn refresh(&self) {
        if !self.load_top().await {
            return;
        }
        let parents = self.model.borrow().loaded.loaded_parents();
        let loads = parents.into_iter().map(|p| self.load_children(p));
        futures::future::join_all(loads).await;
        let selected = self.model.borrow().selected.clone();
        if let Some(sel) = selected {
            self.open_path(&sel).await;
        }
    }

    /// The top of the tree; false when it failed or the selector changed meanwhile.
    async fn load_top(&self) -> bool {
        let (epoch, selector) = {
            let m = self.model.borrow();
            (m.epoch, m.selector.clone())
        };
        let answer = api::call(move |c| {
            let sel = selector.clone();
            async move {
                c.tree_depth(Some(sel.as_str()).filter(|s| !s.is_empty()), 1)
                    .await
            }
        })
        .await;
        if self.model.borrow().epoch != epoch {
            return false;
        }
        match answer {
            Ok(t) => {
                self.change(|m| {
                    let first = m.status != Status::Ready;
                    m.loaded.set_roots(t.trees);
                    if first {
                        // Clusters start open, so their nodes show.
                        let open: Vec<String> = m
                            .loaded
                            .roots()
                            .iter()
                            .filter(|r| m.loaded.get(r).is_some_and(|n| n.kind == Kind::Cluster))
                            .cloned()
                            .collect();
                        m.expanded.extend(open);
                    }
                    m.status = Status::Ready;
                });
                true
            }
            Err(api::Failure::LoggedOut) => {
                self.expired.emit(());
                false
            }
            Err(e) => {
                self.change(|m| m.status = Status::Failed(e.message()));
                false
            }
        }
    }

    /// The children of `id` (and its own facts).
    async fn load_children(&self, id: String) {
        let epoch = self.model.borrow().epoch;
        let sel = id.clone();
        let answer = api::call(move |c| {
            let sel = sel.clone();
            async move { c.tree_depth(Some(sel.as_str()), 1).await }
        })
        .await;
        if self.model.borrow().epoch != epoch {
            return;
        }
        match answer {
            Ok(t) => {
                let Some(node) = t.trees.into_iter().find(|n| n.id.as_str() == id) else {
                    // Gone meanwhile: the stream's reload of its parent follows.
                    self.change(|m| {
                        m.expanded.remove(&id);
                    });
                    return;
                };
                self.change(|m| m.loaded.set_children(node));
            }
            Err(api::Failure::LoggedOut) => self.expired.emit(()),
            Err(e) => self.change(|m| {
                m.expanded.remove(&id);
                m.note = Some(format!("Cannot load the children of {id}: {}", e.message()));
            }),
        }
    }

    /// Opens the ancestors of `id`, loading the levels not loaded yet, top down.
    async fn open_path(&self, id: &str) {
        for a in ancestors(id) {
            let (known, loaded) = {
                let m = self.model.borrow();
                (m.loaded.get(&a).is_some(), m.loaded.children(&a).is_some())
            };
            if !known {
                return; // not in the tree (or not under the selector)
            }
            if !self.model.borrow().expanded.contains(&a) {
                let a = a.clone();
                self.change(|m| {
                    m.expanded.insert(a);
                });
            }
            if !loaded {
                self.load_children(a).await;
            }
        }
    }

    fn toggle(&self, id: String) {
        let open = self.model.borrow().expanded.contains(&id);
        if open {
            self.change(|m| {
                m.expanded.remove(&id);
                // Forgotten, unless the selected vertex is below it (its detail shows).
                let holds_selected = m
                    .selected
                    .as_deref()
                    .is_some_and(|s| s.starts_with(&format!("{id}/")));
                if !holds_selected {
                    m.loaded.unload_below(&id);
                }
            });
            return;
        }
        let loaded = self.model.borrow().loaded.children(&id).is_some();
        self.change(|m| {
            m.expanded.insert(id.clone());
        });
        if !loaded {
            let ctx = self.clone();
            wasm_bindgen_futures::spawn_local(async move { ctx.load_children(id).await });
        }
    }
}
