//! `POST /nodes/{node}/vzdump` and the task endpoints (`tasks/{upid}/status|log`), with
//! PVE's checks: vzdump only checks the storage up front and `VM.Backup` inside the worker
//! (so a missing privilege is a failed task, not a 403), and returns `"OK"` without a task
//! when none of the guests lives on the node.

use serde_json::{json, Value};

use super::storage::archive_name;
use super::Ctx;
use crate::reply::{ApiError, Reply};
use crate::state::{unix_now, State};
use crate::tasks::{Action, Archive};

pub(super) fn vzdump(state: &mut State, ctx: &Ctx<'_>, node: &str) -> Result<Reply, ApiError> {
    let p = ctx.params;
    if p.get("node").is_some_and(|n| n != node) {
        return Err(ApiError::param(&[(
            "node",
            "option is only allowed on the command line interface.".into(),
        )]));
    }
    for key in ["tmpdir", "dumpdir", "script", "job-id"] {
        if p.get(key).is_some() {
            return Err(ApiError::param(&[(
                key,
                "Only root may set this option.".into(),
            )]));
        }
    }
    if ["bwlimit", "ionice", "performance"]
        .iter()
        .any(|k| p.get(k).is_some())
    {
        ctx.token
            .check("/", &["Sys.Modify"])
            .map_err(|w| ApiError::perm(&w))?;
    }
    let all = p.flag("all")?;
    let vmid_list = p.get("vmid").unwrap_or_default();
    if all && !vmid_list.is_empty() {
        return Err(ApiError::param(&[(
            "all",
            "option conflicts with option 'vmid'".into(),
        )]));
    }
    if !all && vmid_list.is_empty() {
        return Err(ApiError::param(&[(
            "vmid",
            "property is missing and it is not optional".into(),
        )]));
    }
    let mode = p.get("mode").unwrap_or("snapshot").to_string();
    if !["snapshot", "suspend", "stop"].contains(&mode.as_str()) {
        let msg = format!(
            "value '{mode}' does not have a value in the enumeration 'snapshot, suspend, stop'"
        );
        return Err(ApiError::param(&[("mode", msg)]));
    }
    let mut requested: Vec<u32> = Vec::new();
    if all {
        requested.extend(state.guests.keys().copied());
    } else {
        for part in vmid_list.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
            match part.parse::<u32>() {
                Ok(v) if v >= 100 => requested.push(v),
                _ => {
                    return Err(ApiError::param(&[(
                        "vmid",
                        format!("value '{part}' does not look like a valid VM ID"),
                    )]))
                }
            }
        }
    }
    // Guests on this node, plus unknown IDs ("include IDs for deleted guests, and visibly fail later").
    let local: Vec<u32> = requested
        .into_iter()
        .filter(|v| {
            state
                .guests
                .get(v)
                .is_none_or(|g| g.node == node && !g.template)
        })
        .collect();
    if local.is_empty() && !all {
        return Ok(Reply::value(json!("OK"), false));
    }
    let storage = p.get("storage").unwrap_or("local").to_string();
    ctx.token
        .check(&format!("/storage/{storage}"), &["Datastore.AllocateSpace"])
        .map_err(|w| ApiError::perm(&w))?;

    let mut precheck = None;
    if !state.storages.iter().any(|s| s.name == storage) {
        precheck = Some(format!("storage '{storage}' does not exist"));
    }
    let mut job_errors = false;
    for vmid in &local {
        match state.guests.get(vmid) {
            Some(g) => {
                if precheck.is_none() {
                    if let Err(what) = ctx.token.check(&format!("/vms/{vmid}"), &["VM.Backup"]) {
                        precheck = Some(format!("Permission check failed ({what})"));
                    }
                }
                job_errors |= g.lock.is_some();
            }
            None => job_errors = true,
        }
    }
    if precheck.is_none() && job_errors {
        precheck = Some("job errors".into());
    }
    let archives = archives(state, node, &local, &storage, p.get("notes-template"));
    let action = Action::Vzdump {
        vmids: local,
        storage,
        mode,
        archives,
    };
    let upid = state.spawn_task(node, None, &ctx.token.id, action, precheck);
    Ok(Reply::value(json!(upid), false))
}

