//! The filter box: a selector (`cluster/home/**[tag=prod]`), previewed live as the user
//! types (a quarter second after the last key) ("resolves to 14 hosts (1 template skipped)", from `GET /tree/preview`), applied to
//! the tree with Enter.

use crate::api;
use crate::loadable::{use_loadable, Loadable};
use crate::view::detail::{preview_line, PreviewLine};
use gloo_timers::callback::Timeout;
use web_sys::HtmlInputElement;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct FilterProps {
    pub applied: String,
    pub on_apply: Callback<String>,
}

#[function_component(Filter)]
pub fn filter(props: &FilterProps) -> Html {
    let text = use_state(|| props.applied.clone());
    // Asked 250 ms after the last keystroke, not once per key.
    let settled = use_state(|| props.applied.clone());
    let pending = use_mut_ref(|| None::<Timeout>);
    let preview = use_loadable((*settled).clone(), None, |sel: String| async move {
        if sel.trim().is_empty() {
            return Ok(Err(String::new()));
        }
        let s = sel.clone();
        match api::call(move |c| {
            let s = s.clone();
            async move { c.preview(&s).await }
        })
        .await
        {
            Ok(p) => Ok(Ok(p)),
            Err(api::Failure::Other(m)) => Ok(Err(m)),
            Err(e) => Err(e),
        }
    });
    let line = match &preview.state {
        _ if *text != *settled => preview_line(&text, None),
        Loadable::Ready(answer) => preview_line(
            &text,
            Some(answer.as_ref().as_ref().map_err(String::as_str)),
        ),
        _ => preview_line(&text, None),
    };
    let oninput = {
        let (text, settled) = (text.clone(), settled.clone());
        Callback::from(move |e: InputEvent| {
            let input: HtmlInputElement = e.target_unchecked_into();
            let value = input.value();
            text.set(value.clone());
            let settled = settled.clone();
            // Replacing the timeout cancels the previous one.
            *pending.borrow_mut() = Some(Timeout::new(250, move || settled.set(value)));
        })
    };
    let onsubmit = {
        let (text, on_apply) = (text.clone(), props.on_apply.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            on_apply.emit((*text).trim().to_string());
        })
    };
    let clear = {
        let (text, settled, on_apply) = (text.clone(), settled.clone(), props.on_apply.clone());
        Callback::from(move |_: MouseEvent| {
            text.set(String::new());
            settled.set(String::new());
            on_apply.emit(String::new());
        })
    };
    html! {
        <form class="filter" role="search" {onsubmit}>
            <label for="selector">{"Filter by selector"}</label>
            <div class="filter-row">
                <input id="selector" type="search" value={(*text).clone()} {oninput}
                    placeholder="cluster/home/**[tag=prod]" spellcheck="false"
                    autocomplete="off" aria-describedby="selector-preview" />
                <button type="submit">{"Apply"}</button>
                if !props.applied.is_empty() {
                    <button type="button" onclick={clear}>{"Clear"}</button>
                }
            </div>
            <p id="selector-preview" class="preview" aria-live="polite">
                { match line {
                    PreviewLine::Empty => html! { {"All clusters. Type a selector to narrow the tree."} },
                    PreviewLine::Checking => html! { {"Checking…"} },
                    PreviewLine::Resolves(s) => html! { <span class="resolves">{s}</span> },
                    PreviewLine::Invalid(e) => html! { <span class="error">{e}</span> },
                } }
            </p>
        </form>
    }
}
