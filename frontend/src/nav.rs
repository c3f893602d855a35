//! Where the user is: the page shown (from the address, [`crate::view::page::Page`]) and the
//! one way to go elsewhere, shared with every component through a context. Going to another
//! page adds a history entry, so the browser's Back works; moving the selection within the
//! tree replaces it.

use crate::api;
use crate::view::page::Page;
use yew::prelude::*;

#[derive(Clone, PartialEq)]
pub struct NavContext {
    pub page: Page,
    go: Callback<Page>,
}

impl NavContext {
    pub fn go(&self, page: Page) {
        self.go.emit(page)
    }

    /// A callback that goes to `page` (for `onclick`).
    pub fn to<E>(&self, page: Page) -> Callback<E> {
        let go = self.go.clone();
        Callback::from(move |_: E| go.emit(page.clone()))
    }
}

/// The page state, kept in step with the address bar and the browser's Back and Forward.
#[hook]
pub fn use_nav() -> NavContext {
    let page = use_state(|| Page::parse(&api::route()));
    {
        let page = page.clone();
        use_effect_with((), move |_| {
            let listener = web_sys::window().map(|w| {
                let page = page.clone();
                let cb = wasm_bindgen::closure::Closure::<dyn Fn()>::new(move || {
                    page.set(Page::parse(&api::route()))
                });
                let _ = w.add_event_listener_with_callback(
                    "popstate",
                    wasm_bindgen::JsCast::unchecked_ref(cb.as_ref()),
                );
                (w, cb)
            });
            move || {
                if let Some((w, cb)) = listener {
                    let _ = w.remove_event_listener_with_callback(
                        "popstate",
                        wasm_bindgen::JsCast::unchecked_ref(cb.as_ref()),
                    );
                }
            }
        });
    }
    let go = {
        let page = page.clone();
        Callback::from(move |next: Page| {
            let within_tree = matches!((&*page, &next), (Page::Tree(_), Page::Tree(_)));
            api::set_route(&next.path(), !within_tree);
            page.set(next);
        })
    };
    NavContext {
        page: (*page).clone(),
        go,
    }
}
