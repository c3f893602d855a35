//! How answers look on the wire, exactly like pve-http-server writes them: `{"data": …}`
//! on success; on error the message in the HTTP reason phrase (first line only), a body of
//! `{"data":null}` (plus `"message"` when the cluster's quirk says so, plus `"errors"` for
//! parameter errors), and `Connection: close` after any status >= 400.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, EXPIRES, PRAGMA, SERVER,
};
use hyper::{Response, StatusCode};
use serde::Serialize;
use serde_json::{Map, Value};

pub(crate) type Body = Full<Bytes>;

/// Keys whose numbers become strings under the `numbers_as_strings` quirk.
pub(crate) const STRINGY_KEYS: &[&str] = &[
    "vmid",
    "maxmem",
    "mem",
    "maxdisk",
    "disk",
    "maxcpu",
    "cpu",
    "cpus",
    "uptime",
    "netin",
    "netout",
    "diskread",
    "diskwrite",
    "maxswap",
    "swap",
    "nodeid",
    "snaptime",
];

/// A successful result: the serialized `data` member, and `total` where PVE sets it.
pub(crate) struct Reply {
    data: Vec<u8>,
    total: Option<u64>,
}

impl Reply {
    /// Serializes `data`; with `stringify`, numbers under `STRINGY_KEYS` become strings.
    pub fn value(mut data: Value, stringify: bool) -> Self {
        if stringify {
            stringify_numbers(&mut data);
        }
        Self::raw(serde_json::to_vec(&data).unwrap_or_else(|_| b"null".to_vec()))
    }

    /// For typed, already-quirked data (the large resource lists).
    pub fn serialize(data: &impl Serialize) -> Self {
        Self::raw(serde_json::to_vec(data).unwrap_or_else(|_| b"null".to_vec()))
    }

    fn raw(data: Vec<u8>) -> Self {
        Self { data, total: None }
    }

    pub fn with_total(mut self, total: u64) -> Self {
        self.total = Some(total);
        self
    }

    pub fn into_response(self) -> Response<Body> {
        let mut out = Vec::with_capacity(self.data.len() + 32);
        out.extend_from_slice(b"{\"data\":");
        out.extend_from_slice(&self.data);
        if let Some(total) = self.total {
            out.extend_from_slice(format!(",\"total\":{total}").as_bytes());
        }
        out.push(b'}');
        let mut resp = Response::new(Full::new(Bytes::from(out)));
        common_headers(&mut resp, true);
        resp
    }
}

/// An error as PVE reports it. `message` keeps PVE's trailing newline where PVE has one.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
    pub errors: Option<Value>,
    pub body: ErrorBody,
}

/// What follows the status line of an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorBody {
    /// Formatter output: `{"data":null}` (+ `errors`, + `message` per quirk).
    Json,
    /// Nothing: auth failures (`HTTP::Response->new(401, $err)`) and proxy errors.
    Empty,
    /// pve-http-server's `error()`: the message itself as the body.
    Text,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: None,
            body: ErrorBody::Json,
        }
    }

    /// 403 from `raise_perm_exc("$path, $priv")`.
    pub fn perm(what: &str) -> Self {
        Self::new(403, format!("Permission check failed ({what})\n"))
    }

    /// 400 from `raise_param_exc`, with per-parameter messages.
    pub fn param(errors: &[(&str, String)]) -> Self {
        let map: Map<String, Value> = errors
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        Self {
            errors: Some(Value::Object(map)),
            ..Self::new(400, "Parameter verification failed.\n")
        }
    }

    /// 500 from a plain `die "…\n"` in a handler.
    pub fn die(message: impl std::fmt::Display) -> Self {
        Self::new(500, format!("{message}\n"))
    }

    pub fn not_implemented(method: &str, rel_path: &str) -> Self {
        Self::new(501, format!("Method '{method} {rel_path}' not implemented"))
    }

    /// A response written without the formatter: reason phrase only, empty body.
    pub fn bare(status: u16, reason: impl Into<String>) -> Self {
        Self {
            body: ErrorBody::Empty,
            ..Self::new(status, reason)
        }
    }

    /// pve-http-server's `$self->error(...)`: reason phrase and the same text as body.
    pub fn plain(status: u16, message: impl Into<String>) -> Self {
        Self {
            body: ErrorBody::Text,
            ..Self::new(status, message)
        }
    }

    pub fn into_response(self, message_in_body: bool) -> Response<Body> {
        let reason = self.message.lines().next().unwrap_or("").to_string();
        let body = if self.body == ErrorBody::Text {
            Bytes::from(self.message.clone().into_bytes())
        } else if self.body == ErrorBody::Json {
            let mut obj = Map::new();
            obj.insert("data".into(), Value::Null);
            if let Some(errors) = self.errors {
                obj.insert("errors".into(), errors);
            }
            if message_in_body {
                obj.insert("message".into(), Value::String(self.message.clone()));
            }
            Bytes::from(serde_json::to_vec(&Value::Object(obj)).unwrap_or_default())
        } else {
            Bytes::new()
        };
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(reason.into_bytes()) {
            resp.extensions_mut().insert(phrase);
        }
        common_headers(&mut resp, self.body == ErrorBody::Json);
        resp.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        resp
    }
}

fn common_headers(resp: &mut Response<Body>, json: bool) {
    let h = resp.headers_mut();
    if json {
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        );
    }
    h.insert(SERVER, HeaderValue::from_static("pve-api-daemon/3.0"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
    h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        EXPIRES,
        HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"),
    );
}

/// The `numbers_as_strings` quirk for `Value` answers.
pub(crate) fn stringify_numbers(v: &mut Value) {
    match v {
        Value::Array(items) => items.iter_mut().for_each(stringify_numbers),
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if let Value::Number(n) = val {
                    if STRINGY_KEYS.contains(&k.as_str()) {
                        *val = Value::String(n.to_string());
                    }
                } else {
                    stringify_numbers(val);
                }
            }
        }
        _ => {}
    }
}

/// A number that serializes as a JSON number, or as a string under the quirk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Num {
    value: NumValue,
    as_string: bool,
}

#[derive(Debug, Clone, Copy)]
enum NumValue {
    Int(u64),
    Float(f64),
}

impl Num {
    pub fn int(v: u64, as_string: bool) -> Self {
        Self {
            value: NumValue::Int(v),
            as_string,
        }
    }
    pub fn float(v: f64, as_string: bool) -> Self {
        Self {
            value: NumValue::Float(v),
            as_string,
        }
    }
}

impl Serialize for Num {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.value, self.as_string) {
            (NumValue::Int(v), false) => s.serialize_u64(v),
            (NumValue::Float(v), false) => s.serialize_f64(v),
            (NumValue::Int(v), true) => s.collect_str(&v),
            (NumValue::Float(v), true) => s.collect_str(&v),
        }
    }
}
