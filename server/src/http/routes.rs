//! The one way to register a route. [`Routes`] hands each route to axum and records its
//! `(method, path)` as it does, so the list [`super::served_routes`] returns is the list the
//! server serves: the role × route matrix test (`server/tests/authz.rs`) walks it and checks it
//! against the OpenAPI table ([`super::openapi::ROUTES`]). axum's own `Router::route`,
//! `merge` and `nest` are forbidden everywhere else in this crate (`server/clippy.toml`), so a
//! route cannot reach the server without being recorded.
#![allow(clippy::disallowed_methods)] // the one place that calls axum's route registration

use crate::state::AppState;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

/// An HTTP method a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    pub const ALL: [Verb; 5] = [Self::Get, Self::Post, Self::Put, Self::Patch, Self::Delete];

    /// Lower case, as OpenAPI writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
            Self::Patch => "patch",
            Self::Delete => "delete",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Post => MethodFilter::POST,
            Self::Put => MethodFilter::PUT,
            Self::Patch => MethodFilter::PATCH,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

/// A served route: its method and its whole path (`/api/v1/hosts/{id}`, `/healthz`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServedRoute {
    pub path: String,
    pub verb: Verb,
}

impl std::fmt::Display for ServedRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb.as_str().to_uppercase(), self.path)
    }
}

/// An axum router under construction, with the list of what it serves.
#[must_use]
pub struct Routes {
    router: Router<AppState>,
    served: Vec<ServedRoute>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            served: Vec::new(),
        }
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Verb::Get, path, on(MethodFilter::GET, handler))
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Verb::Post, path, on(MethodFilter::POST, handler))
    }

    pub fn put<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Verb::Put, path, on(MethodFilter::PUT, handler))
    }

    pub fn patch<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Verb::Patch, path, on(MethodFilter::PATCH, handler))
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Verb::Delete, path, on(MethodFilter::DELETE, handler))
    }

    /// A route whose request bodies may be larger than axum's default 2 MB (agent reports).
    pub fn with_body_limit<H: Handler<T, AppState>, T: 'static>(
        self,
        verb: Verb,
        path: &str,
        handler: H,
        bytes: usize,
    ) -> Self {
        let route = on(verb.filter(), handler).layer(DefaultBodyLimit::max(bytes));
        self.add(verb, path, route)
    }

    fn add(mut self, verb: Verb, path: &str, route: MethodRouter<AppState>) -> Self {
        // axum merges the methods of one path and panics on a method registered twice.
        self.router = self.router.route(path, route);
        self.served.push(ServedRoute {
            verb,
            path: path.to_string(),
        });
        self
    }

    /// Both sets of routes (a path may not be served by both).
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }

    /// `other` under `prefix` (`/api/v1`).
    pub fn nest(mut self, prefix: &str, other: Routes) -> Self {
        self.router = self.router.nest(prefix, other.router);
        self.served
            .extend(other.served.into_iter().map(|r| ServedRoute {
                verb: r.verb,
                path: format!("{prefix}{}", r.path),
            }));
        self
    }

    /// What these routes serve, sorted.
    pub fn served(&self) -> Vec<ServedRoute> {
        let mut served = self.served.clone();
        served.sort();
        served
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn nothing() {}

    #[test]
    fn nested_routes_are_recorded_with_their_prefix() {
        let api = Routes::new()
            .get("/hosts/{id}", nothing)
            .delete("/hosts/{id}", nothing);
        let site = Routes::new().get("/healthz", nothing).nest("/api/v1", api);
        let shown: Vec<String> = site.served().iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "GET /api/v1/hosts/{id}",
                "DELETE /api/v1/hosts/{id}",
                "GET /healthz"
            ]
        );
    }

    #[test]
    #[should_panic]
    fn a_route_registered_twice_is_refused() {
        let _ = Routes::new().get("/a", nothing).get("/a", nothing);
    }
}
