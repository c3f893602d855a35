//! The HTTP surface: `/healthz`, and under `/api/v1` the UI router (user JWTs) and
//! the agent router (agent credentials), plus the OpenAPI description.

mod agent;
mod auth_routes;
pub(crate) mod client_ip;
pub(crate) mod clusters;
mod deploy;
pub mod extract;
mod idempotency;
pub mod openapi;
mod ui;
mod users;

use crate::error::Error;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use canopy_api_types::API_PREFIX;
use tower_http::trace::TraceLayer;

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(auth_routes::router())
        .merge(users::router())
        .merge(ui::router())
        .merge(clusters::router())
        .merge(deploy::router())
        .merge(agent::router())
        .route("/openapi.json", get(openapi::document));
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .nest(API_PREFIX, api)
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
