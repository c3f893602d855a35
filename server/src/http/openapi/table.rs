//! The OpenAPI table: one entry per route the server serves, with who may call it, what it
//! does, and the api-types it reads and answers. `docs/openapi.json` is built from it; the
//! role × route matrix test (`server/tests/authz.rs`) fails for a served route that has no
//! entry here and for an entry no route serves, and checks every route's answers against its
//! `Auth`.
//!
//! Adding a route: one line in its module's `routes()` and one line here, e.g.
//! `r(Post, "/users/{id}/disable", Admin, "Disable a user").ok::<User>(),`; then
//! `cargo xtask openapi` rewrites `docs/openapi.json`.

use super::{r, ApiRoute, Auth::*};
use crate::http::clusters::{HistoryQuery, SelectorQuery, TreeQuery};
use crate::http::deploy::{ListQuery, PreviewQuery, SelectorBody};
use crate::http::docker::ContainersQuery;
use crate::http::guests::GuestQuery;
use crate::http::routes::Verb::*;
use canopy_api_types::agent::*;
use canopy_api_types::auth::*;
use canopy_api_types::bulk::{ApproveOperation, UpdateRequest};
use canopy_api_types::clusters::*;
use canopy_api_types::commands::{Command, HeartbeatAck, StartAccepted};
use canopy_api_types::deploy::*;
use canopy_api_types::docker::{CheckSummary, ContainerView, RegistryLogin, RegistryStatus};
use canopy_api_types::hosts::{Event, EventFilter, Host, HostScan, RepairRequest, ScanRequest};
use canopy_api_types::updates::*;

