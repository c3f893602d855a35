//! The HTTP surface: `/healthz`, and under `/api/v1` the user routes (user JWTs) and
//! the agent routes (agent credentials), plus the OpenAPI description.

mod agent;
mod auth_routes;
mod bulk;
pub(crate) mod client_ip;
pub(crate) mod clusters;
mod deploy;
pub mod extract;
mod hosts;
mod idempotency;
pub mod openapi;
pub mod routes;
mod users;

use crate::error::Error;
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
        .merge(users::routes())
        .merge(hosts::routes())
        .merge(clusters::routes())
        .merge(deploy::routes())
        .merge(bulk::routes())
        .merge(agent::routes())
        .get("/openapi.json", openapi::document);
    Routes::new()
        .get("/", index)
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
        .fallback(|| async { Error::NotFound("no such route".into()) })
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

/// Until the web dashboard lands, `/` says where things are.
async fn index() -> axum::response::Html<&'static str> {
    axum::response::Html(concat!(
        "<!doctype html><title>Canopy</title><h1>Canopy</h1>",
        "<p>The API is under <a href=\"/api/v1/openapi.json\">/api/v1</a>. ",
        "Use the <code>canopy</code> CLI (<code>canopy login</code>, <code>canopy hosts</code>, ",
        "<code>canopy updates</code>, <code>canopy approve</code>) until the web dashboard arrives.</p>"
    ))
}
