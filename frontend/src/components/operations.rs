//! The operations pages: the list (`operations`: `GET /operations`, newest first, filtered
//! by state and kind, and on the server by the path they touched) and one operation
//! (`operations/ID`): what it is, then the same live [`OperationView`] the tree page shows
//! (plan rows, per-guest steps, pause, resume, cancel; a finished one its final result per
//! guest).

use super::operation::OperationView;
use crate::api;
use crate::loadable::{use_loadable, Loadable};
use crate::nav::NavContext;
use crate::view::operations::{filtered, op_row, shown_line, state_words, OpFilter, KINDS, STATES};
use crate::view::page::Page;
use canopy_api_types::deploy::OperationState;
use canopy_api_types::OperationId;
use yew::prelude::*;

/// How many more operations "Show more" asks for; the server gives at most 200.
const STEP: u32 = 50;
const MOST: u32 = 200;

/// The value of the `<select>` or `<input>` an event came from.
fn value_of(e: &Event) -> String {
    e.target()
        .and_then(|t| js_sys::Reflect::get(&t, &"value".into()).ok())
        .and_then(|v| v.as_string())
        .unwrap_or_default()
}

#[function_component(OperationsPage)]
pub fn operations_page() -> Html {
    let nav = use_context::<NavContext>().expect("the app provides the navigation");
    let filter = use_state(OpFilter::default);
    let under = use_state(String::new);
    let limit = use_state(|| STEP);
    let loaded = use_loadable(
        ((*under).clone(), *limit),
        Some(10_000),
        |(under, limit): (String, u32)| async move {
            api::call(move |c| {
                let under = under.clone();
                async move {
                    if under.trim().is_empty() {
                        c.operations(limit).await
                    } else {
                        c.operations_under(under.trim(), limit).await
                    }
                }
            })
            .await
        },
    );
    let on_state = {
        let filter = filter.clone();
        Callback::from(move |e: Event| {
            let v = value_of(&e);
            filter.set(OpFilter {
                state: OperationState::parse(&v),
                ..(*filter).clone()
            });
        })
    };
    let on_kind = {
        let filter = filter.clone();
        Callback::from(move |e: Event| {
            let v = value_of(&e);
            filter.set(OpFilter {
                kind: (!v.is_empty()).then_some(v),
                ..(*filter).clone()
            });
        })
    };
    let on_under = {
        let under = under.clone();
        Callback::from(move |e: Event| under.set(value_of(&e)))
    };
    let more = {
        let limit = limit.clone();
        Callback::from(move |_: MouseEvent| limit.set((*limit + STEP).min(MOST)))
    };
    html! {
        <main class="page operations-page">
            <h2>{"Operations"}</h2>
            <form class="op-filters" aria-label="Filter the operations" onsubmit={Callback::from(|e: SubmitEvent| e.prevent_default())}>
                <label>{"State "}
                    <select id="op-state" onchange={on_state}>
                        <option value="" selected={filter.state.is_none()}>{"any"}</option>
                        { for STATES.iter().map(|s| html! {
                            <option value={s.as_str()} selected={filter.state == Some(*s)}>{state_words(*s)}</option>
                        }) }
                    </select>
                </label>
                <label>{"Kind "}
                    <select id="op-kind" onchange={on_kind}>
                        <option value="" selected={filter.kind.is_none()}>{"any"}</option>
                        { for KINDS.iter().map(|k| html! {
                            <option value={*k} selected={filter.kind.as_deref() == Some(*k)}>{*k}</option>
                        }) }
                    </select>
                </label>
                <label>{"Under "}
                    <input id="op-under" type="text" placeholder="cluster/home/node/pve1"
                           value={(*under).clone()} onchange={on_under} />
                </label>
                <button type="button" class="link" onclick={loaded.reload.reform(|_: MouseEvent| ())}>{"Refresh"}</button>
            </form>
            { match &loaded.state {
                Loadable::Loading => html! { <p role="status">{"Loading the operations…"}</p> },
                Loadable::Failed(e) => html! { <p class="error" role="alert">{format!("Cannot load the operations: {e}")}</p> },
                Loadable::Ready(ops) => {
                    let rows = filtered(ops, &filter);
                    let older = ops.len() as u32 >= *limit && *limit < MOST;
                    html! {
                        <>
                        <p class="muted" role="status">{shown_line(rows.len(), ops.len(), *limit)}</p>
                        if rows.is_empty() { <p>{"No operation matches."}</p> } else {
                        <table class="ops op-list">
                            <thead><tr>
                                <th scope="col">{"When"}</th><th scope="col">{"Kind"}</th><th scope="col">{"State"}</th>
                                <th scope="col">{"Guests"}</th><th scope="col">{"Selector"}</th><th scope="col">{"By"}</th>
                            </tr></thead>
                            <tbody>
                            { for rows.into_iter().map(op_row).map(|r| {
                                let page = Page::Operation(r.id.clone());
                                let onclick = nav.to::<MouseEvent>(page.clone()).reform(|e: MouseEvent| { e.prevent_default(); e });
                                html! {
                                    <tr>
                                        <td><a href={page.path()} {onclick}>{r.when}</a></td>
                                        <td>{r.kind}</td>
                                        <td class={classes!("op-state", format!("state-{}", r.state.replace(' ', "-")))}>{r.state}</td>
                                        <td>{r.counts}</td>
                                        <td><code>{r.selector}</code></td>
                                        <td>{r.who}</td>
                                    </tr>
                                }
                            }) }
                            </tbody>
                        </table>
                        }
                        if older {
                            <button class="show-more" onclick={more}>{"Show older operations"}</button>
                        }
                        </>
                    }
                }
            } }
        </main>
    }
}

