//! The role × route matrix: every route the real router serves (`http::served_routes()`, the
//! list `http::routes::Routes` recorded while registering them with axum) is called as
//! anonymous, as an enrolled agent, and as a viewer, an operator and an admin, against a real
//! server; each answer is checked against the `Auth` the route declares in the OpenAPI table
//! (`http::openapi::ROUTES`):
//!
//! - anonymous gets 401 on every route that needs a credential;
//! - an agent's credential gets 401 on user routes, a user's token 401 on agent routes;
//! - a user below the route's role gets 403; at or above it, anything but 401/403;
//! - public routes answer nobody 401/403, except the dashboard's session routes, which
//!   refuse every caller here: none sends the CSRF header and the session cookie
//!   (`web_session.rs` tests them with both).
//!
//! A served route missing from the table fails the test by name, and so does a table entry that
//! no route serves; a method a served path does not declare must answer 405. Path parameters
//! are well-formed ids of nothing, bodies `{}`: the point is the authorization answer, which
//! comes before either is looked at. Authorization does not depend on the storage backend, so
//! this runs on SQLite only.

mod common;

use canopy_api_types::agent::RegisterRequest;
use canopy_api_types::auth::{CreateUserRequest, Role};
use canopy_server::http::openapi::{Auth, ROUTES};
use canopy_server::http::routes::{ServedRoute, Verb};
use canopy_server::http::served_routes;
use common::*;
use std::collections::BTreeSet;

const PASSWORD: &str = "matrix password 1";

/// Public routes of the dashboard's session, refused without `X-Canopy-CSRF: 1`.
const DASHBOARD_SESSION: &[&str] = &["/api/v1/auth/session", "/api/v1/auth/session/refresh"];

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    Anonymous,
    Agent,
    User(Role),
}

/// What `caller` must get from a route declared `auth`: `Err(status)` for a refusal,
/// `Ok(())` for "anything but 401 and 403".
fn expected(auth: Auth, caller: Caller) -> Result<(), u16> {
    match (auth, caller) {
        (Auth::Public, _) => Ok(()),
        (_, Caller::Anonymous) => Err(401),
        (Auth::Agent, Caller::Agent) => Ok(()),
        (Auth::Agent, Caller::User(_)) => Err(401),
        (_, Caller::Agent) => Err(401),
        (auth, Caller::User(role)) => {
            let least = auth.min_role().expect("a user route has a least role");
            if role >= least {
                Ok(())
            } else {
                Err(403)
            }
        }
    }
}

