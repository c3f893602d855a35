//! The web dashboard, served by `canopy` itself (docs/design.md §5, §7.2): the files
//! `cargo xtask ui` built, embedded at compile time (`build.rs`), or read from `ui_dir` for
//! development. Hashed assets are cached for a year; `index.html` is never cached and is the
//! answer to every other GET outside `/api/` (client-side routes), with a `<base href>` for
//! the sub-path a trusted reverse proxy names. A brotli or gzip twin is sent to browsers
//! that accept it. [`headers`] adds the security headers to every response.

pub mod headers;

use crate::error::Error;
use crate::state::AppState;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, Extensions, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::borrow::Cow;

/// One embedded file of the bundle.
pub struct Asset {
    pub name: &'static str,
    pub body: &'static [u8],
    pub gzip: Option<&'static [u8]>,
    pub brotli: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/ui_assets.rs"));

/// Whether this binary carries the dashboard (`cargo xtask ui` ran before it was built).
pub fn embedded() -> bool {
    ASSETS.iter().any(|a| a.name == "index.html")
}

/// A file of the bundle, embedded or read from `ui_dir`.
struct File {
    body: Cow<'static, [u8]>,
    gzip: Option<Cow<'static, [u8]>>,
    brotli: Option<Cow<'static, [u8]>>,
}

fn find(state: &AppState, name: &str) -> Option<File> {
    if name.is_empty()
        || name.contains('/')
        || name.starts_with('.')
        || name.ends_with(".gz")
        || name.ends_with(".br")
    {
        return None;
    }
    match &state.settings.ui_dir {
        Some(dir) => {
            let body = std::fs::read(dir.join(name)).ok()?;
            let twin = |ext: &str| std::fs::read(dir.join(format!("{name}.{ext}"))).ok();
            Some(File {
                body: Cow::Owned(body),
                gzip: twin("gz").map(Cow::Owned),
                brotli: twin("br").map(Cow::Owned),
            })
        }
        None => ASSETS.iter().find(|a| a.name == name).map(|a| File {
            body: Cow::Borrowed(a.body),
            gzip: a.gzip.map(Cow::Borrowed),
            brotli: a.brotli.map(Cow::Borrowed),
        }),
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

/// Does `Accept-Encoding` allow `coding` (by name or `*`, without `q=0`)?
pub fn accepts(headers: &HeaderMap, coding_wanted: &str) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case(coding_wanted) || coding == "*") && !refused
        })
}

/// `GET /`: the dashboard.
pub async fn index(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    index_page(&state, req.extensions(), req.headers())
}

/// Everything no route answers: a JSON 404 under `/api/` and for other methods; a bundle
/// file by its name; a 404 for a missing file name (`x.js`); `index.html` otherwise.
pub async fn fallback(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let (method, uri, headers): (&Method, &Uri, &HeaderMap) =
        (req.method(), req.uri(), req.headers());
    let path = uri.path();
    let api = path == "/api" || path.starts_with("/api/");
    if api || (method != Method::GET && method != Method::HEAD) {
        return Error::NotFound("no such route".into()).into_response();
    }
    let name = path.trim_start_matches('/');
    if let Some(file) = find(&state, name).filter(|_| name != "index.html") {
        return asset(name, file, headers);
    }
    let last = name.rsplit('/').next().unwrap_or("");
    if last.contains('.') {
        return (StatusCode::NOT_FOUND, "no such file\n").into_response();
    }
    index_page(&state, req.extensions(), headers)
}

/// A hashed bundle file: immutable; brotli, else gzip, when the browser accepts it.
fn asset(name: &str, file: File, headers: &HeaderMap) -> Response {
    let packed = [("br", file.brotli), ("gzip", file.gzip)]
        .into_iter()
        .find_map(|(coding, twin)| {
            twin.filter(|_| accepts(headers, coding))
                .map(|t| (coding, t))
        });
    let mut resp = match packed {
        Some((coding, bytes)) => {
            let mut r = bytes.into_owned().into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(coding));
            r
        }
        None => file.body.into_owned().into_response(),
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    resp
}

/// `index.html` with the `<base href>` of the public sub-path, never cached (it names the
/// hashed files of the current build).
fn index_page(state: &AppState, ext: &Extensions, headers: &HeaderMap) -> Response {
    let Some(file) = find(state, "index.html") else {
        return not_built();
    };
    let peer = ext
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let prefix = headers::public_prefix(state, peer, headers);
    let html = String::from_utf8_lossy(&file.body).replacen(
        "<base href=\"/\">",
        &format!("<base href=\"{prefix}/\">"),
        1,
    );
    let mut resp = html.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// What a binary built without the dashboard shows instead (503: something is missing).
fn not_built() -> Response {
    let page = concat!(
        "<!doctype html><meta charset=\"utf-8\"><title>Canopy</title><h1>Canopy</h1>",
        "<p>This <code>canopy</code> was built without its web dashboard. Build it with ",
        "<code>cargo xtask ui</code>, then build <code>canopy</code> again.</p>",
        "<p>The REST API is under <code>/api/v1</code> (described at ",
        "<code>/api/v1/openapi.json</code>) and the <code>canopy</code> CLI works as usual.</p>"
    );
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, page).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn a_coding_is_sent_only_when_accepted() {
        assert!(accepts(&with("gzip, deflate, br"), "gzip"));
        assert!(accepts(&with("gzip, deflate, br"), "br"));
        assert!(accepts(&with("br;q=1.0, GZIP;q=0.5"), "gzip"));
        assert!(accepts(&with("*"), "gzip"));
        assert!(!accepts(&with("gzip;q=0"), "gzip"));
        assert!(!accepts(&with("br, deflate"), "gzip"));
        assert!(!accepts(&with("gzip"), "br"));
        assert!(!accepts(&HeaderMap::new(), "gzip"));
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("canopy-1.wasm"), "application/wasm");
        assert!(content_type("boot-1.js").starts_with("text/javascript"));
        assert_eq!(content_type("x"), "application/octet-stream");
    }
}
