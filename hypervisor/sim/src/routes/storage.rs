//! Backup archives: `GET /nodes/{node}/storage/{storage}/content` (a guest's backups),
//! `DELETE …/content/{volume}` (a task, `imgdel`) and the restore forms of
//! `POST /nodes/{node}/lxc` (`ostemplate` = a backup volume, `restore=1`, `force=1` over an
//! existing stopped container) and `POST /nodes/{node}/qemu` (`archive`, `force=1`). vzdump (`tasks.rs`) names and records the archives.

use serde_json::{json, Value};

use super::Ctx;
use crate::config::GuestKind;
use crate::reply::{ApiError, Reply};
use crate::state::{Backup, State};
use crate::tasks::Action;

/// `vzdump-lxc-101-2026_12_06-10_30_00.tar.zst`, as vzdump names an archive made at `unix`.
pub(crate) fn archive_name(kind: GuestKind, vmid: u32, unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    let (hh, mm, ss) = (secs / 3600, secs % 3600 / 60, secs % 60);
    format!(
        "vzdump-{}-{vmid}-{y:04}_{m:02}_{d:02}-{hh:02}_{mm:02}_{ss:02}.tar.zst",
        kind.as_str()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn check_storage(state: &State, storage: &str) -> Result<(), ApiError> {
    if state.storages.iter().any(|s| s.name == storage) {
        Ok(())
    } else {
        Err(ApiError::die(format!("storage '{storage}' does not exist")))
    }
}

/// `GET …/storage/{storage}/content[?content=backup][&vmid=N]`: only backups live here.
pub(super) fn list(
    state: &State,
    ctx: &Ctx<'_>,
    node: &str,
    storage: &str,
) -> Result<Reply, ApiError> {
    check_storage(state, storage)?;
    let vmid = match ctx.params.get("vmid") {
        None => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            ApiError::param(&[(
                "vmid",
                format!("value '{v}' does not look like a valid VM ID"),
            )])
        })?),
    };
    let wanted = ctx.params.get("content").is_none_or(|c| c == "backup");
    let out: Vec<Value> = state
        .backups
        .iter()
        .filter(|b| wanted && b.storage == storage && b.node == node)
        .filter(|b| vmid.is_none_or(|v| v == b.vmid))
        .map(|b| {
            json!({
                "volid": b.volid, "content": "backup", "format": "tar.zst",
                "size": b.size, "ctime": b.ctime, "vmid": b.vmid,
                "notes": b.notes, "subtype": b.kind.as_str(),
            })
        })
        .collect();
    Ok(Reply::value(
        Value::Array(out),
        state.quirks.numbers_as_strings,
    ))
}

fn find<'a>(state: &'a State, node: &str, volid: &str) -> Result<&'a Backup, ApiError> {
    state
        .backups
        .iter()
        .find(|b| b.volid == volid && b.node == node)
        .ok_or_else(|| ApiError::die(format!("volume '{volid}' does not exist")))
}

/// `DELETE …/content/{volume}` (the volume is the whole volid, or `backup/NAME` on that storage).
pub(super) fn delete(
    state: &mut State,
    ctx: &Ctx<'_>,
    node: &str,
    storage: &str,
    volume: &str,
) -> Result<Reply, ApiError> {
    check_storage(state, storage)?;
    let volid = if volume.contains(':') {
        volume.to_string()
    } else {
        format!("{storage}:{volume}")
    };
    let b = find(state, node, &volid)?;
    let (vmid, kind) = (b.vmid, b.kind);
    ctx.token
        .check(&format!("/vms/{vmid}"), &["VM.Backup"])
        .map_err(|w| ApiError::perm(&w))?;
    let action = Action::DelVolume { volid };
    let upid = state.spawn_task(node, Some((vmid, kind)), &ctx.token.id, action, None);
    Ok(Reply::value(json!(upid), false))
}

/// `POST /nodes/{node}/lxc` with `restore=1`, `POST /nodes/{node}/qemu` with `archive`: only
/// restores are simulated.
pub(super) fn restore(
    state: &mut State,
    ctx: &Ctx<'_>,
    node: &str,
    kind: GuestKind,
) -> Result<Reply, ApiError> {
    let p = ctx.params;
    let (word, source) = match kind {
        GuestKind::Lxc => ("CT", "ostemplate"),
        GuestKind::Qemu => ("VM", "archive"),
    };
    if kind == GuestKind::Lxc && !p.flag("restore")? {
        return Err(ApiError::die(
            "the simulator creates containers only by restoring a backup (restore=1)",
        ));
    }
    let raw = p.required("vmid")?;
    let vmid: u32 = raw.parse().ok().filter(|v| *v >= 100).ok_or_else(|| {
        ApiError::param(&[(
            "vmid",
            format!("value '{raw}' does not look like a valid VM ID"),
        )])
    })?;
    let volid = p.required(source)?.to_string();
    let guest_storage = state.guests.get(&vmid).map(|g| g.storage.clone());
    // A VM's disks go back where the backup says; a container's root disk to `local`.
    let storage = match (p.get("storage"), kind) {
        (Some(s), _) => s.to_string(),
        (None, GuestKind::Qemu) => guest_storage.unwrap_or_else(|| "local-lvm".into()),
        (None, GuestKind::Lxc) => "local".into(),
    };
    let force = p.flag("force")?;
    let start = p.flag("start")?;
    ctx.token
        .check(&format!("/vms/{vmid}"), &["VM.Allocate"])
        .map_err(|w| ApiError::perm(&w))?;
    ctx.token
        .check(&format!("/storage/{storage}"), &["Datastore.AllocateSpace"])
        .map_err(|w| ApiError::perm(&w))?;
    check_storage(state, &storage)?;
    let backup = find(state, node, &volid)?;
    if backup.vmid != vmid {
        ctx.token
            .check(&format!("/vms/{}", backup.vmid), &["VM.Backup"])
            .map_err(|w| ApiError::perm(&w))?;
    }
    let guest = match state.guests.get(&vmid) {
        None => {
            return Err(ApiError::die(
                "the simulator restores only over an existing guest (force=1)",
            ))
        }
        Some(g) if g.node != node => {
            return Err(ApiError::die(format!(
                "{word} {vmid} already exists on node '{}'",
                g.node
            )))
        }
        Some(g) => g,
    };
    if !force {
        return Err(ApiError::die(format!(
            "{word} {vmid} already exists on node '{node}'"
        )));
    }
    ctx.token
        .check(&format!("/vms/{vmid}"), &["VM.Backup"])
        .map_err(|w| ApiError::perm(&w))?;
    if guest.kind != kind {
        return Err(ApiError::die(format!(
            "unable to restore {word} {vmid} - it is a {}",
            guest.kind.as_str()
        )));
    }
    let precheck = guest.running.then(|| match kind {
        GuestKind::Lxc => "can't overwrite running container".to_string(),
        GuestKind::Qemu => format!("unable to restore VM {vmid} - VM is running"),
    });
    let action = Action::Restore {
        volid,
        storage,
        start,
    };
    let upid = state.spawn_task(node, Some((vmid, kind)), &ctx.token.id, action, precheck);
    Ok(Reply::value(json!(upid), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archives_are_named_as_vzdump_names_them() {
        // 2026-12-06 10:30:05 UTC.
        assert_eq!(
            archive_name(GuestKind::Lxc, 101, 1_796_553_005),
            "vzdump-lxc-101-2026_12_06-10_30_05.tar.zst"
        );
        assert_eq!(
            archive_name(GuestKind::Qemu, 200, 951_782_400),
            "vzdump-qemu-200-2000_02_29-00_00_00.tar.zst"
        );
    }
}
