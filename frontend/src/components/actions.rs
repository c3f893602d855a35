//! The other actions on the selected subtree, beside "Plan an update": scan now (every agent
//! in it, `POST /hosts/scan`, each scan followed until its report is in), deploy the agent
//! (the preview per guest first, then the deploy operation followed live by the same
//! [`OperationView`] as an update), and an agentless scan. One line per guest; the server's
//! message when it refuses. Viewers see none of it (the API refuses them anyway).

use super::operation::OperationView;
use crate::api;
use crate::nav::NavContext;
use crate::session::SessionContext;
use crate::view::actions::{agentless_lines, deploy_lines, scan_lines, scan_progress, tally, Line};
use crate::view::page::Page;
use canopy_api_types::commands::Command;
use canopy_api_types::deploy::{DeployAction, DeployPreview, DeployRequest};
use canopy_api_types::{CommandId, OperationId};
use gloo_timers::callback::Interval;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct SelectionActionsProps {
    /// The selection as a selector (a guest, or `NODE/**`).
    pub selector: String,
}

/// One action: the selector in, what to show out.
type Job = Rc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Shown, api::Failure>>>>>;

fn job<F, Fut>(f: F) -> Job
where
    F: Fn(String) -> Fut + 'static,
    Fut: Future<Output = Result<Shown, api::Failure>> + 'static,
{
    Rc::new(move |selector| Box::pin(f(selector)))
}

#[derive(Clone)]
enum Shown {
    Nothing,
    Busy(&'static str),
    Scanned(Rc<Vec<(Line, Option<CommandId>)>>),
    Agentless(Rc<Vec<Line>>),
    Preview(Rc<DeployPreview>),
    Deploying(OperationId),
}

#[function_component(SelectionActions)]
pub fn selection_actions(props: &SelectionActionsProps) -> Html {
    let may_act = use_context::<SessionContext>().is_some_and(|s| s.may_act());
    let nav = use_context::<NavContext>().expect("the app provides the navigation");
    let shown = use_state(|| Shown::Nothing);
    let error = use_state(|| None::<String>);
    {
        let (shown, error) = (shown.clone(), error.clone());
        use_effect_with(props.selector.clone(), move |_| {
            shown.set(Shown::Nothing);
            error.set(None);
        });
    }
    if !may_act {
        return html! {};
    }
    // Runs `run` on the selection and shows its answer, or the server's message.
    let act = |busy: &'static str, run: Job| {
        let (shown, error, selector) = (shown.clone(), error.clone(), props.selector.clone());
        Callback::from(move |_: MouseEvent| {
            let (shown, error, selector, run) =
                (shown.clone(), error.clone(), selector.clone(), run.clone());
            shown.set(Shown::Busy(busy));
            error.set(None);
            wasm_bindgen_futures::spawn_local(async move {
                match run(selector).await {
                    Ok(next) => shown.set(next),
                    Err(e) => {
                        shown.set(Shown::Nothing);
                        error.set(Some(e.message()));
                    }
                }
            });
        })
    };
    let scan = act(
        "Asking the agents to scan…",
        job(|sel: String| async move {
            let answer = api::call(move |c| {
                let sel = sel.clone();
                async move { c.scan_selection(&sel).await }
            })
            .await?;
            let lines = scan_lines(&answer)
                .into_iter()
                .zip(answer.iter().map(|a| a.command_id))
                .collect();
            Ok(Shown::Scanned(Rc::new(lines)))
        }),
    );
    let preview = act(
        "Working out what a deploy would do…",
        job(|sel: String| async move {
            let req = DeployRequest {
                selector: sel,
                action: DeployAction::Deploy,
            };
            let p = api::call(move |c| {
                let req = req.clone();
                async move { c.deploy_preview(&req).await }
            })
            .await?;
            Ok(Shown::Preview(Rc::new(p)))
        }),
    );
    let agentless = act(
        "Scanning through pct exec…",
        job(|sel: String| async move {
            let r = api::call(move |c| {
                let sel = sel.clone();
                async move { c.agentless_scan(&sel).await }
            })
            .await?;
            Ok(Shown::Agentless(Rc::new(agentless_lines(&r))))
        }),
    );
    let deploy = act(
        "Starting the deploy…",
        job(|sel: String| async move {
            let req = DeployRequest {
                selector: sel,
                action: DeployAction::Deploy,
            };
            let op = api::call(move |c| {
                let req = req.clone();
                async move { c.deploy(&req).await }
            })
            .await?;
            Ok(Shown::Deploying(op.id))
        }),
    );
    let dismiss = {
        let shown = shown.clone();
        Callback::from(move |_: MouseEvent| shown.set(Shown::Nothing))
    };
    let busy = matches!(*shown, Shown::Busy(_));
    // A deploy's own page (`operations/ID`), where it can be followed after leaving this one.
    let page = match &*shown {
        Shown::Deploying(id) => Page::Operation(id.to_string()),
        _ => Page::Operations,
    };
    let open = nav.to::<MouseEvent>(page.clone()).reform(|e: MouseEvent| {
        e.prevent_default();
        e
    });
    html! {
        <section class="selection-actions" aria-labelledby="scan-deploy-title">
            <h3 id="scan-deploy-title">{"Scan and deploy"}</h3>
            <div class="buttons">
                <button class="scan-now" onclick={scan} disabled={busy}>{"Scan now"}</button>
                <button class="deploy-agent" onclick={preview} disabled={busy}>{"Deploy agent…"}</button>
                <button class="agentless-scan" onclick={agentless} disabled={busy}>{"Agentless scan"}</button>
            </div>
            if let Some(e) = &*error { <p class="error" role="alert">{e}</p> }
            { match &*shown {
                Shown::Nothing => html! {},
                Shown::Busy(what) => html! { <p role="status">{*what}</p> },
                Shown::Scanned(lines) => html! { <ScanLines lines={lines.clone()} /> },
                Shown::Agentless(lines) => html! {
                    <div class="action-result agentless-lines">
                        <p role="status">{format!("Agentless scan: {}", tally(lines, "scanned", "not scanned"))}</p>
                        { lines_list(as_shown(lines)) }
                    </div>
                },
                Shown::Preview(p) => html! {
                    <div class="action-result deploy-preview">
                        <p role="status">{format!("Deploy preview: {}", p.summary)}</p>
                        { lines_list(as_shown(&deploy_lines(p))) }
                        <div class="buttons">
                            if !p.targets.is_empty() {
                                <button class="primary" onclick={deploy}>{"Start the deploy"}</button>
                            }
                            <button onclick={dismiss}>{"Never mind"}</button>
                        </div>
                    </div>
                },
                Shown::Deploying(id) => html! {
                    <div class="action-result">
                        <p>{"Deploy operation "}<a href={page.path()} onclick={open}>{id.to_string()}</a></p>
                        <OperationView id={*id} />
                    </div>
                },
            } }
        </section>
    }
}

