//! Both backends write the same history: each store case runs on a fresh SQLite and a fresh
//! PostgreSQL database, and the two event logs must match in event types, subjects, actors
//! and payload shape (keys and value types). Ids, timestamps and values differ between runs
//! and are not compared; everything a reader of the log relies on is.

use super::fixture::{fresh, Backend, Fresh};
use canopy_api_types::hosts::Event;
use canopy_store::Store;
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// Cases whose outcome a race decides (which of two concurrent demotions wins): their logs
/// are compared without subjects, which name the winner.
const RACES: &[&str] = &["concurrent_demotions_keep_one_admin"];

/// One event as the comparison sees it.
pub fn signature(e: &Event, with_subject: bool) -> String {
    format!(
        "{} | {} | {} | {}",
        e.event_type,
        if with_subject {
            without_ids(&e.subject)
        } else {
            "(raced)".into()
        },
        without_ids(&e.actor),
        shape(&e.payload)
    )
}

/// `s` with every UUID replaced by `<id>`.
fn without_ids(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if i + 36 <= b.len() && uuid::Uuid::try_parse(&s[i..i + 36]).is_ok() {
            out.push_str("<id>");
            i += 36;
        } else {
            let c = s[i..].chars().next().expect("in bounds");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The shape of a JSON value: object keys with the shapes of their values, the distinct
/// shapes of an array's items, the type of a scalar.
fn shape(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(items) => {
            let mut shapes: Vec<String> = items.iter().map(shape).collect();
            shapes.sort();
            shapes.dedup();
            format!("[{}]", shapes.join("|"))
        }
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k}:{}", shape(v)))
                .collect();
            format!("{{{}}}", fields.join(","))
        }
    }
}

async fn log_of(store: &Arc<dyn Store>, with_subject: bool) -> Vec<String> {
    let mut events = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .events(&canopy_api_types::hosts::EventFilter {
                after,
                limit: Some(1000),
                ..Default::default()
            })
            .await
            .expect("read the event log");
        let Some(last) = page.last() else { break };
        after = Some(last.seq);
        events.extend(page.iter().map(|e| signature(e, with_subject)));
    }
    events
}

/// Run `case` on both backends and compare their logs (as multisets: statements inside one
/// transaction may write their events in another order, and concurrent cases interleave).
pub async fn same_history<F, Fut>(name: &str, case: F)
where
    F: Fn(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut logs = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(db): Option<Fresh> = fresh(backend).await else {
            return; // PostgreSQL skipped locally (CANOPY_SKIP_POSTGRES=1): nothing to compare
        };
        case(db.store.clone()).await;
        let log = log_of(&db.store, !RACES.contains(&name)).await;
        db.cleanup().await;
        logs.push(log);
    }
    let count = |log: &[String]| {
        let mut m: BTreeMap<String, i64> = BTreeMap::new();
        for s in log {
            *m.entry(s.clone()).or_default() += 1;
        }
        m
    };
    let (sqlite, postgres) = (count(&logs[0]), count(&logs[1]));
    if sqlite != postgres {
        let mut diff = String::new();
        for (sig, n) in &sqlite {
            let m = postgres.get(sig).copied().unwrap_or(0);
            if *n != m {
                diff.push_str(&format!("  sqlite {n} × postgres {m} × {sig}\n"));
            }
        }
        for (sig, m) in &postgres {
            if !sqlite.contains_key(sig) {
                diff.push_str(&format!("  sqlite 0 × postgres {m} × {sig}\n"));
            }
        }
        panic!("{name}: the backends wrote different histories:\n{diff}");
    }
}

#[test]
fn shapes_and_ids() {
    assert_eq!(
        without_ids("host/6f1c2a8e-4c1e-4f43-9d7a-0d7f5d3b2a10/command/x"),
        "host/<id>/command/x"
    );
    assert_eq!(
        shape(&serde_json::json!({"a": [1, "x", 2], "b": {"c": null}})),
        "{a:[number|string],b:{c:null}}"
    );
}
