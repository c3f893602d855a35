//! The login page: name and password, sent to `POST /auth/session`; the session lands in
//! HttpOnly cookies the page never sees.

use crate::api;
use canopy_api_types::auth::User;
use web_sys::HtmlInputElement;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct LoginProps {
    /// Why the page is shown (session ended, logged out).
    #[prop_or_default]
    pub note: Option<String>,
    pub on_login: Callback<User>,
}

#[function_component(Login)]
pub fn login(props: &LoginProps) -> Html {
    let username = use_node_ref();
    let password = use_node_ref();
    let error = use_state(|| None::<String>);
    let busy = use_state(|| false);
    let onsubmit = {
        let (username, password, error, busy) = (
            username.clone(),
            password.clone(),
            error.clone(),
            busy.clone(),
        );
        let on_login = props.on_login.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let value = |r: &NodeRef| {
                r.cast::<HtmlInputElement>()
                    .map(|i| i.value())
                    .unwrap_or_default()
            };
            let (name, pass) = (value(&username), value(&password));
            let (error, busy, on_login) = (error.clone(), busy.clone(), on_login.clone());
            busy.set(true);
            wasm_bindgen_futures::spawn_local(async move {
                match api::client().browser_login(&name, &pass).await {
                    Ok(session) => on_login.emit(session.user),
                    Err(e) => {
                        error.set(Some(api::describe(&e)));
                        busy.set(false);
                    }
                }
            });
        })
    };
    html! {
        <main class="login">
            <form class="login-box" {onsubmit} aria-labelledby="login-title">
                <h1 id="login-title">{"Canopy"}</h1>
                if let Some(note) = &props.note {
                    <p class="note" role="status">{note}</p>
                }
                <label for="username">{"User name"}</label>
                <input id="username" name="username" ref={username} autocomplete="username"
                    value="admin" required=true />
                <label for="password">{"Password"}</label>
                <input id="password" name="password" type="password" ref={password}
                    autocomplete="current-password" required=true />
                if let Some(e) = &*error {
                    <p class="error" role="alert">{e}</p>
                }
                <button type="submit" disabled={*busy}>{ if *busy { "Logging in…" } else { "Log in" } }</button>
            </form>
        </main>
    }
}