/// The archive each guest's backup becomes: a name vzdump would give it (a second later when
/// one of that second exists) and the notes template expanded as vzdump expands it.
fn archives(
    state: &State,
    node: &str,
    vmids: &[u32],
    storage: &str,
    template: Option<&str>,
) -> Vec<Archive> {
    let now = unix_now();
    vmids
        .iter()
        .filter_map(|vmid| state.guests.get(vmid))
        .map(|g| {
            let volid = (0..)
                .map(|i| format!("{storage}:backup/{}", archive_name(g.kind, g.vmid, now + i)))
                .find(|v| !state.backups.iter().any(|b| &b.volid == v))
                .unwrap_or_default();
            let notes = template.unwrap_or_default();
            let notes = notes
                .replace("{{guestname}}", &g.name)
                .replace("{{vmid}}", &g.vmid.to_string())
                .replace("{{node}}", node)
                .replace("{{cluster}}", &state.name);
            Archive {
                vmid: g.vmid,
                volid,
                notes,
            }
        })
        .collect()
}

fn upid_node(upid: &str) -> Option<&str> {
    let parts: Vec<&str> = upid.split(':').collect();
    let hex8 = |s: &str| s.len() >= 8 && s.chars().all(|c| c.is_ascii_hexdigit());
    let ok = parts.len() == 9
        && parts[0] == "UPID"
        && crate::config::valid_node_name(parts[1])
        && hex8(parts[2])
        && hex8(parts[3])
        && hex8(parts[4])
        && !parts[5].is_empty()
        && !parts[7].is_empty()
        && parts[8].is_empty();
    ok.then_some(parts[1])
}

/// Task owner (same token) or `Sys.Audit` on the node.
fn check_task_access(ctx: &Ctx<'_>, node: &str, user: Option<&str>) -> Result<(), ApiError> {
    if user == Some(ctx.token.id.as_str()) {
        return Ok(());
    }
    ctx.token
        .check(&format!("/nodes/{node}"), &["Sys.Audit"])
        .map_err(|w| ApiError::perm(&w))
}

pub(super) fn status(
    state: &mut State,
    ctx: &Ctx<'_>,
    node: &str,
    upid: &str,
) -> Result<Reply, ApiError> {
    if upid_node(upid).is_none() {
        return Err(ApiError::param(&[(
            "upid",
            "unable to parse worker upid".into(),
        )]));
    }
    let task = state.tasks.get(upid).filter(|t| t.node == node);
    let Some(task) = task else {
        return Err(ApiError::param(&[("upid", "no such task".into())]));
    };
    check_task_access(ctx, node, Some(&task.user))?;
    Ok(Reply::value(task.status_json(), false))
}

pub(super) fn log(
    state: &mut State,
    ctx: &Ctx<'_>,
    node: &str,
    upid: &str,
) -> Result<Reply, ApiError> {
    let Some(upid_user) = upid_node(upid).and(upid.split(':').nth(7)) else {
        return Err(ApiError::param(&[(
            "upid",
            "unable to parse worker upid".into(),
        )]));
    };
    check_task_access(ctx, node, Some(upid_user))?;
    let parse = |key: &str, default: usize| -> Result<usize, ApiError> {
        match ctx.params.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                ApiError::param(&[(key, format!("type check ('integer') failed - got '{v}'"))])
            }),
        }
    };
    let (start, limit) = (parse("start", 0)?, parse("limit", 50)?);
    let lines = match state.tasks.get(upid).filter(|t| t.node == node) {
        None => vec!["unable to open file - No such file or directory".to_string()],
        Some(task) => task.log_lines(),
    };
    let total = lines.len().max(1);
    let mut out: Vec<Value> = lines
        .iter()
        .enumerate()
        .skip(start)
        .take(if limit == 0 { usize::MAX } else { limit })
        .map(|(i, t)| json!({"n": i + 1, "t": t}))
        .collect();
    if lines.is_empty() {
        out.push(json!({"n": 1, "t": "no content"}));
    }
    Ok(Reply::value(Value::Array(out), false).with_total(total as u64))
}