/// Every route: `r(method, path under /api/v1, who may call it, summary)`, then the JSON body
/// it reads (`body`), its query parameters (`query`), an `Idempotency-Key` header it honours
/// (`idempotent`) and what it answers (`ok`, `created`, `accepted`, `event_stream`). `site()`
/// marks a path outside `/api/v1`.
#[rustfmt::skip]
pub const ROUTES: &[ApiRoute] = &[
    r(Get, "/", Public, "The web dashboard (its index.html; every other GET outside /api/ too)").site().html(),
    r(Get, "/healthz", Public, "200 when the database is usable, 503 otherwise").site().text(),
    r(Get, "/openapi.json", Public, "This document").ok::<serde_json::Value>(),
    r(Post, "/auth/login", Public, "Log in; returns an access JWT and a refresh token").body::<LoginRequest>().ok::<TokenPair>(),
    r(Post, "/auth/refresh", Public, "Rotate a refresh token; returns a new pair").body::<RefreshRequest>().ok::<TokenPair>(),
    r(Post, "/auth/logout", Public, "Revoke a refresh token").body::<RefreshRequest>().ok::<LogoutResponse>(),
    r(Post, "/auth/session", Public, "The dashboard's login: the tokens go into HttpOnly cookies (needs X-Canopy-CSRF: 1)").body::<LoginRequest>().ok::<BrowserSession>(),
    r(Post, "/auth/session/refresh", Public, "Rotate the dashboard's refresh cookie; new cookies (needs X-Canopy-CSRF: 1)").ok::<BrowserSession>(),
    r(Delete, "/auth/session", Public, "End the dashboard's session: its refresh token revoked, its cookies cleared (needs X-Canopy-CSRF: 1)").ok::<LogoutResponse>(),
    r(Post, "/auth/logout-all", Viewer, "Log out everywhere: revoke every refresh token of the logged-in user and end their access tokens").ok::<AccountChange>(),
    r(Get, "/me", Viewer, "The logged-in user").ok::<User>(),
    r(Post, "/me/password", Viewer, "Change one's own password (the current one required); ends every other session, returns a new one").body::<ChangePasswordRequest>().ok::<TokenPair>(),
    r(Get, "/users", Admin, "Users with role and disabled flag").ok::<Vec<User>>(),
    r(Post, "/users", Admin, "Create a user").body::<CreateUserRequest>().ok::<User>(),
    r(Delete, "/users/{username}", Admin, "Delete a user (their events stay); ends their sessions; 409 for the last enabled admin").ok::<AccountChange>(),
    r(Post, "/users/{username}/disable", Admin, "Disable a user; ends their sessions; 409 for the last enabled admin").ok::<AccountChange>(),
    r(Post, "/users/{username}/enable", Admin, "Enable a disabled user").ok::<AccountChange>(),
    r(Put, "/users/{username}/role", Admin, "Give a user another role; ends their sessions; 409 when demoting the last enabled admin").body::<SetRoleRequest>().ok::<AccountChange>(),
    r(Put, "/users/{username}/password", Admin, "Set a user's password; ends their sessions").body::<SetPasswordRequest>().ok::<AccountChange>(),
    r(Post, "/registration-tokens", Admin, "Create a registration token (secret shown once)").body::<CreateRegistrationToken>().ok::<CreatedRegistrationToken>(),
    r(Get, "/registration-tokens", Admin, "List registration tokens").ok::<Vec<RegistrationToken>>(),
    r(Delete, "/registration-tokens/{id}", Admin, "Revoke a registration token (the record stays, marked revoked)").ok::<RegistrationToken>(),
    r(Get, "/hosts", Viewer, "Enrolled hosts with update counts").ok::<Vec<Host>>(),
    r(Get, "/hosts/{id}", Viewer, "One host (also a deleted or archived one)").ok::<Host>(),
    r(Delete, "/hosts/{id}", Admin, "Delete a host: credential revoked, detached from its guest, waiting commands cancelled, history kept").ok::<Host>(),
    r(Post, "/hosts/{id}/repair", Operator, "Queue the repair of an interrupted package database the host reported (dpkg --configure -a, apk fix)").body::<RepairRequest>().ok::<Command>(),
    r(Get, "/hosts/{id}/commands", Viewer, "Commands of a host, newest first").ok::<Vec<Command>>(),
    r(Get, "/hosts/{id}/history", Viewer, "What Canopy installed on a host").ok::<Vec<VersionChange>>(),
    r(Post, "/hosts/{id}/scan", Operator, "Queue a scan now").ok::<Command>(),
    r(Post, "/hosts/scan", Operator, "Queue a scan on every agent a selector resolves to; one line per guest, queued or skipped and why").body::<ScanRequest>().ok::<Vec<HostScan>>(),
    r(Get, "/updates", Viewer, "Updates with filters and pagination").query::<UpdateFilter>().ok::<Page<Update>>(),
    r(Post, "/updates/approve", Operator, "Approve updates; queues one dry-run per host").idempotent().body::<UpdateIdsRequest>().ok::<ApproveResponse>(),
    r(Post, "/updates/reject", Operator, "Reject updates").body::<UpdateIdsRequest>().ok::<RejectResponse>(),
    r(Get, "/commands/{id}", Viewer, "One command with its result").ok::<Command>(),
    r(Post, "/commands/{id}/confirm", Operator, "Confirm a dry-run; queues the install, pinned at the dry-run's versions").ok::<Command>(),
    r(Post, "/commands/{id}/cancel", Operator, "Cancel a pending or sent (not yet started) command").ok::<Command>(),
    r(Post, "/commands/{id}/retry", Operator, "Retry a failed, timed-out or cancelled command").ok::<Command>(),
    r(Get, "/history", Viewer, "Version history of every host").ok::<Vec<VersionChange>>(),
    r(Get, "/events", Viewer, "Event log").query::<EventFilter>().ok::<Vec<Event>>(),
    r(Get, "/stats", Viewer, "Dashboard figures").ok::<UpdateStats>(),
    r(Get, "/clusters", Viewer, "Proxmox clusters (the token secret is never returned)").ok::<Vec<Cluster>>(),
    r(Post, "/clusters", Admin, "Add a cluster (URL, API token, fingerprint or CA); runs the first discovery").body::<CreateCluster>().created::<Cluster>(),
    r(Post, "/clusters/probe", Admin, "The certificate fingerprint an address presents, for trust on first use; with a token and the confirmed fingerprint, the nodes that token sees over the pinned connection").body::<ProbeRequest>().ok::<ProbeResponse>(),
    r(Delete, "/clusters/{name}", Admin, "Remove a cluster and its tree").ok::<ClusterRemoved>(),
    r(Post, "/clusters/{name}/discover", Operator, "Run a discovery pass now").ok::<DiscoveryReport>(),
    r(Get, "/clusters/{name}/nodes/{node}/updates", Viewer, "A PVE node's own pending apt updates (read-only, cached)").ok::<NodeUpdates>(),
    r(Get, "/tree", Viewer, "The inventory tree with rollups, whole or the subtrees a selector matches, all levels or `depth` of them").query::<TreeQuery>().ok::<TreeResponse>(),
    r(Get, "/tree/events", Viewer, "Server-sent events of the tree's changes: `ready` once subscribed, then `vertices` (changed vertices and their ancestors, as `depth=0` lists them) and `reload` (`TreeReload`: whose children to load again)").event_stream(),
    r(Get, "/tree/preview", Viewer, "What an action on a selector would touch").query::<SelectorQuery>().ok::<SelectorPreview>(),
    r(Get, "/tree/history", Viewer, "Events of a guest across migrations and of its agent").query::<HistoryQuery>().ok::<Vec<Event>>(),
    r(Get, "/tree/snapshots", Viewer, "A guest's PVE snapshots, read live (Canopy's marked), newest first").query::<GuestQuery>().ok::<Vec<GuestSnapshot>>(),
    r(Get, "/containers", Viewer, "Docker containers the agents reported, with their place in the tree, open image update and last registry check").query::<ContainersQuery>().ok::<Vec<ContainerView>>(),
    r(Get, "/registries", Viewer, "Container registries: the last rate-limit budget each announced, a 429's wait, requests of the last check, whether credentials are stored").ok::<Vec<RegistryStatus>>(),
    r(Put, "/registries/{registry}/credentials", Admin, "Store credentials for a registry (the secret sealed, never shown again)").body::<RegistryLogin>().ok::<RegistryStatus>(),
    r(Delete, "/registries/{registry}/credentials", Admin, "Remove a registry's credentials (checks go anonymous)").ok::<RegistryStatus>(),
    r(Post, "/images/check", Operator, "Check every container's image against its registry now: one HEAD per registry, repository and tag").ok::<CheckSummary>(),
    r(Get, "/agents/deploy/preview", Viewer, "The guests an agent deploy would touch and how each is reached").query::<PreviewQuery>().ok::<DeployPreview>(),
    r(Post, "/agents/deploy", Deploy, "Deploy (or uninstall) agents below a selector; returns the operation at once. Admins only, unless deploy.operators_may_deploy lets operators too").body::<DeployRequest>().accepted::<Operation>(),
    r(Post, "/agents/agentless-scan", Operator, "Scan guests without an agent through pct exec; results per guest").body::<SelectorBody>().ok::<Vec<AgentlessResult>>(),
    r(Get, "/agents/ssh-key", Admin, "The public SSH key to add to the PVE nodes' authorized_keys").ok::<SshPublicKey>(),
    r(Get, "/agents/host-keys", Admin, "Pinned SSH host keys").ok::<Vec<SshHostKey>>(),
    r(Delete, "/agents/host-keys/{address}", Admin, "Forget a pinned SSH host key (after a node was reinstalled)").ok::<HostKeyForgotten>(),
    r(Get, "/operations", Viewer, "Recent operations with their items").query::<ListQuery>().ok::<Vec<Operation>>(),
    r(Get, "/operations/{id}", Viewer, "One operation: per-guest state, step, outcome and reason").ok::<Operation>(),
    r(Post, "/operations/update", Operator, "Plan an update of every guest a selector resolves to: each is scanned and dry-run; the operation waits for approval of its plan").body::<UpdateRequest>().accepted::<Operation>(),
    r(Post, "/operations/{id}/approve", Operator, "Approve an update operation's plan by its fingerprint (409 when the plan changed); the guests are updated").body::<ApproveOperation>().ok::<Operation>(),
    r(Post, "/operations/{id}/pause", Operator, "Pause an update operation: no new guest starts, guests in flight finish").ok::<Operation>(),
    r(Post, "/operations/{id}/resume", Operator, "Resume a paused update operation").ok::<Operation>(),
    r(Post, "/operations/{id}/cancel", Operator, "Cancel an update operation: guests in flight finish, no other starts").ok::<Operation>(),
    r(Get, "/operations/{id}/events", Viewer, "Server-sent events: `snapshot`, then `item` per item change, then `done` with the operation").event_stream(),
    r(Post, "/agent/register", Public, "Register an agent with a registration token").body::<RegisterRequest>().ok::<RegisterResponse>(),
    r(Post, "/agent/checkin", Agent, "Long-poll check-in; returns at most one command").body::<CheckinRequest>().ok::<CheckinResponse>(),
    r(Post, "/agent/report", Agent, "Upload a scan report").body::<ReportUpload>().ok::<ReportAccepted>(),
    r(Post, "/agent/commands/{id}/started", Agent, "Ask for the go to run a command: 200 = run it (deadline from now), 409/404 = never run it").ok::<StartAccepted>(),
    r(Post, "/agent/commands/{id}/heartbeat", Agent, "The agent is still working on a running command").ok::<HeartbeatAck>(),
    r(Post, "/agent/commands/{id}/result", Agent, "Submit a command result (idempotent)").body::<ResultSubmission>().ok::<ResultRecorded>(),
];
