//! A guest's PVE snapshots in its detail pane (`GET /tree/snapshots?id=GUEST`, read live from
//! PVE), newest first, Canopy's own marked: the restore points before an update.

use crate::api;
use crate::loadable::{use_loadable, Loadable};
use crate::view::actions::snapshot_row;
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct SnapshotsProps {
    /// The guest's path id.
    pub id: String,
}

#[function_component(Snapshots)]
pub fn snapshots(props: &SnapshotsProps) -> Html {
    let loaded = use_loadable(props.id.clone(), None, |id: String| async move {
        api::call(move |c| {
            let id = id.clone();
            async move { c.guest_snapshots(&id).await }
        })
        .await
    });
    html! {
        <section class="snapshots" aria-labelledby="snapshots-title">
            <div class="section-head">
                <h3 id="snapshots-title">{"Snapshots"}</h3>
                <button class="link" aria-label="Reload the snapshots" onclick={loaded.reload.reform(|_: MouseEvent| ())}>{"Reload"}</button>
            </div>
            { match &loaded.state {
                Loadable::Loading => html! { <p role="status">{"Asking PVE for the snapshots…"}</p> },
                Loadable::Failed(e) => html! { <p class="error" role="alert">{format!("Cannot read the snapshots: {e}")}</p> },
                Loadable::Ready(list) if list.is_empty() => html! { <p>{"None."}</p> },
                Loadable::Ready(list) => html! {
                    <table class="snapshot-list">
                        <thead><tr><th scope="col">{"Name"}</th><th scope="col">{"Taken"}</th><th scope="col">{"Description"}</th></tr></thead>
                        <tbody>
                        { for list.iter().map(snapshot_row).map(|r| html! {
                            <tr>
                                <td><code>{r.name}</code>
                                    if r.canopy { <span class="tag canopy-snap" title="Taken by a Canopy update">{"Canopy"}</span> }
                                </td>
                                <td>{r.when}</td><td>{r.description}</td>
                            </tr>
                        }) }
                        </tbody>
                    </table>
                },
            } }
        </section>
    }
}
