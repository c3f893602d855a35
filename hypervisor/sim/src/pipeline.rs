//! One request, start to finish, in the order pveproxy handles it: count it, hang or delay
//! as injected, parse `/api2/{format}/…`, authenticate (401 before anything else), apply an
//! injected failure, find the handler (501), check the privilege (403), "proxy" to the
//! path's node (595 when it is offline or hanging), then run the handler.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, Response};

use crate::reply::{ApiError, Body};
use crate::routes::{self, Ctx, Params};
use crate::server::Shared;
use crate::state::{normalize_api_path, unix_now};

/// How long pveproxy waits for a node it proxies to (AnyEvent::HTTP `timeout => 30`).
const PROXY_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BODY: usize = 512 * 1024;

pub(crate) async fn handle(
    shared: Arc<Shared>,
    listener: Arc<str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    shared.record(&method, &path, &listener, query.clone());

    let (hang, latency, in_body) = {
        let mut st = shared.lock();
        st.settle();
        let node = st.node(&listener);
        (
            node.is_some_and(|n| n.hang),
            node.map(|n| n.latency).unwrap_or_default(),
            st.quirks.error_message_in_body,
        )
    };
    if hang {
        std::future::pending::<()>().await;
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let resp = match respond(&shared, &listener, &method, &path, query.as_deref(), req).await {
        Ok(resp) => resp,
        Err(err) => err.into_response(in_body),
    };
    Ok(resp)
}

async fn respond(
    shared: &Shared,
    listener: &str,
    method: &str,
    path: &str,
    query: Option<&str>,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let Some(rest) = path.strip_prefix("/api2/") else {
        return Err(ApiError::plain(404, "File not found"));
    };
    let (format, rel) = match rest.split_once('/') {
        Some((f, r)) => (f, normalize_api_path(&format!("/{r}"))),
        None => (rest, "/".to_string()),
    };
    let format_ok = format.starts_with(|c: char| c.is_ascii_lowercase())
        && format
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !format_ok {
        return Err(ApiError::plain(501, "no such uri"));
    }

    let auth_header = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (token, delay) = {
        let st = shared.lock();
        let token =
            crate::auth::authenticate(auth_header.as_deref(), &st.tokens, unix_now()).cloned();
        (
            token,
            Duration::from_millis(st.quirks.unauthorized_delay_ms),
        )
    };
    let token = match token {
        Ok(t) => t,
        Err(e) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            return Err(ApiError::bare(401, e.reason()));
        }
    };
    if format != "json" {
        return Err(ApiError::plain(
            501,
            format!("no formatter for uri {rel}, {format}"),
        ));
    }

    let json_body = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("application/json"));
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|_| ApiError::plain(413, "Request Entity Too Large"))?;
    if !body.is_empty() && !matches!(method, "POST" | "PUT") {
        return Err(ApiError::plain(
            501,
            format!("Unexpected content for method '{method}'"),
        ));
    }
    let params = parse_params(query, &body, json_body)?;

    let failure = shared.lock().take_failure(method, &rel);
    if let Some((status, reason)) = failure {
        return Err(ApiError::new(status, reason));
    }
    let route =
        routes::route(method, &rel).ok_or_else(|| ApiError::not_implemented(method, &rel))?;
    route.perm.verify(&token)?;

    if let Some(target) = route.node.as_deref().filter(|n| *n != listener) {
        let (exists, online, hang, latency) = {
            let st = shared.lock();
            match st.node(target) {
                Some(n) => (true, n.online, n.hang, n.latency),
                None => (false, false, false, Duration::ZERO),
            }
        };
        if !exists {
            return Err(ApiError::die(format!(
                "hostname lookup '{target}' failed - failed to get address info for: {target}: Name or service not known"
            )));
        }
        if !online {
            return Err(ApiError::bare(595, "No route to host"));
        }
        if hang {
            tokio::time::sleep(PROXY_TIMEOUT).await;
            return Err(ApiError::bare(595, "Connection timed out"));
        }
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    let mut st = shared.lock();
    st.settle();
    let ctx = Ctx {
        token: &token,
        listener,
        node: route.node.as_deref(),
        params: &params,
    };
    routes::execute(&mut st, &route.endpoint, &ctx).map(|reply| reply.into_response())
}

/// Query string plus body; JSON bodies have their scalars turned into strings like PVE does.
fn parse_params(query: Option<&str>, body: &Bytes, json: bool) -> Result<Params, ApiError> {
    let mut map = BTreeMap::new();
    if let Some(q) = query {
        map.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    if body.is_empty() {
        return Ok(Params(map));
    }
    if json {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::plain(400, format!("failed to parse JSON body - {e}")))?;
        let serde_json::Value::Object(obj) = value else {
            return Err(ApiError::plain(400, "JSON body must be an object"));
        };
        for (k, v) in obj {
            let s = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Bool(b) => u8::from(b).to_string(),
                serde_json::Value::Null => continue,
                other => other.to_string(),
            };
            map.insert(k, s);
        }
    } else {
        map.extend(form_urlencoded::parse(body).into_owned());
    }
    Ok(Params(map))
}
