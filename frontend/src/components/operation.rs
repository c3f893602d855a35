//! Actions on the selection: plan an update of the selected subtree, show its plan (per
//! guest: packages, what was left out, reboots, snapshots, skipped guests), approve it by
//! its fingerprint, and follow it live over the browser's `EventSource`
//! (`GET /operations/{id}/events`), with cancel. Viewers never see these buttons (the API
//! refuses them anyway).

use crate::api;
use crate::session::SessionContext;
use crate::view::operation::{apply_event, plan_rows, progress_line};
use canopy_api_types::bulk::UpdateRequest;
use canopy_api_types::deploy::{Operation, OperationState};
use canopy_api_types::OperationId;
use gloo_timers::callback::Interval;
use std::rc::Rc;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct UpdateActionProps {
    pub selector: String,
}

/// The "Plan an update" button and, once pressed, the operation it started.
#[function_component(UpdateAction)]
pub fn update_action(props: &UpdateActionProps) -> Html {
    let session = use_context::<SessionContext>().expect("the app provides the session");
    let started = use_state(|| None::<OperationId>);
    let error = use_state(|| None::<String>);
    {
        // Another selection: start over.
        let (started, error) = (started.clone(), error.clone());
        use_effect_with(props.selector.clone(), move |_| {
            started.set(None);
            error.set(None);
        });
    }
    if !session.may_act() {
        return html! {};
    }
    let onclick = {
        let (started, error, selector) = (started.clone(), error.clone(), props.selector.clone());
        Callback::from(move |_: MouseEvent| {
            let (started, error, selector) = (started.clone(), error.clone(), selector.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let req = UpdateRequest {
                    selector,
                    options: Default::default(),
                };
                match api::call(move |c| {
                    let req = req.clone();
                    async move { c.start_update(&req).await }
                })
                .await
                {
                    Ok(op) => started.set(Some(op.id)),
                    Err(e) => error.set(Some(e.message())),
                }
            });
        })
    };
    html! {
        <section class="actions" aria-labelledby="actions-title">
            <h3 id="actions-title">{"Actions"}</h3>
            if let Some(id) = *started {
                <OperationView {id} />
            } else {
                <button {onclick}>{"Plan an update of "}<code>{&props.selector}</code></button>
            }
            if let Some(e) = &*error { <p class="error" role="alert">{e}</p> }
        </section>
    }
}

enum Change {
    Replace(Box<Operation>),
    Event(String, String),
}

#[derive(Default, PartialEq)]
struct Followed {
    op: Option<Operation>,
    error: Option<String>,
}

impl Reducible for Followed {
    type Action = Change;
    fn reduce(self: Rc<Self>, change: Change) -> Rc<Self> {
        let mut op = self.op.clone();
        let error = match change {
            Change::Replace(o) => {
                op = Some(*o);
                None
            }
            Change::Event(name, data) => apply_event(&mut op, &name, &data).err(),
        };
        Rc::new(Followed {
            op,
            error: error.or(self.error.clone()),
        })
    }
}

#[derive(Properties, PartialEq)]
pub struct OperationProps {
    pub id: OperationId,
}

/// One operation, live: polled while it plans and waits, streamed while it runs.
#[function_component(OperationView)]
pub fn operation_view(props: &OperationProps) -> Html {
    let may_act = use_context::<SessionContext>().is_some_and(|s| s.may_act());
    let followed = use_reducer(Followed::default);
    let id = props.id;
    // The stored state every 2 s until it ends (planning and approval are not streamed).
    let ended = followed.op.as_ref().is_some_and(|o| o.state.is_terminal());
    {
        let followed = followed.dispatcher();
        use_effect_with((id, ended), move |&(id, ended)| {
            let fetch = move || {
                let followed = followed.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    if let Ok(op) = api::call(move |c| async move { c.operation(id).await }).await {
                        followed.dispatch(Change::Replace(Box::new(op)));
                    }
                });
            };
            let poll = (!ended).then(|| {
                fetch();
                Interval::new(2_000, fetch)
            });
            move || drop(poll)
        });
    }
    // Each item's progress as it happens (reopened after a session refresh: crate::sse).
    {
        let followed = followed.dispatcher();
        let expired = use_context::<SessionContext>().map(|s| s.expired);
        use_effect_with(id, move |&id| {
            let on_event = Callback::from(move |(name, data): (&'static str, String)| {
                followed.dispatch(Change::Event(name.to_string(), data))
            });
            let stream = crate::sse::open(
                &format!("api/v1/operations/{id}/events"),
                &["snapshot", "item", "done"],
                on_event,
                expired.unwrap_or_default(),
            );
            move || drop(stream)
        });
    }
    let Some(op) = &followed.op else {
        return html! { <p role="status">{"Starting the operation…"}</p> };
    };
    let control = |verb: &'static str| {
        Callback::from(move |_: MouseEvent| {
            wasm_bindgen_futures::spawn_local(async move {
                let _ =
                    api::call(move |c| async move { c.control_operation(id, verb).await }).await;
            });
        })
    };
    let approve = op
        .update
        .as_ref()
        .and_then(|u| u.fingerprint.clone())
        .map(|fp| {
            Callback::from(move |_: MouseEvent| {
                let fp = fp.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    let _ = api::call(move |c| {
                        let fp = fp.clone();
                        async move { c.approve_operation(id, &fp).await }
                    })
                    .await;
                });
            })
        });
    let waiting = op.state == OperationState::AwaitingApproval;
    html! {
        <div class="operation">
            <p class="progress" role="status" aria-live="polite">{progress_line(op)}</p>
            if let Some(e) = &followed.error { <p class="error">{e}</p> }
            <table class="plan">
                <thead><tr><th scope="col">{"Guest"}</th><th scope="col">{"Packages"}</th><th scope="col">{"State"}</th></tr></thead>
                <tbody>
                { for plan_rows(op).into_iter().map(|r| html! {
                    <tr>
                        <td><code>{r.target}</code>
                            if r.reboot { <span class="tag">{"reboot"}</span> }
                            if let Some(s) = r.snapshot { <span class="tag">{format!("snapshot {s}")}</span> }
                        </td>
                        <td>
                            <ul class="plain">{ for r.packages.iter().map(|p| html! { <li>{p}</li> }) }</ul>
                            if !r.left_out.is_empty() { <p class="muted">{format!("left out: {}", r.left_out.join(", "))}</p> }
                        </td>
                        <td class="item-state">{r.state}</td>
                    </tr>
                }) }
                </tbody>
            </table>
            if let Some(fp) = op.update.as_ref().and_then(|u| u.fingerprint.as_deref()) {
                <p class="muted">{"Plan fingerprint (what the approval names): "}<code>{fp}</code></p>
            }
            if !op.skipped.is_empty() {
                <p class="muted">{ format!("Skipped: {}", op.skipped.iter().map(|s| format!("{} ({})", s.id, s.reason)).collect::<Vec<_>>().join(", ")) }</p>
            }
            if may_act {
            <div class="buttons">
                if waiting {
                    if let Some(onclick) = approve {
                        <button class="primary" {onclick}>{"Approve this plan"}</button>
                    }
                }
                if op.state == OperationState::Running { <button onclick={control("pause")}>{"Pause"}</button> }
                if op.state == OperationState::Paused { <button onclick={control("resume")}>{"Resume"}</button> }
                if !op.state.is_terminal() && op.state != OperationState::Cancelling {
                    <button onclick={control("cancel")}>{"Cancel"}</button>
                }
            </div>
            }
        </div>
    }
}
