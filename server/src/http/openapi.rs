//! `/api/v1/openapi.json`: an OpenAPI 3.0 document generated from one route table.
//! A test walks the table against the real router so the two cannot drift.

use axum::Json;
use serde_json::{json, Map, Value};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    None,
    User,
    Operator,
    Admin,
    /// Admin, or operator when `deploy.operators_may_deploy` is set: deploying and
    /// uninstalling agents runs commands as root on every node.
    Deploy,
    Agent,
}

/// `(method, path under /api/v1, auth, summary)`.
pub const ROUTES: &[(&str, &str, Auth, &str)] = &[
    ("post", "/auth/login", Auth::None, "Log in; returns an access JWT and a refresh token"),
    ("post", "/auth/refresh", Auth::None, "Rotate a refresh token; returns a new pair"),
    ("post", "/auth/logout", Auth::None, "Revoke a refresh token"),
    ("post", "/auth/logout-all", Auth::User, "Log out everywhere: revoke every refresh token of the logged-in user and end their access tokens"),
    ("get", "/me", Auth::User, "The logged-in user"),
    ("post", "/me/password", Auth::User, "Change one's own password (the current one required); ends every other session, returns a new one"),
    ("get", "/users", Auth::Admin, "Users with role and disabled flag"),
    ("post", "/users", Auth::Admin, "Create a user"),
    ("delete", "/users/{username}", Auth::Admin, "Delete a user (their events stay); ends their sessions; 409 for the last enabled admin"),
    ("post", "/users/{username}/disable", Auth::Admin, "Disable a user; ends their sessions; 409 for the last enabled admin"),
    ("post", "/users/{username}/enable", Auth::Admin, "Enable a disabled user"),
    ("put", "/users/{username}/role", Auth::Admin, "Give a user another role; ends their sessions; 409 when demoting the last enabled admin"),
    ("put", "/users/{username}/password", Auth::Admin, "Set a user's password; ends their sessions"),
    ("post", "/registration-tokens", Auth::Admin, "Create a registration token (secret shown once)"),
    ("get", "/registration-tokens", Auth::Admin, "List registration tokens"),
    ("delete", "/registration-tokens/{id}", Auth::Admin, "Revoke a registration token (the record stays, marked revoked)"),
    ("get", "/hosts", Auth::User, "Enrolled hosts with update counts"),
    ("get", "/hosts/{id}", Auth::User, "One host (also a deleted or archived one)"),
    ("delete", "/hosts/{id}", Auth::Admin, "Delete a host: credential revoked, detached from its guest, waiting commands cancelled, history kept"),
    ("post", "/hosts/{id}/repair", Auth::Operator, "Queue the repair of an interrupted package database the host reported (dpkg --configure -a)"),
    ("get", "/hosts/{id}/commands", Auth::User, "Commands of a host, newest first"),
    ("get", "/hosts/{id}/history", Auth::User, "What Canopy installed on a host"),
    ("post", "/hosts/{id}/scan", Auth::Operator, "Queue a scan now"),
    ("get", "/updates", Auth::User, "Updates with filters (host_id, selector, status, severity, manager, package) and pagination (page, per_page)"),
    ("post", "/updates/approve", Auth::Operator, "Approve updates; queues one dry-run per host (Idempotency-Key honoured)"),
    ("post", "/updates/reject", Auth::Operator, "Reject updates"),
    ("get", "/commands/{id}", Auth::User, "One command with its result"),
    ("post", "/commands/{id}/confirm", Auth::Operator, "Confirm a dry-run; queues the install"),
    ("post", "/commands/{id}/cancel", Auth::Operator, "Cancel a pending or sent (not yet started) command"),
    ("post", "/commands/{id}/retry", Auth::Operator, "Retry a failed, timed-out or cancelled command"),
    ("get", "/history", Auth::User, "Version history of every host"),
    ("get", "/events", Auth::User, "Event log (host_id, correlation_id, after, limit)"),
    ("get", "/stats", Auth::User, "Dashboard figures"),
    ("get", "/clusters", Auth::User, "Proxmox clusters (the token secret is never returned)"),
    ("post", "/clusters", Auth::Admin, "Add a cluster (URL, API token, fingerprint or CA); runs the first discovery"),
    ("post", "/clusters/probe", Auth::Admin, "The certificate fingerprint an address presents, for trust on first use"),
    ("delete", "/clusters/{name}", Auth::Admin, "Remove a cluster and its tree"),
    ("post", "/clusters/{name}/discover", Auth::Operator, "Run a discovery pass now"),
    ("get", "/clusters/{name}/nodes/{node}/updates", Auth::User, "A PVE node's own pending apt updates (read-only, cached)"),
    ("get", "/tree", Auth::User, "The inventory tree, whole or the subtrees a selector matches (selector)"),
    ("get", "/tree/preview", Auth::User, "What an action on a selector would touch (selector)"),
    ("get", "/tree/history", Auth::User, "Events of a guest across migrations and of its agent (id, limit)"),
    ("get", "/agents/deploy/preview", Auth::User, "The guests an agent deploy would touch and how each is reached (selector, action)"),
    ("post", "/agents/deploy", Auth::Deploy, "Deploy (or uninstall) agents below a selector; returns the operation at once. Admins only, unless deploy.operators_may_deploy lets operators too"),
    ("post", "/agents/agentless-scan", Auth::Operator, "Scan guests without an agent through pct exec; results per guest"),
    ("get", "/agents/ssh-key", Auth::Admin, "The public SSH key to add to the PVE nodes' authorized_keys"),
    ("get", "/agents/host-keys", Auth::Admin, "Pinned SSH host keys"),
    ("delete", "/agents/host-keys/{address}", Auth::Admin, "Forget a pinned SSH host key (after a node was reinstalled)"),
    ("get", "/operations", Auth::User, "Recent operations with their items (limit)"),
    ("get", "/operations/{id}", Auth::User, "One operation: per-guest state, step, outcome and reason"),
    ("get", "/operations/{id}/events", Auth::User, "Server-sent events: `snapshot`, then `item` per item change, then `done` with the operation"),
    ("post", "/agent/register", Auth::None, "Register an agent with a registration token"),
    ("post", "/agent/checkin", Auth::Agent, "Long-poll check-in; returns commands"),
    ("post", "/agent/report", Auth::Agent, "Upload a scan report"),
    ("post", "/agent/commands/{id}/started", Auth::Agent, "Ask for the go to run a command: 200 = run it (deadline from now), 409/404 = never run it"),
    ("post", "/agent/commands/{id}/heartbeat", Auth::Agent, "The agent is still working on a running command"),
    ("post", "/agent/commands/{id}/result", Auth::Agent, "Submit a command result (idempotent)"),
    ("get", "/openapi.json", Auth::None, "This document"),
];