/// Lines as a list: the guest, then what happened to it.
fn lines_list(lines: Vec<(Line, String)>) -> Html {
    html! {
        <ul class="plain host-lines">
        { for lines.into_iter().map(|(l, text)| html! {
            <li class={classes!(if l.ok { "line-ok" } else { "line-skipped" })}>
                <code>{l.target}</code>{" "}<span class="line-text">{text}</span>
            </li>
        }) }
        </ul>
    }
}

/// Each line with its own words.
fn as_shown(lines: &[Line]) -> Vec<(Line, String)> {
    lines.iter().map(|l| (l.clone(), l.text.clone())).collect()
}

#[derive(Properties, PartialEq)]
struct ScanLinesProps {
    lines: Rc<Vec<(Line, Option<CommandId>)>>,
}

/// A scan's lines, each followed (`GET /commands/{id}`) until its agent's report is in.
#[function_component(ScanLines)]
fn scan_lines_view(props: &ScanLinesProps) -> Html {
    let commands = use_state(HashMap::<CommandId, Command>::new);
    let pending: Vec<CommandId> = props
        .lines
        .iter()
        .filter_map(|(_, id)| *id)
        .filter(|id| !commands.get(id).is_some_and(|c| c.status.is_terminal()))
        .collect();
    {
        let commands = commands.clone();
        use_effect_with(pending, move |pending| {
            let pending = pending.clone();
            let poll = (!pending.is_empty()).then(|| {
                Interval::new(1_000, move || {
                    let (commands, pending) = (commands.clone(), pending.clone());
                    wasm_bindgen_futures::spawn_local(async move {
                        let mut next = (*commands).clone();
                        for id in pending {
                            if let Ok(c) =
                                api::call(move |cl| async move { cl.command(id).await }).await
                            {
                                next.insert(id, c);
                            }
                        }
                        commands.set(next);
                    });
                })
            });
            move || drop(poll)
        });
    }
    let lines: Vec<Line> = props.lines.iter().map(|(l, _)| l.clone()).collect();
    html! {
        <div class="action-result scan-lines">
            <p role="status">{format!("Scan: {}", tally(&lines, "queued", "skipped"))}</p>
            { lines_list(props.lines.iter().map(|(l, id)| {
                (l.clone(), scan_progress(l, id.and_then(|id| commands.get(&id))))
            }).collect()) }
        </div>
    }
}
