//! The add-cluster wizard: address, API token (ID and secret, or the whole
//! `USER@REALM!ID=SECRET`), an optional name. "Test connection" asks the server which
//! certificate the address presents (`POST /clusters/probe`); the user compares its SHA-256
//! fingerprint with the node's own and ticks that it matches; only then "Check the token"
//! (signs in over a connection pinned to it) and "Add cluster" send the token, pinned
//! (never "accept any certificate"). The server runs the first discovery
//! before it answers, so a wrong token comes back as its error.

use super::{alert, value};
use crate::view::admin::{api_token, cluster_name};
use canopy_api_types::clusters::{Cluster, CreateCluster, ProbeResponse};
use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct WizardProps {
    pub on_added: Callback<Cluster>,
}

#[function_component(Wizard)]
pub fn wizard(props: &WizardProps) -> Html {
    let url = use_state(String::new);
    let token_id = use_state(String::new);
    let secret = use_state(String::new);
    let name = use_state(String::new);
    // The certificate seen at `url` (cleared when the address changes), and the user's word
    // that it is the node's.
    let probed = use_state(|| None::<ProbeResponse>);
    let confirmed = use_state(|| false);
    // The nodes the token saw, once checked over the pinned connection.
    let token_nodes = use_state(|| None::<Vec<String>>);
    let busy = use_state(|| None::<&'static str>);
    let error = use_state(|| None::<String>);

    let field = |state: &UseStateHandle<String>, resets: bool| {
        let (state, probed, confirmed) = (state.clone(), probed.clone(), confirmed.clone());
        let token_nodes = token_nodes.clone();
        Callback::from(move |e: InputEvent| {
            state.set(value(&e));
            token_nodes.set(None);
            if resets {
                probed.set(None);
                confirmed.set(false);
            }
        })
    };
    let probe = {
        let (url, probed, confirmed, busy, error) = (
            url.clone(),
            probed.clone(),
            confirmed.clone(),
            busy.clone(),
            error.clone(),
        );
        Callback::from(move |_: MouseEvent| {
            let address = url.trim().to_string();
            if address.is_empty() {
                error.set(Some(
                    "URL: give the PVE node's address (https://HOST:8006)".into(),
                ));
                return;
            }
            probed.set(None);
            confirmed.set(false);
            busy.set(Some("Testing the connection…"));
            let (probed, busy) = (probed.clone(), busy.clone());
            let err = error.clone();
            wasm_bindgen_futures::spawn_local(async move {
                match crate::api::call(move |c| {
                    let address = address.clone();
                    async move { c.probe_cluster(&address).await }
                })
                .await
                {
                    Ok(p) => {
                        err.set(None);
                        probed.set(Some(p));
                    }
                    Err(e) => err.set(Some(e.message())),
                }
                busy.set(None);
            });
        })
    };
    let add = {
        let (url, token_id, secret, name, probed, busy, error, on_added) = (
            url.clone(),
            token_id.clone(),
            secret.clone(),
            name.clone(),
            probed.clone(),
            busy.clone(),
            error.clone(),
            props.on_added.clone(),
        );
        let (confirmed, reset) = (
            confirmed.clone(),
            (url.clone(), token_id.clone(), secret.clone(), name.clone()),
        );
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let Some(p) = (*probed).clone() else { return };
            if !*confirmed {
                return;
            }
            let req = match (api_token(&token_id, &secret), cluster_name(&name, &url)) {
                (Ok(token), Ok(name)) => CreateCluster {
                    name,
                    endpoints: vec![p.url.clone()],
                    token,
                    fingerprints: vec![p.fingerprint.clone()],
                    ca_pem: None,
                    interval_secs: None,
                },
                (Err(e), _) | (_, Err(e)) => {
                    error.set(Some(e));
                    return;
                }
            };
            busy.set(Some("Adding the cluster (its first discovery runs now)…"));
            let (busy, on_added, probed, confirmed, reset) = (
                busy.clone(),
                on_added.clone(),
                probed.clone(),
                confirmed.clone(),
                reset.clone(),
            );
            let err = error.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let answer = crate::api::call(move |c| {
                    let req = req.clone();
                    async move { c.create_cluster(&req).await }
                })
                .await;
                busy.set(None);
                match answer {
                    Ok(cluster) => {
                        err.set(None);
                        for s in [&reset.0, &reset.1, &reset.2, &reset.3] {
                            s.set(String::new());
                        }
                        probed.set(None);
                        confirmed.set(false);
                        on_added.emit(cluster);
                    }
                    Err(e) => err.set(Some(e.message())),
                }
            });
        })
    };
    let check_token = {
        let (token_id, secret, probed, token_nodes, busy, error) = (
            token_id.clone(),
            secret.clone(),
            probed.clone(),
            token_nodes.clone(),
            busy.clone(),
            error.clone(),
        );
        Callback::from(move |_: MouseEvent| {
            let Some(p) = (*probed).clone() else { return };
            let token = match api_token(&token_id, &secret) {
                Ok(t) => t,
                Err(e) => {
                    error.set(Some(e));
                    return;
                }
            };
            token_nodes.set(None);
            busy.set(Some("Signing in with the token…"));
            let (token_nodes, busy, err) = (token_nodes.clone(), busy.clone(), error.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let answer = crate::api::call(move |c| {
                    let (p, token) = (p.clone(), token.clone());
                    async move { c.check_cluster_token(&p.url, &token, &p.fingerprint).await }
                })
                .await;
                busy.set(None);
                match answer {
                    Ok(r) => {
                        err.set(None);
                        token_nodes.set(Some(r.nodes.unwrap_or_default()));
                    }
                    Err(e) => err.set(Some(e.message())),
                }
            });
        })
    };
    let toggle = {
        let confirmed = confirmed.clone();
        Callback::from(move |_: Event| confirmed.set(!*confirmed))
    };
    let placeholder = cluster_name("", &url).unwrap_or_default();
    let ready = probed.is_some() && *confirmed && busy.is_none();
    html! {
        <section class="wizard" aria-labelledby="wizard-title">
            <h2 id="wizard-title">{"Add a cluster"}</h2>
            <form class="admin-form" onsubmit={add}>
                <label for="cluster-url">{"URL of a PVE node"}</label>
                <input id="cluster-url" type="text" inputmode="url" placeholder="https://pve1.lan:8006"
                    value={(*url).clone()} oninput={field(&url, true)} autocomplete="off" required=true />
                <label for="token-id">{"API token ID"}</label>
                <input id="token-id" type="text" placeholder="canopy@pve!canopy" aria-describedby="token-help"
                    value={(*token_id).clone()} oninput={field(&token_id, false)} autocomplete="off" required=true />
                <label for="token-secret">{"Token secret"}</label>
                <input id="token-secret" type="password" aria-describedby="token-help"
                    value={(*secret).clone()} oninput={field(&secret, false)} autocomplete="off" />
                <p id="token-help" class="muted form-help">
                    {"The token PVE showed when you made it (Datacenter → Permissions → API Tokens; "}
                    {"PVEAuditor is enough for the tree; a node's own updates also need Sys.Modify). You may paste the whole "}
                    <code>{"USER@REALM!ID=SECRET"}</code>{" into the ID field and leave the secret empty."}
                </p>
                <label for="cluster-name">{"Name (optional)"}</label>
                <input id="cluster-name" type="text" placeholder={placeholder}
                    value={(*name).clone()} oninput={field(&name, false)} autocomplete="off" />
                <div class="buttons">
                    <button type="button" id="probe" onclick={probe} disabled={busy.is_some()}>{"Test connection"}</button>
                </div>
                if let Some(p) = &*probed {
                    <div class="fingerprint-box" role="group" aria-labelledby="fingerprint-title">
                        <p id="fingerprint-title">{"The server at "}<code>{&p.url}</code>{" presented a certificate with the SHA-256 fingerprint"}</p>
                        <p><code id="probe-fingerprint" class="fingerprint">{&p.fingerprint}</code></p>
                        <p class="muted">
                            {"Compare it with the node's own certificate before you trust it: on the node run "}
                            <code>{"pvenode cert info"}</code>
                            {" (the pveproxy-ssl.pem certificate if you installed one, else pve-ssl.pem), or in the PVE GUI open the node → System → Certificates. If they differ, do not add the cluster: something else answered."}
                        </p>
                        <label class="check">
                            <input type="checkbox" id="fingerprint-ok" checked={*confirmed} onchange={toggle} />
                            {" This is the fingerprint of the node's certificate: pin it"}
                        </label>
                    </div>
                }
                if let Some(nodes) = &*token_nodes {
                    <p id="token-ok" class="note" role="status">{format!("The token signs in and sees {}.", crate::view::admin::node_list(nodes))}</p>
                }
                if let Some(b) = *busy { <p class="note" role="status">{b}</p> }
                { alert(&error) }
                <div class="buttons">
                    <button type="button" id="check-token" onclick={check_token} disabled={!ready}>{"Check the token"}</button>
                    <button type="submit" id="add-cluster" class="primary" disabled={!ready}>{"Add cluster"}</button>
                </div>
            </form>
        </section>
    }
}
