//! The single-host pipeline in the guest pane (docs/design.md §2.4): the guest's updates
//! with a checkbox each, Approve (one dry-run on the guest's agent), the dry-run's answer
//! (every package apt or dnf would also install or remove), Confirm (the pinned install),
//! and the install's result. Each command is followed by polling `GET /commands/{id}`.

use crate::api;
use crate::loadable::{use_loadable, Loadable};
use crate::session::SessionContext;
use crate::view::actions::{command_line, dry_run_plan, selectable};
use crate::view::detail::update_row;
use canopy_api_types::commands::CommandStatus;
use canopy_api_types::updates::Update;
use canopy_api_types::{CommandId, UpdateId};
use std::collections::BTreeSet;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct UpdatesTableProps {
    /// The page of updates shown.
    pub items: Vec<Update>,
    /// The list changed (an install ended): load it again.
    pub on_change: Callback<()>,
}

/// Where the single-host run stands.
#[derive(Clone, Copy, PartialEq)]
enum Step {
    Choosing,
    DryRun(CommandId),
    Install(CommandId),
}

#[function_component(UpdatesTable)]
pub fn updates_table(props: &UpdatesTableProps) -> Html {
    let may_act = use_context::<SessionContext>().is_some_and(|s| s.may_act());
    let chosen = use_state(BTreeSet::<UpdateId>::new);
    let step = use_state(|| Step::Choosing);
    let error = use_state(|| None::<String>);
    let toggle = |id: UpdateId| {
        let chosen = chosen.clone();
        Callback::from(move |_: Event| {
            let mut next = (*chosen).clone();
            if !next.remove(&id) {
                next.insert(id);
            }
            chosen.set(next);
        })
    };
    let approve = {
        let (chosen, step, error) = (chosen.clone(), step.clone(), error.clone());
        let reload = props.on_change.clone();
        Callback::from(move |_: MouseEvent| {
            let ids: Vec<UpdateId> = chosen.iter().copied().collect();
            let (chosen, step, error) = (chosen.clone(), step.clone(), error.clone());
            let reload = reload.clone();
            error.set(None);
            wasm_bindgen_futures::spawn_local(async move {
                match api::call(move |c| {
                    let ids = ids.clone();
                    async move { c.approve(ids).await }
                })
                .await
                {
                    Ok(r) => match r.dry_run_commands.first() {
                        Some(id) => {
                            chosen.set(BTreeSet::new());
                            step.set(Step::DryRun(*id));
                            reload.emit(());
                        }
                        None => error.set(Some("the server queued no dry-run".into())),
                    },
                    Err(e) => error.set(Some(e.message())),
                }
            });
        })
    };
    // A command ended (the rows moved on): the list again.
    let on_ended = props.on_change.clone();
    let on_confirmed = {
        let step = step.clone();
        Callback::from(move |id: CommandId| step.set(Step::Install(id)))
    };
    let on_done = {
        let step = step.clone();
        Callback::from(move |_: MouseEvent| step.set(Step::Choosing))
    };
    html! {
        <>
        <table class={classes!("updates", may_act.then_some("choosable"))}>
            <thead><tr>
                if may_act { <th scope="col"><span class="visually-hidden">{"Select"}</span></th> }
                <th scope="col">{"Package"}</th><th scope="col">{"Version"}</th>
                <th scope="col">{"Severity"}</th><th scope="col">{"State"}</th></tr></thead>
            <tbody>
            { for props.items.iter().map(|u| {
                let r = update_row(u);
                html! {
                    <tr class={classes!(format!("sev-{}", r.severity), (r.state == "held").then_some("held"))}>
                        if may_act {
                            <td>if selectable(u) {
                                <input type="checkbox" class="choose" aria-label={format!("Select {}", r.package)}
                                       checked={chosen.contains(&u.id)} onchange={toggle(u.id)} />
                            }</td>
                        }
                        <td>{r.package}</td><td>{r.versions}</td><td>{r.severity}</td><td>{r.state}</td>
                    </tr>
                }
            }) }
            </tbody>
        </table>
        if may_act {
            <div class="pipeline" aria-label="Approve, dry-run, confirm">
                if *step == Step::Choosing {
                    <button class="approve-selected" onclick={approve} disabled={chosen.is_empty()}>
                        {format!("Approve {} selected (dry-run first)", chosen.len())}
                    </button>
                }
                if let Step::DryRun(id) = *step {
                    <Followed {id} on_confirmed={on_confirmed.clone()} on_ended={on_ended.clone()} />
                }
                if let Step::Install(id) = *step {
                    <Followed {id} on_confirmed={on_confirmed.clone()} on_ended={on_ended.clone()} />
                    <button class="link" onclick={on_done}>{"Done"}</button>
                }
                if let Some(e) = &*error { <p class="error" role="alert">{e}</p> }
            </div>
        }
        </>
    }
}

