//! Administration (admins only; the server enforces the roles anyway): the section tabs
//! (links with addresses, `admin/SECTION`) and what the sections share: showing a load,
//! running one change with the server's own words on failure, a copy button.

mod clusters;
mod deploy_key;
mod tokens;
mod users;
mod wizard;

use crate::api;
use crate::loadable::Loadable;
use crate::nav::NavContext;
use crate::view::admin::AdminSection;
use crate::view::page::Page;
use canopy_api_types::client::{Client, ClientError};
use std::future::Future;
use wasm_bindgen::JsCast;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct AdminProps {
    /// The section's part of the address (empty: the first one).
    pub section: String,
}

#[function_component(Admin)]
pub fn admin(props: &AdminProps) -> Html {
    let nav = use_context::<NavContext>().expect("the app provides the navigation");
    let current = AdminSection::parse(&props.section);
    let tab = |s: AdminSection| {
        let page = Page::Admin(s.slug().to_string());
        html! {
            <a href={page.path()} aria-current={(s == current).then_some("page")}
               onclick={nav.to::<MouseEvent>(page).reform(|e: MouseEvent| { e.prevent_default(); e })}>
                {s.title()}
            </a>
        }
    };
    html! {
        <main class="page admin">
            <h1 class="admin-title">{"Administration"}</h1>
            <nav class="admin-tabs" aria-label="Administration sections">
                { for AdminSection::ALL.into_iter().map(tab) }
            </nav>
            { match current {
                AdminSection::Clusters => html! { <clusters::Clusters /> },
                AdminSection::Tokens => html! { <tokens::Tokens /> },
                AdminSection::Users => html! { <users::Users /> },
                AdminSection::DeployKey => html! { <deploy_key::DeployKey /> },
            } }
        </main>
    }
}

/// Loading, an error in the server's words, or the content.
fn show<T>(state: &Loadable<T>, what: &str, f: impl FnOnce(&T) -> Html) -> Html {
    match state {
        Loadable::Loading => html! { <p role="status">{format!("Loading {what}…")}</p> },
        Loadable::Failed(e) => {
            html! { <p class="error" role="alert">{format!("Cannot load {what}: {e}")}</p> }
        }
        Loadable::Ready(v) => f(v),
    }
}

/// Runs one change through [`api::call`]: on success `done` gets the answer and the error
/// is cleared; on failure `error` holds the server's message.
fn run<T, F, Fut>(error: UseStateHandle<Option<String>>, f: F, done: impl FnOnce(T) + 'static)
where
    T: 'static,
    F: Fn(Client) -> Fut + 'static,
    Fut: Future<Output = Result<T, ClientError>> + 'static,
{
    wasm_bindgen_futures::spawn_local(async move {
        match api::call(f).await {
            Ok(v) => {
                error.set(None);
                done(v)
            }
            Err(e) => error.set(Some(e.message())),
        }
    });
}

/// The error of the last change, if any, announced to screen readers.
fn alert(error: &Option<String>) -> Html {
    match error {
        Some(e) => html! { <p class="error" role="alert">{e}</p> },
        None => html! {},
    }
}

/// The value of an input or textarea event's target.
fn value(e: &Event) -> String {
    let target = e.target();
    if let Some(i) = target
        .clone()
        .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
    {
        return i.value();
    }
    if let Some(s) = target
        .clone()
        .and_then(|t| t.dyn_into::<web_sys::HtmlSelectElement>().ok())
    {
        return s.value();
    }
    target
        .and_then(|t| t.dyn_into::<web_sys::HtmlTextAreaElement>().ok())
        .map(|t| t.value())
        .unwrap_or_default()
}

#[derive(Properties, PartialEq)]
struct CopyProps {
    text: String,
    /// What is copied, for screen readers (`Copy the public key`).
    label: &'static str,
}

/// Copies `text` with `navigator.clipboard` and says whether it worked.
#[function_component(CopyButton)]
fn copy_button(props: &CopyProps) -> Html {
    let said = use_state(|| None::<&'static str>);
    let onclick = {
        let (said, text) = (said.clone(), props.text.clone());
        Callback::from(move |_: MouseEvent| {
            let (said, text) = (said.clone(), text.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let Some(w) = web_sys::window() else { return };
                let promise = w.navigator().clipboard().write_text(&text);
                said.set(Some(
                    match wasm_bindgen_futures::JsFuture::from(promise).await {
                        Ok(_) => "Copied.",
                        Err(_) => "The browser refused; select the text and copy it.",
                    },
                ));
            });
        })
    };
    html! {
        <span class="copy">
            <button type="button" {onclick} aria-label={props.label}>{"Copy"}</button>
            <span class="copy-said" role="status">{ said.unwrap_or("") }</span>
        </span>
    }
}
