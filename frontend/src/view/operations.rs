//! The operations list as rows: kind, state, who, when, the selector and the count of
//! guests per state; the list's filters (state, kind) and its order, newest first.

use canopy_api_types::deploy::{ItemState, Operation, OperationState};

/// The states an operation can be in, in the order a filter offers them.
pub const STATES: [OperationState; 9] = [
    OperationState::Planning,
    OperationState::AwaitingApproval,
    OperationState::Running,
    OperationState::Paused,
    OperationState::Cancelling,
    OperationState::Succeeded,
    OperationState::Partial,
    OperationState::Failed,
    OperationState::Cancelled,
];

/// The kinds of operation (their `action`).
pub const KINDS: [&str; 3] = ["update", "deploy", "uninstall"];

/// "awaiting approval".
pub fn state_words(s: OperationState) -> String {
    s.as_str().replace('_', " ")
}

/// One operation as a row of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpRow {
    pub id: String,
    pub kind: String,
    pub state: String,
    pub who: String,
    pub when: String,
    pub selector: String,
    /// "2 succeeded, 1 failed, 1 skipped".
    pub counts: String,
}

/// Guests per state: "2 succeeded, 1 failed, 3 queued (1 skipped)"; "no guests" when none.
pub fn counts(op: &Operation) -> String {
    let order = [
        ItemState::Succeeded,
        ItemState::Failed,
        ItemState::Running,
        ItemState::Queued,
        ItemState::Cancelled,
    ];
    let mut parts: Vec<String> = order
        .iter()
        .filter_map(|&s| {
            let n = op.items.iter().filter(|i| i.state == s).count();
            (n > 0).then(|| format!("{n} {}", s.as_str()))
        })
        .collect();
    if !op.skipped.is_empty() {
        parts.push(format!("{} skipped", op.skipped.len()));
    }
    if parts.is_empty() {
        "no guests".into()
    } else {
        parts.join(", ")
    }
}

pub fn op_row(op: &Operation) -> OpRow {
    OpRow {
        id: op.id.to_string(),
        kind: op.action.clone(),
        state: state_words(op.state),
        who: op.created_by.clone(),
        when: op.created_at.format("%Y-%m-%d %H:%M:%S").to_string(),
        selector: op.selector.clone(),
        counts: counts(op),
    }
}

/// What the list shows: everything, or one state, or one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpFilter {
    pub state: Option<OperationState>,
    pub kind: Option<String>,
}

/// The operations the filter lets through, newest first.
pub fn filtered<'a>(ops: &'a [Operation], f: &OpFilter) -> Vec<&'a Operation> {
    let mut out: Vec<&Operation> = ops
        .iter()
        .filter(|o| f.state.is_none_or(|s| o.state == s))
        .filter(|o| f.kind.as_deref().is_none_or(|k| o.action == k))
        .collect();
    out.sort_by_key(|o| std::cmp::Reverse(o.created_at));
    out
}

/// "Showing 3 of the newest 50 operations".
pub fn shown_line(shown: usize, loaded: usize, limit: u32) -> String {
    let more = if loaded as u32 >= limit {
        format!("the newest {loaded}")
    } else {
        format!("all {loaded}")
    };
    let noun = if loaded == 1 {
        "operation"
    } else {
        "operations"
    };
    format!("Showing {shown} of {more} {noun}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(id: u8, action: &str, state: &str, at: &str, items: &[&str]) -> Operation {
        serde_json::from_value(json!({
            "id": format!("00000000-0000-0000-0000-0000000000{id:02x}"), "action": action,
            "selector": "cluster/lab/**", "state": state, "created_by": "admin",
            "created_at": at,
            "items": items.iter().enumerate().map(|(n, s)| json!({
                "target": format!("cluster/lab/node/pve1/lxc/{}", 101 + n), "node": "pve1",
                "vmid": 101 + n, "route": "pct", "state": s
            })).collect::<Vec<_>>(),
            "skipped": [{"id": "cluster/lab/node/pve1/lxc/199", "reason": "stopped"}]
        }))
        .unwrap()
    }

    #[test]
    fn rows_say_kind_state_who_and_counts() {
        let o = op(
            1,
            "update",
            "awaiting_approval",
            "2026-01-02T03:04:05Z",
            &["succeeded", "failed", "succeeded", "queued"],
        );
        let r = op_row(&o);
        assert_eq!(r.state, "awaiting approval");
        assert_eq!(r.when, "2026-01-02 03:04:05");
        assert_eq!(r.counts, "2 succeeded, 1 failed, 1 queued, 1 skipped");
        assert_eq!(r.id, "00000000-0000-0000-0000-000000000001");
        let mut empty = op(2, "deploy", "planning", "2026-01-02T03:04:05Z", &[]);
        empty.skipped.clear();
        assert_eq!(counts(&empty), "no guests");
    }

    #[test]
    fn filters_and_newest_first() {
        let ops = vec![
            op(1, "update", "succeeded", "2026-01-01T00:00:00Z", &[]),
            op(2, "deploy", "failed", "2026-01-03T00:00:00Z", &[]),
            op(3, "update", "failed", "2026-01-02T00:00:00Z", &[]),
        ];
        let ids = |f: &OpFilter| -> Vec<String> {
            filtered(&ops, f)
                .iter()
                .map(|o| o.id.to_string()[34..].to_string())
                .collect()
        };
        assert_eq!(ids(&OpFilter::default()), ["02", "03", "01"]);
        let failed = OpFilter {
            state: Some(OperationState::Failed),
            kind: None,
        };
        assert_eq!(ids(&failed), ["02", "03"]);
        let failed_updates = OpFilter {
            kind: Some("update".into()),
            ..failed
        };
        assert_eq!(ids(&failed_updates), ["03"]);
        assert_eq!(shown_line(2, 3, 50), "Showing 2 of all 3 operations");
        assert_eq!(
            shown_line(50, 50, 50),
            "Showing 50 of the newest 50 operations"
        );
    }
}