#[derive(Properties, PartialEq)]
struct FollowedProps {
    id: CommandId,
    on_confirmed: Callback<CommandId>,
    on_ended: Callback<()>,
}

/// One command of the pipeline, polled every second until it ends (then the list is loaded
/// again); a finished dry-run offers Confirm, a finished install says how it went.
#[function_component(Followed)]
fn followed(props: &FollowedProps) -> Html {
    let ended = use_state(|| false);
    let loaded = use_loadable(
        props.id,
        (!*ended).then_some(1_000),
        |id: CommandId| async move { api::call(move |c| async move { c.command(id).await }).await },
    );
    let error = use_state(|| None::<String>);
    let known = match &loaded.state {
        Loadable::Ready(c) => Some(c.clone()),
        _ => None,
    };
    let terminal = known.as_ref().is_some_and(|c| c.status.is_terminal());
    {
        let (ended, on_ended) = (ended.clone(), props.on_ended.clone());
        use_effect_with(terminal, move |&t| {
            if t {
                ended.set(true);
                on_ended.emit(());
            }
        });
    }
    let cmd = match (&loaded.state, known) {
        (_, Some(c)) => c,
        (Loadable::Failed(e), _) => return html! { <p class="error" role="alert">{e}</p> },
        _ => return html! { <p role="status">{"Waiting for the agent…"}</p> },
    };
    let is_dry_run = cmd.spec.kind() == "dry_run";
    let confirm = {
        let (id, error, on_confirmed) = (props.id, error.clone(), props.on_confirmed.clone());
        Callback::from(move |_: MouseEvent| {
            let (error, on_confirmed) = (error.clone(), on_confirmed.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::call(move |c| async move { c.confirm(id).await }).await {
                    Ok(install) => on_confirmed.emit(install.id),
                    Err(e) => error.set(Some(e.message())),
                }
            });
        })
    };
    let cancel = {
        let (id, error, reload) = (props.id, error.clone(), loaded.reload.clone());
        Callback::from(move |_: MouseEvent| {
            let (error, reload) = (error.clone(), reload.clone());
            wasm_bindgen_futures::spawn_local(async move {
                if let Err(e) = api::call(move |c| async move { c.cancel(id).await }).await {
                    error.set(Some(e.message()));
                }
                reload.emit(());
            });
        })
    };
    let ready = is_dry_run && cmd.status == CommandStatus::Completed;
    let class = if is_dry_run { "dry-run" } else { "install" };
    html! {
        <div class={classes!("command", class)}>
            <p class="command-state" role="status" aria-live="polite">{command_line(&cmd)}</p>
            if ready {
                if let Some(r) = &cmd.result {
                    <p>{"The install would touch:"}</p>
                    <ul class="plain dry-run-plan">
                        { for dry_run_plan(r).into_iter().map(|l| html! { <li>{l}</li> }) }
                    </ul>
                }
                <button class="primary confirm" onclick={confirm}>{"Confirm and install"}</button>
            }
            if matches!(cmd.status, CommandStatus::Pending | CommandStatus::Sent) {
                <button class="cancel-command" onclick={cancel}>{"Cancel"}</button>
            }
            if let Some(e) = &*error { <p class="error" role="alert">{e}</p> }
        </div>
    }
}
