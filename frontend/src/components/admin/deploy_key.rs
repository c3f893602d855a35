//! The deploy key section: the public half of the SSH key Canopy deploys agents with (to
//! copy into each PVE node's, or a directly reached guest's, `authorized_keys`), and the
//! SSH host keys pinned on first use, each of which can be forgotten (the next connection
//! pins what it sees, e.g. after a node was reinstalled).

use super::{alert, run, show, CopyButton};
use crate::api;
use crate::loadable::use_loadable;
use crate::view::admin::authorized_keys_line;
use yew::prelude::*;

#[function_component(DeployKey)]
pub fn deploy_key() -> Html {
    let key = use_loadable((), None, |()| async move {
        api::call(|c| async move { c.deploy_key().await }).await
    });
    let pins = use_loadable((), None, |()| async move {
        api::call(|c| async move { c.host_keys().await }).await
    });
    let error = use_state(|| None::<String>);
    let note = use_state(|| None::<String>);
    let forget = |address: String| {
        let (error, note, reload) = (error.clone(), note.clone(), pins.reload.clone());
        Callback::from(move |_: MouseEvent| {
            let (a, note, reload) = (address.clone(), note.clone(), reload.clone());
            run(
                error.clone(),
                move |c| {
                    let a = a.clone();
                    async move { c.unpin_host_key(&a).await }
                },
                move |f| {
                    note.set(Some(format!(
                        "Forgot the host key of {}; the next connection pins the key it sees.",
                        f.forgotten
                    )));
                    reload.emit(());
                },
            );
        })
    };
    html! {
        <>
        <section aria-labelledby="key-title">
            <h2 id="key-title">{"Deploy key"}</h2>
            { show(&key.state, "the deploy key", |k| {
                let line = authorized_keys_line(&k.public_key);
                html! {
                <>
                <p>{"Canopy reaches a PVE node (and, through "}<code>{"pct"}</code>
                   {", its LXCs) over SSH with this key. Add it to "}<code>{"/root/.ssh/authorized_keys"}</code>
                   {" on each node, or in a guest Canopy reaches directly, as root:"}</p>
                <label for="deploy-public-key">{"Public key"}</label>
                <div class="secret-line">
                    <textarea id="deploy-public-key" class="key" readonly=true rows="3" value={k.public_key.clone()} />
                    <CopyButton text={k.public_key.clone()} label="Copy the public key" />
                </div>
                <p class="muted">{"Or run this on the node:"}</p>
                <div class="secret-line">
                    <code id="authorized-keys-line" class="command">{line.clone()}</code>
                    <CopyButton text={line} label="Copy the command" />
                </div>
                </>
            }}) }
        </section>
        <section aria-labelledby="pins-title">
            <h2 id="pins-title">{"Known host keys"}</h2>
            <p class="muted">{"The SSH host keys Canopy pinned the first time it connected. Forget one only when you know why it changed (a reinstalled node)."}</p>
            { alert(&error) }
            if let Some(n) = &*note { <p class="note" role="status">{n}</p> }
            { show(&pins.state, "the host keys", |keys| html! {
                if keys.is_empty() { <p>{"None yet: Canopy has not connected to any node over SSH."}</p> } else {
                    <div class="table-wrap">
                    <table class="admin-table host-keys">
                        <thead><tr><th scope="col">{"Address"}</th><th scope="col">{"Type"}</th>
                            <th scope="col">{"Fingerprint"}</th><th scope="col">{"First seen"}</th>
                            <th scope="col">{"Actions"}</th></tr></thead>
                        <tbody>
                        { for keys.iter().map(|k| html! {
                            <tr>
                                <th scope="row"><code>{&k.address}</code></th><td>{&k.key_type}</td>
                                <td><code class="fingerprint">{&k.fingerprint}</code></td>
                                <td>{k.first_seen.format("%Y-%m-%d %H:%M UTC").to_string()}</td>
                                <td class="row-actions"><button onclick={forget(k.address.clone())}
                                    aria-label={format!("Forget the host key of {}", k.address)}>{"Forget"}</button></td>
                            </tr>
                        }) }
                        </tbody>
                    </table>
                    </div>
                }
            }) }
        </section>
        </>
    }
}