/// The path with its parameters filled by well-formed values that name nothing.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{id}" => uuid::Uuid::new_v4().to_string(),
            "{name}" => "no-such-cluster".into(),
            "{node}" => "pve1".into(),
            "{address}" => "127.0.0.1:22".into(),
            "{username}" => "no-such-user".into(),
            "{registry}" => "registry.invalid".into(),
            s if s.starts_with('{') => panic!("no value for the path parameter {s} in {path}"),
            s => s.into(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn method(verb: Verb) -> reqwest::Method {
    match verb {
        Verb::Get => reqwest::Method::GET,
        Verb::Post => reqwest::Method::POST,
        Verb::Put => reqwest::Method::PUT,
        Verb::Patch => reqwest::Method::PATCH,
        Verb::Delete => reqwest::Method::DELETE,
    }
}

/// The status and error message of one call.
async fn call(
    http: &reqwest::Client,
    base: &str,
    verb: Verb,
    path: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut req = http.request(method(verb), format!("{base}{}", concrete(path)));
    if matches!(verb, Verb::Post | Verb::Put | Verb::Patch) {
        req = req.json(&serde_json::json!({}));
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("the server answers");
    let status = resp.status().as_u16();
    // A stream that was let in (`GET /tree/events`) never ends: its status is the answer.
    let streaming = resp
        .headers()
        .get("content-type")
        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        return (status, String::new());
    }
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<canopy_api_types::ApiError>(&text)
        .map(|e| e.message)
        .unwrap_or_default();
    (status, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_as_declared() {
    let app = spawn_app(Backend::Sqlite)
        .await
        .expect("SQLite needs nothing");
    let http = http();

    // The table and the router list the same routes.
    let served: BTreeSet<ServedRoute> = served_routes().into_iter().collect();
    let declared: BTreeSet<ServedRoute> = ROUTES
        .iter()
        .map(|r| ServedRoute {
            path: r.full_path(),
            verb: r.verb,
        })
        .collect();
    let mut problems: Vec<String> = Vec::new();
    for route in served.difference(&declared) {
        problems.push(format!(
            "{route} is served but has no entry in the OpenAPI table (server/src/http/openapi/table.rs)"
        ));
    }
    for route in declared.difference(&served) {
        problems.push(format!(
            "{route} is in the OpenAPI table but no router serves it"
        ));
    }
    assert!(
        ROUTES.len() == declared.len(),
        "a route is in the table twice"
    );

    // The callers: one per role, and an enrolled agent.
    let mut callers: Vec<(Caller, Option<String>)> = vec![(Caller::Anonymous, None)];
    let token = app.registration_token(1).await;
    let agent = app
        .anon
        .register(&RegisterRequest {
            registration_token: token,
            facts: facts("matrix-agent"),
            current_token: None,
        })
        .await
        .expect("the agent registers");
    callers.push((Caller::Agent, Some(agent.agent_token)));
    let admin = app.anon.login("admin", ADMIN_PASSWORD).await.unwrap();
    for (name, role) in [("viewer", Role::Viewer), ("operator", Role::Operator)] {
        let created = http
            .post(format!("{}/api/v1/users", app.base))
            .bearer_auth(&admin.access_token)
            .json(&CreateUserRequest {
                username: name.into(),
                password: PASSWORD.into(),
                role,
            })
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "the admin creates {name}");
        let pair = app
            .anon
            .login(name, PASSWORD)
            .await
            .expect("the user logs in");
        callers.push((Caller::User(role), Some(pair.access_token)));
    }
    callers.push((Caller::User(Role::Admin), Some(admin.access_token)));

    // Routes that end the caller's own sessions go last, or every later call would be 401.
    const ENDS_THE_CALLERS_SESSIONS: &[&str] = &["/api/v1/auth/logout-all"];
    let mut in_order: Vec<_> = ROUTES
        .iter()
        .filter(|r| {
            served.contains(&ServedRoute {
                path: r.full_path(),
                verb: r.verb,
            })
        })
        .collect();
    in_order.sort_by_key(|r| ENDS_THE_CALLERS_SESSIONS.contains(&r.full_path().as_str()));
    let mut checked = 0;
    for route in in_order {
        let path = route.full_path();
        for (caller, token) in &callers {
            let (status, message) =
                call(&http, &app.base, route.verb, &path, token.as_deref()).await;
            checked += 1;
            let shown = format!(
                "{} {path} as {caller:?} (declared {:?}): {status} {message}",
                route.verb.as_str().to_uppercase(),
                route.auth
            );
            if status == 405 || message == "no such route" {
                problems.push(format!("{shown}: not routed"));
                continue;
            }
            if DASHBOARD_SESSION.contains(&path.as_str()) {
                if status != 401 && status != 403 {
                    problems.push(format!(
                        "{shown}: expected 401 or 403 without the CSRF header"
                    ));
                }
                continue;
            }
            match expected(route.auth, *caller) {
                Err(want) if status != want => problems.push(format!("{shown}: expected {want}")),
                Ok(()) if status == 401 || status == 403 => {
                    problems.push(format!("{shown}: expected neither 401 nor 403"))
                }
                _ => {}
            }
        }
    }

    // A method a served path does not declare is not answered (axum: 405).
    let paths: BTreeSet<&str> = served.iter().map(|r| r.path.as_str()).collect();
    for path in paths {
        for verb in Verb::ALL {
            let route = ServedRoute {
                path: path.to_string(),
                verb,
            };
            if served.contains(&route) {
                continue;
            }
            let (status, _) = call(&http, &app.base, verb, path, None).await;
            if status != 405 {
                problems.push(format!("{route} is not recorded but answers {status}"));
            }
        }
    }

    assert!(
        problems.is_empty(),
        "{} problem(s) in the role × route matrix:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(checked, served.len() * callers.len());
    eprintln!(
        "role × route matrix: {} routes × {} callers",
        served.len(),
        callers.len()
    );
}

#[test]
fn the_expectations_follow_the_roles() {
    use Caller::*;
    assert_eq!(expected(Auth::Admin, User(Role::Operator)), Err(403));
    assert_eq!(expected(Auth::Operator, User(Role::Admin)), Ok(()));
    assert_eq!(expected(Auth::Viewer, Agent), Err(401));
    assert_eq!(expected(Auth::Agent, User(Role::Admin)), Err(401));
    assert_eq!(expected(Auth::Agent, Anonymous), Err(401));
    assert_eq!(expected(Auth::Public, Anonymous), Ok(()));
    assert_eq!(
        concrete("/clusters/{name}/nodes/{node}/updates"),
        "/clusters/no-such-cluster/nodes/pve1/updates"
    );
}
