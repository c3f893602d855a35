//! The frame around every page: the header with who is logged in, the navigation between
//! the tree, the operations and (for admins) administration, and log out.

use super::admin::Admin;
use super::dashboard::Dashboard;
use super::operations::{OperationPage, OperationsPage};
use crate::nav::NavContext;
use crate::session::SessionContext;
use crate::view::page::{Page, Section};
use canopy_api_types::auth::Role;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct ShellProps {
    pub on_logout: Callback<()>,
}

#[function_component(Shell)]
pub fn shell(props: &ShellProps) -> Html {
    let session = use_context::<SessionContext>().expect("the app provides the session");
    let nav = use_context::<NavContext>().expect("the app provides the navigation");
    let section = nav.page.section();
    let link = |to: Section, page: Page, label: &'static str| {
        let current = (section == to).then_some("page");
        html! {
            <a href={page.path()} aria-current={current}
               onclick={nav.to::<MouseEvent>(page).reform(|e: MouseEvent| { e.prevent_default(); e })}>
                {label}
            </a>
        }
    };
    let body = match &nav.page {
        Page::Tree(selected) => html! { <Dashboard selected={selected.clone()} /> },
        Page::Operations => html! { <OperationsPage /> },
        Page::Operation(id) => html! { <OperationPage id={id.clone()} /> },
        Page::Admin(section) if session.user.role == Role::Admin => {
            html! { <Admin section={section.clone()} /> }
        }
        Page::Admin(_) => html! {
            <main class="page"><p class="error" role="alert">{"Administration is for admins."}</p></main>
        },
    };
    html! {
        <div class="shell">
            <header class="top">
                <span class="brand">{"Canopy"}</span>
                <nav class="sections" aria-label="Sections">
                    { link(Section::Tree, Page::Tree(None), "Tree") }
                    { link(Section::Operations, Page::Operations, "Operations") }
                    { if session.user.role == Role::Admin {
                        link(Section::Admin, Page::Admin(String::new()), "Administration")
                    } else { html! {} } }
                </nav>
                <span class="who">{format!("{} ({})", session.user.username, session.user.role.as_str())}</span>
                <button class="link" onclick={props.on_logout.reform(|_: MouseEvent| ())}>{"Log out"}</button>
            </header>
            { body }
        </div>
    }
}
