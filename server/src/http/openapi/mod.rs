//! The REST API's OpenAPI 3.0 document (`GET /api/v1/openapi.json`, `canopy openapi`, and
//! committed as `docs/openapi.json`), built from one table ([`ROUTES`]) whose request and
//! response schemas are generated from the api-types (schemars, in OpenAPI 3.0 form), so a
//! client can be generated from it. `cargo xtask check` fails when the committed copy differs.

mod table;

use super::routes::Verb;
use axum::Json;
use canopy_api_types::{ApiError, API_PREFIX};
use schemars::gen::{SchemaGenerator, SchemaSettings};
use schemars::schema::Schema;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};
pub use table::ROUTES;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone (login, registration, health).
    Public,
    /// A logged-in user of at least this role.
    Viewer,
    Operator,
    Admin,
    /// Deploying and uninstalling agents (root SSH on every node): admins, and operators too
    /// when `deploy.operators_may_deploy` is set.
    Deploy,
    /// An enrolled agent (its credential, never a user's token).
    Agent,
}

impl Auth {
    /// The least user role that may call the route; `None` for public and agent routes.
    pub fn min_role(self) -> Option<canopy_api_types::auth::Role> {
        use canopy_api_types::auth::Role;
        match self {
            Self::Viewer => Some(Role::Viewer),
            Self::Operator => Some(Role::Operator),
            Self::Admin | Self::Deploy => Some(Role::Admin),
            Self::Public | Self::Agent => None,
        }
    }
}

/// The schema of one api-type, added to the document's components.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// What a route answers when it succeeds.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// Not declared yet (a unit test refuses it).
    Undeclared,
    Json(u16, SchemaFn),
    EventStream,
    Html,
    Text,
}

/// One entry of the table: see [`r`].
#[derive(Debug, Clone, Copy)]
pub struct ApiRoute {
    pub verb: Verb,
    /// Under `/api/v1`, unless `site`.
    pub path: &'static str,
    pub auth: Auth,
    pub summary: &'static str,
    pub site: bool,
    /// Honours an `Idempotency-Key` header (the same key and body answer the first answer).
    pub idempotent: bool,
    pub body: Option<SchemaFn>,
    pub query: Option<SchemaFn>,
    pub answer: Answer,
}

/// A table entry: `r(Post, "/updates/approve", Operator, "Approve updates")`, then `.body::<T>()`,
/// `.query::<T>()` and one of `.ok::<T>()`, `.created::<T>()`, `.accepted::<T>()`,
/// `.event_stream()`.
pub const fn r(verb: Verb, path: &'static str, auth: Auth, summary: &'static str) -> ApiRoute {
    ApiRoute {
        verb,
        path,
        auth,
        summary,
        site: false,
        idempotent: false,
        body: None,
        query: None,
        answer: Answer::Undeclared,
    }
}

impl ApiRoute {
    /// The JSON body it reads.
    pub const fn body<T: JsonSchema>(mut self) -> Self {
        self.body = Some(schema_of::<T>);
        self
    }
    /// Its query parameters: the fields of `T`.
    pub const fn query<T: JsonSchema>(mut self) -> Self {
        self.query = Some(schema_of::<T>);
        self
    }
    /// 200 with a `T`.
    pub const fn ok<T: JsonSchema>(mut self) -> Self {
        self.answer = Answer::Json(200, schema_of::<T>);
        self
    }
    /// 201 with a `T`.
    pub const fn created<T: JsonSchema>(mut self) -> Self {
        self.answer = Answer::Json(201, schema_of::<T>);
        self
    }
    /// 202 with a `T`: the work goes on after the answer.
    pub const fn accepted<T: JsonSchema>(mut self) -> Self {
        self.answer = Answer::Json(202, schema_of::<T>);
        self
    }
    /// 200 with `text/event-stream`.
    pub const fn event_stream(mut self) -> Self {
        self.answer = Answer::EventStream;
        self
    }
    pub const fn html(mut self) -> Self {
        self.answer = Answer::Html;
        self
    }
    pub const fn text(mut self) -> Self {
        self.answer = Answer::Text;
        self
    }
    /// It honours an `Idempotency-Key` header.
    pub const fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }
    /// The path is outside `/api/v1` (`/healthz`).
    pub const fn site(mut self) -> Self {
        self.site = true;
        self
    }

    /// The whole path as served (`/api/v1/hosts/{id}`).
    pub fn full_path(&self) -> String {
        if self.site {
            self.path.to_string()
        } else {
            format!("{API_PREFIX}{}", self.path)
        }
    }

    /// `get_hosts_id_commands`: method and path, stable and unique.
    pub fn operation_id(&self) -> String {
        let mut id = self.verb.as_str().to_string();
        let words: Vec<String> = self
            .path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim_matches(|c| c == '{' || c == '}')
                    .replace(['-', '.'], "_")
            })
            .collect();
        if words.is_empty() {
            id.push_str("_index");
        }
        for w in words {
            id.push('_');
            id.push_str(&w);
        }
        id
    }
}

