//! The registration tokens section: the tokens with their uses, expiry and state; a new
//! one (a note, how many agents may enrol with it, how long it lives) whose secret is shown
//! once, with a copy button; revoking one.

use super::{alert, run, show, value, CopyButton};
use crate::api;
use crate::loadable::use_loadable;
use crate::view::admin::{seats, token_row, TOKEN_LIFETIMES};
use canopy_api_types::auth::{CreateRegistrationToken, CreatedRegistrationToken};
use chrono::{DateTime, Utc};
use yew::prelude::*;

/// The browser's clock (chrono's own has none in wasm32).
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(js_sys::Date::now() as i64).unwrap_or_default()
}

#[function_component(Tokens)]
pub fn tokens() -> Html {
    let loaded = use_loadable((), None, |()| async move {
        api::call(|c| async move { c.registration_tokens().await }).await
    });
    let label = use_state(String::new);
    let uses = use_state(|| "1".to_string());
    let lifetime = use_state(|| TOKEN_LIFETIMES[1].0);
    let created = use_state(|| None::<CreatedRegistrationToken>);
    let error = use_state(|| None::<String>);

    let create = {
        let (label, uses, lifetime, created, error, reload) = (
            label.clone(),
            uses.clone(),
            lifetime.clone(),
            created.clone(),
            error.clone(),
            loaded.reload.clone(),
        );
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let seats = match seats(&uses) {
                Ok(n) => n,
                Err(e) => return error.set(Some(e)),
            };
            let req = CreateRegistrationToken {
                label: label.trim().to_string(),
                seats,
                expires_in_secs: *lifetime,
            };
            let (created, label, reload) = (created.clone(), label.clone(), reload.clone());
            run(
                error.clone(),
                move |c| {
                    let req = req.clone();
                    async move { c.create_registration_token(&req).await }
                },
                move |t| {
                    created.set(Some(t));
                    label.set(String::new());
                    reload.emit(());
                },
            );
        })
    };
    let revoke = |id: canopy_api_types::RegistrationTokenId| {
        let (error, reload) = (error.clone(), loaded.reload.clone());
        Callback::from(move |_: MouseEvent| {
            let reload = reload.clone();
            run(
                error.clone(),
                move |c| async move { c.revoke_registration_token(id).await },
                move |_| reload.emit(()),
            );
        })
    };
    let dismiss = {
        let created = created.clone();
        Callback::from(move |_: MouseEvent| created.set(None))
    };
    let on_label = {
        let label = label.clone();
        Callback::from(move |e: InputEvent| label.set(value(&e)))
    };
    let on_uses = {
        let uses = uses.clone();
        Callback::from(move |e: InputEvent| uses.set(value(&e)))
    };
    let on_lifetime = {
        let lifetime = lifetime.clone();
        Callback::from(move |e: Event| {
            if let Ok(v) = value(&e).parse() {
                lifetime.set(v)
            }
        })
    };
    html! {
        <>
        <section aria-labelledby="tokens-title">
            <h2 id="tokens-title">{"Registration tokens"}</h2>
            <p class="muted">{"An agent installed by hand enrols with one of these: "}
                <code>{"canopy-agent register --server URL --token TOKEN"}</code>{"."}</p>
            if let Some(t) = &*created {
                <div class="secret-box" role="group" aria-labelledby="secret-title">
                    <p id="secret-title"><strong>{format!("New token {}", if t.info.label.is_empty() { "(no note)" } else { &t.info.label })}</strong></p>
                    <p class="warning">{"Copy it now: this is the only time it is shown. Canopy keeps only its hash."}</p>
                    <div class="secret-line">
                        <label for="new-token" class="visually-hidden">{"The new registration token"}</label>
                        <input id="new-token" type="text" readonly=true value={t.token.clone()} />
                        <CopyButton text={t.token.clone()} label="Copy the registration token" />
                    </div>
                    <button type="button" id="hide-token" onclick={dismiss}>{"Done, hide it"}</button>
                </div>
            }
            { alert(&error) }
            { show(&loaded.state, "the registration tokens", |tokens| {
                let now = now();
                html! {
                if tokens.is_empty() { <p>{"None yet."}</p> } else {
                    <div class="table-wrap">
                    <table class="admin-table tokens">
                        <thead><tr><th scope="col">{"Note"}</th><th scope="col">{"Used"}</th>
                            <th scope="col">{"Expires"}</th><th scope="col">{"State"}</th>
                            <th scope="col">{"Actions"}</th></tr></thead>
                        <tbody>
                        { for tokens.iter().map(|t| {
                            let r = token_row(t, now);
                            html! {
                                <tr id={format!("token-{}", t.id)}>
                                    <th scope="row">{&r.label}</th><td>{&r.uses}</td>
                                    <td>{&r.expires}</td><td class={format!("state-{}", r.state.replace(' ', "-"))}>{r.state}</td>
                                    <td class="row-actions">
                                    if r.revocable {
                                        <button onclick={revoke(t.id)} aria-label={format!("Revoke {}", r.label)}>{"Revoke"}</button>
                                    }
                                    </td>
                                </tr>
                            }
                        }) }
                        </tbody>
                    </table>
                    </div>
                }
            }}) }
        </section>
        <section aria-labelledby="new-token-title">
            <h2 id="new-token-title">{"New registration token"}</h2>
            <form class="admin-form" onsubmit={create}>
                <label for="token-label">{"Note"}</label>
                <input id="token-label" type="text" placeholder="the new LXCs on pve2"
                    value={(*label).clone()} oninput={on_label} autocomplete="off" />
                <label for="token-uses">{"Agents that may enrol with it"}</label>
                <input id="token-uses" type="number" min="1" max="10000"
                    value={(*uses).clone()} oninput={on_uses} required=true />
                <label for="token-lifetime">{"Valid for"}</label>
                <select id="token-lifetime" onchange={on_lifetime}>
                    { for TOKEN_LIFETIMES.iter().map(|(secs, words)| html! {
                        <option value={secs.to_string()} selected={*secs == *lifetime}>{*words}</option>
                    }) }
                </select>
                <div class="buttons"><button type="submit" id="create-token" class="primary">{"Create token"}</button></div>
            </form>
        </section>
        </>
    }
}