pub fn build() -> Value {
    let mut paths = Map::new();
    for (method, path, auth, summary) in ROUTES {
        let mut op = json!({
            "summary": summary,
            "responses": {
                "200": { "description": "OK" },
                "default": { "description": "Error", "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        });
        let security = match auth {
            Auth::None => None,
            Auth::Agent => Some(json!([{ "agentToken": [] }])),
            _ => Some(json!([{ "userJwt": [] }])),
        };
        if let Some(s) = security {
            op["security"] = s;
        }
        match auth {
            Auth::None | Auth::Agent | Auth::User => {}
            Auth::Deploy => {
                op["x-canopy-role"] = json!("admin");
                op["x-canopy-operators-if"] = json!("deploy.operators_may_deploy");
            }
            Auth::Operator | Auth::Admin => {
                op["x-canopy-role"] = json!(format!("{auth:?}").to_lowercase());
            }
        }
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                let schema = if name == "id" {
                    json!({ "type": "string", "format": "uuid" })
                } else {
                    json!({ "type": "string" })
                };
                json!({ "name": name, "in": "path", "required": true, "schema": schema })
            })
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        paths
            .entry(format!("/api/v1{path}"))
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("path item is an object")
            .insert((*method).to_string(), op);
    }
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Canopy", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "userJwt": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "agentToken": { "type": "http", "scheme": "bearer", "description": "HOST_ID.SECRET" }
            },
            "schemas": {
                "Error": { "type": "object", "required": ["code", "message"], "properties": {
                    "code": { "type": "string" }, "message": { "type": "string" } } }
            }
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(build())
}