/// The document.
pub fn build() -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let error = generate(schema_of::<ApiError>, &mut g);
    let error = json!({ "application/json": { "schema": error } });
    let mut paths = Map::new();
    let mut query_types = Vec::new();
    for route in ROUTES {
        let op = operation(route, &mut g, &error, &mut query_types);
        paths
            .entry(route.full_path())
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item is an object")
            .insert(route.verb.as_str().to_string(), op);
    }
    let mut schemas: Map<String, Value> = g
        .take_definitions()
        .into_iter()
        .map(|(k, v)| (k, finish(&mut g, v)))
        .collect();
    // Query types became parameters: drop their own definitions unless something uses them.
    let used = serde_json::to_string(&(&paths, &schemas)).expect("the document serialises");
    schemas.retain(|name, _| {
        !query_types.contains(name) || used.contains(&format!("#/components/schemas/{name}\""))
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Canopy",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The REST API of the Canopy server. Errors answer `{code, message}`. \
                User routes take `Authorization: Bearer ACCESS_JWT` (from /auth/login); agent \
                routes take `Authorization: Bearer HOST_ID.SECRET` (from /agent/register). \
                `x-canopy-role` names the least role a user route needs (viewer < operator < admin).",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "userJwt": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "agentToken": { "type": "http", "scheme": "bearer", "description": "HOST_ID.SECRET" }
            },
            "schemas": schemas,
        }
    })
}

/// `docs/openapi.json`: the document as committed (pretty, one trailing newline).
pub fn pretty() -> String {
    let mut s = serde_json::to_string_pretty(&build()).expect("the document serialises");
    s.push('\n');
    s
}

/// A schema in OpenAPI 3.0 form: the generator's visitors (`true` → `{}`, no siblings beside
/// `$ref`, …) applied, as schemars does for a root schema.
fn finish(g: &mut SchemaGenerator, mut schema: Schema) -> Value {
    for visitor in g.visitors_mut() {
        visitor.visit_schema(&mut schema);
    }
    serde_json::to_value(&schema).expect("a schema serialises")
}

fn generate(f: SchemaFn, g: &mut SchemaGenerator) -> Value {
    let schema = f(g);
    finish(g, schema)
}

