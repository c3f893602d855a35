//! The HTTP surface: `/` and the web dashboard's files (`crate::webui`), `/healthz`, and
//! under `/api/v1` the user routes (user JWTs) and the agent routes (agent credentials), plus
//! the OpenAPI description.

mod agent;
mod auth_routes;
mod bulk;
pub(crate) mod client_ip;
pub(crate) mod clusters;
mod deploy;
mod docker;
pub mod extract;
pub(crate) mod guests;
mod hosts;
mod idempotency;
pub mod openapi;
pub mod routes;
mod scans;
mod session;
mod users;

use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Router;
use canopy_api_types::API_PREFIX;
use routes::{Routes, ServedRoute};
use tower_http::trace::TraceLayer;

/// Every route the server serves: `/`, `/healthz` and the REST API under `/api/v1`. Adding a
/// route means one line in its module's `routes()` and one entry in [`openapi::ROUTES`].
fn all_routes() -> Routes {
    let api = Routes::new()
        .merge(auth_routes::routes())
        .merge(session::routes())
        .merge(users::routes())
        .merge(hosts::routes())
        .merge(scans::routes())
        .merge(clusters::routes())
        .merge(guests::routes())
        .merge(docker::routes())
        .merge(deploy::routes())
        .merge(bulk::routes())
        .merge(agent::routes())
        .get("/openapi.json", openapi::document);
    Routes::new()
        .get("/", crate::webui::index)
        .get("/healthz", healthz)
        .nest(API_PREFIX, api)
}

/// The `(method, path)` of every route [`router`] serves, sorted.
pub fn served_routes() -> Vec<ServedRoute> {
    all_routes().served()
}

pub fn router(state: AppState) -> Router {
    all_routes()
        .into_router()
        // The dashboard's files and client-side routes; a JSON 404 under /api/.
        .fallback(crate::webui::fallback)
        .layer(axum::middleware::map_response(
            crate::webui::headers::security_headers,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span(&state)))
        .with_state(state)
}

/// The span of each request names its client (see [`client_ip`]).
fn request_span(
    state: &AppState,
) -> impl Fn(&axum::http::Request<axum::body::Body>) -> tracing::Span + Clone {
    let trusted = state.trusted_proxies.clone();
    move |req| {
        let client = req
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| trusted.client(c.0.ip(), req.headers()).to_string())
            .unwrap_or_default();
        tracing::info_span!("request", method = %req.method(), uri = %req.uri(), %client)
    }
}

/// 200 when the database answers, 503 otherwise.
async fn healthz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(e) => {
            tracing::error!(error = %e, "health check: database unusable");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}