#[derive(Properties, PartialEq)]
pub struct OperationPageProps {
    /// The operation's id, as the address has it.
    pub id: String,
}

#[function_component(OperationPage)]
pub fn operation_page(props: &OperationPageProps) -> Html {
    let nav = use_context::<NavContext>().expect("the app provides the navigation");
    let back = nav
        .to::<MouseEvent>(Page::Operations)
        .reform(|e: MouseEvent| {
            e.prevent_default();
            e
        });
    let Ok(id) = props.id.parse::<OperationId>() else {
        return html! {
            <main class="page">
                <p class="error" role="alert">{format!("{:?} is not an operation id.", props.id)}</p>
                <a href={Page::Operations.path()} onclick={back}>{"All operations"}</a>
            </main>
        };
    };
    html! {
        <main class="page operation-page">
            <p><a href={Page::Operations.path()} onclick={back}>{"← All operations"}</a></p>
            <OperationHeader {id} />
            <OperationView {id} />
        </main>
    }
}

#[derive(Properties, PartialEq)]
struct OperationHeaderProps {
    id: OperationId,
}

/// What the operation is: kind, selector, who started it and when.
#[function_component(OperationHeader)]
fn operation_header(props: &OperationHeaderProps) -> Html {
    let loaded = use_loadable(props.id, None, |id: OperationId| async move {
        api::call(move |c| async move { c.operation(id).await }).await
    });
    match &loaded.state {
        Loadable::Loading => html! { <h2>{"Operation"}</h2> },
        Loadable::Failed(e) => html! {
            <>
            <h2>{"Operation"}</h2>
            <p class="error" role="alert">{format!("Cannot load operation {}: {e}", props.id)}</p>
            </>
        },
        Loadable::Ready(op) => {
            let r = op_row(op);
            html! {
                <>
                <h2>{format!("{} of ", r.kind)}<code>{r.selector}</code></h2>
                <dl class="facts">
                    <dt>{"Started"}</dt><dd>{format!("{} by {}", r.when, r.who)}</dd>
                    if let Some(end) = op.finished_at {
                        <dt>{"Ended"}</dt><dd>{end.format("%Y-%m-%d %H:%M:%S").to_string()}</dd>
                    }
                    <dt>{"Id"}</dt><dd><code>{r.id}</code></dd>
                </dl>
                </>
            }
        }
    }
}