fn operation(
    route: &ApiRoute,
    g: &mut SchemaGenerator,
    error: &Value,
    query_types: &mut Vec<String>,
) -> Value {
    let mut responses = Map::new();
    let (status, content) = match route.answer {
        Answer::Json(status, f) => (
            status,
            json!({ "application/json": { "schema": generate(f, g) } }),
        ),
        Answer::EventStream => (
            200,
            json!({ "text/event-stream": { "schema": { "type": "string" } } }),
        ),
        Answer::Html => (
            200,
            json!({ "text/html": { "schema": { "type": "string" } } }),
        ),
        Answer::Text => (
            200,
            json!({ "text/plain": { "schema": { "type": "string" } } }),
        ),
        Answer::Undeclared => (200, json!({})),
    };
    responses.insert(
        status.to_string(),
        json!({ "description": "Success", "content": content }),
    );
    let mut op = json!({
        "operationId": route.operation_id(),
        "summary": route.summary,
    });
    match route.auth {
        Auth::Public => {}
        Auth::Agent => {
            op["security"] = json!([{ "agentToken": [] }]);
            op["x-canopy-role"] = json!("agent");
        }
        Auth::Deploy => {
            op["security"] = json!([{ "userJwt": [] }]);
            op["x-canopy-role"] = json!("admin");
            op["x-canopy-operators-if"] = json!("deploy.operators_may_deploy");
        }
        auth => {
            op["security"] = json!([{ "userJwt": [] }]);
            op["x-canopy-role"] = json!(format!("{auth:?}").to_lowercase());
        }
    }
    if route.auth != Auth::Public {
        responses.insert(
            "401".into(),
            json!({ "description": "Not authenticated", "content": error }),
        );
    }
    if route.auth.min_role().is_some() {
        responses.insert(
            "403".into(),
            json!({ "description": "The user's role is too low", "content": error }),
        );
    }
    responses.insert(
        "4XX".into(),
        json!({ "description": "Refused: the message names what was wrong", "content": error }),
    );
    responses.insert(
        "5XX".into(),
        json!({ "description": "The server failed (details in its log)", "content": error }),
    );
    op["responses"] = Value::Object(responses);
    let mut params = path_parameters(route.path);
    if let Some(f) = route.query {
        params.extend(query_parameters(f, g, query_types));
    }
    if route.idempotent {
        params.push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "Repeating a request with the same key and body returns the first answer; \
                the same key with another body is refused (409).",
            "schema": { "type": "string" },
        }));
    }
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(f) = route.body {
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/json": { "schema": generate(f, g) } }
        });
    }
    op
}

/// `{id}` is a UUID; other path parameters are strings (`{name}`, `{node}`, `{address}`).
fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            let schema = if name == "id" {
                json!({ "type": "string", "format": "uuid" })
            } else {
                json!({ "type": "string" })
            };
            json!({ "name": name, "in": "path", "required": true, "schema": schema })
        })
        .collect()
}

/// One query parameter per field of the query type.
fn query_parameters(
    f: SchemaFn,
    g: &mut SchemaGenerator,
    query_types: &mut Vec<String>,
) -> Vec<Value> {
    let schema = generate(f, g);
    let object = match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            query_types.push(name.to_string());
            let definition = g.definitions()[name].clone();
            finish(g, definition)
        }
        None => schema,
    };
    let required: Vec<&str> = object["required"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    object["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(name, schema)| {
                    let mut p = json!({
                        "name": name,
                        "in": "query",
                        "required": required.contains(&name.as_str()),
                        "schema": schema,
                    });
                    if let Some(d) = schema.get("description") {
                        p["description"] = d.clone();
                    }
                    p
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn document() -> Json<Value> {
    Json(build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_route_declares_its_answer_and_has_a_unique_operation_id() {
        let mut ids = BTreeSet::new();
        for route in ROUTES {
            assert!(
                !matches!(route.answer, Answer::Undeclared),
                "{} {} declares no answer (.ok::<T>() …)",
                route.verb.as_str(),
                route.full_path()
            );
            assert!(
                ids.insert(route.operation_id()),
                "operationId {} twice",
                route.operation_id()
            );
        }
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = build();
        let text = doc.to_string();
        for piece in text.split("\"$ref\":\"").skip(1) {
            let target = &piece[..piece.find('"').unwrap()];
            let name = target
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {target}"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{target} does not resolve"
            );
        }
    }

    #[test]
    fn query_types_become_query_parameters() {
        let doc = build();
        let params = doc["paths"]["/api/v1/updates"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let names: Vec<&str> = params.iter().filter_map(|p| p["name"].as_str()).collect();
        assert!(
            names.contains(&"severity") && names.contains(&"selector"),
            "{names:?}"
        );
        assert!(
            !names.contains(&"hosts"),
            "a field the server sets is not a parameter"
        );
    }
}
