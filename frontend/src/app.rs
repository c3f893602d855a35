//! The root: asks the server who is logged in (the session cookie, refreshed once if it
//! expired), then shows the login page or the dashboard. Every page but the login needs a
//! session, so a logged-out visitor of any address lands on the login page.

use crate::api;
use crate::components::login::Login;
use crate::components::shell::Shell;
use crate::nav::{use_nav, NavContext};
use crate::session::SessionContext;
use canopy_api_types::auth::User;
use yew::prelude::*;

#[derive(Clone, PartialEq)]
enum Who {
    Checking,
    Nobody(Option<String>),
    User(User),
}

#[function_component(App)]
pub fn app() -> Html {
    let who = use_state(|| Who::Checking);
    let nav = use_nav();
    {
        let who = who.clone();
        use_effect_with((), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                who.set(match api::call(|c| async move { c.me().await }).await {
                    Ok(user) => Who::User(user),
                    Err(api::Failure::LoggedOut) => Who::Nobody(None),
                    Err(e) => Who::Nobody(Some(e.message())),
                });
            });
        });
    }
    let on_login = {
        let who = who.clone();
        Callback::from(move |user: User| who.set(Who::User(user)))
    };
    let expired = {
        let who = who.clone();
        Callback::from(move |()| {
            who.set(Who::Nobody(Some(
                "Your session ended; log in again.".into(),
            )))
        })
    };
    let logout = {
        let who = who.clone();
        Callback::from(move |()| {
            let who = who.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let _ = api::client().browser_logout().await;
                who.set(Who::Nobody(Some("Logged out.".into())));
            });
        })
    };
    match &*who {
        Who::Checking => html! { <p class="splash" role="status">{"Loading Canopy…"}</p> },
        Who::Nobody(note) => html! { <Login note={note.clone()} {on_login} /> },
        Who::User(user) => {
            let ctx = SessionContext {
                user: user.clone(),
                expired,
            };
            html! {
                <ContextProvider<SessionContext> context={ctx}>
                    <ContextProvider<NavContext> context={nav}>
                        <Shell on_logout={logout} />
                    </ContextProvider<NavContext>>
                </ContextProvider<SessionContext>>
            }
        }
    }
}
