//! The users section: every user with their role and whether they may log in; a new user;
//! another role, disable or enable, a new password. The server ends a user's sessions
//! when something is taken away and refuses to leave no enabled admin (its message shows).

use super::{alert, run, show, value};
use crate::api;
use crate::loadable::use_loadable;
use crate::session::SessionContext;
use crate::view::admin::{user_rows, UserRow, ROLES};
use canopy_api_types::auth::{CreateUserRequest, Role};
use yew::prelude::*;

#[function_component(Users)]
pub fn users() -> Html {
    let session = use_context::<SessionContext>().expect("the app provides the session");
    let loaded = use_loadable((), None, |()| async move {
        api::call(|c| async move { c.users().await }).await
    });
    let error = use_state(|| None::<String>);
    let note = use_state(|| None::<String>);
    // The user whose new password is being typed, and the password.
    let setting = use_state(|| None::<String>);
    let new_password = use_state(String::new);
    let username = use_state(String::new);
    let password = use_state(String::new);
    let role = use_state(|| Role::Viewer);

    // What a change says once done; the list is loaded again.
    let done = {
        let (note, reload) = (note.clone(), loaded.reload.clone());
        move |what: String| {
            let (note, reload) = (note.clone(), reload.clone());
            move || {
                note.set(Some(what));
                reload.emit(());
            }
        }
    };
    let change_role = |user: String| {
        let (error, done) = (error.clone(), done.clone());
        Callback::from(move |e: Event| {
            let Some(role) = Role::parse(&value(&e)) else {
                return;
            };
            let u = user.clone();
            run(
                error.clone(),
                move |c| {
                    let u = u.clone();
                    async move { c.set_role(&u, role).await }
                },
                {
                    let done = done(format!("{user} is now {}.", role.as_str()));
                    move |_| done()
                },
            );
        })
    };
    let toggle = |r: &UserRow| {
        let (error, done, user, enable) = (
            error.clone(),
            done.clone(),
            r.username.clone(),
            r.toggle == "Enable",
        );
        Callback::from(move |_: MouseEvent| {
            let u = user.clone();
            run(
                error.clone(),
                move |c| {
                    let u = u.clone();
                    async move {
                        if enable {
                            c.enable_user(&u).await
                        } else {
                            c.disable_user(&u).await
                        }
                    }
                },
                {
                    let done = done(format!(
                        "{user} {}.",
                        if enable {
                            "may log in again"
                        } else {
                            "is disabled; their sessions ended"
                        }
                    ));
                    move |_| done()
                },
            );
        })
    };
    let open_password = |user: Option<String>| {
        let (setting, new_password) = (setting.clone(), new_password.clone());
        Callback::from(move |_: MouseEvent| {
            new_password.set(String::new());
            setting.set(user.clone());
        })
    };
    let save_password = {
        let (error, done, setting, new_password) = (
            error.clone(),
            done.clone(),
            setting.clone(),
            new_password.clone(),
        );
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let Some(user) = (*setting).clone() else {
                return;
            };
            let (u, p) = (user.clone(), (*new_password).clone());
            let (setting, done) = (
                setting.clone(),
                done(format!("{user} has a new password; their sessions ended.")),
            );
            run(
                error.clone(),
                move |c| {
                    let (u, p) = (u.clone(), p.clone());
                    async move { c.set_password(&u, &p).await }
                },
                move |_| {
                    setting.set(None);
                    done()
                },
            );
        })
    };
    let create = {
        let (error, done, username, password, role) = (
            error.clone(),
            done.clone(),
            username.clone(),
            password.clone(),
            role.clone(),
        );
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let req = CreateUserRequest {
                username: username.trim().to_string(),
                password: (*password).clone(),
                role: *role,
            };
            let (username, password) = (username.clone(), password.clone());
            let done = done(format!(
                "User {} created as {}.",
                req.username,
                req.role.as_str()
            ));
            run(
                error.clone(),
                move |c| {
                    let req = req.clone();
                    async move { c.create_user(&req).await }
                },
                move |_| {
                    username.set(String::new());
                    password.set(String::new());
                    done()
                },
            );
        })
    };
    let text = |state: &UseStateHandle<String>| {
        let state = state.clone();
        Callback::from(move |e: InputEvent| state.set(value(&e)))
    };
    let on_role = {
        let role = role.clone();
        Callback::from(move |e: Event| {
            if let Some(r) = Role::parse(&value(&e)) {
                role.set(r)
            }
        })
    };
    let role_options = |current: Role| {
        html! { for ROLES.iter().map(|r| html! {
            <option value={r.as_str()} selected={*r == current}>{r.as_str()}</option>
        }) }
    };
    let row = |r: &UserRow| {
        let select_id = format!("role-{}", r.username);
        html! {
            <>
            <tr id={format!("user-{}", r.username)}>
                <th scope="row">{&r.username}{ if r.me { " (you)" } else { "" } }</th>
                <td>
                    <label for={select_id.clone()} class="visually-hidden">{format!("Role of {}", r.username)}</label>
                    <select id={select_id} onchange={change_role(r.username.clone())}>{ role_options(r.role) }</select>
                </td>
                <td class={format!("state-{}", r.state)}>{r.state}</td>
                <td class="row-actions">
                    <button onclick={toggle(r)} aria-label={format!("{} {}", r.toggle, r.username)}>{r.toggle}</button>
                    <button onclick={open_password(Some(r.username.clone()))}
                        aria-label={format!("Set a new password for {}", r.username)}>{"New password"}</button>
                </td>
            </tr>
            if setting.as_deref() == Some(r.username.as_str()) {
                <tr class="inline-form"><td colspan="4">
                    <form class="password-form" onsubmit={save_password.clone()}>
                        <label for="new-password">{format!("New password for {}", r.username)}</label>
                        <input id="new-password" type="password" autocomplete="new-password" required=true
                            value={(*new_password).clone()} oninput={text(&new_password)} />
                        <button type="submit" class="primary">{"Set password"}</button>
                        <button type="button" onclick={open_password(None)}>{"Cancel"}</button>
                    </form>
                </td></tr>
            }
            </>
        }
    };
    html! {
        <>
        <section aria-labelledby="users-title">
            <h2 id="users-title">{"Users"}</h2>
            <p class="muted">{"Viewers read; operators also scan, update and deploy; admins also manage clusters, tokens and users."}</p>
            { alert(&error) }
            if let Some(n) = &*note { <p class="note" role="status">{n}</p> }
            { show(&loaded.state, "the users", |users| html! {
                <div class="table-wrap">
                <table class="admin-table users">
                    <thead><tr><th scope="col">{"User"}</th><th scope="col">{"Role"}</th>
                        <th scope="col">{"State"}</th><th scope="col">{"Actions"}</th></tr></thead>
                    <tbody>{ for user_rows(users, &session.user.username).iter().map(row) }</tbody>
                </table>
                </div>
            }) }
        </section>
        <section aria-labelledby="new-user-title">
            <h2 id="new-user-title">{"New user"}</h2>
            <form class="admin-form" onsubmit={create}>
                <label for="new-username">{"User name"}</label>
                <input id="new-username" type="text" autocomplete="off" required=true
                    value={(*username).clone()} oninput={text(&username)} />
                <label for="new-user-password">{"Password"}</label>
                <input id="new-user-password" type="password" autocomplete="new-password" required=true
                    value={(*password).clone()} oninput={text(&password)} />
                <label for="new-user-role">{"Role"}</label>
                <select id="new-user-role" onchange={on_role}>{ role_options(*role) }</select>
                <div class="buttons"><button type="submit" id="create-user" class="primary">{"Create user"}</button></div>
            </form>
        </section>
        </>
    }
}
